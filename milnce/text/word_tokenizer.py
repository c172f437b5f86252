"""Word-level tokenization of the MIL-NCE text tower (S3D_HowTo100M `Sentence_Embedding`).

A sentence becomes str(sentence), optionally lower-cased, split with the regex [\\w']+ (so "don't" stays one
word and punctuation is dropped); each word maps to its vocabulary position + 1, out-of-vocabulary words are
dropped (there is no UNK), and the ids are truncated or right-padded with 0 to max_words.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch

from datamodules.narrations.words import WORD_PATTERN, build_vocab, split_words  # noqa: F401 (re-exported)

class WordTokenizer:
    """`tokenizer(list[str]) -> {"input_ids": LongTensor N×max_words}` over a fixed word vocabulary.

    vocab: sequence of words; the word at position i gets id i+1 (id 0 is padding). As in the original, when a
    word appears twice the later position wins.
    """

    def __init__(self, vocab: Sequence[str], max_words: int = 16, lowercase: bool = True):
        if max_words < 1:
            raise ValueError(f"WordTokenizer: max_words must be ≥ 1, got {max_words}")
        self.vocab: List[str] = [str(w) for w in vocab]
        self.max_words = int(max_words)
        self.lowercase = bool(lowercase)
        self.word_to_id: Dict[str, int] = {word: i + 1 for i, word in enumerate(self.vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    def ids(self, text) -> List[int]:
        """The in-vocabulary ids of one sentence, before truncation and padding."""
        lookup = self.word_to_id
        return [lookup[w] for w in split_words(text, self.lowercase) if w in lookup]

    def __call__(self, texts: Sequence[str]) -> Dict[str, torch.Tensor]:
        if isinstance(texts, str):
            raise TypeError("WordTokenizer expects a list of sentences, got a single str")
        input_ids = torch.zeros(len(texts), self.max_words, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.ids(text)[: self.max_words]
            if ids:
                input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return {"input_ids": input_ids}
