"""Improved DDPM: learned reverse variances on the interval [beta_tilde_t, beta_t], the hybrid objective and the
variational bound, with respaced sampling.

References: Improved Denoising Diffusion Probabilistic Models, 2021 (Nichol & Dhariwal, ICML 2021).

The cosine schedule of the paper is :func:`~paperzoo.diffusion.schedules.betas_cosine`. What this module adds, in
paperzoo's variance-exploding form (a state :math:`x = x_0 + \\sigma\\varepsilon`, a VP state
:math:`x_t = x/\\sqrt{1 + \\sigma^2}`, one reverse step from level :math:`\\sigma` (``sigma``) to
:math:`\\sigma'` (``sigma_next``)):

**The variance range** (:func:`ddpm_variance_range`). The forward step between the two levels has
:math:`\\beta = 1 - \\bar\\alpha_t/\\bar\\alpha_{t'}` and the true posterior :math:`q(x_{t'} \\mid x_t, x_0)` has
:math:`\\tilde\\beta = \\frac{1 - \\bar\\alpha_{t'}}{1 - \\bar\\alpha_t}\\beta`; in VE units (divided by
:math:`\\bar\\alpha_{t'}`)

.. math::
    \\tilde\\beta^{VE} = \\sigma'^2\\,\\frac{\\sigma^2 - \\sigma'^2}{\\sigma^2}, \\qquad
    \\beta^{VE} = (\\sigma^2 - \\sigma'^2)\\,\\frac{1 + \\sigma'^2}{1 + \\sigma^2}.

On a respaced schedule (a subsequence of the training levels) these are the respaced :math:`\\beta`,
:math:`\\tilde\\beta` of the paper's Section 4.

**The learned variance** (Eq. 15; :func:`interpolated_log_variance`): the network outputs one :math:`v` per
dimension and :math:`\\Sigma_\\theta = \\exp(v \\log\\beta + (1 - v)\\log\\tilde\\beta)`; :math:`v` is not
constrained (the paper found no need). :class:`LearnedVarianceMLP` follows the official code's parametrization
of :math:`v`: a raw output :math:`r` with :math:`v = (r + 1)/2`, so :math:`r = -1` is :math:`\\tilde\\beta`
("fixed small") and :math:`r = 1` is :math:`\\beta` ("fixed large"). The fixed variances are the two ends,
``variance="small"`` (:math:`v = 0`) and ``"large"`` (:math:`v = 1`).

**The bound** (Eqs. 4-7; :func:`vlb_term`, :func:`vlb_bound`). With the model mean the posterior mean at
:math:`\\hat x_0` (:math:`\\mu = \\hat x_0 + (\\sigma'/\\sigma)^2 (x - \\hat x_0)` in VE units), the term of one
step is :math:`L_{t-1} = D_{KL}(q(x_{t'} \\mid x_t, x_0)\\,\\|\\,\\mathcal N(\\mu, \\Sigma_\\theta))`
(:func:`gaussian_kl`), the last step's (:math:`\\sigma' = 0`) is the decoder
:math:`L_0 = -\\log \\mathcal N(x_0; \\hat x_0, \\Sigma_\\theta)` (a continuous density: the data here are not
8-bit images), and the prior term :math:`L_T = D_{KL}(q(x_T \\mid x_0)\\,\\|\\,\\mathcal N(0, I))`; the bound on
:math:`-\\log p_\\theta(x_0)` is their sum. All in nats per dimension. At the decoder, where
:math:`\\tilde\\beta = 0`, the small end of the range is the next step's :math:`\\tilde\\beta` (``min_variance``), as
in the official code's clipped posterior log variance.

**The hybrid objective** (Eq. 16; :func:`hybrid_loss`, :func:`train_hybrid`):
:math:`L_{hybrid} = L_{simple} + \\lambda L_{vlb}` with :math:`\\lambda = 0.001`, the mean of the VLB term
stopped (the :math:`\\varepsilon` output detached), so :math:`L_{vlb}` trains :math:`v` only.
:math:`L_{vlb} = \\sum_t L_t` is estimated by :math:`T\\,L_t` at a uniform :math:`t` and measured in bits, as in the
official code.

**Sampling** (:func:`sample_ddpm_variance`): the ancestral step with the posterior mean and
:math:`\\Sigma_\\theta` (or a fixed end), on any subsequence of the training levels (respacing: the official
``space_timesteps(T, "n")`` is :func:`~paperzoo.diffusion.schedules.discrete_timesteps` with ``"linspace"``).

Shapes: states ``(N, d)``; levels ``sigma`` a number or ``(N,)``; ``v`` ``(N, d)`` or a number.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.improved_ddpm import ddpm_variance_range, sample_ddpm_variance
    >>> from paperzoo.diffusion.mixture import mixture_on_circle
    >>> bt, b = ddpm_variance_range(torch.tensor(2.0), torch.tensor(1.0))
    >>> round(float(bt), 4), round(float(b), 4)            # 1 * 3/4, 3 * 2/5
    (0.75, 1.2)
    >>> gm = mixture_on_circle(4, 2, radius=2.0, std=0.2)
    >>> sigmas = torch.tensor([20.0, 5.0, 1.0, 0.2, 0.0], dtype=torch.float64)
    >>> x = sample_ddpm_variance(gm.denoise, 20.0 * torch.randn(8, 2, dtype=torch.float64), sigmas,
    ...                          variance="large", generator=torch.Generator().manual_seed(0))
    >>> tuple(x.shape)
    (8, 2)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from paperzoo.core.accepts import Function, Generator, Int, Module, OneOf, Real, Spec, Tensor, accepts
from paperzoo.core.checks import check_choice
from paperzoo.diffusion.samplers import _COMMON, _example, run_sampler
from paperzoo.diffusion.training import MLPDenoiser, _adam_steps, _sample_training_sigmas

__all__ = ["gaussian_kl", "ddpm_variance_range", "interpolated_log_variance", "LearnedVarianceMLP", "vlb_term",
           "vlb_bound", "VLBResult", "hybrid_loss", "train_hybrid", "ddpm_variance_step", "sample_ddpm_variance",
           "LAMBDA_VLB"]

#: the paper's weight of L_vlb in L_hybrid
LAMBDA_VLB = 1e-3

_ANY = Tensor(ndims=tuple(range(0, 8)), allow_empty=True)
_LEVELS = OneOf(Real(ge=0), Tensor(ndims=tuple(range(0, 8)), nonnegative=True, allow_empty=True))
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# -- closed forms ----------------------------------------------------------------------------------------------
@accepts(mean1=_ANY, logvar1=_ANY, mean2=_ANY, logvar2=_ANY)
def gaussian_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor
                ) -> torch.Tensor:
    """Elementwise :math:`D_{KL}(\\mathcal N(m_1, e^{l_1})\\,\\|\\,\\mathcal N(m_2, e^{l_2})) = \\frac12\\bigl(l_2 - l_1
    + e^{l_1 - l_2} + (m_1 - m_2)^2 e^{-l_2} - 1\\bigr)` in nats; arguments broadcast."""
    return _gaussian_kl(mean1, logvar1, mean2, logvar2)


def _gaussian_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2).square() * torch.exp(-logvar2)
                  - 1.0)


def _as_levels(sigma, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(sigma, torch.Tensor):
        return sigma
    return torch.tensor(float(sigma), dtype=torch.float64 if like is None else like.dtype)


@accepts(sigma=_LEVELS, sigma_next=_LEVELS)
def ddpm_variance_range(sigma, sigma_next) -> tuple[torch.Tensor, torch.Tensor]:
    """``(beta_tilde, beta)``: the posterior and forward variances of the step from VE level ``sigma`` to
    ``sigma_next`` (``<= sigma``), in VE units (module docstring); shapes broadcast."""
    s, sn = _as_levels(sigma), _as_levels(sigma_next)
    if isinstance(sigma, torch.Tensor) and isinstance(sigma_next, torch.Tensor) and sigma.dtype != sigma_next.dtype:
        raise TypeError(f"sigma_next must have the dtype of sigma ({sigma.dtype}), got {sigma_next.dtype}")
    s, sn = torch.broadcast_tensors(s.to(torch.promote_types(s.dtype, sn.dtype)), sn.to(
        torch.promote_types(s.dtype, sn.dtype)))
    if bool((sn > s).any()):
        raise ValueError("sigma_next must be <= sigma (a reverse step goes down in level)")
    if bool((s <= 0).any()):
        raise ValueError("sigma must be > 0")
    return _variance_range(s, sn)


def _variance_range(s, sn):
    gap = s.square() - sn.square()
    return sn.square() * gap / s.square(), gap * (1 + sn.square()) / (1 + s.square())


def _log_variance(v, s, sn, min_variance):
    """``log Sigma`` of the interpolation; where ``sn == 0`` the small end is ``min_variance``."""
    beta_tilde, beta = _variance_range(s, sn)
    log_small = torch.where(sn > 0, beta_tilde.clamp_min(torch.finfo(s.dtype).tiny).log(),
                            torch.as_tensor(math.log(min_variance), dtype=s.dtype))
    return v * beta.log() + (1 - v) * log_small


@accepts(v=OneOf(Real(), Tensor(ndims=tuple(range(0, 8)), allow_empty=True)), sigma=_LEVELS, sigma_next=_LEVELS,
         min_variance=Real(gt=0), example=lambda ctx: {"v": 0.3, "sigma": 2.0, "sigma_next": 0.5})
def interpolated_log_variance(v, sigma, sigma_next, *, min_variance: float = 1e-20) -> torch.Tensor:
    """Eq. 15: :math:`\\log\\Sigma_\\theta = v\\log\\beta + (1 - v)\\log\\tilde\\beta` (VE units) of the step from
    ``sigma`` to ``sigma_next``. Where ``sigma_next == 0`` (the decoder, :math:`\\tilde\\beta = 0`) the small end is
    ``min_variance`` (:func:`vlb_bound` passes the next step's :math:`\\tilde\\beta`, as the official code does).
    ``v``: the interpolation weight, any real (0: :math:`\\tilde\\beta`, 1: :math:`\\beta`)."""
    s, sn = _as_levels(sigma), _as_levels(sigma_next)
    s, sn = torch.broadcast_tensors(s, sn.to(s.dtype))
    if bool((sn >= s).any()):
        raise ValueError("sigma_next must be < sigma (a reverse step goes down in level; a zero step has no variance)")
    if bool((s <= 0).any()):
        raise ValueError("sigma must be > 0")
    v = v if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=s.dtype)
    return _log_variance(v.to(s.dtype), s, sn, float(min_variance))


# -- the network -----------------------------------------------------------------------------------------------
class LearnedVarianceMLP(MLPDenoiser):
    """An :class:`~paperzoo.diffusion.training.MLPDenoiser` with a second head: ``2 d`` outputs, the
    :math:`\\varepsilon` prediction and the raw variance output :math:`r` (:math:`v = (r + 1)/2`, module docstring),
    on VP inputs :math:`x_t = x/\\sqrt{1 + \\sigma^2}`.

    ``denoiser()`` is the VE denoiser ``model(x, sigma) -> x0``; ``variance()`` is ``variance(x, sigma) -> v``
    ``(N, d)``. Both read one forward pass: a call of ``variance`` right after ``denoiser`` on the same ``x`` and
    level (as inside :func:`sample_ddpm_variance`) reuses it.
    """

    @accepts(dim=Int(ge=1), hidden=Int(ge=1), depth=Int(ge=1), n_frequencies=Int(ge=1),
             example=lambda ctx: {"dim": 2, "hidden": 8, "depth": 1})
    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, *, n_frequencies: int = 8):
        super().__init__(dim, hidden, depth, prediction="eps", space="vp", n_frequencies=n_frequencies)
        self.net[-1] = nn.Linear(hidden, 2 * dim)
        self._cache = None

    def split(self, x_in: torch.Tensor, sigma) -> tuple[torch.Tensor, torch.Tensor]:
        """``(eps, r)``: the two heads at VP input ``x_in`` ``(N, d)`` and level ``sigma``."""
        out = self(x_in, sigma)
        return out[:, :self.dim], out[:, self.dim:]

    def _evaluate(self, x, sigma):
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        c = self._cache
        if c is not None and c[0] is x and torch.equal(c[1], s):
            return c[2], c[3]
        eps, r = self.split((1 + s.square()).rsqrt()[:, None] * x, s)
        denoised, v = x - s[:, None] * eps, (r + 1) / 2
        self._cache = (x, s, denoised, v) if not torch.is_grad_enabled() else None
        return denoised, v

    def denoiser(self) -> Denoiser:
        return lambda x, sigma: self._evaluate(x, sigma)[0]

    def variance(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return lambda x, sigma: self._evaluate(x, sigma)[1]


# -- the variational bound -------------------------------------------------------------------------------------
def _vlb_term(x0, x, denoised, v, s, sn, min_variance):
    s, sn = s[:, None], sn[:, None]
    log_var = _log_variance(v, s, sn, min_variance)
    r = (sn / s).square()
    beta_tilde, _ = _variance_range(s, sn)
    true_mean, model_mean = x0 + r * (x - x0), denoised + r * (x - denoised)
    kl = _gaussian_kl(true_mean, beta_tilde.clamp_min(torch.finfo(s.dtype).tiny).log(), model_mean, log_var)
    decoder = 0.5 * (math.log(2 * math.pi) + log_var + (x0 - denoised).square() * torch.exp(-log_var))
    return torch.where(sn > 0, kl, decoder).mean(-1)


def _example_term(ctx):
    g, dt = ctx.generator, ctx.dtype
    x0 = torch.randn(4, 2, generator=g, dtype=dt)
    sigma = torch.tensor([0.5, 1.0, 2.0, 0.1], dtype=dt)
    return {"x0": x0, "x": x0 + sigma[:, None] * torch.randn(4, 2, generator=g, dtype=dt),
            "denoised": x0 + 0.1 * torch.randn(4, 2, generator=g, dtype=dt),
            "v": torch.rand(4, 2, generator=g, dtype=dt), "sigma": sigma,
            "sigma_next": torch.tensor([0.4, 0.5, 1.0, 0.0], dtype=dt), "min_variance": 1e-3}


@accepts(x0=Tensor("N", "d"), x=Tensor("N", "d"), denoised=Tensor("N", "d"),
         v=OneOf(Real(), Tensor("N", "d")), sigma=Tensor("N", positive_mass=True),
         sigma_next=Tensor("N", nonnegative=True), min_variance=Real(gt=0), example=_example_term)
def vlb_term(x0: torch.Tensor, x: torch.Tensor, denoised: torch.Tensor, v, sigma: torch.Tensor,
             sigma_next: torch.Tensor, *, min_variance: float) -> torch.Tensor:
    """One term of the bound per sample, nats per dimension, ``(N,)``: the KL of Eq. 5 where
    ``sigma_next > 0``, the decoder NLL of Eq. 6 (a Gaussian density) where ``sigma_next == 0``.

    Args:
        x0: data ``(N, d)``; x: VE states at ``sigma`` ``(N, d)``; denoised: the model's :math:`\\hat x_0` ``(N, d)``.
        v: interpolation weights ``(N, d)`` or a number (0: fixed small, 1: fixed large).
        sigma, sigma_next: the step's levels ``(N,)``, ``0 < sigma_next <= sigma`` or ``sigma_next == 0``.
        min_variance: the decoder's small end (:func:`interpolated_log_variance`).
    """
    if bool((sigma_next > sigma).any()) or bool((sigma <= 0).any()):
        raise ValueError("sigma_next must be <= sigma and sigma > 0 entrywise")
    if not isinstance(v, torch.Tensor):
        v = torch.tensor(float(v), dtype=x0.dtype)
    return _vlb_term(x0, x, denoised, v, sigma, sigma_next, float(min_variance))


class VLBResult(NamedTuple):
    """The bound of :func:`vlb_bound`, nats per dimension: ``total`` ``(N,)``, ``terms`` ``(N, T)`` (column
    ``t``: the step from the ``t``-th level down; column 0 the decoder), ``prior`` ``(N,)``."""

    total: torch.Tensor
    terms: torch.Tensor
    prior: torch.Tensor


def _fixed_or_callable(variance, x):
    if isinstance(variance, str):
        return {"small": 0.0, "large": 1.0}[variance]
    return variance


def _variance_value(variance, x, sigma_vec):
    if isinstance(variance, float):
        return torch.tensor(variance, dtype=x.dtype)
    v = variance(x, sigma_vec)
    if not isinstance(v, torch.Tensor) or v.shape != x.shape:
        got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise ValueError(f"variance must return interpolation weights of the shape of x {tuple(x.shape)}, got {got}")
    return v


def _example_bound(ctx):
    from paperzoo.diffusion.mixture import mixture_on_circle

    gm = mixture_on_circle(3, 2, radius=2.0, std=0.3, dtype=ctx.dtype)
    return {"model": gm.denoise, "x0": gm.sample(5, generator=ctx.generator),
            "sigmas": torch.tensor([0.05, 0.3, 1.0, 4.0], dtype=ctx.dtype)}


class _Variance(Spec):
    """``"small"``, ``"large"`` or a callable ``variance(x, sigma) -> v``."""

    def check(self, name, value, binding):
        if callable(value):
            return
        if not isinstance(value, str):
            raise TypeError(f"{name} must be 'small', 'large' or a callable, got {type(value).__name__}")
        check_choice(name, value, ("small", "large"))

    def example(self, ctx):
        return "small"


_VARIANCE = _Variance()


@accepts(model=Function(), x0=Tensor("N", "d"), sigmas=Tensor("T", positive_mass=True), variance=_VARIANCE,
         generator=Generator(), example=_example_bound)
@torch.no_grad()
def vlb_bound(model: Denoiser, x0: torch.Tensor, sigmas: torch.Tensor, *, variance="small",
              generator: torch.Generator | None = None) -> VLBResult:
    """The variational bound on :math:`-\\log p_\\theta(x_0)` of every point of ``x0``, in nats per dimension,
    with one noisy state per point and step (the official ``calc_bpd_loop``, in nats, continuous decoder).

    Args:
        model: the VE denoiser ``model(x, sigma)``.
        x0: data ``(N, d)``.
        sigmas: the VE levels of all ``T >= 2`` training steps, increasing ``(T,)``
            (:func:`~paperzoo.diffusion.schedules.sigmas_from_alphas_cumprod`).
        variance: ``"small"``, ``"large"`` or ``variance(x, sigma) -> v`` ``(N, d)`` (e.g.
            :meth:`LearnedVarianceMLP.variance`).
        generator: draws the states.
    """
    if sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must hold at least 2 levels, got {sigmas.shape[0]}")
    if bool((sigmas[1:] <= sigmas[:-1]).any()):
        raise ValueError("sigmas must be strictly increasing (the training levels, t = 0 first)")
    variance = _fixed_or_callable(variance, x0)
    n, T = x0.shape[0], sigmas.shape[0]
    beta_tilde_1, _ = _variance_range(sigmas[1], sigmas[0])
    min_variance = float(beta_tilde_1 / (1 + sigmas[0].square()))  # the VP posterior variance of step 1
    terms = x0.new_empty(n, T)
    nexts = torch.cat([sigmas.new_zeros(1), sigmas[:-1]])
    for t in range(T):
        s = sigmas[t].expand(n)
        x = x0 + sigmas[t] * torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        denoised = model(x, s)
        v = _variance_value(variance, x, s)
        terms[:, t] = _vlb_term(x0, x, denoised, v, s, nexts[t].expand(n), min_variance)
    abar_T = 1 / (1 + sigmas[-1].square())
    prior = _gaussian_kl(abar_T.sqrt() * x0, (1 - abar_T).log(), torch.zeros_like(x0), torch.zeros_like(x0)).mean(-1)
    return VLBResult(terms.sum(-1) + prior, terms, prior)


# -- the hybrid objective --------------------------------------------------------------------------------------
def _hybrid_loss(network, x0, t, sigmas, lambda_vlb, noise=None, generator=None):
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    s = sigmas[t]
    x = x0 + s[:, None] * noise
    eps, r = network.split((1 + s.square()).rsqrt()[:, None] * x, s)
    mse = (eps - noise).square().mean(-1)
    if lambda_vlb == 0:
        return mse.mean()
    nexts = torch.where(t > 0, sigmas[(t - 1).clamp_min(0)], torch.zeros_like(s))
    beta_tilde_1, _ = _variance_range(sigmas[1], sigmas[0])
    min_variance = float(beta_tilde_1 / (1 + sigmas[0].square()))
    denoised = x - s[:, None] * eps.detach()  # the stop-gradient: L_vlb trains the variance only
    vb = _vlb_term(x0, x, denoised, (r + 1) / 2, s, nexts, min_variance)
    return (mse + lambda_vlb * sigmas.shape[0] * vb / math.log(2.0)).mean()


def _example_hybrid(ctx):
    net = LearnedVarianceMLP(2, 8, 1).to(ctx.dtype)
    return {"network": net, "x0": torch.randn(6, 2, generator=ctx.generator, dtype=ctx.dtype),
            "t": torch.tensor([0, 1, 2, 3, 4, 5]), "sigmas": torch.linspace(0.05, 3.0, 8, dtype=ctx.dtype)}


@accepts(network=Module(), x0=Tensor("N", "d"), t=Tensor("N", dtype="int", low=0),
         sigmas=Tensor("T", positive_mass=True), lambda_vlb=Real(ge=0), noise=Tensor("N", "d", optional=True),
         generator=Generator(), example=_example_hybrid)
def hybrid_loss(network: LearnedVarianceMLP, x0: torch.Tensor, t: torch.Tensor, sigmas: torch.Tensor, *,
                lambda_vlb: float = LAMBDA_VLB, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 16, :math:`L_{simple} + \\lambda L_{vlb}` averaged over the batch (a 0-dim tensor with its graph).

    Args:
        network: a :class:`LearnedVarianceMLP` (anything with ``split(x_in, sigma) -> (eps, r)``).
        x0: data ``(N, d)``; t: training-step indices ``(N,)`` into ``sigmas``; sigmas: the ``T >= 2`` increasing
            training levels.
        lambda_vlb: :math:`\\lambda` (paper: 0.001; 0 gives :math:`L_{simple}` alone). :math:`L_{vlb}` is
            :math:`T\\,L_t` in bits per dimension (the official code's units), its mean detached.
        noise: :math:`\\varepsilon` ``(N, d)``; drawn from ``generator`` when omitted.
    """
    if not hasattr(network, "split"):
        raise TypeError("network must have a split(x_in, sigma) -> (eps, r) method (a LearnedVarianceMLP)")
    if sigmas.shape[0] < 2 or bool((sigmas[1:] <= sigmas[:-1]).any()):
        raise ValueError("sigmas must hold at least 2 strictly increasing levels")
    if int(t.max()) >= sigmas.shape[0]:
        raise ValueError(f"t must index sigmas (< {sigmas.shape[0]}), got a maximum of {int(t.max())}")
    return _hybrid_loss(network, x0, t, sigmas, float(lambda_vlb), noise, generator)


@accepts(network=Module(), sample_data=Function(), sigmas=Tensor("T", positive_mass=True), steps=Int(ge=0),
         batch_size=Int(ge=1), lr=Real(gt=0), lambda_vlb=Real(ge=0), generator=Generator(),
         callback=Function(optional=True),
         example=lambda ctx: {"network": LearnedVarianceMLP(2, 8, 1).to(ctx.dtype),
                              "sample_data": lambda n, g: torch.randn(n, 2, generator=g, dtype=ctx.dtype),
                              "sigmas": torch.linspace(0.05, 3.0, 8, dtype=ctx.dtype), "steps": 3,
                              "batch_size": 8})
def train_hybrid(network: LearnedVarianceMLP, sample_data: Callable[[int, torch.Generator], torch.Tensor],
                 sigmas: torch.Tensor, *, steps: int, batch_size: int = 256, lr: float = 1e-3,
                 lambda_vlb: float = LAMBDA_VLB, generator: torch.Generator | None = None,
                 callback: Callable | None = None) -> torch.Tensor:
    """Adam on :func:`hybrid_loss` with fresh data and uniform training steps each step (the loop of
    :func:`~paperzoo.diffusion.training.train_denoiser` with this loss); returns the loss history ``(steps,)``.
    ``callback(step, network, loss)`` runs after each optimizer step (``step`` from 1)."""
    if sigmas.shape[0] < 2 or bool((sigmas[1:] <= sigmas[:-1]).any()):
        raise ValueError("sigmas must hold at least 2 strictly increasing levels")
    def batch_loss(step):
        x0 = sample_data(batch_size, generator)
        t, _ = _sample_training_sigmas(batch_size, sigmas, generator)
        return _hybrid_loss(network, x0, t, sigmas, float(lambda_vlb), None, generator)

    return _adam_steps(network, batch_loss, steps, lr, "train_hybrid", callback)


# -- sampling --------------------------------------------------------------------------------------------------
@accepts(variance=_VARIANCE, output="any")  # returns a step function
def ddpm_variance_step(variance="small"):
    """The ancestral DDPM step with variance :math:`\\Sigma = \\exp(v\\log\\beta + (1 - v)\\log\\tilde\\beta)`:
    :math:`x' = \\hat x_0 + (\\sigma'/\\sigma)^2 (x - \\hat x_0) + \\sqrt\\Sigma\\,z` (no noise on the last step),
    :math:`v` fixed (``"small"``: 0, the step of :func:`~paperzoo.diffusion.samplers.sample_ddpm`; ``"large"``: 1)
    or ``variance(x, sigma) -> v`` ``(N, d)``."""
    variance = _fixed_or_callable(variance, None)

    def step(x, sigma, sigma_next, denoised, ctx):
        ratio = (sigma_next / sigma).square()
        mean = denoised + ratio * (x - denoised)
        if float(sigma_next) == 0:
            return mean
        v = _variance_value(variance, x, sigma * x.new_ones(x.shape[0]))
        return mean + torch.exp(0.5 * _log_variance(v, sigma, sigma_next, 1.0)) * ctx.noise(x)

    step.eta = 1.0  # the first step from an infinite level adds noise, as DDPM's does
    return step


@accepts(**_COMMON, variance=_VARIANCE, example=_example)
def sample_ddpm_variance(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, variance="small",
                         generator: torch.Generator | None = None, callback=None, progress: bool = False
                         ) -> torch.Tensor:
    """DDPM's ancestral sampler with a given reverse variance (:func:`ddpm_variance_step`): ``"small"``
    (:math:`\\tilde\\beta`, Ho et al.'s fixed small), ``"large"`` (:math:`\\beta`) or the learned interpolation
    ``variance(x, sigma) -> v`` (:meth:`LearnedVarianceMLP.variance`). Respaced sampling: ``sigmas`` =
    ``append_zero(training_sigmas[timesteps])`` for a decreasing subsequence ``timesteps``; the variance range is
    then the respaced one. One model evaluation per step (the learned variance shares it)."""
    return run_sampler(model, x, sigmas, ddpm_variance_step(variance), generator=generator, callback=callback,
                       progress=progress)
