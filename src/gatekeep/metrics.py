"""Prometheus metrics, served on the metrics port, never on the public port.

Label values are bounded: event ids and route templates only, never queue ids, device ids or
raw paths. With several worker processes, `gatekeep serve` sets PROMETHEUS_MULTIPROC_DIR
before the workers start, and the metrics endpoint merges every worker's samples.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

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


def serve_metrics(host: str, port: int) -> None:
    """Start the metrics HTTP server in a background thread of this process."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        start_http_server(port, addr=host, registry=registry)
    else:
        start_http_server(port, addr=host)
