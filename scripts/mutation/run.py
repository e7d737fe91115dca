"""Mutation testing of the core modules against their own tests: ``make mutation`` (or this script).

    .venv/bin/python scripts/mutation/run.py [MODULE ...] [--strings] [--workers N] [--show]

For each module: mutmut 2's engine (in ``.venv-mutmut``, scripts/mutation/mutants.py) lists the simple
mutants (operators, comparisons, keywords and constants, and/or, arguments, assignments to None); one
traced run of the module's own tests records which tests execute which line; then each mutant is
written into a private copy of the tree and only the tests that execute its line run on it (fastest
first, stopping at the first failure; a mutant of module-level code runs every test). A mutant is
killed when a test fails (or the run exceeds its time limit), survives when they all pass; a mutant on
a line no test executes survives too (no test could notice it).

Survivors judged equivalent (no input can tell them from the original) are listed, each with the
reason, in scripts/mutation/equivalent.toml, matched by module, original line and mutated line; they
are still run, and one that a test kills is reported as a wrong listing and counted as killed. The rate
is killed / (mutants - equivalent); a timeout counts as killed (shown apart). Every other survivor is
printed with its line.

The copies are of the working tree's files that git tracks or would track (at a clean commit: the
committed tree), under a temporary directory, with PYTHONPATH on the copy, so the working tree is never touched.

Why not mutmut's own runner: mutmut 3 forks a child per mutant from a process that has imported
Polars, whose thread pool hangs in a forked child (every mutant timed out); mutmut 2 runs every test
file on every mutant, one mutant at a time, about 10 s a mutant here: hours per module.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Queue

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MUTMUT_PYTHON = ROOT / ".venv-mutmut" / "bin" / "python"
PYTHON = ROOT / ".venv" / "bin" / "python"
EQUIVALENT = HERE / "equivalent.toml"
# module -> its own test files
SENSORY = "tests/test_sensory.py"  # every dimension against the bar-by-bar reference
TARGETS = {
    "emp_core/market_data/validate.py": ["tests/test_validate.py", "tests/test_bad_input.py", "tests/test_ingest.py"],
    "emp_core/evolution/overfitting.py": ["tests/test_overfitting_oracles.py", "tests/test_overfitting.py",
                                          "tests/test_pbo.py"],
    "emp_core/backtest/engine.py": ["tests/test_engine_edges.py", "tests/test_engine_oracle.py",
                                    "tests/test_backtest.py"],
    # (the kernel's mutants run with NUMBA_DISABLE_JIT=1, set below: compiled, no line would be traced, and every
    # mutant would pay a compile of seconds)
    "emp_core/backtest/kernel.py": ["tests/test_kernel.py", "tests/test_engine_edges.py", "tests/test_engine_oracle.py",
                                    "tests/test_backtest.py"],
    "emp_core/sensory/calibration.py": ["tests/test_calibration.py", "tests/test_calibration_edges.py",
                                        "tests/test_calibration_stats.py"],
    "emp_core/sensory/when.py": ["tests/test_when.py", "tests/test_when_edges.py", SENSORY],
    "emp_core/sensory/anomaly.py": ["tests/test_anomaly.py", "tests/test_anomaly_edges.py", SENSORY],
    "emp_core/sensory/what.py": ["tests/test_what.py", SENSORY],
    "emp_core/sensory/why.py": ["tests/test_why.py", "tests/test_why_edges.py", SENSORY],
    "emp_core/sensory/how.py": ["tests/test_corwin_schultz.py", "tests/test_how_edges.py", SENSORY],
    "emp_core/sensory/fusion.py": [SENSORY],
    "emp_core/sensory/base.py": ["tests/test_base_edges.py", SENSORY],
    "emp_core/store/failover.py": ["tests/test_failover.py", "tests/test_failover_mutants.py"],
    "emp_core/store/postgres_store.py": ["tests/test_stores.py", "tests/test_failover.py", "tests/test_streams.py",
                                         "tests/test_postgres_store_mutants.py"],
    **{m: ["tests/test_trading.py", "tests/test_trading_assets.py"] for m in (
        "emp_core/trading/intents.py", "emp_core/trading/book.py", "emp_core/trading/ledger.py",
        "emp_core/trading/readiness.py")},
    "emp_core/execution/outbox.py": ["tests/test_outbox.py", "tests/test_journal_group_commit.py"],
    "emp_core/risk/policy.py": ["tests/test_risk_policy.py"],
    "emp_core/compliance/trade.py": ["tests/test_trade_compliance.py", "tests/test_compliance_cli.py"],
    "emp_core/compliance/roi.py": ["tests/test_roi.py"],
    "emp_core/compliance/audit.py": ["tests/test_audit_chain.py"],
    "emp_core/risk/var.py": ["tests/test_risk_var.py"],
    "emp_core/risk/sizing.py": ["tests/test_risk_policy.py", "tests/test_risk_var.py"],
}
KILLED, SURVIVED, TIMEOUT, UNCOVERED, EQUIV, ERROR = (
    "killed", "survived", "timeout", "not covered", "equivalent", "error")


def copy_tree(into: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout
    for name in files.decode().split("\0"):
        src = ROOT / name
        if name and src.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, into / name)


INTERPRETED = {"emp_core/backtest/kernel.py"}  # numba modules, mutated as plain Python


def environment(tree: Path, module: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV"))}
    env.update(PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1", **extra)
    if module in INTERPRETED:
        env["NUMBA_DISABLE_JIT"] = "1"
    return env


def pytest_command(args: list[str]) -> list[str]:
    return [str(PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", *args]


def trace(tree: Path, module: str, tests: list[str]) -> dict[str, dict]:
    """Run the tests once, unmutated, recording per test the module's lines it runs; they must pass."""
    out = tree / "trace.json"
    env = environment(tree, module, EMP_MUTATION_TARGET=str(tree / module), EMP_MUTATION_TRACE=str(out))
    run = subprocess.run(pytest_command(["-p", "scripts.mutation.trace", *tests]), cwd=tree, env=env,
                         capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise SystemExit(f"{module}: its tests fail before any mutation:\n{run.stdout[-3000:]}{run.stderr[-2000:]}")
    return json.loads(out.read_text())["tests"]


def list_mutants(module: str, strings: bool) -> list[dict]:
    cmd = [str(MUTMUT_PYTHON), str(HERE / "mutants.py"), str(ROOT / module)] + (["--strings"] if strings else [])
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def function_body_lines(path: Path) -> set[int]:
    """Lines inside a function's body; everything else (module and class bodies, decorators, signatures with
    their default values) runs once, when the module is imported, and so counts for every test."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines.update(range(node.body[0].lineno, (node.end_lineno or node.body[-1].lineno) + 1))
    return lines


def equivalents(module: str) -> dict[tuple[str, str], str]:
    if not EQUIVALENT.exists():
        return {}
    table = tomllib.loads(EQUIVALENT.read_text()).get(module, [])
    return {(e["original"].strip(), e["mutated"].strip()): e["why"] for e in table}


def run_mutant(tree: Path, module: str, source: str, tests: list[str], limit: float) -> str:
    """Run ``tests`` (stopping at the first failure) with ``module`` replaced by ``source`` in ``tree``."""
    target = tree / module
    original = target.read_text()
    try:
        target.write_text(source)
        try:
            run = subprocess.run(pytest_command(["-x", *tests]), cwd=tree, env=environment(tree, module),
                                 capture_output=True, timeout=limit, check=False)
        except subprocess.TimeoutExpired:
            return TIMEOUT
        # 1: a test failed; 2: a collection error (the mutant breaks an import); < 0: the interpreter crashed
        # on the mutant. 3-5 (internal or usage error, no tests): killed if the mutated module or a test file
        # cannot even be imported (pytest then reports the test ids as not found), else no verdict.
        if run.returncode in (3, 4, 5):
            files = sorted({t.split("::")[0] for t in tests})
            code = "; ".join([f"import {module.removesuffix('.py').replace('/', '.')}", "import runpy",
                              *(f"runpy.run_path({f!r})" for f in files)])
            imports = subprocess.run([str(PYTHON), "-c", code], cwd=tree, env=environment(tree, module),
                                     capture_output=True, check=False)
            if imports.returncode == 0:
                return ERROR
        return SURVIVED if run.returncode == 0 else KILLED
    finally:
        target.write_text(original)


def mutate(module: str, tests: list[str], strings: bool, workers: int) -> dict:
    base = Path(tempfile.mkdtemp(prefix="emp_mutation_"))
    trees = [base / f"w{i}" for i in range(workers)]
    for tree in trees:
        copy_tree(tree)
    t0 = time.perf_counter()
    missing = [t for t in tests if not (ROOT / t).exists()]
    if missing:
        raise SystemExit(f"{module}: test file(s) not found: {', '.join(missing)}")
    traced = trace(trees[0], module, tests)
    if not any(rec["lines"] for rec in traced.values()):
        raise SystemExit(f"{module}: its tests never execute it (trace recorded no line of {module})")
    in_functions = function_body_lines(ROOT / module)
    by_line: dict[int, list[tuple[float, str]]] = {}
    for nodeid, rec in traced.items():
        for line in rec["lines"]:
            by_line.setdefault(line, []).append((rec["seconds"], nodeid))
    everything = sorted((rec["seconds"], nodeid) for nodeid, rec in traced.items())
    mutants = list_mutants(module, strings)
    known = equivalents(module)
    free: Queue[Path] = Queue()
    for tree in trees:
        free.put(tree)

    def verdict(m: dict) -> str:
        chosen = sorted(by_line.get(m["line"], [])) if m["line"] in in_functions else everything
        listed = (m["original"], m["mutated"]) in known
        if not chosen:
            return EQUIV if listed else UNCOVERED
        tree = free.get()
        try:
            outcome = run_mutant(tree, module, m["source"], [n for _, n in chosen],
                                 limit=30 + 5 * sum(seconds for seconds, _ in chosen))
        finally:
            free.put(tree)
        if outcome == SURVIVED and listed:
            return EQUIV
        if outcome == KILLED and listed:  # listed as equivalent, yet a test tells it apart: the listing is wrong
            print(f"  KILLED    {module}:{m['line']}: listed in equivalent.toml, but a test fails: {m['mutated']}",
                  flush=True)
        return outcome

    results = []
    with ThreadPoolExecutor(workers) as pool:
        for i, result in enumerate(pool.map(verdict, mutants), 1):
            results.append(result)
            if i % 25 == 0 or i == len(mutants):
                print(f"  {module}: {i}/{len(mutants)} mutants, {results.count(KILLED) + results.count(TIMEOUT)} "
                      f"killed, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    shutil.rmtree(base, ignore_errors=True)
    counts = {k: results.count(k) for k in (KILLED, TIMEOUT, SURVIVED, UNCOVERED, EQUIV, ERROR)}
    survivors = [m for m, r in zip(mutants, results, strict=True) if r in (SURVIVED, UNCOVERED)]
    stale = sorted(set(known) - {(m["original"], m["mutated"]) for m in mutants})
    errors = [m for m, r in zip(mutants, results, strict=True) if r == ERROR]
    return {"counts": counts, "survivors": survivors, "errors": errors, "stale": stale, "results": results,
            "seconds": time.perf_counter() - t0}


def rate(counts: dict) -> float:
    judged = sum(counts.values()) - counts[EQUIV] - counts[ERROR]
    return (counts[KILLED] + counts[TIMEOUT]) / judged if judged else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help=f"modules to mutate (default: all of {', '.join(TARGETS)})")
    parser.add_argument("--strings", action="store_true", help="also mutate string literals")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="mutants tested at once")
    parser.add_argument("--json", type=Path, help="also write every module's results to this file")
    args = parser.parse_args()
    if not MUTMUT_PYTHON.exists():
        print("no .venv-mutmut: run `make mutation`", file=sys.stderr)
        return 2
    modules = args.modules or list(TARGETS)
    unknown = [m for m in modules if m not in TARGETS]
    if unknown:
        print(f"not a target: {', '.join(unknown)}; choose from {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=normal"], cwd=ROOT,
                           capture_output=True, text=True, check=False).stdout.strip()
    if dirty:
        print("note: the working tree differs from the last commit; these figures are of the working tree",
              file=sys.stderr)
    rows = {}
    for module in modules:
        print(f"{module}: mutating ...", flush=True)
        rows[module] = row = mutate(module, TARGETS[module], args.strings, args.workers)
        for m in row["survivors"]:
            print(f"  survived  {module}:{m['line']}: {m['original']}\n            -> {m['mutated']}", flush=True)
        for m in row["errors"]:
            print(f"  ERROR     {module}:{m['line']}: pytest could not run on this mutant: {m['mutated']}")
        for original, mutated in row["stale"]:
            print(f"  equivalent.toml lists a mutant that no longer exists: {original} -> {mutated}")
        print(f"{module}: {row['counts']}, {rate(row['counts']):.1%} killed, {row['seconds']:.0f} s", flush=True)
    print(f"\n  {'module':<36} {'mutants':>7} {'killed':>7} {'timeout':>7} {'surv.':>6} {'uncov.':>6} "
          f"{'equiv.':>6} {'error':>6}   killed of non-equivalent")
    for module, row in rows.items():
        c = row["counts"]
        print(f"  {module:<36} {sum(c.values()):>7} {c[KILLED]:>7} {c[TIMEOUT]:>7} {c[SURVIVED]:>6} "
              f"{c[UNCOVERED]:>6} {c[EQUIV]:>6} {c[ERROR]:>6}   {rate(c):.1%}")
    if args.json:
        args.json.write_text(json.dumps({m: {k: v for k, v in r.items() if k != "results"} for m, r in rows.items()},
                                        indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
