"""Trading as assets: intents -> risk decisions -> approved orders (into the outbox, for ``emp executor``), and
what the execution journal says came back: executions, positions, PnL, VaR, reconciliation with the drop copy.

The readiness gates are blocking checks: ``signals_fresh``, ``strategy_ready`` and ``compliance_clear`` (no
open post-trade compliance breach) on the intents, ``risk_ready`` on the decisions, so nothing reaches the
outbox unless all four pass; ``journal_reconciled`` on the reconciliation. Each order is judged by the risk
policy and the trade compliance rules, and every decision, breach, order and execution is audited. The work
is emp_core's (``emp_core.trading``); these are thin wrappers.
"""


from datetime import datetime, timedelta

import dagster as dg
import polars as pl

from emp_core.clock import utcnow
from emp_core.compliance import trail
from emp_core.compliance.trade import (
    DEFAULT_COMPLIANCE_POLICY,
    PreTrade,
    day_orders,
    load_compliance_policy,
    open_breaches,
    pre_trade_breaches,
    record_breaches,
    unjudged_fills,
)
from emp_core.errors import EmpError
from emp_core.execution.account import account
from emp_core.execution.outbox import ApprovedOrder, clordid_for, open_outbox
from emp_core.execution.reconcile import reconcile
from emp_core.risk.policy import load_policy
from emp_core.trading import readiness
from emp_core.trading.book import PAPER_CAPITAL, book, read_market, session_orders
from emp_core.trading.intents import DEFAULT_FALLBACK, choose_strategy, decide, load_signals, plan_intents
from emp_core.trading.ledger import pnl, positions, value_at_risk
from emp_dagster.defs.evolution.assets import KEYS as EVOLUTION_KEYS
from emp_dagster.defs.market_data.assets import BAR_KEYS
from emp_dagster.defs.market_data.resources import StoreResource, store_kind
from emp_dagster.defs.sensory.assets import KEYS as SENSORY_KEYS
from emp_dagster.edge import check_result

GROUP = "trading"
# compliance/audit_verification (emp_dagster/defs/compliance/assets.py, which reads this module's keys)
AUDIT_VERIFICATION = dg.AssetKey(["compliance", "audit_verification"])
NAMES = ("intents", "risk_decisions", "approved_orders", "executions", "positions", "pnl", "var", "reconciliation")
KEYS = {name: dg.AssetKey(["trading", name]) for name in NAMES}
TABLES = {name: f"trading.{name}" for name in NAMES} | {"executions": "trading.execution_reports",
                                                        "gates": "trading.gates"}
SIGNALS_FRESH, STRATEGY_READY, RISK_READY, JOURNAL_RECONCILED, COMPLIANCE_CLEAR = (
    "signals_fresh", "strategy_ready", "risk_ready", "journal_reconciled", "compliance_clear")
PLAN_GATES = (SIGNALS_FRESH, STRATEGY_READY, COMPLIANCE_CLEAR)


def default_policy() -> str:
    from emp_core.execution.cli import DEFAULT_POLICY

    return str(DEFAULT_POLICY)


class TradingConfig(dg.Config):
    """The paper-trading plan: the session kind, the bar traded on, the strategy's fallback, the policy."""

    session: str = "paper"  # paper or live: the outbox orders are marked for that kind of executor session
    as_of: str = ""  # the bar to trade on (ISO date or time); empty: the last fused signal
    fallback_genome: str = DEFAULT_FALLBACK  # catalogue genome traded on paper when no champion is promoted
    policy: str = ""  # risk policy file; empty: policies/default-v2.yaml
    compliance_policy: str = ""  # trade compliance rules; empty: policies/compliance-v1.yaml
    capital: float = PAPER_CAPITAL  # the account's starting capital (equity = capital + the journal's P&L)
    max_signal_age_days: float = 4.0  # a live session's freshness limit
    require_reconciled: bool = True  # risk_ready fails while the journal and the drop copy disagree

    def checked(self) -> "TradingConfig":
        if self.session not in ("paper", "live"):
            raise EmpError(f"trading config: session {self.session!r} must be paper or live")
        return self

    def as_of_time(self) -> datetime | None:
        if not self.as_of:
            return None
        try:
            return datetime.fromisoformat(self.as_of)
        except ValueError:
            raise EmpError(f"trading config: as_of {self.as_of!r} is not an ISO date or time") from None

    def policy_file(self) -> str:
        return self.policy or default_policy()

    def compliance_file(self) -> str:
        return self.compliance_policy or str(DEFAULT_COMPLIANCE_POLICY)


