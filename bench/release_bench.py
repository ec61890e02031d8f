"""Measure how many admissions per second the release step sustains for one event.

The event is created paused, filled with waiting entries through `RedisStore.join`, then
resumed. From the resume on, admissions are counted for a fixed window on the Redis clock
(the `admitted_total` and `now_ms` of two event snapshots). Releases come either from a
`ReleaseLoop` in this process (`--mode loop`) or from a running service that shares the
Redis database (`--mode external`).

Prints one JSON object on standard output.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
import time
from typing import Any

import orjson

from gatekeep.config import Settings
from gatekeep.model import EventConfig, JoinRequest
from gatekeep.release import ReleaseLoop
from gatekeep.store.redis import RedisStore

PREFILL_CONCURRENCY = 64
# Large enough that neither the queue size nor the capacity limits the measured rate.
MAX_QUEUE_SIZE = 10_000_000
MAX_CAPACITY = 10_000_000
# Long enough that no entry or session expires during a run.
LONG_TTL_S = 86_400.0


def join_request(event_id: str, index: int, run_id: str) -> JoinRequest:
    """Build a join with ids in the service's format (16 random bytes, a dot, the event id)."""
    return JoinRequest(
        queue_id=f"{secrets.token_urlsafe(16)}.{event_id}",
        event_id=event_id,
        device_id=f"prefill-{run_id}-{index}",
        user_id=None,
        bucket="default",
        token_id=secrets.token_urlsafe(16),
        nonce=secrets.token_urlsafe(12),
    )


async def prefill(store: RedisStore, event_id: str, count: int) -> float:
    """Add `count` waiting entries with PREFILL_CONCURRENCY joins in flight; return seconds."""
    run_id = secrets.token_hex(4)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            index = next_index
            next_index += 1
            await store.join(join_request(event_id, index, run_id))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(PREFILL_CONCURRENCY)))
    return time.perf_counter() - started


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    store = RedisStore.from_url(args.redis_url, pool_max_connections=PREFILL_CONCURRENCY)
    await store.connect()
    try:
        return await _measure_with(store, args)
    finally:
        await store.close()


async def _measure_with(store: RedisStore, args: argparse.Namespace) -> dict[str, Any]:
    config = EventConfig(
        event_id=args.event_id,
        max_queue_size=MAX_QUEUE_SIZE,
        release_rate=args.rate_per_s,
        max_capacity=MAX_CAPACITY,
        session_ttl_s=LONG_TTL_S,
        heartbeat_timeout_s=LONG_TTL_S,
        paused=True,
    )
    if await store.get_event(args.event_id) is not None:
        raise SystemExit(f"release_bench: event {args.event_id!r} exists; use a new --event-id")
    await store.put_event(config)

    prefill_s = await prefill(store, args.event_id, args.entries)
    before = await store.event_snapshot(args.event_id)

    loop: ReleaseLoop | None = None
    if args.mode == "loop":
        loop = ReleaseLoop(store, Settings.release_tick_ms, Settings.release_max_batch)
        loop.start()

    # Credit does not grow while paused, so the window starts with no credit and no burst.
    resumed = await store.set_paused(args.event_id, False)
    assert not resumed.paused
    start = await store.event_snapshot(args.event_id)
    await asyncio.sleep(args.window_s)
    end = await store.event_snapshot(args.event_id)

    if loop is not None:
        await loop.stop()
    await store.set_paused(args.event_id, True)

    window_s = (end.now_ms - start.now_ms) / 1000
    admitted = end.admitted_total - start.admitted_total
    return {
        "mode": args.mode,
        "entries_prefilled": args.entries,
        "waiting_before": before.waiting_count,
        "prefill_s": round(prefill_s, 2),
        "prefill_joins_per_s": round(args.entries / prefill_s, 1),
        "release_rate_per_s": args.rate_per_s,
        "tick_ms": Settings.release_tick_ms,
        "max_batch": Settings.release_max_batch,
        "window_s": window_s,
        "admitted": admitted,
        "admitted_per_s": round(admitted / window_s, 1),
        "expected": round(args.rate_per_s * window_s),
        "waiting_after": end.waiting_count,
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", required=True, help="redis:// URL of the store")
    parser.add_argument("--event-id", default="release-bench", help="id of the event to create")
    parser.add_argument("--entries", type=int, default=150_000, help="waiting entries to add")
    parser.add_argument(
        "--rate-per-s", type=float, default=10_000.0, help="the event's release_rate"
    )
    parser.add_argument("--window-s", type=float, default=10.0, help="seconds to count")
    parser.add_argument(
        "--mode",
        choices=("loop", "external"),
        default="loop",
        help="loop: run a ReleaseLoop here; external: a running service releases",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(measure(args))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
