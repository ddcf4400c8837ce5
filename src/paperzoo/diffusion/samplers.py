"""Samplers over a denoiser ``model(x, sigma)``, in k-diffusion's calling convention.

Every sampler is ``sample_<name>(model, x, sigmas, *, generator=None, callback=None, progress=False, ...)``:
``x`` is the starting state at level ``sigmas[0]`` (pure noise times ``sigmas[0]`` for generation), ``sigmas`` a
decreasing schedule ending in 0 (see :mod:`paperzoo.diffusion.schedules`), ``model(x, sigma)`` the VE denoiser
:math:`D(x, \\sigma) \\approx E[x_0 \\mid x]` called with ``sigma`` of shape ``(N,)``. They integrate the
probability-flow ODE :math:`dx/d\\sigma = (x - D(x, \\sigma))/\\sigma` of Karras et al. (2022) or its
stochastic counterparts, and return the final state.

One loop (:func:`run_sampler`) evaluates the model, calls ``callback`` and hands the evaluation to a *step*
``step(x, sigma, sigma_next, denoised, ctx) -> x_next``; a sampler is a step function (plus its arguments), so a
variant overrides one step, never the loop. Stochastic steps draw noise from ``ctx.noise(x)``, i.e.
``torch.randn`` on ``generator``.

- :func:`sample_euler`: Euler steps (Algorithm 2 of Karras et al., with its optional churn);
- :func:`sample_heun`: Heun's second-order steps (Algorithm 1/2 of Karras et al.);
- :func:`sample_euler_ancestral`: Euler down to :math:`\\sigma_{down}`, then fresh noise :math:`\\sigma_{up}`;
- :func:`sample_ddim`: DDIM with its :math:`\\eta`; in the VE form DDIM's update is exactly the ancestral step
  with :math:`\\sigma_{up}^2 = \\eta^2 \\sigma_{next}^2 (\\sigma^2 - \\sigma_{next}^2)/\\sigma^2`, so
  :math:`\\eta = 0` is Euler and :math:`\\eta = 1` is DDPM's ancestral sampler (:func:`sample_ddpm`);
- :func:`sample_dpmpp_2m`: DPM-Solver++(2M) (Lu et al., 2022), second-order multistep in
  :math:`\\lambda = -\\log\\sigma`.

**Zero terminal SNR.** A schedule may start at :math:`\\sigma_0 = \\infty` (a zero-terminal-SNR schedule such as
:func:`~paperzoo.diffusion.schedules.rescale_zero_terminal_snr`'s, sampled from its last timestep). The VE state is
then infinite, so at that level it is carried normalized: ``x`` is the unit noise :math:`\\varepsilon =
\\lim x/\\sigma` (the VP state at :math:`\\bar\\alpha = 0`), and ``model(x, inf)`` receives that normalized state
(:meth:`~paperzoo.diffusion.mixture.GaussianMixture.denoise` returns the data mean there; see
:func:`~paperzoo.diffusion.parametrization.denoiser_from_prediction` for networks). Every sampler's first step
from :math:`\\infty` is the limit of the DDIM step, :math:`x_1 = D + \\sigma_{down}\\varepsilon + s_{noise}
\\sigma_{up} z` with :math:`\\sigma_{up} = \\min(1, \\eta)\\,\\sigma_1` (the step's ``eta``, 0 for the ODE steps,
whose first step is then Euler's), and the remaining steps are the sampler's own, with no history carried over.

**Inversion.** A nondecreasing ``sigmas`` (all finite, > 0) runs the same loop upwards, from data at
``sigmas[0]`` to a latent at ``sigmas[-1]``: with :func:`euler_step` that is DDIM inversion. Only the ODE steps make
sense in that direction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from paperzoo.core.accepts import Flag, Function, Generator, OneOf, Real, Tensor, accepts

__all__ = ["run_sampler", "SamplerContext", "ancestral_step_sizes", "sample_euler", "sample_heun",
           "sample_euler_ancestral", "sample_ddim", "sample_ddpm", "sample_dpmpp_2m", "to_derivative",
           "euler_step", "heun_step", "ancestral_step", "dpmpp_2m_step", "SAMPLERS"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SamplerContext:
    """What a step may use besides the current evaluation: the model (for extra evaluations), the step index,
    the whole schedule, the generator and a dict of state carried between steps (multistep methods)."""

    model: Denoiser
    sigmas: torch.Tensor
    i: int
    generator: torch.Generator | None
    state: dict = field(default_factory=dict)
    evaluations: int = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """An extra model evaluation at level ``sigma`` (a 0-dim tensor), counted in ``evaluations``."""
        self.evaluations += 1
        return _evaluate(self.model, x, sigma)

    def noise(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal noise of ``x``'s shape, dtype and device, from ``generator``."""
        return torch.randn(x.shape, generator=self.generator, dtype=x.dtype).to(x.device)


