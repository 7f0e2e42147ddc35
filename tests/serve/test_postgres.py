"""The service on PostgreSQL + pgvector: the same routes, a database shared by two worker processes."""

from __future__ import annotations

from tests.helpers.photos import photo
from tests.helpers.service import create_key, start_service


def test_two_workers_on_one_postgres_database(model_file, pg_server: str, pg_url: str, tmp_path) -> None:
    db = pg_url
    key = str(create_key(db, "admin")["key"])
    service = start_service(model_file, db, tmp_path / "serve.log", "--workers", "2")
    try:
        with service.client(key) as http:
            info = http.get("/v1/info").json()
            assert info["embedding_dim"] == 512
            assert http.post("/v1/galleries", json={"name": "pg"}).status_code == 201
            ids = {}
            for person, images in (("A", ["img1.jpg", "img2.jpg"]), ("B", ["img3.jpg"])):
                ids[person] = http.post("/v1/galleries/pg/subjects", json={"name": person}).json()["id"]
                files = [("image", photo(n).read_bytes()) for n in images]
                added = http.post(f"/v1/galleries/pg/subjects/{ids[person]}/faces", files=files)
                assert added.status_code == 201 and len(added.json()["faces"]) == len(images)
            # every request may land on either worker: all of them see every write
            for _ in range(6):
                r = http.post("/v1/galleries/pg/identify", files={"image": photo("img3.jpg").read_bytes()}).json()
                assert r["faces"][0]["match"] == ids["B"]
                assert abs(r["faces"][0]["candidates"][0]["similarity"] - 1.0) < 1e-5
            assert http.delete(f"/v1/galleries/pg/subjects/{ids['A']}").status_code == 204
            for _ in range(4):
                found = http.post("/v1/galleries/pg/identify", files={"image": photo("img1.jpg").read_bytes()}).json()
                assert [c["subject_id"] for c in found["faces"][0]["candidates"]] == [ids["B"]]
            assert http.get("/readyz").status_code == 200
            # the database goes away: 503 UNAVAILABLE (without its URL), not ready, still alive
            import urllib.parse

            import psycopg

            with psycopg.connect(pg_server, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE "{urllib.parse.urlsplit(db).path.lstrip("/")}" WITH (FORCE)')
            gone = http.get("/v1/galleries")
            assert gone.status_code == 503 and gone.json()["code"] == "UNAVAILABLE", gone.text
            assert "postgres" not in gone.json()["detail"]
            assert http.get("/readyz").status_code == 503
            assert http.get("/healthz").status_code == 200
    finally:
        service.stop()
