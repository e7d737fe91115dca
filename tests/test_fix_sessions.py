"""Session-level FIX behaviour over real quickfix sessions on loopback (issue 12): credentials and a refused
logon, malformed and garbled messages on both sides, sequence gaps closed from the executor's side, the
executor's reconnect backoff, and its side of logon, heartbeat, TestRequest and logout.

The executor talks to the paper venue directly or through ``Relay`` (tests/fix_client.py), a TCP relay that
keeps a copy of every byte each side sent and injects raw bytes (a garbled frame) into either direction.
Nothing is mocked: every message is produced and checked by quickfix on both ends."""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
import quickfix as qf

from emp_core.execution.executor import Backoff, Executor
from emp_core.execution.fix import ExecReport, FixApplication, FixError, FixSession, msg_type, write_settings
from emp_core.execution.outbox import sqlite_outbox
from emp_core.execution.venue import PaperVenue, VenueConfig
from tests.fix_client import FixClient, Other, Relay, fix_fields, frame
from tests.support import free_port
from tests.test_executor import bars, eventually, orders
from tests.test_venue import (
    no_hang,  # noqa: F401 - the alarm and hard watchdog for every test here
    order,
)

PASSWORD = "s3cret-Pa55w0rd"  # the venue's: never in a log line
WRONG = "wr0ng-Pa55w0rd"  # a wrong one: never in a log line either
USER = "exec-desk"
LOGIN = {("VENUE", "EXECUTOR"): (USER, PASSWORD)}


