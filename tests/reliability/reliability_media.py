"""Tiny real videos (PyAV, libx264) and a HowTo100M-layout corpus around them, for the reliability suite.

Every frame is a saturated colour with a white corner block, so a decoded clip can never be mistaken for a black pad.
"""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

import av
import numpy as np
from omegaconf import OmegaConf

from milnce.config import DataConfig


def frame_image(k: int, width: int, height: int) -> np.ndarray:
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = 40 + (k * 37) % 200
    img[..., 1] = 40 + (k * 91) % 200
    img[..., 2] = 160
    img[: max(1, height // 4), : max(1, width // 4)] = 255
    return img


def write_video(path, num_frames=30, fps=10, width=64, height=48, pix_fmt="yuv420p", codec="libx264",
                pts_ms: Optional[Sequence[int]] = None, rotation: Optional[int] = None) -> str:
    gray = pix_fmt == "gray"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = {"g": "10"} if codec == "libx264" else {}
        if pts_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for k in range(num_frames):
            img = frame_image(k, width, height)
            frame = av.VideoFrame.from_ndarray(img[..., 0].copy() if gray else img, "gray" if gray else "rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = int(pts_ms[k]), Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return str(path)


def write_audio_only(path, seconds=2.0) -> str:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        tone = (0.1 * np.sin(np.arange(int(16000 * seconds)) * 0.05)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return str(path)


def write_bad_video(path: Path, case: str, good: str) -> None:
    """The files behind BAD_VIDEO_CASES (`good`: a healthy video to truncate)."""
    if case == "zero_byte":
        path.write_bytes(b"")
    elif case == "truncated":
        data = Path(good).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "not_a_video":
        path.write_text("<html>404 Not Found</html>\n" * 40)
    elif case == "audio_only":
        write_audio_only(path)
    elif case == "missing":
        pass
    else:
        raise KeyError(case)


# case -> (writer kwargs, narration (start, end)); each decodes into a real clip of that video
ODD_VIDEO_CASES: Dict[str, dict] = {
    "single_frame": dict(num_frames=1),
    "shorter_than_clip": dict(num_frames=6),                  # 0.6 s for a 2 s clip: the last frame repeats
    "variable_frame_rate": dict(num_frames=40, pts_ms=np.cumsum([0] + [40, 120] * 19 + [40]).tolist()),
    "rotation_90": dict(rotation=90),
    "odd_size_129x97": dict(width=129, height=97, pix_fmt="yuv444p"),   # 4:2:0 needs even sizes
    "gray": dict(pix_fmt="gray", codec="ffv1", ext="mkv"),
    "yuv444p": dict(pix_fmt="yuv444p"),
    "yuv420p10le": dict(pix_fmt="yuv420p10le"),
}
# each of these is a counted failure, replaced by another video's clip
BAD_VIDEO_CASES = ("zero_byte", "truncated", "not_a_video", "audio_only", "missing", "window_past_the_end")


def write_corpus(root: Path, videos: Dict[str, Optional[dict]], narrations: Optional[Dict[str, list]] = None,
                 num_good: int = 3) -> Dict[str, str]:
    """A HowTo100M-layout corpus: videos/<id>.mp4, howto100m/videos.csv, howto100m/caption.json.

    `videos`: id -> writer kwargs (None: the file is written by the caller). Adds `num_good` healthy videos
    good0..; `narrations`: id -> [(start, end, text), ...] (default: three lines in the first 3 s).
    """
    root = Path(root)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "howto100m").mkdir(parents=True, exist_ok=True)
    all_videos = {f"good{i}": dict(num_frames=40) for i in range(num_good)}
    all_videos.update(videos)
    paths = {}
    for vid, kwargs in all_videos.items():
        kwargs = dict(kwargs) if kwargs is not None else None
        ext = kwargs.pop("ext", "mp4") if kwargs else "mp4"
        paths[vid] = str(root / "videos" / f"{vid}.{ext}")
        if kwargs is not None:
            write_video(paths[vid], **kwargs)
    default = [(0.0, 1.0, "cut the onion"), (1.0, 2.0, "stir the pan"), (2.0, 3.0, "add some salt")]
    captions = {}
    for vid in all_videos:
        rows = (narrations or {}).get(vid, default)
        captions[vid] = {"start": [r[0] for r in rows], "end": [r[1] for r in rows], "text": [r[2] for r in rows]}
    (root / "howto100m" / "caption.json").write_text(json.dumps(captions))
    listed = "".join(f"{Path(p).name}\n" for p in paths.values())
    (root / "howto100m" / "videos.csv").write_text("video_path\n" + listed)
    return paths


def data_config(root, **overrides):
    base = dict(dataset="howto100m", root=str(root), num_candidates=2, min_time=2.0, num_frames=4, fps=2.0,
                resize=32, crop=32, batch_size=2, num_workers=0, backend="pyav", seed=3)
    base.update(overrides)
    return OmegaConf.merge(OmegaConf.structured(DataConfig), base)


def toy_tokenizer(texts: Iterable[str]):
    import torch

    ids = [[sum(map(ord, w)) % 97 + 1 for w in t.split()][:4] for t in texts]
    return {"input_ids": torch.tensor([row + [0] * (4 - len(row)) for row in ids], dtype=torch.long)}


def assert_real_clip(video) -> None:
    """No emitted clip, and no frame of one, is all zeros (a black pad)."""
    frames = video.reshape(-1, *video.shape[-4:]).permute(0, 2, 1, 3, 4)  # (B·C)×T×3×H×W
    per_frame_max = frames.flatten(2).amax(dim=2)
    assert bool((per_frame_max > 0).all()), "an emitted frame is all zeros"
