"""What are my numbers computed on? Count a dataset's listed videos that are present and decodable, and their hours.

A listed video is *missing* when no file is found for it, *broken* when the file exists but cannot be probed or its
first frame cannot be decoded (datamodules.video.decode.probe + a one-frame read_clip), else *ok* (its probed duration is
added to the total). Lists come from the same readers the data modules and evaluators use, so an audit counts
exactly the videos they would look for.
"""
from __future__ import annotations

import csv
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from tqdm import tqdm
from datamodules.atomic import atomic_path, atomic_write
from datamodules.benchmarks.crosstask import CrossTaskRelease, read_video_list as read_crosstask_videos
from datamodules.benchmarks.msrvtt import read_msrvtt
from datamodules.benchmarks.youcook2 import read_youcook2
from datamodules.narrations.readers import read_video_list
from datamodules.video.decode import DecodeError, probe, read_clip

PathLike = Union[str, Path]


@dataclass(frozen=True)
class ListedVideo:
    key: str                 # the dataset's video id (CrossTask: task/video)
    path: Optional[str]      # resolved file, None when not found


@dataclass
class AuditReport:
    dataset: str
    source: str
    listed: int = 0
    present: int = 0
    decodable: int = 0
    seconds: float = 0.0
    missing: List[Tuple[str, str]] = field(default_factory=list)        # (key, where it was looked for)
    broken: List[Tuple[str, str, str]] = field(default_factory=list)    # (key, path, reason)

    def summary(self) -> Dict[str, Any]:
        return {"dataset": self.dataset, "source": self.source, "listed": self.listed, "present": self.present,
                "decodable": self.decodable, "missing": len(self.missing), "broken": len(self.broken),
                "hours": round(self.seconds / 3600.0, 4), "seconds": round(self.seconds, 2)}


# ------------------------------------------------------------------------------------------------ lists
def list_howto100m(video_csv: PathLike, video_root: PathLike) -> List[ListedVideo]:
    """HowTo100M / MIL-NCE video list (column video_path, relative to video_root)."""

    root = Path(video_root)
    out = []
    for vid, rel in read_video_list(video_csv):
        path = root / rel
        out.append(ListedVideo(vid, str(path) if path.is_file() else None))
    return out


def list_retrieval(items) -> List[ListedVideo]:
    """Unique videos of a RetrievalSet (YouCook2 / MSR-VTT readers), in first-listed order."""
    seen: Dict[str, ListedVideo] = {}
    for it in items:
        seen.setdefault(it.video_id, ListedVideo(it.video_id, it.path))
    return list(seen.values())


def list_crosstask(root: PathLike, videos_dir: Optional[PathLike] = None) -> List[ListedVideo]:
    """Every primary-task (task, video) pair of videos.csv (+ videos_val.csv when present), found or not."""

    release = CrossTaskRelease(root, videos_dir=videos_dir)
    out, seen = [], set()
    for csv_path in (release.videos_csv, release.val_csv):
        if not csv_path.is_file():
            continue
        for task, vids in read_crosstask_videos(csv_path).items():
            if task not in release.tasks:
                continue
            for vid in vids:
                if (task, vid) not in seen:
                    seen.add((task, vid))
                    out.append(ListedVideo(f"{task}/{vid}", release.video_paths.get(vid)))
    return out


def dataset_list(dataset: str, annotations: PathLike, video_root: Optional[PathLike] = None) -> List[ListedVideo]:
    """dataset: howto100m (video CSV) | youcook2 (CSV or JSON) | msrvtt (test CSV) | crosstask (release folder)."""
    if dataset == "howto100m":
        if video_root is None:
            raise ValueError("howto100m: --video-root is needed (video_path entries are relative to it)")
        return list_howto100m(annotations, video_root)
    if dataset == "youcook2":
        return list_retrieval(read_youcook2(annotations, video_root or Path(annotations).parent))
    if dataset == "msrvtt":
        return list_retrieval(read_msrvtt(annotations, video_root or Path(annotations).parent / "videos"))
    if dataset == "crosstask":
        return list_crosstask(annotations, video_root)
    raise ValueError(f"unknown dataset '{dataset}' (valid: howto100m, youcook2, msrvtt, crosstask)")


# ------------------------------------------------------------------------------------------------ checking
def check_video(path: str) -> Tuple[Optional[float], Optional[str]]:
    """(duration seconds, None) when the file probes and its first frame decodes, else (None, reason)."""

    try:
        info = probe(path)
        read_clip(path, 0.0, 1, 1.0, 32)
        return float(info.duration), None
    except DecodeError as err:
        return None, err.reason


def audit(videos: Sequence[ListedVideo], dataset: str = "", source: str = "", workers: int = 1,
          progress: bool = True) -> AuditReport:
    report = AuditReport(dataset, str(source), listed=len(videos))
    present = [v for v in videos if v.path is not None]
    report.missing = [(v.key, "not found") for v in videos if v.path is None]
    report.present = len(present)
    bar = tqdm(total=len(present), desc=f"audit {dataset}", unit="video", disable=not progress)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for video, (duration, reason) in zip(present, pool.map(lambda v: check_video(v.path), present)):
            if reason is None:
                report.decodable += 1
                report.seconds += duration
            else:
                report.broken.append((video.key, video.path, reason))
            bar.update(1)
    bar.close()
    return report


def write_audit(report: AuditReport, out_dir: PathLike) -> Dict[str, Any]:
    """<dataset>_audit.json (summary) + <dataset>_missing.csv + <dataset>_broken.csv; returns the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = report.dataset or "dataset"
    with atomic_path(out / f"{name}_missing.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "problem"])
        w.writerows(report.missing)
    with atomic_path(out / f"{name}_broken.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "path", "reason"])
        w.writerows(report.broken)
    summary = {**report.summary(), "missing_list": str(out / f"{name}_missing.csv"),
               "broken_list": str(out / f"{name}_broken.csv")}
    atomic_write(out / f"{name}_audit.json", json.dumps(summary, indent=1))
    return summary
