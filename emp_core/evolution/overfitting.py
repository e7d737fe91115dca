"""Overfitting gates: the statistical design of champion promotion, and the statistics it uses.

The design
==========
The champion is the genome chosen in the last walk-forward window (``walkforward``). It is
promoted only when all three pieces of evidence below hold (``promotion.decide``); each
figure and its inputs are stored with the decision (``evolution.decisions``).

1. **Deflated Sharpe ratio of the champion**: evidence about *the promoted genome itself*.
   H0: its true Sharpe ratio is no higher than the best that the search's trials reach by
   luck. Its per-bar returns over the *evidence span* (every bar before its test year, the
   history it could have been fitted to; T bars, skewness g3, kurtosis g4) give
   DSR = PSR(SR0) (Bailey and Lopez de Prado 2014), promoted at DSR >= 0.95, T again the
   effective number of bars under autocorrelation. SR0 is the
   expected maximum Sharpe ratio under H0 of the *trials*: every distinct genome the trial
   registry holds for the dataset, from every run, window and seed (``registry``),
   re-evaluated over the same span; genomes with too few trades to be selected there count
   in N but lend no luck. The paper's closed form (below) needs N *independent* trials with
   Sharpe variance V; a genetic search evaluates thousands of correlated near-copies, so
   "correlated trials must not inflate N". SR0 is therefore estimated for the trials as
   they are, by a stationary bootstrap of their demeaned returns (White 2000's Reality
   Check null, Politis and Romano 1994; ``snooping``), and reported with V (the null
   variance of one trial's Sharpe ratio, ~1/T) and N_eff, the number of independent trials
   the closed form needs to give that SR0: the effective number of trials of Lopez de Prado
   (2019), measured by its consequence. The DSR is the stricter of two readings of the same
   resamples: it asks the champion's Sharpe ratio to clear the *mean* of the luck maxima
   by its own standard error, where White's Reality Check p-value (reported beside it)
   asks only that it beat their 95th percentile; a champion that is merely the best of 240
   null trials never reaches DSR 0.95. Two other estimators were tried first and measured
   on planted-edge universes:
   - V as the paper's cross-sectional variance of the trials' Sharpe ratios counts true
     differences between trials as luck: genomes that fade a real edge lose as surely as
     the followers win, so SR0 lands near the best trial's Sharpe ratio. With the nominal
     N, this closed form passed none of the 140 benchmark runs, not one of the 20 at
     planted Sharpe 4 (the column "DSR(V,N)").
   - N_eff as the number of ONC clusters of the trials' returns (Lopez de Prado and Lewis
     2019) found 2 to 4 clusters among 1,130 trials on noise (silhouettes favour coarse
     splits of a continuum of genomes), and the DSR alone passed 1 to 2 of 6 noise universes.
2. **PSR of the out-of-sample walk-forward track**: evidence about *the procedure*.
   H0: the track's true Sharpe ratio is <= 0. The track is every window's choice over its
   own test year, concatenated: each year traded by a genome chosen before it. Within one
   run no selection touches it, so no deflation applies; across runs it is chosen among
   runs like any figure, which the registry's N (reported beside it) lets a reader weigh.
   Promoted at PSR(0) >= 0.95, with T the effective number of bars under the track's
   autocorrelation (``effective_bars``; with plain T, AR(1) returns at rho = 0.2 pass
   about twice as often as they should). Only its last year is the champion's own
   out-of-sample record.
3. **PBO of the champion window's search**: evidence about *the procedure's selection*.
   CSCV (below) over the evidence-span returns of the distinct genomes trained in the
   champion's window: how often the in-sample best lands at or below the out-of-sample
   median. Promoted at PBO <= 0.2.

Size and power, measured by ``benchmarks/bench_gates.py`` (10 symbols x 10 years of daily
bars, population 40, 5 generations, 20 seeds per strength; the README has the table):
promotion 0/20 on pure noise and at strengths 0 to 1, 60% at planted Sharpe 2, 90% at 3, 100%
at 4; the DSR and the track's PSR each refused all 40 noise and zero-edge universes on their
own. What limits power below a planted Sharpe of 3 is SR0 itself (about 1.1 annualised for
~1,100 trials, ~650 effective, over nine years: the champion must clear it by 1.6 standard
errors, about 0.55 annualised) and, at 0.5 to 1, the track's six test years (the track's PSR
passed 30% of those).

Limits, stated: the null is a zero mean return, so a genome that is simply long a rising
market counts its drift (beta) as skill, in the DSR's resamples and in the track's PSR alike
(the planted universes have no drift, so the benchmark cannot see this); SR0 scaled from a
sample of the registry (N / m) is an upper bound, and a registry of near-copies in the tens
of thousands raises it (a referee measured 1.4 annualised for 100,000 random genomes over
nine years), so power falls as a dataset is searched more: that is the point of counting.
Both corrections for autocorrelation handle short memory only (Newey-West lags of about 8 at
T = 2,268; bootstrap blocks of 10 bars on average): a referee measured the DSR passing the best
of 200 null AR(1) trials in 0 of 50 runs at rho <= 0.5, 1 of 50 at 0.7 and 36% at 0.9. Daily
strategy returns rarely come near 0.7; a data-driven bandwidth (Andrews 1991, Politis and White
2004) shared by both would remove the limit.

The statistics
==============
- **PSR** (Bailey and Lopez de Prado 2012): the probability that the true Sharpe
  ratio exceeds a benchmark SR*, given T observations of per-period returns with
  skewness g3 and (non-excess) kurtosis g4:
  PSR(SR*) = Phi( (SR - SR*) sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2) ),
  SR the per-period (not annualised) Sharpe ratio.
- **DSR** (Bailey and Lopez de Prado 2014): PSR against the Sharpe ratio the best of
  N independent trials would reach by luck,
  SR0 = sqrt(V) ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e))),
  V the variance of the trials' Sharpe ratios, gamma the Euler-Mascheroni constant
  (``expected_max_sharpe``; ``deflated_sharpe`` is this closed form with the trials'
  cross-sectional variance, kept as the reference the bootstrap is measured against).
- **PBO** by combinatorially symmetric cross-validation (Bailey, Borwein, Lopez de
  Prado and Zhu 2017): split the T x N matrix of per-period returns of N
  configurations into S blocks of rows; for every choice of S/2 blocks as in-sample,
  take the configuration with the best in-sample Sharpe and its relative rank w among
  the out-of-sample Sharpe ratios of the configurations that trade in that split
  (rank / (N_s + 1), average ranks for ties; one constant in both halves never trades
  there and is left out, one constant in a single half has Sharpe 0 in it and takes
  part, so a lucky winner that goes flat out of sample counts); the logit l = ln(w / (1 - w));
  PBO = share of the splits with l <= 0, i.e. the in-sample winner is at or below the
  out-of-sample median. The conventions are detailed in the function's docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from statistics import NormalDist

import numpy as np

EULER_GAMMA = 0.5772156649015329
_N = NormalDist()


_RELATIVE_ZERO = 1e-12  # a standard deviation below this share of the largest |return| is zero variance
_CANCELLED = 1e-7  # sums of squares this much larger than the squared deviations leave too few digits


def no_spread(sd, largest):
    """Zero variance within rounding: a standard deviation at most 1e-12 of the largest |value| (either may be an
    array, one entry per series). A constant 0.003 leaves a standard deviation of ~4e-19 (its mean is not
    exact), whose Sharpe ratio of ~1e16 would pass any gate."""
    return sd <= _RELATIVE_ZERO * largest


def _moments(returns: np.ndarray) -> tuple[float, float, float, int]:
    r = np.asarray(returns, dtype=float)
    r = r[np.isfinite(r)]
    t = r.size
    if t < 3:
        raise ValueError(f"need at least 3 returns, got {t}")
    mean, std = r.mean(), r.std(ddof=1)
    if no_spread(std, np.abs(r).max()):
        raise ValueError("returns have zero variance: the Sharpe ratio is undefined")
    z = (r - mean) / r.std(ddof=0)
    return float(mean / std), float(np.mean(z**3)), float(np.mean(z**4)), t


def probabilistic_sharpe(returns: np.ndarray, benchmark: float = 0.0, *, serial: bool = False) -> float:
    """PSR of per-period ``returns`` against the per-period Sharpe ratio ``benchmark``; with ``serial``, T is
    the effective number of bars under the returns' autocorrelation (``effective_bars``)."""
    sr, g3, g4, t = _moments(returns)
    if serial:
        t = effective_bars(returns)
    denom = 1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr * sr
    return _N.cdf((sr - benchmark) * math.sqrt(max(t - 1, 1e-12)) / math.sqrt(max(denom, 1e-12)))


