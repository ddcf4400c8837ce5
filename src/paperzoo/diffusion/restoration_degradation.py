"""Restoration-degradation (RD) decomposition of the deterministic DDIM step, and exact DDIM error laws on Gaussians.

References: Restoration-Degradation Beyond Linear Diffusions: A Non-Asymptotic Analysis For DDIM-Type Samplers,
2023 (Chen, Daras, Dimakis; ICML 2023).

The paper reads one step of the probability-flow ODE as two moves: a *restoration* that climbs the log-likelihood
of the current level to a slightly earlier (less noisy) level, and a *degradation* that runs the forward process
from there back up to the next level, with the noise replaced by the one that points back at the current iterate.
In the VE convention of :mod:`paperzoo.diffusion.samplers` (state :math:`x` at level :math:`\\sigma`, denoiser
:math:`D = D(x, \\sigma)`, score :math:`\\nabla\\log p_\\sigma(x) = (D - x)/\\sigma^2`), with a restoration level
:math:`s \\in [0, \\sigma_{next}]`:

.. math::
    \\text{restoration:}\\quad r = x + (\\sigma^2 - s^2)\\,\\nabla\\log p_\\sigma(x) = D + \\frac{s^2}{\\sigma^2}(x - D)
    \\;(= E[x_s \\mid x_\\sigma = x]), \\qquad
    \\text{degradation:}\\quad x_{next} = r + \\sqrt{\\sigma_{next}^2 - s^2}\\;\\hat\\varepsilon, \\quad
    \\hat\\varepsilon = \\frac{x - D}{\\sigma}.

The composition is :math:`D + (s^2/\\sigma + \\sqrt{\\sigma_{next}^2 - s^2})\\,\\hat\\varepsilon`, which is the DDIM
(:math:`\\eta = 0`) step :math:`D + \\sigma_{next}\\hat\\varepsilon` exactly when :math:`s = 0` (restore all the way
to :math:`\\hat x_0`, DDIM's textbook form) or

.. math::
    s^2 = \\sigma\\,(2\\sigma_{next} - \\sigma), \\qquad \\text{then}\\quad \\sqrt{\\sigma_{next}^2 - s^2} = \\sigma - \\sigma_{next},

possible when :math:`\\sigma_{next} \\ge \\sigma/2`. This second root is the paper's picture: as the step
:math:`h = \\sigma - \\sigma_{next} \\to 0`, :math:`s = \\sigma_{next} - h^2/(2\\sigma) + O(h^3)` sits just below the
next level (an "infinitesimally previous time"), the restoration is one gradient-ascent step on
:math:`\\log p_\\sigma` of size :math:`\\sigma^2 - s^2 \\approx 2\\sigma h`, and the degradation adds forward noise of
standard deviation :math:`h` along :math:`\\hat\\varepsilon`. :func:`restoration_level` returns that root where it
exists and 0 otherwise (the last step to :math:`\\sigma_{next} = 0`, or coarse steps), so :func:`rd_step` equals
:func:`~paperzoo.diffusion.samplers.ancestral_step` at ``eta = 0`` (= :func:`~paperzoo.diffusion.samplers.euler_step`)
to rounding on every schedule. (The paper's analysis is in the OU/VP time parametrization and for general forward
drifts; this module keeps the VE, linear case that the substrate's samplers run.)

**Error on Gaussian data.** For data :math:`N(\\mu, \\Sigma)` the exact denoiser is affine in :math:`x`, so any
deterministic sampler over it (plus any score error that is affine in :math:`x`) is an affine map
:math:`x \\mapsto A x + b` of the starting state, and the output law from a Gaussian start is Gaussian in closed
form. :func:`affine_sampler_law` reads :math:`(A, b)` off ``d + 1`` sampler runs and pushes the start law
through it; :func:`ddim_gaussian_error` returns the resulting :math:`W_2` distance to the data law, started from the
exact marginal :math:`N(\\mu, \\Sigma + \\sigma_0^2 I)` (so only discretization and score error remain), with an
injected score error :math:`\\epsilon\\,u` of size :math:`\\epsilon` (:func:`biased_denoiser`). The paper's bound is
first order in the step size plus a term linear in the score error; on this problem DDIM's error is
:math:`\\Theta(1/n)` in the number of steps and grows linearly in :math:`\\epsilon`.

Shapes: ``x`` and ``denoised`` ``(N, ...)``; ``sigma``, ``sigma_next``, ``sigma_restored`` numbers or 0-dim
tensors; ``mean`` ``(d,)``, ``cov`` ``(d, d)``, ``direction`` ``(d,)``.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.mixture import mixture_on_circle
    >>> from paperzoo.diffusion.samplers import sample_ddim
    >>> from paperzoo.diffusion.schedules import get_sigmas_karras
    >>> gm = mixture_on_circle(4, 2, radius=3.0, std=0.3)
    >>> sigmas = get_sigmas_karras(12, 0.01, 20.0)
    >>> x = 20.0 * torch.randn(64, 2, dtype=torch.float64)
    >>> bool(torch.allclose(sample_rd(gm.denoise, x, sigmas), sample_ddim(gm.denoise, x, sigmas), atol=1e-12))
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from paperzoo.core.accepts import Function, OneOf, Real, Tensor, accepts
from paperzoo.diffusion.samplers import _COMMON, _example, run_sampler

__all__ = ["restoration_level", "restoration", "degradation", "predicted_noise", "rd_step", "sample_rd",
           "biased_denoiser", "affine_sampler_law", "ddim_gaussian_error"]

_LEVEL = OneOf(Real(ge=0), Tensor(ndims=(0,), nonnegative=True))
_STATE = Tensor(ndims=tuple(range(1, 8)))


def _f(v) -> float:
    return float(v)


def _restoration_level(sigma, sigma_next):
    s2 = sigma * (2 * sigma_next - sigma)
    return s2.clamp_min(0).sqrt() if isinstance(s2, torch.Tensor) else math.sqrt(max(s2, 0.0))


@accepts(sigma=_LEVEL, sigma_next=_LEVEL, output="any")
def restoration_level(sigma, sigma_next):
    """The level :math:`s` the restoration climbs to: :math:`\\sqrt{\\sigma(2\\sigma_{next} - \\sigma)}` where
    :math:`\\sigma_{next} \\ge \\sigma/2`, else 0; both make restoration then degradation the exact DDIM step.
    Same type as ``sigma`` (a float, or a 0-dim tensor)."""
    if _f(sigma) <= 0:
        raise ValueError(f"sigma must be > 0, got {_f(sigma)!r}")
    if _f(sigma_next) > _f(sigma):
        raise ValueError(f"sigma_next must be <= sigma ({_f(sigma)}), got {_f(sigma_next)}")
    return _restoration_level(sigma, sigma_next)


def _check_pair(x, denoised):
    if denoised.shape != x.shape:
        raise ValueError(f"denoised must have the shape of x {tuple(x.shape)}, got {tuple(denoised.shape)}")


def _restoration(x, sigma, sigma_restored, denoised):
    return denoised + (sigma_restored**2 / sigma**2) * (x - denoised)


@accepts(x=_STATE, sigma=_LEVEL, sigma_restored=_LEVEL, denoised=_STATE)
def restoration(x: torch.Tensor, sigma, sigma_restored, denoised: torch.Tensor) -> torch.Tensor:
    """Restoration: one gradient-ascent step :math:`x + (\\sigma^2 - s^2)\\nabla\\log p_\\sigma(x)` with the score
    :math:`(D - x)/\\sigma^2` from ``denoised``; it is the posterior mean of the level-:math:`s` state given
    :math:`x` (``sigma_restored`` :math:`= s \\le \\sigma`; 0 gives :math:`D`). Shape of ``x``."""
    _check_pair(x, denoised)
    if _f(sigma) <= 0:
        raise ValueError(f"sigma must be > 0, got {_f(sigma)!r}")
    if _f(sigma_restored) > _f(sigma):
        raise ValueError(f"sigma_restored must be <= sigma ({_f(sigma)}), got {_f(sigma_restored)}")
    return _restoration(x, sigma, sigma_restored, denoised)


def _predicted_noise(x, sigma, denoised):
    return (x - denoised) / sigma


@accepts(x=_STATE, sigma=_LEVEL, denoised=_STATE)
def predicted_noise(x: torch.Tensor, sigma, denoised: torch.Tensor) -> torch.Tensor:
    """:math:`\\hat\\varepsilon = (x - D)/\\sigma`, the noise that points from the denoised estimate back at the
    current iterate (what the degradation re-injects). Shape of ``x``."""
    _check_pair(x, denoised)
    if _f(sigma) <= 0:
        raise ValueError(f"sigma must be > 0, got {_f(sigma)!r}")
    return _predicted_noise(x, sigma, denoised)


def _degradation(x_restored, sigma_restored, sigma_next, noise):
    gap = sigma_next**2 - sigma_restored**2  # >= 0 up to rounding (s is a root computed in floating point)
    gap = gap.clamp_min(0) if isinstance(gap, torch.Tensor) else max(gap, 0.0)
    return x_restored + gap**0.5 * noise


@accepts(x_restored=_STATE, sigma_restored=_LEVEL, sigma_next=_LEVEL, noise=_STATE)
def degradation(x_restored: torch.Tensor, sigma_restored, sigma_next, noise: torch.Tensor) -> torch.Tensor:
    """Degradation: the VE forward process from level ``sigma_restored`` up to ``sigma_next``,
    :math:`r + \\sqrt{\\sigma_{next}^2 - s^2}\\,\\text{noise}`, run with a given ``noise`` (the predicted noise
    :func:`predicted_noise` for the RD step; a standard normal draw would be the forward process itself)."""
    if noise.shape != x_restored.shape:
        raise ValueError(f"noise must have the shape of x_restored {tuple(x_restored.shape)}, got "
                         f"{tuple(noise.shape)}")
    if _f(sigma_restored) > _f(sigma_next):
        raise ValueError(f"sigma_restored must be <= sigma_next ({_f(sigma_next)}), got {_f(sigma_restored)}")
    return _degradation(x_restored, sigma_restored, sigma_next, noise)


def rd_step(x, sigma, sigma_next, denoised, ctx):
    """One RD step (a :func:`~paperzoo.diffusion.samplers.run_sampler` step): restoration to
    :func:`restoration_level`, then degradation with :math:`\\hat\\varepsilon`; equal to DDIM's (``eta = 0``)."""
    s = _restoration_level(sigma, sigma_next)
    noise = _predicted_noise(x, sigma, denoised)
    return _degradation(_restoration(x, sigma, s, denoised), s, sigma_next, noise)


