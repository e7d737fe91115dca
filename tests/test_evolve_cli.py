"""``emp evolve`` on a user's file: the decision on the last line as JSON, trials counted across runs in
$EMP_HOME's registry, clear errors for bad input."""

import json

import polars as pl
import pytest

from emp_core.cli import main
from emp_core.store import DuckDBStore
from tests.support import SHIPPED

SMALL = ["--population", "6", "--generations", "2", "--no-macro"]
KEYS = {"promoted", "dsr", "pbo", "n_trials", "n_effective", "reason", "oos_psr", "sr0", "sharpe", "n_bars",
        "skew", "kurtosis", "sharpe_variance", "trials_added", "champion"}


@pytest.fixture
def universe_file(tmp_path):
    path = tmp_path / "three.csv"
    (pl.read_parquet(SHIPPED / "bars_daily.parquet").filter(pl.col("symbol").is_in(["AAPL", "IBM", "MSFT"]))
     .rename({"ts": "Date"}).write_csv(path))
    return path


def evolve(capsys, *argv) -> dict:
    assert main(["evolve", *argv, "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def test_emp_evolve_reports_the_decision_and_counts_trials_across_runs(emp_home, universe_file, capsys):
    first = evolve(capsys, "--data", str(universe_file), *SMALL, "--seed", "1")
    assert set(first) >= KEYS
    assert isinstance(first["promoted"], bool) and first["reason"].startswith(("promoted", "no champion"))
    assert first["promoted"] == (first["champion"] is not None)
    assert first["n_effective"] >= 1 and first["n_trials"] > 0 and first["trials_added"] > 0  # N_eff may exceed N
    registry = DuckDBStore(emp_home / "emp.duckdb").query(
        "SELECT count(DISTINCT genome_hash) AS n, count(*) AS rows FROM evolution.trials")
    assert registry["n"].item() == first["n_trials"] and registry["rows"].item() == first["trials_added"]
    again = evolve(capsys, "--data", str(universe_file), *SMALL, "--seed", "1")
    assert again["trials_added"] == 0 and again["n_trials"] == first["n_trials"]
    assert again["dsr"] == first["dsr"] and again["pbo"] == first["pbo"]  # the same decision, figure for figure
    other = evolve(capsys, "--data", str(universe_file), *SMALL, "--seed", "2")
    assert other["trials_added"] > 0 and other["n_trials"] > first["n_trials"]
    assert other["dataset"] == "symbols:AAPL,IBM,MSFT"
    # The same instruments in a renamed copy: the search goes on counting.
    copy = universe_file.with_name("renamed.csv")
    copy.write_bytes(universe_file.read_bytes())
    renamed = evolve(capsys, "--data", str(copy), *SMALL, "--seed", "3")
    assert renamed["n_trials"] > other["n_trials"]
    elsewhere = evolve(capsys, "--data", str(copy), *SMALL, "--seed", "3", "--dataset", "fresh")
    assert elsewhere["n_trials"] < renamed["n_trials"]


def test_emp_evolve_prints_a_readable_decision(emp_home, universe_file, capsys):
    assert main(["evolve", "--data", str(universe_file), *SMALL]) == 0
    captured = capsys.readouterr()
    assert "3 symbol(s), daily bars 2000-03-01" in captured.out
    for fragment in ("decision: ", "deflated Sharpe", "effective", "out-of-sample PSR", "PBO", "reason: "):
        assert fragment in captured.out
    assert "window 1/9" in captured.err  # progress, one line per window


def test_emp_evolve_json_is_one_object_and_progress_stays_on_stderr(emp_home, universe_file, capsys):
    """--json: stdout is exactly one JSON object; the per-window progress (counts, elapsed) goes to stderr,
    and -q/--quiet silences it without changing the result."""
    argv = ["evolve", "--data", str(universe_file), *SMALL, "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # the whole of stdout, not only its last line
    assert set(report) >= KEYS and "window 1/" not in captured.out and "elapsed" not in captured.out
    lines = [line for line in captured.err.splitlines() if line.startswith("window ")]
    assert len(lines) == report["windows"] and lines[0].startswith(f"window 1/{report['windows']} ")
    assert "evaluations (" in lines[-1] and " so far)" in lines[-1] and lines[-1].endswith("s elapsed")
    assert main([*argv, "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and json.loads(quiet.out)["dsr"] == report["dsr"]


@pytest.mark.parametrize(("rows", "message"), [
    (None, "file not found"),
    ("Date,Open,High,Low,Close,Volume\n", "only a header"),
    ("Date,Open,High,Low,Close,Volume\n2020-01-02,1,0.5,2,1.5,100\n", "no valid daily bars"),
    ("Date,Open,High,Low,Close,Volume\n2020-01-02,1,2,0.5,1.5,100\n2020-01-03,1,2,0.5,1.5,100\n",
     "too short for one walk-forward window"),
])
def test_emp_evolve_bad_input_is_one_clear_line(emp_home, tmp_path, capsys, rows, message):
    path = tmp_path / "prices.csv"
    if rows is not None:
        path.write_text(rows)
    assert main(["evolve", "--data", str(path), "--symbol", "ACME", *SMALL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("emp evolve: error: ") and message in err[-1]


def test_emp_evolve_refuses_intraday_bars_and_tiny_populations(emp_home, tmp_path, capsys):
    hourly = tmp_path / "eurusd.parquet"
    pl.read_parquet(SHIPPED / "bars_hourly.parquet").write_parquet(hourly)
    assert main(["evolve", "--data", str(hourly), *SMALL]) == 2
    assert "intraday" in capsys.readouterr().err
    assert main(["evolve", "--data", str(hourly), "--population", "1"]) == 2
    assert "--population must be at least 2" in capsys.readouterr().err
