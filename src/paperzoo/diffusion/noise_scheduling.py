"""Noise scheduling by gamma functions and input scaling: continuous-time cosine, sigmoid and linear schedules
with a data scale factor b.

References: On the Importance of Noise Scheduling for Diffusion Models, 2023 (Ting Chen; arXiv 2301.10972).

The paper writes the forward process with a continuous time :math:`t \\in [0, 1]`, a decreasing
:math:`\\gamma(t)` from 1 to 0 (the signal's variance share, DDPM's :math:`\\bar\\alpha`) and an input scale
factor :math:`b`:

.. math::
    x_t = \\sqrt{\\gamma(t)}\\, b\\, x_0 + \\sqrt{1 - \\gamma(t)}\\, \\varepsilon, \\qquad
    \\log\\mathrm{SNR}(t) = \\log\\frac{\\gamma(t)}{1 - \\gamma(t)} + 2\\log b,

so :math:`b < 1` shifts the whole log-SNR curve down by :math:`2\\log|b|` (a noisier schedule), which the paper
finds larger images need (more pixels carry the same information, so the same noise level hides less). Its
gamma functions (Algorithm 1), all clipped to :math:`[\\text{clip\\_min}, 1]`:

- linear: :math:`\\gamma(t) = 1 - t`;
- cosine: :math:`v(u) = \\cos(u\\pi/2)^{2\\tau}`, :math:`\\gamma(t) = \\frac{v(\\text{end}) - v(\\text{start} +
  t(\\text{end} - \\text{start}))}{v(\\text{end}) - v(\\text{start})}` (defaults start 0, end 1, tau 1: the plain
  :math:`\\cos^2(\\pi t/2)`);
- sigmoid: the same with :math:`v(u) = \\mathrm{sigmoid}(u/\\tau)` (defaults start -3, end 3, tau 1).

The network sees :math:`x_t` normalized to unit variance (the paper's ``normalize`` option), either by its
per-example standard deviation over the features (``"sample"``, the paper's pseudocode) or by the variance a
unit-variance :math:`x_0` would give, :math:`\\sqrt{b^2\\gamma + 1 - \\gamma}` (``"unit"``); ``None`` feeds it
unnormalized.

**paperzoo's VE levels.** Dividing :math:`x_t` by :math:`b\\sqrt\\gamma` gives the VE state of the *unscaled*
data, :math:`x = x_0 + \\sigma\\varepsilon` with

.. math::
    \\sigma(t) = \\frac1b \\sqrt{\\frac{1 - \\gamma(t)}{\\gamma(t)}}, \\qquad
    x_t = \\frac{b\\,x}{\\sqrt{1 + b^2\\sigma^2}},

so input scaling is exactly ``sigma -> sigma / b`` of every level, for training (:meth:`GammaSchedule.__call__`,
the ``sample_sigmas`` hook of :func:`~paperzoo.diffusion.training.train_denoiser`) and sampling
(:meth:`GammaSchedule.sampling_sigmas`, the paper's uniform grid in :math:`t`, Algorithm 3), and the exact
denoisers are related by :math:`D_{b x_0}(b x, b\\sigma) = b\\, D_{x_0}(x, \\sigma)` (tests). With ``"unit"``
normalization the network's input :math:`x / \\sqrt{1 + \\sigma^2}` does not depend on :math:`b` at all (it is
paperzoo's ``"vp"`` space): with unit-variance data, b only moves the levels.
:class:`ScaledInputNetwork` wraps an eps network so that it is trained and sampled with the paper's input.

Shapes: ``t`` any shape, entries in ``[0, 1]``; levels have the shape of ``t``; states ``(N, d)``.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.noise_scheduling import GammaSchedule, gamma_cosine
    >>> t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    >>> [round(v, 4) for v in gamma_cosine(t).tolist()]
    [1.0, 0.5, 0.0]
    >>> schedule = GammaSchedule("cosine", input_scale=0.5)
    >>> round(float(schedule.sigma(torch.tensor(0.5, dtype=torch.float64))), 4)   # sqrt(0.5/0.5) / 0.5
    2.0
    >>> schedule.sampling_sigmas(4).shape             # levels at t = 1, 3/4, 1/2, 1/4, then 0
    torch.Size([5])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from paperzoo.core.accepts import Choice, FloatDType, Generator, Int, Module, Real, Tensor, accepts
from paperzoo.diffusion.parametrization import denoiser_from_prediction

__all__ = ["gamma_linear", "gamma_cosine", "gamma_sigmoid", "GammaSchedule", "noisy_input", "ScaledInputNetwork",
           "GAMMA_FUNCTIONS", "NORMALIZATIONS"]

#: the paper's gamma functions
GAMMA_FUNCTIONS = ("linear", "cosine", "sigmoid")
#: how x_t is brought to unit variance before the network (None: not at all)
NORMALIZATIONS = ("sample", "unit")

_DEFAULTS = {"linear": (None, None), "cosine": (0.0, 1.0), "sigmoid": (-3.0, 3.0)}
_T = Tensor(ndims=tuple(range(0, 8)), nonnegative=True, allow_empty=True)


def _check_t(t: torch.Tensor) -> None:
    if t.numel() and bool((t > 1).any()):
        raise ValueError(f"t must be <= 1 entrywise, got a maximum of {float(t.max())!r}")


def _check_range(kind: str, start: float, end: float, tau: float) -> None:
    if not start < end:
        raise ValueError(f"start must be < end ({end!r}), got {start!r}")
    if kind == "cosine":
        if start < 0 or end > 1:
            raise ValueError(f"start and end must lie in [0, 1] for the cosine schedule, got {start!r} and {end!r}")
    # v(start) = v(end) in floating point (a flat stretch): gamma would be 0 / 0
    v = _v(kind, torch.tensor([start, end], dtype=torch.float64), tau)
    if not float(v[0] - v[1]) != 0:
        raise ValueError(f"start and end must give distinct values of the {kind} function at tau {tau!r}, got "
                         f"{start!r} and {end!r}")


def _v(kind: str, u: torch.Tensor, tau: float) -> torch.Tensor:
    if kind == "cosine":
        return torch.cos(u * (math.pi / 2)).clamp_min(0).pow(2 * tau)
    return torch.sigmoid(u / tau)


def _gamma(kind: str, t: torch.Tensor, start, end, tau, clip_min) -> torch.Tensor:
    """Unchecked gamma(t) in float64 (then ``t``'s dtype)."""
    t64 = t.to(torch.float64)
    if kind == "linear":
        out = 1 - t64
    else:
        v_start, v_end = (float(v) for v in _v(kind, torch.tensor([start, end], dtype=torch.float64), tau))
        out = (v_end - _v(kind, start + t64 * (end - start), tau)) / (v_end - v_start)
    return out.clamp(clip_min, 1.0).to(t.dtype)


@accepts(t=_T, clip_min=Real(gt=0, lt=1))
def gamma_linear(t: torch.Tensor, clip_min: float = 1e-9) -> torch.Tensor:
    """The paper's linear gamma :math:`\\gamma(t) = 1 - t`, clipped to ``[clip_min, 1]``; shape of ``t``."""
    _check_t(t)
    return _gamma("linear", t, None, None, None, clip_min)


@accepts(t=_T, start=Real(ge=0, le=1), end=Real(ge=0, le=1), tau=Real(gt=0), clip_min=Real(gt=0, lt=1))
def gamma_cosine(t: torch.Tensor, start: float = 0.0, end: float = 1.0, tau: float = 1.0,
                 clip_min: float = 1e-9) -> torch.Tensor:
    """The paper's cosine gamma: :math:`v(u) = \\cos(u\\pi/2)^{2\\tau}` rescaled so that :math:`\\gamma(0) = 1`,
    :math:`\\gamma(1) = 0` (module docstring), clipped to ``[clip_min, 1]``; shape of ``t``."""
    _check_t(t)
    _check_range("cosine", start, end, tau)
    return _gamma("cosine", t, start, end, tau, clip_min)


@accepts(t=_T, start=Real(), end=Real(), tau=Real(gt=0), clip_min=Real(gt=0, lt=1))
def gamma_sigmoid(t: torch.Tensor, start: float = -3.0, end: float = 3.0, tau: float = 1.0,
                  clip_min: float = 1e-9) -> torch.Tensor:
    """The paper's sigmoid gamma: :math:`v(u) = \\mathrm{sigmoid}(u/\\tau)` rescaled so that :math:`\\gamma(0) = 1`,
    :math:`\\gamma(1) = 0` (module docstring), clipped to ``[clip_min, 1]``; shape of ``t``."""
    _check_t(t)
    _check_range("sigmoid", start, end, tau)
    return _gamma("sigmoid", t, start, end, tau, clip_min)



def _with_schedule(ctx, **arguments) -> dict:
    """A method example's arguments: an example schedule as ``self``, then ``arguments``."""
    return {"self": GammaSchedule("sigmoid", dtype=ctx.dtype), **arguments}

class GammaSchedule:
    """A gamma function with an input scale :math:`b`, as paperzoo VE levels :math:`\\sigma(t) =
    \\sqrt{(1-\\gamma)/\\gamma}/b` (module docstring).

    Args:
        gamma: ``"cosine"``, ``"sigmoid"`` or ``"linear"``.
        start, end, tau: the function's parameters (``None``: the paper's defaults, cosine 0, 1 and sigmoid
            -3, 3; the linear schedule takes none).
        clip_min: :math:`\\gamma` is clipped to ``[clip_min, 1]`` (the largest level is
            :math:`\\sqrt{(1 - \\text{clip\\_min})/\\text{clip\\_min}}/b`).
        input_scale: :math:`b > 0`.
        dtype: of the levels drawn by ``schedule(n, generator)``.

    ``schedule(n, generator)`` draws ``n`` training levels at :math:`t \\sim U[0, 1)` without argument checks (the
    ``sample_sigmas`` hook of :func:`~paperzoo.diffusion.training.train_denoiser`).
    """

    @accepts(gamma=Choice(*GAMMA_FUNCTIONS), start=Real(optional=True), end=Real(optional=True), tau=Real(gt=0),
             clip_min=Real(gt=0, lt=1), input_scale=Real(gt=0), dtype=FloatDType(),
             example=lambda ctx: {"gamma": "sigmoid"}, output="any")
    def __init__(self, gamma: str = "cosine", start: float | None = None, end: float | None = None,
                 tau: float = 1.0, *, clip_min: float = 1e-9, input_scale: float = 1.0,
                 dtype: torch.dtype = torch.float64):
        default_start, default_end = _DEFAULTS[gamma]
        if gamma == "linear":
            if start is not None or end is not None or tau != 1.0:
                raise ValueError("start, end and tau must be left unset for the linear schedule")
        else:
            start = default_start if start is None else float(start)
            end = default_end if end is None else float(end)
            if gamma == "cosine" and not (0 <= start <= 1 and 0 <= end <= 1):
                raise ValueError(f"start and end must lie in [0, 1] for the cosine schedule, got {start!r} and "
                                 f"{end!r}")
            _check_range(gamma, start, end, tau)
        self.kind, self.start, self.end, self.tau = gamma, start, end, float(tau)
        self.clip_min, self.input_scale, self.dtype = float(clip_min), float(input_scale), dtype

    def __repr__(self) -> str:
        params = "" if self.kind == "linear" else f", start={self.start:g}, end={self.end:g}, tau={self.tau:g}"
        return f"GammaSchedule({self.kind!r}{params}, input_scale={self.input_scale:g})"

    # -- unchecked kernels -------------------------------------------------------------------------------------
    def _gamma(self, t: torch.Tensor) -> torch.Tensor:
        return _gamma(self.kind, t, self.start, self.end, self.tau, self.clip_min)

    def _sigma(self, t: torch.Tensor) -> torch.Tensor:
        g = self._gamma(t.to(torch.float64))
        return (((1 - g) / g).sqrt() / self.input_scale).to(t.dtype)

    def __call__(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Unchecked :meth:`sample_sigmas` in the schedule's ``dtype`` (training loops)."""
        return self._sigma(torch.rand(n, generator=generator, dtype=torch.float64)).to(self.dtype)

    # -- checked methods ---------------------------------------------------------------------------------------
    @accepts(t=_T, example=lambda ctx: _with_schedule(ctx, t=torch.rand(5, generator=ctx.generator, dtype=ctx.dtype)))
    def gamma(self, t: torch.Tensor) -> torch.Tensor:
        """:math:`\\gamma(t)`, shape of ``t`` (input scaling does not change it)."""
        _check_t(t)
        return self._gamma(t)

    @accepts(t=_T, output="any", example=lambda ctx: _with_schedule(ctx, t=torch.rand(5, generator=ctx.generator, dtype=ctx.dtype)))  # +inf at t = 0
    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        """:math:`\\log(\\gamma/(1-\\gamma)) + 2\\log b` (``+inf`` where :math:`\\gamma = 1`), shape of ``t``."""
        _check_t(t)
        g = self._gamma(t.to(torch.float64))
        return (torch.log(g) - torch.log1p(-g) + 2 * math.log(self.input_scale)).to(t.dtype)

    @accepts(t=_T, example=lambda ctx: _with_schedule(ctx, t=0.05 + 0.9 * torch.rand(5, generator=ctx.generator, dtype=ctx.dtype)))
    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """The VE level :math:`\\sigma(t) = \\sqrt{(1-\\gamma)/\\gamma}/b` of the unscaled data, shape of ``t``."""
        _check_t(t)
        return self._sigma(t)

    @accepts(n=Int(ge=1), generator=Generator(), example=lambda ctx: _with_schedule(ctx, n=5))
    def sample_sigmas(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` training levels :math:`\\sigma(t)`, :math:`t \\sim U[0, 1)` (Algorithm 2), shape ``(n,)``."""
        return self(n, generator)

    @accepts(steps=Int(ge=1), example=lambda ctx: _with_schedule(ctx, steps=4), output="any")  # the first level is inf
    def sampling_sigmas(self, steps: int, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The sampling levels of Algorithm 3: :math:`\\sigma(t_i)` at :math:`t_i = 1 - i/\\text{steps}`,
        ``i = 0..steps`` (the last is :math:`\\gamma(0) = 1`, level 0): decreasing, shape ``(steps + 1,)``."""
        t = 1 - torch.arange(steps + 1, dtype=torch.float64) / steps
        return self._sigma(t).to(dtype)


def _unit_std(sigma: torch.Tensor, b: float) -> torch.Tensor:
    """:math:`\\sqrt{b^2\\gamma + 1 - \\gamma}` with :math:`\\gamma = 1/(1 + b^2\\sigma^2)`."""
    bs2 = (b * sigma).square()
    return ((b * b + bs2) / (1 + bs2)).sqrt()


def _paper_input(x: torch.Tensor, sigma: torch.Tensor, b: float, normalize) -> torch.Tensor:
    """The paper's network input from the VE state ``x`` (N, d) at levels ``sigma`` (N, 1)."""
    x_t = b * x * (1 + (b * sigma).square()).rsqrt()
    if normalize == "unit":
        return x_t / _unit_std(sigma, b)
    if normalize == "sample":
        return x_t / x_t.std(dim=-1, keepdim=True)
    return x_t


@accepts(x0=Tensor("N", "d"), eps=Tensor("N", "d"), gamma=Tensor("N", nonnegative=True), input_scale=Real(gt=0),
         normalize=Choice(*NORMALIZATIONS, optional=True),
         example=lambda ctx: {"x0": torch.randn(4, 3, generator=ctx.generator, dtype=ctx.dtype),
                              "eps": torch.randn(4, 3, generator=ctx.generator, dtype=ctx.dtype),
                              "gamma": torch.rand(4, generator=ctx.generator, dtype=ctx.dtype) * 0.8 + 0.1})
def noisy_input(x0: torch.Tensor, eps: torch.Tensor, gamma: torch.Tensor, input_scale: float = 1.0, *,
                normalize: str | None = "unit") -> torch.Tensor:
    """The paper's network input :math:`x_t = \\sqrt{\\gamma}\\, b\\, x_0 + \\sqrt{1-\\gamma}\\,\\varepsilon`
    (Algorithm 2), divided by its per-example standard deviation over the features (``"sample"``), by
    :math:`\\sqrt{b^2\\gamma + 1 - \\gamma}` (``"unit"``) or not at all (``None``).

    Args:
        x0: data ``(N, d)``; eps: noise ``(N, d)``; gamma: :math:`\\gamma(t)` per example ``(N,)``, in ``[0, 1]``;
        input_scale: :math:`b`.
    """
    if bool((gamma > 1).any()):
        raise ValueError(f"gamma must be <= 1 entrywise, got a maximum of {float(gamma.max())!r}")
    if normalize == "sample" and x0.shape[1] < 2:
        raise ValueError("normalize='sample' needs at least 2 features per example (d >= 2), got d = 1")
    g = gamma[:, None]
    x_t = g.sqrt() * input_scale * x0 + (1 - g).sqrt() * eps
    if normalize == "unit":
        return x_t / (input_scale**2 * g + 1 - g).sqrt()
    if normalize == "sample":
        return x_t / x_t.std(dim=-1, keepdim=True)
    return x_t


class ScaledInputNetwork(nn.Module):
    """An eps-prediction network trained and sampled with the paper's input scaling: it receives
    :math:`x_t = b x / \\sqrt{1 + b^2\\sigma^2}` of the VE state :math:`x = x_0 + \\sigma\\varepsilon`, normalized
    as ``normalize`` says, and the level ``sigma`` as its condition (any invertible function of :math:`t` is the
    same condition), and predicts :math:`\\varepsilon` (the same noise in both conventions).

    Args:
        network: ``network(x_t, sigma) -> eps`` on ``(N, d)`` states.
        input_scale: :math:`b`; train it with levels from a :class:`GammaSchedule` of the same ``input_scale``.
        normalize: ``"sample"``, ``"unit"`` or ``None`` (see :func:`noisy_input`).

    Its attributes ``prediction = "eps"`` and ``space = "ve"`` let
    :func:`~paperzoo.diffusion.training.train_denoiser` train it as is; ``denoiser()`` is the VE denoiser
    :math:`D(x, \\sigma) = x - \\sigma\\hat\\varepsilon` of the unscaled data.
    """

    @accepts(network=Module(), input_scale=Real(gt=0), normalize=Choice(*NORMALIZATIONS, optional=True),
             example=lambda ctx: {"network": nn.Linear(3, 3).to(ctx.dtype)}, output="any")
    def __init__(self, network: nn.Module, input_scale: float = 1.0, *, normalize: str | None = "unit"):
        super().__init__()
        self.network, self.input_scale, self.normalize = network, float(input_scale), normalize
        self.prediction, self.space = "eps", "ve"

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return self.network(_paper_input(x, s[:, None], self.input_scale, self.normalize), s)

    def denoiser(self):
        """The VE denoiser ``model(x, sigma)`` of this network (the samplers' model)."""
        return denoiser_from_prediction(self, "eps", space="ve")
