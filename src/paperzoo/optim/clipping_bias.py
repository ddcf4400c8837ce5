"""The stationary bias of clipped SGD: exact fixed points, worst-case noise, bounds, and a simulator.

References: Revisiting Gradient Clipping: Stochastic bias and tight convergence guarantees (Koloskova, Hendrikx,
Stich), 2023.

Clipped SGD, :math:`x_{t+1} = x_t - \\eta\\, \\mathrm{clip}_c(\\nabla f(x_t) + \\xi_t)` with
:math:`\\mathrm{clip}_c(g) = \\min(1, c/\\|g\\|)\\,g` and zero-mean noise of variance :math:`\\sigma^2`, drifts along
:math:`\\mathbb E\\,\\mathrm{clip}_c(\\nabla f(x) + \\xi)`, which is not :math:`\\nabla f(x)` when clipping is active.
For small steps the iterates settle where the *clipped* expected gradient vanishes, and that point is not a
stationary point of :math:`f`: the paper proves that the gradient norm clipped SGD reaches cannot go below
:math:`\\Omega(\\min(\\sigma, \\sigma^2/c))` for every step size, and that this is matched by an upper bound.

This module measures that bias on the one-dimensional quadratic :math:`f(x) = \\tfrac{L}{2} x^2` (the kind of
instance the paper's lower bound uses):

- :func:`clipped_fixed_point`: the point :math:`\\bar x` with :math:`\\mathbb E\\,\\mathrm{clip}_c(L\\bar x + \\xi)
  = 0` for a discrete noise law, by bisection (the map is non-decreasing in :math:`x`), and its gradient norm
  :math:`|L\\bar x|`, the stationary bias as :math:`\\eta \\to 0`;
- :func:`worst_case_two_point_noise`: the two-point zero-mean law of variance :math:`\\sigma^2` that maximises
  that bias for a given :math:`c \\ge \\sigma/2`; the bias it gives is exactly :math:`\\sigma^2/(4c)`;
- :func:`clipping_bias_bounds`: the bias every zero-mean law of variance :math:`\\sigma^2` must stay under,
  :math:`2c - \\sqrt{4c^2 - \\sigma^2} \\le \\sigma^2/(2c)`, and the worst-case value :math:`\\sigma^2/(4c)`. These
  two closed forms are derived here for the one-dimensional quadratic (from
  :math:`(|t| - c)_+ \\le t^2/(4c)`); they make the paper's :math:`\\Theta(\\sigma^2/c)` (for :math:`c \\ge \\sigma`)
  explicit, with the constants of this instance, not the paper's;
- :func:`simulate_clipped_sgd`: many independent runs of clipped (or unclipped) SGD at once, with the running
  average of the iterates over the second half, to compare with the fixed point.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Choice, Function, Int, Real, Tensor, accepts
from paperzoo.core.checks import check_int, check_nonnegative, check_number, check_positive, check_tensor

__all__ = ["FixedPointResult", "ClippedSGDResult", "clipped_fixed_point", "worst_case_two_point_noise",
           "clipping_bias_bounds", "simulate_clipped_sgd"]


class FixedPointResult(NamedTuple):
    """Result of :func:`clipped_fixed_point`.

    Attributes:
        x: the fixed point :math:`\\bar x`.
        grad_norm: :math:`|\\nabla f(\\bar x)| = L|\\bar x|`, the stationary bias.
        n_iter: bisection iterations.
        converged: bracket narrower than ``tol``.
    """

    x: float
    grad_norm: float
    n_iter: int
    converged: bool


class ClippedSGDResult(NamedTuple):
    """Result of :func:`simulate_clipped_sgd`.

    Attributes:
        x: final iterates, shape ``(runs,)``.
        x_avg: average of the iterates over the second half of the run, shape ``(runs,)``.
        n_iter: steps taken.
        history: mean over runs of the iterate, every ``record_every`` steps.
    """

    x: torch.Tensor
    x_avg: torch.Tensor
    n_iter: int
    history: list[float]


def _check_law(values: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    values = check_tensor("values", values, ndim=1)
    probs = check_tensor("probs", probs, ndim=1, nonnegative=True)
    if values.shape != probs.shape:
        raise ValueError(f"probs must have shape {tuple(values.shape)} (one per value), got {tuple(probs.shape)}")
    total = float(probs.sum())
    if abs(total - 1.0) > 1e-9:
        raise ValueError(f"probs must sum to 1, got {total!r}")
    return values.double(), probs.double()


@accepts(values=Tensor("k", degenerate=("zeros",)), probs=Tensor("k", positive_mass=True, degenerate=("zero_mass",)),
         c=Real(gt=0), curvature=Real(gt=0), tol=Real(gt=0), max_iter=Int(ge=1))
def clipped_fixed_point(values: torch.Tensor, probs: torch.Tensor, c: float, *, curvature: float = 1.0,
                        tol: float = 1e-12, max_iter: int = 200) -> FixedPointResult:
    """Fixed point of clipped SGD on :math:`f(x) = \\frac{L}{2}x^2` with discrete noise, in the small-step limit.

    Solves :math:`h(x) = \\sum_j p_j\\, \\mathrm{clip}_c(Lx + v_j) = 0` by bisection on a bracket that contains
    every root (:math:`h` is non-decreasing and continuous; where it vanishes on an interval the midpoint is
    returned).

    Args:
        values: noise values :math:`v_j`, shape ``(k,)``.
        probs: their probabilities :math:`p_j`, shape ``(k,)``, summing to one. The noise need not have mean
            zero (then the unclipped fixed point is not zero either).
        c: clipping level, ``> 0``.
        curvature: :math:`L > 0`.
        tol: bracket width at which to stop.
        max_iter: bisection iterations.

    Example:
        >>> import torch
        >>> v, p = torch.tensor([-1.0, 9.0]), torch.tensor([0.9, 0.1])
        >>> round(clipped_fixed_point(v, p, 1.0).x, 6)   # 0.9 (x - 1) + 0.1 = 0
        0.888889
    """
    values, probs = _check_law(values, probs)
    c = check_positive("c", c)
    L = check_positive("curvature", curvature)
    tol = check_positive("tol", tol)
    max_iter = check_int("max_iter", max_iter, low=1)

    def h(x: float) -> float:
        return float((probs * (L * x + values).clamp(-c, c)).sum())

    span = float(values.abs().max()) + c
    lo, hi = -span / L, span / L
    it, converged = 0, False
    for it in range(1, max_iter + 1):
        mid = 0.5 * (lo + hi)
        if h(mid) > 0:
            hi = mid
        else:
            lo = mid
        if hi - lo <= tol:
            converged = True
            break
    if not converged:
        warnings.warn(f"clipped_fixed_point: bracket still wider than tol={tol} after max_iter={max_iter}; raise "
                      "max_iter", RuntimeWarning, stacklevel=2)
    x = 0.5 * (lo + hi)
    return FixedPointResult(x, abs(L * x), it, converged)


@accepts(sigma=Real(gt=0), c=Real(gt=0), dtype=Choice(torch.float64, torch.float32),
         example=lambda ctx: {"sigma": 1.0, "c": 2.0})
def worst_case_two_point_noise(sigma: float, c: float, *, dtype: torch.dtype = torch.float64
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The zero-mean two-point noise of variance :math:`\\sigma^2` with the largest clipping bias at level ``c``.

    :math:`\\xi = -a` with probability :math:`1 - p`, :math:`\\xi = b` with probability :math:`p`, where
    :math:`q = p/(1-p) = \\sigma^2/(4c^2)`, :math:`a = \\sigma\\sqrt q = \\sigma^2/(2c)` and :math:`b = a/q = 2c`.
    On :math:`f = x^2/2` the clipped fixed point solves :math:`(1-p)(\\bar x - a) + p c = 0`, so
    :math:`\\bar x = a - qc = \\sigma^2/(4c)`; maximising :math:`\\sigma\\sqrt q - qc` over :math:`q` gives this
    :math:`q`. Requires :math:`c \\ge \\sigma/2` (so that :math:`p \\le 1/2`).

    Returns:
        ``(values, probs)``, each of shape ``(2,)``.
    """
    sigma = check_positive("sigma", sigma)
    c = check_number("c", c, low=sigma / 2)
    q = sigma**2 / (4 * c**2)
    p = q / (1 + q)
    a = sigma * math.sqrt(q)
    return torch.tensor([-a, a / q], dtype=dtype), torch.tensor([1 - p, p], dtype=dtype)


