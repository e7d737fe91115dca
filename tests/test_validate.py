"""validate_bars: every input row ends up valid or quarantined, with the exact reason(s) the module documents.

Expected values are worked out by hand (timestamps: UTC offsets and New York session dates of the given instants).
"""

import json
from dataclasses import FrozenInstanceError
from datetime import date, datetime

import polars as pl
import pytest

from emp_core.market_data.schema import BAR_SCHEMA
from emp_core.market_data.validate import QUARANTINE_SCHEMA, Validated, validate_bars

NOW = datetime(2030, 1, 1)
BASE = {"symbol": "ACME", "ts": "2024-03-05 10:00", "open": "10", "high": "12", "low": "9", "close": "11",
        "volume": "100"}
QUOTES = ("bid", "ask", "bid_size", "ask_size")


def frame(*overrides: dict) -> pl.DataFrame:
    """Rows as a CSV reader gives them (all text), each BASE with some fields replaced or added."""
    rows = [{**BASE, **o} for o in overrides]
    columns = list(dict.fromkeys(c for r in rows for c in r))
    return pl.DataFrame([[r.get(c) for c in columns] for r in rows], schema=dict.fromkeys(columns, pl.String),
                        orient="row")


def run(raw: pl.DataFrame, interval: str = "1h", now: datetime = NOW, **kw) -> Validated:
    result = validate_bars(raw, interval=interval, now=now, **kw)
    assert result.rows_in == raw.height
    assert result.valid.height + result.quarantine.height == raw.height
    return result


def reasons(result: Validated) -> dict[int, str]:
    return dict(zip(result.quarantine["row_number"].to_list(), result.quarantine["reason"].to_list(), strict=True))


def reason_of(override: dict, **kw) -> str | None:
    """The reason a single row is quarantined for, or None when it is valid."""
    result = run(frame(override), **kw)
    return reasons(result).get(1)


def valid_ts(raw: pl.DataFrame, **kw) -> list[datetime]:
    result = run(raw, **kw)
    assert result.quarantine.height == 0, reasons(result)
    return result.valid["ts"].to_list()


# -- prices and volume ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({}, None),
        ({"volume": "0"}, None),
        ({"open": "5", "high": "5", "low": "5", "close": "5"}, None),
        ({"open": "9"}, None),  # open == low
        ({"open": "12"}, None),  # open == high
        ({"close": "9"}, None),  # close == low
        ({"close": "12"}, None),  # close == high
        ({"open": "8.99"}, "open outside [low, high]"),
        ({"open": "12.01"}, "open outside [low, high]"),
        ({"close": "8.99"}, "close outside [low, high]"),
        ({"close": "12.01"}, "close outside [low, high]"),
        ({"volume": "-1"}, "negative volume"),
        ({"volume": "-0.001"}, "negative volume"),
        ({"low": "0"}, "low is not positive"),
        ({"open": "0", "low": "0"}, "open is not positive; low is not positive"),
        ({"open": "0", "high": "0", "low": "0", "close": "0"},
         "open is not positive; high is not positive; low is not positive; close is not positive"),
        ({"low": "-1", "close": "-1"}, "low is not positive; close is not positive"),
        ({"high": "0.0001", "low": "0.0001", "open": "0.0001", "close": "0.0001"}, None),
        ({"high": "8", "low": "9", "open": "8.5", "close": "8.5"},
         "high below low; open outside [low, high]; close outside [low, high]"),
        ({"high": "8.99", "low": "9", "open": "9", "close": "9"}, "high below low; open outside [low, high]; "
         "close outside [low, high]"),
    ],
)
def test_price_and_volume_rules(override, expected):
    assert reason_of(override) == expected


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"open": ""}, "missing open"),
        ({"open": "   "}, "missing open"),
        ({"high": None}, "missing high"),
        ({"volume": None}, "missing volume"),
        ({"close": "abc"}, "close is not a number"),
        ({"low": "1,5"}, "low is not a number"),
        ({"volume": "nan"}, "volume is not finite"),
        ({"volume": "inf"}, "volume is not finite"),
        ({"high": "inf"}, "high is not finite"),
        ({"open": " 10 ", "volume": " 100 "}, None),
        ({"symbol": ""}, "missing symbol"),
        ({"symbol": "  "}, "missing symbol"),
        ({"symbol": None}, "missing symbol"),
        ({"ts": ""}, "missing timestamp"),
        ({"ts": "  "}, "missing timestamp"),
        ({"ts": None}, "missing timestamp"),
        ({"ts": "yesterday"}, "unparseable timestamp"),
        ({"ts": "2024-13-05"}, "unparseable timestamp"),
        ({"ts": "2024-02-30 10:00"}, "unparseable timestamp"),
    ],
)
def test_missing_and_malformed_fields(override, expected):
    assert reason_of(override) == expected


