r"""diffGrad: Adam whose step is scaled by a sigmoid of the change between consecutive gradients.

References: diffGrad: An Optimization Method for Convolutional Neural Networks (Dubey, Chakraborty, Roy,
Mukherjee, Singh, Chaudhuri), 2019.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from paperzoo.core.accepts import Choice, Flag, Function, Int, Real, Tensors, accepts
from paperzoo.core.checks import check_tensor
from paperzoo.optim._common import ADAM_HYPERPARAMETERS, ElementwiseOptimizer, check_adam_group, check_flag

__all__ = ["DiffGrad", "diffgrad_update"]


def _example_update(ctx):
    def lists(draw):
        return [draw(shape, generator=ctx.generator, dtype=ctx.dtype) for shape in ((3, 2), (4,))]
    return dict(params=lists(torch.randn), grads=lists(torch.randn), exp_avgs=lists(torch.randn),
                exp_avg_sqs=lists(torch.rand), previous_grads=lists(torch.randn), step=3, lr=1e-2, beta1=0.9,
                beta2=0.999, eps=1e-8, weight_decay=0.1, decouple=False, maximize=False, foreach=False)


def _diffgrad_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    previous_grads: list[torch.Tensor],
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decouple: bool,
    maximize: bool,
    foreach: bool,
) -> None:
    # The unvalidated kernel of diffgrad_update, for the optimizer's per-step loop.
    t = step + 1
    step_size = lr * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
    if foreach:
        if maximize:
            grads = torch._foreach_neg(grads)
        if weight_decay != 0 and not decouple:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
        if weight_decay != 0 and decouple:
            torch._foreach_mul_(params, 1.0 - lr * weight_decay)
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denom, eps)
        # previous_grads becomes the friction xi_t * m_t, then is refilled with g_t below.
        torch._foreach_sub_(previous_grads, grads)
        torch._foreach_abs_(previous_grads)
        torch._foreach_sigmoid_(previous_grads)
        torch._foreach_mul_(previous_grads, exp_avgs)
        torch._foreach_addcdiv_(params, previous_grads, denom, value=-step_size)
        torch._foreach_copy_(previous_grads, grads)
        return
    for theta, g, m, v, g_prev in zip(params, grads, exp_avgs, exp_avg_sqs, previous_grads):
        if maximize:
            g = -g
        if weight_decay != 0 and not decouple:
            g = g.add(theta, alpha=weight_decay)
        if weight_decay != 0 and decouple:
            theta.mul_(1.0 - lr * weight_decay)
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        denom = v.sqrt().add_(eps)
        g_prev.sub_(g).abs_().sigmoid_().mul_(m)
        theta.addcdiv_(g_prev, denom, value=-step_size)
        g_prev.copy_(g)


@accepts(params=Tensors(), grads=Tensors(like="params"), exp_avgs=Tensors(like="params"),
         exp_avg_sqs=Tensors(like="params"), previous_grads=Tensors(like="params"), step=Int(ge=0), lr=Real(ge=0),
         beta1=Real(ge=0, lt=1), beta2=Real(ge=0, lt=1), eps=Real(gt=0), weight_decay=Real(ge=0), decouple=Flag(),
         maximize=Flag(), foreach=Flag(), example=_example_update,
         mutates=("params", "exp_avgs", "exp_avg_sqs", "previous_grads"))
def diffgrad_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    previous_grads: list[torch.Tensor],
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decouple: bool,
    maximize: bool,
    foreach: bool,
) -> None:
    """One diffGrad step, in place, for tensors that have all taken ``step`` steps before this one.

    ``previous_grads`` holds :math:`g_{t-1}` and is overwritten with :math:`g_t`. See :class:`DiffGrad`.
    """
    for i, v in enumerate(exp_avg_sqs):
        check_tensor(f"exp_avg_sqs[{i}]", v, nonnegative=True)
    _diffgrad_update(params, grads, exp_avgs, exp_avg_sqs, previous_grads, step=step, lr=lr, beta1=beta1, beta2=beta2,
            eps=eps, weight_decay=weight_decay, decouple=decouple, maximize=maximize, foreach=foreach)


class DiffGrad(ElementwiseOptimizer):
    r"""diffGrad: Adam with a per-coordinate friction coefficient from the local change of the gradient.

    References: diffGrad: An Optimization Method for Convolutional Neural Networks (Dubey et al.), 2019.

    With Adam's moments :math:`m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t`,
    :math:`v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2` (both from zero), the diffGrad friction coefficient
    (the paper's "AbsSig" of :math:`\Delta g_t = g_{t-1} - g_t`, with :math:`g_0 = 0`)

    .. math::
        \xi_t = \frac{1}{1 + e^{-|g_{t-1} - g_t|}} \in [\tfrac12, 1)

    scales the Adam step elementwise:

    .. math::
        \theta_{t} = \theta_{t-1} - \alpha\,\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,
                     \frac{\xi_t\, m_t}{\sqrt{v_t} + \epsilon}.

    Where the gradient barely changes (a flat region or near an optimum) :math:`\xi_t \approx 1/2` and the step is
    halved; where it changes fast the step is close to Adam's. The bias correction and :math:`\epsilon` placement
    (in the step size, as in ``torch.optim.Adam``'s original form) follow the authors' code.

    Symbols: :math:`\alpha` = ``lr``, :math:`(\beta_1, \beta_2)` = ``betas``, :math:`\epsilon` = ``eps``,
    :math:`g_t` = the gradient (negated when ``maximize``) plus :math:`\lambda\theta_{t-1}` when
    ``weight_decay`` = :math:`\lambda > 0` and ``decouple=False`` (the authors' code: L2, and the decayed
    gradient is the one remembered as :math:`g_{t-1}`). ``decouple=True`` gives AdamW-style decay
    :math:`\theta \leftarrow (1 - \alpha\lambda)\theta` instead (the default of ``pytorch_optimizer.DiffGrad``).

    Args:
        params: parameters or parameter-group dicts (every hyperparameter below may be set per group).
        lr: :math:`\alpha \ge 0`.
        betas: :math:`(\beta_1, \beta_2)`, each in ``[0, 1)``.
        eps: ``> 0``.
        weight_decay: :math:`\lambda \ge 0`.
        decouple: decoupled weight decay instead of L2.
        foreach: multi-tensor implementation; ``None`` picks it when every parameter is on CUDA.
        maximize: ascend the objective instead.
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`).

    State per parameter: ``step``, ``exp_avg`` (:math:`m`), ``exp_avg_sq`` (:math:`v`), ``previous_grad``
    (:math:`g_{t-1}`), each of the parameter's shape.

    Example:
        >>> import torch
        >>> from paperzoo.optim import DiffGrad
        >>> w = torch.nn.Parameter(torch.tensor([2.0, -3.0]))
        >>> opt = DiffGrad([w], lr=0.1)
        >>> for _ in range(500):
        ...     opt.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     opt.step()
        >>> bool(w.abs().max() < 0.1)
        True
    """

    state_names = ("exp_avg", "exp_avg_sq", "previous_grad")

    @accepts(**ADAM_HYPERPARAMETERS, decouple=Flag())
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decouple: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        nonfinite: str = "raise",
    ):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decouple=decouple, foreach=foreach,
                        maximize=maximize, nonfinite=nonfinite)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_adam_group(group)
        check_flag("decouple", group["decouple"])

    def _update(self, group, step, params, grads, states, foreach):
        beta1, beta2 = group["betas"]
        _diffgrad_update(params, grads, states[0], states[1], states[2], step=step, lr=group["lr"], beta1=beta1,
                        beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
                        decouple=group["decouple"], maximize=group["maximize"], foreach=foreach)
