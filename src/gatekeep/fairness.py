"""Provably fair pre-queue order and the hash-chained admission log, with their checks.

Order. Each event draws a 256-bit seed before anyone can join and publishes only its
commitment, SHA-256(seed). At opening, every pre-queue entry is ordered by

    (bucket rank, HMAC-SHA256(key=seed, message=ticket_id) as hex, ticket_id)

and the seed is revealed together with the ordered list of public ticket ids. Anyone can check
that SHA-256 of the revealed seed equals the commitment and recompute the order.

Log. Every admission step appends one record naming the tickets it admitted. A record's hash is
SHA-256 of its canonical text (see `admission_record_text`), which includes the previous
record's hash, so a changed, removed or reordered record breaks the chain after it.

This module needs only the standard library, so a third party can copy it to check a saved
publication or log.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

ALGORITHM = "gatekeep-fairness-v1"
LOG_FORMAT = "gatekeep-admission-v1"
GENESIS_HASH = "0" * 64

# Kinds of admission log records: a release tick, a manual release by an operator, and a join
# admitted at once in `passthrough` mode.
LOG_KINDS = ("tick", "manual", "join")


def new_seed() -> tuple[str, str]:
    """Draw a fairness seed; return (seed as 64 hex digits, its commitment)."""
    seed_hex = secrets.token_hex(32)
    return seed_hex, commitment_of(seed_hex)


def commitment_of(seed_hex: str) -> str:
    """Return SHA-256 of the seed's 32 bytes, as hex."""
    return hashlib.sha256(bytes.fromhex(seed_hex)).hexdigest()


