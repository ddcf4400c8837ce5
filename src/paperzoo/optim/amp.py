"""AMP: adversarial model perturbation, as a wrapper around any base optimizer.

References: Regularizing Neural Networks via Adversarial Model Perturbation (Zheng, Zhang, Mao), 2021.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from paperzoo.core.accepts import Choice, Flag, Function, Int, Real, accepts
from paperzoo.core.checks import check_int, check_nonnegative
from paperzoo.optim._common import check_flag
from paperzoo.optim._common import NONFINITE
from paperzoo.optim.wrappers import ClosureWrapper

__all__ = ["AMP"]


class AMP(ClosureWrapper):
    r"""AMP: minimise the loss under the worst norm-bounded perturbation of the weights, found by ascent.

    References: Regularizing Neural Networks via Adversarial Model Perturbation (Zheng, Zhang, Mao), 2021.

    The AMP loss of a mini-batch :math:`B` is :math:`\max_{\|\Delta\| \le \epsilon} L_B(\theta + \Delta)`. Each step
    approximates the inner maximum by :math:`K` steps of projected gradient ascent from :math:`\Delta_0 = 0`
    (Algorithm 1 of the paper),

    .. math::
        \Delta_{k+1} = \Pi_{\|\Delta\| \le \epsilon}\big(\Delta_k + \zeta\, \nabla L_B(\theta + \Delta_k)\big),
        \qquad k = 0, \dots, K - 1,

    where :math:`\Pi` rescales :math:`\Delta` onto the ball when it leaves it, then writes
    :math:`\nabla L_B(\theta + \Delta_K)` into ``p.grad``, restores :math:`\theta` and runs the base optimizer
    (the paper: SGD with momentum). That is :math:`K + 1` closure calls per step.

    Symbols: :math:`\epsilon` = ``epsilon``, :math:`\zeta` = ``inner_lr``, :math:`K` = ``inner_iters``. The defaults
    are the paper's (:math:`\epsilon = 0.5`, :math:`\zeta = 1`, :math:`K = 1`).

    Deviation, optional: the paper's ball is over the whole parameter vector; here it is over the parameters of
    each param group (the same thing with one group). ``per_tensor=True`` projects each tensor onto its own ball
    of radius :math:`\epsilon` instead, which is what the authors' released code does.

    Args:
        params: parameters or parameter-group dicts.
        base_optimizer: ``torch.optim.Optimizer`` subclass (or callable ``param_groups -> Optimizer``).
        epsilon: radius :math:`\epsilon \ge 0` of the perturbation ball (``0`` is plain ERM at a higher cost).
        inner_lr: ascent step :math:`\zeta \ge 0`.
        inner_iters: ascent steps :math:`K \ge 0`.
        per_tensor: one ball per parameter tensor (authors' code) instead of one per group (paper's equation).
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`).
        **base_kwargs: the base optimizer's arguments (``lr``, ``momentum``, ``weight_decay`` ...); torch.optim's own names are
            checked with paperzoo's messages, unknown ones by the base optimizer.

    Example:
        >>> import torch
        >>> from paperzoo.optim import AMP
        >>> w = torch.nn.Parameter(torch.tensor([2.0, -3.0]))
        >>> opt = AMP([w], torch.optim.SGD, epsilon=0.05, lr=0.1)
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = (w ** 2).sum()
        ...     loss.backward()
        ...     return loss
        >>> for _ in range(100):
        ...     _ = opt.step(closure)
        >>> bool(w.abs().max() < 0.1)
        True
    """

    @accepts(base_optimizer=Function(), epsilon=Real(ge=0), inner_lr=Real(ge=0), inner_iters=Int(ge=0), per_tensor=Flag(), nonfinite=NONFINITE)
    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 base_optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.SGD, epsilon: float = 0.5,
                 inner_lr: float = 1.0, inner_iters: int = 1, per_tensor: bool = False, nonfinite: str = "raise",
                 **base_kwargs):
        super().__init__(params, base_optimizer,
                         dict(epsilon=epsilon, inner_lr=inner_lr, inner_iters=inner_iters, per_tensor=per_tensor,
                              nonfinite=nonfinite), base_kwargs)

    def _check_group(self, group: dict[str, Any]) -> None:
        group["epsilon"] = check_nonnegative("epsilon", group["epsilon"])
        group["inner_lr"] = check_nonnegative("inner_lr", group["inner_lr"])
        group["inner_iters"] = check_int("inner_iters", group["inner_iters"], low=0)
        check_flag("per_tensor", group["per_tensor"])

    def _step(self, closure):
        loss = closure()
        saved = {p: p.detach().clone() for group in self.param_groups for p in self._params_with_grad(group)}
        deltas = {p: torch.zeros_like(p) for p in saved}
        for k in range(max(group["inner_iters"] for group in self.param_groups)):
            for group in self.param_groups:
                if k >= group["inner_iters"]:
                    continue
                params = [p for p in group["params"] if p in saved]
                for p in params:
                    if p.grad is not None:
                        deltas[p].add_(p.grad, alpha=group["inner_lr"])
                if not params:
                    continue
                eps = group["epsilon"]
                if group["per_tensor"]:
                    norms = [torch.linalg.vector_norm(deltas[p]) for p in params]
                else:
                    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(deltas[p]).double()
                                                                  for p in params]))
                    norms = [total] * len(params)
                for p, norm in zip(params, norms):
                    # Rescale onto the sphere only when outside the ball (projection onto an L2 ball).
                    scale = torch.clamp(eps / norm.clamp_min(torch.finfo(torch.float64).tiny), max=1.0)
                    deltas[p].mul_(scale.to(p.dtype))
                    p.copy_(saved[p]).add_(deltas[p])
            closure()
        for p, old in saved.items():
            p.copy_(old)
        return loss
