"""ROI evidence (emp_core.compliance.roi): fees, slippage, infrastructure, capital efficiency and PnL net of costs,
checked on constructed fills against figures computed by hand (in the comments), and the cost model's file."""

import base64
from datetime import date, datetime

import polars as pl
import pytest

from emp_core.compliance.roi import (
    ADDITIVE,
    DEFAULT_COSTS,
    PLATFORM,
    UNATTRIBUTED,
    CostModel,
    CostModelError,
    FeeSchedule,
    RoiInputError,
    load_costs,
    pnl_chart,
    roi,
    summary_markdown,
)
from emp_core.errors import EmpError
from emp_core.execution.account import account

FEES = FeeSchedule(per_share=0.005, minimum=1.00, maximum_share_of_notional=0.01, notional_bps=1.0,
                   sec_fee_per_million=27.80, finra_taf_per_share=0.000166, finra_taf_maximum=8.30)
# embedded: 304.375 a month is exactly 10.00 a day (a month is 365.25 / 12 = 30.4375 days)
COSTS = CostModel(version="test-v1", currency="USD", as_of=date(2026, 11, 27), fees=FEES,
                  infrastructure={"embedded": {"machine": 300.0, "backups": 4.375},
                                  "institutional": {"postgresql": 1000.0}})
PERIOD = (datetime(2026, 1, 1), datetime(2026, 1, 31))  # 30 days: infrastructure 300.00 on the embedded tier
CAPITAL = 100_000.0
MARKS = {"AAA": 110.0, "BBB": 48.0}  # CCC has no mark: marked at its last fill, 5.00


def _report(i, order, symbol, side, qty, px, day, *, exec_type="F", transact=True):
    return {"seq": i, "session": "s", "exec_id": f"x{i}", "clordid": order, "order_clordid": order,
            "msg_type": "8", "exec_type": exec_type, "ord_status": "1", "symbol": symbol, "side": side,
            "last_qty": str(qty), "last_px": str(px),
            "transact_time": f"2026-01-{day:02d} 00:00:00+00:00" if transact else None,
            "received_at": f"2026-01-{day:02d} 00:00:00.5"}


JOURNAL = pl.DataFrame([
    _report(1, "c1", "AAA", "1", 0, 0, 2, exec_type="0"),  # New: not a fill
    _report(2, "c1", "AAA", "1", 60, 100.10, 2),  # alpha buys 100 AAA in two parts, decided at 100.00
    _report(3, "c1", "AAA", "1", 40, 100.20, 2),
    _report(4, "c3", "BBB", "2", 200, 50.05, 5),  # beta sells 200 BBB short, decided at 50.00
    _report(5, "c2", "AAA", "2", 100, 104.90, 10),  # alpha sells its 100 AAA, decided at 105.00
    _report(6, "c2", "AAA", "2", 100, 104.90, 11, exec_type="H"),  # a bust: not a fill
    _report(7, "c4", "BBB", "1", 10, 49.00, 20, transact=False),  # beta covers 10 BBB; no decision price known
    _report(8, "zz", "CCC", "1", 1, 5.00, 25, transact=False),  # an order the outbox does not know
])
ORDERS = pl.DataFrame({"clordid": ["c1", "c2", "c3", "c4"], "idem_key": ["k1", "k2", "k3", "k4"],
                       "strategy": ["alpha", "alpha", "beta", "beta"], "symbol": ["AAA", "AAA", "BBB", "BBB"]})
INTENTS = pl.DataFrame({"idem_key": ["k1", "k2", "k3", "k1", "k9"], "reference_price": [100.0, 105.0, 50.0, 100.0,
                                                                                          None]})


@pytest.fixture(scope="module")
def report():
    return roi(JOURNAL, ORDERS, INTENTS, MARKS, CAPITAL, COSTS, "embedded", PERIOD)


