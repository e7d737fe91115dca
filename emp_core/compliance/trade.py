"""Trade compliance: the firm's trading rules, checked before an order goes to the outbox (pre-trade) and on
every fill the journal holds (post-trade). Each breach is a record naming the rule, the figures and the ids.

Compliance is a separate authority from risk (``emp_core.risk.policy``): risk bounds what the book may lose,
compliance what the firm may do on a venue. Its rules live in their own versioned file
(``policies/compliance-v1.yaml``; the version is the file name, a change is a new file), and each breach row
cites it.

The rules
---------
==================  =====================================================  ==================================
rule                value (limit)                                          pre-trade / post-trade on
==================  =====================================================  ==================================
trade_notional      qty x price of one trade (``max_trade_notional``)      the order at its expected price /
                                                                           the fill
daily_notional      the symbol's notional on the UTC day, this trade       the day's earlier orders (filled
                    included (``max_daily_notional``)                      part at fill prices, working part
                                                                           at the last price) / the day's
                                                                           fills up to this one
daily_trades        the symbol's trades on the UTC day, this one           orders / fills (each fill counts:
                    included (``max_daily_trades``)                        a partial fill is a trade)
restricted_list     1 if the symbol is restricted (rule)                   every trade, either side: the
                                                                           restricted list forbids trading
                                                                           the name at all, closing included
price_collar        |price - last| / last (``price_collar``)               a limit price against the last
                                                                           market price (a market order's
                                                                           expected price is the last price:
                                                                           its collar is judged on its fill)
                                                                           / the fill price against the last
                                                                           price when the order was decided
wash_trade          seconds to the nearest opposite-side trade in the      working orders of the other side
                    symbol (fails when at most ``wash_window_seconds``;    (0 s: live now), and orders of the
                    a working order is 0 s away)                           other side sent
                                                                           within the window / fills of the
                                                                           other side within the window
==================  =====================================================  ==================================

Conventions
-----------
- **Limits are inclusive**: a figure exactly at its limit passes (with a relative tolerance of 1e-9, as the risk
  policy's), a figure above fails. The wash-trade window is inclusive too: an opposite trade exactly
  ``wash_window_seconds`` away is a breach.
- **The day** is the UTC calendar date of the decision (pre-trade) or of the fill's TransactTime
  (post-trade): the venue's day, on which its limits are counted, also when a paper session replays old bars.
- **The last price** of an order is its reference price (the last close when it was decided); post-trade, a
  fill is collared against the reference price of its order, the last market price the firm acted on.
- **Venues apart**: paper and live sessions trade on different venues, so the daily and wash rules count each
  session kind on its own (pre-trade: ``day_orders(..., session)``; post-trade: the fills' ``session``, from
  their orders, when given). An order being decided again (a re-run) is not counted against itself.
- A trade **breaches** when any rule fails; every rule is computed for every trade and recorded
  (``RULES``), and each failing rule is one breach record (``BREACH_SCHEMA``) whose ``breach_id`` is the
  same on every run (SHA-256 of stage, rule, order and execution), so re-checking a journal does not record a
  breach twice (``record_breaches``: the audit trail first, then the table).
- **Open breaches** (``open_breaches``) are the post-trade breaches in the audit trail without a resolution
  there (``resolve``, ``emp compliance resolve``): the trading plan's ``compliance_clear`` gate reads them
  from the trail, which it verifies, not from the tables, which any SQL client can edit.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from emp_core.config import REPO_ROOT
from emp_core.errors import EmpError
from emp_core.risk.policy import _FRACTION, _NONNEG, TOLERANCE, PolicyError, _number, read_versioned

DEFAULT_COMPLIANCE_POLICY = REPO_ROOT / "policies" / "compliance-v1.yaml"
BREACHES = "compliance.breaches"  # every breach found, pre-trade and post-trade, once each (by breach_id)
RULES = ("trade_notional", "daily_notional", "daily_trades", "restricted_list", "price_collar", "wash_trade")
STAGES = ("pre_trade", "post_trade")
SIDES = ("buy", "sell")
_KEYS = ("version", "max_trade_notional", "max_daily_notional", "max_daily_trades", "restricted", "price_collar",
         "wash_window_seconds")

BREACH_SCHEMA: dict[str, pl.DataType] = {
    "breach_id": pl.String(), "stage": pl.String(), "rule": pl.String(), "policy_version": pl.String(),
    "symbol": pl.String(), "side": pl.String(), "value": pl.Float64(), "limit": pl.Float64(),
    "order_ref": pl.String(), "exec_id": pl.String(), "other_ref": pl.String(), "at": pl.Datetime("us"),
    "detail": pl.String(),
}
CHECK_SCHEMA: dict[str, pl.DataType] = {
    "stage": pl.String(), "order_ref": pl.String(), "exec_id": pl.String(), "symbol": pl.String(),
    "side": pl.String(), "rule": pl.String(), "value": pl.Float64(), "limit": pl.Float64(), "passed": pl.Boolean(),
    "detail": pl.String(),
}
# the fills post_trade judges: the journal's fills joined to their orders' reference prices (see fills_for_rules)
FILL_COLUMNS = ("exec_id", "order_ref", "symbol", "side", "qty", "price", "reference_price", "at")


class ComplianceInputError(EmpError, ValueError):
    """A trade or an order the rules cannot judge (unknown side, NaN price, ...)."""


@dataclass(frozen=True)
class CompliancePolicy:
    version: str
    max_trade_notional: float = 500_000.0
    max_daily_notional: float = 1_000_000.0  # per symbol and UTC day
    max_daily_trades: int = 10  # per symbol and UTC day
    restricted: frozenset[str] = frozenset()
    price_collar: float = 0.10  # |price - last| / last
    wash_window_seconds: float = 60.0

    @property
    def wash_window(self) -> timedelta:
        return timedelta(seconds=self.wash_window_seconds)


def load_compliance_policy(path: str | Path) -> CompliancePolicy:
    """Read and validate a compliance rules file (unknown keys, wrong types, negative limits, a version that is
    not the file name: ``PolicyError`` naming the file and the key)."""
    path, top = read_versioned(path, _KEYS, what="compliance policy")
    values: dict = {"version": top["version"]}
    for key in ("max_trade_notional", "max_daily_notional", "wash_window_seconds"):
        if key in top:
            values[key] = _number(path, key, top[key], _NONNEG)
    if "max_daily_trades" in top:
        values["max_daily_trades"] = _number(path, "max_daily_trades", top["max_daily_trades"], _NONNEG,
                                             integer=True)
    if "price_collar" in top:
        values["price_collar"] = _number(path, "price_collar", top["price_collar"], _FRACTION)
    if "restricted" in top:
        given = top["restricted"] or []
        if not isinstance(given, list) or not all(isinstance(s, str) and s.strip() for s in given):
            raise PolicyError(path, "restricted", f"expected a list of symbol strings, got {given!r} "
                                                  "(quote symbols YAML reads as numbers or booleans)")
        values["restricted"] = frozenset(given)
    policy = CompliancePolicy(**values)
    if policy.max_trade_notional > policy.max_daily_notional:
        raise PolicyError(path, "max_trade_notional", f"{policy.max_trade_notional!r} exceeds max_daily_notional "
                                                      f"{policy.max_daily_notional!r}: one trade could never fit "
                                                      "in a day")
    return policy


def _over(value: float, limit: float) -> bool:
    return value > limit + TOLERANCE * abs(limit)


def _within(seconds: float, policy: CompliancePolicy) -> bool:
    """At most the wash window apart (inclusive, with the relative tolerance of the limits)."""
    return not _over(seconds, policy.wash_window_seconds)


def breach_id(stage: str, rule: str, *ids: str | None) -> str:
    return hashlib.sha256("|".join([stage, rule, *(i or "" for i in ids)]).encode()).hexdigest()[:32]


def record_breaches(store, found: pl.DataFrame) -> pl.DataFrame:
    """Record the breaches in ``found``: each not yet in the audit trail is audited first (kind
    ``compliance.breach``), then each not yet in ``compliance.breaches`` is added there. The trail is the record
    and the table its projection for SQL readers: a table write that fails after the audit is made good by the
    next run that finds the breach. Returns the breaches audited now (the new ones)."""
    from emp_core.compliance import trail

    found = found.unique("breach_id", keep="first", maintain_order=True)
    if found.is_empty():
        return found
    logged = trail.audited(store, "compliance.breach", "breach_id")
    new = found.filter(~pl.col("breach_id").is_in(list(logged)))
    trail.record(store, trail.breach_events(new))
    stored = (set(store.query(f"SELECT breach_id FROM {BREACHES}")["breach_id"].to_list())
              if BREACHES in set(store.tables()) else set())
    missing = found.filter(~pl.col("breach_id").is_in(list(stored)))
    if missing.height:
        store.append_table(BREACHES, missing)
    return new


# ------------------------------------------------------------------------------------------------- pre-trade


@dataclass(frozen=True)
class Order:
    """An order as the rules see it: ``price`` is its expected price (the limit, or the last price for a market
    order), ``last_price`` the last market price it was decided on, ``at`` the decision time (UTC, naive)."""

    ref: str
    symbol: str
    side: str
    qty: float
    last_price: float
    at: datetime
    limit_price: float | None = None

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise ComplianceInputError(f"order {self.ref}: side must be buy or sell, got {self.side!r}")
        for name in ("qty", "last_price"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                raise ComplianceInputError(f"order {self.ref}: {name} must be a positive number, got {v!r}")
        if self.limit_price is not None and (not math.isfinite(self.limit_price) or self.limit_price <= 0):
            raise ComplianceInputError(f"order {self.ref}: limit price must be positive, got {self.limit_price!r}")

    @property
    def price(self) -> float:
        return self.limit_price if self.limit_price is not None else self.last_price


@dataclass(frozen=True)
class DayOrder:
    """An order already sent (or approved) on the day: its filled notional, its working quantity, its time."""

    ref: str
    symbol: str
    side: str
    at: datetime
    filled_notional: float = 0.0
    working_qty: float = 0.0  # not yet filled, not final


@dataclass(frozen=True)
class RuleCheck:
    rule: str
    value: float | None
    limit: float | None
    passed: bool
    detail: str
    other_ref: str | None = None


def pre_trade(order: Order, earlier: list[DayOrder], policy: CompliancePolicy) -> tuple[RuleCheck, ...]:
    """Every rule on ``order``, given the orders sent earlier (any day: only ``order``'s UTC day counts for the
    daily rules; the wash rule looks at working orders and at the window). In ``RULES`` order."""
    day = order.at.date()
    same = [o for o in earlier if o.symbol == order.symbol and o.ref != order.ref]  # not itself, re-decided
    today = [o for o in same if o.at.date() == day]
    notional = order.qty * order.price
    checks = [_trade_notional(notional, policy)]
    day_notional = notional + sum(o.filled_notional + o.working_qty * order.last_price for o in today)
    checks.append(_daily_notional(day_notional, len(today), day, policy))
    checks.append(_daily_trades(len(today) + 1, day, policy))
    checks.append(_restricted(order.symbol, policy))
    collar = abs(order.price - order.last_price) / order.last_price
    what = "limit" if order.limit_price is not None else "expected (market order: the last price)"
    checks.append(_collar(collar, f"{what} price {order.price:,.4f} against the last price "
                                  f"{order.last_price:,.4f}", policy))
    # the nearest opposite order: one still working is live now (0 s away), else one sent within the window
    def gap(o: DayOrder) -> float:
        return 0.0 if o.working_qty > 0 else abs(order.at - o.at).total_seconds()

    opposite = [o for o in same if o.side != order.side and _within(gap(o), policy)]
    if opposite:
        nearest = min(opposite, key=gap)
        why = ("is still working" if nearest.working_qty > 0 else
               f"was sent {gap(nearest):,.3f} s before, within the window")
        checks.append(RuleCheck("wash_trade", gap(nearest), policy.wash_window_seconds, False,
                                f"{order.side} {order.symbol} against the firm's own {nearest.side} order "
                                f"{nearest.ref}, which {why}", nearest.ref))
    else:
        checks.append(RuleCheck("wash_trade", None, policy.wash_window_seconds, True,
                                f"no {'sell' if order.side == 'buy' else 'buy'} order of {order.symbol} working or "
                                f"within {policy.wash_window_seconds:g} s"))
    return tuple(checks)


def _trade_notional(notional: float, policy: CompliancePolicy) -> RuleCheck:
    limit = policy.max_trade_notional
    return RuleCheck("trade_notional", notional, limit, not _over(notional, limit),
                     f"trade notional {notional:,.2f} {'exceeds' if _over(notional, limit) else 'is within'} "
                     f"the limit {limit:,.2f}")


def _daily_notional(notional: float, earlier: int, day: date, policy: CompliancePolicy) -> RuleCheck:
    limit = policy.max_daily_notional
    return RuleCheck("daily_notional", notional, limit, not _over(notional, limit),
                     f"notional on {day} with this trade and {earlier} earlier {notional:,.2f} "
                     f"{'exceeds' if _over(notional, limit) else 'is within'} the daily limit {limit:,.2f}")


def _daily_trades(count: int, day: date, policy: CompliancePolicy) -> RuleCheck:
    limit = policy.max_daily_trades
    return RuleCheck("daily_trades", float(count), float(limit), count <= limit,
                     f"trade {count} of the symbol on {day}: "
                     f"{'over' if count > limit else 'within'} the daily limit of {limit}")


def _restricted(symbol: str, policy: CompliancePolicy) -> RuleCheck:
    hit = symbol in policy.restricted
    return RuleCheck("restricted_list", float(hit), None, not hit,
                     f"{symbol} is on the restricted list of {policy.version}: no trading in it" if hit
                     else f"{symbol} is not restricted")


def _collar(collar: float, what: str, policy: CompliancePolicy) -> RuleCheck:
    limit = policy.price_collar
    return RuleCheck("price_collar", collar, limit, not _over(collar, limit),
                     f"{what}: {collar:.4%} {'outside' if _over(collar, limit) else 'within'} the collar {limit:.2%}")


def breaches(stage: str, policy: CompliancePolicy, symbol: str, side: str, at: datetime, order_ref: str,
             checks: tuple[RuleCheck, ...], exec_id: str | None = None) -> list[dict]:
    """The breach records (``BREACH_SCHEMA``) of the failing checks of one trade."""
    return [{"breach_id": breach_id(stage, c.rule, order_ref, exec_id), "stage": stage, "rule": c.rule,
             "policy_version": policy.version, "symbol": symbol, "side": side, "value": c.value, "limit": c.limit,
             "order_ref": order_ref, "exec_id": exec_id, "other_ref": c.other_ref, "at": at, "detail": c.detail}
            for c in checks if not c.passed]


# ------------------------------------------------------------------------------------------------ post-trade


def post_trade(fills: pl.DataFrame, policy: CompliancePolicy) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every rule on every fill (``FILL_COLUMNS``: exec_id, order_ref, symbol, side buy/sell, qty, price,
    reference_price of its order, at: the TransactTime, UTC naive), in the order of ``at`` (ties: as given).
    Returns (one row per fill and rule, ``CHECK_SCHEMA``; the breaches, ``BREACH_SCHEMA``)."""
    missing = [c for c in FILL_COLUMNS if c not in fills.columns]
    if missing:
        raise ComplianceInputError(f"post-trade compliance: the fills lack column(s) {', '.join(missing)}")
    bad = fills.filter(~pl.col("side").is_in(SIDES) | ~(pl.col("qty") > 0) | ~(pl.col("price") > 0)
                       | pl.col("at").is_null() | ~(pl.col("price").is_finite()))
    if bad.height:
        r = bad.row(0, named=True)
        raise ComplianceInputError(f"post-trade compliance: fill {r['exec_id']} cannot be judged (side {r['side']!r}, "
                                   f"qty {r['qty']!r}, price {r['price']!r}, time {r['at']!r})")
    venue = ["session"] if "session" in fills.columns else []  # paper and live trade on different venues
    frame = (fills.select(*FILL_COLUMNS, *venue).with_row_index("_i")
             .with_columns(pl.col("qty").cast(pl.Float64), pl.col("price").cast(pl.Float64),
                           pl.col("reference_price").cast(pl.Float64), pl.col("at").cast(pl.Datetime("us")))
             .sort("at", "_i", maintain_order=True)
             .with_columns((pl.col("qty") * pl.col("price")).alias("notional"), pl.col("at").dt.date().alias("day")))
    frame = frame.with_columns(
        pl.col("notional").cum_sum().over(*venue, "symbol", "day").alias("day_notional"),
        pl.int_range(1, pl.len() + 1).over(*venue, "symbol", "day").alias("day_trades"))
    frame = frame.join(_nearest_opposite(frame, venue), on="_i", how="left")
    checks, found = [], []
    window = policy.wash_window_seconds
    for r in frame.iter_rows(named=True):
        ref = r["reference_price"]
        if ref is not None and math.isfinite(ref) and ref > 0:
            collar = _collar(abs(r["price"] - ref) / ref, f"fill price {r['price']:,.4f} against the last price "
                                                          f"{ref:,.4f} the order was decided on", policy)
        else:
            collar = RuleCheck("price_collar", None, policy.price_collar, False,
                               f"no last price known for the order {r['order_ref']}: the fill cannot be collared")
        gap = r["gap"]
        if gap is not None and _within(gap, policy):
            wash = RuleCheck("wash_trade", gap, window, False,
                             f"{r['side']} {r['symbol']} {gap:,.3f} s from the firm's own {r['other_side']} fill "
                             f"{r['other_exec']}", r["other_exec"])
        else:
            wash = RuleCheck("wash_trade", gap, window, True,
                             f"no opposite fill of {r['symbol']} within {window:g} s"
                             + ("" if gap is None else f" (nearest {gap:,.3f} s)"))
        these = (_trade_notional(r["notional"], policy),
                 _daily_notional(r["day_notional"], r["day_trades"] - 1, r["day"], policy),
                 _daily_trades(r["day_trades"], r["day"], policy), _restricted(r["symbol"], policy), collar, wash)
        checks += [{"stage": "post_trade", "order_ref": r["order_ref"], "exec_id": r["exec_id"],
                    "symbol": r["symbol"], "side": r["side"], "rule": c.rule, "value": c.value, "limit": c.limit,
                    "passed": c.passed, "detail": c.detail} for c in these]
        found += breaches("post_trade", policy, r["symbol"], r["side"], r["at"], r["order_ref"], these, r["exec_id"])
    return pl.DataFrame(checks, schema=CHECK_SCHEMA), pl.DataFrame(found, schema=BREACH_SCHEMA)


