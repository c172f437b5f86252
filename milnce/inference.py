"""Running a model for inference: eval mode without gradients, its device, texts and video windows to embeddings.

In the core because the api (encode_text / encode_video), the evaluators and the aligner all run models this way.
"""
from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np
import torch


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module):
    """Eval mode and no grad for the duration; the previous train/eval state is restored afterwards."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was_training)


def module_device(module: Any) -> torch.device:
    dev = getattr(module, "device", None)
    if isinstance(dev, torch.device):
        return dev
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def encode_texts(module: Any, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    chunks = [module.encode_text(list(texts[i:i + batch_size])).float().cpu()
              for i in range(0, len(texts), batch_size)]
    return torch.cat(chunks).numpy()


def embed_windows(module: Any, windows: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """W×3×T×S×S uint8 → W×D float32 on CPU, in chunks of `batch_size` windows."""
    out = [module.embed_video(chunk.to(device, non_blocking=True)).float().cpu()
           for chunk in windows.split(batch_size)]
    return torch.cat(out)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def training_logits(module: Any, video: np.ndarray, text: np.ndarray) -> np.ndarray:
    """video · textᵀ as the model's loss sees it: L2-normalised and divided by the temperature when the loss does
    so (model.loss_args.normalize / temperature), else the raw dot product (the original)."""
    loss = getattr(module, "loss_fn", None)
    if getattr(loss, "normalize", False):
        video, text = l2_normalize(video), l2_normalize(text)
    scores = video @ text.T
    temperature = loss.temperature() if hasattr(loss, "temperature") else None
    if temperature is not None:
        scores = scores / float(temperature.detach() if torch.is_tensor(temperature) else temperature)
    return scores
