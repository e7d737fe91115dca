"""The outbox and execution journal on both tiers (SQLite in WAL mode, PostgreSQL's trading schema): orders
submitted once by what they are, cancels only of live orders, reports journaled once, durable across a kill."""

from __future__ import annotations

import os
import signal
import string
import subprocess
import sys
import textwrap

import pytest

from emp_core.execution.outbox import ApprovedOrder, OutboxError, clordid_for, postgres_outbox, sqlite_outbox


@pytest.fixture(params=["sqlite", "postgres"])
def outbox(request, tmp_path):
    if request.param == "sqlite":
        box = sqlite_outbox(tmp_path / "outbox.sqlite")
    else:
        box = postgres_outbox(request.getfixturevalue("pg_url"))
    yield box
    box.close()


def order(key: str, **kw) -> ApprovedOrder:
    fields = {"strategy": "manual", "symbol": "AAPL", "side": "buy", "qty": 10, "policy_version": "default-v1"}
    return ApprovedOrder(idem_key=key, **{**fields, **kw})


def report(clordid: str, exec_id: str, status: str, *, session: str = "FIX.4.4:EMP->VENUE", cum: float = 0.0,
           **kw) -> dict:
    return {"session": session, "exec_id": exec_id, "clordid": clordid, "msg_type": "8", "exec_type": status,
            "ord_status": status, "cum_qty": cum, **kw}


def test_an_order_is_submitted_once_by_what_it_is(outbox):
    first = outbox.submit([order("a"), order("b", side="sell", qty=5)])
    again = outbox.submit([order("a"), order("c")])
    assert [new for _, new in first] == [True, True] and [new for _, new in again] == [False, True]
    assert again[0][0] == first[0][0]  # the same ClOrdID for the same order
    entries = outbox.entries()
    assert entries["idem_key"].to_list() == ["a", "b", "c"] and entries["qty"].to_list() == [10, 5, 10]
    assert entries["state"].unique().to_list() == ["approved"] and outbox.depth() == 3


def test_clordids_are_the_same_everywhere_distinct_and_fix_safe(tmp_path):
    one, two = sqlite_outbox(tmp_path / "1.sqlite"), sqlite_outbox(tmp_path / "2.sqlite")
    ids = [one.submit([order(f"k{i}")])[0][0] for i in range(200)]
    assert ids == [two.submit([order(f"k{i}")])[0][0] for i in range(200)]
    assert len(set(ids)) == 200 and ids == [clordid_for(f"k{i}") for i in range(200)]
    assert all(len(i) == 20 and set(i) <= set(string.ascii_uppercase + string.digits) for i in ids)


@pytest.mark.parametrize(("kw", "problem"), [
    ({"side": "short"}, "side 'short' is not buy or sell"),
    ({"qty": 0}, "qty 0 is not a whole number > 0"),
    ({"qty": 1.5}, "qty 1.5 is not a whole number > 0"),
    ({"ord_type": "limit"}, "a limit order needs a limit price"),
    ({"limit_price": 10.0}, "a limit order needs a limit price, and only a limit order has one"),
    ({"ord_type": "limit", "limit_price": -1.0}, "limit price -1.0 is not > 0"),
    ({"ord_type": "limit", "limit_price": 0.0}, "limit price 0.0 is not > 0"),
    ({"session": "demo"}, "session 'demo' is not paper or live"),
])
def test_a_bad_order_is_refused_naming_it_and_the_problem(kw, problem):
    with pytest.raises(OutboxError, match=r"order .x. for AAPL: ") as err:
        order("x", **kw)
    assert problem in str(err.value)


def test_the_executor_sends_oldest_first_and_each_once(outbox):
    outbox.submit([order(k) for k in "abcd"])
    batch = outbox.to_send(limit=3)
    assert [e.clordid for e in batch] == [clordid_for(k) for k in "abc"]
    outbox.mark_sent([batch[0].clordid, batch[1].clordid])
    outbox.mark_sent([batch[0].clordid])  # marking twice changes nothing
    assert [e.clordid for e in outbox.to_send()] == [clordid_for(k) for k in "cd"] and outbox.depth() == 2
    assert outbox.entries()["state"].to_list() == ["sent", "sent", "approved", "approved"]


