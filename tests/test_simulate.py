"""`gatekeep simulate`, the main job, against an embedded service and a two-worker Redis one."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import start_service
from test_api import put_event


def summary_value(output: str, label: str) -> str:
    match = re.search(rf"^{label}\s+(.+)$", output, re.MULTILINE)
    assert match, f"{label!r} missing from:\n{output}"
    return match.group(1)


def test_simulate_spawn_embedded() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gatekeep.cli", "simulate", "--spawn", "--clients", "200",
         "--abandon-fraction", "0.1", "--hold-s", "0.2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout
    abandoned = int(summary_value(output, "abandoned").split()[0])
    expired = int(summary_value(output, "expired").split()[0])
    abandoned_admitted = int(summary_value(output, "abandoned, admitted").split()[0])
    assert summary_value(output, "joined") == "200"
    assert summary_value(output, "duplicate admissions") == "0"
    assert int(summary_value(output, "admitted")) == 200 - abandoned
    assert int(summary_value(output, "left")) == 200 - abandoned
    assert expired + abandoned_admitted == abandoned
    # At 20 users/s only the first ~100 reach the front within the 5 s heartbeat timeout.
    assert expired >= 1
    observed = float(summary_value(output, "release rate").split("/")[0])
    assert 16 <= observed <= 22  # the example event releases 20 users per second


async def test_simulate_against_two_workers_on_redis(redis_url: str) -> None:
    service = start_service(redis_url=redis_url, workers=2)
    try:
        async with service.client() as client:
            await put_event(
                client, "sim", release_rate=25, max_capacity=1000, heartbeat_timeout_s=3
            )
        result = subprocess.run(
            [sys.executable, "-m", "gatekeep.cli", "simulate", "--url", service.base_url,
             "--event", "sim", "--clients", "100", "--abandon-fraction", "0", "--hold-s", "0.1"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        service.stop()

    assert result.returncode == 0, result.stdout + result.stderr
    assert summary_value(result.stdout, "admitted") == "100"
    assert summary_value(result.stdout, "duplicate admissions") == "0"
    observed = float(summary_value(result.stdout, "release rate").split("/")[0])
    assert 20 <= observed <= 27.5
