"""The standalone verifier, and the ASGI and WSGI middleware that origins put in front of apps."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

import httpx
import pytest

from gatekeep.middleware import (
    GatekeepASGIMiddleware,
    GatekeepWSGIMiddleware,
    Message,
    Receive,
    Scope,
    Send,
    parse_cookie_header,
)
from gatekeep.model import Entry, EntryStatus
from gatekeep.tokens import Keyring, TokenSigner
from gatekeep.verify import Verifier

SECRET = "middleware-secret-0123456789abcdefghijklmnopqrstuvwxyz"
EVENT_ID = "drop-42"
DEVICE_ID = "device-a"
WAITING_ROOM_URL = "https://queue.example.com/drop-42"
BASE_URL = "http://origin.test"


def issue(*, expired: bool = False, event_id: str = EVENT_ID, device_id: str = DEVICE_ID) -> str:
    """Return a token valid now (or expired an hour ago) from the shared test secret."""
    now_ms = int(time.time() * 1000)
    admitted_ms = now_ms - (7_200_000 if expired else 1_000)
    entry = Entry(
        queue_id="q-middleware",
        event_id=event_id,
        device_id=device_id,
        user_id=None,
        bucket="default",
        status=EntryStatus.ADMITTED,
        joined_at_ms=admitted_ms - 10_000,
        last_heartbeat_ms=admitted_ms,
        token_id="tok-mw",
        nonce="nonce-mw",
        admitted_at_ms=admitted_ms,
        session_expires_at_ms=admitted_ms + 600_000,
    )
    return TokenSigner(Keyring.from_hs256_secret(SECRET)).issue(entry)


def verifier() -> Verifier:
    return Verifier(Keyring.from_hs256_secret(SECRET), event_id=EVENT_ID)


async def echo_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    body = json.dumps(scope.get("gatekeep.claims")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def echo_wsgi(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    body = json.dumps(environ.get("gatekeep.claims")).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


@dataclass
class Case:
    name: str
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    device_binding: bool = False
    status: int = 200
    reason: str | None = None


def cases() -> list[Case]:
    valid = issue()
    expired = issue(expired=True)
    api = {"Accept": "application/json"}
    return [
        Case("bearer", headers={**api, "Authorization": f"Bearer {valid}"}),
        Case("bearer lowercase scheme", headers={**api, "Authorization": f"bearer {valid}"}),
        Case("cookie", headers={**api, "Cookie": f"theme=dark; gatekeep_token={valid}"}),
        Case("query parameter", headers=api, params={"gatekeep_token": valid}),
        Case(
            "expired cookie, fresh query token",
            headers={**api, "Cookie": f"gatekeep_token={expired}"},
            params={"gatekeep_token": valid},
        ),
        Case("no token", headers=api, status=403, reason="missing_token"),
        Case(
            "basic auth only",
            headers={**api, "Authorization": "Basic dXNlcjpwdw=="},
            status=403,
            reason="missing_token",
        ),
        Case(
            "expired",
            headers={**api, "Authorization": f"Bearer {expired}"},
            status=403,
            reason="expired",
        ),
        Case(
            "garbage",
            headers={**api, "Authorization": "Bearer a.b.c"},
            status=403,
            reason="malformed",
        ),
        Case(
            "other event",
            headers={**api, "Authorization": f"Bearer {issue(event_id='other')}"},
            status=403,
            reason="wrong_event",
        ),
        Case(
            "device header",
            headers={**api, "Authorization": f"Bearer {valid}", "X-Gatekeep-Device": DEVICE_ID},
            device_binding=True,
        ),
        Case(
            "device cookie",
            headers={**api, "Cookie": f"gatekeep_device={DEVICE_ID}; gatekeep_token={valid}"},
            device_binding=True,
        ),
        Case(
            "device missing",
            headers={**api, "Authorization": f"Bearer {valid}"},
            device_binding=True,
            status=403,
            reason="missing_device",
        ),
        Case(
            "device other",
            headers={**api, "Authorization": f"Bearer {valid}", "X-Gatekeep-Device": "device-b"},
            device_binding=True,
            status=403,
            reason="wrong_device",
        ),
        Case(
            "device ignored when binding off",
            headers={**api, "Authorization": f"Bearer {valid}", "X-Gatekeep-Device": "x"},
        ),
    ]


CASES = cases()


def check_response(response: httpx.Response, case: Case) -> None:
    assert response.status_code == case.status
    assert response.headers["content-type"] == "application/json"
    if case.status == 200:
        claims = response.json()
        assert claims["event_id"] == EVENT_ID
        assert claims["jti"] == "tok-mw"
        return

    error = response.json()["error"]
    assert error["code"] == "admission_required"
    assert error["reason"] == case.reason
    assert error["waiting_room_url"] == WAITING_ROOM_URL
    assert WAITING_ROOM_URL in error["message"]
    assert response.headers["cache-control"] == "no-store"


# ASGI


def asgi_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_asgi_middleware(case: Case) -> None:
    app = GatekeepASGIMiddleware(
        echo_asgi,
        verifier=verifier(),
        waiting_room_url=WAITING_ROOM_URL,
        device_binding=case.device_binding,
    )

    async with asgi_client(app) as client:
        response = await client.get("/shop", headers=case.headers, params=case.params)

    check_response(response, case)


async def test_asgi_browser_redirected() -> None:
    app = GatekeepASGIMiddleware(echo_asgi, verifier=verifier(), waiting_room_url=WAITING_ROOM_URL)

    async with asgi_client(app) as client:
        response = await client.get(
            "/shop", headers={"Accept": "text/html,application/xhtml+xml;q=0.9"}
        )

    assert response.status_code == 302
    assert response.headers["location"] == WAITING_ROOM_URL
    assert response.headers["cache-control"] == "no-store"


async def test_asgi_async_consume_hook() -> None:
    seen: set[str] = set()

    async def consume_once(claims: dict[str, Any]) -> bool:
        first_use = claims["jti"] not in seen
        seen.add(claims["jti"])
        return first_use

    app = GatekeepASGIMiddleware(
        echo_asgi, verifier=verifier(), waiting_room_url=WAITING_ROOM_URL, consume=consume_once
    )
    headers = {"Authorization": f"Bearer {issue()}"}

    async with asgi_client(app) as client:
        first = await client.get("/", headers=headers)
        second = await client.get("/", headers=headers)

    assert first.status_code == 200
    assert second.status_code == 403
    assert second.json()["error"]["reason"] == "token_used"


async def test_asgi_sync_consume_hook() -> None:
    calls: list[dict[str, Any]] = []

    def record(claims: dict[str, Any]) -> bool:
        calls.append(claims)
        return True

    app = GatekeepASGIMiddleware(
        echo_asgi, verifier=verifier(), waiting_room_url=WAITING_ROOM_URL, consume=record
    )

    async with asgi_client(app) as client:
        response = await client.get("/", headers={"Authorization": f"Bearer {issue()}"})

    assert response.status_code == 200
    assert [claims["jti"] for claims in calls] == ["tok-mw"]


async def test_asgi_consume_hook_skipped_for_invalid_token() -> None:
    calls: list[dict[str, Any]] = []

    def record(claims: dict[str, Any]) -> bool:
        calls.append(claims)
        return True

    app = GatekeepASGIMiddleware(
        echo_asgi, verifier=verifier(), waiting_room_url=WAITING_ROOM_URL, consume=record
    )

    async with asgi_client(app) as client:
        response = await client.get("/", headers={"Authorization": f"Bearer {issue(expired=True)}"})

    assert response.status_code == 403
    assert calls == []


async def test_asgi_scope_not_mutated() -> None:
    received: list[Scope] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        received.append(scope)
        await echo_asgi(scope, receive, send)

    app = GatekeepASGIMiddleware(inner, verifier=verifier(), waiting_room_url=WAITING_ROOM_URL)
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {issue()}".encode())],
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)

    assert "gatekeep.claims" not in scope
    assert received[0]["gatekeep.claims"]["jti"] == "tok-mw"
    assert sent[0]["status"] == 200


async def test_asgi_websocket_rejected_with_close() -> None:
    app = GatekeepASGIMiddleware(echo_asgi, verifier=verifier(), waiting_room_url=WAITING_ROOM_URL)
    inbox: list[Message] = [{"type": "websocket.connect"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return inbox.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app(
        {"type": "websocket", "path": "/ws", "query_string": b"", "headers": []}, receive, send
    )

    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "admission_required"}]


async def test_asgi_websocket_admitted() -> None:
    received: list[Scope] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        received.append(scope)

    app = GatekeepASGIMiddleware(inner, verifier=verifier(), waiting_room_url=WAITING_ROOM_URL)
    query = f"gatekeep_token={issue()}".encode()

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        raise AssertionError(f"unexpected message {message}")

    await app(
        {"type": "websocket", "path": "/ws", "query_string": query, "headers": []}, receive, send
    )

    assert received[0]["gatekeep.claims"]["event_id"] == EVENT_ID


async def test_asgi_lifespan_passes_through() -> None:
    received: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        received.append(scope["type"])

    app = GatekeepASGIMiddleware(inner, verifier=verifier(), waiting_room_url=WAITING_ROOM_URL)

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        return None

    await app({"type": "lifespan"}, receive, send)

    assert received == ["lifespan"]


# WSGI


def wsgi_client(app: Any) -> httpx.Client:
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url=BASE_URL)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_wsgi_middleware(case: Case) -> None:
    app = GatekeepWSGIMiddleware(
        echo_wsgi,
        verifier=verifier(),
        waiting_room_url=WAITING_ROOM_URL,
        device_binding=case.device_binding,
    )

    with wsgi_client(app) as client:
        response = client.get("/shop", headers=case.headers, params=case.params)

    check_response(response, case)


def test_wsgi_browser_redirected() -> None:
    app = GatekeepWSGIMiddleware(echo_wsgi, verifier=verifier(), waiting_room_url=WAITING_ROOM_URL)

    with wsgi_client(app) as client:
        response = client.get("/shop", headers={"Accept": "text/html"})

    assert response.status_code == 302
    assert response.headers["location"] == WAITING_ROOM_URL


def test_wsgi_consume_hook() -> None:
    seen: set[str] = set()

    def consume_once(claims: dict[str, Any]) -> bool:
        first_use = claims["jti"] not in seen
        seen.add(claims["jti"])
        return first_use

    app = GatekeepWSGIMiddleware(
        echo_wsgi, verifier=verifier(), waiting_room_url=WAITING_ROOM_URL, consume=consume_once
    )
    headers = {"Authorization": f"Bearer {issue()}", "Accept": "application/json"}

    with wsgi_client(app) as client:
        first = client.get("/", headers=headers)
        second = client.get("/", headers=headers)

    assert first.status_code == 200
    assert second.status_code == 403
    assert second.json()["error"]["reason"] == "token_used"


def test_wsgi_async_consume_hook_rejected() -> None:
    async def consume(claims: dict[str, Any]) -> bool:
        return True

    app = GatekeepWSGIMiddleware(
        echo_wsgi,
        verifier=verifier(),
        waiting_room_url=WAITING_ROOM_URL,
        consume=consume,  # type: ignore[arg-type]
    )

    with wsgi_client(app) as client, pytest.raises(TypeError, match="synchronous consume hook"):
        client.get("/", headers={"Authorization": f"Bearer {issue()}"})


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def wsgi_server_url() -> Iterator[str]:
    app = GatekeepWSGIMiddleware(echo_wsgi, verifier=verifier(), waiting_room_url=WAITING_ROOM_URL)
    server = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_wsgi_over_loopback_http(wsgi_server_url: str) -> None:
    with httpx.Client(base_url=wsgi_server_url, timeout=5) as client:
        admitted = client.get("/", headers={"Cookie": f"gatekeep_token={issue()}"})
        rejected = client.get("/", headers={"Accept": "application/json"})
        redirected = client.get("/", headers={"Accept": "text/html"})

    assert admitted.status_code == 200
    assert admitted.json()["device_id"] == DEVICE_ID
    assert rejected.status_code == 403
    assert rejected.json()["error"]["code"] == "admission_required"
    assert redirected.status_code == 302
    assert redirected.headers["location"] == WAITING_ROOM_URL


# Helpers and packaging


def test_cookie_header_parsing() -> None:
    parsed = parse_cookie_header('a=1; broken; b="quoted"; a=2; =empty; c=x=y')

    assert parsed == {"a": "1", "b": "quoted", "c": "x=y"}


def test_verify_and_middleware_import_without_server_dependencies() -> None:
    # Block every server dependency and `cryptography`, as on an origin with only PyJWT.
    script = """
import sys
for name in ("starlette", "redis", "uvicorn", "httpx", "prometheus_client", "orjson",
             "pythonjsonlogger", "cryptography"):
    sys.modules[name] = None
import gatekeep.middleware
from gatekeep.verify import Verifier, hs256_key
token = sys.argv[1]
claims = Verifier([hs256_key(sys.argv[2])], event_id=sys.argv[3]).verify(token)
loaded = sorted(name for name in sys.modules if name.startswith("gatekeep"))
print(claims["event_id"], loaded)
"""
    result = subprocess.run(
        [sys.executable, "-c", script, issue(), SECRET, EVENT_ID],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip()
        == f"{EVENT_ID} ['gatekeep', 'gatekeep.middleware', 'gatekeep.verify']"
    )
