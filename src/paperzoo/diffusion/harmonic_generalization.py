"""Memorization versus generalization measurements for diffusion denoisers (Kadkhodaie et al., 2024).

References: Generalization in diffusion models arises from geometry-adaptive harmonic representations, 2024
(Kadkhodaie, Guth, Simoncelli, Mallat, ICLR 2024).

The paper is an empirical study; its measurements are what this module provides, over any VE denoiser
``model(x, sigma)`` (:class:`~paperzoo.diffusion.training.MLPDenoiser`'s ``denoiser()``, an exact
:class:`~paperzoo.diffusion.mixture.GaussianMixture`'s ``denoise``):

* :class:`EmpiricalDenoiser`: the MMSE denoiser of the *empirical* distribution of a training set
  :math:`\\{x_n\\}_{n=1}^N`, the minimizer of the training loss over all functions, hence the memorizing solution:

  .. math::
      D_N(x, \\sigma) = \\sum_n r_n(x)\\, x_n, \\qquad
      r_n(x) = \\operatorname{softmax}_n\\Bigl(-\\frac{\\|x - x_n\\|^2}{2\\sigma^2}\\Bigr),

  whose probability-flow samples end on training points as :math:`\\sigma \\to 0`.
* :func:`memorization_ratio`: each sample's distance to its nearest training point, divided by the median
  nearest-training-point distance of reference points (held-out real data; by default the training points
  themselves, leave one out). About 0: the sample copies a training point; about 1: it is as novel as fresh data.
* :func:`cross_network_distance`: for samples :math:`a_i, b_i` of two models from the same initial noise,
  :math:`\\frac1n\\sum_i \\|a_i - b_i\\|` divided by the mean distance between samples of different noise,
  :math:`\\frac1n\\sum_i \\|a_i - b_{i+1}\\|` (indices mod :math:`n`): 0 when the two models generate the same
  image from each noise, about 1 when they are unrelated (the paper's test of two networks trained on
  non-overlapping sets).
* :func:`jacobian_spectrum`: the denoiser Jacobian :math:`J = \\nabla_x D(x, \\sigma)` at points ``x`` (one
  vectorized :func:`torch.func.jacrev` for the whole batch), its eigen-decomposition (the paper's adaptive basis:
  the denoiser shrinks along eigenvector :math:`e_k` by eigenvalue :math:`\\lambda_k`) and its effective
  dimensionality :math:`\\operatorname{tr} J = \\sum_k \\lambda_k = \\nabla \\cdot D`. For an exact MMSE
  denoiser :math:`J = \\operatorname{Cov}[x_0 \\mid x]/\\sigma^2` is symmetric positive semidefinite; a learned
  one is only nearly symmetric, so the decomposition is of the symmetric part and ``asymmetry`` reports
  :math:`\\|J - J^\\top\\|_F / (2\\|J\\|_F)`.

Shapes: points ``(n, d)``, training sets ``(N, d)``, levels a number or ``(n,)``.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.harmonic_generalization import EmpiricalDenoiser, memorization_ratio
    >>> train = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    >>> D = EmpiricalDenoiser(train)
    >>> D(torch.tensor([[3.6, 0.3]], dtype=torch.float64), 0.1).round(decimals=4).tolist()   # snaps to x_2
    [[4.0, 0.0]]
    >>> float(memorization_ratio(train + 1e-3, train).max()) < 1e-3
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Flag, Function, OneOf, Real, Tensor, accepts
from paperzoo.diffusion.gauge_freedom import denoiser_jacobian

__all__ = ["EmpiricalDenoiser", "nearest_neighbor_distances", "memorization_ratio", "cross_network_distance",
           "JacobianSpectrum", "jacobian_spectrum"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_SIGMA = OneOf(Real(ge=0), Tensor(ndims=(0, 1), nonnegative=True, finite=False, allow_empty=True))
_SIGMA_POS = OneOf(Real(gt=0), Tensor(ndims=(0, 1), nonnegative=True))


def _example_train(ctx) -> torch.Tensor:
    return torch.randn(5, 3, generator=ctx.generator, dtype=ctx.dtype)


class EmpiricalDenoiser:
    r"""The exact denoiser of the empirical distribution :math:`\frac1N\sum_n \delta_{x_n}` (module docstring): the
    memorizing optimum of the denoising loss on the training set ``train``.

    Args:
        train: the training points :math:`x_n`, shape ``(N, d)``.

    ``D(x, sigma)`` takes points ``(n, d)`` and a level: a number or ``(n,)`` (as the samplers pass it). At
    ``sigma = 0`` it returns the nearest training point (the limit), at ``sigma = inf`` the training mean.

    Example:
        >>> import torch
        >>> D = EmpiricalDenoiser(torch.tensor([[-1.0], [1.0]]))
        >>> D(torch.tensor([[-0.3], [0.9]]), 0.0).tolist()        # the nearest training point
        [[-1.0], [1.0]]
        >>> round(float(D(torch.tensor([[0.5]]), 1.0)), 6) == round(float(torch.tanh(torch.tensor(0.5))), 6)
        True
    """

    @accepts(train=Tensor("N", "d", degenerate=("coincident",)), example=lambda ctx: {"train": _example_train(ctx)})
    def __init__(self, train: torch.Tensor):
        self.train = train
        self._sq_norms = train.square().sum(-1)

    def __repr__(self) -> str:
        return f"EmpiricalDenoiser(n_train={self.train.shape[0]}, dim={self.train.shape[1]}, dtype={self.train.dtype})"

    @accepts(x=Tensor("n", "d", degenerate=("coincident",)), sigma=_SIGMA,
             example=lambda ctx: {"self": EmpiricalDenoiser(_example_train(ctx)),
                                  "x": torch.randn(4, 3, generator=ctx.generator, dtype=ctx.dtype), "sigma": 0.5})
    def __call__(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.train.shape[1]:
            raise ValueError(f"x must have last dimension {self.train.shape[1]} (the training set's), got shape "
                             f"{tuple(x.shape)}")
        if x.dtype != self.train.dtype:
            raise TypeError(f"x must have the training set's dtype ({self.train.dtype}), got {x.dtype}")
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if s.dim() == 1 and s.shape[0] != x.shape[0]:
            raise ValueError(f"sigma must be a number or have shape ({x.shape[0]},) (one level per point), got "
                             f"{tuple(s.shape)}")
        if bool(torch.isnan(s).any()):
            raise ValueError("sigma must not contain NaN")
        return self._denoise(x, s)

    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Unchecked call (sampler loops); ``sigma`` a 0-dim or ``(n,)`` tensor."""
        s = torch.broadcast_to(sigma, x.shape[:1])
        sq = (x.square().sum(-1, keepdim=True) - 2 * x @ self.train.T + self._sq_norms).clamp_min(0)  # (n, N)
        zero, inf = s == 0, torch.isinf(s)
        safe = torch.where(zero | inf, torch.ones_like(s), s)
        logits = -sq / (2 * safe.square()[:, None])
        # sigma = 0: the limit puts all mass on the nearest point; sigma = inf: uniform weights (the mean)
        logits = torch.where(zero[:, None], torch.where(sq == sq.min(-1, keepdim=True).values, 0.0, -torch.inf),
                             logits)
        logits = torch.where(inf[:, None], torch.zeros_like(logits), logits)
        return torch.softmax(logits, dim=-1) @ self.train


