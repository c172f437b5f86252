"""Text→video retrieval evaluation (YouCook2, MSR-VTT) with the MIL-NCE protocol as the default.

Per item: N windows decoded and centre-cropped (datamodules.benchmarks.eval_clips), embedded with `module.embed_video`, pooled
(mean = original | max), optionally L2-normalised together with the text embedding; score = dot product; metrics by
milnce.eval.retrieval (original tie semantics). Decoded frames are streamed through a DataLoader in batches of items and
dropped once embedded; only embeddings are kept. Under DDP each rank evaluates its round-robin shard (no padding) and
the embeddings are gathered; the evaluator checks that every item was seen exactly once.

Protocol variants (options, each recorded in the card; milnce.eval.retrieval_scoring): `captions="all"` ranks every
caption of RetrievalSet.captions (MSR-VTT's 20 per video) against the videos, R@K per caption (text→video only);
`dual_softmax=True` re-weights the similarity by a softmax over the test queries (transductive, never the default).
The split (MSR-VTT 1k-A or the full test split) is the dataset given. `embed` returns the embeddings themselves, so
milnce.eval.protocol_table can score every variant from one encoding pass.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from milnce.eval import common as U
from milnce.eval.plots import plot_rank_histogram
from milnce.eval.retrieval import (chance_metrics, metrics_from_ranks, rank_histogram, retrieval_metrics,
                                  retrieval_ranks, retrieval_ranks_multi)
from milnce.eval.retrieval_scoring import (CAPTIONS, base_similarity, inference_card, ranked_similarity,
                                          resolve_temperature)
from datamodules.atomic import atomic_write
from datamodules.benchmarks.eval_clips import RetrievalClips, collate_windows
from datamodules.benchmarks.retrieval_items import RetrievalSet
from datamodules.video.clip_spec import ClipSpec

POOLINGS = ("mean", "max")


class RetrievalResult(NamedTuple):
    metrics: Dict[str, float]   # R1 R5 R10 MedR MeanR ties N, v2t/…, chance/…
    card: Dict[str, Any]        # every setting that affects the numbers
    ranks: np.ndarray           # text→video 0-based ranks as the original collects them (histogram data)


class Embedded(NamedTuple):
    """The embeddings of one evaluation pass, in item order (rows of video / text / windows ↔ `indices`)."""
    indices: List[int]          # dataset items evaluated, ascending
    video: np.ndarray           # n×D pooled video embeddings
    text: np.ndarray            # n×D embeddings of item.text
    windows: Optional[np.ndarray]  # n×N×D window embeddings before pooling (keep_windows), else None
    failed: List[Any]           # (index, why) of items that could not be decoded
    padded: int                 # windows zero-padded past the end
    n_requested: int            # items asked for, missing videos included
    max_words: Optional[int]    # text length in effect


class RetrievalEvaluator:
    def __init__(self, dataset: RetrievalSet, num_windows: int = 10, num_frames: int = 16, fps: float = 5.0,
                 size: int = 224, pooling: str = "mean", normalize: bool = False, max_words: Optional[int] = 30,
                 batch_size: int = 4, window_batch: int = 32, num_workers: int = 2, out_dir: Optional[str] = None,
                 progress: bool = True, cache_max_bytes: int = 0, sampling: str = "ffmpeg", tail: str = "zeros",
                 clip_kwargs: Optional[Dict[str, Any]] = None, captions: str = "one", dual_softmax: bool = False,
                 dual_softmax_temperature: Optional[float] = None, keep_windows: bool = False):
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling '{pooling}' (valid: {', '.join(POOLINGS)})")
        if captions not in CAPTIONS:
            raise ValueError(f"unknown captions '{captions}' (valid: {', '.join(CAPTIONS)})")
        if captions == "all" and dataset.captions is None:
            raise ValueError(f"captions=all: {dataset.name} ({dataset.source}) has one caption per item; MSR-VTT "
                             f"needs the MSRVTT_data.json captions (eval.retrieval.captions_json)")
        self.captions, self.dual_softmax = captions, bool(dual_softmax)
        self.temperature = resolve_temperature(normalize, dual_softmax_temperature)
        self.keep_windows = keep_windows         # Embedded.windows: pooling variants without re-encoding
        self.dataset = dataset
        self.num_windows, self.num_frames, self.fps, self.size = num_windows, num_frames, fps, size
        self.clip_spec = ClipSpec(float(fps), int(num_frames), int(size), int(size), sampling)
        self.pooling, self.normalize, self.max_words = pooling, normalize, max_words
        self.batch_size, self.window_batch, self.num_workers = batch_size, window_batch, num_workers
        self.out_dir = Path(out_dir) if out_dir else None
        self.progress = progress
        self.cache_max_bytes = cache_max_bytes   # > 0: keep decoded windows in RAM (small subsets during training)
        self._cache: Dict[int, Dict[str, Any]] = {}
        self._cache_bytes = 0
        self.sampling, self.tail = sampling, tail  # see datamodules.benchmarks.eval_clips: defaults reproduce the original
        self.clip_kwargs = clip_kwargs or {}     # read_clip / center_crop / probe / decode_error overrides

    def subset_indices(self, n: int) -> List[int]:
        """n available items spread evenly over the list (all when n ≤ 0 or n ≥ available)."""
        return U.spread_subset(self.dataset.available_indices, n)

    # ------------------------------------------------------------------ decoding
    def _clips(self, indices: List[int]) -> RetrievalClips:
        return RetrievalClips(self.dataset.items, indices, self.num_windows, self.num_frames, self.fps, self.size,
                              sampling=self.sampling, tail=self.tail, **self.clip_kwargs)

    def _batches(self, indices: List[int], use_cache: bool):
        if not use_cache:
            cached, todo = [], list(indices)
        else:
            cached = [i for i in indices if i in self._cache]
            todo = [i for i in indices if i not in self._cache]
        for k in range(0, len(cached), self.batch_size):
            yield collate_windows([self._cache[i] for i in cached[k:k + self.batch_size]])
        if not todo:
            return
        loader = DataLoader(self._clips(todo), batch_size=self.batch_size, shuffle=False, drop_last=False,
                            num_workers=self.num_workers, collate_fn=collate_windows)
        for batch in loader:
            if use_cache and self.cache_max_bytes > 0:
                self._store(batch)
            yield batch

    def _store(self, batch) -> None:
        for j, index in enumerate(batch["index"].tolist()):
            video = batch["video"][j]
            if self._cache_bytes + video.numel() > self.cache_max_bytes:
                return
            self._cache[index] = {"index": index, "video": video.clone(), "text": batch["text"][j],
                                  "padded": batch["padded"][j], "error": None}
            self._cache_bytes += video.numel()
        for index, error in batch["failed"]:
            self._cache[index] = {"index": index, "video": None, "text": None, "padded": 0, "error": error}

    # ------------------------------------------------------------------ embedding
    def _pool(self, emb: torch.Tensor) -> torch.Tensor:  # B×N×D → B×D
        return emb.mean(dim=1) if self.pooling == "mean" else emb.amax(dim=1)

    def _embed_shard(self, module, indices: List[int], device, show: bool, use_cache: bool) -> Dict[str, Any]:
        got, vids, wins, texts, failed, padded = [], [], [], [], [], 0
        bar = tqdm(total=len(indices), desc=f"eval {self.dataset.name}", disable=not show, unit="clip")
        for batch in self._batches(indices, use_cache):
            failed += batch["failed"]
            if batch["video"] is not None:
                v = batch["video"]
                B, N = v.shape[:2]
                emb = U.embed_windows(module, v.reshape(B * N, *v.shape[2:]), self.window_batch, device)
                vids.append(self._pool(emb.reshape(B, N, -1)).numpy())
                if self.keep_windows:
                    wins.append(emb.reshape(B, N, -1).numpy())
                got += batch["index"].tolist()
                texts += batch["text"]
                padded += sum(batch["padded"])
            bar.update(len(batch["failed"]) + (0 if batch["video"] is None else len(batch["index"])))
        bar.close()
        text_emb = U.encode_texts(module, texts)
        video_emb = np.concatenate(vids) if vids else np.zeros((0, text_emb.shape[-1]), np.float32)
        return {"indices": got, "video": video_emb, "text": text_emb, "failed": failed, "padded": padded,
                "windows": np.concatenate(wins) if wins else None}

    # ------------------------------------------------------------------ protocol
    def embed(self, module, indices: Optional[Sequence[int]] = None, use_cache: bool = False) -> Embedded:
        """Embed `indices` (default: every listed item whose video exists) on every rank and gather."""
        available = set(self.dataset.available_indices)
        wanted = list(self.dataset.available_indices if indices is None else indices)
        n_requested = len(wanted)
        wanted = [i for i in wanted if i in available]
        rank, world = U.rank_and_world()
        device = U.module_device(module)
        with U.eval_mode(module), U.text_max_words(module, self.max_words) as max_words:
            part = self._embed_shard(module, U.shard(wanted, rank, world), device, self.progress and rank == 0,
                                     use_cache)
        parts = U.gather_objects(part)
        idx = [i for p in parts for i in p["indices"]]
        failed = sorted((f for p in parts for f in p["failed"]), key=lambda f: f[0])
        U.assert_exactly_once(idx + [f[0] for f in failed], wanted, f"{self.dataset.name} evaluation")
        if not idx:
            raise RuntimeError(f"{self.dataset.name}: no item could be evaluated ({len(failed)} failed, "
                               f"{len(self.dataset.missing)} missing videos)")
        order = np.argsort(idx, kind="stable")
        done = [p for p in parts if len(p["indices"])]
        windows = None
        if all(p.get("windows") is not None for p in done):
            windows = np.concatenate([p["windows"] for p in done])[order]
        return Embedded(indices=sorted(idx), video=np.concatenate([p["video"] for p in done])[order],
                        text=np.concatenate([p["text"] for p in done])[order], windows=windows, failed=failed,
                        padded=sum(p["padded"] for p in parts), n_requested=n_requested, max_words=max_words)

    def encode_texts(self, module, texts: Sequence[str]) -> np.ndarray:
        """Text embeddings under the evaluator's settings (eval mode, text max words)."""
        with U.eval_mode(module), U.text_max_words(module, self.max_words):
            return U.encode_texts(module, list(texts))

    def all_captions(self, indices: Sequence[int]):
        """(captions, text_to_video): every caption of the items `indices`, each with its item's row position."""
        texts, owner = [], []
        for row, i in enumerate(indices):
            texts += self.dataset.captions[i]
            owner += [row] * len(self.dataset.captions[i])
        return texts, np.asarray(owner, dtype=np.int64)

    def evaluate(self, module, indices: Optional[Sequence[int]] = None, use_cache: bool = False) -> RetrievalResult:
        """Run the protocol on `indices` (default: every listed item whose video exists).

        use_cache: reuse / keep decoded windows in RAM up to `cache_max_bytes` (for a small subset evaluated often).
        """
        emb = self.embed(module, indices, use_cache)
        inference = "dual_softmax" if self.dual_softmax else "plain"
        if self.captions == "all":
            texts, owner = self.all_captions(emb.indices)
            text = self.encode_texts(module, texts)
        else:
            text, owner = emb.text, None
        base = base_similarity(emb.video, text, self.normalize)        # text × video
        sim = ranked_similarity(base, inference, self.temperature)
        ranks = retrieval_ranks(sim) if owner is None else retrieval_ranks_multi(sim, owner)
        metrics = metrics_from_ranks(ranks, sim.shape[0])
        if owner is None:   # video→text: the same inference with the videos as queries
            v2t = ranked_similarity(base.T, inference, self.temperature)
            metrics.update({f"v2t/{k}": v for k, v in retrieval_metrics(v2t).items() if k not in ("N",)})
        n = sim.shape[1]
        metrics.update(chance_metrics(n))
        card = self._card(n, emb.n_requested, emb.failed, emb.padded, emb.max_words, metrics["ties"],
                          indices is not None)
        card.update(self._variant_card(inference, sim.shape[0]))
        card["rank_histogram"] = rank_histogram(ranks)
        if U.rank_and_world()[0] == 0 and self.out_dir is not None:
            self._write(card, emb.failed, ranks)
        return RetrievalResult(metrics, card, ranks)

    def _variant_card(self, inference: str, n_queries: int) -> Dict[str, Any]:
        out = {"split": self.dataset.split, "captions": self.captions, "n_queries": n_queries,
               "directions": "t2v and v2t" if self.captions == "one" else "t2v only (R@K per caption)"}
        if self.captions == "all":
            out["ground_truth"] = "each caption's own video; every caption of RetrievalSet.captions is a query"
        out.update(inference_card(inference, self.temperature))
        return out

    def _card(self, n_eval, n_requested, failed, padded, max_words, ties, is_subset) -> Dict[str, Any]:
        ds = self.dataset
        return {
            "dataset": ds.name, "annotations": ds.source, "video_root": ds.video_root,
            "n_evaluated": n_eval, "n_listed": len(ds), "n_requested": n_requested, "subset": is_subset,
            "n_missing": len(ds.missing), "missing_list": None,
            "missing": [f"{it.key} {it.video_id}" for it in ds.missing[:20]], "n_failed": len(failed),
            "failed": [f"{ds.items[i].key} {ds.items[i].video_id}: {e}" for i, e in failed[:20]],
            "windows": self.num_windows, "frames": self.num_frames, "fps": self.fps, "size": self.size,
            "window_seconds": self.clip_spec.seconds, "clip": self.clip_spec.as_dict(),
            "window_starts": "linspace(start, max(start, end - window_seconds - 0.4), windows)"
                             + ("; MSR-VTT: start 0, end = probed duration" if ds.name == "msrvtt" else ""),
            "crop": "centre square of the short side, resized to size", "frame_sampling": self.sampling,
            "past_end_frames": self.tail, "zero_padded_windows": padded,
            "pooling": self.pooling, "normalize": self.normalize, "score": "dot",
            "ties": ties, "text_max_words": max_words, "ranks": "0-based; MedR = median + 1; ties as compute_metrics",
        }

    def _write(self, card, failed, ranks) -> None:
        out = self.out_dir
        out.mkdir(parents=True, exist_ok=True)
        name = self.dataset.name
        if self.dataset.missing:
            card["missing_list"] = str(self.dataset.write_missing(out / f"{name}_missing.csv"))
        if failed:
            path = out / f"{name}_failed.txt"
            atomic_write(path, "".join(f"{self.dataset.items[i].key},{self.dataset.items[i].video_id},{e}\n"
                                    for i, e in failed))
            card["failed_list"] = str(path)
        try:
            card["rank_histogram_png"] = str(plot_rank_histogram(ranks, out / f"{name}_ranks.png", title=name))
        except ImportError:  # matplotlib absent: the histogram data is still in the card
            pass
        atomic_write(out / f"{name}_card.json", json.dumps(card, indent=2))
