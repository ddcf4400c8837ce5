"""Outlier eigenspaces of the empirical Hessian and G-matrix, and the SGD iterate's alignment with them.

References: High-dimensional SGD aligns with emerging outlier eigenspaces (Ben Arous, Gheissari, Huang,
Jagannath), 2024.

Notation. For per-sample losses :math:`L_i(\\theta) = \\ell(f_\\theta(x_i), y_i)` on a batch of :math:`N` points
(``loss_fn`` on one row of ``inputs`` and ``targets``), the empirical Hessian is
:math:`\\hat H = \\nabla^2 \\frac1N\\sum_i L_i` and the empirical G-matrix is the uncentred second moment of the
per-sample gradients,

.. math::
    \\hat G = \\frac1N \\sum_{i=1}^N \\nabla L_i \\, \\nabla L_i^\\top .

The paper shows, for :math:`k`-class Gaussian mixtures classified by one- and two-layer networks trained with
online SGD (step :math:`O(1/d)`, :math:`O(d)` steps), that :math:`\\hat H` and :math:`\\hat G` (per layer and, for
softmax regression, per class block :math:`(c, c)`) split into a bulk plus a few outlier eigenvalues, and that the
iterate lies, up to an error that vanishes as the signal-to-noise ratio grows, in the span of the outlier
eigenvectors. With :math:`V` the outlier eigenvectors as orthonormal rows, the alignment is

.. math::
    a(\\theta) = \\frac{\\|V\\theta\\|}{\\|\\theta\\|} \\in [0, 1],

whose value for a fixed vector and a uniformly random :math:`k`-dimensional subspace of :math:`\\mathbb R^n` is about
:math:`\\sqrt{k/n}` (:math:`a^2` has mean :math:`k/n`).

Outlier detection (:func:`count_outliers`), two documented rules on the sorted spectrum
:math:`\\lambda_1 \\ge \\lambda_2 \\ge \\dots`:

* ``"gap"``, after Onatski's edge-distribution rule (Determining the number of factors from empirical distribution
  of eigenvalues, 2010): near the bulk's upper edge the eigenvalues follow the square-root law,
  :math:`\\lambda_{j} \\approx e - c\\,(j - j_0)^{2/3}`; fit the slope :math:`\\hat c` by least squares on the
  :math:`m` (``fit_points``, default 10) eigenvalues :math:`\\lambda_{j}, \\dots, \\lambda_{j+m-1}` against
  :math:`(0, 1, \\dots, m-1)^{2/3}`, set :math:`\\delta = \\kappa|\\hat c|` (:math:`\\kappa` = ``gap_factor``,
  default 4) and count :math:`\\hat r = \\max\\{i \\le r_{\\max} : \\lambda_i - \\lambda_{i+1} > \\delta\\}` (0 if
  none); start at :math:`j = r_{\\max} + 1` and repeat with :math:`j = \\hat r + 1` until :math:`\\hat r` is stable.
  Onatski's choice is :math:`m = 5, \\kappa = 2`; on spiked and weighted Wishart matrices of 60 to 200 rows
  (:math:`N = 4n`, 0 or 4 spikes, 40 draws each) it miscounted 15-25% of draws (Tracy-Widom gaps at the edge
  exceed :math:`2|\\hat c|`), :math:`m = 10, \\kappa = 4` none, hence the defaults. No noise level is needed and any
  bulk with a square-root edge will do (weighted sample covariances such as :math:`\\hat H, \\hat G`, whose bulk
  is not Marchenko-Pastur). :math:`r_{\\max}` must be small against the matrix size (the fit must sit at the
  edge). The reported edge is :math:`\\lambda_{\\hat r + 1}`.
* ``"mp"``, the Marchenko-Pastur edge :math:`e = \\sigma^2 (1 + \\sqrt{\\gamma})^2` of a sample covariance of
  i.i.d. noise with variance :math:`\\sigma^2` and aspect ratio :math:`\\gamma = n/N` (matrix size over sample
  count): outliers are eigenvalues above :math:`e (1 + \\text{margin})`. :math:`\\sigma^2` is given or estimated as
  the mean of the eigenvalues that are not outliers (the trace of the bulk per dimension), iterated to a fixed
  point. Exact for a spiked Wishart matrix; for a weighted covariance (per-sample gradient weights) its bulk is
  wider than Marchenko-Pastur and the rule over-counts, so ``"gap"`` is the default.

:class:`OutlierTracker` records both matrices, their spectra per parameter block, the outlier counts and the
alignments over training (the paper's figures).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from paperzoo.core.accepts import (Choice, Function, Generator, Instance, Int, Module, Pair, Real, Tensor,
                                   accepts)
from paperzoo.diagnostics._tracking import CheckpointTracker
from paperzoo.diagnostics.gradient_noise import _per_sample_gradients, per_sample_gradients
from paperzoo.diagnostics.hessian import hessian_operator
from paperzoo.diagnostics.tiny_subspace import _random_subspace

__all__ = ["GMatrix", "OutlierCount", "OutlierEigenspace", "OutlierTrace", "OutlierTracker", "g_matrix",
           "count_outliers", "outlier_eigenspace", "outlier_alignment", "outlier_tracker"]

_METHODS = ("gap", "mp")
_FIT = 10  # default eigenvalues in the edge regression of the gap rule (Onatski, 2010, uses 5)
_GAP = 4.0  # default gap factor (Onatski: 2)


class GMatrix(NamedTuple):
    """Result of :func:`g_matrix`.

    Attributes:
        matrix: :math:`\\hat G`, shape ``(P, P)``, symmetric positive semi-definite.
        n_samples: :math:`N`, the number of per-sample gradients averaged.
        names: the trainable parameters' names, in the column order of ``matrix``.
        shapes: their shapes (parameter ``j`` occupies ``prod(shapes[j])`` consecutive columns).
    """

    matrix: torch.Tensor
    n_samples: int
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]


class OutlierCount(NamedTuple):
    """Result of :func:`count_outliers`.

    Attributes:
        count: the number of outlier eigenvalues (the largest ``count`` ones).
        edge: the estimated upper edge of the bulk (``"gap"``: the largest non-outlier eigenvalue; ``"mp"``:
            :math:`\\sigma^2(1+\\sqrt\\gamma)^2`).
        threshold: ``"gap"``: the gap :math:`\\delta` an outlier's spacing must exceed; ``"mp"``: the value an
            outlier must exceed, ``edge * (1 + margin)``.
        noise_variance: ``"mp"``: :math:`\\sigma^2` (given or estimated); ``"gap"``: ``None``.
        method: ``"gap"`` or ``"mp"``.
        n_iter: fixed-point iterations run.
        converged: whether the iteration reached a fixed point.
    """

    count: int
    edge: float
    threshold: float
    noise_variance: float | None
    method: str
    n_iter: int
    converged: bool


class OutlierEigenspace(NamedTuple):
    """Result of :func:`outlier_eigenspace`.

    Attributes:
        eigenvalues: all eigenvalues, largest first, shape ``(n,)``.
        eigenvectors: the ``count`` outlier eigenvectors as orthonormal rows, largest first, shape ``(count, n)``.
        outliers: the :class:`OutlierCount` of the spectrum.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    outliers: OutlierCount


