"""The server-side corner plot is readable: no overlapping labels, titles rounded to the errors.

SALT's x0 (~2e-3 with a spread of 2e-5) once got tick labels such as 0.00198, 0.00200, ...
that ran into each other, and t0 (~60250 +- 0.07) a title "6.025e+04 +0.074 -0.074".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np
import pytest
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.path import Path
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from shared.science.corner import (
    MAX_PARAMETERS,
    CornerError,
    corner_figure,
    posterior_from_netcdf,
    quantile_text,
    render_corner_png,
)
from tests.support.hostile import hdf5_fill_value_bomb

SAMPLES = 4000


def salt3_posterior() -> dict[str, np.ndarray]:
    """Shaped like the demo fit's posterior (correlated, as a real one is)."""
    rng = np.random.default_rng(5)
    normal = rng.standard_normal((SAMPLES, 5))
    normal[:, 2] -= 0.6 * normal[:, 3]
    return {
        "z": 0.0477 + 0.0045 * normal[:, 0],
        "t0": 60250.047 + 0.074 * normal[:, 1],
        "x0": 2.046e-3 + 2.1e-5 * normal[:, 2],
        "x1": 0.434 + 0.081 * normal[:, 3],
        "c": 0.031 + 0.0107 * normal[:, 4],
    }


def awkward_posterior() -> dict[str, np.ndarray]:
    """Tiny, huge, negative-with-offset, skewed and wide parameters, a fixed one and more
    than MAX_PARAMETERS in all."""
    rng = np.random.default_rng(6)
    return {
        "amplitude": rng.normal(3.2e-9, 4e-11, SAMPLES),
        "t0": rng.normal(60250.3, 0.9, SAMPLES),
        "fixed_z": np.full(SAMPLES, 0.1),
        "z": rng.uniform(0.01, 0.2, SAMPLES),
        "big": rng.normal(4.5e8, 3e5, SAMPLES),
        "neg$": rng.normal(-12345.678, 0.0021, SAMPLES),
        "frac": rng.beta(2, 5, SAMPLES),
        "x1": rng.normal(0.4, 1.1, SAMPLES),
        "c": rng.normal(-0.02, 0.3, SAMPLES),
        "ninth": rng.normal(0.0, 1.0, SAMPLES),
    }


def tick_labels(axis: Axis) -> list[Text]:
    """Labels of the ticks inside the view (the locator also places some outside)."""
    view = sorted(axis.get_view_interval())
    locs = axis.get_majorticklocs()
    ticks = zip(axis.get_major_ticks(len(locs)), locs, strict=True)
    return [tick.label1 for tick, loc in ticks if view[0] <= loc <= view[1]]


def drawn_texts(figure: Figure) -> list[tuple[str, Bbox]]:
    """Every text the PNG shows: titles, axis labels, offset texts and the tick labels of
    ticks inside the view, with their boxes in pixels."""
    figure.canvas.draw()
    renderer = cast(FigureCanvasAgg, figure.canvas).get_renderer()  # the Agg backend draws PNGs
    texts: list[Text] = []
    for ax in figure.axes:
        if not ax.axison:
            continue
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
        for axis in (ax.xaxis, ax.yaxis):
            texts += [axis.offsetText, *tick_labels(axis)]
    shown = [t for t in texts if t.get_visible() and t.get_text().strip()]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in shown]


def overlapping(texts: list[tuple[str, Bbox]]) -> list[tuple[str, str]]:
    pairs = []
    for i, (text, box) in enumerate(texts):
        for other, other_box in texts[i + 1 :]:
            if box.padded(-0.5).overlaps(other_box.padded(-0.5)):
                pairs.append((text, other))
    return pairs


def diagonal(figure: Figure) -> list:
    return [ax for ax in figure.axes if ax.axison and ax.get_title()]


@pytest.mark.parametrize("posterior", [salt3_posterior, awkward_posterior])
def test_no_two_labels_overlap(posterior: Callable[[], dict[str, np.ndarray]]) -> None:
    texts = drawn_texts(corner_figure(posterior()))
    assert len(texts) > 20
    assert overlapping(texts) == []
    for text, box in texts:
        assert box.width > 0 and box.height > 0, text


def test_tiny_and_offset_parameters_get_short_ticks_and_say_so_in_the_label() -> None:
    figure = corner_figure(salt3_posterior())
    bottom = {ax.get_xlabel(): ax for ax in figure.axes if ax.axison and ax.get_xlabel()}
    assert set(bottom) == {"z", "t0 $-$ 60250", r"x0 ($\times10^{-3}$)", "x1", "c"}
    figure.canvas.draw()
    for label, ax in bottom.items():
        ticks = [t.get_text() for t in tick_labels(ax.xaxis)]
        assert 2 <= len(ticks) <= 4, (label, ticks)
        assert all(len(t.replace("$", "").replace(r"\mathdefault{", "")) <= 8 for t in ticks)
    x0 = bottom[r"x0 ($\times10^{-3}$)"]
    low, high = x0.get_xlim()
    assert 1.9e-3 < low < high < 2.2e-3  # the data are plotted in their own units


