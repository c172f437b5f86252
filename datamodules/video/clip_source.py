"""Where training clips come from: decoded from the file per sample, or sliced from a corpus decoded once into RAM.

Decoding on the fly is what a million-video corpus needs. A small corpus (the toy demo, a fine-tuning set) fits in
memory once decoded at the training fps and size, and slicing it is an order of magnitude faster than seeking
into an H.264 stream for every sample (measured on the 2-core CI machine: 375 vs 2,929 steps in 7 minutes).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from datamodules.video.decode import CLIP_TIMEOUT, DecodeError, VIDEO_TIMEOUT, read_clip, read_video


def clip_deadline(timeout: Optional[float]) -> Optional[float]:
    """The deadline of one clip decode for data.decode_timeout (None: CLIP_TIMEOUT, 0: none)."""
    return _deadline(timeout, CLIP_TIMEOUT)


def _deadline(timeout: Optional[float], default: float) -> Optional[float]:
    """data.decode_timeout: None = the reader's default deadline, 0 = none, else seconds."""
    if timeout is None:
        return default
    return float(timeout) or None


class FileClips:
    """Decode exactly the requested window from the video file.

    Every decode has a deadline (`timeout` seconds; None = datamodules.video.decode.CLIP_TIMEOUT, 0 = none): a read that
    hangs (a stalled network file system, a pathological file) becomes a DecodeError, which the dataset counts and
    replaces, instead of a stalled DataLoader worker.
    """

    def __init__(self, paths: Sequence[str], resize: int, backend: str = "auto", timeout: Optional[float] = None):
        self.paths = list(paths)
        self.resize = resize
        self.backend = backend
        self.timeout = _deadline(timeout, CLIP_TIMEOUT)

    def duration(self, video: int) -> Optional[float]:
        return None

    def clip(self, video: int, start: float, num_frames: int, fps: float) -> torch.Tensor:
        return read_clip(self.paths[video], start, num_frames, fps, self.resize, backend=self.backend,
                         timeout=self.timeout)


class MemoryClips:
    """The whole corpus decoded once at `fps` and short side `resize`; clips are slices of it.

    A window that runs past the end repeats the last frame, as `read_clip` does; a start past the end is a
    DecodeError. Videos that fail to decode are left out and listed in `failed`.
    """

    def __init__(self, paths: Sequence[str], fps: float, resize: int, progress: bool = True,
                 backend: str = "auto", timeout: Optional[float] = None):
        self.paths = list(paths)
        deadline = _deadline(timeout, VIDEO_TIMEOUT)
        self.fps = float(fps)
        self.frames: List[Optional[torch.Tensor]] = []
        self.failed: Dict[str, str] = {}
        for path in tqdm(self.paths, desc=f"decoding corpus into memory ({fps:g} fps, {resize}px)",
                         disable=not progress, unit="video"):
            try:
                self.frames.append(read_video(path, fps, resize, backend=backend, timeout=deadline).contiguous())
            except DecodeError as err:
                self.frames.append(None)
                self.failed[path] = str(err)

    @property
    def nbytes(self) -> int:
        return sum(f.numel() for f in self.frames if f is not None)

    def duration(self, video: int) -> Optional[float]:
        frames = self.frames[video]
        return None if frames is None else frames.shape[0] / self.fps

    def clip(self, video: int, start: float, num_frames: int, fps: float) -> torch.Tensor:
        frames = self.frames[video]
        if frames is None:
            raise DecodeError(self.paths[video], self.failed.get(self.paths[video], "failed to decode"))
        if abs(fps - self.fps) > 1e-6:
            raise ValueError(f"MemoryClips holds {self.fps:g} fps frames, a clip at {fps:g} fps was asked for")
        first = int(np.floor(start * self.fps + 1e-6))
        if start < 0 or first >= frames.shape[0]:
            raise DecodeError(self.paths[video], f"window start {start:.2f}s outside the video "
                                                 f"({frames.shape[0] / self.fps:.2f}s)")
        idx = torch.clamp(torch.arange(first, first + num_frames), max=frames.shape[0] - 1)
        return frames[idx]
