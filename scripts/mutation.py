"""Mutation testing of the core modules against their own tests: ``make mutation`` (or this script).

    .venv/bin/python scripts/mutation.py [MODULE ...]

For each module, mutmut 2 (in ``.venv-mutmut``) makes simple mutants (operators, comparisons, constants,
strings) and runs the module's test files on each in a fresh process; a mutant is killed when a test
fails. The work happens in a copy of the committed tree under a temporary directory, never in the
working tree, with ``PYTHONPATH`` pointing at the copy so the tests import the mutated code. Prints
killed / survived / timed out / suspicious per module and the kill rate; the survivors' ids can be
inspected with ``mutmut show ID`` in the printed directory (kept with ``--keep``).

mutmut 3 is not used: it forks one child per mutant from a process that has imported Polars, and
Polars' thread pool hangs in a forked child (every mutant timed out).
"""

from __future__ import annotations

import argparse
import io
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = ROOT / ".venv-mutmut" / "bin" / "mutmut"
PYTHON = ROOT / ".venv" / "bin" / "python"
# module -> the test files that exist for it (its own tests, run on every mutant)
TARGETS = {
    "emp_core/market_data/validate.py": ["tests/test_bad_input.py", "tests/test_ingest.py"],
    "emp_core/evolution/overfitting.py": ["tests/test_overfitting.py", "tests/test_pbo.py"],
    "emp_core/backtest/engine.py": ["tests/test_backtest.py"],
    "emp_core/sensory/calibration.py": ["tests/test_calibration.py"],
    "emp_core/sensory/when.py": ["tests/test_when.py"],
    "emp_core/sensory/anomaly.py": ["tests/test_anomaly.py"],
    "emp_core/sensory/what.py": ["tests/test_what.py"],
    "emp_core/sensory/why.py": ["tests/test_why.py"],
    "emp_core/sensory/how.py": ["tests/test_corwin_schultz.py"],
}


def committed_tree(into: Path) -> None:
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def mutate(module: str, tests: list[str], keep: bool) -> dict[str, int]:
    work = Path(tempfile.mkdtemp(prefix="emp_mutation_"))
    committed_tree(work)
    runner = f"{PYTHON} -m pytest -x -q -p no:cacheprovider {' '.join(tests)}"
    env = {"PYTHONPATH": str(work), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    t0 = time.perf_counter()
    subprocess.run([str(MUTMUT), "run", "--paths-to-mutate", module, "--runner", runner, "--no-progress"],
                   check=False, cwd=work, env=env, capture_output=True)  # mutmut exits non-zero on survivors
    with sqlite3.connect(work / ".mutmut-cache") as db:  # mutmut 2's cache: one row per mutant with its status
        counts = dict(db.execute("SELECT status, count(*) FROM Mutant GROUP BY status").fetchall())
        survivors = [i for (i,) in db.execute("SELECT id FROM Mutant WHERE status = 'bad_survived' ORDER BY id")]
    counts["seconds"] = round(time.perf_counter() - t0)
    print(f"{module}: {counts}; survivors {survivors} ({work if keep else 'removed'})", flush=True)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help=f"modules to mutate (default: all of {', '.join(TARGETS)})")
    parser.add_argument("--keep", action="store_true", help="keep each module's working copy (mutmut show ID)")
    args = parser.parse_args()
    if not MUTMUT.exists():
        print("no .venv-mutmut: run `make mutation`", file=sys.stderr)
        return 2
    modules = args.modules or list(TARGETS)
    unknown = [m for m in modules if m not in TARGETS]
    if unknown:
        print(f"not a target: {', '.join(unknown)}; choose from {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    rows = {m: mutate(m, TARGETS[m], args.keep) for m in modules}
    print(f"\n  {'module':<36} killed / tested (survived, timed out, suspicious, untested)")
    for m, c in rows.items():
        tested = sum(c.get(k, 0) for k in ("ok_killed", "bad_survived", "bad_timeout", "ok_suspicious"))
        rate = c.get("ok_killed", 0) / tested if tested else float("nan")
        print(f"  {m:<36} {c.get('ok_killed', 0)} / {tested} = {rate:.0%} ({c.get('bad_survived', 0)}, "
              f"{c.get('bad_timeout', 0)}, {c.get('ok_suspicious', 0)}, {c.get('untested', 0)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