def test_orders_and_cancels_go_only_to_their_session_kind(outbox):
    (paper, _), (live, _) = outbox.submit([order("p"), order("l", session="live")])
    assert [e.clordid for e in outbox.to_send(session="paper")] == [paper]
    assert [e.clordid for e in outbox.to_send(session="live")] == [live]
    assert outbox.depth("paper") == outbox.depth("live") == 1 and outbox.depth() == 2
    outbox.mark_sent([paper, live])
    outbox.request_cancel(live)
    assert outbox.cancels_to_send(session="paper") == []
    assert [c.orig_clordid for c in outbox.cancels_to_send(session="live")] == [live]
    with pytest.raises(OutboxError, match="session 'demo' is not paper or live"):
        outbox.to_send(session="demo")


def test_a_cancel_names_a_live_order_and_numbers_its_requests(outbox):
    (clordid, _), = outbox.submit([order("a")])
    with pytest.raises(OutboxError, match="no order 'NOPE' in the outbox"):
        outbox.request_cancel("NOPE")
    assert outbox.request_cancel(clordid) == f"{clordid}-C1"
    assert outbox.request_cancel(clordid) == f"{clordid}-C2"
    assert [(c.clordid, c.orig_clordid, c.qty) for c in outbox.cancels_to_send()] == [
        (f"{clordid}-C1", clordid, 10), (f"{clordid}-C2", clordid, 10)]
    outbox.mark_cancels_sent([f"{clordid}-C1"])
    assert [c.clordid for c in outbox.cancels_to_send()] == [f"{clordid}-C2"]
    outbox.record([report(clordid, "x1", "2", cum=10.0)])  # filled
    with pytest.raises(OutboxError, match="already done"):
        outbox.request_cancel(clordid)


def test_a_report_is_journaled_once_per_session_and_exec_id(outbox):
    (a, _), (b, _) = outbox.submit([order("a"), order("b")])
    assert outbox.record([report(a, "e1", "0"), report(a, "e2", "1", cum=4.0)]) == 2
    assert outbox.record([report(a, "e2", "1", cum=4.0), report(b, "e3", "0")]) == 1  # e2 resent
    assert outbox.record([report(a, "e1", "0", session="FIX.4.4:EMP->OTHER")]) == 1  # another venue's e1
    assert outbox.journal()["exec_id"].to_list() == ["e1", "e2", "e3", "e1"] and outbox.journal_size() == 4
    status = outbox.status()
    assert status.select("clordid", "ord_status", "cum_qty").rows() == [(a, "0", 0.0), (b, "0", 0.0)]
    assert outbox.last_report_at() is not None
    with pytest.raises(OutboxError, match="lacks exec_id"):
        outbox.record([report(a, "", "0")])


def test_a_report_missing_or_extra_field_is_refused_whole(outbox):
    (a, _), = outbox.submit([order("a")])
    with pytest.raises(OutboxError, match="lacks ord_status"):
        outbox.record([report(a, "e1", "0"), report(a, "e2", "")])
    assert outbox.journal_size() == 0  # the batch is one transaction


