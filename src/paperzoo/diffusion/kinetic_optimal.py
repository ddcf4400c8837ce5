"""Kinetic-optimal Gaussian probability paths: the kinetic energy of a path, the data separation function and a
numerically kinetic-optimal schedule.

References: On Kinetic Optimal Probability Paths for Generative Models (Shaul, Chen, Nickel, Le, Lipman), 2023.

A Gaussian path joins noise (:math:`t = 0`) to data (:math:`t = 1`) by the schedule :math:`(\\alpha_t, \\sigma_t)`,
:math:`\\alpha_0 = 0, \\sigma_0 = 1, \\alpha_1 = 1, \\sigma_1 = 0` (the paper's time direction, the reverse of
paperzoo's flow time):

.. math::
    x_t = \\alpha_t x_1 + \\sigma_t x_0, \\quad x_0 \\sim \\mathcal N(0, I),\\ x_1 \\sim q, \\qquad
    u_t(x) = E[\\dot\\alpha_t x_1 + \\dot\\sigma_t x_0 \\mid x_t = x]
    = \\dot\\alpha_t\\, D(x/\\alpha_t, \\tau_t) + \\dot\\sigma_t\\, \\hat\\varepsilon(x/\\alpha_t, \\tau_t),

with :math:`\\tau_t = \\sigma_t/\\alpha_t` the VE level of the path at time :math:`t`, :math:`D` the VE denoiser
and :math:`\\hat\\varepsilon = (x - D)/\\tau` its noise estimate. The marginal velocity :math:`u_t` generates the
marginal path :math:`p_t`; its kinetic energy is
:math:`\\mathcal E = \\int_0^1 E_{x \\sim p_t}\\|u_t(x)\\|^2\\, dt` (:func:`gaussian_path_kinetic_energy`, Monte
Carlo over the exact mixture denoiser).

Expanding the square (with :math:`E[x \\cdot \\hat x_1] = E[x \\cdot x_1]`) shows that the data enter only through
:math:`d`, the second moment :math:`m = E\\|x_1\\|^2` and one scalar function of the level, the noise-prediction
error :math:`g(\\tau) = E\\|\\varepsilon - \\hat\\varepsilon(x_1 + \\tau\\varepsilon, \\tau)\\|^2` (between
:math:`g(0)`, :math:`d` for data with a density or 0 for point masses, and 0 at :math:`\\tau = \\infty`):

.. math::
    \\mathcal E = \\int_0^1 \\Bigl[d\\,\\dot\\sigma_t^2 + m\\,\\dot\\alpha_t^2
    - g(\\tau_t)\\Bigl(\\frac{\\dot\\alpha_t \\sigma_t - \\alpha_t \\dot\\sigma_t}{\\alpha_t}\\Bigr)^2\\Bigr] dt .

This is the paper's reduction: in terms of the signal-to-noise ratio :math:`s = \\alpha/\\sigma = 1/\\tau` the data
enter through the *data separation function*
:math:`\\lambda(s) = E\\|E[x_1 \\mid x_0 + s x_1]\\|^2 / E\\|x_1\\|^2 = 1 - g(1/s)/(s^2 m)`
(:func:`data_separation_function`), which is 1 when every data point is identified from its noisy copy. With
:math:`\\lambda \\equiv 1` (a single point mass) the energy is :math:`\\int d\\dot\\sigma^2 + m\\dot\\alpha^2`,
minimised by the conditional-OT path :math:`\\alpha_t = t, \\sigma_t = 1 - t` with energy
:math:`d + m = E\\|x_1 - x_0\\|^2`; the paper proves :math:`\\lambda \\to 1` for normalised data of :math:`n`
points in dimension :math:`d` as :math:`n/\\sqrt d \\to 0`, so Cond-OT becomes kinetic optimal there.
For other data, :func:`kinetic_optimal_path` minimises the separation form over piecewise-linear schedules (a
numerical stand-in for the paper's 1-D optimality ODE) given :math:`g` (exact for Gaussian data,
:func:`gaussian_eps_mmse`, or tabulated from the exact denoiser, :func:`tabulate_eps_mmse`, the paper's
"approximate the data separation function, then minimise the KE").

:func:`path_to_ve_sigmas` turns a schedule into the VE levels :math:`\\tau_{t_i}` of paperzoo's samplers (the first
is :math:`\\infty` where :math:`\\alpha_0 = 0`; start from unit noise, see :mod:`~paperzoo.diffusion.samplers`).

Example:
    >>> import torch
    >>> from paperzoo.diffusion.mixture import GaussianMixture
    >>> point = GaussianMixture(torch.tensor([[3.0, 0.0]], dtype=torch.float64),
    ...                         1e-8 * torch.eye(2, dtype=torch.float64)[None])
    >>> ke = gaussian_path_kinetic_energy(cond_ot_path(), point, n=4000, generator=torch.Generator().manual_seed(0))
    >>> round(ke.energy, 1)  # d + ||x1||^2 = 2 + 9
    11.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from paperzoo.core.accepts import Function, Generator, Instance, Int, Real, Tensor, accepts
from paperzoo.diffusion.mixture import GaussianMixture

__all__ = ["GaussianPath", "cond_ot_path", "cosine_path", "piecewise_linear_path", "KineticEnergy",
           "gaussian_path_kinetic_energy", "gaussian_eps_mmse", "tabulate_eps_mmse", "TabulatedEpsMMSE",
           "data_separation_function", "kinetic_energy_from_separation", "KineticOptimalPath",
           "kinetic_optimal_path", "path_to_ve_sigmas"]

_BOUNDARY_TOL = 1e-6
_T_EDGE = 1e-7  # Monte Carlo times stay inside (0, 1): the level is infinite at 0 and zero at 1


def _example_point(ctx) -> GaussianMixture:
    return GaussianMixture(torch.tensor([[1.0, -1.0]], dtype=ctx.dtype), 1e-4 * torch.eye(2, dtype=ctx.dtype)[None])


class GaussianPath:
    r"""A Gaussian probability path :math:`x_t = \alpha_t x_1 + \sigma_t x_0` given by its schedule.

    Args:
        alpha, sigma: elementwise differentiable functions of a float tensor ``t`` in :math:`[0, 1]`
            (``t -> alpha(t)``, same shape), with :math:`\alpha_0 = 0, \sigma_0 = 1, \alpha_1 = 1, \sigma_1 = 0`
            (checked to 1e-6). Their derivatives are taken by autograd.
        name: a label.
    """

    @accepts(alpha=Function(), sigma=Function(),
             example=lambda ctx: {"alpha": lambda t: t, "sigma": lambda t: 1 - t})
    def __init__(self, alpha: Callable[[torch.Tensor], torch.Tensor],
                 sigma: Callable[[torch.Tensor], torch.Tensor], name: str = "custom"):
        ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
        a, s = alpha(ends), sigma(ends)
        for label, got, want in (("alpha", a, (0.0, 1.0)), ("sigma", s, (1.0, 0.0))):
            if not isinstance(got, torch.Tensor) or got.shape != ends.shape:
                raise ValueError(f"{label} must map a tensor t to a tensor of its shape")
            if any(abs(float(g) - w) > _BOUNDARY_TOL for g, w in zip(got, want)):
                raise ValueError(f"{label} must equal {want[0]:g} at t = 0 and {want[1]:g} at t = 1 (noise at 0, "
                                 f"data at 1), got {float(got[0])!r} and {float(got[1])!r}")
        self.alpha, self.sigma, self.name = alpha, sigma, name

    def __repr__(self) -> str:
        return f"GaussianPath({self.name})"

    def rates(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:math:`(\\alpha_t, \\sigma_t, \\dot\\alpha_t, \\dot\\sigma_t)`, each of ``t``'s shape (no graph kept)."""
        with torch.enable_grad():
            tt = t.detach().clone().requires_grad_(True)
            a, s = self.alpha(tt), self.sigma(tt)
            da, = torch.autograd.grad(a.sum(), tt, retain_graph=True, allow_unused=True)
            ds, = torch.autograd.grad(s.sum(), tt, allow_unused=True)
        da = torch.zeros_like(tt) if da is None else da
        ds = torch.zeros_like(tt) if ds is None else ds
        return a.detach(), s.detach(), da.detach(), ds.detach()


