"""Noise-unconditional denoising: the optimal blind network, a wrapper that drops the level input, its error bound.

References: Is Noise Conditioning Necessary for Denoising Generative Models?, 2025 (Sun, Jiang, Zhao, He).

A denoising model regresses a target :math:`r = c(\\sigma)\\,x_0 + d(\\sigma)\\,\\varepsilon` (the network's
``prediction``: :math:`\\varepsilon`, :math:`x_0`, :math:`v` or the flow velocity) from the state it sees,
:math:`z = c_{in}(\\sigma)\\,(x_0 + \\sigma\\varepsilon)` (its ``space``: VE, VP or flow scaling,
:func:`~paperzoo.diffusion.parametrization.network_input_scale`). With the level :math:`\\sigma` as input the
loss's minimiser is the conditional effective target :math:`R(z \\mid \\sigma) = E[r \\mid z, \\sigma]`; without it
(the paper's Section 4) it is the posterior average over levels

.. math::
    R(z) = E_{\\sigma \\sim p(\\sigma \\mid z)}\\bigl[R(z \\mid \\sigma)\\bigr], \\qquad
    p(\\sigma_j \\mid z) \\propto \\pi_j\\, p(z \\mid \\sigma_j),

with :math:`\\pi` the training distribution of levels, given here as levels ``levels`` :math:`\\sigma_j` and weights
``prior`` :math:`\\pi_j` (a discrete schedule, or the nodes and weights of a quadrature of a continuous one). On a
:class:`~paperzoo.diffusion.mixture.GaussianMixture` everything is exact: :math:`p(z \\mid \\sigma) =
c_{in}^{-d}\\, p_\\sigma(z / c_{in})` and :math:`R(z \\mid \\sigma)` is the prediction target evaluated at the exact
posterior means :math:`E[x_0 \\mid x]` and :math:`E[\\varepsilon \\mid x] = (x - E[x_0 \\mid x])/\\sigma`.
In ``prediction="x0"``, ``space="ve"`` this is :math:`D^*(x) = E_{\\sigma \\mid x}[D^*(x, \\sigma)]`.

The paper's point is that :math:`p(\\sigma \\mid z)` concentrates in high dimension (:math:`\\|z\\|^2` reveals the
level to relative precision :math:`\\sim\\sqrt{2/d}`), so :math:`R(z) \\approx R(z \\mid \\sigma)`; by Jensen's
inequality the error of the blind target at the true level is bounded (its Statement 2) by

.. math::
    \\|R(z) - R(z \\mid \\sigma)\\|^2
    \\le E_{\\sigma' \\sim p(\\sigma' \\mid z)} \\|R(z \\mid \\sigma') - R(z \\mid \\sigma)\\|^2,

computable without training (:func:`effective_target_error`). A sampler step :math:`x_{i+1} = \\kappa_i x_i +
\\eta_i F(x_i)` with a network of Lipschitz constant :math:`L_i` accumulates the per-step target errors
:math:`\\delta_i` into a state error bounded by the recursion :math:`e_{i+1} = (|\\kappa_i| + |\\eta_i| L_i)\\, e_i
+ |\\eta_i|\\,\\delta_i` (its Statement 3, :func:`accumulated_error_bound`): large :math:`|\\kappa|` (DDIM's
:math:`\\sqrt{\\bar\\alpha_{i+1}/\\bar\\alpha_i}` at high noise) amplifies the blind network's error.

:class:`NoiseUnconditional` wraps a level-conditioned network so that it never sees the level (the sampler still
knows its own schedule and converts the prediction to a denoised estimate with it, as in the paper).

Shapes: points ``z``/``x`` ``(..., d)``; ``levels`` and ``prior`` ``(L,)``; posteriors ``(..., L)``.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.mixture import mixture_on_circle
    >>> from paperzoo.diffusion.noise_unconditional import level_posterior
    >>> gm = mixture_on_circle(4, 64, radius=3.0, std=0.3)
    >>> levels = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    >>> x = gm.sample(8, sigma=1.0, generator=torch.Generator().manual_seed(0))
    >>> bool((level_posterior(gm, x, levels)[:, 1] > 0.99).all())   # d = 64: the level is read off the state
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from paperzoo.core.accepts import Choice, Generator, Instance, Int, Module, Real, Tensor, accepts
from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle
from paperzoo.diffusion.parametrization import PREDICTIONS, SPACES, denoiser_from_prediction, network_input_scale
from paperzoo.diffusion.parametrization import prediction_target

__all__ = ["level_posterior", "conditional_target", "unconditional_target", "optimal_unconditional_denoiser",
           "effective_target_error", "EffectiveTargetError", "accumulated_error_bound", "NoiseUnconditional"]

_GM = Instance(GaussianMixture, what="GaussianMixture")


def _example(ctx) -> dict:
    gm = mixture_on_circle(3, 4, radius=2.0, std=0.3, dtype=ctx.dtype)
    return {"gm": gm, "z": 0.5 * torch.randn(5, 4, generator=ctx.generator, dtype=ctx.dtype),
            "levels": torch.tensor([0.3, 1.0, 3.0], dtype=ctx.dtype)}


def _resolve_space(prediction: str, space: str | None) -> str:
    """The input convention (the defaults of :func:`denoiser_from_prediction`; ``v``/``flow`` force theirs)."""
    return denoiser_from_prediction(lambda x, s: x, prediction, space=space).space


def _check_levels(gm, z, levels, prior):
    if z.shape[-1] != gm.dim:
        raise ValueError(f"z must have last dimension {gm.dim} (the mixture's), got shape {tuple(z.shape)}")
    if z.dtype != gm.dtype:
        raise TypeError(f"z must have the mixture's dtype ({gm.dtype}), got {z.dtype}")
    if bool((levels <= 0).any()):
        raise ValueError(f"levels must be > 0 entrywise, got a minimum of {float(levels.min())!r}")
    if prior is not None and prior.shape != levels.shape:
        raise ValueError(f"prior must have one weight per level ({levels.shape[0]}), got shape {tuple(prior.shape)}")


def _log_prior(levels, prior):
    if prior is None:
        return torch.full_like(levels, -math.log(levels.shape[0]))
    return torch.log(prior / prior.sum()).clamp_min(torch.finfo(levels.dtype).min / 4)


def _log_lik(gm, z, levels, space):
    """``log p(z | sigma_j)`` for the state in the network's space, shape ``(..., L)``."""
    out = []
    for s in levels:
        c = network_input_scale(s, space)
        out.append(gm.log_prob(z / c, s) - gm.dim * torch.log(torch.as_tensor(c, dtype=z.dtype)))
    return torch.stack(out, dim=-1)


