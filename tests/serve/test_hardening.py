"""Issue 21 through the running service (SQLite): what an identify key learns, keys' permissions, a scoped key whose
gallery row is gone, the audit trail of API changes, erasure while the service runs, and /readyz saying no more
than a status."""

from __future__ import annotations

import json
import sqlite3

from tests.helpers.photos import photo
from tests.helpers.service import cli

from .conftest import Served


def _key(served: Served, *options: str) -> dict[str, object]:
    return json.loads(cli("keys", "create", "--db", str(served.db), *options, "--json").stdout)


def _image(name: str) -> dict[str, bytes]:
    return {"image": photo(name).read_bytes()}


def test_identify_keys_learn_only_whom_they_matched(served: Served) -> None:
    with served.service.client(served.admin) as http:
        assert http.post("/v1/galleries", json={"name": "oracle"}).status_code == 201
        ids = {}
        for name, image in (("Ann", "img1.jpg"), ("Bob", "img3.jpg")):
            ids[name] = http.post("/v1/galleries/oracle/subjects", json={"name": name}).json()["id"]
            assert http.post(f"/v1/galleries/oracle/subjects/{ids[name]}/faces", files=_image(image)).status_code == 201
    plain = str(_key(served, "--role", "identify")["key"])
    seeing = str(_key(served, "--role", "identify", "--can", "see-candidates")["key"])
    listing = str(_key(served, "--role", "identify", "--can", "list-subjects")["key"])

    with served.service.client(plain) as http:
        matched = http.post("/v1/galleries/oracle/identify", params={"top_k": 5}, files=_image("img1.jpg")).json()
        (face,) = matched["faces"]
        assert face["match"] == ids["Ann"] and [c["subject_id"] for c in face["candidates"]] == [ids["Ann"]]
        strict = http.post("/v1/galleries/oracle/identify", params={"threshold": 1.0}, files=_image("img1.jpg"))
        assert strict.status_code == 200 and strict.json()["faces"][0] == {**face, "match": None, "candidates": []}
        lowered = http.post("/v1/galleries/oracle/identify", params={"threshold": -1.0}, files=_image("img5.jpg"))
        assert lowered.status_code == 403 and lowered.json()["code"] == "FORBIDDEN"
        for path in ("/v1/galleries/oracle/subjects", f"/v1/galleries/oracle/subjects/{ids['Ann']}",
                     f"/v1/galleries/oracle/subjects/{ids['Ann']}/faces"):  # fmt: skip
            refused = http.get(path)
            assert refused.status_code == 403 and "list-subjects" in refused.json()["detail"], path
        assert http.get("/v1/galleries/oracle").json()["subjects"] == 2  # the gallery's sizes are not secret
    with served.service.client(seeing) as http:
        seen = http.post("/v1/galleries/oracle/identify", params={"threshold": 1.0}, files=_image("img1.jpg")).json()
        assert seen["faces"][0]["match"] is None and len(seen["faces"][0]["candidates"]) == 2
        assert (
            http.post("/v1/galleries/oracle/identify", params={"threshold": -1.0}, files=_image("img5.jpg")).json()[
                "faces"
            ][0]["match"]
            in ids.values()
        )
        assert http.get("/v1/galleries/oracle/subjects").status_code == 403
    with served.service.client(listing) as http:
        names = [s["name"] for s in http.get("/v1/galleries/oracle/subjects").json()["subjects"]]
        assert names == ["Ann", "Bob"]
        assert http.get(f"/v1/galleries/oracle/subjects/{ids['Bob']}/faces").status_code == 200


def test_a_scoped_key_fails_closed_once_its_gallery_row_is_gone(served: Served) -> None:
    scoped = str(_key(served, "--role", "admin", "--gallery", "vanishing")["key"])
    with served.service.client(scoped) as http:
        assert [g["name"] for g in http.get("/v1/galleries").json()["galleries"]] == ["vanishing"]
    db = sqlite3.connect(served.db)
    db.execute("PRAGMA foreign_keys = OFF")  # the row goes, the key's reference stays (no cascade)
    db.execute("DELETE FROM galleries WHERE name = 'vanishing'")
    db.commit()
    db.close()
    with served.service.client(served.admin) as http:
        assert http.post("/v1/galleries", json={"name": "vanishing"}).status_code == 201  # same name, new gallery
    with served.service.client(scoped) as http:
        requests = [("GET", "/v1/galleries"), ("GET", "/v1/galleries/vanishing"), ("GET", "/v1/galleries/default")]
        for method, path in [*requests, ("POST", "/v1/galleries/elsewhere/subjects")]:
            answer = http.request(method, path, json={"name": "x"} if method == "POST" else None)
            assert answer.status_code == 401 and answer.json()["code"] == "UNAUTHORIZED", (path, answer.text)