@accepts(output="any")  # a path object
def cond_ot_path() -> GaussianPath:
    """The conditional-OT (rectified-flow) path :math:`\\alpha_t = t, \\sigma_t = 1 - t`."""
    return GaussianPath(lambda t: t, lambda t: 1 - t, "cond-OT")


@accepts(output="any")  # a path object
def cosine_path() -> GaussianPath:
    """The variance-preserving cosine path :math:`\\alpha_t = \\sin(\\pi t/2), \\sigma_t = \\cos(\\pi t/2)`
    (:math:`\\alpha^2 + \\sigma^2 = 1`; the cosine schedule of Nichol & Dhariwal with offset 0)."""
    return GaussianPath(lambda t: torch.sin(0.5 * math.pi * t),
                        lambda t: torch.where(t >= 1, torch.zeros_like(t), torch.cos(0.5 * math.pi * t)), "VP-cosine")


@accepts(alphas=Tensor("k"), sigmas=Tensor("k", nonnegative=True),
         example=lambda ctx: {"alphas": torch.linspace(0, 1, 5, dtype=ctx.dtype),
                              "sigmas": torch.linspace(1, 0, 5, dtype=ctx.dtype)})
def piecewise_linear_path(alphas: torch.Tensor, sigmas: torch.Tensor) -> GaussianPath:
    """The path through the knots ``(alphas[j], sigmas[j])`` at the uniform times ``j/(k-1)``, linear in between;
    ``alphas``, ``sigmas``: ``(k,)``, ``k >= 2``, from (0, 1) to (1, 0)."""
    if alphas.shape[0] < 2:
        raise ValueError(f"alphas must hold at least 2 knots, got {alphas.shape[0]}")
    A, S = alphas.detach().clone(), sigmas.detach().clone()
    segments = A.shape[0] - 1

    def interp(values):
        def f(t):
            pos = t * segments
            j = pos.detach().floor().clamp(0, segments - 1).long()
            w = pos - j.to(pos.dtype)
            v = values.to(t.dtype)
            return v[j] + w * (v[j + 1] - v[j])
        return f

    return GaussianPath(interp(A), interp(S), f"piecewise-linear({A.shape[0]} knots)")


