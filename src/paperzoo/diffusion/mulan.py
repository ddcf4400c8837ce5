"""MuLAN: a learned multivariate, input-conditioned noise schedule for variational diffusion.

References: Diffusion Models With Learned Adaptive Noise, 2024 (Sahoo, Gokaslan, De Sa, Kuleshov).

MuLAN replaces VDM's scalar log-SNR :math:`\\gamma(t)` by one per data dimension that also depends on an
auxiliary latent :math:`c` inferred from the input, :math:`\\gamma_\\phi(c, t) \\in \\mathbb R^D`, and bounds

.. math::
    -\\log p(x) \\le \\mathrm{KL}\\bigl(q_\\phi(c \\mid x)\\,\\|\\,p(c)\\bigr)
        + E_{c \\sim q_\\phi(c \\mid x)}\\bigl[\\mathcal L_{\\text{VDM}}(x;\\, \\gamma_\\phi(c, \\cdot),\\,
        \\hat\\varepsilon_\\theta(\\cdot, \\cdot, c))\\bigr],

where :math:`\\mathcal L_{\\text{VDM}}` is the continuous-time negative ELBO of
:func:`paperzoo.diffusion.vdm.vdm_nelbo` (prior + reconstruction + diffusion) with the per-dimension schedule
:math:`t \\mapsto \\gamma_\\phi(c, t)` and an eps-model that sees :math:`c`. The generative model draws
:math:`c \\sim p(c)` first, so the KL term pays for the information the schedule takes from :math:`x`.

Schedule (:class:`PolynomialNoiseSchedule`, the official ``poly_fixedend``): per dimension :math:`d`, an MLP of
:math:`c` gives :math:`a_d, b_d` (free) and :math:`k_d = 10^{-3} + \\operatorname{softplus}(\\cdot) > 0`, and

.. math::
    \\gamma_d(c, t) = \\gamma_{\\min} + (\\gamma_{\\max} - \\gamma_{\\min})\\, \\frac{P_d(t)}{P_d(1)}, \\qquad
    P_d(t) = \\int_0^t (a_d s^2 + b_d s + k_d)^2\\, ds
    = \\tfrac{a^2}{5} t^5 + \\tfrac{ab}{2} t^4 + \\tfrac{b^2 + 2ak}{3} t^3 + bk\\, t^2 + k^2 t,

nondecreasing in :math:`t` (the derivative is a square) with the endpoints :math:`\\gamma_{\\min}, \\gamma_{\\max}`
fixed for every dimension and context (VDM's defaults :math:`-13.3, 5`). Context
(:class:`GaussianContextEncoder`, the official ``latent_type="gaussian"``): :math:`q_\\phi(c \\mid x) =
\\mathcal N(\\mu_\\phi(x), \\operatorname{diag} v_\\phi(x))`, :math:`v = \\operatorname{softplus}(\\cdot)`, prior
:math:`p(c) = \\mathcal N(0, I)`, KL :math:`\\tfrac12 \\sum_j (\\mu_j^2 + v_j - 1 - \\log v_j)`
(:func:`gaussian_context_kl`); one reparametrised draw :math:`c = \\mu + \\sqrt v\\, \\xi` per sample.

Callable conventions (extending :mod:`~paperzoo.diffusion.vdm`'s):

- ``schedule(t, c) -> gamma``: ``t`` ``(N,)``, ``c`` ``(N, K)`` or ``None``, to ``(N,)`` or ``(N, D)``.
- ``eps_model(z, t, gamma, c) -> eps_hat`` ``(N, D)`` (:class:`MuLANEpsNetwork` via :func:`mulan_eps_model`).
- ``context_encoder(x) -> (mu, var)``, each ``(N, K)``; ``None``: no context (``c = None``, KL 0).

Example:
    >>> import torch
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> x = torch.randn(64, 3, dtype=torch.float64) * torch.tensor([0.1, 1.0, 0.5], dtype=torch.float64)
    >>> enc = GaussianContextEncoder(3, latent_size=4, hidden=16).double()
    >>> sched = PolynomialNoiseSchedule(3, context_dim=4, n_features=16).double()
    >>> net = MuLANEpsNetwork(3, context_dim=4, hidden=32).double()
    >>> terms = mulan_nelbo(mulan_eps_model(net), sched, x, context_encoder=enc,
    ...                     generator=torch.Generator().manual_seed(1))
    >>> terms.total.shape, bool((terms.kl_context >= 0).all())
    (torch.Size([64]), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.accepts import Flag, Function, Generator, Instance, Int, Module, Real, Tensor, accepts
from paperzoo.diffusion import vdm as _vdm

__all__ = ["PolynomialNoiseSchedule", "GaussianContextEncoder", "MuLANEpsNetwork", "MuLANTerms",
           "gaussian_context_kl", "mulan_eps_model", "mulan_nelbo", "train_mulan"]

GAMMA_MIN, GAMMA_MAX = -13.3, 5.0  # official configs (VDM's)


class MuLANTerms(NamedTuple):
    """MuLAN's negative ELBO of each sample and its parts, all ``(N,)`` in nats (``total`` = the sum)."""

    total: torch.Tensor
    kl_context: torch.Tensor
    prior: torch.Tensor
    reconstruction: torch.Tensor
    diffusion: torch.Tensor


