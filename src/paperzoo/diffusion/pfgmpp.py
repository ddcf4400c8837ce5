"""PFGM++: Poisson-flow generative models with ``D`` augmented dimensions, in the EDM-aligned denoiser form.

References: PFGM++: Unlocking the Potential of Physics-Inspired Generative Models (Xu, Liu, Tian, Tong, Tegmark,
Jaakkola), 2023.

``N``-dimensional data ``y`` are embedded in ``N + D`` dimensions; the augmented variables enter only through their
norm ``r``. The perturbation kernel at radius ``r`` (the paper's eq. (4)) is

.. math::
    p_r(x \\mid y) \\propto \\frac{1}{(\\lVert x - y\\rVert^2 + r^2)^{(N + D)/2}},

so the radius :math:`R = \\lVert x - y\\rVert` has density :math:`\\propto R^{N-1}/(R^2 + r^2)^{(N+D)/2}`: with
:math:`B \\sim \\mathrm{Beta}(N/2, D/2)`, :math:`R = r\\sqrt{B/(1 - B)}` (:math:`R^2/r^2` is beta-prime
:math:`(N/2, D/2)`) and the direction is uniform on the sphere. The alignment :math:`r = \\sigma\\sqrt D` (the
paper's Section 4) maps a PFGM++ radius to an EDM level: as :math:`D \\to \\infty` the kernel tends to
:math:`\\mathcal N(y, \\sigma^2 I)` (diffusion), and small ``D`` is heavier-tailed. Everything here is written in
``sigma``, so the substrate's VE samplers, schedules and training loops apply unchanged:

* the perturbation :math:`x = y + \\sigma\\,\\varepsilon_D` with :func:`pfgmpp_noise` (unit level) or
  :func:`pfgmpp_perturb` (the official code's recipe: Beta radius, uniform direction);
* the training objective is the denoising loss :math:`\\lambda(\\sigma)\\lVert D_\\theta(y + \\sigma\\varepsilon_D,
  \\sigma) - y\\rVert^2` with the PFGM++ noise: pass ``noise=pfgmpp_noise(...)`` to
  :func:`~paperzoo.diffusion.training.denoising_loss` (the paper's eq. (6) after the alignment);
* the sampling ODE :math:`dx/d\\sigma = (x - D(x, \\sigma))/\\sigma` (the paper's eq. (5) in the aligned form),
  whose denoiser is the PFGM++ posterior mean :math:`E[y \\mid x]`; start from :func:`pfgmpp_prior` (the kernel at
  :math:`\\sigma_{max}`) and use any sampler, e.g. :func:`~paperzoo.diffusion.samplers.sample_heun`.

For a finite (weighted) data set :math:`\\{y_i, w_i\\}` the posterior mean is a closed form
(:func:`pfgmpp_posterior_mean`, :class:`EmpiricalPFGMPP`):

.. math::
    E[y \\mid x] = \\sum_i \\pi_i(x)\\, y_i, \\qquad
    \\pi_i \\propto w_i\\,(\\lVert x - y_i\\rVert^2 + D\\sigma^2)^{-(N + D)/2},

evaluated in the log domain as :math:`-\\tfrac{N + D}{2}\\log(1 + \\lVert x - y_i\\rVert^2/(D\\sigma^2))`, which
tends to Gaussian weights :math:`-\\lVert x - y_i\\rVert^2/(2\\sigma^2)` as :math:`D \\to \\infty` (``D=inf`` gives
them exactly). The paper's robustness experiment (its Section 5.3) injects :math:`\\alpha\\sigma_i\\,z` into every
intermediate state; :func:`noise_injected_step` wraps a sampler step to do so.

Shapes: data ``(n, *S)``, states ``(B, *S)``, ``N = prod(S)``; levels a number or one per state ``(B,)``.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.samplers import sample_heun
    >>> from paperzoo.diffusion.schedules import get_sigmas_karras
    >>> g = torch.Generator().manual_seed(0)
    >>> data = torch.randn(16, 4, generator=g, dtype=torch.float64)
    >>> model = EmpiricalPFGMPP(data, D=8)
    >>> sigmas = get_sigmas_karras(18, 0.002, 80.0, dtype=torch.float64)
    >>> x = sample_heun(model, pfgmpp_prior(64, (4,), 80.0, 8, generator=g, dtype=torch.float64), sigmas)
    >>> bool(torch.cdist(x, data).min(1).values.max() < 1e-3)   # every sample lands on a data point
    True
"""

