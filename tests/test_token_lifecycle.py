"""Token records, consume, introspect and revocation: on both stores and through a real service."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from jwt.algorithms import OKPAlgorithm

from conftest import ADMIN_KEY, Service, join_request, start_service
from gatekeep.consume import AsyncConsumeClient, ConsumeClient
from gatekeep.middleware import GatekeepASGIMiddleware, GatekeepWSGIMiddleware
from gatekeep.model import EntryStatus, EventConfig, JoinRequest
from gatekeep.store.base import Store
from gatekeep.tokens import Verifier, generate_key_file
from gatekeep.tokens.records import TokenState
from test_api import wait_for_status

ORIGIN_KEY = "test-origin-key-0123456789"
LEEWAY_MS = 5000

# Store cases


async def admit(
    store: Store, event_id: str, device_ids: list[str], **fields: Any
) -> list[JoinRequest]:
    """Create the event, join every device and release them all; return the join requests."""
    config = {"release_rate": 1000, "max_capacity": 100, **fields}
    await store.put_event(EventConfig.from_dict({"event_id": event_id, **config}))
    requests = []
    for device_id in device_ids:
        request = join_request(event_id, device_id)
        await store.join(request)
        requests.append(request)
    await asyncio.sleep(0.05)
    await store.release(event_id, 10_000)
    return requests


async def record(store: Store, request: JoinRequest) -> None:
    expires_at_ms = await store.now_ms() + 60_000
    result = await store.record_token(
        request.event_id, request.queue_id, request.token_id, expires_at_ms
    )
    assert result is not None


async def test_record_token_once_then_found(store: Store) -> None:
    [request] = await admit(store, "ev1", ["d1"])
    expires_at_ms = await store.now_ms() + 60_000

    first = await store.record_token("ev1", request.queue_id, request.token_id, expires_at_ms)
    again = await store.record_token("ev1", request.queue_id, request.token_id, expires_at_ms)
    lookup = await store.lookup_token("ev1", request.token_id)

    assert first is not None
    assert first[1] is True
    assert again is not None
    assert again[1] is False
    assert lookup.state == TokenState.ACTIVE
    assert lookup.record is not None
    assert lookup.record.device_id == "d1"
    assert lookup.record.queue_id == request.queue_id
    assert lookup.record.expires_at_ms == expires_at_ms


async def test_record_token_waiting_entry_none(store: Store) -> None:
    [request] = await admit(store, "ev1", ["d1"], paused=True)

    result = await store.record_token(
        "ev1", request.queue_id, request.token_id, await store.now_ms() + 60_000
    )

    assert result is None
    assert (await store.lookup_token("ev1", request.token_id)).state == TokenState.UNKNOWN


async def test_record_token_expires_with_ttl(store: Store) -> None:
    [request] = await admit(store, "ev1", ["d1"])
    expires_at_ms = await store.now_ms() + 200
    await store.record_token("ev1", request.queue_id, request.token_id, expires_at_ms)

    await asyncio.sleep(0.3)
    lookup = await store.lookup_token("ev1", request.token_id)

    assert lookup.state == TokenState.UNKNOWN
    assert lookup.record is None


async def test_lookup_unknown_jti_and_event(store: Store) -> None:
    await admit(store, "ev1", ["d1"])

    assert (await store.lookup_token("ev1", "no-such-jti")).state == TokenState.UNKNOWN
    assert (await store.lookup_token("missing", "no-such-jti")).state == TokenState.UNKNOWN
    assert (await store.consume_token("missing", "no-such-jti")).state == TokenState.UNKNOWN


async def test_consume_once_then_consumed(store: Store) -> None:
    [request] = await admit(store, "ev1", ["d1"])
    await record(store, request)

    first = await store.consume_token("ev1", request.token_id)
    second = await store.consume_token("ev1", request.token_id)

    assert first.state == TokenState.ACTIVE
    assert first.record is not None
    assert first.record.consumed_at_ms is not None
    assert second.state == TokenState.CONSUMED
    assert (await store.lookup_token("ev1", request.token_id)).state == TokenState.CONSUMED


async def test_consume_concurrent_one_wins(store: Store) -> None:
    [request] = await admit(store, "ev1", ["d1"])
    await record(store, request)

    results = await asyncio.gather(
        *(store.consume_token("ev1", request.token_id) for _ in range(50))
    )

    states = [result.state for result in results]
    assert states.count(TokenState.ACTIVE) == 1
    assert states.count(TokenState.CONSUMED) == 49


async def test_lookup_adopts_unrecorded_token(store: Store) -> None:
    [request] = await admit(store, "ev1", ["d1"])

    without_device = await store.lookup_token("ev1", request.token_id)
    adopted = await store.lookup_token("ev1", request.token_id, device_id="d1", leeway_ms=LEEWAY_MS)
    wrong_device = await store.lookup_token("ev1", "other-jti", device_id="d1")

    assert without_device.state == TokenState.UNKNOWN
    assert adopted.state == TokenState.ACTIVE
    assert adopted.record is not None
    snapshot = await store.touch("ev1", request.queue_id)
    assert snapshot.entry.session_expires_at_ms is not None
    assert adopted.record.expires_at_ms == snapshot.entry.session_expires_at_ms + LEEWAY_MS
    assert wrong_device.state == TokenState.UNKNOWN


async def test_leave_ends_token_session(store: Store) -> None:
    [request] = await admit(store, "ev1", ["d1"])
    await record(store, request)

    await store.leave("ev1", request.queue_id)

    lookup = await store.lookup_token("ev1", request.token_id)
    assert lookup.state == TokenState.SESSION_ENDED
    assert (await store.consume_token("ev1", request.token_id)).state == (TokenState.SESSION_ENDED)


async def test_session_end_expires_token(store: Store) -> None:
    [request] = await admit(store, "ev1", ["d1"], session_ttl_s=1)
    await record(store, request)

    await asyncio.sleep(1.1)

    assert (await store.lookup_token("ev1", request.token_id)).state == TokenState.EXPIRED


async def test_revoke_jti_frees_capacity(store: Store) -> None:
    first, second = await admit(store, "ev1", ["d1", "d2"], max_capacity=1)
    await record(store, first)
    assert (await store.event_snapshot("ev1")).admitted_active == 1

    result = await store.revoke_tokens("ev1", jti=first.token_id)
    await store.release("ev1", 10)

    assert result.revoked_tokens == 1
    assert result.ended_sessions == 1
    assert (await store.lookup_token("ev1", first.token_id)).state == TokenState.REVOKED
    assert (await store.touch("ev1", first.queue_id)).entry.status == EntryStatus.LEFT
    assert (await store.touch("ev1", second.queue_id)).entry.status == EntryStatus.ADMITTED
    again = await store.revoke_tokens("ev1", jti=first.token_id)
    assert again.revoked_tokens == 0
    assert again.ended_sessions == 0


async def test_revoke_device_only_its_tokens(store: Store) -> None:
    first, second, third = await admit(store, "ev1", ["d1", "d2", "d3"])
    await record(store, first)
    await record(store, second)

    by_recorded = await store.revoke_tokens("ev1", device_id="d1")
    by_unrecorded = await store.revoke_tokens("ev1", device_id="d3")

    assert by_recorded.revoked_tokens == 1
    assert by_recorded.ended_sessions == 1
    assert by_unrecorded.revoked_tokens == 0
    assert by_unrecorded.ended_sessions == 1
    assert (await store.lookup_token("ev1", first.token_id)).state == TokenState.REVOKED
    assert (await store.lookup_token("ev1", second.token_id)).state == TokenState.ACTIVE
    assert (await store.touch("ev1", third.queue_id)).entry.status == EntryStatus.LEFT


async def test_revoke_event_ends_every_session(store: Store) -> None:
    requests = await admit(store, "ev1", ["d1", "d2", "d3"])
    await record(store, requests[0])

    result = await store.revoke_tokens("ev1")
    snapshot = await store.event_snapshot("ev1")

    assert result.revoked_tokens == 1
    assert result.ended_sessions == 3
    assert snapshot.admitted_active == 0
    assert snapshot.left_total == 3
    assert (await store.lookup_token("ev1", requests[0].token_id)).state == TokenState.REVOKED


async def test_rejoin_after_revoke_keeps_new_session(store: Store) -> None:
    [first] = await admit(store, "ev1", ["d1"])
    await record(store, first)
    await store.revoke_tokens("ev1", jti=first.token_id)
    [second] = await admit(store, "ev1", ["d1"])
    await record(store, second)

    result = await store.revoke_tokens("ev1", jti=first.token_id)

    assert result.ended_sessions == 0
    assert (await store.touch("ev1", second.queue_id)).entry.status == EntryStatus.ADMITTED
    assert (await store.lookup_token("ev1", second.token_id)).state == TokenState.ACTIVE


# Service cases

EVENT = {"release_rate": 50, "max_capacity": 100, "session_ttl_s": 60, "heartbeat_timeout_s": 30}


@pytest.fixture(params=["memory", "redis"])
def origin_service(request: pytest.FixtureRequest) -> Iterator[Service]:
    """A service with an origin key, once on the embedded store and once on Redis."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    running = start_service(redis_url=url, extra_env={"GATEKEEP_ORIGIN_API_KEYS": ORIGIN_KEY})
    yield running
    running.stop()


