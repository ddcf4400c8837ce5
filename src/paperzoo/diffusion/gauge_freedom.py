"""Gauge freedom of diffusion vector fields, a conservativity diagnostic and Jacobian-spectrum intrinsic dimension.

References: On gauge freedom, conservativity and intrinsic dimensionality estimation in diffusion models, 2024
(Horvat & Pfister, ICLR).

**Gauge freedom.** Write a learned field as :math:`s_\\theta = \\nabla\\log p_\\sigma + r`. In the VE convention
the probability-flow ODE :math:`dx/d\\sigma = -\\sigma\\, s_\\theta(x, \\sigma)` moves the density by the continuity
equation :math:`\\partial_\\sigma p = \\nabla\\cdot(\\sigma\\, p\\, s_\\theta)`, so the remainder :math:`r` leaves every
marginal (hence sampling and likelihoods by the change of variables) unchanged exactly when it satisfies the gauge
condition

.. math::
    \\nabla\\cdot(p_\\sigma r) = 0 \\iff \\nabla\\cdot r + r\\cdot\\nabla\\log p_\\sigma = 0
    \\qquad\\text{(:func:`gauge_residual` evaluates the right-hand side)}.

Such an :math:`r` need not be a gradient, so a field can be non-conservative and still exact, and a conservative
field :math:`\\nabla\\phi` with :math:`\\phi \\ne \\log p_\\sigma` is not exact: conservativity is neither necessary
nor sufficient. For any constant antisymmetric :math:`A`, :math:`r = A\\nabla\\log p_\\sigma` is a gauge term for
every density (:math:`\\nabla\\cdot(A\\nabla p) = \\sum_{ij} A_{ij}\\partial_i\\partial_j p = 0`); with Tweedie's
:math:`\\sigma^2 s = D - x` it turns a denoiser :math:`D` into

.. math::
    D_A(x, \\sigma) = D(x, \\sigma) + A\\,\\bigl(D(x, \\sigma) - x\\bigr) \\qquad\\text{(:func:`gauge_rotation`)},

a non-conservative denoiser that samples the same distribution as :math:`D` (when :math:`D` is the exact one).

**Local manifold information needs conservativity.** Near data concentrated on a :math:`k`-dimensional manifold
(variances :math:`\\lambda` much larger than :math:`\\sigma^2` along it, much smaller across it) the Jacobian of
the exact denoiser, :math:`\\nabla_x D = I + \\sigma^2 \\nabla_x^2 \\log p_\\sigma`, is symmetric with eigenvalues
:math:`\\approx \\lambda/(\\lambda + \\sigma^2)`: close to 1 along the manifold, close to 0 across it. The flow of
the probability-flow ODE inherits this spectrum (its Jacobian contracts the normal directions and keeps the tangent
ones, the picture of the paper's singular-value trajectories). :func:`intrinsic_dimension` counts the singular
values of :math:`\\nabla_x D(x, \\sigma)` at a small level: ``rule="threshold"`` those above ``threshold``
(default 1/2, i.e. :math:`\\lambda > \\sigma^2`), ``rule="gap"`` the position of the largest gap in the sorted
singular values clamped to :math:`[0, 1]` and padded with 1 above and 0 below. A gauge term adds the
antisymmetric-led :math:`A(\nabla D - I)` to the Jacobian; with :math:`\nabla D \approx P` (the tangent
projection) a normal vector :math:`n` is mapped to :math:`-An` instead of 0, so where :math:`A` mixes normal
directions the normal singular values are of the order of :math:`A`, the spectrum no longer separates and the
estimate breaks although sampling is still exact (the paper's point that conservativity matters for local
manifold information). :func:`nonconservativity` measures the antisymmetric part of the score's Jacobian (0 for a gradient field).

Shapes: points ``x`` ``(N, d)``; ``sigma`` a number or ``(N,)``; Jacobians ``(N, d, d)``. Jacobians are taken with
:func:`torch.func.jacrev` of the batch-summed model, one reverse pass per output coordinate for the whole batch,
so ``model`` must treat the rows of ``x`` independently (every denoiser here does).

Example:
    >>> import torch
    >>> from paperzoo.diffusion.mixture import GaussianMixture
    >>> covs = torch.diag(torch.tensor([1.0, 1e-6, 1e-6], dtype=torch.float64))[None]   # a line in R^3
    >>> gm = GaussianMixture(torch.zeros(1, 3, dtype=torch.float64), covs)
    >>> x = gm.sample(4, generator=torch.Generator().manual_seed(0))
    >>> intrinsic_dimension(gm.denoise, x, 0.05).dimension.tolist()
    [1, 1, 1, 1]
    >>> A = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
    >>> rotated = gauge_rotation(gm.denoise, A)          # same samples, not conservative, wrong dimension
    >>> float(nonconservativity(gm.denoise, x, 0.05).max()) < 1e-12, bool(nonconservativity(rotated, x, 0.05).min()
    ...     > 0.5), intrinsic_dimension(rotated, x, 0.05).dimension.tolist()
    (True, True, [3, 3, 3, 3])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Choice, Function, Int, OneOf, Real, Tensor, accepts

__all__ = ["DimensionEstimate", "denoiser_jacobian", "intrinsic_dimension", "dimension_from_spectrum",
           "nonconservativity", "gauge_rotation", "gauge_residual", "mle_intrinsic_dimension"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_SIGMA = OneOf(Real(gt=0), Tensor("N", nonnegative=True))
_RULES = ("threshold", "gap")


def _example_mixture(dtype):
    from paperzoo.diffusion.mixture import GaussianMixture

    covs = torch.diag(torch.tensor([1.0, 0.5, 1e-4], dtype=dtype))[None]
    return GaussianMixture(torch.zeros(1, 3, dtype=dtype), covs)


def _example(ctx):
    gm = _example_mixture(ctx.dtype)
    return {"model": gm.denoise, "x": gm.sample(5, generator=ctx.generator), "sigma": 0.1}


def _levels(sigma, x: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.dim() == 0:
        return s.expand(x.shape[0])
    if bool((s <= 0).any()):
        raise ValueError(f"sigma must be > 0 entrywise, got a minimum of {float(s.min())!r}")
    return s


def _jacobian(model: Denoiser, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Unchecked per-point Jacobian ``(N, d, d)`` of a row-wise ``model(x, sigma)``: ``J[n, i, j] = dD_i/dx_j``."""
    def summed(z):
        out = model(z, sigma)
        if not isinstance(out, torch.Tensor) or out.shape != z.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"model must return a tensor of the shape of x {tuple(z.shape)}, got {got}")
        return out.sum(0)

    with torch.enable_grad():
        jac = torch.func.jacrev(summed)(x.detach())          # (d, N, d)
    return jac.permute(1, 0, 2).detach()