def _evaluate(model: Denoiser, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    denoised = model(x, x.new_full((x.shape[0],), float(sigma)))
    if not isinstance(denoised, torch.Tensor) or denoised.shape != x.shape:
        got = tuple(denoised.shape) if isinstance(denoised, torch.Tensor) else type(denoised).__name__
        raise ValueError(f"model must return a denoised tensor of the shape of x {tuple(x.shape)}, got {got}")
    return denoised


def _to_derivative(x, sigma, denoised):
    return (x - denoised) / sigma


@accepts(x=Tensor(ndims=tuple(range(1, 8))), sigma=OneOf(Real(gt=0), Tensor(ndims=(0,))),
         denoised=Tensor(ndims=tuple(range(1, 8))))
def to_derivative(x: torch.Tensor, sigma, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE's :math:`dx/d\\sigma = (x - D(x, \\sigma))/\\sigma` (steps use the unchecked
    kernel)."""
    if denoised.shape != x.shape:
        raise ValueError(f"denoised must have the shape of x {tuple(x.shape)}, got {tuple(denoised.shape)}")
    if isinstance(sigma, torch.Tensor) and float(sigma) <= 0:
        raise ValueError(f"sigma must be > 0, got {float(sigma)!r}")
    return _to_derivative(x, sigma, denoised)


def _check_sigmas(sigmas: torch.Tensor, x: torch.Tensor) -> None:
    if sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must hold at least two levels (start and end), got {sigmas.shape[0]}")
    if bool(torch.isnan(sigmas).any()):
        raise ValueError("sigmas must not contain NaN")
    if bool(torch.isinf(sigmas[1:]).any()):
        raise ValueError("sigmas may be infinite only in its first entry (a zero-terminal-SNR start)")
    if bool((sigmas[1:] >= sigmas[:-1]).all()) and bool(sigmas[-1] > sigmas[0]):  # an inversion: data level up
        if bool(torch.isinf(sigmas).any()) or float(sigmas[0]) <= 0:
            raise ValueError("an increasing sigmas (an inversion) must be finite and start > 0")
    elif bool((sigmas[1:] > sigmas[:-1]).any()):
        raise ValueError("sigmas must be nonincreasing (from the start level down to the last), or "
                         "nondecreasing (an inversion)")
    elif bool((sigmas[:-1] <= 0).any()):
        raise ValueError("sigmas must be > 0 except the last entry")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must have a nonempty batch dimension first, got shape {tuple(x.shape)}")


def _churn(x, sigma, i, n, ctx, s_churn, s_tmin, s_tmax, s_noise):
    """Karras et al.'s stochastic churn: raise the level to :math:`\\hat\\sigma = (1 + \\gamma)\\sigma` with fresh
    noise, :math:`\\gamma = \\min(S_{churn}/n, \\sqrt2 - 1)` inside :math:`[S_{tmin}, S_{tmax}]`."""
    if s_churn <= 0 or not (s_tmin <= float(sigma) <= s_tmax):
        return x, sigma
    gamma = min(s_churn / n, 2**0.5 - 1)
    sigma_hat = sigma * (gamma + 1)
    return x + ctx.noise(x) * s_noise * (sigma_hat**2 - sigma**2).sqrt(), sigma_hat


@accepts(model=Function(), x=Tensor(ndims=tuple(range(1, 8)), degenerate=("zeros",)),
         sigmas=Tensor("n", nonnegative=True, finite=False), step=Function(), generator=Generator(),
         callback=Function(optional=True), progress=Flag(),
         example=lambda ctx: {**_example(ctx), "step": euler_step})
@torch.no_grad()
def run_sampler(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, step, *,
                generator: torch.Generator | None = None, callback: Callable[[dict], None] | None = None,
                progress: bool = False, churn: tuple[float, float, float, float] | None = None) -> torch.Tensor:
    """The shared sampling loop: for each ``i``, optional churn, one model evaluation, ``callback``, ``step``.

    ``callback`` receives ``{"x", "i", "sigma", "sigma_hat", "denoised"}`` (k-diffusion's keys) before the step.
    ``churn = (s_churn, s_tmin, s_tmax, s_noise)`` (Karras et al.'s stochastic churn before each evaluation).
    ``step(x, sigma, sigma_next, denoised, ctx)`` is one of this module's steps or a variant of one.
    """
    _check_sigmas(sigmas, x)
    sigmas = sigmas.to(x.dtype)
    n = sigmas.shape[0] - 1
    ctx = SamplerContext(model, sigmas, 0, generator)
    first = 0
    if bool(torch.isinf(sigmas[0])):
        x, first = _step_from_infinity(x, sigmas, step, ctx, callback), 1
    steps = range(first, n)
    if progress:
        from rich.progress import track
        steps = track(steps, description="sampling", total=n - first)
    for i in steps:
        ctx.i = i
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        if churn is not None:
            x, sigma = _churn(x, sigma, i, n, ctx, *churn)
        denoised = ctx(x, sigma)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigma, "denoised": denoised})
        x = step(x, sigma, sigma_next, denoised, ctx)
    return x


def _step_from_infinity(x, sigmas, step, ctx, callback):
    """The first step from :math:`\\sigma = \\infty`, ``x`` the normalized state: DDIM's limit (module docstring)."""
    denoised = ctx(x, sigmas[0])
    if callback is not None:
        callback({"x": x, "i": 0, "sigma": sigmas[0], "sigma_hat": sigmas[0], "denoised": denoised})
    sigma_next = sigmas[1]
    eta = float(getattr(step, "eta", 0.0))
    up = sigma_next * min(1.0, eta)
    out = denoised + (sigma_next.square() - up.square()).clamp_min(0).sqrt() * x
    if eta > 0 and float(sigma_next) > 0:
        out = out + ctx.noise(x) * float(getattr(step, "s_noise", 1.0)) * up
    return out


# -- steps ---------------------------------------------------------------------------------------------------------
def euler_step(x, sigma, sigma_next, denoised, ctx):
    """:math:`x + (\\sigma_{next} - \\sigma)\\,(x - D)/\\sigma`."""
    return x + _to_derivative(x, sigma, denoised) * (sigma_next - sigma)


def heun_step(x, sigma, sigma_next, denoised, ctx):
    """Heun's method: the Euler predictor, then the trapezoid with the derivative there (Euler on the last step,
    where :math:`\\sigma_{next} = 0`)."""
    d = _to_derivative(x, sigma, denoised)
    x_euler = x + d * (sigma_next - sigma)
    if float(sigma_next) == 0:
        return x_euler
    d_next = _to_derivative(x_euler, sigma_next, ctx(x_euler, sigma_next))
    return x + 0.5 * (d + d_next) * (sigma_next - sigma)


@accepts(sigma=Real(gt=0), sigma_next=Real(ge=0), eta=Real(ge=0))
def ancestral_step_sizes(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """:math:`(\\sigma_{down}, \\sigma_{up})` with :math:`\\sigma_{up} = \\min(\\sigma_{next},
    \\eta\\,\\sigma_{next}\\sqrt{\\sigma^2 - \\sigma_{next}^2}/\\sigma)` and
    :math:`\\sigma_{down} = \\sqrt{\\sigma_{next}^2 - \\sigma_{up}^2}`: a step to :math:`\\sigma_{down}` plus fresh
    noise of std :math:`\\sigma_{up}` lands at :math:`\\sigma_{next}`."""
    if sigma_next > sigma:
        raise ValueError(f"sigma_next must be <= sigma ({sigma}), got {sigma_next}")
    up, down = _ancestral(torch.tensor(float(sigma), dtype=torch.float64),
                          torch.tensor(float(sigma_next), dtype=torch.float64), float(eta))
    return float(down), float(up)


def _ancestral(sigma, sigma_next, eta):
    if eta == 0:
        return torch.zeros_like(sigma_next), sigma_next
    up = torch.minimum(sigma_next, eta * sigma_next * (sigma**2 - sigma_next**2).clamp_min(0).sqrt() / sigma)
    return up, (sigma_next**2 - up**2).clamp_min(0).sqrt()


def _ancestral_floats(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """:func:`_ancestral` on Python floats (the steps' hot path)."""
    if eta == 0:
        return 0.0, sigma_next
    up = min(sigma_next, eta * sigma_next * math.sqrt(max(sigma * sigma - sigma_next * sigma_next, 0.0)) / sigma)
    return up, math.sqrt(max(sigma_next * sigma_next - up * up, 0.0))


@accepts(eta=Real(ge=0), s_noise=Real(ge=0), output="any")  # returns a step function
def ancestral_step(eta: float = 1.0, s_noise: float = 1.0):
    """The ancestral step with parameter :math:`\\eta`: Euler to :math:`\\sigma_{down}`, then
    :math:`s_{noise}\\,\\sigma_{up}` times fresh noise (none on the last step)."""
    # The scalar arithmetic runs on Python floats: a 0-dim tensor operation costs microseconds, as much as the
    # whole update of a small batch. eta = 0 is the Euler step itself (bit for bit).
    def step(x, sigma, sigma_next, denoised, ctx):
        if eta == 0:
            return euler_step(x, sigma, sigma_next, denoised, ctx)
        s, s_next = float(sigma), float(sigma_next)
        up, down = _ancestral_floats(s, s_next, eta)
        x = x + (x - denoised) * ((down - s) / s)
        if s_next > 0:
            x = x + ctx.noise(x) * (s_noise * up)
        return x
    step.eta, step.s_noise = eta, s_noise
    return step


def dpmpp_2m_step(x, sigma, sigma_next, denoised, ctx):
    """DPM-Solver++(2M): with :math:`\\lambda = -\\log\\sigma`, :math:`h = \\lambda_{next} - \\lambda`,

    .. math::
        x_{next} = \\frac{\\sigma_{next}}{\\sigma} x - (e^{-h} - 1) \\hat D, \\qquad
        \\hat D = \\Bigl(1 + \\frac{1}{2r}\\Bigr) D_i - \\frac{1}{2r} D_{i-1}, \\quad r = h_{i-1}/h,

    first order (:math:`\\hat D = D_i`) on the first step and on the last (:math:`\\sigma_{next} = 0`)."""
    s, s_next = float(sigma), float(sigma_next)
    previous = ctx.state.get("dpmpp_2m")
    ctx.state["dpmpp_2m"] = (denoised, s)
    if s_next == 0:
        return denoised
    if previous is not None:
        denoised = _dpmpp_2m_combination(denoised, s, s_next, *previous)
    return _dpmpp_update(x, s, s_next, denoised)


def _dpmpp_2m_combination(denoised, s: float, s_next: float, old_denoised, old_s: float):
    """:math:`\\hat D = (1 + \\frac{1}{2r}) D_i - \\frac{1}{2r} D_{i-1}` on float levels (variants reuse it)."""
    c = (math.log(s) - math.log(s_next)) / (2 * (math.log(old_s) - math.log(s)))  # 1 / (2r)
    return denoised * (1 + c) - old_denoised * c


def _dpmpp_update(x, s: float, s_next: float, denoised):
    """The first-order data-prediction update :math:`\\frac{\\sigma_{next}}{\\sigma} x - (e^{-h} - 1) \\hat D`."""
    return x * (s_next / s) - denoised * math.expm1(math.log(s_next) - math.log(s))


# -- samplers ------------------------------------------------------------------------------------------------------
_SIGMAS = Tensor("n", nonnegative=True, finite=False)  # a first entry inf: zero terminal SNR
_COMMON = dict(model=Function(), x=Tensor(ndims=tuple(range(1, 8)), degenerate=("zeros",)),
               sigmas=_SIGMAS, generator=Generator(), callback=Function(optional=True),
               progress=Flag())


def _example(ctx) -> dict:
    from paperzoo.diffusion.mixture import mixture_on_circle
    from paperzoo.diffusion.schedules import get_sigmas_karras

    gm = mixture_on_circle(3, 2, radius=2.0, std=0.3, dtype=ctx.dtype)
    sigmas = get_sigmas_karras(4, 0.05, 5.0, dtype=ctx.dtype)
    return {"model": gm.denoise, "x": 5.0 * torch.randn(4, 2, generator=ctx.generator, dtype=ctx.dtype),
            "sigmas": sigmas}


@accepts(**_COMMON, s_churn=Real(ge=0), s_tmin=Real(ge=0), s_tmax=Real(ge=0), s_noise=Real(ge=0),
         example=_example)
def sample_euler(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator | None = None,
                 callback=None, progress: bool = False, s_churn: float = 0.0, s_tmin: float = 0.0,
                 s_tmax: float = float("inf"), s_noise: float = 1.0) -> torch.Tensor:
    """Euler steps on the probability-flow ODE (Algorithm 2 of Karras et al., 2022); ``s_churn > 0`` adds its
    stochastic churn (fresh noise raising :math:`\\sigma` by up to :math:`\\sqrt2 - 1` relative) inside
    ``[s_tmin, s_tmax]``. One model evaluation per step.

    Example:
        >>> import torch
        >>> from paperzoo.diffusion import mixture_on_circle, get_sigmas_karras
        >>> gm = mixture_on_circle(4, 2, radius=3.0, std=0.2)
        >>> sigmas = get_sigmas_karras(30, 0.01, 20.0)
        >>> x = sample_euler(gm.denoise, sigmas[0] * torch.randn(256, 2, dtype=torch.float64), sigmas)
        >>> bool((x.norm(dim=1) - 3.0).abs().median() < 0.3)
        True
    """
    return run_sampler(model, x, sigmas, euler_step, generator=generator, callback=callback, progress=progress,
                       churn=(s_churn, s_tmin, s_tmax, s_noise) if s_churn > 0 else None)


@accepts(**_COMMON, s_churn=Real(ge=0), s_tmin=Real(ge=0), s_tmax=Real(ge=0), s_noise=Real(ge=0),
         example=_example)
def sample_heun(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator | None = None,
                callback=None, progress: bool = False, s_churn: float = 0.0, s_tmin: float = 0.0,
                s_tmax: float = float("inf"), s_noise: float = 1.0) -> torch.Tensor:
    """Heun's second-order method (Algorithm 2 of Karras et al., 2022): two evaluations per step except the last
    (``2 n - 1`` for ``n`` steps); churn as in :func:`sample_euler`."""
    return run_sampler(model, x, sigmas, heun_step, generator=generator, callback=callback, progress=progress,
                       churn=(s_churn, s_tmin, s_tmax, s_noise) if s_churn > 0 else None)


@accepts(**_COMMON, eta=Real(ge=0), s_noise=Real(ge=0), example=_example)
def sample_euler_ancestral(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                           generator: torch.Generator | None = None, callback=None, progress: bool = False,
                           eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral sampling with Euler steps: each step goes to :math:`\\sigma_{down}` and adds noise of std
    :math:`\\sigma_{up}` (:func:`ancestral_step_sizes`). One evaluation per step."""
    return run_sampler(model, x, sigmas, ancestral_step(float(eta), float(s_noise)), generator=generator,
                       callback=callback, progress=progress)


@accepts(**_COMMON, eta=Real(ge=0, le=1), example=_example)
def sample_ddim(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator | None = None,
                callback=None, progress: bool = False, eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al., 2021) in the VE form. With :math:`\\bar\\alpha = 1/(1 + \\sigma^2)` its update

    .. math::
        x_{prev} = \\sqrt{\\bar\\alpha_{prev}}\\,\\hat x_0 + \\sqrt{1 - \\bar\\alpha_{prev} - s_\\eta^2}\\;\\hat\\varepsilon
        + s_\\eta z, \\qquad s_\\eta^2 = \\eta^2 \\frac{1 - \\bar\\alpha_{prev}}{1 - \\bar\\alpha}
        \\Bigl(1 - \\frac{\\bar\\alpha}{\\bar\\alpha_{prev}}\\Bigr)

    divided by :math:`\\sqrt{\\bar\\alpha_{prev}}` is the ancestral step with
    :math:`\\sigma_{up} = s_\\eta/\\sqrt{\\bar\\alpha_{prev}}`, which is :func:`ancestral_step_sizes`'s. ``eta = 0``
    is deterministic DDIM (the Euler step); ``eta = 1`` is DDPM. Give ``sigmas`` from
    :func:`~paperzoo.diffusion.schedules.sigmas_from_alphas_cumprod` at the sampling timesteps, then 0, for the
    discrete DDIM of diffusers."""
    return run_sampler(model, x, sigmas, ancestral_step(float(eta)), generator=generator, callback=callback,
                       progress=progress)


@accepts(**_COMMON, example=_example)
def sample_ddpm(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator | None = None,
                callback=None, progress: bool = False) -> torch.Tensor:
    """DDPM's ancestral sampler (Ho et al., 2020) with the posterior variance :math:`\\tilde\\beta_t` ("fixed
    small"): DDIM with :math:`\\eta = 1`, whose step is exactly the posterior :math:`q(x_{prev} \\mid x_t, \\hat x_0)`."""
    return run_sampler(model, x, sigmas, ancestral_step(1.0), generator=generator, callback=callback,
                       progress=progress)


@accepts(**_COMMON, example=_example)
def sample_dpmpp_2m(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                    generator: torch.Generator | None = None, callback=None, progress: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al., 2022, Algorithm 2 in the data-prediction form): one evaluation per step,
    second order from the second step on (:func:`dpmpp_2m_step`)."""
    return run_sampler(model, x, sigmas, dpmpp_2m_step, generator=generator, callback=callback, progress=progress)


#: name -> (sampler, model evaluations for ``n`` steps)
SAMPLERS = {
    "euler": (sample_euler, lambda n: n),
    "heun": (sample_heun, lambda n: 2 * n - 1),
    "euler_ancestral": (sample_euler_ancestral, lambda n: n),
    "ddim": (sample_ddim, lambda n: n),
    "ddpm": (sample_ddpm, lambda n: n),
    "dpmpp_2m": (sample_dpmpp_2m, lambda n: n),
}
