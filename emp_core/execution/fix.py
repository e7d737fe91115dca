"""FIX 4.4 plumbing shared by the executor (initiator) and the paper venue (acceptor), on quickfix 1.16.

Everything here speaks standard FIX 4.4 and validates against the FIX44 data dictionary shipped with
quickfix (``<venv>/share/quickfix/FIX44.xml``), so the executor can face any FIX 4.4 counterparty.

Settings files
--------------
``write_settings`` writes a standard QuickFIX settings file ([DEFAULT] plus one [SESSION] per
SenderCompID/TargetCompID pair); ``read_settings`` validates one written by hand (``emp executor --settings
FILE``) and names the missing or bad key and its section. The choices written, and why:

- ``NonStopSession=Y``: the session never ends, so quickfix never resets sequence numbers and never clears
  its store at a day boundary. Crash recovery rests on that store (a restarted executor resends what the
  venue has not seen; the venue resends reports the executor missed), and a midnight reset would throw it
  away. quickfix refuses StartTime/EndTime together with NonStopSession, so they are not written (for a
  counterparty that insists on a daily session, write ``StartTime=00:00:00`` / ``EndTime=00:00:00`` in
  place of ``NonStopSession``: ``read_settings`` accepts either).
- ``ResetOnLogon=N``, ``ResetOnLogout=N``, ``ResetOnDisconnect=N``, ``PersistMessages=Y``: sequence numbers
  and sent messages survive logouts, disconnects and restarts; a gap is closed by ResendRequest (messages
  re-sent with PossDupFlag=Y, admin messages gap-filled). Resetting is an operator action: delete the store.
- ``UseDataDictionary=Y`` with ``DataDictionary`` = FIX44.xml: every incoming message is validated;
  quickfix answers a malformed one with a session-level Reject (35=3) or a BusinessMessageReject (35=j).
- ``HeartBtInt`` (initiator: sent in its Logon; the acceptor adopts the initiator's value),
  ``ReconnectInterval`` (initiator), ``SocketNodelay=Y`` (latency), ``LogonTimeout``/``LogoutTimeout``.
- Loopback only: the initiator connects to ``host`` (127.0.0.1 by default). quickfix 1.16's acceptor has no
  bind-address setting and listens on all interfaces, so for a loopback acceptor ``AllowedRemoteAddresses``
  is set to the host, and quickfix drops a connection from any other peer address on accept.
- ``EmpSessionKind=paper|live`` (our key; quickfix ignores it): the executor sends only the outbox orders
  approved for its session's kind. A file that does not say is live, so a paper-only strategy's orders can
  never reach a counterparty nobody marked.
- ``FileStorePath`` (sequence numbers and sent messages), ``FileLogPath`` only when a log directory is
  given (the message log holds every field of every message, Logon passwords included: keep it private).
- ``Username`` / ``Password`` (our keys, per [SESSION]; written for the pairs given in ``credentials``). On an
  initiator they are sent in its Logon as Username (553) and Password (554). On an acceptor they are what the
  counterparty's Logon must carry: a Logon without them, or with others, is refused (``FixApplication``, below).
  ``SessionConfig.public()`` masks the password; never log ``values`` directly.

Messages
--------
Small frozen dataclasses with ``to_message()`` (a ``quickfix.Message`` ready for ``send``) and
``from_message(message)``: ``NewOrder`` (35=D), ``CancelRequest`` (35=F), ``ExecReport`` (35=8) and
``CancelReject`` (35=9). Codes are kept as the FIX strings (``Side.BUY == "1"``), so a parsed message
carries whatever the counterparty sent and the receiver decides what it supports. ``parse`` dispatches on
MsgType; ``validate(raw)`` checks a raw message string against FIX44.xml.

Sessions
--------
``FixSession`` starts a quickfix ThreadedSocketInitiator or ThreadedSocketAcceptor from a settings file
with a FileStore (and a FileLog when ``FileLogPath`` is set) and stops it reliably. ``FixApplication`` is
the base class for the application callbacks: quickfix calls them on its own threads, and an ordinary
Python exception escaping one hangs that session's thread in quickfix 1.16 (the process then cannot stop),
so the base class catches, logs and records them; quickfix's own exceptions (``RejectLogon``, ``DoNotSend``,
``UnsupportedMessageType``, ``IncorrectTagValue``...) pass through, and quickfix turns them into the
standard responses.

Credentials: ``FixSession`` hands its settings to a ``FixApplication``. On an initiator session with
``Username``/``Password`` keys the application adds them to every Logon it sends (in ``toAdmin``, before the
subclass hook). On an acceptor session with those keys it checks the counterparty's Logon (in ``fromAdmin``,
before the hook; compared in constant time) and refuses a mismatch with ``quickfix.RejectLogon("bad credentials
for <SenderCompID>")``: quickfix answers with a Logout whose Text is "Rejected Logon Attempt: bad credentials
for ..." and disconnects. The reason never says which of the two was wrong, and never echoes either.
"""

from __future__ import annotations

import functools
import hmac
import logging
import math
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import quickfix as qf
import quickfix44 as qf44

from emp_core.errors import EmpError

log = logging.getLogger("emp.execution.fix")

BEGIN_STRING = "FIX.4.4"

# Tags used here (standard FIX 4.4 numbers).
ACCOUNT, AVG_PX, CL_ORD_ID, CUM_QTY, EXEC_ID, LAST_PX, LAST_QTY = 1, 6, 11, 14, 17, 31, 32
MSG_TYPE, ORDER_ID, ORDER_QTY, ORD_STATUS, ORD_TYPE, ORIG_CL_ORD_ID = 35, 37, 38, 39, 40, 41
POSS_DUP_FLAG, PRICE, SIDE, SYMBOL, TEXT, TIME_IN_FORCE, TRANSACT_TIME = 43, 44, 54, 55, 58, 59, 60
POSS_RESEND, CXL_REJ_REASON, ORD_REJ_REASON, ORIG_SENDING_TIME = 97, 102, 103, 122
EXEC_TYPE, LEAVES_QTY, CXL_REJ_RESPONSE_TO = 150, 151, 434
USERNAME, PASSWORD = 553, 554
LOGON = "A"


