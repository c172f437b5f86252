"""Plumbing shared by the evaluators: exact sharding across ranks, gathering, eval mode, text encoding."""
from __future__ import annotations

import contextlib
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch.distributed as dist

from milnce.inference import (embed_windows, encode_texts, eval_mode, module_device,  # noqa: F401 (used as U.*)
                              training_logits)


def rank_and_world() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(indices: Sequence[int], rank: int, world: int) -> List[int]:
    """Round-robin shard without padding: every index on exactly one rank (unlike DistributedSampler)."""
    return list(indices)[rank::world]


def gather_objects(obj: Any) -> List[Any]:
    """all_gather_object across ranks (variable-sized payloads); [obj] in a single process."""
    rank, world = rank_and_world()
    if world == 1:
        return [obj]
    out: List[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def assert_exactly_once(seen: Sequence[int], expected: Sequence[int], what: str) -> None:
    seen_sorted = sorted(seen)
    if seen_sorted != sorted(expected):
        dup = len(seen_sorted) - len(set(seen_sorted))
        lost = len(set(expected) - set(seen_sorted))
        raise RuntimeError(f"{what}: expected each of {len(expected)} items exactly once, got {len(seen_sorted)} "
                           f"({dup} duplicates, {lost} lost)")


@contextlib.contextmanager
def text_max_words(module: Any, max_words: Optional[int]):
    """Temporarily set `module.tokenizer.max_words` (word tokenizers; the eval loaders used 30). Yields the value in
    effect, or None when the tokenizer has no such knob (Hugging Face tokenizers keep their own max_length)."""
    tok = getattr(module, "tokenizer", None)
    if tok is None or not hasattr(tok, "max_words"):
        yield getattr(tok, "max_length", None) if tok is not None else None
        return
    old = tok.max_words
    if max_words is not None:
        tok.max_words = max_words
    try:
        yield tok.max_words
    finally:
        tok.max_words = old


def spread_subset(available: Sequence[int], n: int) -> List[int]:
    """n of `available` spread evenly over it (all of it when n ≤ 0 or n ≥ its length): the evaluators' subsets."""
    available = list(available)
    if n <= 0 or n >= len(available):
        return available
    return [available[j] for j in sorted(set(np.linspace(0, len(available) - 1, n).round().astype(int).tolist()))]
