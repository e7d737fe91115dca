"""Edge cases of the backtest engine, each worked out by hand on a few bars from the rules in the module
docstring: exact touches of stop and take-profit levels, slippage on every kind of fill, commissions in the
win count, one-unit positions, exactly-zero equity, volume caps of one unit, defaults and validation.

Most cases run twice: one strategy alone (the engine's one-strategy path) and as two identical columns
of a population (the vectorised rounds); both must give the hand-computed result.
"""

import dataclasses

import numpy as np
import pytest

from emp_core.backtest.engine import BANKRUPT, ORDER, STOP_LOSS, TAKE_PROFIT, simulate

pytestmark = pytest.mark.usefixtures("both_engines")  # every test on the NumPy engine and the kernel


def both(open_, close, targets, **kw):
    """The run of ``targets`` alone and as two identical columns of a population: [(result, column)]."""
    targets = np.asarray(targets, dtype=float)
    alone = simulate(open_, close, targets, **kw)
    pair = {k: (np.array([v, v]) if k in ("stop_loss", "take_profit", "fraction") and v is not None else v)
            for k, v in kw.items()}
    together = simulate(open_, close, np.column_stack([targets, targets]), **pair)
    return [(alone, 0), (together, 0), (together, 1)]


def fills_of(r, p):
    """Column p's fills as lists [bar, units, price, kind]."""
    rows = r.fills[r.fills[:, 1] == p]
    return rows[:, [0, 2, 3, 4]].tolist()


# ---------------------------------------------------------------- fill kinds, result type