# -- the G-matrix -------------------------------------------------------------------------------------------------

def _example_g(ctx):
    g = ctx.generator
    model = torch.nn.Linear(3, 2, bias=False).to(ctx.dtype)
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, 3, generator=g, dtype=ctx.dtype))
    return {"model": model, "loss_fn": torch.nn.functional.cross_entropy,
            "inputs": torch.randn(6, 3, generator=g, dtype=ctx.dtype), "targets": torch.tensor([0, 1, 0, 1, 1, 0])}


_DATA_SPECS = dict(model=Module(bind_dtype=True), loss_fn=Function(),
                   inputs=Tensor(ndims=tuple(range(1, 9)), dtype="any", degenerate=("coincident",)),
                   targets=Tensor(ndims=tuple(range(1, 9)), dtype="any"))


def _g_from_grads(grads: torch.Tensor) -> torch.Tensor:
    G = grads.T @ grads / grads.shape[0]
    return (G + G.T) / 2


@accepts(**_DATA_SPECS, chunk_size=Int(ge=1, optional=True), example=_example_g)
def g_matrix(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             inputs: torch.Tensor, targets: torch.Tensor, *, chunk_size: int | None = None) -> GMatrix:
    """The empirical G-matrix :math:`\\hat G = \\frac1N\\sum_i \\nabla L_i \\nabla L_i^\\top` of a model's loss.

    References: High-dimensional SGD aligns with emerging outlier eigenspaces (Ben Arous, Gheissari, Huang,
    Jagannath), 2024.

    The per-sample gradients :math:`\\nabla L_i` (rows of an ``(N, P)`` matrix) come from
    :func:`paperzoo.diagnostics.gradient_noise.per_sample_gradients` (``torch.func.vmap`` of ``grad``), so
    :math:`\\hat G = J^\\top J / N`, uncentred (the paper's second moment, not the covariance). A regulariser belongs
    outside ``loss_fn``: its gradient would add the direction of :math:`\\theta` itself to :math:`\\hat G`.

    Args:
        model: :math:`f_\\theta` (its parameters that require grad, in ``named_parameters`` order, are
            :math:`\\theta`); rows of a batch must be treated independently.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, the mean loss :math:`\\ell` over the batch.
        inputs: shape ``(N, ...)``. targets: shape ``(N, ...)``.
        chunk_size: samples per vectorized chunk (``None``: all at once).

    Returns:
        :class:`GMatrix` (``matrix`` of shape ``(P, P)``, ``n_samples``, ``names``, ``shapes``).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(0.0)
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
        >>> y = torch.ones(2, 1, dtype=torch.float64)
        >>> g_matrix(model, torch.nn.functional.mse_loss, x, y).matrix.tolist()   # rows (-2, 0) and (0, -4)
        [[2.0, 0.0], [0.0, 8.0]]
    """
    ps = per_sample_gradients(model, loss_fn, inputs, targets, chunk_size=chunk_size)
    return GMatrix(_g_from_grads(ps.grads), int(inputs.shape[0]), ps.names, ps.shapes)


