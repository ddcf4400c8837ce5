"""Active multi-task representation learning on linear representations: target-source relevance (the L1 and L2
relevance vectors, a Lasso estimate), source-sample allocation rules, a multi-task representation fit and the
first-order prediction of the learned representation's error on the target.

References: Improved Active Multi-Task Representation Learning via Lasso (Wang, Chen, Jamieson, Du), 2023;
Active Multi-Task Representation Learning (Chen, Du, Jamieson), 2022.

Model: source task ``m = 1..M`` draws :math:`x \\sim \\mathcal N(0, I_d)`, :math:`y = x^\\top B^* w^*_m + \\sigma
\\epsilon`, with a shared representation :math:`B^* \\in \\mathbb R^{d \\times k}` (``d x k``, orthonormal columns)
and heads :math:`W^* = [w^*_1, \\dots, w^*_M]` (``W``, shape ``k x M``). The target head :math:`w^*_0` (``w0``,
shape ``k``) lies in the span of the source heads, :math:`w^*_0 = W^* \\nu` for some relevance vector
:math:`\\nu \\in \\mathbb R^M`. The two canonical choices (:func:`relevance_vectors`):
:math:`\\nu^2 = \\arg\\min \\{\\|\\nu\\|_2 : W^*\\nu = w^*_0\\}` (Chen et al.'s relevance) and
:math:`\\nu^1 = \\arg\\min \\{\\|\\nu\\|_1 : W^*\\nu = w^*_0\\}` (basis pursuit, the paper's); when the heads are
unknown, :func:`lasso_relevance` estimates :math:`\\nu^1` from estimated heads by the Lasso
:math:`\\min_\\nu \\tfrac{1}{2k}\\|\\hat w_0 - \\hat W\\nu\\|_2^2 + \\lambda\\|\\nu\\|_1` (scikit-learn's scaling,
``k`` rows).

Allocation (:func:`source_allocation`) of a budget of ``N`` source samples: ``"uniform"`` :math:`n_m = N/M`;
``"nu2"`` (Chen et al.'s rule) :math:`n_m \\propto \\nu_m^2`; ``"nu1"`` (the paper's rule) :math:`n_m \\propto
|\\nu_m|`; rounded to integers that sum to ``N`` exactly, on top of a per-task ``floor``.

Prediction (:func:`predicted_representation_error`), derived here: fit :math:`(\\hat B, \\hat W)` by least squares
over all source samples. To first order in the noise, the component of :math:`\\hat B - B^*` orthogonal to
:math:`B^*` applied to :math:`w^*_0` is :math:`P_\\perp \\sum_m X_m^\\top \\epsilon_m\\, w_m^{*\\top} (W^* D W^{*\\top})^{-1}
w^*_0` with :math:`D = \\mathrm{diag}(n_m)`, so the error of the learned subspace on the target,
:math:`\\|(I - P_{\\hat B}) B^* w^*_0\\|_2^2` (the target excess risk left with unlimited target data), has mean

.. math::
    \\mathcal E(n) \\approx \\sigma^2 (d - k)\\, w_0^{*\\top} (W^* \\mathrm{diag}(n) W^{*\\top})^{-1} w^*_0
    = \\sigma^2 (d - k) \\min_{\\nu : W^*\\nu = w^*_0} \\sum_m \\nu_m^2 / n_m .

Minimised over allocations with :math:`\\sum_m n_m = N` this is :math:`\\sigma^2 (d-k) \\|\\nu^1\\|_1^2 / N`, attained
by :math:`n \\propto |\\nu^1|` (with :math:`\\nu^1` supported on ``k`` independent heads); uniform sampling gives
:math:`\\sigma^2 (d-k) M \\|\\nu^2\\|_2^2 / N`. This is the paper's ordering: the ``nu1`` rule reaches the
optimal :math:`\\|\\nu^1\\|_1^2` sample complexity, the ``nu2`` rule cannot in general, uniform pays the factor
``M``.

:func:`fit_linear_representation` is the multi-task least-squares fit from per-task sufficient statistics
(``gram[m] = X_m^T X_m``, ``xty[m] = X_m^T y_m``) by alternating least squares; :func:`active_mtrl` runs the
two-stage procedure (a uniform pilot, a relevance estimate, the allocation of the rest of the budget, a refit).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Choice, Function, Generator, Int, Real, Tensor, accepts

__all__ = ["RelevanceVectors", "LassoRelevance", "LinearRepresentation", "ActiveMTRLResult", "relevance_vectors",
           "lasso_relevance", "source_allocation", "predicted_representation_error", "fit_linear_representation",
           "linear_mtrl_sampler", "active_mtrl", "subspace_target_error"]


class RelevanceVectors(NamedTuple):
    """The L1 (basis pursuit) and L2 (minimum-norm) relevance vectors and their norms."""

    nu1: torch.Tensor
    nu2: torch.Tensor
    nu1_l1: float
    nu2_l1: float
    nu2_l2: float
    residual: float


class LassoRelevance(NamedTuple):
    """A Lasso estimate of the relevance vector, with solver diagnostics."""

    nu: torch.Tensor
    n_iter: int
    converged: bool
    support: int


class LinearRepresentation(NamedTuple):
    """A fitted linear representation ``B`` (``d x k``, orthonormal columns) and heads ``W`` (``k x M``)."""

    B: torch.Tensor
    W: torch.Tensor
    n_iter: int
    converged: bool
    objective: float


class ActiveMTRLResult(NamedTuple):
    """Outcome of :func:`active_mtrl`."""

    B: torch.Tensor
    W: torch.Tensor
    w0: torch.Tensor
    nu: torch.Tensor | None
    counts: torch.Tensor
    pilot_counts: torch.Tensor
    n_iter: int
    converged: bool


def _example_heads(ctx):
    k, m = ctx.size("k"), ctx.size("M")
    W = torch.randn(k, m + k, generator=ctx.generator, dtype=ctx.dtype)[:, :m]
    return W


def _example_rel(ctx):
    W = _example_heads(ctx)
    nu = torch.zeros(W.shape[1], dtype=ctx.dtype)
    nu[: min(2, W.shape[1])] = torch.tensor([1.0, -0.5], dtype=ctx.dtype)[: min(2, W.shape[1])]
    return {"W": W, "w0": W @ nu}


@accepts(W=Tensor("k", "M"), w0=Tensor("k"), example=_example_rel)
def relevance_vectors(W: torch.Tensor, w0: torch.Tensor) -> RelevanceVectors:
    """Relevance vectors of a target head on source heads: the minimum-L1 :math:`\\nu^1` and minimum-L2
    :math:`\\nu^2` solutions of :math:`W\\nu = w_0`.

    References: Improved Active Multi-Task Representation Learning via Lasso, 2023.

    :math:`\\nu^2 = W^+ w_0` (pseudo-inverse); :math:`\\nu^1` solves the linear program
    :math:`\\min \\mathbf 1^\\top (p + q)` s.t. :math:`W(p - q) = w_0`, :math:`p, q \\ge 0` (scipy's HiGHS), applied to
    the projection of ``w0`` on the column span of ``W`` (``residual`` is the norm of what is left outside).
    Shapes: ``W`` ``(k, M)``, ``w0`` ``(k,)``; ``nu1``, ``nu2`` ``(M,)``.

    Example:
        >>> W = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
        >>> r = relevance_vectors(W, torch.tensor([1.0, 1.0], dtype=torch.float64))
        >>> [round(v, 4) for v in r.nu1.tolist()], round(r.nu1_l1, 4), round(r.nu2_l1, 4)
        ([0.0, 0.0, 1.0], 1.0, 1.3333)
    """
    import numpy as np
    from scipy.optimize import linprog

    # In float64 on the numerical row space of W (rank r): W nu = proj(w0) is S_r V_r^T nu = U_r^T w0, a full-row-rank
    # system, so the linear program stays feasible even when W is rank-deficient or given in float32.
    Wn, b = W.detach().cpu().double().numpy(), w0.detach().cpu().double().numpy()
    U, S, Vt = np.linalg.svd(Wn, full_matrices=False)
    m = Wn.shape[1]
    r = int((S > S[0] * max(Wn.shape) * np.finfo(np.float64).eps).sum()) if S.size and S[0] > 0 else 0
    coef = U[:, :r].T @ b
    nu2d = Vt[:r].T @ (coef / S[:r])
    residual = float(np.linalg.norm(b - U[:, :r] @ coef))
    nu2 = torch.as_tensor(nu2d, dtype=W.dtype, device=W.device)
    if r == 0:
        zero = torch.zeros(m, dtype=W.dtype, device=W.device)
        return RelevanceVectors(zero, zero.clone(), 0.0, 0.0, 0.0, residual)
    A = S[:r, None] * Vt[:r]
    res = linprog(np.ones(2 * m), A_eq=np.hstack([A, -A]), b_eq=coef, bounds=(0, None), method="highs")
    if not res.success:  # pragma: no cover - a full-row-rank equality system is always feasible
        raise RuntimeError(f"basis pursuit failed: {res.message}")
    nu1 = torch.as_tensor(res.x[:m] - res.x[m:], dtype=W.dtype, device=W.device)
    nu1 = torch.where(nu1.abs() < 1e-12 * max(1.0, float(nu1.abs().max())), torch.zeros_like(nu1), nu1)
    return RelevanceVectors(nu1, nu2, float(nu1.abs().sum()), float(nu2.abs().sum()), float(nu2.norm()), residual)


def _soft(x, t):
    return torch.sign(x) * torch.clamp(x.abs() - t, min=0.0)


def _lasso(W, w0, lam, max_iter, tol):
    k = W.shape[0]
    L = float(torch.linalg.matrix_norm(W, ord=2)) ** 2 / k
    if L == 0.0:
        return torch.zeros(W.shape[1], dtype=W.dtype, device=W.device), 0, True
    step = 1.0 / L
    tol = max(tol, 100.0 * torch.finfo(W.dtype).eps)  # no tighter than the dtype can resolve
    x = torch.zeros(W.shape[1], dtype=W.dtype, device=W.device)
    z, t = x.clone(), 1.0
    for it in range(1, max_iter + 1):
        grad = W.T @ (W @ z - w0) / k
        x_new = _soft(z - step * grad, step * lam)
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        z = x_new + ((t - 1.0) / t_new) * (x_new - x)
        delta = float((x_new - x).abs().max())
        x, t = x_new, t_new
        if not math.isfinite(delta):
            raise FloatingPointError("lasso_relevance: NaN/inf in the iterates")
        if delta <= tol * max(1.0, float(x.abs().max())):
            return x, it, True
    return x, max_iter, False


@accepts(W=Tensor("k", "M"), w0=Tensor("k"), lam=Real(gt=0, example=0.01), max_iter=Int(ge=1, example=5000),
         tol=Real(gt=0, example=1e-10), example=_example_rel)
def lasso_relevance(W: torch.Tensor, w0: torch.Tensor, lam: float, *, max_iter: int = 20000,
                    tol: float = 1e-10) -> LassoRelevance:
    """Lasso estimate of the L1 relevance vector,
    :math:`\\hat\\nu = \\arg\\min_\\nu \\tfrac{1}{2k}\\|w_0 - W\\nu\\|_2^2 + \\lambda\\|\\nu\\|_1` (``lam`` = :math:`\\lambda`,
    the scaling of ``sklearn.linear_model.Lasso(alpha=lam, fit_intercept=False)`` on the ``k`` rows of ``W``).

    References: Improved Active Multi-Task Representation Learning via Lasso, 2023.

    Solved by FISTA (accelerated proximal gradient, step ``1/L``, :math:`L = \\|W\\|_2^2/k`); stops when the largest
    coordinate change is below ``tol`` (relative; floored at 100 machine epsilons of the dtype), warns when ``max_iter`` is reached. As ``lam -> 0`` the estimate
    tends to :math:`\\nu^1` of :func:`relevance_vectors`. Shapes: ``W`` ``(k, M)``, ``w0`` ``(k,)``, ``nu`` ``(M,)``.

    Example:
        >>> W = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
        >>> r = lasso_relevance(W, torch.tensor([1.0, 1.0], dtype=torch.float64), 1e-3)
        >>> [round(v, 3) for v in r.nu.tolist()], r.converged
        ([0.0, 0.0, 0.999], True)
    """
    nu, it, conv = _lasso(W, w0, lam, max_iter, tol)
    if not conv:
        warnings.warn(f"lasso_relevance did not converge in {max_iter} iterations", RuntimeWarning, stacklevel=2)
    return LassoRelevance(nu, it, conv, int((nu != 0).sum()))


def _allocate(nu, budget, strategy, floor, m):
    if strategy == "uniform":
        weights = torch.ones(m, dtype=torch.float64)
    else:
        if nu is None:
            raise ValueError(f"nu is required for strategy {strategy!r}")
        a = nu.detach().double().abs().cpu()
        weights = a if strategy == "nu1" else a ** 2
        if float(weights.sum()) == 0.0:
            weights = torch.ones(m, dtype=torch.float64)
    share = budget * weights / weights.sum()
    base = torch.floor(share)
    left = int(budget - int(base.sum()))
    if left > 0:
        order = torch.argsort(share - base, descending=True, stable=True)
        base[order[:left]] += 1
    return base.long() + floor


@accepts(budget=Int(ge=0, example=30), strategy=Choice("uniform", "nu1", "nu2"), nu=Tensor("M", optional=True),
         n_tasks=Int(ge=1, optional=True), floor=Int(ge=0, example=0),
         example=lambda ctx: {"nu": torch.tensor([1.0, -0.5, 0.0], dtype=ctx.dtype), "budget": 30,
                              "strategy": "nu1"})
def source_allocation(budget: int, strategy: str, nu: torch.Tensor | None = None, *, n_tasks: int | None = None,
                      floor: int = 0) -> torch.Tensor:
    """Source-sample allocation rule: ``"uniform"`` :math:`n_m = N/M`, ``"nu1"`` :math:`n_m \\propto |\\nu_m|`,
    ``"nu2"`` :math:`n_m \\propto \\nu_m^2` (``budget`` = N), each plus ``floor`` samples per task.

    References: Improved Active Multi-Task Representation Learning via Lasso, 2023; Active Multi-Task
    Representation Learning, 2022.

    Rounded by largest remainders so the counts above the floor sum to ``budget`` exactly; a zero ``nu`` falls
    back to uniform. ``M`` comes from ``nu`` or ``n_tasks``. Returns an int64 tensor ``(M,)``.

    Example:
        >>> source_allocation(30, "nu1", torch.tensor([1.0, -0.5, 0.0], dtype=torch.float64)).tolist()
        [20, 10, 0]
        >>> source_allocation(30, "nu2", torch.tensor([1.0, -0.5, 0.0], dtype=torch.float64)).tolist()
        [24, 6, 0]
    """
    if nu is None and n_tasks is None:
        raise ValueError("source_allocation needs nu or n_tasks to know the number of tasks")
    m = nu.shape[0] if nu is not None else n_tasks
    if nu is not None and n_tasks is not None and n_tasks != m:
        raise ValueError(f"n_tasks must equal len(nu) = {m}, got {n_tasks}")
    return _allocate(nu, budget, strategy, floor, m)


@accepts(W=Tensor("k", "M"), w0=Tensor("k"), counts=Tensor("M", dtype="any"), noise_var=Real(ge=0, example=1.0),
         d=Int(ge=1, example=10),
         example=lambda ctx: {**_example_rel(ctx), "counts": torch.full((ctx.size("M"),), 5.0, dtype=ctx.dtype),
                              "d": ctx.size("k") + 4})
def predicted_representation_error(W: torch.Tensor, w0: torch.Tensor, counts: torch.Tensor, noise_var: float,
                                   d: int) -> float:
    """First-order mean error of a least-squares multi-task representation on the target,
    :math:`\\sigma^2 (d - k)\\, w_0^\\top (W \\mathrm{diag}(n) W^\\top)^{+} w_0` (``noise_var`` = :math:`\\sigma^2`,
    ``counts`` = :math:`n`, isotropic Gaussian inputs, orthonormal :math:`B^*`; see the module docstring).

    References: Improved Active Multi-Task Representation Learning via Lasso, 2023 (the :math:`\\sum_m \\nu_m^2/n_m`
    term of its bounds; the exact first-order constant is derived here).

    Example:
        >>> W = torch.eye(2, dtype=torch.float64)
        >>> predicted_representation_error(W, torch.tensor([1.0, 0.0], dtype=torch.float64),
        ...                                torch.tensor([10.0, 10.0], dtype=torch.float64), 1.0, 12)
        1.0
    """
    k = W.shape[0]
    if d < k:
        raise ValueError(f"d must be >= k = {k}, got {d}")
    n = counts.to(W.dtype)
    if bool((n < 0).any()):
        raise ValueError("counts must be nonnegative")
    A = (W * n) @ W.T
    val = float(w0 @ torch.linalg.pinv(A, hermitian=True) @ w0)
    return noise_var * (d - k) * val


@accepts(B=Tensor("d", "k"), theta0=Tensor("d"),
         example=lambda ctx: {"B": torch.linalg.qr(torch.randn(ctx.size("d") + 3, ctx.size("k"),
                                                                generator=ctx.generator, dtype=ctx.dtype))[0],
                              "theta0": torch.randn(ctx.size("d") + 3, generator=ctx.generator, dtype=ctx.dtype)})
def subspace_target_error(B: torch.Tensor, theta0: torch.Tensor) -> float:
    """Error of a representation on the target with unlimited target data, :math:`\\|(I - P_B)\\theta_0\\|_2^2`
    (``P_B`` the projection on the column span of ``B``, ``theta0`` = :math:`B^* w_0^*`).

    References: Improved Active Multi-Task Representation Learning via Lasso, 2023.

    Example:
        >>> subspace_target_error(torch.eye(3, dtype=torch.float64)[:, :1], torch.tensor([1.0, 2.0, 0.0],
        ...                       dtype=torch.float64))
        4.0
    """
    Q = torch.linalg.qr(B)[0]
    r = theta0 - Q @ (Q.T @ theta0)
    return float(r @ r)


def _heads_given_B(gram, xty, B, ridge):
    A = torch.einsum("di,mde,ej->mij", B, gram, B)
    A = A + ridge * torch.eye(B.shape[1], dtype=B.dtype, device=B.device)
    rhs = xty @ B
    return torch.linalg.solve(A, rhs.unsqueeze(-1)).squeeze(-1).T  # (k, M)


def _fit_repr(gram, xty, k, B0, max_iter, tol, ridge):
    m, d, _ = gram.shape
    if B0 is None:
        scale = gram.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(1e-300) / d  # ~ n_m
        theta = xty / scale.unsqueeze(-1)
        U = torch.linalg.svd((theta * scale.sqrt().unsqueeze(-1)).T, full_matrices=False)[0]
        B = U[:, :k]
    else:
        B = torch.linalg.qr(B0)[0]
    tol = max(tol, 100.0 * torch.finfo(gram.dtype).eps)
    eye_dk = torch.eye(d * k, dtype=gram.dtype, device=gram.device)
    prev = math.inf
    obj = math.inf
    for it in range(1, max_iter + 1):
        W = _heads_given_B(gram, xty, B, ridge)
        # normal equations for vec(B) (row-major: index (i, a) -> i * k + a)
        Wp = (W.unsqueeze(1) * W.unsqueeze(0)).reshape(k * k, m)
        A = (Wp @ gram.reshape(m, d * d)).reshape(k, k, d, d).permute(2, 0, 3, 1).reshape(d * k, d * k)
        rhs = (xty.T @ W.T).reshape(d * k)
        Bn = torch.linalg.solve(A + ridge * eye_dk, rhs).reshape(d, k)
        B = torch.linalg.qr(Bn)[0]
        W = _heads_given_B(gram, xty, B, ridge)
        fit = torch.einsum("di,im->md", B, W)
        obj = float(-2.0 * (fit * xty).sum() + (torch.bmm(gram, fit.unsqueeze(-1)).squeeze(-1) * fit).sum())
        if not math.isfinite(obj):
            raise FloatingPointError("fit_linear_representation: NaN/inf in the objective")
        if abs(prev - obj) <= tol * max(1.0, abs(obj)):
            return B, W, it, True, obj
        prev = obj
    return B, W, max_iter, False, obj


def _example_stats(ctx):
    d, k, m = ctx.size("d") + 4, 2, ctx.size("M") + 1
    g = ctx.generator
    B = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=ctx.dtype))[0]
    W = torch.randn(k, m, generator=g, dtype=ctx.dtype)
    X = torch.randn(m, 3 * d, d, generator=g, dtype=ctx.dtype)
    y = torch.einsum("mnd,dk,km->mn", X, B, W) + 0.1 * torch.randn(m, 3 * d, generator=g, dtype=ctx.dtype)
    return {"gram": X.transpose(1, 2) @ X, "xty": torch.einsum("mnd,mn->md", X, y), "k": k}


@accepts(gram=Tensor("M", "d", "d"), xty=Tensor("M", "d"), k=Int(ge=1, example=2), B0=Tensor("d", "k", optional=True),
         max_iter=Int(ge=1, example=200), tol=Real(gt=0, example=1e-12), ridge=Real(ge=0, example=0.0),
         example=_example_stats)
def fit_linear_representation(gram: torch.Tensor, xty: torch.Tensor, k: int, *, B0: torch.Tensor | None = None,
                              max_iter: int = 200, tol: float = 1e-12, ridge: float = 0.0) -> LinearRepresentation:
    """Multi-task least-squares linear representation,
    :math:`\\min_{B, W} \\sum_m \\|y_m - X_m B w_m\\|_2^2`, from per-task sufficient statistics
    (``gram[m]`` = :math:`X_m^\\top X_m`, ``xty[m]`` = :math:`X_m^\\top y_m`).

    References: Improved Active Multi-Task Representation Learning via Lasso, 2023 (the estimator of its
    analysis); Active Multi-Task Representation Learning, 2022.

    Alternating least squares: heads given ``B`` (``M`` batched ``k x k`` solves), then ``B`` given the heads (one
    ``dk x dk`` solve), re-orthonormalised (the product ``BW`` is unchanged in span); started from ``B0`` or from the
    top ``k`` left singular vectors of the per-task moment estimates. Stops when the objective changes by less than
    ``tol`` (relative) and warns otherwise; ``ridge`` adds :math:`\\rho I` to each solve. Shapes: ``gram``
    ``(M, d, d)``, ``xty`` ``(M, d)``; ``B`` ``(d, k)`` orthonormal, ``W`` ``(k, M)``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> X = torch.randn(4, 40, 6, generator=g, dtype=torch.float64)
        >>> Bs = torch.linalg.qr(torch.randn(6, 2, generator=g, dtype=torch.float64))[0]
        >>> y = torch.einsum("mnd,dk,km->mn", X, Bs, torch.randn(2, 4, generator=g, dtype=torch.float64))
        >>> r = fit_linear_representation(X.transpose(1, 2) @ X, torch.einsum("mnd,mn->md", X, y), 2)
        >>> round(subspace_target_error(r.B, Bs[:, 0]), 8), r.converged
        (0.0, True)
    """
    m, d, _ = gram.shape
    if k > d:
        raise ValueError(f"k must be <= d = {d}, got {k}")
    if k > min(gram.shape[0], gram.shape[1]):
        raise ValueError(f"k must be <= min(number of tasks M, dimension d) = {min(gram.shape[0], gram.shape[1])} "
                         f"(a k-dimensional representation is not identified from fewer heads), got {k}")
    B, W, it, conv, obj = _fit_repr(gram, xty, k, B0, max_iter, tol, ridge)
    if not conv:
        warnings.warn(f"fit_linear_representation did not converge in {max_iter} iterations", RuntimeWarning,
                      stacklevel=2)
    return LinearRepresentation(B, W, it, conv, obj)


def _example_model(ctx):
    d, k, m = ctx.size("d") + 4, 2, ctx.size("M")
    g = ctx.generator
    return {"B": torch.linalg.qr(torch.randn(d, k, generator=g, dtype=ctx.dtype))[0],
            "W": torch.randn(k, m, generator=g, dtype=ctx.dtype), "noise_std": 0.5}


def _sample_stats(B, W, noise_std, counts, generator):
    d = B.shape[0]
    m = W.shape[1]
    counts = counts.long().cpu()
    total = int(counts.sum())
    gram = torch.zeros(m, d, d, dtype=B.dtype, device=B.device)
    xty = torch.zeros(m, d, dtype=B.dtype, device=B.device)
    if total == 0:
        return gram, xty
    task = torch.repeat_interleave(torch.arange(m), counts).to(B.device)
    X = torch.randn(total, d, generator=generator, dtype=B.dtype).to(B.device)
    y = (X @ B * W.T[task]).sum(-1) + noise_std * torch.randn(total, generator=generator, dtype=B.dtype).to(B.device)
    gram.index_add_(0, task, X.unsqueeze(2) * X.unsqueeze(1))
    xty.index_add_(0, task, X * y.unsqueeze(1))
    return gram, xty


@accepts(B=Tensor("d", "k"), W=Tensor("k", "M"), noise_std=Real(ge=0, example=0.5), generator=Generator(),
         example=_example_model)
def linear_mtrl_sampler(B: torch.Tensor, W: torch.Tensor, noise_std: float,
                        generator: torch.Generator | None = None) -> Callable[[torch.Tensor], tuple]:
    """Sampler of the linear multi-task model :math:`y = x^\\top B w_m + \\sigma\\epsilon`, :math:`x \\sim \\mathcal
    N(0, I_d)` (``noise_std`` = :math:`\\sigma`): returns ``sample(counts) -> (gram, xty)``, the sufficient statistics
    of ``counts[m]`` fresh samples of each task ``m``.

    References: Improved Active Multi-Task Representation Learning via Lasso, 2023.

    Example:
        >>> s = linear_mtrl_sampler(torch.eye(3, dtype=torch.float64)[:, :1], torch.ones(1, 2, dtype=torch.float64),
        ...                         0.1, torch.Generator().manual_seed(0))
        >>> [t.shape for t in s(torch.tensor([5, 0]))]
        [torch.Size([2, 3, 3]), torch.Size([2, 3])]
    """
    def sample(counts: torch.Tensor):
        if counts.shape != (W.shape[1],):
            raise ValueError(f"counts must have shape ({W.shape[1]},) (one count per task of W), "
                             f"got {tuple(counts.shape)}")
        return _sample_stats(B, W, noise_std, counts, generator)

    return sample


def _example_active(ctx):
    kw = _example_model(ctx)
    g = ctx.generator
    B, W = kw["B"], kw["W"]
    n0 = 20
    X0 = torch.randn(n0, B.shape[0], generator=g, dtype=ctx.dtype)
    y0 = X0 @ (B @ W[:, 0]) + 0.1 * torch.randn(n0, generator=g, dtype=ctx.dtype)
    return {"sampler": linear_mtrl_sampler(B, W, 0.5, g), "n_tasks": W.shape[1], "X0": X0, "y0": y0, "k": 2,
            "budget": 60 * W.shape[1], "pilot": 30, "strategy": "nu1_lasso"}


@accepts(sampler=Function(), n_tasks=Int(ge=1, example=3), X0=Tensor("n0", "d"), y0=Tensor("n0"),
         k=Int(ge=1, example=2), budget=Int(ge=1, example=60), strategy=Choice("uniform", "nu1_lasso", "nu2"),
         pilot=Int(ge=1, example=5), lam_ratio=Real(gt=0, lt=1, example=0.01), max_iter=Int(ge=1, example=200),
         example=_example_active)
def active_mtrl(sampler: Callable, n_tasks: int, X0: torch.Tensor, y0: torch.Tensor, k: int, budget: int,
                strategy: str = "nu1_lasso", *, pilot: int = 10, lam_ratio: float = 0.01,
                max_iter: int = 200) -> ActiveMTRLResult:
    """Two-stage active multi-task representation learning: uniform pilot, relevance estimate, relevance-driven
    allocation of the rest of the source budget, refit.

    References: Improved Active Multi-Task Representation Learning via Lasso, 2023; Active Multi-Task
    Representation Learning, 2022.

    Stage 1: ``pilot`` samples from each of the ``n_tasks`` sources (``sampler(counts) -> (gram, xty)``, e.g.
    :func:`linear_mtrl_sampler`), :func:`fit_linear_representation` gives :math:`(\\hat B, \\hat W)`, the target head
    :math:`\\hat w_0` is least squares of ``y0`` on ``X0 @ B_hat``. Relevance: ``"nu1_lasso"`` the Lasso estimate
    (:func:`lasso_relevance`, :math:`\\lambda` = ``lam_ratio`` times :math:`\\lambda_{max} = \\|\\hat W^\\top
    \\hat w_0\\|_\\infty / k`, the smallest value giving :math:`\\hat\\nu = 0`) allocated by the ``"nu1"`` rule;
    ``"nu2"`` the minimum-norm :math:`\\hat W^+ \\hat w_0` allocated by the ``"nu2"`` rule; ``"uniform"`` none. Stage
    2: the remaining ``budget - pilot * n_tasks`` samples by :func:`source_allocation`, then a refit on all samples
    (warm-started) and the final target head. ``counts`` are the total samples per task.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> B = torch.linalg.qr(torch.randn(8, 2, generator=g, dtype=torch.float64))[0]
        >>> W = torch.randn(2, 6, generator=g, dtype=torch.float64)
        >>> X0 = torch.randn(30, 8, generator=g, dtype=torch.float64); y0 = X0 @ (B @ W[:, 0])
        >>> r = active_mtrl(linear_mtrl_sampler(B, W, 0.1, g), 6, X0, y0, 2, 300, pilot=20)
        >>> int(r.counts.sum()), r.converged
        (300, True)
    """
    if budget < pilot * n_tasks:
        raise ValueError(f"budget must be >= pilot * n_tasks = {pilot * n_tasks}, got {budget}")
    if X0.shape[1] < k:
        raise ValueError(f"k must be <= d = {X0.shape[1]}, got {k}")
    if k > n_tasks:
        raise ValueError(f"k must be <= n_tasks = {n_tasks} (a k-dimensional representation is not identified from "
                         f"fewer source heads), got {k}")
    pilot_counts = torch.full((n_tasks,), pilot, dtype=torch.long)
    try:
        gram, xty = sampler(pilot_counts)
    except ValueError as err:
        raise ValueError(f"sampler rejected {n_tasks} per-task counts (n_tasks = {n_tasks}): {err}") from err
    if gram.shape[0] != n_tasks or xty.shape != gram.shape[:2]:
        raise ValueError(f"sampler must return gram (n_tasks, d, d) and xty (n_tasks, d), got {tuple(gram.shape)} "
                         f"and {tuple(xty.shape)}")
    B, W, it1, conv1, _ = _fit_repr(gram, xty, k, None, max_iter, 1e-10, 0.0)
    Z0 = X0 @ B
    w0 = torch.linalg.lstsq(Z0, y0.unsqueeze(-1)).solution.squeeze(-1)
    nu = None
    if strategy == "nu1_lasso":
        lam_max = float((W.T @ w0).abs().max()) / k
        nu = _lasso(W, w0, lam_ratio * max(lam_max, 1e-300), 20000, 1e-10)[0]
        rule = "nu1"
    elif strategy == "nu2":
        nu = torch.linalg.pinv(W) @ w0
        rule = "nu2"
    else:
        rule = "uniform"
    extra = _allocate(nu, budget - pilot * n_tasks, rule, 0, n_tasks)
    g2, x2 = sampler(extra)
    gram, xty = gram + g2, xty + x2
    B, W, it2, conv2, _ = _fit_repr(gram, xty, k, B, max_iter, 1e-10, 0.0)
    if not (conv1 and conv2):
        warnings.warn("active_mtrl: the representation fit did not converge", RuntimeWarning, stacklevel=2)
    w0 = torch.linalg.lstsq(X0 @ B, y0.unsqueeze(-1)).solution.squeeze(-1)
    return ActiveMTRLResult(B, W, w0, nu, pilot_counts + extra, pilot_counts, it1 + it2, conv1 and conv2)
