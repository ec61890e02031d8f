"""Rate limits: client IP resolution, the limiter on both stores, and limits across processes."""

from __future__ import annotations

import httpx
import pytest

from conftest import start_service
from gatekeep.errors import InvalidInput, RateLimited
from gatekeep.ratelimit import (
    RateLimiter,
    client_ip,
    parse_rate_limit_setting,
    parse_trusted_proxies,
)
from gatekeep.store.base import Store
from test_api import assert_error, join, put_event

TRUSTED = parse_trusted_proxies("10.0.0.0/8,127.0.0.1")


def forwarded(*values: str, cf: str | None = None) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-forwarded-for", value.encode()) for value in values]
    if cf is not None:
        headers.append((b"cf-connecting-ip", cf.encode()))
    return headers


async def join_from(
    client: httpx.AsyncClient, device_id: str, forwarded_for: str
) -> httpx.Response:
    return await client.post(
        "/v1/events/ev/join",
        json={"device_id": device_id},
        headers={"X-Forwarded-For": forwarded_for},
    )


# Client IP


def test_client_ip_untrusted_peer_ignores_headers() -> None:
    assert client_ip("203.0.113.9", forwarded("1.2.3.4"), TRUSTED) == "203.0.113.9"
    assert client_ip("203.0.113.9", forwarded("1.2.3.4", cf="5.6.7.8"), TRUSTED) == "203.0.113.9"
    assert client_ip("127.0.0.1", forwarded("1.2.3.4"), ()) == "127.0.0.1"


def test_client_ip_rightmost_untrusted_hop() -> None:
    # The client forged 6.6.6.6; the first proxy saw 198.51.100.7 and appended it.
    headers = forwarded("6.6.6.6, 198.51.100.7, 10.0.0.5")

    assert client_ip("10.0.0.1", headers, TRUSTED) == "198.51.100.7"


def test_client_ip_joins_repeated_headers() -> None:
    headers = forwarded("6.6.6.6", "198.51.100.7")

    assert client_ip("10.0.0.1", headers, TRUSTED) == "198.51.100.7"


def test_client_ip_cf_connecting_ip() -> None:
    assert client_ip("10.0.0.1", forwarded(cf="198.51.100.8"), TRUSTED) == "198.51.100.8"
    assert client_ip("10.0.0.1", forwarded(cf="garbage"), TRUSTED) == "10.0.0.1"


def test_client_ip_malformed_hop_stops_walk() -> None:
    headers = forwarded("198.51.100.7, not-an-ip, 10.0.0.5")

    assert client_ip("10.0.0.1", headers, TRUSTED) == "10.0.0.5"


def test_client_ip_all_hops_trusted() -> None:
    assert client_ip("10.0.0.1", forwarded("10.0.0.7, 10.0.0.5"), TRUSTED) == "10.0.0.7"


def test_rate_limit_setting_parse() -> None:
    assert parse_rate_limit_setting("join.ip=5/second, status.device=off") == (
        ("join.ip", "5/second"),
        ("status.device", "off"),
    )
    with pytest.raises(InvalidInput):
        parse_rate_limit_setting("join.ip")
    with pytest.raises(InvalidInput):
        parse_rate_limit_setting("join.planet=5/second")
    with pytest.raises(InvalidInput):
        parse_trusted_proxies("10.0.0.0/8,proxy.example")


# The limiter on each store's storage


async def test_limiter_counts_and_rejects(store: Store) -> None:
    limiter = RateLimiter(store.rate_limit_storage(), (("join.device", "3/minute"),))

    headers = [await limiter.check("join", {"device": "d1"}, scope_id="ev") for _ in range(3)]
    with pytest.raises(RateLimited) as rejected:
        await limiter.check("join", {"device": "d1"}, scope_id="ev")
    other_device = await limiter.check("join", {"device": "d2"}, scope_id="ev")
    other_event = await limiter.check("join", {"device": "d1"}, scope_id="ev2")

    assert [header["RateLimit-Remaining"] for header in headers] == ["2", "1", "0"]
    assert headers[0]["RateLimit-Limit"] == "3"
    assert 1 <= int(headers[0]["RateLimit-Reset"]) <= 120
    assert rejected.value.status_code == 429
    assert int(rejected.value.headers["Retry-After"]) >= 1
    assert rejected.value.headers["RateLimit-Remaining"] == "0"
    assert other_device["RateLimit-Remaining"] == "2"
    assert other_event["RateLimit-Remaining"] == "2"