# -- outlier detection --------------------------------------------------------------------------------------------

def _gap_rule(lam: torch.Tensor, r_max: int, fit_points: int, gap_factor: float) -> OutlierCount:
    x = torch.arange(fit_points, dtype=lam.dtype) ** (2.0 / 3.0)
    xc = x - x.mean()
    gaps = lam[:r_max] - lam[1:r_max + 1]
    j, count, converged, n_iter = r_max, -1, False, 0
    delta = float("nan")
    for n_iter in range(1, r_max + 3):
        y = lam[j:j + fit_points]
        slope = float((xc * (y - y.mean())).sum() / xc.square().sum())
        delta = gap_factor * abs(slope)
        above = torch.nonzero(gaps > delta).flatten()
        new = int(above[-1]) + 1 if len(above) else 0
        if new == count:
            converged = True
            break
        count, j = new, new
    edge = float(lam[count])
    return OutlierCount(count, edge, delta, None, "gap", n_iter, converged)


def _mp_rule(lam: torch.Tensor, aspect_ratio: float, noise_variance, margin: float, r_max: int) -> OutlierCount:
    factor = (1.0 + math.sqrt(aspect_ratio)) ** 2
    n = lam.numel()
    total = float(lam.sum())
    count, converged, n_iter = 0, False, 0
    sigma2 = noise_variance
    for n_iter in range(1, n + 2):
        if noise_variance is None:
            sigma2 = max((total - float(lam[:count].sum())) / (n - count), 0.0)
        threshold = sigma2 * factor * (1.0 + margin)
        new = min(int((lam > threshold).sum()), r_max)
        if new == count and n_iter > 1:
            converged = True
            break
        count = new
        if noise_variance is not None:
            converged = True
            break
    return OutlierCount(count, sigma2 * factor, sigma2 * factor * (1.0 + margin), float(sigma2), "mp", n_iter,
                        converged)


def _count_outliers(eigenvalues, method, max_outliers, aspect_ratio, noise_variance, margin,
                    fit_points=_FIT, gap_factor=_GAP) -> OutlierCount:
    lam = torch.sort(eigenvalues.detach().reshape(-1), descending=True).values
    n = lam.numel()
    if method == "gap":
        r_max = max_outliers if max_outliers is not None else max(n - fit_points - 1, 0)
        if n < r_max + fit_points + 1:
            raise ValueError(f"eigenvalues must have at least max_outliers + fit_points + 1 = "
                             f"{r_max + fit_points + 1} entries for the gap rule, got {n}")
        return _gap_rule(lam, r_max, fit_points, gap_factor)
    if aspect_ratio is None:
        raise ValueError("aspect_ratio must be given for method='mp' (matrix size / number of samples), got None")
    r_max = n - 1 if max_outliers is None else min(max_outliers, n - 1)
    return _mp_rule(lam, aspect_ratio, noise_variance, margin, r_max)


@accepts(eigenvalues=Tensor("n"), method=Choice(*_METHODS), max_outliers=Int(ge=0, optional=True),
         aspect_ratio=Real(gt=0, optional=True), noise_variance=Real(gt=0, optional=True), margin=Real(ge=0),
         fit_points=Int(ge=2), gap_factor=Real(gt=0),
         example=lambda ctx: {"eigenvalues": torch.cat([torch.tensor([9.0, 7.0], dtype=ctx.dtype),
                                                        torch.linspace(1.0, 0.1, 16, dtype=ctx.dtype)]),
                              "max_outliers": 4})
