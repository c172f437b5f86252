"""The reader contract every video backend implements: DecodeError, VideoInfo, Targets (which frames a clip shows) and
the VideoReader base class, plus the thread settings readers share. Backends (pyav.py, decord.py) import only this
module; decode.py picks a backend and adds deadlines and fallbacks.

Timestamp tolerance. A source frame is on screen at target t when its timestamp p satisfies p <= t + eps, and eps
is the precision of the timestamps the backend gives, never a fixed amount of time: a frame that starts after t
by more than that precision is not on screen at t, however little later it starts (on a 30000/1001 fps file
sampled at 10 fps, frame 3 starts at 0.1001 s, so the clip's second frame is frame 2). PyAV's timestamps are exact
multiples pts × time_base converted once to double, so eps is a few double ulps at t (`exact_tolerance`, ~1e-14 s
at 1 s, ~1e-11 s at 1 h, always under half a tick of the time base). decord stores its timestamps as float32, so
eps is a few float32 ulps at t and at the file's start offset (`float32_tolerance`: ~1 µs at 0.1 s, ~1 ms at 1 h);
two frames closer than that are indistinguishable to decord, and on very long videos pyav is the exact backend.
"""
from __future__ import annotations

import abc
import math
import numbers
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from datamodules.video.transforms import resize_short_side

SAMPLINGS = ("exact", "ffmpeg")
_settings = {"threads": 1}


class DecodeError(RuntimeError):
    """A video (or a window of it) could not be decoded; `path` and `reason` say which and why."""

    def __init__(self, path, reason: Optional[str] = None):
        if reason is None:  # DecodeError("message"), as DataLoader uses to re-raise a worker's exception
            path, reason = "", str(path)
        super().__init__(str(path), reason)
        self.path, self.reason = str(path), reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class WindowError(DecodeError):
    """The requested window is not in the video (negative start, past the end, data truncated before it)."""


@dataclass(frozen=True)
class VideoInfo:
    duration: float         # seconds, first frame's timestamp to the end of the last frame
    fps: float              # average frame rate
    width: int              # as displayed (after rotation)
    height: int
    num_frames: int         # from the container header, else duration × fps
    rotation: int = 0       # degrees counter-clockwise applied to decoded frames
    codec: str = ""


def set_decoder_threads(threads: int = 1) -> None:
    """Pin decoder, torch and OpenCV threads of this process (call in every DataLoader worker)."""
    threads = max(1, int(threads))
    _settings["threads"] = threads
    torch.set_num_threads(threads)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(threads)


def worker_init(worker_id: int) -> None:
    """DataLoader worker_init_fn: one decoder/torch thread per worker, so N workers use N cores."""
    set_decoder_threads(1)


def exact_tolerance(t: float) -> float:
    """How far a timestamp computed in double precision may sit past the time it stands for near `t` seconds: a
    few units in the last place (the timestamps themselves are exact)."""
    return 16 * math.ulp(abs(float(t)) + 1.0)


def float32_tolerance(t: float) -> float:
    """The same for timestamps stored as float32 (decord): a few float32 units in the last place at `t`."""
    return 4 * float(np.spacing(np.float32(abs(float(t)) + 1.0))) + exact_tolerance(t)


class Targets:
    """Clip frame i shows the last source frame with timestamp <= a_i, a_i = base + i/fps (i < count).

    exact: base = start + eps (frame on screen at start + i/fps); ffmpeg: base = start + 1/(2 fps) - eps (the
    original's fps filter). count None = unbounded (a whole video). eps is the precision of the backend's
    timestamps near the clip's end (VideoReader.tolerance); by default that of exact timestamps in double precision.
    """

    def __init__(self, start: float, fps: float, count: Optional[int], sampling: str = "exact",
                 eps: Optional[float] = None):
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        self.start, self.fps, self.count = float(start), float(fps), count
        if eps is None:
            eps = exact_tolerance(self.start + (count or 0) / self.fps)
        self.eps = float(eps)
        if sampling == "exact":
            self.base = self.start + self.eps
        else:
            self.base = self.start + 0.5 / self.fps - self.eps

    def key(self, i: int) -> float:
        return self.base + i / self.fps

    def first_at_or_after(self, t: float) -> int:
        """Smallest i >= 0 with a_i >= t."""
        i = max(0, int(np.ceil((t - self.base) * self.fps)))
        while i > 0 and self.key(i - 1) >= t:
            i -= 1
        while self.key(i) < t:
            i += 1
        return i

    def any_in(self, lo: float, hi: float) -> bool:
        """Is some a_i in [lo, hi)?"""
        i = self.first_at_or_after(lo)
        return (self.count is None or i < self.count) and self.key(i) < hi

    def keys(self, n: int) -> np.ndarray:
        return self.base + np.arange(n) / self.fps


