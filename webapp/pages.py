"""The gateway routes of the web app: its pages (one HTML shell; the modules route on the
path), its static files, and plotly's bundled ``plotly.min.js`` from the installed package."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from aiohttp import web

from http_edge.web import not_found, path_int

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
_STATIC_NAME = re.compile(r"^[a-z0-9_-]+\.(js|css|svg|png)$")
_TYPES = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml", "png": "image/png"}
# Pages only load this origin's scripts; plotly sets inline styles, images come from the API.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def plotly_bundle() -> Path:
    import plotly

    return Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


@cache
def shell() -> bytes:
    return (HERE / "index.html").read_bytes()


async def page(request: web.Request) -> web.Response:
    if "analysis_id" in request.match_info:  # the id the page will ask the API for
        path_int(request, "analysis_id")
    return web.Response(
        body=shell(),
        content_type="text/html",
        charset="utf-8",
        headers=PAGE_HEADERS,
    )


async def static_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    match = _STATIC_NAME.match(name)
    path = STATIC / name
    if match is None or not path.is_file():
        raise not_found(f"No static file {name}")
    headers = {"Content-Type": _TYPES[match.group(1)], "Cache-Control": "no-cache"}
    return web.FileResponse(path, headers={**headers, "X-Content-Type-Options": "nosniff"})


async def plotly_js(request: web.Request) -> web.FileResponse:
    headers = {"Content-Type": "text/javascript", "Cache-Control": "public, max-age=86400"}
    return web.FileResponse(plotly_bundle(), headers=headers)
