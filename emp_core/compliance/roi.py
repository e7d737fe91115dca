"""ROI evidence (issue 13): what the fills cost, what the platform costs, what is left, per strategy and in total.

**Inputs** (:func:`roi`): the execution journal (``Outbox.journal()``), the outbox entries (``Outbox.entries()``:
an order's ClOrdID to its ``idem_key`` and ``strategy``), the decision prices (the planned intents,
``trading.intents``: ``idem_key`` and ``reference_price``, the close of the bar the order was planned on), the
marks (last close per symbol), the starting capital, a cost model (:func:`load_costs`), the tier and the period
the report covers. The paper venue charges nothing: the fees are what the cost model says a broker would have
charged for the same fills.

**Cost models** are versioned YAML files under ``policies/``; the version is the file's name
(``policies/costs-v1.yaml`` holds ``version: costs-v1``), so a report names the exact assumptions it used, and
changed assumptions are a new file. ``load_costs`` validates a file completely (unknown or missing keys, wrong
types, negative figures, a share above 1, a missing tier, a mismatched version, duplicate keys, YAML syntax) and
raises ``CostModelError`` naming the file and the key.

Conventions
-----------
- **Sign**: every cost (fee, slippage, infrastructure) is positive when it costs money; PnL is positive when
  it makes money.
- **Fill**: an ExecutionReport of ExecType F (Trade) with LastQty > 0, each once, as ``account.fills`` takes
  them: LastQty units at LastPx, side 1 buy, 2 sell. Its time is the venue's TransactTime, or the time it was
  journaled (``received_at``) when the report has none, in naive UTC. Every fill must lie in the period.
- **Strategy of a fill**: the outbox entry of the order it fills (the report's ``order_clordid``). A fill of an
  order the outbox does not know is counted under ``(unattributed)``, never dropped.
- **Fees**, per fill, from the cost model (each figure is a dated assumption in the file):
  *commission* = per_share x qty, at least ``minimum``, at most ``maximum_share_of_notional`` x notional (the
  cap wins over the minimum on a tiny fill, as at the broker whose schedule this is; so a fill's commission is
  in [minimum, cap] whenever cap >= minimum); *notional fee* = ``notional_bps`` / 10,000 x notional (exchange
  and clearing fees of a tiered plan); *SEC fee* (Section 31), sells only = ``sec_fee_per_million`` / 1e6 x
  notional; *FINRA TAF*, sells only = ``finra_taf_per_share`` x qty, at most ``finra_taf_maximum``. Notional =
  qty x fill price. Figures are not rounded to the cent (brokers round each fee up: at most 0.01 a fee more).
  The minimum is charged per fill, where the broker charges it per order: conservative for orders filled in parts.
- **Slippage** against the decision price (the intent's ``reference_price``, found through the order's
  ``idem_key``): buy (fill - reference) x qty, sell (reference - fill) x qty; positive = a cost (bought above or
  sold below the price the decision was made on). In bps: slippage / (reference x qty) x 10,000. A fill with no
  reference price has null slippage and is counted in ``fills_without_reference``; a strategy's bps are over its
  fills with one. **Slippage is attribution, not a further cost**: it is already in the fill prices, hence in
  the gross PnL, and is never subtracted from it again.
- **Gross PnL** = realised + unrealised, from the fills at their own prices, at average cost per (strategy,
  symbol) (``emp_core.trading.ledger.positions`` on each strategy's fills), marked at ``marks``; a symbol with no
  mark is marked at its last fill price and listed in ``marked_at_last_fill``. The identity it keeps: gross PnL =
  equity change = the fills' cash flows (-sum of signed qty x price) + sum of units x mark, which is the paper
  account's equity - capital (``emp_core.execution.account``: no fees there).
- **Infrastructure cost** = the tier's monthly components (sum) x the months in the period (a month is
  365.25 / 12 days), allocated to the strategies by their share of the traded notional; with no fills at all it
  is one row, ``(platform)``.
- **Net PnL** = gross PnL - fees - infrastructure.

Capital efficiency (over the period; nothing annualised)
--------------------------------------------------------
- ``traded_notional`` = sum of qty x fill price; ``turnover`` = traded_notional / capital.
- ``avg_gross_exposure`` (capital employed): the time-weighted average over the whole period of
  sum over symbols of |units| x the symbol's latest fill price (the last price the journal shows at that moment,
  from any strategy's fill), 0 before the first fill. The total is the sum over strategies: two strategies holding
  opposite positions in one symbol each employ capital.
- ``utilisation`` = avg_gross_exposure / capital.
- ``return_on_capital`` = net PnL / capital (a strategy's share of the account's return: they add up).
- ``roce`` (return on capital employed) = net PnL / avg_gross_exposure; null when nothing was held.
- ``fees_bps`` = fees / traded_notional x 10,000; ``slippage_bps`` as above.

**Additivity**: the money columns, the counts, ``traded_notional``, ``avg_gross_exposure``, ``turnover`` and
``return_on_capital`` of the per-strategy rows sum to the totals; the ratios (``roce``, ``utilisation``, bps) of
the totals are computed from the total figures.

:func:`pnl_chart` draws cumulative gross and net PnL over time (a data URI of an SVG); :func:`summary_markdown`
writes the report as Markdown.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from numbers import Real
from pathlib import Path
from types import MappingProxyType

import polars as pl

from emp_core.config import REPO_ROOT, TIERS
from emp_core.errors import EmpError
from emp_core.execution.account import BUY, TRADE
from emp_core.risk.policy import PolicyError, _describe, _mapping, _number, _unknown, read_versioned
from emp_core.trading.ledger import positions

DEFAULT_COSTS = REPO_ROOT / "policies" / "costs-v1.yaml"
DAYS_PER_MONTH = 365.25 / 12
UNATTRIBUTED = "(unattributed)"
PLATFORM = "(platform)"

FILL_SCHEMA: dict[str, pl.DataType] = {
    "seq": pl.Int64(), "fill_time": pl.Datetime("us"), "strategy": pl.String(), "clordid": pl.String(),
    "idem_key": pl.String(), "symbol": pl.String(), "side": pl.String(), "qty": pl.Float64(),
    "price": pl.Float64(), "notional": pl.Float64(), "reference_price": pl.Float64(), "commission": pl.Float64(),
    "notional_fee": pl.Float64(), "sec_fee": pl.Float64(), "finra_taf": pl.Float64(), "fees": pl.Float64(),
    "slippage": pl.Float64(), "slippage_bps": pl.Float64(),
}
FEE_COLUMNS = ("commission", "notional_fee", "sec_fee", "finra_taf", "fees")
# the per-strategy columns that add up to the totals
ADDITIVE = ("fills", "orders", "fills_without_reference", "traded_notional", *FEE_COLUMNS, "slippage",
            "infrastructure", "realised_pnl", "unrealised_pnl", "gross_pnl", "net_pnl", "avg_gross_exposure",
            "turnover", "return_on_capital")
STRATEGY_SCHEMA: dict[str, pl.DataType] = {
    "strategy": pl.String(), "fills": pl.Int64(), "orders": pl.Int64(), "fills_without_reference": pl.Int64(),
    "traded_notional": pl.Float64(), **{c: pl.Float64() for c in FEE_COLUMNS}, "slippage": pl.Float64(),
    "slippage_bps": pl.Float64(), "fees_bps": pl.Float64(), "infrastructure": pl.Float64(),
    "realised_pnl": pl.Float64(), "unrealised_pnl": pl.Float64(), "gross_pnl": pl.Float64(),
    "net_pnl": pl.Float64(), "avg_gross_exposure": pl.Float64(), "turnover": pl.Float64(),
    "utilisation": pl.Float64(), "return_on_capital": pl.Float64(), "roce": pl.Float64(),
}


class CostModelError(EmpError):
    """A cost model file cannot be used. The message names the file and the key."""

    def __init__(self, path: object, key: str, problem: str) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        super().__init__(f"{self.path}: {key}: {problem}" if key else f"{self.path}: {problem}")


class RoiInputError(EmpError, ValueError):
    """An input of the ROI report that cannot be used (a fill outside the period, a nonpositive capital, ...)."""


# ------------------------------------------------------------------------------------------------ the cost model


@dataclass(frozen=True)
class FeeSchedule:
    """Per-fill fees (module docstring); currency per share, per fill, or as shares of the notional."""

    per_share: float
    minimum: float
    maximum_share_of_notional: float
    notional_bps: float
    sec_fee_per_million: float
    finra_taf_per_share: float
    finra_taf_maximum: float

    def fill_fees(self, side: str, qty: float, price: float) -> dict[str, float]:
        """The fees of one fill of ``qty`` units at ``price``; ``side`` is ``buy`` or ``sell``."""
        notional = qty * price
        commission = min(max(self.per_share * qty, self.minimum), self.maximum_share_of_notional * notional)
        sell = side == "sell"
        out = {"commission": commission, "notional_fee": self.notional_bps / 10_000 * notional,
               "sec_fee": self.sec_fee_per_million / 1e6 * notional if sell else 0.0,
               "finra_taf": min(self.finra_taf_per_share * qty, self.finra_taf_maximum) if sell else 0.0}
        out["fees"] = sum(out.values())
        return out


@dataclass(frozen=True)
class CostModel:
    version: str
    currency: str
    as_of: date  # when the assumptions were written down
    fees: FeeSchedule
    infrastructure: Mapping[str, Mapping[str, float]]  # tier -> component -> currency per month

    def __post_init__(self) -> None:
        frozen = {t: MappingProxyType(dict(c)) for t, c in self.infrastructure.items()}
        object.__setattr__(self, "infrastructure", MappingProxyType(frozen))

    def monthly(self, tier: str) -> float:
        """The tier's infrastructure cost per month (the sum of its components)."""
        if tier not in self.infrastructure:
            raise RoiInputError(f"cost model {self.version} has no infrastructure for tier {tier!r} "
                                f"(it has: {', '.join(self.infrastructure) or 'none'})")
        return float(sum(self.infrastructure[tier].values()))


