"""Simulated light curves with a ZTF-like cadence: nightly visits in g and r during an
eight-month observing season each year, at night-time hours (so the one-day alias is real),
with magnitude-dependent noise."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gateway.periodogram import LightCurve

Shape = Callable[[np.ndarray], np.ndarray]  # phase in [0, 1) -> magnitude offset

START_MJD = 58_300.0


def ztf_times(
    rng: np.random.Generator, years: float, n_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """(mjd, band) for about ``n_points`` visits, alternating g and r."""
    nights = np.arange(int(years * 365.25))
    in_season = (nights % 365.25) < 240
    nights = nights[in_season]
    chosen = np.sort(rng.choice(nights, size=min(n_points, nights.size), replace=False))
    extra = n_points - chosen.size
    if extra > 0:
        chosen = np.sort(np.concatenate([chosen, rng.choice(nights, size=extra)]))
    hours = rng.uniform(4.0, 11.0, size=chosen.size) / 24.0  # Palomar night, in UT
    bands = np.where(rng.random(chosen.size) < 0.5, "ztfg", "ztfr")
    return START_MJD + chosen + hours, bands


def sinusoid(phase: np.ndarray) -> np.ndarray:
    return 0.3 * np.sin(2 * np.pi * phase)


def rr_lyrae(phase: np.ndarray) -> np.ndarray:
    """An RRab-like curve: a fast rise (10 % of the cycle) and a slow decline, 0.8 mag deep."""
    rise = phase < 0.1
    return np.where(rise, 0.8 - 8.0 * phase, 0.8 * (phase - 0.1) / 0.9) - 0.4


def light_curve(
    rng: np.random.Generator,
    period: float | None,
    shape: Shape = sinusoid,
    *,
    years: float = 3.0,
    n_points: int = 600,
    base_mag: float = 18.0,
) -> LightCurve:
    """A light curve of ``shape`` at ``period`` (pure noise when None); g is 0.3 mag fainter
    than r and its amplitude 1.3 times larger."""
    mjd, band = ztf_times(rng, years, n_points)
    is_g = band == "ztfg"
    signal = np.zeros(mjd.size) if period is None else shape((mjd / period) % 1.0)
    mag = base_mag + 0.3 * is_g + signal * np.where(is_g, 1.3, 1.0)
    magerr = 0.02 + 0.04 * 10 ** (0.4 * (mag - 19.0))
    mag = mag + rng.normal(0.0, magerr)
    return LightCurve(mjd, mag, magerr, band)
