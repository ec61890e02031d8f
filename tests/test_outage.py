"""Redis stopped under a running service: 503 with Retry-After, then recovery with no restart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from conftest import RedisServer, start_service
from test_api import join, put_event


async def test_store_outage_503_then_recovers(own_redis: RedisServer) -> None:
    service = start_service(redis_url=own_redis.url)
    try:
        async with service.client() as client:
            await put_event(client, "ev", paused=True)
            queue_id = (await join(client, "ev", "d1")).json()["queue_id"]

            own_redis.stop()
            down_status = await client.get(f"/v1/queue/{queue_id}")
            down_join = await join(client, "ev", "d2")
            down_ready = await client.get("/ready")

            own_redis.start()
            deadline = time.monotonic() + 15
            while (await client.get("/ready")).status_code != 200:
                assert time.monotonic() < deadline, "service did not recover within 15 s"
                await asyncio.sleep(0.2)
            await put_event(client, "ev", paused=True)
            up_join = await join(client, "ev", "d2")
    finally:
        service.stop()

    for response in (down_status, down_join, down_ready):
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["code"] == "store_unavailable"
    assert service.process.returncode in (0, -15)
    assert up_join.status_code == 201


async def test_events_file_events_return_after_redis_loses_data(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    events_file = tmp_path / "events.toml"
    events_file.write_text('[[events]]\nevent_id = "from-file"\nrelease_rate = 2.0\n')
    service = start_service(redis_url=own_redis.url, events_file=events_file)
    try:
        async with service.client() as client:
            assert (await client.get("/v1/events/from-file")).status_code == 200

            own_redis.stop()
            own_redis.start()  # no persistence: the new server is empty
            deadline = time.monotonic() + 15
            while (await client.get("/v1/events/from-file")).status_code != 200:
                assert time.monotonic() < deadline, "the file's event did not come back in 15 s"
                await asyncio.sleep(0.2)
            joined = await join(client, "from-file", "d1")
    finally:
        service.stop()

    assert joined.status_code == 201
    assert "event.recreated event_id=from-file" in service.log_path.read_text()
