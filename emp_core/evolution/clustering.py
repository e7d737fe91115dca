"""The effective number of independent trials: clusters of trial return series (ONC).

Lopez de Prado and Lewis (2019), "Detection of false investment strategies using
unsupervised learning methods" (Quantitative Finance 19(9)), and Lopez de Prado (2019),
"A Data Science Solution to the Multiple-Testing Crisis in Financial Research"
(J. Financial Data Science 1(1)): trials whose returns move together are one test,
not many. Their **Optimal Number of Clusters** (ONC) algorithm:

1. distances between trials ``d_ij = sqrt((1 - rho_ij) / 2)`` from the correlation of
   their per-bar returns (0 for identical series, 1 for opposite ones);
2. a base clustering for every k in 2..k_max, scored by the quality
   ``q = mean(s) / std(s)`` of the silhouette coefficients ``s_i = (b_i - a_i) / max(a_i, b_i)``
   (a_i: mean distance to its own cluster, b_i: to the nearest other cluster; Rousseeuw
   1987); the best k is kept;
3. clusters whose own quality (mean / std of their members' silhouettes) is below the
   average are clustered again, recursively, and the result replaces them when it raises
   the average cluster quality.

The number of clusters K is the effective number of trials. Where this departs from
the paper: the base clustering is average-linkage hierarchical clustering on ``d`` cut
at k clusters (deterministic, no random restarts), instead of k-means on the rows of
the distance matrix, and silhouettes are computed from ``d`` itself. When every pair
of trials correlates at ``SAME_STRATEGY`` or more, the trials are one strategy (K = 1);
ONC itself never returns fewer than two clusters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

SAME_STRATEGY = 0.9  # pairwise correlation at or above which every trial counts as one
MAX_CLUSTERS = 100


@dataclass(frozen=True)
class Clusters:
    labels: np.ndarray  # cluster of each trial, 0..k-1
    k: int
    quality: float  # mean / std of the silhouettes (nan for k = 1)

    def members(self, c: int) -> np.ndarray:
        return np.nonzero(self.labels == c)[0]


def correlation_distance(returns: np.ndarray) -> np.ndarray:
    """``sqrt((1 - rho) / 2)`` between the columns of ``returns`` (bars x trials; no constant column)."""
    rho = np.clip(np.corrcoef(returns, rowvar=False), -1.0, 1.0)
    d = np.sqrt(0.5 * (1.0 - np.atleast_2d(rho)))
    np.fill_diagonal(d, 0.0)
    return d


def silhouettes(d: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Silhouette coefficient of every point for the clustering ``labels`` (0 for a point alone in its
    cluster, as Rousseeuw defines it)."""
    onehot = np.zeros((labels.size, k))
    onehot[np.arange(labels.size), labels] = 1.0
    sums = d @ onehot
    sizes = onehot.sum(axis=0)
    own = labels
    own_size = sizes[own]
    a = np.where(own_size > 1, sums[np.arange(labels.size), own] / np.maximum(own_size - 1, 1), 0.0)
    mean_to = sums / sizes[None, :]
    mean_to[np.arange(labels.size), own] = np.inf
    b = mean_to.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(own_size > 1, (b - a) / np.maximum(a, b), 0.0)
    return np.nan_to_num(s)


def _quality(s: np.ndarray) -> float:
    sd = s.std()
    return float(s.mean() / sd) if sd > 0 else (np.inf if s.mean() > 0 else 0.0)


def _base(d: np.ndarray, max_k: int) -> tuple[np.ndarray, int, np.ndarray]:
    n = d.shape[0]
    if n <= 2:
        return np.arange(n), n, np.zeros(n)
    tree = linkage(squareform(d, checks=False), method="average")
    best = (-np.inf, None, 0, None)
    for k in range(2, min(max_k, n - 1) + 1):
        labels = fcluster(tree, k, criterion="maxclust") - 1
        found = int(labels.max()) + 1
        if found != k:  # ties in the tree: this cut gives another k, scored on its own turn
            continue
        s = silhouettes(d, labels, k)
        q = _quality(s)
        if q > best[0]:
            best = (q, labels, k, s)
    if best[1] is None:
        return np.zeros(n, dtype=int), 1, np.zeros(n)
    return best[1], best[2], best[3]


def _onc(d: np.ndarray, max_k: int) -> tuple[np.ndarray, int]:
    labels, k, s = _base(d, max_k)
    if k < 2:
        return labels, k
    per_cluster = np.array([_quality(s[labels == c]) for c in range(k)])
    finite = np.where(np.isfinite(per_cluster), per_cluster, np.nan)
    mean_q = np.nanmean(finite) if np.isfinite(finite).any() else 0.0
    redo = [c for c in range(k) if np.isfinite(per_cluster[c]) and per_cluster[c] < mean_q]
    if len(redo) <= 1:
        return labels, k
    idx = np.nonzero(np.isin(labels, redo))[0]
    sub, sub_k = _onc(d[np.ix_(idx, idx)], max_k)
    keep = [c for c in range(k) if c not in redo]
    new = np.empty_like(labels)
    for j, c in enumerate(keep):
        new[labels == c] = j
    new[idx] = sub + len(keep)
    new_k = len(keep) + sub_k
    s_new = silhouettes(d, new, new_k)
    new_mean = np.nanmean([_quality(s_new[new == c]) for c in range(new_k)])
    old_mean = np.mean([per_cluster[c] for c in redo])
    return (new, new_k) if new_mean > old_mean else (labels, k)


def cluster_trials(returns: np.ndarray, *, max_k: int = MAX_CLUSTERS) -> Clusters:
    """ONC clusters of the trials (columns of ``returns``, bars x trials, each with some variance)."""
    r = np.asarray(returns, dtype=float)
    if r.ndim != 2 or r.shape[1] == 0:
        raise ValueError("need a (bars x trials) matrix with at least one trial")
    if not np.isfinite(r).all():
        raise ValueError("trial returns must be finite")
    if (r.std(axis=0) == 0).any():
        raise ValueError("a trial with constant returns cannot be clustered by correlation; leave it out")
    n = r.shape[1]
    if n == 1:
        return Clusters(np.zeros(1, dtype=int), 1, float("nan"))
    d = correlation_distance(r)
    if d.max() <= np.sqrt(0.5 * (1.0 - SAME_STRATEGY)):
        return Clusters(np.zeros(n, dtype=int), 1, float("nan"))
    labels, k = _onc(d, max_k)
    return Clusters(labels.astype(int), int(k), _quality(silhouettes(d, labels, k)) if k > 1 else float("nan"))