def test_fees_and_slippage_of_each_fill_by_hand(report):
    f = report.fills
    assert f["seq"].to_list() == [2, 3, 4, 5, 7, 8]
    # commission: 60 x 0.005 = 0.30 -> minimum 1.00 (cap 60.06); notional fee 1 bp of 6,006 = 0.6006
    # the sell of 200 BBB at 50.05 = 10,010: commission 1.00, 1 bp 1.001, SEC 27.80e-6 x 10,010 = 0.278278,
    # TAF 200 x 0.000166 = 0.0332; the sell of 100 AAA at 104.90 = 10,490: 1.00 + 1.049 + 0.291622 + 0.0166;
    # 1 CCC at 5.00: 0.005 -> minimum 1.00 -> the 1% cap 0.05 wins; + 0.0005
    assert f["commission"].to_list() == pytest.approx([1.0, 1.0, 1.0, 1.0, 1.0, 0.05])
    assert f["sec_fee"].to_list() == pytest.approx([0, 0, 0.278278, 0.291622, 0, 0])
    assert f["finra_taf"].to_list() == pytest.approx([0, 0, 0.0332, 0.0166, 0, 0])
    assert f["fees"].to_list() == pytest.approx([1.6006, 1.4008, 2.312478, 2.357222, 1.049, 0.0505])
    # slippage, positive = cost: bought 60 at 100.10 vs 100.00 -> +6.00 (10 bps); 40 at 100.20 -> +8.00 (20 bps);
    # sold 200 at 50.05 vs 50.00 -> -10.00 (a gain, -10 bps); sold 100 at 104.90 vs 105.00 -> +10.00 (9.5238 bps)
    assert f["slippage"].to_list()[:4] == pytest.approx([6.0, 8.0, -10.0, 10.0])
    assert f["slippage_bps"].to_list()[:4] == pytest.approx([10.0, 20.0, -10.0, 10 / 10_500 * 1e4])
    assert f["slippage"].to_list()[4:] == [None, None]
    assert f["strategy"].to_list() == ["alpha", "alpha", "beta", "alpha", "beta", UNATTRIBUTED]
    # the fill time: TransactTime (aware, to naive UTC) or, without one, when it was journaled
    assert f["fill_time"].to_list()[4] == datetime(2026, 1, 20, 0, 0, 0, 500_000)


def test_fee_schedule_minimum_and_caps():
    # 100,000 shares sold at 1.00: commission 500 (under the 1% cap of 1,000); TAF 16.60 capped at 8.30
    big = FEES.fill_fees("sell", 100_000, 1.0)
    assert big["commission"] == pytest.approx(500.0) and big["finra_taf"] == pytest.approx(8.30)
    # 1,000 shares bought at 0.10: per share 5.00, capped at 1% of 100 = 1.00; a buy pays no SEC fee or TAF
    small = FEES.fill_fees("buy", 1_000, 0.10)
    assert small["commission"] == pytest.approx(1.0) and small["sec_fee"] == small["finra_taf"] == 0.0
    for qty, px in [(1, 500.0), (10, 20.0), (150, 80.0), (3_000, 15.0), (10_000, 3.0)]:
        c = FEES.fill_fees("buy", qty, px)["commission"]
        cap = FEES.maximum_share_of_notional * qty * px
        assert cap >= FEES.minimum and FEES.minimum <= c <= cap


