"""Audit trail, 1M entries: append and verify rates beside the floor, hashing the same payload bytes with
hashlib in a loop, in the same run.

    .venv/bin/python benchmarks/bench_audit.py [--entries 1000000] [--tier embedded|institutional]

Append: ``audit_store.append`` in groups of 100,000 (one transaction each: canonical JSON, the chain's
hashes, the insert). Verify: ``audit_store.verify``, the whole log read from the store and recomputed, end to
end (a fresh connection, the read, every entry's SHA-256 of ``seq|ts|kind|prev_hash|payload``, the seq, link
and separator checks; on DuckDB rowid-range parts read and hashed by several threads: ``audit_store.verify``'s
docstring); beside it the entry-by-entry reference ``audit.verify`` on the log read back (reading included),
which must give the same result. The floor hashes the payload alone (about half the bytes verify hashes per
entry) in a Python loop, one thread. Target (issue 13): verify at least 0.5x the floor. Ends with one line of
JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emp_core.compliance import audit, audit_store

GROUP = 100_000


def payloads(n: int) -> list[tuple[str, dict]]:
    return [("risk.decision", {"check": "per_trade_risk", "decision": f"D{i:09d}", "limit": 0.02,
                               "value": round(i * 1e-7, 9), "verdict": "approve" if i % 7 else "reject"})
            for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--tier", choices=("embedded", "institutional"), default="embedded")
    ap.add_argument("--pg-url", default="postgresql://127.0.0.1:5432/emp_bench_audit",
                    help="institutional: a database the benchmark may fill (its audit.log is emptied)")
    args = ap.parse_args()
    events = payloads(args.entries)
    with tempfile.TemporaryDirectory() as tmp:
        if args.tier == "embedded":
            from emp_core.store.duckdb_store import DuckDBStore

            store = DuckDBStore(Path(tmp) / "bench.duckdb")
        else:
            from emp_core.store.postgres_store import PostgresStore

            store = PostgresStore(args.pg_url)
            with store.cursor() as cur:
                cur.execute("TRUNCATE audit.log")
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        for i in range(0, len(events), GROUP):
            audit_store.append(store, events[i:i + GROUP], now=now)
            print(f"  appended {min(i + GROUP, len(events)):,} entries", file=sys.stderr, flush=True)
        t_append = time.perf_counter() - t0

        t0 = time.perf_counter()
        result = audit_store.verify(store)
        t_verify = time.perf_counter() - t0
        assert result.ok and result.entries == args.entries, result

        t0 = time.perf_counter()
        log = audit_store.read(store)
        reference = audit.verify(*[log[c].to_list() for c in audit.COLUMNS])
        t_reference = time.perf_counter() - t0
        assert reference == result, (reference, result)

        data = [p.encode() for p in log["payload"].to_list()]
        t0 = time.perf_counter()
        for b in data:
            hashlib.sha256(b).hexdigest()
        t_floor = time.perf_counter() - t0
    n = args.entries
    out = {"entries": n, "tier": args.tier, "floor_per_s": round(n / t_floor), "append_per_s": round(n / t_append),
           "verify_per_s": round(n / t_verify), "reference_verify_per_s": round(n / t_reference),
           "verify_vs_floor": round(t_floor / t_verify, 2), "append_vs_floor": round(t_floor / t_append, 3),
           "reference_vs_floor": round(t_floor / t_reference, 2)}
    print(f"floor (hashlib.sha256 over the same payload bytes, a loop): {out['floor_per_s']:,} entries/s")
    print(f"append (groups of {GROUP:,}, one transaction each): {out['append_per_s']:,} entries/s "
          f"({out['append_vs_floor']}x the floor)")
    print(f"verify (read from the store and recomputed): {out['verify_per_s']:,} entries/s "
          f"({out['verify_vs_floor']}x the "
          "floor; target >= 0.5)")
    print(f"reference verify (Python, log read back included): {out['reference_verify_per_s']:,} entries/s "
          f"({out['reference_vs_floor']}x the floor)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
