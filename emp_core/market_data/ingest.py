"""The ingest path: source -> validation -> quarantine -> idempotent store -> journal.

One call ingests one window (a run of consecutive partitions, or a whole file)
in a single store transaction. The journal gets one row per partition with the
row counts, the latest bar and its freshness lag; input rows whose timestamp
cannot be placed in any partition get a journal row with no partition key, so
the counts of a run always add up to its input.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl

from emp_core.calendars import expected_bars, interval_length
from emp_core.clock import utcnow
from emp_core.errors import EmpError
from emp_core.market_data.sources.base import BarSource
from emp_core.market_data.validate import validate_bars
from emp_core.store import DuckDBStore

log = logging.getLogger("emp.ingest")


@dataclass(frozen=True)
class BarDataset:
    """A bar table and the rules its data is held to."""

    name: str
    interval: str
    calendar: str
    max_gap_ratio: float  # share of expected bars that may be missing inside a symbol's span
    max_lag_bars: int  # expected bars the latest stored bar may trail the source's coverage by


DATASETS = {
    "bars_1d": BarDataset("bars_1d", "1d", "XNYS", max_gap_ratio=0.005, max_lag_bars=1),
    "bars_1h": BarDataset("bars_1h", "1h", "FX24X5", max_gap_ratio=0.02, max_lag_bars=3),
}


def dataset(name: str) -> BarDataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise EmpError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None


@dataclass(frozen=True)
class Partition:
    key: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class IngestReport:
    run_id: str
    dataset: str
    source: str
    input: str
    window: tuple[datetime, datetime] | None
    rows_in: int
    rows_stored: int
    rows_quarantined: int
    reasons: dict[str, int]
    journal: pl.DataFrame = field(repr=False)
    coverage: pl.DataFrame = field(repr=False)  # what the source said it covers (read once per ingest)
    seconds: float

    def summary(self) -> str:
        text = (f"{self.dataset} from {self.source}: {self.rows_in:,} rows in, {self.rows_stored:,} stored, "
                f"{self.rows_quarantined:,} quarantined ({self.seconds:.2f}s)")
        if self.reasons:
            top = sorted(self.reasons.items(), key=lambda kv: -kv[1])[:3]
            text += "; reasons: " + ", ".join(f"{r} x{n}" for r, n in top)
        return text


def new_run_id(prefix: str = "cli") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def ingest_bars(
    store: DuckDBStore,
    source: BarSource,
    dataset_name: str,
    *,
    run_id: str,
    partitions: Sequence[Partition] | None = None,
    symbols: Sequence[str] | None = None,
    now: datetime | None = None,
    naive_tz: str = "UTC",
) -> IngestReport:
    """Ingest ``source`` into the dataset's table; with ``partitions``, exactly that window.

    Idempotent: re-running the same window or file leaves the same rows (see
    :meth:`DuckDBStore.replace_bars`). ``now`` (default: the wall clock, UTC) is
    the ingest clock; bars after it are quarantined as future-dated.
    """
    spec = dataset(dataset_name)
    started = utcnow()
    now = now or started
    t0 = time.perf_counter()
    window = (partitions[0].start, partitions[-1].end) if partitions else None
    raw = source.read(spec.name, window[0] if window else None, window[1] if window else None, symbols)
    checked = validate_bars(raw, interval=spec.interval, now=now, naive_tz=naive_tz)
    coverage = source.coverage(spec.name, symbols)
    journal = _journal(spec, checked.valid, checked.quarantine, partitions, coverage, now)
    finished = utcnow()
    symbols_text = ",".join(symbols) if symbols else None
    journal = journal.with_columns(
        pl.lit(run_id).alias("run_id"), pl.lit(spec.name).alias("dataset"), pl.lit(source.name).alias("source"),
        pl.lit(source.describe()).alias("input"), pl.lit(symbols_text, dtype=pl.String).alias("symbols"),
        pl.lit(None, dtype=pl.String).alias("message"),
        pl.lit(started).alias("started_at"), pl.lit(finished).alias("finished_at"),
    )
    quarantine = checked.quarantine.with_columns(
        pl.lit(run_id).alias("run_id"), pl.lit(spec.name).alias("dataset"), pl.lit(source.name).alias("source"),
        pl.lit(source.describe()).alias("input"), pl.lit(now).alias("quarantined_at"),
    )
    store.replace_bars(spec.name, checked.valid, source=source.name, run_id=run_id, window=window,
                       quarantine=quarantine, journal=journal, selection=symbols)
    reasons = _reason_counts(checked.quarantine)
    report = IngestReport(
        run_id=run_id, dataset=spec.name, source=source.name, input=source.describe(), window=window,
        rows_in=checked.rows_in, rows_stored=checked.valid.height, rows_quarantined=checked.quarantine.height,
        reasons=reasons, journal=journal, coverage=coverage, seconds=time.perf_counter() - t0,
    )
    log.info(report.summary())
    return report


def journal_failure(
    store: DuckDBStore, *, run_id: str, dataset_name: str, source: BarSource | str,
    partitions: Sequence[Partition] | None, error: str,
) -> None:
    """Record a run that failed before anything was stored (the store transaction rolled back)."""
    now = utcnow()
    parts = list(partitions) if partitions else [None]
    name = source if isinstance(source, str) else source.name
    described = source if isinstance(source, str) else _safe_describe(source)
    rows = pl.DataFrame({
        "run_id": [run_id] * len(parts), "dataset": [dataset_name] * len(parts),
        "partition_key": [p.key if p else None for p in parts],
        "window_start": [p.start if p else None for p in parts],
        "window_end": [p.end if p else None for p in parts],
        "source": [name] * len(parts), "input": [described] * len(parts),
        "rows_in": [0] * len(parts), "rows_stored": [0] * len(parts), "rows_quarantined": [0] * len(parts),
        "status": ["failed"] * len(parts), "message": [error[:2000]] * len(parts),
        "started_at": [now] * len(parts), "finished_at": [now] * len(parts),
    }, schema_overrides={"window_start": pl.Datetime("us"), "window_end": pl.Datetime("us"),
                         "partition_key": pl.String})
    store.append("market.ingest_journal", rows)


def _safe_describe(source: BarSource) -> str:
    try:
        return source.describe()
    except Exception:
        return source.name


def _reason_counts(quarantine: pl.DataFrame) -> dict[str, int]:
    if quarantine.height == 0:
        return {}
    counts = quarantine.select(pl.col("reason").str.split("; ").explode().value_counts(sort=True)).unnest("reason")
    return dict(zip(counts.get_column("reason").to_list(), counts.get_column("count").to_list(), strict=True))


def _journal(
    spec: BarDataset,
    valid: pl.DataFrame,
    quarantine: pl.DataFrame,
    partitions: Sequence[Partition] | None,
    coverage: pl.DataFrame,
    now: datetime,
) -> pl.DataFrame:
    """One row per partition (or one for the whole input) with counts, latest bar and freshness lag."""
    if partitions:
        bounds = pl.DataFrame({
            "partition_key": [p.key for p in partitions],
            "window_start": [p.start for p in partitions],
            "window_end": [p.end for p in partitions],
        }, schema_overrides={"window_start": pl.Datetime("us"), "window_end": pl.Datetime("us")})
    else:
        lo = valid.get_column("ts").min() if valid.height else None
        hi = valid.get_column("ts").max() if valid.height else None
        bounds = pl.DataFrame({
            "partition_key": [None], "window_start": [lo],
            "window_end": [hi + interval_length(spec.interval) if hi is not None else None],
        }, schema={"partition_key": pl.String, "window_start": pl.Datetime("us"), "window_end": pl.Datetime("us")})

    def place(frame: pl.DataFrame, ts_col: str) -> pl.DataFrame:
        if not partitions:
            return frame.with_columns(pl.lit(None, dtype=pl.String).alias("partition_key"))
        starts = bounds.select("window_start", "partition_key").sort("window_start")
        placed = frame.select(pl.col(ts_col).alias("_ts")).with_row_index("_i").sort("_ts").join_asof(
            starts, left_on="_ts", right_on="window_start", strategy="backward"
        )
        end = bounds.get_column("window_end").max()
        return placed.with_columns(
            pl.when(pl.col("_ts").is_null() | (pl.col("_ts") >= end)).then(None)
            .otherwise(pl.col("partition_key")).alias("partition_key")
        )

    stored_counts = place(valid, "ts").group_by("partition_key").agg(
        pl.len().alias("rows_stored"), pl.col("_ts").max().alias("latest_ts")
    ) if partitions else pl.DataFrame({
        "partition_key": [None], "rows_stored": [valid.height],
        "latest_ts": [valid.get_column("ts").max() if valid.height else None],
    }, schema={"partition_key": pl.String, "rows_stored": pl.UInt32, "latest_ts": pl.Datetime("us")})
    q_counts = place(quarantine, "ts_utc").group_by("partition_key").agg(pl.len().alias("rows_quarantined"))
    rows = bounds.join(stored_counts, on="partition_key", how="full", coalesce=True, nulls_equal=True).join(
        q_counts, on="partition_key", how="full", coalesce=True, nulls_equal=True
    )
    rows = rows.with_columns(
        pl.col("rows_stored").fill_null(0).cast(pl.Int64),
        pl.col("rows_quarantined").fill_null(0).cast(pl.Int64),
    ).with_columns((pl.col("rows_stored") + pl.col("rows_quarantined")).alias("rows_in"))
    lags = _lag_bars(spec, rows, coverage, now)
    status = (
        pl.when(pl.col("rows_in") == 0).then(pl.lit("empty"))
        .when(pl.col("rows_quarantined") > 0).then(pl.lit("quarantined"))
        .otherwise(pl.lit("ok"))
    )
    return rows.with_columns(
        pl.Series("freshness_lag_bars", lags, dtype=pl.Int64), status.alias("status")
    ).sort("window_start", nulls_last=True)


def _lag_bars(spec: BarDataset, rows: pl.DataFrame, coverage: pl.DataFrame, now: datetime) -> list[int | None]:
    """Per journal row: expected bars after its latest bar, up to where the source's coverage ends
    within [window_start, window_end) (and no later than ``now``). None where the source covers nothing."""
    starts, ends = rows.get_column("window_start"), rows.get_column("window_end")
    if coverage.height == 0 or starts.null_count() == rows.height:
        return [None] * rows.height
    step = interval_length(spec.interval)
    grid = expected_bars(spec.calendar, spec.interval, starts.min(), ends.max()).to_numpy()
    first = coverage.get_column("first_ts").to_numpy()
    last = coverage.get_column("last_ts").to_numpy()
    out: list[int | None] = []
    for start, end, latest in zip(starts.to_numpy(), ends.to_numpy(), rows.get_column("latest_ts").to_numpy(),
                                  strict=True):
        covered = (first < end) & (last >= start)
        if np.isnat(start) or not covered.any():
            out.append(None)
            continue
        horizon = min(end, last[covered].max() + np.timedelta64(step), np.datetime64(now))
        lo = np.searchsorted(grid, latest, side="right") if not np.isnat(latest) else np.searchsorted(grid, start)
        out.append(max(0, int(np.searchsorted(grid, horizon) - lo)))
    return out