def test_pnl_gross_net_and_the_accounting_identities(report):
    s = {r["strategy"]: r for r in report.strategies.iter_rows(named=True)}
    t = report.totals
    # alpha: bought 100 for 6,006 + 4,008 = 10,014, sold for 10,490: realised 476, flat
    assert (s["alpha"]["realised_pnl"], s["alpha"]["unrealised_pnl"]) == pytest.approx((476.0, 0.0))
    # beta: short 200 at 50.05, covered 10 at 49.00: realised 10 x 1.05 = 10.50; -190 x (48 - 50.05) = 389.50
    assert (s["beta"]["realised_pnl"], s["beta"]["unrealised_pnl"]) == pytest.approx((10.5, 389.5))
    assert s[UNATTRIBUTED]["gross_pnl"] == pytest.approx(0.0) and t["marked_at_last_fill"] == ["CCC"]
    # cash -6,006 - 4,008 + 10,010 + 10,490 - 490 - 5 = 9,991; held -190 x 48 + 1 x 5 = -9,115: change 876
    assert t["gross_pnl"] == pytest.approx(876.0) == t["equity_change"]
    assert t["realised_pnl"] + t["unrealised_pnl"] == pytest.approx(t["equity_change"])
    paper = account(JOURNAL, {**MARKS, "CCC": 5.0}, CAPITAL)  # the paper account, which charges no fees
    assert paper.equity - CAPITAL == pytest.approx(t["equity_change"])
    assert t["fees"] == pytest.approx(1.6006 + 1.4008 + 2.312478 + 2.357222 + 1.049 + 0.0505)
    assert t["infrastructure"] == pytest.approx(300.0) and t["infrastructure_monthly"] == pytest.approx(304.375)
    assert t["net_pnl"] == pytest.approx(876.0 - 8.7706 - 300.0)
    for row in [*s.values(), t]:
        assert row["gross_pnl"] - row["fees"] - row["infrastructure"] == pytest.approx(row["net_pnl"])
    for column in ADDITIVE:
        assert report.strategies[column].sum() == pytest.approx(t[column]), column
    # infrastructure by traded notional: alpha 20,504, beta 10,500, unattributed 5 of 31,009
    assert s["alpha"]["infrastructure"] == pytest.approx(300.0 * 20_504 / 31_009)
    assert s["beta"]["infrastructure"] == pytest.approx(300.0 * 10_500 / 31_009)
    # slippage is attribution: 6 + 8 - 10 + 10 = 14 on 30,500 of reference notional, not in the net figure
    assert t["slippage"] == pytest.approx(14.0) and t["slippage_bps"] == pytest.approx(14 / 30_500 * 1e4)
    assert s["alpha"]["slippage_bps"] == pytest.approx(24 / 20_500 * 1e4)
    assert (t["fills"], t["orders"], t["fills_without_reference"]) == (6, 5, 2)


def test_capital_efficiency_by_hand(report):
    s = {r["strategy"]: r for r in report.strategies.iter_rows(named=True)}
    t = report.totals
    # alpha holds 100 AAA (at its latest fill price, 100.20) from Jan 2 to Jan 10: 10,020 x 8 / 30 days
    assert s["alpha"]["avg_gross_exposure"] == pytest.approx(10_020 * 8 / 30)
    # beta: 200 x 50.05 from Jan 5 to Jan 20, then 190 x 49.00 to Jan 31
    assert s["beta"]["avg_gross_exposure"] == pytest.approx((10_010 * 15 + 9_310 * 11) / 30)
    assert s[UNATTRIBUTED]["avg_gross_exposure"] == pytest.approx(5 * 6 / 30)
    assert t["avg_gross_exposure"] == pytest.approx(2_672 + 252_560 / 30 + 1)
    assert t["turnover"] == pytest.approx(31_009 / CAPITAL)
    assert t["return_on_capital"] == pytest.approx(t["net_pnl"] / CAPITAL)
    assert t["roce"] == pytest.approx(t["net_pnl"] / t["avg_gross_exposure"])
    assert t["utilisation"] == pytest.approx(t["avg_gross_exposure"] / CAPITAL)
    assert t["fees_bps"] == pytest.approx(8.7706 / 31_009 * 1e4)


def test_the_pnl_path_ends_at_the_totals_and_the_chart_and_summary_show_it(report):
    path = report.path
    assert path["time"][0] == PERIOD[0] and path["time"][-1] == PERIOD[1]
    assert (path["gross_pnl"][-1], path["net_pnl"][-1]) == pytest.approx((876.0, report.totals["net_pnl"]))
    # after the sell of AAA on Jan 10: cash 10,486, BBB -200 at 50.05: gross 476; fees so far 7.6711; 9 days 90.00
    at = path.filter(pl.col("time") == datetime(2026, 1, 10)).row(0, named=True)
    assert (at["gross_pnl"], at["net_pnl"]) == pytest.approx((476.0, 476.0 - 7.6711 - 90.0))
    uri = pnl_chart(report)
    svg = base64.b64decode(uri.removeprefix("data:image/svg+xml;base64,")).decode()
    assert uri.startswith("data:image/svg+xml;base64,") and svg.count("<polyline") == 2
    text = summary_markdown(report)
    assert "| alpha |" in text and "| beta |" in text and f"{report.totals['net_pnl']:,.2f}" in text
    assert "`test-v1`" in text and "CCC" in text


