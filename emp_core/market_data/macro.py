"""Macro series and the Treasury yield curve, stamped with the date each value became public.

Point in time: a value may reach a bar only from ``available_at`` on. The lags
below are conservative bounds on the US release calendar, each set above the
latest releases we know of in the shipped period (listed below, as we know them:
not checked against every release, nor against an archive from this machine),
so that a value is stamped on or after its publication:

| series | period | ``available_at`` |
|---|---|---|
| realgdp, realcons, realinv, realgovt, realdpi (BEA NIPA) | quarter | period end + 55 days |
| cpi, infl, realint (CPI-based quarterly aggregates) | quarter | period end + 35 days |
| unemp | quarter | period end + 25 days |
| m1 | quarter | period end + 20 days |
| pop, and any series not listed | quarter | period end + 30 days |
| tbilrate (average of daily market rates) | quarter | period end + 15 days |
| core_cpi (BLS CPI-U less food and energy) | month | period end + 35 days |
| aaa_yield, baa_yield (Moody's monthly averages) | month | period end + 1 day |
| vix, wti | day | same day (published at the close) |
| Treasury par yield curve | day | same day (published after the close) |

The late releases these cover:
- CPI: BLS publishes a month's CPI in the next month, usually between the 10th and the 20th. January 2014's came
  on 20 February 2014. September 2013's was delayed by the federal shutdown to 30 October 2013, 30 days after the
  month's end. The lag used before, 15 days, let a bar see January 2014's figure four days before its release.
- GDP: BEA's advance estimate usually comes about 30 days after the quarter: Q2 2008 and Q2 2009 came on 31 July,
  31 days. Q4 1995's was delayed by the shutdown of that winter into late February 1996.
- Unemployment: the jobs report for December 1995 was delayed to 19 January 1996.

What these dates do not cover:
- **Revisions.** The shipped values are one vintage, the one current when the files were made. FRED's CPILFESL is
  seasonally adjusted, and its seasonal factors are revised every February for five years back; GDP is revised
  for years. A backtest therefore reads revised figures from their first release date. For core CPI's
  year-on-year rate the revisions are small, because seasonal factors largely cancel over twelve months. For GDP
  they are not, and no feature reads GDP.
- **Values computed after the fact.** Core CPI's early values were never published at the time (the
  "less food and energy" aggregate and CPI-U itself came later), so their dates are not release dates.
- **Why no bar is affected by the early values.** WHY reads inflation at most 78 months back (a 60-month z-score
  of 18-month changes), and the shipped bars begin in 1999.

First-release values (ALFRED vintages) would remove both problems. They are not in the packages the data is
extracted from, and this machine has no other source.

Rows that cannot be used are quarantined with a reason, like bars.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from emp_core.errors import EmpError
from emp_core.market_data.quality import CheckOutcome
from emp_core.store import DuckDBStore

PUBLICATION_LAG_DAYS = {
    **dict.fromkeys(["realgdp", "realcons", "realinv", "realgovt", "realdpi"], 55),
    **dict.fromkeys(["cpi", "infl", "realint", "core_cpi"], 35),
    "unemp": 25, "m1": 20, "pop": 30, "tbilrate": 15,
    "aaa_yield": 1, "baa_yield": 1, "vix": 0, "wti": 0,
}
DEFAULT_LAG_DAYS = 30
TENORS = ("m1", "m3", "m6", "y1", "y2", "y3", "y5", "y7", "y10", "y20", "y30")
PERIOD = {"Q": "3mo", "M": "1mo", "D": "1d"}


def _read(path: Path) -> pl.DataFrame:
    if not path.exists():
        raise EmpError(f"{path}: shipped data file missing; run `make data` to regenerate it")
    return pl.read_parquet(path)


def macro_series(data_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows with period_end and available_at, quarantined rows with reason) from the shipped file."""
    raw = _read(Path(data_dir) / "macro_series.parquet").with_row_index("row_number", offset=1)
    lag = pl.col("series_id").replace_strict(PUBLICATION_LAG_DAYS, default=DEFAULT_LAG_DAYS, return_dtype=pl.Int64)
    frame = raw.with_columns(
        pl.col("period_start").dt.offset_by(pl.col("frequency").replace_strict(PERIOD, default="1d"))
        .dt.offset_by("-1d").alias("period_end"),
    ).with_columns(
        (pl.col("period_end") + pl.duration(days=lag)).alias("available_at"),
    )
    reason = pl.concat_str([
        pl.when(~pl.col("value").is_finite()).then(pl.lit("value is not finite")),
        pl.when(~pl.col("frequency").is_in(list(PERIOD))).then(pl.lit("unknown frequency")),
        pl.when(pl.struct("series_id", "period_start").is_duplicated()).then(pl.lit("duplicate (series_id, period)")),
    ], separator="; ", ignore_nulls=True)
    frame = frame.with_columns(reason.alias("reason"))
    good = frame.filter(pl.col("reason") == "").drop("reason", "row_number")
    bad = frame.filter(pl.col("reason") != "")
    return good, bad


