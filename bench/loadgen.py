"""Python load generator (asyncio) for Gatekeep and the baseline app.

Subcommands:

- `prefill`: join COUNT entries through the HTTP API and write their queue ids, one a line.
- `open`: open loop. Requests start at fixed times (RATE per second), whether or not earlier
  ones have finished. Each latency is measured from the scheduled start, so a slow server
  or a late generator raises the percentiles instead of lowering the rate.
- `closed`: closed loop. CONNECTIONS workers each send the next request when the last one
  finished (the same model as wrk).

Two HTTP/1.1 clients are available. `raw` (the default) is a keep-alive connection pool on
asyncio protocols with the httptools response parser, written to spend as little of the
shared CPU as possible. `aiohttp` is the usual library client, kept for comparison.
`open` and `closed` print one JSON object with latencies in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import aiohttp
import httptools
import orjson
from yarl import URL

REQUEST_TIMEOUT_S = 5.0
# uvicorn closes a keep-alive connection that stays idle for 5 s (its default keep-alive
# timeout). A request written at that moment fails with a closed connection, so the raw
# client closes its own connections first, once they were idle this long.
IDLE_CONNECTION_MAX_S = 4.0
PREFILL_CONCURRENCY = 64
# Sleeping for less than this only adds event-loop wake-ups. Such requests go out at once, and
# their small lateness is part of their measured latency.
MIN_SLEEP_S = 0.0005


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    method: str
    path: str
    body: bytes | None


class Client(Protocol):
    """An HTTP client that sends one request and returns the response status."""

    async def send(self, request: PreparedRequest) -> int: ...

    async def close(self) -> None: ...


class AiohttpClient:
    def __init__(self, base_url: str, connections: int) -> None:
        connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        self._base = URL(base_url)
        self._urls: dict[str, URL] = {}

    async def send(self, request: PreparedRequest) -> int:
        url = self._urls.get(request.path)
        if url is None:
            url = self._urls[request.path] = self._base.with_path(request.path, encoded=True)
        headers = {"Content-Type": "application/json"} if request.body else None
        async with self._session.request(
            request.method, url, data=request.body, headers=headers
        ) as response:
            await response.read()
            return response.status

    async def close(self) -> None:
        await self._session.close()


class RawConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since_s = 0.0  # loop time of the last release to the pool
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport implements asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ConnectionError(f"invalid HTTP response: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError("connection closed by the server"))

    # httptools parser callback
    def on_message_complete(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._parser.get_status_code())
        self._waiter = None

    def _fail(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self._waiter = None
        if self.transport is not None:
            self.transport.abort()
        self.closed = True

    async def request(self, data: bytes) -> int:
        assert self.transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self._waiter

    def abort(self) -> None:
        self._fail(TimeoutError("request timed out"))


class RawClient:
    """A pool of up to `connections` RawConnections to one host and port.

    A request that finds every connection busy waits for one, and that wait is part of
    its latency, as it would be for a browser or a proxy with a connection limit.
    """

    def __init__(self, base_url: str, connections: int) -> None:
        url = URL(base_url)
        assert url.host is not None and url.port is not None
        self._host = url.host
        self._port = url.port
        self._host_header = f"{url.host}:{url.port}"
        self._max_connections = connections
        self._open_count = 0
        self._idle: list[RawConnection] = []
        self._waiters: deque[asyncio.Future[RawConnection]] = deque()

    def encode(self, request: PreparedRequest) -> bytes:
        head = f"{request.method} {request.path} HTTP/1.1\r\nHost: {self._host_header}\r\n"
        if request.body is None:
            return (head + "\r\n").encode()
        head += f"Content-Type: application/json\r\nContent-Length: {len(request.body)}\r\n\r\n"
        return head.encode() + request.body

    async def send(self, request: PreparedRequest) -> int:
        data = self.encode(request)
        connection = await self._acquire()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                return await connection.request(data)
        except BaseException:
            connection.abort()
            raise
        finally:
            self._release(connection)

    async def _acquire(self) -> RawConnection:
        now_s = asyncio.get_running_loop().time()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now_s - connection.idle_since_s < IDLE_CONNECTION_MAX_S:
                return connection
            if connection.transport is not None:
                connection.transport.close()
            self._open_count -= 1
        if self._open_count < self._max_connections:
            self._open_count += 1
            try:
                return await self._connect()
            except BaseException:
                self._open_count -= 1
                raise
        waiter: asyncio.Future[RawConnection] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter

    async def _connect(self) -> RawConnection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(RawConnection, self._host, self._port)
        return connection

    def _release(self, connection: RawConnection) -> None:
        if connection.closed:
            self._open_count -= 1
            if self._waiters:
                # Open a replacement for the first waiter, so a closed connection never
                # leaves a request waiting for good.
                self._open_count += 1
                asyncio.get_running_loop().create_task(self._hand_new_connection())
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        connection.idle_since_s = asyncio.get_running_loop().time()
        self._idle.append(connection)

    async def _hand_new_connection(self) -> None:
        try:
            connection = await self._connect()
        except OSError as error:
            self._open_count -= 1
            if self._waiters:
                self._waiters.popleft().set_exception(error)
            return
        self._release(connection)

    async def close(self) -> None:
        for connection in self._idle:
            if connection.transport is not None:
                connection.transport.close()
        self._idle.clear()


def new_client(name: str, base_url: str, connections: int) -> Client:
    if name == "aiohttp":
        return AiohttpClient(base_url, connections)
    return RawClient(base_url, connections)


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Return the nearest-rank percentile of an ascending list, or None when it is empty."""
    if not sorted_values:
        return None
    rank = max(1, int(-(-fraction * len(sorted_values) // 1)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def make_request_factory(args: argparse.Namespace) -> Callable[[int], PreparedRequest]:
    """Return a function from a request number to the request to send for `args.op`."""
    if args.op == "join":
        join_path = f"/v1/events/{args.event_id}/join"
        tag = f"py-{secrets.token_hex(4)}"

        def join(number: int) -> PreparedRequest:
            body = orjson.dumps({"device_id": f"{tag}-{number}"})
            return PreparedRequest("POST", join_path, body)

        return join

    if args.op == "get":
        get_request = PreparedRequest("GET", args.path, None)
        return lambda number: get_request

    queue_ids = [line for line in Path(args.ids_file).read_text().splitlines() if line]
    if not queue_ids:
        raise SystemExit(f"loadgen: no queue ids in {args.ids_file}; run prefill first")
    if args.op == "status":
        polls = [PreparedRequest("GET", f"/v1/queue/{queue_id}", None) for queue_id in queue_ids]
    else:
        polls = [
            PreparedRequest("POST", f"/v1/queue/{queue_id}/heartbeat", b"")
            for queue_id in queue_ids
        ]
    return lambda number: polls[number % len(polls)]


class Recorder:
    """Latencies and outcomes of the requests scheduled inside the measured window."""

    def __init__(self, client: Client, expected_statuses: frozenset[int]) -> None:
        self.client = client
        self.expected_statuses = expected_statuses
        self.latencies_s: list[float] = []
        self.outcomes: Counter[str] = Counter()

    async def send(self, request: PreparedRequest, started: float, record: bool) -> None:
        """Send one request; when `record`, store its latency from `started` (perf_counter)."""
        try:
            status = await self.client.send(request)
        except TimeoutError:
            outcome = "timeout"
        except (aiohttp.ClientError, OSError) as error:
            outcome = type(error).__name__
        else:
            outcome = "ok" if status in self.expected_statuses else f"status_{status}"

        if not record:
            return
        self.outcomes[outcome] += 1
        if outcome == "ok":
            self.latencies_s.append(time.perf_counter() - started)

    def summary(self, window_s: float) -> dict[str, Any]:
        ordered = sorted(self.latencies_s)

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 2)

        return {
            "completed_ok": len(ordered),
            "outcomes": dict(self.outcomes),
            "ok_per_s": round(len(ordered) / window_s, 1),
            "latency_p50_ms": ms(percentile(ordered, 0.50)),
            "latency_p90_ms": ms(percentile(ordered, 0.90)),
            "latency_p99_ms": ms(percentile(ordered, 0.99)),
            "latency_max_ms": ms(ordered[-1] if ordered else None),
        }


def expected_statuses(op: str) -> frozenset[int]:
    return frozenset({200, 201}) if op == "join" else frozenset({200})


async def run_open(args: argparse.Namespace) -> dict[str, Any]:
    """Start requests at a fixed rate for warm-up plus duration; record those after warm-up."""
    build = make_request_factory(args)
    client = new_client(args.client, args.url, args.connections)
    recorder = Recorder(client, expected_statuses(args.op))
    interval_s = 1.0 / args.rate_per_s
    warmup_count = int(args.warmup_s * args.rate_per_s)
    total_count = warmup_count + int(args.duration_s * args.rate_per_s)
    lateness_s: list[float] = []
    tasks: set[asyncio.Task[None]] = set()

    first_start = time.perf_counter() + 0.05
    for number in range(total_count):
        scheduled = first_start + number * interval_s
        delay_s = scheduled - time.perf_counter()
        if delay_s > MIN_SLEEP_S:
            await asyncio.sleep(delay_s)
        record = number >= warmup_count
        if record:
            lateness_s.append(max(0.0, time.perf_counter() - scheduled))
        task = asyncio.create_task(recorder.send(build(number), scheduled, record))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    sending_done = time.perf_counter()
    if tasks:
        await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_S + 1)
    for task in tasks:
        task.cancel()
    unfinished = len(tasks)
    await client.close()

    lateness_s.sort()
    result = recorder.summary(args.duration_s)
    measured_send_s = sending_done - (first_start + warmup_count * interval_s)
    result.update(
        {
            "generator": f"loadgen.py {args.client}",
            "mode": "open",
            "op": args.op,
            "target_per_s": args.rate_per_s,
            "sent_per_s": round((total_count - warmup_count) / measured_send_s, 1),
            "duration_s": args.duration_s,
            "warmup_s": args.warmup_s,
            "connections_max": args.connections,
            "unfinished": unfinished,
            "send_lateness_p99_ms": round((percentile(lateness_s, 0.99) or 0.0) * 1000, 2),
            "send_lateness_max_ms": round((lateness_s[-1] if lateness_s else 0.0) * 1000, 2),
        }
    )
    return result


async def run_closed(args: argparse.Namespace) -> dict[str, Any]:
    """Keep `connections` requests in flight for warm-up plus duration."""
    build = make_request_factory(args)
    client = new_client(args.client, args.url, args.connections)
    recorder = Recorder(client, expected_statuses(args.op))
    next_number = 0
    warmup_ends = time.perf_counter() + args.warmup_s
    measure_ends = warmup_ends + args.duration_s

    async def worker() -> None:
        nonlocal next_number
        while True:
            started = time.perf_counter()
            if started >= measure_ends:
                return
            number = next_number
            next_number += 1
            await recorder.send(build(number), started, started >= warmup_ends)

    await asyncio.gather(*(worker() for _ in range(args.connections)))
    await client.close()

    result = recorder.summary(args.duration_s)
    result.update(
        {
            "generator": f"loadgen.py {args.client}",
            "mode": "closed",
            "op": args.op,
            "connections": args.connections,
            "duration_s": args.duration_s,
            "warmup_s": args.warmup_s,
        }
    )
    return result


async def run_prefill(args: argparse.Namespace) -> dict[str, Any]:
    """Join `count` new devices and write the queue ids to `out`."""
    url = URL(args.url) / "v1" / "events" / args.event_id / "join"
    tag = f"prefill-{secrets.token_hex(4)}"
    queue_ids: list[str] = []
    next_number = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_number
        while next_number < args.count:
            number = next_number
            next_number += 1
            body = orjson.dumps({"device_id": f"{tag}-{number}"})
            headers = {"Content-Type": "application/json"}
            async with session.post(url, data=body, headers=headers) as response:
                document = orjson.loads(await response.read())
                if response.status != 201:
                    raise SystemExit(
                        f"loadgen: prefill join returned {response.status}: {document}"
                    )
                queue_ids.append(document["queue_id"])

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=PREFILL_CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(PREFILL_CONCURRENCY)))
    elapsed_s = time.perf_counter() - started

    await asyncio.to_thread(Path(args.out).write_text, "\n".join(queue_ids) + "\n")
    return {"joined": len(queue_ids), "seconds": round(elapsed_s, 2)}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    prefill = commands.add_parser("prefill", help="join entries and write their queue ids")
    prefill.add_argument("--url", required=True, help="service base URL, http://127.0.0.1:PORT")
    prefill.add_argument("--event-id", required=True)
    prefill.add_argument("--count", type=int, required=True, help="entries to join")
    prefill.add_argument("--out", required=True, help="file for the queue ids, one a line")

    for name, help_text in (("open", "fixed arrival rate"), ("closed", "fixed concurrency")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--url", required=True, help="base URL, http://127.0.0.1:PORT")
        command.add_argument("--op", choices=("join", "status", "heartbeat", "get"), required=True)
        command.add_argument("--event-id", help="event to join (op join)")
        command.add_argument("--ids-file", help="queue ids, one a line (op status, heartbeat)")
        command.add_argument("--path", default="/", help="path to GET (op get)")
        command.add_argument("--client", choices=("raw", "aiohttp"), default="raw")
        command.add_argument("--duration-s", type=float, default=10.0, help="measured seconds")
        command.add_argument("--warmup-s", type=float, default=2.0, help="unmeasured seconds first")
        if name == "open":
            command.add_argument("--rate-per-s", type=float, required=True, help="request starts")
            command.add_argument(
                "--connections", type=int, default=256, help="max open connections"
            )
        else:
            command.add_argument("--connections", type=int, default=128, help="concurrent requests")

    args = parser.parse_args(argv)
    if args.command in ("open", "closed"):
        if args.op == "join" and not args.event_id:
            parser.error("--op join needs --event-id")
        if args.op in ("status", "heartbeat") and not args.ids_file:
            parser.error(f"--op {args.op} needs --ids-file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    runners: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]]] = {
        "prefill": run_prefill,
        "open": run_open,
        "closed": run_closed,
    }
    coroutine = runners[args.command](args)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(coroutine)
    else:
        # uvloop is the loop uvicorn picks for the servers, and it spends less CPU per request.
        result = uvloop.run(coroutine)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
