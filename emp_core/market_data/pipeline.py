"""Ingest a window and evaluate its quality gates: the work behind one bars materialisation."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from emp_core import calendars
from emp_core.clock import utcnow
from emp_core.market_data import quality
from emp_core.market_data.ingest import IngestReport, Partition, dataset, ingest_bars, journal_failure
from emp_core.market_data.sources.base import BarSource
from emp_core.store import DuckDBStore

log = logging.getLogger("emp.ingest")


@dataclass(frozen=True)
class WindowResult:
    report: IngestReport
    checks: list[quality.CheckOutcome]
    check_seconds: float = 0.0  # reading the stored window back and running its checks
    # library setup, once per process (its first window): the exchange calendar's build, Great Expectations'
    # import and suites
    setup_seconds: float = 0.0

    @property
    def failed_checks(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]


def ingest_window(
    store: DuckDBStore,
    source: BarSource,
    dataset_name: str,
    partitions: Sequence[Partition],
    *,
    run_id: str,
    symbols: Sequence[str] | None = None,
    now: datetime | None = None,
    max_gap_ratio: float | None = None,
    max_lag_bars: int | None = None,
    span_only: bool = False,
) -> WindowResult:
    """Ingest ``partitions`` (consecutive) from ``source``, then check the stored window.

    With ``span_only`` (a file of updates: the landing folder) the input replaces, per symbol, only the span it
    covers instead of the whole window; the checks still cover the window.
    A failure before the store commits is journaled as ``failed`` and re-raised.
    """
    spec = dataset(dataset_name)
    now = now or utcnow()
    try:
        setup = calendars.prepare(spec.calendar)
        report = ingest_bars(store, source, spec.name, run_id=run_id, partitions=None if span_only else partitions,
                             symbols=symbols, now=now)
    except Exception as exc:
        journal_failure(store, run_id=run_id, dataset_name=spec.name, source=source, partitions=partitions,
                        error=f"{type(exc).__name__}: {exc}")
        raise
    setup += quality.prepare_expectations()
    t0 = time.perf_counter()
    start, end = partitions[0].start, partitions[-1].end
    bars = store.read_bars(spec.name, start=start, end=end)
    started = store.query(f"SELECT count(*) AS n FROM (SELECT 1 FROM market.{spec.name} WHERE ts < $s LIMIT 1) q",
                          {"s": start}).item() > 0  # the dataset has bars before this window
    coverage = report.coverage
    checks = [
        *quality.expectation_checks(bars),
        quality.calendar_gaps(bars, spec, start, end, coverage, max_gap_ratio),
        quality.freshness(bars, spec, start, end, coverage, now, max_lag_bars, started=started),
    ]
    result = WindowResult(report=report, checks=checks, check_seconds=time.perf_counter() - t0,
                          setup_seconds=setup)
    failed = result.failed_checks
    log.info("%s [%s, %s): checks %d passed, %d failed%s", spec.name, start.date(), end.date(),
             len(checks) - len(failed), len(failed), f" ({', '.join(failed)})" if failed else "")
    return result
