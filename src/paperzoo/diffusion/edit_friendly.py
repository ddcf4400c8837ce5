"""Edit-friendly DDPM inversion: the noise maps that make DDPM's sampler retrace a chain of independent noisings.

References: An Edit Friendly DDPM Noise Space: Inversion and Manipulations (Huberman-Spiegelglas, Kulikov,
Michaeli), 2024

DDPM's ancestral sampler (here :func:`~paperzoo.diffusion.samplers.ancestral_step` with parameter :math:`\\eta`,
in the VE levels of k-diffusion) draws, at each step ``i`` from level :math:`\\sigma_i` to :math:`\\sigma_{i+1}`,

.. math::
    x_{i+1} = \\mu_i(x_i) + \\sigma_{up,i}\\, z_i, \\qquad
    \\mu_i(x) = x + (\\sigma_{down,i} - \\sigma_i)\\,\\frac{x - D(x, \\sigma_i)}{\\sigma_i},

with :math:`(\\sigma_{down}, \\sigma_{up})` of :func:`~paperzoo.diffusion.samplers.ancestral_step_sizes`
(:math:`\\eta = 1` is DDPM's posterior variance) and :math:`z_i` standard normal. The paper's inversion of a
clean :math:`x_0` (its Eqs. 5-6, read in the VE form) replaces the sampler's random :math:`z_i` by the ones that
reproduce a chain whose states are drawn *independently*:

.. math::
    x_i = x_0 + \\sigma_i\\, \\tilde\\varepsilon_i \\;\\; (\\tilde\\varepsilon_i \\sim \\mathcal N(0, I)
    \\text{ independent}, i < n), \\qquad x_n = x_0, \\qquad
    z_i = \\frac{x_{i+1} - \\mu_i(x_i)}{\\sigma_{up,i}}.

Running the same sampler from :math:`x_{0}` (the chain's first, noisiest state) with these :math:`z_i` returns the
chain exactly, so :math:`x_0` is reconstructed; running it with a *different* denoiser (another class or prompt)
and the same maps edits :math:`x_0` while the maps hold its structure. Because consecutive :math:`x_i` are
independent rather than a Markov chain, the maps are not standard normal: their variance exceeds 1 and
consecutive maps are correlated (for a point-mass :math:`D = x_0` and :math:`i < n - 1`:
:math:`\\operatorname{Var} z_i = (\\sigma_{i+1}^2 + \\sigma_{down,i}^2)/\\sigma_{up,i}^2`,
:math:`\\operatorname{Cov}(z_i, z_{i+1}) = -\\sigma_{i+1}\\sigma_{down,i+1}/(\\sigma_{up,i}\\sigma_{up,i+1})`).

The VP states of the paper are :math:`\\sqrt{\\bar\\alpha}` times the VE ones and its noise term is
:math:`\\sqrt{\\bar\\alpha_{prev}}\\,\\sigma_{up}` in VE units, so the maps :math:`z_i` are the same numbers in
both conventions. Give ``sigmas`` ending at a positive level (the official code's Stable Diffusion scheduler,
``set_alpha_to_one=False``, ends at :math:`\\bar\\alpha_0`) for a chain whose last state is exactly ``x0``; a final 0
makes the last step deterministic (:math:`\\sigma_{up} = 0`), its map is 0 and the sampler ends at
:math:`D(x_{n-1}, \\sigma_{n-1})`. Editing from an intermediate step (the paper's :math:`T_{skip}`) is
``sample_ddpm_noise_maps(model, inv.xs[k], sigmas[k:], noise_maps=inv.zs[k:])``.

:func:`ddim_inversion` is the deterministic baseline the paper compares against: Euler steps of the
probability-flow ODE run upwards from ``x0``.

Shapes: ``x0`` is ``(N, ...)``; ``sigmas`` ``(n + 1,)`` decreasing; the chain ``xs`` is ``(n + 1, N, ...)``
(``xs[0]`` at ``sigmas[0]``, ``xs[n] = x0``) and the maps ``zs`` ``(n, N, ...)``.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.mixture import mixture_on_circle
    >>> from paperzoo.diffusion.schedules import get_sigmas_karras
    >>> gm = mixture_on_circle(4, 2, radius=2.0, std=0.3)
    >>> sigmas = get_sigmas_karras(20, 0.02, 10.0)[:-1]             # end at a positive level
    >>> x0 = gm.sample(8, generator=torch.Generator().manual_seed(0))
    >>> inv = edit_friendly_inversion(gm.denoise, x0, sigmas, generator=torch.Generator().manual_seed(1))
    >>> x = sample_ddpm_noise_maps(gm.denoise, inv.xs[0], sigmas, noise_maps=inv.zs)
    >>> bool((x - x0).abs().max() < 1e-10)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Flag, Function, Generator, Real, Tensor, accepts
from paperzoo.diffusion.ddim_inversion import _invert
from paperzoo.diffusion.samplers import (_ancestral, _check_sigmas, _evaluate, _to_derivative, ancestral_step,
                                         run_sampler)

__all__ = ["EditFriendlyInversion", "edit_friendly_inversion", "noise_map_step", "sample_ddpm_noise_maps",
           "ddim_inversion"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_X = Tensor(ndims=tuple(range(1, 8)), degenerate=("zeros",))


class EditFriendlyInversion(NamedTuple):
    """The inverted chain ``xs`` ``(n + 1, N, ...)`` (``xs[0]`` the start state at ``sigmas[0]``, ``xs[-1] = x0``)
    and the noise maps ``zs`` ``(n, N, ...)`` that make the ancestral sampler retrace it."""

    xs: torch.Tensor
    zs: torch.Tensor


def _example(ctx) -> dict:
    from paperzoo.diffusion.mixture import mixture_on_circle
    from paperzoo.diffusion.schedules import get_sigmas_karras

    gm = mixture_on_circle(3, 2, radius=2.0, std=0.3, dtype=ctx.dtype)
    return {"model": gm.denoise, "x0": gm.sample(4, generator=ctx.generator),
            "sigmas": get_sigmas_karras(4, 0.05, 5.0, dtype=ctx.dtype)}


def _sampler_example(ctx) -> dict:
    kw = _example(ctx)
    inv = _edit_friendly_inversion(kw["model"], kw["x0"], kw["sigmas"], 1.0,
                                   torch.randn((4, *kw["x0"].shape), generator=ctx.generator, dtype=ctx.dtype))
    return {"model": kw["model"], "x": inv.xs[0], "sigmas": kw["sigmas"], "noise_maps": inv.zs}


def _step_mean(x, sigma, sigma_next, denoised, eta):
    """The ancestral step's deterministic part :math:`\\mu_i(x)` and its :math:`\\sigma_{up}`, computed with the
    same operations as :func:`~paperzoo.diffusion.samplers.ancestral_step` (so the reconstruction is exact to
    rounding)."""
    up, down = _ancestral(sigma, sigma_next, eta)
    return x + _to_derivative(x, sigma, denoised) * (down - sigma), up


def _edit_friendly_inversion(model, x0, sigmas, eta, noise):
    n = sigmas.shape[0] - 1
    sigmas = sigmas.to(x0.dtype)
    level = sigmas[:n].view(n, *([1] * x0.dim()))
    xs = torch.cat([x0 + level * noise, x0[None]])
    zs = torch.zeros_like(noise)
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        mean, up = _step_mean(xs[i], sigma, sigma_next, _evaluate(model, xs[i], sigma), eta)
        if float(up) > 0:  # a final level of 0 has no noise to set: its map stays 0 (as the official code's)
            zs[i] = (xs[i + 1] - mean) / up
    return EditFriendlyInversion(xs, zs)


@accepts(model=Function(), x0=_X, sigmas=Tensor("n", nonnegative=True), eta=Real(gt=0), generator=Generator(),
         noise=Tensor(ndims=tuple(range(2, 9)), optional=True), example=_example)
@torch.no_grad()
def edit_friendly_inversion(model: Denoiser, x0: torch.Tensor, sigmas: torch.Tensor, *, eta: float = 1.0,
                            generator: torch.Generator | None = None,
                            noise: torch.Tensor | None = None) -> EditFriendlyInversion:
    """The edit-friendly noise maps of ``x0`` (Eqs. 5-6 of the paper, in VE levels; see the module docstring).

    Args:
        model: the denoiser :math:`D(x, \\sigma)` the chain is inverted under (the source condition).
        x0: the clean data ``(N, ...)``.
        sigmas: the sampling levels ``(n + 1,)``, nonincreasing, positive except possibly the last.
        eta: the ancestral step's :math:`\\eta` (1: DDPM, the paper's default); the sampler must use the same.
        generator: draws the independent noises :math:`\\tilde\\varepsilon_i`, shape ``(n, N, ...)``.
        noise: the :math:`\\tilde\\varepsilon_i` themselves ``(n, N, ...)`` instead of drawing them.

    Returns:
        :class:`EditFriendlyInversion` ``(xs, zs)``. One model evaluation per step.
    """
    _check_sigmas(sigmas, x0)
    n = sigmas.shape[0] - 1
    if noise is None:
        noise = torch.randn((n, *x0.shape), generator=generator, dtype=x0.dtype).to(x0.device)
    elif tuple(noise.shape) != (n, *x0.shape):
        raise ValueError(f"noise must have shape {(n, *x0.shape)} (one map per step, like x0), got "
                         f"{tuple(noise.shape)}")
    return _edit_friendly_inversion(model, x0, sigmas, float(eta), noise)


class _SuppliedNoise:
    """A sampler context whose ``noise`` returns a given map instead of a fresh draw."""

    def __init__(self, ctx, z: torch.Tensor):
        self._ctx, self._z = ctx, z

    def noise(self, x: torch.Tensor) -> torch.Tensor:
        return self._z

    def __getattr__(self, name):
        return getattr(self._ctx, name)


@accepts(noise_maps=Tensor(ndims=tuple(range(2, 9))), eta=Real(gt=0), output="any")  # returns a step function
def noise_map_step(noise_maps: torch.Tensor, eta: float = 1.0):
    """The ancestral step of :func:`~paperzoo.diffusion.samplers.ancestral_step` whose noise at step ``i`` is
    ``noise_maps[i]`` instead of a fresh draw (DDPM sampling with given noise maps, Eq. 3 of the paper)."""
    base = ancestral_step(float(eta))

    def step(x, sigma, sigma_next, denoised, ctx):
        return base(x, sigma, sigma_next, denoised, _SuppliedNoise(ctx, noise_maps[ctx.i]))

    return step


@accepts(model=Function(), x=_X, sigmas=Tensor("n", nonnegative=True), noise_maps=Tensor(ndims=tuple(range(2, 9))),
         eta=Real(gt=0), generator=Generator(), callback=Function(optional=True), progress=Flag(),
         example=_sampler_example)
def sample_ddpm_noise_maps(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, noise_maps: torch.Tensor,
                           eta: float = 1.0, generator: torch.Generator | None = None, callback=None,
                           progress: bool = False) -> torch.Tensor:
    """DDPM's ancestral sampler driven by given noise maps ``(n, *x.shape)``, one per step, from ``x`` at
    ``sigmas[0]``: with the maps of :func:`edit_friendly_inversion` and its model it reconstructs ``x0``; with
    another model it edits. ``generator`` is unused (kept for the sampler signature)."""
    n = sigmas.shape[0] - 1
    if tuple(noise_maps.shape) != (n, *x.shape):
        raise ValueError(f"noise_maps must have shape {(n, *x.shape)} (one map per step, like x), got "
                         f"{tuple(noise_maps.shape)}")
    return run_sampler(model, x, sigmas, noise_map_step(noise_maps, float(eta)), generator=generator,
                       callback=callback, progress=progress)


@accepts(model=Function(), x0=_X, sigmas=Tensor("n", nonnegative=True), example=_example)
@torch.no_grad()
def ddim_inversion(model: Denoiser, x0: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM inversion: Euler steps of the probability-flow ODE from ``x0`` at ``sigmas[-1]`` up to
    ``sigmas[0]``, the level order reversed; returns the state at ``sigmas[0]``, shape of ``x0``.

    Each step from :math:`\\sigma_{i+1}` to :math:`\\sigma_i` uses the derivative at the current point and level,
    :math:`x + (\\sigma_i - \\sigma_{i+1})(x - D(x, \\sigma_{i+1}))/\\sigma_{i+1}`; a first step from level 0
    evaluates at the destination level instead (the official code evaluates every step there). One model
    evaluation per step; the climb itself is :func:`~paperzoo.diffusion.ddim_inversion.invert_ddim`'s."""
    if sigmas.shape[0] >= 2 and bool(sigmas[-1] > sigmas[0]):
        raise ValueError("sigmas must be nonincreasing: ddim_inversion takes the sampling schedule and climbs it in "
                         "reverse (invert_ddim takes increasing levels)")
    _check_sigmas(sigmas, x0)
    up = sigmas.flip(0).to(x0.dtype)
    x = x0
    if float(up[0]) == 0:  # the step off the data: the derivative at the destination level
        x = x0 + _to_derivative(x0, up[1], _evaluate(model, x0, up[1])) * up[1]
        up = up[1:]
    return _invert(model, x, up, 0, None, None, False)