@accepts(x=Tensor("n", "d", degenerate=("coincident",)), reference=Tensor("N", "d", degenerate=("coincident",)),
         exclude_self=Flag(), example=lambda ctx: {"x": torch.randn(4, 3, generator=ctx.generator, dtype=ctx.dtype),
                              "reference": _example_train(ctx)})
def nearest_neighbor_distances(x: torch.Tensor, reference: torch.Tensor, *, exclude_self: bool = False
                               ) -> torch.Tensor:
    """Euclidean distance from each row of ``x`` ``(n, d)`` to its nearest row of ``reference`` ``(N, d)``,
    shape ``(n,)``. ``exclude_self=True`` (``x`` is ``reference``): each point's nearest *other* point."""
    dist = torch.cdist(x, reference)
    if exclude_self:
        if x.shape[0] != reference.shape[0] or reference.shape[0] < 2:
            raise ValueError("exclude_self=True needs x to be reference, with at least 2 points, got shapes "
                             f"{tuple(x.shape)} and {tuple(reference.shape)}")
        dist = dist + torch.diag(torch.full((x.shape[0],), torch.inf, dtype=x.dtype, device=x.device))
    return dist.min(-1).values


@accepts(samples=Tensor("n", "d", degenerate=("coincident",)), train=Tensor("N", "d"),
         reference=Tensor("m", "d", optional=True),
         example=lambda ctx: {"samples": torch.randn(4, 3, generator=ctx.generator, dtype=ctx.dtype),
                              "train": _example_train(ctx)})
