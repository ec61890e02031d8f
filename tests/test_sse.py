"""Live updates: the batched `Store.watch` on both stores and the SSE endpoint of a real service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from conftest import Service, start_service
from gatekeep.errors import EventNotFound
from gatekeep.model import EntryStatus
from gatekeep.store.base import Store
from test_api import join, put_event
from test_store_behaviour import join_many, make_event

# Store behaviour: watch


async def test_watch_reports_positions_in_order(store: Store) -> None:
    await make_event(store, paused=True)
    queue_ids = await join_many(store, "ev1", 3)

    result = await store.watch("ev1", list(reversed(queue_ids)))

    assert [watched.queue_id for watched in result.entries] == list(reversed(queue_ids))
    assert [watched.position for watched in result.entries] == [3, 2, 1]
    assert all(watched.status == EntryStatus.WAITING for watched in result.entries)
    assert result.event.waiting_count == 3


async def test_watch_unknown_id_has_no_status(store: Store) -> None:
    await make_event(store, paused=True)
    queue_ids = await join_many(store, "ev1", 1)
    unknown = queue_ids[0][:-3] + "xyz"

    result = await store.watch("ev1", [unknown, queue_ids[0]])

    assert result.entries[0].status is None
    assert result.entries[0].entry is None
    assert result.entries[1].position == 1


async def test_watch_admitted_entry_carries_entry(store: Store) -> None:
    await make_event(store, release_rate=100.0)
    queue_ids = await join_many(store, "ev1", 2)
    await asyncio.sleep(0.05)
    await store.release("ev1", 10)

    result = await store.watch("ev1", queue_ids)

    first = result.entries[0]
    assert first.status == EntryStatus.ADMITTED
    assert first.position is None
    assert first.entry is not None
    assert first.entry.admitted_at_ms is not None
    assert first.entry.token_id


async def test_watch_counts_as_heartbeat(store: Store) -> None:
    await make_event(store, paused=True, heartbeat_timeout_s=1)
    queue_ids = await join_many(store, "ev1", 2)

    # Only the first entry is watched; the second one goes silent and expires.
    for _ in range(6):
        await asyncio.sleep(0.25)
        await store.watch("ev1", queue_ids[:1])

    result = await store.watch("ev1", queue_ids)
    assert result.entries[0].status == EntryStatus.WAITING
    assert result.entries[1].status == EntryStatus.EXPIRED


async def test_watch_left_entry_reports_left(store: Store) -> None:
    await make_event(store, paused=True)
    queue_ids = await join_many(store, "ev1", 2)
    await store.leave("ev1", queue_ids[0])

    result = await store.watch("ev1", queue_ids)

    assert result.entries[0].status == EntryStatus.LEFT
    assert result.entries[1].position == 1


async def test_watch_unknown_event_raises(store: Store) -> None:
    with pytest.raises(EventNotFound):
        await store.watch("missing", ["a" * 22 + ".missing"])


async def test_watch_many_entries_one_call(store: Store) -> None:
    await make_event(store, paused=True)
    queue_ids = await join_many(store, "ev1", 2500)

    result = await store.watch("ev1", queue_ids)

    assert [watched.position for watched in result.entries] == list(range(1, 2501))


# The SSE endpoint


async def read_events(
    response: httpx.Response, until: str = "end", limit_s: float = 10
) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """Yield (kind, fields) for each SSE message: kind is `comment`, `retry` or the event name."""
    buffer = ""
    deadline = time.monotonic() + limit_s
    async for chunk in response.aiter_text():
        buffer += chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            fields: dict[str, str] = {}
            for line in block.split("\n"):
                if line.startswith(":"):
                    yield "comment", {"text": line[1:].strip()}
                    continue
                name, _, value = line.partition(": ")
                fields[name] = value
            if "event" in fields:
                yield fields["event"], fields
            elif "retry" in fields:
                yield "retry", fields
        if time.monotonic() > deadline:
            raise AssertionError(f"no '{until}' event within {limit_s} s")


def data(fields: dict[str, str]) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(fields["data"])
    return parsed


@pytest.fixture(params=["memory", "redis"])
def fast_service(request: pytest.FixtureRequest) -> Any:
    """A service whose stream hub ticks every 100 ms and sends keep-alives every second."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    running = start_service(
        redis_url=url,
        extra_env={"GATEKEEP_STREAM_TICK_MS": "100", "GATEKEEP_STREAM_HEARTBEAT_S": "1"},
    )
    yield running
    running.stop()


