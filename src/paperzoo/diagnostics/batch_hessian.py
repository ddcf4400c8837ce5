"""Batch-Hessian sharpness against the batch size, its random-matrix fit, and the divergence threshold of a step size.

References: Learning Rates as a Function of Batch Size: A Random Matrix Theory Approach to Neural Network Training
(Granziol, Zohren, Roberts), 2022.

The paper writes the Hessian of a mini-batch loss :math:`L_B = \\frac1B \\sum_{i \\in \\mathcal B} \\ell_i` as the
empirical (full-data) Hessian plus a random fluctuation, :math:`H_B = H_{\\mathrm{emp}} + \\varepsilon(B)`, whose
entries have variance proportional to :math:`1/B`. Spiked random-matrix theory then moves each outlier
:math:`\\lambda_i` of :math:`H_{\\mathrm{emp}}` outwards by a term proportional to the fluctuation variance, so the
extremal batch-Hessian eigenvalue behaves as

.. math:: \\lambda_{\\max}(B) \\approx \\lambda_\\infty + \\frac{c}{B}, \\qquad c > 0,

large at small ``B`` and saturating at :math:`\\lambda_\\infty` (the empirical sharpness) as ``B`` grows. Since
gradient descent on a curvature :math:`\\lambda` is stable only for :math:`\\eta < 2/\\lambda`, the largest stable SGD
step :math:`\\eta^*(B) \\approx 2/(\\lambda_\\infty + c/B)` grows linearly in ``B`` while :math:`c/B` dominates and
flattens beyond; for Adam, whose preconditioner divides by the root of the gradient second moment (itself inflated
by a :math:`1/B` noise term), the paper derives a square-root rule :math:`\\eta^*(B) \\propto \\sqrt B` at small ``B``.

This module measures these quantities:

* :func:`batch_hessian_spectrum`: the top-``k`` eigenvalues of ``num_batches`` random mini-batch Hessians at each
  batch size, through :func:`paperzoo.diagnostics.hessian.hessian_operator` and
  :func:`~paperzoo.diagnostics.hessian.top_eigenpairs` (Lanczos), with per-size means and standard errors;
* :func:`fit_batch_sharpness`: the weighted least-squares fit of :math:`\\lambda_\\infty + c/B` with confidence
  intervals;
* :func:`divergence_threshold_lr`: the largest step size a training run survives, by a sweep that brackets the
  divergence and bisection on a log scale;
* :func:`loglog_slope`: the fitted exponent of a power law (the scaling rule) with its confidence interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Flag, Function, Generator, Int, Ints, Module, Real, Spec, Tensor, accepts
from paperzoo.core.evidence import fit_line
from paperzoo.diagnostics.hessian import _example_mlp, _top_eigenpairs, hessian_operator

__all__ = ["BatchHessianSpectrum", "BatchSharpnessFit", "DivergenceThreshold", "LogLogSlope",
           "batch_hessian_spectrum", "fit_batch_sharpness", "divergence_threshold_lr", "loglog_slope"]


class BatchHessianSpectrum(NamedTuple):
    """Result of :func:`batch_hessian_spectrum`.

    Attributes:
        batch_sizes: the sizes ``B``, shape ``(m,)`` int64, in the order given.
        eigenvalues: top-``k`` eigenvalues (descending) of each mini-batch Hessian, shape ``(m, num_batches, k)``.
        mean_top: mean over batches of :math:`\\lambda_{\\max}(H_B)`, shape ``(m,)``.
        se_top: its standard error (sample std over batches / sqrt(num_batches)), shape ``(m,)``.
        n_iter: Lanczos steps per Hessian, shape ``(m, num_batches)`` int64.
        converged: whether every Lanczos run reached its tolerance.
        indices: the rows of each mini-batch, one ``(num_batches, B)`` int64 tensor per size.
    """

    batch_sizes: torch.Tensor
    eigenvalues: torch.Tensor
    mean_top: torch.Tensor
    se_top: torch.Tensor
    n_iter: torch.Tensor
    converged: bool
    indices: tuple[torch.Tensor, ...]


class BatchSharpnessFit(NamedTuple):
    """Result of :func:`fit_batch_sharpness`: :math:`\\lambda_{\\max}(B) \\approx` ``lambda_inf + c / B``.

    ``*_ci`` are two-sided intervals at ``level``; ``chi2_dof`` is the weighted residual sum of squares per degree
    of freedom (about 1 when the form fits within the standard errors; the intervals are widened by its root when
    it exceeds 1).
    """

    lambda_inf: float
    c: float
    lambda_inf_ci: tuple[float, float]
    c_ci: tuple[float, float]
    chi2_dof: float
    level: float


class DivergenceThreshold(NamedTuple):
    """Result of :func:`divergence_threshold_lr`.

    Attributes:
        lr: the threshold estimate, the geometric mean of ``lower`` and ``upper`` (NaN when the sweep did not
            cross).
        lower: the largest step size found not to diverge (NaN if even the smallest one diverged).
        upper: the smallest step size found to diverge (NaN if none diverged).
        n_evals: calls of ``train_fn``.
        converged: the bracket reached ``upper / lower <= 1 + rtol``.
    """

    lr: float
    lower: float
    upper: float
    n_evals: int
    converged: bool


class LogLogSlope(NamedTuple):
    """Result of :func:`loglog_slope`: :math:`\\log y = a + s \\log x` by least squares, with a ``level`` CI on
    ``s`` (``ci`` is ``(nan, nan)`` for two points)."""

    slope: float
    intercept: float
    ci: tuple[float, float]
    level: float


def _example_spectrum(ctx):
    kw = _example_mlp(ctx)
    return {**kw, "batch_sizes": [2, 6], "num_batches": 2, "k": 1}


def _check_loss_data(inputs: torch.Tensor, targets: torch.Tensor) -> int:
    if inputs.dim() < 1:
        raise ValueError("inputs must have a leading sample dimension, got a scalar")
    if targets.dim() < 1 or targets.shape[0] != inputs.shape[0]:
        raise ValueError(f"targets must have {inputs.shape[0]} rows (one per row of inputs), got shape "
                         f"{tuple(targets.shape)}")
    return inputs.shape[0]


@accepts(model=Module(bind_dtype=True), loss_fn=Function(),
         inputs=Tensor(ndims=tuple(range(1, 9)), dtype="any"), targets=Tensor(ndims=tuple(range(1, 9)), dtype="any"),
         batch_sizes=Ints(ge=1, min_length=1), num_batches=Int(ge=2), k=Int(ge=1), replace=Flag(),
         max_iter=Int(ge=1, optional=True), tol=Real(ge=0), generator=Generator(), example=_example_spectrum)
def batch_hessian_spectrum(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                           inputs: torch.Tensor, targets: torch.Tensor, batch_sizes: Sequence[int],
                           num_batches: int = 8, k: int = 1, *, replace: bool = False,
                           max_iter: int | None = None, tol: float = 1e-6,
                           generator: torch.Generator | None = None) -> BatchHessianSpectrum:
    """The top eigenvalues of mini-batch Hessians :math:`H_B = \\nabla^2_\\theta L_B` at each batch size ``B``.

    References: Learning Rates as a Function of Batch Size: A Random Matrix Theory Approach to Neural Network
    Training (Granziol, Zohren, Roberts), 2022.

    For each ``B`` in ``batch_sizes``, ``num_batches`` index sets :math:`\\mathcal B` of size ``B`` are drawn from the
    ``N`` rows (without replacement within a set unless ``replace``; independently across sets), and
    :math:`L_B(\\theta) = \\texttt{loss\\_fn}(f_\\theta(x_{\\mathcal B}), y_{\\mathcal B})` (the batch mean) is handed
    to :func:`~paperzoo.diagnostics.hessian.hessian_operator`; Lanczos gives its ``k`` largest eigenvalues. ``B = N``
    without replacement is the empirical Hessian. Because the mean over a set of ``B + 1`` rows is the average of its
    ``B + 1`` leave-one-out means and :math:`\\lambda_{\\max}` is convex, :math:`E\\,\\lambda_{\\max}(H_B)` is
    nonincreasing in ``B``.

    Args:
        model: maps ``inputs`` to outputs (run as it is: use ``eval()`` for dropout/batch norm); its trainable
            parameters :math:`\\theta` (``n`` of them) are where the Hessian is taken.
        loss_fn: ``loss_fn(outputs, targets)`` -> scalar, the mean over the batch.
        inputs: shape ``(N, ...)``.
        targets: shape ``(N, ...)``.
        batch_sizes: sizes ``1 <= B <= N`` (``B <= N`` only without replacement).
        num_batches: mini-batches per size, ``>= 2`` (for a standard error).
        k: eigenvalues per Hessian, ``1 <= k <= n``.
        replace: draw each batch with replacement.
        max_iter, tol: of the Lanczos runs (see :func:`~paperzoo.diagnostics.hessian.top_eigenpairs`); the start
            vectors come from ``generator`` too.
        generator: for the batches and the Lanczos starts.

    Returns:
        :class:`BatchHessianSpectrum`; eigenvalues are float64.

    Example:
        >>> import torch
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> mse = lambda out, y: 0.5 * ((out - y) ** 2).mean()
        >>> res = batch_hessian_spectrum(model, mse, x, torch.zeros(3, 1, dtype=torch.float64), [3], 2,
        ...                              generator=torch.Generator().manual_seed(0))
        >>> round(float(res.mean_top[0]), 6) == round(float(torch.linalg.eigvalsh(x.T @ x / 3)[-1]), 6)
        True
    """
    N = _check_loss_data(inputs, targets)
    sizes = [int(b) for b in batch_sizes]
    for i, b in enumerate(sizes):
        if not replace and b > N:
            raise ValueError(f"batch_sizes[{i}] must be <= N = {N} (the number of rows) without replacement, got {b}")
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if k > n:
        raise ValueError(f"k must be <= n = {n} (the trainable parameter count), got {k}")
    steps = min(n, max(20 * k, 100)) if max_iter is None else min(max_iter, n)
    evals = torch.empty(len(sizes), num_batches, k, dtype=torch.float64)
    iters = torch.empty(len(sizes), num_batches, dtype=torch.int64)
    converged = True
    drawn = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        for i, b in enumerate(sizes):
            if replace:
                idx = torch.randint(N, (num_batches, b), generator=generator)
            else:  # one random permutation per batch, all drawn at once
                idx = torch.rand(num_batches, N, generator=generator).argsort(dim=1)[:, :b]
            drawn.append(idx)
            for j in range(num_batches):
                matvec, n = hessian_operator(model, loss_fn, inputs[idx[j]], targets[idx[j]])
                q = torch.randn(n, generator=generator, dtype=torch.float64)
                res = _top_eigenpairs(matvec, q, k, "largest", steps, tol, generator, torch.float64)
                evals[i, j] = res.eigenvalues
                iters[i, j] = res.n_iter
                converged = converged and res.converged
    if not converged:
        warnings.warn(f"batch_hessian_spectrum: {len(caught)} Lanczos runs did not reach tol={tol} in {steps} steps; "
                      "raise max_iter (or loosen tol)", RuntimeWarning, stacklevel=3)
    top = evals[:, :, 0]
    se = top.std(dim=1, correction=1) / math.sqrt(num_batches)
    return BatchHessianSpectrum(torch.tensor(sizes, dtype=torch.int64), evals, top.mean(1), se, iters, converged,
                                tuple(drawn))


def _t_quantile(level: float, dof: int) -> float:
    from scipy.special import stdtrit  # lighter to import than scipy.stats

    return float(stdtrit(dof, 0.5 + level / 2))


@accepts(batch_sizes=Tensor("m"), values=Tensor("m"), se=Tensor("m", nonnegative=True, optional=True),
         level=Real(gt=0, lt=1),
         example=lambda ctx: {"batch_sizes": torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=ctx.dtype),
                              "values": torch.tensor([9.0, 5.1, 2.9, 2.0], dtype=ctx.dtype)})
def fit_batch_sharpness(batch_sizes: torch.Tensor, values: torch.Tensor, se: torch.Tensor | None = None, *,
                        level: float = 0.95) -> BatchSharpnessFit:
    """The random-matrix form :math:`\\lambda_{\\max}(B) = \\lambda_\\infty + c/B`, fitted by weighted least squares.

    References: Learning Rates as a Function of Batch Size: A Random Matrix Theory Approach to Neural Network
    Training (Granziol, Zohren, Roberts), 2022.

    Regresses ``values`` on :math:`(1, 1/B)` with weights :math:`1/\\mathrm{se}^2` (equal weights when ``se`` is
    None); the parameter covariance is :math:`(X^\\top W X)^{-1}` times :math:`\\max(1, \\chi^2/\\nu)` (``se`` given)
    or the residual variance (``se`` None), :math:`\\nu = m - 2`, and the intervals use Student's t with
    :math:`\\nu` degrees of freedom.

    Args:
        batch_sizes: ``B``, shape ``(m,)``, positive, at least 3 distinct values.
        values: measured :math:`\\lambda_{\\max}(B)` (e.g. :attr:`BatchHessianSpectrum.mean_top`), shape ``(m,)``.
        se: their standard errors, shape ``(m,)``, positive (or None).
        level: confidence level in ``(0, 1)``.

    Example:
        >>> import torch
        >>> B = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64)
        >>> fit = fit_batch_sharpness(B, 2.0 + 6.0 / B + torch.tensor([0.01, -0.01, 0.01, -0.01], dtype=B.dtype))
        >>> round(fit.lambda_inf, 1), round(fit.c, 1), fit.c_ci[0] < 6.0 < fit.c_ci[1]
        (2.0, 6.0, True)
    """
    if bool((batch_sizes <= 0).any()):
        raise ValueError(f"batch_sizes must be > 0, got {batch_sizes.min().item()}")
    if torch.unique(batch_sizes).numel() < 3:
        raise ValueError(f"batch_sizes must have at least 3 distinct values (two parameters and a residual), got "
                         f"{torch.unique(batch_sizes).numel()}")
    if se is not None and bool((se <= 0).any()):
        raise ValueError("se must be > 0 (a zero standard error gives an infinite weight), got a zero entry")
    m = values.numel()
    x = 1.0 / batch_sizes.double()
    y = values.double()
    w = torch.ones_like(y) if se is None else se.double() ** -2
    X = torch.stack([torch.ones_like(x), x], 1)
    A = X.T @ (w[:, None] * X)
    beta = torch.linalg.solve(A, X.T @ (w * y))
    r = y - X @ beta
    dof = m - 2
    chi2 = float((w * r ** 2).sum()) / dof
    scale = chi2 if se is None else max(1.0, chi2)
    cov = torch.linalg.inv(A) * scale
    q = _t_quantile(level, dof)
    half = q * cov.diagonal().clamp_min(0).sqrt()
    a, c = float(beta[0]), float(beta[1])
    return BatchSharpnessFit(a, c, (a - float(half[0]), a + float(half[0])), (c - float(half[1]), c + float(half[1])),
                             chi2, level)


@accepts(x=Tensor("m"), y=Tensor("m"), level=Real(gt=0, lt=1),
         example=lambda ctx: {"x": torch.tensor([1.0, 2.0, 4.0], dtype=ctx.dtype),
                              "y": torch.tensor([0.1, 0.21, 0.39], dtype=ctx.dtype)})
def loglog_slope(x: torch.Tensor, y: torch.Tensor, *, level: float = 0.95) -> LogLogSlope:
    """The exponent :math:`s` of a power law :math:`y \\propto x^s`, by least squares of :math:`\\log y` on
    :math:`\\log x`.

    Args:
        x, y: positive, shape ``(m,)``, at least 2 distinct ``x``; the CI (Student's t, ``m - 2`` degrees of
            freedom) needs ``m >= 3``.
        level: confidence level in ``(0, 1)``.

    Example:
        >>> import torch
        >>> s = loglog_slope(torch.tensor([1.0, 2.0, 4.0, 8.0]), torch.tensor([3.0, 6.0, 12.0, 24.0]))
        >>> round(s.slope, 6)
        1.0
    """
    if bool((x <= 0).any()) or bool((y <= 0).any()):
        raise ValueError("x and y must be > 0 (their logarithms are fitted), got a nonpositive entry")
    if torch.unique(x).numel() < 2:
        raise ValueError("x must have at least 2 distinct values, got 1")
    line = fit_line(x.double().log(), y.double().log(), level=level)
    return LogLogSlope(line.slope, line.intercept, (line.ci_low, line.ci_high), level)


class _StepSizes(Spec):
    """An ascending sequence of at least two positive finite step sizes (the sweep of a threshold search)."""

    def check(self, name, value, binding):
        if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, torch.Tensor)):
            raise TypeError(f"{name} must be a sequence of step sizes, got {type(value).__name__}")
        vals = [float(v) for v in value]
        if len(vals) < 2:
            raise ValueError(f"{name} must have at least 2 entries (a bracket), got {len(vals)}")
        if not all(math.isfinite(v) and v > 0 for v in vals):
            raise ValueError(f"{name} must be positive and finite, got {vals}")
        if any(b <= a for a, b in zip(vals, vals[1:])):
            raise ValueError(f"{name} must be strictly increasing, got {vals}")

    def example(self, ctx):
        return [0.01, 0.1, 1.0, 10.0]


@accepts(train_fn=Function(), lrs=_StepSizes(), rtol=Real(gt=0), max_bisect=Int(ge=0),
         example=lambda ctx: {"train_fn": lambda lr: lr > 0.5, "lrs": [0.01, 0.1, 1.0, 10.0]})
def divergence_threshold_lr(train_fn: Callable[[float], bool], lrs: Sequence[float], *, rtol: float = 0.02,
                            max_bisect: int = 40) -> DivergenceThreshold:
    """The largest step size that does not diverge, by a sweep that brackets it and bisection in :math:`\\log\\eta`.

    References: Learning Rates as a Function of Batch Size: A Random Matrix Theory Approach to Neural Network
    Training (Granziol, Zohren, Roberts), 2022 (the maximal learning rate as a function of the batch size).

    ``train_fn(lr)`` runs training at step size ``lr`` and returns True when it diverged. It should be
    deterministic in ``lr`` (fixed initialisation and batch sequence) and divergence monotone in ``lr``. The
    ascending grid ``lrs`` is swept until the first divergent value ``upper``; with ``lower`` the value before it,
    the bracket is then halved at :math:`\\sqrt{\\mathrm{lower}\\cdot\\mathrm{upper}}` until
    ``upper / lower <= 1 + rtol`` (or ``max_bisect`` halvings). The estimate is the geometric midpoint. A sweep that
    does not cross (nothing diverges, or already ``lrs[0]`` does) returns NaN with a warning naming the grid's end
    to extend. On a quadratic with top curvature :math:`\\lambda_{\\max}`, gradient descent gives
    :math:`2/\\lambda_{\\max}`.

    Args:
        train_fn: ``(lr: float) -> bool`` (True: diverged).
        lrs: ascending positive step sizes, at least 2 (e.g. log-spaced).
        rtol: relative bracket width to stop at, ``> 0``.
        max_bisect: bisection calls of ``train_fn`` at most, ``>= 0`` (after the sweep).

    Example:
        >>> res = divergence_threshold_lr(lambda lr: lr > 0.5, [0.01, 0.1, 1.0, 10.0], rtol=1e-6)
        >>> round(res.lr, 5), res.converged
        (0.5, True)
    """
    grid = [float(v) for v in lrs]
    evals = 0
    lower = upper = math.nan
    for lr in grid:
        evals += 1
        diverged = train_fn(lr)
        if not isinstance(diverged, (bool, int)) and not (isinstance(diverged, torch.Tensor)
                                                           and diverged.numel() == 1):
            raise TypeError(f"train_fn must return a bool (True: diverged), got {type(diverged).__name__}")
        if bool(diverged):
            upper = lr
            break
        lower = lr
    if math.isnan(upper) or math.isnan(lower):
        end = "upwards (nothing diverged)" if math.isnan(upper) else "downwards (lrs[0] already diverged)"
        warnings.warn(f"divergence_threshold_lr: the sweep over lrs did not cross the threshold; extend lrs {end}",
                      RuntimeWarning, stacklevel=3)
        return DivergenceThreshold(math.nan, lower, upper, evals, False)
    sweep = evals
    while upper / lower > 1 + rtol and evals - sweep < max_bisect:
        mid = math.sqrt(lower * upper)
        evals += 1
        if bool(train_fn(mid)):
            upper = mid
        else:
            lower = mid
    converged = upper / lower <= 1 + rtol
    if not converged:
        warnings.warn(f"divergence_threshold_lr: the bracket is still {upper / lower:.3g}x wide after max_bisect="
                      f"{max_bisect} halvings; raise max_bisect (or loosen rtol)", RuntimeWarning, stacklevel=3)
    return DivergenceThreshold(math.sqrt(lower * upper), lower, upper, evals, converged)
