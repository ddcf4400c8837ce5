"""Predictor-corrector guidance (PCG): a DDIM step on the conditional model, then Langevin steps on the tilted
("gamma-powered") distribution at the new noise level; with the exact closed forms of CFG on Gaussians.

References: Classifier-Free Guidance is a Predictor-Corrector, 2024

Classifier-free guidance with weight :math:`w` drives a sampler with the denoiser
:math:`D_w = D_u + w (D_c - D_u)`, whose score is :math:`(1 - w)\\nabla\\log p_\\sigma(x) + w\\nabla\\log p_\\sigma(x
\\mid c)`. Bradley & Nakkiran show (their Section 3) that this does *not* sample the tilted distribution
:math:`p_{0,\\gamma}(x \\mid c) \\propto p_0(x \\mid c)^\\gamma p_0(x)^{1-\\gamma}` at :math:`\\gamma = w`, and that the
deterministic (DDIM) and stochastic (DDPM) samplers with the same :math:`D_w` give different distributions. For
Gaussians everything is linear and the three laws have closed forms (:func:`tilted_gaussian`,
:func:`cfg_gaussian_output`): for one coordinate with :math:`p_0(x \\mid c) = \\mathcal N(m_c, s_c^2)`,
:math:`p_0(x) = \\mathcal N(m_u, s_u^2)`, the tilted law has precision :math:`\\gamma/s_c^2 + (1 - \\gamma)/s_u^2` (a
harmonic combination), while CFG-DDIM started from :math:`\\mathcal N(0, \\sigma_{max}^2)` ends, as
:math:`\\sigma_{max} \\to \\infty`, with standard deviation :math:`s_c^{w} s_u^{1-w}` (a geometric one).

Their main result (Section 4): in the continuous (SDE) limit one CFG-DDPM step from :math:`\\sigma` to
:math:`\\sigma'` with weight :math:`w` equals a DDIM step with the *conditional* denoiser (the predictor) followed by
one Langevin step (the corrector) on the tilted distribution at level :math:`\\sigma'`,

.. math::
    x \\leftarrow x + \\varepsilon\\,\\nabla_x \\log p_{\\sigma',\\gamma}(x \\mid c) + \\sqrt{2\\varepsilon}\\, z, \\qquad
    \\nabla_x \\log p_{\\sigma',\\gamma} = \\gamma \\nabla\\log p_{\\sigma'}(x \\mid c) + (1 - \\gamma)\\nabla\\log p_{\\sigma'}(x),

with :math:`\\varepsilon = (\\sigma^2 - \\sigma'^2)/2` and :math:`\\gamma = 2w - 1` (:func:`pcg_gamma`): the DDPM
step's drift :math:`\\Delta \\nabla\\log p_w` and noise :math:`\\sqrt{\\Delta}z`, :math:`\\Delta = \\sigma^2 - \\sigma'^2`,
split into the probability-flow half :math:`\\tfrac{\\Delta}{2}\\nabla\\log p(x \\mid c)` and a Langevin step whose
drift carries the other half. PCG in general takes any :math:`\\gamma`, ``n_corrector`` Langevin steps and a step
scale; :func:`sample_pcg` is that sampler, a step (:func:`pcg_step`) on
:func:`~paperzoo.diffusion.samplers.run_sampler`.

Symbols and arguments: the predictor :math:`D_c` is ``model``; the corrector denoiser ``corrector`` is a denoiser
whose score (Tweedie, :math:`(D(x, \\sigma) - x)/\\sigma^2`) is the tilted one, typically
``classifier_free_guidance(cond, uncond, gamma)`` (:func:`pcg_corrector`); :math:`\\varepsilon` is
``step_scale * (sigma**2 - sigma_next**2) / 2`` per Langevin step, ``n_corrector`` = :math:`K`. Shapes: ``x`` is
``(N, ...)``; denoisers are called with ``sigma`` of shape ``(N,)``. The defaults, ``n_corrector = 1`` and
``step_scale = 1``, are the paper's SDE-limit setting in which PCG with :math:`\\gamma = 2w - 1` is CFG-DDPM.

No corrector runs on the last step (to :math:`\\sigma' = 0`, where no Langevin target is left) nor on a first step
from :math:`\\sigma = \\infty` (zero terminal SNR, taken by the loop as DDIM's limit).

Example:
    >>> import torch
    >>> from paperzoo.diffusion.mixture import mixture_on_circle
    >>> from paperzoo.diffusion.guidance import class_conditional
    >>> from paperzoo.diffusion.schedules import get_sigmas_karras
    >>> gm = mixture_on_circle(2, 1, radius=1.0, std=0.5)          # p(x); class 1 is N(1, 0.25)
    >>> _, c1 = class_conditional(gm, [0, 1])
    >>> sigmas = get_sigmas_karras(64, 0.01, 20.0)
    >>> x = sigmas[0] * torch.randn(2000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> out = sample_pcg(c1.denoise, x, sigmas, corrector=pcg_corrector(c1.denoise, gm.denoise, 2.0),
    ...                  generator=torch.Generator().manual_seed(1))
    >>> bool(out.mean() > 1.0)          # guided (w = 2, gamma = 3): pushed beyond the class mean
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from paperzoo.core.accepts import Choice, Function, Instance, Int, Real, Tensor, accepts
from paperzoo.diffusion.guidance import classifier_free_guidance
from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle
from paperzoo.diffusion.samplers import _COMMON, _evaluate, _example, _to_derivative, run_sampler

__all__ = ["pcg_gamma", "pcg_corrector", "pcg_step", "sample_pcg", "tilted_gaussian", "cfg_gaussian_output",
           "tilted_log_density"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@accepts(scale=Real())
def pcg_gamma(scale: float) -> float:
    """The tilt :math:`\\gamma = 2w - 1` of the Langevin corrector that makes PCG (one corrector step,
    ``step_scale = 1``) equal to CFG-DDPM with weight :math:`w` in the SDE limit (the paper's main theorem)."""
    return 2.0 * float(scale) - 1.0


@accepts(cond=Function(), uncond=Function(), scale=Real(), output="any",  # returns a denoiser
         example=lambda ctx: {"cond": lambda x, s: x, "uncond": lambda x, s: 0 * x, "scale": 2.0})
def pcg_corrector(cond: Denoiser, uncond: Denoiser, scale: float) -> Denoiser:
    """The corrector denoiser for CFG weight :math:`w` = ``scale``: ``classifier_free_guidance(cond, uncond,
    2 w - 1)``, whose score is that of :math:`p_\\sigma(x \\mid c)^\\gamma p_\\sigma(x)^{1-\\gamma}`,
    :math:`\\gamma = 2w - 1` (:func:`pcg_gamma`)."""
    return classifier_free_guidance(cond, uncond, pcg_gamma(scale))


def _langevin(x, sigma, sigma_next, corrector, ctx, n_corrector, step_scale):
    """``n_corrector`` Langevin steps on the corrector's score at ``sigma_next``, step
    :math:`\\varepsilon = s (\\sigma^2 - \\sigma'^2)/2`."""
    eps = step_scale * (sigma.square() - sigma_next.square()) / 2
    if n_corrector == 0 or float(sigma_next) == 0 or float(eps) == 0:
        return x
    noise_std = (2 * eps).sqrt()
    for _ in range(n_corrector):
        score = (_evaluate(corrector, x, sigma_next) - x) / sigma_next.square()
        x = x + eps * score + noise_std * ctx.noise(x)
    return x


@accepts(corrector=Function(), n_corrector=Int(ge=0), step_scale=Real(ge=0), output="any",  # returns a step
         example=lambda ctx: {"corrector": lambda x, s: 0 * x})
def pcg_step(corrector: Denoiser, *, n_corrector: int = 1, step_scale: float = 1.0):
    """The PCG step for :func:`~paperzoo.diffusion.samplers.run_sampler`: the DDIM (VE Euler) step
    :math:`x + (\\sigma' - \\sigma)(x - D)/\\sigma` with the loop's evaluation :math:`D` of the predictor, then
    ``n_corrector`` Langevin steps :math:`x + \\varepsilon s_\\gamma(x, \\sigma') + \\sqrt{2\\varepsilon} z`,
    :math:`s_\\gamma = (D_\\gamma(x, \\sigma') - x)/\\sigma'^2` from ``corrector``, :math:`\\varepsilon =`
    ``step_scale`` :math:`(\\sigma^2 - \\sigma'^2)/2` (none when :math:`\\sigma' = 0`)."""
    def step(x, sigma, sigma_next, denoised, ctx):
        x = x + _to_derivative(x, sigma, denoised) * (sigma_next - sigma)
        return _langevin(x, sigma, sigma_next, corrector, ctx, n_corrector, step_scale)
    step.eta = 0.0  # the predictor is deterministic (its first step from sigma = inf is DDIM's limit)
    return step


def _pcg_example(ctx) -> dict:
    out = _example(ctx)
    gm = mixture_on_circle(3, 2, radius=2.0, std=0.3, dtype=ctx.dtype)
    return {**out, "corrector": gm.denoise}


@accepts(**_COMMON, corrector=Function(), n_corrector=Int(ge=0), step_scale=Real(ge=0), example=_pcg_example)
def sample_pcg(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, corrector: Denoiser,
               generator: torch.Generator | None = None, callback=None, progress: bool = False,
               n_corrector: int = 1, step_scale: float = 1.0) -> torch.Tensor:
    """Predictor-corrector guidance (the paper's PCG with a DDIM predictor): per step, a DDIM step with ``model``
    (the conditional denoiser :math:`D_c`), then ``n_corrector`` Langevin steps on the score of ``corrector`` at the
    new level (:func:`pcg_step`). ``n_corrector = 0`` is exactly :func:`~paperzoo.diffusion.samplers.sample_ddim`
    with ``eta = 0``. With ``corrector = pcg_corrector(cond, uncond, w)`` and the defaults it is, in the limit of
    many steps, CFG-DDPM with weight :math:`w`. Model evaluations: ``n`` of ``model`` plus
    ``n_corrector * (n - 1)`` of ``corrector`` for ``n`` steps ending at 0."""
    return run_sampler(model, x, sigmas, pcg_step(corrector, n_corrector=int(n_corrector),
                                                  step_scale=float(step_scale)),
                       generator=generator, callback=callback, progress=progress)


# -- closed forms --------------------------------------------------------------------------------------------------
def _gauss_example(ctx) -> dict:
    eye = torch.eye(2, dtype=ctx.dtype)
    return {"mean_c": torch.tensor([1.0, 0.0], dtype=ctx.dtype), "cov_c": 0.25 * eye,
            "mean_u": torch.zeros(2, dtype=ctx.dtype), "cov_u": eye, "gamma": 3.0}


@accepts(mean_c=Tensor("d"), cov_c=Tensor("d", "d", symmetric=True), mean_u=Tensor("d"),
         cov_u=Tensor("d", "d", symmetric=True), gamma=Real(), output="any", example=_gauss_example)
def tilted_gaussian(mean_c: torch.Tensor, cov_c: torch.Tensor, mean_u: torch.Tensor, cov_u: torch.Tensor,
                    gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(d,)`` and covariance ``(d, d)`` of :math:`\\mathcal N(m_c, \\Sigma_c)^\\gamma \\mathcal N(m_u,
    \\Sigma_u)^{1-\\gamma}` (normalised): precision :math:`\\Lambda = \\gamma\\Sigma_c^{-1} + (1-\\gamma)\\Sigma_u^{-1}`,
    mean :math:`\\Lambda^{-1}(\\gamma\\Sigma_c^{-1} m_c + (1 - \\gamma)\\Sigma_u^{-1} m_u)`. Raises when
    :math:`\\Lambda` is not positive definite (the tilted law does not exist)."""
    prec_c, prec_u = _spd_inverse("cov_c", cov_c), _spd_inverse("cov_u", cov_u)
    prec = gamma * prec_c + (1 - gamma) * prec_u
    prec = 0.5 * (prec + prec.T)
    if float(torch.linalg.eigvalsh(prec).min()) <= 0:
        raise ValueError(f"gamma must make gamma inv(cov_c) + (1 - gamma) inv(cov_u) positive definite (a "
                         f"normalisable tilted law), got {gamma!r}")
    cov = torch.linalg.inv(prec)
    mean = cov @ (gamma * prec_c @ mean_c + (1 - gamma) * prec_u @ mean_u)
    return mean, 0.5 * (cov + cov.T)


def _spd_inverse(name: str, cov: torch.Tensor) -> torch.Tensor:
    if float(torch.linalg.eigvalsh(0.5 * (cov + cov.T)).min()) <= 0:
        raise ValueError(f"{name} must be positive definite")
    return torch.linalg.inv(cov)


def _diag_example(ctx) -> dict:
    return {"mean_c": torch.tensor([1.0], dtype=ctx.dtype), "var_c": torch.tensor([0.25], dtype=ctx.dtype),
            "mean_u": torch.tensor([0.0], dtype=ctx.dtype), "var_u": torch.tensor([1.0], dtype=ctx.dtype),
            "scale": 3.0, "sigma_max": 20.0}


@accepts(mean_c=Tensor("d"), var_c=Tensor("d", nonnegative=True), mean_u=Tensor("d"),
         var_u=Tensor("d", nonnegative=True), scale=Real(), sampler=Choice("ddim", "ddpm"), sigma_max=Real(gt=0),
         start_mean=Real(), start_var=Real(ge=0, optional=True), output="any", example=_diag_example)
def cfg_gaussian_output(mean_c: torch.Tensor, var_c: torch.Tensor, mean_u: torch.Tensor, var_u: torch.Tensor,
                        scale: float, *, sampler: str = "ddim", sigma_max: float = 80.0, start_mean: float = 0.0,
                        start_var: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact law (mean, variance, each ``(d,)``) at :math:`\\sigma = 0` of CFG with weight :math:`w` =
    ``scale`` run in continuous time from :math:`\\mathcal N(` ``start_mean``, ``start_var`` :math:`)` at
    ``sigma_max`` (default variance :math:`\\sigma_{max}^2`, the sampler's pure-noise start), for independent
    Gaussian coordinates :math:`p_0(x \\mid c) = \\mathcal N(m_c, s_c^2)`, :math:`p_0(x) = \\mathcal N(m_u, s_u^2)`.

    With :math:`u = \\sigma^2`, the guided denoiser is affine, :math:`D_w = a(u) x + b(u)`, and
    :math:`1 - a = u\\,[w/(s_c^2 + u) + (1 - w)/(s_u^2 + u)]`. ``"ddim"`` (the probability-flow ODE
    :math:`dx/du = (x - D_w)/(2u)`) maps the start affinely: with :math:`\\Phi(u) = (s_c^2 + u)^{w/2}
    (s_u^2 + u)^{(1-w)/2}` the standard deviation scales by :math:`\\Phi(0)/\\Phi(U)`. ``"ddpm"`` (the reverse SDE
    :math:`dx = -(D_w - x)/u\\,du + dW`, the limit of ancestral sampling) gives the linear variance equation
    :math:`dv/du = 2(1 - a)v/u - 1`, solved with the integrating factor
    :math:`\\Phi^4`. Means solve :math:`dm/du = k[(1 - a)m - b]/(2u)`, :math:`k = 1` (DDIM) or 2 (DDPM), with the
    factor :math:`\\Phi^k`. The remaining one-dimensional integrals are evaluated by adaptive quadrature
    (``scipy.integrate.quad``), in float64. At :math:`w = 1` both return the conditional law (as
    ``sigma_max`` grows); the tilted law is :func:`tilted_gaussian`'s, which neither equals for :math:`w \\ne 1`.
    """
    if bool((var_c <= 0).any()) or bool((var_u <= 0).any()):
        raise ValueError("var_c and var_u must be > 0")
    U = float(sigma_max) ** 2
    v0 = U if start_var is None else float(start_var)
    k = 1 if sampler == "ddim" else 2
    w = float(scale)
    means, variances = [], []
    for mc, sc, mu, su in zip(mean_c.tolist(), var_c.tolist(), mean_u.tolist(), var_u.tolist()):
        def log_phi(u, sc=sc, su=su):
            return 0.5 * (w * math.log(sc + u) + (1 - w) * math.log(su + u))

        def drift_b(u, mc=mc, sc=sc, mu=mu, su=su):  # the mean ODE's source term: dm/du = kA m - kB
            return 0.5 * k * (w * mc / (sc + u) + (1 - w) * mu / (su + u))

        lp0, lpU = log_phi(0.0), log_phi(U)
        integral = _integrate(lambda u: drift_b(u) * math.exp(k * (lp0 - log_phi(u))), U, min(sc, su))
        means.append(math.exp(k * (lp0 - lpU)) * start_mean + integral)
        if sampler == "ddim":
            variances.append(math.exp(2 * (lp0 - lpU)) * v0)
        else:
            integral = _integrate(lambda u: math.exp(4 * (lp0 - log_phi(u))), U, min(sc, su))
            variances.append(math.exp(4 * (lp0 - lpU)) * v0 + integral)
    kw = dict(dtype=mean_c.dtype, device=mean_c.device)
    return torch.tensor(means, **kw), torch.tensor(variances, **kw)


def _integrate(f, U: float, scale: float) -> float:
    """:math:`\\int_0^U f(u)\\,du` for integrands that vary on the scale of the data variances near 0 and decay
    slowly up to :math:`U \\gg` ``scale``: quadrature on :math:`[0, scale]`, then in :math:`t = \\log u`."""
    from scipy.integrate import quad

    head = min(U, scale)
    total = quad(f, 0.0, head, limit=200, epsabs=0.0, epsrel=1e-12)[0]
    if U > head:
        total += quad(lambda t: f(math.exp(t)) * math.exp(t), math.log(head), math.log(U), limit=400, epsabs=0.0,
                      epsrel=1e-12)[0]
    return total


def _density_example(ctx) -> dict:
    gm = mixture_on_circle(2, 1, radius=1.0, std=0.5, dtype=ctx.dtype)
    cond = GaussianMixture(gm.means[1:], gm.covs[1:])
    return {"cond": cond, "uncond": gm, "gamma": 3.0,
            "x": torch.randn(5, 1, generator=ctx.generator, dtype=ctx.dtype)}


@accepts(cond=Instance(GaussianMixture), uncond=Instance(GaussianMixture), gamma=Real(),
         x=Tensor(..., "d", degenerate=("coincident",)), sigma=Real(ge=0), example=_density_example)
def tilted_log_density(cond: GaussianMixture, uncond: GaussianMixture, gamma: float, x: torch.Tensor,
                       sigma: float = 0.0) -> torch.Tensor:
    """The unnormalised :math:`\\gamma \\log p_\\sigma(x \\mid c) + (1 - \\gamma)\\log p_\\sigma(x)` of two exact
    mixtures, shape ``x.shape[:-1]`` (normalise on a grid in low dimension; a closed form only for single
    Gaussians, :func:`tilted_gaussian`)."""
    if cond.dim != uncond.dim:
        raise ValueError(f"cond must have the dimension of uncond ({uncond.dim}), got {cond.dim}")
    return gamma * cond.log_prob(x, sigma) + (1 - gamma) * uncond.log_prob(x, sigma)
