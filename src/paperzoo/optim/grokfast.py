r"""Grokfast: amplify the slow (low-frequency) component of every parameter's gradient before the optimizer steps.

References: Grokfast: Accelerated Grokking by Amplifying Slow Gradients (Lee, Kang, Lee, Kim, Kim), 2024.

The gradients of one parameter over training steps, :math:`g_1, g_2, \dots`, are read as a signal; a low-pass
filter :math:`h` extracts its slow part and the optimizer receives

.. math::
    \hat g_t = g_t + \lambda\, (h * g)_t

with two filters (Algorithms 1 and 2 of the paper):

- ``"ma"`` (Grokfast-MA, Algorithm 1): :math:`(h * g)_t` is the mean (or sum) of the last :math:`w` gradients;
  with ``warmup=True`` the gradient is left alone until the window is full. Paper defaults :math:`w = 100`,
  :math:`\lambda = 5`.
- ``"ema"`` (Grokfast, Algorithm 2): :math:`\mu_t = \alpha \mu_{t-1} + (1 - \alpha) g_t`, :math:`\mu_1 = g_1`, and
  :math:`\hat g_t = g_t + \lambda \mu_t`. Paper defaults :math:`\alpha = 0.98`, :math:`\lambda = 2`.

Two ways to use it:

- functional, as in the paper's code: :func:`gradfilter_ema` / :func:`gradfilter_ma` between ``loss.backward()``
  and ``optimizer.step()``, passing back the filter state they return;
- :class:`Grokfast`, a wrapper around any ``torch.optim`` optimizer that filters inside ``step()`` and keeps the
  filter state in its ``state_dict``.

The filters themselves are the shared pieces of :mod:`paperzoo.optim.gradient_filters`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from paperzoo.core.accepts import Choice, Flag, Int, Module, Real, Tensor, accepts
from paperzoo.core.checks import check_choice, check_int, check_nonnegative, check_probability
from paperzoo.optim._common import (NONFINITE, CheckedOptimizer, check_dense_grad, check_flag,
                                    check_torch_hyperparameters)
from paperzoo.optim.gradient_filters import _ema_update, _window_average, _window_update

__all__ = ["Grokfast", "gradfilter_ema", "gradfilter_ma", "MovingWindow"]



def _example_model(ctx) -> torch.nn.Module:
    model = torch.nn.Linear(3, 2, dtype=ctx.dtype)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=ctx.generator, dtype=ctx.dtype)
    return model


class MovingWindow:
    """Grokfast-MA state of one parameter: a ring buffer ``(window_size, *shape)`` and the number of gradients seen."""

    __slots__ = ("buffer", "count")

    @accepts(buffer=Tensor(ndims=tuple(range(1, 10)), allow_empty=True, optional=True), count=Int(ge=0),
             example=lambda ctx: {"buffer": torch.randn(3, 1, 1, 1, 1, 1, 1, 3, 2, generator=ctx.generator,
                                                        dtype=ctx.dtype), "count": 2})
    def __init__(self, buffer: torch.Tensor | None = None, count: int = 0):
        self.buffer, self.count = buffer, count

    def __repr__(self) -> str:
        shape = None if self.buffer is None else tuple(self.buffer.shape)
        return f"MovingWindow(buffer shape={shape}, count={self.count})"


def _named_grads(model: torch.nn.Module):
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, p in model.named_parameters():
        if p.requires_grad and p.grad is not None:
            yield name, p.grad


@accepts(model=Module(finite=False), alpha=Real(ge=0, lt=1), lamb=Real(ge=0), example=lambda ctx: {"model": _example_model(ctx)})
@torch.no_grad()
def gradfilter_ema(model: torch.nn.Module, grads: dict[str, torch.Tensor] | None = None, alpha: float = 0.98,
                   lamb: float = 2.0) -> dict[str, torch.Tensor]:
    r"""Grokfast (EMA filter, Algorithm 2): :math:`g \leftarrow g + \lambda \mu_t` for every parameter, in place.

    References: Grokfast: Accelerated Grokking by Amplifying Slow Gradients, 2024.

    Call between ``loss.backward()`` and ``optimizer.step()``.

    Args:
        model: the module whose ``.grad`` tensors are filtered (parameters without a gradient are skipped).
        grads: the state returned by the previous call (parameter name -> :math:`\mu_{t-1}`, shape of the
            parameter), or ``None`` on the first call.
        alpha: EMA decay :math:`\alpha \in [0, 1)` (the filter's time scale is :math:`1 / (1 - \alpha)` steps).
        lamb: amplification :math:`\lambda \ge 0`.

    Returns:
        The updated state, to pass to the next call.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        >>> state = None
        >>> for _ in range(3):
        ...     opt.zero_grad()
        ...     model(torch.ones(2, 3)).pow(2).mean().backward()
        ...     state = gradfilter_ema(model, state)
        ...     opt.step()
        >>> sorted(state)
        ['bias', 'weight']
    """
    alpha = check_probability("alpha", alpha)
    lamb = check_nonnegative("lamb", lamb)
    grads = {} if grads is None else grads
    for name, g in _named_grads(model):
        grads[name] = _ema_update(grads.get(name), g, alpha)
        g.add_(grads[name], alpha=lamb)
    return grads


@accepts(model=Module(finite=False), window_size=Int(ge=1), lamb=Real(ge=0), filter_type=Choice("mean", "sum"), warmup=Flag(),
         example=lambda ctx: {"model": _example_model(ctx), "window_size": 2})
@torch.no_grad()
def gradfilter_ma(model: torch.nn.Module, grads: dict[str, MovingWindow] | None = None, window_size: int = 100,
                  lamb: float = 5.0, filter_type: str = "mean", warmup: bool = True) -> dict[str, MovingWindow]:
    r"""Grokfast-MA (Algorithm 1): :math:`g \leftarrow g + \lambda\,\mathrm{mean}(g_{t-w+1}, \dots, g_t)`, in place.

    References: Grokfast: Accelerated Grokking by Amplifying Slow Gradients, 2024.

    Args:
        model: the module whose ``.grad`` tensors are filtered.
        grads: the state returned by the previous call (parameter name -> :class:`MovingWindow`), or ``None``.
        window_size: :math:`w \ge 1`.
        lamb: amplification :math:`\lambda \ge 0`.
        filter_type: ``"mean"`` or ``"sum"`` over the window.
        warmup: leave gradients unfiltered until :math:`w` of them have been seen.

    Returns:
        The updated state, to pass to the next call.
    """
    window_size = check_int("window_size", window_size, low=1)
    lamb = check_nonnegative("lamb", lamb)
    check_choice("filter_type", filter_type, ("mean", "sum"))
    check_flag("warmup", warmup)
    grads = {} if grads is None else grads
    for name, g in _named_grads(model):
        state = grads.setdefault(name, MovingWindow())
        state.buffer, state.count = _window_update(state.buffer, state.count, g, window_size)
        if not warmup or state.count >= window_size:
            g.add_(_window_average(state.buffer, state.count, filter_type), alpha=lamb)
    return grads


class Grokfast(CheckedOptimizer):
    r"""Grokfast wrapper: filters every gradient (EMA or MA, see the module docstring), then steps ``optimizer``.

    References: Grokfast: Accelerated Grokking by Amplifying Slow Gradients, 2024.

    ``Grokfast(opt)`` shares ``opt.param_groups`` (so learning-rate schedulers attached to either act on both) and
    adds the filter's hyperparameters ``filter``, ``alpha``, ``lamb``, ``window_size``, ``filter_type`` and
    ``warmup`` to every group, where they can be changed per group. Its ``state`` holds the filter state per
    parameter (``"ema"`` of the parameter's shape, or ``"window"`` of shape ``(window_size, *shape)`` with
    ``"step"``, the number of gradients seen); its ``state_dict`` holds that and ``opt.state_dict()``, and ``load_state_dict`` restores both.

    The gradients in ``.grad`` are overwritten by the filtered ones, as in the paper's code. A closure is evaluated
    once, before filtering; optimizers that call the closure several times per step (L-BFGS) are not supported.

    Args:
        optimizer: the base optimizer (any ``torch.optim.Optimizer``).
        filter: ``"ema"`` (Algorithm 2) or ``"ma"`` (Algorithm 1).
        alpha: EMA decay, ``[0, 1)``.
        lamb: amplification :math:`\lambda \ge 0`.
        window_size: MA window :math:`w \ge 1`.
        filter_type: ``"mean"`` or ``"sum"`` over the MA window.
        warmup: MA only: no amplification until the window is full.
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`); checked before the filter, so a NaN never enters it.

    Example:
        >>> import torch
        >>> from paperzoo.optim import Grokfast
        >>> w = torch.nn.Parameter(torch.tensor([2.0, -3.0]))
        >>> opt = Grokfast(torch.optim.AdamW([w], lr=0.1, weight_decay=0.0))
        >>> for _ in range(300):
        ...     opt.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     opt.step()
        >>> bool(w.abs().max() < 0.1)
        True
    """

    @accepts(filter=Choice("ema", "ma"), alpha=Real(ge=0, lt=1), lamb=Real(ge=0), window_size=Int(ge=1),
             filter_type=Choice("mean", "sum"), warmup=Flag(), nonfinite=NONFINITE)
    def __init__(self, optimizer: torch.optim.Optimizer, filter: str = "ema", alpha: float = 0.98,
                 lamb: float = 2.0, window_size: int = 100, filter_type: str = "mean", warmup: bool = True,
                 nonfinite: str = "raise"):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        for group in optimizer.param_groups:
            check_torch_hyperparameters(group)
        self.optimizer = optimizer
        defaults = dict(filter=filter, alpha=alpha, lamb=lamb, window_size=window_size, filter_type=filter_type,
                        warmup=warmup, nonfinite=nonfinite)
        # Passing the base optimizer's group dicts makes torch.optim add the filter's defaults to those very dicts,
        # so both optimizers see one set of groups.
        super().__init__(optimizer.param_groups, defaults)
        self.param_groups = optimizer.param_groups

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if hasattr(self, "optimizer") and not any(param_group is g for g in self.optimizer.param_groups):
            # A group added through the wrapper after construction joins the base optimizer too.
            self.optimizer.add_param_group(param_group)
            param_group = self.optimizer.param_groups[-1]
            for key, value in self.defaults.items():
                param_group.setdefault(key, value)
            check_torch_hyperparameters(param_group)
            self._validate_group(param_group)
            return
        super().add_param_group(param_group)

    def _check_group(self, group: dict[str, Any]) -> None:
        _normalise_group(group)

    @torch.no_grad()
    def filter_gradients(self) -> None:
        """Replace every ``.grad`` by its filtered value :math:`\\hat g_t` (``step`` calls this first)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                check_dense_grad("Grokfast", p.grad)
                state = self.state[p]
                if group["filter"] == "ema":
                    state["ema"] = _ema_update(state.get("ema"), p.grad, group["alpha"])
                    p.grad.add_(state["ema"], alpha=group["lamb"])
                else:
                    if "step" not in state:
                        # A CPU float32 counter under the key "step", as torch.optim keeps step counts, so that
                        # load_state_dict leaves its dtype and device alone.
                        state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    count = int(state["step"].item())
                    state["window"], count = _window_update(state.get("window"), count, p.grad, group["window_size"])
                    state["step"].fill_(count)
                    if not group["warmup"] or count >= group["window_size"]:
                        slow = _window_average(state["window"], count, group["filter_type"])
                        p.grad.add_(slow, alpha=group["lamb"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """Evaluate ``closure`` (if given), filter the gradients, and step the base optimizer."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Before the filter: a NaN must not enter the EMA or the window.
        if self._skip_for_nonfinite():
            return loss
        self.filter_gradients()
        self.optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"filter": super().state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if set(state_dict) != {"filter", "optimizer"}:
            raise ValueError(f"state_dict must have keys ['filter', 'optimizer'], got {sorted(state_dict)}")
        self.optimizer.load_state_dict(state_dict["optimizer"])
        super().load_state_dict(state_dict["filter"])
        # torch.optim rebuilds the group dicts on load: copy the filter's settings into the base optimizer's
        # groups and share them again.
        for mine, base in zip(self.param_groups, self.optimizer.param_groups):
            for key in self.defaults:
                base[key] = mine[key]
        self.param_groups = self.optimizer.param_groups

    def __repr__(self) -> str:
        return f"Grokfast({self.optimizer!r})"


def _normalise_group(group: dict[str, Any]) -> None:
    check_choice("filter", group["filter"], ("ema", "ma"))
    group["alpha"] = check_probability("alpha", group["alpha"])
    group["lamb"] = check_nonnegative("lamb", group["lamb"])
    group["window_size"] = check_int("window_size", group["window_size"], low=1)
    check_choice("filter_type", group["filter_type"], ("mean", "sum"))
    check_flag("warmup", group["warmup"])
