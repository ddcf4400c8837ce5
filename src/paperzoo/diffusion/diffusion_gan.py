"""Diffusion-GAN: a GAN whose discriminator judges diffused real and generated samples, with an adaptive chain length.

References: Diffusion-GAN: Training GANs with Diffusion, 2023 (Wang, Zheng, He, Chen, Zhou; ICLR 2023).

Instance noise (the paper's Eq. 1 forward process, with the noise scale :math:`\\sigma` of its code): for a chain of
length :math:`T` with linear :math:`\\beta_1..\\beta_T` from ``beta_start`` to ``beta_end`` (re-spaced whenever
:math:`T` changes) and :math:`\\bar\\alpha_0 = 1`,

.. math::
    y = \\sqrt{\\bar\\alpha_t}\\, x + \\sqrt{1 - \\bar\\alpha_t}\\,\\sigma\\,\\varepsilon, \\qquad t \\in \\{0, .., T\\},

applied to real and generated samples alike; the discriminator sees :math:`(y, t)`. In paperzoo's VE convention
this is the state :math:`x + \\sigma_{VE}\\varepsilon` scaled by :math:`\\alpha_t = \\sqrt{\\bar\\alpha_t}` with
:math:`\\sigma_{VE} = \\sigma\\sqrt{1-\\bar\\alpha_t}/\\sqrt{\\bar\\alpha_t}` (:func:`instance_noise_levels`), so a
mixture's diffused law is ``GaussianMixture.marginal(alpha_t, sigma * sqrt(1 - abar_t))``.

Timesteps (:func:`sample_diffusion_timesteps`): as in the official code, half of the discriminator's draws are
undiffused (:math:`t = 0`); the other half come from :math:`\\{1..T\\}` either uniformly or with the ``"priority"``
weights :math:`P(t) \\propto t - 1` (favouring long chains).

Adaptive length (:class:`AdaptiveT`, the paper's Eq. 7): every ``interval`` steps the discriminator's overfitting
measure :math:`r_d = E[\\operatorname{sign}(D(y_{real}, t))]` moves a progress :math:`p \\in [0, 1]` by
:math:`\\operatorname{sign}(r_d - d_{target})\\, C`, and
:math:`T = \\operatorname{clip}(T_{min} + \\operatorname{round}(p (T_{max} - T_{min})), T_{min}, T_{max})`.

The training loop (:func:`train_diffusion_gan`) uses the non-saturating GAN loss for both players; with
``schedule=None`` (or a schedule pinned at :math:`T = 0`) it is the plain GAN, draw for draw.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from paperzoo.core.accepts import Choice, Function, Generator, Instance, Int, Module, Real, Tensor, accepts
from paperzoo.core.checks import check_number

__all__ = ["diffusion_gan_alphas_cumprod", "instance_noise_levels", "sample_diffusion_timesteps", "diffuse",
           "AdaptiveT", "TimeConditionedMLP", "train_diffusion_gan", "TIMESTEP_DISTRIBUTIONS"]

#: the official code's timestep distributions over 1..T
TIMESTEP_DISTRIBUTIONS = ("priority", "uniform")


@accepts(T=Int(ge=0), beta_start=Real(gt=0, lt=1), beta_end=Real(gt=0, lt=1))
def diffusion_gan_alphas_cumprod(T: int, beta_start: float = 1e-4, beta_end: float = 0.02, *,
                                 dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """:math:`\\bar\\alpha_0 = 1, \\bar\\alpha_1, .., \\bar\\alpha_T` of a length-``T`` linear chain: ``(T + 1,)``.

    The betas are re-spaced over ``T`` steps (not truncated from a fixed chain), as in the official code.

    >>> diffusion_gan_alphas_cumprod(2, 0.1, 0.3).tolist()
    [1.0, 0.9, 0.63]
    """
    return _alphas_cumprod(T, beta_start, beta_end, dtype)


def _alphas_cumprod(T, beta_start, beta_end, dtype):
    betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)]).to(dtype)


@accepts(alphas_cumprod=Tensor("T1", positive_mass=True,
                               example=lambda ctx: diffusion_gan_alphas_cumprod(5, dtype=ctx.dtype)),
         noise_std=Real(gt=0))
def instance_noise_levels(alphas_cumprod: torch.Tensor, noise_std: float = 0.05
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(alpha_t, sigma_t, sigma_ve)``, each ``(T + 1,)``: the scaled state :math:`\\alpha_t x + \\sigma_t\\varepsilon`
    with :math:`\\alpha_t = \\sqrt{\\bar\\alpha_t}`, :math:`\\sigma_t = \\sigma\\sqrt{1-\\bar\\alpha_t}` (``noise_std``
    :math:`= \\sigma`, default 0.05 as in the official code), and its VE level :math:`\\sigma_t / \\alpha_t`."""
    if bool((alphas_cumprod <= 0).any()) or bool((alphas_cumprod > 1).any()):
        raise ValueError("alphas_cumprod must lie in (0, 1]")
    alpha = alphas_cumprod.sqrt()
    sigma_t = noise_std * (1 - alphas_cumprod).clamp_min(0).sqrt()
    return alpha, sigma_t, sigma_t / alpha


