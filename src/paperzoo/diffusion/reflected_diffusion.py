"""Denoising reflected diffusion on the unit interval: Neumann heat kernel, cosine-series scores, reflected sampler.

References: Statistical guarantees for denoising reflected diffusion models (Holk, Strauch, Trottner), 2024.

Data live on a bounded domain, here :math:`[0, 1]`. The forward process is Brownian motion reflected at the
boundary, :math:`dX_t = dB_t + dL_t` (local-time push at 0 and 1), whose law at time :math:`t` started at
:math:`y` is the Neumann heat kernel of :math:`\\tfrac12\\partial_x^2`. paperzoo indexes time by the VE level
:math:`\\sigma = \\sqrt t`, so

.. math::
    q_\\sigma(x, y) = 1 + 2\\sum_{k\\ge1} e^{-\\pi^2k^2\\sigma^2/2}\\cos(\\pi k x)\\cos(\\pi k y)
    = \\sum_{m\\in\\mathbb Z}\\bigl[\\varphi_\\sigma(x - y - 2m) + \\varphi_\\sigma(x + y - 2m)\\bigr]

(cosine eigen-expansion and method of images, :math:`\\varphi_\\sigma` the :math:`N(0, \\sigma^2)` density;
:func:`neumann_heat_kernel`). It integrates to 1 in :math:`x` and has :math:`\\partial_x q = 0` at 0 and 1; as
:math:`\\sigma\\to\\infty` it tends to the uniform law, the reverse process's start.

A density in the Neumann cosine basis, :math:`p(y) = 1 + \\sum_{k=1}^K a_k\\cos(\\pi k y)`, has the forward
marginal :math:`p_\\sigma(x) = 1 + \\sum_k a_k e^{-\\pi^2k^2\\sigma^2/2}\\cos(\\pi k x)` in closed form, hence the
score :math:`\\partial_x\\log p_\\sigma` (:class:`CosineSeriesDensity`). Sobolev smoothness :math:`s` in this
basis is decay of :math:`a_k`: :math:`\\sum_k k^{2s}a_k^2 < \\infty`. The score estimator from :math:`n` samples is
the projection estimator :math:`\\hat a_k = \\tfrac2n\\sum_i\\cos(\\pi k X_i)`, :math:`k \\le K`
(:func:`cosine_series_estimate`), with :math:`K \\asymp n^{1/(2s+1)}` (:func:`minimax_terms`), the truncation that
balances squared bias :math:`K^{-2s}` against variance :math:`K/n`. The paper's statement is that the reverse
reflected diffusion driven by a score estimate of this quality generates a law within
:math:`n^{-s/(2s+d)}` (up to logs) of the data law in total variation; the paper's estimator is a neural network
fitted with the spectral (eigenfunction) structure of the kernel, ours is its series analogue, computable in
closed form.

The reverse process :math:`dY = \\partial_x\\log p_{\\sigma}(Y)\\,dt + dB + dL` (time :math:`t = \\sigma^2` running
down) is discretised by Euler-Maruyama with reflection (:func:`reflected_step`, :func:`sample_reflected_em`)::

    x_next = fold(x + (sigma^2 - sigma_next^2) * score + sqrt(sigma^2 - sigma_next^2) * z)

with ``score = (D - x) / sigma^2`` read off a denoiser-shaped ``model(x, sigma)`` (the Tweedie form
:math:`D = x + \\sigma^2\\,\\partial_x\\log p_\\sigma(x)`, :meth:`CosineSeriesDensity.denoise`; for a reflected
diffusion this :math:`D` is a reparametrised score, not a posterior mean) and ``fold`` the reflection onto
:math:`[0, 1]` (:func:`reflect_unit`). No noise is added on a last step to :math:`\\sigma = 0`.

Shapes: points ``x`` of shape ``(N, 1)`` for the sampler and the denoiser (the substrate's ``(N, d)``), any shape
for the densities and the kernel's ``x``/``y`` vectors.

Example:
    >>> import torch
    >>> truth = CosineSeriesDensity(torch.tensor([0.4, -0.3, 0.2], dtype=torch.float64))
    >>> g = torch.Generator().manual_seed(0)
    >>> sigmas = torch.cat([torch.logspace(0.2, -3, 80, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    >>> x0 = torch.rand(4000, 1, generator=g, dtype=torch.float64)      # uniform: the reflected chain's limit
    >>> x = sample_reflected_em(truth.denoise, x0, sigmas, generator=g)
    >>> bool(((x >= 0) & (x <= 1)).all()), float(truth.ks_distance(x.squeeze(1))) < 0.03
    (True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from paperzoo.core.accepts import Choice, Flag, Function, Generator, Int, OneOf, Real, Tensor, accepts
from paperzoo.diffusion.samplers import _COMMON, run_sampler

__all__ = ["neumann_heat_kernel", "reflect_unit", "CosineSeriesDensity", "cosine_series_estimate",
           "minimax_terms", "reflected_step", "sample_reflected_em"]

_POINTS = Tensor(ndims=tuple(range(1, 8)), degenerate=("constant",))


def _reflect_unit(x: torch.Tensor) -> torch.Tensor:
    y = torch.remainder(x, 2.0)
    return torch.where(y > 1.0, 2.0 - y, y)


@accepts(x=Tensor(ndims=tuple(range(0, 8)), allow_empty=True, degenerate=("zeros",)))
def reflect_unit(x: torch.Tensor) -> torch.Tensor:
    """Fold the real line onto :math:`[0, 1]` by reflection at 0 and 1 (period 2): the exact reflection of a
    Brownian increment, used by the sampler after every step."""
    return _reflect_unit(x)


def _series_terms(sigma: float, tol: float = 1e-17) -> int:
    # e^{-pi^2 k^2 sigma^2 / 2} < tol beyond this k
    return max(1, int(math.ceil(math.sqrt(2.0 * math.log(1.0 / tol)) / (math.pi * sigma))))


@accepts(x=Tensor("m"), y=Tensor("n"), sigma=Real(gt=0), method=Choice("images", "series"),
         terms=Int(ge=1, optional=True),
         example=lambda ctx: {"x": torch.rand(5, generator=ctx.generator, dtype=ctx.dtype),
                              "y": torch.rand(4, generator=ctx.generator, dtype=ctx.dtype), "sigma": 0.3})
def neumann_heat_kernel(x: torch.Tensor, y: torch.Tensor, sigma: float, *, method: str = "images",
                        terms: int | None = None) -> torch.Tensor:
    """The Neumann heat kernel :math:`q_\\sigma(x, y)` on :math:`[0, 1]` (module docstring), shape ``(m, n)``.

    Args:
        x: evaluation points, shape ``(m,)``, in :math:`[0, 1]`.
        y: starting points, shape ``(n,)``, in :math:`[0, 1]`.
        sigma: the level :math:`\\sigma = \\sqrt t` (> 0).
        method: ``"images"`` (sum over reflected Gaussians, accurate at small :math:`\\sigma`) or ``"series"``
            (the cosine eigen-expansion, accurate at large :math:`\\sigma`); both are exact in the limit of terms.
        terms: number of image pairs on each side / cosine terms; default: enough for double precision.
    """
    for name, v in (("x", x), ("y", y)):
        if bool((v < 0).any()) or bool((v > 1).any()):
            raise ValueError(f"{name} must lie in [0, 1], got entries in [{float(v.min())!r}, {float(v.max())!r}]")
    if method == "series":
        k = torch.arange(1, (terms or _series_terms(sigma)) + 1, dtype=x.dtype, device=x.device)
        w = torch.exp(-0.5 * (math.pi * k * sigma) ** 2)
        cx, cy = torch.cos(math.pi * x[:, None] * k), torch.cos(math.pi * y[:, None] * k)
        return 1.0 + 2.0 * (cx * w) @ cy.T
    m_max = terms if terms is not None else int(math.ceil(10.0 * sigma)) + 2
    m = torch.arange(-m_max, m_max + 1, dtype=x.dtype, device=x.device)
    norm = 1.0 / (sigma * math.sqrt(2.0 * math.pi))
    d1 = x[:, None, None] - y[None, :, None] - 2.0 * m
    d2 = x[:, None, None] + y[None, :, None] - 2.0 * m
    return norm * (torch.exp(-0.5 * (d1 / sigma) ** 2) + torch.exp(-0.5 * (d2 / sigma) ** 2)).sum(-1)


def _example_density(ctx) -> "CosineSeriesDensity":
    return CosineSeriesDensity(torch.tensor([0.3, -0.2, 0.1], dtype=ctx.dtype))


_LEVEL = OneOf(Real(ge=0), Tensor(ndims=tuple(range(0, 8)), nonnegative=True, allow_empty=True))


class CosineSeriesDensity:
    """A density :math:`p(y) = 1 + \\sum_{k=1}^K a_k\\cos(\\pi k y)` on :math:`[0, 1]` with its reflected-heat
    marginals, scores and a Tweedie-form denoiser at every level :math:`\\sigma`.

    Args:
        coefficients: :math:`a_1, \\dots, a_K`, shape ``(K,)``. Nothing forces :math:`p \\ge 0` (a projection
            estimate may dip below 0); the score divides by :math:`\\max(p_\\sigma, \\text{floor})`.
        floor: the positive floor of the density in the score's denominator.

    Example:
        >>> import torch
        >>> p = CosineSeriesDensity(torch.tensor([0.5], dtype=torch.float64))
        >>> round(float(p.density(torch.tensor([0.0], dtype=torch.float64))), 6)
        1.5
    """

    @accepts(coefficients=Tensor("K", degenerate=("zeros",)), floor=Real(gt=0),
             example=lambda ctx: {"coefficients": torch.tensor([0.3, -0.2, 0.1], dtype=ctx.dtype)})
    def __init__(self, coefficients: torch.Tensor, *, floor: float = 1e-3):
        self.coefficients = coefficients
        self.floor = float(floor)
        self._k = torch.arange(1, coefficients.shape[0] + 1, dtype=coefficients.dtype, device=coefficients.device)

    @property
    def terms(self) -> int:
        return int(self.coefficients.shape[0])

    def __repr__(self) -> str:
        return f"CosineSeriesDensity(terms={self.terms}, floor={self.floor})"

    def _weights(self, x, sigma):
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        return self.coefficients * torch.exp(-0.5 * (math.pi * self._k) ** 2 * sig[..., None] ** 2)

    def _density(self, x, sigma=0.0):
        return 1.0 + (self._weights(x, sigma) * torch.cos(math.pi * x[..., None] * self._k)).sum(-1)

    def _score(self, x, sigma):
        w = self._weights(x, sigma)
        angle = math.pi * x[..., None] * self._k
        grad = -(w * (math.pi * self._k) * torch.sin(angle)).sum(-1)
        return grad / (1.0 + (w * torch.cos(angle)).sum(-1)).clamp_min(self.floor)

    @accepts(x=_POINTS, sigma=_LEVEL, example=lambda ctx: {"self": _example_density(ctx),
                                                           "x": torch.rand(6, generator=ctx.generator,
                                                                           dtype=ctx.dtype)})
    def density(self, x: torch.Tensor, sigma: float | torch.Tensor = 0.0) -> torch.Tensor:
        """:math:`p_\\sigma(x)`, the law of the reflected forward process at level ``sigma``; shape of ``x``."""
        return self._density(x, sigma)

    @accepts(x=_POINTS, sigma=_LEVEL, example=lambda ctx: {"self": _example_density(ctx),
                                                           "x": torch.rand(6, generator=ctx.generator,
                                                                           dtype=ctx.dtype)})
    def score(self, x: torch.Tensor, sigma: float | torch.Tensor = 0.0) -> torch.Tensor:
        """:math:`\\partial_x\\log p_\\sigma(x)` (denominator floored at ``floor``); shape of ``x``."""
        return self._score(x, sigma)

    @accepts(x=Tensor("N", 1, degenerate=("constant",)), sigma=_LEVEL,
             example=lambda ctx: {"self": _example_density(ctx),
                                  "x": torch.rand(6, 1, generator=ctx.generator, dtype=ctx.dtype), "sigma": 0.2})
    def denoise(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """The Tweedie-form denoiser :math:`x + \\sigma^2\\partial_x\\log p_\\sigma(x)`, ``x`` of shape ``(N, 1)``,
        ``sigma`` a number or shape ``(N,)``: the ``model(x, sigma)`` that :func:`sample_reflected_em` takes."""
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sig.dim() == 1:  # one level per point; a shared level (the samplers' case) is evaluated once
            sig = sig[0] if bool((sig == sig[0]).all()) else sig[:, None]
        return x + sig**2 * self._score(x, sig)

    def _cdf(self, y):
        return y + (self.coefficients * torch.sin(math.pi * y[..., None] * self._k) / (math.pi * self._k)).sum(-1)

    @accepts(n=Int(ge=0), generator=Generator(), example=lambda ctx: {"self": _example_density(ctx), "n": 5})
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact draws (inverse CDF by bisection, to double precision), shape ``(n,)``. Needs :math:`p \\ge 0`
        (checked on a grid)."""
        grid = torch.linspace(0, 1, 4097, dtype=self.coefficients.dtype)
        if float(self._density(grid).min()) < 0:
            raise ValueError("sample needs a nonnegative density; the coefficients give p < 0 somewhere")
        u = torch.rand(n, generator=generator, dtype=self.coefficients.dtype)
        lo, hi = torch.zeros_like(u), torch.ones_like(u)
        for _ in range(45):
            mid = 0.5 * (lo + hi)
            below = self._cdf(mid) < u
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return 0.5 * (lo + hi)

    @accepts(samples=Tensor("N"), example=lambda ctx: {"self": _example_density(ctx),
                                                       "samples": torch.rand(7, generator=ctx.generator,
                                                                             dtype=ctx.dtype)})
    def ks_distance(self, samples: torch.Tensor) -> torch.Tensor:
        """Kolmogorov-Smirnov distance between ``samples`` (shape ``(N,)``) and this law (0-dim tensor)."""
        x = samples.sort().values
        n = x.shape[0]
        cdf = self._cdf(x).clamp(0, 1)
        i = torch.arange(1, n + 1, dtype=x.dtype)
        return torch.maximum((i / n - cdf).abs().max(), (cdf - (i - 1) / n).abs().max())

    @accepts(other=Tensor("K2", degenerate=("zeros",)), grid_size=Int(ge=16),
             example=lambda ctx: {"self": _example_density(ctx),
                                  "other": torch.tensor([0.2, 0.1], dtype=ctx.dtype)})
    def tv_distance(self, other: torch.Tensor, *, grid_size: int = 8192) -> torch.Tensor:
        """Total variation :math:`\\tfrac12\\int_0^1|p - q|` to the cosine series with coefficients ``other``
        (shape ``(K2,)``), by the midpoint rule on ``grid_size`` cells (0-dim tensor). A negative part of either
        is counted as it stands (no projection onto densities)."""
        x = (torch.arange(grid_size, dtype=self.coefficients.dtype) + 0.5) / grid_size
        q = CosineSeriesDensity._density(CosineSeriesDensity(other), x)
        return 0.5 * (self._density(x) - q).abs().mean()


