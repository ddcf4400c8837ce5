"""Subgradient descent and ISTA for L1-regularised least squares: a non-differentiable objective two ways.

References: GD doesn't make the cut: Three ways that non-differentiability affects neural network training
(Kumar), 2024.

Both solvers minimise the LASSO objective

.. math::
    F(x) = \\tfrac12 \\|A x - b\\|_2^2 + \\lambda \\|x\\|_1 .

:func:`solve_lasso_subgradient` is what automatic differentiation does to it: gradient descent with the
subgradient :math:`A^\\top(Ax - b) + \\lambda\\,\\mathrm{sign}(x)` (``sign(0) = 0``, PyTorch's choice for
``abs``) and a constant step, the "non-differentiable gradient method" (NGDM) of the paper. Its iterates hop
across zero instead of landing on it, so they are never exactly sparse. :func:`solve_lasso_ista` is the proximal
gradient method (ISTA, optionally accelerated: FISTA), whose soft-thresholding step
(:func:`soft_threshold`) sets coordinates exactly to zero.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Flag, Int, OneOf, Real, Tensor, accepts
from paperzoo.core.checks import check_same_shape

__all__ = ["LassoResult", "lasso_objective", "soft_threshold", "solve_lasso_subgradient", "solve_lasso_ista"]


class LassoResult(NamedTuple):
    """Result of the LASSO solvers.

    Attributes:
        x: the final iterate, shape ``(p,)``, or ``(p, R)`` for a batch of ``R`` penalties.
        n_iter: iterations run.
        converged: whether the step criterion ``||x_{k+1} - x_k|| <= tol * max(1, ||x_k||)`` was met (by every
            column, for a batch).
        objective: :math:`F` at every iterate, ``x_0`` first, shape ``(n_iter + 1,)`` or ``(n_iter + 1, R)``.
        l1_norm: :math:`\\|x\\|_1` at every iterate, same shape as ``objective``.
    """

    x: torch.Tensor
    n_iter: int
    converged: bool
    objective: torch.Tensor
    l1_norm: torch.Tensor


# reg: one penalty lambda >= 0, or R of them solved at once (one column of x each)
_REG = OneOf(Real(ge=0), Tensor("R", nonnegative=True))
_LASSO = dict(A=Tensor("n", "p"), b=Tensor("n"), reg=_REG)


def _check_columns(name, x, A, reg, *, optional=False):
    """``x``: ``(p,)``, or ``(p, R)`` with ``R`` penalties (``reg`` a tensor of shape ``(R,)``)."""
    if x is None and optional:
        return
    shape = (A.shape[1], reg.shape[0]) if isinstance(reg, torch.Tensor) else (A.shape[1],)
    check_same_shape(name, x, shape, what="columns of A, then one column per penalty in reg")


@accepts(**_LASSO, x=Tensor(ndims=(1, 2)), example=lambda ctx: {"x": torch.randn(
    ctx.size("p"), generator=ctx.generator, dtype=ctx.dtype)})
def lasso_objective(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, reg) -> torch.Tensor:
    """:math:`\\tfrac12\\|Ax - b\\|^2 + \\lambda\\|x\\|_1` for ``A: (n, p)``, ``b: (n,)``, ``x: (p,)``
    (or ``x: (p, R)`` with ``reg`` of shape ``(R,)``: one value per column)."""
    _check_columns("x", x, A, reg)
    r = A @ x - (b if x.dim() == 1 else b[:, None])
    return 0.5 * r.square().sum(0) + (reg * x.abs()).sum(0)


def _soft_threshold(x, threshold):
    return torch.sign(x) * (x.abs() - threshold).clamp_min(0.0)


# x: a vector or a batch of vectors (elementwise); threshold: a number or a nonnegative tensor broadcasting to x
@accepts(x=Tensor(..., "d", max_batch_dims=1, degenerate=("zeros",)),
         threshold=OneOf(Real(ge=0), Tensor(ndims=(0, 1, 2), nonnegative=True)))
def soft_threshold(x: torch.Tensor, threshold) -> torch.Tensor:
    """The proximal operator of :math:`\\tau\\|\\cdot\\|_1`: :math:`\\mathrm{sign}(x)\\max(|x| - \\tau, 0)`.

    ``threshold`` is a number :math:`\\tau \\ge 0` or a nonnegative tensor that broadcasts against ``x``.

    Example:
        >>> soft_threshold(torch.tensor([-2.0, 0.5, 3.0]), 1.0).tolist()
        [-1.0, 0.0, 2.0]
    """
    if isinstance(threshold, torch.Tensor):
        try:
            shape = torch.broadcast_shapes(x.shape, threshold.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise ValueError(f"threshold must broadcast to the shape of x {tuple(x.shape)}, got shape "
                             f"{tuple(threshold.shape)}")
    else:
        threshold = float(threshold)
    return _soft_threshold(x, threshold)


def _check_problem(A, b, reg, x0):
    """The relations the declarations cannot state: ``x0``'s columns against ``reg``."""
    _check_columns("x0", x0, A, reg, optional=True)
    if not isinstance(reg, torch.Tensor):
        reg = float(reg)
    shape = (A.shape[1], reg.shape[0]) if isinstance(reg, torch.Tensor) else (A.shape[1],)
    x0 = torch.zeros(shape, dtype=A.dtype, device=A.device) if x0 is None else x0
    if len(shape) == 2:
        b = b[:, None]
    return reg, x0.clone(), b