class Events(logging.Handler):
    """Every line logged under ``emp.execution`` while active (the executor's JSON events among them)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(message)s"))
        self._lines: list[str] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._guard:
            self._lines.append(self.format(record))

    def lines(self) -> list[str]:
        with self._guard:
            return list(self._lines)

    def named(self, name: str) -> list[dict]:
        found = []
        for line in self.lines():
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == name:
                    found.append(event)
        return found

    def __enter__(self) -> Events:
        self._logger = logging.getLogger("emp.execution")
        self._level = self._logger.level
        self._logger.setLevel(logging.INFO)
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)


def venue_config(tmp_path, port: int, credentials=None):
    return write_settings(tmp_path / "venue.cfg", role="acceptor", port=port, store_dir=tmp_path / "venue_store",
                          sessions=[("VENUE", "EXECUTOR")], credentials=credentials)


def executor_config(tmp_path, port: int, *, credentials: tuple[str, str] | None = None, heartbeat: int = 30):
    return write_settings(tmp_path / "executor.cfg", role="initiator", port=port, reconnect_interval=1,
                          heartbeat=heartbeat, store_dir=tmp_path / "executor_store",
                          sessions=[("EXECUTOR", "VENUE")],
                          credentials={("EXECUTOR", "VENUE"): credentials} if credentials else None)


def paper_venue(tmp_path, port: int, credentials=None) -> PaperVenue:
    return PaperVenue(bars(), venue_config(tmp_path, port, credentials), VenueConfig(volume_share=1.0,
                      drop_copy=None), id_prefix="V-")


def running(executor: Executor) -> threading.Thread:
    executor.start()
    runner = threading.Thread(target=executor.run, daemon=True)
    runner.start()
    return runner


def wire(relay: Relay, direction: str, kind: str, where=lambda f: True, count: int = 1) -> list[dict[int, str]]:
    """Wait until ``count`` messages of MsgType ``kind`` (fields satisfying ``where``) went ``direction``."""
    def hits():
        found = [f for f in map(fix_fields, relay.frames(direction)) if f.get(35) == kind and where(f)]
        return found if len(found) >= count else None
    return eventually(hits, timeout=20, what=f"{count} x 35={kind} {direction}")


def assert_each_once(box, venue: PaperVenue, n_orders: int, n_reports: int) -> None:
    """The venue got each of the first ``n_orders`` orders once (no second NewOrderSingle, not even a rejected
    duplicate) and the journal holds each of its ``n_reports`` reports once."""
    assert venue.received() == {o.clordid: 1 for o in orders(n_orders)} and venue.seen() == venue.received()
    journal = box.journal()
    assert journal.height == journal.select("session", "exec_id").n_unique() == n_reports
    assert sorted(journal["exec_id"]) == sorted(r.exec_id for r in venue.reports())


def inject_garbage(relay: Relay, to: str, fields: list[tuple[int, str]]) -> None:
    """Three garbled frames into the stream ``to`` one side: ``fields`` (header and body, a complete message
    otherwise) with a wrong CheckSum, then with a BodyLength too short, then bytes that are not FIX at all."""
    good = frame(fields)
    relay.inject(frame(fields, checksum=(int(good[-4:-1]) + 1) % 256), to=to)
    relay.inject(re.sub(rb"\x019=\d+\x01", b"\x019=20\x01", good, count=1), to=to)
    relay.inject(b"\x00\xffnoise, not FIX\x01\x01", to=to)


def raw_message(kind: str, *fields: tuple[int, str]) -> qf.Message:
    message = qf.Message()
    message.getHeader().setField(35, kind)
    for tag, value in fields:
        message.setField(tag, value)
    return message


# ------------------------------------------------------------------------------------------------ credentials


def test_the_venue_refuses_a_logon_without_the_right_credentials_and_never_says_which(tmp_path):
    """The venue requires a Username/Password on the EXECUTOR session: a Logon without them, with a wrong
    password or with a wrong user is answered by a Logout naming the sender (never the password); a Logon with
    both right logs on and trades."""
    port = free_port()
    venue = paper_venue(tmp_path, port, LOGIN)
    with Events() as events:
        venue.start()
        try:
            for name, login in (("anonymous", None), ("wrong", (USER, WRONG)), ("no-user", ("someone", PASSWORD))):
                client = FixClient(tmp_path / name, port, credentials=login)
                client.fix.start()
                try:
                    logout = client.wait_admin("5")[0]
                finally:
                    client.fix.stop(logout_timeout=0)
                assert fix_fields(logout)[58] == "Rejected Logon Attempt: bad credentials for EXECUTOR", name
                assert not venue.logged_on("EXECUTOR") and client.app.items() == []
            with FixClient(tmp_path / "right", port, credentials=(USER, PASSWORD)) as client:
                client.send(order("C1"))
                assert client.wait_report("C1", "0").cl_ord_id == "C1"
        finally:
            venue.stop()
    assert venue.received() == {"C1": 1} and venue.fix.application.errors == []
    refusals = [line for line in events.lines() if "bad credentials for EXECUTOR" in line]
    assert len(refusals) == 3 and not [line for line in events.lines() if PASSWORD in line or WRONG in line]


def test_the_executor_surfaces_a_refused_logon_and_never_logs_the_password(tmp_path):
    """The executor with a wrong password logs a ``logon_rejected`` event with the venue's reason, shows it in
    ``health()``, sends nothing; with the right password (same store) it logs on and sends each order once.
    None of its log lines holds either password (the settings it logs are masked)."""
    port = free_port()
    venue = paper_venue(tmp_path, port, LOGIN)
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    box.submit(orders(2))
    with Events() as events:
        venue.start()
        try:
            executor = Executor(executor_config(tmp_path, port, credentials=(USER, WRONG)), box)
            try:
                running(executor)
                assert executor.logon_rejected.wait(30)
                health = executor.health()
            finally:
                executor.stop()
            rejected = events.named("logon_rejected")[0]
            assert rejected["reason"] == "Rejected Logon Attempt: bad credentials for EXECUTOR"
            assert rejected["session"] == "EXECUTOR->VENUE"
            assert health["last_logon_error"]["reason"] == rejected["reason"] and health["logon_rejections"] >= 1
            assert not health["logged_on"] and health["sent"] == 0
            assert str(executor.logon_error()) == ("session EXECUTOR->VENUE: logon rejected by VENUE: Rejected "
                                                   "Logon Attempt: bad credentials for EXECUTOR")
            assert venue.received() == {} and box.depth() == 2

            executor = Executor(executor_config(tmp_path, port, credentials=(USER, PASSWORD)), box)
            try:
                executor.start()
                executor.run(until=lambda: len(venue.received()) == 2 and box.depth() == 0, max_seconds=30)
                health = executor.health()
            finally:
                executor.stop()
            assert health["last_logon_error"] is None and health["sent"] == 2
        finally:
            venue.stop()
    assert_each_once(box, venue, 2, 2)
    assert len(events.named("logon")) == 1 and len(events.named("start")) == 2
    assert all(e["settings"]["Password"] == "***" for e in events.named("start"))
    assert not [line for line in events.lines() if PASSWORD in line or WRONG in line]
    assert venue.fix.application.errors == [] and executor.app.errors == []


class _Echoing(FixApplication):
    """A careless counterparty that quotes the password it received in its refusal."""

    def from_admin(self, message, session_id):
        if msg_type(message) == "A":
            raise qf.RejectLogon(f"password {message.getField(554)} has expired")


def test_a_refusal_that_quotes_the_password_is_logged_with_the_password_masked(tmp_path):
    """A counterparty whose Logout Text quotes the password it was sent: the executor masks it (``***``) in its
    ``logon_rejected`` event and in ``health()``."""
    port = free_port()
    acceptor = FixSession(write_settings(tmp_path / "acceptor.cfg", role="acceptor", port=port,
                                         store_dir=tmp_path / "acceptor_store", sessions=[("VENUE", "EXECUTOR")]),
                          _Echoing(), role="acceptor")
    executor = Executor(executor_config(tmp_path, port, credentials=(USER, WRONG)),
                        sqlite_outbox(tmp_path / "outbox.sqlite"))
    with Events() as events:
        try:
            acceptor.start()
            running(executor)
            assert executor.logon_rejected.wait(30)
        finally:
            executor.stop()
            acceptor.stop()
    assert events.named("logon_rejected")[0]["reason"] == "Rejected Logon Attempt: password *** has expired"
    assert executor.health()["last_logon_error"]["reason"].endswith("password *** has expired")
    assert not [line for line in events.lines() if WRONG in line]


def test_emp_executor_stops_at_the_first_refused_logon_with_one_line_naming_session_and_reason(tmp_path):
    """``emp executor`` with a wrong password: it stops at the first refusal (not at --max-seconds), exits 2,
    and its last line names the session, the counterparty and its reason; no password anywhere in its output."""
    port = free_port()
    venue = paper_venue(tmp_path, port, LOGIN)
    settings = executor_config(tmp_path, port, credentials=(USER, WRONG))
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "EMP_HOME": str(home), "EMP_TIER": "embedded", "PYTHONPATH": os.getcwd()}
    venue.start()
    try:  # --max-seconds 60 is beyond the timeout: only the refusal can end it in time
        done = subprocess.run([sys.executable, "-m", "emp_core.cli", "executor", "--settings", str(settings),
                               "--max-seconds", "60"], check=False, capture_output=True, text=True, timeout=45,
                              env=env)
    finally:
        venue.stop()
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert lines[-1] == ("emp executor: error: session EXECUTOR->VENUE: logon rejected by VENUE: Rejected Logon "
                         "Attempt: bad credentials for EXECUTOR")
    events = [json.loads(line) for line in lines[:-1] if line.startswith("{")]
    assert [e["event"] for e in events if e["event"] == "logon_rejected"] == ["logon_rejected"]
    assert events[-1]["event"] == "stop" and events[-1]["logon_rejections"] == 1
    assert WRONG not in done.stderr and PASSWORD not in done.stderr and done.stdout == ""
    assert venue.received() == {}


# ---------------------------------------------------------------------------------------- malformed messages


def test_malformed_messages_to_the_venue_are_answered_as_fix_says_and_the_session_lives_on(tmp_path):
    """A bad field value, a missing required field and an unknown MsgType get a session Reject (35=3) naming the
    message and the problem; a QuoteRequest the venue does not handle gets a BusinessMessageReject (35=j); a
    BusinessMessageReject sent to the venue is not answered; garbled frames (bad checksum, bad body length,
    noise) are dropped without using a sequence number. The client stays connected and logged on throughout,
    and the next order is accepted and filled."""
    port = free_port()
    venue = paper_venue(tmp_path, port)
    relay = Relay(port)
    client = FixClient(tmp_path / "client", relay.port)
    session = None

    def send(message) -> int:
        seq = session.getExpectedSenderNum()
        assert client.fix.send(message)
        return seq

    def reject_of(seq: int) -> dict[int, str]:
        return fix_fields(client.wait_admin("3", where=lambda raw: f"\x0145={seq}\x01" in raw)[0])

    try:
        venue.start()
        client.start()
        session = client.fix.session()
        bad_side = order("G1", side="Z").to_message()
        r = reject_of(send(bad_side))
        assert (r[373], r[371], r[372]) == ("5", "54", "D")  # value incorrect for tag 54
        no_ord_type = order("G2").to_message()
        no_ord_type.removeField(40)
        r = reject_of(send(no_ord_type))
        assert (r[373], r[371], r[372]) == ("1", "40", "D")  # required tag missing
        r = reject_of(send(raw_message("ZZ", (58, "what is this"))))
        assert (r[373], r[372]) == ("11", "ZZ")  # invalid MsgType
        seq = send(raw_message("R", (131, "QR1"), (146, "0")))  # a valid QuoteRequest the venue does not trade
        bmr = client.app.wait_for(lambda items: [i for i in items if i.message == Other("j")], 10)[0]
        assert (fix_fields(bmr.raw)[45], fix_fields(bmr.raw)[380], fix_fields(bmr.raw)[372]) == (str(seq), "3", "R")
        bmr_seq = send(raw_message("j", (45, "1"), (372, "8"), (380, "0"), (58, "a reject of nothing")))

        garbled = session.getExpectedSenderNum()  # the garbled frames carry the next number: it stays unused
        inject_garbage(relay, "to_acceptor", [
            (35, "D"), (34, str(garbled)), (49, "EXECUTOR"), (56, "VENUE"), (52, "20260105-10:00:00.000"),
            (11, "GARBLED"), (54, "1"), (55, "AAA"), (38, "5"), (40, "1"), (60, "20260105-10:00:00.000")])
        client.send(order("OK1", qty=5))  # takes the number the garbled frames carried
        assert client.wait_report("OK1", "0").cum_qty == 0 and session.getExpectedSenderNum() == garbled + 1
        venue.advance()
        assert client.wait_report("OK1", "F").cum_qty == 5.0
        assert venue.logged_on("EXECUTOR") and client.fix.logged_on()
    finally:
        client.stop()
        relay.close()
        venue.stop()
    assert relay.connections == 1  # never dropped
    admin_kinds = [t for t, _ in client.admin.items()]
    assert admin_kinds.count("5") == 1 and admin_kinds[-1] == "5"  # one Logout: the answer to ours at the end
    assert "2" not in admin_kinds  # the venue never asked for a resend: no number was lost
    assert not [raw for raw in [r.raw for r in client.app.items()] + [raw for _, raw in client.admin.items()]
                if f"\x0145={bmr_seq}\x01" in raw]  # the BusinessMessageReject was not answered
    assert venue.received() == {"OK1": 1} and venue.seen() == {"OK1": 1}  # nothing malformed became an order
    assert venue.fix.application.errors == [] and client.errors == []


def venue_sends(venue: PaperVenue, message: qf.Message) -> int:
    """Send ``message`` on the venue's order session as it is; returns the sequence number it went out with."""
    sid = venue.order_sessions[0]
    seq = qf.Session.lookupSession(sid).getExpectedSenderNum()
    assert qf.Session.sendToTarget(message, sid)
    return seq


