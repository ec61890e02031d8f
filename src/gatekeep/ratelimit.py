"""Rate limits per device, client IP, user and admin key, for each kind of route.

Join and admin calls are counted with the `limits` library's sliding-window-counter strategy
on a storage that the store provides: `limits`' in-memory storage for the embedded store, and
`limits`' Redis storage on the Redis store's own redis-py connection pool, so the limits hold
across processes. Status and heartbeat calls, the bulk of all traffic, are counted by the
store inside the same atomic call that reads the entry, with the same algorithm
(`gatekeep.ratewindow`), so they cost no extra round trip.

A limit is named `KIND.DIMENSION`, such as `join.ip`, and written `N/PERIOD` (`60/minute`,
`5/second`, `1000/hour`) or `off`. The service-wide table starts from `DEFAULT_RATE_LIMITS`,
`GATEKEEP_RATE_LIMITS` overrides it, and an event's `rate_limits` field overrides both for that
event's join, status and heartbeat calls.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError

from gatekeep.errors import InvalidInput, RateLimited
from gatekeep.ratewindow import WindowLimit, WindowOutcome, window_headers

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import Scope

    from gatekeep.store.base import Store

logger = logging.getLogger(__name__)

ROUTE_KINDS = ("join", "status", "heartbeat", "admin")
# `device` is the device id at join and the queue entry (one per device) for status and
# heartbeat calls; `key` is the admin key id.
DIMENSIONS = ("device", "ip", "user", "key")
OFF = "off"

# Key in the ASGI scope's "state" under which a request's RateLimit-* headers wait for the
# response.
SCOPE_STATE_KEY = "gatekeep.rate_limit_headers"

# Event overrides are cached this long per process, so a change applies within a second.
OVERRIDE_CACHE_TTL_S = 1.0
# Unknown event ids are cached too, so the cache is cleared when it reaches this size.
OVERRIDE_CACHE_MAX = 10_000

# NOTE: estimated defaults, not measured: one person per device polling no faster than once a
# second, and NATs that put a few hundred people behind one address. Tune them per event.
DEFAULT_RATE_LIMITS: dict[str, str] = {
    "join.device": "10/minute",
    "join.user": "10/minute",
    "join.ip": "300/minute",
    "status.device": "120/minute",
    "status.ip": "6000/minute",
    "heartbeat.device": "120/minute",
    "heartbeat.ip": "6000/minute",
    "admin.ip": "600/minute",
    "admin.key": "600/minute",
}


def parse_rate_limit_table(field: str, value: object) -> tuple[tuple[str, str], ...]:
    """Validate a `{"kind.dimension": "N/period" | "off"}` table into sorted pairs."""
    if not isinstance(value, dict):
        raise InvalidInput(field, 'expected a table such as {"join.ip": "60/minute"}')
    pairs: list[tuple[str, str]] = []
    for name, limit in value.items():
        kind, _, dimension = str(name).partition(".")
        if kind not in ROUTE_KINDS or dimension not in DIMENSIONS:
            raise InvalidInput(
                field,
                f"unknown limit {str(name)[:40]!r}; use KIND.DIMENSION with KIND one of "
                f"{', '.join(ROUTE_KINDS)} and DIMENSION one of {', '.join(DIMENSIONS)}",
            )
        if not isinstance(limit, str):
            raise InvalidInput(field, f"{name}: expected a string such as '60/minute' or 'off'")
        if limit != OFF:
            _parse_limit(field, name, limit)
        pairs.append((name, limit))
    return tuple(sorted(pairs))


def parse_rate_limit_setting(text: str) -> tuple[tuple[str, str], ...]:
    """Parse `GATEKEEP_RATE_LIMITS`: comma-separated `kind.dimension=N/period` items."""
    table: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, separator, limit = item.partition("=")
        if not separator:
            raise InvalidInput("GATEKEEP_RATE_LIMITS", f"item {item.strip()[:40]!r} has no '='")
        table[name.strip()] = limit.strip()
    return parse_rate_limit_table("GATEKEEP_RATE_LIMITS", table)


def _parse_limit(field: str, name: str, limit: str) -> RateLimitItem:
    try:
        return parse(limit)
    except ValueError:
        raise InvalidInput(
            field, f"{name}: invalid limit {limit[:40]!r}; use N/second, N/minute or N/hour"
        ) from None


def parse_trusted_proxies(
    text: str | None,
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Parse `GATEKEEP_TRUSTED_PROXIES`: comma-separated addresses or CIDR networks."""
    if not text:
        return ()
    networks = []
    for item in text.split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise InvalidInput(
                    "GATEKEEP_TRUSTED_PROXIES",
                    f"{item.strip()[:50]!r} is not an IP address or CIDR network",
                ) from None
    return tuple(networks)


