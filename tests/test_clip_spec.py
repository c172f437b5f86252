"""ClipSpec: one value for what a clip is, from the config to the decoder, the evaluators and the checkpoint."""
import av
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from api_fakes import TINY_MODEL
from datamodules.video.clip_spec import ClipSpec
from datamodules.video.decode import read_clip
from milnce.config import DataConfig
from milnce.module import VideoTextModule


def test_from_data_config_and_seconds():
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), {"fps": 5.0, "num_frames": 8, "resize": 48, "crop": 40})
    spec = ClipSpec.from_data_config(cfg)
    assert spec == ClipSpec(5.0, 8, 48, 40) and spec.seconds == 1.6 and spec.sampling == "exact"


def test_dict_round_trip_and_errors_name_the_key():
    spec = ClipSpec(10.0, 32, 224, 224, "ffmpeg")
    assert ClipSpec.from_dict(spec.as_dict()) == spec
    assert ClipSpec.from_dict({"fps": 10, "num_frames": 32, "resize": 224, "crop": 224}).sampling == "exact"
    with pytest.raises(KeyError, match="model.ckpt: no crop"):
        ClipSpec.from_dict({"fps": 10, "num_frames": 32, "resize": 224}, where="model.ckpt")
    with pytest.raises(KeyError, match="unknown keys \\['size'\\]"):
        ClipSpec.from_dict({"fps": 10, "num_frames": 32, "resize": 224, "crop": 224, "size": 1})
    for bad in [dict(fps=0.0), dict(num_frames=0), dict(crop=0), dict(sampling="nearest")]:
        with pytest.raises(ValueError):
            ClipSpec(**{**dict(fps=5.0, num_frames=8, resize=48, crop=48), **bad})


def test_module_carries_its_spec_into_the_checkpoint_dict():
    spec = ClipSpec(5.0, 8, 48, 48)
    module = VideoTextModule(TINY_MODEL, vocab=["a", "b"], preprocess=spec.as_dict())
    assert module.clip_spec == spec
    assert module.hparams["preprocess"] == spec.as_dict()


def test_read_is_read_clip_with_the_spec(tmp_path):
    path = tmp_path / "v.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(30):
            img = np.full((48, 64, 3), i * 8, np.uint8)
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(s.encode(None))
    spec = ClipSpec(5.0, 4, 24, 24)
    clip = spec.read(path, 1.0)
    assert clip.shape == (4, 24, 32, 3) and clip.dtype == torch.uint8
    assert torch.equal(clip, read_clip(path, 1.0, 4, 5.0, 24))