class FixError(EmpError):
    """A FIX settings file, message or session cannot be used as given."""


class FixSettingsError(FixError):
    """A settings file is missing a key or has a bad value; the message names the file, section and key."""


class FixMessageError(FixError):
    """A message lacks a field or carries a value that cannot be read; ``tag`` names the field."""

    def __init__(self, problem: str, tag: int | None = None) -> None:
        self.tag = tag
        super().__init__(problem)


class Side(StrEnum):
    BUY = "1"
    SELL = "2"


class OrdType(StrEnum):
    MARKET = "1"
    LIMIT = "2"


class TimeInForce(StrEnum):
    DAY = "0"


class ExecType(StrEnum):
    NEW = "0"
    CANCELED = "4"
    REJECTED = "8"
    TRADE = "F"  # FIX 4.4: partial and full fills are both Trade; OrdStatus tells them apart


class OrdStatus(StrEnum):
    NEW = "0"
    PARTIALLY_FILLED = "1"
    FILLED = "2"
    CANCELED = "4"
    REJECTED = "8"


TERMINAL_STATUSES = frozenset({OrdStatus.FILLED, OrdStatus.CANCELED, OrdStatus.REJECTED})


class OrdRejReason:
    """OrdRejReason (103) values used by the paper venue (FIX 4.4 enumeration)."""

    EXCHANGE_OPTION = 0  # "broker / exchange option": used for a price outside the collar
    UNKNOWN_SYMBOL = 1
    DUPLICATE_ORDER = 6
    UNSUPPORTED_ORDER_CHARACTERISTIC = 11
    INCORRECT_QUANTITY = 13
    OTHER = 99


class CxlRejReason:
    """CxlRejReason (102) values (FIX 4.4 enumeration)."""

    TOO_LATE_TO_CANCEL = 0
    UNKNOWN_ORDER = 1
    DUPLICATE_CL_ORD_ID = 6
    OTHER = 99


# ---------------------------------------------------------------------------------------------- dictionary


def dictionary_path() -> Path:
    """FIX44.xml as installed by the quickfix package into this environment (``<prefix>/share/quickfix``)."""
    path = Path(sys.prefix) / "share" / "quickfix" / "FIX44.xml"
    if not path.is_file():
        raise FixError(f"{path}: the FIX 4.4 data dictionary is missing; it is installed with the quickfix "
                       "package (pip install quickfix==1.16.0 into this environment)")
    return path


@functools.cache
def data_dictionary() -> qf.DataDictionary:
    """The FIX44 data dictionary, loaded once per process."""
    return qf.DataDictionary(str(dictionary_path()))


def validate(raw: str) -> qf.Message:
    """Parse a complete raw FIX message (SOH-delimited, as on the wire) and validate it against FIX44.xml:
    body length, checksum, field types, enumerated values, required fields of the header, body and trailer.
    Returns the parsed message; raises ``FixMessageError`` naming the problem."""
    dd = data_dictionary()
    try:
        message = qf.Message(raw, dd, True)
        dd.validate(message)
    except qf.FIXException as exc:
        raise FixMessageError(f"invalid FIX 4.4 message ({type(exc).__name__}: {exc}): "
                              f"{raw.replace(chr(1), '|')}", getattr(exc, "field", None)) from exc
    return message


# ------------------------------------------------------------------------------------------------ settings

_SETTINGS_DEFAULTS = {
    "BeginString": BEGIN_STRING,
    "NonStopSession": "Y",
    "UseDataDictionary": "Y",
    "ResetOnLogon": "N",
    "ResetOnLogout": "N",
    "ResetOnDisconnect": "N",
    "PersistMessages": "Y",
    "SocketNodelay": "Y",
    "LogonTimeout": "10",
    "LogoutTimeout": "2",
}


def write_settings(path: Path | str, *, role: str, sessions: list[tuple[str, str]], port: int,
                   store_dir: Path | str, host: str = "127.0.0.1", log_dir: Path | str | None = None,
                   heartbeat: int = 30, reconnect_interval: int = 5,
                   dictionary: Path | str | None = None, session_kind: str = "paper",
                   credentials: dict[tuple[str, str], tuple[str, str]] | None = None) -> Path:
    """Write a QuickFIX settings file for ``role`` ("initiator" or "acceptor") with one [SESSION] per
    (SenderCompID, TargetCompID) pair, all on ``host``:``port``, marked ``session_kind`` ("paper", the
    default: this writer serves the paper venue, or "live"). ``credentials`` maps a pair to the (Username,
    Password) written in its [SESSION]: sent in the Logon by an initiator, required by an acceptor. See the
    module docstring for the choices."""
    if role not in ("initiator", "acceptor"):
        raise FixSettingsError(f"role {role!r}: must be 'initiator' or 'acceptor'")
    if session_kind not in SESSION_KINDS:
        raise FixSettingsError(f"session_kind {session_kind!r}: must be 'paper' or 'live'")
    if not sessions:
        raise FixSettingsError("sessions: at least one (SenderCompID, TargetCompID) pair is needed")
    if not 0 < int(port) < 65536:
        raise FixSettingsError(f"port {port}: must be between 1 and 65535")
    if int(heartbeat) <= 0:
        raise FixSettingsError(f"heartbeat {heartbeat}: must be a positive number of seconds")
    seen = set()
    for pair in sessions:
        if len(pair) != 2 or not all(isinstance(x, str) and x.strip() and x == x.strip() for x in pair):
            raise FixSettingsError(f"sessions: {pair!r} is not a (SenderCompID, TargetCompID) pair of names")
        if pair in seen:
            raise FixSettingsError(f"sessions: {pair!r} appears twice")
        seen.add(pair)
    _check_credentials_arg(credentials or {}, seen)
    path = Path(path)
    lines = ["# QuickFIX settings written by emp_core.execution.fix.write_settings", "[DEFAULT]",
             f"ConnectionType={role}"]
    lines += [f"{k}={v}" for k, v in _SETTINGS_DEFAULTS.items()]
    lines += [f"DataDictionary={Path(dictionary) if dictionary else dictionary_path()}",
              f"HeartBtInt={int(heartbeat)}",
              f"FileStorePath={Path(store_dir)}", f"{SESSION_KIND_KEY}={session_kind}"]
    if log_dir is not None:
        lines.append(f"FileLogPath={Path(log_dir)}")
    if role == "initiator":
        lines += [f"SocketConnectHost={host}", f"SocketConnectPort={int(port)}",
                  f"ReconnectInterval={int(reconnect_interval)}"]
    else:
        lines += [f"SocketAcceptPort={int(port)}", "SocketReuseAddress=Y", f"AllowedRemoteAddresses={host}"]
    logins = credentials or {}
    for sender, target in sessions:
        lines += ["", "[SESSION]", f"SenderCompID={sender}", f"TargetCompID={target}"]
        lines += [f"{k}={v}" for k, v in zip(("Username", "Password"), logins.get((sender, target), ()),
                                             strict=False)]
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, "\n".join(lines) + "\n", private=bool(logins))
    return path


