"""What luck gives a set of trials (the DSR's SR0 and N_eff), and the trial registry that counts them."""

import numpy as np
import polars as pl
import pytest

from emp_core.evolution.overfitting import expected_max_sharpe
from emp_core.evolution.registry import SCHEMA, DuckDBRegistry, MemoryRegistry
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


def test_a_sample_of_the_trials_is_scaled_up_to_all_of_them():
    r = np.random.default_rng(3).normal(0, 0.01, (1000, 100))
    sampled = null_maximum(r, replicates=200, seed=5)
    scaled = null_maximum(r, total_trials=1000, replicates=200, seed=5)
    assert scaled.n_effective == pytest.approx(10 * sampled.n_effective)
    assert scaled.sr0 > sampled.sr0 and scaled.n_resampled == 100


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
                                 "window_id": 0, "phase": "train", "genome_hash": k, "trial_key": k, "costs": "{}"}
                         for k in keys], schema={c: t for c, t in SCHEMA.items() if c != "recorded_at"})


@pytest.mark.parametrize("kind", ["memory", "duckdb"])
def test_the_registry_is_idempotent_and_persistent(kind, tmp_path):
    make = MemoryRegistry if kind == "memory" else (lambda: DuckDBRegistry(DuckDBStore(tmp_path / "emp.duckdb")))
    registry = make()
    assert registry.record(rows(["a", "b", "b"])) == 2  # a duplicate key in one batch is one row
    assert registry.record(rows(["a", "b"])) == 0
    assert registry.record(rows(["a"], config="other")) == 1  # another configuration's evaluation
    assert registry.record(rows(["z"], dataset="e")) == 1
    if kind == "duckdb":
        registry = make()  # a new process reads what the last one wrote
    frame = registry.trials("d")
    assert frame.height == 3 and set(frame["trial_key"]) == {"a", "b"}
    assert registry.trials("e").height == 1
    with pytest.raises(ValueError, match="lack"):
        registry.record(rows(["q"]).drop("trial_key"))
