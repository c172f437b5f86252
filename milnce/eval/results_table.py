"""The results table printed at the end of a run and written to results.md."""
from __future__ import annotations

from typing import Any, Dict

RETRIEVAL_COLUMNS = ("R1", "R5", "R10", "MedR", "MeanR")


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def results_markdown(metrics: Dict[str, float], cards: Dict[str, Any]) -> str:
    lines = ["# Results", ""]
    retrieval = sorted({k.split("/")[0] for k in metrics if k.endswith("/R10") and not k.startswith("chance/")})
    if retrieval:
        lines += ["## Text→video retrieval", "",
                  "| dataset | clips | " + " | ".join(RETRIEVAL_COLUMNS) + " |",
                  "|---|---|" + "---|" * len(RETRIEVAL_COLUMNS)]
        for name in retrieval:
            card = cards.get(name, {})
            n = f"{card.get('n_evaluated', '?')}/{card.get('n_listed', '?')}"
            lines.append(f"| {name} | {n} | " + " | ".join(_fmt(metrics.get(f"{name}/{c}"))
                                                            for c in RETRIEVAL_COLUMNS) + " |")
            lines.append(f"| chance | | " + " | ".join(_fmt(metrics.get(f"chance/{name}/{c}"))
                                                       for c in RETRIEVAL_COLUMNS) + " |")
        lines.append("")
    if "crosstask/recall" in metrics:
        card = cards.get("crosstask", {})
        lines += ["## CrossTask step localization", "",
                  "| metric | model | chance |", "|---|---|---|",
                  f"| recall (Zhukov: pooled per task, mean over tasks) | {_fmt(metrics['crosstask/recall'])} | "
                  f"{_fmt(metrics.get('chance/crosstask/recall'))} |"]
        for key in ("recall_per_video", "recall_dp_similarity", "recall_argmax"):
            if f"crosstask/{key}" in metrics:
                lines.append(f"| {key} | {_fmt(metrics[f'crosstask/{key}'])} | "
                             f"{_fmt(metrics.get(f'chance/crosstask/{key}'))} |")
        lines.append(f"\n{card.get('n_evaluated', '?')} videos; inference {card.get('inference', '?')}, "
                     f"cost {card.get('cost', '?')}")
        lines.append("")
    probes = sorted({k.split("/")[0] for k in metrics if k.endswith("/top1") and not k.startswith("chance/")})
    if probes:
        lines += ["## Linear probe (frozen video tower)", "", "| dataset | split | top-1 | chance |", "|---|---|---|---|"]
        for name in probes:
            splits = sorted(k[len(name) + 1 + len("top1_split"):] for k in metrics
                            if k.startswith(f"{name}/top1_split"))
            for s in splits:
                lines.append(f"| {name} | {s} | {_fmt(metrics[f'{name}/top1_split{s}'])} | "
                             f"{_fmt(metrics.get(f'chance/{name}/top1_split{s}'))} |")
            lines.append(f"| {name} | mean | {_fmt(metrics[f'{name}/top1'])} | "
                         f"{_fmt(metrics.get(f'chance/{name}/top1'))} |")
        lines.append("")
    aligned = sorted({k.split("/")[0] for k in metrics if k.endswith("/R1_global") and not k.startswith("chance/")})
    for name in aligned:
        card = cards.get(name, {})
        auc = metrics.get(f"{name}/AUC")
        lines += [f"## Narration alignment ({name})", "",
                  "| R@1 global | R@1 window | ROC-AUC | R@1 ASR times | chance R@1 |", "|---|---|---|---|---|",
                  "| " + " | ".join(_fmt(metrics.get(k)) for k in (f"{name}/R1_global", f"{name}/R1_window")) +
                  f" | {'–' if auc is None else f'{auc:.3f}'} | " +
                  " | ".join(_fmt(metrics.get(k)) for k in (f"{name}/R1_asr", f"chance/{name}/R1")) + " |",
                  f"\n{card.get('n_evaluated', '?')} videos, {card.get('sentences', '?')} sentences; window "
                  f"±{card.get('window_radius_seconds', '?')} s; published R@1 on HTM-Align: "
                  + ", ".join(f"{k} {v}" for k, v in card.get("published_r1_htm_align", {}).items()), ""]
    train = {k: v for k, v in metrics.items() if k.startswith("train/")}
    if train:
        lines += ["## Training", ""] + [f"- {k}: {_fmt(v)}" for k, v in sorted(train.items())] + [""]
    lines.append("Protocol cards (every setting behind each number): protocol_cards.json")
    return "\n".join(lines) + "\n"
