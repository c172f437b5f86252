"""HowTo100M-style pretraining data: one narration per video per epoch, its bag of K neighbours, its clip.

Per sample, as MIL-NCE's HT100M_DataLoader (PROTOCOLS.md Part A §5): draw a narration uniformly, take the K
consecutive narrations nearest in time as the bag, widen the narration's own window to min_time, seek a random
integer second inside it, decode num_frames at fps, random-crop and flip. Unlike the original, a clip that fails to
decode is replaced by another video's clip and counted (never a black clip), and all randomness is seeded from
(seed, epoch, item) so epochs are reproducible and resumable.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.base import TrainingDataModule
from datamodules.epoch_sampler import split_sample_index, with_replacement
from datamodules.narrations.bags import NarrationIndex, NoClipFits, TrainingClipSampler, build_index_from_captions
from datamodules.narrations.retimed import filtered_captions
from datamodules.narrations.readers import read_video_list
from datamodules.video.decode import DecodeError
from datamodules.video.transforms import random_crop_flip

log = logging.getLogger(__name__)


class NarratedClips(Dataset):
    """One item per video per epoch: `clips_per_video` clips, each with its bag of K narrations."""

    def __init__(self, index: NarrationIndex, clips, tokenizer: Callable, sampler: TrainingClipSampler,
                 num_frames: int, fps: float, crop: int, flip: bool, seed: int, max_tries: int = 20):
        self.index = index
        self.clips = clips
        self.tokenizer = tokenizer
        self.sampler = sampler
        self.num_frames = int(num_frames)
        self.fps = float(fps)
        self.crop = int(crop)
        self.flip = bool(flip)
        self.seed = int(seed)
        self.max_tries = int(max_tries)

    def __len__(self) -> int:
        return len(self.index)

    def _decode(self, video: int, rng: np.random.Generator):
        samples = self.sampler.sample_clips(video, rng)
        frames = [self.clips.clip(video, s.seek, self.num_frames, self.fps) for s in samples]
        return samples, frames

    def __getitem__(self, sample: int) -> Dict[str, Any]:
        epoch, item = split_sample_index(sample, len(self))
        rng = np.random.default_rng([self.seed, epoch, item])
        video, (samples, frames), failed = with_replacement(
            item, len(self), rng, lambda v, _: self._decode(v, rng), (DecodeError, NoClipFits), self.max_tries,
            lambda v, err: f"{self.clips.paths[v]}: {err}")
        return narrated_item(samples, frames, video, sample, failed, self.tokenizer, self.crop, self.flip, rng)


def narrated_item(samples, frames, video: int, sample: int, failed, tokenizer: Callable, crop: int, flip: bool,
                  rng: np.random.Generator) -> Dict[str, Any]:
    """One training item from its drawn clips (ClipSample list) and their decoded frames: cropped/flipped video,
    tokenised bags, and the failure report the FailureBudget reads."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    tokens = [tokenizer(s.texts) for s in samples]
    out = {
        "video": torch.stack([random_crop_flip(f, crop, generator=gen, flip=flip) for f in frames]),
        "text": torch.stack([t["input_ids"] for t in tokens]),
        "video_index": torch.full((len(samples),), video, dtype=torch.long),
        "sample": int(sample),          # the sampler's (epoch, item) code: audits of what an epoch saw
        "failures": len(failed),
        "failed": "\n".join(failed),
    }
    if "attention_mask" in tokens[0]:
        out["text_mask"] = torch.stack([t["attention_mask"] for t in tokens])
    return out


class HowTo100MDataModule(TrainingDataModule):
    """Narrated-video pretraining (HowTo100M layout). `data_cfg` follows milnce.config.DataConfig."""

    def __init__(self, data_cfg: Any, tokenizer: Optional[Callable] = None, progress: bool = True,
                 strict_captions: bool = False):
        super().__init__(data_cfg, tokenizer, progress)
        self.strict_captions = strict_captions  # bad caption rows: error (True) or dropped, counted and warned
        root = Path(data_cfg.root)
        self.video_root = Path(data_cfg.video_root) if data_cfg.video_root else root / "videos"
        self.video_list = Path(data_cfg.video_list) if data_cfg.video_list else root / "howto100m" / "videos.csv"
        default = root / "howto100m" / "caption.json"
        self.captions = Path(data_cfg.captions) if data_cfg.captions else default
        self.min_alignability = getattr(data_cfg, "min_alignability", None)
        if self.min_alignability is not None:   # re-timed captions, only the narrations alignable enough
            self.captions = filtered_captions(self.captions, float(self.min_alignability))
        # the corpus' own captions (caption.json or captions/ in root/howto100m) share its index, as before; captions
        # from elsewhere (a re-timed corpus, a filtered copy) get their own beside them and never reuse it
        own = self.min_alignability is None and self.captions.resolve() in (default.resolve(),
                                                                             (default.parent / "captions").resolve())
        self.index_dir = root / "howto100m" / "narration_index" if own else \
            self.captions.parent / f"{self.captions.stem}.narration_index"
        self.index: Optional[NarrationIndex] = None

    # -- corpus -----------------------------------------------------------------------------
    def prepare_data(self) -> None:
        stale = NarrationIndex.exists(self.index_dir) and self.captions.exists() and \
            self.captions.stat().st_mtime > (self.index_dir / "index.json").stat().st_mtime
        if stale:   # the captions were rewritten after the index was built (a re-alignment into the same folder)
            log.warning("%s is newer than its narration index %s: rebuilding the index", self.captions,
                        self.index_dir)
        if stale or not NarrationIndex.exists(self.index_dir):
            build_index_from_captions(self.captions, self.index_dir, strict=self.strict_captions,
                                      progress=self.progress, overwrite=stale)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.index is not None:
            return
        self.prepare_data()
        index = NarrationIndex.open(self.index_dir)
        listed = dict(read_video_list(self.video_list))
        keep = [i for i, vid in enumerate(index.video_ids) if vid in listed]
        missing = len(index) - len(keep)
        if missing:
            log.warning("%d of %d captioned videos are not in %s and are skipped", missing, len(index),
                        self.video_list)
        self.index = index.subset(keep) if missing else index
        self.paths = [str(self.video_root / listed[vid]) for vid in self.index.video_ids]

    def vocabulary_texts(self):
        return (t for i in range(len(self.index)) for t in self.index.texts(i))

    # -- loaders ----------------------------------------------------------------------------
    def build_dataset(self) -> NarratedClips:
        c, spec = self.cfg, self.clip_spec
        sampler = TrainingClipSampler.from_data_config(self.index, c, spec.seconds)
        return NarratedClips(self.index, self.clip_source(self.paths), self.tokenizer, sampler, spec.num_frames,
                             spec.fps, spec.crop, c.random_flip, c.seed)
