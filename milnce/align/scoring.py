"""Re-time the narrations of one video from text × window scores.

For narration i with ASR centre c_i, the candidates are the windows whose centre lies within ±radius seconds of
c_i (radius None: the whole video, HTM-Align's "global" protocol). The prediction is the best-scoring candidate's
centre; the predicted interval keeps the ASR duration, centred there and kept inside the video (so [start, end] is
always given, not only a centre time as HTM-AA releases). Per narration we also keep:
  score        the best candidate's score (TAN's alignability for models without an alignability head)
  alignability the narration's best score over the whole video, as TAN measures alignability for models without an
               alignability head (a line that describes nothing on screen matches no window well). We tried the
               peak's z-score over the video's windows first: on the toy it separates step lines from filler at
               ROC-AUC 0.52 only (the best of ~100 noisy windows always stands ~3σ out), the best score at 0.98
  margin       best − the best candidate at least one clip away from the winner (NaN when there is none): small
               margins are ambiguous placements
Scores are the model's training logits (L2-normalised / temperature when its loss does so).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from milnce.inference import training_logits


@dataclass(frozen=True)
class SearchSettings:
    radius: Optional[float] = 32.0   # ± seconds around the ASR centre; None = global (64 s window = radius 32)
    stride: float = 0.4              # seconds between window starts
    smooth: float = 0.0              # seconds of moving average over the scores before the argmax (0 = none):
                                     # about a step's length finds the middle of a matching stretch, not its edge

    def __post_init__(self):
        if self.radius is not None and not self.radius > 0:
            raise ValueError(f"radius must be > 0 seconds or None (global), got {self.radius}")
        if not self.stride > 0 or self.smooth < 0:
            raise ValueError(f"need stride > 0 and smooth >= 0, got stride={self.stride}, smooth={self.smooth}")

    @property
    def smooth_windows(self) -> int:
        return max(1, int(round(self.smooth / self.stride)) + 1) if self.smooth > 0 else 1


def text_window_scores(model, text_emb: np.ndarray, window_emb: np.ndarray) -> np.ndarray:
    """N texts × W windows of the model's training logits."""
    if len(text_emb) == 0:
        return np.zeros((0, len(window_emb)), np.float32)
    return training_logits(model, window_emb, text_emb).T


def _smoothed(scores: np.ndarray, k: int) -> np.ndarray:
    if k <= 1 or scores.shape[1] < 2:
        return scores
    kernel = np.ones(k) / k
    pad = k // 2
    padded = np.pad(scores, ((0, 0), (pad, k - 1 - pad)), mode="edge")
    return np.stack([np.convolve(row, kernel, mode="valid") for row in padded])


def retime(scores: np.ndarray, centres: np.ndarray, asr_start: np.ndarray, asr_end: np.ndarray,
           settings: SearchSettings, clip_seconds: float, duration: float) -> Dict[str, np.ndarray]:
    """scores N×W, window centres W → per-narration pred_start, pred_end, pred_time, score, alignability, margin."""
    raw = np.asarray(scores, np.float64)
    scores = _smoothed(raw, settings.smooth_windows)
    centres = np.asarray(centres, np.float64)
    asr_start, asr_end = np.asarray(asr_start, np.float64), np.asarray(asr_end, np.float64)
    n = len(asr_start)
    asr_centre = 0.5 * (asr_start + asr_end)
    if settings.radius is None:
        candidate = np.ones((n, len(centres)), bool)
    else:
        candidate = np.abs(centres[None, :] - asr_centre[:, None]) <= settings.radius + 1e-9
    # a narration with no window in reach (times past the end): its nearest window is its only candidate
    empty = ~candidate.any(axis=1)
    if empty.any():
        nearest = np.abs(centres[None, :] - asr_centre[empty, None]).argmin(axis=1)
        candidate[np.flatnonzero(empty), nearest] = True
    masked = np.where(candidate, scores, -np.inf)
    best = masked.argmax(axis=1) if n else np.zeros(0, np.int64)
    rows = np.arange(n)
    best_score = masked[rows, best]
    far = candidate & (np.abs(centres[None, :] - centres[best][:, None]) >= clip_seconds - 1e-9)
    runner_up = np.where(far, scores, -np.inf).max(axis=1) if n else np.zeros(0)
    margin = np.where(np.isfinite(runner_up), best_score - runner_up, np.nan)
    alignability = raw.max(axis=1) if raw.shape[1] else np.full(n, np.nan)
    pred_time = centres[best] if n else np.zeros(0)
    half = 0.5 * (asr_end - asr_start)
    pred_start = np.minimum(np.maximum(pred_time - half, 0.0), np.maximum(duration - 2 * half, 0.0))
    return {"pred_start": pred_start, "pred_end": pred_start + 2 * half, "pred_time": pred_time,
            "score": best_score, "alignability": alignability, "margin": margin}
