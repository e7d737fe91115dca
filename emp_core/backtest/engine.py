"""The backtest engine: target positions in, fills, cash and an equity curve out, for many strategies at once.

Conventions (the same as backtesting.py, so the tests can cross-check to the cent):

- A strategy states, at the close of bar t, the direction it wants to hold:
  ``targets[t, p]`` in {-1, 0, +1} for strategy p. A change becomes a market
  order that fills at the **open of bar t+1**. A change at the last bar never fills.
- Sizing is in **whole units** from the equity available at the fill:
  ``n = int(equity * f // (open + open * c))`` with ``f = 1 - 2.2e-16`` (all of it) and
  commission rate ``c``; ``fractional=True`` uses ``equity * f / (open * (1 + c))``.
  An order too small for one unit is cancelled (the strategy stays flat).
- **Commission** ``c * |n| * price`` is charged at entry and again at exit.
- A **reversal** closes the open position first (its P&L and exit commission go
  to cash), then sizes the new position from the cash that remains.
- Cash moves only by P&L and commissions (no margin loan is modelled: shorts and
  longs are sized from equity alike); **equity is marked to the close**:
  ``equity[t] = cash + n (close[t] - entry)``.

The arithmetic is done per strategy column with NumPy. Only fills are visited one
by one (a strategy's equity at a fill depends on its previous fills); the bars
between fills are filled in by vectorised forward-fill, so the cost grows with the
number of trades, not with bars x strategies in Python.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

FULL_EQUITY = 1.0 - sys.float_info.epsilon


@dataclass(frozen=True)
class BacktestResult:
    """Arrays over (bars, strategies). ``units`` is the signed position held through each bar's close."""

    equity: np.ndarray
    units: np.ndarray
    cash: np.ndarray
    trades: np.ndarray  # closed round trips per strategy
    wins: np.ndarray  # closed round trips with positive P&L after both commissions
    traded_value: np.ndarray  # sum of |units| * fill price over all fills
    fills: list[tuple[int, int, float, float]]  # (bar, strategy, signed units, price)

    @property
    def final_equity(self) -> np.ndarray:
        return self.equity[-1]


def _ffill_index(mask: np.ndarray) -> np.ndarray:
    """For each (t, p): the latest row <= t where ``mask`` is true (0 where none)."""
    rows = np.where(mask, np.arange(mask.shape[0])[:, None], 0)
    return np.maximum.accumulate(rows, axis=0)


def simulate(
    open_: np.ndarray,
    close: np.ndarray,
    targets: np.ndarray,
    *,
    cash: float = 10_000.0,
    commission: float = 0.0,
    fractional: bool = False,
) -> BacktestResult:
    """Run every column of ``targets`` (bars x strategies, values -1/0/+1, NaN = no view = flat)."""
    open_ = np.asarray(open_, dtype=float)
    close = np.asarray(close, dtype=float)
    targets = np.asarray(targets, dtype=float)
    if targets.ndim == 1:
        targets = targets[:, None]
    n_bars, n_strats = targets.shape
    if open_.shape != (n_bars,) or close.shape != (n_bars,):
        raise ValueError(f"prices have {open_.shape[0]} bars, targets {n_bars}")
    wanted = np.sign(np.nan_to_num(targets, nan=0.0))
    # The direction ordered for the open of bar t is the target at the close of t-1.
    ordered = np.zeros_like(wanted)
    ordered[1:] = wanted[:-1]
    change = np.zeros_like(wanted, dtype=bool)
    change[1:] = ordered[1:] != ordered[:-1]
    bars, strats = np.nonzero(change)

    units = np.zeros(n_strats)
    entry = np.zeros(n_strats)
    cash_now = np.full(n_strats, float(cash))
    trades = np.zeros(n_strats, dtype=np.int64)
    wins = np.zeros(n_strats, dtype=np.int64)
    traded = np.zeros(n_strats)
    entry_commission = np.zeros(n_strats)
    fills: list[tuple[int, int, float, float]] = []
    state_units = np.zeros((n_bars, n_strats))
    state_entry = np.zeros((n_bars, n_strats))
    state_cash = np.full((n_bars, n_strats), float(cash))
    held = np.zeros(n_bars * n_strats, dtype=bool).reshape(n_bars, n_strats)

    for t, p in zip(bars.tolist(), strats.tolist(), strict=True):
        price = open_[t]
        if units[p] != 0.0:
            exit_commission = abs(units[p]) * price * commission
            pnl = units[p] * (price - entry[p])
            cash_now[p] += pnl - exit_commission
            trades[p] += 1
            wins[p] += (pnl - exit_commission - entry_commission[p]) > 0
            traded[p] += abs(units[p]) * price
            fills.append((t, p, -units[p], price))
            units[p] = 0.0
        direction = ordered[t, p]
        if direction != 0.0:
            equity = cash_now[p]
            per_unit = price + (FULL_EQUITY * price * commission) / FULL_EQUITY
            size = equity * FULL_EQUITY / per_unit if fractional else float(int(equity * FULL_EQUITY // per_unit))
            if size > 0:
                units[p] = direction * size
                entry[p] = price
                entry_commission[p] = size * price * commission
                cash_now[p] -= entry_commission[p]
                traded[p] += size * price
                fills.append((t, p, units[p], price))
        state_units[t, p], state_entry[t, p], state_cash[t, p] = units[p], entry[p], cash_now[p]
        held[t, p] = True

    last = _ffill_index(held)
    cols = np.arange(n_strats)[None, :]
    started = held[last, cols]
    units_t = np.where(started, state_units[last, cols], 0.0)
    entry_t = np.where(started, state_entry[last, cols], 0.0)
    cash_t = np.where(started, state_cash[last, cols], float(cash))
    equity = cash_t + units_t * (close[:, None] - entry_t)
    return BacktestResult(equity=equity, units=units_t, cash=cash_t, trades=trades, wins=wins,
                          traded_value=traded, fills=fills)
