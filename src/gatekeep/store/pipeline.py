"""Batched calls of one Lua script.

Status polls and heartbeats arrive by the thousand per second, and each is one script call.
Sent one by one, every call pays the client's whole per-command path: borrow a pooled
connection, timeouts, retry wrapper, one socket write and one read. The script then reads
again what every call of an event reads alike: the clock, the config, the state and the
counts. `ScriptBatcher` collects the calls that start in the same event-loop turn, groups them
by event, and sends each group as one script call that runs the group's calls in order. The
groups of one turn travel in one non-transactional pipeline.

The batch layout, which a batched script reads with `batch_calls` of common.lua:

- KEYS: the group's shared keys, then each call's own keys, call after call.
- ARGV: the number of shared keys, the number of shared arguments, the shared arguments, then
  for each call: the number of its own keys, the number of its own arguments, and those
  arguments.
- The reply is an array with one reply per call, in call order. A call that failed has an
  error reply in its place and fails alone.

A group runs as one script, so its calls are atomic together and share one clock reading. A
pipeline that fails on the connection fails every call in it with the same error, which the
store turns into StoreUnavailable, exactly as separate calls would have failed in the outage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

# Maximum number of calls in one script call. A larger group is split, so that no script keeps
# Redis busy for long: a touch script of 200 status polls with two limits each ran about 2 ms.
MAX_CALLS_PER_SCRIPT = 200


@dataclass(slots=True)
class _Call:
    keys: Sequence[str | bytes]
    args: Sequence[str | int]
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Group:
    """The calls of one turn that share keys and arguments (one event's calls)."""

    shared_keys: Sequence[str | bytes]
    shared_args: Sequence[str | int]
    calls: list[_Call] = field(default_factory=list)

    def command(self, calls: list[_Call]) -> tuple[list[str | bytes], list[str | int]]:
        """Return the KEYS and ARGV of one script call that runs `calls`."""
        keys: list[str | bytes] = [*self.shared_keys]
        args: list[str | int] = [len(self.shared_keys), len(self.shared_args), *self.shared_args]
        for call in calls:
            keys += call.keys
            args += [len(call.keys), len(call.args), *call.args]
        return keys, args


class ScriptBatcher:
    """Runs one batched script, grouping the calls made in the same event-loop turn."""

    def __init__(self, client: Redis, script: AsyncScript) -> None:
        self._client = client
        self._script = script
        self._groups: dict[Hashable, _Group] = {}
        # Flush tasks in flight; kept so that none is garbage-collected while it runs.
        self._flushes: set[asyncio.Task[None]] = set()

    async def __call__(
        self,
        group: Hashable,
        shared_keys: Sequence[str | bytes],
        shared_args: Sequence[str | int],
        keys: Sequence[str | bytes],
        args: Sequence[str | int],
    ) -> Any:
        """Run one call and return its reply, or raise its error.

        Calls with the same `group` in one turn share one script call, which uses the first
        call's `shared_keys` and `shared_args` for the whole group.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._groups:
            loop.call_soon(self._flush)
        pending = self._groups.get(group)
        if pending is None:
            pending = self._groups[group] = _Group(shared_keys, shared_args)
        pending.calls.append(_Call(keys, args, future))
        return await future

    def _flush(self) -> None:
        groups, self._groups = self._groups, {}
        batches = [
            (group, group.calls[first : first + MAX_CALLS_PER_SCRIPT])
            for group in groups.values()
            for first in range(0, len(group.calls), MAX_CALLS_PER_SCRIPT)
        ]
        task = asyncio.get_running_loop().create_task(self._send(batches))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _send(self, batches: list[tuple[_Group, list[_Call]]]) -> None:
        if len(batches) == 1:
            group, calls = batches[0]
            await self._run_one(group, calls)
            return

        pipeline = self._client.pipeline(transaction=False)
        for group, calls in batches:
            keys, args = group.command(calls)
            pipeline.execute_command("EVALSHA", self._script.sha, len(keys), *keys, *args)
        try:
            replies = await pipeline.execute(raise_on_error=False)
        except Exception as error:  # the pipeline's connection failed: each call fails with it
            for _, calls in batches:
                _fail(calls, error)
            return

        for (group, calls), reply in zip(batches, replies, strict=True):
            if isinstance(reply, NoScriptError):
                # Redis lost its scripts (a restart or SCRIPT FLUSH); the plain call loads it.
                await self._run_one(group, calls)
            elif isinstance(reply, Exception):
                _fail(calls, reply)
            else:
                _settle(calls, reply)

    async def _run_one(self, group: _Group, calls: list[_Call]) -> None:
        """Run one script call on its own; the script object reloads a lost script."""
        keys, args = group.command(calls)
        try:
            reply = await self._script(keys=keys, args=args)
        except Exception as error:
            _fail(calls, error)
            return
        _settle(calls, reply)


def _settle(calls: list[_Call], replies: Any) -> None:
    """Pass each call its reply, or its error when the script put one in its place."""
    if not isinstance(replies, list) or len(replies) != len(calls):
        _fail(calls, TypeError(f"batched script returned {replies!r}; expected one reply per call"))
        return
    for call, reply in zip(calls, replies, strict=True):
        if call.future.done():  # cancelled while the script ran
            continue
        if isinstance(reply, Exception):
            call.future.set_exception(reply)
        else:
            call.future.set_result(reply)


def _fail(calls: list[_Call], error: BaseException) -> None:
    for call in calls:
        if not call.future.done():
            call.future.set_exception(error)
