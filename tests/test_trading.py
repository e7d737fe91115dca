"""The trading path's core: which strategy trades, intents on the fused signals (point in time), sizing, the
policy's sequential decisions, the ledger's accounting, and the readiness gates passing and failing."""

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from emp_core.config import REPO_ROOT
from emp_core.evolution.fitness import FEATURE_COLUMNS
from emp_core.evolution.genome import CATALOGUE
from emp_core.execution.account import account
from emp_core.execution.outbox import ApprovedOrder, sqlite_outbox
from emp_core.risk.policy import DECISION_SCHEMA, Limits, Policy, Portfolio, StrategyRule, load_policy
from emp_core.store import DuckDBStore
from emp_core.trading import readiness
from emp_core.trading.book import book, market_as_of, read_market, working_orders
from emp_core.trading.intents import choose_strategy, decide, load_signals, plan_intents
from emp_core.trading.ledger import pnl, positions, value_at_risk

POLICY = load_policy(REPO_ROOT / "policies" / "default-v2.yaml")
DAY0 = datetime(2020, 1, 1)
N_DAYS = 120
SYMBOLS = ("AAA", "BBB", "CCC")


def _frames(seed: int = 0, days: int = N_DAYS) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    bars, feats = [], []
    for k, (symbol, drift) in enumerate(zip(SYMBOLS, (0.004, -0.004, 0.0), strict=True)):  # up, down, flat
        close = 100 * np.exp(np.cumsum(rng.normal(drift, 0.01 if drift else 0.0001, days)))
        ts = [DAY0 + timedelta(days=i) for i in range(days)]
        bars.append(pl.DataFrame({"symbol": symbol, "ts": ts, "open": close * 0.999, "high": close * 1.01,
                                  "low": close * 0.99, "close": close, "volume": 5e6 + k}))
        # a trend signal (the "what" dimension follows the 10-day return) and noise elsewhere
        ret10 = np.r_[np.zeros(10), np.log(close[10:] / close[:-10])]
        cols = {c: rng.uniform(-0.2, 0.2, days) for c in FEATURE_COLUMNS if c.endswith("_score")}
        cols |= {c: np.full(days, 0.8) for c in FEATURE_COLUMNS if c.endswith("_confidence")}
        cols["what_score"] = np.tanh(ret10 * 20)
        feats.append(pl.DataFrame({"dataset": "bars_1d", "symbol": symbol, "ts": ts, **cols}))
    return pl.concat(bars), pl.concat(feats)


def _store(path, bars: pl.DataFrame, feats: pl.DataFrame) -> DuckDBStore:
    store = DuckDBStore(path)
    nothing = pl.DataFrame(schema={"run_id": pl.String})
    store.replace_bars("bars_1d", bars, source="test", run_id="r", window=None, quarantine=nothing, journal=nothing)
    store.append_table("sensory.fused", feats)
    return store


@pytest.fixture
def market_store(tmp_path):
    return _store(tmp_path / "emp.duckdb", *_frames())


@pytest.fixture
def box(tmp_path):
    return sqlite_outbox(tmp_path / "outbox.sqlite")


def _plan(store, box, as_of=None, session="paper", strategy=None):
    strategy = strategy or choose_strategy(store, POLICY, session)
    universe, as_of = load_signals(store, as_of)
    market = read_market(store, as_of=as_of)
    return plan_intents(universe, as_of, strategy, book(box, market, session=session), market.last_bar,
                        session=session, run_id="run")


# ------------------------------------------------------------------------------------------------ strategy


def test_without_a_champion_the_paper_only_catalogue_genome_trades_on_paper_and_never_live(market_store):
    paper = choose_strategy(market_store, POLICY, "paper")
    assert paper.name == "catalogue/trend" and not paper.promoted and paper.ready
    assert paper.genome == CATALOGUE["trend"] and "no champion has been stored" in paper.source
    live = choose_strategy(market_store, POLICY, "live")
    assert not live.ready and "paper-only" in live.readiness
    gate = readiness.strategy_ready(live.name, live.promoted, live.ready, live.source, live.readiness)
    assert not gate.passed
    # an unknown fallback is an error, a strategy missing from the policy is not ready
    with pytest.raises(Exception, match="not in the catalogue"):
        choose_strategy(market_store, POLICY, "paper", fallback="nope")
    bare = Policy(version="t", strategies={})
    assert not choose_strategy(market_store, bare, "paper").ready


def _promote(store, genome, *, dsr=0.99, promoted=True):
    from emp_core.evolution.promotion import decision_schema
    from emp_core.evolution.run import DECISION_SCHEMA

    schema = DECISION_SCHEMA
    row = dict.fromkeys(schema)
    row |= {"run_id": "r1", "decided_at": datetime(2024, 1, 1), "dataset": "bars_1d", "genome": genome.name,
            "genome_hash": "h1", "trials_added": 10, "promoted": promoted, "reason": "test", "dsr": dsr,
            "oos_psr": 0.99, "pbo": 0.05, "gate_min_dsr": 0.95, "gate_min_oos_psr": 0.95, "gate_max_pbo": 0.2}
    assert set(decision_schema()) <= set(schema)
    store.append_table("evolution.decisions", pl.DataFrame([row], schema=schema))
    store.overwrite_table("evolution.champion", pl.DataFrame([genome.as_dict() | {"genome_hash": "h1",
                                                                                   "run_id": "r1"}]))


def test_a_promoted_champion_is_traded_and_a_refused_one_is_not(market_store):
    genome = CATALOGUE["mean_reversion"]
    _promote(market_store, genome)
    chosen = choose_strategy(market_store, POLICY, "paper")
    assert chosen.name == "champion" and chosen.promoted and chosen.genome == genome
    market_store.query("UPDATE evolution.decisions SET dsr = 0.5")  # below the platform's floor
    assert choose_strategy(market_store, POLICY, "paper").name == "catalogue/trend"


# ------------------------------------------------------------------------------------------------ intents


