"""The MIL-NCE word tower, its tokenizer, vocabulary files and tools/build_word2vec.py."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REFERENCE
from milnce.text.word_tokenizer import WordTokenizer, build_vocab
from milnce.towers.word2vec import (SentenceEmbedding, build_embedding_matrix, load_embedding_weights,
                                    load_vocab, save_vocab)

ROOT = Path(__file__).resolve().parents[1]
VOCAB = ["hello", "world", "don't", "cut", "the", "onion", "Knife"]


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parameters_match_the_released_text_module():
    reference = []
    for line in (REFERENCE / "s3d_howto100m_state_dict.txt").read_text().splitlines():
        key, shape = line.split()
        if key.startswith("text_module."):
            reference.append((key[len("text_module."):], [int(d) for d in shape.strip("[]").split(",")]))
    tower = SentenceEmbedding([f"w{i}" for i in range(66249)])
    assert [(k, list(v.shape)) for k, v in tower.state_dict().items()] == reference
    assert sum(p.numel() for p in tower.parameters()) == 21_540_536
    assert tower.word_embd.weight.requires_grad


def test_vocabulary_size_is_checked():
    with pytest.raises(ValueError, match="66250 rows"):
        SentenceEmbedding([f"w{i}" for i in range(66250)])
    assert SentenceEmbedding(VOCAB, num_embeddings=None).word_embd.num_embeddings == len(VOCAB) + 1
    assert SentenceEmbedding(VOCAB, num_embeddings=8).word_embd.num_embeddings == 8


@pytest.mark.parametrize("text, ids", [
    ("Hello World", [1, 2]),                       # lower-cased
    ("don't cut", [3, 4]),                         # apostrophes stay inside a word
    ("Cut, the... onion!", [4, 5, 6]),             # punctuation dropped
    ("cut the red onion", [4, 5, 6]),              # out-of-vocabulary word dropped, no UNK
    ("", []),                                      # nothing → all padding
    ("?!", []),
    ("knife", []),                                 # lower-cased text cannot match a capitalised entry
])
def test_tokenization(text, ids):
    tokenizer = WordTokenizer(VOCAB, max_words=5)
    row = tokenizer([text])["input_ids"][0]
    assert row.dtype == torch.long and row.shape == (5,)
    assert row.tolist() == ids + [0] * (5 - len(ids))


def test_tokenization_truncates_and_batches():
    tokenizer = WordTokenizer(VOCAB, max_words=3)
    out = tokenizer(["hello world the onion cut", "cut"])["input_ids"]
    assert out.tolist() == [[1, 2, 5], [4, 0, 0]]
    assert tokenizer.max_words == 3 and tokenizer.vocab == VOCAB
    assert WordTokenizer(VOCAB, lowercase=False)(["Knife hello Hello"])["input_ids"][0, :2].tolist() == [7, 1]
    assert WordTokenizer(["a", "b", "a"])(["a"])["input_ids"][0, 0].item() == 3  # later duplicate wins
    assert WordTokenizer(["nan"])([float("nan")])["input_ids"][0, 0].item() == 1  # str(sentence), as original
    with pytest.raises(TypeError):
        tokenizer("a single string")


def test_tower_tokenize_delegates():
    tower = SentenceEmbedding(VOCAB, num_embeddings=None, max_words=4)
    assert torch.equal(tower.tokenize(["Hello onion"]), torch.tensor([[1, 6, 0, 0]]))
    assert tower.vocab == VOCAB


def test_forward_takes_the_max_over_padding_too():
    torch.manual_seed(0)
    tower = SentenceEmbedding(VOCAB, num_embeddings=None, embd_dim=6, word_embedding_dim=5, output_dim=7,
                              max_words=4)
    with torch.no_grad():  # make the padding row dominate the max
        tower.word_embd.weight[0] = 10.0
        tower.fc1.weight.abs_()
    ids = tower.tokenize(["hello world", "cut the onion don't"])
    out = tower(ids, attention_mask=(ids > 0).long())  # the mask is ignored, as in the original
    hidden = torch.relu(tower.fc1(tower.word_embd(ids)))
    expected = tower.fc2(hidden.max(dim=1).values)
    torch.testing.assert_close(out, expected)
    masked = tower.fc2(hidden[0, :2].max(dim=0).values)
    assert not torch.allclose(out[0], masked)  # padding changed the first sentence's embedding
    assert out.shape == (2, 6)
    with pytest.raises(ValueError, match="token ids"):
        tower(torch.tensor([[8, 0]]))
    with pytest.raises(ValueError, match="N×L"):
        tower(torch.tensor([1, 2]))


def test_embedding_weights_and_freezing():
    weights = torch.randn(len(VOCAB) + 1, 300)
    tower = SentenceEmbedding(VOCAB, num_embeddings=None, embedding_weights=weights, freeze_embedding=True)
    assert torch.equal(tower.word_embd.weight, weights) and not tower.word_embd.weight.requires_grad
    tower(tower.tokenize(["hello"])).sum().backward()
    assert tower.word_embd.weight.grad is None and tower.fc1.weight.grad is not None
    with pytest.raises(ValueError, match="embedding_weights has shape"):
        SentenceEmbedding(VOCAB, num_embeddings=None, embedding_weights=torch.zeros(3, 300))


class NotAWord:
    pass


def test_load_vocab_formats(tmp_path):
    np.save(tmp_path / "unicode.npy", np.array(VOCAB))
    assert load_vocab(tmp_path / "unicode.npy") == VOCAB
    np.save(tmp_path / "object.npy", np.array(VOCAB, dtype=object), allow_pickle=True)
    assert load_vocab(tmp_path / "object.npy") == VOCAB
    np.save(tmp_path / "bytes.npy", np.array([w.encode() for w in VOCAB]))
    assert load_vocab(tmp_path / "bytes.npy") == VOCAB
    save_vocab(tmp_path / "saved.npy", VOCAB)
    assert np.load(tmp_path / "saved.npy", allow_pickle=False).tolist() == VOCAB
    (tmp_path / "words.txt").write_text("\n".join(VOCAB) + "\n")
    assert load_vocab(tmp_path / "words.txt") == VOCAB


def test_load_vocab_refuses_bad_files(tmp_path):
    np.save(tmp_path / "hostile.npy", np.array([NotAWord()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="hostile.npy.*refusing"):
        load_vocab(tmp_path / "hostile.npy")
    np.save(tmp_path / "numbers.npy", np.array([1, 2]))
    with pytest.raises(ValueError, match="entry 0 is int"):
        load_vocab(tmp_path / "numbers.npy")
    np.save(tmp_path / "matrix.npy", np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="1-D"):
        load_vocab(tmp_path / "matrix.npy")
    (tmp_path / "gap.txt").write_text("a\n\nb\n")
    with pytest.raises(ValueError, match="gap.txt, line 2"):
        load_vocab(tmp_path / "gap.txt")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="junk.npy"):
        load_vocab(tmp_path / "junk.npy")
    with pytest.raises(FileNotFoundError):
        load_vocab(tmp_path / "missing.npy")


def test_build_vocab_is_sorted_and_counts():
    texts = ["Cut the onion", "cut the carrot", "don't cut"]
    assert build_vocab(texts) == ["carrot", "cut", "don't", "onion", "the"]
    assert build_vocab(texts, min_count=2) == ["cut", "the"]


def test_embedding_matrix_and_file_round_trip(tmp_path):
    vectors = {"a": np.ones(3), "b": np.full(3, 2.0)}
    matrix = build_embedding_matrix(["b", "a"], vectors)
    assert matrix.tolist() == [[0, 0, 0], [2, 2, 2], [1, 1, 1]]
    torch.save(matrix, tmp_path / "m.pth")
    assert torch.equal(load_embedding_weights(tmp_path / "m.pth"), matrix)
    np.save(tmp_path / "m.npy", matrix.numpy())
    assert torch.equal(load_embedding_weights(tmp_path / "m.npy"), matrix)


def write_word2vec(path, vectors, binary):
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=4)
    kv.add_vectors(list(vectors), np.array(list(vectors.values()), dtype=np.float32))
    kv.save_word2vec_format(str(path), binary=binary)


@pytest.mark.parametrize("binary", [True, False])
def test_build_word2vec_tool_from_caption_json(tmp_path, binary, capsys):
    vectors = {"cut": [1, 0, 0, 0], "onion": [0, 1, 0, 0], "Knife": [0, 0, 1, 0], "unused": [0, 0, 0, 1]}
    w2v = tmp_path / ("vectors.bin" if binary else "vectors.txt")
    write_word2vec(w2v, vectors, binary)
    captions = {"v1": {"start": [0.0, 2.0], "end": [2.0, 4.0], "text": ["Cut the onion", "knife skills"]},
                "v2": {"start": [1.0], "end": [3.0], "text": ["cut it"]}}
    (tmp_path / "caption.json").write_text(json.dumps(captions))
    out = tmp_path / "w2v"
    tool = load_tool("build_word2vec")
    assert tool.main(["--captions", str(tmp_path / "caption.json"), "--word2vec", str(w2v),
                      "--out", str(out)]) == 0
    vocab = load_vocab(out / "dict.npy")
    assert vocab == ["cut", "onion"]  # "knife" is lower-cased and GoogleNews-style lookup is exact
    matrix = torch.load(out / "word2vec.pth", weights_only=True)
    assert matrix.dtype == torch.float32
    assert matrix.tolist() == [[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]]
    tower = SentenceEmbedding(vocab, num_embeddings=None, word_embedding_dim=4,
                              embedding_weights=load_embedding_weights(out / "word2vec.pth"))
    assert tower.tokenize(["Cut onions onion"])[0, :3].tolist() == [1, 2, 0]
    assert "2 words with a vector" in capsys.readouterr().out


def test_build_word2vec_tool_from_a_csv_column(tmp_path, capsys):
    w2v = tmp_path / "vectors.txt"
    write_word2vec(w2v, {"pour": [1, 1, 1, 1], "water": [2, 2, 2, 2]}, binary=False)
    (tmp_path / "msrvtt.csv").write_text("key,sentence\na,Pour the water\nb,water\n")
    tool = load_tool("build_word2vec")
    args = ["--captions", str(tmp_path / "msrvtt.csv"), "--word2vec", str(w2v), "--out", str(tmp_path / "o")]
    assert tool.main(args) == 2
    assert "no column 'text'" in capsys.readouterr().err
    assert tool.main(args + ["--text-column", "sentence"]) == 0
    assert load_vocab(tmp_path / "o" / "dict.npy") == ["pour", "water"]
    assert tool.main(args[:3] + [str(tmp_path / "absent.bin")] + args[4:]) == 2
