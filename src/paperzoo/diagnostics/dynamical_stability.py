"""Dynamical (linear) stability of SGD and GD at a global minimum: Hessian trace, Frobenius norm, and the exact
mean-square stability of linearised mini-batch SGD.

References: The Implicit Regularization of Dynamical Stability in Stochastic Gradient Descent (Wu, Su), 2023.

Near an interpolating minimum :math:`\\theta^*` of the square loss
:math:`L(\\theta) = \\frac1N\\sum_i \\frac{s}{2}(f(x_i;\\theta) - y_i)^2` (``s`` = ``curvature``: 1 for half the
mean squared error, 2 for ``F.mse_loss``) the per-sample Hessians are
:math:`H_i = s\\, j_i j_i^\\top` with :math:`j_i = \\nabla_\\theta f(x_i;\\theta^*)` and :math:`H = \\frac1N\\sum_i H_i`.
Linearised SGD with step :math:`\\eta` and a batch :math:`\\mathcal B` of size :math:`B` is
:math:`\\delta_{t+1} = (I - \\eta H_{\\mathcal B})\\delta_t`, :math:`H_{\\mathcal B} = \\frac1B\\sum_{i\\in\\mathcal B}H_i`,
and its second moment :math:`M_t = \\mathbb E\\,\\delta_t\\delta_t^\\top` evolves by the linear map

.. math::
    \\mathcal T(M) = M - \\eta(HM + MH) + \\eta^2\\big[(1-\\kappa) HMH + \\kappa\\,\\tfrac1N\\textstyle\\sum_i H_i M H_i\\big],

:math:`\\kappa = \\frac{N-B}{B(N-1)}` for batches drawn without replacement (:math:`1/B` with replacement). The
minimum is linearly stable in the mean-square sense iff the spectral radius :math:`\\rho(\\mathcal T) \\le 1`
(:func:`sgd_stability`). :math:`\\mathcal T` is self-adjoint for the Frobenius inner product and completely
positive, so :math:`\\rho` is its largest-magnitude eigenvalue, found by Lanczos on :math:`\\mathrm{vec}(M)`.

The paper's consequence for :math:`B = 1`: from
:math:`\\mathbb E\\|\\delta_{t+1}\\|^2 - \\mathbb E\\|\\delta_t\\|^2 = \\mathbb E\\,\\delta_t^\\top(-2\\eta H
+ \\eta^2\\tfrac1N\\textstyle\\sum_i H_i^2)\\delta_t` and :math:`H_i^2 = s\\|j_i\\|^2 H_i`, a stable minimum has
:math:`\\eta\\operatorname{tr}(H)/2 \\lesssim 1` (exactly so when the per-sample gradient norms are equal), while
gradient descent (:math:`\\kappa = 0`) needs only :math:`\\eta\\lambda_{\\max}(H)/2 \\le 1`
(:func:`trace_stability_ratio` against :func:`paperzoo.diagnostics.hessian.stability_ratio`). Model-level
estimators of :math:`\\operatorname{tr}(H)` and :math:`\\|H\\|_F` (Hutchinson on :math:`H` and :math:`H^2`) are
:func:`hessian_trace` and :func:`hessian_frobenius`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Flag, Function, Generator, Int, Module, Real, Tensor, accepts
from paperzoo.diagnostics.hessian import (TraceEstimate, _functional_model, hessian_operator, hutchinson_trace,
                                          top_eigenpairs)
from paperzoo.diagnostics.sgd_stability import batch_noise_factor  # kappa of the batch noise (one definition)

__all__ = ["hessian_trace", "hessian_frobenius", "FrobeniusEstimate", "output_jacobian", "sgd_stability",
           "SGDStability", "trace_stability_ratio"]


class FrobeniusEstimate(NamedTuple):
    """Result of :func:`hessian_frobenius`.

    Attributes:
        frobenius: :math:`\\sqrt{\\max(\\widehat{\\|H\\|_F^2}, 0)}`.
        frobenius_sq: the Hutchinson estimate of :math:`\\operatorname{tr}(H^2) = \\|H\\|_F^2`.
        std_error_sq: the standard error of ``frobenius_sq``.
        num_samples: probes.
    """

    frobenius: float
    frobenius_sq: float
    std_error_sq: float
    num_samples: int


class SGDStability(NamedTuple):
    """Result of :func:`sgd_stability`.

    Attributes:
        radius: the spectral radius :math:`\\rho(\\mathcal T)` of the second-moment map on the row space of the
            Jacobian (the long-run per-step growth factor of the mean squared distance to the minimum manifold).
        stable: ``radius < 1`` (the distance to the minimum manifold converges to 0 in mean square).
        trace: :math:`\\operatorname{tr}(H)`.
        frobenius: :math:`\\|H\\|_F`.
        top_eigenvalue: :math:`\\lambda_{\\max}(H)`.
        trace_ratio: :math:`\\eta\\operatorname{tr}(H)/2` (the paper's SGD quantity, bounded by ~1 when stable at B=1).
        sharpness_ratio: :math:`\\eta\\lambda_{\\max}(H)/2` (gradient descent's quantity).
        kappa: the batch-noise factor :math:`\\kappa`.
        n_iter: Lanczos steps on :math:`\\mathcal T`.
        converged: whether Lanczos met ``tol``.
    """

    radius: float
    stable: bool
    trace: float
    frobenius: float
    top_eigenvalue: float
    trace_ratio: float
    sharpness_ratio: float
    kappa: float
    n_iter: int
    converged: bool


def _example_regression(ctx):
    """A tiny tanh network with scalar output on five points, with half the mean squared error."""
    g = ctx.generator
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)).to(ctx.dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=ctx.dtype))
    return {"model": model, "loss_fn": _half_mse, "inputs": torch.randn(5, 2, generator=g, dtype=ctx.dtype),
            "targets": torch.randn(5, 1, generator=g, dtype=ctx.dtype), "num_samples": 4}


def _half_mse(out, y):
    return 0.5 * (out - y).square().mean()


@accepts(model=Module(bind_dtype=True), loss_fn=Function(),
         inputs=Tensor(ndims=tuple(range(1, 9)), dtype="any"), targets=Tensor(ndims=tuple(range(0, 9)), dtype="any"),
         num_samples=Int(ge=2), batch_size=Int(ge=1), generator=Generator(), example=_example_regression)
def hessian_trace(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  inputs: torch.Tensor, targets: torch.Tensor, num_samples: int = 100, *, batch_size: int = 1,
                  generator: torch.Generator | None = None) -> TraceEstimate:
    """The trace :math:`\\operatorname{tr}\\nabla^2_\\theta L` of a model's loss Hessian (Hutchinson).

    References: The Implicit Regularization of Dynamical Stability in Stochastic Gradient Descent (Wu, Su), 2023.

    :func:`paperzoo.diagnostics.hessian.hutchinson_trace` on :func:`paperzoo.diagnostics.hessian.hessian_operator`
    (reverse mode), probes in the dtype of the model's parameters. The paper's SGD stability bound is on this
    quantity: :math:`\\eta\\operatorname{tr}(H)/2 \\lesssim 1` at a minimum stable for SGD with batch size 1.

    Args:
        model, loss_fn, inputs, targets: as for :func:`paperzoo.diagnostics.hessian.hessian_operator`.
        num_samples: Rademacher probes (``>= 2``).
        batch_size: probes per vmapped product.
        generator: for the probes.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> x, y = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64)
        >>> hessian_trace(model, lambda o, t: 0.5 * (o - t).square().mean(), x, y, 4).trace  # H = diag(1/2, 2)
        2.5
    """
    matvec, n = hessian_operator(model, loss_fn, inputs, targets, mode="reverse")
    dtype = next(p for p in model.parameters() if p.requires_grad).dtype
    return hutchinson_trace(matvec, n, num_samples, batch_size=batch_size, generator=generator, dtype=dtype)


@accepts(model=Module(bind_dtype=True), loss_fn=Function(),
         inputs=Tensor(ndims=tuple(range(1, 9)), dtype="any"), targets=Tensor(ndims=tuple(range(0, 9)), dtype="any"),
         num_samples=Int(ge=2), batch_size=Int(ge=1), generator=Generator(), example=_example_regression)
def hessian_frobenius(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      inputs: torch.Tensor, targets: torch.Tensor, num_samples: int = 100, *, batch_size: int = 1,
                      generator: torch.Generator | None = None) -> FrobeniusEstimate:
    """The Frobenius norm :math:`\\|\\nabla^2_\\theta L\\|_F` of a model's loss Hessian (Hutchinson on :math:`H^2`).

    References: The Implicit Regularization of Dynamical Stability in Stochastic Gradient Descent (Wu, Su), 2023.

    :math:`\\|H\\|_F^2 = \\operatorname{tr}(H^2) \\approx \\frac1m\\sum_i \\|Hz_i\\|^2` with Rademacher :math:`z_i`
    (the probe value :math:`z^\\top H(Hz)`, two Hessian-vector products per probe). The Frobenius norm is the
    sharpness that the alignment-based stability analysis of SGD bounds.

    Args:
        model, loss_fn, inputs, targets: as for :func:`paperzoo.diagnostics.hessian.hessian_operator`.
        num_samples: probes (``>= 2``).
        batch_size: probes per vmapped product.
        generator: for the probes.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> x, y = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64)
        >>> hessian_frobenius(model, lambda o, t: 0.5 * (o - t).square().mean(), x, y, 4).frobenius_sq  # 1/4 + 4
        4.25
    """
    matvec, n = hessian_operator(model, loss_fn, inputs, targets, mode="reverse")
    dtype = next(p for p in model.parameters() if p.requires_grad).dtype
    est = hutchinson_trace(lambda v: matvec(matvec(v)), n, num_samples, batch_size=batch_size,
                           generator=generator, dtype=dtype)
    return FrobeniusEstimate(math.sqrt(max(est.trace, 0.0)), est.trace, est.std_error, num_samples)


def _example_jacobian_model(ctx):
    ex = _example_regression(ctx)
    return {"model": ex["model"], "inputs": ex["inputs"]}


@accepts(model=Module(bind_dtype=True), inputs=Tensor(ndims=tuple(range(1, 9)), dtype="any"),
         example=_example_jacobian_model)
def output_jacobian(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Per-sample gradients :math:`j_i = \\nabla_\\theta f(x_i;\\theta)` of a scalar-output model, shape ``(N, n)``.

    References: The Implicit Regularization of Dynamical Stability in Stochastic Gradient Descent (Wu, Su), 2023.

    ``torch.func.vmap`` over the rows of ``inputs`` of ``torch.func.grad`` of the model's single output, the
    parameters that require grad flattened in ``named_parameters`` order (as in
    :func:`paperzoo.diagnostics.hessian.hessian_operator`). At an interpolating minimum of the square loss the
    per-sample Hessians are :math:`s\\,j_ij_i^\\top` (:func:`sgd_stability`). The model must map one input
    ``(1, ...)`` to one output (``numel() == 1``).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1).double()
        >>> output_jacobian(model, torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)).tolist()
        [[1.0, 2.0, 1.0], [3.0, 4.0, 1.0]]
    """
    targets = torch.zeros(inputs.shape[0], dtype=inputs.dtype if inputs.is_floating_point() else torch.float64)
    theta0, sizes, shapes, dtype, out_fn, _ = _functional_model(model, lambda o, t: o.sum(), inputs, targets)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    frozen = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    frozen.update(dict(model.named_buffers()))
    with torch.no_grad():
        out = torch.func.functional_call(model, {**frozen, **dict(zip(names, theta0))}, (inputs[:1],))
    if out.numel() != 1:
        raise ValueError(f"model must map one row of inputs to a single (scalar) output, got {out.numel()} outputs")

    def one(theta, x):
        return torch.func.functional_call(model, {**frozen, **dict(zip(names, theta))}, (x.unsqueeze(0),)).sum()

    grads = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0))(theta0, inputs)
    return torch.cat([g.reshape(inputs.shape[0], -1) for g in grads], dim=1)


