"""Noise schedules as plain tensors, in k-diffusion's convention: decreasing noise levels ``sigmas`` with a final 0.

Continuous-level schedules give ``sigmas`` directly (:func:`get_sigmas_karras`, :func:`get_sigmas_exponential`).
Discrete DDPM-style schedules give ``betas`` over ``T`` training steps (:func:`betas_linear`,
:func:`betas_scaled_linear`, :func:`betas_cosine`), turned into cumulative products
:math:`\\bar\\alpha_t = \\prod_{s \\le t} (1 - \\beta_s)` and into VE levels
:math:`\\sigma_t = \\sqrt{(1 - \\bar\\alpha_t) / \\bar\\alpha_t}` (:func:`sigmas_from_alphas_cumprod`), from which
:func:`discrete_timesteps` picks the sampling steps with the spacings diffusers offers.

Every function returns float64 unless ``dtype`` says otherwise: schedules are small, and their rounding shows
up in every sampler step.
"""

from __future__ import annotations

import math

import torch

from paperzoo.core.accepts import Choice, Int, Real, Tensor, accepts

__all__ = [
    "get_sigmas_karras", "get_sigmas_exponential", "append_zero", "betas_linear", "betas_scaled_linear",
    "rescale_zero_terminal_snr",
    "betas_cosine", "alphas_cumprod_from_betas", "betas_from_alphas_cumprod", "sigmas_from_alphas_cumprod",
    "discrete_timesteps", "snr_from_sigmas",
]

_DTYPE = torch.float64


@accepts(sigmas=Tensor("n", finite=False, allow_empty=True, nonnegative=True))
def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    """``sigmas`` with a final 0 appended (the sampler's last step lands on the data)."""
    return torch.cat([sigmas, sigmas.new_zeros(1)])


@accepts(n=Int(ge=1), sigma_min=Real(gt=0), sigma_max=Real(gt=0), rho=Real(gt=0))
def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, *,
                      dtype: torch.dtype = _DTYPE) -> torch.Tensor:
    """Karras et al. (2022) levels :math:`\\sigma_i = (\\sigma_{max}^{1/\\rho} + \\tfrac{i}{n-1}
    (\\sigma_{min}^{1/\\rho} - \\sigma_{max}^{1/\\rho}))^\\rho`, ``i = 0..n-1``, then 0: shape ``(n + 1,)``."""
    _check_range(sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return append_zero((hi + ramp * (lo - hi)) ** rho).to(dtype)


@accepts(n=Int(ge=1), sigma_min=Real(gt=0), sigma_max=Real(gt=0))
def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float, *, dtype: torch.dtype = _DTYPE
                           ) -> torch.Tensor:
    """Levels evenly spaced in :math:`\\log\\sigma` from ``sigma_max`` to ``sigma_min``, then 0: ``(n + 1,)``."""
    _check_range(sigma_min, sigma_max)
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64).exp()
                       ).to(dtype)


def _check_range(sigma_min, sigma_max):
    if sigma_min > sigma_max:
        raise ValueError(f"sigma_min must be <= sigma_max ({sigma_max}), got {sigma_min}")


@accepts(T=Int(ge=1), beta_start=Real(gt=0, lt=1), beta_end=Real(gt=0, lt=1))
def betas_linear(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, *,
                 dtype: torch.dtype = _DTYPE) -> torch.Tensor:
    """DDPM's linear schedule :math:`\\beta_t`, ``T`` values from ``beta_start`` to ``beta_end``: ``(T,)``."""
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64).to(dtype)


@accepts(T=Int(ge=1), beta_start=Real(gt=0, lt=1), beta_end=Real(gt=0, lt=1))
def betas_scaled_linear(T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012, *,
                        dtype: torch.dtype = _DTYPE) -> torch.Tensor:
    """Stable Diffusion's schedule: :math:`\\sqrt{\\beta_t}` linear from :math:`\\sqrt{\\beta_{start}}` to
    :math:`\\sqrt{\\beta_{end}}` (diffusers' ``"scaled_linear"``): ``(T,)``."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64).square().to(dtype)


@accepts(T=Int(ge=1), s=Real(ge=0), max_beta=Real(gt=0, le=1))
def betas_cosine(T: int = 1000, s: float = 0.008, max_beta: float = 0.999, *,
                 dtype: torch.dtype = _DTYPE) -> torch.Tensor:
    """The cosine schedule of Nichol & Dhariwal (2021): :math:`\\bar\\alpha(t) = f(t)/f(0)`,
    :math:`f(t) = \\cos^2\\bigl(\\frac{t/T + s}{1 + s} \\frac{\\pi}{2}\\bigr)`, and
    :math:`\\beta_t = \\min(1 - \\bar\\alpha(t)/\\bar\\alpha(t-1), \\beta_{max})` (diffusers' ``"squaredcos_cap_v2"``)."""
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2).square()
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta).to(dtype)


