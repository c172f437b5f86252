"""Video: the reader contract, frame-exact clip decoding over PyAV/decord, re-encoding, transforms, clip sources.

`datamodules.video.read_clip` and `datamodules.video.DecodeError` are the contract names (DESIGN.md).
"""
from datamodules.video.decode import DecodeError, read_clip  # noqa: F401
