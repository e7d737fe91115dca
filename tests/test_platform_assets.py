"""The platform domain in Dagster (emp_dagster/defs/platform): the backup asset and its restore drill, the failover
catch-up and its parity check, the failover drill job, health checks, and the recovery sensors; against the
loopback PostgreSQL server."""

import os
from datetime import datetime

import dagster as dg
import polars as pl
import pytest

from emp_core.market_data.ingest import Partition
from emp_core.market_data.pipeline import ingest_window
from emp_core.market_data.sources import SyntheticSource
from emp_core.store import DuckDBStore
from emp_core.store.failover import FailoverStore, pending
from emp_core.store.postgres_store import PostgresStore
from emp_dagster.defs.market_data import assets as market
from emp_dagster.defs.market_data.jobs import ingest_job
from emp_dagster.defs.market_data.resources import MarketDataResource, StoreResource
from emp_dagster.defs.platform import assets as platform
from emp_dagster.defs.platform.jobs import failover_drill
from emp_dagster.defs.platform.sensors import failover_recovery, ingest_retry
from emp_dagster.edge import partition_range_tags
from tests.support import daily_bars, free_port


def checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture
def institutional_store(institutional, pg_url, emp_home):
    store = PostgresStore(pg_url)
    store.upsert_bars("bars_1d", daily_bars("AAA", datetime(2015, 1, 2), 600), source="t", run_id="r")
    yield store
    store.dispose()


def test_the_backup_asset_restores_its_dump_and_checks_retention(institutional_store, emp_home):
    with institutional_store.cursor() as cur:  # a stamp from 100 days ago is pruned, today's are kept
        cur.execute("INSERT INTO ops.write_log (committed_at, operation, target) VALUES "
                    "(clock_timestamp() - interval '100 days', 'upsert_bars', 'market.bars_1d')")
    before = institutional_store.query("SELECT count(*) AS n FROM ops.write_log").item()
    with dg.instance_for_test() as instance:
        result = dg.materialize([platform.backup], resources={"store": StoreResource()}, instance=instance)
    assert result.asset_materializations_for_node("platform__backup")[0].metadata["write_log_pruned"].value == 1
    assert institutional_store.query("SELECT count(*) AS n FROM ops.write_log").item() == before - 1
    got = checks(result)
    assert got["restore_parity"].passed
    retention = got["retention"]  # 600 days of 2015-2017 bars cannot cover ten years, and bars_1h is empty
    assert not retention.passed and "market.bars_1h" in retention.description
    assert len(list((emp_home / "backups").glob("*.dump"))) == 1


