"""Faces in video files, streams and cameras: sampled frames (PyAV), faces tracked across frames, one identity
decision per track from its best sightings, and events (appeared, identified, left) as JSON or to a webhook."""

from .events import TrackEvent, WebhookSender
from .identity import Identity
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
    "VideoInfo",
    "VideoLimitError",
    "VideoLimits",
    "VideoSource",
    "VideoSupportMissing",
    "VideoWatcher",
    "WebhookSender",
]
