"""Interpolating linear predictors: the minimum-norm interpolant, deep linear networks trained to interpolate, and
their excess risk and conditional variance under a known covariance.

References: Deep Linear Networks can Benignly Overfit when Shallow Ones Do (Chatterji, Long), 2023.

Setting. Covariates :math:`x \\sim N(0, \\Sigma)` in :math:`\\mathbb R^d`, responses
:math:`y = x^\\top\\theta^\\star + \\varepsilon` with noise of variance :math:`\\sigma^2`; ``n < d`` training points
stacked in :math:`X \\in \\mathbb R^{n\\times d}`. The minimum-:math:`\\ell_2`-norm interpolant is
:math:`\\hat\\theta_{\\rm mn} = X^+ y`. A deep linear network of depth :math:`L` computes
:math:`x \\mapsto W_L \\cdots W_1 x`, with end-to-end map :math:`\\theta = (W_L\\cdots W_1)^\\top`.

The mechanism the paper builds on: the gradient of the square loss with respect to :math:`W_1` is
:math:`(W_L\\cdots W_2)^\\top r^\\top X` (``r`` the residuals), so training moves the rows of :math:`W_1` only
inside the row space of :math:`X`. Writing :math:`P_\\perp` for the projection onto the null space of :math:`X`,
an interpolating network therefore satisfies

.. math::
    \\theta = \\hat\\theta_{\\rm mn} + P_\\perp W_1(0)^\\top (W_L \\cdots W_2)^\\top\\big|_{\\rm end},

the min-norm interpolant plus a null-space term carried by the *initial* first layer. The excess risk
:math:`(\\theta - \\theta^\\star)^\\top\\Sigma(\\theta - \\theta^\\star)` of the network therefore differs from the
min-norm interpolant's by a term that vanishes with the first-layer initialisation scale :math:`\\alpha`
(``init_scale``): with a small :math:`\\alpha` deep linear networks overfit benignly exactly when the min-norm
interpolant does, and the noise enters (the conditional variance over redraws of :math:`\\varepsilon`, with
:math:`X` and the initialisation fixed) as it does for the min-norm interpolant; a large :math:`\\alpha` adds a
bias term.

Pieces: :func:`min_norm_interpolant`; :func:`train_deep_linear_regression` (full-batch gradient descent on the
layers, the paper's gradient flow discretised, for a batch of response vectors at once, with the paper's
initialisation: first layer :math:`N(0, \\alpha^2)`, middle layers the identity, last layer :math:`N(0, \\beta^2)`);
:func:`linear_excess_risk` (closed form); :func:`conditional_variance` (Monte Carlo over noise redraws, with a
jackknife standard error) and :func:`min_norm_conditional_variance` (its closed form for the min-norm
interpolant, :math:`\\sigma^2\\operatorname{tr}(X^{+\\top}\\Sigma X^+)`).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Generator, Int, Real, Tensor, accepts

__all__ = ["DeepLinearRegressionFit", "ConditionalVariance", "min_norm_interpolant", "train_deep_linear_regression",
           "linear_excess_risk", "conditional_variance", "min_norm_conditional_variance"]


class DeepLinearRegressionFit(NamedTuple):
    """Result of :func:`train_deep_linear_regression`.

    Attributes:
        theta: end-to-end map :math:`(W_L\\cdots W_1)^\\top`, shape ``(d,)`` or ``(r, d)`` (one per response vector).
        weights: ``(W_1, ..., W_L)``; :math:`W_1` of shape ``(m, d)``, middle ones ``(m, m)``, :math:`W_L`
            ``(1, m)`` (``(1, d)`` for depth 1), each with a leading ``r`` when ``y`` has one.
        initial_first_layer: :math:`W_1(0)`, shape ``(m, d)`` (shared by all response vectors).
        loss: final training loss :math:`\\frac1{2n}\\|X\\theta - y\\|^2`, a float (the largest over the batch).
        n_iter: gradient steps taken.
        converged: whether every loss reached ``tol``.
    """

    theta: torch.Tensor
    weights: tuple[torch.Tensor, ...]
    initial_first_layer: torch.Tensor
    loss: float
    n_iter: int
    converged: bool


class ConditionalVariance(NamedTuple):
    """Result of :func:`conditional_variance`.

    Attributes:
        value: :math:`\\operatorname{tr}(\\Sigma\\hat C)`, :math:`\\hat C` the unbiased sample covariance of the fits.
        std_error: jackknife standard error of ``value``.
        n_draws: number of fits (noise redraws) ``r``.
    """

    value: float
    std_error: float
    n_draws: int


def _step(layers: list[torch.Tensor], grads, scale: float) -> None:
    """W_j <- W_j + scale * a_j^T c_j in place, one fused pass per layer."""
    for W, (a, c) in zip(layers, grads):
        if a is None:
            W.add_(c, alpha=scale)
        else:
            W.baddbmm_(a, c, alpha=scale)


def _example_xy(ctx):
    g = ctx.generator
    n = ctx.size("n")
    X = torch.randn(n, n + ctx.size("d"), generator=g, dtype=ctx.dtype)  # d > n: an interpolation problem
    # y batched (r, n): the fuzz table's "extra dimension" probe is then invalid, as it should be
    return {"X": X, "y": torch.randn(ctx.size("r"), n, generator=g, dtype=ctx.dtype)}


def _pinv(X: torch.Tensor) -> torch.Tensor:
    return torch.linalg.pinv(X)


@accepts(X=Tensor("n", "d"), y=Tensor(..., "n", max_batch_dims=1), example=_example_xy)
def min_norm_interpolant(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Minimum-l2-norm interpolant (least-norm least-squares solution) :math:`\\hat\\theta = X^+ y`.

    References: Deep Linear Networks can Benignly Overfit when Shallow Ones Do (Chatterji, Long), 2023 (the
    baseline whose risk deep linear networks are compared with).

    For ``n <= d`` and :math:`X` of full row rank, :math:`\\hat\\theta = X^\\top(XX^\\top)^{-1}y` interpolates
    (:math:`X\\hat\\theta = y`) and has the smallest norm among interpolants; otherwise it is the least-norm
    minimiser of :math:`\\|X\\theta - y\\|`. Computed with the SVD-based pseudo-inverse.

    Args:
        X: design matrix, shape ``(n, d)``.
        y: responses, shape ``(n,)`` or ``(r, n)`` (``r`` response vectors on the same design).

    Returns:
        :math:`\\hat\\theta`, shape ``(d,)`` or ``(r, d)``.

    Example:
        >>> import torch
        >>> X = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
        >>> min_norm_interpolant(X, torch.tensor([2.0], dtype=torch.float64)).round(decimals=12).tolist()
        [1.0, 1.0]
    """
    return (y @ _pinv(X).T)