def test_reasons_are_all_listed_in_rule_order():
    row = {"symbol": "", "ts": "junk", "open": "x", "high": "nan", "low": "-1", "close": "5", "volume": "-3"}
    expected = ("missing symbol; unparseable timestamp; open is not a number; high is not finite; "
                "low is not positive; negative volume")
    assert reason_of(row) == expected


def test_structural_reasons_follow_field_reasons_in_order():
    row = {"ts": "2024-03-09 10:00", "high": "8", "low": "9", "open": "8.5", "close": "8.5", "volume": "-1"}
    expected = ("negative volume; high below low; open outside [low, high]; close outside [low, high]; "
                "timestamp in the future; outside window [2024-03-01 00:00, 2024-03-08 00:00)")
    assert reason_of(row, now=datetime(2024, 3, 6), window=(datetime(2024, 3, 1), datetime(2024, 3, 8))) == expected


def test_quote_reasons_in_order():
    row = {"open": "", "volume": "nan", "bid": "x", "ask": "-1", "bid_size": "nan", "ask_size": ""}
    expected = ("missing open; bid is not a number; missing ask_size; volume is not finite; bid_size is not finite; "
                "negative ask")
    assert reason_of(row) == expected


# -- typed (non-text) value columns ---------------------------------------------------------------------------------

def test_numeric_columns_of_any_numeric_dtype_are_read_as_float():
    raw = pl.DataFrame(
        {"symbol": ["ACME"], "ts": ["2024-03-05 10:00"], "open": [10], "high": [12.5], "low": [9],
         "close": [11], "volume": [0]},
        schema_overrides={"close": pl.Int8, "volume": pl.UInt32},
    )
    result = run(raw)
    assert result.quarantine.height == 0
    assert result.valid.schema == BAR_SCHEMA
    assert result.valid.row(0) == ("ACME", datetime(2024, 3, 5, 10), 10.0, 12.5, 9.0, 11.0, 0.0)


def test_null_in_numeric_dtype_is_missing():
    raw = pl.DataFrame(
        {"symbol": ["ACME", "ACME"], "ts": ["2024-03-05 10:00", "2024-03-05 11:00"], "open": [10.0, None],
         "high": [12.0, 12.0], "low": [9.0, 9.0], "close": [11.0, 11.0], "volume": [None, None]},
        schema_overrides={"volume": pl.Null},
    )
    assert reasons(run(raw)) == {1: "missing volume", 2: "missing open; missing volume"}


@pytest.mark.parametrize(
    ("column", "values", "dtype", "expected"),
    [
        ("open", [True], pl.Boolean, "open is not a number (Boolean)"),
        ("volume", [date(2024, 3, 5)], pl.Date, "volume is not a number (Date)"),
        ("bid", [False], pl.Boolean, "bid is not a number (Boolean)"),
    ],
)
def test_non_numeric_dtype_is_not_a_number(column, values, dtype, expected):
    raw = frame({}).with_columns(pl.Series(column, values, dtype=dtype))
    assert reasons(run(raw)) == {1: expected}


# -- quote columns --------------------------------------------------------------------------------------------------

def test_zero_quotes_are_valid_and_kept_as_float_columns():
    raw = frame({"bid": "0", "ask": "0", "bid_size": "0", "ask_size": "0"})
    result = run(raw)
    assert result.quarantine.height == 0
    assert result.valid.columns == [*BAR_SCHEMA, *QUOTES]
    assert result.valid.select(QUOTES).dtypes == [pl.Float64] * 4
    assert result.valid.select(QUOTES).row(0) == (0.0, 0.0, 0.0, 0.0)


