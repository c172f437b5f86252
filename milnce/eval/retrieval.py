"""Rank-based retrieval metrics with the exact semantics of the original `compute_metrics`.

HowTo100M, MIL-NCE, VideoCLIP, CLIP4Clip and TAN all share one function (PROTOCOLS Part A §7.1, Part B §2):

    sx = sort(-x, axis=1); d = diag(-x)[:, None]; ind = where(sx - d == 0)[1]
    R@K = mean(ind < K); MR = median(ind) + 1

`x` is the text×video similarity with the ground truth on the diagonal. Every sorted position whose value equals the
diagonal value is an entry of `ind`, so a row whose ground truth ties with m other columns contributes m + 1 ranks
(one optimistic, the others pessimistic) and the denominator grows beyond N. We keep that behaviour and report
`ties = len(ind) - N` beside the numbers.

Why not torchmetrics: its RetrievalRecall / RetrievalMRR rank by `topk`/`argsort` and so resolve a tie to a single
(index-dependent) position; on [[1,1,0],[0,1,0],[0,0,1]] they would give R@1 = 1.0 or 2/3, the original gives 0.75.
The implementation below is plain numpy.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np


def _as_numpy(similarity) -> np.ndarray:
    if hasattr(similarity, "detach"):  # torch tensor on any device
        similarity = similarity.detach().cpu().numpy()
    x = np.asarray(similarity)
    if x.ndim != 2 or x.shape[0] != x.shape[1]:
        raise ValueError(f"similarity must be a square text×video matrix with the ground truth on the diagonal, "
                         f"got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("similarity is empty: no items were evaluated")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        # The original silently drops such rows (NaN never compares equal); an embedding that is NaN is a bug.
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"similarity has {int(bad.sum())} non-finite entries (first at row {row}, column {col})")
    return x


def retrieval_ranks(similarity) -> np.ndarray:
    """0-based ranks as the original collects them: one entry per sorted position equal to the diagonal value.

    The entries are ordered by row (query), so a query with tied columns yields several consecutive entries.
    """
    x = _as_numpy(similarity)
    sx = np.sort(-x, axis=1)
    d = np.diag(-x)[:, None]
    return np.nonzero(sx - d == 0)[1]


def metrics_from_ranks(ranks: np.ndarray, num_queries: int) -> Dict[str, float]:
    ranks = np.asarray(ranks)
    return {
        "R1": 100.0 * float(np.mean(ranks == 0)),
        "R5": 100.0 * float(np.mean(ranks < 5)),
        "R10": 100.0 * float(np.mean(ranks < 10)),
        "MedR": float(np.median(ranks)) + 1.0,
        "MeanR": float(np.mean(ranks)) + 1.0,
        "ties": float(len(ranks) - num_queries),
        "N": float(num_queries),
    }


def retrieval_metrics(similarity) -> Dict[str, float]:
    """Text→video metrics of a text×video similarity (numpy or torch), ground truth on the diagonal.

    Returns R1, R5, R10 (percent), MedR (median of the 0-based rank + 1, so x.5 occurs), MeanR (mean 0-based rank + 1),
    ties (entries beyond one per query, see module doc) and N (queries).
    """
    x = _as_numpy(similarity)
    return metrics_from_ranks(retrieval_ranks(x), x.shape[0])


def bidirectional_metrics(similarity) -> Dict[str, float]:
    """Both directions, flat keys `t2v/R1`, …, `v2t/R1`, … (v2t = the same rule on the transposed matrix)."""
    x = _as_numpy(similarity)
    out = {f"t2v/{k}": v for k, v in retrieval_metrics(x).items()}
    out.update({f"v2t/{k}": v for k, v in retrieval_metrics(x.T).items()})
    return out


def rank_histogram(ranks: np.ndarray, edges: Sequence[int] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)) -> Dict[str, int]:
    """Counts of 1-based ranks in the buckets [1], (1,2], (2,5], …, (last, ∞) — the data behind the rank histogram."""
    ranks1 = np.asarray(ranks) + 1
    out: Dict[str, int] = {}
    lo = 0
    for hi in edges:
        out[f"{lo + 1}-{hi}" if hi > lo + 1 else f"{hi}"] = int(np.sum((ranks1 > lo) & (ranks1 <= hi)))
        lo = hi
    out[f">{lo}"] = int(np.sum(ranks1 > lo))
    return out
