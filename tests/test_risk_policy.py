"""The pre-trade risk policy (emp_core/risk/policy.py) and position sizing (emp_core/risk/sizing.py).

Every expected figure is computed here by hand from the definitions in the module docstring (units x
prices / equity, written out), never through the module's helpers. Each limit check is probed exactly
at its limit (passes, with a warning), a hair over it (fails), inside its warning band (warns) and
just below the band (passes). Rule checks (strategy, paper-only, restricted list, stop-loss) have no
warning band: they pass or fail.
"""

import math
from dataclasses import replace
from fractions import Fraction

import numpy as np
import polars as pl
import pytest

from emp_core.config import REPO_ROOT
from emp_core.errors import EmpError
from emp_core.risk import (
    CHECKS,
    Intent,
    Limits,
    Policy,
    PolicyError,
    Portfolio,
    RiskInputError,
    StrategyRule,
    evaluate,
    fixed_fractional_units,
    fractional_kelly_units,
    kelly_fraction,
    load_policy,
)

SHIPPED = REPO_ROOT / "policies" / "default-v1.yaml"
EQUITY = 100_000.0
# The documented order, written out (not imported): a reordering of the module is a failure here.
ORDER = ["strategy_enabled", "paper_only", "confidence_floor", "restricted_list", "stop_loss", "position_size",
         "per_trade_risk", "aggregate_exposure", "leverage", "drawdown", "daily_drawdown", "open_positions",
         "liquidity"]
LOOSE = Limits(min_confidence=0.0, max_risk_per_trade=1.0, max_exposure=1_000.0, max_leverage=1_000.0,
               max_drawdown=1.0, max_daily_drawdown=1.0, min_order_notional=0.0, max_order_notional=1e12,
               mandatory_stop_loss=False, max_open_positions=1_000, max_adv_share=1.0)
STRATEGIES = {"alpha": StrategyRule(enabled=True, paper_only=False),
              "paper": StrategyRule(enabled=True, paper_only=True),
              "off": StrategyRule(enabled=False, paper_only=False)}


def policy(**limits) -> Policy:
    """Every limit loose except the ones given, so a decision turns on the check under test alone."""
    return Policy("test-v1", STRATEGIES, replace(LOOSE, **limits), warn_at=0.8)


def book(equity=EQUITY, *, peak=None, day=None, positions=None, prices=None, stops=None, adv=None) -> Portfolio:
    positions = positions or {}
    prices = prices if prices is not None else dict.fromkeys(positions, 100.0)
    adv = adv if adv is not None else {"ACME": 1e9}
    return Portfolio(equity=equity, peak_equity=peak or max(equity, 1.0), day_start_equity=day or max(equity, 1.0),
                     positions=positions, prices=prices, adv=adv, stops=stops or {})


def order(side, quantity, *, stop=None, price=100.0, symbol="ACME", strategy="alpha", confidence=0.9, limit=None):
    return Intent(strategy=strategy, symbol=symbol, side=side, quantity=quantity,
                  order_type="limit" if limit is not None else "market", reference_price=price,
                  confidence=confidence, stop_price=stop, limit_price=limit)


def buy(quantity, **kw):
    return order("buy", quantity, **kw)


def sell(quantity, **kw):
    return order("sell", quantity, **kw)


def assert_verdict(decision, name, verdict, value=None, *, alone=True):
    """The row's verdict and value; with ``alone`` (every other limit loose) the decision turns on this row."""
    r = decision.check(name)
    assert r.verdict == verdict, r.reason
    if value is not None:
        assert r.value == pytest.approx(value, rel=1e-12)
    if alone:
        assert decision.approved is (verdict != "fail"), decision.reason
        assert decision.failed == ((name,) if verdict == "fail" else ())
    if verdict == "fail":
        assert not decision.approved and decision.reason.startswith(f"refused by {decision.failed[0]}")
    return r


# ---------------------------------------------------------------------------------------------- 1-2 strategy


def test_a_disabled_or_unknown_strategy_is_refused_and_an_enabled_one_passes():
    d = evaluate(buy(10, strategy="off"), book(), policy(), "paper")
    assert not d.approved and d.reason.startswith("refused by strategy_enabled")
    assert d.check("strategy_enabled").verdict == "fail"
    unknown = evaluate(buy(10, strategy="ghost"), book(), policy(), "paper")
    assert not unknown.approved and "not in policy test-v1" in unknown.check("strategy_enabled").reason
    ok = evaluate(buy(10), book(), policy(), "live")
    assert ok.approved and ok.check("strategy_enabled").verdict == "pass"


def test_a_paper_only_strategy_trades_on_paper_and_is_refused_live():
    on_paper = evaluate(buy(10, strategy="paper"), book(), policy(), "paper")
    assert on_paper.approved
    assert on_paper.check("paper_only").verdict == "pass"
    live = evaluate(buy(10, strategy="paper"), book(), policy(), "live")
    assert not live.approved
    assert live.failed == ("paper_only",)
    assert live.reason.startswith("refused by paper_only") and "live" in live.reason
    # an unrestricted strategy passes the check live; an unknown one counts as paper-only
    assert evaluate(buy(10), book(), policy(), "live").check("paper_only").verdict == "pass"
    assert evaluate(buy(10, strategy="ghost"), book(), policy(), "live").failed == ("strategy_enabled", "paper_only")


