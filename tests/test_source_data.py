"""Photometry, spectra, comments, classifications and annotations through the API."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest

from shared.runtime.resources import Resources
from shared.science import photometry as units
from tests.support.api import Accounts, ApiClient
from tests.support.api import TestUser as Caller
from tests.test_sources import new_instrument, new_source, table_counts

pytestmark = pytest.mark.usefixtures("backend")


@dataclass
class Setup:
    user: Caller
    obj_id: str
    instrument_id: int
    group_id: int


@pytest.fixture
async def setup(api: ApiClient, accounts: Accounts) -> Setup:
    group = await accounts.group()
    user = await accounts.user(acls=("Upload Data",), groups=(group,))
    obj_id = await new_source(api, user)
    return Setup(user, obj_id, await new_instrument(api, user), group.id)


def flux_body(s: Setup, **changes: Any) -> dict[str, Any]:
    body = {
        "obj_id": s.obj_id,
        "instrument_id": s.instrument_id,
        "mjd": [59000.0, 59001.0],
        "filter": ["ztfg", "ztfr"],
        "flux": [100.0, None],
        "fluxerr": [2.0, 2.0],
        "zp": 25.0,
        "magsys": "ab",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def mag_body(s: Setup, **changes: Any) -> dict[str, Any]:
    body = {
        "obj_id": s.obj_id,
        "instrument_id": s.instrument_id,
        "mjd": [59000.0, 59002.0],
        "filter": "ztfg",
        "mag": [20.0, None],
        "magerr": [0.1, None],
        "limiting_mag": [21.0, 21.5],
        "magsys": "ab",
        "origin": "fp",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


async def phot(api: ApiClient, s: Setup, **params: str) -> dict[str, Any]:
    reply = await api.get(f"/api/sources/{s.obj_id}/photometry", s.user, params=params)
    assert reply.status == 200, reply.body
    return dict(reply.data)


def test_unit_conversions() -> None:
    assert units.mag_to_flux(23.9) == pytest.approx(1.0)
    assert units.flux_to_mag(units.mag_to_flux(18.25)) == pytest.approx(18.25)
    assert units.flux_to_standard(100.0, 25.0) == pytest.approx(100 * 10 ** (-0.44))
    assert units.magerr_to_fluxerr(20.0, 0.1) == pytest.approx(
        units.mag_to_flux(20.0) * 0.1 * math.log(10) / 2.5
    )
    assert units.fluxerr_to_magerr(50.0, 5.0) == pytest.approx(2.5 / math.log(10) * 0.1)
    assert units.fluxerr_to_limit(units.limit_to_fluxerr(21.3)) == pytest.approx(21.3)
    assert units.fluxerr_to_limit(2.0) == pytest.approx(23.9 - 2.5)
    assert units.flux_to_mag(None) is None and units.flux_to_mag(-3.0) is None
    assert units.fluxerr_to_limit(0.0) is None
    with pytest.raises(units.PhotometryValueError):
        units.mag_to_flux(-2000.0)


async def test_flux_upload_converts_zero_point_and_keeps_non_detections(
    api: ApiClient, setup: Setup
) -> None:
    posted = await api.post("/api/photometry", setup.user, flux_body(setup))
    assert posted.status == 200, posted.body
    assert len(posted.data["ids"]) == 2
    data = await phot(api, setup)
    detection, limit = data["photometry"]
    assert detection["id"] == posted.data["ids"][0]
    # 100 counts at zp 25 is magnitude 20, i.e. 10**(0.4 * 3.9) µJy at zp 23.9.
    assert detection["flux"] == pytest.approx(10 ** (0.4 * 3.9))
    assert detection["mag"] == pytest.approx(20.0)
    assert detection["magerr"] == pytest.approx(2.5 / math.log(10) * 2.0 / 100.0)
    assert detection["fluxerr"] == pytest.approx(2.0 * 10 ** (-0.44))
    assert (detection["zp"], detection["magsys"], detection["filter"]) == (23.9, "ab", "ztfg")
    assert detection["instrument_id"] == setup.instrument_id
    assert detection["instrument_name"].startswith("ZTF")
    assert detection["groups"] == [{"id": setup.group_id, "name": detection["groups"][0]["name"]}]
    assert detection["owner_id"] == setup.user.id and detection["obj_id"] == setup.obj_id
    # A non-detection: no flux; its 5-sigma limit is 25 - 2.5 log10(5 * 2) = 22.5.
    assert (limit["flux"], limit["mag"], limit["magerr"]) == (None, None, None)
    assert limit["limiting_mag"] == pytest.approx(22.5)
    assert limit["filter"] == "ztfr"


async def test_mag_upload_converts_to_flux_and_keeps_the_given_limit(
    api: ApiClient, setup: Setup
) -> None:
    posted = await api.post("/api/photometry", setup.user, mag_body(setup))
    assert posted.status == 200, posted.body
    detection, limit = (await phot(api, setup))["photometry"]
    assert detection["flux"] == pytest.approx(10 ** (-0.4 * (20.0 - 23.9)))
    assert detection["fluxerr"] == pytest.approx(detection["flux"] * 0.1 * math.log(10) / 2.5)
    assert (detection["mag"], detection["magerr"]) == (pytest.approx(20.0), pytest.approx(0.1))
    assert detection["limiting_mag"] == 21.0
    assert detection["origin"] == "fp"
    assert limit["flux"] is None and limit["mag"] is None
    assert limit["limiting_mag"] == 21.5
    assert limit["fluxerr"] == pytest.approx(10 ** (-0.4 * (21.5 - 23.9)) / 5)


async def test_photometry_scalars_broadcast_and_pages_follow_mjd(
    api: ApiClient, setup: Setup
) -> None:
    mjds = [59004.0, 59000.0, 59003.0, 59001.0, 59002.0]
    body = flux_body(setup, mjd=mjds, filter="ztfg", flux=12.0, fluxerr=1.0, zp=23.9)
    posted = await api.post("/api/photometry", setup.user, body)
    assert posted.status == 200 and len(posted.data["ids"]) == 5, posted.body
    first = await phot(api, setup, numPerPage="2")
    assert (first["totalMatches"], first["numPerPage"], first["pageNumber"]) == (5, 2, 1)
    pages = [first["photometry"]]
    for number in ("2", "3"):
        pages.append((await phot(api, setup, numPerPage="2", pageNumber=number))["photometry"])
    assert [p["mjd"] for page in pages for p in page] == sorted(mjds)
    assert all(p["flux"] == 12.0 and p["filter"] == "ztfg" for page in pages for p in page)
    single = await api.post(
        "/api/photometry",
        setup.user,
        flux_body(setup, mjd=1.0, filter="ztfg", flux=3.0, fluxerr=1.0),
    )
    assert single.status == 200 and len(single.data["ids"]) == 1


BAD_FLUX_CASES: list[tuple[dict[str, Any], str]] = [
    ({"mjd": ...}, "Missing required field: mjd"),
    ({"filter": ...}, "Missing required field: filter"),
    ({"magsys": ...}, "Missing required field: magsys"),
    ({"zp": ...}, "Missing required field: zp"),
    ({"obj_id": ...}, "Missing required field: obj_id"),
    ({"flux": ..., "fluxerr": ..., "zp": ...}, "Missing photometry"),
    ({"mag": 19.0, "magerr": 0.1}, "not both"),
    ({"mjd": [1.0, 2.0, 3.0]}, "same length"),
    ({"mjd": [], "filter": [], "flux": [], "fluxerr": []}, "No photometry points"),
    ({"magsys": "vega"}, "only 'ab'"),
    ({"filter": ["ztfg", "sdssu"]}, "'sdssu'"),
    ({"mjd": ["59000", 59001.0]}, "Invalid mjd[0]"),
    ({"mjd": [59000.0, None]}, "mjd[1]"),
    ({"flux": [True, None]}, "Invalid flux[0]"),
    ({"fluxerr": [-1.0, 2.0]}, "Invalid fluxerr[0]"),
    ({"fluxerr": [1.0, 0.0]}, "Invalid fluxerr[1]"),
    ({"fluxerr": [1.0, None]}, "fluxerr[1]"),
    ({"flux": [1e300, None], "zp": -300.0}, "out of range"),
    ({"filter": 7}, "Invalid filter[0]"),
    ({"origin": ["a", 5]}, "Invalid origin[1]"),
    ({"mjd": [10**400, 1.0]}, "Invalid mjd[0]: out of range"),
    ({"origin": ["a", "b\u0000"]}, "Invalid origin[1]"),
    ({"instrument_id": "1"}, "Invalid instrument_id"),
    ({"instrument_id": 2**31 - 2}, "Invalid instrument ID"),
    ({"group_ids": []}, "at least one group"),
    ({"group_ids": [2**31 - 2]}, "Cannot find one or more groups"),
    ({"group_ids": "all"}, "Invalid group_ids"),
]
BAD_MAG_CASES: list[tuple[dict[str, Any], str]] = [
    ({"magerr": [0.1, 0.2]}, "mag and magerr must both be null"),
    ({"mag": [20.0, 21.0], "magerr": [None, 0.1]}, "mag and magerr must both be null"),
    ({"limiting_mag": [21.0, None]}, "needs limiting_mag"),
    ({"limiting_mag": ...}, "needs limiting_mag"),
    ({"magerr": ...}, "Missing required field: magerr"),
    ({"mag": [-5000.0, None], "magerr": [0.1, None]}, "out of range"),
    ({"magerr": [-0.1, None]}, "Invalid magerr[0]"),
    ({"limiting_mag": [21.0, 10**400]}, "Invalid limiting_mag[1]"),
    ({"mag": ["bright", None]}, "Invalid mag[0]"),
]


async def test_bad_photometry_is_refused_and_writes_nothing(
    api: ApiClient, setup: Setup, resources: Resources
) -> None:
    before = await table_counts(resources)
    cases = [(flux_body(setup, **c), f) for c, f in BAD_FLUX_CASES] + [
        (mag_body(setup, **c), f) for c, f in BAD_MAG_CASES
    ]
    for body, fragment in cases:
        reply = await api.post("/api/photometry", setup.user, body)
        assert reply.status == 400 and fragment in reply.message, (body, reply.body)
    assert await table_counts(resources) == before


async def test_photometry_refuses_bad_json_and_unknown_sources(
    api: ApiClient, setup: Setup, resources: Resources
) -> None:
    before = await table_counts(resources)
    for raw in (b"[1, 2]", b'{"mjd": Infinity}', b"{nope"):
        reply = await api.post(
            "/api/photometry", setup.user, data=raw, headers={"Content-Type": "application/json"}
        )
        assert reply.status == 400 and "JSON" in reply.message, reply.body
    unknown = await api.post("/api/photometry", setup.user, flux_body(setup, obj_id="no_such"))
    assert (unknown.status, unknown.message) == (404, "Source no_such not found")
    assert await table_counts(resources) == before


async def test_spectrum_round_trip(api: ApiClient, setup: Setup) -> None:
    body = {
        "obj_id": setup.obj_id,
        "instrument_id": setup.instrument_id,
        "observed_at": "2021-03-04T05:06:07",
        "wavelengths": [4000.0, 5000, 6000.5],
        "fluxes": [1e-17, 2e-17, 1.5e-17],
        "errors": [1e-18, 1e-18, 2e-18],
        "units": "erg/s/cm/cm/AA",
        "origin": "SEDM",
        "type": "host",
        "altdata": {"exptime": 300},
    }
    posted = await api.post("/api/spectrum", setup.user, body)
    assert posted.status == 200, posted.body
    reply = await api.get(f"/api/sources/{setup.obj_id}/spectra", setup.user)
    assert reply.status == 200, reply.body
    assert reply.data["obj_id"] == setup.obj_id and reply.data["totalMatches"] == 1
    (spectrum,) = reply.data["spectra"]
    assert spectrum["id"] == posted.data["id"]
    assert spectrum["observed_at"] == "2021-03-04T05:06:07+00:00"
    assert spectrum["wavelengths"] == [4000.0, 5000.0, 6000.5]
    assert spectrum["fluxes"] == body["fluxes"] and spectrum["errors"] == body["errors"]
    assert (spectrum["units"], spectrum["origin"], spectrum["type"]) == (
        "erg/s/cm/cm/AA",
        "SEDM",
        "host",
    )
    assert spectrum["altdata"] == {"exptime": 300}
    assert spectrum["instrument_id"] == setup.instrument_id
    minimal = {k: body[k] for k in ("obj_id", "instrument_id", "wavelengths", "fluxes")}
    offset = await api.post(
        "/api/spectrum", setup.user, {**minimal, "observed_at": "2021-03-05T01:00:00+02:00"}
    )
    assert offset.status == 200, offset.body
    later = (await api.get(f"/api/sources/{setup.obj_id}/spectra", setup.user)).data["spectra"][1]
    assert later["observed_at"] == "2021-03-04T23:00:00+00:00"
    assert (later["errors"], later["type"]) == (None, "source")


def spectrum_body(s: Setup, **changes: Any) -> dict[str, Any]:
    body = {
        "obj_id": s.obj_id,
        "instrument_id": s.instrument_id,
        "observed_at": "2021-03-04T05:06:07Z",
        "wavelengths": [4000.0, 5000.0],
        "fluxes": [1.0, 2.0],
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


BAD_SPECTRUM_CASES: list[tuple[dict[str, Any], int, str]] = [
    ({"observed_at": ...}, 400, "Missing required field: observed_at"),
    ({"observed_at": "yesterday"}, 400, "Invalid observed_at"),
    ({"observed_at": 1614834367}, 400, "Invalid observed_at"),
    ({"wavelengths": []}, 400, "Invalid wavelengths"),
    ({"wavelengths": "4000"}, 400, "Invalid wavelengths"),
    ({"fluxes": [1.0]}, 400, "same length"),
    ({"fluxes": [1.0, "2"]}, 400, "Invalid fluxes[1]"),
    ({"fluxes": [1.0, None]}, 400, "Invalid fluxes[1]"),
    ({"errors": [1.0]}, 400, "same length"),
    ({"type": "galaxy"}, 400, "Invalid type"),
    ({"altdata": [1]}, 400, "Invalid altdata"),
    ({"fluxes": [1.0, -(10**400)]}, 400, "Invalid fluxes[1]: out of range"),
    ({"altdata": {"\u0000": 1}}, 400, "Invalid altdata"),
    ({"units": 3}, 400, "Invalid units"),
    ({"instrument_id": ...}, 400, "Missing required field: instrument_id"),
    ({"instrument_id": 2**31 - 3}, 400, "Invalid instrument ID"),
    ({"obj_id": ...}, 400, "Missing required field: obj_id"),
    ({"obj_id": "not_a_source"}, 404, "Source not_a_source not found"),
    ({"group_ids": [0]}, 400, "Cannot find one or more groups"),
]


async def test_bad_spectra_are_refused_and_write_nothing(
    api: ApiClient, setup: Setup, resources: Resources
) -> None:
    before = await table_counts(resources)
    for changes, status, fragment in BAD_SPECTRUM_CASES:
        reply = await api.post("/api/spectrum", setup.user, spectrum_body(setup, **changes))
        assert reply.status == status and fragment in reply.message, (changes, reply.body)
    assert await table_counts(resources) == before


async def test_comments_in_both_forms(api: ApiClient, setup: Setup) -> None:
    first = await api.post(f"/api/sources/{setup.obj_id}/comments", setup.user, {"text": "Ia?"})
    assert first.status == 200, first.body
    second = await api.post(
        "/api/comment",
        setup.user,
        {"obj_id": setup.obj_id, "text": "Yes, Ia.", "group_ids": [setup.group_id]},
    )
    assert second.status == 200, second.body
    reply = await api.get(f"/api/sources/{setup.obj_id}/comments", setup.user)
    assert reply.status == 200
    assert [c["text"] for c in reply.data] == ["Ia?", "Yes, Ia."]
    assert [c["id"] for c in reply.data] == [first.data["comment_id"], second.data["comment_id"]]
    assert reply.data[0]["author"] == setup.user.username
    assert reply.data[0]["author_id"] == setup.user.id


async def test_classifications_round_trip(api: ApiClient, setup: Setup) -> None:
    body = {
        "obj_id": setup.obj_id,
        "classification": "SN Ia",
        "probability": 0.8,
        "taxonomy": "sitewide",
        "ml": True,
    }
    posted = await api.post("/api/classification", setup.user, body)
    assert posted.status == 200, posted.body
    bare = await api.post(
        "/api/classification", setup.user, {"obj_id": setup.obj_id, "classification": "AGN"}
    )
    assert bare.status == 200, bare.body
    reply = await api.get(f"/api/sources/{setup.obj_id}/classifications", setup.user)
    first, second = reply.data
    assert first["id"] == posted.data["classification_id"]
    assert (first["classification"], first["probability"], first["taxonomy"], first["ml"]) == (
        "SN Ia",
        0.8,
        "sitewide",
        True,
    )
    assert (second["classification"], second["probability"], second["ml"]) == ("AGN", None, False)


async def test_annotations_one_per_origin(
    api: ApiClient, setup: Setup, resources: Resources
) -> None:
    path = f"/api/sources/{setup.obj_id}/annotations"
    posted = await api.post(path, setup.user, {"origin": "fitter", "data": {"z": 0.05}})
    assert posted.status == 200, posted.body
    before = await table_counts(resources)
    again = await api.post(path, setup.user, {"origin": "fitter", "data": {"z": 0.06}})
    assert again.status == 400 and "already exists" in again.message
    assert await table_counts(resources) == before
    other = await api.post(path, setup.user, {"origin": "other", "data": {}})
    assert other.status == 200
    reply = await api.get(path, setup.user)
    assert [(a["origin"], a["data"]) for a in reply.data] == [
        ("fitter", {"z": 0.05}),
        ("other", {}),
    ]
    assert reply.data[0]["id"] == posted.data["annotation_id"]


def _note_cases() -> list[tuple[str, str, dict[str, Any], int, str]]:
    comments, annotations = "/api/sources/{obj}/comments", "/api/sources/{obj}/annotations"
    return [
        ("POST", comments, {}, 400, "Missing required field: text"),
        ("POST", comments, {"text": ""}, 400, "Invalid text"),
        ("POST", comments, {"text": 12}, 400, "Invalid text"),
        ("POST", comments, {"text": "nul\u0000byte"}, 400, "NUL"),
        ("POST", comments, {"text": "x" * 70_000}, 400, "at most"),
        ("POST", comments, {"text": "hi", "group_ids": [1.5]}, 400, "Invalid group_ids"),
        ("POST", "/api/comment", {"text": "hi"}, 400, "Missing required field: obj_id"),
        ("POST", "/api/comment", {"text": "hi", "obj_id": "zz_none"}, 404, "Source zz_none"),
        ("POST", "/api/comment", {"text": "hi", "obj_id": 5}, 400, "Invalid obj_id"),
        ("POST", "/api/classification", {"obj_id": "{obj}"}, 400, "classification"),
        (
            "POST",
            "/api/classification",
            {"obj_id": "{obj}", "classification": "Ia", "probability": 1.5},
            400,
            "Invalid probability",
        ),
        (
            "POST",
            "/api/classification",
            {"obj_id": "{obj}", "classification": "Ia", "probability": "high"},
            400,
            "Invalid probability",
        ),
        (
            "POST",
            "/api/classification",
            {"obj_id": "{obj}", "classification": "Ia", "ml": "yes"},
            400,
            "Invalid ml",
        ),
        ("POST", "/api/classification", {"classification": "Ia"}, 400, "obj_id"),
        ("POST", annotations, {"data": {"a": 1}}, 400, "Missing required field: origin"),
        ("POST", annotations, {"origin": "x"}, 400, "Missing required field: data"),
        ("POST", annotations, {"origin": "x", "data": [1]}, 400, "Invalid data"),
        ("POST", annotations, {"origin": "x", "data": "{}"}, 400, "Invalid data"),
        ("POST", annotations, {"origin": "x", "data": {"k": ["\u0000"]}}, 400, "NUL"),
        ("POST", "/api/sources/zz_none/annotations", {"origin": "x", "data": {}}, 404, "zz_none"),
    ]


async def test_bad_comments_classifications_annotations_are_refused(
    api: ApiClient, setup: Setup, resources: Resources
) -> None:
    before = await table_counts(resources)
    for method, path, body, status, fragment in _note_cases():
        filled = {k: (setup.obj_id if v == "{obj}" else v) for k, v in body.items()}
        reply = await api.call(method, path.format(obj=setup.obj_id), setup.user, filled)
        assert reply.status == status and fragment in reply.message, (path, body, reply.body)
    assert await table_counts(resources) == before


async def test_every_post_refuses_malformed_json(
    api: ApiClient, setup: Setup, resources: Resources
) -> None:
    paths = [
        "/api/instrument",
        "/api/sources",
        "/api/photometry",
        "/api/spectrum",
        "/api/comment",
        "/api/classification",
        f"/api/sources/{setup.obj_id}/comments",
        f"/api/sources/{setup.obj_id}/annotations",
    ]
    before = await table_counts(resources)
    for path in paths:
        for raw in (b'{"text": ', b'"just a string"', b""):
            reply = await api.post(
                path, setup.user, data=raw, headers={"Content-Type": "application/json"}
            )
            assert reply.status == 400 and "JSON" in reply.message, (path, raw, reply.body)
    assert await table_counts(resources) == before
