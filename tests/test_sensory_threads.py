"""The features do not depend on the machine's cores: Polars' horizontal sums of three or more columns reduce in
parallel with a grouping that follows the thread pool, so the fused signal's last bits differed between a
1-thread and a 2-thread pool until the sums were written as fixed-order folds (emp_core.sensory.base
ordered_sum). The same bars, computed in processes with 1, 2 and 3 threads, must give the same bits."""

import os
import subprocess
import sys

import numpy as np
import polars as pl

SCRIPT = """
import sys
from datetime import datetime
from emp_core.market_data.sources import generate_bars
from emp_core.sensory.features import compute_features
bars = generate_bars(12, datetime(2014, 1, 1), datetime(2018, 1, 1), seed=11)
compute_features(bars, None).write_parquet(sys.argv[1])
"""


def test_features_are_bit_identical_whatever_the_thread_pool(tmp_path):
    script = tmp_path / "features.py"
    script.write_text(SCRIPT)
    frames = []
    for threads in (1, 2, 3):
        out = tmp_path / f"t{threads}.parquet"
        subprocess.run([sys.executable, str(script), str(out)], check=True,
                       env={**os.environ, "POLARS_MAX_THREADS": str(threads)})
        frames.append(pl.read_parquet(out))
    first = frames[0]
    for other in frames[1:]:
        assert other.columns == first.columns
        for col in first.columns:
            a, b = first[col], other[col]
            if a.dtype == pl.Float64:
                assert np.array_equal(a.to_numpy().view(np.int64), b.to_numpy().view(np.int64)), col
            else:
                assert a.equals(b), col
