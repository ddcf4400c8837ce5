"""NoiseDiffusion: image interpolation with diffusion models by correcting the inverted noise, plus lerp and slerp.

References: NoiseDiffusion: Correcting Noise for Image Interpolation with Diffusion Models beyond Spherical Linear
Interpolation, 2024 (Zheng, Zhang, Fang, Liu, Lian, Han; ICLR 2024).

**Interpolation by inversion.** Two images :math:`x^{(0)}, x^{(1)}` are DDIM-inverted
(:func:`~paperzoo.diffusion.ddim_inversion.invert_ddim`) up to a level :math:`\\sigma` (the paper stops partway,
the official scripts at step 140 of 200), giving latents :math:`z^{(0)}, z^{(1)}`; they are mixed with a weight
:math:`w \\in [0, 1]` and the mixture is sampled back down with DDIM
(:func:`~paperzoo.diffusion.samplers.sample_ddim`). Mixing rules:

- :func:`lerp`: :math:`(1 - w) z^{(0)} + w z^{(1)}`. Two independent noises mixed this way have variance
  :math:`(1 - w)^2 + w^2 < 1`: the midpoint's noise norm is about :math:`1/\\sqrt2` of a real latent's;
- :func:`slerp`: per sample (row), with :math:`\\cos\\theta = \\langle z^{(0)}, z^{(1)}\\rangle /
  (\\|z^{(0)}\\|\\|z^{(1)}\\|)`, :math:`\\frac{\\sin((1 - w)\\theta)}{\\sin\\theta} z^{(0)} +
  \\frac{\\sin(w\\theta)}{\\sin\\theta} z^{(1)}`, which keeps the norm of two equal-norm latents;
- :func:`noisediffusion_latent` (the paper's correction, in the VP form of its official code): with
  :math:`\\bar\\alpha = 1/(1 + \\sigma^2)`, VP latents :math:`l^{(i)} = \\sqrt{\\bar\\alpha}\\, z^{(i)}`,

  .. math::
      l = \\operatorname{clip}_c\\Bigl(\\alpha \\operatorname{clip}_c(l^{(0)}) + \\beta \\operatorname{clip}_c(l^{(1)})
      + (\\mu - \\alpha)\\sqrt{\\bar\\alpha}\\, x^{(0)} + (\\nu - \\beta)\\sqrt{\\bar\\alpha}\\, x^{(1)}
      + \\gamma \\sqrt{1 - \\bar\\alpha}\\, \\varepsilon\\Bigr),

  :math:`\\varepsilon \\sim \\mathcal N(0, I)` (fresh Gaussian noise, ``gamma``), :math:`\\operatorname{clip}_c`
  the entrywise clamp to :math:`[-c, c]` that suppresses extreme noise values (``clip``), and the coefficients
  (:func:`noisediffusion_coefficients`) :math:`\\alpha = \\sqrt{1 - \\gamma^2}\\cos(w\\pi/2)`,
  :math:`\\beta = \\sqrt{1 - \\gamma^2}\\sin(w\\pi/2)` (so :math:`\\alpha^2 + \\beta^2 + \\gamma^2 = 1`),
  :math:`\\mu = m\\,\\alpha/(\\alpha + \\beta)`, :math:`\\nu = m\\,\\beta/(\\alpha + \\beta)` (``mu_scale``
  :math:`= m`). The :math:`(\\mu - \\alpha), (\\nu - \\beta)` terms inject the raw images into the noisy ones
  (the signal lost to the constraint and to the extra noise). In paperzoo's VE units
  (:math:`z = l/\\sqrt{\\bar\\alpha}`)
  the clamp bound is :math:`c\\sqrt{1 + \\sigma^2}` and the noise term :math:`\\gamma\\sigma\\varepsilon`.
  Defaults are the official code's: ``gamma = 0``, ``mu_scale = 1.2``, ``clip = 2``.

:func:`interpolate_images` runs the whole pipeline for one weight.

Shapes: latents and images ``(N, ...)``, row ``i`` of each argument one pair; ``sigma`` a number.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.mixture import mixture_on_circle
    >>> from paperzoo.diffusion.schedules import get_sigmas_karras
    >>> gm = mixture_on_circle(2, 8, radius=3.0, std=0.3)
    >>> g = torch.Generator().manual_seed(0)
    >>> x0, x1 = gm.sample(4, generator=g), gm.sample(4, generator=g)
    >>> sigmas = get_sigmas_karras(20, 0.01, 3.0).flip(0)[1:]          # increasing, 0.01 .. 3
    >>> mid = interpolate_images(gm.denoise, x0, x1, sigmas, 0.5, method="slerp")
    >>> tuple(mid.shape), bool(torch.isfinite(gm.log_prob(mid)).all())
    ((4, 8), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from paperzoo.core.accepts import Choice, Function, Generator, Real, Tensor, accepts
from paperzoo.diffusion.ddim_inversion import _check_increasing, _invert
from paperzoo.diffusion.samplers import ancestral_step, run_sampler

__all__ = ["lerp", "slerp", "noisediffusion_coefficients", "noisediffusion_latent", "interpolate_images"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_LATENT = Tensor(ndims=tuple(range(1, 8)), degenerate=("zeros",))


def _pair_example(ctx) -> dict:
    return {"z0": torch.randn(4, 3, generator=ctx.generator, dtype=ctx.dtype),
            "z1": torch.randn(4, 3, generator=ctx.generator, dtype=ctx.dtype), "weight": 0.3}


def _check_pair(a: str, x: torch.Tensor, b: str, y: torch.Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(f"{b} must have the shape of {a} {tuple(x.shape)}, got {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{a} must have a nonempty batch dimension first, got shape {tuple(x.shape)}")


def _lerp(z0, z1, weight):
    return (1 - weight) * z0 + weight * z1


def _slerp(z0, z1, weight, eps):
    a, b = z0.reshape(z0.shape[0], -1), z1.reshape(z1.shape[0], -1)
    norms = a.norm(dim=1) * b.norm(dim=1)
    cos = ((a * b).sum(1) / norms.clamp_min(torch.finfo(z0.dtype).tiny)).clamp(-1 + eps, 1 - eps)
    theta = torch.arccos(cos)
    s0 = torch.sin((1 - weight) * theta) / torch.sin(theta)
    s1 = torch.sin(weight * theta) / torch.sin(theta)
    # A zero latent has no direction: fall back to the linear mix there.
    degenerate = norms == 0
    s0 = torch.where(degenerate, torch.full_like(s0, 1 - weight), s0)
    s1 = torch.where(degenerate, torch.full_like(s1, weight), s1)
    view = (-1,) + (1,) * (z0.dim() - 1)
    return s0.view(view) * z0 + s1.view(view) * z1


@accepts(z0=_LATENT, z1=_LATENT, weight=Real(ge=0, le=1), example=_pair_example)
def lerp(z0: torch.Tensor, z1: torch.Tensor, weight: float) -> torch.Tensor:
    """Linear interpolation :math:`(1 - w) z_0 + w z_1` of two latents ``(N, ...)``; shape of ``z0``."""
    _check_pair("z0", z0, "z1", z1)
    return _lerp(z0, z1, float(weight))


@accepts(z0=_LATENT, z1=_LATENT, weight=Real(ge=0, le=1), eps=Real(gt=0, lt=1), example=_pair_example)
def slerp(z0: torch.Tensor, z1: torch.Tensor, weight: float, *, eps: float = 1e-7) -> torch.Tensor:
    """Spherical linear interpolation of two latents ``(N, ...)``, row by row (module docstring).

    :math:`\\cos\\theta` is clamped to :math:`[-1 + \\epsilon, 1 - \\epsilon]` (``eps``) so that (anti)parallel
    rows stay finite; a row where either latent is zero gets the linear mix. Weight 0 returns ``z0`` and weight 1
    ``z1`` (to rounding); for rows of equal norm every weight keeps that norm. Shape of ``z0``.
    """
    _check_pair("z0", z0, "z1", z1)
    return _slerp(z0, z1, float(weight), float(eps))


def _coefficients(weight, gamma, mu_scale):
    keep = math.sqrt(1 - gamma**2)
    alpha, beta = keep * math.cos(weight * math.pi / 2), keep * math.sin(weight * math.pi / 2)
    mu, nu = mu_scale * alpha / (alpha + beta), mu_scale * beta / (alpha + beta)
    return alpha, beta, mu, nu


@accepts(weight=Real(ge=0, le=1), gamma=Real(ge=0, lt=1), mu_scale=Real(ge=0), output="any",
         example=lambda ctx: {"weight": 0.5})
def noisediffusion_coefficients(weight: float, *, gamma: float = 0.0, mu_scale: float = 1.2
                                ) -> tuple[float, float, float, float]:
    """NoiseDiffusion's :math:`(\\alpha, \\beta, \\mu, \\nu)` for weight :math:`w` (module docstring):
    :math:`\\alpha^2 + \\beta^2 = 1 - \\gamma^2`, :math:`\\mu + \\nu = m` (``mu_scale``)."""
    return _coefficients(float(weight), float(gamma), float(mu_scale))


def _noisediffusion(z0, z1, x0, x1, sigma, weight, gamma, mu_scale, clip, generator):
    alpha, beta, mu, nu = _coefficients(weight, gamma, mu_scale)
    bound = None if clip is None else clip * math.sqrt(1 + sigma**2)  # the VP clamp c in VE units

    def clamp(t):
        return t if bound is None else t.clamp(-bound, bound)

    z = alpha * clamp(z0) + beta * clamp(z1) + (mu - alpha) * x0 + (nu - beta) * x1
    if gamma > 0:
        z = z + gamma * sigma * torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
    return clamp(z)


def _nd_example(ctx) -> dict:
    r = lambda: torch.randn(4, 3, generator=ctx.generator, dtype=ctx.dtype)  # noqa: E731
    return {"z0": 3 * r(), "z1": 3 * r(), "x0": r(), "x1": r(), "sigma": 3.0, "weight": 0.5}


@accepts(z0=_LATENT, z1=_LATENT, x0=_LATENT, x1=_LATENT, sigma=Real(ge=0), weight=Real(ge=0, le=1),
         gamma=Real(ge=0, lt=1), mu_scale=Real(ge=0), clip=Real(gt=0, optional=True), generator=Generator(),
         example=_nd_example)
def noisediffusion_latent(z0: torch.Tensor, z1: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor, sigma: float,
                          weight: float, *, gamma: float = 0.0, mu_scale: float = 1.2, clip: float | None = 2.0,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """NoiseDiffusion's corrected interpolated latent (module docstring), in VE units.

    Args:
        z0, z1: the VE latents of the two images at level ``sigma`` ``(N, ...)`` (DDIM inversions).
        x0, x1: the images themselves ``(N, ...)`` (the raw signal injected back).
        sigma: the latents' VE level (:math:`\\bar\\alpha = 1/(1 + \\sigma^2)`).
        weight: :math:`w`, 0 for ``x0``'s side and 1 for ``x1``'s.
        gamma: :math:`\\gamma`, the share of fresh Gaussian noise (drawn from ``generator``), in ``[0, 1)``.
        mu_scale: :math:`m = \\mu + \\nu`, the total weight of the images (1.2 in the official code).
        clip: :math:`c`, the VP clamp bound (``None`` disables it).

    Returns:
        The VE latent at ``sigma``, shape of ``z0``. With ``gamma = 0``, ``mu_scale = 1`` and ``clip = None`` it is
        the variance-preserving mix :math:`\\cos(w\\pi/2) z_0 + \\sin(w\\pi/2) z_1` plus
        :math:`(\\mu - \\alpha) x_0 + (\\nu - \\beta) x_1`; at ``weight = 0`` it is then ``z0``.
    """
    _check_pair("z0", z0, "z1", z1)
    _check_pair("z0", z0, "x0", x0)
    _check_pair("z0", z0, "x1", x1)
    return _noisediffusion(z0, z1, x0, x1, float(sigma), float(weight), float(gamma), float(mu_scale),
                           None if clip is None else float(clip), generator)


def _interp_example(ctx) -> dict:
    from paperzoo.diffusion.mixture import mixture_on_circle
    from paperzoo.diffusion.schedules import get_sigmas_karras

    gm = mixture_on_circle(3, 2, radius=2.0, std=0.3, dtype=ctx.dtype)
    return {"model": gm.denoise, "x0": gm.sample(4, generator=ctx.generator),
            "x1": gm.sample(4, generator=ctx.generator),
            "sigmas": get_sigmas_karras(6, 0.02, 5.0, dtype=ctx.dtype)[:-1].flip(0), "weight": 0.5}


@accepts(model=Function(), x0=_LATENT, x1=_LATENT, sigmas=Tensor("n", nonnegative=True), weight=Real(ge=0, le=1),
         method=Choice("noisediffusion", "slerp", "lerp"), gamma=Real(ge=0, lt=1), mu_scale=Real(ge=0),
         clip=Real(gt=0, optional=True), eta=Real(ge=0, le=1), generator=Generator(), example=_interp_example)
def interpolate_images(model: Denoiser, x0: torch.Tensor, x1: torch.Tensor, sigmas: torch.Tensor, weight: float, *,
                       method: str = "noisediffusion", gamma: float = 0.0, mu_scale: float = 1.2,
                       clip: float | None = 2.0, eta: float = 0.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Interpolate images by inversion: DDIM-invert ``x0`` and ``x1`` along ``sigmas``, mix the latents at
    ``sigmas[-1]`` with ``method``, and sample the mix back down with DDIM (``eta``) along the reversed levels and a
    last step to 0.

    Args:
        model: the denoiser ``model(x, sigma)``.
        x0, x1: the image pairs ``(N, ...)``.
        sigmas: the increasing inversion levels ``(n + 1,)``, all > 0
            (:func:`~paperzoo.diffusion.ddim_inversion.ddim_inversion_sigmas`, truncated at the interpolation level).
        weight: :math:`w \\in [0, 1]`.
        method: ``"noisediffusion"`` (:func:`noisediffusion_latent` with ``gamma``, ``mu_scale``, ``clip``),
            ``"slerp"`` or ``"lerp"``.
        eta: the decoding DDIM's :math:`\\eta` (0: deterministic, the official setting).
        generator: for ``gamma > 0`` and ``eta > 0``.

    Returns:
        The interpolated images, shape of ``x0``. ``2 n + n + 1`` model evaluations (two inversions, the decode).
    """
    _check_pair("x0", x0, "x1", x1)
    _check_increasing(sigmas)
    z0 = _invert(model, x0, sigmas, 0, None, None, False)
    z1 = _invert(model, x1, sigmas, 0, None, None, False)
    sigma = float(sigmas[-1])
    w = float(weight)
    if method == "lerp":
        z = _lerp(z0, z1, w)
    elif method == "slerp":
        z = _slerp(z0, z1, w, 1e-7)
    else:
        c = None if clip is None else float(clip)
        z = _noisediffusion(z0, z1, x0, x1, sigma, w, float(gamma), float(mu_scale), c, generator)
    down = torch.cat([sigmas.flip(0), sigmas.new_zeros(1)]).to(x0.dtype)
    return run_sampler(model, z, down, ancestral_step(float(eta)), generator=generator)