def effective_bars(returns: np.ndarray) -> float:
    """T over the long-run variance ratio: T / (1 + 2 sum_k (1 - k / (L + 1)) rho_k) for lags k = 1..L,
    L = floor(4 (T / 100)^(2/9)) (Bartlett weights, Newey and West 1987, 1994). The Sharpe ratio's
    standard error grows with positive autocorrelation (Lo 2002); negative autocorrelation is not
    allowed to shrink it (the ratio is at least 1), so the count is never above T."""
    r = np.asarray(returns, dtype=float)
    r = r[np.isfinite(r)]
    t = r.size
    lags = int(4 * (t / 100) ** (2 / 9))
    z = r - r.mean()
    var = float(z @ z)
    if lags < 1 or no_spread(math.sqrt(var / t), np.abs(r).max()):  # constant within rounding: nothing to correct
        return float(t)
    rho = np.array([float(z[k:] @ z[:-k]) / var for k in range(1, min(lags, t - 1) + 1)])
    weights = 1.0 - np.arange(1, rho.size + 1) / (lags + 1)
    return t / max(1.0, 1.0 + 2.0 * float(weights @ rho))


def expected_max_sharpe(sharpe_variance: float, trials: float) -> float:
    """SR0: the Sharpe ratio the best of ``trials`` independent unskilled trials reaches by luck (a real
    number of trials is allowed; one or fewer reach nothing beyond 0, and SR0 is never below 0)."""
    if trials <= 1:
        return 0.0
    z = ((1 - EULER_GAMMA) * _N.inv_cdf(1 - 1 / trials) + EULER_GAMMA * _N.inv_cdf(1 - 1 / (trials * math.e)))
    return math.sqrt(sharpe_variance) * max(z, 0.0)


