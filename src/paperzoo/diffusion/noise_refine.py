"""NoiseRefine: a learned one-shot refinement of the initial noise that stands in for classifier-free guidance.

References: A Noise is Worth Diffusion Guidance, 2024 (Ahn, Kang, Lee, Min, Kim, Jang, Cho, Paul, Kim, Cha, Jin,
Kim).

Guided sampling spends two denoiser evaluations per step. NoiseRefine keeps the diffusion model and the sampler,
drops the guidance, and instead maps the unit Gaussian noise :math:`\\varepsilon` once through a small refining
network :math:`g_\\phi` so that *unguided* sampling from :math:`\\hat\\varepsilon = g_\\phi(\\varepsilon)` lands where
guided sampling from :math:`\\varepsilon` would. The observation behind it: a guided sample
:math:`x_0^{w} = \\Phi_{w}(\\varepsilon)` inverted *without* guidance,
:math:`\\varepsilon^\\star = \\Phi_{1}^{-1}(x_0^{w})`, is a noise from which unguided sampling reconstructs
:math:`x_0^w`. In paperzoo's VE convention, with the decreasing generation levels ``sigmas``
(:math:`\\sigma_0 > \\dots > \\sigma_{n-1} > \\sigma_n = 0`), guidance scale :math:`w` (``scale``) and the
conditional / unconditional denoisers :math:`D_c` (``cond``), :math:`D_u` (``uncond``):

.. math::
    x_0^{w} = \\mathrm{Euler}\\bigl(D_u + w(D_c - D_u);\\ \\sigma_0\\varepsilon,\\ \\sigma_0 \\to 0\\bigr), \\qquad
    \\varepsilon^\\star = \\mathrm{DDIMInv}\\bigl(D_c;\\ x_0^{w},\\ \\sigma_{n-1} \\to \\sigma_0\\bigr) / \\sigma_0,

(:func:`noise_refining_targets`; the sample is taken as the state at the last positive level, as DDIM inversion
takes an image at its first timestep, :func:`~paperzoo.diffusion.ddim_inversion.invert_ddim`). At :math:`w = 1` the
target is the input noise up to the Euler round trip's error.

The refiner (:class:`NoiseRefiner`) is residual, :math:`g_\\phi(\\varepsilon) = \\varepsilon + f_\\phi(\\varepsilon)`,
with :math:`f_\\phi` an MLP whose last layer starts at zero (so training starts from the identity, as a LoRA on a
pretrained model does). Losses:

- :func:`refiner_regression_loss`: :math:`\\tfrac1{Nd}\\sum_i \\|g_\\phi(\\varepsilon_i) - \\varepsilon_i^\\star\\|^2`,
  the regression onto inverted noises (the paper's first, direct objective);
- :func:`multistep_score_distillation_loss`: from :math:`\\sigma_0 g_\\phi(\\varepsilon)`, ``k`` unguided Euler steps
  taken with gradients; at every visited state :math:`x_i` the unguided prediction is pulled onto the guided one,
  :math:`\\tfrac1{kNd}\\sum_{i<k}\\|D_c(x_i, \\sigma_i) - \\mathrm{sg}[D_w(x_i, \\sigma_i)]\\|^2` (our reading of the
  paper's multistep score distillation, which only its summaries described to us; see the catalog's deviations).

:func:`train_noise_refiner` runs Adam on the regression loss over fixed (noise, target) pairs, plus an optional extra
loss hook (the distillation term); :func:`sample_refined` refines the noise and samples without guidance (``n``
evaluations for ``n`` levels, against CFG's ``2n``).

Shapes: noises and targets ``(N, d)``; ``sigmas`` ``(n + 1,)`` decreasing, ending in 0.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.guidance import class_conditional
    >>> from paperzoo.diffusion.mixture import mixture_on_circle
    >>> from paperzoo.diffusion.schedules import get_sigmas_karras
    >>> gm = mixture_on_circle(4, 2, radius=2.0, std=0.6, dtype=torch.float64)
    >>> c0, _ = class_conditional(gm, [0, 1, 0, 1])
    >>> sigmas = get_sigmas_karras(100, 0.002, 80.0, dtype=torch.float64)
    >>> eps = torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> same = noise_refining_targets(gm.denoise, gm.denoise, 1.0, eps, sigmas)  # no guidance: the noise itself,
    >>> bool((same - eps).abs().mean() < 0.06)                                   # up to the Euler round trip
    True
    >>> moved = noise_refining_targets(c0.denoise, gm.denoise, 3.0, eps, sigmas)  # guided: a different noise
    >>> bool((moved - eps).abs().mean() > 0.2)
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from paperzoo.core.accepts import Flag, Function, Generator, Int, Module, OneOf, Real, Tensor, accepts
from paperzoo.diffusion.ddim_inversion import _invert
from paperzoo.diffusion.guidance import classifier_free_guidance, guidance_scale_at
from paperzoo.diffusion.samplers import _check_sigmas, _evaluate, euler_step, run_sampler, sample_euler

__all__ = ["NoiseRefiner", "noise_refining_targets", "refiner_regression_loss", "multistep_score_distillation_loss",
           "train_noise_refiner", "sample_refined"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class NoiseRefiner(nn.Module):
    """The residual noise-refining network :math:`g_\\phi(\\varepsilon) = \\varepsilon + f_\\phi(\\varepsilon)`
    (module doc): an MLP of ``depth`` hidden SiLU layers of width ``hidden`` on inputs ``(N, dim)``; the last layer
    is zero-initialised, so a fresh refiner is the identity."""

    @accepts(dim=Int(ge=1), hidden=Int(ge=1), depth=Int(ge=1), example=lambda ctx: {"dim": 2})
    def __init__(self, dim: int, hidden: int = 128, depth: int = 3):
        super().__init__()
        self.dim = dim
        layers, width = [], dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        last = nn.Linear(width, dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        if noise.dim() != 2 or noise.shape[1] != self.dim:
            raise ValueError(f"noise must have shape (N, {self.dim}), got {tuple(noise.shape)}")
        return noise + self.net(noise)


def _check_generation_sigmas(sigmas: torch.Tensor, x: torch.Tensor) -> None:
    _check_sigmas(sigmas, x)
    if sigmas.shape[0] < 3 or float(sigmas[-1]) != 0 or bool(torch.isinf(sigmas[0])) or \
            bool((sigmas[1:] >= sigmas[:-1]).any()):
        raise ValueError("sigmas must be a strictly decreasing finite generation schedule ending in 0 with at least "
                         f"two positive levels, got {sigmas.tolist()}")


def _targets(cond, uncond, scale, noise, sigmas):
    sigmas = sigmas.to(noise.dtype)
    guided = run_sampler(classifier_free_guidance(cond, uncond, scale), noise * sigmas[0], sigmas, euler_step)
    latent = _invert(cond, guided, sigmas[:-1].flip(0), 0, None, None, False)
    return latent / sigmas[0]


def _example_targets(ctx):
    from paperzoo.diffusion.mixture import mixture_on_circle
    from paperzoo.diffusion.schedules import get_sigmas_karras

    gm = mixture_on_circle(2, 2, radius=2.0, std=0.5, dtype=ctx.dtype)
    return {"cond": lambda x, s: gm.means[0].expand_as(x) + 0 * x, "uncond": gm.denoise, "scale": 2.0,
            "noise": torch.randn(5, 2, generator=ctx.generator, dtype=ctx.dtype),
            "sigmas": get_sigmas_karras(4, 0.05, 5.0, dtype=ctx.dtype)}


@accepts(cond=Function(), uncond=Function(), scale=OneOf(Real(), Function()), noise=Tensor("n", "d"),
         sigmas=Tensor("m", nonnegative=True), example=_example_targets)
def noise_refining_targets(cond: Denoiser, uncond: Denoiser, scale, noise: torch.Tensor,
                           sigmas: torch.Tensor) -> torch.Tensor:
    """The guidance-free noise :math:`\\varepsilon^\\star` of each unit noise (module doc): the CFG sample from
    ``noise * sigmas[0]`` (Euler, i.e. deterministic DDIM, over ``sigmas``), DDIM-inverted with ``cond`` alone from
    ``sigmas[-2]`` up to ``sigmas[0]``, divided by ``sigmas[0]``. ``noise`` ``(N, d)``; ``sigmas`` ``(n + 1,)``
    strictly decreasing, ending in 0. Returns ``(N, d)``; costs ``2n + (n - 1)`` evaluations per row."""
    _check_generation_sigmas(sigmas, noise)
    return _targets(cond, uncond, scale, noise, sigmas)


def _example_refiner(ctx):
    return {"refiner": NoiseRefiner(2, 8, 1).to(ctx.dtype),
            "noise": torch.randn(6, 2, generator=ctx.generator, dtype=ctx.dtype),
            "target": torch.randn(6, 2, generator=ctx.generator, dtype=ctx.dtype)}


def _check_refiner(refiner, noise):
    if getattr(refiner, "dim", noise.shape[1]) != noise.shape[1]:
        raise ValueError(f"refiner must take noises of dimension {noise.shape[1]} (noise's), got {refiner.dim}")


@accepts(refiner=Module(bind_dtype=True), noise=Tensor("n", "d"), target=Tensor("n", "d"),
         output="any", example=_example_refiner)  # a loss with a graph
def refiner_regression_loss(refiner: nn.Module, noise: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:math:`\\tfrac1{Nd}\\sum_i\\|g_\\phi(\\varepsilon_i) - \\varepsilon^\\star_i\\|^2` over ``noise`` and
    ``target`` ``(N, d)`` (from :func:`noise_refining_targets`), a 0-dim tensor with gradients for ``refiner``."""
    _check_refiner(refiner, noise)
    return (refiner(noise) - target).square().mean()


