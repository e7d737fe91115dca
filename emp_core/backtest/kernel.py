"""The backtest engine's per-bar rules compiled (numba): one loop over bars per strategy column, the columns
in parallel on every core. The rules are ``emp_core.backtest.engine``'s, stated in its docstring; the NumPy
engine stays the reference, and the tests hold the two equal on random targets, prices, costs and stops.

What the kernel does, for each strategy, bar by bar (t = 0 .. n-1):

1. **An order** at bar t (the direction ordered for t's open, the sign of the target at t-1's close, differs
   from the one before): close what is held at the open, slipped against the trade (kind ORDER); then size
   the new position from the cash left (whole units, or fractional) at the open slipped against it, and open
   it unless it is flat or too small for one unit. Its stop-loss and take-profit levels are fractions of that
   entry price.
2. **Its exit**, from the order's bar on, once: a bar whose range reaches a level closes the position, at the
   open when the open is already through a level (not on the entry bar, whose open is the entry fill), else
   at the level, the stop assumed first when both are inside the range; slipped against the trade.
3. **The close**: equity = cash + units x (close - entry). When it is <= 0 the strategy is bankrupt: what it
   holds is closed at that close (kind BANKRUPT, no slippage), its cash and equity are 0 from then on and it
   trades no more.

Under a volume cap (``_column_capped``) an order works over as many bars as its fills need, as the
engine's docstring states.

Fills are written per strategy into a slice of the fills buffer, then gathered and sorted by bar and strategy,
as the engine's are (``_simulate_rows``: a strategy with more fills than its slice runs again to collect them).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from emp_core.backtest.engine import (
    BANKRUPT,
    ORDER,
    STOP_LOSS,
    TAKE_PROFIT,
    BacktestResult,
    check_prices,
    check_terms,
)

FILL_COLUMNS = 5  # bar, strategy, signed units, price, kind


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _put(fills, nf, t, p, qty, price, kind):
    """Write fill ``nf`` if the strategy's slice of the buffer has room (it counts every fill either way)."""
    if nf < fills.shape[0]:
        fills[nf, 0] = t
        fills[nf, 1] = p
        fills[nf, 2] = qty
        fills[nf, 3] = price
        fills[nf, 4] = kind


@njit(cache=True, nogil=True, error_model="numpy")
def _reduce(state, fills, nf, t, p, qty, price, kind, commission):
    """Close ``qty`` units at ``price``: P&L and the exit commission to cash; a trade ends when nothing is left.
    ``state``: units, entry, cash, entry_commission, trade_pnl, traded, trades, wins."""
    side = 1.0 if state[0] > 0 else -1.0
    exit_commission = qty * price * commission
    pnl = side * qty * (price - state[1])
    state[2] += pnl - exit_commission
    state[4] += pnl - exit_commission
    state[5] += qty * price
    state[0] -= side * qty
    _put(fills, nf, t, p, -side * qty, price, kind)
    if state[0] == 0.0:
        state[6] += 1.0
        if state[4] - state[3] > 0:
            state[7] += 1.0
    return nf + 1


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _direction(target):
    """The direction a target asks for: its sign, NaN (no view) flat. (Without branches: 8% of a long
    single-strategy run.)"""
    return np.float64(np.int64(target > 0) - np.int64(target < 0))