def test_a_paper_only_strategy_cannot_even_close_live():
    held = book(positions={"ACME": 100})
    assert evaluate(sell(100, strategy="paper"), held, policy(), "live").failed == ("paper_only",)
    assert evaluate(sell(100, strategy="off"), held, policy(), "paper").failed == ("strategy_enabled",)


def test_the_session_must_be_paper_or_live():
    with pytest.raises(RiskInputError, match="session"):
        evaluate(buy(10), book(), policy(), "demo")


# ---------------------------------------------------------------------------------------------- 3 confidence


@pytest.mark.parametrize(("confidence", "verdict"), [
    (0.6, "warn"),  # exactly at the floor: passes, inside the band (floor / warn_at = 0.75)
    (0.5999, "fail"),  # a hair under the floor
    (0.7, "warn"),  # inside the band
    (0.745, "warn"),  # just inside
    (0.75, "warn"),  # exactly floor / warn_at: the floor is warn_at x the value
    (0.751, "pass"),  # just outside
])
def test_confidence_floor(confidence, verdict):
    d = evaluate(buy(10, confidence=confidence), book(), policy(min_confidence=0.6), "paper")
    r = assert_verdict(d, "confidence_floor", verdict, confidence)
    assert r.limit == 0.6
    assert d.approved is (verdict != "fail")


def test_a_zero_confidence_floor_passes_zero_confidence():
    d = evaluate(buy(10, confidence=0.0), book(), policy(min_confidence=0.0), "paper")
    assert d.check("confidence_floor").verdict == "pass" and d.approved


# ---------------------------------------------------------------------------------------------- 4 restricted


def test_restricted_symbols_refuse_new_exposure_but_allow_a_close():
    p = policy(restricted=frozenset({"ACME"}))
    opening = evaluate(buy(10), book(), p, "paper")
    assert opening.failed == ("restricted_list",)
    held = book(positions={"ACME": 500})
    assert evaluate(sell(500), held, p, "paper").approved  # close
    assert evaluate(sell(200), held, p, "paper").approved  # reduce
    reversal = evaluate(sell(501), held, p, "paper")  # one unit short afterwards: new exposure
    assert reversal.failed == ("restricted_list",)
    adding = evaluate(buy(1), held, p, "paper")
    assert adding.failed == ("restricted_list",)
    assert evaluate(buy(10, symbol="OTHER"), book(adv={"OTHER": 1e9}), p, "paper").approved


# ---------------------------------------------------------------------------------------------- 5 stop-loss


@pytest.mark.parametrize(("intent", "verdict"), [
    (buy(10, stop=99.99), "pass"),  # just below the entry of a buy
    (buy(10, stop=100.0), "fail"),  # at the entry: not protective
    (buy(10, stop=100.01), "fail"),
    (buy(10), "fail"),  # missing
    (sell(10, stop=100.01), "pass"),  # just above the entry of a sell
    (sell(10, stop=99.99), "fail"),
    (buy(10, stop=94.99, limit=95.0), "pass"),  # a limit order's entry is its limit price
    (buy(10, stop=96.0, limit=95.0), "fail"),  # below the reference price 100 but above the entry 95
])
def test_mandatory_stop_loss_on_the_protective_side_of_the_entry(intent, verdict):
    d = evaluate(intent, book(), policy(mandatory_stop_loss=True), "paper")
    r = d.check("stop_loss")
    assert r.verdict == verdict, r.reason
    assert r.limit == (95.0 if intent.order_type == "limit" else 100.0)
    assert d.approved is (verdict == "pass")


def test_without_a_mandatory_stop_a_missing_stop_passes_but_a_wrong_one_fails():
    p = policy(mandatory_stop_loss=False)
    assert evaluate(buy(10), book(), p, "paper").check("stop_loss").verdict == "pass"
    assert evaluate(buy(10, stop=101.0), book(), p, "paper").failed == ("stop_loss",)


# ---------------------------------------------------------------------------------------------- 6 size bounds


@pytest.mark.parametrize(("quantity", "verdict", "limit"), [
    (500, "warn", 50_000.0),  # 500 x 100 = 50,000: exactly the maximum
    (501, "fail", 50_000.0),  # 50,100
    (450, "warn", 50_000.0),  # 45,000 >= 0.8 x 50,000
    (400, "warn", 50_000.0),  # 40,000: exactly the warning level
    (399, "pass", 50_000.0),  # 39,900
    (10, "pass", 50_000.0),  # 1,000: exactly the minimum
    (9, "fail", 1_000.0),  # 900: under the minimum, which is the limit it is compared with
])
def test_position_size_bounds(quantity, verdict, limit):
    d = evaluate(buy(quantity), book(), policy(min_order_notional=1_000.0, max_order_notional=50_000.0), "paper")
    r = assert_verdict(d, "position_size", verdict, quantity * 100.0)
    assert r.limit == limit


def test_position_size_uses_the_limit_price_and_only_the_new_units():
    p = policy(max_order_notional=50_000.0)
    # a limit buy at 100 with the last price at 120: 500 x 100 is at the maximum, 500 x 120 would be over
    assert evaluate(buy(500, price=120.0, limit=100.0), book(), p, "paper").check("position_size").verdict == "warn"
    held = book(positions={"ACME": 300})
    assert_verdict(evaluate(sell(800), held, p, "paper"), "position_size", "warn", (800 - 300) * 100.0)
    assert_verdict(evaluate(sell(801), held, p, "paper"), "position_size", "fail", (801 - 300) * 100.0)


# ---------------------------------------------------------------------------------------------- 7 per-trade risk


