"""From a genome to approved orders: which strategy trades, its intents on the latest fused signals, the risk
policy's decision on each, and the approved orders for the outbox.

**Which strategy** (:func:`choose_strategy`). The promoted champion when ``verify_champion`` passes (a stored
decision promoted it, its figures meet the platform's gates, no later run refused): strategy ``champion`` in
the policy. Otherwise a catalogue genome (``trend`` by default) as strategy ``catalogue/<name>``, which the
shipped policy marks paper-only: it trades against a paper session and the policy refuses it on a live one.
:class:`Strategy` says which was chosen and why; ``ready`` says whether the policy lets it trade on the
session at all (the ``strategy_ready`` readiness check).

**Intents** (:func:`plan_intents`), one row per symbol with a bar and a fused signal at ``as_of``:

- the genome's target direction at ``as_of`` (``genome.targets`` on the symbol's history up to ``as_of``:
  entry and exit thresholds, confidence floor, minimum holding period; causal, so later bars cannot change
  it), the fused signal and its confidence;
- **size**: the portfolio is the backtest's equal-weight book, so a symbol's sleeve is equity / n (n the
  symbols with a signal at ``as_of``) and an entry uses ``position_size`` of it: floor(position_size x equity
  / n / close) units, capped by fixed-fractional sizing at ``RISK_FRACTION`` of equity to the stop
  (``fixed_fractional_units``), so each entry risks at most 1% of equity (half the policy's 2% per trade);
- **stop**: the genome's ``stop_loss`` as a fraction of the close (below a long, above a short); a genome
  without one gets ``DEFAULT_STOP`` (10%), since the policy makes a stop mandatory;
- **order**: the difference between the target units and what is held plus working (``book.working_orders``),
  as a market order (filled at the next bar's open); none when they agree (status ``hold``);
- **held positions keep their units** while the target keeps its direction (sized at entry, as in the
  backtest: no re-sizing every bar), **unless the bar reached the position's stop** (its low at or below a
  long's stop, its high at or above a short's) **or its take-profit** (``take_profit`` from the average cost):
  then the target is flat (note ``stop`` / ``take_profit``), and it stays flat (note ``stopped_out``) while the
  genome's direction is the one that was stopped, as the backtest stays out until the target changes. The
  backtest fills a stop at the stop price (or the open through a gap); here the exit is a market order at
  the next open, since the venue takes no stop orders: the live exit is never better than the backtest's;
- a symbol with a bar at ``as_of`` but no fused signal there gets no order (status ``stale``: its features
  lag its bars; the ``signals_fresh`` check fails and names it); a symbol with no bar at ``as_of`` (its
  history ended before, as the shipped stocks' does in 2013) is not traded on that bar (status ``no_bar``).

The idempotency key is (strategy, symbol, as_of, session): materialising the same bar twice puts each order in
the outbox once.

**Decisions** (:func:`decide`): the policy judges the intents one after another, strongest first (|signal| x
confidence; then by symbol), each against the portfolio as it would be after the orders approved before it
(positions and stops), so the batch as a whole respects the aggregate limits (exposure, leverage, open
positions) and a scarce slot goes to the strongest signal. Every check of every intent is a row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from emp_core.compliance.trade import CHECK_PREFIX, DayOrder, PreTrade, pre_trade
from emp_core.compliance.trade import Order as ComplianceOrder
from emp_core.errors import EmpError
from emp_core.evolution.fitness import FEATURE_COLUMNS, Universe
from emp_core.evolution.genome import CATALOGUE, Genome, fused_signal, targets
from emp_core.evolution.promotion import DEFAULT_GATES, Gates
from emp_core.evolution.run import verify_champion
from emp_core.execution.outbox import ApprovedOrder, clordid_for
from emp_core.risk.policy import DECISION_SCHEMA, Decision, Intent, Policy, Portfolio, evaluate
from emp_core.risk.sizing import fixed_fractional_units
from emp_core.trading.book import Book

CHAMPION = "champion"
CATALOGUE_PREFIX = "catalogue/"
DEFAULT_FALLBACK = "trend"
DEFAULT_STOP = 0.10
RISK_FRACTION = 0.01

INTENT_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(), "as_of": pl.Datetime("us"), "session": pl.String(), "strategy": pl.String(),
    "symbol": pl.String(), "status": pl.String(), "direction": pl.Int64(), "signal": pl.Float64(),
    "confidence": pl.Float64(), "reference_price": pl.Float64(), "target_units": pl.Int64(),
    "position": pl.Int64(), "working": pl.Int64(), "side": pl.String(), "quantity": pl.Int64(),
    "order_type": pl.String(), "stop_price": pl.Float64(), "idem_key": pl.String(), "note": pl.String(),
}
RUN_DECISION_SCHEMA: dict[str, pl.DataType] = {"run_id": pl.String(), "idem_key": pl.String(), **DECISION_SCHEMA}


# ------------------------------------------------------------------------------------------------ the strategy


@dataclass(frozen=True)
class Strategy:
    name: str  # the policy's strategy name: champion or catalogue/<genome>
    genome: Genome
    promoted: bool
    source: str  # which genome and why, one sentence
    ready: bool  # the policy lets it trade on the session
    readiness: str  # why (not)


def stored_champion(store) -> tuple[Genome, str]:
    """The genome in ``evolution.champion`` and its hash."""
    row = store.query("SELECT * FROM evolution.champion").row(0, named=True)
    names = [f.name for f in fields(Genome)]
    return Genome(**{n: row[n] for n in names if n in row}), row["genome_hash"]


def choose_strategy(store, policy: Policy, session: str, *, fallback: str = DEFAULT_FALLBACK,
                    floor: Gates = DEFAULT_GATES) -> Strategy:
    """The promoted champion, or the paper-only catalogue genome ``fallback`` (module docstring)."""
    outcome = verify_champion(store, floor)
    if outcome.passed:
        genome, genome_hash = stored_champion(store)
        name, promoted = CHAMPION, True
        source = f"the promoted champion {genome.name or genome_hash} ({outcome.description})"
    else:
        if fallback not in CATALOGUE:
            raise EmpError(f"fallback genome {fallback!r} is not in the catalogue ({', '.join(CATALOGUE)})")
        genome, name, promoted = CATALOGUE[fallback], CATALOGUE_PREFIX + fallback, False
        source = (f"no promoted champion ({outcome.description}); trading the catalogue genome {fallback!r} "
                  "for paper incubation")
    rule = policy.rule(name)
    if rule is None or not rule.enabled:
        ready, why = False, (f"strategy {name!r} is {'disabled in' if rule else 'not in'} policy "
                             f"{policy.version}: every order would be refused")
    elif rule.paper_only and session != "paper":
        ready, why = False, (f"strategy {name!r} is paper-only in policy {policy.version} and this is a {session} "
                             "session: nothing may trade until a champion is promoted")
    else:
        ready, why = True, (f"strategy {name!r} may trade on a {session} session under policy {policy.version}"
                            + (" (paper-only)" if rule.paper_only else ""))
    return Strategy(name=name, genome=genome, promoted=promoted, source=source, ready=ready, readiness=why)


# ------------------------------------------------------------------------------------------------ the signals


def load_signals(store, as_of: datetime | None = None, dataset: str = "bars_1d") -> tuple[Universe, datetime]:
    """Bars and stored fused features up to and including ``as_of`` (default: the last fused signal), and
    that ``as_of``."""
    tables = set(store.tables())
    if f"market.{dataset}" not in tables or "sensory.fused" not in tables:
        raise EmpError(f"{store.location}: trading needs market.{dataset} and sensory.fused; materialise them first")
    params: dict = {"d": dataset}
    bound = ""
    if as_of is not None:
        bound, params["t"] = " AND ts <= $t", as_of
    features = store.query(f"SELECT symbol, ts, {', '.join(FEATURE_COLUMNS)} FROM sensory.fused "
                           f"WHERE dataset = $d{bound} ORDER BY symbol, ts", params)
    if features.is_empty():
        raise EmpError(f"{store.location}: no fused signals for {dataset}"
                       + (f" at or before {as_of}" if as_of is not None else ""))
    last = features["ts"].max()
    if as_of is None:
        as_of = last
    bars = store.read_bars(dataset, end=as_of + timedelta(microseconds=1))
    return Universe.from_frames(bars, features), as_of


# ------------------------------------------------------------------------------------------------ the intents


def _units(direction: int, equity: float, n: int, price: float, stop: float, genome: Genome) -> int:
    if direction == 0 or equity <= 0:
        return 0
    sleeve = math.floor(genome.position_size * equity / n / price)
    return direction * min(sleeve, fixed_fractional_units(equity, price, stop, RISK_FRACTION))


def _exit_rule(units: int, low: float, high: float, stop: float | None, entry: float | None,
               take_profit: float) -> str | None:
    """``stop`` or ``take_profit`` when the bar reached the held position's stop or target, else None."""
    if units > 0:
        if stop is not None and low <= stop:
            return "stop"
        if take_profit and entry and high >= entry * (1 + take_profit):
            return "take_profit"
    elif units < 0:
        if stop is not None and high >= stop:
            return "stop"
        if take_profit and entry and low <= entry * (1 - take_profit):
            return "take_profit"
    return None


