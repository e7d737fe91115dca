"""WHAT: price pattern (trend, momentum, breakout, mean reversion), signed.

Components (per symbol and bar t, windows in bars):

- ``what_trend_{h}`` for h in 21, 63, 126: risk-adjusted momentum
  ln(C_t / C_{t-h}) / (sigma_t sqrt(h)), sigma_t the standard deviation of the
  last 63 log returns: the h-bar move in units of its own noise, a t-statistic
  of drift (Moskowitz, Ooi and Pedersen 2012 scale momentum by volatility).
- ``what_breakout``: position of C_t in the Donchian channel of the previous 20
  bars (t excluded): (C_t - mid) / half-width with mid = (max H + min L) / 2 and
  half-width = (max H - min L) / 2. In [-1, 1] inside the range; beyond +-1 is a
  breakout; clipped to [-2, 2].
- ``what_reversion``: (C_t - SMA_20) / SD_20 of closes, the stretch from the
  20-bar mean (Bollinger 2001 %b, centred). Enters the score with a negative
  sign: a stretched price is expected to revert.

Evidence: 0.5 mean(trend_h) + 0.3 breakout - 0.2 reversion, divided by the sum of
|weights| of the components present, defined once at least one trend horizon is
(breakout and stretch are read against the trend); score tanh(evidence);
confidence = share of the weight present. A constant price has no defined trend
(zero volatility): null, confidence 0. No component reads the last bar's
direction alone.
"""

from __future__ import annotations

import polars as pl

from emp_core.sensory.base import RET, Context, lag, ratio, score_and_confidence, trailing, weighted_mean

HORIZONS = (21, 63, 126)
VOL_WINDOW = 63
RANGE_WINDOW = 20
MEAN_WINDOW = 20
WEIGHTS = {"trend": 0.5, "breakout": 0.3, "reversion": -0.2}

COMPONENTS = (*(f"what_trend_{h}" for h in HORIZONS), "what_breakout", "what_reversion")


def stages(ctx: Context) -> list[list[pl.Expr]]:
    close = pl.col("close")
    windows = [
        trailing(pl.col(RET), VOL_WINDOW, "std").alias("_what_sigma"),
        trailing(pl.col("high"), RANGE_WINDOW, "max", exclude_current=True).alias("_what_hi"),
        trailing(pl.col("low"), RANGE_WINDOW, "min", exclude_current=True).alias("_what_lo"),
        trailing(close, MEAN_WINDOW, "mean").alias("_what_sma"),
        trailing(close, MEAN_WINDOW, "std").alias("_what_sd"),
    ]
    hi, lo = pl.col("_what_hi"), pl.col("_what_lo")
    components = [
        *[ratio(close.log() - lag(close, h).log(), pl.col("_what_sigma") * (h**0.5)).alias(f"what_trend_{h}")
          for h in HORIZONS],
        ratio(close - (hi + lo) / 2.0, (hi - lo) / 2.0).clip(-2.0, 2.0).alias("what_breakout"),
        ratio(close - pl.col("_what_sma"), pl.col("_what_sd")).alias("what_reversion"),
    ]
    trend = pl.mean_horizontal([pl.col(f"what_trend_{h}") for h in HORIZONS])
    evidence, coverage = weighted_mean([
        (WEIGHTS["trend"], trend),
        (WEIGHTS["breakout"], pl.col("what_breakout")),
        (WEIGHTS["reversion"], pl.col("what_reversion")),
    ])
    # Breakout and stretch are read against the trend: without one they say little
    # (alone, the reversion term would call every young uptrend a sell).
    evidence = pl.when(trend.is_not_null()).then(evidence)
    return [windows, components, *score_and_confidence("what", evidence, coverage)]
