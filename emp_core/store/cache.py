"""The institutional tier's hot cache: bar and feature reads of hot symbols served from Redis.

:class:`CachedStore` wraps a store (:class:`~emp_core.store.duckdb_store.DuckDBStore` or the PostgreSQL
store: any object with their methods) and a :class:`HotCache`. It delegates every attribute to the store and
overrides the cached reads (:meth:`CachedStore.read_bars`, :meth:`CachedStore.read_features`) and the writers
that can change cached rows (``replace_bars``, ``upsert_bars``, ``replace_windows``, and the generic table
writers when they touch a bar or feature table), which invalidate after the store's write has returned.

**Entries.** One Redis string per (scope, calendar year, symbol), where a scope is ``bars:<table>`` or
``features:<table>:<dataset>``: key ``<namespace>:<scope>:<year>:<symbol>`` (the symbol last, so no symbol
spelling can collide with another key), value a tag (below) followed by the symbol-year's rows as an Arrow
IPC stream (Polars reads a symbol-year of daily bars from a stream in ~25 us, from the IPC file format in
~500 us), zstd-compressed by default (``compression``: a year of realistic daily bars takes 6.2 kB against
17 kB uncompressed and 9.8 kB with lz4, for ~40 us more per entry read; memory is what a cache runs out of),
with a TTL. A read of [start, end) fetches the years it covers in one round trip,
reads the missing symbol-years from the store in one query, stores them, and cuts [start, end) out of the
assembled years. Empty symbol-years are cached too (a negative entry is as useful as a positive one). Only
hot symbols are cached (all symbols when ``hot_symbols`` is None); reads without a symbol list, without both
bounds, with time-zone-aware bounds or over more than ``max_years`` years go to the store uncounted as
misses (``passthroughs``).

**Validity by version tokens, not by deleting the right keys in time.** Every entry carries the tokens it was
read under: the namespace epoch (``<ns>:v``), the scope-year token (``<ns>:v:<scope>:<year>``) and the
symbol-year token (``<ns>:v:<scope>:<year>:<symbol>``). A token is a random 64-bit value created on first
read and never reused; an entry is served only when its tag equals the current tokens, read in the same
atomic Lua script as the entry (one round trip per read: a MULTI of one command per key cost twice as much in
redis-py's packing and parsing). Invalidation *deletes* tokens (and the exact entry keys it knows): a
write with a symbol list deletes the symbol-year tokens and entries; a write without one (``replace_bars``
with a window and no selection deletes another symbol's rows of that source; ``replace_windows`` replaces a
whole dataset window) deletes the scope-year tokens, which retires every symbol of those years without
listing them (no per-year index of cached symbols is needed, and an index evicted under LRU could otherwise
lose entries; the retired entries are overwritten by the next miss or expire). This also closes the
read-write race: a reader takes the tokens *before* its store read, so if a writer commits and deletes the
tokens while the reader is between its store read and its SET, the reader's entry is stored under dead
tokens and never served (``test_a_reader_that_raced_a_writer_never_serves_its_stale_rows``). A token that
Redis evicts or expires only turns its entries into misses. Deleting (rather than rewriting) tokens also
works when Redis is out of memory under ``noeviction``.

**Redis down.** Socket timeouts are short (``timeout``) and the client does not retry; after a connection
error or timeout the cache is *open* for ``retry_after`` seconds (a circuit breaker): every read goes
straight to the store (``bypasses``) and no Redis call is made. An invalidation that cannot reach Redis marks
the cache dirty; a dirty cache serves nothing from Redis until it has deleted the namespace epoch (one O(1)
command that retires every entry of the namespace, counted in ``flushes``), which it does on its first call
after the breaker closes. Chosen over a ``SCAN``-and-delete flush because it is atomic (no entry set in
the middle of a scan survives) and costs one command; the retired entries are overwritten or expire. Chosen
over replaying the lost invalidations because the list could grow without bound during a long outage.
Limits: a process that dies while dirty cannot flush (the entries it left stale live at most ``ttl_seconds``),
and another process that could reach Redis while this one could not may serve a stale entry for as long;
so ``ttl_seconds`` bounds staleness across processes. Invalidation covers every symbol a write names,
hot or not here (another process sharing the namespace may call other symbols hot).

**Not seen by the cache:** writes made through ``query`` (SQL DML), through raw connections (``connect``,
``begin``, ``cursor``), by another program, or schema changes that add columns to a feature table without a
write through this wrapper; after those call :meth:`HotCache.invalidate_all`. Results are sorted by
(symbol, ts) in byte order, which is DuckDB's order and PostgreSQL's under the ``C`` collation.

**Stats** (:meth:`HotCache.stats`, flat ints and floats for Dagster materialisation metadata): per symbol-year
entry ``hits``, ``misses`` (``stale``: the part of the misses found in Redis under dead tokens), ``sets``,
``too_large`` (over ``max_bytes_per_entry``, not stored); per call ``reads``, ``passthroughs``,
``bypasses``, ``invalidations``, ``missed_invalidations``, ``flushes``, ``errors``; and the server's
``evicted_keys`` / ``expired_keys`` since this cache first reached it (INFO stats, server-wide: a Redis
restart is folded in).

``redis`` is imported when a :class:`HotCache` is made, so the embedded tier does not need it installed.
"""

