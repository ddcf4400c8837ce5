"""Cold diffusion: generation and restoration by inverting an arbitrary (even deterministic) degradation.

References: Cold Diffusion: Inverting Arbitrary Image Transforms Without Noise (Bansal et al.), 2023.

A degradation :math:`D(x_0, t)` at integer levels :math:`t = 0, \\dots, T` (:math:`D(x, 0) = x`, more degraded as
:math:`t` grows: blur, masking, interpolation towards noise or another image) is paired with a restoration network
:math:`R_\\theta(x_t, t) \\approx x_0`, trained (the paper's Eq. 1, L1 as in the official code) by

.. math::
    \\min_\\theta\\; E_{x_0,\\, t \\sim U\\{1..T\\}}\\; \\bigl\\| R_\\theta(D(x_0, t), t) - x_0 \\bigr\\|_1
    \\qquad (:func:`cold_loss`,\\ :func:`train_restoration`).

Sampling starts from :math:`x_T` (a degraded input, or for generation a draw of the fully degraded law) and steps
down the levels with :math:`\\hat x_0 = R(x_t, t)`:

.. math::
    \\text{Algorithm 1 (naive):}\\quad x_{t-1} = D(\\hat x_0, t-1), \\qquad
    \\text{Algorithm 2 (TACoS):}\\quad x_{t-1} = x_t - D(\\hat x_0, t) + D(\\hat x_0, t-1).

For a degradation whose first-order expansion is :math:`D(x, t) = x + t\\,e` (Section 3 of the paper) Algorithm 2
steps by :math:`-e` whatever :math:`R` returns, so it lands on :math:`x_0` exactly even with a wrong restorer, while
Algorithm 1 inherits every error of :math:`R`. With a perfect restorer (:math:`\\hat x_0 = x_0`) both are exact.
When the degradation is Gaussian noise, :math:`D(x_0, t) = \\sqrt{\\bar\\alpha_t}\\,x_0 + \\sqrt{1-\\bar\\alpha_t}\\,
\\varepsilon`, and the noise is re-estimated from the state, :math:`\\hat\\varepsilon = (x_t - \\sqrt{\\bar\\alpha_t}
\\hat x_0)/\\sqrt{1-\\bar\\alpha_t}` (:meth:`GaussianNoise.refit`), both algorithms are deterministic DDIM.

In paperzoo's sampler conventions the "levels" passed to the shared loop are the integer levels ``T, ..., 1, 0``
as floats (:func:`cold_levels`), the model is ``R(x, t)`` with ``t`` of shape ``(N,)``, and one step is
:func:`cold_step`. States are flat vectors ``(N, d)``; 8x8 images are flattened row-major.

Degradations here (:class:`Degradation` subclasses, each taking ``x0`` ``(N, d)`` and a level: a number, a 0-dim
tensor or ``(N,)`` integer-valued levels):

* :class:`GaussianBlur`: iterated circular Gaussian blurs, :math:`D(x, t) = G_t \\cdots G_1 x` with kernel std
  ``stds[t-1]`` (the official "Incremental" routine: ``blur_schedule``); ``to_mean=True`` makes the last level the
  mean image (the official ``discrete`` option, used for generation);
* :class:`Masking`: :math:`D(x, t) = x \\odot \\prod_{i \\le t} m_i` (inpainting / fading; ``gaussian_fade_masks``
  gives the paper's growing Gaussian hole);
* :class:`Interpolation`: :math:`\\sqrt{\\bar\\alpha_t}\\,x + \\sqrt{1-\\bar\\alpha_t}\\,z` towards a fixed ``z``
  (noise or another image: the paper's "animorphosis");
* :class:`GaussianNoise`: the same with fresh noise, re-estimated from the state during sampling (DDIM).

Example:
    >>> import torch
    >>> blur = GaussianBlur(blur_schedule(10, 0.1))
    >>> x0 = torch.randn(4, 64, dtype=torch.float64)
    >>> xT = blur(x0, 10)
    >>> oracle = lambda x, t: x0                      # a perfect restorer
    >>> out = sample_cold(oracle, xT, cold_levels(10), degradation=blur, algorithm="tacos")
    >>> bool(torch.allclose(out, x0))
    True
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from paperzoo.core.accepts import (Choice, Flag, Function, Generator, Instance, Int, Module, OneOf, Pair, Real, Tensor,
                                   accepts)
from paperzoo.diffusion.samplers import run_sampler

__all__ = ["Degradation", "GaussianBlur", "Masking", "Interpolation", "GaussianNoise", "blur_schedule",
           "gaussian_fade_masks", "cold_levels", "RestorationMLP", "cold_loss", "train_restoration", "cold_step",
           "sample_cold", "ALGORITHMS"]

#: the two samplers of the paper
ALGORITHMS = ("tacos", "naive")

_LEVEL = OneOf(Int(ge=0), Real(ge=0), Tensor(ndims=(0, 1), nonnegative=True, dtype="any"))
_SHAPE = Pair(Int(ge=1), meaning="(height, width)")


def _level_index(t, T: int, n: int, device) -> torch.Tensor:
    """Checked integer levels: a 0-dim or ``(n,)`` long tensor with entries in ``[0, T]``."""
    t = torch.as_tensor(t)
    if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != n):
        raise ValueError(f"t must be a number, a 0-dim tensor or have shape ({n},), got shape {tuple(t.shape)}")
    tf = t.double()
    if not bool(torch.isfinite(tf).all()) or bool((tf != tf.round()).any()):
        raise ValueError("t must hold integer levels")
    if bool((tf < 0).any()) or bool((tf > T).any()):
        raise ValueError(f"t must lie in [0, {T}] (the degradation's levels), got {tf.min().item():g} to "
                         f"{tf.max().item():g}")
    return tf.round().long().to(device)


def _index(t) -> torch.Tensor:
    """Unchecked levels (the sampling loop and training): float or int tensors to long indices."""
    return torch.as_tensor(t).round().long() if torch.as_tensor(t).is_floating_point() else torch.as_tensor(t).long()


class Degradation:
    """Base class of cold-diffusion degradations :math:`D(x_0, t)`, ``t = 0..levels``, with :math:`D(x, 0) = x`.

    Subclasses set ``levels`` (:math:`T`) and ``dim`` (:math:`d`, or ``None`` for any) and implement
    ``_apply(x0, t)`` for ``x0`` ``(N, d)`` and ``t`` a long tensor, 0-dim or ``(N,)`` (unchecked). ``refit``
    is the hook of degradations with a hidden state (the noise of :class:`GaussianNoise`): the samplers call
    ``degradation.refit(x_t, x0_hat, t)`` before each step.
    """

    levels: int
    dim: int | None = None

    def __call__(self, x0: torch.Tensor, t) -> torch.Tensor:
        """:math:`D(x_0, t)`: ``x0`` ``(N, d)``; ``t`` a number, 0-dim tensor or ``(N,)`` integer levels."""
        self._check_points(x0)
        return self._apply(x0, _level_index(t, self.levels, x0.shape[0], x0.device))

    def _check_points(self, x0) -> None:
        if not isinstance(x0, torch.Tensor) or not x0.is_floating_point():
            raise TypeError(f"x0 must be a floating torch.Tensor, got {type(x0).__name__}")
        if x0.dim() != 2 or x0.shape[0] == 0:
            raise ValueError(f"x0 must have shape (N, d) with N >= 1, got {tuple(x0.shape)}")
        if self.dim is not None and x0.shape[1] != self.dim:
            raise ValueError(f"x0 must have d = {self.dim} (the degradation's dimension), got shape "
                             f"{tuple(x0.shape)}")

    def _apply(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The training input :math:`D(x_0, t)` (unchecked; stochastic degradations draw from ``generator``)."""
        return self._apply(x0, t)

    def refit(self, x_t: torch.Tensor, x0_hat: torch.Tensor, t) -> "Degradation":
        """The degradation to use for the step from level ``t`` (deterministic degradations: itself)."""
        return self