def count_outliers(eigenvalues: torch.Tensor, *, method: str = "gap", max_outliers: int | None = None,
                   aspect_ratio: float | None = None, noise_variance: float | None = None,
                   margin: float = 0.05, fit_points: int = _FIT, gap_factor: float = _GAP) -> OutlierCount:
    """The number of outlier eigenvalues above the bulk of a spectrum (gap rule or Marchenko-Pastur edge).

    References: High-dimensional SGD aligns with emerging outlier eigenspaces (Ben Arous, Gheissari, Huang,
    Jagannath), 2024 (the outliers); Determining the number of factors from empirical distribution of eigenvalues
    (Onatski), 2010 (the ``"gap"`` rule).

    The two rules are stated in the module docstring. ``"gap"``: outliers are the eigenvalues before the last
    spacing :math:`\\lambda_i - \\lambda_{i+1}` (``i <= max_outliers``) that exceeds twice the fitted edge slope.
    ``"mp"``: outliers are the eigenvalues above :math:`\\sigma^2(1+\\sqrt\\gamma)^2(1+\\text{margin})`.

    Args:
        eigenvalues: the spectrum of a symmetric matrix, shape ``(n,)``, any order.
        method: ``"gap"`` (default) or ``"mp"``.
        max_outliers: :math:`r_{\\max}`, the most outliers reported (``"gap"``: the candidates searched, small
            against ``n``; needs ``n >= max_outliers + fit_points + 1``; default the largest allowed). ``"mp"``: a
            cap (default none).
        aspect_ratio: ``"mp"`` only (required): :math:`\\gamma` = matrix size / number of samples.
        noise_variance: ``"mp"`` only: :math:`\\sigma^2`; ``None`` estimates it from the bulk's mean.
        margin: ``"mp"`` only: relative margin above the edge (default 0.05, several Tracy-Widom widths for
            matrices of a few hundred rows).
        fit_points, gap_factor: ``"gap"`` only: :math:`m` (``>= 2``) and :math:`\\kappa` (``> 0``).

    Returns:
        :class:`OutlierCount` (``count``, ``edge``, ``threshold``, ``noise_variance``, ``method``, ``n_iter``,
        ``converged``).

    Example:
        >>> import torch
        >>> lam = torch.cat([torch.tensor([9.0, 7.0]), 1 - torch.linspace(0, 1, 20) ** 1.5])
        >>> count_outliers(lam, max_outliers=5).count
        2
    """
    if method == "gap" and (aspect_ratio is not None or noise_variance is not None):
        raise ValueError("aspect_ratio and noise_variance must be None for method='gap' (they belong to 'mp')")
    return _count_outliers(eigenvalues, method, max_outliers, aspect_ratio, noise_variance, margin, fit_points,
                           gap_factor)