@accepts(sigma=Real(gt=0), c=Real(gt=0), example=lambda ctx: {"sigma": 1.0, "c": 2.0})
def clipping_bias_bounds(sigma: float, c: float) -> tuple[float, float]:
    """``(worst_case, upper)``: the largest stationary bias any law attains, and the bound every law obeys.

    For :math:`f = \\frac L2 x^2` and zero-mean noise of variance :math:`\\sigma^2`, with :math:`c \\ge \\sigma`
    (for :math:`c \\ge \\sigma/2` the upper bound still holds on the branch that contains :math:`g = 0`): the fixed
    point's gradient :math:`g = L\\bar x` satisfies :math:`g = \\mathbb E[(g + \\xi) - \\mathrm{clip}_c(g + \\xi)]`,
    hence :math:`|g| \\le \\mathbb E(|g+\\xi| - c)_+ \\le (g^2 + \\sigma^2)/(4c)`, i.e.
    :math:`|g| \\le 2c - \\sqrt{4c^2 - \\sigma^2} \\le \\sigma^2/(2c)`. The two-point law of
    :func:`worst_case_two_point_noise` attains :math:`\\sigma^2/(4c)`. Both scale as :math:`\\sigma^2/c`, the
    paper's rate in this regime, and differ by at most a factor of two.
    """
    sigma = check_positive("sigma", sigma)
    c = check_number("c", c, low=sigma / 2)
    return sigma**2 / (4 * c), 2 * c - math.sqrt(4 * c**2 - sigma**2)


