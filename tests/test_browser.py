"""The hosted waiting-room page and the browser SDK in real headless Chromium.

Needs Debian's `chromium` (the README's test command installs it) and the `playwright` package,
which drives the system browser: no browser is downloaded. Each state's screenshot is written
to docs/screenshots/.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from conftest import ADMIN_KEY, RedisServer, Service, free_port, start_service

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
PHONE = {"width": 390, "height": 720}
FAST_STREAMS = {"GATEKEEP_STREAM_TICK_MS": "200", "GATEKEEP_STORE_TIMEOUT_S": "0.5"}


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed; install it (Debian: apt-get install chromium) or run "
            "the README's test command, which installs it"
        )
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


class OriginHandler(BaseHTTPRequestHandler):
    """The protected origin: it shows the token it was sent, as a real site would verify it."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>Shop</title><h1>Welcome to the shop</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), OriginHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def page_service() -> Iterator[Service]:
    running = start_service(extra_env=FAST_STREAMS)
    yield running
    running.stop()


def admin_call(service: Service, method: str, path: str, body: Any = None) -> httpx.Response:
    response = httpx.request(
        method,
        service.base_url + path,
        json=body,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
    )
    assert response.status_code in (200, 201), response.text
    return response


def create_event(service: Service, event_id: str, **fields: Any) -> None:
    body = {
        "release_rate": 1.0,
        "max_capacity": 100,
        "session_ttl_s": 600,
        "heartbeat_timeout_s": 30,
        "paused": True,
        **fields,
    }
    admin_call(service, "PUT", f"/admin/events/{event_id}", body)


def join_others(service: Service, event_id: str, count: int, prefix: str = "other") -> list[str]:
    queue_ids = []
    for index in range(count):
        response = httpx.post(
            f"{service.base_url}/v1/events/{event_id}/join",
            json={"device_id": f"{prefix}-{index}"},
            timeout=10,
        )
        queue_ids.append(response.json()["queue_id"])
    return queue_ids


async def new_page(browser: Browser, locale: str = "en-US") -> tuple[BrowserContext, Page]:
    context = await browser.new_context(viewport=PHONE, locale=locale)
    page = await context.new_page()
    return context, page


async def wait_for_state(page: Page, state: str, timeout_s: float = 20) -> None:
    await page.wait_for_selector(f'main[data-state="{state}"]', timeout=timeout_s * 1000)


async def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


async def saved_place(page: Page, event_id: str) -> dict[str, Any]:
    raw = await page.evaluate(f"localStorage.getItem('gatekeep:place:{event_id}')")
    assert raw, "the page saved no place"
    place: dict[str, Any] = orjson.loads(raw)
    return place


async def test_page_joins_and_shows_position(browser: Browser, page_service: Service) -> None:
    create_event(page_service, "launch")
    join_others(page_service, "launch", 4)
    context, page = await new_page(browser)

    await page.goto(f"{page_service.base_url}/wait/launch")
    await wait_for_state(page, "waiting")
    await page.wait_for_function("() => document.getElementById('position').textContent === '5'")
    await page.wait_for_selector("#event-state:not([hidden])")
    await screenshot(page, "waiting-paused")

    assert await page.inner_text("#position") == "5"
    assert "paused" in (await page.inner_text("#event-state")).lower()
    assert await page.get_attribute("#live", "aria-live") == "polite"
    assert (await page.inner_text("#live")).strip()
    await context.close()


async def test_page_waits_through_releases_then_redirects(
    browser: Browser, page_service: Service, origin: str
) -> None:
    create_event(page_service, "launch", release_rate=1.0, return_url=f"{origin}/checkout")
    join_others(page_service, "launch", 3)
    context, page = await new_page(browser)
    await page.goto(f"{page_service.base_url}/wait/launch")
    await wait_for_state(page, "waiting")

    admin_call(page_service, "POST", "/admin/events/launch/resume")
    await page.wait_for_function(
        "() => Number(document.getElementById('position').textContent) <= 2", timeout=15000
    )
    await screenshot(page, "waiting-moving")
    width = await page.evaluate("document.getElementById('progress-fill').style.width")
    assert width != "0%"

    await wait_for_state(page, "admitted")
    await screenshot(page, "admitted")
    await page.wait_for_url(f"{origin}/checkout?gatekeep_token=*", timeout=10000)
    await screenshot(page, "redirected-origin")

    token = page.url.split("gatekeep_token=", 1)[1]
    assert token.count(".") == 2
    await context.close()


