"""The probe's features: the frozen video tower's pooled output of a batch of windows, and the feature cache.

Shared by the probe of ours (milnce/eval/probe.py) and the original eval_hmdb.py protocol (probe_original.py).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch

from milnce.inference import eval_mode, module_device
from datamodules.atomic import atomic_path

FEATURE_KEYS = ("mixed_5c", "pooled")     # "auto": the first of these the tower returns, else video_embedding


class ProbeError(RuntimeError):
    """The probe cannot run as configured (no videos found, unknown feature key …); the message says why."""


def pick_feature(outputs: Dict[str, torch.Tensor], feature: str) -> str:
    if feature == "auto":
        return next((k for k in FEATURE_KEYS if k in outputs), "video_embedding")
    if feature not in outputs:
        raise ProbeError(f"probe.feature: the video tower returns no {feature!r} (it returns {sorted(outputs)})")
    return feature


def tower_features(tower: torch.nn.Module, windows: torch.Tensor, feature: str, batch_size: int = 16,
                   device: Optional[torch.device] = None) -> Tuple[torch.Tensor, str]:
    """W×3×T×S×S uint8 windows → (W×D float32 features, the output key used), tower frozen in eval mode."""
    device = device or module_device(tower)
    out, key = [], feature
    with eval_mode(tower):
        for chunk in windows.split(batch_size):
            result = tower(chunk.to(device).float().div_(255.0))
            key = pick_feature(result, feature)
            out.append(result[key].float().cpu())
    return torch.cat(out), key


def cached_features(cache_dir: Optional[Path], prefix: str, identity: Dict[str, Any], model_key: Optional[str],
                    compute: Callable[[], Tuple[np.ndarray, str]]) -> Tuple[np.ndarray, Dict[str, Any]]:
    """`compute()` → (features, feature key), read from / written to cache_dir/<prefix>_<hash of identity>.npz when
    both a cache folder and a model key (a string that identifies the weights) are given."""
    cache = None
    if cache_dir is not None and model_key is not None:
        digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        cache = Path(cache_dir) / f"{prefix}_{digest}.npz"
        if cache.is_file():
            with np.load(cache) as data:
                return data["features"], {"feature": str(data["feature"]), "cache": str(cache), "cached": True}
    features, key = compute()
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, features=features, feature=np.array(key))
    return features, {"feature": key, "cache": str(cache) if cache else None, "cached": False}
