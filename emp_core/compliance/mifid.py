"""MiFID II / MiFIR transaction reports (RTS 22): one report per fill, validated, exported as CSV and as ISO
20022 auth.016 XML.

**What is reported.** Every fill in the execution journal (an ExecutionReport, MsgType 8, of ExecType F with
LastQty > 0; ``emp_core.execution.account.fills``) is one transaction of the firm dealing on own account: the
firm is the executing entity (field 4), the submitting entity (6) and, as the buyer (7) or the seller (16), the
account owner; the other side is the venue's counterparty. The journal's order ClOrdID links the fill to its
outbox order, whose strategy names who decided (field 57) and who executed (59): the platform's strategies are
algorithms, so both are algorithm codes, a manual order's decision a natural person (firm reference data).

**Reference data** (``data/compliance/reference``, :func:`load_reference`): ``firm.yaml`` (the firm's LEI and
country, the venue of each session kind, the decision makers by strategy) and ``instruments.csv`` (symbol ->
ISIN, currency, price notation, with validity dates, since a ticker can change its instrument: GOOG). Gaps in the
reference data (a symbol with no ISIN, a strategy with no decision maker) do not stop the build: the field stays
empty and :func:`problems` names the report and the field. A journal that cannot be read (a missing column, an
unknown FIX side, a time that is not a time) raises :class:`TransactionReportError`, naming the report.

**Venue** (field 36). The paper venue (``emp venue``) is our own simulator, not a trading venue, systematic
internaliser or organised trading platform, so its fills are reported with the MIC ``XOFF`` (off venue), and the
trading venue transaction identification code (field 3), which ESMA wants only for trades on a trading venue,
stays empty; the venue's ExecID and OrderID are kept beside the report (``exec_id``, ``venue_order_id``) to link
it to the journal. A venue configured with ``trading_venue: true`` gets its ExecID in field 3.

**Fields** (:data:`FIELDS`: column, RTS 22 field number, name). Field 2, the transaction reference number, is
``EMP`` + 29 hex digits of SHA-256 over ``session|exec_id``: unique per fill (the journal keeps each (session,
ExecID) once), the same on every run, and within ESMA's ``[A-Z0-9]{1,52}``. Field 28 is the venue's
TransactTime in UTC with microseconds and a ``Z`` (a naive journal time is UTC: the store's convention). Field
62, the short selling indicator, is ``SESH`` for a sale that leaves the firm's position in the instrument below
zero (the position summed over the journal's fills before it) and ``SELL`` otherwise; FIX side 5 (sell short)
is ``SESH``, side 6 (sell short exempt) ``SSEX``. Fields the platform's trades never need are not built: client
and decision-maker details (8-15, 17-24: the firm deals for itself), transmission details (26-27; field 25 is
``false``), derivative and bond fields (31, 32, 35, 38-40, 42-56), waivers and post-trade flags (61, 63),
commodity derivatives (64).

**XML**: ``urn:iso:std:iso:20022:tech:xsd:auth.016.001.01`` (the MiFIR transaction report the ESMA
guidelines of 2016 define), ``Document/FinInstrmRptgTxRpt/Tx/New`` per report (:func:`to_xml`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl

from emp_core.errors import EmpError

AUTH016_NS = "urn:iso:std:iso:20022:tech:xsd:auth.016.001.01"
REFERENCE_DIR = Path("compliance") / "reference"  # under the data directory (``Settings.data_dir``)
OFF_VENUE = ("XOFF", "XXXX")  # MICs of a transaction not on a trading venue
TRADING_CAPACITIES = ("DEAL", "MTCH", "AOTC")
SHORT_SELLING = ("SESH", "SSEX", "SELL", "UNDI")
DECIMALS = {"price": 13, "quantity": 17}  # RTS 22: price DECIMAL-18/13, quantity DECIMAL-18/17
PRICE_NOTATIONS = ("MONE",)  # shares are priced in money; PERC, YIEL, BAPO are for bonds and derivatives
BUY_SIDES, SELL_SIDES = ("1",), ("2", "5", "6")  # FIX Side: buy; sell, sell short, sell short exempt
_UTC_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_TX_REF = re.compile(r"[A-Z0-9]{1,52}")
_ALGO = re.compile(r"[A-Z0-9]{1,50}")
_CONCAT = re.compile(r"([A-Z]{2})\d{8}[A-Z#]{10}")  # country, birth date, 5 letters of first name and surname
_MIC = re.compile(r"[A-Z0-9]{4}")

# (column, RTS 22 field number, RTS 22 field name (the CSV header), polars type)
FIELDS: tuple[tuple[str, int, str, pl.DataType], ...] = (
    ("report_status", 1, "Report status", pl.String()),
    ("transaction_reference", 2, "Transaction reference number", pl.String()),
    ("venue_transaction_id", 3, "Trading venue transaction identification code", pl.String()),
    ("executing_entity", 4, "Executing entity identification code", pl.String()),
    ("investment_firm", 5, "Investment Firm covered by Directive 2014/65/EU", pl.Boolean()),
    ("submitting_entity", 6, "Submitting entity identification code", pl.String()),
    ("buyer_id", 7, "Buyer identification code", pl.String()),
    ("seller_id", 16, "Seller identification code", pl.String()),
    ("transmission_of_order", 25, "Transmission of order indicator", pl.Boolean()),
    ("trading_date_time", 28, "Trading date time", pl.String()),
    ("trading_capacity", 29, "Trading capacity", pl.String()),
    ("quantity", 30, "Quantity", pl.Float64()),
    ("price", 33, "Price", pl.Float64()),
    ("price_currency", 34, "Price currency", pl.String()),
    ("venue", 36, "Venue", pl.String()),
    ("instrument_id", 41, "Instrument identification code", pl.String()),
    ("investment_decision_type", 57, "Investment decision within firm type", pl.String()),  # ALGO or PERSON
    ("investment_decision_id", 57, "Investment decision within firm", pl.String()),
    ("investment_decision_country", 58,
     "Country of the branch supervising the person responsible for the investment decision", pl.String()),
    ("execution_type", 59, "Execution within firm type", pl.String()),  # ALGO or PERSON
    ("execution_id", 59, "Execution within firm", pl.String()),
    ("execution_country", 60, "Country of the branch supervising the person responsible for the execution",
     pl.String()),
    ("short_selling", 62, "Short selling indicator", pl.String()),
    ("securities_financing", 65, "Securities financing transaction indicator", pl.Boolean()),
)
# Beside the report, not sent: where it came from (the journal row, the order).
SOURCE: dict[str, pl.DataType] = {
    "journal_seq": pl.Int64(), "fix_session": pl.String(), "exec_id": pl.String(), "venue_order_id": pl.String(),
    "clordid": pl.String(), "strategy": pl.String(), "symbol": pl.String(), "side": pl.String(),
}
REPORT_SCHEMA: dict[str, pl.DataType] = {c: t for c, _, _, t in FIELDS} | SOURCE
FIELD_NUMBER = {c: n for c, n, _, _ in FIELDS}
PROBLEM_SCHEMA = {"transaction_reference": pl.String(), "exec_id": pl.String(), "field": pl.String(),
                  "value": pl.String(), "problem": pl.String()}
INSTRUMENT_COLUMNS = ("symbol", "isin", "name", "currency", "price_notation", "valid_from", "valid_to")
_REQUIRED = ("report_status", "transaction_reference", "executing_entity", "investment_firm", "submitting_entity",
             "buyer_id", "seller_id", "transmission_of_order", "trading_date_time", "trading_capacity", "quantity",
             "price", "price_currency", "venue", "instrument_id", "investment_decision_type",
             "investment_decision_id", "execution_type", "execution_id", "securities_financing")


class TransactionReportError(EmpError):
    """Transaction reports that cannot be built or do not validate; the message names the report and field."""


class ReferenceDataError(EmpError):
    """A firm or instrument reference file that cannot be used; the message names the file, row and field."""


# ------------------------------------------------------------------------------------------- reference data


@dataclass(frozen=True)
class Party:
    """Who decided or executed within the firm (fields 57-60): an algorithm (code) or a natural person (CONCAT
    code and the country of the branch supervising them)."""

    kind: str  # ALGO or PERSON
    id: str
    country: str | None = None


@dataclass(frozen=True)
class Venue:
    """Where a session kind's orders go (field 36) and who is on the other side of its fills (7/16)."""

    mic: str
    trading_venue: bool
    counterparty_lei: str


