"""``emp features``: the sensory cortex on a user's file, outside Dagster."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from emp_core.clock import utcnow
from emp_core.config import settings
from emp_core.errors import EmpError
from emp_core.market_data.macro import macro_series, treasury_curve
from emp_core.market_data.readers import read_bar_file
from emp_core.market_data.validate import validate_bars
from emp_core.sensory.features import compute_features, is_intraday
from emp_core.sensory.fusion import DIMENSIONS, check_weights
from emp_core.sensory.why import MacroInputs


def shipped_macro() -> MacroInputs:
    data = settings().data_dir
    return MacroInputs(curve=treasury_curve(data)[0], series=macro_series(data)[0])


def run_features(data: Path, out: Path, *, symbol: str | None = None, interval: str = "auto",
                 naive_tz: str = "UTC", use_macro: bool = True, weights: Mapping[str, float] | None = None,
                 calendar: str | None = None) -> int:
    t0 = time.perf_counter()
    weights = check_weights(weights)
    if out.suffix.lower() not in (".parquet", ".pq", ".csv"):
        raise EmpError(f"{out}: the output must end in .parquet or .csv")
    if out.resolve() == Path(data).resolve():
        raise EmpError(f"{out}: the output would overwrite the input")
    raw = read_bar_file(data, symbol)
    now = utcnow()
    checked = validate_bars(raw, interval="1h" if interval != "1d" else "1d", now=now, naive_tz=naive_tz)
    intraday = interval == "intraday" or (interval == "auto" and is_intraday(checked.valid))
    if not intraday and interval != "1d":
        checked = validate_bars(raw, interval="1d", now=now, naive_tz=naive_tz)  # stamp daily bars by session date
    if checked.valid.height == 0:
        reasons = checked.quarantine.get_column("reason").value_counts(sort=True).head(3)
        raise EmpError(f"{data}: no valid bars among {checked.rows_in} rows (e.g. "
                       + "; ".join(f"{r} x{n}" for r, n in reasons.iter_rows()) + ")")
    macro = shipped_macro() if use_macro else None
    features = compute_features(checked.valid, macro, weights=weights, intraday=intraday, calendar=calendar,
                                name=str(data))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        features.write_csv(out)
    else:
        features.write_parquet(out)
    _report(data, out, checked, features, intraday, time.perf_counter() - t0)
    return 0


def _report(data: Path, out: Path, checked, features: pl.DataFrame, intraday: bool, seconds: float) -> None:
    q = checked.quarantine
    print(f"{data}: {checked.rows_in:,} rows in, {checked.valid.height:,} valid, {q.height:,} quarantined; "
          f"{features.get_column('symbol').n_unique()} symbol(s), {'intraday' if intraday else 'daily'} bars "
          f"{features.get_column('ts').min()} .. {features.get_column('ts').max()}")
    if q.height:
        quarantine = out.with_name(out.stem + ".quarantine.csv")
        q.write_csv(quarantine)
        for reason, n in q.get_column("reason").value_counts(sort=True).head(5).iter_rows():
            print(f"  quarantined x{n}: {reason}")
        print(f"  every quarantined row, with its reason: {quarantine}")
    print(f"  {'dimension':<9} {'defined':>8} {'mean score':>11} {'mean conf':>10}")
    for d in (*DIMENSIONS, "signal"):
        score, conf = ("signal", "signal_confidence") if d == "signal" else (f"{d}_score", f"{d}_confidence")
        s = features.get_column(score)
        mean = s.mean()
        print(f"  {d:<9} {s.is_not_null().mean():>8.1%} {mean if mean is not None else float('nan'):>11.4f} "
              f"{features.get_column(conf).mean():>10.3f}")
    print(f"  anomalies flagged: {int(features.get_column('anomaly_flag').sum())}")
    print(f"wrote {features.height:,} rows x {features.width} columns to {out} in {seconds:.2f} s")
