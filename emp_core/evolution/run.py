"""One evolution run on the stored data: the work behind the evolution assets.

Reads the daily bars and the stored sensory scores (``sensory.fused`` carries all
five scores and confidences), runs the walk-forward evolution over the whole
stored span and writes, each replaced per run and stamped with the run id:

- ``evolution.catalogue``: the seed genomes;
- ``evolution.experiment_log``: every evaluation (window, phase, generation, genes,
  objectives, lineage);
- ``evolution.population``: the final population of each window with its fitness;
- ``evolution.lineage``: every individual once: window, generation, parents, operator, species;
- ``evolution.fitness_runs``: per window, the chosen genome and its test metrics;
- ``evolution.champion``: the promoted genome, or no row when the gates refused.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from emp_core.errors import EmpError
from emp_core.evolution.fitness import FEATURE_COLUMNS, Universe, evaluate
from emp_core.evolution.genome import CATALOGUE, Genome
from emp_core.evolution.walkforward import WalkForwardResult, walk_forward, windows
from emp_core.store import DuckDBStore

log = logging.getLogger("emp.evolution")


@dataclass(frozen=True)
class EvolutionSettings:
    population: int = 40
    generations: int = 5
    seed: int = 0
    train_years: int = 3
    selection_years: int = 1
    test_years: int = 1
    commission: float = 0.001
    min_dsr: float = 0.95
    max_pbo: float = 0.2


@dataclass(frozen=True)
class EvolutionRun:
    result: WalkForwardResult
    tables: dict[str, pl.DataFrame]
    seconds: float


def load_universe(store: DuckDBStore, dataset: str = "bars_1d") -> Universe:
    counts = store.table_counts()
    if not counts.get(f"market.{dataset}") or not counts.get("sensory.fused"):
        raise EmpError(f"{store.path}: evolution needs market.{dataset} and sensory.fused; materialise them first")
    bars = store.read_bars(dataset)
    features = store.query(f"SELECT symbol, ts, {', '.join(FEATURE_COLUMNS)} FROM sensory.fused "
                           "WHERE dataset = $d ORDER BY symbol, ts", {"d": dataset})
    return Universe.from_frames(bars, features)


def _genome_rows(genomes: list[Genome], extra: list[dict]) -> pl.DataFrame:
    return pl.DataFrame([g.as_dict() | e for g, e in zip(genomes, extra, strict=True)], infer_schema_length=None)


def run_evolution(store: DuckDBStore, settings: EvolutionSettings, *, run_id: str,
                  evaluator=evaluate) -> EvolutionRun:
    """The walk-forward evolution on the stored data; ``evaluator`` (default in-process) scores genomes."""
    t0 = time.perf_counter()
    universe = load_universe(store)
    first = min(universe.ts[s][0] for s in universe.symbols)
    last = max(universe.ts[s][-1] for s in universe.symbols)
    spans = windows(first, last, train_years=settings.train_years, selection_years=settings.selection_years,
                    test_years=settings.test_years)
    result = walk_forward(universe, spans, size=settings.population, generations=settings.generations,
                          seed=settings.seed, min_dsr=settings.min_dsr, max_pbo=settings.max_pbo,
                          commission=settings.commission, evaluator=evaluator)
    stamp = pl.lit(run_id).alias("run_id")
    experiment = result.log.frame().with_columns(stamp, pl.col("parents").cast(pl.List(pl.Int64)))
    last_gen = experiment.filter(pl.col("phase") == "train").group_by("window_id").agg(pl.col("generation").max())
    population = experiment.filter(pl.col("phase") == "train").join(last_gen, on=["window_id", "generation"])
    runs = _genome_rows(result.chosen, [
        {"window_id": w.index, "train_start": str(w.train[0]), "test_start": str(w.test[0]),
         "test_end": str(w.test[1]), **{f"test_{k}": v for k, v in m.items()}}
        for w, m in zip(result.windows, result.test_metrics, strict=True)]).with_columns(stamp)
    d = result.decision
    champion = (_genome_rows([result.champion], [{"dsr": d.dsr, "pbo": d.pbo, "trials": d.trials,
                                                  "reason": d.reason}]).with_columns(stamp)
                if result.champion is not None else
                pl.DataFrame(schema={"name": pl.String, "reason": pl.String, "run_id": pl.String}))
    lineage = (experiment.filter(pl.col("phase") == "train")
               .unique(subset=["individual"], keep="first", maintain_order=True)
               .select("individual", "window_id", "generation", "parents", "operator", "species", "run_id"))
    tables = {
        "evolution.lineage": lineage,
        "evolution.catalogue": _genome_rows(list(CATALOGUE.values()), [{}] * len(CATALOGUE)).with_columns(stamp),
        "evolution.experiment_log": experiment,
        "evolution.population": population,
        "evolution.fitness_runs": runs,
        "evolution.champion": champion,
    }
    for name, frame in tables.items():
        store.overwrite_table(name, frame)
    seconds = time.perf_counter() - t0
    log.info("evolution: %d windows, %d evaluations in %.1f s; %s", len(spans), len(experiment), seconds, d.reason)
    return EvolutionRun(result=result, tables=tables, seconds=seconds)


def oos_equity(result: WalkForwardResult) -> np.ndarray:
    """The walk-forward out-of-sample track as an equity curve starting at 1."""
    return np.cumprod(1.0 + result.oos_returns)
