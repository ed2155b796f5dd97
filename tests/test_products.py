"""Analysis products: plots, results (joblib decoded safely) and the server-side corner plot,
with SkyPortal's messages, access control, and results delivered through the real webhook."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDictProxy
from sqlalchemy import func, select

from shared.db.models import ArtifactBlob, ObjAnalysis
from shared.domain.artifacts import CHUNK_BYTES
from shared.runtime.resources import Resources
from tests.support.api import Accounts, ApiClient
from tests.support.api import TestUser as ApiUser
from tests.support.artifacts import put_artifact, ruined_blob
from tests.support.hostile import big_integer, hdf5_fill_value_bomb
from tests.test_webhook_receiver import (
    SN_RESULT,
    MadeAnalysis,
    b64,
    figure_bytes,
    joblib_bytes,
    load_row,
    make_analysis,
    netcdf_posterior,
    post_webhook,
    posterior_samples,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>'


@dataclass
class Fetched:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def message(self) -> str:
        return str(self.json.get("message", ""))


async def fetch(api: ApiClient, path: str, user: ApiUser, token: str = "") -> Fetched:
    headers = {"Authorization": f"token {user.token}"}
    async with api.test_client.get(path, headers=headers) as response:
        body = await response.read()
        fetched = Fetched(response.status, response.headers, body)
    if token:
        assert token.encode() not in body, "the webhook token must never appear in a response"
    return fetched


async def completed(
    api: ApiClient, accounts: Accounts, resources: Resources, analysis: dict[str, Any]
) -> MadeAnalysis:
    made = await make_analysis(resources, accounts)
    body = {"status": "success", "message": "ok", "analysis": analysis}
    reply = await post_webhook(api, made, body)
    assert reply.status == 200, reply.text
    return made


def base(made: MadeAnalysis) -> str:
    return f"/api/obj/analysis/{made.id}"


@pytest.mark.usefixtures("backend")
async def test_plots_are_served_with_their_content_type(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    png, jpeg = figure_bytes("png"), figure_bytes("jpeg")
    plots = [
        {"format": "png", "data": b64(png)},
        {"format": "jpeg", "data": b64(jpeg)},
        {"format": "svg", "data": b64(SVG)},
    ]
    made = await completed(api, accounts, resources, {"plots": plots})
    user = made.author

    first = await fetch(api, f"{base(made)}/plots", user, made.token)
    assert (first.status, first.headers["Content-Type"], first.body) == (200, "image/png", png)
    numbered = await fetch(api, f"{base(made)}/plots/0", user)
    assert numbered.body == png
    second = await fetch(api, f"{base(made)}/plots/1", user)
    assert (second.headers["Content-Type"], second.body) == ("image/jpeg", jpeg)
    svg = await fetch(api, f"{base(made)}/plots/2", user)
    assert (svg.headers["Content-Type"], svg.body) == ("image/svg+xml", SVG)
    assert "sandbox" in svg.headers["Content-Security-Policy"]
    assert svg.headers["X-Content-Type-Options"] == "nosniff"

    message = "Invalid plot number. There is/are 3 plot(s) available for this analysis"
    for number in ("3", "-1"):
        missing = await fetch(api, f"{base(made)}/plots/{number}", user)
        assert (missing.status, missing.message) == (404, message)
    bad = await fetch(api, f"{base(made)}/plots/two", user)
    assert (bad.status, bad.message) == (400, "plot_number must be an integer. Got: two")


@pytest.mark.usefixtures("backend")
async def test_a_big_plot_is_streamed_from_the_database_with_its_length(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    """Bigger than one read slice: sent in chunks, with Content-Length and Content-Type."""
    big = PNG_MAGIC + os.urandom(2 * CHUNK_BYTES + 12345)
    made = await completed(
        api, accounts, resources, {"plots": [{"format": "png", "data": b64(big)}]}
    )
    reply = await fetch(api, f"{base(made)}/plots/0", made.author, made.token)
    assert (reply.status, reply.headers["Content-Type"]) == (200, "image/png")
    assert int(reply.headers["Content-Length"]) == len(big)
    assert reply.body == big
    chunks = [
        part
        async for part in resources.artifacts.chunks(
            (await load_row(resources, made.id)).artifacts["plots"][0]
        )
    ]
    assert [len(c) for c in chunks] == [CHUNK_BYTES, CHUNK_BYTES, 8 + 12345]


@pytest.mark.usefixtures("backend")
async def test_equal_artifacts_are_stored_once(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    png = PNG_MAGIC + os.urandom(5000)
    plots = {"plots": [{"format": "png", "data": b64(png)}, {"format": "png", "data": b64(png)}]}
    first = await completed(api, accounts, resources, plots)
    second = await completed(api, accounts, resources, plots)
    refs = [
        ref
        for made in (first, second)
        for ref in (await load_row(resources, made.id)).artifacts["plots"]
    ]
    assert {r["sha256"] for r in refs} == {hashlib.sha256(png).hexdigest()}
    assert len({r["path"] for r in refs}) == 4  # four artifacts, one blob
    async with resources.sessions() as session:
        blobs = await session.scalar(
            select(func.count()).where(ArtifactBlob.sha256 == refs[0]["sha256"])
        )
    assert blobs == 1
    for made in (first, second):
        reply = await fetch(api, f"{base(made)}/plots/1", made.author)
        assert (reply.status, reply.body) == (200, png)


@pytest.mark.usefixtures("backend")
async def test_a_plot_whose_bytes_are_missing_is_a_404(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    """E.g. a file that was already gone when migration 0005 imported the artifact folder."""
    made = await completed(api, accounts, resources, {"model_name": "m"})
    gone = {
        "name": "plot_0.png",
        "path": f"{made.unique_id}/plot_0.png",
        "size": 10,
        "sha256": "f" * 64,
        "media_type": "image/png",
        "format": "png",
    }
    async with resources.sessions.begin() as session:
        row = await session.get(ObjAnalysis, made.id)
        assert row is not None
        row.artifacts = {**row.artifacts, "plots": [gone]}
    reply = await fetch(api, f"{base(made)}/plots", made.author)
    assert (reply.status, reply.message) == (404, "The plot file of this Analysis is missing.")


@pytest.mark.usefixtures("backend")
async def test_missing_products_get_skyportals_404_messages(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    pending = await make_analysis(resources, accounts)
    for product in ("plots", "plots/0", "results", "corner"):
        reply = await fetch(api, f"{base(pending)}/{product}", pending.author)
        assert (reply.status, reply.message) == (404, "No data found for this Analysis.")

    only_a_name = await completed(api, accounts, resources, {"model_name": "salt3"})
    expected = {
        "plots": "No plot data found for this Analysis.",
        "results": "No results data found for this Analysis.",
        "corner": "No inference data found for this Analysis.",
    }
    for product, message in expected.items():
        reply = await fetch(api, f"{base(only_a_name)}/{product}", only_a_name.author)
        assert (reply.status, reply.message) == (404, message)


@pytest.mark.usefixtures("backend")
async def test_json_results_and_their_download(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    results = {"summary": "A type Ia supernova", "chi2": 1.25, "params": {"z": [0.1, 0.01]}}
    made = await completed(
        api, accounts, resources, {"results": {"format": "json", "data": results}}
    )
    reply = await fetch(api, f"{base(made)}/results", made.author, made.token)
    assert (reply.status, reply.json["data"]) == (200, results)

    download = await fetch(api, f"{base(made)}/results?download=true", made.author)
    assert download.status == 200
    assert download.headers["Content-Disposition"] == (
        f'attachment; filename="analysis_{made.obj_id}.json"'
    )
    assert json.loads(download.body) == results


@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize("compress", [0, 3])
async def test_joblib_results_are_decoded_safely(
    api: ApiClient, accounts: Accounts, resources: Resources, compress: int
) -> None:
    data = b64(joblib_bytes(SN_RESULT, compress=compress))
    made = await completed(
        api, accounts, resources, {"results": {"format": "joblib", "data": data}}
    )
    reply = await fetch(api, f"{base(made)}/results", made.author)
    assert reply.status == 200
    decoded = reply.json["data"]
    assert decoded["parameters"] == [0.05, 59000.0, 1.2e-5]
    assert decoded["covariance"][1] == [0.0, 0.01, 0.0]
    assert (decoded["chisq"], decoded["ndof"], decoded["success"]) == (12.5, 10, True)
    assert decoded["param_names"] == ["z", "t0", "amplitude"]


class Marker:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


async def test_malicious_joblib_results_are_refused_at_ingest_and_never_executed(
    api: ApiClient, accounts: Accounts, resources: Resources, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    payload = joblib_bytes({"fit": [1, 2], "evil": Marker(marker)}, compress=3)
    made = await make_analysis(resources, accounts)
    body = {
        "status": "success",
        "analysis": {"results": {"format": "joblib", "data": b64(payload)}},
    }
    reply = await post_webhook(api, made, body)
    assert reply.status == 400
    assert reply.message.startswith("Invalid analysis.results.data: refusing the joblib file: ")
    assert "system, which is not allowed" in reply.message
    assert (await load_row(resources, made.id)).artifacts == {}
    assert not marker.exists()


async def legacy_artifact(
    resources: Resources, made: MadeAnalysis, key: str, name: str, data: bytes, fmt: str
) -> None:
    """An artifact as stored before results and inference data were checked at ingest."""
    ref = await put_artifact(resources, made.id, name, data, "application/octet-stream")
    async with resources.sessions.begin() as session:
        row = await session.get(ObjAnalysis, made.id)
        assert row is not None
        row.artifacts = {**row.artifacts, key: {**ref, "format": fmt}}


@pytest.mark.usefixtures("backend")
async def test_joblib_results_stored_before_the_upgrade_are_converted_once(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    """Fails on main: every read decodes the pickle again (the manifest never changes), and
    the 3000-digit integer is answered."""
    made = await make_analysis(resources, accounts)
    data = joblib_bytes(SN_RESULT, compress=3)
    await legacy_artifact(resources, made, "results", "results.joblib", data, "joblib")
    first = await fetch(api, f"{base(made)}/results", made.author)
    assert first.status == 200 and first.json["data"]["param_names"] == ["z", "t0", "amplitude"]
    manifest = (await load_row(resources, made.id)).artifacts
    assert manifest["results"]["format"] == "json"
    assert manifest["results_original"]["sha256"] == hashlib.sha256(data).hexdigest()
    # The pickle is never read again: ruin it, the answer is the same.
    async with ruined_blob(resources, manifest["results_original"], b"x"):
        second = await fetch(api, f"{base(made)}/results", made.author)
    assert (second.status, second.json["data"]) == (200, first.json["data"])

    hostile = await make_analysis(resources, accounts)
    await legacy_artifact(resources, hostile, "results", "r.joblib", big_integer(), "joblib")
    refused = await fetch(api, f"{base(hostile)}/results", hostile.author)
    assert refused.status == 422
    assert refused.message == (
        "Refusing to decode the joblib results: the pickle holds an integer that is too large"
    )
    # The refusal is remembered: a valid file in its place is not decoded either.
    ref = (await load_row(resources, hostile.id)).artifacts["results"]
    async with ruined_blob(resources, ref, data):
        again = await fetch(api, f"{base(hostile)}/results", hostile.author)
    assert (again.status, again.message) == (422, refused.message)


@pytest.mark.usefixtures("backend")
async def test_a_corner_plot_refusal_is_cached_and_the_file_not_parsed_again(
    api: ApiClient, accounts: Accounts, resources: Resources, tmp_path: Path
) -> None:
    """Fails on main: the 2.7 KB file is read into ~480 MB of fill values on every GET (and
    nothing is cached, so the valid file that replaces it is drawn)."""
    made = await make_analysis(resources, accounts)
    bomb = hdf5_fill_value_bomb()
    await legacy_artifact(resources, made, "inference_data", "bomb.nc", bomb, "netcdf4")
    first = await fetch(api, f"{base(made)}/corner", made.author)
    assert first.status == 422
    assert first.message.startswith(
        "Cannot draw a corner plot: the inference data cannot be read: variable x declares "
        "30000000 elements of 8 bytes"
    )
    row = await load_row(resources, made.id)
    assert row.artifacts["corner"] == {"refused": first.message, "status": 422}
    async with ruined_blob(resources, row.artifacts["inference_data"], netcdf_posterior(tmp_path)):
        second = await fetch(api, f"{base(made)}/corner", made.author)
    assert (second.status, second.message) == (422, first.message)


@pytest.mark.usefixtures("backend")
async def test_the_corner_plot_is_drawn_from_the_netcdf_posterior_and_cached(
    api: ApiClient, accounts: Accounts, resources: Resources, tmp_path: Path
) -> None:
    nc = netcdf_posterior(tmp_path)
    analysis = {"inference_data": {"format": "netcdf4", "data": b64(nc)}}
    made = await completed(api, accounts, resources, analysis)
    first = await fetch(api, f"{base(made)}/corner", made.author, made.token)
    assert (first.status, first.headers["Content-Type"]) == (200, "image/png")
    assert first.body.startswith(PNG_MAGIC)

    row = await load_row(resources, made.id)
    cached = row.artifacts["corner"]
    assert cached["sha256"] == hashlib.sha256(first.body).hexdigest()
    # Ruin the source: the second answer must come from the cached artifact.
    async with ruined_blob(resources, row.artifacts["inference_data"], b"not netcdf any more"):
        second = await fetch(api, f"{base(made)}/corner", made.author)
    assert (second.status, second.body) == (200, first.body)


@pytest.mark.usefixtures("backend")
async def test_the_corner_plot_falls_back_to_posterior_samples(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    samples = {**posterior_samples(), "fixed_z": [0.1] * 500}
    made = await completed(api, accounts, resources, {"posterior_samples": samples})
    reply = await fetch(api, f"{base(made)}/corner", made.author)
    assert (reply.status, reply.body[:8]) == (200, PNG_MAGIC)

    flat = await completed(api, accounts, resources, {"posterior_samples": {"z": [0.1] * 20}})
    refused = await fetch(api, f"{base(flat)}/corner", flat.author)
    assert refused.status == 422
    assert refused.message == "Cannot draw a corner plot: no parameter of the posterior varies"


@pytest.mark.usefixtures("backend")
async def test_only_readers_of_the_analysis_get_its_products(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    analysis = {
        "plots": [{"format": "png", "data": b64(figure_bytes("png"))}],
        "results": {"format": "json", "data": {"a": 1}},
        "posterior_samples": posterior_samples(),
    }
    made = await completed(api, accounts, resources, analysis)
    stranger = await accounts.user(groups=(await accounts.group(),))
    admin = await accounts.user(admin=True)
    for product in ("plots", "plots/0", "results", "corner"):
        refused = await fetch(api, f"{base(made)}/{product}", stranger)
        assert (refused.status, refused.message) == (403, "Cannot access this Analysis.")
        allowed = await fetch(api, f"{base(made)}/{product}", admin, made.token)
        assert allowed.status == 200, (product, allowed.body[:200])
    absent = await fetch(api, "/api/obj/analysis/987654321/results", admin)
    assert (absent.status, absent.message) == (403, "Cannot access this Analysis.")
    invalid = await fetch(api, "/api/obj/analysis/abc/results", admin)
    assert (invalid.status, invalid.message) == (400, "Invalid analysis_id: abc")