def test_no_fills_costs_the_platform_only():
    empty = JOURNAL.clear()
    r = roi(empty, ORDERS.clear(), {}, {}, CAPITAL, COSTS, "institutional", PERIOD)
    months = 30 / (365.25 / 12)
    assert r.strategies["strategy"].to_list() == [PLATFORM]
    assert r.totals["net_pnl"] == pytest.approx(-1000.0 * months) and r.totals["gross_pnl"] == 0.0
    assert r.totals["roce"] is None and r.totals["slippage_bps"] is None
    assert "n/a" in summary_markdown(r) and pnl_chart(r).startswith("data:image/svg+xml;base64,")


@pytest.mark.parametrize(("change", "match"), [
    ({"capital": 0.0}, "capital must be a positive number"),
    ({"tier": "cloud"}, "tier 'cloud' is not a tier"),
    ({"period": (datetime(2026, 1, 3), datetime(2026, 1, 31))}, r"seq 2: the fill at 2026-01-02 .* outside the period"),
    ({"period": (PERIOD[1], PERIOD[0])}, "start before end"),
    ({"marks": {"AAA": float("nan")}}, "mark of AAA must be a positive price"),
    ({"reference_prices": {"k1": 100.0}}, None),
])
def test_bad_inputs_are_refused_by_name(change, match):
    args = {"fills": JOURNAL, "orders": ORDERS, "reference_prices": INTENTS, "marks": MARKS, "capital": CAPITAL,
            "costs": COSTS, "tier": "embedded", "period": PERIOD} | change
    if match is None:  # a mapping of decision prices works as well as the intents table
        assert roi(**args).totals["fills_without_reference"] == 4
        return
    with pytest.raises(RoiInputError, match=match):
        roi(**args)


def test_two_decision_prices_for_one_order_are_refused():
    intents = pl.DataFrame({"idem_key": ["k1", "k1"], "reference_price": [100.0, 101.0]})
    with pytest.raises(RoiInputError, match="idem_key 'k1' has two decision prices"):
        roi(JOURNAL, ORDERS, intents, MARKS, CAPITAL, COSTS, "embedded", PERIOD)


def test_a_tier_the_cost_model_lacks_is_named():
    lean = CostModel(version="lean-v1", currency="USD", as_of=date(2026, 1, 1), fees=FEES,
                     infrastructure={"embedded": {"machine": 1.0}})
    with pytest.raises(RoiInputError, match="lean-v1 has no infrastructure for tier 'institutional'"):
        roi(JOURNAL, ORDERS, INTENTS, MARKS, CAPITAL, lean, "institutional", PERIOD)


# ------------------------------------------------------------------------------------------------ the cost file


def test_the_shipped_cost_model_loads():
    costs = load_costs()
    assert DEFAULT_COSTS.name == "costs-v1.yaml" and costs.version == "costs-v1" and costs.currency == "USD"
    assert set(costs.infrastructure) == {"embedded", "institutional"}
    assert costs.monthly("institutional") > costs.monthly("embedded") > 0
    assert costs.fees.minimum == 1.0 and costs.fees.sec_fee_per_million == 27.80


