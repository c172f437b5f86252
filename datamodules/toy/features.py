"""Fixed, parameter-free "2D" and "3D" features for the toy corpus, in the HowTo100M feature layout.

Stand-ins for ResNet-152 (2D, 1 row per second) and ResNeXt-101 (3D, 1.5 rows per second) so the feature-based
path can be trained and evaluated without a pretrained CNN:

* 2D at 1/s: the frame at t = row seconds, as an 8×8 grid of mean RGB (192) ‖ an 8-bin histogram per channel (24).
* 3D at 1.5/s: over the row's 2/3 s (4 frames at 6 fps), the mean absolute frame difference on an 8×8 RGB grid (192).

Each video gets `<out>/2d/<video_id>.npy` and `<out>/3d/<video_id>.npy` (T×D float32) with `<video_id>.json`
sidecars {"rate", "dim", "extractor"}, which datamodules.feature_store reads.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from datamodules.atomic import atomic_path, atomic_write
from datamodules.narrations.readers import read_video_list
from datamodules.video.decode import DecodeError, read_video

DECODE_FPS = 6.0         # 1 s = 6 frames (2D rows), 2/3 s = 4 frames (3D rows)
RATE_2D, RATE_3D = 1.0, 1.5
GRID = 8
BINS = 8


def _grid(frames: torch.Tensor) -> torch.Tensor:
    """N×H×W×3 float → N×(3·GRID·GRID) block means."""
    return F.adaptive_avg_pool2d(frames.permute(0, 3, 1, 2), GRID).flatten(1)


def features_2d(frames: np.ndarray) -> np.ndarray:
    """T6×H×W×3 uint8 at 6 fps → rows at 1/s."""
    picked = torch.from_numpy(np.ascontiguousarray(frames[::int(DECODE_FPS / RATE_2D)])).float() / 255.0
    hist = torch.stack([torch.stack([torch.histc(f[..., c], bins=BINS, min=0.0, max=1.0) for c in range(3)]).flatten()
                        for f in picked])
    hist = hist / float(picked.shape[1] * picked.shape[2])
    return torch.cat([_grid(picked), hist], dim=1).numpy().astype(np.float32)


def features_3d(frames: np.ndarray) -> np.ndarray:
    """T6×H×W×3 uint8 at 6 fps → rows at 1.5/s (4 frames each)."""
    step = int(round(DECODE_FPS / RATE_3D))
    x = torch.from_numpy(np.ascontiguousarray(frames)).float() / 255.0
    rows = []
    for lo in range(0, len(x), step):
        chunk = x[lo:lo + step]
        diff = (chunk[1:] - chunk[:-1]).abs() if len(chunk) > 1 else torch.zeros_like(chunk)
        rows.append(_grid(diff).mean(dim=0))
    return torch.stack(rows).numpy().astype(np.float32)


def _write(path: Path, x: np.ndarray, rate: float, extractor: str) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, x)
    atomic_write(path.with_suffix(".json"), json.dumps({"rate": rate, "dim": int(x.shape[1]), "extractor": extractor}))


def extract_video(path: str, video_id: str, out_dir: Path, size: int = 48) -> Tuple[int, int]:
    """Write both feature files of one video; (rows 2D, rows 3D). Raises datamodules.video.decode.DecodeError."""

    frames = read_video(path, DECODE_FPS, size).numpy()
    x2, x3 = features_2d(frames), features_3d(frames)
    _write(out_dir / "2d" / f"{video_id}.npy", x2, RATE_2D, "toy_colour_grid")
    _write(out_dir / "3d" / f"{video_id}.npy", x3, RATE_3D, "toy_motion_grid")
    return len(x2), len(x3)


def toy_videos(root: Path) -> List[Tuple[str, str]]:
    """(video_id, path) of the toy corpus' training videos and its YouCook2 / MSR-VTT evaluation videos."""

    root = Path(root)
    out: Dict[str, str] = {}
    for vid, rel in read_video_list(root / "howto100m" / "videos.csv"):
        out[vid] = str(root / "videos" / rel)
    for sub, pattern in (("youcook2/validation", "*/*.mp4"), ("msrvtt/videos", "*.mp4")):
        for p in sorted((root / sub).glob(pattern)):
            out.setdefault(p.stem, str(p))
    return sorted(out.items())


def extract_toy_features(root: Path, out_dir: Path = None, videos: Iterable[Tuple[str, str]] = None,
                         overwrite: bool = False, progress: bool = True) -> Dict[str, int]:
    """Features of every toy video (or `videos`) under out_dir (default <root>/features); counts by outcome."""

    root = Path(root)
    out_dir = Path(out_dir) if out_dir else root / "features"
    todo = list(videos) if videos is not None else toy_videos(root)
    counts = {"written": 0, "skipped": 0, "failed": 0}
    for vid, path in tqdm(todo, desc="toy features", unit="video", disable=not progress):
        if not overwrite and (out_dir / "2d" / f"{vid}.npy").is_file() and (out_dir / "3d" / f"{vid}.npy").is_file():
            counts["skipped"] += 1
            continue
        try:
            extract_video(path, vid, out_dir)
            counts["written"] += 1
        except DecodeError as err:
            counts["failed"] += 1
            tqdm.write(f"[toy features] {vid}: {err}")
    return counts