@pytest.mark.parametrize(("quantity", "verdict"), [
    (1000, "warn"),  # 1,000 x (100 - 98) / 100,000 = 2%: at the limit
    (1001, "fail"),
    (850, "warn"),  # 1.7%
    (800, "warn"),  # 1.6% = 0.8 x 2%: the warning level
    (799, "pass"),
])
def test_per_trade_risk_of_a_buy(quantity, verdict):
    d = evaluate(buy(quantity, stop=98.0), book(), policy(max_risk_per_trade=0.02), "paper")
    r = assert_verdict(d, "per_trade_risk", verdict, quantity * (100.0 - 98.0) / EQUITY)
    assert r.limit == 0.02


@pytest.mark.parametrize(("quantity", "verdict"), [(1000, "warn"), (1001, "fail"), (900, "warn"), (700, "pass")])
def test_per_trade_risk_of_a_short(quantity, verdict):
    d = evaluate(sell(quantity, stop=102.0), book(), policy(max_risk_per_trade=0.02), "paper")
    assert_verdict(d, "per_trade_risk", verdict, quantity * (102.0 - 100.0) / EQUITY)


@pytest.mark.parametrize(("quantity", "verdict"), [(1000, "warn"), (1001, "fail")])
def test_per_trade_risk_of_a_limit_order_is_measured_from_its_limit_price(quantity, verdict):
    # from the reference price 100 the distance to 88 would be 12: 12% of equity, far over the limit
    d = evaluate(buy(quantity, stop=88.0, limit=90.0), book(), policy(max_risk_per_trade=0.02), "paper")
    assert_verdict(d, "per_trade_risk", verdict, quantity * (90.0 - 88.0) / EQUITY)


@pytest.mark.parametrize(("quantity", "stop", "verdict"), [(20, None, "warn"), (21, None, "fail"),
                                                           (20, 101.0, "warn"), (21, 101.0, "fail")])
def test_without_a_protective_stop_the_whole_notional_is_at_risk(quantity, stop, verdict):
    d = evaluate(buy(quantity, stop=stop), book(), policy(max_risk_per_trade=0.02), "paper")
    assert_verdict(d, "per_trade_risk", verdict, quantity * 100.0 / EQUITY, alone=stop is None)
    assert d.check("stop_loss").verdict == ("pass" if stop is None else "fail")


def test_per_trade_risk_counts_only_the_new_units():
    p = policy(max_risk_per_trade=0.02)
    held = book(positions={"ACME": 5000})
    assert_verdict(evaluate(buy(1000, stop=98.0), held, p, "paper"), "per_trade_risk", "warn", 0.02)
    # a reversal: 300 long, sell 1,300 -> close 300, open 1,000 short, risked to its stop at 102
    long300 = book(positions={"ACME": 300})
    assert_verdict(evaluate(sell(1300, stop=102.0), long300, p, "paper"), "per_trade_risk", "warn",
                   1000 * (102.0 - 100.0) / EQUITY)
    assert_verdict(evaluate(sell(1301, stop=102.0), long300, p, "paper"), "per_trade_risk", "fail",
                   1001 * (102.0 - 100.0) / EQUITY)


# ---------------------------------------------------------------------------------------------- 8 exposure (heat)

HEAT_BOOK = dict(
    positions={"XYZ": 1000, "QQQ": 200, "ZZZ": -100, "WWW": 100},
    prices={"XYZ": 50.0, "QQQ": 100.0, "ZZZ": 50.0, "WWW": 20.0},
    # XYZ long with its stop 10 below; QQQ: no stop known; ZZZ short with its stop 10 above;
    # WWW long whose stop (25) is above the last price: already passed, protects nothing
    stops={"XYZ": 40.0, "ZZZ": 60.0, "WWW": 25.0},
)
HEAT_BEFORE = 1000 * (50 - 40) + 200 * 100 + 100 * (60 - 50) + 100 * 20  # 33,000


@pytest.mark.parametrize(("quantity", "verdict"), [
    (1700, "warn"),  # 33,000 + 1,700 x 10 = 50,000: 50% of equity, at the limit
    (1701, "fail"),
    (1000, "warn"),  # 43%
    (700, "warn"),  # 40%: the warning level
    (699, "pass"),
])
def test_aggregate_exposure_is_open_risk_to_stops(quantity, verdict):
    d = evaluate(buy(quantity, stop=90.0), book(**HEAT_BOOK), policy(max_exposure=0.5), "paper")
    r = assert_verdict(d, "aggregate_exposure", verdict, (HEAT_BEFORE + quantity * (100 - 90)) / EQUITY)
    assert r.limit == 0.5


def test_heat_of_the_intent_symbol_keeps_the_held_part_and_drops_what_a_reversal_closes():
    p = policy(max_exposure=0.5)
    held = book(positions={"ACME": 1000}, stops={"ACME": 95.0})
    adding = evaluate(buy(500, stop=90.0), held, p, "paper")
    assert adding.check("aggregate_exposure").value == pytest.approx((1000 * 5 + 500 * 10) / EQUITY)
    reversing = evaluate(sell(1500, stop=110.0), held, p, "paper")
    assert reversing.check("aggregate_exposure").value == pytest.approx(500 * 10 / EQUITY)
    # without a known stop the held part counts at its full notional
    unknown = evaluate(buy(500, stop=90.0), book(positions={"ACME": 1000}), p, "paper")
    assert unknown.check("aggregate_exposure").value == pytest.approx((1000 * 100 + 500 * 10) / EQUITY)
    assert unknown.failed == ("aggregate_exposure",)


