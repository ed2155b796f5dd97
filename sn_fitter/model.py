"""Vectorized light-curve models: band fluxes for many parameter vectors at once.

``build_model`` picks the fastest exact-enough representation of an sncosmo source:
* SALT2/SALT3 sources -> precomputed exact band tables (:func:`tables.salt_table`);
* one-parameter (amplitude) spline sources such as hsiao or nugent -> sampled tables;
* anything else -> sncosmo's own ``Model.bandflux`` evaluated row by row (slow but general).
All three share one interface: ``flux(theta)`` -> (n_rows, n_points) fluxes at each point's
zero point, with ``theta`` columns in ``param_names`` order.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import sncosmo

from sn_fitter.tables import (
    KIND_EDGE,
    BandTable,
    ZGrid,
    node_weights,
    salt_table,
    sampled_table,
)

X1_RANGE = (-5.0, 5.0)
C_RANGE = (-0.5, 1.5)
ROWS_PER_CHUNK = 2048  # (parameter rows x points) per block: keeps the gathers in cache
_TABLE_CACHE: OrderedDict[tuple, BandTable] = OrderedDict()
_TABLE_CACHE_SIZE = 64


class ModelError(ValueError):
    """The requested model or band cannot be used; the message says why."""


@dataclass(frozen=True)
class Points:
    """Where a model is evaluated: times, band names and flux normalisation per point."""

    time: np.ndarray
    band: np.ndarray
    zpnorm: np.ndarray  # 10^(0.4 zp) / zpbandflux(band, magsys)


def load_source(name: str) -> sncosmo.Source:
    try:
        return sncosmo.get_source(name)
    except Exception as exc:  # sncosmo raises several types for unknown/unreachable models
        raise ModelError(f"unknown or unavailable sncosmo model {name!r}: {exc}") from None


def load_band(name: str) -> sncosmo.Bandpass:
    try:
        return sncosmo.get_bandpass(name)
    except Exception as exc:
        raise ModelError(f"unknown or unavailable bandpass {name!r}: {exc}") from None


def zp_normalisation(bands: np.ndarray, zp: np.ndarray, magsys: np.ndarray) -> np.ndarray:
    out = np.empty(len(bands))
    for i, (band, system) in enumerate(zip(bands, magsys, strict=True)):
        try:
            zpflux = sncosmo.get_magsystem(system).zpbandflux(band)
        except Exception as exc:
            raise ModelError(f"unknown magnitude system {system!r}: {exc}") from None
        out[i] = 10.0 ** (0.4 * zp[i]) / zpflux
    return out


def redshift_coverage(source: sncosmo.Source, bands: list[sncosmo.Bandpass]) -> tuple[float, float]:
    """Redshifts at which the source's wavelength range covers every band (sncosmo's rule)."""
    low = max(band.maxwave() / source.maxwave() - 1.0 for band in bands)
    high = min(band.minwave() / source.minwave() - 1.0 for band in bands)
    return max(low, 0.0), high


class GridModel:
    """Table-backed model of a SALT source (z, t0, x0, x1, c) or an amplitude source."""

    def __init__(
        self,
        source: sncosmo.Source,
        kind: str,
        tables: dict[str, BandTable],
        points: Points,
        z_fixed: float | None,
    ) -> None:
        self.source_name = source.name
        self.kind = kind
        self.tables = tables
        self.points = points
        self.z_fixed = z_fixed
        amplitude = ["x0", "x1", "c"] if kind == "salt" else ["amplitude"]
        self.param_names = (["t0"] if z_fixed is not None else ["z", "t0"]) + amplitude
        self._groups = [
            (name, np.flatnonzero(points.band == name)) for name in sorted(set(points.band))
        ]

    def flux(self, theta: np.ndarray) -> np.ndarray:
        theta = np.atleast_2d(theta)
        out = np.empty((len(theta), len(self.points.time)))
        step = max(1, ROWS_PER_CHUNK // max(1, len(self.points.time)))
        for start in range(0, len(theta), step):
            out[start : start + step] = self._flux_block(theta[start : start + step])
        return out

    def flux_at(self, theta: np.ndarray, times: np.ndarray, band: str) -> np.ndarray:
        """Fluxes (zp 23.9 AB) on a time grid for plotting: (n_rows, len(times))."""
        norm = 10.0 ** (0.4 * 23.9) / sncosmo.get_magsystem("ab").zpbandflux(band)
        other = GridModel.__new__(GridModel)
        other.__dict__.update(self.__dict__)
        other.points = Points(
            times, np.full(len(times), band, dtype=object), np.full(len(times), norm)
        )
        other._groups = [(band, np.arange(len(times)))]
        return other.flux(theta)

    def _flux_block(self, theta: np.ndarray) -> np.ndarray:
        columns = dict(zip(self.param_names, theta.T, strict=True))
        z = columns["z"] if self.z_fixed is None else np.full(len(theta), self.z_fixed)
        out = np.empty((len(theta), len(self.points.time)))
        for band, index in self._groups:
            table = self.tables[band]
            basis = self._basis(table, columns)
            color = columns.get("c")
            raw = _table_flux(table, z, columns["t0"], basis, self.points.time[index], color)
            out[:, index] = raw * self.points.zpnorm[index]
        return out

    def _basis(self, table: BandTable, columns: dict[str, np.ndarray]) -> np.ndarray:
        if self.kind != "salt":
            return columns["amplitude"][:, None]
        x0, x1, c = columns["x0"], columns["x1"], columns["c"]
        assert table.color is not None  # SALT tables carry their colour expansion
        cheb = table.color.basis(c)
        comps = np.stack([x0, x0 * x1], axis=1)
        return (comps[:, :, None] * cheb[:, None, :]).reshape(len(c), -1)


def _table_flux(
    table: BandTable,
    z: np.ndarray,
    t0: np.ndarray,
    basis: np.ndarray,
    times: np.ndarray,
    color: np.ndarray | None = None,
) -> np.ndarray:
    """Band flux (photons/s/cm^2) for rows (z, t0, basis) at times: (n_rows, n_times)."""
    z_index, z_weight = table.zgrid.weights(z)
    if color is not None:  # the colour law's band-centre term, exact per redshift node
        assert table.color is not None  # only SALT models have a "c" column
        z_weight = z_weight * 10.0 ** (-0.4 * color[:, None] * table.color.cl_bar[z_index])
    phase = (times[None, :] - t0[:, None]) / (1.0 + z[:, None])
    nodes = table.phase_nodes
    before = phase < nodes[0]
    if table.outside != "zero":
        phase = np.clip(phase, nodes[0], nodes[-1])
    weights = node_weights(nodes, phase)
    phase_w = np.where(weights.cubic[..., None], weights.cubic_w, weights.linear_w)
    phase_w = phase_w * weights.inside[..., None]
    if table.outside == "zero_before":
        phase_w = phase_w * ~before[..., None]
    n_kind, n_z, n_phase, width = table.values.shape
    kind = np.zeros(phase.shape, dtype=np.intp) if n_kind == 1 else (~weights.cubic).astype(np.intp)
    rows = ((kind[..., None, None] * n_z + z_index[:, None, None, :]) * n_phase) + weights.index[
        ..., :, None
    ]
    weight = phase_w[..., :, None] * z_weight[:, None, None, :]
    if table.has_edge:  # wavelengths next to the template border: bilinear (sncosmo's rule)
        edge_rows = (KIND_EDGE * n_z + z_index[:, None, None, :]) * n_phase + weights.index[
            ..., :, None
        ]
        edge_w = (weights.linear_w * weights.cubic[..., None])[..., :, None] * z_weight[
            :, None, None, :
        ]
        rows = np.concatenate([rows, edge_rows], axis=-2)
        weight = np.concatenate([weight, edge_w], axis=-2)
    shape = phase.shape
    rows = rows.reshape(shape[0] * shape[1], -1)
    weight = weight.reshape(shape[0] * shape[1], 1, -1)
    gathered = table.values.reshape(-1, width)[rows]  # (rows*times, slots, width)
    reduced = np.matmul(weight, gathered)[:, 0, :].reshape(shape[0], shape[1], width)
    return np.einsum("rtk,rk->rt", reduced, basis)


class DirectModel:
    """Any sncosmo source, evaluated with sncosmo row by row (no tables)."""

    kind = "direct"

    def __init__(
        self,
        source: sncosmo.Source,
        points: Points,
        magsys: np.ndarray,
        zp: np.ndarray,
        z_fixed: float | None,
    ) -> None:
        self.model = sncosmo.Model(source=source)
        self.source_name = source.name
        self.points = points
        self.z_fixed = z_fixed
        self._zp, self._magsys = zp, magsys
        names = list(self.model.param_names)
        self.param_names = [n for n in names if n != "z"] if z_fixed is not None else names

    def flux(self, theta: np.ndarray) -> np.ndarray:
        theta = np.atleast_2d(theta)
        out = np.empty((len(theta), len(self.points.time)))
        for i, row in enumerate(theta):
            out[i] = self._evaluate(row, self.points.band, self.points.time, self._zp, self._magsys)
        return out

    def flux_at(self, theta: np.ndarray, times: np.ndarray, band: str) -> np.ndarray:
        bands = np.full(len(times), band, dtype=object)
        zp, system = np.full(len(times), 23.9), np.full(len(times), "ab", dtype=object)
        return np.array(
            [self._evaluate(row, bands, times, zp, system) for row in np.atleast_2d(theta)]
        )

    def _evaluate(
        self,
        row: np.ndarray,
        bands: np.ndarray,
        times: np.ndarray,
        zp: np.ndarray,
        magsys: np.ndarray,
    ) -> np.ndarray:
        values = dict(zip(self.param_names, row, strict=True))
        if self.z_fixed is not None:
            values["z"] = self.z_fixed
        self.model.set(**values)
        return self.model.bandflux(list(bands), times, zp=zp, zpsys=list(magsys))


LightCurveModel = GridModel | DirectModel


def _cached_table(key: tuple, build) -> BandTable:
    table = _TABLE_CACHE.get(key)
    if table is None:
        table = build()
        _TABLE_CACHE[key] = table
        while len(_TABLE_CACHE) > _TABLE_CACHE_SIZE:
            _TABLE_CACHE.popitem(last=False)
    else:
        _TABLE_CACHE.move_to_end(key)
    return table


def source_kind(source: sncosmo.Source) -> str:
    if isinstance(source, sncosmo.SALT2Source):  # SALT3Source is a subclass
        return "salt"
    if list(source.param_names) == ["amplitude"] and hasattr(source, "_phase"):
        return "amplitude"
    return "direct"


def build_model(
    source: sncosmo.Source,
    band_names: list[str],
    points: Points,
    magsys: np.ndarray,
    zp: np.ndarray,
    z_range: tuple[float, float] | None,
    z_fixed: float | None,
) -> LightCurveModel:
    """The vectorized model of ``source`` for these points; z_range bounds free redshifts."""
    kind = source_kind(source)
    if kind == "direct":
        return DirectModel(source, points, magsys, zp, z_fixed)
    zgrid = _zgrid(z_range, z_fixed)
    tables = {}
    for name in band_names:
        band = load_band(name)
        ident = (source.name, str(source.version), name, zgrid)
        if kind == "salt":
            key = (*ident, C_RANGE)
            tables[name] = _cached_table(key, lambda b=band: salt_table(source, b, zgrid, C_RANGE))
        else:
            tables[name] = _cached_table(ident, lambda b=band: sampled_table(source, b, zgrid))
    return GridModel(source, kind, tables, points, z_fixed)


def _zgrid(z_range: tuple[float, float] | None, z_fixed: float | None) -> ZGrid:
    if z_fixed is not None:
        return ZGrid.single(z_fixed)
    assert z_range is not None  # a free redshift always comes with its range
    return ZGrid.covering(*z_range)


def amplitude_index(param_names: list[str]) -> int:
    return param_names.index("x0") if "x0" in param_names else param_names.index("amplitude")
