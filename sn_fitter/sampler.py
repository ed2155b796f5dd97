"""Posterior sampling on a vectorized log density.

Strategy (each step is exact MCMC; nothing is a Gaussian stand-in for the posterior):
1. the mode is found with L-BFGS-B (gradients by batched finite differences) and the local
   curvature gives a first proposal;
2. a pilot *independence Metropolis-Hastings* run with a heavy-tailed Student-t proposal
   explores the posterior; its draws re-centre and re-shape the proposal;
3. the main independence-MH run draws every proposal up front, so the whole posterior costs
   one vectorized density evaluation per draw, and accepts/rejects against the exact density;
4. while the chains fall short of the targets (ArviZ's R-hat < 1.01, bulk and tail ESS >=
   1,000) they are extended with the same proposal, or the run is repeated, twice as long,
   with the proposal refit to the last draws;
5. when one Student-t cannot mix (a posterior curved by a degeneracy, as with one band, or
   cut by a bound) the fallback samples the bounded parameters in their natural units,
   where such posteriors are straight ridges cut by the box of the bounds: differential-
   evolution MCMC with many vectorized chains finds the posterior's shape, and a mixture of
   Student-t components fitted to its draws (EM) is the independence-MH proposal, refit every
   round; while that mixture cannot mix, the differential-evolution chains run twice as long
   and the mixture is refit to them, and they are the result if they meet the targets first.
Everything stops at the time budget; the chains then say they are unconverged
(``out_of_time``). The log density is expected on an unbounded space (``fit.Posterior`` maps
bounded parameters through a logit, described by a :class:`Box`), so finite differences never
leave the support.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy.linalg import solve_triangular
from scipy.optimize import minimize
from scipy.special import expit, gammaln, log_expit, logit, logsumexp

from sn_fitter.quality import ESS_TARGET, Diagnostics, chain_diagnostics

LogDensity = Callable[[np.ndarray], np.ndarray]
Transform = Callable[[np.ndarray], np.ndarray]
T_DOF = 5.0
WIDE_FRACTION, WIDE_SCALE = 0.1, 3.0
MAX_DRAWS_PER_CHAIN = 64_000
EXTEND_RHAT, EXTEND_ACCEPTANCE, ESS_MARGIN, MAX_GROWTH = 1.05, 0.45, 1.15, 3
MIN_ACCEPTANCE = 0.05
REFIT_ACCEPTANCE = 0.25  # below this a single Student-t is a poor shape: use the fallback
MIXTURE_ACCEPTANCE = 0.1  # below this the DE-MCMC walkers run longer before a refit
MIXTURE_EXTEND_ACCEPTANCE = 0.3  # a mixture fitted by EM is worth extending from here on
MIXTURE_COMPONENTS, EM_ITERATIONS, EM_MAX_SAMPLE = 6, 60, 8000
DE_WALKERS, DE_BURN, DE_PILOT, DE_THIN = 64, 300, 300, 5
DE_JUMP = 0.1  # share of DE proposals with gamma = 1 (jumps between modes)
HESSIAN_RETRIES = 4
MODE_RESTART_GAP = 10.0  # log-density units: starts this much worse than the best are skipped


@dataclass
class Chains:
    draws: np.ndarray  # (chains, draws, dim) in sampling space
    log_density: np.ndarray  # (chains, draws)
    algorithm: str
    acceptance: float
    evaluations: int
    seed: int | None = None
    diagnostics: Diagnostics | None = None
    rounds: int = 1
    out_of_time: bool = False

    def diagnose(self, to_natural: Transform | None = None) -> Diagnostics:
        """R-hat and ESS of the draws (mapped by ``to_natural`` first), keyed "0", "1", ..."""
        names = [str(i) for i in range(self.draws.shape[2])]
        draws = self.draws if to_natural is None else to_natural(self.draws)
        self.diagnostics = chain_diagnostics(draws, names)
        return self.diagnostics

    def converged(self) -> bool:
        return self.diagnostics is not None and self.diagnostics.converged


@dataclass(frozen=True)
class Box:
    """The sampling space's logit coordinates: ``u = logit((x - low) / width)`` for the
    coordinates ``index``; the others are the same in both spaces."""

    index: np.ndarray
    low: np.ndarray
    width: np.ndarray

    def to_box(self, u: np.ndarray) -> np.ndarray:
        x = np.array(u, dtype=float, copy=True)
        x[..., self.index] = self.low + self.width * expit(u[..., self.index])
        return x

    def from_box(self, x: np.ndarray) -> np.ndarray:
        u = np.array(x, dtype=float, copy=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            u[..., self.index] = logit((x[..., self.index] - self.low) / self.width)
        return u

    def log_jacobian(self, u: np.ndarray) -> np.ndarray:
        """log |dx/du| at sampling-space points ``u`` (..., dim)."""
        inner = u[..., self.index]
        return (np.log(self.width) + log_expit(inner) + log_expit(-inner)).sum(axis=-1)

    def density(self, fun: LogDensity) -> LogDensity:
        """``fun`` (a density in u) as a density in x; -inf outside the box."""

        def log_density(x: np.ndarray) -> np.ndarray:
            x = np.atleast_2d(x)
            out = np.full(len(x), -np.inf)
            inner = x[:, self.index]
            ok = np.all(np.isfinite(x), axis=1)
            ok &= np.all((inner > self.low) & (inner < self.low + self.width), axis=1)
            if ok.any():
                u = self.from_box(x[ok])
                out[ok] = fun(u) - self.log_jacobian(u)
            return out

        return log_density


class StudentMixture:
    """Proposal: a mixture of multivariate Student-t components (nu = T_DOF)."""

    def __init__(self, means: np.ndarray, covs: np.ndarray, weights: np.ndarray) -> None:
        self.means = np.atleast_2d(means)
        self.dim = self.means.shape[1]
        self.chols = np.linalg.cholesky(covs)
        self.log_dets = 2.0 * np.log(np.diagonal(self.chols, axis1=1, axis2=2)).sum(axis=1)
        self.weights = np.asarray(weights) / np.sum(weights)

    @classmethod
    def around(cls, mean: np.ndarray, cov: np.ndarray, scale: float = 1.0) -> StudentMixture:
        """(1-f) t(mean, s^2 cov) + f t(mean, (k s)^2 cov): one shape, with wide tails."""
        covs = np.stack([cov * scale**2, cov * (scale * WIDE_SCALE) ** 2])
        return cls(np.stack([mean, mean]), covs, np.array([1.0 - WIDE_FRACTION, WIDE_FRACTION]))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        component = rng.choice(len(self.weights), size=n, p=self.weights)
        normal = rng.standard_normal((n, self.dim))
        stretch = np.sqrt(T_DOF / rng.chisquare(T_DOF, size=n))
        out = np.empty((n, self.dim))
        for k, chol in enumerate(self.chols):
            pick = component == k
            out[pick] = self.means[k] + (normal[pick] @ chol.T) * stretch[pick, None]
        return out

    def log_pdf(self, x: np.ndarray) -> np.ndarray:
        d, nu = self.dim, T_DOF
        const = gammaln((nu + d) / 2) - gammaln(nu / 2) - 0.5 * d * np.log(nu * np.pi)
        parts = []
        for mean, chol, log_det, weight in zip(
            self.means, self.chols, self.log_dets, self.weights, strict=True
        ):
            white = solve_triangular(chol, (x - mean).T, lower=True, check_finite=False)
            dist2 = (white**2).sum(axis=0)
            parts.append(
                np.log(weight) + const - 0.5 * log_det - 0.5 * (nu + d) * np.log1p(dist2 / nu)
            )
        return logsumexp(np.stack(parts), axis=0)


def _gaussian_log_pdfs(x: np.ndarray, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """(n, components) Gaussian log densities."""
    out = np.empty((len(x), len(means)))
    for k, (mean, cov) in enumerate(zip(means, covs, strict=True)):
        chol = np.linalg.cholesky(cov)
        white = solve_triangular(chol, (x - mean).T, lower=True, check_finite=False)
        log_det = 2.0 * np.log(np.diag(chol)).sum()
        out[:, k] = -0.5 * ((white**2).sum(axis=0) + log_det + len(mean) * np.log(2 * np.pi))
    return out


def _spread_centres(white: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each new centre drawn in proportion to its squared distance."""
    chosen = [int(rng.integers(len(white)))]
    dist2 = ((white - white[chosen[0]]) ** 2).sum(axis=1)
    for _ in range(count - 1):
        if dist2.sum() <= 0:
            break
        chosen.append(int(rng.choice(len(white), p=dist2 / dist2.sum())))
        dist2 = np.minimum(dist2, ((white - white[chosen[-1]]) ** 2).sum(axis=1))
    return np.array(chosen)


