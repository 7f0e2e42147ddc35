"""IJB-B/C evaluation on a small dataset the tests write in exactly insightface's IJB layout.

Each synthetic subject is a smooth random colour pattern drawn in the 112x112 aligned frame; each loose crop shows it
under a random similarity transform (so alignment by the five points must undo it), with the five points given as
the ArcFace template moved by that transform.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from torch import nn

from ghostfacenets.cli import main
from ghostfacenets.evaluate.ijb import (
    IJBError,
    evaluate_ijb,
    find_layout,
    read_meta,
    search_1toN,
    template_features,
)
from ghostfacenets.evaluate.metrics import roc_auc, roc_curve
from tests.helpers.faces import identity_pattern, loose_crop
from tests.helpers.references import brute_tar
from tests.helpers.toy_models import pooled_colour_model, pooled_colour_onnx

SUBJECTS = 6
TEMPLATES_PER_SUBJECT = 3


def write_ijb(root: Path, target: str = "ijbc", seed: int = 0) -> Path:
    """A tiny IJB set: 6 subjects x 3 templates of 1-2 media of 1-2 faces; 1:1 pairs; galleries and probes."""
    rng = np.random.default_rng(seed)
    (root / "meta").mkdir(parents=True)
    (root / "loose_crop").mkdir()
    faces, points, templates = [], [], []  # templates: (template id, subject id, [image names])
    media = 1000
    for subject in range(SUBJECTS):
        pattern = identity_pattern(rng)
        for t in range(TEMPLATES_PER_SUBJECT):
            template = 10 * subject + t + 3
            names = []
            for _ in range(int(rng.integers(1, 3))):
                media += 1
                for _ in range(int(rng.integers(1, 3))):
                    name = f"{len(faces) + 1}.jpg"
                    crop, landmarks = loose_crop(pattern, rng)
                    cv2.imwrite(str(root / "loose_crop" / name), crop[..., ::-1])  # files hold RGB colours
                    faces.append(f"{name} {template} {media}")
                    points.append(
                        f"{name} "
                        + " ".join(f"{v:.2f}" for v in landmarks.reshape(-1))
                        + f" {rng.uniform(0.5, 1.0):.4f}"
                    )
                    names.append(name)
            templates.append((template, subject, names))
    pairs = [f"{a[0]} {b[0]} {int(a[1] == b[1])}" for i, a in enumerate(templates) for b in templates[i + 1 :]]
    meta = root / "meta"
    (meta / f"{target}_face_tid_mid.txt").write_text("\n".join(faces) + "\n")
    (meta / f"{target}_name_5pts_score.txt").write_text("\n".join(points) + "\n")
    (meta / f"{target}_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
    names = ("G1", "G2") if target == "ijbc" else ("S1", "S2")

    def csv_rows(chosen: list[tuple[int, int, list[str]]]) -> str:
        rows = ["TEMPLATE_ID,SUBJECT_ID,FILENAME"]
        rows += [f"{t},{s},img/{n}" for t, s, files in chosen for n in files]
        return "\n".join(rows) + "\n"

    first = [t for t in templates if t[0] % 10 == 3]
    (meta / f"{target}_1N_gallery_{names[0]}.csv").write_text(csv_rows([t for t in first if t[1] < 3]))
    (meta / f"{target}_1N_gallery_{names[1]}.csv").write_text(csv_rows([t for t in first if t[1] >= 3]))
    (meta / f"{target}_1N_probe_mixed.csv").write_text(csv_rows([t for t in templates if t[0] % 10 != 3]))
    return root


@pytest.fixture(scope="module")
def ijbc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ijb(tmp_path_factory.mktemp("ijb") / "IJBC")


# ------------------------------------------------------------------------------- insightface reference (verbatim)
def _insightface_image2template_feature(img_feats, templates, medias):
    unique_templates = np.unique(templates)
    template_feats = np.zeros((len(unique_templates), img_feats.shape[1]))
    for count_template, uqt in enumerate(unique_templates):
        (ind_t,) = np.where(templates == uqt)
        face_norm_feats = img_feats[ind_t]
        face_medias = medias[ind_t]
        unique_medias, unique_media_counts = np.unique(face_medias, return_counts=True)
        media_norm_feats = []
        for u, ct in zip(unique_medias, unique_media_counts):
            (ind_m,) = np.where(face_medias == u)
            if ct == 1:
                media_norm_feats += [face_norm_feats[ind_m]]
            else:  # image features from the same video will be aggregated into one feature
                media_norm_feats += [np.mean(face_norm_feats[ind_m], axis=0, keepdims=True)]
        media_norm_feats = np.array(media_norm_feats)
        template_feats[count_template] = np.sum(media_norm_feats, axis=0)
    template_norm_feats = template_feats / np.sqrt(np.sum(template_feats**2, -1, keepdims=True))
    return template_norm_feats, unique_templates


@pytest.mark.parametrize("normalize, detector", [(False, True), (True, True), (False, False)])
def test_template_pooling_matches_insightface(normalize: bool, detector: bool) -> None:
    rng = np.random.default_rng(1)
    n, dim = 200, 24
    feats = rng.normal(size=(n, dim)).astype(np.float32) * rng.uniform(0.5, 3, (n, 1)).astype(np.float32)
    templates, medias = rng.integers(0, 30, n), rng.integers(0, 12, n)
    scores = rng.uniform(0.3, 1.0, n)
    # insightface ijb_11.py: optional normalisation ("N0"), then detector scores ("D1"), then pooling
    x = feats / np.sqrt(np.sum(feats**2, -1, keepdims=True)) if normalize else feats
    x = x * scores[:, np.newaxis] if detector else x
    expected, expected_templates = _insightface_image2template_feature(x, templates, medias)
    unique, pooled = template_features(feats, templates, medias, scores if detector else None, normalize)
    np.testing.assert_array_equal(unique, expected_templates)
    np.testing.assert_allclose(pooled, expected, rtol=1e-6, atol=1e-6)


def _brute_search(probe, probe_ids, gallery, gallery_ids, fpir):
    ranks, mated_top, nonmated_top = [], [], []
    for feat, subject in zip(probe, probe_ids):
        sims = gallery @ feat
        order = sorted(range(len(sims)), key=lambda k: -sims[k])
        if subject in gallery_ids:
            mate = max(sims[k] for k in range(len(sims)) if gallery_ids[k] == subject)
            rank = 1 + sum(1 for k in range(len(sims)) if gallery_ids[k] != subject and sims[k] > mate)
            ranks.append(rank)
            mated_top.append((rank == 1, mate))
        else:
            nonmated_top.append(sims[order[0]])
    best = None
    for t in sorted(set(nonmated_top)) + [-np.inf]:
        if np.mean(np.array(nonmated_top) > t) <= fpir and (best is None or t < best):
            best = t
    tpir = np.mean([first and score > best for first, score in mated_top])
    return np.array(ranks), tpir


def test_open_set_search_matches_brute_force() -> None:
    rng = np.random.default_rng(2)
    gallery = rng.normal(size=(30, 8))
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    gallery_ids = np.arange(30) // 2 + 100  # two templates per subject
    probe_ids = rng.choice(np.arange(90, 125), 400)
    probe = np.where(
        np.isin(probe_ids, gallery_ids)[:, None], gallery[np.searchsorted(gallery_ids, np.clip(probe_ids, 100, 114))], 0
    ) + rng.normal(size=(400, 8))
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    result = search_1toN(probe, probe_ids, gallery, gallery_ids)
    ranks, tpir = _brute_search(probe, probe_ids, gallery, gallery_ids, 0.1)
    assert result["mated_probes"] == len(ranks) and result["non_mated_probes"] == 400 - len(ranks)
    assert result["rank1"] == pytest.approx(np.mean(ranks == 1)) and result["rank5"] == pytest.approx(
        np.mean(ranks <= 5)
    )
    assert 0.2 < result["rank1"] < 1.0
    assert result["tpir_at_fpir"]["1e-1"] == pytest.approx(tpir)
    assert result["tpir_at_fpir"]["1e-3"] is None  # fewer than 1000 non-mated searches


def test_layout_and_meta(ijbc: Path) -> None:
    layout = find_layout(ijbc)
    assert layout.target == "ijbc" and list(layout.galleries) == ["G1", "G2"] and layout.probes is not None
    meta = read_meta(layout)
    assert meta.landmarks.shape == (len(meta.names), 5, 2) and len(meta.pairs) == 18 * 17 // 2
    assert meta.labels.sum() == SUBJECTS * 3  # 3 same-subject pairs among each subject's 3 templates


def test_alignment_recovers_the_pattern(ijbc: Path) -> None:
    from ghostfacenets.evaluate.ijb import _aligned_crop

    layout = find_layout(ijbc)
    meta = read_meta(layout)
    crops = [
        _aligned_crop(layout.images / meta.names[i], meta.landmarks[i]).astype(int) for i in range(len(meta.names))
    ]
    same = [i for i in range(len(crops)) if meta.templates[i] // 10 == meta.templates[0] // 10]
    other = [i for i in range(len(crops)) if meta.templates[i] // 10 != meta.templates[0] // 10]
    centre = (slice(20, 92), slice(20, 92))
    assert all(np.abs(crops[i][centre] - crops[same[0]][centre]).mean() < 12 for i in same[1:])
    assert all(np.abs(crops[i][centre] - crops[same[0]][centre]).mean() > 20 for i in other)


@pytest.mark.parametrize("grid", [4, 8])  # 48- and 192-dimensional embeddings: nothing assumes 512
def test_evaluate_ijb_end_to_end(ijbc: Path, grid: int) -> None:
    report = evaluate_ijb(pooled_colour_model(grid), ijbc, progress=False)
    assert report["target"] == "IJBC" and report["templates"] == SUBJECTS * TEMPLATES_PER_SUBJECT
    verification = report["verification"]
    assert verification["pairs"] == 153 and verification["same_pairs"] == 18
    assert verification["auc"] == 1.0 and verification["tar_at_far"]["1e-1"] == 1.0
    assert verification["tar_at_far"]["1e-3"] is None  # 135 different pairs
    identification = report["identification"]
    assert identification["probes"] == 12 and identification["rank1"] == 1.0
    for name in ("G1", "G2"):
        gallery = identification["galleries"][name]
        assert gallery["mated_probes"] == 6 and gallery["non_mated_probes"] == 6 and gallery["rank1"] == 1.0
    assert identification["tpir_at_fpir"]["1e-1"] is None  # 6 non-mated searches per gallery: FPIR 0.1 not measurable


def test_evaluate_ijb_scores_follow_the_definitions(ijbc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given face features, 1:1 numbers equal a direct computation (insightface pooling, brute-force TAR)."""
    from ghostfacenets.evaluate import ijb

    monkeypatch.setattr(ijb, "PAIR_CHUNK", 7)  # pairs are scored in chunks: cross several chunk boundaries
    layout = find_layout(ijbc)
    meta = read_meta(layout)
    rng = np.random.default_rng(5)
    subject_centres = rng.normal(size=(SUBJECTS, 16))
    feats = subject_centres[meta.templates // 10] + 1.5 * rng.normal(size=(len(meta.names), 16))
    report = evaluate_ijb(None, ijbc, features=feats.astype(np.float32))
    x = feats * meta.detector_scores[:, None]
    pooled, unique = _insightface_image2template_feature(x, meta.templates, meta.medias)
    row = {t: k for k, t in enumerate(unique)}
    scores = np.array([pooled[row[a]] @ pooled[row[b]] for a, b in meta.pairs])
    fpr, tpr, _ = roc_curve(scores, meta.labels)
    assert report["verification"]["auc"] == pytest.approx(roc_auc(fpr, tpr))
    assert report["verification"]["tar_at_far"]["1e-1"] == pytest.approx(brute_tar(scores, meta.labels, 0.1))
    assert 0.5 < report["verification"]["auc"] < 1.0
    with pytest.raises(IJBError, match="features for"):
        evaluate_ijb(None, ijbc, features=feats[:-1])


def test_ijbb_names_and_missing_files(tmp_path: Path) -> None:
    root = write_ijb(tmp_path / "IJBB", target="ijbb", seed=3)
    layout = find_layout(root)
    assert layout.target == "ijbb" and list(layout.galleries) == ["S1", "S2"]
    (root / "meta" / "ijbb_1N_probe_mixed.csv").unlink()
    report = evaluate_ijb(nn.Sequential(nn.AdaptiveAvgPool2d(3), nn.Flatten()), root, flip=False, progress=False)
    assert report["identification"] is None and report["verification"]["auc"] == 1.0 and report["flip"] is False
    (root / "meta" / "ijbb_name_5pts_score.txt").unlink()
    with pytest.raises(IJBError, match="ijbb_name_5pts_score.txt: missing"):
        find_layout(root)
    with pytest.raises(IJBError, match="face_tid_mid"):
        find_layout(tmp_path)


def test_cli_ijb(ijbc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = pooled_colour_onnx(tmp_path / "pooled.onnx")
    assert main(["evaluate", "--model", str(model), "--ijb", str(ijbc), "--json", "-", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)["sets"]["IJBC"]
    assert report["verification"]["auc"] == 1.0 and report["identification"]["rank1"] == 1.0
    assert main(["evaluate", "--model", str(model), "--ijb", str(ijbc), "--no-ijb-detector-score"]) == 0
    out = capsys.readouterr().out
    assert "TAR@FAR=1e-1" in out and "rank-1" in out


def test_damaged_meta_files_are_reported(tmp_path: Path) -> None:
    root = write_ijb(tmp_path / "IJBC", seed=4)
    meta = root / "meta"
    pairs = meta / "ijbc_template_pair_label.txt"
    good = pairs.read_text()
    pairs.write_text(good + "3 x 1\n")
    with pytest.raises(IJBError, match="3 integers per line"):
        read_meta(find_layout(root))
    pairs.write_text(good + "3 999 0\n")
    with pytest.raises(IJBError, match="template\\(s\\) without faces, e.g. 999"):
        read_meta(find_layout(root))
    pairs.write_text(good)
    points = meta / "ijbc_name_5pts_score.txt"
    points.write_text("\n".join(points.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(IJBError, match="no landmarks for 1 face"):
        read_meta(find_layout(root))


def test_wrong_labels_subjects_and_crop_size(tmp_path: Path) -> None:
    root = write_ijb(tmp_path / "IJBC", seed=6)
    meta = root / "meta"
    gallery = meta / "ijbc_1N_gallery_G1.csv"
    lines = gallery.read_text().splitlines()
    template = lines[1].split(",")[0]
    gallery.write_text("\n".join(lines + [f"{template},999,img/x.jpg"]) + "\n")
    with pytest.raises(IJBError, match=f"template {template} listed with two subjects"):
        evaluate_ijb(pooled_colour_model(), root, progress=False)
    gallery.write_text("\n".join(lines) + "\n")
    with pytest.raises(IJBError, match="needs"):
        evaluate_ijb(pooled_colour_onnx(tmp_path / "m96.onnx", size=96), root, progress=False)
    pairs = meta / "ijbc_template_pair_label.txt"
    pairs.write_text(pairs.read_text() + "3 13 2\n")
    with pytest.raises(IJBError, match="labels must be 1"):
        read_meta(find_layout(root))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda lines: lines + ["x,1,img/x.jpg"], "TEMPLATE_ID,SUBJECT_ID"),
        (lambda lines: lines + [f"{lines[1].split(',')[0]},999,img/x.jpg"], "listed with two subjects"),
        (lambda lines: lines + ["777,1,img/x.jpg"], "template 777 has no faces"),
        (lambda lines: lines[:1], "at least one row"),
    ],
)
def test_malformed_1toN_lists_fail_before_any_embedding(tmp_path: Path, edit, message: str) -> None:
    root = write_ijb(tmp_path / "IJBC", seed=7)
    gallery = root / "meta" / "ijbc_1N_gallery_G2.csv"
    gallery.write_text("\n".join(edit(gallery.read_text().splitlines())) + "\n")
    forwards = []

    class Counting(nn.Module):
        def forward(self, x):
            forwards.append(len(x))
            return nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)

    with pytest.raises(IJBError, match=message):
        evaluate_ijb(Counting(), root, progress=False)
    assert forwards == []


def test_combined_tpir_is_the_mean_over_galleries(tmp_path: Path) -> None:
    """With enough non-mated probes in each gallery (10 of 12 probe templates: FPIR 0.1 allows one false alarm)
    the combined TPIR has a value: the mean of the per-gallery TPIRs, each computed here by brute force."""
    root = write_ijb(tmp_path / "IJBC", seed=8)
    meta_dir = root / "meta"
    probes = meta_dir / "ijbc_1N_probe_mixed.csv"
    g1, g2 = meta_dir / "ijbc_1N_gallery_G1.csv", meta_dir / "ijbc_1N_gallery_G2.csv"
    # each gallery keeps one subject: per gallery 2 mated and 10 non-mated probe templates
    for gallery, subject in ((g1, "0"), (g2, "4")):
        lines = gallery.read_text().splitlines()
        gallery.write_text("\n".join(lines[:1] + [r for r in lines[1:] if r.split(",")[1] == subject]) + "\n")
    meta = read_meta(find_layout(root))
    rng = np.random.default_rng(10)
    centres = rng.normal(size=(SUBJECTS, 8))
    feats = (centres[meta.templates // 10] + 1.2 * rng.normal(size=(len(meta.names), 8))).astype(np.float32)
    report = evaluate_ijb(None, root, features=feats)
    unique, pooled = template_features(feats, meta.templates, meta.medias, meta.detector_scores)
    row = {t: k for k, t in enumerate(unique)}

    def templates_subjects(path: Path) -> tuple[np.ndarray, np.ndarray]:
        pairs = dict((int(r.split(",")[0]), int(r.split(",")[1])) for r in path.read_text().splitlines()[1:])
        return np.array(list(pairs)), np.array(list(pairs.values()))

    probe_t, probe_s = templates_subjects(probes)
    expected = []
    for gallery in (g1, g2):
        gallery_t, gallery_s = templates_subjects(gallery)
        _, tpir = _brute_search(
            pooled[[row[t] for t in probe_t]], probe_s, pooled[[row[t] for t in gallery_t]], gallery_s, 0.1
        )
        expected.append(tpir)
        result = report["identification"]["galleries"][gallery.stem[-2:]]
        assert (result["mated_probes"], result["non_mated_probes"]) == (2, 10)
        assert result["tpir_at_fpir"]["1e-1"] == pytest.approx(tpir)
    assert len(set(expected)) == 2  # the galleries differ (1.0 and 0.5), so the combination is not trivial
    combined = report["identification"]["tpir_at_fpir"]["1e-1"]
    assert combined is not None and combined == pytest.approx(np.mean(expected))
    assert report["identification"]["tpir_at_fpir"]["1e-2"] is None  # 10 non-mated searches: 1e-2 unmeasurable
