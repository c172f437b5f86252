"""Sliding-window extraction over a collection of videos into a moment index (milnce.search.index), resumable.

mode="once" (default): a Lightning `trainer.predict` over window batches (milnce.search.predict): each video decoded
once in DataLoader workers while the model runs, on any accelerator / devices / nodes, every finished video filed
into its rank's shards. mode="per_window": the earlier path, kept for comparison (tools/bench_extract.py): one video
after another in this process, every window seeking and decoding on its own (milnce.api.encode_video).
Either way the faiss index and rows.parquet are built at the end from every complete shard (faiss_build).

Optionally also writes per-video features for the feature-based training path (milnce.search.features).
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import pytorch_lightning as pl
import torch
from tqdm import tqdm

from milnce.api import clip_seconds, encode_video, plan_windows
from milnce.inference import module_device
from milnce.search.faiss_build import DEFAULT_TRAIN_SAMPLE, build_faiss
from milnce.search.features import write_features
from milnce.search.index import IndexWriter, NonFiniteEmbedding, complete_shards, indexed_videos_and_rows, \
    read_failed
from milnce.search.predict import IndexPredictionWriter, WindowDataModule, WindowEncoder

PathLike = Union[str, Path]
MODES = ("once", "per_window")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv")
__all__ = ["MODES", "extract", "list_videos", "write_features"]


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
    return list(dict.fromkeys(out))


def _per_window(model, todo, writer: IndexWriter, failed_before, window, stride, batch_size, features_dir,
                progress) -> Dict[str, float]:
    """The earlier extraction loop: one video after another, encode_video decoding every window on its own."""
    stats = {"encoded": 0, "failed": 0, "windows": 0, "frames": 0.0}
    extra = {"checkpoint": writer.settings["checkpoint"], "preprocess": writer.settings["preprocess"]}
    t0 = time.perf_counter()
    bar = tqdm(todo, desc="extract", unit="video", disable=not progress)
    for video in bar:
        try:
            emb = encode_video(model, video, window=window, stride=stride, batch_size=batch_size)
            writer.add(video, emb.starts, emb.ends, emb.embeddings)
        except Exception as err:  # noqa: BLE001 - an unreadable (or non-finite) video is listed, never fatal
            stats["failed"] += 1
            if video not in failed_before:
                writer.add_failed(video, str(err) if isinstance(err, NonFiniteEmbedding)
                                  else f"{type(err).__name__}: {err}")
            continue
        stats["encoded"] += 1
        stats["windows"] += len(emb.starts)
        if hasattr(model, "clip_spec"):  # each clip of a window reads its num_frames frames on its own
            clips = plan_windows(emb.duration, window, stride, clip_seconds(model)).clips
            stats["frames"] += clips.size * model.clip_spec.num_frames
        if features_dir is not None:
            write_features(Path(features_dir), emb, stride, window, extra)
        bar.set_postfix_str(f"{stats['windows'] / (time.perf_counter() - t0):.1f} windows/s, "
                            f"{stats['failed']} failed")
    writer.close()
    return stats


def lightning_accelerator(device) -> str:
    """The Lightning accelerator name of a torch device ("cuda:1" → "gpu")."""
    kind = torch.device(device).type
    return {"cuda": "gpu"}.get(kind, kind)


def extract(model, videos: Sequence[str], out_dir: PathLike, window: Optional[float] = None,
            stride: Optional[float] = None, normalize: bool = False, shard_rows: int = 50_000,
            features_dir: Optional[PathLike] = None, nlist: int = 0, batch_size: int = 16,
            progress: bool = True, mode: str = "once", num_workers: int = 1, chunk_seconds: float = 60.0,
            accelerator: Optional[str] = None, devices: Union[int, str] = 1, num_nodes: int = 1,
            strategy: str = "auto", index_spec: Optional[str] = None, train_sample: int = DEFAULT_TRAIN_SAMPLE,
            build_index: bool = True) -> Dict[str, Any]:
    """Encode every video not yet done into the index at out_dir, then (re)build its faiss index.

    index_spec: a faiss factory string ("Flat", "IVF4096,PQ64", …; default from nlist: "Flat" or "IVF{nlist},Flat");
    train_sample: vectors drawn (seeded) to train it. Returns counts, timings and what was built."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    window = float(window or clip_seconds(model))
    stride = float(stride or window / 2)
    settings = {"checkpoint": getattr(model, "checkpoint_path", None), "preprocess": dict(model.preprocess),
                "window": window, "stride": stride, "normalize": bool(normalize), "nlist": int(nlist),
                "base_dir": str(Path.cwd())}   # relative video paths in the rows are relative to this
    done_before, rows_before = indexed_videos_and_rows(out_dir) if Path(out_dir).is_dir() else (set(), 0)
    todo = [v for v in videos if v not in done_before]
    failed_before = {v for v, _ in read_failed(out_dir)}
    t0 = time.perf_counter()
    rank = 0
    if mode == "per_window":
        writer = IndexWriter(out_dir, settings, shard_rows=shard_rows)
        stats = _per_window(model, todo, writer, failed_before, window, stride, batch_size, features_dir, progress)
    else:
        callback = IndexPredictionWriter(out_dir, settings, shard_rows, features_dir, failed_before)
        trainer = pl.Trainer(accelerator=accelerator or lightning_accelerator(module_device(model)), devices=devices, num_nodes=num_nodes,
                             strategy=strategy, logger=False, enable_checkpointing=False, enable_model_summary=False,
                             use_distributed_sampler=False, callbacks=[callback], enable_progress_bar=progress,
                             default_root_dir=str(out_dir))
        rank = trainer.global_rank
        if todo:
            data = WindowDataModule(todo, model.clip_spec, window, stride, batch_size, "once", chunk_seconds,
                                    num_workers)
            with warnings.catch_warnings():  # an iterable loader has no sampler indices; the writer needs none
                warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
                trainer.predict(WindowEncoder(model), datamodule=data, return_predictions=False)
            trainer.strategy.barrier()  # every rank's shards are on disk before rank 0 builds the index
        stats = callback.stats
    seconds = time.perf_counter() - t0
    done_after, rows_after = indexed_videos_and_rows(out_dir)
    encoded = sum(1 for v in todo if v in done_after)
    windows = rows_after - rows_before
    summary = {"mode": mode, "videos": len(videos), "skipped_done": len(videos) - len(todo), "encoded": encoded,
               "failed": len(todo) - encoded, "windows": windows, "seconds": round(seconds, 2),
               "videos_per_s": round(encoded / seconds, 3) if seconds > 0 else None,
               "windows_per_s": round(windows / seconds, 2) if seconds > 0 else None,
               # frames the decoder handed over, per window (counted in this process: one device only)
               "frames_per_window": round(stats["frames"] / stats["windows"], 2)
               if stats["windows"] and stats["encoded"] == encoded else None}
    if build_index and rank == 0:
        summary.update(build_faiss(out_dir, nlist=nlist, spec=index_spec, train_sample=train_sample, progress=progress)
                       if complete_shards(out_dir) else {"rows": 0})
    return summary
