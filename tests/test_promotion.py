"""What luck gives a set of trials (the DSR's SR0 and N_eff), and the trial registry that counts them."""

import numpy as np
import polars as pl
import pytest

from emp_core.errors import EmpError
from emp_core.evolution.genome import GENE_NAMES
from emp_core.evolution.overfitting import expected_max_sharpe
from emp_core.evolution.registry import SCHEMA, MemoryRegistry, StoreRegistry
from emp_core.evolution.snooping import effective_trials, null_maximum, stationary_bootstrap_indices
from emp_core.store import DuckDBStore


def test_the_bootstrap_maximum_of_independent_trials_matches_the_closed_form():
    """For independent Gaussian trials the closed form is right (a simulation checks it in test_overfitting):
    the bootstrap must agree, and find about as many effective trials as there are."""
    rng = np.random.default_rng(1)
    bars, trials = 1500, 200
    r = rng.normal(0.0003, 0.01, (bars, trials))
    luck = null_maximum(r, replicates=300, block=1)
    assert luck.variance == pytest.approx(1 / bars, rel=0.1)
    assert luck.sr0 == pytest.approx(expected_max_sharpe(1 / bars, trials), rel=0.08)
    assert trials / 3 < luck.n_effective < trials * 3


def test_copies_of_one_strategy_are_one_trial_and_groups_count_once_each():
    rng = np.random.default_rng(2)
    bars = 1200
    one = rng.normal(0, 0.01, (bars, 1))
    copies = one + rng.normal(0, 1e-5, (bars, 300))
    assert null_maximum(copies, replicates=200).n_effective < 2.0
    groups = rng.normal(0, 0.01, (bars, 10))
    near_copies = np.repeat(groups, 30, axis=1) + rng.normal(0, 1e-4, (bars, 300))
    grouped = null_maximum(near_copies, replicates=300)
    independent = null_maximum(rng.normal(0, 0.01, (bars, 300)), replicates=300)
    assert 4 < grouped.n_effective < 25 < independent.n_effective
    assert grouped.sr0 < independent.sr0


def test_a_sample_of_the_trials_speaks_for_all_of_them_and_errs_high():
    """SR0 from 100 of 1,000 trials, scaled up, against SR0 of all 1,000: about equal when the trials are
    independent, and never lower when they come in groups of near-copies (the scaling is an upper bound)."""
    rng = np.random.default_rng(3)
    independent = rng.normal(0, 0.01, (1000, 1000))
    whole = null_maximum(independent, replicates=150, seed=5)
    sampled = null_maximum(independent[:, :100], total_trials=1000, replicates=150, seed=5)
    assert sampled.n_resampled == 100 and sampled.sr0 == pytest.approx(whole.sr0, rel=0.08)
    groups = np.repeat(rng.normal(0, 0.01, (1000, 50)), 20, axis=1) + rng.normal(0, 0.002, (1000, 1000))
    order = rng.permutation(1000)
    whole = null_maximum(groups, replicates=150, seed=5)
    sampled = null_maximum(groups[:, order[:100]], total_trials=1000, replicates=150, seed=5)
    assert sampled.sr0 >= whole.sr0


def test_the_effective_number_inverts_the_closed_form():
    for n in (2, 10, 1000, 10**6):
        assert effective_trials(expected_max_sharpe(0.001, n), 0.001) == pytest.approx(n, rel=1e-6)
    assert effective_trials(0.0, 0.001) == 1.0


def test_stationary_bootstrap_blocks_have_the_stated_mean_length():
    rng = np.random.default_rng(4)
    idx = stationary_bootstrap_indices(200_000, 10, rng)
    assert idx.min() >= 0 and idx.max() < 200_000
    starts = np.flatnonzero(np.diff(idx) != 1) + 1  # a wrap-around inside a block is rare enough to ignore
    assert np.diff(np.concatenate([[0], starts])).mean() == pytest.approx(10, rel=0.05)