def _plan(store, run_id: str, session: str) -> pl.DataFrame:
    """The intents this run planned; else (a step run on its own) the last plan of ``session``."""
    table = TABLES["intents"]
    if table not in set(store.tables()):
        raise EmpError(f"{table} is empty: materialise trading/intents first")
    mine = store.query(f"SELECT * FROM {table} WHERE run_id = $r", {"r": run_id})
    if mine.height:
        return mine
    last = store.query(f"SELECT * FROM {table} WHERE run_id = (SELECT run_id FROM {table} WHERE session = $k "
                       "ORDER BY planned_at DESC LIMIT 1)", {"k": session})
    if last.is_empty():
        raise EmpError(f"{table} holds no plan for a {session} session: materialise trading/intents first")
    return last


def _record_gates(db, run_id: str, *outcomes) -> None:
    """Keep each gate's verdict with the plan's run id (``trading.gates``): the later steps check them from the
    store, so running one of them on its own (or re-executing from a failure) cannot pass a failed gate."""
    db.append_table(TABLES["gates"], pl.DataFrame(
        [{"run_id": run_id, "check": o.name, "passed": o.passed, "description": o.description,
          "checked_at": utcnow()} for o in outcomes]))


def _require_gates(db, run_id: str, names: tuple[str, ...], step: str) -> None:
    """Raise unless each gate in ``names`` passed for the plan ``run_id`` (its latest verdict)."""
    verdicts = {}
    if TABLES["gates"] in set(db.tables()):
        rows = db.query(f"SELECT \"check\", passed FROM {TABLES['gates']} WHERE run_id = $r ORDER BY checked_at",
                        {"r": run_id})
        verdicts = dict(rows.rows())
    bad = [n for n in names if not verdicts.get(n)]
    if bad:
        raise EmpError(f"{step}: the plan of run {run_id} has not passed {', '.join(bad)} "
                       f"({', '.join('failed' if n in verdicts else 'not checked' for n in bad)}); nothing done")


def _closes(db, as_of: datetime):
    """The daily closes of some symbols up to ``as_of``, for the drawdown gates' marks (``book``)."""
    return lambda symbols: db.read_bars("bars_1d", symbols=symbols, end=as_of + timedelta(microseconds=1)).select(
        "symbol", "ts", "close")


def _previous(db, strategy: str, session: str, as_of: datetime) -> dict:
    """Per symbol, the note and direction of this strategy's last plan before ``as_of`` (stops stay out)."""
    if TABLES["intents"] not in set(db.tables()) or "note" not in db.query(
            f"SELECT * FROM {TABLES['intents']} LIMIT 0").columns:  # none yet, or written before notes were kept
        return {}
    # the last bar the symbol was planned on (a stale or no-bar row says nothing of its position), and of that
    # bar's plans the one with a note: a re-run after the exit filled must not erase the exit
    rows = db.query(f"SELECT symbol, note, direction FROM (SELECT symbol, note, direction, row_number() OVER "
                    f"(PARTITION BY symbol ORDER BY as_of DESC, (note IS NOT NULL) DESC, planned_at DESC) AS n "
                    f"FROM {TABLES['intents']} WHERE strategy = $s AND session = $k AND as_of < $t "
                    "AND status IN ('order', 'hold')) AS p WHERE n = 1",
                    {"s": strategy, "k": session, "t": as_of})
    return {sym: (note, direction) for sym, note, direction in rows.rows()}


