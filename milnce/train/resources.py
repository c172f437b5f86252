"""Memory and file descriptors of the training process and its DataLoader workers, sampled over a run.

A loader that leaks (a decoder container never closed, a growing cache in a worker, a file opened per sample)
shows up only after thousands of steps, as a slow climb of worker RSS or of open descriptors. `ResourceMonitor`
samples both every N steps into `run_dir/resources.csv` and the loggers; `resource_growth` reads that file back
and reports the growth after a warm-up (allocator pools, decoder caches and the first epoch's pages settle first).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Dict, List, Union

import psutil
import pytorch_lightning as pl

COLUMNS = ("step", "main_rss_mb", "workers", "worker_rss_mb", "worker_rss_max_mb", "main_fds", "worker_fds")


def _rss_mb(proc: psutil.Process) -> float:
    return proc.memory_info().rss / 2 ** 20


def _fds(proc: psutil.Process) -> int:
    try:
        return proc.num_fds()
    except (AttributeError, psutil.Error):   # num_fds is POSIX-only
        return -1


def sample_resources(step: int) -> Dict[str, float]:
    """One row: this process and its children (the DataLoader workers), RSS in MiB and open descriptors."""
    main = psutil.Process(os.getpid())
    rss, fds = [], []
    for child in main.children(recursive=True):
        try:
            with child.oneshot():
                rss.append(_rss_mb(child))
                fds.append(_fds(child))
        except psutil.Error:   # a worker that exited between listing and reading
            continue
    return {"step": step, "main_rss_mb": round(_rss_mb(main), 1), "workers": len(rss),
            "worker_rss_mb": round(sum(rss), 1), "worker_rss_max_mb": round(max(rss, default=0.0), 1),
            "main_fds": _fds(main), "worker_fds": sum(fds)}


class ResourceMonitor(pl.Callback):
    """Append a `sample_resources` row every `every_n_steps` training steps (rank 0's process and workers)."""

    def __init__(self, path: Union[str, Path], every_n_steps: int = 100):
        self.path = Path(path)
        self.every_n_steps = int(every_n_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps <= 0 or step % self.every_n_steps or not trainer.is_global_zero:
            return
        row = sample_resources(step)
        new = not self.path.is_file()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as f:   # a log: a torn last line after kill -9 is skipped on reading
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        pl_module.log_dict({f"resources/{k}": float(v) for k, v in row.items() if k != "step"},
                           on_step=True, on_epoch=False, batch_size=1)


def read_resources(path: Union[str, Path]) -> List[Dict[str, float]]:
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                rows.append({k: float(row[k]) for k in COLUMNS})
            except (KeyError, TypeError, ValueError):
                continue   # the torn line of an interrupted run
    return rows


def resource_growth(path: Union[str, Path], warmup_steps: int) -> Dict[str, float]:
    """Growth from the first sample at or after `warmup_steps` to the last one, plus the peaks after warm-up."""
    rows = [r for r in read_resources(path) if r["step"] >= warmup_steps]
    if len(rows) < 2:
        raise ValueError(f"{path}: fewer than two samples after step {warmup_steps}")
    first, last = rows[0], rows[-1]
    return {"from_step": first["step"], "to_step": last["step"], "workers": last["workers"],
            "main_rss_growth_mb": round(last["main_rss_mb"] - first["main_rss_mb"], 1),
            "worker_rss_growth_mb": round(last["worker_rss_mb"] - first["worker_rss_mb"], 1),
            "main_fds_growth": last["main_fds"] - first["main_fds"],
            "worker_fds_growth": last["worker_fds"] - first["worker_fds"],
            "main_rss_peak_mb": max(r["main_rss_mb"] for r in rows),
            "worker_rss_peak_mb": max(r["worker_rss_mb"] for r in rows),
            "worker_rss_start_mb": first["worker_rss_mb"], "main_rss_start_mb": first["main_rss_mb"]}
