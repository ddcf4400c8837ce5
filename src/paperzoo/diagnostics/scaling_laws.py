"""Dynamical neural scaling laws: a random-feature model trained by gradient flow/GD, solved in closed form.

References: A Dynamical Model of Neural Scaling Laws (Bordelon, Atanasov, Pehlevan), 2024.

The model (the paper's Section 2 setup, in the eigenbasis of the input features). Features
:math:`\\psi \\in \\mathbb R^M` with :math:`E[\\psi\\psi^\\top] = \\Lambda = \\mathrm{diag}(\\lambda_k)` (``lam``),
target :math:`y = w_\\star^\\top \\psi` (``w_star``), a fixed random projection :math:`A \\in \\mathbb R^{N\\times M}`
(``projection``) and the student :math:`f(\\psi) = \\frac{1}{\\sqrt N} w^\\top A \\psi` with :math:`w \\in \\mathbb
R^N`, trained from :math:`w(0) = 0` on the squared loss over ``P`` samples (the rows of ``samples``, or the population
when ``samples`` is None). With :math:`\\Phi = X A^\\top/\\sqrt N`, :math:`\\hat G = \\Phi^\\top\\Phi/P`,
:math:`\\hat b = \\Phi^\\top y / P` (population: :math:`\\hat G = A\\Lambda A^\\top/N`, :math:`\\hat b =
A\\Lambda w_\\star/\\sqrt N`), gradient flow :math:`\\dot w = -(\\hat G w - \\hat b)` has the exact solution
:math:`w(t) = U\\,\\mathrm{diag}\\big((1-e^{-s_i t})/s_i\\big)\\,U^\\top \\hat b` with :math:`\\hat G = U\\mathrm{diag}(s)U^\\top`;
GD with step :math:`\\eta` replaces :math:`e^{-s t}` by :math:`(1-\\eta s)^{t/\\eta}`. One eigendecomposition gives the
loss at every time. The test loss is :math:`L(t) = (A^\\top w/\\sqrt N - w_\\star)^\\top \\Lambda (A^\\top w/\\sqrt N -
w_\\star)` (no factor 1/2). For :math:`N, P \\to \\infty` (:math:`A^\\top A/N \\to I`) it is
:math:`L_\\infty(t) = \\sum_k \\lambda_k w_{\\star k}^2 e^{-2\\lambda_k t}` (:func:`infinite_width_loss`).

Power-law task (the paper's Section 5): :math:`\\lambda_k = k^{-b}`, :math:`\\lambda_k w_{\\star k}^2 = k^{-a}`.
Predicted bottleneck exponents (:func:`predicted_exponents`): :math:`L \\sim t^{-(a-1)/b}` (time), :math:`N^{-(a-1)}`
(width), :math:`P^{-(a-1)}` (data); at compute :math:`C = N t` the optimum balances the first two:
:math:`N^\\star \\sim C^{1/(1+b)}`, :math:`t^\\star \\sim C^{b/(1+b)}`, :math:`L^\\star \\sim C^{-(a-1)/(1+b)}`, so
for :math:`b > 1` training time grows faster than model size. Implemented for :math:`1 < a \\le 1 + b` (where the
tail of unlearned modes sets the width and data exponents; beyond it the head's misestimation changes them).

Pieces: :func:`power_law_task`, :func:`random_feature_gd_loss`, :func:`infinite_width_loss`,
:func:`predicted_exponents`, :func:`fit_power_law` (log-log least squares with a t-interval on the exponent) and
:func:`compute_optimal_frontier` (the optimal width and time at each compute from a width x compute loss grid).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Int, Real, Tensor, accepts
from paperzoo.core.evidence import fit_line

__all__ = ["RFLossCurve", "ScalingExponents", "PowerLawFit", "ComputeFrontier", "power_law_task",
           "random_feature_gd_loss", "infinite_width_loss", "predicted_exponents", "fit_power_law",
           "compute_optimal_frontier"]


class RFLossCurve(NamedTuple):
    """Result of :func:`random_feature_gd_loss`.

    Attributes:
        times: the training times :math:`t`, shape ``(T,)``.
        test_loss: :math:`L(t)`, population test loss, shape ``(T,)``.
        train_loss: mean squared training error :math:`\\frac1P\\|\\Phi w - y\\|^2`, shape ``(T,)`` (equal to
            ``test_loss`` for the population objective).
        kernel_eigenvalues: eigenvalues :math:`s` of :math:`\\hat G`, ascending, shape ``(N,)``.
    """

    times: torch.Tensor
    test_loss: torch.Tensor
    train_loss: torch.Tensor
    kernel_eigenvalues: torch.Tensor


class ScalingExponents(NamedTuple):
    """Result of :func:`predicted_exponents`: decay exponents (loss ~ x^-exponent) and compute-optimal slopes."""

    time: float
    width: float
    data: float
    compute: float
    t_star: float
    n_star: float


class PowerLawFit(NamedTuple):
    """Result of :func:`fit_power_law`: :math:`y \\approx c\\, x^{-\\alpha}`.

    Attributes:
        exponent: :math:`\\alpha` (positive for a decaying curve).
        prefactor: :math:`c`.
        stderr: standard error of :math:`\\alpha` from the log-log residuals.
        ci_low, ci_high: the two-sided t-interval on :math:`\\alpha` at ``confidence``.
        r2: coefficient of determination in log-log space.
        n_points: points used.
    """

    exponent: float
    prefactor: float
    stderr: float
    ci_low: float
    ci_high: float
    r2: float
    n_points: int


class ComputeFrontier(NamedTuple):
    """Result of :func:`compute_optimal_frontier`.

    Attributes:
        compute: the budgets :math:`C`, shape ``(K,)``.
        n_star: optimal width (refined by a parabola in :math:`\\log N` through the grid minimum), shape ``(K,)``.
        t_star: :math:`C / N^\\star`, shape ``(K,)``.
        loss_star: the grid-minimum loss, shape ``(K,)``.
        at_edge: whether the grid minimum sat on the first or last width (then not refined), shape ``(K,)`` bool.
    """

    compute: torch.Tensor
    n_star: torch.Tensor
    t_star: torch.Tensor
    loss_star: torch.Tensor
    at_edge: torch.Tensor


@accepts(M=Int(ge=1), a=Real(gt=0), b=Real(gt=0), example=lambda ctx: {"M": 5, "a": 2.0, "b": 1.5})
def power_law_task(M: int, a: float, b: float, *, dtype: torch.dtype = torch.float64):
    """Power-law task: eigenvalues :math:`\\lambda_k = k^{-b}` and target with :math:`\\lambda_k w_{\\star k}^2 = k^{-a}`.

    References: A Dynamical Model of Neural Scaling Laws, 2024 (Section 5).

    Returns ``(lam, w_star)``, each of shape ``(M,)``, :math:`w_{\\star k} = k^{-(a-b)/2} > 0`.

    Example:
        >>> lam, w = power_law_task(3, 2.0, 1.0)
        >>> [round(float(v), 4) for v in lam * w ** 2]
        [1.0, 0.25, 0.1111]
    """
    k = torch.arange(1, M + 1, dtype=dtype)
    return k ** -float(b), k ** (-(float(a) - float(b)) / 2)


def _steps(times: torch.Tensor, lr: float) -> torch.Tensor:
    n = times / lr
    finite = torch.isfinite(n)
    if bool((finite & ((n - n.round()).abs() > 1e-6 * n.clamp_min(1.0))).any()):
        raise ValueError(f"times must be integer multiples of lr = {lr} for gradient descent")
    return torch.where(finite, n.round(), n)


def _gain(s: torch.Tensor, times: torch.Tensor, lr: float | None, rcond: float) -> torch.Tensor:
    """Filter (1 - decay(s, t)) / s, shape (T, N); eigenvalues below rcond * max are treated as 0 (never learned)."""
    keep = s > rcond * s.max().clamp_min(torch.finfo(s.dtype).tiny)
    sc = torch.where(keep, s, torch.ones_like(s))
    t = times[:, None]
    if lr is None:
        one_minus = -torch.expm1(-sc * t.clamp(max=torch.finfo(s.dtype).max))
        one_minus = torch.where(torch.isinf(t), torch.ones_like(one_minus), one_minus)
    else:
        n = _steps(times, lr)[:, None]
        base = 1.0 - lr * sc
        decay = torch.where(torch.isinf(n), torch.zeros_like(base * n), base.abs().pow(n.clamp(max=1e300)) *
                            torch.where((base < 0) & (torch.remainder(n, 2) == 1), -1.0, 1.0))
        one_minus = 1.0 - decay
    return torch.where(keep, one_minus / sc, torch.zeros_like(one_minus))


def _check_times(times: torch.Tensor) -> None:
    if bool(torch.isnan(times).any()) or bool((times < 0).any()):
        raise ValueError("times must be >= 0 (inf allowed: the converged limit)")


def _rf_example(ctx):
    g = ctx.generator
    lam, w = power_law_task(6, 2.0, 1.5, dtype=ctx.dtype)
    return {"lam": lam, "w_star": w, "projection": torch.randn(4, 6, generator=g, dtype=ctx.dtype),
            "times": torch.tensor([0.0, 1.0, 10.0], dtype=ctx.dtype)}


@accepts(lam=Tensor("M", nonnegative=True), w_star=Tensor("M"), projection=Tensor("N", "M"),
         times=Tensor("T", finite=False), samples=Tensor("P", "M", optional=True), lr=Real(gt=0, optional=True),
         rcond=Real(gt=0, lt=1), example=_rf_example)
def random_feature_gd_loss(lam: torch.Tensor, w_star: torch.Tensor, projection: torch.Tensor, times: torch.Tensor,
                           *, samples: torch.Tensor | None = None, lr: float | None = None,
                           rcond: float = 1e-12) -> RFLossCurve:
    """Random-feature test loss under gradient flow (or GD) at many times from one eigendecomposition.

    References: A Dynamical Model of Neural Scaling Laws, 2024 (Section 2, the model; exact linear dynamics).

    Args:
        lam: feature eigenvalues :math:`\\lambda_k`, shape ``(M,)``.
        w_star: target weights in the eigenbasis, shape ``(M,)``.
        projection: :math:`A`, shape ``(N, M)`` (i.i.d. standard normal in the paper).
        times: training times :math:`t \\ge 0`, shape ``(T,)``; ``inf`` gives the converged (min-norm) limit.
        samples: training inputs :math:`X` in the eigenbasis, shape ``(P, M)`` (rows with covariance
            :math:`\\Lambda`); None trains on the population loss (:math:`P = \\infty`).
        lr: None for gradient flow; a step :math:`\\eta` for GD, with ``times`` integer multiples of it.
        rcond: eigenvalues of :math:`\\hat G` below ``rcond * max`` count as zero (directions never learned).

    Returns:
        :class:`RFLossCurve`. Cost :math:`O(N^2 (M + P) + N^3 + T N M)`.

    Example:
        >>> lam, w = power_law_task(8, 2.0, 1.5)
        >>> A = torch.randn(5, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> out = random_feature_gd_loss(lam, w, A, torch.tensor([0.0, 10.0, float("inf")], dtype=torch.float64))
        >>> bool(out.test_loss[0] > out.test_loss[1] > out.test_loss[2])
        True
    """
    _check_times(times)
    N = projection.shape[0]
    if samples is None:
        AL = projection * lam
        G = AL @ projection.T / N
        bvec = AL @ w_star / math.sqrt(N)
    else:
        P = samples.shape[0]
        phi = samples @ projection.T / math.sqrt(N)
        y = samples @ w_star
        G = phi.T @ phi / P
        bvec = phi.T @ y / P
    G = 0.5 * (G + G.T)
    s, U = torch.linalg.eigh(G)
    c = U.T @ bvec
    W = (_gain(s, times, lr, rcond) * c) @ U.T  # (T, N): w(t) for every time
    V = W @ projection / math.sqrt(N) - w_star  # error in the eigenbasis, (T, M)
    test = (V * V * lam).sum(1)
    train = test if samples is None else ((samples @ V.T) ** 2).mean(0)
    return RFLossCurve(times, test, train, s)


@accepts(lam=Tensor("M", nonnegative=True), w_star=Tensor("M"), times=Tensor("T", finite=False),
         lr=Real(gt=0, optional=True),
         example=lambda ctx: {"lam": power_law_task(5, 2.0, 1.5, dtype=ctx.dtype)[0],
                              "w_star": power_law_task(5, 2.0, 1.5, dtype=ctx.dtype)[1],
                              "times": torch.tensor([0.0, 2.0], dtype=ctx.dtype)})
def infinite_width_loss(lam: torch.Tensor, w_star: torch.Tensor, times: torch.Tensor, *,
                        lr: float | None = None) -> torch.Tensor:
    """Infinite-width, infinite-data test loss :math:`\\sum_k \\lambda_k w_{\\star k}^2 e^{-2\\lambda_k t}`.

    References: A Dynamical Model of Neural Scaling Laws, 2024 (the :math:`N, P \\to \\infty` limit).

    With ``lr`` (GD) the factor is :math:`(1 - \\eta\\lambda_k)^{2t/\\eta}`. Shapes: ``lam``, ``w_star`` ``(M,)``,
    ``times`` ``(T,)``; returns ``(T,)``.

    Example:
        >>> lam, w = power_law_task(2, 2.0, 1.0)
        >>> float(infinite_width_loss(lam, w, torch.tensor([0.0], dtype=torch.float64))[0])
        1.25
    """
    _check_times(times)
    t = times[:, None]
    if lr is None:
        decay = torch.exp(-2.0 * lam * t)
    else:
        n = _steps(times, lr)[:, None]
        decay = torch.where(torch.isinf(n), torch.zeros_like(lam * n), (1.0 - lr * lam) ** (2 * n.clamp(max=1e300)))
    return (lam * w_star ** 2 * decay).sum(1)


@accepts(a=Real(gt=1), b=Real(gt=0), example=lambda ctx: {"a": 2.0, "b": 2.0})
def predicted_exponents(a: float, b: float) -> ScalingExponents:
    """Predicted scaling exponents for the power-law task :math:`\\lambda_k = k^{-b}`, :math:`\\lambda_k w_k^2 = k^{-a}`.

    References: A Dynamical Model of Neural Scaling Laws, 2024 (Section 5 and the compute-optimal allocation).

    time :math:`(a-1)/b`; width and data :math:`a-1`; compute :math:`(a-1)/(1+b)`; :math:`t^\\star \\sim
    C^{b/(1+b)}`, :math:`N^\\star \\sim C^{1/(1+b)}`. Requires :math:`a \\le 1 + b`.

    Example:
        >>> e = predicted_exponents(2.0, 2.0)
        >>> e.time, e.width, round(e.t_star, 4)
        (0.5, 1.0, 0.6667)
    """
    a, b = float(a), float(b)
    if not a <= 1.0 + b:
        raise ValueError(f"a must be <= 1 + b (the tail-dominated regime these exponents cover), got a={a}, b={b}")
    return ScalingExponents(time=(a - 1) / b, width=a - 1, data=a - 1, compute=(a - 1) / (1 + b),
                            t_star=b / (1 + b), n_star=1 / (1 + b))


@accepts(x=Tensor("n"), y=Tensor("n"), confidence=Real(gt=0, lt=1),
         example=lambda ctx: {"x": torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=ctx.dtype),
                              "y": torch.tensor([1.0, 0.51, 0.24, 0.126], dtype=ctx.dtype)})
def fit_power_law(x: torch.Tensor, y: torch.Tensor, *, confidence: float = 0.95) -> PowerLawFit:
    """Power-law fit :math:`y \\approx c x^{-\\alpha}` by least squares on :math:`(\\log x, \\log y)`, with a t-interval.

    References: A Dynamical Model of Neural Scaling Laws, 2024 (exponents read off log-log learning curves).

    Args:
        x, y: positive values, shape ``(n,)``, ``n >= 3`` (the interval needs one residual degree of freedom).
        confidence: level of the two-sided interval on :math:`\\alpha` (Student t with ``n - 2`` dof).

    Example:
        >>> x = torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64)
        >>> f = fit_power_law(x, 3.0 * x ** -0.5)
        >>> round(f.exponent, 6), round(f.prefactor, 6)
        (0.5, 3.0)
    """
    if x.shape[0] < 3:
        raise ValueError(f"x must have at least 3 points for an interval, got {x.shape[0]}")
    if bool((x <= 0).any()):
        raise ValueError("x must be > 0 for a log-log fit")
    if bool((y <= 0).any()):
        raise ValueError("y must be > 0 for a log-log fit")
    if torch.unique(x).numel() < 2:
        raise ValueError("x must take at least 2 distinct values")
    line = fit_line(torch.log(x.double()), torch.log(y.double()), level=confidence)
    return PowerLawFit(-line.slope, math.exp(line.intercept), line.stderr, -line.ci_high, -line.ci_low, line.r2,
                       line.n_points)


@accepts(widths=Tensor("W", nonnegative=True), compute=Tensor("K", nonnegative=True), losses=Tensor("W", "K"),
         example=lambda ctx: {"widths": torch.tensor([1.0, 2.0, 4.0], dtype=ctx.dtype),
                              "compute": torch.tensor([8.0, 16.0], dtype=ctx.dtype),
                              "losses": torch.tensor([[3.0, 2.0], [2.0, 1.5], [2.5, 1.0]], dtype=ctx.dtype)})
def compute_optimal_frontier(widths: torch.Tensor, compute: torch.Tensor, losses: torch.Tensor) -> ComputeFrontier:
    """Compute-optimal frontier: the width :math:`N^\\star(C) = \\arg\\min_N L(N, C/N)` and time :math:`C/N^\\star`.

    References: A Dynamical Model of Neural Scaling Laws, 2024 (compute-optimal scaling, compute :math:`C = N t`).

    Args:
        widths: the widths :math:`N`, strictly increasing, positive, shape ``(W,)`` (``W >= 3``).
        compute: budgets :math:`C > 0`, shape ``(K,)``.
        losses: ``losses[i, j]`` = :math:`L(N_i, t = C_j / N_i)`, shape ``(W, K)``.

    The grid minimum is refined by the vertex of the parabola through it and its two neighbours in
    :math:`(\\log N, \\log L)` (clamped to the neighbours); a minimum on an edge is flagged in ``at_edge``.

    Example:
        >>> f = compute_optimal_frontier(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([8.0]),
        ...                              torch.tensor([[2.0], [1.0], [2.0]]))
        >>> float(f.n_star[0]), float(f.t_star[0]), bool(f.at_edge[0])
        (2.0, 4.0, False)
    """
    if widths.shape[0] < 3:
        raise ValueError(f"widths must have at least 3 values, got {widths.shape[0]}")
    if bool((widths <= 0).any()) or bool((widths[1:] <= widths[:-1]).any()):
        raise ValueError("widths must be positive and strictly increasing")
    if bool((compute <= 0).any()):
        raise ValueError("compute must be > 0")
    if bool((losses <= 0).any()):
        raise ValueError("losses must be > 0")
    W = widths.shape[0]
    j = losses.argmin(0)  # (K,)
    at_edge = (j == 0) | (j == W - 1)
    jc = j.clamp(1, W - 2)
    lx = torch.log(widths)
    ly = torch.log(losses)
    cols = torch.arange(losses.shape[1])
    x0, x1, x2 = lx[jc - 1], lx[jc], lx[jc + 1]
    y0, y1, y2 = ly[jc - 1, cols], ly[jc, cols], ly[jc + 1, cols]
    den = (x0 - x1) * (x0 - x2) * (x1 - x2)
    A2 = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / den
    B2 = (x2 ** 2 * (y0 - y1) + x1 ** 2 * (y2 - y0) + x0 ** 2 * (y1 - y2)) / den
    vertex = torch.where(A2 > 0, -B2 / (2 * A2.where(A2 > 0, torch.ones_like(A2))), x1).clamp(x0, x2)
    log_n = torch.where(at_edge, lx[j], vertex)
    n_star = torch.exp(log_n)
    return ComputeFrontier(compute, n_star, compute / n_star, losses[j, cols], at_edge)