def _md(frame: pl.DataFrame, rows: int = 30) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.head(rows).to_pandas().to_markdown(index=False) if frame.height else "(none)")


@dg.asset(key=KEYS["intents"], group_name=GROUP, kinds={store_kind()},
          deps=[BAR_KEYS["bars_1d"], SENSORY_KEYS["fused"], EVOLUTION_KEYS["decision"],
                AUDIT_VERIFICATION],
          description="The strategy's orders on the bar traded on: the promoted champion, or a paper-only "
                      "catalogue genome when none is promoted (says which), applied to the fused signals; one row "
                      "per symbol with its target, position, working orders and the order that closes the gap.",
          check_specs=[
              dg.AssetCheckSpec(SIGNALS_FRESH, asset=KEYS["intents"], blocking=True,
                                description="Every symbol has a fused signal on the bar traded on, the signals are "
                                            "not behind the bars, and a live session trades a recent bar."),
              dg.AssetCheckSpec(STRATEGY_READY, asset=KEYS["intents"], blocking=True,
                                description="A promoted champion, or a strategy the policy lets trade on this "
                                            "session (a paper-only catalogue genome on a paper session)."),
              dg.AssetCheckSpec(COMPLIANCE_CLEAR, asset=KEYS["intents"], blocking=True,
                                description="No post-trade compliance breach is open (each found on a fill must "
                                            "be resolved by a compliance officer: emp compliance resolve), and "
                                            "the compliance report has judged every fill."),
          ])
def intents(context: dg.AssetExecutionContext, config: TradingConfig, store: StoreResource):
    config.checked()
    db = store.store()
    policy = load_policy(config.policy_file())
    strategy = choose_strategy(db, policy, config.session, fallback=config.fallback_genome)
    universe, as_of = load_signals(db, config.as_of_time())
    market = read_market(db, as_of=as_of)
    box = open_outbox()
    frame = plan_intents(universe, as_of, strategy,
                         book(box, market, config.capital, config.session, closes=_closes(db, as_of)),
                         market.last_bar, session=config.session, run_id=context.run_id,
                         previous=_previous(db, strategy.name, config.session, as_of))
    frame = frame.with_columns(pl.lit(utcnow()).alias("planned_at"))
    db.append_table(TABLES["intents"], frame)
    status = dict(frame.select("symbol", "status").rows())
    last_signal = {s: universe.ts[s][-1] if s in universe.ts else None for s in status}
    latest_bar = db.query("SELECT max(ts) AS t FROM market.bars_1d")["t"][0]
    fresh = readiness.signals_fresh({s: last_signal[s] for s, v in status.items() if v == "stale"}, as_of, latest_bar,
                                    replay=bool(config.as_of) and config.session == "paper", session=config.session,
                                    tradable=sum(v in ("order", "hold") for v in status.values()),
                                    now=utcnow().replace(tzinfo=None), max_age_days=config.max_signal_age_days,
                                    not_trading={s: market.last_bar.get(s) for s, v in status.items() if v == "no_bar"})
    ready = readiness.strategy_ready(strategy.name, strategy.promoted, strategy.ready, strategy.source,
                                     strategy.readiness)
    clear = readiness.compliance_clear(open_breaches(db), unjudged_fills(db, box.journal()))
    _record_gates(db, context.run_id, fresh, ready, clear)
    orders = frame.filter(pl.col("status") == "order")
    context.log.info(f"trading {strategy.name}: {strategy.source}")
    return dg.MaterializeResult(
        metadata={"table": TABLES["intents"], "dagster/row_count": frame.height, "strategy": strategy.name,
                  "strategy_source": strategy.source, "as_of": str(as_of), "session": config.session,
                  "orders": orders.height, "outbox": str(box),
                  "intents": _md(orders.select("symbol", "direction", "signal", "confidence", "target_units",
                                               "position", "working", "side", "quantity", "stop_price"))},
        check_results=[check_result(fresh), check_result(ready), check_result(clear)])


