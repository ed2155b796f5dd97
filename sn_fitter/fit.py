"""Fit a light curve: build the model, sample the posterior, summarize.

``fit_lightcurve`` is the service's fitting function (no HTTP, no files): the science tests
and the benchmark call it directly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import sncosmo
from scipy.special import expit, log_expit, log_ndtr, logit
from threadpoolctl import threadpool_limits

from sn_fitter.inputs import LightCurve, Redshift
from sn_fitter.model import (
    C_RANGE,
    X1_RANGE,
    DirectModel,
    LightCurveModel,
    ModelError,
    Points,
    amplitude_index,
    build_model,
    load_band,
    load_source,
    redshift_coverage,
    zp_normalisation,
)
from sn_fitter.options import FitOptions
from sn_fitter.priors import RedshiftPrior, redshift_prior
from sn_fitter.quality import Diagnostics, bound_piles
from sn_fitter.sampler import Box, Chains, SamplerSettings, sample_posterior

# Sources sncosmo would download; the ones with an offline stand-in shipped by sncosmo.
OFFLINE_SUBSTITUTES = {"hsiao": "hsiao-subsampled"}
T0_BEFORE, T0_AFTER = 50.0, 20.0  # days: t0 prior range around the detections


class FitFailure(ValueError):
    """The fit cannot be done; the message is sent to the user as the analysis' message."""


@dataclass
class FitResult:
    source: str
    source_version: str | None
    param_names: list[str]
    samples: np.ndarray  # (chains, draws, n_params) in natural units
    log_density: np.ndarray  # (chains, draws): log likelihood + log prior, natural units
    best_fit: dict[str, float]
    chi2: float
    ndof: int
    chains: Chains
    model: LightCurveModel
    lightcurve: LightCurve
    z_fixed: float | None
    z_range: tuple[float, float] | None
    elapsed: float
    diagnostics: Diagnostics
    bounds: np.ndarray  # (n_params, 2): the prior range of each parameter
    z_prior: RedshiftPrior | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def flat_samples(self) -> np.ndarray:
        return self.samples.reshape(-1, len(self.param_names))


class Likelihood:
    """Gaussian likelihood of detections times P(flux below limit) for non-detections."""

    def __init__(self, model: LightCurveModel, lc: LightCurve) -> None:
        self.model = model
        self.detected = ~lc.is_limit
        self.flux = lc.flux[self.detected]
        self.inv_err = 1.0 / lc.fluxerr[self.detected]
        self.limit = lc.flux_limit[~self.detected]
        self.limit_err = lc.fluxerr[~self.detected]

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        return self.from_flux(self.model.flux(theta))

    def from_flux(self, flux: np.ndarray) -> np.ndarray:
        resid = (flux[:, self.detected] - self.flux) * self.inv_err
        out = -0.5 * np.sum(resid * resid, axis=1)
        if len(self.limit):
            upper = (self.limit - flux[:, ~self.detected]) / self.limit_err
            out = out + np.sum(log_ndtr(upper), axis=1)
        return out

    def chi2(self, theta: np.ndarray) -> float:
        flux = self.model.flux(theta[None])[0][self.detected]
        return float(np.sum(((flux - self.flux) * self.inv_err) ** 2))


LOGIT_LIMIT = 30.0  # sampling-space bound of logit coordinates (|u| = 30: 1e-13 of the range)