from __future__ import annotations

import math

import torch

from paperzoo.core.accepts import (Choice, FloatDType, Function, Generator, Int, Ints, OneOf, Probe, Real, Spec, Tensor,
                                   accepts)
from paperzoo.diffusion.samplers import euler_step as _euler_step

__all__ = ["pfgmpp_noise", "pfgmpp_perturb", "pfgmpp_prior", "pfgmpp_radius_cdf", "pfgmpp_posterior_mean",
           "EmpiricalPFGMPP", "noise_injected_step", "sigma_to_radius", "radius_to_sigma"]

class _AugmentedDim(Spec):
    """``D``: a real number ``> 0`` or ``math.inf`` (diffusion)."""

    def check(self, name, value, binding):
        _check_D(value, name)

    def example(self, ctx):
        return 8.0

    def probes(self, name, value):
        def put(v):
            return lambda kw: {**kw, name: v}
        return super().probes(name, value) + [
            Probe(name, "bool", False, put(True)), Probe(name, "nan", False, put(math.nan)),
            Probe(name, "zero", False, put(0.0)), Probe(name, "negative", False, put(-1.0)),
            Probe(name, "-inf", False, put(-math.inf)), Probe(name, "inf (diffusion)", True, put(math.inf)),
            Probe(name, "tiny", True, put(0.5))]


_D = _AugmentedDim()
_METHOD = Choice("beta", "t")
_SHAPE = Ints(ge=1, min_length=1, example=(3,))
_SIGMA = OneOf(Real(gt=0), Tensor("B", positive_mass=True))


def _check_D(D, name: str = "D") -> float:
    if isinstance(D, bool) or not isinstance(D, (int, float)):
        raise TypeError(f"{name} must be a real number > 0 or math.inf, got {type(D).__name__}")
    D = float(D)
    if math.isnan(D) or D <= 0:
        raise ValueError(f"{name} must be > 0 (or math.inf for diffusion), got {D!r}")
    return D


def _unit_directions(n: int, N: int, generator, dtype, device) -> torch.Tensor:
    g = torch.randn(n, N, generator=generator, dtype=dtype).to(device)
    return g / g.norm(dim=1, keepdim=True)


def _radius_ratio(n: int, N: int, D: float, generator, dtype, device) -> torch.Tensor:
    """:math:`\\sqrt{B/(1-B)}` with :math:`B \\sim \\mathrm{Beta}(N/2, D/2)` drawn as the official code does (the Beta
    draw itself, without its clipping of ``B`` to ``[1e-3, 1 - 1e-3]``), in float64."""
    b = torch._sample_dirichlet(torch.tensor([[N / 2, D / 2]], dtype=torch.float64).expand(n, 2).contiguous(),
                                generator=generator)
    return (b[:, 0] / b[:, 1]).sqrt().to(dtype=dtype, device=device)


def _noise(n: int, shape: tuple, D: float, generator, dtype, device, method: str = "beta") -> torch.Tensor:
    N = math.prod(shape)
    z = torch.randn((n, N), generator=generator, dtype=dtype).to(device)
    if math.isinf(D):
        return z.reshape(n, *shape)
    if method == "beta":
        radius = math.sqrt(D) * _radius_ratio(n, N, D, generator, dtype, device)
        return (radius[:, None] * z / z.norm(dim=1, keepdim=True)).reshape(n, *shape)
    # Student-t: z / sqrt(chi2_D / D), the same law; shares z with the Gaussian (D = inf) draw
    chi2 = 2 * torch._standard_gamma(torch.full((n,), D / 2, dtype=torch.float64), generator=generator)
    return (z * (D / chi2).sqrt().to(dtype=dtype, device=device)[:, None]).reshape(n, *shape)


@accepts(n=Int(ge=1), shape=_SHAPE, D=_D, generator=Generator(), dtype=FloatDType(), method=_METHOD,
         example=lambda ctx: {"n": 5, "shape": (3,), "D": 8.0})
