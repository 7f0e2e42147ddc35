"""Verification .bin files: genuine Python 2 / Python 3 samples, a malicious file, crafted pickles, writing."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from ghostfacenets.data.images import ImageError
from ghostfacenets.data.verification_bin import (
    VerificationBinError,
    load_verification_bin,
    read_verification_bin,
    write_verification_bin,
)
from ghostfacenets.errors import GhostFaceNetsError
from tests.helpers import shared_path

SAMPLE_ISSAME = [True, True, True, True, False, False, False, False]  # from the fixtures' README
MARKER = Path("/tmp/pwned_marker")


def _sample(name: str) -> Path:
    return shared_path("fixtures", "formats", "bin_sample", name)


@pytest.mark.parametrize("name", ["sample_py2.bin", "sample_py3.bin"])
def test_genuine_samples_load_as_rgb(name: str) -> None:
    images, issame = load_verification_bin(_sample(name))
    assert images.shape == (16, 112, 112, 3) and images.dtype == np.uint8
    assert issame.dtype == bool and issame.tolist() == SAMPLE_ISSAME
    raw = pickle.loads(_sample("sample_py3.bin").read_bytes())[0]  # trusted sample: plain pickle as a reference
    for k in (0, 5, 15):
        # independent decoder (Pillow) gives RGB: same colours up to JPEG decoder rounding, channel order included
        reference = np.asarray(Image.open(io.BytesIO(raw[k])).convert("RGB"), dtype=np.int16)
        assert np.abs(images[k].astype(np.int16) - reference).mean() < 1.5
        assert np.abs(images[k].astype(np.int16) - reference[..., ::-1]).mean() > 5  # BGR would be far off


def test_python2_and_python3_files_hold_the_same_content() -> None:
    bins2, issame2 = read_verification_bin(_sample("sample_py2.bin"))
    bins3, issame3 = read_verification_bin(_sample("sample_py3.bin"))
    assert bins2 == bins3 and all(isinstance(b, bytes) for b in bins2)
    assert issame2.tolist() == issame3.tolist() == SAMPLE_ISSAME


def test_malicious_bin_is_refused_and_runs_nothing() -> None:
    path = _sample("malicious.bin")
    if MARKER.exists():
        MARKER.unlink()
    with pytest.raises(VerificationBinError, match="os.system refused"):
        load_verification_bin(path)
    assert not MARKER.exists()


def test_malicious_bin_via_cli_in_a_fresh_process(tmp_path: Path) -> None:
    path = _sample("malicious.bin")
    if MARKER.exists():
        MARKER.unlink()
    code = "import sys; from ghostfacenets.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "evaluate", "--model", "unused.onnx", "--bin", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert not MARKER.exists()
    assert len(done.stderr.strip().splitlines()) == 1


def _write_pickle(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "crafted.bin"
    path.write_bytes(data)
    return path


def _png(value: int) -> bytes:
    ok, buffer = cv2.imencode(".png", np.full((4, 4, 3), value, np.uint8))
    assert ok
    return buffer.tobytes()


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_python3_bytes_in_every_protocol(tmp_path: Path, protocol: int) -> None:
    # protocols 0-2 pickle bytes as _codecs.encode(text, "latin1") calls: admitted for exactly that use
    bins = [_png(10), _png(200), _png(10), _png(10)]
    path = _write_pickle(tmp_path, pickle.dumps((bins, [False, True]), protocol=protocol))
    read, issame = read_verification_bin(path)
    assert read == bins and issame.tolist() == [False, True]
    images, _ = load_verification_bin(path)
    assert images.shape == (4, 4, 4, 3) and images[1].min() == images[1].max() == 200


def test_python2_protocol0_strings_and_int_bools(tmp_path: Path) -> None:
    # what Python 2's pickle.dump(..., protocol 0) writes for ([str, str], [True]): STRING and I01 opcodes
    a, b = _png(1), _png(2)
    text = b"((lp0\nS" + repr(a).encode()[1:] + b"\np1\naS" + repr(b).encode()[1:] + b"\np2\na(lp3\nI01\natp4\n."
    read, issame = read_verification_bin(_write_pickle(tmp_path, text))
    assert read == [a, b] and issame.tolist() == [True]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo PWNED > /tmp/pwned_marker",))


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(([_Evil(), b"x"], [True]), protocol=2),
        pickle.dumps(([b"x", b"y"], np.array([True])), protocol=2),  # numpy arrays are not admitted
        b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00utf-8\x86R.",  # another codec
        b"\x80\x02c__builtin__\nbytes\nJ\x00\xe4\x0bT\x85R.",  # bytes(1_410_065_408): a memory bomb
        b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.",
    ],
)
def test_crafted_pickles_are_refused(tmp_path: Path, payload: bytes) -> None:
    if MARKER.exists():
        MARKER.unlink()
    with pytest.raises(VerificationBinError, match="refused"):
        read_verification_bin(_write_pickle(tmp_path, payload))
    assert not MARKER.exists()


@pytest.mark.parametrize(
    "obj, message",
    [
        (([b"a"], [True]), "1 images for 1 pairs"),
        (([b"a", b"b"], ["yes"]), "booleans"),
        (([b"a", "b"], [True]), "encoded image bytes"),
        (([], []), "no pairs"),
        (([b"a", b"b"],), "pair of lists"),
    ],
)
def test_wrong_structure_is_reported(tmp_path: Path, obj: object, message: str) -> None:
    with pytest.raises(VerificationBinError, match=message):
        read_verification_bin(_write_pickle(tmp_path, pickle.dumps(obj, protocol=4)))


def test_damaged_and_missing_files(tmp_path: Path) -> None:
    whole = _sample("sample_py3.bin").read_bytes()
    with pytest.raises(VerificationBinError, match="not a verification .bin"):
        read_verification_bin(_write_pickle(tmp_path, whole[: len(whole) // 2]))
    with pytest.raises(VerificationBinError, match="not a verification .bin"):
        read_verification_bin(_write_pickle(tmp_path, b"\x89PNG\r\n\x1a\n not a pickle"))
    with pytest.raises(VerificationBinError, match="no such file"):
        read_verification_bin(tmp_path / "absent.bin")
    assert issubclass(VerificationBinError, GhostFaceNetsError)


def test_images_that_do_not_decode_or_differ_in_size(tmp_path: Path) -> None:
    path = _write_pickle(tmp_path, pickle.dumps(([_png(1), b"not an image"], [True]), protocol=4))
    with pytest.raises(ImageError, match="image 1"):
        load_verification_bin(path)
    _ok, big = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    path = _write_pickle(tmp_path, pickle.dumps(([_png(1), big.tobytes()], [True]), protocol=4))
    with pytest.raises(ImageError, match="different sizes"):
        load_verification_bin(path)


def test_write_arrays_round_trip_losslessly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(6)]
    issame = np.array([True, False, True])
    path = write_verification_bin(tmp_path / "out" / "set.bin", images, issame)
    loaded, flags = load_verification_bin(path)
    np.testing.assert_array_equal(loaded, np.stack(images))
    assert flags.tolist() == [True, False, True]
    assert [p.name for p in path.parent.iterdir()] == ["set.bin"]  # atomic: no temporary file left
    bins, labels = pickle.loads(path.read_bytes())  # what insightface's loader does
    assert len(bins) == 6 and labels == [True, False, True] and all(isinstance(b, bytes) for b in bins)


def test_write_keeps_encoded_bytes_and_jpeg_option(tmp_path: Path) -> None:
    raw = pickle.loads(_sample("sample_py3.bin").read_bytes())[0]
    path = write_verification_bin(tmp_path / "copy.bin", raw[:4], [True, False])
    assert read_verification_bin(path)[0] == raw[:4]
    grey = np.tile(np.arange(112, dtype=np.uint8), (112, 1))
    path = write_verification_bin(tmp_path / "jpeg.bin", [grey, grey], [True], image_format=".jpg")
    images, _ = load_verification_bin(path)
    assert read_verification_bin(path)[0][0][:2] == b"\xff\xd8"  # JPEG
    assert np.abs(images[0].astype(int) - grey[..., None].astype(int)).max() <= 3  # grey in all three channels


def test_write_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(VerificationBinError, match="3 images for 1 pairs"):
        write_verification_bin(tmp_path / "x.bin", [_png(1)] * 3, [True])
    with pytest.raises(ImageError):
        write_verification_bin(tmp_path / "x.bin", [_png(1), b"junk"], [True])
    with pytest.raises(ImageError, match="uint8"):
        write_verification_bin(tmp_path / "x.bin", [np.zeros((4, 4, 3), np.float32)] * 2, [True])
    assert not (tmp_path / "x.bin").exists()


def test_an_array_repeated_in_pairs_is_stored_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(2))
    once = write_verification_bin(tmp_path / "once.bin", [a, b], [False])
    many = write_verification_bin(tmp_path / "many.bin", [a, b] * 20, [False] * 20)
    assert many.stat().st_size < once.stat().st_size + 1000  # pickle memo: 40 references, 2 stored images
    images, _ = load_verification_bin(many)
    np.testing.assert_array_equal(images[::2], np.broadcast_to(a, (20, 112, 112, 3)))
    np.testing.assert_array_equal(images[1::2], np.broadcast_to(b, (20, 112, 112, 3)))


def test_write_a_4d_array_keeps_every_image(tmp_path: Path) -> None:
    # rows of a 4-D array are temporary views: their ids are reused, so the encoder must not key on id()
    images = np.random.default_rng(1).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    path = write_verification_bin(tmp_path / "rows.bin", images, [True, False, True, False])
    loaded, _ = load_verification_bin(path)
    np.testing.assert_array_equal(loaded, images)
    repeated = [images[0], images[1], images[0], images[2]]  # the same array object twice is stored twice, equal
    loaded, _ = load_verification_bin(write_verification_bin(tmp_path / "rep.bin", repeated, [True, False]))
    np.testing.assert_array_equal(loaded, np.stack(repeated))