@accepts(samples=Tensor("n"), terms=Int(ge=1), floor=Real(gt=0),
         example=lambda ctx: {"samples": torch.rand(9, generator=ctx.generator, dtype=ctx.dtype), "terms": 3})
def cosine_series_estimate(samples: torch.Tensor, terms: int, *, floor: float = 1e-3) -> CosineSeriesDensity:
    """The projection estimator :math:`\\hat a_k = \\tfrac2n\\sum_i\\cos(\\pi k X_i)`, :math:`k = 1..K`, of a
    density on :math:`[0, 1]` from ``samples`` (shape ``(n,)``, in :math:`[0, 1]`), returned with its closed-form
    reflected-heat scores. ``terms`` is :math:`K` (see :func:`minimax_terms`)."""
    if bool((samples < 0).any()) or bool((samples > 1).any()):
        raise ValueError(f"samples must lie in [0, 1], got entries in [{float(samples.min())!r}, "
                         f"{float(samples.max())!r}]")
    k = torch.arange(1, terms + 1, dtype=samples.dtype, device=samples.device)
    return CosineSeriesDensity(2.0 * torch.cos(math.pi * samples[:, None] * k).mean(0), floor=floor)


@accepts(n=Int(ge=1), smoothness=Real(gt=0), dim=Int(ge=1), scale=Real(gt=0))
def minimax_terms(n: int, smoothness: float, *, dim: int = 1, scale: float = 1.0) -> int:
    """The number of basis terms per dimension, :math:`K = \\max(1, \\mathrm{round}(c\\,n^{1/(2s+d)}))`, that
    balances bias and variance for :math:`s`-smooth densities; its TV error is :math:`n^{-s/(2s+d)}`."""
    return max(1, int(round(scale * n ** (1.0 / (2.0 * smoothness + dim)))))