def _nearest_opposite(frame: pl.DataFrame, venue: list[str]) -> pl.DataFrame:
    """For each fill (by ``_i``), the nearest fill of the other side in its symbol (and session kind, given
    ``venue``), before or after: its exec id, side and the gap in seconds (null when there is none)."""
    out = []
    for direction in ("backward", "forward"):
        for side, other in (("buy", "sell"), ("sell", "buy")):
            mine = frame.filter(pl.col("side") == side).select("_i", *venue, "symbol", "at").sort("at")
            theirs = (frame.filter(pl.col("side") == other)
                      .select(*venue, "symbol", pl.col("at").alias("other_at"), pl.col("exec_id").alias("other_exec"),
                              pl.col("side").alias("other_side"))
                      .with_columns(pl.col("other_at").alias("at")).sort("at"))
            if mine.is_empty() or theirs.is_empty():
                continue
            joined = mine.join_asof(theirs, on="at", by=[*venue, "symbol"], strategy=direction,
                                    check_sortedness=False)
            out.append(joined.filter(pl.col("other_at").is_not_null()).select(
                "_i", "other_exec", "other_side",
                ((pl.col("at") - pl.col("other_at")).abs().dt.total_microseconds() / 1e6).alias("gap")))
    schema = {"_i": pl.UInt32, "other_exec": pl.String, "other_side": pl.String, "gap": pl.Float64}
    if not out:
        return pl.DataFrame(schema=schema)
    return (pl.concat(out).sort("_i", "gap").group_by("_i", maintain_order=True).first()
            .cast(schema))


