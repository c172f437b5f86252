"""ViT video tower: a Hugging Face vision transformer applied to every frame, pooled over time, projected.

Two backbones:
- per-frame image transformers (ViTModel, CLIPVisionModel): the B·T frames go through the image model one by one,
  the per-frame feature is the final-layer-normed CLS token, and `temporal_pooling` turns the T frame features into
  one clip feature (`mean`, or `transformer`: a small pre-norm transformer over time with a learned positional
  embedding, then the mean of its outputs);
- TimeSformer-style divided space–time attention (`divided_space_time=True`), through transformers'
  TimesformerModel: the frames attend to each other inside the backbone. Frame features are the mean of each
  frame's patch tokens; `temporal_pooling` may also be `cls` here (TimeSformer's own CLS token).

Input is B×3×T×H×W float in [0,1]; the tower resizes frames to the backbone's image size when they differ and
normalises them with the checkpoint's image mean/std (preprocessor_config.json), so data pipelines stay the same
as for S3D. With `pretrained`, the architecture (sizes, patch, image size, TimeSformer frame count) comes from the
checkpoint and the size arguments are ignored.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

PER_FRAME_MODEL_TYPES = ("vit", "clip", "clip_vision_model")
VIDEO_MODEL_TYPES = ("timesformer",)
TEMPORAL_POOLINGS = ("mean", "transformer", "cls")


def checkpoint_model_type(path: str | Path) -> str:
    """The `model_type` in a local Hugging Face checkpoint directory's config.json."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"ViT tower: {config_file} not found (model.vit.pretrained must be a local "
                                f"Hugging Face checkpoint directory)")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except json.JSONDecodeError as err:
        raise ValueError(f"ViT tower: {config_file} is not valid JSON: {err}") from None
    if not model_type:
        raise ValueError(f"ViT tower: {config_file} has no 'model_type'")
    return str(model_type)


def image_statistics(pretrained: Optional[str | Path], model_type: str) -> Tuple[Sequence[float], Sequence[float]]:
    """Per-channel mean/std the backbone was trained with: the checkpoint's preprocessor_config.json when it has
    one, else CLIP's statistics for CLIP models and ImageNet's for everything else."""
    if pretrained is not None:
        processor_file = Path(pretrained) / "preprocessor_config.json"
        if processor_file.is_file():
            processor = json.loads(processor_file.read_text())
            mean, std = processor.get("image_mean"), processor.get("image_std")
            if mean is not None and std is not None:
                if len(mean) != 3 or len(std) != 3:
                    raise ValueError(f"ViT tower: {processor_file}: image_mean/image_std must have 3 values")
                return mean, std
    if model_type.startswith("clip"):
        return CLIP_MEAN, CLIP_STD
    return IMAGENET_MEAN, IMAGENET_STD


