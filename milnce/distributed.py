"""Gathering embeddings across ranks so every rank sees the global batch as negatives.

Gradient semantics of `gather_with_grad` (the choice matters for plain SGD and for gradient clipping; Adam is
nearly invariant to a global gradient scale):

Every rank gathers the same global batch and computes the *identical* global loss L. What each rank must hand
back to its own towers is dL/d(local embeddings).

* ``gradient="local"`` (default, the original MIL-NCE ``AllGather``): backward returns the rank's own slice of
  the incoming gradient, with no communication. Because L is identical on every rank, that slice already *is*
  dL/d(local embeddings); DDP then averages parameter gradients over ranks, so a tower parameter ends up with
  ``(full-batch gradient) / world_size``. A parameter of the loss itself (a learnable temperature) is computed
  whole on every rank, so after DDP's average it gets the full-batch gradient, unscaled.
* ``gradient="sum"`` (what Lightning's ``all_gather(sync_grads=True)`` and ``torch.distributed.nn.all_gather``
  do): backward all-reduces (sums) the incoming gradient before slicing, i.e. ``world_size`` times the local
  slice. After DDP's average every parameter, tower or loss, gets exactly the full-batch gradient — the same
  numbers as one process on the concatenated batch. Costs one extra all-reduce of the gathered gradient.

`tower_gradient_scale(gradient, num_ranks)` returns the factor between what DDP produces for a tower parameter
and the single-process full-batch gradient, for logging or for rescaling.

Not distributed (or world size 1), every function here is the identity. Shapes must match across ranks (the
training loader uses drop_last); a mismatch is reported as an error instead of a hang or garbage rows.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.distributed as dist

GRADIENT_MODES = ("local", "sum")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def tower_gradient_scale(gradient: str = "local", num_ranks: Optional[int] = None) -> float:
    """DDP tower-parameter gradient ÷ single-process full-batch gradient: 1/world_size for "local", 1 for "sum".

    `num_ranks` defaults to the current world size.
    """
    _check_mode(gradient)
    n = world_size() if num_ranks is None else int(num_ranks)
    return 1.0 / n if gradient == "local" else 1.0


def _check_mode(gradient: str) -> None:
    if gradient not in GRADIENT_MODES:
        raise ValueError(f"gather gradient mode '{gradient}' is not one of {', '.join(GRADIENT_MODES)}")


def _check_same_shape(x: torch.Tensor) -> None:
    shape = torch.tensor(list(x.shape), dtype=torch.long, device=x.device)
    shapes = [torch.empty_like(shape) for _ in range(dist.get_world_size())]
    dist.all_gather(shapes, shape)
    listed = [tuple(s.tolist()) for s in shapes]
    if any(s != listed[0] for s in listed):
        raise ValueError(f"gather across ranks needs the same shape on every rank, got {listed} "
                         "(use drop_last=True in the training loader)")


def _all_gather(x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    _check_same_shape(x)
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, gradient: str) -> torch.Tensor:
        ctx.rows = x.shape[0]
        ctx.rank = dist.get_rank()
        ctx.gradient = gradient
        return _all_gather(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], None]:
        if ctx.gradient == "sum":
            grad = grad.contiguous().clone()
            dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.rows
        return grad[start:start + ctx.rows], None


def gather_with_grad(x: torch.Tensor, gradient: str = "local") -> torch.Tensor:
    """All-gather rows of `x` from every rank in rank order ([rank0; rank1; …]), differentiably.

    See the module docstring for what `gradient` ("local" = original MIL-NCE, "sum" = exact full-batch
    gradients after DDP averaging) means. Identity when not distributed.
    """
    _check_mode(gradient)
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x, gradient)


def gather_no_grad(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """All-gather rows of a tensor that needs no gradient (video ids, validity masks); None passes through."""
    if x is None or not is_distributed():
        return x
    if x.dtype == torch.bool:  # gloo has no all_gather for bool tensors
        return _all_gather(x.to(torch.uint8)).bool()
    return _all_gather(x.detach())


def gather_batch(video: torch.Tensor, text: torch.Tensor, video_ids: Optional[torch.Tensor] = None,
                 valid: Optional[torch.Tensor] = None, gradient: str = "local"):
    """Gather (video B×D, text (B·K)×D, video_ids B, valid B) from every rank; returns the same four, global.

    Video row j and text rows j·K … j·K+K−1 stay aligned because both are gathered in rank order.
    """
    return (gather_with_grad(video, gradient), gather_with_grad(text, gradient),
            gather_no_grad(video_ids), gather_no_grad(valid))
