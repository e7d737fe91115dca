"""A user's own CSV or Parquet file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from emp_core.market_data.readers import read_bar_file
from emp_core.market_data.sources.base import Coverage, empty_coverage


@dataclass
class FileSource:
    """Reads the whole file once; ``read`` returns every row (validation decides what is stored)."""

    path: Path
    symbol: str | None = None
    name: str = "file"
    _rows: pl.DataFrame | None = field(default=None, repr=False)

    def rows(self) -> pl.DataFrame:
        if self._rows is None:
            self._rows = read_bar_file(self.path, self.symbol)
        return self._rows

    def read(
        self, dataset: str, start: datetime | None, end: datetime | None, symbols: Sequence[str] | None
    ) -> pl.DataFrame:
        rows = self.rows()
        if symbols is not None:
            rows = rows.filter(pl.col("symbol").cast(pl.String).str.strip_chars().is_in(list(symbols)))
        return rows

    def coverage(self, dataset: str, symbols: Sequence[str] | None) -> Coverage:
        return empty_coverage()

    def describe(self) -> str:
        return str(Path(self.path).resolve())
