"""Momentum diffusion samplers: Polyak heavy ball (HB) and generalized heavy ball (GHVB) on diffusion ODE solvers.

References: Diffusion Sampling with Momentum for Mitigating Divergence Artifacts, 2023 (Wizadwongsa,
Chinchuthakun, Khungurn, Raj, Suwajanakorn; ICLR 2024).

Explicit multistep solvers (PLMS / Adams-Bashforth, DPM-Solver++(2M)) have small stability regions: where the
guided ODE is stiff (few steps, a large classifier-free guidance weight) their iterates overshoot and blow up
("divergence artifacts"). The paper damps the solver's update direction with heavy-ball momentum, which enlarges
the stability region at the price of accuracy order, and builds GHVB, a momentum method that keeps a higher order.

All steps work on the VE probability-flow ODE :math:`dx/d\\sigma = \\varepsilon(x, \\sigma) = (x - D(x,
\\sigma))/\\sigma` (the paper's "DDIM form": :math:`\\bar x = x/\\sqrt{\\bar\\alpha}` is the VE state and
:math:`\\bar\\sigma = \\sqrt{1 - \\bar\\alpha}/\\sqrt{\\bar\\alpha}` the VE level). With :math:`\\delta_n =
\\sigma_{n+1} - \\sigma_n` and :math:`\\varepsilon_n = \\varepsilon(x_n, \\sigma_n)`:

- PLMS of order :math:`q` (:func:`plms_step`): :math:`x_{n+1} = x_n + \\delta_n \\sum_{j<q} c_j \\varepsilon_{n-j}`
  with the fixed (uniform-step) Adams-Bashforth coefficients :math:`c` (3/2, -1/2 at :math:`q = 2`), lower orders
  while fewer than :math:`q` evaluations exist; :math:`q = 1` is DDIM (Euler).
- PLMS with HB (:func:`plms_hb_step`): the Adams-Bashforth combination enters a velocity,

  .. math::
      v_{n+1} = (1 - \\beta)\\,v_n + \\beta \\sum_{j<q} c_j \\varepsilon_{n-j}, \\qquad x_{n+1} = x_n + \\delta_n v_{n+1},

  with :math:`v_0 = \\varepsilon_0`; :math:`\\beta = 1` is PLMS, :math:`\\beta < 1` is first order.
- GHVB of order :math:`q` (:func:`ghvb_step`): the velocity averages the raw derivatives and the multistep
  combination acts on velocities,

  .. math::
      v_{n+1} = (1 - \\beta)\\,v_n + \\beta\\,\\varepsilon_n, \\qquad x_{n+1} = x_n + \\delta_n \\sum_{j<q}
      c_j(\\beta)\\, v_{n+1-j},

  where :math:`c(\\beta)` are the coefficients of :math:`\\bigl(1 + \\tfrac{1-\\beta}{\\beta}\\nabla\\bigr)
  \\sum_{k<q}\\gamma_k\\nabla^k` truncated at degree :math:`q - 1` in the backward difference :math:`\\nabla`
  (:math:`\\gamma_k` the Adams-Bashforth constants 1, 1/2, 5/12, 3/8, 251/720). Because
  :math:`(1 + \\tfrac{1-\\beta}{\\beta}\\nabla)v_{n+1} = \\varepsilon_n` exactly, GHVB is Adams-Bashforth of order
  :math:`q` minus a term of size :math:`\\tfrac{1-\\beta}{\\beta}\\gamma_{q-1}\\nabla^q v`: :math:`\\beta = 1` is
  PLMS of order :math:`q`, :math:`\\beta \\to 0` tends to PLMS of order :math:`q - 1`, in between the stability
  region grows as :math:`\\beta` falls. The official code names this "order :math:`q - 1 + \\beta`" (3.8 is
  :math:`q = 4, \\beta = 0.8`).
- DPM-Solver++(2M) with HB (:func:`dpmpp_2m_hb_step`): with :math:`\\lambda = -\\log\\sigma`,
  :math:`h = \\lambda_{n+1} - \\lambda_n`, :math:`\\hat D_n` the 2M data-prediction combination of
  :func:`~paperzoo.diffusion.samplers.dpmpp_2m_step`,

  .. math::
      u_{n} = (1 - \\beta)\\,u_{n-1} + \\beta \\hat D_n, \\qquad x_{n+1} = \\frac{\\sigma_{n+1}}{\\sigma_n} x_n
      - (e^{-h} - 1)\\,u_n,

  the velocity starting at the first second-order step; the first step and the step to :math:`\\sigma = 0` are
  the base solver's first-order steps (as diffusers runs them for the official code at < 15 steps).

Paper/official defaults: :math:`\\beta = 0.8`, PLMS order 4 (the DiT and Stable Diffusion runs use
:math:`\\beta \\in \\{0.9, 0.8\\}`). Every sampler costs one model evaluation per step.

Example:
    >>> import torch
    >>> from paperzoo.diffusion import mixture_on_circle, get_sigmas_karras
    >>> gm = mixture_on_circle(4, 2, radius=3.0, std=0.2)
    >>> sigmas = get_sigmas_karras(20, 0.01, 20.0)
    >>> x = sample_hb(gm.denoise, sigmas[0] * torch.randn(256, 2, dtype=torch.float64), sigmas, beta=0.8)
    >>> bool((x.norm(dim=1) - 3.0).abs().median() < 0.3)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import torch

from paperzoo.core.accepts import Int, Real, accepts
from paperzoo.diffusion.samplers import (_COMMON, _dpmpp_2m_combination, _dpmpp_update, _example, _to_derivative,
                                        run_sampler)

__all__ = ["adams_bashforth_coefficients", "ghvb_coefficients", "plms_step", "plms_hb_step", "ghvb_step",
           "dpmpp_2m_hb_step", "sample_plms", "sample_plms_hb", "sample_ghvb", "sample_hb"]

#: the highest multistep order implemented (the official code's)
MAX_ORDER = 5


def _gammas(q: int) -> list[Fraction]:
    """Adams-Bashforth constants :math:`\\gamma_k`, :math:`k < q`: :math:`\\sum_{i \\le k} \\gamma_{k-i}/(i+1) = 1`
    (the generating function of :math:`-\\nabla/((1-\\nabla)\\log(1-\\nabla))`)."""
    g: list[Fraction] = []
    for k in range(q):
        g.append(1 - sum((g[k - i] / (i + 1) for i in range(1, k + 1)), Fraction(0)))
    return g


def _coefficients(q: int, beta: float) -> list[float]:
    """Weights on the newest ``q`` values (newest first) of the truncated
    :math:`(1 + a\\nabla)\\sum_{k<q}\\gamma_k\\nabla^k`, :math:`a = (1 - \\beta)/\\beta`."""
    g = _gammas(q)
    a = (1.0 - beta) / beta
    poly = [float(g[k]) + (a * float(g[k - 1]) if k > 0 else 0.0) for k in range(q)]  # in powers of nabla
    out = [0.0] * q
    binom = [[1]]
    for k in range(1, q):
        binom.append([1] + [binom[-1][i - 1] + binom[-1][i] for i in range(1, k)] + [1])
    for k, p in enumerate(poly):  # nabla^k = sum_j (-1)^j C(k, j) E^{-j}
        for j in range(k + 1):
            out[j] += p * (-1) ** j * binom[k][j]
    return out


@accepts(order=Int(ge=1, le=MAX_ORDER), output="any")  # a list of floats
def adams_bashforth_coefficients(order: int) -> list[float]:
    """The uniform-step Adams-Bashforth weights of ``order`` on :math:`\\varepsilon_n, \\varepsilon_{n-1}, \\dots`
    (newest first): ``[1]``, ``[3/2, -1/2]``, ``[23/12, -16/12, 5/12]``, ..."""
    return _coefficients(order, 1.0)


@accepts(order=Int(ge=1, le=MAX_ORDER), beta=Real(gt=0, le=1), output="any")  # a list of floats
def ghvb_coefficients(order: int, beta: float) -> list[float]:
    """GHVB's weights :math:`c(\\beta)` on :math:`v_{n+1}, v_n, \\dots` (newest first); they sum to 1, equal
    :func:`adams_bashforth_coefficients` at ``beta = 1``, and at ``order = 2`` are
    :math:`((2 + \\beta)/(2\\beta), -(2 - \\beta)/(2\\beta))`."""
    return _coefficients(order, float(beta))


class _Table:
    """Coefficients for every warm-up order ``1..q`` at one ``beta``, computed once per step function."""

    def __init__(self, q: int, beta: float):
        self.rows = [_coefficients(k, beta) for k in range(1, q + 1)]

    def combine(self, history: list) -> torch.Tensor:
        row = self.rows[len(history) - 1]
        out = row[0] * history[-1]
        for j in range(1, len(history)):
            out = out + row[j] * history[-1 - j]
        return out


def _push(history: list, value: torch.Tensor, q: int) -> list:
    history = history + [value]
    return history[-q:]


# -- steps ---------------------------------------------------------------------------------------------------------
@accepts(order=Int(ge=1, le=MAX_ORDER), beta=Real(gt=0, le=1), output="any")  # returns a step function
def plms_hb_step(order: int = 4, beta: float = 0.8) -> Callable:
    """PLMS of ``order`` with heavy-ball momentum ``beta`` (module docstring); ``beta = 1`` is :func:`plms_step`."""
    table, q, beta = _Table(order, 1.0), int(order), float(beta)
    key = "plms_hb"

    def step(x, sigma, sigma_next, denoised, ctx):
        eps = _to_derivative(x, sigma, denoised)
        history, v = ctx.state.get(key, ([], None))
        history = _push(history, eps, q)
        prime = table.combine(history)
        v = prime if v is None else (1.0 - beta) * v + beta * prime
        ctx.state[key] = (history, v)
        return x + (sigma_next - sigma) * v

    return step


@accepts(order=Int(ge=1, le=MAX_ORDER), output="any")  # returns a step function
def plms_step(order: int = 4) -> Callable:
    """Pseudo linear multistep (PLMS) of ``order`` in the DDIM form: fixed Adams-Bashforth weights on the last
    ``order`` derivatives, lower orders while warming up; ``order = 1`` is the Euler/DDIM step."""
    return plms_hb_step(order, 1.0)


@accepts(order=Int(ge=1, le=MAX_ORDER), beta=Real(gt=0, le=1), output="any")  # returns a step function
def ghvb_step(order: int = 4, beta: float = 0.8) -> Callable:
    """GHVB of ``order`` with ``beta`` (module docstring): velocities of the raw derivatives, combined with
    :func:`ghvb_coefficients`; warm-up uses the lower-order weights at the same ``beta``."""
    table, q, beta = _Table(order, float(beta)), int(order), float(beta)
    key = "ghvb"

    def step(x, sigma, sigma_next, denoised, ctx):
        eps = _to_derivative(x, sigma, denoised)
        history, v = ctx.state.get(key, ([], None))
        v = eps if v is None else (1.0 - beta) * v + beta * eps
        history = _push(history, v, q)
        ctx.state[key] = (history, v)
        return x + (sigma_next - sigma) * table.combine(history)

    return step


@accepts(beta=Real(gt=0, le=1), output="any")  # returns a step function
def dpmpp_2m_hb_step(beta: float = 0.8) -> Callable:
    """DPM-Solver++(2M) with heavy-ball momentum ``beta`` on its data-prediction combination (module docstring);
    ``beta = 1`` is :func:`~paperzoo.diffusion.samplers.dpmpp_2m_step` exactly."""
    beta = float(beta)
    key = "dpmpp_2m_hb"

    def step(x, sigma, sigma_next, denoised, ctx):
        s, s_next = float(sigma), float(sigma_next)
        previous, u = ctx.state.get(key, (None, None))
        ctx.state[key] = ((denoised, s), u)
        if s_next == 0:
            return denoised
        if previous is None:
            d_hat = denoised
        else:
            d_hat = _dpmpp_2m_combination(denoised, s, s_next, *previous)
            u = d_hat if u is None else (1.0 - beta) * u + beta * d_hat
            d_hat = u
            ctx.state[key] = ((denoised, s), u)
        return _dpmpp_update(x, s, s_next, d_hat)

    return step


# -- samplers ------------------------------------------------------------------------------------------------------
@accepts(**_COMMON, order=Int(ge=1, le=MAX_ORDER), example=_example)
def sample_plms(model, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator | None = None,
                callback=None, progress: bool = False, order: int = 4) -> torch.Tensor:
    """PLMS of ``order`` (:func:`plms_step`), the base solver of :func:`sample_plms_hb` and :func:`sample_ghvb`.
    One evaluation per step."""
    return run_sampler(model, x, sigmas, plms_step(order), generator=generator, callback=callback,
                       progress=progress)


@accepts(**_COMMON, order=Int(ge=1, le=MAX_ORDER), beta=Real(gt=0, le=1), example=_example)
def sample_plms_hb(model, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator | None = None,
                   callback=None, progress: bool = False, order: int = 4, beta: float = 0.8) -> torch.Tensor:
    """PLMS of ``order`` with heavy-ball momentum ``beta`` (:func:`plms_hb_step`); the paper's "PLMS4 w/ HB 0.8"
    at the defaults. One evaluation per step."""
    return run_sampler(model, x, sigmas, plms_hb_step(order, beta), generator=generator, callback=callback,
                       progress=progress)


@accepts(**_COMMON, order=Int(ge=1, le=MAX_ORDER), beta=Real(gt=0, le=1), example=_example)
def sample_ghvb(model, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator | None = None,
                callback=None, progress: bool = False, order: int = 4, beta: float = 0.8) -> torch.Tensor:
    """Generalized heavy ball of ``order`` and ``beta`` (:func:`ghvb_step`); "GHVB 3.8" at the defaults. One
    evaluation per step."""
    return run_sampler(model, x, sigmas, ghvb_step(order, beta), generator=generator, callback=callback,
                       progress=progress)


@accepts(**_COMMON, beta=Real(gt=0, le=1), example=_example)
def sample_hb(model, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator | None = None,
              callback=None, progress: bool = False, beta: float = 0.8) -> torch.Tensor:
    """DPM-Solver++(2M) with heavy-ball momentum ``beta`` (:func:`dpmpp_2m_hb_step`), the paper's
    "DPM-Solver++ w/ HB"; ``beta = 1`` is :func:`~paperzoo.diffusion.samplers.sample_dpmpp_2m`. One evaluation
    per step."""
    return run_sampler(model, x, sigmas, dpmpp_2m_hb_step(beta), generator=generator, callback=callback,
                       progress=progress)