@dataclass(frozen=True)
class Firm:
    name: str
    lei: str
    country: str
    venues: Mapping[str, Venue]  # by session kind: paper, live
    decisions: tuple[tuple[str, Party], ...]  # (strategy or pattern ending in *, party), in file order
    executions: tuple[tuple[str, Party], ...]

    def decision_for(self, strategy: str | None) -> Party | None:
        return _match(self.decisions, strategy)

    def execution_for(self, strategy: str | None) -> Party | None:
        return _match(self.executions, strategy)


def _match(table: tuple[tuple[str, Party], ...], strategy: str | None) -> Party | None:
    """The first entry naming ``strategy`` exactly, else the first pattern (``prefix*``) it starts with; in a
    pattern's code, ``{suffix}`` is the rest of the name in capitals and digits."""
    if strategy is None:
        return None
    for name, party in table:
        if name == strategy:
            return party
    for name, party in table:
        if name.endswith("*") and strategy.startswith(name[:-1]):
            suffix = re.sub(r"[^A-Z0-9]", "", strategy[len(name) - 1:].upper())
            return Party(party.kind, party.id.replace("{suffix}", suffix), party.country)
    return None


def reference_dir(cfg=None) -> Path:
    """The shipped reference data: ``<data dir>/compliance/reference`` (``EMP_DATA_DIR``)."""
    from emp_core.config import settings

    return (cfg or settings()).data_dir / REFERENCE_DIR


def load_reference(directory: str | Path | None = None) -> tuple[Firm, pl.DataFrame]:
    """(firm, instruments) from ``directory`` (default :func:`reference_dir`)."""
    directory = Path(directory) if directory is not None else reference_dir()
    return load_firm(directory / "firm.yaml"), load_instruments(directory / "instruments.csv")


