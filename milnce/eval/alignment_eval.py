"""HTM-Align-style narration-alignment evaluation of a model (offline, and as a callback: callbacks.py).

Per video of the annotation: decode once at the model's clip, embed windows every `stride` seconds (1 s: TAN scores
1 fps features), score every sentence against every window (the model's training logits) and place it:
  global   at its best window in the whole video (TAN's "global");
  window   at its best window within ±radius s of its ASR time (radius 32 = the 64 s window of TAN's long setting).
TAN's windowed protocol runs its model over 64 s windows every 16 s and averages overlapping scores; a dual-encoder
scores each window alone, so the overlap average changes nothing and restricting a sentence's search to a 64 s span
around its ASR time is the same restriction. The ASR time of an alignable sentence is not in the release (its
times are the annotation); like TAN we use a GT-free stand-in, interpolated by sentence order between the
neighbouring non-alignable sentences (which keep their ASR times), unless `asr_captions` gives the real ones.
Metrics (milnce.eval.alignment): R1_global, R1_window, AUC (alignability = the sentence's best score over the video,
TAN's measure for models without an alignability head; milnce.align.scoring), R1_asr (prediction = the ASR time itself; with asr_captions), and
chance/R1 (a uniformly random time). Under DDP each rank takes a round-robin share of the videos; the rows are
gathered and every video is checked to be seen exactly once, as the retrieval evaluator does.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import numpy as np
from torch.utils.data import DataLoader
from tqdm import tqdm

from milnce.align.retime import video_paths
from milnce.align.scoring import SearchSettings, retime
from milnce.align.windows import DecodedVideos, video_scores
from milnce.eval import common as U
from milnce.eval.alignment import alignment_metrics, recall_at_1
from datamodules.atomic import atomic_write
from datamodules.benchmarks.htm_align import HTMAlign, asr_anchor_times
from datamodules.narrations.readers import read_caption_json

# The field's reference points on the real HTM-Align (80 videos), R@1 %: TAN's htm_align/readme.md and the papers.
PUBLISHED_R1 = {
    "MIL-NCE S3D, global (TAN readme)": 28.7,
    "MIL-NCE S3D, 64 s window (TAN readme)": 34.2,
    "TAN, HTM-370K, 64 s window (Han et al., CVPR 2022)": 49.8,
    "NSVA / HowToStep (Li et al., ECCV 2024)": 69.8,
}


class AlignmentResult(NamedTuple):
    metrics: Dict[str, float]
    card: Dict[str, Any]
    rows: Dict[str, Dict[str, np.ndarray]]   # video → per-sentence time_global, time_window, alignability, score


class AlignmentEvaluator:
    def __init__(self, annotation: HTMAlign, video_root: str, radius: float = 32.0, stride: float = 1.0,
                 asr_captions: Optional[str] = None, num_workers: int = 0, out_dir: Optional[str] = None,
                 progress: bool = True, name: str = "htm_align"):
        self.annotation, self.name = annotation, name
        self.video_root = Path(video_root)
        self.radius, self.stride = float(radius), float(stride)
        self.asr_captions = asr_captions
        self.asr = self._read_asr(asr_captions) if asr_captions else {}
        self.num_workers, self.progress = num_workers, progress
        self.out_dir = Path(out_dir) if out_dir else None
        self.video_ids = sorted(annotation.videos)
        self.paths = video_paths(self.video_ids, self.video_root)
        self.missing = [v for v in self.video_ids if v not in self.paths]

    def _read_asr(self, path: str) -> Dict[str, np.ndarray]:
        out = {}
        for vid, starts, ends, _ in read_caption_json(path, self.annotation.videos):
            n = len(self.annotation.videos[vid])
            if len(starts) != n:
                raise ValueError(f"{path}: video '{vid}' has {len(starts)} narrations, the annotation "
                                 f"{self.annotation.source} has {n}: they must be the same sentences in order")
            out[vid] = 0.5 * (np.asarray(starts, np.float64) + np.asarray(ends, np.float64))
        return out

    def subset_indices(self, n: int) -> List[int]:
        return U.spread_subset([i for i, v in enumerate(self.video_ids) if v in self.paths], n)

    def _asr_times(self, vid: str) -> np.ndarray:
        return self.asr[vid] if vid in self.asr else asr_anchor_times(self.annotation.videos[vid])

    def _video_rows(self, module, vid: str, frames) -> Dict[str, np.ndarray]:
        ann = self.annotation.videos[vid]
        scores, windows = video_scores(module, frames, ann.texts, self.stride)
        asr = self._asr_times(vid)
        out = {}
        for key, radius in (("global", None), ("window", self.radius)):
            got = retime(scores, windows.centres, asr, asr, SearchSettings(radius=radius, stride=self.stride),
                         windows.seconds, windows.duration)
            out[f"time_{key}"] = got["pred_time"]
            if key == "global":
                out["alignability"] = got["alignability"]
        out["duration"] = np.full(len(ann), windows.duration)
        return out

    def evaluate(self, module, indices: Optional[Sequence[int]] = None) -> AlignmentResult:
        wanted = [i for i in (range(len(self.video_ids)) if indices is None else indices)
                  if self.video_ids[i] in self.paths]
        rank, world = U.rank_and_world()
        mine = U.shard(wanted, rank, world)
        items = [(self.video_ids[i], self.paths[self.video_ids[i]]) for i in mine]
        loader = DataLoader(DecodedVideos(items, module.clip_spec), batch_size=None, num_workers=self.num_workers)
        rows, failed = {}, {}
        with U.eval_mode(module):
            for item in tqdm(loader, total=len(items), desc=f"eval {self.name}", unit="video",
                             disable=not (self.progress and rank == 0)):
                if item["error"] is not None:
                    failed[item["video_id"]] = item["error"]
                else:
                    rows[item["video_id"]] = self._video_rows(module, item["video_id"], item["frames"])
        parts = U.gather_objects({"rows": rows, "failed": failed})
        rows = {k: v for p in parts for k, v in p["rows"].items()}
        failed = {k: v for p in parts for k, v in p["failed"].items()}
        seen = [self.video_ids.index(v) for p in parts for v in list(p["rows"]) + list(p["failed"])]
        U.assert_exactly_once(seen, wanted, f"{self.name} evaluation")
        if not rows:
            raise RuntimeError(f"{self.name}: no video could be evaluated ({len(failed)} failed, "
                               f"{len(self.missing)} missing under {self.video_root})")
        metrics = self._metrics(rows)
        card = self._card(rows, failed, indices is not None)
        if rank == 0 and self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.out_dir / f"{self.name}_card.json", json.dumps(card, indent=2))
        return AlignmentResult(metrics, card, rows)

    def _metrics(self, rows) -> Dict[str, float]:
        vids = sorted(rows)
        ann = [self.annotation.videos[v] for v in vids]
        cat = lambda key: np.concatenate([rows[v][key] for v in vids])  # noqa: E731
        start, end = np.concatenate([a.start for a in ann]), np.concatenate([a.end for a in ann])
        alignable = np.concatenate([a.alignable for a in ann])
        pred = {"time": cat("time_global"), "alignability": cat("alignability")}
        m = alignment_metrics(pred, start, end, alignable)
        out = {"R1_global": m["R1"], "R1_window": recall_at_1(cat("time_window"), start, end, alignable),
               "AUC": m["AUC"], "N": m["N"], "N_alignable": m["N_alignable"]}
        if self.asr:
            out["R1_asr"] = recall_at_1(np.concatenate([self.asr[v] for v in vids]), start, end, alignable)
        span = np.minimum(np.ceil(end) - np.floor(start), cat("duration")) / np.maximum(cat("duration"), 1e-9)
        out["chance/R1"] = 100.0 * float(span[alignable].mean()) if alignable.any() else float("nan")
        return out

    def _card(self, rows, failed, is_subset) -> Dict[str, Any]:
        return {
            "dataset": self.name, "annotations": self.annotation.source, "video_root": str(self.video_root),
            "n_evaluated": len(rows), "n_listed": len(self.video_ids), "subset": is_subset,
            "n_missing": len(self.missing), "missing": self.missing[:20], "n_failed": len(failed),
            "failed": [f"{v}: {e}" for v, e in list(failed.items())[:20]],
            "sentences": int(sum(len(self.annotation.videos[v]) for v in rows)),
            "stride_seconds": self.stride, "window_radius_seconds": self.radius,
            "window_anchor": "ASR centres from " + self.asr_captions if self.asr_captions else
                             "interpolated between non-alignable sentences' ASR times (GT-free, as TAN)",
            "hit": "floor(start) <= predicted time <= ceil(end), alignable sentences only",
            "alignability": "the sentence's best score over the whole video (TAN's measure without an alignability head)",
            "score": "the model's training logits (normalised / temperature as its loss)",
            "published_r1_htm_align": PUBLISHED_R1,
        }