# ---------------------------------------------------------------------------------------------- 9 leverage

LEVERED = dict(positions={"QQQ": 3000, "ZZZ": -2000}, prices={"QQQ": 100.0, "ZZZ": 100.0})  # gross 500,000


@pytest.mark.parametrize(("quantity", "verdict"), [
    (5000, "warn"),  # (500,000 + 500,000) / 100,000 = 10x: the limit
    (5001, "fail"),
    (4000, "warn"),  # 9x
    (3000, "warn"),  # 8x: the warning level
    (2999, "pass"),
])
def test_leverage_is_gross_notional_after_the_order(quantity, verdict):
    d = evaluate(buy(quantity, stop=99.0), book(**LEVERED), policy(max_leverage=10.0), "paper")
    r = assert_verdict(d, "leverage", verdict, (3000 * 100 + 2000 * 100 + quantity * 100) / EQUITY)
    assert r.limit == 10.0


def test_a_reversal_is_levered_on_its_remainder_only():
    p = policy(max_leverage=10.0)
    held = book(positions={"QQQ": 3000, "ZZZ": -2000, "ACME": 3000})
    # sell 8,000 of a 3,000 long: 5,000 short afterwards
    assert_verdict(evaluate(sell(8000, stop=101.0), held, p, "paper"), "leverage", "warn",
                   (300_000 + 200_000 + 5000 * 100) / EQUITY)
    assert_verdict(evaluate(sell(8001, stop=101.0), held, p, "paper"), "leverage", "fail",
                   (300_000 + 200_000 + 5001 * 100) / EQUITY)


def test_exposure_and_leverage_limits_each_bind_where_the_other_does_not():
    """With the shipped limits (50% heat, 10x): tight stops reach the leverage limit long before the heat
    limit, wide stops the heat limit long before the leverage limit."""
    shipped = load_policy(SHIPPED)
    tight = book(positions={"X": 9500}, stops={"X": 99.0}, adv={"ACME": 1e6})  # 9.5x, heat 9.5%
    d = evaluate(buy(1000, stop=99.0, strategy="sma_cross"), tight, shipped, "live")
    assert d.failed == ("leverage",)
    assert d.check("leverage").value == pytest.approx((9500 * 100 + 1000 * 100) / EQUITY)  # 10.5x
    assert d.check("aggregate_exposure").value == pytest.approx((9500 * 1 + 1000 * 1) / EQUITY)  # 10.5%
    wide = book(positions={"X": 1000, "Y": 1450}, stops={"X": 80.0, "Y": 80.0}, adv={"ACME": 1e6})  # 2.45x, 49%
    d = evaluate(buy(150, stop=90.0, strategy="sma_cross"), wide, shipped, "live")
    assert d.failed == ("aggregate_exposure",)
    assert d.check("aggregate_exposure").value == pytest.approx((1000 * 20 + 1450 * 20 + 150 * 10) / EQUITY)
    assert d.check("leverage").value == pytest.approx((1000 + 1450 + 150) * 100 / EQUITY)  # 2.6x


# ---------------------------------------------------------------------------------------------- 10-11 drawdown


@pytest.mark.parametrize(("equity", "verdict"), [
    (75_000.0, "warn"),  # (100,000 - 75,000) / 100,000 = 25%: the limit
    (74_999.0, "fail"),
    (79_000.0, "warn"),  # 21%
    (80_000.0, "warn"),  # 20% = 0.8 x 25%
    (80_001.0, "pass"),
])
def test_drawdown_from_peak(equity, verdict):
    d = evaluate(buy(10, stop=98.0), book(equity, peak=100_000.0, day=equity), policy(max_drawdown=0.25), "paper")
    r = assert_verdict(d, "drawdown", verdict, (100_000.0 - equity) / 100_000.0)
    assert r.limit == 0.25


@pytest.mark.parametrize(("equity", "verdict"), [
    (95_000.0, "warn"),  # (100,000 - 95,000) / 100,000 = 5%: the limit
    (94_999.0, "fail"),
    (95_500.0, "warn"),  # 4.5%
    (96_001.0, "pass"),  # 3.999% < 4%
])
def test_daily_drawdown_from_the_start_of_the_day(equity, verdict):
    d = evaluate(buy(10, stop=98.0), book(equity, peak=200_000.0, day=100_000.0),
                 policy(max_daily_drawdown=0.05), "paper")
    assert_verdict(d, "daily_drawdown", verdict, (100_000.0 - equity) / 100_000.0)
    assert d.check("drawdown").value == pytest.approx((200_000.0 - equity) / 200_000.0)  # its own base


# ---------------------------------------------------------------------------------------------- 12 open positions


@pytest.mark.parametrize(("held", "symbol", "cap", "verdict", "count"), [
    ({"A": 10, "B": -5}, "ACME", 3, "warn", 3),  # a third position: the cap
    ({"A": 10, "B": -5, "C": 7}, "ACME", 3, "fail", 4),  # a fourth
    ({"A": 10, "B": -5, "C": 7}, "C", 3, "warn", 3),  # adding to a held one opens nothing
    ({"A": 10, "B": -5, "Z": 0}, "ACME", 3, "warn", 3),  # a zero position is not open
    ({s: 1 for s in "ABCDEFG"}, "ACME", 10, "warn", 8),  # 8 >= 0.8 x 10
    ({s: 1 for s in "ABCDEF"}, "ACME", 10, "pass", 7),
])
def test_open_positions_cap(held, symbol, cap, verdict, count):
    d = evaluate(buy(10, stop=98.0, symbol=symbol), book(positions=held, adv={symbol: 1e9}),
                 policy(max_open_positions=cap), "paper")
    r = assert_verdict(d, "open_positions", verdict, count)
    assert r.limit == cap


