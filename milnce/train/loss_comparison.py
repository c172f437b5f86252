"""The MIL-NCE paper's loss ablation in miniature: the demo recipe trained with MIL-NCE (K candidates), NCE (one
narration per clip) and HowTo100M's max-margin ranking loss under the same step budget, evaluated the same way.

Only the loss and what it needs change between rows: NCE and max-margin pair one narration with each clip
(data.num_candidates=1); max-margin ranks cosine similarities with a margin, so it has no temperature (its
normalisation follows model.loss_args.normalize, as HowTo100M's L2-normalised embeddings).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, Sequence

from milnce.config import load_config
from milnce.train.run import train
from datamodules.atomic import atomic_write

CONF = Path(__file__).resolve().parents[2] / "conf"
ROWS = ("mil_nce", "nce", "max_margin")
SHOWN = ("R1", "R5", "R10", "MedR")


def row_overrides(row: str, num_candidates: int) -> list:
    if row == "mil_nce":
        return ["model.loss=mil_nce", f"data.num_candidates={num_candidates}"]
    if row == "nce":
        return ["model.loss=nce", "data.num_candidates=1"]
    if row == "max_margin":
        return ["model.loss=max_margin", "data.num_candidates=1", "model.loss_args.temperature=null",
                "model.loss_args.learnable_temperature=false"]
    raise ValueError(f"unknown row '{row}' (valid: {', '.join(ROWS)})")


def compare_losses(config: str = str(CONF / "demo.yaml"), work_dir: str = "runs/compare_losses",
                   overrides: Sequence[str] = (), rows: Sequence[str] = ROWS) -> Dict[str, Dict[str, float]]:
    """{row: final metrics.json of that run} for every row, each trained anew in work_dir/<row>."""

    base = load_config(config, overrides)
    k = int(base.data.num_candidates)
    work = Path(work_dir)
    results: Dict[str, Dict[str, float]] = {}
    for row in rows:
        run_dir = work / row
        if run_dir.exists():  # a leftover last.ckpt would make train() resume instead of training anew
            shutil.rmtree(run_dir)
        cfg = load_config(config, [*overrides, f"run_dir={run_dir}", *row_overrides(row, k)])
        results[row] = train(cfg)
    atomic_write(work / "table.json", json.dumps({"config": config, "overrides": list(overrides), "rows": results},
                                                indent=2, sort_keys=True) + "\n")
    return results


def format_table(results: Dict[str, Dict[str, float]], prefix: str = "youcook2") -> str:
    lines = [f"| loss | {' | '.join(SHOWN)} | CrossTask recall | steps |", "|---|" + "---|" * (len(SHOWN) + 2)]
    for row, m in results.items():
        cells = [f"{m.get(f'{prefix}/{k}', float('nan')):.1f}" for k in SHOWN]
        lines.append(f"| {row} | {' | '.join(cells)} | {m.get('crosstask/recall', float('nan')):.1f} | "
                     f"{m.get('train/steps', float('nan')):.0f} |")
    return "\n".join(lines)


def summary_line(results: Dict[str, Dict[str, float]], prefix: str = "youcook2") -> str:
    """The DESIGN.md contract: {"mil_nce": R10, "nce": R10, "max_margin": R10}."""
    return json.dumps({row: round(float(m.get(f"{prefix}/R10", float("nan"))), 2) for row, m in results.items()})
