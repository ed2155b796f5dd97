"""Posterior sampling on a vectorized log density.

Strategy (each step is exact MCMC; nothing is a Gaussian stand-in for the posterior):
1. the mode is found with L-BFGS-B (gradients by batched finite differences) and the local
   curvature gives a first proposal;
2. a pilot *independence Metropolis-Hastings* run with a heavy-tailed (Student-t mixture)
   proposal explores the posterior; its draws re-centre and re-shape the proposal;
3. the main independence-MH run draws every proposal up front, so the whole posterior costs
   one vectorized density evaluation per draw, and accepts/rejects against the exact density;
4. while the chains fall short of the targets (ArviZ's R-hat < 1.01, bulk and tail ESS >=
   1,000) the run is repeated, twice as long, with the proposal refit to the last draws;
5. if independence MH cannot mix (too few acceptances), an affine-invariant ensemble sampler
   (Goodman & Weare stretch move), robust to curved posteriors, runs instead and is extended
   until it meets the targets.
Both stop at the time budget; the chains then say they are unconverged (``out_of_time``).
The log density is expected on an unbounded space (``fit.Posterior`` maps bounded
parameters through a logit), so finite differences never leave the support.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import gammaln, logsumexp

from sn_fitter.quality import ESS_TARGET, Diagnostics, chain_diagnostics

LogDensity = Callable[[np.ndarray], np.ndarray]
T_DOF = 5.0
WIDE_FRACTION, WIDE_SCALE = 0.1, 3.0
MAX_DRAWS_PER_CHAIN = 64_000
EXTEND_RHAT, EXTEND_ACCEPTANCE, ESS_MARGIN = 1.05, 0.45, 1.15
MIN_ACCEPTANCE = 0.05
ENSEMBLE_THIN, ENSEMBLE_MIN_BURN, ENSEMBLE_SEGMENT = 10, 1000, 2000
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

    def diagnose(self) -> Diagnostics:
        names = [str(i) for i in range(self.draws.shape[2])]
        self.diagnostics = chain_diagnostics(self.draws, names)
        return self.diagnostics

    def converged(self) -> bool:
        return self.diagnostics is not None and self.diagnostics.converged


class StudentMixture:
    """Proposal: (1-f) t_nu(mean, cov) + f t_nu(mean, (k^2) cov)."""

    def __init__(self, mean: np.ndarray, cov: np.ndarray, scale: float = 1.0) -> None:
        self.mean, self.dim = mean, len(mean)
        self.chol = np.linalg.cholesky(cov * scale**2)
        self.log_det = 2.0 * np.log(np.diag(self.chol)).sum()
        self.scales = np.array([1.0, WIDE_SCALE])
        self.log_weights = np.log([1.0 - WIDE_FRACTION, WIDE_FRACTION])

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        normal = rng.standard_normal((n, self.dim)) @ self.chol.T
        stretch = np.sqrt(T_DOF / rng.chisquare(T_DOF, size=n))
        wide = rng.random(n) < WIDE_FRACTION
        factor = stretch * np.where(wide, WIDE_SCALE, 1.0)
        return self.mean + normal * factor[:, None]

    def log_pdf(self, x: np.ndarray) -> np.ndarray:
        white = np.linalg.solve(self.chol, (x - self.mean).T).T
        dist2 = (white**2).sum(axis=1)
        d, nu = self.dim, T_DOF
        const = gammaln((nu + d) / 2) - gammaln(nu / 2) - 0.5 * d * np.log(nu * np.pi)
        parts = [
            lw
            + const
            - 0.5 * self.log_det
            - d * np.log(k)
            - 0.5 * (nu + d) * np.log1p(dist2 / (k * k * nu))
            for lw, k in zip(self.log_weights, self.scales, strict=True)
        ]
        return logsumexp(np.stack(parts), axis=0)


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
    best_x, best_value = None, -np.inf
    inner = bounds.copy()
    inner[:, 0] += steps
    inner[:, 1] -= steps
    start_values = fun(starts)
    for start, start_value in zip(starts, start_values, strict=True):
        if best_x is not None and start_value < best_value - MODE_RESTART_GAP:
            continue
        result = minimize(
            lambda x: _gradient(fun, x, steps),
            np.clip(start, inner[:, 0], inner[:, 1]),
            jac=True,
            method="L-BFGS-B",
            bounds=list(map(tuple, inner)),
            options={"maxiter": 200, "ftol": 1e-8, "gtol": 1e-4},
        )
        value = float(fun(result.x[None])[0])
        if value > best_value:
            best_x, best_value = result.x, value
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


def stretch_sampler(
    fun: LogDensity,
    start: np.ndarray,
    n_steps: int,
    burn: int,
    thin: int,
    rng: np.random.Generator,
    start_log_p: np.ndarray | None = None,
) -> Chains:
    """Affine-invariant ensemble sampler (stretch move, a=2); each walker is one chain.

    Every ``thin``-th state after ``burn`` steps is kept, the last step's included, so a run
    continues from ``draws[:, -1]`` (and ``log_density[:, -1]`` as ``start_log_p``)."""
    walkers, dim = start.shape
    x = start.copy()
    log_p = fun(start) if start_log_p is None else start_log_p.copy()
    halves = (np.arange(walkers // 2), np.arange(walkers // 2, walkers))
    kept, kept_p = [], []
    accepted = evaluations = 0
    for step in range(n_steps):
        for active, passive in (halves, halves[::-1]):
            stretch = ((rng.random(len(active)) + 1.0) ** 2) / 2.0  # a = 2
            partner = x[rng.choice(passive, size=len(active))]
            trial = partner + stretch[:, None] * (x[active] - partner)
            trial_p = fun(trial)
            evaluations += len(active)
            with np.errstate(invalid="ignore"):
                log_r = (dim - 1) * np.log(stretch) + trial_p - log_p[active]
                take = np.log(rng.random(len(active))) < log_r
            x[active[take]], log_p[active[take]] = trial[take], trial_p[take]
            accepted += int(take.sum())
        if step >= burn and (n_steps - 1 - step) % thin == 0:
            kept.append(x.copy())
            kept_p.append(log_p.copy())
    draws = np.stack(kept, axis=1)
    return Chains(
        draws, np.stack(kept_p, axis=1), "ensemble-stretch", accepted / evaluations, evaluations
    )


@dataclass(frozen=True)
class SamplerSettings:
    num_chains: int = 4
    num_samples: int = 1000
    num_warmup: int = 500
    max_seconds: float = 30.0  # time budget for extending the chains towards the targets


def sample_posterior(
    fun: LogDensity,
    starts: np.ndarray,
    bounds: np.ndarray,
    steps: np.ndarray,
    settings: SamplerSettings,
    rng: np.random.Generator,
) -> tuple[Chains, np.ndarray, float]:
    """Mode, pilot, then independence-MH rounds; the ensemble sampler if those cannot mix.

    A round whose chains agree (R-hat < EXTEND_RHAT) but have too few effective draws is
    extended with the same proposal by the draws the ESS shortfall asks for (one fixed
    transition kernel, so the longer chains are as valid as the first ones). Chains that
    disagree start a new round, twice as long, with the proposal refit to their draws; the
    earlier rounds then count as warm-up. Nothing is started that cannot finish within the
    time budget.
    """
    deadline = time.perf_counter() + settings.max_seconds
    mode, mode_value = find_mode(fun, starts, bounds, steps)
    cov = laplace_covariance(fun, mode, bounds, steps)
    previous = independence_mh(
        fun, StudentMixture(mode, cov, 1.2), settings.num_chains, settings.num_warmup, rng
    )
    spent, rounds = previous.evaluations, 0
    draws = settings.num_samples
    while _mixes(previous, len(mode)):
        flat = previous.draws.reshape(-1, len(mode))
        proposal = StudentMixture(flat.mean(axis=0), _regularize(np.cov(flat.T), cov), 1.1)
        start = (previous.draws[:, -1], previous.log_density[:, -1])
        began = time.perf_counter()
        chains = independence_mh(fun, proposal, settings.num_chains, draws, rng, start=start)
        per_draw = (time.perf_counter() - began) / draws
        rounds += 1
        spent += chains.evaluations
        while True:
            chains.evaluations, chains.rounds = spent, rounds
            chains.diagnose()
            if chains.converged():
                return chains, mode, mode_value
            extra = _extension(chains)
            if extra == 0:
                break
            if time.perf_counter() + per_draw * extra > deadline:
                chains.out_of_time = True
                return chains, mode, mode_value
            more = independence_mh(
                fun,
                proposal,
                settings.num_chains,
                extra,
                rng,
                start=(chains.draws[:, -1], chains.log_density[:, -1]),
            )
            spent += more.evaluations
            chains = _joined(chains, more)
        draws = min(2 * chains.draws.shape[1], MAX_DRAWS_PER_CHAIN)
        if time.perf_counter() + per_draw * draws > deadline:
            chains.out_of_time = True
            return chains, mode, mode_value
        previous = chains
    chains = _ensemble(fun, mode, cov, previous, settings, rng, deadline)
    chains.evaluations += spent
    return chains, mode, mode_value


def _extension(chains: Chains) -> int:
    """Draws per chain to add for the ESS targets (with a margin), or 0 when the chains
    disagree, accept too rarely or are already as long as allowed."""
    diagnostics, length = chains.diagnostics, chains.draws.shape[1]
    rhats = list(diagnostics.rhat.values())
    esses = list(diagnostics.ess_bulk.values()) + list(diagnostics.ess_tail.values())
    usable = all(math.isfinite(v) for v in rhats + esses) and min(esses) > 0
    if not usable or max(rhats) >= EXTEND_RHAT or chains.acceptance < EXTEND_ACCEPTANCE:
        return 0
    wanted = math.ceil(length * (ESS_MARGIN * ESS_TARGET / min(esses) - 1.0))
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


def _mixes(chains: Chains, dim: int) -> bool:
    """Enough distinct accepted draws to refit the proposal from."""
    distinct = len(np.unique(chains.draws[:, :, 0]))
    return chains.acceptance >= MIN_ACCEPTANCE and distinct > 5 * dim


def _regularize(sample_cov: np.ndarray, laplace_cov: np.ndarray) -> np.ndarray:
    cov = np.atleast_2d(sample_cov) + 1e-6 * np.diag(np.diag(laplace_cov))
    try:
        np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        return laplace_cov
    return cov


def _ensemble_start(
    fun: LogDensity,
    mode: np.ndarray,
    cov: np.ndarray,
    previous: Chains,
    walkers: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Walkers from the pilot's distinct draws when there are enough (they span every
    direction of the posterior), else around the mode; never all in a lower-dimensional
    subspace, which the stretch move could not leave."""
    flat = previous.draws.reshape(-1, len(mode))
    distinct = np.unique(flat, axis=0)
    if len(distinct) >= walkers:
        return distinct[rng.choice(len(distinct), size=walkers, replace=False)]
    start = mode + 0.5 * rng.standard_normal((walkers, len(mode))) @ np.linalg.cholesky(cov).T
    bad = ~np.isfinite(fun(start))
    start[bad] = mode + 1e-3 * rng.standard_normal((int(bad.sum()), len(mode)))
    return start


