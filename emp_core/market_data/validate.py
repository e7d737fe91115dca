"""Row-level validation of bars: every input row ends up valid or quarantined with a reason.

Rules (a row may break several; its reason lists them all, separated by "; "):

- ``missing symbol`` / ``missing timestamp`` / ``missing <col>``: empty field.
- ``unparseable timestamp``: text that is no date/time format we accept.
- ``local time does not exist in <naive_tz> (clock moved forward)``: a naive time inside a
  daylight-saving gap (02:30 on the day New York springs forward); ``local time is ambiguous
  in <naive_tz> ...``: one in the hour that occurs twice when the clock moves back.
- ``timestamp without time zone in a file with zone offsets``: mixing naive and
  zoned timestamps is ambiguous; zoned ones (any offset) are converted to UTC.
- ``<col> is not a number``, ``<col> is not finite`` (NaN, inf), ``<col> is not positive``.
- ``negative volume``; for the optional quote columns (bid, ask, bid_size, ask_size):
  ``<col> is not a number``, ``<col> is not finite``, ``negative <col>``.
- ``high below low``, ``open outside [low, high]``, ``close outside [low, high]``.
- ``timestamp in the future``: after the ingest clock ``now``.
- ``outside window [start, end)``: only when a window is requested.
- duplicates of (symbol, ts) among otherwise valid rows: identical copies keep the
  first and quarantine the rest (``duplicate of row N``); copies that disagree are
  all quarantined (``conflicting duplicate (K rows disagree)``): we cannot tell
  which one is right.

Rows are sorted by (symbol, ts) on output, whatever their input order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from emp_core.market_data.schema import BAR_SCHEMA, NUMERIC_COLUMNS, PRICE_COLUMNS, QUOTE_COLUMNS

ROW = "row_number"
QUARANTINE_SCHEMA = pl.Schema({
    ROW: pl.Int64, "symbol": pl.String, "ts": pl.String, "ts_utc": pl.Datetime("us"), "reason": pl.String,
    "raw": pl.String,
})

_AWARE_FORMATS = ("%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M%#z")
_NAIVE_FORMATS = (
    "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%Y%m%d",
    "%m/%d/%Y", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%d.%m.%Y %H:%M:%S%.f", "%d.%m.%Y",
)
_ZONE_SUFFIX = r"\d:\d\d(:\d\d(\.\d+)?)?\s*(Z|[+-]\d\d(:?\d\d)?)$"


@dataclass(frozen=True)
class Validated:
    """Result of validation: ``valid`` follows BAR_SCHEMA (plus any quote columns the input has, as
    Float64); ``quarantine`` QUARANTINE_SCHEMA."""

    valid: pl.DataFrame
    quarantine: pl.DataFrame
    rows_in: int

    def __post_init__(self) -> None:
        if self.valid.height + self.quarantine.height != self.rows_in:
            raise AssertionError("validation lost rows: valid + quarantined != input")


def validate_bars(
    raw: pl.DataFrame,
    *,
    interval: str,
    now: datetime,
    naive_tz: str = "UTC",
    session_tz: str = "America/New_York",
    window: tuple[datetime, datetime] | None = None,
) -> Validated:
    """Split ``raw`` (canonical column names, any dtypes) into valid bars and quarantined rows.

    Naive timestamps are read in ``naive_tz``. Daily bars (``interval == "1d"``)
    are stamped with their session date at 00:00: zoned timestamps take the date
    in ``session_tz``.
    """
    rows_in = raw.height
    frame = raw.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64))
    schema = frame.schema
    any_zoned = schema["ts"] == pl.String and bool(
        frame.get_column("ts").str.strip_chars().str.contains(_ZONE_SUFFIX).any()
    )
    ts, ts_problem = _parse_ts(schema["ts"], interval, naive_tz, session_tz, any_zoned)
    typed = [pl.col(ROW), _symbol().alias("symbol"), ts.alias("ts"), ts_problem.alias("_p_ts")]
    quotes = [c for c in QUOTE_COLUMNS if c in schema]
    for col in (*NUMERIC_COLUMNS, *quotes):
        value, problem = _number(col, schema[col])
        typed += [value.alias(col), problem.alias(f"_p_{col}")]
    checked = frame.select(typed)
    reasons = [
        pl.when(pl.col("symbol").is_null()).then(pl.lit("missing symbol")),
        pl.col("_p_ts"),
        *[pl.col(f"_p_{c}") for c in NUMERIC_COLUMNS],
    ]
    reasons += [pl.col(f"_p_{c}") for c in quotes]
    reasons += [
        pl.when(~pl.col(c).is_finite()).then(pl.lit(f"{c} is not finite")) for c in (*NUMERIC_COLUMNS, *quotes)
    ]
    reasons += [pl.when(pl.col(c) < 0).then(pl.lit(f"negative {c}")) for c in quotes]
    reasons += [pl.when(pl.col(c) <= 0).then(pl.lit(f"{c} is not positive")) for c in PRICE_COLUMNS]
    reasons += [
        pl.when(pl.col("volume") < 0).then(pl.lit("negative volume")),
        pl.when(pl.col("high") < pl.col("low")).then(pl.lit("high below low")),
        pl.when((pl.col("open") < pl.col("low")) | (pl.col("open") > pl.col("high")))
        .then(pl.lit("open outside [low, high]")),
        pl.when((pl.col("close") < pl.col("low")) | (pl.col("close") > pl.col("high")))
        .then(pl.lit("close outside [low, high]")),
        pl.when(pl.col("ts") > pl.lit(now)).then(pl.lit("timestamp in the future")),
    ]
    if window is not None:
        start, end = window
        reasons.append(
            pl.when((pl.col("ts") < pl.lit(start)) | (pl.col("ts") >= pl.lit(end)))
            .then(pl.lit(f"outside window [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M})"))
        )
    reason = pl.concat_str(reasons, separator="; ", ignore_nulls=True)
    checked = checked.with_columns(
        pl.when(reason == "").then(None).otherwise(reason).alias("reason")
    ).drop([c for c in checked.columns if c.startswith("_p_")])
    checked = _mark_duplicates(checked.sort("symbol", "ts", maintain_order=True, nulls_last=True))

    bad = checked.filter(pl.col("reason").is_not_null())
    valid = checked.filter(pl.col("reason").is_null()).select(
        *[pl.col(name).cast(dtype) for name, dtype in BAR_SCHEMA.items()], *[pl.col(c) for c in quotes]
    )
    quarantine = _quarantine_rows(frame, bad)
    return Validated(valid=valid, quarantine=quarantine, rows_in=rows_in)


def _symbol() -> pl.Expr:
    text = pl.col("symbol").cast(pl.String).str.strip_chars()
    return pl.when(text == "").then(None).otherwise(text)


def _number(name: str, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    raw = pl.col(name)
    if dtype == pl.String:
        text = raw.str.strip_chars()
        number = text.cast(pl.Float64, strict=False)
        problem = (
            pl.when(text.is_null() | (text == "")).then(pl.lit(f"missing {name}"))
            .when(number.is_null()).then(pl.lit(f"{name} is not a number"))
        )
        return number, problem
    if dtype.is_numeric() or dtype == pl.Null:
        number = raw.cast(pl.Float64)
        return number, pl.when(number.is_null()).then(pl.lit(f"missing {name}"))
    return pl.lit(None, dtype=pl.Float64), pl.lit(f"{name} is not a number ({dtype})")


def _parse_ts(
    dtype: pl.DataType, interval: str, naive_tz: str, session_tz: str, any_zoned: bool
) -> tuple[pl.Expr, pl.Expr]:
    """Return (naive-UTC timestamp expression, problem expression) for column ``ts``."""
    daily = interval == "1d"
    col = pl.col("ts")
    if dtype == pl.String:
        text = col.str.strip_chars().str.replace("T", " ", literal=True)
        zoned = text.str.contains(_ZONE_SUFFIX)
        aware = pl.coalesce([
            text.str.to_datetime(f, time_zone="UTC", time_unit="us", strict=False) for f in _AWARE_FORMATS
        ])
        parsed = pl.coalesce([text.str.to_datetime(f, time_unit="us", strict=False) for f in _NAIVE_FORMATS])
        if daily:
            aware = aware.dt.convert_time_zone(session_tz).dt.replace_time_zone(None).dt.truncate("1d")
            naive = parsed.dt.truncate("1d")
        else:
            aware = aware.dt.replace_time_zone(None)
            naive = _naive_to_utc(parsed, naive_tz)
        ts = pl.when(zoned).then(aware).otherwise(naive)
        problem = (
            pl.when(text.is_null() | (text == "")).then(pl.lit("missing timestamp"))
            .when(~zoned & parsed.is_not_null() & ts.is_null()).then(_clock_change(parsed, naive_tz))
            .when(ts.is_null()).then(pl.lit("unparseable timestamp"))
        )
        if any_zoned:
            problem = problem.when(~zoned).then(
                pl.lit("timestamp without time zone in a file with zone offsets")
            )
        return ts.cast(pl.Datetime("us")), problem
    missing = pl.when(col.is_null()).then(pl.lit("missing timestamp"))
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            ts = (
                col.dt.convert_time_zone(session_tz).dt.replace_time_zone(None).dt.truncate("1d")
                if daily else col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
            )
        elif daily:
            ts = col.dt.truncate("1d")
        else:  # local wall-clock times: null in a DST gap or the repeated hour, with the reason
            ts = _naive_to_utc(col, naive_tz)
            return ts.cast(pl.Datetime("us")), missing.when(ts.is_null()).then(_clock_change(col, naive_tz))
        return ts.cast(pl.Datetime("us")), missing
    if dtype == pl.Date:
        return col.cast(pl.Datetime("us")), missing
    return pl.lit(None, dtype=pl.Datetime("us")), pl.lit(f"unsupported timestamp type {dtype}")


def _clock_change(naive: pl.Expr, tz: str) -> pl.Expr:
    """Why a parsed local time has no UTC instant: it falls in a gap, or in the repeated hour (ambiguous)."""
    gap = naive.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null").is_null()
    return (pl.when(gap).then(pl.lit(f"local time does not exist in {tz} (clock moved forward)"))
            .otherwise(pl.lit(f"local time is ambiguous in {tz} (clock moved back: it occurs twice)")))


def _naive_to_utc(expr: pl.Expr, tz: str) -> pl.Expr:
    """Local wall-clock times in ``tz`` as naive UTC; null inside a DST gap and in the repeated hour, which
    we cannot place (two bars 01:30 EDT and 01:30 EST would otherwise both become 05:30 UTC)."""
    if tz == "UTC":
        return expr
    return expr.dt.replace_time_zone(tz, ambiguous="null", non_existent="null").dt.convert_time_zone(
        "UTC"
    ).dt.replace_time_zone(None)


def _mark_duplicates(checked: pl.DataFrame) -> pl.DataFrame:
    """``checked`` is sorted by (symbol, ts): copies of a key sit next to each other."""
    ok = pl.col("reason").is_null()
    keys = checked.filter(ok).select("symbol", "ts")
    adjacent = (pl.col("symbol") == pl.col("symbol").shift()) & (pl.col("ts") == pl.col("ts").shift())
    if not keys.select(adjacent.any()).item():
        return checked
    key = ["symbol", "ts"]
    versions = pl.struct(*[c for c in (*NUMERIC_COLUMNS, *QUOTE_COLUMNS) if c in checked.columns]).n_unique().over(key)
    first = pl.col(ROW).min().over(key)
    copies = pl.len().over(key)
    dup_reason = (
        pl.when(copies > 1).then(
            pl.when(versions > 1)
            .then(pl.format("conflicting duplicate ({} rows disagree)", copies))
            .when(pl.col(ROW) != first)
            .then(pl.format("duplicate of row {}", first))
        )
    )
    candidates = checked.filter(ok).with_columns(dup_reason.alias("_dup")).select(ROW, "_dup")
    return checked.join(candidates, on=ROW, how="left", maintain_order="left").with_columns(
        pl.coalesce("reason", "_dup").alias("reason")
    ).drop("_dup")


def _quarantine_rows(frame: pl.DataFrame, bad: pl.DataFrame) -> pl.DataFrame:
    if bad.height == 0:
        return pl.DataFrame(schema=QUARANTINE_SCHEMA)
    raw = frame.join(bad.select(ROW, "reason", pl.col("ts").alias("ts_utc")), on=ROW, how="inner").sort(ROW)
    value_cols = [c for c in raw.columns if c not in (ROW, "reason", "ts_utc")]
    return raw.select(
        pl.col(ROW),
        pl.col("symbol").cast(pl.String).alias("symbol"),
        pl.col("ts").cast(pl.String).alias("ts"),
        pl.col("ts_utc"),
        pl.col("reason"),
        pl.struct([pl.col(c).cast(pl.String) for c in value_cols]).struct.json_encode().alias("raw"),
    )
