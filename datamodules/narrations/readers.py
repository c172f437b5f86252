"""Readers for HowTo100M-style caption files, with validation that names the file, line and key.

Formats: ``caption.json`` / ``raw_caption.json`` (``{video_id: {"start": [...], "end": [...], "text":
[...]}}``, parsed one video at a time so a multi-GB file never sits in memory), a folder of per-video
``start,end,text`` CSVs (MIL-NCE's ``howto100m_captions``), ``HowTo100M_v1.csv`` metadata, the MIL-NCE video
list (column ``video_path``) and a ``video_id,duration`` table. Readers yield ``(video_id, starts, ends,
texts)``, exactly what ``NarrationIndex.build`` consumes.

What happens to bad input (``CaptionError`` is a ValueError whose message starts with ``file, line N``):

* always an error -- the file cannot be read as a whole: missing file, not UTF-8 (header / JSON),
  malformed JSON, an empty file (zero bytes, header only, ``{}``, a video with empty lists), a missing
  column or key, lists of unequal length, a video path that is absolute or climbs out of the video root
  with ``..``. With ``skip_bad_videos=True`` a per-video file or JSON entry with such a problem is skipped
  and listed in ``stats.bad_videos`` instead (a syntax error in caption.json still stops the read).
* bad rows -- time NaN / not a number / negative, end < start, empty text or text that is not a string,
  a text field that is not UTF-8, a duplicate of an earlier row of the same video, a CSV row with too few
  fields: ``strict=True`` raises; the default drops the row, counts it per reason in ``stats.dropped`` and
  warns once per file. A video whose rows were all dropped is left out (``stats.videos_emptied``).
* rows out of time order are stably sorted by start (``stats.videos_resorted``); the bag-of-neighbours
  sampling assumes time order, and every HowTo100M file is already sorted, so this changes nothing there.

``clean_asr=True`` (for raw YouTube ASR such as raw_caption.json): empty lines are dropped without being
errors, then rolling repeats are removed: comparing word sequences case-insensitively with the previous
line as read, a line whose words all restate the end of that line is dropped, and otherwise its longest
leading run of at least ``min_overlap_words`` (2) words that equals the previous line's ending is cut off.
Times are kept. Counts go to ``stats.asr_empty``, ``stats.asr_repeats_dropped``, ``stats.asr_repeats_trimmed``.
"""
from __future__ import annotations

import csv
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from datamodules.narrations.json_stream import JsonMembers

Video = Tuple[str, np.ndarray, np.ndarray, List[str]]


class CaptionError(ValueError):
    """A caption or list file is unusable; the message names the file, the line and the key."""

    def __init__(self, path, problem: str, line: Optional[int] = None, key: Optional[str] = None):
        self.path, self.problem, self.line, self.key = str(path), problem, line, key
        where = [self.path] + ([f"line {line}"] if line is not None else []) + ([key] if key else [])
        super().__init__(", ".join(where) + ": " + problem)


@dataclass
class CaptionStats:
    """Counts gathered while reading; ``examples`` keeps the first messages about dropped rows."""

    videos: int = 0
    narrations: int = 0
    dropped: Counter = field(default_factory=Counter)
    videos_emptied: int = 0
    videos_resorted: int = 0
    bad_videos: List[str] = field(default_factory=list)
    asr_empty: int = 0
    asr_repeats_dropped: int = 0
    asr_repeats_trimmed: int = 0
    examples: List[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"videos": self.videos, "narrations": self.narrations, "dropped_rows": dict(self.dropped),
                "dropped_rows_total": sum(self.dropped.values()), "videos_emptied": self.videos_emptied,
                "videos_resorted": self.videos_resorted, "bad_videos": len(self.bad_videos),
                "asr_empty": self.asr_empty, "asr_repeats_dropped": self.asr_repeats_dropped,
                "asr_repeats_trimmed": self.asr_repeats_trimmed, "examples": self.examples[:20]}


# ---------------------------------------------------------------------------------------- row checks
_WORD = re.compile(r"\S+")
_UNDECODED = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" makes of non-UTF-8 bytes


def _as_time(value) -> float:
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _row_problem(start: float, end: float, text) -> Optional[Tuple[str, str]]:
    if not (math.isfinite(start) and math.isfinite(end)):
        return "bad_time", f"time is not a finite number (start={start}, end={end})"
    if start < 0 or end < 0:
        return "negative_time", f"negative time (start={start}, end={end})"
    if end < start:
        return "end_before_start", f"end {end} < start {start}"
    if not isinstance(text, str):
        return "text_not_string", f"text is {type(text).__name__}, not a string"
    if _UNDECODED.search(text):
        return "bad_utf8", "text is not valid UTF-8"
    if not text.strip():
        return "empty_text", "empty text"
    return None