def fit_mixture(sample: np.ndarray, components: int, rng: np.random.Generator) -> StudentMixture:
    """Gaussian mixture fitted by EM to ``sample``, used as Student-t components (heavier
    tails than the fit), plus a wide component over the whole sample."""
    if len(sample) > EM_MAX_SAMPLE:
        sample = sample[rng.choice(len(sample), size=EM_MAX_SAMPLE, replace=False)]
    n, dim = sample.shape
    mean, overall = sample.mean(axis=0), np.atleast_2d(np.cov(sample.T))
    floor = np.diag(1e-6 * np.diag(overall) + 1e-300)
    overall = overall + floor
    components = max(1, min(components, n // (10 * (dim + 1))))
    white = solve_triangular(np.linalg.cholesky(overall), (sample - mean).T, lower=True).T
    means = sample[_spread_centres(white, components, rng)]
    covs = np.repeat(overall[None] / components, len(means), axis=0)
    log_weights = np.full(len(means), -np.log(len(means)))
    previous = -np.inf
    for _ in range(EM_ITERATIONS):
        log_r = log_weights + _gaussian_log_pdfs(sample, means, covs)
        total = logsumexp(log_r, axis=1)
        resp = np.exp(log_r - total[:, None])
        counts = resp.sum(axis=0) + 1e-12
        means = (resp.T @ sample) / counts[:, None]
        for k in range(len(means)):
            diff = sample - means[k]
            covs[k] = (resp[:, k, None] * diff).T @ diff / counts[k] + floor
        log_weights = np.log(counts / counts.sum())
        if total.mean() - previous < 1e-4:
            break
        previous = total.mean()
    weights = np.append(np.exp(log_weights) * (1.0 - WIDE_FRACTION), WIDE_FRACTION)
    all_means = np.vstack([means, mean])
    all_covs = np.concatenate([covs * 1.1**2, (overall * WIDE_SCALE**2)[None]])
    return StudentMixture(all_means, all_covs, weights)


def _gradient(fun: LogDensity, x: np.ndarray, steps: np.ndarray) -> tuple[float, np.ndarray]:
    """Value and central-difference gradient of -fun at x from one batched evaluation."""
    offsets = np.vstack([np.zeros(len(x)), np.diag(steps), -np.diag(steps)])
    values = -fun(x + offsets)
    if not np.all(np.isfinite(values)):
        values = np.where(np.isfinite(values), values, 1e30)
    n = len(x)
    return float(values[0]), (values[1 : n + 1] - values[n + 1 :]) / (2 * steps)


def find_mode(
    fun: LogDensity, starts: np.ndarray, bounds: np.ndarray, steps: np.ndarray
) -> tuple[np.ndarray, float]:
    """Best L-BFGS-B optimum of ``fun``; later starts only when they look competitive."""
    best_x: np.ndarray | None = None
    best_value = -np.inf
    inner = bounds.copy()
    inner[:, 0] += steps
    inner[:, 1] -= steps
    start_values = fun(starts)
    for start, start_value in zip(starts, start_values, strict=True):
        if best_x is not None and start_value < best_value - MODE_RESTART_GAP:
            continue
        result = minimize(
            partial(_gradient, fun, steps=steps),
            np.clip(start, inner[:, 0], inner[:, 1]),
            jac=True,
            method="L-BFGS-B",
            bounds=[(low, high) for low, high in inner],
            options={"maxiter": 200, "ftol": 1e-8, "gtol": 1e-4},
        )
        value = float(fun(result.x[None])[0])
        if value > best_value:
            best_x, best_value = result.x, value
    if best_x is None:
        raise ValueError("every optimisation ended at a log density of -inf or NaN")
    return best_x, best_value


def laplace_covariance(
    fun: LogDensity, mode: np.ndarray, bounds: np.ndarray, steps: np.ndarray
) -> np.ndarray:
    """Inverse of the negative Hessian at the mode (batched finite differences), made usable."""
    for _ in range(2):  # second pass: steps of ~0.2 sigma from the first estimate
        cov = _inverse_hessian(fun, mode, bounds, steps)
        steps = np.clip(0.2 * np.sqrt(np.diag(cov)), steps * 1e-3, steps * 10)
    widths = bounds[:, 1] - bounds[:, 0]
    sigma = np.sqrt(np.diag(cov))
    cap = np.where(np.isfinite(widths), widths / 4.0, np.inf)
    shrink = np.minimum(1.0, cap / sigma)
    return cov * np.outer(shrink, shrink)


def _hessian_points(centre: np.ndarray, steps: np.ndarray) -> np.ndarray:
    n = len(centre)
    points = [centre]
    for i in range(n):
        for j in range(i, n):
            for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                p = centre.copy()
                p[i] += si * steps[i]
                p[j] += sj * steps[j]
                points.append(p)
    return np.array(points)


def _inverse_hessian(
    fun: LogDensity, mode: np.ndarray, bounds: np.ndarray, steps: np.ndarray
) -> np.ndarray:
    """The stencil's centre keeps 2.5 steps from every bound (2 steps are taken), so no
    point leaves the support even after rounding; a stencil that still meets a non-finite
    density is retried with halved steps, and a diagonal from the steps is the last resort."""
    n = len(mode)
    for _ in range(HESSIAN_RETRIES):
        margin = np.minimum(2.5 * steps, (bounds[:, 1] - bounds[:, 0]) / 2.0)
        centre = np.clip(mode, bounds[:, 0] + margin, bounds[:, 1] - margin)
        values = fun(_hessian_points(centre, steps))
        if np.all(np.isfinite(values)):
            break
        steps = steps / 2.0
    else:
        return np.diag((10.0 * steps) ** 2)
    hess = np.zeros((n, n))
    k = 1
    for i in range(n):
        for j in range(i, n):
            pp, pm, mp, mm = values[k : k + 4]
            hess[i, j] = hess[j, i] = (pp - pm - mp + mm) / (4 * steps[i] * steps[j])
            k += 4
    eigval, eigvec = np.linalg.eigh(-hess)
    floor = max(eigval.max(), 1e-12) * 1e-10
    eigval = np.where(np.isfinite(eigval) & (eigval > floor), eigval, floor)
    return (eigvec / eigval) @ eigvec.T


def independence_mh(
    fun: LogDensity,
    proposal: StudentMixture,
    n_chains: int,
    n_draws: int,
    rng: np.random.Generator,
    start: tuple[np.ndarray, np.ndarray] | None = None,
) -> Chains:
    """Independence Metropolis-Hastings: all proposals evaluated in one vectorized pass."""
    dim = proposal.dim
    proposals = proposal.sample(n_chains * n_draws, rng)
    log_p = fun(proposals)
    log_w = log_p - proposal.log_pdf(proposals)
    proposals = proposals.reshape(n_draws, n_chains, dim)
    log_p, log_w = log_p.reshape(n_draws, n_chains), log_w.reshape(n_draws, n_chains)
    log_u = np.log(rng.random((n_draws, n_chains)))
    if start is None:
        state, state_p, state_w = proposals[0].copy(), log_p[0].copy(), log_w[0].copy()
    else:
        state, state_p = start[0].copy(), start[1].copy()
        state_w = state_p - proposal.log_pdf(state)
    draws = np.empty((n_chains, n_draws, dim))
    kept_p = np.empty((n_chains, n_draws))
    accepted = 0
    for i in range(n_draws):
        with np.errstate(invalid="ignore"):
            take = np.isfinite(log_w[i]) & ((log_u[i] < log_w[i] - state_w) | ~np.isfinite(state_w))
        state[take], state_p[take], state_w[take] = (
            proposals[i][take],
            log_p[i][take],
            log_w[i][take],
        )
        accepted += int(take.sum())
        draws[:, i], kept_p[:, i] = state, state_p
    rate = accepted / (n_chains * n_draws)
    return Chains(draws, kept_p, "independence-mh", rate, n_chains * n_draws)


def de_mcmc(
    fun: LogDensity,
    start: np.ndarray,
    n_steps: int,
    thin: int,
    rng: np.random.Generator,
    start_log_p: np.ndarray | None = None,
    deadline: float = math.inf,
) -> Chains:
    """Differential-evolution MCMC; each walker is one chain.

    The walkers are updated in two halves: a walker of one half proposes x + g (a - b) + e,
    a != b from the other half (g = 2.38 / sqrt(2 dim), or 1 in DE_JUMP of the moves), which
    is symmetric while that half stands still, so Metropolis acceptance keeps the posterior.
    Every ``thin``-th state is kept, the last step's included, so a run continues from
    ``draws[:, -1]`` (and ``log_density[:, -1]`` as ``start_log_p``). A run still going at
    ``deadline`` (``time.perf_counter``) stops there, ``out_of_time``."""
    walkers, dim = start.shape
    x = start.copy()
    log_p = fun(start) if start_log_p is None else start_log_p.copy()
    halves = (np.arange(walkers // 2), np.arange(walkers // 2, walkers))
    gamma = 2.38 / math.sqrt(2 * dim)
    kept, kept_p = [], []
    accepted = evaluations = 0
    stop = False
    for step in range(n_steps):
        for active, passive in (halves, halves[::-1]):
            n = len(active)
            first = rng.integers(len(passive), size=n)
            second = (first + rng.integers(1, len(passive), size=n)) % len(passive)
            g = np.where(rng.random(n) < DE_JUMP, 1.0, gamma)
            jitter = 1e-4 * x[passive].std(axis=0) * rng.standard_normal((n, dim))
            difference = x[passive[first]] - x[passive[second]]
            trial = x[active] + g[:, None] * difference + jitter
            trial_p = fun(trial)
            evaluations += n
            with np.errstate(invalid="ignore"):
                take = np.log(rng.random(n)) < trial_p - log_p[active]
            x[active[take]], log_p[active[take]] = trial[take], trial_p[take]
            accepted += int(take.sum())
        stop = step < n_steps - 1 and time.perf_counter() > deadline
        if (n_steps - 1 - step) % thin == 0 or stop:
            kept.append(x.copy())
            kept_p.append(log_p.copy())
        if stop:
            break
    draws = np.stack(kept, axis=1)
    rate = accepted / evaluations
    chains = Chains(draws, np.stack(kept_p, axis=1), "de-mcmc", rate, evaluations)
    chains.out_of_time = stop
    return chains


@dataclass(frozen=True)
class SamplerSettings:
    num_chains: int = 4
    num_samples: int = 1000
    num_warmup: int = 500
    max_seconds: float = 30.0  # time budget for extending the chains towards the targets


@dataclass
class _Run:
    """What the rounds of one posterior share: density, budget, counters."""

    fun: LogDensity
    settings: SamplerSettings
    rng: np.random.Generator
    deadline: float
    to_natural: Transform | None = None  # the units the diagnostics are computed in
    spent: int = 0
    rounds: int = 0

    def diagnose(self, chains: Chains) -> None:
        chains.evaluations, chains.rounds = self.spent, self.rounds
        chains.diagnose(self.to_natural)

    def affordable(self, seconds: float) -> bool:
        return time.perf_counter() + seconds <= self.deadline


def sample_posterior(
    fun: LogDensity,
    starts: np.ndarray,
    bounds: np.ndarray,
    steps: np.ndarray,
    settings: SamplerSettings,
    rng: np.random.Generator,
    box: Box | None = None,
    to_natural: Transform | None = None,
) -> tuple[Chains, np.ndarray, float]:
    """Mode, pilot, independence-MH rounds with one Student-t; the fallback when those
    cannot mix. Draws come back in the sampling space of ``fun``; their diagnostics are
    those of ``to_natural(draws)``."""
    run = _Run(fun, settings, rng, time.perf_counter() + settings.max_seconds, to_natural)
    mode, mode_value = find_mode(fun, starts, bounds, steps)
    cov = laplace_covariance(fun, mode, bounds, steps)
    pilot = independence_mh(
        fun, StudentMixture.around(mode, cov, 1.2), settings.num_chains, settings.num_warmup, rng
    )
    run.spent = pilot.evaluations
    chains, done = pilot, False
    if _mixes(pilot, len(mode), REFIT_ACCEPTANCE / 2):

        def refit(flat: np.ndarray) -> StudentMixture:
            return StudentMixture.around(flat.mean(axis=0), _regularize(np.cov(flat.T), cov), 1.1)

        chains, done = _imh_rounds(run, refit, pilot, REFIT_ACCEPTANCE)
    if done:
        return chains, mode, mode_value
    if not run.affordable(0.0):  # no time left for the fallback
        run.diagnose(chains)
        chains.out_of_time = True
        return chains, mode, mode_value
    box = box or Box(np.array([], dtype=int), np.array([]), np.array([]))
    return _fallback(run, box, mode, cov, pilot), mode, mode_value


def _imh_rounds(
    run: _Run,
    refit: Callable[[np.ndarray], StudentMixture],
    previous: Chains,
    min_acceptance: float,
    extend_acceptance: float = EXTEND_ACCEPTANCE,
) -> tuple[Chains, bool]:
    """Independence-MH rounds, each proposal refit to the previous round's draws, until
    the chains converge or the budget ends (then ``(chains, True)``); ``(chains, False)``
    when they accept less than ``min_acceptance`` without converging (the proposal does not
    fit the posterior).

    A round whose chains agree (R-hat < EXTEND_RHAT) but have too few effective draws is
    extended with the same proposal by the draws the ESS shortfall asks for (one fixed
    transition kernel, so the longer chains are as valid as the first ones). Chains that
    disagree start a new round, twice as long; the earlier rounds then count as warm-up.
    Nothing is started that cannot finish within the time budget.
    """
    settings, dim = run.settings, previous.draws.shape[2]
    draws = settings.num_samples
    while True:
        proposal = refit(previous.draws.reshape(-1, dim))
        start = (previous.draws[:, -1], previous.log_density[:, -1])
        began = time.perf_counter()
        chains = independence_mh(run.fun, proposal, settings.num_chains, draws, run.rng, start)
        per_draw = (time.perf_counter() - began) / draws
        run.rounds += 1
        run.spent += chains.evaluations
        while True:
            run.diagnose(chains)
            if chains.converged():
                return chains, True
            extra = _extension(chains, extend_acceptance)
            if extra == 0:
                break
            if not run.affordable(per_draw * extra):
                chains.out_of_time = True
                return chains, True
            last = (chains.draws[:, -1], chains.log_density[:, -1])
            more = independence_mh(run.fun, proposal, settings.num_chains, extra, run.rng, last)
            run.spent += more.evaluations
            chains = _joined(chains, more)
        if chains.acceptance < min_acceptance or not _mixes(chains, dim, MIN_ACCEPTANCE):
            return chains, False
        draws = min(2 * chains.draws.shape[1], MAX_DRAWS_PER_CHAIN)
        if not run.affordable(per_draw * draws):
            chains.out_of_time = True
            return chains, True
        previous = chains


def _extension(chains: Chains, min_acceptance: float) -> int:
    """Draws per chain to add for the ESS targets (with a margin), or 0 when the chains
    disagree, accept too rarely or are already as long as allowed."""
    diagnostics, length = chains.diagnostics, chains.draws.shape[1]
    assert diagnostics is not None  # the caller diagnosed the chains first
    rhats = list(diagnostics.rhat.values())
    esses = list(diagnostics.ess_bulk.values()) + list(diagnostics.ess_tail.values())
    usable = all(math.isfinite(v) for v in rhats + esses) and min(esses) > 0
    if not usable or max(rhats) >= EXTEND_RHAT or chains.acceptance < min_acceptance:
        return 0
    wanted = math.ceil(length * (ESS_MARGIN * ESS_TARGET / min(esses) - 1.0))
    # a low ESS from one sticky stretch would ask for far too much: grow at most 4x a step
    wanted = min(wanted, MAX_GROWTH * length)
    extra = min(max(wanted, length // 4, 1), MAX_DRAWS_PER_CHAIN - length)
    return max(extra, 0)


def _joined(first: Chains, second: Chains) -> Chains:
    return Chains(
        np.concatenate([first.draws, second.draws], axis=1),
        np.concatenate([first.log_density, second.log_density], axis=1),
        first.algorithm,
        (first.acceptance * first.draws.shape[1] + second.acceptance * second.draws.shape[1])
        / (first.draws.shape[1] + second.draws.shape[1]),
        first.evaluations + second.evaluations,
        rounds=first.rounds,
    )


def _mixes(chains: Chains, dim: int, min_acceptance: float) -> bool:
    """Enough distinct accepted draws to refit the proposal from."""
    distinct = len(np.unique(chains.draws[:, :, 0]))
    return chains.acceptance >= min_acceptance and distinct > 5 * dim


def _regularize(sample_cov: np.ndarray, laplace_cov: np.ndarray) -> np.ndarray:
    cov = np.atleast_2d(sample_cov) + 1e-6 * np.diag(np.diag(laplace_cov))
    try:
        np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        return laplace_cov
    return cov


def _out_of_box(chains: Chains, box: Box) -> Chains:
    """Chains of the box's natural coordinates moved back to the sampling space
    (``Box.from_box``): the draws and their log densities, with the Jacobian."""
    draws = box.from_box(chains.draws)
    chains.log_density = chains.log_density + box.log_jacobian(draws)
    chains.draws = draws
    return chains


def _walkers_start(
    fun: LogDensity, mode: np.ndarray, cov: np.ndarray, previous: Chains, rng: np.random.Generator
) -> np.ndarray:
    """Walkers from the earlier chains' distinct draws when there are enough (they span every
    direction of the posterior), else around the mode; never all in a lower-dimensional
    subspace, which differences of walkers could not leave. Sampling-space coordinates."""
    distinct = np.unique(previous.draws.reshape(-1, len(mode)), axis=0)
    if len(distinct) >= DE_WALKERS:
        return distinct[rng.choice(len(distinct), size=DE_WALKERS, replace=False)]
    spread = 0.5 * rng.standard_normal((DE_WALKERS, len(mode))) @ np.linalg.cholesky(cov).T
    start = mode + spread
    bad = ~np.isfinite(fun(start))
    start[bad] = mode + 1e-3 * rng.standard_normal((int(bad.sum()), len(mode)))
    return start


def _fallback(run: _Run, box: Box, mode: np.ndarray, cov: np.ndarray, previous: Chains) -> Chains:
    """DE-MCMC walkers explore the posterior in the box's natural coordinates; a Student-t
    mixture fitted to the second half of their draws drives independence-MH rounds. While
    that mixture cannot mix, the walkers run twice as long again (one kernel throughout, so
    their segments join into longer chains) and the mixture is refit; the walkers' own
    chains are the result if they meet the targets first or the budget ends."""
    start = box.to_box(_walkers_start(run.fun, mode, cov, previous, run.rng))
    natural = run.fun = box.density(run.fun)  # every later round samples the box
    if run.to_natural is not None:
        run.to_natural = _composed(run.to_natural, box.from_box)
    burn = de_mcmc(natural, start, DE_BURN, DE_BURN, run.rng, deadline=run.deadline)
    run.spent += burn.evaluations
    walkers, steps = burn, DE_PILOT
    while True:
        began = time.perf_counter()
        last = (walkers.draws[:, -1], walkers.log_density[:, -1])
        more = de_mcmc(natural, last[0], steps, DE_THIN, run.rng, last[1], run.deadline)
        run.spent += more.evaluations
        run.rounds += 1
        walkers = more if walkers is burn else _joined(walkers, more)
        settled = _second_half(walkers)
        if burn.out_of_time or more.out_of_time:
            run.diagnose(settled)
            settled.out_of_time = True
            return _labelled(_out_of_box(settled, box), box)
        chains, done = _imh_rounds(
            run,
            _mixture_refit(run.rng),
            _regrouped(settled, run.settings.num_chains),
            MIXTURE_ACCEPTANCE,
            MIXTURE_EXTEND_ACCEPTANCE,
        )
        if done:
            return _labelled(_out_of_box(chains, box), box)
        run.diagnose(settled)
        steps *= 2
        if settled.converged() or not run.affordable(2.0 * (time.perf_counter() - began)):
            settled.out_of_time = not settled.converged()
            return _labelled(_out_of_box(settled, box), box)


def _mixture_refit(rng: np.random.Generator) -> Callable[[np.ndarray], StudentMixture]:
    return lambda flat: fit_mixture(flat, MIXTURE_COMPONENTS, rng)


def _second_half(chains: Chains) -> Chains:
    """The chains without their first half (warm-up)."""
    half = chains.draws.shape[1] // 2
    return Chains(
        chains.draws[:, half:],
        chains.log_density[:, half:],
        chains.algorithm,
        chains.acceptance,
        chains.evaluations,
    )


def _regrouped(walkers: Chains, rows: int) -> Chains:
    """The walkers' draws as ``rows`` chains: a refit sees all of them, and each chain
    continues from the last state of one walker."""
    kept = len(walkers.draws) - len(walkers.draws) % rows
    dim = walkers.draws.shape[2]
    return Chains(
        walkers.draws[:kept].reshape(rows, -1, dim),
        walkers.log_density[:kept].reshape(rows, -1),
        walkers.algorithm,
        walkers.acceptance,
        0,
    )


def _labelled(chains: Chains, box: Box) -> Chains:
    if len(box.index):
        chains.algorithm += " (natural units)"
    return chains


def _composed(outer: Transform, inner: Transform) -> Transform:
    return lambda x: outer(inner(x))
