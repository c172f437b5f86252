"""milnce: video-text representation learning from narrated video (MIL-NCE / HowTo100M).

The core sits here (config, api, module, losses, distributed, grad_cache, checkpoint, cli); towers/ and text/ are the
architectures and tokenizers; train/, eval/ and search/ are the wings, one per job; commands/ the command line.
"""
__version__ = "0.1.0"
