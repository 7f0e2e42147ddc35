"""Test videos made from the shared photos with a scripted timeline (who is where, from when to when), encoded with
PyAV as the package decodes them. The script is the ground truth the video tests check against."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from . import require_module
from .photos import photo


@dataclass(frozen=True)
class Appearance:
    """``person`` is visible from ``start`` to ``end`` (seconds, end excluded), the centre of their face moving in a
    straight line from ``begin_at`` to ``end_at`` (fractions of the frame's width and height); the face is
    ``size`` of the frame's height tall. Later appearances are drawn over earlier ones."""

    person: str
    start: float
    end: float
    begin_at: tuple[float, float]
    end_at: tuple[float, float]
    size: float = 0.3

    def centre(self, t: float, width: int, height: int) -> tuple[float, float]:
        a = (t - self.start) / max(self.end - self.start, 1e-9)
        x = self.begin_at[0] + a * (self.end_at[0] - self.begin_at[0])
        y = self.begin_at[1] + a * (self.end_at[1] - self.begin_at[1])
        return x * width, y * height


@dataclass(frozen=True)
class Script:
    """A timeline of appearances in a ``width`` x ``height`` video of ``duration`` seconds at ``fps``."""

    appearances: tuple[Appearance, ...]
    duration: float
    fps: int = 25
    width: int = 640
    height: int = 480

    @property
    def frames(self) -> int:
        return round(self.duration * self.fps)

    def visible(self, appearance: Appearance) -> tuple[float, float]:
        """The times of the first and the last frame that show ``appearance``."""
        times = [i / self.fps for i in range(self.frames) if appearance.start <= i / self.fps < appearance.end]
        return times[0], times[-1]


# Photos of different people (identity groups of deepface_testpairs), one face each.
PEOPLE = {"angelina": "img1.jpg", "jennifer": "img3.jpg", "mark": "img13.jpg", "jack": "img16.jpg"}

# Appearing and leaving, two at once, two crossing (jennifer passes in front of angelina, hiding her for about half a
# second), a second pair side by side. Nobody appears where someone left less than 2 s before: with the tests'
# random-weight model, embeddings cannot tell such a newcomer from the one who left (a trained model's threshold
# does; tests/video/test_tracking.py checks that rule on embeddings written out).
DOOR_SCRIPT = Script(
    (
        Appearance("angelina", 0.6, 4.6, (0.2, 0.52), (0.78, 0.52)),
        Appearance("jennifer", 1.4, 5.4, (0.82, 0.46), (0.22, 0.46)),
        Appearance("mark", 7.0, 9.8, (0.72, 0.5), (0.68, 0.46)),
        Appearance("jack", 7.6, 10.2, (0.28, 0.48), (0.32, 0.52)),
    ),
    duration=10.6,
)


@functools.cache
def _head(name: str) -> np.ndarray:
    """A square crop of photo ``name`` around its largest face, the face about 60% of its side."""
    from ghostfacenets.data.images import load_image
    from ghostfacenets.pipeline.detect import RetinaFaceDetector

    image = load_image(photo(name))
    face = max(RetinaFaceDetector().detect(image), key=lambda f: f.area)
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    side = round(1.7 * max(face.width, face.height))
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    h, w = image.shape[:2]
    crop = image[max(y0, 0) : y0 + side, max(x0, 0) : x0 + side]
    return cv2.copyMakeBorder(
        crop, max(-y0, 0), max(y0 + side - h, 0), max(-x0, 0), max(x0 + side - w, 0), cv2.BORDER_REPLICATE
    )


def face_sprite(name: str, height: int) -> np.ndarray:
    """The head of photo ``name`` as an RGBA sprite, the face about ``height`` pixels tall, with a feathered oval
    edge."""
    crop = _head(name)
    size = round(height / 0.6)
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, (size // 2, size // 2), (int(size * 0.4), int(size * 0.48)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), size * 0.03)
    return np.dstack([crop, (mask * 255).astype(np.uint8)])


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A still, smoothly textured background (no faces)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 200, (6, 8, 3)).astype(np.float32)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def paste(frame: np.ndarray, sprite: np.ndarray, centre: tuple[float, float]) -> None:
    """Alpha-blend an RGBA sprite onto ``frame`` centred at ``centre`` (clipped at the frame's edges)."""
    h, w = sprite.shape[:2]
    x0, y0 = round(centre[0] - w / 2), round(centre[1] - h / 2)
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + w, frame.shape[1]), min(y0 + h, frame.shape[0])
    if fx0 >= fx1 or fy0 >= fy1:
        return
    part = sprite[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0].astype(np.uint16)
    alpha = part[..., 3:]
    region = frame[fy0:fy1, fx0:fx1].astype(np.uint16)
    frame[fy0:fy1, fx0:fx1] = ((region * (255 - alpha) + part[..., :3] * alpha + 127) // 255).astype(np.uint8)


def render_frames(script: Script, people: dict[str, str] | None = None) -> list[np.ndarray]:
    """The script's frames (uint8 RGB)."""
    people = people or PEOPLE
    sprites = {a.person: face_sprite(people[a.person], round(a.size * script.height)) for a in script.appearances}
    still = background(script.width, script.height)
    frames = []
    for i in range(script.frames):
        t = i / script.fps
        frame = still.copy()
        for a in script.appearances:
            if a.start <= t < a.end:
                paste(frame, sprites[a.person], a.centre(t, script.width, script.height))
        frames.append(frame)
    return frames


def encode(
    frames: Sequence[np.ndarray],
    path: Path,
    fps: int = 25,
    codec: str = "libx264",
    container: str | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Frames into a video file with PyAV (H.264 in MP4 by default; the container follows the suffix)."""
    av = require_module("av", "video")
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.options = (
            options if options is not None else ({"preset": "ultrafast", "crf": "18"} if "264" in codec else {})
        )
        for pixels in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def render(script: Script, path: Path, people: dict[str, str] | None = None, **options: object) -> Path:
    """The script as a video file at ``path``."""
    return encode(render_frames(script, people), path, script.fps, **options)  # type: ignore[arg-type]
