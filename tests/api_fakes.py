"""Small real inputs for the API / index / search / report tests: H.264 videos and a tiny model checkpoint."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from milnce.search.page_load import TINY_MODEL, TINY_PREPROCESS, WORDS  # noqa: F401 (the page's load model)
from milnce.search.page_load import tiny_search_model as tiny_module  # noqa: F401

VOCAB = list(WORDS)


def write_video(path: Path, seconds: float = 4.0, fps: int = 8, width: int = 48, height: int = 32,
                colour=(200, 30, 30)) -> Path:
    """A moving coloured square on grey, H.264 in mp4."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(seconds * fps)):
            img = np.full((height, width, 3), 90, np.uint8)
            x = (i * 3) % (width - 10)
            img[10:20, x:x + 10] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def grey_ramp_video(path: Path, num_frames: int = 30, fps: int = 10, width: int = 64, height: int = 48,
                    lossless: bool = False) -> Path:
    """Frame k uniformly grey at level 8k mod 256 (x264; lossless: libx264rgb qp 0, so a frame tells its index)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        if lossless:
            stream = out.add_stream("libx264rgb", rate=fps, options={"qp": "0"})
            stream.pix_fmt = "rgb24"
        else:
            stream = out.add_stream("libx264", rate=fps)
            stream.pix_fmt = "yuv420p"
        stream.width, stream.height = width, height
        for k in range(num_frames):
            img = np.full((height, width, 3), (8 * k) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def save_lightning_checkpoint(module, path: Path) -> Path:
    """What Lightning's ModelCheckpoint writes for this module (state_dict, hyper_parameters, version, our meta)."""
    import pytorch_lightning as pl

    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": pl.__version__, "epoch": 0, "global_step": 0}
    module.on_save_checkpoint(ckpt)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path