def pfgmpp_noise(n: int, shape: tuple[int, ...], D: float, *, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32, device=None, method: str = "beta") -> torch.Tensor:
    """Unit-level PFGM++ noise :math:`\\varepsilon_D`, shape ``(n, *shape)``: :math:`y + \\sigma\\varepsilon_D`
    follows the kernel :math:`p_r(\\cdot \\mid y)` at :math:`r = \\sigma\\sqrt D`.

    :math:`\\varepsilon_D = \\sqrt D\\,\\sqrt{B/(1-B)}\\;u`, :math:`B \\sim \\mathrm{Beta}(N/2, D/2)`, ``u`` uniform on
    the unit sphere of :math:`\\mathbb R^N`, ``N = prod(shape)``. ``D`` may be ``math.inf``: standard normal noise.
    Pass it as ``noise`` to :func:`~paperzoo.diffusion.training.denoising_loss` to train a PFGM++ denoiser.
    """
    return _noise(n, tuple(shape), _check_D(D), generator, dtype, device, method)


@accepts(y=Tensor(ndims=tuple(range(1, 8))), sigma=_SIGMA, D=_D, generator=Generator(), method=_METHOD,
         example=lambda ctx: {"y": torch.randn(5, 3, generator=ctx.generator, dtype=ctx.dtype), "sigma": 0.7,
                              "D": 8.0})
def pfgmpp_perturb(y: torch.Tensor, sigma: float | torch.Tensor, D: float, *,
                   generator: torch.Generator | None = None, method: str = "beta") -> torch.Tensor:
    """A draw of :math:`x \\sim p_r(\\cdot \\mid y)` per row of ``y`` ``(B, *S)``, :math:`r = \\sigma\\sqrt D`, a
    level per row (``(B,)``) or one for all; ``D = math.inf`` is Gaussian noise of std ``sigma``; ``method`` as
    in :func:`pfgmpp_noise`."""
    D = _check_D(D)
    if isinstance(sigma, torch.Tensor):
        if sigma.shape[0] != y.shape[0]:
            raise ValueError(f"sigma must have one level per row of y ({y.shape[0]}), got shape {tuple(sigma.shape)}")
        sigma = sigma.view(-1, *([1] * (y.dim() - 1)))
    return y + sigma * _noise(y.shape[0], tuple(y.shape[1:]), D, generator, y.dtype, y.device, method)


@accepts(n=Int(ge=1), shape=_SHAPE, sigma_max=Real(gt=0), D=_D, generator=Generator(), dtype=FloatDType(),
         method=_METHOD,
         example=lambda ctx: {"n": 4, "shape": (3,), "sigma_max": 80.0, "D": 8.0})
def pfgmpp_prior(n: int, shape: tuple[int, ...], sigma_max: float, D: float, *,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                 device=None, method: str = "beta") -> torch.Tensor:
    """``n`` starting states ``(n, *shape)`` of the PFGM++ ODE: the kernel at :math:`\\sigma_{max}` around the
    origin, :math:`\\sigma_{max}\\varepsilon_D` (the official sampler's heavy-tailed latents; ``D = inf`` gives
    EDM's :math:`\\sigma_{max} z`)."""
    return sigma_max * _noise(n, tuple(shape), _check_D(D), generator, dtype, device)


@accepts(radius=Tensor(ndims=(0, 1, 2), nonnegative=True, allow_empty=True), sigma=Real(gt=0), N=Int(ge=1),
         D=_D, example=lambda ctx: {"radius": torch.rand(5, generator=ctx.generator, dtype=ctx.dtype),
                                    "sigma": 0.5, "N": 3, "D": 8.0})
def pfgmpp_radius_cdf(radius: torch.Tensor, sigma: float, N: int, D: float) -> torch.Tensor:
    """The closed-form CDF of :math:`R = \\lVert x - y\\rVert` under the kernel at :math:`r = \\sigma\\sqrt D`:
    :math:`P(R \\le \\rho) = I_{t}(N/2, D/2)`, :math:`t = \\rho^2/(\\rho^2 + r^2)` (regularised incomplete beta);
    ``D = inf``: the chi distribution's :math:`P(N/2, \\rho^2/(2\\sigma^2))`. Shape of ``radius``."""
    D = _check_D(D)
    rho2 = radius.double().square()
    if math.isinf(D):
        out = torch.special.gammainc(torch.tensor(N / 2, dtype=torch.float64), rho2 / (2 * sigma**2))
    else:
        from scipy.special import betainc

        t = (rho2 / (rho2 + D * sigma**2)).cpu().numpy()
        out = torch.from_numpy(betainc(N / 2, D / 2, t))
    return out.to(dtype=radius.dtype, device=radius.device)


