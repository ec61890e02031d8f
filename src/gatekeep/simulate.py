"""`gatekeep simulate`: concurrent simulated people driven through a running service over HTTP.

Each simulated client joins, polls at the interval the service requests (sending every other
call as a heartbeat), waits until admitted, holds its session for a while and leaves. A chosen
fraction abandons the queue without leaving, so their entries expire. The summary checks what
an operator cares about: nobody admitted twice, the release rate held, and request latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

EXAMPLE_EVENTS_FILE = Path(__file__).parent / "examples" / "events.toml"
MAX_EXPIRY_WAIT_S = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="base URL of a running service, e.g. http://127.0.0.1:8000")
    parser.add_argument(
        "--spawn",
        action="store_true",
        help="run a service on a free loopback port (embedded store, example events) for the run",
    )
    parser.add_argument("--event", default="demo", help="event id to join (default: demo)")
    parser.add_argument("--clients", type=int, default=300, help="simulated clients (default: 300)")
    parser.add_argument(
        "--hold-s", type=float, default=1.0, help="seconds an admitted client keeps its session"
    )
    parser.add_argument(
        "--abandon-fraction",
        type=float,
        default=0.05,
        help="share of clients that stop polling without leaving, so they expire (default: 0.05)",
    )
    parser.add_argument(
        "--max-poll-ms", type=int, default=2000, help="cap on the poll interval a client obeys"
    )
    parser.add_argument(
        "--timeout-s", type=float, default=300.0, help="stop the run after this many seconds"
    )


@dataclass
class Tally:
    """Counts and samples from every simulated client of one run."""

    joined: int = 0
    admitted: int = 0
    left: int = 0
    expired: int = 0
    abandoned_admitted: int = 0  # abandoned entries admitted before their heartbeat timeout
    rejected: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    admitted_at_ms: list[int] = field(default_factory=list)
    token_ids: Counter[str] = field(default_factory=Counter)
    admitted_devices: Counter[str] = field(default_factory=Counter)
    abandoned_queue_ids: list[str] = field(default_factory=list)


class SimulatedClient:
    def __init__(
        self, http: httpx.AsyncClient, event_id: str, tally: Tally, args: argparse.Namespace
    ) -> None:
        self.http = http
        self.event_id = event_id
        self.tally = tally
        self.args = args
        self.device_id = f"sim-{uuid.uuid4().hex[:16]}"
        self.abandons = random.random() < args.abandon_fraction

    async def call(
        self, operation: str, method: str, path: str, **kwargs: object
    ) -> httpx.Response:
        started = time.perf_counter()
        response = await self.http.request(method, path, **kwargs)  # type: ignore[arg-type]
        self.tally.latencies_s[operation].append(time.perf_counter() - started)
        return response

    async def run(self) -> None:
        response = await self.call(
            "join", "POST", f"/v1/events/{self.event_id}/join", json={"device_id": self.device_id}
        )
        if response.status_code not in (200, 201):
            self.tally.rejected += 1
            self.tally.errors[f"join {response.status_code}"] += 1
            return
        self.tally.joined += 1
        entry = response.json()
        queue_id = entry["queue_id"]

        if self.abandons:
            await asyncio.sleep(random.uniform(0, 1))
            self.tally.abandoned_queue_ids.append(queue_id)
            return

        polls = 0
        while entry["status"] == "waiting":
            wait_ms = min(entry["poll_after_ms"] or 1000, self.args.max_poll_ms)
            await asyncio.sleep(wait_ms / 1000)
            polls += 1
            if polls % 2:
                response = await self.call("heartbeat", "POST", f"/v1/queue/{queue_id}/heartbeat")
            else:
                response = await self.call("status", "GET", f"/v1/queue/{queue_id}")
            if response.status_code == 503:
                self.tally.errors["store unavailable"] += 1
                continue
            if response.status_code != 200:
                self.tally.errors[f"poll {response.status_code}"] += 1
                if response.status_code == 410:
                    self.tally.expired += 1
                return
            entry = response.json()

        if entry["status"] != "admitted":
            self.tally.errors[f"ended {entry['status']}"] += 1
            return
        self.tally.admitted += 1
        self.tally.admitted_at_ms.append(entry["admitted_at_ms"])
        self.tally.token_ids[_token_id(entry["token"])] += 1
        self.tally.admitted_devices[self.device_id] += 1

        await asyncio.sleep(self.args.hold_s)
        response = await self.call("leave", "DELETE", f"/v1/queue/{queue_id}")
        if response.status_code == 200:
            self.tally.left += 1
        else:
            self.tally.errors[f"leave {response.status_code}"] += 1


def _token_id(token: str) -> str:
    """Return the token's `jti` claim without verifying it, because the simulator has no key."""
    import jwt

    claims = jwt.decode(token, options={"verify_signature": False})
    return str(claims["jti"])


async def count_expired(http: httpx.AsyncClient, tally: Tally, heartbeat_timeout_s: float) -> None:
    """Wait past the heartbeat timeout, then read each abandoned entry once.

    An entry that was still waiting when its heartbeats stopped for the timeout returns 410.
    One that reached the front first was admitted and holds its session until the TTL.
    """
    if not tally.abandoned_queue_ids:
        return
    if heartbeat_timeout_s > MAX_EXPIRY_WAIT_S:
        tally.errors[f"expiry not checked: heartbeat_timeout_s is over {MAX_EXPIRY_WAIT_S} s"] += 1
        return
    await asyncio.sleep(heartbeat_timeout_s + 1.5)
    for queue_id in tally.abandoned_queue_ids:
        response = await http.get(f"/v1/queue/{queue_id}")
        if response.status_code == 410:
            tally.expired += 1
        elif response.status_code == 200 and response.json()["status"] == "admitted":
            tally.abandoned_admitted += 1
            tally.admitted_at_ms.append(response.json()["admitted_at_ms"])
        else:
            tally.errors[f"abandoned entry answered {response.status_code}"] += 1


