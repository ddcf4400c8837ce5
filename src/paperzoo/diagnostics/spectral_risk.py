"""Closed-form test risk of ridge regression from the task eigenstructure, and the cost of overfitting.

References: An Agnostic View on the Cost of Overfitting in (Kernel) Ridge Regression (Zhou, Simon, Vardi, Srebro),
2024.

The eigenframework (Gaussian-universality ansatz; the "omniscient risk estimate") predicts the test risk of
(kernel) ridge regression with ``n`` samples from the kernel eigenvalues :math:`\\lambda_i` (``eigvals``), the
target's coefficients :math:`v_i` in the orthonormal eigenbasis (``target_coeffs``), the label-noise variance
:math:`\\sigma^2` (``noise_var``) and the ridge :math:`\\delta \\ge 0` (``ridge``, on the *sum* of squared
residuals: :math:`\\min_\\beta \\|y - X\\beta\\|^2 + \\delta\\|\\beta\\|^2`, scikit-learn's ``Ridge(alpha=delta)``):

.. math::
    n = \\sum_i \\frac{\\lambda_i}{\\lambda_i + \\kappa} + \\frac{\\delta}{\\kappa}, \\qquad
    \\mathcal E_0 = \\frac{n}{n - \\sum_i \\lambda_i^2 / (\\lambda_i + \\kappa)^2}, \\qquad
    R(\\delta) = \\mathcal E_0 \\Big(\\sum_i \\Big(\\frac{\\kappa}{\\lambda_i + \\kappa}\\Big)^2 v_i^2
    + \\sigma^2\\Big).

:math:`\\kappa` is the effective regularization, :math:`\\mathcal E_0 \\ge 1` the overfitting coefficient, and
:math:`R` the test risk :math:`\\mathbb E (y - \\hat f(x))^2` *including* the test point's label noise (so
:math:`R(\\infty) = \\|v\\|^2 + \\sigma^2`). The cost of overfitting is
:math:`C(n) = R(0) / \\min_{\\delta \\ge 0} R(\\delta)`: the price of interpolating instead of tuning the ridge.
Within the framework :math:`1 \\le C(n) \\le \\mathcal E_0(\\delta = 0)` for every target (the paper's agnostic
bound: :math:`\\kappa` and :math:`\\mathcal E_0` grow with :math:`\\delta`, so the bias factor of any tuned ridge
is at least the ridgeless one). Overfitting is benign when :math:`C(n) \\to 1`, tempered when :math:`C(n)` stays
bounded above 1, catastrophic when it diverges; for the power law :math:`\\lambda_i = i^{-\\alpha}` the ridgeless
:math:`\\mathcal E_0 \\to \\alpha` (tempered), while a spectrum whose tail is flat and much wider than ``n`` has
:math:`\\mathcal E_0 \\to 1` (benign).

The toolkit is the ridge filter :math:`\\lambda/(\\lambda + \\kappa)`; other spectral filters (gradient flow,
iterate averaging) belong next to it, with their own :math:`\\kappa`-equation.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Generator, Int, OneOf, Pair, Real, Tensor, accepts

__all__ = ["EffectiveRegularization", "RidgeRisk", "OptimalRidge", "CostOfOverfitting", "EmpiricalRidgeRisk",
           "effective_regularization", "ridge_risk", "optimal_ridge", "cost_of_overfitting",
           "empirical_ridge_risk"]


class EffectiveRegularization(NamedTuple):
    """Result of :func:`effective_regularization`.

    Attributes:
        kappa: the effective regularization :math:`\\kappa`, the shape of ``ridge`` (0-d for a number).
        n_iter: safeguarded-Newton iterations used.
        converged: whether every root met the tolerance.
    """

    kappa: torch.Tensor
    n_iter: int
    converged: bool


class RidgeRisk(NamedTuple):
    """Result of :func:`ridge_risk`; every field has the shape of ``ridge``.

    Attributes:
        risk: predicted test risk :math:`R = ` ``bias + variance + noise_var``.
        bias: :math:`\\mathcal E_0 \\sum_i (\\kappa/(\\lambda_i+\\kappa))^2 v_i^2`, the noise-free excess risk.
        variance: :math:`(\\mathcal E_0 - 1)\\sigma^2`, the excess risk due to training-label noise.
        kappa: the effective regularization.
        e0: the overfitting coefficient :math:`\\mathcal E_0`.
    """

    risk: torch.Tensor
    bias: torch.Tensor
    variance: torch.Tensor
    kappa: torch.Tensor
    e0: torch.Tensor


class OptimalRidge(NamedTuple):
    """Result of :func:`optimal_ridge`.

    Attributes:
        ridge: the minimising ridge :math:`\\delta^\\star` (0.0 when ridgeless is best).
        risk: :math:`R(\\delta^\\star)`.
        kappa, e0: :math:`\\kappa` and :math:`\\mathcal E_0` at :math:`\\delta^\\star`.
        n_iter: golden-section iterations.
        converged: whether the golden-section bracket met ``tol``.
        at_edge: the minimiser sits on the upper end of ``ridge_range`` (the optimum may lie beyond it).
    """

    ridge: float
    risk: float
    kappa: float
    e0: float
    n_iter: int
    converged: bool
    at_edge: bool


class CostOfOverfitting(NamedTuple):
    """Result of :func:`cost_of_overfitting`.

    Attributes:
        cost: :math:`C = R(0) / \\min_\\delta R(\\delta) \\ge 1`.
        ridgeless_risk: :math:`R(0)`.
        tuned_risk: :math:`\\min_\\delta R(\\delta)`.
        optimal_ridge: the minimiser :math:`\\delta^\\star`.
        e0_ridgeless: :math:`\\mathcal E_0(0)`, the agnostic upper bound on ``cost``.
    """

    cost: float
    ridgeless_risk: float
    tuned_risk: float
    optimal_ridge: float
    e0_ridgeless: float


class EmpiricalRidgeRisk(NamedTuple):
    """Result of :func:`empirical_ridge_risk`.

    Attributes:
        risks: exact test risk of each fitted predictor, shape ``(trials,) + ridge.shape``.
        mean: Monte Carlo mean over trials, shape of ``ridge``.
        stderr: its standard error (0 for one trial).
    """

    risks: torch.Tensor
    mean: torch.Tensor
    stderr: torch.Tensor


def _power_law(ctx):
    return torch.arange(1, 9, dtype=ctx.dtype) ** -1.5


def _target(ctx):
    return torch.arange(1, 9, dtype=ctx.dtype) ** -1.0


def _as_tensor(ridge, like: torch.Tensor) -> torch.Tensor:
    if isinstance(ridge, torch.Tensor):
        return ridge
    return torch.tensor(float(ridge), dtype=like.dtype, device=like.device)


def _check_ridgeless(eigvals: torch.Tensor, n: int, ridge: torch.Tensor) -> None:
    if bool((ridge == 0).any()):
        rank = int((eigvals > 0).sum())
        if n >= rank:
            raise ValueError(f"ridge = 0 needs n < the number of positive eigvals ({rank}), got n = {n}")


def _kappa(lam: torch.Tensor, n: int, delta: torch.Tensor, tol: float, max_iter: int) -> EffectiveRegularization:
    """Safeguarded Newton in log kappa on f(kappa) = sum lam/(lam+kappa) + delta/kappa - n (decreasing)."""
    shape = delta.shape
    d = delta.reshape(-1, 1)
    lam = lam.reshape(1, -1)
    tiny = torch.finfo(lam.dtype).tiny
    # Brackets: f(lo) >= 0 >= f(hi). delta/n and lam_(n+1)/n are lower bounds; (delta + sum lam)/n is an upper one.
    sorted_lam = lam.flatten().sort(descending=True).values
    tail = sorted_lam[n] / n if sorted_lam.numel() > n else torch.zeros((), dtype=lam.dtype)
    lo = torch.maximum(d / n, tail.expand_as(d)).clamp_min(tiny)
    hi = ((d + lam.sum()) / n).clamp_min(tiny)
    hi = torch.maximum(hi, lo)
    u_lo, u_hi = lo.log(), hi.log()
    u = 0.5 * (u_lo + u_hi)
    done = torch.zeros_like(u, dtype=torch.bool)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        k = u.exp()
        r = lam / (lam + k)
        f = r.sum(-1, keepdim=True) + d / k - n
        # d f / d log kappa = -(sum lam kappa/(lam+kappa)^2 + delta/kappa)
        slope = -((r * (1 - r)).sum(-1, keepdim=True) + d / k)
        u_lo = torch.where(f > 0, u, u_lo)
        u_hi = torch.where(f < 0, u, u_hi)
        u_new = u - f / slope.clamp_max(-tiny)
        outside = (u_new < u_lo) | (u_new > u_hi) | ~torch.isfinite(u_new)
        u_new = torch.where(outside, 0.5 * (u_lo + u_hi), u_new)
        done = done | (f.abs() <= tol * n) | ((u_hi - u_lo) <= tol)
        step_small = (u_new - u).abs() <= tol
        u = torch.where(done, u, u_new)
        done = done | step_small
        if bool(done.all()):
            converged = True
            break
    kappa = u.exp().reshape(shape)
    if not bool(torch.isfinite(kappa).all()):
        raise ValueError("effective_regularization: kappa became NaN or inf (check eigvals and ridge)")
    if not converged:
        warnings.warn(f"effective_regularization did not converge in {max_iter} iterations; raise max_iter",
                      RuntimeWarning, stacklevel=3)
    return EffectiveRegularization(kappa, it, converged)


def _default_tol(dtype: torch.dtype) -> float:
    return 64 * torch.finfo(dtype).eps


@accepts(eigvals=Tensor("p", nonnegative=True), n=Int(ge=1), ridge=OneOf(Real(ge=0), Tensor("r", nonnegative=True)),
         tol=Real(gt=0, optional=True), max_iter=Int(ge=1),
         example=lambda ctx: {"eigvals": _power_law(ctx), "n": 4, "ridge": 0.1})
def effective_regularization(eigvals: torch.Tensor, n: int, ridge, *, tol: float | None = None,
                             max_iter: int = 100) -> EffectiveRegularization:
    """Effective regularization :math:`\\kappa` of ridge regression with ``n`` samples, for one or many ridges.

    References: An Agnostic View on the Cost of Overfitting in (Kernel) Ridge Regression, 2024 (the eigenframework
    equation for :math:`\\kappa`, after Simon et al. and Bordelon et al.).

    Solves :math:`n = \\sum_i \\lambda_i/(\\lambda_i + \\kappa) + \\delta/\\kappa` for :math:`\\kappa > 0`, with
    :math:`\\lambda` = ``eigvals`` (shape ``(p,)``, >= 0) and :math:`\\delta` = ``ridge`` (a number or shape
    ``(r,)``, >= 0). The left side is strictly decreasing in :math:`\\kappa`: a safeguarded Newton iteration in
    :math:`\\log\\kappa` inside a bracket that bisection keeps, all ridges at once. ``ridge = 0`` (ridgeless) needs
    ``n`` below the number of positive eigenvalues. ``tol`` (default ``64 eps`` of the dtype) is on
    :math:`\\log\\kappa`.

    Example:
        >>> import torch
        >>> lam = torch.ones(10, dtype=torch.float64)       # isotropic: kappa = d/n - 1 when ridgeless
        >>> round(float(effective_regularization(lam, 4, 0.0).kappa), 12)
        1.5
    """
    delta = _as_tensor(ridge, eigvals)
    _check_ridgeless(eigvals, n, delta)
    return _kappa(eigvals, n, delta, _default_tol(eigvals.dtype) if tol is None else tol, max_iter)


def _risk(lam, v, sigma2, n, delta, tol=None, max_iter=100) -> RidgeRisk:
    kappa = _kappa(lam, n, delta, _default_tol(lam.dtype) if tol is None else tol, max_iter).kappa
    k = kappa.unsqueeze(-1)
    r = lam / (lam + k)
    # n - sum r^2 equals sum r (1 - r) + delta/kappa at the root: positive, without cancellation.
    e0 = n / ((r * (1 - r)).sum(-1) + delta / kappa)
    b = ((1 - r) ** 2 * v ** 2).sum(-1)
    bias = e0 * b
    variance = (e0 - 1) * sigma2
    return RidgeRisk(bias + variance + sigma2, bias, variance, kappa, e0)


@accepts(eigvals=Tensor("p", nonnegative=True), target_coeffs=Tensor("p"), noise_var=Real(ge=0), n=Int(ge=1),
         ridge=OneOf(Real(ge=0), Tensor("r", nonnegative=True)),
         example=lambda ctx: {"eigvals": _power_law(ctx), "target_coeffs": _target(ctx), "noise_var": 0.1, "n": 4,
                              "ridge": 0.1})
def ridge_risk(eigvals: torch.Tensor, target_coeffs: torch.Tensor, noise_var: float, n: int, ridge) -> RidgeRisk:
    """Eigenframework test risk of ridge regression (bias, variance, :math:`\\kappa`, :math:`\\mathcal E_0`).

    References: An Agnostic View on the Cost of Overfitting in (Kernel) Ridge Regression, 2024 (the omniscient
    risk estimate under the Gaussian-universality ansatz).

    :math:`R(\\delta) = \\mathcal E_0 (\\sum_i (\\kappa/(\\lambda_i+\\kappa))^2 v_i^2 + \\sigma^2)` with
    :math:`\\lambda` = ``eigvals`` (shape ``(p,)``), :math:`v` = ``target_coeffs`` (shape ``(p,)``, the target in the
    orthonormal eigenbasis: :math:`f^\\star = \\sum_i v_i \\phi_i`), :math:`\\sigma^2` = ``noise_var``, ``n``
    samples, :math:`\\delta` = ``ridge`` (a number or shape ``(r,)``; outputs take its shape). The risk includes the
    test label noise: ``risk = bias + variance + noise_var``.

    Example:
        >>> import torch
        >>> lam = torch.ones(10, dtype=torch.float64)
        >>> v = torch.full((10,), 0.5, dtype=torch.float64)     # ||v||^2 = 2.5
        >>> out = ridge_risk(lam, v, 0.0, 4, 0.0)              # noise-free ridgeless: (1 - n/d) ||v||^2
        >>> round(float(out.risk), 12), round(float(out.e0), 12)
        (1.5, 1.666666666667)
    """
    delta = _as_tensor(ridge, eigvals)
    _check_ridgeless(eigvals, n, delta)
    return _risk(eigvals, target_coeffs, float(noise_var), n, delta)


def _log_ridge_range(eigvals: torch.Tensor, ridge_range) -> tuple[float, float]:
    if ridge_range is None:
        scale = max(float(eigvals.sum()), torch.finfo(eigvals.dtype).tiny)
        return math.log(scale * 1e-8), math.log(scale * 1e4)
    low, high = float(ridge_range[0]), float(ridge_range[1])
    if not 0 < low < high:
        raise ValueError(f"ridge_range must satisfy 0 < low < high, got {tuple(ridge_range)!r}")
    return math.log(low), math.log(high)


def _optimal_ridge(lam, v, sigma2, n, ridge_range, grid_size, tol, max_iter) -> OptimalRidge:
    u_min, u_max = _log_ridge_range(lam, ridge_range)
    grid = torch.linspace(u_min, u_max, grid_size, dtype=lam.dtype)

    def risk_at(u: torch.Tensor) -> torch.Tensor:
        return _risk(lam, v, sigma2, n, u.exp()).risk

    values = risk_at(grid)
    i = int(values.argmin())
    at_edge = i == grid_size - 1
    a = float(grid[max(i - 1, 0)])
    b = float(grid[min(i + 1, grid_size - 1)])
    # Golden section on log ridge inside the grid bracket around the grid minimiser.
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = (float(t) for t in risk_at(torch.tensor([c, d], dtype=lam.dtype)))
    converged, it = b - a <= tol, 0
    while not converged and it < max_iter:
        it += 1
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = float(risk_at(torch.tensor([c], dtype=lam.dtype))[0])
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = float(risk_at(torch.tensor([d], dtype=lam.dtype))[0])
        converged = b - a <= tol
    candidates = [(fc, c), (fd, d), (float(values[i]), float(grid[i]))]
    best_risk, best_u = min(candidates)
    ridge = math.exp(best_u)
    if int((lam > 0).sum()) > n:  # ridgeless is a candidate too (the optimum can sit at delta = 0)
        r0 = float(_risk(lam, v, sigma2, n, torch.zeros((), dtype=lam.dtype)).risk)
        if r0 <= best_risk:
            best_risk, ridge = r0, 0.0
    if not converged:
        warnings.warn(f"optimal_ridge: golden section did not converge in {max_iter} iterations; raise max_iter",
                      RuntimeWarning, stacklevel=3)
    if at_edge and ridge > 0:
        warnings.warn("optimal_ridge: the minimiser is at the upper end of ridge_range; widen ridge_range",
                      RuntimeWarning, stacklevel=3)
    out = _risk(lam, v, sigma2, n, torch.tensor(ridge, dtype=lam.dtype))
    return OptimalRidge(ridge, best_risk, float(out.kappa), float(out.e0), it, converged, at_edge)


_OPT_SPECS = dict(eigvals=Tensor("p", nonnegative=True), target_coeffs=Tensor("p"), noise_var=Real(ge=0),
                  n=Int(ge=1), ridge_range=Pair(Real(gt=0), meaning="(low, high)", optional=True),
                  grid_size=Int(ge=3), tol=Real(gt=0), max_iter=Int(ge=1))


@accepts(**_OPT_SPECS,
         example=lambda ctx: {"eigvals": _power_law(ctx), "target_coeffs": _target(ctx), "noise_var": 0.1, "n": 4})
def optimal_ridge(eigvals: torch.Tensor, target_coeffs: torch.Tensor, noise_var: float, n: int, *,
                  ridge_range: tuple[float, float] | None = None, grid_size: int = 61, tol: float = 1e-6,
                  max_iter: int = 200) -> OptimalRidge:
    """Optimally tuned ridge :math:`\\delta^\\star = \\arg\\min_{\\delta \\ge 0} R(\\delta)` of the eigenframework risk.

    References: An Agnostic View on the Cost of Overfitting in (Kernel) Ridge Regression, 2024 (the tuned
    predictor in the cost's denominator).

    :math:`R` as in :func:`ridge_risk` (same arguments, shapes ``(p,)``). The risk is evaluated on ``grid_size``
    log-spaced ridges over ``ridge_range`` (default ``[1e-8, 1e4] * sum(eigvals)``), the grid minimiser is refined
    by golden section on :math:`\\log\\delta` to width ``tol``, and :math:`\\delta = 0` is compared too where it is
    allowed (``n`` below the number of positive eigenvalues). A minimiser on the upper edge is flagged
    (``at_edge``) with a warning.

    Example:
        >>> import torch
        >>> lam = torch.ones(10, dtype=torch.float64)
        >>> v = torch.full((10,), 0.5, dtype=torch.float64)
        >>> opt = optimal_ridge(lam, v, 0.25, 4)     # isotropic: delta* = d sigma^2 / ||v||^2 (noise / signal)
        >>> round(opt.ridge, 4)
        1.0
    """
    return _optimal_ridge(eigvals, target_coeffs, float(noise_var), n, ridge_range, grid_size, tol, max_iter)


@accepts(**_OPT_SPECS,
         example=lambda ctx: {"eigvals": _power_law(ctx), "target_coeffs": _target(ctx), "noise_var": 0.1, "n": 4})
def cost_of_overfitting(eigvals: torch.Tensor, target_coeffs: torch.Tensor, noise_var: float, n: int, *,
                        ridge_range: tuple[float, float] | None = None, grid_size: int = 61, tol: float = 1e-6,
                        max_iter: int = 200) -> CostOfOverfitting:
    """Cost of overfitting :math:`C(n) = R(0)/\\min_{\\delta\\ge 0} R(\\delta)` of ridge regression, eigenframework.

    References: An Agnostic View on the Cost of Overfitting in (Kernel) Ridge Regression, 2024 (definition of the
    cost; the agnostic bound :math:`C \\le \\mathcal E_0(0)`).

    Arguments as in :func:`optimal_ridge` (shapes ``(p,)``); ``n`` must be below the number of positive eigenvalues
    (the ridgeless predictor interpolates). Benign: :math:`C \\to 1` as ``n`` grows; tempered: bounded above 1
    (power laws, :math:`C \\to \\alpha` when noise dominates); catastrophic: :math:`C \\to \\infty`.

    Example:
        >>> import torch
        >>> lam = torch.ones(10, dtype=torch.float64)
        >>> v = torch.full((10,), 0.5, dtype=torch.float64)
        >>> c = cost_of_overfitting(lam, v, 0.25, 4)
        >>> 1.0 <= c.cost <= c.e0_ridgeless, round(c.ridgeless_risk, 6)
        (True, 1.916667)
    """
    zero = torch.zeros((), dtype=eigvals.dtype)
    _check_ridgeless(eigvals, n, zero)
    noise_var = float(noise_var)
    r0 = _risk(eigvals, target_coeffs, noise_var, n, zero)
    opt = _optimal_ridge(eigvals, target_coeffs, noise_var, n, ridge_range, grid_size, tol, max_iter)
    return CostOfOverfitting(float(r0.risk) / opt.risk, float(r0.risk), opt.risk, opt.ridge, float(r0.e0))


@accepts(eigvals=Tensor("p", nonnegative=True), target_coeffs=Tensor("p"), noise_var=Real(ge=0), n=Int(ge=1),
         ridge=OneOf(Real(ge=0), Tensor("r", nonnegative=True)), trials=Int(ge=1), generator=Generator(),
         example=lambda ctx: {"eigvals": _power_law(ctx), "target_coeffs": _target(ctx), "noise_var": 0.1, "n": 4,
                              "ridge": 0.1})
def empirical_ridge_risk(eigvals: torch.Tensor, target_coeffs: torch.Tensor, noise_var: float, n: int, ridge, *,
                         trials: int = 1, generator: torch.Generator | None = None) -> EmpiricalRidgeRisk:
    """Test risk of ridge regression fitted on Gaussian features with a given spectrum (Monte Carlo).

    References: An Agnostic View on the Cost of Overfitting in (Kernel) Ridge Regression, 2024 (the Gaussian
    design whose risk the eigenframework predicts).

    Each trial draws :math:`z \\in \\mathbb R^{n \\times p}` i.i.d. standard normal, features
    :math:`X = z\\,\\mathrm{diag}(\\lambda)^{1/2}` and labels :math:`y = z v + \\varepsilon`,
    :math:`\\varepsilon \\sim \\mathcal N(0, \\sigma^2 I)` (arguments as in :func:`ridge_risk`; a zero-eigenvalue
    direction is invisible to the model but part of the target), fits
    :math:`\\hat\\beta = X^\\top (X X^\\top + \\delta I)^{+} y` for every ridge at once (one eigendecomposition of the
    kernel matrix; ``ridge = 0`` gives the minimum-norm interpolant), and returns the exact population risk
    :math:`\\|v - \\lambda^{1/2} \\odot \\hat\\beta\\|^2 + \\sigma^2` of each fit (no test sample is drawn).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> lam = torch.ones(10, dtype=torch.float64)
        >>> out = empirical_ridge_risk(lam, torch.zeros(10, dtype=torch.float64), 1.0, 4, 1e6, generator=g)
        >>> round(float(out.mean), 3)     # a huge ridge predicts 0: risk = ||v||^2 + sigma^2
        1.0
    """
    delta = _as_tensor(ridge, eigvals)
    sigma = math.sqrt(float(noise_var))
    sqrt_lam = eigvals.sqrt()
    flat = delta.reshape(-1)
    risks = []
    for _ in range(trials):  # one kernel matrix per trial; trials are few and each is a full fit
        z = torch.randn(n, eigvals.numel(), generator=generator, dtype=eigvals.dtype, device=eigvals.device)
        x = z * sqrt_lam
        y = z @ target_coeffs + sigma * torch.randn(n, generator=generator, dtype=eigvals.dtype,
                                                     device=eigvals.device)
        s, u = torch.linalg.eigh(x @ x.T)
        cutoff = s.abs().max().clamp_min(torch.finfo(s.dtype).tiny) * n * torch.finfo(s.dtype).eps
        s = torch.where(s > cutoff, s, torch.zeros_like(s))
        denom = s.unsqueeze(-1) + flat.unsqueeze(0)                      # (n, r)
        inv = torch.where(denom > 0, 1.0 / denom.clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(denom))
        coef = inv * (u.T @ y).unsqueeze(-1)                              # (n, r)
        beta = (x.T @ u) @ coef                                           # (p, r)
        residual = target_coeffs.unsqueeze(-1) - sqrt_lam.unsqueeze(-1) * beta
        risks.append(residual.square().sum(0) + noise_var)
    risks_t = torch.stack(risks).reshape((trials,) + delta.shape)
    mean = risks_t.mean(0)
    stderr = risks_t.std(0) / math.sqrt(trials) if trials > 1 else torch.zeros_like(mean)
    return EmpiricalRidgeRisk(risks_t, mean, stderr)
