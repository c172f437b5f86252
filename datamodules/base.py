"""TrainingDataModule: what the three training datamodules (howto100m, finetune, features) share.

The config and tokenizer, the vocabulary of the training texts, where clips come from (decoded per sample or
cached in RAM, with the configured backend and decode deadline), the resumable epoch sampler and the DataLoader.
A subclass says what its items are: `setup()`, `vocabulary_texts()` and `build_dataset()`.
"""
from __future__ import annotations

import abc
import logging
from functools import cached_property
from typing import Any, Callable, Iterable, List, Optional, Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.epoch_sampler import EpochShardSampler, ResumableEpochs
from datamodules.narrations.words import build_vocab
from datamodules.video.clip_source import FileClips, MemoryClips
from datamodules.video.clip_spec import ClipSpec
from datamodules.video.decode import worker_init

log = logging.getLogger(__name__)


class TrainingDataModule(ResumableEpochs, pl.LightningDataModule, abc.ABC):
    """`data_cfg` follows milnce.config.DataConfig; `tokenizer` is set by the run (module.tokenizer) before fit."""

    def __init__(self, data_cfg: Any, tokenizer: Optional[Callable] = None, progress: bool = True):
        super().__init__()
        self.cfg = data_cfg
        self.tokenizer = tokenizer
        self.progress = progress
        self.dataset: Optional[Dataset] = None
        self.sampler: Optional[EpochShardSampler] = None

    @abc.abstractmethod
    def vocabulary_texts(self) -> Iterable[str]:
        """Every training text (after setup), for a word tower without a pretrained vocabulary."""

    @abc.abstractmethod
    def build_dataset(self) -> Dataset:
        """The training Dataset (after setup); built once, on the first train_dataloader call."""

    @cached_property
    def clip_spec(self) -> ClipSpec:
        """The training clip (data.fps, num_frames, resize, crop): what the datasets decode and the checkpoint stores."""
        return ClipSpec.from_data_config(self.cfg)

    def vocabulary(self, min_count: int = 1) -> List[str]:
        """Words of all training texts seen at least min_count times, sorted (the word tower's vocabulary)."""
        self.setup()
        return build_vocab(self.vocabulary_texts(), min_count=min_count)

    def clip_source(self, paths: Sequence[str]):
        """Clips of `paths`: decoded per sample (data.decode_timeout per clip) or decoded once into RAM."""
        c = self.cfg
        if c.cache_in_memory:
            clips = MemoryClips(paths, c.fps, c.resize, progress=self.progress, backend=c.backend)
            if clips.failed:
                log.warning("%d videos failed to decode and are skipped: %s", len(clips.failed),
                            list(clips.failed)[:5])
            return clips
        return FileClips(paths, c.resize, backend=c.backend, timeout=c.decode_timeout)

    def loader_workers(self) -> int:
        return self.cfg.num_workers  # a corpus cached in RAM is shared with forked workers, not copied

    def train_dataloader(self) -> DataLoader:
        if self.tokenizer is None:
            raise RuntimeError(f"{type(self).__name__} needs a tokenizer (set .tokenizer = module.tokenizer)")
        self.setup()
        c = self.cfg
        if self.dataset is None:
            self.dataset = self.build_dataset()
        self.epoch_sampler(len(self.dataset), c.seed)
        workers = self.loader_workers()
        return DataLoader(self.dataset, batch_size=c.batch_size, sampler=self.sampler, num_workers=workers,
                          drop_last=True, pin_memory=torch.cuda.is_available(),
                          persistent_workers=workers > 0, worker_init_fn=worker_init if workers else None)
