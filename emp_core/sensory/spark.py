"""The sensory cortex on Spark: the same Polars code per group of symbols on executors, identical results.

``compute_features_spark(session, bars, macro, ...)`` gives exactly (bit for bit, nulls and dtypes
included) what :func:`~emp_core.sensory.features.compute_features` gives on the whole frame:

- A symbol's rows depend only on its own bars and on the macro inputs (every window runs per symbol
  or is masked to the symbol's own bars; the per-date macro and calendar columns are a function of
  the bar's date alone). Two inputs of ``compute_features`` are read across symbols and are settled
  on the driver, on the whole frame, before the symbols are cut into groups:

  - ``intraday`` when not given (:func:`~emp_core.sensory.features.is_intraday`, the median bar
    spacing over every symbol): inferred here from the whole frame and passed to every group.
  - the ``complete`` flag (every price and volume of the *whole* frame present and positive), which
    picks the kernel of ANOMALY's trailing medians: nulls filled with 0, or the null-aware kernel.
    A group of complete symbols may take the first kernel where the whole frame took the second.
    Both return the exact order statistic of the same values: the only nulls of a complete symbol
    are its first bars', and every window that could see them is masked. The tests hold a universe
    with an incomplete symbol to the in-process result bit for bit, in groups of complete symbols.

- The driver validates and sorts the bars (``prepare``: the same errors as in-process), cuts the
  sorted symbols into contiguous groups balanced by row count, and ships each group as Arrow IPC;
  the macro inputs are broadcast once. Each executor runs ``compute_features`` on its group and
  returns Arrow IPC; the driver concatenates the groups in order, which is the in-process order
  (symbol, ts).

The master URL comes from ``EMP_SPARK_MASTER`` (default ``local[2]``), read by :func:`spark_master`.
Used by the sensory asset through ``materialise_window(..., compute=spark_compute(session))``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from itertools import pairwise

import numpy as np
import polars as pl

from emp_core.errors import EmpError
from emp_core.sensory.base import POS, RET
from emp_core.sensory.features import compute_features, is_intraday, prepare
from emp_core.sensory.fusion import check_weights
from emp_core.sensory.why import MacroInputs

MAX_GROUP_ROWS = 2_000_000  # bars per group (bounds an executor's memory: the output is ~60 columns wide)
IPC_COMPRESSION = "lz4"


def spark_master() -> str:
    """The Spark master URL: ``EMP_SPARK_MASTER`` (e.g. ``spark://host:7077``), default ``local[2]``."""
    from emp_core.config import settings

    return settings().spark_master


def session(config: Mapping[str, str] | None = None):
    """A SparkSession on :func:`spark_master`: the loopback settings of
    :func:`emp_core.evolution.spark.local_session` for a ``local`` master; for a cluster, the master and
    an app name, the rest from the cluster's ``spark-defaults.conf`` (executors must reach the driver)."""
    master = spark_master()
    if master.startswith("local"):
        from emp_core.evolution.spark import local_session

        return local_session({"spark.master": master, "spark.app.name": "emp-sensory", **(config or {})})
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master).appName("emp-sensory")
    for key, value in (config or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def default_groups(session, rows: int) -> int:
    """One group per executor core, more when a group would exceed ``MAX_GROUP_ROWS`` bars."""
    return max(int(session.sparkContext.defaultParallelism), math.ceil(rows / MAX_GROUP_ROWS), 1)


def plan_groups(sizes: np.ndarray, groups: int) -> list[tuple[int, int]]:
    """Cut consecutive symbols with ``sizes`` rows into at most ``groups`` non-empty runs of about equal
    row count: (first symbol, end symbol) index pairs, in order."""
    n = len(sizes)
    if groups < 1:
        raise ValueError(f"groups must be at least 1, not {groups}")
    k = min(groups, n)
    if k == 0:
        return []
    cum = np.cumsum(sizes)
    total = float(cum[-1])
    cuts, prev = [0], 0
    for j in range(1, k):
        target = total * j / k
        i = int(np.searchsorted(cum, target))  # symbol i holds the target row: cut before or after it
        cut = i if target - (cum[i - 1] if i else 0) < cum[i] - target else i + 1
        cut = min(max(cut, prev + 1), n - (k - j))  # every group keeps at least one symbol
        cuts.append(cut)
        prev = cut
    cuts.append(n)
    return list(pairwise(cuts))


def _to_ipc(frame: pl.DataFrame | None) -> bytes | None:
    if frame is None:
        return None
    buf = io.BytesIO()
    frame.write_ipc(buf, compression=IPC_COMPRESSION)
    return buf.getvalue()


def _from_ipc(data: bytes | None) -> pl.DataFrame | None:
    return None if data is None else pl.read_ipc(io.BytesIO(data))


def compute_group(bars_ipc: bytes, macro_ipc: tuple[bytes | None, bytes | None], kwargs: dict) -> bytes:
    """On an executor: ``compute_features`` on one group's bars (Arrow IPC in, Arrow IPC out). Its result does
    not depend on the executor's Polars thread pool (the horizontal sums are fixed-order folds, see
    ``emp_core.sensory.base.ordered_sum``; tests/test_sensory_threads.py)."""
    macro = MacroInputs(curve=_from_ipc(macro_ipc[0]), series=_from_ipc(macro_ipc[1]))
    return _to_ipc(compute_features(_from_ipc(bars_ipc), macro, **kwargs))


def compute_features_spark(
    session,
    bars: pl.DataFrame,
    macro: MacroInputs | None = None,
    *,
    groups: int | None = None,
    weights: Mapping[str, float] | None = None,
    intraday: bool | None = None,
    calendar: str | None = None,
    name: str = "bars",
) -> pl.DataFrame:
    """``compute_features(bars, macro, ...)`` with the symbols cut into ``groups`` (default
    :func:`default_groups`) computed on ``session``'s executors; the same frame, bit for bit."""
    weights = check_weights(weights)
    frame = prepare(bars, name)  # validated and sorted on the driver: the same errors as in-process
    if intraday is None:
        intraday = is_intraday(frame)  # read across symbols: settled on the whole frame
    kwargs = {"weights": weights, "intraday": intraday, "calendar": calendar, "name": name}
    frame = frame.drop(POS, RET)
    sizes = frame.get_column("symbol").rle().struct.field("len").to_numpy()
    plan = plan_groups(sizes, groups if groups is not None else default_groups(session, frame.height))
    if not plan:  # no bars: nothing to distribute
        return compute_features(frame, macro, **kwargs)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    payload = [(g, _to_ipc(frame.slice(int(starts[a]), int(starts[b] - starts[a]))))
               for g, (a, b) in enumerate(plan)]
    macro = macro or MacroInputs()
    sc = session.sparkContext
    shared = sc.broadcast((_to_ipc(macro.curve), _to_ipc(macro.series)))
    try:
        done = (sc.parallelize(payload, numSlices=len(payload))
                .map(lambda item: (item[0], compute_group(item[1], shared.value, kwargs)))
                .collect())
    finally:
        shared.unpersist()
    done = sorted(done, key=lambda x: x[0])
    if [g for g, _ in done] != list(range(len(plan))):
        raise EmpError(f"Spark returned groups {[g for g, _ in done]} for the {len(plan)} sent")
    return pl.concat([_from_ipc(data) for _, data in done], how="vertical", rechunk=True)


def spark_compute(session, *, groups: int | None = None) -> Callable[..., pl.DataFrame]:
    """A drop-in for ``compute_features`` that runs on ``session`` (for ``materialise_window(compute=...)``)."""

    def compute(bars: pl.DataFrame, macro: MacroInputs | None = None, **kwargs) -> pl.DataFrame:
        return compute_features_spark(session, bars, macro, groups=groups, **kwargs)

    return compute