def _second_moment_map(J: torch.Tensor, s: float, lr: float, kappa: float):
    """:math:`\\mathrm{vec}(M) \\mapsto \\mathrm{vec}(\\mathcal T(M))` for rank-one per-sample Hessians
    :math:`s\\,j_ij_i^\\top`; rows of a ``(b, n*n)`` block are mapped independently."""
    N, n = J.shape
    H = s * (J.T @ J) / N

    def matvec(v: torch.Tensor) -> torch.Tensor:
        M = v.reshape(*v.shape[:-1], n, n)
        HM = H @ M
        MH = M @ H
        quad = torch.einsum("ia,...ab,ib->...i", J, M, J)            # j_i^T M j_i
        per_sample = torch.einsum("...i,ia,ib->...ab", quad, J, J) * (s * s / N)
        out = M - lr * (HM + MH) + lr * lr * ((1.0 - kappa) * (HM @ H) + kappa * per_sample)
        return out.reshape(v.shape)

    return matvec, H


@accepts(jacobian=Tensor("N", "n"), lr=Real(gt=0), batch_size=Int(ge=1), curvature=Real(gt=0), replacement=Flag(),
         max_iter=Int(ge=1), tol=Real(ge=0), rank_tol=Real(gt=0, lt=1), generator=Generator(),
         example=lambda ctx: {"jacobian": torch.randn(6, 3, generator=ctx.generator, dtype=ctx.dtype), "lr": 0.1,
                              "batch_size": 2})