def _posterior(gm, z, levels, prior, space):
    return torch.softmax(_log_prior(levels, prior) + _log_lik(gm, z, levels, space), dim=-1)


def _conditional_target(gm, z, sigma, prediction, space):
    """Exact :math:`R(z \\mid \\sigma)` at one level (a 0-dim tensor or float), shape of ``z``."""
    s = torch.as_tensor(sigma, dtype=z.dtype)
    x = z / network_input_scale(s, space)
    x0 = gm.denoise(x, s)
    eps = (x - x0) / s
    flat = (x0.reshape(-1, gm.dim), eps.reshape(-1, gm.dim))
    return prediction_target(*flat, s, prediction).reshape(z.shape)


def _target_coefficients(s, c, prediction):
    """``(a, b)`` with :math:`R(z \\mid \\sigma) = a\\,z + b\\,E[x_0 \\mid x]`, :math:`x = z / c`: every target is
    linear in the state and the posterior mean (:math:`E[\\varepsilon \\mid x] = (x - E[x_0 \\mid x])/\\sigma`)."""
    if prediction == "x0":
        return torch.zeros_like(s), torch.ones_like(s)
    if prediction == "eps":
        return 1 / (s * c), -1 / s
    if prediction == "flow":
        return 1 / (s * c), -(1 / s + 1)
    alpha = (1 + s.square()).rsqrt()                   # v, VP: alpha eps - sigma alpha x0
    return alpha / (s * c), -alpha * (1 / s + s)


