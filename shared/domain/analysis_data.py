"""The ``analysis`` object of a webhook (or upload) body: schema, safe decoding and storage.

A service posts ``{"status", "message", "analysis": {...}}``. The ``analysis``
object is validated completely, and every base64 blob decoded and checked, before anything is
written; then each part becomes an artifact (``shared.domain.artifacts``) with its size and sha256,
stored in the database by the transaction that records the result.
SkyPortal stored the object verbatim in one joblib file; :func:`load_analysis_data` rebuilds
that shape from the artifacts for clients that read ``includeAnalysisData=true``.

Only the request whose transition wins stores its artifacts (in that transaction), so two
concurrent posts for the same analysis never both write, and a loser has nothing to remove.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.db.models import ObjAnalysis
from shared.domain.artifacts import ArtifactStore, NewArtifact
from shared.security.safe_decode import SafeDecodeError, check_netcdf, joblib_to_json
from shared.security.strict_json import parse_json_object, parse_json_text

log = logging.getLogger("skyhook.analysis_data")

FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
StrictText = Annotated[str, Field(strict=True)]
# null stands for a missing value (JSON has no NaN); NaN and infinities are refused.
Samples = dict[str, list[FiniteFloat | None]]
LightcurveRow = Annotated[list[FiniteFloat | None], Field(min_length=4, max_length=4)]
ModelLightcurve = dict[str, list[LightcurveRow]]

# Manifest keys written by this module (the payload); other keys (inputs, corner, …) are not.
PAYLOAD_KEYS = (
    "plots",
    "inference_data",
    "results",
    "posterior_samples",
    "posteriors",
    "model_lightcurve",
    "model_lightcurves",
    "annotations",
    "extra",
)
# The joblib file a service sent, kept beside its decoded JSON form (manifest "results").
ORIGINAL_RESULTS = "results_original"
JSON_PARTS = ("posterior_samples", "posteriors", "model_lightcurve", "model_lightcurves")
SUMMARY_KEYS = ("model_name", "n_detections")

PLOT_FORMATS: dict[str, tuple[str, str]] = {
    # format → (media type, file extension)
    "png": ("image/png", "png"),
    "jpeg": ("image/jpeg", "jpg"),
    "jpg": ("image/jpeg", "jpg"),
    "gif": ("image/gif", "gif"),
    "webp": ("image/webp", "webp"),
    "svg": ("image/svg+xml", "svg"),
}
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
NETCDF_CLASSIC_MAGICS = (b"CDF\x01", b"CDF\x02", b"CDF\x05")
# What a joblib file starts with: a compressor's magic, or a pickle PROTO opcode.
JOBLIB_PREFIXES = (
    b"\x78",
    b"\x1f\x8b",
    b"BZ",
    b"\xfd\x37\x7a\x58\x5a",
    b"\x5d\x00",
    b"\x04\x22\x4d\x18",
    b"\x80",
)


class PayloadError(ValueError):
    """The payload is malformed; the message says what is wrong (for a 400)."""


class PlotIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    format: StrictText = "png"
    data: StrictText


class ResultsIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    format: Literal["json", "joblib"]
    data: Any


class InferenceDataIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    format: Literal["netcdf4"] = "netcdf4"
    data: StrictText


class AnnotationIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    data: dict[str, Any]
    origin: Annotated[str, Field(strict=True, min_length=1, max_length=255)] | None = None


class AnalysisPayload(BaseModel):
    """The ``analysis`` object. Unknown keys are kept (stored as the ``extra`` artifact)."""

    model_config = ConfigDict(extra="allow")

    plots: Annotated[list[PlotIn], Field(max_length=200)] | None = None
    results: ResultsIn | None = None
    inference_data: InferenceDataIn | None = None
    posterior_samples: Samples | None = None
    posteriors: dict[str, Samples] | None = None
    model_lightcurve: ModelLightcurve | None = None
    model_lightcurves: dict[str, ModelLightcurve] | None = None
    model_name: StrictText | None = None
    n_detections: Annotated[int, Field(strict=True, ge=0)] | None = None
    annotations: list[AnnotationIn] | None = None


class WebhookBody(BaseModel):
    """The whole callback body. Any ``status`` other than "success" means failure."""

    model_config = ConfigDict(extra="ignore")

    status: StrictText = "error"
    message: StrictText | None = ""
    analysis: dict[str, Any] | None = None


@dataclass(frozen=True)
class PendingArtifact:
    key: str  # manifest key
    stem: str  # file name without the request prefix
    data: bytes
    media_type: str
    extra: dict[str, Any] = field(default_factory=dict)
    listed: bool = False  # one item of a list entry (plots)


@dataclass
class DecodedPayload:
    artifacts: list[PendingArtifact]
    data_summary: dict[str, Any]
    annotations: list[AnnotationIn]


@dataclass
class StoredPayload:
    artifacts: dict[str, Any]  # manifest entries
    data_summary: dict[str, Any]
    annotations: list[AnnotationIn]
    files: list[NewArtifact] = field(default_factory=list)  # the bytes the entries describe

    def to_dict(self) -> dict[str, Any]:
        return {"artifacts": self.artifacts, "data_summary": self.data_summary}


def describe_validation_error(exc: ValidationError, prefix: str) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in (prefix, *error["loc"]) if p != "")
        parts.append(f"{where}: {error['msg']}")
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def parse_webhook_body(raw: bytes) -> WebhookBody:
    """Decode and validate a callback body (CPU work: call it in a thread for big bodies)."""
    try:
        value = parse_json_object(raw)
    except ValueError as exc:
        raise PayloadError(str(exc)) from None
    try:
        return WebhookBody.model_validate(value)
    except ValidationError as exc:
        raise PayloadError(f"Invalid webhook body: {describe_validation_error(exc, '')}") from None


def b64decode_strict(text: str, where: str) -> bytes:
    compact = "".join(text.split())
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise PayloadError(f"Invalid {where}: not valid base64") from None
    if not data:
        raise PayloadError(f"Invalid {where}: empty")
    return data


def check_image(data: bytes, fmt: str, where: str) -> None:
    ok = {
        "png": data.startswith(b"\x89PNG\r\n\x1a\n"),
        "jpeg": data.startswith(b"\xff\xd8\xff"),
        "jpg": data.startswith(b"\xff\xd8\xff"),
        "gif": data.startswith((b"GIF87a", b"GIF89a")),
        "webp": data[:4] == b"RIFF" and data[8:12] == b"WEBP",
        "svg": _looks_like_svg(data),
    }[fmt]
    if not ok:
        raise PayloadError(f"Invalid {where}: the bytes are not a {fmt.upper()} image")


def _looks_like_svg(data: bytes) -> bool:
    head = data[:4096].decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n").lower()
    return head.startswith("<") and "<svg" in head


def _decode_plots(plots: list[PlotIn]) -> list[PendingArtifact]:
    pending = []
    for number, plot in enumerate(plots):
        fmt = plot.format.lower()
        if fmt not in PLOT_FORMATS:
            known = ", ".join(sorted(PLOT_FORMATS))
            raise PayloadError(
                f"Invalid analysis.plots.{number}.format: {plot.format!r} (use one of {known})"
            )
        data = b64decode_strict(plot.data, f"analysis.plots.{number}.data")
        check_image(data, fmt, f"analysis.plots.{number}.data")
        media_type, extension = PLOT_FORMATS[fmt]
        pending.append(
            PendingArtifact(
                "plots", f"plot_{number}.{extension}", data, media_type, {"format": fmt}, True
            )
        )
    return pending


def _decode_inference_data(item: InferenceDataIn) -> PendingArtifact:
    data = b64decode_strict(item.data, "analysis.inference_data.data")
    if not data.startswith((HDF5_MAGIC, *NETCDF_CLASSIC_MAGICS)):
        raise PayloadError("Invalid analysis.inference_data.data: not a netCDF/HDF5 file")
    try:
        check_netcdf(data)
    except SafeDecodeError as exc:
        raise PayloadError(f"Invalid analysis.inference_data.data: {exc}") from None
    return PendingArtifact(
        "inference_data", "inference_data.nc", data, "application/x-netcdf", {"format": "netcdf4"}
    )


def _decode_results(results: ResultsIn) -> list[PendingArtifact]:
    if results.format == "joblib":
        return _decode_joblib_results(results.data)
    value = _json_results_value(results.data)
    return [json_results_artifact(value)]


def json_results_artifact(value: Any, **extra: Any) -> PendingArtifact:
    return PendingArtifact(
        "results",
        "results.json",
        _json_bytes(value),
        "application/json",
        {"format": "json", **extra},
    )


def _decode_joblib_results(data: Any) -> list[PendingArtifact]:
    """Decoded once, here: the JSON form is what every read uses; the file as sent is kept
    only to give it back verbatim (``includeAnalysisData``), never unpickled again."""
    if not isinstance(data, str):
        raise PayloadError("Invalid analysis.results.data: joblib data must be a base64 string")
    raw = b64decode_strict(data, "analysis.results.data")
    if not raw.startswith(JOBLIB_PREFIXES):
        raise PayloadError("Invalid analysis.results.data: not a joblib file")
    try:
        value = joblib_to_json(raw)
    except SafeDecodeError as exc:
        message = f"Invalid analysis.results.data: refusing the joblib file: {exc}"
        raise PayloadError(message) from None
    original = PendingArtifact(
        ORIGINAL_RESULTS, "results.joblib", raw, "application/octet-stream", {"format": "joblib"}
    )
    return [json_results_artifact(value, decoded_from="joblib"), original]


def _json_results_value(data: Any) -> dict[str, Any]:
    """SkyPortal accepts an object, or a string holding base64-of-JSON or JSON."""
    value = data
    if isinstance(data, str):
        value = None
        try:
            value = parse_json_text(base64.b64decode(data, validate=True))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            try:
                value = parse_json_text(data)
            except ValueError as exc:
                raise PayloadError(
                    f"Invalid analysis.results.data: a string must hold JSON or base64 JSON ({exc})"
                ) from None
    if not isinstance(value, dict):
        raise PayloadError("Invalid analysis.results.data: must be a JSON object")
    return value


def _json_bytes(value: Any) -> bytes:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()
    except ValueError as exc:
        raise PayloadError(f"Invalid analysis payload: {exc}") from None


def decode_payload_sync(analysis: Any) -> DecodedPayload:
    """Validate and decode an ``analysis`` object. CPU-bound: run it in a thread."""
    if analysis is None:
        analysis = {}
    if not isinstance(analysis, dict):
        raise PayloadError("Invalid analysis: must be a JSON object")
    try:
        payload = AnalysisPayload.model_validate(analysis)
    except ValidationError as exc:
        message = describe_validation_error(exc, "analysis")
        raise PayloadError(f"Invalid analysis payload: {message}") from None
    pending: list[PendingArtifact] = []
    if payload.plots:
        pending.extend(_decode_plots(payload.plots))
    if payload.inference_data is not None:
        pending.append(_decode_inference_data(payload.inference_data))
    if payload.results is not None:
        pending.extend(_decode_results(payload.results))
    for key in JSON_PARTS:
        value = getattr(payload, key)
        if value is not None:
            pending.append(
                PendingArtifact(key, f"{key}.json", _json_bytes(value), "application/json")
            )
    if payload.annotations:
        items = [a.model_dump(exclude_none=True) for a in payload.annotations]
        pending.append(
            PendingArtifact(
                "annotations", "annotations.json", _json_bytes(items), "application/json"
            )
        )
    if payload.model_extra:
        pending.append(
            PendingArtifact(
                "extra", "extra.json", _json_bytes(payload.model_extra), "application/json"
            )
        )
    summary = {k: getattr(payload, k) for k in SUMMARY_KEYS if getattr(payload, k) is not None}
    return DecodedPayload(pending, summary, list(payload.annotations or []))


# A callback body up to this size whose parts need no decompression or file parsing (no
# joblib results, no inference data) is decoded on the event loop: its work is bounded by its
# size (well under a millisecond), less than the hop to a worker thread costs.
INLINE_BODY_BYTES = 64 * 1024


def decodes_inline(analysis: Any) -> bool:
    """Whether the ``analysis`` of a callback body of at most ``INLINE_BODY_BYTES`` is decoded
    on the event loop: its parts need no decompression or file parsing."""
    if not isinstance(analysis, dict):
        return True  # nothing to decode, or refused at once
    results = analysis.get("results")
    joblib = isinstance(results, dict) and results.get("format") == "joblib"
    return analysis.get("inference_data") is None and not joblib


def stored_files_sync(analysis_unique_id: str, analysis: Any) -> StoredPayload:
    """Decode an ``analysis`` object and describe its files (CPU work for big payloads)."""
    return payload_files(analysis_unique_id, decode_payload_sync(analysis))


def received_sync(raw: bytes, analysis_unique_id: str) -> tuple[WebhookBody, StoredPayload]:
    """A callback body parsed and decoded, with the files it brings (CPU work: for a big body,
    call it in a worker thread)."""
    body = parse_webhook_body(raw)
    return body, stored_files_sync(analysis_unique_id, body.analysis)


def payload_files(analysis_unique_id: str, decoded: DecodedPayload) -> StoredPayload:
    """The manifest entries and the files to store (hashing: CPU work, call it in a thread
    for big payloads). Nothing is written here: the files go into the database in the
    transaction that makes them the analysis' (``shared.domain.artifacts.write_artifacts``)."""
    manifest: dict[str, Any] = {}
    files: list[NewArtifact] = []
    for part in decoded.artifacts:
        file = NewArtifact(part.stem, part.data, part.media_type)
        files.append(file)
        entry = {**file.ref(analysis_unique_id).to_dict(), **part.extra}
        if part.listed:
            manifest.setdefault(part.key, []).append(entry)
        else:
            manifest[part.key] = entry
    return StoredPayload(manifest, dict(decoded.data_summary), decoded.annotations, files)