from __future__ import annotations

import io
import re
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import polars as pl

from emp_core.errors import EmpError
from emp_core.store.duckdb_store import BAR_TABLES, time_window

FEATURE_TABLES = ("sensory.why", "sensory.how", "sensory.what", "sensory.when", "sensory.anomaly",
                  "sensory.fused")
GENERIC_WRITERS = ("append", "replace_table", "overwrite_table", "append_table", "insert_new", "ensure_table")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]+$")
_TABLE = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")
_FORMAT = b"E1"  # entry layout version, first bytes of every tag
_TOKEN_BYTES = 8
_CHUNK = 1000
_COUNTERS = ("reads", "hits", "misses", "stale", "sets", "too_large", "passthroughs", "bypasses",
             "invalidations", "missed_invalidations", "flushes", "errors")

Entry = tuple[str, int]  # (symbol, year)

# One atomic round trip for a read: get-or-create each token (the epoch without a TTL), then every entry.
# KEYS: the token keys, epoch first, then the entry keys. ARGV: the number of token keys, the tokens' TTL in
# ms, a fresh random token per token key.
_FETCH = """
local n = tonumber(ARGV[1])
local out = {}
for i = 1, n do
  local v = redis.call('GET', KEYS[i])
  if not v then
    v = ARGV[2 + i]
    if i == 1 then redis.call('SET', KEYS[i], v) else redis.call('SET', KEYS[i], v, 'PX', ARGV[2]) end
  end
  out[i] = v
end
for i = n + 1, #KEYS do
  out[i] = redis.call('GET', KEYS[i])
end
return out
"""


