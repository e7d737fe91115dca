"""The backtest engine: target positions in, fills, cash and an equity curve out, for many strategies at once.

Conventions (the same as backtesting.py, so the tests can cross-check to the cent):

- A strategy states, at the close of bar t, the direction it wants to hold:
  ``targets[t, p]`` in {-1, 0, +1} for strategy p. A change becomes a market
  order that fills at the **open of bar t+1**. A change at the last bar never fills.
- Sizing is in **whole units** from the equity available at the fill:
  ``n = int(equity * f // (price + f * price * c / f))`` with ``f = 1 - 2.2e-16`` (all of it;
  ``fraction`` sets a smaller share per strategy) and commission rate ``c``;
  ``fractional=True`` uses ``equity * f / (price * (1 + c))``.
  An order too small for one unit is cancelled (the strategy stays flat).
- **Commission** ``c * |n| * price`` is charged at entry and again at exit.
- A **reversal** closes the open position first (its P&L and exit commission go
  to cash), then sizes the new position from the cash that remains.
- Cash moves only by P&L and commissions (no margin loan is modelled: shorts and
  longs are sized from equity alike); **equity is marked to the close**:
  ``equity[t] = cash + n (close[t] - entry)``.
- **Bankruptcy** (backtesting.py's ``_Broker.next``): when a strategy's equity at the close
  of bar b is <= 0, what it holds is closed at that close (a fill of kind ``BANKRUPT``: the
  exit of the open trade, counted in ``trades``, with its commission; no slippage and no
  volume cap), its cash is set to 0, its equity is 0 from bar b on, and it trades no more:
  its later orders and stop exits never fill.

Additions (off by default, so the cross-check above holds):

- **Slippage** of ``s`` basis points moves every fill against the trade: buys at
  ``price * (1 + s/1e4)``, sells at ``price * (1 - s/1e4)``.
- **Stop-loss / take-profit**, fractions of the entry fill price (per strategy):
  a long exits when a bar's low reaches ``entry * (1 - sl)`` or its high reaches
  ``entry * (1 + tp)`` (mirrored for shorts), evaluated inside each bar's range
  from the entry bar on. The exit fills at the level, or, when the bar's open has
  already gapped through a level, at the open: the open is the bar's first trade,
  so that exit comes before anything inside the bar. When both levels lie inside
  one bar's range (the open between them), the stop-loss is assumed first (the
  conservative reading of an OHLC bar). On the entry bar the open is the entry fill
  itself, inside both levels. After an exit the strategy stays flat until its target
  changes again. One departure from backtesting.py, which processes the stop order
  first: when the open gaps through the take-profit and the same bar's range also
  reaches the stop, backtesting.py books the stop at its level, we book the
  take-profit at the open.
- **Volume cap**: with ``volume`` given, a bar fills at most ``volume_share`` of its
  volume (whole units unless fractional). What is left waits for the next bar's
  open, until the strategy's next order cancels it. Each bar's capacity serves
  first what is left to close, then what is left to open; a new position is sized
  once its close is complete, from the cash then, and its entry price is the
  average of its fills. Stops are measured from the first possible fill (the
  order bar's open) and cancel what is still to buy. A level reached while the
  order holds nothing of its own yet (no volume, or the previous position still
  closing) is passed over: the next bar that reaches a level is its exit.

Vectorised over strategies and over bars: orders are processed in rounds, round k
taking every strategy's k-th order in one set of NumPy operations (a strategy's
sizing depends on its earlier fills, so rounds run in order; their number is the
busiest strategy's order count, not the number of bars). Stop hits are found for
all orders at once before the rounds (they depend on prices only), and the bars
between fills are filled in by a vectorised forward-fill. Bankruptcy is found
afterwards: the run is causal, so up to a strategy's first close with equity <= 0
its run is already right; only the (rare) bankrupt strategies run again, with their
later orders removed and the exit of the position they hold at that close replaced
by the liquidation.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields, replace

import numpy as np

FULL_EQUITY = 1.0 - sys.float_info.epsilon
ORDER, STOP_LOSS, TAKE_PROFIT, BANKRUPT = 0, 1, 2, 3  # kinds of fill


@dataclass(frozen=True)
class BacktestResult:
    """Arrays over (bars, strategies). ``units`` is the signed position held through each bar's close."""

    equity: np.ndarray
    units: np.ndarray
    cash: np.ndarray
    trades: np.ndarray  # closed round trips per strategy
    wins: np.ndarray  # closed round trips with positive P&L after both commissions
    traded_value: np.ndarray  # sum of |units| * fill price over all fills
    fills: np.ndarray  # one row per fill: bar, strategy, signed units, price, kind (sorted by bar, strategy)
    #                    kind: ORDER, STOP_LOSS, TAKE_PROFIT or BANKRUPT

    @property
    def final_equity(self) -> np.ndarray:
        return self.equity[-1]


