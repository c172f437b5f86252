"""Bad configs and checkpoints where a user meets them: tools/train.py's exit code, model.init_from, resuming.

Config errors exit with status 2 and a message naming the key (and the file); every checkpoint is read with
torch.load(weights_only=True), so a pickle carrying objects is refused; a truncated or foreign checkpoint is a
CheckpointError naming the file or the mismatching keys.
"""
import pickle
from pathlib import Path

import pytest
import torch

from milnce.checkpoint import CheckpointError
from milnce.config import load_config
from reliability_runs import DEMO, tiny_overrides, train_tool

VOCAB = ["cut", "the", "onion", "stir", "pan"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from reliability_runs import shared_tiny_corpus

    return shared_tiny_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def tool():
    return train_tool()


@pytest.mark.parametrize("override,fragment", [
    ("trainer.max_stpes=5", "trainer.max_stpes"),               # mistyped key
    ("optimiser.lr=0.1", "optimiser.lr"),                        # unknown section
    ("trainer.max_steps=many", "trainer.max_steps"),             # wrong type
    ("data.batch_size=[1,2]", "data.batch_size"),                # wrong type (a list)
    ("data.random_flip=perhaps", "data.random_flip"),            # wrong type (not a bool)
    ("trainer.max_steps", "key=value"),                          # not an override
])
def test_bad_override_exits_2_naming_the_key(tool, capsys, override, fragment):
    assert tool.main([DEMO, override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err


@pytest.mark.parametrize("yaml_text,fragment", [
    ("optim:\n  lrr: 0.1\n", "lrr"),
    ("data:\n  batch_size: many\n", "batch_size"),
    ("trainer: [1, 2]\n", "TrainerConfig"),
    ("model: {video_tower: s3d\n", "not valid YAML"),
])
def test_bad_yaml_exits_2_naming_file_and_key(tool, capsys, tmp_path, yaml_text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    assert tool.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and fragment in err


def test_missing_config_file_exits_2(tool, capsys, tmp_path):
    assert tool.main([str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


# -- model.init_from ---------------------------------------------------------------------------------------------
def _cfg(tmp_path, *extra):
    return load_config(DEMO, tiny_overrides(tmp_path / "corpus", tmp_path / "run") + list(extra))


def _module(cfg):
    from milnce.train.run import build_module

    return build_module(cfg, VOCAB)


@pytest.fixture
def other_architecture(tmp_path):
    """A checkpoint of a wider S3D (width 0.25 instead of 0.125)."""
    from milnce.checkpoint import write_checkpoint

    module = _module(_cfg(tmp_path, "model.s3d.width_mult=0.25"))
    path = tmp_path / "wide.pth"
    write_checkpoint(path, module.state_dict(), {"vocab": VOCAB})
    return path


def test_init_from_own_checkpoint_round_trips(tmp_path):
    from milnce.checkpoint import write_checkpoint

    source = _module(_cfg(tmp_path))
    path = tmp_path / "same.pth"
    write_checkpoint(path, source.state_dict(), {"vocab": VOCAB})
    loaded = _module(_cfg(tmp_path, f"model.init_from={path}"))
    for key, value in source.video_tower.state_dict().items():
        assert torch.equal(value, loaded.video_tower.state_dict()[key]), key


def test_init_from_other_architecture_names_the_keys(tmp_path, other_architecture):
    with pytest.raises(CheckpointError) as info:
        _module(_cfg(tmp_path, f"model.init_from={other_architecture}"))
    assert "shape mismatch" in str(info.value) and "video_tower.conv1.conv1.weight" in str(info.value)


def test_init_from_truncated_checkpoint_names_the_file(tmp_path, other_architecture):
    data = other_architecture.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=str(cut)):
        _module(_cfg(tmp_path, f"model.init_from={cut}"))


class Payload:
    """Any picklable object: weights_only loading must refuse to build it."""

    def __reduce__(self):
        return (print, ("this would run code on load",))


@pytest.mark.parametrize("how", ["torch_save_with_object", "plain_pickle"])
def test_init_from_pickled_object_is_refused(tmp_path, capsys, how):
    path = tmp_path / "evil.pth"
    if how == "torch_save_with_object":
        torch.save({"state_dict": {"video_tower.x": torch.zeros(1)}, "extra": Payload()}, path)
    else:
        path.write_bytes(pickle.dumps({"state_dict": Payload()}))
    with pytest.raises(CheckpointError, match=str(path)):
        _module(_cfg(tmp_path, f"model.init_from={path}"))
    assert "would run code" not in capsys.readouterr().out


# -- resuming from a bad last.ckpt --------------------------------------------------------------------------------


def _resume_error(tmp_path, corpus, writer):
    from milnce.train.run import train

    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    writer(last)
    cfg = load_config(DEMO, tiny_overrides(corpus, run_dir, max_steps=2))
    with pytest.raises(CheckpointError) as info:
        train(cfg)
    assert str(last) in str(info.value)
    return str(info.value)


def test_resume_from_truncated_last_ckpt_names_it(tmp_path, corpus):
    def write(path):
        torch.save({"state_dict": {"w": torch.zeros(1000)}, "epoch": 0}, path)
        path.write_bytes(path.read_bytes()[:900])
    assert "truncated" in _resume_error(tmp_path, corpus, write)


def test_resume_from_pickled_object_is_refused(tmp_path, corpus, capsys):
    message = _resume_error(tmp_path, corpus, lambda p: torch.save({"state_dict": {}, "x": Payload()}, p))
    assert "weights_only" in message
    assert "would run code" not in capsys.readouterr().out
