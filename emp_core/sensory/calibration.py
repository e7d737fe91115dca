"""Calibration thresholds and drift statistics for the sensory tables.

Windows, per dataset: the **latest partition** is the calendar month of the
latest stored bar; the **reference window** is the ``REFERENCE_MONTHS`` (36)
months before it.

Calibration (``sensory.calibration``): per dimension (and the fused signal),
dataset and symbol, plus a pooled row with symbol ``*``, the ``warn`` and
``alert`` thresholds are the 95% and 99% quantiles of |score| over the bars of
the reference window where the dimension is **active** (|score| > 0): of the
bars where the dimension says anything, historically 5% and 1% lie strictly
above them. ``n`` counts the reference bars, ``n_active`` the active ones, and
``sufficient`` says whether at least ``MIN_ACTIVE_REFERENCE`` (100 =
1 / (1 - 0.99)) active bars stand behind the quantiles: with fewer, the 99%
quantile is an interpolation between the largest values, not a quantile, and
the drift check does not use it (below). A dimension never active in the
reference gets the stated floor ``THRESHOLD_FLOOR`` (1e-6) for both, so a
threshold is never 0. (Quantiles over
all bars gave 0 where a dimension is mostly silent: ``anomaly_score`` is
exactly 0 on 96% of bars, its 95% quantile over EURUSD's hourly reference was 0,
and every bar counted as an alert.) A bar counts as over a threshold only
when |score| is **strictly above** it (``>``), so a silent bar (score 0) never
counts.

Drift, per dimension and dataset, latest partition against reference window:

- PSI, population stability index (Siddiqi 2006): PSI = sum_b (c_b - r_b)
  ln(c_b / r_b) over the shares of the current (c) and reference (r) scores in
  each bin (shares floored at 1e-4). Rule of thumb: < 0.1 stable, 0.1-0.25
  moderate shift, > 0.25 major shift. Bins: every **point mass** of the
  reference, a value held by at least one bin's share (1/``BINS``, 10%) of the
  reference bars (such as the exact 0 of a silent dimension), is a bin of its
  own; the other values are binned at the deciles of the reference values that
  are not point masses, with the point masses as further edges, so no bin holds
  values from both sides of a point mass. (Deciles of all values collapsed onto
  a point mass and put it in one bin with the values beside it: a rise of
  positive anomaly scores from 2.5% to 27.5% of bars gave PSI 0.0000.)
- KS, the two-sample Kolmogorov-Smirnov statistic D = sup |F_ref - F_cur| and
  its asymptotic p-value Q(lambda) = 2 sum_k (-1)^(k-1) exp(-2 k^2 lambda^2),
  lambda = (sqrt(n_e) + 0.12 + 0.11 / sqrt(n_e)) D, n_e = n m / (n + m)
  (Stephens 1970). With thousands of bars any shift is "significant", so the
  check gates on D itself, an effect size, not on the p-value.
- alert rate: share of the latest partition's **active** bars (|score| > 0)
  whose |score| is strictly above their symbol's alert threshold, so the rate
  and the threshold count the same bars and about 1% is expected; the limit is
  5%. (Divided by all bars, a dimension active on 4% of bars, as ANOMALY is,
  expected 0.04% and could not reach 5% even when every active value doubled:
  0.9% of all bars against 22% of active bars.) A symbol's own threshold is
  used when it is ``sufficient``, else the pooled (``*``) one when that is,
  else the symbol's bars are not counted. Below ``MIN_ACTIVE_CURRENT`` (100)
  counted active bars the rate is not measured: the row carries
  ``alert_rate_insufficient_data: True`` and ``alert_rate_skipped`` ("alert
  rate: insufficient data: k active current bars with a threshold < 100, not
  tested"), has no ``alert_rate``, and the description says so; the dataset is
  judged on PSI and KS alone. 100 because, with independent active bars and the
  nominal 1%, the rate exceeds 5% by chance in at most 0.13% of windows of 100
  or more (2% at 50, 4% at 30, 10% at 10); alerts that cluster in time raise
  that.

Minimum sample: PSI and KS assume independent draws, and sensory scores are
persistent (lag-1 autocorrelation 0.86-0.99 on the shipped data: WHY and WHAT
0.97-0.99), so a month holds far fewer independent observations than bars. The
current window's **effective size** is the sum over symbols, each symbol's
scores in time order, of the smaller of two counts: the Newey-West count
n / (1 + 2 sum_k (1 - k / (L + 1)) rho_k), lags k = 1..L,
L = floor(4 (n / 100)^(2/9)) (Bartlett weights;
``emp_core.evolution.overfitting.effective_bars``), and the AR(1) count
n (1 - rho_1) / (1 + rho_1). The Newey-West count alone saturates near n / 8.6
on a month of persistent scores (L = 5 lags cannot see a memory of 30-100 bars):
at rho 0.99 it counted 110 of 744 bars where about 4 are independent, and the
check raised a false alarm on 75% of such months; the AR(1) count sees the
memory, the Newey-West count guards against series that are not AR(1).
Symbols are not independent of each other (WHY's macro z-scores are the same
for every symbol on a date), and a part they share may be more persistent than
each symbol's own (a common factor on a minority of the variance hardly moves a
symbol's lag-1 autocorrelation). So the sum is capped by the **pooled size**,
read on the reference without a model: each symbol's reference scores are
standardised by their own mean and sd; for every run of b consecutive reference
dates (b the number of dates in the current window) the grand mean of the scores
in it is taken; the pooled size is 1 / their variance, with the overlapping
batch-means factor n / (n - b) (n reference dates). Independent short-memory
symbols give about the number of scores (the block mean of m b unit-variance
values has variance 1 / (m b)); symbols moving as one give one series' count; a
shared persistent part gives what it leaves. A Kish design effect
1 + (m - 1) rho from the same-date correlation, tried first, missed the last
case: eight symbols with a common rho_1-0.995 factor on 30% of the variance kept
an effective size of ~410 where about 10 is right, and raised false alarms in 5
of 40 seeds (10 of 40 at 50%). The effective size is the smaller of the sum and
the pooled size; with a reference shorter than ``MIN_BLOCKS`` (8) current
windows there is no pooled size and it is the largest single symbol's count (the
symbols taken as one series: no evidence they are independent is no evidence).
Rows report ``effective_n``, ``effective_n_summed`` and ``effective_n_pooled``
(None when there is none: also when symbols cancel exactly, a mirror pair whose
pooled mean has no variance, which the pooled size cannot read, so the effective
size is the largest symbol's count, the conservative answer).
A constant series (zero spread within rounding) counts every value. Verdicts
are on the figures as reported, so a row never shows a value on the wrong side
of its limit: effective size to 0.1, PSI, D and the alert rate to 4 decimals.
Below
``MIN_EFFECTIVE`` (``DriftLimits.min_effective``) the dataset is **not tested**:
its row says "insufficient data: effective n = X < MIN, not tested", carries
``insufficient_data: True``, and does not fail the check (it is not evidence
of drift). When no dataset could be tested, the check does not pass: its
description begins with "NOTHING TESTED" and its metadata has ``tested: 0`` (a
check that passes on no data would read as "no drift"). The autocorrelation is
read per symbol from its reference window and applied to the current count: read
on the current window, a level shift inside it raised the estimate, so the
larger the shift the likelier the check was to go untested (a 4 sd step in a
month of rho-0.9 scores dropped the count from 157 to under 100). MIN_EFFECTIVE was chosen by seeded simulation
(tests/test_calibration.py and the figures in the commit): with the reference's
own distribution, independent draws give PSI >= 0.25 or D >= 0.2 in 24% of
samples of 50 and 4% of 80, so the least tested size is 100; AR(1) current
samples (rho 0 to 0.99, 30 to 3000 bars) then raise a false alarm in at most 5%
of seeds, and a shift of one standard deviation over four symbols' month of
hourly scores (rho 0.9) is flagged. With scores as persistent as WHY and WHAT,
a single month rarely holds 100 effective observations: their checks mostly
report insufficient data, which is what such a month can support.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.special import kolmogorov

from emp_core.evolution.overfitting import effective_bars, no_spread
from emp_core.market_data.quality import CheckOutcome
from emp_core.sensory.pipeline import OUTPUTS, TABLES, score_column
from emp_core.store import DuckDBStore

REFERENCE_MONTHS = 36
WARN_QUANTILE = 0.95
ALERT_QUANTILE = 0.99
BINS = 10
SHARE_FLOOR = 1e-4
THRESHOLD_FLOOR = 1e-6  # the warn and alert threshold of a dimension never active in the reference
MIN_EFFECTIVE = 100.0  # least effective size of the current window that drift is tested on
MIN_REFERENCE = 100  # least reference scores of a symbol (or common dates) a correlation is read from
MIN_ACTIVE_REFERENCE = 100  # least active reference bars behind a symbol's thresholds (1 / (1 - ALERT_QUANTILE))
MIN_ACTIVE_CURRENT = 100  # least active current bars the alert rate is measured on
MIN_BLOCKS = 8  # least reference length, in current windows, the pooled size is read from


@dataclass(frozen=True)
class DriftLimits:
    psi: float = 0.25
    ks: float = 0.2
    alert_rate: float = 0.05  # five times the 1% the alert threshold lets through historically
    min_effective: float = MIN_EFFECTIVE  # below it the current window is not tested


def psi_bins(reference: np.ndarray, bins: int = BINS) -> tuple[np.ndarray, np.ndarray]:
    """(edges, point masses) of the PSI bins: the point masses are the values held by at least
    1/``bins`` of ``reference``; the edges are the inner quantiles of the other values plus the masses."""
    values, counts = np.unique(reference, return_counts=True)
    masses = values[counts * bins >= reference.size]
    rest = reference[~np.isin(reference, masses)]
    inner = np.quantile(rest, np.linspace(0.0, 1.0, bins + 1)[1:-1]) if rest.size else np.empty(0)
    return np.unique(np.concatenate([inner, masses])), masses


def _bin_index(x: np.ndarray, edges: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Bin of each value: a point mass has its own bin after the edges.size + 1 intervals."""
    interval = np.searchsorted(edges, x, side="right")
    at = np.minimum(np.searchsorted(masses, x), max(masses.size - 1, 0))
    on_mass = masses[at] == x if masses.size else np.zeros(x.shape, dtype=bool)
    return np.where(on_mass, edges.size + 1 + at, interval)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = BINS) -> float:
    """Population stability index of ``current`` against ``reference``: bins at the quantiles of the
    reference, each point mass (a value on at least 1/``bins`` of the reference) a bin of its own."""
    edges, masses = psi_bins(reference, bins)
    size = edges.size + 1 + masses.size
    r = np.bincount(_bin_index(reference, edges, masses), minlength=size) / reference.size
    c = np.bincount(_bin_index(current, edges, masses), minlength=size) / current.size
    r, c = np.maximum(r, SHARE_FLOOR), np.maximum(c, SHARE_FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def ar1_bars(scores: np.ndarray) -> float:
    """n (1 - rho_1) / (1 + rho_1): the effective count of an AR(1) series with the sample lag-1
    autocorrelation rho_1 (negative rho_1 counts as 0, so the count is never above n)."""
    x = np.asarray(scores, dtype=float)
    x = x[np.isfinite(x)]
    z = x - x.mean() if x.size else x
    var = float(z @ z)
    if x.size < 3 or no_spread(math.sqrt(var / x.size), np.abs(x).max()):  # constant within rounding: nothing to relate
        return float(x.size)
    rho = max(0.0, float(z[1:] @ z[:-1]) / var)
    return x.size * (1.0 - rho) / (1.0 + rho)


def _effective(scores: np.ndarray) -> float:
    return min(effective_bars(scores), ar1_bars(scores))


def _split(scores: np.ndarray, groups: np.ndarray) -> dict:
    """Each group's scores, in the order given (the groups' rows need not be contiguous)."""
    keys, first, inverse, counts = np.unique(groups, return_index=True, return_inverse=True, return_counts=True)
    parts = np.split(scores[np.argsort(inverse, kind="stable")], np.cumsum(counts)[:-1])
    return {keys[i]: parts[i] for i in np.argsort(first)}


def pooled_size(groups: np.ndarray, dates: np.ndarray, reference: np.ndarray, reference_groups: np.ndarray,
                reference_dates: np.ndarray) -> float | None:
    """Effective size of the current window taken as one pooled sample, read on the reference: 1 / Var of the
    grand mean of b consecutive dates, b the current window's number of dates (module docstring). None when
    the reference holds fewer than ``MIN_BLOCKS`` b dates or when that variance is 0 (symbols that cancel)."""
    dates = np.asarray(dates)
    b = np.unique(dates).size
    keep = np.isin(np.asarray(reference_groups), np.unique(np.asarray(groups)))
    x = np.asarray(reference, dtype=float)[keep]
    g = np.unique(np.asarray(reference_groups)[keep], return_inverse=True)[1]
    if b == 0 or x.size == 0:
        return None
    count = np.bincount(g)
    mean = np.bincount(g, x) / count
    sd = np.sqrt(np.bincount(g, (x - mean[g]) ** 2) / count)
    scale = np.zeros(count.size)
    np.maximum.at(scale, g, np.abs(x))
    spread = ~no_spread(sd, scale)  # a constant symbol (within rounding) has no spread to standardise by
    usable = (count >= MIN_REFERENCE)[g] & spread[g]
    z = ((x - mean[g]) / np.where(spread, sd, 1.0)[g])[usable]
    day = np.unique(np.asarray(reference_dates)[keep][usable], return_inverse=True)[1]
    n = int(day.max()) + 1 if day.size else 0
    if n < MIN_BLOCKS * b:
        return None
    sums = np.concatenate([[0.0], np.cumsum(np.bincount(day, z, n))])
    counts = np.concatenate([[0.0], np.cumsum(np.bincount(day, minlength=n))])
    blocks = (sums[b:] - sums[:-b]) / (counts[b:] - counts[:-b])
    var = float(np.mean((blocks - sums[-1] / counts[-1]) ** 2)) * n / (n - b)
    # Symbols that cancel exactly (a mirror pair) leave the pooled mean no variance: the pooled size cannot see
    # their dependence, so there is none, and the effective size falls back to the largest symbol's count.
    return 1.0 / var if var > 0 else None


def effective_size(scores: np.ndarray, groups: np.ndarray | None = None, reference: np.ndarray | None = None,
                   reference_groups: np.ndarray | None = None) -> float:
    """Sum over groups (symbols) of the autocorrelation-corrected count of each group's scores, in the
    order given (time order): the smaller of the Newey-West count (Bartlett weights) and the AR(1) count.

    With a ``reference`` (the same groups' earlier scores), each group's autocorrelation is read there and
    applied to its current count: a shift inside the current window raises the autocorrelation measured
    on it, and would make the largest shifts the likeliest to go untested."""
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        return 0.0
    if groups is None:
        groups = np.zeros(scores.size, dtype=int)
        reference_groups = None if reference is None else np.zeros(len(reference), dtype=int)
    current = _split(scores, np.asarray(groups))
    earlier = {} if reference is None else _split(np.asarray(reference, dtype=float), np.asarray(reference_groups))
    return float(sum(_counts(current, earlier)))


def _counts(current: dict, earlier: dict) -> list[float]:
    """Each group's autocorrelation-corrected count, its autocorrelation read on its reference when it has one."""
    out = []
    for g, part in current.items():
        ref = earlier.get(g)
        out.append(part.size * _effective(ref) / ref.size if ref is not None and ref.size >= MIN_REFERENCE
                   else _effective(part))
    return out


def window_size(scores: np.ndarray, groups: np.ndarray, dates: np.ndarray, reference: np.ndarray,
                reference_groups: np.ndarray, reference_dates: np.ndarray) -> dict:
    """The current window's effective size (module docstring): the smaller of the per-symbol sum and the
    pooled size, or, when the reference is too short for the pooled size, the largest per-symbol count
    (the symbols taken as one series)."""
    counts = _counts(_split(np.asarray(scores, dtype=float), np.asarray(groups)),
                     _split(np.asarray(reference, dtype=float), np.asarray(reference_groups)))
    summed = float(sum(counts))
    pooled = pooled_size(groups, dates, reference, reference_groups, reference_dates)
    effective = min(summed, pooled) if pooled is not None else max(counts, default=0.0)
    return {"effective_n": round(effective, 1), "effective_n_summed": round(summed, 1),
            "effective_n_pooled": None if pooled is None else round(pooled, 1)}


def ks(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """(D, asymptotic p-value) of the two-sample Kolmogorov-Smirnov test."""
    a, b = np.sort(reference), np.sort(current)
    points = np.concatenate([a, b])
    d = float(np.max(np.abs(np.searchsorted(a, points, side="right") / a.size
                            - np.searchsorted(b, points, side="right") / b.size)))
    ne = a.size * b.size / (a.size + b.size)
    lam = (math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d
    # Q(lambda) = 2 sum_k (-1)^(k-1) exp(-2 k^2 lambda^2), evaluated by scipy's Kolmogorov survival function:
    # the alternating series itself converges too slowly below lambda ~ 0.05 (100 terms gave 0.40 for Q = 1).
    return d, float(kolmogorov(lam))  # a probability: already in [0, 1]


def _windows_sql(table: str) -> str:
    return f"""WITH bounds AS (
        SELECT dataset, date_trunc('month', max(ts)) AS latest FROM {table} GROUP BY dataset)
    SELECT b.dataset, b.latest, b.latest - INTERVAL '{REFERENCE_MONTHS} months' AS ref_start FROM bounds b"""


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
        stats = f"""count(*) AS n, count(*) FILTER (WHERE a > 0) AS n_active,
            coalesce(percentile_cont({WARN_QUANTILE}) WITHIN GROUP (ORDER BY a) FILTER (WHERE a > 0),
                     {THRESHOLD_FLOOR}) AS warn,
            coalesce(percentile_cont({ALERT_QUANTILE}) WITHIN GROUP (ORDER BY a) FILTER (WHERE a > 0),
                     {THRESHOLD_FLOOR}) AS alert,
            count(*) FILTER (WHERE a > 0) >= {MIN_ACTIVE_REFERENCE} AS sufficient,
            min(ref_start) AS ref_start, min(latest) AS ref_end"""
        parts.append(store.query(f"""{ref}
            SELECT '{name}' AS dimension, dataset, symbol, {stats} FROM ref GROUP BY dataset, symbol
            UNION ALL
            SELECT '{name}' AS dimension, dataset, '*' AS symbol, {stats} FROM ref GROUP BY dataset"""))
    frame = pl.concat(parts) if parts else pl.DataFrame()
    if frame.height:
        frame = frame.with_columns(pl.col("n", "n_active").cast(pl.Int64)).sort("dimension", "dataset", "symbol")
        store.overwrite_table("sensory.calibration", frame)
    return frame


def drift(store: DuckDBStore, name: str, limits: DriftLimits = DriftLimits()) -> CheckOutcome:
    """The drift check of one sensory table: PSI, KS and alert rate of the latest partition, per dataset."""
    table, score = TABLES[name], score_column(name)
    description = (f"latest month vs the {REFERENCE_MONTHS} months before: PSI < {limits.psi}, "
                   f"KS D < {limits.ks}, alert rate <= {limits.alert_rate:.0%} of active bars "
                   f"(measured on >= {MIN_ACTIVE_CURRENT}), "
                   f"tested when the effective current size >= {limits.min_effective:g}")
    present = set(store.tables())
    if table not in present:  # no data is no pass: nothing was tested
        return CheckOutcome("drift", False, f"NOTHING TESTED ({table} is empty): {description}",
                            {"skipped": True, "tested": 0})
    rows = store.query(f"""WITH w AS ({_windows_sql(table)})
        SELECT t.dataset, t.symbol, t.ts, t.{score} AS score, t.ts >= w.latest AS current
        FROM {table} t JOIN w USING (dataset)
        WHERE t.ts >= w.ref_start AND t.{score} IS NOT NULL
        ORDER BY t.dataset, t.symbol, t.ts""")
    thresholds = store.query(
        "SELECT dataset, symbol, alert, sufficient FROM sensory.calibration WHERE dimension = $d", {"d": name}) \
        if "sensory.calibration" in present else None
    per_dataset: dict[str, dict] = {}
    failed = []
    for (dataset,), group in rows.group_by(["dataset"], maintain_order=True):
        ref_rows = group.filter(~pl.col("current"))
        ref = ref_rows.get_column("score").to_numpy()
        cur_rows = group.filter(pl.col("current"))
        cur = cur_rows.get_column("score").to_numpy()
        if ref.size < 2 * BINS or cur.size == 0:
            per_dataset[dataset] = {"skipped": f"{ref.size} reference and {cur.size} current scores"}
            continue
        sizes = {"n_reference": int(ref.size), "n_current": int(cur.size),
                 **window_size(cur, cur_rows.get_column("symbol").to_numpy(), cur_rows.get_column("ts").to_numpy(),
                               ref, ref_rows.get_column("symbol").to_numpy(), ref_rows.get_column("ts").to_numpy())}
        n_eff = sizes["effective_n"]  # verdicts on the figures as reported (module docstring)
        if n_eff < limits.min_effective:
            per_dataset[dataset] = {
                "insufficient_data": True, **sizes,
                "skipped": f"insufficient data: effective n = {n_eff:.1f} < {limits.min_effective:g}, not tested"}
            continue
        d, p = ks(ref, cur)
        stats = {"psi": round(psi(ref, cur), 4), "ks_d": round(d, 4), "ks_p": float(f"{p:.3g}"), **sizes}
        if thresholds is not None and thresholds.height:
            hits, active = _alert_hits(cur_rows, thresholds.filter(pl.col("dataset") == dataset))
            stats["n_active_current"] = active
            if active >= MIN_ACTIVE_CURRENT:
                stats["alert_rate"] = round(hits / active, 4)
            else:
                stats["alert_rate_insufficient_data"] = True
                stats["alert_rate_skipped"] = (f"alert rate: insufficient data: {active} active current bars "
                                               f"with a threshold < {MIN_ACTIVE_CURRENT}, not tested")
        per_dataset[dataset] = stats
        if (stats["psi"] >= limits.psi or stats["ks_d"] >= limits.ks
                or stats.get("alert_rate", 0.0) > limits.alert_rate):
            failed.append(dataset)
    measured = [s for s in per_dataset.values() if "psi" in s]
    metadata: dict = {"datasets": per_dataset, "tested": len(measured),
                      "alert_rate_tested": sum("alert_rate" in s for s in measured)}
    if measured:
        metadata |= {"max_psi": max(s["psi"] for s in measured), "max_ks_d": max(s["ks_d"] for s in measured)}
    summary = "; ".join(f"{k}: {_brief(s)}" for k, s in per_dataset.items())
    # Nothing tested is not a pass: the check says so and does not pass (a warning, as drift would be).
    head = "" if measured else "NOTHING TESTED (no dataset has enough data; no evidence either way): "
    return CheckOutcome("drift", bool(measured) and not failed, f"{head}{description}. {summary}", metadata)


def _brief(stats: dict) -> str:
    shown = [f"{m}={stats[m]}" for m in ("psi", "ks_d", "alert_rate") if m in stats]
    if not shown:
        return stats["skipped"] if stats.get("insufficient_data") else f"skipped ({stats.get('skipped', '')})"
    return ", ".join(shown + ([stats["alert_rate_skipped"]] if "alert_rate_skipped" in stats else []))


def _alert_hits(current: pl.DataFrame, thresholds: pl.DataFrame) -> tuple[int, int]:
    """(bars strictly above their alert threshold, active bars with a threshold) of the current window:
    each symbol's own threshold where ``MIN_ACTIVE_REFERENCE`` active reference bars stand behind it, else
    the pooled (``*``) one if that has them, else the symbol's bars are not counted."""
    pooled = thresholds.filter((pl.col("symbol") == "*") & pl.col("sufficient")).get_column("alert")
    fallback = pooled[0] if pooled.len() else None
    own = thresholds.filter((pl.col("symbol") != "*") & pl.col("sufficient")).select("symbol", "alert")
    joined = current.join(own, on="symbol", how="left")
    if fallback is not None:
        joined = joined.with_columns(pl.col("alert").fill_null(fallback))
    active = joined.filter((pl.col("score").abs() > 0) & pl.col("alert").is_not_null())
    hits = int((active.get_column("score").abs() > active.get_column("alert")).sum())  # strictly above
    return hits, active.height
