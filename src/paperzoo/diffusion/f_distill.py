"""f-distill: one-step distillation of a diffusion model by f-divergence distribution matching.

References: One-step Diffusion Models with f-Divergence Distribution Matching (Xu, Nie, Vahdat), 2025.

A one-step generator :math:`x_0 = G_\\theta(z)`, :math:`z \\sim \\mathcal N(0, I)`, is noised at each level,
:math:`x = x_0 + \\sigma\\varepsilon` (VE), giving the student's noisy law :math:`q_\\sigma`; the teacher's is
:math:`p_\\sigma`. With :math:`D_f(p\\,\\|\\,q) = \\int q\\, f(p/q)` (so :math:`f(r) = -\\log r` is the reverse KL
:math:`KL(q\\|p)`, :math:`f(r) = r\\log r` the forward KL :math:`KL(p\\|q)`), the paper's Theorem 1 gives the
gradient as the variational-score-distillation (DMD) direction weighted by a function of the density ratio
:math:`r = p_\\sigma(x)/q_\\sigma(x)`:

.. math::
    \\nabla_\\theta D_f(p_\\sigma \\| q_\\sigma) = E_{z, \\varepsilon}\\Bigl[\\, h(r(x))\\,
    \\bigl(\\nabla_x \\log q_\\sigma(x) - \\nabla_x \\log p_\\sigma(x)\\bigr)^\\top \\frac{\\partial x}{\\partial\\theta}\\Bigr],
    \\qquad h(r) = f''(r)\\, r^2 .

The weightings (the paper's Table 1), as functions of :math:`\\log r` (``log_ratio``):

====================  =====================================  ========================
``divergence``        :math:`f(r)`                           :math:`h(r)`
====================  =====================================  ========================
``reverse_kl``        :math:`-\\log r`                        :math:`1` (DMD / VSD)
``softened_rkl``      :math:`(r+1)\\log\\frac{r+1}{2r}`         :math:`1/(r+1)`
``js``                :math:`r\\log r-(r+1)\\log\\frac{r+1}{2}`  :math:`r/(r+1)`
``squared_hellinger`` :math:`1-\\sqrt r`                      :math:`\\sqrt r / 4`
``forward_kl``        :math:`r\\log r`                        :math:`r`
``jeffreys``          :math:`(r-1)\\log r`                    :math:`r+1`
====================  =====================================  ========================

An increasing :math:`h` puts weight where the teacher has more density than the student (modes the student
misses): the less mode-seeking divergences. The paper normalises :math:`h` by its batch mean (the first stage of
its two-stage normalisation) so that every divergence takes steps of the same overall size; ``normalize=True``.
The per-level scale of the score difference is a ``weighting(sigma)`` hook (default :math:`\\sigma^2`, which turns
the score difference into the denoiser difference :math:`D_q - D_p`, the x0-space direction DMD uses).

At mixture scale every quantity is computed without a network where possible: the teacher is an exact
:class:`~paperzoo.diffusion.mixture.GaussianMixture` (exact score and log density at every level); the student's
noisy law is estimated by a Gaussian kernel density of an independent, detached batch of generator samples,
:math:`\\hat q_\\sigma = \\frac1M\\sum_j \\mathcal N(G(z_j'), (b^2 + \\sigma^2) I)`, itself a Gaussian mixture, so its
score and log density are exact for the estimate (:func:`student_density`). The ratio is
:math:`\\log r = \\log p_\\sigma - \\log \\hat q_\\sigma` (the paper estimates it with a GAN discriminator on the
fake-score network's features; a stated deviation).

Pieces: :func:`f_divergence_function` (:math:`f`), :func:`f_divergence_weight` (:math:`h`),
:func:`f_distill_direction` (the per-sample gradient in x), :func:`f_distill_loss` (the surrogate whose
:math:`\\theta`-gradient is the theorem's), :func:`student_density`, and the recipe :func:`distill_one_step`.

Example:
    >>> import torch
    >>> lr = torch.tensor([-2.0, 0.0, 2.0])
    >>> f_divergence_weight(lr, "reverse_kl").tolist(), f_divergence_weight(lr, "forward_kl")[1].item()
    ([1.0, 1.0, 1.0], 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from paperzoo.core.accepts import Choice, Flag, Function, Generator, Instance, Int, Module, Real, Tensor, accepts
from paperzoo.diffusion.mixture import GaussianMixture

__all__ = ["F_DIVERGENCES", "f_divergence_function", "f_divergence_weight", "f_distill_direction", "f_distill_loss",
           "student_density", "distill_one_step", "OneStepGenerator"]

#: the divergences of the paper's Table 1 with a twice-differentiable f (total variation is left out)
F_DIVERGENCES = ("reverse_kl", "softened_rkl", "js", "squared_hellinger", "forward_kl", "jeffreys")
_DIVERGENCE = Choice(*F_DIVERGENCES)


def _f(r: torch.Tensor, divergence: str) -> torch.Tensor:
    if divergence == "reverse_kl":
        return -torch.log(r)
    if divergence == "softened_rkl":
        return (r + 1) * torch.log((r + 1) / (2 * r))
    if divergence == "js":
        return r * torch.log(r) - (r + 1) * torch.log((r + 1) / 2)
    if divergence == "squared_hellinger":
        return 1 - torch.sqrt(r)
    if divergence == "forward_kl":
        return r * torch.log(r)
    return (r - 1) * torch.log(r)  # jeffreys


def _log_h(log_ratio: torch.Tensor, divergence: str) -> torch.Tensor:
    # log h from log r: no r/(r+1) as inf/inf, and the batch normalisation stays a softmax.
    if divergence == "reverse_kl":
        return torch.zeros_like(log_ratio)
    if divergence == "softened_rkl":
        return -nn.functional.softplus(log_ratio)
    if divergence == "js":
        return -nn.functional.softplus(-log_ratio)
    if divergence == "squared_hellinger":
        return 0.5 * log_ratio - math.log(4.0)
    if divergence == "forward_kl":
        return log_ratio
    return nn.functional.softplus(log_ratio)  # jeffreys: log(r + 1)


def _h(log_ratio: torch.Tensor, divergence: str) -> torch.Tensor:
    return torch.exp(_log_h(log_ratio, divergence))


@accepts(r=Tensor(..., positive_mass=True), divergence=_DIVERGENCE,
         example=lambda ctx: {"r": torch.rand(5, generator=ctx.generator, dtype=ctx.dtype) + 0.1,
                              "divergence": "js"})
def f_divergence_function(r: torch.Tensor, divergence: str) -> torch.Tensor:
    """The generator :math:`f(r)` of ``divergence`` (convex, :math:`f(1) = 0`), elementwise; ``r > 0``."""
    if bool((r <= 0).any()):
        raise ValueError(f"r must be > 0 entrywise, got a minimum of {float(r.min())!r}")
    return _f(r, divergence)


@accepts(log_ratio=Tensor(..., allow_empty=True), divergence=_DIVERGENCE,
         example=lambda ctx: {"log_ratio": torch.randn(5, generator=ctx.generator, dtype=ctx.dtype),
                              "divergence": "js"})
def f_divergence_weight(log_ratio: torch.Tensor, divergence: str) -> torch.Tensor:
    """The weighting :math:`h(r) = f''(r)\\,r^2` at :math:`r = \\exp(\\text{log\\_ratio})`, elementwise
    (:math:`r = p_\\sigma / q_\\sigma`, teacher over student)."""
    return _h(log_ratio, divergence)


def _direction(real_score, fake_score, log_ratio, sigma, divergence, normalize, weighting):
    log_h = _log_h(log_ratio, divergence)
    # h / mean(h) = N softmax(log h): finite even where r overflows (a student estimate far below the teacher)
    h = log_h.shape[0] * torch.softmax(log_h, dim=0) if normalize else torch.exp(log_h)
    scale = sigma.square() if weighting is None else weighting(sigma)
    if not isinstance(scale, torch.Tensor) or scale.shape != sigma.shape:
        raise ValueError(f"weighting must return a tensor of shape {tuple(sigma.shape)} (one weight per sample)")
    return (h * scale)[:, None] * (fake_score - real_score)


def _example_direction(ctx):
    g = ctx.generator
    return {"real_score": torch.randn(6, 2, generator=g, dtype=ctx.dtype),
            "fake_score": torch.randn(6, 2, generator=g, dtype=ctx.dtype),
            "log_ratio": torch.randn(6, generator=g, dtype=ctx.dtype),
            "sigma": torch.rand(6, generator=g, dtype=ctx.dtype) + 0.1, "divergence": "js"}


@accepts(real_score=Tensor("N", "d"), fake_score=Tensor("N", "d"), log_ratio=Tensor("N"),
         sigma=Tensor("N", positive_mass=True), divergence=_DIVERGENCE, normalize=Flag(),
         weighting=Function(optional=True), example=_example_direction)
def f_distill_direction(real_score: torch.Tensor, fake_score: torch.Tensor, log_ratio: torch.Tensor,
                        sigma: torch.Tensor, divergence: str = "js", *, normalize: bool = True,
                        weighting: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The per-sample gradient of :math:`D_f` with respect to the noisy state,
    :math:`g_i = w(\\sigma_i)\\,\\tilde h_i\\,(\\nabla\\log q_{\\sigma_i}(x_i) - \\nabla\\log p_{\\sigma_i}(x_i))`,
    shape ``(N, d)``.

    Args:
        real_score: teacher score :math:`\\nabla\\log p_\\sigma` at the states, ``(N, d)``.
        fake_score: student score :math:`\\nabla\\log q_\\sigma` at the states, ``(N, d)``.
        log_ratio: :math:`\\log r = \\log p_\\sigma - \\log q_\\sigma` at the states, ``(N,)``.
        sigma: the states' levels ``(N,)``, ``> 0``.
        divergence: one of :data:`F_DIVERGENCES`; ``"reverse_kl"`` is DMD's direction.
        normalize: :math:`\\tilde h = h / \\operatorname{mean}_i h_i` (batch normalisation) or :math:`h` itself.
        weighting: ``w(sigma) -> (N,)``; default :math:`\\sigma^2`.
    """
    if bool((sigma <= 0).any()):
        raise ValueError(f"sigma must be > 0 entrywise, got a minimum of {float(sigma.min())!r}")
    return _direction(real_score, fake_score, log_ratio, sigma, divergence, normalize, weighting)


