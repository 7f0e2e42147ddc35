"""Frames from a video file, a stream URL, a camera or uploaded bytes, decoded with PyAV (FFmpeg in the wheel).

:class:`VideoSource` samples frames (``fps``, or key frames only), seeks to ``start``, stops at ``end``, loops a file,
and reconnects to a live source that drops. Every frame is uint8 RGB with its time in seconds on the video's timeline
(for a live source: seconds since watching began, continuing over reconnects). :class:`VideoLimits` bound what an
untrusted video may cost (demuxer and codec allow-lists, pixels per frame, duration, frames decoded, a deadline); the
service reads uploads with them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import queue
import sys
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GhostFaceNetsError

log = logging.getLogger("ghostfacenets.video")

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "rtp", "srt", "tcp")
# Demuxers (FFmpeg's names) and decoders an untrusted upload may use: the common camera and phone formats. Playlist
# and concatenation demuxers (hls, concat, ...), which open further files or URLs, are never among them.
UPLOAD_FORMATS = {"mov,mp4,m4a,3gp,3g2,mj2": "MP4/MOV", "matroska,webm": "Matroska/WebM", "avi": "AVI"}
UPLOAD_CODECS = {
    "h264": "H.264",
    "hevc": "H.265",
    "vp8": "VP8",
    "vp9": "VP9",
    "av1": "AV1",
    "libdav1d": "AV1",
    "mpeg4": "MPEG-4",
    "mjpeg": "Motion JPEG",
}


class VideoError(GhostFaceNetsError):
    """A video that cannot be opened or read, or one past its limits."""


class VideoFormatError(VideoError):
    """A container or codec outside the allow-lists of :class:`VideoLimits` (or not a video at all)."""


class VideoSupportMissing(VideoError):
    """PyAV or SciPy (the ``video`` extra) is not installed."""


def require(module: str) -> Any:
    """Import a module of the ``video`` extra, or fail with how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise VideoSupportMissing(f"video needs {module} ({exc}): pip install 'ghostfacenets[video]'") from None


class VideoLimitError(VideoError):
    """A video over one of its :class:`VideoLimits` (``limit`` names which)."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class VideoLimits:
    """What reading one video may cost; None leaves a bound off. ``formats`` and ``codecs``: FFmpeg demuxer and
    decoder names allowed (others are refused before a frame is decoded); ``max_pixels``: per frame, from the header
    and for every frame (FFmpeg's own ``max_pixels`` too, so a stream that grows mid-way is refused by the decoder);
    ``max_seconds``: of the video's timeline (the header's duration, then every frame's time); ``max_frames``: frames
    decoded (a bound that forged timestamps cannot lift); ``deadline_s``: wall-clock seconds from opening;
    ``decoder_threads``: 0 lets FFmpeg choose."""

    formats: tuple[str, ...] | None = None
    codecs: tuple[str, ...] | None = None
    max_pixels: int | None = None
    max_seconds: float | None = None
    max_frames: int | None = None
    deadline_s: float | None = None
    decoder_threads: int = 0

    @classmethod
    def upload(cls, max_pixels: int, max_seconds: float, deadline_s: float, max_fps: float = 120.0) -> VideoLimits:
        """The limits of an untrusted upload: the allow-lists, one decoder thread, and frames at most
        ``max_seconds * max_fps``."""
        return cls(
            formats=tuple(UPLOAD_FORMATS),
            codecs=tuple(UPLOAD_CODECS),
            max_pixels=max_pixels,
            max_seconds=max_seconds,
            max_frames=max(1, math.ceil(max_seconds * max_fps)),
            deadline_s=deadline_s,
            decoder_threads=1,
        )


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video (``duration`` and ``frames`` are None where it does not know)."""

    source: str
    live: bool
    width: int
    height: int
    fps: float | None
    duration: float | None
    frames: int | None
    codec: str
    format: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "live": self.live,
            "width": self.width,
            "height": self.height,
            "fps": None if self.fps is None else round(self.fps, 3),
            "duration": None if self.duration is None else round(self.duration, 3),
            "frames": self.frames,
            "codec": self.codec,
            "format": self.format,
        }