class Posterior:
    """Log posterior density in an unbounded sampling space.

    ``log(amplitude)`` replaces the amplitude and every other parameter with finite bounds
    ``[lo, hi]`` is sampled as ``u = logit((x - lo) / (hi - lo))``, so the sampler, the
    optimizer and the finite-difference Hessian never meet the edge of the support (a
    redshift whose mode sits on z_min once made the Hessian NaN). The priors are flat in the
    natural parameters inside their bounds (times the redshift prior), so the density carries
    the Jacobians: ``+ log(amplitude)`` and ``+ log((hi - lo) s (1 - s))``, s = sigmoid(u).
    """

    def __init__(
        self,
        likelihood: Likelihood,
        bounds: np.ndarray,
        amp: int,
        z_prior: RedshiftPrior | None = None,
        z_index: int | None = None,
    ) -> None:
        self.likelihood, self.bounds, self.amp = likelihood, bounds, amp
        self.z_prior, self.z_index = z_prior, z_index
        finite = np.all(np.isfinite(bounds), axis=1) & (bounds[:, 1] > bounds[:, 0])
        finite[amp] = False
        self.logit = np.flatnonzero(finite)
        self.low, self.width = bounds[self.logit, 0], bounds[self.logit, 1] - bounds[self.logit, 0]
        self.sampling_bounds = np.full_like(bounds, np.inf)
        self.sampling_bounds[:, 0] = -np.inf
        self.sampling_bounds[self.logit] = (-LOGIT_LIMIT, LOGIT_LIMIT)
        self.evaluations = 0

    def to_natural(self, u: np.ndarray) -> np.ndarray:
        theta = np.array(u, dtype=float, copy=True)
        theta[..., self.amp] = np.exp(theta[..., self.amp])
        theta[..., self.logit] = self.low + self.width * expit(theta[..., self.logit])
        return theta

    def to_sampling(self, theta: np.ndarray) -> np.ndarray:
        u = np.array(theta, dtype=float, copy=True)
        u[..., self.amp] = np.log(u[..., self.amp])
        share = np.clip((u[..., self.logit] - self.low) / self.width, 1e-12, 1.0 - 1e-12)
        u[..., self.logit] = logit(share)
        return u

    def log_prior(self, theta: np.ndarray) -> np.ndarray:
        if self.z_prior is None or self.z_index is None:
            return np.zeros(len(theta))
        return self.z_prior.log_density(theta[:, self.z_index])

    def log_jacobian(self, u: np.ndarray) -> np.ndarray:
        logit_u = u[..., self.logit]
        terms = np.log(self.width) + log_expit(logit_u) + log_expit(-logit_u)
        return u[..., self.amp] + terms.sum(axis=-1)

    def __call__(self, u: np.ndarray) -> np.ndarray:
        u = np.atleast_2d(u)
        out = np.full(len(u), -np.inf)
        ok = np.all(np.isfinite(u), axis=1)
        ok &= np.all(np.abs(u[:, self.logit]) <= LOGIT_LIMIT, axis=1)
        if ok.any():
            self.evaluations += int(ok.sum())
            inside = u[ok]
            theta = self.to_natural(inside)
            out[ok] = self.likelihood(theta) + self.log_prior(theta) + self.log_jacobian(inside)
        return np.where(np.isfinite(out), out, -np.inf)


def _choose_source(name: str) -> tuple[sncosmo.Source, list[str]]:
    try:
        return load_source(name), []
    except ModelError:
        substitute = OFFLINE_SUBSTITUTES.get(name)
        if substitute is None:
            raise
        note = f"model {name!r} is not available offline; used {substitute!r} (same SED, coarser)"
        return load_source(substitute), [note]


def _redshift_setup(
    source: sncosmo.Source, bands: list[sncosmo.Bandpass], options: FitOptions, redshift: Redshift
) -> tuple[float | None, tuple[float, float] | None]:
    low, high = redshift_coverage(source, bands)
    names = ", ".join(b.name for b in bands)
    if options.fix_z:
        if redshift.value is None:
            raise FitFailure(
                "fix_z is true but the source has no redshift; set one or use fix_z=False"
            )
        if not low <= redshift.value <= high:
            raise FitFailure(
                f"model {source.name!r} does not cover bands {names} at z={redshift.value:g} "
                f"(covered for {low:.3f} <= z <= {high:.3f})"
            )
        return redshift.value, None
    z_lo, z_hi = max(options.z_min, low), min(options.z_max, high)
    if z_lo >= z_hi:
        raise FitFailure(
            f"no redshift in [{options.z_min:g}, {options.z_max:g}] where model {source.name!r} "
            f"covers bands {names} (covered for {low:.3f} <= z <= {high:.3f})"
        )
    return None, (z_lo, z_hi)


def _bounds(
    param_names: list[str], lc: LightCurve, z_range: tuple[float, float] | None
) -> np.ndarray:
    detected = lc.time[~lc.is_limit]
    limits = {
        "z": z_range or (0.0, 0.0),
        "t0": (detected.min() - T0_BEFORE, detected.max() + T0_AFTER),
        "x1": X1_RANGE,
        "c": C_RANGE,
    }
    return np.array([limits.get(name, (-np.inf, np.inf)) for name in param_names], dtype=float)