@accepts(betas=Tensor("T", positive_mass=True), example=lambda ctx: {"betas": betas_linear(10, dtype=ctx.dtype)})
def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Betas rescaled to zero terminal SNR (Lin et al., 2024, Algorithm 1): with
    :math:`s_t = \\sqrt{\\bar\\alpha_t}`, the new :math:`s'_t = (s_t - s_T)\\, s_1/(s_1 - s_T)` keeps the first
    step's signal and sets the last one's to 0, so :math:`\\bar\\alpha_T = 0` (VE level :math:`\\infty`) and every
    level in between is an affine image of the old; returns the betas of :math:`\\bar\\alpha' = s'^2`, shape
    ``(T,)``, the last equal to 1 (diffusers' ``rescale_betas_zero_snr``). Sample from such a schedule with a
    first level :math:`\\sigma = \\infty` (:func:`~paperzoo.diffusion.samplers.run_sampler`)."""
    if betas.shape[0] < 2:
        raise ValueError(f"betas must hold at least 2 steps, got {betas.shape[0]}")
    if bool((betas > 1).any()) or bool((betas < 0).any()):
        raise ValueError("betas must lie in [0, 1]")
    root = torch.cumprod(1 - betas, dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    if float(first - last) <= 0:
        raise ValueError("betas must make the signal decay (sqrt(alphas_cumprod) equal at the first and last step)")
    root = (root - last) * first / (first - last)
    abar = root.square()
    if bool((abar[:-1] <= 0).any()):
        raise ValueError("betas must be > 0 at the last step (the signal must still decay there)")
    return 1 - torch.cat([abar[:1], abar[1:] / abar[:-1]])


@accepts(betas=Tensor("T", positive_mass=True))
def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """:math:`\\bar\\alpha_t = \\prod_{s \\le t}(1 - \\beta_s)`, shape ``(T,)`` (a final 0 allowed: zero SNR)."""
    if bool((betas > 1).any()):
        raise ValueError(f"betas must be <= 1, got a maximum of {float(betas.max())!r}")
    return torch.cumprod(1 - betas, dim=0)


@accepts(alphas_cumprod=Tensor("T", positive_mass=True),
         example=lambda ctx: {"alphas_cumprod": torch.cumprod(1 - betas_linear(8, 0.01, 0.3, dtype=ctx.dtype), 0)})
def betas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`alphas_cumprod_from_betas`: :math:`\\beta_t = 1 - \\bar\\alpha_t/\\bar\\alpha_{t-1}`."""
    a = alphas_cumprod
    if bool((a > 1).any()) or bool((a[1:] > a[:-1]).any()):
        raise ValueError("alphas_cumprod must be nonincreasing values in [0, 1]")
    previous = torch.cat([a.new_ones(1), a[:-1]])
    return 1 - a / previous


@accepts(alphas_cumprod=Tensor("T", nonnegative=True, positive_mass=True))
def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """VE levels :math:`\\sigma_t = \\sqrt{(1 - \\bar\\alpha_t)/\\bar\\alpha_t}` (``inf`` where
    :math:`\\bar\\alpha_t = 0`, zero terminal SNR): shape ``(T,)``, increasing in ``t``."""
    if bool((alphas_cumprod > 1).any()):
        raise ValueError(f"alphas_cumprod must be <= 1, got a maximum of {float(alphas_cumprod.max())!r}")
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


@accepts(sigmas=Tensor(..., "n", nonnegative=True, allow_empty=True))
def snr_from_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio :math:`\\mathrm{SNR} = 1/\\sigma^2 = \\bar\\alpha / (1 - \\bar\\alpha)` of VE levels."""
    return sigmas.square().reciprocal()


@accepts(num_train_timesteps=Int(ge=1), num_inference_steps=Int(ge=1),
         spacing=Choice("leading", "trailing", "linspace"), steps_offset=Int(ge=0))
def discrete_timesteps(num_train_timesteps: int, num_inference_steps: int, spacing: str = "leading",
                       steps_offset: int = 0) -> torch.Tensor:
    """Decreasing training-step indices ``(num_inference_steps,)`` at which a discrete sampler evaluates, with the
    spacings of diffusers' ``timestep_spacing``.

    - ``"leading"``: :math:`t_i = i\\,\\lfloor T/n \\rfloor + \\text{offset}` (DDIM's original choice; never reaches
      the last step :math:`T - 1`);
    - ``"trailing"``: :math:`t_i = \\operatorname{round}(T - i\\,T/n) - 1` (starts at :math:`T - 1`, recommended by
      "Common Diffusion Noise Schedules and Sample Steps are Flawed");
    - ``"linspace"``: :math:`n` points rounded from :math:`[0, T - 1]`.

    The sampling schedule is then ``append_zero(sigmas_from_alphas_cumprod(alphas_cumprod)[timesteps])``: each
    step lands on the next timestep's level. (diffusers' DDIM steps every timestep to ``t - T // n`` instead,
    which differs from the next timestep under ``"linspace"``.)
    """
    T, n = num_train_timesteps, num_inference_steps
    if n > T:
        raise ValueError(f"num_inference_steps must be <= num_train_timesteps ({T}), got {n}")
    if spacing == "leading":
        t = torch.arange(n, dtype=torch.float64) * (T // n) + steps_offset
    elif spacing == "trailing":
        t = (T - torch.arange(n, dtype=torch.float64) * (T / n)).round() - 1
        t = t.flip(0)
    else:
        t = torch.linspace(0, T - 1, n, dtype=torch.float64).round()
    t = t.flip(0).long()
    if int(t.max()) >= T:
        raise ValueError(f"steps_offset must keep the timesteps below num_train_timesteps ({T}), got "
                         f"{steps_offset}")
    return t
