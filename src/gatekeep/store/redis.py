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
import hashlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
from limits.aio.storage import RedisStorage, Storage
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
    EventClosed,
    EventDisabled,
    EventNotFound,
    InvalidInput,
    JoinsRejected,
    NoStock,
    PriorityCodeNotFound,
    QueueFull,
    RateLimited,
    SoldOut,
    StoreUnavailable,
)
from gatekeep.fairness import (
    PreQueueEntry,
    build_publication,
    fair_order,
    new_seed,
    prequeue_scores,
    stored_ticket_id,
)
from gatekeep.model import (
    Entry,
    EntrySnapshot,
    EntryStatus,
    EventConfig,
    EventSnapshot,
    JoinRequest,
    JoinResult,
    ReleasePhase,
    ReleaseResult,
    ReleaseState,
    WatchedEntry,
    WatchResult,
    WebhookFailure,
)
from gatekeep.priority import PRIORITY_CODE_MESSAGES, PriorityCode
from gatekeep.ratewindow import WindowLimit, WindowOutcome, window_headers
from gatekeep.stats import WAIT_SAMPLES_MAX, EventStats
from gatekeep.store.base import Store
from gatekeep.store.constants import (
    WEBHOOK_FAILURE_RETENTION_S,
    retry_after_for_full_queue,
)
from gatekeep.store.keys import (
    EVENTS_KEY,
    control_keys,
    event_key_pattern,
    event_keys,
    priority_codes_key,
    rate_limit_key,
    token_keys,
    wait_samples_key,
    webhook_failures_key,
)
from gatekeep.store.pipeline import ScriptBatcher
from gatekeep.store.scripts import ops_script_source, script_source, token_script_source
from gatekeep.tokens.records import RevokeResult, TokenLookup, TokenRecord, TokenState

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
    "watch",
    "prequeue",
    "open_event",
    "stock",
    "control_state",
    "record_webhook_failure",
)

# Admission-token scripts: each gets token_common.lua after common.lua, and the event's token
# keys after its event keys.
TOKEN_SCRIPT_NAMES = ("token_record", "token_lookup", "token_consume", "token_revoke")

# Operations scripts (admin API, wait samples, priority codes): the eight event keys, then
# the extra keys each one names in its header.
OPS_SCRIPT_NAMES = (
    "delete_event",
    "reset_event",
    "record_waits",
    "event_stats",
    "inspect_entry",
    "put_priority_codes",
    "disable_priority_code",
    "join_with_code",
)

SENTINEL_SCHEME = "redis+sentinel"

# Config documents kept for touch replies; past this many revisions the cache starts over.
CONFIG_DOCUMENTS_MAX = 10_000

# Release steps one call may run while it opens an event: the freeze, then the step after the
# opening. A third covers an opening that another process completed in between.
_OPENING_ATTEMPTS = 3

# Connection errors are retried once inside redis-py, which covers a pooled connection that a
# Redis restart closed. Timeouts are not retried, so a slow call fails after `call_timeout_s`.
_DRIVER_RETRIES = 1

