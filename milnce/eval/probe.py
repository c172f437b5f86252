"""Action-recognition linear probe on a frozen video tower (the MIL-NCE HMDB-51 / UCF-101 evaluation).

Protocol (written into the card every run returns):
- features: the video tower's pooled feature before the joint-space projection — S3D `mixed_5c` (global average
  pool, 1024-d at width 1), R(2+1)D `pooled`, ViT `pooled` (the pooled token / frame mean); `feature=` picks another
  output key (`video_embedding`); the tower is in eval mode and frozen;
- clips: `num_clips` windows of `num_frames` frames at `fps`, short side resized to `size` and centre-cropped,
  starting at linspace(0, max(0, duration − num_frames/fps − 0.4), num_clips) (the MIL-NCE MSR-VTT eval sampler,
  datamodules/benchmarks/eval_clips.py); the video's feature is the mean over its clips;
- classifier: multinomial logistic regression in torch on the train split's features, standardised with the train
  split's mean / std; full-batch L-BFGS (strong-Wolfe line search) on mean cross-entropy + l2/2·‖W‖², at most
  `max_iter` iterations from zero weights — deterministic, no learning rate to tune;
- metric: top-1 on the test split, per split, and the mean over the splits (the papers report the mean of 3).

The original (eval_hmdb.py) differs, and the card says so: it decodes at the native frame rate with frame-index
window starts, trains sklearn LinearSVC(C=100) on every window and sums the decision scores over windows;
`protocol=original` runs exactly that instead (milnce/eval/probe_original.py), for numbers comparable with the paper.
Features are cached (one .npz per model × clip settings × video list), so a sweep over `l2` decodes nothing twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from milnce.eval.probe_features import ProbeError, cached_features, pick_feature, tower_features  # noqa: F401 (pick_feature: API)
from milnce.eval.probe_original import extract_window_features, original_card, svc_split
from datamodules.benchmarks.action_split import ActionSplit
from datamodules.benchmarks.eval_clips import RetrievalClips
from datamodules.benchmarks.hmdb51 import read_hmdb51_split
from datamodules.benchmarks.retrieval_items import RetrievalItem
from datamodules.benchmarks.ucf101 import read_ucf101_split
from datamodules.video.decode import DecodeError

READERS = {"ucf101": read_ucf101_split, "hmdb51": read_hmdb51_split}
PROTOCOLS = ("ours", "original")        # original: eval_hmdb.py exactly (milnce/eval/probe_original.py)
DEFAULT_FOLDERS = {"ucf101": ("UCF-101", "ucfTrainTestlist"), "hmdb51": ("videos", "testTrainMulti_7030_splits")}


@dataclass
class ProbeResult:
    metrics: Dict[str, float]
    card: Dict[str, Any]


def read_splits(dataset: str, split_dir, splits: Sequence[int]) -> List[ActionSplit]:
    if dataset not in READERS:
        raise ProbeError(f"probe.dataset: unknown dataset {dataset!r} (valid: {', '.join(READERS)})")
    return [READERS[dataset](split_dir, int(s)) for s in splits]


def extract_video_features(tower: torch.nn.Module, paths: Sequence[str], num_clips: int, num_frames: int,
                           fps: float, size: int, feature: str = "auto", batch_size: int = 16,
                           cache_dir: Optional[Path] = None, model_key: Optional[str] = None,
                           progress: bool = True) -> Tuple[np.ndarray, Dict[str, Any]]:
    """One feature per video (mean over its clips), V×D float32, and what was done (key, cache file, failures).

    With `cache_dir` and `model_key` (a string that identifies the weights), features are read from / written to
    cache_dir/probe_features_<hash>.npz; the hash covers the model key, the feature key, the clip settings and the
    video list. A video that cannot be decoded is an error (a probe on a silently shrunk test set is not comparable).
    """
    identity = {"model": model_key, "feature": feature, "num_clips": num_clips, "num_frames": num_frames,
                "fps": float(fps), "size": size, "videos": list(map(str, paths))}

    def compute():
        items = [RetrievalItem(f"probe:{i}", Path(p).stem, "", 0.0, None, str(p)) for i, p in enumerate(paths)]
        clips = RetrievalClips(items, num_windows=num_clips, num_frames=num_frames, fps=fps, size=size)
        loader = DataLoader(clips, batch_size=None, num_workers=0)
        feats: List[Optional[np.ndarray]] = [None] * len(items)
        key = feature
        for out in tqdm(loader, total=len(items), desc="probe features", unit="video", disable=not progress):
            if out["error"]:
                raise ProbeError(f"{items[out['index']].path}: {out['error']}")
            f, key = tower_features(tower, out["video"], feature, batch_size)
            feats[out["index"]] = f.mean(dim=0).numpy()
        return (np.stack(feats).astype(np.float32) if feats else np.zeros((0, 0), np.float32)), key

    return cached_features(cache_dir, "probe_features", identity, model_key, compute)


def fit_logistic(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float = 1e-3, max_iter: int = 200,
                 standardize: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """Multinomial logistic regression (full-batch L-BFGS, zero init); returns a function features → class scores."""
    xt = torch.as_tensor(np.asarray(x, dtype=np.float64))
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    if xt.dim() != 2 or len(xt) != len(yt) or len(xt) == 0:
        raise ProbeError(f"linear probe: need N×D features and N labels, got {tuple(xt.shape)} and {tuple(yt.shape)}")
    mean = xt.mean(0) if standardize else torch.zeros(xt.shape[1], dtype=xt.dtype)
    std = xt.std(0, unbiased=False).clamp_min(1e-8) if standardize else torch.ones(xt.shape[1], dtype=xt.dtype)
    xs = (xt - mean) / std
    weight = torch.zeros(xt.shape[1], num_classes, dtype=xt.dtype, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=xt.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12, history_size=20)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ weight + bias, yt) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w, b = weight.detach(), bias.detach()

    def scores(features: np.ndarray) -> np.ndarray:
        f = (torch.as_tensor(np.asarray(features, dtype=np.float64)) - mean) / std
        return (f @ w + b).numpy()

    return scores


def top1(scores: np.ndarray, labels: Sequence[int]) -> float:
    labels = np.asarray(labels)
    return float(100.0 * np.mean(np.argmax(scores, axis=1) == labels)) if len(labels) else float("nan")


def probe_split(split: ActionSplit, features: Dict[str, np.ndarray], l2: float, max_iter: int,
                standardize: bool) -> Dict[str, float]:
    x_train = np.stack([features[rel] for rel, _ in split.train])
    x_test = np.stack([features[rel] for rel, _ in split.test])
    y_train = [c for _, c in split.train]
    y_test = [c for _, c in split.test]
    missing = sorted(set(range(len(split.classes))) - set(y_train))
    if missing:
        print(f"[probe] split {split.split}: {len(missing)} classes have no training video, e.g. "
              f"{split.classes[missing[0]]}")
    scores = fit_logistic(x_train, y_train, len(split.classes), l2, max_iter, standardize)
    return {"top1": top1(scores(x_test), y_test), "train_top1": top1(scores(x_train), y_train)}


def chance_top1(split: ActionSplit) -> float:
    """Always answering the most frequent training class (uniform classes: 100 / number of classes)."""
    counts = np.bincount([c for _, c in split.train], minlength=len(split.classes))
    guess = int(np.argmax(counts))
    return float(100.0 * np.mean([c == guess for _, c in split.test]))


def run_probe(tower: torch.nn.Module, probe_cfg: Any, data_root: str = "data/toy", cache_dir: Optional[str] = None,
              model_key: Optional[str] = None, progress: bool = True) -> ProbeResult:
    """Every configured split: read it, extract (or load) the features of its videos, fit, score; metrics + card."""
    c = probe_cfg
    if c.dataset not in READERS:
        raise ProbeError(f"probe.dataset: unknown dataset {c.dataset!r} (valid: {', '.join(READERS)})")
    base = Path(data_root) / c.dataset
    video_root = Path(c.video_root) if c.video_root else base / DEFAULT_FOLDERS[c.dataset][0]
    split_dir = Path(c.split_dir) if c.split_dir else base / DEFAULT_FOLDERS[c.dataset][1]
    splits = read_splits(c.dataset, split_dir, c.splits)
    rels = sorted({rel for s in splits for rel, _ in (*s.train, *s.test)})
    paths, missing = [], []
    for rel in rels:
        found = splits[0].resolve(video_root, rel)
        (paths.append(str(found)) if found else missing.append(rel))
    if missing:
        raise ProbeError(f"{len(missing)} of {len(rels)} videos of the split files are not under {video_root}, "
                         f"e.g. {missing[0]!r}")
    original = _protocol(c) == "original"
    cache = Path(cache_dir) if cache_dir else None
    try:
        if original:
            feats, info = extract_window_features(tower, paths, c.num_clips, c.num_frames, c.size, c.feature,
                                                  c.batch_size, cache, model_key, progress)
        else:
            feats, info = extract_video_features(tower, paths, c.num_clips, c.num_frames, c.fps, c.size, c.feature,
                                                 c.batch_size, cache, model_key, progress)
    except DecodeError as err:
        raise ProbeError(str(err)) from err
    by_rel = dict(zip(rels, feats))
    metrics: Dict[str, float] = {}
    per_split = []
    for s in splits:
        r = svc_split(s, by_rel, c.svc_c) if original else probe_split(s, by_rel, c.l2, c.max_iter, c.standardize)
        metrics[f"top1_split{s.split}"] = r["top1"]
        metrics[f"chance_top1_split{s.split}"] = chance_top1(s)
        per_split.append({**s.summary(), **r})
    metrics["top1"] = float(np.mean([metrics[f"top1_split{s.split}"] for s in splits]))
    metrics["chance_top1"] = float(np.mean([metrics[f"chance_top1_split{s.split}"] for s in splits]))
    card = {
        "task": f"{c.dataset} linear probe, top-1 on the test split, mean over splits {list(c.splits)}",
        "feature": info["feature"], "feature_dim": int(feats.shape[-1]) if feats.size else 0,
        "frozen_tower": True, "feature_cache": info["cache"], "features_from_cache": info["cached"],
        "clips": {"num_clips": c.num_clips, "num_frames": c.num_frames, "fps": c.fps, "size": c.size,
                  "starts": "linspace(0, max(0, duration - num_frames/fps - 0.4), num_clips) seconds",
                  "crop": "short side resized to size, centre crop", "pooling": "mean of clip features"},
        "classifier": {"kind": "multinomial logistic regression (torch, float64)", "optimizer": "full-batch L-BFGS, "
                       "strong-Wolfe line search, zero init", "max_iter": c.max_iter, "l2": c.l2,
                       "standardize": c.standardize},
        "chance": "the most frequent training class",
        "differs_from_original": "MIL-NCE eval_hmdb.py: native frame rate, frame-index window starts, LinearSVC(C=100)"
                                 " on every window, decision scores summed over windows",
        "video_root": str(video_root), "split_dir": str(split_dir), "num_videos": len(rels), "splits": per_split,
        "protocol": _protocol(c),
    }
    if original:
        card.pop("differs_from_original")
        card.update(original_card(c))
    return ProbeResult(metrics, card)


def _protocol(c: Any) -> str:
    protocol = getattr(c, "protocol", "ours")
    if protocol not in PROTOCOLS:
        raise ProbeError(f"probe.protocol: unknown protocol {protocol!r} (valid: {', '.join(PROTOCOLS)})")
    return protocol


def flat_metrics(dataset: str, metrics: Dict[str, float]) -> Dict[str, float]:
    """run_probe's metrics as metrics.json keys: <dataset>/top1…, and chance/<dataset>/top1… for the chance rows."""
    out = {}
    for key, value in metrics.items():
        if key.startswith("chance_"):
            out[f"chance/{dataset}/{key[len('chance_'):]}"] = value
        else:
            out[f"{dataset}/{key}"] = value
    return out


def model_key(checkpoint) -> str:
    """What identifies a checkpoint's weights for the feature cache: resolved path, size and modification time."""
    path = Path(checkpoint).resolve()
    stat = path.stat()
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