# -- blur --------------------------------------------------------------------------------------------------------
def _circular_gaussian(n: int, std: float) -> torch.Tensor:
    """``(n, n)`` circular convolution with the wrapped, normalised Gaussian of ``std`` pixels."""
    offset = (torch.arange(n)[None, :] - torch.arange(n)[:, None]).remainder(n).double()
    wraps = torch.arange(-(int(4 * std / n) + 2), int(4 * std / n) + 3, dtype=torch.float64)
    w = torch.exp(-(offset[..., None] + n * wraps).square() / (2 * std**2)).sum(-1)
    return w / w.sum(-1, keepdim=True)


@accepts(T=Int(ge=1), base_std=Real(gt=0))
def blur_schedule(T: int, base_std: float = 0.1, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The official "Incremental" blur routine: the step-``i`` kernel std is ``base_std * i``, ``i = 1..T``
    (the official default ``kernel_std = 0.1``); shape ``(T,)``."""
    return (base_std * torch.arange(1, T + 1, dtype=torch.float64)).to(dtype)


class GaussianBlur(Degradation):
    """Iterated circular Gaussian blur, :math:`D(x, t) = G_t \\cdots G_1 x` on flattened ``image_shape`` images.

    Args:
        stds: ``(T,)`` positive kernel stds in pixels, one per step (:func:`blur_schedule`).
        image_shape: ``(height, width)``; ``d = height * width``, row-major.
        to_mean: replace the last level by the mean image (every pixel the image mean): the fully degraded law is
            then one number per image, from which the paper generates.

    The step kernels are full wrapped Gaussians (the official code uses ``kernel_size``-truncated ones with circular
    padding); each is a symmetric doubly stochastic circulant with eigenvalues in ``(0, 1]``, so the levels blur
    monotonically and preserve the image mean.
    """

    @accepts(stds=Tensor("T", nonnegative=True), image_shape=_SHAPE, to_mean=Flag(),
             example=lambda ctx: {"stds": blur_schedule(3, dtype=ctx.dtype), "image_shape": (3, 4)})
    def __init__(self, stds: torch.Tensor, *, image_shape: tuple[int, int] = (8, 8), to_mean: bool = False):
        if bool((stds <= 0).any()):
            raise ValueError(f"stds must be > 0 entrywise, got a minimum of {float(stds.min())!r}")
        h, w = int(image_shape[0]), int(image_shape[1])
        self.levels, self.dim, self.image_shape, self.to_mean = stds.shape[0], h * w, (h, w), to_mean
        ops = [torch.eye(h * w, dtype=torch.float64)]
        for s in stds.tolist():
            step = torch.kron(_circular_gaussian(h, s), _circular_gaussian(w, s))
            ops.append(step @ ops[-1])
        if to_mean:
            ops[-1] = torch.full((h * w, h * w), 1.0 / (h * w), dtype=torch.float64)
        self.operators = torch.stack(ops).to(stds.dtype)  # (T + 1, d, d), symmetric

    def __repr__(self) -> str:
        return f"GaussianBlur(levels={self.levels}, image_shape={self.image_shape}, to_mean={self.to_mean})"

    def _apply(self, x0, t):
        ops = self.operators.to(dtype=x0.dtype, device=x0.device)
        if t.dim() == 0:
            return x0 @ ops[t]
        return torch.einsum("nij,nj->ni", ops[t], x0)


# -- masking -----------------------------------------------------------------------------------------------------
@accepts(T=Int(ge=1), image_shape=_SHAPE, base_variance=Real(gt=0), center=Pair(Real(), optional=True))
def gaussian_fade_masks(T: int, image_shape: tuple[int, int] = (8, 8), base_variance: float = 1.0,
                        center: tuple[float, float] | None = None, *, dtype: torch.dtype = torch.float64
                        ) -> torch.Tensor:
    """Growing Gaussian holes: step ``i`` multiplies by :math:`1 - \\exp(-r^2/(2 i \\beta))` with :math:`r` the
    distance of a pixel to ``center`` (default the image centre) and :math:`\\beta` = ``base_variance``; shape
    ``(T, d)`` for :class:`Masking` (the paper's inpainting degradation, with a variance growing per step)."""
    h, w = int(image_shape[0]), int(image_shape[1])
    cy, cx = ((h - 1) / 2, (w - 1) / 2) if center is None else (float(center[0]), float(center[1]))
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    r2 = ((yy - cy).square() + (xx - cx).square()).reshape(-1)
    var = base_variance * torch.arange(1, T + 1, dtype=torch.float64)[:, None]
    return (1 - torch.exp(-r2 / (2 * var))).to(dtype)


class Masking(Degradation):
    """Multiplicative masking, :math:`D(x, t) = x \\odot \\prod_{i \\le t} m_i` (the masked part goes to 0).

    Args:
        masks: ``(T, d)`` step masks with entries in ``[0, 1]`` (:func:`gaussian_fade_masks`; a 0/1 mask per step
            removes pixels outright).
    """

    @accepts(masks=Tensor("T", "d", nonnegative=True),
             example=lambda ctx: {"masks": gaussian_fade_masks(3, (2, 3), dtype=ctx.dtype)})
    def __init__(self, masks: torch.Tensor):
        if bool((masks > 1).any()):
            raise ValueError(f"masks must have entries in [0, 1], got a maximum of {float(masks.max())!r}")
        self.levels, self.dim = masks.shape
        self.cumulative = torch.cat([torch.ones_like(masks[:1]), torch.cumprod(masks, 0)])  # (T + 1, d)

    def __repr__(self) -> str:
        return f"Masking(levels={self.levels}, dim={self.dim})"

    def _apply(self, x0, t):
        return x0 * self.cumulative.to(dtype=x0.dtype, device=x0.device)[t]


# -- interpolation / noise ---------------------------------------------------------------------------------------
def _check_alphas(alphas_cumprod: torch.Tensor) -> None:
    a = alphas_cumprod
    if bool((a > 1).any()) or bool((a[1:] > a[:-1]).any()):
        raise ValueError("alphas_cumprod must be nonincreasing values in [0, 1]")


class Interpolation(Degradation):
    """Interpolation towards a fixed ``target`` :math:`z`: :math:`D(x, t) = \\sqrt{\\bar\\alpha_t}\\,x +
    \\sqrt{1 - \\bar\\alpha_t}\\,z` with :math:`\\bar\\alpha_0 = 1`.

    Args:
        alphas_cumprod: ``(T,)`` nonincreasing in ``[0, 1]``, :math:`\\bar\\alpha_1..\\bar\\alpha_T` (e.g. the
            cosine schedule of the official demixing code, through
            :func:`~paperzoo.diffusion.schedules.alphas_cumprod_from_betas`).
        target: :math:`z`, ``(d,)`` (one image for all) or ``(N, d)`` (one per sample: fixed noise, another image).
    """

    @accepts(alphas_cumprod=Tensor("T", nonnegative=True), target=Tensor(ndims=(1, 2)),
             example=lambda ctx: {"alphas_cumprod": torch.linspace(0.9, 0.1, 4, dtype=ctx.dtype),
                                  "target": torch.randn(3, generator=ctx.generator, dtype=ctx.dtype)})
    def __init__(self, alphas_cumprod: torch.Tensor, target: torch.Tensor):
        _check_alphas(alphas_cumprod)
        self.levels, self.dim = alphas_cumprod.shape[0], target.shape[-1]
        self.alphas_cumprod = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod])  # (T + 1,)
        self.target = target

    def __repr__(self) -> str:
        return f"Interpolation(levels={self.levels}, dim={self.dim}, target shape {tuple(self.target.shape)})"

    def _check_points(self, x0) -> None:
        super()._check_points(x0)
        if self.target.dim() == 2 and self.target.shape[0] != x0.shape[0]:
            raise ValueError(f"x0 must have N = {self.target.shape[0]} (the target's rows), got shape "
                             f"{tuple(x0.shape)}")
        if self.target.dtype != x0.dtype:
            raise TypeError(f"x0 must have the target's dtype ({self.target.dtype}), got {x0.dtype}")

    def _coefficients(self, x0, t):
        a = self.alphas_cumprod.to(dtype=x0.dtype, device=x0.device)[t]
        a = a[:, None] if a.dim() == 1 else a
        return a.sqrt(), (1 - a).clamp_min(0).sqrt()

    def _apply(self, x0, t):
        signal, mix = self._coefficients(x0, t)
        return signal * x0 + mix * self.target


