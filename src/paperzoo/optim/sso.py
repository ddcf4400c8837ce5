r"""SSO: stochastic surrogate optimization, one costly target-space gradient amortised over many cheap model steps.

References: Target-based Surrogates for Stochastic Optimization (Lavington, Vaswani, Babanezhad, Schmidt,
Le Roux), 2023.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from paperzoo.core.accepts import Tensor as _Tensor
from paperzoo.core.accepts import Flag, Int, Real, accepts
from paperzoo.core.checks import check_int, check_nonnegative, check_number, check_positive
from paperzoo.optim._common import NONFINITE, CheckedOptimizer, NonFiniteGradientError

__all__ = ["SSO", "target_surrogate"]


def _target_surrogate(z: torch.Tensor, z_t: torch.Tensor, g_t: torch.Tensor, eta: float) -> torch.Tensor:
    """Unchecked :func:`target_surrogate` (the optimizer's inner loop)."""
    diff = z - z_t
    return (g_t * diff).sum() + diff.pow(2).sum() / (2.0 * eta)


# Targets of any shape (up to 8 dimensions); the three must share it (checked in the body).
_ANY_RANK = (1, 0, 2, 3, 4, 5, 6, 7, 8)  # the first is the rank of the example


@accepts(z=_Tensor(ndims=_ANY_RANK), z_t=_Tensor(ndims=_ANY_RANK), g_t=_Tensor(ndims=_ANY_RANK, degenerate=("zeros",)),
         eta=Real(gt=0))
def target_surrogate(z: torch.Tensor, z_t: torch.Tensor, g_t: torch.Tensor, eta: float) -> torch.Tensor:
    r"""The SSO surrogate in target space, without its constant :math:`\ell(z_t)`.

    .. math::
        h_t(z) = \langle g_t, z - z_t\rangle + \frac{1}{2\eta}\|z - z_t\|^2

    Its minimiser over unconstrained :math:`z` is the target-space gradient step :math:`z_t - \eta g_t`;
    minimising it over the model's outputs :math:`z = f_\theta(X)` is the projection of that step onto what the
    model can represent. For :math:`\eta \le 1/L` (:math:`L` the smoothness of :math:`\ell` in :math:`z`),
    :math:`\ell(z_t) + h_t(z) \ge \ell(z)` for every :math:`z` (the paper's majorisation).

    Args:
        z: current targets :math:`f_\theta(X)`, any shape.
        z_t: targets where the costly gradient was taken, shape of ``z``.
        g_t: :math:`\nabla_z \ell(z_t)`, shape of ``z``.
        eta: target-space step size :math:`\eta > 0`.

    Example:
        >>> z_t, g = torch.zeros(3), torch.tensor([1.0, -2.0, 0.5])
        >>> float(target_surrogate(z_t - 0.5 * g, z_t, g, 0.5)) == float(-0.25 * g.pow(2).sum())
        True
    """
    for name, t in (("z_t", z_t), ("g_t", g_t)):
        if t.shape != z.shape:
            raise ValueError(f"{name} must have the shape of z {tuple(z.shape)}, got {tuple(t.shape)}")
    return _target_surrogate(z, z_t, g_t, float(eta))


class SSO(CheckedOptimizer):
    r"""SSO: stochastic surrogate optimization (Algorithm 1 of the paper), projected SGD in target space.

    References: Target-based Surrogates for Stochastic Optimization (Lavington, Vaswani, Babanezhad, Schmidt,
    Le Roux), 2023.

    The model's outputs on a mini-batch, :math:`z = f_\theta(X)` (e.g. logits), form the *target space*; the loss
    :math:`\ell(z)` is costly to differentiate (a simulator, an expert policy ...), the model cheap. Each
    ``step`` makes one costly call, at :math:`z_t = f_{\theta_t}(X)`, and then ``inner_steps`` = :math:`m`
    gradient steps on the surrogate (see :func:`target_surrogate`)

    .. math::
        \tilde g_t(\theta) = \ell(z_t) + \langle \nabla_z\ell(z_t), f_\theta(X) - z_t\rangle
            + \frac{1}{2\eta}\|f_\theta(X) - z_t\|^2,
        \qquad \omega_{k+1} = \omega_k - \alpha_k \nabla_\omega \tilde g_t(\omega_k),\quad
        \omega_0 = \theta_t,\ \theta_{t+1} = \omega_m,

    which only needs :math:`f_\theta` and its Jacobian-vector products, never :math:`\ell` again. Symbols:
    :math:`\eta` = ``eta``; :math:`\alpha_k` = ``lr`` (the inner step size, per group, so learning-rate
    schedulers act on it), shrunk by Armijo backtracking when ``line_search=True``: :math:`\alpha_k = \rho^j`
    ``lr`` with the smallest :math:`j \ge 0` such that :math:`\tilde g_t(\omega_k - \alpha_k\nabla) \le
    \tilde g_t(\omega_k) - c\,\alpha_k \|\nabla\|^2` (:math:`c` = ``armijo_c``, :math:`\rho` = ``backtrack``).
    The paper minimises the surrogate with SGD plus an Armijo line search, as here; the line search starts
    from ``lr`` at every inner step (no step-size carry-over).

    The scale of :math:`\eta` follows the loss's reduction: with a summed loss over the batch,
    :math:`\nabla_z\ell` is per example and :math:`\eta \le 1/L_{\text{example}}` (``eta = 1`` for softmax
    cross-entropy, whose per-example logit Hessian has norm at most 1/2) keeps the surrogate an upper bound.

    Interface: SSO needs the targets and the loss separately, so ``step`` takes two callables instead of a
    closure: ``targets()`` returns :math:`f_\theta(X)` for the current mini-batch (with autograd, shape
    ``(batch, k)`` or any shape) and ``loss(z)`` returns the scalar :math:`\ell(z)` for targets ``z`` of that
    shape. ``loss`` is called once per step (the costly oracle), ``targets`` :math:`m + 1` times plus once per
    line-search trial. ``maximize=True`` ascends :math:`\ell`. Deviation: no weight decay option (add a penalty
    to the targets' loss instead); the surrogate's norm is the plain Euclidean norm over the mini-batch's targets.

    Args:
        params: parameters or parameter-group dicts (``lr`` may differ per group; ``eta`` must be the same in
            every group, since the surrogate couples all parameters).
        lr: inner step size :math:`\alpha` (the initial trial step with ``line_search``), ``>= 0``.
        eta: target-space step size :math:`\eta > 0`.
        inner_steps: :math:`m \ge 0` surrogate steps per costly gradient.
        line_search: Armijo backtracking on the surrogate.
        armijo_c: sufficient-decrease constant :math:`c \in (0, 1)`.
        backtrack: shrink factor :math:`\rho \in (0, 1)`.
        max_backtracks: shrinks tried before the inner step is skipped (the parameters stay at :math:`\omega_k`).
        maximize: ascend the loss.
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`). Checked are the target gradient :math:`g_t` (shared
            by every group) and each surrogate gradient before its inner step; when one is non-finite the
            parameters are put back at :math:`\theta_t` before the step raises or is skipped.

    State: ``state[p]["step"]`` counts costly gradient evaluations (outer steps) and ``state[p]["inner_step"]``
    the surrogate steps taken, both CPU float32 scalars as in ``torch.optim``.

    Example:
        >>> import torch
        >>> from paperzoo.optim import SSO
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> X, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
        >>> model = torch.nn.Linear(5, 3)
        >>> opt = SSO(model.parameters(), lr=1.0, eta=1.0, inner_steps=10)
        >>> ce = lambda z: torch.nn.functional.cross_entropy(z, y, reduction="sum")
        >>> first = opt.step(lambda: model(X), ce)
        >>> for _ in range(20):
        ...     last = opt.step(lambda: model(X), ce)
        >>> bool(last < first)
        True
    """

    @accepts(lr=Real(ge=0), eta=Real(gt=0), inner_steps=Int(ge=0), line_search=Flag(), armijo_c=Real(gt=0, lt=1),
             backtrack=Real(gt=0, lt=1), max_backtracks=Int(ge=0), maximize=Flag(), nonfinite=NONFINITE)
    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float = 1.0,
                 eta: float = 1.0, inner_steps: int = 10, line_search: bool = True, armijo_c: float = 0.1,
                 backtrack: float = 0.5, max_backtracks: int = 20, *, maximize: bool = False,
                 nonfinite: str = "raise"):
        defaults = dict(lr=lr, eta=eta, inner_steps=inner_steps, line_search=line_search, armijo_c=armijo_c,
                        backtrack=backtrack, max_backtracks=max_backtracks, maximize=maximize, nonfinite=nonfinite)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_nonnegative("lr", group["lr"])
        group["eta"] = check_positive("eta", group["eta"])
        group["inner_steps"] = check_int("inner_steps", group["inner_steps"], low=0)
        group["armijo_c"] = check_number("armijo_c", group["armijo_c"], low=0.0, high=1.0, low_inclusive=False,
                                         high_inclusive=False)
        group["backtrack"] = check_number("backtrack", group["backtrack"], low=0.0, high=1.0,
                                          low_inclusive=False, high_inclusive=False)
        group["max_backtracks"] = check_int("max_backtracks", group["max_backtracks"], low=0)

    def _shared(self, key: str):
        values = {group[key] for group in self.param_groups}
        if len(values) != 1:
            raise ValueError(f"{key} must be the same in every parameter group, got {sorted(values)}")
        return values.pop()

    def step(self, targets: Callable[[], torch.Tensor] | None = None,
             loss: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """One outer step: one costly target gradient, then ``inner_steps`` surrogate steps.

        Returns the loss :math:`\\ell(z_t)` at the start of the step (detached).
        """
        if not callable(targets) or not callable(loss):
            raise TypeError("SSO.step needs targets and loss callables: step(targets, loss) with targets() -> "
                            "model outputs on the batch and loss(z) -> scalar loss of those outputs")
        eta = self._shared("eta")
        m = self._shared("inner_steps")
        line_search = self._shared("line_search")
        maximize = self._shared("maximize")
        params = [p for group in self.param_groups for p in group["params"] if p.requires_grad]
        with torch.no_grad():
            z_t = targets()
        if not isinstance(z_t, torch.Tensor):
            raise TypeError(f"targets() must return a torch.Tensor, got {type(z_t).__name__}")
        # A copy: targets() may return a view of the parameters themselves, which the inner steps change.
        z_t = z_t.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            value = loss(z_t)
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise ValueError("loss(z) must return a scalar tensor")
            (g_t,) = torch.autograd.grad(value, z_t)
        z_t = z_t.detach()
        if maximize:
            g_t = -g_t
        # g_t enters every group's surrogate.
        if self._skip_for_nonfinite(grads=[[g_t]] * len(self.param_groups)):
            return value.detach()
        # A non-finite surrogate gradient after some inner steps sends the parameters back to theta_t.
        guarded = m > 1 and any(group["nonfinite"] != "ignore" for group in self.param_groups)
        start = [p.detach().clone() for p in params] if guarded else None
        inner = dict.fromkeys(params, 0)
        for _ in range(m):
            moved = self._inner_step(targets, z_t, g_t, eta, line_search, params, start)
            if moved is None:
                return value.detach()
            for p in moved:
                inner[p] += 1
        for p in params:
            state = self.state[p]
            if len(state) == 0:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["inner_step"] = torch.tensor(0.0, dtype=torch.float32)
            state["step"] += 1
            state["inner_step"] += inner[p]
        return value.detach()

    @staticmethod
    def _restore(params: list[torch.Tensor], start: list[torch.Tensor] | None) -> None:
        """Put the parameters back at the step's starting point (``start is None``: none has moved)."""
        if start is not None:
            with torch.no_grad():
                for p, x in zip(params, start):
                    p.copy_(x)

    def _inner_step(self, targets, z_t, g_t, eta, line_search, params, start):
        """One surrogate step; returns the parameters it moved, or ``None`` when the step is skipped."""
        with torch.enable_grad():
            # The unchecked kernel: the step checks its own gradients with the nonfinite policy below.
            h = _target_surrogate(targets(), z_t, g_t, eta)
            grads = torch.autograd.grad(h, params, allow_unused=True)
        grad_of = {p: g for p, g in zip(params, grads) if g is not None}
        try:
            skip = self._skip_for_nonfinite(grads=[[grad_of[p] for p in group["params"] if p in grad_of]
                                                   for group in self.param_groups])
        except NonFiniteGradientError:
            self._restore(params, start)
            raise
        if skip:
            self._restore(params, start)
            return None
        moves = [(p, grad_of[p], group["lr"]) for group in self.param_groups for p in group["params"]
                 if p in grad_of]
        with torch.no_grad():
            for p, g, lr in moves:
                p.sub_(g, alpha=lr)
            if line_search:
                group = self.param_groups[0]
                c, rho = group["armijo_c"], group["backtrack"]
                # Sufficient decrease predicted by the (per-group scaled) gradient direction at scale 1.
                decrease = sum(lr * float(g.pow(2).sum()) for _, g, lr in moves)
                scale, h0 = 1.0, float(h)
                for j in range(group["max_backtracks"] + 1):
                    trial = float(_target_surrogate(targets(), z_t, g_t, eta))
                    if trial <= h0 - c * scale * decrease:
                        break
                    # Back to omega_k when no trial passes, else shrink the step in place.
                    new = 0.0 if j == group["max_backtracks"] else scale * rho
                    for p, g, lr in moves:
                        p.add_(g, alpha=lr * (scale - new))
                    scale = new
        return [p for p, _, _ in moves]
