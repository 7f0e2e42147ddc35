"""What a service is started with: the model, the gallery database, the limits and the batching of embeddings.

``ghostfacenets serve`` hands the settings to each uvicorn worker process in the environment variable
:data:`SETTINGS_ENV` (JSON), so that every worker builds the same app with :func:`~ghostfacenets.serve.create_app`.
No secret goes there (:func:`worker_settings`): a database password reaches the workers in a file only they read.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import GhostFaceNetsError
from ..pipeline.recognizer import DEFAULT_MODEL

SETTINGS_ENV = "GHOSTFACENETS_SERVE_SETTINGS"
DEFAULT_DB = "ghostfacenets.sqlite"
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")  # Pillow's names of the formats accepted
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
WEB_WEIGHTS = ("int8", "float32")  # the browser module's embedder: weights in int8 (float32 compute), or as served


@dataclass(frozen=True)
class ServiceSettings:
    """Everything a worker needs to build the app. Sizes are in bytes, pixels, faces and requests.

    ``threads``: onnxruntime threads per detection or embedding batch; the service runs requests in parallel, so
    one thread per call keeps the cores busy without threads fighting over them. ``compute_threads``: detections
    and embedding batches running at once (default: the cores). ``batch_size`` / ``batch_wait_ms``: faces of
    concurrent requests are embedded together, up to this many, waiting at most this long for company.
    ``queue_faces``: faces waiting to be embedded, and ``max_inflight``: requests doing image work, beyond which the
    service answers 503 at once.

    Hardening (docs/service.md, "Threat model"): ``deadline_s``: the most seconds a request's image work may take
    (decoding runs in worker processes that are ended at the deadline). ``pixel_budget``: decoded pixels held at once
    by all requests together (a request waits for its share). ``max_jpeg_scans``: JPEGs with more scans are refused
    before decoding. ``max_json_bytes``: bodies of routes without images. ``allowed_hosts``: the names the ``Host``
    header may give (DNS rebinding). ``docs``: serve ``/docs`` and ``/openapi.json``. ``rate_limit`` /
    ``rate_burst``: requests a second per API key (0: no limit), ``auth_failures``: failed authentications a minute
    per client address (0: no limit).

    ``liveness``: every verify, enrol and identify request has its faces' liveness
    checked (else only requests that ask, ``liveness=true``), with ``liveness_threshold`` and ``liveness_model``
    (default: the shipped MiniFASNets and their threshold; docs/liveness.md).

    Uploaded videos (``/v1/video/tracks``): at most ``max_video_seconds`` long, frames of
    at most ``max_video_pixels``, done within ``video_deadline_s`` seconds, ``max_video_jobs`` at once per worker.

    ``det_size``: the detection size; ``det_fast_size``: requests that use one face per
    image (verify, enrol, identify) detect at this size first (0: always ``det_size``); ``det_backend``: the
    detector's runtime (:mod:`ghostfacenets.inference.detection`). ``web_weights``: the embedder the browser module
    downloads, "int8" (weights stored in int8, computed in float32: a third of the bytes) or "float32" (the service's
    model file as it is, or its float32 conversion; docs/browser.md).
    """

    model: str = DEFAULT_MODEL
    db: str = DEFAULT_DB
    db_file: str | None = None  # read the database from this file instead (gallery.stores.read_db_file)
    backend: str = "auto"
    device: str | None = None
    flip: bool = True
    threshold: float | None = None
    far: float | None = None
    det_threshold: float = 0.9
    det_size: int = 640
    det_fast_size: int = 0  # 0: every detection at det_size
    det_backend: str = "auto"
    store_crops: bool = False
    web_weights: str = "int8"
    threads: int | None = 1
    compute_threads: int | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_images: int = 10
    max_fields: int = 20
    max_faces: int = 20
    image_formats: tuple[str, ...] = IMAGE_FORMATS
    batch_size: int = 16
    batch_wait_ms: float = 2.0
    queue_faces: int = 256
    max_inflight: int = 64
    deadline_s: float = 10.0
    pixel_budget: int = 160_000_000
    max_jpeg_scans: int = 32
    max_json_bytes: int = 256 * 1024
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    docs: bool = True
    rate_limit: float = 50.0
    rate_burst: int = 100
    auth_failures: int = 10
    liveness: bool = False
    liveness_threshold: float | None = None
    liveness_model: str | None = None
    max_video_seconds: float = 300.0
    max_video_pixels: int = 1920 * 1080
    video_deadline_s: float = 120.0
    max_video_jobs: int = 1
    extra: dict[str, Any] = field(default_factory=dict)  # detector options beyond the two above

    def __post_init__(self) -> None:
        for name in (
            "det_size",
            "max_body_bytes",
            "max_pixels",
            "max_images",
            "max_fields",
            "max_faces",
            "batch_size",
            "queue_faces",
            "max_inflight",
            "max_jpeg_scans",
            "max_json_bytes",
            "rate_burst",
            "max_video_pixels",
            "max_video_jobs",
        ):
            if int(getattr(self, name)) < 1:
                raise GhostFaceNetsError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("threads", "compute_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise GhostFaceNetsError(f"{name} must be at least 1, got {value}")
        if self.deadline_s <= 0 or self.rate_limit < 0 or self.auth_failures < 0:
            raise GhostFaceNetsError("deadline_s must be positive; rate_limit and auth_failures not negative")
        if self.pixel_budget < self.max_pixels:
            raise GhostFaceNetsError("pixel_budget must hold one image of max_pixels")
        if not self.allowed_hosts:
            raise GhostFaceNetsError("allowed_hosts must name at least one host ('*' allows any)")
        if self.liveness_threshold is not None and not 0.0 <= self.liveness_threshold <= 1.0:
            raise GhostFaceNetsError(f"liveness_threshold lies in [0, 1], got {self.liveness_threshold}")
        if not self.max_video_seconds > 0 or not self.video_deadline_s > 0:
            raise GhostFaceNetsError("max_video_seconds and video_deadline_s must be positive")
        if self.web_weights not in WEB_WEIGHTS:
            raise GhostFaceNetsError(f"web_weights must be one of {', '.join(WEB_WEIGHTS)}, got {self.web_weights!r}")
        if self.det_fast_size < 0:
            raise GhostFaceNetsError(f"det_fast_size must not be negative, got {self.det_fast_size}")
        if self.batch_wait_ms < 0:
            raise GhostFaceNetsError(f"batch_wait_ms must not be negative, got {self.batch_wait_ms}")
        if self.queue_faces < max(self.batch_size, self.max_images, self.max_faces):
            raise GhostFaceNetsError(
                "queue_faces must hold a batch and the faces of one request (batch_size, max_images, max_faces)"
            )
        unknown = sorted(set(self.image_formats) - set(IMAGE_FORMATS))
        if unknown or not self.image_formats:
            raise GhostFaceNetsError(f"image formats must be some of {', '.join(IMAGE_FORMATS)}, got {unknown}")

    def database(self) -> str:
        """The gallery database: ``db``, or the content of ``db_file``."""
        from ..gallery.stores import read_db_file

        return read_db_file(self.db_file) if self.db_file else self.db

    def with_changes(self, **changes: Any) -> ServiceSettings:
        """A copy with some settings changed (unknown names are refused)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise GhostFaceNetsError(f"unknown service settings: {', '.join(unknown)}")
        return replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServiceSettings:
        values = json.loads(text)
        values["image_formats"] = tuple(values.get("image_formats", IMAGE_FORMATS))
        values["allowed_hosts"] = tuple(values.get("allowed_hosts", LOOPBACK_HOSTS))
        return cls().with_changes(**values)

    @classmethod
    def from_environment(cls) -> ServiceSettings:
        """The settings ``ghostfacenets serve`` put in :data:`SETTINGS_ENV`, else the defaults."""
        text = os.environ.get(SETTINGS_ENV)
        return cls.from_json(text) if text else cls()


