"""Service settings from `GATEKEEP_*` environment variables and events from a TOML file.

Every problem raises ConfigError with one message that names the setting, the bad value and
the fix; `gatekeep serve` prints it and exits before binding a port.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatekeep.errors import InvalidInput
from gatekeep.model import EventConfig

ENV_PREFIX = "GATEKEEP_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MIN_SECRET_BYTES = 32


class ConfigError(ValueError):
    """Raised for an invalid or missing setting; the message names it and the fix."""


@dataclass(frozen=True)
class Settings:
    """Process-wide settings. Each field maps to `GATEKEEP_<FIELD NAME IN CAPITALS>`."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    redis_url: str | None = None
    token_secret: str | None = None
    token_keys_file: str | None = None
    grant_secret: str | None = None
    admin_api_keys: tuple[str, ...] = ()
    origin_api_keys: tuple[str, ...] = ()  # bearer keys for token consume and introspect
    log_level: str = "INFO"
    metrics_port: int | None = 9100
    metrics_host: str | None = None  # None: the same address as the service
    events_file: str | None = None
    release_tick_ms: int = 100
    release_max_batch: int = 2000
    store_timeout_s: float = 2.0
    max_body_bytes: int = 8192
    token_issuer: str = "gatekeep"  # noqa: S105 - the `iss` claim, not a secret
    token_leeway_s: int = 5
    stream_tick_ms: int = 1000
    stream_heartbeat_s: float = 15.0
    stream_max_connections: int = 20_000
    page_template_dir: str | None = None
    webhook_secret: str | None = None
    webhook_timeout_s: float = 5.0
    webhook_max_attempts: int = 8
    webhook_backoff_s: float = 1.0
    webhook_backoff_max_s: float = 60.0
    webhook_queue_size: int = 10_000
    # ("kind.dimension", "N/period" or "off") pairs over ratelimit.DEFAULT_RATE_LIMITS.
    rate_limits: tuple[tuple[str, str], ...] = ()
    trusted_proxies: tuple[str, ...] = ()  # addresses or CIDR networks of trusted proxies
    events: tuple[EventConfig, ...] = field(default=())

    @property
    def embedded(self) -> bool:
        """True when no Redis URL is set, so state lives in this process's memory."""
        return self.redis_url is None


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read settings from `environ` (default: os.environ), apply CLI `overrides`, validate."""
    env = os.environ if environ is None else environ

    def text(name: str) -> str | None:
        value = env.get(ENV_PREFIX + name.upper())
        return value if value not in (None, "") else None

    values: dict[str, Any] = {}
    values["host"] = text("host") or Settings.host
    values["port"] = _port(text("port"), "GATEKEEP_PORT", Settings.port)
    values["workers"] = _int(text("workers"), "GATEKEEP_WORKERS", Settings.workers, 1, 64)
    values["redis_url"] = _redis_url(text("redis_url"))
    values["token_secret"] = text("token_secret")
    values["token_keys_file"] = text("token_keys_file")
    values["grant_secret"] = text("grant_secret")
    values["admin_api_keys"] = _admin_keys(text("admin_api_keys"))
    values["origin_api_keys"] = _origin_keys(text("origin_api_keys"))
    values["rate_limits"] = _rate_limits(text("rate_limits"))
    values["trusted_proxies"] = _trusted_proxies(text("trusted_proxies"))
    values["log_level"] = _log_level(text("log_level"))
    values["metrics_port"] = _metrics_port(text("metrics_port"))
    values["metrics_host"] = text("metrics_host")
    values["events_file"] = text("events_file")
    values["release_tick_ms"] = _int(
        text("release_tick_ms"), "GATEKEEP_RELEASE_TICK_MS", Settings.release_tick_ms, 10, 5000
    )
    values["release_max_batch"] = _int(
        text("release_max_batch"),
        "GATEKEEP_RELEASE_MAX_BATCH",
        Settings.release_max_batch,
        1,
        100_000,
    )
    values["store_timeout_s"] = _float(
        text("store_timeout_s"), "GATEKEEP_STORE_TIMEOUT_S", Settings.store_timeout_s, 0.05, 60
    )
    values["max_body_bytes"] = _int(
        text("max_body_bytes"), "GATEKEEP_MAX_BODY_BYTES", Settings.max_body_bytes, 256, 1_048_576
    )
    values["token_issuer"] = text("token_issuer") or Settings.token_issuer
    values["token_leeway_s"] = _int(
        text("token_leeway_s"), "GATEKEEP_TOKEN_LEEWAY_S", Settings.token_leeway_s, 0, 300
    )

    values["webhook_secret"] = text("webhook_secret")
    values["webhook_timeout_s"] = _float(
        text("webhook_timeout_s"), "GATEKEEP_WEBHOOK_TIMEOUT_S", Settings.webhook_timeout_s, 0.1, 60
    )
    values["webhook_max_attempts"] = _int(
        text("webhook_max_attempts"),
        "GATEKEEP_WEBHOOK_MAX_ATTEMPTS",
        Settings.webhook_max_attempts,
        1,
        20,
    )
    values["webhook_backoff_s"] = _float(
        text("webhook_backoff_s"),
        "GATEKEEP_WEBHOOK_BACKOFF_S",
        Settings.webhook_backoff_s,
        0.01,
        60,
    )
    values["webhook_backoff_max_s"] = _float(
        text("webhook_backoff_max_s"),
        "GATEKEEP_WEBHOOK_BACKOFF_MAX_S",
        Settings.webhook_backoff_max_s,
        0.01,
        3600,
    )
    values["webhook_queue_size"] = _int(
        text("webhook_queue_size"),
        "GATEKEEP_WEBHOOK_QUEUE_SIZE",
        Settings.webhook_queue_size,
        1,
        1_000_000,
    )

    values["stream_tick_ms"] = _int(
        text("stream_tick_ms"), "GATEKEEP_STREAM_TICK_MS", Settings.stream_tick_ms, 50, 10_000
    )
    values["stream_heartbeat_s"] = _float(
        text("stream_heartbeat_s"),
        "GATEKEEP_STREAM_HEARTBEAT_S",
        Settings.stream_heartbeat_s,
        1,
        120,
    )
    values["stream_max_connections"] = _int(
        text("stream_max_connections"),
        "GATEKEEP_STREAM_MAX_CONNECTIONS",
        Settings.stream_max_connections,
        0,
        1_000_000,
    )
    values["page_template_dir"] = _template_dir(text("page_template_dir"))

    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
    if values["events_file"]:
        values["events"] = load_events_file(values["events_file"])

    settings = Settings(**values)
    _check_combination(settings)
    return settings


def _check_combination(settings: Settings) -> None:
    _check_host(settings.host, "--host/GATEKEEP_HOST")
    if settings.metrics_host is not None:
        _check_host(settings.metrics_host, "GATEKEEP_METRICS_HOST")
    if settings.metrics_port is not None and settings.metrics_port == settings.port:
        raise ConfigError(
            f"GATEKEEP_METRICS_PORT={settings.metrics_port} is the same as the service port; "
            "choose another port, or set GATEKEEP_METRICS_PORT=off"
        )
    if settings.token_secret is not None and len(settings.token_secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"GATEKEEP_TOKEN_SECRET is {len(settings.token_secret.encode())} bytes; use at least "
            f"{MIN_SECRET_BYTES} random bytes, for example the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    if settings.grant_secret is not None and len(settings.grant_secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"GATEKEEP_GRANT_SECRET is {len(settings.grant_secret.encode())} bytes; use at least "
            f"{MIN_SECRET_BYTES} random bytes"
        )
    _check_webhook_settings(settings)
    if settings.embedded:
        if settings.workers > 1:
            raise ConfigError(
                f"--workers/GATEKEEP_WORKERS={settings.workers} needs a shared store: the embedded "
                "store lives in one process. Set GATEKEEP_REDIS_URL or use 1 worker"
            )
        return
    if settings.token_secret is None and settings.token_keys_file is None:
        raise ConfigError(
            "GATEKEEP_TOKEN_SECRET is missing; with GATEKEEP_REDIS_URL set, every process must "
            "sign with the same key. Set GATEKEEP_TOKEN_SECRET (at least 32 random bytes) or "
            "GATEKEEP_TOKEN_KEYS_FILE"
        )
    if not settings.admin_api_keys:
        raise ConfigError(
            "GATEKEEP_ADMIN_API_KEYS is missing; with GATEKEEP_REDIS_URL set, the admin API needs "
            "a key. Set GATEKEEP_ADMIN_API_KEYS to one or more comma-separated keys of at least "
            "16 characters"
        )


def _check_webhook_settings(settings: Settings) -> None:
    secret = settings.webhook_secret
    if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"GATEKEEP_WEBHOOK_SECRET is {len(secret.encode())} bytes; use at least "
            f"{MIN_SECRET_BYTES} random bytes"
        )
    if settings.webhook_backoff_max_s < settings.webhook_backoff_s:
        raise ConfigError(
            f"GATEKEEP_WEBHOOK_BACKOFF_MAX_S={settings.webhook_backoff_max_s} is below "
            f"GATEKEEP_WEBHOOK_BACKOFF_S={settings.webhook_backoff_s}; raise the maximum"
        )
    if secret is None:
        for event in settings.events:
            if event.webhooks:
                raise ConfigError(
                    f"event {event.event_id!r} of GATEKEEP_EVENTS_FILE has webhooks but "
                    "GATEKEEP_WEBHOOK_SECRET is missing; set it (at least 32 random bytes) so "
                    "receivers can verify the payloads"
                )


def load_events_file(path: str) -> tuple[EventConfig, ...]:
    """Parse a TOML file of `[[events]]` tables into validated event configurations."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(
            f"GATEKEEP_EVENTS_FILE={path!r} cannot be read ({error.strerror}); check the path"
        ) from error
    try:
        document = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"GATEKEEP_EVENTS_FILE={path!r} is not valid TOML: {error}") from error

    unknown = sorted(set(document) - {"events"})
    if unknown:
        raise ConfigError(
            f"GATEKEEP_EVENTS_FILE={path!r} has unknown top-level key {unknown[0]!r}; "
            "define events as [[events]] tables"
        )
    tables = document.get("events", [])
    if not isinstance(tables, list):
        raise ConfigError(f"GATEKEEP_EVENTS_FILE={path!r}: 'events' must be [[events]] tables")

    events: list[EventConfig] = []
    for index, table in enumerate(tables):
        try:
            events.append(EventConfig.from_dict(table))
        except InvalidInput as error:
            raise ConfigError(
                f"GATEKEEP_EVENTS_FILE={path!r}, events[{index}].{error.field}: {error.detail}"
            ) from error

    ids = [event.event_id for event in events]
    duplicates = sorted({event_id for event_id in ids if ids.count(event_id) > 1})
    if duplicates:
        raise ConfigError(
            f"GATEKEEP_EVENTS_FILE={path!r} defines event_id {duplicates[0]!r} more than once; "
            "give each event a unique id"
        )
    return tuple(events)


