"""Automatic pipelining of one Lua script's calls.

Status polls and heartbeats arrive by the thousand per second and each is one EVALSHA. Sent
one by one, every call pays the client's whole per-command path (borrow a pooled connection,
timeouts, retry wrapper, one socket write and one read) and Redis pays one read and one write
system call. `ScriptBatcher` collects the calls that start in the same event-loop turn and
sends them as one non-transactional pipeline on one connection, so those costs are paid once
per batch. Each script still runs atomically on its own; only the transport is shared.

A batch of one is sent as a plain call. A batch that fails on the connection fails every call
in it with the same error, which the store turns into StoreUnavailable, exactly as separate
calls would have failed during the outage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

Call = tuple[Sequence[str | bytes], Sequence[str | int], "asyncio.Future[Any]"]


class ScriptBatcher:
    """Runs one registered script, pipelining the calls made in the same event-loop turn."""

    def __init__(self, client: Redis, script: AsyncScript) -> None:
        self._client = client
        self._script = script
        self._pending: list[Call] = []
        # Flush tasks in flight; kept so that none is garbage-collected while it runs.
        self._flushes: set[asyncio.Task[None]] = set()

    async def __call__(self, keys: Sequence[str | bytes], args: Sequence[str | int]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((keys, args, future))
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _send(self, batch: list[Call]) -> None:
        if len(batch) == 1:
            keys, args, future = batch[0]
            await _settle(future, self._call_one(keys, args))
            return

        pipeline = self._client.pipeline(transaction=False)
        for keys, args, _ in batch:
            pipeline.execute_command("EVALSHA", self._script.sha, len(keys), *keys, *args)
        try:
            replies = await pipeline.execute(raise_on_error=False)
        except Exception as error:  # the batch's connection failed: each call fails with it
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return

        for (keys, args, future), reply in zip(batch, replies, strict=True):
            if isinstance(reply, NoScriptError):
                # Redis lost its scripts (a restart or SCRIPT FLUSH); the plain call loads it.
                await _settle(future, self._call_one(keys, args))
            elif isinstance(reply, Exception):
                if not future.done():
                    future.set_exception(reply)
            elif not future.done():
                future.set_result(reply)

    async def _call_one(self, keys: Sequence[str | bytes], args: Sequence[str | int]) -> Any:
        return await self._script(keys=keys, args=args)


async def _settle(future: asyncio.Future[Any], call: Any) -> None:
    """Await `call` and pass its result or exception to `future`, unless that was cancelled."""
    try:
        result = await call
    except Exception as error:
        if not future.done():
            future.set_exception(error)
        return
    if not future.done():
        future.set_result(result)
