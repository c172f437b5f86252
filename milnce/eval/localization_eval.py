"""CrossTask zero-shot step localization (PROTOCOLS Part B §1): per-second scores → DP → Zhukov recall.

Per video: T = ceil(duration) seconds; second t gets one window of `num_frames` frames at fps = num_frames /
window_seconds whose frame timestamps are centred on t + 0.5 (rounded to the frame grid, shifted inside the video;
a video shorter than one window repeats its last frame). The video is decoded once at that fps (whole with
read_video when T ≤ chunk_seconds, else in chunks with read_clip), centre-cropped, and the windows are sliced from the
decoded frames and embedded in batches. scores = window embeddings · step-text embeddings (T×K; `logits="model"`:
the logits the model's loss uses, L2-normalised and over its temperature where it has them); the configured cost
(−log_softmax over steps by default) goes to align_steps; recall as Zhukov. The other cost and the per-step argmax
are reported as ablations from the same scores.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from milnce.eval import common as U
from datamodules.benchmarks.crosstask import CrossTaskRelease, CrossTaskVideo, read_assignment
from milnce.eval.localization import (InfeasibleAlignment, align_steps, argmax_steps, chance_recall, crosstask_recall,
                                 step_costs)
from milnce.eval.plots import plot_step_scores
from datamodules.atomic import atomic_write
from datamodules.video.clip_spec import ClipSpec
from datamodules.video.decode import DecodeError, probe, read_clip, read_video
from datamodules.video.transforms import center_crop

log = logging.getLogger(__name__)
COSTS = ("log_softmax", "similarity")
LOGITS = ("dot", "model")
IO_KEYS = ("read_clip", "read_video", "probe", "center_crop", "decode_error")


class VideoUnavailable(Exception):
    """The video could not be probed or decoded: it is reported as failed and left out of the recall."""


class StepLocalizationResult(NamedTuple):
    metrics: Dict[str, float]
    card: Dict[str, Any]
    videos: Dict[str, Dict[str, Dict[str, np.ndarray]]]   # {task: {vid: {scores, y_true, y_pred}}}


def _default_io():
    return {"read_clip": read_clip, "read_video": read_video, "probe": probe, "center_crop": center_crop,
            "decode_error": DecodeError}


class StepLocalizationEvaluator:
    def __init__(self, release: CrossTaskRelease, window_seconds: float = 3.2, num_frames: int = 16, size: int = 224,
                 cost: str = "log_softmax", inference: str = "dp", use_split: bool = True, split_seed: int = 0,
                 train_videos_per_task: int = 30, logits: str = "dot", chunk_seconds: int = 60, window_batch: int = 32,
                 out_dir: Optional[str] = None, num_plots: int = 4, plot_seed: int = 0, progress: bool = True,
                 io: Optional[Dict[str, Any]] = None):
        if cost not in COSTS:
            raise ValueError(f"unknown cost '{cost}' (valid: {', '.join(COSTS)})")
        if inference not in ("dp", "argmax"):
            raise ValueError(f"unknown inference '{inference}' (valid: dp, argmax)")
        if logits not in LOGITS:
            raise ValueError(f"unknown logits '{logits}' (valid: {', '.join(LOGITS)})")
        self.logits = logits
        self.release = release
        self.window_seconds, self.num_frames, self.size = float(window_seconds), int(num_frames), int(size)
        self.fps = self.num_frames / self.window_seconds
        self.clip_spec = ClipSpec(self.fps, self.num_frames, self.size, self.size)
        self.cost, self.inference = cost, inference
        self.chunk_seconds, self.window_batch = int(chunk_seconds), int(window_batch)
        self.out_dir = Path(out_dir) if out_dir else None
        self.num_plots, self.plot_seed, self.progress = num_plots, plot_seed, progress
        io = dict(io or {})
        if not all(k in io for k in IO_KEYS):   # decoder functions default to datamodules.video.decode / transforms
            io = {**_default_io(), **io}
        self.io = io
        self.videos, self.split_info = release.evaluation_videos(use_split, train_videos_per_task, split_seed)

    def subset_indices(self, n: int) -> List[int]:
        """n videos spread evenly over the (task-ordered) evaluation list; all when n ≤ 0 or n ≥ len."""
        return U.spread_subset(range(len(self.videos)), n)

    # ------------------------------------------------------------------ per video
    def window_frame_starts(self, T: int, n_frames: int) -> np.ndarray:
        """First frame of each second's window: frames sit at i/fps, so the window's mean timestamp is t + 0.5 up to
        rounding to the frame grid; clipped into [0, n_frames − num_frames]."""
        a = np.floor((np.arange(T) + 0.5) * self.fps - (self.num_frames - 1) / 2 + 0.5).astype(np.int64)
        return np.clip(a, 0, max(0, n_frames - self.num_frames))

    def _decode(self, path: str, T: int, s0: int, s1: int, first_frame: int, last_frame: int) -> torch.Tensor:
        """Frames [first_frame, last_frame) at self.fps, centre-cropped to 3×n×S×S; VideoUnavailable on decode errors."""
        try:
            if s0 == 0 and s1 == T:
                frames = self.io["read_video"](path, self.fps, self.size)[first_frame:]
            else:
                frames = self.io["read_clip"](path, first_frame / self.fps, last_frame - first_frame, self.fps,
                                              self.size)
        except self.io["decode_error"] as err:
            raise VideoUnavailable(f"decode failed from {first_frame / self.fps:.2f}s: {err}") from None
        if frames.shape[0] == 0:
            raise VideoUnavailable(f"no frames decoded from {first_frame / self.fps:.2f}s")
        return self.io["center_crop"](frames, self.size)

    def _window_embeddings(self, module, path: str, T: int, device) -> np.ndarray:
        nf = self.num_frames
        wanted = self.window_frame_starts(T, 1 << 40)          # unclipped at the end: the decoder tells us where it is
        out = []
        for s0 in range(0, T, self.chunk_seconds):
            s1 = min(T, s0 + self.chunk_seconds)
            lo, hi = int(wanted[s0]), int(wanted[s1 - 1]) + nf
            crop = self._decode(path, T, s0, s1, lo, hi)           # 3×n×S×S
            if crop.shape[1] < nf:                              # shorter than one window: repeat the last frame
                crop = torch.cat([crop, crop[:, -1:].expand(-1, nf - crop.shape[1], -1, -1)], dim=1)
            local = np.clip(wanted[s0:s1] - lo, 0, crop.shape[1] - nf)
            for g in range(0, len(local), self.window_batch):
                windows = torch.stack([crop[:, i:i + nf] for i in local[g:g + self.window_batch]])
                out.append(U.embed_windows(module, windows, self.window_batch, device))
        return torch.cat(out).numpy()

    def _score_video(self, module, video: CrossTaskVideo, device, text_cache: Dict[str, np.ndarray]) -> Dict:
        task = self.release.tasks[video.task_id]
        try:
            duration = float(self.io["probe"](video.path).duration)
        except (self.io["decode_error"], OSError, ValueError, RuntimeError) as err:
            raise VideoUnavailable(f"probe failed: {type(err).__name__}: {err}") from None
        if not duration > 0:
            raise VideoUnavailable(f"probed duration is {duration}")
        T = int(math.ceil(duration))
        y_true = read_assignment(video.annotation, T, task.n_steps)
        if video.task_id not in text_cache:
            text_cache[video.task_id] = U.encode_texts(module, list(task.steps))
        v = self._window_embeddings(module, video.path, T, device)
        text = text_cache[video.task_id]
        scores = U.training_logits(module, v, text) if self.logits == "model" else v @ text.T
        return {"task": video.task_id, "vid": video.video_id, "scores": scores,
                "y_true": y_true, "duration": duration}

    # ------------------------------------------------------------------ protocol
    def _predict(self, scores: np.ndarray, cost: str, counts: Dict[str, int]) -> np.ndarray:
        T, K = scores.shape
        if T == K:
            counts["t_equals_k"] += 1
        try:
            return align_steps(step_costs(scores, cost))
        except InfeasibleAlignment:
            counts["t_less_than_k"] += 1
            return np.zeros((T, K), dtype=np.uint8)   # dp.pyx's answer: nothing predicted, steps still counted

    def evaluate(self, module, indices: Optional[Sequence[int]] = None) -> StepLocalizationResult:
        wanted = list(range(len(self.videos)) if indices is None else indices)
        rank, world = U.rank_and_world()
        device = U.module_device(module)
        mine = U.shard(wanted, rank, world)
        done, failed, text_cache = [], [], {}
        with U.eval_mode(module):
            for i in tqdm(mine, desc="eval crosstask", unit="video", disable=not (self.progress and rank == 0)):
                try:
                    rec = self._score_video(module, self.videos[i], device, text_cache)
                except VideoUnavailable as err:    # model errors and malformed annotations propagate
                    failed.append((i, str(err)))
                    continue
                rec["index"] = i
                done.append(rec)
        parts = U.gather_objects({"done": done, "failed": failed})
        done = sorted((r for p in parts for r in p["done"]), key=lambda r: r["index"])
        failed = sorted((f for p in parts for f in p["failed"]), key=lambda f: f[0])
        U.assert_exactly_once([r["index"] for r in done] + [f[0] for f in failed], wanted, "crosstask evaluation")

        counts = {"t_equals_k": 0, "t_less_than_k": 0}
        y_true: Dict[str, Dict[str, np.ndarray]] = {}
        preds: Dict[str, Dict[str, Dict[str, np.ndarray]]] = {"main": {}, "log_softmax": {}, "similarity": {},
                                                              "argmax": {}}
        videos: Dict[str, Dict[str, Dict[str, np.ndarray]]] = {}
        for r in done:
            t, v, s = r["task"], r["vid"], r["scores"]
            y_true.setdefault(t, {})[v] = r["y_true"]
            for cost in COSTS:
                c = counts if cost == self.cost else {"t_equals_k": 0, "t_less_than_k": 0}
                preds[cost].setdefault(t, {})[v] = self._predict(s, cost, c)
            preds["argmax"].setdefault(t, {})[v] = argmax_steps(s)
            main = preds["argmax" if self.inference == "argmax" else self.cost][t][v]
            preds["main"].setdefault(t, {})[v] = main
            videos.setdefault(t, {})[v] = {"scores": s, "y_true": r["y_true"], "y_pred": main}
        if not done:
            raise RuntimeError(f"crosstask: no video could be evaluated ({len(failed)} failed of {len(wanted)})")
        main = crosstask_recall(y_true, preds["main"])
        chance = chance_recall(y_true, self.inference)
        metrics = {"recall": main["recall"], "recall_per_video": main["recall_per_video"],
                   "chance/recall": chance["recall"], "chance/recall_per_video": chance["recall_per_video"],
                   "recall_dp_log_softmax": crosstask_recall(y_true, preds["log_softmax"])["recall"],
                   "recall_dp_similarity": crosstask_recall(y_true, preds["similarity"])["recall"],
                   "recall_argmax": crosstask_recall(y_true, preds["argmax"])["recall"],
                   "chance/recall_argmax": chance_recall(y_true, "argmax")["recall"],
                   "chance/recall_dp_similarity": chance_recall(y_true, "dp")["recall"],
                   "n_videos": float(len(done)), "n_tasks": float(len(main["per_task"]))}
        card = self._card(main, counts, failed, len(wanted), indices is not None)
        if rank == 0 and self.out_dir is not None:
            self._write(card, videos)
        return StepLocalizationResult(metrics, card, videos)

    def _card(self, main, counts, failed, n_requested, is_subset) -> Dict[str, Any]:
        per_task = {}
        for t, c in self.split_info["per_task"].items():
            r = main["per_task"].get(t, {})
            per_task[t] = {**c, "evaluated": int(r.get("videos", 0)), "recall": r.get("recall"),
                           "recall_per_video": r.get("recall_per_video"), "title": self.release.tasks[t].title}
        return {
            "dataset": "crosstask", "root": str(self.release.root), "videos_dir": str(self.release.videos_dir),
            "split": (f"seed {self.split_info['seed']}, {self.split_info['n_train']} train videos per primary task "
                      f"with more than that, val excluded (VideoCLIP)") if self.split_info["use_split"]
            else "all annotated non-val primary videos",
            "n_listed": len(self.videos), "n_requested": n_requested, "subset": is_subset,
            "n_evaluated": int(sum(r["videos"] for r in main["per_task"].values())), "n_failed": len(failed),
            "failed": [f"{self.videos[i].task_id}_{self.videos[i].video_id}: {e}" for i, e in failed[:20]],
            "n_missing_videos": len(self.split_info["missing"]), "val_excluded": self.split_info["val_excluded"],
            "per_task": per_task, "seconds": "T = ceil(duration), one frame per second",
            "window_seconds": self.window_seconds, "frames": self.num_frames, "fps": self.fps, "size": self.size,
            "clip": self.clip_spec.as_dict(),
            "window": "centred on t + 0.5 s, frame grid, shifted inside the video",
            "crop": "centre square of the short side, resized to size",
            "query": "raw step string from tasks_primary.txt (no prompt)",
            "score": "dot" if self.logits == "dot" else "the model's training logits (normalised / temperature "
                                                         "as its loss)",
            "cost": f"-{self.cost}" if self.cost == "similarity" else "-log_softmax over steps",
            "inference": "ordered one-frame-per-step DP (Zhukov)" if self.inference == "dp" else "per-step argmax",
            "recall": "Zhukov: hits/annotated steps pooled per task, mean over tasks",
            "chance": "analytic expectation under uniformly random predictions of the same form",
            "videos_t_equals_k": counts["t_equals_k"], "videos_t_less_than_k_empty_prediction": counts["t_less_than_k"],
        }

    def _write(self, card, videos) -> None:
        out = self.out_dir
        out.mkdir(parents=True, exist_ok=True)
        if self.split_info["missing"]:
            path = out / "crosstask_missing.csv"
            atomic_write(path, "".join(f"{t},{v}\n" for t, v in self.split_info["missing"]))
            card["missing_list"] = str(path)
        flat = sorted((t, v) for t, vs in videos.items() for v in vs)
        if self.num_plots > 0 and flat:
            pick = np.random.RandomState(self.plot_seed).choice(len(flat), min(self.num_plots, len(flat)), replace=False)
            card["plots"] = []
            for j in sorted(pick):
                t, v = flat[j]
                rec = videos[t][v]
                card["plots"].append(str(plot_step_scores(
                    rec["scores"], rec["y_true"], rec["y_pred"], self.release.tasks[t].steps,
                    out / "crosstask" / f"{t}_{v}.png", title=f"{self.release.tasks[t].title} ({v})",
                    y_argmax=argmax_steps(rec["scores"]))))
        atomic_write(out / "crosstask_card.json", json.dumps(card, indent=2, default=float))
