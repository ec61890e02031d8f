"""The production store: queue state in Redis, shared by every Gatekeep process.

Each atomic operation is one Lua script in `store/lua/`, run with EVALSHA, and the scripts
take their time from Redis `TIME`. `keys.py` names the keys, and all keys of one event share a
Redis Cluster hash slot. Needs Redis 7.0 or newer (ZMSCORE, replication of script effects).

NOTE: Redis Cluster is not supported yet. The keys are ready for it, but `from_url` builds a
single-node or Sentinel client, and the `gk:events` index needs a cluster-aware pipeline.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gatekeep.errors import (
    EntryNotFound,
    EventDisabled,
    EventNotFound,
    InvalidInput,
    QueueFull,
    StoreUnavailable,
)
from gatekeep.model import (
    Entry,
    EntrySnapshot,
    EntryStatus,
    EventConfig,
    EventSnapshot,
    JoinRequest,
    JoinResult,
    ReleaseResult,
)
from gatekeep.store.base import Store
from gatekeep.store.constants import (
    ENTRY_RETENTION_S,
    OBSERVED_RATE_MIN_WINDOW_S,
    OBSERVED_RATE_TAU_S,
    PURGE_BATCH,
    RELEASE_BURST_S,
    SEQ_SPAN,
    retry_after_for_full_queue,
)
from gatekeep.store.keys import EVENTS_KEY, event_keys

logger = logging.getLogger(__name__)

SCRIPT_NAMES = (
    "join",
    "touch",
    "leave",
    "release",
    "put_event",
    "create_event",
    "set_paused",
    "event_snapshot",
)

SENTINEL_SCHEME = "redis+sentinel"

# Connection errors are retried once inside redis-py, which covers a pooled connection that a
# Redis restart closed. Timeouts are not retried, so a slow call fails after `call_timeout_s`.
_DRIVER_RETRIES = 1

# Cap of one pause between startup connection attempts.
_CONNECT_BACKOFF_CAP_S = 5.0


def _lua_constants() -> str:
    """Return Lua locals for the tuning values, so constants.py stays their only source."""
    return "\n".join(
        [
            "-- Tuning values from gatekeep.store.constants, written when the scripts load.",
            f"local ENTRY_RETENTION_MS = {round(ENTRY_RETENTION_S * 1000)}",
            f"local PURGE_BATCH = {PURGE_BATCH}",
            f"local SEQ_SPAN = {SEQ_SPAN}",
            f"local RELEASE_BURST_S = {float(RELEASE_BURST_S)!r}",
            f"local OBSERVED_RATE_TAU_S = {float(OBSERVED_RATE_TAU_S)!r}",
            f"local OBSERVED_RATE_MIN_WINDOW_S = {float(OBSERVED_RATE_MIN_WINDOW_S)!r}",
            "",
        ]
    )


def script_source(name: str) -> str:
    """Return the full Lua source of one operation: constants, the shared prelude, the body."""
    lua_dir = resources.files("gatekeep.store").joinpath("lua")
    prelude = lua_dir.joinpath("common.lua").read_text(encoding="utf-8")
    body = lua_dir.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return f"{_lua_constants()}\n{prelude}\n{body}"


class RedisStore(Store):
    """Store backed by one Redis primary, reached directly or through Sentinel."""

    name = "redis"

    def __init__(self, client: Redis, *, sentinel: Sentinel | None = None) -> None:
        """Wrap `client`, which must decode responses to str.

        close() closes `client` and, when given, the `sentinel` that found its primary.
        """
        self._client = client
        self._sentinel = sentinel
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(script_source(name)) for name in SCRIPT_NAMES
        }

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        call_timeout_s: float = 2.0,
        pool_max_connections: int = 64,
        health_check_interval_s: float = 10.0,
    ) -> RedisStore:
        """Build a store for a `redis://`, `rediss://`, `unix://` or `redis+sentinel://` URL.

        `call_timeout_s` bounds the connect, each socket read and the wait for a free pooled
        connection. A connection idle for `health_check_interval_s` is checked with PING
        before use. Nothing connects until the first call; use `connect()` at startup.

        The Sentinel form is `redis+sentinel://[[user]:password@]host:port[,host:port...]/
        service_name[/db]`; the credentials are for the Redis primary.
        """
        connection_kwargs: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": call_timeout_s,
            "socket_connect_timeout": call_timeout_s,
            "health_check_interval": health_check_interval_s,
            "retry": Retry(
                ExponentialBackoff(cap=0.5, base=0.05),
                _DRIVER_RETRIES,
                supported_errors=(RedisConnectionError,),
            ),
        }
        scheme = urlsplit(url).scheme
        if scheme != "unix":
            # TCP keepalive detects a peer that vanished without closing. Unix sockets have none.
            connection_kwargs["socket_keepalive"] = True
        if scheme == SENTINEL_SCHEME:
            sentinel = _sentinel_from_url(url, connection_kwargs)
            client = _primary_client(url, sentinel, pool_max_connections, connection_kwargs)
            return cls(client, sentinel=sentinel)

        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=pool_max_connections,
            timeout=call_timeout_s,
            **connection_kwargs,
        )
        return cls(Redis.from_pool(pool))

    async def connect(self, retries: int = 5, backoff_s: float = 0.5) -> None:
        """Wait for Redis at startup and load every script, retrying with exponential backoff.

        Makes `retries` more attempts after the first, pausing `backoff_s`, then twice as
        long each time (at most 5 s). Raises StoreUnavailable when the last attempt fails.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._client.ping()
                for script in self._scripts.values():
                    script.sha = await self._client.script_load(script.script)
            except (RedisConnectionError, RedisTimeoutError) as error:
                remaining = retries - attempt + 1
                if remaining <= 0:
                    logger.error(
                        "store.connect_failed attempts=%s error=%s", attempt, _describe(error)
                    )
                    raise StoreUnavailable("connect") from error

                delay_s = min(_CONNECT_BACKOFF_CAP_S, backoff_s * 2 ** (attempt - 1))
                logger.warning(
                    "store.connect_retry attempt=%s remaining=%s delay_s=%s error=%s",
                    attempt,
                    remaining,
                    delay_s,
                    _describe(error),
                )
                await asyncio.sleep(delay_s)
            except RedisError as error:
                logger.error("store.connect_failed attempts=%s error=%s", attempt, _describe(error))
                raise StoreUnavailable("connect") from error
            else:
                logger.info("store.connected attempts=%s", attempt)
                return

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except RedisError as error:
            raise _unavailable("ping", error) from error

    async def close(self) -> None:
        await self._client.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()

    async def now_ms(self) -> int:
        try:
            seconds, microseconds = await self._client.time()
        except RedisError as error:
            raise _unavailable("now_ms", error) from error
        return int(seconds) * 1000 + int(microseconds) // 1000

    # Events

    async def put_event(self, config: EventConfig) -> EventConfig:
        # The id goes into the index first: an id whose config write failed is skipped by
        # list_event_ids, while an event missing from the index would never be released.
        await self._add_to_index("put_event", config.event_id)
        await self._run("put_event", config.event_id, _config_pairs(config))
        return config

    async def create_event(self, config: EventConfig) -> bool:
        await self._add_to_index("create_event", config.event_id)
        reply = await self._run("create_event", config.event_id, _config_pairs(config))
        return bool(reply[1])

    async def get_event(self, event_id: str) -> EventConfig | None:
        try:
            fields = await self._client.hgetall(event_keys(event_id).config)
        except RedisError as error:
            raise _unavailable("get_event", error) from error
        if not fields:
            return None
        return _config_from_fields({str(name): str(value) for name, value in fields.items()})

    async def list_event_ids(self) -> list[str]:
        try:
            event_ids = sorted(str(member) for member in await self._client.smembers(EVENTS_KEY))
            pipeline = self._client.pipeline(transaction=False)
            for event_id in event_ids:
                pipeline.exists(event_keys(event_id).config)
            exists = await pipeline.execute()
        except RedisError as error:
            raise _unavailable("list_event_ids", error) from error
        return [event_id for event_id, found in zip(event_ids, exists, strict=True) if found]

    async def set_paused(self, event_id: str, paused: bool) -> EventConfig:
        reply = await self._run("set_paused", event_id, [_flag(paused)])
        _raise_for_status(reply, event_id)
        return _config_from_pairs(reply[1])

    async def event_snapshot(self, event_id: str) -> EventSnapshot:
        reply = await self._run("event_snapshot", event_id, [])
        _raise_for_status(reply, event_id)
        return _event_snapshot(reply[1])

    # Queue entries

    async def join(self, request: JoinRequest) -> JoinResult:
        args = [
            request.queue_id,
            request.device_id,
            request.user_id or "",
            request.bucket,
            request.token_id,
            request.nonce,
        ]
        reply = await self._run("join", request.event_id, args)
        if reply[0] == "unknown_bucket":
            raise InvalidInput(
                "bucket",
                f"event {request.event_id!r} has no bucket {request.bucket!r}; "
                "use one of the event's configured buckets",
            )
        _raise_for_status(reply, request.event_id)
        snapshot = _entry_snapshot(request.event_id, reply[2], reply[3])
        return JoinResult(snapshot=snapshot, created=reply[1] == 1)

    async def touch(self, event_id: str, queue_id: str) -> EntrySnapshot:
        reply = await self._run("touch", event_id, [queue_id])
        _raise_for_status(reply, event_id)
        return _entry_snapshot(event_id, reply[1], reply[2])

    async def leave(self, event_id: str, queue_id: str) -> EntrySnapshot:
        reply = await self._run("leave", event_id, [queue_id])
        _raise_for_status(reply, event_id)
        return _entry_snapshot(event_id, reply[1], reply[2])

    # Release

    async def release(self, event_id: str, max_batch: int) -> ReleaseResult:
        reply = await self._run("release", event_id, [max_batch])
        _raise_for_status(reply, event_id)
        return ReleaseResult(
            admitted_queue_ids=list(reply[3:]),
            expired_waiting=int(reply[1]),
            expired_sessions=int(reply[2]),
        )

    # Helpers

    async def _run(self, script_name: str, event_id: str, args: Sequence[str | int]) -> list[Any]:
        """Run one operation script on the event's keys and return its reply list."""
        script = self._scripts[script_name]
        try:
            reply = await script(keys=event_keys(event_id).as_list(), args=args)
        except RedisError as error:
            raise _unavailable(script_name, error) from error
        if not isinstance(reply, list) or not reply:
            raise TypeError(f"script {script_name} returned {reply!r}; expected a status list")
        return reply

    async def _add_to_index(self, operation: str, event_id: str) -> None:
        try:
            await self._client.sadd(EVENTS_KEY, event_id)
        except RedisError as error:
            raise _unavailable(operation, error) from error


