"""``emp ingest``: bars from a file, the shipped data, a synthetic universe or Yahoo into the store,
through the same path as the Dagster assets (validation, quarantine, idempotent replace, journal)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from emp_core.config import settings
from emp_core.errors import EmpError
from emp_core.market_data import sources
from emp_core.market_data.ingest import Partition, ingest_bars, journal_failure, new_run_id
from emp_core.market_data.sources import BarSource
from emp_core.store import open_store

SOURCES = ("file", "shipped", "synthetic", "yahoo")


def make_source(source: str, *, data: Path | None = None, symbol: str | None = None,
                symbols: Sequence[str] | None = None, start: datetime | None = None, end: datetime | None = None,
                interval: str = "1d", n_symbols: int = 10, seed: int = 0) -> BarSource:
    """The bar source a command line names; ``[start, end)`` is half-open."""
    if source == "file":
        if data is None:
            raise EmpError("--source file needs --data FILE")
        return sources.FileSource(data, symbol)
    if source == "shipped":
        return sources.ShippedSource(settings().data_dir)
    if source == "synthetic":
        if start is None or end is None:
            raise EmpError("--source synthetic needs --start and --end")
        if n_symbols < 1:
            raise EmpError("--n-symbols must be at least 1")
        return sources.SyntheticSource(n_symbols, start, end, interval, seed)
    if source == "yahoo":
        return sources.YahooSource(tuple(symbols or ()), interval)
    raise EmpError(f"unknown source {source!r} (one of {', '.join(SOURCES)})")


def run_ingest(source: str, *, data: Path | None = None, symbol: str | None = None,
               symbols: Sequence[str] | None = None, start: datetime | None = None, end: datetime | None = None,
               interval: str = "1d", naive_tz: str = "UTC", n_symbols: int = 10, seed: int = 0,
               tier: str | None = None) -> int:
    """Ingest one source into ``market.bars_{interval}`` and print the report (``ingest_bars`` logs its progress
    line to the ``emp`` logger).

    ``start``/``end`` are the half-open window ``[start, end)`` (the command line's inclusive
    ``--end`` is converted by its parser); the whole source when both are ``None``."""
    cfg = settings()
    if start and end and end <= start:
        raise EmpError(f"the window {start:%Y-%m-%d} .. {end:%Y-%m-%d} is empty")
    bar_source = make_source(source, data=data, symbol=symbol, symbols=symbols, start=start, end=end,
                             interval=interval, n_symbols=n_symbols, seed=seed)
    dataset = f"bars_{interval}"
    store = open_store(cfg, tier=tier)
    run_id = new_run_id("cli")
    partitions = None
    if source in ("shipped", "yahoo", "synthetic") and (start or end):
        if not (start and end):
            raise EmpError("give both --start and --end, or neither")
        partitions = [Partition(f"{start:%Y-%m-%d}..{end:%Y-%m-%d}", start, end)]
    chosen = symbols if source in ("shipped", "yahoo") else None
    try:
        report = ingest_bars(store, bar_source, dataset, run_id=run_id, partitions=partitions, symbols=chosen,
                             naive_tz=naive_tz)
    except EmpError as exc:
        if store.exists():
            journal_failure(store, run_id=run_id, dataset_name=dataset, source=bar_source, partitions=partitions,
                            error=str(exc))
        raise
    print(report.summary())
    print(f"store: {store.location}  table: market.{dataset}  run: {run_id}")
    if report.rows_quarantined:
        print(f"quarantined rows: SELECT * FROM market.quarantine WHERE run_id = '{run_id}'")
    return 0
