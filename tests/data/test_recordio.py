"""RecordIO read and written without MXNet, checked against the genuine MXNet-written sample in ../shared."""

from __future__ import annotations

import hashlib
import shutil
import struct
from pathlib import Path

import pytest

from ghostfacenets.data.datasets import inspect_dataset
from ghostfacenets.data.images import decode_image
from ghostfacenets.data.recordio import (
    MAGIC,
    InsightFaceRecords,
    IRHeader,
    RecordError,
    RecordFile,
    RecordWriter,
    encode_record,
    pack,
    unpack,
    write_insightface_records,
)
from tests.helpers import shared_path

REC_SHA256 = "8add4adebf3de4921355d56af32937fc1abf371fd1b3dcddbc2e0a7b3716380f"
IDX_SHA256 = "5510699822aa5d617f043acd0e6b4c6f43a681e749c93fc775e6fbec9954481b"


@pytest.fixture()
def sample() -> Path:
    path = shared_path("fixtures", "formats", "rec_sample")
    assert hashlib.sha256((path / "train.rec").read_bytes()).hexdigest() == REC_SHA256
    assert hashlib.sha256((path / "train.idx").read_bytes()).hexdigest() == IDX_SHA256
    return path


def test_reads_the_genuine_insightface_layout(sample: Path) -> None:
    records = InsightFaceRecords(sample)
    assert records.header == IRHeader(2, (31.0, 37.0), 0, 0)
    assert records.image_keys == list(range(1, 31))
    assert records.num_classes == 6 and records.property == (6, 112, 112)
    assert records.file.offsets[0] == 0 and records.file.offsets[1] == 40
    for key in records.image_keys:
        payload, label = records.read(key)
        assert label == (key - 1) // 5
        assert payload[:2] == b"\xff\xd8" and payload[-2:] == b"\xff\xd9"
        assert 7690 <= len(payload) <= 8692
    for k in range(6):  # identity records: [first key, last key + 1]
        header, payload = unpack(records.file.read(31 + k))
        assert header == IRHeader(2, (5.0 * k + 1, 5.0 * k + 6), 31 + k, 0) and payload == b""


def test_decoded_colours_are_rgb(sample: Path) -> None:
    # Identity 3 is orange (1, .55, 0) / purple (.45, .1, .6) spokes: red well above blue in RGB order.
    records = InsightFaceRecords(sample)
    for key in range(16, 21):
        image = decode_image(records.read(key)[0])
        assert image.shape == (112, 112, 3)
        mean = image.reshape(-1, 3).mean(axis=0)
        assert mean[0] > mean[2] + 60


def test_rewriting_the_records_is_byte_identical(sample: Path, tmp_path: Path) -> None:
    source = RecordFile(sample / "train.rec")
    with RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as writer:
        for key in source.keys():  # noqa: SIM118 - RecordFile is not iterable
            writer.write(key, source.read(key))
    assert (tmp_path / "train.rec").read_bytes() == (sample / "train.rec").read_bytes()
    assert (tmp_path / "train.idx").read_bytes() == (sample / "train.idx").read_bytes()


def test_insightface_writer_reproduces_the_mxnet_files(sample: Path, tmp_path: Path) -> None:
    records = InsightFaceRecords(sample)
    images = (records.read(key) for key in records.image_keys)
    assert write_insightface_records(tmp_path, images) == (30, 6)
    for name in ("train.rec", "train.idx", "property"):
        assert (tmp_path / name).read_bytes() == (sample / name).read_bytes(), name


def test_missing_index_is_rebuilt_by_scanning(sample: Path, tmp_path: Path) -> None:
    shutil.copy(sample / "train.rec", tmp_path / "train.rec")
    scanned = RecordFile(tmp_path / "train.rec")
    assert scanned.idx_path is None
    assert scanned.offsets == RecordFile(sample / "train.rec").offsets


def test_magic_inside_data_is_split_as_dmlc_does() -> None:
    magic = struct.pack("<I", MAGIC)
    data = b"abcd" + magic + b"efgh" + magic + b"xy" + magic[:3]  # two aligned magics, one unaligned tail
    encoded = encode_record(data)
    expected = (
        struct.pack("<II", MAGIC, (1 << 29) | 4)
        + b"abcd"
        + struct.pack("<II", MAGIC, (2 << 29) | 4)
        + b"efgh"
        + struct.pack("<II", MAGIC, (3 << 29) | 5)
        + b"xy"
        + magic[:3]
        + b"\x00\x00\x00"
    )
    assert encoded == expected
    assert encode_record(b"a" + magic + b"bcd") == struct.pack("<II", MAGIC, 8) + b"a" + magic + b"bcd"


def test_split_records_read_back(tmp_path: Path) -> None:
    magic = struct.pack("<I", MAGIC)
    payloads = [magic * 3, b"1234" + magic, b"plain", magic + b"!"]
    with RecordWriter(tmp_path / "x.rec", tmp_path / "x.idx") as writer:
        for key, payload in enumerate(payloads):
            writer.write(key, pack(IRHeader(0, float(key), key), payload))
    file = RecordFile(tmp_path / "x.rec")
    for key, payload in enumerate(payloads):
        header, body = unpack(file.read(key))
        assert header.label == key and body == payload


