r"""muP, the Maximal Update Parametrization: per-layer initialisation, output multiplier and learning rates.

References: Feature Learning in Infinite-Width Neural Networks (Yang, Hu), 2021; the per-optimizer recipes are
Table 3 of Tensor Programs V: Tuning Large Neural Networks via Zero-Shot Hyperparameter Transfer (Yang et al.),
2022.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from paperzoo.core.accepts import Choice, Flag, Generator, Int, Module, Real, Tensor, accepts
from paperzoo.core.checks import check_choice, check_nonnegative, check_number

__all__ = ["MuReadout", "InfShape", "infshape", "mup_param_groups", "mup_init_", "set_readout_width_mult"]



def _example_models(ctx) -> dict:
    def mlp(n):
        return torch.nn.Sequential(torch.nn.Linear(4, n, dtype=ctx.dtype), torch.nn.ReLU(),
                                   torch.nn.Linear(n, n, dtype=ctx.dtype), torch.nn.ReLU(),
                                   MuReadout(n, 2, dtype=ctx.dtype))
    return {"model": mlp(16), "base_model": mlp(8)}


class MuReadout(torch.nn.Linear):
    r"""Output layer with muP's multiplier: :math:`y = \frac{\alpha_{out}}{n / n_0}\,(W x) + b`.

    ``width_mult`` = :math:`n/n_0` (the layer's fan-in over the base model's; set it with
    :func:`set_readout_width_mult`) and ``output_mult`` = :math:`\alpha_{out}`. With the weight initialised
    with variance :math:`1/n` this is the readout scaling :math:`W^{L+1} = n^{-1/2}w` on top of the standard
    :math:`n^{-1/2}` initialisation: :math:`a_{L+1} + b_{L+1} = 1` in the paper's abc-parametrization, the
    maximal-update choice that keeps the output at initialisation :math:`O(1/\sqrt n)` and its updates
    :math:`\Theta(1)`.

    Input ``(..., in_features)``, output ``(..., out_features)``.
    """

    @accepts(in_features=Int(ge=1), out_features=Int(ge=1), bias=Flag(), width_mult=Real(gt=0), output_mult=Real(),
             example=lambda ctx: {"in_features": 4, "out_features": 2, "dtype": ctx.dtype})
    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, width_mult: float = 1.0,
                 output_mult: float = 1.0, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.width_mult = check_number("width_mult", width_mult, low=0.0, low_inclusive=False)
        self.output_mult = check_number("output_mult", output_mult)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.linear(x, self.weight) * (self.output_mult / self.width_mult)
        return out if self.bias is None else out + self.bias


class InfShape(NamedTuple):
    """Width multipliers of a parameter relative to the base model's: ``mults[i] = shape[i] / base_shape[i]``,
    and ``infinite[i]`` whether that dimension scales with width (``shape[i] != base_shape[i]``)."""

    mults: tuple[float, ...]
    infinite: tuple[bool, ...]

    @property
    def ninf(self) -> int:
        return sum(self.infinite)

    @property
    def fan_in_mult(self) -> float:
        return self.mults[1] if len(self.mults) >= 2 else 1.0

    @property
    def width_mult(self) -> float:
        """The multiplier of the infinite dimension: fan-in's if it is infinite, else fan-out's."""
        if len(self.mults) >= 2 and self.infinite[1]:
            return self.mults[1]
        return next((m for m, inf in zip(self.mults, self.infinite) if inf), 1.0)


@accepts(p=Tensor(ndims=tuple(range(9)), dtype="any", finite=False),
         base=Tensor(ndims=tuple(range(9)), dtype="any", finite=False),
         # parameters of the top rank (8), so that the generic "extra dimension" probe is a real error
         example=lambda ctx: {"p": torch.zeros(1, 1, 1, 1, 1, 1, 16, 4, dtype=ctx.dtype),
                              "base": torch.zeros(1, 1, 1, 1, 1, 1, 8, 4, dtype=ctx.dtype)})
def infshape(p: torch.Tensor, base: torch.Tensor) -> InfShape:
    """:class:`InfShape` of ``p`` against the same parameter ``base`` of the base-width model."""
    if p.dim() != base.dim():
        raise ValueError(f"parameter and base parameter must have the same number of dimensions, got shapes "
                         f"{tuple(p.shape)} and {tuple(base.shape)}")
    mults = tuple(a / b for a, b in zip(p.shape, base.shape))
    return InfShape(mults, tuple(a != b for a, b in zip(p.shape, base.shape)))


def _pairs(model: torch.nn.Module, base_model: torch.nn.Module):
    named, base = dict(model.named_parameters()), dict(base_model.named_parameters())
    if named.keys() != base.keys():
        raise ValueError(f"model and base_model must have the same parameter names, got {sorted(named)} and "
                         f"{sorted(base)}")
    return [(name, p, infshape(p, base[name])) for name, p in named.items()]


@accepts(model=Module(finite=False), base_model=Module(finite=False), example=_example_models)
def set_readout_width_mult(model: torch.nn.Module, base_model: torch.nn.Module) -> None:
    """Set every :class:`MuReadout`'s ``width_mult`` to its fan-in over the base model's."""
    base = dict(base_model.named_modules())
    for name, module in model.named_modules():
        if isinstance(module, MuReadout):
            module.width_mult = module.in_features / base[name].in_features


@accepts(model=Module(finite=False), base_model=Module(finite=False), std=Real(ge=0), readout_zero_init=Flag(), generator=Generator(),
         example=_example_models)
@torch.no_grad()
def mup_init_(model: torch.nn.Module, base_model: torch.nn.Module, *, std: float = 1.0,
              readout_zero_init: bool = False, generator: torch.Generator | None = None) -> None:
    r"""muP initialisation, in place: weights :math:`N(0, \sigma^2/\text{fan\_in})` (:math:`\sigma` = ``std``;
    the :math:`b_l = 1/2` of every layer in the paper's Table 3), biases zero, :class:`MuReadout` weights zero
    when ``readout_zero_init`` (the muP variant Tensor Programs V recommends). Also sets the readouts'
    ``width_mult``."""
    std = check_nonnegative("std", std)
    set_readout_width_mult(model, base_model)
    readouts = {id(m.weight) for m in model.modules() if isinstance(m, MuReadout)}
    for _, p, _ in _pairs(model, base_model):
        if p.dim() < 2:
            p.zero_()
        elif readout_zero_init and id(p) in readouts:
            p.zero_()
        else:
            fan_in = p.shape[1:].numel()
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
                    * (std / math.sqrt(fan_in)))


@accepts(model=Module(finite=False), base_model=Module(finite=False), lr=Real(ge=0), optimizer=Choice("adam", "sgd"), weight_decay=Real(ge=0),
         example=lambda ctx: {**_example_models(ctx), "lr": 1e-3})
def mup_param_groups(model: torch.nn.Module, base_model: torch.nn.Module, lr: float, optimizer: str = "adam",
                     weight_decay: float = 0.0) -> list[dict[str, Any]]:
    r"""Parameter groups with muP's per-layer learning rates (Tensor Programs V, Table 3, in the
    :class:`MuReadout` formulation), for ``torch.optim.SGD``/``Adam``/``AdamW`` and their relatives.

    Each parameter is compared with the same parameter of ``base_model`` (same architecture at the base width
    :math:`n_0`): a dimension that differs is "infinite", with multiplier :math:`m = n/n_0`.

    - ``optimizer="adam"``: matrix-like parameters (both dimensions infinite: hidden weights) get
      :math:`\eta / m_{\text{fan-in}}`; vector-like ones (input weights, biases, readout weights) and fixed ones
      keep :math:`\eta`.
    - ``optimizer="sgd"``: matrix-like parameters get :math:`\eta\, m_{\text{fan-out}} / m_{\text{fan-in}}`
      (:math:`\eta` for square hidden layers); vector-like ones get :math:`\eta\, m` with :math:`m` the
      multiplier of their infinite dimension; fixed ones keep :math:`\eta`.

    With the readout multiplier of :class:`MuReadout` these are the paper's maximal-update scalings (for SGD
    :math:`c = 0` after moving the layer multipliers into the learning rates). At the base width every
    multiplier is 1 and the groups reduce to plain ``lr``: muP and SP coincide there, which is what makes
    hyperparameters tuned on the base model transfer. Weight decay is returned unscaled for Adam (use a
    decoupled-decay optimizer) and scaled by the inverse learning-rate factor for SGD's L2 decay.

    Returns a list of ``{"params": [...], "lr": ..., "weight_decay": ...}`` dicts, one per distinct factor.

    Example:
        >>> import torch
        >>> from paperzoo.optim import MuReadout, mup_param_groups
        >>> def mlp(n):
        ...     return torch.nn.Sequential(torch.nn.Linear(4, n), torch.nn.ReLU(), torch.nn.Linear(n, n),
        ...                                torch.nn.ReLU(), MuReadout(n, 2))
        >>> groups = mup_param_groups(mlp(256), mlp(64), lr=1e-3)
        >>> sorted(round(g["lr"], 6) for g in groups)
        [0.00025, 0.001]
    """
    lr = check_nonnegative("lr", lr)
    weight_decay = check_nonnegative("weight_decay", weight_decay)
    optimizer = check_choice("optimizer", optimizer, ("adam", "sgd"))
    groups: dict[float, dict[str, Any]] = {}
    for name, p, shape in _pairs(model, base_model):
        if shape.ninf > 2:
            raise ValueError(f"parameter {name!r} has {shape.ninf} dimensions that scale with width; muP "
                             f"handles at most 2")
        if shape.ninf == 2:
            factor = 1 / shape.fan_in_mult if optimizer == "adam" else shape.mults[0] / shape.fan_in_mult
        elif shape.ninf == 1:
            factor = 1.0 if optimizer == "adam" else shape.width_mult
        else:
            factor = 1.0
        wd = weight_decay if optimizer == "adam" else weight_decay / factor
        group = groups.setdefault(factor, {"params": [], "lr": lr * factor, "weight_decay": wd})
        group["params"].append(p)
    return list(groups.values())
