"""Video commands: ``watch`` (faces in a video file, stream or camera, tracked and identified, as events) and
``index`` (a video file's tracks into a people library as unlabelled faces)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..errors import GhostFaceNetsError
from .common import Command, print_json
from .pipeline import _add_recognizer_options, _recognizer

WEBHOOK_SECRET_ENV = "GHOSTFACENETS_WEBHOOK_SECRET"


def _add_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="a video file, a stream URL (rtsp://, rtmp://, http(s)://, ...) or a camera index (0, 1, ...)",
    )
    sampling = p.add_mutually_exclusive_group()
    sampling.add_argument(
        "--fps", type=float, default=10.0, help="frames analysed per second of video (default 10; 0: every frame)"
    )
    sampling.add_argument("--keyframes", action="store_true", help="analyse key frames only (fastest, coarse)")
    p.add_argument(
        "--detect-every",
        type=int,
        default=2,
        metavar="N",
        help="detect faces in every N-th analysed frame and follow them by optical flow in between (default 2; "
        "1: detect in every analysed frame)",
    )
    p.add_argument("--start", type=float, default=0.0, metavar="S", help="begin at this second of the video")
    p.add_argument("--end", type=float, metavar="S", help="stop at this second (for a stream: of watching)")
    p.add_argument("--loop", action="store_true", help="play a file again from the start when it ends")
    p.add_argument(
        "--reconnect",
        type=int,
        metavar="N",
        help="failed reconnections in a row before giving up on a live source (default: never give up; "
        "files are not reconnected)",
    )
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="seconds to wait for a stream (default 10)")


def _add_tracking_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-lost",
        type=float,
        default=1.5,
        metavar="S",
        help="seconds a face may be unseen before its track has left (default 1.5)",
    )
    p.add_argument("--min-hits", type=int, default=2, metavar="N", help="detections before a track counts (default 2)")
    p.add_argument(
        "--low-threshold",
        type=float,
        default=0.6,
        metavar="P",
        help="detector score from which a weaker face may continue a track (default 0.6; --det-threshold starts one)",
    )


def _watcher(args: argparse.Namespace, store: Any, crops: bool = False) -> Any:
    from ..video import TrackerSettings, VideoWatcher

    settings = TrackerSettings(
        det_threshold=args.det_threshold,
        low_threshold=min(args.low_threshold, args.det_threshold),
        min_hits=args.min_hits,
        max_lost=args.max_lost,
    )
    # The detector reports faces down to the low threshold; the tracker decides what each score may do.
    recognizer = _recognizer(argparse.Namespace(**{**vars(args), "det_threshold": settings.low_threshold}))
    return VideoWatcher(
        recognizer,
        store,
        args.gallery,
        threshold=getattr(args, "threshold", None),
        far=getattr(args, "far", None),
        detect_every=args.detect_every,
        tracker=settings,
        crops=crops,
    )


def _source(args: argparse.Namespace) -> Any:
    from ..video import VideoSource

    if args.fps < 0:
        raise GhostFaceNetsError(f"--fps must be 0 (every frame) or more, got {args.fps}")
    return VideoSource(
        args.source,
        fps=None if args.keyframes or args.fps == 0 else args.fps,
        keyframes=args.keyframes,
        start=args.start,
        end=args.end,
        loop=args.loop,
        reconnect=args.reconnect,
        timeout=args.timeout,
    )


# ------------------------------------------------------------------------------------------------ watch
def _add_watch(p: argparse.ArgumentParser) -> None:
    _add_source_options(p)
    p.add_argument(
        "--db", metavar="DB", help="identify against this gallery database (SQLite file or postgresql:// URL)"
    )
    p.add_argument("--gallery", default="default", metavar="G", help="gallery in the database (default: default)")
    p.add_argument("--json", action="store_true", help="print one JSON object per event (JSON lines)")
    p.add_argument(
        "--webhook",
        metavar="URL",
        help=f"also POST each event as JSON to this http(s) URL (retried; signed with HMAC-SHA256 when "
        f"{WEBHOOK_SECRET_ENV} is set)",
    )
    p.add_argument(
        "--webhook-queue",
        type=int,
        default=1000,
        metavar="N",
        help="events waiting for the webhook at most; the oldest are dropped beyond (default 1000)",
    )
    p.add_argument("--webhook-retries", type=int, default=5, metavar="N", help="retries of a failed post (default 5)")
    _add_tracking_options(p)
    _add_recognizer_options(p)


def _describe(event: Any) -> str:
    record = event.to_dict()
    line = f"{record['time']:9.2f} s  {record['event']:<10}  track {record['track']}"
    if "identity" in record and event.event != "appeared":
        similarity = record["similarity"]
        closeness = f" (similarity {similarity:.4f})" if similarity is not None else ""
        who = record["identity"] if record["identity"] is not None else "unknown"
        line += f"  {who}{closeness}"
    if event.event == "left":
        line += f"  seen {record['start']:.2f}-{record['end']:.2f} s, {record['faces']} faces embedded"
    return line


def _run_watch(args: argparse.Namespace) -> int:
    from ..video import WebhookSender
    from ..video.events import check_webhook_url

    source = _source(args)
    if args.webhook:
        check_webhook_url(args.webhook)
    source.open()  # a bad source fails before the model loads
    webhook = None
    if args.webhook:
        webhook = WebhookSender(
            args.webhook,
            queue_size=args.webhook_queue,
            retries=args.webhook_retries,
            secret=os.environ.get(WEBHOOK_SECRET_ENV) or None,
        )
    watcher = _watcher(args, args.db)
    try:
        for event in watcher.watch(source, progress=not args.json):
            if webhook is not None:
                webhook.send(event)
            print(event.to_json() if args.json else _describe(event), flush=True)
    finally:
        if webhook is not None:
            stats = webhook.close()
            if stats.failed or stats.dropped:
                print(
                    f"webhook: {stats.sent} events sent, {stats.failed} failed, {stats.dropped} dropped",
                    file=sys.stderr,
                )
    times = watcher.times
    if times.total > 0:
        shares = times.to_dict()["share"]
        print(
            f"{times.video_seconds:.1f} s of video in {times.total:.1f} s "
            f"({times.video_seconds / times.total:.2f}x real time): "
            + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()),
            file=sys.stderr,
        )
    return 0


# ------------------------------------------------------------------------------------------------ index
def _add_index(p: argparse.ArgumentParser) -> None:
    from .gallery import _add_db, _add_gallery_name
    from .people import _add_settings

    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (each indexed whole)")
    _add_db(p, created=True)
    _add_gallery_name(p)
    p.add_argument(
        "--fps", type=float, default=10.0, help="frames analysed per second of video (default 10; 0: every frame)"
    )
    p.add_argument(
        "--detect-every",
        type=int,
        default=2,
        metavar="N",
        help="detect faces in every N-th analysed frame and follow them by optical flow in between (default 2)",
    )
    p.add_argument(
        "--store-crops", action="store_true", help="keep each track's best aligned face crop (shown by the page)"
    )
    p.add_argument("--no-cluster", action="store_true", help="only add the faces; `people cluster` groups them")
    p.add_argument("--batch", type=int, default=32, metavar="N", help="tracks per transaction (32)")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_settings(p)
    _add_tracking_options(p)
    _add_recognizer_options(p, thresholds=False)


def _run_index(args: argparse.Namespace) -> int:
    from ..gallery import open_store
    from ..people import PeopleLibrary
    from ..video import VideoSource
    from ..video.index import index_video
    from .gallery import _shown
    from .people import _changed_settings, _print_summary, _summary_json

    if args.fps < 0:
        raise GhostFaceNetsError(f"--fps must be 0 (every frame) or more, got {args.fps}")
    if args.batch < 1:
        raise GhostFaceNetsError("--batch must be at least 1")
    fps = args.fps or None
    for video in args.videos:  # every video opens before the model loads
        VideoSource(video, fps=fps).open()
    watcher = _watcher(args, None, crops=True)
    videos = []
    with open_store(args.db, create=True) as store:
        library = PeopleLibrary(store, args.gallery, watcher.recognizer)
        changed = _changed_settings(args, library.settings)
        if changed is not None:
            library.save_settings(changed)
        for video in args.videos:
            done = index_video(
                video, library, watcher, fps=fps, store_crops=args.store_crops, place=False, progress=not args.json,
                batch=args.batch,
            )  # fmt: skip
            videos.append(done.to_dict())
            if not args.json:
                print(f"{video}: " + ("indexed before, skipped" if done.already_indexed else
                      f"{done.tracks} track(s) in {done.seconds:.1f} s, {done.faces_added} face(s) added"
                      + (f", {done.tracks_skipped} held before" if done.tracks_skipped else "")))  # fmt: skip
        added = sum(v["faces_added"] for v in videos)
        grouping = None if args.no_cluster or not added else library.cluster().to_dict()
        summary = _summary_json(library.summary())
    record = {
        "gallery": args.gallery,
        "db": _shown(args.db),
        "videos": videos,
        "tracks": sum(v["tracks"] for v in videos),
        "faces_added": added,
        "already_indexed": sum(v["already_indexed"] for v in videos),
        "tracks_skipped": sum(v["tracks_skipped"] for v in videos),
        "grouping": grouping,
        "summary": summary,
    }
    if args.json:
        print_json(record)
    else:
        print(f"{record['tracks']} track(s) found, {added} face(s) added, {record['already_indexed']} video(s) "
              f"indexed before; {summary['people']} people now")  # fmt: skip
        _print_summary(summary)
    return 0


COMMANDS = [
    Command(
        "watch",
        "faces in a video file, stream or camera: tracked, identified once per track, events as they happen",
        _add_watch,
        _run_watch,
    ),
    Command(
        "index",
        "add the faces of video files to a people library: one unlabelled face per track, grouped into people",
        _add_index,
        _run_index,
    ),
]
