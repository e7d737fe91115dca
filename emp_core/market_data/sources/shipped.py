"""The real data shipped under ``data/`` (see data/PROVENANCE.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from emp_core.errors import EmpError
from emp_core.market_data.sources.base import Coverage, coverage_of, window_filter

FILES = {"bars_1d": "bars_daily.parquet", "bars_1h": "bars_hourly.parquet"}


@dataclass(frozen=True)
class ShippedSource:
    data_dir: Path
    name: str = "shipped"

    def path(self, dataset: str) -> Path:
        if dataset not in FILES:
            raise EmpError(f"the shipped data has no dataset {dataset!r}; choose one of {', '.join(FILES)}")
        path = Path(self.data_dir) / FILES[dataset]
        if not path.exists():
            raise EmpError(f"{path}: shipped data file missing; run `make data` to regenerate it")
        return path

    def read(
        self, dataset: str, start: datetime | None, end: datetime | None, symbols: Sequence[str] | None
    ) -> pl.DataFrame:
        return pl.scan_parquet(self.path(dataset)).filter(window_filter(start, end, symbols)).collect()

    def coverage(self, dataset: str, symbols: Sequence[str] | None) -> Coverage:
        return coverage_of(pl.scan_parquet(self.path(dataset)).filter(window_filter(None, None, symbols)))

    def describe(self) -> str:
        return str(self.data_dir)
