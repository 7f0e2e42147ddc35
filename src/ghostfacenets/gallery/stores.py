"""Opening a gallery store from ``--db``, and ``--db`` as messages and logs may show it.

``--db`` is a PostgreSQL connection string (a ``postgresql://`` or ``postgres://`` URL, or a libpq ``key=value``
string such as ``service=faces``) or else an SQLite file path. A connection string can carry secrets: libpq's
``password``, ``sslpassword`` and ``oauth_client_secret`` parameters (libpq's parameter list: every other parameter
is an address, a name, a setting or a file path), and a URL's ``user:password@``. :func:`redact_url` hides them
all; :func:`scrub` hides their values wherever they appear in a message (a driver's parse error can quote them).
Where the secret should live instead (never the command line or the workers' environment): ``--db-file`` (a file
readable by its owner only), :data:`DB_ENV`, libpq's ``~/.pgpass``, ``PGSERVICE`` with a service file, or
``PGPASSWORD`` (docs/gallery.md).
"""

from __future__ import annotations

import logging
import os
import re
import stat
import urllib.parse
from pathlib import Path
from typing import Any

from .base import GalleryError, GalleryStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
DB_ENV = "GHOSTFACENETS_DB"  # --db when the option is not given
SECRET_PARAMETERS = ("password", "sslpassword", "oauth_client_secret")
HIDDEN = "***"
# The parameters of libpq 17/18 (its documentation, "Parameter Key Words"): a string starting with one of them and
# "=" is a key=value connection string.
# fmt: off
LIBPQ_KEYWORDS = frozenset((
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "require_auth", "channel_binding",
    "connect_timeout", "client_encoding", "options", "application_name", "fallback_application_name", "keepalives",
    "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout", "replication", "gssencmode",
    "sslmode", "requiressl", "sslnegotiation", "sslcompression", "sslcert", "sslkey", "sslkeylogfile",
    "sslpassword", "sslcertmode", "sslrootcert", "sslcrl", "sslcrldir", "sslsni", "requirepeer",
    "ssl_min_protocol_version", "ssl_max_protocol_version", "krbsrvname", "gsslib", "gssdelegation", "service",
    "target_session_attrs", "load_balance_hosts", "oauth_issuer", "oauth_client_id", "oauth_client_secret",
    "oauth_scope",
))
# fmt: on
_DSN_START = re.compile(r"\s*([a-z_]+)\s*=")
# key = value in a key=value string: the value single-quoted (with \' and \\ inside) or up to the next space
DSN_PAIR = re.compile(r"([a-z_]+)(\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']*)")


def is_postgres_url(db: str | Path) -> bool:
    """Whether ``--db`` names a PostgreSQL database (a ``postgresql://`` or ``postgres://`` URL, or a libpq
    ``key=value`` string) rather than an SQLite file."""
    if not isinstance(db, str):
        return False
    if db.lower().startswith(POSTGRES_SCHEMES):
        return True
    start = _DSN_START.match(db)
    return start is not None and start.group(1) in LIBPQ_KEYWORDS


def _is_secret(parameter: str) -> bool:
    return parameter.lower() in SECRET_PARAMETERS


def redact_url(db: str | Path) -> str:
    """``--db`` for messages and logs: a connection string with every secret replaced by ``***`` (a file path as
    it is)."""
    text = str(db)
    if not is_postgres_url(text):
        return text
    if not text.lower().startswith(POSTGRES_SCHEMES):
        return DSN_PAIR.sub(
            lambda m: m.group(1) + m.group(2) + (HIDDEN if _is_secret(m.group(1)) else m.group(3)), text
        )
    parts = urllib.parse.urlsplit(text)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":" + HIDDEN
    query = [
        (name, HIDDEN if _is_secret(name) else value)
        for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    ]
    return unsplit_url(parts._replace(netloc=userinfo + at + hosts, query=urllib.parse.urlencode(query, safe="*/")))


