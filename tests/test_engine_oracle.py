"""An independent oracle for the backtest engine: a plain bar-by-bar loop, one strategy at a time, written from the
rules in the docstring of ``emp_core/backtest/engine.py`` (not from its implementation), and property tests that
run ``simulate`` on random markets and compare every output with it; plus a few tiny cases worked out by hand.

What the reference models (one strategy, floats, explicit state):

- orders: the target (NaN = 0) changing at the close of bar t-1 is an order working from the open of bar t (the
  "order bar"); it cancels what is left of the previous order;
- at each open: the bar's capacity (unlimited without a volume cap) serves first what is left to close (everything
  the strategy holds when the order arrives), then what is left to open; the new position is sized once its close is
  complete, from the cash then, at that bar's (slipped) open; its entry price is the average of its fills;
- then stop-loss / take-profit inside the bar, from levels measured off the order bar's slipped open (which is the
  entry fill price when the order fills at once): a gap through a level fills at the open, except on the order bar,
  whose open is the entry; both levels inside the range -> the stop first; only while the order holds units of its
  own (nothing yet, or the previous position still closing: the level is passed over); an exit cancels what is still
  to buy and the strategy stays flat until its next order;
- then the mark to the close, then bankruptcy at the close (equity <= 0: liquidate at the close, no slippage, no
  cap; cash, equity and units 0 from there on, no more fills).

Decisions where the docstring leaves room, each settled by running small cases against ``simulate`` (the hand cases
at the bottom pin several of them):

1. The sizing price under the volume cap is the open of the bar on which the close completes (for a fresh order: the
   order bar), even when that bar has no capacity left for the opening; later fills happen at their own opens. So a
   position sized at 10 on a zero-volume bar can fill at 20 the next bar, for twice the cash (no margin is modelled).
   The docstring says "sized once its close is complete, from the cash then", which this reads literally.
2. "On the entry bar the open is the entry" means the order bar. A capped position whose first units fill on a later
   bar whose open is already through a level buys at that open and exits at the same open (the order in which the
   brief and the docstring list the steps: fills at the open, then the levels).
3. A new order closes whatever is held, whatever its direction: with the cap, targets 1 -> 0 (partly closed) -> 1
   sell the rest and then buy a new position, sized from the cash then (two fills in one bar).
4. ``fraction=1.0`` (or None) is "all of it", f = 1 - 2.2e-16; a fraction below 1 is used as given (1000 * 0.5 // 5 is
   100 units, not 99).
5. Sizing from cash <= 0 (a short closed at a gap, then reversed) gives no unit: the order is cancelled. A strategy
   flat with cash <= 0 at a close is bankrupt with no fill.
6. Fill rows of one bar keep the order in which they happen: closing rows, opening rows, then a stop exit or the
   liquidation. ``units`` is 0 at the bankrupt bar (the liquidation is at its close).
7. The entry price (the average of the fills) is a running mean, which is exactly the fill price after a single fill:
   a position bought and sold at one open (decision 2, or a gap take-profit) is then a round trip of exactly 0, not a
   win. (units * price / units is not always the price in floating point; with it the win counts drifted.)

Exact and approximate comparisons: fill bars, kinds and prices (products of the documented factors, computed in the
documented order), whole-unit fill sizes, the units series (whole units), trades and wins are compared exactly.
cash, equity and traded_value are running sums (P&L and fees booked fill by fill here, in whatever grouping the
vectorised engine uses there), so they agree to rounding only: rtol=1e-12, with an absolute floor of 1e-12 of the
starting cash because the rounding error scales with the amounts summed, not with the result (which can be near 0 at
a bankruptcy). Fractional sizes are computed from that cash, so fractional units and fill sizes get rtol=1e-12 too,
with a floor of 1e-12 of the largest position (the last fill of a capped order is a difference, size - earlier
fills, and can be small).

Each random case runs five strategies in one call (the vectorised rounds) and each of them alone (the engine's
one-strategy path); both must match the same reference.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest

from emp_core.backtest.engine import BANKRUPT, ORDER, STOP_LOSS, TAKE_PROFIT, BacktestResult, simulate

pytestmark = pytest.mark.usefixtures("both_engines")  # every test on the NumPy engine and the kernel

FULL = 1.0 - 2.220446049250313e-16  # the docstring's f = 1 - 2.2e-16 (sys.float_info.epsilon)
RTOL = 1e-12


# ---------------------------------------------------------------- the reference


@dataclass
class Order:
    """The order in force: direction, order bar, what is left to close and to open, and its exit levels."""

    d: float  # target direction -1, 0, +1
    bar: int  # the order bar (first possible fill; its open is the entry for the stop rules)
    to_close: float  # units of the previous position still to close (absolute)
    to_open: float | None  # units of the new position still to open (None: not sized yet)
    filled: float  # units of the new position filled so far
    stop: float  # stop-loss level (NaN: none)
    take: float  # take-profit level (NaN: none)
    done: bool = False  # cancelled, too small, or exited by a level: nothing more happens


@dataclass
class Reference:
    equity: np.ndarray
    units: np.ndarray
    cash: np.ndarray
    fills: list[tuple[int, float, float, int]]  # bar, signed units, price, kind
    trades: int
    wins: int
    traded_value: float


class Strategy:
    """One strategy's state, bar by bar: cash, units held, their average entry price, the order in force (what
    it still has to close and to open, its levels), the open round trip's P&L, and the counters."""

    def __init__(self, *, cash, commission, fractional, slippage_bps, fraction, events):
        self.c, self.s, self.fractional = commission, slippage_bps / 1e4, fractional
        self.f = FULL if fraction is None or fraction == 1.0 else fraction
        self.events = events
        self.cash = float(cash)
        self.units = 0.0  # signed units held
        self.entry = 0.0  # average entry price of what is held
        self.trade_pnl = 0.0  # P&L of the open round trip so far, both commissions included
        self.trades = self.wins = 0
        self.traded = 0.0
        self.dead = False
        self.order: Order | None = None
        self.fills: list[tuple[int, float, float, int]] = []

    # -- fills

    def open_more(self, t: int, q: float, price: float) -> None:
        """Open q more units of the order's direction at price."""
        o = self.order
        fee = self.c * q * price
        self.cash -= fee
        self.trade_pnl -= fee
        self.traded += q * price
        o.to_open -= q
        o.filled += q
        # the average of the fills, as a running mean: exactly the price after one fill (or fills at one price),
        # so that a round trip in and out at one price is exactly 0 (not a win)
        self.entry = price if o.filled == q else self.entry + (price - self.entry) * q / o.filled
        self.units += o.d * q
        self.fills.append((t, o.d * q, price, ORDER))

    def reduce(self, t: int, q: float, price: float, kind: int) -> None:
        """Close q units (absolute) of what is held at price; the round trip ends when nothing is left."""
        side = 1.0 if self.units > 0 else -1.0
        pnl = side * q * (price - self.entry)
        fee = self.c * q * price
        self.cash += pnl - fee
        self.trade_pnl += pnl - fee
        self.traded += q * price
        self.units -= side * q
        self.fills.append((t, -side * q, price, kind))
        if self.units == 0:
            self.trades += 1
            self.wins += self.trade_pnl > 0
            self.trade_pnl, self.entry = 0.0, 0.0

    # -- the steps of a bar

    def new_order(self, t: int, d: float, open_t: float, stop_loss: float, take_profit: float) -> None:
        """The target changed at the last close: this order replaces what is left of the previous one."""
        if self.order is not None and not self.order.done:
            self.events["order cancels a working order"] += 1
        if self.units and d:
            self.events["reversal"] += 1
        base = open_t * (1 + d * self.s)  # the first possible fill: the levels are measured from it
        self.order = Order(d=d, bar=t, to_close=abs(self.units), to_open=None, filled=0.0,
                           stop=base * (1 - d * stop_loss) if d else math.nan,
                           take=base * (1 + d * take_profit) if d else math.nan)

    def size(self, price: float) -> None:
        """Size the new position from the cash now (its close is complete); too small: the order is cancelled."""
        o, c, f = self.order, self.c, self.f
        if self.fractional:
            n = self.cash * f / (price * (1 + c))
        else:
            n = float(int(self.cash * f // (price + f * price * c / f)))
        if n >= 1 or (self.fractional and n > 0):
            o.to_open = n
        else:
            o.done = True
            self.events["order too small"] += 1

    def at_open(self, t: int, open_t: float, room: float) -> None:
        """The bar's capacity serves first what is left to close, then what is left to open."""
        o = self.order
        if o.to_close > 0:
            q = min(o.to_close, room)
            if q > 0:
                self.reduce(t, q, open_t * (1 - (1.0 if self.units > 0 else -1.0) * self.s), ORDER)
                o.to_close -= q
                room -= q
            if o.to_close > 0:
                self.events["close still working"] += 1
                return
        if o.d == 0:
            o.done = True
            return
        price = open_t * (1 + o.d * self.s)
        if o.to_open is None:
            self.size(price)
        if not o.done and o.to_open > 0:
            q = min(o.to_open, room)
            if q > 0:
                self.open_more(t, q, price)
            if o.to_open > 0:
                self.events["opening still working"] += 1

    def inside_bar(self, t: int, open_t: float, high_t: float, low_t: float) -> None:
        """Stop-loss / take-profit, only while the order holds units of its own (else the level is passed over)."""
        o, d = self.order, self.order.d
        if o.done or not d or (math.isnan(o.stop) and math.isnan(o.take)):
            return
        reached_stop = d * (low_t if d > 0 else high_t) <= d * o.stop
        reached_take = d * (high_t if d > 0 else low_t) >= d * o.take
        if o.to_close > 0 or self.units == 0:
            self.events["level passed over"] += int(reached_stop or reached_take)
            return
        hit = None
        if t != o.bar:  # the open is the bar's first trade: a gap through a level fills there
            if d * open_t <= d * o.stop:
                hit = (open_t, STOP_LOSS)
            elif d * open_t >= d * o.take:
                hit = (open_t, TAKE_PROFIT)
        if hit is not None:
            self.events[("gap", hit[1])] += 1
            self.events["gap take-profit with the stop in range"] += int(hit[1] == TAKE_PROFIT and reached_stop)
        elif reached_stop:  # both inside the range: the stop first
            hit = (o.stop, STOP_LOSS)
            self.events["stop and take in one bar"] += int(reached_take)
        elif reached_take:
            hit = (o.take, TAKE_PROFIT)
        if hit is None:
            return
        self.events["exit cancels the rest to buy"] += int(o.to_open > 0)
        self.events["entry and exit in one later bar"] += int(o.bar != t and self.fills[-1][0] == t)
        self.events[("exit", hit[1])] += 1
        self.reduce(t, abs(self.units), hit[0] * (1 - d * self.s), hit[1])
        o.done = True

    def at_close(self, t: int, close_t: float) -> tuple[float, float, float]:
        """Mark to the close, then the bankruptcy rule: (equity, units, cash) of the bar."""
        equity = self.cash + self.units * (close_t - self.entry) if self.units else self.cash
        if not self.dead and equity <= 0:
            self.events["bankrupt holding" if self.units else "bankrupt flat"] += 1
            if self.units:
                self.reduce(t, abs(self.units), close_t, BANKRUPT)
            self.dead = True
        if self.dead:
            self.cash, equity, self.units = 0.0, 0.0, 0.0
        return equity, self.units, self.cash


def reference(open_, high, low, close, target, volume=None, *, cash=10_000.0, commission=0.0, fractional=False,
              slippage_bps=0.0, stop_loss=math.nan, take_profit=math.nan, fraction=None, volume_share=0.1,
              events: Counter | None = None) -> Reference:
    """One strategy, bar by bar, from the docstring's rules (see the module docstring)."""
    me = Strategy(cash=cash, commission=commission, fractional=fractional, slippage_bps=slippage_bps,
                  fraction=fraction, events=Counter() if events is None else events)
    goal = [0.0 if math.isnan(x) else float(x) for x in target]  # NaN: no view, flat
    rows = []
    for t in range(len(open_)):
        if not me.dead and t >= 1 and goal[t - 1] != (goal[t - 2] if t >= 2 else 0.0):
            me.new_order(t, goal[t - 1], open_[t], stop_loss, take_profit)
        if not me.dead and me.order is not None and not me.order.done:
            if volume is None:
                room = math.inf
            else:
                room = volume[t] * volume_share if fractional else math.floor(volume[t] * volume_share)
            me.at_open(t, open_[t], room)
            me.inside_bar(t, open_[t], high[t], low[t])
        rows.append(me.at_close(t, close[t]))
    equity, units, money = (np.array(col) for col in zip(*rows, strict=True))
    return Reference(equity, units, money, me.fills, me.trades, me.wins, me.traded)


# ---------------------------------------------------------------- comparison


def assert_matches(result: BacktestResult, p: int, ref: Reference, *, cash: float, fractional: bool) -> None:
    """Strategy p of ``result`` against the reference: exactly, or to rounding (see the module docstring)."""
    atol = 1e-12 * cash
    rows = result.fills[result.fills[:, 1] == p]
    expected = np.array(ref.fills, dtype=float).reshape(-1, 4)
    assert rows[:, [0, 4]].tolist() == expected[:, [0, 3]].tolist(), f"strategy {p}: fill bars and kinds"
    assert rows[:, 3].tolist() == expected[:, 2].tolist(), f"strategy {p}: fill prices"
    if fractional:  # a remainder (size - earlier fills) is small: its error scales with the size
        size = 1e-12 * max(1.0, np.abs(ref.units).max())
        np.testing.assert_allclose(rows[:, 2], expected[:, 1], rtol=RTOL, atol=size, err_msg=f"{p}: fill units")
        np.testing.assert_allclose(result.units[:, p], ref.units, rtol=RTOL, atol=size, err_msg=f"{p}: units")
    else:
        assert rows[:, 2].tolist() == expected[:, 1].tolist(), f"strategy {p}: fill units"
        assert result.units[:, p].tolist() == ref.units.tolist(), f"strategy {p}: units"
    np.testing.assert_allclose(result.cash[:, p], ref.cash, rtol=RTOL, atol=atol, err_msg=f"{p}: cash")
    np.testing.assert_allclose(result.equity[:, p], ref.equity, rtol=RTOL, atol=atol, err_msg=f"{p}: equity")
    np.testing.assert_allclose(result.traded_value[p], ref.traded_value, rtol=RTOL, err_msg=f"{p}: traded_value")
    assert (result.trades[p], result.wins[p]) == (ref.trades, ref.wins), f"strategy {p}: trades, wins"


# ---------------------------------------------------------------- random markets


def random_market(rng: np.random.Generator, n: int):
    """A volatile walk with overnight gaps and a few x2.5 jumps (up and down, at the open or inside the bar), some
    wide bars, some gaps of 12% followed by wicks of 40% both ways (a gap through one level, then a reach of the
    other), and volumes of which about one bar in seven is 0."""
    open_, close, wild = np.empty(n), np.empty(n), np.zeros(n, dtype=bool)
    prev = 100.0
    for t in range(n):
        o = prev * math.exp(rng.normal(0, 0.02))
        if rng.random() < 0.03:
            o *= 2.5
        if rng.random() < 0.02:
            o /= 2.5
        if rng.random() < 0.05:
            o *= 1.12 if rng.random() < 0.5 else 1 / 1.12
            wild[t] = True
        cl = o * math.exp(rng.normal(0, 0.03))
        if rng.random() < 0.02:
            cl *= 2.5
        open_[t], close[t], prev = o, cl, cl
    wide = np.where(rng.random(n) < 0.1, 4.0, 1.0)
    high = np.maximum(open_, close) * np.exp(wide * np.abs(rng.normal(0, 0.02, n)))
    low = np.minimum(open_, close) * np.exp(-wide * np.abs(rng.normal(0, 0.02, n)))
    high[wild] *= 1.4
    low[wild] /= 1.4
    volume = rng.uniform(0, 1500, n) * (rng.random(n) > 0.15)
    return open_, high, low, close, volume


def random_targets(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Runs of -1, 0, +1 (now and then NaN) of geometric lengths."""
    out = np.empty((n, k))
    for j in range(k):
        t = 0
        while t < n:
            run = 1 + int(rng.geometric(0.25))
            out[t:t + run, j] = np.nan if rng.random() < 0.05 else rng.choice([-1.0, 0.0, 1.0])
            t += run
    return out


def random_case(seed: int, k: int = 5):
    """Inputs for one call of ``simulate``: markets shared or one per strategy, and random terms."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(40, 120))
    per_strategy = rng.random() < 0.25
    columns = [random_market(rng, n) for _ in range(k if per_strategy else 1)]
    open_, high, low, close, volume = (np.column_stack(a) if per_strategy else a[0] for a in zip(*columns, strict=True))
    kw = {
        "cash": float(rng.choice([10_000.0, 2_500.0])),
        "commission": float(rng.choice([0.0, 0.001, 0.01])),
        "fractional": bool(rng.random() < 0.4),
        "slippage_bps": float(rng.choice([0.0, 5.0, 20.0])),
        "stop_loss": np.where(rng.random(k) < 0.3, np.nan, rng.uniform(0.01, 0.15, k)),
        "take_profit": np.where(rng.random(k) < 0.3, np.nan, rng.uniform(0.01, 0.2, k)),
        "volume_share": float(rng.choice([0.05, 0.1, 0.2])),
    }
    share = rng.integers(3)
    kw["fraction"] = None if share == 0 else np.ones(k) if share == 1 else rng.uniform(0.3, 1.0, k)
    kw["volume"] = volume if rng.random() < 0.6 else None
    return (open_, high, low, close), random_targets(rng, n, k), kw


def column(a, p):
    return a if a is None or a.ndim == 1 else a[:, p]


def reference_of(prices, targets, kw, p, events=None) -> Reference:
    open_, high, low, close = (column(a, p) for a in prices)
    terms = {key: kw[key] for key in ("cash", "commission", "fractional", "slippage_bps", "volume_share")}
    return reference(open_, high, low, close, targets[:, p], column(kw["volume"], p), **terms,
                     stop_loss=kw["stop_loss"][p], take_profit=kw["take_profit"][p],
                     fraction=None if kw["fraction"] is None else kw["fraction"][p], events=events)


def run(prices, targets, kw) -> BacktestResult:
    open_, high, low, close = prices
    return simulate(open_, close, targets, high=high, low=low, **kw)


SEEDS = range(40)


@pytest.mark.parametrize("seed", SEEDS)
def test_simulate_matches_the_reference_on_random_markets(seed):
    prices, targets, kw = random_case(seed)
    together = run(prices, targets, kw)
    for p in range(targets.shape[1]):
        ref = reference_of(prices, targets, kw, p)
        assert_matches(together, p, ref, cash=kw["cash"], fractional=kw["fractional"])
        # and each strategy alone (the engine's one-strategy path)
        alone_kw = {**kw, "stop_loss": kw["stop_loss"][p], "take_profit": kw["take_profit"][p],
                    "fraction": None if kw["fraction"] is None else kw["fraction"][p],
                    "volume": column(kw["volume"], p)}
        alone = run(tuple(column(a, p) for a in prices), targets[:, p], alone_kw)
        assert_matches(alone, 0, ref, cash=kw["cash"], fractional=kw["fractional"])


def test_the_random_cases_reach_every_rule():
    """The seeds above are only worth something if they exercise each rule: count the events in the reference."""
    events: Counter = Counter()
    capped = fractional_capped = 0
    for seed in SEEDS:
        prices, targets, kw = random_case(seed)
        capped += kw["volume"] is not None
        fractional_capped += kw["volume"] is not None and kw["fractional"]
        for p in range(targets.shape[1]):
            reference_of(prices, targets, kw, p, events)
    assert capped >= 10 and fractional_capped >= 3
    for name in ("reversal", "order cancels a working order", "close still working", "opening still working",
                 "order too small", "level passed over", ("gap", STOP_LOSS), ("gap", TAKE_PROFIT),
                 "gap take-profit with the stop in range", "stop and take in one bar", "exit cancels the rest to buy",
                 "entry and exit in one later bar", ("exit", STOP_LOSS), ("exit", TAKE_PROFIT), "bankrupt holding",
                 "bankrupt flat"):
        assert events[name] >= 3, (name, events)


# ---------------------------------------------------------------- tiny cases by hand


def hand(prices, targets, **kw):
    """simulate on one strategy, checked against the reference too (so the hand numbers pin both)."""
    open_, high, low, close = (np.asarray(a, dtype=float) for a in prices)
    targets = np.asarray(targets, dtype=float)
    r = simulate(open_, close, targets, high=high, low=low, **kw)
    sl, tp = kw.get("stop_loss"), kw.get("take_profit")
    ref = reference(open_, high, low, close, targets, kw.get("volume"), cash=kw.get("cash", 10_000.0),
                    commission=kw.get("commission", 0.0), fractional=kw.get("fractional", False),
                    slippage_bps=kw.get("slippage_bps", 0.0), stop_loss=math.nan if sl is None else sl,
                    take_profit=math.nan if tp is None else tp, fraction=kw.get("fraction"),
                    volume_share=kw.get("volume_share", 0.1))
    assert_matches(r, 0, ref, cash=kw.get("cash", 10_000.0), fractional=kw.get("fractional", False))
    return r, ref


def fill_rows(r):
    return r.fills[:, [0, 2, 3, 4]].tolist()


def test_hand_reversal_with_commission():
    # c = 1%, cash 1000, opens 10, 10, 10, 20, 20, 20; closes 10, 10, 12, 20, 18, 20; targets 1, 1, -1, -1, 0, 0.
    # bar 1: long 1000 f // (10 + 0.1) = 99.0 -> 99 at 10, fee 9.9: cash 990.1; close 10: equity 990.1
    # bar 2: close 12: equity 990.1 + 99 * 2 = 1188.1
    # bar 3 (reversal at 20): sell 99: P&L 990, fee 19.8 -> cash 1960.3 (round trip 990 - 9.9 - 19.8 > 0: a win);
    #        short 1960.3 f // 20.2 = 97.04 -> 97 at 20, fee 19.4 -> cash 1940.9; equity 1940.9
    # bar 4: close 18: equity 1940.9 - 97 * (18 - 20) = 2134.9
    # bar 5: cover 97 at 20: P&L 0, fee 19.4 -> cash 1921.5 (round trip -38.8: no win)
    # traded value 990 + 1980 + 1940 + 1940 = 6850
    prices = ([10, 10, 10, 20, 20, 20], [10.5, 10.5, 12.5, 20.5, 20.5, 20.5], [9.5, 9.5, 9.5, 17.5, 17.5, 17.5],
              [10, 10, 12, 20, 18, 20])
    r, _ = hand(prices, [1, 1, -1, -1, 0, 0], cash=1000.0, commission=0.01)
    assert fill_rows(r) == [[1, 99, 10, ORDER], [3, -99, 20, ORDER], [3, -97, 20, ORDER], [5, 97, 20, ORDER]]
    assert r.units[:, 0].tolist() == [0, 99, 99, -97, -97, 0]
    assert r.cash[:, 0] == pytest.approx([1000, 990.1, 990.1, 1940.9, 1940.9, 1921.5], rel=1e-12)
    assert r.equity[:, 0] == pytest.approx([1000, 990.1, 1188.1, 1940.9, 2134.9, 1921.5], rel=1e-12)
    assert (r.trades[0], r.wins[0]) == (2, 1) and r.traded_value[0] == pytest.approx(6850, rel=1e-12)


def test_hand_capped_reversal_level_passed_over_then_gap_stop():
    # volume share 1, cash 1000, short stop 10% measured from the order bar's open (bar 3: 10 -> level 11).
    # opens 10, 10, 10, 10, 10.5, 10, 11.2, 11 (closes the same); volumes 1000 except bar 3: 50, bar 4: 30.
    # bar 1: long 1000 f // 10 = 99 at 10.  targets turn -1 at bar 2's close: the order bar is 3.
    # bar 3: sell 50 at 10 (49 left); bar 4: sell 30 at 10.5 (+15; cash 1015; 19 left). Bar 4's high 11.5 reaches
    #        the short's stop while the long still closes: passed over. equity 1015 + 19 * 0.5 = 1024.5
    # bar 5: sell 19 at 10: the round trip made +15, a win. Sized now: 1015 f // 10 = 101, short 101 at 10 (981 of
    #        capacity left); bar 5's high 10.5 stays below 11.
    # bar 6: opens at 11.2, through 11: bought back at that open: -101 * 1.2 = -121.2 -> cash 893.8
    open_ = [10, 10, 10, 10, 10.5, 10, 11.2, 11]
    high = [10.5, 10.5, 10.5, 10.5, 11.5, 10.5, 11.7, 11.5]
    low = [9.5, 9.5, 9.5, 9.5, 10.0, 9.5, 10.7, 10.5]
    r, _ = hand((open_, high, low, open_), [1, 1, -1, -1, -1, -1, -1, -1], cash=1000.0, stop_loss=0.1,
                volume=np.array([1000, 1000, 1000, 50, 30, 1000, 1000, 1000.0]), volume_share=1.0)
    assert fill_rows(r) == [[1, 99, 10, ORDER], [3, -50, 10, ORDER], [4, -30, 10.5, ORDER], [5, -19, 10, ORDER],
                            [5, -101, 10, ORDER], [6, 101, 11.2, STOP_LOSS]]
    assert r.units[:, 0].tolist() == [0, 99, 99, 49, 19, -101, 0, 0]
    assert r.equity[:, 0] == pytest.approx([1000, 1000, 1000, 1000, 1024.5, 1015, 893.8, 893.8], rel=1e-12)
    assert (r.trades[0], r.wins[0]) == (2, 1)


def test_hand_short_bankrupt_on_a_jump_with_commission():
    # c = 1%, cash 100: short 100 f // 10.1 = 9 at 10, fee 0.9 -> cash 99.1. Bar 2 closes at 25 (x2.5):
    # equity 99.1 - 9 * 15 = -35.9 <= 0: bought back at the close 25 (no slippage), a losing round trip, cash and
    # equity 0 from there; the long order of bar 3 never fills.
    prices = ([10, 10, 10, 25, 25], [10.5, 10.5, 25.5, 25.5, 25.5], [9.5, 9.5, 9.5, 24.5, 24.5], [10, 10, 25, 25, 25])
    r, _ = hand(prices, [-1, -1, 1, 1, 1], cash=100.0, commission=0.01, slippage_bps=20)
    # with 20 bp slippage the short sells at 9.98 instead: 100 f // (9.98 + 0.0998) = 9.92 -> still 9 units
    assert fill_rows(r) == [[1, -9, 10 * (1 - 0.002), ORDER], [2, 9, 25, BANKRUPT]]
    assert r.units[:, 0].tolist() == [0, -9, 0, 0, 0]
    assert r.cash[:, 0].tolist()[2:] == [0, 0, 0] and r.equity[:, 0].tolist()[2:] == [0, 0, 0]
    assert r.equity[1, 0] == pytest.approx(100 - 0.01 * 9 * 9.98 - 9 * (10 - 9.98), rel=1e-12)  # marked at 10
    assert (r.trades[0], r.wins[0]) == (1, 0)


def test_hand_gap_through_take_profit_beats_the_stop_in_the_same_bar():
    # long 9 at 10 (cash 100), stop 10% (9) and take 10% (11). Bar 2 opens at 11.5, through the take-profit, and
    # its range (8.5-12) also reaches the stop: the take-profit fills at the open 11.5 (the documented departure
    # from backtesting.py): cash 100 + 9 * 1.5
    prices = ([10, 10, 11.5, 10, 10], [10.5, 10.5, 12, 10.5, 10.5], [9.5, 9.5, 8.5, 9.5, 9.5], [10, 10, 10, 10, 10])
    r, _ = hand(prices, [1, 1, 1, 1, 1], cash=100.0, stop_loss=0.1, take_profit=0.1)
    assert fill_rows(r) == [[1, 9, 10, ORDER], [2, -9, 11.5, TAKE_PROFIT]]
    assert r.equity[-1, 0] == 100 + 9 * 1.5 and (r.trades[0], r.wins[0]) == (1, 1)


def test_hand_both_levels_inside_one_bar_take_the_stop_first_fractional():
    # fractional: 100 f / 10 = 9.999999999999998 units at 10; bar 2 opens at 10 and reaches 8.5 and 12: the stop
    # (9) is assumed first: cash 100 - 9.999999999999998 * 1, i.e. 90 to rounding
    prices = ([10, 10, 10, 10], [10.5, 10.5, 12, 10.5], [9.5, 9.5, 8.5, 9.5], [10, 10, 10, 10])
    r, _ = hand(prices, [1, 1, 1, 1], cash=100.0, fractional=True, stop_loss=0.1, take_profit=0.1)
    assert r.fills[:, 4].tolist() == [ORDER, STOP_LOSS] and r.fills[1, 3] == 9
    assert r.fills[0, 2] == 100 * FULL / 10
    assert r.equity[-1, 0] == pytest.approx(90, rel=1e-12) and (r.trades[0], r.wins[0]) == (1, 0)


def test_hand_capped_order_is_sized_at_its_order_bar_and_filled_later():
    # decision 1: no volume on the order bar (open 10): 1000 f // 10 = 99 units are sized there, then filled at
    # bar 2's open 20 (99 * 20 = 1980 of notional from 1000 of cash: no margin is modelled)
    open_ = [10, 10, 20, 20, 20]
    r, _ = hand((open_, open_, open_, open_), [1, 1, 1, 1, 1], cash=1000.0,
                volume=np.array([100, 0, 100, 100, 100.0]), volume_share=1.0)
    assert fill_rows(r) == [[2, 99, 20, ORDER]]


def test_hand_capped_first_fill_on_a_gap_through_the_stop_exits_at_that_open():
    # decision 2: the order bar 1 has no volume; bar 2 opens at 8.5, below the stop 9 (10% off the order bar's
    # open 10): 1 unit (15 // 10) is bought at 8.5 and sold at the same open (a round trip of 0: no win)
    open_ = [10, 10, 8.5, 9, 9]
    r, _ = hand((open_, [10.5, 10.5, 10.5, 10.5, 10.5], [9.5, 9.5, 8.5, 8.5, 8.5], open_), [1, 1, 1, 1, 1],
                cash=15.0, stop_loss=0.1, volume=np.array([5, 0, 5, 5, 5.0]), volume_share=1.0)
    assert fill_rows(r) == [[2, 1, 8.5, ORDER], [2, -1, 8.5, STOP_LOSS]]
    assert (r.trades[0], r.wins[0]) == (1, 0)


def test_hand_capped_new_order_closes_a_same_direction_remainder_first():
    # decision 3: long 3 (35 // 10) at 10; flat from bar 3, 1 unit of capacity on bar 3 (2 left); long again at
    # bar 4 (open 5, capacity 5): sells the 2 at 5 (-10: cash 25; the round trip lost), then 25 f // 5 = 4 units
    # are sized, 3 bought on bar 4 with the capacity left and 1 on bar 5
    open_ = [10, 10, 10, 10, 5, 5, 5]
    r, _ = hand((open_, open_, open_, open_), [1, 1, 0, 1, 1, 1, 1], cash=35.0,
                volume=np.array([5, 5, 5, 1, 5, 5, 5.0]), volume_share=1.0)
    assert fill_rows(r) == [[1, 3, 10, ORDER], [3, -1, 10, ORDER], [4, -2, 5, ORDER], [4, 3, 5, ORDER],
                            [5, 1, 5, ORDER]]
    assert r.units[:, 0].tolist() == [0, 3, 3, 2, 3, 4, 4] and (r.trades[0], r.wins[0]) == (1, 0)


def test_hand_reversal_from_negative_cash_is_cancelled_and_bankrupt():
    # decision 5: short 9 (100 // 10) at 10; bar 3 opens at 25: covered there, cash 100 - 135 = -35; the long is
    # sized from -35: no unit, cancelled; flat with cash <= 0 at the close: bankrupt, no fill
    prices = ([10, 10, 10, 25, 25, 25], [10.5, 10.5, 20.5, 26.5, 25.5, 25.5], [9.5, 9.5, 9.5, 24.5, 24.5, 24.5],
              [10, 10, 20, 26, 25, 25])
    r, _ = hand(prices, [-1, -1, 1, 1, 1, 1], cash=100.0)
    assert fill_rows(r) == [[1, -9, 10, ORDER], [3, 9, 25, ORDER]]
    assert r.equity[:, 0].tolist() == [100, 100, 10, 0, 0, 0] and r.cash[:, 0].tolist()[3:] == [0, 0, 0]


def test_hand_stop_level_measured_from_the_slipped_entry_fill():
    # 100 bp slippage: bought at 10 * 1.01 = 10.1, 1000 f // 10.1 = 99 units; the stop 10% is 10.1 * 0.9 = 9.09
    # (from the raw open it would be 9, which bar 2's low 9.05 does not reach); sold at 9.09 * 0.99 = 8.9991:
    # cash 1000 + 99 * (8.9991 - 10.1) = 891.0109
    open_ = [10, 10, 10, 10, 10]
    prices = (open_, [10.5] * 5, [9.5, 9.5, 9.05, 9.5, 9.5], open_)
    r, _ = hand(prices, [1, 1, 1, 1, 1], cash=1000.0, slippage_bps=100, stop_loss=0.1)
    assert r.fills[:, [0, 2, 4]].tolist() == [[1, 99, ORDER], [2, -99, STOP_LOSS]]
    assert r.fills[:, 3] == pytest.approx([10.1, 8.9991], rel=1e-12)
    assert r.equity[:, 0] == pytest.approx([1000, 990.1, 891.0109, 891.0109, 891.0109], rel=1e-12)
