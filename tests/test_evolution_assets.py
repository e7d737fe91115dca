"""The evolution assets in Dagster: a refusal is an outcome of a successful run, a champion only when promoted,
and the trial registry counts across runs."""

import dagster as dg
import numpy as np
import pytest

from emp_core.evolution.promotion import Gates
from emp_core.evolution.run import verify_champion
from emp_core.evolution.walkforward import windows
from emp_core.store import DuckDBStore
from emp_dagster.defs.evolution import assets as evolution
from emp_dagster.defs.evolution import checks as evolution_checks
from emp_dagster.defs.evolution.resources import spark_resource
from emp_dagster.defs.market_data import assets as market
from emp_dagster.defs.market_data.resources import MarketDataResource, StoreResource
from emp_dagster.defs.sensory import assets as sensory

SMALL = {"population": 8, "generations": 1, "train_years": 3}
LENIENT = {"min_dsr": 0.0, "min_oos_psr": 0.0, "max_pbo": 1.0}
LENIENT_FLOOR = Gates(**LENIENT)
CONSUMED = []


@dg.asset(deps=[evolution.KEYS["champion"]])
def champion_consumer() -> None:
    """Stands for what trades a champion (the risk and order assets): it must run only after a promotion."""
    CONSUMED.append(True)


@pytest.fixture
def resources(tmp_path, data_dir):
    return {"store": StoreResource(path=str(tmp_path / "emp.duckdb")),
            "market_data": MarketDataResource(data_dir=str(data_dir)), "pyspark": spark_resource()}


def run(resources, config: dict, instance, floor: dict | None = None):
    run_config = {"ops": {"evolution": {"config": SMALL | config}}}
    if floor is not None:  # the champion check's floor (default: the platform's gates)
        run_config["ops"][evolution_checks.promoted_by_gates.op.name] = {"config": floor}
    tags = {"dagster/asset_partition_range_start": "2000", "dagster/asset_partition_range_end": "2012"}
    return dg.materialize([market.bars_1d, market.macro_series, market.treasury_curve, sensory.sensory_cortex,
                           evolution.evolution, evolution_checks.promoted_by_gates, champion_consumer],
                          resources=resources, instance=instance, tags=tags, run_config=run_config,
                          raise_on_error=False)