def client_ip(
    peer: str | None,
    headers: Iterable[tuple[bytes, bytes]],
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
) -> str:
    """Return the client address: the socket peer unless the peer is a trusted proxy.

    Behind trusted proxies it is the rightmost `X-Forwarded-For` hop that is not itself a
    trusted proxy (hops left of it were written by the client and can be forged), else
    `CF-Connecting-IP`. A malformed hop ends the walk at the last trusted hop.
    """
    if peer is None:
        return "unknown"
    if not trusted or not _is_trusted(peer, trusted):
        return peer

    forwarded: list[str] = []
    cf_connecting_ip: str | None = None
    for name, value in headers:
        if name == b"x-forwarded-for":
            forwarded.extend(hop.strip() for hop in value.decode("latin-1").split(","))
        elif name == b"cf-connecting-ip":
            cf_connecting_ip = value.decode("latin-1").strip()

    last_trusted = peer
    for hop in reversed(forwarded):
        if not _is_ip(hop):
            return last_trusted
        if not _is_trusted(hop, trusted):
            return hop
        last_trusted = hop
    if forwarded:
        return last_trusted
    if cf_connecting_ip is not None and _is_ip(cf_connecting_ip):
        return cf_connecting_ip
    return peer


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_trusted(
    address: str, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in trusted)


@functools.lru_cache(maxsize=256)
def _parsed_limit(text: str) -> RateLimitItem:
    return parse(text)