# ---------------------------------------------------------------------------------------------- 13 liquidity


@pytest.mark.parametrize(("quantity", "verdict"), [
    (1000, "warn"),  # 1,000 / 100,000 = 1%: the limit
    (1001, "fail"),
    (850, "warn"),
    (800, "warn"),  # 0.8%: the warning level
    (799, "pass"),
])
def test_liquidity_cap_on_average_daily_volume(quantity, verdict):
    d = evaluate(buy(quantity, stop=98.0), book(adv={"ACME": 100_000.0}), policy(max_adv_share=0.01), "paper")
    r = assert_verdict(d, "liquidity", verdict, quantity / 100_000.0)
    assert r.limit == 0.01


def test_liquidity_unknown_refuses_new_exposure_and_only_warns_on_a_close():
    p = policy(max_adv_share=0.01)
    for adv in ({}, {"ACME": 0.0}):
        assert evaluate(buy(10, stop=98.0), book(adv=adv), p, "paper").failed == ("liquidity",)
        closing = evaluate(sell(10), book(positions={"ACME": 10}, adv=adv), p, "paper")
        assert closing.approved and closing.check("liquidity").verdict == "warn"
    big_close = evaluate(sell(5000), book(positions={"ACME": 5000}, adv={"ACME": 100_000.0}), p, "paper")
    assert big_close.approved
    r = big_close.check("liquidity")
    assert r.verdict == "warn" and r.value == pytest.approx(0.05)


# ---------------------------------------------------------------------------------------------- closing in breach

STRICT = Limits(min_confidence=0.5, max_risk_per_trade=0.02, max_exposure=0.5, max_leverage=10.0, max_drawdown=0.25,
                max_daily_drawdown=0.05, min_order_notional=1_000.0, max_order_notional=50_000.0,
                mandatory_stop_loss=True, max_open_positions=1, max_adv_share=0.01, restricted=frozenset({"ACME"}))


def breached_book(**kw) -> Portfolio:
    """Equity 60,000: 40% below its peak, 14.3% below the day's start; 800,000 gross (13.3x) with no stops
    (heat 1,333%); two positions against a cap of one."""
    return book(60_000.0, peak=100_000.0, day=70_000.0, positions={"ACME": 5000, "QQQ": 3000},
                adv={"ACME": 10_000_000.0}, **kw)


@pytest.mark.parametrize("intent", [
    sell(5000, confidence=0.0),  # the whole long: 500,000 notional, ten times the maximum order
    sell(5, confidence=0.0),  # 500 notional: under the minimum
    sell(2500, confidence=0.0, stop=120.0, limit=99.0),  # a stop on the wrong side is irrelevant to a close
])
def test_a_reducing_order_passes_every_risk_increasing_check_in_breach(intent):
    p = Policy("strict-v1", STRATEGIES, STRICT)
    d = evaluate(intent, breached_book(), p, "live")
    assert d.approved, d.reason
    assert [c.verdict for c in d.checks] == ["pass"] * 13
    # the breach is still on record, with its figures
    assert d.check("drawdown").value == pytest.approx(0.4)
    assert d.check("daily_drawdown").value == pytest.approx((70_000 - 60_000) / 70_000)
    remaining = 5000 - intent.quantity
    assert d.check("leverage").value == pytest.approx((3000 * 100 + remaining * 100) / 60_000)
    assert d.check("aggregate_exposure").value == pytest.approx((3000 * 100 + remaining * 100) / 60_000)
    assert d.check("per_trade_risk").value == 0.0
    assert d.check("open_positions").value == (1 if remaining == 0 else 2)  # QQQ, and ACME unless closed


def test_a_short_cover_is_a_reduction_too():
    p = Policy("strict-v1", STRATEGIES, replace(STRICT, restricted=frozenset()))
    short = book(60_000.0, peak=100_000.0, day=70_000.0, positions={"ACME": -5000, "QQQ": 3000},
                 adv={"ACME": 10_000_000.0})
    assert evaluate(buy(5000, confidence=0.0), short, p, "live").approved
    assert not evaluate(buy(5001, confidence=0.0, stop=90.0), short, p, "live").approved


def test_a_reversal_in_breach_is_judged_on_its_remainder():
    p = Policy("strict-v1", STRATEGIES, replace(STRICT, restricted=frozenset()))
    d = evaluate(sell(5100, stop=110.0, confidence=0.9), breached_book(), p, "live")
    assert not d.approved
    # the remainder is 100 short, risked 10 each: per-trade risk 1,000 / 60,000, not 5,100 units' worth
    assert d.check("per_trade_risk").value == pytest.approx(100 * 10 / 60_000)
    assert d.check("per_trade_risk").verdict == "warn"  # 1.67% >= 0.8 x 2%
    assert d.check("position_size").value == pytest.approx(100 * 100.0)
    assert d.check("leverage").value == pytest.approx((300_000 + 100 * 100) / 60_000)
    assert d.check("aggregate_exposure").value == pytest.approx((300_000 + 100 * 10) / 60_000)
    assert d.failed == ("aggregate_exposure", "drawdown", "daily_drawdown", "open_positions")
    assert d.reason.startswith("refused by aggregate_exposure")


# ---------------------------------------------------------------------------------------------- the decision