def _unconditional_target(gm, z, levels, prior, prediction, space):
    """Fast exact :math:`R(z)`: the whitened coordinates are computed once and the posterior-weighted shrinkage is
    accumulated in each component's eigenbasis, so a level costs O(K d) per point instead of O(K d^2)."""
    U, lam, mu = gm.eigenvectors, gm.eigenvalues, gm.means
    Uz = torch.einsum("kdj,...d->...kj", U, z)                          # (..., K, d)
    Umu = torch.einsum("kdj,kd->kj", U, mu)                              # (K, d)
    c = network_input_scale(levels, space)
    c = c if isinstance(c, torch.Tensor) else torch.full_like(levels, float(c))
    log_joints, shrinks = [], []
    for j in range(levels.shape[0]):
        w = Uz / c[j] - Umu                                               # U^T (x - mu_k), x = z / c
        var = lam + levels[j].square()
        log_joints.append(gm._log_weights - 0.5 * ((w.square() / var).sum(-1) + var.log().sum(-1)
                                                   + gm.dim * math.log(2 * math.pi)))
        shrinks.append(lam / var * w)
    log_joint = torch.stack(log_joints, dim=-2)                           # (..., L, K)
    log_lik = torch.logsumexp(log_joint, dim=-1) - gm.dim * c.log()       # log p(z | sigma_j)
    post = torch.softmax(_log_prior(levels, prior) + log_lik, dim=-1)     # (..., L)
    resp = torch.softmax(log_joint, dim=-1)                               # (..., L, K)
    a, b = _target_coefficients(levels, c, prediction)
    weight = post[..., None] * b[:, None] * resp                          # (..., L, K)
    rotated = (weight[..., None] * torch.stack(shrinks, dim=-3)).sum(-3)  # (..., K, d)
    x0_part = weight.sum(-2) @ mu + torch.einsum("kij,...kj->...i", U, rotated)
    return (post @ a)[..., None] * z + x0_part


_COMMON = dict(gm=_GM, z=Tensor(..., "d", degenerate=("coincident",)), levels=Tensor("L", positive_mass=True),
               prior=Tensor("L", positive_mass=True, optional=True, degenerate=("zero_mass",)))


@accepts(**_COMMON, space=Choice(*SPACES), example=_example)
def level_posterior(gm: GaussianMixture, z: torch.Tensor, levels: torch.Tensor, prior: torch.Tensor | None = None,
                    *, space: str = "ve") -> torch.Tensor:
    """:math:`p(\\sigma_j \\mid z) \\propto \\pi_j\\, p(z \\mid \\sigma_j)`, shape ``(..., L)``.

    Args:
        gm: the data distribution; z: states in the network's ``space`` ``(..., d)`` (``"ve"``: :math:`x_0 +
            \\sigma\\varepsilon`; ``"vp"``/``"flow"``: that times :math:`c_{in}(\\sigma)`).
        levels: VE levels :math:`\\sigma_j > 0` ``(L,)``; prior: their probabilities :math:`\\pi_j` (default uniform).
    """
    _check_levels(gm, z, levels, prior)
    return _posterior(gm, z, levels, prior, space)


@accepts(gm=_GM, z=Tensor(..., "d", degenerate=("coincident",)), sigma=Real(gt=0),
         prediction=Choice(*PREDICTIONS), space=Choice(*SPACES, optional=True),
         example=lambda ctx: {k: v for k, v in _example(ctx).items() if k != "levels"} | {"sigma": 0.7})
def conditional_target(gm: GaussianMixture, z: torch.Tensor, sigma: float, *, prediction: str = "x0",
                       space: str | None = None) -> torch.Tensor:
    """The optimal level-conditioned network output :math:`R(z \\mid \\sigma) = E[r \\mid z, \\sigma]`, shape of
    ``z`` (``space`` defaults as in :func:`~paperzoo.diffusion.parametrization.denoiser_from_prediction`)."""
    space = _resolve_space(prediction, space)
    _check_levels(gm, z, torch.ones(1, dtype=z.dtype), None)
    return _conditional_target(gm, z, float(sigma), prediction, space)


