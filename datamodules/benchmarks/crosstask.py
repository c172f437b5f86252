"""The CrossTask release (Zhukov et al., CVPR 2019) as laid out on disk, and the VideoCLIP seed-0 test split.

<root>/tasks_primary.txt            6-line blocks: id, title, url, K, "step1,step2,…", blank
<root>/videos.csv, videos_val.csv   no header: task_id,video_id,url
<root>/annotations/<task>_<vid>.csv no header: step (1-based),start,end (float seconds)
<videos_dir>/…/<vid>.{mp4,mkv,webm} found by id anywhere below the videos folder (default <root>/videos)

Semantics mirror data.py (read_task_info, get_vids, read_assignment, random_split) and VideoCLIP's
CrossTaskMetaProcessor (PROTOCOLS Part B §1.1–1.2, 1.7).
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from datamodules.benchmarks.retrieval_items import VIDEO_EXTENSIONS


@dataclass(frozen=True)
class CrossTaskTask:
    task_id: str
    title: str
    url: str
    n_steps: int
    steps: Tuple[str, ...]


@dataclass(frozen=True)
class CrossTaskVideo:
    task_id: str
    video_id: str
    path: Optional[str]        # None when the video file is not on disk
    annotation: str            # annotations/<task>_<vid>.csv


def read_task_info(path) -> "OrderedDict[str, CrossTaskTask]":
    """Parse tasks_primary.txt / tasks_related.txt.

    Like the original parser, the steps line is stripped as a whole and split on ',' with no per-step stripping, so
    "a, b" yields " b". A K line that disagrees with the number of steps is an error (the original would go on and
    index past the step list).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CrossTask task file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    tasks: "OrderedDict[str, CrossTaskTask]" = OrderedDict()
    i = 0
    while i < len(lines):
        if not lines[i].strip():           # tolerate trailing blank lines at the end of the file
            i += 1
            continue
        if i + 4 >= len(lines):
            raise ValueError(f"{path}:{i + 1}: truncated task block (need id, title, url, K, steps)")
        task_id, title, url, k_line, steps_line = (lines[i + j].strip() for j in range(5))
        try:
            k = int(k_line)
        except ValueError:
            raise ValueError(f"{path}:{i + 4}: number of steps is not an integer: {k_line!r}") from None
        steps = tuple(steps_line.split(","))
        if len(steps) != k:
            raise ValueError(f"{path}:{i + 5}: task {task_id} declares {k} steps but lists {len(steps)}")
        if task_id in tasks:
            raise ValueError(f"{path}:{i + 1}: task {task_id} appears twice")
        tasks[task_id] = CrossTaskTask(task_id, title, url, k, steps)
        if i + 5 < len(lines) and lines[i + 5].strip():
            raise ValueError(f"{path}:{i + 6}: expected an empty line after task {task_id}, got {lines[i + 5]!r}")
        i += 6
    if not tasks:
        raise ValueError(f"{path}: no task blocks")
    return tasks