# Errors


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _unavailable(operation: str, error: RedisError) -> StoreUnavailable:
    """Map a driver error to StoreUnavailable, and log it unless it is a plain outage.

    Connection errors and timeouts are expected during an outage, and the caller logs the
    StoreUnavailable. Other errors (a script error, OOM, a read-only replica) need a person.
    """
    if not isinstance(error, RedisConnectionError | RedisTimeoutError):
        logger.error("store.command_failed operation=%s error=%s", operation, _describe(error))
    return StoreUnavailable(operation)


def _raise_for_status(reply: list[Any], event_id: str) -> None:
    """Raise the Gatekeep error named by a script's status string, unless it is 'ok'."""
    status = reply[0]
    if status == "ok":
        return
    if status == "event_not_found":
        raise EventNotFound(event_id)
    if status == "event_disabled":
        raise EventDisabled(event_id)
    if status == "queue_full":
        raise QueueFull(event_id, retry_after_for_full_queue(float(reply[1])))
    if status == "entry_not_found":
        raise EntryNotFound()
    raise TypeError(f"unknown script status {status!r}")


# Conversions between Redis replies and the model


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _config_pairs(config: EventConfig) -> list[str]:
    """Encode a config as HSET field/value pairs: the fields Lua reads, plus the whole document.

    Lua scripts read the flat fields; Python reads `document`, so a new EventConfig field needs
    no change here unless a script reads it. Floats use repr, so they read back exactly.
    """
    return [
        "event_id",
        config.event_id,
        "enabled",
        _flag(config.enabled),
        "max_queue_size",
        str(config.max_queue_size),
        "release_rate",
        repr(float(config.release_rate)),
        "max_capacity",
        str(config.max_capacity),
        "session_ttl_s",
        repr(float(config.session_ttl_s)),
        "heartbeat_timeout_s",
        repr(float(config.heartbeat_timeout_s)),
        "buckets",
        orjson.dumps(list(config.buckets)).decode(),
        "paused",
        _flag(config.paused),
        "document",
        orjson.dumps(config.to_dict()).decode(),
    ]


