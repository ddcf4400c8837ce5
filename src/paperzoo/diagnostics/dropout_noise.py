"""Dropout gradient noise, its alignment with the Hessian, and the variance-flatness relation of a trajectory.

References: Stochastic Modified Equations and Dynamics of Dropout Algorithm (Zhang, Li, Luo, Xu), 2023.

Dropout multiplies hidden units by i.i.d. masks :math:`\\eta` (``1 / (1 - q)`` with probability ``1 - q``, 0
otherwise, ``q`` the drop rate of ``torch.nn.Dropout``), so a full-batch step uses the random gradient
:math:`g_\\eta(\\theta) = \\nabla_\\theta L(\\theta; \\eta)`. The paper's stochastic modified equation replaces the
iteration :math:`\\theta_{t+1} = \\theta_t - \\varepsilon g_\\eta(\\theta_t)` by the SDE
:math:`d\\theta = -\\nabla L_S(\\theta)\\,dt + \\sqrt{\\varepsilon}\\,\\Sigma(\\theta)^{1/2} dW` whose diffusion is the
mask covariance :math:`\\Sigma = \\operatorname{Cov}_\\eta[g_\\eta]` (:func:`dropout_gradient_noise`). The paper's two
empirical relations are measured here:

* Hessian-variance alignment (:func:`hessian_covariance_alignment`):
  :math:`\\alpha(H, \\Sigma) = \\operatorname{tr}(H \\Sigma) / (\\|H\\|_F \\|\\Sigma\\|_F)`, compared with isotropic
  noise :math:`\\alpha(H, I) = \\operatorname{tr} H / (\\|H\\|_F \\sqrt n)`, and the overlap of the top-``k``
  eigenspaces (:func:`paperzoo.diagnostics.subspace_overlap`, ``k / n`` for a random subspace).
* Inverse variance-flatness relation (:func:`variance_flatness`): along the principal directions :math:`v_i` of the
  weight trajectory (variance :math:`\\sigma_i^2`), the flatness :math:`F_i` is the width of the interval of
  :math:`s` around the trajectory mean :math:`\\bar\\theta` where :math:`L(\\bar\\theta + s v_i) \\le
  \\text{factor} \\cdot L(\\bar\\theta)`; the relation is :math:`F_i \\propto \\sigma_i^{-\\psi}` with
  :math:`\\psi > 0`, a negative slope of :math:`\\log F_i` on :math:`\\log \\sigma_i^2` (for isotropic Langevin noise
  in a quadratic well the slope is :math:`+1/2`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Function, Generator, Int, Module, Real, Tensor, accepts
from paperzoo.core.evidence import fit_line
from paperzoo.diagnostics.hessian import _functional_model
from paperzoo.diagnostics.tiny_subspace import _subspace_overlap
from paperzoo.diagnostics.trajectory_pca import _trajectory_pca

__all__ = ["DropoutGradientNoise", "HessianCovarianceAlignment", "VarianceFlatness", "dropout_gradient_noise",
           "hessian_covariance_alignment", "variance_flatness"]


class DropoutGradientNoise(NamedTuple):
    """Result of :func:`dropout_gradient_noise`.

    Attributes:
        mean: the Monte Carlo mean of the masked full-batch gradients, shape ``(n,)``.
        covariance: their unbiased sample covariance :math:`\\Sigma`, shape ``(n, n)``.
        gradients: the masked gradients, one row per mask draw, shape ``(num_masks, n)``.
        num_masks: the number of mask draws.
    """

    mean: torch.Tensor
    covariance: torch.Tensor
    gradients: torch.Tensor
    num_masks: int


class HessianCovarianceAlignment(NamedTuple):
    """Result of :func:`hessian_covariance_alignment`.

    Attributes:
        alignment: :math:`\\operatorname{tr}(H\\Sigma) / (\\|H\\|_F \\|\\Sigma\\|_F)`.
        isotropic_alignment: the same with :math:`\\Sigma = I` (isotropic noise of any magnitude).
        rotation_null: the expected alignment when the eigenvectors of :math:`\\Sigma` are uniformly random (its
            eigenvalues kept), :math:`\\operatorname{tr} H \\operatorname{tr} \\Sigma / (n \\|H\\|_F \\|\\Sigma\\|_F)`:
            random PSD matrices are positively aligned, so this is the null a real alignment must beat.
        top_overlap: overlap of the top-``k`` eigenspaces of ``hessian`` and ``covariance`` in ``[0, 1]``.
        random_overlap: ``k / n``, the expected overlap of a uniformly random ``k``-subspace.
        k: the subspace dimension.
    """

    alignment: float
    isotropic_alignment: float
    rotation_null: float
    top_overlap: float
    random_overlap: float
    k: int


class VarianceFlatness(NamedTuple):
    """Result of :func:`variance_flatness` (leading ``k`` principal directions of the trajectory).

    Attributes:
        variance: :math:`\\sigma_i^2`, the trajectory's variance along PC ``i`` (``1/(T-1)`` convention), ``(k,)``.
        flatness: :math:`F_i`, the width of the sub-``factor`` interval along PC ``i``; NaN where the loss stayed
            below the threshold out to ``max_radius`` on a side, shape ``(k,)``.
        components: the principal directions, shape ``(k, n)``.
        center_loss: :math:`L(\\bar\\theta)`.
        slope: least-squares slope of :math:`\\log F_i` on :math:`\\log \\sigma_i^2` over the finite entries.
        slope_low, slope_high: its 95% t-interval (NaN with fewer than 3 finite entries).
        converged: every direction crossed the threshold on both sides within ``max_radius``.
    """

    variance: torch.Tensor
    flatness: torch.Tensor
    components: torch.Tensor
    center_loss: float
    slope: float
    slope_low: float
    slope_high: float
    converged: bool


def _example_dropout_mlp(ctx):
    g = ctx.generator
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Dropout(0.2),
                                torch.nn.Linear(4, 1)).to(ctx.dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=ctx.dtype))
    return {"model": model.train(), "loss_fn": torch.nn.functional.mse_loss,
            "inputs": torch.randn(8, 2, generator=g, dtype=ctx.dtype),
            "targets": torch.randn(8, 1, generator=g, dtype=ctx.dtype), "num_masks": 4}


def _flat(theta) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in theta])


def _split(v: torch.Tensor, sizes, shapes):
    return [c.view(s) for c, s in zip(torch.split(v, sizes), shapes)]


@accepts(model=Module(bind_dtype=True), loss_fn=Function(),
         inputs=Tensor(ndims=tuple(range(1, 9)), dtype="any"), targets=Tensor(ndims=tuple(range(0, 9)), dtype="any"),
         num_masks=Int(ge=2), generator=Generator(), example=_example_dropout_mlp)
def dropout_gradient_noise(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                           inputs: torch.Tensor, targets: torch.Tensor, *, num_masks: int = 256,
                           generator: torch.Generator | None = None) -> DropoutGradientNoise:
    """Dropout gradient noise: mean and covariance of the full-batch gradient over dropout masks.

    References: Stochastic Modified Equations and Dynamics of Dropout Algorithm (Zhang, Li, Luo, Xu), 2023 (the
    diffusion matrix :math:`\\Sigma` of the dropout SME).

    :math:`g_m = \\nabla_\\theta\\, \\texttt{loss\\_fn}(f_\\theta(\\texttt{inputs}; \\eta_m), \\texttt{targets})`
    for ``num_masks`` independent mask draws :math:`\\eta_m` of the model's ``torch.nn.Dropout`` layers (one mask
    per sample and unit, as in training); returns :math:`\\bar g` and
    :math:`\\Sigma = \\sum_m (g_m - \\bar g)(g_m - \\bar g)^\\top / (M - 1)`. The draws are vectorised with
    ``torch.func.vmap(..., randomness="different")`` under a forked torch RNG seeded from ``generator`` (the
    global RNG is left untouched). :math:`\\theta` is flattened in ``named_parameters`` order.

    Args:
        model: contains at least one ``torch.nn.Dropout`` with ``p > 0`` and is in training mode.
        loss_fn: ``loss_fn(outputs, targets)`` -> finite scalar (mean over the batch).
        inputs: shape ``(N, ...)``. targets: shape ``(N, ...)``.
        num_masks: mask draws ``M >= 2``.
        generator: seeds the mask draws.

    Returns:
        A :class:`DropoutGradientNoise`.

    Example:
        >>> import torch
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Dropout(0.5), torch.nn.Linear(3, 1)).double()
        >>> x, y = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 1, dtype=torch.float64)
        >>> noise = dropout_gradient_noise(model, torch.nn.functional.mse_loss, x, y, num_masks=64)
        >>> noise.covariance.shape, noise.gradients.shape
        (torch.Size([13, 13]), torch.Size([64, 13]))
    """
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    if not any(m.training and m.p > 0 for m in drops):
        raise ValueError("model must contain a torch.nn.Dropout with p > 0 in training mode (call model.train()), "
                         f"got {len(drops)} dropout layer(s) active in none")
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    with torch.random.fork_rng(devices=[]):  # the validation pass and the masks draw from a seeded private stream
        torch.manual_seed(seed)
        theta0, sizes, shapes, dtype, out_fn, loss_of_out = _functional_model(model, loss_fn, inputs, targets)

        def flat_loss(theta):
            return loss_of_out(out_fn(theta)).reshape(())

        grad = torch.func.grad(flat_loss)

        def one(_):
            return _flat(grad(theta0))

        G = torch.func.vmap(one, randomness="different")(torch.zeros(num_masks, dtype=dtype))
    if not bool(torch.isfinite(G).all()):
        raise ValueError("loss_fn produced non-finite gradients under dropout masks")
    mean = G.mean(0)
    D = G - mean
    return DropoutGradientNoise(mean, D.T @ D / (num_masks - 1), G, num_masks)


def _example_alignment(ctx):
    g = ctx.generator
    A = torch.randn(6, 6, generator=g, dtype=ctx.dtype)
    B = torch.randn(6, 6, generator=g, dtype=ctx.dtype)
    return {"hessian": A + A.T, "covariance": B @ B.T, "k": 2}


@accepts(hessian=Tensor("n", "n"), covariance=Tensor("n", "n"), k=Int(ge=1), example=_example_alignment)
def hessian_covariance_alignment(hessian: torch.Tensor, covariance: torch.Tensor, k: int = 10
                                 ) -> HessianCovarianceAlignment:
    """Hessian-variance alignment of a noise covariance: cosine in Frobenius inner product and top-``k`` overlap.

    References: Stochastic Modified Equations and Dynamics of Dropout Algorithm (Zhang, Li, Luo, Xu), 2023 (the
    Hessian-variance relation); Dropout in training neural networks: flatness of solution and noise structure
    (Zhang, Zhou, Xu), 2021 (the alignment :math:`\\alpha`).

    :math:`\\alpha(H, \\Sigma) = \\operatorname{tr}(H\\Sigma) / (\\|H\\|_F\\|\\Sigma\\|_F)` with :math:`H` =
    ``hessian`` and :math:`\\Sigma` = ``covariance``; ``isotropic_alignment`` is :math:`\\alpha(H, I)`; ``rotation_null`` is the mean of
    :math:`\\alpha(H, Q\\Sigma Q^\\top)` over Haar-random orthogonal :math:`Q`, which is
    :math:`\\operatorname{tr} H \\operatorname{tr}\\Sigma / (n \\|H\\|_F \\|\\Sigma\\|_F)`. The top-``k``
    eigenspaces (largest eigenvalues of the symmetrised matrices) are compared by
    :math:`\\|U_H U_\\Sigma^\\top\\|_F^2 / k` (:func:`paperzoo.diagnostics.subspace_overlap`).

    Args:
        hessian: shape ``(n, n)``, symmetric up to rounding (symmetrised here), not zero.
        covariance: shape ``(n, n)``, symmetric positive semi-definite up to rounding, not zero.
        k: subspace dimension, ``1 <= k <= n``.

    Returns:
        A :class:`HessianCovarianceAlignment`.

    Example:
        >>> import torch
        >>> H = torch.diag(torch.tensor([3.0, 2.0, 0.0, 0.0], dtype=torch.float64))
        >>> r = hessian_covariance_alignment(H, H @ H, k=2)
        >>> round(r.alignment, 4), round(r.isotropic_alignment, 4), r.top_overlap, r.random_overlap
        (0.9856, 0.6934, 1.0, 0.5)
    """
    n = hessian.shape[0]
    if k > n:
        raise ValueError(f"k must be <= n = {n} (the matrix size), got {k}")
    H = (hessian + hessian.T) / 2
    C = (covariance + covariance.T) / 2
    nh, nc = torch.linalg.matrix_norm(H), torch.linalg.matrix_norm(C)
    if not bool(nh > 0):
        raise ValueError("hessian must not be the zero matrix")
    if not bool(nc > 0):
        raise ValueError("covariance must not be the zero matrix")
    alignment = float((H * C).sum() / (nh * nc))
    iso = float(torch.diagonal(H).sum() / (nh * math.sqrt(n)))
    null = float(torch.diagonal(H).sum() * torch.diagonal(C).sum() / (n * nh * nc))  # E over Haar Q of tr(H Q C Q^T)
    U = torch.linalg.eigh(H).eigenvectors[:, -k:].T
    V = torch.linalg.eigh(C).eigenvectors[:, -k:].T
    return HessianCovarianceAlignment(alignment, iso, null, float(_subspace_overlap(U, V)), k / n, k)


def _example_flatness(ctx):
    args = _example_dropout_mlp(ctx)
    model = args.pop("model").eval()
    args.pop("num_masks")
    n = sum(p.numel() for p in model.parameters())
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    walk = 0.01 * torch.randn(12, n, generator=ctx.generator, dtype=ctx.dtype).cumsum(0)
    return {"model": model, **args, "positions": theta + walk, "k": 3}


@accepts(model=Module(bind_dtype=True), loss_fn=Function(),
         inputs=Tensor(ndims=tuple(range(1, 9)), dtype="any"), targets=Tensor(ndims=tuple(range(0, 9)), dtype="any"),
         positions=Tensor("T", "n"), k=Int(ge=1), factor=Real(gt=1), max_radius=Real(gt=0),
         num_points=Int(ge=3), output="any", example=_example_flatness)
def variance_flatness(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      inputs: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor, k: int = 10, *,
                      factor: float = 2.0, max_radius: float = 10.0, num_points: int = 401) -> VarianceFlatness:
    """Variance-flatness relation: PCA variance and loss-landscape flatness along a trajectory's principal directions.

    References: Stochastic Modified Equations and Dynamics of Dropout Algorithm (Zhang, Li, Luo, Xu), 2023 (the
    inverse variance-flatness relation under dropout); The inverse variance-flatness relation in stochastic gradient
    descent is critical for finding flat minima (Feng, Tu), 2021 (the flatness definition).

    With :math:`\\bar\\theta` the mean of ``positions`` (rows: flattened parameters over time, ``named_parameters``
    order) and :math:`(\\sigma_i^2, v_i)` its top-``k`` PCA pairs (:func:`paperzoo.diagnostics.trajectory_pca`),
    the loss :math:`L(\\bar\\theta + s v_i)` of ``model`` (run as it is: put dropout layers in ``eval()``) is
    evaluated on ``num_points`` values of :math:`s` in ``[-max_radius, max_radius]`` (vectorised with
    ``torch.func.vmap``); :math:`F_i = s_+ - s_-`, the first crossings of :math:`\\text{factor} \\cdot
    L(\\bar\\theta)` on each side of 0, linearly interpolated. The slope of :math:`\\log F_i` on
    :math:`\\log\\sigma_i^2` is fitted with :func:`paperzoo.core.evidence.fit_line`. A direction that does not cross
    within ``max_radius`` gets NaN and a warning (increase ``max_radius``).

    Args:
        model, loss_fn, inputs, targets: the loss landscape (as :func:`paperzoo.diagnostics.hessian_operator`).
        positions: shape ``(T, n)``, ``n`` the model's trainable parameter count, ``T >= 2``, not constant.
        k: directions, ``1 <= k <= min(T - 1, n)``.
        factor: the loss threshold as a multiple of :math:`L(\\bar\\theta)`, ``> 1``.
        max_radius: half-width of the scan in parameter units.
        num_points: scan points (odd keeps ``s = 0`` on the grid).

    Returns:
        A :class:`VarianceFlatness`.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
        >>> y = torch.tensor([[1.0], [1.0], [0.0]], dtype=torch.float64)
        >>> walk = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> r = variance_flatness(model, torch.nn.functional.mse_loss, x, y, walk * torch.tensor([1.0, 0.1]), 2)
        >>> r.variance.shape, r.converged
        (torch.Size([2]), True)
    """
    T, n = positions.shape
    theta0, sizes, shapes, dtype, out_fn, loss_of_out = _functional_model(model, loss_fn, inputs, targets)
    if n != sum(sizes):
        raise ValueError(f"positions must have n = {sum(sizes)} columns (the model's trainable parameter count), "
                         f"got shape {tuple(positions.shape)}")
    if T < 2:
        raise ValueError(f"positions must have T >= 2 time steps, got shape {tuple(positions.shape)}")
    if k > min(T - 1, n):
        raise ValueError(f"k must be <= min(T - 1, n) = {min(T - 1, n)} for positions of shape "
                         f"{tuple(positions.shape)}, got {k}")
    pca = _trajectory_pca(positions, k)
    center = positions.mean(0)

    def flat_loss(v):
        return loss_of_out(out_fn(_split(v, sizes, shapes))).reshape(())

    with torch.no_grad():
        L0 = float(flat_loss(center))
        if not (math.isfinite(L0) and L0 > 0):
            raise ValueError(f"the loss at the trajectory mean must be finite and > 0 for a relative threshold, "
                             f"got {L0!r}")
        s = torch.linspace(-max_radius, max_radius, num_points, dtype=dtype)
        pts = center + s[None, :, None] * pca.components[:, None, :]  # (k, S, n)
        losses = torch.func.vmap(flat_loss)(pts.reshape(-1, n)).reshape(k, num_points)
    flat = _widths(s, losses, factor * L0)
    converged = bool(torch.isfinite(flat).all())
    if not converged:
        warnings.warn(f"variance_flatness: {int((~torch.isfinite(flat)).sum())} of {k} directions did not reach "
                      f"{factor} x L(mean) within max_radius = {max_radius}; increase max_radius", RuntimeWarning,
                      stacklevel=2)
    ok = torch.isfinite(flat) & (pca.explained_variance > 0)
    slope = lo = hi = math.nan
    if int(ok.sum()) >= 2 and bool(pca.explained_variance[ok].unique().numel() >= 2):
        fit = fit_line(pca.explained_variance[ok].log(), flat[ok].log())
        slope, lo, hi = fit.slope, fit.ci_low, fit.ci_high
    return VarianceFlatness(pca.explained_variance, flat, pca.components, L0, slope, lo, hi, converged)


def _widths(s: torch.Tensor, losses: torch.Tensor, level: float) -> torch.Tensor:
    """Width of the interval around s = 0 where each row of ``losses`` stays <= ``level``; NaN if not crossed."""
    i0 = int(torch.argmin(s.abs()))
    above = losses > level  # (k, S)
    S = s.numel()
    idx = torch.arange(S)
    big = torch.full_like(idx, S)
    right = torch.where(above & (idx > i0), idx, big).min(1).values  # first index above, right side
    left = torch.where(above & (idx < i0), idx, torch.full_like(idx, -1)).max(1).values
    rows = torch.arange(losses.shape[0])

    def cross(j, inner):  # linear interpolation of the crossing between grid points inner and j
        jj, ii = j.clamp(0, S - 1), inner.clamp(0, S - 1)
        la, lb = losses[rows, ii], losses[rows, jj]
        t = ((level - la) / (lb - la)).clamp(0, 1)
        return s[ii] + t * (s[jj] - s[ii])

    s_plus = cross(right, right - 1)
    s_minus = cross(left, left + 1)
    width = s_plus - s_minus
    bad = (right >= S) | (left < 0) | above[:, i0]
    return torch.where(bad, torch.full_like(width, math.nan), width)
