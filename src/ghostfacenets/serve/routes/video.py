"""Faces tracked through an uploaded video (nothing is stored: the upload stays in memory and is dropped with the
answer).

An upload is checked like a photo and more: its size by the body limit, its container (MP4/MOV, Matroska/WebM, AVI)
and codec (H.264, H.265, VP8, VP9, AV1, MPEG-4, Motion JPEG) against allow-lists before any frame is decoded, its
frame size and duration from the header and again for every frame (FFmpeg's own pixel limit too), the frames decoded
against what the duration allows, and the whole job against a deadline; at most ``max_video_jobs`` run at once per
worker, each in one compute slot. Live streams are not taken here: watching a camera has no end and belongs to a
worker process (``ghostfacenets watch``, docs/video.md).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from ...gallery.base import GALLERY_NAME
from ...video import (
    TrackerSettings,
    VideoError,
    VideoFormatError,
    VideoLimitError,
    VideoLimits,
    VideoSource,
    VideoSupportMissing,
    VideoWatcher,
)
from ..auth import Key, Service, check_gallery
from ..images import openapi_body, read_images
from ..problems import ApiError, Overloaded
from ..service import FaceService

router = APIRouter(prefix="/v1/video", tags=["video"])
_LIMIT_CODES = {"pixels": "TOO_MANY_PIXELS", "duration": "VIDEO_TOO_LONG", "frames": "VIDEO_TOO_LONG"}


def _analyze(
    svc: FaceService,
    data: bytes,
    gallery: str | None,
    fps: float,
    keyframes: bool,
    detect_every: int,
    threshold: float | None,
) -> dict[str, Any]:
    settings = svc.settings
    limits = VideoLimits.upload(settings.max_video_pixels, settings.max_video_seconds, settings.video_deadline_s)
    source = VideoSource(data, fps=None if keyframes else fps, keyframes=keyframes, live=False, limits=limits)
    watcher = VideoWatcher(
        svc.recognizer,
        svc.store if gallery else None,
        gallery or "default",
        threshold=threshold,
        detect_every=detect_every,
        tracker=TrackerSettings(det_threshold=settings.det_threshold, low_threshold=settings.det_threshold),
    )
    try:
        analysis = watcher.analyze(source)
    except VideoSupportMissing as exc:
        raise ApiError("UNAVAILABLE", str(exc)) from None
    except VideoLimitError as exc:
        if exc.limit == "deadline":
            raise ApiError("VIDEO_TOO_LONG", str(exc)) from None
        raise ApiError(_LIMIT_CODES[exc.limit], str(exc)) from None
    except VideoFormatError as exc:
        raise ApiError("INVALID_VIDEO", str(exc), 415) from None
    except VideoError as exc:
        raise ApiError("INVALID_VIDEO", str(exc)) from None
    result = analysis.to_dict()
    result["video"].pop("source", None)
    result["sampling"] = {"fps": None if keyframes else fps, "keyframes": keyframes, "detect_every": detect_every}
    if gallery:
        result["gallery"] = gallery
        result["threshold"] = {"value": watcher.threshold.value, "source": watcher.threshold.source}
    return result


@router.post(
    "/tracks",
    summary="Faces tracked through an uploaded video: one decision per person per track, and the events",
    openapi_extra=openapi_body("video"),
)
async def video_tracks(
    request: Request,
    svc: Service,
    key: Key,
    gallery: Annotated[
        str | None, Query(pattern=f"^{GALLERY_NAME.pattern}$", description="identify the tracks in this gallery")
    ] = None,
    fps: Annotated[float, Query(gt=0, le=30, description="frames analysed per second of video")] = 10.0,
    keyframes: Annotated[bool, Query(description="analyse key frames only (fps is then ignored)")] = False,
    detect_every: Annotated[
        int, Query(ge=1, le=10, description="detect in every n-th analysed frame, follow faces in between")
    ] = 2,
    threshold: Annotated[
        float | None, Query(ge=-1.0, le=1.0, description="cosine threshold of a match (default: the service's)")
    ] = None,
) -> dict[str, Any]:
    if gallery is not None:
        check_gallery(key, gallery)
        await svc.in_thread(svc.store.gallery, gallery)  # 404 before any work
    body = await read_images(request, ("video",), svc.settings)
    data = body.one("video")
    if not data:
        raise ApiError("INVALID_VIDEO", "video: empty file")
    state = request.app.state
    running = getattr(state, "video_jobs", 0)
    if running >= svc.settings.max_video_jobs:
        raise Overloaded(f"{running} videos are being processed (the limit is {svc.settings.max_video_jobs})")
    state.video_jobs = running + 1
    try:
        # the video's own deadline (video_deadline_s, checked frame by frame) answers first, with its own code
        async with svc.admitted(svc.settings.video_deadline_s + svc.settings.deadline_s):
            return await svc.computing(_analyze, svc, data, gallery, fps, keyframes, detect_every, threshold)
    finally:
        state.video_jobs -= 1
