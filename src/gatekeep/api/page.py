"""The hosted waiting-room page at /wait/{event_id}, the browser SDK and the page's assets.

The page is one HTML template with `{{name}}` placeholders, a stylesheet and a strings file per
language. `GATEKEEP_PAGE_TEMPLATE_DIR` may hold `wait.html`, `wait.css` and
`strings.<lang>.json` files that replace the packaged ones (a strings file may set only some
keys, and may add a language). The language comes from `Accept-Language`.
"""

from __future__ import annotations

import functools
import html
import logging
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from gatekeep.api.state import services
from gatekeep.errors import InvalidInput
from gatekeep.model import EventConfig, check_id

logger = logging.getLogger(__name__)

DEFAULT_LANGUAGE = "en"

# The page loads only its own scripts and styles, talks only to this service, and may not be
# framed (a framed waiting room can be dressed up as another site).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
ASSET_CACHE_CONTROL = "public, max-age=300"

# Files served under /sdk and /static, with their media types. Anything else is a 404.
ASSETS = {
    "gatekeep.js": "text/javascript; charset=utf-8",
    "wait.js": "text/javascript; charset=utf-8",
    "wait.css": "text/css; charset=utf-8",
}


def _packaged(name: str) -> str:
    return resources.files("gatekeep").joinpath("static", name).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=64)
def _read_asset(name: str, template_dir: str | None) -> str:
    """Return an asset's text, from the operator's folder when it has the file."""
    if template_dir is not None:
        candidate = Path(template_dir) / name
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    return _packaged(name)


@functools.lru_cache(maxsize=64)
def _strings(language: str, template_dir: str | None) -> dict[str, str] | None:
    """Return the page strings of `language` over the English ones, or None when unknown."""
    found = False
    merged: dict[str, str] = {}
    packaged = resources.files("gatekeep").joinpath("static", "strings")
    for code in (DEFAULT_LANGUAGE, language):
        source = packaged.joinpath(f"{code}.json")
        if source.is_file():
            merged.update(orjson.loads(source.read_bytes()))
            found = found or code == language
        if template_dir is not None:
            override = Path(template_dir) / f"strings.{code}.json"
            if override.is_file():
                merged.update(_read_strings_file(override))
                found = found or code == language
    return merged if found else None


def _read_strings_file(path: Path) -> dict[str, str]:
    """Read an operator's strings file; an invalid one is logged and skipped, not served as 500."""
    try:
        document = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as error:
        logger.error("page.strings_invalid path=%s error=%s", path, error)
        return {}
    if not isinstance(document, dict) or not all(
        isinstance(value, str) for value in document.values()
    ):
        logger.error("page.strings_invalid path=%s error=expected an object of strings", path)
        return {}
    return document


def choose_language(accept_language: str, template_dir: str | None) -> str:
    """Pick the best-weighted language of the header that has strings; English otherwise."""
    weighted: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        if primary and primary != "*" and weight > 0:
            weighted.append((-weight, index, primary))
    for _, _, primary in sorted(weighted):
        if primary.isalpha() and _strings(primary, template_dir) is not None:
            return primary
    return DEFAULT_LANGUAGE


def return_url_for(config: EventConfig, requested: str | None) -> str | None:
    """Return where an admitted user goes: the configured URL, or a requested URL on its origin.

    A requested URL on any other scheme, host or port is ignored, so the page can never be
    used as an open redirect.
    """
    configured = config.return_url
    if configured is None:
        return None
    if not requested:
        return configured
    allowed = urlsplit(configured)
    candidate = urlsplit(requested)
    same_origin = (candidate.scheme, candidate.netloc) == (allowed.scheme, allowed.netloc)
    if same_origin and candidate.username is None and "\\" not in requested:
        return requested
    return configured


def _json_for_script(value: Any) -> str:
    """Encode JSON that is safe inside a <script type="application/json"> element."""
    text = orjson.dumps(value).decode()
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(template: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        template = template.replace("{{" + name + "}}", value)
    return template


async def wait_page(request: Request) -> Response:
    app = services(request)
    template_dir = app.settings.page_template_dir
    language = choose_language(request.headers.get("accept-language", ""), template_dir)
    strings = _strings(language, template_dir) or {}

    try:
        event_id = check_id("event_id", request.path_params["event_id"])
    except InvalidInput:
        return _error_page(strings, language, template_dir, 404)
    config = await app.store.get_event(event_id)
    if config is None:
        return _error_page(strings, language, template_dir, 404)

    page_config = {
        "event_id": event_id,
        "base_url": "",
        "return_url": return_url_for(config, request.query_params.get("return_url")),
        "language": language,
    }
    values = {
        "lang": html.escape(language),
        "title": html.escape(strings.get("title", "Waiting room")),
        "heading": html.escape(strings.get("heading", "You are in the queue")),
        "event_id": html.escape(event_id),
        "config_json": _json_for_script(page_config),
        "strings_json": _json_for_script(strings),
    }
    body = render_page(_read_asset("wait.html", template_dir), values)
    return HTMLResponse(body, headers=PAGE_HEADERS)


def _error_page(
    strings: dict[str, str], language: str, template_dir: str | None, status_code: int
) -> Response:
    message = strings.get("event_not_found", "This waiting room does not exist.")
    body = (
        f'<!doctype html><html lang="{html.escape(language)}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(strings.get('title', 'Waiting room'))}</title>"
        '<link rel="stylesheet" href="/static/wait.css"></head>'
        '<body><main class="card" data-state="error">'
        f'<p role="alert">{html.escape(message)}</p></main></body></html>'
    )
    return HTMLResponse(body, status_code=status_code, headers=PAGE_HEADERS)


def _asset_response(request: Request, name: str) -> Response:
    template_dir = services(request).settings.page_template_dir
    # The SDK always comes from the package: an operator restyles the page, not the protocol.
    text = _packaged(name) if name == "gatekeep.js" else _read_asset(name, template_dir)
    headers = {
        "Cache-Control": ASSET_CACHE_CONTROL,
        "X-Content-Type-Options": "nosniff",
        "Access-Control-Allow-Origin": "*",
    }
    return Response(text, media_type=ASSETS[name], headers=headers)


async def sdk(request: Request) -> Response:
    return _asset_response(request, "gatekeep.js")


async def static_asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS or name == "gatekeep.js":
        return Response("not found", status_code=404, media_type="text/plain")
    return _asset_response(request, name)


routes = [
    Route("/wait/{event_id}", wait_page, methods=["GET"]),
    Route("/sdk/gatekeep.js", sdk, methods=["GET"]),
    Route("/static/{name}", static_asset, methods=["GET"]),
]