def _int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a whole number; use {low} to {high}") from None
    if not low <= number <= high:
        raise ConfigError(f"{name}={number} is out of range; use {low} to {high}")
    return number


def _float(value: str | None, name: str, default: float, low: float, high: float) -> float:
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number; use {low} to {high}") from None
    if not low <= number <= high:
        raise ConfigError(f"{name}={number} is out of range; use {low} to {high}")
    return number


def _port(value: str | None, name: str, default: int) -> int:
    return _int(value, name, default, 1, 65535)


def _metrics_port(value: str | None) -> int | None:
    if value is not None and value.lower() in ("off", "none", "0"):
        return None
    return _port(value, "GATEKEEP_METRICS_PORT", 9100)


def _check_host(host: str, name: str) -> None:
    if host == "localhost":
        return
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            f"{name}={host!r} is not an IP address; use for example 127.0.0.1, 0.0.0.0 or ::1"
        ) from None


def _redis_url(value: str | None) -> str | None:
    if value is None:
        return None
    schemes = ("redis://", "rediss://", "unix://")
    if not value.startswith(schemes):
        raise ConfigError(
            "GATEKEEP_REDIS_URL has an unsupported scheme; use redis://host:port/db, "
            "rediss:// for TLS or unix:///path/to/socket"
        )
    return value