def treasury_curve(data_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(curve rows with available_at, quarantined rows) from the shipped file; yields in decimals."""
    raw = _read(Path(data_dir) / "treasury_curve.parquet").with_row_index("row_number", offset=1)
    tenor_values = [pl.col(t) for t in TENORS]
    reason = pl.concat_str([
        pl.when(pl.col("date").is_duplicated()).then(pl.lit("duplicate date")),
        pl.when(pl.all_horizontal([v.is_null() for v in tenor_values])).then(pl.lit("no tenor has a yield")),
        pl.when(pl.any_horizontal([(v < -0.05) | (v > 0.25) | v.is_nan() for v in tenor_values]))
        .then(pl.lit("yield outside [-5%, 25%]")),
    ], separator="; ", ignore_nulls=True)
    frame = raw.with_columns(reason.alias("reason"), pl.col("date").alias("available_at"))
    good = frame.filter(pl.col("reason") == "").drop("reason", "row_number")
    bad = frame.filter(pl.col("reason") != "")
    return good, bad


@dataclass(frozen=True)
class TableLoad:
    table: str
    rows_stored: int
    rows_quarantined: int
    checks: list[CheckOutcome]
    seconds: float  # reading, storing and checking the table


def _quarantine(bad: pl.DataFrame, dataset: str, path: Path, key: str, ts: str, run_id: str,
                now: datetime) -> pl.DataFrame:
    values = [c for c in bad.columns if c not in ("row_number", "reason")]
    return bad.select(
        pl.lit(run_id).alias("run_id"), pl.lit(dataset).alias("dataset"), pl.lit("shipped").alias("source"),
        pl.lit(str(path)).alias("input"), pl.col("row_number").cast(pl.Int64),
        pl.col(key).cast(pl.String).alias("symbol"), pl.col(ts).cast(pl.String).alias("ts"),
        pl.col(ts).cast(pl.Datetime("us")).alias("ts_utc"), pl.col("reason"),
        pl.struct([pl.col(c).cast(pl.String) for c in values]).struct.json_encode().alias("raw"),
        pl.lit(now).alias("quarantined_at"),
    )


def _sql_check(store: DuckDBStore, name: str, description: str, sql: str) -> CheckOutcome:
    bad = int(store.query(sql).item())
    return CheckOutcome(name=name, passed=bad == 0, description=description, metadata={"violations": bad})


def load_macro_series(store: DuckDBStore, data_dir: Path, run_id: str, now: datetime) -> TableLoad:
    """Replace ``macro.series`` from the shipped file and check it in the store."""
    t0 = time.perf_counter()
    good, bad = macro_series(data_dir)
    store.replace_table("macro.series", good.with_columns(pl.lit(run_id).alias("run_id")))
    if bad.height:
        store.append("market.quarantine", _quarantine(bad, "macro.series", Path(data_dir) / "macro_series.parquet",
                                                      "series_id", "period_start", run_id, now))
    return TableLoad("macro.series", good.height, bad.height, macro_series_checks(store), time.perf_counter() - t0)


def macro_series_checks(store: DuckDBStore) -> list[CheckOutcome]:
    """The checks of the stored ``macro.series``, whoever wrote it: ``point_in_time`` holds each row to its
    series' publication lag (the default lag for a series not listed), not just to its period's end. It reads
    the same lag table as the loader, so it guards the table against other writers and the loader against a
    change of rule, not the table of lags itself (the tests pin that against known release dates)."""
    lags = ", ".join(f"('{series}', {days})" for series, days in PUBLICATION_LAG_DAYS.items())
    return [
        _sql_check(store, "unique_series_period", "one value per (series_id, period_start)",
                   "SELECT count(*) - count(DISTINCT (series_id, period_start)) FROM macro.series"),
        _sql_check(store, "point_in_time",
                   "no value is public before its period's end plus its series' publication lag",
                   f"SELECT count(*) FROM macro.series s LEFT JOIN (VALUES {lags}) AS l(series_id, lag) "
                   f"USING (series_id) "
                   f"WHERE s.available_at < s.period_end + coalesce(l.lag, {DEFAULT_LAG_DAYS}) * INTERVAL '1 day'"),
        _sql_check(store, "values_finite", "every value is a finite number",
                   "SELECT count(*) FROM macro.series WHERE NOT (abs(value) <= 1.7976931348623157e308)"),
    ]


def load_treasury_curve(store: DuckDBStore, data_dir: Path, run_id: str, now: datetime) -> TableLoad:
    """Replace ``macro.treasury_curve`` from the shipped file and check it in the store."""
    t0 = time.perf_counter()
    good, bad = treasury_curve(data_dir)
    store.replace_table("macro.treasury_curve", good.with_columns(pl.lit(run_id).alias("run_id")))
    if bad.height:
        store.append("market.quarantine", _quarantine(bad, "macro.treasury_curve",
                                                      Path(data_dir) / "treasury_curve.parquet", "date", "date",
                                                      run_id, now))
    in_range = " OR ".join(f"{t} < -0.05 OR {t} > 0.25" for t in TENORS)
    checks = [
        _sql_check(store, "unique_dates", "one curve per date",
                   "SELECT count(*) - count(DISTINCT date) FROM macro.treasury_curve"),
        _sql_check(store, "yields_in_range", "every yield within [-5%, 25%] (decimal units)",
                   f"SELECT count(*) FROM macro.treasury_curve WHERE {in_range}"),
        _sql_check(store, "core_tenors_present", "3-month and 10-year yields present on every date",
                   "SELECT count(*) FROM macro.treasury_curve WHERE m3 IS NULL OR y10 IS NULL"),
    ]
    return TableLoad("macro.treasury_curve", good.height, bad.height, checks, time.perf_counter() - t0)
