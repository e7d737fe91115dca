"""The book as of a bar: market prices and volumes, the account the execution journal says we hold, the orders
still working, and the stops that protect held positions. Everything the risk policy judges an intent against.

Point in time: a :class:`Market` as of bar t reads only bars with ts <= t; prices are each symbol's last close
at or before t, average daily volume the mean volume of its last ``ADV_BARS`` bars at or before t. The account
is the journal's fills (``emp_core.execution.account``) marked at those prices.

**Working orders** count toward the position a strategy already has: an order approved but not yet sent, or
sent and not in a final state (filled, cancelled, rejected, expired), adds its open quantity
(ordered less filled), signed. So a strategy re-run before its last orders filled asks for the difference
only, never the same units twice, and the risk policy judges each order against the filled positions plus
the working ones (:func:`book`). Paper and live orders are separate books.

**Stops of held positions**: the stop price of the latest outbox order in the symbol that opened or added to
the position in its current direction (a buy for a long, a sell for a short). The risk policy counts a
position without a known protective stop at its full notional.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl

from emp_core.errors import EmpError
from emp_core.execution.account import Account, account, fills
from emp_core.execution.outbox import TERMINAL, Outbox
from emp_core.risk.policy import Portfolio
from emp_core.trading.ledger import positions

PAPER_CAPITAL = 1_000_000.0  # the paper account's starting capital
ADV_BARS = 20  # average daily volume over the last 20 daily bars
FINAL_STATUSES = TERMINAL  # OrdStatus filled, cancelled, rejected, expired


@dataclass(frozen=True)
class Market:
    """Last close and average daily volume of each symbol as of ``as_of`` (module docstring)."""

    as_of: datetime
    prices: dict[str, float]
    adv: dict[str, float]
    last_bar: dict[str, datetime]  # each symbol's last bar time at or before as_of


def market_as_of(bars: pl.DataFrame, as_of: datetime | None = None) -> Market:
    """The market from ``bars`` (symbol, ts, close, volume) up to and including ``as_of`` (default: the last bar)."""
    if as_of is not None:
        bars = bars.filter(pl.col("ts") <= as_of)
    if bars.is_empty():
        raise EmpError("no bars" + (f" at or before {as_of}" if as_of is not None else "")
                       + ": the last prices are unknown (ingest bars first)")
    last = (bars.sort("symbol", "ts").group_by("symbol", maintain_order=True)
            .agg(pl.col("ts").last(), pl.col("close").last(), pl.col("volume").tail(ADV_BARS).mean()))
    return Market(as_of=as_of or bars["ts"].max(), prices=dict(last.select("symbol", "close").rows()),
                  adv=dict(last.select("symbol", "volume").rows()), last_bar=dict(last.select("symbol", "ts").rows()))


def read_market(store, symbols: list[str] | None = None, as_of: datetime | None = None,
                dataset: str = "bars_1d") -> Market:
    """:func:`market_as_of` on the store's bars (only the last ``ADV_BARS`` are needed, but a few months are read
    so that a symbol with gaps still has them)."""
    start = None if as_of is None else as_of - timedelta(days=3 * ADV_BARS + 30)
    end = None if as_of is None else as_of + timedelta(microseconds=1)
    if as_of is None and symbols:
        bars = store.read_bars(dataset, symbols=symbols)
    else:
        bars = store.read_bars(dataset, symbols=symbols, start=start, end=end)
    return market_as_of(bars, as_of)


def _for_kind(frame: pl.DataFrame, column: str, clordids: set[str] | None) -> pl.DataFrame:
    return frame if clordids is None else frame.filter(pl.col(column).is_in(list(clordids)))


def session_orders(outbox: Outbox, session: str | None) -> set[str] | None:
    """The ClOrdIDs of the outbox orders approved for ``session`` (paper or live); None: every order."""
    if session is None:
        return None
    entries = outbox.entries()
    return set(entries.filter(pl.col("session") == session)["clordid"].to_list())


def working_orders(outbox: Outbox, session: str | None = None) -> dict[str, int]:
    """Signed open quantity per symbol of the orders not yet final (module docstring), of ``session``'s orders
    only when given."""
    status = _for_kind(outbox.status(), "clordid", session_orders(outbox, session))
    if status.is_empty():
        return {}
    open_ = (status.filter(pl.col("ord_status").is_null() | ~pl.col("ord_status").is_in(FINAL_STATUSES))
             .with_columns(((pl.col("qty") - pl.col("cum_qty").cast(pl.Float64).fill_null(0.0)).round(0)
                            * pl.when(pl.col("side") == "buy").then(1).otherwise(-1)).alias("open"))
             .group_by("symbol").agg(pl.col("open").sum()))
    return {s: int(q) for s, q in open_.rows() if int(q)}


def position_stops(outbox: Outbox, positions: dict[str, int], session: str | None = None) -> dict[str, float]:
    """The stop of each held position, where an order in its direction named one (module docstring)."""
    entries = outbox.entries()
    if session is not None:
        entries = entries.filter(pl.col("session") == session)
    stops = {}
    for symbol, units in positions.items():
        side = "buy" if units > 0 else "sell"
        mine = entries.filter((pl.col("symbol") == symbol) & (pl.col("side") == side)
                              & pl.col("stop_price").is_not_null())
        if mine.height:
            stops[symbol] = float(mine["stop_price"][-1])
    return stops


@dataclass(frozen=True)
class Book:
    """What the risk policy judges against: the account, the orders still working, the portfolio."""

    account: Account
    working: dict[str, int]
    portfolio: Portfolio
    avg_cost: dict[str, float] = field(default_factory=dict)  # of each filled position (average cost)


def book(outbox: Outbox, market: Market, capital: float = PAPER_CAPITAL, session: str | None = None,
         closes=None) -> Book:
    """The account from the journal marked at ``market``, the working orders, and the risk policy's portfolio,
    of ``session``'s orders only when given (paper and live are separate books: a paper fill must not make a
    live order look like a close).

    The portfolio the policy judges holds the filled positions **plus the working orders**, as if they had
    filled (the usual pre-trade convention): an order is judged against everything already committed, so a
    second order cannot pass as reduce-only against units an earlier one is already selling, and the aggregate
    limits (exposure, leverage, open positions) count what is on its way. ``closes(symbols)``, when given,
    returns the daily closes (symbol, ts, close) of the traded symbols up to the market's bar: the peak and
    start-of-day equity of the drawdown gates then come from the book marked at every close
    (``account.account``)."""
    ids = session_orders(outbox, session)
    journal = _for_kind(outbox.journal(), "order_clordid", ids)
    traded = sorted(set(fills(journal)["symbol"].to_list()))
    # the drawdown inputs: the book marked at every daily close (closes(symbols) gives them), today wall clock
    acct = account(journal, market.prices, capital, closes=closes(traded) if closes and traded else None)
    working = working_orders(outbox, session)
    committed = {s: acct.positions.get(s, 0) + working.get(s, 0) for s in {*acct.positions, *working}}
    committed = {s: u for s, u in committed.items() if u}
    unpriced = sorted(s for s in committed if s not in market.prices)
    if unpriced:
        raise EmpError(f"held position(s) without a price at or before {market.as_of}: {', '.join(unpriced)}")
    portfolio = Portfolio(equity=acct.equity, peak_equity=acct.peak_equity, day_start_equity=acct.day_start_equity,
                          positions=committed, prices=market.prices, adv=market.adv,
                          stops=position_stops(outbox, committed, session))
    held = positions(journal, market.prices)
    avg_cost = {s: c for s, c in held.select("symbol", "avg_cost").rows() if c is not None}
    return Book(account=acct, working=working, portfolio=portfolio, avg_cost=avg_cost)
