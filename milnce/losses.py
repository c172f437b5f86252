"""Contrastive and ranking losses on embeddings: MIL-NCE, NCE, HowTo100M max-margin.

Pure functions returning a scalar tensor, thin nn.Module wrappers (which own a learnable temperature where
configured) and `build_loss` from milnce.config.LossConfig. Defaults reproduce the original code
(shared/reference/PROTOCOLS.md Part A §4): raw dot products, no temperature, no normalisation, MIL-NCE with the
positives also in the denominator (floor log 2). Gathering across ranks happens before these functions
(milnce.distributed); they see the global batch.

Every loss takes `valid` (bool, one per video/row): invalid samples — clips that failed to decode — are dropped
from positives and negatives, exactly as if the batch held only the valid ones. If nothing is valid the loss is a
graph-connected zero, so every rank still runs the same backward.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

Temperature = Union[None, float, torch.Tensor]
MIL_NCE_FORMULATIONS = ("original", "paper")
LOSSES = ("mil_nce", "nce", "max_margin")


# ----------------------------------------------------------------------------------------------------- helpers
def _check_rows(video: torch.Tensor, text: torch.Tensor, rows_per_video: int, loss: str) -> None:
    if video.dim() != 2 or text.dim() != 2:
        raise ValueError(f"{loss}: video and text embeddings must be 2-D, got {tuple(video.shape)} and "
                         f"{tuple(text.shape)}")
    if video.shape[1] != text.shape[1]:
        raise ValueError(f"{loss}: embedding sizes differ: video {video.shape[1]}, text {text.shape[1]}")
    if text.shape[0] != video.shape[0] * rows_per_video:
        raise ValueError(f"{loss}: text has {text.shape[0]} rows, expected videos × candidates = "
                         f"{video.shape[0]} × {rows_per_video} (text rows must be video-major)")


def _select_valid(valid: Optional[torch.Tensor], video: torch.Tensor, text: torch.Tensor, rows_per_video: int,
                  loss: str):
    """Keep the valid videos and their text rows. Returns (video, text, kept_index or None)."""
    if valid is None:
        return video, text, None
    valid = torch.as_tensor(valid, device=video.device)
    if valid.dtype != torch.bool or valid.shape != (video.shape[0],):
        raise ValueError(f"{loss}: valid must be a bool tensor with one entry per video ({video.shape[0]}), "
                         f"got dtype {valid.dtype} shape {tuple(valid.shape)}")
    if bool(valid.all()):
        return video, text, None
    keep = valid.nonzero().squeeze(1)
    text_keep = (keep[:, None] * rows_per_video + torch.arange(rows_per_video, device=keep.device)).reshape(-1)
    return video.index_select(0, keep), text.index_select(0, text_keep), keep


def _empty_loss(video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    # Zero that stays connected to the graph (and stays finite even if dropped rows hold NaN).
    return video[:0].sum() + text[:0].sum()


def _similarity(a: torch.Tensor, b: torch.Tensor, temperature: Temperature, normalize: bool) -> torch.Tensor:
    """a @ b.T, optionally after L2 normalisation, divided by the temperature when one is given."""
    if normalize:
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    x = a @ b.t()
    if temperature is not None:
        x = x / temperature
    return x


# ----------------------------------------------------------------------------------------------------- losses
def mil_nce(video: torch.Tensor, text: torch.Tensor, num_candidates: int, *, formulation: str = "original",
            temperature: Temperature = None, normalize: bool = False,
            valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MIL-NCE. video B×D; text (B·K)×D with the K candidate narrations of video j in rows j·K … j·K+K−1.

    With x[i,j,k] = <v_i, t_jk> (/ temperature), P_i = Σ_k e^x[i,i,k], and
    N_i = Σ_{j≠i,k} (e^x[i,j,k] + e^x[j,i,k]) (negatives in both directions):

    * "original" (MIL-NCE code, default): mean_i −log(P_i / (2·P_i + N_i)) — the denominator is the logsumexp
      over video i against every text plus every video against i's texts, so the positives count twice and the
      minimum is log 2.
    * "paper": mean_i −log(P_i / (P_i + N_i)), minimum 0.
    """
    k = int(num_candidates)
    if k < 1:
        raise ValueError(f"mil_nce: num_candidates must be >= 1, got {num_candidates}")
    if formulation not in MIL_NCE_FORMULATIONS:
        raise ValueError(f"mil_nce: formulation '{formulation}' is not one of {', '.join(MIL_NCE_FORMULATIONS)}")
    _check_rows(video, text, k, "mil_nce")
    video, text, _ = _select_valid(valid, video, text, k, "mil_nce")
    b = video.shape[0]
    if b == 0:
        return _empty_loss(video, text)
    x = _similarity(video, text, temperature, normalize).view(b, b, k)
    idx = torch.arange(b, device=x.device)
    positive = torch.logsumexp(x[idx, idx], dim=1)                  # log P_i
    video_to_texts = torch.logsumexp(x, dim=(1, 2))                 # v_i against every text (positives included)
    if formulation == "paper":
        x = x.masked_fill(torch.eye(b, dtype=torch.bool, device=x.device)[:, :, None], float("-inf"))
    videos_to_text = torch.logsumexp(x, dim=(0, 2))                 # every video against t_i· (paper: j ≠ i)
    denominator = torch.logaddexp(video_to_texts, videos_to_text)
    return (denominator - positive).mean()