def broken_report(exec_id: str, *, set_field: tuple[int, str] | None = None, remove: int | None = None):
    message = ExecReport("O1", exec_id, "0", "0", "C1", "AAA", "1", 10.0, 10.0, 0.0, 0.0).to_message()
    if set_field is not None:
        message.setField(*set_field)
    if remove is not None:
        message.removeField(remove)
    return message


def answer_to(relay: Relay, seq: int, kind: str = "3") -> dict[int, str]:
    """The executor's answer (a Reject, or 35=``kind``) to the venue's message ``seq``, as it went on the wire."""
    return wire(relay, "to_acceptor", kind, lambda f: f.get(45) == str(seq))[0]


def test_malformed_messages_to_the_executor_are_answered_as_fix_says_and_orders_still_flow(tmp_path):
    """The venue's side sends the executor an ExecutionReport with a bad ExecType, one without AvgPx, a message
    of an unknown MsgType (each: a session Reject from the executor, nothing journaled), a QuoteRequest (a
    BusinessMessageReject), a BusinessMessageReject (logged, not answered), and a garbled report (dropped). The
    executor's own malformed order comes back as a session Reject it logs. Orders then go out and every report
    is journaled once; the session never dropped."""
    port = free_port()
    venue = paper_venue(tmp_path, port)
    relay = Relay(port)
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    executor = Executor(executor_config(tmp_path, relay.port), box)
    with Events() as events:
        try:
            venue.start()
            running(executor)
            assert executor.fix.wait_logged_on(20)
            send = functools.partial(venue_sends, venue)
            answer = functools.partial(answer_to, relay)
            r = answer(send(broken_report("BAD1", set_field=(150, "Z"))))
            assert (r[373], r[371], r[372]) == ("5", "150", "8")  # value incorrect for ExecType
            r = answer(send(broken_report("BAD2", remove=6)))
            assert (r[373], r[371], r[372]) == ("1", "6", "8")  # AvgPx missing
            r = answer(send(raw_message("ZZ")))
            assert (r[373], r[372]) == ("11", "ZZ")
            r = answer(send(raw_message("R", (131, "QR1"), (146, "0"))), "j")
            assert (r[380], r[372]) == ("3", "R")
            bmr_seq = send(raw_message("j", (45, "1"), (372, "D"), (380, "0"), (58, "not for you")))
            eventually(lambda: events.named("business_reject"), what="the business_reject event")
            assert events.named("business_reject")[0] | {"at": None} == {
                "event": "business_reject", "at": None, "ref_seq": 1, "ref_msg_type": "D", "ref_id": None,
                "reason": 0, "text": "not for you"}

            garbled = qf.Session.lookupSession(venue.order_sessions[0]).getExpectedSenderNum()
            inject_garbage(relay, "to_initiator", [
                (35, "8"), (34, str(garbled)), (49, "VENUE"), (56, "EXECUTOR"), (52, "20260105-10:00:00.000"),
                (6, "0"), (11, "C1"), (14, "0"), (17, "GARBLED"), (37, "O1"), (39, "0"), (54, "1"), (55, "AAA"),
                (150, "0"), (151, "10")])

            mine = executor.fix.session().getExpectedSenderNum()  # the executor's own order, malformed
            assert executor.fix.send(order("BADSIDE", side="Z").to_message())
            eventually(lambda: events.named("session_reject"), what="the session_reject event")
            assert {k: v for k, v in events.named("session_reject")[0].items() if k != "at"} == {
                "event": "session_reject", "ref_seq": mine, "ref_msg_type": "D", "ref_tag": 54, "reason": 5,
                "text": "Value is incorrect (out of range) for this tag"}

            box.submit(orders(3))
            eventually(lambda: len(venue.received()) == 3, what="three orders at the venue")
            venue.advance()
            eventually(lambda: box.journal().height == 6, what="six reports journaled")
            assert executor.fix.logged_on() and venue.logged_on("EXECUTOR")
        finally:
            executor.stop()
            relay.close()
            venue.stop()
    assert relay.connections == 1
    to_venue = [fix_fields(f) for f in relay.frames("to_acceptor")]
    to_executor = [fix_fields(f) for f in relay.frames("to_initiator")]
    assert [f[35] for f in to_venue].count("5") == 1 and to_venue[-1][35] == "5"  # only the final Logout
    assert "2" not in [f[35] for f in to_executor + to_venue]  # no number lost on either side
    assert not [f for f in to_venue if f.get(45) == str(bmr_seq)]  # the BusinessMessageReject not answered
    assert [(e["ref_msg_type"], e["ref_tag"], e["reason"]) for e in events.named("reject_sent")] == [
        ("8", 150, 5), ("8", 6, 1), ("ZZ", None, 11)]  # the three it refused, logged
    assert_each_once(box, venue, 3, 6)
    assert executor.app.errors == [] and venue.fix.application.errors == []