@njit(cache=True, nogil=True, error_model="numpy")
def _column(p, q, open_, high, low, close, targets, cash0, commission, slip, fractional, share, stop_loss,  # noqa: PLR0915 (one loop, as the engine's docstring states it)
            take_profit, stops, equity, units_out, cash_out, row, stride, fills):
    """Strategy p's bars (module docstring), on price row q; returns (fills written, trades, wins, traded). Each
    bar's close writes equity, units and cash at [row, t * stride]: every bar (stride 1), or only the last one
    stays (stride 0: the final state, without per-bar curves)."""
    n = targets.shape[1]
    state = np.zeros(8)  # units, entry, cash, entry_commission, trade_pnl, traded, trades, wins
    state[2] = cash0
    nf = 0
    stop_level = np.nan
    take_level = np.nan
    order_bar = -1
    exit_open = False  # the order in force may still exit at a level
    before = 0.0  # the direction ordered for the previous bar's open
    for t in range(n):
        d = _direction(targets[p, t - 1]) if t > 0 else 0.0
        if t > 0 and d != before:
            opening = open_[q, t]
            if state[0] != 0.0:
                side = 1.0 if state[0] > 0 else -1.0
                nf = _reduce(state, fills, nf, t, p, abs(state[0]), opening * (1.0 - side * slip), ORDER, commission)
            price = opening * (1.0 + d * slip)
            per_unit = price + (share * price * commission) / share
            budget = state[2] * share
            size = budget / per_unit if fractional else budget // per_unit
            size = max(size, 0.0)
            state[3] = 0.0
            state[4] = 0.0
            exit_open = False
            if d != 0.0 and size > 0:
                state[1] = price
                state[0] = d * size
                state[3] = size * price * commission
                state[2] -= size * price * commission
                state[5] += size * price
                _put(fills, nf, t, p, d * size, price, ORDER)
                nf += 1
                if stops:
                    long_ = d > 0
                    stop_level = price * (1.0 - stop_loss if long_ else 1.0 + stop_loss)
                    take_level = price * (1.0 + take_profit if long_ else 1.0 - take_profit)
                    order_bar = t
                    exit_open = True
        before = d
        if exit_open and state[0] != 0.0:
            long_ = state[0] > 0
            stop_hit, take_hit = _hits(q, t, long_, stop_level, take_level, high, low)
            if stop_hit or take_hit:
                kind, level = _level_exit(q, t, long_, order_bar, stop_level, take_level, open_, stop_hit, take_hit,
                                          slip)
                nf = _reduce(state, fills, nf, t, p, abs(state[0]), level, kind, commission)
                exit_open = False
        value = state[2] + state[0] * (close[q, t] - state[1])
        if value <= 0.0:
            nf = _bankrupt(state, fills, nf, t, p, q, close, commission, equity, units_out, cash_out, row, stride)
            break
        equity[row, t * stride] = value  # (written here, not in a helper: a helper for the close halves the speed)
        units_out[row, t * stride] = state[0]
        cash_out[row, t * stride] = state[2]
    return nf, state[6], state[7], state[5]


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _hits(q, t, long_, stop_level, take_level, high, low):
    """Whether bar t's range reaches the stop-loss and the take-profit of a long (``long_``) or short position."""
    if long_:
        return low[q, t] <= stop_level, high[q, t] >= take_level
    return high[q, t] >= stop_level, low[q, t] <= take_level


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _level_exit(q, t, long_, order_bar, stop_level, take_level, open_, stop_hit, take_hit, slip):
    """(kind, price) of the exit at bar t, whose range reaches a level (``_hits``). A level the open is already
    through (gapped: not the order bar, whose open is the entry) fills at the open; inside the range the stop
    is assumed first. Slipped against the trade."""
    opening = open_[q, t]
    gapped = t != order_bar
    if long_:
        stop_gap = gapped and opening <= stop_level
        take_gap = gapped and opening >= take_level
    else:
        stop_gap = gapped and opening >= stop_level
        take_gap = gapped and opening <= take_level
    is_stop = stop_gap or ((not take_gap) and stop_hit)
    if stop_gap or take_gap:
        level = opening
    elif is_stop:
        level = stop_level
    else:
        level = take_level
    exit_side = -1.0 if long_ else 1.0
    return (STOP_LOSS if is_stop else TAKE_PROFIT), level * (1.0 + exit_side * slip)


@njit(cache=True, nogil=True, error_model="numpy")
def _bankrupt(state, fills, nf, t, p, q, close, commission, equity, units_out, cash_out, row, stride):
    """Equity <= 0 at the close of bar t: what is held is closed at that close (kind BANKRUPT, no slippage), and
    equity, units and cash are 0 from bar t on. Returns the fills written."""
    if state[0] != 0.0:
        nf = _reduce(state, fills, nf, t, p, abs(state[0]), close[q, t], BANKRUPT, commission)
    for r in range(t, equity.shape[1] if stride else t + 1):
        equity[row, r * stride] = 0.0
        units_out[row, r * stride] = 0.0
        cash_out[row, r * stride] = 0.0
    return nf


