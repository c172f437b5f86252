import numpy as np
import pytest
import torch

from api_fakes import TINY_PREPROCESS, VOCAB, save_lightning_checkpoint, tiny_module, write_video
from milnce.api import encode_text, encode_video, load_model, window_grid


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_lightning_checkpoint(tiny_module(), tmp_path_factory.mktemp("ckpt") / "last.ckpt")


def test_window_grid_covers_the_video():
    assert window_grid(5.0, 2.0, 1.0).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert window_grid(5.5, 2.0, 1.0).tolist() == [0.0, 1.0, 2.0, 3.0, 3.5]   # tail window ends at the end
    assert window_grid(1.0, 2.0, 1.0).tolist() == [0.0]                        # shorter than one window
    with pytest.raises(ValueError):
        window_grid(5.0, 0.0, 1.0)


def test_load_lightning_checkpoint_keeps_weights_and_preprocess(ckpt):
    original = tiny_module()
    model = load_model(ckpt)
    assert model.preprocess == TINY_PREPROCESS
    assert not model.training
    for k, v in original.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    text = encode_text(model, ["the red circle spins", "blue square"])
    original.eval()
    with torch.no_grad():
        expected = original.encode_text(["the red circle spins", "blue square"]).numpy()
    np.testing.assert_allclose(text, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError):
        encode_text(model, "one string")


def test_encode_video_windows_match_manual_preprocessing(ckpt, tmp_path):
    from datamodules.video.transforms import center_crop
    from datamodules.video.decode import read_clip

    model = load_model(ckpt)
    video = write_video(tmp_path / "a.mp4", seconds=3.0)
    emb = encode_video(model, video, window=1.0, stride=0.5)
    assert emb.starts.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert emb.ends.tolist() == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert emb.embeddings.shape == (5, 16) and emb.embeddings.dtype == np.float32
    clip = center_crop(read_clip(video, 1.0, 4, 4.0, 32), 32)        # the window at 1.0 s, decoded by hand
    direct = encode_video(model, clip[None])
    np.testing.assert_allclose(emb.embeddings[2], direct[0], rtol=1e-4, atol=1e-5)
    # a 2 s window = two 1 s clips averaged (the retrieval protocol's mean pooling)
    two = encode_video(model, video, window=2.0, stride=1.0)
    c0 = encode_video(model, center_crop(read_clip(video, 0.0, 4, 4.0, 32), 32)[None])
    c1 = encode_video(model, center_crop(read_clip(video, 1.0, 4, 4.0, 32), 32)[None])
    np.testing.assert_allclose(two.embeddings[0], (c0[0] + c1[0]) / 2, rtol=1e-4, atol=1e-5)


def test_unreadable_video_is_a_decode_error_or_skipped(ckpt, tmp_path):
    from datamodules.video.decode import DecodeError

    model = load_model(ckpt)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(DecodeError, match="bad.mp4"):
        encode_video(model, bad)
    good = write_video(tmp_path / "g.mp4", seconds=1.0)
    out = encode_video(model, [bad, good], on_error="skip")
    assert out[0] is None and out[1].embeddings.shape[0] == 1


def test_tensor_input_shape_is_checked(ckpt):
    model = load_model(ckpt)
    with pytest.raises(ValueError, match="B×3×T×H×W"):
        encode_video(model, torch.zeros(4, 32, 32, 3, dtype=torch.uint8))


def test_converted_checkpoint_loads_with_default_preprocess(tmp_path):
    """A file in the released layout (S3D keys at top level, text under text_module.) + a vocabulary list."""
    module = tiny_module(seed=3)
    state = {k[len("video_tower."):]: v for k, v in module.state_dict().items() if k.startswith("video_tower.")}
    state.update({"text_module." + k[len("text_tower."):]: v for k, v in module.state_dict().items()
                  if k.startswith("text_tower.")})
    torch.save(state, tmp_path / "released_like.pth")
    np.save(tmp_path / "dict.npy", np.array(VOCAB))
    model = load_model(tmp_path / "released_like.pth", vocab=tmp_path / "dict.npy", preprocess={"resize": 32,
                                                                                                "crop": 32})
    assert model.preprocess["fps"] == 10.0 and model.preprocess["num_frames"] == 32   # released recipe
    module.eval()
    with torch.no_grad():
        expected = module.encode_text(["the red circle"]).numpy()
    np.testing.assert_allclose(encode_text(model, ["the red circle"]), expected, rtol=1e-5, atol=1e-6)


def test_missing_checkpoint_names_the_file(tmp_path):
    from milnce.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="nope.ckpt"):
        load_model(tmp_path / "nope.ckpt")


def test_milnce_format_checkpoint_with_stored_config(tmp_path):
    """milnce.checkpoint.write_checkpoint files (tools/convert_checkpoint.py) carry model config, vocab, preprocess."""
    from api_fakes import TINY_MODEL
    from milnce.checkpoint import write_checkpoint

    module = tiny_module(seed=5)
    write_checkpoint(tmp_path / "converted.pth", dict(module.state_dict()),
                     {"model": TINY_MODEL, "vocab": VOCAB, "preprocess": TINY_PREPROCESS})
    model = load_model(tmp_path / "converted.pth")
    assert model.preprocess == TINY_PREPROCESS
    module.eval()
    with torch.no_grad():
        expected = module.encode_text(["blue square slides"]).numpy()
    np.testing.assert_allclose(encode_text(model, ["blue square slides"]), expected, rtol=1e-5, atol=1e-6)
