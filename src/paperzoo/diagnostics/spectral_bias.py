"""Spectral-bias measurements for coordinate MLPs: per-frequency residuals, activation regions, Fourier features.

References: Understanding the Spectral Bias of Coordinate Based MLPs Via Training Dynamics (Lazzari, Liu), 2023.

A ReLU MLP :math:`f_\\theta` fed low-dimensional coordinates fits a target's low frequencies first and, in one
dimension, can stall on the high ones altogether; the paper ties this to the network's activation regions (the
input intervals on which every ReLU keeps its on/off state, so that :math:`f_\\theta` is affine there): few regions
along a dense 1-D input, shared by many nearby coordinates, and a sinusoidal positional encoding multiplies them.
The measurements here:

* :func:`frequency_residuals`: on a uniform grid :math:`x_j = x_0 + j h`, :math:`j = 0..n-1`, of period
  :math:`T = n h`, the residual :math:`r_j = y(x_j) - f_\\theta(x_j)` has the discrete Fourier coefficients
  :math:`\\hat r_m = \\sum_j r_j e^{-2\\pi i m j / n}`; the amplitude of the sinusoid of frequency :math:`k`
  (cycles per unit of :math:`x`, bin :math:`m = k T`) is :math:`A_k(r) = 2 |\\hat r_m| / n` (:math:`|\\hat r_0|/n`
  at :math:`k = 0`), exact for :math:`a \\sin(2\\pi k x + \\phi)` with :math:`0 < kT < n/2` an integer. Reported with
  the target's own amplitudes :math:`A_k(y)` and the ratio :math:`A_k(r) / A_k(y)` (1: not learned, 0: fitted).
* :func:`count_activation_regions_1d`: forward hooks on every ``nn.ReLU`` submodule record the sign of its input
  (pre-activation :math:`> 0`) for a dense sorted 1-D grid in one batched forward pass; the number of regions is
  one plus the number of consecutive grid points whose joint sign pattern differs (a lower bound on the true count
  that becomes exact once the grid resolves every region).
* :func:`fourier_features` and the module :class:`FourierFeatures`: the positional encoding
  :math:`\\gamma(x) = [x, \\sin(2^0 \\pi x), \\cos(2^0 \\pi x), \\dots, \\sin(2^{L-1} \\pi x), \\cos(2^{L-1} \\pi x)]`
  applied to every coordinate.
* :func:`coordinate_mlp`: a ReLU MLP with optional encoding in front; :class:`SpectralBiasTracker`: the training-loop
  callback recording :func:`frequency_residuals` (and optionally the region count) over steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from paperzoo.core.accepts import Flag, Function, Int, Ints, Module, Tensor, accepts

__all__ = ["fourier_features", "FourierFeatures", "coordinate_mlp", "frequency_residuals", "FrequencyResiduals",
           "count_activation_regions_1d", "ActivationRegions", "SpectralBiasTracker", "SpectralBiasTrace"]


# -- positional encoding ---------------------------------------------------------------------------------------

def _fourier_features(x: torch.Tensor, L: int, include_input: bool) -> torch.Tensor:
    scales = math.pi * 2.0 ** torch.arange(L, dtype=x.dtype, device=x.device)          # (L,)
    arg = x.unsqueeze(-1) * scales                                                      # (n, d, L)
    enc = torch.stack((torch.sin(arg), torch.cos(arg)), dim=-1).flatten(-2)             # (n, d, 2L)
    if include_input:
        enc = torch.cat((x.unsqueeze(-1), enc), dim=-1)
    return enc.flatten(-2)


def _example_ff(ctx):
    return {"x": torch.rand(5, 2, generator=ctx.generator, dtype=ctx.dtype), "L": 3}


@accepts(x=Tensor("n", "d"), L=Int(ge=0), include_input=Flag(), example=_example_ff)
def fourier_features(x: torch.Tensor, L: int, *, include_input: bool = True) -> torch.Tensor:
    """The sinusoidal positional encoding :math:`\\gamma(x)` of coordinates.

    References: Understanding the Spectral Bias of Coordinate Based MLPs Via Training Dynamics (Lazzari, Liu), 2023.

    Per coordinate :math:`x_c`: :math:`[x_c, \\sin(2^l \\pi x_c), \\cos(2^l \\pi x_c)]_{l=0}^{L-1}` (the leading
    :math:`x_c` only with ``include_input``), concatenated over the ``d`` coordinates in order.

    Args:
        x: coordinates, shape ``(n, d)``.
        L: number of octaves, ``>= 0`` (``L = 0`` with ``include_input`` is the identity).
        include_input: keep the raw coordinate in front of its encoding.

    Returns:
        Shape ``(n, d (2L + include_input))``.

    Example:
        >>> import torch
        >>> fourier_features(torch.tensor([[0.5]]), 2).tolist()   # [x, sin(pi/2), cos(pi/2), sin(pi), cos(pi)]
        [[0.5, 1.0, 0.0, 0.0, -1.0]]
    """
    if L == 0 and not include_input:
        raise ValueError("L must be >= 1 when include_input is False, got 0 (the encoding would be empty)")
    out = _fourier_features(x, L, include_input)
    # exact zeros where the closed form has them, so that the example reads cleanly in float32 and float64
    return torch.where(out.abs() < 4 * torch.finfo(x.dtype).eps, torch.zeros_like(out), out)


class FourierFeatures(nn.Module):
    """:func:`fourier_features` as a layer (no parameters), to put in front of a coordinate MLP."""

    @accepts(L=Int(ge=0), include_input=Flag())
    def __init__(self, L: int, *, include_input: bool = True):
        super().__init__()
        if L == 0 and not include_input:
            raise ValueError("L must be >= 1 when include_input is False, got 0 (the encoding would be empty)")
        self.L, self.include_input = L, include_input

    def out_features(self, in_features: int) -> int:
        return in_features * (2 * self.L + int(self.include_input))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _fourier_features(x, self.L, self.include_input)

    def extra_repr(self) -> str:
        return f"L={self.L}, include_input={self.include_input}"


@accepts(in_features=Int(ge=1), width=Int(ge=1), depth=Int(ge=1), L=Int(ge=0), out_features=Int(ge=1))
def coordinate_mlp(in_features: int = 1, width: int = 128, depth: int = 4, *, L: int = 0,
                   out_features: int = 1) -> nn.Sequential:
    """A coordinate ReLU MLP, with the positional encoding :class:`FourierFeatures` (``L`` octaves) when ``L > 0``.

    References: Understanding the Spectral Bias of Coordinate Based MLPs Via Training Dynamics (Lazzari, Liu), 2023.

    ``depth`` hidden layers of ``width`` units, each ``Linear`` then ``ReLU``, then a ``Linear`` readout; PyTorch's
    default initialisation (seed with ``torch.manual_seed``). Input shape ``(n, in_features)``.

    Example:
        >>> net = coordinate_mlp(1, 8, 2, L=3)
        >>> net(torch.zeros(4, 1)).shape
        torch.Size([4, 1])
    """
    layers: list[nn.Module] = []
    d = in_features
    if L > 0:
        enc = FourierFeatures(L)
        layers.append(enc)
        d = enc.out_features(in_features)
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    layers.append(nn.Linear(d, out_features))
    return nn.Sequential(*layers)


# -- per-frequency residuals -----------------------------------------------------------------------------------

class FrequencyResiduals(NamedTuple):
    """Per-frequency amplitudes (``K`` frequencies).

    Attributes:
        freqs: the frequencies, cycles per unit of ``x``, shape ``(K,)`` (float).
        residual: :math:`A_k(y - f)`, shape ``(K,)``.
        target: :math:`A_k(y)`, shape ``(K,)``.
        relative: ``residual / target``, NaN where the target has no such component (``target <= 1000 eps`` times the
            largest ``target``), shape ``(K,)``.
        mse: the mean squared residual on the grid (a 0-d tensor).
    """

    freqs: torch.Tensor
    residual: torch.Tensor
    target: torch.Tensor
    relative: torch.Tensor
    mse: torch.Tensor


def _grid_bins(xs: torch.Tensor, freqs: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check that ``xs`` (n,) is a uniform ascending grid and map ``freqs`` to integer DFT bins."""
    n = xs.shape[0]
    if n < 4:
        raise ValueError(f"xs must have at least 4 grid points, got {n}")
    steps = xs[1:] - xs[:-1]
    h = float(steps.mean())
    tol = 1e-9 if xs.dtype == torch.float64 else 1e-4
    if h <= 0 or float((steps - h).abs().max()) > tol * max(1.0, float(xs.abs().max())):
        raise ValueError("xs must be a uniform ascending grid (x_j = x_0 + j h), got unequal spacings "
                         f"(min {float(steps.min())!r}, max {float(steps.max())!r})")
    period = n * h
    f = torch.as_tensor(freqs, dtype=torch.float64).reshape(-1)
    if f.numel() == 0:
        raise ValueError("freqs must name at least one frequency, got an empty sequence")
    bins = f * period
    if bool((bins - bins.round()).abs().max() > 1e-6) or bool((bins < 0).any()):
        raise ValueError(f"freqs must be >= 0 multiples of 1/T (T = n h = {period:.6g}, the grid's period), got "
                         f"{f.tolist()}")
    bins = bins.round().long()
    if int(bins.max()) >= (n + 1) // 2:
        raise ValueError(f"freqs must lie below the Nyquist frequency n / (2T) = {n / (2 * period):.6g}, got "
                         f"{float(f.max())!r}")
    return f, bins