def order_key(seed_hex: str, ticket_id: str) -> str:
    """Return HMAC-SHA256(key=seed bytes, message=ticket id in UTF-8) as hex."""
    return hmac.new(bytes.fromhex(seed_hex), ticket_id.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class PreQueueEntry:
    """One entry of the frozen pre-queue."""

    ticket_id: str
    bucket_rank: int  # 0 = highest-priority bucket
    queue_id: str = ""  # secret; used inside the store only, never published


def fair_order(seed_hex: str, entries: Iterable[PreQueueEntry]) -> list[PreQueueEntry]:
    """Return the pre-queue in its fair order: bucket rank, then HMAC key, then ticket id."""

    def sort_key(entry: PreQueueEntry) -> tuple[int, str, str]:
        return (entry.bucket_rank, order_key(seed_hex, entry.ticket_id), entry.ticket_id)

    return sorted(entries, key=sort_key)


def prequeue_scores(ordered: Sequence[PreQueueEntry]) -> list[int]:
    """Return the waiting-list score of each entry of the ordered pre-queue.

    The k-th entry of bucket rank r gets r * SEQ_SPAN + k. The pre-queue contains at most as
    many entries as joins before the freeze, so these scores stay below every later join's
    sequence number and the later joins queue behind it.
    """
    from gatekeep.store.constants import SEQ_SPAN

    counts: dict[int, int] = {}
    scores = []
    for entry in ordered:
        counts[entry.bucket_rank] = counts.get(entry.bucket_rank, 0) + 1
        scores.append(entry.bucket_rank * SEQ_SPAN + counts[entry.bucket_rank])
    return scores


def stored_ticket_id(queue_id: str) -> str:
    """Return the ticket id of an entry stored without one: 24 hex digits of SHA-1(queue id).

    control.lua derives the same id, and it reveals nothing about the queue id.
    """
    return hashlib.sha1(queue_id.encode(), usedforsecurity=False).hexdigest()[:24]


def build_publication(
    *,
    event_id: str,
    seed_hex: str,
    frozen_at_ms: int,
    buckets: Sequence[str],
    ordered: Sequence[PreQueueEntry],
) -> dict[str, Any]:
    """Return the document revealed at opening: the seed and the ordered ticket list."""
    return {
        "algorithm": ALGORITHM,
        "event_id": event_id,
        "commitment": commitment_of(seed_hex),
        "seed": seed_hex,
        "frozen_at_ms": frozen_at_ms,
        "buckets": list(buckets),
        "tickets": [
            {"ticket_id": entry.ticket_id, "bucket": buckets[entry.bucket_rank]}
            for entry in ordered
        ],
    }


def verify_publication(
    document: dict[str, Any], expected_commitment: str | None = None
) -> list[str]:
    """Check a fairness publication; return the problems found (empty when it is correct).

    `expected_commitment` is the commitment saved before opening, when the checker has one.
    """
    problems: list[str] = []
    if document.get("algorithm") != ALGORITHM:
        problems.append(f"unknown algorithm {document.get('algorithm')!r}; expected {ALGORITHM}")
        return problems
    seed_hex = document.get("seed")
    if not isinstance(seed_hex, str) or len(seed_hex) != 64:
        problems.append("the seed is missing or not 64 hex digits: the event has not opened yet")
        return problems

    commitment = commitment_of(seed_hex)
    if commitment != document.get("commitment"):
        problems.append("SHA-256 of the seed does not match the published commitment")
    if expected_commitment is not None and commitment != expected_commitment:
        problems.append("SHA-256 of the seed does not match the commitment saved before opening")

    buckets = list(document.get("buckets", []))
    published = document.get("tickets", [])
    entries = [
        PreQueueEntry(ticket_id=item["ticket_id"], bucket_rank=buckets.index(item["bucket"]))
        for item in published
    ]
    recomputed = [entry.ticket_id for entry in fair_order(seed_hex, entries)]
    for index, (claimed, expected) in enumerate(
        zip([entry.ticket_id for entry in entries], recomputed, strict=True), start=1
    ):
        if claimed != expected:
            problems.append(
                f"position {index} holds ticket {claimed} but the seed puts {expected} there"
            )
            break
    return problems


def admission_record_text(
    event_id: str, n: int, at_ms: int, kind: str, prev: str, tickets: Sequence[str]
) -> str:
    """Return the canonical text that a log record's hash covers: seven lines joined by LF."""
    return "\n".join([LOG_FORMAT, event_id, str(n), str(at_ms), kind, prev, ",".join(tickets)])


def admission_record_hash(
    event_id: str, n: int, at_ms: int, kind: str, prev: str, tickets: Sequence[str]
) -> str:
    text = admission_record_text(event_id, n, at_ms, kind, prev, tickets)
    return hashlib.sha256(text.encode()).hexdigest()


def admission_record(
    event_id: str, n: int, at_ms: int, kind: str, prev: str, tickets: Sequence[str]
) -> dict[str, Any]:
    """Build a log record as both stores keep it."""
    return {
        "n": n,
        "event_id": event_id,
        "at_ms": at_ms,
        "kind": kind,
        "tickets": list(tickets),
        "prev": prev,
        "hash": admission_record_hash(event_id, n, at_ms, kind, prev, tickets),
    }


def check_admission_log(records: Sequence[dict[str, Any]]) -> list[str]:
    """Verify the hash chain of a whole log; return one message per broken link.

    A record whose fields no longer match its hash is reported as changed. A gap in `n` is
    reported as missing records, and a `prev` that differs from the hash of the record before
    it means that record was changed and given a new hash.
    """
    problems: list[str] = []
    expected_prev = GENESIS_HASH
    expected_n = 1
    seen_tickets: dict[str, int] = {}
    for line_number, record in enumerate(records, start=1):
        n = record.get("n")
        if not isinstance(n, int):
            problems.append(f"line {line_number}: the record has no number n")
            continue
        recomputed = admission_record_hash(
            str(record.get("event_id")),
            n,
            int(record.get("at_ms", -1)),
            str(record.get("kind")),
            str(record.get("prev")),
            [str(ticket) for ticket in record.get("tickets", [])],
        )
        if recomputed != record.get("hash"):
            problems.append(f"record {n} (line {line_number}) was changed: its hash does not match")
        if n != expected_n:
            missing = f"{expected_n}" if n == expected_n + 1 else f"{expected_n} to {n - 1}"
            if n > expected_n:
                problems.append(f"record {missing} is missing before record {n}")
            else:
                problems.append(f"record {n} (line {line_number}) is out of order or repeated")
        elif record.get("prev") != expected_prev:
            problems.append(
                f"record {n} (line {line_number}) does not chain to record {n - 1}: "
                f"record {n - 1} was changed or replaced"
            )
        for ticket in record.get("tickets", []):
            if ticket in seen_tickets:
                problems.append(
                    f"ticket {ticket} is admitted twice: records {seen_tickets[ticket]} and {n}"
                )
            seen_tickets[ticket] = n
        expected_prev = str(record.get("hash"))
        expected_n = n + 1
    return problems