def test_only_present_quote_columns_are_kept():
    raw = frame({"ask_size": "7", "ask": "10.5"}).with_columns(pl.col("ask_size").cast(pl.Int64))
    result = run(raw)
    assert result.valid.columns == [*BAR_SCHEMA, "ask", "ask_size"]
    assert result.valid.select("ask", "ask_size").row(0) == (10.5, 7.0)


@pytest.mark.parametrize("column", QUOTES)
@pytest.mark.parametrize(
    ("value", "template"),
    [("-0.5", "negative {}"), ("nan", "{} is not finite"), ("-inf", "{} is not finite; negative {}"),
     ("abc", "{} is not a number"), ("", "missing {}"), ("3", None)],
)
def test_quote_column_rules(column, value, template):
    expected = None if template is None else template.format(column, column)
    assert reason_of({column: value}) == expected


# -- timestamps -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-05 14:30:15.250", datetime(2024, 3, 5, 14, 30, 15, 250000)),
        ("2024-03-05 14:30:15", datetime(2024, 3, 5, 14, 30, 15)),
        ("2024-03-05T14:30:15", datetime(2024, 3, 5, 14, 30, 15)),
        ("2024-03-05 14:30", datetime(2024, 3, 5, 14, 30)),
        ("2024-03-05", datetime(2024, 3, 5)),
        ("20240305", datetime(2024, 3, 5)),
        ("03/05/2024", datetime(2024, 3, 5)),
        ("03/05/2024 14:30:15", datetime(2024, 3, 5, 14, 30, 15)),
        ("03/05/2024 14:30", datetime(2024, 3, 5, 14, 30)),
        ("05.03.2024 14:30:15.5", datetime(2024, 3, 5, 14, 30, 15, 500000)),
        ("05.03.2024 14:30:15", datetime(2024, 3, 5, 14, 30, 15)),
        ("05.03.2024", datetime(2024, 3, 5)),
        ("  2024-03-05 14:30  ", datetime(2024, 3, 5, 14, 30)),
    ],
)
def test_naive_formats_are_read_as_utc(text, expected):
    assert valid_ts(frame({"ts": text})) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-05 14:30:15.250+01:00", datetime(2024, 3, 5, 13, 30, 15, 250000)),
        ("2024-03-05 14:30:15+01:00", datetime(2024, 3, 5, 13, 30, 15)),
        ("2024-03-05T14:30:15Z", datetime(2024, 3, 5, 14, 30, 15)),
        ("2024-03-05 14:30-05:00", datetime(2024, 3, 5, 19, 30)),
        ("2024-03-05 14:30+0530", datetime(2024, 3, 5, 9, 0)),
        ("2024-03-05 14:30Z", datetime(2024, 3, 5, 14, 30)),
        ("2024-03-05 14:30 +01:00", datetime(2024, 3, 5, 13, 30)),
        ("2024-03-05 23:30-05:00", datetime(2024, 3, 6, 4, 30)),
    ],
)
def test_zoned_formats_are_converted_to_utc(text, expected):
    # naive_tz only applies to naive text: zoned text keeps its own offset
    assert valid_ts(frame({"ts": text})) == [expected]
    assert valid_ts(frame({"ts": text}), naive_tz="Asia/Tokyo") == [expected]