def _symmetric_eigh(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lam, U = torch.linalg.eigh((matrix + matrix.T) / 2)
    return lam.flip(0), U.flip(1).T.contiguous()


@accepts(matrix=Tensor("n", "n", symmetric=True), method=Choice(*_METHODS), max_outliers=Int(ge=0, optional=True),
         aspect_ratio=Real(gt=0, optional=True), noise_variance=Real(gt=0, optional=True), margin=Real(ge=0),
         example=lambda ctx: {"matrix": torch.diag(torch.cat([torch.tensor([9.0, 7.0], dtype=ctx.dtype),
                                                              torch.linspace(1.0, 0.1, 16, dtype=ctx.dtype)])),
                              "max_outliers": 4})
def outlier_eigenspace(matrix: torch.Tensor, *, method: str = "gap", max_outliers: int | None = None,
                       aspect_ratio: float | None = None, noise_variance: float | None = None,
                       margin: float = 0.05) -> OutlierEigenspace:
    """The outlier eigenvalues of a symmetric matrix and their eigenvectors (``torch.linalg.eigh``).

    References: High-dimensional SGD aligns with emerging outlier eigenspaces (Ben Arous, Gheissari, Huang,
    Jagannath), 2024.

    The full spectrum (largest first), the :func:`count_outliers` result (arguments as there), and the top
    ``count`` eigenvectors as orthonormal rows: :math:`V` in :math:`a(\\theta) = \\|V\\theta\\|/\\|\\theta\\|`.

    Args:
        matrix: symmetric, shape ``(n, n)`` (e.g. :func:`g_matrix`'s ``matrix`` or a dense Hessian block).

    Returns:
        :class:`OutlierEigenspace` (``eigenvalues`` ``(n,)``, ``eigenvectors`` ``(count, n)``, ``outliers``).

    Example:
        >>> import torch
        >>> A = torch.diag(torch.cat([torch.tensor([9.0, 7.0]), 1 - torch.linspace(0, 1, 20) ** 1.5])).double()
        >>> res = outlier_eigenspace(A, max_outliers=5)
        >>> res.outliers.count, res.eigenvectors.shape
        (2, torch.Size([2, 22]))
    """
    if method == "gap" and (aspect_ratio is not None or noise_variance is not None):
        raise ValueError("aspect_ratio and noise_variance must be None for method='gap' (they belong to 'mp')")
    lam, V = _symmetric_eigh(matrix)
    res = _count_outliers(lam, method, max_outliers, aspect_ratio, noise_variance, margin)
    return OutlierEigenspace(lam, V[:res.count], res)


# -- alignment ----------------------------------------------------------------------------------------------------

def _alignment(theta: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """``||V theta|| / ||theta||`` over the last axis, unchecked (NaN for a zero ``theta``)."""
    num = (theta @ V.T).square().sum(-1)
    den = theta.square().sum(-1)
    return (num / den).sqrt()


def _example_alignment(ctx):
    g = ctx.generator
    V = torch.linalg.qr(torch.randn(5, 2, generator=g, dtype=ctx.dtype)).Q.T.contiguous()
    return {"theta": torch.randn(5, generator=g, dtype=ctx.dtype), "eigenvectors": V}


@accepts(theta=Tensor(..., "n"), eigenvectors=Tensor("k", "n", allow_empty=True), example=_example_alignment)
def outlier_alignment(theta: torch.Tensor, eigenvectors: torch.Tensor) -> torch.Tensor:
    """The alignment of parameters with an eigenspace, :math:`\\|V\\theta\\| / \\|\\theta\\|`.

    References: High-dimensional SGD aligns with emerging outlier eigenspaces (Ben Arous, Gheissari, Huang,
    Jagannath), 2024.

    :math:`V` = ``eigenvectors`` holds the outlier eigenvectors as orthonormal rows (e.g.
    :attr:`OutlierEigenspace.eigenvectors`), so :math:`V^\\top V` is the projector :math:`P_{\\text{out}}` and the
    alignment is :math:`\\|P_{\\text{out}}\\theta\\|/\\|\\theta\\| \\in [0, 1]`: 1 for :math:`\\theta` in the span,
    about :math:`\\sqrt{k/n}` for a random direction (its square has mean :math:`k/n`), 0 for an empty space
    (``k = 0``: no outliers).

    Args:
        theta: :math:`\\theta`, shape ``(..., n)`` (e.g. ``(T, n)`` for a trajectory); none may be zero.
        eigenvectors: :math:`V`, shape ``(k, n)`` with orthonormal rows (to ``1e-8`` in float64, ``1e-4`` in
            float32), ``0 <= k <= n``.

    Returns:
        The alignment, shape ``(...)``.

    Example:
        >>> import torch
        >>> V = torch.eye(3, dtype=torch.float64)[:1]
        >>> float(outlier_alignment(torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64), V))
        0.6
    """
    k, n = eigenvectors.shape
    if k > n:
        raise ValueError(f"eigenvectors must have at most n = {n} rows (an orthonormal set), got {k}")
    if k:
        gram = eigenvectors @ eigenvectors.T
        dev = float((gram - torch.eye(k, dtype=gram.dtype, device=gram.device)).abs().max())
        if dev > (1e-8 if eigenvectors.dtype == torch.float64 else 1e-4):
            raise ValueError(f"eigenvectors must have orthonormal rows (V V^T = I), got a deviation of {dev:.3g}")
    if bool((theta.square().sum(-1) == 0).any()):
        raise ValueError("theta must be nonzero (the alignment is a fraction of its norm), got a zero vector")
    return _alignment(theta, eigenvectors)


# -- tracking over training ---------------------------------------------------------------------------------------

class OutlierTrace(NamedTuple):
    """What :class:`OutlierTracker` recorded over ``T`` checkpoints and ``B`` parameter blocks.

    Attributes:
        steps: the step of each checkpoint, shape ``(T,)`` int64.
        blocks: the ``(start, stop)`` column range of each block in the flat parameter vector.
        hessian_eigenvalues: per block, the spectrum of the Hessian block, largest first, shape ``(T, n_b)``.
        g_eigenvalues: the same for the G-matrix block.
        hessian_count, g_count: the outlier counts (:func:`count_outliers` with the tracker's rule), ``(T, B)``.
        hessian_alignment, g_alignment: :math:`\\|V_r\\theta_b\\|/\\|\\theta_b\\|` with :math:`V_r` the top-``rank``
            eigenvectors of the block (the predicted outlier space), shape ``(T, B)``.
        hessian_outlier_alignment, g_outlier_alignment: the same with the detected outlier eigenvectors (0 when
            none are detected), shape ``(T, B)``.
        hessian_total_alignment, g_total_alignment: :math:`\\sqrt{\\sum_b \\|V_{r,b}\\theta_b\\|^2 / \\sum_b
            \\|\\theta_b\\|^2}`, the alignment of the whole (blocked) parameter vector, shape ``(T,)``.
        random_alignment: the alignment of :math:`\\theta_b` with a fresh uniformly random ``rank``-dimensional
            subspace of the block (chance level about :math:`\\sqrt{r/n_b}`), shape ``(T, B)``.
        theta: the flat parameters at each checkpoint, shape ``(T, P)``.
        losses: the mean loss on the measurement batch, shape ``(T,)``.
    """

    steps: torch.Tensor
    blocks: tuple[tuple[int, int], ...]
    hessian_eigenvalues: tuple[torch.Tensor, ...]
    g_eigenvalues: tuple[torch.Tensor, ...]
    hessian_count: torch.Tensor
    g_count: torch.Tensor
    hessian_alignment: torch.Tensor
    g_alignment: torch.Tensor
    hessian_outlier_alignment: torch.Tensor
    g_outlier_alignment: torch.Tensor
    hessian_total_alignment: torch.Tensor
    g_total_alignment: torch.Tensor
    random_alignment: torch.Tensor
    theta: torch.Tensor
    losses: torch.Tensor


def _example_tracker(ctx):
    g = ctx.generator
    model = torch.nn.Linear(6, 2, bias=False).to(ctx.dtype)
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, 6, generator=g, dtype=ctx.dtype))
    x = torch.randn(16, 6, generator=g, dtype=ctx.dtype)
    return {"model": model, "loss_fn": torch.nn.functional.cross_entropy,
            "data": (x, torch.randint(0, 2, (16,), generator=g)), "rank": 1, "max_outliers": 1}


