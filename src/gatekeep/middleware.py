"""ASGI and WSGI middleware that admits only requests carrying a valid Gatekeep admission token.

Depends only on `gatekeep.verify` and the standard library, so origins need only PyJWT.

The token is read from `Authorization: Bearer`, then the `gatekeep_token` cookie, then the
`gatekeep_token` query parameter; the first one that verifies wins. That way a fresh token in
the query string still works when the browser also sends an expired cookie. With device
binding on, the device id comes from the `X-Gatekeep-Device` header or the `gatekeep_device`
cookie, and a request without one is rejected.

A rejected browser request (Accept contains text/html) gets a 302 to the waiting room. Any
other client gets 403 with `{"error": {"code": "admission_required", ...}}`. An admitted
request reaches the app with the claims in `scope["gatekeep.claims"]` (ASGI) or
`environ["gatekeep.claims"]` (WSGI).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import parse_qs
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from gatekeep.verify import TokenInvalid, Verifier

logger = logging.getLogger("gatekeep.middleware")

CLAIMS_KEY = "gatekeep.claims"
TOKEN_COOKIE = "gatekeep_token"  # noqa: S105 (a cookie name, not a secret)
TOKEN_QUERY_PARAMETER = "gatekeep_token"  # noqa: S105 (a parameter name)
DEVICE_HEADER = "X-Gatekeep-Device"
DEVICE_COOKIE = "gatekeep_device"

# Candidate tokens checked per request; one per source, so a client cannot make it verify more.
MAX_CANDIDATES = 3

# Query strings with more fields than this are not searched for a token.
MAX_QUERY_FIELDS = 100

# Returns True to let the request through, False to reject it as an already used token.
ConsumeHook: TypeAlias = Callable[[dict[str, Any]], bool | Awaitable[bool]]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

_REASON_MESSAGES = {
    "missing_token": "no admission token was sent",
    "missing_device": "no device id was sent with the admission token",
    "token_used": "this admission token was already used",
    "expired": "the admission token expired",
    "not_yet_valid": "the admission token is not valid yet",
    "wrong_event": "the admission token is for another event",
    "wrong_device": "the admission token belongs to another device",
}


@dataclass(frozen=True, slots=True)
class RequestCredentials:
    """The parts of a request that the admission check reads, taken from ASGI or WSGI."""

    authorization: str | None
    cookie_header: str | None
    query_string: str
    device_header: str | None
    accept: str | None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A response that sends the client back to the waiting room."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class AdmissionGate:
    """The checks shared by the ASGI and WSGI middleware."""

    def __init__(
        self,
        verifier: Verifier,
        waiting_room_url: str,
        *,
        device_binding: bool = False,
        consume: ConsumeHook | None = None,
    ) -> None:
        self.verifier = verifier
        self.waiting_room_url = waiting_room_url
        self.device_binding = device_binding
        self.consume = consume

    def check(self, request: RequestCredentials) -> dict[str, Any] | str:
        """Return the claims of the first valid token, or the reason why none is valid."""
        cookies = parse_cookie_header(request.cookie_header)
        candidates = _candidate_tokens(request, cookies)
        if not candidates:
            return "missing_token"

        device_id: str | None = None
        if self.device_binding:
            device_id = request.device_header or cookies.get(DEVICE_COOKIE)
            if not device_id:
                return "missing_device"

        first_reason = ""
        for token in candidates:
            try:
                return self.verifier.verify(token, device_id)
            except TokenInvalid as error:
                first_reason = first_reason or error.reason
        return first_reason

    def rejection(self, request: RequestCredentials, reason: str) -> Rejection:
        """Build the 302 (browsers) or 403 (API clients) response for a rejected request."""
        logger.debug(
            "event=admission.rejected reason=%s event_id=%s", reason, self.verifier.event_id
        )
        no_store = ("Cache-Control", "no-store")
        if "text/html" in (request.accept or ""):
            return Rejection(302, [("Location", self.waiting_room_url), no_store], b"")

        detail = _REASON_MESSAGES.get(reason, "the admission token is invalid")
        body = {
            "error": {
                "code": "admission_required",
                "message": f"{detail}; join the waiting room at {self.waiting_room_url}",
                "reason": reason,
                "waiting_room_url": self.waiting_room_url,
            }
        }
        content_type = ("Content-Type", "application/json")
        return Rejection(403, [content_type, no_store], json.dumps(body).encode("utf-8"))


def _candidate_tokens(request: RequestCredentials, cookies: dict[str, str]) -> list[str]:
    candidates = []
    scheme, _, credentials = (request.authorization or "").strip().partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        candidates.append(credentials.strip())
    if cookies.get(TOKEN_COOKIE):
        candidates.append(cookies[TOKEN_COOKIE])
    try:
        query = parse_qs(request.query_string, max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        query = {}  # a query string with too many fields is not searched for a token
    query_values = query.get(TOKEN_QUERY_PARAMETER)
    if query_values and query_values[0]:
        candidates.append(query_values[0])
    return candidates[:MAX_CANDIDATES]


def parse_cookie_header(header: str | None) -> dict[str, str]:
    """Return the cookies of a Cookie header by name; the first of duplicate names wins.

    Unlike `http.cookies.SimpleCookie`, one malformed cookie does not hide the others.
    """
    cookies: dict[str, str] = {}
    for pair in (header or "").split(";"):
        name, separator, value = pair.partition("=")
        name = name.strip()
        if separator and name and name not in cookies:
            cookies[name] = value.strip().strip('"')
    return cookies


class GatekeepASGIMiddleware:
    """ASGI middleware for `http` and `websocket` scopes; other scopes pass through.

    A rejected WebSocket handshake is closed with code 1008 (policy violation), which ASGI
    servers send as an HTTP 403.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: Verifier,
        waiting_room_url: str,
        device_binding: bool = False,
        consume: ConsumeHook | None = None,
    ) -> None:
        self.app = app
        self.gate = AdmissionGate(
            verifier, waiting_room_url, device_binding=device_binding, consume=consume
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        request = _asgi_credentials(scope)
        result = self.gate.check(request)
        if isinstance(result, dict) and not await self._consume(result):
            result = "token_used"

        if isinstance(result, str):
            await self._reject(scope, receive, send, request, result)
            return

        admitted_scope = dict(scope)
        admitted_scope[CLAIMS_KEY] = result
        await self.app(admitted_scope, receive, send)

    async def _consume(self, claims: dict[str, Any]) -> bool:
        if self.gate.consume is None:
            return True
        outcome = self.gate.consume(claims)
        if inspect.isawaitable(outcome):
            outcome = await outcome
        return bool(outcome)

    async def _reject(
        self, scope: Scope, receive: Receive, send: Send, request: RequestCredentials, reason: str
    ) -> None:
        if scope["type"] == "websocket":
            await receive()  # the websocket.connect message must arrive before the close
            await send({"type": "websocket.close", "code": 1008, "reason": "admission_required"})
            return

        rejection = self.gate.rejection(request, reason)
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in rejection.headers
        ]
        headers.append((b"content-length", str(len(rejection.body)).encode("ascii")))
        await send({"type": "http.response.start", "status": rejection.status, "headers": headers})
        await send({"type": "http.response.body", "body": rejection.body})