def _amplitudes(r: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    n = r.shape[0]
    coef = torch.fft.rfft(r).abs()[bins] / n
    return torch.where(bins == 0, coef, 2.0 * coef)


def _frequency_residuals(model, xs, target_fn, f, bins) -> FrequencyResiduals:
    with torch.no_grad():
        y = target_fn(xs).reshape(-1)
        pred = model(xs.unsqueeze(-1)).reshape(-1)
    if y.shape != pred.shape:
        raise ValueError(f"target_fn must return one value per grid point ({xs.shape[0]}), got {y.numel()}")
    r = y - pred
    res, tgt = _amplitudes(r, bins), _amplitudes(y, bins)
    scale = float(tgt.abs().max()) if tgt.numel() else 0.0
    # a component below rounding level of the largest one counts as absent
    floor = 1000 * torch.finfo(xs.dtype).eps * max(scale, torch.finfo(xs.dtype).tiny)
    rel = torch.where(tgt > floor, res / tgt, torch.full_like(res, math.nan))
    return FrequencyResiduals(f.to(xs.dtype), res, tgt, rel, (r ** 2).mean())


def _example_fr(ctx):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 4), nn.ReLU(), nn.Linear(4, 1)).to(ctx.dtype)
    xs = torch.arange(16, dtype=ctx.dtype) / 16
    return {"model": model, "xs": xs, "target_fn": lambda x: torch.sin(2 * math.pi * x), "freqs": [1, 3]}