def sgd_stability(jacobian: torch.Tensor, lr: float, batch_size: int = 1, *, curvature: float = 1.0,
                  replacement: bool = False, max_iter: int = 200, tol: float = 1e-8, rank_tol: float = 1e-7,
                  generator: torch.Generator | None = None) -> SGDStability:
    """Mean-square linear stability of SGD at an interpolating minimum of the square loss: the spectral radius
    of the second-moment map :math:`\\mathcal T`, with the trace and sharpness ratios.

    References: The Implicit Regularization of Dynamical Stability in Stochastic Gradient Descent (Wu, Su), 2023.

    Per-sample Hessians :math:`H_i = s\\,j_ij_i^\\top` (``s`` = ``curvature``, :math:`j_i` = ``jacobian[i]``,
    e.g. from :func:`output_jacobian`), :math:`H = \\frac1N\\sum_iH_i`, step :math:`\\eta` = ``lr``, batch size
    :math:`B` = ``batch_size``; :math:`\\mathcal T` and :math:`\\kappa` as in the module docstring
    (:func:`batch_noise_factor`). ``batch_size = N`` without replacement is gradient descent, for which
    :math:`\\rho = \\max_k (1-\\eta\\lambda_k)^2` over the nonzero eigenvalues :math:`\\lambda_k` of :math:`H`.
    Directions orthogonal to every :math:`j_i` (the tangent space of the minimum manifold, nonempty whenever
    :math:`n > N`) do not move, so :math:`\\mathcal T` is restricted to the row space of :math:`J` (an orthonormal
    basis from its SVD, rank cutoff ``rank_tol`` relative to the top singular value): :math:`\\rho < 1` means
    :math:`\\mathbb E\\,\\mathrm{dist}(\\theta_t, \\text{manifold})^2 \\to 0` geometrically, :math:`\\rho > 1` means it
    grows (the mixed normal/tangent block of :math:`M` contracts by :math:`\\rho(\\mathbb E[I-\\eta H_\\mathcal B])
    \\le \\sqrt\\rho`). :math:`\\rho` is the largest-magnitude eigenvalue of the restricted map on ``r x r``
    matrices, found matrix-free by :func:`paperzoo.diagnostics.hessian.top_eigenpairs` (per step a few ``r x r``
    products and two ``(N, r, r)`` contractions; meant for ranks up to a few hundred).

    Args:
        jacobian: :math:`(j_i)_i`, shape ``(N, n)``.
        lr: :math:`\\eta > 0`.
        batch_size: :math:`B \\ge 1` (``<= N`` without replacement).
        curvature: :math:`s > 0` (1 for :math:`\\frac1{2N}\\sum(f_i-y_i)^2`, 2 for ``F.mse_loss``).
        replacement: batches drawn with replacement (:math:`\\kappa = 1/B`).
        max_iter, tol: Lanczos steps and Ritz-residual tolerance for :math:`\\rho`.
        rank_tol: singular values of ``jacobian`` below ``rank_tol`` times the largest span the null space.
        generator: Lanczos start vector.

    Example:
        >>> import torch
        >>> J = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)   # H = I/2
        >>> r = sgd_stability(J, 1.0, 2)                 # GD: (1 - 1/2)^2
        >>> round(r.radius, 6), r.trace, r.sharpness_ratio
        (0.25, 1.0, 0.25)
        >>> round(sgd_stability(J, 1.0, 1).radius, 6)     # SGD, B = 1: each step zeroes one coordinate
        0.5
    """
    N, n = jacobian.shape
    if not replacement and batch_size > N:
        raise ValueError(f"batch_size must be <= the number of points (jacobian rows, {N}) without replacement, "
                         f"got {batch_size}")
    kappa = batch_noise_factor(N, batch_size, replacement=replacement)
    J = jacobian.detach()
    _, sv, Vh = torch.linalg.svd(J, full_matrices=False)
    if float(sv[0]) == 0.0:
        raise ValueError("jacobian must not be all zeros (no curvature at the minimum)")
    Jr = J @ Vh[sv > rank_tol * sv[0]].T                 # coordinates in the row space of J, shape (N, r)
    r = Jr.shape[1]
    matvec, H = _second_moment_map(Jr, curvature, lr, kappa)
    eig = torch.linalg.eigvalsh(H)
    lam_max = float(eig[-1])
    trace = float(eig.sum())
    fro = float(eig.square().sum().sqrt())
    top = top_eigenpairs(matvec, r * r, 1, which="magnitude", max_iter=max_iter, tol=tol, generator=generator,
                         dtype=J.dtype)
    radius = float(top.eigenvalues.abs()[0])
    if not math.isfinite(radius):
        raise ValueError(f"jacobian and lr must give a finite second-moment map, got radius {radius!r}")
    return SGDStability(radius, radius < 1.0, trace, fro, lam_max, lr * trace / 2.0, lr * lam_max / 2.0,
                        kappa, top.n_iter, top.converged)


@accepts(trace=Real(ge=0), lr=Real(gt=0), example=lambda ctx: {"trace": 150.0, "lr": 0.01})
def trace_stability_ratio(trace: float, lr: float) -> float:
    """The Hessian trace against the SGD (batch size 1) stability bound, :math:`\\eta\\operatorname{tr}(H)/2`.

    References: The Implicit Regularization of Dynamical Stability in Stochastic Gradient Descent (Wu, Su), 2023.

    ``trace`` is :math:`\\operatorname{tr}(H)` (e.g. :func:`hessian_trace` ``(...).trace``), ``lr`` is :math:`\\eta`.
    A minimum linearly stable for single-sample SGD has this ratio below about 1 (exactly 1 when the per-sample
    gradient norms are equal); gradient descent needs only
    :func:`paperzoo.diagnostics.hessian.stability_ratio` :math:`= \\eta\\lambda_{\\max}/2 \\le 1`.

    Example:
        >>> trace_stability_ratio(150.0, 0.01)
        0.75
    """
    return lr * trace / 2.0