def _ffill_index(mask: np.ndarray) -> np.ndarray:
    """For each (t, p): the latest row <= t where ``mask`` is true (0 where none)."""
    rows = np.where(mask, np.arange(mask.shape[0])[:, None], 0)
    return np.maximum.accumulate(rows, axis=0)


def check_prices(arr: np.ndarray, name: str, *, bars_first: bool = True, zero: bool = False) -> None:
    """Refuse a price that is not positive and finite (``zero``: a volume, which may be 0): a zero or
    negative price sizes an infinite or negative position, a NaN one makes every later equity NaN. Two
    reductions, no temporary: a NaN makes the minimum NaN, which fails the comparison. The error names the
    series, the bar and the column (``bars_first``: the array is bars x columns, else columns x bars)."""
    if arr.size == 0 or ((arr.min() >= 0 if zero else arr.min() > 0) and arr.max() < np.inf):
        return
    ok = np.isfinite(arr) & ((arr >= 0) if zero else (arr > 0))
    bad = np.argwhere(~ok)[0]
    bar, column = (bad[0], bad[1]) if bars_first else (bad[1], bad[0])
    rule = "non-negative" if zero else "positive"
    raise ValueError(f"{name} must be {rule} and finite: bar {bar} (column {column}) is {arr[tuple(bad)]}")


def _prices(values, n_bars: int, n_strats: int, name: str, *, zero: bool = False) -> np.ndarray:
    """Prices as (bars x strategies): one series shared by every strategy, or one column each (a
    population over several instruments in one call), positive and finite (``check_prices``)."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.shape[0] != n_bars or arr.shape[1] not in (1, n_strats):
        raise ValueError(f"{name} prices have shape {arr.shape}; targets have {n_bars} bars x {n_strats} strategies")
    check_prices(arr, f"{name} prices" if not zero else name, zero=zero)
    return np.broadcast_to(arr, (n_bars, n_strats))


def check_terms(cash: float, commission: float, slippage_bps: float, volume_share: float) -> None:
    """Refuse terms no market has: cash that is not positive and finite, a negative commission, slippage of 100%
    or more (a sell would fill at a price <= 0), a volume share outside (0, 1]; NaN anywhere."""
    problems = []
    if not (0 < cash < np.inf):
        problems.append(f"cash must be positive and finite, not {cash}")
    if not (0 <= commission < 1):
        problems.append(f"commission is a rate in [0, 1), not {commission}")
    if not (0 <= slippage_bps < 1e4):
        problems.append(f"slippage_bps must be in [0, 10000), not {slippage_bps}")
    if not (0 < volume_share <= 1):
        problems.append(f"volume_share is the share of a bar's volume one may trade, in (0, 1], not {volume_share}")
    if problems:
        raise ValueError("; ".join(problems))


def _per_strategy(value: float | np.ndarray | None, n: int, name: str) -> np.ndarray:
    arr = np.full(n, np.nan) if value is None else np.broadcast_to(np.asarray(value, dtype=float), (n,)).copy()
    if np.any(arr[np.isfinite(arr)] <= 0):
        raise ValueError(f"{name} must be a positive fraction (or None)")
    return arr


@dataclass(frozen=True)
class _Levels:
    """Every bar's stop-loss and take-profit levels under the order in force there (bars x strategies), whether
    the bar's range reaches a level, and the first such bar at or after each bar. The volume cap's path keeps
    them: its order can reach a level while it holds nothing yet (no volume, or a reversal still closing),
    and the position it then builds must still exit at the next bar that reaches one."""

    open_: np.ndarray
    long_: np.ndarray
    stop: np.ndarray
    take: np.ndarray
    stop_hit: np.ndarray
    next_hit: np.ndarray
    slip: float

    def resolve(self, h: np.ndarray, p: np.ndarray, gapped: np.ndarray | bool) -> tuple[np.ndarray, np.ndarray]:
        """(price, kind) of the exits at bars ``h`` of strategies ``p``. The open is the bar's first trade: a level
        it is already through (``gapped``: not the entry bar, whose open is the entry fill) fills there, before the
        bar's range; inside the range the stop is assumed first."""
        opened_long = self.long_[h, p]
        opening, stop_at, take_at = self.open_[h, p], self.stop[h, p], self.take[h, p]
        stop_gap = gapped & np.where(opened_long, opening <= stop_at, opening >= stop_at)
        take_gap = gapped & np.where(opened_long, opening >= take_at, opening <= take_at)
        is_stop = stop_gap | (~take_gap & self.stop_hit[h, p])
        price = np.where(stop_gap | take_gap, opening, np.where(is_stop, stop_at, take_at))
        exit_side = np.where(opened_long, -1.0, 1.0)
        return price * (1.0 + exit_side * self.slip), np.where(is_stop, STOP_LOSS, TAKE_PROFIT).astype(np.int8)

    def columns(self, cols: np.ndarray) -> _Levels:
        """The levels of strategies ``cols`` alone (every per-bar field, by column)."""
        return replace(self, **{f.name: getattr(self, f.name)[:, cols] for f in fields(self) if f.name != "slip"})


