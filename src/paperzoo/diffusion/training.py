"""Training denoisers: the per-sample denoising loss with a weighting hook, noise-level samplers, a small MLP.

The loss of every training paper here is one call,

.. math::
    \\mathcal L = \\frac1N \\sum_i w(\\sigma_i)\\, \\frac1d \\bigl\\| F_\\theta(c_{in}(\\sigma_i)\\, x_i, \\sigma_i)
    - \\mathrm{target}_i \\bigr\\|^2, \\qquad x_i = x_{0,i} + \\sigma_i \\varepsilon_i,

with the target of the network's ``prediction`` (:func:`~paperzoo.diffusion.parametrization.prediction_target`)
and a weighting :math:`w(\\sigma)` (``None``: uniform, DDPM's :math:`L_{simple}` for ``prediction="eps"``).
Papers that change the weighting (Min-SNR) or the distribution of :math:`\\sigma` override that one piece.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from paperzoo.core.accepts import Choice, Function, Generator, Int, Module, Real, Tensor, accepts
from paperzoo.diffusion.parametrization import PREDICTIONS, SPACES, denoiser_from_prediction, network_input_scale
from paperzoo.diffusion.parametrization import prediction_target
from paperzoo.diffusion.schedules import sigmas_from_alphas_cumprod

__all__ = ["MLPDenoiser", "denoising_loss", "sample_training_sigmas", "lognormal_sigmas", "train_denoiser"]


class MLPDenoiser(nn.Module):
    """A small MLP network :math:`F_\\theta(x_{in}, \\sigma)` for low-dimensional data, conditioned on
    :math:`\\log\\sigma` through Fourier features.

    Args:
        dim: data dimension :math:`d`.
        hidden: width of the hidden layers; depth: number of hidden layers.
        prediction: what it predicts (``"eps"``, ``"x0"``, ``"v"``, ``"flow"``); space: its input convention
            (see :func:`~paperzoo.diffusion.parametrization.denoiser_from_prediction`); default ``"flow"`` for
            ``"flow"``, else ``"vp"`` (inputs of unit scale at every level).
        n_frequencies: Fourier features of :math:`\\log\\sigma / 4`, with :math:`\\sigma` clamped to
            :math:`[10^{-12}, 10^{12}]` (so an infinite, zero-terminal-SNR level is a finite condition).

    ``denoiser()`` returns the VE denoiser ``model(x, sigma)`` the samplers take.
    """

    @accepts(dim=Int(ge=1), hidden=Int(ge=1), depth=Int(ge=1), prediction=Choice(*PREDICTIONS),
             space=Choice(*SPACES, optional=True), n_frequencies=Int(ge=1), example=lambda ctx: {"dim": 2})
    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, *, prediction: str = "eps",
                 space: str | None = None, n_frequencies: int = 8):
        super().__init__()
        self.dim, self.prediction = dim, prediction
        if space is None:
            space = "flow" if prediction == "flow" else "vp"
        self.space = denoiser_from_prediction(lambda x, s: x, prediction, space=space).space
        self.register_buffer("frequencies", torch.arange(1, n_frequencies + 1, dtype=torch.float32) * math.pi / 2)
        layers, width = [], dim + 2 * n_frequencies
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x_in: torch.Tensor, sigma) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=x_in.dtype, device=x_in.device).expand(x_in.shape[0])
        c = (s.clamp(1e-12, 1e12).log() / 4)[:, None] * self.frequencies.to(x_in.dtype)
        return self.net(torch.cat([x_in, torch.sin(c), torch.cos(c)], dim=-1))

    def denoiser(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The VE denoiser ``model(x, sigma)`` of this network."""
        return denoiser_from_prediction(self, self.prediction, space=self.space)


def _example_loss(ctx):
    net = MLPDenoiser(2, 16, 1).to(ctx.dtype)
    return {"network": net, "x0": torch.randn(6, 2, generator=ctx.generator, dtype=ctx.dtype),
            "sigma": torch.rand(6, generator=ctx.generator, dtype=ctx.dtype) + 0.1}


@accepts(network=Module(), x0=Tensor("N", "d", degenerate=("coincident",)), sigma=Tensor("N", positive_mass=True),
         prediction=Choice(*PREDICTIONS, optional=True), space=Choice(*SPACES, optional=True),
         weighting=Function(optional=True), noise=Tensor("N", "d", optional=True), generator=Generator(),
         example=_example_loss)
