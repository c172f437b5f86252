"""MSR-VTT text→video retrieval: the 1k-A ("JSFusion") split and the full official test split.

- 1k-A: CSV columns key,vid_key,video_id,sentence (1,000 rows, one caption per video); videos at
  <root>/<video_id>.mp4 (the MIL-NCE loader; .mkv/.webm are accepted too).
- Full test split: `MSRVTT_data.json` ({"videos": [{"video_id", "split"}], "sentences": [{"video_id", "caption"}]},
  the file fine-tuning reads), every video whose split is "test" (2,990 in the official release), in file order.
- All captions per video (20 in MSR-VTT) come from the same JSON, in file order: `captions` of the RetrievalSet.
  The single caption of a full-split video is its first caption in that order; a 1k-A video keeps its CSV sentence.
Each item spans the whole video: `end` is None and the window dataset probes the duration with
datamodules.video.decode.probe, as the original did with ffmpeg.probe.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

from datamodules.benchmarks.retrieval_items import (RetrievalItem, RetrievalSet, VideoResolver, read_csv_rows,
                                                    read_json_annotations)

CSV_COLUMNS = ("key", "vid_key", "video_id", "sentence")


def read_msrvtt_captions(json_path) -> Dict[str, List[str]]:
    """{video_id: [caption, …]} of an MSRVTT_data.json, captions in file order."""
    json_path = Path(json_path)
    data = read_json_annotations(json_path, "sentences", list)
    captions: Dict[str, List[str]] = {}
    for i, s in enumerate(data["sentences"]):
        if not isinstance(s, dict) or "video_id" not in s or "caption" not in s:
            raise ValueError(f"{json_path}: sentences[{i}] needs 'video_id' and 'caption'")
        captions.setdefault(str(s["video_id"]), []).append(str(s["caption"]))
    return captions


def _with_captions(items: List[RetrievalItem], captions: Dict[str, List[str]], json_path) -> List[List[str]]:
    out = []
    for it in items:
        if it.video_id not in captions:
            raise ValueError(f"{json_path}: video '{it.video_id}' (item {it.key}) has no captions in 'sentences'")
        out.append(captions[it.video_id])
    return out


def read_msrvtt(csv_path, video_root, captions_json: Optional[str] = None) -> RetrievalSet:
    """The 1k-A split; with `captions_json`, every caption of each video too (RetrievalSet.captions)."""
    csv_path, video_root = Path(csv_path), Path(video_root)
    resolve = VideoResolver()
    items = []
    for line, row in read_csv_rows(csv_path, CSV_COLUMNS):
        vid = row["video_id"].strip()
        if not vid:
            raise ValueError(f"{csv_path}:{line}: empty video_id")
        items.append(RetrievalItem(key=row["key"].strip() or f"{csv_path.name}:{line}", video_id=vid,
                                   text=row["sentence"], start=0.0, end=None, path=resolve(video_root, vid)))
    if not items:
        raise ValueError(f"{csv_path}: no data rows")
    captions = _with_captions(items, read_msrvtt_captions(captions_json), captions_json) if captions_json else None
    return RetrievalSet(name="msrvtt", source=str(csv_path), video_root=str(video_root), items=items,
                        captions=captions, split="1k-A")


def read_msrvtt_full(json_path, video_root, split: str = "test") -> RetrievalSet:
    """Every video of `split` in MSRVTT_data.json's "videos", with all its captions; item.text = its first caption."""
    json_path, video_root = Path(json_path), Path(video_root)
    data = read_json_annotations(json_path, "videos", list)
    captions = read_msrvtt_captions(json_path)
    resolve = VideoResolver()
    items = []
    for i, v in enumerate(data["videos"]):
        if not isinstance(v, dict) or "video_id" not in v or "split" not in v:
            raise ValueError(f"{json_path}: videos[{i}] needs 'video_id' and 'split'")
        if v["split"] != split:
            continue
        vid = str(v["video_id"])
        if not captions.get(vid):
            raise ValueError(f"{json_path}: videos[{i}] ('{vid}', split {split}) has no captions in 'sentences'")
        items.append(RetrievalItem(key=vid, video_id=vid, text=captions[vid][0], start=0.0, end=None,
                                   path=resolve(video_root, vid)))
    if not items:
        raise ValueError(f"{json_path}: no videos with split == '{split}'")
    return RetrievalSet(name="msrvtt", source=str(json_path), video_root=str(video_root), items=items,
                        captions=[captions[it.video_id] for it in items], split="full")