def _run(step, x, A, b, reg, max_iter, tol, name, knob):
    """Drive ``step(x) -> (x_new, r)``, where ``r = A x - b`` at the current ``x`` when the step computed it
    (reused for the objective, which saves a mat-vec per iteration) or ``None``."""
    objective, l1 = [], []
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        x_new, r = step(x)
        if r is None:
            r = A @ x - b
        objective.append(0.5 * r.square().sum(0) + (reg * x.abs()).sum(0))
        l1.append(x.abs().sum(0))
        if not bool(torch.isfinite(x_new).all()):
            raise FloatingPointError(f"{name} produced NaN or inf at iteration {n_iter}; decrease lr")
        if tol > 0:
            delta = torch.linalg.vector_norm(x_new - x, dim=0)
            converged = bool((delta <= tol * torch.linalg.vector_norm(x, dim=0).clamp_min(1.0)).all())
        x = x_new
        if converged:
            break
    objective.append(0.5 * (A @ x - b).square().sum(0) + (reg * x.abs()).sum(0))
    l1.append(x.abs().sum(0))
    if not converged and tol > 0:
        warnings.warn(f"{name} did not converge in {max_iter} iterations (tol={tol}); {knob}", RuntimeWarning,
                      stacklevel=3)
    return LassoResult(x, n_iter, converged, torch.stack(objective), torch.stack(l1))


_SOLVER = dict(_LASSO, x0=Tensor(ndims=(1, 2), optional=True), max_iter=Int(ge=1), tol=Real(ge=0))


@accepts(**_SOLVER, lr=Real(gt=0), example=lambda ctx: {"lr": 0.01, "max_iter": 50})
def solve_lasso_subgradient(
    A: torch.Tensor,
    b: torch.Tensor,
    reg: float | torch.Tensor,
    *,
    lr: float,
    x0: torch.Tensor | None = None,
    max_iter: int = 10_000,
    tol: float = 1e-10,
) -> LassoResult:
    """Subgradient descent (the paper's NGDM) on :math:`\\tfrac12\\|Ax - b\\|^2 + \\lambda\\|x\\|_1`.

    References: GD doesn't make the cut: Three ways that non-differentiability affects neural network training
    (Kumar), 2024 (Section 4, gradient descent on the LASSO with the autograd subgradient).

    .. math::
        x_{k+1} = x_k - \\eta\\left(A^\\top(A x_k - b) + \\lambda\\,\\mathrm{sign}(x_k)\\right)

    Symbols: :math:`A` = ``A`` (shape ``(n, p)``), :math:`b` = ``b`` (shape ``(n,)``), :math:`\\lambda` =
    ``reg``, :math:`\\eta` = ``lr`` (constant, as in the paper). With a constant step the iterates of a
    coordinate whose optimum is zero oscillate in a band of width about :math:`\\eta\\lambda` around it; the
    method generally never meets ``tol`` then and warns.

    Args:
        A: design matrix, shape ``(n, p)``.
        b: targets, shape ``(n,)``, dtype of ``A``.
        reg: :math:`\\lambda \\ge 0`, or a 1-D tensor of ``R`` penalties solved at once (columns of ``x``).
        lr: :math:`\\eta > 0`.
        x0: start, shape ``(p,)`` (``(p, R)`` for a batch of penalties); default zero.
        max_iter: iterations, ``>= 1``.
        tol: stop when ``||x_{k+1} - x_k|| <= tol * max(1, ||x_k||)``; ``0`` runs all ``max_iter`` steps without
            a convergence test or warning.

    Returns:
        A :class:`LassoResult`.

    Example:
        >>> A = torch.eye(2, dtype=torch.float64); b = torch.tensor([2.0, 0.0], dtype=torch.float64)
        >>> res = solve_lasso_subgradient(A, b, 0.5, lr=0.1, max_iter=200, tol=0.0)
        >>> round(res.x[0].item(), 3), res.x[1].item()
        (1.5, 0.0)
    """
    reg, x, b = _check_problem(A, b, reg, x0)
    lr, max_iter, tol = float(lr), int(max_iter), float(tol)
    At = A.T

    def step(x):
        r = A @ x - b
        return x - lr * (At @ r + reg * torch.sign(x)), r

    return _run(step, x, A, b, reg, max_iter, tol, "solve_lasso_subgradient",
                "a constant-step subgradient method oscillates around kinks; decrease lr or increase max_iter")