def _ensemble(
    fun: LogDensity,
    mode: np.ndarray,
    cov: np.ndarray,
    previous: Chains,
    settings: SamplerSettings,
    rng: np.random.Generator,
    deadline: float,
) -> Chains:
    """Stretch-move ensemble: burn in, then extend by segments until the targets are met
    or the time budget is spent."""
    dim = len(mode)
    walkers = max(32, 4 * dim)
    walkers += walkers % 2
    start = _ensemble_start(fun, mode, cov, previous, walkers, rng)
    burn = max(settings.num_warmup, ENSEMBLE_MIN_BURN)
    thin = ENSEMBLE_THIN
    chains = stretch_sampler(fun, start, burn + ENSEMBLE_SEGMENT, burn, thin, rng)
    while True:
        chains.diagnose()
        if chains.converged():
            return chains
        began = time.perf_counter()
        position = (chains.draws[:, -1], chains.log_density[:, -1])
        more = stretch_sampler(fun, position[0], ENSEMBLE_SEGMENT, 0, thin, rng, position[1])
        rounds = chains.rounds + 1
        chains = _joined(chains, more)
        chains.rounds = rounds
        if time.perf_counter() + 2.0 * (time.perf_counter() - began) > deadline:
            chains.diagnose()
            chains.out_of_time = not chains.converged()
            return chains