def memorization_ratio(samples: torch.Tensor, train: torch.Tensor, reference: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """Each sample's nearest-training-point distance relative to fresh data's, shape ``(n,)`` (module docstring).

    Args:
        samples: generated points ``(n, d)``; train: the model's training set ``(N, d)``, ``N >= 2`` without a
            reference.
        reference: held-out real points ``(m, d)`` whose median distance to ``train`` is the unit; default: the
            training points' leave-one-out nearest-neighbour distances.
    """
    if reference is None:
        if train.shape[0] < 2:
            raise ValueError(f"train must hold at least 2 points when no reference is given, got {train.shape[0]}")
        unit = nearest_neighbor_distances(train, train, exclude_self=True).median()
    else:
        unit = torch.cdist(reference, train).min(-1).values.median()
    if float(unit) <= 0:
        raise ValueError("reference points must not all coincide with training points (the unit distance is 0)")
    return torch.cdist(samples, train).min(-1).values / unit


@accepts(a=Tensor("n", "d"), b=Tensor("n", "d"),
         example=lambda ctx: {"a": torch.randn(4, 3, generator=ctx.generator, dtype=ctx.dtype),
                              "b": torch.randn(4, 3, generator=ctx.generator, dtype=ctx.dtype)})
def cross_network_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean paired distance of two models' samples from the same noise, relative to unpaired ones (a 0-dim
    tensor): ``mean_i |a_i - b_i| / mean_i |a_i - b_(i+1 mod n)|`` (module docstring).

    Args:
        a, b: samples ``(n, d)``, ``n >= 2``; row ``i`` of both from the same initial noise.
    """
    if a.shape[0] < 2:
        raise ValueError(f"a must hold at least 2 samples (the unpaired distance needs two), got {a.shape[0]}")
    unpaired = (a - b.roll(-1, 0)).norm(dim=-1).mean()
    if float(unpaired) <= 0:
        raise ValueError("a and b must not be one and the same point repeated (the unpaired distance is 0)")
    return (a - b).norm(dim=-1).mean() / unpaired


class JacobianSpectrum(NamedTuple):
    """The denoiser Jacobian at ``n`` points and the eigen-decomposition of its symmetric part.

    Attributes:
        jacobian: :math:`J_{ij} = \\partial D_i / \\partial x_j`, ``(n, d, d)``.
        eigenvalues: of :math:`(J + J^\\top)/2`, descending, ``(n, d)``.
        eigenvectors: columns matching ``eigenvalues``, ``(n, d, d)``: the adaptive basis.
        effective_dim: :math:`\\operatorname{tr} J` (the divergence of :math:`D`), ``(n,)``.
        asymmetry: :math:`\\|J - J^\\top\\|_F / (2 \\|J\\|_F)` (0 for an exact MMSE denoiser), ``(n,)``.
    """

    jacobian: torch.Tensor
    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    effective_dim: torch.Tensor
    asymmetry: torch.Tensor


def _example_jacobian(ctx) -> dict:
    return {"model": EmpiricalDenoiser(_example_train(ctx)),
            "x": torch.randn(4, 3, generator=ctx.generator, dtype=ctx.dtype), "sigma": 0.7}


@accepts(model=Function(), x=Tensor("n", "d", degenerate=("coincident",)), sigma=_SIGMA_POS,
         example=_example_jacobian)
def jacobian_spectrum(model: Denoiser, x: torch.Tensor, sigma: float | torch.Tensor) -> JacobianSpectrum:
    """The Jacobian of ``model`` at ``x`` ``(n, d)`` and level ``sigma``, its adaptive eigenbasis and its effective
    dimensionality (:class:`JacobianSpectrum`; same requirements on ``model`` as :func:`denoiser_jacobian`)."""
    jac = denoiser_jacobian(model, x, sigma)
    sym = 0.5 * (jac + jac.transpose(-1, -2))
    evals, evecs = torch.linalg.eigh(sym)
    evals, evecs = evals.flip(-1), evecs.flip(-1)
    norm = torch.linalg.matrix_norm(jac)
    skew = torch.linalg.matrix_norm(jac - jac.transpose(-1, -2))
    asym = torch.where(norm > 0, skew / (2 * norm.clamp_min(torch.finfo(x.dtype).tiny)), torch.zeros_like(norm))
    return JacobianSpectrum(jac, evals, evecs, torch.diagonal(jac, dim1=-2, dim2=-1).sum(-1), asym)