@dataclass(frozen=True)
class _Exits:
    """For every order (round k, strategy p): the bar, price and kind of its exit (stop-loss, take-profit,
    or the liquidation of a bankrupt strategy), or bar -1; and, for the volume cap's path, the levels
    behind them (None without stops or without a cap)."""

    bar: np.ndarray
    price: np.ndarray
    kind: np.ndarray
    levels: _Levels | None = None


def _find_exits(at: np.ndarray, ordered: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray,
                slip: float, stop_loss: np.ndarray, take_profit: np.ndarray, *, keep_levels: bool) -> _Exits:
    rounds, n_strats = at.shape
    n_bars = open_.shape[0]
    exits = _Exits(np.full(at.shape, -1), np.full(at.shape, np.nan), np.zeros(at.shape, dtype=np.int8))
    if rounds == 0 or not (np.isfinite(stop_loss).any() or np.isfinite(take_profit).any()):
        return exits
    # The order in force at each (bar, strategy) and its direction and entry fill price.
    is_order = np.zeros((n_bars, n_strats), dtype=bool)
    ks, ps = np.nonzero(at >= 0)
    is_order[at[ks, ps], ps] = True
    last = _ffill_index(is_order)
    cols = np.arange(n_strats)[None, :]
    started = is_order[last, cols]
    direction = np.where(started, ordered[last, cols], 0.0)
    entry = open_[last, cols] * (1.0 + direction * slip)
    long_ = direction > 0
    stop_level = entry * np.where(long_, 1.0 - stop_loss, 1.0 + stop_loss)
    take_level = entry * np.where(long_, 1.0 + take_profit, 1.0 - take_profit)
    with np.errstate(invalid="ignore"):
        stop_hit = (direction != 0) & np.where(long_, low <= stop_level, high >= stop_level)
        take_hit = (direction != 0) & np.where(long_, high >= take_level, low <= take_level)
    hit = stop_hit | take_hit
    # First hit at or after each bar, per column (reverse running minimum of hit bar indices).
    rows = np.where(hit, np.arange(n_bars)[:, None], n_bars)
    next_hit = np.minimum.accumulate(rows[::-1], axis=0)[::-1]
    levels = _Levels(open_, long_, stop_level, take_level, stop_hit, next_hit, slip)
    first = next_hit[at[ks, ps], ps]
    segment_end = np.where(ks + 1 < rounds, at[np.minimum(ks + 1, rounds - 1), ps], -1)
    segment_end = np.where(segment_end < 0, n_bars, segment_end)  # the next order's bar (exclusive)
    ok = (first < segment_end) & (ordered[at[ks, ps], ps] != 0)
    h, p, k = first[ok], ps[ok], ks[ok]
    exits.bar[k, p] = h
    exits.price[k, p], exits.kind[k, p] = levels.resolve(h, p, h != at[k, p])
    return replace(exits, levels=levels) if keep_levels else exits


