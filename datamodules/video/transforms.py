"""Spatial transforms on uint8 clips, vectorised over time. Clips stay uint8 until the model's step converts them.

Input clips are T×H×W×3 uint8 (what datamodules.video.decode returns); outputs are 3×T×S×S uint8, the layout the original
MIL-NCE loaders produced and the model's B×3×T×H×W batches are made of.

Crop semantics (PROTOCOLS.md Part A §5, §7.2):
- training (`random_crop_flip`): a size×size patch at a uniformly random position, no resize (the original relied on
  the 256-px short side of the preprocessed HowTo100M videos; a short side below `size` is resized up first, which
  the original could not do), then a horizontal flip with probability 1/2;
- evaluation (`center_crop`): the centred square of side min(H, W), then resized to size×size.
Resizing is bilinear with antialiasing (the original used ffmpeg's scale filter, bicubic by default: expect
differences of a few grey levels on resized frames, none on crops).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def _check_clip(clip: torch.Tensor, what: str = "clip") -> None:
    if not isinstance(clip, torch.Tensor) or clip.dtype != torch.uint8 or clip.dim() != 4 or clip.shape[-1] != 3:
        shape = tuple(clip.shape) if isinstance(clip, torch.Tensor) else type(clip).__name__
        dtype = clip.dtype if isinstance(clip, torch.Tensor) else None
        raise ValueError(f"{what} must be a T×H×W×3 uint8 tensor, got {shape} {dtype}")


def short_side_shape(height: int, width: int, size: int) -> Tuple[int, int]:
    """(height, width) after scaling the short side to `size`, keeping the aspect ratio (long side rounded)."""
    if height <= width:
        return size, max(1, int(round(width * size / height)))
    return max(1, int(round(height * size / width))), size


def _resize_tchw(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 T×C×H×W → uint8 T×C×height×width, bilinear with antialiasing."""
    if frames.shape[-2:] == (height, width):
        return frames
    out = F.interpolate(frames.float(), size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def resize_short_side(clip: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    """T×H×W×3 uint8 → T×H'×W'×3 uint8 with min(H', W') = size (None or 0: unchanged)."""
    _check_clip(clip)
    if not size:
        return clip
    height, width = short_side_shape(clip.shape[1], clip.shape[2], int(size))
    if (height, width) == tuple(clip.shape[1:3]):
        return clip
    return _resize_tchw(clip.permute(0, 3, 1, 2), height, width).permute(0, 2, 3, 1).contiguous()


def random_crop_flip(clip: torch.Tensor, size: int, generator: Optional[torch.Generator] = None,
                     flip: bool = True) -> torch.Tensor:
    """Training crop: T×H×W×3 uint8 → 3×T×size×size uint8 (random position, no resize; flip with p = 1/2)."""
    _check_clip(clip)
    size = int(size)
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    frames = clip.permute(3, 0, 1, 2)  # 3×T×H×W view
    height, width = frames.shape[-2:]
    if min(height, width) < size:
        nh, nw = short_side_shape(height, width, size)
        frames = _resize_tchw(clip.permute(0, 3, 1, 2), nh, nw).permute(1, 0, 2, 3)
        height, width = nh, nw
    draws = torch.rand(3, generator=generator)
    y = int(draws[0] * (height - size + 1))
    x = int(draws[1] * (width - size + 1))
    out = frames[:, :, y:y + size, x:x + size]
    if flip and bool(draws[2] > 0.5):
        out = out.flip(-1)
    return out.contiguous()


def center_crop(clip: torch.Tensor, size: int) -> torch.Tensor:
    """Evaluation crop: T×H×W×3 uint8 → 3×T×size×size uint8 (centred min(H, W) square, then resized to size)."""
    _check_clip(clip)
    size = int(size)
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    height, width = clip.shape[1:3]
    side = min(height, width)
    y, x = (height - side) // 2, (width - side) // 2
    square = clip[:, y:y + side, x:x + side].permute(0, 3, 1, 2)  # T×3×side×side
    return _resize_tchw(square, size, size).permute(1, 0, 2, 3).contiguous()
