"""AdaSketch-Newton: inexact SQP with randomized iterative sketching and an exact augmented Lagrangian merit.

References: Constrained Optimization via Exact Augmented Lagrangian and Randomized Iterative Sketching, 2023
(Hong, Na, Mahoney, Kolar; ICML 2023, arXiv 2305.18379), Algorithm 1 (AdaSketch-Newton).

Problem: :math:`\\min_x f(x)` s.t. :math:`c(x) = 0`, Lagrangian :math:`L(x, \\lambda) = f(x) + \\lambda^\\top c(x)`,
constraint Jacobian :math:`G = \\nabla c(x)` (``(m, d)``). Each iteration builds the Lagrangian Newton (KKT)
system with a Hessian :math:`B_k` that is positive definite on the null space of :math:`G_k`,

.. math::
    K_k z = b_k, \\qquad K_k = \\begin{bmatrix} B_k & G_k^\\top \\\\ G_k & 0 \\end{bmatrix}, \\quad
    b_k = -\\begin{bmatrix} \\nabla_x L_k \\\\ c_k \\end{bmatrix}, \\quad z = (\\Delta x, \\Delta\\lambda),

and solves it inexactly by a randomized iterative sketching solver started at :math:`z = 0`:

- ``sketch='gaussian'``: sketch-and-project with one Gaussian vector :math:`S \\sim \\mathcal N(0, I)`,
  :math:`z \\leftarrow z - \\frac{S^\\top r}{\\|K^\\top S\\|^2} K^\\top S` with :math:`r = K z - b`;
- ``sketch='uniform_row'``: randomized Kaczmarz with a uniformly drawn row :math:`i`,
  :math:`z \\leftarrow z - \\frac{r_i}{\\|K_{i\\cdot}\\|^2} K_{i\\cdot}^\\top`;
- ``sketch='exact'``: a direct dense solve (the deterministic Newton-KKT baseline; no sketching).

The solver stops at the adaptive accuracy condition

.. math::
    \\psi_k \\|K_k\\|_F \\, \\|r\\| \\le \\theta \\, \\delta_k \\|b_k\\|, \\qquad
    \\psi_k = \\frac{20 \\max(\\|B_k\\|_F^2, 1)}{\\min(\\xi_{G}, 1) \\min(\\xi_B, 1)},

with :math:`\\xi_G = \\lambda_{\\min}(G_k G_k^\\top)`. The step must be a descent direction of the exact augmented
Lagrangian (the merit)

.. math::
    \\mathcal L_{\\mu,\\nu}(x, \\lambda) = L(x, \\lambda) + \\frac{\\mu}{2}\\|c(x)\\|^2
        + \\frac{\\nu}{2}\\|\\nabla_x L(x, \\lambda)\\|^2, \\qquad
    \\nabla \\mathcal L_{\\mu,\\nu} = \\begin{bmatrix} \\nabla_x L + \\nu \\nabla_x^2 L \\, \\nabla_x L
        + \\mu G^\\top c \\\\ c + \\nu G \\nabla_x L \\end{bmatrix},

in the sense :math:`\\nabla \\mathcal L_{\\mu,\\nu}^\\top z \\le -\\frac{\\nu}{2}\\|b_k\\|^2`. While it is not, the
penalties move (:math:`\\mu \\leftarrow \\rho^2 \\mu`, :math:`\\nu \\leftarrow \\nu / \\rho`), the accuracy tightens
(:math:`\\delta \\leftarrow \\max(\\min(\\delta/\\rho^4, \\delta_{trial}), \\delta_{\\min})` with
:math:`\\delta_{trial} = \\frac{(1/2 - \\beta)\\nu}{(1 + \\mu + \\nu)\\Upsilon^2 \\psi^2}`,
:math:`\\Upsilon = \\max(\\|G\\|_F, \\|\\nabla^2_x L\\|_F, 1)`), and the sketch solver continues from its current
:math:`z`. The step size :math:`\\alpha_k` comes from Armijo backtracking (halving) on the merit,
:math:`\\mathcal L_{\\mu,\\nu}(x + \\alpha\\Delta x, \\lambda + \\alpha\\Delta\\lambda) \\le \\mathcal L_{\\mu,\\nu}(x, \\lambda)
+ \\alpha\\beta\\nabla\\mathcal L_{\\mu,\\nu}^\\top z`.

Hessian modification (as in the official code): when the reduced Hessian :math:`Z^\\top \\nabla^2_x L Z`
(:math:`Z` an orthonormal null-space basis of :math:`G`) has an eigenvalue below ``1e-6``,
:math:`B_k = \\nabla^2_x L + (\\xi_B + \\|\\nabla^2_x L\\|_F) I`, else :math:`B_k = \\nabla^2_x L`.

Symbols to arguments: :math:`f` = ``f`` (``(d,) -> scalar``), :math:`c` = ``c`` (``(d,) -> (m,)``),
:math:`x_0` = ``x0`` (``(d,)``), :math:`\\lambda_0` = ``lam0`` (``(m,)``), :math:`\\mu_0` = ``mu0`` (official
``eta1``), :math:`\\nu_0` = ``nu0`` (``eta2``), :math:`\\delta_0` = ``delta0``, :math:`\\xi_B` = ``xi_B``,
:math:`\\beta` = ``beta``, :math:`\\rho` = ``rho`` (official ``nu`` = 1.5), :math:`\\theta` = ``theta``,
:math:`\\delta_{\\min}` = ``delta_min``. Defaults are the official code's CUTEst parameters. Derivatives come
from torch autograd (dense Hessians and Jacobians: meant for small and moderate ``d``).

Deviations: the merit gradient uses the Lagrangian Hessian :math:`\\nabla^2_x L` (its exact derivative, as in the
paper); the official code uses :math:`\\nabla^2 f`, which agrees only for linear constraints. The accuracy
parameter :math:`\\theta` is held constant (the official code's choice; the paper's superlinear variant lets
:math:`\\theta_k \\to 0`). A nearly rank-deficient Jacobian (:math:`\\xi_G <` ``min_jacobian_eig``) raises
instead of returning NaN; the line search stops after ``max_line_search`` halvings and takes that step. The
residual is recomputed with one matrix-vector product per sketch iteration (dense :math:`K`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Choice, Function, Generator, Int, Real, Tensor, accepts
from paperzoo.core.convergence import check_finite_iterate, warn_not_converged

__all__ = ["SketchedEALResult", "solve_sketched_eal", "sketch_solve_kkt"]

_SKETCHES = ("gaussian", "uniform_row", "exact")


class SketchedEALResult(NamedTuple):
    """Result of :func:`solve_sketched_eal`.

    Attributes:
        x: final primal iterate ``(d,)``.
        lam: final multiplier ``(m,)``.
        n_iter: SQP iterations taken.
        converged: KKT residual :math:`\\|(\\nabla_x L, c)\\| \\le` ``tol`` at the returned point.
        kkt_residual: :math:`\\|(\\nabla_x L_k, c_k)\\|` for ``k = 0..n_iter``, ``(n_iter + 1,)``.
        sketch_iters: sketch-solver iterations used by SQP step ``k``, ``(n_iter,)`` (0 for ``'exact'``).
        step_size: accepted :math:`\\alpha_k`, ``(n_iter,)``.
        mu: :math:`\\mu_k` used at step ``k``, ``(n_iter,)``.
        nu: :math:`\\nu_k` used at step ``k``, ``(n_iter,)``.
    """

    x: torch.Tensor
    lam: torch.Tensor
    n_iter: int
    converged: bool
    kkt_residual: torch.Tensor
    sketch_iters: torch.Tensor
    step_size: torch.Tensor
    mu: torch.Tensor
    nu: torch.Tensor


def _kkt_example(ctx) -> dict:
    N = ctx.size("N")
    K = torch.randn(N, N, generator=ctx.generator, dtype=ctx.dtype) + 4.0 * torch.eye(N, dtype=ctx.dtype)
    return {"K": K, "b": torch.randn(N, generator=ctx.generator, dtype=ctx.dtype),
            "z": torch.zeros(N, dtype=ctx.dtype), "threshold": 1e-6, "sketch": "gaussian", "max_iter": 20,
            "generator": torch.Generator().manual_seed(0)}


@accepts(K=Tensor("N", "N", degenerate=("zeros",)), b=Tensor("N", degenerate=("zeros",)),
         z=Tensor("N", degenerate=("zeros",)), threshold=Real(ge=0), sketch=Choice(*_SKETCHES[:2]),
         max_iter=Int(ge=0), generator=Generator(), example=_kkt_example)
def sketch_solve_kkt(K: torch.Tensor, b: torch.Tensor, z: torch.Tensor, threshold: float, *, sketch: str,
                     max_iter: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """Randomized iterative sketching for :math:`K z = b` from a warm start until :math:`\\|Kz - b\\| \\le`
    ``threshold`` or ``max_iter`` iterations (update rules in the module docstring).

    Args:
        K: ``(N, N)`` matrix (need not be symmetric; ``uniform_row`` uses its rows).
        b: ``(N,)`` right-hand side.
        z: ``(N,)`` starting point (not modified).
        threshold: residual norm to reach, ``>= 0``.
        sketch: ``'gaussian'`` or ``'uniform_row'``.
        max_iter: iteration cap, ``>= 0``.
        generator: source of the random sketches.

    Returns:
        ``(z, iterations)``.

    Example:
        >>> K = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> z, t = sketch_solve_kkt(K, torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64),
        ...                         1e-10, sketch='uniform_row', max_iter=10_000,
        ...                         generator=torch.Generator().manual_seed(0))
        >>> [round(v, 6) for v in z.tolist()]
        [0.4, 0.2]
    """
    return _sketch_loop(K, b, z.clone(), float(threshold), sketch, int(max_iter), generator)


def _sketch_loop(K, b, z, threshold, sketch, max_iter, generator):
    r = K @ z - b
    N = b.shape[0]
    row_sq = K.square().sum(1)
    zero = K.new_zeros(())
    t = 0
    while t < max_iter and float(r.norm()) > threshold:
        # A sketch that K annihilates (a zero row, s in the null space of K^T) carries no information: no move.
        # (Clamping the denominator instead overflows to inf * 0 = NaN once |r_i| / tiny exceeds the float range.)
        if sketch == "gaussian":
            s = torch.randn(N, generator=generator, dtype=K.dtype).to(K.device)
            ks = K.T @ s
            denom = ks.square().sum()
            z = z - torch.where(denom > 0, (s @ r) / denom, zero) * ks
        else:
            i = int(torch.randint(N, (1,), generator=generator))
            z = z - torch.where(row_sq[i] > 0, r[i] / row_sq[i], zero) * K[i]
        r = K @ z - b
        t += 1
    return z, t


def _derivatives(f, c, x, lam, need_hessian):
    """f, grad f, c, G = dc/dx, grad_x L and (optionally) the Lagrangian Hessian, all detached."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        fx = f(xr)
        if not isinstance(fx, torch.Tensor) or fx.numel() != 1:
            raise ValueError(f"f must return a scalar tensor, got "
                             f"{f'shape {tuple(fx.shape)}' if isinstance(fx, torch.Tensor) else type(fx).__name__}")
        cx = c(xr)
        if not isinstance(cx, torch.Tensor) or cx.dim() != 1 or cx.shape[0] != lam.shape[0]:
            raise ValueError(f"c must return a tensor of shape ({lam.shape[0]},) (the shape of lam0), got "
                             f"{tuple(cx.shape) if isinstance(cx, torch.Tensor) else type(cx).__name__}")
        Lx = fx.reshape(()) + lam @ cx
        (gL,) = torch.autograd.grad(Lx, xr, create_graph=need_hessian)
    G = torch.autograd.functional.jacobian(c, x.detach(), vectorize=True).reshape(lam.shape[0], x.shape[0])
    H = None
    if need_hessian:
        H = torch.autograd.functional.hessian(lambda v: f(v).reshape(()) + lam @ c(v), x.detach())
        H = 0.5 * (H + H.T)
    return fx.detach().reshape(()), cx.detach(), G.detach(), gL.detach(), H


