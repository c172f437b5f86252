"""Evaluation windows for retrieval items, decoded as the MIL-NCE eval loaders do (PROTOCOLS Part A §7.2–7.3).

Per item, N windows of `num_frames` frames at `fps` start at linspace(start, max(start, end − num_sec − 0.4), N),
num_sec = num_frames / fps; MSR-VTT items (end None) span 0 → probed duration. Each window is decoded with
datamodules.video.decode.read_clip (short side = size) and centre-cropped with datamodules.video.transforms.center_crop.

Fidelity options (defaults = the original's ffmpeg pipeline):
- sampling="ffmpeg": read_clip picks the frames the original's fps filter picks ("exact": the frame on screen at
  start + i/fps);
- tail="zeros": frames past the end of the video are zeros, as the original zero-pads a short ffmpeg read (read_clip
  itself repeats the last frame; "repeat" keeps that). The duration is probed only for windows that can reach past
  the end. Windows with such frames are counted (`padded`).
A decode error fails the whole item (reported by the caller), never black frames in its place.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.benchmarks.retrieval_items import RetrievalItem
from datamodules.video.clip_spec import ClipSpec
from datamodules.video.decode import DecodeError, probe, read_clip
from datamodules.video.transforms import center_crop


def window_starts(start: float, end: float, num_windows: int, window_seconds: float) -> np.ndarray:
    """The original's window starts: np.linspace(start, max(start, end − window_seconds − 0.4), num_windows)."""
    return np.linspace(start, max(start, end - window_seconds - 0.4), num_windows)


def _default_io():
    return read_clip, center_crop, probe, DecodeError


class RetrievalClips(Dataset):
    """Dataset over `items[indices]`: each element is a dict

        index   the item's position in `items`
        video   uint8 N×3×T×S×S, or None when the item failed
        text    the item's sentence
        starts  float64 window starts (seconds)
        padded  number of windows that needed zero frames at the end
        error   None, or why the item failed

    `read_clip`, `center_crop`, `probe` and `decode_error` default to the datamodules.video.decode / transforms functions.
    """

    def __init__(self, items: Sequence[RetrievalItem], indices: Optional[Sequence[int]] = None, num_windows: int = 10,
                 num_frames: int = 16, fps: float = 5.0, size: int = 224, read_clip: Optional[Callable] = None,
                 center_crop: Optional[Callable] = None, probe: Optional[Callable] = None,
                 decode_error: Optional[type] = None, sampling: str = "ffmpeg", tail: str = "zeros"):
        if num_windows < 1 or num_frames < 1 or fps <= 0 or size < 1:
            raise ValueError(f"bad window settings: num_windows={num_windows}, num_frames={num_frames}, fps={fps}, "
                             f"size={size}")
        self.items = list(items)
        self.indices = list(range(len(self.items))) if indices is None else list(indices)
        self.num_windows, self.num_frames, self.fps, self.size = num_windows, num_frames, float(fps), size
        self.clip_spec = ClipSpec(self.fps, int(num_frames), int(size), int(size), sampling)
        if read_clip is None or center_crop is None or probe is None or decode_error is None:
            d_read, d_crop, d_probe, d_err = _default_io()
            read_clip, center_crop = read_clip or d_read, center_crop or d_crop
            probe, decode_error = probe or d_probe, decode_error or d_err
        self.read_clip, self.center_crop, self.probe, self.decode_error = read_clip, center_crop, probe, decode_error
        if sampling not in ("ffmpeg", "exact") or tail not in ("zeros", "repeat"):
            raise ValueError(f"sampling must be ffmpeg|exact and tail zeros|repeat, got {sampling!r}, {tail!r}")
        self.sampling, self.tail = sampling, tail

    @property
    def window_seconds(self) -> float:
        return self.clip_spec.seconds

    def __len__(self) -> int:
        return len(self.indices)

    def _duration(self, path: str) -> float:
        return float(self.probe(path).duration)

    def __getitem__(self, i: int) -> Dict:
        index = self.indices[i]
        item = self.items[index]
        out = {"index": index, "video": None, "text": item.text, "starts": None, "padded": 0, "error": None}
        if item.path is None:
            out["error"] = "video file not found"
            return out
        nf, fps = self.num_frames, self.fps
        try:
            duration = self._duration(item.path) if item.end is None else None
            end = duration if item.end is None else item.end
            starts = window_starts(item.start, end, self.num_windows, self.window_seconds)
            if self.tail == "zeros" and duration is None and starts[-1] + (nf - 1) / fps >= end:
                duration = self._duration(item.path)     # the window may run past the video's end
        except (self.decode_error, OSError, ValueError, RuntimeError) as err:
            out["error"] = f"probe failed: {type(err).__name__}: {err}"
            return out
        out["starts"] = starts
        windows = []
        for s in starts:
            try:
                clip = self.read_clip(item.path, float(s), nf, fps, self.size, sampling=self.sampling)
            except self.decode_error as err:
                out["error"] = f"decode failed at {s:.2f}s: {err}"
                return out
            if clip.shape[0] == 0:
                out["error"] = f"no frames decoded at {s:.2f}s"
                return out
            clip = self.center_crop(clip, self.size)[:, :nf]          # 3×t×S×S
            real = clip.shape[1]
            if self.tail == "zeros" and duration is not None:
                real = min(real, int(np.sum(s + np.arange(nf) / fps < duration)))
            if real < nf:
                pad = clip.new_zeros((clip.shape[0], nf - real, *clip.shape[2:]))
                clip = torch.cat([clip[:, :real], pad], dim=1)
                out["padded"] += 1
            windows.append(clip)
        out["video"] = torch.stack(windows)
        return out


def collate_windows(batch: List[Dict]) -> Dict:
    """Stack the items that decoded; keep the failures beside them."""
    ok = [b for b in batch if b["video"] is not None]
    return {
        "index": torch.tensor([b["index"] for b in ok], dtype=torch.long),
        "video": torch.stack([b["video"] for b in ok]) if ok else None,
        "text": [b["text"] for b in ok],
        "padded": [b["padded"] for b in ok],
        "failed": [(b["index"], b["error"]) for b in batch if b["video"] is None],
    }