def test_every_check_runs_in_the_documented_order_and_the_first_failure_is_the_reason():
    p = Policy("strict-v1", STRATEGIES, STRICT)
    d = evaluate(buy(2000, strategy="off", confidence=0.1), breached_book(), p, "live")
    assert [c.check for c in d.checks] == ORDER == list(CHECKS)
    assert d.failed[0] == "strategy_enabled"
    assert set(d.failed) == {"strategy_enabled", "confidence_floor", "restricted_list", "stop_loss", "position_size",
                             "per_trade_risk", "aggregate_exposure", "leverage", "drawdown", "daily_drawdown",
                             "open_positions"}
    assert d.reason.startswith("refused by strategy_enabled: strategy 'off' is disabled")
    assert d.check("liquidity").value == pytest.approx(2000 / 10_000_000)  # measured although refused long before
    # the first failure is named even when it comes late in the order
    two = evaluate(buy(3000, stop=98.0), book(positions={"QQQ": 8000}),
                   policy(max_risk_per_trade=0.02, max_leverage=10.0), "paper")
    assert two.failed == ("per_trade_risk", "leverage")
    assert two.reason.startswith("refused by per_trade_risk") and "leverage" in two.reason


def test_reasons_carry_the_figures():
    d = evaluate(buy(1001, stop=98.0), book(), policy(max_risk_per_trade=0.02), "paper")
    reason = d.check("per_trade_risk").reason
    for figure in ("2.002%", "1,001", "100.00", "98.00", "100,000.00", "2.000%", "exceeds"):
        assert figure in reason


def test_the_decision_as_rows_and_frame():
    d = evaluate(buy(850, stop=98.0), book(), policy(max_risk_per_trade=0.02), "paper")
    rows = d.as_rows()
    assert len(rows) == 13 and [r["step"] for r in rows] == list(range(1, 14))
    assert {r["policy_version"] for r in rows} == {"test-v1"}
    frame = d.frame()
    assert frame.height == 13
    assert frame.schema["value"] == pl.Float64 and frame.schema["verdict"] == pl.String
    assert frame["check"].to_list() == ORDER
    assert frame.filter(pl.col("check") == "per_trade_risk")["verdict"].item() == "warn"
    assert frame["approved"].unique().to_list() == [True]
    assert set(frame.columns) >= {"policy_version", "check", "value", "limit", "verdict", "reason"}


@pytest.mark.parametrize("equity", [0.0, -5_000.0])
def test_nonpositive_equity_refuses_risk_but_not_a_close(equity):
    p = policy(max_risk_per_trade=0.02, max_exposure=0.5, max_leverage=10.0)
    d = evaluate(buy(1, stop=98.0), book(equity, peak=100_000.0, day=100_000.0), p, "paper")
    assert not d.approved
    for name in ("per_trade_risk", "aggregate_exposure", "leverage"):
        r = d.check(name)
        assert r.verdict == "fail" and r.value is None and "not positive" in r.reason
    assert d.check("drawdown").value == pytest.approx((100_000.0 - equity) / 100_000.0)
    held = book(equity, peak=100_000.0, day=100_000.0, positions={"ACME": 10})
    assert evaluate(sell(10), held, p, "paper").approved


# ---------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("kwargs", [
    {"confidence": math.nan}, {"confidence": 1.5}, {"reference_price": math.inf}, {"reference_price": 0.0},
    {"stop_price": math.nan}, {"quantity": 1.5}, {"quantity": 0}, {"quantity": True}, {"side": "short"},
    {"order_type": "stop"}, {"order_type": "limit"}, {"limit_price": 99.0}, {"strategy": ""},
])
def test_an_intent_that_cannot_be_judged_is_a_clear_error(kwargs):
    base = {"strategy": "alpha", "symbol": "ACME", "side": "buy", "quantity": 10, "order_type": "market",
            "reference_price": 100.0, "confidence": 0.5, "stop_price": 98.0}
    with pytest.raises(RiskInputError) as info:
        Intent(**(base | kwargs))
    assert isinstance(info.value, EmpError) and "\n" not in str(info.value)


def test_a_limit_order_needs_a_finite_limit_price():
    base = {"strategy": "alpha", "symbol": "ACME", "side": "buy", "quantity": 10, "order_type": "limit",
            "reference_price": 100.0, "confidence": 0.5, "stop_price": 98.0}
    for bad in (None, math.nan, math.inf, -1.0):
        with pytest.raises(RiskInputError, match="limit_price"):
            Intent(**base, limit_price=bad)
    assert Intent(**base, limit_price=99.0).entry_price == 99.0


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"equity": math.nan}, "equity"), ({"peak_equity": math.inf}, "peak_equity"),
    ({"day_start_equity": 0.0}, "day_start_equity"), ({"prices": {"ACME": math.nan}}, "price of ACME"),
    ({"positions": {"ACME": 1.5}}, "position in ACME"), ({"adv": {"ACME": math.inf}}, "volume of ACME"),
    ({"stops": {"ACME": math.nan}}, "stop of ACME"), ({"positions": {"ACME": 3}, "prices": {}}, "no last price"),
])
def test_a_portfolio_that_cannot_be_judged_is_a_clear_error(kwargs, words):
    base = {"equity": 1.0, "peak_equity": 1.0, "day_start_equity": 1.0, "positions": {}, "prices": {}}
    with pytest.raises(RiskInputError, match=words):
        Portfolio(**(base | kwargs))


# ---------------------------------------------------------------------------------------------- policy files


