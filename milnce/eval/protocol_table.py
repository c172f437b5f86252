"""`milnce evaluate CONFIG … --protocols all`: every text→video protocol variant of a benchmark, side by side.

The encoders run once per benchmark: every video of every split (MSR-VTT 1k-A ∪ full test) is embedded once, its
window embeddings kept, and every distinct sentence is embedded once. Each variant is then computed from those
embeddings (milnce.eval.retrieval_scoring):

    split     1k-A (the CSV) | full (the "test" videos of MSRVTT_data.json)           MSR-VTT only
    captions  one per video (1k-A: its CSV sentence; full: its first JSON caption) | all (R@K per caption)
    pooling   mean | max over the windows (from the kept window embeddings; fixed for pre-extracted features)
    score     dot (raw, the original) | cosine (L2-normalised)
    inference plain (the original) | dual_softmax (transductive: uses every test query)

Windows, frames, fps, crop and text length are those of the config, the same for every row. The row with the
config's own settings is marked `default`; its numbers equal what `milnce evaluate` reports without the flag. Variants
that do not exist for a benchmark (YouCook2: one split, one caption per clip) are listed as not applicable, never
printed as rows. Text→video only (what the papers report).
"""
from __future__ import annotations

import csv
import io
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from omegaconf import DictConfig

from milnce.eval.retrieval import chance_metrics, retrieval_metrics_multi
from milnce.eval.retrieval_scoring import base_similarity, ranked_similarity, resolve_temperature
from milnce.eval.setup import msrvtt_captions_json, retrieval_evaluator, retrieval_set
from datamodules.atomic import atomic_write
from datamodules.benchmarks.retrieval_items import RetrievalSet

FACTORS = ("split", "captions", "pooling", "score", "inference")
METRICS = ("R1", "R5", "R10", "MedR", "MeanR")
COLUMNS = ("dataset", *FACTORS, "temperature", "queries", "videos", *METRICS, "ties", "dR1", "dR10", "default")


@dataclass
class ProtocolTable:
    dataset: str
    rows: List[Dict[str, Any]]
    notes: List[str]                        # variants that do not apply, and other remarks
    fixed: Dict[str, Any]                   # the settings every row shares
    splits: Dict[str, Dict[str, Any]] = field(default_factory=dict)   # per split: listed / evaluated / missing

    @property
    def default_row(self) -> Dict[str, Any]:
        return next(r for r in self.rows if r["default"])

    def card(self) -> Dict[str, Any]:
        split = self.splits[self.default_row["split"]]
        return {"dataset": self.dataset, "protocols": "all", "fixed": self.fixed, "splits": self.splits,
                "n_evaluated": split["evaluated"], "n_listed": split["listed"],
                "notes": self.notes, "rows": self.rows, "default": self.default_row}


def _splits(cfg: DictConfig, r: DictConfig) -> Tuple[Dict[str, RetrievalSet], List[str]]:
    """{split: RetrievalSet} of every split that exists on disk, and why the others do not apply."""
    data_root = Path(cfg.data.root)
    if r.name != "msrvtt":
        return {"validation": retrieval_set(r, data_root)}, [
            f"split: {r.name} has one evaluation split (validation); 1k-A / full are MSR-VTT's",
            f"captions=all: {r.name} has one caption per clip"]
    sets, notes = {}, []
    json_path = msrvtt_captions_json(r, data_root)
    has_json = json_path.is_file()
    if not has_json:
        notes.append(f"split=full and captions=all: no MSR-VTT caption file {json_path} "
                     f"(eval.retrieval.captions_json)")
    sets["1k-A"] = retrieval_set(r, data_root, "1k-A", with_captions=has_json)
    if has_json:
        sets["full"] = retrieval_set(r, data_root, "full")
    return sets, notes