async def test_limiter_reports_tightest_limit(store: Store) -> None:
    limiter = RateLimiter(
        store.rate_limit_storage(), (("join.device", "10/minute"), ("join.ip", "4/minute"))
    )

    headers = await limiter.check("join", {"device": "d1", "ip": "192.0.2.1"}, scope_id="ev")

    assert headers["RateLimit-Limit"] == "4"
    assert headers["RateLimit-Remaining"] == "3"


async def test_limiter_override_turns_limit_off(store: Store) -> None:
    limiter = RateLimiter(store.rate_limit_storage(), (("join.device", "1/minute"),))
    await limiter.check("join", {"device": "d1"}, scope_id="ev")

    headers = await limiter.check(
        "join", {"device": "d1"}, scope_id="ev", overrides=(("join.device", "off"),)
    )

    assert "RateLimit-Limit" not in headers or headers["RateLimit-Limit"] != "1"


# Across two service processes on one Redis

LIMITS = "join.ip=6/minute,join.device=off,join.user=off,status.ip=off,status.device=3/minute"


async def test_ip_limit_holds_across_two_processes(redis_url: str) -> None:
    env = {"GATEKEEP_RATE_LIMITS": LIMITS}
    first = start_service(redis_url=redis_url, extra_env=env)
    second = start_service(redis_url=redis_url, extra_env=env)
    try:
        async with first.client() as client_a, second.client() as client_b:
            await put_event(client_a, "ev", paused=True)
            clients = [client_a, client_b]
            # Rotating device ids and forged forwarding headers from one untrusted peer.
            responses = [
                await join_from(clients[index % 2], f"device-{index}", f"198.51.100.{index}")
                for index in range(8)
            ]
    finally:
        first.stop()
        second.stop()

    statuses = [response.status_code for response in responses]
    assert statuses[:6] == [201] * 6
    assert statuses[6:] == [429, 429]
    limited = responses[6]
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["RateLimit-Remaining"] == "0"
    assert responses[0].headers["RateLimit-Limit"] == "6"
    assert responses[0].headers["RateLimit-Remaining"] == "5"


async def test_trusted_proxy_separates_clients(redis_url: str) -> None:
    env = {"GATEKEEP_RATE_LIMITS": LIMITS, "GATEKEEP_TRUSTED_PROXIES": "127.0.0.1/32"}
    running = start_service(redis_url=redis_url, extra_env=env)
    try:
        async with running.client() as client:
            await put_event(client, "ev", paused=True)
            distinct = [
                await join_from(client, f"d{index}", f"192.0.2.{index}") for index in range(8)
            ]
            same = [await join_from(client, f"s{index}", "192.0.2.200") for index in range(7)]
    finally:
        running.stop()

    assert [response.status_code for response in distinct] == [201] * 8
    assert [response.status_code for response in same] == [201] * 6 + [429]


async def test_status_limit_per_entry_across_processes(redis_url: str) -> None:
    env = {"GATEKEEP_RATE_LIMITS": LIMITS}
    first = start_service(redis_url=redis_url, extra_env=env)
    second = start_service(redis_url=redis_url, extra_env=env)
    try:
        async with first.client() as client_a, second.client() as client_b:
            await put_event(client_a, "ev", paused=True)
            queue_id = (await join(client_a, "ev", "d1")).json()["queue_id"]
            clients = [client_a, client_b]
            statuses = [
                (await clients[index % 2].get(f"/v1/queue/{queue_id}")).status_code
                for index in range(4)
            ]
            other = (await join(client_b, "ev", "d2")).json()["queue_id"]
            other_status = await client_a.get(f"/v1/queue/{other}")
    finally:
        first.stop()
        second.stop()

    assert statuses == [200, 200, 200, 429]
    assert other_status.status_code == 200
    assert other_status.headers["RateLimit-Limit"] == "3"


async def test_event_rate_limits_override(redis_url: str) -> None:
    running = start_service(redis_url=redis_url, extra_env={"GATEKEEP_RATE_LIMITS": LIMITS})
    try:
        async with running.client() as client:
            await put_event(client, "ev", paused=True, rate_limits={"join.ip": "2/minute"})
            responses = [await join(client, "ev", f"d{index}") for index in range(3)]
    finally:
        running.stop()

    assert [response.status_code for response in responses] == [201, 201, 429]
