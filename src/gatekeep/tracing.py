"""Optional OpenTelemetry tracing of HTTP requests.

Tracing turns on only when the OpenTelemetry SDK, its OTLP exporter and its ASGI
instrumentation are installed (`pip install gatekeep[tracing]`) and the standard variable
`OTEL_EXPORTER_OTLP_ENDPOINT` is set. Otherwise `enable_tracing` changes nothing. The exporter
reads its other settings from the standard `OTEL_*` variables.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from starlette.applications import Starlette

logger = logging.getLogger(__name__)

ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"


def enable_tracing(app: Starlette, service_name: str = "gatekeep") -> bool:
    """Add a tracing middleware to `app` when tracing is configured; return whether it did."""
    endpoint = os.environ.get(ENDPOINT_VARIABLE)
    if not endpoint:
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as error:
        logger.warning(
            "tracing.unavailable reason=%s is set but an OpenTelemetry package is missing "
            "(%s); install gatekeep[tracing]",
            ENDPOINT_VARIABLE,
            error.name,
        )
        return False

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    middleware: Any = OpenTelemetryMiddleware
    app.add_middleware(middleware)
    # Only the host is logged: an endpoint URL may carry credentials.
    logger.info("tracing.enabled endpoint_host=%s", _host_of(endpoint))
    return True


def _host_of(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or "unknown"