_LEVELS = OneOf(Real(ge=0), Tensor(ndims=tuple(range(0, 8)), nonnegative=True, allow_empty=True))


@accepts(sigma=_LEVELS, D=Real(gt=0), example=lambda ctx: {"sigma": 0.5, "D": 8.0})
def sigma_to_radius(sigma, D: float):
    """The alignment :math:`r = \\sigma\\sqrt D` (a number or tensor; finite ``D`` only)."""
    return sigma * math.sqrt(_check_D(D))


@accepts(r=_LEVELS, D=Real(gt=0), example=lambda ctx: {"r": 1.5, "D": 8.0})
def radius_to_sigma(r, D: float):
    """The inverse alignment :math:`\\sigma = r/\\sqrt D`."""
    return r / math.sqrt(_check_D(D))


def _log_weights(x_flat, data_flat, log_w, sigma, D: float, N: int) -> torch.Tensor:
    """Unnormalised log posterior weights ``(B, n)``; ``sigma`` a ``(B, 1)`` tensor of finite levels > 0."""
    dist2 = torch.cdist(x_flat, data_flat).square()
    if math.isinf(D):
        return log_w - dist2 / (2 * sigma.square())
    return log_w - 0.5 * (N + D) * torch.log1p(dist2 / (D * sigma.square()))


def _posterior_mean(x, sigma, data, log_w, D: float) -> torch.Tensor:
    """Unchecked :func:`pfgmpp_posterior_mean`: ``sigma`` broadcastable to ``(B,)``, may hold 0 and inf."""
    B, n = x.shape[0], data.shape[0]
    N = data[0].numel()
    x_flat, data_flat = x.reshape(B, N), data.reshape(n, N)
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(B).reshape(B, 1)
    inf, zero = torch.isinf(s), s == 0
    safe = torch.where(inf | zero, torch.ones_like(s), s)
    logits = _log_weights(x_flat, data_flat, log_w, safe, D, N)
    # sigma = 0: the nearest data point (the limit of the weights); sigma = inf: the weighted data mean
    if bool(zero.any()):
        dist2 = torch.cdist(x_flat, data_flat).square()
        nearest = torch.where(dist2 <= dist2.min(1, keepdim=True).values, log_w, torch.full_like(dist2, -math.inf))
        logits = torch.where(zero, nearest, logits)
    logits = torch.where(inf, log_w.expand_as(logits), logits)
    return (torch.softmax(logits, dim=1) @ data_flat).reshape(x.shape)


def _example_posterior(ctx):
    g = ctx.generator
    return {"x": torch.randn(4, 3, generator=g, dtype=ctx.dtype), "sigma": 0.5,
            "data": torch.randn(6, 3, generator=g, dtype=ctx.dtype), "D": 8.0}


@accepts(x=Tensor(ndims=tuple(range(1, 8)), degenerate=("coincident",)),
         sigma=OneOf(Real(ge=0), Tensor(ndims=(1,), nonnegative=True, finite=False)),
         data=Tensor(ndims=tuple(range(1, 8)), degenerate=("coincident",)), D=_D,
         weights=Tensor("n", positive_mass=True, optional=True), example=_example_posterior)
