"""Operations: store methods behind the admin API (both stores) and the admin API over HTTP."""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import time
from dataclasses import replace
from typing import Any

import httpx
import pytest

from conftest import ADMIN_KEY, Service, start_service
from gatekeep.errors import EntryNotFound, EventNotFound, InvalidInput, PriorityCodeNotFound
from gatekeep.model import EntryStatus, EventConfig
from gatekeep.priority import PriorityCode, code_id_of, hash_code, new_code
from gatekeep.store.base import Store
from test_api import assert_error, join, put_event, wait_for_status
from test_store_behaviour import join_many, join_request, make_event

# Store behaviour (memory and Redis)


def make_code(bucket: str = "vip", max_uses: int = 1) -> tuple[str, PriorityCode]:
    code = new_code()
    stored = PriorityCode(
        code_id=code_id_of(code),
        code_hash=hash_code(code),
        bucket=bucket,
        max_uses=max_uses,
        uses=0,
        disabled=False,
        created_at_ms=1,
    )
    return code, stored


def code_request(event_id: str, device_id: str, code: PriorityCode) -> Any:
    return replace(
        join_request(event_id, device_id, code.bucket),
        priority_code_id=code.code_id,
        priority_code_hash=code.code_hash,
    )


async def test_delete_event_removes_everything(store: Store) -> None:
    await make_event(store, paused=True)
    queue_ids = await join_many(store, "ev1", 3)
    _, code = make_code("default")
    await store.put_priority_codes("ev1", [code])

    dropped = await store.delete_event("ev1")

    assert dropped == (3, 0)
    assert await store.get_event("ev1") is None
    assert await store.list_event_ids() == []
    assert await store.get_priority_code("ev1", code.code_id) is None
    with pytest.raises(EntryNotFound):
        await store.touch("ev1", queue_ids[0])
    with pytest.raises(EventNotFound):
        await store.delete_event("ev1")


async def test_delete_event_then_recreate_is_empty(store: Store) -> None:
    await make_event(store, paused=True)
    await join_many(store, "ev1", 2)
    await store.delete_event("ev1")

    await make_event(store, paused=True)
    stats = await store.event_stats("ev1")

    assert stats.snapshot.waiting_count == 0
    assert stats.snapshot.admitted_total == 0


async def test_reset_event_drops_queue_keeps_config(store: Store) -> None:
    config = await make_event(store, release_rate=100)
    queue_ids = await join_many(store, "ev1", 4)
    await store.release("ev1", 2)
    _, code = make_code("default")
    await store.put_priority_codes("ev1", [code])

    dropped = await store.reset_event("ev1")

    assert dropped[0] + dropped[1] == 4
    assert await store.get_event("ev1") == config
    assert await store.get_priority_code("ev1", code.code_id) is not None
    for queue_id in queue_ids:
        with pytest.raises(EntryNotFound):
            await store.touch("ev1", queue_id)
    snapshot = await store.event_snapshot("ev1")
    assert snapshot.waiting_count == 0
    assert snapshot.admitted_active == 0
    assert snapshot.admitted_total == 0


async def test_reset_unknown_event_raises(store: Store) -> None:
    with pytest.raises(EventNotFound):
        await store.reset_event("nope")


async def test_record_waits_and_stats(store: Store) -> None:
    await make_event(store, release_rate=1000, buckets=["vip", "default"], paused=True)
    await join_many(store, "ev1", 3)
    await store.join(join_request("ev1", "v1", "vip"))

    stats = await store.event_stats("ev1")
    assert stats.waiting_by_bucket == {"vip": 1, "default": 3}

    await store.set_paused("ev1", False)
    await asyncio.sleep(0.05)
    result = await store.release("ev1", 2)
    waits_ms = await store.record_waits("ev1", result.admitted_queue_ids)

    assert len(waits_ms) == 2
    assert all(wait_ms >= 0 for wait_ms in waits_ms)
    stats = await store.event_stats("ev1")
    assert sorted(stats.wait_samples_ms) == sorted(waits_ms)
    assert stats.snapshot.admitted_active == 2
    assert sum(stats.waiting_by_bucket.values()) == 2


