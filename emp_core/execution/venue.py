"""The paper venue: a FIX 4.4 acceptor that fills orders against market-data bars.

Clock
-----
The venue holds a polars frame of bars (symbol, ts, open, high, low, close, volume). Its clock is the
sorted list of distinct ``ts`` values and a cursor into it, the *current bar* (``start``, 0 by default).
``advance()`` moves the cursor one bar on and works every open order against the new bar; tests call it
directly and ``emp venue`` drives it on a timer. Nothing fills between two ``advance()`` calls, so an order
received while bar t is current can first fill on bar t+1: there is no look-ahead.

Fill rules (per order, against its symbol's bar at the new cursor; no bar there means no fill)
-----------------------------------------------------------------------------------------------
- **Market**: at the bar's open plus slippage, ``open x (1 + slippage_bps / 10_000)`` for a buy and
  ``open x (1 - slippage_bps / 10_000)`` for a sell. A remainder left by the volume cap fills the same way
  on later bars.
- **Limit buy** fills when the bar's low <= limit, at min(open, limit) (a gap down through the limit fills
  at the open); **limit sell** when the high >= limit, at max(open, limit). No slippage on limit orders.
- **Volume cap**: the venue trades at most ``floor(volume_share x volume)`` units of a symbol per bar,
  shared by that symbol's orders in arrival order (first come, first filled), so splitting an order does not
  buy more liquidity. What the cap leaves stays working (ExecType F with OrdStatus 1, partially filled,
  until the last fill gives OrdStatus 2, filled). A bar with zero volume fills nothing.

Orders are day orders (TimeInForce 0 or absent); the venue does not expire them (there is no end of day
in the bar clock): an order stays working until filled or canceled.

Rejects (ExecutionReport ExecType 8 / OrdStatus 8, with OrdRejReason 103 and Text 58)
-------------------------------------------------------------------------------------
Checked in this order: Symbol missing or not in the bars (1 unknown symbol); Side other than 1/2, OrdType
other than 1/2, TimeInForce other than day (11 unsupported order characteristic); OrderQty missing, not
positive or not a whole number (13 incorrect quantity); a limit order without a Price or with a price that is
not positive (99 other); a limit price more than ``collar`` (a share) away from the reference price, the
close of the symbol's latest bar at or before the cursor (0 broker/exchange option). A rejected order keeps
its ClOrdID: it is in ``orders()`` with status 8 and counts in ``received()``.

ClOrdID uniqueness and resends
------------------------------
A ClOrdID names one order (or one cancel request) for the life of the venue. A NewOrderSingle reusing one
is rejected with OrdRejReason 6 (duplicate order; OrderID "NONE"; nothing about the existing order changes)
unless it is flagged as a possible resend, PossDupFlag (43) = Y or PossResend (97) = Y: then the venue
re-sends the order's latest ExecutionReport unchanged (same ExecID, flagged PossResend=Y) and creates
nothing. A session-level resend (quickfix answering a ResendRequest) also arrives with PossDupFlag=Y and
takes the same path, so an order is created once however often it is delivered. Re-sent reports are
retransmissions, not new reports: they are listed in ``resends()``, not in ``reports()``, and are not
mirrored to the drop copy (which already has them).

Cancels (OrderCancelRequest, 35=F)
----------------------------------
A working order (new or partially filled) is canceled: ExecutionReport ExecType 4 / OrdStatus 4 with
ClOrdID = the request's, OrigClOrdID = the order's, its CumQty and AvgPx, LeavesQty 0. An unknown
OrigClOrdID gets an OrderCancelReject (35=9) with CxlRejReason 1 (unknown order, OrdStatus 8); an order
already filled, canceled or rejected gets CxlRejReason 0 (too late to cancel, OrdStatus = its status); a
Symbol or Side that does not match the order, CxlRejReason 99; a reused ClOrdID, CxlRejReason 6 (or, with
PossDupFlag/PossResend, a re-send of the response already given).

Drop copy
---------
A session whose TargetCompID is ``config.drop_copy`` (DROPCOPY by default) receives a copy of every
ExecutionReport sent on any order session, sent right after the original under the venue lock, so in the
same order as ``reports()``. If the drop-copy counterparty is not logged on, the reports are still sent
through quickfix: ``Session.send`` assigns each its sequence number and writes it to the session's
FileStore (PersistMessages=Y, no reset on logon, logout or disconnect). When the counterparty logs on, the
venue's Logon carries the next sequence number, the counterparty sees a gap, sends a ResendRequest, and
quickfix re-sends the stored reports from the store, in order, with PossDupFlag=Y. The same holds for an
order session whose executor is down.

Credentials and malformed messages
----------------------------------
A [SESSION] of the venue's settings with ``Username`` and/or ``Password`` keys (``write_settings(...,
credentials={("VENUE", "EXECUTOR"): (user, password)})``) admits only a Logon carrying the same Username (553)
and Password (554); any other Logon is refused with a Logout whose Text is "Rejected Logon Attempt: bad
credentials for <SenderCompID>" (the check is ``FixApplication``'s, so the password is never echoed or
logged). A session without these keys admits any Logon from its CompIDs, as before.

A message that fails the FIX44 dictionary (a bad field value, a required field missing, an unknown MsgType)
is answered by quickfix with a session-level Reject (35=3) and never reaches the venue; a well-formed
application message the venue does not handle gets a BusinessMessageReject (35=j); a garbled frame (a bad
checksum or body length) is dropped without consuming a sequence number. None of them ends the session. A
Reject or BusinessMessageReject the counterparty sends is logged and never answered (a reject of a reject
would never end).

Accounting
----------
For every order: cum_qty = sum of its fills' quantities, leaves = order qty - cum while it works and 0 once
it is done (filled, canceled, rejected), avg_px = the quantity-weighted mean of the fill prices; ExecIDs
are unique across the venue's life (``id_prefix`` keeps them unique across restarts). Each order ends in
exactly one terminal state (filled, canceled or rejected) or is still working.

Threads
-------
quickfix delivers messages on its session threads; ``advance()`` runs on the caller's. One re-entrant lock
guards all state, and reports are sent while it is held, which fixes their order on every session. This
cannot deadlock with quickfix: quickfix holds no lock of its own while it calls ``fromApp``, and the venue's
``toApp`` / ``toAdmin`` never take the venue lock.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import quickfix as qf

from emp_core.errors import EmpError
from emp_core.execution.fix import (
    CL_ORD_ID,
    ORD_TYPE,
    ORDER_QTY,
    POSS_DUP_FLAG,
    POSS_RESEND,
    SIDE,
    SYMBOL,
    TERMINAL_STATUSES,
    CancelReject,
    CancelRequest,
    CxlRejReason,
    ExecReport,
    ExecType,
    FixApplication,
    FixMessageError,
    FixSession,
    NewOrder,
    OrdRejReason,
    OrdStatus,
    OrdType,
    Side,
    field_view,
    get_field,
    header_flag,
    msg_type,
    now,
)

log = logging.getLogger("emp.execution.venue")

BAR_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume")
_TOLERANCE = 1e-9


class VenueError(EmpError):
    """The venue's bars or configuration cannot be used."""


