"""The release controller through real `gatekeep serve` processes: API, CLI, restarts, SIGKILL."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson

from conftest import ADMIN_KEY, TOKEN_SECRET, Service, start_service
from gatekeep.fairness import check_admission_log
from gatekeep.model import EntryStatus, EventConfig, format_utc_ms
from gatekeep.store.base import Store
from test_release_controller import join_many

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def utc_in(seconds: float) -> str:
    return format_utc_ms(round((time.time() + seconds) * 1000)) or ""


async def put_event(client: httpx.AsyncClient, event_id: str, **fields: Any) -> httpx.Response:
    return await client.put(f"/admin/events/{event_id}", json=fields, headers=ADMIN)


async def wait_until(
    client: httpx.AsyncClient, path: str, key: str, value: object, timeout_s: float = 15
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, Any] = (await client.get(path, headers=ADMIN)).json()
        if body.get(key) == value:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never had {key}={value!r}: {body}")
        await asyncio.sleep(0.05)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatekeep.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


async def test_scheduled_event_api(service: Service, tmp_path: Path) -> None:
    async with service.client() as client:
        created = await put_event(
            client, "drop", opens_at=utc_in(2.5), release_rate=0.001, max_capacity=10
        )
        assert created.status_code == 201, created.text
        assert created.json()["opens_at"].endswith("Z")

        event = (await client.get("/v1/events/drop")).json()
        before = (await client.get("/v1/events/drop/fairness")).json()
        joined = await client.post("/v1/events/drop/join", json={"device_id": "dev1"})

        assert event["state"] == "scheduled"
        assert event["opens_in_s"] > 0
        assert before["seed"] is None
        assert len(before["commitment"]) == 64
        assert joined.status_code == 201
        entry = joined.json()
        assert entry["position"] is None
        assert entry["opens_in_s"] > 0
        assert len(entry["ticket_id"]) == 24
        assert entry["poll_after_ms"] > 0

        await wait_until(client, "/v1/events/drop", "state", "open")
        after = await wait_until(client, "/v1/events/drop/fairness", "state", "open")
        while after["seed"] is None:
            await asyncio.sleep(0.05)
            after = (await client.get("/v1/events/drop/fairness")).json()
        assert [item["ticket_id"] for item in after["tickets"]] == [entry["ticket_id"]]
        status = (await client.get(f"/v1/queue/{entry['queue_id']}")).json()
        assert status["position"] == 1
        assert status["opens_in_s"] is None

    saved = tmp_path / "fairness.json"
    saved.write_bytes(orjson.dumps(after))
    by_url = run_cli(
        "verify-order", "--url", service.base_url, "--event", "drop",
        "--commitment", before["commitment"],
    )  # fmt: skip
    by_file = run_cli("verify-order", "--file", str(saved))
    assert by_url.returncode == 0, by_url.stdout + by_url.stderr
    assert by_url.stdout.startswith("OK")
    assert by_file.returncode == 0, by_file.stdout + by_file.stderr

    wrong = run_cli("verify-order", "--file", str(saved), "--commitment", "0" * 64)
    assert wrong.returncode == 1
    assert "commitment saved before opening" in wrong.stdout

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### Checking a fair opening", 1)[1]
    script = section.split("```python\n", 1)[1].split("```", 1)[0]
    third_party = subprocess.run(
        [sys.executable, "-c", script, service.base_url, "drop"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert third_party.returncode == 0, third_party.stderr
    assert third_party.stdout == "order verified for 1 tickets\n"


async def test_release_stock_log_api(service: Service, tmp_path: Path) -> None:
    async with service.client() as client:
        await put_event(
            client, "sale", release_rate=0.001, max_capacity=10, stock=5,
            session_ttl_s=2, max_session_s=30,
        )  # fmt: skip
        await wait_until(client, "/admin/events/sale/release-state", "phase", "open")
        first = (await client.post("/v1/events/sale/join", json={"device_id": "a"})).json()
        second = (await client.post("/v1/events/sale/join", json={"device_id": "b"})).json()

        released = await client.post("/admin/events/sale/release", json={"count": 1}, headers=ADMIN)
        assert released.status_code == 200, released.text
        assert released.json()["admitted"] == 1

        admitted = (await client.get(f"/v1/queue/{first['queue_id']}")).json()
        assert admitted["status"] == "admitted"
        await asyncio.sleep(1.1)
        renewed = (await client.post(f"/v1/queue/{first['queue_id']}/heartbeat")).json()
        assert renewed["session_expires_at_ms"] > admitted["session_expires_at_ms"]
        old_exp = jwt.decode(admitted["token"], options={"verify_signature": False})["exp"]
        new_claims = jwt.decode(
            renewed["token"], TOKEN_SECRET, algorithms=["HS256"], audience="sale"
        )
        assert new_claims["exp"] > old_exp
        assert new_claims["exp"] * 1000 <= renewed["session_expires_at_ms"]

        stock = await client.post("/admin/events/sale/stock", json={"decrement": 5}, headers=ADMIN)
        assert stock.json() == {"event_id": "sale", "stock_remaining": 0, "sold_out": True}
        late = await client.post("/v1/events/sale/join", json={"device_id": "c"})
        assert late.status_code == 409
        assert late.json()["error"]["code"] == "sold_out"
        ended = (await client.get(f"/v1/queue/{second['queue_id']}")).json()
        assert ended["status"] == "sold_out"
        event = (await client.get("/v1/events/sale")).json()
        assert event["state"] == "sold_out"
        assert event["stock_remaining"] == 0

        log = await client.get("/admin/events/sale/admission-log", headers=ADMIN)
        assert log.status_code == 200
        lines = log.text.splitlines()
        assert len(lines) == 1
        assert orjson.loads(lines[0])["tickets"] == [first["ticket_id"]]

    exported = tmp_path / "log.jsonl"
    env = {**service.env, "GATEKEEP_ADMIN_KEY": ADMIN_KEY}
    export = run_cli(
        "export-log", "--url", service.base_url, "--event", "sale", "--output", str(exported),
        env=env,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    checked = run_cli("check-log", str(exported))
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.startswith("OK: 1 records, 1 admissions")

    record = orjson.loads(exported.read_text())
    record["at_ms"] += 1
    exported.write_bytes(orjson.dumps(record) + b"\n")
    tampered = run_cli("check-log", str(exported))
    assert tampered.returncode == 1
    assert "record 1 (line 1) was changed" in tampered.stdout


async def test_controller_input_errors(service: Service) -> None:
    async with service.client() as client:
        bad_mode = await put_event(client, "ev", mode="lottery")
        bad_time = await put_event(client, "ev", opens_at="2026-05-01T18:00:00")
        assert bad_mode.status_code == 400
        assert bad_mode.json()["error"]["message"].startswith("mode:")
        assert bad_time.json()["error"]["message"].startswith("opens_at:")
        assert (await client.get("/admin/events/ev", headers=ADMIN)).status_code == 404

        await put_event(client, "ev", mode="reject")
        rejected = await client.post("/v1/events/ev/join", json={"device_id": "a"})
        zero = await client.post("/admin/events/ev/release", json={"count": 0}, headers=ADMIN)
        no_stock = await client.post("/admin/events/ev/stock", json={"decrement": 1}, headers=ADMIN)
        both = await client.post(
            "/admin/events/ev/stock", json={"decrement": 1, "remaining": 2}, headers=ADMIN
        )
        unauthorized = await client.post("/admin/events/ev/release", json={"count": 1})

        assert rejected.status_code == 409
        assert rejected.json()["error"]["code"] == "joins_rejected"
        assert zero.status_code == 400
        assert zero.json()["error"]["message"].startswith("count:")
        assert no_stock.status_code == 409
        assert no_stock.json()["error"]["code"] == "no_stock"
        assert both.status_code == 400
        assert unauthorized.status_code == 401

        await put_event(client, "late", closes_at=utc_in(0.5))
        await asyncio.sleep(0.7)
        closed = await client.post("/v1/events/late/join", json={"device_id": "a"})
        assert closed.status_code == 409
        assert closed.json()["error"]["code"] == "event_closed"
        assert (await client.get("/v1/events/late")).json()["state"] == "closed"


async def test_restart_keeps_controller_state(redis_url: str) -> None:
    service = start_service(redis_url=redis_url)
    try:
        async with service.client() as client:
            await put_event(client, "keep", release_rate=0.001, max_capacity=10, stock=10)
            await wait_until(client, "/admin/events/keep/release-state", "phase", "open")
            ids = []
            for device in ("a", "b", "c"):
                body = await client.post("/v1/events/keep/join", json={"device_id": device})
                ids.append(body.json()["queue_id"])
            await client.post("/admin/events/keep/release", json={"count": 1}, headers=ADMIN)
            await client.post("/admin/events/keep/stock", json={"decrement": 2}, headers=ADMIN)
            await client.post("/admin/events/keep/pause", headers=ADMIN)
            before = (await client.get("/admin/events/keep/release-state", headers=ADMIN)).json()
    finally:
        service.stop()

    restarted = start_service(redis_url=redis_url)
    try:
        async with restarted.client() as client:
            after = (await client.get("/admin/events/keep/release-state", headers=ADMIN)).json()
            statuses = [(await client.get(f"/v1/queue/{q}")).json() for q in ids]
    finally:
        restarted.stop()

    assert after == before
    assert after["stock_remaining"] == 8
    assert after["admission_log_length"] == 1
    assert after["paused"] is True
    assert [s["status"] for s in statuses] == ["admitted", "waiting", "waiting"]
    assert [s["position"] for s in statuses] == [None, 1, 2]


async def test_sigkill_loop_no_duplicate_no_loss(redis_url: str) -> None:
    from conftest import make_redis_store

    store: Store = await make_redis_store(redis_url)
    now_ms = await store.now_ms()
    config = EventConfig.from_dict(
        {
            "event_id": "kill",
            "opens_at": format_utc_ms(now_ms + 6000),
            "release_rate": 1500.0,
            "max_capacity": 100_000,
            "max_queue_size": 100_000,
            "heartbeat_timeout_s": 600,
        }
    )
    await store.put_event(config)
    joined = await join_many(store, "kill", 3000, at_once=50)
    assert await store.now_ms() < now_ms + 6000, "joins took longer than the lead"
    rng = random.Random(7)

    kills = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        service = start_service(redis_url=redis_url, extra_env={"GATEKEEP_LOG_LEVEL": "INFO"})
        if (await store.event_snapshot("kill")).waiting_count == 0 and kills >= 6:
            service.stop()
            break
        await asyncio.sleep(rng.uniform(0.1, 0.6))
        service.process.kill()  # SIGKILL: no shutdown code runs
        service.process.wait(timeout=10)
        kills += 1
    else:
        raise AssertionError("the queue did not drain within 90 s")

    state = await store.release_state("kill", with_publication=True)
    lines = await store.admission_log("kill", 0, 100_000)
    records = [orjson.loads(line) for line in lines]
    logged = [ticket for record in records for ticket in record["tickets"]]
    statuses = [(await store.touch("kill", queue_id)).entry.status for queue_id, _ in joined]
    snapshot = await store.event_snapshot("kill")
    await store.close()

    assert kills >= 6
    assert statuses == [EntryStatus.ADMITTED] * 3000
    assert len(logged) == 3000
    assert set(logged) == {ticket for _, ticket in joined}
    assert check_admission_log(records) == []
    assert snapshot.admitted_total == 3000
    assert state.publication is not None
    assert logged == [item["ticket_id"] for item in state.publication["tickets"]]
