"""Closure-based optimizer wrappers: the shared base class of SAM, AMP and finite-difference GR.

A wrapper evaluates the loss and its gradient at one or more perturbed copies of the parameters, writes the
gradient it wants into ``p.grad``, restores the parameters, and hands over to a *base optimizer* (any
``torch.optim.Optimizer``) for the actual update. :class:`ClosureWrapper` implements the ``torch.optim`` contract for
that pattern once:

- the wrapper and the base optimizer share one list of parameter groups, so the wrapper's hyperparameters
  (``rho``, ``gamma`` ...) and the base optimizer's (``lr``, ``momentum`` ...) live side by side in
  ``param_groups``; learning-rate schedulers attached to the wrapper drive the base optimizer;
- ``state_dict`` holds the wrapper's own per-parameter state and the base optimizer's full ``state_dict``, and
  ``load_state_dict`` restores both (the continuation is bit-identical);
- ``step(closure)`` requires a closure that zeroes the gradients, evaluates the loss, calls ``backward`` and
  returns the loss; the wrapper calls it once per gradient evaluation it needs.

The wrapper checks the base optimizer's hyperparameters with paperzoo's messages (torch accepts ``lr=nan`` or a
per-group ``lr=-1``), at construction and in ``add_param_group``, and applies the ``nonfinite`` policy of
:class:`~paperzoo.optim.CheckedOptimizer` to the gradient it hands over: the parameters are restored after every
perturbed evaluation, so a NaN or inf anywhere in the step reaches that gradient and is caught before the base
optimizer's state or the parameters change.

A concrete wrapper declares its hyperparameters with ``@accepts`` on ``__init__``, checks cross-field constraints
in :meth:`ClosureWrapper._check_group` and implements :meth:`ClosureWrapper._step`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from paperzoo.optim._common import CheckedOptimizer, check_dense_grad, check_torch_hyperparameters

__all__ = ["ClosureWrapper"]


class ClosureWrapper(CheckedOptimizer):
    """Base class for optimizer wrappers that need several gradient evaluations per step.

    Args:
        params: parameters or parameter-group dicts.
        base_optimizer: a ``torch.optim.Optimizer`` subclass (or any callable ``param_groups -> Optimizer``); it is
            constructed on the wrapper's parameter groups with ``base_kwargs``.
        defaults: the wrapper's own hyperparameters, ``nonfinite`` included (validated by the subclass's
            declaration and :meth:`_check_group`).
        base_kwargs: keyword arguments of the base optimizer (``lr``, ``momentum`` ...); torch.optim's known
            hyperparameters are checked first, unknown ones are rejected by the base optimizer's constructor.
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 base_optimizer: Callable[..., torch.optim.Optimizer], defaults: dict[str, Any],
                 base_kwargs: dict[str, Any]):
        if not callable(base_optimizer):
            raise TypeError(f"base_optimizer must be an Optimizer class or callable, got {type(base_optimizer).__name__}")
        defaults = {"nonfinite": "raise", **defaults}
        check_torch_hyperparameters(base_kwargs, skip=defaults)
        self._building = True
        super().__init__(params, defaults)
        base = base_optimizer(self.param_groups, **base_kwargs)
        if not isinstance(base, torch.optim.Optimizer):
            raise TypeError(f"base_optimizer must build a torch.optim.Optimizer, got {type(base).__name__}")
        self.base_optimizer = base
        # One list of group dicts for both: schedulers and per-group overrides reach the base optimizer.
        self.param_groups = base.param_groups
        self._building = False
        for group in self.param_groups:  # per-group overrides of the base optimizer's hyperparameters
            check_torch_hyperparameters(group, skip=self.defaults)

    # -- torch.optim contract ------------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if getattr(self, "_building", False):
            super().add_param_group(param_group)
            return
        for key, value in self.defaults.items():
            param_group.setdefault(key, value)
        check_torch_hyperparameters(param_group, skip=self.defaults)
        self._validate_group(param_group)
        self.base_optimizer.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        own = super().state_dict()
        return {"state": own["state"], "param_groups": own["param_groups"],
                "base": self.base_optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "base" not in state_dict:
            raise ValueError("state_dict must come from a wrapper's state_dict() (it has no 'base' entry)")
        self.base_optimizer.load_state_dict(state_dict["base"])
        super().load_state_dict({"state": state_dict["state"], "param_groups": state_dict["param_groups"]})
        # torch replaced our group dicts with fresh copies; share the base optimizer's (just loaded) ones again.
        self.param_groups = self.base_optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def _step(self, closure: Callable[[], Any]) -> Any:
        """Compute the wrapper's gradient into ``p.grad`` with the parameters restored; return the first loss."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """One step: gradient evaluations through ``closure``, then the base optimizer's step.

        Returns the loss of the first closure call (at the unperturbed parameters).
        """
        if closure is None:
            raise TypeError(f"{type(self).__name__} needs a closure: step(closure) where closure zeroes the "
                               "gradients, computes the loss, calls backward() and returns the loss")
        closure = torch.enable_grad()(closure)
        name = type(self).__name__

        def dense_closure():
            # The perturbations assume dense gradients: refuse sparse ones before they reach a norm or a lerp.
            loss = closure()
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        check_dense_grad(name, p.grad)
            return loss

        loss = self._step(dense_closure)
        if self._skip_for_nonfinite():
            return loss
        self.base_optimizer.step()
        return loss

    # -- helpers for subclasses ----------------------------------------------------------------------------------
    def _params_with_grad(self, group: dict[str, Any]) -> list[torch.Tensor]:
        return [p for p in group["params"] if p.grad is not None]

    def _grad_norm(self, weights: dict[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Global L2 norm of the gradients over every group (``weights[p] * grad`` when given)."""
        norms = [torch.linalg.vector_norm(p.grad if weights is None else weights[p] * p.grad)
                 for group in self.param_groups for p in self._params_with_grad(group)]
        if not norms:
            return torch.tensor(0.0)
        device = norms[0].device
        return torch.linalg.vector_norm(torch.stack([n.to(device, torch.float64) for n in norms]))
