"""The fitter's figures: the light curve with its fit and pulls, and the corner plot.

Both say when the fit failed a check (unconverged chains, a posterior piled at a bound) in red
on the figure. Matplotlib's Agg canvas is used directly (no pyplot), so this is safe anywhere.
"""

from __future__ import annotations

import io
import math
from textwrap import fill
from typing import TYPE_CHECKING

import numpy as np
import sncosmo

from shared.science.corner import corner_figure, quantile_text
from sn_fitter.fit import FitResult, chi2_per_dof
from sn_fitter.inputs import LightCurve

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Curves = dict[str, dict[str, np.ndarray]]  # band -> time, median, low, high
ZP_AB = 23.9
BAND_STYLES = {  # band -> (colour, data marker, model line style)
    "ztfg": ("tab:green", "o", "-"),
    "ztfr": ("tab:red", "s", "--"),
    "ztfi": ("goldenrod", "D", "-."),
    "sdssg": ("tab:green", "o", "-"),
    "sdssr": ("tab:red", "s", "--"),
    "sdssi": ("goldenrod", "D", "-."),
    "bessellb": ("tab:blue", "^", ":"),
}
FALLBACK_STYLES = [("tab:purple", "P", "-"), ("tab:brown", "X", "--"), ("tab:cyan", "*", "-.")]
SUMMARY_NAMES = ("z", "t0", "x1", "c")
LIMIT_ARROW = 0.08  # of the panel's flux range


def band_style(band: str, index: int) -> tuple[str, str, str]:
    return BAND_STYLES.get(band, FALLBACK_STYLES[index % len(FALLBACK_STYLES)])


def warning_text(result: FitResult) -> str | None:
    """What failed, for the figures; None when every check passed."""
    diagnostics = result.diagnostics
    if diagnostics.passed:
        return None
    parts = []
    if not diagnostics.converged:
        parts.append("NOT CONVERGED: " + "; ".join(diagnostics.convergence_failures()))
    parts += ["BOUND-LIMITED: " + pile.describe() for pile in diagnostics.piles]
    return "\n".join(parts)


def summary_lines(result: FitResult) -> list[str]:
    """Fitted values (median with 16/84 % errors), the prior, goodness of fit, diagnostics."""
    lines = []
    flat = result.flat_samples
    for name in SUMMARY_NAMES:
        if name in result.param_names:
            column = flat[:, result.param_names.index(name)]
            low, median, high = np.quantile(column, [0.16, 0.5, 0.84])
            lines.append(f"{name} = {quantile_text(median, high - median, median - low)}")
        elif name == "z" and result.z_fixed is not None:
            lines.append(f"z = {result.z_fixed:g} (fixed)")
    if result.z_prior is not None:
        lines.append(result.z_prior.label())
    ratio = chi2_per_dof(result)
    shown = f"{result.chi2:.1f}/{result.ndof}" + (f" = {ratio:.2f}" if ratio is not None else "")
    lines.append(f"$\\chi^2$/dof = {shown}")
    diagnostics = result.diagnostics
    rhat = max(diagnostics.rhat.values())
    bulk, tail = min(diagnostics.ess_bulk.values()), min(diagnostics.ess_tail.values())
    lines.append(f"max R-hat = {rhat:.3f}" if math.isfinite(rhat) else "max R-hat undefined")
    lines.append(f"min ESS bulk/tail = {bulk:.0f}/{tail:.0f}")
    lines.append(f"{result.chains.algorithm}, {result.samples.shape[0]} chains")
    return lines


