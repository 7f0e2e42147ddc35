"""What only the PostgreSQL backend has, on a real server: the HNSW index path against exact search, the query plan,
filtering by gallery, halfvec, schema versions, a least-privileged role, hashed keys and rows really deleted, and the
index dropped for a bulk load and built again (concurrently, failed, rebuilt with other parameters)."""

from __future__ import annotations

import hashlib
import urllib.parse

import numpy as np
import pytest

from ghostfacenets.gallery import ConflictError, Enrolment, GalleryError, ModelId, ModelMismatchError, open_store
from ghostfacenets.gallery.postgres import SCHEMA_VERSION, IndexBuild, IndexInfo, PostgresStore, split_options
from tests.helpers import require_module
from tests.helpers.galleries import MODEL, brute_force, faces, unit


def _with(url: str, **params: object) -> str:
    """``url`` with more query parameters."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query) + [(k, str(v)) for k, v in params.items()]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _with_user(url: str, user: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.split("@")[-1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def _fill(store: PostgresStore, gallery: str, subjects: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    people = {f"p{i:04d}": unit(rng, 1 + i % 3) for i in range(subjects)}
    store.enroll_many(gallery, [Enrolment(n, faces(v, f"{gallery}-{n}")) for n, v in people.items()], MODEL)
    return people


def test_the_index_path_agrees_with_exact_search(pg_url: str) -> None:
    rng = np.random.default_rng(0)
    with PostgresStore(pg_url, exact_limit=0) as indexed, PostgresStore(pg_url) as exact:
        people = _fill(indexed, "big", 600, rng)
        _fill(indexed, "other", 900, rng)  # a bigger gallery in the same index: the filter must not starve results
        assert indexed.exact_limit == 0 and exact.exact_limit == 5_000
        names = list(people)
        probes = [people[names[i]][0] + 0.35 * unit(rng, 1)[0] for i in range(0, 600, 15)]
        queries = np.stack([p / np.linalg.norm(p) for p in probes])
        via_index = indexed.search("big", queries, MODEL, 5)
        via_scan = exact.search("big", queries, MODEL, 5)
        for query, a, b in zip(queries, via_index, via_scan):
            expected = brute_force(people, query, 5)
            assert [c.name for c in b] == [n for n, _ in expected]
            assert len(a) == 5 and a[0].name == expected[0][0]  # recall@1 of the index on mated probes
            np.testing.assert_allclose(a[0].similarity, expected[0][1], atol=1e-5)
        plan = indexed.explain_search("big", queries[0], MODEL)
        assert "faces_hnsw_vector_16" in plan, plan


def test_index_search_of_a_small_gallery_beside_a_big_one(pg_url: str) -> None:
    rng = np.random.default_rng(1)
    with PostgresStore(pg_url, exact_limit=0, ef_search=10) as store:
        _fill(store, "big", 1500, rng)
        small = _fill(store, "small", 7, rng)
        query = unit(rng, 1)
        found = store.search("small", query, MODEL, 7)[0]
        assert [c.name for c in found] == [n for n, _ in brute_force(small, query[0], 7)]


def test_options_in_the_url(pg_url: str) -> None:
    base_url, options = split_options(_with(pg_url, ef_search=55, exact_limit=3, sslmode="disable"))
    assert options == {"ef_search": "55", "exact_limit": "3"} and "sslmode=disable" in base_url
    with open_store(_with(pg_url, ef_search=55, exact_limit=3)) as store:
        assert (store.ef_search, store.exact_limit) == (55, 3)  # type: ignore[attr-defined]
    for bad, message in (
        ({"ef_search": 0}, "at least 1"),
        ({"ef_search": "x"}, "integer"),
        ({"vector_type": "int8"}, "vector"),
    ):
        with pytest.raises(GalleryError, match=message):
            open_store(_with(pg_url, **bad))
    with pytest.raises(GalleryError, match="unknown PostgreSQL option"):
        PostgresStore(pg_url, efsearch=3)


def test_halfvec_storage(pg_url: str) -> None:
    rng = np.random.default_rng(2)
    with PostgresStore(pg_url, schema="half", vector_type="halfvec", exact_limit=0) as store:
        people = _fill(store, "g", 300, rng)
        queries = unit(rng, 5)
        for query, found in zip(queries, store.search("g", queries, MODEL, 3)):
            expected = brute_force(people, query, 3)
            assert found[0].name == expected[0][0]
            np.testing.assert_allclose([c.similarity for c in found], [s for _, s in expected], atol=2e-3)
        assert "faces_hnsw_halfvec_16" in store.explain_search("g", queries[0], MODEL)
        import psycopg

        with psycopg.connect(split_options(pg_url)[0]) as db:
            kind = db.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'half.faces'::regclass "
                "AND attname = 'embedding'"
            ).fetchone()
        assert kind == ("halfvec",)
    with pytest.raises(GalleryError, match="stores embeddings as halfvec"):
        PostgresStore(pg_url, schema="half", vector_type="vector")


def test_a_newer_schema_is_refused(pg_url: str) -> None:
    import psycopg

    open_store(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as db:
        assert db.execute("SELECT version FROM ghostfacenets.schema_version").fetchall() == [(SCHEMA_VERSION,)]
        db.execute("UPDATE ghostfacenets.schema_version SET version = 7")
    with pytest.raises(GalleryError, match="at v7, newer than this ghostfacenets"):
        open_store(pg_url)


def test_an_unreachable_server_is_one_clear_error(tmp_path) -> None:
    require_module("psycopg", "postgres")
    with pytest.raises(GalleryError) as caught:
        open_store(f"postgresql://nobody:secret@/nodb?host={tmp_path}")
    assert "\n" not in str(caught.value) and "secret" not in str(caught.value) and "***" in str(caught.value)


def test_a_least_privileged_role(pg_url: str) -> None:
    """The schema made by its owner; the service's role may read and write rows, nothing else (docs/gallery.md)."""
    import psycopg

    database = urllib.parse.urlsplit(pg_url).path.lstrip("/")
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(f"DROP EXTENSION IF EXISTS vector; CREATE ROLE app_{database} LOGIN")
    app_url = _with_user(pg_url, f"app_{database}")
    with pytest.raises(GalleryError, match="ask an administrator to run CREATE EXTENSION vector"):
        open_store(app_url)
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    open_store(pg_url).close()  # the owner creates the extension and the schema
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(
            f"GRANT USAGE ON SCHEMA ghostfacenets TO app_{database};"
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ghostfacenets TO app_{database};"
            f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA ghostfacenets TO app_{database};"
            f"REVOKE UPDATE, DELETE ON ghostfacenets.audit FROM app_{database}"
        )
    rng = np.random.default_rng(3)
    ghostfacenet = ModelId("ghostfacenet", "f" * 64, 512, True)  # the 512-d index comes with the schema
    with open_store(app_url) as store:
        enrolled = store.enroll("g", "ann", faces(unit(rng, 2, 512), "ann"), ghostfacenet)
        assert store.search("g", unit(rng, 1, 512), ghostfacenet, 1)[0][0].name == "ann"
        assert store.delete_subject("g", enrolled.subject.id) == 2
        store.create_key("admin")
        assert [e.action for e in store.audit()][-2:] == ["subject.delete", "key.create"]  # recorded by the app role
        with pytest.raises(GalleryError, match="only the owner of schema ghostfacenets may create"):
            store.enroll("h", "x", faces(unit(rng, 1), "x"), MODEL)  # 16-d: a new index, which the owner must make
        assert [g.name for g in store.galleries()] == ["g"]  # nothing of the refused enrolment stayed
        for index_work in (lambda: store.drop_index(512), lambda: store.build_index(512, rebuild=True)):
            with pytest.raises(GalleryError, match="only the owner of the gallery schema"):
                index_work()
        assert _status(store, 512).state == "ready"
    with open_store(pg_url) as owner:
        owner.drop_index(512)  # type: ignore[attr-defined]
    with open_store(app_url) as store:  # while the owner loads: enrolments and searches go on, exact
        enrolled = store.enroll("g2", "bo", faces(unit(rng, 2, 512), "bo"), ghostfacenet)
        assert store.search("g2", unit(rng, 1, 512), ghostfacenet, 1)[0][0].name == "bo"
        assert _status(store, 512).state == "missing"  # type: ignore[arg-type]
    with open_store(pg_url) as owner:
        assert owner.build_index(512).faces == 2  # type: ignore[attr-defined]
    app = psycopg.connect(_with_user(pg_url, f"app_{database}"), autocommit=True)
    with app, pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute("DELETE FROM ghostfacenets.audit")  # the trail is append-only for the app role
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(f"DROP OWNED BY app_{database}; DROP ROLE app_{database}")


