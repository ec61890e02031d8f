"""Baseline app: the least an HTTP endpoint backed by one Redis script call can do.

`GET /` runs one EVALSHA of a trivial Lua script and returns a small JSON body rendered with
orjson. It runs under the same uvicorn settings as the service, so the service's throughput
divided by this one is the share left after Gatekeep's own work (routing, middleware,
validation, the larger scripts, decoding, rendering).

Environment:
    BENCH_REDIS_URL     redis://host:port[/db] (required)
    BENCH_REDIS_CLIENT  redis-py (default) or glide (valkey-glide)
    BENCH_POOL_SIZE     redis-py connection pool size (default 64, the service's default)

Run: uvicorn --app-dir bench baseline_app:app --workers 2
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SCRIPT_SOURCE = "return ARGV[1]"
SCRIPT_KEY = "bench:baseline"
SCRIPT_ARG = "ok"


class ScriptRunner(Protocol):
    """One Redis client that runs the baseline script."""

    async def run(self) -> Any: ...

    async def close(self) -> None: ...


class RedisPyRunner:
    """redis-py asyncio with hiredis and a blocking pool, as `RedisStore.from_url` builds it."""

    def __init__(self, url: str, pool_size: int) -> None:
        from redis.asyncio import BlockingConnectionPool, Redis

        pool = BlockingConnectionPool.from_url(
            url, max_connections=pool_size, timeout=2.0, decode_responses=True
        )
        self._client = Redis.from_pool(pool)
        # register_script calls EVALSHA and loads the script only after a NOSCRIPT reply.
        self._script = self._client.register_script(SCRIPT_SOURCE)

    async def run(self) -> Any:
        return await self._script(keys=[SCRIPT_KEY], args=[SCRIPT_ARG])

    async def close(self) -> None:
        await self._client.aclose()


class GlideRunner:
    """valkey-glide: one multiplexed connection driven by the client's Rust core."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: Any = None
        self._script: Any = None

    async def start(self) -> None:
        from glide import GlideClient, GlideClientConfiguration, NodeAddress, Script

        parts = urlsplit(self._url)
        database_id = int(parts.path.strip("/") or 0)
        config = GlideClientConfiguration(
            [NodeAddress(parts.hostname or "127.0.0.1", parts.port or 6379)],
            database_id=database_id,
            request_timeout=2000,
        )
        self._client = await GlideClient.create(config)
        # invoke_script sends EVALSHA and loads the script only when Redis lacks it.
        self._script = Script(SCRIPT_SOURCE)  # type: ignore[no-untyped-call]

    async def run(self) -> Any:
        return await self._client.invoke_script(self._script, keys=[SCRIPT_KEY], args=[SCRIPT_ARG])

    async def close(self) -> None:
        await self._client.close()


async def build_runner() -> ScriptRunner:
    url = os.environ["BENCH_REDIS_URL"]
    client_name = os.environ.get("BENCH_REDIS_CLIENT", "redis-py")
    if client_name == "redis-py":
        return RedisPyRunner(url, int(os.environ.get("BENCH_POOL_SIZE", "64")))
    if client_name == "glide":
        runner = GlideRunner(url)
        await runner.start()
        return runner
    raise ValueError(f"BENCH_REDIS_CLIENT={client_name!r} is invalid; use redis-py or glide")


def decode(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.runner = await build_runner()
    try:
        yield
    finally:
        await app.state.runner.close()


async def evalsha_endpoint(request: Request) -> Response:
    value = await request.app.state.runner.run()
    body = orjson.dumps({"status": "ok", "value": decode(value)})
    return Response(body, media_type="application/json")


app = Starlette(routes=[Route("/", evalsha_endpoint, methods=["GET"])], lifespan=lifespan)
