"""The MIL-NCE word tower (S3D_HowTo100M `Sentence_Embedding`) and its vocabulary / embedding-matrix files.

ids → word_embd (300-d) → fc1 (2048) → ReLU → max over all positions → fc2 (512). Padding positions are not
masked: the id-0 row goes through fc1 + ReLU and takes part in the max, exactly as the original.
Parameter names (word_embd, fc1, fc2) are the `text_module.*` keys of the released checkpoint.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from milnce.text.word_tokenizer import WordTokenizer, build_vocab

PathLike = Union[str, Path]


class SentenceEmbedding(nn.Module):
    """forward(input_ids N×L) → N×embd_dim; tokenize(list[str]) → LongTensor N×max_words.

    num_embeddings: rows of the embedding table (released model: 66,250); None = len(vocab) + 1.
    embedding_weights: optional num_embeddings×word_embedding_dim matrix (e.g. word2vec.pth) to start from.
    freeze_embedding: keep word_embd fixed (MIL-NCE trains with a frozen GoogleNews matrix).
    """

    def __init__(self, vocab: Sequence[str], num_embeddings: Optional[int] = 66250, embd_dim: int = 512,
                 word_embedding_dim: int = 300, output_dim: int = 2048, max_words: int = 16,
                 lowercase: bool = True, freeze_embedding: bool = False,
                 embedding_weights: Optional[torch.Tensor] = None):
        super().__init__()
        if vocab is None:
            raise ValueError("SentenceEmbedding: a vocabulary is required (e.g. load_vocab('s3d_dict.npy'))")
        vocab = [str(w) for w in vocab]
        if num_embeddings is None:
            num_embeddings = len(vocab) + 1
        if len(vocab) > num_embeddings - 1:
            raise ValueError(
                f"SentenceEmbedding: the vocabulary has {len(vocab)} words but the embedding table has "
                f"{num_embeddings} rows (ids 1..{num_embeddings - 1}, 0 = padding); "
                f"use num_embeddings ≥ {len(vocab) + 1} or the vocabulary the checkpoint was trained with")
        self.tokenizer = WordTokenizer(vocab, max_words=max_words, lowercase=lowercase)
        self.num_embeddings = int(num_embeddings)
        self.max_words = int(max_words)
        self.word_embd = nn.Embedding(num_embeddings, word_embedding_dim)
        self.fc1 = nn.Linear(word_embedding_dim, output_dim)
        self.fc2 = nn.Linear(output_dim, embd_dim)
        if embedding_weights is not None:
            weights = torch.as_tensor(embedding_weights, dtype=torch.float32)
            if tuple(weights.shape) != (num_embeddings, word_embedding_dim):
                raise ValueError(
                    f"SentenceEmbedding: embedding_weights has shape {tuple(weights.shape)}, expected "
                    f"({num_embeddings}, {word_embedding_dim}) (num_embeddings × word_embedding_dim)")
            with torch.no_grad():
                self.word_embd.weight.copy_(weights)
        self.word_embd.weight.requires_grad_(not freeze_embedding)

    @property
    def vocab(self) -> List[str]:
        return self.tokenizer.vocab

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(texts)["input_ids"]

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """attention_mask is accepted for the common text-tower signature and ignored (padding takes part in
        the max, as the original)."""
        if input_ids.dim() != 2:
            raise ValueError(f"SentenceEmbedding expects input_ids N×L, got shape {tuple(input_ids.shape)}")
        if input_ids.device.type == "cpu" and input_ids.numel():
            low, high = int(input_ids.min()), int(input_ids.max())
            if low < 0 or high >= self.num_embeddings:
                raise ValueError(f"SentenceEmbedding: token ids must lie in [0, {self.num_embeddings - 1}], "
                                 f"got values in [{low}, {high}]")
        x = torch.relu(self.fc1(self.word_embd(input_ids)))
        return self.fc2(x.max(dim=1).values)


# ---------------------------------------------------------------- vocabulary and embedding files
def load_vocab(path: PathLike) -> List[str]:
    """A word list: a .npy array of words (s3d_dict.npy, MIL-NCE dict.npy) or a .txt file with one word a line.

    Object-dtype .npy files are unpickled with a loader that only admits numpy arrays of plain strings, so a
    vocabulary file can never run code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary file not found: {path}")
    if path.suffix == ".npy":
        words = _read_npy_words(path)
    elif path.suffix == ".txt":
        words = _read_txt_words(path)
    else:
        raise ValueError(f"{path}: unsupported vocabulary format (expected .npy or .txt)")
    if not words:
        raise ValueError(f"{path}: the vocabulary is empty")
    return words