class TemporalTransformer(nn.Module):
    """Pre-norm transformer over the T frame features with a learned positional embedding; mean of the outputs."""

    def __init__(self, dim: int, num_layers: int, num_heads: int, max_frames: int):
        super().__init__()
        self.position = nn.Parameter(torch.zeros(1, max_frames, dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, num_heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        position = self.position
        if frames.shape[1] != position.shape[1]:  # other clip lengths: stretch the learned table linearly
            position = F.interpolate(position.transpose(1, 2), size=frames.shape[1], mode="linear",
                                     align_corners=True).transpose(1, 2)
        return self.norm(self.encoder(frames + position)).mean(dim=1)


class ViTVideoTower(nn.Module):
    """Video tower around a transformers vision transformer; arguments mirror milnce.config.ViTConfig."""

    def __init__(self, embed_dim: int = 512, pretrained: Optional[str] = None, image_size: int = 224,
                 patch_size: int = 16, hidden_size: int = 768, num_layers: int = 12, num_heads: int = 12,
                 intermediate_size: int = 3072, temporal_pooling: str = "mean", temporal_layers: int = 2,
                 divided_space_time: bool = False, num_frames: int = 16):
        super().__init__()
        if temporal_pooling not in TEMPORAL_POOLINGS:
            raise ValueError(f"ViT tower: temporal_pooling '{temporal_pooling}' is not one of {TEMPORAL_POOLINGS}")
        if temporal_pooling == "cls" and not divided_space_time:
            raise ValueError("ViT tower: temporal_pooling 'cls' needs divided_space_time=true (a per-frame image "
                             "model has no clip-level CLS token)")
        model_type = checkpoint_model_type(pretrained) if pretrained else (
            "timesformer" if divided_space_time else "vit")
        if divided_space_time and model_type not in VIDEO_MODEL_TYPES:
            raise ValueError(f"ViT tower: divided_space_time needs a TimeSformer checkpoint (model_type "
                             f"'timesformer'); {pretrained} has model_type '{model_type}'")
        if not divided_space_time and model_type not in PER_FRAME_MODEL_TYPES:
            raise ValueError(f"ViT tower: {pretrained} has model_type '{model_type}'; supported per-frame model "
                             f"types are {PER_FRAME_MODEL_TYPES}"
                             + (" (set divided_space_time=true for it)" if model_type in VIDEO_MODEL_TYPES else ""))
        self.model_type = model_type
        self.temporal_pooling = temporal_pooling
        self.backbone = (self._load(pretrained, model_type) if pretrained else
                         self._build(image_size, patch_size, hidden_size, num_layers, num_heads, intermediate_size,
                                     divided_space_time, num_frames))
        config = self.backbone.config
        self.image_size = int(config.image_size)
        self.num_frames = int(getattr(config, "num_frames", num_frames))
        self.feature_dim = int(config.hidden_size)
        mean, std = image_statistics(pretrained, model_type)
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.temporal = (TemporalTransformer(self.feature_dim, temporal_layers, config.num_attention_heads,
                                             self.num_frames) if temporal_pooling == "transformer" else None)
        self.proj = nn.Linear(self.feature_dim, embed_dim)

    @staticmethod
    def _load(pretrained: str, model_type: str) -> nn.Module:
        from transformers import CLIPVisionModel, TimesformerModel, ViTModel

        kwargs = dict(local_files_only=True, output_loading_info=True)
        if model_type == "vit":
            model, info = ViTModel.from_pretrained(pretrained, add_pooling_layer=False, **kwargs)
        elif model_type == "timesformer":
            model, info = TimesformerModel.from_pretrained(pretrained, **kwargs)
        else:
            model, info = CLIPVisionModel.from_pretrained(pretrained, **kwargs)
        # transformers fills absent weights with random ones and only logs it; a half-random backbone is an error.
        missing = list(info.get("missing_keys", [])) + [str(k) for k in info.get("mismatched_keys", [])]
        if missing:
            raise ValueError(f"ViT tower: {pretrained} lacks or mis-shapes {len(missing)} backbone weights, e.g. "
                             f"{', '.join(sorted(missing)[:5])}")
        return model

    @staticmethod
    def _build(image_size: int, patch_size: int, hidden_size: int, num_layers: int, num_heads: int,
               intermediate_size: int, divided_space_time: bool, num_frames: int) -> nn.Module:
        from transformers import TimesformerConfig, TimesformerModel, ViTConfig, ViTModel

        if hidden_size % num_heads:
            raise ValueError(f"ViT tower: hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        if image_size % patch_size:
            raise ValueError(f"ViT tower: image_size {image_size} is not divisible by patch_size {patch_size}")
        sizes = dict(image_size=image_size, patch_size=patch_size, hidden_size=hidden_size,
                     num_hidden_layers=num_layers, num_attention_heads=num_heads, intermediate_size=intermediate_size)
        if divided_space_time:
            return TimesformerModel(TimesformerConfig(num_frames=num_frames, attention_type="divided_space_time",
                                                      **sizes))
        return ViTModel(ViTConfig(**sizes), add_pooling_layer=False)

    def _normalised_frames(self, video: torch.Tensor) -> torch.Tensor:
        """B×3×T×H×W in [0,1] → (B·T)×3×S×S normalised with the backbone's statistics."""
        batch, channels, time, height, width = video.shape
        frames = video.transpose(1, 2).reshape(batch * time, channels, height, width)
        if height != self.image_size or width != self.image_size:
            frames = F.interpolate(frames, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        return (frames - self.pixel_mean.to(frames.dtype)) / self.pixel_std.to(frames.dtype)

    def forward(self, video: torch.Tensor) -> Dict[str, torch.Tensor]:
        if video.dim() != 5 or video.shape[1] != 3:
            raise ValueError(f"ViT tower: expected video B×3×T×H×W, got shape {tuple(video.shape)}")
        if not video.is_floating_point():
            raise ValueError("ViT tower: expected float video in [0,1] (divide uint8 by 255 first)")
        batch, _, time = video.shape[:3]
        frames = self._normalised_frames(video)
        cls_token = None
        if self.model_type == "timesformer":
            if time != self.num_frames:
                raise ValueError(f"ViT tower: the TimeSformer backbone was built for {self.num_frames} frames, "
                                 f"got {time}")
            tokens = self.backbone(pixel_values=frames.view(batch, time, *frames.shape[1:])).last_hidden_state
            cls_token = tokens[:, 0]
            # TimeSformer orders the patch tokens patch-major, time-minor.
            frame_features = tokens[:, 1:].reshape(batch, -1, time, self.feature_dim).mean(dim=1)
        elif self.model_type == "vit":
            frame_features = self.backbone(pixel_values=frames).last_hidden_state[:, 0].view(batch, time, -1)
        else:
            frame_features = self.backbone(pixel_values=frames).pooler_output.view(batch, time, -1)

        if self.temporal_pooling == "cls":
            pooled = cls_token
        elif self.temporal is not None:
            pooled = self.temporal(frame_features)
        else:
            pooled = frame_features.mean(dim=1)
        return {"video_embedding": self.proj(pooled), "frame_features": frame_features, "pooled": pooled}
