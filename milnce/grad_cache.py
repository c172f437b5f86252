"""Gradient cache: a contrastive loss over a large batch with activation memory of one chunk.

The loss couples every sample to every other, so it cannot be split into per-chunk losses. It only needs the
embeddings, though, and dL/d(embeddings) is small. `grad_cache_step`:

1. embeds the batch chunk by chunk under no_grad (no activations kept), remembering each chunk's RNG state;
2. computes the loss on the concatenated embeddings (detached leaves that require grad) and takes
   dL/d(embeddings) — and dL/d(loss parameters) such as a learnable temperature;
3. re-runs each chunk with grad, restoring its RNG state so dropout draws the same masks, and back-propagates
   the cached embedding gradients through it (surrogate Σ <embedding, cached gradient>).

Parameter gradients equal those of one forward/backward over the same chunks. Without batch-dependent layers
that is the direct full-batch gradient. BatchNorm in train mode normalises with *chunk* statistics (like per-GPU
BN in DDP, "ghost batch norm"), so with BN the result equals the direct computation on the chunked batch, not on
the whole batch; the running statistics are restored after step 1, so they are updated exactly once per chunk,
by step 3. The loss is computed in float32 with autocast off (embedding gradients of a large-batch mean loss
underflow in fp16); the replay backward goes through `backward`, so a GradScaler still applies.

Under DDP, `loss_fn` gathers (milnce.distributed.gather_with_grad) inside, every rank runs the same number of
chunks, and `no_sync` (Lightning: `self.trainer.strategy.block_backward_sync`) keeps all but the last replay
from all-reducing; the last replay carries the loss-parameter gradients too, so every parameter is reduced once.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

Inputs = Union[torch.Tensor, Sequence[Optional[torch.Tensor]], Mapping[str, Optional[torch.Tensor]]]


# ------------------------------------------------------------------------------------------------ input chunks
def _rows(inputs: Inputs) -> int:
    tensors = _tensors(inputs)
    if not tensors:
        raise ValueError("grad_cache_step: inputs hold no tensor")
    rows = {t.shape[0] for t in tensors}
    if len(rows) != 1:
        raise ValueError(f"grad_cache_step: input tensors disagree on the number of rows: {sorted(rows)}")
    return rows.pop()


def _tensors(inputs: Inputs) -> List[torch.Tensor]:
    if isinstance(inputs, torch.Tensor):
        return [inputs]
    values = inputs.values() if isinstance(inputs, Mapping) else inputs
    return [v for v in values if isinstance(v, torch.Tensor)]


def _slice(inputs: Inputs, start: int, stop: int) -> Inputs:
    if isinstance(inputs, torch.Tensor):
        return inputs[start:stop]
    if isinstance(inputs, Mapping):
        return {k: v[start:stop] if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    return tuple(v[start:stop] if isinstance(v, torch.Tensor) else v for v in inputs)


def _call(fn: Callable[..., torch.Tensor], inputs: Inputs) -> torch.Tensor:
    if isinstance(inputs, torch.Tensor):
        return fn(inputs)
    if isinstance(inputs, Mapping):
        return fn(**inputs)
    return fn(*inputs)


# ------------------------------------------------------------------------------------------------ RNG / BN state
def _devices(inputs: Iterable[Inputs]) -> List[torch.device]:
    return sorted({t.device for i in inputs for t in _tensors(i) if t.device.type == "cuda"}, key=str)


def _capture_rng(cuda_devices: List[torch.device]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in cuda_devices]


def _restore_rng(state: Tuple[torch.Tensor, List[torch.Tensor]], cuda_devices: List[torch.device]) -> None:
    torch.set_rng_state(state[0])
    for device, s in zip(cuda_devices, state[1]):
        torch.cuda.set_rng_state(s, device)


def _owner_modules(*fns: Any) -> List[nn.Module]:
    owners = []
    for fn in fns:
        if isinstance(fn, nn.Module):
            owners.append(fn)
        elif isinstance(getattr(fn, "__self__", None), nn.Module):
            owners.append(fn.__self__)
    return owners


def _running_stats(modules: Sequence[nn.Module]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """(buffer, clone) for every BN buffer that a train-mode forward updates."""
    saved: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}
    for root in modules:
        for m in root.modules():
            if isinstance(m, _BatchNorm) and m.training and m.track_running_stats:
                for buf in (m.running_mean, m.running_var, m.num_batches_tracked):
                    if buf is not None and id(buf) not in saved:
                        saved[id(buf)] = (buf, buf.detach().clone())
    return list(saved.values())


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _graph_leaves(loss: torch.Tensor, exclude: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Leaf tensors requiring grad that `loss` depends on (loss parameters), minus `exclude`."""
    leaves: List[torch.Tensor] = []
    seen, stack = set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # AccumulateGrad nodes hold their leaf
        if variable is not None and not any(variable is e for e in exclude):
            leaves.append(variable)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return leaves


