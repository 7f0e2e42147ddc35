"""Service commands: ``serve`` (the HTTP API and web page) and ``keys`` (its API keys)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .common import Command, Parser, add_db_options, add_runtime_options, print_json, print_table
from .liveness import add_liveness_options
from .pipeline import _DEFAULT_MODEL

_DEFAULT_DB = "ghostfacenets.sqlite"  # = serve.settings.DEFAULT_DB


def _add_db(p: argparse.ArgumentParser) -> None:
    add_db_options(p, "gallery database: an SQLite file or a postgresql:// URL", _DEFAULT_DB)


def _add_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=_DEFAULT_MODEL,
        metavar="NAME_OR_PATH",
        help=f"pretrained name, .h5, .safetensors, .onnx, .pte or .tflite file (default {_DEFAULT_MODEL})",
    )
    _add_db(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes, each loading the model")
    add_runtime_options(p)
    p.add_argument("--no-flip", action="store_true", help="embed without flip test-time augmentation")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=float, metavar="COS", help="decision threshold on cosine similarity")
    group.add_argument("--far", type=float, help="use the model's threshold calibrated at this false-accept rate")
    p.add_argument("--det-threshold", type=float, default=0.9, metavar="P", help="minimum face score (default 0.9)")
    p.add_argument("--det-size", type=int, default=640, metavar="PIXELS", help="detection size (default 640)")
    p.add_argument(
        "--det-fast-size",
        type=int,
        default=0,
        metavar="PIXELS",
        help="verify, enrol and identify detect at this size first, e.g. 320 (default 0: always --det-size)",
    )
    p.add_argument(
        "--det-backend",
        choices=("auto", "executorch", "onnxruntime"),
        default="auto",
        help="detector runtime (default auto: onnxruntime, measured the faster on CPUs)",
    )
    p.add_argument(
        "--store-crops",
        action="store_true",
        help="keep each enrolled face's aligned 112x112 crop (lets `gallery reembed` move to another model); "
        "off by default: only embeddings, boxes and image hashes are stored",
    )
    p.add_argument(
        "--web-weights",
        choices=("int8", "float32"),
        default="int8",
        help="the embedder the page's on-device mode downloads: int8 weights computed in float32, a third of the "
        "bytes (default), or float32, the service's model as it is or converted (docs/browser.md)",
    )
    add_liveness_options(p, service=True)
    limits = p.add_argument_group("limits")
    limits.add_argument("--max-body-mb", type=float, default=32.0, metavar="MB", help="request body (default 32)")
    limits.add_argument(
        "--max-megapixels", type=float, default=40.0, metavar="MP", help="pixels of one image (default 40)"
    )
    limits.add_argument("--max-images", type=int, default=10, metavar="N", help="images in one request (default 10)")
    limits.add_argument("--max-faces", type=int, default=20, metavar="N", help="faces used per image (default 20)")
    limits.add_argument(
        "--threads", type=int, default=1, metavar="N", help="onnxruntime threads per detection or batch (default 1)"
    )
    limits.add_argument("--batch-size", type=int, default=16, metavar="N", help="faces embedded together (default 16)")
    limits.add_argument(
        "--batch-wait-ms", type=float, default=2.0, metavar="MS", help="wait for a batch to fill (default 2)"
    )
    limits.add_argument(
        "--queue-faces", type=int, default=256, metavar="N", help="faces waiting to be embedded before 503 (256)"
    )
    limits.add_argument(
        "--max-inflight", type=int, default=64, metavar="N", help="requests processing images before 503 (64)"
    )
    _add_hardening(p)
    limits.add_argument(
        "--max-video-seconds", type=float, default=300.0, metavar="S", help="length of an uploaded video (default 300)"
    )
    limits.add_argument(
        "--video-deadline", type=float, default=120.0, metavar="S", help="seconds to process one video (default 120)"
    )
    tls = p.add_argument_group("TLS (better done by a reverse proxy, see docs/service.md)")
    tls.add_argument("--ssl-certfile", metavar="PEM", help="serve HTTPS with this certificate")
    tls.add_argument("--ssl-keyfile", metavar="PEM", help="and this private key")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def _add_hardening(p: argparse.ArgumentParser) -> None:
    guard = p.add_argument_group("hostile callers (docs/service.md, Threat model)")
    guard.add_argument(
        "--deadline", type=float, default=10.0, metavar="S", help="seconds a request's image work may take (10)"
    )
    guard.add_argument(
        "--pixel-budget-mp", type=float, default=160.0, metavar="MP", help="decoded megapixels held at once (160)"
    )
    guard.add_argument(
        "--max-json-kb", type=float, default=256.0, metavar="KB", help="body of a route without images (256)"
    )
    guard.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="a name clients reach the service by (the Host header); repeat for several; *.example.org for "
        "subdomains, * for any (default: localhost, 127.0.0.1, ::1 and --host)",
    )
    guard.add_argument("--no-docs", action="store_true", help="serve no API docs (/docs, /openapi.json)")
    guard.add_argument(
        "--rate-limit", type=float, default=50.0, metavar="N", help="requests a second per API key (50; 0: none)"
    )
    guard.add_argument("--rate-burst", type=int, default=100, metavar="N", help="burst per API key (100)")
    guard.add_argument(
        "--auth-failures",
        type=int,
        default=10,
        metavar="N",
        help="failed authentications a minute per client address before 429 (10; 0: none)",
    )


def _allowed_hosts(args: argparse.Namespace) -> tuple[str, ...]:
    if args.allowed_host:
        return tuple(args.allowed_host)
    from ..serve.settings import LOOPBACK_HOSTS

    wildcard = args.host in ("0.0.0.0", "::", "")
    if wildcard:
        print(
            f"ghostfacenets serve: listening on {args.host or 'every address'}, but only requests naming "
            f"{', '.join(LOOPBACK_HOSTS)} are answered; add --allowed-host NAME for each name clients use",
            file=sys.stderr,
        )
    return LOOPBACK_HOSTS if wildcard or args.host in LOOPBACK_HOSTS else (*LOOPBACK_HOSTS, args.host)


def _settings(args: argparse.Namespace) -> Any:
    from ..serve.settings import ServiceSettings

    return ServiceSettings(
        model=args.model,
        db=args.db,
        backend=args.backend,
        device=args.device,
        flip=not args.no_flip,
        threshold=args.threshold,
        far=args.far,
        det_threshold=args.det_threshold,
        det_size=args.det_size,
        det_fast_size=args.det_fast_size,
        det_backend=args.det_backend,
        store_crops=args.store_crops,
        web_weights=args.web_weights,
        threads=args.threads,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_pixels=int(args.max_megapixels * 1_000_000),
        max_images=args.max_images,
        max_faces=args.max_faces,
        batch_size=args.batch_size,
        batch_wait_ms=args.batch_wait_ms,
        queue_faces=args.queue_faces,
        max_inflight=args.max_inflight,
        deadline_s=args.deadline,
        pixel_budget=int(args.pixel_budget_mp * 1_000_000),
        max_json_bytes=int(args.max_json_kb * 1024),
        allowed_hosts=_allowed_hosts(args),
        docs=not args.no_docs,
        rate_limit=args.rate_limit,
        rate_burst=args.rate_burst,
        auth_failures=args.auth_failures,
        liveness=args.liveness,
        liveness_threshold=args.liveness_threshold,
        liveness_model=args.liveness_model,
        max_video_seconds=args.max_video_seconds,
        video_deadline_s=args.video_deadline,
    )


def _run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ..errors import GhostFaceNetsError
    from ..gallery.stores import secrets_in
    from ..serve.app import create_app
    from ..serve.service import load_liveness_checker, load_recognizer, open_gallery_store
    from ..serve.settings import SETTINGS_ENV, worker_settings

    if args.workers < 1:
        raise GhostFaceNetsError(f"--workers must be at least 1, got {args.workers}")
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise GhostFaceNetsError("--ssl-certfile and --ssl-keyfile go together")
    settings = _settings(args)
    # Fail here with one line, not in every worker: the database opens and the model loads.
    with open_gallery_store(settings.db) as store:
        location = store.location  # without its secrets
    if args.db_on_command_line and secrets_in(args.db):
        print(
            "ghostfacenets serve: warning: the password in --db is visible to every user of this machine in the "
            "process list; use --db-file, ~/.pgpass, PGSERVICE or PGPASSWORD (docs/gallery.md)",
            file=sys.stderr,
        )
    recognizer = load_recognizer(settings)
    if settings.liveness or settings.liveness_model:
        load_liveness_checker(settings)  # a bad liveness model fails here too (and ExecuTorch's program is cached)
    scheme = "https" if args.ssl_certfile else "http"
    print(
        f"ghostfacenets serve: {recognizer.model_id.describe()}, gallery {location}, "
        f"{scheme}://{args.host}:{args.port}/ (page), /docs (API), {args.workers} worker(s)",
        file=sys.stderr,
    )
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "ssl_certfile": args.ssl_certfile,
        "ssl_keyfile": args.ssl_keyfile,
        "timeout_graceful_shutdown": 10,
    }
    if args.workers == 1:
        uvicorn.run(create_app(settings, recognizer=recognizer), **options)
        return 0
    del recognizer  # each worker loads its own
    with worker_settings(settings, args.db_file) as handed:  # no secret in the workers' environment
        os.environ[SETTINGS_ENV] = handed.to_json()
        uvicorn.run("ghostfacenets.serve:create_app", factory=True, workers=args.workers, **options)
    return 0


def _add_keys(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=Parser)
    create = actions.add_parser("create", help="create a key (printed once; only its hash is stored)")
    _add_db(create)
    create.add_argument(
        "--role",
        required=True,
        choices=["admin", "identify"],
        help="admin: everything; identify: detect, embed, verify, and identify learning only the match",
    )
    create.add_argument(
        "--can",
        type=_permissions,
        default=(),
        metavar="PERMISSIONS",
        help="comma-separated permissions for an identify key: see-candidates (the closest subjects below the "
        "threshold, and a lower threshold), list-subjects (subjects, their metadata and faces' records)",
    )
    create.add_argument(
        "--gallery", metavar="NAME", help="the only gallery the key reaches (created if new; default: all)"
    )
    create.add_argument("--label", default="", help="a note for `keys list` (who or what uses the key)")
    create.add_argument("--json", action="store_true", help="print JSON: id, key, role, gallery, permissions")
    create.add_argument(
        "--out", metavar="FILE", help="write the key to FILE (made readable by you only) instead of printing it"
    )
    listing = actions.add_parser("list", help="every key (never the secrets)")
    _add_db(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = actions.add_parser("revoke", help="revoke a key (it stops working at once)")
    _add_db(revoke)
    revoke.add_argument("id", type=int, metavar="ID", help="the key's id (`keys list`)")
    revoke.add_argument("--json", action="store_true", help="print JSON")


def _permissions(text: str) -> tuple[str, ...]:
    from ..gallery.base import GalleryError, check_permissions

    try:
        return check_permissions(p.strip() for p in text.split(",") if p.strip())
    except GalleryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _scope(key: Any) -> str:
    """Which galleries a key reaches, for people."""
    if key.gallery_id is None:
        return "every gallery"
    return f"gallery {key.gallery}" if key.gallery is not None else f"gallery #{key.gallery_id} (deleted)"


def _key_json(key: Any) -> dict[str, Any]:
    return {
        "id": key.id,
        "role": key.role,
        "gallery": key.gallery,
        "gallery_id": key.gallery_id,
        "permissions": list(key.permissions),
        "label": key.label,
        "created": key.created,
        "last_used": key.last_used,
        "revoked": key.revoked,
    }


def _run_keys(args: argparse.Namespace) -> int:
    from ..errors import GhostFaceNetsError
    from ..files import atomic_write
    from ..gallery import open_store

    with open_store(args.db) as store:
        if args.action == "create":
            if args.can and args.role == "admin":
                raise GhostFaceNetsError("an admin key may do everything already; --can is for identify keys")
            if args.gallery:  # a key for a gallery to be filled through the API
                store.create_gallery(args.gallery, exist_ok=True)
            key, secret = store.create_key(args.role, args.gallery, args.label, args.can)
            if args.out:
                with atomic_write(args.out, "w") as f:  # 0600
                    f.write(secret + "\n")
            record = {"id": key.id, "role": key.role, "gallery": key.gallery, "permissions": list(key.permissions)}
            if args.json:
                print_json(record if args.out else {**record, "key": secret})
            else:
                if not args.out:
                    print(secret)
                can = f", can {', '.join(key.permissions)}" if key.permissions else ""
                where = f"written to {args.out}" if args.out else "shown only now"
                print(
                    f"key {key.id}: {key.role}, {_scope(key)}{can}. It is {where}; keep it secret "
                    "(send it as Authorization: Bearer KEY).",
                    file=sys.stderr,
                )
        elif args.action == "list":
            keys = store.keys()
            if args.json:
                print_json([_key_json(k) for k in keys])
            else:
                print_table(
                    [
                        (
                            k.id,
                            k.role,
                            _scope(k),
                            ",".join(k.permissions) or "-",
                            "revoked" if k.revoked else "live",
                            k.last_used or "-",
                            k.label,
                        )
                        for k in keys
                    ],
                    ("id", "role", "reaches", "can", "state", "last used", "label"),
                )
        else:
            key = store.revoke_key(args.id)
            if args.json:
                print_json(_key_json(key))
            else:
                print(f"revoked key {key.id} ({key.role}, {_scope(key)})")
    return 0


COMMANDS = [
    Command("serve", "run the face recognition service: HTTP API, API keys and a web page", _add_serve, _run_serve),
    Command("keys", "create, list and revoke the service's API keys", _add_keys, _run_keys),
]