_TOP_KEYS = ("version", "currency", "as_of", "fees", "infrastructure")
_FEE_KEYS = ("commission", "notional_bps", "sec_fee_per_million", "finra_taf_per_share", "finra_taf_maximum")
_COMMISSION_KEYS = ("per_share", "minimum", "maximum_share_of_notional")
_NONNEG = (0.0, math.inf)
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def _required(path: Path, where: str, given: dict, keys: tuple[str, ...]) -> None:
    _unknown(path, where, given, keys)
    for k in keys:
        if k not in given:
            raise CostModelError(path, f"{where}{k}", "missing (every figure of a cost model is stated)")


def _fees(path: Path, raw: object) -> FeeSchedule:
    fees = _mapping(path, "fees", raw)
    _required(path, "fees.", fees, _FEE_KEYS)
    commission = _mapping(path, "fees.commission", fees["commission"])
    _required(path, "fees.commission.", commission, _COMMISSION_KEYS)
    values = {k: _number(path, f"fees.commission.{k}", commission[k],
                         (0.0, 1.0) if k == "maximum_share_of_notional" else _NONNEG) for k in _COMMISSION_KEYS}
    values |= {k: _number(path, f"fees.{k}", fees[k], _NONNEG) for k in _FEE_KEYS if k != "commission"}
    return FeeSchedule(**values)


