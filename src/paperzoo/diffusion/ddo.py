"""Direct Discriminative Optimization (DDO): GAN-style fine-tuning of a likelihood model whose discriminator is
its own likelihood ratio to a frozen reference.

References: Direct Discriminative Optimization: Your Likelihood-Based Visual Generative Model is Secretly a GAN
Discriminator (Zheng, Chen, Chen, He, Liu, Zhu, Zhang), 2025.

A GAN discriminator :math:`d(x)` separating data from a reference model's samples is parametrized implicitly by the
model being trained, :math:`d_\\theta(x) = \\sigma\\bigl(\\beta \\log p_\\theta(x) / p_{ref}(x)\\bigr)`
(:math:`\\sigma` the logistic sigmoid), and the model minimizes the discriminator's logistic loss

.. math::
    \\mathcal L(\\theta) = -E_{x \\sim p_{data}} \\log \\sigma(\\beta\\, r_\\theta(x))
    - \\alpha\\, E_{x \\sim p_{ref}} \\log\\bigl(1 - \\sigma(\\beta\\, r_\\theta(x))\\bigr), \\qquad
    r_\\theta = \\log \\frac{p_\\theta}{p_{ref}},

(:func:`ddo_loss`; ``alpha`` weights the term on the reference's own samples, "fakes"). With :math:`\\alpha = \\beta
= 1` the pointwise optimal discriminator :math:`p_{data} / (p_{data} + p_{ref})` is reached exactly at
:math:`p_\\theta = p_{data}`, so over an unrestricted family the minimizer is the data law whatever the reference;
other values move the optimum off the data law (on a 3-point law with :math:`p_{ref} \ne p_{data}`:
:math:`\beta > 1` pulls it toward :math:`p_{ref}`, :math:`\beta < 1` or :math:`\alpha > 1` push it past
:math:`p_{data}`, away from the reference; see the tests). No
discriminator network is trained, and the fakes come from the frozen reference, drawn once per round. Self-play:
after a round, the fine-tuned model becomes the next round's reference (and fake generator).

Diffusion models have no tractable likelihood; DDO replaces the log-ratio by the difference of the two models'
ELBOs, estimated with one shared level and noise per point. On paperzoo's VE denoiser ``model(x, sigma)``
(:math:`D(x, \\sigma) \\approx E[x_0 \\mid x_0 + \\sigma\\varepsilon = x]`) that is (:func:`ddo_log_ratio`)

.. math::
    \\hat r_\\theta(x_0) = -w(\\sigma)\\,\\Bigl(\\tfrac1d \\|D_\\theta(x, \\sigma) - x_0\\|^2
    - \\tfrac1d \\|D_{ref}(x, \\sigma) - x_0\\|^2\\Bigr), \\qquad x = x_0 + \\sigma\\varepsilon,

the same per-sample error as :func:`~paperzoo.diffusion.training.denoising_loss` with ``prediction="x0"`` in VE
space. The default weight :math:`w = \\sigma^{-2}` makes each error the :math:`\\varepsilon`-prediction error
:math:`\\|\\hat\\varepsilon - \\varepsilon\\|^2`; with :math:`\\log\\sigma` uniform on :math:`[\\sigma_{min},
\\sigma_{max}]` it is the VE ELBO's own weighting (:math:`\\sigma^{-3}\\,d\\sigma` over the density
:math:`\\propto 1/\\sigma`) up to the constant :math:`\\tfrac d2 \\log(\\sigma_{max}/\\sigma_{min})`, which
``beta`` absorbs. The reference's errors carry no gradient.

:func:`ddo_round` is one self-play round on a denoiser network: Adam (the substrate's shared kernel) on
:func:`ddo_loss` of :func:`ddo_log_ratio` for fresh data batches against a pool of the reference's samples.

Shapes: log-ratios ``(N,)`` on data and ``(M,)`` on fakes; ``x0`` ``(N, d)``; ``sigma`` ``(N,)``.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.ddo import ddo_loss
    >>> zero = torch.zeros(4, dtype=torch.float64)           # theta = ref: both terms are log 2
    >>> round(float(ddo_loss(zero, zero)), 6), round(2 * float(torch.log(torch.tensor(2.0))), 6)
    (1.386294, 1.386294)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.accepts import Function, Generator, Int, Module, Real, Tensor, accepts
from paperzoo.diffusion.training import _adam_steps

__all__ = ["ddo_loss", "ddo_log_ratio", "ddo_round"]


def _ddo_loss(log_ratio_real: torch.Tensor, log_ratio_fake: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Unchecked :func:`ddo_loss` (the training loop). ``log(1 - sigmoid(z)) = logsigmoid(-z)``, stable for any z."""
    return -F.logsigmoid(beta * log_ratio_real).mean() - alpha * F.logsigmoid(-beta * log_ratio_fake).mean()


