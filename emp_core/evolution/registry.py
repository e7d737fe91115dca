"""The trial registry: every evaluation ever run against a dataset, across runs (the N of the gates).

A row is one evaluation of one genome on one walk-forward span: the run that made it,
the hash of the settings that determine evaluations (``config_hash``: seed, population,
generations, windows, costs; not the gates' thresholds, which change no evaluation),
the dataset and the hash of its content (``dataset_version``), the window and phase
(train, selection, test), the genome's genes and hash, its objectives and its per-bar
return moments (bars, mean, standard deviation, skewness, kurtosis, Sharpe ratio).

- **Idempotent**: a row is identified by (dataset, dataset_version, config_hash,
  window_id, phase, genome_hash); running the same settings on the same data again adds
  nothing, a new seed or configuration adds its trials.
- **N** is the number of distinct *trials*, distinct genomes (``genome_hash``), over every
  run on that dataset whatever its costs or settings: a catalogue seed evaluated in every
  window of every run is one trial, as is a genome two seeds both found; a run with
  another commission tries the same genomes again, and must not start N from nothing. Trials on
  earlier versions of the data (before the latest bars arrived) still count: the search
  over the dataset's history does not start again when a bar is added.

``MemoryRegistry`` keeps the rows in memory (benchmarks, tests, a one-off walk-forward);
``StoreRegistry`` keeps them in the store's ``evolution.trials`` table (either tier).
"""

from __future__ import annotations

import hashlib
import json
from typing import Protocol

import numpy as np
import polars as pl

from emp_core.clock import utcnow
from emp_core.evolution.genome import GENE_NAMES, Genome

KEY = ("dataset", "dataset_version", "config_hash", "window_id", "phase", "genome_hash")
MOMENTS = ("n_bars", "ret_mean", "ret_std", "ret_skew", "ret_kurtosis", "sharpe_per_bar")
SCHEMA: dict[str, pl.DataType] = {
    "dataset": pl.String, "dataset_version": pl.String, "config_hash": pl.String, "run_id": pl.String,
    "window_id": pl.Int64, "phase": pl.String, "span_start": pl.Datetime("us"), "span_end": pl.Datetime("us"),
    "genome_hash": pl.String, "costs": pl.String,
    **dict.fromkeys(GENE_NAMES, pl.Float64), "long_only": pl.Boolean,
    "sharpe_lb": pl.Float64, "max_drawdown": pl.Float64, "turnover": pl.Float64, "trades": pl.Int64,
    "n_bars": pl.Int64, "ret_mean": pl.Float64, "ret_std": pl.Float64, "ret_skew": pl.Float64,
    "ret_kurtosis": pl.Float64, "sharpe_per_bar": pl.Float64, "recorded_at": pl.Datetime("us"),
}
TABLE = "evolution.trials"


def digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:16]


def genome_hash(genome: Genome) -> str:
    """The genes (as float64 bytes) and the long-only flag: equal genomes, equal hash."""
    genes = np.array([getattr(genome, k) for k in GENE_NAMES], dtype=np.float64)
    return digest(genes.tobytes() + bytes([genome.long_only]))


def costs_key(costs: dict) -> str:
    return json.dumps(costs, sort_keys=True)


def config_hash(settings: dict) -> str:
    return digest(json.dumps(settings, sort_keys=True, default=str).encode())


def dataset_version(universe) -> str:
    """A hash of the universe's content: symbols, timestamps, prices and features."""
    h = hashlib.sha256()
    for s in universe.symbols:
        h.update(s.encode())
        h.update(np.ascontiguousarray(universe.ts[s]).view(np.int64).tobytes())
        for block in (universe.ohlc[s], universe.features[s]):
            for k in sorted(block):
                h.update(np.ascontiguousarray(block[k], dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def return_moments(returns: np.ndarray) -> dict[str, np.ndarray]:
    """Per column of per-bar ``returns`` (bars x trials): bars, mean, sd (ddof 1), skewness and
    (non-excess) kurtosis (population moments, as the PSR uses them) and the per-bar Sharpe ratio
    (0 where the sd is 0)."""
    r = np.asarray(returns, dtype=float)
    n = r.shape[0]
    mean = r.mean(axis=0)
    sd = r.std(axis=0, ddof=1) if n > 1 else np.zeros(r.shape[1])
    pop = r.std(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (r - mean) / pop
        skew = np.where(pop > 0, np.mean(z**3, axis=0), 0.0)
        kurt = np.where(pop > 0, np.mean(z**4, axis=0), 3.0)
        sharpe = np.where(sd > 0, mean / sd, 0.0)
    return {"n_bars": np.full(r.shape[1], n), "ret_mean": mean, "ret_std": sd, "ret_skew": skew,
            "ret_kurtosis": kurt, "sharpe_per_bar": sharpe}


class TrialRegistry(Protocol):
    def record(self, rows: pl.DataFrame) -> int:
        """Add the rows whose key is not there yet; return how many were added."""

    def trials(self, dataset: str) -> pl.DataFrame:
        """Every row recorded for ``dataset``, at every version of its data."""


def _conform(rows: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in SCHEMA if c not in rows.columns and c != "recorded_at"]
    if missing:
        raise ValueError(f"trial rows lack {', '.join(missing)}")
    stamp = utcnow()
    if "recorded_at" not in rows.columns:
        rows = rows.with_columns(pl.lit(stamp).alias("recorded_at"))
    return rows.select([pl.col(c).cast(t) for c, t in SCHEMA.items()]).unique(subset=list(KEY), keep="first",
                                                                               maintain_order=True)


class MemoryRegistry:
    def __init__(self) -> None:
        self._rows = pl.DataFrame(schema=SCHEMA)

    def record(self, rows: pl.DataFrame) -> int:
        new = _conform(rows).join(self._rows.select(KEY), on=list(KEY), how="anti", nulls_equal=True)
        self._rows = pl.concat([self._rows, new])
        return new.height

    def trials(self, dataset: str) -> pl.DataFrame:
        return self._rows.filter(pl.col("dataset") == dataset)


class StoreRegistry:
    """``evolution.trials`` in the tier's store (embedded or institutional): appended to, never replaced."""

    def __init__(self, store) -> None:
        self.store = store

    def record(self, rows: pl.DataFrame) -> int:
        new = _conform(rows)
        self.store.ensure_table(TABLE, SCHEMA, KEY)
        return self.store.insert_new(TABLE, new, KEY)

    def trials(self, dataset: str) -> pl.DataFrame:
        self.store.ensure_table(TABLE, SCHEMA, KEY)
        frame = self.store.query(f"SELECT * FROM {TABLE} WHERE dataset = $d "
                                 "ORDER BY recorded_at, run_id, window_id, phase, genome_hash", {"d": dataset})
        return frame.select([pl.col(c).cast(t) for c, t in SCHEMA.items()])


def distinct_trials(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per trial (a distinct genome), the first recorded, with its genes."""
    return frame.unique(subset=["genome_hash"], keep="first", maintain_order=True)


def genomes_of(frame: pl.DataFrame) -> list[Genome]:
    """The genomes of registry rows (genes decoded as stored)."""
    out = []
    for row in frame.select(*GENE_NAMES, "long_only", "genome_hash").iter_rows(named=True):
        values = {k: row[k] for k in GENE_NAMES}
        values["holding_period"] = int(values["holding_period"])
        out.append(Genome(**values, long_only=row["long_only"], name=f"t{row['genome_hash']}"))
    return out