# Cap of one pause between startup connection attempts.
_CONNECT_BACKOFF_CAP_S = 5.0


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
        self._scripts.update(
            (name, client.register_script(token_script_source(name))) for name in TOKEN_SCRIPT_NAMES
        )
        self._scripts.update(
            (name, client.register_script(ops_script_source(name))) for name in OPS_SCRIPT_NAMES
        )
        # Status polls and heartbeats, the bulk of all calls, run in batches per event (see
        # pipeline.py).
        self._touch = ScriptBatcher(client, self._scripts["touch"])
        # Config documents by revision, and each event's latest revision, from touch replies.
        self._config_documents: dict[str, str] = {}
        self._config_revisions: dict[str, str] = {}

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
            request.ticket_id,
            *new_seed(),
        ]
        controls = control_keys(request.event_id)
        if request.priority_code_id is None:
            reply = await self._run_ops("join", request.event_id, args, controls)
        else:
            args += [request.priority_code_id, request.priority_code_hash or ""]
            codes_key = priority_codes_key(request.event_id)
            reply = await self._run_ops(
                "join_with_code", request.event_id, args, [codes_key, *controls]
            )
            if reply[0] in PRIORITY_CODE_MESSAGES:
                raise InvalidInput("priority_code", PRIORITY_CODE_MESSAGES[reply[0]])
        if reply[0] == "unknown_bucket":
            raise InvalidInput(
                "bucket",
                f"event {request.event_id!r} has no bucket {request.bucket!r}; "
                "use one of the event's configured buckets",
            )
        _raise_for_status(reply, request.event_id)
        snapshot = _entry_snapshot(request.event_id, reply[2], reply[3])
        return JoinResult(snapshot=snapshot, created=reply[1] == 1)

    async def touch(
        self,
        event_id: str,
        queue_id: str,
        *,
        renew_session: bool = False,
        limits: Sequence[WindowLimit] = (),
    ) -> EntrySnapshot:
        revision = self._config_revisions.get(event_id, "")
        args: list[str | int] = [queue_id, _flag(renew_session)]
        keys: list[str] = []
        for limit in limits:
            args += [limit.amount, limit.window_ms]
            keys.append(rate_limit_key(event_id, limit.name, limit.identifier))
        try:
            reply = await self._touch(event_id, _touch_keys(event_id), [revision], keys, args)
        except RedisError as error:
            raise _unavailable("touch", error) from error
        if reply[0] == "rate_limited":
            rejected = _window_outcome(limits, reply[1:], allowed=False)
            raise RateLimited(rejected.name, window_headers(rejected))
        _raise_for_status(reply, event_id)
        await self._fill_config_document(event_id, reply[2][0])
        outcome = None if reply[3] is None else _window_outcome(limits, reply[3], allowed=True)
        return _entry_snapshot(event_id, reply[1], reply[2], limit=outcome)

    async def _fill_config_document(self, event_id: str, config_reply: list[Any]) -> None:
        """Put the document into a config reply that left it out, or remember a new one.

        A touch reply leaves the document out when its revision is the one the call named.
        """
        document, _, revision = config_reply
        if document is not None:
            if revision is not None:
                if len(self._config_documents) >= CONFIG_DOCUMENTS_MAX:
                    self._config_documents.clear()
                    self._config_revisions.clear()
                self._config_documents[revision] = document
                self._config_revisions[event_id] = revision
            return

        known = self._config_documents.get(revision)
        if known is None:
            # Dropped from the cache while the call was in flight: read the stored one, which
            # is this revision or a newer one.
            try:
                stored = await self._client.hget(event_keys(event_id).config, "document")
            except RedisError as error:
                raise _unavailable("touch", error) from error
            if stored is None:
                raise EventNotFound(event_id)
            known = str(stored)
        config_reply[0] = known

    async def leave(self, event_id: str, queue_id: str) -> EntrySnapshot:
        reply = await self._run("leave", event_id, [queue_id])
        _raise_for_status(reply, event_id)
        return _entry_snapshot(event_id, reply[1], reply[2])

    async def watch(self, event_id: str, queue_ids: list[str]) -> WatchResult:
        reply = await self._run("watch", event_id, queue_ids)
        _raise_for_status(reply, event_id)
        event = _event_snapshot(reply[1])
        watched = [
            _watched_entry(event_id, queue_id, item)
            for queue_id, item in zip(queue_ids, reply[2:], strict=True)
        ]
        return WatchResult(event=event, entries=watched)

    # Release

    async def release(self, event_id: str, max_batch: int) -> ReleaseResult:
        return await self._release_step(event_id, max_batch, None)

    async def release_now(self, event_id: str, count: int) -> ReleaseResult:
        return await self._release_step(event_id, count, count)

    async def _release_step(
        self, event_id: str, max_batch: int, manual_count: int | None
    ) -> ReleaseResult:
        """Run release.lua; when it reports a frozen pre-queue, order it and run it again.

        The opening takes three scripts (release freezes, prequeue reads, open_event applies),
        and each is idempotent, so a process killed between them leaves a freeze that the next
        step of any process completes.
        """
        expired_waiting = 0
        expired_sessions = 0
        transitions: list[str] = []
        for _ in range(_OPENING_ATTEMPTS):
            args = [
                max_batch,
                "" if manual_count is None else manual_count,
                secrets.token_hex(16),
                *new_seed(),
            ]
            reply = await self._run_ops("release", event_id, args, control_keys(event_id))
            if reply[0] != "opening":
                _raise_for_status(reply, event_id)
            expired_waiting += int(reply[1])
            expired_sessions += int(reply[2])
            if reply[0] == "ok":
                return ReleaseResult(
                    admitted_queue_ids=list(reply[4:]),
                    expired_waiting=expired_waiting,
                    expired_sessions=expired_sessions,
                    transitions=transitions + [str(name) for name in reply[3]],
                )
            if await self._open(event_id):
                transitions.append("opened")

        # Another process keeps re-freezing between our steps; the next tick tries again.
        return ReleaseResult(
            expired_waiting=expired_waiting,
            expired_sessions=expired_sessions,
            transitions=transitions,
        )

    async def _open(self, event_id: str) -> bool:
        """Order the frozen pre-queue by the fairness seed and open the event.

        Returns True when this call opened it, False when another process did first.
        """
        controls = control_keys(event_id)
        reply = await self._run_ops("prequeue", event_id, [], controls)
        if reply[0] == "not_opening":
            return False
        _raise_for_status(reply, event_id)
        open_seq, frozen_at_ms, seed_hex = str(reply[1]), int(reply[2]), str(reply[3])
        items = reply[5:]
        entries = [
            PreQueueEntry(ticket_id=items[i + 1], bucket_rank=int(items[i + 2]), queue_id=items[i])
            for i in range(0, len(items), 3)
        ]
        config = await self.get_event(event_id)
        if config is None:
            raise EventNotFound(event_id)

        ordered = fair_order(seed_hex, entries)
        publication = build_publication(
            event_id=event_id,
            seed_hex=seed_hex,
            frozen_at_ms=frozen_at_ms,
            buckets=config.buckets,
            ordered=ordered,
        )
        args: list[str | int] = [open_seq, orjson.dumps(publication).decode()]
        for entry, score in zip(ordered, prequeue_scores(ordered), strict=True):
            args += [score, entry.queue_id]
        reply = await self._run_ops("open_event", event_id, args, controls)
        _raise_for_status(reply, event_id)
        opened = bool(reply[1] == 1)
        if opened:
            logger.info(
                "release.opened event_id=%s prequeue=%s commitment=%s",
                event_id,
                len(ordered),
                publication["commitment"],
            )
        return opened

    # Release controller

    async def adjust_stock(
        self, event_id: str, *, decrement: int | None = None, remaining: int | None = None
    ) -> int:
        if decrement is not None:
            args: list[str | int] = ["decrement", decrement]
        else:
            args = ["set", remaining if remaining is not None else 0]
        reply = await self._run_ops("stock", event_id, args, control_keys(event_id))
        if reply[0] == "no_stock":
            raise NoStock(event_id)
        _raise_for_status(reply, event_id)
        return int(reply[1])

    async def release_state(self, event_id: str, *, with_publication: bool = False) -> ReleaseState:
        args = [*new_seed(), _flag(with_publication)]
        reply = await self._run_ops("control_state", event_id, args, control_keys(event_id))
        _raise_for_status(reply, event_id)
        _, now_ms, phase, opened_at_ms, stock_left, log_length, commitment, publication = reply
        return ReleaseState(
            event_id=event_id,
            now_ms=int(now_ms),
            phase=ReleasePhase(phase),
            opened_at_ms=int(opened_at_ms) if opened_at_ms else None,
            stock_remaining=int(stock_left) if stock_left != "" else None,
            admission_log_length=int(log_length),
            commitment=commitment or None,
            publication=orjson.loads(publication) if publication else None,
        )

    async def admission_log(self, event_id: str, start: int, count: int) -> list[str]:
        admissions_key = control_keys(event_id)[1]
        try:
            records = await self._client.lrange(admissions_key, start, start + count - 1)
        except RedisError as error:
            raise _unavailable("admission_log", error) from error
        return [str(record) for record in records]

    # Admission-token records

    async def record_token(
        self, event_id: str, queue_id: str, jti: str, expires_at_ms: int
    ) -> tuple[TokenRecord, bool] | None:
        reply = await self._run_token("token_record", event_id, [queue_id, jti, expires_at_ms])
        if reply[0] == "not_admitted":
            return None
        _raise_for_status(reply, event_id)
        return _token_record(event_id, jti, reply[2]), reply[1] == 1

    async def lookup_token(
        self, event_id: str, jti: str, *, device_id: str | None = None, leeway_ms: int = 0
    ) -> TokenLookup:
        args: list[str | int] = [jti, device_id or "", leeway_ms]
        reply = await self._run_token("token_lookup", event_id, args)
        return _token_lookup(event_id, jti, reply)

    async def consume_token(
        self, event_id: str, jti: str, *, device_id: str | None = None, leeway_ms: int = 0
    ) -> TokenLookup:
        args: list[str | int] = [jti, device_id or "", leeway_ms]
        reply = await self._run_token("token_consume", event_id, args)
        return _token_lookup(event_id, jti, reply)

    async def revoke_tokens(
        self, event_id: str, *, jti: str | None = None, device_id: str | None = None
    ) -> RevokeResult:
        if jti is not None:
            args = ["jti", jti]
        elif device_id is not None:
            args = ["device", device_id]
        else:
            args = ["event", ""]
        reply = await self._run_token("token_revoke", event_id, args)
        _raise_for_status(reply, event_id)
        return RevokeResult(revoked_tokens=int(reply[1]), ended_sessions=int(reply[2]))

    async def _run_token(
        self, script_name: str, event_id: str, args: Sequence[str | int]
    ) -> list[Any]:
        """Run one token script on the event's keys followed by its token keys."""
        return await self._run_ops(script_name, event_id, args, token_keys(event_id).as_list())

    # Webhooks

    async def record_webhook_failure(self, failure: WebhookFailure, keep: int) -> WebhookFailure:
        record = failure.to_dict()
        del record["failed_at_ms"]
        args: list[str | int] = [
            keep,
            WEBHOOK_FAILURE_RETENTION_S * 1000,
            orjson.dumps(record).decode(),
        ]
        keys = [*event_keys(failure.event_id).as_list(), webhook_failures_key(failure.event_id)]
        script = self._scripts["record_webhook_failure"]
        try:
            reply = await script(keys=keys, args=args)
        except RedisError as error:
            raise _unavailable("record_webhook_failure", error) from error
        return replace(failure, failed_at_ms=int(reply[1]))

    async def webhook_failures(self, event_id: str) -> list[WebhookFailure]:
        try:
            records = await self._client.lrange(webhook_failures_key(event_id), 0, -1)
        except RedisError as error:
            raise _unavailable("webhook_failures", error) from error
        return [WebhookFailure(**orjson.loads(record)) for record in records]

    # Operations (admin API)

    async def delete_event(self, event_id: str) -> tuple[int, int]:
        extra_keys = [wait_samples_key(event_id), priority_codes_key(event_id)]
        reply = await self._run_ops("delete_event", event_id, [], extra_keys)
        _raise_for_status(reply, event_id)

        # Without its config the event is invisible to every script, so nothing recreates its
        # keys while the index entry and the keys of other features are removed.
        try:
            await self._client.srem(EVENTS_KEY, event_id)
            leftovers = [key async for key in self._client.scan_iter(event_key_pattern(event_id))]
            if leftovers:
                await self._client.unlink(*leftovers)
        except RedisError as error:
            raise _unavailable("delete_event", error) from error
        return int(reply[1]), int(reply[2])

    async def reset_event(self, event_id: str) -> tuple[int, int]:
        reply = await self._run_ops("reset_event", event_id, [], [wait_samples_key(event_id)])
        _raise_for_status(reply, event_id)
        return int(reply[1]), int(reply[2])

    async def record_waits(self, event_id: str, queue_ids: list[str]) -> list[int]:
        args: list[str | int] = [WAIT_SAMPLES_MAX, *queue_ids]
        reply = await self._run_ops("record_waits", event_id, args, [wait_samples_key(event_id)])
        _raise_for_status(reply, event_id)
        return [int(wait_ms) for wait_ms in reply[1:]]

    async def event_stats(self, event_id: str) -> EventStats:
        reply = await self._run_ops("event_stats", event_id, [], [wait_samples_key(event_id)])
        _raise_for_status(reply, event_id)
        snapshot = _event_snapshot(reply[1])
        counts = [int(count) for count in reply[2]]
        return EventStats(
            snapshot=snapshot,
            waiting_by_bucket=dict(zip(snapshot.config.buckets, counts, strict=True)),
            wait_samples_ms=[int(wait_ms) for wait_ms in reply[3]],
        )

    async def inspect_entry(self, event_id: str, queue_id: str) -> EntrySnapshot:
        reply = await self._run_ops("inspect_entry", event_id, [queue_id], [])
        if reply[0] == "event_not_found":
            raise EntryNotFound()
        _raise_for_status(reply, event_id)
        return _entry_snapshot(event_id, reply[1], reply[2])

    async def put_priority_codes(self, event_id: str, codes: list[PriorityCode]) -> None:
        args: list[str | int] = []
        for code in codes:
            args += [code.code_id, orjson.dumps(code.to_stored()).decode()]
        reply = await self._run_ops(
            "put_priority_codes", event_id, args, [priority_codes_key(event_id)]
        )
        if reply[0] == "unknown_bucket":
            raise InvalidInput("bucket", f"event {event_id!r} has no bucket {reply[1]!r}")
        _raise_for_status(reply, event_id)

    async def list_priority_codes(self, event_id: str) -> list[PriorityCode]:
        try:
            pipeline = self._client.pipeline(transaction=True)
            pipeline.exists(event_keys(event_id).config)
            pipeline.hgetall(priority_codes_key(event_id))
            exists, stored = await pipeline.execute()
        except RedisError as error:
            raise _unavailable("list_priority_codes", error) from error
        if not exists:
            raise EventNotFound(event_id)
        codes = [
            PriorityCode.from_stored(str(code_id), orjson.loads(text))
            for code_id, text in stored.items()
        ]
        return sorted(codes, key=lambda code: (code.created_at_ms, code.code_id))

    async def get_priority_code(self, event_id: str, code_id: str) -> PriorityCode | None:
        try:
            text = await self._client.hget(priority_codes_key(event_id), code_id)
        except RedisError as error:
            raise _unavailable("get_priority_code", error) from error
        return None if text is None else PriorityCode.from_stored(code_id, orjson.loads(text))

    async def disable_priority_code(self, event_id: str, code_id: str) -> PriorityCode:
        reply = await self._run_ops(
            "disable_priority_code", event_id, [code_id], [priority_codes_key(event_id)]
        )
        if reply[0] == "code_not_found":
            raise PriorityCodeNotFound(code_id)
        _raise_for_status(reply, event_id)
        return PriorityCode.from_stored(code_id, orjson.loads(reply[1]))

    def rate_limit_storage(self) -> Storage:
        """Return `limits`' Redis storage on this store's own connection pool (no second pool)."""
        # `limits` types its extra options as scalars, but passes them to redis-py unchanged.
        options: dict[str, Any] = {"connection_pool": self._client.connection_pool}
        return RedisStorage(
            "async+redis://",
            implementation="redispy",
            key_prefix="gk:ratelimit",
            wrap_exceptions=True,
            **options,
        )

    # Helpers

    async def _run_ops(
        self,
        script_name: str,
        event_id: str,
        args: Sequence[str | int],
        extra_keys: Sequence[str],
    ) -> list[Any]:
        """Run one operations script on the event's keys followed by `extra_keys`."""
        script = self._scripts[script_name]
        keys = event_keys(event_id).as_list() + list(extra_keys)
        try:
            reply = await script(keys=keys, args=args)
        except RedisError as error:
            raise _unavailable(script_name, error) from error
        if not isinstance(reply, list) or not reply:
            raise TypeError(f"script {script_name} returned {reply!r}; expected a status list")
        return reply

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


