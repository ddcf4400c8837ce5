"""Pieces shared by every paperzoo optimizer: hyperparameter validation, the non-finite-gradient policy, and the
step driver of the elementwise (Adam-family) optimizers.

:class:`CheckedOptimizer` is the base of every optimizer here: it validates each parameter group against the
hyperparameters its constructor declares (``@accepts`` on ``__init__``), so that ``add_param_group`` and per-group
overrides get the same checks as the constructor, and it implements the ``nonfinite`` policy.
:class:`ElementwiseOptimizer` implements the ``torch.optim`` contract once (lazy state, ``step(closure)``,
per-group validation, complex parameters, foreach dispatch); a concrete optimizer names its state tensors,
validates its group, and implements one hook, :meth:`ElementwiseOptimizer._update`, that applies the update to
a bucket of tensors sharing device, dtype and step count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from paperzoo.core.accepts import Binding, Choice, Flag, Pair, Real, declaration
from paperzoo.core.checks import check_nonnegative, check_positive, check_probability

__all__ = ["ADAM_HYPERPARAMETERS", "COMMON_HYPERPARAMETERS", "TORCH_HYPERPARAMETERS", "CheckedOptimizer",
           "check_torch_hyperparameters", "ElementwiseOptimizer", "NonFiniteGradientError", "NONFINITE", "check_betas",
           "check_flag", "check_optional_flag", "check_adam_group", "check_dense_grad", "nonfinite_grad_index"]

#: The spec of every optimizer's ``nonfinite`` argument.
NONFINITE = Choice("raise", "skip", "ignore")
#: Specs of the hyperparameters most optimizers share, for their ``@accepts`` declarations.
COMMON_HYPERPARAMETERS = dict(lr=Real(ge=0), weight_decay=Real(ge=0), foreach=Flag(optional=True), maximize=Flag(),
                              nonfinite=NONFINITE)
ADAM_HYPERPARAMETERS = dict(COMMON_HYPERPARAMETERS, betas=Pair(Real(ge=0, lt=1), meaning="(beta1, beta2)"), eps=Real(gt=0))
#: Specs of torch.optim's hyperparameters, for wrappers that build or wrap a torch optimizer: torch accepts
#: ``lr=nan`` or a per-group ``lr=-1``; the wrappers check the base optimizer's groups with these.
TORCH_HYPERPARAMETERS = dict(
    lr=Real(ge=0), momentum=Real(ge=0), dampening=Real(ge=0), weight_decay=Real(ge=0), eps=Real(ge=0),
    betas=Pair(Real(ge=0, lt=1), meaning="(beta1, beta2)"), alpha=Real(ge=0), lr_decay=Real(ge=0),
    initial_accumulator_value=Real(ge=0), rho=Real(ge=0, le=1), momentum_decay=Real(ge=0), nesterov=Flag(),
    amsgrad=Flag(), maximize=Flag(), foreach=Flag(optional=True), capturable=Flag(), differentiable=Flag(),
    fused=Flag(optional=True), decoupled_weight_decay=Flag(),
)


def check_torch_hyperparameters(values: dict[str, Any], *, skip=()) -> None:
    """Validate the torch.optim hyperparameters in ``values`` (a group or keyword arguments) that are not in
    ``skip`` (the wrapper's own names), with the messages of :mod:`paperzoo.core.checks`."""
    binding = Binding()
    for key, spec in TORCH_HYPERPARAMETERS.items():
        if key in values and key not in skip:
            spec.validate(key, values[key], binding)




class NonFiniteGradientError(ValueError):
    """A gradient holds NaN or inf and the optimizer's policy is ``nonfinite="raise"``; nothing was changed."""


def nonfinite_grad_index(grads: list[torch.Tensor]) -> int | None:
    """Index of the first gradient with a NaN or inf entry, or ``None``: one reduction per tensor and one
    host sync. A sum is ~10x cheaper than ``isfinite().all()`` and is NaN or inf exactly when an entry is (or when
    the entries' sum overflows, accumulated in float32 at least: a gradient that large overflows Adam's second
    moment as well)."""
    if not grads:
        return None
    sums = [g.sum(dtype=torch.float32) if g.dtype in (torch.float16, torch.bfloat16) else g.sum()
            for g in grads]
    sums = [torch.view_as_real(s).sum() if torch.is_complex(s) else s for s in sums]
    finite = torch.isfinite(torch.stack([s.to(sums[0].device, torch.float64 if s.dtype == torch.float64
                                                  else torch.float32) for s in sums]))
    if bool(finite.all()):
        return None
    return int((~finite).nonzero()[0, 0])


def check_dense_grad(name: str, grad: torch.Tensor) -> None:
    """Refuse a sparse gradient with a TypeError naming the optimizer."""
    if grad.layout != torch.strided:
        raise TypeError(f"{name} does not support sparse gradients, got a gradient with layout {grad.layout}")


def check_flag(name: str, value) -> bool:
    """A ``bool`` (not an int standing in for one)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_optional_flag(name: str, value) -> bool | None:
    """``None`` or a ``bool``."""
    return None if value is None else check_flag(name, value)


def check_betas(value) -> tuple[float, float]:
    """``(beta1, beta2)``, each in ``[0, 1)``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"betas must be a pair (beta1, beta2), got {type(value).__name__}")
    value = tuple(value)
    if len(value) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {len(value)} values")
    return check_probability("betas[0]", value[0]), check_probability("betas[1]", value[1])