@accepts(x=Tensor("N", "d"), direction=Tensor("N", "d"),
         example=lambda ctx: {"x": torch.randn(4, 2, generator=ctx.generator, dtype=ctx.dtype),
                              "direction": torch.randn(4, 2, generator=ctx.generator, dtype=ctx.dtype)})
def f_distill_loss(x: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """The surrogate :math:`\\frac1N\\sum_i \\langle x_i, \\operatorname{sg}(g_i)\\rangle`: its gradient through
    ``x`` (the generator's differentiable noisy states ``(N, d)``) is the theorem's estimate with the direction
    ``(N, d)`` of :func:`f_distill_direction`. A 0-dim tensor."""
    return (x * direction.detach()).sum(-1).mean()


@accepts(samples=Tensor("M", "d"), bandwidth=Real(gt=0),
         example=lambda ctx: {"samples": torch.randn(5, 2, generator=ctx.generator, dtype=ctx.dtype),
                              "bandwidth": 0.2}, output="any")
def student_density(samples: torch.Tensor, bandwidth: float) -> GaussianMixture:
    """The kernel density :math:`\\frac1M\\sum_j \\mathcal N(x_j, b^2 I)` of generator samples ``(M, d)`` (detached)
    as a :class:`GaussianMixture`: its ``score(x, sigma)`` and ``log_prob(x, sigma)`` are those of the estimate's
    noisy law :math:`\\hat q_\\sigma` (kernel variance :math:`b^2 + \\sigma^2`)."""
    d = samples.shape[1]
    covs = bandwidth**2 * torch.eye(d, dtype=samples.dtype, device=samples.device).expand(samples.shape[0], d, d)
    return GaussianMixture(samples.detach(), covs.clone())


class OneStepGenerator(nn.Module):
    """A small MLP one-step generator :math:`G(z)`, ``(N, dim) -> (N, dim)`` (SiLU, ``depth`` hidden layers)."""

    @accepts(dim=Int(ge=1), hidden=Int(ge=1), depth=Int(ge=1))
    def __init__(self, dim: int, hidden: int = 64, depth: int = 2):
        super().__init__()
        layers, width = [], dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def _log_prob_and_score(gm: GaussianMixture, x: torch.Tensor, sigma: torch.Tensor):
    """Unchecked ``(gm.log_prob(x, sigma), gm.score(x, sigma))`` from one pass over the components."""
    z, var, log_joint = gm._components(x, sigma)
    r = torch.softmax(log_joint, dim=-1)[..., None]
    return torch.logsumexp(log_joint, dim=-1), -torch.einsum("kij,...kj->...i", gm.eigenvectors, r * z / var)


def _levels(n, sigma_min, sigma_max, g, dtype):
    u = torch.rand(n, generator=g, dtype=torch.float64)
    return torch.exp(math.log(sigma_min) + u * (math.log(sigma_max) - math.log(sigma_min))).to(dtype)


@accepts(teacher=Instance(GaussianMixture, what="GaussianMixture"), network=Module(), divergence=_DIVERGENCE,
         steps=Int(ge=0), lr=Real(gt=0), batch_size=Int(ge=2), sigma_min=Real(gt=0), sigma_max=Real(gt=0),
         bandwidth=Real(gt=0), normalize=Flag(), weighting=Function(optional=True), generator=Generator(),
         example=lambda ctx: {"teacher": GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=ctx.dtype),
                                                         0.1 * torch.eye(2, dtype=ctx.dtype).expand(2, 2, 2).clone()),
                              "network": OneStepGenerator(2, 8, 1).to(ctx.dtype), "steps": 2, "batch_size": 8},
         output="any")