@accepts(model=Module(bind_dtype=True), xs=Tensor("n"), target_fn=Function(), freqs=Ints(ge=0, min_length=1),
         example=_example_fr, output="any")
def frequency_residuals(model: nn.Module, xs: torch.Tensor, target_fn: Callable[[torch.Tensor], torch.Tensor],
                        freqs: Sequence[int]) -> FrequencyResiduals:
    """The residual amplitude of a 1-D coordinate model at each of ``freqs`` (DFT on a uniform grid).

    References: Understanding the Spectral Bias of Coordinate Based MLPs Via Training Dynamics (Lazzari, Liu), 2023.

    :math:`A_k(y - f_\\theta)` and :math:`A_k(y)` as in the module docstring, :math:`y` = ``target_fn``,
    :math:`f_\\theta` = ``model`` (called on ``xs[:, None]``, no gradients). For the amplitudes to be exact the
    grid should span whole periods of the target: ``xs = torch.arange(n) / n`` on :math:`[0, 1)`.

    Args:
        model: maps shape ``(n, 1)`` to ``(n, 1)`` or ``(n,)``.
        xs: uniform ascending grid, shape ``(n,)``, ``n >= 4``.
        target_fn: ``(n,) -> (n,)`` (or ``(n, 1)``), the signal being fitted.
        freqs: integer frequencies (cycles per unit of ``x``), each a whole number of cycles over the grid's period
            :math:`T = n h` and below Nyquist.

    Returns:
        :class:`FrequencyResiduals`.

    Example:
        >>> import math, torch
        >>> zero = torch.nn.Linear(1, 1); _ = torch.nn.init.zeros_(zero.weight); _ = torch.nn.init.zeros_(zero.bias)
        >>> xs = torch.arange(64) / 64
        >>> out = frequency_residuals(zero, xs, lambda x: torch.sin(2 * math.pi * x) + 0.5 * torch.sin(10 * math.pi * x), [1, 5, 9])
        >>> [round(float(a), 4) for a in out.residual]
        [1.0, 0.5, 0.0]
    """
    f, bins = _grid_bins(xs, freqs)
    return _frequency_residuals(model, xs, target_fn, f, bins)


