"""Compute a window of features from the store and write one table per dimension: the work behind the assets.

For each bar dataset the whole stored history up to the window's end is read,
features are computed (point in time, so the window's rows are exactly what a
computation on the full history gives) and the window's rows are written to
``sensory.why``, ``sensory.how``, ``sensory.what``, ``sensory.when``,
``sensory.anomaly`` and ``sensory.fused`` (delete the window, insert; one
transaction). Reading the history from the start keeps WHEN's expanding
estimates exact; at the shipped data's size it costs a fraction of a second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from emp_core.market_data.ingest import DATASETS
from emp_core.sensory.features import compute_features, dimension_columns
from emp_core.sensory.fusion import DIMENSIONS
from emp_core.sensory.why import MacroInputs
from emp_core.store import DuckDBStore

log = logging.getLogger("emp.sensory")

OUTPUTS = (*DIMENSIONS, "fused")
TABLES = {name: f"sensory.{name}" for name in OUTPUTS}
FUSED_COLUMNS = ("signal", "signal_confidence", *(f"{d}_{x}" for d in DIMENSIONS for x in ("score", "confidence")))
_TYPES = {"when_weekday": pl.Int8, "when_release_eve": pl.Boolean, "when_days_to_release": pl.Int64,
          "when_session": pl.String, "when_month_phase": pl.String, "anomaly_flag": pl.Boolean,
          "anomaly_explanation": pl.String}


def score_column(name: str) -> str:
    """The column holding a table's signed score: ``signal`` for the fused table."""
    return "signal" if name == "fused" else f"{name}_score"


def table_columns(name: str) -> tuple[str, ...]:
    """Columns of a feature table after (dataset, symbol, ts): daily and intraday layouts together,
    so one table holds both datasets (a column that does not apply is null)."""
    if name == "fused":
        return FUSED_COLUMNS
    daily, intraday = dimension_columns(False)[name], dimension_columns(True)[name]
    return tuple(dict.fromkeys([*daily, *intraday]))


@dataclass(frozen=True)
class DimensionSummary:
    rows: int
    defined: float  # share of rows whose score is defined
    mean_score: float | None
    mean_confidence: float | None
    flagged: int | None = None  # anomaly only


@dataclass(frozen=True)
class FeatureWindow:
    dataset: str
    start: datetime
    end: datetime
    history_rows: int
    summaries: dict[str, DimensionSummary]
    seconds: float


def load_macro(store: DuckDBStore) -> MacroInputs:
    """The macro tables from the store; a missing table is missing data (WHY's confidence drops), not an error."""
    present = set(store.tables())
    curve = store.query("SELECT * FROM macro.treasury_curve ORDER BY date") \
        if "macro.treasury_curve" in present else None
    series = store.query("SELECT * FROM macro.series ORDER BY series_id, period_start") \
        if "macro.series" in present else None
    return MacroInputs(curve=curve if curve is not None and curve.height else None,
                       series=series if series is not None and series.height else None)


def _summary(name: str, frame: pl.DataFrame) -> DimensionSummary:
    score = score_column(name)
    conf = "signal_confidence" if name == "fused" else f"{name}_confidence"
    stats = frame.select(
        pl.len().alias("rows"), pl.col(score).is_not_null().mean().alias("defined"),
        pl.col(score).mean().alias("mean_score"), pl.col(conf).mean().alias("mean_confidence"),
    ).row(0, named=True)
    flagged = int(frame.get_column("anomaly_flag").sum()) if name == "anomaly" else None
    return DimensionSummary(rows=stats["rows"], defined=float(stats["defined"] or 0.0),
                            mean_score=stats["mean_score"], mean_confidence=stats["mean_confidence"],
                            flagged=flagged)


def materialise_window(
    store: DuckDBStore,
    start: datetime,
    end: datetime,
    *,
    run_id: str,
    weights: Mapping[str, float] | None = None,
    datasets: Sequence[str] = tuple(DATASETS),
    compute: Callable[..., pl.DataFrame] | None = None,
) -> list[FeatureWindow]:
    """Compute and store the features of [start, end) for each dataset; one summary per dataset.
    ``compute``: a drop-in for ``compute_features`` (default), e.g. ``emp_core.sensory.spark.spark_compute``."""
    macro = load_macro(store)
    results = []
    for name in datasets:
        t0 = time.perf_counter()
        spec = DATASETS[name]
        history = store.read_bars(name, end=end)
        features = (compute or compute_features)(history, macro, weights=weights, intraday=spec.interval != "1d",
                                    calendar=spec.calendar, name=f"market.{name}")
        window = features.filter(pl.col("ts").is_between(start, end, closed="left"))
        tables = {TABLES[o]: _table(o, window, name, run_id) for o in OUTPUTS}
        store.replace_windows(tables, dataset=name, start=start, end=end)
        result = FeatureWindow(name, start, end, history.height,
                               {o: _summary(o, window) for o in OUTPUTS}, time.perf_counter() - t0)
        log.info("sensory %s [%s, %s): %d bars written from %d of history in %.2f s", name, start.date(),
                 end.date(), window.height, history.height, result.seconds)
        results.append(result)
    return results


def _table(name: str, window: pl.DataFrame, dataset: str, run_id: str) -> pl.DataFrame:
    cols = table_columns(name)
    present = [pl.col(c) for c in cols if c in window.columns]
    absent = [pl.lit(None, _TYPES.get(c, pl.Float64)).alias(c) for c in cols if c not in window.columns]
    return window.select(pl.lit(dataset).alias("dataset"), "symbol", "ts", *present, *absent,
                         pl.lit(run_id).alias("run_id")).select("dataset", "symbol", "ts", *cols, "run_id")
