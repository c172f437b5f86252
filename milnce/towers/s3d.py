"""S3D-G, the video network of the released MIL-NCE model (S3D_HowTo100M), rebuilt module for module.

With width_mult=1 the state_dict keys, order and shapes equal the released s3d_howto100m.pth (video part), so
that file loads strictly. Details that matter for bit-compatibility (PROTOCOLS.md Part A §1):
space-to-depth channel order and the crop after conv1, TF-'SAME' max-pools (zero pad + ceil_mode), separable
convs with BN+ReLU after both parts, 37 self-gates, BatchNorm eps 1e-5 / momentum 0.1, no conv bias.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

INITS = ("uniform", "kaiming_normal")

# (name, o0, o1a, o1b, o2a, o2b, o3b) of every Inception block; the input width is the previous block's output.
_INCEPTION = (
    ("mixed_3b", 64, 96, 128, 16, 32, 32),
    ("mixed_3c", 128, 128, 192, 32, 96, 64),
    ("mixed_4b", 192, 96, 208, 16, 48, 64),
    ("mixed_4c", 160, 112, 224, 24, 64, 64),
    ("mixed_4d", 128, 128, 256, 24, 64, 64),
    ("mixed_4e", 112, 144, 288, 32, 64, 64),
    ("mixed_4f", 256, 160, 320, 32, 128, 128),
    ("mixed_5b", 256, 160, 320, 32, 128, 128),
    ("mixed_5c", 384, 192, 384, 48, 128, 128),
)
MIN_CHANNELS = 8


def scaled_channels(channels: int, width_mult: float) -> int:
    """Channel count of a layer at width_mult (never below MIN_CHANNELS; width_mult=1 is the identity)."""
    if width_mult == 1.0:
        return channels
    return max(MIN_CHANNELS, int(round(channels * width_mult)))


class STConv3D(nn.Module):
    """Conv3d (no bias) → BN → ReLU; separable: (1,k,k) spatial then (k,1,1) temporal, BN+ReLU after each."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 separable: bool = False):
        super().__init__()
        self.separable = separable
        if separable:
            k, s, p = _triple(kernel_size), _triple(stride), _triple(padding)
            if k[0] == 1:
                raise ValueError("STConv3D: a separable conv needs a temporal kernel > 1")
            self.conv1 = nn.Conv3d(in_channels, out_channels, (1, k[1], k[2]), stride=(1, s[1], s[2]),
                                   padding=(0, p[1], p[2]), bias=False)
            self.bn1 = nn.BatchNorm3d(out_channels, eps=1e-5, momentum=0.1)
            self.conv2 = nn.Conv3d(out_channels, out_channels, (k[0], 1, 1), stride=(s[0], 1, 1),
                                   padding=(p[0], 0, 0), bias=False)
            self.bn2 = nn.BatchNorm3d(out_channels, eps=1e-5, momentum=0.1)
        else:
            self.conv1 = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                   bias=False)
            self.bn1 = nn.BatchNorm3d(out_channels, eps=1e-5, momentum=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        if self.separable:
            x = F.relu(self.bn2(self.conv2(x)), inplace=True)
        return x


class SelfGating(nn.Module):
    """x * sigmoid(fc(mean over T,H,W of x)), one weight per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.sigmoid(self.fc(x.mean(dim=(2, 3, 4))))
        return x * weights[:, :, None, None, None]


class MaxPool3dTFSame(nn.Module):
    """TF 'SAME' max-pool as the original emulates it: zero pad (extra on the far side), then ceil_mode pooling.

    Zero padding equals TF's -inf padding only because every input here is post-ReLU (≥ 0).
    """

    def __init__(self, kernel_size, stride):
        super().__init__()
        self.kernel_size = _triple(kernel_size)
        self.stride = _triple(stride)
        pads = []
        for k, s in zip(self.kernel_size, self.stride):
            total = max(k - s, 0)
            pads.append((total // 2, total - total // 2))
        (t0, t1), (h0, h1), (w0, w1) = pads
        self.pad = (w0, w1, h0, h1, t0, t1)  # F.pad order: last dimension first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad, mode="constant", value=0.0)
        return F.max_pool3d(x, self.kernel_size, self.stride, ceil_mode=True)


class InceptionBlock(nn.Module):
    """Four branches (1×1×1; 1×1×1→sep 3×3×3; 1×1×1→sep 3×3×3; max-pool→1×1×1), each self-gated, concatenated."""

    def __init__(self, in_channels: int, o0: int, o1a: int, o1b: int, o2a: int, o2b: int, o3b: int):
        super().__init__()
        self.conv_b0 = STConv3D(in_channels, o0, 1)
        self.conv_b1_a = STConv3D(in_channels, o1a, 1)
        self.conv_b1_b = STConv3D(o1a, o1b, 3, padding=1, separable=True)
        self.conv_b2_a = STConv3D(in_channels, o2a, 1)
        self.conv_b2_b = STConv3D(o2a, o2b, 3, padding=1, separable=True)
        self.maxpool_b3 = nn.MaxPool3d(3, stride=1, padding=1)  # PyTorch -inf padding, as the original
        self.conv_b3_b = STConv3D(in_channels, o3b, 1)
        self.gating_b0 = SelfGating(o0)
        self.gating_b1 = SelfGating(o1b)
        self.gating_b2 = SelfGating(o2b)
        self.gating_b3 = SelfGating(o3b)
        self.out_channels = o0 + o1b + o2b + o3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b0 = self.gating_b0(self.conv_b0(x))
        b1 = self.gating_b1(self.conv_b1_b(self.conv_b1_a(x)))
        b2 = self.gating_b2(self.conv_b2_b(self.conv_b2_a(x)))
        b3 = self.gating_b3(self.conv_b3_b(self.maxpool_b3(x)))
        return torch.cat((b0, b1, b2, b3), dim=1)


def space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """B×C×T×H×W → B×8C×T/2×H/2×W/2; new channel ((dt*2+dh)*2+dw)*C + c for the offsets inside each 2×2×2 cell."""
    b, c, t, h, w = x.shape
    if t % 2 or h % 2 or w % 2:
        raise ValueError(f"S3D with space_to_depth needs even T, H and W; got T={t}, H={h}, W={w}")
    x = x.view(b, c, t // 2, 2, h // 2, 2, w // 2, 2)
    x = x.permute(0, 3, 5, 7, 1, 2, 4, 6)
    return x.reshape(b, 8 * c, t // 2, h // 2, w // 2)


class S3D(nn.Module):
    """S3D-G video tower. forward(video B×3×T×H×W float in [0,1]) → {"video_embedding": B×num_classes,
    "mixed_5c": B×C} (C = 1024 at width_mult=1); neither output is normalised.

    gating: accepted for signature compatibility; as in the original, every gate exists and runs regardless.
    init: "uniform" (PyTorch defaults, as the released code) or "kaiming_normal" (MIL-NCE option: convs
    kaiming_normal fan_in/relu, BN weight 1 bias 0).
    """

    def __init__(self, num_classes: int = 512, space_to_depth: bool = True, width_mult: float = 1.0,
                 gating: bool = True, init: str = "uniform"):
        super().__init__()
        if not 0.0 < width_mult <= 1.0:
            raise ValueError(f"S3D: width_mult must be in (0, 1], got {width_mult}")
        if init not in INITS:
            raise ValueError(f"S3D: unknown init '{init}' (valid: {', '.join(INITS)})")
        self.num_classes = num_classes
        self.space_to_depth = space_to_depth
        self.width_mult = width_mult
        ch = lambda c: scaled_channels(c, width_mult)  # noqa: E731

        if space_to_depth:
            self.conv1 = STConv3D(24, ch(64), (2, 4, 4), stride=1, padding=(1, 2, 2))
        else:
            self.conv1 = STConv3D(3, ch(64), (3, 7, 7), stride=2, padding=(1, 3, 3))
        self.conv_2b = STConv3D(ch(64), ch(64), 1)
        self.conv_2c = STConv3D(ch(64), ch(192), 3, padding=1, separable=True)
        self.gating = SelfGating(ch(192))
        self.maxpool_2a = MaxPool3dTFSame((1, 3, 3), (1, 2, 2))
        self.maxpool_3a = MaxPool3dTFSame((1, 3, 3), (1, 2, 2))
        self.maxpool_4a = MaxPool3dTFSame((3, 3, 3), (2, 2, 2))
        self.maxpool_5a = MaxPool3dTFSame((2, 2, 2), (2, 2, 2))
        self.maxPool3d_5a_2x2 = self.maxpool_5a  # the original's second name for it (no parameters)
        in_channels = ch(192)
        for name, *outs in _INCEPTION:
            block = InceptionBlock(in_channels, *(ch(o) for o in outs))
            setattr(self, name, block)
            in_channels = block.out_channels
        self.out_channels = in_channels
        self.fc = nn.Linear(in_channels, num_classes)

        if init == "kaiming_normal":
            self._init_kaiming()

    def _init_kaiming(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, video: torch.Tensor) -> torch.Tensor:
        """The mixed_5c feature map, B×C×T'×H'×W'."""
        if video.dim() != 5 or video.shape[1] != 3:
            raise ValueError(f"S3D expects video B×3×T×H×W, got shape {tuple(video.shape)}")
        if not video.is_floating_point():
            raise TypeError(f"S3D expects float video in [0, 1], got {video.dtype} (divide uint8 by 255)")
        x = space_to_depth(video) if self.space_to_depth else video
        if x.device.type == "cpu":  # oneDNN convs and max-pools run several times faster channels-last
            x = x.contiguous(memory_format=torch.channels_last_3d)
        x = self.conv1(x)
        if self.space_to_depth:
            x = x[:, :, 1:, 1:, 1:]  # the original's emulation of TF 'SAME' for the (2,4,4) conv
        x = self.maxpool_2a(x)
        x = self.conv_2b(x)
        x = self.conv_2c(x)
        x = self.gating(x)
        x = self.maxpool_3a(x)
        x = self.mixed_3b(x)
        x = self.mixed_3c(x)
        x = self.maxpool_4a(x)
        x = self.mixed_4b(x)
        x = self.mixed_4c(x)
        x = self.mixed_4d(x)
        x = self.mixed_4e(x)
        x = self.mixed_4f(x)
        x = self.maxpool_5a(x)
        x = self.mixed_5b(x)
        return self.mixed_5c(x)

    def forward(self, video: torch.Tensor) -> Dict[str, torch.Tensor]:
        pooled = self.features(video).mean(dim=(2, 3, 4))
        return {"video_embedding": self.fc(pooled), "mixed_5c": pooled}


def _triple(value) -> Tuple[int, int, int]:
    if isinstance(value, Sequence):
        if len(value) != 3:
            raise ValueError(f"expected 3 values (T, H, W), got {value}")
        return tuple(int(v) for v in value)  # type: ignore[return-value]
    return (int(value),) * 3
