"""sn_fitter over HTTP: the platform's request in, the webhook body out (real servers).

The fitter app runs on a local port with a real worker process; a local aiohttp server plays
the platform's webhook endpoint and records what it receives.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
import xarray as xr
from aiohttp import web

from dispatcher.inputs import PHOTOMETRY_COLUMNS, REDSHIFT_COLUMNS, records_to_csv
from shared.domain.analysis_data import decode_payload_sync, parse_webhook_body
from shared.science.photometry import PHOT_SYS, PHOT_ZP, flux_to_mag, fluxerr_to_magerr
from shared.security.safe_decode import load_joblib_safely
from sn_fitter.app import FitterSettings, create_app
from sn_fitter.demo import demo_lightcurve
from sn_fitter.quality import az

pytestmark = pytest.mark.asyncio(loop_scope="module")
TOKEN = "0b5c7a9e-3f1d-4c2b-9a8e-7d6f5e4c3b2a"
CALLBACK_WAIT = 90.0
SETTINGS = FitterSettings(
    workers=1,
    callback_timeout_seconds=5.0,
    callback_retry_delays_seconds=(0.2, 0.4, 0.8, 1.6, 3.2),
    warm_up=False,
)


@dataclass
class Receiver:
    """A webhook endpoint: answers ``statuses`` in turn (then 200) and records bodies."""

    statuses: list[int] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/webhook/obj_analysis/{TOKEN}"

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            self.bodies.append(raw)
            self.arrived.set()
        return web.json_response({"status": "error" if status >= 300 else "success"}, status=status)

    async def start(self, port: int = 0) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/webhook/obj_analysis/{token}", self.handle)
        # Stands in for skyhook's webhook endpoint, which writes no access log with the token.
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def body(self) -> dict:
        await asyncio.wait_for(self.arrived.wait(), CALLBACK_WAIT)
        raw = self.bodies[0]
        json.loads(raw, parse_constant=lambda name: pytest.fail(f"{name} in the body"))
        return json.loads(raw)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fitter_url() -> AsyncIterator[str]:
    runner = web.AppRunner(create_app(SETTINGS))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


def photometry_csv(instrument: str = "ZTF", filters: dict[str, str] | None = None) -> str:
    """The demo light curve written the way skyhook's dispatcher writes photometry."""
    columns = demo_lightcurve(seed=7).columnar()
    records = []
    for mjd, band, flux, fluxerr in zip(
        columns["mjd"], columns["filter"], columns["flux"], columns["fluxerr"], strict=True
    ):
        records.append(
            {
                "mjd": mjd,
                "flux": flux,
                "fluxerr": fluxerr,
                "mag": flux_to_mag(flux),
                "magerr": fluxerr_to_magerr(flux, fluxerr),
                "filter": (filters or {}).get(band, band),
                "magsys": PHOT_SYS,
                "limiting_mag": -2.5 * math.log10(5 * fluxerr) + PHOT_ZP,
                "zp": PHOT_ZP,
                "instrument_name": instrument,
                "predicted_mag": None,
            }
        )
    return records_to_csv(PHOTOMETRY_COLUMNS, records)


def redshift_csv(value: float | None) -> str:
    return records_to_csv(
        REDSHIFT_COLUMNS, [{"redshift": value, "redshift_error": None, "redshift_origin": None}]
    )


def request_body(receiver: Receiver, parameters: dict, photometry: str | None = None) -> dict:
    return {
        "callback_url": receiver.url,
        "callback_method": "POST",
        "invalid_after": "2099-01-01 00:00:00.000000",
        "analysis_resource_type": "obj",
        "resource_id": "ZTF23demo",
        "analysis_parameters": {},
        "inputs": {
            "analysis_parameters": parameters,
            "photometry": photometry if photometry is not None else photometry_csv(),
            "redshift": redshift_csv(0.045),
        },
    }


async def post(url: str, body: dict | bytes, path: str = "/analysis/sn_fit") -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with session.post(
            url + path, data=data, headers={"Content-Type": "application/json"}
        ) as response:
            return response.status, await response.json()