def _msd_loss(refiner, cond, uncond, scale, noise, sigmas, k):
    guided = classifier_free_guidance(cond, uncond, scale)
    x = refiner(noise) * sigmas[0]
    total = x.new_zeros(())
    for i in range(k):
        sigma = sigmas[i]
        d_c = _evaluate(cond, x, sigma)
        with torch.no_grad():
            d_w = _evaluate(guided, x.detach(), sigma)
        total = total + (d_c - d_w).square().mean()
        x = euler_step(x, sigma, sigmas[i + 1], d_c, None)
    return total / k


def _example_msd(ctx):
    ex = _example_targets(ctx)
    return {"refiner": NoiseRefiner(2, 8, 1).to(ctx.dtype), "cond": ex["cond"], "uncond": ex["uncond"],
            "scale": 2.0, "noise": ex["noise"], "sigmas": ex["sigmas"], "k": 2}


@accepts(refiner=Module(bind_dtype=True), cond=Function(), uncond=Function(), scale=OneOf(Real(), Function()),
         noise=Tensor("n", "d"), sigmas=Tensor("m", nonnegative=True), k=Int(ge=1), output="any",
         example=_example_msd)
def multistep_score_distillation_loss(refiner: nn.Module, cond: Denoiser, uncond: Denoiser, scale,
                                      noise: torch.Tensor, sigmas: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Our reading of the paper's multistep score distillation (module doc): ``k`` unguided Euler steps from
    ``refiner(noise) * sigmas[0]`` with gradients, the mean squared gap between ``cond``'s prediction and the
    (stop-gradient) guided prediction at every visited state. ``cond`` must be differentiable in ``x`` (the exact
    mixture denoiser is). ``k <= n`` levels of the generation schedule ``sigmas`` ``(n + 1,)``."""
    _check_generation_sigmas(sigmas, noise)
    _check_refiner(refiner, noise)
    n = sigmas.shape[0] - 1
    if k > n:
        raise ValueError(f"k must be <= the number of sampling steps ({n}), got {k}")
    guidance_scale_at(scale, sigmas[:1].expand(noise.shape[0]).to(noise.dtype), noise)  # validates a callable scale
    return _msd_loss(refiner, cond, uncond, scale, noise, sigmas.to(noise.dtype), k)


@accepts(refiner=Module(bind_dtype=True), noise=Tensor("n", "d"), target=Tensor("n", "d"), steps=Int(ge=1),
         batch_size=Int(ge=1), lr=Real(gt=0), extra_loss=Function(optional=True), generator=Generator(),
         example=lambda ctx: {**_example_refiner(ctx), "steps": 3, "batch_size": 4})
def train_noise_refiner(refiner: nn.Module, noise: torch.Tensor, target: torch.Tensor, *, steps: int,
                        batch_size: int = 256, lr: float = 1e-3, extra_loss: Callable | None = None,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Adam on :func:`refiner_regression_loss` over minibatches drawn (with replacement, from ``generator``) from the
    pairs ``noise``, ``target`` ``(N, d)``; ``extra_loss(refiner, noise_batch) -> 0-dim tensor``, when given, is
    added (e.g. a ``functools.partial`` of :func:`multistep_score_distillation_loss`). Trains in place; returns the
    loss history ``(steps,)``."""
    _check_refiner(refiner, noise)
    opt = torch.optim.Adam(refiner.parameters(), lr=lr)
    history = torch.empty(steps, dtype=torch.float64)
    n = noise.shape[0]
    for step in range(steps):
        idx = torch.randint(n, (batch_size,), generator=generator).to(noise.device)
        batch = noise[idx]
        loss = (refiner(batch) - target[idx]).square().mean()
        if extra_loss is not None:
            loss = loss + extra_loss(refiner, batch)
        if not bool(torch.isfinite(loss.detach())):
            raise FloatingPointError(f"train_noise_refiner: the loss is {float(loss.detach())} at step {step}; "
                                     "lower lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history[step] = float(loss.detach())
    return history


def _example_sample(ctx):
    ex = _example_targets(ctx)
    return {"model": ex["cond"], "refiner": NoiseRefiner(2, 8, 1).to(ctx.dtype), "noise": ex["noise"],
            "sigmas": ex["sigmas"]}


@accepts(model=Function(), refiner=Module(bind_dtype=True), noise=Tensor("n", "d"),
         sigmas=Tensor("m", nonnegative=True), sampler=Function(optional=True), generator=Generator(),
         progress=Flag(), example=_example_sample)
def sample_refined(model: Denoiser, refiner: nn.Module, noise: torch.Tensor, sigmas: torch.Tensor, *,
                   sampler: Callable | None = None, generator: torch.Generator | None = None,
                   progress: bool = False) -> torch.Tensor:
    """Guidance-free sampling from refined noise: ``sampler(model, refiner(noise) * sigmas[0], sigmas)`` (default
    :func:`~paperzoo.diffusion.samplers.sample_euler`), ``model`` the unguided (conditional) denoiser; ``noise``
    ``(N, d)`` unit Gaussian noise. Returns the samples ``(N, d)``."""
    _check_generation_sigmas(sigmas, noise)
    _check_refiner(refiner, noise)
    with torch.no_grad():
        start = refiner(noise) * sigmas[0].to(noise.dtype)
    sampler = sample_euler if sampler is None else sampler
    return sampler(model, start, sigmas, generator=generator, progress=progress)
