"""A run report: report.md with PNG plots (training loss, retrieval R@K over steps, R@10 against steps and training
seconds, CrossTask recall per task) and
the final metrics with their protocol cards, from what a run directory already holds:

    logs/metrics.csv       Lightning CSVLogger (train/loss per logged step; <dataset>/R1 … at evaluation steps)
    metrics.json           final metrics (flat)
    protocol_cards.json    {dataset: card}; CrossTask's card has per_task {task: {recall, title, …}}

Missing pieces are skipped with a line saying so; a report can be written for a run that is still training.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union
from milnce.eval.results_table import results_markdown
from datamodules.atomic import atomic_path, atomic_write

PathLike = Union[str, Path]
RECALL_KS = ("R1", "R5", "R10")
CARD_LIST_LIMIT = 10   # long lists in cards (missing videos, rank histograms) are shortened in report.md


def _read_csv(path: Path):
    import pandas as pd

    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    return frame if "step" in frame.columns else None


def _read_json(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss(frame, out: Path) -> Optional[Path]:
    if frame is None or "train/loss" not in frame.columns:
        return None
    data = frame[["step", "train/loss"]].dropna()
    if data.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(data["step"], data["train/loss"], lw=1, alpha=0.5, label="logged")
    window = max(1, len(data) // 20)
    if window > 1:
        ax.plot(data["step"], data["train/loss"].rolling(window, min_periods=1).mean(), lw=2,
                label=f"running mean ({window})")
    ax.set_xlabel("step")
    ax.set_ylabel("train/loss")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out


def retrieval_series(frame) -> Dict[str, Dict[str, Any]]:
    """{prefix: DataFrame(step, R1, R5, R10)} for every logged retrieval prefix (youcook2, msrvtt_subset, …)."""
    if frame is None:
        return {}
    prefixes = sorted({c.rsplit("/", 1)[0] for c in frame.columns
                       if c.endswith("/R10") and not c.startswith("chance/") and "/v2t/" not in c + "/"
                       and c.count("/") == 1})
    out = {}
    for p in prefixes:
        cols = [f"{p}/{k}" for k in RECALL_KS if f"{p}/{k}" in frame.columns]
        data = frame[["step", *cols]].dropna(subset=cols, how="all")
        if not data.empty:
            out[p] = data.rename(columns={c: c.rsplit("/", 1)[1] for c in cols})
    return out


def plot_retrieval(series: Dict[str, Any], metrics: Dict[str, float], out: Path) -> Optional[Path]:
    if not series:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(series), figsize=(5 * len(series), 3.5), squeeze=False)
    for ax, (prefix, data) in zip(axes[0], series.items()):
        for k in RECALL_KS:
            if k in data.columns:
                line, = ax.plot(data["step"], data[k], marker="o", label=k)
                base = prefix.replace("_subset", "")
                chance = metrics.get(f"chance/{base}/{k}")
                if chance is not None:
                    ax.axhline(chance, ls=":", color=line.get_color(), lw=1)
        ax.set_title(f"{prefix} text→video (dotted: chance)")
        ax.set_xlabel("step")
        ax.set_ylabel("recall %")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out


def train_seconds_by_step(frame) -> Dict[int, float]:
    """{step: training seconds} from the `time/train_seconds` every evaluation logs (evaluation time excluded)."""
    if frame is None or "time/train_seconds" not in frame.columns:
        return {}
    data = frame[["step", "time/train_seconds"]].dropna()
    return {int(st): float(sec) for st, sec in zip(data["step"], data["time/train_seconds"])}


def plot_time_to_accuracy(series: Dict[str, Any], seconds: Dict[int, float], metrics: Dict[str, float],
                          out: Path, ks: Sequence[str] = ("R1", "R10")) -> Optional[Path]:
    """R@k of every retrieval prefix against training steps and against training seconds, side by side."""
    rows = {p: d for p, d in series.items() if any(k in d.columns for k in ks)}
    if not rows:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2 if seconds else 1, figsize=(10 if seconds else 5, 3.8), squeeze=False)
    for prefix, data in rows.items():
        for k, style in zip(ks, ("--", "-")):
            if k not in data.columns:
                continue
            points = data.dropna(subset=[k])
            line, = axes[0][0].plot(points["step"], points[k], style, marker="o", label=f"{prefix} {k}")
            timed = [(seconds[int(st)], v) for st, v in zip(points["step"], points[k]) if int(st) in seconds]
            if seconds and timed:
                axes[0][1].plot([t for t, _ in timed], [v for _, v in timed], style, marker="o",
                                label=f"{prefix} {k}", color=line.get_color())
            chance = metrics.get(f"chance/{prefix.replace('_subset', '')}/{k}")
            for ax in axes[0]:
                if chance is not None:
                    ax.axhline(chance, ls=":", color=line.get_color(), lw=1)
    axes[0][0].set_xlabel("training step")
    if seconds:
        axes[0][1].set_xlabel("training seconds (evaluation excluded)")
    for ax in axes[0]:
        ax.set_ylabel("recall %")
        ax.set_title("time to accuracy, text→video (dotted: chance)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out


def plot_crosstask_tasks(card: Dict[str, Any], metrics: Dict[str, float], out: Path) -> Optional[Path]:
    per_task = (card or {}).get("per_task") or {}
    rows = [(t, v.get("title") or t, v.get("recall")) for t, v in per_task.items()
            if isinstance(v, dict) and v.get("recall") is not None and not math.isnan(float(v["recall"]))]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(rows) + 2), 3.8))
    ax.bar(range(len(rows)), [r[2] for r in rows], color="tab:blue")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{r[1]}\n({r[0]})" for r in rows], rotation=45, ha="right", fontsize=8)
    mean = metrics.get("crosstask/recall")
    if mean is not None:
        ax.axhline(mean, color="k", lw=1, label=f"mean over tasks {mean:.1f}")
    chance = metrics.get("chance/crosstask/recall")
    if chance is not None:
        ax.axhline(chance, color="tab:red", ls=":", lw=1, label=f"chance {chance:.1f}")
    ax.set_ylabel("recall %")
    ax.set_title("CrossTask step recall per task")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out


def _shorten(value: Any) -> Any:
    if isinstance(value, list) and len(value) > CARD_LIST_LIMIT:
        return value[:CARD_LIST_LIMIT] + [f"… {len(value) - CARD_LIST_LIMIT} more"]
    if isinstance(value, dict):
        if len(value) > 4 * CARD_LIST_LIMIT:
            items = list(value.items())[:CARD_LIST_LIMIT]
            return {**{k: _shorten(v) for k, v in items}, "…": f"{len(value) - CARD_LIST_LIMIT} more"}
        return {k: _shorten(v) for k, v in value.items()}
    return value


def write_report(run_dir: PathLike) -> Path:
    """Write run_dir/report.md and run_dir/report/*.png; returns the report path."""

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    frame = _read_csv(run_dir / "logs" / "metrics.csv")
    metrics = _read_json(run_dir / "metrics.json")
    cards = _read_json(run_dir / "protocol_cards.json")
    figs = run_dir / "report"
    figs.mkdir(exist_ok=True)

    lines: List[str] = [f"# Run report: {run_dir.name}", ""]
    if not metrics:
        lines += ["_No metrics.json yet: the run has not finished (plots show what is logged so far)._", ""]
    lines += ["## Training loss", ""]
    loss = plot_loss(frame, figs / "train_loss.png")
    if loss:
        data = frame[["step", "train/loss"]].dropna()
        lines += [f"![training loss](report/{loss.name})", "",
                  f"{len(data)} logged steps, first {data['train/loss'].iloc[0]:.4f} at step "
                  f"{int(data['step'].iloc[0])}, last {data['train/loss'].iloc[-1]:.4f} at step "
                  f"{int(data['step'].iloc[-1])}.", ""]
    else:
        lines += ["_No train/loss in logs/metrics.csv._", ""]
    series = retrieval_series(frame)
    lines += ["## Retrieval over training", ""]
    ret = plot_retrieval(series, metrics, figs / "retrieval_recall.png")
    if ret:
        lines += [f"![retrieval recall over steps](report/{ret.name})", ""]
        for prefix, data in series.items():
            last = data.iloc[-1]
            shown = ", ".join(f"{k} {last[k]:.1f}" for k in RECALL_KS if k in data.columns)
            lines.append(f"- {prefix}: {len(data)} evaluations; at step {int(last['step'])}: {shown}")
        lines.append("")
    else:
        lines += ["_No retrieval evaluation logged._", ""]
    seconds = train_seconds_by_step(frame)
    tta = plot_time_to_accuracy(series, seconds, metrics, figs / "time_to_accuracy.png")
    if tta:
        lines += ["## Time to accuracy", "", f"![R@1 and R@10 against steps and seconds](report/{tta.name})", ""]
        for prefix, data in series.items():
            for k in ("R1", "R10"):
                if k not in data.columns:
                    continue
                points = [f"step {int(st)}" + (f" ({seconds[int(st)]:.0f} s)" if int(st) in seconds else "")
                          + f": {v:.1f}" for st, v in zip(data["step"], data[k]) if v == v]
                lines.append(f"- {prefix} {k.replace('R', 'R@')} — " + "; ".join(points))
        lines.append("")
    lines += ["## CrossTask recall per task", ""]
    ct = plot_crosstask_tasks(cards.get("crosstask", {}), metrics, figs / "crosstask_per_task.png")
    if ct:
        lines += [f"![CrossTask recall per task](report/{ct.name})", ""]
    else:
        lines += ["_No CrossTask evaluation in protocol_cards.json._", ""]
    if metrics:
        table = results_markdown(metrics, cards).splitlines()
        lines += ["## Final metrics", ""] + ["#" + line if line.startswith("## ") else line
                                             for line in table[2:] if not line.startswith("Protocol cards")]
    if cards:
        lines += ["## Protocol cards", "", "Every setting behind each number (long lists shortened; full cards in "
                  "protocol_cards.json).", ""]
        for name, card in sorted(cards.items()):
            lines += [f"### {name}", "", "```json", json.dumps(_shorten(card), indent=1, default=str, ensure_ascii=False), "```", ""]
    path = run_dir / "report.md"
    atomic_write(path, "\n".join(lines).rstrip() + "\n")
    return path
