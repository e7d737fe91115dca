"""Bad files: a clear one-line error and nothing written, or row-level quarantine whose counts add up."""

from datetime import datetime

import polars as pl
import pytest

from emp_core.cli import main
from emp_core.errors import InputFileError
from emp_core.market_data.ingest import ingest_bars, new_run_id
from emp_core.market_data.readers import read_bar_file
from emp_core.market_data.sources import FileSource
from tests.support import write_csv

HEADER = "Date,Open,High,Low,Close,Volume"
NOW = datetime(2026, 1, 1)


def ingest(store, path, symbol="ACME"):
    return ingest_bars(store, FileSource(path, symbol), "bars_1d", run_id=new_run_id("t"), now=NOW)


def stored(store):
    return store.read_bars("bars_1d")


def quarantined(store, run_id):
    return store.query("SELECT row_number, reason FROM market.quarantine WHERE run_id = $r ORDER BY row_number",
                       {"r": run_id})


def assert_accounted(store, report):
    journal = store.query("SELECT sum(rows_in) AS i, sum(rows_stored) AS s, sum(rows_quarantined) AS q "
                          "FROM market.ingest_journal WHERE run_id = $r", {"r": report.run_id}).row(0)
    assert journal == (report.rows_in, report.rows_stored, report.rows_quarantined)
    assert report.rows_stored + report.rows_quarantined == report.rows_in
    assert quarantined(store, report.run_id).height == report.rows_quarantined


# -- file-level errors: one line naming the file, exit 2, nothing written -------------------------

def run_cli(capsys, *args):
    code = main(["ingest", "--source", "file", *args])
    captured = capsys.readouterr()
    return code, captured.err.strip()


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.csv", b"", "file is empty (0 bytes)"),
        ("empty.parquet", b"", "file is empty (0 bytes)"),
        ("header_only.csv", (HEADER + "\n").encode(), "no data rows"),
        ("binary.csv", bytes(range(256)) * 4, "binary content, not a CSV text file"),
        ("latin1.csv", "Date,Open\n2020-01-02,caf\xe9\n".encode("latin-1") * 3000, "not UTF-8 text"),
        ("truncated.parquet", b"PAR1" + b"\x00" * 64, "not a readable Parquet file"),
        ("renamed.csv", b"Date,Open,High,Low,Price,Volume\n2020-01-02,1,2,1,1.5,10\n",
         "missing required column(s) close; found columns: Date, Open, High, Low, Price, Volume"),
        ("missing.csv", b"Date,Close\n2020-01-02,1.5\n", "missing required column(s) open, high, low, volume"),
    ],
)
def test_unreadable_files_fail_with_one_line_and_write_nothing(tmp_path, store, capsys, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content)
    code, err = run_cli(capsys, "--data", str(path), "--symbol", "ACME")
    assert code == 2
    assert err.count("\n") == 0, err
    assert err.startswith(f"emp ingest: error: {path}:") and "emp: error" not in err
    assert problem in err
    assert "Traceback" not in err
    assert stored(store).height == 0


def test_missing_file_and_missing_symbol_are_clear(tmp_path, store, capsys):
    code, err = run_cli(capsys, "--data", str(tmp_path / "nope.csv"), "--symbol", "X")
    assert code == 2 and "nope.csv: file not found" in err
    path = write_csv(tmp_path / "nosym.csv", HEADER, ["2020-01-02,1,2,1,1.5,10"])
    code, err = run_cli(capsys, "--data", str(path))
    assert code == 2 and "has no symbol column; pass the instrument with --symbol" in err


def test_zero_byte_parquet_raises_input_file_error(tmp_path):
    path = tmp_path / "zero.parquet"
    path.touch()
    with pytest.raises(InputFileError, match=r"zero\.parquet: file is empty"):
        read_bar_file(path, "X")


# -- row-level problems: good rows stored, bad rows quarantined with the reason --------------------

def test_wrong_types_nan_inf_negative_and_inconsistent_rows_are_quarantined(tmp_path, store):
    path = write_csv(tmp_path / "bad_rows.csv", HEADER, [
        "2020-01-02,10,11,9,10.5,100",        # 1 good
        "2020-01-03,ten,11,9,10.5,100",       # 2 wrong type
        "2020-01-06,10,11,9,NaN,100",         # 3 NaN
        "2020-01-07,10,inf,9,10.5,100",       # 4 inf
        "2020-01-08,-10,11,9,10.5,100",       # 5 negative price
        "2020-01-09,10,9,11,10,100",          # 6 high < low
        "2020-01-10,10,11,9,10.5,-5",         # 7 negative volume
        "2020-01-13,10,11,9,12,100",          # 8 close above high
        "2020-01-14,,11,9,10.5,100",          # 9 missing open
        "not a date,10,11,9,10.5,100",        # 10 unparseable timestamp
        "2020-01-15,10,11,9,10.5,100",        # 11 good
    ])
    report = ingest(store, path)
    assert report.rows_in == 11 and report.rows_stored == 2 and report.rows_quarantined == 9
    reasons = dict(quarantined(store, report.run_id).iter_rows())
    assert reasons[2] == "open is not a number"
    assert "close is not finite" in reasons[3]
    assert "high is not finite" in reasons[4]
    assert "open is not positive" in reasons[5]
    assert "high below low" in reasons[6]
    assert reasons[7] == "negative volume"
    assert reasons[8] == "close outside [low, high]"
    assert reasons[9] == "missing open"
    assert reasons[10] == "unparseable timestamp"
    assert stored(store).get_column("ts").to_list() == [datetime(2020, 1, 2), datetime(2020, 1, 15)]
    assert_accounted(store, report)


