"""Stop a run whose data is too broken to train on, naming the files to look at.

Training datasets replace a clip that fails to decode by another video's clip and report it in the batch:
`batch["failures"]` (per item: how many tries failed before one decoded) and `batch["failed"]` (per item: one line
per failed try, "<video path>: <reason>"). A few broken files in a million are expected and cost nothing; a large
fraction means a wrong video root, a broken mount or a wrong list, and training on the remainder silently changes
the data distribution. `FailureBudget` accumulates both, logs the running fraction as data/failure_fraction, and
raises `TooManyFailedDecodes` once failed tries / all tries exceed `max_fraction` (after `min_tries` tries, so one
unlucky first batch does not stop a run). Its counts are saved in checkpoints, so a resumed run keeps its budget.
Counts are per process (per rank under DDP): each rank stops on its own evidence.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Iterable, List, Tuple

import pytorch_lightning as pl
import torch


class TooManyFailedDecodes(RuntimeError):
    """More than the allowed fraction of decode tries failed; the message lists the files that failed most."""


def _lines(failed: Any) -> Iterable[str]:
    if isinstance(failed, str):
        failed = [failed]
    for block in failed or []:
        for line in str(block).splitlines():
            if line.strip():
                yield line


class FailureBudget(pl.Callback):
    def __init__(self, max_fraction: float = 0.05, min_tries: int = 50, show: int = 10):
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"data.max_failure_fraction must be in [0, 1], got {max_fraction}")
        self.max_fraction = float(max_fraction)
        self.min_tries = int(min_tries)
        self.show = int(show)
        self.samples = 0            # items delivered (each after zero or more failed tries)
        self.failures = 0           # failed tries
        self.by_file: Counter = Counter()
        self.reasons: Dict[str, str] = {}

    @property
    def tries(self) -> int:
        return self.samples + self.failures

    @property
    def fraction(self) -> float:
        return self.failures / self.tries if self.tries else 0.0

    def update(self, failures: Any, failed: Any) -> None:
        counts = torch.as_tensor(failures).reshape(-1)
        self.samples += int(counts.numel())
        self.failures += int(counts.sum())
        for line in _lines(failed):
            path, _, reason = line.partition(": ")
            self.by_file[path] += 1
            self.reasons[path] = reason

    def worst(self) -> List[Tuple[str, int, str]]:
        return [(p, n, self.reasons.get(p, "")) for p, n in self.by_file.most_common(self.show)]

    def check(self) -> None:
        if self.tries < self.min_tries or self.fraction <= self.max_fraction:
            return
        files = "\n".join(f"  {n}x {p}: {r}" for p, n, r in self.worst())
        raise TooManyFailedDecodes(
            f"{self.failures} of {self.tries} clip decodes failed ({self.fraction:.1%} > data.max_failure_fraction="
            f"{self.max_fraction:g}); {len(self.by_file)} distinct files failed, the most frequent:\n{files}\n"
            "Check data.root / data.video_root and the video list, or raise data.max_failure_fraction.")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not isinstance(batch, dict) or "failures" not in batch:
            return
        self.update(batch["failures"], batch.get("failed"))
        pl_module.log("data/failure_fraction", self.fraction, on_step=True, on_epoch=False, batch_size=1)
        self.check()

    def state_dict(self) -> Dict[str, Any]:
        return {"samples": self.samples, "failures": self.failures, "by_file": dict(self.by_file),
                "reasons": dict(self.reasons)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.samples = int(state.get("samples", 0))
        self.failures = int(state.get("failures", 0))
        self.by_file = Counter(state.get("by_file", {}))
        self.reasons = dict(state.get("reasons", {}))