@pytest.mark.parametrize(
    ("text", "session_tz", "expected"),
    [
        ("2024-03-06 03:30+00:00", "America/New_York", date(2024, 3, 5)),  # 22:30 EST on the 5th
        ("2024-03-06 05:30+00:00", "America/New_York", date(2024, 3, 6)),  # 00:30 EST on the 6th
        ("2024-07-02 03:30Z", "America/New_York", date(2024, 7, 1)),  # 23:30 EDT on the 1st
        ("2024-07-02 04:30Z", "America/New_York", date(2024, 7, 2)),  # 00:30 EDT on the 2nd
        ("2024-03-05 08:00+09:00", "America/New_York", date(2024, 3, 4)),  # 18:00 EST on the 4th
        ("2024-03-05 23:30-05:00", "America/New_York", date(2024, 3, 5)),  # UTC would say the 6th
        ("2024-03-05 20:00Z", "Asia/Tokyo", date(2024, 3, 6)),  # 05:00 JST on the 6th
        ("2024-03-05 23:30", "America/New_York", date(2024, 3, 5)),  # naive: its own date
        ("05.03.2024 00:00:00", "America/New_York", date(2024, 3, 5)),
    ],
)
def test_daily_bars_take_the_session_date(text, session_tz, expected):
    ts = valid_ts(frame({"ts": text}), interval="1d", session_tz=session_tz, naive_tz="Asia/Tokyo")
    assert ts == [datetime(expected.year, expected.month, expected.day)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-05 09:30", datetime(2024, 3, 5, 14, 30)),  # EST, UTC-5
        ("2024-07-01 09:30", datetime(2024, 7, 1, 13, 30)),  # EDT, UTC-4
        ("2024-11-03 00:59", datetime(2024, 11, 3, 4, 59)),  # EDT, just before the repeated hour
        ("2024-11-03 02:00", datetime(2024, 11, 3, 7, 0)),  # EST, just after it
        ("2024-03-10 03:30", datetime(2024, 3, 10, 7, 30)),  # just after the spring-forward gap
    ],
)
def test_naive_timestamps_are_read_in_naive_tz(text, expected):
    assert valid_ts(frame({"ts": text}), naive_tz="America/New_York") == [expected]


def test_naive_time_in_a_dst_gap_does_not_exist():
    result = run(frame({"ts": "2024-03-10 02:30"}), naive_tz="America/New_York")
    assert reasons(result) == {1: "local time does not exist in America/New_York (clock moved forward)"}
    assert result.quarantine["ts_utc"].to_list() == [None]



def test_mixing_naive_and_zoned_text_quarantines_the_naive_rows():
    raw = frame({"ts": "2024-03-05 10:00+00:00"}, {"ts": "2024-03-05 11:00"}, {"ts": ""}, {"ts": "junk"},
                {"ts": "2024-03-05 12:00:00-01:00"}, {"ts": "2024-03-05"})
    result = run(raw)
    assert reasons(result) == {
        2: "timestamp without time zone in a file with zone offsets",
        3: "missing timestamp",
        4: "unparseable timestamp",
        6: "timestamp without time zone in a file with zone offsets",
    }
    assert result.valid["ts"].to_list() == [datetime(2024, 3, 5, 10), datetime(2024, 3, 5, 13)]
    assert result.quarantine["ts_utc"].to_list() == [datetime(2024, 3, 5, 11), None, None, datetime(2024, 3, 5)]


def test_zoned_datetime_column_is_converted_to_utc_or_session_date():
    ts = pl.Series("ts", [datetime(2024, 3, 6, 3, 0)]).dt.replace_time_zone("Europe/Berlin")  # 02:00 UTC
    raw = frame({}).with_columns(ts)
    assert valid_ts(raw) == [datetime(2024, 3, 6, 2, 0)]
    assert valid_ts(raw, naive_tz="Asia/Tokyo") == [datetime(2024, 3, 6, 2, 0)]
    assert valid_ts(raw, interval="1d") == [datetime(2024, 3, 5)]  # 21:00 EST on the 5th
    assert valid_ts(raw, interval="1d", session_tz="Asia/Tokyo") == [datetime(2024, 3, 6)]  # 11:00 JST


def test_naive_datetime_column_is_read_in_naive_tz():
    raw = frame({}).with_columns(pl.Series("ts", [datetime(2024, 3, 5, 23, 30)], dtype=pl.Datetime("ns")))
    assert valid_ts(raw) == [datetime(2024, 3, 5, 23, 30)]
    assert valid_ts(raw, naive_tz="America/New_York") == [datetime(2024, 3, 6, 4, 30)]
    assert valid_ts(raw, interval="1d", naive_tz="America/New_York") == [datetime(2024, 3, 5)]
    assert run(raw).valid.schema == BAR_SCHEMA


