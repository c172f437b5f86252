"""Tokenizers: word-level (word2vec vocabulary) and Hugging Face."""
