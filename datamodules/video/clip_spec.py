"""ClipSpec: what one clip is — num_frames frames at fps, short side decoded at `resize`, centre/random crop to
`crop`, frame choice `sampling` — in one frozen value that flows from the config to the decoders, the evaluators
and the checkpoint (stored there as the plain dict `preprocess`, so a loaded model needs no guessing).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Mapping, Optional

import torch

from datamodules.video.base import SAMPLINGS
from datamodules.video.decode import CLIP_TIMEOUT, read_clip

KEYS = ("fps", "num_frames", "resize", "crop")   # what a checkpoint must store; sampling defaults to "exact"


@dataclass(frozen=True)
class ClipSpec:
    fps: float
    num_frames: int
    resize: int             # short side the decoder resizes to (0 = native)
    crop: int               # square crop the model sees
    sampling: str = "exact"  # "exact" (frame on screen at start + i/fps) or "ffmpeg" (the original loader's choice)

    def __post_init__(self):
        if not (isinstance(self.num_frames, int) and self.num_frames >= 1):
            raise ValueError(f"ClipSpec.num_frames must be an int >= 1, got {self.num_frames!r}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"ClipSpec.fps must be > 0, got {self.fps!r}")
        if self.resize < 0 or self.crop < 1:
            raise ValueError(f"ClipSpec.resize must be >= 0 and crop >= 1, got {self.resize!r}, {self.crop!r}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"ClipSpec.sampling must be one of {SAMPLINGS}, got {self.sampling!r}")

    @property
    def seconds(self) -> float:
        """How long one clip lasts: num_frames / fps."""
        return self.num_frames / self.fps

    @classmethod
    def from_data_config(cls, data_cfg: Any) -> "ClipSpec":
        """The training clip of a `data` config section (milnce.config.DataConfig)."""
        return cls(float(data_cfg.fps), int(data_cfg.num_frames), int(data_cfg.resize), int(data_cfg.crop),
                   str(getattr(data_cfg, "sampling", "exact") or "exact"))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "preprocess") -> "ClipSpec":
        missing = [k for k in KEYS if d.get(k) is None]
        if missing:
            raise KeyError(f"{where}: no {', '.join(missing)} (a ClipSpec needs {', '.join(KEYS)})")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise KeyError(f"{where}: unknown keys {unknown} (valid: {sorted(names)})")
        return cls(float(d["fps"]), int(d["num_frames"]), int(d["resize"]), int(d["crop"]),
                   str(d.get("sampling") or "exact"))

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def read(self, path, start: float, *, backend: str = "auto", timeout: Optional[float] = CLIP_TIMEOUT,
             threads: Optional[int] = None) -> torch.Tensor:
        """This clip of `path` from `start` seconds, uint8 T×H×W×3, short side `resize`, not cropped."""
        return read_clip(path, start, self.num_frames, self.fps, self.resize or None, backend=backend,
                         threads=threads, timeout=timeout, sampling=self.sampling)
