"""Inputs sent to services: SkyPortal's columns, only what the author may read, filters, dedup."""

from __future__ import annotations

import ast
import csv
import io
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from dispatcher.inputs import (
    ANNOTATIONS_COLUMNS,
    CLASSIFICATIONS_COLUMNS,
    COMMENTS_COLUMNS,
    PHOTOMETRY_COLUMNS,
    REDSHIFT_COLUMNS,
    SPECTRA_COLUMNS,
    InputsError,
    InputsRequest,
    assemble_inputs_many,
    records_to_csv,
)
from shared.db.models import Group, User
from shared.domain.access import Principal, principal_for
from shared.runtime.resources import Resources
from tests.support.api import Accounts
from tests.support.pipeline import (
    add_annotation,
    add_classification,
    add_comment,
    add_photometry,
    add_spectrum,
    make_instrument,
    make_obj,
)

pytestmark = pytest.mark.usefixtures("backend")

ALL_TYPES = ["photometry", "spectra", "redshift", "comments", "classifications", "annotations"]


async def principal_of(resources: Resources, user_id: int) -> Principal:
    async with resources.sessions() as session:
        user = await session.scalar(
            select(User).options(selectinload(User.memberships)).where(User.id == user_id)
        )
        assert user is not None
        return principal_for(user)


