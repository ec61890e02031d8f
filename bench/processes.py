"""Start and stop the processes a benchmark run needs: redis-server and uvicorn servers.

Every process is started in its own session, so stopping it can also reach the uvicorn
workers it forked, and nothing else. All servers listen on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
STOP_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 30.0
READY_POLL_S = 0.1


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Started:
    """A process this run started, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, max_chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-max_chars:]
        return ""


def clean_environment(extra: dict[str, str]) -> dict[str, str]:
    """Return this process's environment without GATEKEEP_* and BENCH_* variables, plus `extra`.

    A stray GATEKEEP_EVENTS_FILE or GATEKEEP_WORKERS in the caller's shell would otherwise
    change what is measured.
    """
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("GATEKEEP_", "BENCH_", "PROMETHEUS_MULTIPROC_DIR"))
    }
    return {**inherited, **extra}


def start(
    name: str, command: list[str], log_dir: Path, port: int, env: dict[str, str] | None = None
) -> Started:
    """Start `command` in a new session with its output in `log_dir/name.log`.

    `env` is the whole environment of the process; None means this process's environment.
    """
    log_path = log_dir / f"{name}.log"
    full_env = dict(os.environ) if env is None else env
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            start_new_session=True,
        )
    return Started(name, process, log_path, port)


def stop(started: Started) -> None:
    """Stop a started process: SIGTERM to its pid, then SIGKILL to its own process group.

    The group is the session `start` created, so the SIGKILL reaches only this process and
    the workers it forked.
    """
    process = started.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"bench: {started.name} (pid {started.pid}) ignored SIGTERM; killing its group")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        # Workers left behind by a parent that exited still carry the group id.
        os.killpg(started.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_TIMEOUT_S)


def start_redis(log_dir: Path) -> Started:
    """Start a redis-server without persistence on a free loopback port."""
    port = free_port()
    command = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        LOOPBACK,
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "yes",
    ]
    started = start("redis", command, log_dir, port, clean_environment({}))
    wait_for_redis(started)
    return started


def wait_for_redis(started: Started) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if started.process.poll() is not None:
            raise RuntimeError(f"redis-server exited early:\n{started.log_tail()}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection((LOOPBACK, started.port), timeout=1) as connection,
        ):
            connection.sendall(b"PING\r\n")
            if connection.recv(64).startswith(b"+PONG"):
                return
        time.sleep(READY_POLL_S)
    raise RuntimeError(f"redis-server did not respond to PING within {READY_TIMEOUT_S} s")


def wait_for_http(started: Started, path: str) -> None:
    """Wait until GET `path` returns 200; raise with the log tail when the process exits."""
    url = f"http://{LOOPBACK}:{started.port}{path}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if started.process.poll() is not None:
            raise RuntimeError(f"{started.name} exited early:\n{started.log_tail()}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(READY_POLL_S)
    raise RuntimeError(
        f"{started.name} did not return 200 for GET {path} within {READY_TIMEOUT_S} s:\n"
        f"{started.log_tail()}"
    )


def python_tool(name: str) -> str:
    """Return the path of a console script installed next to this Python."""
    return str(Path(sys.executable).parent / name)
