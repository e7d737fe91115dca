"""WHAT keeps its scale: no two components that enter its score pull against each other while moving together."""

import itertools

import numpy as np
import polars as pl

from emp_core.sensory import compute_features
from emp_core.sensory.what import HORIZONS, WEIGHTS
from tests.support import SHIPPED


def test_no_component_of_what_cancels_another_on_the_shipped_data():
    """Two components with opposite-sign weights and a correlation near 1 net out, and the dimension keeps a
    fraction of one factor (the stretch against the breakout did: correlation 0.96, 0.3 - 0.2 = 0.1)."""
    bars = pl.read_parquet(SHIPPED / "bars_daily.parquet")
    f = compute_features(bars, None).with_columns(
        pl.mean_horizontal([pl.col(f"what_trend_{h}") for h in HORIZONS]).alias("what_trend"))
    columns = {name: f"what_{name}" for name in WEIGHTS}
    assert set(columns.values()) <= set(f.columns)  # every weighted component is published
    d = f.drop_nulls(list(columns.values()))
    # No pair cancels: the spread of two weighted components together is at least that of the larger alone
    # The stretch from the 20-bar mean, weighted against the trend, failed this: 0.113 against 0.175.
    for (a, wa), (b, wb) in itertools.combinations(WEIGHTS.items(), 2):
        x, y = wa * d[columns[a]].to_numpy(), wb * d[columns[b]].to_numpy()
        assert np.var(x + y) >= max(np.var(x), np.var(y)), (a, b)
    # The score carries its evidence: on bars with a clear trend it is not shrunk towards 0.
    strong = d.filter(pl.col("what_trend").abs() > 1.5)
    assert strong.height > 500
    assert np.median(np.abs(strong["what_score"].to_numpy())) > 0.5
