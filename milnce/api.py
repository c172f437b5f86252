"""Use a trained model on your own data: load any checkpoint, encode videos (sliding windows) and texts.

    model = load_model("runs/demo/checkpoints/last.ckpt")
    clips = encode_video(model, ["a.mp4", "b.mp4"], window=2.0, stride=1.0)   # list of VideoEmbeddings
    text = encode_text(model, ["the red circle spins"])                       # N×D
    scores = text @ clips[0].embeddings.T                                     # dot product, as in training

Preprocessing comes from the checkpoint (`module.preprocess` = fps, num_frames, resize, crop), so nobody guesses it:
every window is decoded at `fps` (short side resized to `resize`), centre-cropped to `crop`, `num_frames` frames per
clip. A window longer than one clip (num_frames / fps seconds) is covered by evenly spaced clips whose embeddings are
averaged, as the MIL-NCE retrieval protocol pools its windows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from milnce import inference as U
from milnce.checkpoint import CheckpointError, load_towers, read_state_dict
from milnce.module import VideoTextModule
from milnce.towers.word2vec import load_vocab
from datamodules.video.clip_spec import ClipSpec, KEYS as CLIP_KEYS
from datamodules.video.decode import DecodeError, open_reader, probe
from datamodules.video.transforms import center_crop

PathLike = Union[str, Path]
# The released S3D_HowTo100M model: 32 frames at 10 fps, 224×224 (PROTOCOLS.md, S3D_HowTo100M README).
RELEASED_PREPROCESS = ClipSpec(fps=10.0, num_frames=32, resize=224, crop=224).as_dict()
PREPROCESS_KEYS = CLIP_KEYS


@dataclass
class VideoEmbeddings:
    """Window embeddings of one video: embeddings[i] covers [starts[i], ends[i]) seconds."""
    video: str
    starts: np.ndarray      # W float64
    ends: np.ndarray        # W float64
    embeddings: np.ndarray  # W×D float32
    duration: float


# ----------------------------------------------------------------------------------------------- loading
def load_model(checkpoint: PathLike, device: Union[str, torch.device] = "cpu", vocab: Optional[PathLike] = None,
               preprocess: Optional[Dict[str, Any]] = None):
    """A VideoTextModule in eval mode from any checkpoint the framework reads.

    checkpoint: our Lightning checkpoint (last.ckpt …), a file written by milnce.checkpoint (convert_checkpoint),
    or the released s3d_howto100m.pth (then `vocab` = s3d_dict.npy is needed for text). Every file is read with
    torch.load(weights_only=True). preprocess: override / complete the stored preprocessing (the released file stores
    none: RELEASED_PREPROCESS is used).
    """

    path = Path(checkpoint)
    state, meta = read_state_dict(path)
    words = _read_vocab(vocab) if vocab is not None else None
    if meta["format"] == "lightning":
        raw = torch.load(path, map_location="cpu", weights_only=True)
        hparams = dict(raw.get("hyper_parameters") or {})
        if "model_cfg" not in hparams:
            raise CheckpointError(f"{path}: Lightning checkpoint without hyper_parameters.model_cfg "
                                  f"(not written by milnce.module.VideoTextModule)")
        if words is not None:
            hparams["vocab"] = words
        module = VideoTextModule(**hparams)
        missing, unexpected = module.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise CheckpointError(f"{path}: checkpoint does not fit the model: missing {missing[:10]}, "
                                  f"unexpected {unexpected[:10]}")
    else:
        info = meta["inferred"]
        stored = meta.get("milnce") or {}
        model_cfg = dict(stored.get("model") or {})
        if meta["format"] == "released" or not model_cfg:
            model_cfg = _released_model_cfg(info, state, path)
        model_cfg.setdefault("embed_dim", info.get("embed_dim", 512))
        words = words if words is not None else stored.get("vocab")
        if model_cfg.get("text_tower") == "word2vec" and words is None:
            words = []  # video-only use; encode_text then knows no word
        module = VideoTextModule(model_cfg, vocab=words, preprocess=stored.get("preprocess"))
        load_towers(module.video_tower, module.text_tower if "text_tower" in info or stored else None, state,
                    strict=True)
        if not module.preprocess and meta["format"] in ("released", "milnce_training"):
            module.preprocess = dict(RELEASED_PREPROCESS)
    if preprocess:
        module.preprocess = {**module.preprocess, **preprocess}
    missing_keys = [k for k in PREPROCESS_KEYS if k not in module.preprocess]
    if missing_keys:
        raise CheckpointError(f"{path}: the checkpoint stores no preprocessing for {missing_keys}; pass "
                              f"preprocess={{'fps': …, 'num_frames': …, 'resize': …, 'crop': …}}")
    module.checkpoint_path = str(path.resolve())
    return module.to(device).eval()


def _released_model_cfg(info: Dict[str, Any], state: Dict[str, torch.Tensor], path: Path) -> Dict[str, Any]:
    if info.get("video_tower") != "s3d":
        raise CheckpointError(f"{path}: no S3D weights (video_tower.conv1.conv1.weight) and no stored model config")
    cfg: Dict[str, Any] = {"video_tower": "s3d", "embed_dim": info["embed_dim"],
                           "s3d": {"space_to_depth": bool(info["space_to_depth"]),
                                   "width_mult": info["mixed_5c_channels"] / 1024.0}}
    if info.get("text_tower") == "word2vec":
        cfg["text_tower"] = "word2vec"
        cfg["word2vec"] = {"num_embeddings": info["num_embeddings"], "word_dim": info["word_embedding_dim"]}
        fc1 = state.get("text_tower.fc1.weight")
        if fc1 is not None:
            cfg["word2vec"]["hidden_dim"] = int(fc1.shape[0])
    return cfg


def _read_vocab(path: PathLike) -> List[str]:
    return list(load_vocab(path))


# ----------------------------------------------------------------------------------------------- encoding
@torch.no_grad()
def encode_text(model, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """N texts → N×D float32 (the model's own tokenizer; no normalisation: training scores are dot products)."""
    if isinstance(texts, str):
        raise TypeError("encode_text expects a list of strings, got one string")
    with U.eval_mode(model):
        out = U.encode_texts(model, list(texts), batch_size)
    return out.astype(np.float32, copy=False)


def clip_seconds(model) -> float:
    return model.clip_spec.seconds


def window_grid(duration: float, window: float, stride: float) -> np.ndarray:
    """Window starts 0, stride, 2·stride … for windows inside the video, plus one ending at the video's end when
    the grid leaves a tail uncovered; a video shorter than one window gets the single window [0, duration)."""
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be positive, got window={window}, stride={stride}")
    last = duration - window
    if last <= 1e-6:
        return np.zeros(1)
    starts = np.arange(0.0, last + 1e-6, stride)
    if last - starts[-1] > 1e-3:
        starts = np.append(starts, last)
    return np.round(starts, 6)


@dataclass
class WindowPlan:
    """Where the windows of one video lie and the clips that cover each: clips[i] = clip start times of window i."""
    starts: np.ndarray      # W
    ends: np.ndarray        # W
    clips: np.ndarray       # W×C, C = clips per window (evenly spaced, averaged)
    duration: float


def plan_windows(duration: float, window: float, stride: float, clip: float) -> WindowPlan:
    """The window grid of a video and the C clips of `clip` seconds covering each window (C = 1 when the window is
    one clip long; a longer window gets evenly spaced clips from its start to its end)."""
    starts = window_grid(duration, window, stride)
    span = min(window, duration)
    per_window = max(1, math.ceil(span / clip - 1e-6))
    clips = np.stack([np.linspace(s, max(s, s + span - clip), per_window) for s in starts])
    return WindowPlan(starts, np.minimum(starts + window, duration), clips, float(duration))


@torch.no_grad()
def encode_video(model, videos: Union[PathLike, Sequence[PathLike], torch.Tensor], window: Optional[float] = None,
                 stride: Optional[float] = None, batch_size: int = 16, on_error: str = "raise"):
    """Video embeddings with the checkpoint's preprocessing.

    videos: a uint8 tensor B×3×T×H×W (already decoded and cropped clips) → B×D ndarray; or one path → one
    VideoEmbeddings; or a list of paths → list of VideoEmbeddings (None for an unreadable video when
    on_error="skip"; "raise" raises datamodules.video.decode.DecodeError).
    window / stride: seconds (defaults: one clip, num_frames / fps; stride = window / 2).
    """
    if isinstance(videos, torch.Tensor):
        if videos.dim() != 5 or videos.shape[1] != 3:
            raise ValueError(f"encode_video: a tensor must be B×3×T×H×W, got shape {tuple(videos.shape)}")
        with U.eval_mode(model):
            return U.embed_windows(model, videos, batch_size, U.module_device(model)).numpy()
    if isinstance(videos, (str, Path)):
        return _encode_file(model, videos, window, stride, batch_size)
    out = []
    for path in videos:
        try:
            out.append(_encode_file(model, path, window, stride, batch_size))
        except Exception:
            if on_error != "skip":
                raise
            out.append(None)
    return out


def _encode_file(model, path: PathLike, window: Optional[float], stride: Optional[float],
                 batch_size: int) -> VideoEmbeddings:
    spec = model.clip_spec
    clip = spec.seconds
    window = float(window or clip)
    stride = float(stride or window / 2)
    info = probe(path)
    plan = plan_windows(info.duration, window, stride, clip)
    starts, per_window = plan.starts, plan.clips.shape[1]
    device = U.module_device(model)
    embeddings: List[torch.Tensor] = []
    pending: List[torch.Tensor] = []

    def flush():
        if pending:
            embeddings.append(U.embed_windows(model, torch.stack(pending), batch_size, device))
            pending.clear()

    with U.eval_mode(model):
        try:
            with open_reader(path) as reader:
                for offsets in plan.clips:
                    for o in offsets:
                        frames = reader.clip(float(o), spec.num_frames, spec.fps, spec.resize, spec.sampling)
                        pending.append(center_crop(frames, spec.crop))
                    if len(pending) >= batch_size:
                        flush()
                flush()
        except DecodeError:
            raise
        except Exception as err:  # noqa: BLE001 - every decode failure is a DecodeError naming the file
            raise DecodeError(path, f"{type(err).__name__}: {err}") from err
    emb = torch.cat(embeddings).reshape(len(starts), per_window, -1).mean(dim=1).numpy().astype(np.float32)
    return VideoEmbeddings(str(path), starts.astype(np.float64), plan.ends.astype(np.float64), emb,
                           float(info.duration))

