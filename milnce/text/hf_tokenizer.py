"""Hugging Face tokenizer for the transformers text tower, run in the data workers.

Every sentence becomes exactly `max_length` ids (padded and truncated), so the K candidate narrations of a clip and
the clips of a batch stack into B×K×L tensors in the DataLoader. The object pickles as (name, max_length) and loads
the tokenizer again on first use in each worker process, offline.
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence

import torch

from milnce.text.model_lookup import load_offline

# The fast tokenizer's own thread pool clashes with DataLoader worker processes forked after it ran.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class HFTokenizer:
    """HFTokenizer(name_or_path, max_length)(list[str]) → {"input_ids": N×L long, "attention_mask": N×L long}."""

    def __init__(self, name_or_path: str, max_length: int = 32):
        if max_length < 2:
            raise ValueError(f"HFTokenizer: max_length must be at least 2 (special tokens), got {max_length}")
        self.name_or_path = name_or_path
        self.max_length = int(max_length)
        self._tokenizer = None
        self._load()  # fail at construction, not in a worker, when the model is missing

    def _load(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer  # ~2 s to import: only when a Hugging Face tokenizer is used

            self._tokenizer = load_offline(AutoTokenizer, self.name_or_path, "tokenizer")
        return self._tokenizer

    @property
    def pad_token_id(self) -> int:
        return int(self._load().pad_token_id)

    @property
    def vocab_size(self) -> int:
        return len(self._load())

    def __call__(self, texts: Sequence[str]) -> Dict[str, torch.Tensor]:
        if isinstance(texts, str):
            raise TypeError("HFTokenizer takes a list of sentences, got a single string")
        if len(texts) == 0:
            empty = torch.zeros(0, self.max_length, dtype=torch.long)
            return {"input_ids": empty, "attention_mask": empty.clone()}
        encoded = self._load()([str(text) for text in texts], padding="max_length", truncation=True,
                               max_length=self.max_length, return_attention_mask=True,
                               return_token_type_ids=False, return_tensors="pt")
        return {"input_ids": encoded["input_ids"].long(), "attention_mask": encoded["attention_mask"].long()}

    def __getstate__(self) -> dict:
        return {"name_or_path": self.name_or_path, "max_length": self.max_length}

    def __setstate__(self, state: dict) -> None:
        self.name_or_path = state["name_or_path"]
        self.max_length = state["max_length"]
        self._tokenizer = None

    def __repr__(self) -> str:
        return f"HFTokenizer({self.name_or_path!r}, max_length={self.max_length})"

    def decode(self, input_ids: List[int]) -> str:
        return self._load().decode(input_ids, skip_special_tokens=True)
