"""Labeled-only and semi-supervised linear rules on a symmetric two-Gaussian mixture, with out-of-domain unlabeled data.

References: Out-Of-Domain Unlabeled Data Improves Generalization (Saberi, Najafi, Heidari, Movasaghinia,
Motahari, Khalaj), 2024.

The model: labels :math:`y \\in \\{-1, +1\\}` with equal probability and :math:`x \\mid y \\sim N(y\\mu, \\sigma^2 I_d)`;
``m`` labeled pairs come from it. ``n`` unlabeled inputs come from a shifted mixture
:math:`x \\sim \\tfrac12 N(\\mu', \\sigma^2 I_d) + \\tfrac12 N(-\\mu', \\sigma^2 I_d)` with :math:`\\mu' = \\mu + \\delta`
(:func:`sample_shifted_unlabeled`); its total-variation distance from the in-domain input law is at most
:math:`\\alpha = 2\\Phi(\\|\\delta\\| / 2\\sigma) - 1` (:func:`shift_tv_bound`). A linear rule
:math:`\\hat y = \\mathrm{sign}(\\theta^\\top x + b)` has the exact test error (:func:`linear_rule_error`)

.. math:: \\mathrm{err}(\\theta, b) = \\tfrac12 \\Phi\\Big(-\\frac{\\theta^\\top\\mu + b}{\\sigma\\|\\theta\\|}\\Big)
          + \\tfrac12 \\Phi\\Big(-\\frac{\\theta^\\top\\mu - b}{\\sigma\\|\\theta\\|}\\Big),

whose minimum, the Bayes error, is :math:`\\Phi(-\\|\\mu\\|/\\sigma)` at :math:`\\theta \\propto \\mu`, ``b = 0``.

Learners (``y`` given in {0, 1}, used as :math:`\\pm 1`):

- labeled-only (:func:`labeled_direction`): :math:`\\hat\\theta_{\\rm ERM} = \\frac1m \\sum_i y_i x_i`, the minimiser of
  the linear loss :math:`-y\\,\\theta^\\top x` over the unit sphere, whose error the paper quotes as
  :math:`\\propto \\sqrt{d/m}`;
- semi-supervised (:func:`self_training_direction`): the labeled loss plus ``lam`` times a pseudo-label loss on the
  unlabeled inputs, each pseudo-label the current rule's own prediction (the cluster assumption: the decision
  boundary should leave the unlabeled mass with large margins). Over the unit sphere this maximises

  .. math:: F(\\theta) = \\theta^\\top \\sum_{i \\le m} y_i x_i + \\lambda \\sum_{j \\le n} |\\theta^\\top x_j|,

  a convex function, so its linearisation at :math:`\\theta_t` minorises it and the step
  :math:`\\theta_{t+1} \\propto \\sum_i y_i x_i + \\lambda \\sum_j \\mathrm{sign}(\\theta_t^\\top x_j)\\, x_j`
  never decreases :math:`F` (a minorise-maximise / self-training iteration, started at
  :math:`\\hat\\theta_{\\rm ERM}`; it stops when no pseudo-label changes). The labels enter only through
  :math:`\\sum_i y_i x_i`, which fixes the sign of the cluster direction; with ``n = 0`` the estimator is
  :math:`\\hat\\theta_{\\rm ERM}` exactly. Sums, not means: every labeled and pseudo-labeled point has weight 1
  (``lam = 1``), so the unlabeled term dominates once ``n >> m``.

This is our simple, non-robust instance of the paper's robust self-supervised (DRO plus pseudo-label) objective:
the Wasserstein-robust inner maximisation is dropped (radius 0), only the isotropic case is implemented, and the
paper's exact algorithm and constants were not read (only its abstract and secondary summaries; see the catalog
deviations).

Shapes: ``X_labeled`` ``(m, d)``, ``y_labeled`` ``(m,)`` int in {0, 1}, ``X_unlabeled`` ``(n, d)`` (``n = 0``
allowed), ``mu``, ``shift``, ``theta`` ``(d,)``.

Example:
    >>> import torch
    >>> from paperzoo.diagnostics.semi_supervised_gmm import (labeled_direction, linear_rule_error,
    ...     sample_shifted_unlabeled, self_training_direction)
    >>> g = torch.Generator().manual_seed(0)
    >>> d = 50; mu = torch.zeros(d, dtype=torch.float64); mu[0] = 2.0
    >>> y = torch.arange(6) % 2
    >>> X = (2 * y[:, None] - 1) * mu + torch.randn(6, d, generator=g, dtype=torch.float64)
    >>> shift = torch.zeros(d, dtype=torch.float64); shift[1] = 0.3
    >>> U = sample_shifted_unlabeled(mu, shift, 3000, generator=g)
    >>> erm = linear_rule_error(labeled_direction(X, y), mu)
    >>> fit = self_training_direction(X, y, U)
    >>> ssl = linear_rule_error(fit.theta, mu)
    >>> fit.converged, ssl < 0.03 < erm
    (True, True)
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Generator, Int, Real, Tensor, accepts

__all__ = ["SelfTrainingFit", "labeled_direction", "self_training_direction", "sample_shifted_unlabeled",
           "shift_tv_bound", "linear_rule_error"]


class SelfTrainingFit(NamedTuple):
    """Result of :func:`self_training_direction`.

    Attributes:
        theta: the unit-norm direction :math:`\\hat\\theta`, shape ``(d,)``.
        objective: :math:`F(\\hat\\theta)` (labeled correlation plus ``lam`` times the unlabeled absolute margins).
        n_iter: iterations run (0 when there are no unlabeled inputs).
        converged: no pseudo-label changed in the last iteration.
    """

    theta: torch.Tensor
    objective: float
    n_iter: int
    converged: bool


def _labeled_example(ctx) -> dict:
    g, d = ctx.generator, ctx.size("d") + 1
    m = 4 + ctx.size("m")
    mu = torch.zeros(d, dtype=ctx.dtype)
    mu[0] = 3.0
    y = torch.arange(m) % 2
    X = (2 * y[:, None] - 1).to(ctx.dtype) * mu + torch.randn(m, d, generator=g, dtype=ctx.dtype)
    return {"X_labeled": X, "y_labeled": y}


def _semi_example(ctx) -> dict:
    out = _labeled_example(ctx)
    g, d = ctx.generator, out["X_labeled"].shape[1]
    n = 6 + ctx.size("n")
    s = (2 * (torch.arange(n) % 2) - 1).to(ctx.dtype)
    mu = torch.zeros(d, dtype=ctx.dtype)
    mu[0] = 3.0
    out["X_unlabeled"] = s[:, None] * mu + torch.randn(n, d, generator=g, dtype=ctx.dtype)
    return out


def _rule_example(ctx) -> dict:
    g, d = ctx.generator, ctx.size("d") + 1
    return {"theta": torch.randn(d, generator=g, dtype=ctx.dtype),
            "mu": torch.randn(d, generator=g, dtype=ctx.dtype)}


# -- kernels (batched over leading dimensions, unchecked) ---------------------------------------------------------


def _labeled_sum(X, y):
    """``sum_i y_i x_i`` with ``y`` in {0, 1} mapped to +-1; ``X`` ``(..., m, d)``, ``y`` ``(..., m)``."""
    s = (2 * y - 1).to(X.dtype)
    return (s.unsqueeze(-1) * X).sum(-2)


def _normalize(v):
    norm = v.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, v / norm.clamp_min(torch.finfo(v.dtype).tiny), v)


def _self_train(a, U, lam, max_iter):
    """Minorise-maximise iterations from ``a / ||a||``; ``a`` ``(..., d)``, ``U`` ``(..., n, d)``.

    Returns (theta, objective, n_iter, converged) with theta and objective batched.
    """
    theta = _normalize(a)
    if U.shape[-2] == 0:
        return theta, (theta * a).sum(-1), 0, True
    signs = torch.sign(U @ theta.unsqueeze(-1)).squeeze(-1)
    converged, it = False, 0
    for it in range(1, max_iter + 1):
        theta = _normalize(a + lam * (signs.unsqueeze(-1) * U).sum(-2))
        new = torch.sign(U @ theta.unsqueeze(-1)).squeeze(-1)
        if torch.equal(new, signs):
            converged = True
            break
        signs = new
    objective = (theta * a).sum(-1) + lam * (U @ theta.unsqueeze(-1)).squeeze(-1).abs().sum(-1)
    return theta, objective, it, converged


def _std_normal_cdf(z):
    return 0.5 * torch.special.erfc(-z / math.sqrt(2.0))


def _linear_rule_error(theta, mu, bias, sigma):
    """Exact error of sign(theta.x + b) on the symmetric mixture; ``theta`` ``(..., d)``, ``mu`` ``(d,)``."""
    scale = sigma * theta.norm(dim=-1)
    c = theta @ mu
    return 0.5 * (_std_normal_cdf(-(c + bias) / scale) + _std_normal_cdf(-(c - bias) / scale))


# -- public API ---------------------------------------------------------------------------------------------------


@accepts(X_labeled=Tensor("m", "d"), y_labeled=Tensor("m", dtype="int", low=0, high=1), example=_labeled_example)
def labeled_direction(X_labeled: torch.Tensor, y_labeled: torch.Tensor) -> torch.Tensor:
    """Labeled-only ERM direction of the symmetric mixture: the label-signed mean of the labeled inputs.

    References: Out-Of-Domain Unlabeled Data Improves Generalization, 2024 (the supervised baseline).

    :math:`\\hat\\theta_{\\rm ERM} = \\frac1m \\sum_i y_i x_i` with :math:`y_i = \\pm 1` (``y_labeled`` in {0, 1});
    for ``y`` balanced it is half the difference of the class means, and it is the rule
    :math:`\\mathrm{sign}(\\hat\\theta^\\top x)` that minimises the empirical linear loss :math:`-y\\,\\theta^\\top x`
    over unit vectors. ``X_labeled`` ``(m, d)``, ``y_labeled`` ``(m,)``; returns ``(d,)``.

    Example:
        >>> import torch
        >>> X = torch.tensor([[1.0, 2.0], [-3.0, 0.0]]); y = torch.tensor([1, 0])
        >>> labeled_direction(X, y).tolist()
        [2.0, 1.0]
    """
    return _labeled_sum(X_labeled, y_labeled) / X_labeled.shape[0]


@accepts(X_labeled=Tensor("m", "d"), y_labeled=Tensor("m", dtype="int", low=0, high=1),
         X_unlabeled=Tensor("n", "d", allow_empty=True), lam=Real(ge=0), max_iter=Int(ge=1),
         example=_semi_example)
def self_training_direction(X_labeled: torch.Tensor, y_labeled: torch.Tensor, X_unlabeled: torch.Tensor, *,
                            lam: float = 1.0, max_iter: int = 100) -> SelfTrainingFit:
    """Semi-supervised direction: labeled correlation plus pseudo-label (cluster) margins on unlabeled inputs.

    References: Out-Of-Domain Unlabeled Data Improves Generalization, 2024 (its robust self-supervised objective,
    here without the robust inner maximisation; see the module docstring).

    Maximises :math:`F(\\theta) = \\theta^\\top \\sum_i y_i x_i + \\lambda \\sum_j |\\theta^\\top u_j|` over the unit
    sphere by :math:`\\theta_{t+1} \\propto \\sum_i y_i x_i + \\lambda \\sum_j \\mathrm{sign}(\\theta_t^\\top u_j) u_j`
    from :math:`\\theta_0 \\propto \\sum_i y_i x_i` (each step a minorise-maximise step, so :math:`F` never
    decreases); stops when no pseudo-label :math:`\\mathrm{sign}(\\theta_t^\\top u_j)` changes. ``lam`` =
    :math:`\\lambda`, the weight of one pseudo-labeled point against one labeled point. With ``n = 0`` (or
    ``lam = 0``) it returns the normalised :func:`labeled_direction`. Warns when ``max_iter`` is reached.

    ``X_labeled`` ``(m, d)``, ``y_labeled`` ``(m,)`` in {0, 1}, ``X_unlabeled`` ``(n, d)``.

    Example:
        >>> import torch
        >>> X = torch.tensor([[2.0, 0.5], [-2.0, 0.5]]); y = torch.tensor([1, 0])
        >>> U = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.5, 0.5]])
        >>> fit = self_training_direction(X, y, U)
        >>> [round(v, 4) for v in fit.theta.tolist()], fit.converged
        ([0.9487, 0.3162], True)
    """
    a = _labeled_sum(X_labeled, y_labeled)
    if not bool(a.ne(0).any()):
        raise ValueError("X_labeled and y_labeled give a zero labeled direction sum_i y_i x_i; "
                         "the sign of the rule is undetermined")
    theta, objective, n_iter, converged = _self_train(a, X_unlabeled, lam, max_iter)
    if not converged:
        warnings.warn(f"self_training_direction: pseudo-labels still changing after max_iter={max_iter} "
                      "iterations; increase max_iter", RuntimeWarning, stacklevel=2)
    if not bool(torch.isfinite(theta).all()):
        raise FloatingPointError("self_training_direction produced a non-finite direction")
    return SelfTrainingFit(theta, float(objective), n_iter, converged)


@accepts(mu=Tensor("d"), shift=Tensor("d"), n=Int(ge=0), sigma=Real(gt=0), generator=Generator(),
         example=lambda ctx: {"mu": torch.randn(ctx.size("d"), generator=ctx.generator, dtype=ctx.dtype),
                              "shift": 0.1 * torch.randn(ctx.size("d"), generator=ctx.generator, dtype=ctx.dtype),
                              "n": 7})
def sample_shifted_unlabeled(mu: torch.Tensor, shift: torch.Tensor, n: int, *, sigma: float = 1.0,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample out-of-domain unlabeled inputs from the shifted symmetric mixture.

    References: Out-Of-Domain Unlabeled Data Improves Generalization, 2024 (unlabeled data from a distribution
    within total variation alpha of the in-domain one).

    :math:`u_j = s_j(\\mu + \\delta) + \\sigma z_j`, :math:`s_j = \\pm 1` equiprobable, :math:`z_j \\sim N(0, I_d)`;
    ``mu`` = :math:`\\mu`, ``shift`` = :math:`\\delta` (``(d,)`` each). ``shift = -mu`` gives a label-uninformative
    single Gaussian :math:`N(0, \\sigma^2 I)`. Returns ``(n, d)``; the latent signs are not returned.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> U = sample_shifted_unlabeled(torch.ones(3), torch.zeros(3), 4, generator=g)
        >>> tuple(U.shape)
        (4, 3)
    """
    d = mu.shape[0]
    s = 2.0 * torch.randint(0, 2, (n,), generator=generator, device=mu.device).to(mu.dtype) - 1.0
    z = torch.randn(n, d, generator=generator, dtype=mu.dtype, device=mu.device)
    return s[:, None] * (mu + shift) + sigma * z