def load_not_reportable(path: str | Path) -> dict[str, str]:
    """Symbols the paper venue trades that are not financial instruments under MiFIR (an index level), each with
    the reason no transaction report is due (``not_reportable.csv``: symbol, reason). A missing file: none."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header, rows = reader.fieldnames or [], list(reader)
    except OSError as exc:
        raise ReferenceDataError(f"{path}: cannot read the not-reportable list: {exc.strerror}") from None
    if header[:2] != ["symbol", "reason"]:
        raise ReferenceDataError(f"{path}: the header must be symbol,reason (got {','.join(header) or 'nothing'})")
    out: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        symbol, reason = (row["symbol"] or "").strip(), (row["reason"] or "").strip()
        if not symbol or not reason:
            raise ReferenceDataError(f"{path}: line {line}: a symbol and the reason it is not reportable are "
                                     "both required")
        if symbol in out:
            raise ReferenceDataError(f"{path}: line {line}: {symbol} is listed twice")
        out[symbol] = reason
    return out


def not_reported(journal: pl.DataFrame, not_reportable: Mapping[str, str]) -> pl.DataFrame:
    """The journal's fills for which no report is due (their symbol is in ``not_reportable``), with the reason:
    with the reports, every fill is accounted for."""
    fills = journal.filter((pl.col("msg_type") == "8") & (pl.col("exec_type") == "F")
                           & (pl.col("last_qty").cast(pl.Float64) > 0)
                           & pl.col("symbol").is_in(list(not_reportable)))
    return fills.sort("seq").select(
        "session", "exec_id", pl.col("order_clordid").alias("clordid"), "symbol",
        pl.col("symbol").replace_strict(dict(not_reportable), return_dtype=pl.String).alias("reason"))


def load_firm(path: str | Path) -> Firm:
    """The firm reference file (``firm.yaml``), checked: LEIs by their check digits, countries and MICs by their
    codes, algorithm and person codes by their formats."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ReferenceDataError(f"{path}: cannot read the firm reference file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ReferenceDataError(f"{path}: not YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ReferenceDataError(f"{path}: expected a mapping with lei, country, venues, investment_decision, "
                                 "execution")
    missing = [k for k in ("name", "lei", "country", "venues", "investment_decision", "execution") if k not in data]
    if missing:
        raise ReferenceDataError(f"{path}: missing {', '.join(missing)}")

    def fail(where: str, problem: str):
        raise ReferenceDataError(f"{path}: {where}: {problem}")

    lei = str(data["lei"])
    if (why := lei_problem(lei)) is not None:
        fail("lei", why)
    if isinstance(data["country"], bool):  # YAML 1.1 reads NO (Norway) as false
        fail("country", "YAML read the code as a boolean: quote it (country: \"NO\")")
    country = str(data["country"])
    if (why := country_problem(country)) is not None:
        fail("country", why)
    if not isinstance(data["venues"], dict) or not data["venues"]:
        fail("venues", "expected a mapping of session kind (paper, live) to mic, trading_venue, counterparty_lei")
    venues = {str(kind): _venue(v, f"venues.{kind}", fail) for kind, v in data["venues"].items()}
    tables = []
    for key in ("investment_decision", "execution"):
        if not isinstance(data[key], dict) or not data[key]:
            fail(key, "expected a mapping of strategy (or a pattern ending in *) to {algo: CODE} or "
                      "{person: CONCAT, country: CC}")
        entries = []
        for strategy, spec in data[key].items():
            entries.append((str(strategy), _party(spec, f"{key}.{strategy}", fail)))
        tables.append(tuple(entries))
    return Firm(str(data["name"]), lei, country, venues, *tables)


def _venue(v, where: str, fail) -> Venue:
    if not isinstance(v, dict) or {"mic", "counterparty_lei"} - set(v):
        fail(where, "needs mic and counterparty_lei")
    if isinstance(v["mic"], bool):  # YAML 1.1 reads OFF, ON, YES, NO as booleans
        fail(f"{where}.mic", "YAML read the code as a boolean: quote it")
    if not _MIC.fullmatch(str(v["mic"])):
        fail(f"{where}.mic", f"{v['mic']!r} is not a MIC (4 capitals or digits, ISO 10383)")
    if (why := lei_problem(str(v["counterparty_lei"]))) is not None:
        fail(f"{where}.counterparty_lei", why)
    trading = v.get("trading_venue", False)
    if not isinstance(trading, bool):
        fail(f"{where}.trading_venue", f"{trading!r} is not true or false")
    if trading and v["mic"] in OFF_VENUE:
        fail(where, f"MIC {v['mic']} means off venue, yet trading_venue is true")
    return Venue(str(v["mic"]), trading, str(v["counterparty_lei"]))


def _party(spec, where: str, fail) -> Party:
    if isinstance(spec, dict) and set(spec) == {"algo"}:
        code = str(spec["algo"])
        if not _ALGO.fullmatch(code.replace("{suffix}", "")):
            fail(where, f"algorithm code {code!r} is not 1-50 capitals or digits")
        return Party("ALGO", code)
    if isinstance(spec, dict) and set(spec) == {"person", "country"}:
        person, country = str(spec["person"]), str(spec["country"])
        if (why := person_problem(person)) is not None:
            fail(where, why)
        if (why := country_problem(country)) is not None:
            fail(f"{where}.country", why)
        return Party("PERSON", person, country)
    return fail(where, f"{spec!r}: expected {{algo: CODE}} or {{person: CONCAT, country: CC}}")