def test_fill_kinds_are_the_documented_codes_and_the_result_is_frozen():
    assert (ORDER, STOP_LOSS, TAKE_PROFIT, BANKRUPT) == (0, 1, 2, 3)
    open_ = np.full(4, 10.0)
    r = simulate(open_, open_, [1, 1, 0, 0], cash=100.0)
    assert r.fills[:, 4].tolist() == [0, 0]
    assert r.final_equity.tolist() == [100.0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.equity = r.cash  # type: ignore[misc]


# ---------------------------------------------------------------- stops touched exactly

# Entry at bar 1's open 8 (12 units from 100: 100 // 8 = 12.5); levels 25% away: 6 and 10, exact in binary.
FLAT8 = np.full(5, 8.0)
LONG5 = np.array([1, 1, 1, 1, 1], dtype=float)


def levels_run(direction, high2, low2, open2=8.0, **kw):
    open_ = FLAT8.copy()
    open_[2] = open2
    high = np.array([8.5, 8.5, high2, 8.5, 8.5])
    low = np.array([7.5, 7.5, low2, 7.5, 7.5])
    return both(open_, FLAT8, direction * LONG5, cash=100.0, high=high, low=low, **kw)


@pytest.mark.parametrize("direction", [1, -1])
def test_a_stop_level_touched_exactly_is_hit(direction):
    # long: stop 8 * 0.75 = 6, bar 2's low is exactly 6; short: stop 8 * 1.25 = 10, bar 2's high exactly 10
    runs = levels_run(direction, high2=10.0 if direction < 0 else 8.5, low2=6.0 if direction > 0 else 7.5,
                      stop_loss=0.25)
    level = 6.0 if direction > 0 else 10.0
    for r, p in runs:
        assert fills_of(r, p) == [[1, 12 * direction, 8.0, ORDER], [2, -12 * direction, level, STOP_LOSS]]
        assert r.units[:, p].tolist() == [0, 12 * direction, 0, 0, 0]
        assert r.equity[-1, p] == 100 - 24  # 12 units lose 2 each
        assert (r.trades[p], r.wins[p]) == (1, 0)


@pytest.mark.parametrize("direction", [1, -1])
def test_a_take_profit_level_touched_exactly_is_hit(direction):
    # long: take 10, bar 2's high exactly 10; short: take 6, bar 2's low exactly 6
    runs = levels_run(direction, high2=10.0 if direction > 0 else 8.5, low2=6.0 if direction < 0 else 7.5,
                      take_profit=0.25)
    level = 10.0 if direction > 0 else 6.0
    for r, p in runs:
        assert fills_of(r, p) == [[1, 12 * direction, 8.0, ORDER], [2, -12 * direction, level, TAKE_PROFIT]]
        assert r.equity[-1, p] == 100 + 24
        assert (r.trades[p], r.wins[p]) == (1, 1)


@pytest.mark.parametrize("direction", [1, -1])
@pytest.mark.parametrize(("at", "kind", "equity"), [("take", TAKE_PROFIT, 124), ("stop", STOP_LOSS, 76)])
def test_an_open_exactly_at_a_level_fills_there_even_if_the_bar_then_reaches_the_other(direction, at, kind, equity):
    # bar 2 opens exactly at the take-profit (10 long, 6 short) or the stop (6 long, 10 short), and its range also
    # reaches the other level: the open is the bar's first trade, and it has reached that level
    take, stop = (10.0, 6.0) if direction > 0 else (6.0, 10.0)
    level = take if at == "take" else stop
    runs = levels_run(direction, high2=10.5, low2=5.5, open2=level, stop_loss=0.25, take_profit=0.25)
    for r, p in runs:
        assert fills_of(r, p) == [[1, 12 * direction, 8.0, ORDER], [2, -12 * direction, level, kind]]
        assert r.equity[-1, p] == equity


def test_a_stop_of_the_next_position_is_not_booked_for_the_one_before():
    # long 99 at 10 from bar 1 (stop 9, never reached), reversed at bar 3 to short 99 at 10 (stop 11),
    # whose stop is hit on bar 4's high
    open_ = np.full(6, 10.0)
    high = np.array([10.5, 10.5, 10.5, 10.5, 11.5, 10.5])
    low = np.full(6, 9.5)
    for r, p in both(open_, open_, [1, 1, -1, -1, -1, -1], cash=1000.0, high=high, low=low, stop_loss=0.1):
        assert fills_of(r, p) == [[1, 99, 10, ORDER], [3, -99, 10, ORDER], [3, -99, 10, ORDER],
                                  [4, 99, 11, STOP_LOSS]]
        assert r.units[:, p].tolist() == [0, 99, 99, -99, 0, 0]
        assert r.equity[-1, p] == 1000 - 99


# ---------------------------------------------------------------- slippage: buys higher, sells lower

SLIP_OPEN = np.full(5, 10.0)
SLIP_HIGH_STOP = np.array([10.5, 10.5, 12.0, 10.5, 10.5])  # reaches a short's stop (10.89) on bar 2
SLIP_LOW_STOP = np.array([9.5, 9.5, 8.0, 9.5, 9.5])  # reaches a long's stop (9.09) on bar 2
QUIET_HIGH, QUIET_LOW = np.full(5, 10.5), np.full(5, 9.5)


def test_slippage_on_a_long_and_its_stop_exit():
    # buy at 10 * 1.01 = 10.1: 1000 // 10.1 = 99 units; stop 10.1 * 0.9 = 9.09, sold at 9.09 * 0.99
    for r, p in both(SLIP_OPEN, SLIP_OPEN, LONG5, cash=1000.0, slippage_bps=100, high=QUIET_HIGH,
                     low=SLIP_LOW_STOP, stop_loss=0.1):
        f = fills_of(r, p)
        assert [row[0] for row in f] == [1, 2] and [row[1] for row in f] == [99, -99]
        assert [row[2] for row in f] == pytest.approx([10.1, 9.09 * 0.99])
        assert f[1][3] == STOP_LOSS
        assert r.equity[-1, p] == pytest.approx(1000 + 99 * (9.09 * 0.99 - 10.1))


def test_slippage_on_a_short_and_its_stop_exit():
    # sell short at 10 * 0.99 = 9.9: 1000 // 9.9 = 101 units; stop 9.9 * 1.1 = 10.89, bought at 10.89 * 1.01
    for r, p in both(SLIP_OPEN, SLIP_OPEN, -LONG5, cash=1000.0, slippage_bps=100, high=SLIP_HIGH_STOP,
                     low=QUIET_LOW, stop_loss=0.1):
        f = fills_of(r, p)
        assert [row[0] for row in f] == [1, 2] and [row[1] for row in f] == [-101, 101]
        assert [row[2] for row in f] == pytest.approx([9.9, 10.89 * 1.01])
        assert r.equity[-1, p] == pytest.approx(1000 - 101 * (10.89 * 1.01 - 9.9))


@pytest.mark.parametrize("direction", [1, -1])
def test_slippage_on_a_take_profit_exit(direction):
    # long: entry 10.1, take 10.1 * 1.1 = 11.11 sold at 11.11 * 0.99; short: entry 9.9, take 9.9 * 0.9 = 8.91
    # bought at 8.91 * 1.01
    entry, n = (10.1, 99) if direction > 0 else (9.9, 101)
    take = entry * (1 + 0.1 * direction)
    exit_price = take * (1 - 0.01 * direction)
    high = SLIP_HIGH_STOP if direction > 0 else QUIET_HIGH
    low = QUIET_LOW if direction > 0 else SLIP_LOW_STOP
    for r, p in both(SLIP_OPEN, SLIP_OPEN, direction * LONG5, cash=1000.0, slippage_bps=100, high=high, low=low,
                     take_profit=0.1):
        f = fills_of(r, p)
        assert [row[2] for row in f] == pytest.approx([entry, exit_price])
        assert f[1][3] == TAKE_PROFIT
        assert r.equity[-1, p] == pytest.approx(1000 + direction * n * (exit_price - entry))


def test_slippage_on_a_reversal_and_a_cover():
    open_ = np.array([10.0, 11.0, 12.0, 10.0, 9.0, 10.0])
    # bar 1: buy 90 at 11.11 (1000 // 11.11); bar 3: sell them at 9.9 -> cash 1000 + 90 (9.9 - 11.11) = 891.1,
    # then short 891.1 // 9.9 = 90 at 9.9; bar 5: buy them back at 10.1 -> cash 891.1 - 90 * 0.2 = 873.1
    for r, p in both(open_, open_, [1, 1, -1, -1, 0, 0], cash=1000.0, slippage_bps=100):
        f = fills_of(r, p)
        assert [row[0] for row in f] == [1, 3, 3, 5] and [row[1] for row in f] == [90, -90, -90, 90]
        assert [row[2] for row in f] == pytest.approx([11.11, 9.9, 9.9, 10.1])
        assert r.cash[-1, p] == pytest.approx(873.1)
        assert (r.trades[p], r.wins[p]) == (2, 0)


def test_one_unit_long_with_slippage():
    # 15 // 10.1 = 1 unit bought at 10.1, sold at 9.9
    open_ = np.full(4, 10.0)
    for r, p in both(open_, open_, [1, 1, 0, 0], cash=15.0, slippage_bps=100):
        f = fills_of(r, p)
        assert [row[1] for row in f] == [1, -1]
        assert [row[2] for row in f] == pytest.approx([10.1, 9.9])
        assert r.units[:, p].tolist() == [0, 1, 1, 0]
        assert r.equity[:, p].tolist() == pytest.approx([15, 15 - 0.1, 15 - 0.1, 15 - 0.2])


# ---------------------------------------------------------------- commissions and the win count


def test_a_trade_whose_gross_exactly_pays_both_commissions_is_not_a_win():
    # commission 0.5: 1 unit (20 // 15) bought at 10 (commission 5), sold at 30 on bar 3 (commission 15):
    # P&L 20 - 20 = 0
    open_ = np.array([10.0, 10.0, 10.0, 30.0])
    for r, p in both(open_, open_, [1, 1, 0, 0], cash=20.0, commission=0.5):
        assert fills_of(r, p) == [[1, 1, 10, ORDER], [3, -1, 30, ORDER]]
        assert r.cash[:, p].tolist() == [20, 15, 15, 20]
        assert (r.trades[p], r.wins[p]) == (1, 0)


def test_a_trade_that_nets_half_a_unit_of_money_is_a_win():
    # as above, sold at 31: P&L 21 - 5 - 15.5 = 0.5
    open_ = np.array([10.0, 10.0, 10.0, 31.0])
    for r, p in both(open_, open_, [1, 1, 0, 0], cash=20.0, commission=0.5):
        assert r.cash[-1, p] == 20.5
        assert (r.trades[p], r.wins[p]) == (1, 1)


def test_a_trade_that_nets_half_a_unit_of_loss_is_not_a_win():
    # sold at 29: P&L 19 - 5 - 14.5 = -0.5
    open_ = np.array([10.0, 10.0, 10.0, 29.0])
    for r, p in both(open_, open_, [1, 1, 0, 0], cash=20.0, commission=0.5):
        assert r.cash[-1, p] == 19.5
        assert (r.trades[p], r.wins[p]) == (1, 0)


# ---------------------------------------------------------------- sizing limits


def test_too_little_cash_books_no_fill_at_all():
    open_ = np.full(4, 10.0)
    for r, p in both(open_, open_, [1, 1, -1, -1], cash=5.0):
        assert fills_of(r, p) == []
        assert r.units[:, p].tolist() == [0, 0, 0, 0] and r.equity[:, p].tolist() == [5, 5, 5, 5]
        assert r.trades[p] == 0 and r.traded_value[p] == 0


def test_a_fraction_of_exactly_one_is_the_default_all_of_equity():
    # all of 1000 is 1000 * (1 - 2.2e-16) // 10 = 99 units, not 100
    open_ = np.full(3, 10.0)
    for fraction in (None, 1.0):
        for r, p in both(open_, open_, [1, 1, 1], cash=1000.0, fraction=fraction):
            assert r.units[:, p].tolist() == [0, 99, 99]
    mixed = simulate(open_, open_, np.ones((3, 2)), cash=1000.0, fraction=np.array([1.0, 0.5]))
    assert mixed.units[1].tolist() == [99, 50]  # 500 // 10


def test_nan_targets_mean_flat():
    open_ = np.full(5, 10.0)
    for r, p in both(open_, open_, [np.nan, 1, np.nan, np.nan, np.nan], cash=100.0):
        assert r.units[:, p].tolist() == [0, 0, 9, 0, 0]
        assert fills_of(r, p) == [[2, 9, 10, ORDER], [3, -9, 10, ORDER]]


# ---------------------------------------------------------------- bankruptcy at exactly zero


def test_equity_of_exactly_zero_is_bankrupt():
    # short 1 unit (15 // 10) at 10; bar 2 closes at 25: equity 15 - (25 - 10) = 0 -> liquidated at 25,
    # and the strategy holds nothing and trades no more (bar 3's close would have given equity 5)
    open_ = np.array([10.0, 10.0, 20.0, 20.0, 20.0])
    close = np.array([10.0, 12.0, 25.0, 20.0, 15.0])
    for r, p in both(open_, close, [-1, -1, -1, 1, 1], cash=15.0):
        assert fills_of(r, p) == [[1, -1, 10, ORDER], [2, 1, 25, BANKRUPT]]
        assert r.equity[:, p].tolist() == [15, 13, 0, 0, 0]
        assert r.cash[:, p].tolist() == [15, 15, 0, 0, 0]
        assert r.units[:, p].tolist() == [0, -1, 0, 0, 0]
        assert (r.trades[p], r.wins[p]) == (1, 0)


def test_equity_just_above_zero_is_not_bankrupt():
    # as above with bar 2's close at 24.5: equity 0.5, the short lives on and bar 3's close gives 5
    open_ = np.array([10.0, 10.0, 20.0, 20.0, 20.0])
    close = np.array([10.0, 12.0, 24.5, 20.0, 15.0])
    for r, p in both(open_, close, [-1, -1, -1, -1, -1], cash=15.0):
        assert fills_of(r, p) == [[1, -1, 10, ORDER]]
        assert r.equity[:, p].tolist() == [15, 13, 0.5, 5, 10]


# ---------------------------------------------------------------- fills table and populations


def test_the_fills_table_is_sorted_by_bar_then_strategy():
    open_ = np.full(5, 10.0)
    targets = np.column_stack([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]).astype(float)
    r = simulate(open_, open_, targets, cash=100.0)
    assert r.fills[:, :2].tolist() == [[1, 1], [2, 2], [3, 0]]


def test_a_population_wider_than_the_number_of_bars():
    # 3 bars, 4 strategies: strategy 0 orders for bar 2, strategy 3 for bar 1
    open_ = np.full(3, 10.0)
    targets = np.zeros((3, 4))
    targets[1:, 0] = 1
    targets[:, 3] = 1
    r = simulate(open_, open_, targets, cash=1000.0)
    assert r.units[:, 0].tolist() == [0, 0, 99]
    assert r.units[:, 3].tolist() == [0, 99, 99]
    assert (r.units[:, 1:3] == 0).all()


# ---------------------------------------------------------------- volume caps


def capped(open_, targets, caps, **kw):
    """One strategy with exactly ``caps`` units of capacity per bar (volume share 1)."""
    return simulate(open_, open_, np.asarray(targets, dtype=float), volume=np.asarray(caps, dtype=float),
                    volume_share=1.0, **kw)


def test_the_default_volume_share_is_a_tenth():
    open_ = np.full(3, 10.0)
    r = simulate(open_, open_, np.ones(3), volume=np.full(3, 200.0))  # default cash 10,000: 999 wanted
    assert r.units[:, 0].tolist() == [0, 20, 40]


def test_the_default_cash_is_ten_thousand():
    open_ = np.full(3, 10.0)
    r = simulate(open_, open_, np.ones(3))
    assert r.units[:, 0].tolist() == [0, 999, 999] and r.equity[:, 0].tolist() == [10_000] * 3


def test_a_capped_entry_one_unit_a_bar_with_its_commissions_in_the_win_count():
    # commission 0.1: 25 // 11 = 2 units, 1 at bar 1 and 1 at bar 2 (commission 1 each); sold at 12 on bar 4
    # (commission 2.4): P&L 4 - 2 - 2.4 = -0.4, not a win
    open_ = np.array([10.0, 10.0, 10.0, 10.0, 12.0, 12.0])
    r = capped(open_, [1, 1, 1, 0, 0, 0], [5, 1, 1, 5, 5, 5], cash=25.0, commission=0.1)
    assert fills_of(r, 0) == [[1, 1, 10, ORDER], [2, 1, 10, ORDER], [4, -2, 12, ORDER]]
    assert r.units[:, 0].tolist() == [0, 1, 2, 2, 0, 0]
    assert r.cash[-1, 0] == pytest.approx(24.6)
    assert (r.trades[0], r.wins[0]) == (1, 0)


def test_a_capped_exit_one_unit_a_bar_counts_the_whole_trade():
    # 2 units at 10, sold 1 at 8 (bar 3) and 1 at 11 (bar 4): P&L -1, not a win although the last part gains
    open_ = np.array([10.0, 10.0, 10.0, 8.0, 11.0, 11.0])
    r = capped(open_, [1, 1, 0, 0, 0, 0], [5, 5, 5, 1, 1, 5], cash=25.0)
    assert fills_of(r, 0) == [[1, 2, 10, ORDER], [3, -1, 8, ORDER], [4, -1, 11, ORDER]]
    assert r.units[:, 0].tolist() == [0, 2, 2, 1, 0, 0]
    assert r.cash[-1, 0] == 24
    assert (r.trades[0], r.wins[0]) == (1, 0)


def test_the_next_order_cancels_what_is_left_and_books_nothing_more():
    # 90 wanted (1000 // 11): 20 at 11, 30 at 12; the flat order at bar 3 cancels the 40 left
    open_ = np.array([10.0, 11.0, 12.0, 10.0, 9.0, 10.0])
    r = capped(open_, [1, 1, 0, 0, 0, 0], [100, 20, 30, 100, 100, 100], cash=1000.0)
    assert fills_of(r, 0) == [[1, 20, 11, ORDER], [2, 30, 12, ORDER], [3, -50, 10, ORDER]]
    assert r.traded_value[0] == 20 * 11 + 30 * 12 + 50 * 10


def test_a_middle_order_works_over_several_bars_until_the_next():
    # long 2 (25 // 10) at bar 1; flat from bar 3, one unit a bar (bars 3 and 4); long 2 again at bar 5
    open_ = np.full(7, 10.0)
    r = capped(open_, [1, 1, 0, 0, 1, 1, 1], [5, 5, 5, 1, 1, 5, 5], cash=25.0)
    assert r.units[:, 0].tolist() == [0, 2, 2, 1, 0, 2, 2]
    assert fills_of(r, 0) == [[1, 2, 10, ORDER], [3, -1, 10, ORDER], [4, -1, 10, ORDER], [5, 2, 10, ORDER]]
    assert r.trades[0] == 1


def capped_stop(stop_bar: int, volume: list[int], cash: float):
    """Five bars open at 10 with a range of 9.5-10.5, a long target throughout and a 10% stop (9), whose low
    reaches 8.5 (the stop) on ``stop_bar`` only; ``volume`` caps the fills (volume_share of the capped runs)."""
    low = np.full(5, 9.5)
    low[stop_bar] = 8.5
    return capped(np.full(5, 10.0), np.ones(5), volume, cash=cash, high=np.full(5, 10.5), low=low, stop_loss=0.1)


def test_a_capped_stop_while_still_buying_cancels_the_rest():
    # 3 units wanted (35 // 10), 1 a bar; stop 9 reached on bar 2 after its unit: both sold at 9
    r = capped_stop(stop_bar=2, volume=[5, 1, 1, 1, 5], cash=35.0)
    assert fills_of(r, 0) == [[1, 1, 10, ORDER], [2, 1, 10, ORDER], [2, -2, 9, STOP_LOSS]]
    assert r.units[:, 0].tolist() == [0, 1, 0, 0, 0]
    assert r.equity[-1, 0] == 33


def test_a_capped_stop_on_the_entry_bar_with_one_unit_held():
    r = capped_stop(stop_bar=1, volume=[5, 1, 1, 1, 5], cash=35.0)
    assert fills_of(r, 0) == [[1, 1, 10, ORDER], [1, -1, 9, STOP_LOSS]]
    assert r.units[:, 0].tolist() == [0, 0, 0, 0, 0]
    assert r.equity[-1, 0] == 34


def test_a_capped_one_unit_position_takes_its_later_stop():
    # 15 // 10 = 1 unit, filled on bar 1; the stop 9 is reached on bar 3
    r = capped_stop(stop_bar=3, volume=[5, 5, 5, 5, 5], cash=15.0)
    assert fills_of(r, 0) == [[1, 1, 10, ORDER], [3, -1, 9, STOP_LOSS]]
    assert r.units[:, 0].tolist() == [0, 1, 1, 0, 0]
    assert (r.trades[0], r.wins[0]) == (1, 0)


def test_a_capped_order_too_small_for_a_unit_ignores_its_stop():
    r = capped_stop(stop_bar=2, volume=[5, 5, 5, 5, 5], cash=5.0)
    assert r.fills.shape == (0, 5)
    assert r.trades[0] == 0 and (r.equity[:, 0] == 5).all()


def test_a_stop_reached_while_a_capped_reversal_still_closes_is_not_booked_before_the_entry():
    # long 99 at 10; reversed at bar 3, the close takes 50, 30, then 19 units (bars 3-5); the short of 99 opens
    # on bar 5. Its stop 11 (from the order bar's open) is reached on bar 4, before the short exists: no stop
    # fill may precede the short's entry.
    open_ = np.full(7, 10.0)
    high = np.array([10.5, 10.5, 10.5, 10.5, 11.5, 10.5, 10.5])
    r = capped(open_, [1, 1, -1, -1, -1, -1, -1], [1000, 1000, 1000, 50, 30, 1000, 1000], cash=1000.0,
               high=high, low=np.full(7, 9.5), stop_loss=0.1)
    f = fills_of(r, 0)
    assert f[:5] == [[1, 99, 10, ORDER], [3, -50, 10, ORDER], [4, -30, 10, ORDER], [5, -19, 10, ORDER],
                     [5, -99, 10, ORDER]]
    assert all(row[0] >= 5 for row in f[5:])
    assert r.units[5, 0] == -99



TWO_TOUCHES = np.array([9.5, 8.5, 9.5, 8.5, 9.5])  # lows: the stop 9 is reached on bars 1 and 3


@pytest.mark.parametrize("volume", [[5, 0, 5, 5, 5], [5, 0, 0, 5, 5]])
def test_a_capped_stop_reached_before_any_fill_still_guards_the_position_built_later(volume):
    # the order (bar 1) finds no volume on bar 1, whose low reaches the stop 9 while nothing is held; 1 unit
    # (15 // 10) fills on bar 2 (or at bar 3's open, the bar of the second touch): the stop sells it on bar 3 at 9
    r = capped(np.full(5, 10.0), np.ones(5), volume, cash=15.0, high=np.full(5, 10.5), low=TWO_TOUCHES,
               stop_loss=0.1)
    entry = 2 if volume[2] else 3
    assert fills_of(r, 0) == [[entry, 1, 10, ORDER], [3, -1, 9, STOP_LOSS]]
    assert r.units[:, 0].tolist() == [0, 0, 0, 0, 0][:entry] + [1] * (3 - entry) + [0, 0]
    assert (r.trades[0], r.wins[0]) == (1, 0) and r.equity[-1, 0] == 14


def test_a_capped_stop_passed_over_rearms_at_the_next_gap_through_its_level():
    # as above, but bar 3 opens at 8.8, below the stop 9: the exit fills at that open
    open_ = np.array([10.0, 10.0, 10.0, 8.8, 9.0])
    r = capped(open_, np.ones(5), [5, 0, 5, 5, 5], cash=15.0, high=np.full(5, 10.5), low=TWO_TOUCHES,
               stop_loss=0.1)
    assert fills_of(r, 0) == [[2, 1, 10, ORDER], [3, -1, 8.8, STOP_LOSS]]


def test_a_capped_take_profit_reached_before_any_fill_still_takes_the_later_one():
    high = np.array([10.5, 11.5, 10.5, 11.5, 10.5])  # the take-profit 11 is reached on bars 1 and 3
    r = capped(np.full(5, 10.0), np.ones(5), [5, 0, 5, 5, 5], cash=15.0, high=high, low=np.full(5, 9.5),
               take_profit=0.1)
    assert fills_of(r, 0) == [[2, 1, 10, ORDER], [3, -1, 11, TAKE_PROFIT]]
    assert (r.trades[0], r.wins[0]) == (1, 1)


def test_a_capped_stop_passed_over_is_not_carried_past_the_next_order():
    # the stop is passed over on bar 1 and reached again on bar 3, but the target goes flat at bar 2's close:
    # the order of bar 3 (sell) ends the first one's window, so no stop fill, and the sale is an order
    r = capped(np.full(5, 10.0), [1, 1, 0, 0, 0], [5, 0, 5, 5, 5], cash=15.0, high=np.full(5, 10.5),
               low=TWO_TOUCHES, stop_loss=0.1)
    assert fills_of(r, 0) == [[2, 1, 10, ORDER], [3, -1, 10, ORDER]]


def test_a_stop_reached_while_a_capped_reversal_closes_guards_the_short_once_it_exists():
    # the reversal's short stop 11 is reached on bar 4 while the long still closes (passed over), and again on
    # bar 6, when the short of 99 (opened on bar 5) exists: the stop buys it back there at 11
    open_ = np.full(8, 10.0)
    high = np.array([10.5, 10.5, 10.5, 10.5, 11.5, 10.5, 11.5, 10.5])
    r = capped(open_, [1, 1, -1, -1, -1, -1, -1, -1], [1000, 1000, 1000, 50, 30, 1000, 1000, 1000],
               cash=1000.0, high=high, low=np.full(8, 9.5), stop_loss=0.1)
    assert fills_of(r, 0)[-2:] == [[5, -99, 10, ORDER], [6, 99, 11, STOP_LOSS]]
    assert r.units[:, 0].tolist() == [0, 99, 99, 49, 19, -99, 0, 0]


def test_vectorised_capped_columns_rearm_their_stops_independently():
    # column 0 meets the passed-over stop above; column 1 has volume on bar 1, fills there and stops out on bar 1
    open_ = np.full(5, 10.0)
    volume = np.array([[5, 5], [0, 5], [5, 5], [5, 5], [5, 5]], dtype=float)
    r = simulate(open_, open_, np.ones((5, 2)), volume=volume, volume_share=1.0, cash=15.0,
                 high=np.full(5, 10.5), low=TWO_TOUCHES, stop_loss=0.1)
    assert fills_of(r, 0) == [[2, 1, 10, ORDER], [3, -1, 9, STOP_LOSS]]
    assert fills_of(r, 1) == [[1, 1, 10, ORDER], [1, -1, 9, STOP_LOSS]]



def test_a_capped_stop_rearmed_into_the_bust_bar_fills_before_the_liquidation():
    # short 1 unit at 10 (cash 15) on bar 2, its stop 11 passed over on bar 1 (no volume); bar 3 opens at 30,
    # through the stop: bought back at that open, cash 15 - 20 = -5 at bar 3's close, bankrupt there. The stop
    # inside the bar comes first: no liquidation at the close (32), and nothing is held or owed from bar 3 on
    open_ = np.array([10.0, 10.0, 10.0, 30.0, 30.0])
    close = np.array([10.0, 10.0, 10.0, 32.0, 32.0])
    r = simulate(open_, close, -np.ones(5), volume=np.array([5.0, 0, 5, 5, 5]), volume_share=1.0, cash=15.0,
                 high=np.array([10.5, 11.5, 10.5, 33.0, 33.0]), low=np.array([9.5, 9.5, 9.5, 29.0, 29.0]),
                 stop_loss=0.1)
    assert fills_of(r, 0) == [[2, -1, 10, ORDER], [3, 1, 30, STOP_LOSS]]
    assert r.equity[:, 0].tolist() == [15, 15, 15, 0, 0] and r.trades[0] == 1



def test_a_capped_stop_passed_over_on_the_next_to_last_bar_rearms_onto_the_last():
    # no volume on bars 1-3, whose bar 3 reaches the stop 9 with nothing held; 1 unit fills on bar 4, the last,
    # which reaches the stop again: sold there at 9
    low = np.array([9.5, 9.5, 9.5, 8.5, 8.5])
    r = capped(np.full(5, 10.0), np.ones(5), [5, 0, 0, 0, 5], cash=15.0, high=np.full(5, 10.5), low=low,
               stop_loss=0.1)
    assert fills_of(r, 0) == [[4, 1, 10, ORDER], [4, -1, 9, STOP_LOSS]]


def test_bankrupt_while_a_capped_reversal_still_closes_liquidates_the_rest_at_the_close():
    # short 99 at 10 (cash 1000); reversed to long at bar 3: the buy-back takes 50 at 10 (bar 3), then 30 at the
    # open of bar 4, which jumps to 40 (loss 900, cash 100); 19 short remain: marked at 40 the equity is
    # 100 - 19 * 30 = -470, bankrupt at bar 4's close. The long's take-profit 11 is reached in bar 4 while the
    # short still closes (passed over, the bar is the last the order may work): the 19 are liquidated at the
    # close, 40, and nothing is held or owed from bar 4 on
    open_ = np.array([10.0, 10.0, 10.0, 10.0, 40.0, 40.0])
    r = simulate(open_, open_, np.array([-1, -1, 1, 1, 1, 1.0]), volume=np.array([1000, 1000, 1000, 50, 30, 1000.0]),
                 volume_share=1.0, cash=1000.0, high=np.array([10.5, 10.5, 10.5, 10.5, 41.0, 41.0]),
                 low=np.array([9.5, 9.5, 9.5, 9.5, 39.0, 39.0]), take_profit=0.1)
    assert fills_of(r, 0) == [[1, -99, 10, ORDER], [3, 50, 10, ORDER], [4, 30, 40, ORDER], [4, 19, 40, BANKRUPT]]
    assert r.units[:, 0].tolist() == [0, -99, -99, -49, 0, 0]
    assert r.equity[:, 0].tolist() == [1000, 1000, 1000, 1000, 0, 0] and r.trades[0] == 1


# ---------------------------------------------------------------- validation


def test_prices_of_the_wrong_shape_are_refused():
    open_ = np.full(5, 10.0)
    with pytest.raises(ValueError, match="open prices have shape"):
        simulate(open_, np.full(4, 10.0), np.ones(4))  # open has 5 bars, targets 4
    with pytest.raises(ValueError, match="close prices have shape"):
        simulate(open_, np.full((5, 3), 10.0), np.ones((5, 2)))  # 3 columns for 2 strategies


def test_levels_and_fractions_of_zero_are_refused():
    open_ = np.full(3, 10.0)
    for kw in ({"stop_loss": 0.0}, {"take_profit": 0.0}, {"fraction": 0.0}):
        with pytest.raises(ValueError, match="positive fraction"):
            simulate(open_, open_, np.ones(3), high=open_, low=open_, **kw)


@pytest.mark.parametrize("given", ["high", "low"])
def test_stops_with_only_one_of_high_and_low_are_refused(given):
    open_ = np.full(3, 10.0)
    with pytest.raises(ValueError, match="high and low"):
        simulate(open_, open_, np.ones(3), stop_loss=0.1, **{given: open_})
