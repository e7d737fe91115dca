"""One evolution run on the stored data: the work behind the evolution assets.

Reads the daily bars and the stored sensory scores (``sensory.fused`` carries all
five scores and confidences), runs the walk-forward evolution over the whole
stored span and writes, each replaced per run and stamped with the run id:

- ``evolution.catalogue``: the seed genomes;
- ``evolution.experiment_log``: every evaluation of the run (window, phase, generation,
  genes in [0, 1], objectives, return moments, lineage);
- ``evolution.population``: the final population of each window with its fitness;
- ``evolution.lineage``: every individual once: window, generation, parents, operator, species;
- ``evolution.fitness_runs``: per window, the chosen genome, its selection and test metrics;

and, kept across runs:

- ``evolution.trials``: the trial registry (``registry``), appended idempotently;
- ``evolution.decisions``: one row per run: promoted or not, the reason and every figure
  of the three gates (N, effective N, V, T, skewness, kurtosis, DSR, OOS PSR, PBO);
- ``evolution.champion``: the last promoted genome with its decision. A run whose gates
  refuse leaves it as it was: no new champion, the decision says why.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from emp_core.clock import utcnow
from emp_core.errors import EmpError
from emp_core.evolution.fitness import FEATURE_COLUMNS, Universe, evaluate
from emp_core.evolution.genome import CATALOGUE, Genome
from emp_core.evolution.promotion import DEFAULT_GATES, Gates, decision_schema
from emp_core.evolution.registry import StoreRegistry, genome_hash
from emp_core.evolution.walkforward import WalkForwardResult, walk_forward, windows
from emp_core.market_data.quality import CheckOutcome
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
    min_dsr: float = DEFAULT_GATES.min_dsr
    min_oos_psr: float = DEFAULT_GATES.min_oos_psr
    max_pbo: float = DEFAULT_GATES.max_pbo


@dataclass(frozen=True)
class EvolutionRun:
    result: WalkForwardResult
    tables: dict[str, pl.DataFrame]
    seconds: float


def load_universe(store: DuckDBStore, dataset: str = "bars_1d") -> Universe:
    counts = store.table_counts()
    if not counts.get(f"market.{dataset}") or not counts.get("sensory.fused"):
        raise EmpError(f"{store.location}: evolution needs market.{dataset} and sensory.fused; materialise them first")
    bars = store.read_bars(dataset)
    features = store.query(f"SELECT symbol, ts, {', '.join(FEATURE_COLUMNS)} FROM sensory.fused "
                           "WHERE dataset = $d ORDER BY symbol, ts", {"d": dataset})
    return Universe.from_frames(bars, features)


def _genome_rows(genomes: list[Genome], extra: list[dict]) -> pl.DataFrame:
    return pl.DataFrame([g.as_dict() | e for g, e in zip(genomes, extra, strict=True)], infer_schema_length=None)


def run_evolution(store: DuckDBStore, settings: EvolutionSettings, *, run_id: str,
                  evaluator=evaluate, dataset: str = "bars_1d") -> EvolutionRun:
    """The walk-forward evolution on the stored data; ``evaluator`` (default in-process) scores genomes."""
    t0 = time.perf_counter()
    universe = load_universe(store, dataset)
    result = evolve_universe(universe, settings, run_id=run_id, evaluator=evaluator,
                             registry=StoreRegistry(store), dataset=dataset)
    tables = result_tables(result, run_id, dataset)
    for name in ("evolution.lineage", "evolution.catalogue", "evolution.experiment_log", "evolution.population",
                 "evolution.fitness_runs"):
        store.overwrite_table(name, tables[name])
    store.append_table("evolution.decisions", tables["evolution.decisions"])
    if result.champion is not None:
        store.overwrite_table("evolution.champion", tables["evolution.champion"])
    seconds = time.perf_counter() - t0
    log.info("evolution: %d windows, %d evaluations in %.1f s; %s", len(result.windows),
             tables["evolution.experiment_log"].height, seconds, result.decision.reason)
    return EvolutionRun(result=result, tables=tables, seconds=seconds)


def evolve_universe(universe: Universe, settings: EvolutionSettings, *, run_id: str, registry, dataset: str,
                    evaluator=evaluate) -> WalkForwardResult:
    """The walk-forward over the whole universe with the settings' windows, gates and costs."""
    first = min(universe.ts[s][0] for s in universe.symbols)
    last = max(universe.ts[s][-1] for s in universe.symbols)
    spans = windows(first, last, train_years=settings.train_years, selection_years=settings.selection_years,
                    test_years=settings.test_years)
    if not spans:
        years = settings.train_years + settings.selection_years + settings.test_years
        raise EmpError(f"{dataset}: {str(first)[:10]} .. {str(last)[:10]} is too short for one walk-forward window "
                       f"({settings.train_years}y train + {settings.selection_years}y selection + "
                       f"{settings.test_years}y test = {years} years)")
    gates = Gates(min_dsr=settings.min_dsr, min_oos_psr=settings.min_oos_psr, max_pbo=settings.max_pbo)
    return walk_forward(universe, spans, size=settings.population, generations=settings.generations,
                        seed=settings.seed, gates=gates, commission=settings.commission, evaluator=evaluator,
                        registry=registry, dataset=dataset, run_id=run_id)


DECISION_SCHEMA = {"run_id": pl.String, "decided_at": pl.Datetime("us"), "dataset": pl.String, "genome": pl.String,
                   "genome_hash": pl.String, "trials_added": pl.Int64, **decision_schema()}


