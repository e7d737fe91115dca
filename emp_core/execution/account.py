"""The paper account as the execution journal says it is: positions, cash, equity, marked at the last prices.

Positions are the signed sum of the journal's fills (each ExecutionReport's LastQty at LastPx, buys +,
sells -); cash is the starting capital less what the fills cost; equity is cash plus the positions at the
last prices (the store's latest close of each symbol). Every fill counts once: the journal keeps each report
once. Peak equity is the highest of the starting capital and the equity after each fill, marked at its own
fill prices; the start-of-day equity is the equity at the last fill before today's date (UTC), or the
starting capital. Given the daily closes (``closes``), the book is marked at every close too: the peak then
counts highs between fills, and the start of day is yesterday's close. These feed the risk policy's drawdown
gates (``emp_core.risk.policy.Portfolio``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

import polars as pl

from emp_core.clock import utcnow

BUY = "1"
TRADE = "F"  # ExecType of a fill in FIX 4.4; a trade correction (G) or bust (H) is not a new fill


@dataclass(frozen=True)
class Account:
    capital: float
    cash: float
    positions: dict[str, int] = field(default_factory=dict)
    equity: float = 0.0
    peak_equity: float = 0.0
    day_start_equity: float = 0.0


def fills(journal: pl.DataFrame) -> pl.DataFrame:
    """The journal's fills (ExecutionReports of ExecType F, Trade, with LastQty > 0), in the order received,
    with signed quantity. Corrections and busts (ExecType G, H) are not applied: a venue that sends them needs
    an operator (they are journaled, and the reconciliation sees them)."""
    if journal.is_empty():
        return pl.DataFrame(schema={"symbol": pl.String, "qty": pl.Float64, "px": pl.Float64,
                                    "received_at": pl.String})
    return (journal.filter((pl.col("msg_type") == "8") & (pl.col("exec_type") == TRADE)
                           & (pl.col("last_qty").cast(pl.Float64) > 0))
            .sort("seq")
            .select("symbol", (pl.when(pl.col("side") == BUY).then(1.0).otherwise(-1.0)
                               * pl.col("last_qty").cast(pl.Float64)).alias("qty"),
                    pl.col("last_px").cast(pl.Float64).alias("px"), pl.col("received_at").cast(pl.String)))


def account(journal: pl.DataFrame, prices: dict[str, float], capital: float, today: date | None = None,
            closes: pl.DataFrame | None = None) -> Account:
    """The account after every fill in ``journal`` (module docstring). With ``closes`` (symbol, ts, close: the
    daily closes of the traded symbols), the book is also marked at every close after its first fill: the peak
    includes those marks (a high between fills counts), and the start-of-day equity is the mark at the last
    close before ``today`` (yesterday's close), not the equity at the last fill before today."""
    today = today or utcnow().date()
    cash, held, last = capital, {}, {}
    peak, day_start = capital, capital
    timeline = []  # (fill time, cash after, holdings after) for the marks at the closes
    for symbol, qty, px, received in fills(journal).iter_rows():
        cash -= qty * px
        held[symbol] = held.get(symbol, 0.0) + qty
        last[symbol] = px
        equity = cash + sum(u * last[s] for s, u in held.items())
        peak = max(peak, equity)
        when = datetime.fromisoformat(str(received))
        if when.date() < today:
            day_start = equity
        timeline.append((when.date(), cash, dict(held)))
    if closes is not None and timeline:
        # the fill-time equity marks the other symbols at their last fills (stale): the closes replace it
        peak, day_start = _marked(timeline, closes, today, capital, day_start)
    marks = {s: prices.get(s, last[s]) for s in held}
    equity = cash + sum(u * marks[s] for s, u in held.items())
    return Account(capital=capital, cash=cash, positions={s: round(u) for s, u in held.items() if round(u)},
                   equity=equity, peak_equity=max(peak, equity), day_start_equity=day_start)


def _marked(timeline: list, closes: pl.DataFrame, today: date, peak: float, day_start: float) -> tuple[float, float]:
    """The peak and start-of-day equity with the book marked at each daily close from the first fill's day."""
    wide = (closes.with_columns(pl.col("ts").cast(pl.Date).alias("day")).sort("day")
            .pivot(on="symbol", index="day", values="close", aggregate_function="last").sort("day")
            .fill_null(strategy="forward"))
    wide = wide.filter((pl.col("day") >= timeline[0][0]) & (pl.col("day") < today))
    k = 0
    cash, held = None, {}
    for row in wide.iter_rows(named=True):
        while k < len(timeline) and timeline[k][0] <= row["day"]:  # fills of that day are in its close
            _, cash, held = timeline[k]
            k += 1
        if cash is None:
            continue
        if any(u and row.get(s) is None for s, u in held.items()):
            continue  # a held symbol without a close yet: no mark that day
        equity = cash + sum(u * row[s] for s, u in held.items() if u)
        peak = max(peak, equity)
        day_start = equity  # the latest close before today
    return peak, day_start