def nce(video: torch.Tensor, text: torch.Tensor, *, symmetric: bool = False, formulation: str = "original",
        temperature: Temperature = None, normalize: bool = False,
        valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Single-positive NCE. video B×D, text B×D (pair i = row i).

    symmetric=False: the K=1 case of `mil_nce` (the "NCE" baseline of the MIL-NCE paper: one joint denominator
    over both directions, `formulation` as there). symmetric=True: CLIP-style InfoNCE, the mean of the
    video→text and text→video cross-entropies, each with its own softmax.
    """
    if not symmetric:
        return mil_nce(video, text, 1, formulation=formulation, temperature=temperature, normalize=normalize,
                       valid=valid)
    _check_rows(video, text, 1, "nce")
    video, text, _ = _select_valid(valid, video, text, 1, "nce")
    b = video.shape[0]
    if b == 0:
        return _empty_loss(video, text)
    x = _similarity(video, text, temperature, normalize)
    target = torch.arange(b, device=x.device)
    return 0.5 * (F.cross_entropy(x, target) + F.cross_entropy(x.t(), target))


def _video_id_codes(video_ids: Any, n: int, device: torch.device) -> torch.Tensor:
    if isinstance(video_ids, torch.Tensor):
        codes = video_ids.to(device)
    else:
        lookup: Dict[Any, int] = {}
        codes = torch.tensor([lookup.setdefault(v, len(lookup)) for v in video_ids], dtype=torch.long,
                             device=device)
    if codes.shape != (n,):
        raise ValueError(f"max_margin: video_ids must have one entry per row ({n}), got shape "
                         f"{tuple(codes.shape)}")
    return codes


def same_video_weights(video_ids: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """HowTo100M's intra/inter-video negative weights, from per-row video ids (any batch layout).

    For row i with s_i rows of its own video (itself included) and o_i = N − s_i rows of other videos, entry
    (i, j) gets N/(2·s_i) if j is of i's video and N/(2·o_i) otherwise, so the same-video entries and the
    other-video entries of each row carry the same total weight N/2 (the 50/50 of the paper, hard_negative_rate
    0.5). Rows with no same-video negative (s_i = 1) or no other video (o_i = 0) keep weight 1 everywhere. For
    B videos × n clips video-major this is exactly the original mask ((1−α)I_B + α·1) ⊗ 1_{n×n} · B/2 with
    α = 1/(B−1); with all ids distinct it is all ones (the plain loss, as the original with n_pair = 1).
    """
    n = video_ids.shape[0]
    same = video_ids[:, None] == video_ids[None, :]
    s = same.sum(1, keepdim=True).to(torch.float64)
    o = n - s
    weighted = (s > 1) & (o > 0)
    same_weight = torch.where(weighted, n / (2 * s), torch.ones_like(s)).to(dtype)
    other_weight = torch.where(weighted, n / (2 * o.clamp(min=1)), torch.ones_like(o)).to(dtype)
    return torch.where(same, same_weight, other_weight)


def max_margin(video: torch.Tensor, text: torch.Tensor, margin: float = 0.1, video_ids: Any = None, *,
               negative_weighting: bool = True, normalize: bool = False,
               valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """HowTo100M bidirectional max-margin ranking loss. video N×D, text N×D, pair i = row i.

    x = text @ video.T; entry (i, j) costs relu(m + x_ij − x_ii) (text i against video j) + relu(m + x_ij − x_jj)
    (video j against text i); the diagonal is included (a constant 2m) and the reduction is the mean over all N²
    entries, as the original. With `video_ids` (one per row) and negative_weighting, same-video negatives are
    weighted by `same_video_weights` — the first term by the row's video, the second by the column's (identical
    to the original mask for its fixed layout). The original network L2-normalises both embeddings inside the
    model; our towers do not, so pass normalize=True for cosine similarities as HowTo100M.
    """
    _check_rows(video, text, 1, "max_margin")
    n_all = video.shape[0]
    codes = None if video_ids is None else _video_id_codes(video_ids, n_all, video.device)
    video, text, keep = _select_valid(valid, video, text, 1, "max_margin")
    if codes is not None and keep is not None:
        codes = codes.index_select(0, keep)
    n = video.shape[0]
    if n == 0:
        return _empty_loss(video, text)
    x = _similarity(text, video, None, normalize)
    diagonal = x.diagonal()
    text_anchor = F.relu(margin + x - diagonal[:, None])
    video_anchor = F.relu(margin + x - diagonal[None, :])
    if not negative_weighting or codes is None:
        return (text_anchor + video_anchor).mean()
    w = same_video_weights(codes, x.dtype)
    return (w * text_anchor + w.t() * video_anchor).mean()


# ----------------------------------------------------------------------------------------------------- checks
def check_finite(loss: torch.Tensor, step: int, batch_idx: int) -> None:
    """Raise FloatingPointError naming the step and batch when the loss is NaN or ±inf.

    Call it before backward/optimizer.step so non-finite values never reach the weights. Under DDP the loss is
    computed on the gathered global batch, so every rank sees the same value and raises together.
    """
    if not bool(torch.isfinite(loss.detach()).all()):
        raise FloatingPointError(f"non-finite training loss {loss.detach().flatten()[:4].tolist()} at global step "
                                 f"{step}, batch {batch_idx}; stopping before the optimizer writes non-finite "
                                 "weights (check the inputs of this batch, the learning rate and the temperature)")


def negatives_per_positive(loss: str, num_videos: int, num_candidates: int = 1, *, symmetric: bool = False,
                           video_ids: Any = None) -> Dict[str, float]:
    """How many negatives one positive pair is contrasted with in a step, for logging.

    num_videos is the global (gathered, valid) batch. mil_nce: 2·(B−1)·K (video i against the other videos'
    texts and the other videos against i's texts); nce: 2·(B−1) in the joint denominator, B−1 per direction when
    symmetric; max_margin: 2·(N−1) hinge terms per pair, of which `same_video` come from the row's own video
    (mean over rows when video_ids are given).
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss '{loss}'; expected one of {', '.join(LOSSES)}")
    b = int(num_videos)
    out: Dict[str, float] = {"global_videos": float(b), "global_texts": float(b * num_candidates)}
    if loss == "mil_nce":
        out["negatives"] = float(2 * max(b - 1, 0) * num_candidates)
    elif loss == "nce":
        out["negatives"] = float(max(b - 1, 0) * (1 if symmetric else 2))
    else:
        out["negatives"] = float(2 * max(b - 1, 0))
        if video_ids is not None:
            codes = _video_id_codes(video_ids, b, torch.device("cpu"))
            same = (codes[:, None] == codes[None, :]).sum(1).double() - 1
            out["same_video_negatives"] = float(2 * same.mean()) if b else 0.0
    return out


# ----------------------------------------------------------------------------------------------------- modules
class LearnableTemperature(nn.Module):
    """τ = exp(log_temperature), clamped at 0.01 from below (CLIP's logit-scale cap of 100)."""

    MIN = 0.01

    def __init__(self, initial: float = 0.07):
        super().__init__()
        if initial <= 0:
            raise ValueError(f"temperature must be > 0, got {initial}")
        self.log_temperature = nn.Parameter(torch.tensor(math.log(initial)))

    def forward(self) -> torch.Tensor:
        return self.log_temperature.exp().clamp(min=self.MIN)


class _TemperatureMixin(nn.Module):
    def _init_temperature(self, temperature: Optional[float], learnable: bool) -> None:
        if temperature is not None and temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.learnable = LearnableTemperature(temperature if temperature is not None else 0.07) \
            if learnable else None
        self.fixed_temperature = temperature

    def temperature(self) -> Temperature:
        return self.learnable() if self.learnable is not None else self.fixed_temperature


class MILNCELoss(_TemperatureMixin):
    def __init__(self, num_candidates: int, formulation: str = "original", temperature: Optional[float] = None,
                 learnable_temperature: bool = False, normalize: bool = False):
        super().__init__()
        if formulation not in MIL_NCE_FORMULATIONS:
            raise ValueError(f"mil_nce formulation '{formulation}' is not one of {', '.join(MIL_NCE_FORMULATIONS)}")
        self.num_candidates, self.formulation, self.normalize = int(num_candidates), formulation, normalize
        self._init_temperature(temperature, learnable_temperature)

    def forward(self, video, text, video_ids=None, valid=None):
        return mil_nce(video, text, self.num_candidates, formulation=self.formulation,
                       temperature=self.temperature(), normalize=self.normalize, valid=valid)


class NCELoss(_TemperatureMixin):
    def __init__(self, symmetric: bool = False, formulation: str = "original", temperature: Optional[float] = None,
                 learnable_temperature: bool = False, normalize: bool = False):
        super().__init__()
        if formulation not in MIL_NCE_FORMULATIONS:
            raise ValueError(f"nce formulation '{formulation}' is not one of {', '.join(MIL_NCE_FORMULATIONS)}")
        self.symmetric, self.formulation, self.normalize = symmetric, formulation, normalize
        self._init_temperature(temperature, learnable_temperature)

    def forward(self, video, text, video_ids=None, valid=None):
        return nce(video, text, symmetric=self.symmetric, formulation=self.formulation,
                   temperature=self.temperature(), normalize=self.normalize, valid=valid)


class MaxMarginLoss(nn.Module):
    def __init__(self, margin: float = 0.1, negative_weighting: bool = True, normalize: bool = False):
        super().__init__()
        self.margin, self.negative_weighting, self.normalize = float(margin), negative_weighting, normalize

    def forward(self, video, text, video_ids=None, valid=None):
        return max_margin(video, text, self.margin, video_ids, negative_weighting=self.negative_weighting,
                          normalize=self.normalize, valid=valid)


def build_loss(name: str, args: Any, num_candidates: int = 1) -> nn.Module:
    """The loss module for model.loss=`name` with model.loss_args=`args` (a milnce.config.LossConfig or alike)."""
    if name not in LOSSES:
        raise ValueError(f"model.loss: unknown loss '{name}'; expected one of {', '.join(LOSSES)}")
    get = (lambda key, default: getattr(args, key, default)) if args is not None else (lambda key, default: default)
    temperature, learnable = get("temperature", None), bool(get("learnable_temperature", False))
    if name == "mil_nce":
        return MILNCELoss(num_candidates, get("formulation", "original"), temperature, learnable,
                          bool(get("normalize", False)))
    if int(num_candidates) != 1:
        raise ValueError(f"model.loss={name} pairs one text with each clip; set data.num_candidates=1 "
                         f"(got {num_candidates}) or use model.loss=mil_nce")
    if name == "nce":
        return NCELoss(bool(get("symmetric", False)), get("formulation", "original"), temperature, learnable,
                       bool(get("normalize", False)))
    if temperature is not None or learnable:
        raise ValueError("model.loss_args.temperature / learnable_temperature have no meaning for max_margin "
                         "(a margin on similarities); unset them")
    return MaxMarginLoss(float(get("margin", 0.1)), bool(get("negative_weighting", True)),
                         bool(get("normalize", False)))


__all__ = ["mil_nce", "nce", "max_margin", "same_video_weights", "check_finite", "negatives_per_positive",
           "LearnableTemperature", "MILNCELoss", "NCELoss", "MaxMarginLoss", "build_loss"]
