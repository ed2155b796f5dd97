"""Server-side corner plots of a posterior, drawn with the ``corner`` package.

The posterior comes from an ArviZ-style netCDF file (its ``posterior`` group, read with xarray
and h5netcdf) or from ``posterior_samples`` (``{param: [samples]}``). Fixed parameters (min ==
max) and parameters with fewer than two finite samples are dropped; at most eight are drawn.
The 2-D panels show the 1 sigma and 2 sigma contours (39.3 % and 86.5 % of the mass), the
diagonal histograms dashed 16/50/84 % quantile lines under "median +up -low" titles rounded to
the errors. Each axis spans the central 99 % of its samples (plus a margin), so long tails do
not squeeze the core into a corner; a best fit, when given, is marked in every panel, and a
warning (an unconverged or bound-limited fit) is written in red on the figure. Tick labels are
short (at most four per axis, any offset or power of ten moved into the axis label: SALT's x0
~ 2e-3 would otherwise get long, overlapping labels). Rendering uses matplotlib's Agg canvas
directly (no pyplot), so it is safe in a worker thread; every function here is CPU-bound and
meant to be called through ``asyncio.to_thread``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from textwrap import fill
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.security.safe_decode import (
    NetcdfGroupMissing,
    NetcdfVariable,
    SafeDecodeError,
    read_netcdf_variables,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_PARAMETERS = 8
MAX_TICKS = 4  # per axis: short labels that never overlap their neighbours
MAX_DECIMALS = 8
POWER_LIMITS = (-3, 5)  # tick values below 1e-2 or from 1e5 up get a power of ten
MAX_POINTS = 20_000
QUANTILES = (0.16, 0.5, 0.84)
SIGMA_LEVELS = (1.0 - math.exp(-0.5), 1.0 - math.exp(-2.0))  # 1 and 2 sigma of a 2-D Gaussian
RANGE_QUANTILES = (0.005, 0.995)
RANGE_MARGIN = 0.08
BEST_FIT_COLOR = "tab:blue"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class CornerError(ValueError):
    """The posterior cannot be drawn; the message says why."""


def posterior_from_netcdf(data: bytes) -> dict[str, np.ndarray[Any, Any]]:
    """Flattened samples per parameter from the ``posterior`` group (or the root group), read
    within the memory budget of :func:`shared.security.safe_decode.read_netcdf_variables`."""
    for group in ("posterior", None):
        try:
            variables = read_netcdf_variables(data, group)
        except NetcdfGroupMissing:
            continue
        except SafeDecodeError as exc:
            raise CornerError(f"the inference data cannot be read: {exc}") from None
        samples = _dataset_samples(variables)
        if samples:
            return samples
    return {}


def _dataset_samples(variables: Mapping[str, NetcdfVariable]) -> dict[str, np.ndarray[Any, Any]]:
    samples: dict[str, np.ndarray[Any, Any]] = {}
    for name, variable in variables.items():
        values = variable.values
        if values.dtype.kind not in "fiu" or values.size < 2:
            continue
        draws_dims = [d for d in variable.dims if d in ("chain", "draw")]
        extra = values.shape[len(draws_dims) :] if draws_dims else values.shape[1:]
        flat = values.reshape(-1, *extra) if extra else values.reshape(-1)
        if flat.ndim == 1:
            samples[name] = flat.astype(float)
        else:
            columns = flat.reshape(flat.shape[0], -1)
            for index in range(columns.shape[1]):
                samples[f"{name}[{index}]"] = columns[:, index].astype(float)
    return samples


def posterior_from_samples(
    samples: Mapping[str, Sequence[float]],
) -> dict[str, np.ndarray[Any, Any]]:
    return {str(k): np.asarray(v, dtype=float) for k, v in samples.items()}


def drawable_parameters(
    posterior: Mapping[str, np.ndarray[Any, Any]],
) -> dict[str, np.ndarray[Any, Any]]:
    """Varying parameters with at least two finite samples, at most MAX_PARAMETERS of them,
    cut to a common length (rows with any non-finite value are dropped)."""
    kept: dict[str, np.ndarray[Any, Any]] = {}
    for name, values in posterior.items():
        finite = values[np.isfinite(values)]
        if finite.size < 2 or finite.min() == finite.max():
            continue
        kept[name] = values
        if len(kept) == MAX_PARAMETERS:
            break
    if not kept:
        return {}
    length = min(v.size for v in kept.values())
    matrix = np.column_stack([v[:length] for v in kept.values()])
    matrix = matrix[np.all(np.isfinite(matrix), axis=1)]
    if matrix.shape[0] > MAX_POINTS:
        step = int(np.ceil(matrix.shape[0] / MAX_POINTS))
        matrix = matrix[::step]
    if matrix.shape[0] < 2:
        return {}
    return {name: matrix[:, i] for i, name in enumerate(kept)}


def _plain(text: str) -> str:
    return text.replace("$", r"\$")


def _power_of_ten(exponent: int) -> str:
    return rf"$\times10^{{{exponent}}}$"


def quantile_text(median: float, up: float, down: float) -> str:
    """``median +up -down`` as mathtext, rounded to two significant figures of the smaller
    error; values below 0.01 or from 1e5 up share a power of ten (x0 ~ 2e-3 +- 2e-5 gives
    ``(2.046 +0.021 -0.021) x 10^-3``, t0 ~ 60250 +- 0.07 gives ``60250.047 +0.074 -0.074``)."""
    size = max(abs(median), up, down)
    exponent = 0
    if 0 < size < 1e-2 or size >= 1e5:
        exponent = math.floor(math.log10(size))
    scale = 10.0**exponent
    median, up, down = median / scale, up / scale, down / scale
    errors = [e for e in (up, down) if e > 0]
    digits = 1 - math.floor(math.log10(min(errors))) if errors else 3
    digits = min(max(digits, 0), MAX_DECIMALS)
    text = f"{median:.{digits}f}^{{+{up:.{digits}f}}}_{{-{down:.{digits}f}}}"
    if exponent:
        return rf"$({text})\times10^{{{exponent}}}$"
    return f"${text}$"


def _title(name: str, values: np.ndarray[Any, Any]) -> str:
    low, median, high = np.quantile(values, QUANTILES)
    return f"{_plain(name)} = {quantile_text(median, high - median, median - low)}"


def _axis_label(name: str, offset: float, exponent: int) -> str:
    """The axis label carries what ScalarFormatter would print as a floating offset text."""
    label = _plain(name)
    if offset:
        sign = "$-$" if offset > 0 else "+"
        label = f"{label} {sign} {abs(offset):.12g}"
        if exponent:
            label = f"({label})"
    return f"{label} ({_power_of_ten(exponent)})" if exponent else label


def _format_axis(axis: Any, name: str) -> str:
    """At most MAX_TICKS short tick labels (offset and power of ten factored out, as in
    ``x0 (x10^-3)`` with ticks 2.00, 2.04, ...), so neighbours never overlap; returns the
    axis label that states the factored-out part."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    locator = MaxNLocator(nbins=MAX_TICKS - 1, min_n_ticks=2)
    formatter = ScalarFormatter(useOffset=True, useMathText=True)
    formatter.set_scientific(False)
    axis.set_major_locator(locator)
    axis.set_major_formatter(formatter)
    locs = locator()
    formatter.set_locs(list(locs))  # picks the offset; the same limits give the same one when drawn
    offset = float(formatter.offset)
    exponent = _tick_exponent(axis, locs, offset)
    if exponent:
        formatter.set_scientific(True)
        formatter.set_powerlimits((exponent, exponent))  # equal limits fix the power of ten
    axis.offsetText.set_visible(False)
    return _axis_label(name, offset, exponent)