KILLED = textwrap.dedent("""
    import os, signal, sys
    from emp_core.execution.outbox import ApprovedOrder, sqlite_outbox
    box = sqlite_outbox(sys.argv[1])
    for i in range(50):
        box.submit([ApprovedOrder(idem_key=f"k{i}", strategy="s", symbol="A", side="buy", qty=1)])
        clordid = box.to_send(1)[0].clordid
        box.mark_sent([clordid])
        box.record([{"session": "s", "exec_id": f"e{i}", "clordid": clordid, "msg_type": "8", "ord_status": "0"}])
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_what_was_committed_survives_a_kill(tmp_path):
    path = tmp_path / "outbox.sqlite"
    proc = subprocess.run([sys.executable, "-c", KILLED, str(path)], capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    box = sqlite_outbox(path)
    assert box.entries().height == 50 and box.depth() == 0 and box.journal_size() == 50


def test_two_processes_submitting_the_same_orders_make_each_once(tmp_path):
    path = tmp_path / "outbox.sqlite"
    script = textwrap.dedent("""
        import sys
        from emp_core.execution.outbox import ApprovedOrder, sqlite_outbox
        box = sqlite_outbox(sys.argv[1])
        new = sum(n for _, n in box.submit([ApprovedOrder(idem_key=f"k{i}", strategy="s", symbol="A", side="buy",
                                                          qty=1) for i in range(300)]))
        print(new)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()}) for _ in range(2)]
    news = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert sum(news) == 300 and sqlite_outbox(path).entries().height == 300


def test_the_drop_copy_is_a_journal_of_its_own(outbox):
    (a, _), = outbox.submit([order("a")])
    assert outbox.record([report(a, "e1", "0")], into="dropcopy") == 1
    assert outbox.record([report(a, "e1", "0")], into="dropcopy") == 0  # once per session and ExecID
    assert outbox.journal("dropcopy")["exec_id"].to_list() == ["e1"] and outbox.journal_size() == 0
    with pytest.raises(OutboxError, match="no journal 'other'"):
        outbox.record([report(a, "e2", "0")], into="other")


def mark_report(i: int, session: str) -> dict:
    return {"session": session, "exec_id": f"X{i}", "clordid": f"C{i}", "msg_type": "8", "ord_status": "0"}


def test_the_journal_mark_is_written_with_the_reports_and_replaced_by_the_next_group(outbox):
    """``record(cursor=)``: the executor's high-water mark per FIX session, in the reports' transaction."""
    box = outbox
    assert box.cursor("S") is None
    assert box.record([mark_report(1, "S"), mark_report(2, "S")], cursor=("S", "E1", 8)) == 2
    assert box.cursor("S") == ("E1", 8) and box.cursor("other") is None
    assert box.record([mark_report(2, "S"), mark_report(3, "S")], cursor=("S", "E1", 11)) == 1  # X2 held once
    assert box.cursor("S") == ("E1", 11)
    assert box.record([], cursor=("S", "E2", 3)) == 0  # a new epoch replaces the mark, lower or not
    assert box.cursor("S") == ("E2", 3)
    assert box.known("S", ["X1", "X3", "X9"]) == {"X1", "X3"} and box.known("T", ["X1"]) == set()
    with pytest.raises(OutboxError, match="next sequence number 0"):
        box.record([mark_report(4, "S")], cursor=("S", "E2", 0))
    assert box.known("S", ["X4"]) == set() and box.cursor("S") == ("E2", 3)  # refused whole


def test_a_limit_price_just_above_zero_is_an_order():
    assert order("x", ord_type="limit", limit_price=0.01).limit_price == 0.01


