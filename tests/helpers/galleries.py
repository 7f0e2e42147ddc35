"""Gallery test data: unit vectors, faces, and workers that other processes run against a shared store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ghostfacenets.gallery import Enrolment, ModelId, NewFace, open_store
from ghostfacenets.gallery.base import hash_secret

MODEL = ModelId("test-model", "a" * 64, 16, True)


def unit(rng: np.random.Generator, n: int, dim: int = MODEL.dim) -> np.ndarray:
    """``n`` random L2-normalised float32 vectors."""
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def sha(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def faces(vectors: np.ndarray, tag: str, crops: bool = False) -> list[NewFace]:
    """One face per vector, its image hash derived from ``tag`` and the row."""
    return [
        NewFace(
            v,
            sha(f"{tag}-{i}"),
            f"{tag}/{i}.jpg",
            {"box": [0.0, 0.0, 10.0, 10.0], "score": 0.99},
            f"png-{tag}-{i}".encode() if crops else None,
        )
        for i, v in enumerate(vectors)
    ]


def brute_force(people: dict[str, np.ndarray], query: np.ndarray, k: int) -> list[tuple[str, float]]:
    """The k best subjects by their best face, written out independently of the stores."""
    best = {name: max(float(v @ query) for v in vectors) for name, vectors in people.items()}
    return sorted(best.items(), key=lambda item: -item[1])[:k]


def enrol_worker(db: str, worker: int, subjects: int, faces_each: int) -> int:
    """Run in another process: enrol ``subjects`` subjects and search after each; returns the searches that found
    the subject just enrolled as the best match."""
    rng = np.random.default_rng(1000 + worker)
    found = 0
    with open_store(db) as store:
        for i in range(subjects):
            vectors = unit(rng, faces_each)
            store.enroll("shared", f"w{worker}-s{i}", faces(vectors, f"w{worker}-s{i}"), MODEL)
            (best, *_), *_ = store.search("shared", vectors[:1], MODEL, 3)
            found += best.name == f"w{worker}-s{i}"
    return found


def batch_worker(db: str, subjects: int, faces_each: int, started: object) -> None:
    """Run in another process: enrol two transactions of ``subjects`` x ``faces_each`` faces, then a long third
    one, setting the multiprocessing event ``started`` as it begins (the parent kills the process then)."""
    rng = np.random.default_rng(7)
    with open_store(db) as store:
        for b, count in enumerate((subjects, subjects, 2500)):
            enrolments = [Enrolment(f"b{b}-s{s}", faces(unit(rng, faces_each), f"b{b}-s{s}")) for s in range(count)]
            if b == 2:
                started.set()  # type: ignore[attr-defined]
            store.enroll_many("batches", enrolments, MODEL)


def call_store(db: str, method: str, *args: object) -> object:
    """Run in another process: open the store ``db`` and return ``store.method(*args)``."""
    with open_store(db) as store:
        return getattr(store, method)(*args)


def enrol_pairs(db: str, gallery: str, pairs: np.ndarray, pause_s: float) -> None:
    """Run in another process: enrol each row of ``pairs`` (P, 2, D) as two subjects ``pair{i}-a`` and ``pair{i}-b``
    in one transaction per pair, ``pause_s`` apart."""
    import time

    with open_store(db) as store:
        for i, (a, b) in enumerate(pairs):
            time.sleep(pause_s)
            enrolments = [Enrolment(f"pair{i}-a", faces(a[None], f"pair{i}-a")),
                          Enrolment(f"pair{i}-b", faces(b[None], f"pair{i}-b"))]  # fmt: skip
            store.enroll_many(gallery, enrolments, MODEL)


def v3_sqlite_file(path: str | Path, vectors: np.ndarray, crops: bool = False, key: str | None = None) -> None:
    """An SQLite gallery file at schema v3 (what ghostfacenets 0.3 made; the base the migrations start from): gallery
    g with subject ann, one face per vector (and its crop), and an identify key of g with secret ``key``."""
    import sqlite3

    from ghostfacenets.gallery.sqlite import schema

    db = sqlite3.connect(path)
    db.executescript(schema._SCHEMA + "PRAGMA user_version = 3;")
    db.execute("INSERT INTO models VALUES (1, ?, ?, ?, ?)", (MODEL.name, MODEL.sha256, MODEL.dim, int(MODEL.flip)))
    db.execute("INSERT INTO galleries (id, name, model_id, created) VALUES (1, 'g', 1, '2024-01-02T03:04:05+00:00')")
    db.execute("INSERT INTO subjects VALUES (1, 1, 'ann', '{}', '2024-01-02', '2024-01-02')")
    for i, v in enumerate(vectors, start=1):
        db.execute(
            "INSERT INTO faces (gallery_id, subject_id, model_id, embedding, image_sha256, source, created) "
            "VALUES (1, 1, 1, ?, ?, 'ann.jpg', '2024-01-02')",
            (v.astype("<f4").tobytes(), sha(f"ann-{i}")),
        )
        if crops:
            db.execute("INSERT INTO crops VALUES (?, ?)", (i, f"png-{i}".encode()))
    if key is not None:
        db.execute(
            "INSERT INTO api_keys (secret_sha256, role, gallery_id, label, created) VALUES (?, 'identify', 1, '', ?)",
            (hash_secret(key), "2024-01-02"),
        )
    db.commit()
    db.close()


# What the PostgreSQL people migration (schema v3) adds, taken away again from a schema without people data.
UNDO_POSTGRES_PEOPLE = """
DROP TABLE ghostfacenets.people_settings, ghostfacenets.people_rejections, ghostfacenets.people_faces;
ALTER TABLE ghostfacenets.faces DROP COLUMN photo_id;
DROP TABLE ghostfacenets.photos, ghostfacenets.people;
ALTER TABLE ghostfacenets.faces ADD CONSTRAINT faces_gallery_id_image_sha256_key UNIQUE (gallery_id, image_sha256),
    ALTER COLUMN subject_id SET NOT NULL
"""