class VideoReader(abc.ABC):
    """One open video file. Subclasses implement `_frames(targets, size, deadline) -> uint8 N×H×W×3 ndarray`."""

    name = "?"

    def __init__(self, path: str, threads: Optional[int] = None):
        self.path = str(path)
        self.threads = int(threads or _settings["threads"])

    @property
    @abc.abstractmethod
    def info(self) -> VideoInfo:
        """Duration, rate, size and rotation of the open file."""

    def tolerance(self, t: Optional[float]) -> float:
        """How far past the time it stands for a timestamp of this backend may sit near `t` seconds (None: anywhere
        in the file). Exact rationals converted once to double by default."""
        return exact_tolerance(t or 0.0)

    @abc.abstractmethod
    def _frames(self, targets: Targets, size: Optional[int], deadline: Optional[float]) -> np.ndarray:
        """The frames on screen at `targets`, RGB uint8 N×H×W×3, short side resized to `size`."""

    def clip(self, start: float, num_frames: int, fps: float, size: Optional[int] = None,
             sampling: str = "exact", deadline: Optional[float] = None) -> torch.Tensor:
        """num_frames frames at start + i/fps, short side resized to `size` (None/0: native): uint8 T×H×W×3."""
        _check_window(self.path, start, num_frames, fps, size, sampling)
        end = float(start) + int(num_frames) / float(fps)
        targets = Targets(float(start), float(fps), int(num_frames), sampling, eps=self.tolerance(end))
        frames = self._frames(targets, int(size) if size else None, deadline)
        return torch.from_numpy(np.ascontiguousarray(frames))

    def video(self, fps: float, size: Optional[int] = None, deadline: Optional[float] = None) -> torch.Tensor:
        """The whole video at `fps` (frames at 0, 1/fps, … before the end): uint8 T×H×W×3."""
        _check_window(self.path, 0.0, 1, fps, size)
        targets = Targets(0.0, float(fps), None, eps=self.tolerance(None))
        frames = self._frames(targets, int(size) if size else None, deadline)
        return torch.from_numpy(np.ascontiguousarray(frames))

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _finite(x) -> bool:
    return isinstance(x, numbers.Real) and math.isfinite(float(x))


def _whole(x, low: int) -> bool:
    return _finite(x) and float(x).is_integer() and x >= low


def _check_window(path: str, start, num_frames, fps, size, sampling: str = "exact") -> None:
    if not (_whole(num_frames, 1) and _finite(fps) and float(fps) > 0 and (size is None or _whole(size, 0))
            and sampling in SAMPLINGS):
        raise DecodeError(path, f"invalid request: num_frames={num_frames!r} (int >= 1), fps={fps!r} (> 0), "
                                f"size={size!r} (int >= 0 or None), sampling={sampling!r} (one of {SAMPLINGS})")
    if not _finite(start) or float(start) < 0:
        raise WindowError(path, f"window start {start!r}s is negative or not finite")


def check_deadline(path: str, deadline: Optional[float]) -> None:
    """Backends call this between packets so an abandoned decode stops soon after its deadline."""
    if deadline is not None and time.monotonic() > deadline:
        raise DecodeError(path, "decode timed out")


def resize_frames(frames: np.ndarray, size: Optional[int]) -> np.ndarray:
    """N×H×W×3 uint8 ndarray with the short side resized to `size` (torch, bilinear antialiased)."""
    if not size or min(frames.shape[1:3]) == size:
        return frames
    return resize_short_side(torch.from_numpy(np.ascontiguousarray(frames)), size).numpy()