def test_an_approved_order_cannot_be_changed_after_approval():
    import dataclasses

    approved = order("x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        approved.qty = 10_000
    from emp_core.execution.outbox import as_dict

    assert as_dict(approved) == {**dataclasses.asdict(approved), "clordid": approved.clordid}


def test_sent_orders_and_cancels_carry_when_they_were_sent(outbox):
    (a, _), (b, _) = outbox.submit([order("a"), order("b")])
    assert outbox.mark_sent([a]) == 1 and outbox.mark_sent([a]) == 0  # only an approved one changes
    cancel = outbox.request_cancel(b)
    outbox.mark_cancels_sent([cancel])
    entries = outbox.entries().sort("clordid")
    sent = dict(zip(entries["clordid"], entries["sent_at"], strict=True))
    assert sent[a] is not None and sent[b] is None
    assert outbox.cancels_to_send() == []


def test_an_empty_group_journals_nothing_and_a_first_mark_is_one(outbox):
    assert outbox.record([]) == 0 and outbox.journal_size() == 0
    assert outbox.record([], cursor=("S", "E", 1)) == 0 and outbox.cursor("S") == ("E", 1)


def test_an_empty_journal_has_the_journals_column_types(outbox):
    import polars as pl

    empty = outbox.journal()
    assert empty.is_empty() and empty.schema["cum_qty"] == pl.Float64 and empty.schema["symbol"] == pl.String


def test_a_new_outbox_file_is_in_wal_mode_under_directories_it_creates(tmp_path):
    path = tmp_path / "a" / "b" / "outbox.sqlite"
    box = sqlite_outbox(path)
    assert box._con().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert box._con() is box._con()  # one connection per thread, kept
    con = box._con()
    box.close()
    import sqlite3

    with pytest.raises(sqlite3.ProgrammingError):
        con.execute("SELECT 1")  # closed by close()


def test_switching_to_wal_waits_for_another_processs_lock_and_names_the_file_when_it_never_comes(tmp_path):
    import sqlite3
    import threading

    from emp_core.execution.outbox import _wal

    path = tmp_path / "new.sqlite"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # a rollback-journal file locked by someone else
    other = sqlite3.connect(path, timeout=0)
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    _wal(other, path, timeout=10)  # retried until the lock went
    release.join()
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    holder.close()
    other.close()
    stuck = tmp_path / "stuck.sqlite"
    holder = sqlite3.connect(stuck, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(OutboxError, match=r"stuck\.sqlite: cannot put the outbox in WAL mode: database is locked"):
        _wal(sqlite3.connect(stuck, timeout=0), stuck, timeout=0.2)
    holder.close()


def test_writers_in_one_process_queue_for_the_file_instead_of_finding_it_locked(tmp_path):
    """SQLite's busy handler sleeps (up to 100 ms a try) when a writer finds the file locked: the executor's
    threads queue on the outbox's lock instead. With no busy timeout at all, four threads writing 160 groups at
    once almost never see "database is locked" (here 0, at most 1 in a few hundred runs: WAL housekeeping);
    without the lock most of their writes do (here 119 to 149 of 160)."""
    import sqlite3
    import threading

    from emp_core.execution.outbox import Outbox

    sqlite_outbox(tmp_path / "o.sqlite")  # the schema

    def connect():
        con = sqlite3.connect(tmp_path / "o.sqlite", timeout=0, isolation_level="DEFERRED")
        con.execute("PRAGMA synchronous=FULL")
        return con

    def hammer(box: Outbox, prefix: str) -> list[str]:
        errors: list[str] = []

        def work(t: int) -> None:
            for i in range(40):
                try:
                    box.record([{"session": prefix, "exec_id": f"{t}-{i}", "clordid": "c", "msg_type": "8",
                                 "ord_status": "0"}], cursor=(prefix, "E", i + 1))
                except sqlite3.OperationalError as exc:
                    errors.append(str(exc))

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return errors

    queued = Outbox(connect, prefix="", placeholder="?", location="o", serialize_writes=True)
    errors = hammer(queued, "queued")
    assert len(errors) <= 2
    assert queued.journal().filter(pl_col("session") == "queued").height == 160 - len(errors)
    unqueued = Outbox(connect, prefix="", placeholder="?", location="o", serialize_writes=False)
    assert sum("locked" in e for e in hammer(unqueued, "free")) >= 40  # what the lock spares


def pl_col(name: str):
    import polars as pl

    return pl.col(name)


def test_the_tiers_outbox_is_the_one_its_settings_name(tmp_path, pg_url):
    from emp_core.config import settings
    from emp_core.execution.outbox import open_outbox

    embedded = open_outbox(settings({"EMP_HOME": str(tmp_path / "home")}))
    assert embedded.location == str((tmp_path / "home" / "outbox.sqlite").resolve())
    institutional = open_outbox(settings({"EMP_HOME": str(tmp_path), "EMP_TIER": "institutional",
                                          "EMP_PG_URL": pg_url}))
    assert institutional.location == pg_url.rsplit("@", 1)[-1] and "@" not in institutional.location
    institutional.close()
