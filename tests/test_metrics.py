"""Prometheus metrics after a scripted run, in one process and with two worker processes."""

from __future__ import annotations

import asyncio
import importlib.util
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from conftest import Service, start_service
from gatekeep.tracing import enable_tracing
from test_api import join, put_event, wait_for_status

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

QUEUE_ID_LIKE = re.compile(r"[A-Za-z0-9_-]{22}\.")


def scrape(service: Service) -> Samples:
    port = service.env["GATEKEEP_METRICS_PORT"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum every sample of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(
        sample_value
        for (sample_name, sample_labels), sample_value in samples.items()
        if sample_name == name and wanted <= sample_labels
    )


async def scripted_run(service: Service) -> list[str]:
    """Join 6 (a 7th is over the device limit), admit 4, leave 2, keep 2 waiting."""
    async with service.client() as client:
        await put_event(client, "ev", release_rate=100)
        queue_ids = [
            (await join(client, "ev", f"d{index}")).json()["queue_id"] for index in range(4)
        ]
        for queue_id in queue_ids:
            await wait_for_status(client, queue_id, "admitted")
        await client.delete(f"/v1/queue/{queue_ids[0]}")
        await client.delete(f"/v1/queue/{queue_ids[1]}")
        await put_event(client, "ev", release_rate=100, paused=True)
        await join(client, "ev", "waiting-1")
        await join(client, "ev", "limited")
        limited = await join(client, "ev", "limited")
        assert limited.status_code == 429
        await client.get("/v1/queue/not-a-queue-id")
        await client.get("/no/such/route")
    await asyncio.sleep(1.5)  # the release loop refreshes gauges once a second
    return queue_ids


async def test_metrics_after_scripted_run(redis_url: str) -> None:
    running = start_service(
        redis_url=redis_url, extra_env={"GATEKEEP_RATE_LIMITS": "join.device=1/minute"}
    )
    try:
        queue_ids = await scripted_run(running)
        samples = scrape(running)
        text = httpx.get(
            f"http://127.0.0.1:{running.env['GATEKEEP_METRICS_PORT']}/metrics", timeout=5
        ).text
    finally:
        running.stop()

    assert value(samples, "gatekeep_joins_total", event_id="ev", outcome="created") == 6
    assert value(samples, "gatekeep_admissions_total", event_id="ev") == 4
    assert value(samples, "gatekeep_leaves_total", event_id="ev") == 2
    assert value(samples, "gatekeep_waiting_users", event_id="ev") == 2
    assert value(samples, "gatekeep_waiting_users_by_bucket", event_id="ev", bucket="default") == 2
    assert value(samples, "gatekeep_waiting_users_by_bucket", event_id="ev", bucket="vip") == 0
    assert value(samples, "gatekeep_admitted_active_sessions", event_id="ev") == 2
    assert value(samples, "gatekeep_release_rate_per_second", event_id="ev") == 100
    assert value(samples, "gatekeep_wait_seconds_count", event_id="ev") == 4
    assert (
        value(samples, "gatekeep_rate_limited_requests_total", kind="join", dimension="device") == 1
    )
    assert value(samples, "gatekeep_admin_actions_total", action="put_event") == 2
    assert value(samples, "gatekeep_tokens_issued_total") >= 4
    assert (
        value(
            samples,
            "gatekeep_http_request_duration_seconds_count",
            route="/v1/events/{event_id}/join",
            status="201",
        )
        == 6
    )
    assert value(samples, "gatekeep_http_request_duration_seconds_count", route="unmatched") == 1
    assert value(samples, "gatekeep_store_call_duration_seconds_count", operation="release") > 0
    assert "gatekeep_store_errors_total" in text
    assert "gatekeep_webhook_deliveries_total" in text
    for queue_id in queue_ids:
        assert queue_id.split(".")[0] not in text
    labels = [label for _, sample_labels in samples for label in sample_labels]
    assert not [value_ for _, value_ in labels if QUEUE_ID_LIKE.match(value_)]
    assert not [value_ for name, value_ in labels if name == "route" and value_.startswith("/no")]


async def test_metrics_merge_two_workers(redis_url: str) -> None:
    running = start_service(
        redis_url=redis_url,
        workers=2,
        extra_env={"GATEKEEP_RATE_LIMITS": "status.ip=off,status.device=off"},
    )
    requests = 60
    try:
        async with running.client() as client:
            await put_event(client, "ev", paused=True)
            queue_id = (await join(client, "ev", "d1")).json()["queue_id"]
        # A new connection per request, so the kernel spreads them over both workers.
        for _ in range(requests):
            async with running.client() as client:
                assert (await client.get(f"/v1/queue/{queue_id}")).status_code == 200
        await asyncio.sleep(1.5)
        samples = scrape(running)
    finally:
        running.stop()

    route_count = value(
        samples,
        "gatekeep_http_request_duration_seconds_count",
        route="/v1/queue/{queue_id}",
        status="200",
    )
    assert route_count == requests
    assert value(samples, "gatekeep_joins_total", event_id="ev", outcome="created") == 1
    # Both workers run the release loop and set the gauge; the merged value is one number.
    assert value(samples, "gatekeep_waiting_users", event_id="ev") == 1
    pids = {
        dict(sample_labels).get("pid")
        for name, sample_labels in samples
        if name == "gatekeep_http_request_duration_seconds_count"
    }
    assert pids == {None}


async def test_restart_drops_previous_run_samples(redis_url: str, tmp_path: Path) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        running = start_service(redis_url=redis_url, workers=2, extra_env=env)
        try:
            async with running.client() as client:
                await put_event(client, "ev", paused=True)
            samples = scrape(running)
        finally:
            running.stop()

        # The second run counts its own PUT only, not the first run's too.
        assert value(samples, "gatekeep_admin_actions_total", action="put_event") == 1


def test_tracing_off_without_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    app = Starlette()

    assert enable_tracing(app) is False
    assert app.user_middleware == []


def test_tracing_off_without_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("opentelemetry") is not None:
        pytest.skip("OpenTelemetry is installed here; this case covers its absence")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    app = Starlette()

    assert enable_tracing(app) is False
    assert app.user_middleware == []