@dg.asset(key=KEYS["risk_decisions"], group_name=GROUP, kinds={store_kind()}, deps=[KEYS["intents"]],
          description="The risk policy's decision on each intent with an order (every check a row: policy "
                      "version, check, value, limit, verdict, reason), each judged against the portfolio after "
                      "the orders approved before it.",
          check_specs=[dg.AssetCheckSpec(RISK_READY, asset=KEYS["risk_decisions"], blocking=True,
                                         description="The journal reconciles with the drop copy, equity is "
                                                     "positive, and every intent with an order got one decision.")])
def risk_decisions(context: dg.AssetExecutionContext, config: TradingConfig, store: StoreResource):
    config.checked()
    db = store.store()
    policy = load_policy(config.policy_file())
    planned = _plan(db, context.run_id, config.session)
    run, session = planned["run_id"][0], planned["session"][0]
    _require_gates(db, run, PLAN_GATES, "risk_decisions")
    market = read_market(db, as_of=planned["as_of"][0])
    box = open_outbox()
    current = book(box, market, config.capital, session, closes=_closes(db, planned["as_of"][0]))
    rules = load_compliance_policy(config.compliance_file())
    decided_at = utcnow()
    pre = PreTrade(rules, tuple(day_orders(box.entries(), box.status(), session)), decided_at)
    decisions, approved = decide(planned, current.portfolio, policy, session, compliance=pre)
    decisions = decisions.with_columns(pl.lit(run).alias("run_id"), pl.lit(decided_at).alias("planned_at"))
    db.append_table(TABLES["risk_decisions"], decisions)  # created even when empty: a plan with no order
    trail.record(db, trail.decision_events(decisions))
    breaches = record_breaches(db, pre_trade_breaches(decisions, decided_at))
    findings = reconcile(box) if config.require_reconciled else reconcile(box).clear()
    orders = planned.filter(pl.col("status") == "order").height
    gate = readiness.risk_ready(findings, equity=current.account.equity, orders=orders,
                                judged=decisions["idem_key"].n_unique() if decisions.height else 0)
    _record_gates(db, run, gate)
    verdicts = (decisions.group_by("idem_key", "symbol", "side", "quantity", "approved", maintain_order=True)
                .agg(pl.col("reason").filter(pl.col("verdict") == "fail").first().alias("refused_by"))
                if decisions.height else decisions)
    return dg.MaterializeResult(
        metadata={"table": TABLES["risk_decisions"], "dagster/row_count": decisions.height,
                  "policy": policy.version, "compliance_policy": rules.version, "approved": len(approved),
                  "refused": orders - len(approved), "compliance_breaches": breaches.height,
                  "equity": round(current.account.equity, 2),
                  "decisions": _md(verdicts.drop("idem_key") if verdicts.height else verdicts)},
        check_results=[check_result(gate)])


@dg.asset(key=KEYS["approved_orders"], group_name=GROUP, kinds={store_kind(), "sqlite"},
          deps=[KEYS["risk_decisions"]],
          description="The approved orders, written to the outbox (each once: its ClOrdID is a function of its "
                      "idempotency key) for `emp executor` to send.")
