"""Shared fixtures: a real redis-server per test session, stores of both kinds, and real services.

Nothing here mocks the store or the HTTP server. `redis-server` must be on PATH; the README's
test command installs it.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from gatekeep.model import JoinRequest
from gatekeep.queue import new_queue_id
from gatekeep.store.base import Store
from gatekeep.store.memory import MemoryStore

TOKEN_SECRET = "test-secret-0123456789abcdefghijklmnopqrstuvwxyz"
ADMIN_KEY = "test-admin-key-0123456789"
GRANT_SECRET = "test-grant-secret-0123456789abcdefghijklmnop"
NO_RATE_LIMITS = ",".join(
    f"{kind}.{dimension}=off"
    for kind in ("join", "status", "heartbeat", "admin")
    for dimension in ("device", "ip", "user", "key")
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A redis-server on a loopback port of its own, which a test may stop and start again."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.exit(
                "redis-server is not installed; install it (Debian: apt-get install redis-server) "
                "or run the README's test command, which installs it",
                returncode=3,
            )
        self.binary = binary
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="gatekeep-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.directory,
            "--logfile", os.path.join(self.directory, "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(command)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as connection:
                    connection.sendall(b"PING\r\n")
                    if connection.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port} within 10 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def remove_directory(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as connection:
            connection.sendall(b"FLUSHALL\r\n")
            connection.recv(16)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()
    server.remove_directory()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if redis_server.process is None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server for this test alone, for tests that stop and restart it."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()
    server.remove_directory()


async def make_redis_store(url: str) -> Store:
    from gatekeep.store.redis import RedisStore

    store = RedisStore.from_url(url, call_timeout_s=2.0)
    await store.connect()
    return store


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """Each test using this fixture runs once per store kind."""
    if request.param == "memory":
        memory = MemoryStore()
        yield memory
        await memory.close()
        return
    url = request.getfixturevalue("redis_url")
    redis_store = await make_redis_store(url)
    yield redis_store
    await redis_store.close()


@dataclass
class Service:
    """A `gatekeep serve` process on a loopback port, with its log captured to a file."""

    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def client(self, **kwargs: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=10.0, **kwargs)  # type: ignore[arg-type]

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_KEY}"}

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()

    def stop(self) -> None:
        """Stop the service; kill its whole process group if it does not stop in 10 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # Workers left behind by a crashed parent would keep releasing on the shared Redis.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


LOG_DIRECTORY = Path(tempfile.mkdtemp(prefix="gatekeep-test-logs-"))


def start_service(
    *,
    redis_url: str | None = None,
    events_file: Path | None = None,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    wait_ready: bool = True,
) -> Service:
    """Start `gatekeep serve` as a real process and wait until /health responds."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEKEEP_")}
    env.update(
        GATEKEEP_PORT=str(port),
        GATEKEEP_METRICS_PORT=str(free_port()),
        GATEKEEP_ADMIN_API_KEYS=ADMIN_KEY,
        GATEKEEP_TOKEN_SECRET=TOKEN_SECRET,
        GATEKEEP_GRANT_SECRET=GRANT_SECRET,
        GATEKEEP_LOG_LEVEL="DEBUG",
        GATEKEEP_RELEASE_TICK_MS="50",
        # Tests drive many requests from one address; rate-limit tests set their own limits.
        GATEKEEP_RATE_LIMITS=NO_RATE_LIMITS,
    )
    if redis_url:
        env["GATEKEEP_REDIS_URL"] = redis_url
    if events_file:
        env["GATEKEEP_EVENTS_FILE"] = str(events_file)
    env.update(extra_env or {})

    log_path = LOG_DIRECTORY / f"service-{port}.log"
    command = [sys.executable, "-m", "gatekeep.cli", "serve", "--workers", str(workers)]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    service = Service(f"http://127.0.0.1:{port}", process, log_path, env)
    if wait_ready:
        _wait_healthy(service)
    return service


def _wait_healthy(service: Service) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(
                f"gatekeep serve exited with {service.process.returncode}:\n"
                + service.log_path.read_text()[-3000:]
            )
        try:
            if httpx.get(service.base_url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    service.stop()
    raise RuntimeError("gatekeep serve did not answer /health within 20 s")


@pytest.fixture(params=["memory", "redis"])
def service(request: pytest.FixtureRequest) -> Iterator[Service]:
    """A running service, once on the embedded store and once on Redis."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    running = start_service(redis_url=url)
    yield running
    running.stop()


@pytest.fixture
def redis_service(redis_url: str) -> Iterator[Service]:
    running = start_service(redis_url=redis_url)
    yield running
    running.stop()


def all_service_logs() -> list[Path]:
    return sorted(LOG_DIRECTORY.glob("service-*.log"))


# A compact JWS (header.payload.signature) whose header and payload are JSON objects.
JWT_PATTERN = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")


def leaks_in_service_logs() -> list[str]:
    """Return one line per service log of this run that contains a test secret or any JWT."""
    leaks = []
    for path in all_service_logs():
        text = path.read_text(errors="replace")
        for secret in (TOKEN_SECRET, ADMIN_KEY, GRANT_SECRET):
            if secret in text:
                leaks.append(f"{path.name}: contains the secret starting {secret[:6]}")
        if JWT_PATTERN.search(text):
            leaks.append(f"{path.name}: contains a token")
    return leaks


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when any service log of the whole run leaks a secret or a token.

    Then remove the logs after a passing run, and keep them to debug a failing one.
    """
    leaks = leaks_in_service_logs()
    if leaks:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("service logs leak secrets or tokens:", red=True)
            for leak in leaks:
                reporter.write_line(f"  {leak}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    if exitstatus == 0:
        shutil.rmtree(LOG_DIRECTORY, ignore_errors=True)


def join_request(event_id: str, device_id: str, bucket: str = "default") -> JoinRequest:
    """Return a join of `device_id` with fresh random ids, as the service would build it."""
    return JoinRequest(
        queue_id=new_queue_id(event_id),
        event_id=event_id,
        device_id=device_id,
        user_id=None,
        bucket=bucket,
        token_id=secrets.token_urlsafe(16),
        nonce=secrets.token_urlsafe(12),
    )