async def test_health(fitter_url: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(fitter_url + "/") as response:
        assert response.status == 200
        assert await response.json() == {"status": "active"}


async def test_fit_delivers_plot_posterior_lightcurve_and_results(
    fitter_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    status, reply = await post(fitter_url, request_body(receiver, {"seed": 11}))
    assert status == 200
    assert reply == {"status": "pending", "message": "sn_fitter: analysis started"}
    body = await receiver.body()
    assert body["status"] == "success", body["message"]
    assert body["message"].startswith("Good results with chi^2/dof=")
    analysis = body["analysis"]
    assert base64.b64decode(analysis["plots"][0]["data"]).startswith(b"\x89PNG\r\n\x1a\n")
    _check_inference_data(analysis["inference_data"], tmp_path)
    assert set(analysis["posterior_samples"]) == {"z", "t0", "x0", "x1", "c"}
    assert 2000 <= len(analysis["posterior_samples"]["z"]) <= 4000
    _check_model_lightcurve(analysis["model_lightcurve"], analysis["posterior_samples"])
    results = analysis["results"]
    assert results["format"] == "json"
    data = results["data"]
    assert {
        "best_fit",
        "errors",
        "posterior",
        "chi2",
        "ndof",
        "chi2_per_dof",
        "sampler",
        "n_detections",
        "n_upper_limits",
        "model",
    } <= set(data)
    assert data["model"] == "salt3" and data["n_detections"] == analysis["n_detections"] > 20
    assert all(r < 1.01 for r in data["sampler"]["rhat"].values())
    assert all(e >= 1000 for e in data["sampler"]["ess_bulk"].values())
    assert abs(data["best_fit"]["z"] - 0.045) < 5 * data["errors"]["z"]
    assert data["bands"] == {"ztfg": ["ztfg"], "ztfr": ["ztfr"]}
    copy = load_joblib_safely(base64.b64decode(analysis["results_joblib"]["data"]))
    assert copy["chi2"] == pytest.approx(data["chi2"]) and len(copy["samples"]["x1"]) >= 4000
    # skyhook's own webhook receiver accepts the body as it is
    parse_webhook_body(receiver.bodies[0])
    decode_payload_sync(analysis)


def _check_inference_data(item: dict, tmp_path: Path) -> None:
    assert item["format"] == "netcdf4"
    path = tmp_path / "posterior.nc"
    path.write_bytes(base64.b64decode(item["data"]))
    idata = az.from_netcdf(path)
    assert {"posterior", "sample_stats", "observed_data"} <= set(idata.groups())
    posterior = idata.posterior
    assert posterior.sizes["chain"] == 4 and posterior.sizes["draw"] >= 1000
    assert set(posterior.data_vars) == {"z", "t0", "x0", "x1", "c"}
    assert posterior["x1"].dims == ("chain", "draw")
    assert np.isfinite(posterior["c"].values).all()
    assert idata.sample_stats["lp"].shape == (4, posterior.sizes["draw"])
    assert float(az.rhat(posterior)["z"]) < 1.01
    observed = idata.observed_data
    assert set(observed["band"].values.tolist()) == {"ztfg", "ztfr"}
    assert observed.sizes["observation"] == len(demo_lightcurve(seed=7).mjd)
    with xr.open_dataset(path, group="posterior", engine="h5netcdf") as plain:
        assert set(plain.data_vars) == {"z", "t0", "x0", "x1", "c"}  # what the gateway reads


def _check_model_lightcurve(curves: dict, samples: dict) -> None:
    # salt3 is defined for rest-frame phases -20..+50 days; outside it has no flux, and the
    # curve must not show those epochs (they once made the model drop to zero at the ends).
    t0, z = float(np.median(samples["t0"])), float(np.median(samples["z"]))
    first, last = t0 - 20.0 * (1.0 + z), t0 + 50.0 * (1.0 + z)
    assert set(curves) == {"ztfg", "ztfr"}
    for rows in curves.values():
        assert len(rows) > 50
        assert all(value is not None and math.isfinite(value) for row in rows for value in row)
        mjd, median, low, high = np.array(rows).T
        assert first - 1e-5 <= mjd.min() and mjd.max() <= last + 1e-5  # MJDs have 5 decimals
        assert mjd.max() - mjd.min() > 60.0
        assert np.all(np.diff(mjd) > 0)
        assert np.all(low <= median) and np.all(median <= high)
        assert 16.0 < median.min() < 18.5  # the demo SN peaks near 17.2 mag
        assert median[-1] < 21.0  # ~45 days after peak it is still bright, not a zero flux


async def test_demo_route_with_fixed_redshift_and_portal_filter_names(
    fitter_url: str, receiver: Receiver
) -> None:
    photometry = photometry_csv(instrument="ZTF", filters={"ztfg": "g", "ztfr": "ZTF_r"})
    body = request_body(
        receiver, {"fix_z": "True", "source": "salt3", "num_samples": "400"}, photometry
    )
    status, _ = await post(fitter_url, body, path="/analysis/demo_analysis")
    assert status == 200
    reply = await receiver.body()
    assert reply["status"] == "success", reply["message"]
    data = reply["analysis"]["results"]["data"]
    assert data["param_names"] == ["t0", "x0", "x1", "c"]
    assert data["redshift"] == {"fixed": True, "value": 0.045, "bounds": None, "prior": None}
    assert data["bands"] == {"ztfg": ["g"], "ztfr": ["ZTF_r"]}
    assert data["fix_z"] is True


@pytest.mark.parametrize(
    ("parameters", "photometry_filters", "redshift", "expected"),
    [
        (
            {"source": "not-a-model"},
            None,
            0.045,
            "unknown or unavailable sncosmo model 'not-a-model'",
        ),
        ({}, {"ztfg": "not_a_band"}, 0.045, "unknown or unavailable bandpass 'not_a_band'"),
        ({"fix_z": "True"}, None, None, "fix_z is true but the source has no redshift"),
        ({"z_min": 1.0, "z_max": 2.0}, None, 0.045, "no redshift in [1, 2]"),
    ],
)
async def test_fit_problems_are_reported_as_failures(
    fitter_url: str,
    receiver: Receiver,
    parameters: dict[str, Any],
    photometry_filters: dict[str, str] | None,
    redshift: float | None,
    expected: str,
) -> None:
    body = request_body(receiver, parameters, photometry_csv(filters=photometry_filters))
    body["inputs"]["redshift"] = redshift_csv(redshift)
    status, _ = await post(fitter_url, body)
    assert status == 200
    reply = await receiver.body()
    assert reply["status"] == "failure"
    assert expected in reply["message"]
    assert reply["analysis"] == {}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"{not json", "Invalid JSON"),
        (lambda b: {k: v for k, v in b.items() if k != "inputs"}, "missing required key inputs"),
        (
            lambda b: {k: v for k, v in b.items() if k != "callback_url"},
            "missing required key callback_url",
        ),
        (
            lambda b: {k: v for k, v in b.items() if k != "callback_method"},
            "missing required key callback_method",
        ),
        (lambda b: {**b, "callback_method": "GET"}, "callback_method must be POST"),
        (lambda b: {**b, "callback_url": "ftp://x/y"}, "callback_url must be an http(s) URL"),
        (
            lambda b: {
                **b,
                "inputs": {
                    **b["inputs"],
                    "photometry": "mjd,flux,fluxerr,filter\n60000,abc,1,ztfg\n",
                },
            },
            "could not parse photometry",
        ),
        (
            lambda b: {**b, "inputs": {"analysis_parameters": {}}},
            "missing required key inputs.photometry",
        ),
        (
            lambda b: {**b, "inputs": {**b["inputs"], "analysis_parameters": {"num_chains": "x"}}},
            "invalid analysis_parameters: num_chains must be a number",
        ),
    ],
)
async def test_bad_requests_get_400_and_start_nothing(
    fitter_url: str,
    receiver: Receiver,
    mutate: Callable[[dict[str, Any]], dict[str, Any] | bytes],
    message: str,
) -> None:
    status, reply = await post(fitter_url, mutate(request_body(receiver, {})))
    assert status == 400
    assert reply["status"] == "error"
    assert message in reply["message"]
    await asyncio.sleep(0.3)
    assert receiver.bodies == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _wait_for_log(caplog: pytest.LogCaptureFixture, text: str) -> None:
    for _ in range(int(CALLBACK_WAIT * 10)):
        if text in caplog.text:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"no log line containing {text!r}")


