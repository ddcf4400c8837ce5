"""ADOPT: Adam with the current gradient left out of its own normaliser.

References: ADOPT: Modified Adam Can Converge with Any β_2 with the Optimal Rate (Taniguchi et al.), 2024.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from paperzoo.core.checks import check_number, check_tensor
from paperzoo.core.accepts import Choice, Flag, Function, Int, Real, Tensors, accepts
from paperzoo.optim._common import ADAM_HYPERPARAMETERS, ElementwiseOptimizer, check_adam_group, check_flag

__all__ = ["ADOPT", "adopt_clip", "adopt_update"]


@accepts(step=Int(ge=1))
def adopt_clip(step: int) -> float:
    """ADOPT's default clipping bound :math:`c_t = t^{1/4}` (Algorithm 2 of the paper).

    A module-level function rather than a lambda so that a ``state_dict`` holding it can be ``torch.save``-d.
    """
    return _adopt_clip(step)


def _adopt_clip(step: int) -> float:
    """Unchecked :func:`adopt_clip` (the optimizer's step)."""
    return step**0.25


def _example_update(ctx):
    def lists(draw):
        return [draw(shape, generator=ctx.generator, dtype=ctx.dtype) for shape in ((3, 2), (4,))]
    return dict(params=lists(torch.randn), grads=lists(torch.randn), exp_avgs=lists(torch.randn),
                exp_avg_sqs=lists(torch.rand), step=3, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.1,
                decouple=False, clip_lambda=adopt_clip, maximize=False, foreach=False)


def _adopt_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decouple: bool,
    clip_lambda: Callable[[int], float] | None,
    maximize: bool,
    foreach: bool,
) -> None:
    # The unvalidated kernel of adopt_update, for the optimizer's per-step loop.
    clip = None
    if step > 0 and clip_lambda is not None:
        clip = check_number(f"clip_lambda({step})", clip_lambda(step), low=0.0)
    kwargs = dict(step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                  decouple=decouple, clip=clip, maximize=maximize)
    if foreach:
        _adopt_foreach(params, grads, exp_avgs, exp_avg_sqs, **kwargs)
    else:
        _adopt_single(params, grads, exp_avgs, exp_avg_sqs, **kwargs)


@accepts(params=Tensors(), grads=Tensors(like="params"), exp_avgs=Tensors(like="params"),
         exp_avg_sqs=Tensors(like="params"), step=Int(ge=0), lr=Real(ge=0), beta1=Real(ge=0, lt=1),
         beta2=Real(ge=0, lt=1), eps=Real(gt=0), weight_decay=Real(ge=0), decouple=Flag(),
         clip_lambda=Function(optional=True), maximize=Flag(), foreach=Flag(), example=_example_update,
         mutates=("params", "exp_avgs", "exp_avg_sqs"))
def adopt_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decouple: bool,
    clip_lambda: Callable[[int], float] | None,
    maximize: bool,
    foreach: bool,
) -> None:
    """One ADOPT step, in place, for tensors that have all taken ``step`` steps before this one.

    ``step == 0`` only initialises :math:`v_0 = g_0^2`; later steps apply the update documented in
    :class:`ADOPT`. All lists have equal length and their tensors matching shapes; ``foreach`` selects the
    multi-tensor (``torch._foreach_*``) implementation, which computes the same numbers.
    """
    for i, v in enumerate(exp_avg_sqs):
        check_tensor(f"exp_avg_sqs[{i}]", v, nonnegative=True)
    _adopt_update(params, grads, exp_avgs, exp_avg_sqs, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
            weight_decay=weight_decay, decouple=decouple, clip_lambda=clip_lambda, maximize=maximize, foreach=foreach)


def _adopt_single(params, grads, exp_avgs, exp_avg_sqs, *, step, lr, beta1, beta2, eps, weight_decay, decouple,
                  clip, maximize):
    for theta, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        if maximize:
            g = -g
        if weight_decay != 0 and not decouple:
            g = g.add(theta, alpha=weight_decay)
        if step == 0:
            v.addcmul_(g, g)
            continue
        if weight_decay != 0 and decouple:
            theta.add_(theta, alpha=-lr * weight_decay)
        normed = v.sqrt().clamp_(min=eps)
        torch.div(g, normed, out=normed)
        if clip is not None:
            normed.clamp_(-clip, clip)
        m.lerp_(normed, 1 - beta1)
        theta.add_(m, alpha=-lr)
        # v is refreshed only after the step: the normaliser above never saw g_t (the point of the method).
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)


def _adopt_foreach(params, grads, exp_avgs, exp_avg_sqs, *, step, lr, beta1, beta2, eps, weight_decay, decouple,
                   clip, maximize):
    if maximize:
        grads = torch._foreach_neg(grads)
    if weight_decay != 0 and not decouple:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    if step == 0:
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads)
        return
    if weight_decay != 0 and decouple:
        torch._foreach_add_(params, params, alpha=-lr * weight_decay)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_clamp_min_(denom, eps)
    normed = torch._foreach_div(grads, denom)
    del denom
    if clip is not None:
        torch._foreach_clamp_min_(normed, -clip)
        torch._foreach_clamp_max_(normed, clip)
    torch._foreach_lerp_(exp_avgs, normed, 1 - beta1)
    del normed
    torch._foreach_add_(params, exp_avgs, alpha=-lr)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)


