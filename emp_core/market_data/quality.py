"""Quality gates on stored bars: what the blocking asset checks evaluate.

- ``schema_and_types``, ``unique_symbol_ts``, ``ohlc_consistency``: Great
  Expectations 1.x suites run on the stored rows of the window (pandas batch).
- ``calendar_gaps``: bars the trading calendar expects inside each symbol's span
  (the source's coverage clipped to the window) but the store lacks, and stored
  bars the calendar does not know; fails above the dataset's tolerance.
- ``freshness``: per symbol, how many expected bars the latest stored bar trails
  the end of the window (clipped to the source's coverage and the clock); fails
  above ``max_lag_bars``. The live window (one that reaches within ``max_lag_bars``
  expected bars of the clock) should hold data whatever the source claims to cover,
  and so should any window after the dataset's first stored bar (``started``): such
  a window fails when it holds none while the calendar expects more than
  ``max_lag_bars`` bars in it up to now (a source that stopped updating is not fresh
  because it says it has nothing). A window before the dataset began may be empty.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

import polars as pl

from emp_core.calendars import expected_bars, interval_length
from emp_core.market_data.ingest import BarDataset
from emp_core.market_data.schema import BAR_COLUMNS, PRICE_COLUMNS

BAR_CHECKS = ("schema_and_types", "unique_symbol_ts", "ohlc_consistency", "calendar_gaps", "freshness")
CHECK_DESCRIPTIONS = {
    "schema_and_types": "columns symbol, ts, open, high, low, close, volume with their types, no nulls (GX)",
    "unique_symbol_ts": "one bar per (symbol, ts) (GX)",
    "ohlc_consistency": "low <= open, close <= high; prices > 0; volume >= 0 (GX)",
    "calendar_gaps": "no more missing bars against the trading calendar than the dataset tolerates",
    "freshness": "the latest bar of each symbol reaches the end of the partition the source covers",
}
_EXAMPLES = 10


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def prepare_expectations() -> float:
    """Import Great Expectations and build its context and suites (once per process: later calls are free);
    the seconds it took, so a caller can report library setup apart from the checks themselves."""
    t0 = time.perf_counter()
    _gx()
    return time.perf_counter() - t0


@lru_cache(maxsize=1)
def _gx():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = ctx.data_sources.add_pandas("emp").add_dataframe_asset("bars").add_batch_definition_whole_dataframe(
        "window"
    )
    suites = {
        "schema_and_types": [
            gxe.ExpectTableColumnsToMatchOrderedList(column_list=list(BAR_COLUMNS)),
            gxe.ExpectColumnValuesToBeInTypeList(column="symbol", type_list=["object", "str", "string"]),
            gxe.ExpectColumnValuesToBeInTypeList(column="ts", type_list=["datetime64[us]", "datetime64[ns]"]),
            *[gxe.ExpectColumnValuesToBeOfType(column=c, type_="float64") for c in (*PRICE_COLUMNS, "volume")],
            *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in BAR_COLUMNS],
        ],
        "unique_symbol_ts": [gxe.ExpectCompoundColumnsToBeUnique(column_list=["symbol", "ts"])],
        "ohlc_consistency": [
            *[gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, strict_min=True) for c in PRICE_COLUMNS],
            gxe.ExpectColumnValuesToBeBetween(column="volume", min_value=0),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="high", column_B="low", or_equal=True),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="high", column_B="open", or_equal=True),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="high", column_B="close", or_equal=True),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="open", column_B="low", or_equal=True),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="close", column_B="low", or_equal=True),
        ],
    }
    built = {}
    for name, expectations in suites.items():
        suite = gx.ExpectationSuite(name=name)
        for exp in expectations:
            suite.add_expectation(exp)
        built[name] = ctx.suites.add(suite)
    return batch_def, built


def expectation_checks(bars: pl.DataFrame) -> list[CheckOutcome]:
    """Run the three GX suites on ``bars`` (the stored rows of a window)."""
    batch_def, suites = _gx()
    batch = batch_def.get_batch(batch_parameters={"dataframe": bars.to_pandas()})
    outcomes = []
    for name, suite in suites.items():
        result = batch.validate(suite, result_format="SUMMARY")
        failed = []
        for r in result.results:
            if not r.success:
                cfg = r.expectation_config
                args = {k: v for k, v in cfg.kwargs.items() if k in ("column", "column_A", "column_B", "column_list")}
                failed.append({
                    "expectation": cfg.type, **args,
                    "unexpected_count": r.result.get("unexpected_count"),
                    "observed_value": _jsonable(r.result.get("observed_value")),
                    "examples": _jsonable(r.result.get("partial_unexpected_list", [])[:_EXAMPLES]),
                })
        outcomes.append(CheckOutcome(
            name=name, passed=bool(result.success), description=CHECK_DESCRIPTIONS[name],
            metadata={"rows": bars.height, "expectations": len(result.results), "failed": failed},
        ))
    return outcomes


def _jsonable(value):
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _spans(bars: pl.DataFrame, coverage: pl.DataFrame, spec: BarDataset, start: datetime, end: datetime):
    """Per symbol: [span_start, span_end) the window should hold, from coverage or the stored bars."""
    step = interval_length(spec.interval)
    stored = bars.group_by("symbol").agg(pl.col("ts").min().alias("s_first"), pl.col("ts").max().alias("s_last"))
    cov = coverage.filter((pl.col("first_ts") < end) & (pl.col("last_ts") >= start))
    spans = stored.join(cov, on="symbol", how="full", coalesce=True).with_columns(
        pl.coalesce("first_ts", "s_first").alias("first"), pl.coalesce("last_ts", "s_last").alias("last")
    )
    return spans.select(
        "symbol",
        pl.max_horizontal(pl.col("first"), pl.lit(start)).alias("span_start"),
        pl.min_horizontal(pl.col("last") + step, pl.lit(end)).alias("span_end"),
        pl.col("s_last"),
    )


def calendar_gaps(
    bars: pl.DataFrame, spec: BarDataset, start: datetime, end: datetime, coverage: pl.DataFrame,
    max_gap_ratio: float | None = None,
) -> CheckOutcome:
    tolerance = spec.max_gap_ratio if max_gap_ratio is None else max_gap_ratio
    grid = expected_bars(spec.calendar, spec.interval, start, end).to_frame("ts")
    spans = _spans(bars, coverage, spec, start, end)
    expected = spans.join(grid, how="cross").filter(
        (pl.col("ts") >= pl.col("span_start")) & (pl.col("ts") < pl.col("span_end"))
    ).select("symbol", "ts")
    keyed = bars.select("symbol", "ts")
    missing = expected.join(keyed, on=["symbol", "ts"], how="anti")
    off_calendar = keyed.join(grid, on="ts", how="anti")
    n_expected = expected.height
    ratio = missing.height / n_expected if n_expected else 0.0
    off_ratio = off_calendar.height / bars.height if bars.height else 0.0
    per_symbol = missing.group_by("symbol").len().sort("len", descending=True).head(_EXAMPLES)
    return CheckOutcome(
        name="calendar_gaps",
        passed=ratio <= tolerance and off_ratio <= tolerance,
        description=CHECK_DESCRIPTIONS["calendar_gaps"],
        metadata={
            "calendar": spec.calendar, "expected_bars": n_expected, "missing_bars": missing.height,
            "missing_ratio": round(ratio, 6), "off_calendar_bars": off_calendar.height, "tolerance": tolerance,
            "worst_symbols": dict(per_symbol.iter_rows()),
            "missing_examples": [f"{s} {t}" for s, t in missing.sort("ts").head(_EXAMPLES).iter_rows()],
            "off_calendar_examples": [f"{s} {t}" for s, t in off_calendar.head(_EXAMPLES).iter_rows()],
        },
    )


def freshness(
    bars: pl.DataFrame, spec: BarDataset, start: datetime, end: datetime, coverage: pl.DataFrame, now: datetime,
    max_lag_bars: int | None = None, *, started: bool = False,
) -> CheckOutcome:
    limit = spec.max_lag_bars if max_lag_bars is None else max_lag_bars
    grid = expected_bars(spec.calendar, spec.interval, start, min(end, now)).to_frame("ts")
    spans = _spans(bars, coverage, spec, start, end).with_columns(
        pl.min_horizontal(pl.col("span_end"), pl.lit(now)).alias("span_end")
    )
    lags = spans.join(grid, how="cross").filter(
        (pl.col("ts") < pl.col("span_end"))
        & ((pl.col("ts") > pl.col("s_last")) | pl.col("s_last").is_null())
        & (pl.col("ts") >= pl.col("span_start"))
    ).group_by("symbol").agg(pl.len().alias("lag_bars"))
    lags = spans.select("symbol", "s_last").join(lags, on="symbol", how="left").with_columns(
        pl.col("lag_bars").fill_null(0)
    )
    stale = lags.filter(pl.col("lag_bars") > limit).sort("lag_bars", descending=True)
    latest = bars.get_column("ts").max() if bars.height else None
    # the live window: the clock is inside it or at most `limit` expected bars past its end
    after_end = expected_bars(spec.calendar, spec.interval, end, now).len() if now > end else 0
    live = start <= now and after_end <= limit
    empty_live = (live or started) and not bars.height and grid.height > limit
    description = CHECK_DESCRIPTIONS["freshness"]
    if empty_live:
        why = "the live window" if live else "a window after the dataset's first bars"
        description = (f"{why} [{start:%Y-%m-%d}, {end:%Y-%m-%d}) holds no bars though the calendar expects "
                       f"{grid.height} up to now: the source stopped updating")
    return CheckOutcome(
        name="freshness",
        passed=stale.height == 0 and not empty_live,
        description=description,
        metadata={
            "live_window": live, "expected_bars_to_now": grid.height,
            "latest_bar": str(latest) if latest else None, "max_lag_bars_allowed": limit,
            "symbols": lags.height, "stale_symbols": stale.height,
            "worst_lag_bars": int(lags.get_column("lag_bars").max() or 0) if lags.height else 0,
            "stale_examples": {s: int(n) for s, _, n in stale.head(_EXAMPLES).iter_rows()},
        },
    )
