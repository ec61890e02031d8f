"""SIGTERM stops a service promptly, with its release loop, on both stores and with workers."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from conftest import start_service
from test_api import join, put_event


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_stops_service_on_redis(redis_url: str, workers: int) -> None:
    service = start_service(redis_url=redis_url, workers=workers)
    async with service.client() as client:
        await put_event(client, "ev", release_rate=5)
        for index in range(20):
            await join(client, "ev", f"d{index}")

    started = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    try:
        service.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        service.stop()
        raise AssertionError("gatekeep serve was still running 15 s after SIGTERM") from None

    assert time.monotonic() - started < 15
    assert "release.stop" in service.log_path.read_text()


async def test_sigterm_stops_embedded_service() -> None:
    service = start_service()

    service.process.send_signal(signal.SIGTERM)

    # uvicorn shuts down gracefully, then re-raises the signal, so the exit status is -15.
    assert service.process.wait(timeout=15) in (0, -signal.SIGTERM)
    assert "service.stop" in service.log_path.read_text()
