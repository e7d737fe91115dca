"""MiFIR transaction reports (RTS 22) from the execution journal: the fields of each fill computed by hand here,
validation that rejects bad LEI and ISIN check digits and times that are not UTC with microseconds, the CSV and
the auth.016 XML read back, and clear errors for bad reference files and journals."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import polars as pl
import pytest

from emp_core.compliance import mifid
from emp_core.compliance.mifid import (
    FIELDS,
    ReferenceDataError,
    TransactionReportError,
    Venue,
    from_csv,
    load_firm,
    load_instruments,
    load_reference,
    problems,
    to_csv,
    to_xml,
    transaction_reports,
    validate,
)
from emp_core.config import REPO_ROOT
from emp_core.errors import EmpError
from emp_core.execution.outbox import JOURNAL_COLUMNS, ApprovedOrder, sqlite_outbox

REFERENCE = REPO_ROOT / "data" / "compliance" / "reference"
FIRM_LEI, VENUE_LEI = "EMPP00PREDATORFIRM16", "EMPP00PAPERVENUE0044"
SESSION = "FIX.4.4:EMP->VENUE"
NS = {"a": "urn:iso:std:iso:20022:tech:xsd:auth.016.001.01"}


def journal(rows: list[dict]) -> pl.DataFrame:
    """A journal frame as ``Outbox.journal()`` gives it (seq + JOURNAL_COLUMNS)."""
    numeric = ("order_qty", "last_qty", "last_px", "cum_qty", "leaves_qty", "avg_px")
    schema = {"seq": pl.Int64} | {c: pl.Float64 if c in numeric else pl.String for c in JOURNAL_COLUMNS}
    full = [{c: r.get(c) for c in schema} | {"order_clordid": r.get("orig_clordid") or r["clordid"]}
            for r in rows]
    return pl.DataFrame(full, schema=schema)


def report(seq, exec_id, clordid, symbol, side, qty, px, when, *, exec_type="F", session=SESSION) -> dict:
    return {"seq": seq, "session": session, "exec_id": exec_id, "order_id": f"V-O{clordid}", "clordid": clordid,
            "msg_type": "8", "exec_type": exec_type, "ord_status": "1", "symbol": symbol, "side": side,
            "last_qty": qty, "last_px": px, "transact_time": when, "received_at": "2026-03-05 00:00:00.000001"}


ORDERS = pl.DataFrame({"clordid": ["CA", "CB", "CC", "CD", "CE"],
                       "strategy": ["champion", "catalogue/trend", "champion", "manual", "champion"],
                       "session": ["paper"] * 5})

# Five orders; an acknowledgement (ExecType 0) and a zero-quantity report are not fills.
FILLS = journal([
    report(1, "V-E1", "CA", "AAPL", "1", 0.0, 0.0, "2026-03-02 14:29:59.000000+00:00", exec_type="0"),
    report(2, "V-E2", "CA", "AAPL", "1", 60.0, 101.25, "2026-03-02 14:30:00.123000+00:00"),
    report(3, "V-E3", "CA", "AAPL", "1", 40.0, 101.5, "2026-03-02 14:30:01.500000+00:00"),
    report(4, "V-E4", "CB", "AAPL", "2", 150.0, 102.0, "2026-03-03 15:00:00"),  # naive: UTC
    report(5, "V-E5", "CC", "MSFT", "1", 10.0, 400.0, "2026-03-04T10:00:00.250000+01:00"),  # an offset: converted
    report(6, "V-E6", "CD", "MSFT", "2", 5.0, 401.0, "20260304-09:30:00.007"),  # a FIX UTCTimestamp
    report(7, "V-E7", "CE", "GOOG", "1", 3.0, 170.0625, "2026-03-04 16:00:00.000000+00:00"),
    report(8, "V-E8", "CE", "GOOG", "1", 0.0, 170.0, "2026-03-04 16:00:01.000000+00:00"),
])


@pytest.fixture(scope="module")
def reference():
    return load_reference(REFERENCE)


@pytest.fixture(scope="module")
def reports(reference):
    return transaction_reports(FILLS, ORDERS, *reference)


def test_one_report_per_fill_with_the_rts22_fields(reports):
    assert reports["exec_id"].to_list() == ["V-E2", "V-E3", "V-E4", "V-E5", "V-E6", "V-E7"]
    assert reports["trading_date_time"].to_list() == [
        "2026-03-02T14:30:00.123000Z", "2026-03-02T14:30:01.500000Z", "2026-03-03T15:00:00.000000Z",
        "2026-03-04T09:00:00.250000Z", "2026-03-04T09:30:00.007000Z", "2026-03-04T16:00:00.000000Z"]
    assert reports["buyer_id"].to_list() == [FIRM_LEI, FIRM_LEI, VENUE_LEI, FIRM_LEI, VENUE_LEI, FIRM_LEI]
    assert reports["seller_id"].to_list() == [VENUE_LEI, VENUE_LEI, FIRM_LEI, VENUE_LEI, FIRM_LEI, VENUE_LEI]
    assert reports["quantity"].to_list() == [60.0, 40.0, 150.0, 10.0, 5.0, 3.0]
    assert reports["price"].to_list() == [101.25, 101.5, 102.0, 400.0, 401.0, 170.0625]
    # Apple, Apple, Apple, Microsoft, Microsoft, and GOOG in 2026: Alphabet class C
    assert reports["instrument_id"].to_list() == ["US0378331005"] * 3 + ["US5949181045"] * 2 + ["US02079K1079"]
    assert set(reports["price_currency"]) == {"USD"} and set(reports["venue"]) == {"XOFF"}
    assert set(reports["executing_entity"]) == {FIRM_LEI} == set(reports["submitting_entity"])
    assert set(reports["trading_capacity"]) == {"DEAL"} and set(reports["report_status"]) == {"NEWT"}
    assert reports["venue_transaction_id"].null_count() == reports.height  # off venue: field 3 stays empty
    # 57: the strategy's algorithm, or the desk (a person, with the country of its branch, 58)
    assert reports["investment_decision_id"].to_list() == [
        "EMPCHAMPION", "EMPCHAMPION", "EMPCATTREND", "EMPCHAMPION", "IE19700101OPERADESK#", "EMPCHAMPION"]
    assert reports["investment_decision_type"].to_list() == ["ALGO"] * 4 + ["PERSON", "ALGO"]
    assert reports["investment_decision_country"].to_list() == [None] * 4 + ["IE", None]
    assert set(reports["execution_id"]) == {"EMPFIXEXECUTOR"} and set(reports["execution_type"]) == {"ALGO"}
    # 62: the AAPL sale of 150 against 100 held leaves -50 (short); the MSFT sale of 5 against 10 held does not
    assert reports["short_selling"].to_list() == [None, None, "SESH", None, "SELL", None]


def test_the_transaction_reference_is_unique_stable_and_in_esma_format(reports, reference):
    refs = reports["transaction_reference"].to_list()
    assert len(set(refs)) == len(refs) and all(re.fullmatch(r"[A-Z0-9]{1,52}", r) for r in refs)
    assert refs[0] == "EMP" + hashlib.sha256(f"{SESSION}|V-E2".encode()).hexdigest()[:29].upper()
    again = transaction_reports(FILLS, ORDERS, *reference)
    assert again["transaction_reference"].to_list() == refs
    # the same ExecID on another FIX session is another fill
    other = transaction_reports(FILLS.with_columns(pl.lit("FIX.4.4:EMP->OTHER").alias("session")), ORDERS,
                                *reference)
    assert set(other["transaction_reference"]).isdisjoint(refs)


def test_the_reports_of_the_shipped_reference_data_are_valid(reports):
    assert problems(reports).is_empty()
    validate(reports)  # does not raise


def _with(reports: pl.DataFrame, row: int, **values) -> pl.DataFrame:
    return reports.with_columns(*[pl.when(pl.int_range(pl.len()) == row).then(pl.lit(v, dtype=reports[c].dtype))
                                  .otherwise(pl.col(c)).alias(c) for c, v in values.items()])


def _flip_check_digit(code: str) -> str:
    return code[:-1] + str((int(code[-1]) + 1) % 10)


@pytest.mark.parametrize("column", ["executing_entity", "submitting_entity", "buyer_id", "seller_id"])
def test_a_bad_lei_check_digit_is_rejected_naming_the_report_and_field(reports, column):
    lei = reports[column][1]
    bad = _with(reports, 1, **{column: _flip_check_digit(lei)})
    found = problems(bad)
    ref = reports["transaction_reference"][1]
    mine = found.filter(pl.col("problem").str.contains("fails its LEI check digits"))
    assert mine.select("transaction_reference", "field").rows() == [(ref, f"{mifid.FIELD_NUMBER[column]} {column}")]
    with pytest.raises(TransactionReportError, match=rf"{ref} field \d+ {column}: .* fails its LEI check digits"):
        validate(bad)


def test_an_lei_with_a_transposed_character_is_rejected(reports):
    swapped = FIRM_LEI[:5] + FIRM_LEI[6] + FIRM_LEI[5] + FIRM_LEI[7:]  # "EMPP00P..." -> "EMPP0P0..."
    assert swapped != FIRM_LEI
    assert "fails its LEI check digits" in problems(_with(reports, 0, executing_entity=swapped))["problem"][0]


def test_a_bad_isin_check_digit_is_rejected(reports):
    bad = _with(reports, 3, instrument_id=_flip_check_digit("US5949181045"))
    found = problems(bad)
    assert found.select("transaction_reference", "field").rows() == [
        (reports["transaction_reference"][3], "41 instrument_id")]
    assert "US5949181046" in found["problem"][0] and "check digit" in found["problem"][0]


@pytest.mark.parametrize(("value", "problem"), [
    ("2026-03-02T15:30:00.123000+01:00", "carries the UTC offset +01:00"),
    ("2026-03-02T14:30:00.123000+00:00", "carries the UTC offset +00:00"),  # UTC, but not written with a Z
    ("2026-03-02T14:30:00.123000", "has no time zone"),
    ("2026-03-02T14:30:00Z", "does not have microseconds"),
    ("2026-03-02T14:30:00.123Z", "does not have microseconds"),
    ("2026-02-30T14:30:00.123000Z", "is not a calendar date"),
])
def test_a_trading_time_that_is_not_utc_with_microseconds_is_rejected(reports, value, problem):
    found = problems(_with(reports, 0, trading_date_time=value))
    assert found["field"].to_list() == ["28 trading_date_time"] and problem in found["problem"][0]
    with pytest.raises(TransactionReportError, match="28 trading_date_time"):
        validate(_with(reports, 0, trading_date_time=value))


@pytest.mark.parametrize(("change", "field", "problem"), [
    ({"price_currency": "USX"}, "34 price_currency", "not an ISO 4217 currency"),
    ({"quantity": 0.0}, "30 quantity", "not a finite number > 0"),
    ({"price": -1.0}, "33 price", "not a finite number > 0"),
    ({"short_selling": None}, "62 short_selling", "a sale by the firm needs one of"),
    ({"venue_transaction_id": "V-E4"}, "3 venue_transaction_id", "off a trading venue (XOFF)"),
    ({"venue": "XOF"}, "36 venue", "not a MIC"),
    ({"trading_capacity": "OWN"}, "29 trading_capacity", "not one of DEAL"),
    ({"investment_decision_id": "trend-1"}, "57 investment_decision_id", "not 1-50 capitals or digits"),
    ({"buyer_id": FIRM_LEI}, "16 seller_id", "the buyer and the seller are the same"),
    ({"transaction_reference": None}, "2 transaction_reference", "empty"),
])
def test_other_invalid_fields_are_named(reports, change, field, problem):
    found = problems(_with(reports, 2, **change))  # row 2: the AAPL sale
    assert field in found["field"].to_list()
    assert problem in found.filter(pl.col("field") == field)["problem"][0]


def test_a_duplicate_transaction_reference_is_rejected(reports):
    dup = pl.concat([reports, reports.head(1)])
    found = problems(dup)
    assert found["field"].to_list() == ["2 transaction_reference"] and "unique" in found["problem"][0]


def test_gaps_in_the_reference_data_leave_the_field_empty_and_fail_validation(reference):
    gaps = journal([report(1, "X1", "CA", "SPX", "1", 1.0, 5000.0, "2026-03-02 14:30:00+00:00"),
                    report(2, "X2", "CZ", "AAPL", "1", 1.0, 100.0, "2026-03-02 14:30:00+00:00"),
                    report(3, "X3", "CF", "AAPL", "1", 1.0, 100.0, "2026-03-02 14:30:00+00:00")])
    orders = pl.concat([ORDERS, pl.DataFrame({"clordid": ["CF"], "strategy": ["mystery"], "session": ["paper"]})])
    made = transaction_reports(gaps, orders, *reference)
    assert made.height == 3  # nothing dropped
    found = problems(made)
    by_exec = {e: dict(zip(g["field"], g["problem"], strict=True))
               for (e,), g in found.group_by("exec_id", maintain_order=True)}
    assert "no instrument in instruments.csv for symbol 'SPX'" in by_exec["X1"]["41 instrument_id"]
    assert "the outbox holds no order 'CZ'" in by_exec["X2"]["36 venue"]
    assert "strategy 'mystery'" in by_exec["X3"]["57 investment_decision_id"]


def test_a_trading_venue_puts_its_exec_id_in_field_3(reference):
    firm, instruments = reference
    on_venue = dataclasses.replace(firm, venues={"paper": Venue("XNAS", True, VENUE_LEI)})
    made = transaction_reports(FILLS, ORDERS, on_venue, instruments)
    assert made["venue_transaction_id"].to_list() == made["exec_id"].to_list()
    assert set(made["venue"]) == {"XNAS"} and problems(made).is_empty()
    txs = ET.fromstring(to_xml(made)).findall("a:FinInstrmRptgTxRpt/a:Tx/a:New", NS)
    assert [t.findtext("a:Tx/a:TradPlcMtchgId", namespaces=NS) for t in txs] == made["exec_id"].to_list()


def test_the_goog_isin_follows_the_trade_date(reference):
    dated = journal([report(1, "G1", "CE", "GOOG", "1", 1.0, 500.0, "2010-06-01 14:30:00+00:00"),
                     report(2, "G2", "CE", "GOOG", "1", 1.0, 500.0, "2014-04-03 14:30:00+00:00"),
                     report(3, "G3", "CE", "GOOG", "1", 1.0, 500.0, "2015-10-05 14:30:00+00:00")])
    made = transaction_reports(dated, ORDERS, *reference)
    assert made["instrument_id"].to_list() == ["US38259P5089", "US38259P7069", "US02079K1079"]


# --------------------------------------------------------------------------------------------------- exports


def test_the_xml_has_the_auth016_shape_and_each_tx_equals_its_report(reports, tmp_path):
    data = to_xml(reports, tmp_path / "tx.xml")
    assert (tmp_path / "tx.xml").read_bytes() == data and data.startswith(b"<?xml")
    root = ET.fromstring(data)
    assert root.tag == "{urn:iso:std:iso:20022:tech:xsd:auth.016.001.01}Document"
    txs = root.findall("a:FinInstrmRptgTxRpt/a:Tx/a:New", NS)
    assert len(txs) == reports.height
    for tx, r in zip(txs, reports.iter_rows(named=True), strict=True):
        def text(path: str, tx=tx) -> str | None:
            return tx.findtext(path, namespaces=NS)

        assert text("a:TxId") == r["transaction_reference"]
        assert text("a:ExctgPty") == text("a:SubmitgPty") == FIRM_LEI
        assert text("a:InvstmtPtyInd") == "true" and text("a:OrdrTrnsmssn/a:TrnsmssnInd") == "false"
        assert text("a:Buyr/a:AcctOwnr/a:Id/a:LEI") == r["buyer_id"]
        assert text("a:Sellr/a:AcctOwnr/a:Id/a:LEI") == r["seller_id"]
        assert text("a:Tx/a:TradDt") == r["trading_date_time"]
        assert text("a:Tx/a:TradgCpcty") == "DEAL"
        assert float(text("a:Tx/a:Qty/a:Unit")) == r["quantity"]
        amount = tx.find("a:Tx/a:Pric/a:Pric/a:MntryVal/a:Amt", NS)
        assert float(amount.text) == r["price"] and amount.get("Ccy") == r["price_currency"]
        assert text("a:Tx/a:TradVn") == "XOFF" and tx.find("a:Tx/a:TradPlcMtchgId", NS) is None
        assert text("a:FinInstrm/a:Id") == r["instrument_id"]
        if r["investment_decision_type"] == "ALGO":
            assert text("a:InvstmtDcsnPrsn/a:Algo") == r["investment_decision_id"]
            assert tx.find("a:InvstmtDcsnPrsn/a:Prsn", NS) is None
        else:
            assert text("a:InvstmtDcsnPrsn/a:Prsn/a:Othr/a:Id") == r["investment_decision_id"]
            assert text("a:InvstmtDcsnPrsn/a:Prsn/a:Othr/a:SchmeNm/a:Cd") == "CONCAT"
            assert text("a:InvstmtDcsnPrsn/a:Prsn/a:CtryOfBrnch") == r["investment_decision_country"]
        assert text("a:ExctgPrsn/a:Algo") == r["execution_id"]
        assert text("a:AddtlAttrbts/a:ShrtSellgInd") == r["short_selling"]
        assert text("a:AddtlAttrbts/a:SctiesFincgTxInd") == "false"
    assert txs[2].findtext("a:Tx/a:Pric/a:Pric/a:MntryVal/a:Amt", namespaces=NS) == "102"  # plain decimal text
    assert txs[5].findtext("a:Tx/a:Pric/a:Pric/a:MntryVal/a:Amt", namespaces=NS) == "170.0625"


def test_the_xml_leaves_out_what_is_empty(reference):
    made = transaction_reports(journal([report(1, "X1", "CA", "SPX", "1", 1.0, 5000.0,
                                               "2026-03-02 14:30:00+00:00")]), ORDERS, *reference)
    new = ET.fromstring(to_xml(made)).find("a:FinInstrmRptgTxRpt/a:Tx/a:New", NS)
    assert new.find("a:FinInstrm", NS) is None  # no ISIN: no element, not an empty one
    assert new.find("a:Tx/a:Pric/a:Pric/a:MntryVal/a:Amt", NS).get("Ccy") is None


def test_the_csv_has_the_rts22_names_and_reads_back_equal(reports, tmp_path):
    text = to_csv(reports, tmp_path / "tx.csv")
    header = text.splitlines()[0].split(",")
    assert header[:3] == ["Report status", "Transaction reference number",
                          "Trading venue transaction identification code"]
    assert len(text.splitlines()) == reports.height + 1
    assert "101.25" in text.splitlines()[1] and "EMPCHAMPION" in text.splitlines()[1]
    back = from_csv(tmp_path / "tx.csv")
    assert back.equals(reports.select([c for c, *_ in FIELDS]))
    assert from_csv(text).equals(back)


def test_a_csv_with_another_header_is_refused():
    with pytest.raises(TransactionReportError, match="the header is not the RTS 22 field names"):
        from_csv("a,b\n1,2\n")


def test_the_summary_counts_and_names_problems(reports):
    text = mifid.summary_markdown(reports)
    assert "**6** transaction reports (4 buy, 2 sell) in 3 instrument(s); all valid" in text
    bad = mifid.summary_markdown(_with(reports, 0, instrument_id="US0378331006"))
    assert "**1 validation problem**" in bad and "41 instrument_id" in bad


# ------------------------------------------------------------------------------------------ bad input


def test_a_real_outbox_journal_gives_the_same_reports(tmp_path, reference):
    """Through the SQLite journal: the executor journals TransactTime as an aware datetime."""
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    try:
        order = ApprovedOrder(idem_key="k1", strategy="champion", symbol="IBM", side="buy", qty=7)
        box.submit([order])
        box.record([{"session": SESSION, "exec_id": "E1", "order_id": "O1", "clordid": order.clordid,
                     "msg_type": "8", "exec_type": "F", "ord_status": "2", "symbol": "IBM", "side": "1",
                     "last_qty": 7.0, "last_px": 150.5,
                     "transact_time": datetime(2026, 3, 2, 14, 30, 0, 42000, tzinfo=UTC)}])
        made = transaction_reports(box.journal(), box.entries(), *reference)
    finally:
        box.close()
    assert made.select("trading_date_time", "instrument_id", "quantity", "price", "investment_decision_id",
                       "clordid").rows() == [("2026-03-02T14:30:00.042000Z", "US4592001014", 7.0, 150.5,
                                              "EMPCHAMPION", order.clordid)]
    assert problems(made).is_empty()


def test_a_journal_without_a_column_is_refused_naming_it(reference):
    with pytest.raises(TransactionReportError, match="execution journal: missing column transact_time"):
        transaction_reports(FILLS.drop("transact_time"), ORDERS, *reference)
    with pytest.raises(TransactionReportError, match="outbox orders: missing column strategy"):
        transaction_reports(FILLS, ORDERS.drop("strategy"), *reference)


def test_a_bad_side_or_time_in_the_journal_is_refused_naming_the_fill(reference):
    with pytest.raises(TransactionReportError, match=r"exec id V-E2\): FIX side '3'"):
        transaction_reports(FILLS.with_columns(pl.lit("3").alias("side")), ORDERS, *reference)
    with pytest.raises(TransactionReportError, match=r"exec id V-E2\): transact_time: 'yesterday' is not a time"):
        transaction_reports(FILLS.with_columns(pl.lit("yesterday").alias("transact_time")), ORDERS, *reference)


def _instruments(tmp_path, text: str):
    path = tmp_path / "instruments.csv"
    path.write_text(text)
    return path


HEADER = "symbol,isin,name,currency,price_notation,valid_from,valid_to\n"


@pytest.mark.parametrize(("text", "message"), [
    ("symbol,name,currency,price_notation,valid_from,valid_to\nAAPL,Apple,USD,MONE,,\n", "missing column isin"),
    (HEADER + "AAPL,US0378331005,Apple,USD,MONE,,\nMSFT,US5949181046,Microsoft,USD,MONE,,\n",
     r"line 3 \(MSFT\): isin 'US5949181046' fails its ISIN check digit"),
    (HEADER + "AAPL,US037833100,Apple,USD,MONE,,\n", r"line 2 \(AAPL\): isin 'US037833100' is not an ISIN"),
    (HEADER + "AAPL,US0378331005,Apple,DOLLAR,MONE,,\n", r"line 2 \(AAPL\): currency 'DOLLAR' is not an ISO 4217"),
    (HEADER + "AAPL,US0378331005,Apple,USD,PERC,,\n", r"line 2 \(AAPL\): price_notation 'PERC' is not supported"),
    (HEADER + "AAPL,US0378331005,Apple,USD,MONE,2020-13-01,\n", r"valid_from '2020-13-01' is not a date"),
    (HEADER + "GOOG,US38259P5089,A,USD,MONE,,2014-04-02\nGOOG,US02079K1079,C,USD,MONE,2014-04-02,\n",
     r"lines 2 and 3 \(GOOG\): validity periods overlap"),
])
def test_a_bad_instrument_file_is_refused_naming_the_row(tmp_path, text, message):
    path = _instruments(tmp_path, text)
    with pytest.raises(ReferenceDataError, match=message) as err:
        load_instruments(path)
    assert str(path) in str(err.value)


def test_the_shipped_instruments_have_valid_isins_and_currencies():
    shipped = load_instruments(REFERENCE / "instruments.csv")
    assert set(shipped["symbol"]) == {"AAPL", "IBM", "MSFT", "GOOG"}
    assert set(shipped["currency"]) == {"USD"}


FIRM = (REFERENCE / "firm.yaml").read_text()


@pytest.mark.parametrize(("old", "new", "message"), [
    ("lei: EMPP00PREDATORFIRM16", "lei: EMPP00PREDATORFIRM17", "lei: 'EMPP00PREDATORFIRM17' fails its LEI check"),
    ("counterparty_lei: EMPP00PAPERVENUE0044", "counterparty_lei: EMPP00PAPERVENUE", "venues.paper.counterparty_lei"),
    ("country: IE ", "country: XX ", "country: 'XX' is not an ISO 3166-1"),
    ("country: IE ", "country: NO ", "country: YAML read the code as a boolean: quote it"),
    ("mic: XOFF", "mic: XOF", "venues.paper.mic: 'XOF' is not a MIC"),
    ("trading_venue: false", "trading_venue: true", "venues.paper: MIC XOFF means off venue"),
    ("{algo: EMPCHAMPION}", "{algo: emp-champion}", "investment_decision.champion: algorithm code 'emp-champion'"),
    ('"IE19700101OPERADESK#"', '"IE1970OPERADESK"', "investment_decision.manual: 'IE1970OPERADESK' is not a CONCAT"),
    ("execution:", "executors:", "missing execution"),
])
def test_a_bad_firm_file_is_refused_naming_the_key(tmp_path, old, new, message):
    assert old in FIRM
    path = tmp_path / "firm.yaml"
    path.write_text(FIRM.replace(old, new))
    with pytest.raises(ReferenceDataError, match=re.escape(message)) as err:
        load_firm(path)
    assert str(path) in str(err.value)


def test_a_missing_reference_file_is_named(tmp_path):
    with pytest.raises(ReferenceDataError, match=r"firm.yaml: cannot read the firm reference file"):
        load_reference(tmp_path)


def test_fills_in_a_not_reportable_symbol_get_no_report_but_are_accounted_for(tmp_path):
    """An index level is not a financial instrument: no report, but listed with its reason, so reports plus the
    list cover every fill. The shipped list loads; a malformed one names the file and line."""
    from emp_core.compliance.mifid import load_not_reportable, not_reported

    firm, instruments = load_reference(REFERENCE)
    skip = load_not_reportable(REFERENCE / "not_reportable.csv")
    assert set(skip) == {"SPX", "IXIC"}
    fills = journal([report(1, "X1", "CA", "SPX", "1", 1.0, 5000.0, "2026-03-02 14:30:00+00:00"),
                     report(2, "X2", "CA", "AAPL", "1", 2.0, 100.0, "2026-03-02 14:30:00+00:00")])
    made = transaction_reports(fills, ORDERS, firm, instruments, skip)
    assert made["exec_id"].to_list() == ["X2"] and problems(made).is_empty()
    listed = not_reported(fills, skip)
    assert listed["exec_id"].to_list() == ["X1"] and "index" in listed["reason"][0]
    bad = tmp_path / "not_reportable.csv"
    bad.write_text("symbol,reason\nSPX,\n")
    with pytest.raises(EmpError, match=r"not_reportable.csv: line 2"):
        load_not_reportable(bad)


@pytest.mark.parametrize(("side", "before", "expected"), [
    ("2", 5.0, "SELL"), ("2", 0.0, "SESH"), ("5", 5.0, "SESH"), ("5", 0.0, "SESH"),
    ("6", 5.0, "SELL"), ("6", 0.0, "SSEX")])
def test_short_selling_flag_by_fix_side_and_position(side, before, expected):
    """RTS 22 field 62: SESH a short sale, SSEX a short sale under an exemption (FIX side 6, sell short exempt),
    SELL a sale that does not go short; a long of 5 sold by 3 stays long."""
    firm, instruments = load_reference(REFERENCE)
    rows = [report(1, "B1", "CA", "AAPL", "1", before, 100.0, "2026-03-02 14:30:00+00:00")] if before else []
    rows.append(report(2, "S1", "CA", "AAPL", side, 3.0, 100.0, "2026-03-02 14:31:00+00:00"))
    made = transaction_reports(journal(rows), ORDERS, firm, instruments)
    assert made.filter(pl.col("exec_id") == "S1")["short_selling"].to_list() == [expected]


def test_price_and_quantity_fit_the_rts22_decimal_formats(reports):
    """A fill price is reported to at most 13 decimal places (0.1 + 0.2 is 0.3 there, not 0.30000000000000004);
    a figure that does not fit DECIMAL-18/13 (price) or DECIMAL-18/17 (quantity) is a problem, named."""
    firm, instruments = load_reference(REFERENCE)
    made = transaction_reports(journal([report(1, "P1", "CA", "AAPL", "1", 1.0, 0.1 + 0.2,
                                                "2026-03-02 14:30:00+00:00")]), ORDERS, firm, instruments)
    assert made["price"].to_list() == [0.3] and problems(made).is_empty()
    bad = made.with_columns(pl.lit(0.12345678901234).alias("price"), pl.lit(1e18).alias("quantity"))
    found = dict(zip(problems(bad)["field"].to_list(), problems(bad)["problem"].to_list(), strict=True))
    assert "DECIMAL-18/13" in found["33 price"] and "DECIMAL-18/17" in found["30 quantity"]
