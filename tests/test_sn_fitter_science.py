"""Science check of the fitter: pulls of fits to light curves simulated from known salt3
parameters have mean ~0 and spread ~1 (the posteriors are centred and correctly sized).

30 ZTF-like light curves (g/r every ~3 nights, 5-sigma depth 20-21 mag, S/N>=5 detections,
fainter epochs as upper limits) are simulated with sncosmo itself and fitted with free
redshift by the service's fitting function. With 30 fits the mean pull has a standard error
of 0.18 and the spread ~0.13, so the bounds below are ~3 standard errors wide.
"""

from __future__ import annotations

import numpy as np

from sn_fitter.demo import random_truth, simulate_ztf_lightcurve
from sn_fitter.fit import fit_lightcurve
from sn_fitter.inputs import Redshift, parse_photometry
from sn_fitter.options import FitOptions

N_LIGHTCURVES = 30
MEAN_TOLERANCE = 0.55
SPREAD_RANGE = (0.65, 1.45)


def test_pulls_of_free_redshift_salt3_fits_are_unit_normal():
    rng = np.random.default_rng(2024)
    pulls: dict[str, list[float]] = {name: [] for name in ("z", "t0", "x0", "x1", "c")}
    converged = 0
    for index in range(N_LIGHTCURVES):
        simulated = simulate_ztf_lightcurve(random_truth(rng), rng)
        lightcurve = parse_photometry(simulated.photometry_csv())
        options = FitOptions(num_samples=500, num_warmup=300, seed=index)
        result = fit_lightcurve(lightcurve, Redshift(None, None, None), options)
        assert result.param_names == ["z", "t0", "x0", "x1", "c"]
        converged += result.chains.converged(min_ess=300)
        samples = result.flat_samples
        for i, name in enumerate(result.param_names):
            column = samples[:, i]
            pulls[name].append((column.mean() - simulated.truth[name]) / column.std())
    assert converged >= 0.9 * N_LIGHTCURVES
    for name, values in pulls.items():
        values_arr = np.array(values)
        mean, spread = values_arr.mean(), values_arr.std(ddof=1)
        assert abs(mean) < MEAN_TOLERANCE, f"{name}: mean pull {mean:.2f}"
        assert SPREAD_RANGE[0] < spread < SPREAD_RANGE[1], f"{name}: pull spread {spread:.2f}"
