"""Performance metrics of equity curves (bars x strategies), each with its formula.

- total_return = E_T / E_0 - 1; CAGR = (E_T / E_0)^(1 / years) - 1, years from the bar timestamps
  (365.25-day years).
- bar returns r_t = E_t / E_{t-1} - 1 while E_{t-1} > 0, and 0 after a bankruptcy (equity stays 0, the
  strategy trades no more); Sharpe = sqrt(B) mean(r) / std(r) and Sortino =
  sqrt(B) mean(r) / sqrt(mean(min(r, 0)^2)) with B bars per year (risk-free rate 0;
  Sharpe 1966, Sortino and Price 1994).
- max_drawdown = min_t (E_t / max_{s<=t} E_s - 1), a negative fraction.
- turnover = traded value over the equity before each fill (the previous close), summed, per year.
- trades = closed round trips; win_rate = winning closed trades / trades;
  exposure = share of bars with a position.
"""

from __future__ import annotations

import numpy as np

from emp_core.backtest.engine import BacktestResult


def metrics(result: BacktestResult, years: float, bars_per_year: float) -> list[dict[str, float]]:
    """One dict per strategy column."""
    eq = result.equity
    rets = bar_returns(eq)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean, std = rets.mean(axis=0), rets.std(axis=0, ddof=1)
        downside = np.sqrt(np.mean(np.minimum(rets, 0.0) ** 2, axis=0))
        sharpe = np.where(std > 0, np.sqrt(bars_per_year) * mean / std, np.nan)
        sortino = np.where(downside > 0, np.sqrt(bars_per_year) * mean / downside, np.nan)
        total = eq[-1] / eq[0] - 1.0
        cagr = np.where(eq[-1] > 0, (eq[-1] / eq[0]) ** (1.0 / years) - 1.0, -1.0) if years > 0 else total
        drawdown = (eq / np.maximum.accumulate(eq, axis=0) - 1.0).min(axis=0)
        turnover = fill_turnover(result) / years if years > 0 else np.full(eq.shape[1], np.nan)
        win_rate = np.where(result.trades > 0, result.wins / np.maximum(result.trades, 1), np.nan)
    exposure = (result.units != 0).mean(axis=0)
    out = []
    for p in range(eq.shape[1]):
        out.append({
            "final_equity": float(eq[-1, p]), "total_return": float(total[p]), "cagr": float(cagr[p]),
            "sharpe": _num(sharpe[p]), "sortino": _num(sortino[p]), "max_drawdown": float(drawdown[p]),
            "turnover": _num(turnover[p]), "trades": int(result.trades[p]), "win_rate": _num(win_rate[p]),
            "exposure": float(exposure[p]),
        })
    return out


def bar_returns(equity: np.ndarray) -> np.ndarray:
    """Bar returns (bars - 1 x strategies): E_t / E_{t-1} - 1, and 0 once a strategy is bankrupt (no equity)."""
    alive = equity[:-1] > 0
    return np.where(alive, equity[1:] / np.where(alive, equity[:-1], 1.0) - 1.0, 0.0)


def fill_turnover(result: BacktestResult) -> np.ndarray:
    """Per strategy: the sum over fills of |units| x price / the equity at the close before the fill (fills
    are at bar 1 or later, at or before a bust bar: that equity is > 0)."""
    bar, column = result.fills[:, 0].astype(np.int64), result.fills[:, 1].astype(np.int64)
    share = np.abs(result.fills[:, 2]) * result.fills[:, 3] / result.equity[bar - 1, column]
    return np.bincount(column, weights=share, minlength=result.equity.shape[1])


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None
