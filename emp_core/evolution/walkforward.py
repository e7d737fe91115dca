"""Walk-forward evolution and champion promotion.

Windows roll forward by ``step`` years: **train** (evolve the population on it),
**selection** (re-score the final Pareto front there and keep the genome with the
best Sharpe lower bound), **test** (report the chosen genome there, once). A window
reads no bar at or after its test end: the universe is cut there before anything
is computed, and a test truncates the future (features included) to prove it.

Every evaluation is recorded in the trial registry (``registry``) before the
decision, so the trials of this run count with every earlier one on the dataset.
The **champion** is the last window's choice, promoted only when all three gates of
``promotion`` pass (deflated Sharpe of the champion against the registry's effective
number of trials, PSR of the out-of-sample walk-forward track, PBO of the champion
window's search); otherwise the decision says which failed, with every figure.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from emp_core.evolution.fitness import Universe, evaluate
from emp_core.evolution.genome import GENE_NAMES, Genome
from emp_core.evolution.population import ExperimentLog, _Ids, _score, evolve, genome_of
from emp_core.evolution.promotion import DEFAULT_GATES, Decision, Evidence, Gates, decide
from emp_core.evolution.registry import (
    MemoryRegistry,
    TrialRegistry,
    config_hash,
    costs_key,
    dataset_version,
    distinct_trials,
    genome_hash,
    genomes_of,
    return_moments,
)

log_ = logging.getLogger("emp.evolution")
# the costs a trial is run under (its identity in the registry); which engine computes them is not one of them
COST_DEFAULTS = {name: p.default for name, p in inspect.signature(evaluate).parameters.items()
                 if p.kind is p.KEYWORD_ONLY and name != "compiled"}


@dataclass(frozen=True)
class Window:
    index: int
    train: tuple[np.datetime64, np.datetime64]
    selection: tuple[np.datetime64, np.datetime64]
    test: tuple[np.datetime64, np.datetime64]

    def span(self, phase: str) -> tuple[np.datetime64, np.datetime64]:
        return {"train": self.train, "selection": self.selection, "test": self.test}[phase]


def windows(first: np.datetime64, last: np.datetime64, *, train_years: int = 3, selection_years: int = 1,
            test_years: int = 1, step_years: int = 1) -> list[Window]:
    """Consecutive, non-overlapping train / selection / test spans that end by ``last``."""
    year = np.timedelta64(365, "D") + np.timedelta64(6, "h")
    start = np.datetime64(first, "D")
    out = []
    while True:
        a = start + train_years * year
        b = a + selection_years * year
        c = b + test_years * year
        if c > np.datetime64(last, "D") + np.timedelta64(1, "D"):
            return out
        out.append(Window(len(out), (start, a), (a, b), (b, c)))
        start = start + step_years * year


@dataclass(frozen=True)
class WalkForwardResult:
    windows: list[Window]
    chosen: list[Genome]  # per window
    selection_metrics: list[dict]  # per window, the chosen genome on its selection span (what chose it)
    test_metrics: list[dict]  # per window, the chosen genome on its test span
    oos_returns: np.ndarray  # the out-of-sample track (test spans, concatenated)
    champion: Genome | None
    decision: Decision
    log: ExperimentLog = field(repr=False)
    trials_added: int = 0  # registry rows this run added (0 when the same run was recorded before)


def cut(universe: Universe, end: np.datetime64) -> Universe:
    """The universe without any bar at or after ``end``."""
    keep = {s: universe.ts[s] < end for s in universe.symbols}
    return Universe(universe.symbols, {s: universe.ts[s][keep[s]] for s in universe.symbols},
                    {s: {k: v[keep[s]] for k, v in universe.ohlc[s].items()} for s in universe.symbols},
                    {s: {k: v[keep[s]] for k, v in universe.features[s].items()} for s in universe.symbols},
                    universe.bars_per_year)


def walk_forward(universe: Universe, spans: list[Window], *, size: int = 40, generations: int = 5, seed: int = 0,
                 gates: Gates = DEFAULT_GATES, evaluator=evaluate, registry: TrialRegistry | None = None,
                 dataset: str = "universe", run_id: str = "", **costs) -> WalkForwardResult:
    """Evolve, select and test window by window; record every evaluation; decide on the champion.

    ``registry`` (default: a fresh in-memory one, so N is this run's) holds the trials of earlier
    runs on ``dataset``; ``costs`` (commission, slippage_bps, min_trades) go to every evaluation."""
    if not spans:
        raise ValueError("no walk-forward window fits in the data; shorten the windows or add history")
    t0 = time.perf_counter()
    costs = COST_DEFAULTS | costs  # spelled out, so a default and the same value given are one trial
    log, ids = ExperimentLog(), _Ids()
    chosen, selection_metrics, test_metrics, oos = [], [], [], []
    for w in spans:
        visible = cut(universe, w.test[1])
        evolved = evolve(visible, w.train, size=size, generations=generations, seed=seed + w.index, log=log,
                         window_id=w.index, ids=ids, evaluator=evaluator, **costs)
        _score(evolved.front, visible, w.selection, log, w.index, "selection", evaluator=evaluator, **costs)
        pick = max(evolved.front, key=lambda ind: ind.fitness.values[0])
        at = next(i for i, ind in enumerate(evolved.front) if ind is pick)
        selection_metrics.append(dict(log.rows[len(log.rows) - len(evolved.front) + at]))
        genome = genome_of(pick)
        test = evaluator([genome], visible, *w.test, **costs)
        moments = return_moments(test.returns[1:])
        log.add(pick, window=w.index, phase="test", metrics=test.metrics(0),
                moments={k: v[0].item() for k, v in moments.items()})
        chosen.append(genome)
        test_metrics.append(test.metrics(0))
        log_.info("window %d/%d (train %s .. %s): %d evaluations (%d so far), chosen %s (selection Sharpe LB "
                  "%.2f), test Sharpe LB %.2f; %.1fs elapsed", w.index + 1, len(spans), str(w.train[0])[:10],
                  str(w.train[1])[:10], sum(1 for r in log.rows if r["window_id"] == w.index), len(log.rows),
                  genome.name, selection_metrics[-1]["sharpe_lb"], test.metrics(0)["sharpe_lb"],
                  time.perf_counter() - t0)
        oos.append(test.returns[1:, 0])
    registry = registry if registry is not None else MemoryRegistry()
    log_.info("recording %d evaluations in the trial registry and deciding on the champion", len(log.rows))
    version = dataset_version(universe)
    settings = {"size": size, "generations": generations, "seed": seed, "spans": [str(w) for w in spans],
                "costs": costs_key(costs)}
    rows = trial_rows(log, spans, dataset=dataset, version=version, config=config_hash(settings), run_id=run_id,
                      costs=costs)
    added = registry.record(rows)
    last = spans[-1].index
    searched = distinct_trials(rows.filter((pl.col("window_id") == last) & (pl.col("phase") == "train")))
    track = np.concatenate(oos)
    evidence_end = spans[-1].test[0]
    decision = decide(Evidence(universe=cut(universe, evidence_end), evidence_end=evidence_end, champion=chosen[-1],
                               track=track, window_genomes=genomes_of(searched),
                               registry_trials=registry.trials(dataset), costs=costs, evaluator=evaluator),
                      gates)
    return WalkForwardResult(spans, chosen, selection_metrics, test_metrics, track,
                             chosen[-1] if decision.promoted else None, decision, log, added)


def _decoded(row: dict) -> Genome:
    return Genome.from_vector([row[k] for k in GENE_NAMES], name=f"g{row['individual']}")


def trial_rows(log: ExperimentLog, spans: list[Window], *, dataset: str, version: str, config: str, run_id: str,
               costs: dict) -> pl.DataFrame:
    """The run's evaluations as trial-registry rows (genes decoded, as evaluated)."""
    rows = []
    by_index = {w.index: w for w in spans}
    for r in log.rows:
        g = _decoded(r)
        h = genome_hash(g)
        span = by_index[r["window_id"]].span(r["phase"])
        rows.append({"dataset": dataset, "dataset_version": version, "config_hash": config, "run_id": run_id,
                     "window_id": r["window_id"], "phase": r["phase"],
                     "span_start": _py(span[0]), "span_end": _py(span[1]),
                     "genome_hash": h, "costs": costs_key(costs),
                     **{k: float(getattr(g, k)) for k in GENE_NAMES}, "long_only": g.long_only,
                     **{k: r[k] for k in ("sharpe_lb", "max_drawdown", "turnover", "trades", "n_bars", "ret_mean",
                                          "ret_std", "ret_skew", "ret_kurtosis", "sharpe_per_bar")}})
    return pl.DataFrame(rows, infer_schema_length=None)


def _py(t: np.datetime64):
    return np.datetime64(t, "us").item()