def clean_asr(starts, ends, texts: List[str], min_overlap_words: int = 2, stats: Optional[CaptionStats] = None):
    """Remove rolling repeats of YouTube ASR (rule in the module docstring); returns (starts, ends, texts)."""
    keep_s, keep_e, keep_t = [], [], []
    prev_lower: List[str] = []
    for s, e, text in zip(starts, ends, texts):
        words = _WORD.findall(text)
        if not words:
            if stats is not None:
                stats.asr_empty += 1
            continue
        lower = [w.lower() for w in words]
        overlap = 0
        for k in range(min(len(lower), len(prev_lower)), 0, -1):
            if lower[:k] == prev_lower[-k:]:
                overlap = k
                break
        prev_lower = lower
        if overlap == len(words):
            if stats is not None:
                stats.asr_repeats_dropped += 1
            continue
        if overlap >= min_overlap_words:
            text = " ".join(words[overlap:])
            if stats is not None:
                stats.asr_repeats_trimmed += 1
        keep_s.append(s)
        keep_e.append(e)
        keep_t.append(text)
    return keep_s, keep_e, keep_t


def _valid_columns(raw_starts: list, raw_ends: list, texts: list):
    """(starts, ends) float64 arrays when every row is valid -- the common case, checked in bulk -- else
    None, and the row-by-row path finds and names the problems."""
    if any(type(v) is bool for v in raw_starts) or any(type(v) is bool for v in raw_ends):
        return None
    try:
        starts, ends = np.array(raw_starts, dtype=np.float64), np.array(raw_ends, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if starts.ndim != 1 or ends.ndim != 1 or not (np.isfinite(starts).all() and np.isfinite(ends).all()):
        return None
    if not ((starts >= 0).all() and (ends >= starts).all()):
        return None
    if not all(type(t) is str for t in texts) or not all(map(str.strip, texts)) or _UNDECODED.search("".join(texts)):
        return None
    if len(set(zip(starts.tolist(), ends.tolist(), texts))) != len(texts):
        return None
    return starts, ends


def _finish_video(video_id: str, raw_starts: list, raw_ends: list, raw_texts: list,
                  where: Callable[[int], Tuple[str, Optional[int], Optional[str]]], strict: bool, asr: bool,
                  stats: CaptionStats, parse_problems: Optional[dict] = None) -> Optional[Video]:
    """Validate the rows of one video; ``where(j)`` locates row j as (file, line, key); ``parse_problems``:
    {row: (reason, message)} found while parsing. Returns None when no row survives."""
    valid = None if parse_problems else _valid_columns(raw_starts, raw_ends, raw_texts)
    if valid is not None:
        starts, ends = valid
        texts = list(raw_texts)
    else:
        starts, ends, texts = _check_rows(raw_starts, raw_ends, raw_texts, where, strict, asr, stats,
                                          parse_problems or {})
    if len(starts) > 1 and (np.diff(starts) < 0).any():
        order = np.argsort(starts, kind="stable")
        starts, ends, texts = starts[order], ends[order], [texts[i] for i in order]
        stats.videos_resorted += 1
    if asr:
        s, e, texts = clean_asr(starts.tolist(), ends.tolist(), texts, stats=stats)
        starts, ends = np.asarray(s, dtype=np.float64), np.asarray(e, dtype=np.float64)
    if not len(starts):
        stats.videos_emptied += 1
        return None
    stats.videos += 1
    stats.narrations += len(starts)
    return video_id, starts, ends, texts


def _check_rows(raw_starts, raw_ends, raw_texts, where, strict, asr, stats, parse_problems):
    starts, ends, texts = [], [], []
    seen = set()
    dropped = Counter()
    first_problem = None
    for j, (raw_start, raw_end, text) in enumerate(zip(raw_starts, raw_ends, raw_texts)):
        problem = parse_problems.get(j)
        if problem is None and asr and isinstance(text, str) and not text.strip():
            stats.asr_empty += 1
            continue
        start, end = _as_time(raw_start), _as_time(raw_end)
        problem = problem or _row_problem(start, end, text)
        if problem is None and (start, end, text) in seen:
            problem = ("duplicate", "duplicate of an earlier row")
        if problem is not None:
            message = str(CaptionError(*_located(where(j), problem[1])))
            if strict:
                raise CaptionError(*_located(where(j), problem[1]))
            dropped[problem[0]] += 1
            first_problem = first_problem or message
            if len(stats.examples) < 20:
                stats.examples.append(message)
            continue
        seen.add((start, end, text))
        starts.append(start)
        ends.append(end)
        texts.append(text)
    if dropped:
        stats.dropped.update(dropped)
        warnings.warn(f"dropped {sum(dropped.values())} bad caption rows ({dict(dropped)}); first: "
                      f"{first_problem}", stacklevel=4)
    return np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64), texts