def _admin_keys(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    keys = tuple(key.strip() for key in value.split(",") if key.strip())
    for key in keys:
        if len(key) < 16:
            raise ConfigError(
                f"GATEKEEP_ADMIN_API_KEYS has a key of {len(key)} characters; use keys of at "
                "least 16 random characters, separated by commas"
            )
    return keys


def _template_dir(value: str | None) -> str | None:
    if value is None:
        return None
    if not Path(value).is_dir():
        raise ConfigError(
            f"GATEKEEP_PAGE_TEMPLATE_DIR={value!r} is not a directory; give the folder that "
            "holds your wait.html, wait.css or strings.<lang>.json"
        )
    return value


def _origin_keys(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    keys = tuple(key.strip() for key in value.split(",") if key.strip())
    for key in keys:
        if len(key) < 16:
            raise ConfigError(
                f"GATEKEEP_ORIGIN_API_KEYS has a key of {len(key)} characters; use keys of at "
                "least 16 random characters, separated by commas"
            )
    return keys


def _log_level(value: str | None) -> str:
    if value is None:
        return "INFO"
    level = value.upper()
    if level not in LOG_LEVELS:
        raise ConfigError(
            f"GATEKEEP_LOG_LEVEL={value!r} is not a level; use one of {', '.join(LOG_LEVELS)}"
        )
    return level


def _rate_limits(value: str | None) -> tuple[tuple[str, str], ...]:
    from gatekeep.ratelimit import parse_rate_limit_setting

    if value is None:
        return ()
    try:
        return parse_rate_limit_setting(value)
    except InvalidInput as error:
        raise ConfigError(
            f"GATEKEEP_RATE_LIMITS={value[:80]!r}: {error.message}; use for example "
            "'join.ip=300/minute,status.device=off'"
        ) from None


def _trusted_proxies(value: str | None) -> tuple[str, ...]:
    from gatekeep.ratelimit import parse_trusted_proxies

    try:
        networks = parse_trusted_proxies(value)
    except InvalidInput as error:
        raise ConfigError(
            f"{error.message}; set GATEKEEP_TRUSTED_PROXIES to comma-separated addresses or "
            "CIDR networks such as 10.0.0.0/8"
        ) from None
    return tuple(str(network) for network in networks)
