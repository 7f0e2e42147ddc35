"""The service's first line: an ASGI middleware that refuses what needs no further work, before FastAPI reads or
parses anything.

In order, for every HTTP request:

1. **Host** (DNS rebinding): the ``Host`` header must name this service (``allowed_hosts``: loopback names by
   default; ``*.example.org`` allows subdomains, ``*`` anything), else 421 ``UNKNOWN_HOST``. ``/healthz`` is exempt,
   so that process managers may probe it by any address (it answers nothing but "ok").
2. **Authentication, cheaply** (``/v1`` only): a client address with too many failed authentications (401
   answers) in the last minute gets 429 ``RATE_LIMITED``; a request without a well-formed ``Authorization: Bearer
   KEY`` header gets 401 at once, its body never read.
3. **Requests per key**: each key's token bucket (``rate_limit`` a second, bursts of ``rate_burst``), else 429
   ``RATE_LIMITED`` with ``Retry-After``. The key is counted by a hash of the secret, before it is looked up; a key
   that turns out unknown is not counted (its failure is, by address).
4. **Body size**: at most ``max_json_bytes`` (kilobytes), unless the route raises the limit with
   :func:`allow_body` before reading (the image routes raise it to ``max_body_bytes``). A declared length over the
   limit is refused before a byte is read; a streamed (chunked) body as soon as it passes it. Either way the answer
   is 413 ``PAYLOAD_TOO_LARGE``, sent from here, whatever the route does with the error.

Answers get ``Cache-Control: no-store`` (they may hold personal data), except the static files of the page and
of the API docs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import ApiError, problem_response
from .ratelimit import RateLimiter, client_key, retry_after
from .settings import ServiceSettings

BODY_LIMIT = "ghostfacenets.body_limit"  # the scope key of a request's BodyLimit
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ghostfacenets"'}
_BEARER = re.compile(r"^bearer +([A-Za-z0-9._~+/-]{1,512}=*)$", re.IGNORECASE)  # RFC 6750 b64token
_CACHEABLE = ("/static/", "/docs/assets/")
_UNCHECKED_HOST = ("/healthz",)


@dataclass
class BodyLimit:
    """The most bytes a request's body may have; a route raises it with :func:`allow_body`."""

    max_bytes: int


class BodyTooLarge(ApiError):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            "PAYLOAD_TOO_LARGE", f"the request body is larger than this route's limit of {max_bytes:,} bytes"
        )


def allow_body(request: Request, max_bytes: int) -> None:
    """Let this request's body have up to ``max_bytes`` (call before reading it)."""
    limit = request.scope.get(BODY_LIMIT)
    if limit is not None:
        limit.max_bytes = max_bytes


def host_name(value: str) -> str | None:
    """The name of a ``Host`` header without its port, lower case (IPv6 without brackets); None when malformed."""
    text = value.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :] if end > 0 else "x"
        if rest and not re.fullmatch(r":\d{1,5}", rest):
            return None
        return text[1:end]
    name, _, port = text.partition(":")
    if (port and not port.isdigit()) or not re.fullmatch(r"[a-z0-9._-]{1,253}", name):
        return None
    return name.rstrip(".")


def host_allowed(name: str | None, allowed: tuple[str, ...]) -> bool:
    if name is None:
        return False
    for pattern in allowed:
        pattern = pattern.lower()
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