def _read_txt_words(path: Path) -> List[str]:
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    words = []
    for number, line in enumerate(lines, start=1):
        word = line.rstrip("\r")
        if not word.strip():
            raise ValueError(f"{path}, line {number}: empty word (one word a line; positions are token ids)")
        words.append(word)
    return words


class _ArrayOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a vocabulary file")


def _read_npy_words(path: Path) -> List[str]:
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            _, _, dtype = header(f)
        except ValueError as e:
            raise ValueError(f"{path}: not a .npy file ({e})") from e
        if dtype.hasobject:
            try:
                array = _ArrayOnlyUnpickler(io.BytesIO(f.read())).load()
            except Exception as e:  # any corrupt or hostile pickle
                raise ValueError(f"{path}: cannot read the word array ({e})") from e
        else:
            array = None
    if array is None:
        array = np.load(path, allow_pickle=False)
    if not isinstance(array, np.ndarray) or array.ndim != 1:
        raise ValueError(f"{path}: expected a 1-D array of words, got {type(array).__name__} "
                         f"{getattr(array, 'shape', '')}")
    words = []
    for i, word in enumerate(array.tolist()):
        if isinstance(word, bytes):
            word = word.decode("utf-8")
        if not isinstance(word, str):
            raise ValueError(f"{path}: entry {i} is {type(word).__name__}, not a word")
        words.append(word)
    return words


def load_embedding_weights(path: PathLike) -> torch.Tensor:
    """A word-embedding matrix (rows = token ids, row 0 = padding) from a .pth tensor or a .npy array."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embedding matrix not found: {path}")
    try:
        if path.suffix == ".npy":
            weights = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: cannot read the embedding matrix ({e})") from e
    if not isinstance(weights, torch.Tensor) or weights.dim() != 2:
        raise ValueError(f"{path}: expected a 2-D tensor (num_embeddings × dim), got "
                         f"{type(weights).__name__} {tuple(getattr(weights, 'shape', ()))}")
    return weights.float()


def build_embedding_matrix(vocab: Sequence[str], vectors: Dict[str, np.ndarray] | object) -> torch.Tensor:
    """(len(vocab)+1)×dim matrix: row i+1 = vectors[vocab[i]], row 0 = zeros (padding).

    vectors: anything indexable by word with a `vector_size` (gensim KeyedVectors) or a dict of arrays.
    """
    if not vocab:
        raise ValueError("build_embedding_matrix: the vocabulary is empty")
    dim = getattr(vectors, "vector_size", None) or len(np.asarray(vectors[vocab[0]]))
    matrix = np.zeros((len(vocab) + 1, dim), dtype=np.float32)
    for i, word in enumerate(vocab):
        matrix[i + 1] = np.asarray(vectors[word], dtype=np.float32)
    return torch.from_numpy(matrix)


def word2vec_vocabulary(texts: Iterable[str], vectors, min_count: int = 1,
                        lowercase: bool = True) -> Tuple[List[str], torch.Tensor, int]:
    """The corpus words (seen ≥ min_count times) that have a vector, sorted, with their embedding matrix.

    Returns (vocab, (len(vocab)+1)×dim matrix with row 0 = zeros, number of corpus words without a vector).
    """
    seen = build_vocab(texts, min_count=min_count, lowercase=lowercase)
    vocab = [w for w in seen if w in vectors]
    if not vocab:
        raise ValueError(f"none of the {len(seen)} corpus words has a word2vec vector")
    return vocab, build_embedding_matrix(vocab, vectors), len(seen) - len(vocab)


def save_vocab(path: PathLike, words: Sequence[str]) -> None:
    """A .npy array of words (unicode dtype: readable without pickle), as s3d_dict.npy."""
    np.save(Path(path), np.array([str(w) for w in words], dtype=str), allow_pickle=False)