def test_intents_at_a_bar_do_not_see_later_bars(tmp_path, box):
    bars, feats = _frames()
    cut = DAY0 + timedelta(days=80)
    full = _store(tmp_path / "full.duckdb", bars, feats)
    truncated = _store(tmp_path / "cut.duckdb", bars.filter(pl.col("ts") <= cut), feats.filter(pl.col("ts") <= cut))
    # the future rewritten: prices and signals after the cut turned upside down
    later = pl.col("ts") > cut
    flipped = _store(tmp_path / "flip.duckdb",
                     bars.with_columns([pl.when(later).then(pl.col(c) * 3).otherwise(pl.col(c)) for c in
                                        ("open", "high", "low", "close")]),
                     feats.with_columns(pl.when(later).then(-pl.col("what_score")).otherwise(pl.col("what_score"))
                                        .alias("what_score")))
    plans = [_plan(s, box, as_of=cut).drop("run_id") for s in (full, truncated, flipped)]
    assert plans[0].equals(plans[1]) and plans[0].equals(plans[2])
    assert (plans[0]["as_of"] == cut).all() and (plans[0]["reference_price"].is_not_null()).all()
    # and the plan is not constant: at the last bar it differs (the signals moved)
    assert not _plan(full, box).drop("run_id", "as_of", "idem_key").equals(plans[0].drop("as_of", "idem_key"))


