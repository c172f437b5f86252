"""How fast training runs and how much of it waits for data, logged as metrics.

`data/wait_fraction` is the share of wall time between the end of one training step and the start of the next
(the DataLoader fetch, plus Lightning's own bookkeeping) over the whole step period. Near 0 the run is
compute-bound; near 1 the loader is the bottleneck (add workers, pack the videos, or cache a small corpus).
"""
from __future__ import annotations

import contextlib
import time
from typing import Optional

import pytorch_lightning as pl


class ThroughputMonitor(pl.Callback):
    def __init__(self, window: int = 20):
        self.window = int(window)
        self._batch_end: Optional[float] = None
        self._batch_start: Optional[float] = None
        self._wait = 0.0
        self._busy = 0.0
        self._clips = 0
        self._steps = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._batch_end = None  # the epoch boundary (loader start-up) is not a per-step wait

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._batch_end is not None:
            self._wait += now - self._batch_end
        self._batch_start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._batch_start is None:
            return
        self._busy += now - self._batch_start
        self._batch_end = now
        video = batch.get("video") if isinstance(batch, dict) else None
        if video is not None:
            self._clips += int(video.reshape(-1, *video.shape[-4:]).shape[0]) if video.dim() >= 5 else len(video)
        self._steps += 1
        if self._steps >= self.window:
            total = self._wait + self._busy
            metrics = {"data/wait_fraction": self._wait / total if total else 0.0,
                       "train/clips_per_s": self._clips / total if total else 0.0,
                       "train/steps_per_s": self._steps / total if total else 0.0}
            pl_module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=1)
            self._wait = self._busy = 0.0
            self._clips = self._steps = 0


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