@accepts(log_ratio_real=Tensor("N"), log_ratio_fake=Tensor("M"), alpha=Real(gt=0), beta=Real(gt=0),
         example=lambda ctx: {"log_ratio_real": torch.randn(5, generator=ctx.generator, dtype=ctx.dtype),
                              "log_ratio_fake": torch.randn(3, generator=ctx.generator, dtype=ctx.dtype)})
def ddo_loss(log_ratio_real: torch.Tensor, log_ratio_fake: torch.Tensor, alpha: float = 1.0,
             beta: float = 1.0) -> torch.Tensor:
    """The DDO objective :math:`\\mathcal L` above from log-likelihood ratios (a 0-dim tensor with their graph).

    Args:
        log_ratio_real: :math:`r_\\theta(x) = \\log p_\\theta(x) - \\log p_{ref}(x)` on data points, ``(N,)``.
        log_ratio_fake: the same on the reference's samples, ``(M,)``.
        alpha: weight :math:`\\alpha > 0` of the fake term; beta: scale :math:`\\beta > 0` of the implicit
            discriminator's logit. Defaults 1 (the values at which the optimum is :math:`p_{data}` exactly).
    """
    return _ddo_loss(log_ratio_real, log_ratio_fake, alpha, beta)


def _eps_weighting(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.square().reciprocal()


def _ddo_log_ratio(model, reference, x0, sigma, noise=None, weighting=None, generator=None) -> torch.Tensor:
    """Unchecked :func:`ddo_log_ratio` (the training loop)."""
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    x = x0 + sigma[:, None] * noise
    err = (model(x, sigma) - x0).square().mean(-1)
    with torch.no_grad():
        err_ref = (reference(x, sigma) - x0).square().mean(-1)
    w = (weighting or _eps_weighting)(sigma)
    if not isinstance(w, torch.Tensor) or w.shape != sigma.shape:
        raise ValueError(f"weighting must return a tensor of shape {tuple(sigma.shape)} (one weight per sample)")
    return -w * (err - err_ref)


def _example_models(ctx) -> dict:
    from paperzoo.diffusion.mixture import mixture_on_circle
    gm = mixture_on_circle(3, 2, radius=2.0, std=0.4, dtype=ctx.dtype)
    return {"model": gm.denoise, "reference": lambda x, s: 0.9 * gm.denoise(x, s),
            "x0": gm.sample(6, generator=ctx.generator),
            "sigma": torch.rand(6, generator=ctx.generator, dtype=ctx.dtype) + 0.1}


@accepts(model=Function(), reference=Function(), x0=Tensor("N", "d", degenerate=("coincident",)),
         sigma=Tensor("N", positive_mass=True), noise=Tensor("N", "d", optional=True),
         weighting=Function(optional=True), generator=Generator(), example=_example_models)
def ddo_log_ratio(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  reference: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
                  sigma: torch.Tensor, *, noise: torch.Tensor | None = None,
                  weighting: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The diffusion surrogate :math:`\\hat r_\\theta(x_0)` of :math:`\\log p_\\theta / p_{ref}`, shape ``(N,)``.

    Args:
        model: the trained VE denoiser :math:`D_\\theta(x, \\sigma)`; reference: the frozen one (evaluated without
            gradient).
        x0: points ``(N, d)`` (data or fakes); sigma: their VE levels ``(N,)``, ``> 0``.
        noise: :math:`\\varepsilon` ``(N, d)``, shared by both models; drawn from ``generator`` when omitted.
        weighting: ``w(sigma) -> (N,)``; ``None``: :math:`\\sigma^{-2}` (the :math:`\\varepsilon`-space error).
    """
    if bool((sigma <= 0).any()):
        raise ValueError(f"sigma must be > 0 entrywise, got a minimum of {float(sigma.min())!r}")
    return _ddo_log_ratio(model, reference, x0, sigma, noise, weighting, generator)


def _example_round(ctx) -> dict:
    from paperzoo.diffusion.training import MLPDenoiser
    net = MLPDenoiser(2, 8, 1).to(ctx.dtype)
    return {"network": net, "reference": net.denoiser(),
            "sample_data": lambda n, g: torch.randn(n, 2, generator=g, dtype=ctx.dtype),
            "fake": torch.randn(10, 2, generator=ctx.generator, dtype=ctx.dtype),
            "sample_sigmas": lambda n, g: torch.rand(n, generator=g, dtype=ctx.dtype) + 0.1, "steps": 2,
            "batch_size": 4}


@accepts(network=Module(), reference=Function(), sample_data=Function(), fake=Tensor("M", "d"),
         sample_sigmas=Function(), steps=Int(ge=0), batch_size=Int(ge=1), lr=Real(gt=0), alpha=Real(gt=0),
         beta=Real(gt=0), weighting=Function(optional=True), generator=Generator(),
         callback=Function(optional=True), example=_example_round)
def ddo_round(network: nn.Module, reference: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
              sample_data: Callable[[int, torch.Generator], torch.Tensor], fake: torch.Tensor,
              sample_sigmas: Callable[[int, torch.Generator], torch.Tensor], *, steps: int, batch_size: int = 256,
              lr: float = 1e-4, alpha: float = 1.0, beta: float = 1.0, weighting: Callable | None = None,
              generator: torch.Generator | None = None, callback: Callable | None = None) -> torch.Tensor:
    """One DDO round: Adam on :func:`ddo_loss` of :func:`ddo_log_ratio`, training ``network`` in place; returns the
    loss history ``(steps,)``.

    Each step draws ``batch_size`` data points ``sample_data(n, generator) -> (n, d)`` and as many fakes from the
    pool ``fake`` ``(M, d)`` (the reference's samples, drawn once for the round), each with its own level
    ``sample_sigmas(n, generator) -> (n,)`` and noise. The trained denoiser is ``network.denoiser()`` when the
    network has that method (:class:`~paperzoo.diffusion.training.MLPDenoiser`), else ``network`` itself;
    ``reference`` is a frozen denoiser (for self-play: a frozen copy of the network at the round's start, whose
    samples are ``fake``). ``callback(step, network, loss)`` as in
    :func:`~paperzoo.diffusion.training.train_denoiser`.
    """
    model = network.denoiser() if callable(getattr(network, "denoiser", None)) else network

    def batch_loss(step):
        x_real = sample_data(batch_size, generator)
        x_fake = fake[torch.randint(0, fake.shape[0], (batch_size,), generator=generator).to(fake.device)]
        r_real = _ddo_log_ratio(model, reference, x_real, sample_sigmas(batch_size, generator), None, weighting,
                                generator)
        r_fake = _ddo_log_ratio(model, reference, x_fake, sample_sigmas(batch_size, generator), None, weighting,
                                generator)
        return _ddo_loss(r_real, r_fake, alpha, beta)

    return _adam_steps(network, batch_loss, steps, lr, "ddo_round", callback)
