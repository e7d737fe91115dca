"""The source protocol."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import polars as pl

# Coverage: one row per symbol, columns symbol, first_ts, last_ts: the span the
# source says it can deliver. Freshness checks hold the stored bars to it.
Coverage = pl.DataFrame


class BarSource(Protocol):
    name: str

    def read(
        self, dataset: str, start: datetime | None, end: datetime | None, symbols: Sequence[str] | None
    ) -> pl.DataFrame:
        """Raw rows in [start, end) (canonical columns, any dtypes)."""
        ...

    def coverage(self, dataset: str, symbols: Sequence[str] | None) -> Coverage: ...

    def describe(self) -> str:
        """What to write in the journal's ``input`` column (a path, a URL, parameters)."""
        ...


def window_filter(start: datetime | None, end: datetime | None, symbols: Sequence[str] | None) -> pl.Expr:
    expr = pl.lit(True)
    if start is not None:
        expr &= pl.col("ts") >= start
    if end is not None:
        expr &= pl.col("ts") < end
    if symbols is not None:
        expr &= pl.col("symbol").is_in(list(symbols))
    return expr


def empty_coverage() -> Coverage:
    """For sources that promise nothing beyond the rows they return (a file, a web response)."""
    return pl.DataFrame(schema={"symbol": pl.String, "first_ts": pl.Datetime("us"), "last_ts": pl.Datetime("us")})


def coverage_of(frame: pl.LazyFrame | pl.DataFrame) -> Coverage:
    lazy = frame.lazy() if isinstance(frame, pl.DataFrame) else frame
    return (
        lazy.group_by("symbol")
        .agg(pl.col("ts").min().alias("first_ts"), pl.col("ts").max().alias("last_ts"))
        .sort("symbol")
        .collect()
    )
