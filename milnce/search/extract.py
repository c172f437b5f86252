"""Sliding-window extraction over a collection of videos into a moment index (milnce.search.index), resumable.

Optionally also writes per-video features for the feature-based training path: <features_dir>/<stem>.npy (T×D
float32, row i = the window starting at i·stride seconds) and <stem>.json {"rate": 1/stride, "stride", "window",
"start": 0, "rows", "video", "checkpoint", "preprocess"}.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
from tqdm import tqdm

from milnce.api import clip_seconds, encode_video
from milnce.search.index import IndexWriter, NonFiniteEmbedding, build_faiss, read_failed
from datamodules.atomic import atomic_path, atomic_write

PathLike = Union[str, Path]
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv")


def list_videos(sources: Sequence[PathLike]) -> List[str]:
    """Videos from folders (recursive, by suffix), list files (.txt: one path per line, relative to the list's
    folder) and video files, in a stable order without duplicates."""
    out: List[str] = []
    for src in sources:
        src = Path(src)
        if src.is_dir():
            out += sorted(str(p) for p in src.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        elif src.suffix.lower() in (".txt", ".lst"):
            for line in src.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    p = Path(line)
                    out.append(str(p if p.is_absolute() else src.parent / p))
        elif src.suffix.lower() in VIDEO_SUFFIXES or src.exists():
            out.append(str(src))
        else:
            raise FileNotFoundError(f"{src}: not a folder, a video or a .txt list of videos")
    seen, unique = set(), []
    for v in out:
        if v not in seen:
            seen.add(v)
            unique.append(v)
    return unique


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


def extract(model, videos: Sequence[str], out_dir: PathLike, window: Optional[float] = None,
            stride: Optional[float] = None, normalize: bool = False, shard_rows: int = 50_000,
            features_dir: Optional[PathLike] = None, nlist: int = 0, batch_size: int = 16,
            progress: bool = True) -> Dict[str, Any]:
    """Encode every video not yet done into the index at out_dir, then (re)build its faiss index."""
    window = float(window or clip_seconds(model))
    stride = float(stride or window / 2)
    settings = {"checkpoint": getattr(model, "checkpoint_path", None), "preprocess": dict(model.preprocess),
                "window": window, "stride": stride, "normalize": bool(normalize), "nlist": int(nlist),
                "base_dir": str(Path.cwd())}   # relative video paths in the rows are relative to this
    writer = IndexWriter(out_dir, settings, shard_rows=shard_rows)
    todo = [v for v in videos if not writer.is_done(v)]
    skipped = len(videos) - len(todo)
    failed_before = {v for v, _ in read_failed(out_dir)}
    failed, windows, t0 = 0, 0, time.perf_counter()
    bar = tqdm(todo, desc="extract", unit="video", disable=not progress)
    extra = {"checkpoint": settings["checkpoint"], "preprocess": settings["preprocess"]}
    for video in bar:
        try:
            emb = encode_video(model, video, window=window, stride=stride, batch_size=batch_size)
        except Exception as err:  # noqa: BLE001 - an unreadable video is listed, never fatal
            failed += 1
            if video not in failed_before:
                writer.add_failed(video, f"{type(err).__name__}: {err}")
            continue
        try:
            writer.add(video, emb.starts, emb.ends, emb.embeddings)
        except NonFiniteEmbedding as err:  # a NaN row would poison every search: the video is listed, not indexed
            failed += 1
            if video not in failed_before:
                writer.add_failed(video, str(err))
            continue
        windows += len(emb.starts)
        if features_dir is not None:
            write_features(Path(features_dir), emb, stride, window, extra)
        elapsed = time.perf_counter() - t0
        bar.set_postfix_str(f"{(bar.n + 1) / elapsed:.2f} videos/s, {windows} windows, {failed} failed")
    writer.close()
    seconds = time.perf_counter() - t0
    built = build_faiss(out_dir, nlist=nlist) if writer.settings.get("shards") else {"rows": 0}
    return {"videos": len(videos), "skipped_done": skipped, "encoded": len(todo) - failed, "failed": failed,
            "windows": windows, "seconds": round(seconds, 2),
            "videos_per_s": round((len(todo) - failed) / seconds, 3) if seconds > 0 else None, **built}