def check_adam_group(group: dict[str, Any]) -> None:
    """Validate, in place, the hyperparameters every Adam-family group has.

    ``eps`` must be strictly positive: with ``eps = 0`` a coordinate whose gradients have all been zero gives
    ``0 / 0``, a silent NaN.
    """
    group["lr"] = check_nonnegative("lr", group["lr"])
    group["betas"] = check_betas(group["betas"])
    group["eps"] = check_positive("eps", group["eps"])
    group["weight_decay"] = check_nonnegative("weight_decay", group["weight_decay"])
    check_flag("maximize", group["maximize"])
    check_optional_flag("foreach", group["foreach"])
    NONFINITE.validate("nonfinite", group.get("nonfinite", "raise"), Binding())


def _default_foreach(tensors: list[torch.Tensor]) -> bool:
    # The same default as torch.optim: on CPU the foreach kernels are a loop over tensors and only add peak
    # memory for their list-sized intermediates, so multi-tensor is the default on CUDA alone.
    return bool(tensors) and all(t.device.type == "cuda" for t in tensors)


class CheckedOptimizer(torch.optim.Optimizer):
    """Base class of every paperzoo optimizer: declared hyperparameters and the non-finite-gradient policy.

    Each group is validated, when added, against the specs of the constructor's ``@accepts`` declaration (for
    the keys it has), then by the :meth:`_check_group` hook (cross-field checks and normalisation).

    ``nonfinite`` (a group hyperparameter, like ``maximize``) says what a step does when a gradient of the group
    holds NaN or inf, as ``torch.amp.GradScaler`` users know it:

    - ``"raise"`` (default): raise :class:`NonFiniteGradientError` before anything is changed;
    - ``"skip"``: leave every parameter and all optimizer state untouched for this step (the whole step, as
      GradScaler skips it) and count it in ``skipped_steps``;
    - ``"ignore"``: no check, torch.optim's behaviour (the cheapest; NaN then spreads into parameters and state).

    The check costs one reduction per gradient and one host sync per step: 5-9% of an elementwise step (ADOPT,
    AMSGrad, Lion, MARS) at 10M float32 parameters on one CPU thread, measured by ``benchmarks/optim_step.py``
    alternating ``"raise"`` and ``"ignore"`` on the same optimizer.
    """

    skipped_steps: int = 0

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        # Validate after torch has merged the defaults, so per-group overrides are checked too.
        self._validate_group(self.param_groups[-1])

    def _validate_group(self, group: dict[str, Any]) -> None:
        """The declared specs of the constructor for the keys ``group`` has, then :meth:`_check_group`."""
        decl = declaration(type(self))
        if decl is not None:
            binding = Binding()
            for key, spec in decl.specs.items():
                if key in group and key != "params":
                    spec.validate(key, group[key], binding)
        self._check_group(group)

    def _check_group(self, group: dict[str, Any]) -> None:
        """Hook: cross-field checks and normalisation of one group (the declared specs have been checked)."""

    def _skip_for_nonfinite(self, groups: list[dict[str, Any]] | None = None,
                            grads: list[list[torch.Tensor]] | None = None) -> bool:
        """Apply the ``nonfinite`` policy to the gradients of ``groups`` (default: all, ``p.grad``); return True
        when the step must be skipped. ``grads`` overrides the gradients checked, one list per group."""
        groups = self.param_groups if groups is None else groups
        skip = False
        for i, group in enumerate(groups):
            policy = group.get("nonfinite", "raise")
            if policy == "ignore":
                continue
            tensors = grads[i] if grads is not None else [p.grad for p in group["params"] if p.grad is not None]
            bad = nonfinite_grad_index([t for t in tensors if t.layout == torch.strided])
            if bad is None:
                continue
            if policy == "raise":
                raise NonFiniteGradientError(
                    f"{type(self).__name__}: the gradient of a parameter in group {i} has NaN or inf entries "
                    f"(tensor {bad} of the group); nothing was updated. Pass nonfinite='skip' to skip such steps "
                    "(as GradScaler does) or nonfinite='ignore' to apply them")
            skip = True
        if skip:
            self.skipped_steps = self.skipped_steps + 1
        return skip


