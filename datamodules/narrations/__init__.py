"""Narrations: caption readers, the memory-mapped narration index, the bag of K neighbours and the clip window.

`datamodules.narrations.nearest_candidates` and `clip_window` are the contract names (DESIGN.md).
"""
from datamodules.narrations.bags import clip_window, nearest_candidates  # noqa: F401
