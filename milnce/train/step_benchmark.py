"""The training step of a config taken apart: where the milliseconds go, ours against a bare PyTorch loop.

`benchmark_step(cfg)` builds the run's datamodule and module exactly as training does, then times, in alternating
rounds on the same batches and from the same initial weights:

* ours: `trainer.fit` with the Trainer, loggers and callbacks of a real run (evaluation callbacks left out: they
  run at a few fixed points, not per step), step period measured from one batch start to the next;
* bare: a plain loop over the same DataLoader doing the same computation (embed video, embed text, loss,
  backward, optimizer step, learning-rate step);

and, inside the bare loop, each part on its own: data wait, video tower forward, text tower forward, loss,
backward (and the video tower's share of it, timed separately), optimizer step. Overhead = ours ÷ bare − 1.
"""
from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from milnce.train.run import (build_datamodule, build_module, build_trainer, decoding_workers, ensure_corpus,
                              training_vocabulary)
from milnce.train.threads import denormals_flushed, pin_torch_threads

PARTS = ("data_wait", "video_forward", "text_forward", "loss", "backward", "video_backward", "optimizer")


class _StepTimer(pl.Callback):
    """Step periods (batch start to next batch start) of a Trainer run."""

    def __init__(self):
        self.starts: List[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        self.starts.append(time.perf_counter())

    def periods(self, warmup: int) -> List[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:])][warmup:]


def _ms(seconds: List[float]) -> float:
    return 1000.0 * statistics.median(seconds) if seconds else float("nan")


def _ours(cfg: DictConfig, module, datamodule, steps: int, warmup: int) -> float:
    timer = _StepTimer()
    with tempfile.TemporaryDirectory(prefix="bench_step_") as run_dir:
        run_cfg = OmegaConf.merge(cfg, {"trainer": {"max_steps": warmup + steps, "max_time": None,
                                                    "max_epochs": -1, "fast_dev_run": False}})
        trainer = build_trainer(run_cfg, Path(run_dir), [timer])
        trainer.fit(module, datamodule=datamodule)
    return _ms(timer.periods(warmup))


def _bare(module, loader_fn: Callable, steps: int, warmup: int, parts: bool) -> Dict[str, float]:
    """A plain PyTorch loop; with `parts`, every part timed on its own (one extra video fwd+bwd per step)."""
    opt, sched = module.optimizer_and_schedule(warmup + steps)
    module.train()
    times: Dict[str, List[float]] = {k: [] for k in ("period", *PARTS)}
    loader = loader_fn()  # one DataLoader for every epoch, as Lightning keeps it (persistent workers)
    it = iter(loader)
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        t1 = time.perf_counter()
        video, ids, mask, video_ids, valid = module.flatten_batch(batch)
        video_emb = module.embed_video(video)
        t2 = time.perf_counter()
        text_emb = module.embed_text(ids, mask)
        t3 = time.perf_counter()
        loss = module.loss_fn(video_emb, text_emb, video_ids=video_ids, valid=valid)
        t4 = time.perf_counter()
        loss.backward()
        t5 = time.perf_counter()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        t6 = time.perf_counter()
        if parts:  # the video tower's backward alone, on the same input (gradients discarded)
            emb = module.embed_video(video)
            t7 = time.perf_counter()
            emb.backward(torch.ones_like(emb))
            times["video_backward"].append(time.perf_counter() - t7)
            opt.zero_grad(set_to_none=True)
        times["period"].append(t6 - t0)
        for key, dt in (("data_wait", t1 - t0), ("video_forward", t2 - t1), ("text_forward", t3 - t2),
                        ("loss", t4 - t3), ("backward", t5 - t4), ("optimizer", t6 - t5)):
            times[key].append(dt)
    return {k: _ms(v[warmup:]) for k, v in times.items() if v}


def benchmark_step(cfg: DictConfig, steps: int = 30, warmup: int = 5, rounds: int = 2) -> Dict[str, Any]:
    """Median ms per step, ours and bare, over `rounds` alternating rounds of `steps` timed steps each."""

    threads = pin_torch_threads(cfg.trainer.num_threads, processes=1, loader_workers=decoding_workers(cfg))
    pl.seed_everything(cfg.seed, workers=True)
    ensure_corpus(cfg)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    initial = build_module(cfg, training_vocabulary(cfg, datamodule))
    datamodule.tokenizer = initial.tokenizer
    loader = datamodule.train_dataloader  # builds the dataset (and decodes a cached corpus) once

    ours, bare = [], []
    with denormals_flushed(cfg.trainer.flush_denormal):
        for _ in range(rounds):
            ours.append(_ours(cfg, copy.deepcopy(initial), datamodule, steps, warmup))
            bare.append(_bare(copy.deepcopy(initial), loader, steps, warmup, parts=False)["period"])
        parts = _bare(copy.deepcopy(initial), loader, steps, warmup, parts=True)
    ms, bare_ms = statistics.median(ours), statistics.median(bare)
    return {
        "config": cfg.name, "batch_size": int(cfg.data.batch_size), "num_frames": int(cfg.data.num_frames),
        "crop": int(cfg.data.crop), "video_tower": cfg.model.video_tower, "threads": threads,
        "steps": steps, "warmup": warmup, "rounds": rounds,
        "ms_per_step": round(ms, 2), "bare_ms_per_step": round(bare_ms, 2),
        "overhead_fraction": round(ms / bare_ms - 1.0, 4),
        "ours_rounds_ms": [round(x, 2) for x in ours], "bare_rounds_ms": [round(x, 2) for x in bare],
        "parts_ms": {k: round(parts[k], 2) for k in PARTS},
    }


def parts_table(result: Dict[str, Any]) -> str:
    p = result["parts_ms"]
    rows = [("data wait", p["data_wait"]), ("video tower forward", p["video_forward"]),
            ("text tower forward", p["text_forward"]), ("loss forward", p["loss"]),
            ("backward (all)", p["backward"]), ("  of which video tower (timed alone)", p["video_backward"]),
            ("optimizer + lr step", p["optimizer"]),
            ("bare PyTorch step", result["bare_ms_per_step"]), ("ours (Lightning, loggers, callbacks)",
                                                                result["ms_per_step"])]
    lines = ["| part | ms per step |", "|---|---|"] + [f"| {name} | {ms:.1f} |" for name, ms in rows]
    lines.append(f"| framework overhead (ours ÷ bare − 1) | {100 * result['overhead_fraction']:+.1f} % |")
    return "\n".join(lines)
