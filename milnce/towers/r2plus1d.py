"""A small (2+1)D convolutional video tower for CPU-sized training.

S3D-G is the tower whose semantics we reproduce; this one is for learning a lot per CPU-second on small clips
(the demo). A per-frame patchify stem, then blocks of a spatial 1×k×k conv and a temporal k×1×1 conv (each with
BatchNorm and ReLU), global average pooling and a linear projection. On the 2-core reference machine it trains
16×64² clips at about the cost of a quarter-width S3D on 8×64² (tools/bench_step.py).
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import nn


class Conv2Plus1D(nn.Sequential):
    """Spatial (1,3,3) conv → BN → ReLU → temporal (3,1,1) conv → BN → ReLU; strides go to their own axis."""

    def __init__(self, in_channels: int, out_channels: int, spatial_stride: int = 1, temporal_stride: int = 1):
        super().__init__(
            nn.Conv3d(in_channels, out_channels, (1, 3, 3), (1, spatial_stride, spatial_stride), (0, 1, 1),
                      bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_channels, out_channels, (3, 1, 1), (temporal_stride, 1, 1), (1, 0, 0), bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        )


class R2Plus1DSmall(nn.Module):
    """forward(B×3×T×H×W float in [0,1]) → {"video_embedding": B×D, "pooled": B×widths[-1]}.

    widths / spatial_strides / temporal_strides: one entry per block. stem_patch: the stem's non-overlapping
    patch size (and stride) on every frame. channels_last: run the convolutions in channels-last-3d memory layout
    (faster on CPU for these shapes; the numbers are the same up to float rounding).
    """

    def __init__(self, embed_dim: int = 512, widths: Sequence[int] = (32, 64, 128, 256),
                 spatial_strides: Sequence[int] = (1, 2, 2, 1), temporal_strides: Sequence[int] = (1, 2, 2, 1),
                 stem_patch: int = 4, channels_last: bool = False):
        super().__init__()
        widths, spatial_strides, temporal_strides = list(widths), list(spatial_strides), list(temporal_strides)
        if not widths or not len(widths) == len(spatial_strides) == len(temporal_strides):
            raise ValueError(f"R2Plus1DSmall: widths, spatial_strides and temporal_strides need one entry per "
                             f"block, got {len(widths)}, {len(spatial_strides)}, {len(temporal_strides)}")
        if stem_patch < 1 or min(widths) < 1 or min(spatial_strides + temporal_strides) < 1:
            raise ValueError("R2Plus1DSmall: stem_patch, widths and strides must be >= 1")
        self.channels_last = bool(channels_last)
        self.stem = nn.Sequential(
            nn.Conv3d(3, widths[0], (1, stem_patch, stem_patch), (1, stem_patch, stem_patch), bias=False),
            nn.BatchNorm3d(widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks, channels = [], widths[0]
        for width, ss, ts in zip(widths, spatial_strides, temporal_strides):
            blocks.append(Conv2Plus1D(channels, width, ss, ts))
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, embed_dim)
        if self.channels_last:
            self.to(memory_format=torch.channels_last_3d)

    def forward(self, video: torch.Tensor) -> Dict[str, torch.Tensor]:
        if video.dim() != 5 or video.shape[1] != 3:
            raise ValueError(f"R2Plus1DSmall expects B×3×T×H×W, got {tuple(video.shape)}")
        if self.channels_last:
            video = video.contiguous(memory_format=torch.channels_last_3d)
        pooled = self.blocks(self.stem(video)).mean(dim=(2, 3, 4))
        return {"video_embedding": self.fc(pooled), "pooled": pooled}
