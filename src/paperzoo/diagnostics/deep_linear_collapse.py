"""Neural collapse in the deep linear unconstrained-features model: training, closed-form geometry, deviation.

References: Neural Collapse in Deep Linear Networks: From Balanced to Imbalanced Data (Dang, Tran, Osher,
Tran-The, Ho, Nguyen), 2023.

The model: free features :math:`h_i \\in \\mathbb R^d` (rows of ``H``, shape ``(N, d)``), linear layers
:math:`W_1, \\dots, W_M` (``weights``, ``nn.Linear`` layout: :math:`W_m` has shape ``(d_m, d_{m-1})``,
:math:`d_0 = d`, :math:`d_M = K`) and an optional unregularised last-layer bias :math:`b`, trained on one-hot
targets :math:`y_i` with weight decay :math:`\\lambda_W` on every layer and :math:`\\lambda_H` on the features::

    L = (1/N) sum_i l(W_M ... W_1 h_i + b, y_i) + (lambda_W / 2) sum_m ||W_m||_F^2 + (lambda_H / 2) ||H||_F^2

with :math:`l(z, y) = \\|z - e_y\\|^2 / 2` (MSE) or the cross-entropy. The paper's predictions for global minima:

- balanced classes (MSE or CE, with the bias): features collapse to their class means at every layer (NC1) and the
  centred class means form a simplex ETF at every layer (cosines :math:`-1/(K-1)`);
- imbalanced classes, bias-free MSE: the class means are orthogonal at every layer, with lengths set by the class
  sizes :math:`n_k`, the depth :math:`M` and :math:`\\lambda_W, \\lambda_H` (:func:`imbalanced_mse_geometry`).

The closed form used here (our derivation, agreeing with the equation the official code solves): with the
product's singular value :math:`\\sigma_k` for class :math:`k` and balanced layers (every layer has singular value
:math:`s_k = \\sigma_k^{1/M}` along class :math:`k`), minimising over the features leaves one scalar problem per
class, in :math:`t = s_k^2`:

    g_k(t) = n_k lambda_H / (2 (t^M + N lambda_H)) + M lambda_W t / 2,

whose positive stationary points solve :math:`n_k \\lambda_H t^{M-1} = \\lambda_W (t^M + N\\lambda_H)^2`, i.e.
with :math:`t = (N\\lambda_H)^{1/M} x`, :math:`x^{M-1}/(x^M+1)^2 = N\\lambda_W(N\\lambda_H)^{1/M}/n_k`. The global
minimiser is the larger root or :math:`t = 0` (the class collapses to zero: "minority collapse"), whichever has the
smaller :math:`g_k`. Then :math:`\\|h_k\\| = \\sigma_k/(\\sigma_k^2 + N\\lambda_H)`, the class mean at the input of
layer :math:`m+1` has norm :math:`s_k^m \\|h_k\\|`, the output is :math:`\\sigma_k^2/(\\sigma_k^2 + N\\lambda_H)\\,
e_k`, the rows of the product :math:`W_M\\cdots W_1` have norms :math:`\\sigma_k`, and the minimum of
:math:`L` is :math:`\\sum_k g_k(t_k)`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch

from paperzoo.core.accepts import (Choice, Flag, FloatDType, Generator, Instance, Int, Ints, Pair, Real, Tensor,
                                   Tensors, accepts)

__all__ = ["DeepLinearUFMFit", "ImbalancedGeometry", "GeometryDeviation", "LayerwiseCollapse",
           "deep_linear_ufm_loss", "train_deep_linear_ufm", "imbalanced_mse_geometry", "layer_features",
           "imbalanced_geometry_deviation", "layerwise_collapse"]

_LOSSES = ("mse", "ce")
_OPTIMIZERS = ("gd", "adam")


class DeepLinearUFMFit(NamedTuple):
    """Result of :func:`train_deep_linear_ufm`.

    Attributes:
        H: features, shape ``(N, d)``.
        weights: ``(W_1, ..., W_M)``, :math:`W_m` of shape ``(d_m, d_{m-1})`` (``d_M = K``).
        bias: last-layer bias, shape ``(K,)``, or None (bias-free).
        loss: final value of the regularised objective.
        grad_norm: Euclidean norm of the full gradient at the returned point.
        n_iter: iterations taken.
        converged: ``grad_norm <= tol``.
    """

    H: torch.Tensor
    weights: tuple[torch.Tensor, ...]
    bias: torch.Tensor | None
    loss: float
    grad_norm: float
    n_iter: int
    converged: bool


class ImbalancedGeometry(NamedTuple):
    """Result of :func:`imbalanced_mse_geometry` (the global minimiser of the bias-free MSE model).

    Attributes:
        layer_singular_values: :math:`s_k`, every layer's singular value along class ``k``, shape ``(K,)``.
        product_singular_values: :math:`\\sigma_k = s_k^M`, the row norms of :math:`W_M\\cdots W_1`, shape ``(K,)``.
        feature_norms: :math:`\\|h_k\\|`, class-mean norms of ``H``, shape ``(K,)``.
        layer_norms: class-mean norms at the input of layers 1..M (row 0 is ``feature_norms``) and, in the last row,
            of the outputs (:math:`\\sigma_k^2/(\\sigma_k^2+N\\lambda_H)`), shape ``(M + 1, K)``.
        objective: the minimum of the objective, :math:`\\sum_k g_k(t_k)`.
        x: the root :math:`x_k` of the scalar equation (0 for a collapsed class), shape ``(K,)``.
        collapsed: classes whose optimum is zero (minority collapse), shape ``(K,)`` (bool).
        class_sizes: :math:`n_k`, shape ``(K,)`` (int64).
    """

    layer_singular_values: torch.Tensor
    product_singular_values: torch.Tensor
    feature_norms: torch.Tensor
    layer_norms: torch.Tensor
    objective: float
    x: torch.Tensor
    collapsed: torch.Tensor
    class_sizes: torch.Tensor


class GeometryDeviation(NamedTuple):
    """Result of :func:`imbalanced_geometry_deviation`; every entry is 0 at the predicted geometry.

    Attributes:
        max_abs_cosine: largest :math:`|\\cos|` between distinct (uncentred) class means, per layer (inputs of layers
            1..M, then the outputs), shape ``(M + 1,)``; collapsed classes excluded.
        norm_relative_error: :math:`|\\|\\mu_k^{(m)}\\| - \\text{pred}| / \\text{pred}`, shape ``(M + 1, K)``; for a
            collapsed class (prediction 0) the measured norm over the largest predicted norm of that layer.
        classifier_relative_error: the same for the row norms of :math:`W_M\\cdots W_1` against :math:`\\sigma_k`,
            shape ``(K,)``.
        max_relative_error: the largest entry of ``norm_relative_error`` and ``classifier_relative_error``.
        nc1: :math:`\\operatorname{tr}(\\Sigma_W\\Sigma_B^+)/K` per layer input (1..M), shape ``(M,)``.
    """

    max_abs_cosine: torch.Tensor
    norm_relative_error: torch.Tensor
    classifier_relative_error: torch.Tensor
    max_relative_error: float
    nc1: torch.Tensor


class LayerwiseCollapse(NamedTuple):
    """Result of :func:`layerwise_collapse`: balanced-case (simplex ETF) measures at the input of every layer.

    Attributes:
        nc1: :math:`\\operatorname{tr}(\\Sigma_W\\Sigma_B^+)/K`, shape ``(M,)``.
        max_etf_cosine_error: largest :math:`|\\cos(\\mu_k - \\mu_G, \\mu_l - \\mu_G) + 1/(K-1)|` over pairs
            :math:`k \\ne l`, shape ``(M,)``.
        norm_cv: coefficient of variation of :math:`\\|\\mu_k - \\mu_G\\|` (population std / mean), shape ``(M,)``.
    """

    nc1: torch.Tensor
    max_etf_cosine_error: torch.Tensor
    norm_cv: torch.Tensor


# ----------------------------------------------------------------------------------------------------------------
# objective

def _check_chain(H: torch.Tensor, weights: Sequence[torch.Tensor]) -> int:
    if len(weights) < 1:
        raise ValueError("weights must hold at least one matrix, got 0")
    width = H.shape[1]
    for m, W in enumerate(weights):
        if W.dim() != 2:
            raise ValueError(f"weights[{m}] must be a matrix, got {W.dim()} dimensions")
        if W.shape[1] != width:
            raise ValueError(f"weights[{m}] must have {width} columns (the width of its input), got {W.shape[1]}")
        width = W.shape[0]
    return width  # K


def _check_labels(y: torch.Tensor, K: int, name: str = "y") -> None:
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= K):
        raise ValueError(f"{name} must hold labels in [0, {K - 1}], got values in [{int(y.min())}, {int(y.max())}]")


def _forward(H: torch.Tensor, weights: Sequence[torch.Tensor], bias: torch.Tensor | None) -> torch.Tensor:
    out = H
    for W in weights:
        out = out @ W.T
    return out if bias is None else out + bias


def _objective(H, weights, bias, y, lambda_W: float, lambda_H: float, loss: str,
               target: torch.Tensor | None = None) -> torch.Tensor:
    out = _forward(H, weights, bias)
    if loss == "mse":
        if target is None:
            target = torch.nn.functional.one_hot(y, out.shape[1]).to(out.dtype)
        fit = 0.5 * (out - target).pow(2).sum() / H.shape[0]
    else:
        fit = torch.nn.functional.cross_entropy(out, y)
    reg = sum(W.pow(2).sum() for W in weights)
    return fit + 0.5 * lambda_W * reg + 0.5 * lambda_H * H.pow(2).sum()


def _example(ctx):
    g = ctx.generator
    n, d, K = 3 * ctx.size("n"), ctx.size("d"), 3  # n >= K: every class present
    return {"H": torch.randn(n, d, generator=g, dtype=ctx.dtype),
            "weights": [torch.randn(d, d, generator=g, dtype=ctx.dtype),
                        torch.randn(K, d, generator=g, dtype=ctx.dtype)],
            "y": torch.arange(n) % K, "lambdas": (1e-2, 1e-2)}


@accepts(H=Tensor("n", "d"), weights=Tensors(length="M"), y=Tensor("n", dtype="int"),
         lambdas=Pair(Real(ge=0), meaning="(lambda_W, lambda_H)"), bias=Tensor("k", optional=True),
         loss=Choice(*_LOSSES), example=_example)
def deep_linear_ufm_loss(H: torch.Tensor, weights: Sequence[torch.Tensor], y: torch.Tensor,
                         lambdas: tuple[float, float], *, bias: torch.Tensor | None = None,
                         loss: str = "mse") -> torch.Tensor:
    """Regularised objective of the deep linear unconstrained-features model.

    References: Neural Collapse in Deep Linear Networks: From Balanced to Imbalanced Data, 2023.

    :math:`\\frac1N\\sum_i l(W_M\\cdots W_1 h_i + b, y_i) + \\frac{\\lambda_W}2\\sum_m\\|W_m\\|_F^2 +
    \\frac{\\lambda_H}2\\|H\\|_F^2`, :math:`l` half the squared distance to the one-hot target (``"mse"``) or the
    cross-entropy (``"ce"``); the bias is not regularised.

    Args:
        H: features, shape ``(N, d)``.
        weights: ``(W_1, ..., W_M)``, :math:`W_m` of shape ``(d_m, d_{m-1})``, ``d_0 = d``, ``d_M = K``.
        y: labels in ``[0, K)``, shape ``(N,)``.
        lambdas: ``(lambda_W, lambda_H)``.
        bias: optional last-layer bias, shape ``(K,)``.
        loss: ``"mse"`` or ``"ce"``.

    Returns:
        A scalar tensor (differentiable).

    Example:
        >>> import torch
        >>> H = torch.eye(2, dtype=torch.float64)
        >>> float(deep_linear_ufm_loss(H, [torch.eye(2, dtype=torch.float64)], torch.tensor([0, 1]), (0.0, 0.0)))
        0.0
    """
    K = _check_chain(H, weights)
    if bias is not None and bias.shape[0] != K:
        raise ValueError(f"bias must have {K} entries (the rows of weights[-1]), got {bias.shape[0]}")
    _check_labels(y, K)
    return _objective(H, weights, bias, y.long(), float(lambdas[0]), float(lambdas[1]), loss)


# ----------------------------------------------------------------------------------------------------------------
# training

@accepts(y=Tensor("n", dtype="int"), num_classes=Int(ge=2, optional=True), depth=Int(ge=1), width=Int(ge=1),
         lambdas=Pair(Real(ge=0), meaning="(lambda_W, lambda_H)"), loss=Choice(*_LOSSES), bias=Flag(),
         optimizer=Choice(*_OPTIMIZERS), lr=Real(gt=0), momentum=Real(ge=0, lt=1), beta2=Real(ge=0, lt=1),
         eps=Real(gt=0), max_iter=Int(ge=1),
         tol=Real(ge=0), init_std=Real(gt=0), dtype=FloatDType(), generator=Generator(),
         example=lambda ctx: {"y": torch.arange(3 * ctx.size("n")) % 3, "num_classes": 3, "depth": 2, "width": 4,
                              "lambdas": (1e-2, 1e-2), "max_iter": 20, "tol": 1.0, "dtype": ctx.dtype})
def train_deep_linear_ufm(y: torch.Tensor, *, num_classes: int | None = None, depth: int, width: int,
                          lambdas: tuple[float, float], loss: str = "mse", bias: bool = False,
                          optimizer: str = "gd", lr: float = 0.1, momentum: float = 0.9, beta2: float = 0.999,
                          eps: float = 1e-8, max_iter: int = 10000,
                          tol: float = 1e-8, init_std: float = 0.1, dtype: torch.dtype = torch.float64,
                          generator: torch.Generator | None = None) -> DeepLinearUFMFit:
    """Train the deep linear unconstrained-features model by full-batch gradient descent or Adam.

    References: Neural Collapse in Deep Linear Networks: From Balanced to Imbalanced Data, 2023.

    Minimises :func:`deep_linear_ufm_loss` over :math:`H \\in \\mathbb R^{N\\times d}` (``d = width``),
    :math:`W_1, \\dots, W_{M-1} \\in \\mathbb R^{d\\times d}`, :math:`W_M \\in \\mathbb R^{K\\times d}`
    (``M = depth``) and, with ``bias``, :math:`b \\in \\mathbb R^K`. Every entry starts as
    :math:`\\mathcal N(0, \\text{init\\_std}^2)` (the bias at 0), as in the official synthetic experiments, which use
    ``optimizer="gd"`` with ``momentum=0.9``: heavy ball, :math:`v \\leftarrow \\mu v + g`, :math:`\\theta
    \\leftarrow \\theta - \\eta v` (the update of ``torch.optim.SGD``; ``momentum=0`` is plain gradient descent).
    ``optimizer="adam"``: Adam with :math:`\\beta_1 =` ``momentum``, :math:`\\beta_2 =` ``beta2``, ``eps`` and
    bias correction (``torch.optim.Adam``'s update).
    Stops when the norm of the full gradient is at most ``tol``; warns when ``max_iter`` is reached first, and on a
    non-finite objective stops with a warning, returning the last finite point.

    Args:
        y: labels in ``[0, K)``, shape ``(N,)``; every class must occur.
        num_classes: ``K`` (default ``max(y) + 1``).
        depth: number of linear layers ``M``.
        width: feature and hidden width ``d``.
        lambdas: ``(lambda_W, lambda_H)``.
        loss: ``"mse"`` or ``"ce"``.
        bias: learn an unregularised last-layer bias.
        optimizer: ``"gd"`` (SGD with momentum, full batch) or ``"adam"``.
        lr, momentum: step size; heavy-ball momentum (``"gd"``) or Adam's first-moment decay (``"adam"``).
        beta2, eps: Adam's second-moment decay and denominator offset (``"adam"`` only).
        max_iter, tol: iteration cap; gradient-norm tolerance.
        init_std: standard deviation of the initial entries.
        dtype, generator: of the parameters and of their initial draw.

    Returns:
        :class:`DeepLinearUFMFit`.

    Example:
        >>> import torch
        >>> y = torch.arange(12) % 3
        >>> fit = train_deep_linear_ufm(y, depth=2, width=4, lambdas=(1e-2, 1e-2), lr=0.5, init_std=0.3,
        ...                             tol=1e-6, generator=torch.Generator().manual_seed(0))
        >>> fit.converged, fit.H.shape, fit.weights[-1].shape
        (True, torch.Size([12, 4]), torch.Size([3, 4]))
    """
    y = y.long()
    if int(y.min()) < 0:
        raise ValueError(f"y must hold labels >= 0, got {int(y.min())}")
    if num_classes is not None and int(y.max()) >= num_classes:
        raise ValueError(f"num_classes must exceed the largest label {int(y.max())}, got {num_classes}")
    K = int(y.max()) + 1 if num_classes is None else num_classes
    counts = torch.bincount(y, minlength=K)
    if bool((counts == 0).any()):
        raise ValueError(f"y must contain every class in [0, {K - 1}], got counts {counts.tolist()}")
    N = y.shape[0]
    lambda_W, lambda_H = float(lambdas[0]), float(lambdas[1])
    shapes = [(N, width)] + [(width, width)] * (depth - 1) + [(K, width)]
    params = [(init_std * torch.randn(*s, generator=generator, dtype=dtype)).requires_grad_() for s in shapes]
    b = torch.zeros(K, dtype=dtype, requires_grad=True) if bias else None
    all_params = params + ([b] if b is not None else [])
    target = torch.nn.functional.one_hot(y, K).to(dtype)
    state = [torch.zeros_like(p) for p in all_params]  # heavy-ball buffer, or Adam's first moment
    second = [torch.zeros_like(p) for p in all_params] if optimizer == "adam" else None

    def evaluate():
        value = _objective(params[0], params[1:], b, y, lambda_W, lambda_H, loss, target)
        grads = torch.autograd.grad(value, all_params)
        gnorm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        return float(value.detach()), float(gnorm), grads

    # One loop for both rules (no torch.optim: its first use imports torch._dynamo, seconds on a loaded core).
    value, gnorm, grads = evaluate()
    last = [p.detach().clone() for p in all_params]
    n_iter, diverged = 0, False
    while gnorm > tol and n_iter < max_iter:
        if not (math.isfinite(value) and math.isfinite(gnorm)):
            diverged = True
            break
        last = [p.detach().clone() for p in all_params]
        n_iter += 1
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(all_params, grads)):
                if second is None:  # heavy ball, as torch.optim.SGD(momentum=...): v <- mu v + g, p <- p - lr v
                    state[i].mul_(momentum).add_(g)
                    p.sub_(lr * state[i])
                else:  # Adam with bias correction
                    state[i].mul_(momentum).add_(g, alpha=1 - momentum)
                    second[i].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    m_hat = state[i] / (1 - momentum ** n_iter)
                    v_hat = second[i] / (1 - beta2 ** n_iter)
                    p.sub_(lr * m_hat / (v_hat.sqrt() + eps))
        value, gnorm, grads = evaluate()
    if diverged or not (math.isfinite(value) and math.isfinite(gnorm)):
        diverged = True
        warnings.warn(f"train_deep_linear_ufm: the objective became non-finite at iteration {n_iter}; lower lr "
                      f"(now {lr})", RuntimeWarning, stacklevel=2)
        with torch.no_grad():
            for p, q in zip(all_params, last):
                p.copy_(q)
        value, gnorm, _ = evaluate()
    converged = gnorm <= tol
    if not converged and not diverged:
        warnings.warn(f"train_deep_linear_ufm did not reach tol={tol} in max_iter={max_iter} (gradient norm "
                      f"{gnorm:.3g}); raise max_iter or lr", RuntimeWarning, stacklevel=2)
    detached = [p.detach() for p in params]
    return DeepLinearUFMFit(detached[0], tuple(detached[1:]), None if b is None else b.detach(), value, gnorm,
                            n_iter, converged)


# ----------------------------------------------------------------------------------------------------------------
# closed form (imbalanced, bias-free MSE)

def _phi(x: torch.Tensor, M: int) -> torch.Tensor:
    return x.pow(M - 1) / (x.pow(M) + 1) ** 2


@accepts(class_sizes=Ints(ge=1, min_length=2), depth=Int(ge=1),
         lambdas=Pair(Real(gt=0), meaning="(lambda_W, lambda_H)"), dtype=FloatDType(),
         example=lambda ctx: {"class_sizes": [8, 4, 2], "depth": 2, "lambdas": (1e-2, 1e-2), "dtype": ctx.dtype})
def imbalanced_mse_geometry(class_sizes: Sequence[int], depth: int, lambdas: tuple[float, float], *,
                            dtype: torch.dtype = torch.float64) -> ImbalancedGeometry:
    """Closed-form global minimiser of the bias-free deep linear MSE model with class sizes ``n_k``.

    References: Neural Collapse in Deep Linear Networks: From Balanced to Imbalanced Data, 2023.

    Per class, :math:`t_k = s_k^2` minimises :math:`g_k(t) = \\frac{n_k\\lambda_H}{2(t^M + N\\lambda_H)} +
    \\frac{M\\lambda_W t}2` over :math:`t \\ge 0` (module docstring): the stationary equation
    :math:`x^{M-1}/(x^M+1)^2 = c_k := N\\lambda_W (N\\lambda_H)^{1/M}/n_k` (:math:`t = (N\\lambda_H)^{1/M}x`) has
    its larger root on the decreasing branch :math:`x^M \\ge (M-1)/(M+1)` of the left side (found by bisection, all
    classes at once; for ``M = 1`` in closed form, :math:`x = c_k^{-1/2} - 1`); the minimiser is that root or 0,
    whichever gives the smaller :math:`g_k`. ``N = sum(class_sizes)``, ``M = depth``.

    Args:
        class_sizes: :math:`n_1, \\dots, n_K` (at least two classes, each >= 1).
        depth: ``M``, the number of linear layers.
        lambdas: ``(lambda_W, lambda_H)``, both > 0.
        dtype: of the returned tensors.

    Returns:
        :class:`ImbalancedGeometry`.

    Example:
        >>> g = imbalanced_mse_geometry([4, 4], 1, (0.01, 0.01))
        >>> # depth 1: sigma_k^2 = sqrt(n_k lambda_H / lambda_W) - N lambda_H = 2 - 0.08
        >>> [round(v, 6) for v in g.product_singular_values.tolist()]
        [1.385641, 1.385641]
    """
    n = torch.tensor([int(v) for v in class_sizes], dtype=torch.float64)
    M = int(depth)
    lambda_W, lambda_H = float(lambdas[0]), float(lambdas[1])
    N = float(n.sum())
    scale = (N * lambda_H) ** (1.0 / M)
    c = N * lambda_W * scale / n
    if M == 1:
        x = torch.where(c < 1, c.rsqrt() - 1, torch.zeros_like(c))
    else:
        x_star = ((M - 1) / (M + 1)) ** (1.0 / M)
        has_root = c < _phi(torch.tensor(x_star, dtype=torch.float64), M)
        lo = torch.full_like(c, x_star)
        hi = torch.full_like(c, 2 * x_star)
        for _ in range(200):  # grow the bracket until phi(hi) < c (phi ~ x^{-M-1} at infinity)
            grow = _phi(hi, M) > c
            if not bool(grow.any()):
                break
            hi = torch.where(grow, 2 * hi, hi)
        for _ in range(200):  # bisection on log x; phi is decreasing on [x_star, inf)
            mid = (lo * hi).sqrt()
            above = _phi(mid, M) > c
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        x = torch.where(has_root, (lo * hi).sqrt(), torch.zeros_like(c))

    def g(t):
        return n * lambda_H / (2 * (t.pow(M) + N * lambda_H)) + M * lambda_W * t / 2

    t = scale * x
    collapsed = g(t) >= g(torch.zeros_like(t))
    collapsed = collapsed | (x == 0)
    t = torch.where(collapsed, torch.zeros_like(t), t)
    x = torch.where(collapsed, torch.zeros_like(x), x)
    s = t.sqrt()
    sigma = s.pow(M)
    h = sigma / (sigma.pow(2) + N * lambda_H)
    powers = torch.arange(M + 1, dtype=torch.float64)[:, None]
    layer_norms = s[None, :].pow(powers) * h[None, :]  # 0^0 = 1 keeps row 0 = h (= 0 for a collapsed class)
    objective = float(g(t).sum())
    return ImbalancedGeometry(s.to(dtype), sigma.to(dtype), h.to(dtype), layer_norms.to(dtype), objective,
                              x.to(dtype), collapsed, n.long())


# ----------------------------------------------------------------------------------------------------------------
# measurements of a trained model

def _layer_features(H, weights):
    out, feats = H, [H]
    for W in weights:
        out = out @ W.T
        feats.append(out)
    return feats


def _example_measure(ctx):
    g = ctx.generator
    n, d, K = 3 * ctx.size("n"), ctx.size("d"), 3  # n >= K: every class present
    return {"H": torch.randn(n, d, generator=g, dtype=ctx.dtype),
            "weights": [torch.randn(d, d, generator=g, dtype=ctx.dtype),
                        torch.randn(K, d, generator=g, dtype=ctx.dtype)],
            "y": torch.arange(n) % K}


@accepts(H=Tensor("n", "d"), weights=Tensors(length="M"), example=lambda ctx: {
    k: v for k, v in _example_measure(ctx).items() if k != "y"})
def layer_features(H: torch.Tensor, weights: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Features of the deep linear model at every layer: :math:`H, HW_1^\\top, \\dots, HW_1^\\top\\cdots W_M^\\top`.

    References: Neural Collapse in Deep Linear Networks: From Balanced to Imbalanced Data, 2023.

    Args:
        H: features, shape ``(N, d)``.
        weights: ``(W_1, ..., W_M)``, :math:`W_m` of shape ``(d_m, d_{m-1})``.

    Returns:
        ``M + 1`` tensors, the ``m``-th of shape ``(N, d_m)`` (the input of layer ``m + 1``; the last: the bias-free
        outputs).

    Example:
        >>> import torch
        >>> [f.shape[1] for f in layer_features(torch.ones(5, 4), [torch.ones(3, 4), torch.ones(2, 3)])]
        [4, 3, 2]
    """
    _check_chain(H, weights)
    return _layer_features(H, weights)


def _class_means(F: torch.Tensor, y: torch.Tensor, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    counts = torch.bincount(y, minlength=K)
    means = torch.zeros(K, F.shape[1], dtype=F.dtype).index_add_(0, y, F) / counts[:, None].to(F.dtype)
    return means, counts


def _nc1(F: torch.Tensor, y: torch.Tensor, K: int) -> float:
    # Dang et al.'s (and Papyan et al.'s) NC1: Sigma_W pooled over samples, Sigma_B over classes around the
    # sample mean; Sigma_B^+ through the SVD of the centred means (no (d, d) matrix).
    means, _ = _class_means(F, y, K)
    centred = means - F.mean(0)
    within = F - means[y]
    U, S, Vh = torch.linalg.svd(centred / math.sqrt(K), full_matrices=False)
    keep = S > S.max() * max(K, F.shape[1]) * torch.finfo(F.dtype).eps
    proj = within @ Vh[keep].T  # (N, r)
    return float((proj.pow(2) / S[keep].pow(2)).sum() / F.shape[0] / K)


def _prepare(H, weights, y, name="y"):
    K = _check_chain(H, weights)
    y = y.long()
    _check_labels(y, K, name)
    counts = torch.bincount(y, minlength=K)
    if bool((counts == 0).any()):
        raise ValueError(f"{name} must contain every class in [0, {K - 1}], got counts {counts.tolist()}")
    return K, y


@accepts(H=Tensor("n", "d"), weights=Tensors(length="M"), y=Tensor("n", dtype="int"), example=_example_measure)
def layerwise_collapse(H: torch.Tensor, weights: Sequence[torch.Tensor], y: torch.Tensor) -> LayerwiseCollapse:
    """Balanced-case neural collapse at every layer of the deep linear model: NC1 and the simplex-ETF angles.

    References: Neural Collapse in Deep Linear Networks: From Balanced to Imbalanced Data, 2023.

    At the input of each layer :math:`m = 1..M` (features :math:`H W_1^\\top\\cdots W_{m-1}^\\top`): NC1
    :math:`\\operatorname{tr}(\\Sigma_W\\Sigma_B^+)/K` (as in :func:`paperzoo.diagnostics.neural_collapse_metrics`),
    the largest deviation of the cosines of centred class means from the ETF value :math:`-1/(K-1)`, and the
    coefficient of variation of their norms.

    Args:
        H: features, shape ``(N, d)``.
        weights: ``(W_1, ..., W_M)``.
        y: labels in ``[0, K)``, every class present, shape ``(N,)``.

    Returns:
        :class:`LayerwiseCollapse`, each field of shape ``(M,)``.

    Example:
        >>> import torch
        >>> y = torch.arange(6) % 3
        >>> H = torch.eye(3, dtype=torch.float64)[y]
        >>> r = layerwise_collapse(H, [torch.eye(3, dtype=torch.float64)], y)
        >>> float(r.nc1[0]), round(float(r.max_etf_cosine_error[0]), 12)
        (0.0, 0.0)
    """
    K, y = _prepare(H, weights, y)
    feats = _layer_features(H, weights)[:-1]
    nc1, cos_err, cv = [], [], []
    off = ~torch.eye(K, dtype=torch.bool)
    for F in feats:  # one pass per layer (M is small); everything inside is vectorised
        means, _ = _class_means(F, y, K)
        centred = means - F.mean(0)
        norms = centred.norm(dim=1)
        if bool((norms == 0).any()):
            raise ValueError("H gives a centred class mean of zero norm at some layer; the angles are undefined")
        cos = (centred @ centred.T) / (norms[:, None] * norms[None, :])
        nc1.append(_nc1(F, y, K))
        cos_err.append(float((cos[off] + 1.0 / (K - 1)).abs().max()))
        cv.append(float(norms.std(correction=0) / norms.mean()))
    t = lambda v: torch.tensor(v, dtype=H.dtype)  # noqa: E731
    return LayerwiseCollapse(t(nc1), t(cos_err), t(cv))


def _example_deviation(ctx):
    kw = _example_measure(ctx)
    K = 3
    sizes = torch.bincount(kw["y"], minlength=K).tolist()
    return {**kw, "geometry": imbalanced_mse_geometry(sizes, len(kw["weights"]), (1e-2, 1e-2), dtype=ctx.dtype)}


@accepts(H=Tensor("n", "d"), weights=Tensors(length="M"), y=Tensor("n", dtype="int"),
         geometry=Instance(ImbalancedGeometry, what="ImbalancedGeometry"), example=_example_deviation)
def imbalanced_geometry_deviation(H: torch.Tensor, weights: Sequence[torch.Tensor], y: torch.Tensor,
                                  geometry: ImbalancedGeometry) -> GeometryDeviation:
    """Deviation of a trained bias-free deep linear model from the closed-form imbalanced (orthogonal) geometry.

    References: Neural Collapse in Deep Linear Networks: From Balanced to Imbalanced Data, 2023.

    At the input of every layer and at the outputs (``m = 0..M``), the uncentred class means
    :math:`\\mu_k^{(m)}` are compared with ``geometry`` (from :func:`imbalanced_mse_geometry` with the same class
    sizes, depth and lambdas): the largest :math:`|\\cos(\\mu_k^{(m)}, \\mu_l^{(m)})|`, :math:`k \\ne l` (prediction
    0), and the relative error of :math:`\\|\\mu_k^{(m)}\\|` against ``geometry.layer_norms[m, k]``; the rows of
    :math:`W_M\\cdots W_1` against :math:`\\sigma_k`; NC1 at every layer input. A collapsed class (prediction 0)
    is left out of the cosines and its norm error is measured relative to the layer's largest predicted norm.

    Args:
        H: features, shape ``(N, d)``.
        weights: ``(W_1, ..., W_M)``.
        y: labels, shape ``(N,)``, whose class counts must be those the geometry was built for.
        geometry: an :class:`ImbalancedGeometry` with ``K`` classes and depth ``M``.

    Returns:
        :class:`GeometryDeviation`.

    Example:
        >>> import torch
        >>> geo = imbalanced_mse_geometry([2, 1], 1, (0.01, 0.01))
        >>> y = torch.tensor([0, 0, 1])
        >>> H = torch.diag(geo.feature_norms)[y]
        >>> W = torch.diag(geo.product_singular_values)
        >>> imbalanced_geometry_deviation(H, [W], y, geo).max_relative_error < 1e-12
        True
    """
    K, y = _prepare(H, weights, y)
    M = len(weights)
    if geometry.layer_norms.shape != (M + 1, K):
        raise ValueError(f"geometry must be built for depth {M} and {K} classes, got layer_norms of shape "
                         f"{tuple(geometry.layer_norms.shape)}")
    counts = torch.bincount(y, minlength=K)
    if counts.tolist() != geometry.class_sizes.tolist():
        raise ValueError(f"y must have the class sizes the geometry was built for, {geometry.class_sizes.tolist()}, "
                         f"got {counts.tolist()}")
    pred = geometry.layer_norms.to(H.dtype)
    alive = ~geometry.collapsed
    feats = _layer_features(H, weights)
    max_cos, rel, nc1 = [], [], []
    off = ~torch.eye(K, dtype=torch.bool) & alive[:, None] & alive[None, :]
    for m, F in enumerate(feats):
        means, _ = _class_means(F, y, K)
        norms = means.norm(dim=1)
        safe = torch.where(norms > 0, norms, torch.ones_like(norms))
        cos = (means @ means.T) / (safe[:, None] * safe[None, :])
        max_cos.append(float(cos[off].abs().max()) if bool(off.any()) else 0.0)
        denom = torch.where(alive, pred[m], pred[m].max().clamp_min(torch.finfo(H.dtype).tiny))
        rel.append((norms - pred[m]).abs() / denom)
        if m < M:
            nc1.append(_nc1(F, y, K))
    product = weights[0]
    for W in weights[1:]:
        product = W @ product
    sigma = geometry.product_singular_values.to(H.dtype)
    denom = torch.where(alive, sigma, sigma.max().clamp_min(torch.finfo(H.dtype).tiny))
    cls_rel = (product.norm(dim=1) - sigma).abs() / denom
    rel = torch.stack(rel)
    return GeometryDeviation(torch.tensor(max_cos, dtype=H.dtype), rel, cls_rel,
                             float(max(rel.max(), cls_rel.max())), torch.tensor(nc1, dtype=H.dtype))