def _located(place, problem):
    path, line, key = place
    return path, problem, line, key


# ------------------------------------------------------------------------------------- CSV readers
def _open_csv(path: Path, required: Tuple[str, ...]):
    """(csv.reader over lines decoded with surrogateescape, {column: position}); file-level checks."""
    if not path.is_file():
        raise CaptionError(path, "file not found")
    handle = open(path, encoding="utf-8", errors="surrogateescape", newline="")
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        handle.close()
        raise CaptionError(path, "empty file (no header line)", line=1)
    if any(_UNDECODED.search(name) for name in header):
        handle.close()
        raise CaptionError(path, "header is not valid UTF-8", line=1)
    header = [name.strip().lstrip("\ufeff") for name in header]
    missing = [name for name in required if name not in header]
    if missing:
        handle.close()
        raise CaptionError(path, f"missing column(s) {missing}; header is {header}", line=1)
    return handle, reader, {name: header.index(name) for name in header}


def read_caption_csv(path, video_id: Optional[str] = None, strict: bool = False, clean_asr: bool = False,
                     stats: Optional[CaptionStats] = None) -> Optional[Video]:
    """One video's ``start,end,text`` CSV -> (video_id, starts, ends, texts), or None if all rows dropped."""
    path = Path(path)
    stats = stats if stats is not None else CaptionStats()
    video_id = video_id if video_id is not None else path.stem
    handle, reader, col = _open_csv(path, ("start", "end", "text"))
    starts, ends, texts, lines, short = [], [], [], [], {}
    width = max(col["start"], col["end"], col["text"]) + 1
    with handle:
        for fields in reader:
            if not fields:
                continue
            if len(fields) < width:
                short[len(lines)] = ("too_few_fields", f"too few fields ({len(fields)}; the header has {len(col)})")
                fields = [""] * width
            starts.append(fields[col["start"]])
            ends.append(fields[col["end"]])
            texts.append(fields[col["text"]])
            lines.append(reader.line_num)
    if not lines:
        raise CaptionError(path, "no caption rows (empty caption file)", line=2)
    return _finish_video(video_id, starts, ends, texts, lambda j: (str(path), lines[j], None), strict, clean_asr,
                         stats, short)


