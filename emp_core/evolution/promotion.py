"""The promotion decision: three pieces of evidence, each with its figures, all needed for a champion.

The statistical design is stated in ``overfitting``'s docstring; this module gathers the
inputs and applies the thresholds. The champion is the genome chosen in the last
walk-forward window; its **evidence span** is every bar before that window's test
start (the history it could have been fitted to).

1. **DSR** (about the champion itself): its Sharpe ratio over the evidence span, deflated
   for the search. The trials are every distinct genome the registry holds for the
   dataset (all runs, all windows), re-evaluated over the evidence span (a seeded sample
   of at most ``bootstrap_trials`` when there are more); those that never trade there
   have no Sharpe ratio and are left out; ``SR0``, the best Sharpe ratio luck gives the
   rest, their null variance V and effective number N_eff come from a stationary
   bootstrap of their demeaned returns (``snooping``).
2. **Out-of-sample PSR** (about the walk-forward *procedure*): the track of every
   window's choice over its own test span, concatenated, tested against a Sharpe ratio
   of 0. Only its last year is the champion's own out-of-sample record.
3. **PBO** (about the procedure's last search): CSCV over the returns, on the evidence
   span, of the distinct genomes trained in the champion's window.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import polars as pl

from emp_core.evolution.fitness import NO_EVIDENCE
from emp_core.evolution.genome import Genome
from emp_core.evolution.overfitting import (
    expected_max_sharpe,
    probabilistic_sharpe,
    probability_of_backtest_overfitting,
)
from emp_core.evolution.registry import (
    digest,
    distinct_trials,
    genome_hash,
    genomes_of,
    return_moments,
)
from emp_core.evolution.snooping import FLAT, REPLICATES, null_maximum

BOOTSTRAP_TRIALS = 1000  # at most this many registry trials are re-evaluated and resampled


@dataclass(frozen=True)
class Gates:
    """Thresholds of the three gates, and the sizes of their estimators."""

    min_dsr: float = 0.95
    min_oos_psr: float = 0.95
    max_pbo: float = 0.2
    pbo_blocks: int = 16
    bootstrap_trials: int = BOOTSTRAP_TRIALS
    replicates: int = REPLICATES


DEFAULT_GATES = Gates()


@dataclass(frozen=True)
class Decision:
    """Whether the champion is promoted, why, and every figure behind it (None where not reached)."""

    promoted: bool
    reason: str
    gates: Gates = DEFAULT_GATES
    evidence_start: str | None = None
    evidence_end: str | None = None
    # 1. DSR of the champion over the evidence span
    dsr: float | None = None
    sharpe: float | None = None  # per bar
    sr0: float | None = None  # per bar
    n_trials: int = 0  # distinct genomes in the registry for this dataset, from every run
    n_resampled: int = 0  # the trials re-evaluated for the bootstrap (a sample when there are many)
    n_idle: int = 0  # of those, the ones with too few trades over the evidence span to be selected
    n_effective: float | None = None  # independent trials with the same expected best Sharpe ratio
    sharpe_variance: float | None = None  # V: null variance of one trial's per-bar Sharpe ratio
    # for reference, on the same trials: the paper's closed form (V their cross-sectional variance, N nominal),
    # and White's Reality Check p-value of the champion against the bootstrap's maxima
    dsr_closed_form: float | None = None
    reality_check_p: float | None = None
    n_bars: int = 0
    skew: float | None = None
    kurtosis: float | None = None
    # 2. the out-of-sample walk-forward track
    oos_psr: float | None = None
    oos_sharpe: float | None = None  # per bar
    oos_bars: int = 0
    # 3. PBO of the champion window's search
    pbo: float | None = None
    pbo_configs: int = 0
    pbo_splits: int = 0

    def as_dict(self) -> dict:
        d = asdict(self)
        d |= {f"gate_{k}": v for k, v in d.pop("gates").items()}
        return d


_POLARS = {"bool": pl.Boolean, "str": pl.String, "int": pl.Int64, "float": pl.Float64}


def decision_schema() -> dict[str, pl.DataType]:
    """The columns of ``Decision.as_dict()`` with their types, so a refusal with no figures (all None)
    and a promotion store alike."""
    out: dict[str, pl.DataType] = {}
    for f in fields(Decision):
        if f.name == "gates":
            out |= {f"gate_{g.name}": _POLARS[str(g.type)] for g in fields(Gates)}
        else:
            out[f.name] = _POLARS[str(f.type).split(" | ")[0]]
    return out


def figure(values: dict, key: str, spec: str = ".3f") -> str:
    """A decision figure for reading: formatted, or "n/a" when the gate was not reached."""
    value = values.get(key)
    return format(value, spec) if isinstance(value, int | float) else "n/a"


def _per_bar_sharpe(r: np.ndarray) -> float:
    return float(return_moments(np.asarray(r, dtype=float)[:, None])["sharpe_per_bar"][0])


def _sample(trials: pl.DataFrame, keep: str, size: int, seed: str) -> pl.DataFrame:
    """The ``keep`` trial first, then the others, at most ``size`` in all (a seeded sample when there
    are more, so a decision repeats)."""
    first, others = trials.filter(pl.col("genome_hash") == keep), trials.filter(pl.col("genome_hash") != keep)
    if others.height >= size:
        rng = np.random.default_rng(int(seed, 16) % 2**63)
        others = others[np.sort(rng.choice(others.height, size - 1, replace=False))]
    return pl.concat([first, others])


@dataclass(frozen=True)
class Evidence:
    """What the decision reads: the data, the champion, the walk-forward track, the trials."""

    universe: object  # cut at the evidence end: no bar at or after the champion's test start
    evidence_end: np.datetime64
    champion: Genome
    track: np.ndarray
    window_genomes: list[Genome]  # the distinct genomes trained in the champion's window
    registry_trials: pl.DataFrame  # every registry row for the dataset
    costs: dict
    evaluator: object


def decide(ev: Evidence, gates: Gates = DEFAULT_GATES) -> Decision:
    """Apply the three gates (see the module docstring) and say which failed, with every figure."""
    figures: dict = {"gates": gates}
    universe = ev.universe
    start = min(universe.ts[s][0] for s in universe.symbols if universe.ts[s].size)
    figures |= {"evidence_start": str(start), "evidence_end": str(ev.evidence_end)}
    costs = dict(ev.costs)

    def refuse(why: str) -> Decision:
        return Decision(False, f"no champion: {why}", **figures)

    # 2. out-of-sample track (independent of the registry: computed first, reported always)
    try:
        figures |= {"oos_psr": probabilistic_sharpe(ev.track, 0.0, serial=True),
                    "oos_sharpe": _per_bar_sharpe(ev.track), "oos_bars": int(ev.track.size)}
    except ValueError as exc:
        return refuse(f"the out-of-sample track has no usable Sharpe ratio ({exc})")

    # 1. DSR of the champion against the registry's trials
    # Every genome ever tried on the dataset, whatever the costs it was tried under, re-evaluated under these.
    trials = distinct_trials(ev.registry_trials)
    champion_key = genome_hash(ev.champion)
    if trials.filter(pl.col("genome_hash") == champion_key).is_empty():
        return refuse("the champion is not in the trial registry (record the run's trials first)")
    # Seeded by the trial set itself: the same trials give the same sample and resamples on any copy of the data.
    seed = digest("".join(sorted(trials["genome_hash"].to_list())).encode())
    sample = _sample(trials, champion_key, gates.bootstrap_trials, seed)
    genomes = genomes_of(sample)
    evaluation = ev.evaluator(genomes, universe, start, ev.evidence_end, **costs)
    returns = evaluation.returns[1:]
    # A genome with fewer than min_trades round trips has the floor fitness and could never be selected: it is
    # counted in N but lends no luck to the maximum (and a near-constant series has no Sharpe ratio to resample).
    tradeable = (evaluation.objectives[:, 0] != NO_EVIDENCE) & (returns.std(axis=0) > FLAT)
    figures |= {"n_trials": trials.height, "n_resampled": sample.height, "n_idle": int((~tradeable).sum())}
    champion_returns = returns[:, 0]  # the sample puts the champion first
    if not tradeable[0]:
        return refuse("the champion trades too little over the evidence span to have a Sharpe ratio")
    moments = return_moments(champion_returns[:, None])
    sharpe = float(moments["sharpe_per_bar"][0])
    # Trials that never trade have no Sharpe ratio to be lucky with: they are counted in N, not resampled.
    lucky = round(trials.height * tradeable.mean())  # the registry's trials, scaled by the sample's share
    luck = null_maximum(returns[:, tradeable], total_trials=lucky, replicates=gates.replicates,
                        seed=int(seed, 16) % 2**32)
    if tradeable.sum() > 1:  # a cross-sectional variance needs two trials
        cross_section = float(np.var(return_moments(returns[:, tradeable])["sharpe_per_bar"], ddof=1))
        figures |= {"dsr_closed_form": probabilistic_sharpe(
            champion_returns, expected_max_sharpe(cross_section, lucky), serial=True)}
    figures |= {"reality_check_p": luck.reality_check(sharpe)}
    figures |= {"dsr": probabilistic_sharpe(champion_returns, luck.sr0, serial=True), "sharpe": sharpe, "sr0": luck.sr0,
                "n_effective": luck.n_effective, "sharpe_variance": luck.variance,
                "n_bars": int(champion_returns.size), "skew": float(moments["ret_skew"][0]),
                "kurtosis": float(moments["ret_kurtosis"][0])}

    # 3. PBO of the champion window's search, over the evidence span
    search = ev.evaluator(ev.window_genomes, universe, start, ev.evidence_end, **costs).returns[1:]
    try:
        pbo = probability_of_backtest_overfitting(search, blocks=gates.pbo_blocks)
    except ValueError as exc:
        return refuse(f"PBO could not be estimated ({exc})")
    figures |= {"pbo": pbo.pbo, "pbo_configs": search.shape[1], "pbo_splits": pbo.splits}

    failed = []
    if figures["dsr"] < gates.min_dsr:
        failed.append(f"deflated Sharpe {figures['dsr']:.3f} < {gates.min_dsr} (SR {sharpe:.4f} vs SR0 "
                      f"{luck.sr0:.4f} per bar; {luck.n_effective:.0f} effective of {trials.height} trials)")
    if figures["oos_psr"] < gates.min_oos_psr:
        failed.append(f"out-of-sample PSR {figures['oos_psr']:.3f} < {gates.min_oos_psr}")
    if pbo.pbo > gates.max_pbo:
        failed.append(f"probability of backtest overfitting {pbo.pbo:.3f} > {gates.max_pbo}")
    if failed:
        return refuse("; ".join(failed))
    return Decision(True, f"promoted: deflated Sharpe {figures['dsr']:.3f} >= {gates.min_dsr} "
                          f"({luck.n_effective:.0f} effective of {trials.height} trials), out-of-sample PSR "
                          f"{figures['oos_psr']:.3f} >= {gates.min_oos_psr}, PBO {pbo.pbo:.3f} <= {gates.max_pbo}",
                    **figures)
