"""Real analysis services for the end-to-end tests: aiohttp servers on 127.0.0.1 that speak
SkyPortal's protocol. A service reads ``callback_url`` from the request, answers at once, and
posts its results to the callback URL later (or first, or twice, or never: each test says).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import re
import secrets
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import joblib
import numpy as np
from aiohttp import web

WebhookBody = dict[str, Any]
# What to post back for a request: one body, several (posted in turn), or None (never).
Answer = Callable[["Call"], WebhookBody | list[WebhookBody] | None]
Gate = Callable[[web.Request, bytes], Awaitable[web.Response | None]]
Seconds = float | Callable[[], float]

ACCEPTED = {"status": "pending", "message": "analysis started"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- what a service sends back -----------------------------------------------------------------


@dataclass(frozen=True)
class Products:
    """Real result files, made the way a Python analysis service makes them."""

    png: bytes
    netcdf: bytes
    results: dict[str, Any]  # the plain-JSON view of the results
    joblib: bytes  # joblib.dump of the same results, with numpy arrays


def _plot_png() -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3, 2), dpi=60)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    mjd = np.linspace(59000, 59040, 30)
    axes.plot(mjd, 100 * np.exp(-(((mjd - 59015) / 8) ** 2)), "k-")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _posterior_netcdf() -> bytes:
    """An ArviZ-style file: a ``posterior`` group with (chain, draw) variables."""
    import xarray as xr

    rng = np.random.default_rng(7)
    posterior = xr.Dataset(
        {
            "t0": (("chain", "draw"), rng.normal(59015.0, 0.5, size=(2, 200))),
            "amplitude": (("chain", "draw"), rng.normal(100.0, 4.0, size=(2, 200))),
            "x1": (("chain", "draw"), rng.normal(0.3, 0.1, size=(2, 200))),
        }
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "posterior.nc"
        posterior.to_netcdf(path, engine="h5netcdf", group="posterior")
        return path.read_bytes()


def make_products() -> Products:
    """CPU work (matplotlib, HDF5): call it in a thread, once."""
    chi2 = np.array([12.5, 11.75, 11.5])
    covariance = np.array([[0.25, 0.01], [0.01, 16.0]])
    raw = {
        "model": "gaussian",
        "best_fit": {"t0": np.float64(59015.0), "amplitude": np.float64(100.0)},
        "chi2_trace": chi2,
        "covariance": covariance,
        "n_iterations": np.int64(3),
    }
    buffer = io.BytesIO()
    joblib.dump(raw, buffer)
    plain = {
        "model": "gaussian",
        "best_fit": {"t0": 59015.0, "amplitude": 100.0},
        "chi2_trace": chi2.tolist(),
        "covariance": covariance.tolist(),
        "n_iterations": 3,
    }
    return Products(_plot_png(), _posterior_netcdf(), plain, buffer.getvalue())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def success_body(products: Products, results_format: str = "joblib") -> WebhookBody:
    results: dict[str, Any] = (
        {"format": "joblib", "data": b64(products.joblib)}
        if results_format == "joblib"
        else {"format": "json", "data": products.results}
    )
    return {
        "status": "success",
        "message": "fit converged",
        "analysis": {
            "plots": [{"format": "png", "data": b64(products.png)}],
            "inference_data": {"format": "netcdf4", "data": b64(products.netcdf)},
            "results": results,
            "model_name": "gaussian",
            "n_detections": 4,
        },
    }


def simple_success(message: str = "done") -> WebhookBody:
    return {
        "status": "success",
        "message": message,
        "analysis": {"results": {"format": "json", "data": {"answer": 42}}},
    }


def failure_body(message: str) -> WebhookBody:
    return {"status": "failure", "message": message, "analysis": {}}


class PlantMarker:
    """Unpickling this runs ``open(path, "w")``: it creates the marker file. Any code that
    unpickles third-party bytes with plain pickle or joblib.load would do exactly that."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def malicious_joblib(marker: Path) -> bytes:
    buffer = io.BytesIO()
    joblib.dump({"best_fit": np.arange(3.0), "payload": PlantMarker(marker)}, buffer)
    return buffer.getvalue()


# --- the server -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request the service received."""

    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    @property
    def callback_url(self) -> str:
        return str(self.payload["callback_url"])


@dataclass(frozen=True)
class Callback:
    """One POST the service made to its callback URL, and skyhook's answer."""

    url: str
    status: int
    reply: Any


def _seconds(value: Seconds) -> float:
    return value() if callable(value) else value


