"""``POST /v1/video/tracks``: an uploaded video's tracks and events, and every bound of an untrusted upload answered
with its problem code while the service keeps serving."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers import require_module
from tests.helpers.photos import photo
from tests.helpers.service import create_key, serve_in_thread
from tests.helpers.videos import Appearance, Script, encode, render

from .conftest import Served

CLIP = Script(
    (
        Appearance("angelina", 0.2, 2.6, (0.25, 0.5), (0.4, 0.5), size=0.35),
        Appearance("jennifer", 0.8, 2.9, (0.75, 0.5), (0.7, 0.45), size=0.35),
    ),
    duration=3.2,
    width=480,
    height=360,
)


@pytest.fixture(autouse=True)
def _video_extra() -> None:
    require_module("av", "video")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    require_module("av", "video")
    return render(CLIP, tmp_path_factory.mktemp("video") / "clip.mp4").read_bytes()


@pytest.fixture(scope="module")
def video_gallery(served: Served) -> str:
    with served.service.client(served.admin) as http:
        assert http.post("/v1/galleries", json={"name": "doorway"}).status_code == 201
        for name, image in (("angelina", "img1.jpg"), ("jennifer", "img3.jpg"), ("mark", "img13.jpg")):
            subject = http.post("/v1/galleries/doorway/subjects", json={"name": name}).json()["id"]
            added = http.post(
                f"/v1/galleries/doorway/subjects/{subject}/faces", files={"image": photo(image).read_bytes()}
            )
            assert added.status_code == 201, added.text
    return "doorway"


def _problem(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == code and "Traceback" not in r.text
    return r.json()["detail"]


def test_tracks_of_an_upload(served: Served, clip: bytes, video_gallery: str) -> None:
    with served.service.client(served.reader) as http:
        r = http.post("/v1/video/tracks", params={"gallery": video_gallery}, files={"video": clip})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["video"]["width"] == 480 and body["video"]["codec"] == "h264" and "source" not in body["video"]
    assert body["sampling"] == {"fps": 10.0, "keyframes": False, "detect_every": 2}
    tracks = {t["identity"]: t for t in body["tracks"]}
    assert set(tracks) == {"angelina", "jennifer"}
    for appearance in CLIP.appearances:
        first, last = CLIP.visible(appearance)
        track = tracks[appearance.person]
        assert abs(track["start"] - first) <= 0.14 and abs(track["end"] - last) <= 0.14
    assert [e["event"] for e in body["events"]].count("identified") == 2
    assert body["threshold"]["source"] in ("user", "calibrated", "fallback")
    assert set(body["times"]["share"]) == {"decode", "detect", "embed", "track"}


def test_tracks_without_a_gallery_in_base64(served: Served, clip: bytes) -> None:
    with served.service.client(served.reader) as http:
        r = http.post(
            "/v1/video/tracks",
            params={"detect_every": 1, "fps": 5},
            json={"video": base64.b64encode(clip).decode()},
        )
    assert r.status_code == 200, r.text
    tracks = r.json()["tracks"]
    assert len(tracks) == 2 and all("identity" not in t for t in tracks)


def test_keys_and_galleries(served: Served, clip: bytes, video_gallery: str) -> None:
    with served.service.client(served.scoped) as http:
        _problem(
            http.post("/v1/video/tracks", params={"gallery": video_gallery}, files={"video": clip}), 403, "FORBIDDEN"
        )
    with served.service.client(served.reader) as http:
        _problem(http.post("/v1/video/tracks", params={"gallery": "nobody"}, files={"video": clip}), 404, "NOT_FOUND")
        _problem(http.post("/v1/video/tracks", params={"fps": 0}, files={"video": clip}), 422, "VALIDATION")
    with served.service.client() as http:
        _problem(http.post("/v1/video/tracks", files={"video": clip}), 401, "UNAUTHORIZED")


def test_uploads_outside_the_bounds(served: Served, tmp_path: Path) -> None:
    frames = [np.full((48, 64, 3), 5 * i, np.uint8) for i in range(5)]
    transport = encode(frames, tmp_path / "clip.ts", 25, container="mpegts").read_bytes()
    lossless = encode(frames, tmp_path / "clip.mkv", 25, codec="ffv1").read_bytes()
    long = encode([frames[0]] * 302, tmp_path / "long.mp4", 1).read_bytes()  # 302 s at 1 frame a second
    large = encode([np.zeros((1200, 2000, 3), np.uint8)] * 2, tmp_path / "large.mp4", 25).read_bytes()
    with served.service.client(served.reader) as http:
        post = lambda data: http.post("/v1/video/tracks", files={"video": data})  # noqa: E731
        assert "not a video in an accepted format (accepted: MP4/MOV" in _problem(post(transport), 415, "INVALID_VIDEO")
        assert "ffv1 video is not accepted" in _problem(post(lossless), 415, "INVALID_VIDEO")
        assert "longer than the limit of 300 s" in _problem(post(long), 413, "VIDEO_TOO_LONG")
        assert "2000x1200 frames" in _problem(post(large), 413, "TOO_MANY_PIXELS")
        _problem(post(b"not a video at all" * 50), 415, "INVALID_VIDEO")
        _problem(post(b""), 422, "INVALID_VIDEO")
        _problem(http.post("/v1/video/tracks", files={"image": frames[0].tobytes()}), 422, "VALIDATION")
    with served.service.client(served.reader) as http:
        assert http.get("/v1/info").json()["limits"]["max_video_seconds"] == 300.0
        assert http.get("/readyz").status_code == 200
    assert served.service.alive()


@pytest.fixture(scope="module")
def impatient(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A service in a thread whose videos must be done within 0.2 s."""
    from ghostfacenets.serve import create_app

    db = tmp_path_factory.mktemp("impatient") / "g.sqlite"
    key = str(create_key(db, "identify")["key"])
    with serve_in_thread(create_app(model=str(model_file), db=str(db), backend="eager", video_deadline_s=0.2)) as url:
        yield url, key


def test_a_video_past_the_deadline(impatient: tuple[str, str], clip: bytes) -> None:
    url, key = impatient
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
        started = time.monotonic()
        detail = _problem(http.post("/v1/video/tracks", files={"video": clip}), 413, "VIDEO_TOO_LONG")
        assert "not done within the limit of 0.2 s" in detail
        assert time.monotonic() - started < 30
