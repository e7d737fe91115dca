"""Calibration thresholds and drift statistics for the sensory tables.

Windows, per dataset: the **latest partition** is the calendar month of the
latest stored bar; the **reference window** is the ``REFERENCE_MONTHS`` (36)
months before it.

Calibration (``sensory.calibration``): per dimension (and the fused signal),
dataset and symbol, plus a pooled row with symbol ``*``, the ``warn`` and
``alert`` thresholds are the 95% and 99% quantiles of |score| over the
reference window: historically 5% and 1% of bars reach them.

Drift, per dimension and dataset, latest partition against reference window:

- PSI, population stability index (Siddiqi 2006): bins at the reference
  deciles, PSI = sum_b (c_b - r_b) ln(c_b / r_b) over the shares of the current
  (c) and reference (r) scores in each bin (shares floored at 1e-4).
  Rule of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift.
- KS, the two-sample Kolmogorov-Smirnov statistic D = sup |F_ref - F_cur| and
  its asymptotic p-value Q(lambda) = 2 sum_k (-1)^(k-1) exp(-2 k^2 lambda^2),
  lambda = (sqrt(n_e) + 0.12 + 0.11 / sqrt(n_e)) D, n_e = n m / (n + m)
  (Stephens 1970). With thousands of bars any shift is "significant", so the
  check gates on D itself, an effect size, not on the p-value.
- alert rate: share of the latest partition's bars whose |score| reaches the
  symbol's alert threshold (1% expected).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from emp_core.market_data.quality import CheckOutcome
from emp_core.sensory.pipeline import OUTPUTS, TABLES, score_column
from emp_core.store import DuckDBStore

REFERENCE_MONTHS = 36
WARN_QUANTILE = 0.95
ALERT_QUANTILE = 0.99
BINS = 10
SHARE_FLOOR = 1e-4


@dataclass(frozen=True)
class DriftLimits:
    psi: float = 0.25
    ks: float = 0.2
    alert_rate: float = 0.05  # five times the 1% the alert threshold lets through historically


def psi(reference: np.ndarray, current: np.ndarray, bins: int = BINS) -> float:
    """Population stability index of ``current`` against ``reference`` (bins at reference quantiles)."""
    edges = np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=edges.size + 1) / reference.size
    c = np.bincount(np.searchsorted(edges, current, side="right"), minlength=edges.size + 1) / current.size
    r, c = np.maximum(r, SHARE_FLOOR), np.maximum(c, SHARE_FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def ks(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """(D, asymptotic p-value) of the two-sample Kolmogorov-Smirnov test."""
    a, b = np.sort(reference), np.sort(current)
    points = np.concatenate([a, b])
    d = float(np.max(np.abs(np.searchsorted(a, points, side="right") / a.size
                            - np.searchsorted(b, points, side="right") / b.size)))
    ne = a.size * b.size / (a.size + b.size)
    lam = (math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d
    if lam < 1e-3:
        return d, 1.0
    k = np.arange(1, 101)
    p = float(2.0 * np.sum((-1.0) ** (k - 1) * np.exp(-2.0 * k**2 * lam**2)))
    return d, min(max(p, 0.0), 1.0)


def _windows_sql(table: str) -> str:
    return f"""WITH bounds AS (
        SELECT dataset, date_trunc('month', max(ts)) AS latest FROM {table} GROUP BY dataset)
    SELECT b.dataset, b.latest, b.latest - INTERVAL {REFERENCE_MONTHS} MONTH AS ref_start FROM bounds b"""


def calibrate(store: DuckDBStore) -> pl.DataFrame:
    """Replace ``sensory.calibration`` with the thresholds of every sensory table present; return them."""
    present = set(store.tables())
    parts = []
    for name in OUTPUTS:
        table = TABLES[name]
        if table not in present:
            continue
        score = score_column(name)
        ref = f"""WITH w AS ({_windows_sql(table)}),
            ref AS (SELECT t.dataset, t.symbol, abs(t.{score}) AS a, w.ref_start, w.latest
                    FROM {table} t JOIN w USING (dataset)
                    WHERE t.ts >= w.ref_start AND t.ts < w.latest AND t.{score} IS NOT NULL)"""
        stats = f"""count(*) AS n, quantile_cont(a, {WARN_QUANTILE}) AS warn,
            quantile_cont(a, {ALERT_QUANTILE}) AS alert, any_value(ref_start) AS ref_start,
            any_value(latest) AS ref_end"""
        parts.append(store.query(f"""{ref}
            SELECT '{name}' AS dimension, dataset, symbol, {stats} FROM ref GROUP BY dataset, symbol
            UNION ALL
            SELECT '{name}' AS dimension, dataset, '*' AS symbol, {stats} FROM ref GROUP BY dataset"""))
    frame = pl.concat(parts) if parts else pl.DataFrame()
    if frame.height:
        frame = frame.with_columns(pl.col("n").cast(pl.Int64)).sort("dimension", "dataset", "symbol")
        store.overwrite_table("sensory.calibration", frame)
    return frame


def drift(store: DuckDBStore, name: str, limits: DriftLimits = DriftLimits()) -> CheckOutcome:
    """The drift check of one sensory table: PSI, KS and alert rate of the latest partition, per dataset."""
    table, score = TABLES[name], score_column(name)
    description = (f"latest month vs the {REFERENCE_MONTHS} months before: PSI < {limits.psi}, "
                   f"KS D < {limits.ks}, alert rate <= {limits.alert_rate:.0%}")
    present = set(store.tables())
    if table not in present:
        return CheckOutcome("drift", True, f"{description}; skipped: {table} is empty", {"skipped": True})
    rows = store.query(f"""WITH w AS ({_windows_sql(table)})
        SELECT t.dataset, t.symbol, t.{score} AS score, t.ts >= w.latest AS current
        FROM {table} t JOIN w USING (dataset)
        WHERE t.ts >= w.ref_start AND t.{score} IS NOT NULL""")
    thresholds = store.query(
        "SELECT dataset, symbol, alert FROM sensory.calibration WHERE dimension = $d", {"d": name}) \
        if "sensory.calibration" in present else None
    per_dataset: dict[str, dict] = {}
    failed = []
    for (dataset,), group in rows.group_by(["dataset"], maintain_order=True):
        ref = group.filter(~pl.col("current")).get_column("score").to_numpy()
        cur_rows = group.filter(pl.col("current"))
        cur = cur_rows.get_column("score").to_numpy()
        if ref.size < 2 * BINS or cur.size == 0:
            per_dataset[dataset] = {"skipped": f"{ref.size} reference and {cur.size} current scores"}
            continue
        d, p = ks(ref, cur)
        stats = {"psi": round(psi(ref, cur), 4), "ks_d": round(d, 4), "ks_p": float(f"{p:.3g}"),
                 "n_reference": int(ref.size), "n_current": int(cur.size)}
        if thresholds is not None and thresholds.height:
            stats["alert_rate"] = round(_alert_rate(cur_rows, thresholds.filter(pl.col("dataset") == dataset)), 4)
        per_dataset[dataset] = stats
        if (stats["psi"] >= limits.psi or stats["ks_d"] >= limits.ks
                or stats.get("alert_rate", 0.0) > limits.alert_rate):
            failed.append(dataset)
    measured = [s for s in per_dataset.values() if "psi" in s]
    metadata: dict = {"datasets": per_dataset}
    if measured:
        metadata |= {"max_psi": max(s["psi"] for s in measured), "max_ks_d": max(s["ks_d"] for s in measured)}
    summary = "; ".join(f"{k}: {_brief(s)}" for k, s in per_dataset.items())
    return CheckOutcome("drift", not failed, f"{description}. {summary}", metadata)


def _brief(stats: dict) -> str:
    shown = [f"{m}={stats[m]}" for m in ("psi", "ks_d", "alert_rate") if m in stats]
    return ", ".join(shown) if shown else f"skipped ({stats.get('skipped', '')})"


def _alert_rate(current: pl.DataFrame, thresholds: pl.DataFrame) -> float:
    pooled = thresholds.filter(pl.col("symbol") == "*").get_column("alert")
    fallback = pooled[0] if pooled.len() else None
    joined = current.join(thresholds.select("symbol", "alert"), on="symbol", how="left")
    limit = joined.get_column("alert").fill_null(fallback)
    hits = (joined.get_column("score").abs() >= limit).fill_null(False)
    return float(hits.mean()) if current.height else 0.0
