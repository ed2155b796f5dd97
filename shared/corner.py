"""Server-side corner plots of a posterior (what SkyPortal drew with arviz + corner).

The posterior comes from an ArviZ-style netCDF file (its ``posterior`` group, read with xarray
and h5netcdf) or from ``posterior_samples`` (``{param: [samples]}``). Fixed parameters (min ==
max) and parameters with fewer than two finite samples are dropped; at most eight are drawn.
The diagonal shows histograms with dashed 16/50/84 % quantile lines and "median +up -low"
titles. Rendering uses matplotlib's Agg canvas directly (no pyplot), so it is safe in a worker
thread; every function here is CPU-bound and meant to be called through ``asyncio.to_thread``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MAX_PARAMETERS = 8
MAX_POINTS = 20_000
QUANTILES = (0.16, 0.5, 0.84)
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class CornerError(ValueError):
    """The posterior cannot be drawn; the message says why."""


def posterior_from_netcdf(data: bytes) -> dict[str, np.ndarray[Any, Any]]:
    """Flattened samples per parameter from the ``posterior`` group (or the root group)."""
    import xarray as xr

    engine = "h5netcdf" if data.startswith(HDF5_MAGIC) else "scipy"
    for group in ("posterior", None):
        try:
            with xr.open_dataset(io.BytesIO(data), engine=engine, group=group) as dataset:
                samples = _dataset_samples(dataset)
        except (OSError, KeyError, ValueError) as exc:
            if group is None:
                raise CornerError(f"the inference data cannot be read: {exc}") from None
            continue
        if samples:
            return samples
    return {}


def _dataset_samples(dataset: Any) -> dict[str, np.ndarray[Any, Any]]:
    samples: dict[str, np.ndarray[Any, Any]] = {}
    for name, variable in dataset.data_vars.items():
        values = np.asarray(variable.values)
        if values.dtype.kind not in "fiu" or values.size < 2:
            continue
        draws_dims = [d for d in variable.dims if d in ("chain", "draw")]
        extra = values.shape[len(draws_dims) :] if draws_dims else values.shape[1:]
        flat = values.reshape(-1, *extra) if extra else values.reshape(-1)
        if flat.ndim == 1:
            samples[str(name)] = flat.astype(float)
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


def _title(name: str, values: np.ndarray[Any, Any]) -> str:
    low, median, high = np.quantile(values, QUANTILES)
    return f"{_plain(name)} = {median:.4g} +{high - median:.2g} -{median - low:.2g}"


def render_corner_png(posterior: Mapping[str, np.ndarray[Any, Any]]) -> bytes:
    """A lower-triangle corner plot as PNG bytes; CornerError when nothing can be drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    params = drawable_parameters(posterior)
    if not params:
        raise CornerError("no parameter of the posterior varies")
    names = list(params)
    size = len(names)
    figure = Figure(figsize=(2.4 * size + 0.6, 2.4 * size + 0.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(size, size, squeeze=False)
    for row in range(size):
        for column in range(size):
            _draw_cell(axes[row][column], params, names, row, column)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _draw_cell(
    ax: Any, params: dict[str, np.ndarray[Any, Any]], names: list[str], row: int, column: int
) -> None:
    size = len(names)
    if column > row:
        ax.set_axis_off()
        return
    x = params[names[column]]
    if row == column:
        ax.hist(x, bins=24, histtype="step", color="k")
        for value in np.quantile(x, QUANTILES):
            ax.axvline(value, color="k", linestyle="--", linewidth=0.8)
        ax.set_title(_title(names[column], x), fontsize=8)
        ax.set_yticks([])
    else:
        y = params[names[row]]
        ax.hist2d(x, y, bins=30, cmap="Greys")
    if row == size - 1:
        ax.set_xlabel(_plain(names[column]), fontsize=8)
    else:
        ax.set_xticklabels([])
    if column == 0 and row > 0:
        ax.set_ylabel(_plain(names[row]), fontsize=8)
    elif column > 0:
        ax.set_yticklabels([])
    ax.tick_params(labelsize=6)