def test_bad_trial_matrices_are_refused():
    with pytest.raises(ValueError, match="constant"):
        null_maximum(np.column_stack([np.ones(50), np.arange(50.0)]))
    with pytest.raises(ValueError, match="finite"):
        null_maximum(np.array([[0.1, np.nan], [0.2, 0.1], [0.0, 0.3]]))
    with pytest.raises(ValueError, match="shape"):
        null_maximum(np.zeros((2, 3)))


def rows(keys: list[str], dataset: str = "d", config: str = "c") -> pl.DataFrame:
    base = {c: None for c in SCHEMA if c != "recorded_at"}
    return pl.DataFrame([base | {"dataset": dataset, "dataset_version": "v", "config_hash": config, "run_id": "r",
                                 "window_id": 0, "phase": "train", "genome_hash": k, "costs": "{}"}
                         for k in keys], schema={c: t for c, t in SCHEMA.items() if c != "recorded_at"})


@pytest.mark.parametrize("kind", ["memory", "duckdb"])
def test_the_registry_is_idempotent_and_persistent(kind, tmp_path):
    make = MemoryRegistry if kind == "memory" else (lambda: StoreRegistry(DuckDBStore(tmp_path / "emp.duckdb")))
    registry = make()
    assert registry.record(rows(["a", "b", "b"])) == 2  # a duplicate key in one batch is one row
    assert registry.record(rows(["a", "b"])) == 0
    assert registry.record(rows(["a"], config="other")) == 1  # another configuration's evaluation
    assert registry.record(rows(["z"], dataset="e")) == 1
    if kind == "duckdb":
        registry = make()  # a new process reads what the last one wrote
    frame = registry.trials("d")
    assert frame.height == 3 and set(frame["genome_hash"]) == {"a", "b"}
    assert registry.trials("e").height == 1
    with pytest.raises(ValueError, match="lack"):
        registry.record(rows(["q"]).drop("genome_hash"))


# -- the decision, gate by gate, on returns we choose (a stand-in evaluator; the real one is tested elsewhere) --

def genomes(n: int, seed: int):
    from emp_core.evolution.genome import Genome

    rng = np.random.default_rng(seed)
    return [Genome.from_vector(rng.random(12), name=f"x{i}") for i in range(n)]


class Returns:
    """An evaluator that gives each genome the per-bar return series it was assigned."""

    def __init__(self, by_genome: dict):
        self.by_genome = by_genome

    def __call__(self, chosen, universe, start, end, **costs):
        from emp_core.evolution.fitness import Evaluation
        from emp_core.evolution.registry import genome_hash

        r = np.column_stack([self.by_genome[genome_hash(g)] for g in chosen])
        r = np.vstack([np.zeros((1, r.shape[1])), r])
        return Evaluation(objectives=np.zeros((r.shape[1], 3)), returns=r,
                          ts=np.arange(r.shape[0]).astype("datetime64[D]"), trades=np.full(r.shape[1], 50))


def decision(champion_sr: float, track_sr: float, search: str, trials: int = 300, seed: int = 0):
    from emp_core.evolution.fitness import Universe
    from emp_core.evolution.promotion import Evidence, decide
    from emp_core.evolution.registry import genome_hash

    rng = np.random.default_rng(seed)
    bars = 2000
    pool = genomes(trials, seed)
    series = {genome_hash(g): rng.normal(0, 0.01, bars) for g in pool}
    champion = pool[0]
    series[genome_hash(champion)] = rng.normal(champion_sr * 0.01, 0.01, bars)
    window = pool[:40] if search == "dominated" else pool[1:41]  # "noise": a search that found nothing
    if search == "dominated":  # the champion beats every other configuration of its window on every block
        for g in window[1:]:
            series[genome_hash(g)] = rng.normal(-0.003, 0.01, bars)
    registry = MemoryRegistry()
    registry.record(rows([genome_hash(g) for g in pool]).with_columns(
        **{k: pl.Series([float(getattr(g, k)) for g in pool]) for k in GENE_NAMES},
        long_only=pl.Series([False] * trials)))
    ts = np.arange(bars).astype("datetime64[D]")
    universe = Universe(("X",), {"X": ts}, {}, {}, 252.0)
    return decide(Evidence(universe=universe, evidence_end=ts[-1] + 1, champion=champion,
                           track=rng.normal(track_sr * 0.01, 0.01, 1500), window_genomes=window,
                           registry_trials=registry.trials("d"), costs={}, evaluator=Returns(series)))