@pytest.mark.parametrize(("old", "new", "key", "problem"), [
    ("version: costs-v1", "version: costs-v2", "version", "does not match the file name 'costs-v1.yaml'"),
    ("  notional_bps: 0.0", "  notional_bps: 0.0\n  rebate: 0.1", "fees.rebate", "unknown key"),
    ("    minimum: 1.00", "    minimum: -1.00", "fees.commission.minimum", "must not be negative"),
    ("maximum_share_of_notional: 0.01", "maximum_share_of_notional: 2", "fees.commission.maximum_share_of_notional",
     "must be at most 1.0"),
    ("  finra_taf_maximum: 8.30", "  finra_taf_maximum: lots", "fees.finra_taf_maximum", "expected a number"),
    ("  sec_fee_per_million: 27.80", "", "fees.sec_fee_per_million", "missing"),
    ("    redis: 60.0", "    redis: 60.0\n    redis: 70.0", "redis", "given twice"),
    ("  embedded:", "  cloud: {vm: 1}\n  embedded:", "infrastructure.cloud", "unknown key"),
    ("as_of: 2026-11-27", "as_of: soon", "as_of", "expected a date"),
    ("currency: USD", "currency: dollars", "currency", "ISO 4217"),
])
def test_a_bad_cost_file_names_the_file_and_key(tmp_path, old, new, key, problem):
    text = DEFAULT_COSTS.read_text()
    assert old in text
    path = tmp_path / "costs-v1.yaml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(CostModelError) as err:
        load_costs(path)
    assert isinstance(err.value, EmpError) and err.value.key == key and problem in err.value.problem
    assert str(err.value).startswith(f"{path}: {key}: ")


def test_a_missing_tier_or_an_unreadable_file(tmp_path):
    text = DEFAULT_COSTS.read_text()
    path = tmp_path / "costs-v1.yaml"
    path.write_text(text[:text.index("  institutional:")])
    with pytest.raises(CostModelError, match=r"infrastructure\.institutional: missing"):
        load_costs(path)
    with pytest.raises(CostModelError, match="cannot read the cost model file"):
        load_costs(tmp_path / "nothing-v1.yaml")
    path.write_text("version: [")
    with pytest.raises(CostModelError, match="not valid YAML"):
        load_costs(path)
    path.write_text("")
    with pytest.raises(CostModelError, match="version: the file is empty: a cost model needs"):
        load_costs(path)


def test_the_outbox_and_journal_as_stored_feed_the_report(tmp_path):
    """The real tables (SQLite outbox): ClOrdIDs from the outbox, TransactTime as the executor journals it."""
    from emp_core.execution.outbox import ApprovedOrder, sqlite_outbox

    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    buy = ApprovedOrder(idem_key="sma|AAA|b1|paper", strategy="sma_cross", symbol="AAA", side="buy", qty=100,
                        policy_version="default-v1")
    sell = ApprovedOrder(idem_key="sma|AAA|b2|paper", strategy="sma_cross", symbol="AAA", side="sell", qty=100,
                         policy_version="default-v1")
    box.submit([buy, sell])
    box.record([{"session": "s", "exec_id": f"x{i}", "clordid": o.clordid, "msg_type": "8", "ord_status": "2",
                 "exec_type": "F", "symbol": "AAA", "side": side, "last_qty": 100, "last_px": px, "cum_qty": 100,
                 "avg_px": px, "transact_time": datetime(2026, 1, day, 15, 30),
                 "received_at": datetime(2026, 1, day, 16)}
                for i, (o, side, px, day) in enumerate([(buy, "1", 10.05, 5), (sell, "2", 10.95, 9)])])
    intents = pl.DataFrame({"idem_key": [buy.idem_key, sell.idem_key], "reference_price": [10.0, 11.0]})
    r = roi(box.journal(), box.entries(), intents, {"AAA": 12.0}, 10_000.0, COSTS, "embedded", PERIOD)
    row = r.strategies.row(0, named=True)
    # bought 100 at 10.05 (5 over 10.00), sold at 10.95 (5 under 11.00): gross 90, slippage 10.00
    assert row["strategy"] == "sma_cross" and row["slippage"] == pytest.approx(10.0)
    assert row["gross_pnl"] == pytest.approx(90.0)
    assert r.fills["fill_time"].to_list() == [datetime(2026, 1, 5, 15, 30), datetime(2026, 1, 9, 15, 30)]