def test_the_shipped_policy_loads_with_the_documented_limits():
    p = load_policy(SHIPPED)
    assert p.version == "default-v1" == SHIPPED.stem
    lim = p.limits
    assert (lim.min_confidence, lim.max_risk_per_trade, lim.max_exposure, lim.max_leverage, lim.max_drawdown,
            lim.max_daily_drawdown, lim.mandatory_stop_loss, lim.max_adv_share) == (
        0.0, 0.02, 0.5, 10.0, 0.25, 0.05, True, 0.01)
    assert p.warn_at == 0.8
    assert p.strategies["champion"] == StrategyRule(enabled=True, paper_only=True)
    assert lim.restricted == frozenset()


def test_a_minimal_policy_gets_the_defaults(tmp_path):
    f = tmp_path / "tiny-v1.yaml"
    f.write_text("version: tiny-v1\nstrategies:\n  a: {enabled: true, paper_only: false}\n"
                 "limits:\n  min_confidence: 0.4\n  restricted: [XYZ, '600519']\n")
    p = load_policy(f)
    assert p.limits.min_confidence == 0.4  # configurable
    assert p.limits.restricted == frozenset({"XYZ", "600519"})
    assert (p.limits.max_risk_per_trade, p.limits.max_exposure, p.limits.max_leverage, p.limits.max_drawdown,
            p.limits.max_daily_drawdown, p.limits.mandatory_stop_loss, p.warn_at) == (
        0.02, 0.5, 10.0, 0.25, 0.05, True, 0.8)


GOOD = "version: bad-v1\nstrategies:\n  alpha: {enabled: true, paper_only: false}\nlimits:\n  max_leverage: 5\n"


@pytest.mark.parametrize(("text", "key", "words"), [
    (GOOD + "limit: {}\n", "limit", "unknown key"),
    (GOOD.replace("max_leverage", "max_leverge"), "limits.max_leverge", "unknown key"),
    (GOOD.replace("enabled: true", "enable: true"), "strategies.alpha.enable", "unknown key"),
    (GOOD.replace("max_leverage: 5", "max_leverage: ten"), "limits.max_leverage", "expected a number"),
    (GOOD.replace("max_leverage: 5", "max_exposure: true"), "limits.max_exposure", "expected a number"),
    (GOOD.replace("enabled: true", "enabled: 1"), "strategies.alpha.enabled", "true or false"),
    (GOOD.replace("max_leverage: 5", "max_open_positions: 2.5"), "limits.max_open_positions", "whole number"),
    (GOOD.replace("max_leverage: 5", "max_drawdown: -0.1"), "limits.max_drawdown", "negative"),
    (GOOD.replace("max_leverage: 5", "max_order_notional: -1"), "limits.max_order_notional", "negative"),
    (GOOD.replace("max_leverage: 5", "max_daily_drawdown: 1.5"), "limits.max_daily_drawdown", "at most"),
    (GOOD.replace("max_leverage: 5", "max_leverage: .nan"), "limits.max_leverage", "finite"),
    (GOOD.replace("max_leverage: 5", "restricted: [ACME, ON]"), "limits.restricted", "symbol string"),
    (GOOD.replace("max_leverage: 5", "restricted: ACME"), "limits.restricted", "list of symbols"),
    (GOOD + "  max_leverage: 6\n", "max_leverage", "twice"),
    (GOOD.replace("version: bad-v1\n", ""), "version", "missing"),
    (GOOD.replace("version: bad-v1", "version: bad-v2"), "version", "does not match the file name"),
    (GOOD.replace("version: bad-v1", "version: 1"), "version", "expected a name"),
    (GOOD + "warn_at: 0\n", "warn_at", "above 0"),
    (GOOD + "warn_at: 1.5\n", "warn_at", "at most"),
    (GOOD.replace("max_leverage: 5", "min_order_notional: 10\n  max_order_notional: 5"),
     "limits.min_order_notional", "exceeds"),
    ("version: bad-v1\n", "strategies", "missing"),
    (GOOD.replace(", paper_only: false", ""), "strategies.alpha.paper_only", "missing"),
    (GOOD.replace("limits:\n  max_leverage: 5\n", "limits: [1, 2]\n"), "limits", "expected a mapping"),
    ("- version: bad-v1\n", "(top level)", "expected a mapping"),
    ("", "version", "empty"),
    ("version: bad-v1\nstrategies: {alpha: [\n", "", "not valid YAML at line"),
])
def test_a_bad_policy_file_names_the_file_and_the_key(tmp_path, text, key, words):
    f = tmp_path / "bad-v1.yaml"
    f.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(f)
    message = str(info.value)
    assert message.startswith(str(f)), message
    if key:
        assert f": {key}: " in message, message
    assert words in message, message
    assert info.value.key == key
    assert isinstance(info.value, EmpError) and "\n" not in message and "Traceback" not in message


def test_a_missing_policy_file_names_it(tmp_path):
    with pytest.raises(PolicyError, match=r"nowhere-v1\.yaml: cannot read"):
        load_policy(tmp_path / "nowhere-v1.yaml")


def test_the_good_base_file_of_the_bad_cases_loads(tmp_path):
    f = tmp_path / "bad-v1.yaml"
    f.write_text(GOOD)
    assert load_policy(f).limits.max_leverage == 5.0  # so each bad case fails for its own edit only


# ---------------------------------------------------------------------------------------------- sizing