def _check_range(gamma_min, gamma_max):
    if not gamma_max > gamma_min:
        raise ValueError(f"gamma_max must be > gamma_min ({gamma_min!r}), got {gamma_max!r}")


# -- schedule ----------------------------------------------------------------------------------------------------------
class PolynomialNoiseSchedule(nn.Module):
    """MuLAN's monotone polynomial schedule :math:`\\gamma_\\phi(c, t)` per dimension (module docstring).

    Args:
        dim: :math:`D`, the data dimension (the number of polynomials unless ``shared``).
        context_dim: :math:`K`, the width of :math:`c`; ``0``: context-free (the coefficients are learned
            constants: the MLP sees a zero input, so only its biases matter).
        n_features: width of the two swish layers of the coefficient MLP (official: :math:`D`); ``None``:
            :math:`\\max(D, 16)`.
        gamma_min, gamma_max: the fixed endpoints :math:`\\gamma(c, 0)`, :math:`\\gamma(c, 1)`.
        shared: one polynomial for all dimensions (a scalar schedule broadcast to ``(N, D)``).

    The output head of :math:`a` is zero-initialised (official), so the initial schedule is a cubic.
    ``forward(t, c=None)``: ``t`` ``(N,)`` in :math:`[0, 1]`, ``c`` ``(N, K)`` -> ``gamma`` ``(N, D)``.
    ``coefficients(c, n)`` returns :math:`(a, b, k)`, each ``(n, D)`` (or ``(n, 1)`` if ``shared``).
    """

    @accepts(dim=Int(ge=1), context_dim=Int(ge=0), n_features=Int(ge=1, optional=True), gamma_min=Real(),
             gamma_max=Real(), shared=Flag(), example=lambda ctx: {"dim": 2})
    def __init__(self, dim: int, context_dim: int = 0, n_features: int | None = None, *,
                 gamma_min: float = GAMMA_MIN, gamma_max: float = GAMMA_MAX, shared: bool = False):
        super().__init__()
        _check_range(gamma_min, gamma_max)
        self.dim, self.context_dim, self.shared = dim, context_dim, shared
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)
        width = max(dim, 16) if n_features is None else n_features
        n_out = 1 if shared else dim
        self.l1 = nn.Linear(max(context_dim, 1), width)
        self.l2 = nn.Linear(width, width)
        self.head_a, self.head_b, self.head_k = (nn.Linear(width, n_out) for _ in range(3))
        nn.init.zeros_(self.head_a.weight)
        nn.init.zeros_(self.head_a.bias)

    def coefficients(self, c: torch.Tensor | None, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if c is None:
            if self.context_dim:
                raise ValueError(f"this schedule needs a context c of width {self.context_dim}, got None")
            c = torch.zeros(n, 1, dtype=self.l1.weight.dtype, device=self.l1.weight.device)
        elif self.context_dim == 0:
            raise ValueError("this schedule is context-free (context_dim=0); pass c=None")
        elif c.dim() != 2 or c.shape != (n, self.context_dim):
            raise ValueError(f"c must have shape ({n}, {self.context_dim}), got {tuple(c.shape)}")
        h = F.silu(self.l2(F.silu(self.l1(c))))
        return self.head_a(h), self.head_b(h), 1e-3 + F.softplus(self.head_k(h))

    def forward(self, t: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if t.dim() != 1:
            raise ValueError(f"t must have shape (N,), got {tuple(t.shape)}")
        a, b, k = self.coefficients(c, t.shape[0])
        frac = _poly(a, b, k, t[:, None]) / _poly(a, b, k, 1.0)
        gamma = self.gamma_min + (self.gamma_max - self.gamma_min) * frac
        return gamma.expand(-1, self.dim) if self.shared else gamma

    def derivative(self, t: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """The closed-form :math:`\\partial_t \\gamma_\\phi(c, t)` ``(N, D)``
        (:math:`(\\gamma_{\\max} - \\gamma_{\\min})(a t^2 + b t + k)^2 / P(1)`)."""
        a, b, k = self.coefficients(c, t.shape[0])
        tt = t[:, None]
        d = (self.gamma_max - self.gamma_min) * (a * tt * tt + b * tt + k).square() / _poly(a, b, k, 1.0)
        return d.expand(-1, self.dim) if self.shared else d


def _poly(a, b, k, t):
    """:math:`P(t) = \\int_0^t (a s^2 + b s + k)^2 ds` (Horner form)."""
    return t * (k * k + t * (b * k + t * ((b * b + 2 * a * k) / 3 + t * (a * b / 2 + t * (a * a / 5)))))


# -- context -----------------------------------------------------------------------------------------------------------
class GaussianContextEncoder(nn.Module):
    """:math:`q_\\phi(c \\mid x) = \\mathcal N(\\mu_\\phi(x), \\operatorname{diag} v_\\phi(x))`, an MLP with swish
    activations and softplus variances (the official ``latent_type="gaussian"`` encoder is a U-Net).

    Args:
        dim: :math:`D`; latent_size: :math:`K` (official: 50); hidden, depth: the MLP.

    ``forward(x)``: ``(N, D)`` -> ``(mu, var)``, each ``(N, K)``, ``var > 0``.
    """

    @accepts(dim=Int(ge=1), latent_size=Int(ge=1), hidden=Int(ge=1), depth=Int(ge=1), example=lambda ctx: {"dim": 2})
    def __init__(self, dim: int, latent_size: int = 50, hidden: int = 64, depth: int = 2):
        super().__init__()
        layers, width = [], dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.mu, self.raw_var = nn.Linear(hidden, latent_size), nn.Linear(hidden, latent_size)
        self.dim, self.latent_size = dim, latent_size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.mu(h), F.softplus(self.raw_var(h))


@accepts(mu=Tensor("N", "K"), var=Tensor("N", "K", positive_mass=True),
         example=lambda ctx: {"mu": torch.randn(4, 3, generator=ctx.generator, dtype=ctx.dtype),
                              "var": torch.rand(4, 3, generator=ctx.generator, dtype=ctx.dtype) + 0.1})
def gaussian_context_kl(mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """:math:`\\mathrm{KL}(\\mathcal N(\\mu, \\operatorname{diag} v) \\| \\mathcal N(0, I))` per row ``(N,)``, nats."""
    if bool((var <= 0).any()):
        raise ValueError("var must be > 0 entrywise")
    return _kl(mu, var)


def _kl(mu, var):
    return 0.5 * (mu.square() + var - 1 - var.log()).sum(-1)


# -- eps network -------------------------------------------------------------------------------------------------------
class MuLANEpsNetwork(nn.Module):
    """An eps-predicting MLP conditioned on the (normalised) schedule value and the context:
    input :math:`[z,\\ 2(\\gamma - \\gamma_{\\min})/(\\gamma_{\\max} - \\gamma_{\\min}) - 1,\\ c]`.

    Args:
        dim: :math:`D`; context_dim: :math:`K` (``0``: no context input); hidden, depth: the MLP (swish).
        per_dim_gamma: ``True``: takes the ``(N, D)`` schedule (MuLAN); ``False``: a scalar ``(N,)`` one (VDM).
        gamma_min, gamma_max: the normalisation of :math:`\\gamma`.

    ``forward(z, gamma, c=None) -> eps_hat`` ``(N, D)``; the last layer is zero-initialised.
    """

    @accepts(dim=Int(ge=1), context_dim=Int(ge=0), hidden=Int(ge=1), depth=Int(ge=1), per_dim_gamma=Flag(),
             gamma_min=Real(), gamma_max=Real(), example=lambda ctx: {"dim": 2})
    def __init__(self, dim: int, context_dim: int = 0, hidden: int = 64, depth: int = 2, *,
                 per_dim_gamma: bool = True, gamma_min: float = GAMMA_MIN, gamma_max: float = GAMMA_MAX):
        super().__init__()
        _check_range(gamma_min, gamma_max)
        self.dim, self.context_dim, self.per_dim_gamma = dim, context_dim, per_dim_gamma
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)
        layers, width = [], dim + (dim if per_dim_gamma else 1) + context_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        out = nn.Linear(hidden, dim)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(*layers, out)

    def forward(self, z: torch.Tensor, gamma: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        g = 2 * (gamma - self.gamma_min) / (self.gamma_max - self.gamma_min) - 1
        if self.per_dim_gamma:
            if g.dim() == 1:
                g = g[:, None].expand(-1, self.dim)
        elif g.dim() == 2:
            raise ValueError("this network takes a scalar schedule (per_dim_gamma=False); got gamma of shape "
                             f"{tuple(g.shape)}")
        else:
            g = g[:, None]
        parts = [z, g]
        if self.context_dim:
            if c is None:
                raise ValueError(f"this network needs a context c of width {self.context_dim}, got None")
            parts.append(c)
        return self.net(torch.cat(parts, -1))


@accepts(network=Instance(MuLANEpsNetwork), example=lambda ctx: {"network": MuLANEpsNetwork(2).to(ctx.dtype)})
def mulan_eps_model(network: MuLANEpsNetwork) -> Callable:
    """``eps_model(z, t, gamma, c)`` of a :class:`MuLANEpsNetwork` (``t`` unused: it sees :math:`\\gamma`)."""
    return lambda z, t, gamma, c: network(z, gamma, c)


# -- the bound ---------------------------------------------------------------------------------------------------------
def _mulan_terms(eps_model, schedule, x, t, noise, context_encoder, context_noise, generator=None):
    """Unchecked :func:`mulan_nelbo` (training loops); ``context_noise=None`` draws it from ``generator``."""
    if context_encoder is None:
        c, kl = None, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    else:
        mu, var = context_encoder(x)
        if context_noise is None:
            context_noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
        elif context_noise.shape != mu.shape:
            raise ValueError(f"context_noise must have the shape of c, {tuple(mu.shape)}, got "
                             f"{tuple(context_noise.shape)}")
        c, kl = mu + var.sqrt() * context_noise, _kl(mu, var)
    terms = _vdm._terms(lambda z, tt, g: eps_model(z, tt, g, c), lambda tt: schedule(tt, c), x, t, noise, None)
    return MuLANTerms(terms.total + kl, kl, terms.prior, terms.reconstruction, terms.diffusion)


def _example_nelbo(ctx):
    return {"eps_model": lambda z, t, g, c: torch.zeros_like(z),
            "schedule": PolynomialNoiseSchedule(2, context_dim=3, n_features=8).to(ctx.dtype),
            "x": torch.randn(6, 2, generator=ctx.generator, dtype=ctx.dtype),
            "context_encoder": GaussianContextEncoder(2, latent_size=3, hidden=8).to(ctx.dtype)}


@accepts(eps_model=Function(), schedule=Function(), x=Tensor("N", "D", degenerate=("coincident",)),
         context_encoder=Function(optional=True), t=Tensor("N", optional=True), noise=Tensor("N", "D", optional=True),
         context_noise=Tensor("N", "K", optional=True), antithetic=Flag(), generator=Generator(),
         example=_example_nelbo)
def mulan_nelbo(eps_model: Callable, schedule: Callable, x: torch.Tensor, *, context_encoder: Callable | None = None,
                t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                context_noise: torch.Tensor | None = None, antithetic: bool = True,
                generator: torch.Generator | None = None) -> MuLANTerms:
    """MuLAN's negative ELBO of each sample (module docstring), a :class:`MuLANTerms` of ``(N,)`` nats.

    Args:
        eps_model: ``eps_model(z, t, gamma, c) -> (N, D)``; schedule: ``schedule(t, c) -> (N,)`` or ``(N, D)``.
        x: data ``(N, D)``.
        context_encoder: ``x -> (mu, var)`` of :math:`q(c \\mid x)` ``(N, K)`` each; ``None``: no context.
        t, noise: the diffusion times ``(N,)`` in :math:`[0, 1]` and :math:`\\varepsilon` ``(N, D)``; drawn when
            omitted (VDM's antithetic times unless ``antithetic=False``).
        context_noise: :math:`\\xi` ``(N, K)`` of the reparametrised draw :math:`c = \\mu + \\sqrt v\\, \\xi`;
            drawn when omitted.

    One draw of :math:`c`, :math:`t` and :math:`\\varepsilon` per sample: an unbiased estimate of the bound whose
    gradient trains the eps-model, the schedule and the context encoder. The diffusion, prior and
    reconstruction terms are :func:`paperzoo.diffusion.vdm.vdm_nelbo`'s for the schedule ``t -> schedule(t, c)``.
    """
    if t is not None and bool(((t < 0) | (t > 1)).any()):
        raise ValueError("t must lie in [0, 1] entrywise")
    if context_noise is not None and context_encoder is None:
        raise ValueError("context_noise given without a context_encoder")
    n = x.shape[0]
    if t is None:
        t = _vdm._sample_times(n, antithetic, generator, x.dtype).to(x.device)
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return _mulan_terms(eps_model, schedule, x, t, noise, context_encoder, context_noise, generator)


# -- training ----------------------------------------------------------------------------------------------------------
def _example_train(ctx):
    net = MuLANEpsNetwork(2, context_dim=2, hidden=8).to(ctx.dtype)
    sched = PolynomialNoiseSchedule(2, context_dim=2, n_features=8).to(ctx.dtype)
    enc = GaussianContextEncoder(2, latent_size=2, hidden=8).to(ctx.dtype)
    return {"model": nn.ModuleList([net, sched, enc]), "eps_model": mulan_eps_model(net), "schedule": sched,
            "sample_data": lambda n, g: torch.randn(n, 2, generator=g, dtype=ctx.dtype), "context_encoder": enc,
            "steps": 2, "batch_size": 8}


@accepts(model=Module(), eps_model=Function(), schedule=Function(), sample_data=Function(),
         context_encoder=Function(optional=True), steps=Int(ge=0), batch_size=Int(ge=1), lr=Real(gt=0),
         antithetic=Flag(), generator=Generator(), callback=Function(optional=True), example=_example_train)
def train_mulan(model: nn.Module, eps_model: Callable, schedule: Callable,
                sample_data: Callable[[int, torch.Generator], torch.Tensor], *,
                context_encoder: Callable | None = None, steps: int, batch_size: int = 128, lr: float = 2e-4,
                antithetic: bool = True, generator: torch.Generator | None = None,
                callback: Callable | None = None) -> torch.Tensor:
    """Adam on the mean MuLAN negative ELBO (:func:`mulan_nelbo`), a fresh batch each step (defaults: the official
    batch 128 and learning rate 2e-4); returns the loss history.

    ``model`` holds every trained parameter (eps network, schedule, context encoder: an ``nn.ModuleList``);
    ``callback(step, model, loss)`` as in :func:`~paperzoo.diffusion.training.train_denoiser`.
    """
    from paperzoo.diffusion.training import _adam_steps

    def batch_loss(step):
        x = sample_data(batch_size, generator)
        t = _vdm._sample_times(batch_size, antithetic, generator, x.dtype).to(x.device)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return _mulan_terms(eps_model, schedule, x, t, noise, context_encoder, None, generator).total.mean()

    return _adam_steps(model, batch_loss, steps, lr, "train_mulan", callback)