@dataclass(frozen=True)
class VenueConfig:
    slippage_bps: float = 5.0  # market orders: a buy pays open x (1 + bps/1e4), a sell gets open x (1 - bps/1e4)
    volume_share: float = 0.1  # at most this share of a bar's volume trades per symbol per bar
    collar: float = 0.10  # limit prices beyond this share from the reference close are rejected
    drop_copy: str | None = "DROPCOPY"  # TargetCompID of the drop-copy session (None: no drop copy)

    def __post_init__(self) -> None:
        for name, value, low, high in (("slippage_bps", self.slippage_bps, 0.0, 10_000.0),
                                       ("volume_share", self.volume_share, 0.0, 1.0),
                                       ("collar", self.collar, 0.0, 10.0)):
            if not isinstance(value, int | float) or not math.isfinite(value) or not low <= value <= high:
                raise VenueError(f"venue config {name}={value!r}: must be a number from {low} to {high}")


@dataclass(frozen=True)
class Fill:
    exec_id: str
    qty: float
    price: float
    bar: int  # index of the bar it filled on
    ts: object  # that bar's ts


@dataclass(frozen=True)
class OrderView:
    """A snapshot of one order, as ``orders()`` returns it."""

    cl_ord_id: str
    order_id: str
    session: str
    symbol: str
    side: str
    ord_type: str
    qty: float
    price: float | None
    status: str  # OrdStatus code
    cum_qty: float
    leaves_qty: float
    avg_px: float
    fills: tuple[Fill, ...]
    arrival_bar: int
    reject_reason: int | None = None
    text: str | None = None

    @property
    def working(self) -> bool:
        return self.status not in TERMINAL_STATUSES


