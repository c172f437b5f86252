"""Checkpoint I/O: the released layout, MIL-NCE training checkpoints, our own files, and the errors."""
import importlib.util
from pathlib import Path

import pytest
import torch

from milnce.checkpoint import CheckpointError, load_towers, read_state_dict, write_checkpoint
from milnce.towers.s3d import S3D
from milnce.towers.word2vec import SentenceEmbedding
from conftest import REFERENCE

ROOT = Path(__file__).resolve().parents[1]
VOCAB = [f"w{i}" for i in range(66249)]


def reference_entries():
    entries = []
    for line in (REFERENCE / "s3d_howto100m_state_dict.txt").read_text().splitlines():
        key, shape = line.split()
        entries.append((key, [int(d) for d in shape.strip("[]").split(",") if d]))
    return entries


def fake_released_state(counters=True, seed=0):
    """Random tensors with the released keys and shapes (what s3d_howto100m.pth holds)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in reference_entries():
        if key.endswith("num_batches_tracked"):
            if counters:
                state[key] = torch.tensor(12345)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator)
    return state


def small_state(space_to_depth=True):
    """A narrow S3D + small word tower state in the original (un-prefixed) naming."""
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in S3D(width_mult=0.125, space_to_depth=space_to_depth).state_dict().items()}
    for k, v in SentenceEmbedding(["a", "b"], num_embeddings=None, output_dim=16).state_dict().items():
        state["text_module." + k] = v.clone()
    return state


def small_towers(space_to_depth=True):
    return (S3D(width_mult=0.125, space_to_depth=space_to_depth),
            SentenceEmbedding(["a", "b"], num_embeddings=None, output_dim=16))


@pytest.mark.parametrize("counters", [True, False])
def test_released_file_loads_strictly(tmp_path, counters):
    released = fake_released_state(counters=counters)
    path = tmp_path / "s3d_howto100m.pth"
    torch.save(released, path)
    state, meta = read_state_dict(path)
    assert meta["format"] == "released"
    assert meta["inferred"]["space_to_depth"] is True and meta["inferred"]["num_embeddings"] == 66250
    assert meta["inferred"]["has_bn_counters"] is counters
    assert set(state) == {("text_tower." + k[len("text_module."):]) if k.startswith("text_module.")
                          else "video_tower." + k for k in released}
    video, text = S3D(), SentenceEmbedding(VOCAB)
    load_towers(video, text, state)
    assert torch.equal(video.mixed_4d.conv_b2_b.bn2.running_var, released["mixed_4d.conv_b2_b.bn2.running_var"])
    assert torch.equal(video.fc.weight, released["fc.weight"])
    assert torch.equal(text.word_embd.weight, released["text_module.word_embd.weight"])
    assert int(video.conv1.bn1.num_batches_tracked) == (12345 if counters else 0)


def test_milnce_training_checkpoint_with_module_prefix(tmp_path):
    inner = small_state(space_to_depth=False)
    checkpoint = {"epoch": 7, "state_dict": {"module." + k: v for k, v in inner.items()},
                  "optimizer": {"state": {}, "param_groups": [{"lr": 0.001, "params": [0, 1]}]},
                  "scheduler": {"last_epoch": 3, "base_lrs": [0.001]}}
    path = tmp_path / "epoch0007.pth.tar"
    torch.save(checkpoint, path)
    state, meta = read_state_dict(path)
    assert meta["format"] == "milnce_training" and meta["epoch"] == 7
    assert meta["inferred"]["space_to_depth"] is False
    video, text = small_towers(space_to_depth=False)
    load_towers(video, text, state)
    assert torch.equal(video.mixed_5c.gating_b3.fc.bias, inner["mixed_5c.gating_b3.fc.bias"])
    assert torch.equal(text.fc2.weight, inner["text_module.fc2.weight"])
    with pytest.raises(CheckpointError, match=r"video_tower.conv1.conv1.weight: checkpoint \[8, 3, 3, 7, 7\].*"
                                              r"space_to_depth"):
        load_towers(*small_towers(space_to_depth=True), state)


def test_our_lightning_checkpoint_keeps_other_module_keys(tmp_path):
    video, text = small_towers()
    state = {"video_tower." + k: v for k, v in video.state_dict().items()}
    state.update({"text_tower." + k: v for k, v in text.state_dict().items()})
    state["loss_fn.log_temperature"] = torch.tensor(2.5)
    milnce_meta = {"vocab": ["a", "b"], "model": {"video_tower": "s3d"}}
    torch.save({"epoch": 1, "global_step": 10, "pytorch-lightning_version": "2.6.0", "state_dict": state,
                "hyper_parameters": {"num_candidates": 4}, "milnce": milnce_meta}, tmp_path / "last.ckpt")
    loaded, meta = read_state_dict(tmp_path / "last.ckpt")
    assert meta["format"] == "lightning" and meta["milnce"] == milnce_meta
    assert loaded["loss_fn.log_temperature"].item() == 2.5
    fresh_video, fresh_text = small_towers()
    report = load_towers(fresh_video, fresh_text, loaded)
    assert report["video_tower"]["unexpected"] == [] and report["text_tower"]["missing"] == []
    assert torch.equal(fresh_video.conv1.conv1.weight, video.conv1.conv1.weight)
    only_video = S3D(width_mult=0.125)
    load_towers(only_video, None, loaded)  # a text tower of another kind is left alone


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = small_state()
    del state["mixed_4b.conv_b0.bn1.running_mean"]
    state["mixed_4b.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "odd.pth")
    loaded, _ = read_state_dict(tmp_path / "odd.pth")
    with pytest.raises(CheckpointError) as err:
        load_towers(*small_towers(), loaded)
    assert "missing keys video_tower.mixed_4b.conv_b0.bn1.running_mean" in str(err.value)
    assert "unexpected keys video_tower.mixed_4b.extra.weight" in str(err.value)
    video, text = small_towers()
    report = load_towers(video, text, loaded, strict=False)
    assert report["video_tower"]["missing"] == ["mixed_4b.conv_b0.bn1.running_mean"]
    assert torch.equal(video.fc.weight, state["fc.weight"])


def test_wrong_width_or_table_size_is_a_shape_error(tmp_path):
    torch.save(small_state(), tmp_path / "narrow.pth")
    state, _ = read_state_dict(tmp_path / "narrow.pth")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_towers(S3D(width_mult=0.25), None, state)
    bigger_table = SentenceEmbedding(["a", "b"], num_embeddings=5, output_dim=16)
    with pytest.raises(CheckpointError, match=r"text_tower.word_embd.weight: checkpoint \[3, 300\] vs model "
                                              r"\[5, 300\].*num_embeddings=3"):
        load_towers(None, bigger_table, state)


class Payload:
    pass


def test_unreadable_files_name_the_path(tmp_path):
    good = tmp_path / "good.pth"
    torch.save(small_state(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pth: cannot read checkpoint"):
        read_state_dict(truncated)
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match="notes.txt"):
        read_state_dict(text_file)
    pickled = tmp_path / "object.pth"
    torch.save({"conv1.conv1.weight": Payload()}, pickled)
    with pytest.raises(CheckpointError, match="object.pth: not a plain state dict"):
        read_state_dict(pickled)
    plain = tmp_path / "numbers.pth"
    torch.save({"conv1.conv1.weight": 3}, plain)
    with pytest.raises(CheckpointError, match="numbers.pth: not a state dict.*conv1.conv1.weight"):
        read_state_dict(plain)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(CheckpointError, match="list.pth: expected a dict"):
        read_state_dict(listed)
    with pytest.raises(CheckpointError, match="absent.pth: checkpoint file not found"):
        read_state_dict(tmp_path / "absent.pth")
    assert issubclass(CheckpointError, ValueError)


def test_write_checkpoint_round_trip_is_atomic(tmp_path):
    state = {"video_tower.fc.weight": torch.randn(3, 2)}
    path = tmp_path / "sub" / "ours.pth"
    write_checkpoint(path, state, {"vocab": ["a"], "model": {"s3d": {"space_to_depth": True}}})
    loaded, meta = read_state_dict(path)
    assert meta["format"] == "milnce" and meta["milnce"]["vocab"] == ["a"]
    assert torch.equal(loaded["video_tower.fc.weight"], state["video_tower.fc.weight"])
    assert [p.name for p in path.parent.iterdir()] == ["ours.pth"]
    with pytest.raises(CheckpointError, match=r"meta.model.path is a PosixPath"):
        write_checkpoint(tmp_path / "bad.pth", state, {"model": {"path": Path("x")}})
    assert not (tmp_path / "bad.pth").exists()


def test_convert_tool_on_a_fake_release(tmp_path, capsys):
    import numpy as np

    source = tmp_path / "s3d_howto100m.pth"
    torch.save(fake_released_state(counters=False), source)
    np.save(tmp_path / "s3d_dict.npy", np.array(VOCAB))
    spec = importlib.util.spec_from_file_location("convert_checkpoint", ROOT / "tools" / "convert_checkpoint.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "converted.pth"
    assert tool.main([str(source), "--dict", str(tmp_path / "s3d_dict.npy"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "released checkpoint" in printed and "9,670,800 parameters" in printed and "66,249 words" in printed
    state, meta = read_state_dict(out)
    assert meta["format"] == "milnce" and len(meta["milnce"]["vocab"]) == 66249
    assert meta["milnce"]["model"] == {"video_tower": "s3d", "text_tower": "word2vec",
                                       "s3d": {"space_to_depth": True},
                                       "word2vec": {"num_embeddings": 66250, "max_words": 16}}
    load_towers(S3D(), SentenceEmbedding(meta["milnce"]["vocab"]), state)
    # a vocabulary larger than the table is refused
    np.save(tmp_path / "big.npy", np.array(VOCAB + ["x", "y"]))
    assert tool.main([str(source), "--dict", str(tmp_path / "big.npy"), "-o", str(tmp_path / "x.pth")]) == 2
    assert "66251 words" in capsys.readouterr().err
