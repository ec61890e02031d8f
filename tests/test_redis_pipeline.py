"""Automatic pipelining of touch calls, the config cache of touch replies, and the per-script
pruning of the Lua prelude."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from conftest import RedisServer
from gatekeep.model import EventConfig, JoinRequest
from gatekeep.queue import new_queue_id
from gatekeep.store.pipeline import ScriptBatcher
from gatekeep.store.redis import RedisStore
from gatekeep.store.scripts import REST_OF_PRELUDE, prune_prelude, script_source

ECHO = """
if ARGV[1] == 'bad' then
  return redis.error_reply('bad argument')
end
return ARGV[1]
"""


class CountingPipelines:
    """Counts the pipelines a client opens, by wrapping `Redis.pipeline`."""

    def __init__(self, client: Redis) -> None:
        self.count = 0
        self._open = client.pipeline
        client.pipeline = self.open  # type: ignore[method-assign]

    def open(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        self.count += 1
        return self._open(transaction=transaction, shard_hint=shard_hint)


async def test_concurrent_calls_share_one_pipeline(redis_url: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    pipelines = CountingPipelines(client)
    batcher = ScriptBatcher(client, client.register_script(ECHO))
    try:
        replies = await asyncio.gather(*(batcher(["k"], [f"v{index}"]) for index in range(50)))
    finally:
        await client.aclose()

    assert replies == [f"v{index}" for index in range(50)]
    assert pipelines.count == 1


async def test_one_failing_call_fails_alone(redis_url: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    batcher = ScriptBatcher(client, client.register_script(ECHO))
    try:
        replies = await asyncio.gather(
            batcher(["k"], ["a"]),
            batcher(["k"], ["bad"]),
            batcher(["k"], ["c"]),
            return_exceptions=True,
        )
    finally:
        await client.aclose()

    assert replies[0] == "a"
    assert replies[2] == "c"
    assert isinstance(replies[1], ResponseError)


async def test_scripts_reload_after_a_flush(redis_url: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    batcher = ScriptBatcher(client, client.register_script(ECHO))
    try:
        await batcher(["k"], ["warm"])
        await client.script_flush()
        replies = await asyncio.gather(*(batcher(["k"], [str(index)]) for index in range(10)))
    finally:
        await client.aclose()

    assert replies == [str(index) for index in range(10)]


async def test_outage_fails_every_call_in_the_batch(own_redis: RedisServer) -> None:
    client = Redis.from_url(own_redis.url, decode_responses=True, socket_timeout=1.0)
    batcher = ScriptBatcher(client, client.register_script(ECHO))
    try:
        await batcher(["k"], ["warm"])
        own_redis.stop()
        replies = await asyncio.gather(
            *(batcher(["k"], [str(index)]) for index in range(5)), return_exceptions=True
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


def test_touch_defines_its_fast_path_helpers_first() -> None:
    source = script_source("touch")
    rest_at = source.index(REST_OF_PRELUDE)

    assert source.index("local function load_config") < rest_at
    assert source.index("local function purge_due") < rest_at
    assert source.index("local function purge(") > rest_at
    assert "sha256_hex" not in source
    assert "local function sha256_hex" in script_source("release")


@pytest.mark.parametrize("name", ["touch", "join", "release", "leave", "watch"])
async def test_pruned_scripts_compile(redis_url: str, name: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        sha = await client.script_load(script_source(name))
    finally:
        await client.aclose()

    assert len(sha) == 40


async def test_touch_reads_a_config_dropped_from_its_cache(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url)
    await store.connect()
    try:
        await store.put_event(EventConfig.from_dict({"event_id": "ev", "release_rate": 3.0}))
        request = JoinRequest(
            queue_id=new_queue_id("ev"),
            event_id="ev",
            device_id="d1",
            user_id=None,
            bucket="default",
            token_id="t" * 22,
            nonce="n" * 16,
        )
        queue_id = (await store.join(request)).snapshot.entry.queue_id
        await store.touch("ev", queue_id)  # the reply carries the document, now cached
        store._config_documents.clear()  # as when the cache starts over mid-call
        snapshot = await store.touch("ev", queue_id)
    finally:
        await store.close()

    assert snapshot.event.config.release_rate == 3.0
