"""A model's loss as a function of one flat parameter vector, for ``torch.func`` transforms over many chains/samples.

Shared by the simulators that move a flat parameter vector themselves (heavy_tail_sgd, sgd_generalization_gap).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch.func import functional_call


class FlatLoss(NamedTuple):
    """``theta0``: the model's trainable parameters, concatenated (shape ``(P,)``). ``batch_loss(theta, x, y)``: the
    scalar loss of the model at ``theta`` on a batch ``(x, y)``. ``sample_loss(theta, x, y)``: the same on one sample
    (``x``, ``y`` without their batch dimension), for ``vmap(grad(...))`` per-sample gradients."""

    theta0: torch.Tensor
    batch_loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    sample_loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def flat_loss(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> FlatLoss:
    """The loss of ``model`` as a function of its trainable parameters, flattened in ``named_parameters`` order.

    Frozen parameters (``requires_grad=False``) and buffers are held at their current values; the model itself is not
    changed. Raises ``ValueError`` when the model has no trainable parameter.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model must have parameters that require grad, got none")
    names = [n for n, _ in named]
    shapes = [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())

    def batch_loss(theta, x, y):
        params = {n: c.reshape(s) for n, s, c in zip(names, shapes, torch.split(theta, sizes))}
        return loss_fn(functional_call(model, (params, frozen, buffers), (x,)), y).reshape(())

    def sample_loss(theta, x, y):
        return batch_loss(theta, x.unsqueeze(0), y.unsqueeze(0))

    return FlatLoss(torch.cat([p.detach().reshape(-1) for _, p in named]), batch_loss, sample_loss)
