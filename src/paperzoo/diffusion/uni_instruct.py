"""Uni-Instruct: one-step distillation by the diffusion expansion of an f-divergence.

References: Uni-Instruct: One-step Diffusion Model through Unified Diffusion Divergence Instruction, 2025.

Built on :mod:`paperzoo.diffusion.f_distill` (its divergences, weights :math:`h(r) = f''(r) r^2`, kernel-density
student and generator). For the VE heat flow (:math:`t = \\sigma^2`), the f-divergence
:math:`D_f(p\\|q) = \\int q f(p/q)` between the teacher's and the student's noisy laws decays as
:math:`\\frac{d}{d\\sigma} D_f(p_\\sigma\\|q_\\sigma) = -\\sigma\\, F_f(\\sigma)` with the weighted Fisher divergence

.. math::
    F_f(\\sigma) = E_{x\\sim q_\\sigma}\\bigl[h(r(x))\\,\\|d(x)\\|^2\\bigr],\\qquad d = \\nabla\\log p_\\sigma-\\nabla\\log q_\\sigma,
    \\quad r = p_\\sigma/q_\\sigma,

so :math:`D_f(p_{\\sigma_a}\\|q_{\\sigma_a}) - D_f(p_{\\sigma_b}\\|q_{\\sigma_b}) = \\int_{\\sigma_a}^{\\sigma_b}\\sigma F_f\\,d\\sigma`
(the "expanded" f-divergence; a level weighting :math:`w(\\sigma)` turns it into the paper's family). Its generator
gradient is intractable as written (:math:`q_\\theta` enters the expectation, the ratio and the score). Two
identities make it tractable: :math:`E_q[u\\,\\partial_\\theta\\log q] = \\partial_\\theta E_z[u(x)]` and
:math:`E_q[u^\\top s_q] = E_{x_0, \\varepsilon}[u^\\top \\nabla\\log q(x\\mid x_0)]` with
:math:`\\nabla\\log q(x\\mid x_0) = -\\varepsilon/\\sigma` (the score-implicit-matching identity). With
:math:`r\\,h'(r) = c(r)\\,h(r)`, the per-sample surrogate, differentiated through the noisy state
:math:`x = G_\\theta(z) + \\sigma\\varepsilon` only (teacher and student scores as fixed functions of :math:`x`), is

.. math::
    S_f(x) = h(r)\\,\\bigl[d^\\top(\\nabla\\log p_\\sigma + \\nabla\\log q_\\sigma + 2\\varepsilon/\\sigma) - c(r)\\|d\\|^2\\bigr],
    \\qquad E[\\nabla_\\theta S_f] = \\nabla_\\theta F_f(\\sigma).

For the reverse KL (:math:`h = 1, c = 0`), :math:`\\sigma^4 S` is
:math:`(D_p - D_q)^\\top(D_p + D_q - 2x_0)` in denoiser terms, the score-identity (SiD / SIM) loss; the
level-integrated gradient equals the difference of f-distill's (and for the reverse KL, DMD's / Diff-Instruct's)
gradients at the end levels, which is how the family unifies the two camps. :math:`c(r)`:
``reverse_kl`` 0, ``softened_rkl`` :math:`-r/(r+1)`, ``js`` :math:`1/(r+1)`, ``squared_hellinger`` 1/2,
``forward_kl`` 1, ``jeffreys`` :math:`r/(r+1)`.

As in f-distill, ``normalize=True`` divides :math:`h` by its (detached) batch mean; the per-level scale is a
``weighting(sigma)`` hook, default :math:`\\sigma^4` (the x0-space scale of the SiD form).

Example:
    >>> import torch
    >>> from paperzoo.diffusion.mixture import GaussianMixture
    >>> p = GaussianMixture(torch.zeros(1, 1), torch.ones(1, 1, 1))
    >>> q = GaussianMixture(torch.ones(1, 1), torch.ones(1, 1, 1))
    >>> x, eps, sigma = torch.zeros(3, 1), torch.zeros(3, 1), torch.ones(3)
    >>> float(uni_instruct_loss(x, eps, sigma, p, q, "reverse_kl"))  # at x = 0: d = -1/2, s_p + s_q = 1/2
    -0.25
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from paperzoo.core.accepts import Choice, Flag, Function, Generator, Instance, Int, Module, Real, Tensor, accepts
from paperzoo.diffusion.f_distill import F_DIVERGENCES, OneStepGenerator, _levels, _log_h, _log_prob_and_score
from paperzoo.diffusion.mixture import GaussianMixture

__all__ = ["uni_instruct_loss", "uni_instruct_distill"]

_DIVERGENCE = Choice(*F_DIVERGENCES)
_GM = Instance(GaussianMixture, what="GaussianMixture")


def _log_c_sign(log_ratio: torch.Tensor, divergence: str) -> torch.Tensor:
    """c(r) = r h'(r) / h(r)."""
    if divergence in ("reverse_kl",):
        return torch.zeros_like(log_ratio)
    if divergence == "softened_rkl":
        return -torch.sigmoid(log_ratio)
    if divergence == "js":
        return torch.sigmoid(-log_ratio)
    if divergence == "squared_hellinger":
        return torch.full_like(log_ratio, 0.5)
    if divergence == "forward_kl":
        return torch.ones_like(log_ratio)
    return torch.sigmoid(log_ratio)  # jeffreys


