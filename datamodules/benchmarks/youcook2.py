"""YouCook2 validation clips for text→video retrieval, from the MIL-NCE CSV or the official annotation JSON.

- MIL-NCE `validation_youcook.csv`: columns end,start,task,text,video_id (integer seconds; 3,350 rows). Videos at
  <root>/validation/<task>/<video_id>.{mp4,mkv,webm}, tried in that order (youcook_loader.py).
- Official `youcookii_annotations_trainval.json`: {"database": {vid: {"subset", "recipe_type", "annotations":
  [{"segment": [s, e], "sentence", "id"}]}}}; one item per annotated segment of the chosen subset. Videos at
  <root>/<split>/<recipe_type>/<vid>.{mp4,mkv,webm}.

Videos that are not on disk stay in the set with path=None (listed by RetrievalSet.missing), never silently dropped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from datamodules.benchmarks.retrieval_items import (RetrievalItem, RetrievalSet, VideoResolver, parse_seconds,
                                         read_csv_rows, read_json_annotations)

CSV_COLUMNS = ("end", "start", "task", "text", "video_id")


def read_youcook2_csv(csv_path, video_root, split_dir: str = "validation") -> RetrievalSet:
    csv_path, video_root = Path(csv_path), Path(video_root)
    resolve = VideoResolver()
    items = []
    for line, row in read_csv_rows(csv_path, CSV_COLUMNS):
        start = parse_seconds(row["start"], csv_path, line, "start")
        end = parse_seconds(row["end"], csv_path, line, "end")
        if end < start:
            raise ValueError(f"{csv_path}:{line}: end ({row['end']}) is before start ({row['start']})")
        task, vid = row["task"].strip(), row["video_id"].strip()
        if not vid or not task:
            raise ValueError(f"{csv_path}:{line}: empty video_id or task")
        items.append(RetrievalItem(key=f"{csv_path.name}:{line}", video_id=vid, text=row["text"], start=start,
                                   end=end, path=resolve(video_root / split_dir / task, vid)))
    if not items:
        raise ValueError(f"{csv_path}: no data rows")
    return RetrievalSet(name="youcook2", source=str(csv_path), video_root=str(video_root), items=items,
                        split=split_dir)


def read_youcook2_json(json_path, video_root, split: str = "validation") -> RetrievalSet:
    json_path, video_root = Path(json_path), Path(video_root)
    data = read_json_annotations(json_path, "database", dict)
    resolve = VideoResolver()
    items = []
    for vid, entry in data["database"].items():
        where = f"{json_path}: database['{vid}']"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is not an object")
        if entry.get("subset") != split:
            continue
        for key in ("recipe_type", "annotations"):
            if key not in entry:
                raise ValueError(f"{where} lacks '{key}'")
        directory = video_root / split / str(entry["recipe_type"])
        path = resolve(directory, vid)
        for i, ann in enumerate(entry["annotations"]):
            seg = ann.get("segment") if isinstance(ann, dict) else None
            if not (isinstance(seg, (list, tuple)) and len(seg) == 2) or "sentence" not in ann:
                raise ValueError(f"{where}['annotations'][{i}] needs 'segment': [start, end] and 'sentence'")
            start, end = float(seg[0]), float(seg[1])
            if not 0 <= start <= end:
                raise ValueError(f"{where}['annotations'][{i}]: bad segment {seg}")
            clip_id = ann.get("id", i)
            items.append(RetrievalItem(key=f"{vid}_{clip_id}", video_id=vid, text=str(ann["sentence"]),
                                       start=start, end=end, path=path))
    if not items:
        raise ValueError(f"{json_path}: no annotations with subset == '{split}'")
    return RetrievalSet(name="youcook2", source=str(json_path), video_root=str(video_root), items=items,
                        split=split)


def read_youcook2(annotations, video_root, split: Optional[str] = None) -> RetrievalSet:
    """Dispatch on the file type: .json → official annotations (split default "validation"), else the MIL-NCE CSV."""
    if str(annotations).endswith(".json"):
        return read_youcook2_json(annotations, video_root, split or "validation")
    return read_youcook2_csv(annotations, video_root, split or "validation")
