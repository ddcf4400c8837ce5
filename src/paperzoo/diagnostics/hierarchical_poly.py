"""Layer-wise training of a three-layer network on hierarchical polynomials :math:`h = g \\circ p`.

References: Learning Hierarchical Polynomials with Three-Layer Neural Networks (Wang, Nichani, Lee), 2024.

Target class: :math:`x \\sim N(0, I_d)`, :math:`h(x) = g(p(x))` with :math:`p` a degree-:math:`k` polynomial (here
normalised, :math:`\\mathbb E p = 0`, :math:`\\mathbb E p^2 = 1`) and :math:`g` a univariate polynomial of degree
:math:`q`. Learner: the three-layer network

.. math::  f(x) = \\sum_{i=1}^{m_1} a_i\\, \\sigma_1\\big(W_i \\cdot \\phi(x) + b_i\\big), \\qquad
           \\phi(x) = \\big(\\mathrm{He}_k(v_j \\cdot x)/\\sqrt{k!}\\big)_{j=1}^{m_2},

with a fixed random first layer :math:`V = (v_j)` (unit rows), :math:`\\sigma_1 = \\mathrm{ReLU}`, trained
layer-wise on two disjoint halves of the sample:

1. **Stage 1 (feature learning)**: from :math:`W = 0`, positive stage-1 biases (so :math:`\\sigma_1'(b_i) = 1`)
   and :math:`a_i \\in \\{\\pm 1\\}`, one gradient step on :math:`W` with a large learning rate :math:`\\eta` and
   weight decay :math:`1/\\eta` (which removes the initial :math:`W`). Every row becomes
   :math:`W_i = \\eta\\, a_i\\, \\hat w` with :math:`\\hat w = \\frac1{n_1}\\sum_j (y_j - \\bar y)\\,\\phi(x_j)`, so
   each hidden unit sees the same learned scalar feature
   :math:`\\hat h(x) = \\hat w \\cdot \\phi(x) = \\frac1{n_1}\\sum_j (y_j-\\bar y) K_{m_2}(x_j, x)`: an empirical
   estimate of the projection of :math:`h` onto degree-:math:`k` Hermite polynomials, which for the paper's class of
   :math:`p` is :math:`\\approx \\mathbb E[g'(z)]\\, p(x)` (the feature :math:`p` is recovered from
   :math:`\\tilde O(d^k)` samples).
2. **Stage 2 (outer layer)**: biases re-drawn :math:`b_i \\sim U[-\\beta, \\beta]`, :math:`\\eta` fixed by
   standardising :math:`\\hat h` on the stage-2 inputs, and the convex problem in :math:`a` (plus an intercept)
   solved in closed form by ridge regression with penalty ``ridge * n_2`` on :math:`\\|a\\|^2`: a 1-D random-ReLU
   fit of :math:`g` on the learned feature.

Functions: :func:`hermite_features` (:math:`\\phi`), :func:`quadratic_feature` (:math:`p` for :math:`k = 2`),
:func:`layerwise_three_layer` (both stages, returns a :class:`ThreeLayerFit`), :func:`three_layer_predict`,
:func:`learned_feature` (:math:`\\hat h`) and :func:`feature_correlation` (how well stage 1 recovered :math:`p`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Generator, Instance, Int, Real, Tensor, accepts

__all__ = ["ThreeLayerFit", "hermite_features", "quadratic_feature", "layerwise_three_layer",
           "three_layer_predict", "learned_feature", "feature_correlation"]


class ThreeLayerFit(NamedTuple):
    """A layer-wise trained three-layer network (result of :func:`layerwise_three_layer`).

    Attributes:
        V: first layer, shape ``(m2, d)``, unit rows (fixed, random).
        degree: :math:`k`, the Hermite degree of :math:`\\sigma_2`.
        w: the stage-1 feature direction :math:`\\hat w`, shape ``(m2,)``.
        center, scale: standardisation of :math:`\\hat h` (its stage-2 mean and std); :math:`\\eta = 1/` ``scale``.
        signs: :math:`a_i` at stage 1 (hence the sign of unit ``i``'s feature weight), shape ``(m1,)``.
        biases: stage-2 biases, shape ``(m1,)``.
        outer: the stage-2 outer weights :math:`a`, shape ``(m1,)``; intercept: the stage-2 intercept.
        ridge: the stage-2 ridge; train_mse: the stage-2 training mean squared error.
    """

    V: torch.Tensor
    degree: int
    w: torch.Tensor
    center: float
    scale: float
    signs: torch.Tensor
    biases: torch.Tensor
    outer: torch.Tensor
    intercept: float
    ridge: float
    train_mse: float


def _hermite(z: torch.Tensor, k: int) -> torch.Tensor:
    """Probabilists' Hermite polynomial He_k by the three-term recurrence, normalised by sqrt(k!)."""
    h_prev, h = torch.ones_like(z), z
    if k == 0:
        return h_prev
    for j in range(1, k):
        h_prev, h = h, z * h - j * h_prev
    return h / math.sqrt(math.factorial(k))


def _features(x: torch.Tensor, V: torch.Tensor, k: int) -> torch.Tensor:
    return _hermite(x @ V.T, k)


def _example_x(ctx, n="n"):
    return torch.randn(ctx.size(n), ctx.size("d"), generator=ctx.generator, dtype=ctx.dtype)


def _example_V(ctx):
    v = torch.randn(ctx.size("m"), ctx.size("d"), generator=ctx.generator, dtype=ctx.dtype)
    return v / v.norm(dim=1, keepdim=True)


@accepts(x=Tensor("n", "d"), V=Tensor("m", "d"), degree=Int(ge=1, le=8),
         example=lambda ctx: {"x": _example_x(ctx), "V": _example_V(ctx), "degree": 2})
def hermite_features(x: torch.Tensor, V: torch.Tensor, degree: int) -> torch.Tensor:
    """Random Hermite features :math:`\\phi_j(x) = \\mathrm{He}_k(v_j \\cdot x) / \\sqrt{k!}` (the second layer's input).

    References: Learning Hierarchical Polynomials with Three-Layer Neural Networks (Wang, Nichani, Lee), 2024.

    For unit :math:`v_j` and :math:`x \\sim N(0, I_d)`, each feature lies in the degree-:math:`k` Hermite chaos and has
    unit variance; ``m2`` of order :math:`d^k` of them span that space.

    Args:
        x: inputs, shape ``(n, d)``. V: first-layer weights, shape ``(m2, d)`` (rows of unit norm for the
            normalisation above; not enforced). degree: :math:`k`.

    Returns: shape ``(n, m2)``.

    Example:
        >>> import torch
        >>> x = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
        >>> hermite_features(x, torch.eye(2, dtype=torch.float64), 2) * 2 ** 0.5  # He_2(2) = 3, He_2(0) = -1
        tensor([[ 3., -1.]], dtype=torch.float64)
    """
    return _features(x, V, degree)


@accepts(x=Tensor("n", "d"), A=Tensor("d", "d", symmetric=True), eps=Real(gt=0),
         example=lambda ctx: {"x": _example_x(ctx), "A": torch.eye(ctx.size("d"), dtype=ctx.dtype)})
def quadratic_feature(x: torch.Tensor, A: torch.Tensor, *, eps: float = 1e-12) -> torch.Tensor:
    """The normalised quadratic feature :math:`p(x) = (x^\\top A x - \\operatorname{tr} A) / \\sqrt{2\\operatorname{tr}A^2}`.

    References: Learning Hierarchical Polynomials with Three-Layer Neural Networks (Wang, Nichani, Lee), 2024.

    For :math:`x \\sim N(0, I_d)`: :math:`\\mathbb E p = 0` and :math:`\\mathbb E p^2 = 1`; :math:`p` is close to
    Gaussian when :math:`\\|A\\|_{op} \\ll \\|A\\|_F` (the regime of the paper's quadratic result).

    Args:
        x: shape ``(n, d)``. A: symmetric, shape ``(d, d)``. eps: floor on :math:`\\sqrt{2\\operatorname{tr}A^2}`
            (``A = 0`` gives ``p = 0``).

    Returns: shape ``(n,)``.

    Example:
        >>> import torch
        >>> quadratic_feature(torch.tensor([[1.0, 3.0]], dtype=torch.float64), torch.eye(2, dtype=torch.float64))
        tensor([4.], dtype=torch.float64)
    """
    norm = torch.sqrt(2.0 * (A * A).sum()).clamp_min(eps)
    return (((x @ A) * x).sum(1) - torch.diagonal(A).sum()) / norm


def _stage2_design(z: torch.Tensor, signs: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
    return torch.relu(z[:, None] * signs[None, :] + biases[None, :])


def _ridge_fit(Phi: torch.Tensor, y: torch.Tensor, ridge: float) -> tuple[torch.Tensor, float]:
    """Ridge with an unpenalised intercept: min_a,c (1/n)|y - Phi a - c|^2 + ridge |a|^2 (centred normal equations)."""
    n, m = Phi.shape
    mu, ybar = Phi.mean(0), y.mean()
    Pc, yc = Phi - mu, y - ybar
    G = Pc.T @ Pc / n + ridge * torch.eye(m, dtype=Phi.dtype, device=Phi.device)
    a = torch.linalg.solve(G, Pc.T @ yc / n)
    return a, float(ybar - mu @ a)


_FIT_SPECS = dict(x1=Tensor("n1", "d"), y1=Tensor("n1"), x2=Tensor("n2", "d"), y2=Tensor("n2"),
                  width=Int(ge=1), hidden=Int(ge=1), degree=Int(ge=1, le=8), ridge=Real(gt=0),
                  bias_range=Real(gt=0), eps=Real(gt=0), generator=Generator())


def _example_fit(ctx):
    return {"x1": _example_x(ctx, "n1"), "y1": torch.randn(ctx.size("n1"), generator=ctx.generator, dtype=ctx.dtype),
            "x2": _example_x(ctx, "n2"), "y2": torch.randn(ctx.size("n2"), generator=ctx.generator, dtype=ctx.dtype),
            "width": 6, "hidden": 5, "degree": 2, "ridge": 1e-2}


@accepts(**_FIT_SPECS, example=_example_fit)
def layerwise_three_layer(x1: torch.Tensor, y1: torch.Tensor, x2: torch.Tensor, y2: torch.Tensor, *, width: int,
                          hidden: int, degree: int, ridge: float, bias_range: float = 3.0, eps: float = 1e-12,
                          generator: torch.Generator | None = None) -> ThreeLayerFit:
    """Layer-wise training of a three-layer network: one large gradient step on the middle layer, then the outer layer.

    References: Learning Hierarchical Polynomials with Three-Layer Neural Networks (Wang, Nichani, Lee), 2024.

    Stage 1 on ``(x1, y1)``: :math:`\\hat w = \\frac1{n_1} \\phi(X_1)^\\top (y_1 - \\bar y_1)` (the one-step update of
    every middle-layer row up to its sign :math:`a_i` and :math:`\\eta`; see the module docstring). Stage 2 on
    ``(x2, y2)``: the learned feature :math:`\\hat h = \\phi(x)\\cdot\\hat w` standardised to
    :math:`z` on ``x2`` (this fixes :math:`\\eta`), units :math:`\\mathrm{ReLU}(a_i z + b_i)` with fresh
    :math:`b_i \\sim U[-\\beta,\\beta]`, and :math:`\\min_{a, c} \\frac1{n_2}\\|y_2 - \\Phi_2 a - c\\|^2 +
    \\lambda\\|a\\|^2` in closed form.

    Args:
        x1: stage-1 inputs, shape ``(n1, d)``; y1: targets, shape ``(n1,)``.
        x2: stage-2 inputs, shape ``(n2, d)`` (a disjoint sample); y2: shape ``(n2,)``.
        width: :math:`m_2`, the number of random Hermite features. hidden: :math:`m_1`, the number of ReLU units.
        degree: :math:`k`. ridge: :math:`\\lambda`. bias_range: :math:`\\beta` (in units of the standardised
            feature). eps: floor on the feature's std (a constant feature gives ``z = 0``).
        generator: for :math:`V`, the signs and the biases.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(4000, 4, generator=g, dtype=torch.float64)
        >>> p = quadratic_feature(x, torch.eye(4, dtype=torch.float64))
        >>> fit = layerwise_three_layer(x[:2000], p[:2000] ** 2, x[2000:], p[2000:] ** 2, width=60, hidden=64,
        ...                             degree=2, ridge=1e-4, generator=g)
        >>> bool(feature_correlation(fit, x, p) > 0.9)
        True
    """
    dtype, device = x1.dtype, x1.device
    d = x1.shape[1]
    V = torch.randn(width, d, generator=generator, dtype=dtype, device=device)
    V = V / V.norm(dim=1, keepdim=True).clamp_min(eps)
    w = _features(x1, V, degree).T @ (y1 - y1.mean()) / x1.shape[0]
    return _fit_stage2(V, int(degree), w, x2, y2, hidden, ridge, bias_range, eps, generator)


def _fit_stage2(V, degree, w, x2, y2, hidden, ridge, bias_range, eps, generator) -> ThreeLayerFit:
    """Stage 2 for a given middle-layer direction ``w`` (the claim's control passes a random one)."""
    dtype, device = x2.dtype, x2.device
    h2 = _features(x2, V, degree) @ w
    center, scale = float(h2.mean()), max(float(h2.std(correction=0)), eps)
    z2 = (h2 - center) / scale
    signs = torch.randint(0, 2, (hidden,), generator=generator, device=device).to(dtype) * 2 - 1
    biases = (torch.rand(hidden, generator=generator, dtype=dtype, device=device) * 2 - 1) * bias_range
    Phi = _stage2_design(z2, signs, biases)
    a, c = _ridge_fit(Phi, y2, ridge)
    train_mse = float(((Phi @ a + c - y2) ** 2).mean())
    return ThreeLayerFit(V, degree, w, center, scale, signs, biases, a, c, float(ridge), train_mse)


def _feature(fit: ThreeLayerFit, x: torch.Tensor) -> torch.Tensor:
    return (_features(x, fit.V, fit.degree) @ fit.w - fit.center) / fit.scale


def _example_predict(ctx):
    args = _example_fit(ctx)
    fit = layerwise_three_layer(**args, generator=ctx.generator)
    return {"fit": fit, "x": _example_x(ctx)}


@accepts(fit=Instance(ThreeLayerFit), x=Tensor("n", "d"), example=_example_predict)
def learned_feature(fit: ThreeLayerFit, x: torch.Tensor) -> torch.Tensor:
    """The stage-1 learned feature, standardised: :math:`z(x) = (\\hat w \\cdot \\phi(x) - \\text{center})/\\text{scale}`.

    References: Learning Hierarchical Polynomials with Three-Layer Neural Networks (Wang, Nichani, Lee), 2024.

    Args: fit: a :class:`ThreeLayerFit`. x: shape ``(n, d)`` (``d`` as in training). Returns: shape ``(n,)``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(200, 3, generator=g, dtype=torch.float64)
        >>> fit = layerwise_three_layer(x[:100], x[:100, 0] ** 2, x[100:], x[100:, 0] ** 2, width=20, hidden=8,
        ...                             degree=2, ridge=1e-3, generator=g)
        >>> learned_feature(fit, x).shape
        torch.Size([200])
    """
    _check_dim(fit, x)
    return _feature(fit, x)


def _check_dim(fit, x):
    if x.shape[1] != fit.V.shape[1]:
        raise ValueError(f"x must have {fit.V.shape[1]} columns (the fit's input dimension), got {x.shape[1]}")
    if x.dtype != fit.V.dtype:
        raise TypeError(f"x must have the dtype of the fit ({fit.V.dtype}), got {x.dtype}")


@accepts(fit=Instance(ThreeLayerFit), x=Tensor("n", "d"), example=_example_predict)
def three_layer_predict(fit: ThreeLayerFit, x: torch.Tensor) -> torch.Tensor:
    """Prediction of a layer-wise trained three-layer network: :math:`f(x) = \\sum_i a_i \\mathrm{ReLU}(s_i z(x) + b_i) + c`.

    References: Learning Hierarchical Polynomials with Three-Layer Neural Networks (Wang, Nichani, Lee), 2024.

    Args: fit: a :class:`ThreeLayerFit`. x: shape ``(n, d)``. Returns: shape ``(n,)``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(200, 3, generator=g, dtype=torch.float64)
        >>> fit = layerwise_three_layer(x[:100], x[:100, 0] ** 2, x[100:], x[100:, 0] ** 2, width=20, hidden=8,
        ...                             degree=2, ridge=1e-3, generator=g)
        >>> three_layer_predict(fit, x).shape
        torch.Size([200])
    """
    _check_dim(fit, x)
    return _stage2_design(_feature(fit, x), fit.signs, fit.biases) @ fit.outer + fit.intercept


@accepts(fit=Instance(ThreeLayerFit), x=Tensor("n", "d"), p=Tensor("n"), eps=Real(gt=0),
         example=lambda ctx: {**_example_predict(ctx),
                              "p": torch.randn(ctx.size("n"), generator=ctx.generator, dtype=ctx.dtype)})
def feature_correlation(fit: ThreeLayerFit, x: torch.Tensor, p: torch.Tensor, *, eps: float = 1e-12) -> float:
    """How well stage 1 recovered the feature: :math:`|\\operatorname{corr}(\\hat h(x), p(x))|` over the rows of ``x``.

    References: Learning Hierarchical Polynomials with Three-Layer Neural Networks (Wang, Nichani, Lee), 2024.

    The paper's stage-1 result: :math:`\\hat h \\approx c\\, p` up to an error vanishing once :math:`n_1 \\gtrsim
    d^k`; the absolute value removes the sign of :math:`c = \\mathbb E[g'(z)]`.

    Args: fit: a :class:`ThreeLayerFit`. x: shape ``(n, d)``. p: the true feature at ``x``, shape ``(n,)``.
        eps: floor on the product of the two standard deviations (a constant input gives 0).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(200, 3, generator=g, dtype=torch.float64)
        >>> fit = layerwise_three_layer(x[:100], x[:100, 0] ** 2, x[100:], x[100:, 0] ** 2, width=20, hidden=8,
        ...                             degree=2, ridge=1e-3, generator=g)
        >>> 0.0 <= feature_correlation(fit, x, x[:, 0] ** 2) <= 1.0
        True
    """
    _check_dim(fit, x)
    h = _feature(fit, x)
    hc, pc = h - h.mean(), p - p.mean()
    den = max(float(hc.norm() * pc.norm()), eps)
    return min(abs(float(hc @ pc)) / den, 1.0)
