"""Unsupervised pretraining then ERM on a Gaussian-mixture representation, its supervised-only baseline and risks.

References: On the Provable Advantage of Unsupervised Pretraining (Ge, Tang, Fan, Jin), 2024.

The framework: a latent-variable model class :math:`\\Phi` is fitted by maximum likelihood to ``m`` unlabeled inputs
(pretraining), and a downstream class :math:`\\Psi` acting on the learned representation is fitted by empirical
risk minimisation to ``n`` labeled pairs. Under the paper's "informative" condition the downstream excess risk is
:math:`\\tilde O(\\sqrt{C_\\Phi/m} + \\sqrt{C_\\Psi/n})`, against :math:`\\tilde O(\\sqrt{C_{\\Phi\\circ\\Psi}/n})` for
a learner that sees only the ``n`` labeled pairs. The Gaussian-mixture instance implemented here (our own
concrete choice of the paper's mixture example, whose exact classes were not read):

- :math:`\\Phi`: isotropic mixtures :math:`x \\mid z=k \\sim N(u_k, \\sigma_k^2 I_d)`, :math:`P(z=k) = w_k`,
  ``K = num_components``; pretraining is EM (:func:`gaussian_mixture_em`), which ascends the likelihood. With a
  known shared variance (``variance=sigma**2``) the M-step updates ``w`` and ``u`` only; with ``variance=None`` it
  also updates one variance per component, exactly as scikit-learn's ``GaussianMixture(covariance_type="spherical")``.
- the representation: the posterior :math:`p(z \\mid x)` of the fitted mixture (:func:`mixture_posterior`), used
  through its arg-max :math:`\\hat z(x)`;
- :math:`\\Psi`: maps :math:`\\psi: [K] \\to [L]`, either bijections (``downstream="permutation"``, ``K = L``, the
  labels name the clusters up to relabelling: :math:`C_\\Psi = \\log K!`) or all maps (``downstream="map"``);
  ERM minimises the labeled 0-1 loss of :math:`\\psi(\\hat z(x))` (:func:`erm_label_map`; exact, by an
  assignment problem or by majority vote per cluster);
- supervised-only: the maximum-likelihood fit of the same composite model from the labeled pairs alone (class means
  and frequencies with the known variance, :func:`supervised_plugin_rule`), whose complexity grows with ``d K``.

With a known shared variance both learners predict with a linear rule :math:`\\arg\\max_l (W x + c)_l`, so for two
classes their 0-1 risk under a true two-component mixture is closed form (:func:`linear_rule_risk`), as is the Bayes
risk (:func:`two_component_bayes_error`; :math:`\\Phi(-\\|\\mu\\|/\\sigma)` for means :math:`\\pm\\mu`, equal weights).

Shapes: ``X_unlabeled`` ``(m, d)``, ``X_labeled`` ``(n, d)``, ``y_labeled`` ``(n,)`` integers in ``[0, L)``; fitted
means ``(K, d)``, weights and variances ``(K,)``, label rule ``W`` ``(L, d)`` and ``c`` ``(L,)``.

Example:
    >>> import torch
    >>> from paperzoo.diagnostics.pretraining import (linear_rule_risk, pretrain_then_erm,
    ...                                            two_component_bayes_error)
    >>> g = torch.Generator().manual_seed(0)
    >>> mu = torch.zeros(20, dtype=torch.float64); mu[0] = 3.0
    >>> z = torch.randint(0, 2, (2000,), generator=g)
    >>> X = (2 * z[:, None] - 1) * mu + torch.randn(2000, 20, generator=g, dtype=torch.float64)
    >>> out = pretrain_then_erm(X[:1990], X[1990:], z[1990:], 2, variance=1.0)
    >>> out.label_map.tolist(), out.fit.converged
    ([0, 1], True)
    >>> risk = linear_rule_risk(out.weight, out.bias, torch.stack([-mu, mu]), torch.tensor([0, 1]))
    >>> bayes = two_component_bayes_error(torch.stack([-mu, mu]), sigma=1.0)   # Phi(-3)
    >>> round(bayes, 5), 0 <= risk - bayes < 1e-4
    (0.00135, True)
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Choice, Generator, Int, Real, Tensor, accepts

__all__ = ["GaussianMixtureFit", "PretrainThenERM", "gaussian_mixture_em", "mixture_posterior", "erm_label_map",
           "pretrain_then_erm", "supervised_plugin_rule", "linear_rule_risk", "two_component_bayes_error"]

_DOWNSTREAM = ("permutation", "map")
_INITS = ("spectral", "random")


class GaussianMixtureFit(NamedTuple):
    """Result of :func:`gaussian_mixture_em`.

    Attributes:
        weights: mixing weights :math:`w_k`, shape ``(K,)``.
        means: component means :math:`u_k`, shape ``(K, d)``.
        variances: per-component isotropic variances :math:`\\sigma_k^2`, shape ``(K,)`` (all equal to the fixed
            ``variance`` when one was given).
        log_likelihood: mean log-likelihood per sample at the parameters before the last M-step (scikit-learn's
            ``lower_bound_``).
        n_iter: EM iterations run.
        converged: the change of ``log_likelihood`` fell below ``tol``.
    """

    weights: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor
    log_likelihood: float
    n_iter: int
    converged: bool


class PretrainThenERM(NamedTuple):
    """Result of :func:`pretrain_then_erm`.

    Attributes:
        fit: the pretrained mixture (:class:`GaussianMixtureFit`).
        label_map: :math:`\\psi`, the label of each component, shape ``(K,)`` (int64).
        labeled_error: the 0-1 loss of :math:`\\psi(\\hat z(x))` on the labeled pairs (the ERM objective).
        weight, bias: the linear rule :math:`\\arg\\max_l (W x + c)_l` the pipeline predicts with, shapes
            ``(L, d)`` and ``(L,)``; ``None`` unless the variance is shared (``variance`` given) and ``psi`` is a
            bijection (then the rule is exact).
    """

    fit: GaussianMixtureFit
    label_map: torch.Tensor
    labeled_error: float
    weight: torch.Tensor | None
    bias: torch.Tensor | None


# -- examples for the declarations ------------------------------------------------------------------------------


def _mixture_example(ctx, with_labels: bool = False) -> dict:
    g, K = ctx.generator, 2
    m, d = 8 + ctx.size("m"), ctx.size("d") + 1
    means = 4.0 * torch.randn(K, d, generator=g, dtype=ctx.dtype)
    z = torch.arange(m) % K
    X = means[z] + torch.randn(m, d, generator=g, dtype=ctx.dtype)
    if not with_labels:
        return {"X": X, "means_init": means + 0.1 * torch.randn(K, d, generator=g, dtype=ctx.dtype)}
    n = 4 + ctx.size("n")
    y = torch.arange(n) % K
    X_labeled = means[y] + torch.randn(n, d, generator=g, dtype=ctx.dtype)
    return {"X_unlabeled": X, "X_labeled": X_labeled, "y_labeled": y, "num_components": K}


def _rule_example(ctx) -> dict:
    g, d = ctx.generator, ctx.size("d") + 1
    return {"weight": torch.randn(2, d, generator=g, dtype=ctx.dtype),
            "bias": torch.randn(2, generator=g, dtype=ctx.dtype),
            "means": torch.randn(2, d, generator=g, dtype=ctx.dtype), "labels": torch.tensor([0, 1])}


# -- EM (pretraining) --------------------------------------------------------------------------------------------


def _log_joint(X, weights, means, variances):
    """``log w_k + log N(x_i; u_k, var_k I)``, shape ``(n, K)``, without forming ``(n, K, d)``."""
    d = X.shape[1]
    sq = (X * X).sum(1, keepdim=True) - 2.0 * X @ means.T + (means * means).sum(1)
    sq = sq.clamp_min(0.0)
    return (weights.log() - 0.5 * (d * math.log(2 * math.pi) + d * variances.log()) - 0.5 * sq / variances)


def _em(X, weights, means, variances, fixed_variance, max_iter, tol, reg_covar):
    n, d = X.shape
    eps = 10.0 * torch.finfo(X.dtype).eps  # scikit-learn's guard against empty components
    X2 = X * X
    lower = -math.inf
    converged, it = False, 0
    for it in range(1, max_iter + 1):
        previous = lower
        log_joint = _log_joint(X, weights, means, variances)
        log_norm = torch.logsumexp(log_joint, 1, keepdim=True)
        resp = (log_joint - log_norm).exp()
        lower = float(log_norm.mean())
        if not math.isfinite(lower):
            raise ValueError("EM produced a non-finite log-likelihood; increase reg_covar or check X for "
                             "extreme values")
        nk = resp.sum(0) + eps
        weights = nk / nk.sum()
        sums = resp.T @ X
        means = sums / nk[:, None]
        if fixed_variance is None:
            # spherical variance: mean over features of E_resp[(x - u_k)^2]
            avg_x2 = (resp.T @ X2) / nk[:, None]
            variances = (avg_x2 - 2.0 * means * sums / nk[:, None] + means * means).mean(1) + reg_covar
        if abs(lower - previous) < tol:
            converged = True
            break
    if not converged:
        warnings.warn(f"EM did not converge in {max_iter} iterations (change of the mean log-likelihood above "
                      f"tol={tol}); increase max_iter or tol", RuntimeWarning, stacklevel=3)
    return GaussianMixtureFit(weights, means, variances, lower, it, converged)


@accepts(X=Tensor("m", "d"), means_init=Tensor("K", "d"), weights_init=Tensor("K", positive_mass=True, optional=True),
         variances_init=Tensor("K", optional=True), variance=Real(gt=0, optional=True), max_iter=Int(ge=1),
         tol=Real(ge=0), reg_covar=Real(ge=0), example=_mixture_example)
def gaussian_mixture_em(X: torch.Tensor, means_init: torch.Tensor, *, weights_init: torch.Tensor | None = None,
                        variances_init: torch.Tensor | None = None, variance: float | None = None,
                        max_iter: int = 100, tol: float = 1e-3, reg_covar: float = 1e-6) -> GaussianMixtureFit:
    """Maximum-likelihood pretraining of an isotropic Gaussian mixture by EM.

    References: On the Provable Advantage of Unsupervised Pretraining (Ge, Tang, Fan, Jin), 2024 (the MLE step
    of the framework, Gaussian-mixture instance).

    E-step: :math:`r_{ik} \\propto w_k N(x_i; u_k, \\sigma_k^2 I)`; M-step: :math:`n_k = \\sum_i r_{ik}`,
    :math:`w_k = n_k / n`, :math:`u_k = \\sum_i r_{ik} x_i / n_k`, and, when ``variance`` is ``None``,
    :math:`\\sigma_k^2 = \\frac{1}{d n_k}\\sum_i r_{ik}\\|x_i - u_k\\|^2 + \\text{reg\\_covar}`; otherwise every
    :math:`\\sigma_k^2` stays equal to ``variance`` (the model class with a known shared variance). Stops when the
    mean log-likelihood changes by less than ``tol``. Same iteration as scikit-learn's ``GaussianMixture``
    (``covariance_type="spherical"``) started from the same weights, means and precisions.

    Args:
        X: data, shape ``(m, d)``.
        means_init: initial means :math:`u_k`, shape ``(K, d)``.
        weights_init: initial weights, shape ``(K,)`` (normalised here); default uniform.
        variances_init: initial per-component variances, shape ``(K,)``, positive; default the mean per-feature
            variance of ``X``; ignored when ``variance`` is given.
        variance: a known shared variance :math:`\\sigma^2` (not updated), or ``None`` to learn one per component.
        max_iter, tol: iteration limit and tolerance on the change of the mean log-likelihood.
        reg_covar: added to learned variances (scikit-learn's ``reg_covar``).

    Returns:
        :class:`GaussianMixtureFit`. Warns (``RuntimeWarning``) when ``max_iter`` is reached first.

    Example:
        >>> import torch
        >>> X = torch.tensor([[-2.0], [-2.2], [2.0], [2.1]], dtype=torch.float64)
        >>> fit = gaussian_mixture_em(X, torch.tensor([[-1.0], [1.0]], dtype=torch.float64), variance=0.1)
        >>> [round(v, 2) for v in fit.means.flatten().tolist()]
        [-2.1, 2.05]
    """
    K = means_init.shape[0]
    if variances_init is not None and bool((variances_init <= 0).any()):
        raise ValueError(f"variances_init must be > 0 entrywise, got a minimum of {float(variances_init.min())!r}")
    weights = (torch.full((K,), 1.0 / K, dtype=X.dtype, device=X.device) if weights_init is None
               else weights_init / weights_init.sum())
    if variance is not None:
        variances = torch.full((K,), float(variance), dtype=X.dtype, device=X.device)
    elif variances_init is not None:
        variances = variances_init.clone()
    else:
        variances = X.var(0, unbiased=False).mean().clamp_min(reg_covar if reg_covar > 0 else 1e-12).expand(K).clone()
    return _em(X, weights, means_init.clone(), variances, variance, max_iter, tol, reg_covar)


@accepts(X=Tensor("n", "d"), weights=Tensor("K", positive_mass=True), means=Tensor("K", "d"),
         variances=Tensor("K"), example=lambda ctx: {
             "X": torch.randn(5, 3, generator=ctx.generator, dtype=ctx.dtype),
             "weights": torch.tensor([0.3, 0.7], dtype=ctx.dtype),
             "means": torch.randn(2, 3, generator=ctx.generator, dtype=ctx.dtype),
             "variances": torch.tensor([1.0, 2.0], dtype=ctx.dtype)})
def mixture_posterior(X: torch.Tensor, weights: torch.Tensor, means: torch.Tensor,
                      variances: torch.Tensor) -> torch.Tensor:
    """Posterior of the latent cluster, :math:`p(z = k \\mid x_i)`, of an isotropic Gaussian mixture.

    References: On the Provable Advantage of Unsupervised Pretraining (Ge, Tang, Fan, Jin), 2024 (the
    representation passed to the downstream class).

    :math:`p(z=k \\mid x) = w_k N(x; u_k, \\sigma_k^2 I) / \\sum_j w_j N(x; u_j, \\sigma_j^2 I)`, in the log domain.

    Args:
        X: inputs, shape ``(n, d)``. weights: ``(K,)`` (normalised here). means: ``(K, d)``.
        variances: ``(K,)``, positive.

    Returns:
        Responsibilities, shape ``(n, K)``, rows summing to 1.

    Example:
        >>> import torch
        >>> p = mixture_posterior(torch.zeros(1, 2), torch.ones(2), torch.tensor([[1.0, 0], [-1.0, 0]]),
        ...                       torch.ones(2))
        >>> p.tolist()
        [[0.5, 0.5]]
    """
    if bool((variances <= 0).any()):
        raise ValueError(f"variances must be > 0 entrywise, got a minimum of {float(variances.min())!r}")
    log_joint = _log_joint(X, weights / weights.sum(), means, variances)
    return (log_joint - torch.logsumexp(log_joint, 1, keepdim=True)).exp()


# -- ERM over the downstream class ---------------------------------------------------------------------------------


def _erm_label_map(z_hat, y, K, L, downstream):
    counts = torch.zeros(K, L, dtype=torch.float64)
    counts.index_put_((z_hat.cpu(), y.cpu()), torch.ones(len(y), dtype=torch.float64), accumulate=True)
    if downstream == "permutation":
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(counts.numpy(), maximize=True)
        psi = torch.as_tensor(cols, dtype=torch.int64)[torch.as_tensor(rows).argsort()]
    else:
        majority = int(counts.sum(0).argmax())  # clusters no labeled point fell in get the overall majority label
        psi = torch.where(counts.sum(1) > 0, counts.argmax(1), torch.tensor(majority))
    errors = len(y) - float(counts[torch.arange(K), psi].sum())
    return psi.to(z_hat.device), errors / len(y)


@accepts(z_hat=Tensor("n", dtype="int", low=0), y=Tensor("n", dtype="int", low=0), num_components=Int(ge=1),
         num_labels=Int(ge=1), downstream=Choice(*_DOWNSTREAM),
         example=lambda ctx: {"z_hat": torch.tensor([0, 1, 1, 0, 1]), "y": torch.tensor([1, 0, 0, 1, 1]),
                              "num_components": 2, "num_labels": 2})
def erm_label_map(z_hat: torch.Tensor, y: torch.Tensor, num_components: int, num_labels: int, *,
                  downstream: str = "permutation") -> tuple[torch.Tensor, float]:
    """Empirical risk minimisation of the downstream map :math:`\\psi: [K] \\to [L]` under the 0-1 loss.

    References: On the Provable Advantage of Unsupervised Pretraining (Ge, Tang, Fan, Jin), 2024 (the ERM step).

    Minimises :math:`\\frac1n \\sum_i 1[\\psi(\\hat z_i) \\ne y_i]` exactly: over bijections
    (``downstream="permutation"``, ``K = L``) as a maximum-weight assignment on the ``(K, L)`` count matrix; over all
    maps (``"map"``) by the majority label of each cluster (the overall majority for clusters without labels).

    Args:
        z_hat: cluster of each labeled point, shape ``(n,)``, integers in ``[0, K)``.
        y: labels, shape ``(n,)``, integers in ``[0, L)``.
        num_components: ``K``. num_labels: ``L``. downstream: ``"permutation"`` or ``"map"``.

    Returns:
        ``(psi, labeled_error)``: ``psi`` shape ``(K,)`` int64, and the minimised 0-1 loss.

    Example:
        >>> import torch
        >>> psi, err = erm_label_map(torch.tensor([0, 0, 1, 1]), torch.tensor([1, 1, 0, 1]), 2, 2)
        >>> psi.tolist(), err
        ([1, 0], 0.25)
    """
    if downstream == "permutation" and num_components != num_labels:
        raise ValueError(f"num_labels must equal num_components for downstream='permutation', got {num_labels} "
                         f"and {num_components}")
    if int(z_hat.max()) >= num_components:
        raise ValueError(f"z_hat must have entries < num_components = {num_components}, got {int(z_hat.max())}")
    if int(y.max()) >= num_labels:
        raise ValueError(f"y must have entries < num_labels = {num_labels}, got {int(y.max())}")
    return _erm_label_map(z_hat, y, num_components, num_labels, downstream)


def _spectral_init(X, variance):
    """Two means ``c +- r v``: ``v`` the top principal direction, ``r`` from its excess variance (moments)."""
    c = X.mean(0)
    Xc = X - c
    _, S, Vh = torch.linalg.svd(Xc, full_matrices=False)
    lam = float(S[0]) ** 2 / X.shape[0]
    noise = variance if variance is not None else float((S[1:] ** 2).sum()) / X.shape[0] / max(X.shape[1] - 1, 1)
    r = math.sqrt(max(lam - noise, 1e-12 * max(lam, 1.0)))
    return torch.stack([c - r * Vh[0], c + r * Vh[0]])


@accepts(X_unlabeled=Tensor("m", "d"), X_labeled=Tensor("n", "d"), y_labeled=Tensor("n", dtype="int", low=0),
         num_components=Int(ge=1), num_labels=Int(ge=1, optional=True), downstream=Choice(*_DOWNSTREAM),
         variance=Real(gt=0, optional=True), init=Choice(*_INITS), max_iter=Int(ge=1), tol=Real(ge=0),
         reg_covar=Real(ge=0), generator=Generator(),
         example=lambda ctx: _mixture_example(ctx, with_labels=True))
def pretrain_then_erm(X_unlabeled: torch.Tensor, X_labeled: torch.Tensor, y_labeled: torch.Tensor,
                      num_components: int, *, num_labels: int | None = None, downstream: str = "permutation",
                      variance: float | None = None, init: str = "spectral", max_iter: int = 200,
                      tol: float = 1e-6, reg_covar: float = 1e-6,
                      generator: torch.Generator | None = None) -> PretrainThenERM:
    """MLE pretraining of a Gaussian mixture on unlabeled data, then ERM of the label map on labeled data.

    References: On the Provable Advantage of Unsupervised Pretraining (Ge, Tang, Fan, Jin), 2024 (the two-phase
    algorithm: MLE over :math:`\\Phi` on ``m`` unlabeled points, ERM over :math:`\\Psi` on ``n`` labeled points).

    1. :math:`\\hat\\phi`: :func:`gaussian_mixture_em` on ``X_unlabeled``, started from ``init``: ``"spectral"``
       (``K = 2``: the mean plus and minus the top principal direction scaled by its excess variance) or
       ``"random"`` (``K`` distinct rows of ``X_unlabeled`` drawn with ``generator``).
    2. :math:`\\hat z(x) = \\arg\\max_k p_{\\hat\\phi}(z=k \\mid x)` on ``X_labeled``.
    3. :math:`\\hat\\psi`: :func:`erm_label_map` of :math:`\\hat z` against ``y_labeled``; the prediction at a new
       ``x`` is :math:`\\hat\\psi(\\hat z(x))`.

    Args:
        X_unlabeled: ``(m, d)``, ``m >= K``. X_labeled: ``(n, d)``. y_labeled: ``(n,)`` labels in ``[0, L)``.
        num_components: ``K``. num_labels: ``L`` (default ``K``). downstream: ``"permutation"`` or ``"map"``.
        variance: known shared variance of the model class (``None``: learned per component).
        init, generator: EM start. max_iter, tol, reg_covar: as in :func:`gaussian_mixture_em`.

    Returns:
        :class:`PretrainThenERM`.

    Example:
        >>> import torch
        >>> X = torch.tensor([[-2.0], [-2.1], [-1.9], [2.0], [2.2], [1.8]], dtype=torch.float64)
        >>> out = pretrain_then_erm(X, X[[0, 3]], torch.tensor([1, 0]), 2, variance=0.1)
        >>> out.label_map.tolist(), out.labeled_error
        ([1, 0], 0.0)
    """
    K = num_components
    L = K if num_labels is None else num_labels
    m = X_unlabeled.shape[0]
    if m < K:
        raise ValueError(f"X_unlabeled must have at least num_components = {K} rows, got {m}")
    if init == "spectral":
        if K != 2:
            raise ValueError(f"init='spectral' needs num_components = 2, got {K}; use init='random'")
        means0 = _spectral_init(X_unlabeled, variance)
    else:
        idx = torch.randperm(m, generator=generator)[:K].to(X_unlabeled.device)
        means0 = X_unlabeled[idx]
    fit = gaussian_mixture_em(X_unlabeled, means0, variance=variance, max_iter=max_iter, tol=tol,
                              reg_covar=reg_covar)
    z_hat = _log_joint(X_labeled, fit.weights, fit.means, fit.variances).argmax(1)
    psi, err = erm_label_map(z_hat, y_labeled, K, L, downstream=downstream)
    weight = bias = None
    if variance is not None and downstream == "permutation":
        inv = torch.empty_like(psi)
        inv[psi] = torch.arange(K, device=psi.device)  # the component each label names
        W = fit.means / variance
        c = fit.weights.log() - 0.5 * (fit.means * fit.means).sum(1) / variance
        weight, bias = W[inv], c[inv]
    return PretrainThenERM(fit, psi, err, weight, bias)


# -- supervised-only baseline and risks --------------------------------------------------------------------------


@accepts(X=Tensor("n", "d"), y=Tensor("n", dtype="int", low=0), num_labels=Int(ge=1), variance=Real(gt=0),
         example=lambda ctx: {"X": torch.randn(6, 3, generator=ctx.generator, dtype=ctx.dtype),
                              "y": torch.tensor([0, 1, 0, 1, 1, 0]), "num_labels": 2})
def supervised_plugin_rule(X: torch.Tensor, y: torch.Tensor, num_labels: int, *,
                           variance: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Supervised-only learner: maximum likelihood of the composite mixture model from labeled pairs alone.

    References: On the Provable Advantage of Unsupervised Pretraining (Ge, Tang, Fan, Jin), 2024 (the baseline
    that learns :math:`\\Phi \\circ \\Psi` from the ``n`` labeled points only).

    With the labels naming the clusters, the MLE is the class frequencies :math:`\\hat w_l` and class means
    :math:`\\hat u_l`; the plug-in Bayes rule is :math:`\\arg\\max_l (W x + c)_l` with :math:`W_l = \\hat u_l/\\sigma^2`,
    :math:`c_l = \\log \\hat w_l - \\|\\hat u_l\\|^2 / (2\\sigma^2)`.

    Args:
        X: ``(n, d)``. y: ``(n,)``, every label in ``[0, L)`` present. num_labels: ``L``.
        variance: the known shared variance :math:`\\sigma^2`.

    Returns:
        ``(W, c)`` of shapes ``(L, d)`` and ``(L,)``.

    Example:
        >>> import torch
        >>> W, c = supervised_plugin_rule(torch.tensor([[1.0], [3.0], [-2.0]]), torch.tensor([1, 1, 0]), 2)
        >>> W.flatten().tolist()
        [-2.0, 2.0]
    """
    if int(y.max()) >= num_labels:
        raise ValueError(f"y must have entries < num_labels = {num_labels}, got {int(y.max())}")
    counts = torch.bincount(y, minlength=num_labels).to(X.dtype)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"y must contain every label in [0, {num_labels}), missing {missing}")
    sums = torch.zeros(num_labels, X.shape[1], dtype=X.dtype, device=X.device).index_add_(0, y, X)
    means = sums / counts[:, None]
    W = means / variance
    c = (counts / counts.sum()).log() - 0.5 * (means * means).sum(1) / variance
    return W, c


