"""Evolution as assets: catalogue, experiment log, populations, fitness runs, the trial registry, the
promotion decision of every run, and the champion when the gates promote one."""

from typing import Any

import dagster as dg

from emp_core.errors import EmpError
from emp_core.evolution import run as evo
from emp_core.evolution.fitness import evaluate
from emp_core.evolution.plots import line_chart, scatter
from emp_core.evolution.population import front_mask
from emp_core.evolution.spark import spark_evaluator
from emp_core.market_data.quality import CheckOutcome
from emp_dagster.defs.market_data.assets import BAR_KEYS
from emp_dagster.defs.market_data.resources import StoreResource, store_kind
from emp_dagster.defs.sensory.assets import KEYS as SENSORY_KEYS
from emp_dagster.edge import check_result, config_from, settings_of

GROUP = "evolution"
NAMES = ("catalogue", "experiment_log", "lineage", "population", "fitness_runs", "trials", "decision", "champion")
KEYS = {name: dg.AssetKey(["evolution", name]) for name in NAMES}
PROMOTION_GATE = "promotion_gate"
PROMOTED_BY_GATES = "promoted_by_gates"
_INPUTS = [BAR_KEYS["bars_1d"], SENSORY_KEYS["fused"]]
DEPS = {
    "catalogue": [],
    "experiment_log": [*_INPUTS, KEYS["catalogue"]],
    "lineage": [KEYS["experiment_log"]],
    "population": [KEYS["experiment_log"]],
    "fitness_runs": [KEYS["experiment_log"]],
    "trials": [KEYS["experiment_log"]],
    "decision": [KEYS["fitness_runs"], KEYS["trials"], KEYS["population"]],
    "champion": [KEYS["decision"]],
}
TABLES = {name: f"evolution.{name}" for name in NAMES} | {"decision": "evolution.decisions"}
DESCRIPTIONS = {
    "catalogue": "Seed genomes (trend, mean reversion, carry/macro, volatility breakout, liquidity-aware).",
    "experiment_log": "Every evaluation of this run (window, phase, generation, genes, objectives, return moments, "
                      "parents, operator, species).",
    "lineage": "Every individual once: its window, generation, parents' ids, the operator that made it "
               "(seed, random, sbx+polynomial, polynomial) and its species (nearest catalogue seed).",
    "population": "The final population of each walk-forward window, with its NSGA-II objectives.",
    "fitness_runs": "Per walk-forward window, the genome chosen on the selection span, its selection and test "
                    "metrics.",
    "trials": "The trial registry: every evaluation ever run on the dataset, across runs (idempotent); "
              "N for the gates.",
    "decision": "One row per run, kept across runs: champion or not, the reason, and every figure of the three "
                "gates (DSR with N, effective N, V, T, skewness, kurtosis; out-of-sample PSR; PBO).",
    "champion": "The last promoted genome. Materialised only when this run's gates promote one: what consumes "
                "a champion is skipped otherwise.",
}


EvolutionConfig = config_from(
    evo.EvolutionSettings, "EvolutionConfig",
    "The walk-forward evolution's settings (emp_core's EvolutionSettings), and the fitness engine: in_process, "
    "or spark (the pyspark resource's executors, identical results).",
    engine=(str, "in_process"))


def _figures(decision: dict) -> dict:
    """The decision's figures as metadata (None shown as text, floats rounded for reading)."""
    return {k: (round(v, 6) if isinstance(v, float) else v) if v is not None else "n/a" for k, v in decision.items()}


@dg.multi_asset(
    name="evolution",
    specs=[dg.AssetSpec(key, deps=DEPS[name], group_name=GROUP, kinds={store_kind(), "deap"},
                        description=DESCRIPTIONS[name], skippable=name == "champion") for name, key in KEYS.items()],
    check_specs=[
        dg.AssetCheckSpec(PROMOTION_GATE, asset=KEYS["decision"], blocking=False,
                          description="Passes when the run promotes a champion: deflated Sharpe >= min_dsr, "
                                      "out-of-sample PSR >= min_oos_psr, PBO <= max_pbo (0.95, 0.95, 0.2). "
                                      "A refusal is a warning with its reason, not a failed run."),
    ],
)
def evolution(context: dg.AssetExecutionContext, config: EvolutionConfig, store: StoreResource,
              pyspark: dg.ResourceParam[Any]):
    if config.engine not in ("in_process", "spark"):
        raise EmpError(f"evolution engine {config.engine!r}: choose in_process or spark")
    evaluator = spark_evaluator(pyspark.spark_session) if config.engine == "spark" else evaluate
    db = store.store()
    run = evo.run_evolution(db, settings_of(config, evo.EvolutionSettings), run_id=context.run_id,
                            evaluator=evaluator)
    result, d = run.result, run.result.decision
    for name, key in KEYS.items():
        if name == "champion" and result.champion is None:
            continue  # no new champion: the output is skipped and so is everything that consumes it
        frame = run.tables.get(TABLES[name])
        metadata = {"table": TABLES[name]}
        if frame is not None:
            metadata["dagster/row_count"] = frame.height
        if name == "experiment_log":
            metadata |= {"evaluations": frame.height, "windows": len(result.windows),
                         "seconds": round(run.seconds, 2)}
        if name == "trials":
            metadata |= {"trials_added": result.trials_added, "n_trials": d.n_trials,
                         "dagster/row_count": db.query("SELECT count(*) FROM evolution.trials").item()}
        if name == "fitness_runs":
            metadata["oos_equity"] = dg.MetadataValue.md(
                f"![walk-forward out-of-sample equity]({line_chart(evo.oos_equity(result), 'OOS equity')})")
            metadata["runs"] = dg.MetadataValue.md(frame.select(
                "window_id", "name", "test_start", "selection_sharpe_lb", "test_sharpe_lb", "test_max_drawdown",
                "test_trades").to_pandas().to_markdown(index=False))
        if name == "population":
            last = frame.filter(frame["window_id"] == frame["window_id"].max())
            metadata["pareto_front"] = dg.MetadataValue.md(
                "![Pareto front]("
                + scatter(last["max_drawdown"].to_numpy(), last["sharpe_lb"].to_numpy(),
                          "last window: Sharpe lower bound vs max drawdown",
                          highlight=front_mask(last["sharpe_lb"].to_numpy(), last["max_drawdown"].to_numpy(),
                                               last["turnover"].to_numpy())) + ")")
        if name == "decision":
            figures = _figures(d.as_dict())
            metadata |= figures
            gate = CheckOutcome(PROMOTION_GATE, d.promoted, d.reason, figures)
            yield dg.MaterializeResult(asset_key=key, metadata=metadata, check_results=[
                check_result(gate, severity=dg.AssetCheckSeverity.WARN, asset_key=key)])
            continue
        if name == "champion":
            yield dg.MaterializeResult(asset_key=key, metadata=metadata | {"reason": d.reason})
            continue
        yield dg.MaterializeResult(asset_key=key, metadata=metadata)
