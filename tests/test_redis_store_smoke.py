"""Smoke tests of the Redis-specific parts of RedisStore against a real redis-server.

`test_store_behaviour.py` checks the shared semantics on both stores. These cases check what
only Redis has: the stored layout and key expiry, bulk commands split into chunks, driver
errors mapped to StoreUnavailable, startup retries, and scripts reloaded after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from gatekeep.errors import (
    EntryNotFound,
    EventDisabled,
    EventNotFound,
    InvalidInput,
    QueueFull,
    StoreUnavailable,
)
from gatekeep.model import EntryStatus, EventConfig, JoinRequest
from gatekeep.store.keys import EVENTS_KEY, event_keys
from gatekeep.store.redis import RedisStore


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis_process(args: list[str], ready_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start redis-server with `args`; wait until its unix socket or TCP port replies to PING."""
    binary = shutil.which("redis-server")
    assert binary is not None
    process = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL)
    port = int(args[args.index("--port") + 1]) if "--port" in args else None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            family = socket.AF_UNIX if ready_path else socket.AF_INET
            with socket.socket(family) as sock:
                sock.settimeout(0.2)
                sock.connect(str(ready_path) if ready_path else ("127.0.0.1", port))
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return process
        except OSError:
            time.sleep(0.05)
    process.terminate()
    raise RuntimeError(f"redis-server {args} did not reply to PING within 10 s")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def sentinel_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server primary and one Sentinel that monitors it as `main`."""
    primary_port = unused_port()
    sentinel_port = unused_port()
    primary = start_redis_process(
        ["--port", str(primary_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    )
    config_path = tmp_path / "sentinel.conf"
    config_path.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor main 127.0.0.1 {primary_port} 1\n"
    )
    sentinel = start_redis_process([str(config_path), "--sentinel", "--port", str(sentinel_port)])
    yield f"redis+sentinel://127.0.0.1:{sentinel_port}/main/0"
    stop_process(sentinel)
    stop_process(primary)


@pytest.fixture
async def raw_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(redis_url, call_timeout_s=2.0)
    await store.connect(retries=3, backoff_s=0.1)
    yield store
    await store.close()


def join_request(
    event_id: str, device_id: str, bucket: str = "default", user_id: str | None = None
) -> JoinRequest:
    return JoinRequest(
        queue_id=f"q-{device_id}-{time.monotonic_ns()}",
        event_id=event_id,
        device_id=device_id,
        user_id=user_id,
        bucket=bucket,
        token_id=f"t-{device_id}",
        nonce='n/"quoted"',  # JSON escapes must survive the string edits in the scripts
    )


async def test_join_touch_leave_flow(redis_store: RedisStore) -> None:
    store = redis_store
    await store.put_event(EventConfig(event_id="ev"))

    first = await store.join(join_request("ev", "d1", user_id="u1"))
    second = await store.join(join_request("ev", "d2"))
    again = await store.join(join_request("ev", "d1"))

    assert first.created
    assert first.snapshot.position == 1
    assert first.snapshot.entry.status == EntryStatus.WAITING
    assert first.snapshot.entry.user_id == "u1"
    assert first.snapshot.entry.nonce == 'n/"quoted"'
    assert second.snapshot.entry.user_id is None
    assert second.snapshot.position == 2
    assert not again.created
    assert again.snapshot.entry == first.snapshot.entry
    assert again.snapshot.event.waiting_count == 2

    await asyncio.sleep(0.01)
    touched = await store.touch("ev", second.snapshot.entry.queue_id)
    assert touched.entry.last_heartbeat_ms > second.snapshot.entry.last_heartbeat_ms
    assert touched.position == 2

    left = await store.leave("ev", first.snapshot.entry.queue_id)
    assert left.entry.status == EntryStatus.LEFT
    assert left.entry.ended_at_ms == left.event.now_ms
    assert left.entry.nonce == 'n/"quoted"'
    assert left.position is None
    assert left.event.left_total == 1
    assert left.event.waiting_count == 1
    assert (await store.touch("ev", second.snapshot.entry.queue_id)).position == 1


async def test_errors_map_to_gatekeep_errors(redis_store: RedisStore) -> None:
    store = redis_store
    await store.put_event(EventConfig(event_id="off", enabled=False))
    await store.put_event(EventConfig(event_id="tiny", max_queue_size=1, release_rate=0.5))
    await store.put_event(EventConfig(event_id="open"))
    await store.join(join_request("tiny", "d1"))

    with pytest.raises(EventNotFound):
        await store.join(join_request("missing", "d1"))
    with pytest.raises(EventDisabled):
        await store.join(join_request("off", "d1"))
    with pytest.raises(QueueFull) as full:
        await store.join(join_request("tiny", "d2"))
    assert full.value.headers["Retry-After"] == "2"
    with pytest.raises(InvalidInput):
        await store.join(join_request("open", "d3", bucket="vip"))
    with pytest.raises(EntryNotFound):
        await store.touch("tiny", "no-such-queue-id")
    with pytest.raises(EntryNotFound):
        await store.leave("missing", "no-such-queue-id")
    with pytest.raises(EventNotFound):
        await store.release("missing", 10)
    with pytest.raises(EventNotFound):
        await store.set_paused("missing", True)
    with pytest.raises(EventNotFound):
        await store.event_snapshot("missing")


async def test_event_config_round_trip(
    redis_store: RedisStore, raw_client: redis.asyncio.Redis
) -> None:
    store = redis_store
    config = EventConfig(
        event_id="cfg",
        release_rate=0.1,
        session_ttl_s=90.5,
        buckets=("vip", "default"),
        paused=True,
    )

    assert await store.create_event(config)
    assert not await store.create_event(config.with_changes(release_rate=5.0))
    assert await store.get_event("cfg") == config
    assert await store.get_event("nope") is None
    resumed = await store.set_paused("cfg", False)
    assert resumed == config.with_changes(paused=False)

    # An id whose config write never happened is left out of the list.
    await raw_client.sadd(EVENTS_KEY, "dangling")
    assert await store.list_event_ids() == ["cfg"]


async def test_release_above_chunk_size(redis_store: RedisStore) -> None:
    store = redis_store
    config = EventConfig(event_id="ev", release_rate=5000.0, max_capacity=10_000, paused=True)
    await store.put_event(config)
    joins = await asyncio.gather(*(store.join(join_request("ev", f"d{i}")) for i in range(2500)))
    device_of = {j.snapshot.entry.queue_id: j.snapshot.entry.device_id for j in joins}
    await store.set_paused("ev", False)
    await asyncio.sleep(0.7)

    result = await store.release("ev", 3000)

    assert sorted(result.admitted_queue_ids) == sorted(device_of)
    snapshot = await store.event_snapshot("ev")
    assert snapshot.admitted_active == 2500
    assert snapshot.waiting_count == 0
    last_queue_id = result.admitted_queue_ids[-1]
    last = await store.touch("ev", last_queue_id)
    assert last.entry.status == EntryStatus.ADMITTED
    assert last.entry.device_id == device_of[last_queue_id]
    assert last.entry.admitted_at_ms is not None
    assert last.entry.session_expires_at_ms == last.entry.admitted_at_ms + 600_000


async def test_silent_entry_expires_and_device_rejoins(redis_store: RedisStore) -> None:
    store = redis_store
    await store.put_event(EventConfig(event_id="ev", heartbeat_timeout_s=1.0))
    silent = await store.join(join_request("ev", "d1"))
    alive = await store.join(join_request("ev", "d2"))

    await asyncio.sleep(0.6)
    await store.touch("ev", alive.snapshot.entry.queue_id)
    await asyncio.sleep(0.6)
    result = await store.release("ev", 0)

    assert result.expired_waiting == 1
    expired = await store.touch("ev", silent.snapshot.entry.queue_id)
    assert expired.entry.status == EntryStatus.EXPIRED
    assert expired.entry.last_heartbeat_ms == silent.snapshot.entry.last_heartbeat_ms
    assert expired.event.expired_total == 1
    assert (await store.touch("ev", alive.snapshot.entry.queue_id)).position == 1
    rejoined = await store.join(join_request("ev", "d1"))
    assert rejoined.created
    assert rejoined.snapshot.position == 2


async def test_event_keys_expire_but_config_stays(
    redis_store: RedisStore, raw_client: redis.asyncio.Redis
) -> None:
    store = redis_store
    await store.put_event(EventConfig(event_id="ev", session_ttl_s=120.0, heartbeat_timeout_s=30.0))
    joined = await store.join(join_request("ev", "d1"))
    await store.leave("ev", joined.snapshot.entry.queue_id)
    await store.join(join_request("ev", "d2"))
    keys = event_keys("ev")

    assert await raw_client.ttl(keys.config) == -1
    assert await raw_client.ttl(EVENTS_KEY) == -1
    for key in keys.as_list()[1:]:
        if await raw_client.exists(key):
            ttl_s = await raw_client.ttl(key)
            assert 3600 < ttl_s <= 3720, key


async def test_scripts_reload_after_restart(own_redis: Any) -> None:
    store = RedisStore.from_url(own_redis.url, call_timeout_s=1.0)
    await store.connect()
    await store.put_event(EventConfig(event_id="ev"))

    own_redis.stop()
    with pytest.raises(StoreUnavailable) as raised:
        await store.event_snapshot("ev")
    assert raised.value.__cause__ is not None
    own_redis.start()

    try:
        # The restarted server has no scripts, so this takes the NOSCRIPT path.
        await store.put_event(EventConfig(event_id="ev"))
        joined = await store.join(join_request("ev", "d1"))
        assert joined.created
    finally:
        await store.close()


async def test_connect_gives_up_after_retries(caplog: pytest.LogCaptureFixture) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{unused_port()}/0", call_timeout_s=0.5)
    caplog.set_level(logging.WARNING, logger="gatekeep.store.redis")

    with pytest.raises(StoreUnavailable):
        await store.connect(retries=2, backoff_s=0.01)
    await store.close()

    retries = [r.getMessage() for r in caplog.records if "connect_retry" in r.getMessage()]
    assert len(retries) == 2
    assert "remaining=1" in retries[1]


async def test_unix_socket_url(tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    server = start_redis_process(
        ["--port", "0", "--unixsocket", str(socket_path), "--save", "", "--appendonly", "no"],
        ready_path=socket_path,
    )
    store = RedisStore.from_url(f"unix://{socket_path}?db=0")
    try:
        await store.connect(retries=1, backoff_s=0.1)
        await store.put_event(EventConfig(event_id="ev"))
        assert (await store.join(join_request("ev", "d1"))).created
    finally:
        await store.close()
        stop_process(server)


async def test_sentinel_url(sentinel_url: str) -> None:
    store = RedisStore.from_url(sentinel_url)
    try:
        await store.connect(retries=3, backoff_s=0.1)
        await store.put_event(EventConfig(event_id="ev"))
        assert (await store.join(join_request("ev", "d1"))).created
        assert await store.list_event_ids() == ["ev"]
    finally:
        await store.close()
