"""Narrations -> training clips: the bag of K neighbours, the clip window and the seek, as MIL-NCE did.

The pure functions restate ``HT100M_DataLoader`` (PROTOCOLS.md Part A §5) exactly:

* ``nearest_candidates`` is ``_find_nearest_candidates``: grow [ind, ind] greedily to K lines, left when
  ``end[e] - start[s-1] < end[e+1] - start[s]`` (ties go right), snapping to 0 at the first line and to
  ``s - (K - n)`` at the last; ``bag_indices`` clamps ``first + i`` into [0, len-1] as the original did, so a
  video with fewer than K lines repeats lines (the last one, or the first when the snap goes negative).
* ``clip_window`` uses only the chosen narration's own times, widened symmetrically to ``min_time`` with
  ``diff = min_time - end + start`` (that order of float operations), ``start = max(0, start - diff/2)``,
  ``end = start + min_time``, then ``int()`` on both.
* ``sample_seek`` is ``randint(start, int(max(start, end - clip_seconds)))``: an integer second.

Options that are not the original (all off by default): a window spanning the whole bag, fractional windows
and seeks, several clips per video per visit, and -- when the index knows a video's duration -- resampling
a narration whose clip cannot fit inside the video instead of decoding past the end (the original silently
produced black frames there).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np

from datamodules.narrations.readers import (CaptionError, CaptionStats, clean_asr, read_caption_csv,  # noqa: F401
                                         read_caption_folder, read_caption_json, read_durations,
                                         read_howto100m_meta, read_video_list)
from datamodules.narrations.index import NarrationIndex  # noqa: F401
from datamodules.atomic import atomic_write


# ------------------------------------------------------------------------------------ pure functions
def nearest_candidates(starts: Sequence[float], ends: Sequence[float], index: int, k: int) -> int:
    """First line of the K consecutive narrations forming the bag of narration ``index`` (original greedy)."""
    n_lines = len(starts)
    if not 0 <= index < n_lines:
        raise IndexError(f"narration {index} out of range for {n_lines} narrations")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    start = end = index
    n = 1
    while n < k:
        if start == 0:
            return 0
        if end == n_lines - 1:
            return start - (k - n)
        if ends[end] - starts[start - 1] < ends[end + 1] - starts[start]:
            start -= 1
        else:
            end += 1
        n += 1
    return start


def bag_indices(starts: Sequence[float], ends: Sequence[float], index: int, k: int) -> List[int]:
    """The K narration numbers of the bag, clamped into [0, len-1] as the original (len < K repeats lines)."""
    first = nearest_candidates(starts, ends, index, k)
    last = len(starts) - 1
    return [max(0, min(last, first + i)) for i in range(k)]


def clip_window(start: float, end: float, min_time: float, integer: bool = True) -> Tuple[float, float]:
    """Widen [start, end] to ``min_time`` symmetrically (not below 0); ``int()`` both unless ``integer=False``."""
    if end - start < min_time:
        diff = min_time - end + start
        start = max(0, start - diff / 2)
        end = start + min_time
    if integer:
        return int(start), int(end)
    return float(start), float(end)


def seek_range(window_start: float, window_end: float, clip_seconds: float, fractional: bool = False,
               duration: Optional[float] = None) -> Optional[Tuple[float, float]]:
    """[lo, hi] of the clip start; with a known ``duration`` also ``seek + clip_seconds <= duration``.

    Integer mode is the original's ``randint(start, int(max(start, end - clip_seconds)))`` (a fractional
    window start is truncated like the original truncated the window). None when no seek fits the video.
    """
    if fractional:
        lo, hi = float(window_start), max(float(window_start), window_end - clip_seconds)
        if duration is not None and math.isfinite(duration):
            hi = min(hi, duration - clip_seconds)
    else:
        lo = int(window_start)
        hi = max(lo, int(max(window_start, window_end - clip_seconds)))
        if duration is not None and math.isfinite(duration):
            hi = min(hi, math.floor(duration - clip_seconds))
    return (lo, hi) if hi >= lo else None


def sample_seek(window_start: float, window_end: float, clip_seconds: float, rng: np.random.Generator,
                fractional: bool = False, duration: Optional[float] = None) -> float:
    """A random clip start in ``seek_range`` (integer seconds unless ``fractional``)."""
    bounds = seek_range(window_start, window_end, clip_seconds, fractional, duration)
    if bounds is None:
        raise ValueError(f"no clip of {clip_seconds} s fits window [{window_start}, {window_end}] inside a "
                         f"video of {duration} s")
    return _draw_seek(bounds, fractional, rng)


def _draw_seek(bounds: Tuple[float, float], fractional: bool, rng: np.random.Generator) -> float:
    lo, hi = bounds
    if fractional:
        return float(lo + (hi - lo) * rng.random())
    return float(rng.integers(lo, hi + 1))


def starts_inside(starts, duration: Optional[float]) -> np.ndarray:
    """Mask of narrations that start before ``duration`` (all True when it is unknown/NaN)."""
    starts = np.asarray(starts, dtype=np.float64)
    if duration is None or not math.isfinite(duration):
        return np.ones(len(starts), dtype=bool)
    return starts < duration


# --------------------------------------------------------------------------------------- the sampler
class NoClipFits(ValueError):
    """No narration of a video (within the tries allowed) gives a clip that fits inside the video."""


@dataclass(frozen=True)
class ClipSample:
    video: int                    # video number in the index
    narration: int                # the drawn narration, row within the video
    bag: List[int]                # K rows (original clamping)
    texts: List[str]              # their texts, in bag order
    window: Tuple[float, float]   # clip window (seconds)
    seek: float                   # clip start (seconds)


class TrainingClipSampler:
    """Draws (bag texts, window, seek) for one video of a ``NarrationIndex``.

    Defaults are the original: one uniformly drawn narration, K-bag by ``nearest_candidates``, the
    narration's own window widened to ``min_time`` and truncated to integers, an integer seek. Options:
    ``window="bag"`` (span of the whole bag, then widened), ``integer_window=False``,
    ``fractional_seek=True``, ``clips_per_video`` (distinct narrations while the video has enough).
    When the index has a duration for the video, a narration whose clip cannot fit in the video is
    replaced by another one (at most ``max_tries`` draws, then ``NoClipFits``).
    """

    def __init__(self, index: NarrationIndex, num_candidates: int = 1, min_time: float = 5.0,
                 clip_seconds: float = 3.2, window: str = "narration", integer_window: bool = True,
                 fractional_seek: bool = False, clips_per_video: int = 1, max_tries: int = 10):
        if window not in ("narration", "bag"):
            raise ValueError(f"window must be 'narration' or 'bag', got {window!r}")
        if num_candidates < 1 or clips_per_video < 1 or max_tries < 1:
            raise ValueError("num_candidates, clips_per_video and max_tries must be >= 1")
        self.index, self.k, self.min_time = index, int(num_candidates), float(min_time)
        self.clip_seconds, self.window = float(clip_seconds), window
        self.integer_window, self.fractional_seek = bool(integer_window), bool(fractional_seek)
        self.clips_per_video, self.max_tries = int(clips_per_video), int(max_tries)

    @classmethod
    def from_data_config(cls, index, data_cfg: Any, clip_seconds: float) -> "TrainingClipSampler":
        """The sampler a `data` config section asks for (num_candidates, min_time, window, fractional_seek,
        clips_per_video): the per-file and the shard datamodules build theirs here, so they cannot disagree."""
        c = data_cfg
        return cls(index, int(c.num_candidates), float(c.min_time), clip_seconds, window=str(c.window),
                   fractional_seek=bool(c.fractional_seek), clips_per_video=int(c.clips_per_video))

    def _try(self, video: int, row: int, starts, ends, duration: float,
             rng: np.random.Generator) -> Optional[ClipSample]:
        bag = bag_indices(starts, ends, row, self.k) if self.k > 1 else [row]
        if self.window == "bag":
            lo, hi = float(min(starts[i] for i in bag)), float(max(ends[i] for i in bag))
        else:
            lo, hi = float(starts[row]), float(ends[row])
        window = clip_window(lo, hi, self.min_time, integer=self.integer_window)
        bounds = seek_range(window[0], window[1], self.clip_seconds, self.fractional_seek, duration)
        if bounds is None:
            return None
        seek = _draw_seek(bounds, self.fractional_seek, rng)
        return ClipSample(video, row, bag, self.index.texts(video, bag), window, seek)

    def _draw(self, video: int, rng, starts, ends, duration: float, used: Set[int]) -> ClipSample:
        n = len(starts)
        tried: Set[int] = set()
        for _ in range(self.max_tries):
            if not tried and not used:
                row = int(rng.integers(n))  # the original: one narration drawn uniformly
            else:
                excluded = tried | used
                if len(excluded) >= n:  # every row used by an earlier clip of this visit: allow repeats
                    excluded = tried
                if len(excluded) >= n:
                    break
                pool = np.setdiff1d(np.arange(n), np.fromiter(excluded, dtype=np.int64, count=len(excluded)))
                row = int(pool[rng.integers(len(pool))])
            sample = self._try(video, row, starts, ends, duration, rng)
            if sample is not None:
                return sample
            tried.add(row)
        raise NoClipFits(f"video {self.index.video_ids[video]!r} ({n} narrations, duration {duration} s): no "
                         f"clip of {self.clip_seconds} s fits inside the video after {len(tried)} narrations")

    def sample(self, video: int, rng: np.random.Generator) -> ClipSample:
        """One clip of ``video``."""
        starts, ends = self.index.times(video)
        return self._draw(video, rng, starts, ends, self.index.duration(video), set())

    def sample_clips(self, video: int, rng: np.random.Generator, n: Optional[int] = None) -> List[ClipSample]:
        """``n`` (default ``clips_per_video``) clips of ``video``, on distinct narrations while possible."""
        starts, ends = self.index.times(video)
        duration = self.index.duration(video)
        out: List[ClipSample] = []
        used: Set[int] = set()
        for _ in range(self.clips_per_video if n is None else n):
            sample = self._draw(video, rng, starts, ends, duration, used)
            used.add(sample.narration)
            out.append(sample)
        return out


# ------------------------------------------------------------------------------- building an index
def _drop_beyond_duration(videos: Iterable, durations: dict, stats: CaptionStats) -> Iterator:
    for video_id, starts, ends, texts in videos:
        keep = starts_inside(starts, durations.get(video_id))
        if not keep.all():
            stats.dropped["beyond_duration"] += int((~keep).sum())
            stats.narrations -= int((~keep).sum())
            if not keep.any():
                stats.videos_emptied += 1
                stats.videos -= 1
                continue
            starts, ends, texts = starts[keep], ends[keep], [t for t, k in zip(texts, keep) if k]
        yield video_id, starts, ends, texts


def build_index_from_captions(captions, out_dir, video_list=None, meta=None, durations=None,
                              strict: bool = False, clean_asr: bool = False, skip_bad_videos: bool = False,
                              progress: bool = True, overwrite: bool = False) -> NarrationIndex:
    """caption.json / raw_caption.json or a folder of per-video CSVs -> a ``NarrationIndex`` at ``out_dir``.

    ``video_list``: MIL-NCE list CSV (column video_path) restricting the videos; ``meta``: HowTo100M_v1.csv
    (or a DataFrame indexed by video_id); ``durations``: a video_id,duration CSV -- narrations starting at or
    after a video's end are dropped and the durations stored, so the sampler can keep clips inside videos.
    The reader's counts end up in ``index.manifest["build_stats"]``.
    """
    from tqdm import tqdm

    captions = Path(captions)
    stats = CaptionStats()
    ids = [vid for vid, _ in read_video_list(video_list, strict=strict)] if video_list else None
    if captions.is_dir():
        if ids is None:
            files = sorted(captions.rglob("*.csv"))
            ids = [p.relative_to(captions).with_suffix("").as_posix() for p in files]
        videos = read_caption_folder(captions, ids, strict, clean_asr, skip_bad_videos, stats)
    elif captions.is_file():
        videos = read_caption_json(captions, ids, strict, clean_asr, skip_bad_videos, stats)
    else:
        raise CaptionError(captions, "caption file or folder not found")
    frame = read_howto100m_meta(meta, strict) if isinstance(meta, (str, Path)) else meta
    if durations is not None:
        table = read_durations(durations, strict) if isinstance(durations, (str, Path)) else durations
        videos = _drop_beyond_duration(videos, table["duration"].to_dict(), stats)
        frame = table if frame is None else frame.drop(columns="duration", errors="ignore").join(table, how="outer")
    videos = tqdm(videos, total=len(ids) if ids is not None else None, unit="video", disable=not progress,
                  desc=f"indexing {captions.name}")
    index = NarrationIndex.build(videos, out_dir, meta=frame, stats=stats, overwrite=overwrite)
    if skip_bad_videos and stats.bad_videos:
        atomic_write((Path(out_dir) / "bad_videos.txt"), "\n".join(stats.bad_videos) + "\n")
    return index