# ------------------------------------------------------------------------------------------- sequence gaps


def test_numbers_the_venue_skips_are_asked_for_and_gap_filled(tmp_path):
    """The venue skips five sequence numbers: the executor queues the report that came too high, asks for the
    five (ResendRequest), the venue gap-fills them (SequenceReset-GapFill), and the report is journaled once."""
    port = free_port()
    venue = paper_venue(tmp_path, port)
    relay = Relay(port)
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    box.submit(orders(2))
    executor = Executor(executor_config(tmp_path, relay.port), box)
    with Events() as events:
        try:
            venue.start()
            running(executor)
            eventually(lambda: box.journal().height == 2, what="two New reports")
            venue_side = qf.Session.lookupSession(venue.order_sessions[0])
            skipped = venue_side.getExpectedSenderNum()
            venue_side.setNextSenderMsgSeqNum(skipped + 5)
            box.submit(orders(3))  # the third order's New report comes five numbers too high
            eventually(lambda: box.journal().height == 3, what="the third New report")
            venue.advance()
            eventually(lambda: box.journal().height == 6, what="three fills")
        finally:
            executor.stop()
            relay.close()
            venue.stop()
    assert [(e["begin_seq"], e["end_seq"]) for e in events.named("resend_request")] == [(skipped, 0)]
    assert [(e["seq"], e["new_seq"], e["gap_fill"]) for e in events.named("sequence_reset")] == [
        (skipped, skipped + 5, True)]
    request = wire(relay, "to_acceptor", "2")
    gap_fill = wire(relay, "to_initiator", "4")
    assert len(request) == 1 and (request[0][7], request[0][16]) == (str(skipped), "0")
    assert len(gap_fill) == 1 and (gap_fill[0][34], gap_fill[0][36], gap_fill[0][123]) == (
        str(skipped), str(skipped + 5), "Y")
    too_high = [f for f in map(fix_fields, relay.frames("to_initiator")) if f.get(34) == str(skipped + 5)]
    assert [(f[35], f.get(43)) for f in too_high] == [("8", None), ("8", "Y")]  # sent, then re-sent in the range
    assert_each_once(box, venue, 3, 6)
    assert executor.app.errors == [] and venue.fix.application.errors == []


