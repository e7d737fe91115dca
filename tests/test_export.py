"""Stored partitions exported to hive-partitioned Parquet: exact round trips, idempotent and atomic per
partition, readable by Polars and Spark."""

from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from emp_core.errors import EmpError
from emp_core.market_data.ingest import ingest_bars, new_run_id
from emp_core.market_data.macro import load_macro_series, load_treasury_curve
from emp_core.market_data.sources import ShippedSource
from emp_core.sensory.pipeline import materialise_window
from emp_core.store.export import export_parquet
from tests.support import SHIPPED

NOW = datetime(2026, 1, 1)


@pytest.fixture
def filled(store):
    """The shipped daily and hourly bars and the macro tables, and features of 2007-2010 for both datasets."""
    src = ShippedSource(SHIPPED)
    for name in ("bars_1d", "bars_1h"):
        ingest_bars(store, src, name, run_id=new_run_id("t"), now=NOW)
    load_macro_series(store, SHIPPED, run_id="m", now=NOW)
    load_treasury_curve(store, SHIPPED, run_id="m", now=NOW)
    materialise_window(store, datetime(2007, 1, 1), datetime(2011, 1, 1), run_id="f")
    materialise_window(store, datetime(2017, 1, 1), datetime(2018, 1, 1), run_id="f", datasets=("bars_1h",))
    return store


def read_back(root: Path) -> pl.DataFrame:
    return pl.scan_parquet(root / "**/*.parquet", hive_partitioning=True).collect()