@accepts(weight=Tensor(2, "d"), bias=Tensor(2), means=Tensor(2, "d"), labels=Tensor(2, dtype="int", low=0, high=1),
         sigma=Real(gt=0), weights=Tensor(2, positive_mass=True, optional=True), example=_rule_example)
def linear_rule_risk(weight: torch.Tensor, bias: torch.Tensor, means: torch.Tensor, labels: torch.Tensor, *,
                     sigma: float = 1.0, weights: torch.Tensor | None = None) -> float:
    """Exact 0-1 risk of a two-class linear rule under a two-component isotropic Gaussian mixture.

    References: On the Provable Advantage of Unsupervised Pretraining (Ge, Tang, Fan, Jin), 2024 (the downstream
    risk of the Gaussian-mixture example, evaluated in closed form).

    The rule predicts class 1 when :math:`s(x) = (W_1 - W_0)\\cdot x + c_1 - c_0 > 0`. Under component ``j``,
    :math:`s(x) \\sim N(a\\cdot u_j + b, \\sigma^2\\|a\\|^2)`, so the risk is
    :math:`\\sum_j w_j\\, \\Phi(\\mp (a\\cdot u_j + b)/(\\sigma\\|a\\|))` with the sign set by the label of ``j``.

    Args:
        weight: ``W``, ``(2, d)``. bias: ``c``, ``(2,)``. means: true component means ``(2, d)``.
        labels: the label (0 or 1) of each component, ``(2,)``. sigma: noise standard deviation.
        weights: component weights ``(2,)`` (default equal).

    Returns:
        The risk in ``[0, 1]``; a rule with ``W_1 = W_0`` predicts one class everywhere.

    Example:
        >>> import torch
        >>> W = torch.tensor([[-1.0, 0.0], [1.0, 0.0]]); c = torch.zeros(2)
        >>> round(linear_rule_risk(W, c, torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1])), 4)
        0.1587
    """
    w = torch.full((2,), 0.5, dtype=means.dtype) if weights is None else (weights / weights.sum()).to(means.dtype)
    a = (weight[1] - weight[0]).to(torch.float64)
    b = float(bias[1] - bias[0])
    score = means.to(torch.float64) @ a + b
    norm = float(a.norm())
    lab = labels.to(torch.float64)
    if norm == 0.0:
        p_one = (score > 0).to(torch.float64)  # constant prediction
    else:
        p_one = torch.special.ndtr(score / (sigma * norm))
    wrong = lab * (1.0 - p_one) + (1.0 - lab) * p_one
    return float((w.to(torch.float64) * wrong).sum())


