"""The Python SDK: the shared protocol vectors, the place store, and waits on a real service."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ADMIN_KEY, RedisServer, Service, start_service
from gatekeep.client import (
    AsyncQueueClient,
    Backoff,
    EntryExpired,
    EventClosed,
    FilePlaceStore,
    MemoryPlaceStore,
    QueueClient,
    QueueStatus,
    SavedPlace,
    ServiceUnavailable,
    State,
    interpret,
    retry_after_seconds,
)
from test_api import put_event

VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "client_protocol.json").read_text(encoding="utf-8")
)


@pytest.mark.parametrize("vector", VECTORS["responses"], ids=lambda vector: vector["name"])
def test_protocol_vector(vector: dict[str, Any]) -> None:
    retry_after_s = retry_after_seconds(vector.get("retry_after_header"))

    outcome = interpret(vector["call"], vector["http_status"], vector["body"], retry_after_s)

    expect = vector["expect"]
    assert outcome.reason == expect["reason"]
    assert outcome.retry == (expect["action"] == "retry")
    if expect["action"] == "state":
        assert outcome.state == State(expect["state"])
    else:
        assert outcome.retry_after_s == expect["retry_after_s"]


@pytest.mark.parametrize(
    "vector",
    VECTORS["backoff"]["cases"],
    ids=lambda vector: f"attempt{vector['attempt']}-random{vector['random']}",
)
def test_backoff_vector(vector: dict[str, Any]) -> None:
    backoff = Backoff(
        base_s=VECTORS["backoff"]["base_ms"] / 1000, cap_s=VECTORS["backoff"]["cap_ms"] / 1000
    )

    delay_s = backoff.delay_s(vector["attempt"], vector["retry_after_s"], lambda: vector["random"])

    assert round(delay_s * 1000) == vector["expect_delay_ms"]


def test_retry_after_parses_http_date() -> None:
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now_s=1445412480.0) == 10.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_file_place_store_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "places" / "places.json"
    store = FilePlaceStore(path)
    place = SavedPlace(event_id="launch", device_id="py-1", queue_id="q", token=None)

    store.save(place)
    store.save(SavedPlace(event_id="other", device_id="py-2"))

    assert FilePlaceStore(path).load("launch") == place
    assert FilePlaceStore(path).load("missing") is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_file_place_store_ignores_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "places.json"
    path.write_text("{not json")

    assert FilePlaceStore(path).load("launch") is None


# Against a real service


async def admin(service: Service, method: str, path: str) -> None:
    async with service.client() as client:
        response = await client.request(
            method, path, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
        assert response.status_code in (200, 201), response.text


async def create_event(service: Service, event_id: str = "ev", **fields: Any) -> None:
    async with service.client() as client:
        response = await put_event(client, event_id, **fields)
        assert response.status_code in (200, 201), response.text


async def test_async_client_waits_until_admitted(service: Service, tmp_path: Path) -> None:
    await create_event(service, paused=True)
    seen: list[QueueStatus] = []

    async with AsyncQueueClient(
        service.base_url, "ev", store=FilePlaceStore(tmp_path / "places.json")
    ) as client:
        joined = await client.join()
        await admin(service, "POST", "/admin/events/ev/resume")
        admitted = await client.wait(on_status=seen.append, timeout_s=20)

    assert joined.state == State.WAITING
    assert joined.position == 1
    assert admitted.state == State.ADMITTED
    assert admitted.token
    assert admitted.queue_id == joined.queue_id
    assert FilePlaceStore(tmp_path / "places.json").load("ev").token == admitted.token  # type: ignore[union-attr]


def test_sync_client_polls_until_admitted(service: Service, tmp_path: Path) -> None:
    asyncio.run(create_event(service, paused=True))
    with QueueClient(service.base_url, "ev", store=MemoryPlaceStore()) as client:
        joined = client.join()
        asyncio.run(admin(service, "POST", "/admin/events/ev/resume"))
        admitted = client.wait(use_stream=False, timeout_s=20)

    assert joined.state == State.WAITING
    assert admitted.state == State.ADMITTED
    assert admitted.token


async def test_new_client_resumes_saved_place(service: Service, tmp_path: Path) -> None:
    await create_event(service, paused=True)
    path = tmp_path / "places.json"

    async with AsyncQueueClient(service.base_url, "ev", store=FilePlaceStore(path)) as first:
        await first.join()
        other = AsyncQueueClient(service.base_url, "ev", store=MemoryPlaceStore())
        await other.join()
        await other.aclose()
        place_before = first.place

    # A new process: only the file is left.
    async with AsyncQueueClient(service.base_url, "ev", store=FilePlaceStore(path)) as second:
        resumed = await second.join()

    assert resumed.state == State.WAITING
    assert resumed.queue_id == place_before.queue_id
    assert resumed.position == 1


async def test_silent_client_expires_then_rejoins(service: Service) -> None:
    await create_event(service, paused=True, heartbeat_timeout_s=1)
    store = MemoryPlaceStore()
    async with AsyncQueueClient(service.base_url, "ev", store=store) as client:
        joined = await client.join()
        await asyncio.sleep(2.5)  # no heartbeat for longer than the timeout

        expired = await client.refresh()
        saved_after_expiry = store.load("ev")
        rejoined = await client.join()

    assert expired.state == State.EXPIRED
    assert expired.reason == "queue_entry_expired"
    assert saved_after_expiry is not None
    assert saved_after_expiry.queue_id is None
    assert rejoined.state == State.WAITING
    assert rejoined.queue_id != joined.queue_id


def test_expired_status_raises_entry_expired() -> None:
    from gatekeep.client._errors import raise_for_final
    from gatekeep.client._protocol import status_from

    body = {"error": {"code": "queue_entry_expired", "message": "expired"}}
    status = status_from("ev", interpret("status", 410, body), body, "q")

    with pytest.raises(EntryExpired) as raised:
        raise_for_final(status)
    assert raised.value.status.message == "expired"


async def test_join_closed_event_raises(service: Service) -> None:
    await create_event(service, enabled=False)
    async with AsyncQueueClient(service.base_url, "ev", store=MemoryPlaceStore()) as client:
        with pytest.raises(EventClosed) as raised:
            await client.wait(timeout_s=10)

    assert raised.value.status.state == State.CLOSED


async def test_unreachable_service_raises_after_retries() -> None:
    client = AsyncQueueClient(
        "http://127.0.0.1:9",
        "ev",
        store=MemoryPlaceStore(),
        backoff=Backoff(base_s=0.01, cap_s=0.02),
        max_retries=2,
    )
    async with client:
        with pytest.raises(ServiceUnavailable) as raised:
            await client.join()

    assert raised.value.attempts == 3
    assert raised.value.reason == "network_error"


def start_service_on_port(redis_url: str, port: str) -> Service:
    """Start a service on a given port, as a restarted server comes back on its old address."""
    started = start_service(
        redis_url=redis_url, extra_env={"GATEKEEP_PORT": port}, wait_ready=False
    )
    service = Service(f"http://127.0.0.1:{port}", started.process, started.log_path, started.env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(service.base_url + "/health", timeout=1).status_code == 200:
                return service
        except httpx.TransportError:
            time.sleep(0.05)
    service.stop()
    raise AssertionError(f"the restarted service did not answer on port {port} within 20 s")


async def test_wait_survives_service_restart(own_redis: RedisServer, tmp_path: Path) -> None:
    first = start_service(redis_url=own_redis.url)
    port = first.base_url.rsplit(":", 1)[1]
    second: Service | None = None
    try:
        await create_event(first, paused=True, heartbeat_timeout_s=30)
        statuses: list[QueueStatus] = []
        store = FilePlaceStore(tmp_path / "places.json")
        client = AsyncQueueClient(
            first.base_url, "ev", store=store, backoff=Backoff(base_s=0.2, cap_s=1.0)
        )
        waiting = asyncio.create_task(client.wait(on_status=statuses.append, timeout_s=60))
        while not statuses:
            await asyncio.sleep(0.05)
        queue_id = statuses[0].queue_id

        first.stop()
        await asyncio.sleep(1.0)
        second = start_service_on_port(own_redis.url, port)
        await admin(second, "POST", "/admin/events/ev/resume")
        admitted = await asyncio.wait_for(waiting, 40)
        await client.aclose()
    finally:
        first.stop()
        if second is not None:
            second.stop()

    assert admitted.state == State.ADMITTED
    assert admitted.queue_id == queue_id
    assert all(status.queue_id == queue_id for status in statuses)


async def test_stream_yields_statuses(service: Service) -> None:
    await create_event(service, paused=True)
    async with AsyncQueueClient(service.base_url, "ev", store=MemoryPlaceStore()) as client:
        await client.join()
        async for status in client.stream():
            first = status
            break

    assert first.state == State.WAITING
    assert first.event_state == "paused"


def test_client_exports_are_importable() -> None:
    import gatekeep.client as sdk

    for name in sdk.__all__:
        assert hasattr(sdk, name), name
    assert httpx  # the SDK's one HTTP dependency is installed with the package
