"""Per-video window features for the feature-based training path, written next to extraction:
<features_dir>/<stem>.npy (T×D float32, row i = the window starting at i·stride seconds) and <stem>.json
{"rate": 1/stride, "stride", "window", "start": 0, "rows", "video", "checkpoint", "preprocess"}."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import numpy as np

from datamodules.atomic import atomic_path, atomic_write


def write_features(features_dir: Path, emb, stride: float, window: float, extra: Dict[str, Any]) -> Path:
    """Rows on the uniform stride grid only (the extra window that reaches the video's end is left out)."""
    features_dir.mkdir(parents=True, exist_ok=True)
    on_grid = np.isclose(emb.starts / stride, np.round(emb.starts / stride), atol=1e-4)
    rows = emb.embeddings[on_grid]
    stem = Path(emb.video).stem
    with atomic_path(features_dir / f"{stem}.npy") as tmp:
        np.save(tmp, rows.astype(np.float32))
    meta = {"video": emb.video, "rate": 1.0 / stride, "stride": stride, "window": window, "start": 0.0,
            "rows": int(rows.shape[0]), "dim": int(rows.shape[1]), "duration": emb.duration, **extra}
    atomic_write(features_dir / f"{stem}.json", json.dumps(meta, indent=1))
    return features_dir / f"{stem}.npy"