async def test_record_waits_caps_samples(store: Store) -> None:
    await make_event(store, release_rate=100_000, max_capacity=100_000)
    await join_many(store, "ev1", 1100)
    await asyncio.sleep(0.05)
    result = await store.release("ev1", 2000)
    await store.record_waits("ev1", result.admitted_queue_ids)

    stats = await store.event_stats("ev1")

    assert len(stats.wait_samples_ms) == 1000


async def test_inspect_entry_has_no_heartbeat_side_effect(store: Store) -> None:
    await make_event(store, paused=True)
    queue_id = (await join_many(store, "ev1", 1))[0]
    before = (await store.touch("ev1", queue_id)).entry.last_heartbeat_ms
    await asyncio.sleep(0.02)

    snapshot = await store.inspect_entry("ev1", queue_id)

    assert snapshot.position == 1
    assert snapshot.entry.status == EntryStatus.WAITING
    assert (await store.inspect_entry("ev1", queue_id)).entry.last_heartbeat_ms == before
    with pytest.raises(EntryNotFound):
        await store.inspect_entry("ev1", queue_id[:-3] + "xyz")


async def test_single_use_code_consumed_once(store: Store) -> None:
    await make_event(store, buckets=["vip", "default"], paused=True)
    _, code = make_code("vip", max_uses=1)
    await store.put_priority_codes("ev1", [code])

    first = await store.join(code_request("ev1", "d1", code))

    assert first.created
    assert first.snapshot.entry.bucket == "vip"
    with pytest.raises(InvalidInput):
        await store.join(code_request("ev1", "d2", code))
    stored = await store.get_priority_code("ev1", code.code_id)
    assert stored is not None
    assert stored.uses == 1


async def test_code_not_used_when_join_fails(store: Store) -> None:
    await make_event(store, buckets=["vip", "default"], paused=True, max_queue_size=1)
    _, code = make_code("vip", max_uses=1)
    await store.put_priority_codes("ev1", [code])
    await join_many(store, "ev1", 1)

    with pytest.raises(Exception, match="full"):
        await store.join(code_request("ev1", "d9", code))

    stored = await store.get_priority_code("ev1", code.code_id)
    assert stored is not None
    assert stored.uses == 0


async def test_concurrent_single_use_code_admits_one(store: Store) -> None:
    await make_event(store, buckets=["vip", "default"], paused=True)
    _, code = make_code("vip", max_uses=1)
    await store.put_priority_codes("ev1", [code])

    results = await asyncio.gather(
        *(store.join(code_request("ev1", f"d{index}", code)) for index in range(10)),
        return_exceptions=True,
    )

    created = [result for result in results if not isinstance(result, BaseException)]
    assert len(created) == 1
    assert all(isinstance(result, InvalidInput) for result in results if result not in created)


async def test_multi_use_code_and_disable(store: Store) -> None:
    await make_event(store, buckets=["vip", "default"], paused=True)
    _, code = make_code("vip", max_uses=0)
    await store.put_priority_codes("ev1", [code])

    for index in range(3):
        assert (await store.join(code_request("ev1", f"d{index}", code))).created
    disabled = await store.disable_priority_code("ev1", code.code_id)

    assert disabled.disabled
    assert disabled.uses == 3
    with pytest.raises(InvalidInput):
        await store.join(code_request("ev1", "d9", code))
    with pytest.raises(PriorityCodeNotFound):
        await store.disable_priority_code("ev1", "0" * 16)
    listed = await store.list_priority_codes("ev1")
    assert [item.code_id for item in listed] == [code.code_id]