def test_reports_missed_while_down_are_resent_possdup_and_journaled_once_however_often_they_come(tmp_path):
    """The executor is down while the venue fills its orders: at the next logon it asks for the numbers it
    missed, and the venue re-sends the stored fills with PossDupFlag=Y. Then the executor forgets it saw them
    (its expected number wound back): they come again, PossDup, with the venue's Logon in between gap-filled,
    and the journal keeps each report once."""
    port = free_port()
    venue = paper_venue(tmp_path, port)
    relay = Relay(port)
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    box.submit(orders(3))
    settings = executor_config(tmp_path, relay.port)
    executor = Executor(settings, box)
    with Events() as events:
        try:
            venue.start()
            running(executor)
            eventually(lambda: box.journal().height == 3, what="three New reports")
            executor.stop()
            venue.advance()  # three fills while the executor is down: they wait in the venue's store
            fills = [r for r in venue.reports() if r.exec_type == "F"]
            running(executor := Executor(settings, box))
            eventually(lambda: box.journal().height == 6, what="the three fills after the restart")
            assert len(events.named("resend_request")) == 1
            resent = wire(relay, "to_initiator", "8", lambda f: f.get(150) == "F" and f.get(43) == "Y", count=3)
            assert sorted(f[17] for f in resent) == sorted(r.exec_id for r in fills)
            first_fill_seq = min(int(f[34]) for f in resent)

            executor.fix.session().setNextTargetMsgSeqNum(first_fill_seq)
            resets = len(events.named("sequence_reset"))
            box.submit(orders(4))  # its New report is too high now: the fills come again first
            eventually(lambda: box.journal().height == 7, what="the fourth New report")
            eventually(lambda: len(events.named("duplicate_report")) >= 3, what="three duplicate reports")
            health = executor.health()
        finally:
            executor.stop()
            relay.close()
            venue.stop()
    duplicates = events.named("duplicate_report")
    assert {r.exec_id for r in fills} <= {e["exec_id"] for e in duplicates}
    assert [(e["begin_seq"], e["end_seq"]) for e in events.named("resend_request")][-1] == (first_fill_seq, 0)
    to_executor = [fix_fields(f) for f in relay.frames("to_initiator")]
    again = [f for f in to_executor if f.get(17) in {r.exec_id for r in fills}]
    assert len(again) == 6 and all(f[43] == "Y" for f in again)  # each fill twice on the wire, both PossDup
    logon_seq = int([f for f in to_executor if f[35] == "A"][1][34])  # the venue's second Logon: admin
    assert [e for e in events.named("sequence_reset")[resets:]
            if e["gap_fill"] and e["poss_dup"] and e["seq"] <= logon_seq < e["new_seq"]]  # gap-filled
    assert health["received"] == health["journaled"] + len(duplicates)  # counted, not kept
    assert_each_once(box, venue, 4, 7)
    assert executor.app.errors == [] and venue.fix.application.errors == []