def fills_for_rules(journal: pl.DataFrame, orders: pl.DataFrame | None = None) -> pl.DataFrame:
    """The journal's fills (ExecutionReports of ExecType F with LastQty > 0) as ``FILL_COLUMNS``: side as
    buy/sell (FIX 1 buy; 2, 5, 6 sell), ``at`` the TransactTime (else the time received), joined to their
    orders' reference prices (``orders``: clordid, reference_price, and session when given: the rules then
    count each session kind apart; None: no order known, reference prices null)."""
    if orders is None:
        orders = pl.DataFrame(schema={"clordid": pl.String, "reference_price": pl.Float64})
    schema = {"exec_id": pl.String, "order_ref": pl.String, "symbol": pl.String, "side": pl.String,
              "qty": pl.Float64, "price": pl.Float64, "reference_price": pl.Float64, "at": pl.Datetime("us")}
    if journal.is_empty():
        return pl.DataFrame(schema=schema)
    filled = journal.filter((pl.col("msg_type") == "8") & (pl.col("exec_type") == "F")
                            & (pl.col("last_qty").cast(pl.Float64) > 0))
    at = pl.coalesce(pl.col("transact_time"), pl.col("received_at")).cast(pl.String)
    frame = filled.select(
        pl.col("exec_id"), pl.col("order_clordid").alias("order_ref"), pl.col("symbol"),
        pl.when(pl.col("side") == "1").then(pl.lit("buy")).when(pl.col("side").is_in(["2", "5", "6"]))
        .then(pl.lit("sell"))
        .otherwise(pl.col("side")).alias("side"),
        pl.col("last_qty").cast(pl.Float64).alias("qty"), pl.col("last_px").cast(pl.Float64).alias("price"),
        _parse_time(at).alias("at"))
    if "session" in orders.columns:  # the order's session kind (paper, live): its venue's limits are its own
        schema["session"] = pl.String
    prices = orders.select(pl.col("clordid").alias("order_ref"), pl.col("reference_price").cast(pl.Float64),
                           *(["session"] if "session" in orders.columns else []))
    return frame.join(prices, on="order_ref", how="left").select(list(schema)).cast(schema)


