from datetime import datetime

import polars as pl
import pytest

from emp_core.market_data.ingest import DATASETS
from emp_core.market_data.quality import calendar_gaps, expectation_checks, freshness
from tests.support import daily_bars

SPEC = DATASETS["bars_1d"]
START, END = datetime(2020, 1, 1), datetime(2020, 3, 1)


@pytest.fixture(scope="module")
def clean() -> pl.DataFrame:
    return pl.concat([daily_bars("AAA", datetime(2020, 1, 2), 40), daily_bars("BBB", datetime(2020, 1, 2), 40)])


def outcomes(frame):
    return {c.name: c for c in expectation_checks(frame)}


def test_clean_bars_pass_every_gate(clean):
    assert all(c.passed for c in outcomes(clean).values())
    cov = clean.group_by("symbol").agg(pl.col("ts").min().alias("first_ts"), pl.col("ts").max().alias("last_ts"))
    assert calendar_gaps(clean, SPEC, START, END, cov).passed
    assert freshness(clean, SPEC, START, END, cov, now=datetime(2026, 1, 1)).passed


def test_gx_catches_duplicates_inconsistent_ohlc_and_schema_drift(clean):
    dup = pl.concat([clean, clean.head(1)])
    result = outcomes(dup)
    assert not result["unique_symbol_ts"].passed and result["ohlc_consistency"].passed
    broken = clean.with_columns(
        pl.when(pl.int_range(pl.len()) == 5).then(pl.col("low") - 10).otherwise(pl.col("high")).alias("high"))
    failed = outcomes(broken)["ohlc_consistency"]
    assert not failed.passed
    assert {f["expectation"] for f in failed.metadata["failed"]} >= {
        "expect_column_pair_values_a_to_be_greater_than_b"}
    drift = outcomes(clean.with_columns(pl.col("volume").cast(pl.Int64)))["schema_and_types"]
    assert not drift.passed


def test_calendar_gaps_fail_beyond_the_tolerance(clean):
    holed = clean.filter(~((pl.col("symbol") == "AAA") & pl.col("ts").is_in(
        [datetime(2020, 1, 14), datetime(2020, 1, 15)])))
    cov = clean.group_by("symbol").agg(pl.col("ts").min().alias("first_ts"), pl.col("ts").max().alias("last_ts"))
    strict = calendar_gaps(holed, SPEC, START, END, cov, max_gap_ratio=0.0)
    assert not strict.passed
    assert strict.metadata["missing_bars"] == 2
    assert strict.metadata["missing_examples"] == ["AAA 2020-01-14 00:00:00", "AAA 2020-01-15 00:00:00"]
    assert calendar_gaps(holed, SPEC, START, END, cov, max_gap_ratio=0.05).passed
    weekend = pl.concat([clean, clean.head(1).with_columns(pl.lit(datetime(2020, 1, 4)).alias("ts"))])
    assert calendar_gaps(weekend, SPEC, START, END, cov, max_gap_ratio=0.0).metadata["off_calendar_bars"] == 1


def test_freshness_fails_when_the_latest_bar_trails_the_coverage(clean):
    cov = clean.group_by("symbol").agg(pl.col("ts").min().alias("first_ts"), pl.col("ts").max().alias("last_ts"))
    stale = clean.filter(~((pl.col("symbol") == "BBB") & (pl.col("ts") > datetime(2020, 2, 20))))
    result = freshness(stale, SPEC, START, END, cov, now=datetime(2026, 1, 1))
    assert not result.passed
    assert result.metadata["stale_examples"] == {"BBB": 6}
    # the clock caps what can be expected: before those bars existed nothing was stale
    assert freshness(stale, SPEC, START, END, cov, now=datetime(2020, 2, 21)).passed


def test_an_empty_live_window_fails_freshness_whatever_the_source_covers(clean):
    """The scheduled run for the current year against a source that ended years ago stores nothing: the source
    claims no coverage there, so no symbol trails anything, and before this rule the check passed."""
    nothing = clean.head(0)
    no_coverage = pl.DataFrame(schema={"symbol": pl.String, "first_ts": pl.Datetime("us"),
                                       "last_ts": pl.Datetime("us")})
    live = freshness(nothing, SPEC, START, END, no_coverage, now=datetime(2020, 2, 10))
    assert not live.passed and live.metadata["live_window"] and "holds no bars" in live.description
    # just past the window's end the window is still live (within the allowed lag) ...
    assert not freshness(nothing, SPEC, START, END, no_coverage, now=datetime(2020, 3, 3)).passed
    # ... a window long past is history: a source with nothing there has nothing to be late with
    past = freshness(nothing, SPEC, START, END, no_coverage, now=datetime(2026, 1, 1))
    assert past.passed and not past.metadata["live_window"]
    # the first sessions of a new window: not yet more bars expected than the lag allows
    assert freshness(nothing, SPEC, START, END, no_coverage, now=datetime(2020, 1, 3)).passed
    # data in the live window, up to date: passes
    assert freshness(clean, SPEC, START, END, no_coverage, now=datetime(2020, 2, 27)).passed


def test_an_empty_window_after_the_dataset_began_fails_freshness(clean):
    """Not only the live window: a year in the past with no bars, after the dataset's first bars, is a source
    that stopped (the review's case: an empty 2025 passed in 2026). Before the dataset began, empty is fine."""
    nothing = clean.head(0)
    no_coverage = pl.DataFrame(schema={"symbol": pl.String, "first_ts": pl.Datetime("us"),
                                       "last_ts": pl.Datetime("us")})
    late = freshness(nothing, SPEC, START, END, no_coverage, now=datetime(2026, 1, 1), started=True)
    assert not late.passed and "after the dataset's first bars" in late.description
    assert freshness(nothing, SPEC, START, END, no_coverage, now=datetime(2026, 1, 1), started=False).passed