# ----------------------------------------------------------------------------------------- reconnect backoff


def test_backoff_delays_double_up_to_the_cap_with_jitter():
    """``Backoff.delay``: first x factor^k, capped, each drawn from [(1 - jitter) d, d]; bad parameters refused."""
    backoff = Backoff(first=1.0, factor=2.0, cap=10.0, jitter=0.25)
    rng = random.Random(7)
    delays = [backoff.delay(k, 1.0, rng) for k in range(8) for _ in range(50)]
    nominal = [min(10.0, 2.0 ** k) for k in range(8) for _ in range(50)]
    assert all(0.75 * n <= d <= n for d, n in zip(delays, nominal, strict=True))
    assert len(set(delays)) == len(delays)  # jittered: no two alike
    assert max(delays) <= 10.0 and min(delays[-50:]) >= 7.5  # capped
    with pytest.raises(FixError, match="jitter"):
        Backoff(jitter=1.0)


class _ClosingListener:
    """A port that accepts TCP connections and closes them at once (a venue host up, its FIX engine down),
    recording when each connection attempt came."""

    def __init__(self, port: int) -> None:
        self._server = socket.create_server(("127.0.0.1", port))
        self._server.settimeout(0.05)
        self.times: list[float] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            self.times.append(time.monotonic())
            connection.close()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._server.close()


