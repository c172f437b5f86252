"""What a text→video retrieval benchmark is made of: one (sentence, video span) per item, plus what could not be found.

YouCook2 and MSR-VTT readers (datamodules/benchmarks/youcook2.py, datamodules/benchmarks/msrvtt.py) return a `RetrievalSet`; the window
dataset (datamodules/benchmarks/eval_clips.py) and milnce.eval.retrieval_eval consume it. Missing videos stay in the set, listed,
so a report can say "N evaluated of M listed".
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm")  # the order the MIL-NCE loaders try them


@dataclass(frozen=True)
class RetrievalItem:
    key: str                   # row identity: "<csv>:<line>" or the dataset's own key (MSR-VTT "ret0")
    video_id: str
    text: str
    start: float               # seconds
    end: Optional[float]       # seconds; None = the whole video (duration probed when the clip is decoded)
    path: Optional[str]        # resolved video file, None when missing


@dataclass
class RetrievalSet:
    name: str                  # youcook2 | msrvtt | …
    source: str                # the annotation file the items came from
    video_root: str
    items: List[RetrievalItem] = field(default_factory=list)
    # every caption of each item (item order), when the benchmark has many per video (MSR-VTT's 20); item.text is
    # the one caption of the single-caption protocol
    captions: Optional[List[List[str]]] = None
    split: str = "test"        # which split of the benchmark the items are (MSR-VTT: 1k-A | full)

    def __post_init__(self) -> None:
        if self.captions is not None and len(self.captions) != len(self.items):
            raise ValueError(f"{self.source}: {len(self.captions)} caption lists for {len(self.items)} items")

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[RetrievalItem]:
        return iter(self.items)

    @property
    def missing(self) -> List[RetrievalItem]:
        return [it for it in self.items if it.path is None]

    @property
    def available_indices(self) -> List[int]:
        return [i for i, it in enumerate(self.items) if it.path is not None]

    def write_missing(self, path: Path) -> Path:
        """One line per item whose video was not found: key,video_id,start,end (with a header)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["key", "video_id", "start", "end"])
            for it in self.missing:
                w.writerow([it.key, it.video_id, it.start, "" if it.end is None else it.end])
        return path


class VideoResolver:
    """Finds <dir>/<video_id>.{mp4,mkv,webm} (first that exists, MIL-NCE order), remembering answers per directory."""

    def __init__(self, extensions: Sequence[str] = VIDEO_EXTENSIONS):
        self.extensions = tuple(extensions)
        self._listing: Dict[Path, set] = {}

    def _names(self, directory: Path) -> set:
        if directory not in self._listing:
            try:
                self._listing[directory] = {p.name for p in directory.iterdir()}
            except (FileNotFoundError, NotADirectoryError):
                self._listing[directory] = set()
        return self._listing[directory]

    def __call__(self, directory: Path, video_id: str) -> Optional[str]:
        names = self._names(Path(directory))
        for ext in self.extensions:
            if video_id + ext in names:
                return str(Path(directory) / (video_id + ext))
        return None


def read_csv_rows(path: Path, required: Sequence[str]) -> Iterator[tuple]:
    """(line number, row dict) for each data row; a missing header column or a short row is an error naming the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path}: empty file, expected a header {','.join(required)}") from None
        header = [h.strip() for h in header]
        absent = [c for c in required if c not in header]
        if absent:
            raise ValueError(f"{path}:1: header {header} lacks column(s) {absent} (expected {','.join(required)})")
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}:{line}: expected {len(header)} fields ({','.join(header)}), "
                                 f"got {len(row)}: {row!r}")
            yield line, dict(zip(header, row))


def parse_seconds(value: str, path: Path, line: int, column: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"{path}:{line}: column '{column}' is not a number: {value!r}") from None
    if not x >= 0:
        raise ValueError(f"{path}:{line}: column '{column}' must be ≥ 0 seconds, got {value!r}")
    return x


def read_json_annotations(path: Path, key: str, kind: type = dict):
    """An annotation JSON (YouCook2 `database`, MSR-VTT `sentences`): the top-level object and its `key` entry."""
    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), kind):
        raise ValueError(f"{path}: expected a top-level object with a '{key}' {'list' if kind is list else 'mapping'}")
    return data
