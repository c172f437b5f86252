"""Training on pre-extracted features, as HowTo100M (ICCV'19) did: several clips per video, max-margin's batch.

Per video visit (howto100m/youtube_dataloader.py; PROTOCOLS.md Part A §4.3): draw `clips_per_video` (n_pair)
narrations uniformly with replacement, grow each by merging neighbouring narrations until it lasts ≥ min_time
(datamodules.feature_store.merge_captions), and pool every feature type over the merged span (max over rows
[int(s·rate), int(e·rate)+1), L2-normalised, concatenated). The text of a clip is the merged narrations' texts in
merge order.

Unlike the original, a video whose feature file is missing, unreadable or malformed is replaced by another video and
counted (never a zero vector), and a narration whose span has no feature rows (past the end of the file) is redrawn
and counted. Randomness is seeded from (seed, epoch, item), so epochs are reproducible and resumable.

Batch: video B×C×F float32, text B×C×1×L token ids (K=1), video_index B×C, failures B, failed B strings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.base import TrainingDataModule
from datamodules.epoch_sampler import split_sample_index, with_replacement
from datamodules.feature_store import (FeatureError, FeatureSource, load_video_features, merge_captions,
                                       pool_clip)
from datamodules.feature_store import feature_dim
from datamodules.narrations.bags import NarrationIndex, build_index_from_captions

HOWTO100M_SOURCES = (("features/2d", 1.0), ("features/3d", 1.5))


def feature_sources(data_cfg: Any) -> List[FeatureSource]:
    """data.feature_sources, or the HowTo100M default (<root>/features/2d at 1/s, <root>/features/3d at 1.5/s)."""
    configured = list(getattr(data_cfg, "feature_sources", None) or [])
    if not configured:
        root = Path(data_cfg.root)
        return [FeatureSource(str(root / d), r) for d, r in HOWTO100M_SOURCES]
    out = []
    for i, s in enumerate(configured):
        if not s.dir:
            raise ValueError(f"data.feature_sources[{i}].dir is empty")
        out.append(FeatureSource(str(s.dir), None if s.rate is None else float(s.rate)))
    return out


class FeatureClips(Dataset):
    """One item per video per epoch: `clips_per_video` pooled clips with their merged narration texts."""

    def __init__(self, index: NarrationIndex, sources: Sequence[FeatureSource], tokenizer: Callable,
                 clips_per_video: int, min_time: float, seed: int, max_tries: int = 20, cache: bool = False):
        if clips_per_video < 1:
            raise ValueError(f"data.clips_per_video must be ≥ 1, got {clips_per_video}")
        self.index = index
        self.sources = list(sources)
        self.tokenizer = tokenizer
        self.clips_per_video = int(clips_per_video)
        self.min_time = float(min_time)
        self.seed = int(seed)
        self.max_tries = int(max_tries)
        self.cache: Optional[Dict[int, Tuple[List[np.ndarray], List[float]]]] = {} if cache else None

    def __len__(self) -> int:
        return len(self.index)

    def _features(self, video: int):
        if self.cache is not None and video in self.cache:
            return self.cache[video]
        got = load_video_features(self.sources, self.index.video_ids[video])
        if self.cache is not None:
            self.cache[video] = got
        return got

    def _clip(self, video: int, arrays, rates, starts, ends, rng, failed: List[str]) -> Tuple[np.ndarray, List[int]]:
        names = [f"{s.dir}/{self.index.video_ids[video]}.npy" for s in self.sources]
        for _ in range(self.max_tries):
            row = int(rng.integers(len(starts)))
            first, last, order = merge_captions(starts, ends, row, self.min_time)
            try:
                return pool_clip(arrays, rates, float(starts[first]), float(ends[last]), names), order
            except FeatureError as err:
                failed.append(str(err))
        raise FeatureError(f"{names[0]}: {self.max_tries} narrations in a row fall outside the feature rows")

    def _sample(self, video: int, rng, failed: List[str]):
        arrays, rates = self._features(video)
        starts, ends = self.index.times(video)
        if len(starts) == 0:
            raise FeatureError(f"video {self.index.video_ids[video]!r} has no narrations")
        clips = [self._clip(video, arrays, rates, starts, ends, rng, failed) for _ in range(self.clips_per_video)]
        texts = []
        for _, order in clips:
            lines = self.index.texts(video, order)
            texts.append(" ".join(str(t) for t in lines))
        return np.stack([c for c, _ in clips]), texts

    def __getitem__(self, sample: int) -> Dict[str, Any]:
        epoch, item = split_sample_index(sample, len(self))
        rng = np.random.default_rng([self.seed, epoch, item])
        video, (clips, texts), failed = with_replacement(
            item, len(self), rng, lambda v, failed: self._sample(v, rng, failed), FeatureError, self.max_tries,
            lambda v, err: str(err), what="videos had unusable features")
        tokens = self.tokenizer(texts)
        ids = tokens["input_ids"]
        out = {
            "video": torch.from_numpy(clips),
            "text": ids.reshape(len(texts), 1, ids.shape[-1]),
            "video_index": torch.full((len(texts),), video, dtype=torch.long),
            "failures": len(failed),
            "failed": "\n".join(failed),
        }
        if "attention_mask" in tokens:
            mask = tokens["attention_mask"]
            out["text_mask"] = mask.reshape(len(texts), 1, mask.shape[-1])
        return out


class FeatureDataModule(TrainingDataModule):
    """Narrated videos as pre-extracted features (HowTo100M layout). `data_cfg` follows milnce.config.DataConfig:
    root, captions, feature_sources, clips_per_video, min_time, batch_size, num_workers, cache_in_memory, seed."""

    def __init__(self, data_cfg: Any, tokenizer: Optional[Callable] = None, progress: bool = True):
        super().__init__(data_cfg, tokenizer, progress)
        root = Path(data_cfg.root)
        self.captions = Path(data_cfg.captions) if data_cfg.captions else root / "howto100m" / "caption.json"
        self.index_dir = root / "howto100m" / "narration_index"
        self.sources = feature_sources(data_cfg)
        self.index: Optional[NarrationIndex] = None

    def prepare_data(self) -> None:
        if not NarrationIndex.exists(self.index_dir):
            build_index_from_captions(self.captions, self.index_dir, progress=self.progress)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.index is not None:
            return
        self.prepare_data()
        self.index = NarrationIndex.open(self.index_dir)
        if len(self.index) == 0:
            raise ValueError(f"{self.index_dir}: the narration index has no videos")

    def feature_dim(self) -> int:
        """Concatenated feature size, read off the first video whose files load (for model.gated.input_dim)."""
        self.setup()
        errors = []
        for vid in list(self.index.video_ids)[:20]:
            try:
                return feature_dim(self.sources, vid)
            except FeatureError as err:
                errors.append(str(err))
        raise FeatureError(f"no usable features among the first videos: {errors[:3]}")

    def vocabulary_texts(self):
        return (t for i in range(len(self.index)) for t in self.index.texts(i))

    def build_dataset(self) -> FeatureClips:
        c = self.cfg
        return FeatureClips(self.index, self.sources, self.tokenizer, c.clips_per_video, c.min_time, c.seed,
                            cache=bool(c.cache_in_memory))

    def loader_workers(self) -> int:
        return 0 if self.cfg.cache_in_memory else self.cfg.num_workers

    def train_dataloader(self) -> DataLoader:
        # drop_last (the base's): max-margin's same-video weighting assumes full batches, as the original's fixed mask
        return super().train_dataloader()
