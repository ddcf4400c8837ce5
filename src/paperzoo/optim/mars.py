r"""MARS: preconditioned updates driven by a scaled, clipped stochastic-recursive-momentum gradient estimate.

References: MARS: Unleashing the Power of Variance Reduction for Training Large Models (Yuan, Liu, Wu, Zhou, Gu),
2024.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from paperzoo.core.checks import check_choice, check_nonnegative, check_tensor
from paperzoo.core.accepts import Choice, Flag, Function, Int, Real, Tensors, accepts
from paperzoo.optim._common import ADAM_HYPERPARAMETERS, ElementwiseOptimizer, check_adam_group

__all__ = ["MARS", "mars_update"]

MARS_TYPES = ("adamw", "lion")


def _example_update(ctx):
    def lists(draw):
        return [draw(shape, generator=ctx.generator, dtype=ctx.dtype) for shape in ((3, 2), (4,))]
    return dict(params=lists(torch.randn), grads=lists(torch.randn), exp_avgs=lists(torch.randn),
                exp_avg_sqs=lists(torch.rand), last_grads=lists(torch.randn), step=3, lr=1e-2, beta1=0.95,
                beta2=0.99, eps=1e-8, gamma=0.025, weight_decay=0.1, mars_type="adamw", maximize=False, foreach=False)


def _mars_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    last_grads: list[torch.Tensor],
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    gamma: float,
    weight_decay: float,
    mars_type: str,
    maximize: bool,
    foreach: bool,
) -> None:
    # The unvalidated kernel of mars_update, for the optimizer's per-step loop.
    t = step + 1
    scale = gamma * beta1 / (1.0 - beta1)
    if maximize:
        grads = torch._foreach_neg(grads) if foreach else [-g for g in grads]
    if foreach:
        # c_t = g_t + scale * (g_t - g_{t-1})
        c = torch._foreach_sub(grads, last_grads)
        torch._foreach_mul_(c, scale)
        torch._foreach_add_(c, grads)
        norms = torch._foreach_norm(c)
        torch._foreach_clamp_min_(norms, 1.0)
        torch._foreach_div_(c, norms)
        torch._foreach_lerp_(exp_avgs, c, 1.0 - beta1)
        if weight_decay != 0:
            torch._foreach_mul_(params, 1.0 - lr * weight_decay)
        if mars_type == "adamw":
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, c, c, value=1.0 - beta2)
            denom = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_div_(denom, math.sqrt(1.0 - beta2**t))
            torch._foreach_add_(denom, eps)
            torch._foreach_mul_(denom, 1.0 - beta1**t)
            torch._foreach_addcdiv_(params, exp_avgs, denom, value=-lr)
        else:
            torch._foreach_add_(params, torch._foreach_sign(exp_avgs), alpha=-lr)
        torch._foreach_copy_(last_grads, grads)
        return
    for theta, g, m, v, g_prev in zip(params, grads, exp_avgs, exp_avg_sqs, last_grads):
        c = torch.sub(g, g_prev).mul_(scale).add_(g)
        # Per-tensor clipping of c_t to unit norm: the paper's safeguard against the correction term blowing up.
        c.div_(torch.linalg.vector_norm(c).clamp_min_(1.0))
        m.lerp_(c, 1.0 - beta1)
        if weight_decay != 0:
            theta.mul_(1.0 - lr * weight_decay)
        if mars_type == "adamw":
            v.mul_(beta2).addcmul_(c, c, value=1.0 - beta2)
            denom = v.sqrt().div_(math.sqrt(1.0 - beta2**t)).add_(eps).mul_(1.0 - beta1**t)
            theta.addcdiv_(m, denom, value=-lr)
        else:
            theta.add_(m.sign(), alpha=-lr)
        g_prev.copy_(g)


@accepts(params=Tensors(), grads=Tensors(like="params"), exp_avgs=Tensors(like="params"),
         exp_avg_sqs=Tensors(like="params"), last_grads=Tensors(like="params"), step=Int(ge=0), lr=Real(ge=0),
         beta1=Real(ge=0, lt=1), beta2=Real(ge=0, lt=1), eps=Real(gt=0), gamma=Real(ge=0), weight_decay=Real(ge=0),
         mars_type=Choice(*MARS_TYPES), maximize=Flag(), foreach=Flag(), example=_example_update,
         mutates=("params", "exp_avgs", "exp_avg_sqs", "last_grads"))
def mars_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    last_grads: list[torch.Tensor],
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    gamma: float,
    weight_decay: float,
    mars_type: str,
    maximize: bool,
    foreach: bool,
) -> None:
    """One approximate-MARS step, in place, for tensors that have all taken ``step`` steps before this one.

    All lists have equal length and matching shapes; ``last_grads`` holds the previous step's gradients and is
    overwritten with the current ones. See :class:`MARS` for the update.
    """
    for i, v in enumerate(exp_avg_sqs):
        check_tensor(f"exp_avg_sqs[{i}]", v, nonnegative=True)
    _mars_update(params, grads, exp_avgs, exp_avg_sqs, last_grads, step=step, lr=lr, beta1=beta1, beta2=beta2,
            eps=eps, gamma=gamma, weight_decay=weight_decay, mars_type=mars_type, maximize=maximize, foreach=foreach)


class MARS(ElementwiseOptimizer):
    r"""MARS (approximate variant): AdamW or Lion preconditioning of a variance-reduced gradient estimate.

    References: MARS: Unleashing the Power of Variance Reduction for Training Large Models (Yuan et al.), 2024.

    At step :math:`t = 1, 2, \dots`, with :math:`g_t = \nabla f(x_t, \xi_t)` and :math:`g_0 = 0`, MARS-approx
    (the paper's approximate variant: the gradient at the previous iterate on the current batch,
    :math:`\nabla f(x_{t-1}, \xi_t)`, is replaced by the previous step's gradient :math:`g_{t-1}`) computes per
    parameter tensor

    .. math::
        c_t &= g_t + \gamma\,\frac{\beta_1}{1 - \beta_1}\,(g_t - g_{t-1}) \\
        \tilde c_t &= c_t / \max(1, \|c_t\|_2) \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\,\tilde c_t

    and then, for ``mars_type="adamw"`` (MARS-AdamW),

    .. math::
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\,\tilde c_t^2 \\
        x_{t+1} &= x_t - \eta\left(\frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}
                    + \lambda x_t\right)

    or, for ``mars_type="lion"`` (MARS-Lion), :math:`x_{t+1} = x_t - \eta(\mathrm{sign}(m_t) + \lambda x_t)`.
    The :math:`\gamma`-scaled correction is the stochastic-recursive-momentum (STORM) term that cancels part of the
    gradient noise; :math:`\gamma = 0` gives AdamW (resp. Lion-style sign momentum) on the clipped gradient.

    Symbols: :math:`\eta` = ``lr``, :math:`(\beta_1, \beta_2)` = ``betas``, :math:`\gamma` = ``gamma``,
    :math:`\epsilon` = ``eps``, :math:`\lambda` = ``weight_decay`` (decoupled), :math:`g_t` negated when
    ``maximize``. Defaults are those of the authors' code (``lr=3e-3``, ``betas=(0.95, 0.99)``,
    ``gamma=0.025``, ``eps=1e-8``); the bias correction and :math:`\epsilon` placement follow it too.

    Deviations from the authors' code, all deliberate:

    - every parameter gets the MARS update. The official optimizer by default sends 1-D parameters (biases, norms)
      to a plain AdamW with its own ``lr_1d``, ``betas_1d`` and ``weight_decay_1d``; to do that here, give them
      their own ``torch.optim.AdamW``.
    - only the approximate variant. Exact MARS needs :math:`\nabla f(x_{t-1}, \xi_t)`, a second gradient per
      step at the previous iterate on the current batch, which ``step()`` cannot obtain from ``.grad``.
    - MARS-Shampoo is not included; the state keeps ``exp_avg_sq`` for ``mars_type="lion"`` too (unused there) so
      that one parameter can switch type between groups without special cases.

    Args:
        params: parameters or parameter-group dicts (every hyperparameter below may be set per group).
        lr: learning rate :math:`\eta \ge 0`.
        betas: :math:`(\beta_1, \beta_2)`, each in ``[0, 1)``.
        eps: added to the bias-corrected :math:`\sqrt{v_t}`, ``> 0``.
        weight_decay: decoupled weight decay :math:`\lambda \ge 0`.
        gamma: variance-reduction scale :math:`\gamma \ge 0`.
        mars_type: ``"adamw"`` or ``"lion"``.
        foreach: use the multi-tensor implementation; ``None`` picks it when every parameter is on CUDA.
        maximize: ascend the objective instead.
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`).

    State per parameter: ``step``, ``exp_avg`` (:math:`m`), ``exp_avg_sq`` (:math:`v`), ``last_grad``
    (:math:`g_{t-1}`), each of the parameter's shape.

    Example:
        >>> import torch
        >>> from paperzoo.optim import MARS
        >>> w = torch.nn.Parameter(torch.tensor([2.0, -3.0]))
        >>> opt = MARS([w], lr=0.05)
        >>> for _ in range(500):
        ...     opt.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     opt.step()
        >>> bool(w.abs().max() < 0.1)
        True
    """

    state_names = ("exp_avg", "exp_avg_sq", "last_grad")

    @accepts(**ADAM_HYPERPARAMETERS, gamma=Real(ge=0), mars_type=Choice(*MARS_TYPES))
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.95, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        gamma: float = 0.025,
        mars_type: str = "adamw",
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        nonfinite: str = "raise",
    ):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, gamma=gamma, mars_type=mars_type,
                        foreach=foreach, maximize=maximize, nonfinite=nonfinite)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_adam_group(group)
        group["gamma"] = check_nonnegative("gamma", group["gamma"])
        check_choice("mars_type", group["mars_type"], MARS_TYPES)

    def _update(self, group, step, params, grads, states, foreach):
        beta1, beta2 = group["betas"]
        _mars_update(params, grads, states[0], states[1], states[2], step=step, lr=group["lr"], beta1=beta1,
                    beta2=beta2, eps=group["eps"], gamma=group["gamma"], weight_decay=group["weight_decay"],
                    mars_type=group["mars_type"], maximize=group["maximize"], foreach=foreach)
