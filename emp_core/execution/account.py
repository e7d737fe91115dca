"""The paper account as the execution journal says it is: positions, cash, equity, marked at the last prices.

Positions are the signed sum of the journal's fills (each ExecutionReport's LastQty at LastPx, buys +,
sells -); cash is the starting capital less what the fills cost; equity is cash plus the positions at the
last prices (the store's latest close of each symbol). Every fill counts once: the journal keeps each report
once. Peak equity is the highest of the starting capital and the equity after each fill, marked at its own
fill prices; the start-of-day equity is the equity at the last fill before today's date (UTC), or the
starting capital. These feed the risk policy's drawdown gates (``emp_core.risk.policy.Portfolio``).
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


def account(journal: pl.DataFrame, prices: dict[str, float], capital: float, today: date | None = None) -> Account:
    """The account after every fill in ``journal`` (module docstring)."""
    today = today or utcnow().date()
    cash, held, last = capital, {}, {}
    peak, day_start = capital, capital
    for symbol, qty, px, received in fills(journal).iter_rows():
        cash -= qty * px
        held[symbol] = held.get(symbol, 0.0) + qty
        last[symbol] = px
        equity = cash + sum(u * last[s] for s, u in held.items())
        peak = max(peak, equity)
        if datetime.fromisoformat(str(received)).date() < today:
            day_start = equity
    marks = {s: prices.get(s, last[s]) for s in held}
    equity = cash + sum(u * marks[s] for s, u in held.items())
    return Account(capital=capital, cash=cash, positions={s: round(u) for s, u in held.items() if round(u)},
                   equity=equity, peak_equity=max(peak, equity), day_start_equity=day_start)
