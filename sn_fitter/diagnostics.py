"""Convergence diagnostics: rank-normalized split R-hat and effective sample sizes.

Implemented from Vehtari, Gelman, Simpson, Carpenter & Buerkner (2021), "Rank-normalization,
folding, and localization: an improved R-hat", the same definitions ArviZ and Stan report.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata


def _split(draws: np.ndarray) -> np.ndarray:
    """(chains, n) -> (2*chains, n//2): each chain's first and second halves."""
    half = draws.shape[1] // 2
    return np.concatenate([draws[:, :half], draws[:, -half:]], axis=0)


def _rank_normalize(draws: np.ndarray) -> np.ndarray:
    ranks = rankdata(draws, method="average").reshape(draws.shape)
    return ndtri((ranks - 0.375) / (draws.size + 0.25))


def _rhat(draws: np.ndarray) -> float:
    n = draws.shape[1]
    within = draws.var(axis=1, ddof=1).mean()
    between = n * draws.mean(axis=1).var(ddof=1)
    if within <= 0:
        return float("nan")
    return float(np.sqrt(((n - 1) / n * within + between / n) / within))


def rhat(draws: np.ndarray) -> float:
    """Rank-normalized split R-hat (bulk and folded tails, whichever is larger)."""
    split = _split(np.asarray(draws, dtype=float))
    if np.ptp(split) == 0:
        return float("nan")
    folded = np.abs(split - np.median(split))
    return max(_rhat(_rank_normalize(split)), _rhat(_rank_normalize(folded)))


def _autocovariance(draws: np.ndarray) -> np.ndarray:
    n = draws.shape[1]
    centred = draws - draws.mean(axis=1, keepdims=True)
    size = 2 ** int(np.ceil(np.log2(2 * n)))
    spectrum = np.fft.rfft(centred, n=size, axis=1)
    acov = np.fft.irfft(spectrum * np.conjugate(spectrum), n=size, axis=1)[:, :n]
    return acov / n


def _ess(draws: np.ndarray) -> float:
    chains, n = draws.shape
    acov = _autocovariance(draws)
    chain_var = acov[:, 0] * n / (n - 1)
    within = chain_var.mean()
    var_plus = within * (n - 1) / n + (draws.mean(axis=1).var(ddof=1) if chains > 1 else 0.0)
    if var_plus <= 0:
        return float("nan")
    rho = 1.0 - (within - acov.mean(axis=0)) / var_plus
    rho[0] = 1.0
    # Geyer's initial positive and monotone sequence over pairs of lags.
    pairs = rho[: 2 * (n // 2)].reshape(-1, 2).sum(axis=1)
    positive = np.flatnonzero(pairs <= 0)
    pairs = pairs[: positive[0]] if len(positive) else pairs
    pairs = np.minimum.accumulate(pairs)
    tau = max(-1.0 + 2.0 * pairs.sum(), 1.0 / np.log10(chains * n))
    return float(chains * n / tau)


def ess_bulk(draws: np.ndarray) -> float:
    split = _split(np.asarray(draws, dtype=float))
    if np.ptp(split) == 0:
        return float("nan")
    return _ess(_rank_normalize(split))


def ess_tail(draws: np.ndarray) -> float:
    """Minimum ESS of the 5% and 95% quantile indicators."""
    split = _split(np.asarray(draws, dtype=float))
    values = []
    for q in (0.05, 0.95):
        indicator = (split <= np.quantile(split, q)).astype(float)
        if np.ptp(indicator) == 0:
            return float("nan")
        values.append(_ess(indicator))
    return min(values)
