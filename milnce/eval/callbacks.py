"""Lightning callbacks that run the evaluators during and at the end of training.

Each runs every `every_n_steps` optimizer steps, every `every_n_epochs` epochs (0 = never) and/or at the given
`at_fractions` of trainer.max_steps (time-to-accuracy: 0.25, 0.5, 0.75), on an optional fixed
subset (`subset` items / videos, spread evenly, decoded windows cached in RAM for retrieval when the evaluator has a
cache budget), and on the full set when training ends (`at_fit_end`). They must run on every rank under DDP (the
evaluators shard and gather). Metrics go to every Trainer logger (rank zero only) with flat keys
`<prefix>/R10`, `chance/<prefix>/R1`, … (subset runs: `<prefix>_subset/…`), and into trainer.callback_metrics so a
ModelCheckpoint can monitor them. The latest flat metrics and protocol card stay on the callback (`last_metrics`,
`last_card`) for metrics.json; `history` keeps (step, metrics) of every run. Each evaluation also logs
`time/train_seconds`, the training wall time it took to get there (evaluation excluded; milnce.train.throughput).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info

from milnce.training_clock import training_clock

log = logging.getLogger(__name__)


def flatten_metrics(prefix: str, metrics: Dict[str, float]) -> Dict[str, float]:
    """{"R10": …, "chance/R10": …} → {"<prefix>/R10": …, "chance/<prefix>/R10": …} (the metrics.json keys)."""
    out = {}
    for k, v in metrics.items():
        key = f"chance/{prefix}/{k[len('chance/'):]}" if k.startswith("chance/") else f"{prefix}/{k}"
        out[key] = float(v)
    return out


class _Evaluation(pl.Callback):
    headline: Tuple[str, ...] = ()

    def __init__(self, evaluator, prefix: str, every_n_steps: int = 0, every_n_epochs: int = 0, subset: int = 0,
                 at_fit_end: bool = True, at_fractions: Sequence[float] = ()):
        super().__init__()
        if every_n_steps < 0 or every_n_epochs < 0 or subset < 0:
            raise ValueError("every_n_steps, every_n_epochs and subset must be ≥ 0")
        if any(not 0 < f < 1 for f in at_fractions):
            raise ValueError(f"at_fractions must lie strictly between 0 and 1, got {list(at_fractions)}")
        self.at_fractions = tuple(float(f) for f in at_fractions)
        self._fraction_steps: set = set()
        self.evaluator, self.prefix = evaluator, prefix
        self.every_n_steps, self.every_n_epochs, self.subset = every_n_steps, every_n_epochs, subset
        self.at_fit_end = at_fit_end
        self.last_metrics: Dict[str, float] = {}
        self.last_card: Dict[str, Any] = {}
        self.last_result: Any = None
        self.history: List[Tuple[int, Dict[str, float]]] = []
        self._last_step = -1
        self._last_full_step = -1
        self._subset_indices: Optional[List[int]] = None

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer, pl_module) -> None:
        if self.at_fractions and trainer.max_steps and trainer.max_steps > 0:
            self._fraction_steps = {max(1, round(f * trainer.max_steps)) for f in self.at_fractions}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        periodic = self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0
        if (periodic or step in self._fraction_steps) and step != self._last_step:
            self.run(trainer, pl_module, full=False)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0 \
                and trainer.global_step != self._last_step:
            self.run(trainer, pl_module, full=False)

    def on_train_end(self, trainer, pl_module) -> None:
        # an epoch-end run on the full set at this very step already is the final evaluation
        if self.at_fit_end and self._last_full_step != trainer.global_step:
            self.run(trainer, pl_module, full=True)

    # ------------------------------------------------------------------ running
    def _evaluate(self, pl_module, indices: Optional[List[int]], full: bool):
        return self.evaluator.evaluate(pl_module, indices)

    def _flatten(self, metrics: Dict[str, float], full: bool) -> Dict[str, float]:
        return flatten_metrics(self.prefix if full or self.subset <= 0 else f"{self.prefix}_subset", metrics)

    def run(self, trainer, pl_module, full: bool = True) -> Dict[str, float]:
        """Evaluate now (full set, or the subset when `full` is False and subset > 0) and log."""
        indices = None
        if not full and self.subset > 0:
            if self._subset_indices is None:
                self._subset_indices = self.evaluator.subset_indices(self.subset)
            indices = self._subset_indices
        clock = training_clock(trainer)
        seconds = clock.seconds() if clock is not None else None
        with clock.paused() if clock is not None else contextlib.nullcontext():
            result = self._evaluate(pl_module, indices, full)
        step = int(trainer.global_step)
        self._last_step = step
        if indices is None:
            self._last_full_step = step
        flat = self._flatten(result.metrics, full or self.subset <= 0)
        self.last_metrics, self.last_card, self.last_result = flat, result.card, result
        self.history.append((step, flat))
        logged = flat if seconds is None else {**flat, "time/train_seconds": round(seconds, 2)}
        for logger in trainer.loggers:              # Logger.log_metrics is rank-zero-only
            logger.log_metrics(logged, step=step)
            logger.save()
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in flat.items()})
        shown = "  ".join(f"{k.split('/', 1)[1]} {flat[k]:.2f}" for k in flat
                          if k.split("/", 1)[1] in self.headline and not k.startswith("chance/"))
        card = result.card
        rank_zero_info(f"[eval] step {step} {self.prefix}{'' if indices is None else ' (subset)'}: {shown}  "
                       f"({card.get('n_evaluated')} evaluated of {card.get('n_listed')} listed)")
        return flat


class RetrievalEvaluation(_Evaluation):
    """Runs a milnce.eval.retrieval_eval.RetrievalEvaluator (YouCook2, MSR-VTT); prefix defaults to the dataset name."""

    headline = ("R1", "R5", "R10", "MedR")

    def __init__(self, evaluator, every_n_steps: int = 0, subset: int = 0, prefix: Optional[str] = None,
                 every_n_epochs: int = 0, at_fit_end: bool = True, at_fractions: Sequence[float] = ()):
        super().__init__(evaluator, prefix or evaluator.dataset.name, every_n_steps, every_n_epochs, subset,
                         at_fit_end, at_fractions)

    def _evaluate(self, pl_module, indices, full):
        return self.evaluator.evaluate(pl_module, indices, use_cache=not full)


class StepLocalization(_Evaluation):
    """Runs a milnce.eval.localization_eval.StepLocalizationEvaluator (CrossTask)."""

    headline = ("recall", "recall_per_video")

    def __init__(self, evaluator, every_n_steps: int = 0, subset: int = 0, prefix: str = "crosstask",
                 every_n_epochs: int = 0, at_fit_end: bool = True, at_fractions: Sequence[float] = ()):
        super().__init__(evaluator, prefix, every_n_steps, every_n_epochs, subset, at_fit_end, at_fractions)


class AlignmentEvaluation(_Evaluation):
    """Runs a milnce.eval.alignment_eval.AlignmentEvaluator (HTM-Align-style narration alignment)."""

    headline = ("R1_global", "R1_window", "AUC")

    def __init__(self, evaluator, every_n_steps: int = 0, subset: int = 0, prefix: Optional[str] = None,
                 every_n_epochs: int = 0, at_fit_end: bool = True, at_fractions: Sequence[float] = ()):
        super().__init__(evaluator, prefix or evaluator.name, every_n_steps, every_n_epochs, subset, at_fit_end,
                         at_fractions)
