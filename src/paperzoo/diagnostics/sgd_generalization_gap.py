"""SGD versus GD: the change in the generalization gap, and the second-order shift of one SGD epoch.

References: SGD Implicitly Regularizes Generalization Error (Roberts), 2018 (NeurIPS workshop; arXiv 2104.04874).

Notation. Per-sample losses :math:`\\ell_i(\\theta)` (``loss_fn`` on one row of ``inputs`` and ``targets``), their
gradients :math:`g_i` and Hessians :math:`H_i`; the training mean :math:`\\bar g = \\frac1N\\sum_i g_i` (the
gradient of the training loss :math:`L_S`), :math:`\\bar H = \\frac1N\\sum_i H_i`, the test (population) gradient
:math:`\\mu = \\nabla L`, and the per-sample gradient covariance :math:`\\Sigma` (population) or its unbiased
training estimate :math:`\\hat\\Sigma = \\frac1{N-1}\\sum_i (g_i-\\bar g)(g_i-\\bar g)^\\top`.

1. One GD step :math:`\\theta \\to \\theta - \\eta\\bar g` changes the gap :math:`L - L_S` by, to first order,
   :math:`\\Delta_\\text{gap} = \\eta(|\\bar g|^2 - \\mu\\cdot\\bar g)` (:func:`gd_step_gap_change`); over training
   sets of size :math:`N` drawn i.i.d. its mean is :math:`\\eta\\operatorname{tr}\\Sigma/N \\ge 0`
   (:func:`expected_gd_step_gap_change`): on its own a gradient step grows the gap at a rate set by the gradient
   covariance.
2. One epoch of SGD (:math:`m = N/B` disjoint batches of size :math:`B`, a uniformly random ordering, step
   :math:`\\eta`) against :math:`m` full-batch GD steps of the same :math:`\\eta`. Expanding each step to second
   order, :math:`\\Delta\\theta = -\\eta\\sum_t G_t + \\eta^2\\sum_{s<t} H_t G_s + O(\\eta^3)`, with :math:`G_t, H_t`
   the batch gradient and Hessian at the start. Over an epoch :math:`\\sum_t G_t = m\\bar g` for both methods, so
   they differ only in the cross term: for two distinct batches of a random ordering
   :math:`E[H_t G_s] = \\frac{1}{N(N-1)}\\sum_{i\\ne j} H_i g_j`, whereas GD has :math:`\\bar H\\bar g`. Using
   :math:`\\frac1N\\sum_i H_i g_i - \\bar H\\bar g = \\tfrac12\\nabla_\\theta\\,\\frac{N-1}{N}\\operatorname{tr}\\hat\\Sigma`,

   .. math:: E[\\theta_\\text{SGD}] - \\theta_\\text{GD} = -\\frac{\\eta^2 m(m-1)}{4N}\\,
             \\nabla_\\theta \\operatorname{tr}\\hat\\Sigma(\\theta) + O(\\eta^3)

   (:func:`sgd_epoch_shift`): SGD does GD plus a descent step on the trace of the gradient covariance, the quantity
   that sets GD's growth of the gap in 1 (the "decorrelation of nearby updates": GD reuses the same gradient at
   every step, SGD does not). The shift depends on the model only through the per-sample gradient mean and
   covariance (and their derivative). For any smooth :math:`F` (test loss, gap, :math:`\\operatorname{tr}\\hat
   \\Sigma`), :math:`E[F(\\theta_\\text{SGD})] - F(\\theta_\\text{GD}) = \\nabla F\\cdot\\text{shift} + O(\\eta^3)`.

:func:`simulate_epochs` is the empirical harness: many SGD epochs over random orderings (vectorized over runs)
and the matching GD trajectory. The derivation here is ours (the paper's text beyond its abstract and
introduction could not be read); it holds for any fixed training set, the paper's averages over training sets
are not needed for 2.

The model must treat the rows of a batch independently (no batch normalisation, no dropout).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.func import grad, vmap

from paperzoo.core.accepts import Function, Generator, Int, Module, Real, Tensor, accepts
from paperzoo.diagnostics._functional import flat_loss

__all__ = ["EpochShift", "EpochSimulation", "gd_step_gap_change", "expected_gd_step_gap_change",
           "gradient_noise_trace", "sgd_epoch_shift", "simulate_epochs"]


class EpochShift(NamedTuple):
    """Result of :func:`sgd_epoch_shift`.

    Attributes:
        shift: :math:`E[\\theta_\\text{SGD}] - \\theta_\\text{GD}` to second order, shape ``(P,)`` (flattened
            parameters in ``model.named_parameters()`` order, those that require grad).
        noise_trace: :math:`\\operatorname{tr}\\hat\\Sigma` at the start (unbiased, divisor ``N - 1``).
        noise_trace_grad: :math:`\\nabla_\\theta\\operatorname{tr}\\hat\\Sigma`, shape ``(P,)``.
        coefficient: :math:`\\eta^2 m(m-1)/(4N)` (``shift = -coefficient * noise_trace_grad``).
        n_steps: :math:`m = N / B`, the updates per epoch (of either method).
    """

    shift: torch.Tensor
    noise_trace: float
    noise_trace_grad: torch.Tensor
    coefficient: float
    n_steps: int


class EpochSimulation(NamedTuple):
    """Result of :func:`simulate_epochs`.

    Attributes:
        sgd: final flat parameters of each SGD epoch, shape ``(R, P)``.
        gd: final flat parameters after ``m`` full-batch GD steps, shape ``(P,)``.
        start: the flat starting parameters, shape ``(P,)``.
        n_steps: ``m``.
        finite: whether every run stayed finite (a warning is issued otherwise).
    """

    sgd: torch.Tensor
    gd: torch.Tensor
    start: torch.Tensor
    n_steps: int
    finite: bool


# -- per-sample gradient noise ------------------------------------------------------------------------------------

def _noise_trace_fn(sample_loss):
    def trace(theta, x, y):
        g = vmap(grad(sample_loss), in_dims=(None, 0, 0))(theta, x, y)
        return ((g - g.mean(0)) ** 2).sum() / (g.shape[0] - 1)
    return trace


def _check_epoch(model, loss_fn, inputs, targets, batch_size):
    n = inputs.shape[0]
    if targets.shape[0] != n:
        raise ValueError(f"targets must have {n} rows (one per row of inputs), got shape {tuple(targets.shape)}")
    if n < 2:
        raise ValueError(f"inputs must have at least 2 rows (a covariance needs two samples), got {n}")
    if batch_size > n or n % batch_size != 0:
        raise ValueError(f"batch_size must divide the number of samples {n} (an epoch of disjoint batches), "
                         f"got {batch_size}")
    named = [p for p in model.parameters() if p.requires_grad]
    if named and inputs.is_floating_point() and inputs.dtype != named[0].dtype:
        raise TypeError(f"inputs must have the dtype of the model's parameters ({named[0].dtype}), got "
                        f"{inputs.dtype}")


# -- 1. one GD step -----------------------------------------------------------------------------------------------

@accepts(grad_train=Tensor("p"), grad_test=Tensor("p"), lr=Real(ge=0),
         example=lambda ctx: {"grad_train": torch.tensor([1.0, 2.0], dtype=ctx.dtype),
                              "grad_test": torch.tensor([0.5, 1.0], dtype=ctx.dtype), "lr": 0.1})
def gd_step_gap_change(grad_train: torch.Tensor, grad_test: torch.Tensor, lr: float) -> float:
    """First-order change of the generalization gap :math:`L - L_S` from one GD step on the training loss.

    References: SGD Implicitly Regularizes Generalization Error (Roberts), 2018.

    :math:`\\Delta_\\text{gap} = \\eta\\,(|\\bar g|^2 - \\mu\\cdot\\bar g)` for the step
    :math:`\\theta\\to\\theta-\\eta\\bar g`: the training loss falls by :math:`\\eta|\\bar g|^2`, the test loss by
    :math:`\\eta\\,\\mu\\cdot\\bar g`.

    Args:
        grad_train: :math:`\\bar g = \\nabla L_S`, shape ``(P,)``.
        grad_test: :math:`\\mu = \\nabla L` (test or population loss), shape ``(P,)``.
        lr: :math:`\\eta \\ge 0`.

    Returns:
        :math:`\\Delta_\\text{gap}` (float).

    Example:
        >>> import torch
        >>> gd_step_gap_change(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.0]), 0.1)
        0.25
    """
    return float(lr * (grad_train @ grad_train - grad_test @ grad_train))


@accepts(noise_trace=Real(ge=0), n_train=Int(ge=1), lr=Real(ge=0),
         example=lambda ctx: {"noise_trace": 3.0, "n_train": 64, "lr": 0.1})
def expected_gd_step_gap_change(noise_trace: float, n_train: int, lr: float) -> float:
    """Mean over i.i.d. training sets of the first-order gap change of one GD step: :math:`\\eta\\operatorname{tr}
    \\Sigma / N`.

    References: SGD Implicitly Regularizes Generalization Error (Roberts), 2018.

    With :math:`E[\\bar g] = \\mu` and :math:`E|\\bar g|^2 = |\\mu|^2 + \\operatorname{tr}\\Sigma/N`, the mean of
    :func:`gd_step_gap_change` is :math:`\\eta\\operatorname{tr}\\Sigma/N`.

    Args:
        noise_trace: :math:`\\operatorname{tr}\\Sigma`, the trace of the population covariance of per-sample
            gradients at the current parameters.
        n_train: :math:`N`, the training-set size.
        lr: :math:`\\eta`.

    Example:
        >>> expected_gd_step_gap_change(6.0, 60, 0.5)
        0.05
    """
    return float(lr * noise_trace / n_train)


# -- 2. the SGD epoch against GD ----------------------------------------------------------------------------------

def _example_logistic(ctx):
    g = ctx.generator
    model = torch.nn.Linear(3, 1).to(ctx.dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=ctx.dtype))
    x = torch.randn(8, 3, generator=g, dtype=ctx.dtype)
    y = (torch.rand(8, 1, generator=g, dtype=ctx.dtype) < 0.5).to(ctx.dtype)
    return {"model": model, "loss_fn": torch.nn.functional.binary_cross_entropy_with_logits, "inputs": x,
            "targets": y, "batch_size": 2, "lr": 0.1}


@accepts(model=Module(bind_dtype=True), loss_fn=Function(), inputs=Tensor(ndims=tuple(range(1, 9))),
         targets=Tensor(ndims=tuple(range(1, 9))),
         example=lambda ctx: {k: v for k, v in _example_logistic(ctx).items() if k not in ("batch_size", "lr")})
def gradient_noise_trace(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Trace of the per-sample gradient covariance and its gradient: :math:`(\\operatorname{tr}\\hat\\Sigma,
    \\nabla_\\theta\\operatorname{tr}\\hat\\Sigma)`.

    References: SGD Implicitly Regularizes Generalization Error (Roberts), 2018.

    :math:`\\operatorname{tr}\\hat\\Sigma = \\frac1{N-1}\\sum_i|g_i-\\bar g|^2` (unbiased), through
    ``torch.func.grad`` of ``vmap(grad(...))``.

    Args:
        model, loss_fn, inputs ``(N, ...)``, targets ``(N, ...)``: as in
            :func:`paperzoo.diagnostics.gradient_noise.per_sample_gradients`; ``N >= 2``.

    Returns:
        ``(trace, gradient)``, the gradient of shape ``(P,)`` (flattened trainable parameters).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(1, 1, bias=False).double()
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(1.0)
        >>> x = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
        >>> y = torch.zeros(2, 1, dtype=torch.float64)
        >>> tr, dtr = gradient_noise_trace(model, torch.nn.functional.mse_loss, x, y)
        >>> round(tr, 6), dtr.tolist()   # g_i = 2 x_i^2 w: (2, 8), variance 18; d/dw = 36
        (18.0, [36.0])
    """
    _check_epoch(model, loss_fn, inputs, targets, 1)
    theta0, _, sample_loss = flat_loss(model, loss_fn)
    fn = _noise_trace_fn(sample_loss)
    value = fn(theta0, inputs, targets)
    return float(value), grad(fn)(theta0, inputs, targets)