_DATA = Pair(Tensor(ndims=tuple(range(1, 9)), dtype="any"), meaning="(inputs, targets)")
_TRACKER_SPECS = dict(model=Module(bind_dtype=True), loss_fn=Function(), data=_DATA, rank=Int(ge=1),
                      every=Int(ge=1), blocks=Instance(Sequence, what="a sequence of (start, stop) pairs",
                                                       optional=True),
                      method=Choice(*_METHODS), max_outliers=Int(ge=0, optional=True), margin=Real(ge=0),
                      generator=Generator())


class OutlierTracker(CheckpointTracker):
    """Records the Hessian and G-matrix spectra, outlier counts and the iterate's alignment during training.

    References: High-dimensional SGD aligns with emerging outlier eigenspaces (Ben Arous, Gheissari, Huang,
    Jagannath), 2024.

    Call it once per step (``tracker(step)``, after ``optimizer.step()``); at steps divisible by ``every`` it
    measures the model as it is then (:meth:`record` measures at once). A measurement builds, on the fixed batch
    ``data``, the dense Hessian (``P`` products of :func:`~paperzoo.diagnostics.hessian.hessian_operator`, mapped
    in one ``vmap``) and :math:`\\hat G` (:func:`g_matrix`'s kernel), takes for every block ``(start, stop)`` the
    diagonal sub-blocks :math:`\\hat H_{bb}, \\hat G_{bb}`, their spectra (``torch.linalg.eigh``), the outlier counts
    (``method``, ``max_outliers``, ``margin``; for ``"mp"`` the aspect ratio is ``n_b / N``) and the alignments of
    :math:`\\theta_b` (the definitions are in :class:`OutlierTrace`). Meant for ``P`` up to a few thousand.

    Args:
        model: the network being trained (read, never changed); rows of a batch treated independently.
        loss_fn: ``loss_fn(outputs, targets)`` -> finite scalar, the mean data loss (no regulariser; see
            :func:`g_matrix`).
        data: ``(inputs, targets)``, the fixed measurement batch (fresh samples: the paper's test data).
        rank: the dimension of the predicted outlier space (the top-``rank`` eigenvectors), ``<= n_b`` for every
            block.
        every: measure at steps divisible by ``every``.
        blocks: ``(start, stop)`` column ranges of the flat parameter vector (``named_parameters`` order), e.g.
            the rows of a softmax-regression weight (one per class); default one block, the whole vector.
        method, max_outliers, margin: the outlier rule (:func:`count_outliers` with its default ``fit_points``
            and ``gap_factor``; ``max_outliers`` defaults to ``min(2 rank, n_b - 11)`` for ``"gap"``).
        generator: for the random control subspaces.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0); model = torch.nn.Linear(12, 2, bias=False).double()
        >>> x, y = torch.randn(48, 12, dtype=torch.float64), torch.randint(0, 2, (48,))
        >>> tracker = OutlierTracker(model, torch.nn.functional.cross_entropy, (x, y), rank=1, every=5,
        ...                          blocks=[(0, 12), (12, 24)], max_outliers=1)
        >>> recorded = [tracker(step) for step in range(11)]
        >>> tr = tracker.result(); tr.steps.tolist(), tr.hessian_count.shape, tr.g_eigenvalues[0].shape
        ([0, 5, 10], torch.Size([3, 2]), torch.Size([3, 12]))
    """

    @accepts(**_TRACKER_SPECS, example=_example_tracker)
    def __init__(self, model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 data: tuple[torch.Tensor, torch.Tensor], rank: int, every: int = 1, *,
                 blocks: Sequence[tuple[int, int]] | None = None, method: str = "gap",
                 max_outliers: int | None = None, margin: float = 0.05,
                 generator: torch.Generator | None = None):
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("model must have parameters that require grad, got none")
        self.dtype = named[0][1].dtype
        if self.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"model must have float32 or float64 parameters, got {self.dtype}")
        self.n = sum(p.numel() for _, p in named)
        inputs, targets = data
        if targets.shape[0] != inputs.shape[0]:
            raise ValueError(f"data[1] must have {inputs.shape[0]} rows (one per row of data[0]), got shape "
                             f"{tuple(targets.shape)}")
        if inputs.is_floating_point() and inputs.dtype != self.dtype:
            raise TypeError(f"data[0] must have the dtype of the model's parameters ({self.dtype}), got "
                            f"{inputs.dtype}")
        blocks = [(0, self.n)] if blocks is None else list(blocks)
        if not blocks:
            raise ValueError("blocks must name at least one (start, stop) range, got none")
        for i, b in enumerate(blocks):
            ok = (isinstance(b, (tuple, list)) and len(b) == 2
                  and all(isinstance(v, int) and not isinstance(v, bool) for v in b))
            if not ok or not 0 <= b[0] < b[1] <= self.n:
                raise ValueError(f"blocks[{i}] must be a pair (start, stop) of ints with 0 <= start < stop <= "
                                 f"{self.n} (the parameter count), got {b!r}")
            if rank > b[1] - b[0]:
                raise ValueError(f"rank must be <= the size of every block, got {rank} > {b[1] - b[0]} "
                                 f"(blocks[{i}])")
            if method == "gap" and b[1] - b[0] < (max_outliers or 0) + _FIT + 1:
                raise ValueError(f"blocks[{i}] must hold max_outliers + {_FIT + 1} entries at least for the gap "
                                 f"rule (an edge fit on {_FIT} bulk eigenvalues), got {b[1] - b[0]} with "
                                 f"max_outliers = {max_outliers}")
        self.blocks = tuple((int(a), int(b)) for a, b in blocks)
        self.model, self.loss_fn, self.inputs, self.targets = model, loss_fn, inputs, targets
        self.rank, self.every, self.method, self.max_outliers, self.margin = rank, every, method, max_outliers, margin
        self.generator = generator
        self._records: list[tuple] = []

    def _r_max(self, size: int) -> int:
        if self.max_outliers is not None:
            return self.max_outliers
        return max(min(2 * self.rank, size - _FIT - 1), 0) if self.method == "gap" else size - 1

    def _measure(self, step: int) -> None:
        if self._records and step <= self._records[-1][0]:
            raise ValueError(f"step must increase from one checkpoint to the next (last {self._records[-1][0]}), "
                             f"got {step}")
        matvec, n = hessian_operator(self.model, self.loss_fn, self.inputs, self.targets, mode="reverse")
        H = matvec(torch.eye(n, dtype=self.dtype, device=self.inputs.device if self.inputs.is_floating_point()
                             else None))
        H = (H + H.T) / 2
        G = _g_from_grads(_per_sample_gradients(self.model, self.loss_fn, self.inputs, self.targets, None).grads)
        if not (bool(torch.isfinite(H).all()) and bool(torch.isfinite(G).all())):
            raise ValueError(f"loss_fn must have a finite Hessian and gradients at the model's parameters, got NaN "
                             f"or inf at step {step}")
        params = [p for _, p in self.model.named_parameters() if p.requires_grad]
        theta = torch.cat([p.detach().reshape(-1) for p in params])
        with torch.no_grad():
            loss = float(self.loss_fn(self.model(self.inputs), self.targets))
        rows = []
        N = self.inputs.shape[0]
        for a, b in self.blocks:
            th = theta[a:b]
            row = [th]
            for M in (H[a:b, a:b], G[a:b, a:b]):
                lam, V = _symmetric_eigh(M)
                ratio = (b - a) / N if self.method == "mp" else None
                cnt = _count_outliers(lam, self.method, self._r_max(b - a), ratio, None, self.margin).count
                row += [lam, cnt, (th @ V[:self.rank].T).square().sum(), (th @ V[:cnt].T).square().sum()]
            R = _random_subspace(b - a, self.rank, self.generator, self.dtype).to(th.device)
            row.append((th @ R.T).square().sum())
            rows.append(row)
        self._records.append((step, theta.clone(), loss, rows))

    def result(self) -> OutlierTrace:
        """The :class:`OutlierTrace` of every checkpoint recorded so far (at least one)."""
        if not self._records:
            raise ValueError("tracker has recorded no checkpoint yet: call it with a step divisible by every, or "
                             "call record(step)")
        steps = torch.tensor([r[0] for r in self._records], dtype=torch.int64)
        theta = torch.stack([r[1] for r in self._records])
        losses = torch.tensor([r[2] for r in self._records], dtype=self.dtype)

        def field(i):
            return [[row[i] for row in r[3]] for r in self._records]   # [T][B]

        sq = torch.stack([torch.stack([row[0].square().sum() for row in r[3]]) for r in self._records])  # (T, B)
        safe = torch.where(sq == 0, torch.full_like(sq, float("nan")), sq)

        def ratio(i):
            return (torch.stack([torch.stack(v) for v in field(i)]) / safe).sqrt()

        def total(i):
            num = torch.stack([torch.stack(v) for v in field(i)]).sum(-1)
            den = sq.sum(-1)
            return (num / torch.where(den == 0, torch.full_like(den, float("nan")), den)).sqrt()

        B = len(self.blocks)
        h_eigs = tuple(torch.stack([r[3][bi][1] for r in self._records]) for bi in range(B))
        g_eigs = tuple(torch.stack([r[3][bi][5] for r in self._records]) for bi in range(B))
        h_count = torch.tensor(field(2), dtype=torch.int64)
        g_count = torch.tensor(field(6), dtype=torch.int64)
        return OutlierTrace(steps, self.blocks, h_eigs, g_eigs, h_count, g_count, ratio(3), ratio(7), ratio(4),
                            ratio(8), total(3), total(7), ratio(9), theta, losses)