class _Order:
    __slots__ = ("arrival_bar", "cl_ord_id", "cum_qty", "fills", "last_report", "notional", "ord_type",
                 "order_id", "price", "qty", "reject_reason", "session_id", "side", "status", "symbol", "text")

    def __init__(self, **kw) -> None:
        self.cum_qty = 0.0
        self.notional = 0.0
        self.fills: list[Fill] = []
        self.last_report: ExecReport | None = None
        self.reject_reason: int | None = None
        self.text: str | None = None
        for k, v in kw.items():
            setattr(self, k, v)

    @property
    def leaves(self) -> float:
        return 0.0 if self.status in TERMINAL_STATUSES else self.qty - self.cum_qty

    @property
    def avg_px(self) -> float:
        return self.notional / self.cum_qty if self.cum_qty else 0.0

    def view(self) -> OrderView:
        return OrderView(self.cl_ord_id, self.order_id, str(self.session_id), self.symbol, self.side,
                         self.ord_type, self.qty, self.price, self.status, self.cum_qty, self.leaves, self.avg_px,
                         tuple(self.fills), self.arrival_bar, self.reject_reason, self.text)


def _load_bars(bars: pl.DataFrame) -> tuple[list, dict, dict]:
    if not isinstance(bars, pl.DataFrame):
        raise VenueError(f"bars: expected a polars DataFrame, got {type(bars).__name__}")
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise VenueError(f"bars: missing column(s) {', '.join(missing)} (need {', '.join(BAR_COLUMNS)})")
    if bars.height == 0:
        raise VenueError("bars: the frame is empty")
    frame = bars.select(BAR_COLUMNS)
    for column in BAR_COLUMNS:
        nulls = frame[column].null_count()
        if nulls:
            raise VenueError(f"bars: column {column} has {nulls} null value(s)")
    try:
        frame = frame.with_columns(pl.col("symbol").cast(pl.String),
                                   *[pl.col(c).cast(pl.Float64, strict=True) for c in BAR_COLUMNS[2:]])
    except Exception as exc:
        raise VenueError(f"bars: open, high, low, close and volume must be numeric ({exc})") from exc
    dupes = frame.select("symbol", "ts").is_duplicated()
    if dupes.any():
        row = frame.filter(dupes).row(0, named=True)
        raise VenueError(f"bars: symbol {row['symbol']} has more than one bar at ts {row['ts']}")
    times = sorted(frame["ts"].unique().to_list())
    index = {t: i for i, t in enumerate(times)}
    table: dict[tuple[str, int], tuple[float, float, float, float, float]] = {}
    for row in frame.iter_rows(named=True):
        values = (row["open"], row["high"], row["low"], row["close"], row["volume"])
        where = f"bars: symbol {row['symbol']} at ts {row['ts']}"
        if not all(math.isfinite(v) for v in values):
            raise VenueError(f"{where}: prices and volume must be finite")
        if min(values[:4]) <= 0 or values[4] < 0:
            raise VenueError(f"{where}: prices must be positive and volume nonnegative")
        table[(row["symbol"], index[row["ts"]])] = values
    by_symbol: dict[str, list[int]] = {}
    for symbol, i in sorted(table):
        by_symbol.setdefault(symbol, []).append(i)
    return times, table, by_symbol


class _VenueApp(FixApplication):
    def __init__(self, venue: PaperVenue) -> None:
        super().__init__()
        self.venue = venue

    def on_logon(self, session_id):
        log.info("venue: %s logged on", session_id)

    def on_logout(self, session_id):
        log.info("venue: %s logged out", session_id)

    def from_admin(self, message, session_id):
        if msg_type(message) == "3":
            log.warning("venue: %s sent a Reject of our message %s: %s", session_id, get_field(message, 45),
                        get_field(message, 58))

    def from_app(self, message, session_id):
        message = field_view(message)  # read once from the wire string (quickfix reads it if it holds data)
        if msg_type(message) == "j":  # never answered: a BusinessMessageReject of a reject would loop
            log.warning("venue: %s sent a BusinessMessageReject of our message %s: %s", session_id,
                        get_field(message, 45), get_field(message, 58))
            return
        self.venue._on_message(message, session_id)