def files(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``root`` (hidden ones included): inode, modification time, content."""
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_bars_round_trip_exactly_by_year(filled, tmp_path):
    summary = export_parquet(filled, "market.bars_1d", tmp_path)
    stored = filled.query("SELECT * FROM market.bars_1d ORDER BY symbol, ts")
    assert summary.partition_by == ("year",)
    assert summary.root == tmp_path / "market" / "bars_1d"
    assert summary.rows == stored.height > 20_000 and summary.changed == len(summary.partitions)
    assert [p.values["year"] for p in summary.partitions] == list(range(1999, 2019))
    back = read_back(summary.root)
    assert back.get_column("year").dtype.is_integer()
    assert back.select(pl.col("ts").dt.year().cast(pl.Int64) == pl.col("year")).to_series().all()
    assert back.drop("year").sort("symbol", "ts").equals(stored)
    assert (summary.root / "year=2008" / "data.parquet").is_file()


def test_feature_tables_round_trip_by_dataset_and_year(filled, tmp_path):
    for name in ("fused", "anomaly", "when"):
        table = f"sensory.{name}"
        summary = export_parquet(filled, table, tmp_path)
        assert summary.partition_by == ("dataset", "year")
        stored = filled.query(f"SELECT * FROM {table} ORDER BY dataset, symbol, ts")
        assert {(p.values["dataset"], p.values["year"]) for p in summary.partitions} == {
            *(("bars_1d", y) for y in range(2007, 2011)), ("bars_1h", 2017)}
        back = read_back(summary.root).select(stored.columns).sort("dataset", "symbol", "ts")
        assert back.equals(stored), table
        assert stored.height == summary.rows > 10_000


def test_a_re_export_rewrites_only_the_changed_year(filled, tmp_path):
    first = export_parquet(filled, "market.bars_1d", tmp_path)
    root = first.root
    stale = root / "year=1990"  # a partition no longer in the store: left alone
    stale.mkdir()
    old = filled.query("SELECT * FROM market.bars_1d ORDER BY symbol, ts LIMIT 1")
    old.with_columns(pl.lit(datetime(1990, 1, 2)).alias("ts"), pl.lit("OLD").alias("symbol")).write_parquet(
        stale / "data.parquet")
    before = files(root)

    again = export_parquet(filled, "market.bars_1d", tmp_path)
    assert again.changed == 0 and files(root) == before  # same rows: not one file rewritten

    with filled.connect() as con:
        con.execute("UPDATE market.bars_1d SET volume = volume + 1 WHERE ts >= '2005-01-01' AND ts < '2006-01-01'")
    third = export_parquet(filled, "market.bars_1d", tmp_path)
    after = files(root)
    assert [p.values["year"] for p in third.partitions if p.changed] == [2005]
    assert set(after) == set(before)  # no temporary file left, nothing removed
    assert {f for f in after if after[f] != before[f]} == {"year=2005/data.parquet"}
    back = read_back(root)
    assert back.filter(pl.col("year") == 1990).get_column("symbol").to_list() == ["OLD"]
    assert back.filter(pl.col("year") != 1990).drop("year").sort("symbol", "ts").equals(
        filled.query("SELECT * FROM market.bars_1d ORDER BY symbol, ts"))


def test_only_exports_the_partitions_asked_for(filled, tmp_path):
    summary = export_parquet(filled, "sensory.fused", tmp_path, only={"year": [2009, 2017]})
    assert {(p.values["dataset"], p.values["year"]) for p in summary.partitions} == {
        ("bars_1d", 2009), ("bars_1h", 2017)}
    assert sorted(str(p.relative_to(summary.root)) for p in summary.root.rglob("*.parquet")) == [
        "dataset=bars_1d/year=2009/data.parquet", "dataset=bars_1h/year=2017/data.parquet"]
    one_level = export_parquet(filled, "sensory.fused", tmp_path / "by_dataset", partition_by=["dataset"])
    assert [p.values for p in one_level.partitions] == [{"dataset": "bars_1d"}, {"dataset": "bars_1h"}]
    with pytest.raises(EmpError, match="cannot partition by 'symbol_group'"):
        export_parquet(filled, "sensory.fused", tmp_path, partition_by=["symbol_group"])
    with pytest.raises(EmpError, match="not a partition column"):
        export_parquet(filled, "sensory.fused", tmp_path, only={"symbol": ["SPX"]})
    with pytest.raises(EmpError, match="not a table name"):
        export_parquet(filled, "sensory.fused; DROP TABLE x", tmp_path)


def test_a_failed_write_leaves_the_previous_file(filled, tmp_path, monkeypatch):
    first = export_parquet(filled, "market.bars_1d", tmp_path)
    before = files(first.root)
    with filled.connect() as con:
        con.execute("UPDATE market.bars_1d SET close = close * 2")
    calls = []
    real = pl.DataFrame.write_parquet

    def failing(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:  # the third partition: half a file, then the disk fills up
            Path(path).write_bytes(b"PAR1 partial")
            raise OSError("No space left on device")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", failing)
    with pytest.raises(OSError, match="No space left"):
        export_parquet(filled, "market.bars_1d", tmp_path)
    after = files(first.root)
    assert set(after) == set(before)  # the partial temporary file is gone
    changed = sorted(f for f in after if after[f] != before[f])
    assert changed == ["year=1999/data.parquet", "year=2000/data.parquet"]  # written before the failure
    for name in after:  # every file whole: the new rows where the write finished, else the old ones
        assert pl.read_parquet(first.root / name).height > 0


@pytest.mark.spark
def test_spark_reads_the_export(filled, tmp_path, spark):
    bars = export_parquet(filled, "market.bars_1d", tmp_path)
    fused = export_parquet(filled, "sensory.fused", tmp_path)
    frame = spark.read.parquet(str(bars.root))
    assert frame.count() == bars.rows
    assert "year" in frame.columns
    assert frame.filter("year = 2008").count() == filled.query(
        "SELECT count(*) FROM market.bars_1d WHERE ts >= '2008-01-01' AND ts < '2009-01-01'").item()
    features = spark.read.parquet(str(fused.root))
    assert features.count() == fused.rows == filled.query("SELECT count(*) FROM sensory.fused").item()
    assert {"dataset", "year", "signal"} <= set(features.columns)


def test_the_same_export_from_postgresql(pg_url, tmp_path):
    """The SQL is the two stores' common dialect: the institutional store exports the same files' rows."""
    from emp_core.market_data.sources import generate_bars
    from emp_core.store import DuckDBStore
    from emp_core.store.postgres_store import PostgresStore

    bars = generate_bars(3, datetime(2015, 6, 1), datetime(2018, 3, 1), seed=1)
    journal = pl.DataFrame([{"run_id": "r", "dataset": "bars_1d", "source": "syn", "input": "memory",
                             "rows_in": bars.height, "rows_stored": bars.height, "rows_quarantined": 0,
                             "status": "ok", "started_at": NOW, "finished_at": NOW}])
    duck, pg = DuckDBStore(tmp_path / "emp.duckdb"), PostgresStore(pg_url)
    try:
        for store in (duck, pg):
            store.replace_bars("bars_1d", bars, source="syn", run_id="r", window=None,
                               quarantine=pl.DataFrame(schema={"run_id": pl.String}), journal=journal)
            materialise_window(store, datetime(2015, 1, 1), datetime(2019, 1, 1), run_id="f", datasets=("bars_1d",))
        for table in ("market.bars_1d", "sensory.fused"):
            exports = [export_parquet(s, table, tmp_path / s.dialect) for s in (duck, pg)]
            assert [p.values for p in exports[0].partitions] == [p.values for p in exports[1].partitions]
            assert len(exports[0].partitions) == 4  # 2015 to 2018
            frames = [read_back(e.root).sort("symbol", "ts") for e in exports]
            assert frames[0].equals(frames[1]), table
            assert frames[0].height == bars.height
    finally:
        pg.dispose()


def test_rows_on_a_year_boundary_go_to_their_own_year(store, tmp_path):
    from emp_core.market_data.sources import generate_bars

    bars = generate_bars(2, datetime(2019, 12, 31, 20), datetime(2020, 1, 1, 4), interval="1h", calendar="24/7")
    journal = pl.DataFrame([{"run_id": "r", "dataset": "bars_1h", "source": "syn", "input": "memory",
                             "rows_in": bars.height, "rows_stored": bars.height, "rows_quarantined": 0,
                             "status": "ok", "started_at": NOW, "finished_at": NOW}])
    store.replace_bars("bars_1h", bars, source="syn", run_id="r", window=None,
                       quarantine=pl.DataFrame(schema={"run_id": pl.String}), journal=journal)
    summary = export_parquet(store, "market.bars_1h", tmp_path)
    assert {p.values["year"]: p.rows for p in summary.partitions} == {2019: 8, 2020: 8}
    back = read_back(summary.root)
    assert back.filter(pl.col("ts") == datetime(2020, 1, 1)).get_column("year").to_list() == [2020, 2020]
    assert back.drop("year").sort("symbol", "ts").equals(store.query(
        "SELECT * FROM market.bars_1h ORDER BY symbol, ts"))
