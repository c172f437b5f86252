"""A video's sliding-window embeddings with a model's own clip, the video decoded once.

The whole video is decoded at the model's fps and short side (datamodules.video.read_video), centre-cropped once,
and every window is a view of num_frames consecutive frames starting every `stride` frames — no window is decoded
twice, unlike per-window reading (milnce.api.encode_video seeks once per window). Memory: the cropped video, e.g.
3 × T × crop² bytes (a 10-minute video at 10 fps and 224 px: 0.9 GB; at the demo's 5 fps and 48 px: 21 MB).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from milnce import inference as U
from milnce.align.scoring import text_window_scores
from milnce.api import encode_text
from datamodules.video.decode import DecodeError, read_video
from datamodules.video.transforms import center_crop


@dataclass
class WindowEmbeddings:
    """Window i covers [starts[i], starts[i] + seconds) of the video; embeddings W×D float32."""
    starts: np.ndarray
    seconds: float
    embeddings: np.ndarray
    duration: float

    @property
    def centres(self) -> np.ndarray:
        return self.starts + 0.5 * self.seconds


def window_starts(num_frames_total: int, num_frames: int, stride_frames: int) -> np.ndarray:
    """First-frame indices 0, s, 2s, … of windows inside the video, plus one ending on the last frame when the grid
    leaves a tail; a video shorter than one window gives the single window 0 (padded by repeating its last frame)."""
    last = num_frames_total - num_frames
    if last <= 0:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, last + 1, stride_frames, dtype=np.int64)
    if starts[-1] != last:
        starts = np.append(starts, last)
    return starts


def decoded_video(path: str, spec, timeout: Optional[float] = None) -> torch.Tensor:
    """The whole video at the clip's fps, short side `resize`, centre-cropped: uint8 3×T×crop×crop."""
    kwargs = {} if timeout is None else {"timeout": timeout}
    frames = read_video(path, spec.fps, spec.resize or None, **kwargs)
    if frames.shape[0] == 0:
        raise DecodeError(path, "no frame decoded")
    return center_crop(frames, spec.crop)


class DecodedVideos(Dataset):
    """(video_id, path) pairs → {"video_id", "frames" (3×T×S×S uint8) or None, "error"}; for a DataLoader whose
    workers decode while the main process embeds (batch_size=None)."""

    def __init__(self, items, spec, timeout: Optional[float] = None):
        self.items, self.spec, self.timeout = list(items), spec, timeout

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        video_id, path = self.items[i]
        try:
            return {"video_id": video_id, "frames": decoded_video(path, self.spec, self.timeout), "error": None}
        except DecodeError as err:
            return {"video_id": video_id, "frames": None, "error": str(err)}


def embed_decoded(model, frames: torch.Tensor, stride: float, batch_size: int = 64) -> WindowEmbeddings:
    """Embed every window of a decoded video (3×T×S×S uint8); stride in seconds, rounded to whole frames."""
    spec = model.clip_spec
    stride_frames = max(1, int(round(stride * spec.fps)))
    total = frames.shape[1]
    if total < spec.num_frames:   # shorter than one clip: repeat the last frame (as a decoder past the end would)
        pad = frames[:, -1:].expand(-1, spec.num_frames - total, -1, -1)
        frames = torch.cat([frames, pad], dim=1)
    starts = window_starts(frames.shape[1], spec.num_frames, stride_frames)
    device = U.module_device(model)
    chunks = []
    with U.eval_mode(model):
        for k in range(0, len(starts), batch_size):
            batch = torch.stack([frames[:, s:s + spec.num_frames] for s in starts[k:k + batch_size]])
            chunks.append(U.embed_windows(model, batch, batch_size, device))
    emb = torch.cat(chunks).numpy().astype(np.float32, copy=False)
    return WindowEmbeddings(starts / spec.fps, spec.seconds, emb, total / spec.fps)


def video_scores(model, frames: torch.Tensor, texts, stride: float) -> Tuple[np.ndarray, WindowEmbeddings]:
    """One decoded video (3×T×S×S uint8) and its texts → (N texts × W windows training logits, the windows)."""
    windows = embed_decoded(model, frames, stride)
    return text_window_scores(model, encode_text(model, texts), windows.embeddings), windows
