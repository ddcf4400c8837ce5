"""Weak/strong feature-noise patch data, a two-layer patch CNN, and SGD-to-target training for the benign-oscillation
experiment.

References: Benign Oscillation of Stochastic Gradient Descent with Large Learning Rates (Lu, Wu, Yang, Zou), 2023.

The pieces:

* :func:`make_weak_strong_patch_data`: a sample of the feature-noise model. Label :math:`y \\in \\{\\pm 1\\}`
  uniform; three patches of dimension ``d``: the weak feature :math:`y\\,a\\,v` (in every sample; ``weak_norm`` =
  :math:`a`), the strong feature :math:`y\\,b\\,u` present with probability ``rho`` (zero patch otherwise;
  ``strong_norm`` = :math:`b`), and noise :math:`\\xi \\sim N(0, \\sigma^2 (I - v v^T - u u^T))` (``noise_std`` =
  :math:`\\sigma`). Here :math:`v = e_1`, :math:`u = e_2`. ``rho = 0`` gives the weak-feature-only test data.
* :class:`PatchCNN`: :math:`F(W, x) = \\frac1m \\sum_{j=1}^m \\sum_{p=1}^P [\\sigma(\\langle w_{+1,j}, x_p\\rangle)
  - \\sigma(\\langle w_{-1,j}, x_p\\rangle)]` with :math:`\\sigma(z) = \\max(z, 0)^q` (``power`` = :math:`q`),
  ``weight`` of shape ``(2, m, d)`` (row 0 the :math:`+1` filters, row 1 the :math:`-1` filters).
* :func:`feature_alignment`: how much a direction has been learned,
  :math:`\\Gamma_+ = \\max_j \\langle w_{+1,j}, \\hat v\\rangle`, :math:`\\Gamma_- = \\max_j \\langle w_{-1,j},
  -\\hat v\\rangle`.
* :func:`oscillation_index`: the fraction of consecutive recorded losses that increase (0 for a monotone run).
* :func:`train_to_loss`: minibatch SGD (with replacement) on the half squared loss
  :math:`\\frac12 (F(W, x) - y)^2` until the full training loss first drops to ``target``.

Only the abstract of the paper could be read here; the constants of the data model and the network are this
module's choices (see the catalog's ``deviations``).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
from torch import nn

from paperzoo.core.accepts import FloatDType, Generator, Int, Module, Real, Tensor, accepts

__all__ = ["PatchData", "make_weak_strong_patch_data", "PatchCNN", "FeatureAlignment", "feature_alignment",
           "oscillation_index", "TrainRun", "train_to_loss"]


class PatchData(NamedTuple):
    """Result of :func:`make_weak_strong_patch_data`: ``inputs`` ``(n, 3, d)`` (weak, strong, noise patches),
    ``targets`` ``(n,)`` in :math:`\\{\\pm1\\}`, ``has_strong`` ``(n,)`` bool, the unit directions ``weak`` :math:`v`
    and ``strong`` :math:`u` ``(d,)``."""

    inputs: torch.Tensor
    targets: torch.Tensor
    has_strong: torch.Tensor
    weak: torch.Tensor
    strong: torch.Tensor


@accepts(n=Int(ge=1), d=Int(ge=3), rho=Real(ge=0, le=1), weak_norm=Real(ge=0), strong_norm=Real(ge=0),
         noise_std=Real(ge=0), generator=Generator(), dtype=FloatDType(), output="any",
         example=lambda ctx: {"n": 4, "d": 5, "rho": 0.5, "weak_norm": 0.2, "strong_norm": 1.0, "noise_std": 0.1})
def make_weak_strong_patch_data(n: int, d: int, rho: float, weak_norm: float, strong_norm: float, noise_std: float,
                                *, generator: torch.Generator | None = None,
                                dtype: torch.dtype = torch.float64) -> PatchData:
    """Feature-noise patch data: weak feature in every sample, strong feature in a ``rho`` fraction, noise.

    References: Benign Oscillation of Stochastic Gradient Descent with Large Learning Rates, 2023.

    Sample ``i``: :math:`y_i` uniform on :math:`\\{\\pm1\\}`; patch 0 :math:`= y_i a v`, patch 1 :math:`= y_i b u`
    when :math:`s_i = 1` (:math:`s_i \\sim \\mathrm{Bernoulli}(\\rho)`) else 0, patch 2 :math:`= \\xi_i`, Gaussian
    with covariance :math:`\\sigma^2 (I_d - v v^T - u u^T)`; :math:`v = e_1`, :math:`u = e_2`, ``a = weak_norm``,
    ``b = strong_norm``, :math:`\\sigma` = ``noise_std``.

    Returns:
        :class:`PatchData`, ``inputs`` of shape ``(n, 3, d)``.

    Example:
        >>> data = make_weak_strong_patch_data(6, 10, 0.5, 0.2, 1.0, 0.1, generator=torch.Generator().manual_seed(0))
        >>> data.inputs.shape, bool((data.inputs[:, 0, 0] == 0.2 * data.targets).all())
        (torch.Size([6, 3, 10]), True)
    """
    y = torch.randint(0, 2, (n,), generator=generator).to(dtype) * 2 - 1
    s = torch.rand(n, generator=generator, dtype=torch.float64) < rho
    x = torch.zeros(n, 3, d, dtype=dtype)
    x[:, 0, 0] = weak_norm * y
    x[:, 1, 1] = strong_norm * y * s.to(dtype)
    xi = noise_std * torch.randn(n, d, generator=generator, dtype=dtype)
    xi[:, :2] = 0.0  # the projection onto the complement of span(v, u)
    x[:, 2] = xi
    eye = torch.eye(d, dtype=dtype)
    return PatchData(x, y, s, eye[0].clone(), eye[1].clone())


class PatchCNN(nn.Module):
    """Two-layer patch CNN with fixed second layer :math:`\\pm 1/m` and activation :math:`\\max(z, 0)^q`.

    References: Benign Oscillation of Stochastic Gradient Descent with Large Learning Rates, 2023.

    :math:`F(W, x) = \\frac1m \\sum_j \\sum_p [\\sigma(\\langle w_{+1,j}, x_p\\rangle) - \\sigma(\\langle w_{-1,j},
    x_p\\rangle)]`; ``weight`` ``(2, m, d)`` initialised :math:`N(0, \\sigma_0^2)` (``init_std``). Input
    ``(n, P, d)``, output ``(n,)``.

    Example:
        >>> net = PatchCNN(4, 3, init_std=0.1, generator=torch.Generator().manual_seed(0))
        >>> net(torch.ones(5, 2, 4, dtype=torch.float64)).shape
        torch.Size([5])
    """

    @accepts(d=Int(ge=1), width=Int(ge=1), power=Real(ge=1), init_std=Real(ge=0), generator=Generator(),
             dtype=FloatDType(), output="any", example=lambda ctx: {"d": 4, "width": 3, "init_std": 0.1})
    def __init__(self, d: int, width: int, *, power: float = 2.0, init_std: float = 0.01,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64):
        super().__init__()
        self.power = float(power)
        self.weight = nn.Parameter(init_std * torch.randn(2, width, d, generator=generator, dtype=dtype))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.ndim != 3 or inputs.shape[-1] != self.weight.shape[-1]:
            raise ValueError(f"inputs must have shape (n, P, {self.weight.shape[-1]}), got {tuple(inputs.shape)}")
        z = torch.einsum("smd,npd->nsmp", self.weight, inputs).clamp_min(0.0) ** self.power
        z = z.sum(dim=(2, 3)) / self.weight.shape[1]
        return z[:, 0] - z[:, 1]


class FeatureAlignment(NamedTuple):
    """Result of :func:`feature_alignment`: :math:`\\Gamma_+`, :math:`\\Gamma_-` and their sum ``total``."""

    positive: float
    negative: float
    total: float


@accepts(model=Module(), direction=Tensor("d"), output="any",
         example=lambda ctx: {"model": PatchCNN(3, 2), "direction": torch.ones(3, dtype=ctx.dtype)})
def feature_alignment(model: PatchCNN, direction: torch.Tensor) -> FeatureAlignment:
    """Feature learning along a direction: the largest filter projection onto it, per output sign.

    References: Benign Oscillation of Stochastic Gradient Descent with Large Learning Rates, 2023.

    :math:`\\Gamma_+ = \\max_j \\langle w_{+1,j}, \\hat v\\rangle`, :math:`\\Gamma_- = \\max_j \\langle w_{-1,j},
    -\\hat v\\rangle`, :math:`\\hat v` = ``direction`` / its norm, ``model.weight`` of shape ``(2, m, d)``.

    Example:
        >>> net = PatchCNN(3, 2, init_std=0.0)
        >>> with torch.no_grad():
        ...     net.weight[0, 0, 0] = 2.0
        >>> feature_alignment(net, torch.tensor([1.0, 0, 0], dtype=torch.float64)).positive
        2.0
    """
    if not isinstance(model, PatchCNN):
        raise TypeError(f"model must be a PatchCNN, got {type(model).__name__}")
    W = model.weight.detach()
    if direction.shape[0] != W.shape[-1]:
        raise ValueError(f"direction must have length {W.shape[-1]} (the model's d), got {direction.shape[0]}")
    norm = float(direction.norm())
    if norm == 0.0:
        raise ValueError("direction must be nonzero, got the zero vector")
    proj = W @ (direction.to(W.dtype) / norm)  # (2, m)
    pos, neg = float(proj[0].max()), float((-proj[1]).max())
    return FeatureAlignment(pos, neg, pos + neg)


@accepts(losses=Tensor("T"), output="any",
         example=lambda ctx: {"losses": torch.tensor([3.0, 1.0, 2.0, 0.5], dtype=ctx.dtype)})
def oscillation_index(losses: torch.Tensor) -> float:
    """Loss oscillation: the fraction of consecutive pairs with :math:`L_{t+1} > L_t`.

    References: Benign Oscillation of Stochastic Gradient Descent with Large Learning Rates, 2023.

    ``losses`` ``(T,)``, ``T >= 2``; 0 for a non-increasing sequence, 1 for a strictly increasing one.

    Example:
        >>> oscillation_index(torch.tensor([3.0, 1.0, 2.0, 0.5]))
        0.3333333333333333
    """
    if losses.shape[0] < 2:
        raise ValueError(f"losses must have at least 2 entries, got {losses.shape[0]}")
    return float((losses[1:] > losses[:-1]).double().mean())


class TrainRun(NamedTuple):
    """Result of :func:`train_to_loss`.

    Attributes:
        steps: SGD steps taken (the first step whose full training loss is ``<= target``, or ``max_steps``).
        reached: whether the target was reached.
        losses: ``(steps // eval_every + 1,)`` full training losses, the first at initialisation.
        final_loss: the last recorded full training loss.
        diverged: the loss turned non-finite (training stopped there, a warning was issued).
    """

    steps: int
    reached: bool
    losses: torch.Tensor
    final_loss: float
    diverged: bool


def _half_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out - y) ** 2).mean()


def _example_train(ctx):
    data = make_weak_strong_patch_data(8, 5, 0.5, 0.5, 1.0, 0.1, generator=ctx.generator, dtype=ctx.dtype)
    return {"model": PatchCNN(5, 2, init_std=0.1, generator=ctx.generator, dtype=ctx.dtype), "inputs": data.inputs,
            "targets": data.targets, "lr": 0.1, "batch_size": 4, "max_steps": 5, "target": 0.0}


@accepts(model=Module(bind_dtype=True), inputs=Tensor("n", "P", "d"), targets=Tensor("n"), lr=Real(gt=0),
         batch_size=Int(ge=1), max_steps=Int(ge=1), target=Real(ge=0), eval_every=Int(ge=1), generator=Generator(),
         output="any", mutates=("model",), example=_example_train)
def train_to_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, lr: float, *, batch_size: int,
                  max_steps: int, target: float, eval_every: int = 1,
                  generator: torch.Generator | None = None) -> TrainRun:
    """Minibatch SGD on the half squared loss until the full training loss first reaches ``target``.

    References: Benign Oscillation of Stochastic Gradient Descent with Large Learning Rates, 2023.

    Step :math:`W \\leftarrow W - \\eta \\nabla_W \\frac1B \\sum_{i \\in \\mathcal B} \\frac12 (F(W, x_i) - y_i)^2`,
    :math:`\\mathcal B` drawn with replacement (``batch_size`` = :math:`B`, ``lr`` = :math:`\\eta`); the full loss
    :math:`\\frac1n \\sum_i \\frac12 (F(W, x_i) - y_i)^2` is recorded every ``eval_every`` steps and training stops at
    the first record ``<= target``. Trains ``model`` in place. ``inputs`` ``(n, P, d)``, ``targets`` ``(n,)``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> data = make_weak_strong_patch_data(32, 8, 0.5, 0.5, 1.0, 0.1, generator=g)
        >>> run = train_to_loss(PatchCNN(8, 4, init_std=0.1, generator=g), data.inputs, data.targets, 0.5,
        ...                     batch_size=8, max_steps=2000, target=0.1, generator=g)
        >>> run.reached, run.final_loss <= 0.1
        (True, True)
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model must have trainable parameters, got none")
    n = inputs.shape[0]
    with torch.no_grad():
        losses = [float(_half_mse(model(inputs), targets))]
    steps, diverged = 0, False
    reached = losses[0] <= target
    while not reached and steps < max_steps:
        idx = torch.randint(0, n, (batch_size,), generator=generator)
        loss = _half_mse(model(inputs[idx]), targets[idx])
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(lr * g)
        steps += 1
        if steps % eval_every == 0 or steps == max_steps:
            with torch.no_grad():
                full = float(_half_mse(model(inputs), targets))
            losses.append(full)
            if not math.isfinite(full):
                diverged = True
                warnings.warn(f"train_to_loss: the training loss became non-finite at step {steps}; lower lr "
                              f"(got {lr})", RuntimeWarning, stacklevel=2)
                break
            reached = full <= target
    return TrainRun(steps, bool(reached), torch.tensor(losses, dtype=torch.float64), losses[-1], diverged)
