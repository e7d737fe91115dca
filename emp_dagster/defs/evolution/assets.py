"""Evolution as assets: catalogue, experiment log, populations, fitness runs and the gated champion."""

from typing import Any

import dagster as dg
import numpy as np

from emp_core.errors import EmpError
from emp_core.evolution import run as evo
from emp_core.evolution.fitness import evaluate
from emp_core.evolution.plots import line_chart, scatter
from emp_core.evolution.spark import spark_evaluator
from emp_dagster.defs.market_data.assets import BAR_KEYS
from emp_dagster.defs.market_data.resources import EmbeddedStoreResource
from emp_dagster.defs.sensory.assets import KEYS as SENSORY_KEYS

GROUP = "evolution"
KEYS = {name: dg.AssetKey(["duckdb", "evolution", name])
        for name in ("catalogue", "experiment_log", "lineage", "population", "fitness_runs", "champion")}
PROMOTION_GATE = "promotion_gate"
_INPUTS = [BAR_KEYS["bars_1d"], SENSORY_KEYS["fused"]]
DEPS = {
    "catalogue": [],
    "experiment_log": [*_INPUTS, KEYS["catalogue"]],
    "lineage": [KEYS["experiment_log"]],
    "population": [KEYS["experiment_log"]],
    "fitness_runs": [KEYS["experiment_log"]],
    "champion": [KEYS["fitness_runs"], KEYS["population"]],
}
DESCRIPTIONS = {
    "catalogue": "Seed genomes (trend, mean reversion, carry/macro, volatility breakout, liquidity-aware).",
    "experiment_log": "Every evaluation of every individual (window, phase, generation, genes, objectives, "
                      "parents, operator, species): the number of trials behind the champion.",
    "lineage": "Every individual once: its window, generation, parents' ids, the operator that made it "
               "(seed, random, sbx+polynomial, polynomial) and its species (nearest catalogue seed).",
    "population": "The final population of each walk-forward window, with its NSGA-II objectives.",
    "fitness_runs": "Per walk-forward window, the genome chosen on the selection span and its test-span metrics.",
    "champion": "The genome promoted by the gates (deflated Sharpe, PBO); no row when nothing passed.",
}


class EvolutionConfig(dg.Config):
    engine: str = "in_process"  # or "spark": fitness on the pyspark resource's executors, identical results
    population: int = evo.EvolutionSettings.population
    generations: int = evo.EvolutionSettings.generations
    seed: int = evo.EvolutionSettings.seed
    train_years: int = evo.EvolutionSettings.train_years
    selection_years: int = evo.EvolutionSettings.selection_years
    test_years: int = evo.EvolutionSettings.test_years
    commission: float = evo.EvolutionSettings.commission
    min_dsr: float = evo.EvolutionSettings.min_dsr
    max_pbo: float = evo.EvolutionSettings.max_pbo


@dg.multi_asset(
    name="evolution",
    specs=[dg.AssetSpec(key, deps=DEPS[name], group_name=GROUP, kinds={"duckdb", "deap"},
                        description=DESCRIPTIONS[name]) for name, key in KEYS.items()],
    check_specs=[dg.AssetCheckSpec(PROMOTION_GATE, asset=KEYS["champion"], blocking=True,
                                   description="deflated Sharpe >= min_dsr and PBO <= max_pbo (defaults 0.95, 0.2); "
                                               "otherwise no champion, and the reason")],
)
def evolution(context: dg.AssetExecutionContext, config: EvolutionConfig, store: EmbeddedStoreResource,
              pyspark: dg.ResourceParam[Any]):
    settings = config.model_dump()
    engine = settings.pop("engine")
    if engine not in ("in_process", "spark"):
        raise EmpError(f"evolution engine {engine!r}: choose in_process or spark")
    evaluator = spark_evaluator(pyspark.spark_session) if engine == "spark" else evaluate
    run = evo.run_evolution(store.store(), evo.EvolutionSettings(**settings), run_id=context.run_id,
                            evaluator=evaluator)
    result, d = run.result, run.result.decision
    for name, key in KEYS.items():
        frame = run.tables[f"evolution.{name}"]
        metadata = {"dagster/row_count": frame.height, "table": f"evolution.{name}"}
        if name == "experiment_log":
            metadata |= {"trials": d.trials, "windows": len(result.windows), "seconds": round(run.seconds, 2)}
        if name == "fitness_runs":
            metadata["oos_equity"] = dg.MetadataValue.md(
                f"![walk-forward out-of-sample equity]({line_chart(evo.oos_equity(result), 'OOS equity')})")
            metadata["runs"] = dg.MetadataValue.md(frame.select(
                "window_id", "name", "test_start", "test_sharpe_lb", "test_max_drawdown", "test_trades")
                .to_pandas().to_markdown(index=False))
        if name == "population":
            last = frame.filter(frame["window_id"] == frame["window_id"].max())
            metadata["pareto_front"] = dg.MetadataValue.md(
                "![Pareto front]("
                + scatter(last["max_drawdown"].to_numpy(), last["sharpe_lb"].to_numpy(),
                          "last window: Sharpe lower bound vs max drawdown",
                          highlight=_front_mask(last["sharpe_lb"].to_numpy(), last["max_drawdown"].to_numpy(),
                                                last["turnover"].to_numpy())) + ")")
        if name == "champion":
            metadata |= {"promoted": d.promoted, "reason": d.reason}
            yield dg.MaterializeResult(asset_key=key, metadata=metadata, check_results=[dg.AssetCheckResult(
                check_name=PROMOTION_GATE, asset_key=key, passed=d.promoted, description=d.reason,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"dsr": d.dsr, "pbo": d.pbo, "trials": d.trials, "min_dsr": config.min_dsr,
                          "max_pbo": config.max_pbo})])
            continue
        yield dg.MaterializeResult(asset_key=key, metadata=metadata)


def _front_mask(sharpe: np.ndarray, drawdown: np.ndarray, turnover: np.ndarray) -> np.ndarray:
    """Non-dominated points: higher Sharpe lower bound, higher (less negative) drawdown, lower turnover."""
    pts = np.column_stack([sharpe, drawdown, -turnover])
    better_eq = (pts[None, :, :] >= pts[:, None, :]).all(axis=2)
    strictly = (pts[None, :, :] > pts[:, None, :]).any(axis=2)
    dominated = (better_eq & strictly).any(axis=1)
    return ~dominated


evolution_job = dg.define_asset_job("evolution_weekly", selection=dg.AssetSelection.assets(*KEYS.values()),
                                    description="Walk-forward evolution over the stored history, champion gated.")
weekly_evolution = dg.ScheduleDefinition(
    job=evolution_job, cron_schedule="0 8 * * 0", execution_timezone="America/New_York",
    description="Sunday morning: evolve on the week's data; the promotion gate decides whether a champion is named.")