def denoising_loss(network: nn.Module, x0: torch.Tensor, sigma: torch.Tensor, *, prediction: str | None = None,
                   space: str | None = None, weighting: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """The weighted denoising loss above (a 0-dim tensor with its graph).

    Args:
        network: :math:`F_\\theta(x_{in}, \\sigma)`; ``prediction``/``space`` default to its attributes of those
            names (as on :class:`MLPDenoiser`).
        x0: clean data ``(N, d)``; sigma: VE levels ``(N,)``, ``> 0``.
        weighting: ``w(sigma) -> (N,)`` weights (``None``: 1).
        noise: :math:`\\varepsilon` ``(N, d)``; drawn from ``generator`` when omitted.
    """
    if bool((sigma <= 0).any()):
        raise ValueError(f"sigma must be > 0 entrywise, got a minimum of {float(sigma.min())!r}")
    return _denoising_loss(network, x0, sigma, prediction, space, weighting, noise, generator)


def _denoising_loss(network, x0, sigma, prediction=None, space=None, weighting=None, noise=None, generator=None):
    """Unchecked :func:`denoising_loss` (the training loop)."""
    prediction = prediction or getattr(network, "prediction", None)
    if prediction is None:
        raise ValueError("prediction must be given for a network without a prediction attribute")
    space = space or getattr(network, "space", None) or {"v": "vp", "flow": "flow"}.get(prediction, "ve")
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    x = x0 + sigma[:, None] * noise
    output = network(network_input_scale(sigma[:, None], space) * x, sigma)
    per_sample = (output - prediction_target(x0, noise, sigma, prediction)).square().mean(-1)
    if weighting is not None:
        w = weighting(sigma)
        if not isinstance(w, torch.Tensor) or w.shape != sigma.shape:
            raise ValueError(f"weighting must return a tensor of shape {tuple(sigma.shape)} (one weight per sample)")
        per_sample = w * per_sample
    return per_sample.mean()


@accepts(n=Int(ge=1), alphas_cumprod=Tensor("T", positive_mass=True), generator=Generator(),
         example=lambda ctx: {"n": 5, "alphas_cumprod": torch.linspace(0.99, 0.01, 10, dtype=ctx.dtype)})
def sample_training_sigmas(n: int, alphas_cumprod: torch.Tensor, *, generator: torch.Generator | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """DDPM's training levels: timesteps ``t`` uniform over the ``T`` steps and their VE levels
    :math:`\\sigma_t` (:func:`~paperzoo.diffusion.schedules.sigmas_from_alphas_cumprod`); returns ``(t, sigma)``.

    Zero-SNR steps (:math:`\\bar\\alpha_t = 0`, infinite level) are refused: train those with ``v`` prediction
    in VP time instead."""
    sig = sigmas_from_alphas_cumprod(alphas_cumprod)
    if not bool(torch.isfinite(sig).all()):
        raise ValueError("alphas_cumprod must be > 0 (a zero entry is an infinite VE level)")
    return _sample_training_sigmas(n, sig, generator)


def _sample_training_sigmas(n: int, sigmas: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unchecked :func:`sample_training_sigmas` on precomputed VE levels ``sigmas`` ``(T,)`` (training loops)."""
    t = torch.randint(0, sigmas.shape[0], (n,), generator=generator)
    return t, sigmas[t]


@accepts(n=Int(ge=1), p_mean=Real(), p_std=Real(gt=0), generator=Generator(), example=lambda ctx: {"n": 5})
def lognormal_sigmas(n: int, p_mean: float = -1.2, p_std: float = 1.2, *, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """EDM's training levels :math:`\\log\\sigma \\sim \\mathcal N(P_{mean}, P_{std}^2)` (Karras et al., 2022), ``(n,)``."""
    return (p_mean + p_std * torch.randn(n, generator=generator, dtype=torch.float64)).exp().to(dtype)


@accepts(network=Module(), sample_data=Function(), sample_sigmas=Function(), steps=Int(ge=0),
         batch_size=Int(ge=1), lr=Real(gt=0), weighting=Function(optional=True), generator=Generator(),
         callback=Function(optional=True), penalty=Function(optional=True),
         example=lambda ctx: {"network": MLPDenoiser(2, 8, 1).to(ctx.dtype),
                              "sample_data": lambda n, g: torch.randn(n, 2, generator=g, dtype=ctx.dtype),
                              "sample_sigmas": lambda n, g: torch.rand(n, generator=g, dtype=ctx.dtype) + 0.1,
                              "steps": 3, "batch_size": 8})
def train_denoiser(network: nn.Module, sample_data: Callable[[int, torch.Generator], torch.Tensor],
                   sample_sigmas: Callable[[int, torch.Generator], torch.Tensor], *, steps: int,
                   batch_size: int = 256, lr: float = 1e-3, weighting: Callable | None = None,
                   generator: torch.Generator | None = None, callback: Callable | None = None,
                   penalty: Callable[[nn.Module], torch.Tensor] | None = None) -> torch.Tensor:
    """Adam on :func:`denoising_loss` with fresh data and levels each step; returns the loss history ``(steps,)``.

    ``sample_data(n, generator) -> (n, d)`` and ``sample_sigmas(n, generator) -> (n,)`` draw each batch. The
    network is trained in place; its parameters' dtype is the data's. ``callback(step, network, loss)``, when
    given, runs after each optimizer step (``step`` counts from 1; ``loss`` is that step's float loss): use it for
    checkpoint evaluations in convergence-speed claims. ``penalty(network) -> 0-dim tensor``, when given, is added
    to each step's loss (a regularizer such as a fine-tuning method's rank penalty); the history includes it. Only
    parameters with ``requires_grad`` are trained (freeze the rest to fine-tune an adapter).
    """
    def batch_loss(step):
        x0 = sample_data(batch_size, generator)
        sigma = sample_sigmas(batch_size, generator)
        loss = _denoising_loss(network, x0, sigma, weighting=weighting, generator=generator)
        return loss if penalty is None else loss + penalty(network)

    return _adam_steps(network, batch_loss, steps, lr, "train_denoiser", callback)


def _adam_steps(network: nn.Module, batch_loss: Callable[[int], torch.Tensor], steps: int, lr: float, name: str,
                callback: Callable | None = None) -> torch.Tensor:
    """The training loops' shared kernel: Adam at ``lr`` on ``network``'s parameters for ``steps`` steps of
    ``batch_loss(step)``; a non-finite loss raises FloatingPointError naming ``name``; ``callback(step, network,
    loss)`` after each step (from 1). Returns the loss history ``(steps,)`` (float64)."""
    opt = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=lr)
    history = torch.empty(steps, dtype=torch.float64)
    for step in range(steps):
        loss = batch_loss(step)
        if not bool(torch.isfinite(loss.detach())):
            raise FloatingPointError(f"{name}: the loss is {float(loss.detach())} at step {step}; lower lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history[step] = float(loss.detach())
        if callback is not None:
            callback(step + 1, network, float(history[step]))
    return history