class PaperVenue:
    """A FIX 4.4 acceptor filling against ``bars``; ``settings`` is a QuickFIX acceptor settings file (see
    ``write_settings``) with one [SESSION] per order client plus, optionally, the drop-copy session.

    ``with PaperVenue(bars, settings) as venue: ... venue.advance() ...`` or ``start()`` / ``stop()``."""

    def __init__(self, bars: pl.DataFrame, settings: Path | str, config: VenueConfig | None = None, *,
                 start: int = 0, id_prefix: str | None = None) -> None:
        self.config = config or VenueConfig()
        self._times, self._bars, self._symbol_bars = _load_bars(bars)
        if not 0 <= start < len(self._times):
            raise VenueError(f"start={start}: must index one of the {len(self._times)} bar times")
        self._cursor = start
        self.fix = FixSession(settings, _VenueApp(self), role="acceptor")
        targets = {c.target: c.session_id for c in self.fix.settings.sessions}
        self.drop_copy_session: qf.SessionID | None = None
        if self.config.drop_copy is not None:
            if self.config.drop_copy not in targets:
                raise VenueError(f"{self.fix.settings.path}: no [SESSION] with TargetCompID="
                                 f"{self.config.drop_copy} for the drop copy (config.drop_copy)")
            self.drop_copy_session = targets[self.config.drop_copy]
        self.order_sessions = [sid for t, sid in targets.items() if t != self.config.drop_copy]
        if not self.order_sessions:
            raise VenueError(f"{self.fix.settings.path}: no order session (every [SESSION] is the drop copy)")
        self._prefix = id_prefix if id_prefix is not None else datetime.now(UTC).strftime("%Y%m%d%H%M%S%f-")
        self._lock = threading.RLock()
        self._orders: dict[str, _Order] = {}
        self._sequence: list[_Order] = []  # arrival order, for FIFO fills
        self._cancels: dict[str, ExecReport | CancelReject] = {}
        self._received: Counter[str] = Counter()
        self._seen: Counter[str] = Counter()
        self._reports: list[ExecReport] = []
        self._cancel_rejects: list[CancelReject] = []
        self._resends: list[ExecReport | CancelReject] = []
        self._next_exec = 0
        self._next_order = 0

    # lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> PaperVenue:
        self.fix.start()
        return self

    def stop(self, logout_timeout: float = 5.0) -> None:
        self.fix.stop(logout_timeout)

    def __enter__(self) -> PaperVenue:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # clock -------------------------------------------------------------------------------------------------
    @property
    def bar_index(self) -> int:
        return self._cursor

    @property
    def bar_time(self):
        return self._times[self._cursor]

    @property
    def bar_count(self) -> int:
        return len(self._times)

    def advance(self):
        """Move to the next bar and work every open order against it. Returns the new bar's ts, or None
        (and changes nothing) when the last bar is already current."""
        with self._lock:
            if self._cursor + 1 >= len(self._times):
                return None
            self._cursor += 1
            bar = self._cursor
            capacity: dict[str, float] = {}
            for order in self._sequence:
                if order.status in TERMINAL_STATUSES or order.arrival_bar >= bar:
                    continue
                values = self._bars.get((order.symbol, bar))
                if values is None:
                    continue
                if order.symbol not in capacity:
                    capacity[order.symbol] = float(math.floor(self.config.volume_share * values[4] + _TOLERANCE))
                qty = min(order.leaves, capacity[order.symbol])
                price = self._fill_price(order, values)
                if qty <= 0 or price is None:
                    continue
                capacity[order.symbol] -= qty
                self._fill(order, qty, price, bar)
            return self._times[bar]

    def _fill_price(self, order: _Order, values: tuple[float, ...]) -> float | None:
        open_, high, low = values[0], values[1], values[2]
        if order.ord_type == OrdType.MARKET:
            slip = self.config.slippage_bps / 10_000.0
            return open_ * (1.0 + slip) if order.side == Side.BUY else open_ * (1.0 - slip)
        if order.side == Side.BUY:
            return min(open_, order.price) if low <= order.price else None
        return max(open_, order.price) if high >= order.price else None

    def _fill(self, order: _Order, qty: float, price: float, bar: int) -> None:
        exec_id = self._exec_id()
        order.fills.append(Fill(exec_id, qty, price, bar, self._times[bar]))
        order.cum_qty += qty
        order.notional += qty * price
        order.status = OrdStatus.FILLED if order.cum_qty >= order.qty else OrdStatus.PARTIALLY_FILLED
        self._report(order, ExecType.TRADE, exec_id=exec_id, last_qty=qty, last_px=price)

    # state queries -----------------------------------------------------------------------------------------
    def orders(self) -> dict[str, OrderView]:
        with self._lock:
            return {cl: o.view() for cl, o in self._orders.items()}

    def received(self) -> dict[str, int]:
        """ClOrdID -> number of NewOrderSingle messages that created an order (accepted or rejected on its
        content). A duplicate or a resend never counts, so every value is 1 unless the venue is broken."""
        with self._lock:
            return dict(self._received)

    def seen(self) -> dict[str, int]:
        """ClOrdID -> every NewOrderSingle message delivered with it (duplicates and resends included)."""
        with self._lock:
            return dict(self._seen)

    def reports(self) -> list[ExecReport]:
        """Every ExecutionReport sent on an order session, in the order sent (re-sends excluded)."""
        with self._lock:
            return list(self._reports)

    def cancel_rejects(self) -> list[CancelReject]:
        with self._lock:
            return list(self._cancel_rejects)

    def resends(self) -> list[ExecReport | CancelReject]:
        """Responses re-sent unchanged to a PossDupFlag/PossResend message whose ClOrdID was known."""
        with self._lock:
            return list(self._resends)

    def logged_on(self, target: str) -> bool:
        return any(sid.getTargetCompID().getValue() == target and self.fix.logged_on(sid)
                   for sid in self.fix.session_ids)

    # incoming messages ---------------------------------------------------------------------------------
    def _on_message(self, message: qf.Message, session_id: qf.SessionID) -> None:
        kind = msg_type(message)
        is_drop_copy = self.drop_copy_session is not None and str(session_id) == str(self.drop_copy_session)
        if is_drop_copy or kind not in (NewOrder.MSG_TYPE, CancelRequest.MSG_TYPE):
            raise qf.UnsupportedMessageType()  # quickfix answers with a BusinessMessageReject (35=j)
        with self._lock:
            if kind == NewOrder.MSG_TYPE:
                self._on_new_order(message, session_id)
            else:
                self._on_cancel(message, session_id)

    def _on_new_order(self, message: qf.Message, session_id: qf.SessionID) -> None:
        cl = message.getField(CL_ORD_ID)
        self._seen[cl] += 1
        resend = header_flag(message, POSS_DUP_FLAG) or header_flag(message, POSS_RESEND)
        existing = self._orders.get(cl)
        if existing is not None or cl in self._cancels:
            if resend and existing is not None and existing.last_report is not None:
                self._resend(existing.last_report, session_id)
                return
            what = f"order {existing.order_id}" if existing is not None else "a cancel request"
            self._reject_duplicate(message, session_id,
                                   f"duplicate ClOrdID {cl}: already used by {what}")
            return
        try:
            order = NewOrder.from_message(message)
            problem = None
        except FixMessageError as exc:
            order, problem = None, exc
        record = _Order(cl_ord_id=cl, order_id=self._order_id(), session_id=session_id,
                        symbol=order.symbol if order else (get_field(message, SYMBOL) or ""),
                        side=order.side if order else (get_field(message, SIDE) or Side.BUY),
                        ord_type=order.ord_type if order else (get_field(message, ORD_TYPE) or ""),
                        qty=order.qty if order else _qty(message), price=order.price if order else None,
                        status=OrdStatus.NEW, arrival_bar=self._cursor)
        self._orders[cl] = record
        self._sequence.append(record)
        self._received[cl] += 1
        if problem is not None:
            reason = {SYMBOL: OrdRejReason.UNKNOWN_SYMBOL, ORDER_QTY: OrdRejReason.INCORRECT_QUANTITY}.get(
                problem.tag, OrdRejReason.OTHER)
            verdict = (reason, str(problem))
        else:
            verdict = self._check(order)
        if verdict is None:
            self._report(record, ExecType.NEW)
        else:
            record.status = OrdStatus.REJECTED
            record.reject_reason, record.text = verdict
            self._report(record, ExecType.REJECTED, ord_rej_reason=verdict[0], text=verdict[1])

    def _check(self, order: NewOrder) -> tuple[int, str] | None:  # noqa: PLR0911
        """The first reason to reject ``order`` (OrdRejReason, Text), or None to accept it."""
        if order.symbol not in self._symbol_bars:
            return OrdRejReason.UNKNOWN_SYMBOL, f"unknown symbol {order.symbol!r}"
        if order.side not in (Side.BUY, Side.SELL):
            return (OrdRejReason.UNSUPPORTED_ORDER_CHARACTERISTIC,
                    f"Side {order.side} is not supported (1 buy, 2 sell)")
        if order.ord_type not in (OrdType.MARKET, OrdType.LIMIT):
            return (OrdRejReason.UNSUPPORTED_ORDER_CHARACTERISTIC,
                    f"OrdType {order.ord_type} is not supported (1 market, 2 limit)")
        if order.time_in_force not in (None, "0"):
            return (OrdRejReason.UNSUPPORTED_ORDER_CHARACTERISTIC,
                    f"TimeInForce {order.time_in_force} is not supported (0 day)")
        if not math.isfinite(order.qty) or order.qty <= 0 or order.qty != math.floor(order.qty):
            return OrdRejReason.INCORRECT_QUANTITY, f"OrderQty {order.qty:g} is not a positive whole number"
        if order.ord_type == OrdType.LIMIT:
            if order.price is None:
                return OrdRejReason.OTHER, "limit order without Price (44)"
            if not math.isfinite(order.price) or order.price <= 0:
                return OrdRejReason.OTHER, f"limit Price {order.price:g} is not positive"
            reference = self._reference_close(order.symbol)
            if reference is None:
                return OrdRejReason.OTHER, f"no bar of {order.symbol} yet to check the limit price against"
            low = reference * (1.0 - self.config.collar)
            high = reference * (1.0 + self.config.collar)
            if order.price < low * (1 - _TOLERANCE) or order.price > high * (1 + _TOLERANCE):
                return (OrdRejReason.EXCHANGE_OPTION,
                        f"limit Price {order.price:g} is outside the {self.config.collar:.0%} collar around the "
                        f"last close {reference:g} ({low:g} to {high:g})")
        return None

    def _reference_close(self, symbol: str) -> float | None:
        indices = self._symbol_bars[symbol]
        at = bisect.bisect_right(indices, self._cursor)
        return None if at == 0 else self._bars[(symbol, indices[at - 1])][3]

    def _on_cancel(self, message: qf.Message, session_id: qf.SessionID) -> None:
        cl = message.getField(CL_ORD_ID)
        resend = header_flag(message, POSS_DUP_FLAG) or header_flag(message, POSS_RESEND)
        if cl in self._cancels and resend:
            self._resend(self._cancels[cl], session_id)
            return
        request = CancelRequest.from_message(message)  # quickfix has validated the required fields
        order = self._orders.get(request.orig_cl_ord_id)
        if cl in self._cancels or cl in self._orders:
            self._cancel_reject(request, order, session_id, CxlRejReason.DUPLICATE_CL_ORD_ID,
                                f"duplicate ClOrdID {cl}", remember=False)
        elif order is None:
            self._cancel_reject(request, None, session_id, CxlRejReason.UNKNOWN_ORDER,
                                f"unknown order OrigClOrdID {request.orig_cl_ord_id}")
        elif order.status in TERMINAL_STATUSES:
            state = {OrdStatus.FILLED: "filled", OrdStatus.CANCELED: "canceled",
                     OrdStatus.REJECTED: "rejected"}[order.status]
            self._cancel_reject(request, order, session_id, CxlRejReason.TOO_LATE_TO_CANCEL,
                                f"order {request.orig_cl_ord_id} is already {state}")
        elif request.side != order.side or (request.symbol and request.symbol != order.symbol):
            self._cancel_reject(request, order, session_id, CxlRejReason.OTHER,
                                f"Symbol/Side {request.symbol}/{request.side} do not match order "
                                f"{order.cl_ord_id} ({order.symbol}/{order.side})")
        else:
            order.status = OrdStatus.CANCELED
            self._cancels[cl] = self._report(order, ExecType.CANCELED, cl_ord_id=cl,
                                             orig_cl_ord_id=order.cl_ord_id, session_id=session_id)

    # outgoing messages ---------------------------------------------------------------------------------
    def _exec_id(self) -> str:
        self._next_exec += 1
        return f"{self._prefix}E{self._next_exec}"

    def _order_id(self) -> str:
        self._next_order += 1
        return f"{self._prefix}O{self._next_order}"

    def _report(self, order: _Order, exec_type: str, *, exec_id: str | None = None, last_qty: float = 0.0,
                last_px: float = 0.0, cl_ord_id: str | None = None, orig_cl_ord_id: str | None = None,
                ord_rej_reason: int | None = None, text: str | None = None,
                session_id: qf.SessionID | None = None) -> ExecReport:
        report = ExecReport(
            order_id=order.order_id, exec_id=exec_id or self._exec_id(), exec_type=exec_type,
            ord_status=order.status, cl_ord_id=cl_ord_id or order.cl_ord_id, symbol=order.symbol,
            side=order.side, order_qty=order.qty, leaves_qty=order.leaves, cum_qty=order.cum_qty,
            avg_px=order.avg_px, last_qty=last_qty, last_px=last_px, orig_cl_ord_id=orig_cl_ord_id,
            ord_rej_reason=ord_rej_reason, text=text, transact_time=now())
        order.last_report = report
        self._reports.append(report)
        self._send(report.to_message(), session_id or order.session_id)
        if self.drop_copy_session is not None:
            self._send(report.to_message(), self.drop_copy_session)
        return report

    def _reject_duplicate(self, message: qf.Message, session_id: qf.SessionID, text: str) -> None:
        report = ExecReport(
            order_id="NONE", exec_id=self._exec_id(), exec_type=ExecType.REJECTED, ord_status=OrdStatus.REJECTED,
            cl_ord_id=message.getField(CL_ORD_ID), symbol=get_field(message, SYMBOL) or "",
            side=get_field(message, SIDE) or Side.BUY, order_qty=_qty(message), leaves_qty=0.0, cum_qty=0.0,
            avg_px=0.0, ord_rej_reason=OrdRejReason.DUPLICATE_ORDER, text=text, transact_time=now())
        self._reports.append(report)
        self._send(report.to_message(), session_id)
        if self.drop_copy_session is not None:
            self._send(report.to_message(), self.drop_copy_session)

    def _cancel_reject(self, request: CancelRequest, order: _Order | None, session_id: qf.SessionID,
                       reason: int, text: str, *, remember: bool = True) -> None:
        reject = CancelReject(order_id=order.order_id if order else "NONE", cl_ord_id=request.cl_ord_id,
                              orig_cl_ord_id=request.orig_cl_ord_id,
                              ord_status=order.status if order else OrdStatus.REJECTED,
                              cxl_rej_reason=reason, text=text)
        if remember:
            self._cancels[request.cl_ord_id] = reject
        self._cancel_rejects.append(reject)
        self._send(reject.to_message(), session_id)

    def _resend(self, response: ExecReport | CancelReject, session_id: qf.SessionID) -> None:
        self._resends.append(response)
        message = response.to_message()
        message.getHeader().setField(qf.BoolField(POSS_RESEND, True))
        self._send(message, session_id)

    @staticmethod
    def _send(message: qf.Message, session_id: qf.SessionID) -> None:
        try:
            qf.Session.sendToTarget(message, session_id)
        except qf.SessionNotFound:
            log.warning("venue: session %s is not running; a message was not sent", session_id)


def _qty(message: qf.Message) -> float:
    try:
        return float(message.getField(ORDER_QTY)) if message.isSetField(ORDER_QTY) else 0.0
    except ValueError:
        return 0.0
