"""Temporal low-pass filters over a parameter's gradient history: an exponential and a windowed moving average.

Shared pieces for gradient transforms that treat the sequence of gradients :math:`g_1, g_2, \\dots` of one
parameter as a signal over training steps (Grokfast amplifies the slow part of that signal; other methods may
damp it or use it as momentum). Both filters are functional: they take the filter state and the new gradient and
return the new state, so an optimizer wrapper can keep the state in ``optimizer.state`` and a training loop can
keep it in a dict.

- :func:`ema_update`: :math:`\\mu_t = \\alpha\\,\\mu_{t-1} + (1 - \\alpha)\\, g_t`, started at :math:`\\mu_1 = g_1`
  (a first-order IIR low-pass filter whose cutoff falls as :math:`\\alpha \\to 1`).
- :func:`window_update` and :func:`window_average`: the mean (or sum) of the last :math:`w` gradients, kept in a
  ring buffer of shape ``(w, *grad.shape)`` (an FIR box filter).

Example::

    >>> import torch
    >>> mu = None
    >>> for g in (torch.tensor([1.0]), torch.tensor([3.0])):
    ...     mu = ema_update(mu, g, alpha=0.5)
    >>> mu
    tensor([2.])
    >>> buf, n = None, 0
    >>> for g in (torch.tensor([1.0]), torch.tensor([3.0]), torch.tensor([5.0])):
    ...     buf, n = window_update(buf, n, g, window_size=2)
    >>> window_average(buf, n)
    tensor([4.])
"""

from __future__ import annotations

import torch

from paperzoo.core.accepts import Choice, Int, Real, Tensor, accepts
from paperzoo.core.checks import check_choice, check_int, check_probability

# A gradient of any rank (up to 8) and its window of one more dimension. The examples use the top rank, so that the
# generic "extra dimension" probe is a real error.
_GRAD = Tensor(ndims=tuple(range(9)), allow_empty=True)
_WINDOW = Tensor(ndims=tuple(range(1, 10)), allow_empty=True)


def _example_grad(ctx, *leading):
    return torch.randn(*leading, 1, 1, 1, 1, 1, 1, 3, 2, generator=ctx.generator, dtype=ctx.dtype)

__all__ = ["ema_update", "window_update", "window_average"]


@accepts(average=Tensor(ndims=tuple(range(9)), allow_empty=True, optional=True), grad=_GRAD, alpha=Real(ge=0, lt=1),
         example=lambda ctx: {"average": _example_grad(ctx), "grad": _example_grad(ctx), "alpha": 0.5},
         mutates=("average",))
def ema_update(average: torch.Tensor | None, grad: torch.Tensor, alpha: float) -> torch.Tensor:
    """One step of the exponential moving average :math:`\\mu_t = \\alpha \\mu_{t-1} + (1 - \\alpha) g_t`.

    Args:
        average: :math:`\\mu_{t-1}` (any shape), updated in place; ``None`` before the first gradient.
        grad: :math:`g_t`, the shape of ``average``.
        alpha: the decay :math:`\\alpha \\in [0, 1)`.

    Returns:
        :math:`\\mu_t`: ``average`` itself, or a copy of ``grad`` on the first call (the filter starts from the first
        gradient rather than from zero, so it carries no start-up bias towards zero).
    """
    alpha = check_probability("alpha", alpha)
    if average is not None and average.shape != grad.shape:
        raise ValueError(f"average must have shape {tuple(grad.shape)} (that of grad), got {tuple(average.shape)}")
    return _ema_update(average, grad, alpha)


def _ema_update(average, grad, alpha):
    """Unchecked :func:`ema_update` (the optimizers' step)."""
    if average is None:
        return grad.detach().clone(memory_format=torch.preserve_format)
    return average.lerp_(grad, 1.0 - alpha)


@accepts(window=Tensor(ndims=tuple(range(1, 10)), allow_empty=True, optional=True), count=Int(ge=0), grad=_GRAD,
         window_size=Int(ge=1),
         example=lambda ctx: {"window": _example_grad(ctx, 3), "count": 4, "grad": _example_grad(ctx),
                              "window_size": 3},
         mutates=("window",))
def window_update(window: torch.Tensor | None, count: int, grad: torch.Tensor, window_size: int
                  ) -> tuple[torch.Tensor, int]:
    """Push :math:`g_t` into a ring buffer holding the last ``window_size`` gradients.

    Args:
        window: the buffer, shape ``(window_size, *grad.shape)``, updated in place; ``None`` before the first
            gradient (allocated here as zeros).
        count: how many gradients were pushed before this one (``0`` with ``window=None``).
        grad: :math:`g_t`, any shape.
        window_size: :math:`w \\ge 1`.

    Returns:
        The buffer and the new count ``count + 1``.
    """
    window_size = check_int("window_size", window_size, low=1)
    count = check_int("count", count, low=0)
    if window is not None and tuple(window.shape) != (window_size, *grad.shape):
        raise ValueError(f"window must have shape {(window_size, *grad.shape)} (window_size, *grad.shape), "
                         f"got {tuple(window.shape)}")
    return _window_update(window, count, grad, window_size)


def _window_update(window, count, grad, window_size):
    """Unchecked :func:`window_update` (the optimizers' step)."""
    if window is None:
        window = grad.new_zeros((window_size, *grad.shape))
    window[count % window_size].copy_(grad)
    return window, count + 1


@accepts(window=_WINDOW, count=Int(ge=1), reduction=Choice("mean", "sum"),
         example=lambda ctx: {"window": _example_grad(ctx, 3), "count": 2})
def window_average(window: torch.Tensor, count: int, *, reduction: str = "mean") -> torch.Tensor:
    """The mean (``reduction="mean"``) or sum (``"sum"``) of the ``min(count, w)`` gradients in the buffer.

    ``window`` has shape ``(w, *grad.shape)``; the result has shape ``grad.shape``.
    """
    check_choice("reduction", reduction, ("mean", "sum"))
    return _window_average(window, check_int("count", count, low=1), reduction)


def _window_average(window, count, reduction="mean"):
    """Unchecked :func:`window_average` (the optimizers' step)."""
    filled = window[: min(count, window.shape[0])]
    total = filled.sum(0)
    return total.div_(filled.shape[0]) if reduction == "mean" else total
