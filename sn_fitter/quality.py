"""Is a posterior good enough to call "Good results"? ArviZ's diagnostics plus a bound check.

A posterior passes when, for every parameter, ArviZ's rank-normalized split R-hat is below
``RHAT_TARGET`` and its bulk and tail effective sample sizes reach ``ESS_TARGET``, and no
parameter piles at a bound of its prior range: the sample density within a strip next to the
bound (``PILE_STRIP`` times the width of the central 68 % interval) is more than
``PILE_RATIO`` of the mean density inside that interval. For a Gaussian posterior this flags
a bound closer than ~1.3 sigma to its centre (the bound cuts away more than ~10 %). A
posterior cut by a bound is not the posterior the data ask for: its mean and errors are
biased (a z = 0.42 source fitted with z_max = 0.3 gets a colour several sigma off), so the
user is told.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

with warnings.catch_warnings():  # arviz announces its 1.0 refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

RHAT_TARGET = 1.01
ESS_TARGET = 1000.0
PILE_STRIP = 0.1  # of the central 68 % interval's width
PILE_RATIO = 0.5
CENTRAL = 0.6827


@dataclass(frozen=True)
class BoundPile:
    name: str
    side: str  # "lower" or "upper"
    bound: float
    density_ratio: float  # density next to the bound / mean density of the central 68 %

    def describe(self) -> str:
        return (
            f"{self.name} piles at its {self.side} bound {self.bound:g} (posterior density "
            f"there {self.density_ratio:.1f}x its central 68% mean)"
        )


@dataclass
class Diagnostics:
    """Per-parameter R-hat and ESS (ArviZ's definitions) and the bound check."""

    rhat: dict[str, float]
    ess_bulk: dict[str, float]
    ess_tail: dict[str, float]
    piles: list[BoundPile] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return not self.convergence_failures()

    @property
    def passed(self) -> bool:
        return self.converged and not self.piles

    def convergence_failures(self) -> list[str]:
        """What falls short of the targets, worst parameter named; empty when all pass."""
        failures = []
        worst = _worst(self.rhat, max)
        if worst is None or not self.rhat[worst] < RHAT_TARGET:
            shown = "undefined" if worst is None else f"{self.rhat[worst]:.3f}"
            failures.append(f"R-hat {shown} (target < {RHAT_TARGET:g}; {worst})")
        for label, values in (("bulk", self.ess_bulk), ("tail", self.ess_tail)):
            least = _worst(values, min)
            if least is None or not values[least] >= ESS_TARGET:
                shown = "undefined" if least is None else f"{values[least]:.0f}"
                failures.append(f"{label} ESS {shown} (target >= {ESS_TARGET:.0f}; {least})")
        return failures

    def failures(self) -> list[str]:
        return self.convergence_failures() + [pile.describe() for pile in self.piles]


def _worst(values: dict[str, float], pick) -> str | None:
    """The parameter with the worst finite value; None when a value is not finite."""
    if not values or not all(math.isfinite(v) for v in values.values()):
        return None
    return pick(values, key=values.get)


def chain_diagnostics(draws: np.ndarray, names: list[str]) -> Diagnostics:
    """R-hat and bulk/tail ESS per parameter of ``draws`` (chains, draws, parameters)."""
    rhat, bulk, tail = {}, {}, {}
    for i, name in enumerate(names):
        column = np.ascontiguousarray(draws[:, :, i])
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore")  # constant columns: arviz warns and returns NaN
            rhat[name] = float(az.rhat(column, method="rank"))
            bulk[name] = float(az.ess(column, method="bulk"))
            tail[name] = float(az.ess(column, method="tail"))
    return Diagnostics(rhat, bulk, tail)


def bound_piles(flat: np.ndarray, names: list[str], bounds: np.ndarray) -> list[BoundPile]:
    """Parameters whose posterior density next to a finite bound is more than PILE_RATIO
    of its mean density in the central 68 % interval."""
    piles = []
    for i, name in enumerate(names):
        low, high = bounds[i]
        column = flat[:, i]
        q16, q84 = np.quantile(column, [0.5 - CENTRAL / 2, 0.5 + CENTRAL / 2])
        width = q84 - q16
        for side, bound in (("lower", low), ("upper", high)):
            if not math.isfinite(bound):
                continue
            strip = PILE_STRIP * width
            if width > 0:
                share = np.mean(np.abs(column - bound) <= strip)
                ratio = (share / strip) / (CENTRAL / width)
            else:  # every sample equal: piled when that value is the bound
                ratio = math.inf if np.all(column == bound) else 0.0
            if ratio > PILE_RATIO:
                piles.append(BoundPile(name, side, float(bound), float(ratio)))
    return piles


def diagnose(samples: np.ndarray, names: list[str], bounds: np.ndarray) -> Diagnostics:
    """Diagnostics of natural-unit ``samples`` (chains, draws, parameters) within ``bounds``."""
    result = chain_diagnostics(samples, names)
    result.piles = bound_piles(samples.reshape(-1, len(names)), names, bounds)
    return result
