"""Gradient regularization by finite differences (F-GR, B-GR) or by double backpropagation (DB).

References: Understanding Gradient Regularization in Deep Learning: Efficient Finite-Difference Computation and
Implicit Bias (Karakida et al.), 2023.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from paperzoo.core.accepts import Choice, Flag, Function, Int, Real, accepts
from paperzoo.core.checks import check_choice, check_nonnegative, check_positive
from paperzoo.optim._common import check_flag
from paperzoo.optim._common import NONFINITE
from paperzoo.optim.wrappers import ClosureWrapper

__all__ = ["FiniteDifferenceGR", "GR_MODES"]

GR_MODES = ("forward", "backward", "double_backprop")


class FiniteDifferenceGR(ClosureWrapper):
    r"""Gradient regularization (GR): descend :math:`L + \tfrac{\gamma}{2}\|\nabla L\|^2` with any base optimizer.

    References: Understanding Gradient Regularization in Deep Learning: Efficient Finite-Difference Computation
    and Implicit Bias (Karakida et al.), 2023.

    The regularized loss :math:`\tilde L(\theta) = L(\theta) + \frac{\gamma}{2}\|\nabla L(\theta)\|^2` has the
    gradient :math:`\nabla\tilde L = g + \gamma H g` with :math:`g = \nabla L(\theta)` and :math:`H` the Hessian.
    The wrapper writes an estimate of it into ``p.grad`` and calls the base optimizer:

    - ``mode="forward"`` (F-GR, an ascent step then a descent step): with :math:`g' = \nabla L(\theta + \varepsilon
      g)`, :math:`Hg \approx (g' - g)/\varepsilon`, so
      :math:`\nabla\tilde L \approx (1 - \gamma/\varepsilon)\, g + (\gamma/\varepsilon)\, g'`. With
      :math:`\gamma = \varepsilon` this is SAM without the gradient normalisation. Two gradient evaluations.
    - ``mode="backward"`` (B-GR): :math:`g' = \nabla L(\theta - \varepsilon g)`,
      :math:`\nabla\tilde L \approx (1 + \gamma/\varepsilon)\, g - (\gamma/\varepsilon)\, g'`. Two evaluations.
    - ``mode="double_backprop"`` (DB): the exact :math:`g + \gamma H g`, by differentiating
      :math:`\frac12\|g\|^2` through the graph of :math:`g`. In this mode the closure must either return the loss
      without calling ``backward`` (the wrapper then calls ``torch.autograd.grad(..., create_graph=True)``) or
      call ``loss.backward(create_graph=True)``.

    The paper's point is that the finite-difference forms cost two plain backward passes, cheaper than double
    backpropagation, and that F-GR with a fairly large positive :math:`\varepsilon` generalises best (its implicit
    bias towards the rich regime grows with :math:`\varepsilon`, Section 5). Both difference quotients are exact to
    :math:`O(\varepsilon)` (:math:`O(\varepsilon\|g\|^2)` in the gradient).

    With ``normalized=True`` the step is :math:`\varepsilon\, g/\|g\|` (global norm over every group), so that
    :math:`\varepsilon` is a radius as in SAM, and the difference quotient divides by
    :math:`\varepsilon/\|g\|`: the estimate of :math:`Hg` is the same quantity at a different step. The paper's
    equations use the unnormalised step (``normalized=False``, the default).

    Symbols: :math:`\gamma` = ``gamma``, :math:`\varepsilon` = ``eps``. Both may differ per parameter group (the
    difference quotient is then taken with each group's own values; the ascent step uses each group's ``eps``).

    Args:
        params: parameters or parameter-group dicts.
        base_optimizer: ``torch.optim.Optimizer`` subclass (or callable ``param_groups -> Optimizer``).
        gamma: regularization strength :math:`\gamma \ge 0`.
        eps: finite-difference step :math:`\varepsilon > 0` (ignored by ``double_backprop``).
        mode: ``"forward"``, ``"backward"`` or ``"double_backprop"``.
        normalized: take the difference step along :math:`g/\|g\|`.
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`).
        **base_kwargs: the base optimizer's arguments (``lr``, ``momentum`` ...); torch.optim's own names are
            checked with paperzoo's messages, unknown ones by the base optimizer.

    Example:
        >>> import torch
        >>> from paperzoo.optim import FiniteDifferenceGR
        >>> w = torch.nn.Parameter(torch.tensor([2.0, -3.0]))
        >>> opt = FiniteDifferenceGR([w], torch.optim.SGD, gamma=0.05, eps=0.05, lr=0.1)
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

    @accepts(base_optimizer=Function(), gamma=Real(ge=0), eps=Real(gt=0), mode=Choice(*GR_MODES), normalized=Flag(), nonfinite=NONFINITE)
    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 base_optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.SGD, gamma: float = 0.05,
                 eps: float = 0.05, mode: str = "forward", normalized: bool = False, nonfinite: str = "raise",
                 **base_kwargs):
        self.mode = mode
        super().__init__(params, base_optimizer, dict(gamma=gamma, eps=eps, normalized=normalized,
                                                      nonfinite=nonfinite), base_kwargs)

    def _check_group(self, group: dict[str, Any]) -> None:
        group["gamma"] = check_nonnegative("gamma", group["gamma"])
        group["eps"] = check_positive("eps", group["eps"])
        check_flag("normalized", group["normalized"])

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["mode"] = self.mode
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        mode = state_dict.get("mode", self.mode)
        if mode != self.mode:
            raise ValueError(f"mode must match the saved mode {mode!r}, got {self.mode!r}")
        super().load_state_dict(state_dict)

    def _step(self, closure):
        if self.mode == "double_backprop":
            return self._double_backprop(closure)
        loss = closure()
        params = [(group, p) for group in self.param_groups for p in self._params_with_grad(group)]
        norm = self._grad_norm() if any(group["normalized"] for group in self.param_groups) else None
        saved, grads, steps = {}, {}, {}
        sign = 1.0 if self.mode == "forward" else -1.0
        for group, p in params:
            h = group["eps"]
            if group["normalized"]:
                # Step eps * g/||g||: the effective finite-difference step along g is eps/||g||.
                h = group["eps"] / float(norm.clamp_min(torch.finfo(torch.float64).tiny))
            steps[p] = h
            saved[p] = p.detach().clone()
            grads[p] = p.grad.detach().clone()
            p.add_(p.grad, alpha=sign * h)
        closure()
        for group, p in params:
            p.copy_(saved[p])
            g, g_shift = grads[p], p.grad
            ratio = group["gamma"] / steps[p]
            if g_shift is None:  # the parameter does not reach the loss at the shifted point
                g_shift = torch.zeros_like(g)
            # forward: (1 - r) g + r g';  backward: (1 + r) g - r g'
            p.grad = torch.lerp(g, g_shift, sign * ratio)
        return loss

    def _double_backprop(self, closure):
        loss = closure()
        params = [(group, p) for group in self.param_groups for p in group["params"] if p.requires_grad]
        have = [p for _, p in params if p.grad is not None]
        if have and all(p.grad.grad_fn is None for p in have):
            raise RuntimeError("mode='double_backprop' needs the gradient's graph: in the closure call "
                               "loss.backward(create_graph=True), or return the loss without calling backward()")
        with torch.enable_grad():
            if not have:
                if not isinstance(loss, torch.Tensor) or loss.grad_fn is None:
                    raise RuntimeError("mode='double_backprop' needs the closure to return the loss tensor with "
                                       "its graph when it does not call backward()")
                ps = [p for _, p in params]
                gs = torch.autograd.grad(loss, ps, create_graph=True, allow_unused=True)
                pairs = [(group, p, g) for (group, p), g in zip(params, gs) if g is not None]
            else:
                pairs = [(group, p, p.grad) for group, p in params if p.grad is not None]
            penalty = sum(0.5 * group["gamma"] * (g * g).sum() for group, _, g in pairs)
            gr = torch.autograd.grad(penalty, [p for _, p, _ in pairs], allow_unused=True)
        for (_, p, g), hg in zip(pairs, gr):
            total = g.detach() if hg is None else g.detach() + hg.detach()
            p.grad = total
        return loss.detach() if isinstance(loss, torch.Tensor) else loss
