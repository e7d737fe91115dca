"""Universes with a planted edge of known strength, to measure the promotion gates' size and power.

Per symbol i (independent across symbols) and bar t, each sensory dimension d has a
persistent score ``x_d,t = tanh(a_d,t)``, ``a_d,t = phi a_d,t-1 + sqrt(1 - phi^2) e_t``
(a unit-variance AR(1); ``phi = 0.97``), with confidence 1. One dimension, the
*planted* one, tells the direction of the next bar:

    r_t+1 = mu x_t + sigma eps_t+1,      open_t+1 = close_t,  close_t+1 = open_t+1 (1 + r_t+1)

so a position taken on the signal at the close of t (filled at the open of t+1, as the
engine does) earns exactly ``r_t+1`` over bar t+1. The other four dimensions are noise.
``mu = 0`` is a pure random walk (no edge anywhere); strength 0 is an edge that just pays
the simple strategy's commissions.

**Strength** is stated as the annualised Sharpe ratio of a simple strategy that exploits
the edge, measured on the universe (``simple_strategy_sharpe``): hold ``sign(x_t)`` of the
planted dimension over bar t+1 on every symbol, pay ``commission`` on every unit traded,
and hold the symbols in equal weight. ``mu`` is set from the target by the small-edge
approximation ``SR_year = sqrt(B n) (mu E|x| - 2 c P(flip)) / sigma`` (B bars a year, n
symbols, P(flip) the chance that sign(x) changes from one bar to the next); the measured
Sharpe of each universe scatters around it by sampling error (about 1 / sqrt(years)).

High and low reach beyond the open and close by a half-normal excursion, so stops and
take-profits have a range to act in.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import lfilter

from emp_core.evolution.fitness import FEATURE_COLUMNS, Universe
from emp_core.sensory.fusion import DIMENSIONS

PHI = 0.97
BARS_PER_YEAR = 252
SIGMA = 0.01  # daily volatility of the noise


def _signals(rng: np.random.Generator, n_bars: int, n_symbols: int) -> np.ndarray:
    """(bars, symbols) tanh of a unit-variance AR(1), started from its stationary law."""
    shocks = rng.standard_normal((n_bars, n_symbols))
    start = PHI * rng.standard_normal((1, n_symbols))  # PHI a_-1 with a_-1 stationary: a_0 is stationary too
    a, _ = lfilter([math.sqrt(1.0 - PHI * PHI)], [1.0, -PHI], shocks, axis=0, zi=start)
    return np.tanh(a)


def _moments_of_sign_strategy() -> tuple[float, float]:
    """E|tanh(a)| and P(sign change per bar) for the stationary AR(1) ``a`` (unit variance, ``PHI``)."""
    z = np.random.default_rng(12345).standard_normal(2_000_000)
    mean_abs = float(np.mean(np.abs(np.tanh(z))))
    # For a Gaussian pair with correlation phi, P(opposite signs) = arccos(phi) / pi (Sheppard 1899).
    return mean_abs, math.acos(PHI) / math.pi


def drift_for(sharpe: float | None, n_symbols: int, commission: float) -> float:
    """``mu`` that gives the simple strategy an annualised Sharpe of about ``sharpe`` after costs (see the
    module doc); ``sharpe=0`` is an edge that just pays its costs, ``None`` no edge at all (``mu = 0``)."""
    if sharpe is None:
        return 0.0
    if sharpe < 0:
        raise ValueError(f"planted Sharpe {sharpe}: must be >= 0 (or None for a pure random walk)")
    mean_abs, flip = _moments_of_sign_strategy()
    per_bar = sharpe * SIGMA / math.sqrt(BARS_PER_YEAR * n_symbols)
    return (per_bar + 2.0 * commission * flip) / mean_abs


def planted_universe(sharpe: float | None, *, n_symbols: int = 10, years: int = 10, seed: int = 0,
                     dimension: str = "what", commission: float = 0.001) -> Universe:
    """A seeded universe whose ``dimension`` score predicts the next bar with strength ``sharpe`` (the
    simple strategy's annualised Sharpe after costs), or a pure random walk when ``sharpe`` is None."""
    if dimension not in DIMENSIONS:
        raise ValueError(f"dimension {dimension!r}: choose one of {', '.join(DIMENSIONS)}")
    rng = np.random.default_rng(seed)
    n_bars = years * BARS_PER_YEAR
    scores = {d: _signals(rng, n_bars, n_symbols) for d in DIMENSIONS}
    mu = drift_for(sharpe, n_symbols, commission)
    x = scores[dimension]
    r = np.zeros((n_bars, n_symbols))
    r[1:] = mu * x[:-1] + SIGMA * rng.standard_normal((n_bars - 1, n_symbols))
    close = 100.0 * np.cumprod(1.0 + r, axis=0)
    open_ = np.vstack([close[:1], close[:-1]])
    excursion = np.abs(rng.normal(0.0, 0.3 * SIGMA, (2, n_bars, n_symbols)))
    high = np.maximum(open_, close) * (1.0 + excursion[0])
    low = np.minimum(open_, close) * (1.0 - excursion[1])
    days = np.busday_offset("2000-01-03", np.arange(n_bars), roll="forward")
    ts = days.astype("datetime64[us]")
    symbols = tuple(f"P{i:02d}" for i in range(n_symbols))
    ohlc, feats = {}, {}
    for i, s in enumerate(symbols):
        ohlc[s] = {"open": open_[:, i], "high": high[:, i], "low": low[:, i], "close": close[:, i]}
        feats[s] = {c: (scores[c.removesuffix("_score")][:, i] if c.endswith("_score") else np.ones(n_bars))
                    for c in FEATURE_COLUMNS}
    return Universe(symbols, dict.fromkeys(symbols, ts), ohlc, feats, bars_per_year=float(BARS_PER_YEAR))


def simple_strategy_sharpe(universe: Universe, dimension: str = "what", commission: float = 0.001,
                           start: np.datetime64 | None = None, end: np.datetime64 | None = None) -> float:
    """Annualised Sharpe of the equal-weight portfolio that holds sign(score at t) over bar t+1 on every
    symbol, net of ``commission`` per unit traded: a direct computation, independent of the engine."""
    rets = []
    for s in universe.symbols:
        ts = universe.ts[s]
        keep = np.ones(ts.size, dtype=bool)
        if start is not None:
            keep &= ts >= start
        if end is not None:
            keep &= ts < end
        o, c = universe.ohlc[s]["open"][keep], universe.ohlc[s]["close"][keep]
        position = np.sign(universe.features[s][f"{dimension}_score"][keep])[:-1]  # decided at t, held over t+1
        traded = np.abs(np.diff(np.concatenate([[0.0], position])))
        rets.append(position * (c[1:] / o[1:] - 1.0) - commission * traded)
    portfolio = np.mean(rets, axis=0)
    return float(math.sqrt(universe.bars_per_year) * portfolio.mean() / portfolio.std(ddof=1))