def test_the_audit_trail_names_the_key_and_the_route_of_each_change(served: Served) -> None:
    with served.service.client(served.admin) as http:
        assert http.post("/v1/galleries", json={"name": "audited"}).status_code == 201
        subject = http.post("/v1/galleries/audited/subjects", json={"name": "Cy Audit-Name"}).json()["id"]
        assert http.post(f"/v1/galleries/audited/subjects/{subject}/faces", files=_image("img2.jpg")).status_code == 201
        assert http.patch(f"/v1/galleries/audited/subjects/{subject}", json={"name": "Cy B"}).status_code == 200
        assert http.delete(f"/v1/galleries/audited/subjects/{subject}").status_code == 204
    trail = cli("audit", "--db", str(served.db), "--gallery", "audited", "--json")
    events = json.loads(trail.stdout)
    assert [(e["action"], e["key_id"], e["via"]) for e in events] == [
        ("gallery.create", served.admin_id, "POST /v1/galleries"),
        ("subject.create", served.admin_id, "POST /v1/galleries/audited/subjects"),
        ("faces.add", served.admin_id, f"POST /v1/galleries/audited/subjects/{subject}/faces"),
        ("subject.update", served.admin_id, f"PATCH /v1/galleries/audited/subjects/{subject}"),
        ("subject.delete", served.admin_id, f"DELETE /v1/galleries/audited/subjects/{subject}"),
    ]
    assert all(e["actor"] == f"key {served.admin_id}" and e["gallery"] == "audited" for e in events)
    assert "Audit-Name" not in trail.stdout and "Cy B" not in trail.stdout
    table = cli("audit", "--db", str(served.db), "--gallery", "audited", "--since", "1h").stdout
    assert "subject.delete" in table and f"key {served.admin_id}" in table


def test_a_subject_deleted_through_the_service_is_in_no_file_of_the_database(served: Served) -> None:
    name = "Dora Erased-Marker"
    with served.service.client(served.admin) as http:
        http.post("/v1/galleries", json={"name": "erasure"})
        subject = http.post(
            "/v1/galleries/erasure/subjects", json={"name": name, "metadata": {"note": "meta-erased-marker"}}
        ).json()["id"]
        assert http.post(f"/v1/galleries/erasure/subjects/{subject}/faces", files=_image("img4.jpg")).status_code == 201
        files = sorted(served.db.parent.glob(served.db.name + "*"))
        assert b"Erased-Marker" in b"".join(p.read_bytes() for p in files)
        assert http.delete(f"/v1/galleries/erasure/subjects/{subject}").status_code == 204
    assert served.service.alive()  # the service still holds the database open
    for path in sorted(served.db.parent.glob(served.db.name + "*")):
        data = path.read_bytes()
        assert b"Erased-Marker" not in data and b"meta-erased-marker" not in data, path.name


def test_readyz_is_a_status_and_nothing_more(served: Served) -> None:
    with served.service.client() as http:
        ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


def test_identify_by_embeddings_is_no_oracle_either(served: Served) -> None:
    import numpy as np

    with served.service.client(served.admin) as http:
        info = http.get("/v1/info").json()
        model = {"name": info["model"], "sha256": info["model_sha256"], "embedding_dim": info["embedding_dim"],
                 "flip": info["flip"]}  # fmt: skip
        http.post("/v1/galleries", json={"name": "vectors"})
        rng = np.random.default_rng(5)
        vectors = [(v / np.linalg.norm(v)).tolist() for v in rng.normal(size=(2, info["embedding_dim"]))]
        for i, vector in enumerate(vectors):
            subject = http.post("/v1/galleries/vectors/subjects", json={"name": f"V{i}"}).json()["id"]
            body = {"model": model, "faces": [{"embedding": vector}], "image_sha256": [f"{i}" * 64]}
            assert http.post(f"/v1/galleries/vectors/subjects/{subject}/faces/embeddings", json=body).status_code == 201
    plain = str(_key(served, "--role", "identify")["key"])
    stranger = rng.normal(size=info["embedding_dim"])
    stranger = (stranger / np.linalg.norm(stranger)).tolist()
    with served.service.client(plain) as http:
        url = "/v1/galleries/vectors/identify/embeddings"
        found = http.post(url, json={"model": model, "faces": [{"embedding": vectors[0]}, {"embedding": stranger}]})
        first, second = found.json()["faces"]
        assert first["match"] is not None and [c["subject_id"] for c in first["candidates"]] == [first["match"]]
        assert second == {"candidates": [], "match": None}  # a stranger: nothing about the closest people
        lowered = http.post(url, params={"threshold": -1}, json={"model": model, "faces": [{"embedding": stranger}]})
        assert lowered.status_code == 403
