"""What each lever of the demo recipe buys: every row changes one thing, all rows get the same wall-clock budget.

Phase 1 measures every row's ms per step with the step benchmark (milnce.train.step_benchmark), one after another on
the same machine. Phase 2 trains the rows that change what is learned, each for `steps × demo ms / row ms` steps
(the demo's budget in time, on this machine) with the demo's schedule shape, and evaluates them as the demo does.
Rows marked speed-only change nothing but the arithmetic's speed (memory layout, denormals, precision), so their
learning follows from their step count; they are measured, not trained.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Sequence, Tuple

from milnce.config import load_config
from milnce.train.run import train as train_run
from milnce.train.step_benchmark import benchmark_step
from datamodules.atomic import atomic_write

CONF = Path(__file__).resolve().parents[2] / "conf"
HEADLINE = ("youcook2/R1", "youcook2/R10", "youcook2/MedR", "crosstask/recall", "crosstask/recall_argmax")


class Lever(NamedTuple):
    name: str
    change: str
    overrides: Tuple[str, ...]
    speed_only: bool = False


def _eval_clip(frames: int, size: int) -> Tuple[str, ...]:
    return (f"data.num_frames={frames}", f"eval.retrieval.0.num_frames={frames}", f"eval.crosstask.num_frames={frames}",
            f"eval.crosstask.window_seconds={frames / 5.0}", f"data.resize={size}", f"data.crop={size}",
            f"eval.retrieval.0.size={size}", f"eval.crosstask.size={size}")


LEVERS: Tuple[Lever, ...] = (
    Lever("demo", "the recipe of conf/demo.yaml", ()),
    Lever("raw_dot_product", "the original loss: raw dot products, no temperature",
          ("model.loss_args.normalize=false", "model.loss_args.temperature=null",
           "model.loss_args.learnable_temperature=false", "eval.retrieval.0.normalize=false",
           "eval.crosstask.logits=dot")),
    Lever("s3d_quarter", "S3D-G at 1/4 width (space-to-depth) instead of the (2+1)D tower",
          ("model.video_tower=s3d", "model.s3d.width_mult=0.25", "model.s3d.space_to_depth=true")),
    Lever("16_frames", "16 frames at 5 fps (3.2 s clips, as the original) instead of 8", _eval_clip(16, 48)),
    Lever("64_px", "64 px crops instead of 48", _eval_clip(8, 64)),
    Lever("batch_32", "batches of 32 instead of 64", ("data.batch_size=32",)),
    Lever("160_videos", "160 pretraining videos instead of 600 (same held-out sets)",
          ("toy.num_train_videos=160", "data.root=data/toy_160")),
    Lever("no_channels_last", "contiguous (not channels-last) 3-D convolutions", ("model.r2plus1d.channels_last=false",),
          speed_only=True),
    Lever("no_flush_denormal", "subnormal floats not flushed", ("trainer.flush_denormal=false",), speed_only=True),
    Lever("bf16", "bf16 autocast (Lightning precision plugin)", ("trainer.precision=bf16-mixed",), speed_only=True),
)


def lever_table(config: str = str(CONF / "demo.yaml"), work_dir: str = "runs/lever_table",
                names: Sequence[str] = (), overrides: Sequence[str] = (), bench_steps: int = 20,
                train: bool = True) -> List[Dict[str, Any]]:
    """Rows of {name, change, ms_per_step, steps, metrics}; written to work_dir/table.json as they finish."""

    levers = [lv for lv in LEVERS if not names or lv.name in names]
    if levers[0].name != "demo":
        levers = [LEVERS[0], *levers]
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    rows: List[Dict[str, Any]] = []
    for lv in levers:  # phase 1: speed, back to back
        cfg = load_config(config, [*overrides, *lv.overrides, f"run_dir={work / lv.name}"])
        ms = benchmark_step(cfg, steps=bench_steps, warmup=3, rounds=1)["ms_per_step"]
        rows.append({"name": lv.name, "change": lv.change, "overrides": list(lv.overrides),
                     "speed_only": lv.speed_only, "ms_per_step": ms})
        _write(work, rows)
    base = load_config(config, overrides)
    budget_steps, base_ms = int(base.trainer.max_steps), rows[0]["ms_per_step"]
    for row, lv in zip(rows, levers):  # phase 2: learning under the same time budget
        row["steps"] = max(1, round(budget_steps * base_ms / row["ms_per_step"]))
        if lv.speed_only or not train:
            continue
        run_dir = work / lv.name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        cfg = load_config(config, [*overrides, *lv.overrides, f"run_dir={run_dir}", f"trainer.max_steps={row['steps']}",
                                   "trainer.max_time=null"])
        metrics = train_run(cfg)
        row["metrics"] = {k: metrics[k] for k in metrics if k in HEADLINE or k.startswith("chance/")}
        _write(work, rows)
    return rows


def _write(work: Path, rows: List[Dict[str, Any]]) -> None:
    atomic_write(work / "table.json", json.dumps(rows, indent=2) + "\n")


def format_table(rows: List[Dict[str, Any]]) -> str:
    lines = ["| lever (one change from the demo) | ms/step | steps in the demo's time | R@1 | R@10 | MedR | "
             "CrossTask DP | per-step argmax |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r.get("metrics")
        if m:
            cells = [f"{m['youcook2/R1']:.1f}", f"{m['youcook2/R10']:.1f}", f"{m['youcook2/MedR']:.1f}",
                     f"{m['crosstask/recall']:.1f}", f"{m['crosstask/recall_argmax']:.1f}"]
        else:
            cells = ["speed only"] + [""] * 4 if r["speed_only"] else ["–"] * 5
        lines.append(f"| {r['name']}: {r['change']} | {r['ms_per_step']:.0f} | {r.get('steps', '–')} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)