def _single(orders, ordered, open_, exits: _Exits, terms: _Terms, cash: float, share: float):
    """``_round``'s rules for one strategy, order by order, with Python floats: (fills, records, totals).
    ``reduce`` is ``_Book.reduce``; the state stays in local floats and a closure because a class with
    ``_Book``'s operations (tried) made this path ~6% slower."""
    commission, slip, fractional = terms.commission, terms.slip, terms.fractional
    units = entry = entry_commission = trade_pnl = traded = 0.0
    trades = wins = 0
    fill_rows, record_rows = [], []

    def reduce(bar, qty, price, kind):
        nonlocal units, trade_pnl, cash, traded, trades, wins
        side = 1.0 if units > 0 else -1.0
        exit_commission = qty * price * commission
        pnl = side * qty * (price - entry)
        cash += pnl - exit_commission
        trade_pnl += pnl - exit_commission
        traded += qty * price
        units -= side * qty
        fill_rows.append((bar, 0, -side * qty, price, kind))
        if units == 0.0:
            trades += 1
            wins += (trade_pnl - entry_commission) > 0

    orders = orders[orders >= 0]
    for k, (t, opening, d) in enumerate(zip(orders.tolist(), open_[orders].tolist(), ordered[orders].tolist(),
                                            strict=True)):
        if units != 0.0:
            reduce(t, abs(units), opening * (1.0 - (1.0 if units > 0 else -1.0) * slip), ORDER)
        price = opening * (1.0 + d * slip)
        per_unit = price + (share * price * commission) / share
        budget = cash * share
        size = budget / per_unit if fractional else float(budget // per_unit)
        entry_commission = trade_pnl = 0.0
        if d != 0.0 and size > 0:
            entry = price
            units = d * size
            entry_commission = size * price * commission
            cash -= size * price * commission
            traded += size * price
            fill_rows.append((t, 0, units, price, ORDER))
        record_rows.append((t, units, entry, cash))
        h = int(exits.bar[k, 0])
        if units != 0.0 and h >= 0:
            reduce(h, abs(units), float(exits.price[k, 0]), int(exits.kind[k, 0]))
            record_rows.append((h, units, entry, cash))
    fills = [tuple(np.array(c, dtype=float) for c in zip(*fill_rows, strict=True))] if fill_rows else []
    if record_rows:
        rt, ru, re, rc = (np.array(c) for c in zip(*record_rows, strict=True))
        records = [(rt.astype(np.int64), np.zeros(rt.size, dtype=np.int64), ru, re, rc)]
    else:
        records = []
    return fills, records, (trades, wins, traded)


@dataclass(frozen=True)
class _Terms:
    """What every fill follows: the commission rate, the slippage (a fraction of the price, against the
    trade) and whether units may be fractional."""

    commission: float
    slip: float
    fractional: bool


class _Book:
    """Every strategy's position, entry price, cash and open trade through the rounds, and what the
    rounds write: fills (bar, strategy, signed units, price, kind) and records (bar, strategy, units,
    entry, cash after a batch of fills, from which ``_states`` rebuilds every bar). Each operation acts on
    the strategies (columns) it is given, all at once."""

    def __init__(self, n: int, cash: float, terms: _Terms, fraction: np.ndarray):
        self.commission, self.slip, self.fractional = terms.commission, terms.slip, terms.fractional
        self.fraction = fraction
        self.units = np.zeros(n)
        self.entry = np.zeros(n)
        self.cash = np.full(n, cash)
        self.entry_commission = np.zeros(n)
        self.trade_pnl = np.zeros(n)  # realised P&L less exit commissions of the open trade so far
        self.trades = np.zeros(n, dtype=np.int64)
        self.wins = np.zeros(n, dtype=np.int64)
        self.traded = np.zeros(n)
        self.fills: list[tuple[np.ndarray, ...]] = []
        self.records: list[tuple[np.ndarray, ...]] = []

    def reduce(self, p: np.ndarray, t: np.ndarray, qty: np.ndarray, price: np.ndarray, kind: np.ndarray) -> None:
        """Close ``qty`` units of each position at ``price``; a trade ends when nothing is left."""
        side = np.sign(self.units[p])
        exit_commission = qty * price * self.commission
        pnl = side * qty * (price - self.entry[p])
        self.cash[p] += pnl - exit_commission
        self.trade_pnl[p] += pnl - exit_commission
        self.traded[p] += qty * price
        self.units[p] -= side * qty
        self.fills.append((t, p, -side * qty, price, kind))
        done = p[self.units[p] == 0.0]
        self.trades[done] += 1
        self.wins[done] += (self.trade_pnl[done] - self.entry_commission[done]) > 0

    def close_at_open(self, p: np.ndarray, t: np.ndarray, qty: np.ndarray, opening: np.ndarray) -> None:
        """Close ``qty`` units of each position by an order filled at the bar's open, slipped against it."""
        self.reduce(p, t, qty, opening * (1.0 - np.sign(self.units[p]) * self.slip), np.full(p.size, ORDER))

    def order_price(self, opening: np.ndarray, d: np.ndarray) -> np.ndarray:
        """The fill price of an order to buy (d = +1) or sell short (d = -1) at the bar's open."""
        return opening * (1.0 + d * self.slip)

    def close_out(self, p: np.ndarray, t: np.ndarray, price: np.ndarray, kind: np.ndarray) -> None:
        """Close all of each position (a stop, a take-profit or a liquidation) and record the state."""
        self.reduce(p, t, np.abs(self.units[p]), price, kind)
        self.record(p, t)

    def record(self, p: np.ndarray, t: np.ndarray) -> None:
        """Write each strategy's state after its fills at bar ``t``: it holds until its next record."""
        self.records.append((t, p, self.units[p], self.entry[p], self.cash[p]))

    def size_for(self, q: np.ndarray, price: np.ndarray) -> np.ndarray:
        """Units a new position of each strategy may take at ``price`` from its cash now; starts its trade."""
        share = self.fraction[q]
        per_unit = price + (share * price * self.commission) / share
        budget = self.cash[q] * share
        size = budget / per_unit if self.fractional else np.floor_divide(budget, per_unit)
        self.entry_commission[q] = 0.0
        self.trade_pnl[q] = 0.0
        return np.maximum(size, 0.0)

    def add(self, q: np.ndarray, b: np.ndarray, d: np.ndarray, qty: np.ndarray, price: np.ndarray) -> None:
        """Buy (d = +1) or sell short (d = -1) ``qty`` more units; the entry is their average price."""
        held = np.abs(self.units[q])
        self.entry[q] = np.where(held == 0, price, (self.entry[q] * held + price * qty) / (held + qty))
        self.units[q] += d * qty
        self.entry_commission[q] += qty * price * self.commission
        self.cash[q] -= qty * price * self.commission
        self.traded[q] += qty * price
        self.fills.append((b, q, d * qty, price, np.full(q.size, ORDER)))


@dataclass(frozen=True)
class _Columns:
    """What the rounds read, per strategy: prices and the direction ordered for each bar's open (bars x
    strategies), the orders' bars ``at`` (rounds x strategies, -1 past a strategy's last) and their
    exits, the share of equity per entry, the volume capacity per bar (None: unlimited), and ``bust``,
    the bar at whose close each strategy is bankrupt (the number of bars: never). Strategies never
    interact, so any subset of columns runs on its own."""

    open_: np.ndarray
    close: np.ndarray
    ordered: np.ndarray
    at: np.ndarray
    exits: _Exits
    fraction: np.ndarray
    capacity: np.ndarray | None
    bust: np.ndarray

    def bankrupt(self, cols: np.ndarray, bust: np.ndarray) -> _Columns:
        """Strategies ``cols`` alone, bankrupt at the close of bar ``bust`` (one each): their orders after
        it are removed, and the exit of the round in force becomes a liquidation at that close, unless a
        stop closed the position inside that bar. An exit at an earlier bar cannot have closed it (flat
        from there with the same cash, the strategy would have been at equity <= 0 since): the volume
        cap's path can have passed it over, so it is replaced too, by the level reached in the bust bar if
        there is one (the stop comes before the close), else by the liquidation."""
        at = self.at[:, cols]
        k = ((at >= 0) & (at <= bust)).sum(axis=0) - 1  # the round in force at the bust bar; -1: none yet
        at = np.where(np.arange(at.shape[0])[:, None] > k, -1, at)
        bar, price, kind = (x[:, cols] for x in (self.exits.bar, self.exits.price, self.exits.kind))
        close = self.close[:, cols]
        q = np.nonzero(k >= 0)[0]
        q = q[bar[k[q], q] != bust[q]]
        bar[k[q], q] = bust[q]
        price[k[q], q] = close[bust[q], q]
        kind[k[q], q] = BANKRUPT
        levels = None if self.exits.levels is None else self.exits.levels.columns(cols)
        if levels is not None:  # the volume cap's path: a level reached in the bust bar exits there, first
            q = q[levels.next_hit[bust[q], q] == bust[q]]
            price[k[q], q], kind[k[q], q] = levels.resolve(bust[q], q, bust[q] != at[k[q], q])
        return _Columns(self.open_[:, cols], close, self.ordered[:, cols], at, _Exits(bar, price, kind, levels),
                        self.fraction[cols], None if self.capacity is None else self.capacity[:, cols], bust)


def _round(book: _Book, c: _Columns, k: int, p: np.ndarray) -> None:
    """Round k with unlimited liquidity: every order completes at its bar's open (close first, then
    open), and the position opened leaves at its exit (stop, take-profit or liquidation), if any."""
    t = c.at[k, p]
    direction = c.ordered[t, p]
    closing = book.units[p] != 0.0
    if closing.any():
        pc, tc = p[closing], t[closing]
        book.close_at_open(pc, tc, np.abs(book.units[pc]), c.open_[tc, pc])
    price = book.order_price(c.open_[t, p], direction)
    size = book.size_for(p, price)
    opening = (direction != 0.0) & (size > 0)
    book.add(p[opening], t[opening], direction[opening], size[opening], price[opening])
    book.record(p, t)
    po = p[opening]
    out = po[c.exits.bar[k, po] >= 0]
    if out.size:
        book.close_out(out, c.exits.bar[k, out], c.exits.price[k, out], c.exits.kind[k, out])


class _Working:
    """Round k's orders under a volume cap while they fill, one per strategy ``p``: the bar each is at,
    the units left to close and to open (NaN until sized: a new position is sized once its close is
    complete, from the cash then), the bar of its exit (-1 once taken), the bar it must stop before (the
    next order's, which cancels what is left, or the one after its bust bar) and whether it still works.
    Each step acts on the working orders ``i`` (positions in ``p``) at their bars."""

    __slots__ = ("bar", "direction", "exit_bar", "exit_kind", "exit_price", "live", "p", "to_close", "to_open",
                 "until")

    def __init__(self, c: _Columns, k: int, p: np.ndarray, held: np.ndarray):
        n_bars = c.ordered.shape[0]
        self.p = p
        self.bar = c.at[k, p]
        self.direction = c.ordered[self.bar, p]
        until = c.at[k + 1, p] if k + 1 < c.at.shape[0] else np.full(p.size, -1)
        self.until = np.minimum(np.where(until < 0, n_bars, until), c.bust[p] + 1)
        self.exit_bar = c.exits.bar[k, p].copy()
        self.exit_price = c.exits.price[k, p].copy()
        self.exit_kind = c.exits.kind[k, p].copy()
        self.to_close = held
        self.to_open = np.full(p.size, np.nan)
        self.live = np.ones(p.size, dtype=bool)

    def close(self, book: _Book, c: _Columns, i: np.ndarray) -> np.ndarray:
        """The bar's capacity serves first what is left to close; returns the capacity left to open."""
        q, b = self.p[i], self.bar[i]
        room = c.capacity[b, q]
        cut = np.minimum(self.to_close[i], room)
        if (cut > 0).any():
            j = cut > 0
            book.close_at_open(q[j], b[j], cut[j], c.open_[b[j], q[j]])
            self.to_close[i] -= cut
            room -= cut
        return room

    def open(self, book: _Book, c: _Columns, i: np.ndarray, room: np.ndarray) -> None:
        """Once the close is complete: size the new position (the first time), then fill what ``room`` allows."""
        q, b, d = self.p[i], self.bar[i], self.direction[i]
        price = book.order_price(c.open_[b, q], d)
        closed = (self.to_close[i] == 0) & (d != 0)
        unsized = closed & np.isnan(self.to_open[i])
        if unsized.any():
            self.to_open[i[unsized]] = book.size_for(q[unsized], price[unsized])
        o = np.where(closed, np.minimum(np.nan_to_num(self.to_open[i]), room), 0.0)
        if (o > 0).any():
            j = o > 0
            book.add(q[j], b[j], d[j], o[j], price[j])
            self.to_open[i[j]] -= o[j]

    def exit_if_hit(self, book: _Book, c: _Columns, i: np.ndarray) -> None:
        """An exit in this bar closes what is held and cancels what was still to buy. A level reached while
        the order holds nothing of its own yet (no fill, or the previous position still closing) is passed
        over: the order's exit becomes the next bar that reaches a level, before the order's time is up."""
        q, b = self.p[i], self.bar[i]
        due = self.exit_bar[i] == b
        hit = due & (book.units[q] != 0) & (self.to_close[i] == 0)
        if hit.any():
            qh = q[hit]
            book.close_out(qh, b[hit], self.exit_price[i[hit]], self.exit_kind[i[hit]])
            self.to_open[i[hit]] = 0.0
            self.exit_bar[i[hit]] = -1
        passed = due & ~hit & (self.exit_kind[i] != BANKRUPT)  # a liquidation waits for exit_after
        if passed.any():
            self.rearm(c, i[passed])

    def rearm(self, c: _Columns, j: np.ndarray) -> None:
        """The exits of orders ``j`` move to the next bar after this one that reaches a level, if the order is
        still in force then; else, in the round in force at the strategy's bust bar, to its liquidation."""
        levels, q, b = c.exits.levels, self.p[j], self.bar[j]
        n_bars = levels.next_hit.shape[0]
        after = np.full(j.size, n_bars)
        within = b + 1 < n_bars
        after[within] = levels.next_hit[b[within] + 1, q[within]]
        rearm = after < self.until[j]
        bust = ~rearm & (self.until[j] == c.bust[q] + 1)
        self.exit_bar[j] = np.where(rearm, after, np.where(bust, c.bust[q], -1))
        if rearm.any():
            jr, hr = j[rearm], after[rearm]
            self.exit_price[jr], self.exit_kind[jr] = levels.resolve(hr, q[rearm], True)  # after the order bar
        if bust.any():
            jb, qb = j[bust], q[bust]
            self.exit_price[jb], self.exit_kind[jb] = c.close[c.bust[qb], qb], BANKRUPT

    def next_bar(self, i: np.ndarray) -> None:
        """What is left waits for the next bar's open, unless the order's time is up."""
        pending = (self.to_close[i] > 0) | (np.nan_to_num(self.to_open[i]) > 0)
        self.bar[i] += 1
        self.live[i] = pending & (self.bar[i] < self.until[i])

    def exit_after(self, book: _Book) -> None:
        """An exit still pending when the order stops working closes what the fills left held. It lies at or
        after the last bar worked: an exit met on a worked bar was taken (-1) or moved past it (``rearm``),
        except a liquidation, which waits here and is the last bar worked (the bust bar)."""
        later = (self.exit_bar >= 0) & (book.units[self.p] != 0)
        if later.any():
            ql = self.p[later]
            book.close_out(ql, self.exit_bar[later], self.exit_price[later], self.exit_kind[later])


def _capped_round(book: _Book, c: _Columns, k: int, p: np.ndarray) -> None:
    """Round k with a volume cap: each bar from the order's open on, the bar's capacity serves first
    what is left to close, then what is left to open; the remainder waits for the next bar's open,
    until the strategy's next order (which cancels it) or its bust bar (where the liquidation closes
    what is held, a close in progress included)."""
    orders = _Working(c, k, p, np.abs(book.units[p]))
    while orders.live.any():
        i = np.nonzero(orders.live)[0]
        room = orders.close(book, c, i)
        orders.open(book, c, i, room)
        book.record(p[i], orders.bar[i])
        orders.exit_if_hit(book, c, i)
        orders.next_bar(i)
    orders.exit_after(book)


def _states(records, n_bars: int, n_strats: int, cash: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(units, entry, cash) through each bar's close, from the records written after each batch of fills."""
    units = np.zeros((n_bars, n_strats))
    entry = np.zeros((n_bars, n_strats))
    cash_t = np.full((n_bars, n_strats), cash)
    if not records:
        return units, entry, cash_t
    rt, rp, ru, re, rc = (np.concatenate(f) for f in zip(*records, strict=True))
    # A stop on the entry bar records that bar twice: the later record (flat) must win.
    key = rp * n_bars + rt
    keep = np.sort(key.size - 1 - np.unique(key[::-1], return_index=True)[1])
    keep = keep[np.argsort(key[keep], kind="stable")]  # by column, then bar
    rt, rp, ru, re, rc = rt[keep], rp[keep], ru[keep], re[keep], rc[keep]
    # Each record holds from its bar up to the next record of the same column (or the end).
    nxt = np.append(rt[1:], n_bars)
    nxt = np.where(np.append(rp[1:] != rp[:-1], True), n_bars, nxt)
    lengths = nxt - rt
    if n_strats == 1:  # one contiguous block from the first record on: slices, not a scatter
        units[rt[0]:, 0], entry[rt[0]:, 0], cash_t[rt[0]:, 0] = (np.repeat(v, lengths) for v in (ru, re, rc))
        return units, entry, cash_t
    rows, cols = _ranges(rt, nxt), np.repeat(rp, lengths)
    units[rows, cols] = np.repeat(ru, lengths)
    entry[rows, cols] = np.repeat(re, lengths)
    cash_t[rows, cols] = np.repeat(rc, lengths)
    return units, entry, cash_t


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, e) for every pair, vectorised."""
    lengths = ends - starts
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(lengths.sum()) - offsets + np.repeat(starts, lengths)


def simulate(
    open_: np.ndarray,
    close: np.ndarray,
    targets: np.ndarray,
    *,
    cash: float = 10_000.0,
    commission: float = 0.0,
    fractional: bool = False,
    slippage_bps: float = 0.0,
    high: np.ndarray | None = None,
    low: np.ndarray | None = None,
    stop_loss: float | np.ndarray | None = None,
    take_profit: float | np.ndarray | None = None,
    fraction: float | np.ndarray | None = None,
    volume: np.ndarray | None = None,
    volume_share: float = 0.1,
) -> BacktestResult:
    """Run every column of ``targets`` (bars x strategies, values -1/0/+1, NaN = no view = flat).

    Prices are one series (bars,) for all strategies, or (bars x strategies) so that one call runs a
    population over many instruments.
    """
    check_terms(cash, commission, slippage_bps, volume_share)
    targets = np.asarray(targets, dtype=float)
    if targets.ndim == 1:
        targets = targets[:, None]
    n_bars, n_strats = targets.shape
    open_, close = _prices(open_, n_bars, n_strats, "open"), _prices(close, n_bars, n_strats, "close")
    fraction = _entry_share(fraction, n_strats)
    stop_loss = _per_strategy(stop_loss, n_strats, "stop_loss")
    take_profit = _per_strategy(take_profit, n_strats, "take_profit")
    stops = np.isfinite(stop_loss).any() or np.isfinite(take_profit).any()
    if stops and (high is None or low is None):
        raise ValueError("stop-loss and take-profit need the bars' high and low")
    terms = _Terms(commission, slippage_bps / 1e4, fractional)
    ordered, at = _orders(targets)
    exits = _find_exits(at, ordered, open_, _prices(high, n_bars, n_strats, "high") if stops else open_,
                        _prices(low, n_bars, n_strats, "low") if stops else open_, terms.slip, stop_loss, take_profit,
                        keep_levels=volume is not None)
    capacity = None
    if volume is not None:
        vol = _prices(volume, n_bars, n_strats, "volume", zero=True) * volume_share
        capacity = vol if fractional else np.floor(vol)
    columns = _Columns(open_, close, ordered, at, exits, fraction, capacity, np.full(n_strats, n_bars))
    result = _run(columns, float(cash), terms)
    if not np.fmin.reduce(result.equity, axis=None, initial=np.inf) <= 0:  # one pass, NaN ignored
        return result
    # The run is causal: up to its first close with equity <= 0 a strategy's run is right, and only
    # what follows changes. The bankrupt strategies alone run again with that close as their end.
    ruined = result.equity <= 0
    cols = np.nonzero(ruined.any(axis=0))[0]
    again = _run(columns.bankrupt(cols, ruined[:, cols].argmax(axis=0)), float(cash), terms)
    return _with_columns(result, cols, again)


def _entry_share(fraction: float | np.ndarray | None, n: int) -> np.ndarray:
    """The share of equity each strategy's entry may use: ``fraction``, or all of it (``FULL_EQUITY``)."""
    share = _per_strategy(fraction, n, "fraction")
    if np.any(share > 1):
        raise ValueError("fraction is the share of equity an entry may use, in (0, 1]")
    return np.where(np.isfinite(share) & (share < 1), share, FULL_EQUITY)


def _orders(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ordered, at): the direction ordered for each bar's open (bars x strategies), the target at the
    previous close, and ``at[k, p]``, the bar of strategy p's k-th order (-1 past its last), an order
    being a change of the direction ordered."""
    wanted = np.sign(np.nan_to_num(targets, nan=0.0))
    ordered = np.zeros_like(wanted)
    ordered[1:] = wanted[:-1]
    change = np.zeros_like(wanted, dtype=bool)
    change[1:] = ordered[1:] != ordered[:-1]
    bars, strats = np.nonzero(change)
    by_strategy = np.lexsort((bars, strats))
    counts = np.bincount(strats, minlength=targets.shape[1])
    rank = np.arange(bars.size) - np.repeat(np.cumsum(counts) - counts, counts)
    at = np.full((counts.max(initial=0), targets.shape[1]), -1, dtype=np.int64)
    at[rank, strats[by_strategy]] = bars[by_strategy]
    return ordered, at


def _run(c: _Columns, cash: float, terms: _Terms) -> BacktestResult:
    """The rounds over every column of ``c`` (or the one-strategy path), and the states they imply."""
    n_bars, n_strats = c.ordered.shape
    if n_strats == 1 and c.capacity is None:
        # One strategy: the same rules with Python floats, order by order (NumPy calls on one-element
        # arrays would cost ~10x more per order). Tests hold it equal to the vectorised rounds.
        fills, records, totals = _single(c.at[:, 0], c.ordered[:, 0], c.open_[:, 0], c.exits, terms, cash,
                                         float(c.fraction[0]))
        trades, wins, traded = (np.array([x]) for x in totals)
    else:
        book = _Book(n_strats, cash, terms, c.fraction)
        play = _round if c.capacity is None else _capped_round
        for k in range(c.at.shape[0]):
            play(book, c, k, np.nonzero(c.at[k] >= 0)[0])
        fills, records, trades, wins, traded = book.fills, book.records, book.trades, book.wins, book.traded
    table = np.column_stack([np.concatenate(f) for f in zip(*fills, strict=True)]) if fills else np.empty((0, 5))
    units, entry, cash_t = _states(records, n_bars, n_strats, cash)
    if (c.bust < n_bars).any():  # a bankrupt strategy holds nothing from its bust bar on, and no cash
        cash_t[np.arange(n_bars)[:, None] >= c.bust] = 0.0
    return BacktestResult(equity=cash_t + units * (c.close - entry), units=units, cash=cash_t, trades=trades,
                          wins=wins, traded_value=traded, fills=_by_bar(table))


def _with_columns(result: BacktestResult, cols: np.ndarray, part: BacktestResult) -> BacktestResult:
    """``result`` (arrays of this call, updated in place) with its strategies ``cols`` replaced by ``part``,
    the run of those strategies alone."""
    for name in ("equity", "units", "cash", "trades", "wins", "traded_value"):
        getattr(result, name)[..., cols] = getattr(part, name)
    moved = part.fills.copy()
    moved[:, 1] = cols[moved[:, 1].astype(np.int64)]
    return replace(result, fills=_by_bar(np.concatenate([result.fills[~np.isin(result.fills[:, 1], cols)], moved])))


def _by_bar(fills: np.ndarray) -> np.ndarray:
    """Fills sorted by bar, then strategy; a strategy's fills within a bar keep their order (stable sort)."""
    return fills[np.lexsort((fills[:, 1], fills[:, 0]))]
