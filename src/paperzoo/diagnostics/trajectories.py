"""Batched gradient-descent trajectories: many initialisations of GD (or noisy GD) run as one tensor.

References: Special Properties of Gradient Descent with Large Learning Rates (Mohtashami, Jaggi, Stich), 2023.

:func:`gd_trajectory` is the measurement harness for questions of the form "from which initialisations, and with
which step size, does gradient descent end in which minimum?": it runs

.. math::
    x_{t+1} = x_t - \\eta_t \\left(\\nabla f(x_t) + \\sigma \\xi_t\\right), \\qquad \\xi_t \\sim \\mathcal N(0, I)

for every row of ``x0`` at once (:math:`\\sigma = 0` is plain GD), records the iterates and losses, and flags
runs that left the finite numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Function, Generator, Int, OneOf, Real, Tensor, accepts
from paperzoo.core.checks import check_number

__all__ = ["Trajectory", "gd_trajectory"]


class Trajectory(NamedTuple):
    """Result of :func:`gd_trajectory`.

    Attributes:
        x: final iterates, shape ``(n, d)`` (NaN rows for runs that diverged).
        iterates: recorded iterates, shape ``(records, n, d)``; ``iterates[0]`` is ``x0``; NaN rows for a run from
            the step it diverged on.
        losses: :math:`f` at the recorded iterates, shape ``(records, n)`` (NaN for a diverged run, as its iterate).
        steps: the step index of each record, shape ``(records,)``.
        diverged: runs whose iterate or gradient became non-finite, shape ``(n,)`` (bool).
    """

    x: torch.Tensor
    iterates: torch.Tensor
    losses: torch.Tensor
    steps: torch.Tensor
    diverged: torch.Tensor


def _half_square(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x.square().sum(-1)


def _values(f, x: torch.Tensor) -> torch.Tensor:
    value = f(x)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"f must return a torch.Tensor, got {type(value).__name__}")
    if value.shape != x.shape[:1]:
        raise ValueError(f"f must return shape {tuple(x.shape[:1])}, got {tuple(value.shape)}")
    return value


@accepts(f=Function(), x0=Tensor("n", "d", degenerate=("coincident",)), lr=OneOf(Real(ge=0), Function()),
         steps=Int(ge=0), noise_std=Real(ge=0), generator=Generator(), record_every=Int(ge=1),
         example=lambda ctx: {"f": _half_square, "lr": 0.1, "steps": 3})
def gd_trajectory(
    f: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    lr: float | Callable[[int], float],
    steps: int,
    *,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
    record_every: int = 1,
) -> Trajectory:
    """Run gradient descent from every row of ``x0`` on ``f``, in one batch.

    References: Special Properties of Gradient Descent with Large Learning Rates (Mohtashami, Jaggi, Stich), 2023
    (GD with a constant or decayed step size, and small-step GD with injected Gaussian noise as the paper's
    "stochasticity without a large learning rate" control).

    Symbols: :math:`\\eta_t` = ``lr`` (a number, or ``lr(t)`` for a schedule), :math:`\\sigma` = ``noise_std``.
    The gradient comes from autograd on ``f(x).sum()``, so ``f`` must treat rows independently.

    Args:
        f: maps ``x`` of shape ``(n, d)`` to values of shape ``(n,)``, differentiably (autograd).
        x0: initial points, shape ``(n, d)``, floating, finite.
        lr: step size ``>= 0`` or a callable ``t -> eta_t`` (values ``>= 0``).
        steps: number of steps ``>= 0``.
        noise_std: :math:`\\sigma \\ge 0`, the standard deviation of the Gaussian added to the gradient.
        generator: source of the noise (a CPU generator; the noise is moved to the device of ``x0``).
        record_every: record every this many steps (the final iterate is always recorded).

    Returns:
        A :class:`Trajectory`. Divergence is a result, not an error: a run whose iterate (or gradient) leaves the
        finite numbers is flagged in ``diverged`` and frozen at NaN from that step on, in ``x``, ``iterates`` and
        ``losses``; the other runs are unaffected.

    Example:
        >>> import torch
        >>> traj = gd_trajectory(lambda x: 0.5 * (x ** 2).sum(-1), torch.ones(3, 1), lr=0.5, steps=2)
        >>> traj.x.flatten().tolist(), traj.steps.tolist()
        ([0.25, 0.25, 0.25], [0, 1, 2])
    """
    schedule = lr if callable(lr) else None
    if schedule is None:
        lr = float(lr)
    x = x0.detach().clone()
    diverged = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    records, losses, at = [x.clone()], [], [0]
    for t in range(steps):
        eta = check_number(f"lr({t})", schedule(t), low=0.0) if schedule is not None else lr
        x.requires_grad_(True)
        with torch.enable_grad():
            value = _values(f, x)
            if not value.requires_grad:
                raise ValueError("f must be differentiable in x (autograd), got values that do not depend on x")
            (grad,) = torch.autograd.grad(value.sum(), x, allow_unused=True)
        if grad is None:  # values that require grad through other tensors only: f is constant in x
            grad = torch.zeros_like(x)
        if t == 0:
            losses.append(value.detach())
        x = x.detach()
        if noise_std > 0:
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
            grad = grad + noise_std * noise.to(dtype=x.dtype, device=x.device)
        x = x - eta * grad
        bad = ~torch.isfinite(x).all(-1)
        if bad.any():
            # A diverged run would poison nothing else (rows are independent) but is marked and frozen at NaN.
            diverged |= bad
            x[bad] = float("nan")
        if (t + 1) % record_every == 0 or t + 1 == steps:
            records.append(x.clone())
            at.append(t + 1)
            with torch.no_grad():
                losses.append(f(x))
    if steps == 0:
        with torch.no_grad():
            losses.append(_values(f, x))
    return Trajectory(x, torch.stack(records), torch.stack(losses), torch.tensor(at, device=x.device), diverged)