def _kde_log_prob_and_score(samples, bandwidth, x, sigma):
    """Isotropic fast path of ``_log_prob_and_score(student_density(samples, bandwidth), x, sigma)``."""
    var = (bandwidth**2 + sigma.square())[:, None]  # (N, 1)
    sq = x.square().sum(-1, keepdim=True) - 2 * x @ samples.T + samples.square().sum(-1)  # |x_i - y_j|^2, (N, M)
    log_joint = -0.5 * sq / var - 0.5 * x.shape[1] * torch.log(2 * math.pi * var)
    w = torch.softmax(log_joint, dim=1)
    return torch.logsumexp(log_joint, 1) - math.log(samples.shape[0]), -(x - w @ samples) / var


def _loss(x, noise, sigma, teacher, student, divergence, normalize, weighting):
    log_p, s_p = _log_prob_and_score(teacher, x, sigma)
    if isinstance(student, tuple):  # (detached samples, bandwidth): the kernel density, isotropic fast path
        log_q, s_q = _kde_log_prob_and_score(*student, x, sigma)
    else:
        log_q, s_q = _log_prob_and_score(student, x, sigma)
    lr = log_p - log_q
    log_h = _log_h(lr, divergence)
    if normalize:  # h / sg(mean h), in the log domain
        log_h = log_h - (torch.logsumexp(log_h, 0) - math.log(log_h.shape[0])).detach()
    d = s_p - s_q
    inner = (d * (s_p + s_q + 2 * noise / sigma[:, None])).sum(-1) - _log_c_sign(lr, divergence) * d.square().sum(-1)
    scale = sigma**4 if weighting is None else weighting(sigma)
    if not isinstance(scale, torch.Tensor) or scale.shape != sigma.shape:
        raise ValueError(f"weighting must return a tensor of shape {tuple(sigma.shape)} (one weight per sample)")
    return (scale * torch.exp(log_h) * inner).mean()


def _example_loss(ctx):
    g, dt = ctx.generator, ctx.dtype
    eye = torch.eye(2, dtype=dt)
    return {"x": torch.randn(6, 2, generator=g, dtype=dt), "noise": torch.randn(6, 2, generator=g, dtype=dt),
            "sigma": torch.rand(6, generator=g, dtype=dt) + 0.1,
            "teacher": GaussianMixture(torch.randn(2, 2, generator=g, dtype=dt), eye.expand(2, 2, 2).clone()),
            "student": GaussianMixture(torch.randn(3, 2, generator=g, dtype=dt), eye.expand(3, 2, 2).clone())}


@accepts(x=Tensor("N", "d"), noise=Tensor("N", "d"), sigma=Tensor("N", positive_mass=True), teacher=_GM,
         student=_GM, divergence=_DIVERGENCE, normalize=Flag(), weighting=Function(optional=True),
         example=_example_loss)