def _init_layers(d: int, depth: int, width: int, alpha: float, beta: float, dtype, device, generator):
    if depth == 1:
        return [alpha * torch.randn(1, d, generator=generator, dtype=dtype, device=device)]
    first = alpha * torch.randn(width, d, generator=generator, dtype=dtype, device=device)
    last = beta * torch.randn(1, width, generator=generator, dtype=dtype, device=device)
    middle = [torch.eye(width, dtype=dtype, device=device) for _ in range(depth - 2)]
    return [first, *middle, last]


def _end_to_end(layers: list[torch.Tensor]) -> torch.Tensor:
    """theta^T = W_L ... W_1, batched over a leading r: shape (r, d). Multiplied from the output side (1 row)."""
    row = layers[-1]
    for W in reversed(layers[:-1]):
        row = row @ W
    return row.squeeze(-2)


def _loss_and_grads(layers: list[torch.Tensor], X: torch.Tensor, Y: torch.Tensor):
    """Per-problem losses (r,) and the gradients of their sum with respect to every layer, in closed form, as
    rank-one factors ``(a_j, c_j)`` (``a_j`` None for the last layer): the gradient for W_j is ``a_j^T c_j``.

    With P = W_L ... W_1 (a row, r x 1 x d) and G = dL/dP = (P X^T - y) X / n, a_j = W_L ... W_{j+1} (the output
    side) and c_j = G W_1^T ... W_{j-1}^T (the input side): O(r m d) per step, no autograd graph, and the step
    never forms the (r, m, d) gradient of the first layer.
    """
    n = X.shape[0]
    outer = [None] * len(layers)  # a_j, the product of the layers above j (None: the identity, for W_L)
    row = None
    for j in range(len(layers) - 1, -1, -1):
        outer[j] = row
        row = layers[j] if row is None else row @ layers[j]
    resid = row.squeeze(-2) @ X.T - Y  # (r, n)
    losses = resid.square().sum(-1) / (2 * n)
    inner = (resid @ X / n).unsqueeze(-2)  # c_1 = G, (r, 1, d)
    grads = []
    for j, W in enumerate(layers):
        grads.append((None if outer[j] is None else outer[j].transpose(-1, -2), inner))
        if j + 1 < len(layers):
            inner = inner @ W.transpose(-1, -2)
    return losses, grads


