"""Trade compliance (emp_core/compliance/trade.py): each rule on constructed trades that just pass and just fail
its limit, pre-trade and post-trade; the wash-trade rule against a brute-force scan; the rules file."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import polars as pl
import pytest

from emp_core.compliance.trade import (
    RULES,
    ComplianceInputError,
    CompliancePolicy,
    DayOrder,
    Order,
    fills_for_rules,
    load_compliance_policy,
    post_trade,
    pre_trade,
    summary,
)
from emp_core.risk.policy import PolicyError

POLICY = CompliancePolicy(version="t-v1", max_trade_notional=10_000.0, max_daily_notional=25_000.0,
                          max_daily_trades=3, restricted=frozenset({"BAD"}), price_collar=0.05,
                          wash_window_seconds=60.0)
T0 = datetime(2026, 11, 27, 14, 30)


def verdicts(checks) -> dict[str, bool]:
    return {c.rule: c.passed for c in checks}


def order(qty=10, last=100.0, *, symbol="AAA", side="buy", at=T0, limit=None, ref="o1") -> Order:
    return Order(ref=ref, symbol=symbol, side=side, qty=qty, last_price=last, at=at, limit_price=limit)


# ------------------------------------------------------------------------------------------------- pre-trade


def test_pre_trade_clean_order_passes_every_rule():
    checks = pre_trade(order(), [], POLICY)
    assert [c.rule for c in checks] == list(RULES)
    assert all(c.passed for c in checks)


@pytest.mark.parametrize(("qty", "passed"), [(100, True), (101, False)])
def test_pre_trade_notional_at_and_over_the_limit(qty, passed):
    assert verdicts(pre_trade(order(qty=qty, last=100.0), [], POLICY))["trade_notional"] is passed


@pytest.mark.parametrize(("filled", "passed"), [(15_000.0, True), (15_000.01, False)])
def test_pre_trade_daily_notional_counts_the_days_earlier_orders(filled, passed):
    earlier = [DayOrder("e1", "AAA", "buy", T0 - timedelta(hours=2), filled_notional=filled)]
    assert verdicts(pre_trade(order(qty=100), earlier, POLICY))["daily_notional"] is passed


def test_pre_trade_daily_notional_marks_working_quantity_at_the_last_price_and_ignores_other_days_and_symbols():
    earlier = [DayOrder("w", "AAA", "buy", T0 - timedelta(hours=1), working_qty=150),  # 150 x 100 = 15,000
               DayOrder("y", "AAA", "buy", T0 - timedelta(days=1), filled_notional=1e9),  # yesterday
               DayOrder("z", "ZZZ", "buy", T0, filled_notional=1e9)]  # another symbol
    checks = {c.rule: c for c in pre_trade(order(qty=100, last=100.0), earlier, POLICY)}
    assert checks["daily_notional"].value == pytest.approx(25_000.0)
    assert checks["daily_notional"].passed
    checks = {c.rule: c for c in pre_trade(order(qty=100, last=100.01), earlier, POLICY)}
    assert not checks["daily_notional"].passed  # the working 150 re-marked at 100.01 pushes it over


@pytest.mark.parametrize(("earlier_count", "passed"), [(2, True), (3, False)])
def test_pre_trade_daily_trade_count(earlier_count, passed):
    earlier = [DayOrder(f"e{i}", "AAA", "buy", T0 - timedelta(hours=i + 1)) for i in range(earlier_count)]
    assert verdicts(pre_trade(order(qty=1), earlier, POLICY))["daily_trades"] is passed


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_pre_trade_restricted_symbol_fails_either_side(side):
    assert verdicts(pre_trade(order(symbol="BAD", side=side), [], POLICY))["restricted_list"] is False
    assert verdicts(pre_trade(order(symbol="AAA", side=side), [], POLICY))["restricted_list"] is True


@pytest.mark.parametrize(("limit", "passed"), [(105.0, True), (95.0, True), (105.01, False), (94.99, False)])
def test_pre_trade_price_collar_on_the_limit_price(limit, passed):
    assert verdicts(pre_trade(order(qty=1, limit=limit), [], POLICY))["price_collar"] is passed


@pytest.mark.parametrize(("seconds", "passed"), [(60.0, False), (60.001, True)])
def test_pre_trade_wash_window_is_inclusive(seconds, passed):
    earlier = [DayOrder("s1", "AAA", "sell", T0 - timedelta(seconds=seconds))]
    checks = {c.rule: c for c in pre_trade(order(), earlier, POLICY)}
    assert checks["wash_trade"].passed is passed
    if not passed:
        assert checks["wash_trade"].other_ref == "s1"


def test_pre_trade_wash_against_a_working_opposite_order_however_old():
    earlier = [DayOrder("s1", "AAA", "sell", T0 - timedelta(days=3), working_qty=5)]
    assert verdicts(pre_trade(order(), earlier, POLICY))["wash_trade"] is False
    same_side = [DayOrder("b1", "AAA", "buy", T0 - timedelta(seconds=1), working_qty=5)]
    assert verdicts(pre_trade(order(), same_side, POLICY))["wash_trade"] is True


def test_order_input_errors_name_the_order():
    with pytest.raises(ComplianceInputError, match="order x: side"):
        Order(ref="x", symbol="A", side="short", qty=1, last_price=1.0, at=T0)
    with pytest.raises(ComplianceInputError, match="order x: last_price"):
        Order(ref="x", symbol="A", side="buy", qty=1, last_price=float("nan"), at=T0)


# ------------------------------------------------------------------------------------------------ post-trade


def fills(*rows) -> pl.DataFrame:
    cols = ("exec_id", "order_ref", "symbol", "side", "qty", "price", "reference_price", "at")
    return pl.DataFrame([dict(zip(cols, r, strict=True)) for r in rows],
                        schema={"exec_id": pl.String, "order_ref": pl.String, "symbol": pl.String, "side": pl.String,
                                "qty": pl.Float64, "price": pl.Float64, "reference_price": pl.Float64,
                                "at": pl.Datetime("us")})


def failing(frame: pl.DataFrame, exec_id: str) -> set[str]:
    return set(frame.filter((pl.col("exec_id") == exec_id) & ~pl.col("passed"))["rule"].to_list())


@pytest.mark.parametrize(("qty", "bad"), [(100, set()), (100.01, {"trade_notional"})])
def test_post_trade_notional(qty, bad):
    checks, found = post_trade(fills(("x1", "o1", "AAA", "buy", qty, 100.0, 100.0, T0)), POLICY)
    assert failing(checks, "x1") == bad
    assert set(found["rule"].to_list()) == bad


def test_post_trade_daily_notional_breaches_at_the_fill_that_crosses_and_resets_next_day():
    # 10,000 + 10,000 + 5,000 = 25,000 (at the limit), then 1 more unit crosses it; the next day starts again
    checks, _found = post_trade(fills(
        ("x1", "o1", "AAA", "buy", 100, 100.0, 100.0, T0),
        ("x2", "o2", "AAA", "buy", 100, 100.0, 100.0, T0 + timedelta(hours=1)),
        ("x3", "o3", "AAA", "buy", 50, 100.0, 100.0, T0 + timedelta(hours=2)),
        ("x4", "o4", "AAA", "buy", 0.01, 100.0, 100.0, T0 + timedelta(hours=3)),
        ("x5", "o5", "AAA", "buy", 100, 100.0, 100.0, T0 + timedelta(days=1)),
        ("y1", "o6", "BBB", "buy", 100, 100.0, 100.0, T0 + timedelta(hours=2))), POLICY)
    assert "daily_notional" not in failing(checks, "x3")
    assert "daily_notional" in failing(checks, "x4")
    assert "daily_notional" not in failing(checks, "x5")
    assert "daily_notional" not in failing(checks, "y1")
    assert failing(checks, "x4") == {"daily_notional", "daily_trades"}  # the fourth trade of the day too


def test_post_trade_daily_trades_counts_in_time_order_not_row_order():
    rows = [(f"x{i}", f"o{i}", "AAA", "buy", 1, 100.0, 100.0, T0 + timedelta(hours=i)) for i in range(4)]
    _checks, found = post_trade(fills(*reversed(rows)), POLICY)
    assert found.filter(pl.col("rule") == "daily_trades")["exec_id"].to_list() == ["x3"]  # latest, not first


@pytest.mark.parametrize(("price", "passed"), [(105.0, True), (95.0, True), (105.01, False), (94.99, False)])
def test_post_trade_price_collar_against_the_orders_last_price(price, passed):
    checks, _ = post_trade(fills(("x1", "o1", "AAA", "buy", 1, price, 100.0, T0)), POLICY)
    assert ("price_collar" not in failing(checks, "x1")) is passed


def test_post_trade_fill_without_a_last_price_fails_the_collar_instead_of_passing():
    checks, _found = post_trade(fills(("x1", "o1", "AAA", "buy", 1, 100.0, None, T0)), POLICY)
    assert failing(checks, "x1") == {"price_collar"}


def test_post_trade_restricted_fill_is_a_breach():
    checks, _found = post_trade(fills(("x1", "o1", "BAD", "sell", 1, 100.0, 100.0, T0)), POLICY)
    assert failing(checks, "x1") == {"restricted_list"}


@pytest.mark.parametrize(("seconds", "breach"), [(60.0, True), (60.000001, False)])
def test_post_trade_wash_trade_window_both_fills_named(seconds, breach):
    _checks, found = post_trade(fills(("b", "o1", "AAA", "buy", 1, 100.0, 100.0, T0),
                                     ("s", "o2", "AAA", "sell", 1, 100.0, 100.0, T0 + timedelta(seconds=seconds))),
                               POLICY)
    wash = found.filter(pl.col("rule") == "wash_trade")
    if breach:
        assert sorted(zip(wash["exec_id"], wash["other_ref"], strict=True)) == [("b", "s"), ("s", "b")]
    else:
        assert wash.is_empty()


def test_post_trade_same_side_or_other_symbol_is_not_a_wash():
    _, found = post_trade(fills(("b1", "o1", "AAA", "buy", 1, 100.0, 100.0, T0),
                                ("b2", "o2", "AAA", "buy", 1, 100.0, 100.0, T0),
                                ("s1", "o3", "BBB", "sell", 1, 100.0, 100.0, T0)), POLICY)
    assert found.filter(pl.col("rule") == "wash_trade").is_empty()


def test_post_trade_wash_rule_matches_a_brute_force_scan_on_random_fills():
    rng = random.Random(7)
    for _ in range(30):
        rows = [(f"x{i}", f"o{i}", rng.choice("AB"), rng.choice(["buy", "sell"]), 1, 100.0, 100.0,
                 T0 + timedelta(seconds=rng.randint(0, 600), microseconds=rng.choice([0, 1]))) for i in range(40)]
        _, found = post_trade(fills(*rows), POLICY)
        got = set(found.filter(pl.col("rule") == "wash_trade")["exec_id"].to_list())
        expected = {a[0] for a in rows for b in rows
                    if a[2] == b[2] and a[3] != b[3] and abs((a[7] - b[7]).total_seconds()) <= 60.0}
        assert got == expected


def test_post_trade_breach_ids_are_stable_and_unique():
    rows = (("b", "o1", "AAA", "buy", 200, 100.0, 100.0, T0),
            ("s", "o2", "AAA", "sell", 200, 100.0, 100.0, T0 + timedelta(seconds=1)))
    _, first = post_trade(fills(*rows), POLICY)
    _, again = post_trade(fills(*reversed(rows)), POLICY)
    assert first["breach_id"].n_unique() == first.height
    assert set(first["rule"]) == {"trade_notional", "daily_notional", "wash_trade"}
    assert set(first["breach_id"]) == set(again["breach_id"])


def test_post_trade_rejects_an_unjudgeable_fill_by_name():
    with pytest.raises(ComplianceInputError, match="fill x1"):
        post_trade(fills(("x1", "o1", "AAA", "short", 1, 100.0, 100.0, T0)), POLICY)
    with pytest.raises(ComplianceInputError, match="lack column"):
        post_trade(pl.DataFrame({"exec_id": ["x"]}), POLICY)


def test_fills_for_rules_reads_the_journal_fix_times_and_reference_prices():
    journal = pl.DataFrame({
        "seq": [1, 2, 3], "exec_id": ["n", "f", "g"], "order_clordid": ["C1", "C1", "C1"], "msg_type": ["8"] * 3,
        "exec_type": ["0", "F", "F"], "symbol": ["AAA"] * 3, "side": ["2"] * 3, "last_qty": [0.0, 5.0, 0.0],
        "last_px": [0.0, 101.5, 0.0], "transact_time": [None, "20261127-14:30:00.123456", None],
        "received_at": ["2026-11-27T14:30:01"] * 3})
    frame = fills_for_rules(journal, pl.DataFrame({"clordid": ["C1"], "reference_price": [100.0]}))
    assert frame.rows() == [("f", "C1", "AAA", "sell", 5.0, 101.5, 100.0, datetime(2026, 11, 27, 14, 30, 0, 123456))]
    # as the executor journals it (an aware time) and with another offset: both read as UTC
    for text, expected in (("2026-11-27 20:59:56.778000+00:00", datetime(2026, 11, 27, 20, 59, 56, 778000)),
                           ("2026-11-27T21:59:56+01:00", datetime(2026, 11, 27, 20, 59, 56)),
                           ("not a time", None)):
        one = fills_for_rules(journal.with_columns(pl.lit(text).alias("transact_time")),
                              pl.DataFrame({"clordid": ["C1"], "reference_price": [100.0]}))
        assert one["at"].to_list() == [expected]


def test_summary_names_breaches():
    checks, found = post_trade(fills(("x1", "o1", "BAD", "buy", 1, 100.0, 100.0, T0)), POLICY)
    text = summary(checks, found, POLICY)
    assert "**1 breach(es)**" in text and "| restricted_list | BAD | 1 |" in text


# --------------------------------------------------------------------------------------------- the rules file


def test_shipped_rules_file_loads():
    policy = load_compliance_policy("policies/compliance-v1.yaml")
    assert policy.version == "compliance-v1" and policy.max_daily_trades >= 1


@pytest.mark.parametrize(("body", "message"), [
    ("version: c-v1\nmax_trade_notional: -1\n", "max_trade_notional: must not be negative"),
    ("version: c-v1\nprice_collar: 1.5\n", "price_collar: must be at most 1.0"),
    ("version: c-v1\nmax_daily_trades: 2.5\n", "max_daily_trades: expected a whole number"),
    ("version: c-v1\nwash_window: 60\n", "wash_window: unknown key"),
    ("version: c-v2\n", "does not match the file name"),
    ("version: c-v1\nrestricted: [1]\n", "restricted: expected a list of symbol strings"),
    ("version: c-v1\nmax_trade_notional: 10\nmax_trade_notional: 20\n", "given twice"),
    ("version: c-v1\nmax_trade_notional: 2000000\n", "exceeds max_daily_notional"),
])
def test_bad_rules_file_names_the_file_and_key(tmp_path, body, message):
    path = tmp_path / "c-v1.yaml"
    path.write_text(body)
    with pytest.raises(PolicyError, match=message) as info:
        load_compliance_policy(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------------------ inside the risk path (decide)


def test_decide_refuses_an_order_the_risk_policy_approves_but_compliance_does_not():
    """Two buys the risk policy approves; compliance restricts BAD, and its daily trade count on AAA is full
    after two earlier orders today."""
    from emp_core.compliance.trade import PreTrade, pre_trade_breaches
    from emp_core.execution.outbox import clordid_for
    from emp_core.risk.policy import Portfolio, load_policy
    from emp_core.trading.intents import INTENT_SCHEMA, decide

    risk = load_policy("policies/default-v2.yaml")

    def intent(symbol, key):
        return {"run_id": "r", "session": "paper", "strategy": "manual", "symbol": symbol, "status": "order",
                "side": "buy", "quantity": 10, "order_type": "market", "reference_price": 100.0, "confidence": 1.0,
                "stop_price": 99.0, "idem_key": key, "signal": 1.0}

    plan = pl.DataFrame([intent("AAA", "k1"), intent("BAD", "k2"), intent("CCC", "k3")], schema=INTENT_SCHEMA)
    symbols = ("AAA", "BAD", "CCC")
    portfolio = Portfolio(equity=1e6, peak_equity=1e6, day_start_equity=1e6, positions={},
                          prices=dict.fromkeys(symbols, 100.0), adv=dict.fromkeys(symbols, 1e9))
    _, without = decide(plan, portfolio, risk, "paper")
    assert {o.symbol for o in without} == {"AAA", "BAD", "CCC"}  # the risk policy alone approves all three

    policy = CompliancePolicy(version="t-v1", max_daily_trades=2, restricted=frozenset({"BAD"}))
    earlier = (DayOrder("old", "AAA", "buy", T0 - timedelta(hours=1)), DayOrder("old2", "AAA", "buy",
                                                                               T0 - timedelta(hours=2)))
    decisions, approved = decide(plan, portfolio, risk, "paper", PreTrade(policy, earlier, T0))
    assert {o.symbol for o in approved} == {"CCC"}
    rules = decisions.filter(pl.col("check").str.starts_with("compliance/"))
    assert rules.height == 3 * len(RULES) and set(rules["policy_version"]) == {"t-v1"}
    assert not decisions.filter(pl.col("symbol") != "CCC")["approved"].any()  # every row of a refusal says so
    assert decisions.filter(pl.col("symbol") == "CCC")["approved"].all()
    ccc = next(o for o in approved if o.symbol == "CCC")
    assert any(r["check"] == "compliance/wash_trade" for r in ccc.decision)  # the outbox keeps the whole decision

    found = pre_trade_breaches(decisions, T0)
    assert sorted(zip(found["symbol"], found["rule"], strict=True)) == [("AAA", "daily_trades"),
                                                                         ("BAD", "restricted_list")]
    assert set(found["order_ref"]) == {clordid_for("k1"), clordid_for("k2")}


def test_an_order_decided_again_is_not_counted_against_itself():
    """A re-run decides an order already in the outbox (same ClOrdID): its own working quantity must not count
    toward its daily notional, trade count or wash window."""
    mine = DayOrder("o1", "AAA", "buy", T0, working_qty=100)
    again = {c.rule: c for c in pre_trade(order(qty=100, ref="o1"), [mine], POLICY)}
    fresh = {c.rule: c for c in pre_trade(order(qty=100, ref="o1"), [], POLICY)}
    assert {r: c.value for r, c in again.items()} == {r: c.value for r, c in fresh.items()}
    other = {c.rule: c for c in pre_trade(order(qty=100, ref="o2"), [mine], POLICY)}
    assert other["daily_notional"].value == pytest.approx(20_000.0) and other["daily_trades"].value == 2


def test_paper_and_live_fills_are_judged_apart():
    """Two venues: a paper buy and a live sell a second apart are no wash trade, and their notionals are not
    summed; the same two on one venue are."""
    rows = (("b", "o1", "AAA", "buy", 150, 100.0, 100.0, T0), ("s", "o2", "AAA", "sell", 150, 100.0, 100.0,
                                                                T0 + timedelta(seconds=1)))
    for sessions, expected in ((("paper", "live"), set()), (("paper", "paper"), {"wash_trade", "daily_notional"})):
        frame = fills(*rows).with_columns(pl.Series("session", sessions))
        _, found = post_trade(frame, POLICY)
        assert set(found["rule"]) - {"trade_notional"} == expected


def test_a_working_opposite_order_is_zero_seconds_away():
    earlier = [DayOrder("s1", "AAA", "sell", T0 - timedelta(days=3), working_qty=5)]
    (wash,) = [c for c in pre_trade(order(), earlier, POLICY) if c.rule == "wash_trade"]
    assert (wash.passed, wash.value, wash.other_ref) == (False, 0.0, "s1") and "still working" in wash.detail


# ------------------------------------------------------------------------------ the edges mutation testing found


def test_day_orders_read_the_outbox_working_and_filled_parts():
    """Filled notional cum_qty x avg_px; working = qty - cum unless final (filled 2, cancelled 4, rejected 8,
    expired C); an order with no report works in full; only the session asked for; ISO text times read."""
    from emp_core.compliance.trade import day_orders

    entries = pl.DataFrame({"clordid": ["A", "B", "C", "D", "E"], "symbol": ["X"] * 5,
                            "side": ["buy", "sell", "buy", "buy", "buy"], "qty": [10, 10, 10, 10, 10],
                            "created_at": ["2026-11-27 14:30:00.5", "2026-11-27T14:31:00", "2026-11-27 14:32:00",
                                           "2026-11-27 14:33:00", "2026-11-27 14:34:00"],
                            "session": ["paper", "paper", "paper", "live", "paper"]})
    status = pl.DataFrame({"clordid": ["A", "B", "C", "D"], "ord_status": ["1", "4", "2", "0"],
                           "cum_qty": [4.0, 3.0, 10.0, None], "avg_px": [100.0, 50.0, 10.0, None]})
    got = {o.ref: o for o in day_orders(entries, status, "paper")}
    assert set(got) == {"A", "B", "C", "E"}
    assert (got["A"].filled_notional, got["A"].working_qty) == (400.0, 6.0)
    assert (got["B"].filled_notional, got["B"].working_qty) == (150.0, 0.0)  # cancelled: nothing works
    assert (got["C"].filled_notional, got["C"].working_qty) == (100.0, 0.0)
    assert (got["E"].filled_notional, got["E"].working_qty) == (0.0, 10.0)  # no report yet
    assert got["A"].at == datetime(2026, 11, 27, 14, 30, 0, 500000) and got["B"].side == "sell"
    assert {o.ref for o in day_orders(entries, status)} == {"A", "B", "C", "D", "E"}
    assert day_orders(entries.head(0), status) == []


@pytest.mark.parametrize(("text", "expected"), [
    ("20261127-14:30:00", datetime(2026, 11, 27, 14, 30)),
    ("20261127-14:30:00.5", datetime(2026, 11, 27, 14, 30, 0, 500000)),
    ("2026-11-27T14:30:00Z", datetime(2026, 11, 27, 14, 30)),
    ("2026-11-27 09:30:00-05:00", datetime(2026, 11, 27, 14, 30)),
    ("  2026-11-27 14:30:00  ", datetime(2026, 11, 27, 14, 30)),
    ("2026-13-01 14:30:00", None), ("2026112-14:30:00", None), ("yesterday", None)])
def test_fill_times_are_read_as_utc_or_refused(text, expected):
    from emp_core.compliance.trade import _utc

    assert _utc(text) == expected


@pytest.mark.parametrize(("column", "value"), [("qty", 0.0), ("qty", -1.0), ("price", 0.0), ("price", float("nan")),
                                               ("price", float("inf")), ("side", "short"), ("at", None)])
def test_post_trade_refuses_each_kind_of_unjudgeable_fill(column, value):
    frame = fills(("x1", "o1", "AAA", "buy", 1, 100.0, 100.0, T0)).with_columns(
        pl.lit(value, dtype=fills(("x", "o", "A", "buy", 1, 1.0, 1.0, T0)).schema[column]).alias(column))
    with pytest.raises(ComplianceInputError, match="fill x1 cannot be judged"):
        post_trade(frame, POLICY)


def test_limits_allow_binary_rounding_but_no_more():
    """A notional 1e-10 relative over its limit is at the limit (decimal figures in binary); 1e-8 over fails."""
    at = {c.rule: c.passed for c in pre_trade(order(qty=1, last=10_000.0 * (1 + 1e-10)), [], POLICY)}
    over = {c.rule: c.passed for c in pre_trade(order(qty=1, last=10_000.0 * (1 + 1e-8)), [], POLICY)}
    assert at["trade_notional"] and not over["trade_notional"]


def test_order_refuses_bad_prices_and_quantities():
    for kwargs in ({"qty": True}, {"qty": 0}, {"last_price": -1.0}, {"limit_price": 0.0},
                   {"limit_price": float("nan")}):
        with pytest.raises(ComplianceInputError):
            Order(**({"ref": "x", "symbol": "A", "side": "buy", "qty": 1, "last_price": 1.0, "at": T0} | kwargs))


def test_a_single_trade_may_use_the_whole_daily_limit(tmp_path):
    path = tmp_path / "c-v1.yaml"
    path.write_text("version: c-v1\nmax_trade_notional: 1000\nmax_daily_notional: 1000\nrestricted: [ABC]\n")
    policy = load_compliance_policy(path)
    assert (policy.max_trade_notional, policy.max_daily_notional, policy.restricted) == (1000.0, 1000.0,
                                                                                         frozenset({"ABC"}))


def test_unjudged_fills_are_the_journal_fills_the_report_has_not_checked(tmp_path):
    from emp_core.compliance.trade import CHECKS_TABLE, unjudged_fills
    from emp_core.store.duckdb_store import DuckDBStore

    store = DuckDBStore(tmp_path / "emp.duckdb")
    journal = pl.DataFrame({
        "seq": [1, 2, 3], "exec_id": ["n", "f1", "f2"], "order_clordid": ["C1"] * 3, "msg_type": ["8"] * 3,
        "exec_type": ["0", "F", "F"], "symbol": ["AAA"] * 3, "side": ["1"] * 3, "last_qty": [0.0, 5.0, 5.0],
        "last_px": [0.0, 100.0, 100.0], "transact_time": ["20261127-14:30:00"] * 3,
        "received_at": ["2026-11-27T14:30:01"] * 3})
    assert unjudged_fills(store, journal) == ["f1", "f2"]  # no report yet: nothing judged
    store.append_table(CHECKS_TABLE, pl.DataFrame({"exec_id": ["f1"], "rule": ["trade_notional"]}))
    assert unjudged_fills(store, journal) == ["f2"]
    assert unjudged_fills(store, journal.head(1)) == []  # a New report is not a fill


def test_summary_counts_trades_and_lists_each_breach():
    checks, found = post_trade(fills(("x1", "o1", "BAD", "buy", 1, 100.0, 100.0, T0),
                                     ("x2", "o2", "AAA", "buy", 1, 100.0, 100.0, T0)), POLICY)
    text = summary(checks, found, POLICY, rows=5)
    assert "2 trade(s) judged on 6 rules" in text and "| post_trade | restricted_list | BAD | buy | o1 | x1 |" in text
    assert "| daily_trades | 3 | 0 |" in text and "| wash_trade | 60 s | 0 |" in text
