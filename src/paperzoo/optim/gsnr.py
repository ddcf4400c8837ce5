r"""VRGD: scale each coordinate's update by its gradient signal-to-noise ratio (GSNR) across micro-batches.

References: Accelerating Large Batch Training via Gradient Signal to Noise Ratio (GSNR) (Jiang, Liu, Ding, Guo,
Lin), 2023.

Pieces:

- :func:`gsnr`: the measurement, :math:`r_j = \bar g_j^2 / \sigma_j^2` from ``k`` gradient samples;
- :func:`gsnr_scale`: per-layer normalisation and bounding of :math:`r` into the element-wise step multiplier;
- :class:`VRGD`: a wrapper that turns any ``torch.optim`` optimizer (SGD, Adam, LAMB ...) into its VR-version
  (VR-SGD, VR-Adam ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from paperzoo.core.accepts import Choice, Flag, Function, Int, Real, accepts
from paperzoo.core.accepts import Real, Tensor, accepts
from paperzoo.core.checks import check_number, check_positive, check_tensor
from paperzoo.optim._common import NONFINITE
from paperzoo.optim.wrappers import ClosureWrapper

__all__ = ["gsnr", "gsnr_scale", "VRGD"]


@accepts(per_sample_grads=Tensor(ndims=tuple(range(1, 10)), allow_empty=True, degenerate=("constant", "zeros")),
         eps=Real(gt=0),
         example=lambda ctx: {"per_sample_grads": torch.randn(4, 3, 2, generator=ctx.generator, dtype=ctx.dtype)})
def gsnr(per_sample_grads: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    r"""Gradient signal-to-noise ratio of every coordinate from ``k`` gradient samples.

    .. math::
        \bar g_j = \frac1k\sum_{i=1}^k g_{ij}, \qquad \sigma_j^2 = \frac1k\sum_{i=1}^k g_{ij}^2 - \bar g_j^2,
        \qquad r_j = \frac{\bar g_j^2}{\sigma_j^2 + \epsilon}

    (the paper's definition with the population variance of the ``k`` micro-batch gradients; :math:`\epsilon` =
    ``eps`` keeps coordinates whose samples all agree finite).

    Args:
        per_sample_grads: ``(k, *shape)`` with ``k >= 2``: per-sample or per-micro-batch gradients of one
            parameter (``torch.func.vmap(torch.func.grad(...))`` gives them in one call).
        eps: :math:`\epsilon > 0`.

    Returns:
        ``(*shape)``, :math:`r \ge 0`.

    Example:
        >>> g = torch.tensor([[1.0, 1.0], [3.0, -1.0]])
        >>> gsnr(g).tolist()  # means (2, 0), variances (1, 1)
        [4.0, 0.0]
    """
    check_tensor("per_sample_grads", per_sample_grads)
    if per_sample_grads.dim() < 1 or per_sample_grads.shape[0] < 2:
        raise ValueError(f"per_sample_grads must have shape (k, ...) with k >= 2, got {tuple(per_sample_grads.shape)}")
    return _gsnr(per_sample_grads, check_positive("eps", eps))


def _gsnr(per_sample_grads, eps):
    """Unchecked :func:`gsnr` (VRGD's step)."""
    mean = per_sample_grads.mean(0)
    var = per_sample_grads.var(0, correction=0)
    return mean.square() / (var + eps)


@accepts(r=Tensor(ndims=tuple(range(9)), nonnegative=True, allow_empty=True, degenerate=("zeros", "constant")),
         gamma=Real(ge=0, le=1),
         # a GSNR of the top rank (8), so that the generic "extra dimension" probe is a real error
         example=lambda ctx: {"r": torch.rand(1, 1, 1, 1, 1, 1, 3, 2, generator=ctx.generator, dtype=ctx.dtype)})
def gsnr_scale(r: torch.Tensor, gamma: float = 0.1) -> torch.Tensor:
    r"""VRGD's element-wise step multiplier from one layer's GSNR: normalise to mean 1, then bound.

    .. math::
        \tilde r_j = \mathrm{clip}\!\left(\frac{r_j}{\frac1J\sum_{l=1}^J r_l},\; 1 - \gamma,\; 1 + \gamma\right)

    over the :math:`J` coordinates of the layer (one parameter tensor). A layer whose GSNR is zero everywhere
    gets :math:`\tilde r = 1` (plain steps).

    Args:
        r: GSNR of one layer, any shape.
        gamma: bound :math:`\gamma \in [0, 1]` (``0`` gives the base optimizer back).

    Example:
        >>> gsnr_scale(torch.tensor([0.0, 1.0, 2.0, 5.0]), gamma=0.5).tolist()
        [0.5, 0.5, 1.0, 1.5]
    """
    check_tensor("r", r, nonnegative=True)
    return _gsnr_scale(r, check_number("gamma", gamma, low=0.0, high=1.0))


def _gsnr_scale(r, gamma):
    """Unchecked :func:`gsnr_scale` (VRGD's step)."""
    mean = r.mean()
    if float(mean) == 0.0:
        return torch.ones_like(r)
    return (r / mean).clamp(1.0 - gamma, 1.0 + gamma)


class VRGD(ClosureWrapper):
    r"""VRGD: the base optimizer's update, scaled coordinate-wise by the bounded, normalised GSNR.

    References: Accelerating Large Batch Training via Gradient Signal to Noise Ratio (GSNR) (Jiang, Liu, Ding,
    Guo, Lin), 2023.

    A large batch is split into :math:`k` micro-batches (the paper's devices). With their gradients
    :math:`g_{ij}`, one step is

    .. math::
        g_j = \frac1k\sum_i g_{ij}, \qquad
        u = \mathrm{base}(g) \ (\text{the base optimizer's displacement}), \qquad
        \theta_j \leftarrow \theta_j + \tilde r_j\, u_j,

    with :math:`\tilde r` = :func:`gsnr_scale` of :func:`gsnr` per parameter tensor (the paper's layer):
    coordinates whose micro-batch gradients agree take larger steps than those dominated by noise. VRGD on
    ``torch.optim.SGD`` is VR-SGD, on ``torch.optim.Adam`` VR-Adam; the base optimizer's state (momentum,
    second moments) sees the plain mean gradient, and only its displacement is rescaled.

    Reading of the paper (its normalisation and bounding constants are stated loosely): the GSNR is
    normalised to mean 1 within each layer and clipped to :math:`[1-\gamma, 1+\gamma]`; ``gamma`` = 0.1 by
    default. The micro-batch gradients come from :math:`k` backward passes.

    Interface: ``step(closure)`` where ``closure()`` zeroes nothing and returns the ``(k,)`` tensor of the
    micro-batches' mean losses, built with autograd (no ``backward``); ``k >= 2``. ``p.grad`` holds the mean
    gradient afterwards. Returns the mean of the ``k`` losses.

    Args:
        params: parameters or parameter-group dicts.
        base_optimizer: ``torch.optim.Optimizer`` subclass (or callable ``param_groups -> Optimizer``).
        gamma: bound :math:`\gamma \in [0, 1]` (per group).
        eps: :math:`\epsilon > 0` of :func:`gsnr` (per group).
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`).
        **base_kwargs: the base optimizer's arguments (``lr``, ``betas``, ``weight_decay`` ...); torch.optim's own names are
            checked with paperzoo's messages, unknown ones by the base optimizer.

    Example:
        >>> import torch
        >>> from paperzoo.optim import VRGD
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> X, y = torch.randn(64, 3), torch.randn(64)
        >>> w = torch.nn.Parameter(torch.zeros(3))
        >>> opt = VRGD([w], torch.optim.SGD, lr=0.1)
        >>> closure = lambda: ((X @ w - y) ** 2).reshape(8, 8).mean(1)
        >>> first = opt.step(closure)
        >>> for _ in range(50):
        ...     last = opt.step(closure)
        >>> bool(last < first)
        True
    """

    @accepts(base_optimizer=Function(), gamma=Real(ge=0, le=1), eps=Real(gt=0), nonfinite=NONFINITE)
    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 base_optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.SGD, gamma: float = 0.1,
                 eps: float = 1e-12, nonfinite: str = "raise", **base_kwargs):
        super().__init__(params, base_optimizer, dict(gamma=gamma, eps=eps, nonfinite=nonfinite), base_kwargs)

    def _check_group(self, group: dict[str, Any]) -> None:
        group["gamma"] = check_number("gamma", group["gamma"], low=0.0, high=1.0)
        group["eps"] = check_positive("eps", group["eps"])

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        if closure is None:
            raise TypeError("VRGD needs a closure: step(closure) where closure() returns the (k,) tensor of "
                               "micro-batch losses (with autograd, no backward)")
        with torch.enable_grad():
            losses = closure()
        if not isinstance(losses, torch.Tensor) or losses.dim() != 1 or losses.shape[0] < 2:
            shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
            raise ValueError(f"closure() must return a (k,) tensor of micro-batch losses with k >= 2, got {shape}")
        owners = [(group, p) for group in self.param_groups for p in group["params"] if p.requires_grad]
        params = [p for _, p in owners]
        k = losses.shape[0]
        samples: list[list[torch.Tensor | None]] = [[] for _ in params]
        for i in range(k):
            with torch.enable_grad():
                grads = torch.autograd.grad(losses[i], params, retain_graph=i < k - 1, allow_unused=True)
            for column, g in zip(samples, grads):
                column.append(g)
        stacks = {}
        for (group, p), column in zip(owners, samples):
            if any(g is None for g in column):
                p.grad = None  # a parameter the losses do not reach must not step on a stale gradient
                continue
            stacks[p] = (group, torch.stack(column))
            # GSNR is invariant to the gradient's sign, so a base optimizer with maximize=True works unchanged.
            p.grad = stacks[p][1].mean(0)
        # A NaN or inf sample makes the mean non-finite: the policy applies before the GSNR is formed.
        if self._skip_for_nonfinite():
            return losses.detach().mean()
        scales, starts = {}, {}
        for p, (group, stacked) in stacks.items():
            scales[p] = _gsnr_scale(_gsnr(stacked, group["eps"]), group["gamma"])
            starts[p] = p.detach().clone()
        self.base_optimizer.step()
        for p, scale in scales.items():
            # theta_old + r * (theta_new - theta_old), in place.
            p.sub_(starts[p]).mul_(scale).add_(starts[p])
        return losses.detach().mean()

