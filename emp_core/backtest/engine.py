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

Vectorised over strategies and over bars: orders are processed in rounds, round k
taking every strategy's k-th order in one set of NumPy operations (a strategy's
sizing depends on its earlier fills, so rounds run in order; their number is the
busiest strategy's order count, not the number of bars). The bars between fills
are filled in by a vectorised forward-fill.
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
    fills: np.ndarray  # one row per fill: bar, strategy, signed units, price (sorted by bar, strategy)

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

    # Fills, vectorised over strategies: round k processes every strategy's k-th order at once.
    # (A strategy's sizing depends on its earlier fills, so rounds run in order; there are as many
    # rounds as the busiest strategy has orders, not bars.)
    by_strategy = np.lexsort((bars, strats))
    counts = np.bincount(strats, minlength=n_strats)
    rank = np.arange(bars.size) - np.repeat(np.cumsum(counts) - counts, counts)  # k of each order
    at = np.full((counts.max(initial=0), n_strats), -1, dtype=np.int64)
    at[rank, strats[by_strategy]] = bars[by_strategy]
    rounds = at.shape[0]
    units = np.zeros(n_strats)
    entry = np.zeros(n_strats)
    cash_now = np.full(n_strats, float(cash))
    entry_commission = np.zeros(n_strats)
    trades = np.zeros(n_strats, dtype=np.int64)
    wins = np.zeros(n_strats, dtype=np.int64)
    traded = np.zeros(n_strats)
    state_units = np.zeros((n_bars, n_strats))
    state_entry = np.zeros((n_bars, n_strats))
    state_cash = np.full((n_bars, n_strats), float(cash))
    fills: list[np.ndarray] = []
    for k in range(rounds):
        p = np.nonzero(at[k] >= 0)[0]
        t = at[k, p]
        price = open_[t]
        held_units = units[p]
        closing = held_units != 0.0
        exit_commission = np.abs(held_units) * price * commission
        pnl = held_units * (price - entry[p])
        cash_now[p] = np.where(closing, cash_now[p] + (pnl - exit_commission), cash_now[p])
        trades[p] += closing
        wins[p] += closing & ((pnl - exit_commission - entry_commission[p]) > 0)
        traded[p] += np.abs(held_units) * price
        fills.append(np.column_stack([t[closing], p[closing], -held_units[closing], price[closing]]))
        direction = ordered[t, p]
        per_unit = price + (FULL_EQUITY * price * commission) / FULL_EQUITY
        budget = cash_now[p] * FULL_EQUITY
        size = budget / per_unit if fractional else np.floor_divide(budget, per_unit)
        opening = (direction != 0.0) & (size > 0)
        new_units = np.where(opening, direction * size, 0.0)
        units[p] = new_units
        entry[p] = np.where(opening, price, entry[p])
        entry_commission[p] = np.where(opening, size * price * commission, entry_commission[p])
        cash_now[p] = np.where(opening, cash_now[p] - size * price * commission, cash_now[p])
        traded[p] += np.where(opening, size * price, 0.0)
        fills.append(np.column_stack([t[opening], p[opening], new_units[opening], price[opening]]))
        state_units[t, p], state_entry[t, p], state_cash[t, p] = units[p], entry[p], cash_now[p]
    table = np.concatenate(fills) if fills else np.empty((0, 4))
    table = table[np.lexsort((table[:, 1], table[:, 0]))]

    held = change
    last = _ffill_index(held)
    cols = np.arange(n_strats)[None, :]
    started = held[last, cols]
    units_t = np.where(started, state_units[last, cols], 0.0)
    entry_t = np.where(started, state_entry[last, cols], 0.0)
    cash_t = np.where(started, state_cash[last, cols], float(cash))
    equity = cash_t + units_t * (close[:, None] - entry_t)
    return BacktestResult(equity=equity, units=units_t, cash=cash_t, trades=trades, wins=wins, traded_value=traded,
                          fills=table)
