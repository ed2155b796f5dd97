"""Parse the CSV strings the platform sends (SkyPortal's column layout) into arrays."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

import numpy as np

from sn_fitter.bands import sncosmo_band_name

DEFAULT_ZP = 23.9
LIMIT_SIGMA = 5.0  # a limiting magnitude without fluxerr is read as a 5-sigma limit
MISSING = {"", "nan", "none", "null", "--", "masked"}


class InputError(ValueError):
    """The request's data cannot be read; the message says which part and why."""


@dataclass
class LightCurve:
    """Photometry as arrays. Non-detections have NaN flux and a flux limit."""

    time: np.ndarray
    flux: np.ndarray
    fluxerr: np.ndarray
    flux_limit: np.ndarray
    zp: np.ndarray
    magsys: np.ndarray
    band: np.ndarray
    filter_name: np.ndarray
    ignored_rows: int = 0
    band_sources: dict[str, list[str]] = field(default_factory=dict)

    @property
    def is_limit(self) -> np.ndarray:
        return ~np.isfinite(self.flux)

    @property
    def n_detections(self) -> int:
        return int(np.sum(~self.is_limit))

    @property
    def n_limits(self) -> int:
        return int(np.sum(self.is_limit))

    def __len__(self) -> int:
        return len(self.time)


@dataclass(frozen=True)
class Redshift:
    value: float | None
    error: float | None
    origin: str | None


def _number(row: dict[str, str | None], key: str) -> float:
    text = (row.get(key) or "").strip()
    if text.lower() in MISSING:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise InputError(f"column {key!r} has a value that is not a number: {text!r}") from None


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def _rows(data: str | list, what: str) -> list[dict[str, str | None]]:
    """Rows of a SkyPortal CSV string, or of skyhook's typed JSON records (a list of objects)."""
    if isinstance(data, list):
        if not all(isinstance(record, dict) for record in data):
            raise InputError(f"{what} records must be objects")
        return [{str(k): _cell(v) for k, v in record.items()} for record in data]
    if not isinstance(data, str):
        raise InputError(f"{what} must be a CSV string or a list of records")
    try:
        reader = csv.DictReader(io.StringIO(data))
        rows = list(reader)
    except csv.Error as exc:
        raise InputError(f"{what} is not valid CSV: {exc}") from None
    if reader.fieldnames is None:
        raise InputError(f"{what} CSV has no header row")
    if any(None in row for row in rows):
        raise InputError(f"{what} CSV has rows longer than its header")
    return rows


def _flux_and_error(row: dict[str, str | None], zp: float) -> tuple[float, float]:
    flux, fluxerr = _number(row, "flux"), _number(row, "fluxerr")
    if math.isfinite(flux):
        return flux, fluxerr
    mag, magerr = _number(row, "mag"), _number(row, "magerr")
    if math.isfinite(mag) and math.isfinite(magerr):  # a detection sent in magnitudes only
        flux = 10.0 ** (-0.4 * (mag - zp))
        return flux, flux * magerr * math.log(10.0) / 2.5
    return math.nan, fluxerr


def _limit(row: dict[str, str | None], zp: float, fluxerr: float) -> tuple[float, float]:
    """(flux limit, 1-sigma noise) of a non-detection, or NaNs when neither is known."""
    limiting_mag = _number(row, "limiting_mag")
    has_err = math.isfinite(fluxerr) and fluxerr > 0
    if math.isfinite(limiting_mag):
        limit = 10.0 ** (-0.4 * (limiting_mag - zp))
        return limit, fluxerr if has_err else limit / LIMIT_SIGMA
    if has_err:
        return LIMIT_SIGMA * fluxerr, fluxerr
    return math.nan, math.nan


def parse_photometry(data: str | list) -> LightCurve:
    """Read SkyPortal's photometry CSV (mjd, flux, fluxerr, ..., filter, magsys, zp, ...)."""
    rows = _rows(data, "photometry")
    columns: dict[str, list] = {k: [] for k in ("t", "f", "e", "lim", "zp", "sys", "band", "filt")}
    ignored = 0
    band_sources: dict[str, set[str]] = {}
    for number, row in enumerate(rows, start=2):
        time, filt = _number(row, "mjd"), (row.get("filter") or "").strip()
        if not math.isfinite(time) or not filt:
            raise InputError(f"photometry row {number} needs an mjd and a filter")
        zp = _number(row, "zp")
        zp = DEFAULT_ZP if not math.isfinite(zp) else zp
        flux, fluxerr = _flux_and_error(row, zp)
        limit = math.nan
        if math.isfinite(flux):
            if not (math.isfinite(fluxerr) and fluxerr > 0):
                raise InputError(f"photometry row {number} has a flux but no positive fluxerr")
        else:
            limit, fluxerr = _limit(row, zp, fluxerr)
            if not math.isfinite(limit):
                ignored += 1  # a non-detection with neither fluxerr nor limiting_mag
                continue
        band = sncosmo_band_name(filt, row.get("instrument_name"))
        band_sources.setdefault(band, set()).add(filt)
        magsys = (row.get("magsys") or "ab").strip().lower() or "ab"
        for key, value in zip(
            columns, (time, flux, fluxerr, limit, zp, magsys, band, filt), strict=True
        ):
            columns[key].append(value)
    order = np.argsort(np.asarray(columns["t"], dtype=float), kind="stable")
    floats = {k: np.asarray(columns[k], dtype=float)[order] for k in ("t", "f", "e", "lim", "zp")}
    strings = {k: np.asarray(columns[k], dtype=object)[order] for k in ("sys", "band", "filt")}
    return LightCurve(
        time=floats["t"],
        flux=floats["f"],
        fluxerr=floats["e"],
        flux_limit=floats["lim"],
        zp=floats["zp"],
        magsys=strings["sys"],
        band=strings["band"],
        filter_name=strings["filt"],
        ignored_rows=ignored,
        band_sources={k: sorted(v) for k, v in band_sources.items()},
    )


def parse_redshift(data: str | list | None) -> Redshift:
    """Read SkyPortal's redshift CSV (redshift, redshift_error, redshift_origin)."""
    if data is None:
        return Redshift(None, None, None)
    rows = _rows(data, "redshift")
    if not rows:
        return Redshift(None, None, None)
    row = rows[0]
    value, error = _number(row, "redshift"), _number(row, "redshift_error")
    origin = (row.get("redshift_origin") or "").strip() or None
    return Redshift(
        value if math.isfinite(value) else None,
        error if math.isfinite(error) else None,
        origin,
    )