def _write(path: Path, text: str, *, private: bool) -> None:
    """Write ``text``; a file holding a password (``private``) is readable by its owner only, from the start."""
    if private:
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
    path.write_text(text)


def _check_credentials_arg(credentials: dict[tuple[str, str], tuple[str, str]], sessions: set) -> None:
    for pair, login in credentials.items():
        if pair not in sessions:
            raise FixSettingsError(f"credentials: {pair!r} is not one of the sessions")
        if len(login) != 2 or not all(isinstance(x, str) and x and x == x.strip() and "\n" not in x
                                      for x in login):
            raise FixSettingsError(f"credentials for {pair!r}: expected (Username, Password), two non-empty "
                                   "strings without surrounding spaces")


_SECRET_WORDS = ("password", "secret", "token", "key")
SESSION_KIND_KEY = "EmpSessionKind"
SESSION_KINDS = ("paper", "live")


@dataclass(frozen=True)
class SessionConfig:
    """One [SESSION] of a settings file, with the [DEFAULT] keys merged in (keys as written in the file)."""

    section: int  # 1 for the first [SESSION]
    values: dict[str, str]

    def get(self, key: str, default: str | None = None) -> str | None:
        for k, v in self.values.items():
            if k.lower() == key.lower():
                return v
        return default

    @property
    def connection_type(self) -> str:
        return (self.get("ConnectionType") or "").lower()

    @property
    def sender(self) -> str:
        return self.get("SenderCompID") or ""

    @property
    def target(self) -> str:
        return self.get("TargetCompID") or ""

    @property
    def session_kind(self) -> str:
        """``paper`` or ``live``: the session's ``EmpSessionKind`` key. A session that does not say is live, so
        an order approved only for paper trading can never reach an unmarked counterparty."""
        return (self.get(SESSION_KIND_KEY) or "live").lower()

    @property
    def username(self) -> str | None:
        """``Username``: sent in the Logon (initiator), or required in the counterparty's Logon (acceptor)."""
        return self.get("Username") or None

    @property
    def password(self) -> str | None:
        """``Password``: like ``username``. Never log it (``public()`` masks it)."""
        return self.get("Password") or None

    @property
    def session_id(self) -> qf.SessionID:
        return qf.SessionID(self.get("BeginString") or BEGIN_STRING, self.sender, self.target)

    def public(self) -> dict[str, str]:
        """The values with anything that looks like a secret masked: safe to log."""
        return {k: ("***" if any(w in k.lower() for w in _SECRET_WORDS) else v) for k, v in self.values.items()}


@dataclass(frozen=True)
class FixSettings:
    path: Path
    sessions: tuple[SessionConfig, ...]

    @property
    def role(self) -> str:
        return self.sessions[0].connection_type

    def session(self, sender: str, target: str) -> SessionConfig:
        for s in self.sessions:
            if (s.sender, s.target) == (sender, target):
                return s
        raise FixSettingsError(f"{self.path}: no [SESSION] with SenderCompID={sender} TargetCompID={target}")