@accepts(**_COMMON, example=_example)
def sample_rd(model, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator | None = None,
              callback=None, progress: bool = False) -> torch.Tensor:
    """The restoration-degradation sampler over a decreasing ``sigmas``: :func:`rd_step` at every level, one model
    evaluation per step; the same map as :func:`~paperzoo.diffusion.samplers.sample_ddim` with ``eta = 0``."""
    if bool((sigmas[1:] > sigmas[:-1]).any()):
        raise ValueError("sigmas must be nonincreasing (the RD sampler runs from noise to data)")
    return run_sampler(model, x, sigmas, rd_step, generator=generator, callback=callback, progress=progress)


@accepts(model=Function(), direction=Tensor("d"), eps=Real(ge=0), output="any",
         example=lambda ctx: {"model": lambda x, s: x, "direction": torch.ones(2, dtype=ctx.dtype), "eps": 0.1})
def biased_denoiser(model: Callable, direction: torch.Tensor, eps: float) -> Callable:
    """``model`` with a score error of size ``eps`` along the unit vector ``direction / |direction|``.

    The error is measured in the VP/OU parametrization the paper's assumption is written in (score of
    :math:`x/\\sqrt{1+\\sigma^2}`), so the VE denoiser moves by :math:`\\epsilon\\,\\sigma^2/\\sqrt{1 + \\sigma^2}\\,u`
    (an :math:`L^2` score error of exactly ``eps`` at every level)."""
    norm = float(direction.norm())
    if norm == 0:
        raise ValueError("direction must be a nonzero vector")
    u = direction / norm

    def biased(x, sigma):
        s = sigma.to(x.dtype)[:, None] if isinstance(sigma, torch.Tensor) and sigma.dim() == 1 else sigma
        return model(x, sigma) + eps * (s**2 / (1 + s**2) ** 0.5) * u.to(x.dtype)
    return biased


