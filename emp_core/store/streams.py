"""Redis Streams for intraday bar updates (issue 11, item 4): publish, consume into a store, lag, replay.

One stream per bar table, ``emp:bars:<table>`` (:func:`stream_name`). Each entry is one bar, every field a
string: ``symbol``, ``ts`` (ISO 8601, naive UTC, microseconds; an offset is accepted and converted),
``open``/``high``/``low``/``close``/``volume`` written with ``repr`` (the shortest text that parses back
to the same double, so a bar crosses the stream bit for bit) and ``source``.

- :class:`BarStream` mirrors new bars into the stream: ``XADD`` per bar, pipelined in chunks, with
  optional approximate ``MAXLEN`` trimming. Trimming can drop entries no group has read yet, so size
  ``maxlen`` well above the worst backlog (the lag check shows it) or leave it off.
- :class:`BarConsumer` applies the stream to a store through a consumer group, with **at-least-once
  delivery and an exactly-once effect**:

  * an entry is acknowledged only after the store write that holds it has returned; a crash anywhere
    before ``XACK`` leaves it pending, so it is delivered again (never lost);
  * applying is idempotent: ``store.upsert_bars`` keys bars by (symbol, ts), so applying a redelivered
    batch again leaves one copy;
  * after a restart a consumer first drains its own pending entries (``XREADGROUP ... 0``), then reads
    new ones (``>``): it resumes at its last acknowledged entry;
  * entries left pending by a consumer that died are taken over with ``XAUTOCLAIM`` once idle for
    ``claim_idle_ms``;
  * a bar may be published more than once with different values (an intraday bar revised while it
    forms, a correction). Redelivery, claims and several consumers can apply those versions out of
    stream order, and a plain upsert would then let an older version win. So the newest entry id
    claimed per (symbol, ts) is kept in a *fence* hash (``<stream>:fence:<group>``): an entry older
    than the fence is acknowledged as superseded without writing. The fence claim (one Lua call per
    batch) and the store write run under a per-group Redis lock (``<stream>:lock:<group>``, value =
    the consumer's name, expiring after ``lock_ttl_ms``; a restarted consumer of the same name takes
    its own lock back at once). A crash between claim and write leaves the entry pending; its
    redelivery carries the fence's own id and is applied. The store therefore ends holding the newest
    version of every bar, whatever the delivery order. The lock also keeps two consumers' upserts of
    the same bar from interleaving (``upsert_bars`` is a delete then an insert, with no key
    constraint: two concurrent ones can leave two rows). Writes to one store are serialised anyway
    (DuckDB has one writer); reading and decoding stay parallel. :meth:`BarConsumer.prune_fence`
    drops fence fields older than every entry the group has not yet applied (they can no longer
    reject anything); :meth:`BarConsumer.run` calls it periodically, so the fence holds only recent keys.
  * malformed entries are not lost: each goes to the dead-letter stream ``<stream>:dead`` with its
    entry id, the reason (the validation vocabulary of :mod:`emp_core.market_data.validate`) and its
    original fields, and is then acknowledged so it does not block the rest. An entry trimmed from the
    stream while still pending is recorded there too. A crash between the dead-letter write and the ack
    can record one entry twice (the dead-letter stream is itself at-least-once).
  * Redis going away mid-batch raises ``redis.ConnectionError`` from :meth:`BarConsumer.step` (the batch
    stays pending); :meth:`BarConsumer.run` retries with back-off for ``retry_for`` seconds. With
    persistence on (AOF), the stream, group, pending list and fence survive a restart and the consumer
    resumes from its last acknowledged entry.

- :func:`lag` measures a group from ``XINFO GROUPS``/``XPENDING``: undelivered entries (``lag``),
  delivered but unacknowledged ones (``pending``) and the age in seconds of the oldest entry not yet
  applied, from its stream id (milliseconds of the server clock at ``XADD``) against the server's
  ``TIME``. :func:`lag_check` turns that into (passed, description, metadata) for the Dagster asset check;
  a missing stream or group fails with "nothing to measure".
- :func:`replay` backfills a stream from the store (a fresh environment's consumers then rebuild their
  store from it).
- :func:`add_stream_parser` / :func:`run_stream_command`: ``emp stream {replay,consume,lag}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
import redis

from emp_core.errors import EmpError
from emp_core.market_data.schema import BAR_SCHEMA, NUMERIC_COLUMNS, PRICE_COLUMNS
from emp_core.store.duckdb_store import BAR_TABLES

log = logging.getLogger("emp")

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_GROUP = "emp"
DEFAULT_TABLE = "bars_1h"
TS_TEXT = "%Y-%m-%dT%H:%M:%S%.6f"  # polars (chrono) spelling of the ts field
FIELDS = ("symbol", "ts", *NUMERIC_COLUMNS, "source")
STREAM_SCHEMA = pl.Schema({**BAR_SCHEMA, "source": pl.String})

_ID_LESS = """local function older(a, b)
  local da, db = string.find(a, '-', 1, true), string.find(b, '-', 1, true)
  local am, bm = tonumber(string.sub(a, 1, da - 1)), tonumber(string.sub(b, 1, db - 1))
  return am < bm or (am == bm and tonumber(string.sub(a, da + 1)) < tonumber(string.sub(b, db + 1)))
