"""Orchestration overhead of the demo: the work its steps do against the wall time of the whole command.

    .venv/bin/python benchmarks/bench_demo.py [--single-run] [--steps] [--repeat N]

Runs ``emp demo`` on the shipped data in a fresh ``EMP_HOME`` (the three runs it makes: macro sources,
the yearly-partitioned assets over the range, the rest), and with ``--single-run`` also the whole graph as one
Dagster run over the range, side by side. From each instance's event log it reports per run the wall
time (first to last event), the planning events, the steps' durations, and the **work**: the seconds the
domain code itself reports in the materialisation metadata (``seconds`` and ``check_seconds``: ingest,
its checks, the macro loads, the sensory computation, the universe, calibration and evolution), counted once
per step, and in the metadata of the asset checks timed in steps of their own (``seconds``: the drift checks).
One rule for libraries: their one-time setup in a process is not work, whichever step pays it. The bars
assets report it apart (``setup_seconds``: exchange_calendars' import and XNYS build, Great Expectations'
import and suites), and it is printed on its own line. Work share = work / the runs' wall time
(the issue's measure: each run from its first event to its last, summed), and / the command's wall time
(process start to exit: Python and Dagster's import, loading the definitions and the closing summary too).
With ``--repeat N`` each variant runs N times in fresh homes and the median share closes the report: on
these shared machines one run's share moves by several points.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EMP = Path(sys.executable).with_name("emp")
SINGLE = ("from emp_dagster.commands import prepare_instance, _run, _shipped_range\n"
          "from emp_dagster.defs.market_data.partitions import partition_keys\n"
          "prepare_instance(); lo, hi = _shipped_range(); first, last = partition_keys(lo, hi)\n"
          "r = _run('emp_demo', first, last); raise SystemExit(0 if r.success else 1)\n")


def measure(home: Path, argv: list[str]) -> float:
    env = {**os.environ, "EMP_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def runs_of(home: Path) -> list[dict]:
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    out = []
    with dg.DagsterInstance.get() as instance:
        for run in sorted(instance.get_runs(), key=lambda r: instance.get_run_stats(r.run_id).start_time or 0):
            logs = instance.all_logs(run.run_id)
            events = [e for e in logs if e.dagster_event is not None]
            planned = sum(e.dagster_event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
                          for e in events)
            starts, steps, work, per_step, setup = {}, 0.0, {}, {}, {}
            for e in events:
                kind = e.dagster_event.event_type
                if kind == dg.DagsterEventType.STEP_START:
                    starts[e.step_key] = e.timestamp
                elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
                    per_step[e.step_key] = e.timestamp - starts.get(e.step_key, e.timestamp)
                    steps += per_step[e.step_key]
                elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
                    meta = e.dagster_event.event_specific_data.materialization.metadata
                    seconds = sum(float(meta[k].value) for k in ("seconds", "check_seconds") if k in meta)
                    key = (e.step_key, e.dagster_event.asset_key.to_user_string())
                    work[key] = max(work.get(key, 0.0), seconds)  # the same figures on every partition's event
                    if "setup_seconds" in meta:
                        setup[key] = float(meta["setup_seconds"].value)
                elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                    data = e.dagster_event.event_specific_data  # a check timed on its own (the drift checks)
                    if "seconds" in data.metadata:
                        key = (e.step_key, data.asset_check_key.to_user_string())
                        work[key] = float(data.metadata["seconds"].value)
            out.append({"run": run.run_id[:8], "wall": logs[-1].timestamp - logs[0].timestamp, "planned": planned,
                        "steps": steps, "work": sum(work.values()), "setup": sum(setup.values()),
                        "per_step": {k: (d, sum(w for (step, _), w in work.items() if step == k))
                                     for k, d in per_step.items()}})
    return out


def report(name: str, wall: float, runs: list[dict], steps: bool = False) -> float:
    """Print one command's figures; return its work share of the runs' wall time."""
    work = sum(r["work"] for r in runs)
    print(f"{name}: command wall {wall:.1f} s; {len(runs)} run(s)")
    for r in runs:
        print(f"  run {r['run']}: wall {r['wall']:6.1f} s, planning events {r['planned']:5d}, "
              f"steps {r['steps']:6.1f} s, work {r['work']:6.1f} s")
        for step, (duration, step_work) in r["per_step"].items() if steps else ():
            print(f"    step {step:<40} {duration:6.1f} s, work {step_work:6.1f} s")
    runs_wall = sum(r["wall"] for r in runs)
    setup = sum(r["setup"] for r in runs)
    print(f"  library setup, not work: {setup:.1f} s (exchange_calendars' XNYS build, Great Expectations' import and "
          f"suites: once per process); work and setup together {(work + setup) / runs_wall:.0%} of the runs' wall")
    print(f"  work {work:.1f} s = {work / runs_wall:.0%} of the runs' wall time ({runs_wall:.1f} s; target >= 75%), "
          f"{work / wall:.0%} of the command's; steps {sum(r['steps'] for r in runs):.1f} s = "
          f"{sum(r['steps'] for r in runs) / wall:.0%} of the command's")
    return work / runs_wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--single-run", action="store_true", help="also the whole graph as one run, for comparison")
    parser.add_argument("--steps", action="store_true", help="each step's duration and work")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each variant (median share reported)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat: {args.repeat}: at least 1 run")
    variants = [("emp demo (three runs)", [str(EMP), "demo"])]
    for name, command in variants + ([("one run over the range", None)] if args.single_run else []):
        shares = []
        for i in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp:
                home = Path(tmp)
                argv = command
                if argv is None:  # a script file, not python -c: pyspark's import exits a main module without __file__
                    script = home / "single_run.py"
                    script.write_text(SINGLE)
                    argv = [sys.executable, str(script)]
                wall = measure(home, argv)
                label = f"{name}, {i + 1}/{args.repeat}" if args.repeat > 1 else name
                shares.append(report(label, wall, runs_of(home), args.steps))
        if args.repeat > 1:
            print(f"{name}: work share of the runs' wall time over {args.repeat} runs: median "
                  f"{statistics.median(shares):.0%} (min {min(shares):.0%}, max {max(shares):.0%}; target >= 75%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
