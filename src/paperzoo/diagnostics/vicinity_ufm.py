"""Vicinity-constrained unconstrained-features model: features kept near given input features, and its NC1.

References: Perturbation Analysis of Neural Collapse (Tirer, Huang, Niles-Weed), 2023.

The plain unconstrained-features model (UFM) lets the last-layer features move freely, and every minimiser is
exactly collapsed. The paper's richer model keeps the features :math:`H` in the vicinity of a given features
matrix :math:`H_0` (e.g. the features of an earlier layer), so that the minimiser is only partly collapsed. With
MSE loss, one-hot targets :math:`Y` and the penalised form of the vicinity, written here (our scaling) as

.. math::
    F(W, H) = \\frac{1}{2N}\\|H W^\\top - Y\\|_F^2 + \\frac{\\lambda_W}{2}\\|W\\|_F^2
              + \\frac{\\lambda_H}{2N}\\|H\\|_F^2 + \\frac{\\beta}{2N}\\|H - H_0\\|_F^2,

with ``H0`` :math:`= H_0` ``(N, d)``, ``W`` ``(K, d)``, ``beta`` :math:`= \\beta`, ``lam_W`` :math:`= \\lambda_W`,
``lam_H`` :math:`= \\lambda_H`. :math:`\\beta \\to \\infty` pins :math:`H = H_0`; :math:`\\beta = 0` is the plain
UFM (exact collapse).

Two facts carry everything here (our derivation, in the spirit of the paper's perturbation analysis):

* For fixed :math:`W` the minimising features are explicit, row by row:
  :math:`H(W) = (Y W + \\beta H_0) S^{-1}` with :math:`S = W^\\top W + (\\lambda_H + \\beta) I_d`. The solver
  therefore minimises the reduced function :math:`g(W) = F(W, H(W))` (only :math:`Kd` unknowns, its gradient is
  :math:`\\nabla_W F` at :math:`(W, H(W))`) by a saddle-free damped Newton method with exact Hessians.
* Write :math:`H_0 = \\bar H_0 + E` with :math:`\\bar H_0` the class means of :math:`H_0` repeated per sample and
  :math:`E` the within-class deviations. With :math:`E = 0` the minimiser is collapsed (its rows only depend on the
  class); call its last layer :math:`\\bar W` and its class means :math:`\\bar Z`. The within-class directions
  decouple from :math:`W` and from the class means at first order, so

  .. math::
      H^\\star = \\bar Z_{y} + \\beta\\, E\\, \\bar S^{-1} + O(\\|E\\|^2), \\qquad
      \\bar S = \\bar W^\\top \\bar W + (\\lambda_H + \\beta) I,

  and the within-class deviations of the minimiser are those of the input shrunk by :math:`\\beta \\bar S^{-1}`
  (a factor :math:`\\beta/(\\sigma_j^2 + \\lambda_H + \\beta) < 1` along each right singular direction of
  :math:`\\bar W`): NC1 of the minimiser is below that of the input, grows with :math:`\\beta`, and for
  :math:`\\beta \\ll \\lambda_H` scales as :math:`\\beta^2`. :func:`vicinity_nc1_prediction` evaluates this
  first-order minimiser and its NC1.

NC1 is :math:`\\operatorname{tr}(\\Sigma_W \\Sigma_B^+)/K` of
:func:`paperzoo.diagnostics.neural_collapse.neural_collapse_metrics`.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Int, Real, Tensor, accepts
from paperzoo.diagnostics.neural_collapse import neural_collapse_metrics

__all__ = ["VicinityUFMResult", "VicinityNC1Prediction", "solve_vicinity_ufm", "vicinity_ufm_objective",
           "vicinity_nc1_prediction"]


class VicinityUFMResult(NamedTuple):
    """Result of :func:`solve_vicinity_ufm`.

    Attributes:
        W: last layer, shape ``(K, d)``.
        H: features, shape ``(N, d)``.
        objective: :math:`F(W, H)`.
        grad_norm: Frobenius norm of the full gradient :math:`(\\nabla_W F, \\nabla_H F)` at ``(W, H)``.
        min_curvature: smallest eigenvalue of the Hessian of the reduced function :math:`g(W) = F(W, H(W))` at
            ``W`` (``> 0``: a strict local minimiser; about 0 at :math:`\\beta = 0`, where rotations leave
            :math:`F` unchanged).
        n_iter: Newton iterations taken.
        converged: ``grad_norm <= tol * (1 + beta)``.
    """

    W: torch.Tensor
    H: torch.Tensor
    objective: float
    grad_norm: float
    min_curvature: float
    n_iter: int
    converged: bool


class VicinityNC1Prediction(NamedTuple):
    """Result of :func:`vicinity_nc1_prediction`.

    Attributes:
        nc1: NC1 of the first-order minimiser :math:`\\bar Z_y + \\beta E \\bar S^{-1}`.
        nc1_input: NC1 of ``H0``.
        H: the first-order minimiser, shape ``(N, d)``.
        W: :math:`\\bar W`, the last layer of the collapsed problem, shape ``(K, d)``.
        class_means: :math:`\\bar Z`, class means of the collapsed minimiser, shape ``(K, d)``.
        shrinkage: singular values of :math:`\\beta \\bar S^{-1}` (descending), shape ``(d,)``: the factors by which
            the within-class deviations shrink.
    """

    nc1: float
    nc1_input: float
    H: torch.Tensor
    W: torch.Tensor
    class_means: torch.Tensor
    shrinkage: torch.Tensor


def _example(ctx):
    """Three classes with noisy, separated means; moderate vicinity and small weight decay."""
    g, K = ctx.generator, 3
    n, d = K * (1 + ctx.size("n")), K + ctx.size("d")
    y = torch.arange(n) % K
    means = torch.randn(K, d, generator=g, dtype=ctx.dtype)
    H0 = means[y] + 0.3 * torch.randn(n, d, generator=g, dtype=ctx.dtype)
    return {"H0": H0, "y": y, "beta": 0.5, "lam_W": 1e-2, "lam_H": 1e-2}


def _check_problem(H0: torch.Tensor, y: torch.Tensor, beta: float, lam_H: float, num_classes: int | None) -> int:
    if beta == 0 and lam_H == 0:
        raise ValueError("beta + lam_H must be > 0 (with neither, the features can grow without bound and no "
                         "minimiser exists), got beta = 0 and lam_H = 0")
    K = int(y.max()) + 1 if num_classes is None else num_classes
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= K:
        source = "num_classes" if num_classes is not None else "K = max(y) + 1"
        raise ValueError(f"y must have entries in [0, {K - 1}] ({source} = {K}), got entries in [{low}, {high}]")
    if K < 2:
        raise ValueError(f"y must contain at least 2 classes, got {K}")
    return K


def _features(W, T, X0, beta, lam_H):
    """:math:`H(W) = (T W + \\beta X_0) S^{-1}`, the exact minimiser over the features for fixed ``W``."""
    d = W.shape[1]
    S = W.T @ W + (lam_H + beta) * torch.eye(d, dtype=W.dtype, device=W.device)
    return torch.linalg.solve(S, (T @ W + beta * X0).T).T


def _objective(W, H, T, X0, w, beta, lam_W, lam_H):
    """Weighted objective: rows ``i`` with weights ``w_i`` (``1/N`` for the full problem)."""
    fit = ((H @ W.T - T).square().sum(1) * w).sum()
    return 0.5 * (fit + lam_W * W.square().sum() + lam_H * (H.square().sum(1) * w).sum()
                  + beta * ((H - X0).square().sum(1) * w).sum())


def _gradients(W, H, T, X0, w, beta, lam_W, lam_H):
    R = H @ W.T - T
    gW = (w[:, None] * R).T @ H + lam_W * W
    gH = w[:, None] * (R @ W + lam_H * H + beta * (H - X0))
    return gW, gH


def _reduced(W, stats, beta, lam_W, lam_H):
    """:math:`g(W) = F(W, H(W))` from the weighted second moments of the data: no ``(N, d)`` array is formed."""
    Ctt, Ctx, Cxx = stats
    d = W.shape[1]
    S = W.T @ W + (lam_H + beta) * torch.eye(d, dtype=W.dtype, device=W.device)
    WtC = W.T @ Ctx
    B = W.T @ Ctt @ W + beta * (WtC + WtC.T) + beta ** 2 * Cxx  # A^T diag(w) A with A = T W + beta X0
    Si = torch.linalg.inv(S)
    G = Si @ B @ Si  # H^T diag(w) H
    P = Si @ (W.T @ Ctt + beta * Ctx.T)  # H^T diag(w) T
    Q = Si @ (WtC + beta * Cxx)  # H^T diag(w) X0
    fit = torch.trace(W @ G @ W.T) - 2.0 * torch.trace(W @ P) + torch.trace(Ctt)
    return 0.5 * (fit + lam_W * W.square().sum() + (lam_H + beta) * torch.trace(G)
                  - 2.0 * beta * torch.trace(Q) + beta * torch.trace(Cxx))


def _solve(T, X0, w, beta, lam_W, lam_H, max_iter, tol, curvature_floor):
    """Saddle-free damped Newton on the reduced function :math:`g(W)` of weighted rows (unchecked kernel)."""
    K, d = T.shape[1], X0.shape[1]
    eye = torch.eye(d, dtype=X0.dtype, device=X0.device)
    wX0, wT = w[:, None] * X0, w[:, None] * T
    stats = (T.T @ wT, wT.T @ X0, X0.T @ wX0)
    # ridge last layer for H = H0: the start
    W = torch.linalg.solve(stats[2] + lam_W * eye, stats[1].T).T

    def g(flat):
        return _reduced(flat.reshape(K, d), stats, beta, lam_W, lam_H)

    grad_g = torch.func.grad(g)
    x = W.reshape(-1)
    n_iter, value = 0, float(g(x))
    stop = tol * (1.0 + beta)  # rounding in the vicinity term grows with beta
    for n_iter in range(1, max_iter + 1):
        gr = grad_g(x)
        gnorm = float(torch.linalg.vector_norm(gr))
        if not math.isfinite(gnorm) or gnorm <= stop:
            n_iter -= 1
            break
        evals, evecs = torch.linalg.eigh(torch.autograd.functional.hessian(g, x, vectorize=True))
        # |eigenvalue| keeps Newton a descent step at saddles; the floor bounds it along flat directions
        scale = evals.abs().clamp_min(curvature_floor * max(float(evals.abs().max()), 1.0))
        step = -(evecs @ ((evecs.T @ gr) / scale))
        slope = float(gr @ step)
        t = 1.0
        while True:  # Armijo backtracking
            candidate = float(g(x + t * step))
            if candidate <= value + 1e-4 * t * slope or t < 1e-12:
                break
            if t == 1.0 and float(torch.linalg.vector_norm(grad_g(x + step))) < 0.5 * gnorm:
                break  # near the minimum the decrease is below the objective's rounding: trust the full step
            t *= 0.5
        if t < 1e-12:  # no decrease representable: the step is below rounding
            break
        x, value = x + t * step, candidate
    W = x.reshape(K, d)
    H = _features(W, T, X0, beta, lam_H)
    gW, gH = _gradients(W, H, T, X0, w, beta, lam_W, lam_H)
    gnorm = float(torch.sqrt(gW.square().sum() + gH.square().sum()))
    min_curv = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(g, x, vectorize=True))[0])
    return W, H, float(_objective(W, H, T, X0, w, beta, lam_W, lam_H)), gnorm, min_curv, n_iter


def _one_hot(y, K, dtype):
    return torch.nn.functional.one_hot(y.long(), K).to(dtype)


def _default_tol(dtype):
    return 1e-10 if dtype == torch.float64 else 1e-5


@accepts(H0=Tensor("n", "d"), y=Tensor("n", dtype="int"), beta=Real(ge=0), lam_W=Real(gt=0), lam_H=Real(ge=0),
         num_classes=Int(ge=2, optional=True), max_iter=Int(ge=1), tol=Real(ge=0, optional=True),
         curvature_floor=Real(gt=0, lt=1), example=_example)
def solve_vicinity_ufm(H0: torch.Tensor, y: torch.Tensor, beta: float, lam_W: float, *, lam_H: float = 0.0,
                       num_classes: int | None = None, max_iter: int = 100, tol: float | None = None,
                       curvature_floor: float = 1e-12) -> VicinityUFMResult:
    """Minimiser of the vicinity-constrained unconstrained-features model with MSE loss (penalised vicinity).

    References: Perturbation Analysis of Neural Collapse (Tirer, Huang, Niles-Weed), 2023.

    Minimises :math:`F(W, H)` of the module docstring. The features are eliminated exactly,
    :math:`H(W) = (YW + \\beta H_0)(W^\\top W + (\\lambda_H + \\beta) I)^{-1}`, and the reduced function
    :math:`g(W)` (``K * d`` unknowns) is minimised by Newton steps with exact Hessians (``torch.func.hessian``),
    eigenvalues replaced by their absolute values (floored at ``curvature_floor`` times the largest) so every step
    descends, and an Armijo backtracking line search. It starts from the ridge last layer for :math:`H = H_0`. The
    problem is non-convex: the result is a local minimiser (``min_curvature > 0`` certifies it; at
    :math:`\\beta = 0` rotations make it 0).

    Args:
        H0: input features :math:`H_0`, shape ``(N, d)``.
        y: labels in ``[0, K)``, shape ``(N,)``; targets are one-hot.
        beta: vicinity strength :math:`\\beta \\ge 0`.
        lam_W: weight decay on the last layer :math:`\\lambda_W > 0`.
        lam_H: weight decay on the features :math:`\\lambda_H \\ge 0`; ``beta + lam_H`` must be positive.
        num_classes: :math:`K` (default ``y.max() + 1``).
        max_iter: most Newton iterations.
        tol: stop when the norm of the full gradient is at most ``tol * (1 + beta)`` (the rounding of the vicinity
            term grows with :math:`\\beta`; default ``tol`` 1e-10 in float64, 1e-5 in float32).
        curvature_floor: relative floor on the Hessian's absolute eigenvalues.

    Returns:
        :class:`VicinityUFMResult`; warns when ``tol`` was not reached or the objective became non-finite.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> y = torch.arange(30) % 3
        >>> H0 = 2 * torch.eye(3, 5, dtype=torch.float64)[y] + 0.3 * torch.randn(30, 5, generator=g,
        ...                                                                     dtype=torch.float64)
        >>> res = solve_vicinity_ufm(H0, y, 0.5, 1e-2, lam_H=1e-2)
        >>> res.converged, res.grad_norm < 1e-10, res.min_curvature > 0
        (True, True, True)
    """
    K = _check_problem(H0, y, beta, lam_H, num_classes)
    tol = _default_tol(H0.dtype) if tol is None else tol
    N = H0.shape[0]
    T = _one_hot(y, K, H0.dtype)
    w = torch.full((N,), 1.0 / N, dtype=H0.dtype, device=H0.device)
    W, H, value, gnorm, min_curv, n_iter = _solve(T, H0, w, beta, lam_W, lam_H, max_iter, tol, curvature_floor)
    if not (math.isfinite(value) and math.isfinite(gnorm)):
        warnings.warn(f"solve_vicinity_ufm: the objective or gradient became non-finite (objective {value}, "
                      f"gradient norm {gnorm}); check the scale of H0 and raise lam_W", RuntimeWarning, stacklevel=2)
    elif gnorm > tol * (1.0 + beta):
        warnings.warn(f"solve_vicinity_ufm did not reach tol={tol} in max_iter={max_iter} (gradient norm "
                      f"{gnorm:.3e}); raise max_iter or tol", RuntimeWarning, stacklevel=2)
    return VicinityUFMResult(W, H, value, gnorm, min_curv, n_iter, bool(gnorm <= tol * (1.0 + beta)))


def _example_objective(ctx):
    ex = _example(ctx)
    K, d = 3, ex["H0"].shape[1]
    return {**ex, "W": torch.randn(K, d, generator=ctx.generator, dtype=ctx.dtype),
            "H": ex["H0"] + 0.1 * torch.randn(ex["H0"].shape, generator=ctx.generator, dtype=ctx.dtype)}


@accepts(W=Tensor("k", "d"), H=Tensor("n", "d"), H0=Tensor("n", "d"), y=Tensor("n", dtype="int"), beta=Real(ge=0),
         lam_W=Real(ge=0), lam_H=Real(ge=0), example=_example_objective)
def vicinity_ufm_objective(W: torch.Tensor, H: torch.Tensor, H0: torch.Tensor, y: torch.Tensor, beta: float,
                           lam_W: float, *, lam_H: float = 0.0) -> torch.Tensor:
    """Objective of the vicinity-constrained unconstrained-features model, :math:`F(W, H)` (MSE, penalised vicinity).

    References: Perturbation Analysis of Neural Collapse (Tirer, Huang, Niles-Weed), 2023.

    :math:`F(W, H) = \\frac{1}{2N}\\|HW^\\top - Y\\|_F^2 + \\frac{\\lambda_W}{2}\\|W\\|_F^2 +
    \\frac{\\lambda_H}{2N}\\|H\\|_F^2 + \\frac{\\beta}{2N}\\|H - H_0\\|_F^2` with one-hot :math:`Y` (``K`` from
    ``W``). Differentiable in ``W`` and ``H``.

    Args:
        W: last layer, shape ``(K, d)``.
        H: features, shape ``(N, d)``.
        H0: input features, shape ``(N, d)``.
        y: labels in ``[0, K)``, shape ``(N,)``.
        beta, lam_W, lam_H: :math:`\\beta, \\lambda_W, \\lambda_H \\ge 0`.

    Returns:
        a scalar tensor.

    Example:
        >>> import torch
        >>> y = torch.tensor([0, 1])
        >>> W, H = torch.eye(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
        >>> float(vicinity_ufm_objective(W, H, H, y, 1.0, 0.5))
        0.5
    """
    K = W.shape[0]
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= K:
        raise ValueError(f"y must have entries in [0, {K - 1}] (K = {K} rows of W), got entries in [{low}, {high}]")
    N = H.shape[0]
    w = torch.full((N,), 1.0 / N, dtype=H.dtype, device=H.device)
    return _objective(W, H, _one_hot(y, K, H.dtype), H0, w, beta, lam_W, lam_H)


@accepts(H0=Tensor("n", "d"), y=Tensor("n", dtype="int"), beta=Real(ge=0), lam_W=Real(gt=0), lam_H=Real(ge=0),
         num_classes=Int(ge=2, optional=True), max_iter=Int(ge=1), tol=Real(ge=0, optional=True),
         example=_example)
def vicinity_nc1_prediction(H0: torch.Tensor, y: torch.Tensor, beta: float, lam_W: float, *, lam_H: float = 0.0,
                            num_classes: int | None = None, max_iter: int = 100,
                            tol: float | None = None) -> VicinityNC1Prediction:
    """First-order (small within-class perturbation) prediction of the vicinity-UFM minimiser and its NC1.

    References: Perturbation Analysis of Neural Collapse (Tirer, Huang, Niles-Weed), 2023.

    Splits :math:`H_0 = \\bar H_0 + E` (class means and within-class deviations), solves the collapsed problem
    (input :math:`\\bar H_0`, reduced exactly to ``K`` rows weighted by the class frequencies) for :math:`\\bar W`
    and the class means :math:`\\bar Z`, and returns
    :math:`\\hat H = \\bar Z_y + \\beta E (\\bar W^\\top \\bar W + (\\lambda_H + \\beta) I)^{-1}`, exact up to
    :math:`O(\\|E\\|^2)` (see the module docstring), with its NC1. Away from the near-collapse regime (large
    :math:`E`) it is an approximation only.

    Args:
        H0: input features, shape ``(N, d)``; every class must occur.
        y: labels in ``[0, K)``, shape ``(N,)``.
        beta, lam_W, lam_H: as in :func:`solve_vicinity_ufm`.
        num_classes: :math:`K` (default ``y.max() + 1``).
        max_iter, tol: for the collapsed solve (:func:`solve_vicinity_ufm`'s).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> y = torch.arange(30) % 3
        >>> H0 = 2 * torch.eye(3, 5, dtype=torch.float64)[y] + 0.01 * torch.randn(30, 5, generator=g,
        ...                                                                      dtype=torch.float64)
        >>> pred = vicinity_nc1_prediction(H0, y, 0.5, 1e-2, lam_H=1e-2)
        >>> exact = neural_collapse_metrics(solve_vicinity_ufm(H0, y, 0.5, 1e-2, lam_H=1e-2).H, y).nc1
        >>> pred.nc1 < pred.nc1_input, abs(exact / pred.nc1 - 1) < 1e-3
        (True, True)
    """
    K = _check_problem(H0, y, beta, lam_H, num_classes)
    tol = _default_tol(H0.dtype) if tol is None else tol
    yl = y.long()
    counts = torch.bincount(yl, minlength=K)
    missing = (counts == 0).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f"y must contain every class at least once (a class mean is needed), got no samples of "
                         f"class(es) {missing} of K = {K}")
    N, d = H0.shape
    n_c = counts.to(H0.dtype)
    means = H0.new_zeros(K, d).index_add_(0, yl, H0) / n_c[:, None]
    E = H0 - means[yl]
    T = torch.eye(K, dtype=H0.dtype, device=H0.device)
    W, Z, _, gnorm, _, _ = _solve(T, means, n_c / N, beta, lam_W, lam_H, max_iter, tol, 1e-12)
    if gnorm > tol * (1.0 + beta):
        warnings.warn(f"vicinity_nc1_prediction: the collapsed problem did not reach tol={tol} in "
                      f"max_iter={max_iter} (gradient norm {gnorm:.3e}); raise max_iter or tol", RuntimeWarning,
                      stacklevel=2)
    S = W.T @ W + (lam_H + beta) * torch.eye(d, dtype=H0.dtype, device=H0.device)
    H = Z[yl] + beta * torch.linalg.solve(S, E.T).T
    shrink = beta / torch.linalg.eigvalsh(S)  # ascending eigenvalues: descending factors
    return VicinityNC1Prediction(neural_collapse_metrics(H, y, num_classes=K).nc1,
                                 neural_collapse_metrics(H0, y, num_classes=K).nc1, H, W, Z, shrink)