class ElementwiseOptimizer(CheckedOptimizer):
    """Base class for optimizers whose update is elementwise with per-parameter state and a step counter.

    Subclasses set ``state_names`` (state tensors created as zeros like the parameter) and implement
    :meth:`_check_group` and :meth:`_update`. The step counter ``state["step"]`` is a CPU float32 scalar tensor,
    as in ``torch.optim``, so that ``state_dict`` round trips keep it where ``torch.optim`` keeps it.
    """

    state_names: tuple[str, ...] = ()

    def _check_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _update(self, group: dict[str, Any], step: int, params: list[torch.Tensor], grads: list[torch.Tensor],
                states: list[list[torch.Tensor]], foreach: bool) -> None:
        """Apply one update to a bucket of tensors that share device, dtype and ``step`` (the count before it).

        ``states[i]`` lists the bucket's tensors for ``state_names[i]``.
        """
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        name = type(self).__name__
        if self._skip_for_nonfinite():
            return loss
        for group in self.param_groups:
            buckets: dict[tuple, tuple[list, list, list[list], list]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                check_dense_grad(name, p.grad)
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    for key in self.state_names:
                        state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
                param, grad, tensors = p, p.grad, [state[key] for key in self.state_names]
                if torch.is_complex(p):
                    # Complex numbers are handled as pairs of reals, as torch.optim does.
                    param, grad = torch.view_as_real(p), torch.view_as_real(grad)
                    tensors = [torch.view_as_real(t) for t in tensors]
                key = (param.device, param.dtype, int(state["step"].item()))
                bucket = buckets.setdefault(key, ([], [], [[] for _ in self.state_names], []))
                bucket[0].append(param)
                bucket[1].append(grad)
                for column, tensor in zip(bucket[2], tensors):
                    column.append(tensor)
                bucket[3].append(state["step"])
            foreach = group["foreach"]
            for (_, _, step), (params, grads, states, steps) in buckets.items():
                use_foreach = _default_foreach(params) if foreach is None else foreach
                self._update(group, step, params, grads, states, use_foreach)
                for counter in steps:
                    counter += 1
        return loss
