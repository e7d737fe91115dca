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