def _infrastructure(path: Path, raw: object) -> dict[str, dict[str, float]]:
    tiers = _mapping(path, "infrastructure", raw)
    _unknown(path, "infrastructure.", tiers, TIERS)
    out = {}
    for tier in TIERS:
        if tier not in tiers:
            raise CostModelError(path, f"infrastructure.{tier}", "missing: state the monthly cost of every tier "
                                                                  f"({', '.join(TIERS)})")
        components = _mapping(path, f"infrastructure.{tier}", tiers[tier])
        if not components:
            raise CostModelError(path, f"infrastructure.{tier}", "no components: name each with its monthly cost")
        out[tier] = {name: _number(path, f"infrastructure.{tier}.{name}", value, _NONNEG)
                     for name, value in components.items()}
    return out


def _parse(path: Path) -> CostModel:
    path, top = read_versioned(path, _TOP_KEYS, "cost model")  # YAML, no duplicate keys, version = file name
    _required(path, "", top, _TOP_KEYS)
    currency = top["currency"]
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise CostModelError(path, "currency", f"expected an ISO 4217 code such as USD, got {_describe(currency)}")
    as_of = top["as_of"]
    if not isinstance(as_of, date) or isinstance(as_of, datetime):
        raise CostModelError(path, "as_of", f"expected a date (YYYY-MM-DD), got {_describe(as_of)}")
    return CostModel(version=top["version"], currency=currency, as_of=as_of, fees=_fees(path, top["fees"]),
                     infrastructure=_infrastructure(path, top["infrastructure"]))


