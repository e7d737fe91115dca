"""Yahoo Finance daily/hourly bars through the public v8 chart API.

``parse_chart_response`` is the whole of the parsing: it turns one chart JSON
payload into bars and is tested on a recorded payload (no network in tests).
Daily bars are stamped with the exchange-local session date; prices are
adjusted by ``adjclose / close`` when the payload carries adjusted closes, the
same convention as the shipped data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from emp_core.errors import EmpError
from emp_core.market_data.sources.base import Coverage, empty_coverage

CHART_URL = "https://query2.finance.yahoo.com/v8/finance/chart/{symbol}"
YAHOO_INTERVALS = {"1d": "1d", "1h": "60m"}


class YahooError(EmpError):
    pass


def parse_chart_response(payload: dict | str | bytes, symbol: str, *, interval: str = "1d",
                         adjust: bool = True) -> pl.DataFrame:
    """Bars (canonical columns, ts naive UTC or session date) from one chart payload."""
    if isinstance(payload, str | bytes):
        try:
            payload = json.loads(payload)
        except ValueError as exc:
            raise YahooError(f"yahoo {symbol}: response is not JSON ({exc})") from None
    chart = payload.get("chart") if isinstance(payload, dict) else None
    if not isinstance(chart, dict):
        raise YahooError(f"yahoo {symbol}: response has no 'chart' object")
    if chart.get("error"):
        err = chart["error"]
        raise YahooError(f"yahoo {symbol}: {err.get('code', 'error')}: {err.get('description', '')}".rstrip(": "))
    results = chart.get("result") or []
    if not results:
        raise YahooError(f"yahoo {symbol}: response has no result")
    result = results[0]
    stamps = result.get("timestamp") or []
    quote = ((result.get("indicators") or {}).get("quote") or [{}])[0]
    n = len(stamps)

    def column(values: list | None) -> pl.Series:
        values = values if values is not None else [None] * n
        if len(values) != n:
            raise YahooError(f"yahoo {symbol}: indicator arrays and timestamps differ in length")
        return pl.Series(values, dtype=pl.Float64, strict=False)

    meta = result.get("meta") or {}
    tz = meta.get("exchangeTimezoneName") or "UTC"
    ts = pl.from_epoch(pl.Series("ts", stamps, dtype=pl.Int64), time_unit="s").dt.replace_time_zone("UTC")
    if interval == "1d":
        ts = ts.dt.convert_time_zone(tz).dt.replace_time_zone(None).dt.truncate("1d")
    else:
        ts = ts.dt.replace_time_zone(None)
    frame = pl.DataFrame({
        "symbol": [symbol] * n,
        "ts": ts.cast(pl.Datetime("us")),
        **{c: column(quote.get(c)) for c in ("open", "high", "low", "close", "volume")},
    })
    adj = ((result.get("indicators") or {}).get("adjclose") or [{}])[0].get("adjclose")
    if adjust and adj is not None:
        factor = column(adj) / frame.get_column("close")
        frame = frame.with_columns([(pl.col(c) * factor).alias(c) for c in ("open", "high", "low", "close")])
    return frame


@dataclass(frozen=True)
class YahooSource:
    symbols_default: tuple[str, ...] = ()
    interval: str = "1d"
    timeout: float = 20.0
    name: str = "yahoo"

    def fetch(self, symbol: str, start: datetime, end: datetime) -> dict:
        import requests

        params = {
            "period1": int(start.replace(tzinfo=UTC).timestamp()),
            "period2": int(end.replace(tzinfo=UTC).timestamp()),
            "interval": YAHOO_INTERVALS[self.interval],
            "events": "div,splits",
            "includeAdjustedClose": "true",
        }
        try:
            resp = requests.get(CHART_URL.format(symbol=symbol), params=params, timeout=self.timeout,
                                headers={"User-Agent": "Mozilla/5.0 (emp-predator)"})
        except requests.RequestException as exc:
            raise YahooError(f"yahoo {symbol}: cannot reach Yahoo Finance ({type(exc).__name__}); "
                             "is there a network here?") from None
        if resp.status_code == 404:
            raise YahooError(f"yahoo {symbol}: symbol not found")
        if resp.status_code != 200:
            raise YahooError(f"yahoo {symbol}: HTTP {resp.status_code}")
        return resp.json()

    def read(
        self, dataset: str, start: datetime | None, end: datetime | None, symbols: Sequence[str] | None
    ) -> pl.DataFrame:
        if start is None or end is None:
            raise YahooError("yahoo: a start and an end date are required")
        wanted = list(symbols or self.symbols_default)
        if not wanted:
            raise YahooError("yahoo: name at least one symbol")
        frames = [parse_chart_response(self.fetch(s, start, end), s, interval=self.interval) for s in wanted]
        return pl.concat(frames)

    def coverage(self, dataset: str, symbols: Sequence[str] | None) -> Coverage:
        return empty_coverage()

    def describe(self) -> str:
        return CHART_URL.format(symbol="<symbol>")