def _parse_time(text: pl.Expr) -> pl.Expr:
    """FIX UTCTimestamp (YYYYMMDD-HH:MM:SS[.ffffff]) or ISO text with or without an offset, as a naive UTC
    datetime (null when it is neither: the fill is then refused by name, not judged at a made-up time)."""
    return text.map_elements(_utc, return_dtype=pl.Datetime("us"))


def _utc(text: str) -> datetime | None:
    text = text.strip()
    if len(text) >= 17 and text[8] == "-" and text[:8].isdigit():  # FIX UTCTimestamp
        text = f"{text[:4]}-{text[4:6]}-{text[6:8]}T{text[9:]}"
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return None
    return ts if ts.tzinfo is None else ts.astimezone(UTC).replace(tzinfo=None)


def summary(checks: pl.DataFrame, found: pl.DataFrame, policy: CompliancePolicy, *, rows: int = 20) -> str:
    """A Markdown report: the rules and their limits, trades judged, breaches by rule, the first breaches."""
    trades = checks.select(pl.struct("order_ref", "exec_id")).n_unique() if checks.height else 0
    lines = [f"# Trade compliance ({policy.version})", "",
             f"{trades} trade(s) judged on {len(RULES)} rules; **{found.height} breach(es)**.", "",
             "| rule | limit | breaches |", "|---|---|---|"]
    limits = {"trade_notional": f"{policy.max_trade_notional:,.2f}",
              "daily_notional": f"{policy.max_daily_notional:,.2f}",
              "daily_trades": str(policy.max_daily_trades),
              "restricted_list": ", ".join(sorted(policy.restricted)) or "(none)",
              "price_collar": f"{policy.price_collar:.2%}", "wash_trade": f"{policy.wash_window_seconds:g} s"}
    counts = dict(found.group_by("rule").len().rows()) if found.height else {}
    lines += [f"| {r} | {limits[r]} | {counts.get(r, 0)} |" for r in RULES]
    if found.height:
        lines += ["", "| stage | rule | symbol | side | order | execution | detail |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {b['stage']} | {b['rule']} | {b['symbol']} | {b['side']} | {b['order_ref']} | "
                  f"{b['exec_id'] or ''} | {b['detail']} |" for b in found.head(rows).iter_rows(named=True)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- the order path's side


def day_orders(entries: pl.DataFrame, status: pl.DataFrame, session: str | None = None) -> list[DayOrder]:
    """The outbox's orders as the pre-trade rules see them (``Outbox.entries()`` and ``Outbox.status()``):
    decided at ``created_at``, filled notional cum_qty x avg_px, working quantity the rest unless the order is
    final (filled, cancelled, rejected, expired). Only ``session``'s orders when given (paper and live trade on
    different venues, whose limits are separate)."""
    if entries.is_empty():
        return []
    if session is not None:
        entries = entries.filter(pl.col("session") == session)
    final = ("2", "4", "8", "C")
    joined = entries.select("clordid", "symbol", "side", "qty", "created_at").join(
        status.select("clordid", "ord_status", "cum_qty", "avg_px"), on="clordid", how="left")
    out = []
    for r in joined.iter_rows(named=True):
        cum = float(r["cum_qty"] or 0.0)
        working = 0.0 if r["ord_status"] in final else max(float(r["qty"]) - cum, 0.0)
        at = r["created_at"] if isinstance(r["created_at"], datetime) else datetime.fromisoformat(r["created_at"])
        out.append(DayOrder(r["clordid"], r["symbol"], r["side"], at.replace(tzinfo=None),
                            filled_notional=cum * float(r["avg_px"] or 0.0), working_qty=working))
    return out


@dataclass(frozen=True)
class PreTrade:
    """What the risk path needs to judge orders on the compliance rules: the rules, the orders already sent
    (``day_orders``) and the decision time (UTC, naive)."""

    policy: CompliancePolicy
    earlier: tuple[DayOrder, ...]
    at: datetime


CHECK_PREFIX = "compliance/"  # a compliance rule's row among a decision's checks: compliance/<rule>


def pre_trade_breaches(decisions: pl.DataFrame, at: datetime) -> pl.DataFrame:
    """The breach records (``BREACH_SCHEMA``) of the failing compliance rows among a batch's decision rows
    (``emp_core.trading.intents.RUN_DECISION_SCHEMA``) decided at ``at``: the order's ClOrdID (a function of its
    idempotency key) is its reference."""
    from emp_core.execution.outbox import clordid_for

    bad = decisions.filter(pl.col("check").str.starts_with(CHECK_PREFIX) & (pl.col("verdict") == "fail"))
    rows = []
    for r in bad.iter_rows(named=True):
        rule, clordid = r["check"].removeprefix(CHECK_PREFIX), clordid_for(r["idem_key"])
        rows.append({"breach_id": breach_id("pre_trade", rule, clordid), "stage": "pre_trade", "rule": rule,
                     "policy_version": r["policy_version"], "symbol": r["symbol"], "side": r["side"],
                     "value": r["value"], "limit": r["limit"], "order_ref": clordid, "exec_id": None,
                     "other_ref": None, "at": at, "detail": r["reason"]})
    return pl.DataFrame(rows, schema=BREACH_SCHEMA)


# ------------------------------------------------------------------------------------------ review of breaches

RESOLUTIONS = "compliance.breach_resolutions"  # breach_id, resolved_by, reason, resolved_at: append-only
RESOLUTION_SCHEMA: dict[str, pl.DataType] = {"breach_id": pl.String(), "resolved_by": pl.String(),
                                             "reason": pl.String(), "resolved_at": pl.Datetime("us")}


CHECKS_TABLE = "compliance.post_trade_checks"  # the compliance report's rows: every fill judged, by rule


def unjudged_fills(store, journal: pl.DataFrame) -> list[str]:
    """The ExecIDs of the journal's fills the post-trade rules have not judged yet (not in
    ``compliance.post_trade_checks``): until they are, a clear record of open breaches says nothing of them."""
    fills = fills_for_rules(journal)
    if fills.is_empty():
        return []
    judged = (set(store.query(f"SELECT DISTINCT exec_id FROM {CHECKS_TABLE}")["exec_id"].to_list())
              if CHECKS_TABLE in set(store.tables()) else set())
    return [e for e in fills["exec_id"].to_list() if e not in judged]


def open_breaches(store) -> pl.DataFrame:
    """The post-trade breaches no compliance officer has resolved (``BREACH_SCHEMA``), oldest first, read from
    the audit trail (``compliance.breach`` entries less ``compliance.resolution`` ones), which the trading plan
    verifies before it trusts it: deleting a row of ``compliance.breaches`` or adding one to the resolutions
    table does not close a breach. A pre-trade breach is never open: its order was refused, nothing traded."""
    from emp_core.compliance import trail

    log = trail.entries(store, "compliance.breach", "compliance.resolution")
    resolved = {e["breach_id"] for k, e in log if k == "compliance.resolution"}
    rows = [e for k, e in log if k == "compliance.breach" and e.get("stage") == "post_trade"
            and e["breach_id"] not in resolved]
    for r in rows:
        r["at"] = datetime.fromisoformat(r["at"]) if isinstance(r.get("at"), str) else r.get("at")
    frame = pl.DataFrame([{k: r.get(k) for k in BREACH_SCHEMA} for r in rows], schema=BREACH_SCHEMA)
    return frame.unique("breach_id", keep="first", maintain_order=True).sort("at")


def resolve(store, breach_id: str, *, reason: str, by: str, now: datetime | None = None) -> dict:
    """Record that ``by`` reviewed the open post-trade breach ``breach_id`` and why it may be closed; audited as
    ``compliance.resolution``. Raises ``ComplianceInputError`` for an unknown, pre-trade or resolved breach, or
    an empty reason or name (nothing is written then)."""
    from emp_core.clock import utcnow
    from emp_core.compliance import trail

    if not reason.strip() or not by.strip():
        raise ComplianceInputError("a resolution needs the reviewer's name and a reason")
    known = {e["breach_id"]: e for k, e in trail.entries(store, "compliance.breach")}
    if breach_id not in known:
        raise ComplianceInputError(f"no breach {breach_id!r} in the audit trail")
    if known[breach_id].get("stage") != "post_trade":
        raise ComplianceInputError(f"breach {breach_id} is pre-trade: its order was refused, nothing to resolve")
    if open_breaches(store).filter(pl.col("breach_id") == breach_id).is_empty():
        raise ComplianceInputError(f"breach {breach_id} is already resolved")
    row = {"breach_id": breach_id, "resolved_by": by.strip(), "reason": reason.strip(),
           "resolved_at": now or utcnow()}
    # the trail first: it is the record the trading plan reads; the table is its projection
    trail.record(store, [("compliance.resolution", row | {"resolved_at": row["resolved_at"].isoformat()})])
    store.append_table(RESOLUTIONS, pl.DataFrame([row], schema=RESOLUTION_SCHEMA))
    return row