def load_costs(path: str | Path = DEFAULT_COSTS) -> CostModel:
    """Read and validate a cost model file (module docstring). Raises ``CostModelError``."""
    path = Path(path)
    try:
        return _parse(path)
    except PolicyError as exc:  # the risk policy's readers and validators: same file, key and problem
        raise CostModelError(exc.path, exc.key, exc.problem) from None


# ------------------------------------------------------------------------------------------------ the report


@dataclass(frozen=True)
class RoiReport:
    fills: pl.DataFrame  # one row per fill with its fees and slippage (FILL_SCHEMA)
    strategies: pl.DataFrame  # one row per strategy (STRATEGY_SCHEMA)
    totals: dict  # the same figures for the account, and what the report is based on
    # time, gross_pnl, net_pnl: cumulative, at the period's start, after each fill, at its end (at the marks)
    path: pl.DataFrame = field(repr=False)


def _naive_utc(value: object, what: str) -> datetime:
    try:
        ts = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        raise RoiInputError(f"{what}: {value!r} is not a timestamp") from None
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo is not None else ts


def _journal_fills(journal: pl.DataFrame) -> pl.DataFrame:
    """The journal's fills (as ``account.fills`` selects them), with their order's ClOrdID and time."""
    need = ("seq", "msg_type", "exec_type", "symbol", "side", "last_qty", "last_px", "received_at")
    missing = [c for c in need if c not in journal.columns]
    if missing:
        raise RoiInputError(f"the execution journal has no column {', '.join(missing)}")
    order = [pl.col(c).cast(pl.String) for c in ("order_clordid", "orig_clordid", "clordid") if c in journal.columns]
    when = [pl.col(c).cast(pl.String) for c in ("transact_time", "received_at") if c in journal.columns]
    return (journal.filter((pl.col("msg_type") == "8") & (pl.col("exec_type") == TRADE)
                           & (pl.col("last_qty").cast(pl.Float64) > 0))
            .sort("seq")
            .select(pl.col("seq").cast(pl.Int64), pl.coalesce(order).alias("clordid") if order
                    else pl.lit(None, pl.String).alias("clordid"), "symbol",
                    pl.when(pl.col("side") == BUY).then(pl.lit("buy")).otherwise(pl.lit("sell")).alias("side"),
                    pl.col("last_qty").cast(pl.Float64).alias("qty"), pl.col("last_px").cast(pl.Float64).alias("price"),
                    pl.coalesce(when).alias("when")))


