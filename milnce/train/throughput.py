"""How fast training runs and how much of it waits for data, logged as metrics.

`data/wait_fraction` is the share of wall time between the end of one training step and the start of the next
(the DataLoader fetch, plus Lightning's own bookkeeping) over the whole step period. Near 0 the run is
compute-bound; near 1 the loader is the bottleneck (add workers, pack the videos, or cache a small corpus).
"""
from __future__ import annotations

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
