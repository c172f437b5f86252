"""The MIL-NCE HMDB-51 linear probe as its released eval_hmdb.py runs it (`probe.protocol=original`).

PROTOCOLS.md §7.4: every frame of the video at its native frame rate; a centred min(H, W) square scaled to `size`;
`num_clips` windows of `num_frames` consecutive frames starting at frame linspace(0, T − num_frames, num_clips)
(integer); one feature per window (mixed_5c); sklearn LinearSVC(C=100) without feature normalisation, trained on
every training window with its video's label; a test video's class is the argmax of its windows' decision scores
summed. The original's flip augmentation never reached the features (its flipped copy was not returned), so there
is none here. A video shorter than `num_frames` is padded with zero frames at the end (the original would fail).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from sklearn.svm import LinearSVC
from tqdm.auto import tqdm

from milnce.eval.probe_features import cached_features, tower_features

from datamodules.benchmarks.action_split import ActionSplit
from datamodules.video.decode import probe, read_video
from datamodules.video.transforms import center_crop


def native_windows(path, num_clips: int, num_frames: int, size: int) -> torch.Tensor:
    """num_clips × 3 × num_frames × size × size uint8: the original's frame-index windows at native fps."""
    frames = read_video(path, fps=probe(path).fps)           # T×H×W×3, every frame, native size
    if len(frames) < num_frames:
        pad = frames.new_zeros((num_frames - len(frames), *frames.shape[1:]))
        frames = torch.cat([frames, pad])
    clip = center_crop(frames, size)                          # 3×T×size×size
    starts = np.linspace(0, len(frames) - num_frames, num_clips, dtype=int)
    return torch.stack([clip[:, s:s + num_frames] for s in starts])


def extract_window_features(tower: torch.nn.Module, paths: Sequence[str], num_clips: int, num_frames: int,
                            size: int, feature: str, batch_size: int, cache_dir: Optional[Path] = None,
                            model_key: Optional[str] = None, progress: bool = True) -> Tuple[np.ndarray, Dict[str, Any]]:
    """V × num_clips × D float32 window features (cached like the clip-mean features, under another identity)."""
    identity = {"protocol": "original", "model": model_key, "feature": feature, "num_clips": num_clips,
                "num_frames": num_frames, "size": size, "videos": list(map(str, paths))}

    def compute():
        feats: List[np.ndarray] = []
        key = feature
        for path in tqdm(paths, desc="probe features (original protocol)", unit="video", disable=not progress):
            f, key = tower_features(tower, native_windows(path, num_clips, num_frames, size), feature, batch_size)
            feats.append(f.numpy())
        return (np.stack(feats).astype(np.float32) if feats else np.zeros((0, num_clips, 0), np.float32)), key

    return cached_features(cache_dir, "probe_windows", identity, model_key, compute)


def svc_split(split: ActionSplit, windows: Dict[str, np.ndarray], c: float = 100.0) -> Dict[str, float]:
    """Train LinearSVC on every window of the train videos; top-1 of the window-summed decision scores."""
    x_train = np.concatenate([windows[rel] for rel, _ in split.train])
    y_train = np.concatenate([[label] * len(windows[rel]) for rel, label in split.train])
    # dual=True: the sklearn default when eval_hmdb.py was written (today's default is "auto").
    svc = LinearSVC(C=c, dual=True, random_state=0).fit(x_train, y_train)

    def predict(videos):
        scores = [_full_scores(svc, windows[rel], len(split.classes)).sum(axis=0) for rel, _ in videos]
        return np.argmax(np.stack(scores), axis=1)

    def accuracy(videos):
        return float(100.0 * np.mean(predict(videos) == np.array([label for _, label in videos])))

    return {"top1": accuracy(split.test), "train_top1": accuracy(split.train)}


def _full_scores(svc: LinearSVC, x: np.ndarray, num_classes: int) -> np.ndarray:
    """decision_function over all classes (a class without training windows scores -inf, never chosen)."""
    raw = svc.decision_function(x)
    if raw.ndim == 1:                       # two classes: sklearn returns the positive class's margin only
        raw = np.stack([-raw, raw], axis=1)
    out = np.full((len(x), num_classes), -np.inf)
    out[:, svc.classes_.astype(int)] = raw
    return out


def original_card(c: Any) -> Dict[str, Any]:
    return {
        "clips": {"num_clips": c.num_clips, "num_frames": c.num_frames, "fps": "native (every frame)",
                  "size": c.size, "starts": "frame linspace(0, T - num_frames, num_clips, dtype=int)",
                  "crop": "centred min(H, W) square scaled to size", "pooling": "none: one feature per window"},
        "classifier": {"kind": "sklearn LinearSVC (squared hinge, dual, random_state=0)", "C": c.svc_c,
                       "standardize": False, "trained_on": "every training window, the video's label",
                       "test_score": "decision_function summed over the video's windows, argmax"},
        "matches_original": "MIL-NCE eval_hmdb.py (PROTOCOLS.md §7.4); its flip TTA had no effect and is absent",
    }
