r"""Clip-RAdaGradD and Clip-AdamD: AdaGrad and Adam with gradient clipping and delayed (past-only) stepsizes.

References: Gradient Clipping Improves AdaGrad when the Noise Is Heavy-Tailed (Chezhegov, Klyukin, Semenov,
Beznosikov, Gasnikov, Horváth, Takáč, Gorbunov), 2024. (Later versions retitled "Clipping Improves Adam-Norm and
AdaGrad-Norm when the Noise Is Heavy-Tailed".)

Both optimizers share one step driver, :class:`_ClippedAdaptive`; they differ in one hook, the accumulator
update (a sum for AdaGrad, an exponential average for Adam) and in whether a first moment is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from paperzoo.core.accepts import Choice, Flag, Real, accepts
from paperzoo.core.checks import check_nonnegative, check_positive
from paperzoo.optim._common import (ADAM_HYPERPARAMETERS, COMMON_HYPERPARAMETERS, CheckedOptimizer, check_betas,
                                     check_dense_grad)
from paperzoo.optim.clipping import _clip_by_norm, _clip_coordinatewise

__all__ = ["ClipRAdaGradD", "ClipAdamD"]

_VERSIONS = ("norm", "coordinate")
_CLIP_HYPERPARAMETERS = dict(COMMON_HYPERPARAMETERS, clip_level=Real(gt=0, optional=True), b0=Real(gt=0),
                             version=Choice(*_VERSIONS), delay=Flag())


class _ClippedAdaptive(CheckedOptimizer):
    r"""Step driver shared by :class:`ClipRAdaGradD` and :class:`ClipAdamD`.

    Per step and group: form :math:`g_t` (maximize, L2 decay), clip it, and move by
    :math:`\gamma\, d_t / b` where :math:`d_t` is the clipped gradient (or its momentum) and :math:`b` the square
    root of the accumulator, read *before* (``delay=True``) or *after* (``delay=False``) this step's clipped
    gradient enters it. Subclasses implement :meth:`_accumulate` and set ``momentum``.
    """

    momentum = False

    def _check_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_nonnegative("lr", group["lr"])
        if group["clip_level"] is not None:
            group["clip_level"] = check_positive("clip_level", group["clip_level"])
        group["b0"] = check_positive("b0", group["b0"])
        group["weight_decay"] = check_nonnegative("weight_decay", group["weight_decay"])

    def _accumulate(self, group: dict[str, Any], sums: list[torch.Tensor], increments: list[torch.Tensor],
                    foreach: bool) -> None:
        """``sums <- combine(sums, increments)`` in place (increments are squared clipped gradients)."""
        raise NotImplementedError

    def _init_state(self, group, p, state):
        state["step"] = torch.tensor(0.0, dtype=torch.float32)
        b0_sq = group["b0"] ** 2
        if group["version"] == "norm":
            # One scalar stepsize per group; every parameter keeps a copy so that state_dict stays per-parameter.
            state["sum_sq"] = torch.tensor(b0_sq, dtype=p.dtype, device=p.device)
        else:
            state["sum_sq"] = torch.full_like(p, b0_sq, memory_format=torch.preserve_format)
        if self.momentum:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._skip_for_nonfinite():
            return loss
        name = type(self).__name__
        for group in self.param_groups:
            params, grads, sums, avgs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                check_dense_grad(name, p.grad)
                if torch.is_complex(p):
                    raise RuntimeError(f"{name} does not support complex parameters")
                state = self.state[p]
                if len(state) == 0:
                    self._init_state(group, p, state)
                params.append(p)
                grads.append(p.grad)
                sums.append(state["sum_sq"])
                avgs.append(state.get("exp_avg"))
                steps.append(state["step"])
            if not params:
                continue
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.device.type == "cuda" for p in params)
            self._update_group(group, params, grads, sums, avgs, foreach)
            for counter in steps:
                counter += 1
        return loss

    def _update_group(self, group, params, grads, sums, avgs, foreach):
        lr, wd, level = group["lr"], group["weight_decay"], group["clip_level"]
        if group["maximize"]:
            grads = torch._foreach_neg(grads) if foreach else [-g for g in grads]
        if wd != 0:
            grads = (torch._foreach_add(grads, params, alpha=wd) if foreach
                     else [g.add(p, alpha=wd) for g, p in zip(grads, params)])
        norm_version = group["version"] == "norm"
        if level is not None:
            if norm_version:
                grads, _ = _clip_by_norm(grads, level)
            elif foreach:
                grads = torch._foreach_clamp_min(grads, -level)
                torch._foreach_clamp_max_(grads, level)
            else:
                grads = [_clip_coordinatewise(g, level) for g in grads]
        if norm_version:
            total = torch.stack([(g * g).sum() for g in grads]).sum()
            increments = [total.to(s.dtype).expand_as(s) for s in sums]
        else:
            increments = torch._foreach_mul(grads, grads) if foreach else [g * g for g in grads]
        if not group["delay"]:
            self._accumulate(group, sums, increments, foreach)
        direction = grads
        if self.momentum:
            beta1 = group["betas"][0]
            if foreach:
                torch._foreach_lerp_(avgs, grads, 1 - beta1)
            else:
                for m, g in zip(avgs, grads):
                    m.lerp_(g, 1 - beta1)
            direction = avgs
        if norm_version:
            # A 0-dim b_t per tensor, expanded so that the foreach kernels see same-shape operands.
            denom = [s.sqrt().expand_as(d) for s, d in zip(sums, direction)]
        else:
            denom = torch._foreach_sqrt(sums) if foreach else [s.sqrt() for s in sums]
        if foreach:
            torch._foreach_add_(params, torch._foreach_div(direction, denom), alpha=-lr)
        else:
            for p, dvec, b in zip(params, direction, denom):
                p.add_(dvec / b, alpha=-lr)
        if group["delay"]:
            # The stepsize of step t + 1 is built from clipped gradients up to t only (the "D" of the method).
            self._accumulate(group, sums, increments, foreach)


class ClipRAdaGradD(_ClippedAdaptive):
    r"""Clip-RAdaGradD: clipped, reweighted AdaGrad with delayed stepsizes (norm or coordinate-wise).

    References: Gradient Clipping Improves AdaGrad when the Noise Is Heavy-Tailed, 2024.

    With :math:`\hat g_t = \operatorname{clip}(\nabla f_{\xi_t}(x_t), \lambda)` and :math:`b_0` = ``b0``, the norm
    version (``version="norm"``, the paper's main method) is

    .. math::
        x_{t+1} &= x_t - \frac{\gamma}{b_t}\,\hat g_t, \\
        b_{t+1}^2 &= b_t^2 + \eta\,\|\hat g_t\|^2,

    with :math:`\operatorname{clip}(g, \lambda) = \min(1, \lambda/\|g\|)\,g` and the norm taken over every
    parameter of the group (one scalar :math:`b_t` per group, AdaGrad-Norm). Because :math:`b_t` depends only on
    :math:`\hat g_0, \dots, \hat g_{t-1}`, the stepsize is independent of the current sample ("delay"), and
    :math:`\eta` ("reweighting") sets how strongly the accumulated clipped gradients shrink it; the paper's
    analysis takes :math:`\eta` of order :math:`\gamma^2` over problem constants. The coordinate-wise version
    (``version="coordinate"``) clips each coordinate to :math:`[-\lambda, \lambda]` and keeps one
    :math:`b_{t,i}` per coordinate, :math:`b_{t+1,i}^2 = b_{t,i}^2 + \eta\hat g_{t,i}^2` (the paper's
    Clip-AdaGradD). ``delay=False`` updates :math:`b` with :math:`\hat g_t` first and then steps (Clip-AdaGrad);
    ``clip_level=None`` removes clipping, so ``ClipRAdaGradD(clip_level=None, delay=False, eta=1)`` is plain
    AdaGrad-Norm and with ``version="coordinate"`` it is ``torch.optim.Adagrad`` with
    ``initial_accumulator_value = b0**2`` and ``eps = 0``.

    Symbols: :math:`\gamma` = ``lr``, :math:`\lambda` = ``clip_level``, :math:`\eta` = ``eta``,
    :math:`b_0` = ``b0``. ``weight_decay`` adds :math:`w x_t` to the gradient before clipping (not in the
    paper); ``maximize`` negates the gradient.

    Deviations: the paper states the method on one vector :math:`x \in \mathbb R^d`; here the norm version takes
    the norm jointly over a parameter group, and a parameter that gets its first gradient late starts from its
    own :math:`b_0` (its copy of the group's scalar).

    Args:
        params: parameters or parameter-group dicts.
        lr: stepsize :math:`\gamma`, ``>= 0``.
        clip_level: :math:`\lambda > 0`, or ``None`` for no clipping.
        eta: reweighting :math:`\eta > 0`.
        b0: initial scale :math:`b_0 > 0` (the first step is :math:`\gamma\hat g_0/b_0` under delay).
        version: ``"norm"`` or ``"coordinate"``.
        delay: use :math:`b_t` built from past clipped gradients only.
        weight_decay: L2 coefficient ``>= 0``.
        foreach: multi-tensor implementation (same numbers); ``None`` picks it on CUDA.
        maximize: ascend instead of descend.
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`).

    State per parameter: ``step``; ``sum_sq`` (:math:`b_t^2`; a 0-dim tensor in the norm version, else the
    parameter's shape).

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([3.0, -4.0]))
        >>> opt = ClipRAdaGradD([w], lr=1.0, clip_level=1.0, b0=1.0)
        >>> for _ in range(200):
        ...     opt.zero_grad()
        ...     (0.5 * (w ** 2).sum()).backward()
        ...     opt.step()
        >>> bool(w.norm() < 1e-2)
        True
    """

    @accepts(**_CLIP_HYPERPARAMETERS, eta=Real(gt=0))
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        clip_level: float | None = 1.0,
        eta: float = 1.0,
        b0: float = 1.0,
        version: str = "norm",
        delay: bool = True,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        nonfinite: str = "raise",
    ):
        defaults = dict(lr=lr, clip_level=clip_level, eta=eta, b0=b0, version=version, delay=delay,
                        weight_decay=weight_decay, foreach=foreach, maximize=maximize, nonfinite=nonfinite)
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        group["eta"] = check_positive("eta", group["eta"])

    def _accumulate(self, group, sums, increments, foreach):
        if foreach:
            torch._foreach_add_(sums, increments, alpha=group["eta"])
        else:
            for s, inc in zip(sums, increments):
                s.add_(inc, alpha=group["eta"])


class ClipAdamD(_ClippedAdaptive):
    r"""Clip-AdamD: Adam with clipped gradients and a delayed second moment (norm or coordinate-wise).

    References: Gradient Clipping Improves AdaGrad when the Noise Is Heavy-Tailed, 2024.

    With :math:`\hat g_t = \operatorname{clip}(\nabla f_{\xi_t}(x_t), \lambda)`,

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\,\hat g_t, \\
        x_{t+1} &= x_t - \frac{\gamma}{b_t}\, m_t, \\
        b_{t+1}^2 &= \beta_2 b_t^2 + (1 - \beta_2)\,\hat g_t^2,

    :math:`m_{-1} = 0`, :math:`b_0` = ``b0``, coordinate-wise by default (``version="coordinate"``: clipping
    and :math:`b` per coordinate, as Adam is used in practice) or with norm clipping and one scalar
    :math:`b_t` per group (``version="norm"``, the paper's Adam-Norm with :math:`\|\hat g_t\|^2`). Like the paper's
    analysis there is no bias correction and no :math:`\epsilon`: :math:`b_0 > 0` keeps the denominator
    positive. ``delay=False`` gives Clip-Adam (the second moment includes :math:`\hat g_t` before the step).

    Symbols: :math:`\gamma` = ``lr``, :math:`(\beta_1, \beta_2)` = ``betas``, :math:`\lambda` = ``clip_level``
    (``None``: no clipping), :math:`b_0` = ``b0``. ``weight_decay`` adds :math:`w x_t` to the gradient before
    clipping (not in the paper).

    Args: as :class:`ClipRAdaGradD`, with ``betas`` in place of ``eta``.

    State per parameter: ``step``, ``sum_sq`` (:math:`b_t^2`), ``exp_avg`` (:math:`m_t`).

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([3.0, -4.0]))
        >>> opt = ClipAdamD([w], lr=0.05, clip_level=1.0, b0=1.0, betas=(0.9, 0.99))
        >>> for _ in range(500):
        ...     opt.zero_grad()
        ...     (0.5 * (w ** 2).sum()).backward()
        ...     opt.step()
        >>> bool(w.norm() < 1e-2)
        True
    """

    momentum = True

    @accepts(**_CLIP_HYPERPARAMETERS, betas=ADAM_HYPERPARAMETERS["betas"])
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        clip_level: float | None = 1.0,
        b0: float = 1e-3,
        version: str = "coordinate",
        delay: bool = True,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        nonfinite: str = "raise",
    ):
        defaults = dict(lr=lr, betas=betas, clip_level=clip_level, b0=b0, version=version, delay=delay,
                        weight_decay=weight_decay, foreach=foreach, maximize=maximize, nonfinite=nonfinite)
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        group["betas"] = check_betas(group["betas"])

    def _accumulate(self, group, sums, increments, foreach):
        beta2 = group["betas"][1]
        if foreach:
            torch._foreach_lerp_(sums, increments, 1 - beta2)
        else:
            for s, inc in zip(sums, increments):
                s.lerp_(inc, 1 - beta2)
