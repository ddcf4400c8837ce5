"""One More Step (OMS): one extra learned step from pure noise into a frozen model's flawed schedule.

References: One More Step: A Versatile Plug-and-Play Module for Rectifying Diffusion Schedule Flaws and Enhancing
Low-Frequency Controls, 2024 (Hu, Chen, Xu, Wang, Zhu, Tai; CVPR 2024).

A model trained on a schedule whose last level :math:`\\sigma_T` is finite (non-zero terminal SNR, e.g. Stable
Diffusion's) expects at :math:`\\sigma_T` the signal-leaking marginal :math:`x_0 + \\sigma_T\\varepsilon`, but is
started from pure noise. Instead of retraining it, OMS prepends one step on a zero-SNR level: a small separate
network :math:`\\psi` is trained with :math:`v`-prediction at :math:`\\sigma = \\infty` (VP state
:math:`x^{\\mathcal S}_T = \\varepsilon`, target :math:`v = -x_0`), and the sampler's first step is DDIM's limit from
:math:`\\infty` to the original first level,

.. math::
    x_T = \\hat x_0 + \\sigma_T\\,\\varepsilon, \\qquad \\hat x_0 = -\\psi(\\varepsilon)
    \\quad(\\text{VP: } x_T = \\sqrt{\\bar\\alpha_T}\\,\\hat x_0 + \\sqrt{1 - \\bar\\alpha_T}\\,\\varepsilon),

after which the frozen model runs its own schedule unchanged. Symbols: :math:`\\psi` = ``oms`` (a VE denoiser
that accepts ``sigma = inf``, e.g. ``MLPDenoiser(prediction="v").denoiser()``), :math:`\\varepsilon` = ``x`` (the
unit noise, the normalized state of :mod:`~paperzoo.diffusion.samplers`), :math:`\\sigma_T` = ``sigmas[0]``.
Since the module's optimum is :math:`E[x_0]` (of the prompt's data: its condition carries the low-frequency
control), the exact data mean is its oracle. Shapes: ``x`` ``(N, ...)``, ``sigmas`` ``(n + 1,)`` ending in 0.

Example:
    >>> import torch
    >>> from paperzoo.diffusion import mixture_on_circle
    >>> from paperzoo.diffusion.zero_terminal_snr import zero_snr_sigmas
    >>> from paperzoo.diffusion.one_more_step import sample_one_more_step
    >>> gm = mixture_on_circle(4, 2, radius=1.0, std=0.1)
    >>> flawed = zero_snr_sigmas(20, zero_snr=False, spacing="leading", steps_offset=1)   # starts at ~13.1
    >>> x = sample_one_more_step(gm.denoise, gm.denoise, torch.randn(512, 2, dtype=torch.float64), flawed)
    >>> x.shape
    torch.Size([512, 2])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from paperzoo.core.accepts import Function, Generator, Int, Module, Real, Tensor, accepts
from paperzoo.diffusion.samplers import sample_ddim

__all__ = ["one_more_step", "one_more_step_denoiser", "sample_one_more_step", "oms_loss", "train_one_more_step"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_first_level(sigmas: torch.Tensor) -> None:
    if sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must hold at least two levels (the original schedule then 0), got {sigmas.shape[0]}")
    if not math.isfinite(float(sigmas[0])) or float(sigmas[0]) <= 0:
        raise ValueError(f"sigmas[0] must be the original schedule's finite first level > 0 (OMS supplies the "
                         f"step from inf), got {float(sigmas[0])!r}")


def _oms_x0(oms: Denoiser, x: torch.Tensor) -> torch.Tensor:
    denoised = oms(x, torch.full((x.shape[0],), math.inf, dtype=x.dtype, device=x.device))
    if not isinstance(denoised, torch.Tensor) or denoised.shape != x.shape:
        got = tuple(denoised.shape) if isinstance(denoised, torch.Tensor) else type(denoised).__name__
        raise ValueError(f"oms must return a tensor of the shape of x {tuple(x.shape)}, got {got}")
    return denoised


def _example(ctx) -> dict:
    from paperzoo.diffusion.mixture import mixture_on_circle

    gm = mixture_on_circle(3, 2, radius=2.0, std=0.3, dtype=ctx.dtype)
    return {"oms": gm.denoise, "x": torch.randn(4, 2, generator=ctx.generator, dtype=ctx.dtype), "sigma_T": 13.0}


@accepts(oms=Function(), x=Tensor(ndims=tuple(range(1, 8)), degenerate=("zeros",)), sigma_T=Real(gt=0),
         example=_example)
@torch.no_grad()
def one_more_step(oms: Denoiser, x: torch.Tensor, sigma_T: float) -> torch.Tensor:
    """The OMS step alone: from the unit noise ``x`` at :math:`\\sigma = \\infty` to the VE state
    :math:`x_T = \\psi(\\varepsilon) + \\sigma_T\\varepsilon` at the original first level ``sigma_T``
    (deterministic DDIM's limit; the state the frozen model's sampler starts from)."""
    return _oms_x0(oms, x) + float(sigma_T) * x


@accepts(model=Function(), oms=Function(), output="any",  # returns a function
         example=lambda ctx: {"model": lambda x, s: 0 * x, "oms": lambda x, s: 0 * x})
def one_more_step_denoiser(model: Denoiser, oms: Denoiser) -> Denoiser:
    """The frozen ``model`` with the OMS module ``oms`` in front: ``oms`` answers at ``sigma = inf``, ``model``
    at every finite level (a batch may not mix the two). Any sampler on ``[inf, *sigmas]`` with it is OMS then that
    sampler on the original levels."""
    def denoiser(x: torch.Tensor, sigma) -> torch.Tensor:
        s = torch.as_tensor(sigma)
        infinite = torch.isinf(s)
        if bool(infinite.all()):
            return oms(x, sigma)
        if bool(infinite.any()):
            raise ValueError("sigma must be all infinite (the OMS step) or all finite (the frozen model), not mixed")
        return model(x, sigma)

    return denoiser


@accepts(model=Function(), oms=Function(), x=Tensor(ndims=tuple(range(1, 8)), degenerate=("zeros",)),
         sigmas=Tensor("n", nonnegative=True, finite=False), sampler=Function(), generator=Generator(),
         callback=Function(optional=True),
         example=lambda ctx: {**{k: v for k, v in _example(ctx).items() if k != "sigma_T"},
                              "model": _example(ctx)["oms"],
                              "sigmas": torch.tensor([13.0, 2.0, 0.3, 0.0], dtype=ctx.dtype)})
def sample_one_more_step(model: Denoiser, oms: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                         sampler: Callable = sample_ddim, generator: torch.Generator | None = None,
                         callback: Callable | None = None, progress: bool = False) -> torch.Tensor:
    """Sample the frozen ``model`` on its original (flawed) levels ``sigmas`` (finite first level, ending in 0)
    from the unit noise ``x``, with the OMS step first: ``sampler`` (any ``sample_<name>`` of
    :mod:`~paperzoo.diffusion.samplers`) on ``[inf, *sigmas]`` with :func:`one_more_step_denoiser`. The first
    step from ``inf`` is then the sampler's own (DDIM's limit; with noise for stochastic samplers)."""
    _check_first_level(sigmas)
    extended = torch.cat([sigmas.new_full((1,), math.inf), sigmas])
    return sampler(one_more_step_denoiser(model, oms), x, extended, generator=generator, callback=callback,
                   progress=progress)


def _loss(network, x0, noise):
    inf = torch.full((x0.shape[0],), math.inf, dtype=x0.dtype, device=x0.device)
    return (network(noise, inf) + x0).square().mean()


def _example_loss(ctx) -> dict:
    from paperzoo.diffusion.training import MLPDenoiser

    return {"network": MLPDenoiser(2, 8, 1, prediction="v").to(ctx.dtype),
            "x0": torch.randn(6, 2, generator=ctx.generator, dtype=ctx.dtype)}


@accepts(network=Module(), x0=Tensor("N", "d", degenerate=("coincident",)), noise=Tensor("N", "d", optional=True),
         generator=Generator(), example=_example_loss)
def oms_loss(network: nn.Module, x0: torch.Tensor, *, noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The module's training loss at the zero-SNR level: :math:`\\frac1d\\|\\psi_\\theta(\\varepsilon, \\infty) -
    v\\|^2` with :math:`v = -x_0` (VP, :math:`\\bar\\alpha = 0`), averaged over the batch; ``network`` is the raw
    ``v``-prediction network (as :class:`~paperzoo.diffusion.training.MLPDenoiser`, whose ``denoiser()`` is then
    the OMS module). ``noise`` :math:`\\varepsilon` ``(N, d)`` is drawn from ``generator`` when omitted."""
    if getattr(network, "prediction", "v") != "v":
        raise ValueError(f"network must predict v (the paper's zero-SNR parametrization), got "
                         f"prediction={network.prediction!r}")
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
    return _loss(network, x0, noise)


