"""decord backend of datamodules.video.decode: frame timestamps from decord's index, frames from get_batch.

decord indexes every packet when it opens a file (cost grows with the video's length), returns float32 timestamps
(hence `tolerance`: a few float32 ulps at the frame's time plus the file's start offset, see video/base.py), applies 180° rotation metadata but fails on 90°/270° (reported as a
DecodeError naming the cause, so backend="auto" moves on to PyAV), and resizes here with torch.
"""
from __future__ import annotations

from typing import Optional

import decord
import numpy as np

from datamodules.video.base import (DecodeError, Targets, VideoInfo, VideoReader, WindowError, check_deadline,
                                    float32_tolerance, resize_frames)

_BATCH = 32  # frames per get_batch call: bounds memory on whole videos and lets the deadline be checked


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()
    text = text[0] if text else type(err).__name__
    if "from_size == to_size" in str(err):
        text += " (decord cannot decode videos with 90/270 degree rotation metadata; use backend='pyav')"
    return text[:300]


class DecordReader(VideoReader):
    name = "decord"

    def __init__(self, path: str, threads: Optional[int] = None):
        super().__init__(path, threads)
        try:
            self.reader = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=self.threads)
            count = len(self.reader)
            stamps = self.reader.get_frame_timestamp(np.arange(count)) if count else np.zeros((0, 2))
        except Exception as err:  # noqa: BLE001
            raise DecodeError(self.path, f"decord cannot open: {_reason(err)}") from err
        if count == 0:
            raise DecodeError(self.path, "no video frames")
        stamps = np.asarray(stamps, dtype=np.float64).reshape(count, 2)
        if np.any(np.diff(stamps[:, 0]) < 0):
            raise DecodeError(self.path, "decord's frame timestamps are not in display order")
        self.origin = float(stamps[0, 0])
        self.times = stamps[:, 0] - stamps[0, 0]
        self.end = float(stamps[-1, 1] - stamps[0, 0])
        if self.end <= self.times[-1]:  # no frame duration known: assume the average frame period
            self.end = float(self.times[-1] + (self.times[-1] / (count - 1) if count > 1 else 0.0))

    def tolerance(self, t: Optional[float]) -> float:
        """float32 timestamps (stored relative to the file's start, then shifted to 0 here): their rounding at
        the absolute time, plus that of the start."""
        t = self.end if t is None else float(t)
        return float32_tolerance(abs(t) + abs(self.origin)) + float32_tolerance(self.origin)

    @property
    def info(self) -> VideoInfo:
        first = self._batch(np.array([0]), None)
        fps = float(self.reader.get_avg_fps())
        return VideoInfo(duration=self.end, fps=fps, width=int(first.shape[2]), height=int(first.shape[1]),
                         num_frames=len(self.times))

    def _batch(self, indices: np.ndarray, deadline: Optional[float]) -> np.ndarray:
        chunks = []
        for lo in range(0, len(indices), _BATCH):
            check_deadline(self.path, deadline)
            try:
                chunks.append(self.reader.get_batch(indices[lo:lo + _BATCH].tolist()).asnumpy())
            except Exception as err:  # noqa: BLE001
                raise DecodeError(self.path, f"decord failed: {_reason(err)}") from err
        return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]

    def _frames(self, targets: Targets, size: Optional[int], deadline: Optional[float]) -> np.ndarray:
        if targets.start >= self.end:
            raise WindowError(self.path, f"window starts at {targets.start:.3f}s, at or after the video's end "
                                         f"({self.end:.3f}s)")
        if targets.count is None:
            count = int(np.ceil((self.end - targets.start) * targets.fps - 1e-9))
        else:
            count = targets.count
        keys = targets.keys(count)
        indices = np.clip(np.searchsorted(self.times, keys, side="right") - 1, 0, len(self.times) - 1)
        unique, inverse = np.unique(indices, return_inverse=True)
        frames = resize_frames(self._batch(unique, deadline), size)
        return frames[inverse.reshape(-1)]
