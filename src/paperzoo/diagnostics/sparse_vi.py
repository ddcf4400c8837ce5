"""Spike-and-slab mean-field variational inference for a sparse one-hidden-layer ReLU regression network.

References: Convergence Rates of Variational Inference in Sparse Deep Learning (Cherief-Abdellatif), 2020.

The paper bounds the risk of the (tempered) variational posterior of a sparse ReLU network under a spike-and-slab
prior: for a :math:`\\beta`-Hoelder regression function on :math:`[0, 1]^d`, the variational posterior's integrated
risk :math:`\\mathbb E\\int \\|f_\\theta - f_0\\|_2^2\\, \\hat q(d\\theta)` decays at the near-minimax rate
:math:`n^{-2\\beta/(2\\beta+d)}` (up to log factors), the same as exact Bayes, and choosing the architecture by the
largest ELBO keeps that rate without knowing :math:`\\beta`.

This module implements the measurement at a scale that runs on a CPU, for ``d = 1``:

* the network: one hidden layer of ReLUs with fixed inner weights on a uniform knot grid, arranged as ``K``
  "hat" units :math:`h_k(x) = (\\mathrm{relu}(x - t_{k-1}) - 2\\,\\mathrm{relu}(x - t_k) +
  \\mathrm{relu}(x - t_{k+1}))/\\delta` (:func:`hat_relu_features`, knots :math:`t_k = k\\delta`,
  :math:`\\delta = 1/(K-1)`); the output weights :math:`w \\in \\mathbb R^K` carry the prior. The width ``K`` is the
  architecture.
* the model: :math:`y_i = \\Phi(x_i)^\\top w + \\varepsilon_i`, :math:`\\varepsilon_i \\sim N(0, \\sigma^2)`
  (``noise_var``), prior :math:`w_j \\sim \\pi N(0, \\tau^2) + (1-\\pi)\\delta_0` independently (``prior_inclusion``,
  ``slab_var``), likelihood tempered by :math:`\\alpha \\in (0, 1]` (``alpha``; 1 is the usual posterior).
* the variational family: mean field :math:`q(w) = \\prod_j [\\gamma_j N(\\mu_j, s_j^2) + (1-\\gamma_j)\\delta_0]`,
  fitted by coordinate ascent on the ELBO :math:`\\alpha\\,\\mathbb E_q \\log p(y|w) - \\mathrm{KL}(q\\|p)`
  (:func:`spike_slab_cavi`); each update is exact:

  .. math::
      s_j^2 = \\Big(\\frac{\\alpha G_{jj}}{\\sigma^2} + \\frac1{\\tau^2}\\Big)^{-1},\\quad
      \\mu_j = \\frac{\\alpha s_j^2}{\\sigma^2}\\Big(b_j - \\sum_{k\\ne j} G_{jk}\\gamma_k\\mu_k\\Big),\\quad
      \\operatorname{logit}\\gamma_j = \\operatorname{logit}\\pi + \\tfrac12\\log\\frac{s_j^2}{\\tau^2}
      + \\frac{\\mu_j^2}{2 s_j^2},

  with :math:`G = \\Phi^\\top\\Phi`, :math:`b = \\Phi^\\top y`.
* the architecture choice: the width with the largest ELBO (:func:`elbo_width_selection`), and the paper's loss, the
  variational-integrated squared :math:`L_2` distance to :math:`f_0` (:func:`integrated_l2_risk`).

:func:`weierstrass_target` gives a function that is :math:`\\beta`-Hoelder and no smoother at every point, so that
the minimax rate :math:`n^{-2\\beta/(2\\beta+1)}` is the rate a single target shows.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(200, generator=g, dtype=torch.float64)
    >>> y = weierstrass_target(x, 0.5) + torch.randn(200, generator=g, dtype=torch.float64)
    >>> sel = elbo_width_selection(x, y, [2, 4, 8, 16], noise_var=1.0)
    >>> sel.width in (2, 4, 8, 16)
    True
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
import torch

from paperzoo.core.accepts import Instance, Int, Ints, Real, Tensor, accepts

__all__ = ["SpikeSlabVI", "WidthSelection", "hat_relu_features", "weierstrass_target", "spike_slab_cavi",
           "integrated_l2_risk", "elbo_width_selection"]


class SpikeSlabVI(NamedTuple):
    """Result of :func:`spike_slab_cavi`.

    Attributes:
        inclusion: :math:`\\gamma`, shape ``(p,)``, the variational inclusion probabilities.
        mean: :math:`\\mu`, shape ``(p,)``, the slab means.
        var: :math:`s^2`, shape ``(p,)``, the slab variances.
        elbo: the final ELBO (a float, nats).
        elbo_trace: ELBO after each sweep, shape ``(n_iter,)``.
        n_iter: sweeps run.
        converged: whether the ELBO change fell below ``tol``.
    """

    inclusion: torch.Tensor
    mean: torch.Tensor
    var: torch.Tensor
    elbo: float
    elbo_trace: torch.Tensor
    n_iter: int
    converged: bool

    @property
    def weight_mean(self) -> torch.Tensor:
        """:math:`\\mathbb E_q w = \\gamma\\mu`, shape ``(p,)``."""
        return self.inclusion * self.mean

    @property
    def weight_var(self) -> torch.Tensor:
        """:math:`\\mathrm{Var}_q w = \\gamma(\\mu^2 + s^2) - \\gamma^2\\mu^2`, shape ``(p,)``."""
        return self.inclusion * (self.mean ** 2 + self.var) - (self.inclusion * self.mean) ** 2


class WidthSelection(NamedTuple):
    """Result of :func:`elbo_width_selection`.

    Attributes:
        width: the selected width (largest ELBO).
        widths: the candidate widths, in the order given.
        elbos: the ELBO of each candidate, shape ``(len(widths),)``.
        fit: the :class:`SpikeSlabVI` of the selected width.
        fits: every candidate's fit, in order.
    """

    width: int
    widths: list[int]
    elbos: torch.Tensor
    fit: SpikeSlabVI
    fits: list[SpikeSlabVI]


def _example_x(ctx) -> torch.Tensor:
    return torch.rand(ctx.size("n"), generator=ctx.generator, dtype=ctx.dtype)


@accepts(x=Tensor("n"), width=Int(ge=2), example=lambda ctx: {"x": _example_x(ctx), "width": 5})
def hat_relu_features(x: torch.Tensor, width: int) -> torch.Tensor:
    """Hidden layer of hat units built from ReLUs on a uniform knot grid over [0, 1].

    References: Convergence Rates of Variational Inference in Sparse Deep Learning, 2020.

    :math:`h_k(x) = (\\mathrm{relu}(x - t_k + \\delta) - 2\\,\\mathrm{relu}(x - t_k) + \\mathrm{relu}(x - t_k -
    \\delta))/\\delta` with :math:`t_k = k\\delta`, :math:`\\delta = 1/(K-1)`, ``k = 0..K-1`` (``K = width``): three
    ReLUs per unit, equal to :math:`\\max(0, 1 - |x - t_k|/\\delta)`; on [0, 1] the units sum to 1 and span the
    piecewise-linear functions with those knots.

    Args:
        x: inputs, shape ``(n,)``.
        width: number of hat units ``K >= 2``.

    Returns:
        features, shape ``(n, K)``.

    Example:
        >>> import torch
        >>> hat_relu_features(torch.tensor([0.0, 0.25, 1.0]), 3).sum(1)
        tensor([1., 1., 1.])
    """
    delta = 1.0 / (width - 1)
    t = torch.arange(width, dtype=x.dtype, device=x.device) * delta
    u = x[:, None] - t[None, :]
    relu = torch.relu
    return (relu(u + delta) - 2.0 * relu(u) + relu(u - delta)) / delta


@accepts(x=Tensor("n"), beta=Real(gt=0, lt=1), n_terms=Int(ge=1),
         example=lambda ctx: {"x": _example_x(ctx), "beta": 0.5})
def weierstrass_target(x: torch.Tensor, beta: float, *, n_terms: int = 12) -> torch.Tensor:
    """A Weierstrass-type function that is beta-Hoelder and nowhere smoother.

    References: Convergence Rates of Variational Inference in Sparse Deep Learning, 2020 (the Hoelder class).

    :math:`f_0(x) = \\sum_{j=0}^{J-1} 2^{-j\\beta}\\cos(2^j\\pi x)` (``J = n_terms``): its best ``K``-knot
    piecewise-linear approximation errs by order :math:`K^{-\\beta}` in :math:`L_2`, so the bias-variance balance
    gives the minimax rate :math:`n^{-2\\beta/(2\\beta+1)}` while ``2^J`` exceeds the resolved width.

    Args:
        x: inputs in [0, 1], shape ``(n,)``.
        beta: smoothness in (0, 1).
        n_terms: number of dyadic frequencies ``J``.

    Returns:
        values, shape ``(n,)``.

    Example:
        >>> import torch
        >>> round(float(weierstrass_target(torch.tensor([0.0]), 0.5, n_terms=2)), 6)  # 1 + 2**-0.5
        1.707107
    """
    j = torch.arange(n_terms, dtype=x.dtype, device=x.device)
    return (2.0 ** (-beta * j) * torch.cos(math.pi * 2.0 ** j * x[:, None])).sum(1)


def _cavi_kernel(G: np.ndarray, b: np.ndarray, yy: float, n: int, noise_var: float, slab_var: float,
                 prior_inclusion: float, alpha: float, max_iter: int, tol: float):
    """Coordinate ascent on the Gram matrix (float64 numpy, unchecked); returns (gamma, mu, s2, trace, converged)."""
    p = b.shape[0]
    diag = np.diag(G).copy()
    s2 = 1.0 / (alpha * diag / noise_var + 1.0 / slab_var)
    dense = prior_inclusion >= 1.0
    logit_pi = 0.0 if dense else math.log(prior_inclusion) - math.log1p(-prior_inclusion)
    half_log_ratio = 0.5 * np.log(s2 / slab_var)
    gamma = np.full(p, 1.0 if dense else prior_inclusion)
    mu = np.zeros(p)
    r = gamma * mu
    Gr = G @ r
    trace, converged, prev = [], False, -math.inf
    for _ in range(max_iter):
        for j in range(p):
            c = b[j] - Gr[j] + diag[j] * r[j]
            mu[j] = alpha * s2[j] * c / noise_var
            if not dense:
                z = logit_pi + half_log_ratio[j] + 0.5 * mu[j] ** 2 / s2[j]
                gamma[j] = 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
            new = gamma[j] * mu[j]
            step = new - r[j]
            if step != 0.0:
                Gr += G[:, j] * step
                r[j] = new
        elbo = _elbo(G, b, yy, n, noise_var, slab_var, prior_inclusion, alpha, gamma, mu, s2, r, Gr)
        if not math.isfinite(elbo):
            raise FloatingPointError("spike_slab_cavi: the ELBO became NaN or infinite")
        trace.append(elbo)
        if abs(elbo - prev) <= tol * (1.0 + abs(elbo)):
            converged = True
            break
        prev = elbo
    return gamma, mu, s2, trace, converged


def _xlogy_ratio(q: np.ndarray, p: float) -> np.ndarray:
    out = np.zeros_like(q)
    pos = q > 0
    out[pos] = q[pos] * (np.log(q[pos]) - math.log(p))
    return out


def _elbo(G, b, yy, n, noise_var, slab_var, prior_inclusion, alpha, gamma, mu, s2, r, Gr) -> float:
    diag = np.diag(G)
    second = gamma * (mu ** 2 + s2) - r ** 2
    sq = yy - 2.0 * float(b @ r) + float(r @ Gr) + float(diag @ second)
    loglik = -0.5 * n * math.log(2 * math.pi * noise_var) - 0.5 * sq / noise_var
    kl_gauss = 0.5 * (np.log(slab_var / s2) + (s2 + mu ** 2) / slab_var - 1.0)
    kl = float(gamma @ kl_gauss)
    if prior_inclusion < 1.0:
        kl += float(_xlogy_ratio(gamma, prior_inclusion).sum() + _xlogy_ratio(1.0 - gamma, 1.0 - prior_inclusion).sum())
    return alpha * loglik - kl


def _example_design(ctx) -> dict:
    x = _example_x(ctx)
    return {"features": hat_relu_features(x, max(2, ctx.size("p"))),
            "y": torch.randn(x.shape[0], generator=ctx.generator, dtype=ctx.dtype)}


def _example_risk(ctx) -> dict:
    design = _example_design(ctx)
    fit = _spike_slab_cavi(design["features"], design["y"], 1.0, 10.0, 0.5, 1.0, 200, 1e-10)
    return {"fit": fit, "features": design["features"], "target": design["y"]}


@accepts(features=Tensor("n", "p"), y=Tensor("n"), noise_var=Real(gt=0), slab_var=Real(gt=0),
         prior_inclusion=Real(gt=0, le=1), alpha=Real(gt=0, le=1), max_iter=Int(ge=1), tol=Real(ge=0),
         example=lambda ctx: {**_example_design(ctx), "noise_var": 1.0})
def spike_slab_cavi(features: torch.Tensor, y: torch.Tensor, noise_var: float, *, slab_var: float = 10.0,
                    prior_inclusion: float = 0.5, alpha: float = 1.0, max_iter: int = 200,
                    tol: float = 1e-10) -> SpikeSlabVI:
    """Spike-and-slab mean-field variational posterior of a linear read-out, by coordinate ascent on the ELBO.

    References: Convergence Rates of Variational Inference in Sparse Deep Learning, 2020.

    Model :math:`y = \\Phi w + \\varepsilon`, :math:`\\varepsilon \\sim N(0, \\sigma^2 I)` with :math:`\\Phi` =
    ``features`` ``(n, p)``, :math:`\\sigma^2` = ``noise_var``; prior :math:`w_j \\sim \\pi N(0, \\tau^2) +
    (1-\\pi)\\delta_0` (:math:`\\pi` = ``prior_inclusion``, :math:`\\tau^2` = ``slab_var``; ``prior_inclusion = 1``
    is the Gaussian prior, then :math:`\\gamma \\equiv 1`); likelihood raised to :math:`\\alpha` = ``alpha``. The
    family and updates are those of the module docstring; the ELBO is
    :math:`\\alpha\\,\\mathbb E_q\\log p(y|w) - \\mathrm{KL}(q\\|p)` and never decreases over sweeps. Computed in
    float64 on :math:`\\Phi^\\top\\Phi` (cost ``O(n p^2)`` once, ``O(p^2)`` per sweep); results in ``y``'s dtype.

    Args:
        features: design :math:`\\Phi`, shape ``(n, p)``.
        y: responses, shape ``(n,)``.
        noise_var: :math:`\\sigma^2 > 0` (known).
        slab_var: :math:`\\tau^2 > 0`.
        prior_inclusion: :math:`\\pi \\in (0, 1]`.
        alpha: tempering :math:`\\alpha \\in (0, 1]`.
        max_iter: maximum sweeps.
        tol: stop when the relative ELBO change is at most ``tol``.

    Returns:
        :class:`SpikeSlabVI`; warns if not converged (raise ``max_iter``).

    Example:
        >>> import torch
        >>> X = torch.eye(3, dtype=torch.float64)
        >>> fit = spike_slab_cavi(X, torch.tensor([5.0, 0.0, -5.0], dtype=torch.float64), 1.0)
        >>> [round(float(v), 2) for v in fit.inclusion]
        [1.0, 0.23, 1.0]
    """
    return _spike_slab_cavi(features, y, noise_var, slab_var, prior_inclusion, alpha, max_iter, tol)


def _spike_slab_cavi(features, y, noise_var, slab_var, prior_inclusion, alpha, max_iter, tol) -> SpikeSlabVI:
    X = features.detach().to(torch.float64).cpu().numpy()
    yv = y.detach().to(torch.float64).cpu().numpy()
    G, b, yy = X.T @ X, X.T @ yv, float(yv @ yv)
    gamma, mu, s2, trace, converged = _cavi_kernel(G, b, yy, X.shape[0], float(noise_var), float(slab_var),
                                                   float(prior_inclusion), float(alpha), int(max_iter), float(tol))
    if not converged:
        warnings.warn(f"spike_slab_cavi did not converge in {max_iter} sweeps (last ELBO change above tol); "
                      "raise max_iter", RuntimeWarning, stacklevel=3)

    def back(a):
        return torch.as_tensor(a, dtype=y.dtype, device=y.device)

    return SpikeSlabVI(back(gamma), back(mu), back(s2), float(trace[-1]), back(np.asarray(trace)), len(trace),
                       converged)


@accepts(fit=Instance(SpikeSlabVI, what="SpikeSlabVI"), features=Tensor("m", "p"), target=Tensor("m"),
         example=_example_risk)
def integrated_l2_risk(fit: SpikeSlabVI, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Variational-integrated squared L2 distance to the regression function.

    References: Convergence Rates of Variational Inference in Sparse Deep Learning, 2020 (the risk it bounds).

    :math:`\\int \\|\\Phi w - f_0\\|^2 q(dw) = \\frac1m\\sum_i (\\Phi_i^\\top\\mathbb E_q w - f_0(x_i))^2 +
    \\frac1m\\sum_i\\sum_j \\Phi_{ij}^2\\mathrm{Var}_q w_j` over evaluation points :math:`x_i` (``features`` rows
    :math:`\\Phi_i`, ``target`` :math:`f_0(x_i)`; a uniform grid gives the :math:`L_2[0,1]` norm), exact under the
    mean-field :math:`q` (independent coordinates).

    Args:
        fit: a :class:`SpikeSlabVI` with ``p`` coordinates.
        features: :math:`\\Phi` at the evaluation points, shape ``(m, p)``.
        target: :math:`f_0` there, shape ``(m,)``.

    Returns:
        0-d tensor.

    Example:
        >>> import torch
        >>> X = torch.eye(2, dtype=torch.float64)
        >>> fit = spike_slab_cavi(X, torch.tensor([3.0, -3.0], dtype=torch.float64), 1.0, prior_inclusion=1.0)
        >>> bool(integrated_l2_risk(fit, X, fit.weight_mean) > 0)
        True
    """
    if fit.mean.shape[0] != features.shape[1]:
        raise ValueError(f"features must have {fit.mean.shape[0]} columns (the fit's coordinates), "
                         f"got {features.shape[1]}")
    m = features.to(fit.mean.dtype)
    bias = ((m @ fit.weight_mean - target.to(fit.mean.dtype)) ** 2).mean()
    spread = ((m ** 2) @ fit.weight_var).mean()
    return bias + spread


