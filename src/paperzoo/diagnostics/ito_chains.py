"""Ito chains (Euler-Maruyama-like Markov chains with non-Gaussian, state-dependent noise) and their W2 distance to
the limiting diffusion.

References: Ito Diffusion Approximation of Universal Ito Chains for Sampling, Optimization and Boosting (Ustimenko,
Beznosikov), 2024.

Chain (:func:`simulate_ito_chain`). With step :math:`\\eta` (``eta``), noise exponent :math:`\\gamma \\in [0, 1]`
(``gamma``), an inexact drift :math:`\\hat b` (``drift``) and an inexact diffusion :math:`\\hat\\sigma`
(``diffusion``, a per-coordinate scale: isotropic noise shaped state by state),

.. math:: X_{k+1} = X_k + \\eta\\,\\hat b(X_k) + \\eta^{(1+\\gamma)/2}\\,\\hat\\sigma(X_k)\\odot\\xi_k,

with :math:`\\xi_k` i.i.d., mean 0, identity covariance, and *any* law (``noise``: ``"gaussian"``, ``"uniform"``,
``"rademacher"``, ``"exponential"`` centred; :func:`standard_noise`). :math:`\\gamma = 0` is the SGLD / sampling
regime, whose limit :math:`dZ = b(Z)dt + \\sigma(Z)dW` keeps its noise; :math:`\\gamma = 1` is SGD seen as a diffusion
with noise :math:`\\sqrt\\eta\\,\\sigma`. The Gaussian-noise, exact-coefficient chain is Euler-Maruyama.

Bound (:func:`ito_chain_bound_exponent`). The paper bounds, at a horizon :math:`t = k\\eta`,
:math:`W_2(\\mathcal L(X_k), \\mathcal L(Z_t)) \\le C(t)\\,(\\eta^{\\theta} + \\eta^{\\theta/2+\\gamma/4})` with
:math:`\\theta = \\min\\{\\alpha, ((\\gamma+1)(1+\\chi_0) + (\\gamma+\\beta)(1-\\chi_0))/4\\}`, where
:math:`\\alpha` is the order of the drift error (:math:`\\|\\hat b - b\\| = O(\\eta^\\alpha)`; ``alpha=None`` for an
exact drift), :math:`\\chi_0 = 1` for Gaussian noise and 0 otherwise, and :math:`\\beta` the extra order granted to
non-Gaussian noise (0 when nothing is assumed). So in :math:`\\eta` the bound decays as :math:`\\eta^{r}` with
:math:`r = \\min(\\theta, \\theta/2 + \\gamma/4)`. The formula is taken from a secondary summary of the paper (the
full text could not be read here); see the catalog's fidelity entry.

Measurement (:func:`ito_chain_w2_curve`, 1-D): the empirical law of ``n_particles`` chains run to the horizon, for each
step size, against a Gaussian reference law (the exact Ornstein-Uhlenbeck marginal :func:`ou_marginal`), by the exact
W2 between an empirical measure and a Gaussian (:func:`wasserstein2_to_gaussian`), with the log-log slope fitted by
:func:`paperzoo.core.evidence.fit_line`.

Example:
    >>> import math, torch
    >>> g = torch.Generator().manual_seed(0)
    >>> law = ou_marginal(2.0, 1.0, theta=1.0, sigma=math.sqrt(2.0))
    >>> curve = ito_chain_w2_curve(lambda x: -x, lambda x: torch.full_like(x, math.sqrt(2.0)), 2.0,
    ...                            torch.tensor([0.2, 0.1]), 1.0, law.mean, law.std, n_particles=20000,
    ...                            noise="uniform", generator=g)
    >>> bool(curve.w2[0] > curve.w2[1])
    True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Choice, Flag, FloatDType, Function, Generator, Int, Real, Tensor, accepts
from paperzoo.core.evidence import LineFit, fit_line

__all__ = ["NOISE_KINDS", "standard_noise", "ItoChainRun", "simulate_ito_chain", "GaussianLaw", "ou_marginal",
           "euler_maruyama_ou_law", "wasserstein2_to_gaussian", "gaussian_w2", "BoundExponent",
           "ito_chain_bound_exponent", "W2Curve", "ito_chain_w2_curve"]

NOISE_KINDS = ("gaussian", "uniform", "rademacher", "exponential")


def _standard_noise(kind: str, n: int, d: int, generator, dtype) -> torch.Tensor:
    if kind == "gaussian":
        return torch.randn(n, d, generator=generator, dtype=dtype)
    if kind == "uniform":  # U(-sqrt 3, sqrt 3): variance 1, symmetric, light tails
        return (torch.rand(n, d, generator=generator, dtype=dtype) * 2.0 - 1.0) * math.sqrt(3.0)
    if kind == "rademacher":
        return torch.randint(0, 2, (n, d), generator=generator).to(dtype) * 2.0 - 1.0
    # Exp(1) - 1: variance 1, skewness 2 (the non-Gaussianity a symmetric law does not have)
    u = torch.rand(n, d, generator=generator, dtype=dtype)
    return -torch.log1p(-u) - 1.0


@accepts(kind=Choice(*NOISE_KINDS), n=Int(ge=1), d=Int(ge=1), generator=Generator(), dtype=FloatDType(),
         example=lambda ctx: {"kind": "uniform", "n": 5, "d": 2})
def standard_noise(kind: str, n: int, d: int, *, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Standardised chain noise: i.i.d. entries of mean 0 and variance 1 of a named law.

    References: Ito Diffusion Approximation of Universal Ito Chains for Sampling, Optimization and Boosting, 2024.

    ``"gaussian"`` N(0, 1); ``"uniform"`` U(-sqrt 3, sqrt 3); ``"rademacher"`` +-1; ``"exponential"`` Exp(1) - 1.

    Returns: shape ``(n, d)``.

    Example:
        >>> standard_noise("rademacher", 2, 3, generator=torch.Generator().manual_seed(0)).abs().tolist()
        [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    return _standard_noise(kind, n, d, generator, dtype)


class ItoChainRun(NamedTuple):
    """Final states of independent chains. ``final``: ``(n, d)``; ``n_steps`` run; ``diverged``: a non-finite state
    appeared (the run stopped there)."""

    final: torch.Tensor
    n_steps: int
    eta: float
    diverged: bool


def _simulate(drift, diffusion, x, eta, n_steps, gamma, noise, generator) -> ItoChainRun:
    scale = eta ** ((1.0 + gamma) / 2.0)
    n, d = x.shape
    for k in range(n_steps):
        xi = _standard_noise(noise, n, d, generator, x.dtype)
        x = x + eta * drift(x) + scale * diffusion(x) * xi
        if not bool(torch.isfinite(x).all()):
            warnings.warn(f"simulate_ito_chain: the chain left the finite range at step {k + 1} of {n_steps}; lower "
                          f"eta (got {eta}) or use a dissipative drift", RuntimeWarning, stacklevel=3)
            return ItoChainRun(x, k + 1, eta, True)
    return ItoChainRun(x, n_steps, eta, False)


def _ex_chain(ctx):
    x0 = torch.randn(ctx.size("n"), ctx.size("d"), generator=ctx.generator, dtype=ctx.dtype)
    return {"drift": lambda x: -x, "diffusion": lambda x: torch.ones_like(x), "x0": x0, "eta": 0.1, "n_steps": 3}


@accepts(drift=Function(), diffusion=Function(), x0=Tensor("n", "d"), eta=Real(gt=0, le=1), n_steps=Int(ge=0),
         gamma=Real(ge=0, le=1), noise=Choice(*NOISE_KINDS), generator=Generator(), example=_ex_chain, output="any")
def simulate_ito_chain(drift: Callable[[torch.Tensor], torch.Tensor],
                       diffusion: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, eta: float, n_steps: int,
                       *, gamma: float = 0.0, noise: str = "gaussian",
                       generator: torch.Generator | None = None) -> ItoChainRun:
    """Ito chain: n independent copies of X_{k+1} = X_k + eta b(X_k) + eta^{(1+gamma)/2} sigma(X_k) * xi_k.

    References: Ito Diffusion Approximation of Universal Ito Chains for Sampling, Optimization and Boosting, 2024.

    Args:
        drift: :math:`\\hat b`, maps states ``(n, d)`` to ``(n, d)``.
        diffusion: :math:`\\hat\\sigma`, maps states ``(n, d)`` to per-coordinate scales ``(n, d)``.
        x0: starting states, shape ``(n, d)`` (one row per chain).
        eta: step size :math:`\\eta`; ``n_steps``: number of steps :math:`k`.
        gamma: noise exponent :math:`\\gamma` (0: the noise survives in the limit; 1: SGD-like vanishing noise).
        noise: the law of :math:`\\xi_k` (:func:`standard_noise`).

    Returns: :class:`ItoChainRun`; a non-finite state warns (``RuntimeWarning``) and sets ``diverged``.

    Example:
        >>> run = simulate_ito_chain(lambda x: -x, lambda x: torch.zeros_like(x), torch.ones(2, 1), 0.5, 2)
        >>> run.final.flatten().tolist()
        [0.25, 0.25]
    """
    return _simulate(drift, diffusion, x0, float(eta), n_steps, float(gamma), noise, generator)


class GaussianLaw(NamedTuple):
    """A 1-D Gaussian law N(mean, std^2)."""

    mean: float
    std: float


@accepts(x0=Real(), t=Real(ge=0), theta=Real(gt=0), sigma=Real(ge=0),
         example=lambda ctx: {"x0": 1.0, "t": 0.5, "theta": 1.0, "sigma": 1.0})
def ou_marginal(x0: float, t: float, *, theta: float = 1.0, sigma: float = math.sqrt(2.0)) -> GaussianLaw:
    """Exact Ornstein-Uhlenbeck marginal of dZ = -theta Z dt + sigma dW from Z_0 = x0 at time t.

    References: Ito Diffusion Approximation of Universal Ito Chains for Sampling, Optimization and Boosting, 2024.

    :math:`Z_t \\sim N(x_0 e^{-\\theta t}, \\sigma^2 (1 - e^{-2\\theta t}) / (2\\theta))`.

    Example:
        >>> law = ou_marginal(0.0, 50.0)                  # sigma = sqrt 2, theta = 1: stationary N(0, 1)
        >>> round(law.mean, 6), round(law.std, 6)
        (0.0, 1.0)
    """
    var = sigma**2 * -math.expm1(-2.0 * theta * t) / (2.0 * theta)
    return GaussianLaw(x0 * math.exp(-theta * t), math.sqrt(var))


@accepts(x0=Real(), eta=Real(gt=0), n_steps=Int(ge=0), theta=Real(gt=0), sigma=Real(ge=0),
         example=lambda ctx: {"x0": 1.0, "eta": 0.1, "n_steps": 4, "theta": 1.0, "sigma": 1.0})
def euler_maruyama_ou_law(x0: float, eta: float, n_steps: int, *, theta: float = 1.0,
                          sigma: float = math.sqrt(2.0)) -> GaussianLaw:
    """Exact law of the Gaussian-noise Ito chain (Euler-Maruyama) for the Ornstein-Uhlenbeck drift after n_steps.

    References: Ito Diffusion Approximation of Universal Ito Chains for Sampling, Optimization and Boosting, 2024.

    With :math:`a = 1 - \\theta\\eta`: :math:`X_k \\sim N(a^k x_0, \\sigma^2\\eta\\sum_{j<k} a^{2j})`.

    Example:
        >>> law = euler_maruyama_ou_law(1.0, 0.5, 2, theta=1.0, sigma=1.0)
        >>> law.mean, round(law.std ** 2, 6)
        (0.25, 0.625)
    """
    a = 1.0 - theta * eta
    var = sigma**2 * eta * (float(n_steps) if a * a == 1.0 else (1.0 - a ** (2 * n_steps)) / (1.0 - a * a))
    return GaussianLaw(a**n_steps * x0, math.sqrt(var))


@accepts(m1=Real(), s1=Real(ge=0), m2=Real(), s2=Real(ge=0),
         example=lambda ctx: {"m1": 0.0, "s1": 1.0, "m2": 1.0, "s2": 2.0})
def gaussian_w2(m1: float, s1: float, m2: float, s2: float) -> float:
    """W2 distance between two 1-D Gaussians: sqrt((m1 - m2)^2 + (s1 - s2)^2).

    References: Ito Diffusion Approximation of Universal Ito Chains for Sampling, Optimization and Boosting, 2024.

    Example:
        >>> gaussian_w2(0.0, 1.0, 3.0, 5.0)
        5.0
    """
    return math.hypot(m1 - m2, s1 - s2)


def _w2_to_gaussian(x: torch.Tensor, mean: float, std: float) -> float:
    xs = torch.sort(x.double()).values
    n = xs.numel()
    p = torch.arange(1, n, dtype=torch.float64) / n
    z = torch.special.ndtri(p)
    phi = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    zero = torch.zeros(1, dtype=torch.float64)
    phi = torch.cat([zero, phi, zero])  # density at the quantile cut points, 0 at -inf and +inf
    cell = mean / n + std * (phi[:-1] - phi[1:])  # integral of the Gaussian quantile over ((i-1)/n, i/n)
    w2sq = float((xs * xs).mean() - 2.0 * (xs * cell).sum()) + mean * mean + std * std
    return math.sqrt(max(w2sq, 0.0))


@accepts(x=Tensor("n"), mean=Real(), std=Real(ge=0), example=lambda ctx: {
    "x": torch.randn(ctx.size("n"), generator=ctx.generator, dtype=ctx.dtype), "mean": 0.0, "std": 1.0})
def wasserstein2_to_gaussian(x: torch.Tensor, mean: float, std: float) -> float:
    """Exact W2 between the empirical measure of 1-D samples and the Gaussian N(mean, std^2).

    References: Ito Diffusion Approximation of Universal Ito Chains for Sampling, Optimization and Boosting, 2024.

    In 1-D, :math:`W_2^2 = \\int_0^1 (F_n^{-1}(p) - Q(p))^2 dp` with :math:`Q(p) = m + s\\Phi^{-1}(p)`; on the
    cell :math:`((i-1)/n, i/n)` the empirical quantile is the i-th order statistic :math:`x_{(i)}` and
    :math:`\\int Q = m/n + s(\\varphi(z_{i-1}) - \\varphi(z_i))`, :math:`z_i = \\Phi^{-1}(i/n)`, so
    :math:`W_2^2 = \\frac1n\\sum x_{(i)}^2 - 2\\sum_i x_{(i)}\\int_i Q + m^2 + s^2`. No quadrature, no sampling of
    the Gaussian. Computed in float64.

    Args:
        x: samples, shape ``(n,)``.

    Example:
        >>> round(wasserstein2_to_gaussian(torch.tensor([0.0]), 3.0, 4.0), 6)   # a point mass vs N(3, 16)
        5.0
    """
    return _w2_to_gaussian(x, float(mean), float(std))


class BoundExponent(NamedTuple):
    """The paper's theta and the resulting power of eta in the W2 bound, r = min(theta, theta/2 + gamma/4)."""

    theta: float
    exponent: float


