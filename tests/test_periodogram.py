"""The server-side periodogram: its science on simulated ZTF-like light curves, and the API
(visibility, parameters, refusals, phase folding from a saved period)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from astropy.timeseries import LombScargleMultiband

from gateway import periodogram as pg
from tests.support.api import Accounts, ApiClient
from tests.support.api import TestUser as Caller
from tests.support.lightcurves import light_curve, rr_lyrae, sinusoid
from tests.test_sources import new_instrument, new_source

# --- science --------------------------------------------------------------------------------

SIGNALS = [
    pytest.param(0.5671, sinusoid, id="sinusoid-0.567d"),
    pytest.param(3.217, sinusoid, id="sinusoid-3.2d"),
    pytest.param(0.61234, rr_lyrae, id="rr-lyrae-0.612d"),
    pytest.param(0.35712, rr_lyrae, id="rr-lyrae-0.357d"),
]


@pytest.mark.parametrize("method", ["multiband", "ls"])
@pytest.mark.parametrize(("period", "shape"), SIGNALS)
@pytest.mark.parametrize("seed", [1, 2])
def test_periodic_light_curves_are_recovered_with_a_tiny_false_alarm_probability(
    period: float, shape: Any, method: str, seed: int
) -> None:
    # Faint (r ~ 19.5, errors ~0.1 mag), 300 points in g and r over three seasons.
    curve = light_curve(np.random.default_rng(seed), period, shape, n_points=300, base_mag=19.5)
    answer = pg.periodogram(curve, pg.Options(method=method))
    assert answer["method"] == method
    assert answer["best_period"] == pytest.approx(period, rel=0.005)
    best = answer["peaks"][0]
    assert best["period"] == answer["best_period"]
    assert best["false_alarm_probability"] < 1e-3
    assert answer["false_alarm_method"] == ("baluev" if method == "ls" else "naive")


@pytest.mark.parametrize("method", ["multiband", "ls"])
@pytest.mark.parametrize("seed", [3, 4, 5, 6, 7])
def test_pure_noise_gives_no_significant_peak(method: str, seed: int) -> None:
    curve = light_curve(np.random.default_rng(seed), None, n_points=300, base_mag=19.5)
    answer = pg.periodogram(curve, pg.Options(method=method))
    faps = [peak["false_alarm_probability"] for peak in answer["peaks"]]
    assert len(faps) == pg.DEFAULT_N_PEAKS
    assert min(faps) > 0.01, answer["peaks"]
    if method == "ls":
        for band_answer in answer["per_band"].values():
            assert min(p["false_alarm_probability"] for p in band_answer["peaks"]) > 0.01


@pytest.mark.parametrize("method", ["multiband", "ls"])
def test_more_fourier_terms_fit_a_rr_lyrae_shape_better(method: str) -> None:
    curve = light_curve(np.random.default_rng(1), 0.61234, rr_lyrae, n_points=300, base_mag=19.5)
    one, two = (pg.periodogram(curve, pg.Options(method=method, nterms=k)) for k in (1, 2))
    assert two["nterms"] == 2
    assert two["best_period"] == pytest.approx(0.61234, rel=0.005)
    assert two["peaks"][0]["power"] > one["peaks"][0]["power"] + 0.05
    assert two["false_alarm_method"] == "naive"
    assert two["peaks"][0]["false_alarm_probability"] < 1e-3


def test_multiband_power_is_astropys_multiband_model_with_own_offset_and_amplitude() -> None:
    rng = np.random.default_rng(11)
    curve = light_curve(rng, 0.7, rr_lyrae, n_points=200, base_mag=19.0)
    # Unequal errors, so the weighting between the bands matters.
    assert np.ptp(curve.magerr) > 0.01
    grid = pg.frequency_grid(curve.baseline, pg.Options(min_period=0.5, samples_per_peak=2))
    ours = pg.multiband(curve, ["ztfg", "ztfr"], grid, nterms=1).power
    model = LombScargleMultiband(
        curve.mjd, curve.mag, curve.band, curve.magerr, nterms_base=0, nterms_band=1
    )
    theirs = model.power(grid.frequency, method="flexible")
    assert np.max(np.abs(ours - theirs)) < 1e-3
    assert int(np.argmax(ours)) == int(np.argmax(theirs))


def test_plotting_arrays_are_downsampled_keeping_every_peak() -> None:
    curve = light_curve(np.random.default_rng(5), 0.5671, n_points=400)
    answer = pg.periodogram(curve, pg.Options(min_period=0.05, n_peaks=10))
    grid = answer["frequency_grid"]
    assert grid["n_frequencies"] > pg.MAX_PLOT_POINTS
    assert len(answer["periods"]) == len(answer["power"]) <= pg.MAX_PLOT_POINTS
    assert answer["periods"] == sorted(answer["periods"])
    shown = dict(zip(answer["periods"], answer["power"], strict=True))
    for peak in answer["peaks"]:
        assert shown[peak["period"]] == peak["power"]
    assert max(answer["power"]) == answer["peaks"][0]["power"]
    assert grid["min_period"] == pytest.approx(0.05, rel=1e-3)
    assert grid["max_period"] == pytest.approx(curve.baseline)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (pg.Options(min_period=5.0, max_period=2.0), "Empty period range"),
        (pg.Options(min_period=2.0, max_period=2.0), "Empty period range"),
        (pg.Options(min_period=1e-4, samples_per_peak=100), "frequencies (at most"),
    ],
)
def test_impossible_grids_are_refused(options: pg.Options, fragment: str) -> None:
    curve = light_curve(np.random.default_rng(1), 0.5, n_points=100)
    with pytest.raises(pg.PeriodogramError, match=fragment.replace("(", r"\(")):
        pg.periodogram(curve, options)


# --- API ------------------------------------------------------------------------------------


@dataclass
class Source:
    owner: Caller
    obj_id: str
    instrument_id: int
    group_id: int


@pytest.fixture
async def source(api: ApiClient, accounts: Accounts) -> Source:
    group = await accounts.group()
    owner = await accounts.user(acls=("Upload Data",), groups=(group,))
    return Source(owner, await new_source(api, owner), await new_instrument(api, owner), group.id)


def upload_body(source: Source, curve: pg.LightCurve, **extra: Any) -> dict[str, Any]:
    return {
        "obj_id": source.obj_id,
        "instrument_id": source.instrument_id,
        "mjd": curve.mjd.tolist(),
        "filter": curve.band.tolist(),
        "mag": curve.mag.tolist(),
        "magerr": curve.magerr.tolist(),
        "limiting_mag": [21.0] * curve.mjd.size,
        "magsys": "ab",
        **extra,
    }


async def upload(api: ApiClient, source: Source, user: Caller, body: dict[str, Any]) -> None:
    reply = await api.post("/api/photometry", user, body)
    assert reply.status == 200, reply.body


async def periodogram(
    api: ApiClient, source: Source, user: Caller, **params: str
) -> tuple[int, Any]:
    reply = await api.get(f"/api/sources/{source.obj_id}/periodogram", user, params=params)
    return reply.status, reply.body


@pytest.mark.usefixtures("backend")
async def test_api_periodogram_of_the_readable_photometry(
    api: ApiClient, accounts: Accounts, source: Source
) -> None:
    curve = light_curve(np.random.default_rng(21), 0.5671, n_points=240)
    await upload(api, source, source.owner, upload_body(source, curve))
    limits = {
        **upload_body(source, curve),
        "mjd": [58_290.0, 58_291.0, 58_292.0],
        "filter": "ztfr",
        "mag": None,
        "magerr": None,
        "limiting_mag": 20.5,
    }
    await upload(api, source, source.owner, limits)

    status, body = await periodogram(api, source, source.owner)
    assert status == 200, body
    data = body["data"]
    assert data["obj_id"] == source.obj_id
    assert data["method"] == "multiband"
    assert data["best_period"] == pytest.approx(0.5671, rel=0.005)
    counts = {b: int(np.sum(curve.band == b)) for b in ("ztfg", "ztfr")}
    assert data["n_points"] == counts
    assert data["n_non_detections"] == 3
    assert data["peaks"][0]["false_alarm_probability"] < 1e-3
    assert len(data["power"]) <= pg.MAX_PLOT_POINTS
    assert data["frequency_grid"]["samples_per_peak"] == 10
    assert data["frequency_grid"]["min_period"] == pytest.approx(pg.DEFAULT_MIN_PERIOD, rel=1e-3)

    status, body = await periodogram(api, source, source.owner, filters="ztfg", n_peaks="2")
    assert status == 200, body
    one_band = body["data"]
    assert (one_band["method"], one_band["bands"]) == ("ls", ["ztfg"])
    assert one_band["n_points"] == {"ztfg": counts["ztfg"]}
    assert len(one_band["peaks"]) == 2
    assert one_band["best_period"] == pytest.approx(0.5671, rel=0.005)

    status, body = await periodogram(
        api, source, source.owner, instrument_ids=str(source.instrument_id + 1000)
    )
    assert status == 400 and "Not enough points" in body["message"]


@pytest.mark.usefixtures("backend")
async def test_points_of_other_groups_are_not_used(api: ApiClient, accounts: Accounts) -> None:
    """The periodic points are shared only with another group: a reader outside it gets the
    periodogram of what they may read, here too few points."""
    mine, theirs = await accounts.group(), await accounts.group()
    owner = await accounts.user(acls=("Upload Data",), groups=(mine, theirs))
    reader = await accounts.user(groups=(mine,))
    insider = await accounts.user(groups=(theirs,))
    obj_id = await new_source(api, owner, group_ids=[mine.id, theirs.id])
    source = Source(owner, obj_id, await new_instrument(api, owner), mine.id)
    curve = light_curve(np.random.default_rng(8), 0.5671, n_points=200)
    hidden, shared = curve.select(np.arange(200) >= 8), curve.select(np.arange(200) < 8)
    await upload(api, source, owner, upload_body(source, hidden, group_ids=[theirs.id]))
    await upload(api, source, owner, upload_body(source, shared, group_ids=[mine.id]))

    status, body = await periodogram(api, source, reader)
    assert status == 400
    assert body["message"] == (
        "Not enough points for a periodogram: 8 usable detections (at least 10 are needed)"
    )
    status, body = await periodogram(api, source, insider)
    assert status == 200, body
    assert sum(body["data"]["n_points"].values()) == 192
    assert body["data"]["best_period"] == pytest.approx(0.5671, rel=0.005)


@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"method": "bls"}, "Invalid method: 'bls' (choose one of ls, multiband)"),
        ({"min_period": "-1"}, "Invalid min_period: must be a finite number > 0"),
        ({"max_period": "nan"}, "Invalid max_period: must be a finite number > 0"),
        ({"max_period": "abc"}, "Invalid max_period: 'abc' is not a number"),
        ({"min_period": "2", "max_period": "1"}, "Empty period range"),
        ({"samples_per_peak": "0.5"}, "Invalid samples_per_peak: must be between 1 and 100"),
        ({"n_peaks": "0"}, "Invalid n_peaks: must be between 1 and 50"),
        ({"n_peaks": "2.5"}, "Invalid n_peaks: '2.5' is not an integer"),
        ({"nterms": "7"}, "Invalid nterms: must be between 1 and 3"),
        ({"instrument_ids": "1,x"}, "Invalid instrument_ids"),
        ({"instrument_ids": "99999999999"}, "Invalid instrument_ids"),
        ({"min_period": "1e-9"}, "frequencies (at most 1000000)"),
    ],
)
async def test_bad_parameters_are_400s_with_a_message(
    api: ApiClient, source: Source, params: dict[str, str], fragment: str
) -> None:
    curve = light_curve(np.random.default_rng(2), 1.3, n_points=60)
    await upload(api, source, source.owner, upload_body(source, curve))
    status, body = await periodogram(api, source, source.owner, **params)
    assert status == 400, body
    assert fragment in body["message"]


@pytest.mark.usefixtures("backend")
async def test_unknown_or_invisible_sources_are_404(
    api: ApiClient, accounts: Accounts, source: Source
) -> None:
    stranger = await accounts.user()
    status, body = await periodogram(api, source, stranger)
    assert (status, body["message"]) == (404, f"Source {source.obj_id} not found")
    reply = await api.get("/api/sources/nope/periodogram", source.owner)
    assert reply.status == 404


# --- phase folding from a saved period ------------------------------------------------------


async def folded(api: ApiClient, source: Source, user: Caller) -> tuple[int, Any]:
    reply = await api.get(
        f"/api/sources/{source.obj_id}/photometry", user, params={"phaseFoldData": "true"}
    )
    return reply.status, reply.body


@pytest.mark.usefixtures("backend")
async def test_phase_fold_uses_the_newest_readable_period_annotation(
    api: ApiClient, accounts: Accounts
) -> None:
    mine, theirs = await accounts.group(), await accounts.group()
    owner = await accounts.user(acls=("Upload Data",), groups=(mine, theirs))
    reader = await accounts.user(groups=(mine,))
    obj_id = await new_source(api, owner, group_ids=[mine.id, theirs.id])
    source = Source(owner, obj_id, await new_instrument(api, owner), mine.id)
    curve = light_curve(np.random.default_rng(4), 0.5671, n_points=20)
    await upload(api, source, owner, upload_body(source, curve, group_ids=[mine.id]))

    status, body = await folded(api, source, reader)
    assert (status, body["message"]) == (400, f"No period for object {obj_id}")
    plain = await api.get(f"/api/sources/{obj_id}/photometry", reader)
    assert all("phase" not in p for p in plain.data["photometry"])

    annotations = f"/api/sources/{obj_id}/annotations"
    saved = await api.post(
        annotations,
        owner,
        {"origin": "periodogram", "data": {"period": 0.5671, "fap": 1e-9}, "group_ids": [mine.id]},
    )
    assert saved.status == 200, saved.body
    await api.post(annotations, owner, {"origin": "notes", "data": {"text": "no period"}})
    # Newer, but shared only with a group the reader is not in.
    hidden = {"origin": "other", "data": {"period": 2.0}, "group_ids": [theirs.id]}
    assert (await api.post(annotations, owner, hidden)).status == 200

    status, body = await folded(api, source, reader)
    assert status == 200, body
    points = body["data"]["photometry"]
    assert len(points) == 20
    for point in points:
        assert point["phase"] == pytest.approx(math.fmod(point["mjd"], 0.5671) / 0.5671)
        assert 0 <= point["phase"] < 1
    status, body = await folded(api, source, owner)
    assert status == 200
    assert body["data"]["photometry"][0]["phase"] == pytest.approx(
        math.fmod(body["data"]["photometry"][0]["mjd"], 2.0) / 2.0
    )


@pytest.mark.usefixtures("backend")
async def test_phase_fold_refuses_a_period_that_is_not_a_positive_number(
    api: ApiClient, source: Source
) -> None:
    curve = light_curve(np.random.default_rng(4), 0.5671, n_points=12)
    await upload(api, source, source.owner, upload_body(source, curve))
    body = {"origin": "by_hand", "data": {"period": "half a day"}}
    assert (
        await api.post(f"/api/sources/{source.obj_id}/annotations", source.owner, body)
    ).status == 200
    status, reply = await folded(api, source, source.owner)
    assert status == 400
    assert "Invalid period 'half a day'" in reply["message"]