@pytest.mark.parametrize(("champion_sr", "track_sr", "search", "fails"), [
    (0.25, 0.15, "dominated", set()),
    (0.04, 0.15, "dominated", {"deflated Sharpe"}),  # good enough alone, not as the best of 300 trials
    (0.25, 0.0, "dominated", {"out-of-sample PSR"}),
    (0.25, 0.15, "noise", {"probability of backtest overfitting"}),
])
def test_each_gate_refuses_on_its_own(champion_sr, track_sr, search, fails):
    d = decision(champion_sr, track_sr, search)
    failed = {name for name in ("deflated Sharpe", "out-of-sample PSR", "probability of backtest overfitting")
              if not d.promoted and name in d.reason}
    assert failed == fails, d.reason
    assert d.promoted == (not fails)
    assert d.n_trials == 300 and d.n_resampled == 300 and d.n_idle == 0
    assert d.dsr is not None and d.oos_psr is not None and d.pbo is not None  # every figure, pass or fail


def test_the_reality_check_p_value_is_the_share_of_luckier_maxima():
    rng = np.random.default_rng(9)
    luck = null_maximum(rng.normal(0, 0.01, (800, 50)), replicates=400)
    assert luck.reality_check(luck.maxima.max() + 1e-9) == 0.0
    assert luck.reality_check(-1.0) == 1.0
    assert luck.reality_check(float(np.median(luck.maxima))) == pytest.approx(0.5, abs=0.01)
    # Under the null the best of 50 independent trials is "significant" at 5% about 5% of the time.
    hits = [null_maximum(x, replicates=200, seed=k).reality_check(float((x.mean(0) / x.std(0, ddof=1)).max())) < 0.05
            for k, x in enumerate(rng.normal(0, 0.01, (40, 800, 50)))]
    assert np.mean(hits) <= 0.15


def test_an_old_decisions_table_is_widened_not_rounded(tmp_path):
    """A table first written by a refusal with no figures typed them INTEGER: a later promotion's figures
    must land as they are (rounded, a DSR of 0.6 would read 1 and pass any gate)."""
    from emp_core.evolution.run import DECISION_SCHEMA

    store = DuckDBStore(tmp_path / "emp.duckdb")
    store.append_table("evolution.decisions", pl.DataFrame({"run_id": ["old"], "dsr": [None], "pbo": [None]}))
    row = {c: None for c in DECISION_SCHEMA} | {"run_id": "new", "dsr": 0.6, "pbo": 0.45, "promoted": True}
    store.append_table("evolution.decisions", pl.DataFrame([row], schema=DECISION_SCHEMA))
    back = store.query("SELECT dsr, pbo FROM evolution.decisions WHERE run_id = 'new'").row(0)
    assert back == (0.6, 0.45)
    with pytest.raises(EmpError, match="migrate the table first"):
        store.append_table("evolution.decisions", pl.DataFrame({"run_id": [1]}))


def test_the_reality_check_of_a_sample_speaks_for_every_trial():
    rng = np.random.default_rng(10)
    r = rng.normal(0, 0.01, (800, 100))
    sampled = null_maximum(r, replicates=300, seed=1)
    scaled = null_maximum(r, total_trials=1000, replicates=300, seed=1)
    sharpe = float(np.quantile(sampled.maxima, 0.97))  # p = 0.03 against the 100 resampled trials
    assert sampled.reality_check(sharpe) == pytest.approx(0.03, abs=0.01)
    assert scaled.reality_check(sharpe) == pytest.approx(1 - 0.97**10, abs=0.05)  # against 1,000: no longer rare