def test_duplicates_keep_one_identical_copy_and_quarantine_conflicts(tmp_path, store):
    path = write_csv(tmp_path / "dups.csv", HEADER, [
        "2020-01-02,10,11,9,10.5,100",
        "2020-01-02,10,11,9,10.5,100",   # identical copy of row 1
        "2020-01-03,10,11,9,10.5,100",
        "2020-01-03,10,11,9,10.7,100",   # disagrees with row 3
        "2020-01-06,10,11,9,10.5,100",
    ])
    report = ingest(store, path)
    reasons = dict(quarantined(store, report.run_id).iter_rows())
    assert reasons == {2: "duplicate of row 1", 3: "conflicting duplicate (2 rows disagree)",
                       4: "conflicting duplicate (2 rows disagree)"}
    assert stored(store).get_column("ts").to_list() == [datetime(2020, 1, 2), datetime(2020, 1, 6)]
    assert_accounted(store, report)


def test_unsorted_rows_are_stored_sorted_and_nothing_is_lost(tmp_path, store):
    path = write_csv(tmp_path / "unsorted.csv", HEADER, [
        "2020-01-06,12,13,11,12.5,100", "2020-01-02,10,11,9,10.5,100", "2020-01-03,11,12,10,11.5,100",
    ])
    report = ingest(store, path)
    assert report.rows_quarantined == 0
    bars = stored(store)
    assert bars.get_column("ts").is_sorted()
    assert bars.get_column("open").to_list() == [10.0, 11.0, 12.0]


def test_mixed_time_zones_are_normalised_to_utc_and_naive_ones_quarantined(tmp_path, store):
    path = write_csv(tmp_path / "tz.csv", "timestamp,open,high,low,close,volume", [
        "2020-03-02T14:00:00Z,1,2,1,1.5,10",
        "2020-03-02T10:00:00-05:00,1,2,1,1.6,10",     # 15:00 UTC
        "2020-03-02 17:00:00+01:00,1,2,1,1.7,10",     # 16:00 UTC
        "2020-03-02 17:00:00,1,2,1,1.8,10",           # naive in a zoned file: ambiguous
    ])
    report = ingest_bars(store, FileSource(path, "EURUSD"), "bars_1h", run_id=new_run_id("t"), now=NOW)
    bars = store.read_bars("bars_1h")
    assert bars.get_column("ts").to_list() == [datetime(2020, 3, 2, h) for h in (14, 15, 16)]
    assert dict(quarantined(store, report.run_id).iter_rows()) == {
        4: "timestamp without time zone in a file with zone offsets"}
    assert_accounted(store, report)


def test_future_dates_are_quarantined(tmp_path, store):
    path = write_csv(tmp_path / "future.csv", HEADER, ["2025-12-31,1,2,1,1.5,10", "2026-01-02,1,2,1,1.5,10"])
    report = ingest(store, path)
    assert dict(quarantined(store, report.run_id).iter_rows()) == {2: "timestamp in the future"}
    assert report.rows_stored == 1


def test_parquet_with_wrong_column_type_quarantines_rows(tmp_path, store):
    path = tmp_path / "typed.parquet"
    pl.DataFrame({
        "Date": [datetime(2020, 1, 2), datetime(2020, 1, 3)], "Open": ["1", "x"], "High": [2.0, 2.0],
        "Low": [1.0, 1.0], "Close": [1.5, 1.5], "Volume": [10, 10],
    }).write_parquet(path)
    report = ingest(store, path)
    assert dict(quarantined(store, report.run_id).iter_rows()) == {2: "open is not a number"}
    assert report.rows_stored == 1


def test_cli_reports_quarantine_and_exits_zero(tmp_path, store, capsys):
    path = write_csv(tmp_path / "mixed.csv", HEADER, ["2020-01-02,10,11,9,10.5,100", "2020-01-03,10,9,11,10,100"])
    code = main(["ingest", "--source", "file", "--data", str(path), "--symbol", "ACME"])
    out = capsys.readouterr().out
    assert code == 0
    assert "2 rows in, 1 stored, 1 quarantined" in out
    assert "market.quarantine WHERE run_id" in out
