r"""Lion-K: Lion with its sign map replaced by the (sub)gradient of a convex function K; Lion is K = the l1 norm.

References: Lion Secretly Solves Constrained Optimization: As Lyapunov Predicts (Chen, Liu, Liang, Liu), 2023.

The paper shows, with a Lyapunov function, that Lion-K with decoupled weight decay :math:`\lambda` minimises the
composite objective :math:`f(x) + \tfrac1\lambda K^*(\lambda x)` (:math:`K^*` the convex conjugate). For Lion,
:math:`K = \|\cdot\|_1` and :math:`K^*` is the indicator of the unit :math:`\ell_\infty` ball, so Lion solves
:math:`\min f(x)` subject to :math:`\|x\|_\infty \le 1/\lambda`: it first enters the box (exponentially fast)
and then minimises :math:`f` inside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from paperzoo.core.checks import check_nonnegative
from paperzoo.core.accepts import Binding, Flag, Pair, Real, Tensors, accepts
from paperzoo.optim._common import COMMON_HYPERPARAMETERS, NONFINITE, ElementwiseOptimizer, check_betas, check_flag, check_optional_flag

__all__ = ["LionK", "Lion", "lion_k_update", "GRAD_K"]

GRAD_K = ("sign", "l2", "identity")
"""Named choices of :math:`\\nabla K`: ``sign`` (:math:`K = \\|x\\|_1`, box constraint :math:`\\|x\\|_\\infty
\\le 1/\\lambda`), ``l2`` (:math:`K = \\|x\\|_2` per tensor, ball :math:`\\|x\\|_2 \\le 1/\\lambda`), ``identity``
(:math:`K = \\tfrac12\\|x\\|_2^2`, an L2 penalty :math:`\\tfrac\\lambda2\\|x\\|^2`: momentum SGD)."""

LION_HYPERPARAMETERS = dict({k: v for k, v in COMMON_HYPERPARAMETERS.items()}, betas=Pair(Real(ge=0, lt=1), meaning="(beta1, beta2)"))


def _apply_grad_k(grad_k, cs: list[torch.Tensor], foreach: bool) -> list[torch.Tensor]:
    if grad_k == "sign":
        return torch._foreach_sign(cs) if foreach else [c.sign() for c in cs]
    if grad_k == "identity":
        return cs
    if grad_k == "l2":
        norms = torch._foreach_norm(cs) if foreach else [torch.linalg.vector_norm(c) for c in cs]
        # The subgradient of ||x||_2 at 0 is any point of the unit ball; 0 is the one that keeps x still.
        return [c / n if bool(n > 0) else torch.zeros_like(c) for c, n in zip(cs, norms)]
    out = [grad_k(c) for c in cs]
    for c, d in zip(cs, out):
        if not isinstance(d, torch.Tensor) or d.shape != c.shape:
            raise ValueError(f"grad_K must return a tensor of the input's shape {tuple(c.shape)}, got "
                             f"{type(d).__name__ if not isinstance(d, torch.Tensor) else tuple(d.shape)}")
    return out


def _example_update(ctx):
    def lists(draw):
        return [draw(shape, generator=ctx.generator, dtype=ctx.dtype) for shape in ((3, 2), (4,))]
    return dict(params=lists(torch.randn), grads=lists(torch.randn), exp_avgs=lists(torch.randn), lr=1e-2,
                beta1=0.9, beta2=0.99, weight_decay=0.1, grad_K="sign", maximize=False, foreach=False)


def _lion_k_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    grad_K: str | Callable[[torch.Tensor], torch.Tensor],
    maximize: bool,
    foreach: bool,
) -> None:
    # The unvalidated kernel of lion_k_update, for the optimizer's per-step loop.
    if maximize:
        grads = torch._foreach_neg(grads) if foreach else [-g for g in grads]
    if foreach:
        c = torch._foreach_lerp(exp_avgs, grads, 1.0 - beta1)
    else:
        c = [m.lerp(g, 1.0 - beta1) for m, g in zip(exp_avgs, grads)]
    direction = _apply_grad_k(grad_K, c, foreach)
    if foreach:
        if weight_decay != 0:
            torch._foreach_mul_(params, 1.0 - lr * weight_decay)
        torch._foreach_add_(params, direction, alpha=-lr)
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta2)
        return
    for theta, d, m, g in zip(params, direction, exp_avgs, grads):
        if weight_decay != 0:
            theta.mul_(1.0 - lr * weight_decay)
        theta.add_(d, alpha=-lr)
        m.lerp_(g, 1.0 - beta2)


@accepts(params=Tensors(), grads=Tensors(like="params"), exp_avgs=Tensors(like="params"), lr=Real(ge=0),
         beta1=Real(ge=0, lt=1), beta2=Real(ge=0, lt=1), weight_decay=Real(ge=0), maximize=Flag(), foreach=Flag(),
         example=_example_update, mutates=("params", "exp_avgs"))
def lion_k_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    grad_K: str | Callable[[torch.Tensor], torch.Tensor],
    maximize: bool,
    foreach: bool,
) -> None:
    """One Lion-K step, in place (see :class:`LionK`); ``exp_avgs`` is the momentum :math:`m`.

    ``params``, ``grads`` and ``exp_avgs`` are lists of equal length with matching shapes; ``grad_K`` is one of
    :data:`GRAD_K` or a callable mapping a tensor to one of its shape.
    """
    if not callable(grad_K) and not (isinstance(grad_K, str) and grad_K in GRAD_K):
        raise ValueError(f"grad_K must be one of {list(GRAD_K)} or a callable, got {grad_K!r}")
    _lion_k_update(params, grads, exp_avgs, lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay, grad_K=grad_K,
            maximize=maximize, foreach=foreach)


class LionK(ElementwiseOptimizer):
    r"""Lion-K: sign-momentum updates generalised to :math:`\nabla K` of a convex K, with decoupled weight decay.

    References: Lion Secretly Solves Constrained Optimization: As Lyapunov Predicts (Chen et al.), 2023.

    Each step, with :math:`g_t` the gradient at :math:`x_t`,

    .. math::
        c_t &= \beta_1 m_t + (1 - \beta_1)\, g_t \\
        x_{t+1} &= x_t - \epsilon\,\bigl(\nabla K(c_t) + \lambda x_t\bigr) \\
        m_{t+1} &= \beta_2 m_t + (1 - \beta_2)\, g_t

    from :math:`m_0 = 0`. This is the paper's Lion-K iteration written with :math:`m` tracking :math:`+g` (the
    paper tracks :math:`-g` and adds :math:`\nabla K(-c_t)`); the two coincide for every odd :math:`\nabla K`,
    which includes all the named choices (a callable ``grad_K`` is applied as written above). With
    :math:`\nabla K = \mathrm{sign}` it is Lion (Chen et al., 2023, "Symbolic Discovery of Optimization
    Algorithms"), and the fixed points solve :math:`\min f(x) + \tfrac1\lambda K^*(\lambda x)`; see the module
    docstring for what each K constrains.

    Symbols: :math:`\epsilon` = ``lr``, :math:`(\beta_1, \beta_2)` = ``betas``, :math:`\lambda` =
    ``weight_decay``, :math:`\nabla K` = ``grad_K``, :math:`g_t` negated when ``maximize``.

    Args:
        params: parameters or parameter-group dicts (every hyperparameter below may be set per group).
        lr: :math:`\epsilon \ge 0`.
        betas: :math:`(\beta_1, \beta_2)`, each in ``[0, 1)``.
        weight_decay: :math:`\lambda \ge 0`.
        grad_K: ``"sign"``, ``"l2"``, ``"identity"`` (see :data:`GRAD_K`) or a callable mapping a tensor to a
            tensor of the same shape (use a module-level function if the ``state_dict`` is to be pickled).
        foreach: multi-tensor implementation; ``None`` picks it when every parameter is on CUDA.
        maximize: ascend the objective instead.
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`).

    State per parameter: ``step`` and ``exp_avg`` (:math:`m`, the parameter's shape).

    Example:
        >>> import torch
        >>> from paperzoo.optim import LionK
        >>> x = torch.nn.Parameter(torch.zeros(3))
        >>> opt = LionK([x], lr=0.01, weight_decay=0.5)  # feasible box: |x_i| <= 2
        >>> target = torch.tensor([5.0, -1.0, 0.5])
        >>> for _ in range(2000):
        ...     opt.zero_grad()
        ...     ((x - target) ** 2).sum().backward()
        ...     opt.step()
        >>> bool(torch.allclose(x.detach(), torch.tensor([2.0, -1.0, 0.5]), atol=0.05))
        True
    """

    state_names = ("exp_avg",)

    @accepts(**LION_HYPERPARAMETERS)
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        grad_K: str | Callable[[torch.Tensor], torch.Tensor] = "sign",
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        nonfinite: str = "raise",
    ):
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, grad_K=grad_K, foreach=foreach,
                        maximize=maximize, nonfinite=nonfinite)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_nonnegative("lr", group["lr"])
        group["betas"] = check_betas(group["betas"])
        group["weight_decay"] = check_nonnegative("weight_decay", group["weight_decay"])
        grad_k = group["grad_K"]
        if not callable(grad_k) and grad_k not in GRAD_K:
            raise ValueError(f"grad_K must be one of {list(GRAD_K)} or a callable, got {grad_k!r}")
        check_flag("maximize", group["maximize"])
        check_optional_flag("foreach", group["foreach"])
        NONFINITE.validate("nonfinite", group["nonfinite"], Binding())

    def _update(self, group, step, params, grads, states, foreach):
        beta1, beta2 = group["betas"]
        _lion_k_update(params, grads, states[0], lr=group["lr"], beta1=beta1, beta2=beta2,
                      weight_decay=group["weight_decay"], grad_K=group["grad_K"], maximize=group["maximize"],
                      foreach=foreach)


class Lion(LionK):
    r"""Lion (EvoLved Sign Momentum): :class:`LionK` with :math:`\nabla K = \mathrm{sign}`.

    References: Lion Secretly Solves Constrained Optimization: As Lyapunov Predicts (Chen et al.), 2023; the
    optimizer itself is from Symbolic Discovery of Optimization Algorithms (Chen et al.), 2023.

    :math:`x \leftarrow x - \epsilon(\mathrm{sign}(\beta_1 m + (1-\beta_1) g) + \lambda x)`,
    :math:`m \leftarrow \beta_2 m + (1-\beta_2) g`. With ``weight_decay`` :math:`\lambda > 0` it minimises
    :math:`f` over the box :math:`\|x\|_\infty \le 1/\lambda`. Same arguments as :class:`LionK` without ``grad_K``.

    Example:
        >>> import torch
        >>> from paperzoo.optim import Lion
        >>> w = torch.nn.Parameter(torch.tensor([2.0, -3.0]))
        >>> opt = Lion([w], lr=0.01)
        >>> for _ in range(600):
        ...     opt.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     opt.step()
        >>> bool(w.abs().max() < 0.05)
        True
    """

    @accepts(**LION_HYPERPARAMETERS)
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        nonfinite: str = "raise",
    ):
        super().__init__(params, lr=lr, betas=betas, weight_decay=weight_decay, grad_K="sign", foreach=foreach,
                         nonfinite=nonfinite,
                         maximize=maximize)