@accepts(model=Module(bind_dtype=True), loss_fn=Function(), inputs=Tensor(ndims=tuple(range(1, 9))),
         targets=Tensor(ndims=tuple(range(1, 9))), batch_size=Int(ge=1), lr=Real(ge=0), example=_example_logistic)
def sgd_epoch_shift(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    inputs: torch.Tensor, targets: torch.Tensor, *, batch_size: int, lr: float) -> EpochShift:
    """Second-order prediction of :math:`E[\\theta_\\text{SGD}] - \\theta_\\text{GD}` after one epoch.

    References: SGD Implicitly Regularizes Generalization Error (Roberts), 2018.

    One epoch of SGD (``m = N / batch_size`` disjoint batches, uniformly random ordering, step ``lr``) against
    ``m`` full-batch GD steps with the same ``lr``, from the model's current parameters:
    :math:`\\text{shift} = -\\frac{\\eta^2 m(m-1)}{4N}\\nabla_\\theta\\operatorname{tr}\\hat\\Sigma` (module
    docstring, item 2). Zero when ``m = 1`` (SGD is GD) and whenever :math:`\\operatorname{tr}\\hat\\Sigma` does
    not depend on :math:`\\theta` (identical per-sample Hessians).

    Args:
        model, loss_fn: as in :func:`paperzoo.diagnostics.gradient_noise.per_sample_gradients`.
        inputs: shape ``(N, ...)``; targets: shape ``(N, ...)``.
        batch_size: :math:`B`, must divide ``N``.
        lr: :math:`\\eta`.

    Returns:
        :class:`EpochShift`.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(1, 1, bias=False).double()
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(1.0)
        >>> x = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
        >>> y = torch.zeros(2, 1, dtype=torch.float64)
        >>> res = sgd_epoch_shift(model, torch.nn.functional.mse_loss, x, y, batch_size=1, lr=0.01)
        >>> res.n_steps, round(res.coefficient, 8), [round(v, 8) for v in res.shift.tolist()]
        (2, 2.5e-05, [-0.0009])
    """
    _check_epoch(model, loss_fn, inputs, targets, batch_size)
    n = inputs.shape[0]
    m = n // batch_size
    theta0, _, sample_loss = flat_loss(model, loss_fn)
    fn = _noise_trace_fn(sample_loss)
    trace = float(fn(theta0, inputs, targets))
    dtrace = grad(fn)(theta0, inputs, targets)
    coef = lr ** 2 * m * (m - 1) / (4.0 * n)
    return EpochShift(-coef * dtrace, trace, dtrace, coef, m)