@accepts(gamma=Real(ge=0, le=1), alpha=Real(ge=0, optional=True), beta=Real(ge=0, le=1),
         gaussian=Flag(), example=lambda ctx: {"gamma": 0.0, "alpha": None, "beta": 0.0,
                                                            "gaussian": True})
def ito_chain_bound_exponent(gamma: float, *, alpha: float | None = None, beta: float = 0.0,
                             gaussian: bool = True) -> BoundExponent:
    """Exponent of eta in the paper's W2 bound between an Ito chain and its limiting diffusion.

    References: Ito Diffusion Approximation of Universal Ito Chains for Sampling, Optimization and Boosting, 2024.

    :math:`\\theta = \\min\\{\\alpha, ((\\gamma+1)(1+\\chi_0) + (\\gamma+\\beta)(1-\\chi_0))/4\\}`, :math:`\\chi_0`
    = ``gaussian``, ``alpha=None`` an exact drift; the bound is :math:`O(\\eta^\\theta + \\eta^{\\theta/2+\\gamma/4})`
    at a fixed horizon, so ``exponent`` = :math:`\\min(\\theta, \\theta/2 + \\gamma/4)`.

    Example:
        >>> ito_chain_bound_exponent(0.0, gaussian=True), ito_chain_bound_exponent(0.0, gaussian=False).exponent
        (BoundExponent(theta=0.5, exponent=0.25), 0.125)
    """
    chi0 = 1.0 if gaussian else 0.0
    theta = ((gamma + 1.0) * (1.0 + chi0) + (gamma + beta) * (1.0 - chi0)) / 4.0
    if alpha is not None:
        theta = min(theta, float(alpha))
    return BoundExponent(theta, min(theta, theta / 2.0 + gamma / 4.0))


