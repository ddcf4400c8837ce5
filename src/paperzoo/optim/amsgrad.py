"""AMSGrad: Adam whose normaliser is the running maximum of the second-moment estimate.

References: On the Convergence of Adam and Beyond (Reddi, Kale, Kumar), 2018.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from paperzoo.core.accepts import Choice, Flag, Function, Int, Real, Tensors, accepts
from paperzoo.core.checks import check_tensor
from paperzoo.optim._common import ADAM_HYPERPARAMETERS, ElementwiseOptimizer, check_adam_group, check_flag

__all__ = ["AMSGrad", "amsgrad_update"]


def _example_update(ctx):
    def lists(draw):
        return [draw(shape, generator=ctx.generator, dtype=ctx.dtype) for shape in ((3, 2), (4,))]
    v = lists(torch.rand)
    return dict(params=lists(torch.randn), grads=lists(torch.randn), exp_avgs=lists(torch.randn), exp_avg_sqs=v,
                max_exp_avg_sqs=[t + 0.1 for t in v], step=3, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8,
                weight_decay=0.1, decoupled_weight_decay=False, bias_correction=True, maximize=False, foreach=False)


def _amsgrad_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    max_exp_avg_sqs: list[torch.Tensor],
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    bias_correction: bool,
    maximize: bool,
    foreach: bool,
) -> None:
    # The unvalidated kernel of amsgrad_update, for the optimizer's per-step loop.
    t = step + 1
    if bias_correction:
        bias_correction1 = 1 - beta1**t
        bias_correction2_sqrt = (1 - beta2**t) ** 0.5
    else:
        bias_correction1 = bias_correction2_sqrt = 1.0
    kwargs = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                  decoupled_weight_decay=decoupled_weight_decay, step_size=lr / bias_correction1,
                  bias_correction2_sqrt=bias_correction2_sqrt, maximize=maximize)
    if foreach:
        _amsgrad_foreach(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, **kwargs)
    else:
        _amsgrad_single(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, **kwargs)


@accepts(params=Tensors(), grads=Tensors(like="params"), exp_avgs=Tensors(like="params"),
         exp_avg_sqs=Tensors(like="params"), max_exp_avg_sqs=Tensors(like="params"), step=Int(ge=0), lr=Real(ge=0),
         beta1=Real(ge=0, lt=1), beta2=Real(ge=0, lt=1), eps=Real(gt=0), weight_decay=Real(ge=0),
         decoupled_weight_decay=Flag(), bias_correction=Flag(), maximize=Flag(), foreach=Flag(),
         example=_example_update, mutates=("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"))
def amsgrad_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    max_exp_avg_sqs: list[torch.Tensor],
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    bias_correction: bool,
    maximize: bool,
    foreach: bool,
) -> None:
    """One AMSGrad step, in place, for tensors that have all taken ``step`` steps before this one.

    The update is documented in :class:`AMSGrad`; the operations are those of ``torch.optim.Adam(amsgrad=True)``
    in the same order, so the default (``bias_correction=True``) reproduces its trajectories bit for bit.
    ``foreach`` selects the multi-tensor (``torch._foreach_*``) implementation, which computes the same numbers.
    """
    for i, v in enumerate(exp_avg_sqs):
        check_tensor(f"exp_avg_sqs[{i}]", v, nonnegative=True)
    for i, v in enumerate(max_exp_avg_sqs):
        check_tensor(f"max_exp_avg_sqs[{i}]", v, nonnegative=True)
    _amsgrad_update(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step=step, lr=lr, beta1=beta1, beta2=beta2,
            eps=eps, weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
            bias_correction=bias_correction, maximize=maximize, foreach=foreach)


def _amsgrad_single(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, lr, beta1, beta2, eps, weight_decay,
                    decoupled_weight_decay, step_size, bias_correction2_sqrt, maximize):
    for x, g, m, v, v_hat in zip(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs):
        if maximize:
            g = -g
        if weight_decay != 0:
            if decoupled_weight_decay:
                x.mul_(1 - lr * weight_decay)
            else:
                g = g.add(x, alpha=weight_decay)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        torch.maximum(v_hat, v, out=v_hat)
        denom = (v_hat.sqrt() / bias_correction2_sqrt).add_(eps)
        x.addcdiv_(m, denom, value=-step_size)


def _amsgrad_foreach(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, lr, beta1, beta2, eps, weight_decay,
                     decoupled_weight_decay, step_size, bias_correction2_sqrt, maximize):
    if maximize:
        grads = torch._foreach_neg(grads)
    if weight_decay != 0:
        if decoupled_weight_decay:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        else:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
    torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
    denom = torch._foreach_sqrt(max_exp_avg_sqs)
    torch._foreach_div_(denom, bias_correction2_sqrt)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, -step_size)


class AMSGrad(ElementwiseOptimizer):
    r"""AMSGrad: Adam normalised by the running maximum of its second-moment estimate ("long-term memory").

    References: On the Convergence of Adam and Beyond (Reddi, Kale, Kumar), 2018.

    For steps :math:`t = 1, 2, \dots`, with :math:`m_0 = v_0 = \hat v_0 = 0`:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \\
        x_t &= x_{t-1} - \frac{\alpha_t}{1 - \beta_1^t}\,
               \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    Symbols: :math:`\alpha_t` = ``lr``, :math:`\beta_1, \beta_2` = ``betas``, :math:`\epsilon` = ``eps``,
    :math:`g_t` = the gradient (negated when ``maximize``), plus :math:`\lambda x_{t-1}` when
    ``weight_decay`` = :math:`\lambda > 0` and ``decoupled_weight_decay=False``; with
    ``decoupled_weight_decay=True`` the decay is AdamW-style, :math:`x \leftarrow (1 - \alpha_t\lambda)x`.

    **Conventions.** The default is exactly ``torch.optim.Adam(amsgrad=True)``: the maximum is taken over the
    *uncorrected* :math:`v_t` and Adam's bias corrections are then applied to :math:`m_t` and
    :math:`\hat v_t`. The paper's Algorithm 2 differs in three ways: it has no bias correction, no
    :math:`\epsilon`, and analyses a decaying :math:`\alpha_t = \alpha/\sqrt{t}` (and, for the regret bound, a
    decaying :math:`\beta_{1t}`). ``bias_correction=False`` gives the paper's update
    :math:`x_t = x_{t-1} - \alpha_t m_t / (\sqrt{\hat v_t} + \epsilon)`; the :math:`\alpha/\sqrt{t}` schedule
    is an lr scheduler away (``LambdaLR(opt, lambda i: (i + 1) ** -0.5)``), and a small ``eps`` stands in for
    the paper's zero.

    Args:
        params: parameters or parameter-group dicts (any hyperparameter below may be set per group).
        lr: learning rate :math:`\alpha_t`, ``>= 0``.
        betas: :math:`(\beta_1, \beta_2)`, each in ``[0, 1)``.
        eps: added to the denominator, ``> 0`` (zero would give ``0 / 0`` where gradients have been zero).
        weight_decay: :math:`\lambda`, ``>= 0``.
        decoupled_weight_decay: AdamW-style decay instead of an L2 term in the gradient.
        bias_correction: Adam's bias corrections (``torch.optim`` convention); ``False`` for the paper's form.
        foreach: use the multi-tensor implementation; ``None`` picks it when every parameter is on CUDA.
        maximize: ascend the objective instead of descending it.
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`).

    State per parameter: ``step`` (CPU scalar tensor), ``exp_avg`` (:math:`m`), ``exp_avg_sq`` (:math:`v`) and
    ``max_exp_avg_sq`` (:math:`\hat v`), each of the parameter's shape: the names ``torch.optim.Adam`` uses.

    Example:
        >>> import torch
        >>> from paperzoo.optim import AMSGrad
        >>> w = torch.nn.Parameter(torch.tensor([2.0, -3.0]))
        >>> opt = AMSGrad([w], lr=0.1)
        >>> for _ in range(300):
        ...     opt.zero_grad()
        ...     loss = (w ** 2).sum()
        ...     loss.backward()
        ...     opt.step()
        >>> bool(w.abs().max() < 0.1)
        True
    """

    state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    @accepts(**ADAM_HYPERPARAMETERS, decoupled_weight_decay=Flag(), bias_correction=Flag())
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        decoupled_weight_decay: bool = False,
        bias_correction: bool = True,
        foreach: bool | None = None,
        maximize: bool = False,
        nonfinite: str = "raise",
    ):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay, bias_correction=bias_correction,
                        foreach=foreach, maximize=maximize, nonfinite=nonfinite)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_adam_group(group)
        check_flag("decoupled_weight_decay", group["decoupled_weight_decay"])
        check_flag("bias_correction", group["bias_correction"])

    def _update(self, group, step, params, grads, states, foreach):
        beta1, beta2 = group["betas"]
        _amsgrad_update(params, grads, *states, step=step, lr=group["lr"], beta1=beta1, beta2=beta2,
                       eps=group["eps"], weight_decay=group["weight_decay"],
                       decoupled_weight_decay=group["decoupled_weight_decay"],
                       bias_correction=group["bias_correction"], maximize=group["maximize"], foreach=foreach)