def approved_orders(context: dg.AssetExecutionContext, config: TradingConfig, store: StoreResource):
    db = store.store()
    planned = _plan(db, context.run_id, config.session)
    run = planned["run_id"][0]
    _require_gates(db, run, (*PLAN_GATES, RISK_READY), "approved_orders")
    decisions = db.query(f"SELECT * FROM {TABLES['risk_decisions']} WHERE run_id = $r AND planned_at = "
                         f"(SELECT max(planned_at) FROM {TABLES['risk_decisions']} WHERE run_id = $r)", {"r": run})
    box = open_outbox()
    orders = []
    for r in planned.filter(pl.col("status") == "order").iter_rows(named=True):
        rows = decisions.filter(pl.col("idem_key") == r["idem_key"]).sort("step")
        if not rows.height or not rows["approved"][0]:
            continue
        orders.append(ApprovedOrder(idem_key=r["idem_key"], strategy=r["strategy"], symbol=r["symbol"],
                                    side=r["side"], qty=int(r["quantity"]), ord_type=r["order_type"],
                                    stop_price=r["stop_price"], session=r["session"],
                                    policy_version=rows["policy_version"][0],
                                    decision=rows.drop("run_id", "idem_key", "planned_at").to_dicts()))
    # the gate again, now: a breach found (or a fill left unjudged) since the plan was made stops the send too
    clear = readiness.compliance_clear(open_breaches(db), unjudged_fills(db, box.journal()))
    if not clear.passed:
        raise EmpError(f"approved_orders: {clear.description}; nothing put in the outbox")
    # audited before the outbox holds them (once per ClOrdID: a re-run's orders are already in the trail), so
    # the executor never sends an order the audit trail has not seen
    audited = trail.audited(db, "order", "clordid")
    trail.record(db, trail.order_events(pl.DataFrame(
        [{"run_id": run, "idem_key": o.idem_key, "clordid": clordid_for(o.idem_key), "strategy": o.strategy,
          "symbol": o.symbol, "side": o.side, "qty": o.qty, "session": o.session} for o in orders
         if clordid_for(o.idem_key) not in audited],
        schema={"run_id": pl.String, "idem_key": pl.String, "clordid": pl.String, "strategy": pl.String,
                "symbol": pl.String, "side": pl.String, "qty": pl.Int64, "session": pl.String})))
    submitted = box.submit(orders)
    # an idempotency key already in the outbox keeps its first order: record that one, and say so if it differs
    held = {r["clordid"]: r for r in box.entries().iter_rows(named=True)} if not all(n for _, n in submitted) else {}
    for o, (c, new) in zip(orders, submitted, strict=True):
        if not new and (held[c]["side"], held[c]["qty"]) != (o.side, o.qty):
            context.log.warning(f"{o.idem_key}: the outbox already holds {c} ({held[c]['side']} {held[c]['qty']}); "
                                f"this plan's {o.side} {o.qty} is not sent")
    frame = pl.DataFrame(
        [{"run_id": run, "idem_key": o.idem_key, "clordid": c, "new": new, "symbol": o.symbol,
          "side": o.side if new else held[c]["side"], "qty": o.qty if new else held[c]["qty"],
          "session": o.session, "submitted_at": utcnow()}
         for o, (c, new) in zip(orders, submitted, strict=True)],
        schema={"run_id": pl.String, "idem_key": pl.String, "clordid": pl.String, "new": pl.Boolean,
                "symbol": pl.String, "side": pl.String, "qty": pl.Int64, "session": pl.String,
                "submitted_at": pl.Datetime("us")})
    if frame.height:
        db.append_table(TABLES["approved_orders"], frame)
    return dg.MaterializeResult(metadata={
        "outbox": str(box), "dagster/row_count": frame.height, "new": int(frame["new"].sum()),
        "already_in_outbox": int((~frame["new"]).sum()), "outbox_depth": box.depth(),
        "orders": _md(frame.select("clordid", "symbol", "side", "qty", "new"))})


class JournalConfig(dg.Config):
    """Where the book is marked: the last close at or before ``mark_as_of`` (empty: the latest bar)."""

    mark_as_of: str = ""
    capital: float = PAPER_CAPITAL
    session: str = "paper"  # the book of this kind's orders (paper and live are separate books)


