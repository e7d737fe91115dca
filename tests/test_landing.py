"""The landing folder: files dropped into $EMP_HOME/landing/<dataset>/ are ingested once each, through the
sensor and the bars asset, and moved to processed/ or rejected/ (with the reason), never lost."""

import os
import time
from datetime import datetime

import dagster as dg
import polars as pl
import pytest

from emp_core.errors import InputFileError
from emp_core.market_data.landing import ingest_landing_file, landing_dir, pending
from emp_core.store import DuckDBStore
from emp_dagster.defs.market_data import assets as A
from emp_dagster.defs.market_data.resources import MarketDataResource, StoreResource
from emp_dagster.defs.market_data.sensors import landing_files
from emp_dagster.edge import partition_range_tags
from tests.support import daily_bars


def drop(folder, name: str, frame: pl.DataFrame, *, age: float = 60.0):
    """Write ``frame`` as a landing file, its mtime ``age`` seconds ago (settled)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    frame.write_csv(path)
    old = time.time() - age
    os.utime(path, (old, old))
    return path


def test_a_file_replaces_only_its_span_and_moves_to_processed(store, emp_home):
    store.upsert_bars("bars_1d", daily_bars("AAA", datetime(2019, 1, 2), 60), source="shipped", run_id="r0")
    update = daily_bars("AAA", datetime(2019, 2, 1), 5).with_columns(pl.col("close") + 1000, pl.col("high") + 1000)
    other = daily_bars("BBB", datetime(2019, 2, 1), 5)
    path = drop(landing_dir(emp_home, "bars_1d"), "update.csv", pl.concat([update, other]))
    result = ingest_landing_file(store, path, "bars_1d", run_id="land-1")
    assert result.report.rows_stored == 10 and result.report.rows_quarantined == 0
    aaa = store.read_bars("bars_1d", symbols=["AAA"])
    assert aaa.height == 60  # the rest of AAA stayed; its 5 days were replaced
    assert aaa.filter(pl.col("close") > 1000)["ts"].to_list() == update["ts"].to_list()
    assert store.read_bars("bars_1d", symbols=["BBB"]).height == 5
    assert not path.exists() and [p.name.endswith("-update.csv") for p in (path.parent / "processed").iterdir()] \
        == [True]
    assert pending(emp_home, "bars_1d") == []


def test_bad_rows_are_quarantined_and_a_bad_file_is_rejected_with_its_reason(store, emp_home):
    folder = landing_dir(emp_home, "bars_1d")
    rows = daily_bars("AAA", datetime(2019, 3, 1), 4).with_columns(pl.col("close").cast(pl.String))
    rows = rows.with_columns(pl.when(pl.int_range(pl.len()) == 1).then(pl.lit("n/a")).otherwise("close")
                             .alias("close"))
    path = drop(folder, "some-bad.csv", rows)
    result = ingest_landing_file(store, path, "bars_1d", run_id="land-2")
    assert (result.report.rows_in, result.report.rows_stored, result.report.rows_quarantined) == (4, 3, 1)
    assert store.query("SELECT count(*) FROM market.quarantine WHERE run_id = 'land-2'").item() == 1
    assert (folder / "processed").is_dir() and not path.exists()

    junk = rows.with_columns(pl.lit("n/a").alias("close"))
    all_bad = drop(folder, "all-bad.csv", junk)
    result = ingest_landing_file(store, all_bad, "bars_1d", run_id="land-2b")
    assert (result.report.rows_stored, result.report.rows_quarantined) == (0, 4)
    [reason] = list((folder / "rejected").glob("*all-bad.csv.reason.txt"))
    assert "every one of its 4 rows was quarantined" in reason.read_text()

    broken = drop(folder, "no-close.csv", daily_bars("AAA", datetime(2019, 3, 1), 4).drop("close"))
    with pytest.raises(InputFileError, match="close"):
        ingest_landing_file(store, broken, "bars_1d", run_id="land-3")
    [moved] = [p for p in (folder / "rejected").iterdir() if p.name.endswith("no-close.csv")]
    reason = moved.with_name(moved.name + ".reason.txt").read_text()
    assert "no-close.csv" in reason and "close" in reason and not broken.exists()


def test_a_store_failure_leaves_the_file_to_be_taken_again(emp_home):
    from emp_core.store.postgres_store import PostgresStore, StoreUnavailableError
    from tests.support import free_port

    path = drop(landing_dir(emp_home, "bars_1d"), "later.csv", daily_bars("AAA", datetime(2019, 3, 1), 4))
    down = PostgresStore(f"postgresql://127.0.0.1:{free_port()}/emp")
    with pytest.raises(StoreUnavailableError):
        ingest_landing_file(down, path, "bars_1d", run_id="land-4")
    assert path.exists() and [f.path for f in pending(emp_home, "bars_1d")] == [path]


def test_files_still_being_written_or_hidden_wait(emp_home):
    folder = landing_dir(emp_home, "bars_1d")
    drop(folder, "fresh.csv", daily_bars("AAA", datetime(2019, 3, 1), 2), age=0.0)
    drop(folder, ".half.csv", daily_bars("AAA", datetime(2019, 3, 1), 2))
    drop(folder, "notes.txt", daily_bars("AAA", datetime(2019, 3, 1), 2))
    assert pending(emp_home, "bars_1d") == []


def test_the_sensor_asks_one_run_per_file_and_the_run_settles_it(emp_home, data_dir):
    folder = landing_dir(emp_home, "bars_1d")
    two_years = pl.concat([daily_bars("AAA", datetime(2018, 12, 20), 10)])
    drop(folder, "span.csv", two_years)
    drop(folder, "junk.csv", pl.DataFrame({"x": [1, 2]}))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance)
        requests = list(landing_files(context))
        assert len(requests) == 2 and all(isinstance(r, dg.RunRequest) for r in requests)
        by_file = {r.tags["emp/landing_file"]: r for r in requests}
        span = by_file["span.csv"]
        assert partition_range_tags("2018", "2019").items() <= span.tags.items()
        assert span.asset_selection == [A.BAR_KEYS["bars_1d"]]
        assert by_file["junk.csv"].partition_key is not None  # its run rejects it, with the reason
        # run the file's request as Dagster would, through the bars asset
        store_path = emp_home / "emp.duckdb"
        resources = {"store": StoreResource(path=str(store_path)),
                     "market_data": MarketDataResource(data_dir=str(data_dir))}
        result = dg.materialize([A.bars_1d], run_config=span.run_config, tags=span.tags,
                                resources=resources, instance=instance, raise_on_error=False)
        assert result.success
        assert {m.partition for m in result.get_asset_materialization_events()} == {"2018", "2019"}
    assert DuckDBStore(store_path).read_bars("bars_1d", symbols=["AAA"]).height == 10
    assert [f.path.name for f in pending(emp_home, "bars_1d")] == ["junk.csv"]  # span.csv was settled