class W2Curve(NamedTuple):
    """W2 from chain to reference law over step sizes: ``etas``, ``w2``, ``n_steps`` per eta, the log-log ``fit``
    (slope = the measured rate), ``decreasing`` (W2 strictly falls as eta falls), ``diverged`` (any run)."""

    etas: list[float]
    w2: list[float]
    n_steps: list[int]
    fit: LineFit
    decreasing: bool
    diverged: bool


@accepts(drift=Function(), diffusion=Function(), x0=Real(), etas=Tensor("m", nonnegative=True), horizon=Real(gt=0),
         law_mean=Real(), law_std=Real(ge=0), n_particles=Int(ge=2), noise=Choice(*NOISE_KINDS),
         gamma=Real(ge=0, le=1), generator=Generator(),
         example=lambda ctx: {"drift": lambda x: -x, "diffusion": lambda x: torch.ones_like(x), "x0": 1.0,
                              "etas": torch.tensor([0.2, 0.1, 0.05], dtype=ctx.dtype), "horizon": 1.0,
                              "law_mean": math.exp(-1.0),
                              "law_std": math.sqrt(-math.expm1(-2.0) / 2.0), "n_particles": 200})
def ito_chain_w2_curve(drift: Callable[[torch.Tensor], torch.Tensor],
                       diffusion: Callable[[torch.Tensor], torch.Tensor], x0: float,
                       etas: torch.Tensor, horizon: float, law_mean: float, law_std: float, *,
                       n_particles: int = 100_000, noise: str = "gaussian", gamma: float = 0.0,
                       generator: torch.Generator | None = None) -> W2Curve:
    """W2 distance between a 1-D Ito chain's law at a horizon and a Gaussian reference law, as a function of eta.

    References: Ito Diffusion Approximation of Universal Ito Chains for Sampling, Optimization and Boosting, 2024.

    For each :math:`\\eta` (``etas``, shape ``(m,)``, in (0, 1], with ``horizon / eta`` an integer ``k`` to within
    1e-6 relative; the step used is ``horizon / k``), ``n_particles`` chains start at ``x0`` and run
    :math:`k = T/\\eta` steps (:func:`simulate_ito_chain`); the empirical law is compared with
    :math:`N(\\mu, s^2)` (``law_mean``, ``law_std``) by :func:`wasserstein2_to_gaussian`. The Monte
    Carlo floor is of order :math:`n^{-1/2}` (times a log factor): a rate is readable only where W2 is well above
    it. The slope of :math:`\\log W_2` on :math:`\\log\\eta` is fitted with :func:`paperzoo.core.evidence.fit_line`
    (a t-interval once there are 3 or more step sizes).

    Example:
        >>> law = ou_marginal(1.0, 1.0, theta=1.0, sigma=1.0)
        >>> c = ito_chain_w2_curve(lambda x: -x, lambda x: torch.ones_like(x), 1.0, torch.tensor([0.5, 0.25]),
        ...                        1.0, law.mean, law.std, n_particles=1000,
        ...                        generator=torch.Generator().manual_seed(0))
        >>> c.n_steps
        [2, 4]
    """
    etas = [float(e) for e in etas.tolist()]
    if len(etas) < 2:
        raise ValueError(f"etas must hold at least 2 step sizes, got {len(etas)}")
    steps = []
    for e in etas:
        if not 0.0 < e <= 1.0:
            raise ValueError(f"etas must lie in (0, 1], got {e}")
        k = round(horizon / e)
        if k < 1 or abs(k * e - horizon) > 1e-6 * horizon:
            raise ValueError(f"horizon / eta must be a positive integer, got horizon {horizon} and eta {e}")
        steps.append(k)
    etas = [horizon / k for k in steps]  # exact horizon (a float32 eta is off by rounding)
    w2, diverged = [], False
    for e, k in zip(etas, steps):
        x = torch.full((n_particles, 1), float(x0), dtype=torch.float64)
        run = _simulate(drift, diffusion, x, e, k, float(gamma), noise, generator)
        diverged = diverged or run.diverged
        w2.append(math.inf if run.diverged else _w2_to_gaussian(run.final[:, 0], float(law_mean), float(law_std)))
    order = sorted(range(len(etas)), key=lambda i: -etas[i])
    decreasing = all(w2[order[i + 1]] < w2[order[i]] for i in range(len(order) - 1))
    if diverged or min(w2) <= 0.0:
        fit = LineFit(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, len(etas), 0.95)
    else:
        fit = fit_line(torch.log(torch.tensor(etas, dtype=torch.float64)),
                       torch.log(torch.tensor(w2, dtype=torch.float64)))
    return W2Curve(etas, w2, steps, fit, decreasing, diverged)