# -- activation regions ----------------------------------------------------------------------------------------

class ActivationRegions(NamedTuple):
    """Activation regions of a ReLU network along a 1-D grid.

    Attributes:
        n_regions: contiguous runs of equal joint ReLU sign pattern along the grid (linear pieces).
        n_patterns: distinct joint patterns (``<= n_regions``; equal for one hidden layer).
        boundaries: midpoints between consecutive grid points where the pattern changes, shape ``(n_regions - 1,)``.
        n_units: number of ReLU units hooked.
    """

    n_regions: int
    n_patterns: int
    boundaries: torch.Tensor
    n_units: int


def _relu_patterns(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Joint sign pattern (pre-activation > 0) of every ``nn.ReLU`` submodule, shape ``(n, units)``."""
    records: list[torch.Tensor] = []

    def hook(_module, args):
        records.append((args[0] > 0).reshape(args[0].shape[0], -1))

    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError("model must contain at least one torch.nn.ReLU submodule (activation regions are read from "
                         "their inputs; functional relu calls are not seen)")
    handles = [m.register_forward_pre_hook(hook) for m in relus]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat(records, dim=1)


def _count_regions(model: nn.Module, xs: torch.Tensor) -> ActivationRegions:
    pat = _relu_patterns(model, xs.unsqueeze(-1))
    change = (pat[1:] != pat[:-1]).any(dim=1)
    boundaries = 0.5 * (xs[1:] + xs[:-1])[change]
    n_patterns = int(torch.unique(pat, dim=0).shape[0])
    return ActivationRegions(int(change.sum()) + 1, n_patterns, boundaries, int(pat.shape[1]))


def _example_regions(ctx):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 4), nn.ReLU(), nn.Linear(4, 1)).to(ctx.dtype)
    return {"model": model, "xs": torch.linspace(-2, 2, 50, dtype=ctx.dtype)}


@accepts(model=Module(bind_dtype=True), xs=Tensor("n"), example=_example_regions, output="any")
def count_activation_regions_1d(model: nn.Module, xs: torch.Tensor) -> ActivationRegions:
    """The number of ReLU activation regions a 1-D coordinate network has along a dense grid.

    References: Understanding the Spectral Bias of Coordinate Based MLPs Via Training Dynamics (Lazzari, Liu), 2023.

    One batched forward pass of ``xs[:, None]``; pre-hooks on every ``nn.ReLU`` read the sign pattern
    :math:`s(x) \\in \\{0, 1\\}^{U}` (:math:`U` units, pre-activation :math:`> 0` is on); the count is
    :math:`1 + \\#\\{j : s(x_{j+1}) \\ne s(x_j)\\}`. A region narrower than the grid spacing may be missed, so the
    count is a lower bound that is exact on a fine enough grid. The encoding of :class:`FourierFeatures` (if any)
    sits inside ``model``, so the regions are those of the input coordinate.

    Args:
        model: maps ``(n, 1)`` inputs; contains ``nn.ReLU`` modules.
        xs: ascending 1-D grid, shape ``(n,)``, ``n >= 2``.

    Returns:
        :class:`ActivationRegions`.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(1, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.copy_(torch.tensor([[1.0], [1.0]])); _ = net[0].bias.copy_(torch.tensor([-0.25, -0.5]))
        >>> count_activation_regions_1d(net, torch.linspace(0, 1, 101)).n_regions   # breakpoints 0.25 and 0.5
        3
    """
    if xs.shape[0] < 2:
        raise ValueError(f"xs must have at least 2 grid points, got {xs.shape[0]}")
    if bool((xs[1:] <= xs[:-1]).any()):
        raise ValueError("xs must be strictly ascending")
    return _count_regions(model, xs)


# -- training tracker ------------------------------------------------------------------------------------------

class SpectralBiasTrace(NamedTuple):
    """What :class:`SpectralBiasTracker` recorded over ``T`` checkpoints and ``K`` frequencies.

    Attributes:
        steps: shape ``(T,)`` (int64).
        freqs: shape ``(K,)``.
        residual: :math:`A_k(y - f_t)`, shape ``(T, K)``.
        relative: ``residual / target``, shape ``(T, K)``.
        target: :math:`A_k(y)`, shape ``(K,)``.
        mse: shape ``(T,)``.
        regions: activation-region counts, shape ``(T,)`` (int64), or ``None`` when not tracked.
    """

    steps: torch.Tensor
    freqs: torch.Tensor
    residual: torch.Tensor
    relative: torch.Tensor
    target: torch.Tensor
    mse: torch.Tensor
    regions: torch.Tensor | None

    def first_below(self, threshold: float) -> torch.Tensor:
        """Per frequency, the first recorded step whose relative residual is below ``threshold`` (-1: never)."""
        hit = self.relative < threshold
        idx = hit.int().argmax(dim=0)
        return torch.where(hit.any(dim=0), self.steps[idx], torch.full_like(idx, -1))


def _example_tracker(ctx):
    return {**_example_fr(ctx), "every": 2}


class SpectralBiasTracker:
    """Training-loop callback recording :func:`frequency_residuals` (and the region count) every ``every`` steps.

    References: Understanding the Spectral Bias of Coordinate Based MLPs Via Training Dynamics (Lazzari, Liu), 2023.

    Call ``tracker(step)`` after each optimisation step (it records when ``step % every == 0``) or
    ``tracker.record(step)`` to force one; :meth:`result` stacks the records into a :class:`SpectralBiasTrace`.
    The grid and frequencies are validated once here; the per-step work is the unchecked kernels.

    Args:
        model, xs, target_fn, freqs: as :func:`frequency_residuals` (``xs`` a uniform grid, typically held out).
        every: recording interval in steps, ``>= 1``.
        region_xs: optional ascending grid for :func:`count_activation_regions_1d` at each record.

    Example:
        >>> import math, torch
        >>> _ = torch.manual_seed(0); net = coordinate_mlp(1, 16, 2)
        >>> xs = torch.arange(32) / 32
        >>> tr = SpectralBiasTracker(net, xs, lambda x: torch.sin(2 * math.pi * x), [1, 4], every=5)
        >>> tr(0), tr(3)
        (True, False)
        >>> tr.result().residual.shape
        torch.Size([1, 2])
    """

    @accepts(model=Module(bind_dtype=True), xs=Tensor("n"), target_fn=Function(), freqs=Ints(ge=0, min_length=1),
             every=Int(ge=1), region_xs=Tensor("m", optional=True), example=_example_tracker, output="any")
    def __init__(self, model: nn.Module, xs: torch.Tensor, target_fn: Callable[[torch.Tensor], torch.Tensor],
                 freqs: Sequence[int], *, every: int = 1, region_xs: torch.Tensor | None = None):
        self.f, self.bins = _grid_bins(xs, freqs)
        if region_xs is not None:
            if region_xs.shape[0] < 2 or bool((region_xs[1:] <= region_xs[:-1]).any()):
                raise ValueError("region_xs must be a strictly ascending grid of at least 2 points")
            _relu_patterns(model, region_xs[:2].unsqueeze(-1))  # fails early without ReLU modules
        self.model, self.xs, self.target_fn, self.every, self.region_xs = model, xs, target_fn, every, region_xs
        self._records: list[tuple[int, FrequencyResiduals, int | None]] = []

    def __call__(self, step: int) -> bool:
        if step % self.every:
            return False
        self.record(step)
        return True

    def record(self, step: int) -> None:
        fr = _frequency_residuals(self.model, self.xs, self.target_fn, self.f, self.bins)
        regions = None if self.region_xs is None else _count_regions(self.model, self.region_xs).n_regions
        self._records.append((int(step), fr, regions))

    def __len__(self) -> int:
        return len(self._records)

    def result(self) -> SpectralBiasTrace:
        if not self._records:
            raise ValueError("the tracker has no records yet: call it (or record) at least once")
        steps = torch.tensor([s for s, _, _ in self._records], dtype=torch.int64)
        res = torch.stack([fr.residual for _, fr, _ in self._records])
        rel = torch.stack([fr.relative for _, fr, _ in self._records])
        mse = torch.stack([fr.mse for _, fr, _ in self._records])
        regions = (None if self.region_xs is None
                   else torch.tensor([r for _, _, r in self._records], dtype=torch.int64))
        return SpectralBiasTrace(steps, self._records[0][1].freqs, res, rel, self._records[0][1].target, mse, regions)
