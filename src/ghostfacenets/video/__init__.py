"""Faces in video files, streams and cameras: sampled frames (PyAV), faces tracked across frames, one identity
decision per track from its best sightings, events (appeared, identified, left) as JSON or to a webhook, and a
video's tracks indexed into a people library (:func:`index_video`)."""

from .events import TrackEvent, WebhookSender
from .identity import Identity
from .index import VideoIndexSummary, index_video
from .source import (
    Frame,
    VideoError,
    VideoFormatError,
    VideoInfo,
    VideoLimitError,
    VideoLimits,
    VideoSource,
    VideoSupportMissing,
)
from .tracking import FaceTracker, Track, TrackerSettings
from .watcher import DEFAULT_DETECT_EVERY, DEFAULT_FPS, StageTimes, VideoAnalysis, VideoWatcher

__all__ = [
    "DEFAULT_DETECT_EVERY",
    "DEFAULT_FPS",
    "FaceTracker",
    "Frame",
    "Identity",
    "StageTimes",
    "Track",
    "TrackEvent",
    "TrackerSettings",
    "VideoAnalysis",
    "VideoError",
    "VideoFormatError",
    "VideoIndexSummary",
    "VideoInfo",
    "VideoLimitError",
    "VideoLimits",
    "VideoSource",
    "VideoSupportMissing",
    "VideoWatcher",
    "WebhookSender",
    "index_video",
]
