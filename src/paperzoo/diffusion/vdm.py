"""Variational Diffusion Models (VDM): a learned log-SNR schedule and the continuous-time negative ELBO.

References: Variational Diffusion Models, 2021 (Kingma, Salimans, Poole, Ho).

Continuous data :math:`x \\in \\mathbb R^D` is diffused in the variance-preserving form

.. math::
    z_t = \\alpha_t\\, m_t + \\sigma_t\\, \\varepsilon, \\qquad \\alpha_t^2 = \\operatorname{sigmoid}(-\\gamma(t)),
    \\quad \\sigma_t^2 = \\operatorname{sigmoid}(\\gamma(t)), \\qquad t \\in [0, 1],

with :math:`\\gamma(t) = -\\log \\mathrm{SNR}(t)` increasing and the signal :math:`m_t = x` (VDM; a learned
encoder mean :math:`m_t = x_\\phi(x, t)` in :mod:`~paperzoo.diffusion.diffenc`). The negative ELBO per sample is
the sum of three terms (nats), each returned by :func:`vdm_nelbo`:

.. math::
    \\text{prior} &= \\mathrm{KL}\\bigl(q(z_1 \\mid x)\\,\\|\\,\\mathcal N(0, I)\\bigr)
        = \\tfrac12 \\sum_d \\bigl(\\alpha_{1,d}^2 m_{1,d}^2 + \\sigma_{1,d}^2 - 1 - \\log\\sigma_{1,d}^2\\bigr), \\\\
    \\text{reconstruction} &= E_{z_0}\\bigl[-\\log \\mathcal N(x;\\, z_0/\\alpha_0,\\, e^{\\gamma_0} I)\\bigr]
        = \\tfrac12 \\sum_d \\bigl(\\log 2\\pi + \\gamma_{0,d} + 1 + e^{-\\gamma_{0,d}} (x_d - m_{0,d})^2\\bigr), \\\\
    \\text{diffusion} &= \\tfrac12\\, E_{t \\sim U(0,1),\\, \\varepsilon}\\Bigl[\\sum_d \\gamma_d'(t)\\,
        \\bigl(\\varepsilon_d - \\hat\\varepsilon_{\\theta,d}(z_t, t) + o_d\\bigr)^2\\Bigr]
        \\quad\\text{(VDM eq. 17, with an optional offset } o \\text{, zero for VDM).}

The reconstruction term is a Gaussian decoder at :math:`t = 0` (continuous data: no discretisation), the
expectation over its noise taken in closed form; as :math:`\\gamma_0 \\to -\\infty`,
:math:`\\gamma_1 \\to \\infty` the bound tends to :math:`-\\log p(x)` for the optimal :math:`\\hat\\varepsilon`.
``gamma`` may be one value per sample ``(N,)`` (VDM) or one per dimension ``(N, D)`` (multivariate schedules
such as MuLAN); :math:`\\gamma'` is computed by forward-mode differentiation of the schedule in :math:`t`.
The diffusion term is estimated with one :math:`t` per sample, drawn with VDM's low-discrepancy sampler
:math:`t_i = (u + i/N) \\bmod 1`, :math:`u \\sim U(0, 1)` (``antithetic=True``) or i.i.d. uniform.

Callable conventions (plain callables, data not config):

- ``schedule(t) -> gamma``: ``t`` ``(N,)`` to ``(N,)`` or ``(N, D)``, differentiable in ``t``
  (:class:`LearnedLogSNR`, :class:`LinearLogSNR`, or a closure over context such as ``lambda t: net(t, c)``).
- ``eps_model(z, t, gamma) -> eps_hat`` ``(N, D)``: ``z`` ``(N, D)`` the VP state, ``t`` ``(N,)``, ``gamma``
  as the schedule returns it (:func:`eps_model_from_network`, :func:`mixture_eps_model`,
  :func:`diagonal_gaussian_eps_model`).
- ``encoder(x, t, gamma) -> (m, offset)`` (optional): the signal mean and the diffusion-loss offset
  (:mod:`~paperzoo.diffusion.diffenc`); ``None`` is VDM (``m = x``, no offset).

Example:
    >>> import torch
    >>> from paperzoo.diffusion.mixture import GaussianMixture
    >>> gm = GaussianMixture(torch.zeros(1, 2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)[None])
    >>> g = torch.Generator().manual_seed(0)
    >>> x = gm.sample(4096, generator=g)
    >>> terms = vdm_nelbo(mixture_eps_model(gm), LinearLogSNR(-10.0, 10.0), x, generator=g)
    >>> bool(terms.total.mean() > -gm.log_prob(x).mean())  # a bound, close at these endpoints
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.accepts import Flag, Function, Generator, Instance, Int, Module, Real, Tensor, accepts
from paperzoo.diffusion.mixture import GaussianMixture

__all__ = ["LearnedLogSNR", "LinearLogSNR", "VDMTerms", "vdm_nelbo", "vdm_diffusion_loss", "sample_vdm_times",
           "schedule_with_derivative", "eps_model_from_network", "mixture_eps_model", "diagonal_gaussian_eps_model",
           "gaussian_vdm_terms", "train_vdm", "bits_per_dim"]

_LOG_2PI = math.log(2 * math.pi)


class VDMTerms(NamedTuple):
    """The negative ELBO of each sample and its three parts, all ``(N,)`` in nats."""

    total: torch.Tensor
    prior: torch.Tensor
    reconstruction: torch.Tensor
    diffusion: torch.Tensor


# -- schedules --------------------------------------------------------------------------------------------------------
class LinearLogSNR(nn.Module):
    """The fixed linear schedule :math:`\\gamma(t) = \\gamma_0 + (\\gamma_1 - \\gamma_0)\\, t` (VDM's default
    ``gamma_min = -13.3``, ``gamma_max = 5``).

    Args:
        gamma_min: :math:`\\gamma_0 = \\gamma(0)`; gamma_max: :math:`\\gamma_1 = \\gamma(1) > \\gamma_0`.
    """

    @accepts(gamma_min=Real(), gamma_max=Real())
    def __init__(self, gamma_min: float = -13.3, gamma_max: float = 5.0):
        super().__init__()
        if not gamma_max > gamma_min:
            raise ValueError(f"gamma_max must be > gamma_min ({gamma_min!r}), got {gamma_max!r}")
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.gamma_min + (self.gamma_max - self.gamma_min) * t


class _MonotoneLinear(nn.Module):
    """A linear layer whose weights are the absolute values of free parameters (nondecreasing in each input)."""

    def __init__(self, n_in: int, n_out: int, bias: bool, init_scale: float):
        super().__init__()
        self.weight = nn.Parameter(init_scale * torch.randn(n_out, n_in) / math.sqrt(n_in))
        self.bias = nn.Parameter(torch.zeros(n_out)) if bias else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.weight.abs(), self.bias)


class LearnedLogSNR(nn.Module):
    """VDM's learned monotone schedule (appendix: monotone network of linear layers with positive weights).

    .. math::
        \\tilde\\gamma(t) = l_1(t) + \\frac{1}{K}\\, l_3\\bigl(2\\operatorname{sigmoid}(l_2(2t - 1)) - 1\\bigr),
        \\qquad \\gamma(t) = \\gamma_0 + (\\gamma_1 - \\gamma_0)
        \\frac{\\tilde\\gamma(t) - \\tilde\\gamma(0)}{\\tilde\\gamma(1) - \\tilde\\gamma(0)},

    with :math:`l_1: 1 \\to 1`, :math:`l_2: 1 \\to K`, :math:`l_3: K \\to 1` (no bias) of nonnegative weights, so
    :math:`\\tilde\\gamma` and :math:`\\gamma` are nondecreasing; the normalisation pins the endpoints.

    Args:
        gamma_min, gamma_max: :math:`\\gamma_0 < \\gamma_1`, the endpoints (the initial values when learned).
        n_features: :math:`K` (VDM: 1024).
        learn_endpoints: train :math:`\\gamma_0` and :math:`\\log(\\gamma_1 - \\gamma_0)` too (VDM's learned
            SNR range); ``False`` keeps them fixed (then the diffusion loss's expectation does not depend on the
            interior of the schedule, VDM's invariance; only its variance does).
        init_scale: scale of the initial free weights (small: near the linear schedule).

    VDM trains the interior of the schedule to minimise the variance of the diffusion-loss estimator and the
    endpoints on the bound; :func:`train_vdm` trains every parameter on the bound itself (the variance objective
    is not implemented).

    ``forward(t)`` maps ``(N,)`` times in :math:`[0, 1]` to ``(N,)`` log-SNR negatives :math:`\\gamma(t)`.
    """

    @accepts(gamma_min=Real(), gamma_max=Real(), n_features=Int(ge=1), learn_endpoints=Flag(),
             init_scale=Real(gt=0))
    def __init__(self, gamma_min: float = -13.3, gamma_max: float = 5.0, n_features: int = 1024, *,
                 learn_endpoints: bool = False, init_scale: float = 0.1):
        super().__init__()
        if not gamma_max > gamma_min:
            raise ValueError(f"gamma_max must be > gamma_min ({gamma_min!r}), got {gamma_max!r}")
        self.n_features = n_features
        self.l1 = _MonotoneLinear(1, 1, True, 1.0)
        self.l2 = _MonotoneLinear(1, n_features, True, init_scale * math.sqrt(n_features))
        self.l3 = _MonotoneLinear(n_features, 1, False, init_scale)
        start = torch.tensor(float(gamma_min))
        log_gap = torch.tensor(math.log(gamma_max - gamma_min))
        if learn_endpoints:
            self.gamma_start, self.log_gap = nn.Parameter(start), nn.Parameter(log_gap)
        else:
            self.register_buffer("gamma_start", start)
            self.register_buffer("log_gap", log_gap)

    def _unnormalised(self, t: torch.Tensor) -> torch.Tensor:
        t = t[..., None]
        h = self.l1(t)
        h = h + self.l3(2 * torch.sigmoid(self.l2(2 * t - 1)) - 1) / self.n_features
        return h[..., 0]

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        ends = self._unnormalised(torch.tensor([0.0, 1.0], dtype=t.dtype, device=t.device))
        # a positive l1 slope keeps the denominator away from zero; clamp guards a collapsed slope
        frac = (self._unnormalised(t) - ends[0]) / (ends[1] - ends[0]).clamp_min(1e-12)
        return self.gamma_start.to(t.dtype) + self.log_gap.to(t.dtype).exp() * frac


@accepts(schedule=Function(), t=Tensor("N"), example=lambda ctx: {
    "schedule": LinearLogSNR(-5.0, 5.0), "t": torch.rand(5, generator=ctx.generator, dtype=ctx.dtype)})
def schedule_with_derivative(schedule: Callable[[torch.Tensor], torch.Tensor], t: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gamma, dgamma/dt)`` of ``schedule`` at times ``t`` ``(N,)`` (forward-mode; both keep their graphs)."""
    return _gamma_and_derivative(schedule, t)


def _gamma_and_derivative(schedule, t):
    gamma, dgamma = torch.func.jvp(schedule, (t,), (torch.ones_like(t),))
    if gamma.shape[0] != t.shape[0] or gamma.dim() not in (1, 2):
        raise ValueError(f"schedule must return shape ({t.shape[0]},) or ({t.shape[0]}, D), got "
                         f"{tuple(gamma.shape)}")
    return gamma, dgamma


@accepts(n=Int(ge=1), antithetic=Flag(), generator=Generator(), example=lambda ctx: {"n": 5})
def sample_vdm_times(n: int, *, antithetic: bool = True, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` training times in :math:`[0, 1)`: VDM's low-discrepancy :math:`(u + i/n) \\bmod 1` or i.i.d."""
    return _sample_times(n, antithetic, generator, dtype)


def _sample_times(n, antithetic, generator, dtype):
    u = torch.rand(1 if antithetic else n, generator=generator, dtype=torch.float64)
    if antithetic:
        u = torch.remainder(u + torch.arange(n, dtype=torch.float64) / n, 1.0)
    return u.to(dtype)


# -- eps models --------------------------------------------------------------------------------------------------------
def _per_dim(gamma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return gamma[:, None] if gamma.dim() == 1 else gamma


def _example_network(ctx):
    from paperzoo.diffusion.training import MLPDenoiser

    return {"network": MLPDenoiser(2, 8, 1).to(ctx.dtype)}


@accepts(network=Module(), example=_example_network)
def eps_model_from_network(network: nn.Module) -> Callable:
    """``eps_model(z, t, gamma)`` of an eps-predicting ``network(x_in, sigma)`` in VP space (such as
    :class:`~paperzoo.diffusion.training.MLPDenoiser` with ``prediction="eps"``): it is called with the VP state
    ``z`` and the VE level :math:`e^{\\gamma/2}` (scalar schedules)."""
    if getattr(network, "prediction", "eps") != "eps" or getattr(network, "space", "vp") != "vp":
        raise ValueError("network must predict eps in VP space (prediction='eps', space='vp')")

    def eps_model(z, t, gamma):
        if gamma.dim() != 1:
            raise ValueError("eps_model_from_network needs a scalar schedule (gamma of shape (N,))")
        return network(z, (0.5 * gamma).exp())

    return eps_model


@accepts(mixture=Instance(GaussianMixture), example=lambda ctx: {
    "mixture": GaussianMixture(torch.zeros(2, 2, dtype=ctx.dtype), torch.eye(2, dtype=ctx.dtype).expand(2, 2, 2))})
def mixture_eps_model(mixture: GaussianMixture) -> Callable:
    """The exact :math:`E[\\varepsilon \\mid z_t]` of data drawn from ``mixture``, for scalar schedules:
    :math:`\\hat\\varepsilon = (z/\\alpha - D(z/\\alpha, e^{\\gamma/2}))\\, e^{-\\gamma/2}` with the mixture's exact
    denoiser :math:`D`."""
    def eps_model(z, t, gamma):
        if gamma.dim() != 1:
            raise ValueError("mixture_eps_model needs a scalar schedule (gamma of shape (N,))")
        alpha = torch.sigmoid(-gamma).sqrt()[:, None]
        level = (0.5 * gamma).exp()
        x = z / alpha
        return (x - mixture.denoise(x, level)) / level[:, None]

    return eps_model


@accepts(mean=Tensor("D"), var=Tensor("D", positive_mass=True))
def diagonal_gaussian_eps_model(mean: torch.Tensor, var: torch.Tensor) -> Callable:
    """The exact :math:`E[\\varepsilon \\mid z_t]` for data :math:`\\mathcal N(\\mu, \\operatorname{diag}(v))`, any
    schedule shape:
    :math:`\\hat\\varepsilon_d = \\sigma_d (z_d - \\alpha_d\\mu_d) / (\\alpha_d^2 v_d + \\sigma_d^2)`."""
    if bool((var <= 0).any()):
        raise ValueError("var must be > 0 entrywise")

    def eps_model(z, t, gamma):
        g = _per_dim(gamma, z)
        a2, s2 = torch.sigmoid(-g), torch.sigmoid(g)
        return s2.sqrt() * (z - a2.sqrt() * mean) / (a2 * var + s2)

    return eps_model


# -- the bound ---------------------------------------------------------------------------------------------------------
def _example_nelbo(ctx):
    return {"eps_model": lambda z, t, g: torch.zeros_like(z), "schedule": LinearLogSNR(-6.0, 6.0),
            "x": torch.randn(6, 2, generator=ctx.generator, dtype=ctx.dtype)}


def _terms(eps_model, schedule, x, t, noise, encoder):
    """Unchecked :func:`vdm_nelbo` (training loops)."""
    n = x.shape[0]
    # endpoints per sample: a schedule may depend on the sample (a closure over a per-sample context)
    zeros = torch.zeros(n, dtype=x.dtype, device=x.device)
    g0, g1 = schedule(zeros), schedule(zeros + 1)
    if encoder is None:
        m0 = m1 = x
    else:
        m0, m1 = encoder(x, zeros, g0)[0], encoder(x, zeros + 1, g1)[0]
    g0, g1 = _per_dim(g0, x), _per_dim(g1, x)
    var1 = torch.sigmoid(g1)
    prior = 0.5 * (torch.sigmoid(-g1) * m1.square() + var1 - 1 - F.logsigmoid(g1)).sum(-1)
    recon = 0.5 * (_LOG_2PI + g0 + 1 + (-g0).exp() * (x - m0).square()).sum(-1)
    gamma, dgamma = _gamma_and_derivative(schedule, t)
    if encoder is None:
        m, offset = x, None
    else:
        m, offset = encoder(x, t, gamma)
    diffusion = _diffusion(eps_model, m, t, gamma, dgamma, noise, offset)
    return VDMTerms(prior + recon + diffusion, prior, recon, diffusion)


def _diffusion(eps_model, m, t, gamma, dgamma, noise, offset):
    g, dg = _per_dim(gamma, m), _per_dim(dgamma, m)
    z = torch.sigmoid(-g).sqrt() * m + torch.sigmoid(g).sqrt() * noise
    resid = noise - eps_model(z, t, gamma)
    if offset is not None:
        resid = resid + offset
    return 0.5 * (dg * resid.square()).sum(-1)


@accepts(eps_model=Function(), schedule=Function(), x=Tensor("N", "D", degenerate=("coincident",)),
         t=Tensor("N", optional=True), noise=Tensor("N", "D", optional=True), antithetic=Flag(),
         generator=Generator(), encoder=Function(optional=True), example=_example_nelbo)
def vdm_nelbo(eps_model: Callable, schedule: Callable, x: torch.Tensor, *, t: torch.Tensor | None = None,
              noise: torch.Tensor | None = None, antithetic: bool = True, generator: torch.Generator | None = None,
              encoder: Callable | None = None) -> VDMTerms:
    """The continuous-time negative ELBO of each sample (module docstring), a :class:`VDMTerms` of ``(N,)`` nats.

    Args:
        eps_model: ``eps_model(z, t, gamma) -> (N, D)``; schedule: ``schedule(t) -> (N,)`` or ``(N, D)``.
        x: data ``(N, D)``.
        t: the diffusion times ``(N,)`` in :math:`[0, 1]`; drawn by :func:`sample_vdm_times` when omitted.
        noise: :math:`\\varepsilon` ``(N, D)``; drawn from ``generator`` when omitted.
        antithetic: the low-discrepancy time sampler (VDM) rather than i.i.d. times.
        encoder: ``encoder(x, t, gamma) -> (m, offset)``, the signal mean ``(N, D)`` and diffusion offset
            (``None`` for none); ``None``: VDM.

    The mean over samples is an unbiased estimate of the negative ELBO; its gradient trains every callable's
    parameters (the schedule's included).
    """
    if t is not None and bool(((t < 0) | (t > 1)).any()):
        raise ValueError("t must lie in [0, 1] entrywise")
    if t is None:
        t = _sample_times(x.shape[0], antithetic, generator, x.dtype).to(x.device)
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return _terms(eps_model, schedule, x, t, noise, encoder)


@accepts(eps_model=Function(), schedule=Function(), x=Tensor("N", "D", degenerate=("coincident",)),
         t=Tensor("N"), noise=Tensor("N", "D"), offset=Tensor("N", "D", optional=True),
         example=lambda ctx: {**_example_nelbo(ctx), "t": torch.rand(6, generator=ctx.generator, dtype=ctx.dtype),
                              "noise": torch.randn(6, 2, generator=ctx.generator, dtype=ctx.dtype)})
def vdm_diffusion_loss(eps_model: Callable, schedule: Callable, x: torch.Tensor, t: torch.Tensor,
                       noise: torch.Tensor, *, offset: torch.Tensor | None = None) -> torch.Tensor:
    """The diffusion term alone, :math:`\\tfrac12 \\sum_d \\gamma_d'(t)(\\varepsilon_d - \\hat\\varepsilon_d + o_d)^2`
    ``(N,)``, with ``x`` the signal mean :math:`m_t` ``(N, D)`` (the data for VDM)."""
    gamma, dgamma = _gamma_and_derivative(schedule, t)
    return _diffusion(eps_model, x, t, gamma, dgamma, noise, offset)


@accepts(mean=Tensor("D"), var=Tensor("D", positive_mass=True), gamma_min=Real(), gamma_max=Real(),
         example=lambda ctx: {"mean": torch.zeros(3, dtype=ctx.dtype), "var": torch.ones(3, dtype=ctx.dtype),
                              "gamma_min": -5.0, "gamma_max": 5.0})
def gaussian_vdm_terms(mean: torch.Tensor, var: torch.Tensor, gamma_min: float, gamma_max: float) -> VDMTerms:
    """The exact expected terms, ``()`` each, for data :math:`\\mathcal N(\\mu, \\operatorname{diag}(v))`, the
    optimal :math:`\\hat\\varepsilon` and any scalar schedule from :math:`\\gamma_0` to :math:`\\gamma_1`:
    the diffusion term is :math:`\\tfrac12\\sum_d [\\gamma - \\log(v_d + e^{\\gamma})]_{\\gamma_0}^{\\gamma_1}`
    (:math:`E\\|\\varepsilon - \\hat\\varepsilon\\|^2 = \\sum_d v_d/(v_d + e^\\gamma)`), whatever the interior."""
    if not gamma_max > gamma_min:
        raise ValueError(f"gamma_max must be > gamma_min ({gamma_min!r}), got {gamma_max!r}")
    g0 = torch.tensor(float(gamma_min), dtype=mean.dtype)
    g1 = torch.tensor(float(gamma_max), dtype=mean.dtype)
    prior = 0.5 * (torch.sigmoid(-g1) * (mean.square() + var) + torch.sigmoid(g1) - 1 - F.logsigmoid(g1)).sum()
    recon = 0.5 * (_LOG_2PI + g0 + 1).expand_as(mean).sum()

    def antiderivative(g):
        return g - torch.logaddexp(var.log(), g)

    diffusion = 0.5 * (antiderivative(g1) - antiderivative(g0)).sum()
    return VDMTerms(prior + recon + diffusion, prior, recon, diffusion)


# -- training ----------------------------------------------------------------------------------------------------------
def _example_train(ctx):
    model = nn.Linear(2, 2).to(ctx.dtype)
    return {"model": model, "eps_model": lambda z, t, g: model(z), "schedule": LinearLogSNR(-6.0, 6.0),
            "sample_data": lambda n, g: torch.randn(n, 2, generator=g, dtype=ctx.dtype), "steps": 2, "batch_size": 8}


@accepts(model=Module(), eps_model=Function(), schedule=Function(), sample_data=Function(), steps=Int(ge=0),
         batch_size=Int(ge=1), lr=Real(gt=0), antithetic=Flag(), generator=Generator(),
         encoder=Function(optional=True), callback=Function(optional=True),
         example=lambda ctx: _example_train(ctx))
def train_vdm(model: nn.Module, eps_model: Callable, schedule: Callable,
              sample_data: Callable[[int, torch.Generator], torch.Tensor], *, steps: int, batch_size: int = 256,
              lr: float = 1e-3, antithetic: bool = True, generator: torch.Generator | None = None,
              encoder: Callable | None = None, callback: Callable | None = None) -> torch.Tensor:
    """Adam on the mean negative ELBO (:func:`vdm_nelbo`) with a fresh batch each step; returns the loss history.

    ``model`` holds every trained parameter (the eps network, a learned schedule, an encoder: an
    ``nn.ModuleList`` of them); ``eps_model``/``schedule``/``encoder`` are the callables over them.
    ``callback(step, model, loss)`` as in :func:`~paperzoo.diffusion.training.train_denoiser`.
    """
    from paperzoo.diffusion.training import _adam_steps

    def batch_loss(step):
        x = sample_data(batch_size, generator)
        t = _sample_times(batch_size, antithetic, generator, x.dtype).to(x.device)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return _terms(eps_model, schedule, x, t, noise, encoder).total.mean()

    return _adam_steps(model, batch_loss, steps, lr, "train_vdm", callback)


@accepts(nelbo=Tensor(ndims=(0, 1)), dim=Int(ge=1), offset=Real(),
         example=lambda ctx: {"nelbo": torch.ones(3, dtype=ctx.dtype), "dim": 2})
def bits_per_dim(nelbo: torch.Tensor, dim: int, offset: float = 0.0) -> torch.Tensor:
    """Nats per sample to bits per dimension, :math:`(\\text{nelbo} + \\text{offset}) / (D \\log 2)` (``offset``:
    e.g. the :math:`D \\log 2^{b}`-type constant of a rescaling of the data)."""
    return (nelbo + offset) / (dim * math.log(2))
