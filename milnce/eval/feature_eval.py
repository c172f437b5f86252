"""Text→video retrieval on pre-extracted features (HowTo100M's YouCook2 / MSR-VTT evaluation).

Same protocol machinery as milnce.eval.retrieval_eval.RetrievalEvaluator (exact-once sharding under DDP, original tie
semantics, v2t metrics, chance levels, protocol card, rank histogram), with the video side replaced: an item
[start, end] becomes the concatenation of its feature types, each max-pooled over rows [int(s·rate), int(e·rate)+1)
and L2-normalised (datamodules.feature_store.pool_clip; an item without an end pools the whole video), embedded by
`module.embed_video(B×F float)`. An item whose feature files are absent is listed as missing; one whose files are
unusable or whose span has no rows is listed as failed — never scored with a zero vector.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from milnce.eval import common as U
from datamodules.benchmarks.retrieval_items import RetrievalSet
from datamodules.feature_store import FeatureError, FeatureSource, feature_path, load_video_features, pool_clip
from milnce.eval.retrieval_eval import RetrievalEvaluator, RetrievalResult  # noqa: F401 (result type re-exported)


def with_feature_paths(dataset: RetrievalSet, sources: Sequence[FeatureSource]) -> RetrievalSet:
    """The same items, `path` = the first source's feature file when every source has the video, else None."""
    items = []
    for it in dataset.items:
        paths = [feature_path(s, it.video_id) for s in sources]
        items.append(replace(it, path=str(paths[0]) if all(p.is_file() for p in paths) else None))
    return RetrievalSet(name=dataset.name, source=dataset.source,
                        video_root=", ".join(s.dir for s in sources), items=items, captions=dataset.captions,
                        split=dataset.split)


class FeatureRetrievalEvaluator(RetrievalEvaluator):
    def __init__(self, dataset: RetrievalSet, sources: Sequence[FeatureSource], normalize: bool = False,
                 max_words: Optional[int] = 30, batch_size: int = 256, out_dir: Optional[str] = None,
                 progress: bool = True, captions: str = "one", dual_softmax: bool = False,
                 dual_softmax_temperature: Optional[float] = None):
        super().__init__(with_feature_paths(dataset, sources), normalize=normalize, max_words=max_words,
                         batch_size=batch_size, num_workers=0, out_dir=out_dir, progress=progress,
                         captions=captions, dual_softmax=dual_softmax,
                         dual_softmax_temperature=dual_softmax_temperature)
        self.sources = list(sources)
        self._pooled: Dict[int, np.ndarray] = {}   # use_cache: pooled features per item

    def _pool_items(self, indices: List[int], use_cache: bool, show: bool):
        """(indices pooled, F-vectors, failed [(index, message)]) — each video's files read once."""
        got, vecs, failed = [], [], []
        by_video: Dict[str, List[int]] = {}
        for i in indices:
            if use_cache and i in self._pooled:
                got.append(i)
                vecs.append(self._pooled[i])
            else:
                by_video.setdefault(self.dataset.items[i].video_id, []).append(i)
        bar = tqdm(total=len(indices) - len(got), desc=f"eval {self.dataset.name} (features)", disable=not show,
                   unit="clip")
        for vid, items in by_video.items():
            try:
                arrays, rates = load_video_features(self.sources, vid)
            except FeatureError as err:
                failed += [(i, str(err)) for i in items]
                bar.update(len(items))
                continue
            names = [str(feature_path(s, vid)) for s in self.sources]
            for i in items:
                it = self.dataset.items[i]
                try:
                    v = pool_clip(arrays, rates, it.start, it.end, names)
                except FeatureError as err:
                    failed.append((i, str(err)))
                    continue
                got.append(i)
                vecs.append(v)
                if use_cache:
                    self._pooled[i] = v
            bar.update(len(items))
        bar.close()
        return got, vecs, failed

    def _embed_shard(self, module, indices: List[int], device, show: bool, use_cache: bool) -> Dict[str, Any]:
        got, vecs, failed = self._pool_items(indices, use_cache, show)
        texts = [self.dataset.items[i].text for i in got]
        text_emb = U.encode_texts(module, texts)
        if got:
            x = torch.from_numpy(np.stack(vecs))
            video_emb = torch.cat([module.embed_video(chunk.to(device)).float().cpu()
                                   for chunk in x.split(self.batch_size)]).numpy()
        else:
            video_emb = np.zeros((0, text_emb.shape[-1]), np.float32)
        return {"indices": got, "video": video_emb, "text": text_emb, "failed": failed, "padded": 0}

    def _card(self, n_eval, n_requested, failed, padded, max_words, ties, is_subset) -> Dict[str, Any]:
        ds = self.dataset
        return {
            "dataset": ds.name, "annotations": ds.source, "video_root": ds.video_root, "input": "features",
            "n_evaluated": n_eval, "n_listed": len(ds), "n_requested": n_requested, "subset": is_subset,
            "n_missing": len(ds.missing), "missing_list": None,
            "missing": [f"{it.key} {it.video_id}" for it in ds.missing[:20]], "n_failed": len(failed),
            "failed": [f"{ds.items[i].key} {ds.items[i].video_id}: {e}" for i, e in failed[:20]],
            "feature_sources": [{"dir": s.dir, "rate": s.rate if s.rate is not None else "sidecar"}
                                for s in self.sources],
            "clip_pooling": "per source: max over rows [int(start*rate), int(end*rate)+1), L2-normalised; "
                            "concatenated (HowTo100M); no end = every row",
            "normalize": self.normalize, "score": "dot",
            "ties": ties, "text_max_words": max_words, "ranks": "0-based; MedR = median + 1; ties as compute_metrics",
        }