def test_fixed_fractional_closed_forms():
    assert fixed_fractional_units(100_000, 100.0, 98.0, 0.02) == 1000  # 2,000 / 2, exactly
    assert fixed_fractional_units(100_000, 50.0, 47.0, 0.02) == 666  # 2,000 / 3 = 666.67
    assert fixed_fractional_units(100_000, 50.0, 53.0, 0.02) == 666  # a short: stop above
    assert fixed_fractional_units(100_000, 50.0, 47.0, 0.02, max_units=500) == 500
    assert fixed_fractional_units(100_000, 0.3, 0.1, 0.01) == 5000  # 1,000 / 0.2 (0.3 - 0.1 is 0.19999... in binary)
    assert fixed_fractional_units(0.0, 50.0, 47.0, 0.02) == 0
    assert fixed_fractional_units(-1_000.0, 50.0, 47.0, 0.02) == 0
    assert fixed_fractional_units(100.0, 5_000.0, 1.0, 0.02) == 0  # one unit would risk far more than 2


@pytest.mark.parametrize(("args", "words"), [
    ((100_000, 50.0, 50.0, 0.02), "zero stop distance"), ((100_000, math.nan, 47.0, 0.02), "entry"),
    ((math.inf, 50.0, 47.0, 0.02), "equity"), ((100_000, 50.0, 47.0, -0.01), "risk_fraction"),
    ((100_000, 50.0, 47.0, 1.5), "risk_fraction"),
])
def test_fixed_fractional_refuses_what_it_cannot_size(args, words):
    with pytest.raises(RiskInputError, match=words):
        fixed_fractional_units(*args)
    with pytest.raises(RiskInputError, match="max_units"):
        fixed_fractional_units(100_000, 50.0, 47.0, 0.02, max_units=-1)


def test_a_fixed_fractional_size_is_the_largest_within_the_per_trade_limit():
    """Random books over many seeds: the size risks at most the fraction (exactly, in decimal), one more unit
    risks more; and the policy's per_trade_risk check agrees (passes the size, refuses the size + 1)."""
    checked = agreed = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        for _ in range(20):
            equity = round(float(rng.uniform(1_000, 5_000_000)), 2)
            entry = round(float(rng.uniform(1, 500)), 2)
            gap = max(round(float(rng.uniform(0.0, 0.3)) * entry, 2), 0.01)
            short = bool(rng.integers(2))
            stop = round(entry + gap, 2) if short else round(entry - gap, 2)
            if stop <= 0:
                continue
            fraction = float(rng.choice([0.001, 0.005, 0.01, 0.02, 0.05]))
            units = fixed_fractional_units(equity, entry, stop, fraction)
            dec = {k: Fraction(repr(v)) for k, v in {"e": equity, "p": entry, "s": stop, "f": fraction}.items()}
            distance = abs(dec["p"] - dec["s"])
            assert units * distance / dec["e"] <= dec["f"] < (units + 1) * distance / dec["e"], (
                seed, equity, entry, stop, fraction, units)
            checked += 1
            p = policy(max_risk_per_trade=fraction)
            side = sell if short else buy
            above = side(units + 1, stop=stop, price=entry)
            assert evaluate(above, book(equity), p, "paper").check("per_trade_risk").verdict == "fail"
            if units:
                assert evaluate(side(units, stop=stop, price=entry), book(equity), p,
                                "paper").check("per_trade_risk").verdict != "fail"
                agreed += 1
    assert checked > 1000 and agreed > 900


def test_kelly_against_its_definition():
    assert kelly_fraction(0.6, 1.0) == pytest.approx(0.2)  # 0.6 - 0.4 / 1
    assert kelly_fraction(0.5, 2.0) == pytest.approx(0.25)  # 0.5 - 0.5 / 2
    assert kelly_fraction(0.55, 1.5) == pytest.approx(0.25)  # 0.55 - 0.45 / 1.5
    assert kelly_fraction(0.4, 1.0) == 0.0  # -0.2: no edge, no bet
    assert kelly_fraction(1.0, 0.5) == pytest.approx(1.0)
    # half-Kelly as notional: 0.5 x 0.2 x 100,000 / 50 = 200 units
    assert fractional_kelly_units(100_000, 50.0, 0.6, 1.0, fraction=0.5) == 200
    assert fractional_kelly_units(100_000, 50.0, 0.6, 1.0, fraction=1.0) == 400
    assert fractional_kelly_units(100_000, 30.0, 0.6, 1.0, fraction=0.5) == 333  # 10,000 / 30 = 333.3
    assert fractional_kelly_units(100_000, 50.0, 0.5, 2.0, fraction=0.5) == 250  # 0.5 x 0.25 x 100,000 / 50
    assert fractional_kelly_units(100_000, 40.0, 0.55, 1.5, fraction=0.25) == 156  # 0.25 x 0.25 x 2,500 = 156.25
    assert fractional_kelly_units(100_000, 50.0, 0.6, 1.0, fraction=0.5, max_units=150) == 150
    assert fractional_kelly_units(100_000, 50.0, 0.4, 1.0) == 0
    assert fractional_kelly_units(-5.0, 50.0, 0.6, 1.0) == 0
    for bad in ({"p": 1.2}, {"b": 0.0}, {"fraction": 1.5}, {"price": math.nan}):
        args = {"equity": 100_000, "price": 50.0, "p": 0.6, "b": 1.0, "fraction": 0.5} | bad
        with pytest.raises(RiskInputError):
            fractional_kelly_units(**args)
    with pytest.raises(RiskInputError):
        kelly_fraction(math.nan, 1.0)

