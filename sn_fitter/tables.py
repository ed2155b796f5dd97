"""Band-integrated model tables: sncosmo's synthetic photometry precomputed on grids.

sncosmo computes a band flux by evaluating the source spectrum on a 5 A observer-frame grid
through the bandpass and summing. For a SALT source the spectrum is
``x0 (M0 + x1 M1) 10^(-0.4 c CL)`` where M0, M1 are interpolated by *bicubic convolution*
(a separable kernel) on the template's phase/wavelength nodes. Because integration and
interpolation are both linear, the band flux at any phase is the same convolution kernel
applied to band integrals computed *at the phase nodes*. We precompute those integrals
exactly (per redshift node and per Chebyshev node in colour), so evaluating a light curve for
thousands of parameter vectors is a gather plus a few multiply-adds.

The only approximations are the interpolation in redshift (cubic, on a 0.002 grid) and the
Chebyshev expansion in ``c`` (degree chosen for < 1e-9 relative error); with a fixed redshift
only the latter remains. ``tests/test_sn_fitter_model.py`` checks the tables against
sncosmo's own ``Model.bandflux``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import sncosmo
from sncosmo.constants import HC_ERG_AA, MODEL_BANDFLUX_SPACING
from sncosmo.utils import integration_grid

Z_STEP = 0.002
CHEB_TOLERANCE = 1e-9
SAMPLED_PHASE_STEP = 0.5  # rest-frame days, for sources that are not bicubic-convolution grids
KIND_CUBIC, KIND_LINEAR, KIND_EDGE = 0, 1, 2
LN10_04 = 0.4 * math.log(10.0)


@dataclass(frozen=True)
class ZGrid:
    """Uniform redshift nodes ``start + k*step``; one node when the redshift is fixed."""

    start: float
    step: float
    count: int

    @classmethod
    def covering(cls, z_lo: float, z_hi: float, step: float = Z_STEP) -> ZGrid:
        first = max(0, math.floor(z_lo / step) - 1)
        last = math.ceil(z_hi / step) + 2
        return cls(first * step, step, last - first + 1)

    @classmethod
    def single(cls, z: float) -> ZGrid:
        return cls(z, 0.0, 1)

    def nodes(self) -> np.ndarray:
        return self.start + self.step * np.arange(self.count)

    def weights(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Node indices and weights, shape (len(z), 4): cubic convolution, linear at the ends."""
        z = np.asarray(z, dtype=float)
        if self.count == 1:
            index = np.zeros((len(z), 4), dtype=np.intp)
            weight = np.zeros((len(z), 4))
            weight[:, 1] = 1.0
            return index, weight
        u = (z - self.start) / self.step
        base = np.clip(np.floor(u).astype(np.intp), 0, self.count - 2)
        t = u - base
        cubic = (base >= 1) & (base <= self.count - 3)
        index = np.clip(base[:, None] + np.arange(-1, 3), 0, self.count - 1)
        return index, np.where(cubic[:, None], keys_weights(t), linear_weights(t))


def keys_weights(t: np.ndarray) -> np.ndarray:
    """Weights of nodes i-1..i+2 for the cubic convolution kernel (a = -0.5) at fraction t."""
    t2, t3 = t * t, t * t * t
    return 0.5 * np.stack(
        [-t3 + 2 * t2 - t, 3 * t3 - 5 * t2 + 2, -3 * t3 + 4 * t2 + t, t3 - t2], axis=-1
    )


def linear_weights(t: np.ndarray) -> np.ndarray:
    zero = np.zeros_like(t)
    return np.stack([zero, 1.0 - t, t, zero], axis=-1)


@dataclass
class NodeWeights:
    """How sncosmo's BicubicInterpolator weighs grid nodes along one axis for values x."""

    inside: np.ndarray  # x within [nodes[0], nodes[-1]]; outside, the interpolator gives 0
    cubic: np.ndarray  # full cubic convolution (else linear: next to the grid border)
    index: np.ndarray  # (..., 4) node indices i-1..i+2, clipped into the grid
    cubic_w: np.ndarray  # (..., 4)
    linear_w: np.ndarray  # (..., 4) = (0, 1-t, t, 0)