def test_naive_time_in_the_repeated_hour_is_ambiguous():
    """01:30 on the day New York falls back happens twice (05:30 and 06:30 UTC): which one a naive row means
    cannot be told, so it is quarantined with that reason, not guessed (two bars would collide on one instant)."""
    result = run(frame({"ts": "2024-11-03 01:30"}, {"ts": "2024-11-03 01:30", "open": "10.5"}),
                 naive_tz="America/New_York")
    ambiguous = "local time is ambiguous in America/New_York (clock moved back: it occurs twice)"
    assert reasons(result) == {1: ambiguous, 2: ambiguous}
    raw = frame({}).with_columns(pl.Series("ts", [datetime(2024, 11, 3, 1, 30)], dtype=pl.Datetime("us")))
    assert reasons(run(raw, naive_tz="America/New_York")) == {1: ambiguous}


def test_datetime_column_nulls_are_missing_and_a_dst_gap_says_so():
    raw = frame({}, {}).with_columns(pl.Series("ts", [datetime(2024, 3, 10, 2, 30), None], dtype=pl.Datetime("us")))
    assert reasons(run(raw)) == {2: "missing timestamp"}
    assert reasons(run(raw, naive_tz="America/New_York")) == {
        1: "local time does not exist in America/New_York (clock moved forward)", 2: "missing timestamp"}


def test_date_column_is_midnight():
    raw = frame({}, {}).with_columns(pl.Series("ts", [date(2024, 3, 5), None], dtype=pl.Date))
    for interval in ("1h", "1d"):
        result = run(raw, interval=interval, naive_tz="America/New_York")
        assert result.valid["ts"].to_list() == [datetime(2024, 3, 5)]
        assert reasons(result) == {2: "missing timestamp"}


@pytest.mark.parametrize(
    ("series", "name"),
    [(pl.Series("ts", [20240305], dtype=pl.Int64), "Int64"), (pl.Series("ts", [1.5], dtype=pl.Float64), "Float64"),
     (pl.Series("ts", [True]), "Boolean")],
)
def test_unsupported_timestamp_dtype(series, name):
    result = run(frame({}).with_columns(series))
    assert reasons(result) == {1: f"unsupported timestamp type {name}"}
    assert result.quarantine["ts_utc"].to_list() == [None]


# -- clock and window -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "interval", "expected"),
    [
        ("2024-03-05 10:00", "1h", None),
        ("2024-03-05 10:00:00.000001", "1h", "timestamp in the future"),
        ("2024-03-05 09:59:59.999999", "1h", None),
        ("2024-03-05 23:00", "1d", None),  # the session date is not after now
        ("2024-03-06 00:00", "1d", "timestamp in the future"),
    ],
)
def test_timestamp_at_now_is_valid_after_now_is_future(text, interval, expected):
    assert reason_of({"ts": text}, interval=interval, now=datetime(2024, 3, 5, 10)) == expected


WINDOW = (datetime(2024, 3, 5), datetime(2024, 3, 8))
OUTSIDE = "outside window [2024-03-05 00:00, 2024-03-08 00:00)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-05 00:00", None),
        ("2024-03-07 23:59:59.999999", None),
        ("2024-03-08 00:00", OUTSIDE),
        ("2024-03-04 23:59:59.999999", OUTSIDE),
        ("2024-03-20", OUTSIDE),
    ],
)
def test_window_is_half_open(text, expected):
    assert reason_of({"ts": text}, window=WINDOW) == expected
    assert reason_of({"ts": text}) is None  # no window requested


def test_window_reason_shows_minutes():
    window = (datetime(2024, 3, 5, 9, 30), datetime(2024, 3, 5, 16, 0))
    assert reason_of({"ts": "2024-03-05 16:00"}, window=window) == "outside window [2024-03-05 09:30, 2024-03-05 16:00)"
    assert reason_of({"ts": "2024-03-05 09:30"}, window=window) is None


# -- duplicates -----------------------------------------------------------------------------------------------------

