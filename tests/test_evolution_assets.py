"""The evolution assets in Dagster: the promotion gate blocks with its reason, or names a champion."""

import dagster as dg
import numpy as np
import pytest

from emp_core.evolution.walkforward import windows
from emp_core.store import DuckDBStore
from emp_dagster.defs.evolution import assets as evolution
from emp_dagster.defs.evolution.resources import spark_resource
from emp_dagster.defs.market_data import assets as market
from emp_dagster.defs.market_data.resources import EmbeddedStoreResource, ShippedDataResource
from emp_dagster.defs.sensory import assets as sensory

SMALL = {"population": 8, "generations": 1, "train_years": 3}


@pytest.fixture
def resources(tmp_path, data_dir):
    return {"store": EmbeddedStoreResource(path=str(tmp_path / "emp.duckdb")),
            "market_data": ShippedDataResource(data_dir=str(data_dir)), "pyspark": spark_resource()}


def run(resources, gates: dict):
    config = {"ops": {"evolution": {"config": SMALL | gates}}}
    tags = {"dagster/asset_partition_range_start": "2000-01-01", "dagster/asset_partition_range_end": "2012-12-01"}
    with dg.instance_for_test() as instance:
        return dg.materialize([market.bars_1d, market.macro_series, market.treasury_curve, sensory.sensory_cortex,
                               evolution.evolution], resources=resources, instance=instance, tags=tags,
                              run_config=config, raise_on_error=False)


def test_the_gate_halts_the_run_with_its_reason_or_promotes(resources):
    strict = run(resources, {})
    gate = {e.check_name: e for e in strict.get_asset_check_evaluations()}[evolution.PROMOTION_GATE]
    store = DuckDBStore(resources["store"].path)
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR
    assert gate.description.startswith("no champion:") and gate.metadata["trials"].value > 0
    assert not strict.success  # a blocking gate stops the graph there
    assert store.query("SELECT count(*) FROM evolution.champion").item() == 0
    lineage = store.query("SELECT * FROM evolution.lineage")
    assert lineage["individual"].is_unique().all()
    children = lineage.filter(lineage["generation"] > 0)
    known = set(lineage["individual"].to_list())
    assert children.height > 0 and all(set(p) <= known for p in children["parents"].to_list())
    span = store.query("SELECT min(ts) AS a, max(ts) AS b FROM market.bars_1d").row(0)
    expected = windows(np.datetime64(span[0]), np.datetime64(span[1]), train_years=3)
    assert store.query("SELECT count(*) FROM evolution.fitness_runs").item() == len(expected) == 8
    lenient = run(resources, {"min_dsr": 0.0, "max_pbo": 1.0})
    gate = {e.check_name: e for e in lenient.get_asset_check_evaluations()}[evolution.PROMOTION_GATE]
    assert lenient.success and gate.passed and gate.description.startswith("promoted")
    champion = store.query("SELECT * FROM evolution.champion")
    assert champion.height == 1 and champion["trials"].item() == gate.metadata["trials"].value
    mats = {m.asset_key.to_user_string(): m.materialization.metadata
            for m in lenient.get_asset_materialization_events()}
    assert mats["duckdb/evolution/fitness_runs"]["oos_equity"].value.startswith("![walk-forward")
    assert "data:image/svg+xml;base64," in mats["duckdb/evolution/population"]["pareto_front"].value


def test_the_spark_engine_stores_the_same_evolution(resources, spark):
    in_process = run(resources, {"min_dsr": 0.0, "max_pbo": 1.0})
    store = DuckDBStore(resources["store"].path)
    local = store.query("SELECT * EXCLUDE (run_id) FROM evolution.experiment_log ORDER BY evaluation")
    on_spark = run(resources, {"min_dsr": 0.0, "max_pbo": 1.0, "engine": "spark"})
    assert in_process.success and on_spark.success
    remote = store.query("SELECT * EXCLUDE (run_id) FROM evolution.experiment_log ORDER BY evaluation")
    assert remote.height > 0 and remote.equals(local)