class GaussianNoise(Interpolation):
    """The noise degradation :math:`D(x_0, t) = \\sqrt{\\bar\\alpha_t}\\,x_0 + \\sqrt{1-\\bar\\alpha_t}\\,
    \\varepsilon` (variance-preserving states), with :math:`\\varepsilon` drawn fresh for training
    (:meth:`sample`) and, during sampling, re-estimated from the state by :meth:`refit`:
    :math:`\\hat\\varepsilon = (x_t - \\sqrt{\\bar\\alpha_t}\\hat x_0)/\\sqrt{1-\\bar\\alpha_t}`. Cold sampling with
    it is deterministic DDIM (both algorithms coincide). ``alphas_cumprod`` as in :class:`Interpolation`, with
    :math:`\\bar\\alpha_t < 1` for ``t >= 1``. Calling it gives :math:`D` with the noise ``noise`` ``(N, d)``
    (drawn from ``generator`` when omitted)."""

    @accepts(alphas_cumprod=Tensor("T", nonnegative=True),
             example=lambda ctx: {"alphas_cumprod": torch.linspace(0.9, 0.1, 4, dtype=ctx.dtype)})
    def __init__(self, alphas_cumprod: torch.Tensor):
        _check_alphas(alphas_cumprod)
        if bool((alphas_cumprod >= 1).any()):
            raise ValueError("alphas_cumprod must be < 1 at every level t >= 1 (the noise must be identifiable)")
        self.levels, self.dim = alphas_cumprod.shape[0], None
        self.alphas_cumprod = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod])
        self.target = None

    def __repr__(self) -> str:
        return f"GaussianNoise(levels={self.levels})"

    def __call__(self, x0: torch.Tensor, t, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        self._check_points(x0)
        idx = _level_index(t, self.levels, x0.shape[0], x0.device)
        if noise is not None and (not isinstance(noise, torch.Tensor) or noise.shape != x0.shape):
            got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
            raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {got}")
        return self._noised(x0, idx, noise, generator)

    def _check_points(self, x0) -> None:
        Degradation._check_points(self, x0)

    def _noised(self, x0, t, noise, generator):
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        signal, mix = self._coefficients(x0, t)
        return signal * x0 + mix * noise

    def sample(self, x0, t, generator=None):
        return self._noised(x0, t, None, generator)

    def _apply(self, x0, t):
        raise ValueError("GaussianNoise needs its noise: call it with noise=..., or refit it to a state first")

    def refit(self, x_t, x0_hat, t):
        """An :class:`Interpolation` towards the noise implied by ``x_t`` and ``x0_hat`` at level ``t >= 1``."""
        signal, mix = self._coefficients(x_t, _index(t))
        fitted = copy.copy(self)
        fitted.__class__ = Interpolation
        fitted.target = (x_t - signal * x0_hat) / mix
        fitted.dim = x_t.shape[-1]
        return fitted


@accepts(T=Int(ge=1), stride=Int(ge=1))
def cold_levels(T: int, stride: int = 1, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The sampling levels ``T, T - stride, ..., 0`` (always ending at 0) as floats for the shared loop:
    ``stride = 1`` is the paper's full chain."""
    t = list(range(T, 0, -stride)) + [0]
    return torch.tensor(t, dtype=dtype)


# -- restoration network and training ----------------------------------------------------------------------------
class RestorationMLP(nn.Module):
    """A small MLP restorer :math:`R_\\theta(x_t, t)` for flat vectors, conditioned on :math:`t/T` by Fourier
    features; ``residual=True`` predicts :math:`x_t + F_\\theta` (the official U-Net's ``residual`` option).

    Args:
        dim: :math:`d`; levels: :math:`T`; hidden, depth: width and number of hidden layers; n_frequencies:
            Fourier features of :math:`t/T`.

    Called as ``net(x, t)`` with ``x`` ``(N, d)`` and ``t`` a number or ``(N,)``: the model the samplers take.
    """

    @accepts(dim=Int(ge=1), levels=Int(ge=1), hidden=Int(ge=1), depth=Int(ge=1), n_frequencies=Int(ge=1),
             residual=Flag(), example=lambda ctx: {"dim": 4, "levels": 5})
    def __init__(self, dim: int, levels: int, hidden: int = 128, depth: int = 3, *, n_frequencies: int = 8,
                 residual: bool = False):
        super().__init__()
        self.dim, self.levels, self.residual = dim, levels, residual
        self.register_buffer("frequencies", torch.arange(1, n_frequencies + 1, dtype=torch.float32) * math.pi)
        layers, width = [], dim + 2 * n_frequencies
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        s = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0]) / self.levels
        c = s[:, None] * self.frequencies.to(x.dtype)
        out = self.net(torch.cat([x, torch.sin(c), torch.cos(c)], dim=-1))
        return x + out if self.residual else out


