"""PTQ4DM: post-training quantization of a trained diffusion network, calibrated on generated inputs whose
sampling steps follow a normal distribution (Normally Distributed Time-step Calibration, NDTC).

References: Post-training Quantization on Diffusion Models, 2023 (Shang et al., CVPR 2023).

**Fake quantization.** A uniform affine quantizer with ``n_bits`` bits and range :math:`[l, u]` has step
:math:`\\Delta = (u - l)/(2^b - 1)` and zero point :math:`z = \\operatorname{round}(-l/\\Delta)`;

.. math::
    Q(x) = \\Delta\\,\\bigl(\\operatorname{clamp}(\\operatorname{round}(x/\\Delta) + z,\\ 0,\\ 2^b - 1) - z\\bigr),

so :math:`|Q(x) - x| \\le \\Delta/2` on the representable range :math:`[-z\\Delta, (2^b - 1 - z)\\Delta]` (which
contains 0 exactly) and inputs outside it are clipped (:func:`fake_quantize`). Weights get one range per output
channel, activations (the inputs of every linear layer) one range per tensor, fitted on calibration data by
min-max or by the MSE-optimal shrink of the min-max range (:func:`fit_range`; the official code's default
``mse`` initialisation, searched here on a grid of shrink factors).

**Calibration sets.** The activation ranges are only as good as the calibration inputs. A diffusion network
sees inputs whose distribution changes along the sampling chain, so PTQ4DM calibrates on states produced by the
full-precision sampler itself, at chain positions drawn from a normal distribution: with ``K`` sampling steps,

.. math::
    k_i = \\operatorname{clamp}\\bigl(\\lfloor K\\,\\xi_i \\rfloor,\\ 0,\\ K - 1\\bigr), \\qquad
    \\xi_i \\sim \\mathcal N(\\mu, s^2), \\quad \\mu = 0.4,\\ s = 0.4

(:func:`ndtc_steps`; the official script's ``--calib_t_mode_normal_mean 0.4 --calib_t_mode_normal_std 0.4``;
:math:`k` counts denoising steps from pure noise, as the official generator's loop index does, so
:math:`\\mu < 1/2` skews the draws towards the noisy half of the chain), and the calibration input :math:`i` is
the sampler's state at step :math:`k_i` (:func:`sampler_calibration_set`), with its level
:math:`\\sigma_{k_i}`. The baselines are the same builders with other positions: evenly spread
(:func:`uniform_steps`), a single step (:func:`single_steps`), or Gaussian noise in place of generated states
(:func:`gaussian_calibration_set`, the official ``random`` input mode).

:func:`quantize_network` returns a copy of a network whose ``nn.Linear`` layers are :class:`QuantLinear`
(fake-quantized weights and inputs; the network output stays in float, as in the official code).

Example:
    >>> import torch
    >>> from paperzoo.diffusion.training import MLPDenoiser
    >>> from paperzoo.diffusion.schedules import get_sigmas_karras
    >>> from paperzoo.diffusion.ptq4dm import ndtc_steps, sampler_calibration_set, quantize_network
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = MLPDenoiser(2, 32, 2)
    >>> sigmas = get_sigmas_karras(10, 0.01, 10.0, dtype=torch.float32)
    >>> steps = ndtc_steps(64, 10, generator=torch.Generator().manual_seed(0))
    >>> x, s = sampler_calibration_set(net.denoiser(), 10.0 * torch.randn(64, 2), sigmas, steps)
    >>> qnet = quantize_network(net, x, s, n_bits_weights=8, n_bits_activations=8)
    >>> eps_err = (qnet.denoiser()(x, s) - net.denoiser()(x, s)).norm(dim=1) / s   # error of the eps output
    >>> bool(eps_err.max() < 0.05)
    True
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from paperzoo.core.accepts import Choice, Function, Generator, Int, Module, Real, Tensor, accepts
from paperzoo.diffusion.samplers import ancestral_step, run_sampler

__all__ = ["fake_quantize", "fit_range", "QuantLinear", "quantize_network", "ndtc_steps", "uniform_steps",
           "single_steps", "sampler_calibration_set", "gaussian_calibration_set", "RANGE_METHODS"]

#: how :func:`fit_range` fits a quantizer's range
RANGE_METHODS = ("minmax", "mse")

_SHRINKS = 100  # grid of shrink factors of the min-max range searched by the "mse" fit


def _quant_params(low: torch.Tensor, high: torch.Tensor, n_bits: int):
    levels = 2.0 ** n_bits - 1
    # the range must contain 0 (a zero activation stays exactly 0) and be nondegenerate
    low, high = low.clamp(max=0), high.clamp(min=0)
    delta = ((high - low) / levels).clamp_min(torch.finfo(low.dtype).tiny)
    zero = (-low / delta).round()
    return delta, zero, levels


def _fake_quantize(x, low, high, n_bits):
    """Unchecked :func:`fake_quantize` (the layers' forward)."""
    delta, zero, levels = _quant_params(low, high, n_bits)
    return ((x / delta).round() + zero).clamp(0, levels).sub(zero).mul(delta)


_ANY = Tensor(ndims=tuple(range(0, 8)))


def _example_fq(ctx):
    x = torch.randn(5, 3, generator=ctx.generator, dtype=ctx.dtype)
    return {"x": x, "low": x.min(0).values, "high": x.max(0).values}


@accepts(x=_ANY, low=_ANY, high=_ANY, n_bits=Int(ge=1, le=32), example=_example_fq)
def fake_quantize(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor, n_bits: int = 8) -> torch.Tensor:
    """Quantize ``x`` to ``n_bits`` uniform levels over ``[low, high]`` and back (module docstring).

    Args:
        x: values, any shape. low, high: the range, broadcastable against ``x`` (one entry per channel, or 0-dim
            per tensor); it is widened to contain 0. n_bits: bits ``b`` (1..32; at 32 bits the step is below
            float32's resolution, use float64 there).

    Returns:
        :math:`Q(x)`, shape and dtype of ``x``.
    """
    if bool((low > high).any()):
        raise ValueError("low must be <= high entrywise")
    try:
        torch.broadcast_shapes(x.shape, low.shape, high.shape)
    except RuntimeError:
        raise ValueError(f"low and high must broadcast against x {tuple(x.shape)}, got {tuple(low.shape)} and "
                         f"{tuple(high.shape)}") from None
    return _fake_quantize(x, low, high, n_bits)


def _fit_range(x: torch.Tensor, n_bits: int, method: str, dim: int | None):
    """Unchecked :func:`fit_range`: ``x`` reduced over every axis but ``dim`` (``None``: all)."""
    if dim is None:
        flat = x.reshape(1, -1)
    else:
        flat = x.movedim(dim, 0).reshape(x.shape[dim], -1)
    low, high = flat.min(1).values.clamp(max=0), flat.max(1).values.clamp(min=0)
    if method == "mse":
        # all shrink factors at once: (S, C, 1) candidate ranges against the (C, M) values
        f = 1.0 - torch.arange(_SHRINKS, dtype=flat.dtype, device=flat.device) / _SHRINKS
        lo, hi = low * f[:, None], high * f[:, None]
        err = (_fake_quantize(flat, lo[..., None], hi[..., None], n_bits) - flat).square().mean(-1)
        best = err.argmin(0)  # the first (widest) range on ties
        idx = torch.arange(low.shape[0], device=flat.device)
        low, high = lo[best, idx], hi[best, idx]
    if dim is None:
        return low.reshape(()), high.reshape(())
    shape = [1] * x.dim()
    shape[dim] = x.shape[dim]
    return low.reshape(shape), high.reshape(shape)


@accepts(x=Tensor(ndims=tuple(range(1, 8))), n_bits=Int(ge=1, le=32), method=Choice(*RANGE_METHODS),
         dim=Int(optional=True), example=lambda ctx: {"x": torch.randn(6, 3, generator=ctx.generator,
                                                                       dtype=ctx.dtype)})
def fit_range(x: torch.Tensor, n_bits: int = 8, method: str = "minmax", dim: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The range ``(low, high)`` of an ``n_bits`` quantizer for the values ``x``.

    ``method="minmax"``: the extremes of ``x`` (widened to contain 0); ``"mse"``: the min-max range shrunk by
    the factor in :math:`\\{1, 0.99, \\dots, 0.01\\}` that minimizes the mean squared quantization error of ``x``.
    ``dim``: the channel axis for one range per channel (kept as a size-1-broadcastable shape), ``None`` for
    one range over the whole tensor (0-dim results).
    """
    if dim is not None and not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim must be in [{-x.dim()}, {x.dim() - 1}] for x of {x.dim()} dimensions, got {dim}")
    return _fit_range(x, n_bits, method, None if dim is None else dim % x.dim())


class QuantLinear(nn.Module):
    """A linear layer with fake-quantized weights (one range per output channel) and input (one range, set by
    calibration); ``act_range=None`` leaves the input in float."""

    @accepts(linear=Module(), n_bits_weights=Int(ge=1, le=32), n_bits_activations=Int(ge=1, le=32),
             method=Choice(*RANGE_METHODS), example=lambda ctx: {"linear": nn.Linear(3, 2).to(ctx.dtype)})
    def __init__(self, linear: nn.Linear, n_bits_weights: int = 8, n_bits_activations: int = 8,
                 method: str = "mse"):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        w = linear.weight.detach()
        low, high = _fit_range(w, n_bits_weights, method, 0)
        self.register_buffer("weight", _fake_quantize(w, low, high, n_bits_weights))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.n_bits_weights, self.n_bits_activations, self.method = n_bits_weights, n_bits_activations, method
        self.act_range: tuple[torch.Tensor, torch.Tensor] | None = None

    def calibrate(self, inputs: torch.Tensor) -> None:
        """Fit the input range on the calibration inputs ``(N, in_features)`` this layer received."""
        self.act_range = _fit_range(inputs.detach(), self.n_bits_activations, self.method, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_range is not None:
            x = _fake_quantize(x, *self.act_range, self.n_bits_activations)
        return nn.functional.linear(x, self.weight, self.bias)


def _example_qn(ctx):
    from paperzoo.diffusion.training import MLPDenoiser

    return {"network": MLPDenoiser(2, 8, 1).to(ctx.dtype),
            "x": torch.randn(6, 2, generator=ctx.generator, dtype=ctx.dtype),
            "sigma": torch.rand(6, generator=ctx.generator, dtype=ctx.dtype) + 0.1}


@accepts(network=Module(bind_dtype=True), x=Tensor("N", "d"), sigma=Tensor("N", nonnegative=True),
         n_bits_weights=Int(ge=1, le=32), n_bits_activations=Int(ge=1, le=32), method=Choice(*RANGE_METHODS),
         output="any", example=_example_qn)
def quantize_network(network: nn.Module, x: torch.Tensor, sigma: torch.Tensor, *, n_bits_weights: int = 8,
                     n_bits_activations: int = 8, method: str = "mse") -> nn.Module:
    """A fake-quantized copy of ``network`` calibrated on the denoiser inputs ``(x, sigma)``.

    Args:
        network: a network with a ``denoiser()`` method (as :class:`~paperzoo.diffusion.training.MLPDenoiser`),
            left unchanged. Every ``nn.Linear`` in it is replaced by a :class:`QuantLinear`.
        x: calibration states ``(N, d)`` in the VE convention (what ``network.denoiser()`` receives);
            sigma: their levels ``(N,)``.
        n_bits_weights, n_bits_activations: bits of the weight and activation quantizers (paper: 8 and 8).
        method: range fit of both (``"minmax"`` or ``"mse"``, :func:`fit_range`).

    The input ranges are fitted on what each layer of the *full-precision* network receives on the calibration
    set (all layers calibrated at once, the official ``set_act_quantize_params`` order).
    """
    if not callable(getattr(network, "denoiser", None)):
        raise TypeError(f"network must have a denoiser() method, got {type(network).__name__}")
    linears = [(name, m) for name, m in network.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("network must contain at least one torch.nn.Linear layer")
    recorded: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, inp, name=name: recorded.__setitem__(name, inp[0].detach()))
             for name, m in linears]
    try:
        with torch.no_grad():
            network.denoiser()(x, sigma)
    finally:
        for h in hooks:
            h.remove()
    qnet = copy.deepcopy(network)
    for name, m in linears:
        q = QuantLinear(m, n_bits_weights, n_bits_activations, method)
        q.calibrate(recorded[name])
        parent_name, _, child = name.rpartition(".")
        setattr(qnet.get_submodule(parent_name) if parent_name else qnet, child, q)
    return qnet


@accepts(n=Int(ge=1), num_steps=Int(ge=1), mean=Real(), std=Real(ge=0), generator=Generator(),
         example=lambda ctx: {"n": 8, "num_steps": 10})
def ndtc_steps(n: int, num_steps: int, *, mean: float = 0.4, std: float = 0.4,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """NDTC's calibration positions :math:`k_i = \\operatorname{clamp}(\\lfloor K\\xi_i\\rfloor, 0, K-1)`,
    :math:`\\xi_i \\sim \\mathcal N(\\mu, s^2)` (module docstring), ``(n,)`` int64; ``K = num_steps``, ``mean``
    :math:`\\mu` and ``std`` :math:`s` as fractions of the chain (official 0.4, 0.4); ``k = 0`` is pure noise."""
    xi = mean + std * torch.randn(n, generator=generator, dtype=torch.float64)
    # truncation toward zero, as the official int cast; then the clamp into the chain
    return (xi * num_steps).trunc().clamp(0, num_steps - 1).long()


@accepts(n=Int(ge=1), num_steps=Int(ge=1), example=lambda ctx: {"n": 8, "num_steps": 10})
def uniform_steps(n: int, num_steps: int) -> torch.Tensor:
    """Evenly spread positions ``round(linspace(0, K - 1, n))`` over the ``K = num_steps`` steps, ``(n,)`` int64."""
    return torch.linspace(0, num_steps - 1, n, dtype=torch.float64).round().long()


@accepts(n=Int(ge=1), step=Int(ge=0), num_steps=Int(ge=1), example=lambda ctx: {"n": 4, "step": 2, "num_steps": 5})
def single_steps(n: int, step: int, num_steps: int) -> torch.Tensor:
    """``n`` copies of one position ``step`` of a ``num_steps``-step chain (single-time-step calibration)."""
    if step >= num_steps:
        raise ValueError(f"step must be < num_steps ({num_steps}), got {step}")
    return torch.full((n,), step, dtype=torch.long)


def _example_cal(ctx):
    from paperzoo.diffusion.mixture import mixture_on_circle
    from paperzoo.diffusion.schedules import get_sigmas_karras

    gm = mixture_on_circle(3, 2, radius=2.0, std=0.3, dtype=ctx.dtype)
    return {"model": gm.denoise, "x": 5.0 * torch.randn(6, 2, generator=ctx.generator, dtype=ctx.dtype),
            "sigmas": get_sigmas_karras(4, 0.05, 5.0, dtype=ctx.dtype), "steps": torch.tensor([0, 1, 1, 2, 3, 3])}


@accepts(model=Function(), x=Tensor("N", "d"), sigmas=Tensor("S", nonnegative=True, finite=False),
         steps=Tensor("N", dtype="int", low=0), eta=Real(ge=0, le=1), generator=Generator(), output="any",
         example=_example_cal)
def sampler_calibration_set(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                            sigmas: torch.Tensor, steps: torch.Tensor, *, eta: float = 0.0,
                            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The calibration inputs of PTQ4DM: run the full-precision sampler (DDIM with ``eta``) from ``x`` over
    ``sigmas`` and keep, for chain ``i``, its state at step ``steps[i]`` and that level.

    Args:
        model: the full-precision denoiser ``model(x, sigma)``.
        x: starting noise ``(N, d)`` at ``sigmas[0]``; sigmas: the sampling schedule ``(K + 1,)`` ending in 0.
        steps: the position of each chain ``(N,)`` in ``[0, K - 1]`` (:func:`ndtc_steps`, :func:`uniform_steps`,
            :func:`single_steps`); chain ``i`` only runs up to its step.

    Returns:
        ``(x_cal, sigma_cal)``: ``(N, d)`` states and their ``(N,)`` levels ``sigmas[steps]``.
    """
    K = sigmas.shape[0] - 1
    if K < 1:
        raise ValueError(f"sigmas must have at least 2 entries, got {sigmas.shape[0]}")
    if bool((steps >= K).any()):
        raise ValueError(f"steps must be < the number of sampling steps ({K}), got a maximum of {int(steps.max())}")
    if bool(torch.isinf(sigmas[0])):
        raise ValueError("sigmas must be finite (a zero-terminal-SNR start has no finite calibration state)")
    out = torch.empty_like(x)
    last = int(steps.max())

    def keep(info):
        hit = steps == info["i"]
        out[hit] = info["x"][hit]

    # only the steps up to the deepest position are run: the schedule is cut after it
    run_sampler(model, x, sigmas[:last + 2], ancestral_step(float(eta)), generator=generator, callback=keep)
    return out, sigmas.to(x.dtype)[steps]


@accepts(sigma=Tensor("N", nonnegative=True), dim=Int(ge=1), generator=Generator(), output="any",
         example=lambda ctx: {"sigma": torch.rand(5, generator=ctx.generator, dtype=ctx.dtype) + 0.1, "dim": 2})
def gaussian_calibration_set(sigma: torch.Tensor, dim: int, *, generator: torch.Generator | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Calibration inputs that are pure Gaussian noise (the official ``random`` input mode): unit-variance noise
    in the VP scaling at each level, :math:`x = \\sqrt{1 + \\sigma^2}\\, z` in VE coordinates; returns
    ``(x (N, dim), sigma)``."""
    z = torch.randn(sigma.shape[0], dim, generator=generator, dtype=torch.float64).to(sigma.dtype)
    return (1 + sigma.square()).sqrt()[:, None] * z, sigma
