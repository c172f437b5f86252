"""MSR-VTT 1k-A ("JSFusion") test split for text→video retrieval.

CSV columns key,vid_key,video_id,sentence (1,000 rows, one caption per video); videos at <root>/<video_id>.mp4
(the MIL-NCE loader; .mkv/.webm are accepted too). Each item spans the whole video: `end` is None and the window
dataset probes the duration with datamodules.video.decode.probe, as the original did with ffmpeg.probe.
"""
from __future__ import annotations

from pathlib import Path

from datamodules.benchmarks.retrieval_items import RetrievalItem, RetrievalSet, VideoResolver, read_csv_rows

CSV_COLUMNS = ("key", "vid_key", "video_id", "sentence")


def read_msrvtt(csv_path, video_root) -> RetrievalSet:
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
    return RetrievalSet(name="msrvtt", source=str(csv_path), video_root=str(video_root), items=items)