@accepts(n=Int(ge=1), T=Int(ge=0), dist=Choice(*TIMESTEP_DISTRIBUTIONS), clean_fraction=Real(ge=0, le=1),
         generator=Generator(), example=lambda ctx: {"n": 5, "T": 10})
def sample_diffusion_timesteps(n: int, T: int, dist: str = "priority", *, clean_fraction: float = 0.5,
                               generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` timesteps in ``{0, .., T}`` (``torch.long``, ``(n,)``): 0 with probability ``clean_fraction`` (0.5, the
    official code's 32 of 64), else from ``dist`` over ``{1, .., T}`` (``"priority"``: :math:`P(t) \\propto t - 1`;
    ``"uniform"``). ``T = 0`` gives all zeros; ``"priority"`` with ``T = 1`` has no mass and is rejected."""
    if dist == "priority" and T == 1:
        raise ValueError("T must be >= 2 for dist='priority' (its weights t - 1 vanish at T = 1), got 1")
    return _sample_timesteps(n, T, dist, clean_fraction, generator)


def _sample_timesteps(n, T, dist, clean_fraction, generator):
    if T == 0:
        return torch.zeros(n, dtype=torch.long)
    steps = torch.arange(1, T + 1, dtype=torch.float64)
    weights = steps - 1 if dist == "priority" else torch.ones_like(steps)
    t = torch.multinomial(weights, n, replacement=True, generator=generator) + 1
    clean = torch.rand(n, generator=generator, dtype=torch.float64) < clean_fraction
    return torch.where(clean, torch.zeros_like(t), t)


@accepts(x=Tensor("N", "d"), t=Tensor("N", dtype="int", nonnegative=True, low=0),
         alphas_cumprod=Tensor("T1", positive_mass=True), noise_std=Real(gt=0), generator=Generator(),
         example=lambda ctx: {"x": torch.randn(4, 2, generator=ctx.generator, dtype=ctx.dtype),
                              "t": torch.tensor([0, 1, 2, 3]),
                              "alphas_cumprod": diffusion_gan_alphas_cumprod(3, dtype=ctx.dtype)})
def diffuse(x: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor, noise_std: float = 0.05, *,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """The instance noise :math:`y = \\sqrt{\\bar\\alpha_t} x + \\sqrt{1-\\bar\\alpha_t}\\,\\sigma\\varepsilon`.

    Args:
        x: samples ``(N, d)``; t: their timesteps ``(N,)`` in ``{0, .., T}``; alphas_cumprod: ``(T + 1,)`` from
            :func:`diffusion_gan_alphas_cumprod`; noise_std: :math:`\\sigma`.
    Returns:
        ``y``, shape ``(N, d)``.

    >>> y = diffuse(torch.ones(2, 1, dtype=torch.float64), torch.tensor([0, 0]), diffusion_gan_alphas_cumprod(3))
    >>> y.tolist()  # t = 0 leaves the samples unchanged
    [[1.0], [1.0]]
    """
    if int(t.max()) >= alphas_cumprod.shape[0]:
        raise ValueError(f"t must be <= T = {alphas_cumprod.shape[0] - 1} (the chain length), got {int(t.max())}")
    return _diffuse(x, t, alphas_cumprod, noise_std, generator)


def _diffuse(x, t, alphas_cumprod, noise_std, generator):
    abar = alphas_cumprod[t].to(x.dtype)[:, None]
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return abar.sqrt() * x + (1 - abar).sqrt() * noise_std * eps


class AdaptiveT:
    """The adaptive chain length of Diffusion-GAN (Eq. 7): ``T`` follows the discriminator's overfitting.

    Args:
        t_min, t_max: :math:`T_{min}, T_{max}` (official defaults 10 and 1000).
        d_target: :math:`d_{target}` (0.6).
        rate: :math:`C`, the change of the progress ``p`` per update (the official code's
            ``batch * interval / (ada_kimg * 1000)``).
        p: initial progress (0: start at :math:`T_{min}`).

    >>> s = AdaptiveT(10, 1000, rate=0.1)
    >>> s.update(0.9), s.update(0.9), s.update(0.0)  # overfitting raises T, a confused D lowers it
    (109, 208, 109)
    """

    @accepts(t_min=Int(ge=0), t_max=Int(ge=0), d_target=Real(ge=-1, le=1), rate=Real(ge=0), p=Real(ge=0, le=1))
    def __init__(self, t_min: int = 10, t_max: int = 1000, *, d_target: float = 0.6, rate: float = 0.01,
                 p: float = 0.0):
        if t_max < t_min:
            raise ValueError(f"t_max must be >= t_min ({t_min}), got {t_max}")
        self.t_min, self.t_max, self.d_target, self.rate, self.p = t_min, t_max, d_target, rate, float(p)

    @property
    def T(self) -> int:
        """The current chain length."""
        T = self.t_min + round(self.p * (self.t_max - self.t_min))
        return int(min(max(T, self.t_min), self.t_max))

    def update(self, r_d: float) -> int:
        """Move ``p`` by :math:`\\operatorname{sign}(r_d - d_{target}) C` (clipped to [0, 1]); return the new ``T``."""
        r_d = check_number("r_d", r_d, low=-1.0, high=1.0)
        step = (r_d > self.d_target) - (r_d < self.d_target)
        self.p = min(max(self.p + step * self.rate, 0.0), 1.0)
        return self.T

    def __repr__(self) -> str:
        return f"AdaptiveT(t_min={self.t_min}, t_max={self.t_max}, d_target={self.d_target}, p={self.p:.4g})"


class TimeConditionedMLP(nn.Module):
    """An MLP ``f(x, t)`` on ``[x, t / t_scale]`` (SiLU): the discriminator of the 2-D experiments (``out_dim = 1``).

    Args:
        in_dim: ``d``; out_dim: output size; hidden, depth: width and number of hidden layers;
        t_scale: divides the timestep (use :math:`T_{max}`).
    """

    @accepts(in_dim=Int(ge=1), out_dim=Int(ge=1), hidden=Int(ge=1), depth=Int(ge=1), t_scale=Real(gt=0))
    def __init__(self, in_dim: int, out_dim: int = 1, hidden: int = 128, depth: int = 3, *, t_scale: float = 1000.0):
        super().__init__()
        layers, width = [], in_dim + 1
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        self.net, self.t_scale = nn.Sequential(*layers), float(t_scale)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = (t.to(x.dtype) / self.t_scale)[:, None]
        return self.net(torch.cat([x, tt], dim=-1))


@accepts(generator_net=Module(), discriminator=Module(), sample_data=Function(), steps=Int(ge=0),
         batch_size=Int(ge=1), latent_dim=Int(ge=1), lr=Real(gt=0), lr_d=Real(gt=0, optional=True),
         schedule=Instance(AdaptiveT, optional=True), dist=Choice(*TIMESTEP_DISTRIBUTIONS),
         noise_std=Real(gt=0), interval=Int(ge=1), generator=Generator(), callback=Function(optional=True),
         example=lambda ctx: {"generator_net": nn.Linear(2, 2).to(ctx.dtype),
                              "discriminator": TimeConditionedMLP(2, hidden=8, depth=1, t_scale=20).to(ctx.dtype),
                              "sample_data": lambda n, g: torch.randn(n, 2, generator=g, dtype=ctx.dtype),
                              "steps": 3, "batch_size": 8, "schedule": AdaptiveT(2, 20, rate=0.5)})
def train_diffusion_gan(generator_net: nn.Module, discriminator: nn.Module,
                        sample_data: Callable[[int, torch.Generator], torch.Tensor], *, steps: int,
                        batch_size: int = 256, latent_dim: int = 2, lr: float = 2e-4, lr_d: float | None = None,
                        schedule: AdaptiveT | None = None, dist: str = "priority", noise_std: float = 0.05,
                        interval: int = 4, generator: torch.Generator | None = None,
                        callback: Callable | None = None) -> list[int]:
    """Train a Diffusion-GAN in place (non-saturating loss, Adam with betas (0.5, 0.999)); return ``T`` per step.

    Each step: ``y_real = diffuse(x, t)``, ``y_fake = diffuse(G(z), t')`` with independent timesteps from
    :func:`sample_diffusion_timesteps` at the current ``T``; the discriminator minimises
    :math:`\\operatorname{softplus}(-D(y_{real}, t)) + \\operatorname{softplus}(D(y_{fake}, t'))`, then the generator
    :math:`\\operatorname{softplus}(-D(y_{fake}, t'))` through the diffusion (reparametrised, so differentiable).
    Every ``interval`` steps the mean of :math:`\\operatorname{sign}(D(y_{real}, t))` over those steps updates
    ``schedule``. ``schedule=None`` is the plain GAN (``T = 0``, the discriminator sees ``t = 0``).

    Args:
        generator_net: ``G(z)``, ``(n, latent_dim) -> (n, d)``. discriminator: ``D(y, t) -> (n, 1)``.
        sample_data: ``sample_data(n, generator) -> (n, d)`` real samples.
        callback: ``callback(step, generator_net, discriminator, T)`` after each step (steps count from 1).
    """
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    opt_g = torch.optim.Adam(generator_net.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr if lr_d is None else lr_d, betas=(0.5, 0.999))
    dtype = next(generator_net.parameters()).dtype
    try:
        with torch.no_grad():
            generator_net(torch.zeros(2, latent_dim, dtype=dtype))
    except RuntimeError as error:
        raise ValueError(f"latent_dim ({latent_dim}) must be generator_net's input width: {error}") from None
    softplus = nn.functional.softplus
    T = 0 if schedule is None else schedule.T
    abar = _alphas_cumprod(T, 1e-4, 0.02, dtype)
    signs, history = [], []
    for step in range(1, steps + 1):
        x = sample_data(batch_size, g).to(dtype)
        z = torch.randn(batch_size, latent_dim, generator=g, dtype=dtype)
        fake = generator_net(z)
        if T > 0:
            t_real = _sample_timesteps(batch_size, T, dist, 0.5, g)
            t_fake = _sample_timesteps(batch_size, T, dist, 0.5, g)
            y_real, y_fake = _diffuse(x, t_real, abar, noise_std, g), _diffuse(fake, t_fake, abar, noise_std, g)
        else:
            t_real = t_fake = torch.zeros(batch_size, dtype=torch.long)
            y_real, y_fake = x, fake
        d_real = discriminator(y_real, t_real)
        loss_d = softplus(-d_real).mean() + softplus(discriminator(y_fake.detach(), t_fake)).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = softplus(-discriminator(y_fake, t_fake)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        signs.append(float(torch.sign(d_real.detach()).mean()))
        history.append(T)
        if schedule is not None and step % interval == 0:
            new_T = schedule.update(sum(signs) / len(signs))
            signs = []
            if new_T != T:
                T, abar = new_T, _alphas_cumprod(new_T, 1e-4, 0.02, dtype)
        if callback is not None:
            callback(step, generator_net, discriminator, T)
    return history