def _asgi_credentials(scope: Scope) -> RequestCredentials:
    wanted = {b"authorization", b"cookie", DEVICE_HEADER.lower().encode("ascii"), b"accept"}
    found: dict[bytes, list[str]] = {}
    for name, value in scope.get("headers", ()):
        if name in wanted:
            found.setdefault(name, []).append(value.decode("latin-1"))

    def first(name: bytes) -> str | None:
        values = found.get(name)
        return values[0] if values else None

    cookies = found.get(b"cookie")
    return RequestCredentials(
        authorization=first(b"authorization"),
        # HTTP/2 clients may split cookies over several headers (RFC 9113, section 8.2.3).
        cookie_header="; ".join(cookies) if cookies else None,
        query_string=scope.get("query_string", b"").decode("latin-1"),
        device_header=first(DEVICE_HEADER.lower().encode("ascii")),
        accept=first(b"accept"),
    )


class GatekeepWSGIMiddleware:
    """WSGI middleware; the consume hook, if any, must be a plain function returning a bool."""

    def __init__(
        self,
        app: WSGIApplication,
        *,
        verifier: Verifier,
        waiting_room_url: str,
        device_binding: bool = False,
        consume: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        self.app = app
        self.gate = AdmissionGate(
            verifier, waiting_room_url, device_binding=device_binding, consume=consume
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = _wsgi_credentials(environ)
        result = self.gate.check(request)
        if isinstance(result, dict) and not self._consume(result):
            result = "token_used"

        if isinstance(result, str):
            rejection = self.gate.rejection(request, result)
            status = "302 Found" if rejection.status == 302 else "403 Forbidden"
            headers = [*rejection.headers, ("Content-Length", str(len(rejection.body)))]
            start_response(status, headers)
            return [rejection.body]

        environ[CLAIMS_KEY] = result
        return self.app(environ, start_response)

    def _consume(self, claims: dict[str, Any]) -> bool:
        if self.gate.consume is None:
            return True
        outcome = self.gate.consume(claims)
        if inspect.isawaitable(outcome):
            if inspect.iscoroutine(outcome):
                outcome.close()  # avoids a "coroutine was never awaited" warning
            raise TypeError(
                "the WSGI middleware needs a synchronous consume hook that returns a bool"
            )
        return bool(outcome)


def _wsgi_credentials(environ: WSGIEnvironment) -> RequestCredentials:
    device_key = "HTTP_" + DEVICE_HEADER.upper().replace("-", "_")
    return RequestCredentials(
        authorization=environ.get("HTTP_AUTHORIZATION"),
        cookie_header=environ.get("HTTP_COOKIE"),
        query_string=environ.get("QUERY_STRING", ""),
        device_header=environ.get(device_key),
        accept=environ.get("HTTP_ACCEPT"),
    )
