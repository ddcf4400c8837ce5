"""Iterative alpha-(de)blending (IADB): a deterministic diffusion model built from linear blends.

References: Iterative α-(de)Blending: a Minimalist Deterministic Diffusion Model (Heitz, Belcour, Chambon), 2023.

A source sample :math:`x_0 \\sim p_0` (here Gaussian noise) and a target sample :math:`x_1 \\sim p_1` (the data)
are blended, :math:`x_\\alpha = (1 - \\alpha)\\,x_0 + \\alpha\\,x_1` (:func:`alpha_blend`); a network
:math:`D_\\theta(x_\\alpha, \\alpha)` is trained to deblend, i.e. to predict :math:`x_1 - x_0`,

.. math::
    \\mathcal L(\\theta) = E_{\\alpha \\sim U(0,1),\\,x_0,\\,x_1}
    \\bigl\\|D_\\theta(x_\\alpha, \\alpha) - (x_1 - x_0)\\bigr\\|^2,

whose minimiser is :math:`E[x_1 - x_0 \\mid x_\\alpha]`; samples are mapped from :math:`p_0` to :math:`p_1` by
the deterministic iteration on a grid :math:`0 = \\alpha_0 < \\dots < \\alpha_T = 1` (uniform in the paper)

.. math::
    x_{\\alpha_{t+1}} = x_{\\alpha_t} + (\\alpha_{t+1} - \\alpha_t)\\,D_\\theta(x_{\\alpha_t}, \\alpha_t).

In paperzoo's conventions this is the rectified-flow ("flow") space of
:mod:`paperzoo.diffusion.parametrization` with time :math:`t = 1 - \\alpha`: the VE state is
:math:`x = x_\\alpha/\\alpha` at level :math:`\\sigma = (1 - \\alpha)/\\alpha` (:func:`sigma_from_alpha`), the
flow velocity is :math:`u = -D`, and the loss above is :func:`~paperzoo.diffusion.training.denoising_loss` with
``prediction="flow"`` at levels from :func:`iadb_training_sigmas` (uniform :math:`\\alpha`). So any flow network
(``MLPDenoiser(prediction="flow")``) is an IADB network, :class:`DeblendingNetwork` adapts a network written in the
paper's convention, and the sampler :func:`sample_iadb` runs the shared loop on :func:`get_sigmas_iadb`. One IADB
step is algebraically one Euler step of the VE probability-flow ODE (and one DDIM step): the paper's novelty is the
linear blending path, its uniform training and its uniform :math:`\\alpha` grid, not a new integrator. The paper
gives no higher-order sampler (a second-order run is ``sample_heun`` on the same levels, not the paper's).

Deviation: the VE form cannot hold :math:`\\alpha = 0` (:math:`\\sigma = \\infty`); the grid starts at
``alpha_min`` (default ``1e-3``, :math:`\\sigma_0 \\approx 999`) and the start state :math:`\\sigma_0\\varepsilon`
is the blend :math:`(1 - \\alpha_{min})\\varepsilon` without its :math:`\\alpha_{min} x_1` part. Training levels
are clamped to :math:`\\alpha \\in [\\alpha_{min}, 1 - \\alpha_{min}]` for the same reason, and the loss is the
per-coordinate mean where the official code sums (a constant factor of the learning rate).

Example:
    >>> import torch
    >>> from paperzoo.diffusion.mixture import mixture_on_circle
    >>> gm = mixture_on_circle(4, 2, radius=1.0, std=0.1)
    >>> sigmas = get_sigmas_iadb(64)
    >>> x = sample_iadb(gm.denoise, sigmas[0] * torch.randn(512, 2, dtype=torch.float64), sigmas)
    >>> bool((x.norm(dim=1) - 1.0).abs().median() < 0.15)
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from paperzoo.core.accepts import Function, Generator, Int, Module, OneOf, Real, Tensor, accepts
from paperzoo.diffusion.parametrization import _expand, denoiser_from_prediction
from paperzoo.diffusion.samplers import _COMMON, _example, run_sampler
from paperzoo.diffusion.training import _denoising_loss

__all__ = ["alpha_blend", "sigma_from_alpha", "alpha_from_sigma", "get_sigmas_iadb", "iadb_training_sigmas",
           "DeblendingNetwork", "iadb_loss", "deblending_from_denoiser", "iadb_step", "sample_iadb"]

_ALPHA = OneOf(Real(ge=0, le=1), Tensor(ndims=tuple(range(0, 8)), nonnegative=True, allow_empty=True))
_LEVEL = OneOf(Real(ge=0), Tensor(ndims=tuple(range(0, 8)), nonnegative=True, allow_empty=True))


def _check_open_alpha(alpha, *, upper: bool) -> None:
    """Reject alpha <= 0 (infinite VE level) and, when ``upper``, alpha >= 1 (nothing left to deblend)."""
    a = alpha if isinstance(alpha, torch.Tensor) else torch.tensor(float(alpha))
    if a.numel() and bool((a <= 0).any()):
        raise ValueError(f"alpha must be > 0 (alpha = 0 is an infinite VE level), got a minimum of {float(a.min())!r}")
    if upper and a.numel() and bool((a >= 1).any()):
        raise ValueError(f"alpha must be < 1, got a maximum of {float(a.max())!r}")
    if a.numel() and bool((a > 1).any()):
        raise ValueError(f"alpha must be <= 1, got a maximum of {float(a.max())!r}")


@accepts(x0=Tensor("N", "d"), x1=Tensor("N", "d", degenerate=("coincident",)), alpha=_ALPHA)
def alpha_blend(x0: torch.Tensor, x1: torch.Tensor, alpha) -> torch.Tensor:
    """The blend :math:`x_\\alpha = (1 - \\alpha)\\,x_0 + \\alpha\\,x_1`, ``(N, d)``; ``x0`` the source (noise),
    ``x1`` the target (data), ``alpha`` a number or ``(N,)`` in ``[0, 1]``."""
    if isinstance(alpha, torch.Tensor) and alpha.dim() > 0 and tuple(alpha.shape) != (x0.shape[0],):
        raise ValueError(f"alpha must be a number or have shape ({x0.shape[0]},), got shape {tuple(alpha.shape)}")
    a = _expand(alpha, x0)
    if isinstance(alpha, torch.Tensor) and bool((alpha > 1).any()):
        raise ValueError(f"alpha must be <= 1, got a maximum of {float(alpha.max())!r}")
    return (1 - a) * x0 + a * x1


@accepts(alpha=_ALPHA)
def sigma_from_alpha(alpha):
    """The VE level :math:`\\sigma = (1 - \\alpha)/\\alpha` of the blend at ``alpha`` in ``(0, 1]`` (0 at
    :math:`\\alpha = 1`, the data)."""
    _check_open_alpha(alpha, upper=False)
    return (1 - alpha) / alpha


@accepts(sigma=_LEVEL)
def alpha_from_sigma(sigma):
    """The blending weight :math:`\\alpha = 1/(1 + \\sigma)` of a VE level (``1 -`` the flow time)."""
    return 1 / (1 + sigma)


@accepts(n=Int(ge=1), alpha_min=Real(gt=0, lt=1))
def get_sigmas_iadb(n: int, alpha_min: float = 1e-3, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The paper's uniform grid :math:`\\alpha_i = i/n`, ``i = 0..n``, as VE levels (the first :math:`\\alpha`
    raised to ``alpha_min``, since :math:`\\alpha = 0` is :math:`\\sigma = \\infty`): shape ``(n + 1,)``, ending
    in 0; ``n`` steps, ``n`` model evaluations."""
    alpha = (torch.arange(n + 1, dtype=torch.float64) / n).clamp_min(alpha_min)
    return ((1 - alpha) / alpha).to(dtype)


