"""Photometry units, as SkyPortal stores and exports them.

Fluxes are kept in the AB system at zero point 23.9 (so a flux of 1 is 1 µJy). A
non-detection has no flux and a flux error chosen so that 5·fluxerr is its limit; a limit
given as a magnitude is also kept as given (``original_limiting_mag``) and exported as is.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

PHOT_ZP = 23.9
PHOT_SYS = "ab"
LIMIT_NSIGMA = 5.0
_MAG_PER_LN = 2.5 / math.log(10)

# SkyPortal's photometry columns as analysis services receive them.
PHOTOMETRY_CSV_COLUMNS = (
    "mjd",
    "flux",
    "fluxerr",
    "mag",
    "magerr",
    "filter",
    "magsys",
    "limiting_mag",
    "zp",
    "instrument_name",
    "predicted_mag",
)


class PhotometryValueError(ValueError):
    """A conversion whose result is not a finite number (e.g. an absurd magnitude)."""


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise PhotometryValueError(f"{what} is out of range")
    return value


def _power(exponent: float, what: str) -> float:
    try:
        return _finite(10.0**exponent, what)
    except OverflowError:
        raise PhotometryValueError(f"{what} is out of range") from None


def zp_scale(zp: float) -> float:
    """Factor turning a flux at zero point ``zp`` into a flux at zero point 23.9."""
    return _power(-0.4 * (zp - PHOT_ZP), "zero point")


def flux_to_standard(flux: float, zp: float) -> float:
    return _finite(flux * zp_scale(zp), "flux")


def mag_to_flux(mag: float) -> float:
    """AB magnitude → flux at zero point 23.9."""
    return _power(-0.4 * (mag - PHOT_ZP), "mag")


def magerr_to_fluxerr(mag: float, magerr: float) -> float:
    return _finite(mag_to_flux(mag) * magerr / _MAG_PER_LN, "magerr")


def flux_to_mag(flux: float | None) -> float | None:
    """Flux at zero point 23.9 → AB magnitude; None when the flux is missing or not positive."""
    if flux is None or not flux > 0:
        return None
    return -2.5 * math.log10(flux) + PHOT_ZP


def fluxerr_to_magerr(flux: float | None, fluxerr: float | None) -> float | None:
    if flux is None or fluxerr is None or not flux > 0 or not fluxerr > 0:
        return None
    return _MAG_PER_LN * fluxerr / flux


def limit_to_fluxerr(limiting_mag: float) -> float:
    """The flux error whose 5-sigma level is the limiting magnitude."""
    return mag_to_flux(limiting_mag) / LIMIT_NSIGMA


def fluxerr_to_limit(fluxerr: float | None) -> float | None:
    """The 5-sigma limiting magnitude of a flux error (None when the error is not positive)."""
    if fluxerr is None or not fluxerr > 0:
        return None
    return -2.5 * math.log10(LIMIT_NSIGMA * fluxerr) + PHOT_ZP


class PhotometryPoint(Protocol):
    """The columns of a stored point this module reads (an ORM row or a plain result row)."""

    @property
    def mjd(self) -> float: ...
    @property
    def flux(self) -> float | None: ...
    @property
    def fluxerr(self) -> float: ...
    @property
    def filter(self) -> str: ...
    @property
    def instrument_id(self) -> int: ...
    @property
    def original_limiting_mag(self) -> float | None: ...


def limiting_mag_of(photometry: PhotometryPoint) -> float | None:
    """The limit as it was given, or else the 5-sigma limit of the flux error (SkyPortal's rule)."""
    if photometry.original_limiting_mag is not None:
        return photometry.original_limiting_mag
    return fluxerr_to_limit(photometry.fluxerr)


def export_point(photometry: PhotometryPoint, instrument_name: str) -> dict[str, Any]:
    """SkyPortal's serialization of a point in AB, with both flux and magnitude columns."""
    return {
        "mjd": photometry.mjd,
        "flux": photometry.flux,
        "fluxerr": photometry.fluxerr,
        "mag": flux_to_mag(photometry.flux),
        "magerr": fluxerr_to_magerr(photometry.flux, photometry.fluxerr),
        "filter": photometry.filter,
        "magsys": PHOT_SYS,
        "limiting_mag": limiting_mag_of(photometry),
        "zp": PHOT_ZP,
        "instrument_name": instrument_name,
        "instrument_id": photometry.instrument_id,
    }
