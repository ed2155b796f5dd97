"""Science check of the fitter: its default free-redshift posteriors are calibrated on a
ZTF-like SN Ia population.

N = 200 light curves are simulated here with sncosmo and astropy alone (no sn_fitter code):
SALT3, z ~ U(0.02, 0.12), x1 ~ N(0, 1), c ~ N(0, 0.1), M_B = -19.3 + N(0, 0.12) with the Tripp
terms (distances from Planck18), t0 ~ U(60000, 60100); g and r each observed every 2-3.5
nights from 30-40 days before peak (pre-explosion epochs) to 30-60 days after; a constant
noise per band set so the peak S/N is U(20, 50); points under 5 sigma are sent as 5-sigma
upper limits. They go through the service's CSV parser and fitting function with the
defaults (no redshift given: the survey z prior; free z).

Targets, each band widened to three standard errors of the sample at this N where that is
wider: every parameter's pulls (posterior mean - truth) / posterior std have |mean| < 0.21
(target 0.2; 3/sqrt(200) = 0.21) and std within 1 +- 0.2; the 68 % and 95 % central intervals
contain the truth in 68 % +- 0.099 (target 0.05; 3 sqrt(0.68 0.32 / 200) = 0.099) and
95 % +- 0.046 (target 0.03) of the curves. Measured (seed 2024): mean pulls z 0.08, t0 0.18,
x0 -0.09, x1 0.12, c -0.05; std 0.93-1.05; 68 % coverage 0.615 (t0) to 0.71 (x1); 95 %
coverage 0.935 (c) to 0.955; all 200 fits pass every check. About 190 s of CPU.
"""

from __future__ import annotations

import csv
import io
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest

N_CURVES = 200
NAMES = ("z", "t0", "x0", "x1", "c")
ZP = 23.9
DETECTION_SIGMA = 5.0
PULL_MEAN_BAND = max(0.2, 3.0 / math.sqrt(N_CURVES))
PULL_STD_BAND = max(0.2, 3.0 / math.sqrt(2.0 * (N_CURVES - 1)))


def coverage_band(level: float, target: float) -> float:
    return max(target, 3.0 * math.sqrt(level * (1.0 - level) / N_CURVES))


@dataclass(frozen=True)
class Simulated:
    truth: dict[str, float]
    csv: str


def simulate(rng: np.random.Generator) -> Simulated:
    """One ZTF-like SN Ia light curve, SkyPortal's photometry CSV layout."""
    import sncosmo
    from astropy.cosmology import Planck18

    model = sncosmo.Model("salt3")
    z = rng.uniform(0.02, 0.12)
    x1, c = rng.normal(0.0, 1.0), rng.normal(0.0, 0.1)
    model.set(z=z, t0=rng.uniform(60000.0, 60100.0), x1=x1, c=c)
    absmag = -19.3 + rng.normal(0.0, 0.12) - 0.14 * x1 + 3.1 * c
    model.set_source_peakabsmag(absmag, "bessellb", "ab", cosmo=Planck18)
    t0 = model.get("t0")
    start, stop = t0 - rng.uniform(30.0, 40.0), t0 + rng.uniform(30.0, 60.0)
    rows = []
    for band in ("ztfg", "ztfr"):
        times = start + rng.uniform(0.0, 2.0) + np.cumsum(rng.uniform(2.0, 3.5, size=60))
        times = times[times < stop]
        flux = model.bandflux(band, times, zp=ZP, zpsys="ab")
        sigma = flux.max() / rng.uniform(20.0, 50.0)
        observed = flux + sigma * rng.standard_normal(len(times))
        for t, f in zip(times, observed, strict=True):
            rows.append((float(t), band, float(f), float(sigma)))
    rows.sort()
    truth = dict(zip(model.param_names, map(float, model.parameters), strict=True))
    return Simulated(truth, photometry_csv(rows))


def photometry_csv(rows: list[tuple[float, str, float, float]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["mjd", "flux", "fluxerr", "filter", "magsys", "limiting_mag", "zp"])
    for mjd, band, flux, sigma in rows:
        detected = flux >= DETECTION_SIGMA * sigma
        limit = ZP - 2.5 * math.log10(DETECTION_SIGMA * sigma)
        writer.writerow([mjd, flux if detected else "", sigma, band, "ab", limit, ZP])
    return out.getvalue()


@dataclass
class Calibration:
    pulls: dict[str, np.ndarray]
    inside68: dict[str, np.ndarray]
    inside95: dict[str, np.ndarray]
    passed: int


def _fit_one(index: int, simulated: Simulated) -> tuple[dict[str, tuple[float, bool, bool]], bool]:
    """(pull, inside 68 %, inside 95 %) per parameter, and whether every check passed."""
    from sn_fitter.fit import fit_lightcurve
    from sn_fitter.inputs import parse_photometry, parse_redshift
    from sn_fitter.options import FitOptions

    lightcurve = parse_photometry(simulated.csv)
    result = fit_lightcurve(lightcurve, parse_redshift(None), FitOptions(seed=index))
    assert result.param_names == list(NAMES)
    found: dict[str, tuple[float, bool, bool]] = {}
    for i, name in enumerate(NAMES):
        column, truth = result.flat_samples[:, i], simulated.truth[name]
        q = np.quantile(column, [0.025, 0.16, 0.84, 0.975])
        pull = float((column.mean() - truth) / column.std())
        found[name] = (pull, bool(q[1] <= truth <= q[2]), bool(q[0] <= truth <= q[3]))
    return found, bool(result.diagnostics.passed)


def calibrate(count: int, seed: int = 2024) -> Calibration:
    """Simulated in order from one seed, fitted on every core (each fit is seeded by its index,
    so the result does not depend on how the fits are spread)."""
    from sn_fitter.sncosmo_data import configure_data_dir

    configure_data_dir()  # sncosmo reads the bundled model files, offline
    rng = np.random.default_rng(seed)
    curves = [simulate(rng) for _ in range(count)]
    workers = max(1, min(len(os.sched_getaffinity(0)), 4))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        fitted = list(pool.map(_fit_one, range(count), curves))
    return Calibration(
        {n: np.array([f[n][0] for f, _ in fitted]) for n in NAMES},
        {n: np.array([f[n][1] for f, _ in fitted]) for n in NAMES},
        {n: np.array([f[n][2] for f, _ in fitted]) for n in NAMES},
        sum(passed for _, passed in fitted),
    )


@pytest.mark.slow
def test_default_free_redshift_posteriors_are_calibrated_on_a_ztf_like_population() -> None:
    result = calibrate(N_CURVES)
    band68, band95 = coverage_band(0.68, 0.05), coverage_band(0.95, 0.03)
    report = {
        name: (
            round(float(result.pulls[name].mean()), 3),
            round(float(result.pulls[name].std(ddof=1)), 3),
            round(float(result.inside68[name].mean()), 3),
            round(float(result.inside95[name].mean()), 3),
        )
        for name in NAMES
    }
    for name, (mean, spread, cover68, cover95) in report.items():
        assert abs(mean) < PULL_MEAN_BAND, (name, report)
        assert abs(spread - 1.0) < PULL_STD_BAND, (name, report)
        assert abs(cover68 - 0.68) < band68, (name, report)
        assert abs(cover95 - 0.95) < band95, (name, report)
    # Most default fits meet R-hat/ESS within the time budget (200 of 200 when measured);
    # the others say so in their message rather than claim "Good results".
    assert result.passed >= 0.9 * N_CURVES, f"{result.passed} of {N_CURVES} pass the checks"
