"""`emp features`: a user's file in, every dimension and the fused signal out; bad rows quarantined, not lost."""

from datetime import datetime

import polars as pl
import pytest

from emp_core.cli import main
from emp_core.market_data.validate import validate_bars
from emp_core.sensory import compute_features
from emp_core.sensory.cli import shipped_macro
from tests.support import SHIPPED


@pytest.fixture
def ibm_csv(tmp_path):
    """IBM's shipped daily bars as a user's CSV: Date,Open,High,Low,Close,Volume, no symbol column."""
    bars = pl.read_parquet(SHIPPED / "bars_daily.parquet").filter(
        (pl.col("symbol") == "IBM") & (pl.col("ts") < datetime(2004, 1, 1)))
    path = tmp_path / "ibm.csv"
    bars.select(pl.col("ts").dt.strftime("%Y-%m-%d").alias("Date"), pl.col("open").alias("Open"),
                pl.col("high").alias("High"), pl.col("low").alias("Low"), pl.col("close").alias("Close"),
                pl.col("volume").alias("Volume")).write_csv(path)
    return path


def test_features_of_a_csv_equal_the_library_result(ibm_csv, tmp_path, capsys):
    out = tmp_path / "out" / "ibm.parquet"
    assert main(["features", "--data", str(ibm_csv), "--symbol", "IBM", "--out", str(out)]) == 0
    written = pl.read_parquet(out)
    bars = pl.read_parquet(SHIPPED / "bars_daily.parquet").filter(
        (pl.col("symbol") == "IBM") & (pl.col("ts") < datetime(2004, 1, 1)))
    expected = compute_features(bars, shipped_macro())
    assert written.height == bars.height
    assert written.select(pl.exclude("ts")).equals(expected.select(pl.exclude("ts")))
    assert (written.get_column("ts") == expected.get_column("ts")).all()
    printed = capsys.readouterr().out
    assert "0 quarantined" in printed and "signal" in printed and f"to {out}" in printed


def test_calendar_option_reaches_the_turn_of_the_month(ibm_csv, tmp_path):
    """--calendar XNYS counts NYSE sessions: New Year's Day 2001 was a Monday holiday, so the third session was
    the 4th, the day the bar of the 3rd forecasts."""
    phases = {}
    for cal in ("XNYS", None):
        out = tmp_path / f"{cal}.parquet"
        extra = ["--calendar", cal] if cal else []
        assert main(["features", "--data", str(ibm_csv), "--symbol", "IBM", "--out", str(out), *extra]) == 0
        f = pl.read_parquet(out)
        phases[cal] = dict(zip(f["ts"].dt.strftime("%Y-%m-%d").to_list(), f["when_month_phase"].to_list(),
                               strict=True))
    assert phases["XNYS"]["2001-01-03"] == "turn" and phases[None]["2001-01-03"] == "rest"


def test_bad_rows_are_quarantined_with_their_reason(ibm_csv, tmp_path, capsys):
    lines = ibm_csv.read_text().splitlines()
    lines[10] = lines[10].split(",")[0] + ",abc,1,1,1,100"
    lines[20] = lines[20].split(",")[0] + ",100,90,110,100,100"  # high below low
    ibm_csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ibm.csv.features.csv"
    assert main(["features", "--data", str(ibm_csv), "--symbol", "IBM", "--out", str(out)]) == 0
    quarantine = pl.read_csv(tmp_path / "ibm.csv.features.quarantine.csv")
    assert quarantine.height == 2
    assert quarantine.get_column("row_number").to_list() == [10, 20]
    assert "open is not a number" in quarantine.get_column("reason")[0]
    assert "high below low" in quarantine.get_column("reason")[1]
    assert pl.read_csv(out).height == len(lines) - 1 - 2
    assert "quarantined x1" in capsys.readouterr().out


def test_intraday_file_and_custom_weights(tmp_path):
    hourly = pl.read_parquet(SHIPPED / "bars_hourly.parquet").head(800)
    data = tmp_path / "eurusd.parquet"
    hourly.write_parquet(data)
    out = tmp_path / "f.parquet"
    assert main(["features", "--data", str(data), "--out", str(out), "--no-macro", "--weights", "what=1"]) == 0
    written = pl.read_parquet(out)
    assert "when_session" in written.columns
    assert written.get_column("why_slope").is_null().all()
    sure = written.filter(pl.col("what_confidence") > 0)
    assert (sure.get_column("signal") - sure.get_column("what_score")).abs().max() < 1e-12


def test_quote_columns_in_a_file_reach_the_liquidity_dimension(ibm_csv, tmp_path):
    frame = pl.read_csv(ibm_csv).with_columns(Bid=pl.col("Close") * 0.999, Ask=pl.col("Close") * 1.001,
                                              BidSize=300.0, AskSize=100.0)
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(-1.0).otherwise("Bid").alias("Bid"))
    data = tmp_path / "quotes.csv"
    frame.write_csv(data)
    out = tmp_path / "q.parquet"
    assert main(["features", "--data", str(data), "--symbol", "IBM", "--out", str(out)]) == 0
    written = pl.read_parquet(out)
    assert written.height == frame.height - 1  # the row with a negative bid is quarantined, not used
    assert "negative bid" in pl.read_csv(tmp_path / "q.quarantine.csv").get_column("reason")[0]
    spread = written.get_column("how_spread").drop_nulls()
    assert (spread - 0.002).abs().max() < 1e-9  # (ask - bid) / mid, not the high-low estimator
    assert written.get_column("how_pressure").drop_nulls().eq(0.5).all()  # book imbalance (300-100)/400


@pytest.mark.parametrize(("argv", "message"), [
    (["--data", "missing.csv", "--out", "o.parquet"], "missing.csv: file not found"),
    (["--data", "{csv}", "--out", "o.parquet", "--symbol", "IBM", "--weights", "what"], "is not NAME=NUMBER"),
    (["--data", "{csv}", "--out", "o.parquet", "--symbol", "IBM", "--weights", "trend=1"], "unknown dimension"),
    (["--data", "{csv}", "--out", "o.json", "--symbol", "IBM"], "must end in .parquet or .csv"),
    (["--data", "{csv}", "--out", "{csv}", "--symbol", "IBM"], "would overwrite the input"),
    (["--data", "{csv}", "--out", "o.parquet"], "has no symbol column; pass the instrument with --symbol"),
])
def test_usage_errors_name_the_input(ibm_csv, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{csv}", str(ibm_csv)) for a in argv]
    assert main(["features", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("emp features: error: ") and message in err and "\n" not in err
    assert "emp: error" not in err and ": error: emp " not in err


def test_a_file_without_one_valid_bar_is_refused(tmp_path, capsys):
    data = tmp_path / "bad.csv"
    data.write_text("Date,Open,High,Low,Close,Volume\n2020-01-02,x,1,1,1,1\n2020-01-03,1,1,1,-1,1\n")
    assert main(["features", "--data", str(data), "--symbol", "A", "--out", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert "no valid bars among 2 rows" in err
    assert not (tmp_path / "o.parquet").exists()
    # the validation the command relies on really quarantines both rows
    raw = pl.read_csv(data, infer_schema=False).rename(str.lower).rename({"date": "ts"})
    raw = raw.with_columns(symbol=pl.lit("A"))
    assert validate_bars(raw, interval="1d", now=datetime(2030, 1, 1)).quarantine.height == 2