def deflated_sharpe(returns: np.ndarray, trial_sharpes: np.ndarray, trials: int | None = None) -> float:
    """DSR of the chosen strategy's per-period ``returns`` given the per-period Sharpe ratios of every
    trial (their variance) and the number of trials (default: how many Sharpe ratios were given)."""
    trial_sharpes = np.asarray(trial_sharpes, dtype=float)
    n = trials if trials is not None else trial_sharpes.size
    variance = float(np.var(trial_sharpes, ddof=1)) if trial_sharpes.size > 1 else 0.0
    return probabilistic_sharpe(returns, expected_max_sharpe(variance, n))


@dataclass(frozen=True)
class PBOResult:
    pbo: float
    logits: np.ndarray  # one per used split (the mean over tied in-sample winners)
    splits: int  # splits used
    skipped: int  # splits with fewer than two rankable configurations


# Sharpe ratios closer than this (times max(1, |SR|)) are tied: the same strategy, or the same at another
# size, up to rounding.
_TIE = 1e-9


def probability_of_backtest_overfitting(returns: np.ndarray, blocks: int = 16) -> PBOResult:
    """PBO by CSCV of a (periods x configurations) matrix of per-period returns.

    Conventions, beyond the paper's definition:

    - **Blocks** are consecutive rows of near-equal sizes (``numpy.array_split``: when
      ``blocks`` does not divide the periods, the first blocks hold one row more). Every
      row is kept, and each half's Sharpe ratio uses the rows it really holds.
    - **Configurations that do not trade.** A half in which a configuration's returns are
      constant (it did not trade there, or held a fixed yield) has Sharpe ratio 0: no
      risk taken, no return earned for it. A configuration constant in *both* halves of
      a split never trades in that split and is left out of it: not a candidate
      in-sample, not ranked out of sample (counting it as the worst would push the
      winner's rank up and PBO down). One constant in a single half takes part: it can
      be the in-sample winner (when nothing beat 0 there), and out of sample it ties at
      0 with the others that did nothing there. Leaving out a configuration constant in
      *either* half would bias PBO low: the classic overfit, a configuration that is
      lucky in the few blocks it trades in and then goes flat, would be dropped from
      exactly the splits where it wins in-sample and is flat out of sample. (20 steady
      configurations with a mild edge beside 30 that trade in only 2 of 16 blocks, earning
      or losing there: PBO 0.07 to 0.25 that way, mostly under a 0.2 gate; 0.75 to 0.97
      with this rule, over 8 draws: tests/test_pbo.py.)
      A configuration with a non-finite return is left out of every split (each row is
      in one half or the other). The relative rank is w = rank / (N_s + 1), N_s the
      configurations left in the split. A split with fewer than two is skipped
      (``skipped``); ``pbo`` and ``logits`` are over the splits used (``splits``).
      ValueError when no split can be used.
    - **Ties** (Sharpe ratios within 1e-9 x max(1, |SR|)) take average ranks: the
      winner's rank is the mean of the positions its ties occupy among the N_s
      out-of-sample Sharpe ratios (1 = worst).
    - **Tied in-sample winners**: the selection among them is taken as uniformly random,
      so a split counts as overfit by the share of its tied winners with logit <= 0,
      and the split's logit is their mean logit. (With a single winner, as almost
      always, this is the paper's rule: PBO = share of splits with logit <= 0.)

    All C(blocks, blocks/2) splits are evaluated at once: per-block sums of (centred)
    returns and squared returns give every split's Sharpe ratios by matrix products,
    and per-block extremes tell which halves are constant. A half that is not constant
    but whose variance from those sums is lost to cancellation (at most a 1e-7 share of its
    sum of squares, or not positive: nearly riskless, far from the column's mean) is
    recomputed from its rows.
    """
    m = np.asarray(returns, dtype=float)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError("need a (periods x configurations) matrix with at least two configurations")
    if blocks % 2 or blocks < 2:
        raise ValueError(f"blocks must be even and >= 2, got {blocks}")
    periods = m.shape[0]
    if periods < 2 * blocks:
        raise ValueError(f"{periods} periods are too few for {blocks} blocks (two per block at least)")
    sr_in, sr_out, flat_in, flat_out = _split_sharpes(m, blocks)

    trades = ~(flat_in & flat_out)  # constant in both halves: never trades in the split
    counts = trades.sum(axis=1)
    used = counts >= 2
    if not used.any():
        raise ValueError("PBO is undefined: no split has two configurations with finite returns that trade in it "
                         "(not constant in both halves)")
    if not used.all():
        trades, counts, sr_in, sr_out = trades[used], counts[used], sr_in[used], sr_out[used]
    sr_in[~trades] = -np.inf
    sr_out[~trades] = np.nan  # never below, above or tied with anything
    first = sr_in.argmax(axis=1)
    best = sr_in[np.arange(len(first)), first][:, None]
    winners = sr_in >= best - _TIE * np.maximum(1, np.abs(best))
    logits = _winner_logits(sr_out, first, counts)
    overfit = (logits <= 0).astype(float)
    ties = winners.sum(axis=1)
    tied = np.flatnonzero(ties > 1)
    if tied.size:  # rare: duplicated (or rescaled) configurations, or several flat in-sample halves at the top
        order = np.argsort(~winners[tied], axis=1, kind="stable")  # each split's winners first
        total, below = np.zeros(tied.size), np.zeros(tied.size)
        for k in range(ties.max()):
            some = np.flatnonzero(ties[tied] > k)
            lk = _winner_logits(sr_out[tied[some]], order[some, k], counts[tied[some]])
            total[some] += lk
            below[some] += lk <= 0
        logits[tied], overfit[tied] = total / ties[tied], below / ties[tied]
    return PBOResult(pbo=float(overfit.mean()), logits=logits, splits=len(counts), skipped=len(used) - len(counts))


