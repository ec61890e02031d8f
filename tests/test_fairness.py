"""The fairness algorithm, the log chain and the Lua SHA-256 that the Redis store uses."""

from __future__ import annotations

import hashlib
import hmac

import pytest
import redis

from gatekeep.audit_cli import admission_order_problems
from gatekeep.fairness import (
    PreQueueEntry,
    build_publication,
    commitment_of,
    fair_order,
    new_seed,
    prequeue_scores,
    verify_publication,
)
from gatekeep.store.constants import SEQ_SPAN
from gatekeep.store.scripts import assemble


def publication_for(tickets: list[tuple[str, int]]) -> dict[str, object]:
    seed_hex, _ = new_seed()
    entries = [PreQueueEntry(ticket_id=t, bucket_rank=rank) for t, rank in tickets]
    return build_publication(
        event_id="ev",
        seed_hex=seed_hex,
        frozen_at_ms=1,
        buckets=["vip", "default"],
        ordered=fair_order(seed_hex, entries),
    )


def test_order_is_hmac_sort() -> None:
    seed_hex = "11" * 32
    tickets = [f"{i:024x}" for i in range(50)]

    ordered = fair_order(seed_hex, [PreQueueEntry(t, 0) for t in tickets])

    key = bytes.fromhex(seed_hex)
    expected = sorted(tickets, key=lambda t: hmac.new(key, t.encode(), hashlib.sha256).hexdigest())
    assert [entry.ticket_id for entry in ordered] == expected


def test_order_keeps_buckets_first() -> None:
    entries = [PreQueueEntry(f"{i:024x}", i % 2) for i in range(20)]

    ordered = fair_order("22" * 32, entries)

    assert [entry.bucket_rank for entry in ordered] == [0] * 10 + [1] * 10
    assert prequeue_scores(ordered)[:2] == [1, 2]
    assert prequeue_scores(ordered)[10] == SEQ_SPAN + 1


def test_commitment_is_sha256_of_seed() -> None:
    seed_hex, commitment = new_seed()

    assert commitment == hashlib.sha256(bytes.fromhex(seed_hex)).hexdigest()
    assert commitment_of(seed_hex) == commitment


def test_publication_verifies() -> None:
    publication = publication_for([(f"{i:024x}", i % 2) for i in range(30)])

    assert verify_publication(publication) == []
    assert verify_publication(publication, str(publication["commitment"])) == []


def test_publication_swap_detected() -> None:
    publication = publication_for([(f"{i:024x}", 1) for i in range(30)])
    tickets = publication["tickets"]
    assert isinstance(tickets, list)
    tickets[3], tickets[4] = tickets[4], tickets[3]

    problems = verify_publication(publication)

    assert len(problems) == 1
    assert problems[0].startswith("position 4 holds ticket")


def test_publication_other_seed_detected() -> None:
    publication = publication_for([("a" * 24, 1)])
    publication["seed"] = "33" * 32

    problems = verify_publication(publication)

    assert problems == ["SHA-256 of the seed does not match the published commitment"]


def test_log_order_check_finds_jump() -> None:
    publication = publication_for([(f"{i:024x}", 1) for i in range(4)])
    order = [item["ticket_id"] for item in publication["tickets"]]  # type: ignore[attr-defined]
    in_order = [{"n": 1, "tickets": order[:2]}, {"n": 2, "tickets": ["x" * 24, *order[2:]]}]
    out_of_order = [{"n": 1, "tickets": [order[1]]}, {"n": 2, "tickets": [order[0]]}]

    assert admission_order_problems(publication, in_order) == []
    problems = admission_order_problems(publication, out_of_order)
    assert len(problems) == 1
    assert problems[0].startswith("record 2 admits ticket")


@pytest.mark.parametrize("length", [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000])
def test_lua_sha256_matches_hashlib(redis_url: str, length: int) -> None:
    message = bytes(range(256)) * (length // 256 + 1)
    message = message[:length]
    client = redis.Redis.from_url(redis_url)
    try:
        digest = client.eval(assemble("return sha256_hex(ARGV[1])"), 0, message)
    finally:
        client.close()

    assert digest.decode() == hashlib.sha256(message).hexdigest()
