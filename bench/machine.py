"""Describe the machine and account for CPU time during a measurement (Linux /proc only)."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "redis",
    "hiredis",
    "orjson",
    "aiohttp",
    "valkey-glide",
)
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def describe() -> dict[str, object]:
    """Return cores, CPU model, RAM, Python, package and tool versions."""
    return {
        "cores": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "ram_gib": round(_mem_total_kib() / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "redis_server": _first_line(["redis-server", "--version"]),
        "wrk": _first_line(["wrk", "--version"]),
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _mem_total_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _first_line(command: list[str]) -> str | None:
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    output = (completed.stdout or completed.stderr).strip()
    return output.splitlines()[0] if output else None


def machine_busy_ticks() -> tuple[int, int]:
    """Return (busy, total) CPU ticks of all cores since boot, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - idle, total


def process_cpu_ticks(process_group_ids: dict[str, int]) -> dict[str, dict[int, int]]:
    """Return user+system ticks of each live process in each named process group, by pid."""
    by_group = {group_id: name for name, group_id in process_group_ids.items()}
    ticks: dict[str, dict[int, int]] = {name: {} for name in process_group_ids}
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat_path.read_text()
        except OSError:
            continue
        # Fields after the command name, which may itself contain spaces and parentheses.
        fields = text.rsplit(")", 1)[1].split()
        name = by_group.get(int(fields[2]))
        if name is not None:
            ticks[name][int(stat_path.parent.name)] = int(fields[11]) + int(fields[12])
    return ticks


def children_cpu_s() -> float:
    """Return CPU seconds of the child processes this process has waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMeter:
    """CPU cores used during one measurement, split by process group.

    `generator` counts the load generator, a child that must have exited (and been waited
    for) before `stop`. `other` is every process on the machine that this run did not start.
    """

    groups: dict[str, int]

    def start(self) -> None:
        self._busy, self._total = machine_busy_ticks()
        self._processes = process_cpu_ticks(self.groups)
        self._children_s = children_cpu_s()
        self.per_process: dict[str, list[float]] = {}

    def stop(self, wall_s: float) -> dict[str, float]:
        """Return cores used per group, `generator`, `other` and `machine` since `start`.

        Also sets `per_process`: the cores of each process of a group, largest first, which
        shows how evenly uvicorn spread the load over its workers.
        """
        busy, total = machine_busy_ticks()
        processes = process_cpu_ticks(self.groups)
        generator_s = children_cpu_s() - self._children_s
        cores = len(os.sched_getaffinity(0))

        # /proc/stat counts ticks of all cores, so its share of `total` scales to cores.
        machine_cores = (busy - self._busy) / max(1, total - self._total) * cores
        result: dict[str, float] = {}
        for name, by_pid in processes.items():
            before = self._processes[name]
            used = [
                (ticks - before.get(pid, 0)) / CLOCK_TICKS_PER_S / wall_s
                for pid, ticks in by_pid.items()
            ]
            result[name] = sum(used)
            self.per_process[name] = sorted((round(value, 2) for value in used), reverse=True)
        result["generator"] = generator_s / wall_s
        ours = sum(result.values())
        result["other"] = max(0.0, machine_cores - ours)
        result["machine"] = machine_cores
        return {name: round(value, 2) for name, value in result.items()}


def wait_for_quiet(
    groups: dict[str, int], max_other_cores: float, max_wait_s: float, sample_s: float = 1.0
) -> float:
    """Wait until processes this run did not start use at most `max_other_cores`.

    Returns the last sample of their use. After `max_wait_s` it returns anyway, so a busy
    machine delays a run by at most that long.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        meter = CpuMeter(groups)
        meter.start()
        time.sleep(sample_s)
        other = meter.stop(sample_s)["other"]
        if other <= max_other_cores or time.monotonic() >= deadline:
            return other