async def simulate(base_url: str, args: argparse.Namespace) -> Tally:
    tally = Tally()
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=10.0) as http:
        event = await http.get(f"/v1/events/{args.event}")
        if event.status_code != 200:
            raise SystemExit(
                f"gatekeep simulate: event {args.event!r} returned HTTP {event.status_code}"
            )

        clients = [SimulatedClient(http, args.event, tally, args) for _ in range(args.clients)]
        started = time.perf_counter()
        try:
            async with asyncio.timeout(args.timeout_s):
                await asyncio.gather(*(client.run() for client in clients))
        except TimeoutError:
            tally.errors["run timed out"] += 1
        tally.latencies_s["total_run"].append(time.perf_counter() - started)

        event_state = (await http.get(f"/v1/events/{args.event}")).json()
        await count_expired(http, tally, float(event_state["heartbeat_timeout_s"]))
        print_summary(tally, args, event_state)
    return tally


def percentile_ms(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index] * 1000


def observed_rate_per_s(admitted_at_ms: list[int]) -> float | None:
    """Admissions per second after the first release step, on the store clock.

    The first step may admit a batch paid by credit earned before it (people waited while the
    event was being picked up), so its batch counts as the start of the span, not within it.
    """
    if len(admitted_at_ms) < 2:
        return None
    first_ms = min(admitted_at_ms)
    span_s = (max(admitted_at_ms) - first_ms) / 1000
    later = sum(1 for at_ms in admitted_at_ms if at_ms > first_ms)
    return later / span_s if span_s > 0 else None


def duplicate_admissions(tally: Tally) -> int:
    repeated_tokens = sum(count - 1 for count in tally.token_ids.values() if count > 1)
    repeated_devices = sum(count - 1 for count in tally.admitted_devices.values() if count > 1)
    return repeated_tokens + repeated_devices


def print_summary(tally: Tally, args: argparse.Namespace, event: dict[str, object]) -> None:
    rate = observed_rate_per_s(tally.admitted_at_ms)
    configured = event.get("release_rate")
    print(f"event                 {args.event}")
    print(f"clients               {args.clients}")
    print(f"joined                {tally.joined}")
    print(f"rejected at join      {tally.rejected}")
    print(f"admitted              {tally.admitted}")
    print(f"left                  {tally.left}")
    print(
        f"abandoned             {len(tally.abandoned_queue_ids)} (stopped polling without leaving)"
    )
    print(f"expired               {tally.expired} (abandoned while waiting, answered 410 later)")
    print(f"abandoned, admitted   {tally.abandoned_admitted} (reached the front before timing out)")
    print(f"duplicate admissions  {duplicate_admissions(tally)}")
    if rate is None:
        print(f"release rate          not enough admissions to measure (configured {configured}/s)")
    else:
        print(f"release rate          {rate:.2f}/s observed, {configured}/s configured")
    print("latency               operation    count    p50 ms    p99 ms")
    for operation in ("join", "status", "heartbeat", "leave"):
        samples = tally.latencies_s.get(operation, [])
        if samples:
            print(
                f"                      {operation:<10} {len(samples):>7} "
                f"{percentile_ms(samples, 0.5):>9.1f} {percentile_ms(samples, 0.99):>9.1f}"
            )
    for problem, count in sorted(tally.errors.items()):
        print(f"problem               {problem}: {count}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def spawned_service(events_file: Path) -> Iterator[str]:
    """Run `gatekeep serve` on a free loopback port with the embedded store until the block ends."""
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEKEEP_")}
    env.update(
        GATEKEEP_EVENTS_FILE=str(events_file),
        GATEKEEP_METRICS_PORT="off",
        GATEKEEP_LOG_LEVEL="WARNING",
        # Every simulated client comes from one loopback address, which per-IP limits meant
        # for real traffic would throttle.
        GATEKEEP_RATE_LIMITS="join.ip=off,status.ip=off,heartbeat.ip=off",
    )
    command = [
        sys.executable,
        "-m",
        "gatekeep.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, env=env)  # noqa: S603 - fixed argv, no shell
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base_url, process)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(
                f"gatekeep simulate: the spawned service exited with code {process.returncode}"
            )
        try:
            if httpx.get(f"{base_url}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("gatekeep simulate: the spawned service was not ready within 20 s")


def run_simulate(args: argparse.Namespace) -> int:
    if args.clients < 1 or args.clients > 20_000:
        print("gatekeep simulate: --clients must be from 1 to 20000", file=sys.stderr)
        return 2
    if not 0 <= args.abandon_fraction <= 1:
        print("gatekeep simulate: --abandon-fraction must be from 0 to 1", file=sys.stderr)
        return 2
    if bool(args.url) == bool(args.spawn):
        print(
            "gatekeep simulate: give either --url of a running service or --spawn", file=sys.stderr
        )
        return 2

    try:
        if args.spawn:
            with spawned_service(EXAMPLE_EVENTS_FILE) as base_url:
                tally = asyncio.run(simulate(base_url, args))
        else:
            tally = asyncio.run(simulate(args.url, args))
    except httpx.TransportError as error:
        print(
            f"gatekeep simulate: the service did not respond ({type(error).__name__}: {error}); "
            "check that it runs at the given --url",
            file=sys.stderr,
        )
        return 2
    return 1 if duplicate_admissions(tally) else 0