@accepts(**_COMMON, prediction=Choice(*PREDICTIONS), space=Choice(*SPACES, optional=True), example=_example)
def unconditional_target(gm: GaussianMixture, z: torch.Tensor, levels: torch.Tensor,
                         prior: torch.Tensor | None = None, *, prediction: str = "x0",
                         space: str | None = None) -> torch.Tensor:
    """The optimal noise-unconditional network output :math:`R(z) = \\sum_j p(\\sigma_j \\mid z)\\,
    R(z \\mid \\sigma_j)`, shape of ``z``: the minimiser of the blind denoising loss with levels drawn from
    ``prior`` on ``levels``."""
    space = _resolve_space(prediction, space)
    _check_levels(gm, z, levels, prior)
    return _unconditional_target(gm, z, levels, prior, prediction, space)


@accepts(gm=_GM, levels=Tensor("L", positive_mass=True),
         prior=Tensor("L", positive_mass=True, optional=True, degenerate=("zero_mass",)),
         prediction=Choice(*PREDICTIONS), space=Choice(*SPACES, optional=True),
         example=lambda ctx: {k: v for k, v in _example(ctx).items() if k != "z"}, output="any")  # a function
def optimal_unconditional_denoiser(gm: GaussianMixture, levels: torch.Tensor, prior: torch.Tensor | None = None,
                                   *, prediction: str = "x0", space: str | None = None
                                   ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The VE denoiser ``model(x, sigma)`` of the optimal blind network: the sampler's level converts
    :math:`R(c_{in}(\\sigma)\\,x)` to :math:`\\hat x_0` (exactly how a trained blind network is sampled).

    With ``prediction="x0"``, ``space="ve"`` it is :math:`D^*(x) = E_{\\sigma \\mid x}[D^*(x, \\sigma)]`, which
    ignores ``sigma``; other predictions depend on it through the conversion only.
    """
    space = _resolve_space(prediction, space)
    if bool((levels <= 0).any()):
        raise ValueError(f"levels must be > 0 entrywise, got a minimum of {float(levels.min())!r}")
    if prior is not None and prior.shape != levels.shape:
        raise ValueError(f"prior must have one weight per level ({levels.shape[0]}), got shape {tuple(prior.shape)}")

    def network(z, sigma):
        return _unconditional_target(gm, z, levels, prior, prediction, space)

    return denoiser_from_prediction(network, prediction, space=space)


class EffectiveTargetError(NamedTuple):
    """Exact error of the blind target at one true level (means over draws, per coordinate).

    Attributes:
        error: :math:`E_z \\|R(z) - R(z \\mid \\sigma)\\|^2 / d`.
        bound: the Jensen bound :math:`E_z E_{\\sigma' \\mid z} \\|R(z \\mid \\sigma') - R(z \\mid \\sigma)\\|^2 / d`
            (``>= error``).
        log_sigma_std: the mean over draws of the posterior standard deviation of :math:`\\log\\sigma'` given
            :math:`z`: how well the state reveals its level.
    """

    error: float
    bound: float
    log_sigma_std: float


@accepts(gm=_GM, sigma=Real(gt=0), levels=Tensor("L", positive_mass=True),
         prior=Tensor("L", positive_mass=True, optional=True, degenerate=("zero_mass",)),
         prediction=Choice(*PREDICTIONS), space=Choice(*SPACES, optional=True), n=Int(ge=1),
         generator=Generator(),
         example=lambda ctx: {k: v for k, v in _example(ctx).items() if k != "z"} | {"sigma": 0.7, "n": 16},
         output="any")
def effective_target_error(gm: GaussianMixture, sigma: float, levels: torch.Tensor,
                           prior: torch.Tensor | None = None, *, prediction: str = "x0", space: str | None = None,
                           n: int = 1024, generator: torch.Generator | None = None) -> EffectiveTargetError:
    """The error of the optimal blind network at true level ``sigma`` and its Jensen bound (the paper's
    Statement 2), by Monte Carlo over ``n`` draws :math:`z = c_{in}(\\sigma)(x_0 + \\sigma\\varepsilon)`."""
    space = _resolve_space(prediction, space)
    _check_levels(gm, gm.means[:1], levels, prior)
    if levels.dtype != gm.dtype:
        raise TypeError(f"levels must have the mixture's dtype ({gm.dtype}), got {levels.dtype}")
    x = gm.sample(n, sigma=float(sigma), generator=generator)
    z = x * network_input_scale(float(sigma), space)
    true = _conditional_target(gm, z, float(sigma), prediction, space)
    post = _posterior(gm, z, levels, prior, space)                                        # (n, L)
    targets = torch.stack([_conditional_target(gm, z, s, prediction, space) for s in levels], dim=-2)
    blind = (post[..., None] * targets).sum(-2)
    error = float((blind - true).square().mean())
    bound = float((post * (targets - true[:, None]).square().mean(-1)).sum(-1).mean())
    log_s = levels.log()
    mean = post @ log_s
    std = (post @ log_s.square() - mean.square()).clamp_min(0).sqrt()
    return EffectiveTargetError(error, bound, float(std.mean()))


@accepts(kappa=Tensor("n"), eta=Tensor("n"), target_error=Tensor("n", nonnegative=True),
         lipschitz=Tensor("n", nonnegative=True))
def accumulated_error_bound(kappa: torch.Tensor, eta: torch.Tensor, target_error: torch.Tensor,
                            lipschitz: torch.Tensor) -> torch.Tensor:
    """The bound on the state error after each of ``n`` sampler steps :math:`x_{i+1} = \\kappa_i x_i +
    \\eta_i F(x_i)` when the network's output is off by at most ``target_error`` :math:`\\delta_i` and has
    Lipschitz constant ``lipschitz`` :math:`L_i`: :math:`e_0 = 0`, :math:`e_{i+1} = (|\\kappa_i| + |\\eta_i| L_i)
    e_i + |\\eta_i| \\delta_i`. Returns :math:`(e_1, \\dots, e_n)`, shape ``(n,)``."""
    out = torch.empty_like(target_error)
    e = target_error.new_zeros(())
    for i in range(kappa.shape[0]):
        e = (kappa[i].abs() + eta[i].abs() * lipschitz[i]) * e + eta[i].abs() * target_error[i]
        out[i] = e
    return out


class NoiseUnconditional(nn.Module):
    """A network :math:`F_\\theta(z, \\sigma)` turned noise-unconditional: it is always called with the fixed
    ``level``, so its output depends on the state alone (same architecture and parameters, so a fair ablation).

    Args:
        network: a ``network(x_in, sigma)`` module (e.g. :class:`~paperzoo.diffusion.training.MLPDenoiser`); its
            ``prediction`` and ``space`` attributes are carried over.
        level: the constant level it sees (its embedding becomes a constant input).

    ``denoiser()`` gives the VE denoiser for the samplers, which still convert with their own level.
    """

    @accepts(network=Module(), level=Real(gt=0),
             example=lambda ctx: {"network": __import__("paperzoo.diffusion.training", fromlist=["MLPDenoiser"])
                                  .MLPDenoiser(2, 8, 1).to(ctx.dtype)})
    def __init__(self, network: nn.Module, level: float = 1.0):
        super().__init__()
        self.network, self.level = network, float(level)
        self.prediction = getattr(network, "prediction", None)
        self.space = getattr(network, "space", None)

    def forward(self, x_in: torch.Tensor, sigma=None) -> torch.Tensor:
        return self.network(x_in, torch.full((x_in.shape[0],), self.level, dtype=x_in.dtype, device=x_in.device))

    def denoiser(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The VE denoiser ``model(x, sigma)``: the blind output converted with the sampler's ``sigma``."""
        if self.prediction is None:
            raise ValueError("network must have a prediction attribute for denoiser()")
        return denoiser_from_prediction(self, self.prediction, space=self.space)