FD_STEPS = {"z": 2e-4, "t0": 0.02, "x1": 0.01, "c": 1e-3}


def _starting_points(
    posterior: Posterior, lc: LightCurve, names: list[str], count: int = 3
) -> np.ndarray:
    """Best few points of a coarse grid, with the amplitude solved by linear least squares."""
    detected = ~lc.is_limit
    common_zp_flux = lc.flux * 10.0 ** (-0.4 * (lc.zp - 23.9))  # points may differ in zp
    t_peak = lc.time[detected][np.argmax(common_zp_flux[detected])]
    t_lo, t_hi = posterior.bounds[names.index("t0")]
    cheap = posterior.likelihood.model.kind != "direct"
    t0s = np.clip(t_peak + np.arange(-15.0, 10.5, 2.0 if cheap else 3.0), t_lo, t_hi)
    axes: dict[str, np.ndarray] = {"t0": np.unique(t0s)}
    if "z" in names:
        z_lo, z_hi = posterior.bounds[names.index("z")]
        count = 12 if cheap else 4
        z_axis = z_lo + (z_hi - z_lo) * (np.arange(count) + 0.5) / count
        prior = posterior.z_prior
        if prior is not None and prior.kind == "gaussian":
            z_axis = np.append(z_axis, np.clip(prior.normal()[0], z_lo, z_hi))
        axes["z"] = z_axis
    if cheap and "x1" in names:
        axes["x1"], axes["c"] = np.array([-1.5, 0.0, 1.5]), np.array([-0.1, 0.15, 0.5])
    default = dict(zip(posterior.likelihood.model.param_names, _defaults(posterior), strict=True))
    mesh = np.meshgrid(*axes.values(), indexing="ij")
    grid = np.tile([default[n] for n in names], (mesh[0].size, 1))
    for key, values in zip(axes, mesh, strict=True):
        grid[:, names.index(key)] = values.ravel()
    grid[:, posterior.amp] = 1.0
    unit_flux = posterior.likelihood.model.flux(grid)
    like = posterior.likelihood
    weight = like.inv_err**2
    model_det = unit_flux[:, like.detected]
    amplitude = (model_det * like.flux * weight).sum(1) / np.maximum(
        (model_det**2 * weight).sum(1), 1e-300
    )
    amplitude = np.where(amplitude > 0, amplitude, np.nan)
    score = like.from_flux(unit_flux * np.nan_to_num(amplitude)[:, None])
    score = np.where(np.isfinite(amplitude), score + posterior.log_prior(grid), -np.inf)
    order = np.argsort(score)[::-1][:count]
    starts = grid[order]
    starts[:, posterior.amp] = np.where(np.isfinite(amplitude[order]), amplitude[order], 1e-20)
    return starts


def _fresh_seed() -> int:
    entropy = np.random.SeedSequence().entropy
    assert isinstance(entropy, int)  # without arguments, SeedSequence draws a 128-bit int
    return entropy % 2**32


def _defaults(posterior: Posterior) -> list[float]:
    model = posterior.likelihood.model
    if isinstance(model, DirectModel):  # the only model of kind "direct"
        values = dict(zip(model.model.param_names, model.model.parameters, strict=True))
        return [float(values[n]) for n in model.param_names]
    return [0.0] * len(model.param_names)


def _fd_steps(posterior: Posterior, names: list[str], starts: np.ndarray) -> np.ndarray:
    """Finite-difference steps in the sampling space: the natural steps divided by the
    coordinate's local scale at the starts (log amplitude: 1e-3)."""
    centre = np.median(starts, axis=0)
    steps = np.array(
        [FD_STEPS.get(name, 1e-3 * max(1.0, abs(float(centre[i])))) for i, name in enumerate(names)]
    )
    steps[posterior.amp] = 1e-3
    share = expit(posterior.to_sampling(centre)[posterior.logit])
    scale = posterior.width * share * (1.0 - share)
    steps[posterior.logit] = np.clip(steps[posterior.logit] / scale, 1e-4, 0.1)
    return steps