async def test_page_reload_keeps_place(browser: Browser, page_service: Service) -> None:
    create_event(page_service, "launch")
    join_others(page_service, "launch", 2)
    context, page = await new_page(browser)
    await page.goto(f"{page_service.base_url}/wait/launch")
    await wait_for_state(page, "waiting")
    before = await saved_place(page, "launch")
    join_others(page_service, "launch", 1, prefix="later")  # our place must not change

    await page.reload()
    await wait_for_state(page, "waiting")
    await page.wait_for_function("() => document.getElementById('position').textContent === '3'")
    await screenshot(page, "reloaded")

    after = await saved_place(page, "launch")
    assert after["queue_id"] == before["queue_id"]
    event = httpx.get(f"{page_service.base_url}/v1/events/launch", timeout=10).json()
    assert event["waiting"] == 4
    await context.close()


async def test_page_heartbeat_loss_expires(browser: Browser, page_service: Service) -> None:
    create_event(page_service, "launch", heartbeat_timeout_s=2)
    context, page = await new_page(browser)
    await page.goto(f"{page_service.base_url}/wait/launch")
    await wait_for_state(page, "waiting")

    # The tab goes away (a phone put to sleep), so nothing keeps the entry alive.
    await page.close()
    await asyncio.sleep(3.5)
    page = await context.new_page()
    await page.goto(f"{page_service.base_url}/wait/launch")
    await wait_for_state(page, "expired")
    await screenshot(page, "expired")

    assert "expired" in (await page.inner_text("#headline")).lower()
    assert await page.is_visible("#redirect-link")
    place = await page.evaluate("localStorage.getItem('gatekeep:place:launch')")
    assert place is None
    await context.close()