async def test_stream_pushes_position_then_admission(fast_service: Service) -> None:
    async with fast_service.client() as client:
        await put_event(client, "ev", paused=True, release_rate=2.0)
        first = (await join(client, "ev", "d1")).json()
        second = (await join(client, "ev", "d2")).json()

        seen: list[tuple[str, dict[str, Any]]] = []
        async with client.stream("GET", f"/v1/queue/{second['queue_id']}/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for kind, fields in read_events(response, limit_s=15):
                if kind == "retry":
                    assert int(fields["retry"]) >= 1000
                    continue
                if kind == "comment":
                    continue
                seen.append((kind, data(fields)))
                if kind == "status" and len(seen) == 1:
                    await client.delete(f"/v1/queue/{first['queue_id']}")
                    await client.post(
                        "/admin/events/ev/resume", headers=fast_service.admin_headers()
                    )
                if kind == "end":
                    break

    statuses = [body for kind, body in seen if kind == "status"]
    assert statuses[0]["position"] == 2
    assert statuses[0]["event"]["state"] == "paused"
    assert statuses[-1]["status"] == "admitted"
    assert statuses[-1]["token"]
    assert seen[-1] == ("end", {"status": "admitted"})


async def test_stream_sends_keep_alive_comments(fast_service: Service) -> None:
    async with fast_service.client() as client:
        await put_event(client, "ev", paused=True)
        entry = (await join(client, "ev", "d1")).json()

        comments = 0
        async with client.stream("GET", f"/v1/queue/{entry['queue_id']}/events") as response:
            async for kind, _ in read_events(response, limit_s=10):
                if kind == "comment":
                    comments += 1
                    if comments == 2:
                        break

    assert comments == 2


async def test_stream_resume_skips_unchanged_state(fast_service: Service) -> None:
    async with fast_service.client() as client:
        await put_event(client, "ev", paused=True)
        entry = (await join(client, "ev", "d1")).json()
        url = f"/v1/queue/{entry['queue_id']}/events"

        async with client.stream("GET", url) as response:
            async for kind, fields in read_events(response):
                if kind == "status":
                    tag = fields["id"]
                    break

        kinds: list[str] = []
        async with client.stream("GET", url, headers={"Last-Event-ID": tag}) as response:
            async for kind, _ in read_events(response):
                kinds.append(kind)
                if kind == "comment":
                    break

    assert kinds == ["retry", "comment"]


async def test_stream_keeps_entry_alive(fast_service: Service) -> None:
    async with fast_service.client() as client:
        await put_event(client, "ev", paused=True, heartbeat_timeout_s=1)
        watched = (await join(client, "ev", "d1")).json()
        silent = (await join(client, "ev", "d2")).json()

        async with client.stream("GET", f"/v1/queue/{watched['queue_id']}/events") as response:
            started = time.monotonic()
            async for _ in read_events(response):
                if time.monotonic() - started > 2.5:
                    break

        watched_after = await client.get(f"/v1/queue/{watched['queue_id']}")
        silent_after = await client.get(f"/v1/queue/{silent['queue_id']}")

    assert watched_after.status_code == 200
    assert watched_after.json()["position"] == 1
    assert silent_after.status_code == 410


async def test_stream_unknown_entry_answers_404(fast_service: Service) -> None:
    async with fast_service.client() as client:
        await put_event(client, "ev", paused=True)
        response = await client.get("/v1/queue/" + "a" * 22 + ".ev/events")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "queue_entry_not_found"


async def test_stream_limit_answers_503() -> None:
    service = start_service(extra_env={"GATEKEEP_STREAM_MAX_CONNECTIONS": "1"})
    try:
        async with service.client() as client:
            await put_event(client, "ev", paused=True)
            entry = (await join(client, "ev", "d1")).json()
            url = f"/v1/queue/{entry['queue_id']}/events"
            async with client.stream("GET", url) as first:
                assert first.status_code == 200
                second = await client.get(url)
    finally:
        service.stop()

    assert second.status_code == 503
    assert second.json()["error"]["code"] == "stream_limit_reached"
    assert int(second.headers["retry-after"]) >= 1


async def test_stream_ends_on_service_stop(fast_service: Service) -> None:
    async with fast_service.client() as client:
        await put_event(client, "ev", paused=True)
        entry = (await join(client, "ev", "d1")).json()

        async with client.stream("GET", f"/v1/queue/{entry['queue_id']}/events") as response:
            async for kind, _ in read_events(response):
                if kind == "status":
                    break
            started = time.monotonic()
            fast_service.process.terminate()
            fast_service.process.wait(timeout=8)

    # uvicorn re-raises SIGTERM after a graceful stop, so the exit status says nothing; the
    # log line written after the app shut down does.
    assert time.monotonic() - started < 8
    assert any("service.stop" in line for line in fast_service.log_lines())
