"""Re-time every narration of a corpus with a trained model, resumably (the Python API behind `milnce align`).

    model = milnce.api.load_model("runs/demo/checkpoints/last.ckpt")
    summary = align_corpus(model, "data/toy/howto100m/caption.json", "data/toy/videos", "runs/aligned",
                           SearchSettings(radius=32.0))
    # runs/aligned/{caption.json, captions/<id>.csv, alignment.parquet, failed.txt, settings.json}

Per video: decode once (windows.py), embed every window, score every narration (scoring.py), write
parts/<video>.parquet atomically. A rerun skips videos that have a part (resume) and refuses to mix settings; a
video that cannot be decoded is listed in failed.txt (with the reason) and its narrations keep their ASR times in the
caption files (their sidecar rows say so: score NaN). Parallel: DataLoader workers decode while the model embeds;
across devices, run one process per device (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK): each takes its
round-robin share of the videos, and whichever finishes last assembles the outputs.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import pyarrow as pa
from torch.utils.data import DataLoader
from tqdm import tqdm

from milnce.align.scoring import SearchSettings, retime
from milnce.align.windows import DecodedVideos, video_scores
from datamodules.atomic import atomic_write
from datamodules.benchmarks.retrieval_items import VideoResolver
from datamodules.narrations.readers import read_caption_folder, read_caption_json, read_video_list
from datamodules.narrations.retimed import SIDECAR, captions_from_sidecar, read_sidecar, video_table, \
    write_captions, write_table

PathLike = Union[str, Path]
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov")
Narrations = Tuple[str, np.ndarray, np.ndarray, List[str]]


def read_narrations(captions: PathLike) -> List[Narrations]:
    """(video_id, starts, ends, texts) of caption.json or a folder of <video_id>.csv, rows as the loaders keep them."""
    captions = Path(captions)
    reader = read_caption_folder if captions.is_dir() else read_caption_json
    return [(vid, np.asarray(s, np.float64), np.asarray(e, np.float64), list(t)) for vid, s, e, t in reader(captions)]


def video_paths(video_ids: Iterable[str], video_root: PathLike, video_list: Optional[PathLike] = None) -> Dict:
    """video_id → path: from a MIL-NCE video list (column video_path, relative to video_root) or <id>.<suffix>."""
    root = Path(video_root)
    if video_list is not None:
        listed = dict(read_video_list(video_list))
        return {v: str(root / listed[v]) for v in video_ids if v in listed}
    resolve = VideoResolver(VIDEO_SUFFIXES)   # one listing of the folder, not a stat per suffix and video
    return {v: p for v in video_ids for p in [resolve(root, v)] if p is not None}


def distributed_share() -> Tuple[int, int]:
    """(rank, world) from torchrun's environment; (0, 1) for a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _check_settings(out_dir: Path, settings: dict) -> None:
    path = out_dir / "settings.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(f"{out_dir}: already holds an alignment made with other settings ({', '.join(diff)}); "
                             f"use another output folder")
    else:
        atomic_write(path, json.dumps(settings, indent=1))


def _unaligned(starts, ends) -> Dict[str, np.ndarray]:
    nan = np.full(len(starts), np.nan)
    return {"pred_start": starts, "pred_end": ends, "score": nan, "alignability": nan, "margin": nan}


def align_video(model, frames, starts, ends, texts, settings: SearchSettings) -> Dict:
    """One decoded video (3×T×S×S uint8) and its narrations → the sidecar columns (scoring.retime)."""
    scores, windows = video_scores(model, frames, texts, settings.stride)
    return retime(scores, windows.centres, starts, ends, settings, windows.seconds, windows.duration)


def align_corpus(model, captions: PathLike, video_root: PathLike, out_dir: PathLike,
                 settings: SearchSettings = SearchSettings(), video_list: Optional[PathLike] = None,
                 num_workers: int = 0, rank: Optional[int] = None, world: Optional[int] = None,
                 progress: bool = True) -> Dict:
    """Re-time the corpus into out_dir (see the module docstring); returns a summary dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if rank is None or world is None:
        rank, world = distributed_share()
    corpus = read_narrations(captions)
    paths = video_paths([v for v, *_ in corpus], video_root, video_list)
    run_settings = {"checkpoint": getattr(model, "checkpoint_path", None), "preprocess": dict(model.preprocess),
                    "captions": str(Path(captions).resolve()), **asdict(settings)}
    _check_settings(out_dir, run_settings)
    parts = out_dir / "parts"
    parts.mkdir(exist_ok=True)
    by_id = {v: (s, e, t) for v, s, e, t in corpus}
    mine = [v for v, *_ in corpus][rank::world]
    todo = [v for v in mine if v in paths and not (parts / f"{v}.parquet").is_file()]
    failures: Dict[str, str] = {v: "no video file found" for v in mine if v not in paths}
    loader = DataLoader(DecodedVideos([(v, paths[v]) for v in todo], model.clip_spec), batch_size=None,
                        num_workers=num_workers)
    t0, n_lines = time.perf_counter(), 0
    bar = tqdm(loader, total=len(todo), desc="align", unit="video", disable=not progress)
    for item in bar:
        vid = item["video_id"]
        starts, ends, texts = by_id[vid]
        if item["error"] is not None:
            failures[vid] = item["error"]
            continue
        cols = align_video(model, item["frames"], starts, ends, texts, settings)
        write_table(parts / f"{vid}.parquet", video_table(vid, texts, {"asr_start": starts, "asr_end": ends, **cols}))
        n_lines += len(texts)
        bar.set_postfix_str(f"{n_lines} narrations, {len(failures)} failed")
    for vid, reason in failures.items():
        atomic_write(parts / f"{vid}.failed", reason)
    summary = {"videos": len(corpus), "this_rank": len(mine), "aligned_now": len(todo) - len(
        [v for v in failures if v in todo]), "failed": len(failures), "seconds": round(time.perf_counter() - t0, 2)}
    if all((parts / f"{v}.parquet").is_file() or (parts / f"{v}.failed").is_file() for v in by_id):
        summary.update(assemble(out_dir, corpus))
    return summary


def assemble(out_dir: Path, corpus: List[Narrations]) -> Dict:
    """parts/*.parquet → alignment.parquet + caption.json + captions/; failed videos keep their ASR times."""
    parts = out_dir / "parts"
    tables, failed = [], []
    for vid, starts, ends, texts in corpus:
        part = parts / f"{vid}.parquet"
        if part.is_file():
            tables.append(read_sidecar(part))
        else:
            failed.append(f"{vid}\t{(parts / f'{vid}.failed').read_text()}")
            tables.append(video_table(vid, texts, {"asr_start": starts, "asr_end": ends, **_unaligned(starts, ends)}))
    table = pa.concat_tables(tables) if tables else video_table("", [], _unaligned(np.zeros(0), np.zeros(0)) | {
        "asr_start": np.zeros(0), "asr_end": np.zeros(0)})
    write_table(out_dir / SIDECAR, table)
    write_captions(out_dir, captions_from_sidecar(table))
    atomic_write(out_dir / "failed.txt", "".join(f"{line}\n" for line in failed))
    return {"sidecar": str(out_dir / SIDECAR), "captions": str(out_dir / "caption.json"),
            "failed_list": str(out_dir / "failed.txt"), "narrations": table.num_rows}
