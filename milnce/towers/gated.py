"""HowTo100M's gated embedding unit (Miech et al., ICCV'19, `Net` in howto100m/model.py; PROTOCOLS.md Part A §4.3).

Video path of the feature-based model: Linear(input_dim → d), Context Gating x·σ(Wx + b) (the original writes it as
`glu(cat(x, fc(x)))`, the same function), then L2 normalisation, so scores between towers are cosine similarities.
The input is a B×F float vector of pre-extracted, pooled clip features (2D ‖ 3D, 4096-d in the original), not a
B×3×T×H×W clip.

Text counterpart, registered as text tower "word2vec_gated": our MIL-NCE word tower (embedding, fc1, ReLU, max
over words, fc2) followed by the same Context Gating and L2 normalisation — the HowTo100M text path. It is found
by the registry once this module is imported (building the "gated" video tower imports it).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from milnce.towers.registry import (_word2vec, _word_tokenizer, register_text_tower, register_tokenizer,
                                    register_video_tower)


class ContextGating(nn.Module):
    """x · σ(fc(x)): a learned per-dimension gate computed from the vector itself."""

    def __init__(self, dim: int):
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc(x))


class GatedEmbeddingUnit(nn.Module):
    """Linear → Context Gating → L2 norm: B×input_dim float → {"video_embedding": B×embed_dim}, unit rows."""

    def __init__(self, input_dim: int = 4096, embed_dim: int = 512):
        super().__init__()
        self.input_dim, self.embed_dim = int(input_dim), int(embed_dim)
        self.fc = nn.Linear(self.input_dim, self.embed_dim)
        self.cg = ContextGating(self.embed_dim)

    def forward(self, features: torch.Tensor) -> dict:
        if features.dim() != 2 or features.shape[1] != self.input_dim:
            raise ValueError(f"GatedEmbeddingUnit expects B×{self.input_dim} float features (model.gated.input_dim),"
                             f" got shape {tuple(features.shape)}; raw clips B×3×T×H×W need a clip tower (s3d)")
        if not features.is_floating_point():
            raise ValueError(f"GatedEmbeddingUnit expects float features, got {features.dtype}")
        return {"video_embedding": F.normalize(self.cg(self.fc(features)), dim=-1)}


class GatedSentenceEmbedding(nn.Module):
    """A word tower (fc1-ReLU-max-fc2) followed by Context Gating and L2 normalisation (HowTo100M text path)."""

    def __init__(self, words: nn.Module, embed_dim: int):
        super().__init__()
        self.words = words
        self.cg = ContextGating(int(embed_dim))

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return F.normalize(self.cg(self.words(input_ids, attention_mask)), dim=-1)


@register_video_tower("gated")
def _gated(cfg: DictConfig) -> nn.Module:
    return GatedEmbeddingUnit(input_dim=cfg.gated.input_dim, embed_dim=cfg.embed_dim)


@register_text_tower("word2vec_gated")
def _word2vec_gated(cfg: DictConfig, vocab: Optional[Sequence[str]], embedding_weights: Optional[torch.Tensor]):
    return GatedSentenceEmbedding(_word2vec(cfg, vocab, embedding_weights), cfg.embed_dim)


@register_tokenizer("word2vec_gated")
def _word2vec_gated_tokenizer(cfg: DictConfig, vocab: Optional[Sequence[str]]):
    return _word_tokenizer(cfg, vocab)
