"""PCNGD: per-class normalized gradient descent, a remedy for the class competition of GD under imbalance.

References: A Theoretical Analysis of the Learning Dynamics under Class Imbalance (Francazi, Baity-Jesi,
Lucchi), 2023.

With per-class losses :math:`L_1, \\dots, L_C` (the loss averaged over each class's examples), GD follows
:math:`\\sum_c \\pi_c \\nabla L_c`, dominated by the majority classes, so a minority class's loss can rise at
first (the paper's "minority initial drop"). PCNGD follows instead the sum of the per-class gradients, each
scaled to unit norm:

.. math::
    \\theta_{t+1} = \\theta_t - \\eta \\sum_{c=1}^{C} \\frac{\\nabla_\\theta L_c(\\theta_t)}
                                                       {\\|\\nabla_\\theta L_c(\\theta_t)\\|}

so every class pulls with the same strength. :func:`per_class_normalized_grad` is the gradient transform;
:class:`PCNGD` the optimizer built on it; :func:`class_mean_losses` turns per-example losses into the per-class
losses both take. The norm is taken jointly over all parameters (the whole gradient vector of the class), as in
the paper. Run on mini-batches this is the paper's PCNSGD.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from paperzoo.core.accepts import Int, Real, Tensor, Tensors, accepts
from paperzoo.core.checks import check_int, check_nonnegative, check_tensor
from paperzoo.core.accepts import Flag, Real, accepts
from paperzoo.optim._common import NONFINITE, CheckedOptimizer

__all__ = ["PCNGD", "class_mean_losses", "per_class_normalized_grad"]


# targets: labels in [0, num_classes) (the upper bound is checked in the body)
@accepts(losses=Tensor("N", degenerate=("zeros",)), targets=Tensor("N", dtype="int", low=0), num_classes=Int(ge=1),
         example=lambda ctx: {"num_classes": 4})
def class_mean_losses(losses: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class mean of per-example losses: :math:`L_c = \\frac{1}{N_c}\\sum_{i: y_i = c} \\ell_i`.

    Args:
        losses: per-example losses :math:`\\ell_i`, shape ``(N,)`` (e.g. ``cross_entropy(..., reduction='none')``).
        targets: integer labels in ``[0, num_classes)``, shape ``(N,)``.
        num_classes: :math:`C \\ge 1`.

    Returns:
        Tensor of shape ``(C,)``, differentiable in ``losses``; a class absent from the batch gets ``0`` (and so a
        zero gradient, which :func:`per_class_normalized_grad` leaves out).

    Example:
        >>> class_mean_losses(torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0, 0, 2]), 3).tolist()
        [2.0, 0.0, 5.0]
    """
    num_classes = int(num_classes)
    if int(targets.max()) >= num_classes:
        raise ValueError(f"targets must lie in [0, num_classes) = [0, {num_classes}), got values in "
                         f"[{int(targets.min())}, {int(targets.max())}]")
    sums = torch.zeros(num_classes, dtype=losses.dtype, device=losses.device).index_add(0, targets, losses)
    counts = torch.bincount(targets, minlength=num_classes).to(losses.dtype)
    return sums / counts.clamp_min(1.0)


def _two_class_losses(ctx) -> dict:
    w = torch.randn(ctx.size("d"), generator=ctx.generator, dtype=ctx.dtype).requires_grad_(True)
    return {"per_class_losses": torch.stack([w.square().sum(), 3.0 * w.sum()]), "params": [w]}