@accepts(X=Tensor("n", "d"), y=Tensor(..., "n", max_batch_dims=1), depth=Int(ge=1), width=Int(ge=1),
         init_scale=Real(ge=0), last_layer_scale=Real(ge=0), lr=Real(gt=0), max_iter=Int(ge=0), tol=Real(ge=0),
         generator=Generator(),
         example=lambda ctx: {**_example_xy(ctx), "depth": 2, "width": 4, "init_scale": 0.1, "lr": 0.05,
                              "max_iter": 5})
def train_deep_linear_regression(X: torch.Tensor, y: torch.Tensor, *, depth: int, width: int, init_scale: float,
                                 last_layer_scale: float = 1.0, lr: float, max_iter: int = 10000,
                                 tol: float = 1e-12,
                                 generator: torch.Generator | None = None) -> DeepLinearRegressionFit:
    """Train a deep linear network on the square loss by full-batch gradient descent, to interpolation.

    References: Deep Linear Networks can Benignly Overfit when Shallow Ones Do (Chatterji, Long), 2023 (gradient
    flow on :math:`\\frac1{2n}\\|X W_1^\\top\\cdots W_L^\\top - y\\|^2`, discretised; the paper's initialisation).

    The network :math:`x\\mapsto W_L\\cdots W_1 x` has :math:`W_1\\in\\mathbb R^{m\\times d}` with entries
    :math:`N(0, \\alpha^2)` (:math:`\\alpha` = ``init_scale``, drawn first from ``generator``), middle layers
    :math:`W_2, \\dots, W_{L-1} = I_m` (:math:`m` = ``width``, :math:`L` = ``depth``) and
    :math:`W_L\\in\\mathbb R^{1\\times m}` with entries :math:`N(0, \\beta^2)` (:math:`\\beta` = ``last_layer_scale``,
    drawn second). Depth 1 is the linear model :math:`\\theta` itself, started at :math:`N(0, \\alpha^2 I)`
    (``init_scale=0``: the zero start, from which gradient descent converges to the min-norm interpolant; ``width``
    and ``last_layer_scale`` are then unused). Each step is :math:`W_j \\leftarrow W_j - \\eta\\nabla_{W_j}` for all
    layers at once (:math:`\\eta` = ``lr``). A batch ``y`` of shape ``(r, n)`` trains ``r`` networks from the *same*
    initialisation, one per response vector (noise redraws on a fixed design), in one loop. Stops when every loss
    is at most ``tol``; warns when ``max_iter`` is reached first, and on a non-finite loss stops with a warning,
    returning the last finite point.

    Args:
        X: design matrix, shape ``(n, d)``.
        y: responses, shape ``(n,)`` or ``(r, n)``.
        depth: number of layers ``L``.
        width: hidden width ``m``.
        init_scale: first-layer standard deviation :math:`\\alpha`.
        last_layer_scale: last-layer standard deviation :math:`\\beta`.
        lr: step size.
        max_iter, tol: step cap; training-loss tolerance.
        generator: for the initial draw.

    Returns:
        :class:`DeepLinearRegressionFit`.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> X = torch.randn(5, 40, generator=g, dtype=torch.float64)
        >>> y = torch.randn(5, generator=g, dtype=torch.float64)
        >>> fit = train_deep_linear_regression(X, y, depth=3, width=16, init_scale=1e-3, last_layer_scale=0.25,
        ...                                    lr=0.02, tol=1e-20, generator=g)
        >>> fit.converged, bool(torch.allclose(X @ fit.theta, y, atol=1e-8))
        (True, True)
    """
    batched = y.dim() == 2
    Y = y if batched else y.unsqueeze(0)
    r, n = Y.shape
    init = _init_layers(X.shape[1], depth, width, float(init_scale), float(last_layer_scale), X.dtype, X.device,
                        generator)
    layers = [W.unsqueeze(0).repeat(r, *([1] * W.dim())) for W in init]

    def evaluate():
        loss, grads = _loss_and_grads(layers, X, Y)
        return float(loss.max()), grads

    loss, grads = evaluate()
    n_iter, diverged = 0, False
    while loss > tol and n_iter < max_iter:
        if not all(bool(torch.isfinite(c).all()) and (a is None or bool(torch.isfinite(a).all()))
                   for a, c in grads):
            diverged = True
            break
        n_iter += 1
        _step(layers, grads, -lr)
        previous = grads
        loss, grads = evaluate()
        if not math.isfinite(loss):
            diverged = True
            _step(layers, previous, lr)  # undo the step that left the finite numbers
            break
    if diverged:
        warnings.warn(f"train_deep_linear_regression: the loss became non-finite at step {n_iter}; lower lr "
                      f"(now {lr})", RuntimeWarning, stacklevel=2)
        loss, _ = evaluate()
        loss = loss if math.isfinite(loss) else math.inf
    converged = loss <= tol
    if not converged and not diverged:
        warnings.warn(f"train_deep_linear_regression did not reach tol={tol} in max_iter={max_iter} (loss "
                      f"{loss:.3g}); raise max_iter or lr", RuntimeWarning, stacklevel=2)
    weights = layers
    theta = _end_to_end(weights)
    if not batched:
        theta, weights = theta[0], [W[0] for W in weights]
    return DeepLinearRegressionFit(theta, tuple(weights), init[0], loss, n_iter, converged)


