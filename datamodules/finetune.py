"""Fine-tuning data: YouCook2 training clips and MSR-VTT 9k training videos with their clean captions.

- YouCook2 (`data.dataset=youcook2`): the official `youcookii_annotations_trainval.json`, every annotated segment of
  subset "training" is one item (its own sentence). Videos at <video_root>/training/<recipe_type>/<vid>.{mp4,mkv,webm}.
- MSR-VTT (`data.dataset=msrvtt`): `MSRVTT_data.json` ({"videos": [...], "sentences": [{"video_id", "caption"}]})
  restricted to the videos of the 9k training list (`MSRVTT_train.9k.csv`, column `video_id`); one item per video,
  one of its (20) captions drawn at random each epoch (VideoCLIP's recipe). Videos at <video_root>/<video_id>.mp4.

Paths (a fine-tuning run has no HowTo100M files, so the HowTo100M path keys name the fine-tuning files):
`data.root` is the dataset root; `data.captions` overrides the annotation JSON (default
<root>/youcookii_annotations_trainval.json or <root>/MSRVTT_data.json); `data.video_list` overrides the MSR-VTT training
list (default <root>/MSRVTT_train.9k.csv); `data.video_root` overrides the video root (default <root> for YouCook2,
<root>/videos for MSR-VTT).

Clip sampling: a clip is `num_frames` frames at `fps` (window w = num_frames / fps seconds) whose start is drawn
uniformly in [start, max(start, end - w)] of the segment (MSR-VTT: of the whole video, end = its duration); a
segment shorter than w starts at its start and runs past its end (frames past the end of the video repeat the last
one, as `read_clip` does). The start is continuous unless `data.fractional_seek=false`, which floors it to an integer
second like the HowTo100M loader. Batches have the format of datamodules/howto100m.py (C=1 clip per item, K=1
caption per clip); a clip that fails to decode is replaced by another item's clip and counted, never a black clip;
all randomness comes from (seed, epoch, item), so epochs are reproducible and resumable.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.base import TrainingDataModule
from datamodules.benchmarks.retrieval_items import VideoResolver, read_csv_rows
from datamodules.benchmarks.msrvtt import read_msrvtt_captions
from datamodules.benchmarks.youcook2 import read_youcook2_json
from datamodules.epoch_sampler import split_sample_index, with_replacement
from datamodules.video.decode import DecodeError, probe
from datamodules.video.transforms import random_crop_flip

log = logging.getLogger(__name__)

DATASETS = ("youcook2", "msrvtt")


@dataclass(frozen=True)
class CaptionedSpan:
    """One training item: a span of one video and the captions any of which describes it."""
    video: int                   # index into the datamodule's video paths
    start: float                 # seconds
    end: Optional[float]         # seconds; None = the whole video
    captions: Tuple[str, ...]


def read_youcook2_training(json_path, video_root, split: str = "training"):
    """(spans, paths, missing video ids) of the YouCook2 segments of `split`; videos absent on disk are left out."""

    items = read_youcook2_json(json_path, video_root, split)
    paths: List[str] = []
    index: Dict[str, int] = {}
    spans: List[CaptionedSpan] = []
    missing = sorted({it.video_id for it in items if it.path is None})
    for it in items:
        if it.path is None:
            continue
        if it.video_id not in index:
            index[it.video_id] = len(paths)
            paths.append(it.path)
        spans.append(CaptionedSpan(index[it.video_id], it.start, it.end, (it.text,)))
    return spans, paths, missing


def read_msrvtt_training(json_path, train_list, video_root):
    """(spans, paths, missing video ids) of the MSR-VTT training videos listed in `train_list`, all their captions."""
    json_path, train_list, video_root = Path(json_path), Path(train_list), Path(video_root)
    captions = read_msrvtt_captions(json_path)

    listed: List[str] = []
    for line, row in read_csv_rows(train_list, ("video_id",)):
        vid = row["video_id"].strip()
        if not vid:
            raise ValueError(f"{train_list}:{line}: empty video_id")
        if vid not in captions:
            raise ValueError(f"{train_list}:{line}: video '{vid}' has no captions in {json_path}")
        listed.append(vid)
    if not listed:
        raise ValueError(f"{train_list}: no data rows")

    resolve = VideoResolver()
    spans: List[CaptionedSpan] = []
    paths: List[str] = []
    missing: List[str] = []
    for vid in dict.fromkeys(listed):  # a video listed twice is one item
        path = resolve(video_root, vid)
        if path is None:
            missing.append(vid)
            continue
        spans.append(CaptionedSpan(len(paths), 0.0, None, tuple(captions[vid])))
        paths.append(path)
    return spans, paths, missing


class CaptionedClips(Dataset):
    """One item per span per epoch: one clip at a random start inside the span, one of its captions."""

    def __init__(self, spans: List[CaptionedSpan], clips, tokenizer: Callable, num_frames: int, fps: float,
                 crop: int, flip: bool, seed: int, fractional_seek: bool = True, max_tries: int = 20):
        self.spans = spans
        self.clips = clips
        self.tokenizer = tokenizer
        self.num_frames = int(num_frames)
        self.fps = float(fps)
        self.crop = int(crop)
        self.flip = bool(flip)
        self.seed = int(seed)
        self.fractional_seek = bool(fractional_seek)
        self.max_tries = int(max_tries)
        self._durations: Dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.spans)

    def _duration(self, video: int) -> float:
        known = self.clips.duration(video)
        if known is not None:
            return known
        if video not in self._durations:
            self._durations[video] = probe(self.clips.paths[video]).duration
        return self._durations[video]

    def clip_start(self, span: CaptionedSpan, rng: np.random.Generator) -> float:
        window = self.num_frames / self.fps
        end = self._duration(span.video) if span.end is None else span.end
        if span.end is not None and self.clips.duration(span.video) is not None:
            end = min(end, self.clips.duration(span.video))   # an annotation past the decoded end
        start = span.start + rng.uniform(0.0, max(0.0, end - window - span.start))
        return start if self.fractional_seek else float(math.floor(start))

    def __getitem__(self, sample: int) -> Dict[str, Any]:
        epoch, item = split_sample_index(sample, len(self))
        rng = np.random.default_rng([self.seed, epoch, item])
        item, frames, failed = with_replacement(
            item, len(self), rng,
            lambda i, _: self.clips.clip(self.spans[i].video, self.clip_start(self.spans[i], rng), self.num_frames,
                                         self.fps),
            DecodeError, self.max_tries, lambda i, err: f"{self.clips.paths[self.spans[i].video]}: {err}")
        span = self.spans[item]
        caption = span.captions[int(rng.integers(len(span.captions)))]
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        tokens = self.tokenizer([caption])
        out = {
            "video": random_crop_flip(frames, self.crop, generator=gen, flip=self.flip).unsqueeze(0),
            "text": tokens["input_ids"].unsqueeze(0),                      # C×K×L = 1×1×L
            "video_index": torch.full((1,), span.video, dtype=torch.long),
            "failures": len(failed),
            "failed": "\n".join(failed),
        }
        if "attention_mask" in tokens:
            out["text_mask"] = tokens["attention_mask"].unsqueeze(0)
        return out


class FinetuneDataModule(TrainingDataModule):
    """YouCook2 / MSR-VTT fine-tuning (data.dataset). `data_cfg` follows milnce.config.DataConfig."""

    def __init__(self, data_cfg: Any, tokenizer: Optional[Callable] = None, progress: bool = True):
        if data_cfg.dataset not in DATASETS:
            raise ValueError(f"data.dataset: FinetuneDataModule reads {', '.join(DATASETS)}, "
                             f"got '{data_cfg.dataset}'")
        if data_cfg.num_candidates != 1 or data_cfg.clips_per_video != 1:
            raise ValueError("fine-tuning items are one clip with one caption: data.num_candidates and "
                             f"data.clips_per_video must be 1 (got {data_cfg.num_candidates}, "
                             f"{data_cfg.clips_per_video})")
        super().__init__(data_cfg, tokenizer, progress)
        root = Path(data_cfg.root)
        youcook = data_cfg.dataset == "youcook2"
        default_json = "youcookii_annotations_trainval.json" if youcook else "MSRVTT_data.json"
        self.annotations = Path(data_cfg.captions) if data_cfg.captions else root / default_json
        self.train_list = Path(data_cfg.video_list) if data_cfg.video_list else root / "MSRVTT_train.9k.csv"
        self.video_root = Path(data_cfg.video_root) if data_cfg.video_root else (root if youcook else root / "videos")
        self.spans: Optional[List[CaptionedSpan]] = None
        self.paths: List[str] = []
        self.missing: List[str] = []

    def setup(self, stage: Optional[str] = None) -> None:
        if self.spans is not None:
            return
        if self.cfg.dataset == "youcook2":
            spans, paths, missing = read_youcook2_training(self.annotations, self.video_root)
        else:
            spans, paths, missing = read_msrvtt_training(self.annotations, self.train_list, self.video_root)
        if missing:
            log.warning("%d training videos of %s are not under %s and are skipped (first: %s)", len(missing),
                        self.annotations, self.video_root, missing[:5])
        if not spans:
            raise FileNotFoundError(f"none of the training videos of {self.annotations} is under {self.video_root}")
        self.spans, self.paths, self.missing = spans, paths, missing

    def vocabulary_texts(self):
        return (c for s in self.spans for c in s.captions)

    def build_dataset(self) -> CaptionedClips:
        c, spec = self.cfg, self.clip_spec
        return CaptionedClips(self.spans, self.clip_source(self.paths), self.tokenizer, spec.num_frames, spec.fps,
                              spec.crop, c.random_flip, c.seed, fractional_seek=c.fractional_seek)