def checks(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def materialised(result) -> set[str]:
    return {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}


def test_a_refusal_is_a_successful_run_and_a_champion_is_stored_only_when_promoted(resources):
    store = DuckDBStore(resources["store"].path)
    CONSUMED.clear()
    with dg.instance_for_test() as instance:
        strict = run(resources, {}, instance)
        gate = checks(strict)[evolution.PROMOTION_GATE]
        assert strict.success  # the gate said no: an outcome, not a failed run
        assert not gate.passed and gate.severity == dg.AssetCheckSeverity.WARN
        assert gate.description.startswith("no champion:")
        assert gate.metadata["n_trials"].value > 0 and gate.metadata["n_effective"].value >= 1
        assert "evolution/decision" in materialised(strict)
        assert "evolution/champion" not in materialised(strict)
        assert evolution.PROMOTED_BY_GATES not in checks(strict) and not CONSUMED  # the consumer was skipped
        assert "evolution.champion" not in store.tables()
        decision = store.query("SELECT * FROM evolution.decisions")
        assert decision.height == 1 and not decision["promoted"].item()
        assert decision["n_trials"].item() == gate.metadata["n_trials"].value

        # Gates loosened for research promote, but nothing tradable: the champion's check holds the platform's
        # floor and blocks what consumes it.
        loose = run(resources, LENIENT, instance)
        gate = checks(loose)[evolution.PROMOTION_GATE]
        assert gate.passed and gate.description.startswith("promoted")
        assert "evolution/champion" in materialised(loose)
        held = checks(loose)[evolution.PROMOTED_BY_GATES]
        assert not held.passed and "falls short of the platform's gates" in held.description and not CONSUMED

        lenient = run(resources, LENIENT, instance, floor=LENIENT)  # a research floor, stated in the run config
        gate = checks(lenient)[evolution.PROMOTION_GATE]
        assert lenient.success and gate.passed
        assert checks(lenient)[evolution.PROMOTED_BY_GATES].passed and CONSUMED == [True]
        champion = store.query("SELECT * FROM evolution.champion")
        assert champion.height == 1 and champion["n_trials"].item() == gate.metadata["n_trials"].value
        mats = {m.asset_key.to_user_string(): m.materialization.metadata
                for m in lenient.get_asset_materialization_events()}
        assert mats["evolution/fitness_runs"]["oos_equity"].value.startswith("![walk-forward")
        assert "data:image/svg+xml;base64," in mats["evolution/population"]["pareto_front"].value
        # Same seed and settings (only the gates differ): the registry takes no new trial.
        assert mats["evolution/trials"]["trials_added"].value == 0

        reseeded = run(resources, {"seed": 7}, instance)
        mats = {m.asset_key.to_user_string(): m.materialization.metadata
                for m in reseeded.get_asset_materialization_events()}
        assert mats["evolution/trials"]["trials_added"].value > 0
        n = store.query("SELECT n_trials FROM evolution.decisions ORDER BY decided_at")["n_trials"].to_list()
        assert n[0] == n[1] == n[2] < n[3]  # N counts across runs, once per distinct trial
        distinct = store.query("SELECT count(DISTINCT genome_hash) FROM evolution.trials").item()
        assert n[3] == distinct
        # The champion of the lenient run stays in the table, but a later refusal withdraws the check's trust.
        assert store.query("SELECT run_id FROM evolution.champion").item() == lenient.run_id
        withdrawn = verify_champion(store, LENIENT_FLOOR)
        assert not withdrawn.passed and "was refused since, by run " + reseeded.run_id in withdrawn.description

    lineage = store.query("SELECT * FROM evolution.lineage")
    assert lineage["individual"].is_unique().all()
    children = lineage.filter(lineage["generation"] > 0)
    known = set(lineage["individual"].to_list())
    assert children.height > 0 and all(set(p) <= known for p in children["parents"].to_list())
    span = store.query("SELECT min(ts) AS a, max(ts) AS b FROM market.bars_1d").row(0)
    expected = windows(np.datetime64(span[0]), np.datetime64(span[1]), train_years=3)
    assert store.query("SELECT count(*) FROM evolution.fitness_runs").item() == len(expected) == 8


def test_the_champion_check_fails_when_the_stored_decision_does_not_back_it(resources):
    store = DuckDBStore(resources["store"].path)
    assert not verify_champion(store).passed  # nothing stored yet: no champion to rely on
    with dg.instance_for_test() as instance:
        run(resources, LENIENT, instance, floor=LENIENT)
    assert verify_champion(store, LENIENT_FLOOR).passed
    assert "falls short" in verify_champion(store).description  # the platform's floor is not met
    store.query("UPDATE evolution.decisions SET pbo = 1.5")  # a stored figure beyond even the run's own gate
    outcome = verify_champion(store, LENIENT_FLOOR)
    assert not outcome.passed and "PBO 1.500 > 1.0" in outcome.description
    store.query("UPDATE evolution.decisions SET pbo = 0.1, dataset = NULL")  # from before datasets were named
    assert "predates dataset tracking" in verify_champion(store, LENIENT_FLOOR).description
    store.query("UPDATE evolution.decisions SET promoted = false")
    assert "did not promote" in verify_champion(store, LENIENT_FLOOR).description
    store.query("DELETE FROM evolution.decisions")
    assert "no decision" in verify_champion(store, LENIENT_FLOOR).description


@pytest.mark.spark
def test_the_spark_engine_stores_the_same_evolution(resources, spark):
    with dg.instance_for_test() as instance:
        in_process = run(resources, LENIENT, instance, floor=LENIENT)
        store = DuckDBStore(resources["store"].path)
        local = store.query("SELECT * EXCLUDE (run_id) FROM evolution.experiment_log ORDER BY evaluation")
        on_spark = run(resources, LENIENT | {"engine": "spark"}, instance, floor=LENIENT)
    assert in_process.success and on_spark.success
    remote = store.query("SELECT * EXCLUDE (run_id) FROM evolution.experiment_log ORDER BY evaluation")
    assert remote.height > 0 and remote.equals(local)
    decisions = store.query("SELECT * EXCLUDE (run_id, decided_at, trials_added) FROM evolution.decisions "
                            "ORDER BY decided_at")
    assert decisions.row(0) == decisions.row(1)  # the same decision, figure for figure