def _example_risk(ctx):
    g = ctx.generator
    d = ctx.size("d")
    A = torch.randn(d, d, generator=g, dtype=ctx.dtype)
    return {"theta": torch.randn(d, generator=g, dtype=ctx.dtype),
            "theta_star": torch.randn(d, generator=g, dtype=ctx.dtype), "cov": A @ A.T / d}


def _risk(theta: torch.Tensor, theta_star: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    delta = theta - theta_star
    return ((delta @ cov) * delta).sum(-1)


@accepts(theta=Tensor(..., "d"), theta_star=Tensor("d"), cov=Tensor("d", "d", symmetric=True),
         example=_example_risk)
def linear_excess_risk(theta: torch.Tensor, theta_star: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """Excess risk of a linear predictor under a known covariance, in closed form.

    References: Deep Linear Networks can Benignly Overfit when Shallow Ones Do (Chatterji, Long), 2023.

    :math:`\\mathcal R(\\theta) = \\mathbb E_x[(x^\\top\\theta - x^\\top\\theta^\\star)^2] =
    (\\theta - \\theta^\\star)^\\top\\Sigma(\\theta - \\theta^\\star)` for :math:`x` of mean 0 and covariance
    :math:`\\Sigma` (``cov``): the test square loss minus the noise variance.

    Args:
        theta: predictors, shape ``(..., d)``.
        theta_star: the true parameter, shape ``(d,)``.
        cov: covariance :math:`\\Sigma`, shape ``(d, d)``, symmetric positive semi-definite.

    Returns:
        The excess risk, shape ``(...)``.

    Example:
        >>> import torch
        >>> cov = torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64))
        >>> float(linear_excess_risk(torch.tensor([1.0, 1.0], dtype=torch.float64),
        ...                          torch.zeros(2, dtype=torch.float64), cov))
        5.0
    """
    return _risk(theta, theta_star, cov)


def _example_cv(ctx):
    g = ctx.generator
    d = ctx.size("d")
    A = torch.randn(d, d, generator=g, dtype=ctx.dtype)
    return {"thetas": torch.randn(ctx.size("r") + 3, d, generator=g, dtype=ctx.dtype), "cov": A @ A.T / d}


@accepts(thetas=Tensor("r", "d", degenerate=("coincident",)), cov=Tensor("d", "d", symmetric=True),
         example=_example_cv)
def conditional_variance(thetas: torch.Tensor, cov: torch.Tensor) -> ConditionalVariance:
    """Conditional variance of a fitted linear predictor over noise redraws, estimated by Monte Carlo.

    References: Deep Linear Networks can Benignly Overfit when Shallow Ones Do (Chatterji, Long), 2023.

    ``thetas[i]`` is the predictor fitted to the responses :math:`X\\theta^\\star + \\varepsilon_i` (the same design
    :math:`X` and, for a network, the same initialisation; only the noise redrawn). The conditional variance
    :math:`\\mathbb E_\\varepsilon\\|\\Sigma^{1/2}(\\hat\\theta - \\mathbb E_\\varepsilon\\hat\\theta)\\|^2` is
    estimated without bias by :math:`\\frac1{r-1}\\sum_i (\\theta_i - \\bar\\theta)^\\top\\Sigma(\\theta_i -
    \\bar\\theta)`; the standard error is the leave-one-out jackknife's.

    Args:
        thetas: ``r >= 3`` fits, shape ``(r, d)``.
        cov: covariance :math:`\\Sigma`, shape ``(d, d)``.

    Returns:
        :class:`ConditionalVariance`.

    Example:
        >>> import torch
        >>> t = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
        >>> conditional_variance(t, torch.eye(1, dtype=torch.float64)).value
        1.0
    """
    r = thetas.shape[0]
    if r < 3:
        raise ValueError(f"thetas must hold at least 3 fits (rows), got {r}")
    q = _risk(thetas, thetas.mean(0), cov)  # squared Sigma-distances to the mean
    S = q.sum()
    value = S / (r - 1)
    loo = (S - q * r / (r - 1)) / (r - 2)  # leave-one-out estimates, in closed form
    se = torch.sqrt((r - 1) / r * (loo - loo.mean()).square().sum())
    return ConditionalVariance(float(value), float(se), r)


def _example_mncv(ctx):
    kw = _example_xy(ctx)
    d = kw["X"].shape[1]
    A = torch.randn(d, d, generator=ctx.generator, dtype=ctx.dtype)
    return {"X": kw["X"], "cov": A @ A.T / d, "noise_var": 0.5}


@accepts(X=Tensor("n", "d"), cov=Tensor("d", "d", symmetric=True), noise_var=Real(ge=0), example=_example_mncv)
def min_norm_conditional_variance(X: torch.Tensor, cov: torch.Tensor, noise_var: float) -> float:
    """Conditional variance of the min-norm interpolant, in closed form.

    References: Deep Linear Networks can Benignly Overfit when Shallow Ones Do (Chatterji, Long), 2023.

    :math:`\\hat\\theta_{\\rm mn} - \\mathbb E_\\varepsilon\\hat\\theta_{\\rm mn} = X^+\\varepsilon`, so for noise of
    covariance :math:`\\sigma^2 I_n` (:math:`\\sigma^2` = ``noise_var``) the conditional variance is
    :math:`\\sigma^2\\operatorname{tr}(X^{+\\top}\\Sigma X^+)`.

    Args:
        X: design matrix, shape ``(n, d)``.
        cov: covariance :math:`\\Sigma`, shape ``(d, d)``.
        noise_var: noise variance :math:`\\sigma^2`.

    Returns:
        The conditional variance (a float).

    Example:
        >>> import torch
        >>> X = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
        >>> min_norm_conditional_variance(X, torch.eye(2, dtype=torch.float64), 1.0)
        0.25
    """
    P = _pinv(X)  # (d, n)
    return float(noise_var * ((cov @ P) * P).sum())
