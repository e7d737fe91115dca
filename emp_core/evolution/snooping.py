"""The best Sharpe ratio luck gives a set of correlated trials, and their effective number.

The deflated Sharpe ratio needs SR0 = E[max_n SR_n] under the null that no trial has
skill (Bailey and Lopez de Prado 2014). Their closed form, for N *independent* trials
whose Sharpe estimates have variance V,

    SR0 = sqrt(V) ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e))),

overstates SR0 when the trials are correlated (a genetic search evaluates thousands of
near-copies). Here SR0 is estimated for the trials as they are, correlation and all:

1. impose the null by removing each trial's mean return (White 2000's Reality Check);
2. resample the bars with the **stationary bootstrap** (Politis and Romano 1994: blocks
   of geometric length with mean ``block`` bars, wrapping around), the same bar indices
   for every trial, so their cross-correlation and short-range autocorrelation stay;
3. in each of ``replicates`` resamples take the largest Sharpe ratio over the trials (the
   resample's mean return over the trial's full-sample standard deviation, as Hansen
   2005 standardises); SR0 is the mean of those maxima, V the mean over trials of the
   variance of their own Sharpe ratio across resamples.

The **effective number of independent trials** N_eff is the N at which the closed form
with this V gives this SR0: the number of independent trials that luck would serve as
well as it serves these. When only a sample of m of the registry's N trials was
resampled, N_eff is scaled by N / m (each unseen trial assumed as new as the sampled
ones: an upper bound, so SR0 errs high) and SR0 recomputed from the closed form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from emp_core.evolution.overfitting import expected_max_sharpe

FLAT = 1e-9  # a per-bar return standard deviation below this is rounding noise: the series is constant
BLOCK = 10  # mean block length (bars) of the stationary bootstrap
REPLICATES = 200


@dataclass(frozen=True)
class NullMaximum:
    sr0: float  # expected best per-bar Sharpe ratio of the trials under the null
    variance: float  # V: null variance of one trial's per-bar Sharpe ratio
    n_effective: float  # independent trials with the same expected best
    n_resampled: int  # trials in the bootstrap (m)
    replicates: int
    maxima: np.ndarray  # the best Sharpe ratio of each resample (over the resampled trials)
    scale: float = 1.0  # all trials / resampled trials

    def reality_check(self, sharpe: float) -> float:
        """White's (2000) Reality Check p-value of an observed best Sharpe ratio: the share of resamples
        whose best trial did at least as well by luck, scaled like SR0 to every trial when only a sample
        was resampled (1 - (1 - p)^(N / m), as if the unseen trials were as new as the sampled ones)."""
        p = float(np.mean(self.maxima >= sharpe))
        return 1.0 - (1.0 - p) ** self.scale


def stationary_bootstrap_indices(n: int, block: float, rng: np.random.Generator) -> np.ndarray:
    """One resample of ``n`` bar indices: a new block starts at each bar with probability 1/block, at a
    uniform position, and runs on (wrapping around) until the next start (Politis and Romano 1994)."""
    starts_new = rng.random(n) < 1.0 / block
    starts_new[0] = True
    block_id = np.cumsum(starts_new) - 1
    origin = rng.integers(0, n, block_id[-1] + 1)
    first_bar = np.flatnonzero(starts_new)
    offset = np.arange(n) - first_bar[block_id]
    return (origin[block_id] + offset) % n


def effective_trials(sr0: float, variance: float) -> float:
    """The N (>= 1) at which ``expected_max_sharpe(variance, N)`` equals ``sr0`` (bisection on log N)."""
    if variance <= 0 or sr0 <= 0:
        return 1.0
    lo, hi = 0.0, math.log(1e15)
    if expected_max_sharpe(variance, math.exp(hi)) < sr0:
        return math.exp(hi)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if expected_max_sharpe(variance, math.exp(mid)) < sr0:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def null_maximum(returns: np.ndarray, *, total_trials: int | None = None, replicates: int = REPLICATES,
                 block: float = BLOCK, seed: int = 0) -> NullMaximum:
    """SR0, V and N_eff of the trials (columns of ``returns``, bars x trials, each with some variance);
    ``total_trials`` is how many trials these were sampled from (default: all of them)."""
    r = np.asarray(returns, dtype=float)
    if r.ndim != 2 or r.shape[1] == 0 or r.shape[0] < 3:
        raise ValueError(f"need a (bars x trials) matrix with 3+ bars and 1+ trial, got shape {r.shape}")
    if not np.isfinite(r).all():
        raise ValueError("trial returns must be finite")
    if (r.std(axis=0) <= FLAT).any():
        raise ValueError("a trial with constant returns has no Sharpe ratio; leave it out")
    n_bars, m = r.shape
    centred = r - r.mean(axis=0)
    rng = np.random.default_rng(seed)
    # Each resample's mean over the trial's full-sample standard deviation (as Hansen 2005 standardises):
    # a resample's own standard deviation collapses when it misses a sparse trial's few trades, and the
    # ratio would then be a numerical accident, not luck.
    scale = r.std(axis=0, ddof=1)
    sharpe = np.empty((replicates, m))
    for b in range(replicates):
        sharpe[b] = centred[stationary_bootstrap_indices(n_bars, block, rng)].mean(axis=0) / scale
    variance = float(np.mean(sharpe.var(axis=0, ddof=1)))
    maxima = sharpe.max(axis=1)
    sr0 = float(maxima.mean())
    n_eff = effective_trials(sr0, variance)
    total = total_trials if total_trials is not None else m
    if total > m:
        n_eff *= total / m
        sr0 = expected_max_sharpe(variance, n_eff)
    return NullMaximum(sr0=sr0, variance=variance, n_effective=n_eff, n_resampled=m, replicates=replicates,
                       maxima=maxima, scale=max(total / m, 1.0))