# ------------------------------------------------------------------------------------------------ the step
def grad_cache_step(embed_video: Callable[..., torch.Tensor], embed_text: Callable[..., torch.Tensor],
                    video: Inputs, text_inputs: Inputs,
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], chunk_size: int,
                    num_candidates: Optional[int] = None, *,
                    backward: Optional[Callable[[torch.Tensor], Any]] = None,
                    no_sync: Optional[Callable[[], contextlib.AbstractContextManager]] = None,
                    modules: Optional[Sequence[nn.Module]] = None) -> torch.Tensor:
    """One gradient-cache forward/backward; accumulates parameter .grad and returns the loss (detached).

    embed_video(*video) -> B×D and embed_text(*text_inputs) -> (B·K)×D (a tensor input is passed as the one
    argument, a tuple positionally — None entries included — a dict as keyword arguments); every tensor in an
    input is chunked along dim 0, `chunk_size` videos and chunk_size·K text rows at a time.
    loss_fn(video_embeddings, text_embeddings) -> scalar on the full batch (gather across ranks inside it).
    num_candidates: K; default text rows ÷ videos.
    backward(surrogate): how to back-propagate (Lightning: `self.manual_backward`); default `.backward()`.
    no_sync(): context for all replays but the last (Lightning: `self.trainer.strategy.block_backward_sync`).
    modules: where BatchNorm running statistics live; default the nn.Modules that `embed_video` / `embed_text`
    are, or are bound methods of. Pass [] when there is no BatchNorm.
    """
    if chunk_size < 1:
        raise ValueError(f"grad_cache_step: chunk_size must be >= 1, got {chunk_size}")
    b, text_rows = _rows(video), _rows(text_inputs)
    k = text_rows // b if num_candidates is None else int(num_candidates)
    if b == 0 or k < 1 or text_rows != b * k:
        raise ValueError(f"grad_cache_step: {text_rows} text rows do not make {b} videos × "
                         f"{num_candidates if num_candidates is not None else 'K'} candidates")
    if modules is None:
        modules = _owner_modules(embed_video, embed_text)
        if not modules:
            raise ValueError("grad_cache_step: cannot find the modules behind embed_video / embed_text to protect "
                             "BatchNorm running statistics; pass modules=[...] ([] if there is no BatchNorm)")
    backward = backward or (lambda t: t.backward())
    bounds = [(s, min(s + chunk_size, b)) for s in range(0, b, chunk_size)]
    chunks = [(_slice(video, s, e), _slice(text_inputs, s * k, e * k)) for s, e in bounds]
    cuda_devices = _devices([video, text_inputs])

    # 1. embed without activations; BN running statistics are put back afterwards (the replay updates them)
    bn_state = _running_stats(modules)
    rng_states, video_parts, text_parts = [], [], []
    with torch.no_grad():
        for video_chunk, text_chunk in chunks:
            rng_states.append(_capture_rng(cuda_devices))
            video_parts.append(_call(embed_video, video_chunk))
            text_parts.append(_call(embed_text, text_chunk))
    rng_after = _capture_rng(cuda_devices)
    for buf, value in bn_state:
        buf.copy_(value)

    # 2. loss on the full batch, gradients with respect to the embeddings and the loss's own parameters
    video_emb = _at_least_float32(torch.cat(video_parts)).requires_grad_()
    text_emb = _at_least_float32(torch.cat(text_parts)).requires_grad_()
    del video_parts, text_parts
    with torch.autocast(device_type=video_emb.device.type, enabled=False):
        loss = loss_fn(video_emb, text_emb)
    loss_params = _graph_leaves(loss, exclude=(video_emb, text_emb))
    grads = torch.autograd.grad(loss, [video_emb, text_emb, *loss_params], allow_unused=True)
    video_grad = torch.zeros_like(video_emb) if grads[0] is None else grads[0]
    text_grad = torch.zeros_like(text_emb) if grads[1] is None else grads[1]
    param_grads = [(p, g) for p, g in zip(loss_params, grads[2:]) if g is not None]
    loss = loss.detach()

    # 3. replay each chunk with grad and push the cached gradients through it
    for index, ((s, e), (video_chunk, text_chunk), rng) in enumerate(zip(bounds, chunks, rng_states)):
        last = index == len(chunks) - 1
        _restore_rng(rng, cuda_devices)
        surrogate = (_at_least_float32(_call(embed_video, video_chunk)) * video_grad[s:e]).sum() \
            + (_at_least_float32(_call(embed_text, text_chunk)) * text_grad[s * k:e * k]).sum()
        if last:
            for p, g in param_grads:
                surrogate = surrogate + (p * g).sum()
        with (no_sync() if (no_sync is not None and not last) else contextlib.nullcontext()):
            backward(surrogate)
    _restore_rng(rng_after, cuda_devices)
    return loss
