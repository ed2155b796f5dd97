"""Benchmark sn_fitter's posterior sampling against sncosmo.mcmc_lc on the same light curves.

    .venv/bin/python bench/sn_fit.py [--curves 3]

Needs `emcee` for sncosmo.mcmc_lc (`pip install emcee`, or the `bench` extra). Each light
curve is a simulated ZTF SN Ia (~30 points). Reported per sampler: wall time, minimum bulk ESS
over the parameters, maximum R-hat, and ESS per second; then the ratio. Targets: sn_fitter
< 1 s per light curve with ESS >= 1000 and R-hat < 1.01, and >= 10x mcmc_lc's ESS/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sn_fitter  # noqa: F401  (sets SNCOSMO_DATA_DIR)
from sn_fitter.demo import SimulatedLightCurve, random_truth, simulate_ztf_lightcurve
from sn_fitter.diagnostics import ess_bulk, rhat
from sn_fitter.fit import fit_lightcurve
from sn_fitter.inputs import LightCurve, Redshift, parse_photometry
from sn_fitter.options import FitOptions

Z_BOUNDS = (0.001, 0.3)


def light_curves(count: int, seed: int = 11) -> list[SimulatedLightCurve]:
    """Simulated light curves with 28-34 points."""
    rng = np.random.default_rng(seed)
    chosen: list[SimulatedLightCurve] = []
    while len(chosen) < count:
        simulated = simulate_ztf_lightcurve(random_truth(rng), rng)
        if 28 <= len(simulated.mjd) <= 34:
            chosen.append(simulated)
    return chosen


def detections_only(lc: LightCurve) -> LightCurve:
    keep = ~lc.is_limit
    fields = {k: v[keep] if isinstance(v, np.ndarray) else v for k, v in vars(lc).items()}
    return LightCurve(**fields)


def ours(lc: LightCurve, fix_z: float | None, seed: int) -> dict[str, float]:
    options = FitOptions(seed=seed, fix_z=fix_z is not None, z_min=Z_BOUNDS[0], z_max=Z_BOUNDS[1])
    started = time.perf_counter()
    result = fit_lightcurve(lc, Redshift(fix_z, None, None), options)
    elapsed = time.perf_counter() - started
    chains = result.chains
    return {
        "seconds": elapsed,
        "ess": min(chains.ess_bulk.values()),
        "rhat": max(chains.rhat.values()),
        "algorithm": chains.algorithm,
    }


def sncosmo_mcmc(simulated: SimulatedLightCurve, lc: LightCurve) -> dict[str, float]:
    import sncosmo
    from astropy.table import Table

    keep = ~lc.is_limit
    data = Table(
        {
            "time": lc.time[keep],
            "band": lc.band[keep].astype(str),
            "flux": lc.flux[keep],
            "fluxerr": lc.fluxerr[keep],
            "zp": lc.zp[keep],
            "zpsys": lc.magsys[keep].astype(str),
        }
    )
    model = sncosmo.Model("salt3")
    names = ["z", "t0", "x0", "x1", "c"]
    bounds = {"z": Z_BOUNDS, "x1": (-5, 5), "c": (-0.5, 1.5)}
    np.random.seed(0)
    started = time.perf_counter()
    # longer than mcmc_lc's defaults (10 walkers, 200 + 1000 steps), which leave R-hat > 1.1
    walkers = 20
    result, _ = sncosmo.mcmc_lc(
        data, model, names, bounds=bounds, nwalkers=walkers, nburn=500, nsamples=2000
    )
    elapsed = time.perf_counter() - started
    draws = result.samples.reshape(-1, walkers, len(names)).transpose(1, 0, 2)
    return {
        "seconds": elapsed,
        "ess": min(ess_bulk(draws[:, :, i]) for i in range(len(names))),
        "rhat": max(rhat(draws[:, :, i]) for i in range(len(names))),
        "algorithm": "emcee (sncosmo.mcmc_lc)",
    }


def line(label: str, run: dict[str, float]) -> str:
    rate = run["ess"] / run["seconds"]
    return (
        f"  {label:<34} {run['seconds']:7.3f} s  min ESS {run['ess']:7.0f}  "
        f"max R-hat {run['rhat']:.4f}  ESS/s {rate:9.0f}  [{run['algorithm']}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--curves", type=int, default=3)
    args = parser.parse_args()
    curves = light_curves(args.curves)

    first = parse_photometry(curves[0].photometry_csv())
    cold = ours(first, None, seed=0)  # builds the redshift tables of ztfg/ztfr in this process
    print(f"cold start (first fit in a process, tables built): {cold['seconds']:.2f} s")

    ratios, warm_times, fixed_times = [], [], []
    for index, simulated in enumerate(curves):
        lc = parse_photometry(simulated.photometry_csv())
        print(
            f"light curve {index}: {len(lc)} points ({lc.n_detections} detections, "
            f"{lc.n_limits} limits), z={simulated.truth['z']:.3f}"
        )
        free = ours(lc, None, seed=index)
        det = ours(detections_only(lc), None, seed=index)
        fixed = ours(lc, simulated.truth["z"], seed=index)
        reference = sncosmo_mcmc(simulated, lc)
        print(line("sn_fitter, free z", free))
        print(line("sn_fitter, free z, detections only", det))
        print(line("sn_fitter, fixed z", fixed))
        print(line("sncosmo.mcmc_lc, free z, detections", reference))
        ratio = (det["ess"] / det["seconds"]) / (reference["ess"] / reference["seconds"])
        print(f"  ESS/s ratio sn_fitter / mcmc_lc (same detections): {ratio:.0f}x")
        ratios.append(ratio)
        warm_times.append(free["seconds"])
        fixed_times.append(fixed["seconds"])

    print("summary:")
    print(f"  sn_fitter free z: median {statistics.median(warm_times):.3f} s per light curve")
    print(f"  sn_fitter fixed z: median {statistics.median(fixed_times):.3f} s per light curve")
    print(
        f"  ESS/s vs sncosmo.mcmc_lc: min {min(ratios):.0f}x, median "
        f"{statistics.median(ratios):.0f}x"
    )


if __name__ == "__main__":
    main()