@dg.multi_asset(
    name="journal",
    specs=[dg.AssetSpec(KEYS[n], group_name=GROUP, kinds={store_kind()}, description=d) for n, d in (
        ("executions", "Every ExecutionReport and OrderCancelReject the executor journaled, once each."),
        ("positions", "Positions from the journal's fills at average cost, marked at the last close: realised "
                      "and unrealised P&L."),
        ("pnl", "The paper account: capital, cash, equity, realised and unrealised P&L, exposure."),
        ("var", "One-bar 99% VaR and expected shortfall of the held positions (historical, parametric, "
                "Monte Carlo) on the last 250 daily returns."),
    )])
def journal(context: dg.AssetExecutionContext, config: JournalConfig, store: StoreResource):
    db = store.store()
    box = open_outbox()
    ids = session_orders(box, config.session)
    reports = box.journal().filter(pl.col("order_clordid").is_in(list(ids)))
    mark_as_of = datetime.fromisoformat(config.mark_as_of) if config.mark_as_of else None
    held = positions(reports, {})
    market = read_market(db, symbols=held["symbol"].to_list() or None, as_of=mark_as_of) if held.height else None
    marks = market.prices if market else {}
    held = positions(reports, marks)
    acct = account(reports, marks, config.capital)
    summary = pnl(held, config.capital, acct.cash)
    stamp = [pl.lit(context.run_id).alias("run_id"), pl.lit(utcnow()).alias("written_at")]
    db.overwrite_table(TABLES["executions"], reports.with_columns(*stamp))
    audited = trail.record(db, trail.execution_events(reports, trail.audited_exec_ids(db)))
    db.overwrite_table(TABLES["positions"], held.with_columns(*stamp))
    db.append_table(TABLES["pnl"], pl.DataFrame([summary]).with_columns(*stamp))
    yield dg.MaterializeResult(asset_key=KEYS["executions"], metadata={
        "table": TABLES["executions"], "dagster/row_count": reports.height, "journal": str(box),
        "audited": len(audited)})
    yield dg.MaterializeResult(asset_key=KEYS["positions"], metadata={
        "table": TABLES["positions"], "dagster/row_count": held.height, "positions": _md(held)})
    yield dg.MaterializeResult(asset_key=KEYS["pnl"], metadata={
        "table": TABLES["pnl"], **{k: round(v, 2) if isinstance(v, float) else v for k, v in summary.items()}})
    bars = db.read_bars("bars_1d", symbols=list(acct.positions)) if acct.positions else pl.DataFrame()
    var = value_at_risk(acct.positions, marks, bars, mark_as_of)
    db.append_table(TABLES["var"], pl.DataFrame([var]).with_columns(*stamp))
    yield dg.MaterializeResult(asset_key=KEYS["var"], metadata={
        "table": TABLES["var"], **{k: round(v, 2) if isinstance(v, float) else v for k, v in var.items()}})


@dg.asset(key=KEYS["reconciliation"], group_name=GROUP, kinds={store_kind()}, deps=[KEYS["executions"]],
          description="The execution journal against the venue's drop copy: every missing, extra or mismatched "
                      "report, by ExecID.",
          check_specs=[dg.AssetCheckSpec(JOURNAL_RECONCILED, asset=KEYS["reconciliation"], blocking=True,
                                         description="No finding between the journal and the drop copy (a "
                                                     "journal with reports and no drop copy fails).")])
def reconciliation(context: dg.AssetExecutionContext, store: StoreResource):
    db = store.store()
    box = open_outbox()
    findings = reconcile(box)
    db.overwrite_table(TABLES["reconciliation"], findings.with_columns(pl.lit(context.run_id).alias("run_id")))
    counts = {which: box.journal(which).filter(pl.col("msg_type") == "8").height
              for which in ("executions", "dropcopy")}  # reconciliation compares ExecutionReports
    gate = readiness.journal_reconciled(findings, journal_reports=counts["executions"],
                                        dropcopy_reports=counts["dropcopy"])
    return dg.MaterializeResult(metadata={"table": TABLES["reconciliation"], "dagster/row_count": findings.height,
                                          "findings": _md(findings)}, check_results=[check_result(gate)])