@accepts(shift=Tensor("d"), sigma=Real(gt=0),
         example=lambda ctx: {"shift": torch.randn(ctx.size("d"), generator=ctx.generator, dtype=ctx.dtype)})
def shift_tv_bound(shift: torch.Tensor, *, sigma: float = 1.0) -> float:
    """Upper bound on the total-variation distance between the in-domain and the shifted input mixtures.

    References: Out-Of-Domain Unlabeled Data Improves Generalization, 2024 (the shift parameter alpha).

    Coupling the latent signs, :math:`\\mathrm{TV} \\le \\mathrm{TV}(N(\\mu, \\sigma^2 I), N(\\mu + \\delta, \\sigma^2 I))
    = 2\\Phi(\\|\\delta\\| / 2\\sigma) - 1`. ``shift`` = :math:`\\delta` ``(d,)``.

    Example:
        >>> import torch
        >>> round(shift_tv_bound(torch.tensor([0.0, 0.0])), 6)
        0.0
    """
    r = float(shift.norm()) / (2.0 * sigma)
    return math.erf(r / math.sqrt(2.0))


@accepts(theta=Tensor("d"), mu=Tensor("d"), bias=Real(), sigma=Real(gt=0), example=_rule_example)
def linear_rule_error(theta: torch.Tensor, mu: torch.Tensor, *, bias: float = 0.0, sigma: float = 1.0) -> float:
    """Exact test error of the linear rule sign(theta.x + b) on the symmetric mixture N(+-mu, sigma^2 I).

    References: Out-Of-Domain Unlabeled Data Improves Generalization, 2024 (the generalization error it bounds).

    :math:`\\tfrac12\\Phi(-(\\theta^\\top\\mu + b)/\\sigma\\|\\theta\\|) + \\tfrac12\\Phi(-(\\theta^\\top\\mu - b)/
    \\sigma\\|\\theta\\|)`, the probability that :math:`y(\\theta^\\top x + b) < 0` (a tie has probability 0).
    ``theta``, ``mu`` ``(d,)``; ``bias`` = :math:`b`; ``theta`` must be nonzero.

    Example:
        >>> import torch
        >>> round(linear_rule_error(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0])), 5)   # Phi(-1)
        0.15866
    """
    if not bool(theta.ne(0).any()):
        raise ValueError("theta must be a nonzero vector")
    return float(_linear_rule_error(theta, mu, bias, sigma))