@accepts(network=Module(), sample_data=Function(), steps=Int(ge=0), batch_size=Int(ge=1), lr=Real(gt=0),
         generator=Generator(),
         example=lambda ctx: {**{k: v for k, v in _example_loss(ctx).items() if k == "network"},
                              "sample_data": lambda n, g: torch.randn(n, 2, generator=g, dtype=ctx.dtype),
                              "steps": 3, "batch_size": 8})
def train_one_more_step(network: nn.Module, sample_data: Callable[[int, torch.Generator], torch.Tensor], *,
                        steps: int, batch_size: int = 256, lr: float = 1e-3,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Adam on :func:`oms_loss` with fresh data ``sample_data(n, generator) -> (n, d)`` and noise each step (the
    frozen model is not involved); trains ``network`` in place and returns the loss history ``(steps,)``."""
    if getattr(network, "prediction", "v") != "v":
        raise ValueError(f"network must predict v (the paper's zero-SNR parametrization), got "
                         f"prediction={network.prediction!r}")
    opt = torch.optim.Adam(network.parameters(), lr=lr)
    history = torch.empty(steps, dtype=torch.float64)
    for step in range(steps):
        x0 = sample_data(batch_size, generator)
        loss = _loss(network, x0, torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device))
        if not bool(torch.isfinite(loss.detach())):
            raise FloatingPointError(f"train_one_more_step: the loss is {float(loss.detach())} at step {step}; lower lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history[step] = float(loss.detach())
    return history