@accepts(n=Int(ge=1), alpha_min=Real(gt=0, lt=0.5), generator=Generator(), example=lambda ctx: {"n": 5})
def iadb_training_sigmas(n: int, *, alpha_min: float = 1e-3, generator: torch.Generator | None = None,
                         dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """IADB's training levels: :math:`\\alpha \\sim U(0, 1)` (clamped to ``[alpha_min, 1 - alpha_min]``) as VE
    levels :math:`\\sigma = (1-\\alpha)/\\alpha`, shape ``(n,)``; the ``sample_sigmas`` of ``train_denoiser``."""
    return _iadb_training_sigmas(n, alpha_min, generator, dtype)


def _iadb_training_sigmas(n, alpha_min=1e-3, generator=None, dtype=torch.float64):
    alpha = torch.rand(n, generator=generator, dtype=torch.float64).clamp(alpha_min, 1 - alpha_min)
    return ((1 - alpha) / alpha).to(dtype)


class DeblendingNetwork(nn.Module):
    """A network in the paper's convention, ``network(x_alpha, alpha) -> x1 - x0`` ``(N, d)`` with ``alpha``
    ``(N,)``, seen as a flow-prediction network :math:`F(x_{in}, \\sigma) = -D_\\theta(x_{in}, 1/(1+\\sigma))` (the
    flow input :math:`x_{in} = x/(1+\\sigma)` is :math:`x_\\alpha`), so ``denoising_loss`` trains it with IADB's loss
    and ``denoiser()`` gives the VE denoiser every sampler takes."""

    prediction = "flow"
    space = "flow"

    @accepts(network=Module(), example=lambda ctx: {"network": nn.Identity()})
    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x_in: torch.Tensor, sigma) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=x_in.dtype, device=x_in.device).expand(x_in.shape[0])
        return -self.network(x_in, 1 / (1 + s))

    def denoiser(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The VE denoiser :math:`D(x, \\sigma) = x_\\alpha + (1 - \\alpha) D_\\theta(x_\\alpha, \\alpha)`."""
        return denoiser_from_prediction(self, "flow")


def _example_loss(ctx):
    from paperzoo.diffusion.training import MLPDenoiser

    net = MLPDenoiser(2, 8, 1, prediction="flow").to(ctx.dtype)
    return {"network": net, "x1": torch.randn(6, 2, generator=ctx.generator, dtype=ctx.dtype),
            "alpha": 0.1 + 0.8 * torch.rand(6, generator=ctx.generator, dtype=ctx.dtype)}


@accepts(network=Module(), x1=Tensor("N", "d", degenerate=("coincident",)), alpha=Tensor("N", positive_mass=True),
         noise=Tensor("N", "d", optional=True), generator=Generator(), example=_example_loss)
def iadb_loss(network: nn.Module, x1: torch.Tensor, alpha: torch.Tensor, *, noise: torch.Tensor | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """IADB's loss :math:`\\frac1N\\sum_i \\frac1d\\|D_\\theta(x_{\\alpha_i}, \\alpha_i) - (x_{1,i} - x_{0,i})\\|^2`
    for a flow-prediction ``network`` (``MLPDenoiser(prediction="flow")`` or a :class:`DeblendingNetwork`): the
    substrate's ``denoising_loss`` at :math:`\\sigma = (1-\\alpha)/\\alpha`. ``x1`` data ``(N, d)``; ``alpha``
    ``(N,)`` in ``(0, 1)``; ``noise`` the source :math:`x_0` ``(N, d)`` (drawn from ``generator`` when omitted)."""
    _check_open_alpha(alpha, upper=True)
    if getattr(network, "prediction", None) != "flow":
        raise ValueError(f"network must predict 'flow' (x0 - x1 = -(x1 - x0)), got prediction="
                         f"{getattr(network, 'prediction', None)!r}; wrap a paper-convention network in "
                         "DeblendingNetwork")
    return _denoising_loss(network, x1, (1 - alpha) / alpha, "flow", "flow", None, noise, generator)


@accepts(model=Function(), x_alpha=Tensor("N", "d"), alpha=OneOf(Real(gt=0, lt=1), Tensor("N")),
         example=lambda ctx: {**{"model": _example(ctx)["model"]},
                              "x_alpha": torch.randn(4, 2, generator=ctx.generator, dtype=ctx.dtype),
                              "alpha": 0.5})
def deblending_from_denoiser(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x_alpha: torch.Tensor,
                             alpha) -> torch.Tensor:
    """The deblending direction :math:`E[x_1 - x_0 \\mid x_\\alpha] = (D(x, \\sigma) - x_\\alpha)/(1 - \\alpha)`
    of a VE denoiser ``model`` (e.g. the exact ``GaussianMixture.denoise``) at the VE state
    :math:`x = x_\\alpha/\\alpha`, :math:`\\sigma = (1-\\alpha)/\\alpha`. ``x_alpha`` ``(N, d)``; ``alpha`` a number
    or ``(N,)`` in ``(0, 1)``. Returns ``(N, d)``."""
    _check_open_alpha(alpha, upper=True)
    if isinstance(alpha, torch.Tensor) and alpha.dim() > 0 and tuple(alpha.shape) != (x_alpha.shape[0],):
        raise ValueError(f"alpha must be a number or have shape ({x_alpha.shape[0]},), got shape "
                         f"{tuple(alpha.shape)}")
    a = _expand(alpha, x_alpha)
    sigma = ((1 - a) / a).reshape(-1).expand(x_alpha.shape[0])
    return (model(x_alpha / a, sigma) - x_alpha) / (1 - a)


def iadb_step(x, sigma, sigma_next, denoised, ctx):
    """One IADB step written in blend coordinates: :math:`x_\\alpha = \\alpha x`,
    :math:`\\hat d = (D - x_\\alpha)/(1-\\alpha)`, :math:`x_{\\alpha'} = x_\\alpha + (\\alpha' - \\alpha)\\hat d`,
    back to the VE state :math:`x_{\\alpha'}/\\alpha'` (the data estimate :math:`D` on the last step,
    :math:`\\alpha' = 1`). Algebraically the Euler step of the VE ODE."""
    alpha, alpha_next = 1 / (1 + sigma), 1 / (1 + sigma_next)
    x_alpha = alpha * x
    d = (denoised - x_alpha) / (1 - alpha)
    return (x_alpha + (alpha_next - alpha) * d) / alpha_next


@accepts(**_COMMON, example=_example)
def sample_iadb(model, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator | None = None,
                callback=None, progress: bool = False) -> torch.Tensor:
    """IADB's deterministic sampler (the paper's Algorithm of iterative deblending) over a VE denoiser: give
    ``sigmas`` from :func:`get_sigmas_iadb` (the paper's uniform :math:`\\alpha` grid) and the start
    ``sigmas[0] * noise``. One model evaluation per step (:func:`iadb_step`); ``generator`` is unused (the sampler
    is deterministic) and kept for the shared signature."""
    return run_sampler(model, x, sigmas, iadb_step, generator=generator, callback=callback, progress=progress)
