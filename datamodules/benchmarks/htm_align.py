"""HTM-Align (Han, Xie & Zisserman, "Temporal Alignment Networks for Long-term Video", CVPR 2022): 80 HowTo100M
videos whose ASR sentences were aligned by hand.

The release is one JSON file, htm_align.json: {video_id: [[alignable, start, end, text], …]}, the sentences of a
video in narration order; alignable is 1 when the sentence describes something visible (start/end is then the
annotated segment, in seconds) and 0 otherwise (start/end are then the sentence's ASR times). The toy corpus writes
the same layout (datamodules/toy/formats.py: write_htm_align).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

PathLike = Union[str, Path]


class AlignmentAnnotationError(ValueError):
    """A malformed HTM-Align file; the message names the file, the video and the sentence."""


@dataclass
class AlignedVideo:
    video_id: str
    alignable: np.ndarray   # N bool
    start: np.ndarray       # N float64: annotated segment (alignable) or ASR time (not alignable)
    end: np.ndarray         # N float64
    texts: List[str]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class HTMAlign:
    source: str
    videos: Dict[str, AlignedVideo]

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def num_sentences(self) -> int:
        return sum(len(v) for v in self.videos.values())

    @property
    def num_alignable(self) -> int:
        return int(sum(v.alignable.sum() for v in self.videos.values()))


def read_htm_align(path: PathLike, video_ids: Optional[List[str]] = None) -> HTMAlign:
    """Read htm_align.json (optionally only `video_ids`); raises AlignmentAnnotationError naming what is wrong."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise AlignmentAnnotationError(f"{path}: cannot read the HTM-Align annotation ({err})") from err
    if not isinstance(raw, dict):
        raise AlignmentAnnotationError(f"{path}: expected an object {{video_id: [[alignable, start, end, text], …]}}")
    wanted = list(raw) if video_ids is None else list(video_ids)
    videos: Dict[str, AlignedVideo] = {}
    for vid in wanted:
        if vid not in raw:
            raise AlignmentAnnotationError(f"{path}: no video '{vid}'")
        rows = raw[vid]
        if not isinstance(rows, list):
            raise AlignmentAnnotationError(f"{path}: video '{vid}': expected a list of sentences")
        flags, starts, ends, texts = [], [], [], []
        for i, row in enumerate(rows):
            where = f"{path}: video '{vid}', sentence {i}"
            if not isinstance(row, list) or len(row) != 4:
                raise AlignmentAnnotationError(f"{where}: expected [alignable, start, end, text], got {row!r}")
            flag, start, end, text = row
            if flag not in (0, 1):
                raise AlignmentAnnotationError(f"{where}: alignable must be 0 or 1, got {flag!r}")
            try:
                start, end = float(start), float(end)
            except (TypeError, ValueError):
                raise AlignmentAnnotationError(f"{where}: start/end must be numbers, got {row[1]!r}, {row[2]!r}")
            if not (np.isfinite(start) and np.isfinite(end)) or end < start:
                raise AlignmentAnnotationError(f"{where}: need finite start <= end, got {start}, {end}")
            flags.append(bool(flag))
            starts.append(start)
            ends.append(end)
            texts.append(str(text))
        videos[vid] = AlignedVideo(vid, np.asarray(flags, bool), np.asarray(starts, np.float64),
                                   np.asarray(ends, np.float64), texts)
    return HTMAlign(str(path), videos)


def write_htm_align(path: PathLike, videos: Dict[str, AlignedVideo]) -> None:
    """The inverse of read_htm_align (round-trips: same videos, flags, times and texts)."""
    out = {vid: [[int(a), float(s), float(e), t] for a, s, e, t in zip(v.alignable, v.start, v.end, v.texts)]
           for vid, v in videos.items()}
    Path(path).write_text(json.dumps(out))


def asr_anchor_times(video: AlignedVideo) -> np.ndarray:
    """A GT-free stand-in for each sentence's ASR centre time, as TAN's windowed protocol gets it: non-alignable
    sentences keep their ASR times in the release, so an alignable sentence takes the time interpolated (by sentence
    order) between the nearest non-alignable sentences before and after it (the nearest one at either end; the
    video's middle sentence order when there is none)."""
    n = len(video)
    centre = 0.5 * (video.start + video.end)
    free = np.flatnonzero(~video.alignable)
    if n == 0:
        return centre
    if len(free) == 0:  # nothing to anchor on: spread the sentences evenly over the annotated span
        return np.linspace(video.start.min(), video.end.max(), n)
    return np.interp(np.arange(n), free, centre[free])
