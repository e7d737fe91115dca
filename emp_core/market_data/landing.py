"""The landing folder: bar files dropped into ``$EMP_HOME/landing/<dataset>/`` are ingested once each.

A file is picked up when it is complete: a CSV or Parquet file (``.csv``, ``.parquet``, ``.pq``), not hidden
and not written to for ``settle_seconds`` (writers should still write ``.name.part`` and rename). Ingest
replaces, per symbol, the span the file covers ([first, last] bar; rows of the symbol outside it and other
symbols stay), validates every row (bad rows to ``market.quarantine`` with their reason) and journals the
run, exactly as `emp ingest` of a file does. Then the file is moved, never deleted:

- ``processed/<UTC stamp>-<name>`` when it was stored (some rows may be quarantined: nothing is lost);
- ``rejected/<UTC stamp>-<name>`` with ``<that>.reason.txt`` when the file itself is unusable (not a bar file,
  missing columns, no rows) or none of its rows is (each is in ``market.quarantine`` with its reasons): the
  reason names the file and the problem.

A failure of the store (the server down) leaves the file where it is, so a later run takes it again.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from emp_core.clock import utcnow
from emp_core.errors import InputFileError
from emp_core.market_data.ingest import Partition, dataset
from emp_core.market_data.pipeline import WindowResult, ingest_window
from emp_core.market_data.readers import read_bar_file
from emp_core.market_data.sources import FileSource
from emp_core.market_data.validate import validate_bars

log = logging.getLogger("emp.ingest")

SUFFIXES = (".csv", ".parquet", ".pq")
SOURCE_NAME = "landing"


def landing_dir(home: Path, dataset_name: str) -> Path:
    return Path(home) / "landing" / dataset(dataset_name).name


@dataclass(frozen=True)
class LandingFile:
    path: Path
    dataset: str
    digest: str  # SHA-256 of the content, first 16 hex digits
    mtime_ns: int

    @property
    def run_key(self) -> str:
        """One run per file content and drop: the same bytes dropped again later are taken again (idempotent)."""
        return f"landing-{self.dataset}-{self.path.name}-{self.digest}-{self.mtime_ns}"


def pending(home: Path, dataset_name: str, *, settle_seconds: float = 2.0,
            now: float | None = None) -> list[LandingFile]:
    """The complete files waiting in the dataset's landing folder, oldest first."""
    folder = landing_dir(home, dataset_name)
    if not folder.is_dir():
        return []
    now = time.time() if now is None else now
    out = []
    for path in folder.iterdir():
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in SUFFIXES:
            continue
        stat = path.stat()
        if now - stat.st_mtime < settle_seconds:
            continue  # still being written
        out.append(LandingFile(path, dataset(dataset_name).name, _digest(path), stat.st_mtime_ns))
    return sorted(out, key=lambda f: (f.mtime_ns, f.path.name))


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def years_spanned(path: Path, dataset_name: str, *, now: datetime | None = None) -> tuple[int, int] | None:
    """First and last year of the file's valid bars (None when the file is unusable or holds none)."""
    spec = dataset(dataset_name)
    try:
        checked = validate_bars(read_bar_file(path), interval=spec.interval, now=now or utcnow())
    except InputFileError:
        return None
    if not checked.valid.height:
        return None
    ts = checked.valid.get_column("ts")
    return ts.min().year, ts.max().year


def source(path: Path) -> FileSource:
    return FileSource(Path(path), name=SOURCE_NAME)


def settle(path: Path, outcome: str, reason: str | None = None, *, now: datetime | None = None) -> Path:
    """Move a landing file to ``processed/`` or ``rejected/`` (with its reason) beside the landing folder's
    files; returns where it went. The stamp keeps every drop of the same name apart."""
    if outcome not in ("processed", "rejected"):
        raise ValueError(outcome)
    target_dir = Path(path).parent / outcome
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{(now or utcnow()):%Y%m%dT%H%M%S%fZ}-{Path(path).name}"
    if reason is not None:
        target.with_name(target.name + ".reason.txt").write_text(reason.rstrip() + "\n", encoding="utf-8")
    shutil.move(str(path), target)
    log.info("landing: %s -> %s%s", path, target, f" ({reason})" if reason else "")
    return target


def partitions_for(years: tuple[int, int]) -> list[Partition]:
    return [Partition(f"{y:04d}", datetime(y, 1, 1), datetime(y + 1, 1, 1)) for y in range(years[0], years[1] + 1)]


def ingest_landing_file(store, path: Path, dataset_name: str, partitions: Sequence[Partition] | None = None, *,
                        run_id: str, now: datetime | None = None, **limits) -> WindowResult:
    """Ingest one landing file (module docstring) and move it; the checks cover ``partitions`` (default: the
    years the file spans). An unusable file is moved to ``rejected/`` with its reason and the error re-raised;
    any other failure (the store) leaves the file in place."""
    path = Path(path)
    now = now or utcnow()
    try:
        read_bar_file(path)  # file-level problems first, before anything is stored
        years = years_spanned(path, dataset_name, now=now)
        if partitions is None:
            partitions = partitions_for(years or (now.year, now.year))
    except InputFileError as exc:
        settle(path, "rejected", str(exc), now=now)
        raise
    result = ingest_window(store, source(path), dataset_name, partitions, run_id=run_id, now=now, span_only=True,
                           **limits)
    r = result.report
    if r.rows_in and not r.rows_stored:  # nothing usable: every row is in the quarantine with its reasons
        settle(path, "rejected", f"{path}: every one of its {r.rows_in} rows was quarantined "
                                 f"(SELECT * FROM market.quarantine WHERE run_id = '{run_id}')", now=now)
    else:
        settle(path, "processed", now=now)
    return result