def load_instruments(path: str | Path) -> pl.DataFrame:
    """The instrument reference file (``instruments.csv``: :data:`INSTRUMENT_COLUMNS`), checked row by row: the
    ISIN's check digit, the currency (ISO 4217), the price notation, the validity dates (ISO; empty: open), no
    two rows of a symbol valid on the same day."""
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            rows = list(reader)
    except OSError as exc:
        raise ReferenceDataError(f"{path}: cannot read the instrument reference file: {exc.strerror}") from None
    missing = [c for c in INSTRUMENT_COLUMNS if c not in header]
    if missing:
        raise ReferenceDataError(f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                                 f"(the header has {', '.join(header) or 'nothing'})")
    out = [_instrument_row(f"{path}: line {line} ({(row['symbol'] or '').strip() or 'no symbol'})", row, line)
           for line, row in enumerate(rows, start=2)]  # line 1 is the header
    for i, a in enumerate(out):
        for b in out[i + 1:]:
            if a["symbol"] == b["symbol"] and _overlap(a, b):
                raise ReferenceDataError(f"{path}: lines {a['line']} and {b['line']} ({a['symbol']}): validity "
                                         "periods overlap, so a trade date could have two ISINs")
    return pl.DataFrame(out, schema={"symbol": pl.String, "isin": pl.String, "name": pl.String,
                                     "currency": pl.String, "price_notation": pl.String, "valid_from": pl.Date,
                                     "valid_to": pl.Date, "line": pl.Int64})


def _instrument_row(where: str, row: Mapping, line: int) -> dict:
    symbol = (row["symbol"] or "").strip()
    if not symbol:
        raise ReferenceDataError(f"{where}: the symbol is empty")
    isin = (row["isin"] or "").strip()
    if (why := isin_problem(isin)) is not None:
        raise ReferenceDataError(f"{where}: isin {why}")
    currency = (row["currency"] or "").strip()
    if (why := currency_problem(currency)) is not None:
        raise ReferenceDataError(f"{where}: currency {why}")
    notation = (row["price_notation"] or "").strip()
    if notation not in PRICE_NOTATIONS:
        raise ReferenceDataError(f"{where}: price_notation {notation!r} is not supported (only "
                                 f"{', '.join(PRICE_NOTATIONS)}: shares priced in money)")
    valid = []
    for col in ("valid_from", "valid_to"):
        text = (row[col] or "").strip()
        try:
            valid.append(date.fromisoformat(text) if text else None)
        except ValueError:
            raise ReferenceDataError(f"{where}: {col} {text!r} is not a date (YYYY-MM-DD)") from None
    if valid[0] and valid[1] and valid[1] < valid[0]:
        raise ReferenceDataError(f"{where}: valid_to {valid[1]} is before valid_from {valid[0]}")
    return {"symbol": symbol, "isin": isin, "name": (row["name"] or "").strip(), "currency": currency,
            "price_notation": notation, "valid_from": valid[0], "valid_to": valid[1], "line": line}


def _overlap(a: Mapping, b: Mapping) -> bool:
    lo = max(a["valid_from"] or date.min, b["valid_from"] or date.min)
    hi = min(a["valid_to"] or date.max, b["valid_to"] or date.max)
    return lo <= hi


def _instrument(instruments: pl.DataFrame, symbol: str | None, day: date | None) -> dict | None:
    if symbol is None or day is None:
        return None
    for row in instruments.filter(pl.col("symbol") == symbol).iter_rows(named=True):
        if (row["valid_from"] or date.min) <= day <= (row["valid_to"] or date.max):
            return row
    return None


# -------------------------------------------------------------------------------------------- code checks


def _checked_code(value: str | None, what: str, pattern: str, shape: str, module, checksum: str) -> str | None:
    """Why ``value`` is not a ``what`` (its ``pattern`` and python-stdnum ``module``'s check digits), or None."""
    from stdnum.exceptions import InvalidChecksum, ValidationError

    if not value:
        return "is empty"
    if not re.fullmatch(pattern, value):
        return f"{value!r} is not an {what} ({shape})"
    try:
        module.validate(value)
    except InvalidChecksum:
        return f"{value!r} fails its {what} {checksum}"
    except ValidationError as exc:
        return f"{value!r} is not an {what}: {exc}"
    return None


def lei_problem(value: str | None) -> str | None:
    """Why ``value`` is not an LEI (ISO 17442: 18 characters, then 2 check digits, mod 97-10), or None."""
    from stdnum import lei

    return _checked_code(value, "LEI", r"[A-Z0-9]{18}[0-9]{2}",
                         "20 characters: 18 capitals or digits, then 2 check digits", lei,
                         "check digits (ISO 17442, mod 97-10)")


def isin_problem(value: str | None) -> str | None:
    """Why ``value`` is not an ISIN (ISO 6166: country, 9 characters, a Luhn check digit), or None."""
    from stdnum import isin

    return _checked_code(value, "ISIN", r"[A-Z]{2}[A-Z0-9]{9}[0-9]",
                         "12 characters: 2 letters, 9 capitals or digits, a check digit", isin,
                         "check digit (ISO 6166)")


def currency_problem(value: str | None) -> str | None:
    import iso4217

    if not value:
        return "is empty"
    try:
        iso4217.Currency(value)
    except ValueError:
        return f"{value!r} is not an ISO 4217 currency code"
    return None


def country_problem(value: str | None) -> str | None:
    import pycountry

    if not value:
        return "is empty"
    if not re.fullmatch(r"[A-Z]{2}", value) or pycountry.countries.get(alpha_2=value) is None:
        return f"{value!r} is not an ISO 3166-1 alpha-2 country code"
    return None


