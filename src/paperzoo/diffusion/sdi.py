"""Score distillation via inversion (SDI), with score distillation sampling (SDS) as the special case of random noise.

References: Score Distillation via Reparametrized DDIM, 2024 (Lukoianov, Sáez de Ocáriz Borde, Greenewald, Guizilini,
Bagautdinov, Sitzmann, Solomon; NeurIPS 2024).

**Score distillation** optimizes the parameters :math:`\\theta` of a differentiable generator :math:`x = g(\\theta)`
so that its output looks like a sample of a pretrained diffusion model. At update :math:`i` a timestep :math:`t_i`
is chosen, the output is noised, :math:`x_t = \\sqrt{\\bar\\alpha_t}\\,x + \\sqrt{1 - \\bar\\alpha_t}\\,\\varepsilon`,
and :math:`\\theta` moves along :math:`-w(t)(\\hat\\varepsilon(x_t, t) - \\varepsilon)\\,\\partial x/\\partial\\theta`.
In paperzoo's VE convention (:math:`\\sigma = \\sqrt{1/\\bar\\alpha - 1}`, denoiser :math:`D = \\hat x_0`) the noise
residual is :math:`\\hat\\varepsilon - \\varepsilon = (x - D(x + \\sigma\\varepsilon, \\sigma))/\\sigma`, so with
:math:`g` the identity (the particles are the parameters) one update is

.. math::
    x \\leftarrow x - \\eta\\, w(\\sigma)\\,\\bigl(x - D(x + \\sigma\\varepsilon, \\sigma)\\bigr),

:func:`distillation_gradient` being the bracket times :math:`w`. Two weightings: ``"unit"``, :math:`w = 1` (the
target-regression form :math:`\\tfrac12\\|x - \\operatorname{sg}[\\hat x_0]\\|^2` of the official SDI code; with
:math:`\\eta = 1` the update *replaces* :math:`x` by the denoised estimate), and ``"sds"``, DreamFusion's
:math:`w(t) = 1 - \\bar\\alpha_t` on the noise residual, i.e. :math:`\\sigma/(1 + \\sigma^2)` on the bracket.

**The paper's observation** (its Section 4): with :math:`\\eta w = 1` the SDS iterate is the :math:`\\hat x_0` of a
DDIM trajectory *if* the noise at update :math:`i` is the noise DDIM's state carried at the previous level,
:math:`\\varepsilon_{i-1} = (x_{t_{i-1}} - \\hat x_0)/\\sigma_{i-1}`; SDS draws it fresh, which is a far
higher-variance process and averages (over-smooths) the result. **SDI** infers that noise from the current
iterate by DDIM inversion (:func:`~paperzoo.diffusion.ddim_inversion.invert_ddim`): invert :math:`x` from the
first level of a coarse DDIM grid (``inversion_steps`` levels, DDIM's "leading" spacing, offset 1) up to the level
of :math:`t_i + \\delta`, :math:`\\delta \\sim \\mathcal U\\{0, \\dots, \\lfloor T/n\\rfloor - 1\\}` (the official
code's jitter), read off :math:`\\varepsilon = (x_{t+\\delta} - x)/\\sigma_{t+\\delta}` (:func:`sdi_noise`) and use
it at :math:`t_i`. The timestep is annealed linearly and deterministically from ``t_range[1] T`` down to
``t_range[0] T`` (:func:`distillation_timesteps`, the official ``t_anneal``).

:func:`score_distillation` runs the loop on particles ``x`` ``(N, ...)`` with ``noise`` ``"inverted"`` (SDI),
``"random"`` (SDS; with ``weighting="sds"`` it is DreamFusion's update) or a callable
``noise(x, sigma, i) -> eps`` (for instance the exact DDIM noise, which makes the loop a DDIM sampler).

Example:
    >>> import torch
    >>> from paperzoo.diffusion.mixture import GaussianMixture
    >>> from paperzoo.diffusion.schedules import alphas_cumprod_from_betas, betas_scaled_linear
    >>> gm = GaussianMixture(torch.zeros(1, 2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)[None])
    >>> ac = alphas_cumprod_from_betas(betas_scaled_linear()).double()
    >>> x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> sdi = score_distillation(gm.denoise, x, ac, n_updates=50, generator=torch.Generator().manual_seed(1))
    >>> sds = score_distillation(gm.denoise, x, ac, n_updates=50, noise="random", lr=0.1,
    ...                          generator=torch.Generator().manual_seed(1))
    >>> sdi.shape, bool(sds.var(0).mean() < 0.1)     # small-step SDS collapses onto the mode
    (torch.Size([500, 2]), True)

On an exact Gaussian teacher SDI's inversion starts from the particle as if it were a clean sample, so its noise
has the particle's (shrunken) spread rather than that of DDIM's state: SDI too contracts towards the modes there
(see the claim check ``sdi``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from paperzoo.core.accepts import Choice, Flag, Function, Generator, Int, Pair, Probe, Real, Spec, Tensor, accepts
from paperzoo.diffusion.ddim_inversion import _invert
from paperzoo.diffusion.schedules import sigmas_from_alphas_cumprod

__all__ = ["score_distillation", "distillation_gradient", "sdi_noise", "sdi_inversion_sigmas",
           "distillation_timesteps", "DISTILLATION_WEIGHTINGS"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: ``weighting`` names: the factor on the bracket ``x - D`` as a function of the VE level
DISTILLATION_WEIGHTINGS = ("unit", "sds")

NOISES = ("inverted", "random")


class _Noise(Spec):
    """``"inverted"``, ``"random"`` or a callable (``OneOf`` takes no ``Choice`` alternative)."""

    def check(self, name, value, binding):
        if callable(value) and not isinstance(value, torch.Tensor):
            return
        if isinstance(value, str) and value in NOISES:
            return
        if isinstance(value, str):
            raise ValueError(f"{name} must be one of {list(NOISES)} or a callable, got {value!r}")
        raise TypeError(f"{name} must be one of {list(NOISES)} or a callable, got {type(value).__name__}")

    def example(self, ctx):
        return "inverted"

    def probes(self, name, value):
        return super().probes(name, value) + [Probe(name, "unknown choice", False,
                                                    lambda a: {**a, name: "__not_a_choice__"})]


_PARTICLES = Tensor(ndims=tuple(range(1, 8)), degenerate=("zeros",))


def _weight(sigma: torch.Tensor, weighting: str) -> torch.Tensor:
    return sigma / (1 + sigma * sigma) if weighting == "sds" else torch.ones_like(sigma)


def _gradient(model: Denoiser, x: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor, weighting: str):
    """Unchecked :func:`distillation_gradient`; returns ``(gradient, denoised)``."""
    denoised = model(x + sigma * eps, sigma * x.new_ones(x.shape[0]))
    return _weight(sigma, weighting) * (x - denoised), denoised


def _check_model_output(denoised, x) -> None:
    if not isinstance(denoised, torch.Tensor) or denoised.shape != x.shape:
        got = tuple(denoised.shape) if isinstance(denoised, torch.Tensor) else type(denoised).__name__
        raise ValueError(f"model must return a tensor of the shape of x {tuple(x.shape)}, got {got}")


def _example_gradient(ctx) -> dict:
    from paperzoo.diffusion.mixture import mixture_on_circle

    gm = mixture_on_circle(3, 2, radius=2.0, std=0.3, dtype=ctx.dtype)
    return {"model": gm.denoise, "x": torch.randn(5, 2, generator=ctx.generator, dtype=ctx.dtype), "sigma": 1.5,
            "noise": torch.randn(5, 2, generator=ctx.generator, dtype=ctx.dtype)}


@accepts(model=Function(), x=_PARTICLES, sigma=Real(gt=0), noise=Tensor(ndims=tuple(range(1, 8))),
         weighting=Choice(*DISTILLATION_WEIGHTINGS), example=_example_gradient)
def distillation_gradient(model: Denoiser, x: torch.Tensor, sigma: float, noise: torch.Tensor, *,
                          weighting: str = "unit") -> torch.Tensor:
    """The score-distillation gradient on the particles ``x`` at VE level ``sigma`` with noise ``noise``:
    :math:`w(\\sigma)\\,(x - D(x + \\sigma\\varepsilon, \\sigma))` (module docstring; ``"sds"`` weighting is
    :math:`(1 - \\bar\\alpha)(\\hat\\varepsilon - \\varepsilon)` exactly).

    Args:
        model: the denoiser ``model(x, sigma)`` (sigma of shape ``(N,)``).
        x: the particles (generator outputs) ``(N, ...)``.
        sigma: the VE level :math:`\\sigma_t > 0`.
        noise: :math:`\\varepsilon`, shape of ``x`` (standard normal for SDS, inverted for SDI).
        weighting: ``"unit"`` (default, the official SDI target loss) or ``"sds"``.

    Returns:
        The gradient, shape of ``x``; an update is ``x - lr * gradient``.
    """
    if noise.shape != x.shape:
        raise ValueError(f"noise must have the shape of x {tuple(x.shape)}, got {tuple(noise.shape)}")
    s = torch.as_tensor(float(sigma), dtype=x.dtype, device=x.device)
    denoised = model(x + s * noise, s * x.new_ones(x.shape[0]))
    _check_model_output(denoised, x)
    return _weight(s, weighting) * (x - denoised)


def _sdi_noise(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, eta: float, generator) -> torch.Tensor:
    """Unchecked :func:`sdi_noise`."""
    if eta == 0:
        latent = _invert(model, x, sigmas, 0, None, None, False)
    else:
        latent = x
        for lo, hi in zip(sigmas[:-1], sigmas[1:]):
            latent = _invert(model, latent, torch.stack([lo, hi]), 0, None, None, False)
            # DDPM posterior variance between the two levels (VP), carried to the VE state at the upper level
            a_lo, a_hi = 1 / (1 + lo * lo), 1 / (1 + hi * hi)
            var = ((1 - a_lo) / (1 - a_hi) * (1 - a_hi / a_lo)).clamp_min(0)
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            latent = latent + eta * (var / a_hi).sqrt() * z
    return (latent - x) / sigmas[-1]


def _example_noise(ctx) -> dict:
    from paperzoo.diffusion.mixture import mixture_on_circle

    gm = mixture_on_circle(3, 2, radius=2.0, std=0.3, dtype=ctx.dtype)
    return {"model": gm.denoise, "x": gm.sample(5, generator=ctx.generator),
            "sigmas": torch.tensor([0.05, 0.4, 1.2, 3.0], dtype=ctx.dtype)}


@accepts(model=Function(), x=_PARTICLES, sigmas=Tensor("n", nonnegative=True), eta=Real(ge=0),
         generator=Generator(), example=_example_noise)
def sdi_noise(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float = 0.3,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """SDI's inferred noise: DDIM-invert ``x`` (taken at level ``sigmas[0]``) up to ``sigmas[-1]`` and return
    :math:`\\varepsilon = (x_{\\sigma_{-1}} - x)/\\sigma_{-1}`, the noise that, added at that level, gives the
    inverted latent.

    Args:
        model: the denoiser ``model(x, sigma)``.
        x: the particles ``(N, ...)``.
        sigmas: increasing VE levels ``(n + 1,)``, all > 0 (:func:`sdi_inversion_sigmas`): ``n`` Euler (DDIM)
            inversion steps.
        eta: after each inversion step add :math:`\\eta\\,\\tilde\\beta^{1/2} z` to the VP latent, with
            :math:`\\tilde\\beta` DDPM's posterior variance between the step's two levels (the official
            ``inversion_eta``, default 0.3; 0: deterministic DDIM inversion).
        generator: for those draws.

    Returns:
        The noise, shape of ``x``.
    """
    if sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must hold at least two levels (start and end), got {sigmas.shape[0]}")
    if bool((sigmas <= 0).any()):
        raise ValueError("sigmas must be > 0 (the inversion starts from the particles taken at level sigmas[0] > 0)")
    if bool((sigmas[1:] < sigmas[:-1]).any()):
        raise ValueError("sigmas must be nondecreasing (an inversion goes up from the data level)")
    return _sdi_noise(model, x, sigmas.to(x.dtype), float(eta), generator)


def _inversion_timesteps(T: int, t: int, n_steps: int, delta: int, steps_offset: int) -> list[int]:
    grid = [k * (T // n_steps) + steps_offset for k in range(n_steps)]
    below = [s for s in grid if s < t]
    return below + [min(t + delta, T - 1)]


@accepts(alphas_cumprod=Tensor("T", positive_mass=True), t=Int(ge=1), n_steps=Int(ge=1), delta=Int(ge=0),
         steps_offset=Int(ge=0),
         example=lambda ctx: {"alphas_cumprod": torch.linspace(0.999, 0.01, 100, dtype=ctx.dtype), "t": 60,
                              "n_steps": 10})
def sdi_inversion_sigmas(alphas_cumprod: torch.Tensor, t: int, *, n_steps: int = 10, delta: int = 0,
                         steps_offset: int = 1) -> torch.Tensor:
    """The VE levels of SDI's inversion to timestep ``t``: the timesteps of an ``n_steps``-step DDIM grid
    (:math:`k\\lfloor T/n\\rfloor + \\text{offset}`, "leading") that lie below ``t``, then
    :math:`\\min(t + \\delta, T - 1)`; increasing, shape ``(m,)`` with ``m >= 2``.

    Args:
        alphas_cumprod: :math:`\\bar\\alpha` of the ``T`` training timesteps, decreasing, in ``(0, 1]``.
        t: the target timestep, ``steps_offset < t < T``.
        n_steps: the inversion grid's size (paper default 10).
        delta: the jitter :math:`\\delta` above ``t`` (the official code draws it from ``[0, T // n_steps)``).
        steps_offset: the grid's offset (Stable Diffusion's scheduler: 1).
    """
    T = alphas_cumprod.shape[0]
    if bool((alphas_cumprod > 1).any()):
        raise ValueError("alphas_cumprod must be <= 1")
    if bool((alphas_cumprod <= 0).any()):
        raise ValueError("alphas_cumprod must be > 0 (an inversion needs finite levels)")
    if n_steps > T:
        raise ValueError(f"n_steps must be <= the number of timesteps ({T}), got {n_steps}")
    if not steps_offset < t < T:
        raise ValueError(f"t must lie in ({steps_offset}, {T}) (above the grid's first timestep, below T), got {t}")
    sig = sigmas_from_alphas_cumprod(alphas_cumprod)
    return sig[torch.tensor(_inversion_timesteps(T, t, n_steps, delta, steps_offset))]


def _timesteps(n_updates: int, T: int, t_min: float, t_max: float) -> torch.Tensor:
    frac = (t_max - t_min) * (1 - torch.arange(n_updates, dtype=torch.float64) / n_updates) + t_min
    return (frac * T).floor().long().clamp(0, T - 1)


@accepts(n_updates=Int(ge=1), num_train_timesteps=Int(ge=2),
         t_range=Pair(Real(gt=0, lt=1), meaning="(low, high) fractions of the timesteps"))
def distillation_timesteps(n_updates: int, num_train_timesteps: int = 1000,
                           t_range: tuple[float, float] = (0.02, 0.98)) -> torch.Tensor:
    """The annealed timesteps ``(n_updates,)``: :math:`t_i = \\lfloor T\\,(f_{lo} + (f_{hi} - f_{lo})(1 - i/n))
    \\rfloor`, decreasing linearly from ``t_range[1] T`` to just above ``t_range[0] T`` (the official ``t_anneal``;
    defaults 0.02, 0.98)."""
    lo, hi = float(t_range[0]), float(t_range[1])
    if lo > hi:
        raise ValueError(f"t_range must be (low, high) with low <= high, got {t_range}")
    return _timesteps(n_updates, num_train_timesteps, lo, hi)


def _example_loop(ctx) -> dict:
    from paperzoo.diffusion.mixture import mixture_on_circle

    gm = mixture_on_circle(3, 2, radius=2.0, std=0.3, dtype=ctx.dtype)
    return {"model": gm.denoise, "x": torch.randn(6, 2, generator=ctx.generator, dtype=ctx.dtype),
            "alphas_cumprod": torch.linspace(0.999, 0.01, 100, dtype=ctx.dtype), "n_updates": 4,
            "inversion_steps": 5}


@accepts(model=Function(), x=_PARTICLES, alphas_cumprod=Tensor("T", positive_mass=True), n_updates=Int(ge=1),
         lr=Real(gt=0), noise=_Noise(),
         weighting=Choice(*DISTILLATION_WEIGHTINGS), inversion_steps=Int(ge=1), inversion_eta=Real(ge=0), jitter=Flag(),
         t_range=Pair(Real(gt=0, lt=1), meaning="(low, high) fractions of the timesteps"), generator=Generator(),
         callback=Function(optional=True), example=_example_loop)
def score_distillation(model: Denoiser, x: torch.Tensor, alphas_cumprod: torch.Tensor, *, n_updates: int,
                       lr: float = 1.0, noise: str | Callable = "inverted", weighting: str = "unit",
                       inversion_steps: int = 10, inversion_eta: float = 0.3, jitter: bool = True, t_range: tuple[float, float] = (0.02, 0.98),
                       generator: torch.Generator | None = None,
                       callback: Callable[[dict], None] | None = None) -> torch.Tensor:
    """Score distillation on particles ``x`` (``g`` the identity): SDI (default) or SDS (module docstring).

    Args:
        model: the denoiser ``model(x, sigma)`` (the frozen teacher).
        x: the initial particles ``(N, ...)`` (not modified).
        alphas_cumprod: the teacher's :math:`\\bar\\alpha` over its ``T`` training timesteps, in ``(0, 1]``.
        n_updates: the number of updates; update ``i`` uses timestep ``distillation_timesteps(...)[i]``.
        lr: the step size :math:`\\eta` of plain gradient descent (``1`` with ``"unit"``: the DDIM-equivalent step).
        noise: ``"inverted"`` (SDI, :func:`sdi_noise` over :func:`sdi_inversion_sigmas`), ``"random"`` (SDS,
            fresh :math:`\\mathcal N(0, I)` from ``generator``), or ``noise(x, sigma, i) -> eps``.
        weighting: ``"unit"`` (default) or ``"sds"`` (:func:`distillation_gradient`).
        inversion_steps: SDI's inversion grid size (paper default 10).
        inversion_eta: SDI's inversion noise (:func:`sdi_noise`'s ``eta``; official default 0.3).
        jitter: draw SDI's :math:`\\delta` from ``[0, T // inversion_steps)`` with ``generator`` (official code);
            ``False``: :math:`\\delta = 0`.
        t_range: the annealing range as fractions of ``T`` (defaults 0.02, 0.98).
        callback: ``callback({"x", "i", "t", "sigma", "noise", "denoised"})`` after each update (``x`` updated).

    Returns:
        The final particles, shape of ``x`` (a ``RuntimeWarning`` if they diverged to non-finite values).
    """
    T = alphas_cumprod.shape[0]
    if bool((alphas_cumprod > 1).any()) or bool((alphas_cumprod <= 0).any()):
        raise ValueError("alphas_cumprod must lie in (0, 1] (finite levels)")
    if inversion_steps > T:
        raise ValueError(f"inversion_steps must be <= the number of timesteps ({T}), got {inversion_steps}")
    lo, hi = float(t_range[0]), float(t_range[1])
    if lo > hi:
        raise ValueError(f"t_range must be (low, high) with low <= high, got {t_range}")
    ts = _timesteps(n_updates, T, lo, hi)
    if noise == "inverted" and int(ts.min()) <= 1:
        raise ValueError(f"t_range[0] * T must be above the inversion grid's first timestep (1), got {lo * T:g}")
    sig = sigmas_from_alphas_cumprod(alphas_cumprod).to(x.dtype)
    x = x.clone()
    for i, t in enumerate(ts.tolist()):
        sigma = sig[t]
        if noise == "random":
            eps = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        elif noise == "inverted":
            delta = int(torch.rand((), generator=generator, dtype=torch.float64) * (T // inversion_steps)) \
                if jitter else 0
            levels = sig[torch.tensor(_inversion_timesteps(T, t, inversion_steps, delta, 1))]
            eps = _sdi_noise(model, x, levels, inversion_eta, generator)
        else:
            eps = noise(x, sigma, i)
            if not isinstance(eps, torch.Tensor) or eps.shape != x.shape:
                got = tuple(eps.shape) if isinstance(eps, torch.Tensor) else type(eps).__name__
                raise ValueError(f"noise must return a tensor of the shape of x {tuple(x.shape)}, got {got}")
        grad, denoised = _gradient(model, x, sigma, eps, weighting)
        if i == 0:
            _check_model_output(denoised, x)
        x = x - lr * grad
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "sigma": sigma, "noise": eps, "denoised": denoised})
    if not bool(torch.isfinite(x).all()):
        warnings.warn(f"score_distillation diverged (non-finite particles); lower lr (got {lr:g})", RuntimeWarning,
                      stacklevel=2)
    return x