def _merit(fx, cx, gL, lam, mu, nu):
    return fx + lam @ cx + 0.5 * mu * cx.square().sum() + 0.5 * nu * gL.square().sum()


def _eal_example(ctx) -> dict:
    d = ctx.size("d")
    # min sum(x) s.t. |x|^2 = d: KKT point x = -1, lam = 1/2
    return {"f": lambda x: x.sum(), "c": lambda x: (x.square().sum() - d).reshape(1),
            "x0": -torch.linspace(0.5, 1.5, d, dtype=ctx.dtype), "lam0": torch.ones(1, dtype=ctx.dtype),
            "sketch": "gaussian", "max_sketch_iter": 200, "max_iter": 3, "generator": torch.Generator().manual_seed(0)}


@accepts(f=Function(), c=Function(), x0=Tensor("d"), lam0=Tensor("m"), sketch=Choice(*_SKETCHES), mu0=Real(gt=0),
         nu0=Real(gt=0), delta0=Real(gt=0), xi_B=Real(gt=0), beta=Real(gt=0, lt=0.5), rho=Real(gt=1),
         theta=Real(gt=0, le=1), delta_min=Real(gt=0), min_jacobian_eig=Real(ge=0), max_sketch_iter=Int(ge=1),
         max_line_search=Int(ge=0), max_iter=Int(ge=1), tol=Real(ge=0), generator=Generator(),
         example=_eal_example)
