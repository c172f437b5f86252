"""data.dataset=shards: HowTo100M-style pretraining read from a shard set (local folder or object-store URL).

Everything but where the bytes come from is the per-file datamodule's (datamodules/howto100m.py): one item per
video per epoch from the resumable, rank-disjoint EpochShardSampler, all randomness of an item from (seed, epoch,
item), the bag of K narrations and the clip window of TrainingClipSampler, crop/flip, and a sample that cannot be
read (corrupt bytes, a failed ranged GET, an undecodable video, no clip fitting) replaced by another one and
reported to the FailureBudget. The shard set's manifest gives the length and the vocabulary without reading the
samples. On a segmented set (`milnce shard --segment-seconds`) an item is still a video: its narrations sample is
read, the clips are drawn exactly as from a whole-video sample, and each clip is decoded from the one segment that
holds it (the manifest's per-video table), its times shifted by the segment's start.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
from torch.utils.data import Dataset

from datamodules.base import TrainingDataModule
from datamodules.epoch_sampler import split_sample_index, with_replacement
from datamodules.howto100m import narrated_item
from datamodules.narrations.bags import NoClipFits, TrainingClipSampler
from datamodules.narrations.words import vocabulary_from_counts
from datamodules.shards.manifest import is_remote, read_manifest
from datamodules.shards.reader import ShardReader, ShardSample
from datamodules.shards.segments import check_overlap, segment_for
from datamodules.video.clip_spec import ClipSpec
from datamodules.video.clip_source import clip_deadline
from datamodules.video.decode import DecodeError, read_clip_bytes


SAMPLER_KEYS = ("num_candidates", "min_time", "window", "fractional_seek", "clips_per_video")


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
    """NarratedClips over a ShardReader: item = sample number in the shard set (segmented sets: video number)."""

    def __init__(self, reader: ShardReader, num_items: int, tokenizer: Callable, spec: ClipSpec, data_cfg: Any,
                 timeout: Optional[float] = None, max_tries: int = 20, manifest: Optional[Dict[str, Any]] = None):
        """`manifest` of a segmented set: item = video number, read through its per-video segment table."""
        self.reader, self.num_items, self.tokenizer, self.spec = reader, int(num_items), tokenizer, spec
        self.segmented = bool(manifest and "segment_seconds" in manifest)
        self.overlap = float(manifest["overlap_seconds"]) if self.segmented else None
        if self.segmented:
            check_overlap(manifest, spec.seconds, reader.url)
            # The per-video segment table as flat arrays (CSR), not the manifest's dicts: at HowTo100M scale those
            # are GBs, and forked workers would copy them page by page as refcounts are touched.
            videos = manifest["videos"]
            self._first_sample = np.array([v["sample"] for v in videos], dtype=np.int64)
            self._video_ids = np.array([v["video_id"] for v in videos])
            self._seg_offsets = np.cumsum([0] + [len(v["segments"]) for v in videos]).astype(np.int64)
            self._seg_start = np.array([g["start"] for v in videos for g in v["segments"]], dtype=np.float64)
            self._seg_duration = np.array([g["duration"] for v in videos for g in v["segments"]], dtype=np.float64)
        c = data_cfg
        # the sampler's settings as plain values: a per-item sampler reads them, not an OmegaConf node
        self.sampler_cfg = SimpleNamespace(**{k: getattr(c, k) for k in SAMPLER_KEYS})
        self.flip, self.seed, self.timeout, self.max_tries = bool(c.random_flip), int(c.seed), timeout, int(max_tries)

    def __len__(self) -> int:
        return self.num_items

    def _name(self, number: int) -> str:
        if not self.segmented:
            return self.reader.name(number)
        return self.reader.name(int(self._first_sample[number]), str(self._video_ids[number]))

    def _segments(self, number: int) -> List[Dict[str, float]]:
        a, b = self._seg_offsets[number], self._seg_offsets[number + 1]
        return [{"start": float(s), "duration": float(d)}
                for s, d in zip(self._seg_start[a:b], self._seg_duration[a:b])]

    def _clip(self, data: bytes, name: str, seek: float):
        return read_clip_bytes(data, name, seek, self.spec.num_frames, self.spec.fps, self.spec.resize or None,
                               timeout=self.timeout, sampling=self.spec.sampling)

    def _decode(self, number: int, rng: np.random.Generator):
        first = int(self._first_sample[number]) if self.segmented else number
        sample = self.reader.read(first)
        if self.segmented and sample.video_id != self._video_ids[number]:
            raise DecodeError(self._name(number), f"holds {sample.video_id!r}, the manifest says "
                                                  f"{str(self._video_ids[number])!r} (set and manifest disagree)")
        sampler = TrainingClipSampler.from_data_config(OneVideoNarrations(sample), self.sampler_cfg,
                                                       self.spec.seconds)
        clips = sampler.sample_clips(0, rng)
        if not self.segmented:
            name = self.reader.name(number, sample.video_id)
            return clips, [self._clip(sample.video, name, c.seek) for c in clips]
        frames, parts, segments = [], {}, self._segments(number)
        for c in clips:
            seg = segment_for(segments, c.seek, self.spec.seconds, self.overlap, self._name(number))
            at = first + 1 + seg
            if at not in parts:
                parts[at] = self.reader.read(at)
            start = segments[seg]["start"]
            frames.append(self._clip(parts[at].video, self.reader.name(at, sample.video_id), c.seek - start))
        return clips, frames

    def __getitem__(self, sample: int) -> Dict[str, Any]:
        epoch, item = split_sample_index(sample, self.num_items)
        rng = np.random.default_rng([self.seed, epoch, item])
        number, (clips, frames), failed = with_replacement(
            item, self.num_items, rng, lambda n, _: self._decode(n, rng), (DecodeError, NoClipFits), self.max_tries,
            lambda n, err: str(err) if isinstance(err, DecodeError) else f"{self._name(n)}: {err}")
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

    def vocabulary(self, min_count: int = 1) -> List[str]:
        """The manifest's word counts (split as the word tower splits) thresholded: nothing is counted again."""
        self.setup()
        return vocabulary_from_counts(self.manifest["words"], min_count)

    def build_dataset(self) -> ShardClips:
        c = self.cfg
        reader = ShardReader(self.url, cache_dir=c.shard_cache)
        return ShardClips(reader, len(self.manifest["videos"]), self.tokenizer, self.clip_spec, c,
                          timeout=clip_deadline(c.decode_timeout), manifest=self.manifest)
