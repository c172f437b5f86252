"""Narration-alignment metrics, as HTM-Align is scored (Han et al., CVPR 2022; TAN's eval_zeroshot_align.py).

R@1: over the alignable sentences, the fraction (%) whose predicted time t falls inside the annotated segment,
floor(start) <= t <= ceil(end) (TAN predicts whole seconds on a 1 fps grid and compares them so; our t is a window
centre in seconds, compared with the same integer-widened bounds).
ROC-AUC of alignability: sklearn's roc_auc_score of the alignable flags (every sentence) against a per-sentence
score (for models without an alignability head TAN takes the sentence's maximum similarity over time).
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np
from sklearn.metrics import roc_auc_score


def recall_at_1(pred_time: np.ndarray, start: np.ndarray, end: np.ndarray, alignable: np.ndarray) -> float:
    """R@1 in percent over the alignable sentences (NaN when there is none)."""
    pred_time, start, end = (np.asarray(x, np.float64) for x in (pred_time, start, end))
    alignable = np.asarray(alignable, bool)
    if not (pred_time.shape == start.shape == end.shape == alignable.shape):
        raise ValueError(f"recall_at_1: shapes differ: {pred_time.shape}, {start.shape}, {end.shape}, "
                         f"{alignable.shape}")
    if not alignable.any():
        return math.nan
    t = pred_time[alignable]
    hit = (np.floor(start[alignable]) <= t) & (t <= np.ceil(end[alignable]))
    return 100.0 * float(hit.mean())


def alignability_auc(scores: np.ndarray, alignable: np.ndarray) -> float:
    """ROC-AUC (0..1) of `scores` separating alignable from non-alignable sentences; NaN with a single class."""
    scores, alignable = np.asarray(scores, np.float64), np.asarray(alignable, bool)
    if scores.shape != alignable.shape:
        raise ValueError(f"alignability_auc: shapes differ: {scores.shape} vs {alignable.shape}")
    if alignable.all() or not alignable.any():
        return math.nan
    if not np.isfinite(scores).all():
        raise ValueError("alignability_auc: scores must be finite")
    return float(roc_auc_score(alignable.astype(int), scores))


def median_offset(pred_time: np.ndarray, true_time: np.ndarray) -> float:
    """Median |predicted − true| seconds over the sentences that have a true time (finite)."""
    pred_time, true_time = np.asarray(pred_time, np.float64), np.asarray(true_time, np.float64)
    ok = np.isfinite(true_time)
    return float(np.median(np.abs(pred_time[ok] - true_time[ok]))) if ok.any() else math.nan


def alignment_metrics(pred: Dict[str, np.ndarray], start, end, alignable) -> Dict[str, float]:
    """{R1 (pred["time"]), AUC (pred["alignability"]), AUC_max_score (pred["score"]: TAN's measure), N, N_alignable}."""
    out = {"R1": recall_at_1(pred["time"], start, end, alignable),
           "AUC": alignability_auc(pred["alignability"], alignable),
           "N": float(len(np.asarray(alignable))), "N_alignable": float(np.asarray(alignable, bool).sum())}
    if "score" in pred:
        out["AUC_max_score"] = alignability_auc(pred["score"], alignable)
    return out