def _references(reference_prices: pl.DataFrame | Mapping[str, float]) -> dict[str, float]:
    if isinstance(reference_prices, Mapping):
        return {str(k): float(v) for k, v in reference_prices.items() if v is not None}
    frame = reference_prices.select("idem_key", pl.col("reference_price").cast(pl.Float64)).drop_nulls()
    out: dict[str, float] = {}
    for key, price in frame.iter_rows():
        if key in out and not math.isclose(out[key], price, rel_tol=1e-9):
            raise RoiInputError(f"idem_key {key!r} has two decision prices, {out[key]!r} and {price!r}: "
                                "the order's reference price is ambiguous")
        out[key] = price
    return out


def _cost_rows(journal: pl.DataFrame, orders: pl.DataFrame, references: dict[str, float], costs: CostModel,
               period: tuple[datetime, datetime]) -> pl.DataFrame:
    entries = {c: (s, k) for c, s, k in orders.select("clordid", "strategy", "idem_key").iter_rows()}
    start, end = period
    rows = []
    for seq, clordid, symbol, side, qty, price, when in _journal_fills(journal).iter_rows():
        if not (math.isfinite(qty) and math.isfinite(price) and price > 0):
            raise RoiInputError(f"journal seq {seq}: a fill of {qty!r} at {price!r} cannot be costed")
        t = _naive_utc(when, f"journal seq {seq} fill time")
        if not start <= t <= end:
            raise RoiInputError(f"journal seq {seq}: the fill at {t} is outside the period {start} to {end}")
        strategy, idem_key = entries.get(clordid, (UNATTRIBUTED, None))
        ref = references.get(idem_key) if idem_key is not None else None
        slip = None if ref is None else ((price - ref) if side == "buy" else (ref - price)) * qty
        rows.append({"seq": seq, "fill_time": t, "strategy": strategy, "clordid": clordid, "idem_key": idem_key,
                     "symbol": symbol, "side": side, "qty": qty, "price": price, "notional": qty * price,
                     "reference_price": ref, **costs.fees.fill_fees(side, qty, price), "slippage": slip,
                     "slippage_bps": None if slip is None else slip / (ref * qty) * 10_000})
    return pl.DataFrame(rows, schema=FILL_SCHEMA).sort("fill_time", "seq")


def _walk(rows: pl.DataFrame, marks: dict[str, float], infra_monthly: float,
          period: tuple[datetime, datetime]) -> tuple[dict[str, float], pl.DataFrame]:
    """Time-weighted average gross exposure per strategy, and the cumulative gross and net PnL path."""
    start, end = period
    seconds = (end - start).total_seconds()
    units: dict[tuple[str, str], float] = defaultdict(float)
    last: dict[str, float] = {}
    integral: dict[str, float] = defaultdict(float)
    exposure: dict[str, float] = {}
    cash, fees, prev = 0.0, 0.0, start
    path = [(start, 0.0, 0.0)]
    for t, strategy, symbol, qty, side, price, fee in rows.select(
            "fill_time", "strategy", "symbol", "qty", "side", "price", "fees").iter_rows():
        for s, e in exposure.items():
            integral[s] += e * (t - prev).total_seconds()
        prev = t
        signed = qty if side == "buy" else -qty
        units[(strategy, symbol)] += signed
        last[symbol] = price
        cash -= signed * price
        fees += fee
        exposure = defaultdict(float)
        for (s, sym), u in units.items():
            exposure[s] += abs(u) * last[sym]
        gross = cash + sum(u * last[sym] for (_, sym), u in units.items())
        path.append((t, gross, gross - fees - infra_monthly * (t - start).total_seconds() / 86_400 / DAYS_PER_MONTH))
    for s, e in exposure.items():
        integral[s] += e * (end - prev).total_seconds()
    gross = cash + sum(u * marks[sym] for (_, sym), u in units.items())
    path.append((end, gross, gross - fees - infra_monthly * seconds / 86_400 / DAYS_PER_MONTH))
    average = {s: (v / seconds if seconds > 0 else 0.0) for s, v in integral.items()}
    return average, pl.DataFrame(path, schema={"time": pl.Datetime("us"), "gross_pnl": pl.Float64(),
                                               "net_pnl": pl.Float64()}, orient="row")


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _strategy_row(strategy: str, rows: pl.DataFrame, journal: pl.DataFrame, marks: dict[str, float],
                  infrastructure: float, exposure: float, capital: float) -> dict:
    held = positions(journal.filter(pl.col("seq").is_in(rows["seq"].to_list())), marks) if rows.height else None
    realised = float(held["realised_pnl"].sum()) if held is not None else 0.0
    unrealised = float(held["unrealised_pnl"].sum()) if held is not None else 0.0
    with_ref = rows.filter(pl.col("slippage").is_not_null())
    notional = float(rows["notional"].sum())
    fees = {c: float(rows[c].sum()) for c in FEE_COLUMNS}
    slippage = float(with_ref["slippage"].sum())
    gross = realised + unrealised
    net = gross - fees["fees"] - infrastructure
    ref_notional = float((with_ref["reference_price"] * with_ref["qty"]).sum())
    return {"strategy": strategy, "fills": rows.height, "orders": rows["clordid"].n_unique(),
            "fills_without_reference": rows.height - with_ref.height, "traded_notional": notional, **fees,
            "slippage": slippage, "slippage_bps": _bps(slippage, ref_notional),
            "fees_bps": _bps(fees["fees"], notional),
            "infrastructure": infrastructure, "realised_pnl": realised, "unrealised_pnl": unrealised,
            "gross_pnl": gross, "net_pnl": net, "avg_gross_exposure": exposure, "turnover": notional / capital,
            "utilisation": exposure / capital, "return_on_capital": net / capital, "roce": _ratio(net, exposure)}


