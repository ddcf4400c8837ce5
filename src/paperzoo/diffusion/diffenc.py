"""DiffEnc: variational diffusion whose forward process has a learned, data- and time-dependent mean.

References: DiffEnc: Variational Diffusion with a Learned Encoder, 2024 (Nielsen, Christensen, Dittadi, Winther).

The forward marginal is :math:`q(z_t \\mid x) = \\mathcal N(\\alpha_t x_\\phi(x, \\gamma_t), \\sigma_t^2 I)` with
VDM's variance-preserving :math:`\\alpha_t^2 = \\operatorname{sigmoid}(-\\gamma_t)`,
:math:`\\sigma_t^2 = \\operatorname{sigmoid}(\\gamma_t)` (:mod:`~paperzoo.diffusion.vdm`) and the encoder mean

.. math::
    x_\\phi(x, \\gamma) = x + \\sigma^2(\\gamma)\\,\\bigl(y_\\phi(x, \\gamma) - x\\bigr)
        = \\alpha^2 x + \\sigma^2 y_\\phi(x, \\gamma),

so :math:`x_\\phi \\to x` as :math:`\\sigma \\to 0`, whatever the inner encoder :math:`y_\\phi`. The continuous-time
diffusion loss gains the encoder's derivative: with the model's estimate
:math:`\\hat x = (z_t - \\sigma_t \\hat\\varepsilon)/\\alpha_t`,

.. math::
    \\mathcal L_\\infty = \\tfrac12 E_{t, \\varepsilon}\\Bigl[\\gamma'(t)\\, e^{-\\gamma_t}
        \\bigl\\| \\hat x - \\bigl(x_\\phi - \\partial_\\gamma x_\\phi\\bigr) \\bigr\\|^2\\Bigr]
      = \\tfrac12 E\\Bigl[\\gamma'(t)\\, \\bigl\\| \\varepsilon - \\hat\\varepsilon
        + \\tfrac{\\alpha_t}{\\sigma_t}\\, \\partial_\\gamma x_\\phi(x, \\gamma_t) \\bigr\\|^2\\Bigr],

the VDM diffusion loss with the offset :math:`o = (\\alpha/\\sigma)\\, \\partial_\\gamma x_\\phi`
(:func:`diffenc_encoder` hands :func:`~paperzoo.diffusion.vdm.vdm_nelbo` the mean and this offset; the prior and
reconstruction terms use :math:`x_\\phi` at :math:`t = 1` and :math:`t = 0`). A zero correction,
:math:`y_\\phi = x`, gives VDM exactly.

Finite depth and the variance ratio :math:`w`: if the generative transition's variance is :math:`w` times the
reverse encoder's, each of the :math:`T` steps' KL divides its mean term by :math:`w` and adds
:math:`\\tfrac D2 (w^{-1} - 1 + \\log w)`, so
:math:`\\mathcal L_T^w = \\mathcal L_T / w + \\tfrac{TD}2 (w^{-1} - 1 + \\log w)`
(:func:`weighted_diffusion_loss`), minimised at :math:`w^* = 1 + 2\\mathcal L_T/(TD)` (:func:`optimal_variance_ratio`);
as :math:`T \\to \\infty` the extra term diverges unless :math:`w = 1`.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.vdm import LinearLogSNR, vdm_nelbo
    >>> enc = DiffEncEncoder(2, 16, gamma_min=-13.3, gamma_max=5.0).double()
    >>> x = torch.randn(8, 2, dtype=torch.float64)
    >>> terms = vdm_nelbo(lambda z, t, g: torch.zeros_like(z), LinearLogSNR(), x, encoder=diffenc_encoder(enc))
    >>> tuple(terms.total.shape)
    (8,)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from paperzoo.core.accepts import Choice, Instance, Int, Real, Tensor, accepts

__all__ = ["DiffEncEncoder", "diffenc_encoder", "diffenc_mean", "weighted_diffusion_loss",
           "optimal_variance_ratio", "INNER_PARAMETRIZATIONS"]

#: ``"tanh"``: :math:`y_\phi = \tanh(h_\phi)` (the official configs' bounded inner encoder, data in [-1, 1]);
#: ``"residual"``: :math:`y_\phi = x + h_\phi` (the identity-at-zero variant: VDM at initialisation)
INNER_PARAMETRIZATIONS = ("tanh", "residual")


class DiffEncEncoder(nn.Module):
    """The encoder mean :math:`x_\\phi(x, \\gamma) = x + \\sigma^2(\\gamma)(y_\\phi(x, \\gamma) - x)` with an MLP
    inner encoder :math:`h_\\phi` of :math:`x` and Fourier features of
    :math:`s = (\\gamma - \\gamma_{min})/(\\gamma_{max} - \\gamma_{min})`.

    Args:
        dim: :math:`D`; hidden, depth: the MLP's width and number of hidden layers.
        gamma_min, gamma_max: the schedule's range, to normalise :math:`\\gamma`.
        inner: ``"tanh"`` or ``"residual"`` (:data:`INNER_PARAMETRIZATIONS`).
        n_frequencies: Fourier features of :math:`s`.

    The last layer starts at zero (as the official code's output convolution), so at initialisation
    :math:`y_\\phi = 0` (``"tanh"``: :math:`x_\\phi = \\alpha^2 x`) or :math:`y_\\phi = x` (``"residual"``: VDM).
    ``forward(x, gamma)``: ``x`` ``(N, D)``, ``gamma`` ``(N,)`` -> :math:`x_\\phi` ``(N, D)``; ``inner(x, gamma)``
    gives :math:`y_\\phi`.
    """

    @accepts(dim=Int(ge=1), hidden=Int(ge=1), depth=Int(ge=1), gamma_min=Real(), gamma_max=Real(),
             inner=Choice(*INNER_PARAMETRIZATIONS), n_frequencies=Int(ge=1), example=lambda ctx: {"dim": 2})
    def __init__(self, dim: int, hidden: int = 64, depth: int = 2, *, gamma_min: float = -13.3,
                 gamma_max: float = 5.0, inner: str = "tanh", n_frequencies: int = 8):
        super().__init__()
        if not gamma_max > gamma_min:
            raise ValueError(f"gamma_max must be > gamma_min ({gamma_min!r}), got {gamma_max!r}")
        self.dim, self.gamma_min, self.gamma_max, self.inner_parametrization = dim, gamma_min, gamma_max, inner
        self.register_buffer("frequencies", torch.arange(1, n_frequencies + 1, dtype=torch.float32) * math.pi)
        layers, width = [], dim + 2 * n_frequencies
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        out = nn.Linear(width, dim)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(*layers, out)

    def inner(self, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        s = (gamma - self.gamma_min) / (self.gamma_max - self.gamma_min)
        c = s[:, None] * self.frequencies.to(x.dtype)
        h = self.net(torch.cat([x, torch.sin(c), torch.cos(c)], dim=-1))
        return torch.tanh(h) if self.inner_parametrization == "tanh" else x + h

    def forward(self, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        return x + torch.sigmoid(gamma)[:, None] * (self.inner(x, gamma) - x)


def _mean_and_offset(encoder, x, gamma):
    mean, dmean = torch.func.jvp(lambda g: encoder(x, g), (gamma,), (torch.ones_like(gamma),))
    ratio = (-0.5 * gamma).exp()[:, None]  # alpha / sigma = exp(-gamma / 2)
    return mean, ratio * dmean


@accepts(encoder=Instance(nn.Module, what="an nn.Module (x, gamma) -> x_phi"),
         example=lambda ctx: {"encoder": DiffEncEncoder(2, 8).to(ctx.dtype)})
def diffenc_encoder(encoder: nn.Module) -> Callable:
    """The ``encoder(x, t, gamma) -> (x_phi, offset)`` hook of :func:`~paperzoo.diffusion.vdm.vdm_nelbo` for an
    encoder module ``encoder(x, gamma)`` (such as :class:`DiffEncEncoder`): the offset is
    :math:`(\\alpha/\\sigma)\\, \\partial_\\gamma x_\\phi`, by forward-mode differentiation in :math:`\\gamma` (scalar
    schedules, ``gamma`` of shape ``(N,)``)."""
    def hook(x, t, gamma):
        if gamma.dim() != 1:
            raise ValueError("DiffEnc needs a scalar schedule (gamma of shape (N,))")
        return _mean_and_offset(encoder, x, gamma)

    return hook


@accepts(encoder=Instance(nn.Module, what="an nn.Module (x, gamma) -> x_phi"), x=Tensor("N", "D"),
         gamma=Tensor("N"), example=lambda ctx: {"encoder": DiffEncEncoder(2, 8).to(ctx.dtype),
                                                 "x": torch.randn(4, 2, generator=ctx.generator, dtype=ctx.dtype),
                                                 "gamma": torch.linspace(-5, 3, 4, dtype=ctx.dtype)})
def diffenc_mean(encoder: nn.Module, x: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_phi, d x_phi / d gamma)``, both ``(N, D)``, of ``encoder`` at data ``x`` ``(N, D)`` and ``gamma``
    ``(N,)``."""
    return torch.func.jvp(lambda g: encoder(x, g), (gamma,), (torch.ones_like(gamma),))


@accepts(loss=Tensor(ndims=(0, 1)), w=Real(gt=0), n_steps=Int(ge=1), dim=Int(ge=1),
         example=lambda ctx: {"loss": torch.ones(3, dtype=ctx.dtype), "w": 1.5, "n_steps": 10, "dim": 2})
def weighted_diffusion_loss(loss: torch.Tensor, w: float, n_steps: int, dim: int) -> torch.Tensor:
    """The finite-depth diffusion bound with variance ratio ``w``:
    :math:`\\mathcal L_T / w + \\tfrac{T D}{2} (1/w - 1 + \\log w)`, from the ``w = 1`` loss ``loss`` (nats)."""
    return loss / w + 0.5 * n_steps * dim * (1 / w - 1 + math.log(w))


@accepts(loss=Tensor(ndims=(0, 1), nonnegative=True), n_steps=Int(ge=1), dim=Int(ge=1),
         example=lambda ctx: {"loss": torch.ones(3, dtype=ctx.dtype), "n_steps": 10, "dim": 2})
def optimal_variance_ratio(loss: torch.Tensor, n_steps: int, dim: int) -> torch.Tensor:
    """The minimiser :math:`w^* = 1 + 2\\mathcal L_T / (T D)` of :func:`weighted_diffusion_loss` (tends to 1 as
    :math:`T \\to \\infty` at a bounded :math:`\\mathcal L_T`)."""
    return 1 + 2 * loss / (n_steps * dim)
