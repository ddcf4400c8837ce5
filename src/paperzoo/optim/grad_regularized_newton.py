"""Gradient-regularized Newton with approximate Hessians and adaptive gradient-normalized smoothness.

References: Gradient-Normalized Smoothness for Optimization with Approximate Hessians, 2025 (Semenov, Jaggi,
Doikov; arXiv 2506.13710), Algorithm 1.

Each iteration solves one regularized Newton system with an approximate Hessian :math:`B_k \\approx
\\nabla^2 f(x_k)` (exact, Gauss-Newton, empirical Fisher, or any callable):

.. math::
    \\lambda_k = \\frac{\\|\\nabla f(x_k)\\|}{\\gamma_k}, \\qquad
    x_{k+1} = x_k - (B_k + \\lambda_k I)^{-1} \\nabla f(x_k),

where :math:`\\gamma_k` estimates the gradient-normalized smoothness (the radius around :math:`x_k` on which
the linearisation :math:`\\nabla f(x_k) + B_k(y - x_k)` approximates :math:`\\nabla f(y)` to relative accuracy).
It is found by the paper's adaptive search: a trial step is accepted when

.. math::
    f(x_k) - f(x_{k+1}) \\ge \\frac{\\|\\nabla f(x_{k+1})\\|^2}{8\\lambda_k},

after which :math:`\\gamma_{k+1} = 2\\gamma_k`; otherwise :math:`\\gamma_k` is halved and the step recomputed.

Symbols: :math:`f` = ``f`` (callable on a ``(d,)`` tensor returning a scalar tensor; derivatives by autograd),
:math:`x_0` = ``x0`` (shape ``(d,)``), :math:`\\gamma_0` = ``gamma0``, :math:`B_k` = ``hessian``.

Deviations: a trial whose decrease :math:`f(x_k) - f(x_{k+1})` is below floating-point resolution
(:math:`8\\epsilon_{mach}\\max(1, |f|)`) is accepted when it shrinks the gradient norm, since the test above cannot
be evaluated there (the official code would halve :math:`\\gamma_k` until its search budget runs out). Euclidean norm only (the paper allows a general norm :math:`\\|\\cdot\\|_B`); a failed Cholesky
factorisation (an indefinite :math:`B_k + \\lambda_k I`) counts as a rejected trial instead of stopping; the
official code's ``eps`` added to :math:`\\gamma_k` in :math:`\\lambda_k` is dropped (we use ``gamma_min``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Flag, Function, Int, Real, Tensor, accepts
from paperzoo.core.checks import check_int, check_nonnegative, check_positive, check_tensor
from paperzoo.optim._common import check_flag
from paperzoo.core.convergence import check_finite_iterate, warn_not_converged, warn_stalled

__all__ = ["GradRegNewtonResult", "solve_grad_regularized_newton", "gauss_newton_hessian", "empirical_fisher"]


class GradRegNewtonResult(NamedTuple):
    """Result of :func:`solve_grad_regularized_newton`.

    Attributes:
        x: final iterate ``(d,)``.
        n_iter: accepted iterations.
        converged: :math:`\\|\\nabla f(x)\\| \\le` ``tol`` at the returned ``x``.
        objective: :math:`f(x_k)` for ``k = 0..n_iter``, ``(n_iter + 1,)``.
        grad_norm: :math:`\\|\\nabla f(x_k)\\|`, same shape.
        gamma: :math:`\\gamma_k` used for the accepted step ``k``, ``(n_iter,)``.
        n_solves: linear systems solved (accepted plus rejected trials).
    """

    x: torch.Tensor
    n_iter: int
    converged: bool
    objective: torch.Tensor
    grad_norm: torch.Tensor
    gamma: torch.Tensor
    n_solves: int


def _value_and_grad(f, x):
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        val = f(xr)
        if not isinstance(val, torch.Tensor) or val.numel() != 1:
            raise ValueError("f must return a scalar tensor")
        (g,) = torch.autograd.grad(val, xr)
    return val.detach().reshape(()), g.detach()


# The two Hessian approximations return a callable (the hessian= argument), not numeric data: output="any".
@accepts(residuals=Function(), scale=Real(gt=0), output="any",
         example=lambda ctx: {"residuals": lambda x: torch.stack([x[0] ** 2, x[1]])})
def gauss_newton_hessian(residuals: Callable[[torch.Tensor], torch.Tensor], scale: float = 1.0):
    """The Gauss-Newton matrix :math:`s\\,J(x)^\\top J(x)` of :math:`f = \\tfrac{s}{2}\\|r(x)\\|^2`, as a callable
    ``x -> (d, d)`` for ``hessian=``; ``residuals`` maps ``(d,)`` to ``(m,)``.

    Example:
        >>> B = gauss_newton_hessian(lambda x: torch.stack([x[0] ** 2, x[1]]))
        >>> B(torch.tensor([1.0, 0.0])).tolist()
        [[4.0, 0.0], [0.0, 1.0]]
    """
    scale = check_positive("scale", scale)

    def hess(x):
        J = torch.autograd.functional.jacobian(residuals, x.detach(), vectorize=True)
        return scale * J.T @ J

    return hess


@accepts(per_example_loss=Function(), output="any",
         example=lambda ctx: {"per_example_loss": lambda x: torch.stack([x[0], 2 * x[0]])})
def empirical_fisher(per_example_loss: Callable[[torch.Tensor], torch.Tensor]):
    """The empirical Fisher :math:`\\frac1n\\sum_i \\nabla\\ell_i(x)\\nabla\\ell_i(x)^\\top` of
    :math:`f = \\frac1n\\sum_i \\ell_i`, as a callable ``x -> (d, d)``; ``per_example_loss`` maps ``(d,)`` to ``(n,)``.

    Example:
        >>> B = empirical_fisher(lambda x: torch.stack([x[0], 2 * x[0]]))
        >>> B(torch.tensor([1.0])).tolist()
        [[2.5]]
    """
    def hess(x):
        G = torch.autograd.functional.jacobian(per_example_loss, x.detach(), vectorize=True)
        return G.T @ G / G.shape[0]

    return hess


def _example_quadratic(ctx) -> dict:
    d = ctx.size("d")
    G = torch.randn(d, d, generator=ctx.generator, dtype=ctx.dtype)
    A = G @ G.T / d + torch.eye(d, dtype=ctx.dtype)
    return {"f": lambda x: 0.5 * x @ A @ x - x.sum(), "max_iter": 20}


@accepts(f=Function(), x0=Tensor("d"), gamma0=Real(gt=0), adaptive=Flag(), gamma_min=Real(gt=0), max_search=Int(ge=1),
         max_iter=Int(ge=1), tol=Real(ge=0), example=_example_quadratic)
def solve_grad_regularized_newton(
    f: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    *,
    hessian: str | Callable[[torch.Tensor], torch.Tensor] = "exact",
    gamma0: float = 1.0,
    adaptive: bool = True,
    gamma_min: float = 1e-9,
    max_search: int = 40,
    max_iter: int = 200,
    tol: float = 1e-8,
) -> GradRegNewtonResult:
    """Gradient-regularized Newton (Algorithm 1 of the paper; update rule in the module docstring).

    Args:
        f: objective, ``(d,) -> scalar`` tensor, differentiable by autograd.
        x0: start, shape ``(d,)``, floating.
        hessian: ``"exact"`` (autograd Hessian) or a callable ``x -> (d, d)`` symmetric PSD approximation
            (see :func:`gauss_newton_hessian`, :func:`empirical_fisher`).
        gamma0: initial :math:`\\gamma_0 > 0`.
        adaptive: run the paper's search on :math:`\\gamma_k`; ``False`` keeps :math:`\\gamma_k = \\gamma_0`.
        gamma_min: floor on :math:`\\gamma_k` after an accepted step.
        max_search: trial steps per iteration before the last trial is taken anyway.
        max_iter: iterations, ``>= 1``.
        tol: stop when :math:`\\|\\nabla f(x_k)\\| \\le` ``tol`` (``0``: run all iterations, no warning).

    Returns:
        A :class:`GradRegNewtonResult`.

    Example:
        >>> A = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
        >>> res = solve_grad_regularized_newton(lambda x: 0.5 * x @ A @ x - x.sum(), torch.zeros(2, dtype=torch.float64))
        >>> res.converged, [round(v, 6) for v in res.x.tolist()]
        (True, [0.2, 0.4])
    """
    check_tensor("x0", x0, ndim=1)
    if not (hessian == "exact" or callable(hessian)):
        raise ValueError(f"hessian must be 'exact' or a callable x -> (d, d), got {hessian!r}")
    gamma = check_positive("gamma0", gamma0)
    check_flag("adaptive", adaptive)
    gamma_min = check_positive("gamma_min", gamma_min)
    max_search = check_int("max_search", max_search, low=1)
    max_iter = check_int("max_iter", max_iter, low=1)
    tol = check_nonnegative("tol", tol)

    x = x0.detach().clone()
    d = x.shape[0]
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    roundoff = 8.0 * torch.finfo(x.dtype).eps
    fx, g = _value_and_grad(f, x)
    objective, gnorms, gammas = [fx], [g.norm()], []
    n_solves = 0
    k = 0
    converged = bool(gnorms[-1] <= tol)
    stalled = False
    while not converged and k < max_iter:
        B = torch.autograd.functional.hessian(f, x) if hessian == "exact" else hessian(x)
        B = 0.5 * (B + B.T)
        gn = float(gnorms[-1])
        # Near the optimum in float32 the acceptance test keeps failing on roundoff and gamma keeps halving;
        # once lambda = ||g|| / gamma would swamp B at the dtype's resolution the step is zero: stop there.
        if gn / gamma * torch.finfo(x.dtype).eps > 1.0 + float(B.abs().max()):
            stalled = True
            break
        for trial in range(max_search):
            lam = gn / gamma
            chol, info = torch.linalg.cholesky_ex(B + lam * eye)
            n_solves += 1
            if int(info) != 0:
                gamma *= 0.5  # B + lam I indefinite: more regularisation
                continue
            x_new = x - torch.cholesky_solve(g[:, None], chol)[:, 0]
            f_new, g_new = _value_and_grad(f, x_new)
            if not adaptive:
                break
            decrease = float(fx - f_new)
            accept = decrease >= float(g_new.square().sum()) / (8.0 * lam)
            # Near the optimum the decrease drops below float resolution and the test can no longer be
            # evaluated; a step that does not raise f beyond roundoff and shrinks the gradient is accepted then.
            accept = accept or (abs(decrease) <= roundoff * max(1.0, abs(float(fx))) and float(g_new.norm()) < gn)
            if bool(torch.isfinite(f_new)) and accept:
                gammas.append(gamma)
                gamma = max(2.0 * gamma, gamma_min)
                break
            if trial < max_search - 1:
                gamma *= 0.5
        else:
            if int(info) != 0:
                raise FloatingPointError("solve_grad_regularized_newton: B + lambda I stayed indefinite; "
                                         "pass a positive semidefinite hessian approximation")
        if len(gammas) == k:
            gammas.append(gamma)
        k += 1
        check_finite_iterate("solve_grad_regularized_newton", x_new, k, "decrease gamma0")
        x, fx, g = x_new, f_new, g_new
        objective.append(fx)
        gnorms.append(g.norm())
        converged = bool(gnorms[-1] <= tol)
    if stalled and tol > 0:
        warn_stalled("solve_grad_regularized_newton", k, float(gnorms[-1]), tol, x.dtype)
    elif not converged and tol > 0:
        warn_not_converged("solve_grad_regularized_newton", max_iter, tol, "increase max_iter")
    return GradRegNewtonResult(x, k, converged, torch.stack(objective), torch.stack(gnorms),
                               torch.tensor(gammas, dtype=torch.float64), n_solves)
