"""What the service sends back: plot, InferenceData (netCDF4), samples, model light curve."""

from __future__ import annotations

import base64
import io
import math
import os
import tempfile
from typing import TYPE_CHECKING, Any

import joblib
import numpy as np
import sncosmo

from sn_fitter.fit import FitResult, chi2_per_dof
from sn_fitter.model import DirectModel, LightCurveModel
from sn_fitter.plots import Curves, corner_plot, lightcurve_plot
from sn_fitter.quality import ESS_TARGET, RHAT_TARGET, az

if TYPE_CHECKING:
    pass

PLOT_DRAWS = 300  # posterior draws used for model curves and bands
CURVE_POINTS = 120
CURVE_MARGIN = 10.0  # days drawn beyond the data, where the model is defined
EDGE_QUANTILE = 0.025  # the grid ends where this fraction of draws have left their range
MAX_POSTERIOR_SAMPLES = 4000
ZP_AB = 23.9


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def finite(value: Any) -> Any:
    """Plain JSON values: numpy scalars to Python, NaN/inf to None (never NaN in JSON)."""
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, np.ndarray):
        return finite(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return value


def _draw_subset(result: FitResult, count: int, seed: int = 0) -> np.ndarray:
    flat = result.flat_samples
    if len(flat) <= count:
        return flat
    rng = np.random.default_rng(seed)
    return flat[rng.choice(len(flat), size=count, replace=False)]


def model_phase_range(model: LightCurveModel) -> tuple[float, float]:
    """Rest-frame phases (days) where the model is defined; outside them it has no flux."""
    if isinstance(model, DirectModel):
        return float(model.model.source.minphase()), float(model.model.source.maxphase())
    nodes = next(iter(model.tables.values())).phase_nodes
    return float(nodes[0]), float(nodes[-1])


def model_time_ranges(result: FitResult, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per parameter row, the MJDs ``t0 + phase * (1 + z)`` bounding the model's range."""
    theta = np.atleast_2d(theta)
    t0 = theta[:, result.param_names.index("t0")]
    if result.z_fixed is not None:
        z = np.full(len(theta), result.z_fixed)
    else:
        z = theta[:, result.param_names.index("z")]
    first, last = model_phase_range(result.model)
    return t0 + first * (1.0 + z), t0 + last * (1.0 + z)


def _curve_times(result: FitResult, draws: np.ndarray) -> np.ndarray:
    """The plotting grid: the data span plus a margin, cut to where all but a few draws are
    defined, or, when the draws share no range, to the posterior median parameters' range."""
    lc = result.lightcurve
    starts, stops = model_time_ranges(result, draws)
    start = max(lc.time.min() - CURVE_MARGIN, np.quantile(starts, 1.0 - EDGE_QUANTILE))
    stop = min(lc.time.max() + CURVE_MARGIN, np.quantile(stops, EDGE_QUANTILE))
    if start >= stop:
        (first,), (last,) = model_time_ranges(result, np.median(result.flat_samples, axis=0))
        start = max(lc.time.min() - CURVE_MARGIN, first)
        stop = min(lc.time.max() + CURVE_MARGIN, last)
    return np.linspace(start, stop, CURVE_POINTS) if start < stop else np.empty(0)


def model_curves(result: FitResult) -> Curves:
    """Per band: time grid and the 16/50/84 percentiles of the model flux (zp 23.9 AB).

    Only epochs inside the model's time range are drawn: outside it the model has no flux
    (sncosmo returns 0), which used to show as a vertical drop to zero at the curve's ends.
    Each draw counts only where it is defined; epochs where most draws are not are left out.
    """
    draws = _draw_subset(result, PLOT_DRAWS)
    starts, stops = model_time_ranges(result, draws)
    times = _curve_times(result, draws)
    defined = (times >= starts[:, None]) & (times <= stops[:, None])
    keep = defined.mean(axis=0) >= 0.5 if len(draws) else np.zeros(len(times), dtype=bool)
    times, defined = times[keep], defined[:, keep]
    curves = {}
    for band in sorted(set(result.lightcurve.band)):
        if len(times):
            flux = np.where(defined, result.model.flux_at(draws, times, band), np.nan)
            low, median, high = np.nanpercentile(flux, [15.865, 50.0, 84.135], axis=0)
        else:
            low = median = high = np.empty(0)
        curves[band] = {"time": times, "median": median, "low": low, "high": high}
    return curves


def model_lightcurve(curves: Curves) -> dict[str, list[list[float]]]:
    """SkyPortal's ``{filter: [[mjd, mag_median, mag_lo, mag_hi], ...]}`` in apparent AB mag.

    ``mag_lo``/``mag_hi`` bound the 68% band (mag_lo is the brighter, numerically smaller);
    epochs where the model flux is not positive have no magnitude and are left out, and so are
    epochs outside the model's time range (``model_curves`` never has them).
    """
    out: dict[str, list[list[float]]] = {}
    for band, curve in curves.items():
        rows = []
        for t, med, low, high in zip(
            curve["time"], curve["median"], curve["low"], curve["high"], strict=True
        ):
            if med > 0 and low > 0 and high > 0:
                mags = [ZP_AB - 2.5 * math.log10(f) for f in (med, high, low)]
                rows.append([round(float(t), 5), *(round(m, 5) for m in mags)])
        out[band] = rows
    return out


def inference_data(result: FitResult) -> az.InferenceData:
    """ArviZ InferenceData: ``posterior`` (natural units), ``sample_stats`` (``lp``: log
    likelihood + log prior) and ``observed_data`` (the photometry as fitted)."""
    lc = result.lightcurve
    posterior = {name: result.samples[:, :, i] for i, name in enumerate(result.param_names)}
    observed = {
        "mjd": lc.time,
        "flux": lc.flux,
        "fluxerr": lc.fluxerr,
        "flux_limit": lc.flux_limit,
        "zp": lc.zp,
        "band": lc.band.astype(str),
        "magsys": lc.magsys.astype(str),
    }
    dims = {name: ["observation"] for name in observed}
    attrs = {
        "inference_library": "sn_fitter",
        "model": result.source,
        "sampler": result.chains.algorithm,
        "z_prior": result.z_prior.label() if result.z_prior else "z fixed",
        "checks_passed": int(result.diagnostics.passed),
    }
    return az.from_dict(
        posterior=posterior,
        sample_stats={"lp": result.log_density},
        observed_data=observed,
        dims=dims,
        attrs=attrs,
    )


def inference_netcdf(result: FitResult) -> bytes:
    """The InferenceData as netCDF4 bytes (``arviz.from_netcdf`` reads them back)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "posterior.nc")
        inference_data(result).to_netcdf(path)
        with open(path, "rb") as handle:
            return handle.read()


def posterior_samples(result: FitResult) -> dict[str, list[float]]:
    flat = result.flat_samples
    if len(flat) > MAX_POSTERIOR_SAMPLES:
        step = math.ceil(len(flat) / MAX_POSTERIOR_SAMPLES)
        flat = flat[::step]
    return {name: flat[:, i].tolist() for i, name in enumerate(result.param_names)}


def results_dict(result: FitResult, fix_z: bool) -> dict[str, Any]:
    """Best fit, errors, posterior summaries, goodness of fit and sampler diagnostics."""
    flat = result.flat_samples
    names = result.param_names
    chains = result.chains
    summary = {}
    for i, name in enumerate(names):
        column = flat[:, i]
        q = np.percentile(column, [2.5, 15.865, 50.0, 84.135, 97.5])
        summary[name] = {
            "mean": column.mean(),
            "std": column.std(ddof=1),
            "median": q[2],
            "q16": q[1],
            "q84": q[3],
            "q2.5": q[0],
            "q97.5": q[4],
        }
    diagnostics = result.diagnostics
    lc = result.lightcurve
    return finite(
        {
            "model": result.source,
            "model_version": result.source_version,
            "source": result.source,
            "param_names": names,
            "best_fit": result.best_fit,
            "errors": {n: summary[n]["std"] for n in names},
            "posterior": summary,
            "chi2": result.chi2,
            "ndof": result.ndof,
            "chi2_per_dof": chi2_per_dof(result),
            "n_detections": lc.n_detections,
            "n_upper_limits": lc.n_limits,
            "n_ignored_rows": lc.ignored_rows,
            "bands": lc.band_sources,
            "fix_z": fix_z,
            "redshift": {
                "fixed": result.z_fixed is not None,
                "value": result.z_fixed,
                "bounds": list(result.z_range) if result.z_range else None,
                "prior": result.z_prior.describe() if result.z_prior else None,
            },
            "bounds": {n: list(result.bounds[i]) for i, n in enumerate(names)},
            "sampler": {
                "algorithm": chains.algorithm,
                "num_chains": int(result.samples.shape[0]),
                "num_draws": int(result.samples.shape[1]),
                "acceptance_rate": chains.acceptance,
                "log_density_evaluations": chains.evaluations,
                "seed": chains.seed,
                "rounds": chains.rounds,
                "out_of_time": chains.out_of_time,
                "rhat": diagnostics.rhat,
                "ess_bulk": diagnostics.ess_bulk,
                "ess_tail": diagnostics.ess_tail,
                "rhat_target": RHAT_TARGET,
                "ess_target": ESS_TARGET,
                "converged": diagnostics.converged,
                "elapsed_seconds": result.elapsed,
            },
            "checks": {
                "passed": diagnostics.passed,
                "failures": diagnostics.failures(),
                "bound_piles": [vars(pile) for pile in diagnostics.piles],
            },
            "notes": result.notes,
            "sncosmo_version": sncosmo.__version__,
        }
    )


def results_joblib(results: dict[str, Any], result: FitResult) -> bytes:
    """The same results for SkyPortal clients that read joblib: plain dicts, lists, floats and
    numpy arrays only (skyhook decodes it with a restricted unpickler)."""
    payload = dict(results)
    payload["samples"] = {
        n: np.ascontiguousarray(result.flat_samples[:, i]) for i, n in enumerate(result.param_names)
    }
    buffer = io.BytesIO()
    joblib.dump(payload, buffer, compress=3)
    return buffer.getvalue()


def fit_message(result: FitResult, shown_chi2: str) -> str:
    """ "Good results" only when every check passes; otherwise the checks that failed."""
    diagnostics = result.diagnostics
    if diagnostics.passed:
        return f"Good results with chi^2/dof={shown_chi2}"
    problems = []
    if not diagnostics.converged:
        why = "; ".join(diagnostics.convergence_failures())
        budget = " within the time budget" if result.chains.out_of_time else ""
        problems.append(f"the chains did not converge{budget}: {why}")
    problems += [pile.describe() for pile in diagnostics.piles]
    return f"Fit finished with chi^2/dof={shown_chi2}; warning: " + "; ".join(problems)


def success_body(result: FitResult, fix_z: bool, title: str | None) -> dict[str, Any]:
    curves = model_curves(result)
    results = results_dict(result, fix_z)
    ratio = results["chi2_per_dof"]
    shown = f"{ratio:.2f}" if ratio is not None else f"{result.chi2:.2f}/{result.ndof}"
    message = fit_message(result, shown)
    if result.notes:
        message += "; " + "; ".join(result.notes)
    analysis = {
        "plots": [
            {"format": "png", "data": b64(lightcurve_plot(result, curves, title))},
            {"format": "png", "data": b64(corner_plot(result))},
        ],
        "inference_data": {"format": "netcdf4", "data": b64(inference_netcdf(result))},
        "posterior_samples": finite(posterior_samples(result)),
        "model_lightcurve": model_lightcurve(curves),
        "model_name": result.source,
        "n_detections": result.lightcurve.n_detections,
        "results": {"format": "json", "data": results},
        "results_joblib": {"format": "joblib", "data": b64(results_joblib(results, result))},
    }
    return {"status": "success", "message": message, "analysis": analysis}


def failure_body(message: str) -> dict[str, Any]:
    return {"status": "failure", "message": message, "analysis": {}}
