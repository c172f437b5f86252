"""Words of a narration as the MIL-NCE word tower sees them, and the vocabulary of a corpus.

A sentence becomes str(sentence), optionally lower-cased, split with the regex [\\w']+ ("don't" stays one word,
punctuation is dropped). The data layer builds vocabularies with it; milnce.text.word_tokenizer maps the words to ids.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, List, Mapping

WORD_PATTERN = re.compile(r"[\w']+")


def split_words(text, lowercase: bool = True) -> List[str]:
    text = str(text)
    if lowercase:
        text = text.lower()
    return WORD_PATTERN.findall(text)


def build_vocab(texts: Iterable[str], min_count: int = 1, lowercase: bool = True) -> List[str]:
    """Every word seen at least min_count times in texts (split as the word tower splits them), sorted."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(split_words(text, lowercase))
    return vocabulary_from_counts(counts, min_count)


def vocabulary_from_counts(counts: Mapping[str, int], min_count: int = 1) -> List[str]:
    """The words counted at least min_count times, sorted (build_vocab's last step, for counts kept elsewhere)."""
    return sorted(word for word, n in counts.items() if n >= min_count)