class KineticEnergy(NamedTuple):
    """A Monte Carlo kinetic energy: ``energy`` (the estimate), ``stderr`` (its standard error), ``n`` draws."""

    energy: float
    stderr: float
    n: int


@accepts(path=Instance(GaussianPath, what="GaussianPath"), data=Instance(GaussianMixture, what="GaussianMixture"),
         n=Int(ge=2), generator=Generator(),
         example=lambda ctx: {"path": cond_ot_path(), "data": _example_point(ctx), "n": 64})
def gaussian_path_kinetic_energy(path: GaussianPath, data: GaussianMixture, *, n: int = 4096,
                                 generator: torch.Generator | None = None) -> KineticEnergy:
    """Monte Carlo estimate of :math:`\\int_0^1 E_{p_t}\\|u_t\\|^2 dt` with the exact marginal velocity of ``path``
    over the mixture ``data`` (module docstring): ``n`` stratified times :math:`t_i = (i + U_i)/n`, each with its
    own :math:`x_1 \\sim q` and :math:`x_0 \\sim \\mathcal N(0, I)`; unbiased for any (also piecewise) schedule."""
    gen = generator
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    t = ((torch.arange(n, dtype=torch.float64) + u) / n).clamp(_T_EDGE, 1 - _T_EDGE).to(data.dtype)
    x1 = data.sample(n, generator=gen)
    eps = torch.randn(n, data.dim, generator=gen, dtype=data.dtype)
    return _mc_energy(path, data, t, x1, eps)


def _mc_energy(path, data, t, x1, eps) -> KineticEnergy:
    a, s, da, ds = path.rates(t)
    if bool((a <= 0).any()) or bool((s <= 0).any()):
        raise ValueError("path must have alpha_t > 0 and sigma_t > 0 for 0 < t < 1")
    tau = s / a
    x = x1 + tau[:, None] * eps                         # the VE state x_t / alpha_t
    denoised = data._denoise(x, tau)  # unchecked kernel: tau > 0 and finite here
    eps_hat = (x - denoised) / tau[:, None]
    v = da[:, None] * denoised + ds[:, None] * eps_hat
    e = v.square().sum(-1).double()
    return KineticEnergy(float(e.mean()), float(e.std() / math.sqrt(e.shape[0])), int(e.shape[0]))


@accepts(eigenvalues=Tensor("d", positive_mass=True, nonnegative=True), output="any",
         example=lambda ctx: {"eigenvalues": torch.tensor([0.5, 2.0], dtype=ctx.dtype)})
