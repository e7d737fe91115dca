import argparse
import subprocess
import sys
from datetime import date, datetime

import pytest

from emp_core.cli import RANGE_HELP, main
from emp_core.evolution.overfitting import expected_max_sharpe
from emp_core.store import DuckDBStore
from tests.support import write_csv


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("ingest", "features", "backtest", "demo", "backfill", "ui"):
        assert command in out


def test_usage_errors_are_one_line_with_one_prefix(capsys):
    assert main(["ingest"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "emp ingest: error: the following arguments are required: --source"
    assert main(["ingest", "--source", "synthetic", "--start", "2020-13-01", "--end", "2021-01-01"]) == 2
    assert capsys.readouterr().err.startswith("emp ingest: error: argument --start: '2020-13-01' is not a date")
    assert main(["ingest", "--source", "synthetic", "--start", "2021-01-01", "--end", "2020-12-31"]) == 2
    assert capsys.readouterr().err.strip() == "emp ingest: error: --end 2020-12-31 is before --start 2021-01-01"
    # An error raised inside the command (not by its parser) carries the same single prefix.
    assert main(["ingest", "--source", "file"]) == 2
    assert capsys.readouterr().err.strip() == "emp ingest: error: --source file needs --data FILE"
    assert main(["backtest", "--data", "x.csv", "--cash", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "emp backtest: error: --cash must be a positive number"
    # Before a command is known, the program's name alone.
    assert main(["frobnicate"]) == 2
    assert capsys.readouterr().err.startswith("emp: error: argument COMMAND: invalid choice: 'frobnicate'")


def test_console_script_reports_errors_without_traceback(tmp_path):
    exe = [sys.executable, "-m", "emp_core.cli"]
    proc = subprocess.run([*exe, "ingest", "--source", "file", "--data", str(tmp_path / "x.csv"), "--symbol", "A"],
                          check=False, capture_output=True, text=True, env={"EMP_HOME": str(tmp_path), "PATH": ""})
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"emp ingest: error: {tmp_path / 'x.csv'}: file not found"
    assert "emp: error" not in proc.stderr and "error: emp ingest:" not in proc.stderr


def test_every_range_command_states_one_inclusive_meaning(capsys):
    for command in ("ingest", "demo", "backfill"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert RANGE_HELP in out, command
        assert "last day, month or year, inclusive" in out and "exclusive" not in out, command


def test_a_year_is_a_period_like_a_month_or_a_day():
    from emp_core.cli import parse_date

    year, month = parse_date("2008"), parse_date("2008-12")
    assert (year.first, year.after) == (datetime(2008, 1, 1), datetime(2009, 1, 1))
    assert (month.first, month.after) == (datetime(2008, 12, 1), datetime(2009, 1, 1))
    for text in ("08", "9999"):  # 9999: no year after it to end the period
        with pytest.raises(argparse.ArgumentTypeError, match="YYYY-MM-DD, YYYY-MM or YYYY"):
            parse_date(text)


def test_path_is_a_deprecated_alias_of_data(emp_home, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["ingest", "--help"])
    assert "(deprecated: use --data)" in " ".join(capsys.readouterr().out.split())
    path = write_csv(tmp_path / "acme.csv", "Date,Open,High,Low,Close,Volume",
                     ["2020-01-02,10,11,9,10.5,100", "2020-01-03,10,11,9,10.5,100"])
    assert main(["ingest", "--source", "file", "--path", str(path), "--symbol", "ACME"]) == 0
    captured = capsys.readouterr()
    assert "2 rows in, 2 stored, 0 quarantined" in captured.out
    notes = [line for line in captured.err.splitlines() if "deprecated" in line]
    assert notes == ["emp ingest: warning: --path is deprecated, use --data"]
    assert main(["ingest", "--source", "file", "--data", str(path), "--symbol", "ACME"]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert main(["ingest", "--source", "file", "--data", str(path), "--path", str(path), "--symbol", "A"]) == 2
    assert capsys.readouterr().err.startswith("emp ingest: error: --path is the deprecated name of --data")


def test_ingest_end_is_inclusive(emp_home, capsys):
    """--start 2008-01 --end 2008-01 is January 2008, the 31st included, nothing of February."""
    assert main(["ingest", "--source", "shipped", "--symbols", "SPX", "--start", "2008-01", "--end", "2008-01"]) == 0
    capsys.readouterr()
    days = DuckDBStore(emp_home / "emp.duckdb").read_bars("bars_1d").get_column("ts").dt.date()
    assert days.min() == date(2008, 1, 2) and days.max() == date(2008, 1, 31)
    assert main(["ingest", "--source", "synthetic", "--n-symbols", "1", "--start", "2019-01-07",
                 "--end", "2019-01-07"]) == 0  # one day is a valid range: that day's bar
    assert "1 rows in, 1 stored" in capsys.readouterr().out


def test_quiet_removes_progress_lines_only(emp_home, capsys):
    argv = ["ingest", "--source", "synthetic", "--n-symbols", "2", "--start", "2019-01", "--end", "2019-02"]
    assert main(argv) == 0
    loud = capsys.readouterr()
    assert loud.err.startswith("bars_1d from synthetic: 80 rows in, 80 stored") and loud.err.endswith("s)\n")
    for quiet in (["-q", *argv], [*argv, "--quiet"]):
        assert main(quiet) == 0
        captured = capsys.readouterr()
        assert captured.err == ""
        assert captured.out.split(" (")[0] == loud.out.split(" (")[0]  # the result itself is unchanged
    assert main(argv) == 0  # quiet does not stick to the next command in the same process
    assert capsys.readouterr().err.startswith("bars_1d from synthetic: ")


def test_synthetic_ingest_from_the_cli(emp_home, capsys):
    code = main(["ingest", "--source", "synthetic", "--n-symbols", "3", "--start", "2019-01-01",
                 "--end", "2019-03-01", "--seed", "7"])
    assert code == 0
    assert "0 quarantined" in capsys.readouterr().out
    assert DuckDBStore(emp_home / "emp.duckdb").read_bars("bars_1d")["symbol"].n_unique() == 3


def test_backfill_from_the_cli_runs_one_dagster_run(emp_home, capsys):
    import dagster as dg

    assert main(["backfill", "--start", "2008-09", "--end", "2009-02", "--symbols", "SPX"]) == 0
    captured = capsys.readouterr()
    assert "SUCCESS; checks 10 passed, 0 failed" in captured.out
    assert "backfill: 2 year(s) 2008 .. 2009, symbols SPX, in one Dagster run" in captured.err
    assert "backfill: 2 year(s) done, run " in captured.err and "SUCCESS in " in captured.err
    assert "backfill:" not in captured.out
    store = DuckDBStore(emp_home / "emp.duckdb")
    assert store.query("SELECT DISTINCT symbol FROM market.bars_1d")["symbol"].to_list() == ["SPX"]
    # the whole of both years: from the first session of 2008 to the last of 2009
    first, last = store.query("SELECT min(ts)::DATE, max(ts)::DATE FROM market.bars_1d").row(0)
    assert (str(first), str(last)) == ("2008-01-02", "2009-12-31")
    with dg.DagsterInstance.get() as instance:
        assert len(instance.get_runs()) == 1
    assert main(["backfill", "--start", "1980-01", "--end", "1980-02"]) == 2
    assert "year 1980 is outside the partitions (1990 to " in capsys.readouterr().err
    assert main(["demo", "--start", "2090"]) == 2  # a start after the data, no --end: the start is the problem
    assert "year 2090 is outside the partitions (1990 to " in capsys.readouterr().err
    assert main(["backfill", "--start", "2009", "--end", "2008-06"]) == 2
    assert capsys.readouterr().err.strip() == "emp backfill: error: --end 2008-06 is before --start 2009"


@pytest.mark.slow
def test_demo_materialises_everything_with_every_check_passing(demo_home):
    counts = DuckDBStore(demo_home / "emp.duckdb").table_counts()
    assert counts["market.bars_1d"] == 22020 and counts["market.bars_1h"] == 6225
    assert counts["macro.series"] == 15159 and counts["macro.treasury_curve"] == 6816
    assert counts["market.quarantine"] == 0 and counts["market.universe"] == 7
    for table in ("why", "how", "what", "when", "anomaly", "fused"):
        assert counts[f"sensory.{table}"] == 22020 + 6225, table
    assert counts["sensory.calibration"] > 0
    assert counts["evolution.fitness_runs"] == 15 and counts["evolution.catalogue"] == 5
    assert counts["evolution.experiment_log"] >= 15 * 40 * 6  # every training evaluation is logged


@pytest.mark.slow
def test_demo_decides_with_every_figure_in_a_successful_run(demo_home, monkeypatch):
    """Whatever the gates say on the shipped data, the decision is stored with its figures and the run that
    made it succeeded (a refusal is an outcome, not a failure)."""
    import dagster as dg

    store = DuckDBStore(demo_home / "emp.duckdb")
    decision = store.query("SELECT * FROM evolution.decisions").row(0, named=True)
    assert decision["n_trials"] >= 15 * 40 and decision["n_effective"] >= 1
    # N_eff is the N at which the closed form gives the bootstrap's SR0 (it may exceed N: README, "no champion")
    assert expected_max_sharpe(decision["sharpe_variance"], decision["n_effective"]) == pytest.approx(
        decision["sr0"], rel=1e-9)
    for figure in ("dsr", "sharpe", "sr0", "sharpe_variance", "skew", "kurtosis", "oos_psr", "pbo"):
        assert decision[figure] is not None, figure
    assert decision["reason"].startswith("promoted" if decision["promoted"] else "no champion")
    assert store.query("SELECT count(DISTINCT genome_hash) FROM evolution.trials").item() == decision["n_trials"]
    monkeypatch.setenv("DAGSTER_HOME", str(demo_home / "dagster"))
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        planned = {r.run_id: instance.get_records_for_run(
            r.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, limit=100_000).records for r in runs}
        # the drift checks run after the calibration they read, in the same (last) run
        events = {r.run_id: [e.event_log_entry for e in instance.get_records_for_run(r.run_id, limit=100_000).records]
                  for r in runs}
    assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    # Three research runs (macro sources, the yearly assets over the range, the rest) and the paper session's three
    # (paper_trading, trading_journal, compliance_reports): an unpartitioned asset is planned once, not once per
    # partition as in a single run over the range; the shipped data spans 20 years.
    assert len(runs) == 6
    per_asset: dict[str, int] = {}
    for records in planned.values():
        for record in records:
            key = record.event_log_entry.dagster_event.asset_key.to_user_string()
            per_asset[key] = per_asset.get(key, 0) + 1
    years = per_asset["market/bars_1d"]
    assert years == 20 and per_asset["sensory/fused"] == years
    # the audit trail is verified with the graph, again before the paper session trades and after it
    assert {k: n for k, n in per_asset.items() if n != years} == {
        k: 3 if k == "compliance/audit_verification" else 1 for k in per_asset
        if not k.startswith(("market/bars", "sensory/")) or k == "sensory/calibration"}
    for entries in events.values():
        drift = [e.timestamp for e in entries if e.dagster_event and e.dagster_event.event_type
                 == dg.DagsterEventType.ASSET_CHECK_EVALUATION and e.dagster_event.event_specific_data.check_name
                 == "drift"]
        calibrated = [e.timestamp for e in entries if e.dagster_event and e.dagster_event.event_type
                      == dg.DagsterEventType.ASSET_MATERIALIZATION
                      and e.dagster_event.asset_key.to_user_string() == "sensory/calibration"]
        assert bool(drift) == bool(calibrated) and (not drift or min(drift) > max(calibrated))


@pytest.mark.slow
def test_the_demo_trades_a_paper_session_from_intent_to_reconciled_fill(demo_home):
    """The demo's paper session through the real processes: every order it put in the outbox was sent and
    filled at the venue, the journal reconciles with the drop copy, and the positions are the fills."""
    from emp_core.execution.outbox import sqlite_outbox

    store = DuckDBStore(demo_home / "emp.duckdb")
    box = sqlite_outbox(demo_home / "outbox.sqlite")
    status = box.status()
    assert status.height > 0 and set(status["state"]) == {"sent"} and set(status["ord_status"]) == {"2"}
    assert status["cum_qty"].cast(float).to_list() == status["qty"].cast(float).to_list()
    assert set(status["strategy"]) <= {"champion", "catalogue/trend"}
    assert store.query("SELECT count(*) FROM trading.reconciliation").item() == 0
    journal = box.journal().filter(box.journal()["msg_type"] == "8")
    assert journal.height == box.journal("dropcopy").height > 0
    held = dict(store.query("SELECT symbol, units FROM trading.positions").rows())
    signed = {r["symbol"]: r["cum_qty"] * (1 if r["side"] == "buy" else -1) for r in status.iter_rows(named=True)}
    assert held == {s: round(q) for s, q in signed.items()}


def test_the_demo_reports_compliance_on_its_paper_executions(demo_home):
    """After the paper session: every fill judged on the compliance rules, a valid MiFIR report for each stock
    fill (the index fills listed as not reportable), a complete trade record per order, the ROI report, and
    an intact audit trail holding each decision, order and execution."""
    from emp_core.compliance import audit_store, mifid
    from emp_core.execution.outbox import sqlite_outbox

    store = DuckDBStore(demo_home / "emp.duckdb")
    box = sqlite_outbox(demo_home / "outbox.sqlite")
    journal = box.journal()
    fills = journal.filter((journal["exec_type"] == "F") & (journal["last_qty"].cast(float) > 0))
    stocks = fills.filter(~fills["symbol"].is_in(["SPX", "IXIC"]))
    assert stocks.height > 0  # the session trades the stocks too, not only the indices
    assert store.query("SELECT count(DISTINCT exec_id) FROM compliance.post_trade_checks").item() == fills.height
    reports = store.query("SELECT * FROM compliance.transaction_reports")
    assert sorted(reports["exec_id"].to_list()) == sorted(stocks["exec_id"].to_list())
    assert mifid.problems(reports).is_empty()
    assert set(reports["instrument_id"]) <= set(mifid.load_reference()[1]["isin"])
    xml = (demo_home / "compliance" / "reports" / "transaction_reports.xml").read_text()
    assert xml.count("<New>") == reports.height  # auth.016: one Tx/New per report
    assert store.query("SELECT count(*) FROM compliance.not_reported").item() == fills.height - stocks.height
    records = store.query("SELECT * FROM compliance.trade_records")
    assert sorted(records["clordid"].to_list()) == sorted(box.entries()["clordid"].to_list())
    roi = store.query("SELECT * FROM compliance.roi_strategies")
    assert roi["fills"].sum() == fills.height and (roi["fees"] > 0).all()
    log = audit_store.read(store)
    kinds = log.group_by("kind").len()
    counted = dict(kinds.rows())
    assert counted["execution"] == journal.height  # every report journaled, once
    assert counted["order"] == box.entries().height
    assert counted["risk.decision"] >= box.entries().height
    assert audit_store.verify(store).ok


def test_the_instance_settings_are_refreshed_and_an_edited_copy_is_kept(emp_home, caplog):
    import logging

    from emp_dagster.commands import prepare_instance

    home = prepare_instance()
    shipped = (home / "dagster.yaml").read_text()
    assert "nux:" in shipped
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # a user's edit
    emp_log = logging.getLogger("emp")  # emp's logger may not propagate (main() sets it up): listen on it
    emp_log.addHandler(caplog.handler)
    try:
        prepare_instance()
    finally:
        emp_log.removeHandler(caplog.handler)
    assert (home / "dagster.yaml").read_text() == shipped
    assert (home / "dagster.yaml.previous").read_text() == "telemetry:\n  enabled: false\n"
    assert "dagster.yaml.previous" in caplog.text