def solve_sketched_eal(
    f: Callable[[torch.Tensor], torch.Tensor],
    c: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    lam0: torch.Tensor,
    *,
    sketch: str = "gaussian",
    mu0: float = 1.0,
    nu0: float = 0.1,
    delta0: float = 0.1,
    xi_B: float = 0.1,
    beta: float = 0.1,
    rho: float = 1.5,
    theta: float = 1.0,
    delta_min: float = 1e-6,
    min_jacobian_eig: float = 1e-10,
    max_sketch_iter: int = 100_000,
    max_line_search: int = 60,
    max_iter: int = 200,
    tol: float = 1e-6,
    generator: torch.Generator | None = None,
) -> SketchedEALResult:
    """AdaSketch-Newton for :math:`\\min f(x)` s.t. :math:`c(x) = 0` (Algorithm 1; update rules in the module
    docstring).

    Args:
        f: objective, ``(d,) -> scalar`` tensor, twice differentiable by autograd.
        c: equality constraints, ``(d,) -> (m,)``, twice differentiable by autograd.
        x0: primal start ``(d,)``, floating.
        lam0: multiplier start ``(m,)``, same dtype as ``x0``.
        sketch: ``'gaussian'`` (Gaussian vector sketch-and-project), ``'uniform_row'`` (randomized Kaczmarz)
            or ``'exact'`` (dense direct solve; the deterministic baseline).
        mu0, nu0: initial merit penalties :math:`\\mu_0 > 0`, :math:`\\nu_0 > 0`.
        delta0: initial accuracy :math:`\\delta_0 > 0`.
        xi_B: Hessian-modification shift and lower curvature constant :math:`\\xi_B > 0`.
        beta: Armijo constant, ``0 < beta < 0.5``.
        rho: penalty update factor, ``> 1``.
        theta: accuracy multiplier in the stopping test, ``0 < theta <= 1``.
        delta_min: floor on :math:`\\delta_k` (the official code's guard against a vanishing accuracy).
        min_jacobian_eig: raise when :math:`\\lambda_{\\min}(GG^\\top)` falls below it (rank-deficient Jacobian).
        max_sketch_iter: sketch iterations per solve before the current direction is used anyway.
        max_line_search: step halvings per iteration.
        max_iter: SQP iterations, ``>= 1``.
        tol: stop when the KKT residual :math:`\\|(\\nabla_x L, c)\\| \\le` ``tol`` (``0``: run all, no warning).
        generator: source of the random sketches.

    Returns:
        A :class:`SketchedEALResult`.

    Example:
        >>> f = lambda x: x.sum()
        >>> c = lambda x: (x.square().sum() - 2.0).reshape(1)
        >>> res = solve_sketched_eal(f, c, torch.tensor([-1.5, -0.5], dtype=torch.float64),
        ...                          torch.ones(1, dtype=torch.float64), sketch='uniform_row',
        ...                          generator=torch.Generator().manual_seed(0))
        >>> res.converged, [round(v, 5) for v in res.x.tolist()], round(res.lam.item(), 5)
        (True, [-1.0, -1.0], 0.5)
    """
    if lam0.shape[0] > x0.shape[0]:
        raise ValueError(f"lam0 must have at most as many entries as x0 (m <= d = {x0.shape[0]}: no more "
                         f"constraints than variables), got {lam0.shape[0]}")
    mu, nu, delta, xi_B, beta, rho = float(mu0), float(nu0), float(delta0), float(xi_B), float(beta), float(rho)
    theta, delta_min, min_jacobian_eig, tol = float(theta), float(delta_min), float(min_jacobian_eig), float(tol)
    max_sketch_iter, max_line_search, max_iter = int(max_sketch_iter), int(max_line_search), int(max_iter)

    x, lam = x0.detach().clone(), lam0.detach().clone()
    d, m = x.shape[0], lam.shape[0]
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    fx, cx, G, gL, H = _derivatives(f, c, x, lam, True)
    if not bool(torch.isfinite(fx)):
        raise ValueError(f"f must be finite at x0, got {float(fx)!r}")
    if not bool(torch.isfinite(cx).all()):
        raise ValueError("c must be finite at x0, got NaN or inf entries")
    if not (bool(torch.isfinite(gL).all()) and bool(torch.isfinite(H).all())):
        raise ValueError("f and c must have finite first and second derivatives at x0, got NaN or inf entries")
    kkt = [torch.cat([gL, cx]).norm()]
    sketch_iters, steps, mus, nus = [], [], [], []
    k = 0
    converged = bool(kkt[-1] <= tol)
    while not converged and k < max_iter:
        xi_G = float(torch.linalg.eigvalsh(G @ G.T)[0])
        if xi_G < min_jacobian_eig:
            raise ValueError(f"solve_sketched_eal: the Jacobian of c is rank deficient at iteration {k} "
                             f"(lambda_min(G G^T) = {xi_G:.3g} < min_jacobian_eig = {min_jacobian_eig}); "
                             "the method assumes linearly independent constraint gradients")
        B = H
        if m < d:
            Q, _ = torch.linalg.qr(G.T, mode="complete")
            Z = Q[:, m:]
            if float(torch.linalg.eigvalsh(Z.T @ H @ Z)[0]) < 1e-6:
                B = H + (xi_B + float(H.norm())) * eye  # convexify on the null space of G
        psi = 20.0 * max(float(B.norm()) ** 2, 1.0) / (min(xi_G, 1.0) * min(xi_B, 1.0))
        upsilon = max(float(G.norm()), float(H.norm()), 1.0)

        def delta_trial():
            return (0.5 - beta) * nu / ((1.0 + mu + nu) * upsilon**2 * psi**2)

        delta = max(min(delta, delta_trial()), delta_min)
        K = torch.cat([torch.cat([B, G.T], 1),
                       torch.cat([G, torch.zeros(m, m, dtype=x.dtype, device=x.device)], 1)], 0)
        b = -torch.cat([gL, cx])
        b_norm, K_norm = float(b.norm()), float(K.norm())
        z = torch.zeros_like(b)
        used = 0
        while True:
            if sketch == "exact":
                z = torch.linalg.solve(K, b)
            else:
                threshold = theta * delta * b_norm / (K_norm * psi)
                z, t = _sketch_loop(K, b, z, threshold, sketch, max_sketch_iter, generator)
                used += t
            grad_merit = torch.cat([gL + nu * (H @ gL) + mu * (G.T @ cx), cx + nu * (G @ gL)])
            slope = float(grad_merit @ z)
            if mu > 1e8 or nu < 1e-8 or slope <= -0.5 * nu * b_norm**2:
                break
            # not a descent direction of the current merit: stronger feasibility penalty, tighter accuracy
            mu *= rho**2
            nu /= rho
            delta = max(min(delta / rho**4, delta_trial()), delta_min)
        merit0 = float(_merit(fx, cx, gL, lam, mu, nu))
        alpha = 1.0
        for _ in range(max_line_search + 1):
            x_new, lam_new = x + alpha * z[:d], lam + alpha * z[d:]
            f_new, c_new, _, gL_new, _ = _derivatives(f, c, x_new, lam_new, False)
            merit_new = float(_merit(f_new, c_new, gL_new, lam_new, mu, nu))
            if merit_new <= merit0 + alpha * beta * slope:
                break
            alpha *= 0.5
        else:
            alpha *= 2.0  # the last trial tried was alpha; keep it
        k += 1
        check_finite_iterate("solve_sketched_eal", x_new, k, "decrease mu0 or check f and c")
        sketch_iters.append(used)
        steps.append(alpha)
        mus.append(mu)
        nus.append(nu)
        x, lam = x_new, lam_new
        fx, cx, G, gL, H = _derivatives(f, c, x, lam, True)
        kkt.append(torch.cat([gL, cx]).norm())
        converged = bool(kkt[-1] <= tol)
    if not converged and tol > 0:
        warn_not_converged("solve_sketched_eal", max_iter, tol, "increase max_iter or max_sketch_iter")
    as_tensor = lambda v, dt: torch.tensor(v, dtype=dt)  # noqa: E731
    return SketchedEALResult(x, lam, k, converged, torch.stack(kkt), as_tensor(sketch_iters, torch.int64),
                             as_tensor(steps, torch.float64), as_tensor(mus, torch.float64),
                             as_tensor(nus, torch.float64))
