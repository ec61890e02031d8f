"""Hold many open SSE streams against one service process and check that it stays responsive.

    .venv/bin/python bench/sse_streams.py --streams 10000

Starts a redis-server and ONE `gatekeep serve` process (one worker) on loopback, joins
`--streams` entries to a paused event, opens one `GET /v1/queue/{id}/events` stream per entry
from this process, then, with every stream open:

1. measures `GET /health` and `GET /v1/queue/{id}` latency (sequential requests);
2. counts the store calls per second (Redis `EVALSHA` calls), which must not grow with the
   number of streams;
3. resumes the event, so every waiting position moves, and measures how long it takes until
   every stream has received a new position.

The service and this client share the machine's cores, so the numbers are a lower bound for a
service process with a core of its own. Every process it starts is stopped by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import secrets
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from machine import describe
from processes import (
    LOOPBACK,
    Started,
    clean_environment,
    free_port,
    python_tool,
    start,
    start_redis,
    stop,
    wait_for_http,
)

ADMIN_KEY = secrets.token_urlsafe(24)
TOKEN_SECRET = secrets.token_urlsafe(32)
EVENT_ID = "sse-bench"
# Open files each of the two processes (client, service) needs: one socket per stream, plus slack.
FILES_PER_STREAM = 1
FILE_SLACK = 1024


def raise_open_files_limit(streams: int) -> int:
    """Raise this process's soft open-files limit (inherited by the service) to fit the streams."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = streams * FILES_PER_STREAM + FILE_SLACK
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SystemExit(
                f"the open-files hard limit is {hard}, below the {needed} needed for {streams} "
                "streams; raise it (ulimit -Hn) or run fewer --streams"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def http_request(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """Send one HTTP/1.1 request on a new connection and return (status, body)."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {LOOPBACK}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        payload = dechunk(payload)
    return status, payload


def dechunk(payload: bytes) -> bytes:
    result = bytearray()
    while payload:
        size_text, _, rest = payload.partition(b"\r\n")
        size = int(size_text, 16)
        if size == 0:
            break
        result += rest[:size]
        payload = rest[size + 2 :]
    return bytes(result)


async def join_entries(port: int, count: int, concurrency: int = 64) -> list[str]:
    queue_ids: list[str] = [""] * count
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            index = next_index
            next_index += 1
            body = json.dumps({"device_id": f"bench-{index}"}).encode()
            status, payload = await http_request(port, "POST", f"/v1/events/{EVENT_ID}/join", body)
            if status not in (200, 201):
                raise RuntimeError(f"join returned {status}: {payload[:200]!r}")
            queue_ids[index] = json.loads(payload)["queue_id"]

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return queue_ids


@dataclass
class Stream:
    """One open SSE stream and the positions it was sent."""

    queue_id: str
    writer: asyncio.StreamWriter | None = None
    positions: list[tuple[float, int | None]] = field(default_factory=list)
    ended: bool = False


async def open_stream(port: int, stream: Stream, opened: asyncio.Event) -> None:
    """Open the stream, then record every status event until the connection closes."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port, limit=1 << 16)
    stream.writer = writer
    request = (
        f"GET /v1/queue/{stream.queue_id}/events HTTP/1.1\r\nHost: {LOOPBACK}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    )
    writer.write(request.encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"stream open failed: {head[:100]!r}")
    opened.set()
    while True:
        line = await reader.readline()
        if not line:
            stream.ended = True
            return
        if line.startswith(b"data: ") and b'"position":' in line:
            data = json.loads(line.split(b"data: ", 1)[1])
            stream.positions.append((time.monotonic(), data.get("position")))


def redis_evalsha_calls(redis_port: int) -> int:
    """Return Redis's count of EVALSHA calls so far (INFO commandstats)."""
    with socket.create_connection((LOOPBACK, redis_port), timeout=5) as connection:
        connection.sendall(b"INFO commandstats\r\n")
        data = b""
        while not data.endswith(b"\r\n\r\n") and b"cmdstat_evalsha" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                break
            data += chunk
        for line in data.decode().splitlines():
            if line.startswith("cmdstat_evalsha:"):
                return int(line.split("calls=", 1)[1].split(",", 1)[0])
    return 0


async def store_calls_per_s_over(redis_port: int, window_s: float) -> float:
    """Return the EVALSHA calls per second Redis served over `window_s`, with no client traffic."""
    before = redis_evalsha_calls(redis_port)
    started = time.monotonic()
    await asyncio.sleep(window_s)
    return (redis_evalsha_calls(redis_port) - before) / (time.monotonic() - started)


async def latencies_ms(port: int, paths: list[str], count: int) -> list[float]:
    """Time `count` sequential GETs, cycling through `paths` (per-entry rate limits apply)."""
    samples = []
    for index in range(count):
        path = paths[index % len(paths)]
        started = time.perf_counter()
        status, _ = await http_request(port, "GET", path)
        samples.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise RuntimeError(f"GET {path} returned {status}")
    return samples


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def measure(args: argparse.Namespace, service: Started, redis: Started) -> dict[str, object]:
    port = service.port
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    event = {
        "max_queue_size": args.streams * 2,
        "release_rate": args.release_rate,
        "max_capacity": args.streams * 2,
        "heartbeat_timeout_s": 3600,
        "paused": True,
    }
    status, payload = await http_request(
        port, "PUT", f"/admin/events/{EVENT_ID}", json.dumps(event).encode(), admin
    )
    if status not in (200, 201):
        raise RuntimeError(f"creating the event returned {status}: {payload[:200]!r}")

    idle_calls_per_s = await store_calls_per_s_over(redis.port, args.window_s)
    print(f"store calls with no stream open: {idle_calls_per_s:.1f}/s")

    started = time.monotonic()
    queue_ids = await join_entries(port, args.streams)
    join_s = time.monotonic() - started
    print(f"joined {len(queue_ids)} entries in {join_s:.1f} s")

    streams = [Stream(queue_id) for queue_id in queue_ids]
    started = time.monotonic()
    tasks = []
    for batch_start in range(0, len(streams), 500):
        batch = streams[batch_start : batch_start + 500]
        events = [asyncio.Event() for _ in batch]
        tasks += [
            asyncio.create_task(open_stream(port, s, e)) for s, e in zip(batch, events, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 120)
    open_s = time.monotonic() - started
    print(f"opened {len(streams)} streams in {open_s:.1f} s")
    await asyncio.sleep(args.settle_s)

    store_calls_per_s = await store_calls_per_s_over(redis.port, args.window_s)
    print(f"store calls with {len(streams)} streams open: {store_calls_per_s:.1f}/s")

    health = await latencies_ms(port, ["/health"], args.requests)
    status_paths = [
        f"/v1/queue/{queue_id}" for queue_id in queue_ids[:: max(1, len(queue_ids) // 100)]
    ]
    entry_status = await latencies_ms(port, status_paths, args.requests)
    # Every waiting position moves once the first entries are admitted.
    resumed_at = time.monotonic()
    await http_request(port, "POST", f"/admin/events/{EVENT_ID}/resume", b"", admin)
    deadline = resumed_at + args.fanout_timeout_s
    while time.monotonic() < deadline:
        moved = sum(1 for s in streams if any(t >= resumed_at for t, _ in s.positions))
        if moved >= len(streams) - args.release_rate * (time.monotonic() - resumed_at) - 1:
            break
        await asyncio.sleep(0.05)
    delivery_s = [
        min(t for t, _ in s.positions if t >= resumed_at) - resumed_at
        for s in streams
        if any(t >= resumed_at for t, _ in s.positions)
    ]
    still_open = sum(1 for s in streams if not s.ended)
    memory_mib = rss_mib(service.process.pid)

    for s in streams:
        if s.writer is not None:
            s.writer.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    return {
        "streams": len(streams),
        "streams_open_at_end": still_open,
        "join_s": round(join_s, 1),
        "open_all_streams_s": round(open_s, 1),
        "health_ms": {
            "p50": round(statistics.median(health), 2),
            "p99": round(percentile(health, 0.99), 2),
        },
        "status_ms": {
            "p50": round(statistics.median(entry_status), 2),
            "p99": round(percentile(entry_status, 0.99), 2),
        },
        "store_calls_per_s_no_streams": round(idle_calls_per_s, 1),
        "store_calls_per_s_with_streams_open": round(store_calls_per_s, 1),
        "streams_updated_after_resume": len(delivery_s),
        "update_delivery_s": {
            "p50": round(statistics.median(delivery_s), 2) if delivery_s else None,
            "max": round(max(delivery_s), 2) if delivery_s else None,
        },
        "service_rss_mib": round(memory_mib, 1),
        "stream_tick_ms": args.tick_ms,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=10_000, help="open streams to hold")
    parser.add_argument("--requests", type=int, default=200, help="latency samples per path")
    parser.add_argument("--tick-ms", type=int, default=1000, help="GATEKEEP_STREAM_TICK_MS")
    parser.add_argument("--release-rate", type=float, default=50.0, help="users/s after resume")
    parser.add_argument("--settle-s", type=float, default=3.0, help="pause after opening")
    parser.add_argument("--window-s", type=float, default=10.0, help="store-call count window")
    parser.add_argument("--fanout-timeout-s", type=float, default=30.0)
    parser.add_argument("--json", help="write the result to this file")
    args = parser.parse_args()

    limit = raise_open_files_limit(args.streams)
    print(f"open-files limit {limit}")
    log_dir = Path(tempfile.mkdtemp(prefix="gatekeep-sse-bench-"))
    redis = start_redis(log_dir)
    service: Started | None = None
    try:
        port = free_port()
        env = clean_environment(
            {
                "GATEKEEP_REDIS_URL": f"redis://{LOOPBACK}:{redis.port}/0",
                "GATEKEEP_TOKEN_SECRET": TOKEN_SECRET,
                "GATEKEEP_ADMIN_API_KEYS": ADMIN_KEY,
                "GATEKEEP_PORT": str(port),
                "GATEKEEP_METRICS_PORT": "off",
                "GATEKEEP_LOG_LEVEL": "WARNING",
                "GATEKEEP_STREAM_TICK_MS": str(args.tick_ms),
                "GATEKEEP_STREAM_MAX_CONNECTIONS": str(args.streams + 100),
                # One client address opens every stream, which per-IP limits would stop.
                "GATEKEEP_RATE_LIMITS": "join.ip=off,status.ip=off,heartbeat.ip=off",
            }
        )
        command = [python_tool("gatekeep"), "serve", "--workers", "1"]
        service = start("gatekeep", command, log_dir, port, env)
        wait_for_http(service, "/health")
        result = asyncio.run(measure(args, service, redis))
    finally:
        if service is not None:
            stop(service)
        stop(redis)

    result["machine"] = describe()
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