@pytest.mark.parametrize("position_size", [1.0, 0.1])
def test_sizing_is_the_smaller_of_the_sleeve_and_one_percent_risk_to_the_stop(market_store, box, position_size):
    from dataclasses import replace

    genome = replace(CATALOGUE["trend"], position_size=position_size)
    strategy = replace(choose_strategy(market_store, POLICY, "paper"), genome=genome)
    plan = _plan(market_store, box, strategy=strategy)
    last = {s: market_store.query(f"SELECT close FROM market.bars_1d WHERE symbol = '{s}' ORDER BY ts DESC "
                                  "LIMIT 1").item() for s in SYMBOLS}
    orders = plan.filter(pl.col("status") == "order")
    assert orders.height >= 1
    binding = set()
    for r in orders.iter_rows(named=True):
        price = last[r["symbol"]]
        sleeve = int(position_size * 1_000_000 / 3 // price)  # three symbols, equal weight
        risk = int(0.01 * 1_000_000 // (price * genome.stop_loss))  # 1% of equity to a stop 10% away
        assert abs(r["target_units"]) == min(sleeve, risk) and r["quantity"] == abs(r["target_units"])
        assert r["stop_price"] == pytest.approx(price * (0.9 if r["direction"] > 0 else 1.1))
        binding.add("sleeve" if sleeve < risk else "risk")
    assert binding == ({"risk"} if position_size == 1.0 else {"sleeve"})  # each rule binds in one case


def test_working_orders_and_positions_count_so_a_rerun_asks_only_for_the_difference(market_store, box):
    plan = _plan(market_store, box)
    row = plan.filter(pl.col("status") == "order").row(0, named=True)
    order = ApprovedOrder(idem_key="k1", strategy=row["strategy"], symbol=row["symbol"], side=row["side"],
                          qty=row["quantity"], stop_price=row["stop_price"], policy_version="t")
    box.submit([order])
    assert working_orders(box) == {row["symbol"]: row["target_units"]}
    again = _plan(market_store, box).filter(pl.col("symbol") == row["symbol"]).row(0, named=True)
    assert again["status"] == "hold" and again["working"] == row["target_units"]
    # half of it fills: position + rest still working = the same target
    box.record([{"session": "s", "exec_id": "x1", "clordid": order.clordid, "msg_type": "8", "ord_status": "1",
                 "exec_type": "F", "symbol": row["symbol"], "side": "1" if row["side"] == "buy" else "2",
                 "last_qty": row["quantity"] // 2, "last_px": row["reference_price"],
                 "cum_qty": row["quantity"] // 2, "avg_px": row["reference_price"]}])
    again = _plan(market_store, box).filter(pl.col("symbol") == row["symbol"]).row(0, named=True)
    sign = 1 if row["side"] == "buy" else -1
    assert again["position"] == sign * (row["quantity"] // 2)
    assert again["position"] + again["working"] == row["target_units"] and again["status"] == "hold"


def test_a_symbol_whose_signals_lag_gets_no_order_and_fails_freshness(tmp_path, box):
    bars, feats = _frames()
    last = feats["ts"].max()
    store = _store(tmp_path / "s.duckdb", bars, feats.filter((pl.col("symbol") != "CCC") | (pl.col("ts") < last)))
    plan = _plan(store, box)
    assert plan.filter(pl.col("symbol") == "CCC")["status"].item() == "stale"
    universe, as_of = load_signals(store)
    stale = {s: universe.ts[s][-1] for s in universe.symbols if universe.ts[s][-1] != np.datetime64(as_of)}
    gate = readiness.signals_fresh(stale, as_of, last, replay=False, session="paper", now=datetime(2026, 1, 1),
                                   max_age_days=4)
    assert not gate.passed and "CCC" in gate.description


def test_a_symbol_whose_history_ended_is_not_traded_and_does_not_fail_freshness(tmp_path, box):
    bars, feats = _frames()
    ended = DAY0 + timedelta(days=50)
    gone = (pl.col("symbol") != "CCC") | (pl.col("ts") <= ended)
    store = _store(tmp_path / "s.duckdb", bars.filter(gone), feats.filter(gone))
    plan = _plan(store, box)
    assert dict(plan.select("symbol", "status").rows())["CCC"] == "no_bar"
    assert plan.filter(pl.col("symbol") == "CCC")["quantity"].item() is None
    gate = readiness.signals_fresh({}, plan["as_of"][0], plan["as_of"][0], replay=False, session="paper",
                                   now=datetime(2026, 1, 1), max_age_days=4, not_trading={"CCC": ended})
    assert gate.passed and "CCC (last bar 2020-02-20)" in gate.description


# ------------------------------------------------------------------------------------------------ decisions


def test_decisions_are_sequential_so_the_batch_respects_the_aggregate_limits(market_store, box):
    plan = _plan(market_store, box)
    orders = plan.filter(pl.col("status") == "order")
    assert orders.height >= 2, "the fixture should give at least two orders"
    one = Policy(version="one", strategies={"catalogue/trend": StrategyRule(True, True)},
                 limits=Limits(max_open_positions=1))
    current = book(box, read_market(market_store))
    decisions, approved = decide(plan, current.portfolio, one, "paper")
    verdicts = decisions.filter(pl.col("step") == 1)
    assert verdicts.height == orders.height  # every intent with an order judged once
    assert len(approved) == 1 and verdicts["approved"].to_list() == [True] + [False] * (orders.height - 1)
    # the scarce slot goes to the strongest signal, not to the first name: weaken the first name's
    weak = plan.with_columns(pl.when(pl.col("symbol") == "AAA").then(0.01).otherwise(pl.col("signal"))
                             .alias("signal"))
    _, approved = decide(weak, current.portfolio, one, "paper")
    assert [o.symbol for o in approved] == ["BBB"]
    refused = decisions.filter(~pl.col("approved") & (pl.col("verdict") == "fail"))
    assert set(refused["check"]) == {"open_positions"}
    # judged each on its own (the old behaviour) every one would pass
    for r in orders.iter_rows(named=True):
        alone, _ = decide(orders.filter(pl.col("symbol") == r["symbol"]), current.portfolio, one, "paper")
        assert alone["approved"].all()


def test_a_paper_only_strategy_is_refused_on_a_live_session(market_store, box):
    plan = _plan(market_store, box, session="live")
    decisions, approved = decide(plan, book(box, read_market(market_store)).portfolio, POLICY, "live")
    assert decisions.height and not approved
    assert set(decisions.filter(pl.col("verdict") == "fail")["check"]) == {"paper_only"}


# ------------------------------------------------------------------------------------------------ ledger


def _fill(i, symbol, side, qty, px):
    return {"seq": i, "session": "s", "exec_id": f"x{i}", "clordid": f"c{i}", "msg_type": "8", "ord_status": "2",
            "exec_type": "F",
            "symbol": symbol, "side": side, "last_qty": str(qty), "last_px": str(px),
            "received_at": f"2024-01-0{i} 10:00:00"}


def test_positions_at_average_cost_keep_the_accounting_identity():
    journal = pl.DataFrame([_fill(1, "A", "1", 100, 10), _fill(2, "A", "1", 100, 12), _fill(3, "A", "2", 150, 13),
                            _fill(4, "A", "2", 100, 9), _fill(5, "B", "2", 10, 50)])
    held = positions(journal, {"A": 10.0, "B": 55.0}).sort("symbol")
    a, b = held.row(0, named=True), held.row(1, named=True)
    # by hand: avg 11 after two buys; selling 150 at 13 realises 300; selling 100 at 9 closes 50 (-100) and
    # opens a short of 50 at 9, marked at 10: -50 unrealised
    assert (a["units"], a["avg_cost"], a["realised_pnl"], a["unrealised_pnl"]) == (-50, 9.0, 200.0, -50.0)
    assert (b["units"], b["avg_cost"], b["unrealised_pnl"]) == (-10, 50.0, -50.0)
    acct = account(journal, {"A": 10.0, "B": 55.0}, 1_000.0)
    summary = pnl(held, 1_000.0, acct.cash)
    # cash: -1000 -1200 +1950 +900 +500 = 1150 -> 2150; book: -50 x 10 - 10 x 55 = -1050
    assert acct.cash == pytest.approx(2150.0) and summary["equity"] == pytest.approx(1100.0) == acct.equity
    assert summary["realised_pnl"] + summary["unrealised_pnl"] == pytest.approx(summary["equity"] - 1_000.0)


def test_var_of_a_flat_book_is_zero_and_of_a_held_one_follows_its_size(market_store):
    assert value_at_risk({}, {}, pl.DataFrame())["var_historical"] == 0.0
    bars = market_store.read_bars("bars_1d")
    marks = market_as_of(bars).prices
    small = value_at_risk({"AAA": 100}, marks, bars)
    large = value_at_risk({"AAA": 200}, marks, bars)
    assert small["n_observations"] == N_DAYS - 1 and small["var_historical"] > 0
    assert large["var_historical"] == pytest.approx(2 * small["var_historical"])
    # point in time: the VaR at a date ignores the returns after it
    cut = DAY0 + timedelta(days=110)
    assert value_at_risk({"AAA": 100}, marks, bars, cut)["n_observations"] == 110


# ------------------------------------------------------------------------------------------------ gates


def test_freshness_passes_on_current_or_replayed_signals_and_fails_on_lagging_or_old_ones():
    t = datetime(2024, 6, 3)
    now = t + timedelta(days=1)
    ok = readiness.signals_fresh({}, t, t, replay=False, session="live", now=now, max_age_days=4)
    assert ok.passed
    assert not readiness.signals_fresh({}, t, t + timedelta(days=1), replay=False, session="paper", now=now,
                                       max_age_days=4).passed  # bars ahead of the signals
    assert readiness.signals_fresh({}, t, t + timedelta(days=1), replay=True, session="paper", now=now,
                                   max_age_days=4).passed  # a replay of an earlier bar, asked for
    old = readiness.signals_fresh({}, t, t, replay=False, session="live", now=t + timedelta(days=5), max_age_days=4)
    assert not old.passed and "5.0 days old" in old.description
    assert readiness.signals_fresh({}, t, t, replay=True, session="paper", now=t + timedelta(days=500),
                                   max_age_days=4).passed


def test_reconciliation_and_risk_gates_fail_on_a_finding():
    from emp_core.execution.reconcile import FINDINGS_SCHEMA

    none = pl.DataFrame(schema=FINDINGS_SCHEMA)
    one = pl.DataFrame([("extra", "x1", "c1", None, None, None)], schema=FINDINGS_SCHEMA, orient="row")
    assert readiness.journal_reconciled(none, journal_reports=3, dropcopy_reports=3).passed
    failed = readiness.journal_reconciled(one, journal_reports=1, dropcopy_reports=0)
    assert not failed.passed and "drop-copy listener" in failed.description
    assert readiness.risk_ready(none, equity=1e6, orders=2, judged=2).passed
    assert not readiness.risk_ready(one, equity=1e6, orders=2, judged=2).passed
    assert not readiness.risk_ready(none, equity=0.0, orders=2, judged=2).passed
    assert not readiness.risk_ready(none, equity=1e6, orders=2, judged=1).passed


def test_the_book_marks_the_journal_at_the_market_of_its_bar(market_store, box):
    cut = DAY0 + timedelta(days=60)
    market = read_market(market_store, as_of=cut)
    closes = market_store.query("SELECT symbol, close FROM market.bars_1d WHERE ts = $t", {"t": cut})
    assert market.prices == dict(closes.rows()) and market.as_of == cut
    assert market.adv["AAA"] == pytest.approx(5e6)
    current = book(box, market)
    assert isinstance(current.portfolio, Portfolio) and current.account.equity == 1_000_000.0


# ------------------------------------------------------------------------------------------------ pinned details


def test_the_intent_at_a_bar_is_the_backtests_target_at_that_bar(market_store, box):
    """Live and backtest agree: the direction, signal and confidence at as_of are the genome's at that bar,
    also on a bar where the target has just changed (so the previous bar's would differ)."""
    from emp_core.evolution.genome import fused_signal, targets

    _, feats = _frames()
    genome = CATALOGUE["trend"]
    checked = 0
    for symbol in SYMBOLS:
        f = feats.filter(pl.col("symbol") == symbol).sort("ts")
        arrays = {c: f[c].to_numpy() for c in FEATURE_COLUMNS}
        target = targets(arrays, [genome])[:, 0]
        signal, confidence = (x[:, 0] for x in fused_signal(arrays, np.array([genome.weights])))
        changes = np.flatnonzero(np.diff(target) != 0) + 1
        for i in changes[-2:]:
            row = _plan(market_store, box, as_of=f["ts"][int(i)]).filter(pl.col("symbol") == symbol).row(
                0, named=True)
            assert row["direction"] == target[i] != target[i - 1]
            assert row["signal"] == pytest.approx(signal[i]) and row["confidence"] == pytest.approx(confidence[i])
            checked += 1
    assert checked >= 3


def test_shorts_have_their_stop_above_and_a_genome_without_a_stop_gets_the_default(market_store, box):
    from dataclasses import replace

    plan = _plan(market_store, box)
    short = plan.filter(pl.col("direction") == -1).row(0, named=True)
    assert short["side"] == "sell" and short["stop_price"] == pytest.approx(short["reference_price"] * 1.1)
    no_stop = replace(CATALOGUE["trend"], stop_loss=0.0)
    strategy = replace(choose_strategy(market_store, POLICY, "paper"), genome=no_stop)
    for r in _plan(market_store, box, strategy=strategy).filter(pl.col("status") == "order").iter_rows(named=True):
        assert r["stop_price"] == pytest.approx(r["reference_price"] * (0.9 if r["direction"] > 0 else 1.1))
    flat = plan.filter(pl.col("symbol") == "CCC").row(0, named=True)
    assert (flat["direction"], flat["target_units"], flat["status"]) == (0, 0, "hold")


def test_closing_orders_carry_no_stop_and_hold_the_position_to_zero(market_store, box):
    # a held long in CCC, whose target is flat: the intent sells it all, reduce-only, with no stop
    _filled(box, "c1", "CCC", "buy", 300, 100.0)
    row = _plan(market_store, box).filter(pl.col("symbol") == "CCC").row(0, named=True)
    assert (row["status"], row["side"], row["quantity"], row["stop_price"]) == ("order", "sell", 300, None)


def test_signals_are_read_up_to_the_bar_and_missing_inputs_are_named(tmp_path, market_store):
    from emp_core.errors import EmpError

    empty = DuckDBStore(tmp_path / "empty.duckdb")
    with pytest.raises(EmpError, match=r"trading needs market\.bars_1d and sensory\.fused"):
        load_signals(empty)
    bars, feats = _frames()
    only_bars = _store(tmp_path / "bars.duckdb", bars, feats.head(0))
    with pytest.raises(EmpError, match=r"no fused signals for bars_1d$"):
        load_signals(only_bars)
    with pytest.raises(EmpError, match="no fused signals for bars_1d at or before 2019-01-01"):
        load_signals(market_store, datetime(2019, 1, 1))
    universe, as_of = load_signals(market_store, DAY0 + timedelta(days=30))
    assert as_of == DAY0 + timedelta(days=30) and all(universe.ts[s][-1] == np.datetime64(as_of) for s in SYMBOLS)


def test_a_symbol_with_bars_but_no_signals_at_all_is_stale_and_the_others_still_planned(tmp_path, box):
    bars, feats = _frames()
    extra = bars.filter(pl.col("symbol") == "AAA").with_columns(pl.lit("A0").alias("symbol"))  # sorts first
    store = _store(tmp_path / "s.duckdb", pl.concat([extra, bars]), feats)
    plan = _plan(store, box)
    assert dict(plan.select("symbol", "status").rows()) == {"A0": "stale", "AAA": "order", "BBB": "order",
                                                             "CCC": "hold"}


def test_each_approval_moves_the_book_the_next_intent_is_judged_against():
    """By hand: equity 1e6, a held long of 1,000 X at 100 with its stop at 90 (heat 10,000). Buy 500 more X
    with a stop at 95: X becomes 1,500 with its stop at 95 (heat 7,500). Then buy 1,000 Y at 50, stop 45
    (heat 5,000): the exposure after it is 12,500 / 1e6 and the gross 1,500 x 100 + 1,000 x 50 = 200,000."""
    from emp_core.trading.intents import INTENT_SCHEMA

    def intent(symbol, qty, price, stop, key):
        return {"run_id": "r", "session": "paper", "strategy": "manual", "symbol": symbol, "status": "order",
                "side": "buy", "quantity": qty, "order_type": "market", "reference_price": price, "confidence": 1.0,
                "stop_price": stop, "idem_key": key}

    plan = pl.DataFrame([intent("X", 500, 100.0, 95.0, "k1"), intent("Y", 1000, 50.0, 45.0, "k2")],
                        schema=INTENT_SCHEMA)
    portfolio = Portfolio(equity=1e6, peak_equity=1e6, day_start_equity=1e6, positions={"X": 1000},
                          prices={"X": 100.0, "Y": 50.0}, adv={"X": 1e9, "Y": 1e9}, stops={"X": 90.0})
    decisions, approved = decide(plan, portfolio, POLICY, "paper")
    assert [o.idem_key for o in approved] == ["k1", "k2"]
    second = {r["check"]: r["value"] for r in decisions.filter(pl.col("idem_key") == "k2").iter_rows(named=True)}
    assert second["aggregate_exposure"] == pytest.approx(12_500 / 1e6)
    assert second["leverage"] == pytest.approx(200_000 / 1e6)
    assert second["open_positions"] == 2
    first = {r["check"]: r["value"] for r in decisions.filter(pl.col("idem_key") == "k1").iter_rows(named=True)}
    assert first["aggregate_exposure"] == pytest.approx(12_500 / 1e6)  # 1,000 x 10 held + 500 x 5 new
    # a close approved in the batch leaves nothing at risk behind it
    close = pl.DataFrame([intent("X", 1000, 100.0, None, "k3") | {"side": "sell"},
                          intent("Y", 1000, 50.0, 45.0, "k4")], schema=INTENT_SCHEMA)
    decisions, approved = decide(close, portfolio, POLICY, "paper")
    after = {r["check"]: r["value"] for r in decisions.filter(pl.col("idem_key") == "k4").iter_rows(named=True)}
    assert len(approved) == 2 and after["aggregate_exposure"] == pytest.approx(5_000 / 1e6)
    assert after["open_positions"] == 1
    empty, none = decide(plan.head(0), portfolio, POLICY, "paper")
    assert none == [] and empty.columns == ["run_id", "idem_key", *DECISION_SCHEMA]


def test_the_ledger_on_every_kind_of_fill():
    """By hand, per symbol: C a one-unit long closed and reversed by one unit; D opened and closed flat; E
    partly closed down to one unit; F a short covered one unit at a time."""
    fills = [("C", "1", 1, 10), ("C", "2", 2, 12),  # +1 @10, then sell 2 @12: realise 2, short 1 @12
             ("D", "1", 2, 10), ("D", "2", 2, 11),  # flat: realise 2
             ("E", "1", 3, 10), ("E", "2", 2, 12),  # realise 4, one left at 10
             ("F", "2", 10, 50), ("F", "1", 1, 45), ("F", "1", 1, 45)]  # short 10 @50, cover 2 @45: +10
    journal = pl.DataFrame([_fill(i + 1, *f) | {"received_at": "2024-01-01 10:00:00"} for i, f in enumerate(fills)])
    marks = {"C": 11.0, "D": 11.0, "E": 13.0, "F": 40.0}
    held = {r["symbol"]: r for r in positions(journal, marks).iter_rows(named=True)}
    assert {s: (r["units"], r["avg_cost"], r["realised_pnl"], r["unrealised_pnl"], r["fills"]) for s, r in
            held.items()} == {"C": (-1, 12.0, 2.0, 1.0, 2), "D": (0, None, 1.0 * 2, 0.0, 2),
                              "E": (1, 10.0, 4.0, 3.0, 2), "F": (-8, 50.0, 10.0, 80.0, 3)}
    acct = account(journal, marks, 10_000.0)
    summary = pnl(positions(journal, marks), 10_000.0, acct.cash)
    total = 2 + 1 + 2 + 4 + 3 + 10 + 80  # realised and unrealised, symbol by symbol
    assert summary["total_pnl"] == pytest.approx(total) and summary["equity"] == pytest.approx(acct.equity)
    assert summary["return"] == pytest.approx(total / 10_000.0) and summary["open_positions"] == 3
    assert summary["fills"] == len(fills)


def test_var_uses_the_last_250_returns_and_a_flat_book_reports_zeros():
    flat = value_at_risk({}, {}, pl.DataFrame())
    assert {k: v for k, v in flat.items() if k != "method"} == dict.fromkeys(
        ("var_historical", "es_historical", "var_parametric", "es_parametric", "var_monte_carlo", "es_monte_carlo",
         "n_observations"), 0)
    bars, _ = _frames(days=400)
    marks = market_as_of(bars).prices
    assert value_at_risk({"AAA": 10}, marks, bars)["n_observations"] == 250


def test_freshness_and_reconciliation_boundaries():
    t = datetime(2024, 6, 3)
    at_limit = readiness.signals_fresh({}, t, t, replay=False, session="live", now=t + timedelta(days=4),
                                       max_age_days=4)
    assert at_limit.passed and "signals current to 2024-06-03" in at_limit.description
    assert not readiness.signals_fresh({}, t, t, replay=False, session="live",
                                       now=t + timedelta(days=4, seconds=1), max_age_days=4).passed
    replay = readiness.signals_fresh({}, t, t, replay=True, session="paper", now=t, max_age_days=4)
    assert replay.description.startswith("replaying 2024-06-03 on a paper session")
    from emp_core.execution.reconcile import FINDINGS_SCHEMA

    none = pl.DataFrame(schema=FINDINGS_SCHEMA)
    empty = readiness.journal_reconciled(none, journal_reports=0, dropcopy_reports=0)
    assert empty.passed and "no execution reports yet" in empty.description
    assert "all 3 execution reports match" in readiness.journal_reconciled(
        none, journal_reports=3, dropcopy_reports=3).description
    assert readiness.risk_ready(none, equity=0.5, orders=0, judged=0).passed  # any positive equity


def test_working_orders_net_open_quantity_by_side_and_ignore_final_ones(box):
    def order(key, symbol, side, qty):
        return ApprovedOrder(idem_key=key, strategy="manual", symbol=symbol, side=side, qty=qty, policy_version="t")

    orders = [order("a", "AAA", "buy", 100), order("b", "BBB", "sell", 50), order("c", "AAA", "sell", 30),
              order("d", "CCC", "buy", 10), order("e", "CCC", "buy", 7)]
    box.submit(orders)

    def report(o, status, cum, i):
        return {"session": "s", "exec_id": f"r{i}", "clordid": o.clordid, "msg_type": "8", "ord_status": status,
                "symbol": o.symbol, "side": "1" if o.side == "buy" else "2", "cum_qty": cum}

    box.record([report(orders[1], "1", 20, 1),  # BBB: 30 of 50 still open
                report(orders[3], "2", 10, 2),  # CCC d: filled
                report(orders[4], "8", 0, 3)])  # CCC e: rejected
    # by hand: AAA +100 - 30 = 70; BBB -(50 - 20) = -30; CCC nothing open
    assert working_orders(box) == {"AAA": 70, "BBB": -30}


def test_held_stops_come_from_the_latest_order_in_the_positions_direction(box):
    from emp_core.trading.book import position_stops

    def order(key, symbol, side, stop):
        return ApprovedOrder(idem_key=key, strategy="manual", symbol=symbol, side=side, qty=1, stop_price=stop,
                             policy_version="t")

    box.submit([order("1", "AAA", "buy", 90.0), order("2", "AAA", "buy", 92.0), order("3", "AAA", "sell", None),
                order("4", "AAA", "sell", 120.0), order("5", "BBB", "sell", 55.0), order("6", "BBB", "buy", 40.0),
                order("7", "CCC", "buy", None)])
    assert position_stops(box, {"AAA": 10, "BBB": -5, "CCC": 3}) == {"AAA": 92.0, "BBB": 55.0}
    assert position_stops(box, {"AAA": -10}) == {"AAA": 120.0}


def test_the_market_reads_volume_up_to_the_bar_only(tmp_path):
    bars, feats = _frames()
    bars = bars.with_columns((pl.col("ts").rank("dense").over("symbol") * 1000.0).alias("volume"))  # 1000 x day
    store = _store(tmp_path / "v.duckdb", bars, feats)
    cut = DAY0 + timedelta(days=59)  # day 60: the mean of days 41..60 is 50,500
    market = read_market(store, as_of=cut)
    assert market.adv == dict.fromkeys(SYMBOLS, 50_500.0) and market.last_bar == dict.fromkeys(SYMBOLS, cut)
    latest = read_market(store, symbols=["AAA"])
    assert latest.adv == {"AAA": (N_DAYS - 9.5) * 1000.0} and latest.as_of == bars["ts"].max()
    from emp_core.errors import EmpError

    with pytest.raises(EmpError, match="no bars at or before 2019-01-01"):
        read_market(store, as_of=datetime(2019, 1, 1))


def test_a_held_position_without_a_price_is_refused(market_store, box):
    from emp_core.errors import EmpError

    _filled(box, "z", "ZZZ", "buy", 5, 10.0)
    with pytest.raises(EmpError, match=r"held position.* without a price at or before .*: ZZZ"):
        book(box, read_market(market_store))


def _filled(box, key, symbol, side, qty, px, session="paper"):
    o = ApprovedOrder(idem_key=key, strategy="manual", symbol=symbol, side=side, qty=qty, policy_version="t",
                      session=session)
    box.submit([o])
    box.record([{"session": "s", "exec_id": f"x-{key}", "clordid": o.clordid, "msg_type": "8", "ord_status": "2",
                 "exec_type": "F", "symbol": symbol, "side": "1" if side == "buy" else "2", "last_qty": qty,
                 "last_px": px, "cum_qty": qty, "avg_px": px}])
    return o


def test_the_policy_judges_against_filled_plus_working_so_a_reversal_is_not_reduce_only(market_store, box):
    """Held +300 AAA with a working sell of 300: a further sell of 300 opens a short. Judged against the fills
    alone it would pass as reduce-only (and so past the restricted list); against fills plus working it is new
    exposure in a restricted name, and refused."""
    from emp_core.risk.policy import Intent, evaluate

    _filled(box, "buy", "AAA", "buy", 300, 100.0)
    box.submit([ApprovedOrder(idem_key="sell1", strategy="manual", symbol="AAA", side="sell", qty=300,
                              policy_version="t")])
    current = book(box, read_market(market_store))
    assert current.account.positions == {"AAA": 300} and current.working == {"AAA": -300}
    assert "AAA" not in current.portfolio.positions  # committed: flat
    restricted = Policy(version="r", strategies={"manual": StrategyRule(True, False)},
                        limits=Limits(restricted=frozenset({"AAA"}), mandatory_stop_loss=False))
    price = current.portfolio.prices["AAA"]
    again = Intent(strategy="manual", symbol="AAA", side="sell", quantity=300, order_type="market",
                   reference_price=price, confidence=1.0)
    decision = evaluate(again, current.portfolio, restricted, "paper")
    assert not decision.approved and "restricted_list" in decision.failed  # (and no stop: all notional at risk)


def test_paper_and_live_are_separate_books(market_store, box):
    _filled(box, "p", "CCC", "buy", 300, 100.0, session="paper")
    _filled(box, "l", "AAA", "sell", 50, 100.0, session="live")
    market = read_market(market_store)
    assert book(box, market, session="paper").account.positions == {"CCC": 300}
    assert book(box, market, session="live").account.positions == {"AAA": -50}
    # the live plan does not sell the paper long (it would open a live short judged as a close)
    live = _plan(market_store, box, session="live", strategy=None)
    assert live.filter(pl.col("symbol") == "CCC")["position"].item() == 0


def test_only_trades_are_fills_and_a_duplicates_reject_leaves_the_order_alone(box):
    """A trade correction or bust (ExecType G, H) is not a new fill; a reject answering a duplicate ClOrdID
    (OrdRejReason 6) says nothing of the live order that holds that ClOrdID."""
    from emp_core.execution.account import fills

    order = _filled(box, "a", "AAA", "buy", 10, 100.0)
    box.record([{"session": "s", "exec_id": "bust", "clordid": order.clordid, "msg_type": "8", "ord_status": "2",
                 "exec_type": "H", "symbol": "AAA", "side": "1", "last_qty": 10, "last_px": 100.0}])
    assert fills(box.journal())["qty"].to_list() == [10.0]
    live = ApprovedOrder(idem_key="b", strategy="manual", symbol="AAA", side="buy", qty=5, policy_version="t")
    box.submit([live])
    box.record([{"session": "s", "exec_id": "n1", "clordid": live.clordid, "msg_type": "8", "ord_status": "0",
                 "exec_type": "0", "symbol": "AAA", "side": "1"},
                {"session": "s", "exec_id": "dup", "clordid": live.clordid, "msg_type": "8", "ord_status": "8",
                 "exec_type": "8", "symbol": "AAA", "side": "1", "reject_reason": "6"}])
    status = dict(box.status().select("clordid", "ord_status").rows())
    assert status[live.clordid] == "0" and working_orders(box) == {"AAA": 5}


def test_reconciliation_compares_symbol_and_side(box):
    from emp_core.execution.reconcile import reconcile

    report = {"session": "s", "exec_id": "e1", "clordid": "c1", "msg_type": "8", "ord_status": "2",
              "exec_type": "F", "symbol": "AAA", "side": "1", "last_qty": 5, "last_px": 10.0}
    box.record([report])
    box.record([report | {"side": "2", "symbol": "AAB"}], into="dropcopy")
    findings = reconcile(box)
    assert sorted(findings["field"].to_list()) == ["side", "symbol"] and set(findings["kind"]) == {"mismatched"}


def _held_aaa(market_store, box, units, *, stop, px=None):
    """A filled AAA long of ``units`` whose entry order named ``stop``; returns AAA's last bar."""
    last = market_store.query("SELECT * FROM market.bars_1d WHERE symbol = 'AAA' ORDER BY ts DESC LIMIT 1").row(
        0, named=True)
    o = ApprovedOrder(idem_key="held", strategy="catalogue/trend", symbol="AAA", side="buy", qty=units,
                      stop_price=stop, policy_version="t")
    box.submit([o])
    box.record([{"session": "s", "exec_id": "h1", "clordid": o.clordid, "msg_type": "8", "ord_status": "2",
                 "exec_type": "F", "symbol": "AAA", "side": "1", "last_qty": units,
                 "last_px": px or last["close"] * 0.98, "cum_qty": units, "avg_px": px or last["close"] * 0.98}])
    return last


def test_a_held_position_keeps_its_units_while_the_direction_holds(market_store, box):
    last = _held_aaa(market_store, box, 123, stop=1.0)  # sized differently from today's target, far stop
    row = _plan(market_store, box).filter(pl.col("symbol") == "AAA").row(0, named=True)
    assert row["direction"] == 1 and (row["status"], row["target_units"], row["note"]) == ("hold", 123, None)
    assert last["low"] > 1.0


def test_a_stop_the_bar_reached_exits_and_the_position_stays_out_until_the_direction_changes(market_store, box):
    last = _held_aaa(market_store, box, 100, stop=None)
    box.submit([ApprovedOrder(idem_key="stop-set", strategy="catalogue/trend", symbol="AAA", side="buy", qty=1,
                              stop_price=last["low"] + 0.01, policy_version="t")])  # latest stop: just above low
    row = _plan(market_store, box).filter(pl.col("symbol") == "AAA").row(0, named=True)
    assert (row["note"], row["status"], row["side"], row["target_units"]) == ("stop", "order", "sell", 0)
    assert row["quantity"] == 101  # the held 100 and the working 1
    # the next bar: flat, direction unchanged -> stays out; the direction flips -> trades again
    universe, as_of = load_signals(market_store)
    market = read_market(market_store, as_of=as_of)
    flat = sqlite_outbox(box.location + "-empty")
    strategy = choose_strategy(market_store, POLICY, "paper")
    out = plan_intents(universe, as_of, strategy, book(flat, market, session="paper"), market.last_bar,
                       session="paper", run_id="r2", previous={"AAA": ("stop", 1), "BBB": ("stop", 1)})
    rows = {r["symbol"]: r for r in out.iter_rows(named=True)}
    assert (rows["AAA"]["note"], rows["AAA"]["status"], rows["AAA"]["target_units"]) == ("stopped_out", "hold", 0)
    assert rows["BBB"]["direction"] == -1 and rows["BBB"]["status"] == "order"  # stopped long, now short: trades


def test_a_take_profit_the_bar_reached_exits(market_store, box):
    from dataclasses import replace

    last = _held_aaa(market_store, box, 100, stop=1.0, px=None)
    genome = replace(CATALOGUE["trend"], take_profit=0.01)  # avg cost 0.98 x close: the high is >1% above
    strategy = replace(choose_strategy(market_store, POLICY, "paper"), genome=genome)
    row = _plan(market_store, box, strategy=strategy).filter(pl.col("symbol") == "AAA").row(0, named=True)
    assert last["high"] >= last["close"] * 0.98 * 1.01
    assert (row["note"], row["side"], row["quantity"]) == ("take_profit", "sell", 100)


def test_drawdown_inputs_come_from_the_book_marked_at_every_close():
    """By hand: capital 10,000; 100 units bought at 50 thirty days ago (cash 5,000). Closes then rise to 60
    (a high between fills: equity 11,000), fall to 44 by two days ago and to 43 yesterday. Without the closes
    the peak is the fill's 10,000 and the start of day the fill's equity, 10,000: a month's slide reads as one
    day's 14%. With them the peak is 11,000 and the start of day yesterday's close: 9,300."""
    from datetime import date

    today = date(2026, 3, 2)
    fill = _fill(1, "A", "1", 100, 50.0) | {"received_at": str(datetime(2026, 1, 31, 15))}
    journal = pl.DataFrame([fill])
    days = [datetime(2026, 1, 31) + timedelta(days=i) for i in range(31)]  # to 2026-03-02 (today)
    path = [50.0] + [50.0 + i for i in range(1, 11)] + [60.0 - (i * 16 / 18) for i in range(1, 19)] + [43.0, 42.0]
    closes = pl.DataFrame({"symbol": "A", "ts": days, "close": path})
    assert path[10] == 60.0 and path[-3] == pytest.approx(44.0) and path[-2] == 43.0  # yesterday: 43
    plain = account(journal, {"A": 42.0}, 10_000.0, today=today)
    assert (plain.peak_equity, plain.day_start_equity) == (10_000.0, 10_000.0)
    marked = account(journal, {"A": 42.0}, 10_000.0, today=today, closes=closes)
    assert marked.peak_equity == pytest.approx(11_000.0) and marked.day_start_equity == pytest.approx(9_300.0)
    assert marked.equity == plain.equity == pytest.approx(9_200.0)  # today's mark is the same


# ------------------------------------------------------------------------------------------------ second review


def test_a_data_field_is_read_by_quickfix_not_split_into_fake_fields():
    import quickfix as qf

    from emp_core.execution import fix
    from emp_core.execution.fix import ExecReport, parse

    real = ExecReport("O1", "X1", "F", "2", "C1", "AAA", "1", 10.0, 0.0, 10.0, 100.0, last_qty=10.0, last_px=100.0)
    message = real.to_message()
    xml = "<a/>\x0117=FAKE\x0132=999"
    message.getHeader().setField(qf.IntField(212, len(xml)))
    message.getHeader().setField(qf.StringField(213, xml))
    assert fix.field_view(message) is message  # quickfix reads it
    got = parse(message)
    assert (got.exec_id, got.last_qty) == ("X1", 10.0)


def test_a_report_the_executor_cannot_parse_is_rejected_not_swallowed(tmp_path, box):
    import quickfix as qf

    from emp_core.execution.executor import Executor
    from emp_core.execution.fix import ExecReport, write_settings

    cfg = write_settings(tmp_path / "e.cfg", role="initiator", sessions=[("EMP", "VENUE")], port=9,
                         store_dir=tmp_path / "store")
    def must_not_fail_stop(exc):
        raise AssertionError(f"fail-stop on a content problem: {exc}")

    executor = Executor(cfg, box, on_journal_failure=must_not_fail_stop)
    sid = qf.SessionID("FIX.4.4", "EMP", "VENUE")
    report = ExecReport("O1", "X1", "0", "0", "C1", "AAA", "1", 10.0, 10.0, 0.0, 0.0).to_message()
    report.removeField(11)  # ClOrdID is optional in FIX 4.4, but the journal keys on it
    with pytest.raises(qf.FieldNotFound):
        executor.app.from_app(report, sid)
    garbled = ExecReport("O1", "X1", "0", "0", "C1", "AAA", "1", 10.0, 10.0, 0.0, 0.0).to_message()
    garbled.setField(qf.StringField(14, "ten"))  # CumQty not a number: our parse refuses it
    with pytest.raises(qf.IncorrectTagValue):
        executor.app.from_app(garbled, sid)
    assert box.journal().is_empty()


def test_a_reason_6_reject_of_a_first_send_is_the_orders_state(box):
    first = ApprovedOrder(idem_key="a", strategy="manual", symbol="AAA", side="buy", qty=100, policy_version="t")
    box.submit([first])
    box.record([{"session": "s", "exec_id": "r1", "clordid": first.clordid, "msg_type": "8", "ord_status": "8",
                 "exec_type": "8", "symbol": "AAA", "side": "1", "reject_reason": "6"}])
    assert dict(box.status().select("clordid", "ord_status").rows()) == {first.clordid: "8"}
    assert working_orders(box) == {}
    # an order reported on, then a duplicate's reject: still working, and it can be cancelled
    second = ApprovedOrder(idem_key="b", strategy="manual", symbol="AAA", side="buy", qty=5, policy_version="t")
    box.submit([second])
    box.record([{"session": "s", "exec_id": "n2", "clordid": second.clordid, "msg_type": "8", "ord_status": "0",
                 "exec_type": "0", "symbol": "AAA", "side": "1"},
                {"session": "s", "exec_id": "d2", "clordid": second.clordid, "msg_type": "8", "ord_status": "8",
                 "exec_type": "8", "symbol": "AAA", "side": "1", "reject_reason": "6"}])
    assert working_orders(box) == {"AAA": 5} and box.request_cancel(second.clordid).endswith("-C1")


def test_the_stop_memory_survives_reruns_and_bars_without_a_row(tmp_path):
    from emp_dagster.defs.trading.assets import _previous

    store = DuckDBStore(tmp_path / "p.duckdb")
    t1, t2 = datetime(2024, 1, 2), datetime(2024, 1, 3)

    def row(as_of, status, note, direction, planned):
        return {"run_id": "r", "as_of": as_of, "session": "paper", "strategy": "s", "symbol": "AAA",
                "status": status, "note": note, "direction": direction, "planned_at": planned}

    store.append_table("trading.intents", pl.DataFrame([
        row(t1, "order", "stop", 1, datetime(2024, 1, 2, 18)),  # the exit
        row(t1, "hold", None, 1, datetime(2024, 1, 2, 19)),  # a re-run of that bar after the exit filled
        row(t2, "no_bar", None, None, datetime(2024, 1, 3, 18)),  # a bar without a row for the symbol
    ], schema_overrides={"direction": pl.Int64, "note": pl.String}))
    assert _previous(store, "s", "paper", datetime(2024, 1, 4)) == {"AAA": ("stop", 1)}
    assert _previous(store, "s", "live", datetime(2024, 1, 4)) == {}


def test_an_exit_that_did_not_happen_is_planned_again(market_store, box):
    _held_aaa(market_store, box, 100, stop=1.0)  # the bar is far above this stop
    universe, as_of = load_signals(market_store)
    market = read_market(market_store, as_of=as_of)
    strategy = choose_strategy(market_store, POLICY, "paper")
    out = plan_intents(universe, as_of, strategy, book(box, market, session="paper"), market.last_bar,
                       session="paper", run_id="r", previous={"AAA": ("stop", 1)})
    row = out.filter(pl.col("symbol") == "AAA").row(0, named=True)
    assert (row["note"], row["side"], row["quantity"]) == ("stop", "sell", 100)


def test_with_closes_the_peak_ignores_fill_time_marks_at_stale_prices():
    """By hand (second review): A and B, 1,000 each at 100 on capital 200,000 (cash 0). A goes to 150 and B to
    50 at every close: equity 200,000 throughout. Selling 100 A at 150 marks B at its fill price 100 in the
    fill-time equity (250,000), a phantom peak; the closes give 200,000."""
    from datetime import date

    fills_ = [_fill(1, "A", "1", 1000, 100.0) | {"received_at": "2026-01-05 15:00:00"},
              _fill(2, "B", "1", 1000, 100.0) | {"received_at": "2026-01-05 15:00:00"},
              _fill(3, "A", "2", 100, 150.0) | {"received_at": "2026-01-08 15:00:00"}]
    days = [datetime(2026, 1, 6) + timedelta(days=i) for i in range(5)]
    closes = pl.concat([pl.DataFrame({"symbol": s, "ts": days, "close": c}) for s, c in (("A", 150.0), ("B", 50.0))])
    marked = account(pl.DataFrame(fills_), {"A": 150.0, "B": 50.0}, 200_000.0, today=date(2026, 1, 11),
                     closes=closes)
    assert marked.peak_equity == pytest.approx(200_000.0) and marked.equity == pytest.approx(200_000.0)
    plain = account(pl.DataFrame(fills_), {"A": 150.0, "B": 50.0}, 200_000.0, today=date(2026, 1, 11))
    assert plain.peak_equity == pytest.approx(250_000.0)  # what the fills alone say


def test_a_settings_file_with_a_password_is_private(tmp_path):
    import stat

    from emp_core.execution.fix import write_settings

    path = write_settings(tmp_path / "c.cfg", role="initiator", sessions=[("EMP", "VENUE")], port=9,
                          store_dir=tmp_path / "s", credentials={("EMP", "VENUE"): ("user", "secret")})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(("units", "low", "high", "stop", "entry", "tp", "expected"), [
    (1, 90.0, 101.0, 90.0, 100.0, 0.0, "stop"),  # a one-unit long, the low exactly at its stop
    (1, 90.01, 101.0, 90.0, 100.0, 0.0, None),  # a cent above: held
    (5, 95.0, 125.0, 90.0, 100.0, 0.25, "take_profit"),  # the high exactly at entry x 1.25 (exact in binary)
    (5, 95.0, 124.99, 90.0, 100.0, 0.25, None),
    (5, 95.0, 109.99, None, 100.0, 0.0, None),  # no stop, no take-profit: held
    (-1, 95.0, 110.0, 110.0, 100.0, 0.0, "stop"),  # a one-unit short, the high exactly at its stop
    (-1, 95.0, 109.99, 110.0, 100.0, 0.0, None),
    (-3, 75.0, 101.0, 110.0, 100.0, 0.25, "take_profit"),  # the low exactly at entry x 0.75
    (-3, 75.01, 101.0, 110.0, 100.0, 0.25, None),
    (-3, 80.0, 120.0, None, None, 0.10, None),  # no stop known, no entry known: nothing to judge
    (0, 0.0, 1e9, 50.0, 100.0, 0.10, None),  # flat: no exit
])
def test_the_exit_rule_at_its_boundaries(units, low, high, stop, entry, tp, expected):
    from emp_core.trading.intents import _exit_rule

    assert _exit_rule(units, low, high, stop, entry, tp) == expected