@accepts(**_TRACKER_SPECS, example=_example_tracker)
def outlier_tracker(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    data: tuple[torch.Tensor, torch.Tensor], rank: int, every: int = 1, *,
                    blocks: Sequence[tuple[int, int]] | None = None, method: str = "gap",
                    max_outliers: int | None = None, margin: float = 0.05,
                    generator: torch.Generator | None = None) -> OutlierTracker:
    """An :class:`OutlierTracker` of the Hessian and G-matrix outlier eigenspaces of ``loss_fn`` on ``data``, every
    ``every`` steps: the training-loop callback of the paper's measurements (arguments as the class's).

    References: High-dimensional SGD aligns with emerging outlier eigenspaces (Ben Arous, Gheissari, Huang,
    Jagannath), 2024.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0); model = torch.nn.Linear(3, 2, bias=False).double()
        >>> x, y = torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 2, (16,))
        >>> tracker = outlier_tracker(model, torch.nn.functional.cross_entropy, (x, y), 6, method="mp")
        >>> tracker(0)
        True
        >>> round(float(tracker.result().hessian_alignment[0, 0]), 8)   # rank = P: the whole space
        1.0
    """
    return OutlierTracker(model, loss_fn, data, rank, every, blocks=blocks, method=method, max_outliers=max_outliers,
                          margin=margin, generator=generator)
