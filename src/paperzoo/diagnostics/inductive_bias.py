"""Inductive bias as information: the bits needed to pick a well-generalising hypothesis out of a hypothesis
distribution, estimated from the test losses of sampled hypotheses by a fitted parametric tail.

References: Towards Exact Computation of Inductive Bias (Boopathy, Yue, Hwang, Iyer, Fiete), 2024.

For a distribution :math:`p` over hypotheses (for instance hypotheses fitted to the training set: a posterior) and a
test loss :math:`L`, the inductive bias required to reach test loss :math:`\\varepsilon` is

.. math:: I(\\varepsilon) = -\\log_2 \\Pr_{h \\sim p}\\big(L(h) \\le \\varepsilon\\big),

the number of bits that single out the well-generalising region. Well-generalising hypotheses are exponentially
rare, so direct Monte Carlo (the fraction of ``N`` sampled hypotheses below ``eps``) returns infinity as soon as none
of them falls below. The estimator instead fits a scaled non-central chi-squared law
:math:`L - L_0 \\approx s\\, \\chi'^2_k(\\lambda)` to the sampled losses (``L_0`` a known loss floor, default 0)
and reads the probability off the fitted lower tail. The model is exact when the hypotheses' test predictions are
isotropic Gaussian and the loss is the squared error; in general a Gaussian hypothesis distribution gives a
*generalised* chi-square :math:`L = c + \\sum_j w_j (z_j + m_j)^2`, whose CDF is computed here by Imhof's
inversion formula (numerical integration), the exact reference for the estimator.

Pieces: :func:`sample_hypothesis_losses` and :func:`estimate_inductive_bias` (any hypothesis sampler and test loss),
:func:`fit_scaled_ncx2`, :func:`inductive_bias_bits` (from given losses: fitted tail or naive Monte Carlo),
:func:`bayesian_linear_posterior`, :func:`gaussian_linear_loss_distribution`,
:func:`gaussian_linear_hypothesis_losses` (the Gaussian linear case) and :func:`generalized_chi2_cdf` (Imhof).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
import torch

from paperzoo.core.accepts import Choice, Function, Generator, Int, Real, Tensor, accepts
from paperzoo.core.convergence import ConvergenceWarning

__all__ = [
    "GeneralizedChi2", "GeneralizedChi2CDF", "ScaledNcx2Fit", "InductiveBiasEstimate", "LinearPosterior",
    "sample_hypothesis_losses", "fit_scaled_ncx2", "inductive_bias_bits", "estimate_inductive_bias",
    "bayesian_linear_posterior", "gaussian_linear_loss_distribution", "gaussian_linear_hypothesis_losses",
    "generalized_chi2_cdf",
]

_LN2 = math.log(2.0)


class GeneralizedChi2(NamedTuple):
    """Law of ``offset + sum_j weights[j] * (z_j + sqrt(noncentrality[j]))**2`` with ``z ~ N(0, I)``."""

    weights: torch.Tensor
    noncentrality: torch.Tensor
    offset: float


class GeneralizedChi2CDF(NamedTuple):
    """Imhof CDF value, the quadrature's absolute error estimate, ``-log2(cdf)`` and the integrator's status."""

    cdf: float
    abs_error: float
    bits: float
    converged: bool


class ScaledNcx2Fit(NamedTuple):
    """Fitted ``(losses - floor) ~ scale * ncx2(df, nc)``; ``method`` is ``"mle"`` or ``"moments"``."""

    scale: float
    df: float
    nc: float
    floor: float
    log_likelihood: float
    method: str
    converged: bool
    n_iter: int


class InductiveBiasEstimate(NamedTuple):
    """``bits = -log2 P(L <= eps)`` from the chosen tail model, with the naive Monte Carlo numbers beside it."""

    bits: float
    probability: float
    empirical_bits: float
    n_samples: int
    n_below: int
    tail_model: str
    fit: ScaledNcx2Fit | None


class LinearPosterior(NamedTuple):
    """Gaussian posterior ``N(mean, cov)`` over the weights of a linear model."""

    mean: torch.Tensor
    cov: torch.Tensor


# -- generic measurement ------------------------------------------------------------------------------------------
def _example_sampler(ctx):
    d = ctx.size("d")
    dtype = ctx.dtype
    return {"sample_hypotheses": lambda n, g: torch.randn(n, d, generator=g, dtype=dtype),
            "test_loss_fn": lambda w: w.pow(2).sum(1), "n_samples": 16}


@accepts(sample_hypotheses=Function(), test_loss_fn=Function(), n_samples=Int(ge=2), generator=Generator(),
         example=_example_sampler)
def sample_hypothesis_losses(sample_hypotheses, test_loss_fn, n_samples: int, generator=None) -> torch.Tensor:
    """Test losses of sampled hypotheses: :math:`L(h_i)` for :math:`h_1, \\dots, h_N \\sim p`.

    References: Towards Exact Computation of Inductive Bias, 2024.

    Args:
        sample_hypotheses: ``(n, generator) -> batch`` drawing ``n`` hypotheses at once (a parameter matrix, a
            batch of function values, a stacked model state; anything ``test_loss_fn`` accepts).
        test_loss_fn: ``batch -> losses`` of shape ``(n,)``, one test loss per hypothesis (vectorised).
        n_samples: number of hypotheses ``N``.
        generator: random source passed to ``sample_hypotheses``.

    Returns:
        The losses, shape ``(n_samples,)``, detached.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> L = sample_hypothesis_losses(lambda n, g: torch.randn(n, 3, generator=g), lambda w: w.pow(2).sum(1),
        ...                              100, g)
        >>> L.shape
        torch.Size([100])
    """
    losses = test_loss_fn(sample_hypotheses(n_samples, generator))
    if not isinstance(losses, torch.Tensor) or losses.shape != (n_samples,):
        raise ValueError(f"test_loss_fn must return a tensor of shape ({n_samples},), got "
                         f"{getattr(losses, 'shape', type(losses).__name__)}")
    losses = losses.detach()
    if not bool(torch.isfinite(losses).all()):
        raise ValueError("test_loss_fn returned non-finite losses")
    return losses


# -- the tail model -----------------------------------------------------------------------------------------------
def _moment_init(t: np.ndarray) -> tuple[float, float, float, bool]:
    """Scaled ncx2 matching the first three cumulants of ``t`` (``ok`` False if no valid match: chi2 fallback)."""
    k1 = float(t.mean())
    c = t - k1
    k2 = float((c ** 2).mean())
    k3 = float((c ** 3).mean())
    # cumulants of s*ncx2(k, lam): k_r = 2^(r-1) (r-1)! s^r (k + r lam); eliminating k, lam: k1 s^2 - k2 s + k3/8 = 0
    disc = k2 * k2 - k1 * k3 / 2.0
    if k2 > 0 and disc >= 0:
        for s in ((k2 + math.sqrt(disc)) / (2 * k1), (k2 - math.sqrt(disc)) / (2 * k1)):
            if s > 0:
                a, b = k1 / s, k2 / (2 * s * s)
                lam, k = b - a, 2 * a - b
                if lam >= 0 and k > 0:
                    return s, k, lam, True
    s = max(k2, 1e-300) / (2 * k1)
    return s, k1 / s, 0.0, False


def _ncx2_loglik(t: np.ndarray, s: float, k: float, lam: float) -> float:
    from scipy import stats

    if lam <= 0:
        return float(np.sum(stats.chi2.logpdf(t / s, k)) - t.size * math.log(s))
    return float(np.sum(stats.ncx2.logpdf(t / s, k, lam)) - t.size * math.log(s))


def _fit(t: np.ndarray, method: str, floor: float, max_iter: int) -> ScaledNcx2Fit:
    s0, k0, lam0, ok = _moment_init(t)
    if method == "moments":
        return ScaledNcx2Fit(s0, k0, lam0, floor, _ncx2_loglik(t, s0, k0, lam0), "moments", ok, 0)
    from scipy import optimize

    lam_floor = 1e-8 * k0
    x0 = np.log([s0, k0, max(lam0, 1e-3 * k0)])

    def nll(x):
        s, k, lam = np.exp(x)
        v = -_ncx2_loglik(t, s, k, lam + lam_floor) / t.size
        return v if np.isfinite(v) else 1e300

    res = optimize.minimize(nll, x0, method="Nelder-Mead",
                            options={"maxiter": max_iter, "xatol": 1e-7, "fatol": 1e-10})
    s, k, lam = (float(v) for v in np.exp(res.x))
    if not res.success:
        warnings.warn(f"fit_scaled_ncx2 did not converge in max_iter={max_iter} iterations ({res.message}); raise "
                      "max_iter", ConvergenceWarning, stacklevel=3)
    return ScaledNcx2Fit(s, k, lam + lam_floor, floor, -float(res.fun) * t.size, "mle", bool(res.success),
                         int(res.nit))


def _losses_above_floor(losses: torch.Tensor, floor: float) -> np.ndarray:
    t = losses.detach().cpu().double().numpy() - floor
    if np.any(t <= 0):
        raise ValueError(f"losses must all exceed floor = {floor}, got minimum {float(t.min() + floor)}")
    if np.ptp(t) <= 1e-12 * float(np.abs(t).max()):
        raise ValueError("losses must not all be equal: a constant loss has no tail to fit")
    return t


@accepts(losses=Tensor("n", nonnegative=True), floor=Real(ge=0), method=Choice("mle", "moments"),
         max_iter=Int(ge=1), example=lambda ctx: {
             "losses": torch.distributions.Chi2(torch.tensor(3.0, dtype=ctx.dtype)).sample((40,)) + 0.01})
def fit_scaled_ncx2(losses: torch.Tensor, floor: float = 0.0, method: str = "mle",
                    max_iter: int = 2000) -> ScaledNcx2Fit:
    """Scaled non-central chi-squared fit of sampled test losses: :math:`L - L_0 \\approx s\\, \\chi'^2_k(\\lambda)`.

    References: Towards Exact Computation of Inductive Bias, 2024.

    ``method="moments"`` matches the first three cumulants (closed form: :math:`\\kappa_r = 2^{r-1}(r-1)!\\,
    s^r (k + r\\lambda)`), falling back to a central chi-square (``lambda = 0``, ``converged`` False) when no
    valid match exists; ``"mle"`` maximises the likelihood over :math:`(s, k, \\lambda)` (Nelder-Mead in log
    coordinates) from that start and warns (``ConvergenceWarning``) if the optimiser stops early.

    Args:
        losses: sampled test losses ``L(h_i)``, shape ``(n,)``, all above ``floor``, not all equal.
        floor: known lower bound :math:`L_0` of the loss (e.g. the best loss in the class); the fit models
            ``losses - floor``.
        method: ``"mle"`` or ``"moments"``.
        max_iter: optimiser iteration cap (``"mle"``).

    Returns:
        :class:`ScaledNcx2Fit` (``scale`` s, ``df`` k, ``nc`` lambda, ``floor``, ``log_likelihood`` of ``losses -
        floor``, ``method``, ``converged``, ``n_iter``).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> z = torch.randn(4000, 4, generator=g, dtype=torch.float64) + 1.0
        >>> fit = fit_scaled_ncx2(2.0 * z.pow(2).sum(1))   # exactly 2 * ncx2(4, 4)
        >>> round(fit.scale, 1), round(fit.df), round(fit.nc)
        (2.0, 4, 4)
    """
    return _fit(_losses_above_floor(losses, floor), method, float(floor), max_iter)


def _fit_log2_cdf(fit: ScaledNcx2Fit, eps: float) -> float:
    from scipy import stats

    x = (eps - fit.floor) / fit.scale
    if x <= 0:
        return -math.inf
    return float(stats.ncx2.logcdf(x, fit.df, fit.nc)) / _LN2


@accepts(losses=Tensor("n", nonnegative=True), eps=Real(gt=0), tail_model=Choice("scaled_ncx2", "empirical"),
         floor=Real(ge=0), method=Choice("mle", "moments"), example=lambda ctx: {
             "losses": torch.randn(40, 3, generator=ctx.generator, dtype=ctx.dtype).pow(2).sum(1) + 0.01,
             "eps": 0.5}, infinite_ok=("bits", "empirical_bits"))
def inductive_bias_bits(losses: torch.Tensor, eps: float, tail_model: str = "scaled_ncx2", floor: float = 0.0,
                        method: str = "mle") -> InductiveBiasEstimate:
    """Inductive bias from sampled test losses: :math:`I(\\varepsilon) = -\\log_2 \\hat P(L \\le \\varepsilon)`.

    References: Towards Exact Computation of Inductive Bias, 2024.

    ``tail_model="scaled_ncx2"``: :math:`\\hat P` is the lower tail at ``eps`` of :func:`fit_scaled_ncx2` fitted to
    ``losses`` (finite even when no sample reaches ``eps``; ``0`` bits never underflow: ``-logcdf / ln 2``).
    ``"empirical"``: naive Monte Carlo, :math:`\\hat P = \\#\\{i: L_i \\le \\varepsilon\\} / N`, infinite bits when
    no sample is below ``eps``. Both report ``n_below`` and ``empirical_bits``.

    Args:
        losses: sampled test losses, shape ``(N,)`` (from :func:`sample_hypothesis_losses`).
        eps: target test loss :math:`\\varepsilon` (same units as ``losses``).
        tail_model: ``"scaled_ncx2"`` or ``"empirical"``.
        floor: known loss floor for the fit (see :func:`fit_scaled_ncx2`); ``eps <= floor`` gives infinite bits.
        method: fitting method for ``"scaled_ncx2"``.

    Returns:
        :class:`InductiveBiasEstimate` (``bits``, ``probability``, ``empirical_bits``, ``n_samples``,
        ``n_below``, ``tail_model``, ``fit`` or None).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> L = torch.randn(2000, 6, generator=g, dtype=torch.float64).pow(2).sum(1)    # chi2_6
        >>> est = inductive_bias_bits(L, 0.05)
        >>> est.n_below, round(est.bits)     # exact: -log2 chi2_6.cdf(0.05) = 18.6
        (0, 18)
    """
    n = int(losses.shape[0])
    n_below = int((losses <= eps).sum())
    empirical = math.inf if n_below == 0 else -math.log2(n_below / n)
    if tail_model == "empirical":
        return InductiveBiasEstimate(empirical, n_below / n, empirical, n, n_below, tail_model, None)
    fit = _fit(_losses_above_floor(losses, floor), method, float(floor), 2000)
    log2p = _fit_log2_cdf(fit, float(eps))
    return InductiveBiasEstimate(-log2p if log2p != 0 else 0.0, 2.0 ** log2p, empirical, n, n_below, tail_model,
                                 fit)


def _example_inductive_bias(ctx):
    d = _example_sampler(ctx)
    d["eps"] = 0.5
    return d


@accepts(sample_hypotheses=Function(), test_loss_fn=Function(), eps=Real(gt=0), n_samples=Int(ge=2),
         generator=Generator(), tail_model=Choice("scaled_ncx2", "empirical"), floor=Real(ge=0),
         example=_example_inductive_bias, infinite_ok=("bits", "empirical_bits"))
def estimate_inductive_bias(sample_hypotheses, test_loss_fn, eps: float, n_samples: int, generator=None,
                   tail_model: str = "scaled_ncx2", floor: float = 0.0) -> InductiveBiasEstimate:
    """Inductive bias of a hypothesis distribution for a task: sample ``n_samples`` hypotheses, take their test
    losses and estimate :math:`I(\\varepsilon) = -\\log_2 \\Pr_{h \\sim p}(L(h) \\le \\varepsilon)`.

    References: Towards Exact Computation of Inductive Bias, 2024.

    :func:`sample_hypothesis_losses` followed by :func:`inductive_bias_bits` (MLE fit for ``"scaled_ncx2"``).

    Args:
        sample_hypotheses: ``(n, generator) -> batch`` of hypotheses.
        test_loss_fn: ``batch -> (n,)`` test losses.
        eps: target test loss.
        n_samples: number of sampled hypotheses.
        generator: random source.
        tail_model: ``"scaled_ncx2"`` (fitted tail) or ``"empirical"`` (naive Monte Carlo).
        floor: known loss floor (see :func:`fit_scaled_ncx2`).

    Returns:
        :class:`InductiveBiasEstimate`.

    Example:
        >>> g = torch.Generator().manual_seed(1)
        >>> est = estimate_inductive_bias(lambda n, g: torch.randn(n, 2, generator=g, dtype=torch.float64),
        ...                      lambda w: w.pow(2).sum(1), 0.02, 3000, g)
        >>> round(est.bits)     # exact: -log2(1 - exp(-0.01)) = 6.6
        7
    """
    losses = sample_hypothesis_losses(sample_hypotheses, test_loss_fn, n_samples, generator)
    return inductive_bias_bits(losses, eps, tail_model=tail_model, floor=floor)


# -- the Gaussian linear case (exact reference) ------------------------------------------------------------------
@accepts(X_train=Tensor("n", "d"), y_train=Tensor("n"), prior_var=Real(gt=0), noise_var=Real(gt=0),
         example=lambda ctx: {"X_train": torch.randn(ctx.size("n"), ctx.size("d"), generator=ctx.generator,
                                                     dtype=ctx.dtype),
                              "y_train": torch.randn(ctx.size("n"), generator=ctx.generator, dtype=ctx.dtype),
                              "prior_var": 1.0, "noise_var": 0.1})
def bayesian_linear_posterior(X_train: torch.Tensor, y_train: torch.Tensor, prior_var: float,
                              noise_var: float) -> LinearPosterior:
    """Posterior over linear hypotheses fitted to a training set: :math:`w \\mid X, y \\sim N(\\mu, \\Sigma)` with
    :math:`\\Sigma = (X^\\top X/\\sigma^2 + I/\\tau^2)^{-1}`, :math:`\\mu = \\Sigma X^\\top y / \\sigma^2`.

    References: Towards Exact Computation of Inductive Bias, 2024 (hypotheses drawn from a Gaussian-process
    posterior on the training set; this is its linear-kernel case).

    Args:
        X_train: training inputs ``X``, shape ``(n, d)``.
        y_train: training targets ``y``, shape ``(n,)``.
        prior_var: prior weight variance :math:`\\tau^2`.
        noise_var: observation noise variance :math:`\\sigma^2`.

    Returns:
        :class:`LinearPosterior` (``mean`` shape ``(d,)``, ``cov`` shape ``(d, d)``).

    Example:
        >>> X = torch.eye(2, dtype=torch.float64)
        >>> post = bayesian_linear_posterior(X, torch.tensor([1.0, 2.0], dtype=torch.float64), 1.0, 1.0)
        >>> post.mean.tolist(), post.cov.diag().tolist()
        ([0.5, 1.0], [0.5, 0.5])
    """
    d = X_train.shape[1]
    prec = X_train.T @ X_train / noise_var + torch.eye(d, dtype=X_train.dtype, device=X_train.device) / prior_var
    cov = torch.linalg.inv(prec)
    cov = 0.5 * (cov + cov.T)
    return LinearPosterior(cov @ (X_train.T @ y_train) / noise_var, cov)


def _cov_factor(cov: torch.Tensor) -> torch.Tensor:
    evals, evecs = torch.linalg.eigh(0.5 * (cov + cov.T))
    if float(evals.min()) < -1e-8 * max(float(evals.abs().max()), 1e-300):
        raise ValueError(f"cov must be positive semi-definite, got eigenvalue {float(evals.min()):.3g}")
    tiny = evals.shape[0] * torch.finfo(cov.dtype).eps * max(float(evals.abs().max()), 1e-300)
    return evecs * torch.where(evals > tiny, evals, torch.zeros_like(evals)).sqrt()


def _example_linear(ctx):
    m, d, g, dt = ctx.size("m"), ctx.size("d"), ctx.generator, ctx.dtype
    a = torch.randn(d, d, generator=g, dtype=dt)
    return {"X_test": torch.randn(m, d, generator=g, dtype=dt), "y_test": torch.randn(m, generator=g, dtype=dt),
            "mean": torch.randn(d, generator=g, dtype=dt), "cov": a @ a.T / d}


@accepts(X_test=Tensor("m", "d"), y_test=Tensor("m"), mean=Tensor("d"), cov=Tensor("d", "d", symmetric=True),
         example=_example_linear)
def gaussian_linear_loss_distribution(X_test: torch.Tensor, y_test: torch.Tensor, mean: torch.Tensor,
                                      cov: torch.Tensor) -> GeneralizedChi2:
    """Exact law of the test MSE of Gaussian random linear hypotheses: for :math:`w \\sim N(\\mu, \\Sigma)`,
    :math:`L(w) = \\frac1m \\|X_t w - y_t\\|^2` is the generalised chi-square
    :math:`c + \\sum_j w_j (z_j + m_j)^2`.

    References: Towards Exact Computation of Inductive Bias, 2024.

    With :math:`\\Sigma = F F^\\top`, :math:`a = (X_t \\mu - y_t)/\\sqrt m` and the SVD
    :math:`X_t F/\\sqrt m = U S V^\\top`: weights :math:`w_j = s_j^2` (nonzero singular values), noncentralities
    :math:`m_j^2 = (u_j^\\top a / s_j)^2` and offset :math:`c = \\|a - U U^\\top a\\|^2` (the part of the residual
    no hypothesis in the support can remove).

    Args:
        X_test: test inputs, shape ``(m, d)``.
        y_test: test targets, shape ``(m,)``.
        mean: hypothesis mean :math:`\\mu`, shape ``(d,)``.
        cov: hypothesis covariance :math:`\\Sigma`, shape ``(d, d)``, positive semi-definite.

    Returns:
        :class:`GeneralizedChi2` (``weights``, ``noncentrality`` of shape ``(r,)``, r the rank; ``offset``).

    Example:
        >>> X = torch.eye(2, dtype=torch.float64)
        >>> zero = torch.zeros(2, dtype=torch.float64)
        >>> law = gaussian_linear_loss_distribution(X, zero, zero, X)
        >>> [round(v, 12) for v in law.weights.tolist()], law.offset      # ||w||^2 / 2 = 0.5 chi2_2
        ([0.5, 0.5], 0.0)
    """
    m = X_test.shape[0]
    B = X_test @ _cov_factor(cov) / math.sqrt(m)
    a = (X_test @ mean - y_test) / math.sqrt(m)
    U, S, _ = torch.linalg.svd(B, full_matrices=False)
    keep = S > S.max() * max(B.shape) * torch.finfo(B.dtype).eps if S.numel() and float(S.max()) > 0 else S > 0
    U, S = U[:, keep], S[keep]
    proj = U.T @ a
    offset = float((a - U @ proj).pow(2).sum())
    return GeneralizedChi2(S.pow(2), (proj / S).pow(2), offset)


@accepts(X_test=Tensor("m", "d"), y_test=Tensor("m"), mean=Tensor("d"), cov=Tensor("d", "d", symmetric=True),
         n_samples=Int(ge=1), generator=Generator(),
         example=lambda ctx: {**_example_linear(ctx), "n_samples": 8})
def gaussian_linear_hypothesis_losses(X_test: torch.Tensor, y_test: torch.Tensor, mean: torch.Tensor,
                                      cov: torch.Tensor, n_samples: int, generator=None) -> torch.Tensor:
    """Sampled test MSEs of Gaussian random linear hypotheses: :math:`L(w_i) = \\frac1m\\|X_t w_i - y_t\\|^2`,
    :math:`w_i \\sim N(\\mu, \\Sigma)`, one batched matrix product.

    References: Towards Exact Computation of Inductive Bias, 2024.

    Args:
        X_test: test inputs, shape ``(m, d)``.
        y_test: test targets, shape ``(m,)``.
        mean: hypothesis mean, shape ``(d,)``.
        cov: hypothesis covariance, shape ``(d, d)``, positive semi-definite.
        n_samples: number of hypotheses.
        generator: random source.

    Returns:
        Losses, shape ``(n_samples,)``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> I2 = torch.eye(2, dtype=torch.float64)
        >>> L = gaussian_linear_hypothesis_losses(I2, torch.zeros(2, dtype=torch.float64),
        ...                                       torch.zeros(2, dtype=torch.float64), I2, 20000, g)
        >>> round(float(L.mean()), 1)      # E[0.5 chi2_2] = 1
        1.0
    """
    z = torch.randn(n_samples, mean.shape[0], generator=generator, dtype=mean.dtype, device=mean.device)
    w = mean + z @ _cov_factor(cov).T
    return (w @ X_test.T - y_test).pow(2).mean(1)


@accepts(weights=Tensor("r", nonnegative=True), noncentrality=Tensor("r", nonnegative=True), offset=Real(),
         x=Real(), limit=Int(ge=10), example=lambda ctx: {
             "weights": torch.rand(ctx.size("r"), generator=ctx.generator, dtype=ctx.dtype) + 0.5,
             "noncentrality": torch.rand(ctx.size("r"), generator=ctx.generator, dtype=ctx.dtype),
             "offset": 0.0, "x": 1.0})
def generalized_chi2_cdf(weights: torch.Tensor, noncentrality: torch.Tensor, offset: float, x: float,
                         limit: int = 1000) -> GeneralizedChi2CDF:
    """Exact CDF of a generalised chi-square with positive weights by Imhof's inversion formula,
    :math:`P(Q \\le x) = \\tfrac12 - \\tfrac1\\pi \\int_0^\\infty \\frac{\\sin\\theta(u)}{u\\,\\rho(u)}\\,du` for
    :math:`Q = c + \\sum_j w_j (z_j + m_j)^2`.

    References: Towards Exact Computation of Inductive Bias, 2024 (the quantity it approximates); J. P. Imhof,
    Computing the distribution of quadratic forms in normal variables, 1961.

    :math:`\\theta(u) = \\tfrac12\\sum_j[\\arctan(w_j u) + m_j^2 w_j u / (1 + w_j^2u^2)] - \\tfrac12 (x - c) u`,
    :math:`\\rho(u) = \\prod_j (1 + w_j^2u^2)^{1/4} \\exp(\\tfrac12 \\sum_j m_j^2 w_j^2 u^2/(1 + w_j^2u^2))`, with
    ``weights`` = :math:`w`, ``noncentrality`` = :math:`m^2`, ``offset`` = :math:`c`. Integrated by
    ``scipy.integrate.quad`` (adaptive pieces up to 40 half-cycles of the :math:`xu/2` term, Fourier quadrature
    beyond); the lower tail is a difference from 1/2, so its absolute accuracy is about ``1e-14`` (``abs_error``
    reports the quadrature's estimate): relative error below 1e-3 down to probabilities of roughly ``1e-11``.

    Args:
        weights: :math:`w_j > 0` (zero weights are dropped), shape ``(r,)``.
        noncentrality: :math:`m_j^2 \\ge 0`, shape ``(r,)``.
        offset: constant :math:`c`.
        x: where to evaluate the CDF.
        limit: ``quad`` subinterval limit.

    Returns:
        :class:`GeneralizedChi2CDF` (``cdf`` clipped to ``[0, 1]``, ``abs_error``, ``bits = -log2 cdf``,
        ``converged``).

    Example:
        >>> from scipy import stats
        >>> r = generalized_chi2_cdf(torch.full((3,), 2.0, dtype=torch.float64),
        ...                          torch.full((3,), 0.5, dtype=torch.float64), 0.0, 1.0)
        >>> bool(abs(r.cdf - stats.ncx2.cdf(0.5, 3, 1.5)) < 1e-13)      # 2 * ncx2(3, 1.5)
        True
    """
    from scipy import integrate

    w = weights.detach().cpu().double().numpy()
    nc = noncentrality.detach().cpu().double().numpy()
    keep = w > 0
    w, nc = w[keep], nc[keep]
    t = float(x) - float(offset)
    if w.size == 0:
        cdf = 1.0 if t >= 0 else 0.0
        return GeneralizedChi2CDF(cdf, 0.0, -math.log2(cdf) if cdf > 0 else math.inf, True)
    if t <= 0:
        return GeneralizedChi2CDF(0.0, 0.0, math.inf, True)
    omega = 0.5 * t
    slope0 = 0.5 * (float(np.sum(w * (1.0 + nc))) - t)

    def parts(u):
        wu = w * u
        q = 1.0 + wu * wu
        phase = 0.5 * float(np.sum(np.arctan(wu) + nc * wu / q))
        log_rho = 0.25 * float(np.sum(np.log(q))) + 0.5 * float(np.sum(nc * wu * wu / q))
        return phase, math.exp(-log_rho) / u

    def integrand(u):  # sin(theta(u)) / (u rho(u)), theta = phase - omega u
        if u == 0.0:
            return slope0
        phase, env = parts(u)
        return math.sin(phase - omega * u) * env

    # [0, u0] (40 half-cycles of the x-term) on a geometric grid of pieces; beyond u0, QAWF Fourier quadrature of
    # sin(phase - omega u) = sin(phase) cos(omega u) - cos(phase) sin(omega u).
    u0 = 40.0 * math.pi / omega
    lo = 1e-2 / float(w.max())
    pts = np.geomspace(lo, u0, 24) if u0 > lo else np.empty(0)
    edges = np.concatenate([[0.0], pts[pts < u0], [u0]])
    val = err = 0.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for a, b in zip(edges[:-1], edges[1:]):
            v, e = integrate.quad(integrand, a, b, limit=limit, epsabs=1e-16, epsrel=1e-13)
            val, err = val + v, err + e
        v, e = integrate.quad(lambda u: math.sin(parts(u)[0]) * parts(u)[1], u0, math.inf, weight="cos",
                              wvar=omega, limlst=200, epsabs=1e-16)
        val, err = val + v, err + e
        v, e = integrate.quad(lambda u: math.cos(parts(u)[0]) * parts(u)[1], u0, math.inf, weight="sin",
                              wvar=omega, limlst=200, epsabs=1e-16)
        val, err = val - v, err + e
    del caught  # quadpack's roundoff notices at the 1e-16 level; convergence is judged on the error estimate
    converged = err / math.pi < 1e-12
    if not converged:
        warnings.warn(f"generalized_chi2_cdf: quadrature error estimate {err / math.pi:.2g} exceeds 1e-12 with "
                      f"limit={limit}; raise limit", ConvergenceWarning, stacklevel=2)
    cdf = min(max(0.5 - val / math.pi, 0.0), 1.0)
    return GeneralizedChi2CDF(cdf, err / math.pi, -math.log2(cdf) if cdf > 0 else math.inf, converged)
