"""Photometry statistics: SkyPortal's rules, a stored row kept current by every photometry
change, readers who never learn anything from points of other groups, recomputation and the
bulk aggregate."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select, update

from shared.db.models import Instrument, Obj, Photometry, PhotStat
from shared.db.session import create_engine, create_session_factory
from shared.runtime.resources import Resources
from shared.science import phot_stats
from shared.science.phot_stats import PointRow, compute
from shared.science.photometry import fluxerr_to_limit, limit_to_fluxerr, mag_to_flux
from skyhook import cli
from tests.support.api import Accounts, ApiClient, unique
from tests.support.api import TestUser as Caller
from tests.test_sources import new_instrument, new_source


def detection(mjd: float, mag: float, band: str, origin: str | None = None) -> PointRow:
    return PointRow(mjd, mag_to_flux(mag), mag_to_flux(mag) / 20, band, None, origin)


def limit(mjd: float, limiting_mag: float, band: str) -> PointRow:
    return PointRow(mjd, None, limit_to_fluxerr(limiting_mag), band, limiting_mag, None)


LIGHT_CURVE = [
    limit(100.0, 20.5, "ztfr"),
    PointRow(101.0, 1.0, 1.0, "ztfr", None, None),  # S/N 1: a non-detection, 5-sigma limit
    detection(102.0, 19.0, "ztfg", origin=" Forced Photometry "),
    detection(103.0, 18.5, "ztfr"),
    detection(105.0, 18.0, "ztfg"),
    detection(106.0, 18.2, "ztfr"),
    detection(110.0, 18.9, "ztfr", origin="alert"),
    limit(112.0, 21.0, "ztfg"),
]


def test_statistics_follow_skyportals_rules() -> None:
    stats = compute(reversed(LIGHT_CURVE))
    approx = pytest.approx
    assert stats["num_obs_global"] == 8
    assert stats["num_obs_per_filter"] == {"ztfr": 5, "ztfg": 3}
    assert (stats["num_det_global"], stats["num_det_no_forced_phot_global"]) == (5, 4)
    assert stats["num_det_per_filter"] == {"ztfg": 2, "ztfr": 3}
    first = [stats[f"first_detected_{k}"] for k in ("mjd", "mag", "filter")]
    last = [stats[f"last_detected_{k}"] for k in ("mjd", "mag", "filter")]
    assert first == [102.0, approx(19.0), "ztfg"]
    assert last == [110.0, approx(18.9), "ztfr"]
    assert stats["first_detected_no_forced_phot_mjd"] == 103.0
    assert stats["first_detected_no_forced_phot_filter"] == "ztfr"
    assert stats["last_detected_no_forced_phot_mjd"] == 110.0
    assert stats["recent_obs_mjd"] == 112.0
    assert stats["predetection_mjds"] == [100.0, 101.0]
    assert stats["last_non_detection_mjd"] == 101.0
    assert stats["time_to_non_detection"] == approx(1.0)
    r_mags = [18.5, 18.2, 18.9]
    r_mean = sum(r_mags) / 3
    assert stats["mean_mag_per_filter"] == {"ztfg": approx(18.5), "ztfr": approx(r_mean)}
    assert stats["mag_rms_per_filter"]["ztfg"] == approx(0.5)
    r_rms = math.sqrt(sum((m - r_mean) ** 2 for m in r_mags) / 3)
    assert stats["mag_rms_per_filter"]["ztfr"] == approx(r_rms)
    assert stats["mean_mag_global"] == approx((19.0 + 18.0 + sum(r_mags)) / 5)
    assert stats["mean_color"] == {"ztfg-ztfr": approx(18.5 - r_mean)}
    assert (stats["peak_mjd_global"], stats["peak_mag_global"]) == (105.0, approx(18.0))
    assert stats["peak_mag_per_filter"] == {"ztfg": approx(18.0), "ztfr": approx(18.2)}
    assert stats["peak_mjd_per_filter"] == {"ztfg": 105.0, "ztfr": 106.0}
    assert stats["faintest_mag_global"] == approx(19.0)
    assert stats["faintest_mag_per_filter"] == {"ztfg": approx(19.0), "ztfr": approx(18.9)}
    five_sigma = fluxerr_to_limit(1.0)
    assert five_sigma == approx(23.9 - 2.5 * math.log10(5))
    assert stats["deepest_limit_per_filter"] == {"ztfr": approx(five_sigma), "ztfg": 21.0}
    assert stats["deepest_limit_global"] == approx(five_sigma)
    # Rise in the first detection's filter (g): 19.0 -> 18.0 in 3 days.
    assert stats["rise_rate"] == approx(1 / 3)
    # Decay in the last detection's filter (r): 18.2 at 106 -> 18.9 at 110.
    assert stats["decay_rate"] == approx(0.7 / 4)


def test_no_points_and_only_limits() -> None:
    empty = compute([])
    assert (empty["num_obs_global"], empty["num_det_global"]) == (0, 0)
    assert empty["peak_mag_global"] is None and empty["predetection_mjds"] == []
    limits = compute([limit(5.0, 20.0, "ztfg"), limit(7.0, 20.5, "ztfg")])
    assert limits["num_det_global"] == 0 and limits["first_detected_mjd"] is None
    assert limits["predetection_mjds"] == [5.0, 7.0]
    assert limits["time_to_non_detection"] is None
    assert limits["deepest_limit_global"] == 20.5
    assert limits["rise_rate"] is None and limits["decay_rate"] is None


def test_one_list_of_forced_photometry_origins() -> None:
    for origin in ("fp", "forced phot", "Forced Photometry", "forcedphot", "alert_fp"):
        assert phot_stats.is_forced(origin), origin
    for other in (None, "alert", "ztf", "fps"):
        assert not phot_stats.is_forced(other), other


# --- API ------------------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("backend")


@dataclass
class World:
    owner: Caller
    reader: Caller  # in `mine` only
    insider: Caller  # in `theirs` only
    admin: Caller
    obj_id: str
    instrument_id: int
    mine: int
    theirs: int


@pytest.fixture
async def world(api: ApiClient, accounts: Accounts) -> World:
    mine, theirs = await accounts.group(), await accounts.group()
    owner = await accounts.user(acls=("Upload Data",), groups=(mine, theirs))
    obj_id = await new_source(api, owner, group_ids=[mine.id, theirs.id])
    return World(
        owner,
        await accounts.user(groups=(mine,)),
        await accounts.user(groups=(theirs,)),
        await accounts.user(admin=True),
        obj_id,
        await new_instrument(api, owner, ("ztfg", "ztfr", "ztfi")),
        mine.id,
        theirs.id,
    )


def mags_body(
    w: World, points: Sequence[tuple[float, float | None, str]], **extra: Any
) -> dict[str, Any]:
    """Points as (mjd, mag or None for a limit at 21, filter)."""
    return {
        "obj_id": w.obj_id,
        "instrument_id": w.instrument_id,
        "mjd": [p[0] for p in points],
        "mag": [p[1] for p in points],
        "magerr": [None if p[1] is None else 0.05 for p in points],
        "limiting_mag": [21.0 for _ in points],
        "filter": [p[2] for p in points],
        "magsys": "ab",
        **extra,
    }


async def post_points(api: ApiClient, user: Caller, body: dict[str, Any]) -> list[int]:
    reply = await api.post("/api/photometry", user, body)
    assert reply.status == 200, reply.body
    return list(reply.data["ids"])


async def stat(api: ApiClient, w: World, user: Caller) -> dict[str, Any]:
    reply = await api.get(f"/api/sources/{w.obj_id}/phot_stat", user)
    assert reply.status == 200, reply.body
    assert reply.body["status"] == "success"
    return dict(reply.data)


async def stored(resources: Resources, obj_id: str) -> PhotStat | None:
    async with resources.sessions() as session:
        return await session.scalar(select(PhotStat).where(PhotStat.obj_id == obj_id))


VISIBLE = [(59000.0, None, "ztfr"), (59002.0, 19.0, "ztfr"), (59004.0, 18.6, "ztfg")]


async def test_the_stored_row_follows_every_insert_and_delete(
    api: ApiClient, resources: Resources, world: World
) -> None:
    w = world
    assert await stored(resources, w.obj_id) is None
    ids = await post_points(api, w.owner, mags_body(w, VISIBLE))
    row = await stored(resources, w.obj_id)
    assert row is not None
    assert (row.num_obs_global, row.num_det_global) == (3, 2)
    assert row.peak_mag_global == pytest.approx(18.6)
    assert row.num_obs_per_filter == {"ztfr": 2, "ztfg": 1}

    brighter = await post_points(api, w.owner, mags_body(w, [(59006.0, 18.1, "ztfg")]))
    row = await stored(resources, w.obj_id)
    assert row is not None
    assert (row.num_obs_global, row.peak_mag_global) == (4, pytest.approx(18.1))
    # First detection (r) is r's peak, last (g) is g's: no rise or decay to measure.
    assert row.rise_rate is None and row.decay_rate is None

    # Only the owner (or an admin) deletes; a refused delete changes nothing.
    uploader = w.owner
    not_owner = await api.delete(f"/api/photometry/{brighter[0]}", w.reader)
    assert not_owner.status == 401
    missing = await api.delete("/api/photometry/2147483000", uploader)
    assert (missing.status, missing.message) == (
        404,
        "Cannot find photometry point with ID: 2147483000",
    )
    deleted = await api.delete(f"/api/photometry/{brighter[0]}", uploader)
    assert deleted.status == 200, deleted.body
    row = await stored(resources, w.obj_id)
    assert row is not None
    assert (row.num_obs_global, row.peak_mag_global) == (3, pytest.approx(18.6))

    for point_id in ids:
        assert (await api.delete(f"/api/photometry/{point_id}", w.admin)).status == 200
    row = await stored(resources, w.obj_id)
    assert row is not None
    assert (row.num_obs_global, row.num_det_global, row.peak_mag_global) == (0, 0, None)


async def test_concurrent_uploads_to_one_source_are_all_counted(
    api: ApiClient, resources: Resources, world: World
) -> None:
    w = world
    bodies = [mags_body(w, [(59000.0 + i, 19.0 - 0.01 * i, "ztfg")] * 3) for i in range(12)]
    await asyncio.gather(*(post_points(api, w.owner, body) for body in bodies))
    row = await stored(resources, w.obj_id)
    assert row is not None
    assert (row.num_obs_global, row.num_det_global) == (36, 36)
    assert row.peak_mag_global == pytest.approx(19.0 - 0.11)


async def test_a_reader_never_learns_anything_from_points_of_other_groups(
    api: ApiClient, resources: Resources, world: World
) -> None:
    w = world
    await post_points(api, w.owner, mags_body(w, VISIBLE, group_ids=[w.mine]))
    before = await stat(api, w, w.reader)
    assert (before["num_obs_global"], before["num_det_global"]) == (3, 2)
    assert before["obj_id"] == w.obj_id

    # Points shared only with `theirs`: an earlier detection, a brighter peak, a deeper limit,
    # a later observation, forced photometry, a new filter.
    hidden = [
        (58990.0, None, "ztfg"),
        (58995.0, 19.5, "ztfg"),
        (59003.0, 17.0, "ztfr"),
        (59010.0, 17.5, "ztfi"),
        (59020.0, None, "ztfi"),
    ]
    await post_points(api, w.owner, mags_body(w, hidden, group_ids=[w.theirs], origin="alert_fp"))
    after = await stat(api, w, w.reader)
    assert after == before  # every field, timestamps included

    # The stored row and full readers see everything.
    row = await stored(resources, w.obj_id)
    assert row is not None and row.num_obs_global == 8
    full = await stat(api, w, w.owner)
    assert (full["num_obs_global"], full["peak_mag_global"]) == (8, pytest.approx(17.0))
    assert full["num_det_no_forced_phot_global"] == 2
    assert {k: full[k] for k in phot_stats.STAT_FIELDS} == phot_stats.stored_fields(row)
    assert await stat(api, w, w.admin) == full
    insider = await stat(api, w, w.insider)
    assert insider["num_obs_global"] == 5 and insider["first_detected_mjd"] == 58995.0

    # Nor through the aggregate.
    params = {
        "xField": "peak_mag_global",
        "yField": "num_obs_global",
        "zField": "last_detected_mjd",
    }
    for user, expected in ((w.reader, before), (w.owner, full)):
        reply = await api.get("/api/phot_stats/aggregate", user, params=params)
        assert reply.status == 200, reply.body
        (point,) = [p for p in reply.data["points"] if p["id"] == w.obj_id]
        assert point["x"] == pytest.approx(expected["peak_mag_global"])
        assert point["y"] == expected["num_obs_global"]
        assert point["z"] == expected["last_detected_mjd"]
        assert point["first_detected_mjd"] == expected["first_detected_mjd"]


async def test_a_source_without_photometry_has_empty_statistics(
    api: ApiClient, world: World
) -> None:
    data = await stat(api, world, world.reader)
    assert (data["num_obs_global"], data["num_det_global"]) == (0, 0)
    assert data["last_update"] is None and data["peak_mag_global"] is None
    stranger = await api.get(f"/api/sources/{world.obj_id}/phot_stat", world.admin)
    assert stranger.status == 200
    missing = await api.get("/api/sources/nope/phot_stat", world.reader)
    assert (missing.status, missing.message) == (404, "Source nope not found")


async def _spoil(resources: Resources, obj_id: str) -> None:
    async with resources.sessions.begin() as session:
        await session.execute(
            update(PhotStat)
            .where(PhotStat.obj_id == obj_id)
            .values(num_obs_global=999, peak_mag_global=None)
        )


async def test_admins_recompute_one_or_every_source(
    api: ApiClient, resources: Resources, world: World
) -> None:
    w = world
    await post_points(api, w.owner, mags_body(w, VISIBLE))
    await _spoil(resources, w.obj_id)
    for method, path in (
        ("PATCH", "/api/phot_stats"),
        ("PUT", f"/api/sources/{w.obj_id}/phot_stat"),
    ):
        refused = await api.call(method, path, w.owner)
        assert (refused.status, refused.message) == (401, "This endpoint requires a system admin")
        row = await stored(resources, w.obj_id)
        assert row is not None and row.num_obs_global == 999
        done = await api.call(method, path, w.admin)
        assert done.status == 200, done.body
        row = await stored(resources, w.obj_id)
        assert row is not None
        assert (row.num_obs_global, row.peak_mag_global) == (3, pytest.approx(18.6))
        await _spoil(resources, w.obj_id)
    whole = await api.patch("/api/phot_stats", w.admin)
    async with resources.sessions() as session:
        sources = len(list(await session.scalars(select(Obj.id))))
    assert whole.data == {"totalMatches": sources}


def test_the_command_recomputes_every_source(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def prepare() -> str:
        engine = create_engine(database_url)
        try:
            async with create_session_factory(engine).begin() as session:
                obj = Obj(id=unique("cli").replace("-", "_"), ra=1.0, dec=2.0)
                session.add(obj)
                await session.flush()
                instrument = Instrument(name=unique("cli"), filters=["ztfg"])
                session.add(instrument)
                await session.flush()
                session.add(
                    Photometry(
                        obj_id=obj.id,
                        instrument_id=instrument.id,
                        mjd=60000.0,
                        filter="ztfg",
                        flux=mag_to_flux(18.0),
                        fluxerr=mag_to_flux(18.0) / 50,
                    )
                )
                return obj.id
        finally:
            await engine.dispose()

    async def row_of(obj_id: str) -> tuple[int, float | None] | None:
        engine = create_engine(database_url)
        try:
            async with create_session_factory(engine)() as session:
                row = await session.scalar(select(PhotStat).where(PhotStat.obj_id == obj_id))
                return None if row is None else (row.num_obs_global, row.peak_mag_global)
        finally:
            await engine.dispose()

    obj_id = asyncio.run(prepare())
    assert asyncio.run(row_of(obj_id)) is None  # written behind the API's back
    monkeypatch.setenv("SKYHOOK_DATABASE_URL", database_url)
    assert cli.main(["phot-stats", "recompute"]) == 0
    assert asyncio.run(row_of(obj_id)) == (1, pytest.approx(18.0))


# --- aggregate ------------------------------------------------------------------------------


async def classify(
    api: ApiClient, user: Caller, obj_id: str, name: str, p: float, **kw: Any
) -> None:
    body = {"obj_id": obj_id, "classification": name, "probability": p, **kw}
    assert (await api.post("/api/classification", user, body)).status == 200


async def test_aggregate_filters_colours_and_truncates(
    api: ApiClient, accounts: Accounts, world: World
) -> None:
    w = world
    second = await new_source(api, w.owner, group_ids=[w.mine])
    invisible = await new_source(api, w.owner, group_ids=[w.theirs])
    for obj_id, peak in ((w.obj_id, 18.6), (second, 17.2), (invisible, 16.0)):
        body = mags_body(w, [(59000.0, peak, "ztfg"), (59003.0, peak + 0.5, "ztfg")])
        await post_points(api, w.owner, {**body, "obj_id": obj_id})
    await classify(api, w.owner, w.obj_id, "Ia", 0.9)
    await classify(api, w.owner, w.obj_id, "II", 0.4)
    await classify(api, w.owner, w.obj_id, "AGN", 0.99, ml=True)  # ML: never the colour
    await classify(api, w.owner, second, "II", 0.7)

    url = "/api/phot_stats/aggregate"
    meta = await api.get(url, w.reader)
    assert meta.status == 200
    assert meta.data["points"] == [] and meta.data["count"] == 0
    assert {"value": "rise_rate", "label": "Rise rate [mag/day]"} in meta.data["fields"]
    assert len(meta.data["fields"]) == 15

    xy = {"xField": "peak_mag_global", "yField": "decay_rate"}
    reply = await api.get(url, w.reader, params=xy)
    assert reply.status == 200, reply.body
    by_id = {p["id"]: p for p in reply.data["points"]}
    assert invisible not in by_id
    assert by_id[w.obj_id]["classification"] == "Ia"
    assert by_id[second]["classification"] == "II"
    assert by_id[second]["x"] == pytest.approx(17.2)
    assert by_id[second]["y"] == pytest.approx(0.5 / 3)
    assert "z" not in by_id[second]
    assert (by_id[second]["ra"], by_id[second]["dec"]) == (10.5, -5.25)

    chosen = await api.get(url, w.reader, params={**xy, "classifications": "II"})
    assert {p["id"] for p in chosen.data["points"]} & {w.obj_id, second} == {w.obj_id, second}
    strict = {**xy, "classifications": "II", "classificationProbThreshold": "0.5"}
    chosen = await api.get(url, w.reader, params=strict)
    assert second in {p["id"] for p in chosen.data["points"]}
    assert w.obj_id not in {p["id"] for p in chosen.data["points"]}
    named = await api.get(url, w.reader, params={**xy, "obj_ids": f"{second},{invisible}"})
    assert [p["id"] for p in named.data["points"]] == [second]
    grouped = await api.get(url, w.insider, params={**xy, "group_id": str(w.theirs)})
    assert {p["id"] for p in grouped.data["points"]} >= {invisible, w.obj_id}
    assert second not in {p["id"] for p in grouped.data["points"]}

    one = await api.get(
        url, w.reader, params={**xy, "obj_ids": f"{w.obj_id},{second}", "maxMatches": "1"}
    )
    assert (one.data["count"], one.data["truncated"]) == (1, True)
    assert [p["id"] for p in one.data["points"]] == [min(w.obj_id, second)]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"xField": "id", "yField": "num_det_global"}, "Invalid xField: id"),
        ({"xField": "num_det_global", "yField": "mean_color"}, "Invalid yField: mean_color"),
        (
            {"xField": "rise_rate", "yField": "decay_rate", "zField": "obj_id"},
            "Invalid zField: obj_id",
        ),
        (
            {"xField": "rise_rate", "yField": "decay_rate", "maxMatches": "many"},
            "maxMatches must be an integer",
        ),
        (
            {"xField": "rise_rate", "yField": "decay_rate", "maxMatches": "0"},
            "maxMatches must be at least 1",
        ),
        (
            {"xField": "rise_rate", "yField": "decay_rate", "classificationProbThreshold": "x"},
            "classificationProbThreshold must be a number",
        ),
        (
            {"xField": "rise_rate", "yField": "decay_rate", "classificationProbThreshold": "2"},
            "classificationProbThreshold must be between 0 and 1",
        ),
        ({"xField": "rise_rate", "yField": "decay_rate", "group_id": "x"}, "Invalid group_id: x"),
    ],
)
async def test_aggregate_refuses_bad_parameters(
    api: ApiClient, world: World, params: dict[str, str], message: str
) -> None:
    reply = await api.get("/api/phot_stats/aggregate", world.reader, params=params)
    assert (reply.status, reply.message) == (400, message)


async def test_aggregate_refuses_a_group_the_caller_is_not_in(api: ApiClient, world: World) -> None:
    params = {"xField": "rise_rate", "yField": "decay_rate", "group_id": str(world.theirs)}
    reply = await api.get("/api/phot_stats/aggregate", world.reader, params=params)
    assert (reply.status, reply.message) == (400, f"Invalid group_id: {world.theirs}")


# --- the sources list's filters -------------------------------------------------------------


async def listed(api: ApiClient, user: Caller, **params: str) -> set[str]:
    reply = await api.get("/api/sources", user, params=params)
    assert reply.status == 200, reply.body
    assert reply.data["totalMatches"] == len(reply.data["sources"])
    return {s["id"] for s in reply.data["sources"]}


async def test_the_sources_list_filters_on_the_statistics_the_caller_may_know(
    api: ApiClient, world: World
) -> None:
    w = world
    bright = await new_source(api, w.owner, group_ids=[w.mine])
    faint = await new_source(api, w.owner, group_ids=[w.mine])
    mixed = w.obj_id  # shared with both groups
    for obj_id, points, extra in (
        (bright, [(59000.0 + i, 17.5 + 0.1 * i, "ztfg") for i in range(3)], {}),
        (bright, [(59010.0, 18.0, "ztfr"), (59011.0, 18.1, "ztfr")], {"origin": "fp"}),
        (faint, [(58990.0, 19.0, "ztfg"), (58991.0, 19.1, "ztfg")], {}),
        (mixed, [(59005.0, 19.5, "ztfr")], {"group_ids": [w.mine]}),
        (mixed, [(59001.0 + i, 16.0, "ztfg") for i in range(10)], {"group_ids": [w.theirs]}),
    ):
        await post_points(api, w.owner, {**mags_body(w, points, **extra), "obj_id": obj_id})

    assert await listed(api, w.reader) == {bright, faint, mixed}
    # `mixed` has 11 detections, a 16.0 peak: none of it the reader's to know.
    assert await listed(api, w.reader, numberDetections="3") == {bright}
    assert await listed(api, w.owner, numberDetections="3") == {bright, mixed}
    assert await listed(api, w.reader, maxPeakMagnitude="18") == {bright}
    assert await listed(api, w.owner, maxPeakMagnitude="18") == {bright, mixed}
    assert await listed(api, w.reader, minPeakMagnitude="19.2") == {mixed}
    assert await listed(api, w.owner, minPeakMagnitude="19.2") == set()
    assert await listed(api, w.reader, firstDetectionAfter="2020-05-30") == {bright, mixed}
    assert await listed(api, w.reader, lastDetectionBefore="2020-05-22T00:00:00") == {faint}
    # Latest magnitudes: bright 18.1 (forced photometry; 17.7 without it), faint 19.1, mixed 19.5.
    assert await listed(api, w.reader, minLatestMagnitude="18.05") == {bright, faint, mixed}
    assert await listed(api, w.reader, minLatestMagnitude="18.2") == {faint, mixed}
    assert await listed(api, w.reader, numberDetections="4") == {bright}
    no_fp = {"numberDetections": "4", "excludeForcedPhotometry": "true"}
    assert await listed(api, w.reader, **no_fp) == set()
    assert await listed(api, w.reader, maxLatestMagnitude="17.8", excludeForcedPhotometry="1") == {
        bright
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"numberDetections": "x"}, "Invalid numberDetections: 'x' is not an integer"),
        ({"numberDetections": "-1"}, "Invalid numberDetections: must be between 0 and 2147483647"),
        (
            {"firstDetectionAfter": "yesterday"},
            "Invalid firstDetectionAfter: yesterday (an ISO 8601 date or time)",
        ),
        ({"minPeakMagnitude": "bright"}, "Invalid minPeakMagnitude: 'bright' is not a number"),
        ({"maxLatestMagnitude": "inf"}, "Invalid maxLatestMagnitude: must be finite"),
    ],
)
async def test_the_sources_list_refuses_bad_filters(
    api: ApiClient, world: World, params: dict[str, str], message: str
) -> None:
    reply = await api.get("/api/sources", world.reader, params=params)
    assert (reply.status, reply.message) == (400, message)
