"""SAM: sharpness-aware minimization as a wrapper around any base optimizer.

References: Escaping Saddle Points for Effective Generalization on Class-Imbalanced Data (Rangwani et al.), 2022;
Sharpness-Aware Minimization for Efficiently Improving Generalization (Foret et al.), 2021; ASAM: Adaptive
Sharpness-Aware Minimization for Scale-Invariant Learning of Deep Neural Networks (Kwon et al.), 2021.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from paperzoo.core.accepts import Choice, Flag, Function, Int, Real, accepts
from paperzoo.core.checks import check_nonnegative, check_positive
from paperzoo.optim._common import check_flag
from paperzoo.optim._common import NONFINITE
from paperzoo.optim.wrappers import ClosureWrapper

__all__ = ["SAM"]


class SAM(ClosureWrapper):
    r"""SAM: take the base optimizer's step with the gradient at the worst point of a small ball.

    References: Escaping Saddle Points for Effective Generalization on Class-Imbalanced Data (Rangwani et al.),
    2022 (SAM with a high :math:`\rho` escapes the saddle points that re-weighted training reaches on the
    minority-class losses); Sharpness-Aware Minimization for Efficiently Improving Generalization (Foret et al.),
    2021 (the update, Eq. 2 and Algorithm 1).

    Each step calls the closure twice: once at :math:`w` to get :math:`g = \nabla L(w)`, then at the ascent point

    .. math::
        \hat\epsilon(w) = \rho\, \frac{T_w^2\, g}{\|T_w\, g\|_2 + \delta}, \qquad
        g_{\mathrm{SAM}} = \nabla L(w + \hat\epsilon(w)),

    restores :math:`w`, writes :math:`g_{\mathrm{SAM}}` into ``p.grad`` and runs the base optimizer's step. With
    ``adaptive=False``, :math:`T_w = I` (SAM); with ``adaptive=True``, :math:`T_w = \mathrm{diag}(|w|)` (ASAM, as
    in ``pytorch_optimizer.SAM``; ASAM's paper adds a small constant to :math:`|w|` for biases, not done here).
    The norm is global over every parameter of every group; :math:`\rho` may differ per group (the saddle paper
    raises it when re-weighting starts: set ``group["rho"]`` like a learning rate).

    Symbols: :math:`\rho` = ``rho``, :math:`\delta` = ``perturb_eps``.

    Args:
        params: parameters or parameter-group dicts.
        base_optimizer: ``torch.optim.Optimizer`` subclass (or callable ``param_groups -> Optimizer``).
        rho: radius :math:`\rho \ge 0` of the ascent step (``0`` gives the base optimizer with a doubled cost).
        adaptive: ASAM's scale-invariant ball.
        perturb_eps: :math:`\delta > 0`, keeps a zero gradient from dividing by zero.
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`).
        **base_kwargs: the base optimizer's arguments (``lr``, ``momentum``, ``weight_decay`` ...); torch.optim's own names are
            checked with paperzoo's messages, unknown ones by the base optimizer.

    Example:
        >>> import torch
        >>> from paperzoo.optim import SAM
        >>> w = torch.nn.Parameter(torch.tensor([2.0, -3.0]))
        >>> opt = SAM([w], torch.optim.SGD, rho=0.05, lr=0.1)
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

    @accepts(base_optimizer=Function(), rho=Real(ge=0), adaptive=Flag(), perturb_eps=Real(gt=0), nonfinite=NONFINITE)
    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 base_optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.SGD, rho: float = 0.05,
                 adaptive: bool = False, perturb_eps: float = 1e-12, nonfinite: str = "raise", **base_kwargs):
        super().__init__(params, base_optimizer, dict(rho=rho, adaptive=adaptive, perturb_eps=perturb_eps,
                                                      nonfinite=nonfinite), base_kwargs)

    def _check_group(self, group: dict[str, Any]) -> None:
        group["rho"] = check_nonnegative("rho", group["rho"])
        check_flag("adaptive", group["adaptive"])
        group["perturb_eps"] = check_positive("perturb_eps", group["perturb_eps"])

    def _step(self, closure):
        loss = closure()
        weights = {p: p.abs() if group["adaptive"] else torch.ones((), dtype=p.dtype, device=p.device)
                   for group in self.param_groups for p in self._params_with_grad(group)}
        norm = self._grad_norm(weights)
        saved = {}
        for group in self.param_groups:
            scale = group["rho"] / (norm + group["perturb_eps"])
            for p in self._params_with_grad(group):
                # Keep an exact copy: w + e - e is not always w in floating point.
                saved[p] = p.detach().clone()
                e = p.grad * scale.to(p.dtype)
                if group["adaptive"]:
                    e = e * p * p
                p.add_(e)
        closure()
        for p, old in saved.items():
            p.copy_(old)
        return loss