def _split_sharpes(m: np.ndarray, blocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(in-sample Sharpe, out-of-sample Sharpe, in-sample half constant, out-of-sample half constant), each
    (splits x configurations with finite returns), for every split of ``blocks`` blocks into halves
    (see :func:`probability_of_backtest_overfitting`: sums per block, constant halves exactly, a half whose
    variance is lost to cancellation in the sums recomputed from its rows); a constant half has Sharpe
    ratio 0."""
    periods = m.shape[0]
    chosen = np.array(list(combinations(range(blocks), blocks // 2)))
    mask = np.zeros((len(chosen), blocks), dtype=bool)
    mask[np.arange(len(chosen))[:, None], chosen] = True
    starts = np.array([part[0] for part in np.array_split(np.arange(periods), blocks)])
    sizes = np.diff(starts, append=periods)
    rows_in = (mask @ sizes)[:, None]

    # every row is in one half or the other: a non-finite return leaves its configuration out of every split
    m = m[:, np.isfinite(m).all(axis=0)]
    # centre each column on its mean so that the sums of squares lose little to cancellation
    centre = m.mean(axis=0)
    x = m - centre
    s1, s2 = np.add.reduceat(x, starts), np.add.reduceat(x * x, starts)  # (blocks, configurations)
    halves = mask.astype(float), (~mask).astype(float)
    sr_in = _sharpe_from_sums(halves[0] @ s1, halves[0] @ s2, rows_in, centre)
    sr_out = _sharpe_from_sums(halves[1] @ s1, halves[1] @ s2, periods - rows_in, centre)
    # constant halves, exactly: from the per-block extremes of the columns with a constant block
    flat_in, flat_out = np.zeros(sr_in.shape, dtype=bool), np.zeros(sr_out.shape, dtype=bool)
    hi, lo = np.maximum.reduceat(m, starts), np.minimum.reduceat(m, starts)
    flat = np.flatnonzero((hi == lo).any(axis=0))
    if flat.size:
        hi_in, hi_out = _split_reduce(mask, hi[:, flat], np.maximum, -np.inf)
        lo_in, lo_out = _split_reduce(mask, lo[:, flat], np.minimum, np.inf)
        flat_in[:, flat], flat_out[:, flat] = hi_in == lo_in, hi_out == lo_out
    sr_in[flat_in], sr_out[flat_out] = 0.0, 0.0  # did nothing there
    block_of_row = np.repeat(np.arange(blocks), sizes)
    _recompute_unresolved(sr_in, m, mask, block_of_row)
    _recompute_unresolved(sr_out, m, ~mask, block_of_row)

    return sr_in, sr_out, flat_in, flat_out


def _recompute_unresolved(sr: np.ndarray, m: np.ndarray, half: np.ndarray, block_of_row: np.ndarray) -> None:
    """Fill in place the NaN Sharpe ratios of (split, configuration) halves that are not constant but whose
    variance from the sums was lost to cancellation, from the rows of the half (``half``: splits x blocks)
    by two passes; a half whose variance is still zero within rounding counts as constant (Sharpe ratio 0)."""
    for split, column in np.argwhere(np.isnan(sr)):
        rows = m[half[split, block_of_row], column]
        sd = rows.std(ddof=1)
        sr[split, column] = 0.0 if no_spread(sd, np.abs(rows).max()) else rows.mean() / sd


def _winner_logits(oos: np.ndarray, at: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per split, the logit of the relative rank of configuration ``at`` among the ``counts`` non-NaN
    out-of-sample Sharpe ratios of its row, with average ranks for ties."""
    mine = oos[np.arange(len(at)), at][:, None]
    tol = _TIE * np.maximum(1, np.abs(mine))
    below = (oos < mine - tol).sum(axis=1)
    level = (oos <= mine + tol).sum(axis=1) - below  # the configuration and its ties
    w = (below + (level + 1) / 2) / (counts + 1)
    return np.log(w / (1 - w))


def _sharpe_from_sums(s1: np.ndarray, s2: np.ndarray, n: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Sharpe ratios of halves of ``n`` rows from the sums of their centred returns and of their squares;
    NaN where the variance is not positive or is lost to cancellation (the sum of squared deviations at
    most a 1e-7 share of the sum of squares: fewer than about 9 of its digits are right)."""
    ss = s2 - s1 * s1 / n
    var = ss / (n - 1)
    var[ss <= _CANCELLED * s2] = np.nan
    return (s1 / n + centre) / np.sqrt(var)


def _split_reduce(mask: np.ndarray, per_block: np.ndarray, ufunc, start: float) -> tuple[np.ndarray, np.ndarray]:
    """``ufunc``-reduce the (blocks x k) ``per_block`` over each split's in-sample and out-of-sample blocks."""
    ins = np.full((len(mask), per_block.shape[1]), start)
    out = ins.copy()
    for b, row in enumerate(per_block):
        ufunc(ins, row, out=ins, where=mask[:, b, None])
        ufunc(out, row, out=out, where=~mask[:, b, None])
    return ins, out