class ADOPT(ElementwiseOptimizer):
    r"""ADOPT: Adam that normalises the gradient by the *previous* second-moment estimate, before momentum.

    References: ADOPT: Modified Adam Can Converge with Any β_2 with the Optimal Rate (Taniguchi et al.), 2024.

    The first step only initialises the second moment, :math:`v_0 = g_0^2`, and leaves the parameters alone.
    Every later step :math:`t = 1, 2, \dots` computes (Algorithm 2 of the paper; Algorithm 1 without clipping)

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\,
               \mathrm{clip}\!\left(\frac{g_t}{\max(\sqrt{v_{t-1}}, \epsilon)},\; c_t\right) \\
        \theta_t &= \theta_{t-1} - \alpha_t m_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2

    with :math:`m_0 = 0`, elementwise clipping to :math:`[-c_t, c_t]` and :math:`c_t` = ``clip_lambda(t)``
    (default :math:`t^{1/4}`; ``clip_lambda=None`` is the unclipped Algorithm 1). Because :math:`v_{t-1}` does
    not contain :math:`g_t`, the normalised gradient is an unbiased direction for any :math:`\beta_2`, which is
    what lets ADOPT converge without tuning :math:`\beta_2` to the problem.

    Symbols: :math:`\alpha_t` = ``lr``, :math:`\beta_1, \beta_2` = ``betas``, :math:`\epsilon` = ``eps``,
    :math:`g_t` = the gradient (negated when ``maximize``), plus :math:`\lambda\theta_{t-1}` when
    ``weight_decay`` = :math:`\lambda > 0` and ``decouple=False`` (L2, applied at step 0 too). With
    ``decouple=True`` the decay is AdamW-style, :math:`\theta \leftarrow \theta - \alpha_t\lambda\theta`, from
    step 1 on. The semantics, including where the step count enters the clip, are those of the authors'
    ``torch-adopt`` package.

    Args:
        params: parameters or parameter-group dicts (any hyperparameter below may be set per group).
        lr: learning rate :math:`\alpha_t`, ``>= 0``.
        betas: :math:`(\beta_1, \beta_2)`, each in ``[0, 1)``.
        eps: floor on :math:`\sqrt{v_{t-1}}`, ``> 0``.
        clip_lambda: ``t -> c_t`` with ``t >= 1`` the step index, ``"adopt"`` (default) for the paper's
            :math:`c_t = t^{1/4}` (:func:`adopt_clip`), or ``None`` for no clipping. Stored in the param group:
            the default keeps the ``state_dict`` loadable with ``torch.load(weights_only=True)``; a callable there
            needs ``weights_only=False``.
        weight_decay: :math:`\lambda`, ``>= 0``.
        decouple: decoupled (AdamW-style) weight decay instead of an L2 term in the gradient.
        foreach: use the multi-tensor implementation; ``None`` picks it when every parameter is on CUDA.
        maximize: ascend the objective instead of descending it.
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`).

    State per parameter: ``step`` (CPU scalar tensor, steps taken including the initialising one),
    ``exp_avg`` (:math:`m`, shape of the parameter) and ``exp_avg_sq`` (:math:`v`, shape of the parameter).

    Example:
        >>> import torch
        >>> from paperzoo.optim import ADOPT
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> w = torch.nn.Parameter(torch.tensor([2.0, -3.0]))
        >>> opt = ADOPT([w], lr=0.1)
        >>> for _ in range(300):
        ...     opt.zero_grad()
        ...     loss = (w ** 2).sum()
        ...     loss.backward()
        ...     opt.step()
        >>> bool(w.abs().max() < 0.1)
        True
    """

    state_names = ("exp_avg", "exp_avg_sq")

    @accepts(**ADAM_HYPERPARAMETERS, decouple=Flag())
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.9999),
        eps: float = 1e-6,
        clip_lambda: Callable[[int], float] | str | None = "adopt",
        weight_decay: float = 0.0,
        decouple: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        nonfinite: str = "raise",
    ):
        defaults = dict(lr=lr, betas=betas, eps=eps, clip_lambda=clip_lambda, weight_decay=weight_decay,
                        decouple=decouple, foreach=foreach, maximize=maximize, nonfinite=nonfinite)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_adam_group(group)
        check_flag("decouple", group["decouple"])
        clip_lambda = group["clip_lambda"]
        if clip_lambda is not None and clip_lambda != "adopt" and not callable(clip_lambda):
            raise TypeError(f"clip_lambda must be callable, 'adopt' or None, got {clip_lambda!r}")

    def _update(self, group, step, params, grads, states, foreach):
        beta1, beta2 = group["betas"]
        _adopt_update(params, grads, states[0], states[1], step=step, lr=group["lr"], beta1=beta1, beta2=beta2,
                     eps=group["eps"], weight_decay=group["weight_decay"], decouple=group["decouple"],
                     clip_lambda=_adopt_clip if group["clip_lambda"] == "adopt" else group["clip_lambda"], maximize=group["maximize"], foreach=foreach)