class LocalService:
    """``answer`` says what to post back for a request. The callback goes ``callback_delay``
    after the request arrives; with ``callback_before_answer`` the service posts it and waits
    for skyhook's answer before it answers the dispatcher. A ``gate`` (authentication) may
    refuse a request first."""

    def __init__(
        self,
        answer: Answer | None,
        *,
        port: int | None = None,
        gate: Gate | None = None,
        callback_delay: Seconds = 0.05,
        answer_delay: Seconds = 0.0,
        callback_before_answer: bool = False,
    ) -> None:
        self.answer = answer
        self.port = port or free_port()
        self.gate = gate
        self.callback_delay = callback_delay
        self.answer_delay = answer_delay
        self.callback_before_answer = callback_before_answer
        self.received: list[Call] = []
        self.refused: list[Call] = []
        self.sent: list[Callback] = []
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/analysis"

    async def start(self) -> LocalService:
        self._http = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/analysis", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> LocalService:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        call = Call(dict(request.headers), body)
        if self.gate is not None:
            refusal = await self.gate(request, body)
            if refusal is not None:
                self.refused.append(call)
                return refusal
        self.received.append(call)
        webhook = self.answer(call) if self.answer is not None else None
        if webhook is not None:
            if self.callback_before_answer:
                await self._call_back(call, webhook, delay=0.0)
            else:
                task = asyncio.create_task(self._call_back(call, webhook, self.callback_delay))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        await asyncio.sleep(_seconds(self.answer_delay))
        return web.json_response(ACCEPTED)

    async def _call_back(
        self, call: Call, webhook: WebhookBody | list[WebhookBody], delay: Seconds
    ) -> None:
        await asyncio.sleep(_seconds(delay))
        for body in webhook if isinstance(webhook, list) else [webhook]:
            await self.post_callback(call.callback_url, body)

    async def post_callback(self, url: str, webhook: WebhookBody) -> Callback:
        assert self._http is not None
        async with self._http.post(url, json=webhook) as response:
            reply = await response.json(content_type=None)
            sent = Callback(url, response.status, reply)
        self.sent.append(sent)
        return sent

    async def wait_until(self, condition: Callable[[], bool], within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"service state not reached in {within} s: {len(self.received)} requests, "
                    f"{len(self.refused)} refused, callbacks {[c.status for c in self.sent]}"
                )
            await asyncio.sleep(0.02)


# --- authentication a service may require ------------------------------------------------------


def _unauthorized(text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=401, text=text, headers=headers)


def header_token_gate(name: str, value: str) -> Gate:
    async def gate(request: web.Request, body: bytes) -> web.Response | None:
        if request.headers.get(name) != value:
            return _unauthorized(f"missing or wrong {name} header")
        return None

    return gate


def api_key_gate(name: str, value: str) -> Gate:
    """SkyPortal's api_key authentication puts the key into the JSON body."""

    async def gate(request: web.Request, body: bytes) -> web.Response | None:
        if json.loads(body).get(name) != value:
            return _unauthorized(f"missing or wrong {name} in the request body")
        return None

    return gate


def basic_gate(username: str, password: str) -> Gate:
    expected = "Basic " + b64(f"{username}:{password}".encode())

    async def gate(request: web.Request, body: bytes) -> web.Response | None:
        if request.headers.get("Authorization") != expected:
            return _unauthorized(
                "wrong basic credentials", {"WWW-Authenticate": 'Basic realm="fitter"'}
            )
        return None

    return gate


_DIGEST_FIELD = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


class DigestGate:
    """The server side of RFC 7616 digest authentication (MD5, qop=auth)."""

    realm = "fitter"

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self.nonces: set[str] = set()

    def _challenge(self, text: str) -> web.Response:
        nonce = secrets.token_hex(16)
        self.nonces.add(nonce)
        header = f'Digest realm="{self.realm}", qop="auth", nonce="{nonce}", algorithm=MD5'
        return _unauthorized(text, {"WWW-Authenticate": header})

    async def __call__(self, request: web.Request, body: bytes) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Digest "):
            return self._challenge("digest authentication required")
        fields = {m[0]: m[1] or m[2] for m in _DIGEST_FIELD.findall(header[len("Digest ") :])}
        if fields.get("nonce") not in self.nonces or fields.get("username") != self.username:
            return self._challenge("wrong digest credentials")

        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()

        ha1 = md5(f"{self.username}:{self.realm}:{self.password}")
        ha2 = md5(f"{request.method}:{fields.get('uri', '')}")
        parts = (ha1, fields["nonce"], fields.get("nc", ""), fields.get("cnonce", ""), "auth", ha2)
        if fields.get("response") != md5(":".join(parts)):
            return _unauthorized("wrong digest credentials")
        return None