def lightcurve_figure(result: FitResult, curves: Curves, title: str | None) -> Figure:
    """Per band: data with error bars, limits as arrows, model median and 68 % band; below,
    the pulls (data - best fit) / error; on the right, the fitted values and diagnostics."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bands = sorted(set(result.lightcurve.band))
    figure = Figure(figsize=(10, 2.5 * len(bands) + 2.4))
    FigureCanvasAgg(figure)  # no pyplot: no global state, safe in any thread
    grid = figure.add_gridspec(
        len(bands) + 1, 2, width_ratios=[3.2, 1.0], height_ratios=[3.0] * len(bands) + [1.6]
    )
    flux_axes = [figure.add_subplot(grid[i, 0]) for i in range(len(bands))]
    pull_ax = figure.add_subplot(grid[len(bands), 0], sharex=flux_axes[0])
    for index, (ax, band) in enumerate(zip(flux_axes, bands, strict=True)):
        _plot_band(ax, result, curves[band], band, band_style(band, index))
        ax.tick_params(labelbottom=False)
    _plot_pulls(pull_ax, result, bands)
    text_ax = figure.add_subplot(grid[:, 1])
    text_ax.set_axis_off()
    text_ax.text(0.02, 0.98, "\n".join(summary_lines(result)), va="top", fontsize=9)
    warning = warning_text(result)
    if warning:
        text_ax.text(0.02, 0.02, fill_lines(warning, 34), va="bottom", color="red", fontsize=9)
    head = f"{result.source} fit"
    figure.suptitle(f"{title}  |  {head}" if title else head, fontsize=10)
    figure.tight_layout()
    return figure


def fill_lines(text: str, width: int) -> str:
    return "\n".join(fill(line, width) for line in text.splitlines())


def _plot_band(
    ax: Axes,
    result: FitResult,
    curve: dict[str, np.ndarray],
    band: str,
    style: tuple[str, str, str],
) -> None:
    color, marker, linestyle = style
    lc = result.lightcurve
    scale = to_ab23_9(lc, band)
    here = lc.band == band
    det, lim = here & ~lc.is_limit, here & lc.is_limit
    ax.fill_between(
        curve["time"],
        curve["low"],
        curve["high"],
        color=color,
        alpha=0.15,
        lw=0,
        label="model 68% band",
    )
    ax.plot(
        curve["time"],
        curve["median"],
        color=color,
        lw=1.3,
        ls=linestyle,
        label=f"{result.source} median",
    )
    ax.errorbar(
        lc.time[det],
        lc.flux[det] * scale[det],
        lc.fluxerr[det] * scale[det],
        fmt=marker,
        ms=4,
        mfc="white",
        mec=color,
        color=color,
        ecolor="black",
        elinewidth=1.0,
        capsize=2.5,
        zorder=3,
        label=f"{band} data",
    )
    top = max(np.nanmax(curve["high"], initial=0.0), np.max(lc.flux[det] * scale[det], initial=0))
    if lim.any():
        limits = lc.flux_limit[lim] * scale[lim]
        ax.errorbar(
            lc.time[lim],
            limits,
            yerr=LIMIT_ARROW * max(top, limits.max()),
            uplims=True,
            fmt="_",
            ms=6,
            color=color,
            alpha=0.7,
            label="upper limits",
        )
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_ylabel(f"{band} flux (zp 23.9 AB)")
    ax.legend(fontsize=7, loc="upper right")


def _plot_pulls(ax: Axes, result: FitResult, bands: list[str]) -> None:
    """(data - best-fit model) / error per detection; the +-1 sigma band shaded."""
    lc = result.lightcurve
    best = np.array([[result.best_fit[n] for n in result.param_names]])
    model = result.model.flux(best)[0]
    pulls = (lc.flux - model) / lc.fluxerr
    ax.axhspan(-1.0, 1.0, color="grey", alpha=0.15, lw=0)
    ax.axhline(0.0, color="grey", lw=0.8)
    for index, band in enumerate(bands):
        color, marker, _ = band_style(band, index)
        det = (lc.band == band) & ~lc.is_limit
        ax.plot(lc.time[det], pulls[det], marker, ms=4, mfc="white", mec=color, label=band)
    ax.set_ylabel("pull")
    ax.set_xlabel("MJD")
    ax.legend(fontsize=7, loc="upper right", ncol=len(bands))


def to_ab23_9(lc: LightCurve, band: str) -> np.ndarray:
    """Factors that bring each point's flux to zp 23.9 in the AB system (the plot's units)."""
    ab = sncosmo.get_magsystem("ab").zpbandflux(band)
    factors = np.ones(len(lc.time))
    for i in np.flatnonzero(lc.band == band):
        own = sncosmo.get_magsystem(lc.magsys[i]).zpbandflux(band)
        factors[i] = 10 ** (0.4 * (ZP_AB - lc.zp[i])) * own / ab
    return factors


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def lightcurve_plot(result: FitResult, curves: Curves, title: str | None) -> bytes:
    """The light-curve figure as PNG bytes."""
    return png(lightcurve_figure(result, curves, title))


def corner_plot(result: FitResult) -> bytes:
    """The posterior's corner plot (``corner``), best fit and any failed check marked."""
    flat = result.flat_samples
    posterior = {name: flat[:, i] for i, name in enumerate(result.param_names)}
    return png(corner_figure(posterior, result.best_fit, warning_text(result)))
