"""TrainingClock: the seconds a run has spent training, evaluation excluded (what time-to-accuracy is plotted against).

In the core because both wings use it: the run (milnce.train.run) installs it, the evaluation callbacks pause it.
"""
from __future__ import annotations

import contextlib
import time
from typing import Optional

import pytorch_lightning as pl


class TrainingClock(pl.Callback):
    """Wall seconds spent training so far, evaluation excluded: what time-to-accuracy is plotted against.

    Evaluation callbacks run inside `clock.paused()`. The count survives a resume (it is saved in checkpoints),
    so a resumed run's seconds continue where the interrupted run's stopped.
    """

    def __init__(self):
        self._offset = 0.0
        self._start: Optional[float] = None
        self._paused = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self._start, self._paused = time.perf_counter(), 0.0

    def seconds(self) -> float:
        if self._start is None:
            return self._offset
        return self._offset + time.perf_counter() - self._start - self._paused

    @contextlib.contextmanager
    def paused(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._paused += time.perf_counter() - t0

    def state_dict(self):
        return {"seconds": self.seconds()}

    def load_state_dict(self, state) -> None:
        self._offset = float(state.get("seconds", 0.0))


def training_clock(trainer) -> Optional[TrainingClock]:
    return next((c for c in getattr(trainer, "callbacks", []) if isinstance(c, TrainingClock)), None)