def reflected_step(x, sigma, sigma_next, denoised, ctx):
    """Euler-Maruyama for the reverse reflected SDE in :math:`t = \\sigma^2`, then reflection onto :math:`[0, 1]`
    (module docstring); no noise on a last step to :math:`\\sigma = 0`."""
    dt = sigma**2 - sigma_next**2
    x = x + dt * (denoised - x) / sigma**2
    if float(sigma_next) > 0:
        x = x + dt.sqrt() * ctx.noise(x)
    return _reflect_unit(x)


def _example_sampler(ctx) -> dict:
    sigmas = torch.tensor([1.5, 0.5, 0.1, 0.0], dtype=ctx.dtype)
    return {"model": _example_density(ctx).denoise, "x": torch.rand(5, 1, generator=ctx.generator, dtype=ctx.dtype),
            "sigmas": sigmas}


@accepts(**_COMMON, example=_example_sampler)
def sample_reflected_em(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                        sigmas: torch.Tensor, *, generator: torch.Generator | None = None, callback=None,
                        progress: bool = False) -> torch.Tensor:
    """The reverse reflected diffusion by Euler-Maruyama with reflection (:func:`reflected_step`), one model
    evaluation per step. ``x``: the start at ``sigmas[0]``, in :math:`[0, 1]` (uniform draws for generation when
    ``sigmas[0]`` is 1.5 or more: the reflected forward law is then uniform to within :math:`e^{-\\pi^2\\sigma^2/2}`),
    shape ``(N, 1)``; ``sigmas`` decreasing and finite, usually ending in 0."""
    if bool(torch.isinf(sigmas).any()):
        raise ValueError("sigmas must be finite for the reflected sampler (its start is the uniform law, "
                         "reached at a finite level)")
    if bool((x < 0).any()) or bool((x > 1).any()):
        raise ValueError(f"x must lie in [0, 1], got entries in [{float(x.min())!r}, {float(x.max())!r}]")
    return run_sampler(model, x, sigmas, reflected_step, generator=generator, callback=callback, progress=progress)
