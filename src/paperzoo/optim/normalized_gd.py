r"""β-normalized gradient descent and normalized SPIDER for generalized-smooth nonconvex problems.

References: Generalized-Smooth Nonconvex Optimization is As Efficient As Smooth Nonconvex Optimization (Chen,
Zhou, Liang, Lu), 2023.

The paper's function class, α-symmetric generalized smoothness, bounds the change of the gradient by
:math:`(L_0 + L_1 \max_{\theta\in[0,1]}\|\nabla f(x_\theta)\|^{\alpha})\|x - x'\|`; polynomials of degree
:math:`p` have :math:`\alpha = (p - 2)/(p - 1)` and exponentials :math:`\alpha = 1`. Dividing the gradient by
:math:`\|\nabla f\|^{\beta}` with :math:`\beta \ge \alpha` cancels the growth of curvature with the gradient, which
is what lets a constant :math:`\gamma` work where plain gradient descent must shrink its step with the largest
gradient it will ever see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from paperzoo.core.accepts import Flag, Int, Real, Tensors, accepts
from paperzoo.core.checks import check_int, check_nonnegative, check_number, check_positive
from paperzoo.optim._common import COMMON_HYPERPARAMETERS, CheckedOptimizer, check_dense_grad
from paperzoo.optim.clipping import _stable_global_norm

__all__ = ["BetaNormalizedGD", "NormalizedSPIDER", "beta_normalized_step"]


def _beta_normalized_step(params, directions, lr, beta, foreach):
    """Unchecked :func:`beta_normalized_step` (the optimizers' step)."""
    norm = _stable_global_norm(directions)
    scale = torch.where(norm > 0, norm.clamp_min(torch.finfo(norm.dtype).tiny).pow(-beta), torch.zeros_like(norm))
    scale = scale * -lr
    if foreach:
        torch._foreach_add_(params, torch._foreach_mul(directions, scale))
    else:
        for p, v in zip(params, directions):
            p.add_(v * scale)
    return norm




def _example_step(ctx) -> dict:
    shapes = [(3, 2), (4,)]
    return dict(params=[torch.randn(s, generator=ctx.generator, dtype=ctx.dtype) for s in shapes],
                directions=[torch.randn(s, generator=ctx.generator, dtype=ctx.dtype) for s in shapes],
                lr=0.1, beta=0.5, foreach=False)


@accepts(params=Tensors(), directions=Tensors(like="params"), lr=Real(ge=0), beta=Real(ge=0, le=1), foreach=Flag(),
         example=_example_step, mutates=("params",))
def beta_normalized_step(params: list[torch.Tensor], directions: list[torch.Tensor], *, lr: float, beta: float,
                         foreach: bool) -> torch.Tensor:
    r"""In place :math:`x \leftarrow x - \gamma\, v / \|v\|^{\beta}` with the norm over all ``directions`` jointly.

    A zero direction leaves the parameters unchanged (the limit of :math:`\gamma\|v\|^{1-\beta}` for
    :math:`\beta < 1`, and the natural choice at a stationary point for :math:`\beta = 1`). Returns
    :math:`\|v\|` (0-dim tensor). ``params[i]`` and ``directions[i]`` share shape.
    """
    return _beta_normalized_step(params, directions, float(lr), float(beta), foreach)


class _NormalizedBase(CheckedOptimizer):
    def _check_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_nonnegative("lr", group["lr"])
        group["beta"] = check_number("beta", group["beta"], low=0.0, high=1.0)
        group["weight_decay"] = check_nonnegative("weight_decay", group["weight_decay"])
        self._check_extra(group)

    def _check_extra(self, group):
        pass

    def _grads(self, group, params):
        grads = [p.grad for p in params]
        if group["maximize"]:
            grads = [-g for g in grads]
        if group["weight_decay"] != 0:
            grads = [g.add(p, alpha=group["weight_decay"]) for g, p in zip(grads, params)]
        return grads

    @staticmethod
    def _foreach(group, params):
        return all(p.device.type == "cuda" for p in params) if group["foreach"] is None else group["foreach"]

    def _active(self, group):
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            check_dense_grad(type(self).__name__, p.grad)
            if torch.is_complex(p):
                raise RuntimeError(f"{type(self).__name__} does not support complex parameters")
        return params


class BetaNormalizedGD(_NormalizedBase):
    r"""β-normalized gradient descent (β-GD).

    References: Generalized-Smooth Nonconvex Optimization is As Efficient As Smooth Nonconvex Optimization, 2023.

    .. math::
        x_{t+1} = x_t - \gamma\, \frac{\nabla f(x_t)}{\|\nabla f(x_t)\|^{\beta}}

    with the norm taken over every parameter of the group jointly (the paper's :math:`x \in \mathbb R^d`).
    :math:`\beta = 0` is gradient descent, :math:`\beta = 1` normalized gradient descent; the paper's analysis
    takes :math:`\beta \in [\alpha, 1]` for an α-symmetric generalized-smooth objective and a constant
    :math:`\gamma` set from :math:`L_0, L_1` and the target accuracy, and proves an :math:`\epsilon`-stationary
    point within :math:`O(\epsilon^{-2})` iterations, the rate of gradient descent on :math:`L`-smooth functions.
    The theorem's exact constant in :math:`\gamma` is not reproduced here: ``lr`` is the user's :math:`\gamma`.
    With :math:`\beta > 0` and a constant :math:`\gamma` the iterates settle where the effective step
    :math:`\gamma\|\nabla f\|^{-\beta}` meets the local curvature, at a gradient norm of order
    :math:`(\gamma L_0)^{1/\beta}`: choosing :math:`\gamma \propto \epsilon^{\beta}`, as the theorem does, is what
    puts that level at :math:`\epsilon`.

    Symbols: :math:`\gamma` = ``lr``, :math:`\beta` = ``beta``. ``weight_decay`` adds :math:`w x_t` to the
    gradient (not in the paper); ``maximize`` ascends. A zero gradient gives no step.

    Args:
        params: parameters or parameter-group dicts.
        lr: :math:`\gamma \ge 0`.
        beta: normalization exponent in ``[0, 1]``; default 2/3, the α of quartic polynomials.
        weight_decay: L2 coefficient ``>= 0``.
        foreach: multi-tensor implementation (same numbers); ``None`` picks it on CUDA.
        maximize: ascend instead of descend.
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`).

    State per parameter: ``step`` only (the method is memoryless).

    Example:
        >>> import torch
        >>> x = torch.nn.Parameter(torch.full((3,), 5.0))
        >>> opt = BetaNormalizedGD([x], lr=0.1, beta=2 / 3)
        >>> for _ in range(300):
        ...     opt.zero_grad()
        ...     (x.pow(4) / 4 - x.pow(2) / 2).sum().backward()
        ...     opt.step()
        >>> bool(x.grad.norm() < 0.05)  # the level (gamma * L)^(1 / beta) that a constant gamma reaches
        True
    """

    @accepts(**COMMON_HYPERPARAMETERS, beta=Real(ge=0, le=1))
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        beta: float = 2.0 / 3.0,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        nonfinite: str = "raise",
    ):
        super().__init__(params, dict(lr=lr, beta=beta, weight_decay=weight_decay, foreach=foreach,
                                      maximize=maximize, nonfinite=nonfinite))

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
            params = self._active(group)
            if not params:
                continue
            for p in params:
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
            _beta_normalized_step(params, self._grads(group, params), group["lr"], group["beta"],
                                  foreach=self._foreach(group, params))
            for p in params:
                self.state[p]["step"] += 1
        return loss


