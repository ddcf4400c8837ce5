"""Gradient-estimation sampler: DDIM with the noise estimate extrapolated from the last two evaluations.

References: Interpreting and Improving Diffusion Models from an Optimization Perspective, 2024 (Permenter & Yuan,
ICML 2024; earlier titled "... Using the Euclidean Distance Function").

The paper reads the noise prediction :math:`\\varepsilon(x, \\sigma) = (x - D(x, \\sigma))/\\sigma` as an estimate
of the gradient of the Euclidean distance function to the data (scaled by :math:`\\sqrt d`), so that deterministic
DDIM in its VE form, :math:`x_{i+1} = x_i + (\\sigma_{i+1} - \\sigma_i)\\,\\varepsilon_i`, is gradient descent on
that distance with step :math:`\\sigma_i - \\sigma_{i+1}`. Errors of the estimate change slowly along the path,
so the sampler replaces :math:`\\varepsilon_i` by a combination with the previous evaluation (the paper's
Eq. 12 / Algorithm 2):

.. math::
    \\bar\\varepsilon_i = \\gamma\\,\\varepsilon(x_i, \\sigma_i) + (1 - \\gamma)\\,\\varepsilon(x_{i-1},
    \\sigma_{i-1}), \\qquad x_{i+1} = x_i + (\\sigma_{i+1} - \\sigma_i)\\,\\bar\\varepsilon_i,

with :math:`\\bar\\varepsilon_0 = \\varepsilon_0` on the first step. The previous term is the raw evaluation, not
the previous :math:`\\bar\\varepsilon` (as in the official code). :math:`\\gamma = 1` is DDIM exactly;
the paper's default is :math:`\\gamma = 2`. In the denoiser convention used here the step is
:math:`x_{i+1} = x_i + (\\sigma_{i+1} - \\sigma_i)(x_i - \\bar D_i)/\\sigma_i` with
:math:`\\bar D_i = x_i - \\sigma_i \\bar\\varepsilon_i` (the improved :math:`\\hat x_0`, also what the official
scheduler reports as its ``pred_original_sample``).

The paper's second change is the schedule: levels evenly spaced in :math:`\\log\\sigma` (its "log-linear"
schedule), :func:`~paperzoo.diffusion.schedules.get_sigmas_exponential` ``(n, sigma_min, sigma_max)``, from a
smaller :math:`\\sigma_{max}` than DDIM's (40 instead of 157 for the CIFAR-10 DDPM), then a last step to
:math:`\\sigma = 0` (the discrete model's first timestep in the official code). ``n`` levels cost ``n`` model
evaluations.

The official experiment code also has a stochastic variant with a parameter :math:`\\mu \\in [0, 1)`: the step
goes to :math:`\\sigma_p = (\\sigma_{i+1}/\\sigma_i^{\\mu})^{1/(1 - \\mu)}` (so that :math:`\\sigma_{i+1} =
\\sigma_i^\\mu \\sigma_p^{1-\\mu}`) and adds fresh noise of std :math:`\\sqrt{\\sigma_{i+1}^2 - \\sigma_p^2}`;
``mu = 0`` (the default, and the paper's sampler) is deterministic.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.mixture import mixture_on_circle
    >>> from paperzoo.diffusion.schedules import get_sigmas_exponential
    >>> gm = mixture_on_circle(4, 2, radius=3.0, std=0.2)
    >>> sigmas = get_sigmas_exponential(10, 0.05, 40.0)
    >>> g = torch.Generator().manual_seed(0)
    >>> x = sample_gradient_estimation(gm.denoise, 40.0 * torch.randn(256, 2, generator=g, dtype=torch.float64),
    ...                                sigmas)
    >>> bool((x.norm(dim=1) - 3.0).abs().median() < 0.3)
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from paperzoo.core.accepts import Real, accepts
from paperzoo.diffusion.samplers import _COMMON, _example, _to_derivative, run_sampler

__all__ = ["gradient_estimation_step", "sample_gradient_estimation", "GAMMA"]

#: the paper's default :math:`\gamma` (CIFAR-10 and CelebA at 5-10 evaluations, Stable Diffusion)
GAMMA = 2.0

_STATE = "gradient_estimation"


def _ge_step(gamma: float, mu: float) -> Callable:
    def step(x, sigma, sigma_next, denoised, ctx):
        eps = _to_derivative(x, sigma, denoised)
        previous = ctx.state.get(_STATE)
        ctx.state[_STATE] = eps
        eps_bar = eps if previous is None else gamma * eps + (1 - gamma) * previous
        if mu == 0 or float(sigma_next) == 0:
            return x + (sigma_next - sigma) * eps_bar
        # sigma_next = sigma**mu * sigma_p**(1 - mu): a deeper deterministic step, refilled with noise.
        sigma_p = (sigma_next / sigma**mu) ** (1 / (1 - mu))
        noise_std = (sigma_next**2 - sigma_p**2).clamp_min(0).sqrt()
        return x + (sigma_p - sigma) * eps_bar + noise_std * ctx.noise(x)
    return step


@accepts(gamma=Real(), mu=Real(ge=0, lt=1), output="any")  # returns a step function
def gradient_estimation_step(gamma: float = GAMMA, mu: float = 0.0) -> Callable:
    """The gradient-estimation step for :func:`~paperzoo.diffusion.samplers.run_sampler`:
    :math:`\\bar\\varepsilon_i = \\gamma\\varepsilon_i + (1-\\gamma)\\varepsilon_{i-1}`,
    :math:`x_{i+1} = x_i + (\\sigma_{i+1} - \\sigma_i)\\bar\\varepsilon_i` (module docstring); the previous
    evaluation's :math:`\\varepsilon` is kept in ``ctx.state``. ``gamma = 1`` is the Euler (DDIM) step; ``mu > 0``
    the official code's stochastic variant (noise from ``ctx.noise``)."""
    return _ge_step(float(gamma), float(mu))


@accepts(**_COMMON, gamma=Real(), mu=Real(ge=0, lt=1), example=_example)
def sample_gradient_estimation(model, x: torch.Tensor, sigmas: torch.Tensor, *,
                               generator: torch.Generator | None = None, callback=None, progress: bool = False,
                               gamma: float = GAMMA, mu: float = 0.0) -> torch.Tensor:
    """The gradient-estimation sampler (Algorithm 2 of Permenter & Yuan, 2024): DDIM with
    :math:`\\bar\\varepsilon_i = \\gamma\\varepsilon(x_i, \\sigma_i) + (1 - \\gamma)\\varepsilon(x_{i-1},
    \\sigma_{i-1})`. One model evaluation per step.

    Args:
        model: denoiser ``model(x, sigma)`` returning :math:`D \\approx E[x_0 \\mid x]`, shape of ``x``.
        x: ``(N, ...)`` start at level ``sigmas[0]``.
        sigmas: ``(n + 1,)`` nonincreasing levels, the paper's being log-linear
            (:func:`~paperzoo.diffusion.schedules.get_sigmas_exponential`) then 0.
        gamma: :math:`\\gamma` (2 in the paper; 1 is DDIM).
        mu: the official code's stochasticity :math:`\\mu \\in [0, 1)` (0: deterministic, the paper's sampler).
        generator: noise for ``mu > 0``.

    Returns:
        The final state, shape of ``x``.
    """
    return run_sampler(model, x, sigmas, _ge_step(float(gamma), float(mu)), generator=generator,
                       callback=callback, progress=progress)