def plan_intents(universe: Universe, as_of: datetime, strategy: Strategy, book: Book, last_bar: dict[str, datetime],
                 *, session: str, run_id: str, previous: dict[str, tuple[str | None, int | None]] | None = None
                 ) -> pl.DataFrame:
    """One row per symbol of ``universe`` or ``last_bar`` (each symbol's last bar at or before ``as_of``;
    ``INTENT_SCHEMA``; module docstring). ``previous``: per symbol, the note and direction of this strategy's
    last plan before ``as_of`` (to stay out after a stop until the target changes)."""
    genome = strategy.genome
    previous = previous or {}
    fresh = [s for s in universe.symbols if universe.ts[s][-1] == np.datetime64(as_of)]
    stop_fraction = genome.stop_loss or DEFAULT_STOP
    equity = book.account.equity
    rows = []
    for symbol in sorted(set(universe.symbols) | set(last_bar)):
        position = int(book.account.positions.get(symbol, 0))
        working = int(book.working.get(symbol, 0))
        row = {"run_id": run_id, "as_of": as_of, "session": session, "strategy": strategy.name, "symbol": symbol,
               "position": position, "working": working,
               "idem_key": f"{strategy.name}|{symbol}|{as_of.isoformat()}|{session}"}
        if symbol not in fresh:
            rows.append(row | {"status": "stale" if last_bar.get(symbol) == as_of else "no_bar"})
            continue
        features = universe.features[symbol]
        direction = int(targets(features, [genome])[-1, 0])
        signal, confidence = (float(x[-1, 0]) for x in fused_signal(features, np.array([genome.weights])))
        bar = {k: float(v[-1]) for k, v in universe.ohlc[symbol].items()}
        price = bar["close"]
        stop = price * (1 - stop_fraction) if direction >= 0 else price * (1 + stop_fraction)
        committed = position + working
        note, (last_note, last_direction) = None, previous.get(symbol, (None, None))
        if committed and np.sign(committed) == direction:
            # held in the target's direction: keep the units (sized at entry, as the backtest does), unless
            # the bar reached the position's stop or take-profit
            note = _exit_rule(committed, bar["low"], bar["high"], book.portfolio.stops.get(symbol),
                              book.avg_cost.get(symbol), genome.take_profit)
            if note is None and last_note in ("stop", "take_profit") and last_direction == direction:
                note = last_note  # the exit planned before did not happen (refused, rejected): still out
            target = 0 if note else committed
        elif last_note in ("stop", "take_profit", "stopped_out") and direction == last_direction and direction:
            note, target = "stopped_out", 0  # out after the exit until the target changes, as in the backtest
        else:
            target = _units(direction, equity, len(fresh), price, stop, genome)
        delta = target - committed
        row |= {"direction": direction, "signal": signal if math.isfinite(signal) else None,
                "confidence": min(max(confidence, 0.0), 1.0), "reference_price": price, "target_units": target,
                "note": note}
        if delta == 0:
            rows.append(row | {"status": "hold"})
            continue
        rows.append(row | {"status": "order", "side": "buy" if delta > 0 else "sell", "quantity": abs(delta),
                           "order_type": "market", "stop_price": stop if target != 0 else None})
    return pl.DataFrame(rows, schema=INTENT_SCHEMA)


