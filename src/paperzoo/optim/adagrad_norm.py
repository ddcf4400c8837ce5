r"""AdaGrad-Norm: SGD with one scalar AdaGrad stepsize, :math:`\eta / \sqrt{b_0^2 + \sum_s \|g_s\|^2}`.

References: SGD with AdaGrad Stepsizes: Full Adaptivity with High Probability to Unknown Parameters, Unbounded
Gradients and Affine Variance (Attia, Koren), 2023.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from paperzoo.core.accepts import Real, accepts
from paperzoo.core.checks import check_nonnegative, check_positive
from paperzoo.optim._common import COMMON_HYPERPARAMETERS, CheckedOptimizer, check_dense_grad

__all__ = ["AdaGradNorm"]


class AdaGradNorm(CheckedOptimizer):
    r"""AdaGrad-Norm: SGD whose single stepsize shrinks with the accumulated squared gradient norm.

    References: SGD with AdaGrad Stepsizes: Full Adaptivity with High Probability to Unknown Parameters,
    Unbounded Gradients and Affine Variance (Attia, Koren), 2023.

    For every parameter group, with :math:`g_t` the concatenation of the group's gradients at step :math:`t`,

    .. math::
        b_t^2 = b_0^2 + \sum_{s=1}^{t} \|g_s\|_2^2, \qquad x_{t+1} = x_t - \frac{\eta}{b_t}\, g_t .

    The current gradient is part of its own normaliser, as in the paper, so a single step is never longer than
    :math:`\eta` however large the gradient. The paper proves that this converges (in the convex and in the
    smooth non-convex case, with high probability, under noise whose variance may grow affinely with
    :math:`\|\nabla f\|^2`) for every :math:`\eta` and :math:`b_0`, with no knowledge of the smoothness or the
    noise level: a too-large :math:`\eta` is corrected by :math:`b_t` growing, at a price that enters the bound
    only polynomially in :math:`\eta`.

    Symbols: :math:`\eta` = ``lr``, :math:`b_0` = ``b0``, :math:`g_t` negated when ``maximize`` and plus
    :math:`\lambda x_t` when ``weight_decay`` = :math:`\lambda > 0` (an L2 term, part of the gradient and of its
    norm; not in the paper, provided for the ``torch.optim`` interface).

    The accumulated :math:`b_t^2 - b_0^2` is per group state and is kept, as a Python float (double precision), in
    the group dict under ``"sum_sq_grad_norm"``, so it travels with ``state_dict``. Computing it costs one host
    synchronisation per step on an accelerator. Parameters without a gradient are left out of the norm. An
    accumulated norm that is not finite (an overflow, or a NaN or inf gradient under ``nonfinite="ignore"``)
    raises ``FloatingPointError`` before the group is changed: it would make every later step NaN.

    Args:
        params: parameters or parameter-group dicts.
        lr: :math:`\eta \ge 0`.
        b0: :math:`b_0 > 0`, the initial normaliser (keeps the first step finite when :math:`g_1 = 0`).
        weight_decay: :math:`\lambda \ge 0` (L2).
        foreach: multi-tensor update; ``None`` picks it when every parameter is on CUDA.
        maximize: ascend the objective instead.
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`).

    State per parameter: ``step`` (a CPU scalar tensor), kept so that ``opt.state`` lists the parameters trained.

    Example:
        >>> import torch
        >>> from paperzoo.optim import AdaGradNorm
        >>> w = torch.nn.Parameter(torch.tensor([2.0, -3.0]))
        >>> opt = AdaGradNorm([w], lr=100.0)  # far too large for plain SGD on this problem (L = 2)
        >>> for _ in range(200):
        ...     opt.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     opt.step()
        >>> bool(w.abs().max() < 1e-3)
        True
    """

    @accepts(**COMMON_HYPERPARAMETERS, b0=Real(gt=0))
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        b0: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        nonfinite: str = "raise",
    ):
        defaults = dict(lr=lr, b0=b0, weight_decay=weight_decay, foreach=foreach, maximize=maximize,
                        nonfinite=nonfinite)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_nonnegative("lr", group["lr"])
        group["b0"] = check_positive("b0", group["b0"])
        group["weight_decay"] = check_nonnegative("weight_decay", group["weight_decay"])
        group["sum_sq_grad_norm"] = check_nonnegative("sum_sq_grad_norm", group.get("sum_sq_grad_norm", 0.0))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """Perform one step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._skip_for_nonfinite():
            return loss
        for group in self.param_groups:
            params, grads, trained = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                check_dense_grad("AdaGradNorm", p.grad)
                trained.append(p)
                param, grad = p, p.grad
                if torch.is_complex(p):
                    param, grad = torch.view_as_real(p), torch.view_as_real(grad)
                if group["maximize"]:
                    grad = -grad
                if group["weight_decay"] != 0:
                    grad = grad.add(param, alpha=group["weight_decay"])
                params.append(param)
                grads.append(grad)
            if not params:
                continue
            # The squared norm is accumulated in float64 whatever the parameters' dtype (one scalar per group),
            # and computed the same way on both code paths so that they agree bit for bit.
            sq = torch.stack([torch.linalg.vector_norm(g, dtype=torch.float64) ** 2 for g in grads]).sum()
            total = group["sum_sq_grad_norm"] + float(sq)
            if not math.isfinite(total):
                raise FloatingPointError(f"AdaGradNorm: the accumulated squared gradient norm is {total}; "
                                         "a gradient contains NaN or inf")
            for p in trained:
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["step"] += 1
            group["sum_sq_grad_norm"] = total
            step_size = group["lr"] / math.sqrt(group["b0"] ** 2 + total)
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.device.type == "cuda" for p in params)
            if foreach:
                torch._foreach_add_(params, grads, alpha=-step_size)
            else:
                for param, grad in zip(params, grads):
                    param.add_(grad, alpha=-step_size)
        return loss
