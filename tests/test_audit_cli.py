"""``emp audit append`` and ``emp audit verify`` on the embedded tier: exit codes, the first bad entry named,
the head printed for a later --witness, clear errors for bad input."""

from __future__ import annotations

import json

import pytest

from emp_core.cli import main
from emp_core.store.duckdb_store import DuckDBStore


@pytest.fixture
def home(emp_home):
    return emp_home


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_append_then_verify_then_tamper(home, capsys):
    for i in range(5):
        code, out = run(capsys, "audit", "append", "--kind", "review.note", "--payload",
                        json.dumps({"case": f"C{i}", "to": "approved"}))
        assert code == 0 and f"appended audit entry {i + 1}" in out
    code, out = run(capsys, "audit", "verify", "--json")
    head = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and head["ok"] and head["entries"] == 5 and head["head_seq"] == 5
    with DuckDBStore(home / "emp.duckdb").connect() as con:
        con.execute("UPDATE audit.log SET payload = '{\"case\":\"C2\",\"to\":\"rejected\"}' WHERE seq = 3")
    code, out = run(capsys, "audit", "verify")
    assert code == 1 and "entry 3: its hash does not match its content (edited)" in out
    with DuckDBStore(home / "emp.duckdb").connect() as con:
        con.execute("DELETE FROM audit.log WHERE seq >= 3")
    code, out = run(capsys, "audit", "verify")
    assert code == 0 and "2 entries" in out  # a shorter chain is still a chain ...
    code, out = run(capsys, "audit", "verify", "--witness", f"5:{head['head_hash']}", "--json")
    bad = json.loads(out.strip().splitlines()[-1])
    assert code == 1 and bad["bad_seq"] == 5 and "cut off" in bad["problem"]  # ... the witness sees the cut


@pytest.mark.parametrize(("args", "message"), [
    (["append", "--kind", "Bad Kind", "--payload", "{}"], "audit kind 'Bad Kind'"),
    (["append", "--kind", "note", "--payload", "{x"], "--payload is not JSON"),
    (["append", "--kind", "note", "--payload", '{"x": NaN}'], "the payload is not JSON"),
    (["append", "--kind", "kyc.case_transition", "--payload", '{"case_id": "D-1", "to_state": "approved"}'],
     "the platform writes these entries itself"),
    (["append", "--kind", "compliance.resolution", "--payload", "{}"], "the platform writes these entries itself"),
    (["verify", "--witness", "7"], "expected SEQ:HASH"),
])
def test_bad_input_is_refused_naming_it_and_nothing_is_appended(home, capsys, args, message):
    code, out = run(capsys, "audit", *args)
    assert code == 2 and message in out and "Traceback" not in out
    code, out = run(capsys, "audit", "verify", "--json")
    assert json.loads(out.strip().splitlines()[-1])["entries"] == 0