def test_keys_hashed_and_deleted_rows_gone(pg_url: str) -> None:
    import psycopg

    rng = np.random.default_rng(4)
    with open_store(pg_url) as store:
        _key, secret = store.create_key("identify")
        gone = store.enroll("g", "Forget Me", faces(unit(rng, 2), "forget", crops=True), MODEL)
        store.delete_subject("g", gone.subject.id)
        assert store.gallery("g").faces == 0
    with psycopg.connect(pg_url, autocommit=True) as db:
        assert db.execute("SELECT secret_sha256 FROM ghostfacenets.api_keys").fetchall() == [
            (hashlib.sha256(secret.encode()).hexdigest(),)
        ]
        for table, column in (("subjects", "id"), ("faces", "subject_id")):
            count = db.execute(f"SELECT count(*) FROM ghostfacenets.{table} WHERE {column} = %s", (gone.subject.id,))
            assert count.fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM ghostfacenets.crops").fetchone() == (0,)
        db.execute("VACUUM ghostfacenets.faces")
        dead = db.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'faces'").fetchone()
        assert dead == (0,)


def _index_rows(url: str, dim: int = MODEL.dim) -> dict[str, bool]:
    """Index name -> valid, for the HNSW indexes of ``dim``-d embeddings on the faces table, from the catalog."""
    import psycopg

    with psycopg.connect(split_options(url)[0]) as db:
        rows = db.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am a ON a.oid = c.relam WHERE i.indrelid = 'ghostfacenets.faces'::regclass "
            "AND a.amname = 'hnsw' AND pg_get_expr(i.indpred, i.indrelid) = %s",
            (f"(dim = {dim})",),
        ).fetchall()
    return dict(rows)


