"""Laplace noise schedule: training noise levels drawn from a density over log-SNR concentrated at log-SNR = 0.

References: Improved Noise Schedule for Diffusion Training, 2024 (Hang, Gu, Geng and Guo; arXiv 2407.03297).

The paper writes the training noise schedule as a probability density :math:`p(\\lambda)` over the log
signal-to-noise ratio :math:`\\lambda = \\log \\mathrm{SNR} = \\log(\\alpha^2/\\sigma_{vp}^2)`: drawing
:math:`t \\sim U[0, 1]` and mapping it through a decreasing :math:`\\lambda(t)` is importance sampling of the noise
levels with density :math:`p(\\lambda) = |dt/d\\lambda|`. In its unified objective
:math:`\\int p(\\lambda)\\, w(\\lambda)\\, \\mathcal L(\\lambda)\\, d\\lambda` a change of schedule and a change of loss
weight are interchangeable in expectation, :math:`\\mathbb E_{\\lambda\\sim p}[w \\mathcal L] =
\\mathbb E_{\\lambda \\sim q}[w\\, (p/q)\\, \\mathcal L]`; the schedule changes which levels the gradient steps see.
Its proposal puts the mass near :math:`\\lambda = 0` (signal and noise of equal power) with a Laplace density:

.. math::
    p(\\lambda) = \\frac{1}{2b} e^{-|\\lambda - \\mu|/b}, \\qquad
    \\lambda(t) = \\mu - b\\, \\mathrm{sgn}(0.5 - t) \\log(1 - 2|t - 0.5|),

with the paper's defaults :math:`\\mu = 0`, :math:`b = 0.5`. It compares the Cauchy density
:math:`p(\\lambda) = \\gamma / (\\pi((\\lambda-\\mu)^2 + \\gamma^2))`, :math:`\\lambda(t) = \\mu + \\gamma \\tan(\\frac\\pi2
(1 - 2t))`, and the cosine schedule of improved DDPM, :math:`\\lambda(t) = -2 \\log\\tan(\\pi t/2)` with
:math:`p(\\lambda) = \\mathrm{sech}(\\lambda/2)/(2\\pi)`, and its shifted and scaled variants (a shift of
:math:`\\lambda`, a factor on it).

All three are location-scale families of one standard density :math:`f` (cdf :math:`F`):
:math:`\\lambda = \\text{loc} + \\text{scale} \\cdot z`, :math:`\\lambda(t) = \\text{loc} + \\text{scale}\\,
F^{-1}(1 - t)`, so :math:`t = 0` is the clean end (:math:`\\lambda = +\\infty`). Here ``loc`` is :math:`\\mu` and
``scale`` is :math:`b` (Laplace), :math:`\\gamma` (Cauchy) or :math:`1/s` for the cosine scaled by :math:`s`
(``shift`` is added to :math:`\\lambda`). Every schedule is truncated to ``[logsnr_min, logsnr_max]`` and
renormalised (the inverse cdf of the truncated law), so that heavy tails (the Cauchy's) never produce infinite or
zero noise levels; the default :math:`[-20, 20]` removes less than :math:`10^{-4}` of the cosine's mass and nothing
measurable of the Laplace.

paperzoo's levels are VE, :math:`x = x_0 + \\sigma\\varepsilon`, so :math:`\\mathrm{SNR} = 1/\\sigma^2`,
:math:`\\sigma = e^{-\\lambda/2}`, :math:`\\lambda = -2\\log\\sigma`. A :class:`LogSNRSchedule` is a callable
``schedule(n, generator) -> sigma (n,)``: the ``sample_sigmas`` argument of
:func:`~paperzoo.diffusion.training.train_denoiser`, like :func:`~paperzoo.diffusion.training.lognormal_sigmas`.
:func:`importance_weighting` returns the ``weighting(sigma)`` hook :math:`p_{target}(\\lambda)/p_{proposal}(\\lambda)`
that makes a loss trained on the proposal's levels an unbiased estimate of the target schedule's loss.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.logsnr_schedules import laplace_schedule, cosine_logsnr_schedule
    >>> lap = laplace_schedule()                       # mu = 0, b = 0.5
    >>> [round(v, 4) for v in lap.logsnr(torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()]
    [0.3466, 0.0, -0.3466]
    >>> sigma = lap.sample_sigmas(4, torch.Generator().manual_seed(0))
    >>> sigma.shape, bool((sigma > 0).all())
    (torch.Size([4]), True)
    >>> float(lap.density(torch.tensor(0.0, dtype=torch.float64)))   # 1 / (2 b)
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from paperzoo.core.accepts import Choice, FloatDType, Function, Generator, Instance, Int, Real, Tensor, accepts

__all__ = ["LogSNRSchedule", "laplace_schedule", "cauchy_schedule", "cosine_logsnr_schedule", "importance_weight",
           "importance_weighting", "LOGSNR_FAMILIES"]

#: the standard densities a schedule is a location-scale member of
LOGSNR_FAMILIES = ("laplace", "cauchy", "cosine")

_ANY = Tensor(ndims=tuple(range(0, 8)), allow_empty=True)
_SIGMA = Tensor(ndims=tuple(range(0, 8)), nonnegative=True, finite=False, allow_empty=True)


# -- standard densities f, cdfs F and inverse cdfs F^-1 (float64 tensors) -------------------------------------------
def _pdf(family: str, z: torch.Tensor) -> torch.Tensor:
    if family == "laplace":
        return 0.5 * torch.exp(-z.abs())
    if family == "cauchy":
        return 1.0 / (math.pi * (1.0 + z.square()))
    # cosine: sech(z / 2) / (2 pi), written with exp(-|z|/2) so that large |z| underflows to 0, never inf / inf
    e = torch.exp(-0.5 * z.abs())
    return e / (math.pi * (1.0 + e.square()))


def _cdf(family: str, z: torch.Tensor) -> torch.Tensor:
    if family == "laplace":
        return torch.where(z < 0, 0.5 * torch.exp(z.clamp(max=0)), 1.0 - 0.5 * torch.exp(-z.clamp(min=0)))
    if family == "cauchy":
        return 0.5 + torch.atan(z) / math.pi
    return (2.0 / math.pi) * torch.atan(torch.exp(0.5 * z))


def _icdf(family: str, u: torch.Tensor) -> torch.Tensor:
    if family == "laplace":
        return -torch.sign(u - 0.5) * torch.log1p(-2.0 * (u - 0.5).abs())
    if family == "cauchy":
        return torch.tan(math.pi * (u - 0.5))
    return 2.0 * torch.log(torch.tan(0.5 * math.pi * u))


def _example_schedule(ctx) -> dict:
    return {"family": "laplace", "loc": 0.0, "scale": 0.5}



def _with_schedule(ctx, **arguments) -> dict:
    """A method example's arguments: an example schedule as ``self``, then ``arguments``."""
    return {"self": laplace_schedule(dtype=ctx.dtype), **arguments}

