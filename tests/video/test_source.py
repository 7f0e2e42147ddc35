"""Reading videos: sampling, key frames, seeking, looping, the limits of untrusted uploads, damaged files, and a
live HTTP stream that drops and comes back."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ghostfacenets.video import Frame, VideoError, VideoLimitError, VideoLimits, VideoSource
from ghostfacenets.video.source import describe_source, is_live
from tests.helpers.videos import encode

FPS = 25


def numbered_frames(count: int, width: int = 64, height: int = 48) -> list[np.ndarray]:
    """Frames whose top half's grey level tells their number (5 levels apart, up to 50 frames)."""
    frames = []
    for i in range(count):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[: height // 2] = 5 * (i % 50)
        frame[height // 2 :, : width * (i % 4 + 1) // 4] = 255
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s at 25 fps, a key frame every 10 frames."""
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    return encode(
        numbered_frames(50), path, FPS, options={"preset": "ultrafast", "crf": "10", "g": "10", "keyint_min": "10"}
    )


def number(frame: Frame) -> int:
    """The number :func:`numbered_frames` drew in a decoded frame."""
    return round(float(frame.pixels[: frame.pixels.shape[0] // 2].mean()) / 5)


def test_every_frame_and_their_times(clip: Path) -> None:
    source = VideoSource(clip)
    frames = list(source)
    assert [round(f.time, 3) for f in frames] == [round(i / FPS, 3) for i in range(50)]
    assert [f.index for f in frames] == list(range(50))
    info = source.info
    assert info is not None and (info.width, info.height, info.fps, info.frames) == (64, 48, 25.0, 50)
    assert info.duration == pytest.approx(2.0) and not info.live and info.codec == "h264"
    assert frames[3].pixels.shape == (48, 64, 3) and frames[3].pixels.dtype == np.uint8
    assert [number(f) for f in frames] == list(range(50))  # decoded in order, the right frames
    assert source.stats.decoded == source.stats.sampled == 50


@pytest.mark.parametrize("fps", [10.0, 5.0, 3.0])
def test_sampling_keeps_the_rate_on_average_and_never_skips_a_whole_step(clip: Path, fps: float) -> None:
    times = [f.time for f in VideoSource(clip, fps=fps)]
    assert times[0] == 0.0
    gaps = np.diff(times)
    assert len(times) == pytest.approx(2.0 * fps, abs=1)
    assert gaps.max() <= 1 / fps + 1 / FPS + 1e-6 and gaps.min() >= 1 / fps - 1 / FPS - 1e-6


def test_key_frames_only(clip: Path) -> None:
    frames = list(VideoSource(clip, keyframes=True))
    assert [f.index for f in frames] == [0, 10, 20, 30, 40]
    assert all(f.keyframe for f in frames)


def test_seek_and_range(clip: Path) -> None:
    frames = list(VideoSource(clip, start=0.9, end=1.5))
    assert [round(f.time, 2) for f in frames] == [round(i / FPS, 2) for i in range(23, 38)]
    assert number(frames[0]) == 23  # really frame 23, not its key frame


def test_loop_plays_again_with_growing_times(clip: Path) -> None:
    source = VideoSource(clip, fps=5, loop=True)
    frames = source.frames()
    times = [next(frames).time for _ in range(25)]
    frames.close()
    assert np.all(np.diff(times) > 0)
    assert times[-1] == pytest.approx(24 / 5, abs=0.1)  # two and a half passes at 5 frames a second


def test_files_that_are_not_videos(tmp_path: Path, clip: Path) -> None:
    with pytest.raises(VideoError, match="no such file"):
        VideoSource(tmp_path / "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 100)
    with pytest.raises(VideoError, match="cannot open"):
        list(VideoSource(text))
    with pytest.raises(VideoError, match="empty"):
        VideoSource(b"")
    data = clip.read_bytes()
    cut = data[: len(data) // 2]  # the index (moov) of an MP4 written by FFmpeg comes last: a cut file has none
    with pytest.raises(VideoError):
        list(VideoSource(cut))
    with pytest.raises(VideoError, match="fps must be positive"):
        VideoSource(clip, fps=0)


def test_names_of_sources_never_carry_credentials() -> None:
    assert describe_source("rtsp://admin:s3cret@10.0.0.7:554/stream1") == "rtsp://10.0.0.7:554/stream1"
    assert describe_source("http://cam.local/video.mjpg") == "http://cam.local/video.mjpg"
    assert describe_source(0) == describe_source("0") == "camera 0"
    assert describe_source(b"...") == "upload"
    assert is_live("rtsp://cam/stream") and is_live(0) and is_live("http://cam/x") is None and not is_live("a.mp4")


def test_damaged_frames_in_the_middle(clip: Path) -> None:
    data = bytearray(clip.read_bytes())
    rng = np.random.default_rng(0)
    middle = rng.integers(len(data) // 4, len(data) // 2, 400)
    for i in middle:
        data[i] = rng.integers(0, 256)
    try:
        frames = list(VideoSource(bytes(data)))
    except VideoError as exc:  # refused with one line ...
        assert "\n" not in str(exc)
    else:  # ... or concealed by the decoder: still well-formed frames
        assert all(f.pixels.shape == (48, 64, 3) for f in frames)


# ---------------------------------------------------------------------------------------------------- limits
UPLOAD = VideoLimits.upload(max_pixels=64 * 48, max_seconds=10, deadline_s=30)


def test_upload_limits_accept_a_plain_mp4(clip: Path) -> None:
    assert len(list(VideoSource(clip.read_bytes(), limits=UPLOAD))) == 50


def test_containers_and_codecs_outside_the_allow_lists(tmp_path: Path) -> None:
    frames = numbered_frames(5)
    transport = encode(frames, tmp_path / "clip.ts", FPS, container="mpegts")
    with pytest.raises(
        VideoError, match=r"not a video in an accepted format \(accepted: MP4/MOV, Matroska/WebM, AVI\)"
    ):
        list(VideoSource(transport.read_bytes(), limits=UPLOAD))
    assert len(list(VideoSource(transport))) == 5  # fine without the upload limits
    lossless = encode(frames, tmp_path / "clip.mkv", FPS, codec="ffv1")
    with pytest.raises(VideoError, match="ffv1 video is not accepted"):
        list(VideoSource(lossless.read_bytes(), limits=UPLOAD))


def test_a_playlist_upload_cannot_reach_other_files(tmp_path: Path, clip: Path) -> None:
    """An HLS playlist (the classic FFmpeg file-disclosure upload) is not among the accepted demuxers, and an
    upload may open nothing beside itself."""
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nfile://{clip}\n#EXT-X-ENDLIST\n".encode()
    with pytest.raises(VideoError, match="not a video in an accepted format"):
        list(VideoSource(playlist, limits=UPLOAD))
    free = VideoLimits(max_seconds=10)  # the allow-list off: the upload still opens nothing else
    with pytest.raises(VideoError):
        list(VideoSource(playlist, limits=free))


def test_pixels_duration_frames_and_deadline(clip: Path, tmp_path: Path) -> None:
    data = clip.read_bytes()
    with pytest.raises(VideoLimitError, match="64x48 frames are more than the limit of 3,000 pixels") as caught:
        list(VideoSource(data, limits=VideoLimits(max_pixels=3000)))
    assert caught.value.limit == "pixels"
    with pytest.raises(VideoLimitError, match="2.0 s is longer than the limit of 1.5 s") as caught:
        list(VideoSource(data, limits=VideoLimits(max_seconds=1.5)))
    assert caught.value.limit == "duration"
    with pytest.raises(VideoLimitError, match="more than 20 frames") as caught:
        list(VideoSource(data, limits=VideoLimits(max_frames=20)))
    assert caught.value.limit == "frames"
    with pytest.raises(VideoLimitError, match="not done within the limit of 0 s") as caught:
        list(VideoSource(data, limits=VideoLimits(deadline_s=0.0)))
    assert caught.value.limit == "deadline"


def test_a_stream_that_grows_mid_way_is_refused_by_the_decoder(tmp_path: Path) -> None:
    """Frame sizes are bounded for every frame, not only in the header: in an MPEG-TS stream whose second half is
    larger (transport streams joined), FFmpeg's own pixel limit refuses the large frames before they are made."""
    small = encode(numbered_frames(10), tmp_path / "small.ts", FPS, container="mpegts")
    large = encode(numbered_frames(10, 640, 480), tmp_path / "large.ts", FPS, container="mpegts")
    joined = tmp_path / "joined.ts"
    joined.write_bytes(small.read_bytes() + large.read_bytes())
    unbounded = list(VideoSource(joined))
    assert {f.pixels.shape for f in unbounded} == {(48, 64, 3), (480, 640, 3)}
    source = VideoSource(joined, limits=VideoLimits(max_pixels=64 * 48))
    assert {f.pixels.shape for f in source} == {(48, 64, 3)}
    assert source.stats.errors >= 1


# ---------------------------------------------------------------------------------------------------- live
class _Stream(http.server.BaseHTTPRequestHandler):
    """Serves a transport stream without a length (as a live camera does): the first connection is cut after
    ``cut`` bytes, the next one gets everything, later ones 503."""

    data = b""
    cut = 0
    connections = 0

    def do_GET(self) -> None:
        type(self).connections += 1
        if self.connections > 2:
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(self.data[: self.cut] if self.connections == 1 else self.data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stream_server(tmp_path: Path) -> Iterator[tuple[str, type[_Stream]]]:
    transport = encode(numbered_frames(50), tmp_path / "live.ts", FPS, container="mpegts")
    handler = type("Stream", (_Stream,), {"data": transport.read_bytes(), "cut": transport.stat().st_size * 2 // 5})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/live.ts", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_live_stream_that_drops_is_reconnected(stream_server: tuple[str, type[_Stream]]) -> None:
    url, handler = stream_server
    source = VideoSource(url, reconnect=1, timeout=5, queue_frames=1000)
    frames = []
    with pytest.raises(VideoError, match="did not come back"):
        for frame in source:
            frames.append(frame)
    assert source.info is not None and source.info.live  # HTTP without a duration
    assert handler.connections >= 3 and source.stats.reconnects >= 2
    times = [f.time for f in frames]
    assert np.all(np.diff(times) > 0)  # the timeline goes on over the reconnection
    first_pass = [f for f in frames if f.time < times[0] + 1.0]
    assert len(first_pass) >= 10 and len(frames) >= 50 + 10  # the cut connection's frames, then all 50 again
    assert [number(f) for f in frames[-50:]] == list(range(50))
    assert all(f.wall_time is not None for f in frames)


def test_a_live_source_that_falls_behind_drops_frames_instead_of_queueing(
    stream_server: tuple[str, type[_Stream]],
) -> None:
    url, _ = stream_server
    source = VideoSource(url, reconnect=0, timeout=5, queue_frames=2)
    frames = source.frames()
    first = next(frames)
    threading.Event().wait(1.0)  # analysis is slow: the reader keeps going and drops what waits
    rest = []
    with pytest.raises(VideoError, match="did not come back"):  # the cut connection, not reconnected
        rest.extend(frames)
    assert first.index == 0
    assert len(rest) <= 2 + 1 and source.stats.dropped >= 10
    assert source.stats.decoded > len(rest) + 10


def test_a_url_nobody_serves(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(VideoError, match=f"http://127.0.0.1:{port}/x.ts: cannot open"):
        list(VideoSource(f"http://127.0.0.1:{port}/x.ts", timeout=2, reconnect=0))
