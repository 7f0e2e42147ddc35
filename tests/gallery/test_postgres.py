"""What only the PostgreSQL backend has, on a real server: the HNSW index path against exact search, the query plan,
filtering by gallery, halfvec, schema versions, a least-privileged role, hashed keys and rows really deleted."""

from __future__ import annotations

import hashlib
import urllib.parse

import numpy as np
import pytest

from ghostfacenets.gallery import GalleryError, ModelId, open_store
from ghostfacenets.gallery.postgres import PostgresStore, split_options
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
    from ghostfacenets.gallery import Enrolment

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
        assert db.execute("SELECT version FROM ghostfacenets.schema_version").fetchall() == [(1,)]
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
            f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA ghostfacenets TO app_{database}"
        )
    rng = np.random.default_rng(3)
    ghostfacenet = ModelId("ghostfacenet", "f" * 64, 512, True)  # the 512-d index comes with the schema
    with open_store(app_url) as store:
        enrolled = store.enroll("g", "ann", faces(unit(rng, 2, 512), "ann"), ghostfacenet)
        assert store.search("g", unit(rng, 1, 512), ghostfacenet, 1)[0][0].name == "ann"
        assert store.delete_subject("g", enrolled.subject.id) == 2
        store.create_key("admin")
        with pytest.raises(GalleryError, match="only the owner of schema ghostfacenets may create"):
            store.enroll("h", "x", faces(unit(rng, 1), "x"), MODEL)  # 16-d: a new index, which the owner must make
        assert [g.name for g in store.galleries()] == ["g"]  # nothing of the refused enrolment stayed
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
