"""Limited-interval guidance: the classifier-free guidance weight applied only to noise levels in (sigma_lo, sigma_hi].

References: Applying Guidance in a Limited Interval Improves Sample and Distribution Quality in Diffusion Models, 2024

Classifier-free guidance with a constant weight drives the probability-flow ODE with
:math:`D_u + w(D_c - D_u)` at every level. Kynkäänniemi et al. replace the constant by a piecewise-constant
schedule (their Eqs. 5-6),

.. math::
    \\frac{dx}{d\\sigma} = -\\frac{w(\\sigma) D_c(x; \\sigma) + (1 - w(\\sigma)) D_u(x; \\sigma) - x}{\\sigma},
    \\qquad w(\\sigma) = \\begin{cases} w & \\sigma \\in (\\sigma_{lo}, \\sigma_{hi}] \\\\ 1 & \\text{otherwise,}
    \\end{cases}

so the sampler follows the plain conditional model at high noise (where guidance pushes trajectories away from
the data and drops modes) and at low noise (where it changes little), and is guided only in between. Constant
CFG is :math:`\\sigma_{lo} = 0, \\sigma_{hi} = \\infty`. Outside the interval the unconditional model is not
evaluated at all, which is the method's saving.

Symbols and arguments: :math:`D_c` = ``cond``, :math:`D_u` = ``uncond`` (denoisers ``model(x, sigma)``),
:math:`w` = ``scale``, :math:`\\sigma_{lo}, \\sigma_{hi}` = ``sigma_lo, sigma_hi``. Shapes: ``x`` is ``(N, ...)``,
``sigma`` ``(N,)`` (one level per sample, as the samplers call it); a batch with levels on both sides of a
boundary gets one weight per sample.

The defaults are the paper's EDM2-XXL FID-optimal setting (Table 1), :math:`(0.19, 1.61]` with :math:`w = 2.0`
(constant CFG's best there is :math:`w = 1.2`), in EDM's VE levels for data of standard deviation 0.5; its
FD_DINOv2 optimum is :math:`(0.60, 5.00]` with :math:`w = 2.9`, and its SD-XL figures use :math:`(0.28, 5.42]` with
:math:`w = 16`. The paper rounds both boundaries to levels of the sampling schedule (Section 3.1);
:func:`guidance_interval_from_steps` converts the official code's inclusive step indices into that interval.

Deviation from the official sampler: the official code decides guidance per solver *step* (step ``i`` of
``sigmas[i] -> sigmas[i + 1]`` is guided for both of its evaluations iff ``start <= i <= stop``), while this wrapper
applies Eq. 6 per *evaluation level*, since a denoiser sees only ``sigma``. With one evaluation per step (Euler,
DDIM, ancestral, DPM-Solver++(2M)) the two agree exactly. With Heun they differ at two evaluations: the
correction of the step ending at :math:`\\sigma_{hi}` is guided here (the closed end) and unguided there, and the
correction of the last guided step, at :math:`\\sigma_{lo}`, is unguided here and guided there (the guided
evaluation count is the same).

Example:
    >>> import torch
    >>> from paperzoo.diffusion.mixture import mixture_on_circle
    >>> from paperzoo.diffusion.guidance import class_conditional
    >>> gm = mixture_on_circle(4, 2, radius=3.0, std=0.4)
    >>> c0, _ = class_conditional(gm, [0, 0, 1, 1])
    >>> guided = limited_interval_guidance(c0.denoise, gm.denoise, 3.0, sigma_lo=0.2, sigma_hi=2.0)
    >>> x = torch.randn(5, 2, dtype=torch.float64)
    >>> high, mid = torch.full((5,), 10.0, dtype=torch.float64), torch.full((5,), 1.0, dtype=torch.float64)
    >>> torch.equal(guided(x, high), c0.denoise(x, high))      # outside: exactly the conditional model
    True
    >>> d_u = gm.denoise(x, mid)
    >>> torch.allclose(guided(x, mid), d_u + 3.0 * (c0.denoise(x, mid) - d_u))  # inside: CFG with w = 3
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from paperzoo.core.accepts import Function, Int, Real, Tensor, accepts
from paperzoo.diffusion.guidance import classifier_free_guidance

__all__ = ["guidance_interval_scale", "limited_interval_guidance", "guidance_interval_from_steps", "EDM2_XXL_FID"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: The paper's EDM2-XXL ImageNet-512 FID-optimal setting (Table 1): guidance weight and interval.
EDM2_XXL_FID = {"scale": 2.0, "sigma_lo": 0.19, "sigma_hi": 1.61}


def _check_interval(sigma_lo: float, sigma_hi: float) -> None:
    if not sigma_lo < sigma_hi:
        raise ValueError(f"sigma_lo must be < sigma_hi ({sigma_hi}), got {sigma_lo}")


def _interval_weight(sigma, scale: float, sigma_lo: float, sigma_hi: float):
    """:math:`w(\\sigma)` of Eq. 6: a number when the whole batch is on one side (so guidance's fast path runs the
    conditional model alone), else one weight per sample."""
    s = torch.as_tensor(sigma)
    inside = (s > sigma_lo) & (s <= sigma_hi)
    if bool(inside.all()):
        return scale
    if not bool(inside.any()):
        return 1.0
    dtype = s.dtype if s.is_floating_point() else torch.float64
    return torch.where(inside, torch.tensor(scale, dtype=dtype, device=s.device),
                       torch.tensor(1.0, dtype=dtype, device=s.device))


@accepts(scale=Real(), sigma_lo=Real(ge=0), sigma_hi=Real(gt=0), output="any",  # returns a function
         example=lambda ctx: {"scale": 2.0, "sigma_lo": 0.19, "sigma_hi": 1.61})
def guidance_interval_scale(scale: float, sigma_lo: float = 0.19, sigma_hi: float = 1.61
                            ) -> Callable[[torch.Tensor], float | torch.Tensor]:
    """The schedule :math:`\\sigma \\mapsto w(\\sigma)` of Eq. 6: ``scale`` on :math:`(\\sigma_{lo}, \\sigma_{hi}]`,
    1 elsewhere; the ``scale`` hook of :func:`~paperzoo.diffusion.guidance.classifier_free_guidance`.

    Args:
        scale: the guidance weight :math:`w` inside the interval (1 is no guidance, 0 the unconditional model).
        sigma_lo: :math:`\\sigma_{lo} \\ge 0`, excluded (guidance stops once the level reaches it).
        sigma_hi: :math:`\\sigma_{hi} > \\sigma_{lo}`, included (a value at or above the schedule's first level
            keeps guidance on from the start).

    Returns:
        ``w(sigma)``: for ``sigma`` of shape ``(N,)``, the number ``scale`` or ``1.0`` when every level is on one
        side, else a tensor ``(N,)``.
    """
    _check_interval(sigma_lo, sigma_hi)
    scale, sigma_lo, sigma_hi = float(scale), float(sigma_lo), float(sigma_hi)

    def weight(sigma):
        return _interval_weight(sigma, scale, sigma_lo, sigma_hi)

    return weight


@accepts(cond=Function(), uncond=Function(), scale=Real(), sigma_lo=Real(ge=0), sigma_hi=Real(gt=0),
         output="any",  # returns a denoiser
         example=lambda ctx: {"cond": lambda x, s: x, "uncond": lambda x, s: 0 * x, "scale": 2.0,
                              "sigma_lo": 0.19, "sigma_hi": 1.61})
def limited_interval_guidance(cond: Denoiser, uncond: Denoiser, scale: float, sigma_lo: float = 0.19,
                              sigma_hi: float = 1.61) -> Denoiser:
    """The guided denoiser of Eq. 5, :math:`D_u + w(\\sigma)(D_c - D_u)` with :math:`w(\\sigma)` from
    :func:`guidance_interval_scale`: exactly ``cond`` (one evaluation) outside :math:`(\\sigma_{lo},
    \\sigma_{hi}]`, classifier-free guidance with weight ``scale`` (two evaluations) inside.

    Args:
        cond: conditional denoiser :math:`D_c(x, \\sigma)`.
        uncond: unconditional denoiser :math:`D_u(x, \\sigma)`.
        scale, sigma_lo, sigma_hi: as in :func:`guidance_interval_scale` (defaults: the paper's EDM2-XXL
            interval; the paper's weight there is 2.0).
    """
    _check_interval(sigma_lo, sigma_hi)
    return classifier_free_guidance(cond, uncond, guidance_interval_scale(scale, sigma_lo, sigma_hi))


def _example_steps(ctx) -> dict:
    from paperzoo.diffusion.schedules import get_sigmas_karras

    return {"sigmas": get_sigmas_karras(8, 0.002, 80.0, dtype=ctx.dtype), "start": 0, "stop": 3}


@accepts(sigmas=Tensor("n", nonnegative=True), start=Int(ge=0), stop=Int(ge=0), example=_example_steps)
def guidance_interval_from_steps(sigmas: torch.Tensor, start: int, stop: int) -> tuple[float, float]:
    """The interval :math:`(\\sigma_{lo}, \\sigma_{hi}] = (\\sigma_{stop+1}, \\sigma_{start}]` that guides exactly
    the solver steps ``start .. stop`` (inclusive, counted from 0) of the decreasing schedule ``sigmas`` ``(n,)``
    (ending in 0): the official code's ``guidance_interval=[start, stop]``. Step ``i`` goes from ``sigmas[i]`` to
    ``sigmas[i + 1]`` and is guided when its starting level lies in the interval.

    With 32 EDM steps (``get_sigmas_karras(32, 0.002, 80)``), ``[17, 22]`` gives :math:`(0.189, 1.609]`, which the
    paper reports as :math:`(0.19, 1.61]`."""
    if stop < start:
        raise ValueError(f"stop must be >= start ({start}), got {stop}")
    if stop + 1 >= sigmas.shape[0]:
        raise ValueError(f"stop must be < {sigmas.shape[0] - 1} (the number of steps in sigmas), got {stop}")
    if bool((sigmas[1:] > sigmas[:-1]).any()):
        raise ValueError("sigmas must be nonincreasing (from the start level down to the last)")
    lo, hi = float(sigmas[stop + 1]), float(sigmas[start])
    if not lo < hi:
        raise ValueError(f"sigmas must decrease across steps {start}..{stop}, got sigmas[{start}] = {hi} and "
                         f"sigmas[{stop + 1}] = {lo}")
    return lo, hi