def test_the_executor_backs_off_while_the_venue_is_down_then_logs_on_and_sends_everything_once(tmp_path):
    """The venue's port accepts and drops every connection. quickfix's own attempts (every ReconnectInterval = 1
    s) get ``patience``; then the executor stops its initiator and restarts it after 1, 2, 2 s (cap), each less
    up to 25 % jitter. Connection attempts two restarts apart are more than two seconds apart (the fixed interval
    would make them 1 s). When the venue comes up the executor logs on and the venue gets each order once."""
    port = free_port()
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    box.submit(orders(5))
    backoff = Backoff(first=1.0, factor=2.0, cap=2.0, jitter=0.25, patience=0.5, attempt_seconds=0.5)
    executor = Executor(executor_config(tmp_path, port), box, backoff=backoff)
    venue = paper_venue(tmp_path, port)
    down = _ClosingListener(port)
    with Events() as events:
        try:
            running(executor)
            eventually(lambda: [e for e in events.named("reconnect_backoff") if e["restart"] == 2], what="backoff 2")
            before = len(down.times)  # the last of them: restart 1's attempt (or quickfix's own, if it had none)
            eventually(lambda: len(down.times) > before, what="restart 2's connection")
            down.close()
            venue.start()
            eventually(lambda: len(venue.received()) == 5 and box.depth() == 0, what="all five orders")
            # the executor counts a batch as sent after it marks it in the outbox, a commit that can end after the
            # venue's reports are journaled: wait for the count too (a loaded CI machine read it first)
            eventually(lambda: executor.health()["sent"] == 5, what="the sent count")
            health = executor.health()
        finally:
            down.close()
            executor.stop()
            venue.stop()
    waits = events.named("reconnect_backoff")
    assert [e["restart"] for e in waits] == list(range(1, len(waits) + 1)) and len(waits) >= 2
    for k, e in enumerate(waits):
        nominal = min(2.0, 2.0 ** k)
        assert 0.75 * nominal - 1e-3 <= e["delay_seconds"] <= nominal, e
    assert any(e["delay_seconds"] < min(2.0, 2.0 ** k) for k, e in enumerate(waits))  # jittered
    gap = down.times[before] - down.times[before - 1]
    assert gap >= 1.8, down.times  # restart 1 -> restart 2: 0.5 s to connect, the stop, then at least 1.5 s
    assert health["logged_on"] and health["reconnect"] == {"restarts_since_logon": 0,
                                                           "next_attempt_in_seconds": None}
    assert_each_once(box, venue, 5, 5)
    assert health["sent"] == 5 and executor.app.errors == []


