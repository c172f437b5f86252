"""Finite gradients before every optimizer step.

The loss is checked in the module (`losses.check_finite`: a non-finite loss stops naming the step and batch). A
finite loss can still give non-finite gradients (a NaN input masked out of the loss, an overflow in backward under
bf16). `FiniteGradients` looks at every gradient in `on_before_optimizer_step` — after backward (and the DDP
all-reduce, so every rank sees the same gradients and decides the same), before clipping and the optimizer — and:

- `trainer.nonfinite_grads=stop` (default): raises `NonFiniteGradients` naming the global step, the batch and the
  parameters with NaN/inf gradients. Nothing is written: the weights, the optimizer state and the last checkpoint
  stay those of the last good step.
- `trainer.nonfinite_grads=skip`: drops every gradient of that step (grad = None: the optimizer leaves each weight
  and its moments untouched), warns, counts it as `train/skipped_steps`, and stops like `stop` once more than
  `trainer.max_skipped_steps` steps were skipped. The count is saved in checkpoints, so a resumed run keeps it.

After every step `on_train_batch_end` checks the weights themselves (an update that overflowed them, a too-large
learning rate): non-finite weights raise `NonFiniteWeights` naming the step and the parameters, before
ModelCheckpoint (which Lightning runs after every other callback) could save them; the last checkpoint on disk is
the last good one.

Under `precision=16-mixed` the GradScaler owns inf/NaN gradients (it skips the step and lowers the loss scale; that
is its normal working), so the callback leaves them to it.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List

import pytorch_lightning as pl
import torch

log = logging.getLogger("milnce")

MODES = ("stop", "skip")


class NonFiniteGradients(FloatingPointError):
    """NaN or ±inf gradients reached the optimizer step (or too many steps were skipped for them)."""


class NonFiniteWeights(FloatingPointError):
    """An optimizer step left NaN or ±inf in the weights."""


def _nonfinite_names(named) -> List[str]:
    named = [(name, t) for name, t in named if t is not None]
    if not named:
        return []
    # Fast path, every step: one fused max-|x| per tensor (finite for any finite tensor, NaN/inf otherwise) and one
    # sync; per-tensor isfinite() masks cost ~10 % of a demo step on a CPU.
    peaks = torch._foreach_norm([t.detach() for _, t in named], float("inf"))
    finite = torch.isfinite(torch.stack(peaks))
    if bool(finite.all()):
        return []
    return [name for (name, _), ok in zip(named, finite.tolist()) if not ok]


class FiniteGradients(pl.Callback):
    def __init__(self, mode: str = "stop", max_skipped: int = 10, show: int = 5):
        if mode not in MODES:
            raise ValueError(f"trainer.nonfinite_grads must be one of {MODES}, got {mode!r}")
        if max_skipped < 0:
            raise ValueError(f"trainer.max_skipped_steps must be >= 0, got {max_skipped}")
        self.mode, self.max_skipped, self.show = mode, int(max_skipped), int(show)
        self.skipped = 0
        self.batch_idx = -1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batch_idx = batch_idx

    @staticmethod
    def _scaler_owns_infs(trainer) -> bool:
        return str(getattr(trainer, "precision", "")) in ("16-mixed", "16")  # 16-true has no GradScaler

    def bad_parameters(self, pl_module) -> List[str]:
        return _nonfinite_names((name, p.grad) for name, p in pl_module.named_parameters())

    def _names(self, bad: List[str]) -> str:
        return ", ".join(bad[:self.show]) + (f" and {len(bad) - self.show} more" if len(bad) > self.show else "")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bad = _nonfinite_names(pl_module.named_parameters())
        if bad:
            raise NonFiniteWeights(
                f"non-finite weights after the optimizer step of global step {trainer.global_step - 1}, batch "
                f"{batch_idx}, in {len(bad)} parameter(s): {self._names(bad)}; stopping before they are saved "
                "(lower the learning rate or check the precision; the last checkpoint is the last good one)")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._scaler_owns_infs(trainer):
            return
        bad = self.bad_parameters(pl_module)
        if not bad:
            return
        names = self._names(bad)
        where = f"global step {trainer.global_step}, batch {self.batch_idx}"
        if self.mode == "stop":
            raise NonFiniteGradients(
                f"non-finite gradients at {where} (the loss was finite) in {len(bad)} parameter(s): {names}; "
                "stopping before the optimizer writes non-finite weights (check the inputs of this batch, the "
                "precision and the learning rate; trainer.nonfinite_grads=skip skips such steps)")
        self.skipped += 1
        if self.skipped > self.max_skipped:
            raise NonFiniteGradients(
                f"non-finite gradients at {where} in {len(bad)} parameter(s): {names}; {self.skipped} steps "
                f"skipped for non-finite gradients > trainer.max_skipped_steps={self.max_skipped}: stopping")
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        log.warning("skipped the optimizer step at %s: non-finite gradients in %s (%d skipped, budget %d)", where,
                    names, self.skipped, self.max_skipped)
        pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False, batch_size=1)

    def state_dict(self) -> Dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.skipped = int(state.get("skipped", 0))