def _example_loss(ctx):
    return {"network": RestorationMLP(4, 3, 8, 1).to(ctx.dtype),
            "x0": torch.randn(5, 4, generator=ctx.generator, dtype=ctx.dtype),
            "t": torch.tensor([1, 2, 3, 1, 2]),
            "degradation": Masking(gaussian_fade_masks(3, (2, 2), dtype=ctx.dtype))}


@accepts(network=Module(), x0=Tensor("N", "d", degenerate=("coincident",)), t=Tensor("N", dtype="int"),
         degradation=Instance(Degradation, what="cold-diffusion Degradation"), p=Choice(1, 2),
         generator=Generator(), example=_example_loss)
def cold_loss(network: nn.Module, x0: torch.Tensor, t: torch.Tensor, degradation: Degradation, *, p: int = 1,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """The restoration loss :math:`\\frac1N\\sum_i \\frac1d \\|R(D(x_{0,i}, t_i), t_i) - x_{0,i}\\|_p^p` (``p = 1``,
    the paper's and official code's L1; ``p = 2`` its L2 option), a 0-dim tensor with its graph. ``x0`` ``(N, d)``;
    ``t`` ``(N,)`` integer levels in ``[1, T]``; ``generator`` draws the noise of stochastic degradations."""
    degradation._check_points(x0)
    idx = _level_index(t, degradation.levels, x0.shape[0], x0.device)
    if bool((idx < 1).any()):
        raise ValueError("t must be >= 1 (level 0 is the clean data)")
    return _cold_loss(network, x0, idx, degradation, p, generator)


def _cold_loss(network, x0, t, degradation, p=1, generator=None):
    with torch.no_grad():
        x_t = degradation.sample(x0, t, generator)
    err = network(x_t, t.to(x0.dtype)) - x0
    return (err.abs() if p == 1 else err.square()).mean()


def _example_train(ctx):
    kw = _example_loss(ctx)
    return {"network": kw["network"], "degradation": kw["degradation"],
            "sample_data": lambda n, g: torch.randn(n, 4, generator=g, dtype=ctx.dtype), "steps": 3,
            "batch_size": 8}


@accepts(network=Module(), sample_data=Function(), degradation=Instance(Degradation, what="cold-diffusion Degradation"),
         steps=Int(ge=0), batch_size=Int(ge=1), lr=Real(gt=0), p=Choice(1, 2), generator=Generator(),
         callback=Function(optional=True), example=_example_train)
def train_restoration(network: nn.Module, sample_data: Callable[[int, torch.Generator], torch.Tensor],
                      degradation: Degradation, *, steps: int, batch_size: int = 256, lr: float = 1e-3, p: int = 1,
                      generator: torch.Generator | None = None, callback: Callable | None = None) -> torch.Tensor:
    """Adam on :func:`cold_loss` with fresh data and levels :math:`t \\sim U\\{1..T\\}` each step (the official
    training); returns the loss history ``(steps,)``. ``sample_data(n, generator) -> (n, d)``;
    ``callback(step, network, loss)`` after each step (``step`` from 1), as in ``train_denoiser``."""
    opt = torch.optim.Adam(network.parameters(), lr=lr)
    history = torch.empty(steps, dtype=torch.float64)
    for step in range(steps):
        x0 = sample_data(batch_size, generator)
        t = torch.randint(1, degradation.levels + 1, (batch_size,), generator=generator)
        loss = _cold_loss(network, x0, t, degradation, p, generator)
        if not bool(torch.isfinite(loss.detach())):
            raise FloatingPointError(f"train_restoration: the loss is {float(loss.detach())} at step {step}; "
                                     "lower lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history[step] = float(loss.detach())
        if callback is not None:
            callback(step + 1, network, float(history[step]))
    return history


# -- sampling ----------------------------------------------------------------------------------------------------
@accepts(degradation=Instance(Degradation, what="cold-diffusion Degradation"), algorithm=Choice(*ALGORITHMS),
         output="any", example=lambda ctx: {"degradation": _example_loss(ctx)["degradation"]})
def cold_step(degradation: Degradation, algorithm: str = "tacos"):
    """The step of Algorithm 2 (``"tacos"``: :math:`x_t - D(\\hat x_0, t) + D(\\hat x_0, t')`) or Algorithm 1
    (``"naive"``: :math:`D(\\hat x_0, t')`) from level ``t`` to the next level ``t'``, for ``run_sampler``."""
    naive = algorithm == "naive"

    def step(x, sigma, sigma_next, denoised, ctx):
        t, t_next = _index(sigma), _index(sigma_next)
        D = degradation.refit(x, denoised, t)
        if naive:
            return D._apply(denoised, t_next)
        return x - D._apply(denoised, t) + D._apply(denoised, t_next)

    step.algorithm = algorithm
    return step


def _example_sample(ctx):
    blur = GaussianBlur(blur_schedule(3, dtype=ctx.dtype), image_shape=(2, 2))
    x0 = torch.randn(4, 4, generator=ctx.generator, dtype=ctx.dtype)
    return {"model": lambda x, t: x, "x": blur(x0, 3), "levels": cold_levels(3, dtype=ctx.dtype),
            "degradation": blur}


@accepts(model=Function(), x=Tensor("N", "d"), levels=Tensor("n", nonnegative=True),
         degradation=Instance(Degradation, what="cold-diffusion Degradation"), algorithm=Choice(*ALGORITHMS),
         generator=Generator(), callback=Function(optional=True), progress=Flag(), example=_example_sample)
def sample_cold(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, levels: torch.Tensor,
                *, degradation: Degradation, algorithm: str = "tacos", generator: torch.Generator | None = None,
                callback=None, progress: bool = False) -> torch.Tensor:
    """Cold-diffusion sampling (the paper's Algorithm 2, TACoS, or with ``algorithm="naive"`` Algorithm 1).

    Args:
        model: the restorer ``R(x, t) -> x0_hat`` with ``x`` ``(N, d)`` and ``t`` ``(N,)`` float levels.
        x: the start :math:`x_T` ``(N, d)``, at level ``levels[0]``: a degraded input (restoration) or a draw of
            the fully degraded law (generation).
        levels: decreasing integer levels ``(n,)`` from :func:`cold_levels`, ``levels[0] <= T``, usually ending
            at 0.
        degradation: :math:`D` (a :class:`Degradation`).

    One restorer evaluation per step; ``generator`` is unused (both algorithms are deterministic) and kept for
    the shared signature. Returns the state at ``levels[-1]``, ``(N, d)``.
    """
    degradation._check_points(x)
    if bool((levels != levels.round()).any()):
        raise ValueError("levels must hold integer levels")
    if float(levels[0]) > degradation.levels:
        raise ValueError(f"levels must start at or below the degradation's last level {degradation.levels}, got "
                         f"{float(levels[0]):g}")
    return run_sampler(model, x, levels, cold_step(degradation, algorithm), generator=generator, callback=callback,
                       progress=progress)
