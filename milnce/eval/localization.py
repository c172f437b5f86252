"""CrossTask step localization: per-second scores → ordered one-frame-per-step assignment → recall.

Semantics follow Zhukov et al.'s release (dp.pyx, train.py `get_recalls`), which VideoCLIP reuses verbatim
(PROTOCOLS Part B §1.5–1.6, 1.9). Arrays are T×K: T seconds (frames), K steps of the task, in order.
"""
from __future__ import annotations

import logging
import math
from typing import Dict, Mapping

import numpy as np

log = logging.getLogger(__name__)

YDict = Mapping[str, Mapping[str, np.ndarray]]  # {task: {video: T×K 0/1}}


class InfeasibleAlignment(ValueError):
    """T < K: K steps cannot occupy K distinct, strictly increasing frames."""


def _check_cost(cost) -> np.ndarray:
    if hasattr(cost, "detach"):
        cost = cost.detach().cpu().numpy()
    c = np.asarray(cost)
    if c.ndim != 2 or c.shape[1] == 0:
        raise ValueError(f"cost must be a T×K matrix with K ≥ 1, got shape {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("cost has non-finite entries")
    return c


def align_steps(cost) -> np.ndarray:
    """Zhukov's DP, clean O(T·K) form: frames t_1 < … < t_K minimising Σ_k cost[t_k, k]; T×K uint8 with one 1 per column.

    Equal to dp.pyx on every input without ties; ties resolve to the earliest frame (dp.pyx differs there, see
    `align_steps_exact`). T < K raises InfeasibleAlignment. T == K has exactly one feasible answer, the diagonal,
    which is returned (and logged) — dp.pyx returns an all-zero prediction there whenever cost[T-1, K-1] > 0.
    """
    c = _check_cost(cost).astype(np.float64)
    T, K = c.shape
    if T < K:
        raise InfeasibleAlignment(f"{T} frames cannot hold {K} ordered one-frame steps")
    if T == K:
        log.info("align_steps: T == K == %d, the only feasible assignment is the diagonal", T)
        return np.eye(T, K, dtype=np.uint8)
    D = np.full((K, T), np.inf)
    B = np.zeros((K, T), dtype=np.int64)
    D[0] = c[:, 0]
    idx = np.arange(T)
    for k in range(1, K):
        prev = D[k - 1]
        run_min = np.minimum.accumulate(prev)             # min over t' <= t
        # position of the first occurrence of the running minimum (strict '<' keeps the earliest)
        new_min = np.concatenate([[True], prev[1:] < run_min[:-1]])
        run_arg = np.maximum.accumulate(np.where(new_min, idx, 0))
        # frame t may follow any t' < t: shift by one
        D[k, 1:] = c[1:, k] + run_min[:-1]
        B[k, 1:] = run_arg[:-1]
    y = np.zeros((T, K), dtype=np.uint8)
    t = int(np.argmin(D[K - 1]))
    for k in range(K - 1, -1, -1):
        y[t, k] = 1
        t = int(B[k, t])
    return y


def align_steps_exact(cost) -> np.ndarray:
    """A faithful re-implementation of dp.pyx (exactly_one=True, bg_cost=0), ties and the T ≤ K quirk included.

    States 0..2K: even = background after step k/2, odd = step (k+1)/2. Costs are read as float32 (dp.pyx takes
    float[:, :]) and summed in float64. A state with no valid predecessor keeps the last accepted value of the running
    optimum (an uninitialised C variable in dp.pyx); that stale value decides the end state when T == K.
    Slow (pure Python); used to test `align_steps` and to reproduce tied inputs bit for bit.
    """
    c = _check_cost(cost).astype(np.float32)
    T, K = c.shape
    S = 2 * K + 1
    L = [[-1.0] * S for _ in range(T + 1)]
    P = [[-1] * S for _ in range(T + 1)]
    L[0][0], P[0][0] = 0.0, 0
    opt_value = 0.0
    for t in range(1, T + 1):
        Lt, Pt, row = L[t - 1], P[t - 1], c[t - 1]
        for k in range(S):
            step = 0 if k % 2 == 0 else (k + 1) // 2
            opt_label = -1
            candidates = ([k] if step == 0 else []) + [k - 1] + ([k - 2] if step else [])
            for j in candidates:
                if j >= 0 and Pt[j] != -1 and (opt_label == -1 or opt_value > Lt[j]):
                    opt_label, opt_value = j, Lt[j]
            L[t][k] = opt_value + (float(row[step - 1]) if step else 0.0)
            P[t][k] = opt_label
    y = np.zeros((T, K), dtype=np.uint8)
    k = S - 1 if (L[T][S - 1] < L[T][S - 2] or P[T][S - 2] == -1) else S - 2
    for t in range(T, 0, -1):
        step = 0 if k % 2 == 0 else (k + 1) // 2  # k = -1 (invalid) gives step 0 here as in Cython's % semantics
        if step > 0:
            y[t - 1, step - 1] = 1
        # dp.pyx indexes P[t, -1] without wraparound: that is the last entry of the previous row
        k = P[t][k] if k >= 0 else P[t - 1][S - 1]
    return y


def step_costs(scores, cost: str = "log_softmax") -> np.ndarray:
    """T×K scores (higher = better) → T×K DP costs: −log_softmax over steps (Zhukov, VideoCLIP) or −scores (MCN)."""
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()
    s = np.asarray(scores, dtype=np.float32)
    if cost == "log_softmax":
        m = s.max(axis=1, keepdims=True)
        lse = m + np.log(np.exp(s - m).sum(axis=1, keepdims=True))
        return -(s - lse)
    if cost == "similarity":
        return -s
    raise ValueError(f"unknown cost '{cost}' (valid: log_softmax, similarity)")


def argmax_steps(scores) -> np.ndarray:
    """Ablation: each step independently at its best-scoring frame (no order, frames may coincide)."""
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()
    s = np.asarray(scores)
    y = np.zeros(s.shape, dtype=np.uint8)
    y[np.argmax(s, axis=0), np.arange(s.shape[1])] = 1
    return y


def crosstask_recall(y_true: YDict, y_pred: YDict) -> Dict[str, object]:
    """Recall (percent) as Zhukov's `get_recalls`: hits and annotated steps pooled over a task's videos, then the plain
    mean over tasks. `recall_per_video` is the MCN/HowTo100M variant (mean per-video recall per task, then over tasks).

    Only videos present in both y_true and y_pred count. Tasks without any such video are left out of the means and
    listed under `tasks_without_videos` (the original code would divide by zero there).
    """
    per_task: Dict[str, Dict[str, float]] = {}
    skipped = []
    for task, videos in y_true.items():
        preds = y_pred.get(task, {})
        common = [v for v in videos if v in preds]
        if not common:
            skipped.append(task)
            continue
        match = total = 0
        per_video = []
        for vid in common:
            yt, yp = np.asarray(videos[vid]), np.asarray(preds[vid])
            if yt.shape != yp.shape:
                raise ValueError(f"task {task} video {vid}: y_true is {yt.shape} but y_pred is {yp.shape}")
            n = int((yt.sum(axis=0) > 0).sum())
            hit = float((yt.astype(np.float64) * yp).sum())
            total += n
            match += hit
            if n > 0:
                per_video.append(hit / n)
        per_task[task] = {
            "recall": 100.0 * match / total if total else float("nan"),
            "recall_per_video": 100.0 * float(np.mean(per_video)) if per_video else float("nan"),
            "hits": float(match), "annotated_steps": float(total), "videos": float(len(common)),
        }
    pooled = [r["recall"] for r in per_task.values() if not math.isnan(r["recall"])]
    per_video_means = [r["recall_per_video"] for r in per_task.values() if not math.isnan(r["recall_per_video"])]
    return {
        "recall": float(np.mean(pooled)) if pooled else float("nan"),
        "recall_per_video": float(np.mean(per_video_means)) if per_video_means else float("nan"),
        "per_task": per_task,
        "tasks_without_videos": skipped,
    }


def _order_statistic_probs(T: int, K: int) -> np.ndarray:
    """P[t, k] = probability that the (k+1)-th smallest of K distinct frames drawn uniformly from T is frame t."""
    lg = np.array([math.lgamma(n + 1) for n in range(T + 1)])

    def log_comb(n, r):
        n, r = np.broadcast_arrays(n, r)
        out = np.full(n.shape, -np.inf)
        ok = (r >= 0) & (r <= n)
        out[ok] = lg[n[ok]] - lg[r[ok]] - lg[n[ok] - r[ok]]
        return out

    t = np.arange(T)[:, None]
    k = np.arange(K)[None, :]
    return np.exp(log_comb(t, k) + log_comb(T - 1 - t, K - 1 - k) - log_comb(np.array(T), np.array(K)))


def chance_recall(y_true: YDict, inference: str = "dp") -> Dict[str, float]:
    """Expected recall of a uniformly random prediction obeying the same constraints — computed analytically.

    inference="dp": K distinct frames drawn uniformly, assigned to the steps in temporal order (the DP's output space);
    step k's frame is the k-th order statistic. T < K videos predict nothing (as dp.pyx). inference="argmax": each step
    at an independent uniform frame. Because the denominators are fixed by y_true, the expectation of the pooled and
    of the per-video recall is the recall computed with expected hits.
    """
    if inference not in ("dp", "argmax"):
        raise ValueError(f"unknown inference '{inference}' (valid: dp, argmax)")
    expected: Dict[str, Dict[str, np.ndarray]] = {}
    for task, videos in y_true.items():
        expected[task] = {}
        for vid, yt in videos.items():
            yt = np.asarray(yt, dtype=np.float64)
            T, K = yt.shape
            if inference == "argmax":
                probs = np.full((T, K), 1.0 / T)
            elif T < K:
                probs = np.zeros((T, K))
            else:
                probs = _order_statistic_probs(T, K)
            expected[task][vid] = probs
    out = crosstask_recall(y_true, expected)
    return {"recall": out["recall"], "recall_per_video": out["recall_per_video"]}