def person_problem(value: str | None) -> str | None:
    if not value:
        return "is empty"
    m = _CONCAT.fullmatch(value)
    if m is None:
        return (f"{value!r} is not a CONCAT code (country, birth date YYYYMMDD, first 5 letters of first name "
                "and surname, # for padding)")
    if country_problem(m.group(1)) is not None:
        return f"{value!r}: {m.group(1)!r} is not an ISO 3166-1 country code"
    return None


def utc_text(value, *, what: str = "time") -> str | None:
    """``value`` (a datetime, ISO text or a FIX UTCTimestamp; naive means UTC) as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``;
    None for None or empty. Raises :class:`TransactionReportError` naming ``what`` for text that is no time."""
    ts = parse_time(value, what=what)
    return None if ts is None else ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value, *, what: str = "time") -> datetime | None:
    """``value`` as an aware UTC datetime (naive means UTC, the store's convention); None for None or empty."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        ts = value
    elif isinstance(value, date):
        ts = datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip()
        try:
            if re.fullmatch(r"\d{8}-\d{2}:\d{2}:\d{2}(\.\d+)?", text):  # FIX UTCTimestamp
                whole, _, frac = text.partition(".")
                ts = datetime.strptime(whole, "%Y%m%d-%H:%M:%S").replace(
                    microsecond=int((frac + "000000")[:6]) if frac else 0, tzinfo=UTC)
            else:
                ts = datetime.fromisoformat(text)
        except ValueError:
            raise TransactionReportError(f"{what}: {text!r} is not a time") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


# ---------------------------------------------------------------------------------------------- the reports


def transaction_reference(session: str, exec_id: str) -> str:
    """Field 2 of the fill ``exec_id`` received on FIX session ``session`` (module docstring)."""
    return "EMP" + hashlib.sha256(f"{session}|{exec_id}".encode()).hexdigest()[:29].upper()


def transaction_reports(journal: pl.DataFrame, orders: pl.DataFrame, firm: Firm,
                        instruments: pl.DataFrame, not_reportable: Mapping[str, str] | None = None) -> pl.DataFrame:
    """One report per fill in ``journal`` (``Outbox.journal()``), in the order received (:data:`REPORT_SCHEMA`;
    module docstring). ``orders``: the outbox (``Outbox.entries()``: clordid, strategy, session at least).
    Fills in a ``not_reportable`` symbol get no report (:func:`not_reported` lists them with the reason); the
    short-selling flag still counts them in the position, since they are."""
    need = ("seq", "session", "exec_id", "clordid", "msg_type", "exec_type", "symbol", "side", "last_qty", "last_px",
            "transact_time")
    missing = [c for c in need if c not in journal.columns]
    if missing:
        raise TransactionReportError(f"execution journal: missing column{'s' if len(missing) > 1 else ''} "
                                     f"{', '.join(missing)}")
    missing = [c for c in ("clordid", "strategy", "session") if c not in orders.columns]
    if missing:
        raise TransactionReportError(f"outbox orders: missing column{'s' if len(missing) > 1 else ''} "
                                     f"{', '.join(missing)}")
    by_order = {r["clordid"]: r for r in orders.select("clordid", "strategy", "session").iter_rows(named=True)}
    fills = (journal.filter((pl.col("msg_type") == "8") & (pl.col("exec_type") == "F")
                            & (pl.col("last_qty").cast(pl.Float64) > 0))
             .sort("seq"))
    position: dict[str, float] = {}
    rows = []
    skip = set(not_reportable or ())
    for f in fills.iter_rows(named=True):
        if f["symbol"] in skip:
            continue
        ref = transaction_reference(str(f["session"]), str(f["exec_id"]))
        where = f"transaction {ref} (exec id {f['exec_id']})"
        side, qty, symbol = str(f["side"]), float(f["last_qty"]), f["symbol"]
        if side not in BUY_SIDES + SELL_SIDES:
            raise TransactionReportError(f"{where}: FIX side {side!r} is neither a buy (1) nor a sell (2, 5, 6)")
        ts = parse_time(f["transact_time"], what=f"{where}: transact_time")
        before = position.get(symbol, 0.0)
        after = position[symbol] = before + (qty if side in BUY_SIDES else -qty)
        order = by_order.get(f.get("order_clordid") or f["clordid"], {})
        strategy = order.get("strategy")
        venue = firm.venues.get(order.get("session") or "")
        decision, execution = firm.decision_for(strategy), firm.execution_for(strategy)
        instrument = _instrument(instruments, symbol, ts.date() if ts else None)
        counterparty = venue.counterparty_lei if venue else None
        if side in BUY_SIDES:
            short = None
        elif side == "6":  # sell short exempt: an exempt short sale when it goes short
            short = "SSEX" if after < 0 else "SELL"
        elif side == "5" or after < 0:
            short = "SESH"
        else:
            short = "SELL"
        rows.append({
            "report_status": "NEWT", "transaction_reference": ref,
            "venue_transaction_id": str(f["exec_id"]) if venue and venue.trading_venue else None,
            "executing_entity": firm.lei, "investment_firm": True, "submitting_entity": firm.lei,
            "buyer_id": firm.lei if side in BUY_SIDES else counterparty,
            "seller_id": counterparty if side in BUY_SIDES else firm.lei,
            "transmission_of_order": False,
            "trading_date_time": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if ts else None,
            "trading_capacity": "DEAL", "quantity": round(qty, DECIMALS["quantity"]),
            "price": None if f["last_px"] is None else round(float(f["last_px"]), DECIMALS["price"]),
            "price_currency": instrument["currency"] if instrument else None,
            "venue": venue.mic if venue else None,
            "instrument_id": instrument["isin"] if instrument else None,
            "investment_decision_type": decision.kind if decision else None,
            "investment_decision_id": decision.id if decision else None,
            "investment_decision_country": decision.country if decision and decision.kind == "PERSON" else None,
            "execution_type": execution.kind if execution else None,
            "execution_id": execution.id if execution else None,
            "execution_country": execution.country if execution and execution.kind == "PERSON" else None,
            "short_selling": short, "securities_financing": False,
            "journal_seq": f["seq"], "fix_session": f["session"], "exec_id": f["exec_id"],
            "venue_order_id": f.get("order_id"), "clordid": f.get("order_clordid") or f["clordid"],
            "strategy": strategy, "symbol": symbol, "side": side})
    return pl.DataFrame(rows, schema=REPORT_SCHEMA)


# ------------------------------------------------------------------------------------------------ validation


def problems(reports: pl.DataFrame) -> pl.DataFrame:
    """Every problem in ``reports``, one row each (:data:`PROBLEM_SCHEMA`): the report (transaction reference
    and exec id), the field (``28 trading_date_time``), its value and what is wrong. Empty when all are valid."""
    missing = [c for c, *_ in FIELDS if c not in reports.columns]
    if missing:
        raise TransactionReportError(f"transaction reports: missing column{'s' if len(missing) > 1 else ''} "
                                     f"{', '.join(missing)}")
    out: list[dict] = []
    seen: dict[str, int] = {}
    for i, r in enumerate(reports.iter_rows(named=True)):
        ref = r["transaction_reference"]
        found = [(c, _missing_reason(c, r)) for c in _REQUIRED if r[c] is None or r[c] == ""]
        if ref in seen:
            found.append(("transaction_reference", f"the same reference as report {seen[ref] + 1}: each must be "
                                                   "unique"))
        seen.setdefault(ref, i)
        for check in (_identity_problems, _trade_problems, _people_problems):
            found.extend(check(r))
        for column, problem in found:
            value = r.get(column)
            out.append({"transaction_reference": ref, "exec_id": r.get("exec_id"),
                        "field": f"{FIELD_NUMBER[column]} {column}", "value": None if value is None else str(value),
                        "problem": problem})
    return pl.DataFrame(out, schema=PROBLEM_SCHEMA)


def _identity_problems(r: Mapping):
    """Fields 1-16: the status, the reference, the LEIs, who is on which side."""
    ref = r["transaction_reference"]
    if ref and not _TX_REF.fullmatch(ref):
        yield "transaction_reference", f"{ref!r} is not 1-52 capitals or digits"
    if r["report_status"] and r["report_status"] not in ("NEWT", "CANC"):
        yield "report_status", f"{r['report_status']!r} is not NEWT or CANC"
    for column in ("executing_entity", "submitting_entity", "buyer_id", "seller_id"):
        if r[column] and (why := lei_problem(r[column])) is not None:
            yield column, why
    if r["buyer_id"] and r["buyer_id"] == r["seller_id"]:
        yield "seller_id", "the buyer and the seller are the same"
    if (r["executing_entity"] and r["buyer_id"] and r["seller_id"] and r["trading_capacity"] == "DEAL"
            and r["executing_entity"] not in (r["buyer_id"], r["seller_id"])):
        yield "buyer_id", "dealing on own account, the executing entity must be the buyer or the seller"


def _decimal_problem(column: str, value: float) -> str | None:
    """Whether a quantity or price is a finite number > 0 that fits RTS 22's DECIMAL-18/n (:data:`DECIMALS`)."""
    if not (math.isfinite(value) and value > 0):
        return f"{value!r} is not a finite number > 0"
    whole, _, fraction = _number(value).partition(".")
    places = DECIMALS[column]
    if len(fraction) > places or len(whole) + len(fraction) > 18:
        return (f"{_number(value)} does not fit RTS 22's DECIMAL-18/{places} (at most 18 digits, {places} after "
                "the point)")
    return None


