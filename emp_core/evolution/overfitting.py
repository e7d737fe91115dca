"""Overfitting gates: probabilistic and deflated Sharpe ratios, and the probability of backtest overfitting.

- **PSR** (Bailey and Lopez de Prado 2012): the probability that the true Sharpe
  ratio exceeds a benchmark SR*, given T observations of per-period returns with
  skewness g3 and (non-excess) kurtosis g4:
  PSR(SR*) = Phi( (SR - SR*) sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2) ),
  SR the per-period (not annualised) Sharpe ratio.
- **DSR** (Bailey and Lopez de Prado 2014): PSR against the Sharpe ratio the best of
  N independent trials would reach by luck,
  SR0 = sqrt(V) ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e))),
  V the variance of the trials' Sharpe ratios, gamma the Euler-Mascheroni constant.
  N comes from the experiment log (every evaluation counts).
- **PBO** by combinatorially symmetric cross-validation (Bailey, Borwein, Lopez de
  Prado and Zhu 2017): split the T x N matrix of per-period returns of N
  configurations into S blocks of rows; for every choice of S/2 blocks as
  in-sample, take the configuration with the best in-sample Sharpe and its
  relative rank w in the out-of-sample Sharpe ratios (rank / (N + 1)); the logit
  l = ln(w / (1 - w)); PBO = share of the choices with l <= 0, i.e. the in-sample
  winner is at or below the out-of-sample median.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from statistics import NormalDist

import numpy as np

EULER_GAMMA = 0.5772156649015329
_N = NormalDist()


def _moments(returns: np.ndarray) -> tuple[float, float, float, int]:
    r = np.asarray(returns, dtype=float)
    r = r[np.isfinite(r)]
    t = r.size
    if t < 3:
        raise ValueError(f"need at least 3 returns, got {t}")
    mean, std = r.mean(), r.std(ddof=1)
    if std == 0:
        raise ValueError("returns have zero variance: the Sharpe ratio is undefined")
    z = (r - mean) / r.std(ddof=0)
    return float(mean / std), float(np.mean(z**3)), float(np.mean(z**4)), t


def probabilistic_sharpe(returns: np.ndarray, benchmark: float = 0.0) -> float:
    """PSR of per-period ``returns`` against the per-period Sharpe ratio ``benchmark``."""
    sr, g3, g4, t = _moments(returns)
    denom = 1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr * sr
    return _N.cdf((sr - benchmark) * math.sqrt(t - 1) / math.sqrt(max(denom, 1e-12)))


def expected_max_sharpe(sharpe_variance: float, trials: int) -> float:
    """SR0: the Sharpe ratio the best of ``trials`` independent unskilled trials reaches by luck."""
    if trials < 2:
        return 0.0
    return math.sqrt(sharpe_variance) * ((1 - EULER_GAMMA) * _N.inv_cdf(1 - 1 / trials)
                                         + EULER_GAMMA * _N.inv_cdf(1 - 1 / (trials * math.e)))


def deflated_sharpe(returns: np.ndarray, trial_sharpes: np.ndarray, trials: int | None = None) -> float:
    """DSR of the chosen strategy's per-period ``returns`` given the per-period Sharpe ratios of every
    trial (their variance) and the number of trials (default: how many Sharpe ratios were given)."""
    trial_sharpes = np.asarray(trial_sharpes, dtype=float)
    n = trials if trials is not None else trial_sharpes.size
    variance = float(np.var(trial_sharpes, ddof=1)) if trial_sharpes.size > 1 else 0.0
    return probabilistic_sharpe(returns, expected_max_sharpe(variance, n))


@dataclass(frozen=True)
class PBOResult:
    pbo: float
    logits: np.ndarray  # one per in-sample / out-of-sample split
    splits: int


def probability_of_backtest_overfitting(returns: np.ndarray, blocks: int = 16) -> PBOResult:
    """PBO by CSCV of a (periods x configurations) matrix of per-period returns.

    All C(blocks, blocks/2) splits are evaluated at once: per-block sums of returns
    and squared returns give every split's Sharpe ratios by matrix products.
    """
    m = np.asarray(returns, dtype=float)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError("need a (periods x configurations) matrix with at least two configurations")
    if blocks % 2 or blocks < 2:
        raise ValueError(f"blocks must be even and >= 2, got {blocks}")
    usable = m.shape[0] - m.shape[0] % blocks
    if usable < 2 * blocks:
        raise ValueError(f"{m.shape[0]} periods are too few for {blocks} blocks")
    parts = m[:usable].reshape(blocks, usable // blocks, m.shape[1])
    s1, s2 = parts.sum(axis=1), (parts**2).sum(axis=1)  # (blocks, configurations)
    rows = usable // blocks
    chosen = np.array(list(combinations(range(blocks), blocks // 2)))
    mask = np.zeros((len(chosen), blocks))
    mask[np.arange(len(chosen))[:, None], chosen] = 1.0
    is_sr = _sharpe_from_sums(mask @ s1, mask @ s2, rows * blocks // 2)
    oos_sr = _sharpe_from_sums((1 - mask) @ s1, (1 - mask) @ s2, rows * blocks // 2)
    best = np.argmax(is_sr, axis=1)
    # relative rank of the in-sample winner among the out-of-sample Sharpe ratios (1 = worst, N = best)
    winner_oos = oos_sr[np.arange(len(chosen)), best]
    rank = (oos_sr < winner_oos[:, None]).sum(axis=1) + 1
    w = rank / (m.shape[1] + 1)
    logits = np.log(w / (1 - w))
    return PBOResult(pbo=float(np.mean(logits <= 0)), logits=logits, splits=len(chosen))


def _sharpe_from_sums(s1: np.ndarray, s2: np.ndarray, n: int) -> np.ndarray:
    mean = s1 / n
    var = (s2 - n * mean**2) / (n - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, mean / np.sqrt(var), -np.inf)