def distill_one_step(teacher: GaussianMixture, network: nn.Module, divergence: str = "js", *, steps: int = 1000,
                     lr: float = 1e-3, batch_size: int = 256, sigma_min: float = 0.02, sigma_max: float = 5.0,
                     bandwidth: float = 0.1, normalize: bool = True,
                     weighting: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     generator: torch.Generator | None = None) -> nn.Module:
    """Train the one-step generator ``network`` (``z (N, d) -> x0 (N, d)``, the teacher's ``d``) in place with
    Adam by the f-distill update against an exact mixture teacher; returns it.

    Each step: levels log-uniform on ``[sigma_min, sigma_max]``; states :math:`x = G(z) + \\sigma\\varepsilon`;
    exact teacher score and log density; student score and log density from :func:`student_density` of an
    independent batch of ``batch_size`` generator samples with kernel width ``bandwidth``; the direction of
    :func:`f_distill_direction`; one Adam step on :func:`f_distill_loss`.
    """
    if sigma_max <= sigma_min:
        raise ValueError(f"sigma_max must be > sigma_min ({sigma_min!r}), got {sigma_max!r}")
    dtype, d = teacher.dtype, teacher.dim
    opt = torch.optim.Adam(network.parameters(), lr=lr)
    for _ in range(steps):
        z = torch.randn(batch_size, d, generator=generator, dtype=dtype)
        with torch.no_grad():
            fake = student_density(network(torch.randn(batch_size, d, generator=generator, dtype=dtype)), bandwidth)
        sigma = _levels(batch_size, sigma_min, sigma_max, generator, dtype)
        x = network(z) + sigma[:, None] * torch.randn(batch_size, d, generator=generator, dtype=dtype)
        with torch.no_grad():
            xd = x.detach()
            log_p, real_score = _log_prob_and_score(teacher, xd, sigma)
            log_q, fake_score = _log_prob_and_score(fake, xd, sigma)
            direction = _direction(real_score, fake_score, log_p - log_q, sigma, divergence, normalize, weighting)
        loss = (x * direction).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return network