@contextlib.contextmanager
def worker_settings(settings: ServiceSettings, db_file: str | None = None) -> Iterator[ServiceSettings]:
    """The settings to hand to worker processes, without any secret of the database: when its connection string
    holds one (or ``PGPASSWORD`` does), the workers read the database from ``db_file`` (the user's ``--db-file``)
    or from a file of this process's own, readable by its user only and removed when the block ends.
    ``PGPASSWORD`` and ``GHOSTFACENETS_DB`` leave the environment the workers inherit meanwhile."""
    from ..files import atomic_write
    from ..gallery.stores import DB_ENV, is_postgres_url, redact_url, secrets_in

    db = settings.database()
    removed = {name: os.environ.pop(name) for name in ("PGPASSWORD", DB_ENV) if name in os.environ}
    password = removed.get("PGPASSWORD") if is_postgres_url(db) else None
    if password:
        db = _with_password(db, password)
    folder = None
    try:
        if db_file is not None and not password:
            yield settings.with_changes(db=redact_url(db), db_file=db_file)
        elif secrets_in(db):
            folder = Path(tempfile.mkdtemp(prefix="ghostfacenets-serve-"))  # 0700
            with atomic_write(folder / "db", "w") as f:  # 0600
                f.write(db + "\n")
            yield settings.with_changes(db=redact_url(db), db_file=str(folder / "db"))
        else:
            yield settings.with_changes(db=db, db_file=None)
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        os.environ.update(removed)


def _with_password(db: str, password: str) -> str:
    """``db`` as a key=value string with ``password`` in it, unless it holds a password already (which libpq
    prefers to ``PGPASSWORD``)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from ..gallery.postgres import split_options

    conninfo, ours = split_options(db)
    if "password" not in conninfo_to_dict(conninfo):
        conninfo = make_conninfo(conninfo, password=password)
    return " ".join([make_conninfo(conninfo), *(f"{key}={value}" for key, value in ours.items())])