@accepts(model=Function(), x=Tensor("N", "d"), sigma=_SIGMA, example=_example)
def denoiser_jacobian(model: Denoiser, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """:math:`\\nabla_x D(x, \\sigma)` at each point, shape ``(N, d, d)`` (``[n, i, j] = \\partial D_i/\\partial x_j``).

    Args:
        model: a denoiser ``model(x, sigma)`` acting on each row of ``x`` independently.
        x: points ``(N, d)``; sigma: a level ``> 0`` or one per point ``(N,)``.
    """
    return _jacobian(model, x, _levels(sigma, x))


class DimensionEstimate(NamedTuple):
    """Result of :func:`intrinsic_dimension`: ``dimension`` ``(N,)`` (int64), ``singular_values`` ``(N, d)``
    (descending) and the Jacobians ``(N, d, d)``."""

    dimension: torch.Tensor
    singular_values: torch.Tensor
    jacobian: torch.Tensor


def _count(sv: torch.Tensor, rule: str, threshold: float) -> torch.Tensor:
    if rule == "threshold":
        return (sv > threshold).sum(-1)
    s = sv.clamp(0.0, 1.0)
    padded = torch.cat([s.new_ones(s.shape[:-1] + (1,)), s, s.new_zeros(s.shape[:-1] + (1,))], dim=-1)
    gaps = padded[..., :-1] - padded[..., 1:]                 # gap j lies between the j-th and (j+1)-th value
    return gaps.argmax(-1)


@accepts(singular_values=Tensor(..., "d", nonnegative=True), rule=Choice(*_RULES), threshold=Real(gt=0, lt=1),
         example=lambda ctx: {"singular_values": torch.tensor([[0.99, 0.9, 0.02], [0.98, 0.03, 0.01]],
                                                              dtype=ctx.dtype)})
def dimension_from_spectrum(singular_values: torch.Tensor, rule: str = "threshold", threshold: float = 0.5
                            ) -> torch.Tensor:
    """The dimension read off descending singular values of :math:`\\nabla_x D` ``(..., d)``: the number above
    ``threshold`` (``rule="threshold"``) or the position of the largest gap (``rule="gap"``, values clamped to
    :math:`[0, 1]`, padded with 1 above and 0 below so that 0 and ``d`` are possible); int64 ``(...)``."""
    return _count(singular_values, rule, threshold)


@accepts(model=Function(), x=Tensor("N", "d"), sigma=_SIGMA, rule=Choice(*_RULES), threshold=Real(gt=0, lt=1),
         example=_example)
def intrinsic_dimension(model: Denoiser, x: torch.Tensor, sigma: float | torch.Tensor, *, rule: str = "threshold",
                        threshold: float = 0.5) -> DimensionEstimate:
    """Local intrinsic dimension at each point from the spectrum of the denoiser's Jacobian at a small level.

    With the exact denoiser of data of variances :math:`\\lambda` (tangent :math:`\\gg \\sigma^2`, normal
    :math:`\\ll \\sigma^2`) the singular values are :math:`\\lambda/(\\lambda + \\sigma^2)` and the estimate is the
    number of tangent directions. The reading assumes a conservative field (symmetric Jacobian); check it with
    :func:`nonconservativity`.

    Args:
        model: denoiser ``model(x, sigma)`` (row-wise); x: points ``(N, d)`` near the data; sigma: level ``> 0``
            (or ``(N,)``), between the normal and tangent scales of the data.
        rule: ``"threshold"`` (count above ``threshold``) or ``"gap"`` (largest gap).
        threshold: in ``(0, 1)``; 1/2 marks :math:`\\lambda = \\sigma^2`.
    """
    jac = _jacobian(model, x, _levels(sigma, x))
    sv = torch.linalg.svdvals(jac)
    return DimensionEstimate(_count(sv, rule, threshold), sv, jac)


@accepts(model=Function(), x=Tensor("N", "d"), sigma=_SIGMA, example=_example)
def nonconservativity(model: Denoiser, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Relative antisymmetric part of the score's Jacobian at each point, ``(N,)`` in :math:`[0, 1]`:

    .. math::
        c(x) = \\frac{\\lVert \\tfrac12(J - J^\\top) \\rVert_F}{\\lVert J \\rVert_F}, \\qquad
        J = \\nabla_x s(x, \\sigma) = (\\nabla_x D - I)/\\sigma^2,

    0 for a gradient field (a symmetric Jacobian), 1 for a purely rotational one. Scale-free, so the
    :math:`\\sigma^{-2}` cancels."""
    jac = _jacobian(model, x, _levels(sigma, x))
    jac = jac - torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    skew = 0.5 * (jac - jac.transpose(-1, -2))
    norm = jac.flatten(1).norm(dim=-1)
    return skew.flatten(1).norm(dim=-1) / norm.clamp_min(torch.finfo(x.dtype).tiny)


@accepts(model=Function(), generator=Tensor("d", "d"), output="any",  # returns a denoiser
         example=lambda ctx: {"model": _example_mixture(ctx.dtype).denoise,
                              "generator": torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
                                                        dtype=ctx.dtype)})
def gauge_rotation(model: Denoiser, generator: torch.Tensor) -> Denoiser:
    """The denoiser whose score is :math:`s + A s`: :math:`D_A = D + A(D - x)`, with ``generator`` the
    antisymmetric :math:`A` ``(d, d)``.

    :math:`r = A\\nabla\\log p_\\sigma` satisfies :math:`\\nabla\\cdot(p_\\sigma r) = 0` for every density, so when
    ``model`` is the exact denoiser, :math:`D_A` has the same probability-flow marginals (same samples, same
    likelihoods) while its field is not conservative. For a learned ``model`` the term is a gauge for the model's
    own density only if the model is conservative."""
    scale = float(generator.abs().max()) if generator.numel() else 0.0
    asym = float((generator + generator.T).abs().max()) if generator.numel() else 0.0
    if asym > 1e-12 * max(scale, 1.0):
        raise ValueError(f"generator must be antisymmetric (A^T = -A), got |A + A^T| up to {asym!r}")

    def denoiser(x, sigma):
        d = model(x, sigma)
        if x.shape[-1] != generator.shape[0]:
            raise ValueError(f"x must have last dimension {generator.shape[0]} (the generator's), got shape "
                             f"{tuple(x.shape)}")
        return d + (d - x) @ generator.T

    return denoiser


def _example_residual(ctx):
    out = _example(ctx)
    out["perturbed"] = gauge_rotation(out["model"], torch.tensor(
        [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=ctx.dtype))
    return out


@accepts(model=Function(), perturbed=Function(), x=Tensor("N", "d"), sigma=_SIGMA, example=_example_residual)
def gauge_residual(model: Denoiser, perturbed: Denoiser, x: torch.Tensor, sigma: float | torch.Tensor
                   ) -> torch.Tensor:
    """The gauge condition's residual :math:`\\nabla\\cdot r + r\\cdot\\nabla\\log p_\\sigma` ``(N,)`` of the
    remainder :math:`r = s_{perturbed} - s_{model} = (D_{perturbed} - D_{model})/\\sigma^2`, with ``model`` the
    reference (exact) denoiser and :math:`\\nabla\\log p_\\sigma = (D_{model} - x)/\\sigma^2`.

    Zero where ``perturbed`` differs from ``model`` by a gauge term only (same probability-flow marginals)."""
    s = _levels(sigma, x)
    var = s.square()[:, None]

    def remainder(z, lv):
        return (perturbed(z, lv) - model(z, lv)) / lv.square()[:, None]

    div = torch.diagonal(_jacobian(remainder, x, s), dim1=-2, dim2=-1).sum(-1)
    with torch.no_grad():
        r = remainder(x, s)
        score = (model(x, s) - x) / var
    return div + (r * score).sum(-1)


@accepts(points=Tensor("n", "d"), queries=Tensor("m", "d"), n_neighbors=Int(ge=2),
         example=lambda ctx: {"points": torch.randn(20, 3, generator=ctx.generator, dtype=ctx.dtype),
                              "queries": torch.randn(4, 3, generator=ctx.generator, dtype=ctx.dtype),
                              "n_neighbors": 5})
def mle_intrinsic_dimension(points: torch.Tensor, queries: torch.Tensor, *, n_neighbors: int = 10) -> torch.Tensor:
    """The maximum-likelihood intrinsic dimension of Levina & Bickel (2004) at each query, ``(m,)``: the baseline
    estimator from samples,

    .. math::
        \\hat m(x) = \\Bigl[\\frac{1}{k - 1}\\sum_{j=1}^{k-1} \\log\\frac{T_k(x)}{T_j(x)}\\Bigr]^{-1},

    :math:`T_j(x)` the distance to the :math:`j`-th nearest of ``points`` ``(n, d)`` (a query's exact duplicates in
    ``points`` are skipped), :math:`k` = ``n_neighbors``."""
    dist = torch.cdist(queries, points)
    dist = torch.where(dist <= 0, torch.full_like(dist, torch.inf), dist)
    if n_neighbors > points.shape[0] - 1:
        raise ValueError(f"n_neighbors must be < the number of points ({points.shape[0]}), got {n_neighbors}")
    t = dist.topk(n_neighbors, dim=-1, largest=False).values          # ascending, (m, k)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"points must hold at least n_neighbors = {n_neighbors} points distinct from each query")
    logs = torch.log(t[:, -1:] / t[:, :-1]).mean(-1)
    return 1.0 / logs.clamp_min(torch.finfo(points.dtype).tiny)
