"""Improved consistency training (iCT): a consistency model trained from data alone, with its student as teacher.

References: Improved Techniques for Training Consistency Models, 2024 (Song & Dhariwal, ICLR 2024); built on
Consistency Models, 2023 (Song, Dhariwal, Chen & Sutskever, ICML 2023).

A consistency model maps any point of a probability-flow trajectory to its origin. It is parametrized so that the
boundary condition :math:`f_\\theta(x, \\sigma_{min}) = x` holds by construction (CM paper, Eq. 5 and
Appendix C; the official code's ``get_scalings_for_boundary_condition``):

.. math::
    f_\\theta(x, \\sigma) = c_{skip}(\\sigma)\\, x + c_{out}(\\sigma)\\, F_\\theta(c_{in}(\\sigma)\\, x, \\sigma),
    \\quad c_{skip} = \\frac{\\sigma_d^2}{(\\sigma - \\sigma_{min})^2 + \\sigma_d^2}, \\quad
    c_{out} = \\frac{(\\sigma - \\sigma_{min})\\,\\sigma_d}{\\sqrt{\\sigma^2 + \\sigma_d^2}}, \\quad
    c_{in} = \\frac{1}{\\sqrt{\\sigma^2 + \\sigma_d^2}},

(:class:`ConsistencyModel`, ``sigma_min`` :math:`=\\sigma_{min}`, ``sigma_data`` :math:`=\\sigma_d`). Consistency
training discretizes :math:`[\\sigma_{min}, \\sigma_{max}]` into the Karras levels
:math:`\\sigma_1 < \\dots < \\sigma_N` (:func:`karras_levels`, :math:`\\rho = 7`) and, for one noise
:math:`z` shared by both points, minimizes (iCT, Eq. 8)

.. math::
    \\mathcal L = E\\bigl[\\lambda(\\sigma_i)\\, d\\bigl(f_\\theta(x_0 + \\sigma_{i+1} z, \\sigma_{i+1}),
    f_{\\theta^-}(x_0 + \\sigma_i z, \\sigma_i)\\bigr)\\bigr]

(:func:`consistency_training_loss`). iCT's choices, each a switch that restores the original CT of the CM paper:

- teacher :math:`\\theta^- = \\operatorname{stopgrad}(\\theta)` (``teacher=None``; iCT Section 3.2) instead of an
  EMA of the student (pass that EMA network as ``teacher``; :func:`ct_ema_decay` is CT's adaptive decay);
- the Pseudo-Huber metric :math:`d(x, y) = \\sqrt{\\|x - y\\|^2 + c^2} - c`, :math:`c = 0.00054\\sqrt{D}` for
  data of dimension :math:`D` (``metric="pseudo_huber"``; :func:`pseudo_huber`; iCT Section 3.3) instead of the
  squared L2 (``"l2"``, the mean over coordinates, as the official CM code's ``mean_flat``);
- the weighting :math:`\\lambda(\\sigma_i) = 1/(\\sigma_{i+1} - \\sigma_i)` (``weighting="ict"``; iCT Section 3.4)
  instead of 1 (``"uniform"``);
- levels :math:`i` drawn from the discretized lognormal :math:`p(\\sigma_i) \\propto
  \\operatorname{erf}\\frac{\\log\\sigma_{i+1} - P_{mean}}{\\sqrt2 P_{std}} -
  \\operatorname{erf}\\frac{\\log\\sigma_i - P_{mean}}{\\sqrt2 P_{std}}`, :math:`P_{mean} = -1.1`,
  :math:`P_{std} = 2` (``levels="lognormal"``; :func:`lognormal_level_probs`; iCT Section 3.5, Eq. 10) instead of
  uniform over :math:`i = 1, \\dots, N - 1` (``"uniform"``);
- the exponential curriculum :math:`N(k) = \\min(s_0 2^{\\lfloor k/K' \\rfloor}, s_1) + 1`,
  :math:`K' = \\lfloor K/(\\log_2\\lfloor s_1/s_0 \\rfloor + 1)\\rfloor`, :math:`s_0 = 10`, :math:`s_1 = 1280`
  (:func:`ict_discretization_steps`; iCT Eq. 9) instead of CT's square-root one
  :math:`N(k) = \\lceil\\sqrt{k/K\\,((s_1 + 1)^2 - s_0^2) + s_0^2} - 1\\rceil + 1`, :math:`s_0 = 2`,
  :math:`s_1 = 150` (:func:`ct_discretization_steps`, CM paper Appendix C).

:func:`train_consistency` runs Adam on this loss with either recipe. Sampling (CM paper, Algorithm 1):
:math:`x \\leftarrow f(\\sigma_{max} z, \\sigma_{max})`, then for each :math:`\\tau` of the schedule
:math:`x \\leftarrow f(x + \\sqrt{\\tau^2 - \\sigma_{min}^2}\\, z', \\tau)`: :func:`sample_consistency` with
``sigmas = [sigma_max, tau_1, ..., 0]`` (``[sigma_max, 0]`` is one-step generation).

Shapes: data and states ``(N, D)``; levels ``(N,)`` or a number.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.consistency import ConsistencyModel, sample_consistency
    >>> from paperzoo.diffusion.training import MLPDenoiser
    >>> model = ConsistencyModel(MLPDenoiser(2, 16, 1, prediction="x0", space="ve")).double()
    >>> x = torch.randn(4, 2, dtype=torch.float64)
    >>> bool(torch.equal(model(x, 0.002), x))          # the boundary condition, exactly
    True
    >>> sample_consistency(model, 80.0 * x, torch.tensor([80.0, 0.821, 0.0], dtype=torch.float64)).shape
    torch.Size([4, 2])
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from paperzoo.core.accepts import Choice, Flag, Function, Generator, Int, Module, OneOf, Real, Tensor, accepts
from paperzoo.diffusion.samplers import run_sampler

__all__ = ["ConsistencyModel", "consistency_scalings", "pseudo_huber", "pseudo_huber_c", "karras_levels",
           "lognormal_level_probs", "sample_level_indices", "ict_discretization_steps", "ct_discretization_steps",
           "ct_ema_decay", "consistency_training_loss", "train_consistency", "consistency_step",
           "sample_consistency", "SIGMA_MIN", "SIGMA_MAX", "SIGMA_DATA", "RHO", "P_MEAN", "P_STD"]

#: the paper's constants (CM and iCT on CIFAR-10 / ImageNet)
SIGMA_MIN, SIGMA_MAX, SIGMA_DATA, RHO = 0.002, 80.0, 0.5, 7.0
P_MEAN, P_STD = -1.1, 2.0
HUBER_SCALE = 0.00054

_LEVEL = OneOf(Real(ge=0), Tensor(ndims=tuple(range(0, 8)), nonnegative=True, allow_empty=True))


# -- parametrization -------------------------------------------------------------------------------------------------
def _scalings(sigma, sigma_min: float, sigma_data: float):
    shifted = sigma - sigma_min
    root = (sigma * sigma + sigma_data**2) ** 0.5
    c_skip = sigma_data**2 / (shifted * shifted + sigma_data**2)
    return c_skip, shifted * sigma_data / root, 1 / root


@accepts(sigma=_LEVEL, sigma_min=Real(ge=0), sigma_data=Real(gt=0))
def consistency_scalings(sigma, sigma_min: float = SIGMA_MIN, sigma_data: float = SIGMA_DATA):
    """:math:`(c_{skip}, c_{out}, c_{in})` at level ``sigma`` (module docstring): at :math:`\\sigma = \\sigma_{min}`
    exactly ``(1, 0, 1/sqrt(sigma_min^2 + sigma_data^2))``."""
    return _scalings(sigma, float(sigma_min), float(sigma_data))


def _expand(sigma, x: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.dim() == 0:
        return s.expand(x.shape[0])
    if s.shape == (x.shape[0],):
        return s
    raise ValueError(f"sigma must be a number or have shape ({x.shape[0]},) (one level per sample), got shape "
                     f"{tuple(s.shape)}")


class ConsistencyModel(nn.Module):
    """The consistency function :math:`f_\\theta(x, \\sigma) = c_{skip} x + c_{out} F_\\theta(c_{in} x, \\sigma)`
    around a network ``network(x_in, sigma) -> (N, D)`` (e.g. an ``MLPDenoiser``; only its raw output is used).

    Args:
        network: :math:`F_\\theta`, called with the scaled state ``(N, D)`` and the levels ``(N,)``.
        sigma_min: :math:`\\sigma_{min}`, where :math:`f = x` exactly (default 0.002).
        sigma_data: :math:`\\sigma_d` (default 0.5).

    ``model(x, sigma)``: ``x`` ``(N, D)``, ``sigma`` a number or ``(N,)`` with values ``>= sigma_min``; returns
    ``(N, D)``. It has the calling convention of a denoiser, so the samplers take it.
    """

    @accepts(network=Module(), sigma_min=Real(gt=0), sigma_data=Real(gt=0),
             example=lambda ctx: {"network": _example_network(ctx)})
    def __init__(self, network: nn.Module, *, sigma_min: float = SIGMA_MIN, sigma_data: float = SIGMA_DATA):
        super().__init__()
        self.network, self.sigma_min, self.sigma_data = network, float(sigma_min), float(sigma_data)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        s = _expand(sigma, x)
        if bool((s < self.sigma_min).any()):
            raise ValueError(f"sigma must be >= sigma_min ({self.sigma_min}), got a minimum of {float(s.min())!r}")
        return self._f(x, s)

    def _f(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        c_skip, c_out, c_in = _scalings(s.view(-1, *([1] * (x.dim() - 1))), self.sigma_min, self.sigma_data)
        return c_skip * x + c_out * self.network(c_in * x, s)


def _example_network(ctx):
    from paperzoo.diffusion.training import MLPDenoiser
    return MLPDenoiser(2, 8, 1, prediction="x0", space="ve").to(ctx.dtype)


class _ElementwiseNetwork(nn.Module):
    """A shape-agnostic stand-in network (the sampler's example): :math:`\\tanh(a x_{in})`."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.7))

    def forward(self, x_in, sigma):
        return torch.tanh(self.a * x_in)


# -- metric ------------------------------------------------------------------------------------------------------------
@accepts(dim=Int(ge=1))
def pseudo_huber_c(dim: int) -> float:
    """iCT's Pseudo-Huber constant :math:`c = 0.00054\\sqrt{D}` for data of dimension ``dim`` :math:`= D`."""
    return HUBER_SCALE * math.sqrt(dim)


def _pseudo_huber(x, y, c):
    r2 = (x - y).flatten(1).square().sum(-1)
    # sqrt(r^2 + c^2) - c written without the cancellation at r << c
    return r2 / ((r2 + c * c).sqrt() + c)


@accepts(x=Tensor("N", "d"), y=Tensor("N", "d"), c=Real(gt=0, optional=True),
         example=lambda ctx: {"x": torch.randn(4, 3, generator=ctx.generator, dtype=ctx.dtype),
                              "y": torch.randn(4, 3, generator=ctx.generator, dtype=ctx.dtype)})
def pseudo_huber(x: torch.Tensor, y: torch.Tensor, c: float | None = None) -> torch.Tensor:
    """Per-sample :math:`\\sqrt{\\|x_n - y_n\\|^2 + c^2} - c`, shape ``(N,)`` (``x``, ``y``: ``(N, D)``); ``c``
    defaults to :func:`pseudo_huber_c` of ``D``. About :math:`\\|x-y\\|^2/(2c)` for :math:`\\|x-y\\| \\ll c` and
    :math:`\\|x - y\\| - c` for :math:`\\|x-y\\| \\gg c`."""
    return _pseudo_huber(x, y, pseudo_huber_c(x.shape[1]) if c is None else float(c))


# -- levels and curricula ------------------------------------------------------------------------------------------------
@accepts(n=Int(ge=2), sigma_min=Real(gt=0), sigma_max=Real(gt=0), rho=Real(gt=0))
def karras_levels(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO, *,
                  dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The training levels :math:`\\sigma_1 < \\dots < \\sigma_N`,
    :math:`\\sigma_i = (\\sigma_{min}^{1/\\rho} + \\frac{i-1}{N-1}(\\sigma_{max}^{1/\\rho} - \\sigma_{min}^{1/\\rho}))^\\rho`,
    increasing, shape ``(n,)``, with the end points exact."""
    if sigma_min >= sigma_max:
        raise ValueError(f"sigma_min must be < sigma_max ({sigma_max}), got {sigma_min}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    s = (lo + ramp * (hi - lo)) ** rho
    s[0], s[-1] = sigma_min, sigma_max
    return s.to(dtype)


def _lognormal_probs(sigmas, p_mean, p_std):
    cdf = torch.erf((sigmas.double().log() - p_mean) / (math.sqrt(2) * p_std))
    mass = cdf[1:] - cdf[:-1]
    return (mass / mass.sum()).to(sigmas.dtype)


@accepts(sigmas=Tensor("n", positive_mass=True), p_mean=Real(), p_std=Real(gt=0),
         example=lambda ctx: {"sigmas": karras_levels(6, dtype=ctx.dtype)})
def lognormal_level_probs(sigmas: torch.Tensor, p_mean: float = P_MEAN, p_std: float = P_STD) -> torch.Tensor:
    """iCT's discretized lognormal (Eq. 10): the probability of each pair index :math:`i` (the pair
    :math:`(\\sigma_i, \\sigma_{i+1})`), the lognormal mass of :math:`[\\sigma_i, \\sigma_{i+1}]` normalized;
    ``sigmas`` increasing ``(N,)``, returns ``(N - 1,)``."""
    if sigmas.shape[0] < 2 or bool((sigmas[1:] <= sigmas[:-1]).any()) or float(sigmas[0]) <= 0:
        raise ValueError("sigmas must be > 0 and strictly increasing with at least 2 levels")
    return _lognormal_probs(sigmas, float(p_mean), float(p_std))


def _sample_indices(n, n_levels, probs, generator):
    if probs is None:
        return torch.randint(0, n_levels - 1, (n,), generator=generator)
    return torch.multinomial(probs.double(), n, replacement=True, generator=generator)


@accepts(n=Int(ge=1), sigmas=Tensor("m", positive_mass=True), levels=Choice("lognormal", "uniform"),
         p_mean=Real(), p_std=Real(gt=0), generator=Generator(),
         example=lambda ctx: {"n": 5, "sigmas": karras_levels(6, dtype=ctx.dtype)}, output="any")
def sample_level_indices(n: int, sigmas: torch.Tensor, levels: str = "lognormal", *, p_mean: float = P_MEAN,
                         p_std: float = P_STD, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` pair indices :math:`i \\in \\{0, \\dots, N-2\\}` (0-based; pair ``(sigmas[i], sigmas[i+1])``), drawn
    from :func:`lognormal_level_probs` or uniformly (original CT); ``(n,)`` long."""
    probs = lognormal_level_probs(sigmas, p_mean, p_std) if levels == "lognormal" else None
    return _sample_indices(n, sigmas.shape[0], probs, generator)


@accepts(k=Int(ge=0), total_steps=Int(ge=1), s0=Int(ge=1), s1=Int(ge=1))
def ict_discretization_steps(k: int, total_steps: int, s0: int = 10, s1: int = 1280) -> int:
    """iCT's exponential curriculum (Eq. 9): :math:`N(k) = \\min(s_0 2^{\\lfloor k/K' \\rfloor}, s_1) + 1`,
    :math:`K' = \\lfloor K / (\\log_2\\lfloor s_1/s_0\\rfloor + 1) \\rfloor` (at least 1), ``k`` the training step,
    ``total_steps`` :math:`= K`. Defaults 10, 1280: 11 levels doubling to 1281."""
    if s1 < s0:
        raise ValueError(f"s1 must be >= s0 ({s0}), got {s1}")
    k_prime = max(1, total_steps // (int(math.log2(s1 // s0)) + 1))
    return min(s0 * 2 ** (k // k_prime), s1) + 1


@accepts(k=Int(ge=0), total_steps=Int(ge=1), s0=Int(ge=1), s1=Int(ge=1))
def ct_discretization_steps(k: int, total_steps: int, s0: int = 2, s1: int = 150) -> int:
    """Original CT's curriculum (CM paper, Appendix C):
    :math:`N(k) = \\max(\\lceil\\sqrt{k/K\\,((s_1+1)^2 - s_0^2) + s_0^2} - 1\\rceil, 1) + 1`; defaults 2, 150."""
    if s1 < s0:
        raise ValueError(f"s1 must be >= s0 ({s0}), got {s1}")
    inner = math.sqrt(k / total_steps * ((s1 + 1) ** 2 - s0**2) + s0**2)
    return max(math.ceil(inner - 1), 1) + 1


@accepts(n_levels=Int(ge=2), s0=Int(ge=1), mu0=Real(gt=0, lt=1))
def ct_ema_decay(n_levels: int, s0: int = 2, mu0: float = 0.9) -> float:
    """Original CT's teacher EMA decay :math:`\\mu(k) = \\exp(s_0 \\log\\mu_0 / (N(k) - 1))` for the current
    ``n_levels`` :math:`= N(k)` (the official code's ``adaptive`` target EMA; defaults 2, 0.9)."""
    return math.exp(s0 * math.log(mu0) / (n_levels - 1))


# -- the loss --------------------------------------------------------------------------------------------------------------
def _ct_loss(model, teacher, x0, sigmas, idx, noise, metric, weighting, c):
    lo, hi = sigmas[idx], sigmas[idx + 1]
    student = model._f(x0 + hi[:, None] * noise, hi)
    with torch.no_grad():
        target = (model if teacher is None else teacher)._f(x0 + lo[:, None] * noise, lo)
    if callable(metric):  # a per-sample metric(student, target, c) -> (N,) of a variant (e.g. the Cauchy loss)
        per = metric(student, target, c)
    elif metric == "pseudo_huber":
        per = _pseudo_huber(student, target, c)
    else:
        per = (student - target).square().flatten(1).mean(-1)
    if weighting == "ict":
        per = per / (hi - lo)
    return per.mean()


@accepts(model=Module(), x0=Tensor("N", "d", degenerate=("coincident",)), sigmas=Tensor("n", positive_mass=True),
         metric=Choice("pseudo_huber", "l2"), levels=Choice("lognormal", "uniform"),
         weighting=Choice("ict", "uniform"), c=Real(gt=0, optional=True), p_mean=Real(), p_std=Real(gt=0),
         noise=Tensor("N", "d", optional=True), generator=Generator(),
         example=lambda ctx: {"model": ConsistencyModel(_example_network(ctx)),
                              "x0": torch.randn(6, 2, generator=ctx.generator, dtype=ctx.dtype),
                              "sigmas": karras_levels(11, dtype=ctx.dtype)})
def consistency_training_loss(model: ConsistencyModel, x0: torch.Tensor, sigmas: torch.Tensor, *,
                              teacher: ConsistencyModel | None = None, metric: str = "pseudo_huber",
                              levels: str = "lognormal", weighting: str = "ict", c: float | None = None,
                              p_mean: float = P_MEAN, p_std: float = P_STD, noise: torch.Tensor | None = None,
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """The consistency-training loss of the module docstring (a 0-dim tensor with the student's graph).

    Args:
        model: the student :math:`f_\\theta`, a :class:`ConsistencyModel`.
        x0: data ``(N, D)``; sigmas: the current levels :math:`\\sigma_1 < \\dots < \\sigma_N` ``(n,)``
            (:func:`karras_levels`), the first ``>= model.sigma_min``.
        teacher: :math:`f_{\\theta^-}`; ``None`` (iCT): the student itself without gradient; original CT: the EMA
            copy of the student.
        metric: ``"pseudo_huber"`` (iCT, constant ``c``, default :math:`0.00054\\sqrt D`) or ``"l2"`` (squared,
            mean over coordinates).
        levels: pair indices from ``"lognormal"`` (iCT, ``p_mean``, ``p_std``) or ``"uniform"``.
        weighting: ``"ict"`` (:math:`1/(\\sigma_{i+1} - \\sigma_i)`) or ``"uniform"`` (1).
        noise: :math:`z` ``(N, D)``, shared by both points; drawn from ``generator`` when omitted.
    """
    if not isinstance(model, ConsistencyModel):
        raise TypeError(f"model must be a ConsistencyModel, got {type(model).__name__}")
    if teacher is not None and not isinstance(teacher, ConsistencyModel):  # (accepts: Module(optional) cannot probe None)
        raise TypeError(f"teacher must be a ConsistencyModel or None, got {type(teacher).__name__}")
    if sigmas.shape[0] < 2 or bool((sigmas[1:] <= sigmas[:-1]).any()):
        raise ValueError("sigmas must be strictly increasing with at least 2 levels")
    if float(sigmas[0]) < model.sigma_min:
        raise ValueError(f"sigmas must be >= model.sigma_min ({model.sigma_min}), got {float(sigmas[0])!r}")
    probs = _lognormal_probs(sigmas, float(p_mean), float(p_std)) if levels == "lognormal" else None
    idx = _sample_indices(x0.shape[0], sigmas.shape[0], probs, generator)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    c = pseudo_huber_c(x0[0].numel()) if c is None else float(c)
    return _ct_loss(model, teacher, x0, sigmas, idx, noise, metric, weighting, c)


# -- training ----------------------------------------------------------------------------------------------------------------
@accepts(model=Module(), sample_data=Function(), steps=Int(ge=0), batch_size=Int(ge=1), lr=Real(gt=0),
         curriculum=Choice("ict", "ct"), teacher=Choice("student", "ema"), metric=Choice("pseudo_huber", "l2"),
         levels=Choice("lognormal", "uniform"), weighting=Choice("ict", "uniform"), sigma_max=Real(gt=0),
         rho=Real(gt=0), generator=Generator(), callback=Function(optional=True),
         example=lambda ctx: {"model": ConsistencyModel(_example_network(ctx)),
                              "sample_data": lambda n, g: torch.randn(n, 2, generator=g, dtype=ctx.dtype),
                              "steps": 3, "batch_size": 8})
def train_consistency(model: ConsistencyModel, sample_data: Callable[[int, torch.Generator], torch.Tensor], *,
                      steps: int, batch_size: int = 256, lr: float = 1e-4, curriculum: str = "ict",
                      teacher: str = "student", metric: str = "pseudo_huber", levels: str = "lognormal",
                      weighting: str = "ict", sigma_max: float = SIGMA_MAX, rho: float = RHO,
                      generator: torch.Generator | None = None, callback: Callable | None = None) -> torch.Tensor:
    """Adam on :func:`consistency_training_loss` for ``steps`` steps with fresh data each step; returns the loss
    history ``(steps,)``. The defaults are iCT; ``curriculum="ct", teacher="ema", metric="l2", levels="uniform",
    weighting="uniform"`` is the original CT of the CM paper (square-root curriculum with :math:`s_0 = 2`,
    :math:`s_1 = 150`, teacher EMA :func:`ct_ema_decay`). ``callback(step, model, loss)`` after each step (from 1).
    No EMA of the student for evaluation is kept (the papers keep one; evaluate ``model`` or keep your own)."""
    if not isinstance(model, ConsistencyModel):
        raise TypeError(f"model must be a ConsistencyModel, got {type(model).__name__}")
    if sigma_max <= model.sigma_min:
        raise ValueError(f"sigma_max must be > model.sigma_min ({model.sigma_min}), got {sigma_max}")
    dtype = next(model.parameters()).dtype
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    ema = copy.deepcopy(model).requires_grad_(False) if teacher == "ema" else None
    history = torch.empty(steps, dtype=torch.float64)
    cached_n, sigmas, probs = None, None, None
    for k in range(steps):
        n = ict_discretization_steps(k, steps) if curriculum == "ict" else ct_discretization_steps(k, steps)
        if n != cached_n:
            cached_n = n
            sigmas = karras_levels(n, model.sigma_min, sigma_max, rho, dtype=dtype)
            probs = _lognormal_probs(sigmas, P_MEAN, P_STD) if levels == "lognormal" else None
        x0 = sample_data(batch_size, generator)
        idx = _sample_indices(batch_size, n, probs, generator)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        c = pseudo_huber_c(x0[0].numel())
        loss = _ct_loss(model, ema, x0, sigmas, idx, noise, metric, weighting, c)
        if not bool(torch.isfinite(loss.detach())):
            raise FloatingPointError(f"train_consistency: the loss is {float(loss.detach())} at step {k}; lower lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            mu = ct_ema_decay(n)
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), model.parameters()):
                    p_ema.lerp_(p, 1 - mu)
        history[k] = float(loss.detach())
        if callback is not None:
            callback(k + 1, model, float(history[k]))
    return history


# -- sampling ----------------------------------------------------------------------------------------------------------------
@accepts(sigma_min=Real(ge=0), output="any")  # returns a step function
def consistency_step(sigma_min: float = SIGMA_MIN):
    """The multistep consistency sampler's step: from the evaluation ``denoised`` :math:`= f(x, \\sigma)`, re-noise
    to the next level, :math:`f + \\sqrt{\\sigma_{next}^2 - \\sigma_{min}^2}\\, z` (no noise when
    :math:`\\sigma_{next} = 0`: the sample is :math:`f`)."""
    sigma_min = float(sigma_min)

    def step(x, sigma, sigma_next, denoised, ctx):
        if float(sigma_next) == 0:
            return denoised
        return denoised + (sigma_next.square() - sigma_min**2).clamp_min(0).sqrt() * ctx.noise(x)

    return step


@accepts(model=Function(), x=Tensor(ndims=tuple(range(1, 8)), degenerate=("zeros",)),
         sigmas=Tensor("n", nonnegative=True), generator=Generator(), callback=Function(optional=True),
         progress=Flag(), sigma_min=Real(ge=0),
         example=lambda ctx: {"model": ConsistencyModel(_ElementwiseNetwork().to(ctx.dtype)),
                              "x": 80.0 * torch.randn(4, 2, generator=ctx.generator, dtype=ctx.dtype),
                              "sigmas": torch.tensor([80.0, 0.821, 0.0], dtype=ctx.dtype)})
def sample_consistency(model, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator | None = None,
                       callback=None, progress: bool = False, sigma_min: float | None = None) -> torch.Tensor:
    """Multistep consistency sampling (CM paper, Algorithm 1): ``x`` is :math:`\\sigma_{max} z` at
    ``sigmas[0]``, ``sigmas = [sigma_max, tau_1, ..., tau_{n-1}, 0]`` decreasing; one evaluation of
    ``model(x, sigma)`` per level but the last, re-noising between them (:func:`consistency_step`). ``[sigma_max, 0]``
    is one-step generation. ``sigma_min`` defaults to ``model.sigma_min`` (else 0.002); every ``tau`` must be
    ``>= sigma_min``."""
    if sigma_min is None:
        sigma_min = getattr(model, "sigma_min", SIGMA_MIN)
    inner = sigmas[1:-1]
    if inner.numel() and float(inner.min()) < sigma_min:
        raise ValueError(f"sigmas must be >= sigma_min ({sigma_min}) except the last entry, got "
                         f"{float(inner.min())!r}")
    if sigmas.shape[0] >= 2 and float(sigmas[-1]) != 0:
        raise ValueError(f"sigmas must end in 0, got {float(sigmas[-1])!r}")
    return run_sampler(model, x, sigmas, consistency_step(sigma_min), generator=generator, callback=callback,
                       progress=progress)