class HotCache:
    """Redis-backed symbol-year entries for one namespace (see the module docstring)."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "emp",
        ttl_seconds: float = 3600.0,
        hot_symbols: Iterable[str] | None = None,
        max_bytes_per_entry: int = 8 * 2**20,
        timeout: float = 0.5,
        retry_after: float = 5.0,
        max_years: int = 50,
        compression: str = "zstd",
    ) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if not _NAMESPACE.match(namespace):
            raise EmpError(f"cache namespace {namespace!r}: use letters, digits, '_', '.', '-'")
        if ttl_seconds <= 0:
            raise EmpError("ttl_seconds must be positive")
        self.url = url
        self.namespace = namespace
        self.ttl_ms = max(1, round(ttl_seconds * 1000))
        self.hot_symbols = None if hot_symbols is None else frozenset(hot_symbols)
        self.max_bytes_per_entry = max_bytes_per_entry
        self.retry_after = retry_after
        self.max_years = max_years
        if compression not in ("uncompressed", "lz4", "zstd"):
            raise EmpError(f"cache compression {compression!r}: choose uncompressed, lz4 or zstd")
        self.compression = compression
        self._redis = redis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0),
            health_check_interval=0, client_name=f"emp-cache-{namespace}")
        self._down = (redis.ConnectionError, redis.TimeoutError, OSError)
        self._failure = (redis.RedisError, OSError)
        self._refused = redis.ResponseError
        self._fetch_script = self._redis.register_script(_FETCH)
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._open_until = 0.0
        self._missed = self._flushed = 0  # invalidations that could not reach Redis; those covered by a flush
        self._server: dict[str, list[int]] | None = None  # name -> [last seen, total since first contact]

    def __repr__(self) -> str:
        return f"HotCache({self.url!r}, namespace={self.namespace!r})"

    def close(self) -> None:
        self._redis.close()

    # -- keys -----------------------------------------------------------------

    @property
    def _epoch_key(self) -> str:
        return f"{self.namespace}:v"

    def _year_token(self, scope: str, year: int) -> str:
        return f"{self.namespace}:v:{scope}:{year}"

    def _symbol_token(self, scope: str, year: int, symbol: str) -> str:
        return f"{self.namespace}:v:{scope}:{year}:{symbol}"

    def entry_key(self, scope: str, year: int, symbol: str) -> str:
        return f"{self.namespace}:{scope}:{year}:{symbol}"

    # -- state ----------------------------------------------------------------

    def is_hot(self, symbol: str) -> bool:
        return self.hot_symbols is None or symbol in self.hot_symbols

    def _add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _trip(self, exc: BaseException, *, force: bool = False) -> None:
        """Count a Redis failure; a connection failure (or, with ``force``, any failure) opens the breaker."""
        self._add("errors")
        if force or isinstance(exc, self._down):
            with self._lock:
                self._open_until = time.monotonic() + self.retry_after

    @property
    def _dirty(self) -> bool:
        return self._missed != self._flushed

    def _ready(self) -> bool:
        """True when Redis may be used now: the breaker is closed and no invalidation is outstanding (a dirty
        cache first retires the whole namespace by deleting its epoch)."""
        if time.monotonic() < self._open_until:
            return False
        try:
            if self._dirty:
                pending = self._missed  # an invalidation missed during the flush keeps the cache dirty
                self._redis.delete(self._epoch_key)
                with self._lock:
                    self._flushed = max(self._flushed, pending)
                self._add("flushes")
            if self._server is None:
                try:
                    info = self._redis.info("stats")
                    self._server = {k: [int(info.get(k, 0)), 0] for k in ("evicted_keys", "expired_keys")}
                except self._refused:  # INFO renamed away (a managed Redis): no server counters, still a cache
                    self._server = {}
        except self._failure as exc:
            self._trip(exc, force=True)
            return False
        return True

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._open_until and not self._dirty

    # -- reads ----------------------------------------------------------------

    def fetch(self, scope: str, symbols: Sequence[str], years: Sequence[int]
              ) -> tuple[dict[Entry, pl.DataFrame], dict[Entry, bytes]] | None:
        """The valid entries among ``symbols`` x ``years`` and the tag of every pair (to store misses under),
        or None when Redis cannot be used now (the caller reads the store)."""
        if not self._ready():
            self._add("bypasses")
            return None
        pairs = [(s, y) for s in symbols for y in years]
        token_keys = [self._epoch_key, *(self._year_token(scope, y) for y in years),
                      *(self._symbol_token(scope, y, s) for s, y in pairs)]
        fresh = [secrets.token_hex(_TOKEN_BYTES).encode() for _ in token_keys]
        entry_keys = [self.entry_key(scope, y, s) for s, y in pairs]
        try:
            out = self._fetch_script(keys=[*token_keys, *entry_keys],
                                     args=[len(token_keys), 2 * self.ttl_ms, *fresh])
        except self._failure as exc:
            self._trip(exc)
            self._add("bypasses")
            return None
        tokens = out[:len(token_keys)]
        epoch, year_tokens = tokens[0], dict(zip(years, tokens[1:1 + len(years)], strict=True))
        symbol_tokens = tokens[1 + len(years):]
        values = out[len(token_keys):]
        hits: dict[Entry, pl.DataFrame] = {}
        tags: dict[Entry, bytes] = {}
        stale = 0
        for (s, y), symbol_token, value in zip(pairs, symbol_tokens, values, strict=True):
            tag = _FORMAT + epoch + year_tokens[y] + symbol_token
            tags[s, y] = tag
            if value is None:
                continue
            if value.startswith(tag):
                try:
                    hits[s, y] = pl.read_ipc_stream(io.BytesIO(value[len(tag):]))
                    continue
                except Exception:  # an unreadable entry is a miss
                    pass
            stale += 1
        self._add("hits", len(hits))
        self._add("misses", len(pairs) - len(hits))
        self._add("stale", stale)
        return hits, tags

    def fill(self, scope: str, frames: dict[Entry, pl.DataFrame], tags: dict[Entry, bytes]) -> None:
        """Store the symbol-years read from the store under the tags taken before that read."""
        if not frames or time.monotonic() < self._open_until:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            stored = too_large = 0
            for (s, y), frame in frames.items():
                buf = io.BytesIO()
                frame.write_ipc_stream(buf, compression=self.compression)
                value = tags[s, y] + buf.getvalue()
                if len(value) > self.max_bytes_per_entry:
                    too_large += 1
                    continue
                pipe.set(self.entry_key(scope, y, s), value, px=self.ttl_ms)
                # the tokens must outlive the entry, or it turns into a miss early
                pipe.pexpire(self._year_token(scope, y), 2 * self.ttl_ms)
                pipe.pexpire(self._symbol_token(scope, y, s), 2 * self.ttl_ms)
                stored += 1
            if stored:
                pipe.execute()
        except self._failure as exc:
            self._trip(exc)
            return
        self._add("sets", stored)
        self._add("too_large", too_large)

    # -- invalidation ---------------------------------------------------------

    def invalidate(self, targets: Iterable[tuple[str, int, str | None]]) -> None:
        """Retire entries: each target is (scope, year, symbol) or (scope, year, None) for every symbol of that
        year. Never raises; when Redis cannot take it the cache is marked dirty (see the module docstring)."""
        keys: set[str] = set()
        for scope, year, symbol in targets:
            if symbol is None:
                keys.add(self._year_token(scope, year))
            else:
                keys.update((self._symbol_token(scope, year, symbol), self.entry_key(scope, year, symbol)))
        if not keys:
            return
        self._retire(sorted(keys))

    def invalidate_all(self) -> None:
        """Retire every entry of the namespace (one command: the epoch is deleted)."""
        self._retire([self._epoch_key])

    def _retire(self, keys: list[str]) -> None:
        if time.monotonic() < self._open_until:
            self._miss_invalidation()
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for i in range(0, len(keys), _CHUNK):
                pipe.unlink(*keys[i:i + _CHUNK])
            pipe.execute()
        except self._failure as exc:
            self._miss_invalidation()
            self._trip(exc, force=True)
            return
        self._add("invalidations")

    def _miss_invalidation(self) -> None:
        with self._lock:
            self._missed += 1
            self._counts["missed_invalidations"] += 1

    # -- report ---------------------------------------------------------------

    def record_reads(self, hits: int, misses: int) -> None:
        """Add a read's entry hits and misses to the namespace's counters in Redis (``{namespace}:stats``), so a
        health check in another process measures this cache's own hit rate, not the server's keyspace."""
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hincrby(f"{self.namespace}:stats", "hits", hits)
            pipe.hincrby(f"{self.namespace}:stats", "misses", misses)
            pipe.execute()
        except self._failure as exc:
            self._trip(exc)

    def stats(self) -> dict[str, int | float]:
        """Counters since this cache was made, for materialisation metadata (see the module docstring)."""
        if self._server is not None and time.monotonic() >= self._open_until:
            try:
                info = self._redis.info("stats")
            except self._failure as exc:
                self._trip(exc)
            else:
                for name, seen in self._server.items():
                    now = int(info.get(name, 0))
                    seen[1] += now - seen[0] if now >= seen[0] else now  # a smaller counter: Redis restarted
                    seen[0] = now
        with self._lock:
            out: dict[str, int | float] = dict(self._counts)
        looked = out["hits"] + out["misses"]
        out["hit_rate"] = out["hits"] / looked if looked else 0.0
        for name in ("evicted_keys", "expired_keys"):
            out[name] = (self._server or {}).get(name, [0, 0])[1]
        out["available"] = int(self.available)
        return out


class CachedStore:
    """``store`` with bar and feature reads of hot symbols served by ``cache``; every other attribute is the
    store's own."""

    def __init__(self, store, cache: HotCache) -> None:
        self.store = store
        self.cache = cache

    def __repr__(self) -> str:
        return f"CachedStore({self.store!r}, {self.cache!r})"

    def __getattr__(self, name: str):
        if name in ("store", "cache") or name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(self.store, name)
        if name in GENERIC_WRITERS and callable(attr):
            def write(table: str, *args, **kwargs):
                try:
                    return attr(table, *args, **kwargs)
                finally:
                    if table in FEATURE_TABLES or table in {f"market.{t}" for t in BAR_TABLES}:
                        self.cache.invalidate_all()
            return write
        return attr

    # -- reads ----------------------------------------------------------------

    def read_bars(self, table: str, *, symbols: Sequence[str] | None = None, start: datetime | None = None,
                  end: datetime | None = None) -> pl.DataFrame:
        """As the store's ``read_bars``: bars of ``table`` in [start, end), sorted by (symbol, ts)."""
        def direct(syms: Sequence[str] | None, lo: datetime | None, hi: datetime | None) -> pl.DataFrame:
            return self.store.read_bars(table, symbols=syms, start=lo, end=hi)

        if table not in BAR_TABLES:
            return direct(symbols, start, end)  # the store's own error
        return self._read(f"bars:{table}", direct, symbols, start, end)

    def read_features(self, table: str, dataset: str, *, symbols: Sequence[str] | None = None,
                      start: datetime | None = None, end: datetime | None = None) -> pl.DataFrame:
        """Every column of the feature table ``table`` (``sensory.fused``, ...) for ``dataset`` in [start, end),
        sorted by (symbol, ts): the same rows as a plain SELECT through the store's ``query``."""
        if not _TABLE.match(table):
            raise EmpError(f"not a table name: {table!r}")

        def direct(syms: Sequence[str] | None, lo: datetime | None, hi: datetime | None) -> pl.DataFrame:
            return read_features(self.store, table, dataset, symbols=syms, start=lo, end=hi)

        if ":" in dataset:
            return direct(symbols, start, end)
        return self._read(f"features:{table}:{dataset}", direct, symbols, start, end)

    def _read(self, scope: str, direct, symbols, start, end) -> pl.DataFrame:
        years = _years(start, end, self.cache.max_years)
        hot = [] if symbols is None else sorted({s for s in symbols if self.cache.is_hot(s)})
        if years is None or not hot or getattr(self.store, "reason", None):  # failed over: not the primary's rows
            self.cache._add("passthroughs")
            return direct(symbols, start, end)
        self.cache._add("reads")
        got = self.cache.fetch(scope, hot, years)
        if got is None:
            return direct(symbols, start, end)
        hits, tags = got
        missing = [k for k in tags if k not in hits]
        self.cache.record_reads(len(hits), len(missing))
        fetched: dict[Entry, pl.DataFrame] = {}
        if missing:
            lo, hi = min(y for _, y in missing), max(y for _, y in missing)
            fresh = direct(sorted({s for s, _ in missing}), datetime(lo, 1, 1), datetime(hi + 1, 1, 1))
            fetched = _by_symbol_year(fresh, missing)
            self.cache.fill(scope, fetched, tags)
        parts = [hits[k] if k in hits else fetched[k] for k in tags]  # tags: symbol-major, years ascending
        cold = sorted({s for s in symbols if not self.cache.is_hot(s)})
        if cold:
            parts.append(direct(cold, start, end))
        try:
            frame = pl.concat(parts, how="vertical")
        except pl.exceptions.PolarsError:  # the table's columns changed under the cached entries
            self.cache.invalidate((scope, y, s) for s in hot for y in years)
            return direct(symbols, start, end)
        frame = frame.filter((pl.col("ts") >= _bound(frame, start)) & (pl.col("ts") < _bound(frame, end)))
        return frame.sort(["symbol", "ts"], maintain_order=True) if cold else frame

    # -- writers --------------------------------------------------------------

    def replace_bars(self, table: str, bars: pl.DataFrame, *, source: str, run_id: str,
                     window: tuple[datetime, datetime] | None, quarantine: pl.DataFrame, journal: pl.DataFrame,
                     selection: Sequence[str] | None = None) -> None:
        """The store's ``replace_bars``, then the entries it may have changed are retired."""
        try:
            return self.store.replace_bars(table, bars, source=source, run_id=run_id, window=window,
                                           quarantine=quarantine, journal=journal, selection=selection)
        finally:
            self._after_write(lambda: _replaced_bars(table, bars, window, selection))

    def upsert_bars(self, table: str, bars: pl.DataFrame, *, source: str, run_id: str) -> int:
        """The store's ``upsert_bars``, then the symbol-years of ``bars`` are retired."""
        try:
            return self.store.upsert_bars(table, bars, source=source, run_id=run_id)
        finally:
            self._after_write(lambda: _row_targets(f"bars:{table}", bars))

    def replace_windows(self, tables: dict[str, pl.DataFrame], *, dataset: str, start: datetime,
                        end: datetime) -> None:
        """The store's ``replace_windows``, then every symbol of the window's years is retired per table."""
        try:
            return self.store.replace_windows(tables, dataset=dataset, start=start, end=end)
        finally:
            self._after_write(lambda: _replaced_windows(tables, dataset, start, end))

    def _after_write(self, targets) -> None:
        try:
            plan = list(targets())
        except Exception:  # a frame we cannot read the years of: retire everything rather than guess
            self.cache.invalidate_all()
            return
        self.cache.invalidate(plan)