def _example_simulation(ctx):
    runs = ctx.size("runs")
    return {"lr": 0.1, "clip": 1.0, "num_steps": 20,
            "noise": lambda n: torch.randn(n, runs, generator=ctx.generator, dtype=ctx.dtype)}


@accepts(x0=Tensor("runs"), lr=Real(gt=0), num_steps=Int(ge=2), noise=Function(), curvature=Real(gt=0),
         record_every=Int(ge=1), chunk=Int(ge=1), example=_example_simulation)
def simulate_clipped_sgd(x0: torch.Tensor, *, lr: float, clip: float | torch.Tensor | None, num_steps: int,
                         noise: Callable[[int], torch.Tensor], curvature: float = 1.0,
                         record_every: int = 100, chunk: int = 10_000) -> ClippedSGDResult:
    """Run clipped SGD on :math:`f = \\frac L2 x^2` for many independent runs at once.

    :math:`x_{t+1} = x_t - \\eta\\,\\mathrm{clip}_c(L x_t + \\xi_t)` elementwise over the runs (one-dimensional
    problems, so norm clipping is clamping to :math:`[-c, c]`); ``clip=None`` runs plain SGD, and a ``noise`` that
    returns zeros runs deterministic (clipped) GD.

    Args:
        x0: starting points, shape ``(runs,)``.
        lr: step size :math:`\\eta > 0`.
        clip: :math:`c > 0`, a tensor of shape ``(runs,)`` with one level per run, or ``None`` for no clipping.
        num_steps: steps ``>= 2``.
        noise: ``noise(n)`` returns the next ``n`` noise draws for every run, shape ``(n, runs)``.
        curvature: :math:`L > 0`.
        record_every: history stride.
        chunk: noise draws requested at once.

    Raises:
        FloatingPointError: when an iterate becomes non-finite (lower ``lr``).
    """
    x = check_tensor("x0", x0, ndim=1).clone()
    lr = check_positive("lr", lr)
    if isinstance(clip, torch.Tensor):
        clip = check_tensor("clip", clip, ndim=1).to(x.dtype)
        if clip.shape != x.shape or bool((clip <= 0).any()):
            raise ValueError(f"clip must be > 0 with shape {tuple(x.shape)} (one per run), got {tuple(clip.shape)}")
    elif clip is not None:
        clip = check_positive("clip", clip)
    num_steps = check_int("num_steps", num_steps, low=2)
    L = check_positive("curvature", curvature)
    record_every = check_int("record_every", record_every, low=1)
    chunk = check_int("chunk", chunk, low=1)
    half = num_steps // 2
    total = torch.zeros_like(x)
    history: list[float] = []
    t = 0
    while t < num_steps:
        n = min(chunk, num_steps - t)
        xi = noise(n)
        if tuple(xi.shape) != (n, x.shape[0]):
            raise ValueError(f"noise(n) must return shape {(n, x.shape[0])}, got {tuple(xi.shape)}")
        xi = xi.to(x.dtype)
        for i in range(n):
            g = L * x + xi[i]
            if isinstance(clip, torch.Tensor):
                g = torch.maximum(torch.minimum(g, clip), -clip)
            elif clip is not None:
                g = g.clamp(-clip, clip)
            x = x - lr * g
            if t >= half:
                total += x
            if t % record_every == 0:
                history.append(float(x.mean()))
            t += 1
        if not bool(torch.isfinite(x).all()):
            raise FloatingPointError(f"simulate_clipped_sgd: non-finite iterate by step {t}; lower lr={lr}")
    return ClippedSGDResult(x, total / (num_steps - half), num_steps, history)