def test_identical_copies_keep_the_first():
    raw = frame({}, {"ts": "2024-03-05T10:00:00", "open": "10.0"}, {"close": "11.000"})
    result = run(raw)
    assert reasons(result) == {2: "duplicate of row 1", 3: "duplicate of row 1"}
    assert result.valid.row(0) == ("ACME", datetime(2024, 3, 5, 10), 10.0, 12.0, 9.0, 11.0, 100.0)


def test_first_copy_is_the_lowest_row_number_whatever_the_order():
    raw = frame({"ts": "2024-03-05 11:00"}, {"ts": "2024-03-05 10:00"}, {"ts": "2024-03-05 11:00"},
                {"ts": "2024-03-05 10:00"})
    result = run(raw)
    assert reasons(result) == {3: "duplicate of row 1", 4: "duplicate of row 2"}
    assert result.valid["ts"].to_list() == [datetime(2024, 3, 5, 10), datetime(2024, 3, 5, 11)]


CONFLICT_2 = "conflicting duplicate (2 rows disagree)"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (({}, {"close": "11.5"}), {1: CONFLICT_2, 2: CONFLICT_2}),
        (({}, {"volume": "101"}), {1: CONFLICT_2, 2: CONFLICT_2}),
        (({}, {}, {"open": "11"}), {r: "conflicting duplicate (3 rows disagree)" for r in (1, 2, 3)}),
        (({"bid": "1"}, {"bid": "2"}), {1: CONFLICT_2, 2: CONFLICT_2}),
        (({"ask_size": "1"}, {"ask_size": "1"}), {2: "duplicate of row 1"}),
    ],
)
def test_copies_that_disagree_are_all_quarantined(overrides, expected):
    result = run(frame(*overrides))
    assert reasons(result) == expected
    assert result.valid.height == len(overrides) - len(expected)


def test_duplicates_count_only_otherwise_valid_rows():
    t11, t12 = "2024-03-05 11:00", "2024-03-05 12:00"
    raw = frame({"volume": "-1"}, {}, {}, {"ts": t11, "volume": "-1"}, {"ts": t11, "close": "10"},
                {"ts": t11, "close": "10.5"}, {"ts": t12}, {"ts": t12, "high": "x"})
    result = run(raw)
    assert reasons(result) == {
        1: "negative volume",
        3: "duplicate of row 2",
        4: "negative volume",
        5: "conflicting duplicate (2 rows disagree)",
        6: "conflicting duplicate (2 rows disagree)",
        8: "high is not a number",
    }
    assert result.valid["ts"].to_list() == [datetime(2024, 3, 5, 10), datetime(2024, 3, 5, 12)]


def test_same_time_other_symbol_or_same_symbol_other_time_is_no_duplicate():
    raw = frame({}, {"symbol": "OTHER"}, {"ts": "2024-03-05 10:01"}, {"symbol": " ACME ", "ts": "2024-03-05 10:02"})
    result = run(raw)
    assert result.quarantine.height == 0
    assert result.valid.select("symbol", "ts").rows() == [
        ("ACME", datetime(2024, 3, 5, 10)), ("ACME", datetime(2024, 3, 5, 10, 1)),
        ("ACME", datetime(2024, 3, 5, 10, 2)),
        ("OTHER", datetime(2024, 3, 5, 10)),
    ]


def test_duplicates_after_invalid_rows_between_them():
    # row 2 sorts between the two copies of (ACME, 10:00) only by symbol; it is invalid and plays no part
    raw = frame({}, {"symbol": "ACME", "ts": "2024-03-05 10:00", "open": "x"}, {}, {"symbol": "BETA"})
    assert reasons(run(raw)) == {2: "open is not a number", 3: "duplicate of row 1"}


# -- output shape ---------------------------------------------------------------------------------------------------