def _trade_problems(r: Mapping):
    """Fields 3 and 28-41: time, capacity, quantity, price, currency, venue, instrument; 62 short selling."""
    if r["trading_date_time"] and (why := utc_problem(r["trading_date_time"])) is not None:
        yield "trading_date_time", why
    if r["trading_capacity"] and r["trading_capacity"] not in TRADING_CAPACITIES:
        yield "trading_capacity", f"{r['trading_capacity']!r} is not one of {', '.join(TRADING_CAPACITIES)}"
    for column in ("quantity", "price"):
        value = r[column]
        if value is not None and (why := _decimal_problem(column, value)) is not None:
            yield column, why
    if r["price_currency"] and (why := currency_problem(r["price_currency"])) is not None:
        yield "price_currency", why
    venue = r["venue"]
    if venue and not _MIC.fullmatch(venue):
        yield "venue", f"{venue!r} is not a MIC (4 capitals or digits, ISO 10383)"
    if r["venue_transaction_id"] and venue in OFF_VENUE:
        yield "venue_transaction_id", f"populated for a transaction off a trading venue ({venue})"
    elif r["venue_transaction_id"] and len(r["venue_transaction_id"]) > 52:
        yield "venue_transaction_id", "longer than 52 characters"
    if r["instrument_id"] and (why := isin_problem(r["instrument_id"])) is not None:
        yield "instrument_id", why
    sells = r["seller_id"] is not None and r["seller_id"] == r["executing_entity"]
    if sells and r["short_selling"] not in SHORT_SELLING:
        yield "short_selling", f"a sale by the firm needs one of {', '.join(SHORT_SELLING)}"
    if not sells and r["short_selling"] is not None:
        yield "short_selling", "populated although the firm is not the seller"


