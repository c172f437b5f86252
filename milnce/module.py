"""VideoTextModule: the training logic around a video tower and a text tower.

Architectures live in milnce/towers (plain nn.Modules built by the registry); losses in milnce/losses.py.
This module only wires them together: embed → gather across ranks → loss → optimiser and schedule.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, List, Optional, Sequence

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from milnce.config import ModelConfig, OptimConfig
from milnce.distributed import gather_batch
from milnce.grad_cache import grad_cache_step
from milnce.losses import build_loss, check_finite, negatives_per_positive
from milnce.schedule import SCHEDULES
from milnce.towers.registry import build_text_tower, build_tokenizer, build_video_tower
from datamodules.video.clip_spec import ClipSpec


def _as_dict(cfg: Any) -> Dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


class VideoTextModule(pl.LightningModule):
    """Joint video–text embedding trained with MIL-NCE, NCE or max-margin.

    model_cfg / optim_cfg: dicts (or DictConfigs) following milnce.config.ModelConfig / OptimConfig.
    vocab: the word vocabulary for the word2vec text tower (position i → token id i+1); stored in checkpoints.
    num_candidates: K narrations per clip in training batches.
    preprocess: how clips must be decoded for this model (fps, frames, size); stored in checkpoints so
    `milnce.api.encode_video` on a loaded model needs no guessing.
    """

    def __init__(self, model_cfg: Any = None, optim_cfg: Any = None, vocab: Optional[Sequence[str]] = None,
                 num_candidates: int = 1, preprocess: Optional[Dict[str, Any]] = None):
        super().__init__()
        model = OmegaConf.merge(OmegaConf.structured(ModelConfig), model_cfg or {})
        optim = OmegaConf.merge(OmegaConf.structured(OptimConfig), optim_cfg or {})
        self.save_hyperparameters({"model_cfg": _as_dict(model), "optim_cfg": _as_dict(optim),
                                   "vocab": list(vocab) if vocab is not None else None,
                                   "num_candidates": int(num_candidates),
                                   "preprocess": dict(preprocess or {})})
        self.model_cfg = model
        self.optim_cfg = optim
        self.vocab = list(vocab) if vocab is not None else None
        self.num_candidates = int(num_candidates)
        self.preprocess = dict(preprocess or {})


        self.video_tower = build_video_tower(model)
        self.text_tower = build_text_tower(model, vocab=self.vocab)
        self.tokenizer = build_tokenizer(model, vocab=self.vocab)
        self.loss_fn = build_loss(model.loss, model.loss_args, self.num_candidates)
        if model.grad_cache_chunk > 0:
            self.automatic_optimization = False
        if model.freeze_text_tower:
            self.text_tower.requires_grad_(False)

    def on_fit_start(self) -> None:
        # Lightning keeps the mode the module is in when fitting starts (it never calls .train()); this applies
        # model.freeze_video_bn / freeze_text_tower, which `train` enforces.
        self.train()

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.model_cfg.freeze_video_bn:
            for m in self.video_tower.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        if mode and self.model_cfg.freeze_text_tower:
            self.text_tower.eval()
        return self

    # ----------------------------------------------------------------- embeddings
    def embed_video(self, video: torch.Tensor) -> torch.Tensor:
        """B×3×T×H×W uint8 (0..255) or float in [0,1] → B×D."""
        if video.dtype == torch.uint8:
            video = video.float().div_(255.0)
        return self.video_tower(video)["video_embedding"]

    def embed_text(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.text_tower(input_ids, attention_mask=attention_mask)

    @torch.no_grad()
    def encode_text(self, texts: List[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts))
        ids = tokens["input_ids"].to(self.device)
        mask = tokens.get("attention_mask")
        return self.embed_text(ids, None if mask is None else mask.to(self.device))

    @property
    def clip_spec(self) -> ClipSpec:
        """The clip this model was trained on (from `preprocess`, as stored in its checkpoint)."""
        return ClipSpec.from_dict(self.preprocess)

    # ----------------------------------------------------------------- training
    @staticmethod
    def flatten_batch(batch: Dict[str, Any]):
        """Clips of a batch as rows: video (B·C)×3×T×H×W, text ids (B·C·K)×L (+mask), video ids and valid (B·C).

        A batch holds C clips per dataset item (several clips per video for max-margin, else C=1).
        """
        video = batch["video"]
        # clips (…×3×T×H×W) keep their 4 trailing dims; pre-extracted features (…×F) their last one
        video = video.reshape(-1, *video.shape[-4:]) if video.dim() >= 5 else video.reshape(-1, video.shape[-1])
        ids = batch["text"]
        ids = ids.reshape(-1, ids.shape[-1])
        mask = batch.get("text_mask")
        if mask is not None:
            mask = mask.reshape(-1, mask.shape[-1])
        video_ids = batch["video_index"].reshape(-1)
        valid = batch.get("valid")
        valid = torch.ones_like(video_ids, dtype=torch.bool) if valid is None else valid.reshape(-1)
        return video, ids, mask, video_ids, valid

    def _loss_on_embeddings(self, video_emb, text_emb, video_ids, valid):
        if self.model_cfg.gather_negatives and self.trainer is not None and self.trainer.world_size > 1:
            video_emb, text_emb, video_ids, valid = gather_batch(video_emb, text_emb, video_ids, valid,
                                                                 self.model_cfg.gather_gradient)
        loss = self.loss_fn(video_emb, text_emb, video_ids=video_ids, valid=valid)
        return loss, video_emb.shape[0]

    def training_step(self, batch: Dict[str, Any], batch_idx: int):
        video, ids, mask, video_ids, valid = self.flatten_batch(batch)
        if self.automatic_optimization:
            video_emb = self.embed_video(video)
            text_emb = self.embed_text(ids, mask)
            loss, global_b = self._loss_on_embeddings(video_emb, text_emb, video_ids, valid)
            check_finite(loss, self.global_step, batch_idx)
        else:
            loss, global_b = self._grad_cache_step(video, ids, mask, video_ids, valid, batch_idx)
        n = video_ids.shape[0]
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=n)
        counts = negatives_per_positive(self.model_cfg.loss, global_b, self.num_candidates,
                                        symmetric=bool(self.model_cfg.loss_args.symmetric))
        self.log("train/negatives", counts["negatives"], on_step=True, on_epoch=False, batch_size=n)
        if "failures" in batch:
            self.log("data/failed_decodes", batch["failures"].float().sum(), on_step=True, on_epoch=False,
                     reduce_fx="sum", batch_size=n)
        return loss if self.automatic_optimization else None

    def _grad_cache_step(self, video, ids, mask, video_ids, valid, batch_idx):
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        holder = {}

        def loss_fn(video_emb, text_emb):
            loss, holder["b"] = self._loss_on_embeddings(video_emb, text_emb, video_ids, valid)
            check_finite(loss, self.global_step, batch_idx)
            return loss

        loss = grad_cache_step(self.embed_video, lambda i, m: self.embed_text(i, m), video, (ids, mask),
                               loss_fn, self.model_cfg.grad_cache_chunk, self.num_candidates,
                               backward=self.manual_backward,
                               no_sync=getattr(self.trainer.strategy, "block_backward_sync", contextlib.nullcontext))
        clip = getattr(self, "manual_clip_val", None)  # Trainer's gradient_clip_val is not allowed with manual optim.
        if clip:
            self.clip_gradients(opt, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        opt.step()
        sched = self.lr_schedulers()
        if sched is not None:
            sched.step()
        return loss, holder.get("b", ids.shape[0] // max(1, self.num_candidates))

    # ----------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1
        opt, sched = self.optimizer_and_schedule(total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def optimizer_and_schedule(self, total_steps: int):
        """The optimizer over the towers (and a learnable temperature) and its per-step LambdaLR schedule."""
        o = self.optim_cfg
        groups = [
            {"params": [p for p in self.video_tower.parameters() if p.requires_grad], "lr": o.lr * o.video_lr_mult},
            {"params": [p for p in self.text_tower.parameters() if p.requires_grad], "lr": o.lr * o.text_lr_mult},
            {"params": [p for p in self.loss_fn.parameters() if p.requires_grad], "lr": o.lr},
        ]
        groups = [g for g in groups if g["params"]]
        if o.name == "adam":
            opt = torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
        elif o.name == "adamw":
            opt = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
        elif o.name == "sgd":
            opt = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        else:
            raise ValueError(f"optim.name: unknown optimizer '{o.name}' (valid: adam, adamw, sgd)")
        if o.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule: unknown schedule '{o.schedule}' (valid: {', '.join(SCHEDULES)})")
        schedule = SCHEDULES[o.schedule]
        warmup, total = int(o.warmup_steps), max(1, int(total_steps))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: schedule(step, warmup, total))
        return opt, sched

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["milnce"] = {
            "vocab": self.vocab,
            "model": _as_dict(self.model_cfg),
            "num_candidates": self.num_candidates,
            "preprocess": self.preprocess,
        }