def _parse_settings_text(path: Path, text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    default: dict[str, str] = {}
    sessions: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            name = stripped[1:-1].strip().upper()
            if name == "DEFAULT":
                current = default
            elif name == "SESSION":
                current = {}
                sessions.append(current)
            else:
                raise FixSettingsError(f"{path}: line {number}: unknown section [{stripped[1:-1]}] "
                                       "(QuickFIX knows [DEFAULT] and [SESSION])")
            continue
        if "=" not in stripped:
            raise FixSettingsError(f"{path}: line {number}: expected key=value, got {stripped!r}")
        if current is None:
            raise FixSettingsError(f"{path}: line {number}: {stripped.split('=')[0].strip()} comes before any "
                                   "[DEFAULT] or [SESSION] section")
        key, value = (x.strip() for x in stripped.split("=", 1))
        current[key] = value
    return default, sessions


def _check_session(config: SessionConfig, where: str, role: str | None) -> None:
    def need(key: str) -> str:
        value = config.get(key)
        if value is None or value == "":
            raise FixSettingsError(f"{where}: required key {key} is missing (neither in this section nor in "
                                   "[DEFAULT])")
        return value

    def need_int(key: str, low: int, high: int) -> None:
        value = need(key)
        if not (value.isdigit() and low <= int(value) <= high):
            raise FixSettingsError(f"{where}: {key}={value} must be a whole number from {low} to {high}")

    if config.session_kind not in SESSION_KINDS:
        raise FixSettingsError(f"{where}: {SESSION_KIND_KEY}={config.get(SESSION_KIND_KEY)} must be paper or live "
                               "(an unmarked session is live)")
    kind = need("ConnectionType").lower()
    if kind not in ("initiator", "acceptor"):
        raise FixSettingsError(f"{where}: ConnectionType={config.get('ConnectionType')} must be initiator or "
                               "acceptor")
    if role is not None and kind != role:
        raise FixSettingsError(f"{where}: ConnectionType={kind}, but this program runs the {role} side")
    if need("BeginString") != BEGIN_STRING:
        raise FixSettingsError(f"{where}: BeginString={config.get('BeginString')}: only {BEGIN_STRING} is "
                               "supported")
    need("SenderCompID")
    need("TargetCompID")
    need("FileStorePath")
    if kind == "initiator":
        need("SocketConnectHost")
        need_int("SocketConnectPort", 1, 65535)
        need_int("HeartBtInt", 1, 3600)
    else:
        need_int("SocketAcceptPort", 1, 65535)
    if (config.get("NonStopSession") or "N").upper() != "Y":
        need("StartTime")
        need("EndTime")
    elif config.get("StartTime") or config.get("EndTime"):
        raise FixSettingsError(f"{where}: NonStopSession=Y cannot be combined with StartTime/EndTime (quickfix "
                               "refuses the pair); keep one of them")
    if (config.get("UseDataDictionary") or "Y").upper() != "N":
        dd = Path(need("DataDictionary"))
        if not dd.is_file():
            raise FixSettingsError(f"{where}: DataDictionary={dd}: file not found (FIX44.xml is at "
                                   f"{dictionary_path()})")


def read_settings(path: Path | str, *, role: str | None = None) -> FixSettings:
    """Read and validate a QuickFIX settings file for a FIX 4.4 session (``emp executor --settings FILE``).

    Each [SESSION], with [DEFAULT] merged in, must have: ConnectionType (initiator or acceptor, equal to
    ``role`` when given), BeginString=FIX.4.4, SenderCompID, TargetCompID, FileStorePath, HeartBtInt for an
    initiator, SocketConnectHost and SocketConnectPort (initiator) or SocketAcceptPort (acceptor), either
    NonStopSession=Y or StartTime and EndTime, and a DataDictionary file that exists unless
    UseDataDictionary=N. A problem raises ``FixSettingsError`` naming the file, the section and the key.
    quickfix then parses the file itself, so whatever else it refuses is reported the same way."""
    path = Path(path)
    if not path.is_file():
        raise FixSettingsError(f"{path}: settings file not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise FixSettingsError(f"{path}: cannot be read as a text settings file ({exc})") from exc
    default, raw_sessions = _parse_settings_text(path, text)
    if not raw_sessions:
        raise FixSettingsError(f"{path}: no [SESSION] section (one is needed per SenderCompID/TargetCompID)")
    configs = []
    seen: dict[tuple[str, str], int] = {}
    for index, raw in enumerate(raw_sessions, 1):
        merged = dict(default)
        lower = {k.lower(): k for k in merged}
        for k, v in raw.items():  # a [SESSION] key overrides the [DEFAULT] one whatever its case
            merged.pop(lower.get(k.lower(), k), None)
            merged[k] = v
        config = SessionConfig(index, merged)
        _check_session(config, f"{path}: [SESSION] {index}", role)
        pair = (config.sender, config.target)
        if pair in seen:
            raise FixSettingsError(f"{path}: [SESSION] {index}: SenderCompID={pair[0]} TargetCompID={pair[1]} "
                                   f"repeats [SESSION] {seen[pair]}")
        seen[pair] = index
        configs.append(config)
    kinds = {c.connection_type for c in configs}
    if len(kinds) > 1:
        raise FixSettingsError(f"{path}: mixes initiator and acceptor sessions; use one file per side")
    try:
        qf.SessionSettings(str(path))
    except qf.FIXException as exc:
        raise FixSettingsError(f"{path}: quickfix refuses the file: {exc}") from exc
    return FixSettings(path, tuple(configs))


# ------------------------------------------------------------------------------------------------ messages


def format_time(ts: datetime) -> str:
    """A FIX UTCTimestamp with milliseconds (YYYYMMDD-HH:MM:SS.sss)."""
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC)
    return ts.strftime("%Y%m%d-%H:%M:%S.") + f"{ts.microsecond // 1000:03d}"


def parse_time(value: str, tag: int = TRANSACT_TIME) -> datetime:
    """A FIX UTCTimestamp (seconds, or 3/6/9 fractional digits) as an aware UTC datetime."""
    try:
        whole, _, frac = value.partition(".")
        ts = datetime.strptime(whole, "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
        if frac:
            if not frac.isdigit():
                raise ValueError(frac)
            ts = ts.replace(microsecond=int((frac + "000000")[:6]))
        return ts
    except ValueError as exc:
        raise FixMessageError(f"tag {tag}: {value!r} is not a FIX UTCTimestamp", tag) from exc


def now() -> datetime:
    """The current UTC time truncated to milliseconds (what a FIX timestamp carries)."""
    ts = datetime.now(UTC)
    return ts.replace(microsecond=ts.microsecond // 1000 * 1000)


class _Fields(dict):
    """A received message's fields by tag, read from its wire string in one call: a quickfix field read is two
    calls through SWIG (isSetField, getField), and parsing an ExecutionReport that way took 75 us here, most of
    the executor's callback. Header and body share the one mapping (the tags read here do not repeat); it
    answers the FieldMap calls the readers use."""

    def isSetField(self, tag: int) -> bool:
        return tag in self

    def getField(self, tag: int) -> str:
        try:
            return self[tag]
        except KeyError:
            raise qf.FieldNotFound(tag) from None  # as quickfix's own read: quickfix rejects the message

    def getHeader(self) -> _Fields:
        return self


def field_view(message: qf.Message) -> qf.Message | _Fields:
    """``message``'s fields as a :class:`_Fields`, or ``message`` itself when its wire form cannot be split
    simply: a piece that is not tag=value, or any data field (it may hold the SOH delimiter and text that looks
    like fields): then quickfix's own reads are used. Either answers ``getField``/``isSetField``/``getHeader``, so
    a callback reads a message once and hands the view to ``msg_type``, ``header_flag`` and ``parse`` (each
    ``getHeader()`` on a quickfix message is a SWIG call making a new proxy object)."""
    if isinstance(message, _Fields):
        return message
    fields = _Fields()
    for pair in message.toString().split("\x01"):
        if not pair:
            continue
        tag, eq, value = pair.partition("=")
        if not eq or not tag.isdigit() or int(tag) in _DATA_TAGS:
            return message  # a data field (always after its length field) may hold SOH and fake "tag=" pieces
        fields.setdefault(int(tag), value)  # the first of a repeated tag, as a FieldMap read outside its group
    return fields


# FIX 4.4's data fields and their length fields (FIX44.xml types DATA and LENGTH, less BodyLength 9 and
# MaxMessageSize 383): a message with any of them is read by quickfix, which knows where the data ends.
_DATA_TAGS = frozenset((89, 90, 91, 93, 95, 96, 212, 213, 348, 349, 350, 351, 352, 353, 354, 355, 356, 357, 358,
                        359, 360, 361, 362, 363, 364, 365, 445, 446, 618, 619, 621, 622))


def get_field(message: qf.FieldMap, tag: int) -> str | None:
    """Tag ``tag`` of a message (or its :func:`field_view`), None when absent."""
    return message.getField(tag) if message.isSetField(tag) else None


def _need(message: qf.FieldMap, tag: int, what: str) -> str:
    value = get_field(message, tag)
    if value is None or value == "":
        raise FixMessageError(f"{what} ({tag}) is missing", tag)
    return value


def _float(message: qf.FieldMap, tag: int, what: str, default: float | None = None) -> float:
    value = get_field(message, tag)
    if value is None:
        if default is None:
            raise FixMessageError(f"{what} ({tag}) is missing", tag)
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise FixMessageError(f"{what} ({tag}) = {value!r} is not a number", tag) from exc


def _int(message: qf.FieldMap, tag: int, what: str) -> int | None:
    value = get_field(message, tag)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise FixMessageError(f"{what} ({tag}) = {value!r} is not a whole number", tag) from exc


def _set_str(message: qf.FieldMap, tag: int, value: str | None) -> None:
    if value is not None and value != "":
        message.setField(tag, str(value))


def format_float(value: float, tag: int | None = None) -> str:
    """A FIX float (Qty, Price, Amt) that parses back to exactly the same double: the shortest round-trip
    decimal, never in exponent notation, without a trailing ".0" (quickfix's own formatting keeps 15
    significant digits, so ``reports()`` and the wire could differ in the last bit)."""
    value = float(value)
    if not math.isfinite(value):
        raise FixMessageError(f"tag {tag}: {value} cannot be written as a FIX number", tag)
    text = format(Decimal(repr(value)), "f")  # repr is the shortest round-trip form; "f" drops the exponent
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _set_float(message: qf.FieldMap, tag: int, value: float | None) -> None:
    if value is not None:
        message.setField(tag, format_float(value, tag))


def _check_type(message: qf.Message, expected: str, name: str) -> None:
    msg_type = get_field(message.getHeader(), MSG_TYPE)
    if msg_type != expected:
        raise FixMessageError(f"expected a {name} (35={expected}), got 35={msg_type}", MSG_TYPE)


def header_flag(message: qf.Message, tag: int) -> bool:
    """A Y/N header flag (PossDupFlag 43, PossResend 97) as a bool; absent means N."""
    return get_field(message.getHeader(), tag) == "Y"


@dataclass(frozen=True)
class NewOrder:
    """NewOrderSingle (35=D). ``qty`` is a float so a receiver can see (and reject) a fractional quantity."""

    MSG_TYPE: ClassVar[str] = "D"
    cl_ord_id: str
    symbol: str
    side: str  # Side.BUY / Side.SELL
    qty: float
    ord_type: str  # OrdType.MARKET / OrdType.LIMIT
    price: float | None = None
    account: str | None = None
    time_in_force: str | None = TimeInForce.DAY
    transact_time: datetime | None = None  # now when sent, if None

    def to_message(self) -> qf.Message:
        m = qf44.NewOrderSingle()
        _set_str(m, ACCOUNT, self.account)
        _set_str(m, CL_ORD_ID, self.cl_ord_id)
        _set_float(m, ORDER_QTY, self.qty)
        _set_str(m, ORD_TYPE, self.ord_type)
        _set_float(m, PRICE, self.price)
        _set_str(m, SIDE, self.side)
        _set_str(m, SYMBOL, self.symbol)
        _set_str(m, TIME_IN_FORCE, self.time_in_force)
        _set_str(m, TRANSACT_TIME, format_time(self.transact_time or now()))
        return m

    @classmethod
    def from_message(cls, message: qf.Message) -> NewOrder:
        message = field_view(message)
        _check_type(message, cls.MSG_TYPE, "NewOrderSingle")
        transact = get_field(message, TRANSACT_TIME)
        return cls(
            cl_ord_id=_need(message, CL_ORD_ID, "ClOrdID"),
            symbol=_need(message, SYMBOL, "Symbol"),
            side=_need(message, SIDE, "Side"),
            qty=_float(message, ORDER_QTY, "OrderQty"),
            ord_type=_need(message, ORD_TYPE, "OrdType"),
            price=_float(message, PRICE, "Price") if message.isSetField(PRICE) else None,
            account=get_field(message, ACCOUNT),
            time_in_force=get_field(message, TIME_IN_FORCE),
            transact_time=parse_time(transact) if transact else None,
        )


@dataclass(frozen=True)
class CancelRequest:
    """OrderCancelRequest (35=F): cancel the order ``orig_cl_ord_id``; ``cl_ord_id`` names this request."""

    MSG_TYPE: ClassVar[str] = "F"
    orig_cl_ord_id: str
    cl_ord_id: str
    symbol: str
    side: str
    qty: float
    transact_time: datetime | None = None

    def to_message(self) -> qf.Message:
        m = qf44.OrderCancelRequest()
        _set_str(m, CL_ORD_ID, self.cl_ord_id)
        _set_float(m, ORDER_QTY, self.qty)
        _set_str(m, ORIG_CL_ORD_ID, self.orig_cl_ord_id)
        _set_str(m, SIDE, self.side)
        _set_str(m, SYMBOL, self.symbol)
        _set_str(m, TRANSACT_TIME, format_time(self.transact_time or now()))
        return m

    @classmethod
    def from_message(cls, message: qf.Message) -> CancelRequest:
        message = field_view(message)
        _check_type(message, cls.MSG_TYPE, "OrderCancelRequest")
        transact = get_field(message, TRANSACT_TIME)
        return cls(
            orig_cl_ord_id=_need(message, ORIG_CL_ORD_ID, "OrigClOrdID"),
            cl_ord_id=_need(message, CL_ORD_ID, "ClOrdID"),
            symbol=get_field(message, SYMBOL) or "",
            side=_need(message, SIDE, "Side"),
            qty=_float(message, ORDER_QTY, "OrderQty", default=0.0),
            transact_time=parse_time(transact) if transact else None,
        )


@dataclass(frozen=True)
class ExecReport:
    """ExecutionReport (35=8). ``last_qty``/``last_px`` are written on trades (ExecType F) only;
    ``orig_cl_ord_id`` on a cancel (then ``cl_ord_id`` is the cancel request's); ``ord_rej_reason`` on a
    reject. A report carrying OrdRejReason 6 (duplicate order) answers a duplicate message and says nothing
    about the state of the order that already holds that ClOrdID."""

    MSG_TYPE: ClassVar[str] = "8"
    order_id: str
    exec_id: str
    exec_type: str
    ord_status: str
    cl_ord_id: str
    symbol: str
    side: str
    order_qty: float
    leaves_qty: float
    cum_qty: float
    avg_px: float
    last_qty: float = 0.0
    last_px: float = 0.0
    orig_cl_ord_id: str | None = None
    ord_rej_reason: int | None = None
    text: str | None = None
    transact_time: datetime | None = None

    def to_message(self) -> qf.Message:
        m = qf44.ExecutionReport()
        _set_float(m, AVG_PX, self.avg_px)
        _set_str(m, CL_ORD_ID, self.cl_ord_id)
        _set_float(m, CUM_QTY, self.cum_qty)
        _set_str(m, EXEC_ID, self.exec_id)
        if self.exec_type == ExecType.TRADE or self.last_qty:
            _set_float(m, LAST_PX, self.last_px)
            _set_float(m, LAST_QTY, self.last_qty)
        _set_str(m, ORDER_ID, self.order_id)
        _set_float(m, ORDER_QTY, self.order_qty)
        _set_str(m, ORD_STATUS, self.ord_status)
        _set_str(m, ORIG_CL_ORD_ID, self.orig_cl_ord_id)
        _set_str(m, SIDE, self.side)
        _set_str(m, SYMBOL, self.symbol)
        _set_str(m, TEXT, self.text)
        _set_str(m, TRANSACT_TIME, format_time(self.transact_time or now()))
        if self.ord_rej_reason is not None:
            m.setField(qf.IntField(ORD_REJ_REASON, int(self.ord_rej_reason)))
        _set_str(m, EXEC_TYPE, self.exec_type)
        _set_float(m, LEAVES_QTY, self.leaves_qty)
        return m

    @classmethod
    def from_message(cls, message: qf.Message) -> ExecReport:
        message = field_view(message)
        _check_type(message, cls.MSG_TYPE, "ExecutionReport")
        transact = get_field(message, TRANSACT_TIME)
        return cls(
            order_id=_need(message, ORDER_ID, "OrderID"),
            exec_id=_need(message, EXEC_ID, "ExecID"),
            exec_type=_need(message, EXEC_TYPE, "ExecType"),
            ord_status=_need(message, ORD_STATUS, "OrdStatus"),
            cl_ord_id=get_field(message, CL_ORD_ID) or "",
            symbol=get_field(message, SYMBOL) or "",
            side=_need(message, SIDE, "Side"),
            order_qty=_float(message, ORDER_QTY, "OrderQty", default=0.0),
            leaves_qty=_float(message, LEAVES_QTY, "LeavesQty"),
            cum_qty=_float(message, CUM_QTY, "CumQty"),
            avg_px=_float(message, AVG_PX, "AvgPx"),
            last_qty=_float(message, LAST_QTY, "LastQty", default=0.0),
            last_px=_float(message, LAST_PX, "LastPx", default=0.0),
            orig_cl_ord_id=get_field(message, ORIG_CL_ORD_ID),
            ord_rej_reason=_int(message, ORD_REJ_REASON, "OrdRejReason"),
            text=get_field(message, TEXT),
            transact_time=parse_time(transact) if transact else None,
        )

    @property
    def is_terminal(self) -> bool:
        return self.ord_status in TERMINAL_STATUSES


@dataclass(frozen=True)
class CancelReject:
    """OrderCancelReject (35=9): the cancel request ``cl_ord_id`` for order ``orig_cl_ord_id`` failed."""

    MSG_TYPE: ClassVar[str] = "9"
    order_id: str
    cl_ord_id: str
    orig_cl_ord_id: str
    ord_status: str
    cxl_rej_reason: int | None = None
    cxl_rej_response_to: str = "1"  # 1 = OrderCancelRequest
    text: str | None = None

    def to_message(self) -> qf.Message:
        m = qf44.OrderCancelReject()
        _set_str(m, CL_ORD_ID, self.cl_ord_id)
        _set_str(m, ORDER_ID, self.order_id)
        _set_str(m, ORD_STATUS, self.ord_status)
        _set_str(m, ORIG_CL_ORD_ID, self.orig_cl_ord_id)
        _set_str(m, TEXT, self.text)
        if self.cxl_rej_reason is not None:
            m.setField(qf.IntField(CXL_REJ_REASON, int(self.cxl_rej_reason)))
        _set_str(m, CXL_REJ_RESPONSE_TO, self.cxl_rej_response_to)
        return m

    @classmethod
    def from_message(cls, message: qf.Message) -> CancelReject:
        message = field_view(message)
        _check_type(message, cls.MSG_TYPE, "OrderCancelReject")
        return cls(
            order_id=_need(message, ORDER_ID, "OrderID"),
            cl_ord_id=_need(message, CL_ORD_ID, "ClOrdID"),
            orig_cl_ord_id=_need(message, ORIG_CL_ORD_ID, "OrigClOrdID"),
            ord_status=_need(message, ORD_STATUS, "OrdStatus"),
            cxl_rej_reason=_int(message, CXL_REJ_REASON, "CxlRejReason"),
            cxl_rej_response_to=_need(message, CXL_REJ_RESPONSE_TO, "CxlRejResponseTo"),
            text=get_field(message, TEXT),
        )


AppMessage = NewOrder | CancelRequest | ExecReport | CancelReject
_BY_TYPE: dict[str, Any] = {c.MSG_TYPE: c for c in (NewOrder, CancelRequest, ExecReport, CancelReject)}


def msg_type(message: qf.Message) -> str:
    return get_field(message.getHeader(), MSG_TYPE) or ""


def parse(message: qf.Message | str) -> AppMessage:
    """The dataclass for a NewOrderSingle, OrderCancelRequest, ExecutionReport or OrderCancelReject
    (a raw string is validated against FIX44.xml first)."""
    if isinstance(message, str):
        message = validate(message)
    cls = _BY_TYPE.get(msg_type(message))
    if cls is None:
        raise FixMessageError(f"MsgType 35={msg_type(message)} is not one of {sorted(_BY_TYPE)}", MSG_TYPE)
    return cls.from_message(message)


# ------------------------------------------------------------------------------------------------ sessions


class FixApplication(qf.Application):
    """Base for quickfix application callbacks. Override the snake_case hooks (``from_app`` and so on);
    the camelCase methods quickfix calls wrap them so that an ordinary exception is logged and kept in
    ``errors`` instead of escaping into quickfix (which hangs the session thread in 1.16). quickfix's own
    exceptions propagate on purpose: raise ``quickfix.RejectLogon`` in ``from_admin`` to refuse a Logon,
    ``quickfix.DoNotSend`` in ``to_app`` to drop an outgoing message, ``quickfix.UnsupportedMessageType``
    in ``from_app`` to answer with a BusinessMessageReject.

    Note: ``quickfix.Session.send`` strips PossDupFlag (43) and OrigSendingTime (122) from an application
    message; to flag an application-level resend, set them in ``to_app`` (the message is sent as modified
    there) or use PossResend (97)."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []
        self._send_login: dict[str, tuple[str | None, str | None]] = {}  # session -> (user, password) to send
        self._want_login: dict[str, tuple[str | None, str | None]] = {}  # session -> what its Logon must carry

    def bind(self, settings: FixSettings) -> None:
        """Take the credentials of ``settings``' sessions (``FixSession`` calls this; module docstring)."""
        for c in settings.sessions:
            if c.username is None and c.password is None:
                continue
            table = self._send_login if c.connection_type == "initiator" else self._want_login
            table[str(c.session_id)] = (c.username, c.password)

    def _add_credentials(self, message: qf.Message, session_id: qf.SessionID) -> None:
        login = self._send_login.get(str(session_id))
        if login is None or msg_type(message) != LOGON:
            return
        for tag, value in zip((USERNAME, PASSWORD), login, strict=True):
            if value is not None:
                message.setField(tag, value)

    def _check_credentials(self, message: qf.Message, session_id: qf.SessionID) -> None:
        want = self._want_login.get(str(session_id))
        if want is None or msg_type(message) != LOGON:
            return
        sender = get_field(message.getHeader(), 49) or session_id.getTargetCompID().getValue()
        ok = True
        for tag, expected in zip((USERNAME, PASSWORD), want, strict=True):
            if expected is not None:
                got = get_field(message, tag) or ""
                ok &= hmac.compare_digest(got.encode(), expected.encode())
        if not ok:
            log.warning("logon on %s refused: bad credentials for %s", session_id, sender)
            raise qf.RejectLogon(f"bad credentials for {sender}")

    # hooks -------------------------------------------------------------------------------------------
    def on_create(self, session_id: qf.SessionID) -> None: ...
    def on_logon(self, session_id: qf.SessionID) -> None: ...
    def on_logout(self, session_id: qf.SessionID) -> None: ...
    def to_admin(self, message: qf.Message, session_id: qf.SessionID) -> None: ...
    def from_admin(self, message: qf.Message, session_id: qf.SessionID) -> None: ...
    def to_app(self, message: qf.Message, session_id: qf.SessionID) -> None: ...
    def from_app(self, message: qf.Message, session_id: qf.SessionID) -> None: ...

    # quickfix callbacks ------------------------------------------------------------------------------
    def onCreate(self, sessionID):
        self._guard("onCreate", self.on_create, sessionID)

    def onLogon(self, sessionID):
        self._guard("onLogon", self.on_logon, sessionID)

    def onLogout(self, sessionID):
        self._guard("onLogout", self.on_logout, sessionID)

    def toAdmin(self, message, sessionID):
        self._guard("toAdmin", self._add_credentials, message, sessionID)
        self._guard("toAdmin", self.to_admin, message, sessionID)

    def fromAdmin(self, message, sessionID):
        self._guard("fromAdmin", self._check_credentials, message, sessionID)  # RejectLogon passes through
        self._guard("fromAdmin", self.from_admin, message, sessionID)

    def toApp(self, message, sessionID):
        self._guard("toApp", self.to_app, message, sessionID)

    def fromApp(self, message, sessionID):
        self._guard("fromApp", self.from_app, message, sessionID)

    def _guard(self, name: str, hook, *args) -> None:
        try:
            hook(*args)
        except qf.FIXException:
            raise
        except Exception as exc:  # an escaping exception would hang quickfix's thread
            log.exception("FIX callback %s failed on %s", name, args[-1])
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")


class FixSession:
    """A quickfix ThreadedSocketInitiator or ThreadedSocketAcceptor run from a settings file, as a context
    manager (``with FixSession(path, app) as s: ...``) or with ``start()`` / ``stop()``.

    The threaded socket classes are used because quickfix 1.16's plain ``SocketAcceptor.stop()`` crashed
    (SIGSEGV in ``SocketServer::close``) in about half of the runs here; the threaded ones did not in 40.
    ``stop()`` first logs the sessions out and waits (up to ``logout_timeout``) for the counterparties'
    Logout, then stops quickfix without its own fixed multi-second wait. The quickfix objects are released
    after stopping, which frees the session IDs for a later ``FixSession`` in the same process."""

    def __init__(self, settings: Path | str, application: qf.Application, *, role: str | None = None) -> None:
        self.settings = read_settings(settings, role=role)
        self.application = application
        if isinstance(application, FixApplication):
            application.bind(self.settings)
        self._engine = None
        self._lock = threading.Lock()

    @property
    def role(self) -> str:
        return self.settings.role

    @property
    def session_ids(self) -> list[qf.SessionID]:
        return [c.session_id for c in self.settings.sessions]

    def start(self, before=None) -> FixSession:
        """Create the quickfix engine and start it; ``before()`` runs in between (the sessions exist, with their
        stores open, and nothing is connected yet)."""
        with self._lock:
            if self._engine is not None:
                return self
            path = str(self.settings.path)
            qf_settings = qf.SessionSettings(path)
            store = qf.FileStoreFactory(qf_settings)
            has_log = all(c.get("FileLogPath") for c in self.settings.sessions)
            cls = qf.ThreadedSocketInitiator if self.role == "initiator" else qf.ThreadedSocketAcceptor
            try:
                if has_log:
                    engine = cls(self.application, store, qf_settings, qf.FileLogFactory(qf_settings))
                else:
                    engine = cls(self.application, store, qf_settings)
                self._engine = engine
                if before is not None:
                    before()
                engine.start()
            except qf.FIXException as exc:
                self._engine = None
                raise FixError(f"{path}: quickfix cannot start the {self.role}: {exc}") from exc
            except BaseException:
                self._engine = None
                raise
        return self

    def stop(self, logout_timeout: float = 5.0) -> None:
        with self._lock:
            engine, self._engine = self._engine, None
            if engine is None:
                return
            try:
                sessions = [qf.Session.lookupSession(sid) for sid in self.session_ids]
                for s in sessions:
                    if s is not None and s.isLoggedOn():
                        s.logout("session stopped")
                deadline = time.monotonic() + logout_timeout
                while time.monotonic() < deadline and any(s is not None and s.isLoggedOn() for s in sessions):
                    time.sleep(0.01)
            finally:
                engine.stop(True)
                del engine

    def __enter__(self) -> FixSession:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._engine is not None

    def session(self, session_id: qf.SessionID | None = None) -> qf.Session:
        """quickfix's Session object (sequence numbers, logon state); the first session by default."""
        sid = session_id or self.session_ids[0]
        s = qf.Session.lookupSession(sid)
        if s is None:
            raise FixError(f"session {sid} is not running")
        return s

    def logged_on(self, session_id: qf.SessionID | None = None) -> bool:
        if self._engine is None:
            return False
        s = qf.Session.lookupSession(session_id or self.session_ids[0])
        return bool(s is not None and s.isLoggedOn())

    def wait_logged_on(self, timeout: float, session_id: qf.SessionID | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.logged_on(session_id):
                return True
            time.sleep(0.005)
        return self.logged_on(session_id)

    def send(self, message: qf.Message | AppMessage, session_id: qf.SessionID | None = None) -> bool:
        """Send on ``session_id`` (the first session by default). quickfix stores the message and assigns
        its sequence number even when the session is not logged on (it goes out as a resend on the next
        logon); returns whether it was written to a connected socket."""
        if not isinstance(message, qf.Message):
            message = message.to_message()
        sid = session_id or self.session_ids[0]
        try:
            return bool(qf.Session.sendToTarget(message, sid))
        except qf.SessionNotFound as exc:
            raise FixError(f"session {sid} is not running") from exc


@dataclass
class Received:
    """One application message as received: the parsed dataclass, the raw wire string, its header flags."""

    message: AppMessage
    raw: str
    session: str
    poss_dup: bool = False
    poss_resend: bool = False
    seq_num: int = 0