@accepts(means=Tensor(2, "d"), sigma=Real(gt=0), weights=Tensor(2, positive_mass=True, optional=True),
         example=lambda ctx: {"means": torch.randn(2, 3, generator=ctx.generator, dtype=ctx.dtype)})
def two_component_bayes_error(means: torch.Tensor, *, sigma: float = 1.0,
                              weights: torch.Tensor | None = None) -> float:
    """Bayes error of telling apart the two components of an isotropic Gaussian mixture.

    References: On the Provable Advantage of Unsupervised Pretraining (Ge, Tang, Fan, Jin), 2024 (the Bayes risk
    that the excess risk of the Gaussian-mixture example is measured from).

    The Bayes rule is linear (:math:`a = (u_1 - u_0)/\\sigma^2`, :math:`b = \\log(w_1/w_0) - (\\|u_1\\|^2 -
    \\|u_0\\|^2)/(2\\sigma^2)`) and its risk follows from :func:`linear_rule_risk`; with equal weights it is
    :math:`\\Phi(-\\|u_1 - u_0\\|/(2\\sigma))`, i.e. :math:`\\Phi(-\\|\\mu\\|/\\sigma)` for means :math:`\\pm\\mu`.

    Args:
        means: ``(2, d)``. sigma: noise standard deviation. weights: ``(2,)`` (default equal).

    Example:
        >>> import torch
        >>> round(two_component_bayes_error(torch.tensor([[0.0], [2.0]])), 4)   # Phi(-1)
        0.1587
    """
    w = torch.full((2,), 0.5, dtype=means.dtype) if weights is None else weights / weights.sum()
    W = means / sigma**2
    c = w.log() - 0.5 * (means * means).sum(1) / sigma**2
    return linear_rule_risk(W, c, means, torch.tensor([0, 1], device=means.device), sigma=sigma, weights=w)