end
"""
# Fence claim. ARGV[1] is "key\0id\0key\0id..." (one argument: packing thousands is the client's main cost);
# the answer has one character per pair: "1" keep the entry (and the fence moves up to its id), "0" the fence
# holds a newer id. Run under the group's write lock, before the store write: a crash after it leaves the entry
# pending, and its redelivery (the same id as the fence) is kept again.
_CLAIM = _ID_LESS + """local keep, s, pos = {}, ARGV[1], 1
while pos <= #s do
  local a = string.find(s, '\\0', pos, true)
  local b = string.find(s, '\\0', a + 1, true) or (#s + 1)
  local key, id = string.sub(s, pos, a - 1), string.sub(s, a + 1, b - 1)
  local cur = redis.call('HGET', KEYS[1], key)
  if cur and older(id, cur) then keep[#keep + 1] = '0'
  else redis.call('HSET', KEYS[1], key, id); keep[#keep + 1] = '1' end
  pos = b + 1
end
return table.concat(keep)"""
_RELEASE = """if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"""
_PRUNE = _ID_LESS + """local n = 0
for i = 2, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v and older(v, ARGV[1]) then redis.call('HDEL', KEYS[1], ARGV[i]); n = n + 1 end
end
return n"""


def stream_name(table: str = DEFAULT_TABLE) -> str:
    return f"emp:bars:{table}"


def dead_letter_name(stream: str) -> str:
    return f"{stream}:dead"


def fence_name(stream: str, group: str) -> str:
    return f"{stream}:fence:{group}"


def lock_name(stream: str, group: str) -> str:
    return f"{stream}:lock:{group}"


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _sid(entry_id: Any) -> tuple[int, int]:
    """A stream id ``ms-seq`` as a comparable pair."""
    ms, _, seq = _text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def _server_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


# -- publishing ---------------------------------------------------------------


def _stream_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` checked and brought to the bar schema (ts naive UTC in microseconds, figures Float64)."""
    missing = [c for c in BAR_SCHEMA if c not in frame.columns]
    if missing:
        raise EmpError(f"cannot publish bars without column(s) {', '.join(missing)}")
    ts = pl.col("ts")
    dtype = frame.schema["ts"]
    if not isinstance(dtype, pl.Datetime):
        raise EmpError(f"cannot publish bars whose ts is {dtype}, not a datetime")
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        ts = ts.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    out = frame.select(pl.col("symbol").cast(pl.String), ts.cast(pl.Datetime("us")),
                       *[pl.col(c).cast(pl.Float64) for c in NUMERIC_COLUMNS])
    nulls = out.filter(pl.any_horizontal(pl.all().is_null())).height
    if nulls:
        raise EmpError(f"{nulls} bar(s) have an empty field; validate bars before publishing them")
    return out


class BarStream:
    """The publishing side of ``stream`` (default ``emp:bars:bars_1h``)."""

    def __init__(self, client: redis.Redis, stream: str = stream_name(), maxlen: int | None = None, *,
                 chunk: int = 2000) -> None:
        if maxlen is not None and maxlen < 1:
            raise EmpError("maxlen must be at least 1 (or None: no trimming)")
        self.client = client
        self.stream = stream
        self.maxlen = maxlen
        self.chunk = chunk
        self.last_id: str | None = None

    def publish(self, frame: pl.DataFrame, source: str) -> int:
        """``XADD`` one entry per bar of ``frame`` (in its row order), pipelined ``chunk`` at a time.
        Returns the number of entries added; ``last_id`` is the id of the last one."""
        bars = _stream_frame(frame).with_columns(pl.col("ts").dt.strftime(TS_TEXT))
        pipe = self.client.pipeline(transaction=False)
        added = 0
        for i, (symbol, ts, o, h, lo, c, v) in enumerate(bars.iter_rows(), start=1):
            pipe.xadd(self.stream, {"symbol": symbol, "ts": ts, "open": repr(o), "high": repr(h), "low": repr(lo),
                                    "close": repr(c), "volume": repr(v), "source": source},
                      maxlen=self.maxlen, approximate=True)
            if i % self.chunk == 0 or i == bars.height:
                ids = pipe.execute()
                added += len(ids)
                self.last_id = _text(ids[-1])
        return added


# -- consuming ----------------------------------------------------------------


@dataclass(slots=True)
class Bar:
    entry_id: str
    symbol: str
    ts: datetime
    values: tuple[float, ...]  # open, high, low, close, volume
    source: str
    key: str = ""  # symbol|ts: the bar's identity in the fence

    def __post_init__(self) -> None:
        self.key = f"{self.symbol}|{self.ts.isoformat(timespec='microseconds')}"


def _figures(f: dict, problems: list[str]) -> dict[str, float]:
    """The numeric fields of an entry that are usable; appends a reason to ``problems`` for each that is not,
    and for prices that contradict each other."""
    values: dict[str, float] = {}
    for name in NUMERIC_COLUMNS:
        if f"missing {name}" in problems:
            continue
        try:
            x = float(f[name])
        except ValueError:
            problems.append(f"{name} is not a number")
            continue
        if not math.isfinite(x):
            problems.append(f"{name} is not finite")
        elif name in PRICE_COLUMNS and x <= 0:
            problems.append(f"{name} is not positive")
        elif name == "volume" and x < 0:
            problems.append("negative volume")
        else:
            values[name] = x
    if all(n in values for n in PRICE_COLUMNS):
        o, h, lo, c = (values[n] for n in PRICE_COLUMNS)
        if h < lo:
            problems.append("high below low")
        if not lo <= o <= h:
            problems.append("open outside [low, high]")
        if not lo <= c <= h:
            problems.append("close outside [low, high]")
    return values


def decode_entry(entry_id: str, fields: dict) -> Bar:
    """One stream entry as a bar, or ``ValueError`` naming every problem (the reasons of
    :mod:`emp_core.market_data.validate`, separated by "; ")."""
    f = {_text(k): _text(v) for k, v in fields.items()} if isinstance(next(iter(fields), ""), bytes) else fields
    problems = [f"missing {name}" for name in FIELDS if name != "source" and not str(f.get(name, "")).strip()]
    if "\0" in str(f.get("symbol", "")):
        problems.append("symbol holds a NUL character")
    ts = None
    if "missing ts" not in problems:
        try:
            ts = datetime.fromisoformat(f["ts"].strip())
        except ValueError:
            problems.append("unparseable timestamp")
        else:
            if ts.tzinfo is not None:
                ts = ts.astimezone(UTC).replace(tzinfo=None)
    values = _figures(f, problems)
    if problems:
        raise ValueError("; ".join(problems))
    return Bar(_text(entry_id), f["symbol"].strip(), ts, tuple(values[n] for n in NUMERIC_COLUMNS),
               str(f.get("source") or "stream"))


@dataclass
class ConsumeReport:
    """What a consumer did: entries ``read`` (each acknowledged), of which ``redelivered`` came from its own
    pending list and ``claimed`` from another consumer's; bars ``applied`` to the store; entries
    ``superseded`` by a newer version of the same bar; entries sent to the dead-letter stream (``dead``)."""

    read: int = 0
    applied: int = 0
    superseded: int = 0
    dead: int = 0
    redelivered: int = 0
    claimed: int = 0
    seconds: float = 0.0

    def add(self, other: ConsumeReport) -> None:
        for name in ("read", "applied", "superseded", "dead", "redelivered", "claimed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict:
        return asdict(self)


class BarConsumer:
    """One consumer of group ``group`` on ``stream``, applying bars to ``store``'s ``table``.

    Use :meth:`step` (one batch, for tests and schedulers) or :meth:`run` (a loop, for a daemon).
    Not thread-safe: one instance per thread; instances in several threads or processes share the work
    through the group."""

    def __init__(self, client: redis.Redis, stream: str, group: str, consumer: str, store, table: str = DEFAULT_TABLE,
                 *, batch: int = 5000, block_ms: int = 1000, claim_idle_ms: int = 60_000, lock_ttl_ms: int = 60_000,
                 run_id: str | None = None) -> None:
        if table not in BAR_TABLES:
            raise EmpError(f"unknown bar table {table!r}; choose one of {', '.join(BAR_TABLES)}")
        if batch < 1:
            raise EmpError("batch must be at least 1")
        self.client, self.stream, self.group, self.consumer = client, stream, group, consumer
        self.store, self.table = store, table
        self.batch, self.block_ms, self.claim_idle_ms, self.lock_ttl_ms = batch, block_ms, claim_idle_ms, lock_ttl_ms
        self.run_id = run_id or f"stream:{group}:{consumer}"
        self.dead_letters = dead_letter_name(stream)
        self._fence = fence_name(stream, group)
        self._lock = lock_name(stream, group)
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._prune = client.register_script(_PRUNE)
        self._draining = True  # own pending entries first (a restart resumes there)
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self.ensure_group()

    def ensure_group(self) -> bool:
        """Create the group (and the stream) if missing, from the stream's start: a fresh group reads every
        entry the stream holds. Returns whether it was created."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        return True

    # -- one batch -------------------------------------------------------------

    def step(self, block_ms: int | None = None, count: int | None = None) -> ConsumeReport:
        """Process at most one batch: own pending entries first, then due claims of idle entries, then new
        entries (waiting up to ``block_ms`` for them). Raises what Redis or the store raise; the batch then
        stays pending and the next step starts again from the pending list."""
        count = min(count or self.batch, self.batch)
        try:
            return self._step(self.block_ms if block_ms is None else block_ms, count)
        except redis.ResponseError as exc:
            self._draining = True
            if "NOGROUP" not in str(exc):
                raise
            log.warning("stream %s: group %s is gone (Redis lost its data?); re-creating it from the start",
                        self.stream, self.group)
            self.ensure_group()
            return ConsumeReport()
        except BaseException:
            self._draining = True
            raise

    def _step(self, block_ms: int, count: int) -> ConsumeReport:
        if self._draining:
            entries = self._read("0", count, None)
            if entries:
                report = self._process(entries)
                report.redelivered = report.read
                return report
            self._draining = False
        if time.monotonic() >= self._next_claim:
            answer = self.client.xautoclaim(self.stream, self.group, self.consumer, min_idle_time=self.claim_idle_ms,
                                            start_id=self._claim_cursor, count=count)
            self._claim_cursor = _text(answer[0])
            if self._claim_cursor == "0-0":  # a full pass over the pending list: next one later
                self._next_claim = time.monotonic() + max(self.claim_idle_ms / 2000, 0.05)
            deleted = answer[2] if len(answer) > 2 else []  # pending but trimmed: Redis dropped them from the list
            entries = [*answer[1], *[(_text(d), None) for d in deleted]]
            if entries:
                report = self._process(entries)
                report.claimed = report.read
                return report
        return self._process(self._read(">", count, block_ms or None))

    def _read(self, start: str, count: int, block_ms: int | None) -> list:
        answer = self.client.xreadgroup(self.group, self.consumer, {self.stream: start}, count=count, block=block_ms)
        return answer[0][1] if answer else []

    def _process(self, entries: list) -> ConsumeReport:
        """Decode, apply, dead-letter and acknowledge one batch, in that order."""
        report = ConsumeReport(read=len(entries))
        if not entries:
            return report
        good, dead = [], []
        for entry_id, fields in entries:
            if not fields:
                dead.append((_text(entry_id), "trimmed from the stream before it was applied", {}))
                continue
            try:
                good.append(decode_entry(entry_id, fields))
            except ValueError as exc:
                dead.append((_text(entry_id), str(exc), fields))
        if good:
            report.applied, report.superseded = self._apply(good)
        if dead:
            self._dead_letter(dead)
            report.dead = len(dead)
        self._ack([_text(e) for e, _ in entries])
        return report

    def _apply(self, bars: list[Bar]) -> tuple[int, int]:
        """Write the newest version of each bar not superseded by the fence; returns (applied, superseded)."""
        newest: dict[str, Bar] = {}
        for bar in sorted(bars, key=lambda b: _sid(b.entry_id)):
            newest[bar.key] = bar
        with self.write_lock():
            pairs = "\0".join(x for b in newest.values() for x in (b.key, b.entry_id))
            flags = _text(self._claim(keys=[self._fence], args=[pairs]))
            keep = [b for b, flag in zip(newest.values(), flags, strict=True) if flag == "1"]
            if keep:
                frame = pl.DataFrame([(b.symbol, b.ts, *b.values, b.source) for b in keep], schema=STREAM_SCHEMA,
                                     orient="row")
                for (source,), part in frame.partition_by("source", as_dict=True).items():
                    self.store.upsert_bars(self.table, part.drop("source"), source=source, run_id=self.run_id)
        return len(keep), len(bars) - len(keep)

    def _dead_letter(self, dead: list[tuple[str, str, dict]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for entry_id, reason, fields in dead:
            pipe.xadd(self.dead_letters, {
                "entry_id": entry_id, "reason": reason, "stream": self.stream, "group": self.group,
                "consumer": self.consumer, "fields": json.dumps({_text(k): _text(v) for k, v in fields.items()}),
            })
        pipe.execute()

    def _ack(self, ids: list[str]) -> None:
        if ids:
            self.client.xack(self.stream, self.group, *ids)

    @contextmanager
    def write_lock(self, wait_s: float | None = None) -> Iterator[None]:
        """The group's write lock (fence check + store write + fence update). A lock left by a crashed
        consumer of the same name is taken back at once; another consumer's expires after ``lock_ttl_ms``."""
        wait_s = self.lock_ttl_ms / 1000 * 1.5 if wait_s is None else wait_s
        deadline = time.monotonic() + wait_s
        delay = 0.002
        while not self.client.set(self._lock, self.consumer, nx=True, px=self.lock_ttl_ms):
            holder = _text(self.client.get(self._lock))
            if holder == self.consumer and self.client.set(self._lock, self.consumer, xx=True, px=self.lock_ttl_ms):
                break
            if time.monotonic() >= deadline:
                raise EmpError(f"stream {self.stream}: the write lock of group {self.group} is held by {holder!r} "
                               f"for over {wait_s:.0f}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        try:
            yield
        finally:
            with suppress(redis.RedisError):  # Redis gone: the lock expires, or this consumer takes it back
                self._release(keys=[self._lock], args=[self.consumer])

    def prune_fence(self, chunk: int = 1000) -> int:
        """Delete fence fields older than every entry the group has not applied yet (they can no longer
        reject anything). Returns the number deleted."""
        low = _low_water_mark(self.client, self.stream, self.group)
        if low is None:
            return 0
        deleted, cursor = 0, 0
        while True:
            cursor, fields = self.client.hscan(self._fence, cursor, count=chunk)
            if fields:
                deleted += int(self._prune(keys=[self._fence], args=[f"{low[0]}-{low[1]}", *fields]))
            if int(cursor) == 0:
                return deleted

    # -- the loop --------------------------------------------------------------

    def run(self, max_entries: int | None = None, idle_stop: float | None = None, *, retry_for: float = 60.0,
            progress_every: float = 30.0, prune_every: float = 60.0) -> ConsumeReport:
        """Consume until ``max_entries`` entries are read, or nothing arrived for ``idle_stop`` seconds
        (``None``: never). Redis connection errors are retried with back-off for ``retry_for`` seconds
        per outage, then raised as :class:`EmpError`."""
        total = ConsumeReport()
        started = idle_since = last_progress = last_prune = time.monotonic()
        outage_since: float | None = None
        delay = 0.1
        while max_entries is None or total.read < max_entries:
            block = self.block_ms if idle_stop is None else min(self.block_ms, max(int(idle_stop * 1000), 1))
            try:
                report = self.step(block, None if max_entries is None else max_entries - total.read)
                now = time.monotonic()
                if now - last_prune >= prune_every:
                    self.prune_fence()
                    last_prune = now
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                now = time.monotonic()
                if outage_since is None:
                    outage_since = now
                    log.warning("stream %s: Redis unreachable (%s); retrying for %.0fs", self.stream, exc, retry_for)
                if now - outage_since >= retry_for:
                    raise EmpError(f"stream {self.stream}: Redis unreachable for {retry_for:.0f}s ({exc})") from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if outage_since is not None:
                log.info("stream %s: Redis is back after %.1fs; resuming from the pending entries", self.stream,
                         now - outage_since)
                outage_since, delay = None, 0.1
            total.add(report)
            if report.read:
                idle_since = now
            elif idle_stop is not None and now - idle_since >= idle_stop:
                break
            if now - last_progress >= progress_every:
                log.info("stream %s: %d entries read, %d bars applied, %d dead-lettered", self.stream, total.read,
                         total.applied, total.dead)
                last_progress = now
        total.seconds = time.monotonic() - started
        return total


# -- lag ------------------------------------------------------------------------


def _group_info(client: redis.Redis, stream: str, group: str) -> dict | None:
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:  # no such key
        return None
    for g in groups:
        if _text(g["name"]) == group:
            return {k: _text(v) for k, v in g.items()}
    return None


def _low_water_mark(client: redis.Redis, stream: str, group: str) -> tuple[int, int] | None:
    """The smallest id the group may still have to apply: its oldest pending entry, or the first id after its
    last delivered one."""
    info = _group_info(client, stream, group)
    if info is None:
        return None
    ms, seq = _sid(info["last-delivered-id"])
    low = (ms, seq + 1)
    pending = client.xpending(stream, group)
    if pending["pending"]:
        low = min(low, _sid(pending["min"]))
    return low


def lag(client: redis.Redis, stream: str, group: str) -> dict:
    """How far ``group`` is behind on ``stream``: ``lag`` (entries not delivered yet), ``pending`` (delivered,
    not acknowledged), ``backlog`` (their sum: entries not applied yet), ``last_delivered_id``, the oldest
    unapplied entry's id and its age in seconds by the server's clock, the stream's length and the number
    of dead letters. ``stream_exists``/``group_exists`` say whether there is anything to measure."""
    info: dict[str, Any] = {"stream": stream, "group": group, "stream_exists": bool(client.exists(stream)),
                            "group_exists": False, "length": 0, "lag": None, "pending": None, "backlog": None,
                            "last_delivered_id": None, "oldest_unapplied_id": None, "oldest_age_s": None,
                            "consumers": 0, "dead_letters": int(client.xlen(dead_letter_name(stream)))}
    if not info["stream_exists"]:
        return info
    info["length"] = int(client.xlen(stream))
    g = _group_info(client, stream, group)
    if g is None:
        return info
    last = g["last-delivered-id"]
    pending = client.xpending(stream, group)
    undelivered = client.xrange(stream, min=f"({last}", max="+", count=1)
    behind = g.get("lag")
    if behind is None:  # Redis could not tell (entries deleted in the middle): count them
        behind, start = 0, f"({last}"
        while page := client.xrange(stream, min=start, max="+", count=10_000):
            behind += len(page)
            start = f"({_text(page[-1][0])}"
    oldest = [_text(undelivered[0][0])] if undelivered else []
    if pending["pending"]:
        oldest.append(_text(pending["min"]))
    oldest_id = min(oldest, key=_sid) if oldest else None
    now_ms = _server_ms(client)
    info.update(group_exists=True, lag=int(behind), pending=int(pending["pending"]),
                backlog=int(behind) + int(pending["pending"]), last_delivered_id=last, oldest_unapplied_id=oldest_id,
                oldest_age_s=max(now_ms - _sid(oldest_id)[0], 0) / 1000 if oldest_id else 0.0,
                consumers=int(g.get("consumers") or 0))
    return info


def lag_check(lag_info: dict, max_entries: int, max_age_seconds: float) -> tuple[bool, str, dict]:
    """The consumer-lag asset check: passes when the group's backlog (undelivered + pending entries) is at most
    ``max_entries`` and its oldest unapplied entry is at most ``max_age_seconds`` old. A stream or group that
    does not exist fails: there is nothing to measure, which is not health."""
    meta = {k: v for k, v in lag_info.items() if v is not None}
    meta.update(max_entries=max_entries, max_age_seconds=max_age_seconds)
    stream, group = lag_info.get("stream"), lag_info.get("group")
    if not lag_info.get("stream_exists"):
        return False, f"nothing to measure: stream {stream} does not exist", meta
    if not lag_info.get("group_exists"):
        return False, f"nothing to measure: stream {stream} has no consumer group {group}", meta
    backlog, age = lag_info["backlog"], lag_info["oldest_age_s"]
    problems = []
    if backlog > max_entries:
        problems.append(f"{backlog} entries not applied (limit {max_entries}): {lag_info['lag']} undelivered, "
                        f"{lag_info['pending']} pending")
    if age > max_age_seconds:
        problems.append(f"oldest unapplied entry is {age:.1f}s old (limit {max_age_seconds:g}s)")
    if problems:
        return False, f"group {group} on {stream}: " + "; ".join(problems), meta
    return True, (f"group {group} on {stream}: {backlog} entries behind (limit {max_entries}), oldest "
                  f"{age:.1f}s (limit {max_age_seconds:g}s)"), meta


# -- replay -----------------------------------------------------------------------


def replay(store, client: redis.Redis, stream: str, table: str = DEFAULT_TABLE, *, symbols: Sequence[str] | None = None,
           start: datetime | None = None, end: datetime | None = None, source: str | None = None,
           maxlen: int | None = None) -> int:
    """Publish the store's bars of ``table`` (``symbols`` in [start, end), sorted by symbol and ts) into
    ``stream``, so a fresh environment's consumers rebuild their store from it. Returns the number of
    entries added. Replaying into a stream a group has already applied re-applies the same values: harmless."""
    if table not in BAR_TABLES:
        raise EmpError(f"unknown bar table {table!r}; choose one of {', '.join(BAR_TABLES)}")
    bars = store.read_bars(table, symbols=symbols, start=start, end=end)
    return BarStream(client, stream, maxlen).publish(bars, source or f"replay:{table}")


def mirror_run(store, client: redis.Redis, table: str, run_id: str, *, stream: str | None = None) -> int:
    """Publish the bars one ingest run stored in ``table`` (the publisher of new intraday bars: the bars
    asset calls it after an institutional-tier ingest), in time order. Returns the number of entries added."""
    if table not in BAR_TABLES:
        raise EmpError(f"unknown bar table {table!r}; choose one of {', '.join(BAR_TABLES)}")
    bars = store.query(f"SELECT symbol, ts, open, high, low, close, volume, source FROM market.{table} "
                       "WHERE run_id = $r ORDER BY ts, symbol", {"r": run_id})
    if not bars.height:
        return 0
    source = bars["source"][0]
    return BarStream(client, stream or stream_name(table)).publish(bars.drop("source"), source)


# -- command line -----------------------------------------------------------------


def _default_redis_url() -> str:
    from emp_core.config import settings

    return settings().redis_url or DEFAULT_REDIS_URL


def _redacted(url: str) -> str:
    head, at, tail = url.rpartition("@")
    return f"{head.split('//')[0]}//***@{tail}" if at else url


def connect(url: str, *, timeout: float = 5.0, read_timeout: float | None = None) -> redis.Redis:
    """A client for ``url`` that answered a PING, or a one-line :class:`EmpError`. Replies may take
    ``read_timeout`` (default ``timeout`` + 30 s: a consumer's blocking read waits up to its block time)."""
    try:
        client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=timeout,
                                      socket_timeout=timeout + 30 if read_timeout is None else read_timeout)
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, ValueError) as exc:
        raise EmpError(f"cannot reach Redis at {_redacted(url)} ({exc}); start it with "
                       "`redis-server --port 6379` or pass --redis-url") from None
    return client


def add_stream_parser(subparsers) -> argparse.ArgumentParser:
    """``emp stream {replay,consume,lag}`` on ``subparsers`` (the ``emp`` parser's); each action runs
    :func:`run_stream_command`."""
    from emp_core.cli import add_range, symbol_list

    fmt = argparse.RawDescriptionHelpFormatter
    top = subparsers.add_parser("stream", help="Redis Streams of intraday bars: replay, consume, lag",
                                description="Intraday bar updates through Redis Streams: a consumer group applies "
                                "them to the store (at-least-once delivery, exactly-once effect).")
    actions = top.add_subparsers(dest="stream_command", metavar="ACTION", parser_class=type(top))

    def action(name: str, help_: str, description: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_, description=description, formatter_class=fmt)
        p.add_argument("--redis-url", default=None, metavar="URL", help=f"Redis server (default {DEFAULT_REDIS_URL})")
        p.add_argument("--table", choices=BAR_TABLES, default=DEFAULT_TABLE,
                       help=f"bar table (default {DEFAULT_TABLE})")
        p.add_argument("--stream", help="stream key (default emp:bars:TABLE)")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.set_defaults(func=run_stream_command, prog=f"emp stream {name}")
        return p

    p = action("replay", "publish the store's bars into the stream (backfill a fresh environment)",
               "Publish the store's bars (optionally some symbols and dates) into the stream, one entry per bar.\n"
               "Examples:\n  emp stream replay\n  emp stream replay --symbols EURUSD --start 2017-03 --end 2017-06")
    p.add_argument("--store", metavar="FILE", help="a DuckDB file to read (default: the tier's store, EMP_TIER)")
    p.add_argument("--symbols", type=symbol_list, help="comma-separated symbols (default all)")
    p.add_argument("--maxlen", type=int, help="trim the stream to about this many entries (default: no trimming)")
    add_range(p)

    p = action("consume", "apply the stream to the store through a consumer group",
               "Read the stream as one consumer of a group and upsert its bars into the store; entries are\n"
               "acknowledged only after the store holds them. Malformed entries go to STREAM:dead with a reason.\n"
               "Examples:\n  emp stream consume --idle-stop 5\n  emp stream consume --group research --consumer w1")
    p.add_argument("--store", metavar="FILE", help="a DuckDB file to write (default: the tier's store, EMP_TIER)")
    p.add_argument("--group", default=DEFAULT_GROUP, help=f"consumer group (default {DEFAULT_GROUP})")
    p.add_argument("--consumer", help="consumer name, stable across restarts (default: this host's name)")
    p.add_argument("--batch", type=int, default=5000, help="most entries per store write (default 5000)")
    p.add_argument("--max-entries", type=int, help="stop after this many entries (default: no limit)")
    p.add_argument("--idle-stop", type=float, metavar="SECONDS",
                   help="stop when nothing arrived for this long (default: run until interrupted)")

    p = action("lag", "how far a consumer group is behind; with limits, a check (exit 1 when it fails)",
               "Undelivered and pending entries of a group and the age of the oldest one not applied.\n"
               "Examples:\n  emp stream lag --json\n  emp stream lag --max-entries 10000 --max-age 300")
    p.add_argument("--group", default=DEFAULT_GROUP, help=f"consumer group (default {DEFAULT_GROUP})")
    p.add_argument("--max-entries", type=int, help="check: at most this many entries behind")
    p.add_argument("--max-age", type=float, metavar="SECONDS", help="check: oldest unapplied entry at most this old")
    top.set_defaults(func=lambda _args: top.print_help() or 2)  # `emp stream` alone: its actions
    return top


def _store(path) -> Any:
    """The DuckDB file given, or the tier's store (EMP_TIER: DuckDB under $EMP_HOME or PostgreSQL)."""
    from pathlib import Path

    from emp_core.store import DuckDBStore, open_store

    return DuckDBStore(Path(path)) if path else open_store(cache=False)


def run_stream_command(args: argparse.Namespace) -> int:
    """Run ``emp stream replay|consume|lag`` from parsed arguments; returns the exit code."""
    command = args.stream_command
    stream = args.stream or stream_name(args.table)
    url = args.redis_url or _default_redis_url()
    client = connect(url)
    try:
        if command == "replay":
            return _cmd_replay(args, client, stream)
        if command == "consume":
            return _cmd_consume(args, client, stream)
        if command == "lag":
            return _cmd_lag(args, client, stream)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise EmpError(f"lost Redis at {_redacted(url)} ({exc})") from None
    finally:
        client.close()
    raise EmpError(f"unknown stream action {command!r}; choose replay, consume or lag")


def _cmd_replay(args, client: redis.Redis, stream: str) -> int:
    from emp_core.cli import check_range

    check_range(args.start, args.end)
    store = _store(args.store)
    if not store.exists():
        raise EmpError(f"{store.location}: no store yet (or unreachable); run `emp demo` or `emp ingest` first")
    t = time.perf_counter()
    n = replay(store, client, stream, args.table, symbols=args.symbols, start=args.start.first if args.start else None,
               end=args.end.after if args.end else None, maxlen=args.maxlen)
    seconds = time.perf_counter() - t
    if args.json:
        print(json.dumps({"stream": stream, "table": args.table, "bars": n, "seconds": round(seconds, 3)}))
    else:
        print(f"replayed {n:,} bars of market.{args.table} from {store.location} into {stream} in {seconds:.2f}s")
    return 0


def _cmd_consume(args, client: redis.Redis, stream: str) -> int:
    store = _store(args.store)
    consumer = BarConsumer(client, stream, args.group, args.consumer or socket.gethostname(), store, args.table,
                           batch=args.batch)
    report = consumer.run(max_entries=args.max_entries, idle_stop=args.idle_stop)
    if args.json:
        print(json.dumps({"stream": stream, "group": args.group, "consumer": consumer.consumer, **report.as_dict()}))
    else:
        print(f"{stream} -> market.{args.table} ({store.location}): {report.read:,} entries read, "
              f"{report.applied:,} bars applied, {report.superseded:,} superseded, {report.dead:,} dead-lettered "
              f"in {report.seconds:.1f}s")
        if report.dead:
            print(f"dead letters: XRANGE {consumer.dead_letters} - +")
    return 0


def _cmd_lag(args, client: redis.Redis, stream: str) -> int:
    info = lag(client, stream, args.group)
    checked = args.max_entries is not None or args.max_age is not None
    passed, description = True, ""
    if checked:
        passed, description, _ = lag_check(info, args.max_entries if args.max_entries is not None else math.inf,
                                           args.max_age if args.max_age is not None else math.inf)
    if args.json:
        print(json.dumps({**info, **({"passed": passed, "description": description} if checked else {})}))
    elif not info["group_exists"]:
        print(f"nothing to measure: {stream} " + ("has no group " + args.group if info["stream_exists"]
                                                  else "does not exist"))
    else:
        print(f"{stream} group {args.group}: {info['lag']:,} undelivered, {info['pending']:,} pending, oldest "
              f"unapplied {info['oldest_age_s']:.1f}s old, {info['length']:,} entries, {info['dead_letters']:,} dead "
              "letters")
        if checked:
            print(("PASS: " if passed else "FAIL: ") + description)
    return 0 if passed else 1