@functools.lru_cache(maxsize=65_536)
def _identifier(value: str) -> str:
    """Return a short hash of an id, so queue ids (bearer secrets) never become store keys."""
    return hashlib.sha256(value.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class _Check:
    name: str  # kind.dimension
    item: RateLimitItem
    identifier: str

    @property
    def namespace(self) -> tuple[str, str, str]:
        return ("gatekeep", self.name, self.identifier)


class RateLimiter:
    """Checks and counts requests against every limit that applies to them."""

    def __init__(self, storage: Storage, table: tuple[tuple[str, str], ...]) -> None:
        self.strategy = SlidingWindowCounterRateLimiter(storage)
        self.table = {**DEFAULT_RATE_LIMITS, **dict(table)}
        self._outage_errors = 0

    async def check(
        self,
        kind: str,
        identities: Mapping[str, str | None],
        *,
        scope_id: str = "",
        overrides: tuple[tuple[str, str], ...] = (),
    ) -> dict[str, str]:
        """Count one request of `kind` for each identity (dimension -> id) that has a limit.

        `scope_id` (an event id, or empty for admin calls) separates the counters of events.
        Returns the `RateLimit-*` headers of the tightest limit. Raises RateLimited when any
        limit is exhausted. A sliding-window counter counts a hit only when it is under its
        limit, but the limits of one request are counted together, so a request refused by one
        limit still counts against the others.
        When the rate-limit storage fails, the request is let through and the error counted.
        """
        table = {**self.table, **dict(overrides)}
        checks = []
        for dimension, value in identities.items():
            name = f"{kind}.{dimension}"
            limit = table.get(name, OFF)
            if value is None or limit == OFF:
                continue
            item = _parsed_limit(limit)
            checks.append(_Check(name, item, _identifier(f"{scope_id}|{value}")))
        if not checks:
            return {}

        # Imported here: event validation imports this module, and prometheus_client must not
        # load before `gatekeep serve` has chosen its multiprocess directory.
        from gatekeep import metrics

        try:
            return await self._hit_all(kind, checks)
        except StorageError as error:
            metrics.STORE_ERRORS.labels("rate_limit").inc()
            self._outage_errors += 1
            if self._outage_errors == 1 or self._outage_errors % 100 == 0:
                logger.warning(
                    "ratelimit.storage_failed failures=%s error=%s",
                    self._outage_errors,
                    error.storage_error,
                )
            return {}

    async def _hit_all(self, kind: str, checks: list[_Check]) -> dict[str, str]:
        from gatekeep import metrics

        # The limits of one request are counted concurrently, so a join with three limits
        # costs about two store round trips of latency, not six.
        with metrics.store_timer("rate_limit"):
            allowed = await asyncio.gather(*(self._hit(check) for check in checks))
            stats = await asyncio.gather(
                *(self.strategy.get_window_stats(check.item, *check.namespace) for check in checks)
            )

        for check, check_allowed, check_stats in zip(checks, allowed, stats, strict=True):
            if not check_allowed:
                metrics.RATE_LIMITED.labels(kind, check.name.partition(".")[2]).inc()
                headers = _headers(check.item, 0, check_stats.reset_time)
                headers["Retry-After"] = headers["RateLimit-Reset"]
                raise RateLimited(check.name, headers)

        tightest = min(range(len(checks)), key=lambda index: stats[index].remaining)
        return _headers(
            checks[tightest].item, stats[tightest].remaining, stats[tightest].reset_time
        )

    async def _hit(self, check: _Check) -> bool:
        return await self.strategy.hit(check.item, *check.namespace)


def _headers(item: RateLimitItem, remaining: int, reset_time: float) -> dict[str, str]:
    reset_s = max(1, math.ceil(reset_time - time.time()))
    return {
        "RateLimit-Limit": str(item.amount),
        "RateLimit-Remaining": str(max(0, remaining)),
        "RateLimit-Reset": str(reset_s),
    }


class RequestLimiter:
    """The rate limiter of one app: client IP resolution and per-event overrides."""

    def __init__(
        self,
        limiter: RateLimiter,
        trusted_proxies: tuple[str, ...],
        store: Store,
    ) -> None:
        self.limiter = limiter
        self.trusted = parse_trusted_proxies(",".join(trusted_proxies))
        self.store = store
        # event id -> (monotonic expiry s, the event's rate_limits); a missing event caches ().
        self._overrides: dict[str, tuple[float, tuple[tuple[str, str], ...]]] = {}
        # (kind, overrides) -> the parsed limits of a status or heartbeat call.
        self._entry_specs: dict[
            tuple[str, tuple[tuple[str, str], ...]], tuple[tuple[str, str, int, int], ...]
        ] = {}

    def client_ip(self, scope: Scope) -> str:
        client = scope.get("client")
        peer = client[0] if client else None
        return client_ip(peer, scope["headers"], self.trusted)

    async def entry_limits(
        self, scope: Scope, kind: str, event_id: str, queue_id: str
    ) -> list[WindowLimit]:
        """Return the limits of a status or heartbeat call, which the store counts in the call.

        The limits are the client IP's and the queue entry's (one entry per device). Event
        overrides are read at most once per second per event.
        """
        overrides = await self._event_overrides(event_id)
        specs = self._entry_specs.get((kind, overrides))
        if specs is None:
            specs = self._entry_limit_specs(kind, overrides)
        counted = {"ip": self.client_ip(scope), "device": queue_id}
        return [
            WindowLimit(name, amount, window_ms, _identifier(f"{event_id}|{counted[dimension]}"))
            for dimension, name, amount, window_ms in specs
        ]

    def _entry_limit_specs(
        self, kind: str, overrides: tuple[tuple[str, str], ...]
    ) -> tuple[tuple[str, str, int, int], ...]:
        """Return (dimension, name, amount, window_ms) of each limit of an entry call, and
        remember them for these overrides."""
        table = {**self.limiter.table, **dict(overrides)}
        specs = []
        for dimension in ("ip", "device"):
            name = f"{kind}.{dimension}"
            text = table.get(name, OFF)
            if text != OFF:
                item = _parsed_limit(text)
                specs.append((dimension, name, item.amount, item.get_expiry() * 1000))
        if len(self._entry_specs) >= OVERRIDE_CACHE_MAX:
            self._entry_specs.clear()
        self._entry_specs[(kind, overrides)] = tuple(specs)
        return tuple(specs)

    def remember(self, scope: Scope, outcome: WindowOutcome | None) -> None:
        """Keep the `RateLimit-*` headers of an entry call's tightest limit for its response."""
        if outcome is not None:
            _keep_headers(scope, window_headers(outcome))

    async def check(
        self,
        request: Request,
        kind: str,
        *,
        event_id: str = "",
        device: str | None = None,
        user: str | None = None,
        key: str | None = None,
    ) -> dict[str, str]:
        """Count the request against every limit of `kind`; return the `RateLimit-*` headers.

        Raises RateLimited. Event overrides are read at most once per second per event.
        """
        overrides = await self._event_overrides(event_id) if event_id else ()
        ip = self.client_ip(request.scope)
        identities = {"ip": ip, "device": device, "user": user, "key": key}
        headers = await self.limiter.check(kind, identities, scope_id=event_id, overrides=overrides)
        if headers:
            _keep_headers(request.scope, headers)
        return headers

    async def _event_overrides(self, event_id: str) -> tuple[tuple[str, str], ...]:
        now_s = time.monotonic()
        cached = self._overrides.get(event_id)
        if cached is not None and cached[0] > now_s:
            return cached[1]
        config = await self.store.get_event(event_id)
        overrides = config.rate_limits if config is not None else ()
        if len(self._overrides) >= OVERRIDE_CACHE_MAX:
            self._overrides.clear()
        self._overrides[event_id] = (now_s + OVERRIDE_CACHE_TTL_S, overrides)
        return overrides


def rate_limit_headers(
    scope: Scope, present: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """Return the `RateLimit-*` headers a request's last limit check left in its scope.

    The response middleware adds them, so error responses carry them too. A header the
    handler already set is not repeated.
    """
    kept: list[tuple[bytes, bytes]] = scope.get("state", {}).get(SCOPE_STATE_KEY, [])
    if not kept:
        return []
    names = {name.lower() for name, _ in present}
    return [(name, value) for name, value in kept if name not in names]


def _keep_headers(scope: Scope, headers: Mapping[str, str]) -> None:
    """Keep a limit check's `RateLimit-*` headers in the scope, encoded for ASGI."""
    encoded = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    scope.setdefault("state", {})[SCOPE_STATE_KEY] = encoded


def request_limiter(request: Request) -> RequestLimiter:
    limiter: RequestLimiter = request.app.state.rate_limiter
    return limiter
