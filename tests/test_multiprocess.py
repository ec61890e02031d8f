"""Two service processes on one Redis: each user admitted once, the event-wide rate held."""

from __future__ import annotations

import asyncio

import httpx

from conftest import start_service
from test_api import join, put_event

RATE_PER_S = 20.0
USERS = 120


async def test_two_processes_admit_each_user_once(redis_url: str) -> None:
    first = start_service(redis_url=redis_url)
    second = start_service(redis_url=redis_url)
    try:
        async with first.client() as client_a, second.client() as client_b:
            await put_event(
                client_a, "ev", paused=True, release_rate=RATE_PER_S, max_capacity=10_000
            )
            clients = [client_a, client_b]
            joined = await asyncio.gather(
                *(join(clients[index % 2], "ev", f"d{index}") for index in range(USERS))
            )
            queue_ids = [response.json()["queue_id"] for response in joined]

            await client_b.post("/admin/events/ev/resume", headers=first.admin_headers())
            await asyncio.sleep(3.0)
            await client_a.post("/admin/events/ev/pause", headers=first.admin_headers())
            admitted = await admitted_entries(clients, queue_ids)
    finally:
        first.stop()
        second.stop()

    admitted_at_ms = sorted(entry["admitted_at_ms"] for entry in admitted)
    tokens = [entry["token"] for entry in admitted]
    span_s = (admitted_at_ms[-1] - admitted_at_ms[0]) / 1000
    assert len(set(tokens)) == len(tokens)
    # Two processes each ticking every 50 ms must still release 20/s in total, not 40/s.
    assert 50 <= len(admitted) <= 70
    assert (len(admitted) - 1) / span_s <= RATE_PER_S * 1.1


async def admitted_entries(
    clients: list[httpx.AsyncClient], queue_ids: list[str]
) -> list[dict[str, object]]:
    """Read every entry from each process; with the event paused both must agree exactly."""
    views = []
    for client in clients:
        views.append([(await client.get(f"/v1/queue/{queue_id}")).json() for queue_id in queue_ids])
    admitted_by_first = {entry["queue_id"] for entry in views[0] if entry["status"] == "admitted"}
    admitted_by_second = {entry["queue_id"] for entry in views[1] if entry["status"] == "admitted"}
    assert admitted_by_first == admitted_by_second
    return [entry for entry in views[0] if entry["status"] == "admitted"]
