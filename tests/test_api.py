"""The HTTP API of a real `gatekeep serve` process, on the embedded store and on Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
import pytest

from conftest import ADMIN_KEY, GRANT_SECRET, TOKEN_SECRET, Service

EVENT = {
    "release_rate": 5.0,
    "max_capacity": 100,
    "max_queue_size": 1000,
    "session_ttl_s": 60,
    "heartbeat_timeout_s": 30,
    "buckets": ["vip", "default"],
}


async def put_event(client: httpx.AsyncClient, event_id: str, **fields: Any) -> httpx.Response:
    body = {**EVENT, **fields}
    return await client.put(
        f"/admin/events/{event_id}", json=body, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )


async def join(
    client: httpx.AsyncClient, event_id: str, device_id: str, **fields: Any
) -> httpx.Response:
    return await client.post(f"/v1/events/{event_id}/join", json={"device_id": device_id, **fields})


async def wait_for_status(
    client: httpx.AsyncClient, queue_id: str, status: str, timeout_s: float = 10
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get(f"/v1/queue/{queue_id}")
        body: dict[str, Any] = response.json()
        if response.status_code == 200 and body["status"] == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"entry never reached {status}: {response.status_code} {body}")
        await asyncio.sleep(0.05)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


async def test_join_returns_entry_fields(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev", paused=True)

        response = await join(client, "ev", "device-1", user_id="user-1")

    assert response.status_code == 201
    body = response.json()
    assert set(body) >= {
        "queue_id",
        "event_id",
        "status",
        "position",
        "eta_s",
        "poll_after_ms",
        "token",
    }
    assert body["event_id"] == "ev"
    assert body["status"] == "waiting"
    assert body["position"] == 1
    assert body["token"] is None
    assert body["eta_s"] is None  # paused: no honest estimate
    assert 100 <= body["poll_after_ms"] <= 30_000
    assert len(body["queue_id"].split(".")[0]) == 22


async def test_join_again_same_device_200(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev", paused=True)
        first = await join(client, "ev", "device-1")

        second = await join(client, "ev", "device-1")

    assert second.status_code == 200
    assert second.json()["queue_id"] == first.json()["queue_id"]


async def test_join_concurrent_one_device_over_http(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev", paused=True)

        responses = await asyncio.gather(*(join(client, "ev", "same-device") for _ in range(200)))
        state = (await client.get("/v1/events/ev")).json()

    assert sorted({response.status_code for response in responses}) == [200, 201]
    assert sum(response.status_code == 201 for response in responses) == 1
    assert len({response.json()["queue_id"] for response in responses}) == 1
    assert state["waiting"] == 1


async def test_join_full_queue_429_with_retry_after(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev", paused=True, max_queue_size=100)

        responses = await asyncio.gather(*(join(client, "ev", f"d{index}") for index in range(500)))
        state = (await client.get("/v1/events/ev")).json()

    created = [response for response in responses if response.status_code == 201]
    full = [response for response in responses if response.status_code == 429]
    assert len(created) == 100
    assert len(full) == 400
    assert all(int(response.headers["retry-after"]) >= 1 for response in full)
    assert all(response.json()["error"]["code"] == "queue_full" for response in full)
    assert state["waiting"] == 100


async def test_positions_gap_free_never_rising(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev", paused=True)
        queue_ids = [
            (await join(client, "ev", f"d{index}")).json()["queue_id"] for index in range(8)
        ]
        await client.delete(f"/v1/queue/{queue_ids[2]}")
        await client.delete(f"/v1/queue/{queue_ids[5]}")

        remaining = [queue_id for index, queue_id in enumerate(queue_ids) if index not in (2, 5)]
        positions = [
            (await client.get(f"/v1/queue/{queue_id}")).json()["position"] for queue_id in remaining
        ]

    assert positions == [1, 2, 3, 4, 5, 6]


async def test_admission_issues_verifiable_token(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev", release_rate=50)
        queue_id = (await join(client, "ev", "device-1", user_id="user-1")).json()["queue_id"]

        body = await wait_for_status(client, queue_id, "admitted")

    assert body["position"] is None
    claims = jwt.decode(body["token"], TOKEN_SECRET, algorithms=["HS256"], audience="ev")
    assert claims["event_id"] == "ev"
    assert claims["device_id"] == "device-1"
    assert claims["user_id"] == "user-1"
    assert claims["exp"] > claims["iat"]
    assert claims["jti"]
    assert claims["nonce"]


async def test_leave_admitted_frees_capacity(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev", release_rate=50, max_capacity=1)
        first = (await join(client, "ev", "d1")).json()["queue_id"]
        second = (await join(client, "ev", "d2")).json()["queue_id"]
        await wait_for_status(client, first, "admitted")
        assert (await client.get(f"/v1/queue/{second}")).json()["status"] == "waiting"

        left = await client.delete(f"/v1/queue/{first}")
        await wait_for_status(client, second, "admitted")

    assert left.status_code == 200
    assert left.json()["status"] == "left"


async def test_heartbeat_keeps_entry_and_returns_it(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev", paused=True)
        queue_id = (await join(client, "ev", "d1")).json()["queue_id"]

        response = await client.post(f"/v1/queue/{queue_id}/heartbeat")

    assert response.status_code == 200
    assert response.json()["queue_id"] == queue_id
    assert response.json()["position"] == 1


async def test_expired_entry_answers_410(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev", paused=True, heartbeat_timeout_s=1)
        queue_id = (await join(client, "ev", "d1")).json()["queue_id"]
        await asyncio.sleep(1.6)

        status = await client.get(f"/v1/queue/{queue_id}")
        beat = await client.post(f"/v1/queue/{queue_id}/heartbeat")

    assert_error(status, 410, "queue_entry_expired")
    assert_error(beat, 410, "queue_entry_expired")


async def test_heartbeat_after_leave_410(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev", paused=True)
        queue_id = (await join(client, "ev", "d1")).json()["queue_id"]
        await client.delete(f"/v1/queue/{queue_id}")

        response = await client.post(f"/v1/queue/{queue_id}/heartbeat")

    assert_error(response, 410, "queue_entry_left")


async def test_event_public_state(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev", paused=True)
        await join(client, "ev", "d1")

        paused = (await client.get("/v1/events/ev")).json()
        await client.post("/admin/events/ev/resume", headers=service.admin_headers())
        resumed = (await client.get("/v1/events/ev")).json()
        await put_event(client, "ev", enabled=False)
        closed = (await client.get("/v1/events/ev")).json()

    assert paused["state"] == "paused"
    assert paused["waiting"] == 1
    assert paused["release_rate"] == 5.0
    assert resumed["state"] == "open"
    assert closed["state"] == "closed"


async def test_disabled_event_join_409(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev", enabled=False)

        response = await join(client, "ev", "d1")

    assert_error(response, 409, "event_disabled")


async def test_unknown_ids_404(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev")

        event = await join(client, "nope", "d1")
        public = await client.get("/v1/events/nope")
        entry = await client.get("/v1/queue/AAAAAAAAAAAAAAAAAAAAAA.ev")
        route = await client.get("/v2/nothing")

    assert_error(event, 404, "event_not_found")
    assert_error(public, 404, "event_not_found")
    assert_error(entry, 404, "queue_entry_not_found")
    assert_error(route, 404, "not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"[]", "body"),
        (b'{"device_id": 5}', "device_id"),
        (b'{"device_id": "ok", "user_id": 7}', "user_id"),
        (b'{"device_id": "ok", "bucket": "vip"}', "bucket"),
        (b'{"device_id": "has space"}', "device_id"),
        (b'{"device_id": "' + b"x" * 129 + b'"}', "device_id"),
        (b'{"user_id": "u"}', "device_id"),
        (b"", "body"),
    ],
)
async def test_join_bad_input_400_stores_nothing(service: Service, body: bytes, field: str) -> None:
    async with service.client() as client:
        await put_event(client, "ev", paused=True)

        response = await client.post(
            "/v1/events/ev/join", content=body, headers={"content-type": "application/json"}
        )
        state = (await client.get("/v1/events/ev")).json()

    error = assert_error(response, 400, "invalid_input")
    assert error["message"].startswith(f"{field}:")
    assert state["waiting"] == 0


async def test_join_oversized_body_400_stores_nothing(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev", paused=True)

        response = await client.post(
            "/v1/events/ev/join", json={"device_id": "d1", "user_id": "u" * 20_000}
        )
        state = (await client.get("/v1/events/ev")).json()

    assert_error(response, 400, "body_too_large")
    assert state["waiting"] == 0


async def test_bad_ids_in_path_400(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev")

        event = await client.post("/v1/events/bad%20id/join", json={"device_id": "d1"})
        queue = await client.get("/v1/queue/not-a-queue-id")
        heartbeat_body = await client.post("/v1/queue/not-a-queue-id/heartbeat", json={"x": 1})

    assert_error(event, 400, "invalid_input")
    assert_error(queue, 400, "invalid_input")
    assert_error(heartbeat_body, 400, "invalid_input")


async def test_wrong_method_405_names_allowed_methods(service: Service) -> None:
    async with service.client() as client:
        await put_event(client, "ev")
        queue_id = (await client.post("/v1/events/ev/join", json={"device_id": "d1"})).json()[
            "queue_id"
        ]
        wrong = await client.put(f"/v1/queue/{queue_id}")
        null_body = await client.post(f"/v1/queue/{queue_id}/heartbeat", content=b"null")

    assert_error(wrong, 405, "method_not_allowed")
    assert {"GET", "DELETE"} <= {method.strip() for method in wrong.headers["allow"].split(",")}
    assert "got a JSON null" in assert_error(null_body, 400, "invalid_input")["message"]


async def test_priority_grant_puts_join_ahead(service: Service) -> None:
    grant = jwt.encode(
        {"event_id": "ev", "bucket": "vip", "exp": int(time.time()) + 60},
        GRANT_SECRET,
        algorithm="HS256",
    )
    async with service.client() as client:
        await put_event(client, "ev", paused=True)
        await join(client, "ev", "d1")
        await join(client, "ev", "d2")

        vip = await join(client, "ev", "d3", priority_grant=grant)

    assert vip.status_code == 201
    assert vip.json()["position"] == 1
    assert vip.json()["bucket"] == "vip"


async def test_priority_grant_forged_400(service: Service) -> None:
    forged = jwt.encode(
        {"event_id": "ev", "bucket": "vip", "exp": int(time.time()) + 60},
        "not-the-grant-secret-but-long-enough-123456",
        algorithm="HS256",
    )
    async with service.client() as client:
        await put_event(client, "ev", paused=True)

        response = await join(client, "ev", "d1", priority_grant=forged)
        state = (await client.get("/v1/events/ev")).json()

    error = assert_error(response, 400, "invalid_input")
    assert error["message"].startswith("priority_grant:")
    assert state["waiting"] == 0


async def test_admin_requires_key(service: Service) -> None:
    async with service.client() as client:
        missing = await client.get("/admin/events/ev")
        wrong = await client.get(
            "/admin/events/ev", headers={"Authorization": "Bearer wrong-key-000000000"}
        )

    assert_error(missing, 401, "unauthorized")
    assert_error(wrong, 403, "forbidden")


async def test_admin_put_validates_and_stores_nothing(service: Service) -> None:
    async with service.client() as client:
        bad_rate = await put_event(client, "ev", release_rate="fast")
        unknown = await put_event(client, "ev", colour="red")
        fetched = await client.get("/admin/events/ev", headers=service.admin_headers())

    assert assert_error(bad_rate, 400, "invalid_input")["message"].startswith("release_rate:")
    assert assert_error(unknown, 400, "invalid_input")["message"].startswith("colour:")
    assert_error(fetched, 404, "event_not_found")


async def test_admin_put_get_pause_resume(service: Service) -> None:
    async with service.client() as client:
        created = await put_event(client, "ev", release_rate=0.5)
        replaced = await put_event(client, "ev", release_rate=1.5)
        paused = await client.post("/admin/events/ev/pause", headers=service.admin_headers())
        fetched = await client.get("/admin/events/ev", headers=service.admin_headers())
        resumed = await client.post("/admin/events/ev/resume", headers=service.admin_headers())

    assert created.status_code == 201
    assert created.json()["release_rate"] == 0.5
    assert replaced.status_code == 200
    assert replaced.json()["release_rate"] == 1.5
    assert paused.json()["paused"] is True
    assert fetched.json()["paused"] is True
    assert resumed.json()["paused"] is False


async def test_health_and_ready(service: Service) -> None:
    async with service.client() as client:
        health = await client.get("/health")
        ready = await client.get("/ready")

    assert health.status_code == 200
    assert ready.status_code == 200


async def test_request_id_echoed_when_sane(service: Service) -> None:
    async with service.client() as client:
        sane = await client.get("/health", headers={"X-Request-ID": "abc-123"})
        insane = await client.get("/health", headers={"X-Request-ID": "bad id with spaces"})

    assert sane.headers["x-request-id"] == "abc-123"
    assert insane.headers["x-request-id"] != "bad id with spaces"
    assert len(insane.headers["x-request-id"]) == 32
