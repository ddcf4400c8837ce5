"""Comp-sum losses (sum-exponential, cross-entropy, generalized cross-entropy, MAE) and their H-consistency bounds.

References: Cross-Entropy Loss Functions: Theoretical Analysis and Applications (Mao, Mohri, Zhong), 2023.

For scores :math:`h(x, \\cdot) \\in \\mathbb R^n` (``logits``, shape ``(N, n)``) and a label :math:`y` (``y``,
shape ``(N,)``), the comp-sum loss of parameter :math:`\\tau \\ge 0` (``tau``) composes
:math:`\\Phi^\\tau` with the sum of exponentiated score differences:

.. math::
    \\ell_\\tau(h, x, y) = \\Phi^\\tau\\Big(\\sum_{y' \\ne y} e^{h(x, y') - h(x, y)}\\Big), \\qquad
    \\Phi^\\tau(u) = \\begin{cases} \\log(1 + u) & \\tau = 1 \\\\
    \\frac{(1 + u)^{1 - \\tau} - 1}{1 - \\tau} & \\tau \\ne 1. \\end{cases}

With :math:`a = \\log\\sum_{y'} e^{h(x, y')} - h(x, y) = -\\log \\mathrm{softmax}_y` we have :math:`1 + u = e^a`,
so the loss is :math:`\\mathrm{expm1}((1 - \\tau) a) / (1 - \\tau)` (and :math:`a` at :math:`\\tau = 1`), the form
computed here, stable for any scores: :math:`\\tau = 0` is the sum-exponential loss
:math:`\\sum_{y' \\ne y} e^{h_{y'} - h_y}`, :math:`\\tau = 1` the logistic loss (cross-entropy on the softmax),
:math:`1 < \\tau < 2` the generalized cross-entropy :math:`(1 - s_y^{q}) / q` with :math:`q = \\tau - 1`, and
:math:`\\tau = 2` the mean absolute error :math:`1 - s_y` (:math:`s = \\mathrm{softmax}(h)`).

The H-consistency bound (the paper's Theorem 3.1, for a symmetric and complete hypothesis set such as linear
scores with a bias): for every :math:`h` and every distribution,

.. math::
    R_{0\\text{-}1}(h) - R^*_{0\\text{-}1}(H) + M_{0\\text{-}1}(H)
    \\le \\Gamma_\\tau\\big(R_{\\ell_\\tau}(h) - R^*_{\\ell_\\tau}(H) + M_{\\ell_\\tau}(H)\\big),
    \\qquad \\Gamma_\\tau = T_\\tau^{-1},

with the minimizability gaps :math:`M_\\ell(H) = R^*_\\ell(H) - \\mathbb E_x[\\inf_h C_\\ell(h, x)]`, so each side
is the risk minus the expected pointwise-best conditional risk :math:`C^*_\\ell(x)`. With
:math:`M_\\tau(t) = \\big(\\tfrac{(1 + t)^{1/(2 - \\tau)} + (1 - t)^{1/(2 - \\tau)}}{2}\\big)^{2 - \\tau}` (a power
mean of :math:`1 \\pm t`) and ``n_classes`` :math:`= n`, the transform :math:`T_\\tau` on :math:`t \\in [0, 1]` is
:math:`\\frac{2^{1 - \\tau}}{1 - \\tau}(1 - M_\\tau(t))` for :math:`\\tau \\in [0, 1)`;
:math:`\\frac{1 + t}{2}\\log(1 + t) + \\frac{1 - t}{2}\\log(1 - t)` for :math:`\\tau = 1`;
:math:`\\frac{M_\\tau(t) - 1}{(\\tau - 1) n^{\\tau - 1}}` for :math:`\\tau \\in (1, 2)`; and :math:`t / n` for
:math:`\\tau = 2`. The pieces join continuously in :math:`\\tau`. For two classes :math:`T_\\tau(t)` is exactly
the conditional surrogate regret of equal scores when :math:`p = ((1 + t)/2, (1 - t)/2)`, the case where the bound
is attained.

The pointwise-best conditional risk has a closed form (:func:`comp_sum_conditional_min`): for :math:`\\tau < 2` the
best softmax is :math:`s \\propto p^{1/(2 - \\tau)}`, giving
:math:`C^*_\\tau = \\mathrm{expm1}\\big((2 - \\tau)\\log\\sum_y p_y^{1/(2 - \\tau)}\\big)/(1 - \\tau)` (the entropy at
:math:`\\tau = 1`), and :math:`1 - \\max_y p_y` at :math:`\\tau = 2`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Choice, Int, Real, Tensor, accepts

__all__ = ["comp_sum_loss", "comp_sum_conditional_risk", "comp_sum_conditional_min", "comp_sum_transform",
           "comp_sum_gamma", "class_posterior", "mixture_excess_losses", "MixtureExcess"]


def _logits_example(ctx):
    return torch.randn(ctx.size("N"), ctx.size("n"), generator=ctx.generator, dtype=ctx.dtype)


def _probs_example(ctx):
    return torch.softmax(_logits_example(ctx), dim=-1)


def _labels_example(ctx):
    return torch.randint(0, ctx.size("n"), (ctx.size("N"),), generator=ctx.generator)


def _phi_of_log(a: torch.Tensor, tau: float) -> torch.Tensor:
    """:math:`\\Phi^\\tau(e^a - 1)`, written through ``expm1`` so that it is exact at large and small ``a``."""
    if tau == 1.0:
        return a
    return torch.expm1((1.0 - tau) * a) / (1.0 - tau)


def _all_labels(logits: torch.Tensor, tau: float) -> torch.Tensor:
    """The loss for every label at once, shape ``(N, n)``."""
    a = torch.logsumexp(logits, dim=-1, keepdim=True) - logits
    return _phi_of_log(a, tau)


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


@accepts(logits=Tensor("N", "n"), y=Tensor("N", dtype="int", low=0), tau=Real(ge=0),
         reduction=Choice("mean", "sum", "none"),
         example=lambda ctx: {"logits": _logits_example(ctx), "y": _labels_example(ctx), "tau": 0.5})
def comp_sum_loss(logits: torch.Tensor, y: torch.Tensor, tau: float, *, reduction: str = "mean") -> torch.Tensor:
    """Comp-sum loss :math:`\\Phi^\\tau(\\sum_{y' \\ne y} e^{h_{y'} - h_y})` of scores ``logits`` at labels ``y``.

    ``tau = 0``: sum-exponential; ``1``: cross-entropy; ``(1, 2)``: generalized cross-entropy with
    ``q = tau - 1``; ``2``: mean absolute error ``1 - softmax_y``. Any ``tau >= 0`` gives a loss of the family.

    Args:
        logits: scores :math:`h(x, \\cdot)`, shape ``(N, n)``.
        y: labels in ``[0, n)``, shape ``(N,)``, integer dtype.
        tau: the family parameter :math:`\\tau \\ge 0`.
        reduction: ``"mean"`` (default, a ``loss_fn(outputs, targets)``), ``"sum"`` or ``"none"`` (shape ``(N,)``).

    Example:
        >>> logits = torch.tensor([[2.0, 0.0, -1.0]], dtype=torch.float64)
        >>> y = torch.tensor([0])
        >>> abs(float(comp_sum_loss(logits, y, 2.0)) - float(1 - torch.softmax(logits, -1)[0, 0])) < 1e-15
        True
    """
    n = logits.shape[-1]
    if bool((y >= n).any()):
        raise ValueError(f"y must have entries < {n} (the number of classes in logits), got a maximum of "
                         f"{int(y.max())}")
    a = torch.logsumexp(logits, dim=-1) - logits.gather(-1, y.long().unsqueeze(-1)).squeeze(-1)
    return _reduce(_phi_of_log(a, float(tau)), reduction)


@accepts(logits=Tensor("N", "n"), probs=Tensor("N", "n", nonnegative=True), tau=Real(ge=0),
         example=lambda ctx: {"logits": _logits_example(ctx), "probs": _probs_example(ctx), "tau": 0.5})
def comp_sum_conditional_risk(logits: torch.Tensor, probs: torch.Tensor, tau: float) -> torch.Tensor:
    """Conditional comp-sum risk :math:`C_\\tau(h, x) = \\sum_y p(y \\mid x)\\, \\ell_\\tau(h, x, y)`, shape ``(N,)``.

    Args:
        logits: scores, shape ``(N, n)``.
        probs: conditional label distributions :math:`p(\\cdot \\mid x)`, shape ``(N, n)``, rows summing to 1.
        tau: the family parameter.

    Example:
        >>> p = torch.tensor([[0.7, 0.3]], dtype=torch.float64)
        >>> float(comp_sum_conditional_risk(p.log(), p, 1.0)) == float(-(p * p.log()).sum())
        True
    """
    _check_rows(probs)
    return (probs * _all_labels(logits, float(tau))).sum(-1)


def _check_rows(probs: torch.Tensor) -> None:
    err = float((probs.sum(-1) - 1).abs().max())
    if err > 1e-6:
        raise ValueError(f"probs must have rows summing to 1, got a maximum deviation of {err:.3g}")


def _conditional_min(probs: torch.Tensor, tau: float) -> torch.Tensor:
    if tau == 2.0:
        return 1.0 - probs.max(-1).values
    if tau == 1.0:
        return -torch.special.xlogy(probs, probs).sum(-1)
    q = 1.0 / (2.0 - tau)
    lse = torch.logsumexp(q * torch.log(probs), dim=-1)  # log sum_y p_y^q (zero entries drop out)
    return torch.expm1(lse / q) / (1.0 - tau)


@accepts(probs=Tensor("N", "n", nonnegative=True), tau=Real(ge=0, le=2),
         example=lambda ctx: {"probs": _probs_example(ctx), "tau": 0.5})
def comp_sum_conditional_min(probs: torch.Tensor, tau: float) -> torch.Tensor:
    """Best conditional comp-sum risk :math:`C^*_\\tau(x) = \\inf_h C_\\tau(h, x)` in closed form, shape ``(N,)``.

    For :math:`\\tau < 2` the infimum is attained at scores :math:`\\log p / (2 - \\tau)`; at :math:`\\tau = 2` it is
    :math:`1 - \\max_y p_y`, approached as the top score grows. Restricted to :math:`\\tau \\le 2`, where the
    paper's bounds are stated.

    Args:
        probs: conditional label distributions, shape ``(N, n)``, rows summing to 1.
        tau: the family parameter, in ``[0, 2]``.

    Example:
        >>> p = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
        >>> float(comp_sum_conditional_min(p, 0.0))
        1.0
    """
    _check_rows(probs)
    return _conditional_min(probs, float(tau))


def _transform(tau: float, t: torch.Tensor, n: int) -> torch.Tensor:
    if tau == 2.0:
        return t / n
    if tau == 1.0:
        return 0.5 * (torch.special.xlogy(1 + t, 1 + t) + torch.special.xlogy(1 - t, 1 - t))
    q = 1.0 / (2.0 - tau)
    # log of the power mean of 1 +- t with exponent q, in the log domain (q is large near tau = 2)
    both = torch.stack([q * torch.log1p(t), q * torch.log1p(-t)])
    log_mean = (torch.logsumexp(both, dim=0) - math.log(2.0)) / q
    # near t = 0 that is a difference of numbers near log 2: there use log((e^a + e^b)/2) = (a + b)/2 +
    # log cosh((a - b)/2), with (a + b)/2 = q log(1 - t^2)/2, (a - b)/2 = q atanh(t), log cosh d = log1p(2 sinh^2(d/2))
    small = t.clamp_max(0.5)
    d = q * torch.atanh(small)
    near = 0.5 * torch.log1p(-small * small) + torch.log1p(2.0 * torch.sinh(0.5 * d).square()) / q
    log_mean = torch.where((t < 0.5) & (d.abs() < 1.0), near, log_mean)
    # the power mean is <= 1 for tau < 1 and >= 1 for tau > 1; rounding near t = 0 must not make T negative
    if tau < 1.0:
        log_mean = log_mean.clamp_max(0.0)
        return -(2.0 ** (1.0 - tau)) * torch.expm1(log_mean) / (1.0 - tau)
    return torch.expm1(log_mean.clamp_min(0.0)) / ((tau - 1.0) * n ** (tau - 1.0))


def _as_tensor(t) -> torch.Tensor:
    return t if isinstance(t, torch.Tensor) else torch.tensor(float(t), dtype=torch.float64)


def _check_unit(t: torch.Tensor) -> None:
    if bool((t < 0).any()) or bool((t > 1).any()):
        raise ValueError(f"t must lie in [0, 1], got a range of [{float(t.min())!r}, {float(t.max())!r}]")


@accepts(tau=Real(ge=0, le=2), n_classes=Int(ge=2),
         example=lambda ctx: {"tau": 0.5, "t": torch.linspace(0, 1, 5, dtype=ctx.dtype), "n_classes": 3})
def comp_sum_transform(tau: float, t, n_classes: int) -> torch.Tensor:
    """The transform :math:`T_\\tau(t)` of the comp-sum H-consistency bound (the inverse of :math:`\\Gamma_\\tau`).

    :math:`T_\\tau` lower-bounds the conditional surrogate regret by a function of the conditional zero-one regret
    :math:`t`; it is increasing and convex on ``[0, 1]`` with :math:`T_\\tau(0) = 0`. Formulas in the module
    docstring.

    Args:
        tau: the family parameter, in ``[0, 2]``.
        t: zero-one regret(s) in ``[0, 1]``, a number or a tensor (any shape).
        n_classes: the number of classes :math:`n \\ge 2` (enters for :math:`\\tau > 1`).

    Example:
        >>> round(float(comp_sum_transform(1.0, 1.0, 2)), 6)  # log 2
        0.693147
    """
    t = _as_tensor(t)
    _check_unit(t)
    return _transform(float(tau), t, n_classes)


@accepts(tau=Real(ge=0, le=2), n_classes=Int(ge=2), scale=Real(gt=0),
         example=lambda ctx: {"tau": 0.5, "t": torch.linspace(0, 1, 5, dtype=ctx.dtype), "n_classes": 3})
def comp_sum_gamma(tau: float, t, n_classes: int, *, scale: float = 1.0) -> torch.Tensor:
    """The bound function :math:`\\Gamma_\\tau = T_\\tau^{-1}` of the comp-sum H-consistency bound, capped at 1.

    The excess zero-one loss (plus its minimizability gap) is at most :math:`\\Gamma_\\tau` of the excess comp-sum
    loss (plus its gap). Beyond :math:`T_\\tau(1)` the bound exceeds any zero-one regret and 1 is returned.
    Computed by bisection on :math:`T_\\tau` (64 halvings, below float64 resolution); :math:`\\tau = 2` is the
    closed form :math:`\\min(n t, 1)`. :math:`T_\\tau` near 0 is evaluated without cancellation (log cosh form), so
    the result keeps its relative accuracy at small regrets. ``scale`` multiplies the result (a deliberately wrong
    bound for controls).

    Args:
        tau: the family parameter, in ``[0, 2]``.
        t: surrogate regret(s) :math:`\\ge 0`, a number or a tensor (any shape).
        n_classes: the number of classes :math:`n \\ge 2`.
        scale: factor applied to :math:`\\Gamma_\\tau` (1 for the paper's bound).

    Example:
        >>> round(float(comp_sum_gamma(1.0, 0.5 * 1.5 * math.log(1.5) + 0.25 * math.log(0.5), 2)), 6)
        0.5
    """
    t = _as_tensor(t)
    if bool((t < 0).any()):
        raise ValueError(f"t must be >= 0, got a minimum of {float(t.min())!r}")
    tau = float(tau)
    if tau == 2.0:
        return scale * torch.clamp(n_classes * t, max=1.0)
    lo, hi = torch.zeros_like(t), torch.ones_like(t)
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        below = _transform(tau, mid, n_classes) < t
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return scale * hi


@accepts(x=Tensor("N", "d"), means=Tensor("n", "d"), priors=Tensor("n", positive_mass=True), sigma=Real(gt=0),
         example=lambda ctx: {"x": torch.randn(ctx.size("N"), ctx.size("d"), generator=ctx.generator,
                                                 dtype=ctx.dtype),
                              "means": torch.randn(ctx.size("n"), ctx.size("d"), generator=ctx.generator,
                                                   dtype=ctx.dtype),
                              "priors": torch.full((ctx.size("n"),), 1.0, dtype=ctx.dtype)})
def class_posterior(x: torch.Tensor, means: torch.Tensor, priors: torch.Tensor, *, sigma: float = 1.0):
    """Posterior :math:`p(y \\mid x)` of an isotropic Gaussian mixture :math:`\\sum_y \\pi_y N(\\mu_y, \\sigma^2 I)`.

    :math:`p(y \\mid x) = \\mathrm{softmax}_y(\\mu_y^\\top x / \\sigma^2 - \\|\\mu_y\\|^2 / (2\\sigma^2)
    + \\log \\pi_y)`:
    the log-odds are linear in :math:`x`, so linear scores with a bias contain the Bayes classifier and every
    comp-sum pointwise minimiser (scores :math:`\\log p / (2 - \\tau)`): all minimizability gaps are zero.

    Args:
        x: inputs, shape ``(N, d)``.
        means: class means :math:`\\mu_y`, shape ``(n, d)``.
        priors: class weights :math:`\\pi_y` (normalised here), shape ``(n,)``.
        sigma: the common standard deviation.

    Returns:
        ``(probs, logits)``: the posterior, shape ``(N, n)``, and the Bayes log-posterior scores.

    Example:
        >>> x = torch.zeros(1, 2, dtype=torch.float64)
        >>> means = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
        >>> class_posterior(x, means, torch.ones(2, dtype=torch.float64))[0]
        tensor([[0.5000, 0.5000]], dtype=torch.float64)
    """
    logits = (x @ means.T - 0.5 * (means * means).sum(-1)) / sigma ** 2 + torch.log(priors / priors.sum())
    return torch.softmax(logits, dim=-1), logits


class MixtureExcess(NamedTuple):
    """Result of :func:`mixture_excess_losses`; every field a float.

    Attributes:
        excess_zero_one: :math:`R_{0-1}(h) - \\mathbb E_x[1 - \\max_y p(y \\mid x)]` (excess plus gap).
        excess_surrogate: :math:`R_{\\ell_\\tau}(h) - \\mathbb E_x[C^*_\\tau(x)]` (excess plus gap).
        zero_one: :math:`R_{0-1}(h)` under the exact posterior.
        surrogate: :math:`R_{\\ell_\\tau}(h)` under the exact posterior.
        bayes_zero_one: :math:`\\mathbb E_x[1 - \\max_y p(y \\mid x)]`, the Bayes error.
        bayes_surrogate: :math:`\\mathbb E_x[C^*_\\tau(x)]`.
    """

    excess_zero_one: float
    excess_surrogate: float
    zero_one: float
    surrogate: float
    bayes_zero_one: float
    bayes_surrogate: float


@accepts(weight=Tensor("n", "d"), bias=Tensor("n"), x=Tensor("N", "d"), means=Tensor("n", "d"),
         priors=Tensor("n", positive_mass=True), tau=Real(ge=0, le=2), sigma=Real(gt=0),
         example=lambda ctx: {"weight": torch.randn(ctx.size("n"), ctx.size("d"), generator=ctx.generator,
                                                      dtype=ctx.dtype),
                              "bias": torch.zeros(ctx.size("n"), dtype=ctx.dtype),
                              "x": torch.randn(ctx.size("N"), ctx.size("d"), generator=ctx.generator,
                                               dtype=ctx.dtype),
                              "means": torch.randn(ctx.size("n"), ctx.size("d"), generator=ctx.generator,
                                                   dtype=ctx.dtype),
                              "priors": torch.ones(ctx.size("n"), dtype=ctx.dtype), "tau": 1.0})
def mixture_excess_losses(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, means: torch.Tensor,
                          priors: torch.Tensor, tau: float, *, sigma: float = 1.0) -> MixtureExcess:
    """Excess zero-one and comp-sum losses (with their minimizability gaps) of linear scores on a Gaussian mixture.

    The scores are :math:`h(x, y) = w_y^\\top x + b_y`; expectations run over the sample ``x`` (draws from the
    mixture's marginal) with the *exact* posterior (:func:`class_posterior`), never sampled labels. The numbers
    are therefore the exact risks of the distribution "empirical marginal of ``x`` times the true posterior", for
    which the paper's bound holds with no Monte Carlo slack, and unbiased estimates of the mixture's own risks.
    Ties in the argmax go to the lowest class index.

    Args:
        weight: :math:`w`, shape ``(n, d)``.
        bias: :math:`b`, shape ``(n,)``.
        x: inputs, shape ``(N, d)``.
        means, priors, sigma: the mixture, as in :func:`class_posterior`.
        tau: the family parameter, in ``[0, 2]``.

    Example:
        >>> means = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
        >>> x = torch.randn(1000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> out = mixture_excess_losses(means, -0.5 * (means ** 2).sum(-1), x, means,
        ...                             torch.ones(2, dtype=torch.float64), 1.0)
        >>> abs(out.excess_surrogate) < 1e-12 and out.excess_zero_one == 0.0
        True
    """
    probs, _ = class_posterior(x, means, priors, sigma=sigma)
    logits = x @ weight.T + bias
    tau = float(tau)
    predicted = probs.gather(-1, logits.argmax(-1, keepdim=True)).squeeze(-1)
    top = probs.max(-1).values
    surrogate = float((probs * _all_labels(logits, tau)).sum(-1).mean())
    best = float(_conditional_min(probs, tau).mean())
    return MixtureExcess(float((top - predicted).mean()), surrogate - best, float((1 - predicted).mean()), surrogate,
                         float((1 - top).mean()), best)
