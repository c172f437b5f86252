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

Two protocol variants live here too (milnce.eval.protocol_table puts every variant side by side):
- many captions per video (MSR-VTT's 20): `retrieval_metrics_multi(similarity, text_to_video)` ranks each caption's
  own video in its row, with the same tie rule, and counts R@K per caption;
- dual-softmax inference (CAMoE): `dual_softmax(similarity, temperature)`; a transductive re-weighting, never default.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch


def _as_numpy(similarity, square: bool = True) -> np.ndarray:
    if hasattr(similarity, "detach"):  # torch tensor on any device
        similarity = similarity.detach().cpu().numpy()
    x = np.asarray(similarity)
    if square and (x.ndim != 2 or x.shape[0] != x.shape[1]):
        raise ValueError(f"similarity must be a square text×video matrix with the ground truth on the diagonal, "
                         f"got shape {x.shape}")
    if x.ndim != 2:
        raise ValueError(f"similarity must be a 2-D text×video matrix, got shape {x.shape}")
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
    return retrieval_ranks_multi(x, np.arange(x.shape[0]))


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


def chance_metrics(num_videos: int) -> Dict[str, float]:
    """R@K and MedR of ranking a gallery of `num_videos` at random (the chance/… twins of every retrieval metric)."""
    n = num_videos
    return {"chance/R1": 100.0 / n, "chance/R5": 100.0 * min(5, n) / n, "chance/R10": 100.0 * min(10, n) / n,
            "chance/MedR": (n + 1) / 2.0}


def retrieval_metrics(similarity) -> Dict[str, float]:
    """Text→video metrics of a text×video similarity (numpy or torch), ground truth on the diagonal.

    Returns R1, R5, R10 (percent), MedR (median of the 0-based rank + 1, so x.5 occurs), MeanR (mean 0-based rank + 1),
    ties (entries beyond one per query, see module doc) and N (queries).
    """
    x = _as_numpy(similarity)
    return metrics_from_ranks(retrieval_ranks(x), x.shape[0])


def _ground_truth(text_to_video, shape) -> np.ndarray:
    gt = np.asarray(text_to_video)
    if gt.shape != (shape[0],) or not np.issubdtype(gt.dtype, np.integer):
        raise ValueError(f"text_to_video must hold one integer video index per text (row), {shape[0]} in all; "
                         f"got {gt.dtype} of shape {gt.shape}")
    if shape[0] and (gt.min() < 0 or gt.max() >= shape[1]):
        bad = int(np.argmax((gt < 0) | (gt >= shape[1])))
        raise ValueError(f"text_to_video[{bad}] = {int(gt[bad])} is not a column of the {shape[0]}×{shape[1]} "
                         f"similarity")
    return gt


def retrieval_ranks_multi(similarity, text_to_video) -> np.ndarray:
    """0-based ranks of text i's own video `text_to_video[i]` in row i, ties as `retrieval_ranks` (whose diagonal
    case this is: text_to_video = arange(N) gives the same entries)."""
    x = _as_numpy(similarity, square=False)
    gt = _ground_truth(text_to_video, x.shape)
    sx = np.sort(-x, axis=1)
    d = -x[np.arange(x.shape[0]), gt][:, None]
    return np.nonzero(sx - d == 0)[1]


def retrieval_metrics_multi(similarity, text_to_video) -> Dict[str, float]:
    """Text→video metrics with many captions per video: `similarity` is captions×videos, caption i's ground truth is
    the video `text_to_video[i]`; every caption is a query, so R@K, MedR, MeanR are per caption and N = #captions.
    Keys as `retrieval_metrics`, plus `videos` (the gallery size)."""
    x = _as_numpy(similarity, square=False)
    out = metrics_from_ranks(retrieval_ranks_multi(x, text_to_video), x.shape[0])
    out["videos"] = float(x.shape[1])
    return out


def dual_softmax(similarity, temperature: float = 0.01) -> np.ndarray:
    """Dual-softmax inference (CAMoE, Cheng et al. 2021; the re-ranking behind e.g. InternVideo's reported numbers).

    With S the queries×gallery similarity (text×video for text→video):

        S'[q, g] = S[q, g] · exp(S[q, g] / τ) / Σ_q' exp(S[q', g] / τ)

    i.e. S times a softmax over the *query* axis (for each video, how strongly it prefers this text over every other
    test text), τ = `temperature` (CAMoE: 1/100 on cosine similarities). Constant factors (CAMoE multiplies by the
    number of queries) do not change a ranking and are left out. It is **transductive**: each score depends on every
    other query of the test set, so it is an option of the protocol, never its default. As published, a negative
    S[q, g] is made more negative by a larger prior; raw dot products can be negative. Computed in float64.
    """
    x = _as_numpy(similarity, square=False)
    if not temperature > 0:
        raise ValueError(f"dual_softmax temperature must be > 0, got {temperature}")
    s = torch.from_numpy(np.asarray(x, dtype=np.float64))
    return (s * torch.softmax(s / float(temperature), dim=0)).numpy()


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
