"""Uniform Łojasiewicz gradient inequality (Uniform-LGI): fitted constants, trajectory length and generalization.

References: From Optimization Dynamics to Generalization Bounds via Łojasiewicz Gradient Inequality
(Liu, Yang, Hayou, Li), 2022.

A training loss :math:`L_n` satisfies the Uniform-LGI on a set :math:`S` with constants :math:`c > 0`,
:math:`\\theta \\in [1/2, 1)` when

.. math::
    \\|\\nabla L_n(w)\\| \\ge c\\, (L_n(w) - L_n^*)^{\\theta} \\qquad \\text{for all } w \\in S.

Along gradient flow :math:`\\dot w = -\\nabla L_n(w)` this gives, with :math:`\\Delta_0 = L_n(w_0) - L_n^*`,

* the convergence of the gap (:func:`lgi_convergence_bound`): :math:`\\Delta_t \\le \\Delta_0 e^{-c^2 t}` at
  :math:`\\theta = 1/2` and :math:`\\Delta_t \\le (\\Delta_0^{-(2\\theta-1)} + (2\\theta-1)c^2 t)^{-1/(2\\theta-1)}`
  for :math:`\\theta > 1/2` (from :math:`\\dot\\Delta = -\\|\\nabla L_n\\|^2 \\le -c^2\\Delta^{2\\theta}`);
* a finite trajectory length (:func:`trajectory_length_bound`): since
  :math:`\\tfrac{d}{dt}\\Delta^{1-\\theta} = -(1-\\theta)\\Delta^{-\\theta}\\|\\nabla L_n\\|^2 \\le
  -(1-\\theta)c\\,\\|\\nabla L_n\\|`,

  .. math:: \\int_0^\\infty \\|\\dot w_t\\|\\,dt \\le \\frac{\\Delta_0^{1-\\theta}}{c\\,(1-\\theta)} =: R,

  so the whole trajectory stays in the ball :math:`\\|w - w_0\\| \\le R`;
* a generalization bound: the Rademacher complexity of the model class restricted to that ball
  (:func:`linear_ball_rademacher` for linear predictors) in the standard uniform-convergence inequality
  (:func:`rademacher_generalization_bound`); :func:`lgi_linear_generalization_bound` composes them for linear
  regression with the squared loss.

The constants are measured from a recorded trajectory as the authors' code does (:func:`fit_uniform_lgi`): the
exponent is the least-squares slope of :math:`\\log\\|\\nabla L_n\\|` on :math:`\\log(L_n - L_n^*)`, and
:math:`c` is the intercept moved down to the lowest residual, so the inequality holds at every recorded point.
:func:`lgi_constant` gives the largest valid :math:`c` for a given exponent. :func:`lgi_trajectory` records the
losses, gradient norms and path length of small-step gradient descent (the gradient-flow proxy) on a model.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.func import functional_call

from paperzoo.core.accepts import Function, Int, Module, Real, Tensor, accepts
from paperzoo.core.evidence import fit_line
from paperzoo.diagnostics.gradient_noise import _DATA_SPECS, _check_data, _example_regression

__all__ = [
    "LGIFit", "fit_uniform_lgi", "lgi_constant", "trajectory_length_bound", "lgi_convergence_bound",
    "LGITrajectory", "lgi_trajectory", "linear_ball_rademacher", "rademacher_generalization_bound",
    "LinearLGIBound", "lgi_linear_generalization_bound",
]


class LGIFit(NamedTuple):
    """Result of :func:`fit_uniform_lgi`.

    Attributes:
        theta: fitted exponent (least-squares slope of log gradient norm on log gap).
        c: the constant, the fitted intercept lowered to the smallest residual (the inequality then holds at every
            point used).
        theta_stderr, theta_ci_low, theta_ci_high: standard error and t-interval (95%) of the slope.
        r2: coefficient of determination of the log-log line.
        n_points: points used (those with a positive gap and a positive gradient norm).
    """

    theta: float
    c: float
    theta_stderr: float
    theta_ci_low: float
    theta_ci_high: float
    r2: float
    n_points: int


def _gaps(losses: torch.Tensor, grad_norms: torch.Tensor, min_loss: float):
    if losses.shape != grad_norms.shape:
        raise ValueError(f"grad_norms must have the shape of losses {tuple(losses.shape)}, "
                         f"got {tuple(grad_norms.shape)}")
    lo = float(losses.min())
    if min_loss > lo:
        raise ValueError(f"min_loss must be <= min(losses) = {lo!r}, got {min_loss!r}")
    gap = losses.double() - min_loss
    g = grad_norms.double()
    keep = (gap > 0) & (g > 0)
    return gap[keep], g[keep]


def _example_power_law(ctx):
    losses = 2.0 ** -torch.arange(8, dtype=ctx.dtype)
    return {"losses": losses, "grad_norms": 0.7 * losses.sqrt(), "min_loss": 0.0}


_CURVE = dict(losses=Tensor("t"), grad_norms=Tensor("t", nonnegative=True), min_loss=Real())


@accepts(**_CURVE, level=Real(gt=0, lt=1), example=_example_power_law)
def fit_uniform_lgi(losses: torch.Tensor, grad_norms: torch.Tensor, min_loss: float, *,
                    level: float = 0.95) -> LGIFit:
    """Uniform-LGI constants :math:`(c, \\theta)` fitted to a recorded trajectory.

    With :math:`u_k = \\log(L_k - L^*)`, :math:`v_k = \\log\\|\\nabla L_k\\|`, the least-squares line
    :math:`v \\approx \\theta u + b` (:func:`paperzoo.core.evidence.fit_line`) gives :math:`\\theta`, and
    :math:`c = \\exp(b + \\min_k (v_k - \\theta u_k - b))`, so that :math:`\\|\\nabla L_k\\| \\ge c (L_k - L^*)^\\theta`
    holds at every point used. Points with zero gap (the minimum itself, when ``min_loss = min(losses)``) or zero
    gradient norm are left out.

    Args:
        losses: :math:`L_k`, shape ``(t,)``, the training loss along the trajectory.
        grad_norms: :math:`\\|\\nabla L_k\\|`, shape ``(t,)``.
        min_loss: :math:`L^*`, the infimum of the training loss (0 for an interpolating model); ``<= min(losses)``.
        level: confidence level of the interval on :math:`\\theta`.

    Returns:
        :class:`LGIFit`.

    Example:
        >>> losses = 2.0 ** -torch.arange(10.0)
        >>> f = fit_uniform_lgi(losses, 3.0 * losses ** 0.75, 0.0)
        >>> round(f.theta, 6), round(f.c, 6)
        (0.75, 3.0)
    """
    gap, g = _gaps(losses, grad_norms, float(min_loss))
    u, v = gap.log(), g.log()
    if u.numel() < 2 or float(u.max() - u.min()) == 0.0:
        raise ValueError("losses must hold at least two distinct values above min_loss (with a positive gradient "
                         f"norm) for a fit, got {u.numel()} usable points")
    line = fit_line(u, v, level=level)
    resid = v - (line.slope * u + line.intercept)
    c = math.exp(line.intercept + float(resid.min()))
    return LGIFit(line.slope, c, line.stderr, line.ci_low, line.ci_high, line.r2, int(u.numel()))


@accepts(**_CURVE, theta=Real(gt=0, lt=1), example=lambda ctx: {**_example_power_law(ctx), "theta": 0.5})
def lgi_constant(losses: torch.Tensor, grad_norms: torch.Tensor, min_loss: float, theta: float) -> float:
    """The largest :math:`c` with :math:`\\|\\nabla L_k\\| \\ge c (L_k - L^*)^\\theta` at every recorded point.

    :math:`c(\\theta) = \\min_k \\|\\nabla L_k\\| / (L_k - L^*)^\\theta` over the points with a positive gap.

    Args:
        losses, grad_norms, min_loss: as in :func:`fit_uniform_lgi`; shapes ``(t,)``.
        theta: the exponent :math:`\\theta \\in (0, 1)`.

    Example:
        >>> losses = torch.tensor([1.0, 0.25, 0.0625])
        >>> lgi_constant(losses, torch.tensor([2.0, 0.5, 0.5]), 0.0, 0.5)
        1.0
    """
    gap, g = _gaps(losses, grad_norms, float(min_loss))
    if gap.numel() == 0:
        raise ValueError("losses must hold at least one value above min_loss with a positive gradient norm")
    return float((g.log() - theta * gap.log()).min().exp())


@accepts(initial_gap=Real(gt=0), c=Real(gt=0), theta=Real(gt=0, lt=1),
         example=lambda ctx: {"initial_gap": 2.0, "c": 1.0, "theta": 0.5})
def trajectory_length_bound(initial_gap: float, c: float, theta: float) -> float:
    """Uniform-LGI bound on the length of the gradient-flow path, :math:`R = \\Delta_0^{1-\\theta}/(c(1-\\theta))`.

    Args:
        initial_gap: :math:`\\Delta_0 = L_n(w_0) - L_n^*`.
        c, theta: the Uniform-LGI constants.

    Example:
        >>> round(trajectory_length_bound(0.5, math.sqrt(2.0), 0.5), 12)  # L = w^2/2 from w0 = 1: path length 1
        1.0
    """
    return float(initial_gap ** (1.0 - theta) / (c * (1.0 - theta)))


@accepts(initial_gap=Real(gt=0), c=Real(gt=0), theta=Real(gt=0, lt=1), times=Tensor("t", nonnegative=True),
         example=lambda ctx: {"initial_gap": 1.0, "c": 1.0, "theta": 0.75,
                              "times": torch.linspace(0.0, 4.0, 5, dtype=ctx.dtype)})
def lgi_convergence_bound(initial_gap: float, c: float, theta: float, times: torch.Tensor) -> torch.Tensor:
    """Uniform-LGI upper bound on the gap :math:`L_n(w_t) - L_n^*` of gradient flow at times ``times``.

    The solution of :math:`\\dot\\Delta = -c^2 \\Delta^{2\\theta}` from :math:`\\Delta_0`: exponential
    :math:`\\Delta_0 e^{-c^2 t}` at :math:`\\theta = 1/2`;
    :math:`(\\Delta_0^{-(2\\theta-1)} + (2\\theta-1)c^2t)^{-1/(2\\theta-1)}` above;
    for :math:`\\theta < 1/2` it reaches 0 in finite time and stays there.

    Args:
        initial_gap, c, theta: :math:`\\Delta_0`, :math:`c`, :math:`\\theta`.
        times: gradient-flow times :math:`t \\ge 0` (for gradient descent, step size times step count), ``(t,)``.

    Returns:
        The bound, shape ``(t,)``, the dtype of ``times``.

    Example:
        >>> lgi_convergence_bound(1.0, 1.0, 0.75, torch.tensor([0.0, 4.0]))
        tensor([1.0000, 0.1111])
    """
    t = times
    if theta == 0.5:
        return initial_gap * torch.exp(-(c * c) * t)
    q = 2.0 * theta - 1.0
    base = initial_gap ** (-q) + q * c * c * t
    if q > 0:
        return base ** (-1.0 / q)
    return base.clamp(min=0.0) ** (-1.0 / q)


class LGITrajectory(NamedTuple):
    """Result of :func:`lgi_trajectory`.

    Attributes:
        losses: training loss at the recorded steps, ``(r,)``.
        grad_norms: gradient norm at the recorded steps, ``(r,)``.
        path_length: length :math:`\\sum_j \\eta\\|\\nabla L(w_j)\\|` travelled before each recorded step, ``(r,)``.
        distance: :math:`\\|w_k - w_0\\|` at the recorded steps, ``(r,)``.
        steps: the step index of each record, ``(r,)`` (int64).
        params: final flat parameter vector, ``(P,)``.
        n_iter: steps taken.
        diverged: the loss or gradient became non-finite (recording stopped there).
    """

    losses: torch.Tensor
    grad_norms: torch.Tensor
    path_length: torch.Tensor
    distance: torch.Tensor
    steps: torch.Tensor
    params: torch.Tensor
    n_iter: int
    diverged: bool


@accepts(**_DATA_SPECS, lr=Real(gt=0), steps=Int(ge=0), record_every=Int(ge=1),
         example=lambda ctx: {**_example_regression(ctx), "lr": 0.05, "steps": 4})
def lgi_trajectory(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   inputs: torch.Tensor, targets: torch.Tensor, *, lr: float, steps: int,
                   record_every: int = 1) -> LGITrajectory:
    """Full-batch gradient descent as a gradient-flow proxy, recording loss, gradient norm and path length.

    Runs :math:`w_{k+1} = w_k - \\eta \\nabla L_n(w_k)` with :math:`L_n(w) = ` ``loss_fn(model(inputs), targets)``
    on a functional copy of the parameters (``model`` is not modified), and records at steps
    ``0, record_every, ...`` and the last step the quantities :func:`fit_uniform_lgi` and
    :func:`trajectory_length_bound` need. Gradient-flow time is :math:`t = \\eta k`.

    Args:
        model: the network; its parameters that require grad are trained.
        loss_fn: ``(outputs, targets) -> scalar`` mean loss of the batch.
        inputs, targets: the training set, leading dimension ``n``.
        lr: step size :math:`\\eta > 0` (small against ``2 / sharpness`` for a flow-like path).
        steps: number of steps.
        record_every: record period.

    Example:
        >>> model = torch.nn.Linear(3, 1, bias=False).double()
        >>> torch.nn.init.zeros_(model.weight)  # doctest: +ELLIPSIS
        Parameter containing:...
        >>> x, y = torch.eye(2, 3, dtype=torch.float64), torch.tensor([[3.0], [4.0]], dtype=torch.float64)
        >>> tr = lgi_trajectory(model, torch.nn.functional.mse_loss, x, y, lr=0.25, steps=100)
        >>> bool(tr.losses[-1] < 1e-20), round(float(tr.path_length[-1]), 6), round(float(tr.distance[-1]), 6)
        (True, 5.0, 5.0)
    """
    _check_data(model, loss_fn, inputs, targets)
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    shapes = [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())
    w0 = torch.cat([p.detach().reshape(-1) for _, p in named])

    def loss_and_grad(w):
        w = w.detach().requires_grad_(True)
        parts = dict(zip(names, (t.view(s) for t, s in zip(torch.split(w, sizes), shapes))))
        loss = loss_fn(functional_call(model, ({**frozen, **parts}, buffers), (inputs,)), targets)
        (g,) = torch.autograd.grad(loss, w)
        return loss.detach(), g

    rec_loss, rec_grad, rec_path, rec_dist, rec_step = [], [], [], [], []
    w, path, diverged, k = w0.clone(), torch.zeros((), dtype=w0.dtype), False, 0
    for k in range(steps + 1):
        loss, g = loss_and_grad(w)
        gn = torch.linalg.vector_norm(g)
        if not (torch.isfinite(loss) and torch.isfinite(gn)):
            diverged = True
            warnings.warn(f"lgi_trajectory: loss or gradient became non-finite at step {k}; lower lr (got {lr})",
                          RuntimeWarning, stacklevel=2)
            break
        if k % record_every == 0 or k == steps:
            rec_loss.append(loss)
            rec_grad.append(gn)
            rec_path.append(path.clone())
            rec_dist.append(torch.linalg.vector_norm(w - w0))
            rec_step.append(k)
        if k == steps:
            break
        w = w - lr * g
        path = path + lr * gn
    if not rec_loss:
        nan = torch.full((0,), math.nan, dtype=w0.dtype)
        return LGITrajectory(nan, nan, nan, nan, torch.zeros(0, dtype=torch.int64), w.detach(), k, diverged)
    return LGITrajectory(torch.stack(rec_loss), torch.stack(rec_grad), torch.stack(rec_path), torch.stack(rec_dist),
                         torch.tensor(rec_step, dtype=torch.int64), w.detach(), k, diverged)


@accepts(inputs=Tensor("n", "d", degenerate=("coincident",)), radius=Real(ge=0),
         example=lambda ctx: {"inputs": torch.randn(5, 3, generator=ctx.generator, dtype=ctx.dtype), "radius": 2.0})
def linear_ball_rademacher(inputs: torch.Tensor, radius: float) -> float:
    """Upper bound on the empirical Rademacher complexity of linear predictors in a ball of radius :math:`R`.

    For :math:`\\mathcal F = \\{x \\mapsto w^\\top x : \\|w - w_0\\| \\le R\\}` (any centre :math:`w_0`: its term has
    zero mean), :math:`\\hat{\\mathfrak R}_n(\\mathcal F) = \\tfrac{R}{n}\\mathbb E_\\sigma\\|\\sum_i \\sigma_i x_i\\|
    \\le \\tfrac{R}{n}\\sqrt{\\sum_i \\|x_i\\|^2}` (Jensen).

    Args:
        inputs: :math:`x_i`, shape ``(n, d)``.
        radius: :math:`R \\ge 0` (for the Uniform-LGI bound, :func:`trajectory_length_bound`).

    Example:
        >>> linear_ball_rademacher(torch.eye(4, dtype=torch.float64), 2.0)
        1.0
    """
    n = inputs.shape[0]
    return float(radius * torch.linalg.vector_norm(inputs.double()) / n)


@accepts(rademacher=Real(ge=0), lipschitz=Real(ge=0), loss_range=Real(ge=0), n=Int(ge=1), delta=Real(gt=0, lt=1),
         example=lambda ctx: {"rademacher": 0.1, "lipschitz": 2.0, "loss_range": 1.0, "n": 100, "delta": 0.05})
def rademacher_generalization_bound(rademacher: float, lipschitz: float, loss_range: float, n: int,
                                    delta: float) -> float:
    """Uniform-convergence bound on population minus training loss from an empirical Rademacher complexity.

    For a loss with values in :math:`[0, B]` that is :math:`\\rho`-Lipschitz in the prediction, with probability
    at least :math:`1 - \\delta` over the sample, every :math:`f` in the class satisfies
    :math:`L(f) - L_n(f) \\le 2\\rho\\hat{\\mathfrak R}_n + 3B\\sqrt{\\log(2/\\delta)/(2n)}` (contraction lemma
    and McDiarmid's inequality).

    Args:
        rademacher: :math:`\\hat{\\mathfrak R}_n` of the predictor class.
        lipschitz: :math:`\\rho`.
        loss_range: :math:`B`.
        n: sample size.
        delta: failure probability.

    Example:
        >>> round(rademacher_generalization_bound(0.1, 2.0, 1.0, 100, 0.05), 4)
        0.8074
    """
    return float(2.0 * lipschitz * rademacher + 3.0 * loss_range * math.sqrt(math.log(2.0 / delta) / (2.0 * n)))


class LinearLGIBound(NamedTuple):
    """Result of :func:`lgi_linear_generalization_bound`.

    Attributes:
        bound: the bound on population minus training squared loss.
        radius: trajectory-length radius :math:`R`.
        rademacher: :math:`\\hat{\\mathfrak R}_n` of the ball of radius :math:`R`.
        lipschitz: :math:`\\rho = (\\|w_0\\| + R)\\max_i\\|x_i\\| + Y`.
        loss_range: :math:`B = \\rho^2 / 2`.
    """

    bound: float
    radius: float
    rademacher: float
    lipschitz: float
    loss_range: float


@accepts(inputs=Tensor("n", "d", degenerate=("coincident",)), initial_gap=Real(gt=0), c=Real(gt=0),
         theta=Real(gt=0, lt=1), target_bound=Real(ge=0), init_norm=Real(ge=0), delta=Real(gt=0, lt=1),
         example=lambda ctx: {"inputs": torch.randn(5, 3, generator=ctx.generator, dtype=ctx.dtype),
                              "initial_gap": 0.5, "c": 0.3, "theta": 0.5, "target_bound": 1.0})
def lgi_linear_generalization_bound(inputs: torch.Tensor, initial_gap: float, c: float, theta: float,
                                    target_bound: float, *, init_norm: float = 0.0,
                                    delta: float = 0.05) -> LinearLGIBound:
    """Uniform-LGI generalization bound for linear regression with the loss :math:`\\tfrac12(w^\\top x - y)^2`.

    Gradient flow stays in :math:`\\|w - w_0\\| \\le R` (:func:`trajectory_length_bound`); on that ball and on
    inputs with :math:`\\|x\\| \\le X = \\max_i\\|x_i\\|` (taken as the support bound) and :math:`|y| \\le Y`
    (``target_bound``), :math:`|w^\\top x - y| \\le \\rho = (\\|w_0\\| + R)X + Y`, so the loss is
    :math:`\\rho`-Lipschitz in the prediction with range :math:`B = \\rho^2/2`;
    :func:`rademacher_generalization_bound` with :func:`linear_ball_rademacher` gives the bound.

    Args:
        inputs: training inputs :math:`x_i`, shape ``(n, d)``.
        initial_gap, c, theta: :math:`\\Delta_0` and the Uniform-LGI constants.
        target_bound: :math:`Y`, a bound on :math:`|y|` on the distribution's support.
        init_norm: :math:`\\|w_0\\|`.
        delta: failure probability.

    Example:
        >>> b = lgi_linear_generalization_bound(torch.eye(4, dtype=torch.float64), 0.5, 1.0, 0.5, 1.0)
        >>> round(b.radius, 6), round(b.rademacher, 6)
        (1.414214, 0.707107)
    """
    R = trajectory_length_bound(initial_gap, c, theta)
    rad = linear_ball_rademacher(inputs, R)
    x_max = float(torch.linalg.vector_norm(inputs.double(), dim=1).max())
    rho = (init_norm + R) * x_max + target_bound
    B = 0.5 * rho * rho
    bound = rademacher_generalization_bound(rad, rho, B, inputs.shape[0], delta)
    return LinearLGIBound(bound, R, rad, rho, B)
