"""``gallery export`` / ``gallery import`` between the two backends, JSON lines and Parquet, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ghostfacenets.cli import main
from ghostfacenets.gallery import GalleryError, GalleryStore, is_postgres_url, open_store
from ghostfacenets.gallery.transfer import import_gallery, read_faces
from tests.helpers import require_module
from tests.helpers.galleries import MODEL, faces, unit


@pytest.fixture
def other_db(db: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store of the other backend."""
    return str(tmp_path / "other.sqlite") if is_postgres_url(db) else str(request.getfixturevalue("pg_url"))


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _contents(store: GalleryStore, gallery: str) -> list[tuple]:
    return sorted(
        (e.subject, json.dumps(e.subject_metadata, sort_keys=True), e.face.image_sha256, e.face.source,
         json.dumps(e.face.detection), e.face.crop, e.model, tuple(np.round(e.face.embedding, 6)))
        for e in store.export_faces(gallery)
    )  # fmt: skip


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_gallery_moves_to_the_other_backend(
    store: GalleryStore, db: str, other_db: str, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if suffix == ".parquet":
        require_module("pyarrow", "parquet")
    rng = np.random.default_rng(0)
    store.enroll("staff", "ann", faces(unit(rng, 2), "ann", crops=True), MODEL, {"badge": 1, "name": "Ann Lee"})
    store.enroll("staff", "bob", faces(unit(rng, 3), "bob"), MODEL)
    out = tmp_path / f"staff{suffix}"
    code, text, _ = run(capsys, "gallery", "--db", db, "export", "--gallery", "staff", "--out", out, "--json")
    assert code == 0 and json.loads(text)["faces"] == 5
    code, text, _ = run(capsys, "gallery", "--db", other_db, "import", out, "--json")
    assert code == 0 and json.loads(text) == {"file": str(out), "added": 5, "already_present": 0}
    if suffix == ".jsonl":
        from ghostfacenets import __version__

        header = json.loads(out.read_text().splitlines()[0])
        assert header == {"format": "ghostfacenets-gallery", "version": 1, "ghostfacenets_version": __version__}
    code, text, _ = run(capsys, "gallery", "--db", other_db, "import", out, "--gallery", "copy")
    assert code == 0 and "imported 5 faces" in text
    code, text, _ = run(capsys, "gallery", "--db", other_db, "import", out, "--json")  # resumable: all there
    assert json.loads(text)["already_present"] == 5
    with open_store(other_db) as other:
        assert _contents(other, "staff") == _contents(store, "staff")
        assert _contents(other, "copy") == _contents(store, "staff")
        queries = unit(rng, 3)
        expected = [[(c.name, round(c.similarity, 5)) for c in r] for r in store.search("staff", queries, MODEL, 2)]
        found = [[(c.name, round(c.similarity, 5)) for c in r] for r in other.search("staff", queries, MODEL, 2)]
        assert found == expected


def test_bad_export_files(tmp_path: Path, db: str, capsys: pytest.CaptureFixture[str]) -> None:
    header = '{"format": "ghostfacenets-gallery", "version": 1}\n'
    cases = {
        "x.csv": ("a,b", "give a .jsonl or .parquet file"),
        "x.jsonl": ('{"format": "something else"}\n', "not a ghostfacenets gallery export"),
        "y.jsonl": (
            '{"format": "ghostfacenets-gallery", "version": 1}\n{"subject": "a"}\n',
            "y.jsonl:2: not a gallery",
        ),
        "z.jsonl": ('{"format": "ghostfacenets-gallery", "version": 9}\n', "newer"),
        "w.jsonl": (header + "not json\n", "w.jsonl:2: not JSON"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(GalleryError, match=message):
            list(read_faces(tmp_path / name))
    with pytest.raises(GalleryError, match="no such file"):
        list(read_faces(tmp_path / "missing.jsonl"))
    code, _, err = run(capsys, "gallery", "--db", db, "import", tmp_path / "y.jsonl")
    assert code == 2 and err.count("\n") == 1 and "not a gallery face record" in err


def test_an_import_stops_whole_batches_at_a_bad_record(store: GalleryStore, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    store.enroll("g", "ann", faces(unit(rng, 3), "ann"), MODEL)
    good = tmp_path / "good.jsonl"
    from ghostfacenets.gallery.transfer import export_gallery

    assert export_gallery(store, "g", good) == 3
    lines = good.read_text().splitlines()
    record = json.loads(lines[2])
    record["embedding"] = record["embedding"][:-1]  # one value short
    (tmp_path / "bad.jsonl").write_text("\n".join([*lines[:2], json.dumps(record), lines[3]]) + "\n")
    with pytest.raises(GalleryError, match="16-d"):
        import_gallery(store, tmp_path / "bad.jsonl", "copy")
    assert "copy" not in [g.name for g in store.galleries()]  # the batch holding the bad record: nothing of it


def test_a_large_import_with_the_index_deferred(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``import --defer-index`` drops the index of the file's embedding size, loads, builds it; ``reindex`` shows
    and rebuilds indexes; both are PostgreSQL-only."""
    import psycopg

    from ghostfacenets.gallery.postgres import split_options
    from ghostfacenets.gallery.transfer import export_gallery

    rng = np.random.default_rng(2)
    people = {f"p{i}": unit(rng, 2) for i in range(150)}
    source = tmp_path / "source.sqlite"
    with open_store(str(source)) as store:
        for name, vectors in people.items():
            store.enroll("staff", name, faces(vectors, name), MODEL)
        export_gallery(store, "staff", tmp_path / "staff.jsonl")
    code, text, err = run(
        capsys, "gallery", "--db", pg_url, "import", tmp_path / "staff.jsonl", "--defer-index",
        "--maintenance-work-mem", "32MB", "--workers", "0", "--json",
    )  # fmt: skip
    record = json.loads(text)
    assert code == 0 and (record["added"], record["already_present"]) == (300, 0), err
    index = record["index"]
    assert (index["name"], index["built"], index["faces"], index["concurrently"]) == ("faces_hnsw_vector_16", True,
                                                                                       300, True)  # fmt: skip
    assert (index["maintenance_work_mem"], index["workers"]) == ("32MB", 0)
    with psycopg.connect(split_options(pg_url)[0]) as db:
        valid = db.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'ghostfacenets.faces_hnsw_vector_16'"
                           "::regclass").fetchone()  # fmt: skip
        assert valid == (True,)
    code, text, _ = run(capsys, "gallery", "--db", pg_url, "reindex", "--status", "--json")
    states = {i["dim"]: (i["state"], i["faces"], i["m"]) for i in json.loads(text)["indexes"]}
    assert code == 0 and states == {16: ("ready", 300, 16), 512: ("ready", 0, 16)}
    code, text, _ = run(capsys, "gallery", "--db", pg_url, "reindex")
    assert code == 0 and "every index is ready" in text
    code, text, _ = run(capsys, "gallery", "--db", pg_url, "reindex", "--dim", "16", "--m", "12", "--lock-writes")
    assert code == 0 and text.startswith("built faces_hnsw_vector_16 in ") and "enrolments waiting" in text
    code, text, _ = run(capsys, "gallery", "--db", pg_url, "reindex", "--status", "--dim", "16")
    assert "ready" in text and " 12 " in text
    queries = unit(rng, 4)
    with open_store(pg_url, exact_limit=0) as store:  # through the rebuilt index
        for query, found in zip(queries, store.search("staff", queries, MODEL, 1)):
            best = max(people, key=lambda n: float((people[n] @ query).max()))
            assert found[0].name == best
    lines = (tmp_path / "staff.jsonl").read_text().splitlines()
    broken = json.loads(lines[100])
    broken["embedding"] = broken["embedding"][:-1]
    (tmp_path / "broken.jsonl").write_text("\n".join([*lines[:100], json.dumps(broken), *lines[101:]]) + "\n")
    code, out, err = run(capsys, "gallery", "--db", pg_url, "import", tmp_path / "broken.jsonl", "--gallery", "copy",
                         "--defer-index")  # fmt: skip
    assert code == 2 and "16-d" in err.splitlines()[-1] and "built faces_hnsw_vector_16" in out
    code, text, _ = run(capsys, "gallery", "--db", pg_url, "reindex", "--status", "--json")
    assert [(i["state"], i["deferred_since"]) for i in json.loads(text)["indexes"] if i["dim"] == 16] == [
        ("ready", None)
    ]  # a failed import still ends with the index built
    for argv, message in (
        (["--db", str(source), "reindex"], "reindex applies to PostgreSQL"),
        (["--db", str(source), "import", tmp_path / "staff.jsonl", "--defer-index"], "--defer-index applies"),
        (["--db", pg_url, "import", tmp_path / "staff.jsonl", "--workers", "1"], "go with --defer-index"),
        (["--db", pg_url, "reindex", "--dim", "99"], "no gallery of 99-d embeddings"),
    ):
        code, _, err = run(capsys, "gallery", *argv)
        assert code == 2 and err.count("\n") == 1 and message in err, err