def origin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ORIGIN_KEY}"}


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


async def put_event(client: httpx.AsyncClient, event_id: str, **fields: Any) -> None:
    response = await client.put(
        f"/admin/events/{event_id}", json={**EVENT, **fields}, headers=admin_headers()
    )
    assert response.status_code in (200, 201), response.text


async def join(client: httpx.AsyncClient, event_id: str, device_id: str) -> str:
    response = await client.post(f"/v1/events/{event_id}/join", json={"device_id": device_id})
    assert response.status_code in (200, 201), response.text
    queue_id: str = response.json()["queue_id"]
    return queue_id


async def admitted_token(client: httpx.AsyncClient, event_id: str, device_id: str) -> str:
    queue_id = await join(client, event_id, device_id)
    token: str = (await wait_for_status(client, queue_id, "admitted"))["token"]
    return token


async def introspect(client: httpx.AsyncClient, token: str, **fields: Any) -> dict[str, Any]:
    response = await client.post(
        "/v1/tokens/introspect", json={"token": token, **fields}, headers=origin_headers()
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    return body


async def consume(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/v1/tokens/consume", json={"token": token}, headers=origin_headers())


def metric_value(service: Service, name: str, **labels: str) -> float:
    port = service.env["GATEKEEP_METRICS_PORT"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    expected = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{"):
            found = line[len(name) + 1 : line.index("}")]
            if ",".join(sorted(found.split(","))) == expected:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_consume_once_then_409(origin_service: Service) -> None:
    async with origin_service.client() as client:
        await put_event(client, "ev")
        token = await admitted_token(client, "ev", "d1")

        first = await consume(client, token)
        second = await consume(client, token)

    assert first.status_code == 200, first.text
    assert first.json()["consumed"] is True
    assert first.json()["claims"]["device_id"] == "d1"
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "token_consumed"


async def test_consume_50_concurrent_one_succeeds(origin_service: Service) -> None:
    async with origin_service.client() as client:
        await put_event(client, "ev")
        token = await admitted_token(client, "ev", "d1")

        responses = await asyncio.gather(*(consume(client, token) for _ in range(50)))

    statuses = [response.status_code for response in responses]
    assert statuses.count(200) == 1
    assert statuses.count(409) == 49


async def test_introspect_reasons(origin_service: Service) -> None:
    async with origin_service.client() as client:
        await put_event(client, "ev")
        active = await admitted_token(client, "ev", "d-active")
        consumed = await admitted_token(client, "ev", "d-consumed")
        revoked = await admitted_token(client, "ev", "d-revoked")
        left_queue_id = await join(client, "ev", "d-left")
        left = (await wait_for_status(client, left_queue_id, "admitted"))["token"]
        await put_event(client, "short", session_ttl_s=1)
        expired = await admitted_token(client, "short", "d-expired")

        assert (await consume(client, consumed)).status_code == 200
        revoke = await client.post(
            "/admin/tokens/revoke", json={"device_id": "d-revoked"}, headers=admin_headers()
        )
        assert revoke.status_code == 200, revoke.text
        assert (await client.delete(f"/v1/queue/{left_queue_id}")).status_code == 200
        forged = jwt.encode(
            jwt.decode(active, options={"verify_signature": False}),
            "another-secret-0123456789abcdefghijklmnop",
            algorithm="HS256",
            headers={"kid": jwt.get_unverified_header(active)["kid"]},
        )
        await asyncio.sleep(1.2)

        active_body = await introspect(client, active)
        wrong_device = await introspect(client, active, device_id="d-other")
        reasons = {
            "consumed": await introspect(client, consumed),
            "revoked": await introspect(client, revoked),
            "session_ended": await introspect(client, left),
            "bad_signature": await introspect(client, forged),
            "malformed": await introspect(client, "not-a-token"),
        }
        expired_body = await introspect(client, expired)

    assert active_body["active"] is True
    assert active_body["device_id"] == "d-active"
    assert active_body["event_id"] == "ev"
    assert wrong_device == {"active": False, "reason": "wrong_device"}
    for reason, body in reasons.items():
        assert body == {"active": False, "reason": reason}
    # The session ended less than the 5 s leeway ago, so the verifier still accepts the
    # token's time and `expired` comes from the store's record of the session.
    assert expired_body == {"active": False, "reason": "expired"}


async def test_introspect_unknown_token(tmp_path: Path, redis_url: str) -> None:
    """A validly signed token that no service issued has no record: `unknown`."""
    running = start_service(redis_url=redis_url, extra_env={"GATEKEEP_ORIGIN_API_KEYS": ORIGIN_KEY})
    try:
        async with running.client() as client:
            await put_event(client, "ev")
            token = await admitted_token(client, "ev", "d1")
            claims = jwt.decode(token, options={"verify_signature": False})
            header = jwt.get_unverified_header(token)
            secret = running.env["GATEKEEP_TOKEN_SECRET"]
            stranger = jwt.encode(
                {**claims, "jti": "never-issued"}, secret, algorithm="HS256", headers=header
            )

            body = await introspect(client, stranger)
            response = await consume(client, stranger)
    finally:
        running.stop()

    assert body == {"active": False, "reason": "unknown"}
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "token_unknown"


@pytest.mark.parametrize(
    "body", [{"jti": "__JTI__"}, {"device_id": "d1"}, {"event_id": "ev"}], ids=str
)
async def test_revoke_admits_next_waiting(origin_service: Service, body: dict[str, str]) -> None:
    async with origin_service.client() as client:
        await put_event(client, "ev", max_capacity=1)
        first_queue_id = await join(client, "ev", "d1")
        token = (await wait_for_status(client, first_queue_id, "admitted"))["token"]
        second_queue_id = await join(client, "ev", "d2")
        await asyncio.sleep(0.2)
        assert (await client.get(f"/v1/queue/{second_queue_id}")).json()["status"] == "waiting"

        jti = jwt.decode(token, options={"verify_signature": False})["jti"]
        request_body = {key: value.replace("__JTI__", jti) for key, value in body.items()}
        response = await client.post(
            "/admin/tokens/revoke", json=request_body, headers=admin_headers()
        )

        assert response.status_code == 200, response.text
        assert response.json() == {"revoked_tokens": 1, "ended_sessions": 1}
        assert (await introspect(client, token)) == {"active": False, "reason": "revoked"}
        ended = await client.get(f"/v1/queue/{first_queue_id}")
        assert ended.json()["status"] == "left"
        assert ended.json()["token"] is None
        await wait_for_status(client, second_queue_id, "admitted")


async def test_token_routes_require_keys(origin_service: Service) -> None:
    async with origin_service.client() as client:
        missing = await client.post("/v1/tokens/introspect", json={"token": "x"})
        wrong = await client.post(
            "/v1/tokens/consume",
            json={"token": "x"},
            headers={"Authorization": "Bearer not-a-configured-key"},
        )
        origin_on_admin = await client.post(
            "/admin/tokens/revoke", json={"event_id": "ev"}, headers=origin_headers()
        )
        admin_on_origin = await client.post(
            "/v1/tokens/introspect", json={"token": "x"}, headers=admin_headers()
        )

    assert missing.status_code == 401
    assert wrong.status_code == 403
    assert origin_on_admin.status_code == 403
    assert admin_on_origin.status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/tokens/consume", {}, "token"),
        ("/v1/tokens/consume", {"token": 7}, "token"),
        ("/v1/tokens/consume", {"token": "a.b.c", "jti": "j"}, "token"),
        ("/v1/tokens/consume", {"event_id": "ev"}, "token"),
        ("/v1/tokens/consume", {"token": "a.b.c", "extra": 1}, "extra"),
        ("/v1/tokens/introspect", {"token": ""}, "token"),
        ("/v1/tokens/introspect", {"token": "a.b.c", "device_id": "bad id"}, "device_id"),
        ("/admin/tokens/revoke", {}, "jti"),
        ("/admin/tokens/revoke", {"jti": "j", "device_id": "d"}, "device_id"),
        ("/admin/tokens/revoke", {"event_id": "bad id"}, "event_id"),
    ],
)
async def test_token_routes_bad_input_400(
    origin_service: Service, path: str, body: dict[str, Any], field: str
) -> None:
    headers = admin_headers() if path.startswith("/admin") else origin_headers()
    async with origin_service.client() as client:
        response = await client.post(path, json=body, headers=headers)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"].startswith(f"{field}:")


async def test_revoke_unknown_event_404(origin_service: Service) -> None:
    async with origin_service.client() as client:
        response = await client.post(
            "/admin/tokens/revoke", json={"event_id": "missing"}, headers=admin_headers()
        )

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "event_not_found"


async def test_metrics_count_tokens(origin_service: Service) -> None:
    async with origin_service.client() as client:
        await put_event(client, "ev")
        token = await admitted_token(client, "ev", "d1")
        await introspect(client, token)
        await consume(client, token)
        await consume(client, token)
        await introspect(client, "not-a-token")

    assert metric_value(origin_service, "gatekeep_tokens_issued_total", event_id="ev") == 1
    verified = "gatekeep_tokens_verified_total"
    assert metric_value(origin_service, verified, operation="introspect") == 1
    assert metric_value(origin_service, verified, operation="consume") == 1
    rejected = "gatekeep_tokens_rejected_total"
    assert metric_value(origin_service, rejected, operation="consume", reason="consumed") == 1
    assert metric_value(origin_service, rejected, operation="introspect", reason="malformed") == 1


# EdDSA and the JWKS


@pytest.fixture(params=["memory", "redis"])
def eddsa_service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    key_file = tmp_path / "keys.toml"
    key_file.write_text(generate_key_file("EdDSA", kid="eddsa-test"))
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    env = {
        "GATEKEEP_TOKEN_KEYS_FILE": str(key_file),
        "GATEKEEP_TOKEN_SECRET": "",
        "GATEKEEP_ORIGIN_API_KEYS": ORIGIN_KEY,
    }
    running = start_service(redis_url=url, extra_env=env)
    yield running
    running.stop()


async def test_eddsa_token_verifies_with_jwks(eddsa_service: Service) -> None:
    async with eddsa_service.client() as client:
        jwks_response = await client.get("/.well-known/jwks.json")
        await put_event(client, "ev")
        token = await admitted_token(client, "ev", "d1")
        introspected = await introspect(client, token)

    assert jwks_response.status_code == 200
    jwks = jwks_response.json()
    assert [key["kid"] for key in jwks["keys"]] == ["eddsa-test"]
    assert "d" not in jwks["keys"][0]
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": "eddsa-test", "typ": "JWT"}

    # PyJWT alone, with the public key built from the fetched JWK.
    public_key = OKPAlgorithm.from_jwk(jwks["keys"][0])
    claims = jwt.decode(token, public_key, algorithms=["EdDSA"], audience="ev")  # type: ignore[arg-type]
    assert claims["device_id"] == "d1"

    # Gatekeep's own verifier, given the JWKS document.
    assert Verifier(jwks, event_id="ev").verify(token, "d1")["jti"] == claims["jti"]
    assert introspected["active"] is True


async def test_jwks_cache_headers_and_304(eddsa_service: Service) -> None:
    async with eddsa_service.client() as client:
        first = await client.get("/.well-known/jwks.json")
        etag = first.headers["etag"]
        cached = await client.get("/.well-known/jwks.json", headers={"If-None-Match": etag})
        stale = await client.get("/.well-known/jwks.json", headers={"If-None-Match": '"old"'})

    assert first.headers["cache-control"] == "public, max-age=300"
    assert first.headers["content-type"] == "application/json"
    assert etag.startswith('"')
    assert cached.status_code == 304
    assert cached.headers["etag"] == etag
    assert stale.status_code == 200


async def test_jwks_empty_for_hs256(origin_service: Service) -> None:
    async with origin_service.client() as client:
        response = await client.get("/.well-known/jwks.json")

    assert response.status_code == 200
    assert response.json() == {"keys": []}


# Consume hooks for the origin middleware


async def test_asgi_consume_hook_over_http(origin_service: Service) -> None:
    async with origin_service.client() as client:
        await put_event(client, "ev")
        token = await admitted_token(client, "ev", "d1")

    async def origin(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    hook = AsyncConsumeClient(origin_service.base_url, ORIGIN_KEY)
    verifier = Verifier([_hs256_key(origin_service)], event_id="ev")
    app = GatekeepASGIMiddleware(
        origin, verifier=verifier, waiting_room_url="https://queue.test/ev", consume=hook
    )
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://origin") as browser:
            headers = {"Authorization": f"Bearer {token}"}
            first = await browser.get("/", headers=headers)
            second = await browser.get("/", headers=headers)
    finally:
        await hook.aclose()

    assert first.status_code == 200
    assert second.status_code == 403
    assert second.json()["error"]["reason"] == "token_used"


async def test_wsgi_consume_hook_over_http(origin_service: Service) -> None:
    async with origin_service.client() as client:
        await put_event(client, "ev")
        token = await admitted_token(client, "ev", "d1")

    def origin(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    hook = ConsumeClient(origin_service.base_url, ORIGIN_KEY)
    verifier = Verifier([_hs256_key(origin_service)], event_id="ev")
    app = GatekeepWSGIMiddleware(
        origin, verifier=verifier, waiting_room_url="https://queue.test/ev", consume=hook
    )
    try:
        # The sync hook blocks, so the WSGI app runs in a thread while this loop keeps going.
        statuses = []
        for _ in range(2):
            statuses.append(await asyncio.to_thread(_call_wsgi, app, token))
    finally:
        hook.close()

    assert statuses == ["200 OK", "403 Forbidden"]


def _call_wsgi(app: GatekeepWSGIMiddleware, token: str) -> str:
    outcome: list[str] = []
    environ = {"HTTP_AUTHORIZATION": f"Bearer {token}", "QUERY_STRING": ""}
    app(environ, lambda status, headers: outcome.append(status))  # type: ignore[arg-type, return-value]
    return outcome[0]


def _hs256_key(service: Service) -> Any:
    from gatekeep.verify import hs256_key

    return hs256_key(service.env["GATEKEEP_TOKEN_SECRET"])