def read_features(store, table: str, dataset: str, *, symbols: Sequence[str] | None = None,
                  start: datetime | None = None, end: datetime | None = None) -> pl.DataFrame:
    """The uncached feature read: one SELECT per symbol through ``store.query`` (``$name`` parameters, SQL
    both stores run), concatenated in symbol order; without a symbol list one SELECT of every symbol."""
    if not _TABLE.match(table):
        raise EmpError(f"not a table name: {table!r}")
    clauses, params = time_window(start, end)
    clauses, params = ["dataset = $dataset", *clauses], {"dataset": dataset, **params}
    if symbols is None:
        return store.query(f"SELECT * FROM {table} WHERE {' AND '.join(clauses)} ORDER BY symbol, ts", params)
    sql = f"SELECT * FROM {table} WHERE {' AND '.join(clauses)} AND symbol = $symbol ORDER BY ts"
    parts = [store.query(sql, {**params, "symbol": s}) for s in sorted(set(symbols))]
    if not parts:
        return store.query(f"SELECT * FROM {table} WHERE false", {})
    non_empty = [p for p in parts if p.height] or parts[:1]
    return pl.concat(non_empty, how="vertical_relaxed")


def _naive_utc(t: datetime) -> datetime:
    return t if t.tzinfo is None else t.astimezone(UTC).replace(tzinfo=None)