@accepts(per_class_losses=Tensor("C"), params=Tensors(), eps=Real(ge=0), example=_two_class_losses)
def per_class_normalized_grad(
    per_class_losses: torch.Tensor,
    params: Sequence[torch.Tensor],
    *,
    eps: float = 1e-12,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The PCNGD direction :math:`\\sum_c \\nabla L_c / \\|\\nabla L_c\\|` over ``params``.

    References: A Theoretical Analysis of the Learning Dynamics under Class Imbalance (Francazi, Baity-Jesi,
    Lucchi), 2023 (the per-class normalized gradient of PCNGD).

    Args:
        per_class_losses: :math:`(L_1, \\dots, L_C)`, shape ``(C,)``, with an autograd graph to ``params``.
        params: the tensors to differentiate with respect to.
        eps: a class whose gradient norm is ``<= eps`` contributes nothing (it has no direction to normalise);
            ``>= 0``.

    Returns:
        The direction, one tensor per parameter, and the per-class gradient norms, shape ``(C,)``.

    Example:
        >>> w = torch.tensor([1.0, 1.0], requires_grad=True)
        >>> losses = torch.stack([100 * w[0] ** 2, w[1] ** 2])  # one class's gradient 100x the other's
        >>> direction, norms = per_class_normalized_grad(losses, [w])
        >>> direction[0].tolist(), norms.tolist()
        ([1.0, 1.0], [200.0, 2.0])
    """
    params = list(params)
    if not params:
        raise ValueError("params must contain at least one tensor, got an empty sequence")
    if not per_class_losses.requires_grad:
        raise ValueError("per_class_losses must carry an autograd graph to params (computed from them, outside "
                         "torch.no_grad), got a tensor that does not require grad")
    return _per_class_normalized_grad(per_class_losses, params, float(eps))


def _per_class_normalized_grad(per_class_losses, params, eps):
    """Unchecked :func:`per_class_normalized_grad` (PCNGD's step, which checks the closure's losses itself)."""
    direction = [torch.zeros_like(p) for p in params]
    norms = []
    C = per_class_losses.shape[0]
    for c in range(C):  # a loop over classes (a handful of backward passes), not over tensor elements
        grads = torch.autograd.grad(per_class_losses[c], params, retain_graph=c + 1 < C, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        norms.append(norm)
        if float(norm) > eps:
            torch._foreach_add_(direction, grads, alpha=1.0 / float(norm))
    return direction, torch.stack(norms).detach()


class PCNGD(CheckedOptimizer):
    r"""PCNGD: gradient descent along the sum of unit-normalized per-class gradients.

    References: A Theoretical Analysis of the Learning Dynamics under Class Imbalance (Francazi, Baity-Jesi,
    Lucchi), 2023.

    .. math::
        \theta_{t+1} = \theta_t - \eta \sum_{c=1}^{C} \frac{\nabla L_c(\theta_t)}{\|\nabla L_c(\theta_t)\|}

    Symbols: :math:`\eta` = ``lr`` (per group), :math:`L_c` = the ``c``-th entry of what the closure returns;
    the norms are global over every parameter of every group. With ``maximize=True`` the step ascends.

    Unlike ``torch.optim`` optimizers it does not read ``p.grad``: :meth:`step` needs a closure that returns the
    per-class losses, shape ``(C,)``, with their autograd graph (see :func:`class_mean_losses`); the closure
    should not call ``backward``. Each step costs :math:`C` backward passes. The optimizer keeps no state, so
    its ``state_dict`` holds only the param groups.

    Args:
        params: parameters or parameter-group dicts.
        lr: :math:`\eta \ge 0` (0 freezes a group).
        eps: per-class gradients with norm ``<= eps`` are left out, ``>= 0`` (the norms are global, so the
            first group's ``eps`` is the one used).
        maximize: ascend instead of descend.
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`). A non-finite class gradient makes its norm, shared by
            every group, non-finite, so it counts against every group's policy.

    Example:
        >>> import torch
        >>> from paperzoo.optim import PCNGD, class_mean_losses
        >>> X = torch.tensor([[0.0], [0.1], [-0.1], [3.0]]); y = torch.tensor([0, 0, 0, 1])
        >>> model = torch.nn.Linear(1, 2)
        >>> opt = PCNGD(model.parameters(), lr=0.1)
        >>> closure = lambda: class_mean_losses(
        ...     torch.nn.functional.cross_entropy(model(X), y, reduction="none"), y, 2)
        >>> first = closure().detach()
        >>> for _ in range(50):
        ...     _ = opt.step(closure)
        >>> bool((closure() < first).all())
        True
    """

    @accepts(lr=Real(ge=0), eps=Real(ge=0), maximize=Flag(), nonfinite=NONFINITE)
    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float = 1e-2, *,
                 eps: float = 1e-12, maximize: bool = False, nonfinite: str = "raise"):
        super().__init__(params, dict(lr=lr, eps=eps, maximize=maximize, nonfinite=nonfinite))

    def _check_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_nonnegative("lr", group["lr"])
        group["eps"] = check_nonnegative("eps", group["eps"])

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """One PCNGD step; ``closure()`` returns the per-class losses (shape ``(C,)``), which are returned."""
        if closure is None:
            raise ValueError("PCNGD needs a closure that returns the per-class losses, shape (C,): step(closure)")
        with torch.enable_grad():
            losses = closure()
            if not isinstance(losses, torch.Tensor) or losses.dim() != 1:
                raise ValueError("closure must return the per-class losses as a 1-D tensor, got "
                                 f"{getattr(losses, 'shape', type(losses).__name__)}")
            if not losses.requires_grad:
                raise ValueError("closure must return per-class losses with an autograd graph to the parameters, "
                                 "got a tensor that does not require grad")
            # A NaN or inf class loss has no gradient to normalise (per_class_normalized_grad refuses it): the
            # policy treats it as that class's non-finite gradient, which every group's step would divide by.
            if self._skip_for_nonfinite(grads=[[losses.detach()]] * len(self.param_groups)):
                return losses.detach()
            params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
            direction, norms = _per_class_normalized_grad(losses, params, self.param_groups[0]["eps"])
        # Every group's step divides by the global per-class norms, which are non-finite exactly when a class
        # gradient is (the direction itself leaves such a class out): each group is checked with them.
        checked, index = [], 0
        for group in self.param_groups:
            n = sum(1 for p in group["params"] if p.requires_grad)
            checked.append([norms, *direction[index:index + n]])
            index += n
        if self._skip_for_nonfinite(grads=checked):
            return losses.detach()
        index = 0
        for group in self.param_groups:
            sign = 1.0 if group["maximize"] else -1.0
            for p in group["params"]:
                if not p.requires_grad:
                    continue
                p.add_(direction[index], alpha=sign * group["lr"])
                index += 1
        return losses.detach()
