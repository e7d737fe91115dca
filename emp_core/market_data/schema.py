"""The bar schema and the column names users' files may use for it."""

from __future__ import annotations

import polars as pl

BAR_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
NUMERIC_COLUMNS = (*PRICE_COLUMNS, "volume")
REQUIRED_FILE_COLUMNS = ("ts", "open", "high", "low", "close", "volume")
# Optional top-of-book columns: kept through validation when a file has them (the sensory HOW
# dimension then uses the quoted spread and book imbalance); the bar tables do not store them.
QUOTE_COLUMNS = ("bid", "ask", "bid_size", "ask_size")

BAR_SCHEMA = pl.Schema({
    "symbol": pl.String,
    "ts": pl.Datetime("us"),
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
})

# Lower-cased, stripped header -> canonical column. Anything else is ignored
# (e.g. "Adj Close"), so a renamed required column is reported as missing.
ALIASES = {
    "symbol": "symbol", "ticker": "symbol", "sym": "symbol", "instrument": "symbol",
    "ts": "ts", "date": "ts", "datetime": "ts", "time": "ts", "timestamp": "ts", "date_time": "ts",
    "open": "open", "o": "open",
    "high": "high", "h": "high",
    "low": "low", "l": "low",
    "close": "close", "c": "close",
    "volume": "volume", "vol": "volume", "v": "volume",
    "bid": "bid", "ask": "ask", "bid_size": "bid_size", "bidsize": "bid_size", "ask_size": "ask_size",
    "asksize": "ask_size",
}


def canonical_name(header: str) -> str | None:
    return ALIASES.get(header.strip().lower().replace(" ", "_"))