@dataclass(frozen=True)
class Frame:
    """A decoded frame: ``index`` is its number on the timeline (from its time and the frame rate in a file, so
    that sampling, key frames and seeking keep true numbers; counted for a live source), ``time`` in seconds on the
    timeline, ``wall_time`` (Unix seconds) when a live frame was decoded, ``pixels`` uint8 RGB."""

    index: int
    time: float
    pixels: np.ndarray
    keyframe: bool = False
    wall_time: float | None = None


@dataclass
class ReadStats:
    """Counters of one read: frames decoded and handed out, seconds spent decoding, reconnects, frames a live
    source dropped because analysis fell behind, packets the decoder refused."""

    decoded: int = 0
    sampled: int = 0
    decode_s: float = 0.0
    reconnects: int = 0
    dropped: int = 0
    errors: int = 0


def describe_source(source: Any) -> str:
    """A source's name for messages and events: a path or URL (without credentials), ``camera N``, ``upload``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "upload"
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return f"camera {int(source)}"
    text = str(source)
    scheme, sep, rest = text.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://{rest.split('@', 1)[1]}"  # user:password@ left out
    return text


def is_live(source: Any) -> bool | None:
    """True for cameras and streaming protocols, False for files and bytes, None for HTTP (decided by whether the
    container knows its duration)."""
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return True
    if isinstance(source, str) and "://" in source:
        scheme = source.split("://", 1)[0].lower()
        return True if scheme in LIVE_SCHEMES else None
    return False


def _camera_target(index: int) -> tuple[str, str]:
    """(device, FFmpeg input format) of camera ``index`` on this platform."""
    if sys.platform.startswith("linux"):
        return f"/dev/video{index}", "v4l2"
    if sys.platform == "darwin":
        return str(index), "avfoundation"
    raise VideoError(f"camera {index}: give the camera's device name as a URL or path on this platform")


class VideoSource:
    """Frames of a video, sampled. Iterate it (or call :meth:`frames`) for :class:`Frame` objects; ``info`` is set
    once the video is open.

    ``source``: a file path, a URL (``rtsp://``, ``http://``, ...), a camera index (``0`` or ``"0"``), or encoded
    bytes. ``fps``: analyse at most this many frames per second of video (None: every frame); ``keyframes``: decode
    key frames only (fast; as many as the encoder made). ``start``/``end``: seconds of the timeline (``start`` seeks).
    ``loop``: replay a file from the start when it ends (times keep growing). ``live``: a live source reconnects when
    it drops, and when analysis falls behind it skips frames rather than queueing them (default: cameras and
    streaming URLs, and HTTP sources without a duration). ``reconnect``: attempts in a row before giving up (default:
    without end for a live source, 0 otherwise), waiting 0.5 s, doubling to 30 s between them. ``timeout``: seconds
    to wait for a connection or data. ``limits``: :class:`VideoLimits` of an untrusted video.
    """

    def __init__(
        self,
        source: str | Path | int | bytes,
        *,
        fps: float | None = None,
        keyframes: bool = False,
        start: float = 0.0,
        end: float | None = None,
        loop: bool = False,
        live: bool | None = None,
        reconnect: int | None = None,
        timeout: float = 10.0,
        limits: VideoLimits | None = None,
        queue_frames: int = 2,
    ) -> None:
        if fps is not None and not fps > 0:
            raise VideoError(f"fps must be positive, got {fps}")
        if start < 0 or (end is not None and end <= start):
            raise VideoError(f"the time range must have 0 <= start < end, got start {start} and end {end}")
        if reconnect is not None and reconnect < 0:
            raise VideoError(f"reconnect must be 0 or more, got {reconnect}")
        if isinstance(source, Path):
            source = str(source)
        if isinstance(source, str) and "://" not in source and not source.isdigit():
            path = Path(source)
            if not path.is_file():
                raise VideoError(f"{source}: {'not a file' if path.exists() else 'no such file'}")
        if isinstance(source, (bytes, bytearray, memoryview)) and not source:
            raise VideoError("upload: empty file")
        self.source = source
        self.name = describe_source(source)
        self.fps = fps
        self.keyframes = keyframes
        self.start = start
        self.end = end
        self.loop = loop
        self._live = live
        self.reconnect = reconnect
        self.timeout = timeout
        self.limits = limits or VideoLimits()
        self.queue_frames = max(1, queue_frames)
        self.info: VideoInfo | None = None
        self.stats = ReadStats()
        self._opened_at = 0.0
        self._container: Any = None

    def open(self) -> VideoInfo:
        """Open the video now (reading starts from here), so that a bad source fails before anything else is
        loaded; returns what the container says."""
        if self._container is None:
            self._opened_at = time.monotonic()
            self._container = self._open()
        assert self.info is not None
        return self.info

    # ------------------------------------------------------------------------------------------------ opening
    def _open(self) -> Any:
        """The opened container (and sets ``info``)."""
        av = require("av")

        limits = self.limits
        options: dict[str, str] = {}
        if limits.formats is not None:
            options["format_whitelist"] = ",".join(limits.formats)
        target: Any = self.source
        input_format = None
        if isinstance(self.source, (bytes, bytearray, memoryview)):
            target = io.BytesIO(bytes(self.source))
            options["protocol_whitelist"] = "none"  # a demuxer may not open anything beside the upload
        elif isinstance(self.source, int) or (isinstance(self.source, str) and self.source.isdigit()):
            target, input_format = _camera_target(int(self.source))
        elif isinstance(self.source, str) and self.source.lower().startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = "tcp"
        try:
            container = av.open(target, format=input_format, options=options, timeout=self.timeout)
        except (av.FFmpegError, OSError) as exc:
            if self.limits.formats is not None:
                raise VideoFormatError(
                    f"{self.name}: not a video in an accepted format ({_accepted_formats()})"
                ) from None
            raise VideoError(f"{self.name}: cannot open ({_reason(exc)})") from None
        try:
            self.info = self._check(container)
        except BaseException:
            container.close()
            raise
        return container

    def _check(self, container: Any) -> VideoInfo:
        limits = self.limits
        if limits.formats is not None and container.format.name not in limits.formats:
            raise VideoFormatError(
                f"{self.name}: {container.format.name} files are not accepted ({_accepted_formats()})"
            )
        if not container.streams.video:
            raise VideoError(f"{self.name}: no video stream")
        stream = container.streams.video[0]
        context = stream.codec_context
        codec = context.name
        if limits.codecs is not None and codec not in limits.codecs:
            raise VideoFormatError(f"{self.name}: {codec} video is not accepted ({_accepted_codecs()})")
        width, height = int(context.width or 0), int(context.height or 0)
        if limits.max_pixels is not None and width * height > limits.max_pixels:
            raise VideoLimitError(
                f"{self.name}: {width}x{height} frames are more than the limit of {limits.max_pixels:,} pixels",
                "pixels",
            )
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        if limits.max_seconds is not None and duration is not None and duration > limits.max_seconds + 1e-6:
            raise VideoLimitError(
                f"{self.name}: {duration:.1f} s is longer than the limit of {limits.max_seconds:g} s", "duration"
            )
        options = {}
        if limits.max_pixels is not None:
            options["max_pixels"] = str(limits.max_pixels)
        if limits.codecs is not None:
            options["codec_whitelist"] = ",".join(limits.codecs)
        context.options = options
        context.thread_count = limits.decoder_threads
        context.thread_type = "AUTO" if limits.decoder_threads != 1 else "SLICE"
        if self.keyframes:
            context.skip_frame = "NONKEY"
        rate = stream.average_rate or stream.guessed_rate
        live = self._live
        if live is None:
            live = is_live(self.source)
            if live is None:
                live = duration is None
        return VideoInfo(
            self.name,
            bool(live),
            width,
            height,
            float(rate) if rate else None,
            duration,
            int(stream.frames) if stream.frames else None,
            "AV1" if codec == "libdav1d" else codec,
            container.format.name,
        )

    # ------------------------------------------------------------------------------------------------ reading
    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def frames(self) -> Generator[Frame, None, None]:
        """The sampled frames, in order. A live source is read in a thread that keeps at most ``queue_frames``
        frames waiting (older ones are dropped and counted), so memory stays flat however long it runs."""
        self.stats = ReadStats()
        self.open()  # open errors surface here, in the caller's thread
        container, self._container = self._container, None
        assert self.info is not None
        if self.info.live:
            yield from self._threaded(container)
        else:
            yield from self._read(container)

    def _threaded(self, container: Any) -> Iterator[Frame]:
        frames: queue.Queue[Frame | BaseException | None] = queue.Queue()
        lock = threading.Lock()
        stop = threading.Event()

        def produce() -> None:
            try:
                for frame in self._read(container, stop):
                    with lock:
                        if frames.qsize() >= self.queue_frames:  # analysis is behind: drop the oldest
                            with contextlib.suppress(queue.Empty):
                                frames.get_nowait()
                                self.stats.dropped += 1
                        frames.put(frame)
                frames.put(None)
            except BaseException as exc:  # handed to the consumer
                frames.put(exc)

        reader = threading.Thread(target=produce, name="ghostfacenets-video-reader", daemon=True)
        reader.start()
        try:
            while True:
                item = frames.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            reader.join(timeout=self.timeout + 5)

    def _read(self, container: Any, stop: threading.Event | None = None) -> Iterator[Frame]:
        """Decode, sample and check frames; reconnect a live source and loop a file as asked. Closes the
        container."""
        assert self.info is not None
        live = self.info.live
        attempts = self.reconnect if self.reconnect is not None else (-1 if live else 0)  # -1: without end
        step = 1.0 / self.fps if self.fps else None
        failures = 0
        offset = 0.0  # this connection's (or pass's) place on the timeline
        last = -math.inf  # the latest frame time handed out or skipped
        next_sample = -math.inf
        rate = None if live else self.info.fps
        number = -1  # of the latest frame
        try:
            while True:
                first: float | None = None
                error: str | None = None
                ended = False  # the range's end was reached
                try:
                    for position, keyframe, decoded in self._decode(container):
                        self.stats.decoded += 1
                        if live:
                            if first is None:
                                first = position
                                if last > -math.inf:  # after a reconnect: go on from now, never back
                                    offset = max(time.monotonic() - self._opened_at, last + 1e-3)
                            position = when = offset + position - first
                        else:
                            when = offset + position
                        self._check_frame(decoded, when)
                        if position < self.start:
                            continue
                        if self.end is not None and position >= self.end:
                            ended = True
                            break
                        when = max(when, last + 1e-6)  # timestamps that do not grow
                        last = when
                        number = max(number + 1, round(when * rate) if rate else 0)
                        if when < next_sample - 1e-4:
                            continue
                        if step is not None:
                            next_sample = (
                                max(next_sample + step, when + step / 2) if next_sample > -math.inf else when + step
                            )
                        started = time.perf_counter()
                        pixels = decoded.to_ndarray(format="rgb24")
                        self.stats.decode_s += time.perf_counter() - started
                        self.stats.sampled += 1
                        failures = 0
                        yield Frame(number, when, pixels, keyframe, time.time() if live else None)
                        if stop is not None and stop.is_set():
                            return
                except VideoError:
                    raise
                except Exception as exc:  # FFmpeg errors, a dropped connection
                    error = _reason(exc)
                container.close()
                if live and ended:
                    return
                if live:
                    if attempts >= 0 and failures >= attempts:
                        if error is not None:
                            raise VideoError(f"{self.name}: the stream failed ({error}) and did not come back")
                        return
                    failures += 1
                    container = self._reconnect(error or "the stream ended", stop, attempts, failures)
                    if container is None:
                        return
                    continue
                if error is not None:
                    where = f"after {last:.2f} s" if last > -math.inf else "at its start"
                    raise VideoError(f"{self.name}: cannot decode the video {where} ({error})")
                if not self.loop:
                    return
                if last == -math.inf:
                    raise VideoError(f"{self.name}: no frames in the range to loop over")
                interval = 1.0 / self.info.fps if self.info.fps else 1e-3
                offset = last + interval - self.start
                container = self._open()
        finally:
            container.close()

    def _reconnect(self, reason: str, stop: threading.Event | None, attempts: int, failures: int) -> Any:
        """The reopened container, waiting 0.5 s doubling to 30 s between tries; None once stopped."""
        while True:
            self.stats.reconnects += 1
            wait = min(30.0, 0.5 * 2 ** min(failures - 1, 6))
            log.warning("%s: %s; reconnecting in %.1f s", self.name, reason, wait)
            if stop is not None and stop.wait(wait):
                return None
            if stop is None:
                time.sleep(wait)
            try:
                return self._open()
            except VideoError as exc:
                if attempts >= 0 and failures >= attempts:
                    raise VideoError(f"{self.name}: the stream did not come back ({exc})") from None
                failures += 1
                reason = str(exc)

    def _decode(self, container: Any) -> Iterator[tuple[float, bool, Any]]:
        """(seconds since the stream's start, key frame, PyAV frame) of every decoded frame, after seeking to
        ``start`` (in a file)."""
        av = require("av")

        stream = container.streams.video[0]
        base = stream.time_base
        origin = float(stream.start_time * base) if stream.start_time is not None and base is not None else 0.0
        if self.start > 0 and not (self.info and self.info.live):
            try:
                container.seek(int((self.start + origin) / base), stream=stream, backward=True)
            except av.FFmpegError as exc:
                raise VideoError(f"{self.name}: cannot seek to {self.start:g} s ({_reason(exc)})") from None
        rate = float(stream.average_rate or stream.guessed_rate or 0) or None
        started = time.perf_counter()
        for count, frame in enumerate(self._decoded(container, stream)):
            self.stats.decode_s += time.perf_counter() - started
            if frame.pts is not None and base is not None:
                seconds = float(frame.pts * base) - origin
            else:
                seconds = count / rate if rate else float(count)
            yield seconds, bool(frame.key_frame), frame
            started = time.perf_counter()

    def _decoded(self, container: Any, stream: Any) -> Iterator[Any]:
        """The stream's frames. A packet the decoder refuses is skipped (and counted); when reading fails, the
        frames the decoder still holds come out before the error."""
        av = require("av")
        try:
            for packet in container.demux(stream):
                try:
                    yield from stream.decode(packet)
                except av.InvalidDataError:
                    self.stats.errors += 1
        except (av.FFmpegError, OSError):
            with contextlib.suppress(av.FFmpegError, OSError):
                yield from stream.codec_context.decode(None)
            raise

    def _check_frame(self, frame: Any, when: float) -> None:
        limits = self.limits
        if limits.max_pixels is not None and frame.width * frame.height > limits.max_pixels:
            raise VideoLimitError(
                f"{self.name}: a {frame.width}x{frame.height} frame is more than the limit of "
                f"{limits.max_pixels:,} pixels",
                "pixels",
            )
        if limits.max_frames is not None and self.stats.decoded > limits.max_frames:
            raise VideoLimitError(f"{self.name}: more than {limits.max_frames:,} frames", "frames")
        if limits.max_seconds is not None and when > limits.max_seconds + 1e-6:
            raise VideoLimitError(f"{self.name}: longer than the limit of {limits.max_seconds:g} s", "duration")
        self.check_deadline()

    def check_deadline(self) -> None:
        """Raise :class:`VideoLimitError` once ``limits.deadline_s`` has passed since the video was opened."""
        deadline = self.limits.deadline_s
        if deadline is not None and time.monotonic() - self._opened_at > deadline:
            raise VideoLimitError(
                f"{self.name}: not done within the limit of {deadline:g} s (a shorter or smaller video, or a lower "
                "fps, would be)",
                "deadline",
            )


def _reason(exc: BaseException) -> str:
    """FFmpeg's one-line reason, without the file name PyAV appends."""
    strerror = getattr(exc, "strerror", None)
    if strerror and type(exc).__module__.startswith("av"):
        return str(strerror)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _accepted_formats() -> str:
    return "accepted: " + ", ".join(dict.fromkeys(UPLOAD_FORMATS.values()))


def _accepted_codecs() -> str:
    return "accepted: " + ", ".join(dict.fromkeys(UPLOAD_CODECS.values()))


__all__ = [
    "Frame",
    "ReadStats",
    "VideoError",
    "VideoInfo",
    "VideoLimitError",
    "VideoLimits",
    "VideoSource",
    "describe_source",
]