class Guard:
    """ASGI middleware: the checks above, in that order (see the module's docstring)."""

    def __init__(self, app: ASGIApp, settings: ServiceSettings) -> None:
        self.app = app
        self.settings = settings
        self.allowed_hosts = tuple(h.lower().strip("[]") for h in settings.allowed_hosts)
        self.per_key = RateLimiter(settings.rate_limit, settings.rate_burst) if settings.rate_limit > 0 else None
        self.failures = (
            RateLimiter(settings.auth_failures / 60.0, settings.auth_failures) if settings.auth_failures > 0 else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        path = scope["path"]
        root = scope.get("root_path") or ""
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        if path not in _UNCHECKED_HOST:
            name = host_name(headers.get(b"host", b"").decode("latin-1"))
            if not host_allowed(name, self.allowed_hosts):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                detail = "this service does not answer for the host name in the request (see --allowed-host)"
                await _answer(ApiError("UNKNOWN_HOST", detail), scope, receive, send)
                return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = client_key((scope.get("client") or (None, 0))[0])
        token_key: bytes | None = None
        if path == "/v1" or path.startswith("/v1/"):
            refusal, token_key = self._check_key(client, headers.get(b"authorization"))
            if refusal is not None:
                if refusal.code == "UNAUTHORIZED" and self.failures is not None:
                    self.failures.take(client)
                await _answer(refusal, scope, receive, send)
                return
        await self._serve(scope, receive, send, headers, path, client, token_key)

    def _check_key(self, client: str, authorization: bytes | None) -> tuple[ApiError | None, bytes | None]:
        """(a refusal or None, the hash the key is counted by)."""
        if self.failures is not None:
            wait = self.failures.wait(client)
            if wait > 0:
                detail = "too many failed authentications from this address; wait before trying again"
                return ApiError("RATE_LIMITED", detail, headers={"Retry-After": retry_after(wait)}), None
        if authorization is None:
            return ApiError("UNAUTHORIZED", "send an API key: Authorization: Bearer KEY", headers=_CHALLENGE), None
        found = _BEARER.match(authorization.decode("latin-1"))
        if found is None:
            detail = "malformed Authorization header; send Authorization: Bearer KEY"
            return ApiError("UNAUTHORIZED", detail, headers=_CHALLENGE), None
        token_key = hashlib.sha256(found.group(1).encode()).digest()[:16]
        if self.per_key is not None:
            wait = self.per_key.take(token_key)
            if wait > 0:
                detail = f"this API key sent more than {self.settings.rate_limit:g} requests a second; slow down"
                return ApiError("RATE_LIMITED", detail, headers={"Retry-After": retry_after(wait)}), token_key
        return None, token_key

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[bytes, bytes],
        path: str,
        client: str,
        token_key: bytes | None,
    ) -> None:
        limit = BodyLimit(self.settings.max_json_bytes)
        scope[BODY_LIMIT] = limit
        try:
            declared: int | None = int(headers[b"content-length"]) if b"content-length" in headers else None
        except ValueError:
            declared = None  # the server itself refuses a malformed length
        if declared is not None and declared > self.settings.max_body_bytes:
            await _answer(BodyTooLarge(self.settings.max_body_bytes), scope, receive, send)
            return
        cacheable = path.startswith(_CACHEABLE)
        state = {"received": 0, "started": False, "answered": False}

        async def limited_receive() -> Message:
            if state["answered"]:
                return {"type": "http.disconnect"}
            if declared is not None and declared > limit.max_bytes:
                await refuse()
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit.max_bytes:
                    await refuse()
            return message

        async def refuse() -> None:
            error = BodyTooLarge(limit.max_bytes)
            if not state["started"]:
                await _answer(error, scope, receive, send)
                state["answered"] = True
            raise error

        async def watched_send(message: Message) -> None:
            if state["answered"]:
                return  # the guard answered already (413); the route's own answer is dropped
            if message["type"] == "http.response.start":
                state["started"] = True
                if message["status"] == 401:
                    self._failed(client, token_key)
                if not cacheable and not any(k.lower() == b"cache-control" for k, _ in message.get("headers", [])):
                    message["headers"] = [*message.get("headers", []), (b"cache-control", b"no-store")]
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge:
            if not state["answered"]:
                raise

    def _failed(self, client: str, token_key: bytes | None) -> None:
        """A 401 went out: count it against the address, and not against the (unknown) key."""
        if self.failures is not None:
            self.failures.take(client)
        if token_key is not None and self.per_key is not None:
            self.per_key.forget(token_key)


async def _answer(error: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer ``error`` from the guard, closing the connection (the body, if any, is left unread)."""
    headers = {**error.headers, "Connection": "close", "Cache-Control": "no-store"}
    await problem_response(error.code, error.detail, error.status, headers)(scope, receive, send)
