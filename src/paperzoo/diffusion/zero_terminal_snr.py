"""Zero terminal SNR: schedules that end in pure noise, samplers that start there, and rescaled guidance.

References: Common Diffusion Noise Schedules and Sample Steps are Flawed, 2024 (Lin, Liu, Li, Yang; WACV 2024).

Common schedules (Stable Diffusion's scaled-linear betas among them) stop at
:math:`\\bar\\alpha_T > 0`: the last training state :math:`\\sqrt{\\bar\\alpha_T}x_0 + \\sqrt{1 - \\bar\\alpha_T}
\\varepsilon` still carries signal, most of it in the low frequencies (an image's mean brightness has the variance of
a pixel, the noise's mean 1/d of it), and a denoiser learns to read it. At inference the sampler starts from pure
noise, which has none, so the first prediction is a medium-brightness image and samples cannot be very dark or
bright. "leading" timestep spacing compounds it by not even starting at the last step. The paper's fixes, and
where they live here:

1. rescale the schedule to :math:`\\bar\\alpha_T = 0`:
   :func:`~paperzoo.diffusion.schedules.rescale_zero_terminal_snr` (with :math:`s_t = \\sqrt{\\bar\\alpha_t}`,
   :math:`s'_t = (s_t - s_T)s_1/(s_1 - s_T)`);
2. predict :math:`v` (an :math:`\\varepsilon` network cannot give :math:`x_0` at zero SNR):
   ``MLPDenoiser(prediction="v")`` and :func:`~paperzoo.diffusion.parametrization.denoiser_from_prediction`,
   which take the infinite level;
3. start sampling at the last step ("trailing" spacing,
   :func:`~paperzoo.diffusion.schedules.discrete_timesteps`); the first level is then :math:`\\sigma = \\infty`,
   which every sampler of :mod:`~paperzoo.diffusion.samplers` starts from (``x`` = the unit noise);
4. rescale classifier-free guidance (:func:`rescaled_guidance`, this module): with
   :math:`x_{cfg} = x_{neg} + w(x_{pos} - x_{neg})`,

   .. math::
       x_{final} = \\phi\\, x_{cfg}\\,\\frac{\\operatorname{std}(x_{pos})}{\\operatorname{std}(x_{cfg})}
       + (1 - \\phi)\\, x_{cfg}, \\qquad \\phi = 0.7,

   the standard deviation taken over each sample's entries, in the space of the model's prediction (the paper's
   model predicts :math:`v`; diffusers' ``guidance_rescale`` rescales whatever its model outputs).

:func:`zero_snr_sigmas` builds the sampling levels of fixes 1 and 3 in one call.

Example:
    >>> import torch
    >>> from paperzoo.diffusion import mixture_on_circle, sample_ddim
    >>> from paperzoo.diffusion.zero_terminal_snr import zero_snr_sigmas
    >>> sigmas = zero_snr_sigmas(20)                     # starts at inf: the last, pure-noise step
    >>> float(sigmas[0]), float(sigmas[-1])
    (inf, 0.0)
    >>> gm = mixture_on_circle(4, 2, radius=1.0, std=0.1)
    >>> x = sample_ddim(gm.denoise, torch.randn(512, 2, dtype=torch.float64), sigmas)  # unit noise at inf
    >>> bool((x.norm(dim=1) - 1.0).abs().median() < 0.1)
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from paperzoo.core.accepts import Choice, Flag, Function, Int, OneOf, Real, Tensor, accepts
from paperzoo.diffusion.guidance import guidance_scale_at
from paperzoo.diffusion.parametrization import _expand
from paperzoo.diffusion.schedules import (alphas_cumprod_from_betas, append_zero, betas_scaled_linear,
                                          discrete_timesteps, rescale_zero_terminal_snr, sigmas_from_alphas_cumprod)

__all__ = ["rescaled_guidance", "zero_snr_sigmas", "RESCALE_SPACES"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: the prediction spaces the guidance rescale can act in
RESCALE_SPACES = ("v", "eps", "x0")


@accepts(num_inference_steps=Int(ge=1), num_train_timesteps=Int(ge=2), betas=Tensor("T", optional=True),
         spacing=Choice("leading", "trailing", "linspace"), zero_snr=Flag(), steps_offset=Int(ge=0), example=lambda ctx: {
             "num_inference_steps": 4, "num_train_timesteps": 10},
         output="any")  # the first level is inf by definition (zero terminal SNR)
def zero_snr_sigmas(num_inference_steps: int, num_train_timesteps: int = 1000, *, betas: torch.Tensor | None = None,
                    spacing: str = "trailing", zero_snr: bool = True, steps_offset: int = 0, dtype: torch.dtype = torch.float64
                    ) -> torch.Tensor:
    """Sampling levels of a discrete schedule with the paper's fixes: ``betas`` (default Stable Diffusion's
    scaled-linear) rescaled to zero terminal SNR (``zero_snr``), timesteps with ``spacing`` ("trailing": the first
    is the last training step; ``steps_offset`` as diffusers'), as VE levels then 0, shape ``(num_inference_steps + 1,)``; the first is ``inf``
    when both fixes are on. ``zero_snr=False, spacing="leading", steps_offset=1`` gives Stable Diffusion's flawed levels."""
    if betas is None:
        betas = betas_scaled_linear(num_train_timesteps)
    if betas.shape[0] != num_train_timesteps:
        raise ValueError(f"betas must have num_train_timesteps = {num_train_timesteps} entries, got "
                         f"{betas.shape[0]}")
    if zero_snr:
        betas = rescale_zero_terminal_snr(betas)
    sig = sigmas_from_alphas_cumprod(alphas_cumprod_from_betas(betas))
    t = discrete_timesteps(num_train_timesteps, num_inference_steps, spacing, steps_offset)
    return append_zero(sig[t]).to(dtype)


def _to_prediction(denoised, x, s, space):
    """A VE denoiser's output as the ``space`` prediction at ``(x, s)`` (``x`` normalized where ``s`` is inf)."""
    if space == "x0":
        return denoised
    infinite = torch.isinf(s)
    safe = torch.where(infinite, torch.ones_like(s), s)
    eps = torch.where(infinite, x, (x - denoised) / safe)
    if space == "eps":
        return eps
    alpha = torch.where(infinite, torch.zeros_like(s), (1 + safe.square()).rsqrt())
    return alpha * eps - torch.where(infinite, torch.ones_like(s), safe * alpha) * denoised


def _from_prediction(pred, x, s, space):
    """The inverse of :func:`_to_prediction` (``eps`` is undefined at an infinite level: refused upstream)."""
    if space == "x0":
        return pred
    infinite = torch.isinf(s)
    safe = torch.where(infinite, torch.ones_like(s), s)
    if space == "eps":
        return x - safe * pred
    alpha = (1 + safe.square()).rsqrt()
    return torch.where(infinite, -pred, alpha * (alpha * x) - safe * alpha * pred)


@accepts(cond=Function(), uncond=Function(), scale=OneOf(Real(), Function()), phi=Real(ge=0, le=1),
         space=Choice(*RESCALE_SPACES), output="any",  # returns a function
         example=lambda ctx: {"cond": lambda x, s: 0.5 * x, "uncond": lambda x, s: 0 * x, "scale": 3.0})
def rescaled_guidance(cond: Denoiser, uncond: Denoiser, scale: float | Callable, phi: float = 0.7, *,
                      space: str = "v") -> Denoiser:
    """Classifier-free guidance with the paper's rescale (its Section 3.4): the guided prediction is scaled
    toward the per-sample standard deviation of the conditional one, by the fraction ``phi`` (0 is plain CFG,
    the paper's default 0.7), in the prediction ``space`` (``"v"``, the paper's; ``"eps"`` or ``"x0"``).

    ``cond`` and ``uncond`` are VE denoisers; ``scale`` a number or ``sigma -> w`` as in
    :func:`~paperzoo.diffusion.guidance.classifier_free_guidance`. The standard deviation is over all non-batch
    entries (unbiased, as diffusers' ``rescale_noise_cfg``), so each sample needs at least two entries."""
    def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if x[0].numel() < 2:
            raise ValueError(f"x must have at least 2 entries per sample to take their std, got shape {tuple(x.shape)}")
        s = _expand(sigma, x) * x.new_ones((x.shape[0],) + (1,) * (x.dim() - 1))
        if space == "eps" and bool(torch.isinf(s).any()):
            raise ValueError("space='eps' cannot rescale at an infinite level (zero terminal SNR); use 'v' or 'x0'")
        w = guidance_scale_at(scale, sigma, x)
        pos = _to_prediction(cond(x, sigma), x, s, space)
        neg = _to_prediction(uncond(x, sigma), x, s, space)
        guided = neg + w * (pos - neg)
        dims = tuple(range(1, x.dim()))
        ratio = pos.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp_min(
            torch.finfo(x.dtype).tiny)
        return _from_prediction(guided * (phi * ratio + (1 - phi)), x, s, space)

    return model
