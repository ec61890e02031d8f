"""Prometheus metrics, served on the metrics port, never on the public port.

Label values are bounded: event ids and route templates only, never queue ids, device ids or
raw paths. With several worker processes, `gatekeep serve` sets PROMETHEUS_MULTIPROC_DIR
before the workers start, and the metrics endpoint merges every worker's samples.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

logger = logging.getLogger(__name__)

JOINS = Counter("gatekeep_joins_total", "Join requests by outcome.", ["event_id", "outcome"])
ADMISSIONS = Counter(
    "gatekeep_admissions_total", "Users admitted by the release loop.", ["event_id"]
)
EXPIRATIONS = Counter(
    "gatekeep_expirations_total",
    "Entries expired by the release loop: silent waiting entries or ended sessions.",
    ["event_id", "kind"],
)
LEAVES = Counter(
    "gatekeep_leaves_total", "Entries that left the queue or ended a session.", ["event_id"]
)
WAITING = Gauge(
    "gatekeep_waiting_users",
    "Users waiting, read from the store.",
    ["event_id"],
    multiprocess_mode="mostrecent",
)
ADMITTED_ACTIVE = Gauge(
    "gatekeep_admitted_active_sessions",
    "Admitted sessions active now.",
    ["event_id"],
    multiprocess_mode="mostrecent",
)
OBSERVED_RATE = Gauge(
    "gatekeep_observed_release_rate_per_second",
    "Admissions per second while users waited (exponentially weighted, 30 s time constant).",
    ["event_id"],
    multiprocess_mode="mostrecent",
)
HTTP_DURATION = Histogram(
    "gatekeep_http_request_duration_seconds",
    "HTTP request duration by route template and status.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
STORE_DURATION = Histogram(
    "gatekeep_store_call_duration_seconds",
    "Store call duration by operation.",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
STORE_ERRORS = Counter("gatekeep_store_errors_total", "Store calls that failed.", ["operation"])
RATE_LIMITED = Counter(
    "gatekeep_rate_limited_requests_total",
    "Requests rejected with 429 by a rate limit, by route kind and limited dimension.",
    ["kind", "dimension"],
)
WAIT_TIME = Histogram(
    "gatekeep_wait_seconds",
    "Time from join to admission of admitted users.",
    ["event_id"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
)
WAITING_BY_BUCKET = Gauge(
    "gatekeep_waiting_users_by_bucket",
    "Users waiting in each priority bucket, read from the store.",
    ["event_id", "bucket"],
    multiprocess_mode="mostrecent",
)
RELEASE_RATE = Gauge(
    "gatekeep_release_rate_per_second",
    "Configured release rate (users admitted per second).",
    ["event_id"],
    multiprocess_mode="mostrecent",
)
ADMIN_ACTIONS = Counter(
    "gatekeep_admin_actions_total", "Admin API actions that changed state.", ["action"]
)
TOKENS_ISSUED = Counter(
    "gatekeep_tokens_issued_total",
    "Admission tokens recorded in the store, once per token.",
    ["event_id"],
)
TOKENS_VERIFIED = Counter(
    "gatekeep_tokens_verified_total",
    "Tokens found active by consume or introspect.",
    ["operation"],
)
TOKENS_REJECTED = Counter(
    "gatekeep_tokens_rejected_total",
    "Tokens found inactive by consume or introspect, by reason.",
    ["operation", "reason"],
)
TOKENS_REVOKED = Counter(
    "gatekeep_tokens_revoked_total",
    "Token records revoked by an admin, by the scope of the request (jti, device, event).",
    ["scope"],
)
WEBHOOK_DELIVERIES = Counter(
    "gatekeep_webhook_deliveries_total",
    "Webhook messages by final outcome: delivered, failed (attempts used up or rejected), "
    "dropped (queue full or shutdown) or skipped (no GATEKEEP_WEBHOOK_SECRET).",
    ["event_id", "kind", "outcome"],
)
WEBHOOK_RETRIES = Counter(
    "gatekeep_webhook_retries_total",
    "Webhook delivery attempts that failed and were scheduled again.",
    ["event_id", "kind"],
)


# Labelled children of HTTP_DURATION by (method, route template, status). Label values are
# bounded (see the module docstring), and a cached child skips `labels()` on every request.
_http_duration_children: dict[tuple[str, str, int], Histogram] = {}


def observe_http(method: str, route: str, status: int, duration_s: float) -> None:
    """Record one HTTP request's duration under its method, route template and status."""
    key = (method, route, status)
    child = _http_duration_children.get(key)
    if child is None:
        child = HTTP_DURATION.labels(method, route, str(status))
        _http_duration_children[key] = child
    child.observe(duration_s)


@contextmanager
def store_timer(operation: str) -> Iterator[None]:
    """Time a store call; count it as an error when it raises."""
    started = time.perf_counter()
    try:
        yield
    except Exception:
        STORE_ERRORS.labels(operation).inc()
        raise
    finally:
        STORE_DURATION.labels(operation).observe(time.perf_counter() - started)


def prepare_multiprocess_directory(path: str) -> None:
    """Create the multiprocess directory, or empty it of a previous run's sample files.

    Files left by an earlier run would be merged into this run's counters, so they go before
    any worker starts.
    """
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    stale = list(directory.glob("*.db"))
    for sample_file in stale:
        sample_file.unlink()
    if stale:
        logger.info("metrics.stale_files_removed directory=%s count=%s", path, len(stale))


def serve_metrics(host: str, port: int) -> None:
    """Start the metrics HTTP server in a background thread of this process."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        start_http_server(port, addr=host, registry=registry)
    else:
        start_http_server(port, addr=host)