async def store_analysis_payload(analysis_unique_id: str, analysis_obj: Any) -> StoredPayload:
    """Validate and decode an ``analysis`` object, and describe what to store (in a worker
    thread). Raises :class:`PayloadError` when the object is malformed."""
    return await asyncio.to_thread(stored_files_sync, analysis_unique_id, analysis_obj)


async def _read_b64(store: ArtifactStore, ref: dict[str, Any]) -> str:
    return base64.b64encode(await store.read(ref)).decode()


async def _read_json(store: ArtifactStore, ref: dict[str, Any]) -> Any:
    return json.loads(await store.read(ref))


async def load_analysis_data(store: ArtifactStore, analysis: ObjAnalysis) -> dict[str, Any]:
    """SkyPortal's stored-data shape (the webhook ``analysis`` object) rebuilt from artifacts.

    Plots and inference data come back as ``{format, data: base64}``; results as the service
    sent them (``{"format": "json", "data": {...}}`` or ``{"format": "joblib", "data": base64}``).
    A missing artifact file is skipped (and logged) rather than failing the whole read.
    """
    manifest = analysis.artifacts or {}
    data: dict[str, Any] = {}
    for key in PAYLOAD_KEYS:
        if key not in manifest:
            continue
        entry = manifest[key]
        if key == "results" and ORIGINAL_RESULTS in manifest:
            entry = manifest[ORIGINAL_RESULTS]  # as the service sent it
        try:
            value = await _load_part(store, key, entry)
        except FileNotFoundError:  # ArtifactMissing
            log.warning("analysis %s: the %s artifact is missing", analysis.id, key)
            continue
        if key == "extra":
            data.update({k: v for k, v in value.items() if k not in data})
        else:
            data[key] = value
    summary = analysis.data_summary or {}
    data.update({k: summary[k] for k in SUMMARY_KEYS if k in summary})
    return data


async def _load_part(store: ArtifactStore, key: str, entry: Any) -> Any:
    if key == "plots":
        return [
            {"format": p.get("format", "png"), "data": await _read_b64(store, p)} for p in entry
        ]
    if key == "inference_data":
        return {"format": "netcdf4", "data": await _read_b64(store, entry)}
    if key == "results":
        return await _load_results(store, entry)
    return await _read_json(store, entry)


async def _load_results(store: ArtifactStore, ref: dict[str, Any]) -> dict[str, Any]:
    if ref.get("format") == "joblib":
        return {"format": "joblib", "data": await _read_b64(store, ref)}
    return {"format": "json", "data": await _read_json(store, ref)}


def has_payload(analysis: ObjAnalysis) -> bool:
    manifest = analysis.artifacts or {}
    summary = analysis.data_summary or {}
    return any(k in manifest for k in PAYLOAD_KEYS) or any(k in summary for k in SUMMARY_KEYS)
