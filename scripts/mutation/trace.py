"""pytest plugin: which tests execute which lines of one module, and how long each test takes.

Loaded by run.py with ``-p scripts.mutation.trace``, with EMP_MUTATION_TARGET (the module's file) and
EMP_MUTATION_TRACE (the JSON written at the end) in the environment. Lines run while the module is
imported (module constants, class bodies, default arguments) are recorded under "<import>": a mutant
there is run against every test.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import threading
import time

import pytest

TARGET = os.path.realpath(os.environ["EMP_MUTATION_TARGET"])
_lines: set[int] = set()  # lines run since the current test started
_imported: set[int] = set()  # lines of the module's and its classes' bodies, run once per process
_by_test: dict[str, dict] = {}


def _local(frame, event, arg):
    if event == "line":
        _lines.add(frame.f_lineno)
    return _local


def _body(frame, event, arg):
    if event == "line":
        _imported.add(frame.f_lineno)
    return _body


@functools.cache
def _is_target(filename: str) -> bool:
    return os.path.realpath(filename) == TARGET


def _global(frame, event, arg):
    if not _is_target(frame.f_code.co_filename):
        return None
    if frame.f_code.co_flags & inspect.CO_NEWLOCALS:  # a function (module and class bodies have none)
        _lines.add(frame.f_lineno)
        return _local
    _imported.add(frame.f_lineno)
    return _body


sys.settrace(_global)
threading.settrace(_global)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _imported.update(_lines)  # run outside any test (collection, module fixtures): counts for every test
    _lines.clear()
    t0 = time.perf_counter()
    yield
    _by_test[item.nodeid] = {"seconds": time.perf_counter() - t0, "lines": sorted(_lines)}
    _lines.clear()


def pytest_sessionfinish(session, exitstatus):
    sys.settrace(None)
    _by_test["<import>"] = {"seconds": 0.0, "lines": sorted(_imported | _lines)}
    with open(os.environ["EMP_MUTATION_TRACE"], "w") as f:
        json.dump({"exitstatus": int(exitstatus), "tests": _by_test}, f)