def _years(start: datetime | None, end: datetime | None, max_years: int) -> list[int] | None:
    """The calendar years [start, end) touches, or None when the read cannot be served from entries."""
    if not (isinstance(start, datetime) and isinstance(end, datetime)) or start.tzinfo or end.tzinfo:
        return None
    if end <= start:
        return None
    last = (end - timedelta(microseconds=1)).year
    if last - start.year + 1 > max_years or last >= 9999:
        return None
    return list(range(start.year, last + 1))


def _span(lo: datetime, hi: datetime) -> range:
    """The years of [lo, hi) (inclusive of lo, exclusive of hi); empty when hi <= lo."""
    lo, hi = _naive_utc(lo), _naive_utc(hi)
    return range(lo.year, (hi - timedelta(microseconds=1)).year + 1) if hi > lo else range(0)


def _utc_ts(frame: pl.DataFrame) -> pl.Expr:
    ts = pl.col("ts")
    zone = getattr(frame.schema["ts"], "time_zone", None)
    return ts.dt.convert_time_zone("UTC") if zone else ts


def _bound(frame: pl.DataFrame, t: datetime) -> pl.Expr:
    """A naive (UTC) bound comparable with the frame's ``ts``, which may carry a time zone."""
    zone = getattr(frame.schema["ts"], "time_zone", None)
    return pl.lit(t).dt.replace_time_zone("UTC").dt.convert_time_zone(zone) if zone else pl.lit(t)