@functools.lru_cache(maxsize=4096)
def _touch_keys(event_id: str) -> tuple[bytes, ...]:
    """Return the event and control keys of a touch call, encoded once per event."""
    names = [*event_keys(event_id).as_list(), *control_keys(event_id)]
    return tuple(name.encode() for name in names)


def _window_outcome(
    limits: Sequence[WindowLimit], reply: list[Any], *, allowed: bool
) -> WindowOutcome:
    """Decode touch.lua's {index, remaining, reset_s} of one of `limits` (index from 1)."""
    index, remaining, reset_s = reply
    limit = limits[int(index) - 1]
    return WindowOutcome(limit.name, limit.amount, int(remaining), int(reset_s), allowed)


# Entry statuses by their stored word; a dict lookup is cheaper than calling the enum.
ENTRY_STATUSES = {status.value: status for status in EntryStatus}


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
    if status == "event_closed":
        raise EventClosed(event_id)
    if status == "sold_out":
        raise SoldOut(event_id)
    if status == "joins_rejected":
        raise JoinsRejected(event_id)
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
    `revision` names the document, so a status poll can skip sending a document Python has.
    """
    document = orjson.dumps(config.to_dict()).decode()
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
        # Release-controller fields; '' stands for None.
        "opens_at_ms",
        _optional_text(config.opens_at_ms),
        "closes_at_ms",
        _optional_text(config.closes_at_ms),
        "mode",
        str(config.mode),
        "stock",
        _optional_text(config.stock),
        "max_session_s",
        "" if config.max_session_s is None else repr(float(config.max_session_s)),
        "document",
        document,
        "revision",
        hashlib.sha256(document.encode()).hexdigest()[:16],
    ]


# Config fields that a Lua script may change on its own (`set_paused`); they are read from
# their flat field, which is always current, instead of from `document`. common.lua's
# snapshot_reply sends them beside the document, in this order.
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
        (document, paused, _),
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
        config=_decode_config(document, (paused == "1",)),  # SCRIPT_WRITTEN_FIELDS
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
    event_id: str,
    entry_reply: list[Any],
    snapshot_reply: list[Any],
    limit: WindowOutcome | None = None,
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
        status=ENTRY_STATUSES[head["s"]],
        joined_at_ms=int(fixed["j"]),
        last_heartbeat_ms=int(last_heartbeat_ms),
        token_id=fixed["t"],
        nonce=fixed["n"],
        admitted_at_ms=_optional_int(head.get("a")),
        session_expires_at_ms=_optional_int(head.get("x")),
        ended_at_ms=_optional_int(head.get("e")),
        ticket_id=fixed.get("k") or stored_ticket_id(queue_id),
    )
    return EntrySnapshot(
        entry=entry,
        position=None if position is None else int(position),
        event=_event_snapshot(snapshot_reply),
        limit=limit,
    )


def _watched_entry(event_id: str, queue_id: str, item: object) -> WatchedEntry:
    """Decode one item of watch.lua's reply: a position, an entry JSON text, or nil."""
    if item is None:
        return WatchedEntry(queue_id=queue_id, status=None)
    if isinstance(item, int):
        return WatchedEntry(queue_id=queue_id, status=EntryStatus.WAITING, position=item)

    assert isinstance(item, str)
    head = orjson.loads(item)
    fixed = head["f"]
    entry = Entry(
        queue_id=queue_id,
        event_id=event_id,
        device_id=fixed["d"],
        user_id=fixed.get("u"),
        bucket=fixed["b"],
        status=ENTRY_STATUSES[head["s"]],
        joined_at_ms=int(fixed["j"]),
        last_heartbeat_ms=int(head["h"]),
        token_id=fixed["t"],
        nonce=fixed["n"],
        admitted_at_ms=_optional_int(head.get("a")),
        session_expires_at_ms=_optional_int(head.get("x")),
        ended_at_ms=_optional_int(head.get("e")),
    )
    return WatchedEntry(queue_id=queue_id, status=entry.status, entry=entry)


def _token_record(event_id: str, jti: str, raw: str) -> TokenRecord:
    """Decode a record of token_common.lua: {"q","d","x","i"[,"c"][,"r"]}."""
    fields = orjson.loads(raw)
    return TokenRecord(
        jti=jti,
        event_id=event_id,
        queue_id=fields["q"],
        device_id=fields["d"],
        expires_at_ms=int(fields["x"]),
        issued_at_ms=int(fields["i"]),
        consumed_at_ms=_optional_int(fields.get("c")),
        revoked_at_ms=_optional_int(fields.get("r")),
    )


def _token_lookup(event_id: str, jti: str, reply: list[Any]) -> TokenLookup:
    """Decode token_common.lua's token_reply: {'ok', state, record JSON or nil, now_ms}."""
    _, state, raw, now_ms = reply
    record = None if raw is None else _token_record(event_id, jti, raw)
    return TokenLookup(state=TokenState(state), record=record, now_ms=int(now_ms))


def _optional_text(value: int | None) -> str:
    return "" if value is None else str(value)


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