def gaussian_eps_mmse(eigenvalues: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The exact noise-prediction error of Gaussian data with covariance eigenvalues :math:`\\lambda_i`, shape
    ``(d,)``: :math:`g(\\tau) = \\sum_i \\lambda_i/(\\tau^2 + \\lambda_i)` (the mean does not enter). Returns
    ``g(tau)`` for a tensor of levels."""
    lam = eigenvalues.detach().clone()

    def g(tau: torch.Tensor) -> torch.Tensor:
        lam_ = lam.to(tau.dtype)
        return (lam_ / (tau[..., None].square() + lam_)).sum(-1)

    return g


class TabulatedEpsMMSE:
    """:math:`g(\\tau)` tabulated at ``levels`` ``(L,)`` (increasing) with ``values`` ``(L,)``; interpolated linearly
    in :math:`\\log\\tau`, held at ``values[0]`` below the table and decayed as :math:`\\tau^{-2}` above it
    (:math:`g \\approx \\operatorname{tr}\\operatorname{Cov}/\\tau^2` at large levels). Differentiable in ``tau``."""

    def __init__(self, levels: torch.Tensor, values: torch.Tensor):
        self.levels, self.values = levels, values
        self._log = levels.log()

    def __call__(self, tau: torch.Tensor) -> torch.Tensor:
        lv, vals = self._log.to(tau.dtype), self.values.to(tau.dtype)
        lt = tau.clamp_min(float(self.levels[0])).log()
        j = torch.searchsorted(lv, lt.detach().clamp(max=float(lv[-1])).contiguous()).clamp(1, lv.shape[0] - 1)
        w = ((lt - lv[j - 1]) / (lv[j] - lv[j - 1])).clamp(0, 1)
        inside = vals[j - 1] + w * (vals[j] - vals[j - 1])
        above = vals[-1] * (self.levels[-1].to(tau.dtype) / tau.clamp_min(float(self.levels[-1]))).square()
        return torch.where(tau > self.levels[-1].to(tau.dtype), above, inside)


@accepts(data=Instance(GaussianMixture, what="GaussianMixture"), n=Int(ge=2), n_levels=Int(ge=2),
         level_min=Real(gt=0), level_max=Real(gt=0), generator=Generator(),
         example=lambda ctx: {"data": _example_point(ctx), "n": 32, "n_levels": 8}, output="any")
def tabulate_eps_mmse(data: GaussianMixture, *, n: int = 2048, n_levels: int = 64, level_min: float = 1e-3,
                      level_max: float = 1e3, generator: torch.Generator | None = None) -> TabulatedEpsMMSE:
    """Monte Carlo table of :math:`g(\\tau) = E\\|\\varepsilon - \\hat\\varepsilon\\|^2` from the exact denoiser at
    ``n_levels`` log-spaced levels in ``[level_min, level_max]``, the same ``n`` draws at every level (so the
    table is smooth in :math:`\\tau`)."""
    if level_min >= level_max:
        raise ValueError(f"level_min must be < level_max ({level_max}), got {level_min}")
    levels = torch.logspace(math.log10(level_min), math.log10(level_max), n_levels, dtype=torch.float64)
    x1 = data.sample(n, generator=generator)
    eps = torch.randn(n, data.dim, generator=generator, dtype=data.dtype)
    values = []
    for tau in levels.to(data.dtype):
        x = x1 + tau * eps
        eps_hat = (x - data._denoise(x, tau)) / tau  # unchecked kernel in the loop
        values.append(float((eps_hat - eps).double().square().sum(-1).mean()))
    return TabulatedEpsMMSE(levels, torch.tensor(values, dtype=torch.float64))


def _second_moment(data: GaussianMixture) -> float:
    return float(torch.trace(data.covariance()) + data.mean().square().sum())


@accepts(data=Instance(GaussianMixture, what="GaussianMixture"), s=Tensor("k", nonnegative=True), n=Int(ge=2),
         generator=Generator(),
         example=lambda ctx: {"data": _example_point(ctx), "s": torch.tensor([0.0, 0.5, 4.0], dtype=ctx.dtype),
                              "n": 32})
def data_separation_function(data: GaussianMixture, s: torch.Tensor, *, n: int = 2048,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """Monte Carlo :math:`\\lambda(s) = E\\|E[x_1 \\mid x_0 + s x_1]\\|^2 / E\\|x_1\\|^2
    = 1 - E\\|x_1 - \\hat x_1\\|^2 / E\\|x_1\\|^2` at each signal-to-noise ratio ``s`` ``(k,)`` (the same ``n``
    draws at every ``s``; :math:`E\\|x_1\\|^2` exact); shape ``(k,)``. :math:`\\lambda(0) = \\|E x_1\\|^2/E\\|x_1\\|^2`."""
    m = _second_moment(data)
    x1 = data.sample(n, generator=generator)
    eps = torch.randn(n, data.dim, generator=generator, dtype=data.dtype)
    out = []
    for si in s:
        if float(si) == 0:
            err = (x1 - data.mean()).square().sum(-1).mean()
        else:
            tau = 1 / si
            err = (x1 - data._denoise(x1 + tau * eps, tau)).square().sum(-1).mean()
        out.append(1 - float(err) / m)
    return torch.tensor(out, dtype=s.dtype)


def _separation_integrand(a, s, da, ds, g, dim, m):
    tau = s / a
    cross = (da * s - a * ds) / a
    return dim * ds.square() + m * da.square() - g(tau) * cross.square()


_GL_NODES, _GL_WEIGHTS = (torch.tensor(v, dtype=torch.float64) for v in np.polynomial.legendre.leggauss(4))


def _panel_nodes(panels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite 4-point Gauss-Legendre nodes and weights on ``panels`` equal panels of [0, 1]."""
    left = torch.arange(panels, dtype=torch.float64)[:, None] / panels
    t = left + (_GL_NODES[None, :] + 1) / (2 * panels)
    w = (_GL_WEIGHTS / (2 * panels)).expand(panels, -1)
    return t.reshape(-1), w.reshape(-1)


@accepts(path=Instance(GaussianPath, what="GaussianPath"), eps_mmse=Function(), dim=Int(ge=1),
         second_moment=Real(ge=0), panels=Int(ge=1),
         example=lambda ctx: {"path": cosine_path(), "eps_mmse": gaussian_eps_mmse(torch.ones(2, dtype=ctx.dtype)),
                              "dim": 2, "second_moment": 3.0, "panels": 16})
def kinetic_energy_from_separation(path: GaussianPath, eps_mmse: Callable[[torch.Tensor], torch.Tensor], dim: int,
                                   second_moment: float, *, panels: int = 256) -> float:
    """The kinetic energy from the separation form (module docstring) by composite Gauss-Legendre quadrature
    (``panels`` panels of 4 nodes): :math:`\\int d\\dot\\sigma^2 + m\\dot\\alpha^2 - g(\\tau)
    ((\\dot\\alpha\\sigma - \\alpha\\dot\\sigma)/\\alpha)^2 dt` with ``eps_mmse`` = :math:`g`, ``dim`` = :math:`d`,
    ``second_moment`` = :math:`m = E\\|x_1\\|^2`. Panels aligned with the knots make it exact for
    :func:`piecewise_linear_path` up to the quadrature of :math:`g`."""
    t, w = _panel_nodes(panels)
    a, s, da, ds = path.rates(t)
    if bool((a <= 0).any()) or bool((s <= 0).any()):
        raise ValueError("path must have alpha_t > 0 and sigma_t > 0 for 0 < t < 1")
    return float((w * _separation_integrand(a, s, da, ds, eps_mmse, dim, second_moment)).sum())


class KineticOptimalPath(NamedTuple):
    """The result of :func:`kinetic_optimal_path`: the optimised ``path``, its separation-form ``energy``, that of
    the Cond-OT path it started from (``cond_ot_energy``), the knots ``alphas``, ``sigmas`` ``(k,)``, the L-BFGS
    ``iterations`` and the final gradient norm ``grad_norm``."""

    path: GaussianPath
    energy: float
    cond_ot_energy: float
    alphas: torch.Tensor
    sigmas: torch.Tensor
    iterations: int
    grad_norm: float


@accepts(eps_mmse=Function(), dim=Int(ge=1), second_moment=Real(gt=0), n_knots=Int(ge=3), max_iter=Int(ge=1),
         nodes_per_segment=Int(ge=1),
         example=lambda ctx: {"eps_mmse": gaussian_eps_mmse(torch.tensor([0.2, 1.0], dtype=ctx.dtype)), "dim": 2,
                              "second_moment": 1.2, "n_knots": 5, "max_iter": 5}, output="any")
def kinetic_optimal_path(eps_mmse: Callable[[torch.Tensor], torch.Tensor], dim: int, second_moment: float, *,
                         n_knots: int = 17, max_iter: int = 200, nodes_per_segment: int = 8) -> KineticOptimalPath:
    """Minimise the separation-form kinetic energy over schedules linear between ``n_knots`` knots at uniform
    times, starting from Cond-OT (so the result is never above Cond-OT's energy in this objective).

    Interior knots are free in polar form, :math:`\\alpha = r\\sin\\theta, \\sigma = r\\cos\\theta` with
    :math:`r > 0, 0 < \\theta < \\pi/2` (so :math:`\\alpha, \\sigma > 0` inside), solved by L-BFGS with a strong
    Wolfe line search; each segment is integrated by ``4 * ceil(nodes_per_segment / 4)`` Gauss-Legendre nodes.
    ``eps_mmse``: :math:`g(\\tau)` (:func:`gaussian_eps_mmse`, :func:`tabulate_eps_mmse`); ``dim``: :math:`d`;
    ``second_moment``: :math:`m`.
    """
    segments = n_knots - 1
    per = max(1, math.ceil(nodes_per_segment / 4))
    t_nodes, w_nodes = _panel_nodes(segments * per)
    seg = (t_nodes * segments).floor().clamp(0, segments - 1).long()
    frac = t_nodes * segments - seg.double()
    knots_t = torch.linspace(0, 1, n_knots, dtype=torch.float64)[1:-1]
    theta0 = torch.atan2(knots_t, 1 - knots_t)
    rho = (knots_t.square() + (1 - knots_t).square()).sqrt().log().clone().requires_grad_(True)
    phi = torch.logit(theta0 / (0.5 * math.pi)).clone().requires_grad_(True)

    def knots():
        theta = 0.5 * math.pi * torch.sigmoid(phi)
        r = rho.exp()
        one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
        return torch.cat([zero, r * torch.sin(theta), one]), torch.cat([one, r * torch.cos(theta), zero])

    def energy():
        A, S = knots()
        dA, dS = (A[1:] - A[:-1]) * segments, (S[1:] - S[:-1]) * segments
        a = A[seg] + frac * (A[seg + 1] - A[seg])
        s = S[seg] + frac * (S[seg + 1] - S[seg])
        return (w_nodes * _separation_integrand(a, s, dA[seg], dS[seg], eps_mmse, dim, second_moment)).sum()

    with torch.no_grad():
        start = float(energy())
    opt = torch.optim.LBFGS([rho, phi], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-14, history_size=20)

    def closure():
        opt.zero_grad()
        loss = energy()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
        final = energy()
        final.backward()
    grad_norm = float(torch.cat([rho.grad, phi.grad]).norm())
    iterations = int(opt.state[opt.param_groups[0]["params"][0]].get("n_iter", 0))
    with torch.no_grad():
        A, S = knots()
        value = float(energy())
    if not math.isfinite(value):
        raise ValueError("eps_mmse must give a finite energy (got a non-finite objective)")
    if value > start:  # the line search never accepts an increase; guard against a non-finite detour
        A = torch.linspace(0, 1, n_knots, dtype=torch.float64)
        S, value = 1 - A, start
    return KineticOptimalPath(piecewise_linear_path(A, S), value, start, A, S, iterations, grad_norm)


@accepts(path=Instance(GaussianPath, what="GaussianPath"), n_steps=Int(ge=1), output="any",
         example=lambda ctx: {"path": cond_ot_path(), "n_steps": 4})
def path_to_ve_sigmas(path: GaussianPath, n_steps: int, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The VE levels :math:`\\tau_{t_i} = \\sigma_{t_i}/\\alpha_{t_i}` at the uniform times
    :math:`t_i = i/n`, ``i = 0..n``: shape ``(n_steps + 1,)``, decreasing from :math:`\\infty` (where
    :math:`\\alpha_0 = 0`) to 0. A paperzoo sampler started there takes unit noise as ``x``."""
    t = torch.linspace(0, 1, n_steps + 1, dtype=torch.float64)
    a, s, _, _ = path.rates(t)
    inner = s[1:-1] / a[1:-1]
    if bool((a[1:-1] <= 0).any()) or bool((inner[1:] >= inner[:-1]).any()):
        raise ValueError("path must have a decreasing level sigma_t/alpha_t (alpha_t > 0 inside (0, 1))")
    levels = torch.cat([torch.full((1,), math.inf, dtype=torch.float64), inner, torch.zeros(1, dtype=torch.float64)])
    return levels.to(dtype)