@accepts(sampler=Function(), model=Function(), mean=Tensor("d"), cov=Tensor("d", "d", symmetric=True),
         sigmas=Tensor("n", nonnegative=True), output="any",
         example=lambda ctx: {**{k: v for k, v in _example(ctx).items() if k in ("model", "sigmas")},
                              "sampler": lambda m, x, s: x, "mean": torch.zeros(2, dtype=ctx.dtype),
                              "cov": torch.eye(2, dtype=ctx.dtype)})
def affine_sampler_law(sampler: Callable, model: Callable, mean: torch.Tensor, cov: torch.Tensor,
                       sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact output law ``(mean, cov)`` of a deterministic ``sampler(model, x, sigmas)`` started from
    :math:`N(\\text{mean}, \\text{cov})`, for a ``model`` affine in ``x`` (a single Gaussian's exact denoiser, with
    or without an affine score error): the sampler is then :math:`x \\mapsto A x + b`, read off ``d + 1`` runs."""
    d = mean.shape[0]
    eye = torch.eye(d, dtype=mean.dtype, device=mean.device)
    points = torch.cat([mean[None], mean[None] + eye])
    out = sampler(model, points, sigmas)
    if not isinstance(out, torch.Tensor) or out.shape != points.shape:
        raise ValueError(f"sampler must return a tensor of shape {tuple(points.shape)}, got "
                         f"{getattr(out, 'shape', type(out).__name__)}")
    A = (out[1:] - out[0]).T  # column j is A e_j
    return out[0], A @ cov @ A.T


@accepts(mean=Tensor("d"), cov=Tensor("d", "d", symmetric=True), sigmas=Tensor("n", nonnegative=True),
         eps=Real(ge=0), direction=Tensor("d", optional=True), sampler=Function(optional=True),
         example=lambda ctx: {"mean": torch.zeros(2, dtype=ctx.dtype), "cov": torch.eye(2, dtype=ctx.dtype),
                              "sigmas": torch.tensor([5.0, 1.0, 0.1, 0.0], dtype=ctx.dtype)})
def ddim_gaussian_error(mean: torch.Tensor, cov: torch.Tensor, sigmas: torch.Tensor, eps: float = 0.0,
                        direction: torch.Tensor | None = None, sampler: Callable | None = None) -> float:
    """:math:`W_2` between the output law of ``sampler`` (default :func:`sample_rd`, i.e. DDIM) and the data
    :math:`N(\\text{mean}, \\text{cov})`, exact: the start is the true marginal at ``sigmas[0]``, the denoiser the
    exact one plus a score error of size ``eps`` along ``direction`` (:func:`biased_denoiser`; default the first
    axis). ``sigmas`` must be finite, decreasing and end in 0."""
    from paperzoo.data.gaussians import gaussian_w2
    from paperzoo.diffusion.mixture import GaussianMixture

    if float(sigmas[-1]) != 0 or not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError("sigmas must be strictly decreasing and end in 0")
    gm = GaussianMixture(mean[None], cov[None])
    model = gm.denoise
    if eps > 0:
        u = direction if direction is not None else torch.eye(mean.shape[0], dtype=mean.dtype)[0]
        model = biased_denoiser(gm.denoise, u, eps)
    eye = torch.eye(mean.shape[0], dtype=mean.dtype)
    m, c = affine_sampler_law(sampler if sampler is not None else sample_rd, model, mean,
                              cov + float(sigmas[0]) ** 2 * eye, sigmas)
    return float(gaussian_w2(m, c, mean, cov).clamp_min(0).sqrt())