def test_valid_rows_are_sorted_by_symbol_then_time():
    raw = frame({"symbol": "MSFT", "ts": "2024-03-05 10:00"}, {"symbol": "AAPL", "ts": "05.03.2024 11:00:00"},
                {"symbol": "AAPL", "ts": "2024-03-04 12:00"}, {"symbol": "MSFT", "ts": "2024-03-05 08:00"},
                {"symbol": "AAPL", "ts": "2024-03-04 12:00"})
    result = run(raw)
    assert result.valid.select("symbol", "ts").rows() == [
        ("AAPL", datetime(2024, 3, 4, 12)), ("AAPL", datetime(2024, 3, 5, 11)),
        ("MSFT", datetime(2024, 3, 5, 8)), ("MSFT", datetime(2024, 3, 5, 10)),
    ]
    assert reasons(result) == {5: "duplicate of row 3"}


def test_quarantine_keeps_the_original_values():
    raw = frame({}, {"symbol": "ZZZ", "ts": "2024-03-05T11:00", "open": "x"}, {"symbol": " AAA ", "volume": "-5"},
                {"symbol": "", "ts": "junk"})
    result = run(raw)
    q = result.quarantine
    assert q.schema == QUARANTINE_SCHEMA
    assert q.select("row_number", "symbol", "ts", "ts_utc", "reason").rows() == [
        (2, "ZZZ", "2024-03-05T11:00", datetime(2024, 3, 5, 11), "open is not a number"),
        (3, " AAA ", "2024-03-05 10:00", datetime(2024, 3, 5, 10), "negative volume"),
        (4, "", "junk", None, "missing symbol; unparseable timestamp"),
    ]
    assert [json.loads(r) for r in q["raw"]] == [
        {**BASE, "symbol": "ZZZ", "ts": "2024-03-05T11:00", "open": "x"},
        {**BASE, "symbol": " AAA ", "volume": "-5"},
        {**BASE, "symbol": "", "ts": "junk"},
    ]
    assert list(json.loads(q["raw"][0])) == ["symbol", "ts", "open", "high", "low", "close", "volume"]
    assert result.valid.row(0) == ("ACME", datetime(2024, 3, 5, 10), 10.0, 12.0, 9.0, 11.0, 100.0)


def test_quarantine_raw_of_typed_columns_is_text():
    raw = pl.DataFrame({"symbol": ["ACME"], "ts": [date(2024, 3, 5)], "open": [10.5], "high": [12.0], "low": [9.0],
                        "close": [11.0], "volume": [-3], "bid": [1.25]})
    q = run(raw).quarantine
    assert q.schema == QUARANTINE_SCHEMA
    assert q.row(0)[:5] == (1, "ACME", "2024-03-05", datetime(2024, 3, 5), "negative volume")
    assert json.loads(q["raw"][0]) == {"symbol": "ACME", "ts": "2024-03-05", "open": "10.5", "high": "12.0",
                                       "low": "9.0", "close": "11.0", "volume": "-3", "bid": "1.25"}


def test_all_valid_gives_an_empty_quarantine_with_its_schema():
    result = run(frame({}, {"ts": "2024-03-05 11:00"}))
    assert result.quarantine.height == 0
    assert result.quarantine.schema == QUARANTINE_SCHEMA
    assert result.valid.schema == BAR_SCHEMA
    assert result.rows_in == 2


def test_all_quarantined_gives_an_empty_valid_frame_with_its_schema():
    result = run(frame({"open": "x"}, {"ts": "junk"}))
    assert result.valid.height == 0
    assert result.valid.schema == BAR_SCHEMA
    assert result.rows_in == 2
    assert reasons(result) == {1: "open is not a number", 2: "unparseable timestamp"}


def test_empty_input():
    result = run(frame({}).clear())
    assert (result.rows_in, result.valid.height, result.quarantine.height) == (0, 0, 0)


def test_validated_refuses_to_lose_rows_and_is_frozen():
    valid = pl.DataFrame(schema=BAR_SCHEMA)
    quarantine = pl.DataFrame(schema=QUARANTINE_SCHEMA)
    with pytest.raises(AssertionError, match="lost rows"):
        Validated(valid=valid, quarantine=quarantine, rows_in=1)
    result = Validated(valid=valid, quarantine=quarantine, rows_in=0)
    with pytest.raises(FrozenInstanceError):
        result.rows_in = 3  # type: ignore[misc]
