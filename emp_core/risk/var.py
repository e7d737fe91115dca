"""One-bar value at risk and expected shortfall of a portfolio: historical, parametric Gaussian, Monte Carlo.

Inputs: positions in units (signed), last prices, and a history of per-bar simple returns per symbol, as
a polars frame with a column per symbol (other columns, such as a timestamp, are ignored) or a numpy
array (n bars x k symbols) with ``columns`` naming its symbols. Symbols with a zero position need no
history. The exposure of symbol i is V_i = units_i x price_i, and the portfolio's P&L over a bar is
``P&L_t = sum_i V_i r_it`` (in account currency): every figure below is a loss in currency, positive
when the portfolio loses.

- **Historical** (empirical): sort the n P&Ls ascending, k = ceil(n (1 - alpha)) (computed as
  ceil(round(n (1 - alpha), 9)), so that 100 x (1 - 0.99) is 1, not 2); VaR = -(the k-th smallest P&L)
  and ES = -(the mean of the k smallest), the losses at or beyond the VaR.
- **Parametric Gaussian**: with m and s the sample mean and standard deviation (ddof = 1) of the P&L
  (s^2 = V' Sigma V for the sample covariance Sigma of the returns) and z = Phi^-1(1 - alpha) < 0,
  VaR = -(m + z s) and ES = -m + s phi(z) / (1 - alpha). Per unit of portfolio value this is
  VaR = -(mu + z sigma) V and ES = -mu V + sigma V phi(z) / (1 - alpha); in currency it also holds for a
  long-short book whose net value is near zero.
- **Monte Carlo**: ``n_paths`` draws of the return vector from the multivariate normal with the sample
  mean and covariance (``numpy.random.default_rng(seed)``: the same seed gives the same figures), P&L
  of each draw V' r, and the historical estimator over the simulated P&Ls. It converges to the
  parametric figures (same distribution); its use is as a cross-check and as the template for
  non-Gaussian draws.

ES >= VaR for each method (the mean of the tail is at most its least bad point; phi(z)/(1-alpha) >= -z).
At least max(2, 1 / (1 - alpha)) observations are needed (99% needs 100 bars: the 1% tail must hold one
observation of the sample); fewer, a held symbol without history, nulls, NaN or inf raise
``RiskInputError``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
from scipy.stats import norm

from emp_core.risk.policy import RiskInputError, _finite

DEFAULT_PATHS = 100_000


@dataclass(frozen=True)
class Estimate:
    var: float  # loss in currency, positive when the portfolio loses
    es: float


@dataclass(frozen=True)
class VaRResult:
    """The three estimates and what they were computed from."""

    alpha: float
    n_observations: int
    tail_count: int  # k: the historical tail's size
    symbols: tuple[str, ...]
    exposures: tuple[float, ...]  # V_i = units x price, in the order of ``symbols``
    mean_pnl: float
    sd_pnl: float
    historical: Estimate
    parametric: Estimate
    monte_carlo: Estimate
    n_paths: int
    seed: int

    def as_dict(self) -> dict:
        d = asdict(self)
        for method in ("historical", "parametric", "monte_carlo"):
            d |= {f"{method}_{k}": v for k, v in d.pop(method).items()}
        return d


def _tail_count(n: int, alpha: float) -> int:
    return max(math.ceil(round(n * (1 - alpha), 9)), 1)


def _empirical(pnl: np.ndarray, alpha: float) -> Estimate:
    k = _tail_count(pnl.size, alpha)
    tail = np.sort(pnl)[:k]
    return Estimate(var=float(-tail[-1]), es=float(-tail.mean()))


def _history(returns: pl.DataFrame | np.ndarray, columns: Sequence[str] | None, held: list[str]) -> np.ndarray:
    if isinstance(returns, pl.DataFrame):
        missing = [s for s in held if s not in returns.columns]
        if missing:
            raise RiskInputError(f"no return history for held symbol(s): {', '.join(missing)}")
        for s in held:
            if not returns.schema[s].is_numeric():
                raise RiskInputError(f"the return history of {s} is not numeric ({returns.schema[s]})")
            nulls = returns[s].null_count()
            if nulls:
                raise RiskInputError(f"the return history of {s} has {nulls} missing value(s)")
        data = returns.select(held).to_numpy().astype(float) if held else np.empty((returns.height, 0))
    elif isinstance(returns, np.ndarray):
        if columns is None:
            raise RiskInputError("a numpy return history needs columns= naming its symbols")
        array = np.asarray(returns, dtype=float)
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim != 2 or array.shape[1] != len(columns):
            raise RiskInputError(f"the return history has shape {returns.shape}, but {len(columns)} column name(s)")
        missing = [s for s in held if s not in columns]
        if missing:
            raise RiskInputError(f"no return history for held symbol(s): {', '.join(missing)}")
        data = array[:, [list(columns).index(s) for s in held]]
    else:
        raise RiskInputError(f"returns must be a polars DataFrame or a numpy array, got {type(returns).__name__}")
    bad = [s for j, s in enumerate(held) if not np.isfinite(data[:, j]).all()]
    if bad:
        raise RiskInputError(f"the return history of {', '.join(bad)} holds NaN or inf")
    return data


def portfolio_var(positions: Mapping[str, float], prices: Mapping[str, float],
                  returns: pl.DataFrame | np.ndarray, alpha: float = 0.99, *, columns: Sequence[str] | None = None,
                  n_paths: int = DEFAULT_PATHS, seed: int = 0) -> VaRResult:
    """Historical, parametric and Monte Carlo VaR and ES over one bar (module docstring)."""
    alpha = _finite("alpha", alpha)
    if not 0 < alpha < 1:
        raise RiskInputError(f"alpha is a confidence level in (0, 1), e.g. 0.99; got {alpha!r}")
    if isinstance(n_paths, bool) or not isinstance(n_paths, int) or n_paths < 1:
        raise RiskInputError(f"n_paths must be a positive int, got {n_paths!r}")
    held = sorted(s for s, u in positions.items() if _finite(f"position in {s}", u) != 0)
    unpriced = [s for s in held if s not in prices]
    if unpriced:
        raise RiskInputError(f"no price for held symbol(s): {', '.join(unpriced)}")
    exposure = np.array([positions[s] * _finite(f"price of {s}", prices[s], positive=True) for s in held], dtype=float)
    data = _history(returns, columns, held)
    n = data.shape[0]
    needed = max(2, math.ceil(round(1 / (1 - alpha), 9)))
    if n < needed:
        raise RiskInputError(f"too few observations for alpha {alpha:g}: need at least {needed} (the "
                             f"{1 - alpha:.3g} tail must hold an observation of the sample), got {n}")

    pnl = data @ exposure
    m, s = float(pnl.mean()), float(pnl.std(ddof=1))
    z = float(norm.ppf(1 - alpha))
    parametric = Estimate(var=-(m + z * s), es=-m + s * float(norm.pdf(z)) / (1 - alpha))

    rng = np.random.default_rng(seed)
    if held:
        mean = data.mean(axis=0)
        cov = np.atleast_2d(np.cov(data, rowvar=False, ddof=1))
        paths = rng.multivariate_normal(mean, cov, size=n_paths, method="svd") @ exposure
    else:
        paths = np.zeros(n_paths)
    return VaRResult(alpha=alpha, n_observations=n, tail_count=_tail_count(n, alpha), symbols=tuple(held),
                     exposures=tuple(float(v) for v in exposure), mean_pnl=m, sd_pnl=s,
                     historical=_empirical(pnl, alpha), parametric=parametric, monte_carlo=_empirical(paths, alpha),
                     n_paths=n_paths, seed=seed)