# ------------------------------------------------------------------------------- logon, heartbeat, logout


def test_the_executor_logs_on_with_credentials_heartbeats_answers_a_test_request_and_logs_out(tmp_path):
    """On the wire: the executor's Logon carries HeartBtInt=1 and its Username/Password (the venue's answer
    none); it heartbeats every second, answers the venue's TestRequest with a Heartbeat carrying its TestReqID,
    and on stop sends a Logout the venue answers. A normal logout is not taken for a refused logon."""
    port = free_port()
    venue = paper_venue(tmp_path, port, LOGIN)
    relay = Relay(port)
    executor = Executor(executor_config(tmp_path, relay.port, credentials=(USER, PASSWORD), heartbeat=1),
                        sqlite_outbox(tmp_path / "outbox.sqlite"))
    with Events() as events:
        try:
            venue.start()
            running(executor)
            assert executor.fix.wait_logged_on(20)
            eventually(lambda: venue.logged_on("EXECUTOR"), what="the venue's side logged on")
            logon = wire(relay, "to_acceptor", "A")[0]
            assert (logon[108], logon[553], logon[554]) == ("1", USER, PASSWORD)  # on the wire, and only there
            assert 553 not in fix_fields(relay.frames("to_initiator")[0])  # the venue's answer: no credentials
            beats = wire(relay, "to_acceptor", "0", lambda f: 112 not in f, count=2)
            assert len(beats) >= 2
            ping = raw_message("1", (112, "PING-EX"))
            assert qf.Session.sendToTarget(ping, venue.order_sessions[0])
            wire(relay, "to_acceptor", "0", lambda f: f.get(112) == "PING-EX")
        finally:
            executor.stop()
            relay.close()
            venue.stop()
    to_venue = [fix_fields(f)[35] for f in relay.frames("to_acceptor")]
    to_executor = [fix_fields(f)[35] for f in relay.frames("to_initiator")]
    assert to_venue[0] == "A" and to_venue[-1] == "5" and to_venue.count("5") == 1  # our Logout, at the end
    assert to_executor[0] == "A" and to_executor[-1] == "5"  # the venue's answer to it
    assert not venue.logged_on("EXECUTOR")
    assert [e["event"] for e in events.named("logon") + events.named("logout")] == ["logon", "logout"]
    assert events.named("logon_rejected") == [] and executor.health()["last_logon_error"] is None  # a logout
    assert not [line for line in events.lines() if PASSWORD in line]
    assert executor.app.errors == [] and venue.fix.application.errors == []


def test_a_restarted_initiator_keeps_its_sequence_numbers_and_store(tmp_path):
    """What the backoff relies on: stopping and starting the executor's FIX session in the same process
    continues its sequence numbers from the FileStore (no reset), so the venue sees no gap and no resend."""
    port = free_port()
    venue = paper_venue(tmp_path, port)
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    box.submit(orders(1))
    executor = Executor(executor_config(tmp_path, port), box)
    try:
        venue.start()
        executor.start()
        executor.run(until=lambda: box.journal().height == 1, max_seconds=30)
        before = executor.fix.session().getExpectedSenderNum()
        executor.fix.stop()
        executor.fix.start()
        assert executor.fix.wait_logged_on(20)
        assert executor.fix.session().getExpectedSenderNum() == before + 2  # our Logout, then our Logon
        box.submit(orders(2))
        executor.run(until=lambda: box.journal().height == 2, max_seconds=30)
    finally:
        executor.stop()
        venue.stop()
    assert_each_once(box, venue, 2, 2)