class NormalizedSPIDER(_NormalizedBase):
    r"""Normalized SPIDER: a recursive variance-reduced gradient estimate followed by a β-normalized step.

    References: Generalized-Smooth Nonconvex Optimization is As Efficient As Smooth Nonconvex Optimization, 2023.

    .. math::
        v_t &= \begin{cases} \nabla f_{S'}(x_t) & t \bmod q = 0 \quad\text{(large batch } S'\text{)} \\
               v_{t-1} + \nabla f_{S}(x_t) - \nabla f_{S}(x_{t-1}) & \text{otherwise (the same batch } S
               \text{ at both points)} \end{cases} \\
        x_{t+1} &= x_t - \gamma\, \frac{v_t}{\|v_t\|^{\beta}}

    The paper proves :math:`O(\epsilon^{-3})` stochastic-gradient evaluations to an :math:`\epsilon`-stationary
    point on generalized-smooth problems, the optimal smooth-case sample complexity.

    ``step(closure)`` needs a closure that zeroes the gradients, evaluates the loss on the *current* batch at
    the current parameters and back-propagates. On a correction step (``t mod q != 0``) the optimizer calls it
    twice, first at :math:`x_t` and then with the parameters temporarily set to :math:`x_{t-1}`, so the closure
    must not draw a new batch itself: draw the batch before ``step``. On a refresh step (see
    :attr:`refresh_due`) it is called once; pass a closure over the large batch :math:`S'` then.

    Symbols: :math:`\gamma` = ``lr``, :math:`\beta` = ``beta``, :math:`q` = ``period``. ``weight_decay`` adds
    :math:`w x` to every gradient (not in the paper); ``maximize`` ascends. Under ``nonfinite``, the gradients of
    both closure calls are checked before anything changes (the parameters are back at :math:`x_t` first).

    Args:
        params: parameters or parameter-group dicts.
        lr: :math:`\gamma \ge 0`.
        beta: normalization exponent in ``[0, 1]`` (default 1, normalized SPIDER).
        period: refresh period :math:`q \ge 1` (an integer; per group).
        weight_decay, foreach, maximize, nonfinite: as :class:`BetaNormalizedGD`.

    State per parameter: ``step``, ``estimate`` (:math:`v_t`), ``previous`` (:math:`x_{t}` saved for the next
    correction).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.nn.Parameter(torch.full((2,), 3.0))
        >>> opt = NormalizedSPIDER([x], lr=0.05, beta=1.0, period=10)
        >>> for t in range(400):
        ...     shift = torch.randn(64 if opt.refresh_due else 8, 2, generator=g) * 0.1
        ...     def closure():
        ...         opt.zero_grad()
        ...         loss = ((x - shift) ** 2).sum(1).mean() / 2
        ...         loss.backward()
        ...         return loss
        ...     _ = opt.step(closure)
        >>> bool(x.norm() < 0.2)
        True
    """

    @accepts(**COMMON_HYPERPARAMETERS, beta=Real(ge=0, le=1), period=Int(ge=1))
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        beta: float = 1.0,
        period: int = 10,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        nonfinite: str = "raise",
    ):
        super().__init__(params, dict(lr=lr, beta=beta, period=period, weight_decay=weight_decay,
                                      foreach=foreach, maximize=maximize, nonfinite=nonfinite))

    def _check_extra(self, group):
        group["period"] = check_int("period", group["period"], low=1)

    def _step_count(self, group) -> int:
        for p in group["params"]:
            state = self.state.get(p)
            if state:
                return int(state["step"].item())
        return 0

    @property
    def refresh_due(self) -> bool:
        """Whether the next ``step`` recomputes :math:`v_t` from scratch (true for any group that is due)."""
        return any(self._step_count(g) % g["period"] == 0 for g in self.param_groups)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """Perform one step; ``closure`` (required) evaluates the current batch and back-propagates."""
        if closure is None:
            raise RuntimeError("NormalizedSPIDER requires a closure: it evaluates the same batch at two points")
        with torch.enable_grad():
            loss = closure()
        if self._skip_for_nonfinite():
            return loss
        due = [self._step_count(g) % g["period"] == 0 for g in self.param_groups]
        current = [[g.clone() for g in self._grads(group, self._active(group))] for group in self.param_groups]
        active = [self._active(group) for group in self.param_groups]
        if not all(due):
            # Evaluate the same batch at x_{t-1}: swap the saved point in, call the closure, swap back (also when
            # the closure raises).
            saved = []
            try:
                for group, params, is_due in zip(self.param_groups, active, due):
                    for p in params:
                        if not is_due and "previous" in self.state[p]:
                            saved.append((p, p.detach().clone()))
                            p.copy_(self.state[p]["previous"])
                with torch.enable_grad():
                    closure()
            finally:
                for p, value in saved:
                    p.copy_(value)
            # The gradients at x_{t-1} enter v_t too: check them before any state changes.
            previous = [[] if is_due else [p.grad for p in params if p.grad is not None]
                        for params, is_due in zip(active, due)]
            if self._skip_for_nonfinite(grads=previous):
                return loss
        for group, params, grads_now, is_due in zip(self.param_groups, active, current, due):
            if not params:
                continue
            estimates = []
            for p, g_now in zip(params, grads_now):
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["estimate"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["previous"] = p.detach().clone(memory_format=torch.preserve_format)
                v = state["estimate"]
                if is_due:
                    v.copy_(g_now)
                else:
                    g_prev = p.grad.neg() if group["maximize"] else p.grad.clone()
                    if group["weight_decay"] != 0:
                        g_prev.add_(state["previous"], alpha=group["weight_decay"])
                    v.add_(g_now).sub_(g_prev)
                state["previous"].copy_(p)
                estimates.append(v)
            _beta_normalized_step(params, estimates, group["lr"], group["beta"],
                                  foreach=self._foreach(group, params))
            for p in params:
                self.state[p]["step"] += 1
        return loss
