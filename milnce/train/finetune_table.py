"""The three rows of the HowTo100M fine-tuning table on one retrieval test split, from one call.

- zero_shot: the pretrained checkpoint, evaluated as it is;
- scratch:   the same model trained from a random init on the fine-tuning training split only (same steps, the
             pretraining learning rate and no freezing: the best a scratch run gets), vocabulary = its captions';
- finetuned: the pretrained checkpoint fine-tuned with conf/finetune_<dataset>.yaml (same steps).

All three are evaluated by the same RetrievalEvaluator on the dataset's test split (YouCook2: the validation clips;
MSR-VTT: 1k-A), after the last training step (not the best epoch: the test split is the validation split here, and
picking an epoch on it would flatter the trained rows). Without a checkpoint the demo pretraining (conf/demo.yaml)
runs first.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, Optional, Sequence

from milnce.config import load_config
from milnce.eval.setup import build_evaluators
from milnce.train.run import build_datamodule, build_module, train, training_vocabulary
from datamodules.atomic import atomic_write

CONF = Path(__file__).resolve().parents[2] / "conf"
ROWS = ("zero_shot", "scratch", "finetuned")
SHOWN = ("R1", "R5", "R10", "MedR")


def pretrain_demo(work_dir: Path, overrides: Sequence[str] = ()) -> Path:
    """Run the demo pretraining (no evaluation) into work_dir/pretrain, or reuse a finished one; its last.ckpt."""

    run_dir = work_dir / "pretrain"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if (run_dir / "metrics.json").is_file() and ckpt.is_file():
        print(f"[finetune_table] reusing the finished pretraining in {run_dir}")
        return ckpt
    cfg = load_config(CONF / "demo.yaml", [f"run_dir={run_dir}", "eval.crosstask=null", "eval.retrieval=[]",
                                           *overrides])
    train(cfg)
    return ckpt


def finetune_config(dataset: str, run_dir: Path, init_from: Optional[str], steps: int,
                    overrides: Sequence[str] = ()):
    """conf/finetune_<dataset>.yaml for one row: evaluated once, at the end (no per-epoch validation)."""
    return load_config(CONF / f"finetune_{dataset}.yaml",
                       [f"run_dir={run_dir}", f"model.init_from={init_from if init_from else 'null'}",
                        f"trainer.max_steps={steps}", "eval.every_n_epochs=0", "trainer.monitor=null",
                        *overrides])


def evaluate_checkpoint(cfg) -> Dict[str, float]:
    """The retrieval metrics of cfg.model.init_from as it is (the fine-tuning config's model and evaluator)."""

    module = build_module(cfg, training_vocabulary(cfg, build_datamodule(cfg)))
    (kind, evaluator), = [e for e in build_evaluators(cfg) if e[0] == "retrieval"]
    return dict(evaluator.evaluate(module).metrics)


def _fresh(run_dir: Path) -> Path:
    if run_dir.exists():  # a row is always trained anew; a leftover last.ckpt would make train() resume it
        shutil.rmtree(run_dir)
    return run_dir


def finetune_table(pretrained: Optional[str] = None, dataset: str = "youcook2", steps: int = 100,
                   work_dir: str = "runs/finetune_table", scratch_lr: float = 1e-3,
                   overrides: Sequence[str] = (), pretrain_overrides: Sequence[str] = ()) -> Dict[str, Dict[str, float]]:
    """{row: metrics} for zero_shot, scratch and finetuned (metrics keyed R1, R5, R10, MedR, … in percent)."""

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = str(pretrained) if pretrained else str(pretrain_demo(work, pretrain_overrides))
    prefix = f"{dataset}/"
    rows: Dict[str, Dict[str, float]] = {}

    cfg = finetune_config(dataset, _fresh(work / "zero_shot"), ckpt, steps, overrides)
    rows["zero_shot"] = evaluate_checkpoint(cfg)

    cfg = finetune_config(dataset, _fresh(work / "scratch"), None, steps,
                          [f"optim.lr={scratch_lr}", "model.word2vec.freeze_embedding=false",
                           "model.freeze_video_bn=false", "model.freeze_text_tower=false", *overrides])
    metrics = train(cfg)
    rows["scratch"] = {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}

    cfg = finetune_config(dataset, _fresh(work / "finetuned"), ckpt, steps, overrides)
    metrics = train(cfg)
    rows["finetuned"] = {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}
    atomic_write(work / "table.json", json.dumps({"pretrained": ckpt, "dataset": dataset, "steps": steps,
                                                 "rows": rows}, indent=2, sort_keys=True) + "\n")
    return rows


def format_table(rows: Dict[str, Dict[str, float]], dataset: str) -> str:
    lines = [f"{dataset} text→video retrieval", f"{'':<11}" + "".join(f"{k:>8}" for k in SHOWN)]
    for row in ROWS:
        m = rows[row]
        lines.append(f"{row:<11}" + "".join(f"{m.get(k, float('nan')):>8.2f}" for k in SHOWN))
    chance = rows["zero_shot"].get("chance/R1")
    if chance is not None:
        lines.append(f"{'chance':<11}{chance:>8.2f}")
    return "\n".join(lines)


def summary_line(rows: Dict[str, Dict[str, float]]) -> str:
    """The DESIGN.md contract: {"zero_shot": R1, "scratch": R1, "finetuned": R1}."""
    return json.dumps({row: round(float(rows[row]["R1"]), 4) for row in ROWS})