def pfgmpp_posterior_mean(x: torch.Tensor, sigma: float | torch.Tensor, data: torch.Tensor, D: float, *,
                          weights: torch.Tensor | None = None) -> torch.Tensor:
    """The exact PFGM++ denoiser of a finite data set: :math:`E[y \\mid x]` under the kernel at
    :math:`r = \\sigma\\sqrt D`, :math:`\\pi_i \\propto w_i(\\lVert x - y_i\\rVert^2 + D\\sigma^2)^{-(N+D)/2}`.

    Args:
        x: states ``(B, *S)``; sigma: a level ``>= 0`` or one per state ``(B,)`` (``0``: the nearest data point,
            ``inf``: the data mean); data: ``(n, *S)``; D: augmented dimensions, ``math.inf`` for diffusion's
            Gaussian posterior; weights: ``(n,)`` nonnegative data weights (normalised), default uniform.

    Returns:
        ``(B, *S)``.
    """
    D = _check_D(D)
    if tuple(x.shape[1:]) != tuple(data.shape[1:]):
        raise ValueError(f"x must have the data's per-sample shape {tuple(data.shape[1:])}, got {tuple(x.shape)}")
    if isinstance(sigma, torch.Tensor) and sigma.dim() == 1 and sigma.shape[0] != x.shape[0]:
        raise ValueError(f"sigma must have one level per row of x ({x.shape[0]}), got shape {tuple(sigma.shape)}")
    if isinstance(sigma, torch.Tensor) and bool(torch.isnan(sigma).any()):
        raise ValueError("sigma must not contain NaN")
    if weights is not None and weights.shape[0] != data.shape[0]:
        raise ValueError(f"weights must have one entry per data point ({data.shape[0]}), got {weights.shape[0]}")
    return _posterior_mean(x, sigma, data, _log_data_weights(weights, data), D)


def _log_data_weights(weights, data) -> torch.Tensor:
    if weights is None:
        return torch.zeros(1, data.shape[0], dtype=data.dtype, device=data.device)
    w = weights / weights.sum()
    return torch.log(w).clamp_min(torch.finfo(data.dtype).min / 4)[None, :]


class EmpiricalPFGMPP:
    """The exact PFGM++ denoiser ``model(x, sigma)`` of a finite data set (:func:`pfgmpp_posterior_mean`), for the
    substrate's samplers.

    Args:
        data: ``(n, *S)``; D: augmented dimensions (``math.inf``: the empirical Gaussian posterior mean);
        weights: ``(n,)`` optional data weights.
    """

    @accepts(data=Tensor(ndims=tuple(range(1, 8)), degenerate=("coincident",)), D=_D,
             weights=Tensor("n", positive_mass=True, optional=True),
             example=lambda ctx: {"data": torch.randn(6, 3, generator=ctx.generator, dtype=ctx.dtype), "D": 8.0})
    def __init__(self, data: torch.Tensor, D: float, weights: torch.Tensor | None = None):
        if weights is not None and weights.shape[0] != data.shape[0]:
            raise ValueError(f"weights must have one entry per data point ({data.shape[0]}), got {weights.shape[0]}")
        self.data, self.D = data, _check_D(D)
        self._log_w = _log_data_weights(weights, data)

    def __repr__(self) -> str:
        return f"EmpiricalPFGMPP(n={self.data.shape[0]}, N={self.data[0].numel()}, D={self.D:g})"

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        if tuple(x.shape[1:]) != tuple(self.data.shape[1:]):
            raise ValueError(f"x must have the data's per-sample shape {tuple(self.data.shape[1:])}, got "
                             f"{tuple(x.shape)}")
        return _posterior_mean(x, sigma, self.data, self._log_w, self.D)


@accepts(step=Function(), alpha=Real(ge=0), generator=Generator(), output="any",
         example=lambda ctx: {"step": _euler_step, "alpha": 0.2})
def noise_injected_step(step, alpha: float, *, generator: torch.Generator | None = None):
    """A sampler step followed by :math:`\\alpha\\,\\sigma_{next}\\,z`, :math:`z \\sim \\mathcal N(0, I)` (none when
    :math:`\\sigma_{next} = 0`): the paper's controlled estimation error (Section 5.3; the official
    ``generate_alpha.py`` adds :math:`\\alpha\\sigma_i z` to each state before its evaluation, so add
    :math:`\\alpha\\sigma_0 z` to the starting state as well to match it). ``generator`` draws ``z`` (default: the
    sampler's generator)."""
    def injected(x, sigma, sigma_next, denoised, ctx):
        x = step(x, sigma, sigma_next, denoised, ctx)
        if alpha > 0 and float(sigma_next) > 0:
            gen = generator if generator is not None else ctx.generator
            x = x + alpha * sigma_next * torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
        return x
    injected.alpha = alpha
    return injected
