"""Training datasets: sources, fitting, augmentation, the resumable sampler, the RecordIO builder, inspection."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ghostfacenets.data import datasets
from ghostfacenets.data.datasets import (
    Augmentation,
    FolderSource,
    RecordSource,
    SyntheticSource,
    TrainDataset,
    TrainSampler,
    build_records,
    collate,
    fit_image,
    inspect_dataset,
    open_source,
)
from ghostfacenets.data.images import decode_image
from ghostfacenets.errors import GhostFaceNetsError
from tests.helpers import shared_path


def _write_folder(root: Path, counts: dict[str, int], size: tuple[int, int] = (92, 112)) -> Path:
    rng = np.random.default_rng(0)
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            cv2.imwrite(str(root / name / f"{i}.png"), image)
    return root


def test_fit_image_pads_the_short_side_with_black() -> None:
    image = np.full((112, 92, 3), 200, np.uint8)
    out = fit_image(image, 112, "pad")
    assert out.shape == (112, 112, 3)
    assert (out[:, :10] == 0).all() and (out[:, 102:] == 0).all() and (out[:, 10:102] == 200).all()
    big = fit_image(np.full((224, 184, 3), 50, np.uint8), 112, "pad")
    assert (big[:, 10:102] == 50).all() and (big[:, :10] == 0).all()
    assert fit_image(image, 112, "resize").shape == (112, 112, 3)
    assert fit_image(image, None) is image


def test_folder_source_selects_and_relabels_identities(tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "f", {"s1": 2, "s2": 3, "s10": 1, "x": 2})
    source = FolderSource(root, identities=["s?", "x"])
    assert source.names == ["s1", "s2", "x"] and source.num_classes == 3
    assert source.labels == [0, 0, 1, 1, 1, 2, 2]
    image, label = source.load(2)
    assert image.shape == (112, 112, 3) and label == 1
    with pytest.raises(GhostFaceNetsError, match="s9"):
        FolderSource(root, identities=["s9"])


def test_open_source_kinds(tmp_path: Path) -> None:
    assert isinstance(open_source("synthetic:50:5"), SyntheticSource)
    synthetic = open_source("synthetic:50:5")
    assert len(synthetic) == 50 and synthetic.num_classes == 5
    np.testing.assert_array_equal(synthetic.load(7)[0], synthetic.load(7)[0])
    assert synthetic.load(7)[1] == 2
    assert isinstance(open_source(shared_path("fixtures", "formats", "rec_sample")), RecordSource)


def test_synthetic_specs_and_folders_named_synthetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (len(open_source("synthetic")), open_source("synthetic").num_classes) == (100_000, 1000)
    assert (len(open_source("synthetic:50")), open_source("synthetic:50").num_classes) == (50, 1000)
    for bad in ("synthetic:10:2:3", "synthetic:0:2", "synthetic:10:-1", "synthetic:x", "synthetic:", "synthetic:5:"):
        with pytest.raises(GhostFaceNetsError, match=r"synthetic\[:IMAGES\[:CLASSES\]\] with positive"):
            open_source(bad)
    monkeypatch.chdir(tmp_path)
    _write_folder(tmp_path / "synthetic_faces", {"a": 2, "b": 1})
    folder = open_source("synthetic_faces")
    assert isinstance(folder, FolderSource) and len(folder) == 3
    with pytest.raises(GhostFaceNetsError, match="synthetic_faces/ms1m"):
        open_source("synthetic_faces/ms1m")


class _FixedDraws:
    """A stand-in random generator returning chosen draws (flip, angle, zoom, dx, dy, brightness, contrast, grey,
    erase, area, aspect, x, y, fill)."""

    def __init__(self, draws: list[float]) -> None:
        self.draws = np.array(draws + [1.0] * (14 - len(draws)))  # 1.0: random erasing off

    def random(self, n: int) -> np.ndarray:
        return self.draws[:n]


def test_augmentation_geometry_by_hand() -> None:
    image = np.random.default_rng(1).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    flipped = Augmentation(flip=True)(image, _FixedDraws([0.2, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.9]))
    np.testing.assert_array_equal(flipped, image[:, ::-1])
    kept = Augmentation(flip=True)(image, _FixedDraws([0.7, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.9]))
    np.testing.assert_array_equal(kept, image)
    # rotation draw 1.0 -> +90 degrees (counter-clockwise) about the pixel centre
    rotated = Augmentation(flip=False, rotation=90)(image, _FixedDraws([0.9, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.9]))
    np.testing.assert_array_equal(rotated, np.rot90(image))
    # shift draw 1.0 -> +0.25 * 112 = 28 pixels right
    shifted = Augmentation(flip=False, shift=0.25)(image, _FixedDraws([0.9, 0.5, 0.5, 1.0, 0.5, 0.5, 0.5, 0.9]))
    np.testing.assert_array_equal(shifted[:, 28:], image[:, :84])
    assert (shifted[:, :28] == 0).all()


def test_augmentation_photometric_by_hand() -> None:
    image = np.array([[[100, 150, 200]]], np.uint8)
    # brightness draw 1.0 with brightness 0.1 -> x 1.1; contrast draw 0.5 -> unchanged
    out = Augmentation(flip=False, brightness=0.1)(image, _FixedDraws([0.9, 0.5, 0.5, 0.5, 0.5, 1.0, 0.5, 0.9]))
    np.testing.assert_array_equal(out, [[[110, 165, 220]]])
    # contrast draw 0.0 with contrast 0.5 -> halfway to the mean 150
    out = Augmentation(flip=False, contrast=0.5)(image, _FixedDraws([0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0, 0.9]))
    np.testing.assert_array_equal(out, [[[125, 150, 175]]])
    grey = Augmentation(flip=False, grayscale=1.0)(image, _FixedDraws([0.9] * 8))
    assert (grey == grey[..., :1]).all()


def test_random_erasing_by_hand() -> None:
    image = np.full((112, 112, 3), 9, np.uint8)
    # erase draw 0 < 0.5; area 0 -> 2 % of 112 x 112; aspect 0.5 -> ratio sqrt(0.3 * 3.3); x = y = 0; fill 0.5
    out = Augmentation(flip=False, erase=0.5)(image, _FixedDraws([0.9] * 8 + [0.0, 0.0, 0.5, 0.0, 0.0, 0.5]))
    side = round(np.sqrt(0.02 * 112 * 112))  # 16: a square
    assert (out[:side, :side] == 127).all() and (out[side:] == 9).all() and (out[:, side:] == 9).all()
    assert (image == 9).all()  # the input is not modified
    kept = Augmentation(flip=False, erase=0.5)(image, _FixedDraws([0.9] * 8 + [0.7, 0.0, 0.5, 0.0, 0.0, 0.5]))
    assert (kept == 9).all()


def _keys(sampler: TrainSampler) -> list[tuple[int, int, int]]:
    return list(iter(sampler))


def test_sampler_epochs_are_permutations_without_the_remainder() -> None:
    sampler = TrainSampler(23, 5, seed=3, total_steps=8)
    keys = _keys(sampler)
    assert sampler.steps_per_epoch == 4 and len(keys) == len(sampler) == 40
    for epoch in (0, 1):
        part = [k for k in keys if k[0] == epoch]
        assert [k[1] for k in part] == list(range(20))
        assert len({k[2] for k in part}) == 20
        assert [k[2] for k in part] == sampler.permutation(epoch)[:20].tolist()
    assert keys[20][0] == 1


def test_two_ranks_see_what_one_rank_with_accumulation_sees() -> None:
    single = _keys(TrainSampler(40, 8, accumulation=2, seed=1, total_steps=7))
    ranks = [_keys(TrainSampler(40, 8, rank=r, world_size=2, seed=1, total_steps=7)) for r in range(2)]
    for step in range(7):
        batch = single[step * 8 : (step + 1) * 8]
        assert ranks[0][step * 4 : (step + 1) * 4] == batch[:4]
        assert ranks[1][step * 4 : (step + 1) * 4] == batch[4:]
    with pytest.raises(GhostFaceNetsError, match="divisible"):
        TrainSampler(40, 6, world_size=4)


def test_sampler_resumes_mid_epoch() -> None:
    full = _keys(TrainSampler(30, 6, seed=2, total_steps=12))
    resumed = _keys(TrainSampler(30, 6, seed=2, start_step=7, total_steps=12))
    assert resumed == full[7 * 6 :]
    other_world = _keys(TrainSampler(30, 6, rank=1, world_size=3, seed=2, start_step=7, total_steps=12))
    assert other_world[:2] == full[7 * 6 + 2 : 7 * 6 + 4]


def test_loading_is_the_same_for_any_number_of_workers() -> None:
    dataset = TrainDataset(SyntheticSource(64, 8), Augmentation(rotation=10, shift=0.1, brightness=0.2), seed=4)
    sampler = TrainSampler(64, 8, seed=4, total_steps=6)

    def batches(workers: int) -> list[torch.Tensor]:
        loader = DataLoader(dataset, batch_size=8, sampler=sampler, num_workers=workers, collate_fn=collate)
        return [images for images, _, _ in loader]

    for a, b in zip(batches(0), batches(2)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_damaged_images_are_replaced_and_reported(tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "f", {"a": 3, "b": 3}, size=(112, 112))
    (root / "a" / "1.png").write_bytes(b"not an image")
    dataset = TrainDataset(FolderSource(root))
    image, label, damaged = dataset[(0, 0, 1)]
    np.testing.assert_array_equal(image.numpy(), decode_image((root / "a" / "2.png").read_bytes()))
    assert label == 0 and len(damaged) == 1 and "1.png" in damaged[0]
    images, labels, reports = collate([dataset[(0, 0, 0)], dataset[(0, 1, 1)]])
    assert images.shape == (2, 112, 112, 3) and labels.tolist() == [0, 0] and len(reports) == 1
    report = inspect_dataset(root, progress=False)
    assert report["images"] == 6 and report["identities"] == 2
    assert report["corrupt"] == [str(root / "a" / "1.png")]
    assert report["corrupt_reasons"] == {
        str(root / "a" / "1.png"): "not an image (or an unsupported or damaged image file)"
    }


class _CountingPool:
    """A stand-in thread pool that runs each task when it is submitted and records how many wait to be taken."""

    def __init__(self, _: int) -> None:
        self.waiting = self.most_waiting = 0

    def __enter__(self) -> _CountingPool:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def submit(self, fn, *args):
        from concurrent.futures import Future

        pool, future = self, Future()
        future.set_result(fn(*args))
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        result = future.result

        def taken(timeout: float | None = None):
            pool.waiting -= 1
            return result(timeout)

        future.result = taken
        return future

    def map(self, fn, items):
        return (f.result() for f in [self.submit(fn, i) for i in items])


def test_inspection_and_building_keep_few_tasks_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pools: list[_CountingPool] = []
    monkeypatch.setattr(datasets, "ThreadPoolExecutor", lambda n: pools.append(_CountingPool(n)) or pools[-1])
    monkeypatch.setattr(datasets, "MAX_PENDING", 3)
    root = _write_folder(tmp_path / "f", {"a": 6, "b": 5}, size=(112, 112))
    assert inspect_dataset(root, progress=False)["images"] == 11
    assert build_records(root, tmp_path / "rec", progress=False)["images"] == 11
    assert [p.most_waiting for p in pools] == [3, 3]
    assert [source_label for _, source_label in (RecordSource(tmp_path / "rec").load(i) for i in range(11))] == [
        0
    ] * 6 + [1] * 5


def test_build_records_round_trip(tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "f", {"p": 2, "q": 3, "r": 1})
    (root / "q" / "9.png").write_bytes(b"broken")
    (root / "r" / "0.png").write_bytes(b"broken")  # r has no readable image left: dropped
    jpeg = cv2.imencode(".jpg", np.full((112, 112, 3), 90, np.uint8))[1].tobytes()
    (root / "p" / "5.jpg").write_bytes(jpeg)
    report = build_records(root, tmp_path / "rec", progress=False)
    assert (report["images"], report["identities"], len(report["skipped"])) == (6, 2, 2)
    source = RecordSource(tmp_path / "rec")
    assert source.num_classes == 2 and len(source) == 6
    assert [source.records.read(k)[1] for k in source.records.image_keys] == [0, 0, 0, 1, 1, 1]
    assert source.records.read(source.records.image_keys[2])[0] == jpeg  # a 112x112 JPEG is stored as it is
    # Other images: padded to 112x112, then JPEG quality 95 with true RGB colours in the file
    original = cv2.imread(str(root / "p" / "0.png"))
    padded = np.zeros((112, 112, 3), np.uint8)
    padded[:, 10:102] = original
    expected = cv2.imdecode(cv2.imencode(".jpg", padded, [cv2.IMWRITE_JPEG_QUALITY, 95])[1], cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(source.load(0)[0], expected[..., ::-1])


def test_att_faces_inspection() -> None:
    report = inspect_dataset(shared_path("data", "att_faces"), progress=False)
    assert (report["images"], report["identities"], report["corrupt"], report["corrupt_reasons"]) == (400, 40, [], {})


def test_record_source_refuses_labels_outside_the_declared_classes(tmp_path: Path) -> None:
    sample = shared_path("fixtures", "formats", "rec_sample")
    shutil.copytree(sample, tmp_path / "s")
    (tmp_path / "s" / "property").write_text("3,112,112\n")
    source = RecordSource(tmp_path / "s")
    assert source.load(0)[1] == 0
    with pytest.raises(Exception, match="label 5"):
        source.load(29)


def test_num_classes_is_only_a_fallback(tmp_path: Path) -> None:
    shutil.copytree(shared_path("fixtures", "formats", "rec_sample"), tmp_path / "s")
    assert RecordSource(tmp_path / "s", num_classes=6).num_classes == 6
    with pytest.raises(GhostFaceNetsError, match="declares 6 identities"):
        RecordSource(tmp_path / "s", num_classes=3)
    # Without property file and header record the configured count is used.
    from ghostfacenets.data.recordio import IRHeader, RecordWriter, pack

    jpeg = cv2.imencode(".jpg", np.zeros((112, 112, 3), np.uint8))[1].tobytes()
    with RecordWriter(tmp_path / "plain" / "train.rec", tmp_path / "plain" / "train.idx") as writer:
        for key in range(4):
            writer.write(key, pack(IRHeader(0, float(key % 2), key), jpeg))
    assert RecordSource(tmp_path / "plain").num_classes is None
    assert RecordSource(tmp_path / "plain", num_classes=2).num_classes == 2


def test_cli_dataset_build_and_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from ghostfacenets import __version__
    from ghostfacenets.cli import main

    root = _write_folder(tmp_path / "f", {"a": 2, "b": 2, "c": 1})
    assert main(["dataset", "build-rec", str(root), str(tmp_path / "rec"), "--identities", "a", "b", "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert (built["images"], built["identities"], built["skipped"]) == (4, 2, [])
    assert built["ghostfacenets_version"] == __version__
    assert main(["dataset", "inspect", str(tmp_path / "rec"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["images"], report["identities"], report["corrupt"], report["corrupt_reasons"]) == (4, 2, [], {})
    assert report["ghostfacenets_version"] == __version__
    (root / "c" / "0.png").write_bytes(b"junk")
    assert main(["dataset", "inspect", str(root)]) == 1  # something damaged: exit status 1
    out = capsys.readouterr().out
    assert "5 images, 2 identities, 1 corrupt" in out
    assert f"corrupt: {root / 'c' / '0.png'}: not an image" in out
    assert main(["dataset", "inspect", str(root), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["corrupt"] == [str(root / "c" / "0.png")] and list(report["corrupt_reasons"]) == report["corrupt"]
    assert main(["dataset", "inspect", str(tmp_path / "nothing")]) == 2
