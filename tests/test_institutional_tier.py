"""The institutional tier runs the same asset graph as the embedded one: `emp demo` with EMP_TIER=institutional
(PostgreSQL store, Dagster on PostgreSQL) leaves every table the embedded demo leaves, with the same rows.

What may differ, and only that: ids and clocks of the runs (run ids, *_at stamps, seconds), an integer column's
width (PostgreSQL has no 1-byte integer), and the last bits of the calibration quantiles (each database
interpolates its own percentile_cont)."""

import os

import numpy as np
import polars as pl
import pytest

from emp_core.store import DuckDBStore
from emp_core.store.postgres_store import PostgresStore

VOLATILE = ("run_id", "last_run_id", "seconds")


def _comparable(frame: pl.DataFrame) -> pl.DataFrame:
    keep = [c for c in frame.columns if c not in VOLATILE and not c.endswith("_at")]
    out = frame.select(keep).with_columns(pl.col(pl.Int8, pl.Int16, pl.Int32).cast(pl.Int64))
    return out.sort(pl.all(), nulls_last=True)


@pytest.fixture
def institutional_demo(institutional, pg_url, emp_home):
    from emp_core.cli import main

    assert main(["demo"]) == 0
    store = PostgresStore(pg_url)
    yield store
    store.dispose()


# The paper session's tables hold what a venue and a wall clock made (ExecIDs, fill times, planned_at): the
# tiers must hold the same ones and plan the same orders; the outbox itself lives in PostgreSQL's trading
# schema on the institutional tier (SQLite beside the DuckDB file on the embedded one).
OUTBOX_TABLES = {"trading.outbox", "trading.cancels", "trading.executions", "trading.dropcopy",
                 "trading.journal_cursor"}


def test_the_demo_graph_leaves_the_same_tables_on_both_tiers(institutional_demo, demo_home):
    from emp_core.compliance import audit_store

    embedded = DuckDBStore(demo_home / "emp.duckdb")
    # what the paper session made (the audit trail's times and hashes, the compliance tables on its fills and
    # the KYC cases' clocks) is compared by counts; the research graph's tables row by row
    session = ("trading.", "audit.", "compliance.")
    tables = [t for t in embedded.tables() if not t.startswith(session)]
    made = [t for t in embedded.tables() if t.startswith(session)]
    assert sorted(t for t in institutional_demo.tables() if t not in OUTBOX_TABLES) == sorted(tables + made)
    counts = institutional_demo.table_counts()
    assert {t: counts[t] for t in tables} == {t: n for t, n in embedded.table_counts().items() if t in tables}
    assert {t: counts[t] for t in made if not t.startswith("trading.")} == {
        t: n for t, n in embedded.table_counts().items() if t in made and not t.startswith("trading.")}
    kinds = "SELECT kind, count(*) AS n FROM audit.log GROUP BY kind ORDER BY kind"
    assert institutional_demo.query(kinds).equals(embedded.query(kinds))
    assert audit_store.verify(institutional_demo).ok and audit_store.verify(embedded).ok
    plan = "SELECT symbol, status, side, quantity, stop_price FROM trading.intents ORDER BY symbol"
    assert institutional_demo.query(plan).equals(embedded.query(plan))  # the same orders planned
    assert counts["trading.outbox"] == embedded.query(
        "SELECT count(*) FROM trading.approved_orders WHERE new").item()  # each in its tier's outbox
    for table in tables:
        duck = _comparable(embedded.query(f"SELECT * FROM {table}"))
        pg = _comparable(institutional_demo.query(f"SELECT * FROM {table}"))
        assert pg.columns == duck.columns, table
        if table == "sensory.calibration":
            floats = [c for c, t in duck.schema.items() if t == pl.Float64]
            for c in floats:
                np.testing.assert_allclose(pg[c].to_numpy(), duck[c].to_numpy(), rtol=1e-12, err_msg=c)
            pg, duck = pg.drop(floats), duck.drop(floats)
        assert pg.equals(duck), f"{table}: the tiers differ"
    assert os.environ["EMP_TIER"] == "institutional"