def _status(store: PostgresStore, dim: int = MODEL.dim) -> IndexInfo:
    (info,) = [i for i in store.index_status() if i.dim == dim]
    return info


def _assert_exact(store: PostgresStore, gallery: str, people: dict[str, np.ndarray], queries: np.ndarray) -> None:
    for query, found in zip(queries, store.search(gallery, queries, MODEL, 5)):
        expected = brute_force(people, query, 5)
        assert [c.name for c in found] == [n for n, _ in expected]
        np.testing.assert_allclose([c.similarity for c in found], [s for _, s in expected], atol=1e-5)


def test_a_bulk_load_with_the_index_dropped_then_built(pg_url: str) -> None:
    rng = np.random.default_rng(5)
    index = f"faces_hnsw_vector_{MODEL.dim}"
    with PostgresStore(pg_url, exact_limit=0) as store:
        people = _fill(store, "big", 300, rng)  # the index kept up to date, as live enrolments do
        assert _index_rows(pg_url) == {index: True} and _status(store).state == "ready"
        store.drop_index(MODEL.dim)
        assert _index_rows(pg_url) == {} and _index_rows(pg_url, 512) == {"faces_hnsw_vector_512": True}
        info = _status(store)
        assert (info.state, info.size_bytes, info.m) == ("missing", 0, None) and info.deferred_since is not None
        # the load: new subjects through COPY; a new gallery of this size does not bring the index back
        more = {f"q{i:04d}": unit(rng, 2) for i in range(400)}
        store.enroll_many("big", [Enrolment(n, faces(v, f"big-{n}")) for n, v in more.items()], MODEL)
        people |= more
        other = _fill(store, "other", 50, rng)
        assert _index_rows(pg_url) == {}
        queries = unit(rng, 6)
        _assert_exact(store, "big", people, queries)  # without the index: exact, the same answers
        _assert_exact(store, "other", other, queries)
        # the rules hold meanwhile: images once per gallery, one model, all or nothing
        again = store.enroll("big", "q0001", faces(more["q0001"], "big-q0001"), MODEL)
        assert again.added == [] and len(again.skipped) == 2
        with pytest.raises(ConflictError, match="already enrolled as 'q0001'"):
            store.enroll_many("big", [Enrolment("new", faces(unit(rng, 1), "fresh")),
                                      Enrolment("thief", faces(more["q0001"], "big-q0001"))], MODEL)  # fmt: skip
        assert store.find_subject("big", "new") is None
        with pytest.raises(ModelMismatchError):
            store.enroll("big", "x", faces(unit(rng, 1, 32), "x"), ModelId("wide", "w" * 64, 32, True))
        faces_before = store.gallery("big").faces + store.gallery("other").faces
        build = store.build_index(MODEL.dim, maintenance_work_mem="64MB", workers=0)
        assert (build.name, build.built, build.faces, build.concurrently) == (index, True, faces_before, True)
        assert (build.maintenance_work_mem, build.workers) == ("64MB", 0) and build.size_bytes > 0
        assert _index_rows(pg_url) == {index: True}
        info = _status(store)
        assert (info.state, info.deferred_since, info.m, info.ef_construction) == ("ready", None, 16, 64)
        assert info.size_bytes == build.size_bytes and info.faces == faces_before
        assert "faces_hnsw_vector_16" in store.explain_search("big", queries[0], MODEL)
        names = list(more)
        probes = np.stack([more[names[i]][0] + 0.3 * unit(rng, 1)[0] for i in range(0, 400, 20)])
        probes /= np.linalg.norm(probes, axis=1, keepdims=True)
        for probe, found in zip(probes, store.search("big", probes, MODEL, 3)):
            best = brute_force(people, probe, 1)[0]
            assert found[0].name == best[0] and found[0].similarity == pytest.approx(best[1], abs=1e-5)
        assert store.build_index(MODEL.dim).built is False  # ready: nothing to do
        # a rebuild with other parameters: the old index serves until the new one replaces it
        rebuilt = store.build_index(MODEL.dim, m=8, ef_construction=32, concurrently=False)
        assert rebuilt.built and not rebuilt.concurrently and _index_rows(pg_url) == {index: True}
        assert (_status(store).m, _status(store).ef_construction) == (8, 32)
    with PostgresStore(pg_url) as reopened:
        assert reopened.hnsw == (8, 32)  # kept for later builds
        _assert_exact(reopened, "big", people, queries)


