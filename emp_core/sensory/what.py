"""WHAT: price pattern (trend and breakout), signed.

Components (per symbol and bar t, windows in bars):

- ``what_trend_{h}`` for h in 21, 63, 126: risk-adjusted momentum
  ln(C_t / C_{t-h}) / (sigma_t sqrt(h)), sigma_t the standard deviation of the
  last 63 log returns: the h-bar move in units of its own noise, a t-statistic
  of drift (Moskowitz, Ooi and Pedersen 2012 scale momentum by volatility).
- ``what_breakout``: position of C_t in the Donchian channel of the previous 20
  bars (t excluded): (C_t - mid) / half-width with mid = (max H + min L) / 2 and
  half-width = (max H - min L) / 2. In [-1, 1] inside the range; beyond +-1 is a
  breakout; clipped to [-2, 2].

Evidence: 0.6 mean(trend_h) + 0.4 breakout, divided by the sum of |weights| of the
components present, defined once at least one trend horizon is (a breakout is read
against the trend); score tanh(evidence); confidence = share of the weight present.

A mean-reversion term is *not* part of the score. The stretch from the 20-bar mean
(Bollinger's %b, centred) entered it with weight -0.2 until a review measured its
correlation with the breakout at 0.96 on the shipped data: the two read the same
place in the same 20 bars, so 0.3 breakout - 0.2 stretch netted to about 0.1 of one
factor. Keeping one of them keeps the scale; the breakout stays because it is what
the trend confirms. Mean reversion is still within reach: a genome's fusion weight
on WHAT runs from -1 to 1, so it can fade the whole dimension. A constant price has no defined trend
(zero volatility): null, confidence 0. No component reads the last bar's
direction alone.
"""

from __future__ import annotations

import polars as pl

from emp_core.sensory.base import RET, Context, lag, ordered_mean, ratio, score_and_confidence, trailing, weighted_mean

HORIZONS = (21, 63, 126)
VOL_WINDOW = 63
RANGE_WINDOW = 20
WEIGHTS = {"trend": 0.6, "breakout": 0.4}

COMPONENTS = (*(f"what_trend_{h}" for h in HORIZONS), "what_breakout")


def stages(ctx: Context) -> list[list[pl.Expr]]:
    close = pl.col("close")
    windows = [
        trailing(pl.col(RET), VOL_WINDOW, "std").alias("_what_sigma"),
        trailing(pl.col("high"), RANGE_WINDOW, "max", exclude_current=True).alias("_what_hi"),
        trailing(pl.col("low"), RANGE_WINDOW, "min", exclude_current=True).alias("_what_lo"),
    ]
    hi, lo = pl.col("_what_hi"), pl.col("_what_lo")
    components = [
        *[ratio(close.log() - lag(close, h).log(), pl.col("_what_sigma") * (h**0.5)).alias(f"what_trend_{h}")
          for h in HORIZONS],
        ratio(close - (hi + lo) / 2.0, (hi - lo) / 2.0).clip(-2.0, 2.0).alias("what_breakout"),
    ]
    trend = ordered_mean([pl.col(f"what_trend_{h}") for h in HORIZONS])
    evidence, coverage = weighted_mean([
        (WEIGHTS["trend"], trend),
        (WEIGHTS["breakout"], pl.col("what_breakout")),
    ])
    # A breakout is read against the trend: without one it says little.
    evidence = pl.when(trend.is_not_null()).then(evidence)
    return [windows, components, *score_and_confidence("what", evidence, coverage)]
