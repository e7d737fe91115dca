"""Walk-forward evolution and champion promotion.

Windows roll forward by ``step`` years: **train** (evolve the population on it),
**selection** (re-score the final Pareto front there and keep the genome with the
best Sharpe lower bound), **test** (report the chosen genome there, once). A window
reads no bar at or after its test end: the universe is cut there before anything
is computed, and a test truncates the future to prove it.

The walk-forward out-of-sample track is the chosen genomes' test returns, window
after window. The **champion** is the last window's choice, promoted only when

- its deflated Sharpe ratio on that out-of-sample track is at least ``min_dsr``
  (N = every training evaluation in the experiment log, the Sharpe variance over
  those evaluations; ``overfitting.deflated_sharpe``), and
- the probability of backtest overfitting of the last window's final population,
  by CSCV over its returns from the first train start to the last test end, is at
  most ``max_pbo`` (``overfitting.probability_of_backtest_overfitting``).

Otherwise no champion is promoted and the decision says why. The deflated Sharpe
ratio is deliberately conservative: its luck benchmark grows with the spread of
the trials' Sharpe ratios, and that spread is wide when some genomes fade an edge
that others follow (a test shows a planted edge refused at 0.95 and promoted with
the DSR gate off).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emp_core.evolution.fitness import Universe, evaluate
from emp_core.evolution.genome import Genome
from emp_core.evolution.overfitting import deflated_sharpe, probability_of_backtest_overfitting
from emp_core.evolution.population import ExperimentLog, _Ids, _score, evolve, genome_of


@dataclass(frozen=True)
class Window:
    index: int
    train: tuple[np.datetime64, np.datetime64]
    selection: tuple[np.datetime64, np.datetime64]
    test: tuple[np.datetime64, np.datetime64]


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
class Decision:
    promoted: bool
    reason: str
    dsr: float | None
    pbo: float | None
    trials: int


@dataclass(frozen=True)
class WalkForwardResult:
    windows: list[Window]
    chosen: list[Genome]  # per window
    test_metrics: list[dict]  # per window, the chosen genome on its test span
    oos_returns: np.ndarray  # the out-of-sample track (test spans, concatenated)
    champion: Genome | None
    decision: Decision
    log: ExperimentLog = field(repr=False)


def _cut(universe: Universe, end: np.datetime64) -> Universe:
    keep = {s: universe.ts[s] < end for s in universe.symbols}
    return Universe(universe.symbols, {s: universe.ts[s][keep[s]] for s in universe.symbols},
                    {s: {k: v[keep[s]] for k, v in universe.ohlc[s].items()} for s in universe.symbols},
                    {s: {k: v[keep[s]] for k, v in universe.features[s].items()} for s in universe.symbols},
                    universe.bars_per_year)


def walk_forward(universe: Universe, spans: list[Window], *, size: int = 40, generations: int = 5, seed: int = 0,
                 min_dsr: float = 0.95, max_pbo: float = 0.2, pbo_blocks: int = 16, evaluator=evaluate,
                 **costs) -> WalkForwardResult:
    if not spans:
        raise ValueError("no walk-forward window fits in the data; shorten the windows or add history")
    log, ids = ExperimentLog(), _Ids()
    chosen, test_metrics, oos = [], [], []
    last_population = []
    for w in spans:
        visible = _cut(universe, w.test[1])
        evolved = evolve(visible, w.train, size=size, generations=generations, seed=seed + w.index, log=log,
                         window_id=w.index, ids=ids, evaluator=evaluator, **costs)
        _score(evolved.front, visible, w.selection, log, w.index, "selection", evaluator=evaluator, **costs)
        pick = max(evolved.front, key=lambda ind: ind.fitness.values[0])
        genome = genome_of(pick)
        test = evaluator([genome], visible, *w.test, **costs)
        log.add(pick, window=w.index, phase="test", metrics=test.metrics(0),
                sharpe_per_bar=float(_per_bar_sharpe(test.returns[1:, 0])))
        chosen.append(genome)
        test_metrics.append(test.metrics(0))
        oos.append(test.returns[1:, 0])
        last_population = evolved.population
    track = np.concatenate(oos)
    decision = _decide(universe, spans, last_population, track, log, min_dsr, max_pbo, pbo_blocks, evaluator,
                       costs)
    return WalkForwardResult(spans, chosen, test_metrics, track, chosen[-1] if decision.promoted else None,
                             decision, log)


def _per_bar_sharpe(r: np.ndarray) -> float:
    sd = r.std(ddof=1)
    return float(r.mean() / sd) if sd > 0 else 0.0


def _decide(universe, spans, population, track, log, min_dsr, max_pbo, blocks, evaluator, costs) -> Decision:
    trials = log.trials
    train_sharpes = np.array([r["sharpe_per_bar"] for r in log.rows if r["phase"] == "train"])
    try:
        dsr = deflated_sharpe(track, train_sharpes, trials=trials)
    except ValueError as exc:
        return Decision(False, f"no champion: the out-of-sample track has no usable Sharpe ratio ({exc})", None,
                        None, trials)
    span = (spans[0].train[0], spans[-1].test[1])
    returns = evaluator([genome_of(i) for i in population], _cut(universe, span[1]), *span, **costs).returns[1:]
    try:
        pbo = probability_of_backtest_overfitting(returns, blocks=blocks).pbo
    except ValueError as exc:
        return Decision(False, f"no champion: PBO could not be estimated ({exc})", dsr, None, trials)
    failed = []
    if dsr < min_dsr:
        failed.append(f"deflated Sharpe {dsr:.3f} < {min_dsr} after {trials} trials")
    if pbo > max_pbo:
        failed.append(f"probability of backtest overfitting {pbo:.3f} > {max_pbo}")
    if failed:
        return Decision(False, "no champion: " + "; ".join(failed), dsr, pbo, trials)
    return Decision(True, f"promoted: deflated Sharpe {dsr:.3f} >= {min_dsr} after {trials} trials, "
                          f"PBO {pbo:.3f} <= {max_pbo}", dsr, pbo, trials)