def _by_symbol_year(frame: pl.DataFrame, wanted: Iterable[Entry]) -> dict[Entry, pl.DataFrame]:
    """``frame`` split into its (symbol, year) parts; a wanted pair without rows gets an empty frame."""
    keyed = frame.with_columns(_utc_ts(frame).dt.year().alias("__year"))
    parts = {(s, int(y)): part.drop("__year")
             for (s, y), part in keyed.partition_by(["symbol", "__year"], as_dict=True, maintain_order=True).items()}
    return {k: parts.get(k, frame.clear()) for k in wanted}


def _row_targets(scope: str, rows: pl.DataFrame) -> list[tuple[str, int, str | None]]:
    """(scope, year, symbol) of every row of ``rows`` (columns symbol and ts)."""
    if not rows.height:
        return []
    pairs = rows.select(pl.col("symbol"), _utc_ts(rows).dt.year().alias("year")).unique()
    return [(scope, int(y), s) for s, y in pairs.iter_rows()]


def _replaced_bars(table: str, bars: pl.DataFrame, window: tuple[datetime, datetime] | None,
                   selection: Sequence[str] | None) -> list[tuple[str, int, str | None]]:
    """What ``replace_bars`` can change: with a window, its years for every symbol (no selection: the rows of
    the source of any symbol are deleted) or for the named symbols; without one, each symbol's years from its
    first to its last bar (the store deletes that whole range); and the years of the inserted rows."""
    scope = f"bars:{table}"
    targets = _row_targets(scope, bars)
    if window is not None:
        years = _span(*window)
        if selection is None:
            targets += [(scope, y, None) for y in years]
        else:
            names = set(selection) | set(bars.get_column("symbol").unique().to_list())
            targets += [(scope, y, s) for s in names for y in years]
    elif bars.height:
        ranges = bars.group_by("symbol").agg(_utc_ts(bars).dt.year().min().alias("lo"),
                                             _utc_ts(bars).dt.year().max().alias("hi"))
        targets += [(scope, y, s) for s, lo, hi in ranges.iter_rows() for y in range(lo, hi + 1)]
    return targets


def _replaced_windows(tables: dict[str, pl.DataFrame], dataset: str, start: datetime,
                      end: datetime) -> list[tuple[str, int, str | None]]:
    """What ``replace_windows`` can change: every symbol of the window's years of ``dataset`` in each table,
    and the symbol-years of the inserted rows under the dataset each row names."""
    targets: list[tuple[str, int, str | None]] = []
    for table, frame in tables.items():
        targets += [(f"features:{table}:{dataset}", y, None) for y in _span(start, end)]
        if frame.height and "dataset" in frame.columns:
            for (name,), part in frame.partition_by("dataset", as_dict=True).items():
                targets += _row_targets(f"features:{table}:{name}", part)
    return targets


def namespace_reads(url: str, namespace: str) -> tuple[int, int]:
    """(hits, misses) of entries read through every cache of ``namespace`` (the counters :meth:`HotCache.
    record_reads` keeps in Redis)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    counts = client.hgetall(f"{namespace}:stats")
    return int(counts.get(b"hits", 0)), int(counts.get(b"misses", 0))