def uni_instruct_loss(x: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor, teacher: GaussianMixture,
                      student: GaussianMixture, divergence: str = "forward_kl", *, normalize: bool = True,
                      weighting: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The Uni-Instruct surrogate :math:`\\frac1N\\sum_i w(\\sigma_i)\\,S_f(x_i)` (0-dim); its gradient through
    the differentiable noisy states ``x`` (N, d) estimates :math:`\\nabla_\\theta F_f`.

    Args:
        x: noisy generator states :math:`G_\\theta(z) + \\sigma\\varepsilon`, ``(N, d)`` (keep their graph).
        noise: the :math:`\\varepsilon` used for ``x``, ``(N, d)``.
        sigma: the levels ``(N,)``, ``> 0``.
        teacher: the teacher's clean law (exact mixture); its noisy score and density are used.
        student: the student's clean law as a fixed mixture (e.g. :func:`~paperzoo.diffusion.f_distill.student_density`
            of a detached batch); its noisy score and density are used as fixed functions of ``x``.
        divergence: one of :data:`~paperzoo.diffusion.f_distill.F_DIVERGENCES`; the paper's best is ``forward_kl``.
        normalize: divide :math:`h` by its detached batch mean.
        weighting: ``w(sigma) -> (N,)``; default :math:`\\sigma^4`.
    """
    if x.shape != noise.shape:
        raise ValueError(f"noise must have the shape of x {tuple(x.shape)}, got {tuple(noise.shape)}")
    if bool((sigma <= 0).any()):
        raise ValueError(f"sigma must be > 0 entrywise, got a minimum of {float(sigma.min())!r}")
    for name, gm in (("teacher", teacher), ("student", student)):
        if gm.dim != x.shape[1]:
            raise ValueError(f"{name} has dimension {gm.dim}, but x has {x.shape[1]} columns")
    return _loss(x, noise, sigma, teacher, student, divergence, normalize, weighting)


@accepts(teacher=_GM, network=Module(), divergence=_DIVERGENCE, steps=Int(ge=0), lr=Real(gt=0),
         batch_size=Int(ge=2), sigma_min=Real(gt=0), sigma_max=Real(gt=0), bandwidth=Real(gt=0), normalize=Flag(),
         weighting=Function(optional=True), generator=Generator(),
         example=lambda ctx: {"teacher": GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=ctx.dtype),
                                                         0.1 * torch.eye(2, dtype=ctx.dtype).expand(2, 2, 2).clone()),
                              "network": OneStepGenerator(2, 8, 1).to(ctx.dtype), "steps": 2, "batch_size": 8},
         output="any")
def uni_instruct_distill(teacher: GaussianMixture, network: nn.Module, divergence: str = "forward_kl", *,
                         steps: int = 1000, lr: float = 1e-3, batch_size: int = 256, sigma_min: float = 0.02,
                         sigma_max: float = 5.0, bandwidth: float = 0.1, normalize: bool = True,
                         weighting: Callable[[torch.Tensor], torch.Tensor] | None = None,
                         generator: torch.Generator | None = None) -> nn.Module:
    """Train the one-step generator ``network`` in place with Adam on :func:`uni_instruct_loss` against an exact
    mixture teacher; the same loop, level law and kernel-density student as
    :func:`~paperzoo.diffusion.f_distill.distill_one_step`, so the two differ in the update only. Returns it."""
    if sigma_max <= sigma_min:
        raise ValueError(f"sigma_max must be > sigma_min ({sigma_min!r}), got {sigma_max!r}")
    dtype, d = teacher.dtype, teacher.dim
    opt = torch.optim.Adam(network.parameters(), lr=lr)
    for _ in range(steps):
        z = torch.randn(batch_size, d, generator=generator, dtype=dtype)
        with torch.no_grad():
            fake = (network(torch.randn(batch_size, d, generator=generator, dtype=dtype)), bandwidth)
        sigma = _levels(batch_size, sigma_min, sigma_max, generator, dtype)
        eps = torch.randn(batch_size, d, generator=generator, dtype=dtype)
        loss = _loss(network(z) + sigma[:, None] * eps, eps, sigma, teacher, fake, divergence, normalize, weighting)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return network