def _union(name: str, sets: Dict[str, RetrievalSet]) -> Tuple[RetrievalSet, Dict[str, List[int]]]:
    """One item per distinct video span over all splits, and each split's items as positions in that union."""
    position: Dict[Tuple, int] = {}
    items = []
    where: Dict[str, List[int]] = {}
    for split, ds in sets.items():
        where[split] = []
        for it in ds.items:
            key = (it.video_id, it.path, it.start, it.end)
            if key not in position:
                position[key] = len(items)
                items.append(it)
            where[split].append(position[key])
    first = next(iter(sets.values()))
    union = RetrievalSet(name=name, source=" + ".join(ds.source for ds in sets.values()),
                         video_root=first.video_root, items=items, split="+".join(sets))
    return union, where


def _pooled(emb, pooling: str, windows_kept: bool) -> Dict[str, np.ndarray]:
    """{pooling: n×D}: the configured pooling as the evaluator computed it, the other one from the windows."""
    out = {pooling: emb.video}
    if windows_kept and emb.windows is not None:
        w = torch.from_numpy(emb.windows)
        other = "max" if pooling == "mean" else "mean"
        out[other] = (w.amax(dim=1) if other == "max" else w.mean(dim=1)).numpy()
    return out


def protocol_table(cfg: DictConfig, r: DictConfig, module, progress: bool = True) -> ProtocolTable:
    """Every applicable variant of `eval.retrieval` entry `r` for `module`, from one encoding pass."""
    sets, notes = _splits(cfg, r)
    union, where = _union(r.name, sets)
    if len(sets) == 2 and sorted(where["1k-A"]) == sorted(where["full"]):
        notes.append(f"1k-A and full hold the same {len(where['full'])} videos here, so their rows differ only "
                     f"where the one-caption sentences do (the real release: 1,000 of 2,990)")
    features = cfg.data.dataset == "features"
    evaluator = retrieval_evaluator(cfg, r, union, captions="one", dual_softmax=False, keep_windows=True)
    evaluator.progress, evaluator.out_dir = progress, None
    emb = evaluator.embed(module)
    row_of = {i: k for k, i in enumerate(emb.indices)}
    pooling = "features" if features else r.pooling
    if features:
        notes.append("pooling: pre-extracted features are max-pooled per clip before the video tower (fixed)")
    videos = _pooled(emb, pooling, not features)

    queries: Dict[Tuple[str, str], Tuple[List[str], np.ndarray, List[int]]] = {}
    splits_card: Dict[str, Dict[str, Any]] = {}
    for split, ds in sets.items():
        rows = [row_of[p] for p in where[split] if p in row_of]
        kept = [j for j, p in enumerate(where[split]) if p in row_of]
        splits_card[split] = {"annotations": ds.source, "listed": len(ds), "evaluated": len(rows),
                              "missing": len(ds.missing), "failed": len(where[split]) - len(ds.missing) - len(rows)}
        queries[(split, "one")] = ([ds.items[j].text for j in kept], np.arange(len(rows)), rows)
        if ds.captions is not None:
            texts = [c for j in kept for c in ds.captions[j]]
            owner = np.asarray([k for k, j in enumerate(kept) for _ in ds.captions[j]], dtype=np.int64)
            queries[(split, "all")] = (texts, owner, rows)
    distinct = list(dict.fromkeys(t for texts, _, _ in queries.values() for t in texts))
    encoded = evaluator.encode_texts(module, distinct)
    text_row = {t: k for k, t in enumerate(distinct)}

    default = {"split": r.split or next(iter(sets)), "captions": r.captions, "pooling": pooling,
               "score": "cosine" if r.normalize else "dot",
               "inference": "dual_softmax" if r.dual_softmax else "plain"}
    rows_out = []
    for (split, captions), (texts, owner, rows) in queries.items():
        text = encoded[[text_row[t] for t in texts]]
        for pool, score, inference in itertools.product(videos, ("dot", "cosine"), ("plain", "dual_softmax")):
            temperature = resolve_temperature(score == "cosine", r.dual_softmax_temperature)
            base = base_similarity(videos[pool][rows], text, score == "cosine")
            m = retrieval_metrics_multi(ranked_similarity(base, inference, temperature), owner)
            variant = {"split": split, "captions": captions, "pooling": pool, "score": score, "inference": inference}
            rows_out.append({"dataset": r.name, **variant,
                             "temperature": temperature if inference == "dual_softmax" else None,
                             "queries": int(m["N"]), "videos": int(m["videos"]),
                             **{k: m[k] for k in METRICS}, "ties": int(m["ties"]), "default": variant == default})
    if not any(row["default"] for row in rows_out):
        raise ValueError(f"{r.name}: the configured protocol {default} is not among the variants computed")
    ref = next(row for row in rows_out if row["default"])
    for row in rows_out:
        row["dR1"], row["dR10"] = row["R1"] - ref["R1"], row["R10"] - ref["R10"]
    fixed = {"windows": None if features else r.num_windows, "frames": None if features else r.num_frames,
             "fps": None if features else r.fps, "size": None if features else r.size,
             "text_max_words": emb.max_words, "input": "features" if features else "video",
             "dual_softmax_temperature_rule": "eval.retrieval.dual_softmax_temperature, else 0.01 on cosine and "
                                              "1.0 on raw dot scores",
             "ties": "counted as compute_metrics (every tied position is an entry)"}
    return ProtocolTable(r.name, rows_out, notes, fixed, splits_card)


