"""Analysis products: plots, results and the corner plot.

Readable by whoever can read the analysis: a member of one of its groups who can also read
its source (system admins: all). Differences from SkyPortal: ``/plots`` without a number is
plot 0 (R9); joblib results are decoded once, at ingest, with the restricted unpickler (S1),
and reads serve the stored JSON form (results stored as joblib before that are converted on
their first read); the corner plot is drawn here again (SkyPortal dropped it) and cached as
the ``corner`` artifact, and so is a refusal to draw it (the same 4xx on every later read).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from sqlalchemy import select, update

from gateway.auth import principal
from http_edge.app_keys import ARTIFACTS, SESSIONS
from http_edge.web import (
    ApiError,
    bad_request,
    forbidden,
    not_found,
    path_int,
    query_bool,
    success,
)
from shared.db.dialect import merged_json, name_of
from shared.db.models import ObjAnalysis, obj_analysis_groups, obj_groups
from shared.db.session import Sessions
from shared.domain.access import visible
from shared.domain.analysis_data import (
    ORIGINAL_RESULTS,
    PayloadError,
    has_payload,
    json_results_artifact,
)
from shared.domain.artifacts import (
    CHUNK_BYTES,
    ArtifactMissing,
    ArtifactStore,
    NewArtifact,
    write_artifacts,
)
from shared.science.corner import (
    CornerError,
    posterior_from_netcdf,
    posterior_from_samples,
    render_corner_png,
)
from shared.security.safe_decode import SafeDecodeError, joblib_to_json

log = logging.getLogger("skyhook.products")

# User-supplied images (SVG can hold scripts) must not run in the API's origin.
IMAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
}
NO_DATA = "No data found for this Analysis."


async def readable_analysis(request: web.Request) -> ObjAnalysis:
    analysis_id = path_int(request, "analysis_id", "analysis_id")
    me = principal(request)
    query = select(ObjAnalysis).where(
        ObjAnalysis.id == analysis_id,
        visible(obj_analysis_groups, ObjAnalysis.id, me),
        visible(obj_groups, ObjAnalysis.obj_id, me),
    )
    async with request.app[SESSIONS]() as session:
        analysis = (await session.execute(query)).scalar_one_or_none()
    if analysis is None:
        raise forbidden("Cannot access this Analysis.")
    if not has_payload(analysis):
        raise not_found(NO_DATA)
    return analysis


def _plot_number(request: web.Request) -> int:
    value = request.match_info.get("plot_number")
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"plot_number must be an integer. Got: {value}") from None


async def _blob_response(request: web.Request, ref: dict[str, Any]) -> web.StreamResponse:
    """The artifact's bytes from the database with its media type and length: one read for a
    small one, slices of ``CHUNK_BYTES`` for a big one. :class:`ArtifactMissing` when the
    blob is not there (raised before anything is sent)."""
    store = request.app[ARTIFACTS]
    headers = {
        "Content-Type": str(ref.get("media_type", "application/octet-stream")),
        **IMAGE_HEADERS,
    }
    size = ref.get("size")
    if not isinstance(size, int) or size <= CHUNK_BYTES:
        return web.Response(body=await store.read(ref), headers=headers)
    total = await store.size(ref)
    response = web.StreamResponse(headers=headers)
    response.content_length = total
    await response.prepare(request)
    try:
        async for part in store.chunks(ref, total):
            await response.write(part)
    except ArtifactMissing:
        # deleted while being sent: the client sees a short body on a closed connection
        log.warning("an artifact was deleted while it was being sent")
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


async def _file_response(
    request: web.Request, ref: dict[str, Any], what: str
) -> web.StreamResponse:
    try:
        return await _blob_response(request, ref)
    except ArtifactMissing:
        raise not_found(f"The {what} file of this Analysis is missing.") from None


async def get_plot(request: web.Request) -> web.StreamResponse:
    analysis = await readable_analysis(request)
    plots = analysis.artifacts.get("plots") or []
    if not plots:
        raise not_found("No plot data found for this Analysis.")
    number = _plot_number(request)
    if not 0 <= number < len(plots):
        raise not_found(
            f"Invalid plot number. There is/are {len(plots)} plot(s) available for this analysis"
        )
    return await _file_response(request, plots[number], "plot")


async def _results_value(
    artifacts: ArtifactStore, sessions: Sessions, analysis: ObjAnalysis, ref: dict[str, Any]
) -> Any:
    if "refused" in ref:  # legacy joblib results refused before: not decoded again
        raise ApiError(422, str(ref["refused"]))
    try:
        raw = await artifacts.read(ref)
    except FileNotFoundError:
        raise not_found("The results file of this Analysis is missing.") from None
    if ref.get("format") == "joblib":
        return await _convert_legacy_results(sessions, analysis, ref, raw)
    return json.loads(raw)


async def _convert_legacy_results(
    sessions: Sessions, analysis: ObjAnalysis, ref: dict[str, Any], raw: bytes
) -> Any:
    """Results stored as joblib before they were decoded at ingest: decoded once (within the
    decoder's budgets), stored as JSON and the manifest switched to it; the file is kept as
    the original. A refusal is recorded in the manifest and answered again without decoding."""
    try:
        value = await asyncio.to_thread(joblib_to_json, raw)
        part = json_results_artifact(value, decoded_from="joblib")
    except (SafeDecodeError, PayloadError) as exc:
        message = f"Refusing to decode the joblib results: {exc}"
        await _merge_manifest(sessions, analysis, {"results": {**ref, "refused": message}})
        raise ApiError(422, message) from None
    file = NewArtifact(f"legacy-{part.stem}", part.data, part.media_type)
    entry = {"results": {**file.ref(analysis.unique_id).to_dict(), **part.extra}}
    await _merge_manifest(sessions, analysis, {**entry, ORIGINAL_RESULTS: ref}, [file])
    log.info("analysis %s: joblib results converted to JSON", analysis.id)
    return value


async def get_results(request: web.Request) -> web.Response:
    analysis = await readable_analysis(request)
    ref = analysis.artifacts.get("results")
    if not ref:
        raise not_found("No results data found for this Analysis.")
    value = await _results_value(request.app[ARTIFACTS], request.app[SESSIONS], analysis, ref)
    if not value:
        raise not_found("No results data found for this Analysis.")
    if query_bool(request, "download"):
        return web.Response(
            text=json.dumps(value, allow_nan=False),
            content_type="text/plain",
            headers={
                "Content-Disposition": f'attachment; filename="analysis_{analysis.obj_id}.json"'
            },
        )
    return success(value)


async def _posterior_source(artifacts: ArtifactStore, analysis: ObjAnalysis) -> tuple[str, bytes]:
    manifest = analysis.artifacts
    for key in ("inference_data", "posterior_samples", "posteriors"):
        if key in manifest:
            try:
                return key, await artifacts.read(manifest[key])
            except FileNotFoundError:
                log.warning("analysis %s: the %s file is missing", analysis.id, key)
    raise not_found("No inference data found for this Analysis.")


def _render(kind: str, raw: bytes) -> bytes:
    if kind == "inference_data":
        posterior = posterior_from_netcdf(raw)
    else:
        samples = json.loads(raw)
        if kind == "posteriors":
            samples = next(iter(samples.values()), {})
        posterior = posterior_from_samples(samples)
    return render_corner_png(posterior)


async def _merge_manifest(
    sessions: Sessions,
    analysis: ObjAnalysis,
    entry: dict[str, Any],
    files: Sequence[NewArtifact] = (),
) -> bool:
    """Set manifest keys and store the files they describe, in one transaction; False (and
    nothing written) when the analysis went away meanwhile."""
    async with sessions.begin() as session:
        dialect = name_of(session)
        result = await session.execute(
            update(ObjAnalysis)
            .where(ObjAnalysis.id == analysis.id)
            .values(artifacts=merged_json(ObjAnalysis.artifacts, entry, dialect))
            .returning(ObjAnalysis.id)
        )
        if result.first() is None:
            return False
        # A name stored before (a corner drawn twice at once) now points to these bytes.
        await write_artifacts(session, analysis.id, files, replace=True)
        return True


async def _cache_corner(sessions: Sessions, analysis: ObjAnalysis, png: bytes) -> None:
    file = NewArtifact("corner.png", png, "image/png")
    entry = {"corner": {**file.ref(analysis.unique_id).to_dict(), "format": "png"}}
    await _merge_manifest(sessions, analysis, entry, [file])


async def _draw_corner(kind: str, raw: bytes) -> bytes:
    """The PNG, or the ApiError (422) that says why it cannot be drawn."""
    try:
        return await asyncio.to_thread(_render, kind, raw)
    except CornerError as exc:
        raise ApiError(422, f"Cannot draw a corner plot: {exc}") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise ApiError(
            422, f"Cannot draw a corner plot: the posterior is malformed ({exc})"
        ) from None


async def get_corner(request: web.Request) -> web.StreamResponse:
    analysis = await readable_analysis(request)
    cached = analysis.artifacts.get("corner")
    if cached and "refused" in cached:  # drawing failed before: the file is not parsed again
        raise ApiError(int(cached["status"]), str(cached["refused"]))
    if cached:
        try:
            return await _blob_response(request, cached)
        except ArtifactMissing:
            pass  # drawn again below
    kind, raw = await _posterior_source(request.app[ARTIFACTS], analysis)
    try:
        png = await _draw_corner(kind, raw)
    except ApiError as exc:
        refusal = {"refused": exc.message, "status": exc.status}
        await _merge_manifest(request.app[SESSIONS], analysis, {"corner": refusal})
        raise
    await _cache_corner(request.app[SESSIONS], analysis, png)
    return web.Response(body=png, content_type="image/png", headers=IMAGE_HEADERS)
