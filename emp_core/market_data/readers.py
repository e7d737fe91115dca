"""Read a user's CSV or Parquet file of bars into a frame with canonical column names.

File-level problems (missing file, empty file, binary content, unreadable Parquet,
missing columns, no rows) raise :class:`InputFileError` naming the file and the
problem; nothing is written. Row-level problems (bad numbers, bad timestamps) are
left for :mod:`emp_core.market_data.validate` to quarantine. CSV values are read
as text so that a bad value in one row cannot fail the whole file.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from emp_core.errors import InputFileError
from emp_core.market_data.schema import REQUIRED_FILE_COLUMNS, canonical_name

PARQUET_MAGIC = b"PAR1"


def read_bar_file(path: str | Path, symbol: str | None = None) -> pl.DataFrame:
    """Return the file's rows with columns renamed to ``symbol, ts, open, ...``.

    ``symbol`` names the instrument of a file without a symbol column; with a
    symbol column it must agree with the file (or be omitted).
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "file not found")
    if path.is_dir():
        raise InputFileError(path, "is a directory, not a file")
    size = path.stat().st_size
    if size == 0:
        raise InputFileError(path, "file is empty (0 bytes)")
    with path.open("rb") as fh:
        head = fh.read(8192)
    if head.startswith(PARQUET_MAGIC) or path.suffix.lower() in {".parquet", ".pq"}:
        frame = _read_parquet(path)
    else:
        frame = _read_csv(path, head)
    frame = _canonical_columns(path, frame)
    if frame.height == 0:
        raise InputFileError(path, "no data rows (only a header)")
    return _apply_symbol(path, frame, symbol)


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for corrupt files
        raise InputFileError(path, f"not a readable Parquet file ({_first_line(exc)})") from None


def _read_csv(path: Path, head: bytes) -> pl.DataFrame:
    if b"\x00" in head:
        raise InputFileError(path, "binary content, not a CSV text file")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the 8 KiB boundary is still text.
        if exc.start < len(head) - 4:
            raise InputFileError(path, "not UTF-8 text, not a CSV file") from None
    try:
        return pl.read_csv(path, infer_schema=False, truncate_ragged_lines=False)
    except Exception as exc:
        raise InputFileError(path, f"not a readable CSV file ({_first_line(exc)})") from None


def _canonical_columns(path: Path, frame: pl.DataFrame) -> pl.DataFrame:
    mapping: dict[str, str] = {}
    seen: dict[str, str] = {}
    for col in frame.columns:
        name = canonical_name(col)
        if name is None:
            continue
        if name in seen:
            raise InputFileError(path, f"columns {seen[name]!r} and {col!r} both mean {name!r}; keep one")
        seen[name] = col
        mapping[col] = name
    missing = [c for c in REQUIRED_FILE_COLUMNS if c not in seen]
    if missing:
        found = ", ".join(frame.columns) or "none"
        raise InputFileError(path, f"missing required column(s) {', '.join(missing)}; found columns: {found}")
    return frame.select([pl.col(src).alias(dst) for src, dst in mapping.items()])


def _apply_symbol(path: Path, frame: pl.DataFrame, symbol: str | None) -> pl.DataFrame:
    if "symbol" not in frame.columns:
        if not symbol:
            raise InputFileError(path, "has no symbol column; pass the instrument with --symbol")
        return frame.with_columns(pl.lit(symbol).alias("symbol"))
    if symbol:
        others = frame.select(pl.col("symbol").cast(pl.String).str.strip_chars().unique().drop_nulls())
        others = sorted(s for s in others.to_series().to_list() if s != symbol)
        if others:
            raise InputFileError(
                path, f"--symbol {symbol} disagrees with the file's symbol column ({', '.join(others[:5])})"
            )
    return frame


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
