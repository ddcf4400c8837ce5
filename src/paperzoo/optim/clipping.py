"""Gradient clipping primitives shared by the clipped optimizers and wrappers.

Two operators, functional (they return new tensors and never touch ``.grad``):

* norm clipping, :math:`\\operatorname{clip}_\\lambda(g) = \\min(1, \\lambda / \\|g\\|_2)\\, g`, with the norm
  taken jointly over a list of tensors (the global norm of ``torch.nn.utils.clip_grad_norm_``);
* coordinate-wise clipping, :math:`\\operatorname{clip}_\\lambda(g)_i = \\max(-\\lambda, \\min(\\lambda, g_i))`.

Example::

    >>> import torch
    >>> clipped, norm = clip_by_norm([torch.tensor([3.0, 4.0])], 1.0)
    >>> clipped[0], norm
    (tensor([0.6000, 0.8000]), tensor(5.))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from paperzoo.core.accepts import Real, Tensor, Tensors, accepts
from paperzoo.core.checks import check_positive

__all__ = ["global_norm", "clip_by_norm", "clip_coordinatewise"]


def _global_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    # The unvalidated kernel, for optimizers' per-step loops.
    if len(tensors) == 0:
        raise ValueError("tensors must contain at least one tensor, got an empty sequence")
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def _stable_global_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    norm = _global_norm(tensors)
    if bool(torch.isinf(norm)):
        # Finite entries whose squares overflow (float32 entries above ~1e19): rescale by the largest entry.
        scale = max(float(t.abs().max()) for t in tensors if t.numel())
        norm = _global_norm([t / scale for t in tensors]) * scale
    return norm


@accepts(tensors=Tensors())
def global_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """:math:`\\sqrt{\\sum_k \\|t_k\\|_2^2}` over a non-empty list of tensors (a 0-dim tensor, float64-safe).

    Entries whose squares overflow the dtype still give the finite norm (it is recomputed on rescaled tensors).
    """
    return _stable_global_norm(tensors)


def _clip_by_norm(tensors, max_norm, eps=0.0, norm=None):
    # The unvalidated kernel of clip_by_norm, for optimizers' per-step loops.
    norm = _global_norm(tensors) if norm is None else norm
    # min(1, lambda / ||g||) written so that ||g|| = 0 gives a factor of 1 instead of inf * 0.
    scale = torch.clamp(max_norm / (norm + eps).clamp_min(torch.finfo(norm.dtype).tiny), max=1.0)
    return [t * scale.to(t.dtype) for t in tensors], norm


@accepts(tensors=Tensors(), max_norm=Real(gt=0), eps=Real(ge=0))
def clip_by_norm(tensors: Sequence[torch.Tensor], max_norm: float, *, eps: float = 0.0
                 ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Scale ``tensors`` jointly so that their global norm is at most ``max_norm``.

    Args:
        tensors: gradients (any shapes), at least one.
        max_norm: the clipping level :math:`\\lambda > 0`.
        eps: added to the norm in the denominator (0 gives exact clipping; a zero gradient stays zero).

    Returns:
        The clipped tensors and the global norm before clipping.
    """
    return _clip_by_norm(tensors, float(max_norm), float(eps), _stable_global_norm(tensors))


def _clip_coordinatewise(tensor, level):
    # The unvalidated kernel of clip_coordinatewise, for optimizers' per-step loops.
    if isinstance(level, torch.Tensor):
        return torch.maximum(torch.minimum(tensor, level), -level)
    return tensor.clamp(-level, level)


@accepts(tensor=Tensor(ndims=tuple(range(9)), allow_empty=True),
         example=lambda ctx: {"tensor": torch.randn(1, 1, 1, 1, 1, 1, 3, 2, generator=ctx.generator, dtype=ctx.dtype),
                              "level": 0.5})
def clip_coordinatewise(tensor: torch.Tensor, level: float | torch.Tensor) -> torch.Tensor:
    """Clamp every coordinate to ``[-level, level]``.

    Args:
        tensor: any shape.
        level: :math:`\\lambda > 0`, a number or a tensor of ``tensor``'s dtype broadcastable to its shape
            (one level per coordinate; ``inf`` entries leave their coordinates unclipped).
    """
    if not isinstance(level, torch.Tensor):
        return _clip_coordinatewise(tensor, check_positive("level", level))
    if level.layout != torch.strided:
        raise TypeError(f"level must be a dense (strided) tensor, got layout {level.layout}")
    if level.dtype != tensor.dtype:
        raise TypeError(f"level must have the dtype of tensor ({tensor.dtype}), got {level.dtype}")
    try:
        shape = torch.broadcast_shapes(level.shape, tensor.shape)
    except RuntimeError:
        shape = None
    if shape != tensor.shape:
        raise ValueError(f"level must be broadcastable to the shape of tensor {tuple(tensor.shape)}, got shape "
                         f"{tuple(level.shape)}")
    # ~(level > 0) also catches NaN levels, which would turn every coordinate into NaN.
    if bool((~(level > 0)).any()):
        raise ValueError("level must be > 0 entrywise, got a tensor with non-positive or NaN entries")
    return _clip_coordinatewise(tensor, level)