def read_video_list(path) -> "OrderedDict[str, List[str]]":
    """videos.csv / videos_val.csv → {task: [video ids]} in order of first appearance."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CrossTask video list not found: {path}")
    out: "OrderedDict[str, List[str]]" = OrderedDict()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.strip().split(",")
            if len(parts) != 3:
                raise ValueError(f"{path}:{n}: expected task_id,video_id,url, got {line.strip()!r}")
            out.setdefault(parts[0], []).append(parts[1])
    return out


def read_assignment(path, T: int, K: int) -> np.ndarray:
    """Y_true (T×K uint8): rows floor(start):ceil(end) of column step-1 set to 1; numpy clips slices past T."""
    path = Path(path)
    y = np.zeros((T, K), dtype=np.uint8)
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.strip().split(",")
            try:
                if len(parts) != 3:
                    raise ValueError
                step, start, end = int(parts[0]), float(parts[1]), float(parts[2])
            except ValueError:
                raise ValueError(f"{path}:{n}: expected step,start,end (int,float,float), got {line.strip()!r}") from None
            if not 1 <= step <= K:
                raise ValueError(f"{path}:{n}: step {step} outside 1..{K}")
            y[int(math.floor(start)):int(math.ceil(end)), step - 1] = 1
    return y


def random_split(task_vids: Dict[str, List[str]], test_tasks, n_train: int = 30,
                 seed: Optional[int] = 0) -> Tuple[Dict[str, List[str]], Dict[str, List[str]]]:
    """data.py `random_split` under np.random.seed(seed) (VideoCLIP): for each test task with more than n_train videos,
    in dict order, n_train training videos drawn without replacement; the rest is the test set. Tasks with ≤ n_train
    videos go entirely to training (they have no test videos, as in the original)."""
    rng = np.random.RandomState(seed) if seed is not None else np.random.mtrand._rand
    train, test = {}, {}
    for task, vids in task_vids.items():
        if task in test_tasks and len(vids) > n_train:
            train[task] = rng.choice(vids, n_train, replace=False).tolist()
            chosen = set(train[task])
            test[task] = [v for v in vids if v not in chosen]
        else:
            train[task] = list(vids)
    return train, test


def index_videos(videos_dir, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> Dict[str, str]:
    """{video id: path} for every video file below `videos_dir` (first extension in `extensions` order wins)."""
    rank = {e: i for i, e in enumerate(extensions)}
    found: Dict[str, Tuple[int, str]] = {}
    for dirpath, _, files in os.walk(videos_dir):
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext in rank and (stem not in found or rank[ext] < found[stem][0]):
                found[stem] = (rank[ext], os.path.join(dirpath, name))
    return {k: v[1] for k, v in found.items()}


class CrossTaskRelease:
    """A CrossTask release on disk plus a folder of downloaded videos."""

    def __init__(self, root, videos_dir=None, annotations_dir=None, primary_file: str = "tasks_primary.txt",
                 videos_csv: str = "videos.csv", val_csv: str = "videos_val.csv"):
        self.root = Path(root)
        self.videos_dir = Path(videos_dir) if videos_dir else self.root / "videos"
        self.annotations_dir = Path(annotations_dir) if annotations_dir else self.root / "annotations"
        self.tasks = read_task_info(self.root / primary_file)
        self.videos_csv = self.root / videos_csv
        self.val_csv = self.root / val_csv
        self.video_paths = index_videos(self.videos_dir) if self.videos_dir.is_dir() else {}

    def annotation_path(self, task: str, vid: str) -> Path:
        return self.annotations_dir / f"{task}_{vid}.csv"

    def _annotated(self, path) -> "OrderedDict[str, List[str]]":
        # VideoCLIP's _get_vids keeps a line only when its inputs exist; here: annotation csv and video file.
        out: "OrderedDict[str, List[str]]" = OrderedDict()
        for task, vids in read_video_list(path).items():
            for vid in vids:
                if vid in self.video_paths and self.annotation_path(task, vid).is_file():
                    out.setdefault(task, []).append(vid)
        return out

    def missing_videos(self) -> List[Tuple[str, str]]:
        """Annotated primary-task (task, video) pairs in videos.csv whose video file is not on disk."""
        missing = []
        for task, vids in read_video_list(self.videos_csv).items():
            if task not in self.tasks:
                continue
            missing += [(task, v) for v in vids
                        if v not in self.video_paths and self.annotation_path(task, v).is_file()]
        return missing

    def evaluation_videos(self, use_split: bool = True, n_train: int = 30, seed: int = 0):
        """(videos, info). use_split: the seed-0 test split; else every annotated, available, non-val primary video.

        info has per_task counts (train/test/evaluated), the number of val videos excluded and the missing list.
        """
        task_vids = self._annotated(self.videos_csv)
        val = self._annotated(self.val_csv) if self.val_csv.is_file() else {}
        task_vids = OrderedDict((t, [v for v in vids if t not in val or v not in val[t]]) for t, vids in task_vids.items())
        task_vids = OrderedDict((t, v) for t, v in task_vids.items() if t in self.tasks)
        if use_split:
            train, test = random_split(task_vids, set(self.tasks), n_train, seed)
        else:
            train, test = {t: [] for t in task_vids}, {t: list(v) for t, v in task_vids.items()}
        videos = [CrossTaskVideo(t, v, self.video_paths.get(v), str(self.annotation_path(t, v)))
                  for t, vids in test.items() for v in vids]
        per_task = {t: {"available": len(task_vids.get(t, [])), "train": len(train.get(t, [])),
                        "test": len(test.get(t, []))} for t in self.tasks}
        info = {"per_task": per_task, "val_excluded": sum(len(v) for v in val.values()),
                "missing": self.missing_videos(), "use_split": use_split, "n_train": n_train, "seed": seed}
        return videos, info