def test_titles_show_the_quantiles_rounded_to_the_errors() -> None:
    figure = corner_figure(salt3_posterior())
    titles = [ax.get_title() for ax in diagonal(figure)]
    assert [t.split(" = ")[0] for t in titles] == ["z", "t0", "x0", "x1", "c"]
    x0 = titles[2]
    assert x0.startswith("x0 = $(2.04") and x0.endswith(r"})\times10^{-3}$")
    assert titles[1].startswith("t0 = $60250.0")
    for ax, name in zip(diagonal(figure), ["z", "t0", "x0", "x1", "c"], strict=True):
        dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        drawn = sorted(float(line.get_xdata()[0]) for line in dashed)
        expected = np.quantile(salt3_posterior()[name], [0.16, 0.5, 0.84])
        np.testing.assert_allclose(drawn, expected)


@pytest.mark.parametrize(
    ("median", "up", "down", "text"),
    [
        (0.00204631, 2.14e-5, 2.09e-5, r"$(2.046^{+0.021}_{-0.021})\times10^{-3}$"),
        (60250.04661, 0.0738, 0.0741, "$60250.047^{+0.074}_{-0.074}$"),
        (0.04772, 0.0047, 0.0043, "$0.0477^{+0.0047}_{-0.0043}$"),
        (0.434, 0.081, 0.080, "$0.434^{+0.081}_{-0.080}$"),
        (-12.5, 3.2, 41.0, "$-12.5^{+3.2}_{-41.0}$"),
        (4.5e8, 3.1e5, 2.9e5, r"$(4.5000^{+0.0031}_{-0.0029})\times10^{8}$"),
        (1.5, 0.0, 0.0, "$1.500^{+0.000}_{-0.000}$"),
    ],
)
def test_quantile_text(median: float, up: float, down: float, text: str) -> None:
    assert quantile_text(median, up, down) == text


def test_fixed_parameters_are_dropped_and_at_most_eight_drawn() -> None:
    posterior = awkward_posterior()
    figure = corner_figure(posterior)
    names = [ax.get_title().split(" = ")[0] for ax in diagonal(figure)]
    varying = [n.replace("$", r"\$") for n in posterior if n != "fixed_z"]
    assert names == varying[:MAX_PARAMETERS]
    assert render_corner_png(posterior).startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(CornerError, match="no parameter of the posterior varies"):
        corner_figure({"z": np.full(10, 0.1)})


@pytest.mark.parametrize("elements", [30_000_000, 10**12])
def test_a_netcdf_declaring_huge_fill_values_is_refused_before_reading(elements: int) -> None:
    """Fails on main: 3e7 elements are read (~480 MB), 1e12 ends in MemoryError (a 500)."""
    bomb = hdf5_fill_value_bomb(elements)
    assert len(bomb) < 4096
    with pytest.raises(CornerError, match=f"variable x declares {elements} elements of 8 bytes"):
        posterior_from_netcdf(bomb)


def test_the_axes_span_the_central_quantiles_so_tails_do_not_squeeze_the_core() -> None:
    posterior = salt3_posterior()
    posterior["z"][:8] = 0.9  # 0.2 % of the samples far out in a tail
    figure = corner_figure(posterior)
    z_axis = next(ax for ax in figure.axes if ax.axison and ax.get_xlabel() == "z")
    low, high = z_axis.get_xlim()
    core = np.quantile(posterior["z"], [0.005, 0.995])
    assert low <= core[0] and core[1] <= high
    assert high < 0.1  # the outliers at 0.9 are off the panel; the core fills it


def test_two_dimensional_panels_draw_the_one_and_two_sigma_contours() -> None:
    """The drawn contours enclose ~39 % and ~86 % of the samples (1 and 2 sigma in 2-D)."""
    from matplotlib.contour import ContourSet

    posterior = salt3_posterior()
    figure = corner_figure(posterior)
    names = list(posterior)
    axes = np.array(figure.axes).reshape(5, 5)
    ax = axes[3, 2]  # x1 against x0: correlated
    lines = [c for c in ax.collections if isinstance(c, ContourSet) and not c.filled]
    (contours,) = lines
    points = np.column_stack([posterior[names[2]], posterior[names[3]]])
    enclosed = []
    for path in contours.get_paths():
        rings = path.to_polygons()
        largest = max((np.asarray(ring) for ring in rings), key=len)
        enclosed.append(Path(largest).contains_points(points).mean())
    assert len(enclosed) == 2
    assert sorted(enclosed) == pytest.approx([0.393, 0.865], abs=0.05)


def test_the_best_fit_and_a_warning_are_marked() -> None:
    posterior = salt3_posterior()
    best = {name: float(np.median(values)) for name, values in posterior.items()}
    figure = corner_figure(posterior, best_fit=best, warning="z piles at its lower bound 0.001")
    texts = [t.get_text() for t in figure.texts]
    assert "z piles at its lower bound 0.001" in texts[-1]
    axes = np.array(figure.axes).reshape(5, 5)
    for column, name in enumerate(posterior):
        vertical = [line for line in axes[4, column].get_lines() if line.get_color() == "tab:blue"]
        assert any(float(line.get_xdata()[0]) == pytest.approx(best[name]) for line in vertical)
