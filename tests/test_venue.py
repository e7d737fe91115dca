"""The paper venue and the FIX plumbing, over real quickfix sessions on loopback (nothing mocked).

Expected prices and quantities are worked out by hand from the venue's rules and the bars below, never by
calling the venue's helpers. Every session is stopped in a ``finally``; an alarm fails a test that waits
too long, and a hard watchdog ends the process if quickfix itself hangs in C++ (where no alarm can land).
"""

from __future__ import annotations

import contextlib
import faulthandler
import math
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
import quickfix as qf

from emp_core.errors import EmpError
from emp_core.execution import (
    CancelReject,
    CancelRequest,
    ExecReport,
    FixApplication,
    FixMessageError,
    FixSettingsError,
    NewOrder,
    PaperVenue,
    VenueConfig,
    VenueError,
    parse,
    read_settings,
    validate,
    write_settings,
)
from tests.fix_client import FixClient
from tests.support import free_port

T0 = datetime(2026, 1, 5, tzinfo=UTC)
# One symbol, six daily bars: (open, high, low, close, volume); the venue trades at most floor(0.1 x volume)
AAA = [(100.0, 101.0, 99.0, 100.0, 1000.0),  # bar 0: cap 100
       (100.5, 102.0, 100.0, 101.5, 1000.0),  # bar 1: cap 100
       (101.0, 101.5, 98.0, 99.0, 300.0),  # bar 2: cap 30
       (96.0, 97.0, 95.0, 96.5, 0.0),  # bar 3: gap down, no volume, cap 0
       (95.0, 96.0, 94.0, 95.5, 500.0),  # bar 4: cap 50
       (97.0, 99.0, 96.5, 98.5, 2000.0)]  # bar 5: gap up, cap 200
SLIP = 5.0  # bps


def bars() -> pl.DataFrame:
    rows = [{"symbol": "AAA", "ts": T0 + timedelta(days=i), "open": o, "high": h, "low": lo, "close": c,
             "volume": v} for i, (o, h, lo, c, v) in enumerate(AAA)]
    return pl.DataFrame(rows)