def node_weights(nodes: np.ndarray, x: np.ndarray) -> NodeWeights:
    n = len(nodes)
    base = np.clip(np.searchsorted(nodes, x, side="right") - 1, 0, n - 2)
    t = (x - nodes[base]) / (nodes[base + 1] - nodes[base])
    inside = (x >= nodes[0]) & (x <= nodes[-1])
    cubic = inside & (base >= 1) & (base <= n - 3)
    index = np.clip(base[..., None] + np.arange(-1, 3), 0, n - 1)
    return NodeWeights(inside, cubic, index, keys_weights(t), linear_weights(t))


@dataclass(frozen=True)
class ColorExpansion:
    """Chebyshev expansion of ``10^(-0.4 c (CL - cl_bar[z]))`` over c in [low, high].

    ``cl_bar`` (one value per redshift node) centres the colour law in the band so the
    expansion converges fast; the factor ``10^(-0.4 c cl_bar[z])`` is applied exactly.
    """

    low: float
    high: float
    degree: int
    cl_bar: np.ndarray

    def basis(self, c: np.ndarray) -> np.ndarray:
        """(len(c), degree) Chebyshev polynomials T_0..T_{n-1} at the scaled colour."""
        s = (2.0 * np.asarray(c, dtype=float) - (self.high + self.low)) / (self.high - self.low)
        out = np.empty((len(s), self.degree))
        out[:, 0] = 1.0
        if self.degree > 1:
            out[:, 1] = s
        for j in range(2, self.degree):
            out[:, j] = 2.0 * s * out[:, j - 1] - out[:, j - 2]
        return out

    def node_colors(self) -> np.ndarray:
        k = np.arange(self.degree)
        mid, half = 0.5 * (self.high + self.low), 0.5 * (self.high - self.low)
        return mid + half * np.cos(np.pi * (k + 0.5) / self.degree)

    def coefficient_matrix(self) -> np.ndarray:
        """D[j, k]: Chebyshev coefficient j from values at node k (a discrete cosine transform)."""
        j, k = np.meshgrid(np.arange(self.degree), np.arange(self.degree), indexing="ij")
        matrix = (2.0 / self.degree) * np.cos(np.pi * j * (k + 0.5) / self.degree)
        matrix[0] *= 0.5
        return matrix


def chebyshev_degree(rate: float, tolerance: float = CHEB_TOLERANCE) -> int:
    """Degree at which Chebyshev coefficients of exp(rate * s), |s| <= 1, fall below tolerance.

    The coefficients are 2 I_j(rate) <= 2 (rate/2)^j e^(rate/2) / j! (modified Bessel bound).
    """
    degree = 2
    while 2.0 * (rate / 2.0) ** degree * math.exp(rate / 2.0) / math.factorial(degree) > tolerance:
        degree += 1
    return degree + 1


@dataclass
class BandTable:
    """Band integrals of one source through one bandpass on (redshift, phase) nodes.

    ``values[kind, z, phase, comp * degree + j]``: kind 0 = cubic-in-wavelength integrals,
    1 = linear-in-wavelength (used next to the phase border), 2 = the linear contribution of
    wavelengths next to the template's wavelength border (only when ``has_edge``).
    """

    band: str
    zgrid: ZGrid
    phase_nodes: np.ndarray
    values: np.ndarray
    n_components: int
    color: ColorExpansion | None
    has_edge: bool
    outside: str  # "zero" (SALT) or "clamp" (spline sources hold the border value)


def _band_grid(band: sncosmo.Bandpass) -> tuple[np.ndarray, np.ndarray]:
    wave, dwave = integration_grid(band.minwave(), band.maxwave(), MODEL_BANDFLUX_SPACING)
    return wave, wave * band(wave) * dwave / HC_ERG_AA


def _scatter(weights: np.ndarray, index: np.ndarray, n_wave: int) -> np.ndarray:
    """Sum weights (J, Z, L, 4) into native wavelength nodes -> (J, Z, n_wave)."""
    n_j, n_z = weights.shape[:2]
    offset = (np.arange(n_j * n_z) * n_wave).reshape(n_j, n_z, 1, 1)
    flat = np.bincount(
        (index[None] + offset).ravel(), weights.ravel(), minlength=n_j * n_z * n_wave
    )
    return flat.reshape(n_j, n_z, n_wave)