def pause_redis(server: RedisServer, duration_ms: int) -> None:
    """Make Redis hold every client's commands for a while, so store calls time out."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as connection:
        connection.sendall(f"CLIENT PAUSE {duration_ms} ALL\r\n".encode())
        assert connection.recv(16).startswith(b"+OK")


def start_on_port(redis_url: str, port: int) -> Service:
    started = start_service(
        redis_url=redis_url,
        extra_env={**FAST_STREAMS, "GATEKEEP_PORT": str(port)},
        wait_ready=False,
    )
    service = Service(f"http://127.0.0.1:{port}", started.process, started.log_path, started.env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(service.base_url + "/health", timeout=1).status_code == 200:
                return service
        except httpx.TransportError:
            time.sleep(0.05)
    service.stop()
    raise AssertionError(f"the restarted service did not answer on port {port} within 20 s")


async def test_page_survives_outage_and_restart(browser: Browser, own_redis: RedisServer) -> None:
    port = free_port()
    service = start_on_port(own_redis.url, port)
    try:
        create_event(service, "launch")
        join_others(service, "launch", 1)
        context, page = await new_page(browser)
        await page.goto(f"{service.base_url}/wait/launch")
        await wait_for_state(page, "waiting")
        queue_id = (await saved_place(page, "launch"))["queue_id"]

        # The store stalls, so the service returns 503 with Retry-After and the page retries.
        pause_redis(own_redis, 6000)
        await page.wait_for_selector("#problem:not([hidden])", timeout=15000)
        await screenshot(page, "store-unavailable")
        assert await page.get_attribute("main", "data-state") == "waiting"
        await page.wait_for_selector("#problem", state="hidden", timeout=30000)

        # The service process goes away and comes back on the same address.
        service.stop()
        await page.wait_for_selector('main[data-connection="retrying"]', timeout=15000)
        await screenshot(page, "service-down")
        service = start_on_port(own_redis.url, port)
        await page.wait_for_selector(
            'main[data-state="waiting"]:not([data-connection="retrying"])', timeout=40000
        )
        await page.wait_for_function(
            "() => document.getElementById('position').textContent === '2'"
        )
        await screenshot(page, "recovered")

        assert (await saved_place(page, "launch"))["queue_id"] == queue_id
        await context.close()
    finally:
        service.stop()


async def test_page_sold_out(browser: Browser, page_service: Service) -> None:
    create_event(page_service, "launch", stock=10)
    join_others(page_service, "launch", 1)
    context, page = await new_page(browser)
    await page.goto(f"{page_service.base_url}/wait/launch")
    await wait_for_state(page, "waiting")

    # The origin reports the last item sold; the release step ends every waiting entry.
    admin_call(page_service, "POST", "/admin/events/launch/stock", {"remaining": 0})
    await wait_for_state(page, "closed", timeout_s=20)
    await screenshot(page, "sold-out")

    assert "sold out" in (await page.inner_text("#headline")).lower()
    await context.close()


async def test_page_counts_down_before_opening(browser: Browser, page_service: Service) -> None:
    opens_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    create_event(page_service, "launch", paused=False, opens_at=opens_at)
    context, page = await new_page(browser)

    await page.goto(f"{page_service.base_url}/wait/launch")
    await wait_for_state(page, "waiting")
    await page.wait_for_selector("#event-state:not([hidden])")
    await screenshot(page, "countdown")

    countdown = await page.inner_text("#event-state")
    assert "opens in 59:" in countdown or "opens in 1:00:" in countdown
    await context.close()


async def test_page_closed_event(browser: Browser, page_service: Service) -> None:
    create_event(page_service, "launch", enabled=False)
    context, page = await new_page(browser)

    await page.goto(f"{page_service.base_url}/wait/launch")
    await wait_for_state(page, "closed")
    await screenshot(page, "closed")

    assert "closed" in (await page.inner_text("#headline")).lower()
    assert (await page.inner_text("#problem")).strip()
    await context.close()


async def test_page_speaks_german(browser: Browser, page_service: Service) -> None:
    create_event(page_service, "launch")
    context, page = await new_page(browser, locale="de-DE")

    await page.goto(f"{page_service.base_url}/wait/launch")
    await wait_for_state(page, "waiting")
    await screenshot(page, "waiting-de")

    assert await page.get_attribute("html", "lang") == "de"
    assert await page.inner_text("#headline") == "Sie sind in der Warteschlange"
    await context.close()


async def test_page_unknown_event_answers_404(browser: Browser, page_service: Service) -> None:
    context, page = await new_page(browser)

    response = await page.goto(f"{page_service.base_url}/wait/nothing-here")
    await screenshot(page, "unknown-event")

    assert response is not None
    assert response.status == 404
    assert "does not exist" in await page.inner_text("main")
    await context.close()


# The page's HTTP side, without a browser


def page_config(service: Service, path: str) -> dict[str, Any]:
    html = httpx.get(service.base_url + path, timeout=10).text
    start = html.index('id="gatekeep-config">') + len('id="gatekeep-config">')
    config: dict[str, Any] = orjson.loads(html[start : html.index("</script>", start)])
    return config


def test_page_ignores_foreign_return_url(page_service: Service, origin: str) -> None:
    create_event(page_service, "launch", return_url=f"{origin}/checkout")

    foreign = page_config(page_service, "/wait/launch?return_url=https://evil.example/steal")
    scheme_relative = page_config(page_service, "/wait/launch?return_url=//evil.example/x")
    same_origin = page_config(page_service, f"/wait/launch?return_url={origin}/cart")

    assert foreign["return_url"] == f"{origin}/checkout"
    assert scheme_relative["return_url"] == f"{origin}/checkout"
    assert same_origin["return_url"] == f"{origin}/cart"


def test_event_rejects_invalid_return_url(page_service: Service) -> None:
    response = httpx.put(
        f"{page_service.base_url}/admin/events/launch",
        json={"return_url": "javascript:alert(1)"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
    )

    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("return_url")


def test_page_sends_security_headers(page_service: Service) -> None:
    create_event(page_service, "launch")

    response = httpx.get(f"{page_service.base_url}/wait/launch", timeout=10)

    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_sdk_served_as_module(page_service: Service) -> None:
    response = httpx.get(f"{page_service.base_url}/sdk/gatekeep.js", timeout=10)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "export class GatekeepClient" in response.text


def test_operator_template_overrides_strings(tmp_path: Path) -> None:
    (tmp_path / "strings.en.json").write_text('{"title": "Acme queue"}')
    (tmp_path / "strings.fr.json").write_text('{"title": "File d\'attente Acme"}')
    service = start_service(extra_env={"GATEKEEP_PAGE_TEMPLATE_DIR": str(tmp_path)})
    try:
        create_event(service, "launch")
        english = httpx.get(f"{service.base_url}/wait/launch", timeout=10).text
        french = httpx.get(
            f"{service.base_url}/wait/launch", headers={"Accept-Language": "fr"}, timeout=10
        ).text
    finally:
        service.stop()

    assert "<title>Acme queue</title>" in english
    assert "<title>File d&#x27;attente Acme</title>" in french
    assert 'lang="fr"' in french


def test_invalid_operator_strings_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "strings.en.json").write_text("{not json")
    service = start_service(extra_env={"GATEKEEP_PAGE_TEMPLATE_DIR": str(tmp_path)})
    try:
        create_event(service, "launch")
        response = httpx.get(f"{service.base_url}/wait/launch", timeout=10)
    finally:
        service.stop()

    assert response.status_code == 200
    assert "<title>Waiting room</title>" in response.text
    assert any("page.strings_invalid" in line for line in service.log_lines())
