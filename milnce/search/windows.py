"""The sliding windows of a collection of videos as batches of clips, decoded in DataLoader workers.

decode="once": each video is decoded once, in chunks of about `chunk_seconds` at the model's fps and size, and every
window's clips are slices of a chunk. A clip whose start lies on the fps grid of its chunk (start·fps whole) is the
same frames read_clip returns for it: frame i of the clip is the frame on screen at start + i/fps either way, and
the tail past the video's end repeats its last frame either way (tests/test_extract_windows.py checks it frame for
frame). Windows with a clip off that grid (the last window, aligned to the video's end; every other one when
stride·fps is not whole) are read clip by clip. A chunk overlaps
the next by one window less one stride, so frames decoded per window ≈ stride·fps·(1 + (window − stride)/chunk).

decode="per_window": every clip seeks and decodes on its own (what milnce.api.encode_video does) — with a 4 s
window at 1 s stride each frame is decoded four times; kept for comparison (tools/bench_extract.py).

Videos are split between ranks (rank::world_size) and then between the workers of a rank, so no two processes
touch one video. A video's batches come in order from one worker; its last batch has last=True, and an unreadable
video yields one batch with `error` set (its earlier batches, if any, are then to be dropped).
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from milnce.api import WindowPlan, plan_windows
from datamodules.video.clip_spec import ClipSpec
from datamodules.video.decode import open_reader
from datamodules.video.transforms import center_crop

DECODE_MODES = ("once", "per_window")
GRID_TOLERANCE = 1e-6   # frames: a clip start this close to a whole number of frames is on the grid


def grid_frame(start: float, fps: float) -> int:
    """start·fps as a whole frame index, or -1 when the start is off the fps grid."""
    k = start * fps
    return int(round(k)) if abs(k - round(k)) < GRID_TOLERANCE else -1


def chunk_windows(plan: WindowPlan, spec: ClipSpec, chunk_frames: int) -> Tuple[List[List[int]], List[int]]:
    """(groups, off_grid): the windows whose clips all start on the fps grid, in consecutive groups whose frames
    span at most chunk_frames (at least one window per group), and the windows that do not."""
    groups: List[List[int]] = []
    off_grid: List[int] = []
    lo = 0
    for w, offsets in enumerate(plan.clips):
        ks = [grid_frame(o, spec.fps) for o in offsets]
        if min(ks) < 0:
            off_grid.append(w)
        elif groups and max(ks) + spec.num_frames - lo <= chunk_frames:
            groups[-1].append(w)
        else:
            groups.append([w])
            lo = min(ks)
    return groups, off_grid


def decode_windows(reader, plan: WindowPlan, spec: ClipSpec, mode: str = "once",
                   chunk_seconds: float = 60.0) -> Iterator[Tuple[int, torch.Tensor, int]]:
    """(window index, its clips C×3×T×crop×crop uint8, frames decoded for it) for every window once: with "once",
    the on-grid windows in order, then the off-grid ones."""
    if mode not in DECODE_MODES:
        raise ValueError(f"decode mode must be one of {DECODE_MODES}, got {mode!r}")
    size = spec.resize or None

    def read(start: float, count: int) -> torch.Tensor:   # 3×count×crop×crop
        return center_crop(reader.clip(float(start), count, spec.fps, size, spec.sampling), spec.crop)

    if mode == "per_window":
        for w, offsets in enumerate(plan.clips):
            yield w, torch.stack([read(o, spec.num_frames) for o in offsets]), len(offsets) * spec.num_frames
        return
    chunk_frames = max(spec.num_frames, int(round(chunk_seconds * spec.fps)))
    groups, off_grid = chunk_windows(plan, spec, chunk_frames)
    for group in groups:
        ks = np.array([[grid_frame(o, spec.fps) for o in plan.clips[w]] for w in group])
        lo, hi = int(ks.min()), int(ks.max()) + spec.num_frames
        frames = read(lo / spec.fps, hi - lo)
        share = (hi - lo) / len(group)
        for w, row in zip(group, ks):
            yield w, torch.stack([frames[:, k - lo:k - lo + spec.num_frames] for k in row]), share
    for w in off_grid:
        yield w, torch.stack([read(o, spec.num_frames) for o in plan.clips[w]]), len(plan.clips[w]) * spec.num_frames


class VideoWindows(IterableDataset):
    """Batches {video, clips (B·C)×3×T×S×S uint8, clips_per_window, starts, ends, duration, frames, last, error}:
    B = ceil(batch_size / C) windows of C clips, so a model call gets as many clips as encode_video gives it."""

    def __init__(self, videos: Sequence[str], spec: ClipSpec, window: float, stride: float, batch_size: int = 16,
                 decode: str = "once", chunk_seconds: float = 60.0, rank: int = 0, world_size: int = 1):
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
        self.videos, self.spec, self.window, self.stride = list(videos), spec, float(window), float(stride)
        self.batch_size, self.decode, self.chunk_seconds = max(1, int(batch_size)), decode, float(chunk_seconds)
        self.rank, self.world_size = int(rank), int(world_size)

    def my_videos(self) -> List[str]:
        mine = self.videos[self.rank::self.world_size]
        worker = get_worker_info()
        return mine if worker is None else mine[worker.id::worker.num_workers]

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        for video in self.my_videos():
            yield from self.video_batches(video)

    def video_batches(self, video: str) -> Iterator[Dict[str, Any]]:
        try:
            with open_reader(video) as reader:
                plan = plan_windows(reader.info.duration, self.window, self.stride, self.spec.seconds)
                pending: List[Tuple[int, torch.Tensor, float]] = []
                left = len(plan.starts)
                per_batch = -(-self.batch_size // plan.clips.shape[1])   # whole windows, >= batch_size clips
                for item in decode_windows(reader, plan, self.spec, self.decode, self.chunk_seconds):
                    pending.append(item)
                    left -= 1
                    if len(pending) == per_batch or not left:
                        yield self._batch(video, plan, pending, last=not left)
                        pending = []
        except Exception as err:  # noqa: BLE001 - an unreadable video is listed by the writer, never fatal
            yield {"video": video, "error": f"{type(err).__name__}: {err}", "last": True}

    @staticmethod
    def _batch(video: str, plan: WindowPlan, items, last: bool) -> Dict[str, Any]:
        ids = [w for w, _, _ in items]
        return {"video": video, "error": "", "last": last, "duration": plan.duration,
                "starts": torch.from_numpy(plan.starts[ids].astype(np.float64)),
                "ends": torch.from_numpy(plan.ends[ids].astype(np.float64)),
                "clips": torch.cat([c for _, c, _ in items]), "clips_per_window": int(plan.clips.shape[1]),
                "frames": float(sum(f for _, _, f in items))}