# Config fields that a Lua script may change on its own (`set_paused`); they are read from
# their flat field, which is always current, instead of from `document`.
SCRIPT_WRITTEN_FIELDS = ("paused",)


def _config_from_fields(fields: dict[str, str]) -> EventConfig:
    flags = tuple(fields[name] == "1" for name in SCRIPT_WRITTEN_FIELDS)
    return _decode_config(fields["document"], flags)


@functools.lru_cache(maxsize=1024)
def _decode_config(document_json: str, flags: tuple[bool, ...]) -> EventConfig:
    """Validate a stored config once per distinct document; every status call reads one."""
    document = orjson.loads(document_json)
    document.update(zip(SCRIPT_WRITTEN_FIELDS, flags, strict=True))
    return EventConfig.from_dict(document)


def _config_from_pairs(flat: list[str]) -> EventConfig:
    return _config_from_fields(dict(zip(flat[0::2], flat[1::2], strict=True)))


def _event_snapshot(reply: list[Any]) -> EventSnapshot:
    """Decode common.lua's snapshot_reply."""
    (
        config_pairs,
        now_ms,
        waiting_count,
        admitted_active,
        credit,
        observed,
        admitted_total,
        expired_total,
        left_total,
    ) = reply
    return EventSnapshot(
        config=_config_from_pairs(config_pairs),
        now_ms=int(now_ms),
        waiting_count=int(waiting_count),
        admitted_active=int(admitted_active),
        release_credit=float(credit),
        observed_rate_per_s=None if observed is None else float(observed),
        admitted_total=int(admitted_total),
        expired_total=int(expired_total),
        left_total=int(left_total),
    )


