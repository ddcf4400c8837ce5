"""Generalization error of spectral algorithms (KRR, gradient flow, gradient descent) as a functional of the profile.

References: Generalization error of spectral algorithms (Velikanov, Panov, Yarotsky), 2024.

A spectral algorithm fits kernel regression with ``n`` samples by a *profile* :math:`h(\\lambda)` applied to the
empirical kernel: :math:`\\hat f(x) = k(x)^\\top K^{-1} h(K/n)\\, y`. Ridge regression (KRR) with regularization
:math:`\\eta` is :math:`h = \\lambda/(\\lambda+\\eta)`, gradient flow run for time :math:`t` is
:math:`h = 1 - e^{-t\\lambda}`, and ``T`` steps of gradient descent with learning rate :math:`\\alpha` are
:math:`h = 1 - (1-\\alpha\\lambda)^T`. With population eigenvalues :math:`\\lambda_l` (``eigvals``), the target's
coefficients :math:`v_l` in the orthonormal eigenbasis (``target_coeffs``; the paper's :math:`c_l`) and label-noise
variance :math:`\\sigma^2` (``noise_var``), the test risk is a quadratic functional :math:`L[h]`, given here in two
data models:

* ``"naive"`` (the paper's naive model of noisy observations, NMNO): the profile acts on the population spectrum,
  :math:`L[h] = \\sum_l (1-h(\\lambda_l))^2 v_l^2 + \\frac{\\sigma^2}{n}\\sum_l h(\\lambda_l)^2 + \\sigma^2`.
* ``"wishart"`` (Gaussian features with covariance :math:`\\mathrm{diag}(\\lambda)`): the profile acts on the
  empirical spectrum. A profile is given by its resolvent expansion :math:`1 - h(s) = \\sum_k c_k/(s + \\eta_k)`
  (one real node for KRR; a Talbot-type contour quadrature of the inverse Laplace transform for gradient flow).
  Each resolvent is replaced by its deterministic equivalent with effective regularization :math:`\\kappa_k`,
  :math:`\\kappa_k = \\eta_k + \\frac{\\kappa_k}{n}\\sum_l \\frac{\\lambda_l}{\\lambda_l+\\kappa_k}`, and the two-point
  equivalents give, with :math:`a_k = c_k/\\eta_k` and
  :math:`q_{jk} = \\frac1n\\sum_l \\frac{\\lambda_l^2}{(\\lambda_l+\\kappa_j)(\\lambda_l+\\kappa_k)}`,

  .. math::
      B = \\sum_{j,k} a_j a_k \\frac{\\kappa_j\\kappa_k}{1-q_{jk}}
          \\sum_l \\frac{v_l^2}{(\\lambda_l+\\kappa_j)(\\lambda_l+\\kappa_k)}, \\qquad
      V = \\sigma^2 \\sum_{j,k} a_j a_k \\frac{q_{jk}}{1-q_{jk}}, \\qquad L[h] = B + V + \\sigma^2.

  For KRR (one node, :math:`c = \\eta`) this is :func:`paperzoo.diagnostics.spectral_risk.ridge_risk` with
  ``ridge = n * eta`` (the eigenframework). This route is our own derivation of the Wishart-model functional (the
  paper writes it with contour integrals of the Stieltjes transform); the tests check it against Monte Carlo.

Power-law asymptotics (noisy observations, :math:`\\lambda_l \\propto l^{-\\nu}`, :math:`v_l^2 \\propto
l^{-\\kappa-1}`, i.e. :math:`\\sum_{l > L} v_l^2 \\propto L^{-\\kappa}`): the optimally stopped gradient flow attains
the excess-risk rate :math:`n^{-\\kappa/(\\kappa+1)}` for every :math:`\\kappa`; optimally tuned KRR attains it only
for :math:`\\kappa \\le 2\\nu` and saturates at :math:`n^{-2\\nu/(2\\nu+1)}` beyond (its residual
:math:`\\eta/(\\lambda+\\eta)` decays only like :math:`\\lambda^{-1}` on the learned scales), see
:func:`power_law_rates`.

The empirical route, :func:`empirical_spectral_risk`, applies the same profiles to the empirical kernel of Gaussian
features (one ``torch.linalg.eigh`` per draw) and returns the exact population risk of each fitted predictor.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple

import torch

from paperzoo.core.accepts import Choice, Generator, Instance, Int, Real, Tensor, accepts
from paperzoo.diagnostics.spectral_risk import _kappa

__all__ = ["SpectralProfile", "SpectralLoss", "EmpiricalSpectralRisk", "PowerLawRates", "krr_profile",
           "gradient_flow_profile", "gradient_descent_profile", "profile_loss", "empirical_spectral_risk",
           "power_law_rates"]

# Weideman-Trefethen parabolic contour for the inverse Laplace transform (geometric convergence, about 2.85^-M).
_PARABOLA = (0.1309, 0.1194, 0.2500)


class SpectralProfile(NamedTuple):
    """A spectral algorithm: its profile :math:`h` and, where it has one, its resolvent expansion.

    Attributes:
        name: ``"krr"``, ``"gradient_flow"`` or ``"gradient_descent"``.
        parameter: the ridge :math:`\\eta`, the time :math:`t`, or the learning rate times steps :math:`\\alpha T`.
        h: callable mapping a tensor of eigenvalues (of ``K/n``) to :math:`h(\\lambda)`, same shape.
        nodes: complex tensor ``(m,)`` of :math:`\\eta_k` in :math:`1-h(s) = \\sum_k c_k/(s+\\eta_k)`, or ``None``.
        weights: complex tensor ``(m,)`` of :math:`c_k`, or ``None``.
    """

    name: str
    parameter: float
    h: Callable[[torch.Tensor], torch.Tensor]
    nodes: torch.Tensor | None
    weights: torch.Tensor | None


class SpectralLoss(NamedTuple):
    """Result of :func:`profile_loss`.

    Attributes:
        risk: predicted test risk :math:`L[h]` = ``bias + variance + noise_var``.
        bias: the noise-free excess risk.
        variance: the excess risk due to training-label noise.
    """

    risk: float
    bias: float
    variance: float


class EmpiricalSpectralRisk(NamedTuple):
    """Result of :func:`empirical_spectral_risk`.

    Attributes:
        risks: exact population risk of each fit, shape ``(trials, len(profiles))``.
        mean: mean over trials, shape ``(len(profiles),)``.
        stderr: its standard error (0 for one trial).
    """

    risks: torch.Tensor
    mean: torch.Tensor
    stderr: torch.Tensor


class PowerLawRates(NamedTuple):
    """Result of :func:`power_law_rates`: excess risk :math:`\\propto n^{-\\text{rate}}` of the optimally tuned
    algorithm.

    Attributes:
        krr: :math:`\\min(\\kappa, 2\\nu)/(\\min(\\kappa, 2\\nu) + 1)`.
        gradient_flow: :math:`\\kappa/(\\kappa+1)`.
        saturated: :math:`\\kappa > 2\\nu` (KRR strictly slower than gradient flow).
    """

    krr: float
    gradient_flow: float
    saturated: bool


def _power_law(ctx):
    return torch.arange(1, 9, dtype=ctx.dtype) ** -1.5


def _target(ctx):
    return torch.arange(1, 9, dtype=ctx.dtype) ** -1.0


@accepts(ridge=Real(gt=0), example=lambda ctx: {"ridge": 0.1})
def krr_profile(ridge: float) -> SpectralProfile:
    """Profile of kernel ridge regression, :math:`h(\\lambda) = \\lambda/(\\lambda+\\eta)`.

    References: Generalization error of spectral algorithms, 2024 (the KRR profile).

    :math:`\\eta` = ``ridge`` > 0, on the scale of the eigenvalues of ``K/n`` (scikit-learn's
    ``Ridge(alpha=n * ridge)``). Resolvent expansion: one node :math:`\\eta` with weight :math:`\\eta`.

    Example:
        >>> import torch
        >>> p = krr_profile(1.0)
        >>> p.h(torch.tensor([1.0, 3.0])).tolist()
        [0.5, 0.75]
    """
    eta = float(ridge)
    node = torch.tensor([eta], dtype=torch.complex128)
    return SpectralProfile("krr", eta, lambda lam: lam / (lam + eta), node, node.clone())


@accepts(time=Real(gt=0), num_nodes=Int(ge=8), example=lambda ctx: {"time": 2.0})
def gradient_flow_profile(time: float, *, num_nodes: int = 32) -> SpectralProfile:
    """Profile of gradient flow on the square loss run for time :math:`t`, :math:`h(\\lambda) = 1 - e^{-t\\lambda}`.

    References: Generalization error of spectral algorithms, 2024 (the gradient-flow profile); Talbot quadratures
    and rational approximations (Trefethen, Weideman, Schmelzer), 2006 (the contour).

    :math:`t` = ``time`` > 0 (gradient flow of :math:`\\frac{1}{2n}\\|y - X\\beta\\|^2` from zero). The residual is the
    inverse Laplace transform :math:`e^{-ts} = \\frac{1}{2\\pi i}\\int_\\Gamma \\frac{e^{\\eta t}}{s+\\eta}\\,d\\eta`
    on a parabola :math:`\\Gamma` around the negative axis, discretised by the midpoint rule with ``num_nodes``
    nodes (error about :math:`2.85^{-m}` uniformly in :math:`s \\ge 0`).

    Example:
        >>> import torch
        >>> p = gradient_flow_profile(2.0)
        >>> s = torch.tensor([0.0, 0.5, 3.0], dtype=torch.float64)
        >>> approx = 1 - (p.weights / (s.to(torch.complex128)[:, None] + p.nodes)).sum(-1).real
        >>> bool((approx - p.h(s)).abs().max() < 1e-12)
        True
    """
    t, m = float(time), int(num_nodes)
    a0, a2, a1 = _PARABOLA
    step = 2 * math.pi / m
    theta = -math.pi + step * (torch.arange(m, dtype=torch.float64) + 0.5)
    eta = (m / t) * (a0 - a2 * theta ** 2 + 1j * a1 * theta)
    d_eta = (m / t) * (-2 * a2 * theta + 1j * a1)
    weights = step * torch.exp(eta * t) * d_eta / (2j * math.pi)
    return SpectralProfile("gradient_flow", t, lambda lam: -torch.expm1(-t * lam), eta, weights)


@accepts(lr=Real(gt=0), steps=Int(ge=0), example=lambda ctx: {"lr": 0.5, "steps": 4})
def gradient_descent_profile(lr: float, steps: int) -> SpectralProfile:
    """Profile of ``steps`` steps of gradient descent, :math:`h(\\lambda) = 1 - (1-\\alpha\\lambda)^T`.

    References: Generalization error of spectral algorithms, 2024 (the GD profile).

    :math:`\\alpha` = ``lr`` on :math:`\\frac{1}{2n}\\|y - X\\beta\\|^2` from zero, :math:`T` = ``steps``. Stable for
    :math:`\\alpha\\lambda_{\\max}(K/n) < 2`. No resolvent expansion is given: use the ``"naive"`` model or
    :func:`empirical_spectral_risk` (for small :math:`\\alpha` it is close to gradient flow at :math:`t = \\alpha T`).

    Example:
        >>> import torch
        >>> gradient_descent_profile(0.5, 2).h(torch.tensor([1.0])).tolist()
        [0.75]
    """
    alpha, T = float(lr), int(steps)
    return SpectralProfile("gradient_descent", alpha * T, lambda lam: 1 - (1 - alpha * lam) ** T, None, None)


def _complex_kappa(lam: torch.Tensor, n: int, eta: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    """Effective regularization at complex eta: continuation from the real root at |eta|, then Newton."""
    lam_c = lam.to(torch.complex128)

    def newton(k, e):
        r = lam_c / (lam_c + k.unsqueeze(-1))
        f = k - e - k / n * r.sum(-1)
        slope = 1 - (r * r).sum(-1) / n
        return k - f / slope, f

    start = eta.abs()
    k = _kappa(lam.to(torch.float64), n, n * start, 1e-14, 200).kappa.to(torch.complex128)
    path = 64
    for i in range(1, path + 1):
        e = start + (eta - start) * (i / path)
        for _ in range(3):
            k, _ = newton(k, e)
    f = None
    for _ in range(max_iter):
        k, f = newton(k, eta)
        if bool((f.abs() <= tol * (1 + eta.abs())).all()):
            break
    if not bool(torch.isfinite(k).all()):
        raise ValueError("profile_loss: the effective regularization became NaN or inf (check eigvals and the profile)")
    if f is None or not bool((f.abs() <= 1e3 * tol * (1 + eta.abs())).all()):
        warnings.warn(f"profile_loss: the complex effective-regularization solve did not converge in {max_iter} "
                      "iterations; raise num_nodes' time scale or max_iter", RuntimeWarning, stacklevel=3)
    return k


def _wishart(lam, v, sigma2, n, profile: SpectralProfile) -> SpectralLoss:
    nodes, c = profile.nodes, profile.weights
    if profile.name == "krr":  # the real route of spectral_risk (robust safeguarded Newton)
        kappa = _kappa(lam.to(torch.float64), n, torch.tensor([n * profile.parameter], dtype=torch.float64),
                       1e-14, 200).kappa.to(torch.complex128)
    else:
        kappa = _complex_kappa(lam, n, nodes, 1e-14, 100)
    lam_c, v2 = lam.to(torch.complex128), v.to(torch.complex128) ** 2
    a = c / nodes
    inv = 1 / (lam_c.unsqueeze(0) + kappa.unsqueeze(-1))                 # (m, p)
    q = (inv * lam_c ** 2) @ inv.T / n                                    # (m, m)
    s = (inv * v2) @ inv.T
    outer = a.unsqueeze(-1) * a.unsqueeze(0)
    kk = kappa.unsqueeze(-1) * kappa.unsqueeze(0)
    bias = (outer * kk * s / (1 - q)).sum().real
    variance = sigma2 * (outer * q / (1 - q)).sum().real
    return SpectralLoss(float(bias + variance) + sigma2, float(bias), float(variance))


def _naive(lam, v, sigma2, n, profile: SpectralProfile) -> SpectralLoss:
    h = profile.h(lam.to(torch.float64))
    bias = float(((1 - h) ** 2 * v.to(torch.float64) ** 2).sum())
    variance = sigma2 / n * float((h ** 2).sum())
    return SpectralLoss(bias + variance + sigma2, bias, variance)


@accepts(eigvals=Tensor("p", nonnegative=True), target_coeffs=Tensor("p"), noise_var=Real(ge=0), n=Int(ge=1),
         profile=Instance(SpectralProfile, what="SpectralProfile"), model=Choice("wishart", "naive"),
         example=lambda ctx: {"eigvals": _power_law(ctx), "target_coeffs": _target(ctx), "noise_var": 0.1, "n": 4,
                              "profile": krr_profile(0.1)})
def profile_loss(eigvals: torch.Tensor, target_coeffs: torch.Tensor, noise_var: float, n: int,
                 profile: SpectralProfile, *, model: str = "wishart") -> SpectralLoss:
    """Predicted test risk :math:`L[h]` of a spectral algorithm with ``n`` samples (Wishart or naive model).

    References: Generalization error of spectral algorithms, 2024 (the loss as a quadratic functional of the
    profile; the naive model of noisy observations).

    :math:`\\lambda` = ``eigvals`` (shape ``(p,)``, population eigenvalues of the kernel), :math:`v` =
    ``target_coeffs`` (shape ``(p,)``), :math:`\\sigma^2` = ``noise_var``, ``profile`` from :func:`krr_profile`,
    :func:`gradient_flow_profile` or :func:`gradient_descent_profile`; formulas in the module docstring. The risk
    includes the test label noise (as :func:`paperzoo.diagnostics.spectral_risk.ridge_risk`). The ``"wishart"``
    model needs a resolvent expansion (KRR, gradient flow). Computed in float64/complex128.

    Example:
        >>> import torch
        >>> lam = torch.ones(10, dtype=torch.float64)
        >>> v = torch.full((10,), 0.5, dtype=torch.float64)
        >>> round(profile_loss(lam, v, 0.0, 4, krr_profile(1e-9)).risk, 6)   # ridgeless: (1 - n/p) ||v||^2
        1.5
    """
    if model == "wishart" and profile.nodes is None:
        raise ValueError(f"profile {profile.name!r} has no resolvent expansion for the wishart model; use "
                         "model='naive' or empirical_spectral_risk")
    kernel = _wishart if model == "wishart" else _naive
    return kernel(eigvals, target_coeffs, float(noise_var), n, profile)


@accepts(eigvals=Tensor("p", nonnegative=True), target_coeffs=Tensor("p"), noise_var=Real(ge=0), n=Int(ge=1),
         profiles=Instance(list, what="list of SpectralProfile"), trials=Int(ge=1), generator=Generator(),
         example=lambda ctx: {"eigvals": _power_law(ctx), "target_coeffs": _target(ctx), "noise_var": 0.1, "n": 4,
                              "profiles": [krr_profile(0.1), gradient_flow_profile(3.0)]})
def empirical_spectral_risk(eigvals: torch.Tensor, target_coeffs: torch.Tensor, noise_var: float, n: int,
                            profiles: list, *, trials: int = 1,
                            generator: torch.Generator | None = None) -> EmpiricalSpectralRisk:
    """Test risk of spectral algorithms fitted on Gaussian features with a given spectrum (Monte Carlo).

    References: Generalization error of spectral algorithms, 2024 (the estimator
    :math:`k(x)^\\top K^{-1} h(K/n) y`).

    Each trial draws :math:`z \\in \\mathbb R^{n\\times p}` standard normal (then the noise
    :math:`\\varepsilon \\sim \\mathcal N(0, \\sigma^2 I_n)`, in that order from ``generator``), features
    :math:`X = z\\,\\mathrm{diag}(\\lambda)^{1/2}`, labels :math:`y = z v + \\varepsilon`, the linear kernel
    :math:`K = X X^\\top = U \\mathrm{diag}(S) U^\\top`, and for every profile
    :math:`\\hat\\beta = X^\\top U \\mathrm{diag}(h(S/n)/S) U^\\top y` (zero on the kernel's null space); it returns
    the exact population risk :math:`\\|v - \\lambda^{1/2}\\odot\\hat\\beta\\|^2 + \\sigma^2`. Arguments as in
    :func:`profile_loss`; ``profiles`` a list of :class:`SpectralProfile`.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> lam = torch.ones(10, dtype=torch.float64)
        >>> out = empirical_spectral_risk(lam, torch.zeros(10, dtype=torch.float64), 1.0, 4, [krr_profile(1e6)],
        ...                               generator=g)
        >>> round(float(out.mean[0]), 3)     # a huge ridge predicts 0: risk = ||v||^2 + sigma^2
        1.0
    """
    if len(profiles) == 0 or not all(isinstance(p, SpectralProfile) for p in profiles):
        raise TypeError("profiles must be a non-empty list of SpectralProfile")
    sigma = math.sqrt(float(noise_var))
    sqrt_lam = eigvals.sqrt()
    risks = []
    for _ in range(trials):  # one kernel eigendecomposition per trial, shared by every profile
        z = torch.randn(n, eigvals.numel(), generator=generator, dtype=eigvals.dtype, device=eigvals.device)
        x = z * sqrt_lam
        y = z @ target_coeffs + sigma * torch.randn(n, generator=generator, dtype=eigvals.dtype,
                                                     device=eigvals.device)
        S, U = torch.linalg.eigh(x @ x.T)
        cutoff = S.abs().max().clamp_min(torch.finfo(S.dtype).tiny) * n * torch.finfo(S.dtype).eps
        keep = S > cutoff
        safe = torch.where(keep, S, torch.ones_like(S))
        gains = torch.stack([torch.where(keep, p.h(safe / n) / safe, torch.zeros_like(S)) for p in profiles], -1)
        beta = (x.T @ U) @ (gains * (U.T @ y).unsqueeze(-1))                 # (p, r)
        residual = target_coeffs.unsqueeze(-1) - sqrt_lam.unsqueeze(-1) * beta
        risks.append(residual.square().sum(0) + noise_var)
    risks_t = torch.stack(risks)
    mean = risks_t.mean(0)
    stderr = risks_t.std(0) / math.sqrt(trials) if trials > 1 else torch.zeros_like(mean)
    return EmpiricalSpectralRisk(risks_t, mean, stderr)


@accepts(nu=Real(gt=1), kappa=Real(gt=0), example=lambda ctx: {"nu": 1.5, "kappa": 4.0})
def power_law_rates(nu: float, kappa: float) -> PowerLawRates:
    """Excess-risk exponents of optimally tuned KRR and optimally stopped gradient flow for power laws (noisy).

    References: Generalization error of spectral algorithms, 2024 (the power-law asymptotics and KRR saturation).

    Spectrum :math:`\\lambda_l \\propto l^{-\\nu}` (``nu`` > 1), target :math:`v_l^2 \\propto l^{-\\kappa-1}`
    (``kappa`` > 0), fixed noise :math:`\\sigma^2 > 0`: excess risk :math:`\\propto n^{-r}` with
    :math:`r_{GF} = \\kappa/(\\kappa+1)` and :math:`r_{KRR} = \\min(\\kappa,2\\nu)/(\\min(\\kappa,2\\nu)+1)`.

    Example:
        >>> r = power_law_rates(1.5, 4.0)
        >>> round(r.krr, 4), round(r.gradient_flow, 4), r.saturated
        (0.75, 0.8, True)
    """
    eff = min(float(kappa), 2 * float(nu))
    return PowerLawRates(eff / (eff + 1), float(kappa) / (float(kappa) + 1), float(kappa) > 2 * float(nu))