@pytest.fixture(autouse=True)
def no_hang():
    """Fail a test that waits more than 90 s; end the process if it is stuck in C++ for 150 s."""
    def expire(signum, frame):
        raise TimeoutError("test took longer than 90 s (a FIX session did not answer?)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(90)
    faulthandler.dump_traceback_later(150, exit=True)
    try:
        yield
    finally:
        signal.alarm(0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous)


def venue_settings(tmp_path, port, drop_copy=True):
    sessions = [("VENUE", "EXECUTOR")] + ([("VENUE", "DROPCOPY")] if drop_copy else [])
    return write_settings(tmp_path / "venue.cfg", role="acceptor", sessions=sessions, port=port,
                          store_dir=tmp_path / "venue_store", log_dir=tmp_path / "venue_log")


@contextlib.contextmanager
def running(tmp_path, *, config=None, client=True, heartbeat=30, frame=None):
    """A started venue (and, unless ``client=False``, a logged-on order client); both stopped at the end."""
    port = free_port()
    venue = PaperVenue(bars() if frame is None else frame, venue_settings(tmp_path, port),
                       config or VenueConfig(slippage_bps=SLIP, volume_share=0.1, collar=0.10), id_prefix="T-")
    clients = []
    try:
        venue.start()
        if client:
            clients.append(FixClient(tmp_path / "client", port, heartbeat=heartbeat))
            clients[0].start()
        yield venue, (clients[0] if clients else port)
    finally:
        for c in clients:
            c.stop()
        venue.stop()
    for c in clients:
        assert c.errors == []
    assert venue.fix.application.errors == []


def order(cl, side="1", qty=10.0, ord_type="1", price=None, symbol="AAA", **kw) -> NewOrder:
    return NewOrder(cl_ord_id=cl, symbol=symbol, side=side, qty=qty, ord_type=ord_type, price=price, **kw)


def submit(client: FixClient, new: NewOrder, **kw) -> ExecReport:
    """Send and wait for the venue's answer to this message (New or Rejected, not a re-sent report)."""
    def answer(r: ExecReport) -> bool:
        return r.cl_ord_id == new.cl_ord_id and r.exec_type in ("0", "8")

    before = len([r for r in client.reports() if answer(r)])
    client.send(new, **kw)
    return client.wait_reports(answer, count=before + 1)[-1]


def eventually(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def wait_resends(client: FixClient, count: int) -> list:
    """Wait for ``count`` application-level re-sends (PossResend=Y) and return them (at most ``count``)."""
    def enough(items):
        hits = [r for r in items if r.poss_resend]
        return hits if len(hits) >= count else None
    return client.app.wait_for(enough, 10)


def assert_all_valid(*clients: FixClient) -> int:
    """Every message the clients received (application and admin) passes FIX44.xml validation."""
    count = 0
    for c in clients:
        for raw in [r.raw for r in c.app.items()] + [raw for _, raw in c.admin.items()]:
            validate(raw)
            count += 1
    return count


def assert_accounting(reports: list[ExecReport]) -> dict[str, list[ExecReport]]:
    """The identities, from the reports alone: per order cum = sum of last qty, leaves = qty - cum while
    working and 0 when done, avg = quantity-weighted mean of fill prices; unique ExecIDs; the first report is
    New or Rejected, at most one terminal report, nothing after it."""
    ids = [r.exec_id for r in reports]
    assert len(ids) == len(set(ids))
    by_order: dict[str, list[ExecReport]] = {}
    for r in reports:
        if r.ord_rej_reason == 6:  # answers a duplicate message, not the order holding the ClOrdID
            continue
        by_order.setdefault(r.orig_cl_ord_id or r.cl_ord_id, []).append(r)
    for key, seq in by_order.items():
        assert seq[0].exec_type in ("0", "8"), key
        fills = []
        terminal = 0
        for r in seq:
            assert terminal == 0, f"{key}: a report after the terminal one"
            if r.exec_type == "F":
                fills.append((r.last_qty, r.last_px))
            cum = sum(q for q, _ in fills)
            assert r.cum_qty == pytest.approx(cum)
            if r.ord_status in ("2", "4", "8"):
                terminal += 1
                assert r.leaves_qty == 0
            else:
                assert r.leaves_qty == pytest.approx(r.order_qty - cum)
            if cum:
                assert r.avg_px == pytest.approx(sum(q * p for q, p in fills) / cum, rel=1e-12)
            else:
                assert r.avg_px == 0
        if seq[-1].ord_status == "2":
            assert seq[-1].cum_qty == seq[-1].order_qty
    return by_order


# ----------------------------------------------------------------------------------------- messages, settings


def with_header(message: qf.Message, sender="A", target="B") -> str:
    header = message.getHeader()
    header.setField(49, sender)
    header.setField(56, target)
    header.setField(34, "7")
    header.setField(52, "20260105-10:00:00.000")
    return message.toString()


WHEN = datetime(2026, 1, 5, 14, 30, 1, 123000, tzinfo=UTC)


ROUND_TRIP = [
    NewOrder("C1", "AAA", "1", 100.0, "1", transact_time=WHEN),
    NewOrder("C2", "AAA", "2", 7.0, "2", price=101.25, account="ACC-9", transact_time=WHEN),
    CancelRequest("C2", "X2", "AAA", "2", 7.0, transact_time=WHEN),
    ExecReport("O1", "E1", "0", "0", "C1", "AAA", "1", 100.0, 100.0, 0.0, 0.0, transact_time=WHEN),
    ExecReport("O1", "E2", "F", "1", "C1", "AAA", "1", 100.0, 60.0, 40.0, 100.55025, last_qty=40.0,
               last_px=100.55025, transact_time=WHEN),
    ExecReport("O1", "E3", "4", "4", "X1", "AAA", "1", 100.0, 0.0, 40.0, 100.55025, orig_cl_ord_id="C1",
               transact_time=WHEN),
    ExecReport("O2", "E4", "8", "8", "C3", "ZZZ", "2", 5.0, 0.0, 0.0, 0.0, ord_rej_reason=1,
               text="unknown symbol 'ZZZ'", transact_time=WHEN),
    CancelReject("NONE", "X9", "C9", "8", cxl_rej_reason=1, text="unknown order OrigClOrdID C9"),
]


@pytest.mark.parametrize("original", ROUND_TRIP, ids=lambda m: type(m).__name__)
def test_messages_round_trip_through_fix44_validation(original):
    raw = with_header(original.to_message())
    assert parse(raw) == original  # parse validates against FIX44.xml first
    assert type(original).from_message(validate(raw)) == original


@pytest.mark.parametrize("original", ROUND_TRIP, ids=lambda m: type(m).__name__)
def test_the_fast_field_reader_reads_what_quickfix_reads(original):
    """Messages are read from their wire string in one call (fix._fields); quickfix's own field reads are the
    independent reference, including when the wire form cannot be split (a field holding the delimiter)."""
    from emp_core.execution import fix

    message = validate(with_header(original.to_message()))
    fast = fix.field_view(message)
    assert isinstance(fast, fix._Fields)
    for tag in range(1, 1000):
        assert fast.isSetField(tag) == (message.isSetField(tag) or message.getHeader().isSetField(tag)
                                        or message.getTrailer().isSetField(tag)), tag
        if message.isSetField(tag):
            assert fast.getField(tag) == message.getField(tag)

    class Odd:  # a wire form with a piece that is not tag=value: the reader falls back to quickfix
        def toString(self):
            return "8=FIX.4.4\x019=5\x0135=8\x01garbage\x01"

    odd = Odd()
    assert fix.field_view(odd) is odd


def test_validation_catches_a_broken_message():
    report = ExecReport("O1", "E1", "0", "0", "C1", "AAA", "1", 10.0, 10.0, 0.0, 0.0).to_message()
    report.removeField(6)  # AvgPx is required in an ExecutionReport
    with pytest.raises(FixMessageError, match="RequiredTagMissing"):
        validate(with_header(report))
    bad_side = with_header(order("C1", side="Z").to_message())  # not a Side value in FIX44.xml
    with pytest.raises(FixMessageError, match="IncorrectTagValue"):
        validate(bad_side)
    with pytest.raises(FixMessageError, match="OrderQty"):
        NewOrder.from_message(validate(with_header(order("C1", qty=None).to_message())))


def test_settings_are_written_read_and_checked(tmp_path):
    port = free_port()
    ini = write_settings(tmp_path / "i.cfg", role="initiator", sessions=[("EXECUTOR", "VENUE")], port=port,
                         store_dir=tmp_path / "s", heartbeat=15)
    acc = write_settings(tmp_path / "a.cfg", role="acceptor", sessions=[("VENUE", "EXECUTOR"), ("VENUE", "DC")],
                         port=port, store_dir=tmp_path / "s2", log_dir=tmp_path / "log")
    read = read_settings(ini, role="initiator")
    assert read.role == "initiator"
    session = read.session("EXECUTOR", "VENUE")
    assert (session.get("SocketConnectHost"), session.get("SocketConnectPort"), session.get("HeartBtInt")) == (
        "127.0.0.1", str(port), "15")
    assert session.get("BeginString") == "FIX.4.4" and session.get("ResetOnLogon") == "N"
    assert [(s.sender, s.target) for s in read_settings(acc).sessions] == [("VENUE", "EXECUTOR"), ("VENUE", "DC")]
    assert read_settings(acc).sessions[0].get("AllowedRemoteAddresses") == "127.0.0.1"

    text = ini.read_text()
    cases = {
        "SocketConnectPort": text.replace(f"SocketConnectPort={port}\n", ""),
        "FileStorePath": text.replace(f"FileStorePath={tmp_path / 's'}\n", ""),
        "TargetCompID": text.replace("TargetCompID=VENUE\n", ""),
        "StartTime": text.replace("NonStopSession=Y\n", ""),
        "DataDictionary=/nowhere.xml: file not found": text.replace("DataDictionary=",
                                                                     "DataDictionary=/nowhere.xml\n#"),
        "BeginString=FIX.4.2": text.replace("BeginString=FIX.4.4", "BeginString=FIX.4.2"),
        "SocketConnectPort=http must be a whole number": text.replace(f"SocketConnectPort={port}",
                                                                        "SocketConnectPort=http"),
        "cannot be combined with StartTime": text.replace("NonStopSession=Y",
                                                          "NonStopSession=Y\nStartTime=00:00:00\nEndTime=00:00:00"),
        "unknown section [SESSIONS]": text.replace("[SESSION]", "[SESSIONS]"),
        "no [SESSION] section": text.split("[SESSION]")[0],
    }
    for needle, bad_text in cases.items():
        bad = tmp_path / "bad.cfg"
        bad.write_text(bad_text)
        with pytest.raises(FixSettingsError) as info:
            read_settings(bad)
        assert needle in str(info.value), (needle, str(info.value))
        assert isinstance(info.value, EmpError)
    missing_key = tmp_path / "bad.cfg"
    missing_key.write_text(text.replace(f"SocketConnectPort={port}\n", ""))
    with pytest.raises(FixSettingsError, match=r"\[SESSION\] 1: required key SocketConnectPort is missing"):
        read_settings(missing_key)
    with pytest.raises(FixSettingsError, match="ConnectionType=initiator, but this program runs the acceptor"):
        read_settings(ini, role="acceptor")
    with pytest.raises(FixSettingsError, match="not found"):
        read_settings(tmp_path / "absent.cfg")
    # a hand-written file with a daily session instead of NonStopSession is accepted
    daily = tmp_path / "daily.cfg"
    daily.write_text(text.replace("NonStopSession=Y", "StartTime=00:00:00\nEndTime=00:00:00"))
    assert read_settings(daily).sessions[0].get("StartTime") == "00:00:00"


def test_venue_input_is_checked(tmp_path):
    settings = venue_settings(tmp_path, free_port())
    with pytest.raises(VenueError, match="missing column"):
        PaperVenue(bars().drop("volume"), settings)
    with pytest.raises(VenueError, match="more than one bar"):
        PaperVenue(pl.concat([bars(), bars().head(1)]), settings)
    with pytest.raises(VenueError, match="volume_share"):
        VenueConfig(volume_share=1.5)
    with pytest.raises(VenueError, match="TargetCompID=AUDIT"):
        PaperVenue(bars(), settings, VenueConfig(drop_copy="AUDIT"))


def test_a_failing_callback_is_kept_and_quickfix_exceptions_pass_through():
    class Broken(FixApplication):
        def from_app(self, message, session_id):
            if message.isSetField(58):
                raise qf.UnsupportedMessageType()
            raise ValueError("boom")

    app = Broken()
    sid = qf.SessionID("FIX.4.4", "A", "B")
    app.fromApp(order("C1").to_message(), sid)  # would hang quickfix's thread if it escaped
    assert app.errors == ["fromApp: ValueError: boom"]
    with_text = order("C1").to_message()
    with_text.setField(58, "x")
    with pytest.raises(qf.UnsupportedMessageType):
        app.fromApp(with_text, sid)


# --------------------------------------------------------------------------------------------- sessions


def test_logon_and_logout(tmp_path):
    with running(tmp_path) as (venue, client):
        assert venue.logged_on("EXECUTOR")
        assert not venue.logged_on("DROPCOPY")
        client.wait_admin("A")  # the venue's Logon answer
        assert [t for t, _ in client.sent_admin.items()][:1] == ["A"]
        client.stop()
        eventually(lambda: not venue.logged_on("EXECUTOR"))
        logout = client.wait_admin("5")[0]  # the venue answered our Logout with its own
        assert "\x0135=5\x01" in logout
        assert assert_all_valid(client) >= 2


def test_market_orders_fill_at_next_open_plus_slippage(tmp_path):
    with running(tmp_path) as (venue, client):
        new = submit(client, order("B1", side="1", qty=50))
        assert (new.exec_type, new.ord_status, new.leaves_qty, new.cum_qty) == ("0", "0", 50.0, 0.0)
        submit(client, order("S1", side="2", qty=30))
        assert venue.orders()["B1"].cum_qty == 0  # nothing fills before the next bar
        venue.advance()
        buy = client.wait_report("B1", "F")
        sell = client.wait_report("S1", "F")
        # bar 1 opens at 100.5; 5 bps: buy pays 100.5 x 1.0005, sell gets 100.5 x 0.9995
        assert buy.last_px == pytest.approx(100.55025, rel=1e-12)
        assert sell.last_px == pytest.approx(100.44975, rel=1e-12)
        assert (buy.last_qty, buy.cum_qty, buy.leaves_qty, buy.ord_status) == (50.0, 50.0, 0.0, "2")
        assert (sell.last_qty, sell.cum_qty, sell.leaves_qty, sell.ord_status) == (30.0, 30.0, 0.0, "2")
        assert buy.avg_px == pytest.approx(100.55025, rel=1e-12)
        venue.advance()
        assert len(client.reports()) == 4  # filled orders do not fill again
        assert_accounting(client.reports())
        assert_all_valid(client)


def test_limit_orders_cross_or_wait_and_a_gap_fills_at_the_open(tmp_path):
    with running(tmp_path) as (venue, client):
        submit(client, order("L1", qty=10, ord_type="2", price=100.2))  # bar 1 low 100 <= 100.2
        submit(client, order("L2", qty=10, ord_type="2", price=99.5))  # bar 1 low 100 > 99.5: waits
        submit(client, order("L3", side="2", qty=10, ord_type="2", price=103.0))  # bar 1 high 102 < 103
        venue.advance()
        l1 = client.wait_report("L1", "F")
        assert (l1.last_px, l1.last_qty, l1.ord_status) == (100.2, 10.0, "2")  # min(open 100.5, limit 100.2)
        assert venue.orders()["L2"].status == "0" and venue.orders()["L3"].status == "0"
        venue.advance()  # bar 2: low 98 <= 99.5, open 101 above the limit: fills at the limit
        l2 = client.wait_report("L2", "F")
        assert (l2.last_px, l2.last_qty) == (99.5, 10.0)
        # bar 2 is current (close 99). A buy limit at 98: bar 3 trades through it but has no volume,
        # bar 4 gaps down to open 95 (low 94): fills at the open, not at the limit
        submit(client, order("G1", qty=40, ord_type="2", price=98.0))
        venue.advance()
        assert venue.orders()["G1"].cum_qty == 0
        venue.advance()
        g1 = client.wait_report("G1", "F")
        assert (g1.last_px, g1.last_qty, g1.ord_status) == (95.0, 40.0, "2")
        # bar 4 is current (close 95.5). A sell limit at 96: bar 5 gaps up to open 97: fills at 97
        submit(client, order("G2", side="2", qty=10, ord_type="2", price=96.0))
        venue.advance()
        g2 = client.wait_report("G2", "F")
        assert (g2.last_px, g2.last_qty) == (97.0, 10.0)
        assert venue.orders()["L3"].status == "0"  # never crossed: still working
        assert_accounting(client.reports())
        assert_all_valid(client)


def test_partial_fills_follow_the_volume_cap_over_several_bars(tmp_path):
    with running(tmp_path) as (venue, client):
        submit(client, order("P1", qty=250))  # market buy, more than any bar allows
        submit(client, order("P2", qty=80))  # a later order gets what P1 leaves of each bar
        for _ in range(5):
            venue.advance()
        fills = client.wait_reports(lambda r: r.cl_ord_id == "P1" and r.exec_type == "F", count=4)
        # caps: bar 1 100, bar 2 floor(0.1 x 300) = 30, bar 3 no volume, bar 4 50, bar 5 200
        assert [f.last_qty for f in fills] == [100.0, 30.0, 50.0, 70.0]
        prices = [100.5 * 1.0005, 101.0 * 1.0005, 95.0 * 1.0005, 97.0 * 1.0005]
        assert [f.last_px for f in fills] == pytest.approx(prices, rel=1e-12)
        assert [f.ord_status for f in fills] == ["1", "1", "1", "2"]
        assert [f.cum_qty for f in fills] == [100.0, 130.0, 180.0, 250.0]
        assert [f.leaves_qty for f in fills] == [150.0, 120.0, 70.0, 0.0]
        avg = (100 * 100.5 + 30 * 101.0 + 50 * 95.0 + 70 * 97.0) * 1.0005 / 250
        assert fills[-1].avg_px == pytest.approx(avg, rel=1e-12)
        # P1 took bars 1, 2 and 4 whole; on bar 5 it took 70 of 200, so P2 fills all 80 there
        p2 = client.wait_reports(lambda r: r.cl_ord_id == "P2" and r.exec_type == "F")
        assert [(f.last_qty, f.ord_status) for f in p2] == [(80.0, "2")]
        assert p2[0].last_px == pytest.approx(97.0 * 1.0005, rel=1e-12)
        view = venue.orders()["P1"]
        assert (view.status, view.cum_qty, view.leaves_qty) == ("2", 250.0, 0.0)
        assert [f.bar for f in view.fills] == [1, 2, 4, 5]
        assert venue.advance() is None  # no bar after the last
        by_order = assert_accounting(client.reports())
        assert set(by_order) == {"P1", "P2"}
        assert [r.exec_id for r in client.reports()] == [r.exec_id for r in venue.reports()]


def test_each_reject_reason(tmp_path):
    cases = [  # (order, OrdRejReason, words in Text)
        (order("R1", symbol="ZZZ"), 1, "unknown symbol"),
        (order("R2", symbol=""), 1, "Symbol (55) is missing"),
        (order("R3", qty=0), 13, "not a positive whole number"),
        (order("R4", qty=10.5), 13, "not a positive whole number"),
        (order("R5", qty=-5), 13, "not a positive whole number"),
        (order("R6", qty=None), 13, "OrderQty (38) is missing"),
        (order("R7", ord_type="2"), 99, "without Price"),
        (order("R8", ord_type="2", price=0.0), 99, "not positive"),
        (order("R9", ord_type="2", price=110.01), 0, "collar"),  # last close 100: 90 to 110
        (order("R10", side="2", ord_type="2", price=89.99), 0, "collar"),
        (order("R11", side="5"), 11, "Side 5"),
        (order("R12", ord_type="3"), 11, "OrdType 3"),
        (order("R13", time_in_force="1"), 11, "TimeInForce 1"),
    ]
    with running(tmp_path) as (venue, client):
        for new, reason, words in cases:
            reply = submit(client, new)
            assert (reply.exec_type, reply.ord_status, reply.ord_rej_reason) == ("8", "8", reason), new
            assert words in reply.text
            assert (reply.leaves_qty, reply.cum_qty) == (0.0, 0.0)
        edge = submit(client, order("OK1", ord_type="2", price=110.0))  # on the collar's edge: accepted
        assert edge.exec_type == "0"
        venue.advance()
        assert {cl: v.status for cl, v in venue.orders().items()} == {
            **{new.cl_ord_id: "8" for new, _, _ in cases}, "OK1": "2"}
        assert venue.received() == {cl: 1 for cl in venue.orders()}
        assert_accounting(client.reports())
        assert_all_valid(client)


def test_duplicate_clordid_with_and_without_possdup(tmp_path):
    with running(tmp_path) as (venue, client):
        first = submit(client, order("D1", qty=20))
        assert first.exec_type == "0"
        dup = submit(client, order("D1", qty=20))  # same ClOrdID, no PossDupFlag: rejected
        assert (dup.exec_type, dup.ord_rej_reason, dup.order_id) == ("8", 6, "NONE")
        assert "duplicate ClOrdID D1" in dup.text
        assert venue.orders()["D1"].status == "0"  # the order itself is untouched

        client.send(order("D1", qty=20), poss_dup=True)  # a possible resend: the latest report again
        again = wait_resends(client, 1)[0]
        assert again.message == first and not again.poss_dup  # same ExecID, flagged PossResend
        venue.advance()
        fill = client.wait_report("D1", "F")
        client.send(order("D1", qty=20), poss_dup=True)
        resent = wait_resends(client, 2)
        assert [r.message for r in resent] == [first, fill]

        assert len(venue.orders()) == 1
        assert venue.received() == {"D1": 1}
        assert venue.seen() == {"D1": 4}
        assert venue.resends() == [first, fill]
        assert [r.exec_id for r in venue.reports()] == [first.exec_id, dup.exec_id, fill.exec_id]
        assert fill.cum_qty == 20.0  # one order of 20 filled once, never 40

        fresh = submit(client, order("D2", qty=5), poss_dup=True)  # PossDup of an unseen ClOrdID is new
        assert fresh.exec_type == "0" and venue.received()["D2"] == 1
        assert_accounting(client.reports())
        assert_all_valid(client)


def test_cancels(tmp_path):
    with running(tmp_path) as (venue, client):
        submit(client, order("W1", qty=10, ord_type="2", price=95.0))  # working: bar 1 low 100 > 95
        submit(client, order("W3", qty=10))  # market: first in line, fills 10 of bar 1's 100
        submit(client, order("W2", qty=250))  # market: the other 90 of bar 1, 160 left
        venue.advance()
        client.wait_report("W2", "F")
        client.wait_report("W3", "F")

        client.send(CancelRequest("W1", "X1", "AAA", "1", 10))
        c1 = client.wait_report("X1", "4")
        assert (c1.ord_status, c1.orig_cl_ord_id, c1.cum_qty, c1.leaves_qty, c1.avg_px) == ("4", "W1", 0, 0, 0)

        client.send(CancelRequest("W2", "X2", "AAA", "1", 250))
        c2 = client.wait_report("X2", "4")
        assert (c2.ord_status, c2.orig_cl_ord_id, c2.cum_qty, c2.leaves_qty) == ("4", "W2", 90.0, 0.0)
        assert c2.avg_px == pytest.approx(100.5 * 1.0005, rel=1e-12)

        client.send(CancelRequest("NOPE", "X3", "AAA", "1", 1))
        r3 = client.wait_cancel_reject("X3")
        assert (r3.cxl_rej_reason, r3.ord_status, r3.orig_cl_ord_id, r3.order_id) == (1, "8", "NOPE", "NONE")
        client.send(CancelRequest("W3", "X4", "AAA", "1", 10))
        r4 = client.wait_cancel_reject("X4")
        assert (r4.cxl_rej_reason, r4.ord_status) == (0, "2") and "already filled" in r4.text
        client.send(CancelRequest("W1", "X5", "AAA", "1", 10))
        r5 = client.wait_cancel_reject("X5")
        assert (r5.cxl_rej_reason, r5.ord_status) == (0, "4") and "already canceled" in r5.text
        client.send(CancelRequest("W2", "X1", "AAA", "1", 250))  # X1 is taken
        r6 = client.wait_cancel_reject("X1")
        assert r6.cxl_rej_reason == 6
        client.send(CancelRequest("W1", "X1", "AAA", "1", 10), poss_dup=True)  # a resend of X1: its answer again
        assert wait_resends(client, 1)[0].message == c1
        submit(client, order("W4", qty=10, ord_type="2", price=95.0))
        client.send(CancelRequest("W4", "X7", "AAA", "2", 10))  # wrong side
        r7 = client.wait_cancel_reject("X7")
        assert (r7.cxl_rej_reason, r7.ord_status) == (99, "0")
        assert venue.orders()["W4"].status == "0"

        venue.advance()  # a canceled remainder never fills
        assert venue.orders()["W2"].cum_qty == 90.0
        assert {cl: v.status for cl, v in venue.orders().items()} == {"W1": "4", "W2": "4", "W3": "2", "W4": "0"}
        assert [r.cl_ord_id for r in venue.cancel_rejects()] == ["X3", "X4", "X5", "X1", "X7"]
        assert_accounting(client.reports())
        assert_all_valid(client)


def test_drop_copy_mirrors_every_report_in_order_including_while_logged_out(tmp_path):
    with running(tmp_path) as (venue, client):
        port = client.fix.settings.sessions[0].get("SocketConnectPort")
        dc_dir = tmp_path / "dropcopy"
        # the drop-copy client is not logged on while the first reports go out
        submit(client, order("M1", qty=150))
        submit(client, order("M2", symbol="ZZZ"))  # rejected
        submit(client, order("M3", qty=10, ord_type="2", price=95.0))
        submit(client, order("M1", qty=150))  # duplicate: rejected with reason 6, also a report
        venue.advance()
        client.wait_reports(lambda r: r.cl_ord_id == "M1" and r.exec_type == "F")
        before = venue.reports()
        # M1 new, M2 rejected, M3 new, the duplicate rejected, M1 filled 100 of 150 on bar 1
        assert [(r.cl_ord_id, r.exec_type) for r in before] == [
            ("M1", "0"), ("M2", "8"), ("M3", "0"), ("M1", "8"), ("M1", "F")]
        assert not venue.logged_on("DROPCOPY")

        dc = FixClient(dc_dir, int(port), sender="DROPCOPY")
        try:
            dc.start()
            got = dc.wait_reports(lambda r: True, count=len(before))
            assert got == before  # every field, in order (transact times included)
            assert all(r.poss_dup for r in dc.app.items())  # they came as a resend from quickfix's store
            assert [t for t, _ in dc.sent_admin.items()].count("2") == 1  # after one ResendRequest
            # while it is logged on, reports go out live, still in order
            client.send(CancelRequest("M3", "Y1", "AAA", "1", 10))
            client.wait_report("Y1", "4")
            venue.advance()  # bar 2: M1 fills 30 more
            client.wait_reports(lambda r: r.cl_ord_id == "M1" and r.exec_type == "F", count=2)
            live = dc.wait_reports(lambda r: True, count=len(before) + 2)[len(before):]
            assert [(r.cl_ord_id, r.exec_type) for r in live] == [("Y1", "4"), ("M1", "F")]
            assert not any(r.poss_dup for r in dc.app.items()[len(before):])
        finally:
            dc.stop()
        # logged out again: the next reports wait in the venue's store for the next logon
        submit(client, order("M4", qty=10))
        venue.advance()  # bar 3: no volume, nothing
        venue.advance()  # bar 4: 50 to trade, M1 takes its last 20, then M4 its 10
        client.wait_reports(lambda r: r.cl_ord_id == "M4" and r.exec_type == "F")
        everything = venue.reports()
        assert [(r.cl_ord_id, r.exec_type, r.ord_status) for r in everything[len(before) + 2:]] == [
            ("M4", "0", "0"), ("M1", "F", "2"), ("M4", "F", "2")]
        dc2 = FixClient(dc_dir, int(port), sender="DROPCOPY")  # same store: continues the sequence
        try:
            dc2.start()
            missed = dc2.wait_reports(lambda r: True, count=3)
            assert got + live + missed == everything
            assert len(dc2.reports()) == 3  # nothing delivered twice
            assert len({r.exec_id for r in everything}) == len(everything)
            assert client.reports() == everything  # the order session saw exactly what the drop copy saw
            assert_all_valid(client, dc, dc2)
        finally:
            dc2.stop()
        assert dc.errors == [] and dc2.errors == []
        assert_accounting(venue.reports())


def test_heartbeat_and_test_request(tmp_path):
    with running(tmp_path, heartbeat=1) as (_venue, client):
        beats = client.wait_admin("0", count=2, timeout=10)  # HeartBtInt=1: the venue heartbeats
        assert all("\x01112=" not in b for b in beats)
        ping = qf.Message()
        ping.getHeader().setField(35, "1")
        ping.setField(112, "PING-7")
        assert client.fix.send(ping)
        answer = client.wait_admin("0", where=lambda raw: "\x01112=PING-7\x01" in raw)
        assert len(answer) == 1
        assert_all_valid(client)


def test_a_sequence_gap_is_closed_by_resend_and_possdup_resends_count_once(tmp_path):
    with running(tmp_path) as (venue, client):
        # 1. the client skips five sequence numbers: the venue asks for them, the client gap-fills
        session = client.fix.session()
        submit(client, order("Q1"))
        skipped_from = session.getExpectedSenderNum()
        session.setNextSenderMsgSeqNum(skipped_from + 5)
        submit(client, order("Q2"))
        request = client.wait_admin("2")[0]
        assert f"\x017={skipped_from}\x01" in request  # ResendRequest BeginSeqNo
        gap_fill = [raw for t, raw in client.sent_admin.items() if t == "4"]
        assert len(gap_fill) == 1 and "\x01123=Y\x01" in gap_fill[0]
        assert venue.received() == {"Q1": 1, "Q2": 1}

        # 2. the venue forgets it saw the last two orders: the client resends them with PossDupFlag=Y
        first_resent = session.getExpectedSenderNum()
        submit(client, order("Q3"))
        submit(client, order("Q4"))
        venue_side = qf.Session.lookupSession(venue.order_sessions[0])
        # quickfix counts a message in after fromApp returns, which may be just after Q4's report arrived
        eventually(lambda: venue_side.getExpectedTargetNum() == first_resent + 2)
        venue_side.setNextTargetMsgSeqNum(first_resent)
        submit(client, order("Q5"))  # too high for the venue now: ResendRequest, resend, then Q5
        second_request = client.wait_admin("2", count=2)[1]
        assert f"\x017={first_resent}\x01" in second_request
        resent = wait_resends(client, 2)
        assert sorted(r.message.cl_ord_id for r in resent) == ["Q3", "Q4"]
        assert venue.received() == {f"Q{i}": 1 for i in range(1, 6)}
        assert venue.seen() == {"Q1": 1, "Q2": 1, "Q3": 2, "Q4": 2, "Q5": 1}
        assert len(venue.orders()) == 5
        new_reports = [r for r in venue.reports() if r.exec_type == "0"]
        assert [r.cl_ord_id for r in new_reports] == ["Q1", "Q2", "Q3", "Q4", "Q5"]
        venue.advance()
        fills = client.wait_reports(lambda r: r.exec_type == "F", count=5)
        assert sum(f.last_qty for f in fills) == 50.0  # five orders of 10, each filled once
        assert_accounting(client.reports())
        assert_all_valid(client)


def test_a_venue_without_drop_copy_and_an_order_on_the_drop_copy_session(tmp_path):
    port = free_port()
    venue = PaperVenue(bars(), venue_settings(tmp_path, port), VenueConfig(), id_prefix="T-")
    dc = FixClient(tmp_path / "dc", port, sender="DROPCOPY")
    try:
        venue.start()
        dc.start()
        dc.send(order("N1"))  # the drop copy is read-only: a BusinessMessageReject, no order
        rejected = dc.app.wait_for(lambda items: [r for r in items if getattr(r.message, "msg_type", "") == "j"],
                                   10)
        assert "\x01380=3\x01" in rejected[0].raw  # BusinessRejectReason 3: unsupported message type
        assert venue.orders() == {} and venue.received() == {}
    finally:
        dc.stop()
        venue.stop()
    lone = tmp_path / "lone"
    lone.mkdir()
    port = free_port()
    venue = PaperVenue(bars(), venue_settings(lone, port, drop_copy=False), VenueConfig(drop_copy=None))
    client = FixClient(lone / "client", port)
    try:
        venue.start()
        client.start()
        assert submit(client, order("N2")).exec_type == "0"
        venue.advance()
        fill = client.wait_report("N2", "F")
        assert math.isclose(fill.last_px, 100.5 * (1 + 5 / 10_000), rel_tol=1e-12)  # default 5 bps
    finally:
        client.stop()
        venue.stop()


def test_orders_and_advances_on_different_threads_keep_the_books_straight(tmp_path):
    """quickfix delivers orders on its threads while another thread advances the clock: the identities hold,
    every order is accounted for once, and the drop copy matches the order session report for report."""
    n_bars, n_orders = 40, 120
    frame = pl.DataFrame([{"symbol": "AAA", "ts": T0 + timedelta(days=i), "open": 100.0 + i % 3,
                           "high": 103.0 + i % 3, "low": 98.0 + i % 3, "close": 100.5 + i % 3, "volume": 400.0}
                          for i in range(n_bars)])
    with running(tmp_path, frame=frame) as (venue, client):
        port = int(client.fix.settings.sessions[0].get("SocketConnectPort"))
        dc = FixClient(tmp_path / "dropcopy", port, sender="DROPCOPY")
        stop = threading.Event()

        def clock():
            while not stop.is_set() and venue.advance() is not None:
                time.sleep(0.01)

        ticker = threading.Thread(target=clock, daemon=True)
        try:
            dc.start()
            ticker.start()
            for i in range(n_orders):
                side = "1" if i % 2 == 0 else "2"
                if i % 3 == 2:
                    client.send(order(f"S{i}", side=side, qty=10 + i % 7, ord_type="2", price=101.0))
                else:
                    client.send(order(f"S{i}", side=side, qty=15 + i % 11))
            ticker.join(timeout=60)
            assert not ticker.is_alive()
            while venue.advance() is not None:  # the ticker may have finished before the last orders came in
                pass
            client.wait_reports(lambda r: r.exec_type in ("0", "8"), count=n_orders, timeout=30)
            sent = venue.reports()
            mine = client.wait_reports(lambda r: True, count=len(sent), timeout=30)
            copy = dc.wait_reports(lambda r: True, count=len(sent), timeout=30)
            assert mine == sent and copy == sent
            assert venue.received() == {f"S{i}": 1 for i in range(n_orders)}
            by_order = assert_accounting(sent)
            views = venue.orders()
            assert set(by_order) == set(views)
            for cl, seq in by_order.items():
                assert seq[-1].ord_status == views[cl].status
                assert seq[-1].cum_qty == views[cl].cum_qty
            # no bar ever traded more than floor(0.1 x 400) = 40
            per_bar: dict[int, float] = {}
            for view in views.values():
                for f in view.fills:
                    per_bar[f.bar] = per_bar.get(f.bar, 0.0) + f.qty
            assert per_bar and max(per_bar.values()) <= 40
            assert_all_valid(client, dc)
        finally:
            stop.set()
            ticker.join(timeout=10) if ticker.is_alive() else None
            dc.stop()
        assert dc.errors == []