def _tick_exponent(axis: Any, locs: Sequence[float], offset: float) -> int:
    """The power of ten to factor out of the tick labels (ScalarFormatter's rule)."""
    low, high = sorted(axis.get_view_interval())
    shown = [abs(loc) for loc in locs if low <= loc <= high]
    size = (high - low) if offset else max(shown, default=0.0)
    if size <= 0:
        return 0
    exponent = math.floor(math.log10(size))
    return exponent if exponent <= POWER_LIMITS[0] or exponent >= POWER_LIMITS[1] else 0


def plot_range(values: np.ndarray[Any, Any], extra: float | None = None) -> tuple[float, float]:
    """The central RANGE_QUANTILES of the samples plus RANGE_MARGIN on each side, widened to
    show ``extra`` (a best fit) when it falls outside."""
    low, high = np.quantile(values, RANGE_QUANTILES)
    if extra is not None and math.isfinite(extra):
        low, high = min(low, extra), max(high, extra)
    if high <= low:
        low, high = float(values.min()), float(values.max())
    pad = RANGE_MARGIN * (high - low)
    return float(low - pad), float(high + pad)


def corner_figure(
    posterior: Mapping[str, np.ndarray[Any, Any]],
    best_fit: Mapping[str, float] | None = None,
    warning: str | None = None,
) -> Figure:
    """A corner plot (``corner.corner``); CornerError when nothing can be drawn."""
    import corner
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    params = drawable_parameters(posterior)
    if not params:
        raise CornerError("no parameter of the posterior varies")
    names = list(params)
    size = len(names)
    data = np.column_stack([params[n] for n in names])
    marks = [None if best_fit is None else best_fit.get(n) for n in names]
    figure = Figure(figsize=(2.3 * size + 0.9, 2.3 * size + 0.9), dpi=100)
    FigureCanvasAgg(figure)
    corner.corner(
        data,
        fig=figure,
        labels=[_plain(n) for n in names],
        range=[plot_range(params[n], m) for n, m in zip(names, marks, strict=True)],
        quantiles=list(QUANTILES),
        label_kwargs={"fontsize": 8},
        levels=SIGMA_LEVELS,
        smooth=1.0,
        bins=30,
        fill_contours=False,
        plot_datapoints=True,
        data_kwargs={"alpha": 0.15, "ms": 1.0},
        truths=marks if any(m is not None for m in marks) else None,
        truth_color=BEST_FIT_COLOR,
        max_n_ticks=MAX_TICKS,
    )
    diagonal = np.array(figure.axes).reshape(size, size).diagonal()
    for ax, name in zip(diagonal, names, strict=True):
        ax.set_title(_title(name, params[name]), fontsize=9)
    _label_axes(figure, names)
    figure.subplots_adjust(
        left=0.9 / figure.get_figwidth() + 0.06, bottom=0.9 / figure.get_figheight() + 0.06
    )
    if best_fit is not None:
        figure.text(0.98, 0.985, "best fit", color=BEST_FIT_COLOR, ha="right", va="top")
    if warning:
        figure.text(0.98, 0.94, fill(warning, 48), color="red", ha="right", va="top", fontsize=10)
    return figure


def _label_axes(figure: Figure, names: list[str]) -> None:
    """Short tick labels on the outer axes, offset and power of ten in the axis labels."""
    size = len(names)
    axes = np.array(figure.axes).reshape(size, size)
    for row in range(size):
        for column in range(row + 1):
            ax = axes[row, column]
            ax.tick_params(labelsize=7)
            x_label = _format_axis(ax.xaxis, names[column])
            if row == size - 1:
                ax.set_xlabel(x_label, fontsize=8)
            else:
                ax.tick_params(labelbottom=False)
            if row != column:
                y_label = _format_axis(ax.yaxis, names[row])
                if column == 0:
                    ax.set_ylabel(y_label, fontsize=8)
                else:
                    ax.tick_params(labelleft=False)


def render_corner_png(posterior: Mapping[str, np.ndarray[Any, Any]]) -> bytes:
    """The corner plot as PNG bytes; CornerError when nothing can be drawn."""
    buffer = io.BytesIO()
    corner_figure(posterior).savefig(buffer, format="png")
    return buffer.getvalue()
