"""kill -9 during an enrolment loop loses no committed face and leaves no half-enrolled subject."""

from __future__ import annotations

import threading
import time

import httpx

from tests.helpers.photos import photo
from tests.helpers.service import create_key, start_service

PHOTOS_PER_REQUEST = 3


def test_kill_during_enrolment(model_file, database: str, tmp_path) -> None:
    """On SQLite and on PostgreSQL."""
    from ghostfacenets.gallery import open_store

    db = database
    key = str(create_key(db, "admin")["key"])
    service = start_service(model_file, db, tmp_path / "serve.log")  # no --store-crops
    names = [f"img{i}.jpg" for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)]
    committed: dict[int, list[int]] = {}  # subject id -> face ids the service answered 201 for
    stop = threading.Event()
    errors: list[str] = []

    def enrol_forever() -> None:
        with service.client(key, timeout=60) as http:
            http.post("/v1/galleries", json={"name": "crash"})
            i = 0
            while not stop.is_set():
                try:
                    subject = http.post("/v1/galleries/crash/subjects", json={"name": f"person {i}"}).json()["id"]
                    batch = [names[(i * PHOTOS_PER_REQUEST + j) % len(names)] for j in range(PHOTOS_PER_REQUEST)]
                    # each photo once per gallery: reuse one by re-encoding it with a comment-free copy
                    files = [("image", photo(n).read_bytes() + bytes([i % 251])) for n in batch]
                    r = http.post(f"/v1/galleries/crash/subjects/{subject}/faces", files=files)
                except httpx.TransportError:
                    return  # the server is gone
                if r.status_code != 201:
                    errors.append(r.text)
                    return
                committed[subject] = [f["face_id"] for f in r.json()["faces"]]
                i += 1

    worker = threading.Thread(target=enrol_forever)
    worker.start()
    deadline = time.monotonic() + 120
    while len(committed) < 4 and time.monotonic() < deadline and not errors:
        time.sleep(0.05)
    time.sleep(0.15)  # mid-request, most likely
    service.kill()
    stop.set()
    worker.join(60)
    assert not errors, errors[:1]
    assert len(committed) >= 4

    with open_store(db) as store:
        faces_of = {s.id: store.faces("crash", s.id) for s in store.subjects("crash", limit=10_000)}
        for subject, face_ids in committed.items():
            assert sorted(f.id for f in faces_of[subject]) == sorted(face_ids)
        for subject, faces in faces_of.items():
            assert len(faces) in (0, PHOTOS_PER_REQUEST), (subject, len(faces))  # all of a request or none
            assert not any(f.has_crop for f in faces)  # no crops (nor photos) without --store-crops
