"""data.dataset=shards: HowTo100M-style pretraining read from a shard set (local folder or object-store URL).

Everything but where the bytes come from is the per-file datamodule's (datamodules/howto100m.py): one item per
video per epoch from the resumable, rank-disjoint EpochShardSampler, all randomness of an item from (seed, epoch,
item), the bag of K narrations and the clip window of TrainingClipSampler, crop/flip, and a sample that cannot be
read (corrupt bytes, a failed ranged GET, an undecodable video, no clip fitting) replaced by another one and
reported to the FailureBudget. The shard set's manifest gives the length and the vocabulary without reading the
samples.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
from torch.utils.data import Dataset

from datamodules.base import TrainingDataModule
from datamodules.epoch_sampler import split_sample_index, with_replacement
from datamodules.howto100m import narrated_item
from datamodules.narrations.bags import NoClipFits, TrainingClipSampler
from datamodules.shards.manifest import is_remote, read_manifest
from datamodules.shards.reader import ShardReader, ShardSample
from datamodules.video.clip_spec import ClipSpec
from datamodules.video.clip_source import clip_deadline
from datamodules.video.decode import DecodeError, read_clip_bytes


class OneVideoNarrations:
    """The narrations of one shard sample, seen as a one-video NarrationIndex (what TrainingClipSampler reads)."""

    def __init__(self, sample: ShardSample):
        self.sample = sample
        self.video_ids = [sample.video_id]

    def __len__(self) -> int:
        return 1

    def times(self, i: int):
        return self.sample.starts, self.sample.ends

    def texts(self, i: int, rows: Optional[Sequence[int]] = None) -> List[str]:
        return list(self.sample.texts) if rows is None else [self.sample.texts[r] for r in rows]

    def duration(self, i: int) -> float:
        return self.sample.duration


class ShardClips(Dataset):
    """NarratedClips over a ShardReader: item = sample number in the shard set."""

    def __init__(self, reader: ShardReader, num_items: int, tokenizer: Callable, spec: ClipSpec, data_cfg: Any,
                 timeout: Optional[float] = None, max_tries: int = 20):
        self.reader, self.num_items, self.tokenizer, self.spec = reader, int(num_items), tokenizer, spec
        c = data_cfg
        self.k, self.min_time, self.clips_per_video = int(c.num_candidates), float(c.min_time), int(c.clips_per_video)
        self.window, self.fractional_seek = str(c.window), bool(c.fractional_seek)
        self.flip, self.seed, self.timeout, self.max_tries = bool(c.random_flip), int(c.seed), timeout, int(max_tries)

    def __len__(self) -> int:
        return self.num_items

    def _decode(self, number: int, rng: np.random.Generator):
        sample = self.reader.read(number)
        sampler = TrainingClipSampler(OneVideoNarrations(sample), self.k, self.min_time, self.spec.seconds,
                                      window=self.window, fractional_seek=self.fractional_seek,
                                      clips_per_video=self.clips_per_video)
        clips = sampler.sample_clips(0, rng)
        name = self.reader.name(number, sample.video_id)
        frames = [read_clip_bytes(sample.video, name, c.seek, self.spec.num_frames, self.spec.fps,
                                  self.spec.resize or None, timeout=self.timeout, sampling=self.spec.sampling)
                  for c in clips]
        return clips, frames

    def __getitem__(self, sample: int) -> Dict[str, Any]:
        epoch, item = split_sample_index(sample, self.num_items)
        rng = np.random.default_rng([self.seed, epoch, item])
        number, (clips, frames), failed = with_replacement(
            item, self.num_items, rng, lambda n, _: self._decode(n, rng), (DecodeError, NoClipFits), self.max_tries,
            lambda n, err: str(err) if isinstance(err, DecodeError) else f"{self.reader.name(n)}: {err}")
        return narrated_item(clips, frames, number, sample, failed, self.tokenizer, self.spec.crop, self.flip, rng)


class ShardsDataModule(TrainingDataModule):
    """`data.shards` (default <data.root>/shards): a folder or URL written by `milnce shard`."""

    def __init__(self, data_cfg: Any, tokenizer: Optional[Callable] = None, progress: bool = True):
        super().__init__(data_cfg, tokenizer, progress)
        url = data_cfg.shards or str(Path(data_cfg.root) / "shards")
        self.url = url if is_remote(url) else str(Path(url))
        self.manifest: Optional[Dict[str, Any]] = None

    def setup(self, stage: Optional[str] = None) -> None:
        if self.manifest is None:
            self.manifest = read_manifest(self.url)

    def vocabulary_texts(self):
        # the manifest's word counts, each word as often as the narrations hold it: build_vocab counts the same
        return (word for word, n in self.manifest["words"].items() for _ in range(int(n)))

    def build_dataset(self) -> ShardClips:
        c = self.cfg
        reader = ShardReader(self.url, cache_dir=c.shard_cache)
        return ShardClips(reader, self.manifest["samples"], self.tokenizer, self.clip_spec, c,
                          timeout=clip_deadline(c.decode_timeout))
