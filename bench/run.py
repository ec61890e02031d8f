"""Run the Gatekeep benchmark suite end to end and print a results table.

Starts a redis-server, `gatekeep serve` and the baseline app (and, when valkey-glide is
installed, a second baseline on that client), all on free loopback ports, then measures:

1. release capacity of one event through a `ReleaseLoop` in a child process;
2. closed-loop throughput and latency (wrk, CONNECTIONS connections) of the baseline, status,
   heartbeat and join, repeated ROUNDS times in that order so each ratio compares
   neighbouring runs;
3. open-loop latency (bench/loadgen.py, fixed arrival rate) at half of each median maximum;
4. release capacity again, this time through the running service's own release loops.

Every child is stopped by its pid (and its own process group) on exit, also after an error.
Usage: .venv/bin/python bench/run.py [--rounds 3] [--json results.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from machine import CpuMeter, describe, wait_for_quiet
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

BENCH_DIR = Path(__file__).resolve().parent
EVENT_ID = "bench"
RELEASE_LOOP_EVENT_ID = "release-loop"
RELEASE_SERVICE_EVENT_ID = "release-service"
# Extra seconds a child may take beyond its planned run before it counts as hung.
CHILD_GRACE_S = 60.0

# Targets from the product's performance requirements.
STATUS_RATIO_TARGET = 0.8
HALF_LOAD_P99_TARGET_MS = 50.0
RELEASE_TOLERANCE = 0.02

# Every rate limit counts each request, but at this rate none rejects one. All benchmark
# traffic comes from one address and reuses queue ids, which the default limits would reject.
NEVER_REACHED_LIMIT = "1000000/second"
# A closed-loop run whose less busy worker used less than this share of the busier one's CPU
# is repeated: its connections landed on one worker (see measure_closed).
IMBALANCE_MIN_SHARE = 0.35
NO_LIMITS_SUFFIX = " (limits off)"


@dataclass
class Measurement:
    """One row of the results table."""

    name: str
    generator: str
    load: str
    ok_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    cpu_cores: dict[str, float]
    round_number: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Servers:
    redis: Started
    service: Started
    baseline: Started
    glide: Started | None
    service_no_limits: Started | None
    admin_key: str

    def url(self, started: Started) -> str:
        return f"http://{LOOPBACK}:{started.port}"

    def groups(self) -> dict[str, int]:
        """Process groups to account CPU for; each started process leads its own group."""
        groups = {"service": self.service.pid, "baseline": self.baseline.pid}
        if self.glide is not None:
            groups["glide"] = self.glide.pid
        if self.service_no_limits is not None:
            groups["service_no_limits"] = self.service_no_limits.pid
        groups["redis"] = self.redis.pid
        return groups


# Starting the servers


def rate_limit_setting(limit: str) -> str | None:
    """Return a GATEKEEP_RATE_LIMITS value that sets every known limit to `limit`.

    Returns None for a service without rate limiting, so the variable stays unset.
    """
    try:
        from gatekeep.ratelimit import DEFAULT_RATE_LIMITS
    except ImportError:
        return None
    return ",".join(f"{name}={limit}" for name in sorted(DEFAULT_RATE_LIMITS))


def start_service(
    name: str, redis: Started, work_dir: Path, workers: int, admin_key: str, rate_limit: str
) -> Started:
    """Start `gatekeep serve` on Redis database 0 with every rate limit set to `rate_limit`."""
    port = free_port()
    metrics_dir = work_dir / f"{name}-prometheus"
    metrics_dir.mkdir()
    settings = {
        "GATEKEEP_REDIS_URL": f"redis://{LOOPBACK}:{redis.port}/0",
        "GATEKEEP_TOKEN_SECRET": secrets.token_urlsafe(32),
        "GATEKEEP_ADMIN_API_KEYS": admin_key,
        "GATEKEEP_LOG_LEVEL": "WARNING",
        "GATEKEEP_METRICS_PORT": "off",
        # `gatekeep serve` would make a temporary directory of its own and leave it behind.
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    rate_limits = rate_limit_setting(rate_limit)
    if rate_limits is not None:
        settings["GATEKEEP_RATE_LIMITS"] = rate_limits
    env = clean_environment(settings)

    command = [
        python_tool("gatekeep"),
        "serve",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    started = start(name, command, work_dir, port, env)
    wait_for_http(started, "/ready")
    return started


def start_baseline(name: str, client: str, redis: Started, work_dir: Path, workers: int) -> Started:
    """Start baseline_app under the uvicorn settings `gatekeep serve` uses."""
    port = free_port()
    env = clean_environment(
        {
            "BENCH_REDIS_URL": f"redis://{LOOPBACK}:{redis.port}/0",
            "BENCH_REDIS_CLIENT": client,
        }
    )
    command = [
        python_tool("uvicorn"),
        "--app-dir",
        str(BENCH_DIR),
        "baseline_app:app",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--no-server-header",
        "--log-level",
        "warning",
    ]
    started = start(name, command, work_dir, port, env)
    wait_for_http(started, "/")
    return started


def put_event(servers: Servers, event_id: str, config: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{servers.url(servers.service)}/admin/events/{event_id}",
        data=orjson.dumps(config),
        method="PUT",
        headers={
            "Authorization": f"Bearer {servers.admin_key}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status not in (200, 201):
            raise RuntimeError(f"PUT /admin/events/{event_id} returned {response.status}")


# Running the load generators


def run_child(command: list[str], timeout_s: float) -> str:
    """Run a child to completion and return its standard output; raise when it fails."""
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if completed.returncode != 0:
        raise RuntimeError(
            f"{Path(command[0]).name} exited with {completed.returncode}:\n"
            f"{completed.stderr[-2000:]}{completed.stdout[-2000:]}"
        )
    return completed.stdout


def wrk_command(
    args: argparse.Namespace, url: str, duration_s: float, mode: list[str]
) -> list[str]:
    return [
        "wrk",
        "-t",
        str(args.wrk_threads),
        "-c",
        str(args.connections),
        "-d",
        f"{round(duration_s)}s",
        "--timeout",
        "5s",
        "-s",
        str(BENCH_DIR / "gatekeep.lua"),
        url,
        "--",
        *mode,
    ]


def measure_closed(
    args: argparse.Namespace,
    servers: Servers,
    name: str,
    url: str,
    mode: list[str],
    round_number: int,
) -> Measurement:
    """Measure one closed-loop run, again when its connections landed on one worker.

    wrk opens all its connections at once, and the server's workers accept from one shared
    socket, so now and then one worker accepts nearly all of them and the run measures one
    worker instead of two. Such a run is repeated, up to `--imbalance-retries` times, and the
    repeats are counted in the row's details.
    """
    group = server_group_of(name)
    for attempt in range(args.imbalance_retries + 1):
        row = measure_closed_once(args, servers, name, url, mode, round_number)
        row.details["imbalanced_repeats"] = attempt
        workers = row.details["cores_per_process"].get(group, [])
        if len(workers) < 2 or workers[1] >= IMBALANCE_MIN_SHARE * workers[0]:
            return row
        print(f"  workers used {workers[0]} and {workers[1]} cores; measuring again", flush=True)
    return row


def measure_closed_once(
    args: argparse.Namespace,
    servers: Servers,
    name: str,
    url: str,
    mode: list[str],
    round_number: int,
) -> Measurement:
    """Warm up with wrk, then measure one closed-loop run with CPU accounting."""
    other_before = wait_until_quiet(args, servers.groups())
    run_child(wrk_command(args, url, args.warmup_s, mode), args.warmup_s + CHILD_GRACE_S)

    meter = CpuMeter(servers.groups())
    meter.start()
    started = time.monotonic()
    output = run_child(
        wrk_command(args, url, args.duration_s, mode), args.duration_s + CHILD_GRACE_S
    )
    cpu = meter.stop(time.monotonic() - started)

    summary_line = next(line for line in output.splitlines() if line.startswith("BENCH_JSON "))
    summary = orjson.loads(summary_line.removeprefix("BENCH_JSON "))
    errors = sum(value for key, value in summary.items() if key.startswith("errors_"))
    requests = summary["requests"] - summary["errors_status"]
    return Measurement(
        name=name,
        generator=f"wrk -t{args.wrk_threads}",
        load=f"closed {args.connections} conn",
        ok_per_s=round(requests / (summary["duration_us"] / 1e6), 1),
        p50_ms=summary["latency_p50_us"] / 1000,
        p99_ms=summary["latency_p99_us"] / 1000,
        errors=errors,
        cpu_cores=cpu,
        round_number=round_number,
        details={
            **summary,
            "other_cores_before": other_before,
            "cores_per_process": meter.per_process,
        },
    )


def measure_open(
    args: argparse.Namespace,
    servers: Servers,
    name: str,
    url: str,
    op: list[str],
    rate_per_s: float,
) -> Measurement:
    command = [
        sys.executable,
        str(BENCH_DIR / "loadgen.py"),
        "open",
        "--url",
        url,
        *op,
        "--rate-per-s",
        f"{rate_per_s:.1f}",
        "--duration-s",
        str(args.duration_s),
        "--warmup-s",
        str(args.warmup_s),
        "--client",
        args.open_client,
    ]
    other_before = wait_until_quiet(args, servers.groups())
    meter = CpuMeter(servers.groups())
    meter.start()
    started = time.monotonic()
    output = run_child(command, args.duration_s + args.warmup_s + CHILD_GRACE_S)
    cpu = meter.stop(time.monotonic() - started)

    result = orjson.loads(output.strip().splitlines()[-1])
    errors = sum(count for outcome, count in result["outcomes"].items() if outcome != "ok")
    return Measurement(
        name=name,
        generator=f"loadgen.py {args.open_client}",
        load=f"open {rate_per_s:.0f}/s",
        ok_per_s=result["ok_per_s"],
        p50_ms=result["latency_p50_ms"],
        p99_ms=result["latency_p99_ms"],
        errors=errors + result["unfinished"],
        cpu_cores=cpu,
        details={
            **result,
            "other_cores_before": other_before,
            "cores_per_process": meter.per_process,
        },
    )


def measure_release(
    redis: Started, event_id: str, mode: str, args: argparse.Namespace, groups: dict[str, int]
) -> dict[str, Any]:
    """Run release_bench.py; `loop` mode uses database 1, where no service releases."""
    other_before = wait_until_quiet(args, groups)
    database = 1 if mode == "loop" else 0
    command = [
        sys.executable,
        str(BENCH_DIR / "release_bench.py"),
        "--redis-url",
        f"redis://{LOOPBACK}:{redis.port}/{database}",
        "--event-id",
        event_id,
        "--entries",
        str(args.release_entries),
        "--rate-per-s",
        str(args.release_rate_per_s),
        "--window-s",
        str(args.duration_s),
        "--mode",
        mode,
    ]
    # Filling 150,000 entries takes about 30 s on 2 cores; allow ten times the expected.
    timeout_s = args.release_entries / 500 + args.duration_s + CHILD_GRACE_S
    result: dict[str, Any] = orjson.loads(run_child(command, timeout_s).strip().splitlines()[-1])
    expected = result["expected"]
    result["within_tolerance"] = abs(result["admitted"] - expected) <= RELEASE_TOLERANCE * expected
    result["other_cores_before"] = other_before
    return result


def wait_until_quiet(args: argparse.Namespace, groups: dict[str, int]) -> float:
    """Wait for other workloads on the machine to settle; return their last measured cores."""
    other = wait_for_quiet(groups, args.quiet_max_other_cores, args.quiet_max_wait_s)
    if other > args.quiet_max_other_cores:
        print(f"  note: other processes still use {other:.2f} cores; measuring anyway", flush=True)
    return other


# The suite


def run_suite(args: argparse.Namespace, work_dir: Path, started: list[Started]) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": describe(),
        "source": describe_source(),
        "settings": vars(args).copy(),
    }
    redis = start_redis(work_dir)
    started.append(redis)

    if not args.skip_release:
        print("release capacity through a ReleaseLoop in a child process ...", flush=True)
        results["release_loop"] = measure_release(
            redis, RELEASE_LOOP_EVENT_ID, "loop", args, {"redis": redis.pid}
        )

    servers = start_servers(args, redis, work_dir, started)
    put_event(
        servers,
        EVENT_ID,
        {
            "max_queue_size": 10_000_000,
            "release_rate": 0.001,
            "max_capacity": 1,
            "heartbeat_timeout_s": 86_400,
            "session_ttl_s": 86_400,
        },
    )
    ids_file = work_dir / "queue_ids.txt"
    prefill_output = run_child(
        [
            sys.executable,
            str(BENCH_DIR / "loadgen.py"),
            "prefill",
            "--url",
            servers.url(servers.service),
            "--event-id",
            EVENT_ID,
            "--count",
            str(args.queue_ids),
            "--out",
            str(ids_file),
        ],
        args.queue_ids / 100 + CHILD_GRACE_S,
    )
    results["prefill"] = orjson.loads(prefill_output)

    closed = run_closed_rounds(args, servers, ids_file)
    results["closed"] = [vars(row) for row in closed]
    medians = median_rates(closed)
    results["closed_median_ok_per_s"] = medians

    open_rows = run_open_loop(args, servers, ids_file, medians)
    results["open"] = [vars(row) for row in open_rows]

    if not args.skip_release:
        print("release capacity through the running service ...", flush=True)
        results["release_service"] = measure_release(
            redis, RELEASE_SERVICE_EVENT_ID, "external", args, servers.groups()
        )

    results["targets"] = evaluate_targets(results, closed, open_rows)
    print_report(results, closed, open_rows)
    return results


def describe_source() -> dict[str, Any]:
    """Return the git commit and the files under src/ that differ from it, if git is there."""
    repository = BENCH_DIR.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(repository), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(repository), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "changed_src_files": None}
    return {"commit": commit or None, "changed_src_files": len(changed)}


def start_servers(
    args: argparse.Namespace, redis: Started, work_dir: Path, started: list[Started]
) -> Servers:
    admin_key = secrets.token_urlsafe(24)
    service = start_service(
        "service", redis, work_dir, args.workers, admin_key, NEVER_REACHED_LIMIT
    )
    started.append(service)

    service_no_limits: Started | None = None
    if not args.skip_no_limits and rate_limit_setting("off") is not None:
        service_no_limits = start_service(
            "service-no-limits", redis, work_dir, args.workers, admin_key, "off"
        )
        started.append(service_no_limits)
    baseline = start_baseline("baseline", "redis-py", redis, work_dir, args.workers)
    started.append(baseline)

    glide: Started | None = None
    if not args.skip_glide and importlib.util.find_spec("glide") is not None:
        glide = start_baseline("baseline-glide", "glide", redis, work_dir, args.workers)
        started.append(glide)
    elif not args.skip_glide:
        print("valkey-glide is not installed; skipping the glide baseline", flush=True)
    return Servers(redis, service, baseline, glide, service_no_limits, admin_key)


def run_closed_rounds(
    args: argparse.Namespace, servers: Servers, ids_file: Path
) -> list[Measurement]:
    service_url = servers.url(servers.service)
    plan: list[tuple[str, str, Callable[[int], list[str]]]] = [
        ("baseline redis-py", servers.url(servers.baseline), lambda _: ["get", "/"]),
        ("status", service_url, lambda _: ["status", str(ids_file)]),
        ("heartbeat", service_url, lambda _: ["heartbeat", str(ids_file)]),
        ("join", service_url, lambda n: ["join", EVENT_ID, f"wrk{n}-{secrets.token_hex(3)}"]),
    ]
    if servers.glide is not None:
        plan.append(("baseline glide", servers.url(servers.glide), lambda _: ["get", "/"]))
    if servers.service_no_limits is not None:
        # The same event and queue ids, through a service that checks no rate limits.
        no_limits_url = servers.url(servers.service_no_limits)
        plan += [
            (name + NO_LIMITS_SUFFIX, no_limits_url, mode)
            for name, _, mode in plan
            if name in ("status", "heartbeat", "join")
        ]

    rows: list[Measurement] = []
    for round_number in range(1, args.rounds + 1):
        for name, url, mode in plan:
            print(f"closed loop, round {round_number}: {name} ...", flush=True)
            rows.append(measure_closed(args, servers, name, url, mode(round_number), round_number))
    return rows


def median_rates(rows: list[Measurement]) -> dict[str, float]:
    names = dict.fromkeys(row.name for row in rows)
    return {
        name: statistics.median(row.ok_per_s for row in rows if row.name == name) for name in names
    }


def run_open_loop(
    args: argparse.Namespace, servers: Servers, ids_file: Path, medians: dict[str, float]
) -> list[Measurement]:
    service_url = servers.url(servers.service)
    plan = [
        ("join", service_url, ["--op", "join", "--event-id", EVENT_ID]),
        ("status", service_url, ["--op", "status", "--ids-file", str(ids_file)]),
        ("heartbeat", service_url, ["--op", "heartbeat", "--ids-file", str(ids_file)]),
        ("baseline redis-py", servers.url(servers.baseline), ["--op", "get", "--path", "/"]),
    ]
    rows = []
    for round_number in range(1, args.open_rounds + 1):
        for name, url, op in plan:
            rate_per_s = medians[name] * args.open_load_fraction
            print(f"open loop, round {round_number}: {name} at {rate_per_s:.0f}/s ...", flush=True)
            row = measure_open(args, servers, name, url, op, rate_per_s)
            row.round_number = round_number
            rows.append(row)
    return rows


# Reporting


def evaluate_targets(
    results: dict[str, Any], closed: list[Measurement], open_rows: list[Measurement]
) -> dict[str, Any]:
    by_round: dict[int, dict[str, float]] = {}
    for row in closed:
        assert row.round_number is not None
        by_round.setdefault(row.round_number, {})[row.name] = row.ok_per_s
    ratios = [rates["status"] / rates["baseline redis-py"] for rates in by_round.values()]
    targets: dict[str, Any] = {
        "status_to_baseline_ratio_per_round": [round(ratio, 3) for ratio in ratios],
        "status_to_baseline_ratio_median": round(statistics.median(ratios), 3),
    }
    targets["status_ratio_met"] = targets["status_to_baseline_ratio_median"] >= STATUS_RATIO_TARGET

    no_limits = "status" + NO_LIMITS_SUFFIX
    if all(no_limits in rates for rates in by_round.values()):
        no_limit_ratios = [r[no_limits] / r["baseline redis-py"] for r in by_round.values()]
        targets["status_limits_off_to_baseline_ratio_median"] = round(
            statistics.median(no_limit_ratios), 3
        )

    if all("baseline glide" in rates for rates in by_round.values()):
        glide_ratios = [r["baseline glide"] / r["baseline redis-py"] for r in by_round.values()]
        targets["glide_to_redis_py_ratio_median"] = round(statistics.median(glide_ratios), 3)

    for name in ("join", "status", "heartbeat"):
        runs = [row for row in open_rows if row.name == name]
        if not runs:
            continue  # no open-loop rounds were asked for
        p99s = [row.p99_ms if row.p99_ms is not None else float("inf") for row in runs]
        median_p99_ms = statistics.median(p99s)
        targets[f"half_load_p99_ms_{name}_median"] = median_p99_ms
        errors = sum(row.errors for row in runs)
        targets[f"half_load_p99_{name}_met"] = (
            median_p99_ms < HALF_LOAD_P99_TARGET_MS and not errors
        )

    for key in ("release_loop", "release_service"):
        if key in results:
            targets[f"{key}_within_2_percent"] = results[key]["within_tolerance"]
    return targets


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = [
        " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in [header, *rows]
    ]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def measurement_cells(row: Measurement, server_group: str) -> list[str]:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    cpu = row.cpu_cores
    server_cores = cpu.get(server_group, 0.0)
    # CPU time per request varies less with other load on the machine than throughput does.
    per_request_us = (server_cores + cpu["redis"]) / max(row.ok_per_s, 1.0) * 1e6
    return [
        row.name,
        "-" if row.round_number is None else str(row.round_number),
        row.load,
        f"{row.ok_per_s:.0f}",
        ms(row.p50_ms),
        ms(row.p99_ms),
        str(row.errors),
        f"{server_cores:.2f}",
        f"{cpu['redis']:.2f}",
        f"{per_request_us:.0f}",
        f"{cpu['generator']:.2f}",
        f"{cpu['other']:.2f}",
    ]


def server_group_of(name: str) -> str:
    if name == "baseline redis-py":
        return "baseline"
    if name == "baseline glide":
        return "glide"
    if name.endswith(NO_LIMITS_SUFFIX):
        return "service_no_limits"
    return "service"


def print_report(
    results: dict[str, Any], closed: list[Measurement], open_rows: list[Measurement]
) -> None:
    machine = results["machine"]
    source = results["source"]

    print()
    print(f"source: commit {source['commit']}, {source['changed_src_files']} changed files in src/")
    print(
        f"machine: {machine['cores']} cores, {machine['cpu_model']}, {machine['ram_gib']} GiB, "
        f"Python {machine['python']}"
    )

    header = [
        "operation",
        "round",
        "load",
        "ok/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "server cores",
        "redis cores",
        "server+redis CPU us/req",
        "generator cores",
        "other cores",
    ]
    rows = [measurement_cells(row, server_group_of(row.name)) for row in [*closed, *open_rows]]
    print(format_table(header, rows))

    print()
    for key in ("release_loop", "release_service"):
        if key in results:
            release = results[key]
            print(
                f"{key}: admitted {release['admitted']} in {release['window_s']:.3f} s "
                f"({release['admitted_per_s']}/s, expected {release['expected']}); "
                f"prefill {release['entries_prefilled']} at {release['prefill_joins_per_s']}/s"
            )
    print()
    for name, value in results["targets"].items():
        print(f"{name}: {value}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup-s", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--rounds", type=int, default=1, help="closed-loop repetitions")
    parser.add_argument("--open-rounds", type=int, default=1, help="open-loop repetitions")
    parser.add_argument("--connections", type=int, default=128, help="closed-loop connections")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers per server")
    parser.add_argument(
        "--open-load-fraction", type=float, default=0.5, help="open-loop rate / closed-loop max"
    )
    parser.add_argument(
        "--open-client", choices=("raw", "aiohttp"), default="raw", help="open-loop HTTP client"
    )
    parser.add_argument("--queue-ids", type=int, default=10_000, help="entries to poll")
    parser.add_argument("--release-entries", type=int, default=150_000)
    parser.add_argument("--release-rate-per-s", type=float, default=10_000.0)
    parser.add_argument("--skip-release", action="store_true", help="skip both release runs")
    parser.add_argument("--skip-glide", action="store_true", help="skip the glide baseline")
    parser.add_argument(
        "--skip-no-limits",
        action="store_true",
        help="skip the second service, which runs with every rate limit off",
    )
    parser.add_argument(
        "--quiet-max-other-cores",
        type=float,
        default=0.2,
        help="before each run, wait until processes this run did not start use at most this",
    )
    parser.add_argument(
        "--quiet-max-wait-s",
        type=float,
        default=120.0,
        help="maximum seconds to wait for a quiet machine",
    )
    parser.add_argument(
        "--imbalance-retries",
        type=int,
        default=2,
        help="repeat a closed-loop run whose connections landed on one worker, this many times",
    )
    parser.add_argument("--json", help="also write every result to this JSON file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the server logs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for tool in ("redis-server", "wrk"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is not on PATH; install it (Debian: apt-get install {tool})")
            return 2

    work_dir = Path(tempfile.mkdtemp(prefix="gatekeep-bench-"))
    started: list[Started] = []
    try:
        results = run_suite(args, work_dir, started)
    finally:
        for process in reversed(started):
            stop(process)
        if args.keep_logs:
            print(f"logs kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)

    if args.json:
        Path(args.json).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
