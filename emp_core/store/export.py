"""Stored partitions as hive-partitioned Parquet, for batch analytics (Spark, Polars, DuckDB, pandas).

``export_parquet(store, "sensory.fused", root)`` writes one file per partition::

    root/sensory/fused/dataset=bars_1d/year=2009/data.parquet

Partition columns live in the directory names (hive style), not in the files: ``spark.read.parquet`` and
``pl.scan_parquet(..., hive_partitioning=True)`` add them back. ``year`` is the calendar year of the
table's time column (``ts``); any other partition column is a column of the table. Defaults:
``(dataset, year)`` for tables with both (the ``sensory.*`` tables), ``(year,)`` for the bar tables.

- **Per partition, atomic**: a partition's rows are read with one query and written to a hidden temporary
  file in its directory, then renamed over ``data.parquet`` (``os.replace``): a reader sees the old file or
  the new one, never half of one. A failed write leaves the old file and no temporary file.
- **Idempotent**: the rows are read in a fixed order, so the same rows give the same bytes; a partition
  whose file already holds them is left alone (not rewritten), one whose rows changed is replaced, and
  directories of partitions not exported this time (another ``only=`` selection, rows since deleted from
  the store) are left as they are.
- **Either store**: the SQL (``$name`` parameters, ``EXTRACT``/``CAST``, ``LIMIT``, ``ORDER BY`` positions)
  is valid in DuckDB and PostgreSQL, through ``store.query``.
"""

from __future__ import annotations

import filecmp
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from emp_core.errors import EmpError
from emp_core.store.duckdb_store import check_ident

YEAR = "year"
FILE = "data.parquet"
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"  # Hive's (and Spark's) directory name for a null value


@dataclass(frozen=True)
class PartitionExport:
    values: dict[str, object]  # e.g. {"dataset": "bars_1d", "year": 2009}
    path: Path
    rows: int
    changed: bool  # False: the file already held exactly these rows and was left alone


@dataclass(frozen=True)
class ExportSummary:
    table: str
    root: Path  # the table's directory: read it with spark.read.parquet(root) or pl.scan_parquet(root / "**/*.parquet")
    partition_by: tuple[str, ...]
    partitions: list[PartitionExport]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions)

    @property
    def changed(self) -> int:
        return sum(p.changed for p in self.partitions)


def default_partitioning(columns: Sequence[str], time_column: str = "ts") -> tuple[str, ...]:
    """``(dataset, year)``, ``(year,)``, ``(dataset,)`` or ``()`` by what the table has."""
    return (*(["dataset"] if "dataset" in columns else []), *([YEAR] if time_column in columns else []))


def export_parquet(
    store,
    table: str,
    directory: str | Path,
    *,
    partition_by: Sequence[str] | None = None,
    only: Mapping[str, Sequence] | None = None,
    time_column: str = "ts",
) -> ExportSummary:
    """Write ``table``'s partitions under ``directory/<schema>/<name>/`` (module docstring).

    ``partition_by``: column names, ``"year"`` for the year of ``time_column`` (default
    :func:`default_partitioning`). ``only``: export just the partitions whose values are listed, e.g.
    ``{"year": [2024]}`` after a run that wrote 2024 (other partitions' directories are not touched).
    """
    t0 = time.perf_counter()
    check_ident(table)
    columns = store.query(f"SELECT * FROM {table} LIMIT 0").columns
    keys = tuple(default_partitioning(columns, time_column) if partition_by is None else partition_by)
    for key in keys:
        if key not in columns and not (key == YEAR and time_column in columns):
            raise EmpError(f"{table}: cannot partition by {key!r}; columns are {', '.join(columns)}")
    for key in only or {}:
        if key not in keys:
            raise EmpError(f"only= names {key!r}, which is not a partition column ({', '.join(keys) or 'none'})")
    root = Path(directory).joinpath(*table.split("."))
    selected = [
        values for values in _partition_values(store, table, keys, time_column)
        if all(values[k] in set(allowed) for k, allowed in (only or {}).items())
    ]
    exported = [_export_one(store, table, root, values, columns, time_column) for values in selected]
    return ExportSummary(table, root, keys, exported, time.perf_counter() - t0)


def _year_expr(time_column: str) -> str:
    return f"CAST(EXTRACT(YEAR FROM {_quoted(time_column)}) AS INTEGER)"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _partition_values(store, table: str, keys: tuple[str, ...], time_column: str) -> list[dict[str, object]]:
    if not keys:
        return [{}]
    exprs = [f"{_year_expr(time_column)} AS {YEAR}" if k == YEAR else _quoted(k) for k in keys]
    order = ", ".join(str(i + 1) for i in range(len(keys)))
    frame = store.query(f"SELECT DISTINCT {', '.join(exprs)} FROM {table} ORDER BY {order}")
    return [dict(zip(keys, row, strict=True)) for row in frame.iter_rows()]


def _export_one(store, table: str, root: Path, values: dict[str, object], columns: list[str],
                time_column: str) -> PartitionExport:
    clauses, params = [], {}
    for i, (key, value) in enumerate(values.items()):
        if key == YEAR and value is not None:
            clauses.append(f"{_quoted(time_column)} >= $lo AND {_quoted(time_column)} < $hi")
            params |= {"lo": datetime(int(value), 1, 1), "hi": datetime(int(value) + 1, 1, 1)}
        elif key == YEAR:
            clauses.append(f"{_quoted(time_column)} IS NULL")
        elif value is None:
            clauses.append(f"{_quoted(key)} IS NULL")
        else:
            clauses.append(f"{_quoted(key)} = $p{i}")
            params[f"p{i}"] = value
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    order = ", ".join(str(i + 1) for i in range(len(columns)))  # every column: the same rows, the same order
    rows = store.query(f"SELECT * FROM {table} {where} ORDER BY {order}", params)
    rows = rows.drop([k for k in values if k in rows.columns])
    directory = root.joinpath(*(f"{k}={_dir_value(v)}" for k, v in values.items()))
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / FILE
    temp = directory / f".{FILE}.{uuid.uuid4().hex}.tmp"
    try:
        rows.write_parquet(temp)
        changed = not (target.exists() and filecmp.cmp(temp, target, shallow=False))
        if changed:
            os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return PartitionExport(dict(values), target, rows.height, changed)


def _dir_value(value: object) -> str:
    return NULL_PARTITION if value is None else quote(str(value), safe="")