def _bps(amount: float, notional: float) -> float | None:
    return amount / notional * 10_000 if notional else None


def _check_inputs(capital: float, tier: str, period: tuple[datetime, datetime], marks: Mapping[str, float]) -> None:
    if isinstance(capital, bool) or not isinstance(capital, Real) or not math.isfinite(capital) or capital <= 0:
        raise RoiInputError(f"capital must be a positive number, got {_describe(capital)}")
    if tier not in TIERS:
        raise RoiInputError(f"tier {tier!r} is not a tier; choose one of {', '.join(TIERS)}")
    start, end = period
    if not (isinstance(start, datetime) and isinstance(end, datetime)) or start >= end:
        raise RoiInputError(f"period must be two timestamps, start before end; got {start!r} to {end!r}")
    for symbol, mark in marks.items():
        if isinstance(mark, bool) or not isinstance(mark, Real) or not math.isfinite(mark) or mark <= 0:
            raise RoiInputError(f"mark of {symbol} must be a positive price, got {_describe(mark)}")


def roi(fills: pl.DataFrame, orders: pl.DataFrame, reference_prices: pl.DataFrame | Mapping[str, float],
        marks: Mapping[str, float], capital: float, costs: CostModel, tier: str,
        period: tuple[datetime, datetime]) -> RoiReport:
    """The ROI report (module docstring) of the fills in ``fills`` (the execution journal, ``Outbox.journal()``).

    ``orders``: the outbox entries (clordid, strategy, idem_key); ``reference_prices``: the intents (idem_key,
    reference_price), or a mapping idem_key -> price; ``marks``: the last price per symbol; ``capital``: the
    account's starting capital; ``tier``: the tier whose infrastructure is charged; ``period``: (start, end) in
    naive UTC, containing every fill (start: when the account started trading; end: the report's as-of time)."""
    _check_inputs(capital, tier, period, marks)
    period = (_naive_utc(period[0], "period start"), _naive_utc(period[1], "period end"))
    rows = _cost_rows(fills, orders, _references(reference_prices), costs, period)
    last_fill = dict(rows.sort("fill_time", "seq").group_by("symbol").agg(pl.col("price").last()).iter_rows())
    missing = sorted(s for s in last_fill if s not in marks)
    marked = {**last_fill, **{s: float(m) for s, m in marks.items()}}
    monthly = costs.monthly(tier)
    days = (period[1] - period[0]).total_seconds() / 86_400
    infrastructure = monthly * days / DAYS_PER_MONTH
    exposure, path = _walk(rows, marked, monthly, period)
    total_notional = float(rows["notional"].sum())
    table = []
    for name in sorted(rows["strategy"].unique().to_list()) or [PLATFORM]:
        mine = rows.filter(pl.col("strategy") == name)
        share = float(mine["notional"].sum()) / total_notional if total_notional else 1.0
        table.append(_strategy_row(name, mine, fills, marked, infrastructure * share, exposure.get(name, 0.0),
                                   capital))
    strategies = pl.DataFrame(table, schema=STRATEGY_SCHEMA)
    totals = {c: strategies[c].sum() for c in ADDITIVE}
    with_ref = rows.filter(pl.col("slippage").is_not_null())
    totals |= {"slippage_bps": _bps(totals["slippage"], float((with_ref["reference_price"] * with_ref["qty"]).sum())),
               "fees_bps": _bps(totals["fees"], totals["traded_notional"]),
               "utilisation": totals["avg_gross_exposure"] / capital,
               "roce": _ratio(totals["net_pnl"], totals["avg_gross_exposure"]),
               "equity_change": _equity_change(rows, marked),
               "capital": float(capital), "tier": tier, "infrastructure_monthly": monthly,
               "period_start": period[0].isoformat(sep=" "), "period_end": period[1].isoformat(sep=" "),
               "period_days": days, "cost_model": costs.version, "cost_model_as_of": costs.as_of.isoformat(),
               "currency": costs.currency, "marked_at_last_fill": missing}
    return RoiReport(fills=rows, strategies=strategies, totals=totals, path=path)