def _people_problems(r: Mapping):
    """Fields 57-60: an algorithm's code (no country), or a person's CONCAT code and supervising country."""
    for who, country in (("investment_decision", "investment_decision_country"), ("execution", "execution_country")):
        kind, code = r[f"{who}_type"], r[f"{who}_id"]
        if kind and kind not in ("ALGO", "PERSON"):
            yield f"{who}_type", f"{kind!r} is not ALGO or PERSON"
        elif kind == "ALGO":
            if code and not _ALGO.fullmatch(code):
                yield f"{who}_id", f"algorithm code {code!r} is not 1-50 capitals or digits"
            if r[country]:
                yield country, "populated for an algorithm (only a natural person has a supervising branch)"
        elif kind == "PERSON":
            if code and (why := person_problem(code)) is not None:
                yield f"{who}_id", why
            if (why := country_problem(r[country])) is not None:
                yield country, why


_MISSING = {
    "instrument_id": "no instrument in instruments.csv for symbol {symbol!r} on the trade date",
    "investment_decision_type": "firm.yaml's investment_decision names no decision maker for strategy {strategy!r}",
    "execution_type": "firm.yaml's execution names no executor for strategy {strategy!r}",
    "venue": "firm.yaml's venues has no venue for the order's session kind",
    "trading_date_time": "the execution report has no TransactTime",
}
_MISSING |= {"price_currency": _MISSING["instrument_id"], "investment_decision_id": _MISSING[
    "investment_decision_type"], "execution_id": _MISSING["execution_type"], "buyer_id": _MISSING["venue"],
    "seller_id": _MISSING["venue"]}


def _missing_reason(column: str, r: Mapping) -> str:
    if column in ("venue", "buyer_id", "seller_id") and r.get("strategy") is None:
        return f"empty: the outbox holds no order {r.get('clordid')!r} (its session kind names the venue)"
    reason = _MISSING.get(column)
    return "empty" if reason is None else "empty: " + reason.format(symbol=r.get("symbol"),
                                                                    strategy=r.get("strategy"))


def utc_problem(value: str) -> str | None:
    """Why ``value`` is not a field-28 time (``YYYY-MM-DDTHH:MM:SS.ffffffZ``: UTC, microseconds), or None."""
    if _UTC_TEXT.fullmatch(value):
        try:
            datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")
        except ValueError:
            return f"{value!r} is not a calendar date and time"
        return None
    offset = re.search(r"([+-]\d{2}:?\d{2})$", value)
    if offset:
        return f"{value!r} carries the UTC offset {offset.group(1)}: it must be UTC, written with a Z"
    if not value.endswith("Z"):
        return f"{value!r} has no time zone: it must be UTC, written with a Z"
    if not re.search(r"\.\d{6}Z$", value):
        return f"{value!r} does not have microseconds (6 fractional digits)"
    return f"{value!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ"


def validate(reports: pl.DataFrame) -> None:
    """Raise :class:`TransactionReportError` naming every invalid report and field (the first 20 problems)."""
    found = problems(reports)
    if found.height:
        lines = [f"{p['transaction_reference']} field {p['field']}: {p['problem']}"
                 for p in found.head(20).iter_rows(named=True)]
        more = f" (and {found.height - 20} more)" if found.height > 20 else ""
        raise TransactionReportError(f"{found.height} problem{'s' if found.height > 1 else ''} in "
                                     f"{reports.height} transaction report{'s' if reports.height != 1 else ''}"
                                     f"{more}: " + "; ".join(lines))


# ------------------------------------------------------------------------------------------------- exports