# ------------------------------------------------------------------------------------------------ decisions


def _after(portfolio: Portfolio, intent: Intent) -> Portfolio:
    """The portfolio once ``intent`` fills: its position moved and its stop recorded (or dropped when flat)."""
    units = portfolio.position(intent.symbol) + intent.signed_quantity
    positions = {**portfolio.positions, intent.symbol: units}
    stops = dict(portfolio.stops)
    if units == 0:
        stops.pop(intent.symbol, None)
    elif intent.stop_price is not None:
        stops[intent.symbol] = intent.stop_price
    return replace(portfolio, positions=positions, stops=stops)


def judge(decision: Decision, idem_key: str, compliance: PreTrade | None,
          earlier: list[DayOrder]) -> tuple[list[dict], bool]:
    """The decision's rows with the compliance rules after the risk checks (rows ``compliance/<rule>``, citing
    the compliance policy), every row's ``approved`` the verdict of both; and that verdict. An approved order
    joins ``earlier`` (working, at the decision time), so the next order of the batch is judged with it."""
    checks, ok = decision.as_rows(), decision.approved
    if compliance is None:
        return checks, ok
    intent = decision.intent
    clordid = clordid_for(idem_key)
    order = ComplianceOrder(ref=clordid, symbol=intent.symbol, side=intent.side, qty=intent.quantity,
                            last_price=intent.reference_price, at=compliance.at, limit_price=intent.limit_price)
    rules = pre_trade(order, earlier, compliance.policy)
    ok = ok and all(c.passed for c in rules)
    head = checks[0]
    checks = [x | {"approved": ok} for x in checks] + [
        {**{k: head[k] for k in ("session", "strategy", "symbol", "side", "quantity")},
         "policy_version": compliance.policy.version, "approved": ok, "step": len(checks) + i,
         "check": CHECK_PREFIX + c.rule, "value": c.value, "limit": c.limit,
         "verdict": "pass" if c.passed else "fail", "reason": c.detail}
        for i, c in enumerate(rules, 1)]
    if ok:
        earlier.append(DayOrder(clordid, intent.symbol, intent.side, compliance.at,
                                working_qty=float(intent.quantity)))
    return checks, ok


