"""Simulated ZTF light curves of type Ia supernovae (salt3), for the demo and the tests.

``demo_lightcurve`` returns photometry in the columnar form skyhook's ``POST /api/photometry``
takes (flux at zp 23.9 AB, ``None`` flux for non-detections) plus the true parameters.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import numpy as np

import sn_fitter  # noqa: F401  (sets SNCOSMO_DATA_DIR before sncosmo loads files)
from shared.science.photometry import PHOTOMETRY_CSV_COLUMNS

ZP = 23.9
DETECTION_SNR = 5.0
ABSMAG_B = -19.3
CALIBRATION_FRACTION = 0.01  # flux-proportional error floor of the photometry


@dataclass(frozen=True)
class SimulatedLightCurve:
    truth: dict[str, float]
    mjd: np.ndarray
    band: np.ndarray
    flux: np.ndarray  # NaN for non-detections
    fluxerr: np.ndarray

    @property
    def redshift(self) -> float:
        return self.truth["z"]

    def columnar(self) -> dict[str, list]:
        """skyhook/SkyPortal ``POST /api/photometry`` flux-space columns."""
        return {
            "mjd": [round(float(t), 6) for t in self.mjd],
            "filter": [str(b) for b in self.band],
            "flux": [None if math.isnan(f) else float(f) for f in self.flux],
            "fluxerr": [float(e) for e in self.fluxerr],
            "zp": [ZP] * len(self.mjd),
            "magsys": ["ab"] * len(self.mjd),
        }

    def photometry_csv(self, instrument: str = "ZTF") -> str:
        """The CSV a SkyPortal-compatible dispatcher sends (same columns and conventions)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(PHOTOMETRY_CSV_COLUMNS)
        for t, b, f, e in zip(self.mjd, self.band, self.flux, self.fluxerr, strict=True):
            detected = not math.isnan(f)
            mag = -2.5 * math.log10(f) + ZP if detected and f > 0 else None
            magerr = 2.5 / math.log(10) * e / f if mag is not None else None
            limit = -2.5 * math.log10(DETECTION_SNR * e) + ZP
            writer.writerow(
                [
                    t,
                    f if detected else "",
                    e,
                    mag or "",
                    magerr or "",
                    b,
                    "ab",
                    limit,
                    ZP,
                    instrument,
                    "",
                ]
            )
        return out.getvalue()


def ztf_cadence(t0: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Epochs every ~3 nights alternating g and r, from ~30 days before to ~45 after peak."""
    start = t0 - rng.uniform(26.0, 32.0)
    epochs = start + np.cumsum(rng.uniform(1.5, 4.5, size=40))
    epochs = epochs[epochs < t0 + rng.uniform(35.0, 50.0)]
    bands = np.where(np.arange(len(epochs)) % 2 == 0, "ztfg", "ztfr")
    swap = rng.random(len(epochs)) < 0.3  # both bands on some nights
    extra_t = epochs[swap] + rng.uniform(0.02, 0.1, size=int(swap.sum()))
    extra_b = np.where(bands[swap] == "ztfg", "ztfr", "ztfg")
    mjd = np.concatenate([epochs, extra_t])
    band = np.concatenate([bands, extra_b])
    order = np.argsort(mjd)
    return mjd[order], band[order]


def simulate_ztf_lightcurve(
    truth: dict[str, float], rng: np.random.Generator
) -> SimulatedLightCurve:
    """Observe a salt3 supernova with ZTF-like depth (5-sigma ~20.5 mag) and S/N>=5 detections."""
    import sncosmo

    model = sncosmo.Model("salt3")
    model.set(**{k: truth[k] for k in ("z", "t0", "x1", "c")})
    if "x0" in truth:
        model.set(x0=truth["x0"])
    else:
        model.set_source_peakabsmag(truth.get("absmag", ABSMAG_B), "bessellb", "ab")
    mjd, band = ztf_cadence(truth["t0"], rng)
    true_flux = model.bandflux(band, mjd, zp=ZP, zpsys="ab")
    depth = rng.uniform(20.0, 21.0, size=len(mjd))  # 5-sigma limiting magnitude per epoch
    sky = 10.0 ** (-0.4 * (depth - ZP)) / DETECTION_SNR
    fluxerr = np.sqrt(sky**2 + (CALIBRATION_FRACTION * np.clip(true_flux, 0, None)) ** 2)
    observed = true_flux + fluxerr * rng.standard_normal(len(mjd))
    flux = np.where(observed / fluxerr >= DETECTION_SNR, observed, np.nan)
    params = dict(zip(model.param_names, map(float, model.parameters), strict=True))
    return SimulatedLightCurve(params, mjd, band, flux, fluxerr)


def random_truth(rng: np.random.Generator) -> dict[str, float]:
    """A plausible ZTF SN Ia: z in 0.02-0.08, x1 ~ N(0, 1), c ~ N(0, 0.08), M_B scatter 0.15."""
    return {
        "z": float(rng.uniform(0.02, 0.08)),
        "t0": float(rng.uniform(60000.0, 60300.0)),
        "x1": float(np.clip(rng.normal(0.0, 1.0), -3, 3)),
        "c": float(np.clip(rng.normal(0.0, 0.08), -0.25, 0.4)),
        "absmag": float(ABSMAG_B + rng.normal(0.0, 0.15)),
    }


def demo_lightcurve(seed: int = 7) -> SimulatedLightCurve:
    """A realistic simulated ZTF SN Ia light curve (ztfg/ztfr) with known salt3 parameters."""
    rng = np.random.default_rng(seed)
    truth = {"z": 0.045, "t0": 60250.0, "x1": 0.4, "c": 0.03, "absmag": ABSMAG_B}
    return simulate_ztf_lightcurve(truth, rng)