def test_a_failed_concurrent_build_leaves_exact_searches_until_rebuilt(pg_url: str, monkeypatch) -> None:
    """A concurrent build waits for enrolments in flight (and says so); one that fails leaves an invalid index,
    which searches do not use, and the next build replaces it."""
    import threading

    import psycopg

    import ghostfacenets.gallery.postgres.index as postgres_module

    rng = np.random.default_rng(6)
    index = f"faces_hnsw_vector_{MODEL.dim}"
    conninfo = split_options(pg_url)[0]
    with PostgresStore(pg_url, exact_limit=0) as store:
        people = _fill(store, "g", 200, rng)
        store.drop_index(MODEL.dim)
        with psycopg.connect(conninfo) as writer, psycopg.connect(conninfo, autocommit=True) as admin:
            writer.execute("LOCK TABLE ghostfacenets.faces IN ROW EXCLUSIVE MODE")  # an enrolment in flight
            admin.execute("SET search_path TO ghostfacenets, public; SET lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                admin.execute(store._index_sql(index, MODEL.dim, concurrently=True))
            assert _index_rows(pg_url) == {index: False}
            assert _status(store).state == "invalid"
            queries = unit(rng, 5)
            _assert_exact(store, "g", people, queries)  # the invalid index is not used
            writer.rollback()
            assert store.build_index(MODEL.dim).built and _index_rows(pg_url) == {index: True}
            store.drop_index(MODEL.dim)
            writer.execute("LOCK TABLE ghostfacenets.faces IN ROW EXCLUSIVE MODE")  # another enrolment in flight
            monkeypatch.setattr(postgres_module, "PROGRESS_INTERVAL_S", 0.05)
            phases: list[str] = []
            waiting = threading.Event()

            def progress(phase: str, done: int, total: int) -> None:
                phases.append(phase)
                if "waiting for writers" in phase:
                    waiting.set()

            builds: list[IndexBuild] = []
            thread = threading.Thread(target=lambda: builds.append(store.build_index(MODEL.dim, progress=progress)))
            thread.start()
            try:
                assert waiting.wait(60), phases
                assert _status(store).state == "building"
                with pytest.raises(GalleryError, match="another process is dropping or building"):
                    store.drop_index(MODEL.dim)
            finally:
                writer.rollback()  # the enrolment ends; the build goes on
                thread.join(120)
        assert builds and builds[0].built and _index_rows(pg_url) == {index: True}
        assert _status(store).state == "ready"
        _assert_exact(store, "g", people, queries)