def fit_lightcurve(lc: LightCurve, redshift: Redshift, options: FitOptions) -> FitResult:
    """Sample the posterior of ``options.source`` given the light curve; raise FitFailure.

    BLAS runs single-threaded here: the fit's matrices are small, and idle OpenBLAS threads
    spinning between calls cost ~40 % more CPU per posterior (each worker is one process).
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit(lc, redshift, options)


def _fit(lc: LightCurve, redshift: Redshift, options: FitOptions) -> FitResult:
    started = time.perf_counter()
    if lc.n_detections == 0:
        raise FitFailure("no detections: the photometry holds only non-detections")
    source, notes = _choose_source(options.source)
    band_names = sorted(set(lc.band))
    bands = []
    for name in band_names:
        try:
            bands.append(load_band(name))
        except ModelError as exc:
            sent = ", ".join(lc.band_sources.get(name, [name]))
            raise ModelError(f"{exc} (filter {sent} in the photometry)") from None
    z_fixed, z_range = _redshift_setup(source, bands, options, redshift)
    zpnorm = zp_normalisation(lc.band, lc.zp, lc.magsys)
    points = Points(lc.time, lc.band, zpnorm)
    model = build_model(source, band_names, points, lc.magsys, lc.zp, z_range, z_fixed)
    names = list(model.param_names)
    if lc.n_detections < len(names):
        raise FitFailure(
            f"need at least {len(names)} detections to fit {', '.join(names)}; "
            f"the photometry has {lc.n_detections}"
        )
    try:
        amp = amplitude_index(names)
    except ValueError:
        raise FitFailure(
            f"model {source.name!r} has no amplitude parameter (x0 or amplitude)"
        ) from None
    prior = None if z_fixed is not None else redshift_prior(options.z_prior, redshift)
    bounds = _bounds(names, lc, z_range)
    z_index = names.index("z") if "z" in names else None
    posterior = Posterior(Likelihood(model, lc), bounds, amp, prior, z_index)
    starts = _starting_points(posterior, lc, names)
    seed = options.seed if options.seed is not None else _fresh_seed()
    settings = SamplerSettings(
        options.num_chains, options.num_samples, options.num_warmup, options.max_seconds
    )
    chains, _, _ = sample_posterior(
        posterior,
        posterior.to_sampling(starts),
        posterior.sampling_bounds,
        _fd_steps(posterior, names, starts),
        settings,
        np.random.default_rng(seed),
        Box(posterior.logit, posterior.low, posterior.width),
        posterior.to_natural,
    )
    chains.seed = seed
    samples = posterior.to_natural(chains.draws)
    flat = samples.reshape(-1, len(names))
    # the sampler's log density less the Jacobian is log likelihood + log prior
    log_density = chains.log_density - posterior.log_jacobian(chains.draws)
    log_like = log_density.ravel() - posterior.log_prior(flat)
    best = flat[np.argmax(log_like)]
    chi2 = posterior.likelihood.chi2(best)
    return FitResult(
        source=source.name,
        source_version=None if source.version is None else str(source.version),
        param_names=names,
        samples=samples,
        log_density=log_density,
        best_fit=dict(zip(names, map(float, best), strict=True)),
        chi2=chi2,
        ndof=lc.n_detections - len(names),
        chains=chains,
        model=model,
        lightcurve=lc,
        z_fixed=z_fixed,
        z_range=z_range,
        elapsed=time.perf_counter() - started,
        diagnostics=_named_diagnostics(chains, names, posterior, bounds),
        bounds=bounds,
        z_prior=prior,
        notes=notes,
    )


def _named_diagnostics(
    chains: Chains, names: list[str], posterior: Posterior, bounds: np.ndarray
) -> Diagnostics:
    """The sampler's last diagnostics (computed on the natural parameters) under the
    parameters' names, with the bound check of the samples."""
    found = chains.diagnostics or chains.diagnose(posterior.to_natural)
    flat = posterior.to_natural(chains.draws).reshape(-1, len(names))

    def named(values: dict[str, float]) -> dict[str, float]:
        return {name: values[str(i)] for i, name in enumerate(names)}

    piles = bound_piles(flat, names, bounds)
    return Diagnostics(named(found.rhat), named(found.ess_bulk), named(found.ess_tail), piles)


def chi2_per_dof(result: FitResult) -> float | None:
    return result.chi2 / result.ndof if result.ndof > 0 and math.isfinite(result.chi2) else None