def _simulate(batch_loss, theta0, inputs, targets, batch_size, lr, n_runs, generator):
    n = inputs.shape[0]
    m = n // batch_size
    perms = torch.argsort(torch.rand(n_runs, n, generator=generator), dim=1)
    xb = inputs[perms].reshape(n_runs, m, batch_size, *inputs.shape[1:])
    yb = targets[perms].reshape(n_runs, m, batch_size, *targets.shape[1:])
    step = vmap(grad(batch_loss), in_dims=(0, 0, 0))
    theta = theta0.expand(n_runs, -1).clone()
    for t in range(m):
        theta = theta - lr * step(theta, xb[:, t], yb[:, t])
    full = grad(batch_loss)
    gd = theta0.clone()
    for _ in range(m):
        gd = gd - lr * full(gd, inputs, targets)
    return theta, gd, m


@accepts(model=Module(bind_dtype=True), loss_fn=Function(), inputs=Tensor(ndims=tuple(range(1, 9))),
         targets=Tensor(ndims=tuple(range(1, 9))), batch_size=Int(ge=1), lr=Real(ge=0), n_runs=Int(ge=1),
         generator=Generator(), example=lambda ctx: {**_example_logistic(ctx), "n_runs": 4})
def simulate_epochs(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    inputs: torch.Tensor, targets: torch.Tensor, *, batch_size: int, lr: float, n_runs: int,
                    generator: torch.Generator | None = None) -> EpochSimulation:
    """Empirical harness: ``n_runs`` SGD epochs over random orderings and ``m`` GD steps from the same start.

    References: SGD Implicitly Regularizes Generalization Error (Roberts), 2018.

    SGD: :math:`\\theta_t = \\theta_{t-1} - \\eta\\,\\nabla L_{B_t}(\\theta_{t-1})` over the ``m = N / batch_size``
    batches of a uniformly random permutation (without replacement); GD: ``m`` steps
    :math:`\\theta_t = \\theta_{t-1} - \\eta\\,\\nabla L_S(\\theta_{t-1})`. The runs are vectorized with ``vmap``;
    the model is not modified.

    Args:
        model, loss_fn, inputs ``(N, ...)``, targets ``(N, ...)``: as in :func:`sgd_epoch_shift`.
        batch_size: :math:`B`, divides ``N``.
        lr: :math:`\\eta`.
        n_runs: :math:`R`, independent orderings.
        generator: for the orderings.

    Returns:
        :class:`EpochSimulation` (``sgd`` of shape ``(R, P)``, ``gd`` and ``start`` of shape ``(P,)``).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(1, 1, bias=False).double()
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(1.0)
        >>> x = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
        >>> y = torch.zeros(2, 1, dtype=torch.float64)
        >>> sim = simulate_epochs(model, torch.nn.functional.mse_loss, x, y, batch_size=2, lr=0.1, n_runs=3)
        >>> sim.sgd.shape, torch.allclose(sim.sgd, sim.gd.expand(3, 1))   # B = N: SGD is GD
        (torch.Size([3, 1]), True)
    """
    _check_epoch(model, loss_fn, inputs, targets, batch_size)
    theta0, batch_loss, _ = flat_loss(model, loss_fn)
    sgd, gd, m = _simulate(batch_loss, theta0, inputs, targets, batch_size, lr, n_runs, generator)
    finite = bool(torch.isfinite(sgd).all()) and bool(torch.isfinite(gd).all())
    if not finite:
        warnings.warn(f"simulate_epochs: non-finite parameters (the runs diverged); lower lr (got {lr})",
                      RuntimeWarning, stacklevel=2)
    return EpochSimulation(sgd, gd, theta0, m, finite)
