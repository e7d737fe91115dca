"""WHAT keeps its scale: no two components that enter its score pull against each other while moving together."""

import itertools

import numpy as np
import polars as pl

from emp_core.sensory import compute_features
from emp_core.sensory.what import HORIZONS, WEIGHTS
from tests.conftest import SHIPPED


def test_no_component_of_what_cancels_another_on_the_shipped_data():
    """Two components with opposite-sign weights and a correlation near 1 net out, and the dimension keeps a
    fraction of one factor (the stretch against the breakout did: correlation 0.96, 0.3 - 0.2 = 0.1)."""
    bars = pl.read_parquet(SHIPPED / "bars_daily.parquet")
    f = compute_features(bars, None).with_columns(
        pl.mean_horizontal([pl.col(f"what_trend_{h}") for h in HORIZONS]).alias("what_trend"))
    columns = {name: f"what_{name}" for name in WEIGHTS}
    assert set(columns.values()) <= set(f.columns)  # every weighted component is published
    d = f.drop_nulls(list(columns.values()))
    for (a, wa), (b, wb) in itertools.combinations(WEIGHTS.items(), 2):
        rho = np.corrcoef(d[columns[a]].to_numpy(), d[columns[b]].to_numpy())[0, 1]
        assert not (wa * wb < 0 and rho > 0.8), (a, b, rho)
    # The score carries its evidence: on bars with a clear trend it is not shrunk towards 0.
    strong = d.filter(pl.col("what_trend").abs() > 1.5)
    assert strong.height > 500
    assert np.median(np.abs(strong["what_score"].to_numpy())) > 0.5
