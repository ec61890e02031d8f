"""Batched touch calls, the config cache of touch replies, and the per-script pruning of the
Lua prelude."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from conftest import RedisServer, join_request
from gatekeep.model import EventConfig
from gatekeep.store.keys import rate_limit_key
from gatekeep.store.pipeline import MAX_CALLS_PER_SCRIPT, ScriptBatcher
from gatekeep.store.redis import RedisStore, _touch_keys
from gatekeep.store.scripts import assemble, prune_prelude, script_source

# A batched script that replies SHARED:ARG:KEY to each call, or an error to the argument 'bad'.
ECHO = assemble(
    """
local shared, calls = batch_calls()
local replies = {}
for i, call in ipairs(calls) do
  if call.args[1] == 'bad' then
    replies[i] = redis.error_reply('bad argument')
  else
    replies[i] = shared[1] .. ':' .. call.args[1] .. ':' .. (call.keys[1] or '')
  end
end
return replies
"""
)


class CountingPipelines:
    """Counts the pipelines a client opens, by wrapping `Redis.pipeline`."""

    def __init__(self, client: Redis) -> None:
        self.count = 0
        self._open = client.pipeline
        client.pipeline = self.open  # type: ignore[method-assign]

    def open(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        self.count += 1
        return self._open(transaction=transaction, shard_hint=shard_hint)


async def run_counted(
    url: str, make_calls: Callable[[ScriptBatcher], list[Awaitable[Any]]]
) -> tuple[list[Any], int, int]:
    """Run the batcher calls of `make_calls` concurrently, after one call that loads ECHO.

    Returns their replies, how many script calls Redis ran for them and how many pipelines
    the client opened.
    """
    client = Redis.from_url(url, decode_responses=True)
    batcher = ScriptBatcher(client, client.register_script(ECHO))
    try:
        await batcher("warm", [], ["s"], [], ["x"])
        await client.config_resetstat()
        pipelines = CountingPipelines(client)
        replies = await asyncio.gather(*make_calls(batcher))
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    script_calls = sum(
        stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval")
    )
    return replies, script_calls, pipelines.count


async def test_calls_of_one_group_share_one_script_call(own_redis: RedisServer) -> None:
    replies, script_calls, _ = await run_counted(
        own_redis.url,
        lambda batcher: [
            batcher("g", ["s"], ["one"], [f"k{index}"], [f"v{index}"]) for index in range(50)
        ],
    )

    assert replies == [f"one:v{index}:k{index}" for index in range(50)]
    assert script_calls == 1


async def test_groups_of_one_turn_share_one_pipeline(own_redis: RedisServer) -> None:
    replies, script_calls, pipelines = await run_counted(
        own_redis.url,
        lambda batcher: [
            batcher("a", ["sa"], ["A"], ["k1"], ["1"]),
            batcher("b", ["sb"], ["B"], ["k2"], ["2"]),
            batcher("a", ["sa"], ["ignored, the group's first call decides"], ["k3"], ["3"]),
        ],
    )

    assert replies == ["A:1:k1", "B:2:k2", "A:3:k3"]
    assert pipelines == 1
    assert script_calls == 2


async def test_large_group_is_split(own_redis: RedisServer) -> None:
    count = 2 * MAX_CALLS_PER_SCRIPT + 1
    replies, script_calls, _ = await run_counted(
        own_redis.url,
        lambda batcher: [batcher("g", ["s"], ["s"], [], [str(index)]) for index in range(count)],
    )

    assert replies == [f"s:{index}:" for index in range(count)]
    assert script_calls == 3


async def test_one_failing_call_fails_alone(redis_url: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    batcher = ScriptBatcher(client, client.register_script(ECHO))
    try:
        replies = await asyncio.gather(
            batcher("g", [], ["s"], [], ["a"]),
            batcher("g", [], ["s"], [], ["bad"]),
            batcher("g", [], ["s"], [], ["c"]),
            return_exceptions=True,
        )
    finally:
        await client.aclose()

    assert replies[0] == "s:a:"
    assert replies[2] == "s:c:"
    assert isinstance(replies[1], ResponseError)


async def test_touch_call_that_raises_fails_alone(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url)
    await store.connect()
    try:
        await store.put_event(EventConfig(event_id="ev"))
        queue_id = await join(store, "ev", "d1")
        client = Redis.from_url(redis_url, decode_responses=True)
        batcher = ScriptBatcher(client, client.register_script(script_source("touch")))
        keys = _touch_keys("ev")
        limit_key = rate_limit_key("ev", "status.device", "x")
        replies = await asyncio.gather(
            batcher("ev", keys, [""], [limit_key], [queue_id, "0", "5", "60000"]),
            batcher("ev", keys, [""], [limit_key], [queue_id, "0", "not a number", "60000"]),
            batcher("ev", keys, [""], [limit_key], [queue_id, "0", "5", "60000"]),
            return_exceptions=True,
        )
        stored = await client.get(limit_key)
        await client.aclose()
    finally:
        await store.close()

    assert replies[0][0] == "ok"
    assert isinstance(replies[1], ResponseError)
    assert replies[2][0] == "ok"
    assert stored is not None and stored.endswith(" 2 0")  # the failed call was not counted


async def test_touch_batch_sends_document_once(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url)
    await store.connect()
    try:
        await store.put_event(EventConfig(event_id="ev"))
        queue_ids = [await join(store, "ev", f"d{index}") for index in range(3)]
        client = Redis.from_url(redis_url, decode_responses=True)
        batcher = ScriptBatcher(client, client.register_script(script_source("touch")))
        keys = _touch_keys("ev")
        replies = await asyncio.gather(
            *(batcher("ev", keys, [""], [], [queue_id, "0"]) for queue_id in queue_ids)
        )
        await client.aclose()
        snapshots = await asyncio.gather(*(store.touch("ev", queue_id) for queue_id in queue_ids))
    finally:
        await store.close()

    documents = [reply[2][0][0] for reply in replies]  # the config reply of each snapshot
    assert documents[0] is not None
    assert documents[1:] == [None, None]
    assert [snapshot.position for snapshot in snapshots] == [1, 2, 3]
    assert all(snapshot.event.config.event_id == "ev" for snapshot in snapshots)


async def test_scripts_reload_after_a_flush(redis_url: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    batcher = ScriptBatcher(client, client.register_script(ECHO))
    try:
        await batcher("g", [], ["s"], [], ["warm"])
        await client.script_flush()
        replies = await asyncio.gather(
            *(batcher(f"g{index % 2}", [], ["s"], [], [str(index)]) for index in range(10))
        )
    finally:
        await client.aclose()

    assert replies == [f"s:{index}:" for index in range(10)]


async def test_outage_fails_every_call_in_the_batch(own_redis: RedisServer) -> None:
    client = Redis.from_url(own_redis.url, decode_responses=True, socket_timeout=1.0)
    batcher = ScriptBatcher(client, client.register_script(ECHO))
    try:
        await batcher("g", [], ["s"], [], ["warm"])
        own_redis.stop()
        replies = await asyncio.gather(
            *(batcher(f"g{index % 2}", [], ["s"], [], [str(index)]) for index in range(5)),
            return_exceptions=True,
        )
    finally:
        await client.aclose()

    assert all(isinstance(reply, RedisConnectionError) for reply in replies)


def test_prune_keeps_what_the_code_reaches() -> None:
    prelude = "\n".join(
        [
            "local LIMIT = 3",
            "-- Adds one.",
            "local function one(x)",
            "  return x + 1",
            "end",
            "local function two(x)",
            "  return one(one(x)) + LIMIT",
            "end",
            "local function unused()",
            "  return 0",
            "end",
            "local TABLE = {",
            "  'a',",
            "}",
            "redis.setresp(2)",
        ]
    )

    pruned = prune_prelude(prelude, "return two(1)")

    assert "local function one" in pruned
    assert "-- Adds one." in pruned
    assert "local function two" in pruned
    assert "local LIMIT" in pruned
    assert "unused" not in pruned
    assert "TABLE" not in pruned
    assert "redis.setresp(2)" in pruned  # statements that define nothing always stay


def test_scripts_define_only_what_they_reach() -> None:
    assert "local function sha256_hex" not in script_source("touch")
    assert "local function sha256_hex" in script_source("release")
    assert "local function batch_calls" in script_source("touch")


@pytest.mark.parametrize("name", ["touch", "join", "release", "leave", "watch"])
async def test_pruned_scripts_compile(redis_url: str, name: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        sha = await client.script_load(script_source(name))
    finally:
        await client.aclose()

    assert len(sha) == 40


async def join(store: RedisStore, event_id: str, device_id: str) -> str:
    return (await store.join(join_request(event_id, device_id))).snapshot.entry.queue_id


async def test_touch_reads_a_config_dropped_from_its_cache(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url)
    await store.connect()
    try:
        await store.put_event(EventConfig.from_dict({"event_id": "ev", "release_rate": 3.0}))
        queue_id = await join(store, "ev", "d1")
        await store.touch("ev", queue_id)  # the reply carries the document, now cached
        store._config_documents.clear()  # as when the cache starts over mid-call
        snapshot = await store.touch("ev", queue_id)
    finally:
        await store.close()

    assert snapshot.event.config.release_rate == 3.0
