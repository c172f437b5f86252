"""The linear-probe table on the toy corpus: the pretrained video tower vs the same architecture at random init vs
chance, on the toy's UCF-101-style action split (3 splits, mean top-1), from one call.

It renders its own small corpus (conf/probe_toy.yaml's action split on, a smaller pretraining set, no retrieval or
CrossTask splits) into WORK_DIR/toy, pretrains the demo recipe briefly into WORK_DIR/pretrain (or takes a given
checkpoint), then probes both towers with the same clips, features and classifier (milnce.eval.probe).
The action clips are never seen in pretraining (their own split of the corpus).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch

from milnce.api import load_model
from milnce.config import load_config
from milnce.eval.probe import ProbeError, model_key, run_probe
from milnce.towers.registry import build_video_tower
from milnce.train.run import ensure_corpus, train

CONF = Path(__file__).resolve().parents[2] / "conf"
SMALL_CORPUS = ("toy.num_train_videos=240", "toy.num_youcook_videos=0", "toy.num_youcook_train_videos=0",
                "toy.num_msrvtt_clips=0", "toy.num_msrvtt_train_clips=0",
                "toy.num_crosstask_videos=2")   # ToyConfig keeps 2 of them listed as CrossTask val videos


def table_config(work_dir: Path, steps: int, overrides: Sequence[str] = ()):
    return load_config(CONF / "probe_toy.yaml",
                       [f"run_dir={work_dir / 'pretrain'}", f"data.root={work_dir / 'toy'}", *SMALL_CORPUS,
                        "eval.retrieval=[]", "eval.crosstask=null", "eval.at_fractions=[]",
                        f"trainer.max_steps={steps}", "trainer.max_time=00:00:05:00",
                        f"optim.warmup_steps={max(1, min(50, steps // 10))}", *overrides])


def probe_table(checkpoint: Optional[str], work_dir: str, steps: int = 300, seed: int = 0,
                overrides: Sequence[str] = ()) -> Dict[str, Any]:
    work = Path(work_dir)
    cfg = table_config(work, steps, overrides)
    if checkpoint is None:
        run_dir = Path(cfg.run_dir)
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        if (run_dir / "metrics.json").is_file() and ckpt.is_file():
            print(f"[probe_table] reusing the finished pretraining in {run_dir}")
        else:
            train(cfg)
        if not ckpt.is_file():
            raise ProbeError(f"pretraining wrote no {ckpt} (no training batches? see the log above)")
        checkpoint = str(ckpt)
    else:
        ensure_corpus(cfg)
    module = load_model(checkpoint)
    cache = str(work / "probe_features")
    trained = run_probe(module.video_tower, cfg.probe, cfg.data.root, cache, model_key(checkpoint))
    torch.manual_seed(seed)
    random_tower = build_video_tower(module.model_cfg)
    random_key = f"random-init:{seed}:" + json.dumps(module.hparams["model_cfg"], sort_keys=True, default=str)
    random = run_probe(random_tower, cfg.probe, cfg.data.root, cache, random_key)
    return {"checkpoint": checkpoint, "trained": trained, "random": random, "seed": seed}


def format_table(rows: Dict[str, Any]) -> str:
    t, r = rows["trained"].metrics, rows["random"].metrics
    splits = sorted(k[len("top1_split"):] for k in t if k.startswith("top1_split"))
    card = rows["trained"].card
    lines = [f"Linear probe, toy UCF-101-style action split ({card['splits'][0]['num_classes']} classes, "
             f"{card['num_videos']} clips), feature {card['feature']} ({card['feature_dim']}-d), "
             f"{card['clips']['num_clips']} clips/video, checkpoint {rows['checkpoint']}", "",
             "| tower | " + " | ".join(f"split {s}" for s in splits) + " | mean top-1 |",
             "|---|" + "---|" * (len(splits) + 1)]
    for name, m in (("pretrained", t), (f"random init (seed {rows['seed']})", r),
                    ("chance (most frequent class)", {k[len("chance_"):]: v for k, v in t.items()
                                                      if k.startswith("chance_")})):
        lines.append(f"| {name} | " + " | ".join(f"{m[f'top1_split{s}']:.1f}" for s in splits)
                     + f" | {m['top1']:.1f} |")
    return "\n".join(lines)


def summary_line(rows: Dict[str, Any]) -> str:
    t, r = rows["trained"].metrics, rows["random"].metrics
    return json.dumps({"probe_top1": round(t["top1"], 2), "random_top1": round(r["top1"], 2),
                       "chance_top1": round(t["chance_top1"], 2)})
