import pkgutil
import subprocess
import sys

import emp_core


def test_emp_core_never_imports_dagster_or_a_reference_engine():
    """emp_core stays orchestration-free, and the AGPL / commons-clause engines used to cross-check
    it in tests and benchmarks never become part of the product."""
    modules = [m.name for m in pkgutil.walk_packages(emp_core.__path__, "emp_core.")]
    forbidden = ("dagster", "backtesting", "vectorbt")
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r} or m.startswith('dagster_'))\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert len(modules) > 10
    assert out.stdout.strip() == ""


def test_settings_are_read_in_one_module():
    offenders = []
    for path in sorted(p for p in __import__("pathlib").Path(emp_core.__file__).parent.rglob("*.py")):
        if path.name != "config.py" and ("os.environ" in path.read_text() or "os.getenv" in path.read_text()):
            offenders.append(path.name)
    assert offenders == ["quality.py"]  # only sets GX's own analytics switch off


def test_the_dagster_edge_uses_public_api_and_loads_its_defs_folder():
    """No module of the project imports Dagster's private packages; definitions.py names no domain module (the
    defs/ folder is loaded); each domain folder holds only the conventional module kinds."""
    import ast
    from pathlib import Path

    root = Path(emp_core.__file__).resolve().parents[1]
    private = []
    for path in [*root.joinpath("emp_core").rglob("*.py"), *root.joinpath("emp_dagster").rglob("*.py"),
                 *root.joinpath("tests").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            private += [f"{path.name}: {n}" for n in names if n.startswith("dagster._")]
    assert private == []
    definitions = root.joinpath("emp_dagster", "definitions.py").read_text()
    assert "emp_dagster.defs." not in definitions and "load_defs" in definitions
    kinds = {"__init__.py", "assets.py", "checks.py", "jobs.py", "schedules.py", "sensors.py", "resources.py",
             "partitions.py"}
    folders = [p for p in root.joinpath("emp_dagster", "defs").iterdir() if p.is_dir() and p.name != "__pycache__"]
    assert {p.name for p in folders} >= {"market_data", "sensory", "evolution"}
    assert {p.name: sorted({f.name for f in p.glob("*.py")} - kinds) for p in folders} == {p.name: [] for p in folders}


def test_tests_import_helpers_not_the_conftest():
    """conftest.py holds fixtures, which pytest injects; shared helpers live in tests/support.py."""
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    offenders = [p.name for p in tests.glob("*.py")
                 if "from tests.conftest" in p.read_text() and p.name != Path(__file__).name]
    assert offenders == []