def test_the_backup_asset_refuses_the_embedded_tier_clearly(emp_home):
    with dg.instance_for_test() as instance:
        result = dg.materialize([platform.backup], resources={"store": StoreResource()}, instance=instance,
                                raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "institutional tier" in failure.event_specific_data.error.to_string()


def test_catch_up_after_an_outage_and_its_parity_check(institutional, pg_url, emp_home):
    fallback = DuckDBStore(emp_home / "failover.duckdb")
    down = FailoverStore(PostgresStore(f"postgresql://127.0.0.1:{free_port()}/emp"), fallback)
    source = SyntheticSource(3, datetime(2020, 1, 1), datetime(2021, 1, 1), seed=1)
    ingest_window(down, source, "bars_1d", [Partition("2020", datetime(2020, 1, 1), datetime(2021, 1, 1))],
                  run_id="outage-1", max_gap_ratio=1.0)
    assert pending(fallback).height == 1
    with dg.instance_for_test() as instance:
        # PostgreSQL answers and writes wait: the recovery sensor asks for the catch-up
        request = failover_recovery(dg.build_sensor_context(instance=instance))
        assert isinstance(request, dg.RunRequest)
        result = dg.materialize([platform.failover_catch_up], instance=instance)
    parity = checks(result)["parity"]
    assert parity.passed and "1 of 1 replayed write(s) agree" in parity.description
    primary = PostgresStore(pg_url)
    assert primary.read_bars("bars_1d").height == fallback.read_bars("bars_1d").height == 3 * 253
    primary.dispose()
    with dg.instance_for_test() as instance:  # caught up: nothing waits, and a catch-up with nothing is no pass
        assert isinstance(failover_recovery(dg.build_sensor_context(instance=instance)), dg.SkipReason)
        again = dg.materialize([platform.failover_catch_up], instance=instance, raise_on_error=False)
    assert not checks(again)["parity"].passed and "NOTHING TESTED" in checks(again)["parity"].description


def test_the_recovery_sensor_waits_while_postgres_is_down(institutional, emp_home, monkeypatch):
    fallback = DuckDBStore(emp_home / "failover.duckdb")
    down_url = f"postgresql://127.0.0.1:{free_port()}/emp"
    FailoverStore(PostgresStore(down_url), fallback).replace_table(
        "macro.series", pl.DataFrame(schema={"series_id": pl.String}))
    monkeypatch.setenv("EMP_PG_URL", down_url)
    with dg.instance_for_test() as instance:
        skip = failover_recovery(dg.build_sensor_context(instance=instance))
    assert isinstance(skip, dg.SkipReason) and "still unreachable" in skip.skip_message


def test_a_catch_up_run_that_failed_is_run_again_and_one_that_ran_is_not(institutional, emp_home, monkeypatch):
    """The review: the sensor's run key named the pending writes only, so a catch-up run that failed because
    PostgreSQL went away again was never requested again."""
    from emp_dagster.defs.platform.sensors import catch_up_key

    fallback = DuckDBStore(emp_home / "failover.duckdb")
    up_url = os.environ["EMP_PG_URL"]
    FailoverStore(PostgresStore(f"postgresql://127.0.0.1:{free_port()}/emp"), fallback).replace_table(
        "market.universe", pl.DataFrame({"dataset": ["bars_1d"], "symbol": ["X"]}))
    key = catch_up_key(pending(fallback))
    with dg.instance_for_test() as instance:
        first = failover_recovery(dg.build_sensor_context(instance=instance))
        assert isinstance(first, dg.RunRequest) and first.run_key == key
        monkeypatch.setenv("EMP_PG_URL", f"postgresql://127.0.0.1:{free_port()}/emp")  # gone again mid-run
        failed = dg.materialize([platform.failover_catch_up], instance=instance, tags={"dagster/run_key": key},
                                raise_on_error=False)
        assert not failed.success
        monkeypatch.setenv("EMP_PG_URL", up_url)
        retry = failover_recovery(dg.build_sensor_context(instance=instance))
        assert isinstance(retry, dg.RunRequest) and retry.run_key == f"{key}-retry1"
        done = dg.materialize([platform.failover_catch_up], instance=instance,
                              tags={"dagster/run_key": retry.run_key})
        assert done.success
        assert isinstance(failover_recovery(dg.build_sensor_context(instance=instance)), dg.SkipReason)


def test_the_failover_drill_job(institutional):
    with dg.instance_for_test() as instance:
        result = failover_drill.execute_in_process(instance=instance)
        assert result.success
        drill = result.output_for_node("failover_drill_op")
    assert drill["failed_over"] and drill["parity"] and drill["replayed"] == 1 and drill["rows_stored"] > 0


def test_a_failed_ingest_run_is_retried_with_a_longer_look_back(emp_home, tmp_path):
    resources = {"store": StoreResource(path=str(tmp_path / "emp.duckdb")),
                 "market_data": MarketDataResource(data_dir=str(tmp_path / "no-such-dir"))}
    defs = dg.Definitions(assets=[market.bars_1d, market.bars_1h, market.universe], jobs=[ingest_job],
                          resources=resources)
    with dg.instance_for_test() as instance:
        job = defs.resolve_job_def(ingest_job.name)
        failed = job.execute_in_process(instance=instance, partition_key="2010", raise_on_error=False)
        assert not failed.success
        run = instance.get_run_by_id(failed.run_id)
        event = next(e for e in failed.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
        context = dg.build_run_status_sensor_context(sensor_name=ingest_retry.name, dagster_instance=instance,
                                                     dagster_run=run, dagster_event=event).for_run_failure()
        request = ingest_retry(context)
    assert isinstance(request, dg.RunRequest)
    assert partition_range_tags("2009", "2010").items() <= request.tags.items()
    assert request.tags["emp/retry"] == "1" and request.tags["emp/retry_of"] == failed.run_id


def test_health_checks_fail_on_what_they_cannot_measure(emp_home, tmp_path):
    store = DuckDBStore(tmp_path / "emp.duckdb")
    store.upsert_bars("bars_1d", daily_bars("AAA", datetime(2020, 1, 2), 5), source="t", run_id="r")
    with dg.instance_for_test() as instance:
        result = dg.materialize([platform.health], resources={"store": StoreResource(path=str(store.path))},
                                instance=instance)
    got = checks(result)
    assert set(got) == set(platform.HEALTH_ITEMS)
    assert not got["freshness_bars_1d"].passed  # 2020's bars, measured today
    assert not got["freshness_bars_1h"].passed and got["freshness_bars_1h"].metadata["state"].value == "unknown"
    assert all(e.severity == dg.AssetCheckSeverity.WARN for e in got.values())


def test_an_institutional_intraday_ingest_is_mirrored_to_its_stream_and_a_consumer_rebuilds_it(
        institutional, pg_url, emp_home, data_dir, redis_server, monkeypatch, tmp_path):
    """publish -> consume -> store: the bars asset's run publishes the EURUSD hours it stored; a consumer group
    applies the stream to an empty store, which then holds the same bars as PostgreSQL."""
    from emp_core.store.streams import BarConsumer, connect, stream_name

    monkeypatch.setenv("EMP_REDIS_URL", redis_server)
    resources = {"store": StoreResource(), "market_data": MarketDataResource(data_dir=str(data_dir))}
    with dg.instance_for_test() as instance:
        result = dg.materialize([market.bars_1h], partition_key="2017", resources=resources, instance=instance)
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    stored = meta["dagster/row_count"].value
    assert stored > 6000 and meta["stream_published"].value == stored
    client = connect(redis_server)
    assert client.xlen(stream_name("bars_1h")) == stored
    replica = DuckDBStore(tmp_path / "replica.duckdb")
    consumer = BarConsumer(client, stream_name("bars_1h"), "replica", "c1", replica, "bars_1h")
    consumer.run(idle_stop=0.5)
    primary = PostgresStore(pg_url)
    assert replica.read_bars("bars_1h").equals(primary.read_bars("bars_1h"))
    primary.dispose()
    # the documented way to publish later works on this tier's store (the review found it broken)
    from emp_core.cli import main

    assert main(["stream", "replay", "--redis-url", redis_server, "--stream", "again", "--table", "bars_1h"]) == 0
    assert client.xlen("again") == stored


def test_the_catch_up_retires_what_the_cache_held_of_the_primary(institutional, pg_url, emp_home, redis_server,
                                                                  monkeypatch):
    """A read before the catch-up cached the primary's (empty) year; the catch-up writes behind the cache's back,
    so it must retire the namespace, or the next read serves the empty year until the TTL."""
    from emp_core.store import cache_namespace
    from emp_core.store.cache import CachedStore, HotCache

    monkeypatch.setenv("EMP_REDIS_URL", redis_server)
    fallback = DuckDBStore(emp_home / "failover.duckdb")
    down = FailoverStore(PostgresStore(f"postgresql://127.0.0.1:{free_port()}/emp"), fallback)
    source = SyntheticSource(3, datetime(2020, 1, 1), datetime(2021, 1, 1), seed=1)
    ingest_window(down, source, "bars_1d", [Partition("2020", datetime(2020, 1, 1), datetime(2021, 1, 1))],
                  run_id="outage-2", max_gap_ratio=1.0)
    primary = PostgresStore(pg_url)
    cached = CachedStore(primary, HotCache(redis_server, namespace=cache_namespace(pg_url)))
    read = lambda: cached.read_bars("bars_1d", symbols=["SYN0000"], start=datetime(2020, 1, 1),  # noqa: E731
                                    end=datetime(2021, 1, 1))
    assert read().height == 0 and read().height == 0  # cached, empty
    with dg.instance_for_test() as instance:
        assert dg.materialize([platform.failover_catch_up], instance=instance).success
    assert read().height == 253
    primary.dispose()