def result_tables(result: WalkForwardResult, run_id: str, dataset: str) -> dict[str, pl.DataFrame]:
    """The run's tables (see the module docstring), each stamped with ``run_id``."""
    stamp = pl.lit(run_id).alias("run_id")
    experiment = result.log.frame().with_columns(stamp, pl.col("parents").cast(pl.List(pl.Int64)))
    last_gen = experiment.filter(pl.col("phase") == "train").group_by("window_id").agg(pl.col("generation").max())
    population = experiment.filter(pl.col("phase") == "train").join(last_gen, on=["window_id", "generation"])
    runs = _genome_rows(result.chosen, [
        {"window_id": w.index, "train_start": str(w.train[0]), "test_start": str(w.test[0]),
         "test_end": str(w.test[1]), **{f"selection_{k}": sel[k] for k in _OBJECTIVES},
         **{f"test_{k}": v for k, v in m.items()}}
        for w, sel, m in zip(result.windows, result.selection_metrics, result.test_metrics, strict=True)
    ]).with_columns(stamp)
    d = result.decision
    champion_hash = genome_hash(result.chosen[-1])
    decision = pl.DataFrame([{"run_id": run_id, "decided_at": utcnow(), "dataset": dataset,
                              "genome": result.chosen[-1].name, "genome_hash": champion_hash,
                              "trials_added": result.trials_added, **d.as_dict()}], schema=DECISION_SCHEMA)
    champion = (_genome_rows([result.champion], [{"genome_hash": champion_hash}]).with_columns(stamp)
                .join(decision.drop("genome_hash"), on="run_id") if result.champion is not None else None)
    lineage = (experiment.filter(pl.col("phase") == "train")
               .unique(subset=["individual"], keep="first", maintain_order=True)
               .select("individual", "window_id", "generation", "parents", "operator", "species", "run_id"))
    tables = {
        "evolution.lineage": lineage,
        "evolution.catalogue": _genome_rows(list(CATALOGUE.values()), [{}] * len(CATALOGUE)).with_columns(stamp),
        "evolution.experiment_log": experiment,
        "evolution.population": population,
        "evolution.fitness_runs": runs,
        "evolution.decisions": decision,
    }
    if champion is not None:
        tables["evolution.champion"] = champion
    return tables


_OBJECTIVES = ("sharpe_lb", "max_drawdown", "turnover", "trades")


def oos_equity(result: WalkForwardResult) -> np.ndarray:
    """The walk-forward out-of-sample track as an equity curve starting at 1."""
    return np.cumprod(1.0 + result.oos_returns)


def _champion_decision(store: DuckDBStore) -> dict | str:
    """The stored decision that names the stored champion, or what is missing."""
    tables = set(store.tables())
    if "evolution.champion" not in tables or "evolution.decisions" not in tables:
        return "no champion has been stored"
    champion = store.query("SELECT genome_hash, run_id FROM evolution.champion")
    if champion.height != 1:
        return f"evolution.champion holds {champion.height} rows, not 1"
    genome, run = champion.row(0)
    decision = store.query("SELECT * FROM evolution.decisions WHERE run_id = $r AND genome_hash = $g",
                           {"r": run, "g": genome})
    if decision.height != 1:
        return f"no decision of run {run} names the champion {genome}"
    return decision.row(0, named=True)


def verify_champion(store: DuckDBStore, floor: Gates = DEFAULT_GATES) -> CheckOutcome:
    """What trades a champion may rely on it: the stored champion is named by a stored decision (read back
    from ``evolution.decisions``, not taken from the run that wrote it) that promoted it, whose figures meet
    both that run's thresholds and the platform's ``floor`` (gates loosened for research promote nothing
    tradable), and no later decision on the same dataset has refused since."""
    name = "promoted_by_gates"
    d = _champion_decision(store)
    if isinstance(d, str):
        return CheckOutcome(name, False, d)
    genome, run = d["genome_hash"], d["run_id"]
    figures = {k: d[k] for k in ("dsr", "oos_psr", "pbo", "n_trials", "n_effective")}
    if None in (d["dsr"], d["oos_psr"], d["pbo"]) or not d["promoted"]:
        return CheckOutcome(name, False, f"the decision of run {run} did not promote {genome}: {d['reason']}",
                            figures)
    short = [f"{label} {d[key]:.3f} {op} {limit}" for label, key, op, limit, ok in (
        ("deflated Sharpe", "dsr", "<", max(d["gate_min_dsr"], floor.min_dsr),
         d["dsr"] >= max(d["gate_min_dsr"], floor.min_dsr)),
        ("out-of-sample PSR", "oos_psr", "<", max(d["gate_min_oos_psr"], floor.min_oos_psr),
         d["oos_psr"] >= max(d["gate_min_oos_psr"], floor.min_oos_psr)),
        ("PBO", "pbo", ">", min(d["gate_max_pbo"], floor.max_pbo), d["pbo"] <= min(d["gate_max_pbo"], floor.max_pbo)),
    ) if not ok]
    if short:
        return CheckOutcome(name, False, f"champion {genome} of run {run} falls short of the platform's gates: "
                            + "; ".join(short), figures)
    if d.get("dataset") is None:  # written before decisions named their dataset: later refusals cannot be seen
        return CheckOutcome(name, False, f"the decision of run {run} predates dataset tracking; run the evolution "
                            "again to promote a champion this check can follow", figures)
    later = store.query("SELECT run_id, reason FROM evolution.decisions WHERE dataset = $d AND decided_at > $t "
                        "AND NOT promoted ORDER BY decided_at DESC LIMIT 1", {"d": d["dataset"], "t": d["decided_at"]})
    if later.height:
        return CheckOutcome(name, False, f"champion {genome} of run {run} was refused since, by run "
                            f"{later['run_id'].item()}: {later['reason'].item()}", figures)
    return CheckOutcome(name, True, f"champion {genome} promoted by run {run}: {d['reason']}", figures)
