"""Extraction as Lightning prediction: a data module of window batches (VideoWindows, split by rank), a module that
embeds them, and a prediction writer that files each finished video into the moment index's shards.

One `trainer.predict` runs it on any accelerator, devices and nodes Lightning supports (DDP included): every rank
decodes its own videos in its DataLoader workers while its model runs, and writes its own shards (shard_r<rank>_…);
the faiss index is built afterwards from all complete shards (milnce.search.faiss_build).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from milnce.api import VideoEmbeddings
from milnce.search.features import write_features
from milnce.search.index import IndexWriter, NonFiniteEmbedding
from milnce.search.windows import VideoWindows
from datamodules.video.base import worker_init
from datamodules.video.clip_spec import ClipSpec


class WindowEncoder(pl.LightningModule):
    """predict_step: a batch of clips → one embedding per window (the mean over its clips), on the CPU."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def predict_step(self, batch: Dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Dict[str, Any]:
        out = {k: batch[k] for k in ("video", "error", "last")}
        if batch["error"]:
            return out
        clips = batch["clips"]
        emb = self.model.embed_video(clips).float()
        out["embeddings"] = emb.reshape(len(batch["starts"]), batch["clips_per_window"], -1).mean(dim=1).cpu()
        out.update({k: batch[k] for k in ("starts", "ends", "duration", "frames")})
        return out


class WindowDataModule(pl.LightningDataModule):
    """The predict loader of one rank: its share of the videos (rank::world_size, read from the trainer)."""

    def __init__(self, videos: Sequence[str], spec: ClipSpec, window: float, stride: float, batch_size: int,
                 decode: str, chunk_seconds: float, num_workers: int):
        super().__init__()
        self.args = dict(videos=list(videos), spec=spec, window=window, stride=stride, batch_size=batch_size,
                         decode=decode, chunk_seconds=chunk_seconds)
        self.num_workers = int(num_workers)

    def predict_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        data = VideoWindows(**self.args, rank=rank, world_size=world)
        return DataLoader(data, batch_size=None, num_workers=self.num_workers,
                          worker_init_fn=worker_init if self.num_workers else None,
                          prefetch_factor=4 if self.num_workers else None)


class IndexPredictionWriter(BasePredictionWriter):
    """Gathers a video's window embeddings batch by batch; once its last batch is in, adds it to this rank's
    IndexWriter (a shard reaches disk every shard_rows rows) or lists it in failed.tsv."""

    def __init__(self, out_dir, settings: Dict[str, Any], shard_rows: int = 50_000,
                 features_dir: Optional[str] = None, failed_before: Sequence[str] = ()):
        super().__init__(write_interval="batch")
        self.out_dir, self.settings, self.shard_rows = Path(out_dir), dict(settings), int(shard_rows)
        self.features_dir = Path(features_dir) if features_dir else None
        self.failed_before = set(failed_before)
        self.writer: Optional[IndexWriter] = None
        self.pending: Dict[str, List[Dict[str, Any]]] = {}
        self.stats = {"encoded": 0, "failed": 0, "windows": 0, "frames": 0.0}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        prefix = "shard" if trainer.world_size == 1 else f"shard_r{trainer.global_rank}"
        self.writer = IndexWriter(self.out_dir, self.settings, shard_rows=self.shard_rows, prefix=prefix,
                                  owns_settings=trainer.global_rank == 0)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        video = prediction["video"]
        if prediction["error"]:
            self.pending.pop(video, None)
            self._failed(video, prediction["error"])
            return
        self.pending.setdefault(video, []).append(prediction)
        if prediction["last"]:
            self._finish(video, self.pending.pop(video))

    def _failed(self, video: str, reason: str) -> None:
        self.stats["failed"] += 1
        if video not in self.failed_before:
            self.writer.add_failed(video, reason)

    def _finish(self, video: str, parts: List[Dict[str, Any]]) -> None:
        starts = torch.cat([p["starts"] for p in parts]).numpy()
        ends = torch.cat([p["ends"] for p in parts]).numpy()
        emb = torch.cat([p["embeddings"] for p in parts]).numpy().astype(np.float32)
        try:
            self.writer.add(video, starts, ends, emb)
        except NonFiniteEmbedding as err:  # a NaN row would poison every search: the video is listed, not indexed
            self._failed(video, str(err))
            return
        self.stats["encoded"] += 1
        self.stats["windows"] += len(starts)
        self.stats["frames"] += sum(p["frames"] for p in parts)
        if self.features_dir is not None:
            extra = {"checkpoint": self.settings.get("checkpoint"), "preprocess": self.settings.get("preprocess")}
            write_features(self.features_dir, VideoEmbeddings(video, starts, ends, emb, float(parts[0]["duration"])),
                           float(self.settings["stride"]), float(self.settings["window"]), extra)

    def on_predict_end(self, trainer, pl_module) -> None:
        self.writer.close()