def test_pack_unpack_label_arrays() -> None:
    header, body = unpack(pack(IRHeader(2, (3.0, 9.5), 7, 1), b"xyz"))
    assert header == IRHeader(2, (3.0, 9.5), 7, 1) and body == b"xyz"
    with pytest.raises(RecordError):
        unpack(struct.pack("<IfQQ", 5, 0.0, 0, 0) + b"\x00" * 8)


def _corrupt_copy(sample: Path, tmp_path: Path) -> Path:
    target = tmp_path / "damaged"
    shutil.copytree(sample, target)
    offsets = RecordFile(sample / "train.rec").offsets
    data = bytearray((target / "train.rec").read_bytes())
    data[offsets[5] : offsets[5] + 4] = b"XXXX"  # record 5: magic destroyed
    start = offsets[12] + 8 + 24  # record 12: JPEG body overwritten
    data[start : start + 600] = bytes(600)
    (target / "train.rec").write_bytes(bytes(data))
    with open(target / "train.idx", "a") as f:
        f.write("garbage line\n")
    return target


def test_inspect_reports_damaged_records(sample: Path, tmp_path: Path) -> None:
    damaged = _corrupt_copy(sample, tmp_path)
    report = inspect_dataset(damaged, progress=False)
    assert report["images"] == 30 and report["readable"] == 28 and report["identities"] == 6
    assert report["corrupt"] == [str(damaged / "train.idx"), 5, 12]
    reasons = report["corrupt_reasons"]
    assert list(reasons) == [str(damaged / "train.idx"), "5", "12"]
    assert reasons[str(damaged / "train.idx")] == "line 38: cannot parse 'garbage line'"
    assert reasons["5"].startswith("no RecordIO magic at byte")
    assert reasons["12"].startswith("not an image")


def test_scanning_without_index_skips_damaged_records(sample: Path, tmp_path: Path) -> None:
    damaged = _corrupt_copy(sample, tmp_path)
    (damaged / "train.idx").unlink()
    offsets = RecordFile(sample / "train.rec").offsets
    rec = bytearray((damaged / "train.rec").read_bytes())
    struct.pack_into("<I", rec, offsets[20] + 4, offsets[21] - offsets[20] + 92)  # record 20 ends inside 21
    (damaged / "train.rec").write_bytes(bytes(rec))
    scanned = RecordFile(damaged / "train.rec")
    assert scanned.offsets == offsets  # every damaged record keeps its key: the layout stays aligned
    for key in (5, 20):
        with pytest.raises(RecordError, match=f"record {key}"):
            scanned.read(key)
    report = inspect_dataset(damaged, progress=False)
    assert report["corrupt"] == [5, 12, 20] and report["readable"] == 27
    assert "its length runs past the record that starts at byte" in report["corrupt_reasons"]["20"]


def test_scanning_a_truncated_file(sample: Path, tmp_path: Path) -> None:
    rec = tmp_path / "train.rec"
    rec.write_bytes((sample / "train.rec").read_bytes()[:100_000] + b"\x00" * 7)
    scanned = RecordFile(rec)
    last = max(scanned.keys())
    assert scanned.offsets == {k: v for k, v in RecordFile(sample / "train.rec").offsets.items() if k <= last}
    scanned.read(last - 1)
    with pytest.raises(RecordError, match="past the end|truncated"):
        scanned.read(last)


@pytest.mark.parametrize(
    "first,end", [(float("inf"), 37.0), (float("nan"), 37.0), (1e30, 2e30), (31.0, 1e30), (31.5, 37.0), (37.0, 31.0)]
)
def test_damaged_header_record_is_reported_not_fatal(sample: Path, tmp_path: Path, first: float, end: float) -> None:
    shutil.copytree(sample, tmp_path / "s")
    (tmp_path / "s" / "property").unlink()
    records = RecordFile(sample / "train.rec")
    with RecordWriter(tmp_path / "s" / "train.rec", tmp_path / "s" / "train.idx") as writer:
        for key in records.keys():  # noqa: SIM118 - RecordFile is not iterable
            writer.write(key, pack(IRHeader(2, (first, end), 0, 0)) if key == 0 else records.read(key))
    damaged = InsightFaceRecords(tmp_path / "s")
    assert damaged.header is None and damaged.num_classes is None
    assert damaged.image_keys == list(range(1, 37))  # without a usable header every other record is an image
    assert "header" in damaged.header_problem
    report = inspect_dataset(tmp_path / "s", progress=False)
    assert report["corrupt"][0] == 0 and "header" in report["corrupt_reasons"]["0"]


def test_truncated_file_is_a_record_error(sample: Path, tmp_path: Path) -> None:
    shutil.copytree(sample, tmp_path / "t")
    rec = tmp_path / "t" / "train.rec"
    rec.write_bytes(rec.read_bytes()[:100_000])
    records = InsightFaceRecords(tmp_path / "t")
    records.read(1)
    with pytest.raises(RecordError, match="past the end|truncated"):
        records.read(30)
