"""Webhooks: signatures, validation, failure records, and delivery from a real service.

The receiver is a real HTTP server (Starlette on uvicorn) on a free loopback port in the test's
event loop. Its path chooses its behaviour: `/ok` returns 204, `/fail` 500, `/reject` 400,
`/hang` sleeps longer than the service's request timeout, and `/plan` follows a list of
behaviours, one per request, then returns 204.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conftest import ADMIN_KEY, Service, start_service
from gatekeep.config import ConfigError, load_settings
from gatekeep.errors import InvalidInput
from gatekeep.model import EventConfig, WebhookFailure
from gatekeep.store.base import Store
from gatekeep.webhooks import (
    DELIVERY_HEADER,
    KIND_HEADER,
    SIGNATURE_HEADER,
    WebhookSignatureError,
    backoff_delay_s,
    sign_payload,
    verify_signature,
)

SECRET = "webhook-secret-0123456789abcdefghijklmnopqrstuv"
TIMEOUT_S = 0.5
MAX_ATTEMPTS = 4
BACKOFF_S = 0.1
BACKOFF_MAX_S = 0.4
HANG_S = 5.0

WEBHOOK_ENV = {
    "GATEKEEP_WEBHOOK_SECRET": SECRET,
    "GATEKEEP_WEBHOOK_TIMEOUT_S": str(TIMEOUT_S),
    "GATEKEEP_WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    "GATEKEEP_WEBHOOK_BACKOFF_S": str(BACKOFF_S),
    "GATEKEEP_WEBHOOK_BACKOFF_MAX_S": str(BACKOFF_MAX_S),
}

EVENT = {
    "release_rate": 20.0,
    "max_capacity": 1000,
    "max_queue_size": 1000,
    "session_ttl_s": 60,
    "heartbeat_timeout_s": 30,
}

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


# The receiver


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at_s: float  # time.monotonic() when the request arrived

    @property
    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = orjson.loads(self.body)
        return payload


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that records every request it gets."""

    port: int = 0
    requests: list[Received] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[Received]:
        return [request for request in self.requests if request.path == path]

    async def handle(self, request: Request) -> Response:
        self.requests.append(
            Received(
                path=request.url.path,
                headers=dict(request.headers),
                body=await request.body(),
                at_s=time.monotonic(),
            )
        )
        behaviour = request.url.path.strip("/")
        if behaviour == "plan":
            behaviour = self.plan.pop(0) if self.plan else "ok"
        if behaviour == "hang":
            await asyncio.sleep(HANG_S)
        if behaviour == "fail":
            return Response(status_code=500)
        if behaviour == "reject":
            return Response(status_code=400)
        return Response(status_code=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()
    app = Starlette(
        routes=[Route("/{path:path}", state.handle, methods=["POST"])],
    )
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    state.port = listener.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", ws="none", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        await asyncio.sleep(0.01)
    yield state
    server.should_exit = True
    await task
    listener.close()


# Services


@pytest.fixture(params=["memory", "redis"])
def webhook_service(request: pytest.FixtureRequest) -> Iterator[Service]:
    """A service with fast webhook retries, once on the embedded store and once on Redis."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    running = start_service(redis_url=url, extra_env=WEBHOOK_ENV)
    yield running
    running.stop()


async def put_event(client: httpx.AsyncClient, event_id: str, **fields: Any) -> httpx.Response:
    response = await client.put(
        f"/admin/events/{event_id}", json={**EVENT, **fields}, headers=ADMIN
    )
    assert response.status_code in (200, 201), response.text
    return response


async def join_many(client: httpx.AsyncClient, event_id: str, count: int) -> list[str]:
    queue_ids = []
    for index in range(count):
        response = await client.post(
            f"/v1/events/{event_id}/join", json={"device_id": f"device-{index}"}
        )
        assert response.status_code == 201, response.text
        queue_ids.append(response.json()["queue_id"])
    return queue_ids


async def wait_until(condition: Any, timeout_s: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        await asyncio.sleep(0.05)


async def failures(client: httpx.AsyncClient, event_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/admin/events/{event_id}/webhook-failures", headers=ADMIN)
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()["failures"]
    return records


def metric_value(service: Service, name: str, **labels: str) -> float:
    """Sum the samples of `name` whose labels include `labels`, from the metrics port."""
    port = service.env["GATEKEEP_METRICS_PORT"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        label_text, _, value = line[len(name) + 1 :].rpartition("} ")
        found = dict(
            (part.split("=", 1)[0], part.split("=", 1)[1].strip('"'))
            for part in label_text.split(",")
            if "=" in part
        )
        if all(found.get(key) == wanted for key, wanted in labels.items()):
            total += float(value)
    return total


# Signatures


def test_signature_verifies() -> None:
    body = b'{"kind":"admitted"}'
    header = sign_payload(SECRET, int(time.time()), body)

    timestamp_s = verify_signature(SECRET, header, body, tolerance_s=300)

    assert abs(timestamp_s - time.time()) < 5
    assert header.startswith(f"t={timestamp_s},v1=")


def test_signature_rejects_replayed_old_timestamp() -> None:
    body = b"{}"
    header = sign_payload(SECRET, int(time.time()) - 600, body)

    with pytest.raises(WebhookSignatureError, match="replay"):
        verify_signature(SECRET, header, body, tolerance_s=300)


def test_signature_rejects_future_timestamp() -> None:
    body = b"{}"
    header = sign_payload(SECRET, int(time.time()) + 600, body)

    with pytest.raises(WebhookSignatureError, match="tolerance"):
        verify_signature(SECRET, header, body, tolerance_s=300)


def test_signature_rejects_changed_body() -> None:
    header = sign_payload(SECRET, int(time.time()), b'{"count":1}')

    with pytest.raises(WebhookSignatureError, match="no signature digest matches"):
        verify_signature(SECRET, header, b'{"count":2}', tolerance_s=300)


def test_signature_rejects_other_secret() -> None:
    header = sign_payload("another-secret-0123456789abcdefghijklmnop", int(time.time()), b"{}")

    with pytest.raises(WebhookSignatureError, match="no signature digest matches"):
        verify_signature(SECRET, header, b"{}", tolerance_s=300)


def test_signature_accepts_any_of_several_digests() -> None:
    now_s = int(time.time())
    good = sign_payload(SECRET, now_s, b"{}").rpartition("=")[2]

    header = f"t={now_s},v1={'0' * 64},v1={good}"

    assert verify_signature(SECRET, header, b"{}", tolerance_s=300) == now_s


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("", "malformed"),
        ("v1=abc", "no timestamp"),
        ("t=123", "no v1= digest"),
        ("t=soon,v1=abc", "not a whole number"),
        ("t=123;v1=abc", "not a whole number"),
    ],
)
def test_signature_rejects_malformed_header(header: str, reason: str) -> None:
    with pytest.raises(WebhookSignatureError, match=reason):
        verify_signature(SECRET, header, b"{}", tolerance_s=300)


def test_backoff_delay_within_full_jitter_bounds() -> None:
    rng = random.Random(7)

    for attempt in range(1, 10):
        ceiling_s = min(2.0, 0.1 * 2 ** (attempt - 1))
        delays = [backoff_delay_s(attempt, 0.1, 2.0, rng) for _ in range(200)]
        assert min(delays) >= 0.0
        assert max(delays) <= ceiling_s
        # Full jitter spreads delays over the whole range, not near the ceiling only.
        assert min(delays) < ceiling_s * 0.1
        assert max(delays) > ceiling_s * 0.9


# Validation


def test_webhooks_field_round_trip() -> None:
    config = EventConfig.from_dict(
        {
            "event_id": "ev",
            "webhooks": {"paused": "https://hooks.example/p", "admitted": "http://[::1]:8080/a"},
        }
    )

    assert config.webhooks == (
        ("admitted", "http://[::1]:8080/a"),
        ("paused", "https://hooks.example/p"),
    )
    assert config.to_dict()["webhooks"] == {
        "admitted": "http://[::1]:8080/a",
        "paused": "https://hooks.example/p",
    }
    assert EventConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("webhooks", "field_name", "fix"),
    [
        (["https://hooks.example"], "webhooks", "table of kind -> URL"),
        ({"admited": "https://hooks.example"}, "webhooks.admited", "use one of admitted"),
        ({"admitted": "ftp://hooks.example"}, "webhooks.admitted", "https://host/path"),
        ({"admitted": "hooks.example/path"}, "webhooks.admitted", "https://host/path"),
        ({"admitted": "https://hooks.example:99999/"}, "webhooks.admitted", "https://host/path"),
        ({"admitted": 7}, "webhooks.admitted", "absolute http(s) URL"),
        ({"admitted": "https://hooks.example/#top"}, "webhooks.admitted", "#fragment"),
        ({"admitted": "https://hooks.example/" + "a" * 2048}, "webhooks.admitted", "2048"),
    ],
)
def test_webhooks_field_rejects_bad_value(webhooks: object, field_name: str, fix: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        EventConfig.from_dict({"event_id": "ev", "webhooks": webhooks})

    assert raised.value.field == field_name
    assert fix in raised.value.message


def test_settings_reject_short_webhook_secret() -> None:
    with pytest.raises(ConfigError, match="GATEKEEP_WEBHOOK_SECRET is 5 bytes"):
        load_settings({"GATEKEEP_WEBHOOK_SECRET": "short"})


def test_settings_reject_backoff_max_below_base() -> None:
    environ = {"GATEKEEP_WEBHOOK_BACKOFF_S": "5", "GATEKEEP_WEBHOOK_BACKOFF_MAX_S": "1"}

    with pytest.raises(ConfigError, match="GATEKEEP_WEBHOOK_BACKOFF_MAX_S"):
        load_settings(environ)


def test_events_file_with_webhooks_needs_secret(tmp_path: Path) -> None:
    events_file = tmp_path / "events.toml"
    events_file.write_text(
        '[[events]]\nevent_id = "ev"\n[events.webhooks]\nadmitted = "https://hooks.example/a"\n'
    )

    with pytest.raises(ConfigError, match="GATEKEEP_WEBHOOK_SECRET is missing"):
        load_settings({"GATEKEEP_EVENTS_FILE": str(events_file)})


def test_events_file_webhooks_load_with_secret(tmp_path: Path) -> None:
    events_file = tmp_path / "events.toml"
    events_file.write_text(
        '[[events]]\nevent_id = "ev"\n[events.webhooks]\nadmitted = "https://hooks.example/a"\n'
    )

    settings = load_settings(
        {"GATEKEEP_EVENTS_FILE": str(events_file), "GATEKEEP_WEBHOOK_SECRET": SECRET}
    )

    assert settings.events[0].webhooks == (("admitted", "https://hooks.example/a"),)


# Store


def failure(event_id: str, number: int) -> WebhookFailure:
    return WebhookFailure(
        event_id=event_id,
        delivery_id=f"delivery-{number}",
        kind="admitted",
        url="https://hooks.example #0123abcd",
        attempts=8,
        reason="HTTP 500",
        created_at_ms=1_733_000_000_000 + number,
    )


async def test_webhook_failures_keep_newest_first(store: Store) -> None:
    before_ms = await store.now_ms()

    for number in range(5):
        stored = await store.record_webhook_failure(failure("ev1", number), keep=3)
        assert stored.failed_at_ms >= before_ms

    records = await store.webhook_failures("ev1")
    assert [record.delivery_id for record in records] == ["delivery-4", "delivery-3", "delivery-2"]
    assert records[0] == replace(failure("ev1", 4), failed_at_ms=records[0].failed_at_ms)
    assert await store.webhook_failures("ev2") == []


# Delivery from a running service


async def test_admitted_batches_are_signed_and_counted(
    webhook_service: Service, receiver: Receiver
) -> None:
    async with webhook_service.client() as client:
        await put_event(client, "ev", paused=True, webhooks={"admitted": receiver.url("/ok")})
        queue_ids = await join_many(client, "ev", 12)
        await client.post("/admin/events/ev/resume", headers=ADMIN)

        async def all_counted() -> bool:
            return sum(request.payload["data"]["count"] for request in receiver.requests) >= 12

        await wait_until(all_counted, what="12 admissions reported")

    assert sum(request.payload["data"]["count"] for request in receiver.requests) == 12
    delivery_ids = [request.headers[DELIVERY_HEADER.lower()] for request in receiver.requests]
    assert len(set(delivery_ids)) == len(delivery_ids)
    for request in receiver.requests:
        verify_signature(SECRET, request.headers[SIGNATURE_HEADER.lower()], request.body, 60)
        assert request.headers[KIND_HEADER.lower()] == "admitted"
        assert request.payload["kind"] == "admitted"
        assert request.payload["event_id"] == "ev"
        assert request.payload["id"] == request.headers[DELIVERY_HEADER.lower()]
        for queue_id in queue_ids:
            assert queue_id.encode() not in request.body


async def test_two_workers_send_each_batch_once(redis_url: str, receiver: Receiver) -> None:
    service = start_service(redis_url=redis_url, workers=2, extra_env=WEBHOOK_ENV)
    try:
        async with service.client() as client:
            await put_event(client, "ev", paused=True, webhooks={"admitted": receiver.url("/ok")})
            await join_many(client, "ev", 30)
            await client.post("/admin/events/ev/resume", headers=ADMIN)

            async def all_counted() -> bool:
                return sum(request.payload["data"]["count"] for request in receiver.requests) >= 30

            await wait_until(all_counted, what="30 admissions reported")
            await asyncio.sleep(0.5)
    finally:
        service.stop()

    assert sum(request.payload["data"]["count"] for request in receiver.requests) == 30
    delivery_ids = {request.headers[DELIVERY_HEADER.lower()] for request in receiver.requests}
    assert len(delivery_ids) == len(receiver.requests)


def utc_text(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_schedule_and_stock_transitions_sent_once(
    webhook_service: Service, receiver: Receiver
) -> None:
    hooks = {kind: receiver.url("/ok") for kind in ("opened", "closed", "sold_out")}
    opens_at_s = math.ceil(time.time()) + 2
    async with webhook_service.client() as client:
        await put_event(
            client,
            "scheduled",
            webhooks=hooks,
            opens_at=utc_text(opens_at_s),
            closes_at=utc_text(opens_at_s + 2),
        )
        await put_event(client, "stocked", webhooks=hooks, stock=0)

        def sent() -> list[tuple[str, str]]:
            return [
                (request.payload["event_id"], request.payload["kind"])
                for request in receiver.requests
            ]

        async def all_sent() -> bool:
            return {("scheduled", "closed"), ("stocked", "sold_out")} <= set(sent())

        await wait_until(all_sent, timeout_s=20, what="closed and sold_out")
        await asyncio.sleep(0.5)

    # An event without opens_at also reports "opened", at its first release step.
    assert sorted(set(sent())) == [
        ("scheduled", "closed"),
        ("scheduled", "opened"),
        ("stocked", "opened"),
        ("stocked", "sold_out"),
    ]
    assert len(sent()) == len(set(sent()))
    for request in receiver.requests:
        verify_signature(SECRET, request.headers[SIGNATURE_HEADER.lower()], request.body, 60)


async def test_pause_and_resume_send_once_per_change(
    webhook_service: Service, receiver: Receiver
) -> None:
    hooks = {"paused": receiver.url("/ok"), "resumed": receiver.url("/ok")}
    async with webhook_service.client() as client:
        await put_event(client, "ev", webhooks=hooks)
        await client.post("/admin/events/ev/pause", headers=ADMIN)
        await client.post("/admin/events/ev/pause", headers=ADMIN)
        await client.post("/admin/events/ev/resume", headers=ADMIN)
        await put_event(client, "ev", webhooks=hooks, paused=True)

        async def three_received() -> bool:
            return len(receiver.requests) >= 3

        await wait_until(three_received, what="three pause webhooks")
        await asyncio.sleep(0.5)

    kinds = sorted(request.payload["kind"] for request in receiver.requests)
    assert kinds == ["paused", "paused", "resumed"]
    for request in receiver.requests:
        verify_signature(SECRET, request.headers[SIGNATURE_HEADER.lower()], request.body, 60)
        assert len(request.payload["data"]["key_id"]) == 8


async def test_failing_receiver_retried_until_it_recovers(
    webhook_service: Service, receiver: Receiver
) -> None:
    receiver.plan = ["fail", "hang", "fail"]
    async with webhook_service.client() as client:
        await put_event(client, "ev", webhooks={"paused": receiver.url("/plan")})
        await client.post("/admin/events/ev/pause", headers=ADMIN)

        async def delivered() -> bool:
            return len(receiver.requests) >= 4

        await wait_until(delivered, what="a fourth, successful attempt")
        await asyncio.sleep(0.3)
        recorded = await failures(client, "ev")

    attempts = receiver.requests
    assert len(attempts) == MAX_ATTEMPTS
    assert len({request.headers[DELIVERY_HEADER.lower()] for request in attempts}) == 1
    assert len({request.body for request in attempts}) == 1
    for request in attempts:
        verify_signature(SECRET, request.headers[SIGNATURE_HEADER.lower()], request.body, 60)
    # Each pause is at most the backoff ceiling; the slack covers the 0.5 s timeout of the
    # hanging attempt and scheduling on a loaded machine.
    gaps_s = [later.at_s - earlier.at_s for earlier, later in itertools.pairwise(attempts)]
    ceilings_s = [min(BACKOFF_MAX_S, BACKOFF_S * 2**index) for index in range(len(gaps_s))]
    assert gaps_s[0] <= ceilings_s[0] + 0.5
    assert gaps_s[1] >= TIMEOUT_S
    assert gaps_s[1] <= TIMEOUT_S + ceilings_s[1] + 0.5
    assert gaps_s[2] <= ceilings_s[2] + 0.5
    assert recorded == []
    assert metric_value(webhook_service, "gatekeep_webhook_retries_total", event_id="ev") == 3
    delivered_total = metric_value(
        webhook_service, "gatekeep_webhook_deliveries_total", event_id="ev", outcome="delivered"
    )
    assert delivered_total == 1


async def test_failing_url_recorded_after_last_attempt(
    webhook_service: Service, receiver: Receiver
) -> None:
    url = receiver.url("/fail") + "?token=query-secret-value"
    async with webhook_service.client() as client:
        await put_event(client, "ev", webhooks={"paused": url})
        await client.post("/admin/events/ev/pause", headers=ADMIN)

        async def recorded() -> bool:
            return bool(await failures(client, "ev"))

        await wait_until(recorded, what="a failure record")
        records = await failures(client, "ev")

    assert len(records) == 1
    record = records[0]
    assert record["kind"] == "paused"
    assert record["attempts"] == MAX_ATTEMPTS
    assert record["reason"] == "HTTP 500"
    assert record["url"].startswith(f"http://127.0.0.1:{receiver.port} #")
    assert record["failed_at_ms"] >= record["created_at_ms"]
    assert len(receiver.on("/fail")) == MAX_ATTEMPTS
    assert record["delivery_id"] == receiver.requests[0].headers[DELIVERY_HEADER.lower()]
    failed_total = metric_value(
        webhook_service, "gatekeep_webhook_deliveries_total", event_id="ev", outcome="failed"
    )
    assert failed_total == 1
    log_text = webhook_service.log_path.read_text()
    assert "webhooks.failed" in log_text
    assert "query-secret-value" not in log_text
    assert SECRET not in log_text


async def test_client_error_not_retried(webhook_service: Service, receiver: Receiver) -> None:
    async with webhook_service.client() as client:
        await put_event(client, "ev", webhooks={"paused": receiver.url("/reject")})
        await client.post("/admin/events/ev/pause", headers=ADMIN)

        async def recorded() -> bool:
            return bool(await failures(client, "ev"))

        await wait_until(recorded, what="a failure record")
        records = await failures(client, "ev")

    assert records[0]["attempts"] == 1
    assert records[0]["reason"] == "HTTP 400: the receiver rejected the request"
    assert len(receiver.on("/reject")) == 1


async def test_hanging_url_recorded_as_timed_out(
    webhook_service: Service, receiver: Receiver
) -> None:
    async with webhook_service.client() as client:
        await put_event(client, "ev", webhooks={"paused": receiver.url("/hang")})
        await client.post("/admin/events/ev/pause", headers=ADMIN)

        async def recorded() -> bool:
            return bool(await failures(client, "ev"))

        await wait_until(recorded, what="a failure record")
        records = await failures(client, "ev")

    assert records[0]["reason"] == f"timed out after {TIMEOUT_S} s"
    assert records[0]["attempts"] == MAX_ATTEMPTS


async def test_release_keeps_rate_while_receiver_hangs(
    webhook_service: Service, receiver: Receiver
) -> None:
    users = 40
    rate_per_s = 10.0
    async with webhook_service.client() as client:
        await put_event(
            client,
            "ev",
            paused=True,
            release_rate=rate_per_s,
            webhooks={"admitted": receiver.url("/hang")},
        )
        await join_many(client, "ev", users)
        started_s = time.monotonic()
        await client.post("/admin/events/ev/resume", headers=ADMIN)

        async def all_admitted() -> bool:
            status = (await client.get("/v1/events/ev")).json()
            return bool(status["waiting"] == 0)

        await wait_until(all_admitted, timeout_s=20, what="every user admitted")
        elapsed_s = time.monotonic() - started_s

    expected_s = users / rate_per_s
    assert elapsed_s >= expected_s - 1.5
    assert elapsed_s <= expected_s * 1.5 + 1.0
    assert receiver.on("/hang")


async def test_full_queue_drops_and_counts(receiver: Receiver) -> None:
    service = start_service(extra_env={**WEBHOOK_ENV, "GATEKEEP_WEBHOOK_QUEUE_SIZE": "2"})
    try:
        async with service.client() as client:
            await put_event(client, "ev", paused=True, webhooks={"admitted": receiver.url("/hang")})
            await join_many(client, "ev", 30)
            await client.post("/admin/events/ev/resume", headers=ADMIN)

            async def some_dropped() -> bool:
                return (
                    metric_value(service, "gatekeep_webhook_deliveries_total", outcome="dropped")
                    > 0
                )

            await wait_until(some_dropped, what="a dropped message")
    finally:
        service.stop()

    assert "webhooks.dropped" in service.log_path.read_text()


async def test_put_event_with_webhooks_needs_secret(receiver: Receiver) -> None:
    service = start_service()
    try:
        async with service.client() as client:
            response = await client.put(
                "/admin/events/ev",
                json={**EVENT, "webhooks": {"admitted": receiver.url("/ok")}},
                headers=ADMIN,
            )
            missing = await client.get("/admin/events/ev", headers=ADMIN)
    finally:
        service.stop()

    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("webhooks: GATEKEEP_WEBHOOK_SECRET")
    assert missing.status_code == 404


async def test_webhook_failures_of_unknown_event(webhook_service: Service) -> None:
    async with webhook_service.client() as client:
        response = await client.get("/admin/events/nope/webhook-failures", headers=ADMIN)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "event_not_found"