class LogSNRSchedule:
    """A training noise schedule given by its density over log-SNR :math:`\\lambda` (module docstring).

    Args:
        family: the standard density: ``"laplace"`` (:math:`e^{-|z|}/2`), ``"cauchy"``
            (:math:`1/(\\pi(1+z^2))`) or ``"cosine"`` (:math:`\\mathrm{sech}(z/2)/(2\\pi)`, improved DDPM's cosine).
        loc, scale: :math:`\\lambda = \\text{loc} + \\text{scale}\\cdot z` (Laplace :math:`\\mu, b`; Cauchy
            :math:`\\mu, \\gamma`; cosine: shift and :math:`1/s`).
        logsnr_min, logsnr_max: the truncation of :math:`\\lambda` (renormalised); ``logsnr_min < logsnr_max``.

    Calling ``schedule(n, generator)`` draws ``n`` VE levels in ``dtype`` (default float64) without argument checks:
    the ``sample_sigmas`` hook of a training loop.
    """

    @accepts(family=Choice(*LOGSNR_FAMILIES), loc=Real(), scale=Real(gt=0), logsnr_min=Real(), logsnr_max=Real(),
             dtype=FloatDType(), example=_example_schedule, output="any")
    def __init__(self, family: str, loc: float = 0.0, scale: float = 1.0, *, logsnr_min: float = -20.0,
                 logsnr_max: float = 20.0, dtype: torch.dtype = torch.float64):
        if not logsnr_min < logsnr_max:
            raise ValueError(f"logsnr_min must be < logsnr_max, got {logsnr_min!r} and {logsnr_max!r}")
        self.family, self.loc, self.scale = family, float(loc), float(scale)
        self.logsnr_min, self.logsnr_max, self.dtype = float(logsnr_min), float(logsnr_max), dtype
        bounds = (torch.tensor([logsnr_min, logsnr_max], dtype=torch.float64) - self.loc) / self.scale
        self._u_lo, self._u_hi = (float(v) for v in _cdf(family, bounds))
        self._mass = self._u_hi - self._u_lo
        if not self._mass > 0:
            raise ValueError(f"logsnr_min and logsnr_max must keep some of the density's mass, got "
                             f"[{logsnr_min!r}, {logsnr_max!r}] for loc {loc!r} and scale {scale!r}")

    def __repr__(self) -> str:
        return (f"LogSNRSchedule({self.family!r}, loc={self.loc:g}, scale={self.scale:g}, "
                f"logsnr_min={self.logsnr_min:g}, logsnr_max={self.logsnr_max:g})")

    # -- the unchecked kernels ---------------------------------------------------------------------------------
    def _density(self, lam: torch.Tensor) -> torch.Tensor:
        lam64 = lam.to(torch.float64)
        p = _pdf(self.family, (lam64 - self.loc) / self.scale) / (self.scale * self._mass)
        inside = (lam64 >= self.logsnr_min) & (lam64 <= self.logsnr_max)
        return torch.where(inside, p, torch.zeros_like(p)).to(lam.dtype)

    def _logsnr(self, t: torch.Tensor) -> torch.Tensor:
        u = self._u_lo + (1.0 - t.to(torch.float64)) * self._mass
        lam = self.loc + self.scale * _icdf(self.family, u)
        # rounding at u = 0 or 1 gives +-inf: the truncation's bounds are the exact limits
        return lam.clamp(self.logsnr_min, self.logsnr_max).to(t.dtype)

    def __call__(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Unchecked :meth:`sample_sigmas` in the schedule's ``dtype`` (training loops)."""
        t = torch.rand(n, generator=generator, dtype=torch.float64)
        return torch.exp(-0.5 * self._logsnr(t)).to(self.dtype)

    # -- the checked methods -----------------------------------------------------------------------------------
    @accepts(t=Tensor(ndims=tuple(range(0, 8)), allow_empty=True, nonnegative=True), example=lambda ctx: _with_schedule(ctx, t=torch.rand(5, generator=ctx.generator, dtype=ctx.dtype)))
    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        """The paper's :math:`\\lambda(t)` (decreasing; :math:`t = 0` is ``logsnr_max``, :math:`t = 1` is
        ``logsnr_min``): :math:`t \\sim U[0, 1]` gives :math:`\\lambda \\sim p`. ``t`` any shape, in ``[0, 1]``."""
        if t.numel() and bool((t > 1).any()):
            raise ValueError(f"t must be <= 1 entrywise, got a maximum of {float(t.max())!r}")
        return self._logsnr(t)

    @accepts(lam=_ANY, example=lambda ctx: _with_schedule(ctx, lam=torch.randn(5, generator=ctx.generator, dtype=ctx.dtype)))
    def density(self, lam: torch.Tensor) -> torch.Tensor:
        """:math:`p(\\lambda)` of the truncated schedule (0 outside ``[logsnr_min, logsnr_max]``), shape of ``lam``."""
        return self._density(lam)

    @accepts(lam=_ANY, example=lambda ctx: _with_schedule(ctx, lam=torch.randn(5, generator=ctx.generator, dtype=ctx.dtype)))
    def cdf(self, lam: torch.Tensor) -> torch.Tensor:
        """:math:`P(\\Lambda \\le \\lambda)` of the truncated schedule, shape of ``lam``."""
        u = _cdf(self.family, (lam.to(torch.float64) - self.loc) / self.scale)
        return ((u - self._u_lo) / self._mass).clamp(0.0, 1.0).to(lam.dtype)

    @accepts(sigma=_SIGMA, example=lambda ctx: _with_schedule(ctx, sigma=torch.rand(5, generator=ctx.generator, dtype=ctx.dtype) + 0.1))
    def sigma_density(self, sigma: torch.Tensor) -> torch.Tensor:
        """:math:`p(\\lambda(\\sigma))` at VE levels ``sigma`` (:math:`\\lambda = -2\\log\\sigma`); the density over
        :math:`\\log\\sigma` is twice this."""
        if sigma.numel() and bool(torch.isnan(sigma).any()):
            raise ValueError("sigma must not contain NaN")
        return self._density(-2.0 * torch.log(sigma))

    @accepts(n=Int(ge=1), generator=Generator(), example=lambda ctx: _with_schedule(ctx, n=5))
    def sample_logsnr(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws of :math:`\\lambda \\sim p` (inverse cdf of uniform ``t``), in the schedule's ``dtype``."""
        return self._logsnr(torch.rand(n, generator=generator, dtype=torch.float64)).to(self.dtype)

    @accepts(n=Int(ge=1), generator=Generator(), example=lambda ctx: _with_schedule(ctx, n=5))
    def sample_sigmas(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` VE training levels :math:`\\sigma = e^{-\\lambda/2}`, :math:`\\lambda \\sim p`, ``(n,)``."""
        return self(n, generator)


@accepts(mu=Real(), b=Real(gt=0), logsnr_min=Real(), logsnr_max=Real(), dtype=FloatDType(), output="any")
def laplace_schedule(mu: float = 0.0, b: float = 0.5, *, logsnr_min: float = -20.0, logsnr_max: float = 20.0,
                     dtype: torch.dtype = torch.float64) -> LogSNRSchedule:
    """The paper's Laplace schedule :math:`p(\\lambda) = e^{-|\\lambda-\\mu|/b}/(2b)` (defaults :math:`\\mu = 0`,
    :math:`b = 0.5`)."""
    return LogSNRSchedule("laplace", mu, b, logsnr_min=logsnr_min, logsnr_max=logsnr_max, dtype=dtype)


@accepts(mu=Real(), gamma=Real(gt=0), logsnr_min=Real(), logsnr_max=Real(), dtype=FloatDType(),
         output="any")
def cauchy_schedule(mu: float = 0.0, gamma: float = 1.0, *, logsnr_min: float = -20.0, logsnr_max: float = 20.0,
                    dtype: torch.dtype = torch.float64) -> LogSNRSchedule:
    """The paper's Cauchy schedule :math:`p(\\lambda) = \\gamma/(\\pi((\\lambda-\\mu)^2 + \\gamma^2))`, truncated
    to ``[logsnr_min, logsnr_max]`` (its tails would otherwise reach infinite noise levels)."""
    return LogSNRSchedule("cauchy", mu, gamma, logsnr_min=logsnr_min, logsnr_max=logsnr_max, dtype=dtype)


@accepts(shift=Real(), s=Real(gt=0), logsnr_min=Real(), logsnr_max=Real(), dtype=FloatDType(),
         output="any")
def cosine_logsnr_schedule(shift: float = 0.0, s: float = 1.0, *, logsnr_min: float = -20.0,
                           logsnr_max: float = 20.0, dtype: torch.dtype = torch.float64) -> LogSNRSchedule:
    """Improved DDPM's continuous cosine schedule as a log-SNR density, shifted and scaled:
    :math:`\\lambda(t) = \\text{shift} - (2/s)\\log\\tan(\\pi t/2)`,
    :math:`p(\\lambda) = \\frac{s}{2\\pi}\\,\\mathrm{sech}\\bigl(s(\\lambda - \\text{shift})/2\\bigr)`
    (``shift = 0, s = 1``: the plain cosine, :math:`\\bar\\alpha(t) = \\cos^2(\\pi t/2)`)."""
    return LogSNRSchedule("cosine", shift, 1.0 / s, logsnr_min=logsnr_min, logsnr_max=logsnr_max, dtype=dtype)


def _example_weight(ctx) -> dict:
    return {"sigma": torch.rand(5, generator=ctx.generator, dtype=ctx.dtype) * 3 + 0.01,
            "target": laplace_schedule(), "proposal": cosine_logsnr_schedule()}


def _check_cover(target: LogSNRSchedule, proposal: LogSNRSchedule) -> None:
    if proposal.logsnr_min > target.logsnr_min or proposal.logsnr_max < target.logsnr_max:
        raise ValueError(f"proposal must cover the target's log-SNR range [{target.logsnr_min:g}, "
                         f"{target.logsnr_max:g}], got [{proposal.logsnr_min:g}, {proposal.logsnr_max:g}]")


def _importance_weight(sigma: torch.Tensor, target: LogSNRSchedule, proposal: LogSNRSchedule) -> torch.Tensor:
    lam = -2.0 * torch.log(sigma.to(torch.float64))
    q = proposal._density(lam)
    w = torch.where(q > 0, target._density(lam) / torch.where(q > 0, q, torch.ones_like(q)), torch.zeros_like(q))
    return w.to(sigma.dtype)


@accepts(sigma=_SIGMA, target=Instance(LogSNRSchedule), proposal=Instance(LogSNRSchedule), example=_example_weight)
def importance_weight(sigma: torch.Tensor, target: LogSNRSchedule, proposal: LogSNRSchedule) -> torch.Tensor:
    """:math:`p_{target}(\\lambda) / p_{proposal}(\\lambda)` at VE levels ``sigma`` (any shape;
    :math:`\\lambda = -2\\log\\sigma`; 0 outside the proposal's range, where it never draws)."""
    _check_cover(target, proposal)
    if sigma.numel() and bool(torch.isnan(sigma).any()):
        raise ValueError("sigma must not contain NaN")
    return _importance_weight(sigma, target, proposal)


@accepts(target=Instance(LogSNRSchedule), proposal=Instance(LogSNRSchedule), weighting=Function(optional=True),
         example=lambda ctx: {"target": laplace_schedule(), "proposal": cosine_logsnr_schedule()},
         output="any")  # returns a function
def importance_weighting(target: LogSNRSchedule, proposal: LogSNRSchedule,
                         weighting: Callable[[torch.Tensor], torch.Tensor] | None = None
                         ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ``weighting(sigma)`` hook of :func:`~paperzoo.diffusion.training.denoising_loss` /
    :func:`~paperzoo.diffusion.training.train_denoiser` under which levels drawn from ``proposal`` give, in
    expectation, the loss of levels drawn from ``target``:
    :math:`\\mathbb E_{q}[w\\,(p/q)\\,\\mathcal L] = \\mathbb E_{p}[w\\,\\mathcal L]`, with ``weighting`` the loss
    weight :math:`w` of the target objective (``None``: 1).

    Example::

        train_denoiser(net, sample_data, cosine_logsnr_schedule(), steps=1000,
                       weighting=importance_weighting(laplace_schedule(), cosine_logsnr_schedule()))
    """
    _check_cover(target, proposal)

    def hook(sigma: torch.Tensor) -> torch.Tensor:
        w = _importance_weight(sigma, target, proposal)
        return w if weighting is None else w * weighting(sigma)

    hook.target, hook.proposal = target, proposal
    return hook
