"""Accelerated SGD (Jain et al.'s four-parameter ASGD) against SGD on streaming linear regression, and their exact
expected excess risk split into bias and variance along the eigen-directions of the covariance.

References: Risk Bounds of Accelerated SGD for Overparameterized Linear Regression (Li, Deng, Wu, Zhou, Gu), 2024;
Accelerating Stochastic Gradient Descent for Least Squares Regression (Jain, Kakade, Kidambi, Netrapalli,
Sidford), 2018.

Model: :math:`y = x^\\top w^* + \\epsilon`, :math:`x \\sim \\mathcal N(0, H)`, :math:`\\epsilon \\sim \\mathcal N(0,
\\sigma^2)` independent of :math:`x`; one pass, sample :math:`(x_t, y_t)` used once at step ``t``, stochastic
gradient :math:`\\hat g_t(u) = x_t (x_t^\\top u - y_t)` of :math:`L(w) = \\tfrac12 \\mathbb E (y - x^\\top w)^2`.
ASGD with ``params = ASGDParams(alpha, beta, gamma, delta)`` keeps two sequences, :math:`v_0 = w_0`:

.. math::
    u_{t-1} = \\alpha w_{t-1} + (1 - \\alpha) v_{t-1}, \\qquad
    w_t = u_{t-1} - \\delta \\hat g_t(u_{t-1}), \\qquad
    v_t = \\beta u_{t-1} + (1 - \\beta) v_{t-1} - \\gamma \\hat g_t(u_{t-1}).

``delta`` is the short (SGD) step, ``gamma`` the long step of the momentum sequence ``v``, ``beta`` how much of the
current point ``v`` absorbs and ``alpha`` the coupling. The acceleration switches off (the reduction to SGD with
step ``delta``) when ``alpha = 1`` (then ``u = w`` and ``v`` is never read) or when ``beta = 1`` and
``gamma = delta`` (then ``v_t = w_t`` for all ``t``). :func:`sgd_linear_regression` is plain SGD
:math:`w_t = w_{t-1} - \\eta \\hat g_t(w_{t-1})`.

Output: the last iterate :math:`w_n`, or with ``tail_start = s`` the tail average
:math:`\\bar w = \\frac{1}{n - s} \\sum_{t = s + 1}^{n} w_t`. Excess risk :math:`L(w) - L(w^*) = \\tfrac12
\\|w - w^*\\|_H^2`; along the eigen-direction ``i`` of :math:`H = \\mathrm{diag}(\\lambda)` it is
:math:`\\tfrac12 \\lambda_i (w - w^*)_i^2`.

Exact expected risk (:func:`asgd_risk_decomposition`, :func:`sgd_risk_decomposition`): the error
:math:`z_t = (w_t - w^*, v_t - w^*)` evolves linearly in :math:`z_{t-1}` and :math:`x_t\\epsilon_t`, and the
noise is independent and mean zero, so :math:`\\mathbb E z z^\\top` is *exactly* the sum of a bias part (noiseless,
from :math:`z_0`) and a variance part (from :math:`z_0 = 0`, with noise): no cross term. For Gaussian :math:`x`
(Isserlis: :math:`\\mathbb E[x x^\\top U x x^\\top] = 2 H U H + \\mathrm{tr}(H U) H`) and diagonal :math:`H` the
diagonal entries of the blocks of :math:`\\mathbb E z z^\\top` close on themselves, so the recursion is
:math:`O(d)` per step and exact (no Monte Carlo): this is what the functions compute. For the tail average the
cross-time moments use :math:`\\mathbb E[z_{t+1} \\mid z_t] = T z_t` (a 2 x 2 map per eigen-direction), summed by
the forward recursion :math:`C_{t+1} = T C_t + \\mathbb E z_{t+1} z_{t+1}^\\top`.

The paper's prediction (its per-subspace bounds): with ``gamma > delta``, on eigen-directions with small
eigenvalues the ASGD bias decays at a faster exponential rate than SGD's with step ``delta`` (the momentum sequence
moves with the long step), on the large ones slower (the momentum oscillates); the ASGD variance is at least SGD's
in every direction. ASGD wins when :math:`w_0 - w^*` sits on the small-eigenvalue subspace. A caution learned
here: the deterministic Nesterov coupling (:math:`\\beta = \\sqrt{\\delta\\mu}`, :math:`\\gamma = \\beta/\\mu`,
:math:`\\alpha = 1/(1+\\beta)`) diverges in mean square with stochastic gradients at an SGD-sized ``delta``
(the recursion here reports ``stable=False``); the long step must stay a modest multiple of ``delta``.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Instance, Int, Real, Tensor, accepts

__all__ = ["ASGDParams", "StreamingRegression", "RiskDecomposition",
           "asgd_linear_regression", "sgd_linear_regression", "asgd_risk_decomposition", "sgd_risk_decomposition",
           "excess_risk_per_direction"]


class ASGDParams(NamedTuple):
    """The four ASGD parameters (Jain et al., 2018): coupling ``alpha``, mixing ``beta``, long step ``gamma``,
    short step ``delta``. ``ASGDParams(1.0, b, g, eta)`` is SGD with step ``eta``."""

    alpha: float
    beta: float
    gamma: float
    delta: float


class StreamingRegression(NamedTuple):
    """Result of :func:`asgd_linear_regression` / :func:`sgd_linear_regression`.

    Attributes:
        w: the output, shape ``(runs, d)``: the last iterate, or the tail average when ``tail_start`` is given.
        w_last: the last iterate :math:`w_n`, shape ``(runs, d)``.
        v_last: the last momentum iterate :math:`v_n` (``w_last`` for SGD), to continue a stream in chunks.
        n_steps: samples consumed (one step each).
    """

    w: torch.Tensor
    w_last: torch.Tensor
    v_last: torch.Tensor
    n_steps: int


class RiskDecomposition(NamedTuple):
    """Result of :func:`asgd_risk_decomposition` / :func:`sgd_risk_decomposition` (exact expectations).

    Attributes:
        bias: per eigen-direction, :math:`\\tfrac12 \\lambda_i \\mathbb E (w - w^*)_i^2` of the noiseless
            recursion, shape ``(d,)``.
        variance: the same for the recursion from :math:`w_0 = w^*` with noise, shape ``(d,)``.
        risk: ``(bias + variance).sum()``, the expected excess risk (float).
        stable: whether the second moments stayed finite (``False``: the step sizes diverge in mean square).
    """

    bias: torch.Tensor
    variance: torch.Tensor
    risk: float
    stable: bool


def _check_params(name: str, params: ASGDParams) -> ASGDParams:
    for field in ASGDParams._fields:
        v = getattr(params, field)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise TypeError(f"{name}.{field} must be a finite real number, got {v!r}")
    a, b, g, dl = (float(v) for v in params)
    if not 0.0 < a <= 1.0:
        raise ValueError(f"{name}.alpha must be in (0.0, 1.0], got {a}")
    if not 0.0 <= b <= 1.0:
        raise ValueError(f"{name}.beta must be in [0.0, 1.0], got {b}")
    if g < 0.0:
        raise ValueError(f"{name}.gamma must be >= 0.0, got {g}")
    if dl <= 0.0:
        raise ValueError(f"{name}.delta must be > 0.0, got {dl}")
    return ASGDParams(a, b, g, dl)


def _check_tail(tail_start, n: int):
    if tail_start is not None and tail_start >= n:
        raise ValueError(f"tail_start must be < the number of samples ({n}), got {tail_start}")


def _example_params(ctx):
    return {"params": ASGDParams(0.8, 0.1, 0.5, 0.1)}


def _x(ctx):
    shape = (ctx.size("runs"), ctx.size("n"), ctx.size("d"))
    return torch.randn(*shape, dtype=ctx.dtype, generator=ctx.generator) * 0.5


def _y(ctx):
    return torch.randn(ctx.size("runs"), ctx.size("n"), dtype=ctx.dtype, generator=ctx.generator)


def _eig(ctx):
    return torch.arange(1, ctx.size("d") + 1, dtype=ctx.dtype) ** -1.0


def _asgd_stream(X, y, p: ASGDParams, w, v, tail_start):
    a, b, g, dl = p
    n = X.shape[1]
    acc = torch.zeros_like(w) if tail_start is not None else None
    for t in range(n):
        x = X[:, t]
        u = a * w + (1.0 - a) * v
        grad = x * ((x * u).sum(-1) - y[:, t]).unsqueeze(-1)
        w, v = u - dl * grad, b * u + (1.0 - b) * v - g * grad
        if acc is not None and t >= tail_start:
            acc = acc + w
    out = w if acc is None else acc / (n - tail_start)
    return StreamingRegression(out, w, v, n)


_STREAM = dict(X=Tensor("runs", "n", "d", example=_x), y=Tensor("runs", "n", example=_y),
               w0=Tensor("runs", "d", optional=True), tail_start=Int(ge=0, optional=True))


@accepts(params=Instance(ASGDParams, what="ASGDParams"), v0=Tensor("runs", "d", optional=True), **_STREAM,
         example=_example_params)
def asgd_linear_regression(X: torch.Tensor, y: torch.Tensor, params: ASGDParams, *, w0: torch.Tensor | None = None,
                           v0: torch.Tensor | None = None, tail_start: int | None = None) -> StreamingRegression:
    """One pass of accelerated SGD (Jain et al.'s four-parameter form) on streaming least squares, for a batch of
    independent runs advanced together (the loop is over samples only).

    Args:
        X: covariates, shape ``(runs, n, d)``; run ``r`` sees ``X[r, t]`` at step ``t + 1``.
        y: responses, shape ``(runs, n)``.
        params: :class:`ASGDParams` ``(alpha, beta, gamma, delta)``, see the module docstring.
        w0: initial point, shape ``(runs, d)`` (default zeros).
        v0: initial momentum point (default ``w0``, as in the paper).
        tail_start: average the iterates ``w_{s+1}, ..., w_n`` (``s = tail_start``); ``None``: last iterate.

    Returns:
        :class:`StreamingRegression`.

    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(4, 200, 3, generator=g, dtype=torch.float64)
    >>> y = X @ torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    >>> r = asgd_linear_regression(X, y, ASGDParams(1 / 1.1, 0.1, 0.3, 0.1))
    >>> bool(torch.allclose(r.w, torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64), atol=1e-6))
    True
    """
    p = _check_params("params", params)
    n = X.shape[1]
    _check_tail(tail_start, n)
    w = torch.zeros(X.shape[0], X.shape[2], dtype=X.dtype, device=X.device) if w0 is None else w0.clone()
    v = w.clone() if v0 is None else v0.clone()
    return _asgd_stream(X, y, p, w, v, tail_start)


@accepts(lr=Real(gt=0, example=0.1), **_STREAM)
def sgd_linear_regression(X: torch.Tensor, y: torch.Tensor, lr: float, *, w0: torch.Tensor | None = None,
                          tail_start: int | None = None) -> StreamingRegression:
    """One pass of constant-step SGD :math:`w_t = w_{t-1} - \\eta x_t (x_t^\\top w_{t-1} - y_t)` on streaming least
    squares, for a batch of independent runs (``eta = lr``; shapes as in :func:`asgd_linear_regression`).

    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(4, 400, 3, generator=g, dtype=torch.float64)
    >>> y = X @ torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    >>> r = sgd_linear_regression(X, y, 0.1)
    >>> bool(torch.allclose(r.w, torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64), atol=1e-6))
    True
    """
    n = X.shape[1]
    _check_tail(tail_start, n)
    w = torch.zeros(X.shape[0], X.shape[2], dtype=X.dtype, device=X.device) if w0 is None else w0.clone()
    return _sgd_stream(X, y, float(lr), w, tail_start)


def _sgd_stream(X, y, lr: float, w, tail_start):
    n = X.shape[1]
    acc = torch.zeros_like(w) if tail_start is not None else None
    for t in range(n):
        x = X[:, t]
        w = w - lr * x * ((x * w).sum(-1) - y[:, t]).unsqueeze(-1)
        if acc is not None and t >= tail_start:
            acc = acc + w
    out = w if acc is None else acc / (n - tail_start)
    return StreamingRegression(out, w, w, n)


@accepts(w=Tensor(..., "d"), w_star=Tensor("d"), eigvals=Tensor("d", nonnegative=True))
def excess_risk_per_direction(w: torch.Tensor, w_star: torch.Tensor, eigvals: torch.Tensor) -> torch.Tensor:
    """Excess risk along each eigen-direction of a diagonal covariance, :math:`\\tfrac12 \\lambda_i (w - w^*)_i^2`
    (shape of ``w``; sum over the last axis for :math:`L(w) - L(w^*)`).

    >>> excess_risk_per_direction(torch.tensor([1.0, 2.0]), torch.zeros(2), torch.tensor([1.0, 0.5]))
    tensor([0.5000, 1.0000])
    """
    return 0.5 * eigvals * (w - w_star) ** 2


def _second_moments(lam, e0sq, noise_var, n, p: ASGDParams, tail_start):
    """Diagonals of E[(w-w*)^2] (last iterate or tail average) under the exact Gaussian recursion."""
    a, b, g, dl = p
    sww, swv, svv = e0sq.clone(), e0sq.clone(), e0sq.clone()  # v_0 = w_0
    # E[z_{t+1} | z_t] = T z_t per direction.
    t_ww, t_wv = a * (1 - dl * lam), (1 - a) * (1 - dl * lam)
    t_vw, t_vv = a * (b - g * lam), (1 - a) * (b - g * lam) + (1 - b)
    cww = cvw = acc = None
    for t in range(1, n + 1):
        uu = a * a * sww + 2 * a * (1 - a) * swv + (1 - a) ** 2 * svv
        uv = a * swv + (1 - a) * svv  # E[e_u e_v]
        gg = 2 * lam ** 2 * uu + lam * (lam * uu).sum() + noise_var * lam  # E[g_i^2]
        lu, lk = lam * uu, lam * uv
        sww, swv, svv = (uu - 2 * dl * lu + dl * dl * gg,
                         b * uu + (1 - b) * uv - g * lu - dl * (b * lu + (1 - b) * lk) + dl * g * gg,
                         b * b * uu + (1 - b) ** 2 * svv + 2 * b * (1 - b) * uv
                         - 2 * g * (b * lu + (1 - b) * lk) + g * g * gg)
        if tail_start is not None and t > tail_start:
            if cww is None:
                cww, cvw, acc = sww.clone(), swv.clone(), torch.zeros_like(sww)
            else:
                cww, cvw = t_ww * cww + t_wv * cvw + sww, t_vw * cww + t_vv * cvw + swv
            acc = acc + 2 * cww - sww
    if tail_start is None:
        return sww
    return acc / (n - tail_start) ** 2


@accepts(eigvals=Tensor("d", nonnegative=True, example=_eig), w0_minus_wstar=Tensor("d"),
         noise_var=Real(ge=0, example=0.1), n=Int(ge=1, example=20),
         params=Instance(ASGDParams, what="ASGDParams"), tail_start=Int(ge=0, optional=True),
         example=_example_params)
def asgd_risk_decomposition(eigvals: torch.Tensor, w0_minus_wstar: torch.Tensor, noise_var: float, n: int,
                            params: ASGDParams, *, tail_start: int | None = None) -> RiskDecomposition:
    """Exact expected excess risk of ASGD after ``n`` one-pass steps, as bias and variance per eigen-direction.

    Gaussian covariates :math:`x \\sim \\mathcal N(0, \\mathrm{diag}(\\lambda))` (``eigvals``), initial error
    :math:`w_0 - w^*` (``w0_minus_wstar``, coordinates in the eigenbasis; :math:`v_0 = w_0`), noise variance
    :math:`\\sigma^2` (``noise_var``). Exact second-moment recursion (see the module docstring), :math:`O(nd)`.

    Returns:
        :class:`RiskDecomposition`; ``bias``/``variance`` shape ``(d,)``.

    >>> lam = torch.tensor([1.0, 0.01], dtype=torch.float64)
    >>> r = asgd_risk_decomposition(lam, torch.ones(2, dtype=torch.float64), 0.1, 50, ASGDParams(0.9, 0.1, 0.5, 0.2))
    >>> r.bias.shape, r.stable, bool(r.variance.min() > 0)
    (torch.Size([2]), True, True)
    """
    p = _check_params("params", params)
    _check_tail(tail_start, n)
    with torch.no_grad():
        lam = eigvals
        bias = 0.5 * lam * _second_moments(lam, w0_minus_wstar ** 2, 0.0, n, p, tail_start)
        var = 0.5 * lam * _second_moments(lam, torch.zeros_like(lam), float(noise_var), n, p, tail_start)
    total = float((bias + var).sum())
    stable = math.isfinite(total)
    if not stable:
        warnings.warn("the second moments diverged (mean-square unstable steps): reduce params.gamma or "
                      "params.delta", RuntimeWarning, stacklevel=2)
    return RiskDecomposition(bias, var, total, stable)


@accepts(eigvals=Tensor("d", nonnegative=True, example=_eig), w0_minus_wstar=Tensor("d"),
         noise_var=Real(ge=0, example=0.1), n=Int(ge=1, example=20), lr=Real(gt=0, example=0.1),
         tail_start=Int(ge=0, optional=True))
def sgd_risk_decomposition(eigvals: torch.Tensor, w0_minus_wstar: torch.Tensor, noise_var: float, n: int,
                           lr: float, *, tail_start: int | None = None) -> RiskDecomposition:
    """Exact expected excess risk of constant-step SGD (step ``lr``) after ``n`` one-pass steps, as bias and variance
    per eigen-direction (the ASGD recursion with the acceleration off, ``alpha = 1``).

    >>> r = sgd_risk_decomposition(torch.tensor([1.0], dtype=torch.float64), torch.ones(1, dtype=torch.float64),
    ...                            0.0, 1, 0.1)
    >>> round(float(r.bias[0]), 4)  # 0.5 * E(1 - 0.1 x^2)^2 = 0.5 * (1 - 0.2 + 0.03)
    0.415
    """
    _check_tail(tail_start, n)
    return asgd_risk_decomposition(eigvals, w0_minus_wstar, noise_var, n, ASGDParams(1.0, 0.0, 0.0, float(lr)),
                                   tail_start=tail_start)
