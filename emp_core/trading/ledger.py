"""What the execution journal says happened, as tables: positions with their cost and P&L, the account's P&L,
and the value at risk of what is held.

**Positions** (average cost). Fills are taken in the order the journal received them (each report once;
``account.fills``). A fill in the direction of the position (or from flat) moves the average cost to the
quantity-weighted mean; a fill against it realises (fill price - average cost) x closed units x the position's
sign; the part of a fill beyond the position (a reversal) opens a new position at the fill price. Unrealised
P&L is units x (mark - average cost). The venue charges no commission, so the accounting identity is
equity = capital + realised + unrealised, and equity = cash + sum(units x mark) (``account.account``): the
tests hold one against the other.

**Value at risk**: ``emp_core.risk.var.portfolio_var`` (historical, parametric, Monte Carlo; one bar, 99%)
of the held positions at the marks, on the last ``VAR_BARS`` daily returns at or before the mark date.
A flat book has zero VaR and says so. Only dates on which every held symbol has a return are used; the
span used is reported (``returns_from``, ``returns_to``), so a held symbol whose history ended long ago shows
as old returns rather than silently.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import polars as pl

from emp_core.execution.account import fills
from emp_core.risk.var import portfolio_var

VAR_BARS = 250
VAR_ALPHA = 0.99
VAR_PATHS = 20_000

POSITION_SCHEMA = {"symbol": pl.String, "units": pl.Int64, "avg_cost": pl.Float64, "mark": pl.Float64,
                   "market_value": pl.Float64, "realised_pnl": pl.Float64, "unrealised_pnl": pl.Float64,
                   "fills": pl.Int64}


def positions(journal: pl.DataFrame, marks: dict[str, float]) -> pl.DataFrame:
    """One row per symbol ever filled (module docstring); a symbol without a mark is marked at its last fill."""
    book: dict[str, list] = {}  # symbol -> [units, avg_cost, realised, fills, last_px]
    for symbol, qty, px, _ in fills(journal).iter_rows():
        units, avg, realised, n, _ = book.get(symbol, [0.0, 0.0, 0.0, 0, px])
        if units == 0 or (units > 0) == (qty > 0):
            avg = (avg * abs(units) + px * abs(qty)) / (abs(units) + abs(qty))
            units += qty
        else:
            closed = min(abs(qty), abs(units))
            realised += closed * (px - avg) * math.copysign(1.0, units)
            rest = abs(qty) - closed
            units += qty
            if rest > 0:
                avg = px
            elif units == 0:
                avg = 0.0
        book[symbol] = [units, avg, realised, n + 1, px]
    rows = []
    for symbol, (units, avg, realised, n, last_px) in sorted(book.items()):
        mark = marks.get(symbol, last_px)
        rows.append({"symbol": symbol, "units": round(units), "avg_cost": avg if units else None, "mark": mark,
                     "market_value": units * mark, "realised_pnl": realised,
                     "unrealised_pnl": units * (mark - avg) if units else 0.0, "fills": n})
    return pl.DataFrame(rows, schema=POSITION_SCHEMA)


def pnl(positions_frame: pl.DataFrame, capital: float, cash: float) -> dict:
    """The account's P&L from the positions table and the journal's cash (``account.account``)."""
    realised = float(positions_frame["realised_pnl"].sum())
    unrealised = float(positions_frame["unrealised_pnl"].sum())
    equity = cash + float(positions_frame["market_value"].sum())
    return {"capital": capital, "cash": cash, "equity": equity, "realised_pnl": realised,
            "unrealised_pnl": unrealised, "total_pnl": equity - capital, "return": equity / capital - 1.0,
            "gross_exposure": float(positions_frame["market_value"].abs().sum()),
            "open_positions": int((positions_frame["units"] != 0).sum()),
            "fills": int(positions_frame["fills"].sum())}


def value_at_risk(held: dict[str, int], marks: dict[str, float], bars: pl.DataFrame,
                  as_of: datetime | None = None) -> dict:
    """One-bar 99% VaR and ES of ``held`` (module docstring) from ``bars`` (symbol, ts, close)."""
    held = {s: u for s, u in held.items() if u}
    if not held:
        return {"method": "flat book", "var_historical": 0.0, "es_historical": 0.0, "var_parametric": 0.0,
                "es_parametric": 0.0, "var_monte_carlo": 0.0, "es_monte_carlo": 0.0, "n_observations": 0}
    if as_of is not None:
        bars = bars.filter(pl.col("ts") < as_of + timedelta(microseconds=1))
    returns = (bars.filter(pl.col("symbol").is_in(list(held))).sort("symbol", "ts")
               .with_columns(pl.col("close").pct_change().over("symbol").alias("r"))
               .drop_nulls("r").pivot(on="symbol", index="ts", values="r").sort("ts").drop_nulls()
               .tail(VAR_BARS))
    result = portfolio_var(held, marks, returns, VAR_ALPHA, n_paths=VAR_PATHS, seed=0)
    out = {"method": "one bar, 99%", "n_observations": result.n_observations,
           "returns_from": str(returns["ts"].min()), "returns_to": str(returns["ts"].max())}
    for name in ("historical", "parametric", "monte_carlo"):
        estimate = getattr(result, name)
        out[f"var_{name}"], out[f"es_{name}"] = estimate.var, estimate.es
    return out
