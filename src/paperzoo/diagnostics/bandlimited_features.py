"""Bandlimited random networks: random hidden features from a bounded parameter domain and their readout fit.

References: How Powerful are Shallow Neural Networks with Bandlimited Random Weights? (Li, Sonoda, Cao, Wang,
Liang), 2023.

A depth-2 random net is :math:`g(x) = \\sum_{j=1}^{N} c_j \\, \\sigma(a_j \\cdot x - b_j)`: the hidden parameters
:math:`(a_j, b_j)` are drawn once from a data-independent law :math:`Q(a, b)` and frozen, only the readout
:math:`c` is fitted. The law is *bandlimited* when it lives on a bounded domain, here the box
:math:`\\|a\\|_\\infty \\le B`, :math:`|b| \\le B_b`. The paper proves, by ridgelet analysis, that such a net (as
an integral representation with a square-integrable coefficient density on the domain) cannot approximate every
target to zero error: the error is bounded below by the part of the target's ridgelet spectrum that lies outside the
domain, so targets whose frequencies exceed what slopes :math:`|a| \\le B` can express keep a positive error.

The pieces here:

* :func:`sample_hidden_parameters`: :math:`a_j \\sim U[-B, B]^m` (``dist="uniform"``, bandlimited) or
  :math:`a_j \\sim N(0, B^2 I_m)` (``dist="gaussian"``, the unbounded comparison), :math:`b_j \\sim U[-B_b, B_b]`.
* :func:`random_feature_map`: :math:`\\Phi_{ij} = \\sigma(a_j \\cdot x_i - b_j) / \\sqrt{N}`. The :math:`1/\\sqrt N`
  makes :math:`\\Phi \\Phi^\\top` converge to the random-feature kernel
  :math:`k(x, x') = E_Q[\\sigma(a \\cdot x - b) \\sigma(a \\cdot x' - b)]` as :math:`N \\to \\infty`, so a fixed
  ridge means the same coefficient-norm budget at every width.
* :func:`fit_readout`: the ridge readout :math:`c = \\arg\\min_c \\frac1n \\|\\Phi c - y\\|^2 + \\rho \\|c\\|^2`,
  solved in closed form (primal :math:`(\\Phi^\\top\\Phi + n\\rho I) c = \\Phi^\\top y` when :math:`N \\le n`, dual
  :math:`c = \\Phi^\\top (\\Phi\\Phi^\\top + n\\rho I)^{-1} y` otherwise; Cholesky, float64 recommended).
* :func:`random_net_error`: draws the features, fits the readout on ``(x_train, y_train)`` and reports the test MSE
  relative to the test-target variance.

Not implemented: the paper's explicit ridgelet lower-bound formula. Note also that for an analytic activation
(tanh) the span of :math:`\\{\\sigma(a x - b)\\}` over slopes in any open interval is dense, so with *unbounded*
readout weights the error can be driven to zero in exact arithmetic; the bandlimited limitation is a statement about
coefficient densities of bounded norm, which the ridge :math:`\\rho` stands in for here.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Choice, FloatDType, Generator, Int, Real, Tensor, accepts

__all__ = ["HiddenParameters", "sample_hidden_parameters", "random_feature_map", "Readout", "fit_readout",
           "RandomNetFit", "random_net_error", "ACTIVATIONS"]

ACTIVATIONS = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "cos": torch.cos,
}


class HiddenParameters(NamedTuple):
    """Frozen hidden parameters of a random net.

    Attributes:
        weights: slopes :math:`a_j`, shape ``(N, m)``.
        biases: offsets :math:`b_j`, shape ``(N,)``.
    """

    weights: torch.Tensor
    biases: torch.Tensor


@accepts(n_hidden=Int(ge=1), in_features=Int(ge=1), bound=Real(gt=0), bias_bound=Real(ge=0, optional=True),
         dist=Choice("uniform", "gaussian"), generator=Generator(), dtype=FloatDType())
def sample_hidden_parameters(n_hidden: int, in_features: int, bound: float, *, bias_bound: float | None = None,
                             dist: str = "uniform", generator: torch.Generator | None = None,
                             dtype: torch.dtype = torch.float64) -> HiddenParameters:
    """Hidden parameters of a bandlimited (or, for comparison, Gaussian) random net.

    References: How Powerful are Shallow Neural Networks with Bandlimited Random Weights?, 2023.

    ``dist="uniform"``: :math:`a_j \\sim U[-B, B]^m` with :math:`B` = ``bound`` (bounded domain);
    ``dist="gaussian"``: :math:`a_j \\sim N(0, B^2 I_m)` (unbounded support, same scale). In both,
    :math:`b_j \\sim U[-B_b, B_b]` with :math:`B_b` = ``bias_bound`` (default ``bound``).

    Returns:
        :class:`HiddenParameters` with ``weights`` ``(n_hidden, in_features)`` and ``biases`` ``(n_hidden,)``.

    Example:
        >>> p = sample_hidden_parameters(1000, 2, 5.0, generator=torch.Generator().manual_seed(0))
        >>> p.weights.shape, bool(p.weights.abs().max() <= 5.0), bool(p.biases.abs().max() <= 5.0)
        (torch.Size([1000, 2]), True, True)
    """
    bb = float(bound) if bias_bound is None else float(bias_bound)
    if dist == "uniform":
        a = (2 * torch.rand(n_hidden, in_features, generator=generator, dtype=dtype) - 1) * bound
    else:
        a = torch.randn(n_hidden, in_features, generator=generator, dtype=dtype) * bound
    b = (2 * torch.rand(n_hidden, generator=generator, dtype=dtype) - 1) * bb
    return HiddenParameters(a, b)


def _feature_map(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, activation: str) -> torch.Tensor:
    return ACTIVATIONS[activation](x @ a.T - b) / math.sqrt(a.shape[0])


def _example_map(ctx):
    g = ctx.generator
    return {"x": torch.randn(5, 2, generator=g, dtype=ctx.dtype), "weights": torch.randn(4, 2, generator=g,
            dtype=ctx.dtype), "biases": torch.randn(4, generator=g, dtype=ctx.dtype)}


@accepts(x=Tensor("n", "m"), weights=Tensor("N", "m"), biases=Tensor("N"),
         activation=Choice(*ACTIVATIONS), example=_example_map)
def random_feature_map(x: torch.Tensor, weights: torch.Tensor, biases: torch.Tensor, *,
                       activation: str = "tanh") -> torch.Tensor:
    """The hidden-layer feature matrix :math:`\\Phi_{ij} = \\sigma(a_j \\cdot x_i - b_j) / \\sqrt N` of a random net.

    References: How Powerful are Shallow Neural Networks with Bandlimited Random Weights?, 2023.

    Args:
        x: inputs, shape ``(n, m)``.
        weights: slopes :math:`a_j`, shape ``(N, m)``.
        biases: offsets :math:`b_j`, shape ``(N,)``.
        activation: :math:`\\sigma`, one of ``tanh``, ``sigmoid``, ``relu``, ``cos``.

    Returns:
        Shape ``(n, N)``.

    Example:
        >>> random_feature_map(torch.zeros(1, 1), torch.ones(4, 1), torch.zeros(4)).tolist()
        [[0.0, 0.0, 0.0, 0.0]]
    """
    return _feature_map(x, weights, biases, activation)


class Readout(NamedTuple):
    """A fitted ridge readout.

    Attributes:
        coef: :math:`c`, shape ``(N,)``.
        train_mse: :math:`\\frac1n\\|\\Phi c - y\\|^2` (float).
        coef_norm: :math:`\\|c\\|_2` (float).
        solver: ``"primal"`` or ``"dual"``.
        jitter: extra diagonal added for the Cholesky factorisation to succeed (0.0 when none was needed).
    """

    coef: torch.Tensor
    train_mse: float
    coef_norm: float
    solver: str
    jitter: float


def _cholesky_solve(A: torch.Tensor, rhs: torch.Tensor) -> tuple[torch.Tensor, float]:
    if not bool(torch.isfinite(A).all()):
        raise ValueError("fit_readout: the Gram matrix overflows (non-finite entries); rescale the features")
    jitter = 0.0
    scale = float(A.diagonal().abs().mean()) or 1.0
    for _ in range(6):
        L, info = torch.linalg.cholesky_ex(A + jitter * torch.eye(A.shape[0], dtype=A.dtype, device=A.device))
        if int(info) == 0:
            return torch.cholesky_solve(rhs.unsqueeze(-1), L).squeeze(-1), jitter
        jitter = scale * torch.finfo(A.dtype).eps * 10 if jitter == 0.0 else jitter * 100
    raise ValueError("fit_readout: the regularised Gram matrix is not positive definite even with jitter; "
                     "increase ridge or use float64")


def _fit_readout(features: torch.Tensor, targets: torch.Tensor, ridge: float) -> Readout:
    n, N = features.shape
    if N <= n:
        A = features.T @ features + n * ridge * torch.eye(N, dtype=features.dtype, device=features.device)
        coef, jitter = _cholesky_solve(A, features.T @ targets)
        solver = "primal"
    else:
        K = features @ features.T + n * ridge * torch.eye(n, dtype=features.dtype, device=features.device)
        alpha, jitter = _cholesky_solve(K, targets)
        coef, solver = features.T @ alpha, "dual"
    if not bool(torch.isfinite(coef).all()):
        raise ValueError("fit_readout: the readout has non-finite entries (features or targets overflow)")
    if jitter > 0.0:
        warnings.warn(f"fit_readout: added jitter {jitter:.3g} to the diagonal; increase ridge (now {ridge:g}) "
                      "or use float64", RuntimeWarning, stacklevel=3)
    mse = float(((features @ coef - targets) ** 2).mean())
    return Readout(coef, mse, float(coef.norm()), solver, jitter)


def _example_fit(ctx):
    g = ctx.generator
    return {"features": torch.randn(6, 4, generator=g, dtype=ctx.dtype),
            "targets": torch.randn(6, generator=g, dtype=ctx.dtype), "ridge": 1e-3}


@accepts(features=Tensor("n", "N"), targets=Tensor("n"), ridge=Real(gt=0), example=_example_fit)
def fit_readout(features: torch.Tensor, targets: torch.Tensor, ridge: float) -> Readout:
    """The ridge readout of a random net, :math:`\\arg\\min_c \\frac1n\\|\\Phi c - y\\|^2 + \\rho\\|c\\|^2`.

    References: How Powerful are Shallow Neural Networks with Bandlimited Random Weights?, 2023.

    Closed form by Cholesky: primal :math:`(\\Phi^\\top\\Phi + n\\rho I)c = \\Phi^\\top y` for ``N <= n``, dual
    :math:`c = \\Phi^\\top(\\Phi\\Phi^\\top + n\\rho I)^{-1} y` otherwise (the same minimiser). Warns if a jitter had to
    be added for the factorisation; raises on non-finite output.

    Args:
        features: :math:`\\Phi`, shape ``(n, N)``.
        targets: :math:`y`, shape ``(n,)``.
        ridge: :math:`\\rho > 0`.

    Returns:
        :class:`Readout`.

    Example:
        >>> fit = fit_readout(torch.eye(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64), 1 / 3)
        >>> [round(v, 6) for v in fit.coef.tolist()], fit.solver    # c = y / (1 + n rho) = 1/2
        ([0.5, 0.5, 0.5], 'primal')
    """
    return _fit_readout(features, targets, ridge)


class RandomNetFit(NamedTuple):
    """Test error of one fitted random net.

    Attributes:
        relative_error: test MSE divided by the variance of ``y_test`` (float).
        test_mse: mean squared test error (float).
        train_mse: mean squared training error (float).
        coef_norm: :math:`\\|c\\|_2` (float).
        n_hidden: :math:`N`.
        solver: as in :class:`Readout`.
    """

    relative_error: float
    test_mse: float
    train_mse: float
    coef_norm: float
    n_hidden: int
    solver: str


def _example_error(ctx):
    g = ctx.generator
    x = torch.rand(20, 1, generator=g, dtype=ctx.dtype)
    xs = torch.rand(9, 1, generator=g, dtype=ctx.dtype)
    return {"x_train": x, "y_train": torch.sin(3 * x[:, 0]), "x_test": xs, "y_test": torch.sin(3 * xs[:, 0]),
            "n_hidden": 8, "bound": 2.0, "ridge": 1e-3}


@accepts(x_train=Tensor("n", "m"), y_train=Tensor("n"), x_test=Tensor("t", "m"), y_test=Tensor("t"),
         n_hidden=Int(ge=1), bound=Real(gt=0), bias_bound=Real(ge=0, optional=True),
         activation=Choice(*ACTIVATIONS), dist=Choice("uniform", "gaussian"), ridge=Real(gt=0),
         generator=Generator(), example=_example_error)
def random_net_error(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                     n_hidden: int, bound: float, *, bias_bound: float | None = None, activation: str = "tanh",
                     dist: str = "uniform", ridge: float = 1e-8,
                     generator: torch.Generator | None = None) -> RandomNetFit:
    """Relative test error of a depth-2 random net with hidden parameters from a bounded (or Gaussian) law.

    References: How Powerful are Shallow Neural Networks with Bandlimited Random Weights?, 2023.

    Draws :func:`sample_hidden_parameters` (``n_hidden``, ``bound`` :math:`B`, ``bias_bound`` :math:`B_b`,
    ``dist``), builds :func:`random_feature_map` on both sets, fits :func:`fit_readout` with ridge :math:`\\rho` on
    the training set and returns :math:`\\frac1t\\|\\Phi_{test} c - y_{test}\\|^2 / \\mathrm{Var}(y_{test})`.

    Args:
        x_train, y_train: shapes ``(n, m)``, ``(n,)``.
        x_test, y_test: shapes ``(t, m)``, ``(t,)`` (``y_test`` must not be constant).

    Example:
        >>> x = torch.linspace(-3, 3, 200, dtype=torch.float64)[:, None]
        >>> fit = random_net_error(x, torch.sin(x[:, 0]), x, torch.sin(x[:, 0]), 200, 3.0, bias_bound=9.0,
        ...                        generator=torch.Generator().manual_seed(0))
        >>> fit.relative_error < 1e-6
        True
    """
    var = float(y_test.var(unbiased=False))
    if var <= 0.0:
        raise ValueError("y_test must not be constant (its variance normalises the error), got variance 0")
    p = sample_hidden_parameters(n_hidden, x_train.shape[1], bound, bias_bound=bias_bound, dist=dist,
                                 generator=generator, dtype=x_train.dtype)
    fit = _fit_readout(_feature_map(x_train, p.weights, p.biases, activation), y_train, ridge)
    mse = float(((_feature_map(x_test, p.weights, p.biases, activation) @ fit.coef - y_test) ** 2).mean())
    return RandomNetFit(mse / var, mse, fit.train_mse, fit.coef_norm, n_hidden, fit.solver)