def _equity_change(rows: pl.DataFrame, marks: dict[str, float]) -> float:
    """Cash + the positions at the marks - capital: the fills' cash flows plus what they left held, marked."""
    cash, held = 0.0, defaultdict(float)
    for symbol, side, qty, price in rows.select("symbol", "side", "qty", "price").iter_rows():
        signed = qty if side == "buy" else -qty
        cash -= signed * price
        held[symbol] += signed
    return cash + sum(u * marks[s] for s, u in held.items())


# ------------------------------------------------------------------------------------------------ chart, summary


def pnl_chart(report: RoiReport, width: int = 560, height: int = 200) -> str:
    """A data URI of an SVG chart: cumulative gross PnL (from the fills, slippage included) and net PnL (less
    fees and prorated infrastructure) over time, from the period's start to its end, with the zero line."""
    title = f"cumulative PnL, {report.totals['currency']}: gross (blue) vs net of fees and infrastructure (orange)"
    path = report.path
    secs = [(t - path["time"][0]).total_seconds() for t in path["time"]]
    values = [*path["gross_pnl"], *path["net_pnl"], 0.0]
    lo, hi = min(values), max(values)
    pad, top = 12.0, 22.0

    def x(s: float) -> float:
        return pad + s / (secs[-1] or 1.0) * (width - 2 * pad)

    def y(v: float) -> float:
        return height - pad - (v - lo) / ((hi - lo) or 1.0) * (height - pad - top)

    lines = "".join(
        f'<polyline fill="none" stroke="{colour}" stroke-width="1.4" points="'
        + " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in zip(secs, path[column], strict=True)) + '"/>'
        for column, colour in (("gross_pnl", "#1f77b4"), ("net_pnl", "#ff7f0e")))
    zero = f'<line x1="{pad}" x2="{width - pad}" y1="{y(0.0):.1f}" y2="{y(0.0):.1f}" stroke="#bbb"/>'
    labels = (f'<text x="{width - pad}" y="{height - 2}" text-anchor="end">gross {path["gross_pnl"][-1]:,.2f}, '
              f'net {path["net_pnl"][-1]:,.2f} at {report.totals["period_end"][:10]}</text>'
              f'<text x="{pad}" y="{height - 2}">{report.totals["period_start"][:10]}</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="11"><rect width="100%" height="100%" fill="white"/><text x="8" y="14">{html.escape(title)}'
           f"</text>{zero}{lines}{labels}</svg>")
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def _fmt(value: object, kind: str = "money") -> str:
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{value:.3%}"
    if kind == "bps":
        return f"{value:,.2f} bps"
    if kind == "x":
        return f"{value:.3f}x"
    return f"{value:,.2f}"


