"""Neural collapse (NC1 to NC4) and the geometry of class means against the simplex equiangular tight frame.

References: Prevalence of neural collapse during the terminal phase of deep learning training (Papyan, Han,
Donoho), 2020 (the four properties and their measures); Neural Collapse in Deep Linear Networks: From Balanced to
Imbalanced Data (Dang, Tran, Osher, Tran-The, Ho, Nguyen), 2023 (the same NC1 under class imbalance).

From penultimate features :math:`h_i` (rows of ``H``) with labels :math:`y_i` and, optionally, the last layer
:math:`(W, b)`:

- class means :math:`\\mu_c`, global mean :math:`\\mu_G`, centred means :math:`M = [\\mu_c - \\mu_G]_c`;
- NC1, within-class variability collapse: :math:`\\operatorname{tr}(\\Sigma_W \\Sigma_B^+)/C`, and the plain ratio
  :math:`\\operatorname{tr}\\Sigma_W / \\operatorname{tr}\\Sigma_B`;
- NC2, convergence to a simplex ETF: equal norms, equal angles (cosines :math:`-1/(C-1)`), and the distance of the
  normalised Gram matrix to the ETF's :math:`\\frac{C}{C-1}(I - \\mathbf 1\\mathbf 1^\\top / C)`;
- NC3, self-duality: :math:`\\| W/\\|W\\|_F - M/\\|M\\|_F \\|_F^2`;
- NC4, the nearest-class-centre rule agreeing with the network's own decisions.

:func:`neural_collapse_metrics` computes all of them in one pass (no loop over classes; never a ``(d, d)``
matrix: :math:`\\Sigma_B^+` acts through the singular vectors of :math:`M`), :func:`class_mean_geometry` returns
the means, Gram matrix, cosines and angles, :func:`simplex_etf` builds an exact ETF.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from paperzoo.core.accepts import Choice, FloatDType, Generator, Int, Real, Tensor, accepts

__all__ = ["NeuralCollapseMetrics", "ClassMeanGeometry", "neural_collapse_metrics", "class_mean_geometry",
           "simplex_etf"]

_WEIGHTINGS = ("samples", "classes")


class ClassMeanGeometry(NamedTuple):
    """Result of :func:`class_mean_geometry`.

    Attributes:
        means: class means :math:`\\mu_c`, shape ``(C, d)``.
        global_mean: :math:`\\mu_G`, shape ``(d,)``.
        centred_means: :math:`M`, rows :math:`\\mu_c - \\mu_G`, shape ``(C, d)``.
        counts: samples per class :math:`n_c`, shape ``(C,)`` (int64).
        gram: :math:`M M^\\top`, shape ``(C, C)``.
        cosines: cosines between centred means, shape ``(C, C)`` (unit diagonal).
        angles: the angles in radians, shape ``(C, C)`` (zero diagonal).
    """

    means: torch.Tensor
    global_mean: torch.Tensor
    centred_means: torch.Tensor
    counts: torch.Tensor
    gram: torch.Tensor
    cosines: torch.Tensor
    angles: torch.Tensor


class NeuralCollapseMetrics(NamedTuple):
    """Result of :func:`neural_collapse_metrics`; every measure is 0 at exact collapse (``nc4_agreement`` is 1).

    The ``*_classifier`` fields and ``nc3_self_duality`` are ``None`` without ``W``; ``nc4_agreement`` is ``None``
    without ``W`` or ``logits``.

    Attributes:
        nc1: :math:`\\operatorname{tr}(\\Sigma_W \\Sigma_B^+)/C`.
        within_class_ratio: :math:`\\operatorname{tr}\\Sigma_W / \\operatorname{tr}\\Sigma_B`.
        equinorm_means: coefficient of variation (population std over mean) of :math:`\\|\\mu_c - \\mu_G\\|`.
        equinorm_classifier: the same for the rows :math:`\\|w_c\\|`.
        equiangular_means: population std of the cosines over the pairs :math:`c < c'` of centred means.
        max_angle_means: mean over those pairs of :math:`|\\cos + 1/(C-1)|`.
        equiangular_classifier, max_angle_classifier: the same for the rows of ``W``.
        etf_distance_means: :math:`\\|C\\, MM^\\top/\\operatorname{tr}(MM^\\top) - \\frac{C}{C-1}(I - \\mathbf 1
            \\mathbf 1^\\top/C)\\|_F`.
        etf_distance_classifier: the same with :math:`WW^\\top`.
        nc3_self_duality: :math:`\\|W/\\|W\\|_F - M/\\|M\\|_F\\|_F^2`.
        nc4_agreement: fraction of samples on which the nearest class mean (Euclidean) names the class the model
            predicts (``argmax`` of ``logits``, else of :math:`HW^\\top + b`).
        ncc_accuracy: fraction of samples the nearest-class-mean rule labels correctly.
        num_classes: :math:`C`.
        sigma_b_rank: eigenvalues of :math:`\\Sigma_B` kept in its pseudo-inverse (at most ``C - 1``: the
            centred means satisfy :math:`\\sum_c n_c M_c = 0`, or :math:`\\sum_c M_c = 0` with
            ``weighting="classes"``).
        counts: samples per class, shape ``(C,)`` (int64).
    """

    nc1: float
    within_class_ratio: float
    equinorm_means: float
    equinorm_classifier: float | None
    equiangular_means: float
    max_angle_means: float
    equiangular_classifier: float | None
    max_angle_classifier: float | None
    etf_distance_means: float
    etf_distance_classifier: float | None
    nc3_self_duality: float | None
    nc4_agreement: float | None
    ncc_accuracy: float
    num_classes: int
    sigma_b_rank: int
    counts: torch.Tensor


def _example(ctx):
    """Three classes, every one present, features a little spread around separated means; a last layer."""
    g, C = ctx.generator, 3
    n, d = C + ctx.size("n"), ctx.size("d") + 1
    y = torch.arange(n) % C
    centres = 3.0 * torch.randn(C, d, generator=g, dtype=ctx.dtype)
    H = centres[y] + torch.randn(n, d, generator=g, dtype=ctx.dtype)
    return {"H": H, "y": y, "W": torch.randn(C, d, generator=g, dtype=ctx.dtype),
            "b": torch.randn(C, generator=g, dtype=ctx.dtype)}


def _num_classes(y: torch.Tensor, num_classes: int | None, W, logits) -> tuple[int, str]:
    """``C`` and where it came from; every source given must agree."""
    sources = []
    if num_classes is not None:
        sources.append((num_classes, "num_classes"))
    if W is not None:
        sources.append((W.shape[0], "W"))
    if logits is not None:
        sources.append((logits.shape[1], "logits"))
    if not sources:
        return int(y.max()) + 1, "y"
    C, source = sources[0]
    for other, name in sources[1:]:
        if other != C:
            raise ValueError(f"{name} must give the number of classes of {source} ({C}), got {other}")
    return C, source


def _geometry(H: torch.Tensor, y: torch.Tensor, C: int, source: str, weighting: str):
    """Class means, counts and the per-sample weights of :math:`\\Sigma_W` (vectorised; validates the labels)."""
    if C < 2:
        raise ValueError(f"y must contain at least 2 classes (neural collapse compares classes), got {C} from "
                         f"{source}")
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= C:
        raise ValueError(f"y must have entries in [0, {C - 1}] (C = {C} from {source}), got entries in "
                         f"[{low}, {high}]")
    y = y.long()
    counts = torch.bincount(y, minlength=C)
    missing = (counts == 0).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f"y must contain every class at least once (a class mean is needed), got no samples of "
                         f"class(es) {missing} of C = {C}")
    n_c = counts.to(H.dtype)
    means = H.new_zeros(C, H.shape[1]).index_add_(0, y, H) / n_c[:, None]
    if weighting == "samples":
        global_mean = H.mean(0)
        weights = torch.full_like(H[:, 0], 1.0 / H.shape[0])
    else:
        global_mean = means.mean(0)
        weights = 1.0 / (C * n_c[y])
    return y, counts, means, global_mean, weights


def _cosines(X: torch.Tensor, what: str) -> torch.Tensor:
    norms = torch.linalg.vector_norm(X, dim=1)
    # Scale-relative test: a row that is zero up to rounding has no direction.
    zero = (norms <= torch.finfo(X.dtype).eps * norms.max()).nonzero().flatten().tolist()
    if zero:
        raise ValueError(f"{what} must have rows of nonzero norm (a direction is needed for the angles), got "
                         f"zero rows {zero}")
    U = X / norms[:, None]
    cos = (U @ U.T).clamp(-1.0, 1.0)
    return cos.fill_diagonal_(1.0)


def _nc2(X: torch.Tensor, what: str) -> tuple[float, float, float, float]:
    """(equinorm, equiangular, max-angle, ETF distance) of the rows of ``X``."""
    C = X.shape[0]
    norms = torch.linalg.vector_norm(X, dim=1)
    cos = _cosines(X, what)
    iu = torch.triu_indices(C, C, 1, device=X.device)
    pairs = cos[iu[0], iu[1]]
    G = X @ X.T
    G = C * G / torch.diagonal(G).sum()
    eye = torch.eye(C, dtype=X.dtype, device=X.device)
    etf = (eye - 1.0 / C) * (C / (C - 1))
    return (float(norms.std(correction=0) / norms.mean()), float(pairs.std(correction=0)),
            float((pairs + 1.0 / (C - 1)).abs().mean()), float(torch.linalg.matrix_norm(G - etf)))


@accepts(H=Tensor("n", "d"), y=Tensor("n", dtype="int"), num_classes=Int(ge=2, optional=True),
         weighting=Choice(*_WEIGHTINGS), example=lambda ctx: {k: v for k, v in _example(ctx).items()
                                                              if k in ("H", "y")})
def class_mean_geometry(H: torch.Tensor, y: torch.Tensor, *, num_classes: int | None = None,
                        weighting: str = "samples") -> ClassMeanGeometry:
    """Class-mean geometry: means, centred means, their Gram matrix, cosines and angles.

    References: Prevalence of neural collapse during the terminal phase of deep learning training (Papyan, Han,
    Donoho), 2020.

    :math:`\\mu_c = \\frac{1}{n_c}\\sum_{y_i = c} h_i`; :math:`\\mu_G` is the mean of all rows of ``H``
    (``weighting="samples"``, the paper's; it keeps :math:`\\sum_c n_c(\\mu_c - \\mu_G) = 0`) or the mean of the
    class means (``weighting="classes"``, every class counting once). At a simplex ETF the off-diagonal cosines are
    all :math:`-1/(C-1)`.

    Args:
        H: features :math:`h_i`, shape ``(N, d)``.
        y: labels in ``[0, C)``, shape ``(N,)``; every class must occur.
        num_classes: :math:`C` (default ``y.max() + 1``).
        weighting: ``"samples"`` or ``"classes"``, as above.

    Example:
        >>> import torch
        >>> H = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [-2.0, -2.0]], dtype=torch.float64)
        >>> geo = class_mean_geometry(H, torch.tensor([0, 0, 1, 2]))
        >>> geo.means.tolist(), geo.counts.tolist()
        ([[2.0, 0.0], [0.0, 2.0], [-2.0, -2.0]], [2, 1, 1])
    """
    C, source = _num_classes(y, num_classes, None, None)
    _, counts, means, global_mean, _ = _geometry(H, y, C, source, weighting)
    M = means - global_mean
    cos = _cosines(M, "the centred class means of H")
    return ClassMeanGeometry(means, global_mean, M, counts, M @ M.T, cos, torch.arccos(cos).fill_diagonal_(0.0))


@accepts(H=Tensor("n", "d"), y=Tensor("n", dtype="int"), W=Tensor("c", "d", optional=True),
         b=Tensor("c", optional=True), logits=Tensor("n", "c", optional=True), num_classes=Int(ge=2, optional=True),
         weighting=Choice(*_WEIGHTINGS), rtol=Real(ge=0, lt=1, optional=True), example=_example)
def neural_collapse_metrics(H: torch.Tensor, y: torch.Tensor, W: torch.Tensor | None = None,
                            b: torch.Tensor | None = None, logits: torch.Tensor | None = None, *,
                            num_classes: int | None = None, weighting: str = "samples",
                            rtol: float | None = None) -> NeuralCollapseMetrics:
    """Neural collapse measures NC1 to NC4 of penultimate features and, optionally, the last layer.

    References: Prevalence of neural collapse during the terminal phase of deep learning training (Papyan, Han,
    Donoho), 2020; Neural Collapse in Deep Linear Networks: From Balanced to Imbalanced Data (Dang et al.), 2023.

    With :math:`w_i` the weight of sample :math:`i` and :math:`M` the centred class means (rows
    :math:`\\mu_c - \\mu_G`, see :func:`class_mean_geometry`):

    .. math::
        \\Sigma_W = \\sum_i w_i (h_i - \\mu_{y_i})(h_i - \\mu_{y_i})^\\top, \\qquad
        \\Sigma_B = \\frac{1}{C} M^\\top M, \\qquad
        \\mathrm{NC1} = \\frac{1}{C}\\operatorname{tr}(\\Sigma_W \\Sigma_B^+).

    ``weighting="samples"`` (default): :math:`w_i = 1/N` and :math:`\\mu_G` the mean of all features: Papyan et
    al.'s definition, and also the one Dang et al. use for imbalanced classes (their evaluation code pools
    :math:`\\Sigma_W` over all samples, averages :math:`\\Sigma_B` over classes with equal weight, and centres at
    the sample mean). ``weighting="classes"``: :math:`w_i = 1/(C n_{y_i})` (the mean of the per-class covariances)
    and :math:`\\mu_G` the mean of the class means, so that a large class does not dominate. The two coincide for
    balanced classes. :math:`\\Sigma_B^+` keeps the eigenvalues above ``rtol`` times the largest.

    NC2, NC3 and NC4 are as listed in :class:`NeuralCollapseMetrics`. All measures are invariant to a rotation,
    a translation and a positive scaling of the features, with ``W`` rotated alike (and, for NC4, ``b`` changed so
    that the model's decisions stay the same; otherwise NC4 follows the decisions, as it should).

    Args:
        H: penultimate features :math:`h_i`, shape ``(N, d)``.
        y: labels in ``[0, C)``, shape ``(N,)``; every class must occur.
        W: last-layer weights, rows :math:`w_c`, shape ``(C, d)``.
        b: last-layer bias, shape ``(C,)`` (needs ``W``; used only for the predictions of NC4).
        logits: the model's outputs, shape ``(N, C)``; when given, NC4 uses them instead of :math:`HW^\\top + b`.
        num_classes: :math:`C` (default: from ``W``, ``logits``, else ``y.max() + 1``; all given must agree).
        weighting: ``"samples"`` or ``"classes"``, as above.
        rtol: relative eigenvalue cut-off of the pseudo-inverse (default ``max(C, d)`` times the dtype's machine
            epsilon, that of ``torch.linalg.pinv``).

    Example:
        >>> import torch
        >>> M = simplex_etf(4, 6)
        >>> y = torch.arange(40) % 4
        >>> H = M[y] + 1e-3 * torch.randn(40, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> res = neural_collapse_metrics(H, y, W=M)
        >>> res.nc1 < 1e-4, round(res.etf_distance_means, 2), res.nc4_agreement
        (True, 0.0, 1.0)
    """
    if b is not None and W is None:
        raise ValueError("b must come with W (it is the bias of the last layer W), got b without W")
    C, source = _num_classes(y, num_classes, W, logits)
    N, d = H.shape
    y, counts, means, global_mean, weights = _geometry(H, y, C, source, weighting)
    M = means - global_mean
    R = H - means[y]

    trace_w = (weights * R.square().sum(1)).sum()
    trace_b = M.square().sum() / C
    # Coinciding class means leave only rounding in M: a scale-relative test.
    if float(torch.linalg.matrix_norm(M)) <= 10 * C * torch.finfo(H.dtype).eps * float(torch.linalg.matrix_norm(means)):
        raise ValueError("H must have class means that differ (Sigma_B = 0: every measure divides by it), got "
                         "class means that coincide")
    # Sigma_B = V diag(s^2 / C) V^T from the SVD of M (C x d): its pseudo-inverse without a (d, d) matrix.
    _, s, Vh = torch.linalg.svd(M, full_matrices=False)
    lam = s.square() / C
    cut = (max(C, d) * torch.finfo(H.dtype).eps if rtol is None else rtol) * lam.max()
    keep = lam > cut
    V = Vh[keep]
    proj = (weights[:, None] * (R @ V.T).square()).sum(0)
    nc1 = float((proj / lam[keep]).sum() / C)

    eq_m, ang_m, max_m, etf_m = _nc2(M, "the centred class means of H")
    eq_w = ang_w = max_w = etf_w = nc3 = None
    if W is not None:
        eq_w, ang_w, max_w, etf_w = _nc2(W, "W")
        nc3 = float(torch.linalg.matrix_norm(W / torch.linalg.matrix_norm(W) - M / torch.linalg.matrix_norm(M))
                    .square())

    # Nearest class mean: argmin_c ||h - mu_c||^2 = argmin_c (||mu_c||^2 - 2 h . mu_c).
    ncc = (means.square().sum(1) - 2.0 * H @ means.T).argmin(1)
    nc4 = None
    if logits is not None or W is not None:
        if logits is None:
            logits = H @ W.T if b is None else H @ W.T + b
        nc4 = float((ncc == logits.argmax(1)).to(H.dtype).mean())
    return NeuralCollapseMetrics(nc1, float(trace_w / trace_b), eq_m, eq_w, ang_m, max_m, ang_w, max_w, etf_m,
                                 etf_w, nc3, nc4, float((ncc == y).to(H.dtype).mean()), C, int(keep.sum()), counts)


@accepts(C=Int(ge=2), d=Int(ge=1), dtype=FloatDType(), generator=Generator(),
         example=lambda ctx: {"C": 3, "d": 4, "dtype": ctx.dtype})
def simplex_etf(C: int, d: int, *, dtype: torch.dtype = torch.float64, generator: torch.Generator | None = None
                ) -> torch.Tensor:
    """Simplex equiangular tight frame: ``C`` unit vectors in :math:`\\mathbb R^d` with all cosines :math:`-1/(C-1)`.

    References: Prevalence of neural collapse during the terminal phase of deep learning training (Papyan, Han,
    Donoho), 2020.

    The rows are :math:`\\sqrt{C/(C-1)}` times an orthonormal basis of :math:`\\mathbf 1^\\perp \\subset
    \\mathbb R^C` written in coordinates (the Helmert basis), padded with zeros to ``d``, so that the Gram matrix is
    exactly :math:`\\frac{C}{C-1}(I - \\mathbf 1\\mathbf 1^\\top/C)` and the rows sum to zero. With a
    ``generator`` the frame is turned by a random orthogonal matrix of :math:`\\mathbb R^d` (Haar, from the QR of a
    Gaussian matrix).

    Args:
        C: number of vectors, ``>= 2``.
        d: dimension, ``>= C - 1``.
        dtype: floating dtype of the result.
        generator: for the random rotation; ``None`` gives the axis-aligned frame.

    Returns:
        shape ``(C, d)``.

    Example:
        >>> E = simplex_etf(3, 2)
        >>> [round(v, 6) for v in (E @ E.T).flatten().tolist()]
        [1.0, -0.5, -0.5, -0.5, 1.0, -0.5, -0.5, -0.5, 1.0]
    """
    if d < C - 1:
        raise ValueError(f"d must be >= C - 1 = {C - 1} (a simplex of C points spans C - 1 dimensions), got {d}")
    i = torch.arange(C, dtype=dtype)[:, None]  # row (vector) index
    k = torch.arange(1, C, dtype=dtype)[None, :]  # basis index: column k is orthogonal to 1 and to columns < k
    basis = torch.where(i < k, 1.0, torch.where(i == k, -k, 0.0)) / torch.sqrt(k * (k + 1))
    E = torch.zeros(C, d, dtype=dtype)
    E[:, : C - 1] = basis * (C / (C - 1)) ** 0.5
    if generator is not None:
        Q, R = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=dtype))
        E = E @ (Q * torch.sign(torch.diagonal(R))).T
    return E