def decide(intents: pl.DataFrame, portfolio: Portfolio, policy: Policy, session: str,
           compliance: PreTrade | None = None) -> tuple[pl.DataFrame, list[ApprovedOrder]]:
    """The policy's decision on each intent with an order, in order, each against the portfolio after the ones
    approved before it; returns (every check as a row, ``RUN_DECISION_SCHEMA``; the approved orders).

    With ``compliance``, each order is also judged on the firm's trade compliance rules
    (``emp_core.compliance.trade.pre_trade``), against the orders already sent and the ones approved before it
    in this batch; its rules are rows ``compliance/<rule>`` after the risk checks (citing the compliance policy's
    version), and an order is approved only when both the risk checks and the compliance rules pass."""
    rows, approved = [], []
    earlier = list(compliance.earlier) if compliance else []
    strongest_first = (intents.filter(pl.col("status") == "order")
                       .with_columns((pl.col("signal").abs().fill_null(0.0) * pl.col("confidence")).alias("_s"))
                       .sort(["_s", "symbol"], descending=[True, False]).drop("_s"))
    for r in strongest_first.iter_rows(named=True):
        intent = Intent(strategy=r["strategy"], symbol=r["symbol"], side=r["side"], quantity=int(r["quantity"]),
                        order_type=r["order_type"], reference_price=r["reference_price"],
                        confidence=r["confidence"], stop_price=r["stop_price"])
        decision = evaluate(intent, portfolio, policy, session)
        checks, ok = judge(decision, r["idem_key"], compliance, earlier)
        rows += [{"run_id": r["run_id"], "idem_key": r["idem_key"]} | x for x in checks]
        if ok:
            approved.append(ApprovedOrder(idem_key=r["idem_key"], strategy=intent.strategy, symbol=intent.symbol,
                                          side=intent.side, qty=intent.quantity, ord_type=intent.order_type,
                                          stop_price=intent.stop_price, session=session,
                                          policy_version=policy.version, decision=checks))
            portfolio = _after(portfolio, intent)
    return pl.DataFrame(rows, schema=RUN_DECISION_SCHEMA), approved