def summary_markdown(report: RoiReport) -> str:
    """The report as Markdown: the bridge from gross to net PnL, capital efficiency, one row per strategy."""
    t = report.totals
    head = (f"**ROI evidence**, {t['period_start']} to {t['period_end']} ({t['period_days']:.1f} days), tier "
            f"`{t['tier']}`, cost model `{t['cost_model']}` (assumptions as of {t['cost_model_as_of']}), "
            f"amounts in {t['currency']}, capital {_fmt(t['capital'])}.\n")
    bridge = [("gross PnL (fills at their prices, marked)", _fmt(t["gross_pnl"])),
              ("  realised / unrealised", f"{_fmt(t['realised_pnl'])} / {_fmt(t['unrealised_pnl'])}"),
              ("- fees (commission, notional, SEC, FINRA TAF)",
               f"{_fmt(t['fees'])} ({_fmt(t['commission'])}, {_fmt(t['notional_fee'])}, {_fmt(t['sec_fee'])}, "
               f"{_fmt(t['finra_taf'])}; {_fmt(t['fees_bps'], 'bps')})"),
              ("- infrastructure", f"{_fmt(t['infrastructure'])} ({_fmt(t['infrastructure_monthly'])} a month)"),
              ("= net PnL", f"**{_fmt(t['net_pnl'])}**"),
              ("slippage vs decision price (already in gross)",
               f"{_fmt(t['slippage'])} ({_fmt(t['slippage_bps'], 'bps')}; {t['fills_without_reference']} fills "
               "without a reference price)"),
              ("fills / orders", f"{t['fills']} / {t['orders']}"),
              ("traded notional, turnover", f"{_fmt(t['traded_notional'])}, {_fmt(t['turnover'], 'x')}"),
              ("average gross exposure, utilisation",
               f"{_fmt(t['avg_gross_exposure'])}, {_fmt(t['utilisation'], 'pct')}"),
              ("return on capital, on capital employed", f"{_fmt(t['return_on_capital'], 'pct')}, "
                                                          f"{_fmt(t['roce'], 'pct')}")]
    lines = [head, "| | total |", "|---|---:|", *(f"| {a} | {b} |" for a, b in bridge), ""]
    lines += ["| strategy | fills | gross PnL | fees | infrastructure | net PnL | slippage (bps) | turnover "
              "| return on capital | ROCE |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report.strategies.iter_rows(named=True):
        lines.append(f"| {r['strategy']} | {r['fills']} | {_fmt(r['gross_pnl'])} | {_fmt(r['fees'])} | "
                     f"{_fmt(r['infrastructure'])} | {_fmt(r['net_pnl'])} | {_fmt(r['slippage_bps'], 'bps')} | "
                     f"{_fmt(r['turnover'], 'x')} | {_fmt(r['return_on_capital'], 'pct')} | {_fmt(r['roce'], 'pct')} |")
    if t["marked_at_last_fill"]:
        lines += ["", f"Marked at their last fill price (no mark given): {', '.join(t['marked_at_last_fill'])}."]
    lines += ["", "Costs are positive. Slippage is attribution: it is in the fill prices, so in gross PnL, and is "
                  "not subtracted again. The paper venue charges nothing: the fees are the cost model's. "
                  "Infrastructure is allocated to strategies by traded notional. Definitions: "
                  "`emp_core/compliance/roi.py`."]
    return "\n".join(lines)