async def test_callback_down_then_up_is_retried_and_delivered(
    fitter_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sn_fitter.callback")
    late = Receiver()
    late.port = _free_port()  # nothing listens there yet
    status, _ = await post(fitter_url, request_body(late, {"num_samples": "300"}))
    assert status == 200
    await _wait_for_log(caplog, "attempt 1 failed")
    await late.start(late.port)
    try:
        body = await late.body()
    finally:
        await late.stop()
    assert body["status"] == "success"
    assert "ClientConnectorError" in caplog.text
    assert TOKEN not in caplog.text  # the one-time token is a secret


async def test_callback_5xx_is_retried(
    fitter_url: str, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sn_fitter.callback")
    receiver.statuses = [503, 502]
    status, _ = await post(fitter_url, request_body(receiver, {"num_samples": "300"}))
    assert status == 200
    assert (await receiver.body())["status"] == "success"
    assert "HTTP 503" in caplog.text and "HTTP 502" in caplog.text


async def test_final_callback_failures_are_logged(
    fitter_url: str, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sn_fitter.callback")
    receiver.statuses = [503] * 6  # more than the retry schedule allows
    await post(fitter_url, request_body(receiver, {"num_samples": "300"}))
    await _wait_for_log(caplog, "failed after 6 attempts")
    receiver.statuses = [403]  # the platform refused the token: final at once
    await post(fitter_url, request_body(receiver, {"num_samples": "300"}))
    await _wait_for_log(caplog, "refused the results")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert receiver.bodies == []
    assert TOKEN not in caplog.text
