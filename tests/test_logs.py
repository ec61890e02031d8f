"""Logs are JSON lines with request ids, and never contain secrets, tokens or full queue ids."""

from __future__ import annotations

import json
import time

import jwt

from conftest import ADMIN_KEY, GRANT_SECRET, TOKEN_SECRET, Service, all_service_logs
from test_api import join, put_event, wait_for_status


async def scripted_run(service: Service) -> tuple[list[str], list[str]]:
    """Join, get admitted, poll, leave; return the queue ids and tokens the service handed out."""
    grant = jwt.encode(
        {"event_id": "ev", "bucket": "vip", "exp": int(time.time()) + 60},
        GRANT_SECRET,
        algorithm="HS256",
    )
    queue_ids, tokens = [], []
    async with service.client() as client:
        await put_event(client, "ev", release_rate=100)
        for index in range(5):
            fields = {"priority_grant": grant} if index == 0 else {}
            body = (await join(client, "ev", f"d{index}", **fields)).json()
            queue_ids.append(body["queue_id"])
        for queue_id in queue_ids:
            admitted = await wait_for_status(client, queue_id, "admitted")
            tokens.append(admitted["token"])
            await client.post(f"/v1/queue/{queue_id}/heartbeat")
            await client.delete(f"/v1/queue/{queue_id}")
        await client.get("/v1/queue/" + queue_ids[0], headers={"X-Request-ID": "trace-me-1"})
    return queue_ids, tokens


async def test_log_lines_are_json_with_request_id(service: Service) -> None:
    queue_ids, _ = await scripted_run(service)
    service.stop()

    records = [json.loads(line) for line in service.log_lines() if line.strip()]

    access = [record for record in records if record["message"].startswith("http.request ")]
    assert access, "no access lines were logged"
    assert all(record["request_id"] for record in access)
    assert any(record["request_id"] == "trace-me-1" for record in access)
    routes = {record["message"].split("route=")[1].split()[0] for record in access}
    assert {"/v1/queue/{queue_id}", "/v1/queue/{queue_id}/heartbeat"} <= routes
    assert not any(queue_id in route for route in routes for queue_id in queue_ids)


async def test_logs_hold_no_secret_token_or_queue_id(service: Service) -> None:
    queue_ids, tokens = await scripted_run(service)
    service.stop()

    text = service.log_path.read_text()
    for secret in (TOKEN_SECRET, ADMIN_KEY, GRANT_SECRET):
        assert secret not in text
    for token in tokens:
        assert token not in text
        assert token.split(".")[2] not in text
    for queue_id in queue_ids:
        assert queue_id.split(".")[0] not in text


def test_session_logs_hold_no_secret() -> None:
    """Scans every service log written so far in this test session (at least this file's)."""
    paths = all_service_logs()

    assert paths
    for path in paths:
        text = path.read_text()
        for secret in (TOKEN_SECRET, ADMIN_KEY, GRANT_SECRET):
            assert secret not in text, f"{secret[:6]}… found in {path.name}"