def _entry_snapshot(
    event_id: str, entry_reply: list[Any], snapshot_reply: list[Any]
) -> EntrySnapshot:
    """Decode common.lua's entry_reply (entry layout described there) and snapshot_reply."""
    queue_id, raw, position, heartbeat_ms = entry_reply
    head = orjson.loads(raw)
    fixed = head["f"]
    last_heartbeat_ms = head["h"] if heartbeat_ms is None else heartbeat_ms
    entry = Entry(
        queue_id=queue_id,
        event_id=event_id,
        device_id=fixed["d"],
        user_id=fixed.get("u"),
        bucket=fixed["b"],
        status=EntryStatus(head["s"]),
        joined_at_ms=int(fixed["j"]),
        last_heartbeat_ms=int(last_heartbeat_ms),
        token_id=fixed["t"],
        nonce=fixed["n"],
        admitted_at_ms=_optional_int(head.get("a")),
        session_expires_at_ms=_optional_int(head.get("x")),
        ended_at_ms=_optional_int(head.get("e")),
    )
    return EntrySnapshot(
        entry=entry,
        position=None if position is None else int(position),
        event=_event_snapshot(snapshot_reply),
    )


def _optional_int(value: object) -> int | None:
    if value is None:
        return None
    assert isinstance(value, int | float | str)
    return int(value)


# Sentinel


def _sentinel_from_url(url: str, connection_kwargs: dict[str, Any]) -> Sentinel:
    """Build a Sentinel client for the `host:port` list of a `redis+sentinel://` URL."""
    hosts = urlsplit(url).netloc.rpartition("@")[2]
    sentinels: list[tuple[str, int]] = []
    for host_port in hosts.split(","):
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(
                f"invalid Sentinel address {host_port!r} in the Redis URL; use host:port"
            )
        sentinels.append((host.strip("[]"), int(port)))

    # TODO: Sentinels that require a password are not supported, because the URL's credentials
    # only reach the primary.
    sentinel_kwargs = {
        "socket_timeout": connection_kwargs["socket_timeout"],
        "socket_connect_timeout": connection_kwargs["socket_connect_timeout"],
        "decode_responses": True,
    }
    return Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)


def _primary_client(
    url: str, sentinel: Sentinel, max_connections: int, connection_kwargs: dict[str, Any]
) -> Redis:
    """Build a client for the primary of the URL's service name. The client owns its pool."""
    parts = urlsplit(url)
    path = [part for part in parts.path.split("/") if part]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(
            "invalid Sentinel URL path; use redis+sentinel://host:port[,host:port]/service_name[/db]"
        )
    service_name = path[0]
    db = int(path[1]) if len(path) == 2 else 0

    client: Redis = sentinel.master_for(
        service_name,
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        max_connections=max_connections,
        **connection_kwargs,
    )
    return client
