"""``emp evolve``: the walk-forward evolution on a user's own universe, its trials in ``$EMP_HOME``'s registry."""

from __future__ import annotations

import json
import logging
import math
import time
from functools import partial
from pathlib import Path

import polars as pl

from emp_core.clock import utcnow
from emp_core.config import settings
from emp_core.errors import EmpError
from emp_core.evolution.fitness import Universe
from emp_core.evolution.promotion import figure
from emp_core.evolution.registry import StoreRegistry
from emp_core.evolution.run import EvolutionSettings, evolve_universe
from emp_core.market_data.readers import read_bar_file
from emp_core.market_data.validate import validate_bars
from emp_core.sensory.features import compute_features, is_intraday
from emp_core.store import open_store

log = logging.getLogger("emp.evolve")


def _universe(data: Path, symbol: str | None, naive_tz: str, use_macro: bool,
              calendar: str | None = None) -> tuple[Universe, object]:
    raw = read_bar_file(data, symbol)
    now = utcnow()
    if is_intraday(validate_bars(raw, interval="1h", now=now, naive_tz=naive_tz).valid):
        raise EmpError(f"{data}: holds intraday bars; the evolution works on daily bars (252 a year)")
    checked = validate_bars(raw, interval="1d", now=now, naive_tz=naive_tz)  # stamps bars by session date
    bars = checked.valid
    if symbol:
        bars = bars.filter(pl.col("symbol") == symbol)
    if bars.height == 0:
        raise EmpError(f"{data}: no valid daily bars{f' for {symbol}' if symbol else ''} among {checked.rows_in} rows")
    from emp_core.sensory.cli import shipped_macro

    features = compute_features(bars, shipped_macro() if use_macro else None, calendar=calendar, name=str(data))
    return Universe.from_frames(bars, features), checked


def _save_quarantine(data: Path, quarantine: pl.DataFrame) -> Path | None:
    if quarantine.height == 0:
        return None
    out = settings().home / "evolve" / f"{data.stem}.{utcnow():%Y%m%dT%H%M%S}.quarantine.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    quarantine.write_csv(out)
    return out


def run_evolve(data: Path, *, symbol: str | None = None, seed: int = 0, population: int = 40, generations: int = 5,
               train_years: int = 3, commission: float = 0.001, dataset: str | None = None, use_macro: bool = True,
               calendar: str | None = None, naive_tz: str = "UTC", as_json: bool = False) -> int:
    """The walk-forward evolution on ``data``'s daily bars, its trials in ``$EMP_HOME``'s registry; prints the
    promotion decision (one JSON object with ``as_json``). Progress (per step and per window) goes to the
    ``emp`` logger, never to stdout."""
    t0 = time.perf_counter()
    for name, value in (("population", population), ("generations", generations)):
        if value < 2:
            raise EmpError(f"--{name} must be at least 2")
    if not (0 <= commission < 0.1):
        raise EmpError("--commission is a rate per fill in [0, 0.1), e.g. 0.001")
    data = Path(data)
    universe, checked = _universe(data, symbol, naive_tz, use_macro, calendar)
    log.info("evolve: %s valid bars of %d symbol(s), sensory features computed in %.1fs",
             f"{checked.valid.height:,}", len(universe.symbols), time.perf_counter() - t0)
    # The dataset a search is counted against: named by the user, or by its symbols, so a renamed, copied or
    # extended file still counts every trial run on those instruments before.
    dataset = dataset or "symbols:" + ",".join(sorted(universe.symbols))
    span = (min(universe.ts[s][0] for s in universe.symbols), max(universe.ts[s][-1] for s in universe.symbols))
    quarantine_path = _save_quarantine(data, checked.quarantine)
    if not as_json:
        print(f"{data}: {checked.rows_in:,} rows in, {checked.valid.height:,} valid, {checked.quarantine.height:,} "
              f"quarantined; {len(universe.symbols)} symbol(s), daily bars {str(span[0])[:10]} .. {str(span[1])[:10]}")
        if quarantine_path:
            print(f"  every quarantined row, with its reason: {quarantine_path}")
    cfg = EvolutionSettings(population=population, generations=generations, seed=seed,
                            train_years=train_years, commission=commission)
    store = open_store()
    run_id = f"cli-{utcnow():%Y%m%dT%H%M%S%f}"
    result = evolve_universe(universe, cfg, run_id=run_id, registry=StoreRegistry(store), dataset=dataset)
    d = result.decision
    report = {"promoted": d.promoted, "reason": d.reason, "champion": result.champion.as_dict() if d.promoted else None,
              "dataset": dataset, "run_id": run_id, "trials_added": result.trials_added,
              "windows": len(result.windows), "quarantined_rows": checked.quarantine.height,
              "seconds": round(time.perf_counter() - t0, 2), **_finite(d.as_dict())}
    if as_json:
        print(json.dumps(report, default=str))
        return 0
    _print_decision(report, store)
    return 0


def _finite(values: dict) -> dict:
    """JSON has no NaN or infinity: such a figure is reported as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


def _print_decision(r: dict, store) -> None:
    num = partial(figure, r)

    print(f"decision: {'champion ' + r['champion']['name'] + ' promoted' if r['promoted'] else 'no champion'}")
    print(f"  deflated Sharpe      {num('dsr')}  (champion SR {num('sharpe', '.4f')} vs SR0 {num('sr0', '.4f')} per "
          f"bar over {r['n_bars']} bars, {r['evidence_start'][:10]} .. {r['evidence_end'][:10]})")
    print(f"  trials               N = {r['n_trials']} in the registry (this run added {r['trials_added']} "
          "evaluations), "
          f"{num('n_effective', '.1f')} effective, V = {num('sharpe_variance', '.3g')}, "
          f"skew {num('skew', '.2f')}, kurtosis {num('kurtosis', '.2f')}")
    print(f"  out-of-sample PSR    {num('oos_psr')}  (walk-forward track, {r['oos_bars']} bars, SR "
          f"{num('oos_sharpe', '.4f')} per bar)")
    print(f"  PBO                  {num('pbo')}  ({r['pbo_configs']} configurations, {r['pbo_splits']} splits)")
    print(f"  reason: {r['reason']}")
    print(f"registry: {store.location} evolution.trials, dataset {r['dataset']} ({r['seconds']:.1f} s)")
