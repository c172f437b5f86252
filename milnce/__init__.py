"""milnce: video-text representation learning from narrated video (MIL-NCE / HowTo100M)."""
__version__ = "0.1.0"
