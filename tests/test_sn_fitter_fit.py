"""The fitting function with other sncosmo sources and with data it must refuse."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sncosmo

from sn_fitter.demo import demo_lightcurve
from sn_fitter.fit import FitFailure, fit_lightcurve
from sn_fitter.inputs import Redshift, parse_photometry
from sn_fitter.job import encode
from sn_fitter.options import FitOptions
from sn_fitter.products import success_body

QUICK = {"num_samples": 300, "num_warmup": 200, "num_chains": 2, "seed": 4}


@pytest.fixture(scope="module")
def lightcurve():
    return parse_photometry(demo_lightcurve(seed=7).photometry_csv())


def test_hsiao_runs_offline_on_the_subsampled_template(lightcurve):
    result = fit_lightcurve(
        lightcurve, Redshift(0.045, None, None), FitOptions(source="hsiao", **QUICK)
    )
    assert result.param_names == ["z", "t0", "amplitude"]
    if result.source == "hsiao-subsampled":  # no network: sncosmo cannot fetch "hsiao"
        assert "not available offline" in result.notes[0]
    else:
        assert result.source == "hsiao" and result.notes == []
    assert result.chains.converged(min_ess=100)


def test_any_other_sncosmo_source_uses_sncosmo_directly(lightcurve):
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


def test_fixed_redshift_outside_the_model_coverage_is_refused(lightcurve):
    with pytest.raises(FitFailure, match=r"does not cover bands ztfg, ztfr at z=1\.5"):
        fit_lightcurve(lightcurve, Redshift(1.5, None, None), FitOptions(fix_z=True))


def test_too_few_detections_or_only_limits_are_refused(lightcurve):
    keep = np.flatnonzero(~lightcurve.is_limit)[:3]
    few = _subset(lightcurve, keep)
    with pytest.raises(FitFailure, match="need at least 5 detections"):
        fit_lightcurve(few, Redshift(None, None, None), FitOptions())
    limits = _subset(lightcurve, np.flatnonzero(lightcurve.is_limit))
    with pytest.raises(FitFailure, match="no detections"):
        fit_lightcurve(limits, Redshift(None, None, None), FitOptions())


def _subset(lc, index):
    fields = {k: v[index] if isinstance(v, np.ndarray) else v for k, v in vars(lc).items()}
    return type(lc)(**fields)
