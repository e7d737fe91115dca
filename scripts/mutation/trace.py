"""pytest plugin: which tests execute which lines of one module, and how long each test takes.

Loaded by run.py with ``-p scripts.mutation.trace``, with EMP_MUTATION_TARGET (the module's file) and
EMP_MUTATION_TRACE (the JSON written at the end) in the environment. Only lines inside functions are
attributed this way; run.py runs a mutant of import-time code (module and class bodies, decorators,
default values) against every test.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time

import pytest

TARGET = os.path.realpath(os.environ["EMP_MUTATION_TARGET"])
_lines: set[int] = set()  # lines of the target run since the current test started
_by_test: dict[str, dict] = {}


@functools.cache
def _is_target(filename: str) -> bool:
    return os.path.realpath(filename) == TARGET


def _local(frame, event, arg):
    if event == "line":
        _lines.add(frame.f_lineno)
    return _local


def _global(frame, event, arg):
    if not _is_target(frame.f_code.co_filename):
        return None
    _lines.add(frame.f_lineno)
    return _local


sys.settrace(_global)
threading.settrace(_global)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _lines.clear()
    t0 = time.perf_counter()
    yield
    _by_test[item.nodeid] = {"seconds": time.perf_counter() - t0, "lines": sorted(_lines)}


def pytest_sessionfinish(session, exitstatus):
    sys.settrace(None)
    with open(os.environ["EMP_MUTATION_TRACE"], "w") as f:
        json.dump({"exitstatus": int(exitstatus), "tests": _by_test}, f)