async def test_code_with_wrong_hash_rejected(store: Store) -> None:
    await make_event(store, buckets=["vip", "default"], paused=True)
    _, code = make_code("vip")
    await store.put_priority_codes("ev1", [code])

    forged = replace(code, code_hash="0" * 64)

    with pytest.raises(InvalidInput):
        await store.join(code_request("ev1", "d1", forged))


async def test_priority_codes_unknown_bucket_rejected(store: Store) -> None:
    await make_event(store)
    _, code = make_code("nope")

    with pytest.raises(InvalidInput):
        await store.put_priority_codes("ev1", [code])
    with pytest.raises(EventNotFound):
        await store.put_priority_codes("missing", [code])


# HTTP


def admin(headers: dict[str, str] | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}", **(headers or {})}


def audit_lines(service: Service) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in service.log_lines() if line.startswith("{")]
    return [record for record in records if record["message"].startswith("admin.audit ")]


async def test_patch_event_partial_update(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev", release_rate=5.0)

        response = await client.patch(
            "/admin/events/ev", json={"release_rate": 2.5}, headers=admin()
        )
        unknown = await client.patch("/admin/events/ev", json={"rate": 1}, headers=admin())
        invalid = await client.patch("/admin/events/ev", json={"release_rate": -1}, headers=admin())
        missing = await client.patch(
            "/admin/events/nope", json={"release_rate": 1}, headers=admin()
        )
        stored = (await client.get("/admin/events/ev", headers=admin())).json()

    assert response.status_code == 200
    assert response.json()["release_rate"] == 2.5
    assert response.json()["max_capacity"] == 100
    assert stored["release_rate"] == 2.5
    assert_error(unknown, 400, "invalid_input")
    assert unknown.json()["error"]["message"].startswith("rate:")
    assert_error(invalid, 400, "invalid_input")
    assert invalid.json()["error"]["message"].startswith("release_rate:")
    assert_error(missing, 404, "event_not_found")


async def test_delete_event_http(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev", paused=True)
        queue_id = (await join(client, "ev", "d1")).json()["queue_id"]

        response = await client.delete("/admin/events/ev", headers=admin())
        status = await client.get(f"/v1/queue/{queue_id}")
        again = await client.delete("/admin/events/ev", headers=admin())
        listed = (await client.get("/admin/events", headers=admin())).json()

    assert response.status_code == 200
    assert response.json()["dropped_waiting"] == 1
    assert status.status_code == 404
    assert_error(again, 404, "event_not_found")
    assert listed["events"] == []


async def test_reset_needs_confirmation(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev", paused=True)
        queue_id = (await join(client, "ev", "d1")).json()["queue_id"]

        unconfirmed = await client.post("/admin/events/ev/reset", json={}, headers=admin())
        wrong = await client.post(
            "/admin/events/ev/reset", json={"confirm": "other"}, headers=admin()
        )
        still_there = await client.get(f"/v1/queue/{queue_id}")
        reset = await client.post("/admin/events/ev/reset", json={"confirm": "ev"}, headers=admin())
        old_id = await client.get(f"/v1/queue/{queue_id}")
        rejoined = await join(client, "ev", "d1")

    assert_error(unconfirmed, 400, "invalid_input")
    assert unconfirmed.json()["error"]["message"].startswith("confirm:")
    assert_error(wrong, 400, "invalid_input")
    assert still_there.status_code == 200
    assert reset.status_code == 200
    assert reset.json()["dropped_waiting"] == 1
    assert old_id.status_code in (404, 410)
    assert rejoined.status_code == 201
    assert rejoined.json()["position"] == 1


async def test_stats_and_metrics_summary(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev", release_rate=50)
        queue_ids = [
            (await join(client, "ev", f"d{index}")).json()["queue_id"] for index in range(4)
        ]
        for queue_id in queue_ids:
            await wait_for_status(client, queue_id, "admitted")
        await client.delete(f"/v1/queue/{queue_ids[0]}")
        await put_event(client, "ev", release_rate=50, paused=True)
        await join(client, "ev", "waiting-1")

        stats = (await client.get("/admin/events/ev/stats", headers=admin())).json()
        summary = (await client.get("/admin/metrics", headers=admin())).json()
        missing = await client.get("/admin/events/nope/stats", headers=admin())

    assert stats["waiting"] == 1
    assert stats["waiting_by_bucket"] == {"vip": 0, "default": 1}
    assert stats["admitted_active"] == 3
    assert stats["released_total"] == 4
    assert stats["left_total"] == 1
    assert stats["wait_samples"] == 4
    assert stats["wait_median_s"] is not None
    assert stats["wait_p90_s"] >= stats["wait_median_s"]
    assert [event["event_id"] for event in summary["events"]] == ["ev"]
    assert_error(missing, 404, "event_not_found")


async def test_inspect_entry_http(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev", paused=True)
        queue_id = (await join(client, "ev", "d1", user_id="u1")).json()["queue_id"]

        response = await client.get(f"/admin/queue/{queue_id}", headers=admin())
        malformed = await client.get("/admin/queue/not-a-queue-id", headers=admin())
        unknown = await client.get(f"/admin/queue/{secrets.token_urlsafe(16)}.ev", headers=admin())

    body = response.json()
    assert response.status_code == 200
    assert body["device_id"] == "d1"
    assert body["user_id"] == "u1"
    assert body["position"] == 1
    assert body["status"] == "waiting"
    assert_error(malformed, 400, "invalid_input")
    assert_error(unknown, 404, "queue_entry_not_found")


async def test_priority_codes_http(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev", paused=True)
        await join(client, "ev", "plain")
        created = await client.post(
            "/admin/events/ev/priority-codes",
            json={"bucket": "vip", "max_uses": 1, "count": 2},
            headers=admin(),
        )
        codes = created.json()["codes"]
        first = await join(client, "ev", "d1", priority_code=codes[0]["code"])
        reused = await join(client, "ev", "d2", priority_code=codes[0]["code"])
        bogus = await join(client, "ev", "d3", priority_code="not-a-real-code-123")
        disabled = await client.post(
            f"/admin/events/ev/priority-codes/{codes[1]['code_id']}/disable", headers=admin()
        )
        after_disable = await join(client, "ev", "d4", priority_code=codes[1]["code"])
        listed = (await client.get("/admin/events/ev/priority-codes", headers=admin())).json()
        bad_bucket = await client.post(
            "/admin/events/ev/priority-codes", json={"bucket": "gold"}, headers=admin()
        )
        unknown_field = await client.post(
            "/admin/events/ev/priority-codes", json={"bucket": "vip", "x": 1}, headers=admin()
        )

    assert created.status_code == 201
    assert len(codes) == 2
    assert first.status_code == 201
    assert first.json()["bucket"] == "vip"
    assert first.json()["position"] == 1
    assert_error(reused, 400, "invalid_input")
    assert reused.json()["error"]["message"].startswith("priority_code:")
    assert_error(bogus, 400, "invalid_input")
    assert disabled.json()["disabled"] is True
    assert_error(after_disable, 400, "invalid_input")
    by_id = {code["code_id"]: code for code in listed["codes"]}
    assert by_id[codes[0]["code_id"]]["uses"] == 1
    assert "code" not in by_id[codes[0]["code_id"]]
    assert_error(bad_bucket, 400, "invalid_input")
    assert_error(unknown_field, 400, "invalid_input")
    service.stop()
    text = service.log_path.read_text()
    for code in codes:
        assert code["code"] not in text


async def test_auth_401_403_and_audit_lines(service: Service) -> None:
    async with service.client() as client:
        without = await client.get("/admin/events")
        wrong = await client.get("/admin/events", headers={"Authorization": "Bearer " + "x" * 24})
        basic = await client.get("/admin/events", headers={"Authorization": "Basic abc"})
        await put_event(client, "ev", paused=True)
        await client.patch("/admin/events/ev", json={"release_rate": 3}, headers=admin())
        await client.post("/admin/events/ev/resume", headers=admin())
        await client.post("/admin/events/ev/pause", headers=admin())
        await client.post("/admin/events/ev/reset", json={"confirm": "ev"}, headers=admin())
        await client.post(
            "/admin/events/ev/priority-codes", json={"bucket": "vip"}, headers=admin()
        )
        await client.delete("/admin/events/ev", headers=admin())
    service.stop()

    assert_error(without, 401, "unauthorized")
    assert_error(wrong, 403, "forbidden")
    assert_error(basic, 401, "unauthorized")
    lines = audit_lines(service)
    actions = [line["message"].split()[1] for line in lines]
    assert actions == [
        "action=put_event",
        "action=patch_event",
        "action=resume",
        "action=pause",
        "action=reset_event",
        "action=create_priority_codes",
        "action=delete_event",
    ]
    for line in lines:
        assert "key_id=" in line["message"]
        assert " before=" in line["message"]
        assert " after=" in line["message"]
        assert line["request_id"]
        assert ADMIN_KEY not in line["message"]
    patch_line = lines[1]["message"]
    assert '"release_rate":5.0' in patch_line
    assert '"release_rate":3.0' in patch_line


async def test_auth_timing_parity(redis_url: str) -> None:
    """401 (no key) and 403 (wrong key) take about the same time; generous bounds only."""
    running = start_service(
        redis_url=redis_url,
        extra_env={"GATEKEEP_RATE_LIMITS": "admin.ip=off,admin.key=off"},
    )
    wrong = {"Authorization": "Bearer " + "y" * len(ADMIN_KEY)}
    durations: dict[str, list[float]] = {"missing": [], "wrong": []}
    try:
        async with running.client() as client:
            for _ in range(20):  # warm up connections and code paths
                await client.get("/admin/events")
                await client.get("/admin/events", headers=wrong)
            for _ in range(150):
                for name, headers in (("missing", {}), ("wrong", wrong)):
                    started = time.perf_counter()
                    await client.get("/admin/events", headers=headers)
                    durations[name].append(time.perf_counter() - started)
    finally:
        running.stop()

    missing_median = statistics.median(durations["missing"])
    wrong_median = statistics.median(durations["wrong"])
    assert 0.5 < missing_median / wrong_median < 2.0


async def test_admin_rate_limit(redis_url: str) -> None:
    running = start_service(
        redis_url=redis_url, extra_env={"GATEKEEP_RATE_LIMITS": "admin.key=5/minute"}
    )
    try:
        async with running.client() as client:
            responses = [await client.get("/admin/events", headers=admin()) for _ in range(7)]
    finally:
        running.stop()

    assert [response.status_code for response in responses[:5]] == [200] * 5
    assert_error(responses[5], 429, "rate_limited")
    assert int(responses[5].headers["Retry-After"]) >= 1
    assert responses[0].headers["RateLimit-Limit"] == "5"


async def test_list_events_after_delete_of_other(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "a")
        await put_event(client, "b")
        await client.delete("/admin/events/a", headers=admin())
        listed = (await client.get("/admin/events", headers=admin())).json()

    assert [event["event_id"] for event in listed["events"]] == ["b"]


def test_event_config_rate_limits_validated() -> None:
    config = EventConfig.from_dict({"event_id": "ev", "rate_limits": {"join.ip": "5/second"}})

    assert config.to_dict()["rate_limits"] == {"join.ip": "5/second"}
    with pytest.raises(InvalidInput):
        EventConfig.from_dict({"event_id": "ev", "rate_limits": {"join.planet": "5/second"}})
    with pytest.raises(InvalidInput):
        EventConfig.from_dict({"event_id": "ev", "rate_limits": {"join.ip": "lots"}})


async def http_status(client: httpx.AsyncClient, path: str) -> int:
    return (await client.get(path, headers=admin())).status_code