def read_caption_folder(folder, video_ids: Optional[Iterable[str]] = None, strict: bool = False,
                        clean_asr: bool = False, skip_bad_videos: bool = False,
                        stats: Optional[CaptionStats] = None) -> Iterator[Video]:
    """Yield the videos of a folder of ``<video_id>.csv`` files (all of them, sorted, or ``video_ids``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CaptionError(folder, "caption folder not found")
    stats = stats if stats is not None else CaptionStats()
    if video_ids is None:
        items = ((p.relative_to(folder).with_suffix("").as_posix(), p) for p in sorted(folder.rglob("*.csv")))
    else:
        items = ((v, folder / f"{v}.csv") for v in video_ids)
    for video_id, path in items:
        try:
            video = read_caption_csv(path, video_id, strict, clean_asr, stats)
        except CaptionError as err:
            if not skip_bad_videos:
                raise
            stats.bad_videos.append(str(err))
            continue
        if video is not None:
            yield video


# ------------------------------------------------------------------------------------ caption.json
def read_caption_json(path, video_ids: Optional[Iterable[str]] = None, strict: bool = False,
                      clean_asr: bool = False, skip_bad_videos: bool = False,
                      stats: Optional[CaptionStats] = None) -> Iterator[Video]:
    """Yield the videos of caption.json / raw_caption.json in file order (only ``video_ids`` if given)."""
    path = Path(path)
    if not path.is_file():
        raise CaptionError(path, "file not found")
    stats = stats if stats is not None else CaptionStats()
    wanted = set(video_ids) if video_ids is not None else None
    seen = set()
    for video_id, entry, line in JsonMembers(path, CaptionError):
        if wanted is not None and video_id not in wanted:
            continue
        key = f"video {video_id!r}"
        try:
            if video_id in seen:
                raise CaptionError(path, "video appears twice in the file", line, key)
            seen.add(video_id)
            starts, ends, texts = _json_columns(path, entry, line, key)
        except CaptionError as err:
            if not skip_bad_videos:
                raise
            stats.bad_videos.append(str(err))
            continue
        video = _finish_video(video_id, starts, ends, texts, lambda j: (str(path), line, f"{key} entry {j}"),
                              strict, clean_asr, stats)
        if video is not None:
            yield video


def _json_columns(path, entry, line, key):
    if not isinstance(entry, dict):
        raise CaptionError(path, f"expected an object with start, end, text; got {type(entry).__name__}",
                           line, key)
    missing = [name for name in ("start", "end", "text") if name not in entry]
    if missing:
        raise CaptionError(path, f"missing key(s) {missing}", line, key)
    columns = [entry[name] for name in ("start", "end", "text")]
    if not all(isinstance(c, list) for c in columns):
        raise CaptionError(path, "start, end and text must be lists", line, key)
    if len({len(c) for c in columns}) != 1:
        raise CaptionError(path, f"lists of unequal length (start {len(columns[0])}, end "
                                 f"{len(columns[1])}, text {len(columns[2])})", line, key)
    if not columns[0]:
        raise CaptionError(path, "no captions (empty lists)", line, key)
    return columns


# ------------------------------------------------------------------------------- lists and metadata
def escapes_root(video_path: str) -> bool:
    """True for a path that is absolute (POSIX or Windows, drive letters included) or has a ``..`` part."""
    if video_path.startswith(("/", "\\")) or PureWindowsPath(video_path).drive:
        return True
    return ".." in re.split(r"[/\\]", video_path)


def read_video_list(path, strict: bool = False, stats: Optional[CaptionStats] = None) -> List[Tuple[str, str]]:
    """MIL-NCE video list (column ``video_path``) -> [(video_id, video_path)], video_id as the original:
    ``video_path.split('.')[0]``. Paths that are absolute or contain ``..`` always raise CaptionError."""
    path = Path(path)
    stats = stats if stats is not None else CaptionStats()
    handle, reader, col = _open_csv(path, ("video_path",))
    out, seen, dropped = [], set(), 0
    with handle:
        for fields in reader:
            if not fields:
                continue
            line = reader.line_num
            video_path = fields[col["video_path"]].strip() if len(fields) > col["video_path"] else ""
            problem = None
            if not video_path:
                problem = ("empty_path", "empty video_path")
            elif _UNDECODED.search(video_path):
                problem = ("bad_utf8", "video_path is not valid UTF-8")
            elif escapes_root(video_path):
                raise CaptionError(path, f"video_path {video_path!r} escapes the video root "
                                         f"(absolute or '..')", line, "video_path")
            elif video_path in seen:
                problem = ("duplicate", f"duplicate video_path {video_path!r}")
            if problem is not None:
                if strict:
                    raise CaptionError(path, problem[1], line, "video_path")
                stats.dropped[problem[0]] += 1
                dropped += 1
                continue
            seen.add(video_path)
            out.append((video_path.split(".")[0], video_path))
    if not out:
        raise CaptionError(path, "no videos listed (empty list)" if not dropped else
                           f"every row was dropped ({dropped} bad rows)", line=2)
    if dropped:
        warnings.warn(f"{path}: dropped {dropped} bad video_path rows", stacklevel=2)
    return out


def _read_table(path, required: Tuple[str, ...], strict: bool, numeric: Tuple[str, ...]):
    import pandas as pd

    path = Path(path)
    handle, reader, col = _open_csv(path, required)
    handle.close()
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CaptionError(path, f"not valid UTF-8 ({err.reason})") from None
    if frame.empty:
        raise CaptionError(path, "no rows (empty file)", line=2)
    dup = frame["video_id"].duplicated()
    if dup.any():
        first = int(np.flatnonzero(dup.to_numpy())[0])
        if strict:
            raise CaptionError(path, f"duplicate video_id {frame['video_id'].iloc[first]!r}", first + 2, "video_id")
        warnings.warn(f"{path}: {int(dup.sum())} duplicate video_id rows dropped (first kept)", stacklevel=3)
        frame = frame[~dup]
    for name in numeric:
        values = pd.to_numeric(frame[name].replace("", np.nan), errors="coerce")
        bad = values.isna() & (frame[name] != "")
        if bad.any():
            first = int(np.flatnonzero(bad.to_numpy())[0])
            raise CaptionError(path, f"{name} {frame[name].iloc[first]!r} is not a number",
                               int(frame.index[first]) + 2, name)
        frame[name] = values
    return frame.set_index("video_id")


def read_howto100m_meta(path, strict: bool = False):
    """HowTo100M_v1.csv (video_id,category_1,category_2,rank,task_id) -> DataFrame indexed by video_id."""
    return _read_table(path, ("video_id", "category_1", "category_2", "rank", "task_id"), strict,
                       numeric=("rank", "task_id"))


def read_durations(path, strict: bool = False):
    """A ``video_id,duration`` CSV (seconds, e.g. from probing the videos) -> DataFrame indexed by video_id."""
    frame = _read_table(path, ("video_id", "duration"), strict, numeric=("duration",))
    negative = frame["duration"] < 0
    if negative.any():
        raise CaptionError(path, f"negative duration for video {frame.index[negative][0]!r}")
    return frame[["duration"]]