def salt_table(
    source: sncosmo.SALT2Source,
    band: sncosmo.Bandpass,
    zgrid: ZGrid,
    c_range: tuple[float, float],
) -> BandTable:
    """Exact band integrals of a SALT2/SALT3 source (bicubic-convolution templates)."""
    wave, base = _band_grid(band)
    z = zgrid.nodes()
    scale = 1.0 / (1.0 + z)
    restwave = wave[None, :] * scale[:, None]
    weight = base[None, :] * scale[:, None]  # sncosmo multiplies the rest flux by 1/(1+z)
    cl = np.asarray(source._colorlaw(np.ascontiguousarray(restwave.ravel()))).reshape(
        restwave.shape
    )
    used = cl[:, band(wave) > 0]
    cl_bar = 0.5 * (used.min(axis=1) + used.max(axis=1))
    spread = np.abs(used - cl_bar[:, None]).max()
    rate = LN10_04 * 0.5 * (c_range[1] - c_range[0]) * spread
    color = ColorExpansion(c_range[0], c_range[1], chebyshev_degree(rate), cl_bar)
    centred = cl - cl_bar[:, None]
    factors = 10.0 ** (-0.4 * color.node_colors()[:, None, None] * centred[None])
    per_term = np.einsum("jk,kzl->jzl", color.coefficient_matrix(), factors) * weight[None]

    nodes = node_weights(source._wave, restwave)
    n_wave = len(source._wave)
    edge = nodes.inside & ~nodes.cubic
    slot_weights = [
        nodes.cubic_w * nodes.cubic[..., None],
        nodes.linear_w * nodes.inside[..., None],
    ]
    has_edge = bool(edge.any())
    if has_edge:
        slot_weights.append(nodes.linear_w * edge[..., None])
    kernels = [
        _scatter(per_term[..., None] * weights[None], nodes.index, n_wave)
        for weights in slot_weights
    ]
    phase, wave_nodes = source._phase, source._wave
    templates = np.stack([source._model[key](phase, wave_nodes) for key in ("M0", "M1")])
    values = _contract(templates, np.stack(kernels))
    return BandTable(band.name, zgrid, phase, values, 2, color, has_edge, "zero")


def _contract(templates: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """templates (C, P, W), kernels (K, J, Z, W) -> values (K, Z, P, C*J)."""
    n_comp, n_phase, n_wave = templates.shape
    n_kind, n_j, n_z, _ = kernels.shape
    product = templates.reshape(n_comp * n_phase, n_wave) @ kernels.reshape(-1, n_wave).T
    product = product.reshape(n_comp, n_phase, n_kind, n_j, n_z)
    return np.ascontiguousarray(product.transpose(2, 4, 1, 0, 3)).reshape(
        n_kind, n_z, n_phase, n_comp * n_j
    )


def sampled_table(source: sncosmo.Source, band: sncosmo.Bandpass, zgrid: ZGrid) -> BandTable:
    """Band integrals of a one-parameter (amplitude) source sampled on a fine phase grid.

    Used for spline-interpolated sources (hsiao, nugent, ...); the phase interpolation is a
    cubic convolution on a 0.5-day grid, accurate to ~1e-4 of the peak flux.
    """
    wave, base = _band_grid(band)
    count = math.ceil((source.maxphase() - source.minphase()) / SAMPLED_PHASE_STEP) + 1
    phase = np.linspace(source.minphase(), source.maxphase(), count)
    unit = copy.copy(source)
    unit._parameters = np.ones_like(source._parameters)
    values = np.empty((1, zgrid.count, count, 1))
    for i, z in enumerate(zgrid.nodes()):
        flux = unit._flux(phase, wave / (1.0 + z))
        values[0, i, :, 0] = flux @ (base / (1.0 + z))
    outside = "zero_before" if getattr(source, "_zero_before", False) else "clamp"
    return BandTable(band.name, zgrid, phase, values, 1, None, False, outside)