@accepts(**_SOLVER, lr=Real(gt=0, optional=True), accelerated=Flag(), example=lambda ctx: {"max_iter": 50})
def solve_lasso_ista(
    A: torch.Tensor,
    b: torch.Tensor,
    reg: float | torch.Tensor,
    *,
    lr: float | None = None,
    accelerated: bool = False,
    x0: torch.Tensor | None = None,
    max_iter: int = 10_000,
    tol: float = 1e-10,
) -> LassoResult:
    """ISTA (proximal gradient) or FISTA on :math:`\\tfrac12\\|Ax - b\\|^2 + \\lambda\\|x\\|_1`.

    References: GD doesn't make the cut: Three ways that non-differentiability affects neural network training
    (Kumar), 2024 (the proximal method as the remedy); the algorithms are Beck and Teboulle's, A Fast
    Iterative Shrinkage-Thresholding Algorithm for Linear Inverse Problems, 2009.

    .. math::
        x_{k+1} = S_{\\eta\\lambda}\\!\\left(y_k - \\eta A^\\top(A y_k - b)\\right), \\qquad
        S_\\tau(v) = \\mathrm{sign}(v)\\max(|v| - \\tau, 0)

    with :math:`y_k = x_k` (ISTA) or, when ``accelerated``, :math:`y_k = x_k + \\frac{t_{k-1} - 1}{t_k}
    (x_k - x_{k-1})`, :math:`t_k = \\tfrac12(1 + \\sqrt{1 + 4 t_{k-1}^2})`, :math:`t_0 = 1` (FISTA).

    Args:
        A: design matrix, shape ``(n, p)``.
        b: targets, shape ``(n,)``.
        reg: :math:`\\lambda \\ge 0`, or a 1-D tensor of ``R`` penalties solved at once (columns of ``x``).
        lr: :math:`\\eta \\in (0, 1/L]`, :math:`L = \\|A\\|_2^2`; default :math:`1/L`.
        accelerated: FISTA momentum.
        x0: start, shape ``(p,)`` (``(p, R)`` for a batch of penalties); default zero.
        max_iter: iterations, ``>= 1``.
        tol: stop when ``||x_{k+1} - x_k|| <= tol * max(1, ||x_k||)`` (``0``: run all iterations).

    Returns:
        A :class:`LassoResult`.

    Example:
        >>> A = torch.eye(2, dtype=torch.float64); b = torch.tensor([2.0, 0.3], dtype=torch.float64)
        >>> solve_lasso_ista(A, b, 0.5).x.tolist()
        [1.5, 0.0]
    """
    reg, x, b = _check_problem(A, b, reg, x0)
    max_iter, tol = int(max_iter), float(tol)
    L = float(torch.linalg.matrix_norm(A, ord=2)) ** 2
    lr = 1.0 / max(L, 1e-300) if lr is None else float(lr)
    At = A.T
    memory = {"prev": x, "t": 1.0}

    def step(x):
        y = x
        if accelerated:
            t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * memory["t"] ** 2))
            y = x + ((memory["t"] - 1.0) / t_next) * (x - memory["prev"])
            memory["t"] = t_next
        memory["prev"] = x
        r = A @ y - b
        return _soft_threshold(y - lr * (At @ r), lr * reg), (None if accelerated else r)

    return _run(step, x, A, b, reg, max_iter, tol, "solve_lasso_ista", "increase max_iter")
