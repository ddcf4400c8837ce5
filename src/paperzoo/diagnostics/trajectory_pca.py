"""PCA of a trajectory, and the exact PCA spectrum of a high-dimensional random walk.

References: PCA of high dimensional random walks with comparison to neural network training (Antognini,
Sohl-Dickstein), 2018.

A trajectory is ``T`` positions :math:`x_1, \\dots, x_T \\in \\mathbb R^D` (rows of ``positions``): parameter
snapshots of a training run, or a simulated walk. :func:`trajectory_pca` centres them over time and diagonalises
the :math:`T \\times T` Gram matrix :math:`G = \\bar X \\bar X^\\top` when :math:`D > T` (the usual case for network
parameters) and the :math:`D \\times D` covariance otherwise; the two have the same nonzero spectrum.

For a random walk :math:`x_t = \\sum_{s \\le t} \\eta_s` with i.i.d. zero-mean steps whose covariance has rank
:math:`\\gg T`, the Gram matrix concentrates (as :math:`D \\to \\infty`) on :math:`\\sigma^2 D \\, C M C` with
:math:`M_{ij} = \\min(i, j)` (the covariance of the walk over time) and :math:`C = I - \\mathbf 1 \\mathbf 1^\\top / T`
(centring). Its eigenvalues and eigenvectors are, for :math:`k = 1, \\dots, T - 1` and :math:`t = 0, \\dots, T-1`,

.. math::
    \\lambda_k = \\frac{1}{4 \\sin^2(\\pi k / 2T)}, \\qquad u_k(t) \\propto \\cos\\!\\big(\\pi k (t + \\tfrac12) / T\\big),
    \\qquad \\sum_k \\lambda_k = \\frac{T^2 - 1}{6},

so the explained-variance ratio of PC :math:`k` is :math:`\\rho_k = 3 / (2 (T^2 - 1) \\sin^2(\\pi k / 2T))
\\to 6 / (\\pi^2 k^2)` as :math:`T \\to \\infty` (the paper's result: 61% of the variance in PC 1, 1/k^2 decay), and
the trajectory projected on PC :math:`k` is a cosine of :math:`k` half-periods (Lissajous figures in any pair of PCs).
The closed form above is our derivation (a discrete cosine basis diagonalises :math:`C M C`); the tests check it
against a dense eigendecomposition, and :func:`random_walk_pca_prediction` returns both.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from paperzoo.core.accepts import FloatDType, Int, Tensor, accepts

__all__ = ["TrajectoryPCA", "RandomWalkPCAPrediction", "trajectory_pca", "random_walk_pca_prediction",
           "lissajous_correlation"]


class TrajectoryPCA(NamedTuple):
    """Result of :func:`trajectory_pca` (leading ``k`` components, in decreasing order of variance).

    Attributes:
        explained_variance_ratio: :math:`\\lambda_j / \\sum_i \\lambda_i`, shape ``(k,)``.
        explained_variance: :math:`\\lambda_j / (T - 1)` (the unbiased convention of scikit-learn), shape ``(k,)``.
        components: unit principal directions in :math:`\\mathbb R^D`, shape ``(k, D)``; each sign is fixed so that
            the entry of largest magnitude is positive.
        projections: the centred positions projected on the components, shape ``(T, k)``.
        total_variance: :math:`\\sum_i \\lambda_i / (T - 1)`, the summed variance of all coordinates (0-dim).
        gram: ``True`` when the :math:`T \\times T` Gram route was taken (``D > T``).
    """

    explained_variance_ratio: torch.Tensor
    explained_variance: torch.Tensor
    components: torch.Tensor
    projections: torch.Tensor
    total_variance: torch.Tensor
    gram: bool


class RandomWalkPCAPrediction(NamedTuple):
    """Result of :func:`random_walk_pca_prediction` for PCs ``1..k``.

    Attributes:
        explained_variance_ratio: the eigenvalues of the centred time covariance :math:`C M C` (dense
            eigendecomposition) over their sum, shape ``(k,)``.
        closed_form: :math:`3 / (2 (T^2 - 1) \\sin^2(\\pi j / 2T))`, shape ``(k,)`` (equal to the above).
        limit: the large-``T`` limit :math:`6 / (\\pi^2 j^2)`, shape ``(k,)``.
        modes: the predicted projections :math:`\\cos(\\pi j (t + 1/2) / T)`, shape ``(T, k)``.
    """

    explained_variance_ratio: torch.Tensor
    closed_form: torch.Tensor
    limit: torch.Tensor
    modes: torch.Tensor


def _example_positions(ctx):
    return torch.randn(6, 8, generator=ctx.generator, dtype=ctx.dtype).cumsum(0)


def _cosine_modes(T: int, k: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    t = torch.arange(T, dtype=dtype, device=device) + 0.5
    j = torch.arange(1, k + 1, dtype=dtype, device=device)
    return torch.cos(math.pi * t[:, None] * j[None, :] / T)


def _trajectory_pca(positions: torch.Tensor, k: int) -> TrajectoryPCA:
    T, D = positions.shape
    Xc = positions - positions.mean(0, keepdim=True)
    gram = D > T
    if gram:
        lam, U = torch.linalg.eigh(Xc @ Xc.T)  # (T,), (T, T); same nonzero spectrum as Xc^T Xc
        lam_all = lam.flip(0).clamp_min(0.0)
        lam_k, U_k = lam_all[:k], U.flip(1)[:, :k]
        # V = Xc^T U / sqrt(lam); a vanishing lam (rank-deficient trajectory) leaves a zero direction, not NaN.
        root = lam_k.sqrt()
        safe = torch.where(root > 0, root, torch.ones_like(root))
        components = ((Xc.T @ U_k) / safe * (root > 0)).T
    else:
        lam, V = torch.linalg.eigh(Xc.T @ Xc)
        lam_all = lam.flip(0).clamp_min(0.0)
        lam_k, components = lam_all[:k], V.flip(1)[:, :k].T
    pivot = components.abs().argmax(1, keepdim=True)
    sign = torch.sign(components.gather(1, pivot))
    components = components * torch.where(sign == 0, torch.ones_like(sign), sign)
    total = lam_all.sum()
    if not bool(total > 0):
        raise ValueError("positions must not be constant over time (all rows equal): the centred trajectory has "
                         "zero variance")
    return TrajectoryPCA(lam_k / total, lam_k / (T - 1), components, Xc @ components.T, total / (T - 1), gram)


@accepts(positions=Tensor("T", "D"), k=Int(ge=1),
         example=lambda ctx: {"positions": _example_positions(ctx), "k": 2})
def trajectory_pca(positions: torch.Tensor, k: int) -> TrajectoryPCA:
    """Principal components of a trajectory: explained-variance ratios, directions and projections.

    References: PCA of high dimensional random walks with comparison to neural network training (Antognini,
    Sohl-Dickstein), 2018 (the measurement the paper applies to random walks and to training trajectories).

    Symbols: :math:`\\bar X` = ``positions`` centred over time (rows are time steps), :math:`\\lambda_j` the
    eigenvalues of :math:`\\bar X \\bar X^\\top` (``D > T``) or :math:`\\bar X^\\top \\bar X`; explained-variance
    ratio :math:`\\lambda_j / \\sum_i \\lambda_i`. This is the PCA of scikit-learn's ``PCA`` (full SVD) computed
    through the smaller of the two Gram matrices, so a ``(1000, 10^6)`` trajectory costs one ``1000 x 1000``
    eigendecomposition.

    Args:
        positions: the trajectory, shape ``(T, D)``, ``T >= 2`` time steps of a ``D``-dimensional state, finite,
            not constant over time.
        k: number of leading components, ``1 <= k <= min(T - 1, D)`` (the rank bound of centred data).

    Returns:
        A :class:`TrajectoryPCA`.

    Example:
        >>> import torch
        >>> walk = torch.randn(100, 5000, generator=torch.Generator().manual_seed(0), dtype=torch.float64).cumsum(0)
        >>> pca = trajectory_pca(walk, 3)
        >>> [round(r, 2) for r in pca.explained_variance_ratio.tolist()], pca.projections.shape
        ([0.61, 0.15, 0.07], torch.Size([100, 3]))
    """
    T, D = positions.shape
    if T < 2:
        raise ValueError(f"positions must have T >= 2 time steps, got shape {tuple(positions.shape)}")
    if k > min(T - 1, D):
        raise ValueError(f"k must be <= min(T - 1, D) = {min(T - 1, D)} for positions of shape "
                         f"{tuple(positions.shape)}, got {k}")
    return _trajectory_pca(positions, k)


@accepts(T=Int(ge=2), k=Int(ge=1), dtype=FloatDType(), example=lambda ctx: {"T": 10, "k": 3})
def random_walk_pca_prediction(T: int, k: int, *, dtype: torch.dtype = torch.float64) -> RandomWalkPCAPrediction:
    """Predicted PCA explained-variance ratios and projections of a ``T``-step high-dimensional random walk.

    References: PCA of high dimensional random walks with comparison to neural network training (Antognini,
    Sohl-Dickstein), 2018 (the eigenvalues of the walk's covariance over time, and their 1/k^2 limit).

    The prediction is exact for finite ``T`` in the limit :math:`D \\to \\infty` (steps i.i.d., zero mean, any
    covariance of rank :math:`\\gg T`): the eigenvalues :math:`\\lambda_j` of :math:`C M C`, :math:`M_{ts} =
    \\min(t, s)`, :math:`C = I - \\mathbf 1 \\mathbf 1^\\top / T`, over their sum; closed form
    :math:`3 / (2 (T^2 - 1) \\sin^2(\\pi j / 2T))`, limit :math:`6 / (\\pi^2 j^2)`. The starting point does not
    matter (centring removes it).

    Args:
        T: number of recorded positions, ``>= 2``.
        k: number of components, ``1 <= k <= T - 1``.
        dtype: floating dtype of the results.

    Returns:
        A :class:`RandomWalkPCAPrediction`.

    Example:
        >>> pred = random_walk_pca_prediction(1000, 2)
        >>> [round(r, 4) for r in pred.explained_variance_ratio.tolist()], [round(r, 4) for r in pred.limit.tolist()]
        ([0.6079, 0.152], [0.6079, 0.152])
    """
    if k > T - 1:
        raise ValueError(f"k must be <= T - 1 = {T - 1} (a centred T-point trajectory has rank <= T - 1), got {k}")
    t = torch.arange(1, T + 1, dtype=dtype)
    C = torch.eye(T, dtype=dtype) - 1.0 / T
    lam = torch.linalg.eigvalsh(C @ torch.minimum(t[:, None], t[None, :]) @ C).flip(0).clamp_min(0.0)
    j = torch.arange(1, k + 1, dtype=dtype)
    closed = 3.0 / (2.0 * (T * T - 1) * torch.sin(math.pi * j / (2 * T)) ** 2)
    return RandomWalkPCAPrediction(lam[:k] / lam.sum(), closed, 6.0 / (math.pi ** 2 * j ** 2),
                                   _cosine_modes(T, k, dtype))


@accepts(projections=Tensor("T", "k"), example=lambda ctx: {"projections": _cosine_modes(7, 3, ctx.dtype)})
def lissajous_correlation(projections: torch.Tensor) -> torch.Tensor:
    """Lissajous test: |correlation| of each PC's projection with the predicted cosine of the random walk.

    References: PCA of high dimensional random walks with comparison to neural network training (Antognini,
    Sohl-Dickstein), 2018 (projections of a random walk on PC j are cosines of j half-periods).

    Column ``j - 1`` of ``projections`` (the trajectory projected on PC ``j``, as in
    :attr:`TrajectoryPCA.projections`) is compared with :math:`\\cos(\\pi j (t + 1/2) / T)`, ``t = 0..T-1`` (the
    exact finite-``T`` eigenvector; ``cos(pi j t / T)`` of the paper's continuum limit up to the half-step
    offset); the result is the absolute Pearson correlation (a PC's sign is arbitrary), shape ``(k,)``. A
    constant column has correlation 0.

    Args:
        projections: shape ``(T, k)``, ``T >= 2``, ``k <= T - 1``.

    Example:
        >>> import torch
        >>> t = torch.arange(50, dtype=torch.float64) + 0.5
        >>> proj = torch.stack([torch.cos(torch.pi * t / 50), -torch.cos(2 * torch.pi * t / 50)], 1)
        >>> [round(c, 6) for c in lissajous_correlation(proj).tolist()]
        [1.0, 1.0]
    """
    T, k = projections.shape
    if T < 2:
        raise ValueError(f"projections must have T >= 2 time steps, got shape {tuple(projections.shape)}")
    if k > T - 1:
        raise ValueError(f"projections must have k <= T - 1 = {T - 1} columns, got shape "
                         f"{tuple(projections.shape)}")
    modes = _cosine_modes(T, k, projections.dtype, projections.device)  # each column has mean 0 exactly
    p = projections - projections.mean(0, keepdim=True)
    norm = p.norm(dim=0) * modes.norm(dim=0)
    dot = (p * modes).sum(0).abs()
    return torch.where(norm > 0, dot / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(norm))