@njit(cache=True, nogil=True, error_model="numpy")
def _column_capped(p, q, open_, high, low, close, capacity, whole, targets, cash0, commission, slip, fractional,  # noqa: PLR0912, PLR0915 (one loop, as the engine's docstring states it)
                   share, stop_loss, take_profit, stops, equity, units_out, cash_out, row, stride, fills):
    """Strategy p's bars under a volume cap (the engine's docstring): ``capacity[q, t]`` units fill per bar
    (floored when ``whole``). An order works from its bar's open: each bar's capacity serves first what is left
    to close (all that was held when it arrived), then, once that is complete, what is left to open, sized the
    first time from the cash then, at that bar's slipped open; the entry is the average of the fills. What is
    left waits for the next open until the next order cancels it. Its levels are measured from the order bar's
    slipped open; a level reached while the order holds nothing of its own yet (no fill, or the previous
    position still closing) is passed over; an exit cancels what is still to buy. Returns as ``_column``."""
    n = targets.shape[1]
    state = np.zeros(8)  # as _column's
    state[2] = cash0
    nf = 0
    stop_level = np.nan
    take_level = np.nan
    order_bar = -1
    armed = False  # the order in force may still exit at a level
    working = False  # the order in force still has units to close or to open
    to_close = 0.0
    to_open = np.nan  # NaN: not sized yet
    ordered = 0.0  # the direction of the order in force
    before = 0.0
    for t in range(n):
        d = _direction(targets[p, t - 1]) if t > 0 else 0.0
        if t > 0 and d != before:  # a new order: it cancels what is left of the one before
            ordered = d
            order_bar = t
            to_close = abs(state[0])
            to_open = np.nan
            working = True
            armed = False
            if stops and d != 0.0:
                entry = open_[q, t] * (1.0 + d * slip)
                long_ = d > 0
                stop_level = entry * (1.0 - stop_loss if long_ else 1.0 + stop_loss)
                take_level = entry * (1.0 + take_profit if long_ else 1.0 - take_profit)
                armed = True
        before = d
        if working:
            room = capacity[q, t]
            if whole:
                room = np.floor(room)
            cut = min(to_close, room)
            if cut > 0:
                side = 1.0 if state[0] > 0 else -1.0
                nf = _reduce(state, fills, nf, t, p, cut, open_[q, t] * (1.0 - side * slip), ORDER, commission)
                to_close -= cut
                room -= cut
            if to_close == 0 and ordered != 0.0:
                price = open_[q, t] * (1.0 + ordered * slip)
                if np.isnan(to_open):  # sized once the close is complete, from the cash then
                    per_unit = price + (share * price * commission) / share
                    budget = state[2] * share
                    to_open = max(budget / per_unit if fractional else budget // per_unit, 0.0)
                    state[3] = 0.0
                    state[4] = 0.0
                o = min(to_open, room)
                if o > 0:
                    held = abs(state[0])
                    state[1] = price if held == 0 else (state[1] * held + price * o) / (held + o)
                    state[0] += ordered * o
                    state[3] += o * price * commission
                    state[2] -= o * price * commission
                    state[5] += o * price
                    _put(fills, nf, t, p, ordered * o, price, ORDER)
                    nf += 1
                    to_open -= o
        if armed and state[0] != 0.0 and not (working and to_close > 0):
            stop_hit, take_hit = _hits(q, t, ordered > 0, stop_level, take_level, high, low)
            if stop_hit or take_hit:
                kind, level = _level_exit(q, t, ordered > 0, order_bar, stop_level, take_level, open_, stop_hit,
                                          take_hit, slip)
                nf = _reduce(state, fills, nf, t, p, abs(state[0]), level, kind, commission)
                to_open = 0.0
                armed = False
        if working:
            working = to_close > 0 or to_open > 0  # (NaN: nothing to open)
        value = state[2] + state[0] * (close[q, t] - state[1])
        if value <= 0.0:
            nf = _bankrupt(state, fills, nf, t, p, q, close, commission, equity, units_out, cash_out, row, stride)
            break
        equity[row, t * stride] = value
        units_out[row, t * stride] = state[0]
        cash_out[row, t * stride] = state[2]
    return nf, state[6], state[7], state[5]


@njit(cache=True, parallel=True, error_model="numpy")
def _all(open_, high, low, close, capacity, whole, row_of, targets, cash0, commission, slip, fractional, share,
         stop_loss, take_profit, stops, offsets, equity, units, cash, fills):
    """Every strategy column in parallel: the capped loop when ``capacity`` has rows, else the uncapped one.
    Strategy p's fills go to rows offsets[p]:offsets[p + 1] of ``fills``, as many as fit; ``counts`` says how
    many it made. Equity, units and cash (strategies x bars) at
    every bar, or at the last bar only when they have one column. (The outputs come from NumPy, whose large
    arrays the kernel asks for transparent huge pages: first writes to numba's own cost twice as much.)"""
    m, n = targets.shape
    capped = capacity.shape[0] > 0
    stride = 1 if equity.shape[1] == n else 0
    counts = np.zeros(m, dtype=np.int64)
    trades = np.zeros(m, dtype=np.int64)
    wins = np.zeros(m, dtype=np.int64)
    traded = np.zeros(m)
    for p in prange(m):
        block = fills[offsets[p]:offsets[p + 1]]
        if capped:
            nf, tr, wn, tv = _column_capped(np.int64(p), row_of[p], open_, high, low, close, capacity, whole, targets,
                                            cash0, commission, slip, fractional, share[p], stop_loss[p],
                                            take_profit[p], stops, equity, units, cash, np.int64(p), stride, block)
        else:
            nf, tr, wn, tv = _column(np.int64(p), row_of[p], open_, high, low, close, targets, cash0, commission,
                                     slip, fractional, share[p], stop_loss[p], take_profit[p], stops, equity, units,
                                     cash, np.int64(p), stride, block)
        counts[p] = nf
        trades[p] = np.int64(tr)
        wins[p] = np.int64(wn)
        traded[p] = tv
    return counts, trades, wins, traded


def _rows(values, n_bars: int, n_strats: int, name: str, *, zero: bool = False) -> np.ndarray:
    """Prices (or volumes: ``zero``) as rows (one shared series, or one per strategy) x bars, contiguous: each
    strategy reads its own row from start to end."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.shape[0] != n_bars or arr.shape[1] not in (1, n_strats):
        raise ValueError(f"{name} prices have shape {arr.shape}; targets have {n_bars} bars x {n_strats} strategies")
    check_prices(arr, name if zero else f"{name} prices", zero=zero)
    return _owned(arr.T)


def _sizing_and_levels(fraction, stop_loss, take_profit, n: int):
    """Per strategy: the share of equity an entry may use, the stop-loss and take-profit fractions (NaN: none),
    as the engine validates them, and whether any strategy has a level."""
    from emp_core.backtest.engine import _entry_share, _per_strategy

    sl = _per_strategy(stop_loss, n, "stop_loss")
    tp = _per_strategy(take_profit, n, "take_profit")
    return _entry_share(fraction, n), sl, tp, bool(np.isfinite(sl).any() or np.isfinite(tp).any())


def _owned(arr, dtype=float) -> np.ndarray:
    """A C-contiguous, writable array of ``dtype``: the one layout the cached kernel was compiled for (a
    read-only or strided array, say a Polars column's view, would compile a second version at first call)."""
    out = np.ascontiguousarray(arr, dtype=dtype)
    return out if out.flags.writeable else out.copy()


def simulate(open_, close, targets, *, cash: float = 10_000.0, commission: float = 0.0, fractional: bool = False,
             slippage_bps: float = 0.0, high=None, low=None, stop_loss=None, take_profit=None,
             fraction=None, volume=None, volume_share: float = 0.1, curves: bool = True) -> BacktestResult:
    """``emp_core.backtest.engine.simulate``'s rules, compiled (module docstring): the same arguments and the same
    result (its bars x strategies arrays are views of strategy-major arrays). ``curves=False``: equity, units
    and cash hold the last bar only (1 x strategies), the same final values and fills without the per-bar
    curves, for a search that ranks final results (writing three curves per strategy costs more than the
    loop that computes them)."""
    check_terms(cash, commission, slippage_bps, volume_share)
    targets = np.asarray(targets, dtype=float)
    if targets.ndim == 1:
        targets = targets[:, None]
    n_bars, n_strats = targets.shape
    open_, close = _rows(open_, n_bars, n_strats, "open"), _rows(close, n_bars, n_strats, "close")
    share, sl, tp, stops = _sizing_and_levels(fraction, stop_loss, take_profit, n_strats)
    if stops and (high is None or low is None):
        raise ValueError("stop-loss and take-profit need the bars' high and low")
    high = _rows(high, n_bars, n_strats, "high") if stops else open_
    low = _rows(low, n_bars, n_strats, "low") if stops else open_
    capacity = None
    if volume is not None:
        capacity = _rows(volume, n_bars, n_strats, "volume", zero=True) * volume_share
    series = [open_, high, low, close] + ([] if capacity is None else [capacity])
    if len({a.shape[0] for a in series}) > 1:  # some series shared, some per strategy: all per strategy
        series = [_owned(np.broadcast_to(a, (n_strats, n_bars))) for a in series]
    row_of = np.zeros(n_strats, dtype=np.int64) if series[0].shape[0] == 1 else np.arange(n_strats, dtype=np.int64)
    return _simulate_rows(*series[:4], row_of, _owned(targets.T), cash, commission, slippage_bps, fractional, share,
                          sl, tp, stops, None if capacity is None else series[4], curves)


def simulate_rows(open_, high, low, close, row_of, targets, *, cash: float = 10_000.0, commission: float = 0.0,
                  fractional: bool = False, slippage_bps: float = 0.0, stop_loss=None, take_profit=None,
                  fraction=None, volume=None, volume_share: float = 0.1, curves: bool = True) -> BacktestResult:
    """:func:`simulate` on price rows shared by many strategies: ``open_``, ``high``, ``low``, ``close`` are
    (rows x bars), ``row_of[p]`` the row strategy p trades, ``targets`` (bars x strategies). A population over
    many instruments passes each instrument's prices once instead of a copy per strategy. ``volume``, if
    given, is (rows x bars) too."""
    check_terms(cash, commission, slippage_bps, volume_share)
    targets = np.asarray(targets, dtype=float)
    if targets.ndim != 2:
        raise ValueError(f"targets must be bars x strategies, not of shape {targets.shape}")
    n_strats = targets.shape[1]
    share, sl, tp, stops = _sizing_and_levels(fraction, stop_loss, take_profit, n_strats)
    rows = [_owned(a) for a in (open_, high, low, close)]
    row_of = _owned(row_of, np.int64)
    if any(a.ndim != 2 or a.shape != rows[0].shape for a in rows) or rows[0].shape[1] != targets.shape[0]:
        raise ValueError("price rows must share one shape (rows x bars), with as many bars as the targets")
    for a, name in zip(rows, ("open", "high", "low", "close"), strict=True):
        check_prices(a, f"{name} prices", bars_first=False)
    capacity = None
    if volume is not None:
        capacity = _owned(volume)
        if capacity.shape != rows[0].shape:
            raise ValueError("volume rows must have the prices' shape (rows x bars)")
        check_prices(capacity, "volume", bars_first=False, zero=True)
        capacity = capacity * volume_share
    if row_of.shape != (n_strats,) or (n_strats and (row_of.min() < 0 or row_of.max() >= rows[0].shape[0])):
        raise ValueError("row_of must give each strategy a row of the prices")
    return _simulate_rows(*rows, row_of, _owned(targets.T), cash, commission, slippage_bps,
                          fractional, share, sl, tp, stops, capacity, curves)


FILL_ROOM = 32  # each strategy's fills are first written into room for three per 32 bars (and four more)


def _simulate_rows(open_, high, low, close, row_of, tg, cash, commission, slippage_bps, fractional, share, sl, tp,
                   stops, capacity=None, curves=True) -> BacktestResult:
    """Every strategy in one parallel pass, each writing its fills into room for three per ``FILL_ROOM`` bars
    (an order makes at most a close, an open and an exit); a strategy that made more (it counts them all,
    writing only what fits) runs again alone, with room for each of its fills, to collect them. No pass counts
    orders first: on one long strategy that pass read the targets once more, 15% of the run."""
    n_strats, n = tg.shape
    cap = np.zeros((0, 0)) if capacity is None else capacity
    args = (float(cash), float(commission), slippage_bps / 1e4, bool(fractional))
    room = 3 * -(-n // FILL_ROOM) + 4
    offsets = np.arange(n_strats + 1, dtype=np.int64) * room
    width = n if curves else min(1, n)  # (no bar: no final state either)
    equity, units, cash_t = (np.empty((n_strats, width)) for _ in range(3))
    fills = np.empty((offsets[-1], FILL_COLUMNS))
    counts, trades, wins, traded = _all(open_, high, low, close, cap, not fractional, row_of, tg, *args, share, sl,
                                        tp, stops, offsets, equity, units, cash_t, fills)
    over = np.nonzero(counts > room)[0]
    table = _gather(fills, offsets, np.where(counts > room, 0, counts))
    if over.size:
        again = np.zeros(over.size + 1, dtype=np.int64)
        again[1:] = np.cumsum(counts[over])
        more = np.empty((again[-1], FILL_COLUMNS))
        last = [np.empty((over.size, min(1, n))) for _ in range(3)]
        recount = _all(open_, high, low, close, cap, not fractional, row_of[over], tg[over], *args, share[over],
                       sl[over], tp[over], stops, again, *last, more)[0]
        if not np.array_equal(recount, counts[over]):  # deterministic: anything else leaves rows unwritten
            raise RuntimeError("the kernel's second run of a strategy made other fills than its first")
        more[:, 1] = over[more[:, 1].astype(np.int64)]  # their own numbers in this call
        table = np.concatenate([table, more])
    table = table[np.lexsort((table[:, 1], table[:, 0]))]  # by bar, then strategy; stable within one
    return BacktestResult(equity=equity.T, units=units.T, cash=cash_t.T, trades=trades, wins=wins,
                          traded_value=traded, fills=table)


def _gather(fills: np.ndarray, offsets: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The first ``counts[p]`` rows of each strategy's block ``offsets[p]:offsets[p + 1]``, in strategy order."""
    before = np.cumsum(counts) - counts
    return fills[np.arange(counts.sum()) + np.repeat(offsets[:-1] - before, counts)]


def warm() -> float:
    """Compile the kernel into numba's on-disk cache (``__pycache__`` beside this module), so a fresh process's
    first call loads it instead of compiling; the install step (``make demo``, ``make test``) runs it. Returns
    the seconds it took."""
    import time

    t0 = time.perf_counter()
    bars = np.linspace(100.0, 101.0, 8)
    for kw in ({}, {"high": bars * 1.01, "low": bars * 0.99, "stop_loss": 0.05}):
        for curves in (True, False):
            simulate(bars, bars, np.tile([[0.0], [1.0], [1.0], [-1.0], [0.0], [1.0], [1.0], [0.0]], 2), curves=curves,
                     **kw)
    from emp_core.evolution.genome import CATALOGUE, DIMENSIONS

    features = {f"{d}_{k}": np.sin(np.arange(8.0)) for d in DIMENSIONS for k in ("score", "confidence")}
    genomes = list(CATALOGUE.values())
    genome_targets(features, genomes)
    rows = np.tile(bars, (2, 1))
    signal, confidence = (np.stack([x, x]) for x in fusion_terms(features))
    portfolio_fitness(rows, rows * 1.01, rows * 0.99, rows, signal, confidence, genomes,
                      np.tile(np.arange(8, dtype=np.int64), (2, 1)), np.array([8, 8], dtype=np.int64), 8, cash=1.0,
                      commission=0.001, fractional=True, slippage_bps=0.0)
    sma_cross(bars, [(2, 3)])
    return time.perf_counter() - t0


# -------------------------------------------------------------------------------------- the genomes' targets


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _genome_row(signal, confidence, w, total, entry, exit_, min_conf, long_only, holding, n, out):
    """One genome's targets on one instrument's first n bars, into ``out[:n]``: per bar, the fused signal and
    confidence summed over the dimensions in their order (``signal[i, t]`` = score x confidence and
    ``confidence[i, t]`` = confidence where the score is finite, else 0: NumPy's terms, so the same floats),
    then the entry and exit rules, the holding period and the held direction (``emp_core.evolution.genome``)."""
    n_dims = signal.shape[0]
    last_strong = -(10 ** 9)
    held = np.nan
    for t in range(n):
        num = 0.0
        den = 0.0
        for i in range(n_dims):
            num += signal[i, t] * w[i]
            den += confidence[i, t] * abs(w[i])
        fused = num / den if den > 0 else np.nan
        sure = den / total >= min_conf
        strong_long = sure and fused >= entry
        strong_short = sure and fused <= -entry
        if strong_long or strong_short:
            last_strong = t
        if strong_long:
            held = 1.0
        elif strong_short:
            held = 0.0 if long_only else -1.0
        elif abs(fused) < exit_ and t - last_strong >= holding:
            held = 0.0
        out[t] = 0.0 if np.isnan(held) else held


@njit(cache=True, parallel=True, error_model="numpy")
def _targets(signal, confidence, weights, entry, exit_, min_conf, long_only, holding, out):
    """``_genome_row`` for every genome (in parallel) on one instrument: ``out`` genomes x bars."""
    for g in prange(weights.shape[0]):
        w = weights[g]
        total = 0.0
        for i in range(w.shape[0]):
            total += abs(w[i])
        _genome_row(signal, confidence, w, total, entry[g], exit_[g], min_conf[g], long_only[g], holding[g],
                    signal.shape[1], out[g])


def genome_rules(genomes) -> tuple[np.ndarray, ...]:
    """The genomes' rule parameters as the compiled targets read them: weights (genomes x dimensions), entry,
    exit, minimum confidence, long-only, holding period. Build once for many symbols."""
    def column(name: str, dtype=float) -> np.ndarray:
        return np.array([getattr(g, name) for g in genomes], dtype=dtype)

    from emp_core.evolution.genome import DIMENSIONS

    weights = np.array([g.weights for g in genomes], dtype=float).reshape(len(genomes), len(DIMENSIONS))
    return (weights, column("entry"), column("exit"),
            column("min_confidence"), column("long_only", np.bool_), column("holding_period", np.int64))


def fusion_terms(features: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(signal, confidence), dimensions x bars: score x confidence and confidence where the score is finite,
    else 0, the terms the fused signal sums (``emp_core.evolution.genome.fused_signal``)."""
    from emp_core.evolution.genome import DIMENSIONS

    scores = np.array([features[f"{d}_score"] for d in DIMENSIONS], dtype=float)
    confs = np.array([features[f"{d}_confidence"] for d in DIMENSIONS], dtype=float)
    present = np.isfinite(scores)
    return np.where(present, scores * confs, 0.0), np.where(present, confs, 0.0)


def genome_targets(features: dict[str, np.ndarray], genomes, rules: tuple[np.ndarray, ...] | None = None
                   ) -> np.ndarray:
    """Target directions (genomes x bars, strategy-major for the kernel) of each genome's rules: the same values
    as ``emp_core.evolution.genome.targets`` (bars x genomes), compiled. ``rules``: :func:`genome_rules`."""
    signal, confidence = fusion_terms(features)
    rules = rules if rules is not None else genome_rules(genomes)
    if rules[0].ndim != 2 or rules[0].shape[1] != signal.shape[0] or any(r.shape != rules[0].shape[:1]
                                                                         for r in rules[1:]):
        raise ValueError("rules must hold weights (genomes x dimensions) and one value per genome for the rest")
    out = np.empty((rules[0].shape[0], signal.shape[1]))
    _targets(signal, confidence, *rules, out)
    return out


# ------------------------------------------------------------------------------- the portfolio's fitness


@njit(cache=True, parallel=True, error_model="numpy")
def _fitness(open_, high, low, close, signal, confidence, weights, entry, exit_, min_conf, long_only, holding,
             positions, lengths, n_ts, cash0, commission, slip, fractional, share, stop_loss, take_profit, stops):
    """Per genome (in parallel), each symbol in symbol order: its targets (``_genome_row``; from the symbol's
    last bar on, the target before it, which never fills), its bars (``_column``) on one scratch row, and
    their reduction, as the column ends, to what the equal-weight portfolio needs: its bar returns
    E_t / E_(t-1) - 1 (0 once bankrupt) added at their timestamps' positions, its fill turnover (the sum over
    fills of |units| x price / the equity at the close before) and its trades. No targets matrix and no curve
    is kept. Sums run in the order of ``emp_core.evolution.fitness``'s NumPy path (symbols in order, fills
    in order): the same floats."""
    n_genomes = weights.shape[0]
    n = open_.shape[1]
    total = np.zeros((n_genomes, n_ts))
    turnover = np.zeros(n_genomes)
    trades = np.zeros(n_genomes, dtype=np.int64)
    for g in prange(n_genomes):
        w = weights[g]
        weight = 0.0
        for i in range(w.shape[0]):
            weight += abs(w[i])
        row = np.empty((1, n))
        equity = np.empty((1, n))
        units = np.empty((1, n))
        cash = np.empty((1, n))
        fills = np.empty((64, FILL_COLUMNS))
        for j in range(lengths.shape[0]):
            real = lengths[j]
            _genome_row(signal[j], confidence[j], w, weight, entry[g], exit_[g], min_conf[g], long_only[g],
                        holding[g], real, row[0])
            last = row[0, real - 2] if real >= 2 else 0.0
            for t in range(max(real - 1, 0), n):
                row[0, t] = last
            orders = 0
            before = 0.0
            for t in range(1, n):
                d = _direction(row[0, t - 1])
                orders += d != before
                before = d
            if 3 * orders + 1 > fills.shape[0]:
                fills = np.empty((3 * orders + 1, FILL_COLUMNS))
            nf, tr, _, _ = _column(np.int64(0), np.int64(j), open_, high, low, close, row, cash0, commission, slip,
                                   fractional, share[g], stop_loss[g], take_profit[g], stops, equity, units, cash,
                                   np.int64(0), np.int64(1), fills)
            for t in range(1, real):
                prior = equity[0, t - 1]
                total[g, positions[j, t]] += equity[0, t] / prior - 1.0 if prior > 0 else 0.0
            column_turnover = 0.0
            for f in range(nf):
                column_turnover += abs(fills[f, 2]) * fills[f, 3] / equity[0, np.int64(fills[f, 0]) - 1]
            turnover[g] += column_turnover
            trades[g] += np.int64(tr)
    return total, turnover, trades


def portfolio_fitness(open_, high, low, close, signal, confidence, genomes, positions: np.ndarray,
                      lengths: np.ndarray, n_ts: int, *, cash: float, commission: float, fractional: bool,
                      slippage_bps: float, rules: tuple[np.ndarray, ...] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A population on a chunk of symbols, reduced in the kernel to the equal-weight portfolio's sums
    (``_fitness``): (summed bar returns, timestamps x genomes; fill turnover per genome; trades per genome).

    ``open_`` .. ``close``: one row per symbol (symbols x bars, padded to one length with the last price);
    ``signal``, ``confidence``: :func:`fusion_terms` per symbol (symbols x dimensions x bars); ``positions``:
    each symbol's bars' timestamp positions (symbols x bars), ``lengths`` its real bars. Each genome's stop,
    take-profit and position size apply on every symbol."""
    rows = [_owned(a) for a in (open_, high, low, close)]
    signal, confidence = _owned(signal), _owned(confidence)
    k_syms, n = rows[0].shape
    lengths = _owned(lengths, np.int64)
    positions = _owned(positions, np.int64)
    rules = rules or genome_rules(genomes)
    g = len(genomes)
    if (any(a.shape != (k_syms, n) for a in rows) or signal.ndim != 3 or signal.shape[::2] != (k_syms, n)
            or confidence.shape != signal.shape or lengths.shape != (k_syms,) or positions.shape != (k_syms, n)):
        raise ValueError("prices and positions (symbols x bars), fusion terms (symbols x dimensions x bars) and "
                         "lengths (symbols) must agree")
    if k_syms and (lengths.min() < 0 or lengths.max() > n):
        raise ValueError(f"lengths must be in [0, {n}] bars")
    real = np.arange(n)[None, :] < lengths[:, None]
    if k_syms and n and (positions[real].min(initial=0) < 0 or positions[real].max(initial=0) >= n_ts):
        raise ValueError(f"positions must lie in [0, {n_ts}) timestamps")
    if rules[0].shape != (g, signal.shape[1]) or any(r.shape != (g,) for r in rules[1:]):
        raise ValueError(f"rules must hold {g} genomes x {signal.shape[1]} dimensions, one per genome given")
    for a, name in zip(rows, ("open", "high", "low", "close"), strict=True):
        check_prices(a, f"{name} prices", bars_first=False)
    share, sl, tp, stops = _sizing_and_levels([x.position_size for x in genomes],
                                              [x.stop_loss or np.nan for x in genomes],
                                              [x.take_profit or np.nan for x in genomes], g)
    check_terms(cash, commission, slippage_bps, 1.0)
    total, turnover, trades = _fitness(*rows, signal, confidence, *rules, positions, lengths, int(n_ts), float(cash),
                                       float(commission), slippage_bps / 1e4, bool(fractional), share, sl, tp, stops)
    return total.T, turnover, trades


# ------------------------------------------------------------------------------------ SMA-crossover targets


@njit(cache=True, parallel=True, error_model="numpy")
def _sma_cross(close, windows, fast, slow, long_only, out):
    """``emp_core.backtest.strategies.sma_cross`` compiled: the moving averages of ``windows`` from one running
    sum (NumPy's cumsum, in its order: the same floats), then per pair (in parallel) the strict crosses and the
    held target. ``fast``, ``slow``: each pair's rows in the table; ``out``: pairs x bars."""
    n = close.shape[0]
    csum = np.zeros(n + 1)
    for i in range(n):
        csum[i + 1] = csum[i] + close[i]
    table = np.full((windows.shape[0], n), np.nan)
    for w in prange(windows.shape[0]):
        k = windows[w]
        for i in range(k - 1, n):
            table[w, i] = (csum[i + 1] - csum[i + 1 - k]) / k
    short = 0.0 if long_only else -1.0
    for j in prange(fast.shape[0]):
        f, s = table[fast[j]], table[slow[j]]
        held = 0.0
        out[j, 0] = 0.0
        for t in range(1, n):
            if f[t - 1] < s[t - 1] and f[t] > s[t]:
                held = 1.0
            elif f[t - 1] > s[t - 1] and f[t] < s[t]:
                held = short
            out[j, t] = held


def sma_cross(close, pairs: list[tuple[int, int]], long_only: bool = False) -> np.ndarray:
    """Targets (bars x pairs; a view of a pairs x bars array, the layout the kernel reads) of SMA-crossover
    strategies, as ``emp_core.backtest.strategies.sma_cross`` states them."""
    close = _owned(close)
    if close.ndim != 1:
        raise ValueError(f"close must be one series (bars,), not of shape {close.shape}")
    out = np.zeros((len(pairs), close.shape[0]))
    if pairs and close.shape[0]:
        windows = sorted({n for pair in pairs for n in pair})
        if windows[0] < 1:
            raise ValueError(f"SMA windows must be at least 1 bar: {windows[0]}")
        row = {n: i for i, n in enumerate(windows)}
        _sma_cross(close, np.array(windows, dtype=np.int64), np.array([row[a] for a, _ in pairs], dtype=np.int64),
                   np.array([row[b] for _, b in pairs], dtype=np.int64), bool(long_only), out)
    return out.T
