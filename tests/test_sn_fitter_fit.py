"""The fitting function with other sncosmo sources and with data it must refuse."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import sncosmo

from shared.science.corner import corner_figure
from sn_fitter.demo import demo_lightcurve, simulate_ztf_lightcurve
from sn_fitter.fit import FitFailure, fit_lightcurve
from sn_fitter.inputs import LightCurve, Redshift, parse_photometry
from sn_fitter.job import encode
from sn_fitter.options import FitOptions
from sn_fitter.plots import lightcurve_figure, warning_text
from sn_fitter.products import model_curves, success_body
from sn_fitter.sampler import laplace_covariance

QUICK: dict[str, Any] = {"num_samples": 300, "num_warmup": 200, "num_chains": 2, "seed": 4}


@pytest.fixture(scope="module")
def lightcurve() -> LightCurve:
    return parse_photometry(demo_lightcurve(seed=7).photometry_csv())


def test_hsiao_runs_offline_on_the_subsampled_template(lightcurve: LightCurve) -> None:
    result = fit_lightcurve(
        lightcurve, Redshift(0.045, None, None), FitOptions(source="hsiao", **QUICK)
    )
    assert result.param_names == ["z", "t0", "amplitude"]
    if result.source == "hsiao-subsampled":  # no network: sncosmo cannot fetch "hsiao"
        assert "not available offline" in result.notes[0]
    else:
        assert result.source == "hsiao" and result.notes == []
    assert result.diagnostics.passed, result.diagnostics.failures()


def test_any_other_sncosmo_source_uses_sncosmo_directly(lightcurve: LightCurve) -> None:
    template = sncosmo.get_source("hsiao-subsampled")
    flux = template._flux(template._phase, template._wave)
    source = sncosmo.StretchSource(template._phase, template._wave, flux, name="stretch-test")
    sncosmo.register(source, force=True)
    result = fit_lightcurve(
        lightcurve,
        Redshift(0.045, None, None),
        FitOptions(source="stretch-test", fix_z=True, **QUICK),
    )
    assert result.model.kind == "direct"
    assert result.param_names == ["t0", "amplitude", "s"]
    assert np.isfinite(result.flat_samples).all()
    assert abs(result.best_fit["t0"] - 60250.0) < 10.0
    body = json.loads(encode(success_body(result, True, "stretch")))
    assert set(body["analysis"]["model_lightcurve"]) == {"ztfg", "ztfr"}


def test_fixed_redshift_outside_the_model_coverage_is_refused(lightcurve: LightCurve) -> None:
    with pytest.raises(FitFailure, match=r"does not cover bands ztfg, ztfr at z=1\.5"):
        fit_lightcurve(lightcurve, Redshift(1.5, None, None), FitOptions(fix_z=True))


def test_too_few_detections_or_only_limits_are_refused(lightcurve: LightCurve) -> None:
    keep = np.flatnonzero(~lightcurve.is_limit)[:3]
    few = _subset(lightcurve, keep)
    with pytest.raises(FitFailure, match="need at least 5 detections"):
        fit_lightcurve(few, Redshift(None, None, None), FitOptions())
    limits = _subset(lightcurve, np.flatnonzero(lightcurve.is_limit))
    with pytest.raises(FitFailure, match="no detections"):
        fit_lightcurve(limits, Redshift(None, None, None), FitOptions())


def _subset(lc: LightCurve, index: np.ndarray) -> LightCurve:
    fields = {k: v[index] if isinstance(v, np.ndarray) else v for k, v in vars(lc).items()}
    return type(lc)(**fields)


def _truncated_gaussian(
    low: float, high: float, mean: float, sigma: float
) -> Callable[[np.ndarray], np.ndarray]:
    def log_density(x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(x)[:, 0]
        inside = (x >= low) & (x <= high)
        return np.where(inside, -0.5 * ((x - mean) / sigma) ** 2, -np.inf)

    return log_density


def test_the_hessian_stencil_never_leaves_the_support_at_a_bound() -> None:
    """The mode on z_min = 0.001 with 2e-4 steps: 0.001 + 2*0.0002 - 0.0002 - 0.0002 rounds
    below 0.001, where the density is -inf; the curvature must still come out finite."""
    fun = _truncated_gaussian(0.001, 0.3, 0.0005, 0.003)
    cov = laplace_covariance(fun, np.array([0.001]), np.array([[0.001, 0.3]]), np.array([2e-4]))
    assert np.isfinite(cov).all() and cov[0, 0] > 0


def test_a_redshift_mode_on_the_lower_bound_is_fitted_and_flagged() -> None:
    """A z = 0.01 supernova fitted with z_min = 0.03 and a flat prior: the z posterior sits on
    the bound. The fit succeeds with finite samples and the message names the bound."""
    rng = np.random.default_rng(3)
    simulated = simulate_ztf_lightcurve({"z": 0.01, "t0": 60100.0, "x1": 0.0, "c": 0.0}, rng)
    lc = parse_photometry(simulated.photometry_csv())
    options = FitOptions(z_min=0.03, z_prior="flat", seed=2)
    result = fit_lightcurve(lc, Redshift(None, None, None), options)
    z = result.flat_samples[:, 0]
    assert np.isfinite(result.flat_samples).all() and z.min() >= 0.03
    assert np.quantile(z, 0.9) < 0.031  # the data want a lower z: the posterior is at 0.03
    assert [(p.name, p.side) for p in result.diagnostics.piles] == [("z", "lower")]
    body = json.loads(encode(success_body(result, False, "bound")))
    assert body["status"] == "success"
    assert not body["message"].startswith("Good results")
    assert "z piles at its lower bound 0.03" in body["message"]
    assert body["analysis"]["results"]["data"]["checks"]["passed"] is False
    assert len(body["analysis"]["plots"]) == 2  # light curve and corner plot
    flat = result.flat_samples
    corner = corner_figure(
        {n: flat[:, i] for i, n in enumerate(result.param_names)},
        result.best_fit,
        warning_text(result),
    )
    light = lightcurve_figure(result, model_curves(result), "bound")
    for figure in (corner, light):
        shown = " ".join(
            t.get_text() for t in figure.texts + [t for a in figure.axes for t in a.texts]
        )
        assert "BOUND-LIMITED: z piles at its" in shown


def test_a_source_beyond_z_max_is_not_called_good() -> None:
    """z = 0.42 fitted with z_max = 0.3 once said "Good results" with c biased by 7 sigma."""
    rng = np.random.default_rng(8)
    truth = {"z": 0.42, "t0": 60100.0, "x1": 0.0, "c": 0.0, "x0": 1.5e-4}
    lc = parse_photometry(simulate_ztf_lightcurve(truth, rng).photometry_csv())
    result = fit_lightcurve(lc, Redshift(None, None, None), FitOptions(z_prior="flat", seed=3))
    message = json.loads(encode(success_body(result, False, "far")))["message"]
    assert "z piles at its upper bound 0.3" in message, message


def test_the_source_redshift_is_a_gaussian_prior_with_its_error(lightcurve: LightCurve) -> None:
    """Without fix_z the source's redshift is not ignored: N(z, error) narrows the posterior
    (the demo's z = 0.045 +- 0.0045 from the light curve alone)."""
    given = Redshift(0.045, 0.0015, "spec")
    result = fit_lightcurve(lightcurve, given, FitOptions(seed=5))
    z = result.flat_samples[:, result.param_names.index("z")]
    assert result.z_prior is not None
    assert result.z_prior.describe() == {"kind": "gaussian", "mean": 0.045, "sigma": 0.0015}
    assert 0.0010 < z.std() < 0.0016  # data (~0.0045) and prior (0.0015) combined
    assert abs(z.mean() - 0.045) < 0.0015
    flat = fit_lightcurve(lightcurve, given, FitOptions(seed=5, z_prior="flat"))
    assert flat.flat_samples[:, 0].std() > 2 * z.std()
    results = json.loads(encode(success_body(result, False, None)))["analysis"]["results"]
    assert results["data"]["redshift"]["prior"]["kind"] == "gaussian"


def test_a_fit_that_runs_out_of_its_time_budget_says_so(lightcurve: LightCurve) -> None:
    """One band alone: a single Student-t proposal cannot fit the z-c-x0 ridge, and with the
    budget spent before the fallback may start, the chains stop short of the targets and the
    message names the failed checks instead of "Good results"."""
    keep = np.flatnonzero(lightcurve.band == "ztfr")
    single = _subset(lightcurve, keep)
    options = FitOptions(max_seconds=0.01, seed=6)  # spent while the mode is found
    result = fit_lightcurve(single, Redshift(None, None, None), options)
    assert result.chains.out_of_time and not result.diagnostics.converged
    message = json.loads(encode(success_body(result, False, "one band")))["message"]
    assert message.startswith("Fit finished with chi^2/dof=")
    assert "the chains did not converge within the time budget" in message
    assert "ESS" in message or "R-hat" in message