@accepts(x=Tensor("n"), y=Tensor("n"), widths=Ints(ge=2, min_length=1), noise_var=Real(gt=0),
         slab_var=Real(gt=0), prior_inclusion=Real(gt=0, le=1), alpha=Real(gt=0, le=1), max_iter=Int(ge=1),
         tol=Real(ge=0),
         example=lambda ctx: {"x": _example_x(ctx), "y": torch.randn(ctx.size("n"), generator=ctx.generator,
                                                                    dtype=ctx.dtype),
                              "widths": [2, 3], "noise_var": 1.0})
def elbo_width_selection(x: torch.Tensor, y: torch.Tensor, widths, noise_var: float, *, slab_var: float = 10.0,
                         prior_inclusion: float = 0.5, alpha: float = 1.0, max_iter: int = 200,
                         tol: float = 1e-10) -> WidthSelection:
    """Architecture (width) selection by the largest ELBO of the spike-and-slab variational posterior.

    References: Convergence Rates of Variational Inference in Sparse Deep Learning, 2020.

    For each width ``K`` in ``widths`` fits :func:`spike_slab_cavi` on :func:`hat_relu_features` ``(x, K)`` and
    returns the width :math:`\\hat K = \\arg\\max_K \\mathrm{ELBO}_K` (uniform prior over the candidates; ties to the
    first). The paper's model-selection result: :math:`\\hat q_{\\hat K}` attains the rate of the best architecture.

    Args:
        x: inputs in [0, 1], shape ``(n,)``.
        y: responses, shape ``(n,)``.
        widths: candidate widths (each ``>= 2``).
        noise_var, slab_var, prior_inclusion, alpha, max_iter, tol: as in :func:`spike_slab_cavi`.

    Returns:
        :class:`WidthSelection`.

    Example:
        >>> import torch
        >>> x = torch.linspace(0, 1, 50, dtype=torch.float64)
        >>> elbo_width_selection(x, 3 * x, [2, 8], 0.01).width  # a line needs two knots
        2
    """
    widths = [int(k) for k in widths]
    fits = [_spike_slab_cavi(hat_relu_features(x, k), y, noise_var, slab_var, prior_inclusion, alpha, max_iter, tol)
            for k in widths]
    elbos = torch.tensor([f.elbo for f in fits], dtype=y.dtype)
    best = int(elbos.argmax())
    return WidthSelection(widths[best], widths, elbos, fits[best], fits)
