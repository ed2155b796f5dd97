"""Benchmark sn_fitter's posterior sampling: the CPU-time distribution over many light curves,
and optionally ESS/s against sncosmo.mcmc_lc on the same light curves.

    .venv/bin/python bench/sn_fit.py [--curves 50] [--compare 0]

Each light curve is a simulated ZTF SN Ia with 28-34 points, fitted with the service's
defaults (free z, survey z prior, chains extended until R-hat < 1.01 and bulk and tail ESS >=
1,000). Reported: CPU seconds per posterior (median, p90, max) with free and with fixed z, the
share of fits that pass every check, and the load average before and after (the machine is
shared: CPU time is what a fit costs, wall time what it waited). ``--compare N`` also runs
sncosmo.mcmc_lc on the first N curves (needs `emcee`: the `bench` extra); ``--single-band N``
fits the r-band points of the first N curves alone (the sampler's fallback) and reports how
many converge and at what CPU cost. Target: median < 0.5 s CPU per 30-point free-z posterior.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sn_fitter  # noqa: F401  (sets SNCOSMO_DATA_DIR)
from sn_fitter.demo import SimulatedLightCurve, random_truth, simulate_ztf_lightcurve
from sn_fitter.fit import fit_lightcurve
from sn_fitter.inputs import LightCurve, Redshift, parse_photometry
from sn_fitter.options import FitOptions
from sn_fitter.quality import az

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


def subset(lc: LightCurve, keep: np.ndarray) -> LightCurve:
    fields = {k: v[keep] if isinstance(v, np.ndarray) else v for k, v in vars(lc).items()}
    return LightCurve(**fields)


def detections_only(lc: LightCurve) -> LightCurve:
    return subset(lc, ~lc.is_limit)


def ours(lc: LightCurve, fix_z: float | None, seed: int) -> dict[str, Any]:
    options = FitOptions(seed=seed, fix_z=fix_z is not None, z_min=Z_BOUNDS[0], z_max=Z_BOUNDS[1])
    started, cpu = time.perf_counter(), time.process_time()
    result = fit_lightcurve(lc, Redshift(fix_z, None, None), options)
    cpu = time.process_time() - cpu
    elapsed = time.perf_counter() - started
    diagnostics = result.diagnostics
    return {
        "seconds": elapsed,
        "cpu": cpu,
        "ess": min(min(diagnostics.ess_bulk.values()), min(diagnostics.ess_tail.values())),
        "rhat": max(diagnostics.rhat.values()),
        "algorithm": result.chains.algorithm,
        "passed": diagnostics.passed,
        "converged": diagnostics.converged,
    }


def sncosmo_mcmc(simulated: SimulatedLightCurve, lc: LightCurve) -> dict[str, Any]:
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
        "ess": min(float(az.ess(draws[:, :, i], method="bulk")) for i in range(len(names))),
        "rhat": max(float(az.rhat(draws[:, :, i])) for i in range(len(names))),
        "algorithm": "emcee (sncosmo.mcmc_lc)",
    }


def line(label: str, run: dict[str, Any]) -> str:
    rate = run["ess"] / run["seconds"]
    return (
        f"  {label:<34} {run['seconds']:7.3f} s  min ESS {run['ess']:7.0f}  "
        f"max R-hat {run['rhat']:.4f}  ESS/s {rate:9.0f}  [{run['algorithm']}]"
    )


def distribution(label: str, runs: list[dict[str, Any]]) -> str:
    cpu = np.array([run["cpu"] for run in runs])
    wall = np.array([run["seconds"] for run in runs])
    passed = sum(bool(run["passed"]) for run in runs)
    return (
        f"  {label}: CPU s per posterior median {np.median(cpu):.3f}, "
        f"p90 {np.quantile(cpu, 0.9):.3f}, max {cpu.max():.3f} (wall median "
        f"{np.median(wall):.3f}, max {wall.max():.3f}); {passed}/{len(runs)} pass every check"
    )


def compare(curves: list[SimulatedLightCurve]) -> None:
    ratios = []
    for index, simulated in enumerate(curves):
        lc = parse_photometry(simulated.photometry_csv())
        det = ours(detections_only(lc), None, seed=index)
        reference = sncosmo_mcmc(simulated, lc)
        print(line("sn_fitter, free z, detections only", det))
        print(line("sncosmo.mcmc_lc, free z, detections", reference))
        ratios.append((det["ess"] / det["seconds"]) / (reference["ess"] / reference["seconds"]))
    print(
        f"  ESS/s vs sncosmo.mcmc_lc: min {min(ratios):.0f}x, "
        f"median {statistics.median(ratios):.0f}x"
    )


def single_band(curves: list[SimulatedLightCurve]) -> None:
    runs = []
    for index, simulated in enumerate(curves):
        lc = parse_photometry(simulated.photometry_csv())
        alone = subset(lc, lc.band == "ztfr")
        runs.append(ours(alone, None, seed=index))
        print(
            f"  r band alone {index:3d}: {alone.n_detections} detections, "
            f"{runs[-1]['cpu']:.2f} s CPU, min ESS {runs[-1]['ess']:.0f}, "
            f"R-hat {runs[-1]['rhat']:.4f} [{runs[-1]['algorithm']}]"
        )
    cpu = np.array([run["cpu"] for run in runs])
    converged = sum(bool(run["converged"]) for run in runs)
    print(
        f"  r band alone: {converged}/{len(runs)} converge (R-hat < 1.01, bulk and tail ESS >= "
        f"1,000); CPU s median {np.median(cpu):.2f}, p90 {np.quantile(cpu, 0.9):.2f}, "
        f"max {cpu.max():.2f}"
    )


def load_average(when: str) -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {when}: {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cores)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--curves", type=int, default=50)
    parser.add_argument("--compare", type=int, default=0)
    parser.add_argument("--single-band", type=int, default=0)
    args = parser.parse_args()
    curves = light_curves(args.curves)
    print(load_average("before"))
    first = parse_photometry(curves[0].photometry_csv())
    cold = ours(first, None, seed=0)  # builds the redshift tables of ztfg/ztfr in this process
    print(f"cold start (first fit in a process, tables built): {cold['cpu']:.2f} s CPU")
    free, fixed = [], []
    for index, simulated in enumerate(curves):
        lc = parse_photometry(simulated.photometry_csv())
        free.append(ours(lc, None, seed=index))
        fixed.append(ours(lc, simulated.truth["z"], seed=index))
        print(
            f"curve {index:3d}: {len(lc)} points, z={simulated.truth['z']:.3f}  free z "
            f"{free[-1]['cpu']:.3f} s CPU ({free[-1]['algorithm']}, min ESS "
            f"{free[-1]['ess']:.0f}, R-hat {free[-1]['rhat']:.4f})  "
            f"fixed z {fixed[-1]['cpu']:.3f} s"
        )
    print(f"summary over {len(curves)} light curves of 28-34 points:")
    print(distribution("free z ", free))
    print(distribution("fixed z", fixed))
    print(load_average("after"))
    if args.compare:
        compare(curves[: args.compare])
    if args.single_band:
        single_band(curves[: args.single_band])
        print(load_average("after the single-band fits"))


if __name__ == "__main__":
    main()