def _number(value: float) -> str:
    """A quantity or price as plain decimal text (no exponent, no trailing zeros): 100, 101.25."""
    text = format(Decimal(repr(float(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _number(value)
    return str(value)


def to_csv(reports: pl.DataFrame, path: str | Path | None = None) -> str:
    """The reports as CSV, one row each, the RTS 22 field names as the header (``Transaction reference
    number``, ...); numbers as plain decimals, booleans true/false, empty for no value. Written to ``path`` if
    given; returns the text."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([name for _, _, name, _ in FIELDS])
    for r in reports.select([c for c, *_ in FIELDS]).iter_rows():
        writer.writerow([_cell(v) for v in r])
    text = buf.getvalue()
    if path is not None:
        Path(path).write_text(text)
    return text


def from_csv(source: str | Path) -> pl.DataFrame:
    """Reports read back from :func:`to_csv`'s text or file (the RTS 22 columns of :data:`REPORT_SCHEMA`)."""
    text = Path(source).read_text() if isinstance(source, Path) else source
    rows = list(csv.reader(io.StringIO(text)))
    names = [name for _, _, name, _ in FIELDS]
    if not rows or rows[0] != names:
        raise TransactionReportError(f"transaction report CSV: the header is not the RTS 22 field names "
                                     f"({', '.join(names[:3])}, ...)")
    out = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(FIELDS):
            raise TransactionReportError(f"transaction report CSV line {line}: {len(row)} cells, not {len(FIELDS)}")
        rec = {}
        for (column, _, _, dtype), cell in zip(FIELDS, row, strict=True):
            if cell == "":
                rec[column] = None
            elif dtype == pl.Boolean():
                rec[column] = cell == "true"
            elif dtype == pl.Float64():
                rec[column] = float(cell)
            else:
                rec[column] = cell
        out.append(rec)
    return pl.DataFrame(out, schema={c: t for c, _, _, t in FIELDS})


def to_xml(reports: pl.DataFrame, path: str | Path | None = None) -> bytes:
    """The reports as one ISO 20022 auth.016.001.01 document (``FinInstrmRptgTxRpt``, a ``Tx/New`` per report),
    UTF-8 with an XML declaration. Written to ``path`` if given; returns the bytes. Fields left empty are left
    out (the schema's optional elements)."""
    ET.register_namespace("", AUTH016_NS)

    def el(parent, tag: str, text=None, **attrs):
        node = ET.SubElement(parent, f"{{{AUTH016_NS}}}{tag}", attrs)
        if text is not None:
            node.text = _cell(text)
        return node

    doc = ET.Element(f"{{{AUTH016_NS}}}Document")
    root = el(doc, "FinInstrmRptgTxRpt")
    for r in reports.iter_rows(named=True):
        new = el(el(root, "Tx"), "New")
        el(new, "TxId", r["transaction_reference"])
        el(new, "ExctgPty", r["executing_entity"])
        el(new, "InvstmtPtyInd", r["investment_firm"])
        el(new, "SubmitgPty", r["submitting_entity"])
        for tag, column in (("Buyr", "buyer_id"), ("Sellr", "seller_id")):
            if r[column]:
                el(el(el(el(new, tag), "AcctOwnr"), "Id"), "LEI", r[column])
        el(el(new, "OrdrTrnsmssn"), "TrnsmssnInd", r["transmission_of_order"])
        tx = el(new, "Tx")
        el(tx, "TradDt", r["trading_date_time"])
        el(tx, "TradgCpcty", r["trading_capacity"])
        el(el(tx, "Qty"), "Unit", r["quantity"])
        amount = el(el(el(el(tx, "Pric"), "Pric"), "MntryVal"), "Amt", r["price"], Ccy=r["price_currency"] or "")
        if not r["price_currency"]:
            del amount.attrib["Ccy"]
        el(tx, "TradVn", r["venue"])
        if r["venue_transaction_id"]:
            el(tx, "TradPlcMtchgId", r["venue_transaction_id"])
        el(el(new, "FinInstrm"), "Id", r["instrument_id"])
        for tag, who, country in (("InvstmtDcsnPrsn", "investment_decision", "investment_decision_country"),
                                  ("ExctgPrsn", "execution", "execution_country")):
            holder = el(new, tag)
            if r[f"{who}_type"] == "PERSON":
                person = el(holder, "Prsn")
                el(person, "CtryOfBrnch", r[country])
                other = el(person, "Othr")
                el(other, "Id", r[f"{who}_id"])
                el(el(other, "SchmeNm"), "Cd", "CONCAT")
            else:
                el(holder, "Algo", r[f"{who}_id"])
        extra = el(new, "AddtlAttrbts")
        if r["short_selling"]:
            el(extra, "ShrtSellgInd", r["short_selling"])
        el(extra, "SctiesFincgTxInd", r["securities_financing"])
    _prune(doc)  # an element whose field is empty is left out, and a parent left with nothing in it
    data = ET.tostring(doc, encoding="UTF-8", xml_declaration=True)
    if path is not None:
        Path(path).write_bytes(data)
    return data


def _prune(node: ET.Element) -> None:
    for child in list(node):
        _prune(child)
        if child.text is None and len(child) == 0 and not child.attrib:
            node.remove(child)


# ------------------------------------------------------------------------------------------------- summary


def summary_markdown(reports: pl.DataFrame, found: pl.DataFrame | None = None, *, first: int = 5) -> str:
    """Markdown for a materialisation: counts (reports, buys, sells, instruments), the validation problems (the
    first 20) and the first ``first`` reports' main fields."""
    found = problems(reports) if found is None else found
    buys = reports.filter(pl.col("buyer_id") == pl.col("executing_entity")).height if reports.height else 0
    lines = [f"**{reports.height}** transaction report{'s' if reports.height != 1 else ''} "
             f"({buys} buy, {reports.height - buys} sell) in "
             f"{reports['instrument_id'].drop_nulls().n_unique() if reports.height else 0} instrument(s); "
             + (f"**{found.height} validation problem{'s' if found.height != 1 else ''}**" if found.height
                else "all valid"), ""]
    if found.height:
        lines += ["| transaction | field | problem |", "|---|---|---|"]
        lines += [f"| {p['transaction_reference']} | {p['field']} | {_md(p['problem'])} |"
                  for p in found.head(20).iter_rows(named=True)]
        lines.append("")
    if reports.height:
        cols = ("transaction_reference", "trading_date_time", "instrument_id", "buyer_id", "seller_id", "quantity",
                "price", "price_currency", "venue", "investment_decision_id", "execution_id")
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_md(_cell(v)) for v in r) + " |"
                  for r in reports.select(cols).head(first).iter_rows()]
    return "\n".join(lines)


def _md(text: str | None) -> str:
    return "" if text is None else str(text).replace("|", "\\|").replace("\n", " ")