def unsplit_url(parts: urllib.parse.SplitResult) -> str:
    """A connection URL from its parts; ``postgresql:///db?host=...`` keeps its ``//`` (urlunsplit drops them when
    there is no host, which libpq would not read as a URL)."""
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{parts.path}{query}"


def secrets_in(db: str | Path) -> list[str]:
    """The secret values a connection string holds (as written and decoded), longest first."""
    text = str(db)
    if not is_postgres_url(text):
        return []
    found: set[str] = set()
    if text.lower().startswith(POSTGRES_SCHEMES):
        parts = urllib.parse.urlsplit(text)
        userinfo, at, _ = parts.netloc.rpartition("@")
        if at and ":" in userinfo:
            found.add(userinfo.split(":", 1)[1])
        found.update(v for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if _is_secret(k))
        found.update(v for k, v in re.findall(r"[?&]([^=&]+)=([^&]*)", parts.query) if _is_secret(k))
    else:
        for name, _, value in DSN_PAIR.findall(text):
            if _is_secret(name):
                found.add(value)
                found.add(value[1:-1].replace("\\'", "'").replace("\\\\", "\\") if value[:1] == "'" else value)
    found |= {urllib.parse.unquote(v) for v in found}
    return sorted((v for v in found if v), key=len, reverse=True)


def scrub(message: str, db: str | Path) -> str:
    """``message`` with every secret of ``db`` hidden (the connection string itself redacted, and its secret
    values wherever they appear)."""
    text = message.replace(str(db), redact_url(db)) if str(db) else message
    for secret in secrets_in(db):
        text = text.replace(secret, HIDDEN)
    return text


class ScrubSecrets(logging.Filter):
    """A log filter that hides the secrets of the connection strings it was given (added to the database driver's
    loggers, whose messages can quote a connection string)."""

    def __init__(self) -> None:
        super().__init__()
        self.databases: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.databases:
            message = record.getMessage()
            for db in self.databases:
                message = scrub(message, db)
            record.msg, record.args = message, None
        return True


LOG_FILTER = ScrubSecrets()


def hide_in_logs(db: str, loggers: tuple[str, ...] = ("psycopg", "psycopg.pool")) -> None:
    """Hide the secrets of ``db`` in what the driver's loggers write."""
    if secrets_in(db):
        LOG_FILTER.databases.add(db)
        for name in loggers:
            logger = logging.getLogger(name)
            if LOG_FILTER not in logger.filters:
                logger.addFilter(LOG_FILTER)


def read_db_file(path: str | Path) -> str:
    """``--db`` from a file (its first line): a connection string whose password stays off the command line. A file
    that holds a secret must be readable by its owner only (as libpq asks of ``~/.pgpass``)."""
    path = Path(path)
    try:
        text = path.read_text().strip().splitlines()
        mode = path.stat().st_mode
    except OSError as exc:
        raise GalleryError(f"--db-file {path}: {exc.strerror or exc}") from None
    if not text or not text[0].strip():
        raise GalleryError(f"--db-file {path}: empty; write the database (a postgresql:// URL or a file path) in it")
    db = text[0].strip()
    if secrets_in(db) and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise GalleryError(f"--db-file {path} holds a password but others may read it; chmod 600 {path}")
    return db


def open_store(db: str | Path, *, create: bool = True, **options: Any) -> GalleryStore:
    """The store ``db`` names: a PostgreSQL connection string (:class:`.postgres.PostgresStore`, whose ``options``
    and parameters tune it) or an SQLite file path (:class:`.sqlite.SQLiteStore`, created unless ``create`` is
    False)."""
    if is_postgres_url(db):
        from .postgres import PostgresStore

        return PostgresStore(str(db), **options)
    if options:
        raise GalleryError(f"options {sorted(options)} apply to PostgreSQL, not to the SQLite file {db}")
    from .sqlite import SQLiteStore

    return SQLiteStore(db, create=create)


def environment_db() -> str | None:
    """``--db`` from :data:`DB_ENV`, when set."""
    return os.environ.get(DB_ENV) or None
