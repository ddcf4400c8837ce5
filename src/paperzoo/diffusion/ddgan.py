"""Denoising Diffusion GAN (DDGAN): a few large denoising steps, each modelled by a conditional GAN.

References: Tackling the Generative Learning Trilemma with Denoising Diffusion GANs (Xiao, Kreis, Vahdat), 2022.

With only :math:`T` = 2 to 8 steps the true reverse conditional :math:`q(x_{t-1} \\mid x_t)` is far from Gaussian
(multimodal when the data are), so DDPM's Gaussian step fails. DDGAN keeps the forward chain and the Gaussian
posterior :math:`q(x_{t-1} \\mid x_t, x_0)` but makes the prediction of :math:`x_0` stochastic: a generator
:math:`G_\\theta(x_t, z, t)`, :math:`z \\sim \\mathcal N(0, I)`, proposes :math:`x_0'`, and
:math:`x_{t-1} \\sim q(x_{t-1} \\mid x_t, x_0')`, which defines an implicit, multimodal
:math:`p_\\theta(x_{t-1} \\mid x_t)` (the paper's Eq. 4). A time-conditional discriminator
:math:`D_\\phi(x_{t-1}, x_t, t)` tells real pairs (the forward chain) from fake ones, with the non-saturating GAN
losses and an R1 penalty on the real input (the paper's Eqs. 5-6 and its Appendix C):

.. math::
    L_D = E\\,\\mathrm{softplus}(-D(x_{t-1}, x_t, t)) + E\\,\\mathrm{softplus}(D(x'_{t-1}, x_t, t))
    + \\frac{\\gamma}{2} E\\,\\|\\nabla_{x_{t-1}} D(x_{t-1}, x_t, t)\\|^2, \\qquad
    L_G = E\\,\\mathrm{softplus}(-D(x'_{t-1}, x_t, t)),

:math:`t` uniform over the :math:`T` steps.

In paperzoo's VE convention a step goes from level :math:`\\sigma` (``sigmas[i]``) to :math:`\\sigma_{next}`
(``sigmas[i+1]``) and the posterior :math:`q(x_{next} \\mid x, x_0)` is DDPM's ancestral step, i.e.
:func:`~paperzoo.diffusion.samplers.ancestral_step` with :math:`\\eta = 1`:

.. math::
    x_{next} = x_0 + \\frac{\\sigma_{next}^2}{\\sigma^2}(x - x_0) + \\frac{\\sigma_{next}}{\\sigma}
    \\sqrt{\\sigma^2 - \\sigma_{next}^2}\\;\\varepsilon ,

deterministic (:math:`x_{next} = x_0`) on the last step, where :math:`\\sigma_{next} = 0`. :func:`sample_ddgan`
is therefore :func:`~paperzoo.diffusion.samplers.run_sampler` with that step over the denoiser
:math:`x \\mapsto G(x, z, \\sigma)`, a fresh :math:`z` per step; :func:`posterior_sample` is the same step with one
level per sample, differentiable, for training. Levels (:func:`ddgan_sigmas`) follow the official code: the VP
SDE's :math:`\\bar\\alpha(t) = \\exp(-\\tfrac12(\\beta_{max} - \\beta_{min})t^2 - \\beta_{min} t)` at
:math:`t_j = \\epsilon + (1 - \\epsilon) j/T`, relative to :math:`t_0 = \\epsilon`, whose level is treated as data.

Paper defaults (CIFAR-10): :math:`T = 4`, :math:`\\beta_{min} = 0.1`, :math:`\\beta_{max} = 20`, latent
:math:`z \\in \\mathbb R^{100}`, R1 :math:`\\gamma = 0.05` (0.02 on CIFAR-10), Adam with
:math:`(\\beta_1, \\beta_2) = (0.5, 0.9)`, learning rates :math:`1.6\\cdot10^{-4}` (G) and :math:`1.25\\cdot10^{-4}`
(D). The networks here are small MLPs for low-dimensional data (the paper's are NCSN++ U-Nets), see
:class:`DDGANGenerator` and :class:`DDGANDiscriminator`.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.mixture import mixture_on_circle
    >>> gm = mixture_on_circle(8, 2, radius=1.0, std=0.05, dtype=torch.float32)
    >>> G, D = DDGANGenerator(2, latent_dim=8, hidden=32), DDGANDiscriminator(2, hidden=32)
    >>> opt_g, opt_d = ddgan_optimizers(G, D)
    >>> sigmas = ddgan_sigmas(2, dtype=torch.float32)
    >>> g = torch.Generator().manual_seed(0)
    >>> losses = ddgan_train_step(G, D, opt_g, opt_d, gm.sample(64, generator=g), sigmas, generator=g)
    >>> x = sample_ddgan(G, sigmas[0] * torch.randn(16, 2, generator=g), sigmas, generator=g)
    >>> x.shape
    torch.Size([16, 2])
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.accepts import Flag, Function, Generator, Instance, Int, Module, Real, Tensor, accepts
from paperzoo.diffusion.samplers import ancestral_step, run_sampler

__all__ = ["ddgan_sigmas", "DDGANGenerator", "DDGANDiscriminator", "posterior_sample", "forward_pairs",
           "r1_penalty", "ddgan_optimizers", "ddgan_train_step", "DDGANLosses", "sample_ddgan"]

BETA_MIN, BETA_MAX, EPS_T = 0.1, 20.0, 1e-3
LATENT_DIM, R1_GAMMA = 100, 0.05
LR_G, LR_D, ADAM_BETAS = 1.6e-4, 1.25e-4, (0.5, 0.9)


@accepts(T=Int(ge=1), beta_min=Real(gt=0), beta_max=Real(gt=0), eps=Real(gt=0, lt=1))
def ddgan_sigmas(T: int = 4, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX, eps: float = EPS_T, *,
                 dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """DDGAN's ``T`` VE levels, decreasing, then 0: shape ``(T + 1,)``.

    :math:`\\sigma_j = \\sqrt{1/\\bar a_j - 1}` with :math:`\\bar a_j = \\bar\\alpha(t_j)/\\bar\\alpha(t_0)`,
    :math:`t_j = \\epsilon + (1 - \\epsilon) j/T` and the VP SDE's
    :math:`\\log\\bar\\alpha(t) = -\\tfrac12(\\beta_{max} - \\beta_{min})t^2 - \\beta_{min} t` (the official code's
    schedule, its level :math:`t_0` being the data)."""
    if beta_min > beta_max:
        raise ValueError(f"beta_min must be <= beta_max ({beta_max}), got {beta_min}")
    t = eps + (1 - eps) * torch.arange(T + 1, dtype=torch.float64) / T
    log_abar = -0.5 * (beta_max - beta_min) * t.square() - beta_min * t
    rel = log_abar[1:] - log_abar[0]  # relative to t_0
    sigmas = torch.expm1(-rel).sqrt().flip(0)
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(dtype)


def _level_features(sigma: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    c = (sigma.clamp(1e-12, 1e12).log() / 4)[:, None] * frequencies
    return torch.cat([torch.sin(c), torch.cos(c)], dim=-1)


def _mlp(width: int, hidden: int, depth: int, out: int, act) -> nn.Sequential:
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), act()]
        width = hidden
    layers.append(nn.Linear(width, out))
    return nn.Sequential(*layers)


class DDGANGenerator(nn.Module):
    """The generator :math:`G_\\theta(x_t, z, t)` of DDGAN for low-dimensional data: an MLP that predicts
    :math:`x_0` from the VP-scaled state :math:`x/\\sqrt{1 + \\sigma^2}`, Fourier features of
    :math:`\\log\\sigma` and the latent :math:`z`.

    Args:
        dim: data dimension :math:`d`; latent_dim: dimension of :math:`z` (paper: 100); hidden, depth: the MLP's
            width and number of hidden layers; n_frequencies: Fourier features of :math:`\\log\\sigma/4`.

    ``forward(x, sigma, z)``: ``x`` ``(N, d)`` at VE levels ``sigma`` ``(N,)``, ``z`` ``(N, latent_dim)``; returns
    the predicted :math:`x_0` ``(N, d)``.
    """

    @accepts(dim=Int(ge=1), latent_dim=Int(ge=1), hidden=Int(ge=1), depth=Int(ge=1), n_frequencies=Int(ge=1),
             example=lambda ctx: {"dim": 2})
    def __init__(self, dim: int, latent_dim: int = LATENT_DIM, hidden: int = 128, depth: int = 3, *,
                 n_frequencies: int = 8):
        super().__init__()
        self.dim, self.latent_dim = dim, latent_dim
        self.register_buffer("frequencies", torch.arange(1, n_frequencies + 1, dtype=torch.float32) * math.pi / 2)
        self.net = _mlp(dim + latent_dim + 2 * n_frequencies, hidden, depth, dim, nn.SiLU)

    def forward(self, x: torch.Tensor, sigma, z: torch.Tensor) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        x_in = x * (1 + s.square()).rsqrt()[:, None]
        return self.net(torch.cat([x_in, z, _level_features(s, self.frequencies.to(x.dtype))], dim=-1))


class DDGANDiscriminator(nn.Module):
    """The time-conditional discriminator :math:`D_\\phi(x_{t-1}, x_t, t)` for low-dimensional data: an MLP with
    LeakyReLU(0.2) (the official code's activation) on both VP-scaled states and Fourier features of the level
    :math:`\\sigma` of :math:`x_t`.

    ``forward(x_prev, x, sigma, sigma_prev)``: ``x_prev`` ``(N, d)`` at VE levels ``sigma_prev`` ``(N,)``, ``x``
    ``(N, d)`` at ``sigma`` ``(N,)``; returns logits ``(N,)`` (real > 0).
    """

    @accepts(dim=Int(ge=1), hidden=Int(ge=1), depth=Int(ge=1), n_frequencies=Int(ge=1),
             example=lambda ctx: {"dim": 2})
    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, *, n_frequencies: int = 8):
        super().__init__()
        self.dim = dim
        self.register_buffer("frequencies", torch.arange(1, n_frequencies + 1, dtype=torch.float32) * math.pi / 2)
        self.net = _mlp(2 * dim + 2 * n_frequencies, hidden, depth, 1, lambda: nn.LeakyReLU(0.2))

    def forward(self, x_prev: torch.Tensor, x: torch.Tensor, sigma, sigma_prev) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        sp = torch.as_tensor(sigma_prev, dtype=x.dtype, device=x.device).expand(x.shape[0])
        h = torch.cat([x_prev * (1 + sp.square()).rsqrt()[:, None], x * (1 + s.square()).rsqrt()[:, None],
                       _level_features(s, self.frequencies.to(x.dtype))], dim=-1)
        return self.net(h).squeeze(-1)


def _posterior_sample(x, sigma, sigma_next, x0, noise):
    ratio = (sigma_next / sigma)[:, None]
    up = ratio * (sigma.square() - sigma_next.square()).clamp_min(0).sqrt()[:, None]
    return x0 + ratio.square() * (x - x0) + up * noise


def _example_levels(ctx) -> tuple[torch.Tensor, torch.Tensor]:
    """Four ordered level pairs (higher, lower) for the examples."""
    high = torch.tensor([2.0, 1.5, 1.0, 0.5], dtype=ctx.dtype)
    return high, torch.tensor([1.0, 1.0, 0.5, 0.0], dtype=ctx.dtype)


def _example_posterior(ctx) -> dict:
    sigma, sigma_next = _example_levels(ctx)
    return {"x": torch.randn(4, 2, generator=ctx.generator, dtype=ctx.dtype), "sigma": sigma,
            "sigma_next": sigma_next, "x0": torch.randn(4, 2, generator=ctx.generator, dtype=ctx.dtype),
            "noise": torch.randn(4, 2, generator=ctx.generator, dtype=ctx.dtype)}


def _example_pairs(ctx) -> dict:
    sigma, sigma_prev = _example_levels(ctx)
    return {"x0": torch.randn(4, 2, generator=ctx.generator, dtype=ctx.dtype), "sigma": sigma,
            "sigma_prev": sigma_prev}


def _example_r1(ctx) -> dict:
    x_real = torch.randn(4, 2, generator=ctx.generator, dtype=ctx.dtype).requires_grad_(True)
    return {"logits": (x_real.square().sum(-1) * 0.5), "x_real": x_real}


@accepts(x=Tensor("N", "d"), sigma=Tensor("N", positive_mass=True), sigma_next=Tensor("N", nonnegative=True),
         x0=Tensor("N", "d"), noise=Tensor("N", "d"), example=_example_posterior)
def posterior_sample(x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, x0: torch.Tensor,
                     noise: torch.Tensor) -> torch.Tensor:
    """A draw of the Gaussian posterior :math:`q(x_{next} \\mid x, x_0)` (module docstring) with one level per
    sample: ``x``, ``x0``, ``noise`` ``(N, d)``, ``sigma > 0`` and ``sigma_next <= sigma`` ``(N,)``; returns
    ``(N, d)``, differentiable in ``x0``. Equals DDPM's ancestral step (``ancestral_step(1.0)``) given ``x0``."""
    if bool((sigma <= 0).any()):
        raise ValueError("sigma must be > 0")
    if bool((sigma_next > sigma).any()):
        raise ValueError("sigma_next must be <= sigma")
    return _posterior_sample(x, sigma, sigma_next, x0, noise)


def _forward_pairs(x0, sigma, sigma_prev, generator):
    e1 = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    e2 = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    x_prev = x0 + sigma_prev[:, None] * e1
    return x_prev, x_prev + (sigma.square() - sigma_prev.square()).clamp_min(0).sqrt()[:, None] * e2


@accepts(x0=Tensor("N", "d", degenerate=("coincident",)), sigma=Tensor("N", positive_mass=True),
         sigma_prev=Tensor("N", nonnegative=True), generator=Generator(), example=_example_pairs)
def forward_pairs(x0: torch.Tensor, sigma: torch.Tensor, sigma_prev: torch.Tensor, *,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Real pairs of the forward chain: :math:`x_{prev} = x_0 + \\sigma_{prev}\\varepsilon_1` and
    :math:`x = x_{prev} + \\sqrt{\\sigma^2 - \\sigma_{prev}^2}\\,\\varepsilon_2`; ``x0`` ``(N, d)``, levels ``(N,)``
    with ``sigma_prev <= sigma``. Returns ``(x_prev, x)``."""
    if bool((sigma_prev > sigma).any()):
        raise ValueError("sigma_prev must be <= sigma")
    return _forward_pairs(x0, sigma, sigma_prev, generator)


def _r1_penalty(logits, x_real, gamma):
    (grad,) = torch.autograd.grad(logits.sum(), x_real, create_graph=True)
    return 0.5 * gamma * grad.flatten(1).square().sum(-1).mean()


@accepts(logits=Tensor("N"), x_real=Tensor("N", ..., degenerate=("coincident",)), gamma=Real(ge=0),
         example=_example_r1)
def r1_penalty(logits: torch.Tensor, x_real: torch.Tensor, gamma: float = R1_GAMMA) -> torch.Tensor:
    """The R1 penalty :math:`\\frac{\\gamma}{2} E\\,\\|\\nabla_x D(x)\\|^2` on real inputs: ``logits`` ``(N,)`` the
    discriminator's outputs on ``x_real`` ``(N, ...)``, which must require grad; a 0-dim tensor with its graph
    (so it trains the discriminator)."""
    if not x_real.requires_grad or logits.grad_fn is None:
        raise ValueError("x_real must require grad and logits must be computed from it")
    return _r1_penalty(logits, x_real, gamma)


class DDGANLosses(NamedTuple):
    """One training step's losses (floats): discriminator (real + fake + R1), its R1 part, and generator."""

    d_loss: float
    r1: float
    g_loss: float


@accepts(generator_net=Module(), discriminator=Module(), lr_g=Real(gt=0), lr_d=Real(gt=0),
         example=lambda ctx: {"generator_net": DDGANGenerator(2, 4, 8, 1).to(ctx.dtype),
                              "discriminator": DDGANDiscriminator(2, 8, 1).to(ctx.dtype)}, output="any")
def ddgan_optimizers(generator_net: nn.Module, discriminator: nn.Module, lr_g: float = LR_G, lr_d: float = LR_D
                     ) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """The paper's optimizers: Adam with :math:`(\\beta_1, \\beta_2) = (0.5, 0.9)` for G and D."""
    return (torch.optim.Adam(generator_net.parameters(), lr=lr_g, betas=ADAM_BETAS),
            torch.optim.Adam(discriminator.parameters(), lr=lr_d, betas=ADAM_BETAS))


def _train_step(G, D, opt_g, opt_d, x0, sigmas, r1_gamma, ignore_latent, generator):
    n, T = x0.shape[0], sigmas.shape[0] - 1

    def draw():
        i = torch.randint(0, T, (n,), generator=generator).to(x0.device)
        sigma, sigma_prev = sigmas[i], sigmas[i + 1]
        x_prev, x = _forward_pairs(x0, sigma, sigma_prev, generator)
        z = torch.randn(n, G.latent_dim, generator=generator, dtype=x0.dtype).to(x0.device)
        if ignore_latent:
            z = torch.zeros_like(z)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        fake = _posterior_sample(x, sigma, sigma_prev, G(x, sigma, z), noise)
        return x_prev, x, sigma, sigma_prev, fake

    # Discriminator: non-saturating losses and R1 on the real x_{t-1}.
    for p in D.parameters():
        p.requires_grad_(True)
    x_prev, x, sigma, sigma_prev, fake = draw()
    x_prev = x_prev.requires_grad_(True)
    real_logits = D(x_prev, x, sigma, sigma_prev)
    r1 = _r1_penalty(real_logits, x_prev, r1_gamma) if r1_gamma > 0 else real_logits.new_zeros(())
    d_loss = F.softplus(-real_logits).mean() + F.softplus(D(fake.detach(), x, sigma, sigma_prev)).mean() + r1
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    # Generator: fresh levels, pairs and latents, D frozen.
    for p in D.parameters():
        p.requires_grad_(False)
    _, x, sigma, sigma_prev, fake = draw()
    g_loss = F.softplus(-D(fake, x, sigma, sigma_prev)).mean()
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    for p in D.parameters():
        p.requires_grad_(True)
    return DDGANLosses(float(d_loss.detach()), float(r1.detach()), float(g_loss.detach()))


def _example_step(ctx):
    G, D = DDGANGenerator(2, 4, 8, 1).to(ctx.dtype), DDGANDiscriminator(2, 8, 1).to(ctx.dtype)
    opt_g, opt_d = ddgan_optimizers(G, D)
    return {"generator_net": G, "discriminator": D, "opt_g": opt_g, "opt_d": opt_d,
            "x0": torch.randn(6, 2, generator=ctx.generator, dtype=ctx.dtype),
            "sigmas": ddgan_sigmas(2, dtype=ctx.dtype)}


@accepts(generator_net=Module(), discriminator=Module(), opt_g=Instance(torch.optim.Optimizer, what="torch optimizer"),
         opt_d=Instance(torch.optim.Optimizer, what="torch optimizer"),
         x0=Tensor("N", "d", degenerate=("coincident",)), sigmas=Tensor("n", nonnegative=True),
         r1_gamma=Real(ge=0), ignore_latent=Flag(), generator=Generator(), example=_example_step, output="any")
def ddgan_train_step(generator_net: nn.Module, discriminator: nn.Module, opt_g: torch.optim.Optimizer,
                     opt_d: torch.optim.Optimizer, x0: torch.Tensor, sigmas: torch.Tensor, *,
                     r1_gamma: float = R1_GAMMA, ignore_latent: bool = False,
                     generator: torch.Generator | None = None) -> DDGANLosses:
    """One DDGAN iteration on the data batch ``x0`` ``(N, d)`` (the official training loop's order): a
    discriminator step on :math:`L_D` (module docstring), then a generator step on :math:`L_G` with fresh step
    indices, pairs and latents. Each sample's step :math:`i` is uniform on ``0..T-1``, from ``sigmas[i]`` to
    ``sigmas[i+1]`` (``sigmas`` ``(T + 1,)``, decreasing, ending in 0: :func:`ddgan_sigmas`).

    ``generator_net`` is a :class:`DDGANGenerator` (anything with ``latent_dim`` and ``forward(x, sigma, z)``),
    ``discriminator`` a :class:`DDGANDiscriminator`; ``opt_g``, ``opt_d`` their optimizers
    (:func:`ddgan_optimizers`). ``ignore_latent`` feeds :math:`z = 0` (an ablation: a deterministic
    :math:`x_0` predictor, so a Gaussian step). Returns :class:`DDGANLosses`."""
    _check_schedule(sigmas)
    if not hasattr(generator_net, "latent_dim"):
        raise TypeError("generator_net must have a latent_dim attribute (a DDGANGenerator)")
    return _train_step(generator_net, discriminator, opt_g, opt_d, x0, sigmas.to(x0.dtype), r1_gamma,
                       ignore_latent, generator)


def _check_schedule(sigmas):
    if sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must hold at least two levels (start and end), got {sigmas.shape[0]}")
    if float(sigmas[-1]) != 0 or bool((sigmas[:-1] <= 0).any()) or bool((sigmas[1:] >= sigmas[:-1]).any()):
        raise ValueError("sigmas must be decreasing, > 0, and end in 0 (ddgan_sigmas)")


def _example_sample(ctx):
    sigmas = ddgan_sigmas(2, dtype=ctx.dtype)
    return {"model": DDGANGenerator(2, 4, 8, 1).to(ctx.dtype), "sigmas": sigmas,
            "x": sigmas[0] * torch.randn(4, 2, generator=ctx.generator, dtype=ctx.dtype)}


@accepts(model=Function(), x=Tensor("N", "d"), sigmas=Tensor("n", nonnegative=True), generator=Generator(),
         callback=Function(optional=True), progress=Flag(), latent_dim=Int(ge=1, optional=True),
         ignore_latent=Flag(), example=_example_sample)
@torch.no_grad()
def sample_ddgan(model, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator | None = None,
                 callback=None, progress: bool = False, latent_dim: int | None = None,
                 ignore_latent: bool = False) -> torch.Tensor:
    """DDGAN's sampler: at each level :math:`x_0' = G(x, z, \\sigma)` with a fresh :math:`z \\sim \\mathcal N(0,
    I)`, then the posterior step :math:`x_{next} \\sim q(x_{next} \\mid x, x_0')` (DDPM's ancestral step).

    ``model(x, sigma, z)`` is the generator (:class:`DDGANGenerator`), ``x`` ``(N, d)`` the start at
    ``sigmas[0]`` (``sigmas[0]`` times unit noise), ``sigmas`` ``(T + 1,)`` decreasing to 0 (:func:`ddgan_sigmas`:
    sample on the levels trained on); ``latent_dim`` defaults to ``model.latent_dim``; ``ignore_latent`` feeds
    ``z = 0``. ``T`` generator evaluations; returns ``(N, d)``. With an exact :math:`x_0` predictor that ignores
    :math:`z` this is :func:`~paperzoo.diffusion.samplers.sample_ddpm`."""
    own = getattr(model, "latent_dim", None)
    if latent_dim is None:
        latent_dim = own
        if latent_dim is None:
            raise ValueError("latent_dim must be given when model has no latent_dim attribute")
    elif own is not None and latent_dim != own:
        raise ValueError(f"latent_dim must equal model.latent_dim ({own}), got {latent_dim}")

    def denoiser(x_, sigma):
        z = torch.randn(x_.shape[0], latent_dim, generator=generator, dtype=x_.dtype).to(x_.device)
        return model(x_, sigma, torch.zeros_like(z) if ignore_latent else z)

    return run_sampler(denoiser, x, sigmas, ancestral_step(1.0), generator=generator, callback=callback,
                       progress=progress)