def _cell(value: Any, key: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "**default**" if value else ""
    if isinstance(value, float):
        return f"{value:+.1f}" if key.startswith("d") else f"{value:.1f}" if key != "temperature" else f"{value:g}"
    return str(value)


def table_markdown(tables: Sequence[ProtocolTable]) -> str:
    lines = ["# Retrieval protocol variants (text→video)", ""]
    for t in tables:
        f = t.fixed
        shared = (f"{f['windows']} windows × {f['frames']} frames at {f['fps']:g} fps, {f['size']} px centre crop"
                  if f["input"] == "video" else "pre-extracted features")
        lines += [f"## {t.dataset}", "",
                  f"Same for every row: {shared}, text max {f['text_max_words']} words. "
                  f"dR1 / dR10: change from the **default** row (the config's protocol).", "",
                  "| " + " | ".join(COLUMNS[1:]) + " |", "|" + "---|" * (len(COLUMNS) - 1)]
        for row in t.rows:
            lines.append("| " + " | ".join(_cell(row[c], c) for c in COLUMNS[1:]) + " |")
        for split, s in t.splits.items():
            lines.append(f"\n{split}: {s['evaluated']} videos evaluated of {s['listed']} listed "
                         f"({s['missing']} missing, {s['failed']} failed to decode); {s['annotations']}")
        if t.notes:
            lines += ["", "Not applicable / notes:"] + [f"- {n}" for n in t.notes]
        lines.append("")
    return "\n".join(lines) + "\n"


def table_csv(tables: Sequence[ProtocolTable]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for t in tables:
        for row in t.rows:
            w.writerow({k: ("" if row[k] is None else row[k]) for k in COLUMNS})
    return buf.getvalue()


def write_protocol_tables(run_dir: Path, tables: Sequence[ProtocolTable]) -> Dict[str, Path]:
    """run_dir/protocols.{md,csv,json}; prints the markdown."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: run_dir / f"protocols.{ext}" for ext in ("md", "csv", "json")}
    markdown = table_markdown(tables)
    atomic_write(paths["md"], markdown)
    atomic_write(paths["csv"], table_csv(tables))
    atomic_write(paths["json"], json.dumps({t.dataset: t.card() for t in tables}, indent=2) + "\n")
    print(markdown)
    return paths


def default_metrics(table: ProtocolTable) -> Dict[str, float]:
    """The default row as an evaluator's metrics (R1 … MeanR, ties, N, chance/…) for metrics.json."""
    row = table.default_row
    n = row["videos"]
    out: Dict[str, float] = {k: float(row[k]) for k in METRICS}
    out.update({"ties": float(row["ties"]), "N": float(row["queries"]), **chance_metrics(n)})
    return out