def rows_of(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    return header, [dict(zip(header, row, strict=True)) for row in reader]


async def author_and_groups(
    resources: Resources, accounts: Accounts
) -> tuple[Principal, Group, Group]:
    mine, other = await accounts.group(), await accounts.group()
    user = await accounts.user(groups=(mine,))
    return await principal_of(resources, user.id), mine, other


async def inputs_for(
    resources: Resources,
    obj_id: str,
    who: Principal,
    types: list[str],
    filters: dict[str, Any] | None = None,
    fmt: str = "csv",
) -> dict[str, Any]:
    request = InputsRequest(obj_id, who, tuple(types), filters, fmt)
    async with resources.sessions() as session:
        (assembled,) = await assemble_inputs_many(session, [request])
    if isinstance(assembled, InputsError):
        raise assembled
    return assembled


async def test_photometry_csv_has_skyportal_columns_and_only_points_the_author_may_read(
    resources: Resources, accounts: Accounts
) -> None:
    author, mine, other = await author_and_groups(resources, accounts)
    obj_id = await make_obj(resources, [mine, other])
    instrument = await make_instrument(resources, name=f"ZTF-{obj_id}")
    await add_photometry(resources, obj_id, instrument, [mine], mjd=59000.5, flux=100.0, fluxerr=5)
    await add_photometry(resources, obj_id, instrument, [mine], mjd=59001.0, flux=None, fluxerr=2)
    await add_photometry(resources, obj_id, instrument, [other], mjd=59002.0, flux=7.0, fluxerr=1)

    inputs = await inputs_for(resources, obj_id, author, ["photometry"])

    assert set(inputs) == {"photometry"}
    header, rows = rows_of(inputs["photometry"])
    assert header == list(PHOTOMETRY_COLUMNS)
    assert [r["mjd"] for r in rows] == ["59000.5", "59001.0"]  # not the other group's point
    detection, limit = rows
    assert float(detection["flux"]) == 100.0 and float(detection["fluxerr"]) == 5.0
    assert float(detection["mag"]) == pytest.approx(-2.5 * math.log10(100.0) + 23.9)
    assert float(detection["magerr"]) == pytest.approx(2.5 / math.log(10) * 5.0 / 100.0)
    assert detection["filter"] == "ztfg" and detection["magsys"] == "ab"
    assert float(detection["zp"]) == 23.9
    assert detection["instrument_name"] == f"ZTF-{obj_id}"
    assert detection["predicted_mag"] == ""
    assert limit["flux"] == "" and limit["mag"] == "" and limit["magerr"] == ""
    assert float(limit["limiting_mag"]) == pytest.approx(-2.5 * math.log10(5 * 2.0) + 23.9)


async def test_many_requests_are_assembled_together_each_with_its_own_sources_data(
    resources: Resources, accounts: Accounts
) -> None:
    """Requests that read the same way share their queries, yet each gets its own source's
    points as its own reader may see them; an unreadable source fails only its request."""
    author, mine, other = await author_and_groups(resources, accounts)
    outsider = await principal_of(resources, (await accounts.user(groups=(other,))).id)
    first, second = await make_obj(resources, [mine, other]), await make_obj(resources, [mine])
    hidden = await make_obj(resources, [other])
    instrument = await make_instrument(resources, name=f"ZTF-{first}")
    await add_photometry(resources, first, instrument, [mine], mjd=59000.5)
    await add_photometry(resources, first, instrument, [other], mjd=59003.0)
    await add_photometry(resources, second, instrument, [mine], mjd=59001.5)
    await add_photometry(resources, second, instrument, [mine], mjd=59002.5)
    requests = [
        InputsRequest(first, author, ("photometry",)),
        InputsRequest(hidden, author, ("photometry",)),
        InputsRequest(second, author, ("photometry", "redshift")),
        InputsRequest(first, outsider, ("photometry",)),
        InputsRequest(second, author, ("photometry",), inputs_format="json"),
    ]
    async with resources.sessions() as session:
        assembled = await assemble_inputs_many(session, requests)

    def mjds(found: Any) -> list[str]:
        return [r["mjd"] for r in rows_of(found["photometry"])[1]]

    assert mjds(assembled[0]) == ["59000.5"]
    assert isinstance(assembled[1], InputsError) and hidden in str(assembled[1])
    assert isinstance(assembled[2], dict) and isinstance(assembled[4], dict)
    assert mjds(assembled[2]) == ["59001.5", "59002.5"] and "redshift" in assembled[2]
    assert mjds(assembled[3]) == ["59003.0"]
    assert [r["mjd"] for r in assembled[4]["photometry"]] == [59001.5, 59002.5]


async def test_no_visible_photometry_gives_the_header_only(
    resources: Resources, accounts: Accounts
) -> None:
    author, mine, other = await author_and_groups(resources, accounts)
    obj_id = await make_obj(resources, [mine])
    instrument = await make_instrument(resources)
    await add_photometry(resources, obj_id, instrument, [other])

    inputs = await inputs_for(resources, obj_id, author, ["photometry"])

    assert inputs["photometry"] == ",".join(PHOTOMETRY_COLUMNS) + "\n"


async def test_input_filters_keep_only_chosen_filters_and_instruments(
    resources: Resources, accounts: Accounts
) -> None:
    author, mine, _ = await author_and_groups(resources, accounts)
    obj_id = await make_obj(resources, [mine])
    first, second = await make_instrument(resources), await make_instrument(resources)
    await add_photometry(resources, obj_id, first, [mine], mjd=1.0, filter="ztfg")
    await add_photometry(resources, obj_id, first, [mine], mjd=2.0, filter="ztfr")
    await add_photometry(resources, obj_id, second, [mine], mjd=3.0, filter="ztfr")
    await add_photometry(resources, obj_id, second, [mine], mjd=4.0, filter="ztfg")

    by_filter = {"photometry": {"filters": [" ztfr "]}}
    both = {"photometry": {"filters": ["ztfr"], "instruments": [str(second)]}}
    by_instrument = {"photometry": {"instruments": [first]}}
    mjds = {}
    for name, chosen in (("filter", by_filter), ("both", both), ("instrument", by_instrument)):
        _, rows = rows_of(
            (await inputs_for(resources, obj_id, author, ["photometry"], chosen))["photometry"]
        )
        mjds[name] = [float(r["mjd"]) for r in rows]

    assert mjds == {"filter": [2.0, 3.0], "both": [3.0], "instrument": [1.0, 2.0]}


async def test_dedup_per_mjd_filter_and_instrument_keeps_the_smallest_error(
    resources: Resources, accounts: Accounts
) -> None:
    author, mine, _ = await author_and_groups(resources, accounts)
    obj_id = await make_obj(resources, [mine])
    first, second = await make_instrument(resources), await make_instrument(resources)
    await add_photometry(resources, obj_id, first, [mine], mjd=10.0, flux=100.0, fluxerr=8.0)
    await add_photometry(resources, obj_id, first, [mine], mjd=10.0, flux=101.0, fluxerr=2.0)
    await add_photometry(resources, obj_id, first, [mine], mjd=10.0, flux=None, fluxerr=0.5)
    # Same time and filter on another instrument: a different measurement, kept (SkyPortal
    # merged it away).
    await add_photometry(resources, obj_id, second, [mine], mjd=10.0, flux=90.0, fluxerr=9.0)
    await add_photometry(resources, obj_id, first, [mine], mjd=10.0, filter="ztfr", fluxerr=3.0)

    _, rows = rows_of((await inputs_for(resources, obj_id, author, ["photometry"]))["photometry"])

    kept = sorted((r["filter"], float(r["flux"]), float(r["fluxerr"])) for r in rows)
    assert kept == [("ztfg", 90.0, 9.0), ("ztfg", 101.0, 2.0), ("ztfr", 100.0, 3.0)]


async def test_other_types_have_their_columns_and_nested_values_parse(
    resources: Resources, accounts: Accounts
) -> None:
    author, mine, other = await author_and_groups(resources, accounts)
    obj_id = await make_obj(
        resources, [mine], redshift=0.042, redshift_error=0.001, redshift_origin="host spec"
    )
    instrument = await make_instrument(resources)
    await add_spectrum(
        resources, obj_id, instrument, [mine], altdata={"exposure": 300, "note": None}, units="fλ"
    )
    await add_spectrum(resources, obj_id, instrument, [other])
    base = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    await add_comment(resources, obj_id, [mine], text="older, with, commas", created_at=base)
    await add_comment(
        resources, obj_id, [mine], text='newer "quoted"', bot=True, created_at=base + timedelta(1)
    )
    await add_comment(resources, obj_id, [other], text="not for the author")
    await add_classification(resources, obj_id, [mine], classification="SN Ia", probability=0.8)
    await add_annotation(resources, obj_id, [mine], origin="period-finder", data={"period": 2.5})

    inputs = await inputs_for(resources, obj_id, author, ALL_TYPES)

    assert set(inputs) == set(ALL_TYPES)
    header, spectra = rows_of(inputs["spectra"])
    assert header == list(SPECTRA_COLUMNS) and len(spectra) == 1
    spectrum = spectra[0]
    assert json.loads(spectrum["wavelengths"]) == [4000.0, 4001.5, 4003.0]
    assert ast.literal_eval(spectrum["fluxes"]) == [1.0e-17, 2.5e-17, 3.0e-17]
    assert spectrum["errors"] == "" and spectrum["units"] == "fλ" and spectrum["type"] == "source"
    assert json.loads(spectrum["altdata"]) == {"exposure": 300, "note": None}
    assert datetime.fromisoformat(spectrum["observed_at"]) == datetime(
        2024, 5, 1, 3, 4, 5, 678000, tzinfo=UTC
    )
    assert datetime.fromisoformat(spectrum["created_at"]).tzinfo is not None

    header, comments = rows_of(inputs["comments"])
    assert header == list(COMMENTS_COLUMNS)
    assert [(c["text"], c["bot"]) for c in comments] == [
        ('newer "quoted"', "True"),
        ("older, with, commas", "False"),
    ]
    header, classifications = rows_of(inputs["classifications"])
    assert header == list(CLASSIFICATIONS_COLUMNS)
    assert [(c["classification"], c["probability"]) for c in classifications] == [("SN Ia", "0.8")]
    header, annotations = rows_of(inputs["annotations"])
    assert header == list(ANNOTATIONS_COLUMNS)
    assert json.loads(annotations[0]["data"]) == {"period": 2.5}
    assert annotations[0]["origin"] == "period-finder"
    header, redshift = rows_of(inputs["redshift"])
    assert header == list(REDSHIFT_COLUMNS)
    assert redshift == [
        {"redshift": "0.042", "redshift_error": "0.001", "redshift_origin": "host spec"}
    ]


async def test_json_format_gives_typed_records(resources: Resources, accounts: Accounts) -> None:
    author, mine, _ = await author_and_groups(resources, accounts)
    obj_id = await make_obj(resources, [mine], redshift=0.1)
    instrument = await make_instrument(resources)
    await add_photometry(resources, obj_id, instrument, [mine], mjd=59000.25, flux=50.0, fluxerr=1)
    await add_spectrum(resources, obj_id, instrument, [mine], errors=[0.1, 0.2, 0.3])

    inputs = await inputs_for(
        resources, obj_id, author, ["photometry", "spectra", "redshift"], fmt="json"
    )
    inputs = json.loads(json.dumps(inputs, allow_nan=False))  # exactly what goes on the wire

    (point,) = inputs["photometry"]
    assert list(point) == list(PHOTOMETRY_COLUMNS)
    assert point["mjd"] == 59000.25 and point["flux"] == 50.0 and point["predicted_mag"] is None
    assert point["mag"] == pytest.approx(-2.5 * math.log10(50.0) + 23.9)
    (spectrum,) = inputs["spectra"]
    assert spectrum["wavelengths"] == [4000.0, 4001.5, 4003.0]
    assert spectrum["errors"] == [0.1, 0.2, 0.3]
    assert spectrum["observed_at"] == "2024-05-01T03:04:05.678000+00:00"
    assert inputs["redshift"] == [
        {"redshift": 0.1, "redshift_error": None, "redshift_origin": None}
    ]


async def test_admin_author_reads_everything_and_hidden_source_is_refused(
    resources: Resources, accounts: Accounts
) -> None:
    author, _, other = await author_and_groups(resources, accounts)
    admin = await principal_of(resources, (await accounts.user(admin=True)).id)
    obj_id = await make_obj(resources, [other])
    instrument = await make_instrument(resources)
    await add_photometry(resources, obj_id, instrument, [other])

    _, rows = rows_of((await inputs_for(resources, obj_id, admin, ["photometry"]))["photometry"])
    assert len(rows) == 1
    with pytest.raises(InputsError, match=f"Obj {obj_id} not found"):
        await inputs_for(resources, obj_id, author, ["photometry"])


def test_each_kind_of_cell_is_written_as_the_services_read_it() -> None:
    columns = ("text", "count", "flag", "flux", "missing", "bad", "when", "extra")
    record = {
        "text": 'ZTF, "quoted"',
        "count": 3,
        "flag": True,
        "flux": 18.889196565543394,
        "missing": None,
        "bad": math.inf,
        "when": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        "extra": {"ratio": math.nan, "filters": ["ztfg"]},
    }
    written = records_to_csv(columns, [record, {}])
    header, first, empty = list(csv.reader(io.StringIO(written)))
    assert header == list(columns)
    assert first == [
        'ZTF, "quoted"',
        "3",
        "True",  # a bool, not the int it also is
        "18.889196565543394",  # every digit a float needs to read back the same
        "",
        "",  # not finite: empty, as pandas writes NaN
        "2025-01-02T03:04:05+00:00",
        '{"ratio": null, "filters": ["ztfg"]}',
    ]
    assert empty == [""] * len(columns)
