"""Pictures of evaluation results (matplotlib, Agg backend): retrieval rank histogram, CrossTask step scores."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from datamodules.atomic import atomic_path


def plot_rank_histogram(ranks: np.ndarray, path, title: str = "") -> Path:
    """Histogram of 1-based text→video ranks on a log axis, with R@1/5/10 and MedR marked."""
    ranks1 = np.asarray(ranks) + 1
    n_max = max(int(ranks1.max()), 10)
    bins = np.unique(np.geomspace(1, n_max + 1, num=min(40, n_max) + 1).astype(int))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(ranks1, bins=bins, color="tab:blue", edgecolor="white")
    ax.set_xscale("log")
    ax.set_xlabel("rank of the ground-truth video (1 = best)")
    ax.set_ylabel("queries")
    for k, style in ((1, ":"), (5, "--"), (10, "-.")):
        ax.axvline(k + 0.5, color="gray", linestyle=style, linewidth=1)
    medr = float(np.median(np.asarray(ranks))) + 1
    ax.axvline(medr, color="tab:red", linewidth=1.5, label=f"MedR {medr:g}")
    r = [100 * np.mean(ranks1 <= k) for k in (1, 5, 10)]
    ax.set_title(f"{title}  R@1 {r[0]:.1f}  R@5 {r[1]:.1f}  R@10 {r[2]:.1f}  (N={len(ranks1)})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def plot_step_scores(scores: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, steps: Sequence[str], path,
                     title: str = "", y_argmax: Optional[np.ndarray] = None) -> Path:
    """Per-second step scores (K×T heat map) with ground-truth segments outlined and predicted frames marked."""
    T, K = scores.shape
    fig, ax = plt.subplots(figsize=(min(16, 4 + T / 12), 1.8 + 0.45 * K))
    im = ax.imshow(scores.T, aspect="auto", interpolation="nearest", cmap="viridis",
                   extent=(-0.5, T - 0.5, K - 0.5, -0.5))
    for k in range(K):
        on = np.flatnonzero(y_true[:, k])
        if on.size:   # contiguous runs of GT seconds → rectangles
            runs = np.split(on, np.flatnonzero(np.diff(on) > 1) + 1)
            for run in runs:
                ax.add_patch(plt.Rectangle((run[0] - 0.5, k - 0.5), len(run), 1, fill=False, edgecolor="white",
                                           linewidth=1.5))
    tp, kp = np.nonzero(y_pred)
    hit = y_true[tp, kp] > 0
    counted = y_true.sum(axis=0)[kp] > 0            # steps without annotation count neither way in the recall
    ax.scatter(tp[hit], kp[hit], marker="o", s=40, facecolors="none", edgecolors="lime", label="predicted (hit)")
    ax.scatter(tp[~hit & counted], kp[~hit & counted], marker="x", s=40, color="red", label="predicted (miss)")
    ax.scatter(tp[~counted], kp[~counted], marker="x", s=30, color="lightgray", label="predicted (step not annotated)")
    if y_argmax is not None:
        ta, ka = np.nonzero(y_argmax)
        ax.scatter(ta, ka, marker="+", s=30, color="orange", label="per-step argmax")
    ax.set_yticks(range(K))
    ax.set_yticklabels([s.strip()[:28] for s in steps], fontsize=7)
    ax.set_xlabel("second")
    ax.set_title(title + "  (white boxes: ground truth)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=4, frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return path
