"""The light-curve plot and model_lightcurve draw the model only where it is defined.

Outside ``t0 + phase * (1 + z)`` for the source's phase range the model has no flux (sncosmo
gives 0), which once showed as a vertical drop to zero at both ends of the plotted curve.
"""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
import pytest
import sncosmo
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.lines import Line2D

from sn_fitter.demo import demo_lightcurve
from sn_fitter.fit import FitResult, fit_lightcurve
from sn_fitter.inputs import Redshift, parse_photometry
from sn_fitter.options import FitOptions
from sn_fitter.plots import lightcurve_figure
from sn_fitter.products import ZP_AB, model_curves, model_lightcurve

QUICK: dict[str, Any] = {"num_samples": 300, "num_warmup": 200, "num_chains": 2, "seed": 4}
SOURCES = {"salt3": "salt3", "hsiao": "hsiao-subsampled"}  # hsiao: spline tables, clamped
ROUNDING = 1e-5  # days: model_lightcurve rounds MJDs to 5 decimals


@pytest.fixture(scope="module", params=list(SOURCES))
def fitted(request: pytest.FixtureRequest) -> FitResult:
    lightcurve = parse_photometry(demo_lightcurve(seed=7).photometry_csv())
    options = FitOptions(source=SOURCES[request.param], **QUICK)
    return fit_lightcurve(lightcurve, Redshift(0.045, None, None), options)


def median_time_range(result: FitResult) -> tuple[float, float]:
    """MJDs bounding the model for the posterior median t0 and z, from sncosmo itself."""
    source = sncosmo.get_source(result.source)
    medians = dict(zip(result.param_names, np.median(result.flat_samples, axis=0), strict=True))
    model = sncosmo.Model(source=source)
    model.set(z=medians["z"], t0=medians["t0"])
    return model.mintime(), model.maxtime()


def median_line(figure_axes: Axes, source: str) -> Line2D:
    lines = [line for line in figure_axes.get_lines() if line.get_label() == f"{source} median"]
    assert len(lines) == 1
    return lines[0]


def test_the_plotted_model_stays_inside_its_time_range_without_a_drop(fitted: FitResult) -> None:
    first, last = median_time_range(fitted)
    figure = lightcurve_figure(fitted, model_curves(fitted), "demo")
    axes = [ax for ax in figure.axes if ax.get_ylabel().endswith("flux (zp 23.9 AB)")]
    assert len(axes) == 2  # ztfg and ztfr
    for ax in axes:
        line = median_line(ax, fitted.source)
        x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
        assert len(x) > 50
        assert first <= x.min() and x.max() <= last, (x.min(), x.max(), first, last)
        assert np.all(np.isfinite(y))
        # The demo light curve ends ~45 days after peak, where the SN still shines: the
        # model's last point must be that tail, not a drop to zero.
        assert y[-1] > 0.02 * y.max()
        assert np.max(np.abs(np.diff(y))) < 0.1 * y.max()
        (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
        band_x = np.concatenate([np.asarray(path.vertices)[:, 0] for path in band.get_paths()])
        assert first <= band_x.min() and band_x.max() <= last


def test_model_lightcurve_has_only_finite_magnitudes_inside_the_model_range(
    fitted: FitResult,
) -> None:
    first, last = median_time_range(fitted)
    curves = model_curves(fitted)
    table = model_lightcurve(curves)
    assert set(table) == {"ztfg", "ztfr"}
    for band, rows in table.items():
        assert len(rows) > 50
        mjd, median, bright, faint = np.array(rows).T
        assert first - ROUNDING <= mjd.min() and mjd.max() <= last + ROUNDING
        assert np.all(np.isfinite(rows))
        assert np.all(bright <= median) and np.all(median <= faint)
        # No point comes from a zero or near-zero flux of draws outside their range.
        assert faint.max() < ZP_AB + 5.0
        peak = curves[band]["median"].max()
        assert median.min() == pytest.approx(ZP_AB - 2.5 * math.log10(peak), abs=1e-4)


def test_a_posterior_without_a_common_range_still_draws_the_median_range(
    fitted: FitResult,
) -> None:
    """Draws whose t0 scatter more than the model's length share no epoch: the curve then
    covers the median draw's range, made of the draws defined at each epoch."""
    spread = FitResult(**{**fitted.__dict__, "samples": fitted.samples.copy()})
    t0 = spread.param_names.index("t0")
    rng = np.random.default_rng(1)
    spread.samples[..., t0] += rng.choice([-60.0, 0.0, 60.0], size=spread.samples.shape[:2])
    first, last = median_time_range(spread)
    for rows in model_lightcurve(model_curves(spread)).values():
        mjd = np.array(rows)[:, 0]
        assert len(mjd) > 10
        assert first - ROUNDING <= mjd.min() and mjd.max() <= last + ROUNDING
        assert np.all(np.isfinite(rows))


def test_the_light_curve_shows_error_bars_limits_pulls_and_the_fitted_values(
    fitted: FitResult,
) -> None:
    figure = lightcurve_figure(fitted, model_curves(fitted), "demo")
    figure.canvas.draw()
    texts = "\n".join(t.get_text() for ax in figure.axes for t in ax.texts)
    for name in fitted.param_names:
        if name in ("z", "t0", "x1", "c"):
            assert f"{name} = $" in texts and "^{+" in texts, texts
    assert "max R-hat" in texts and "min ESS bulk/tail" in texts
    lc = fitted.lightcurve
    flux_axes = [ax for ax in figure.axes if ax.get_ylabel().endswith("flux (zp 23.9 AB)")]
    for ax in flux_axes:
        data, limits = cast(list[ErrorbarContainer], ax.containers[:2])  # errorbar() drew them
        assert data.has_yerr and len(data.lines[2][0].get_segments()) > 5  # one bar per point
        assert limits.lines[1][0].get_marker() in ("v", 7, 11)  # arrow heads pointing down
    (pull_ax,) = [ax for ax in figure.axes if ax.get_ylabel() == "pull"]
    model = sncosmo.Model(source=fitted.source)
    model.set(**fitted.best_fit)
    det = ~lc.is_limit
    expected = (
        lc.flux[det]
        - model.bandflux(lc.band[det], lc.time[det], zp=lc.zp[det], zpsys=lc.magsys[det])
    ) / lc.fluxerr[det]
    drawn = np.concatenate([line.get_ydata() for line in pull_ax.get_lines()[1:]])
    np.testing.assert_allclose(np.sort(drawn), np.sort(expected), atol=0.05)
