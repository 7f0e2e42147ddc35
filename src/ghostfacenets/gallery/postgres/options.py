"""The PostgreSQL store's options (keyword arguments or URL query parameters) and their checks."""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from ..base import GalleryError
from ..stores import DSN_PAIR, POSTGRES_SCHEMES, unsplit_url

DEFAULTS: dict[str, Any] = {
    "ef_search": 100,
    "exact_limit": 5_000,
    "pool_size": 10,
    "schema": "ghostfacenets",
    "vector_type": "vector",
    "hnsw_m": 16,
    "hnsw_ef_construction": 64,
}
VECTOR_TYPES = ("vector", "halfvec")
CONNECT_TIMEOUT_S = 10
POOL_TIMEOUT_S = 30
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def split_options(url: str) -> tuple[str, dict[str, str]]:
    """The connection string without this store's own parameters (URL query parameters, or ``key=value`` pairs of a
    libpq string), and those parameters."""
    if not url.lower().startswith(POSTGRES_SCHEMES):
        ours = {m.group(1): m.group(3).strip("'") for m in DSN_PAIR.finditer(url) if m.group(1) in DEFAULTS}
        others = DSN_PAIR.sub(lambda m: "" if m.group(1) in DEFAULTS else m.group(0), url)
        return " ".join(others.split()) if "'" not in others else others.strip(), ours
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in DEFAULTS}
    rest = [(k, v) for k, v in query if k not in DEFAULTS]
    return unsplit_url(parts._replace(query=urllib.parse.urlencode(rest))), ours


def check_option(name: str, value: Any) -> Any:
    """A checked option value."""
    if name in ("schema", "vector_type"):
        text = str(value)
        if name == "vector_type" and text not in VECTOR_TYPES:
            raise GalleryError(f"vector_type must be one of {', '.join(VECTOR_TYPES)}, got {text!r}")
        if name == "schema" and not _IDENTIFIER.fullmatch(text):
            raise GalleryError(f"schema {text!r} must be a lowercase SQL identifier")
        return text
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise GalleryError(f"option {name} must be an integer, got {value!r}") from None
    lowest = {"exact_limit": 0, "hnsw_m": 2, "hnsw_ef_construction": 4}.get(name, 1)
    if number < lowest:
        raise GalleryError(f"option {name} must be at least {lowest}, got {number}")
    return number
