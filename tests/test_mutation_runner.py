"""The mutation runner's verdicts (scripts/mutation/run.py), on a tiny module and test in a scratch tree:
a mutant a test notices is killed, one no test notices survives, one that breaks the module's import is
killed, and a run pytest cannot make (an unknown test id) is an error, never a kill."""

import importlib.util
import textwrap

import pytest

from emp_core.config import REPO_ROOT

MODULE = "pkg/calc.py"
SOURCE = textwrap.dedent('''
    LIMIT = 10


    def clip(x):
        if x > LIMIT:
            return LIMIT
        return x
''')
TEST = textwrap.dedent('''
    from pkg.calc import clip


    def test_clip():
        assert clip(12) == 10
        assert clip(3) == 3
''')


@pytest.fixture(scope="module")
def run():
    spec = importlib.util.spec_from_file_location("mutation_run", REPO_ROOT / "scripts" / "mutation" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / MODULE).write_text(SOURCE)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_calc.py").write_text(TEST)
    return tmp_path


def verdict(run, tree, source, tests=("tests/test_calc.py::test_clip",)):
    outcome = run.run_mutant(tree, MODULE, source, list(tests), limit=120)
    assert (tree / MODULE).read_text() == SOURCE  # the original is always put back
    return outcome


def test_a_mutant_the_test_notices_is_killed(run, tree):
    assert verdict(run, tree, SOURCE.replace("x > LIMIT", "x < LIMIT")) == run.KILLED


def test_a_mutant_no_test_notices_survives(run, tree):
    # x >= LIMIT differs only at x == 10, which the test never tries
    assert verdict(run, tree, SOURCE.replace("x > LIMIT", "x >= LIMIT")) == run.SURVIVED
    assert verdict(run, tree, SOURCE) == run.SURVIVED


def test_a_mutant_that_breaks_the_import_is_killed(run, tree):
    assert verdict(run, tree, SOURCE.replace("LIMIT = 10", "LIMIT = 10 +")) == run.KILLED  # a syntax error
    assert verdict(run, tree, SOURCE + "\nLIMIT + None\n") == run.KILLED  # fails at import time


def test_a_mutant_that_breaks_a_test_files_import_is_killed(run, tree):
    """The test file computes with the module's constant at import: a mutant making that fail stops pytest from
    collecting the test ids it was given (exit code 4), which is a kill, not a run that could not be made."""
    (tree / "tests" / "test_calc.py").write_text("from pkg.calc import LIMIT\nHALF = LIMIT // 2\n" + TEST)
    assert verdict(run, tree, SOURCE) == run.SURVIVED
    assert verdict(run, tree, SOURCE.replace("LIMIT = 10", "LIMIT = None")) == run.KILLED


def test_a_run_pytest_cannot_make_is_an_error_not_a_kill(run, tree):
    assert verdict(run, tree, SOURCE, tests=["tests/test_calc.py::no_such_test"]) == run.ERROR


def test_only_lines_inside_functions_are_mapped_to_the_tests_that_run_them(run, tree):
    # LIMIT = 10 (line 2) runs at import, for every test; the body of clip (lines 6-8) runs per call
    assert run.function_body_lines(tree / MODULE) == {6, 7, 8}
