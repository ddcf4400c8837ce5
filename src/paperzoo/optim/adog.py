r"""A-DoG: accelerated DoG, the parameter-free accelerated method of the U-DoG authors' code.

References: Accelerated Parameter-Free Stochastic Optimization (Kreisler, Ivgi, Hinder, Carmon), 2024.
The update is read from the authors' code (github.com/ittaikr/open_lm_fork @ cc51851a, ``accele_dog.py``, class
``AcceleDoG`` in its default configuration), not from the paper: the paper's own algorithms (U-DoG, and the A-DoG
of its experiments) could not be read here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from paperzoo.core.accepts import Real, accepts
from paperzoo.core.checks import check_nonnegative, check_number, check_positive
from paperzoo.optim._common import COMMON_HYPERPARAMETERS, CheckedOptimizer, check_dense_grad

__all__ = ["ADoG"]

_GROUP_STATE = ("rbar", "rbar_sum", "alpha", "sum_sq")


class ADoG(CheckedOptimizer):
    r"""A-DoG: DoG's distance-over-gradients step size inside a linearly coupled (accelerated) two-sequence scheme.

    References: Accelerated Parameter-Free Stochastic Optimization (Kreisler, Ivgi, Hinder, Carmon), 2024; the
    authors' ``AcceleDoG`` (open_lm_fork @ cc51851a, the commit that added it), whose default configuration this
    implements.

    Per parameter group, all its tensors treated as one vector: :math:`x_t` are the parameters (gradients are
    taken there), :math:`w_t` an auxiliary sequence started at :math:`w_0 = x_0`, :math:`g_t` the stochastic
    gradient at :math:`x_t` (plus :math:`\lambda x_t` for ``weight_decay`` :math:`\lambda`, negated when
    ``maximize``). With :math:`\bar r_0 = r_\epsilon (1 + \|x_0\|)`, :math:`\alpha_0 = \max(1, c_\alpha)`,

    .. math::
        G_t &= \epsilon + \textstyle\sum_{i \le t} \alpha_i^2 \|g_i\|^2, \qquad
        \eta_t = \frac{c\,\bar r_t}{\sqrt{G_t}}, \\
        y_{t+1} &= x_t - \eta_t g_t, \qquad w_{t+1} = w_t - \alpha_t \eta_t g_t, \\
        \bar r_{t+1} &= \max(\bar r_t, \|w_{t+1} - x_0\|), \qquad
        \alpha_{t+1} = \max\!\Big(1,\ c_\alpha \frac{\sum_{i \le t+1} \bar r_i}{\bar r_{t+1}}\Big), \\
        x_{t+1} &= \Big(1 - \frac{1}{\alpha_{t+1}}\Big) y_{t+1} + \frac{1}{\alpha_{t+1}} w_{t+1}.

    :math:`\bar r_t` is DoG's estimate of the distance to the optimum (the farthest the aggressive sequence
    :math:`w` has moved), so :math:`\eta_t` needs no learning rate. The weights :math:`\alpha_t` give the
    acceleration: once :math:`\bar r_t` stops growing, :math:`\alpha_t \approx c_\alpha t` and the scheme is an
    accelerated (AC-SA-like) method with momentum weight :math:`1 - 1/\alpha_t`; while :math:`\bar r_t` still
    grows geometrically (the start from a tiny :math:`r_\epsilon`), :math:`\sum_i \bar r_i / \bar r_t` stays
    bounded and so does :math:`\alpha_t`: the momentum is held back until the distance estimate has stabilised.
    With :math:`c_\alpha = 0`, :math:`\alpha_t \equiv 1` and :math:`x_t = w_t`: the method is DoG (Ivgi, Hinder,
    Carmon, 2023) exactly.

    Symbols: :math:`c` = ``lr`` (the authors advise leaving it at 1), :math:`r_\epsilon` = ``reps_rel``,
    :math:`c_\alpha` = ``alpha_const``, :math:`\epsilon` = ``eps``. The parameters hold :math:`x_t`, the point
    where the next gradient is taken (as in the authors' code, which returns no averaged iterate).

    Deviations from the authors' code: only its default configuration (``granularity="all"``, ``opt_ver``,
    ``alpha_ver``, ``step_size_ver`` = 1, ``momentum=None``, coupled weight decay towards 0) is implemented; the
    per-tensor granularities, decoupled/"to init"/"to norm" decays, weight normalisation and ``init_eta`` are not.
    The group-level scalars are kept in float64 (theirs in the parameters' dtype). A tensor that first receives a
    gradient after the first step starts its :math:`x_0` and :math:`w` then, and tensors that never received one
    are left out of the norms (the authors' code includes every tensor of the group from the first step). Later
    versions of the file change the default path slightly: @ 2ae67dc8 and 820fcc38 leave every tensor of a group
    but the first at :math:`\alpha = 0` in the first :math:`w` step (a per-tensor indexing slip; about 3e-8 on
    the test problem), and the latest, @ e9075e82, moves :math:`\epsilon` out of the root
    (:math:`c\bar r_t/(\sqrt{\sum_{i \le t} \alpha_i^2\|g_i\|^2} + \epsilon)`) and fails at construction with its
    default ``granularity="all"``. ``foreach`` is accepted for interface compatibility and has no effect.

    Args:
        params: parameters or parameter-group dicts.
        lr: :math:`c \ge 0`, a multiplier of the step size (default 1, not meant to be tuned).
        reps_rel: :math:`r_\epsilon > 0`, the initial distance estimate relative to :math:`1 + \|x_0\|`.
        alpha_const: :math:`c_\alpha \ge 0`, the growth rate of the weights (0 gives DoG).
        eps: :math:`\epsilon > 0`, added to the accumulated squared gradient norms (keeps the first step finite
            when the first gradient is zero).
        weight_decay: :math:`\lambda \ge 0` (L2, added to the gradient).
        foreach: accepted, no effect.
        maximize: ascend the objective instead.
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`). An accumulated :math:`G_t` that is not finite (an
            overflow, or a NaN or inf gradient under ``"ignore"``) raises ``FloatingPointError`` before the group
            is changed: it would make every later step NaN.

    State: per parameter ``step`` (CPU scalar tensor), ``x0`` and ``w`` (parameter's shape and dtype); per group,
    in the group dict (so they travel with ``state_dict``), the Python floats ``rbar`` (:math:`\bar r_t`),
    ``rbar_sum`` (:math:`\sum_i \bar r_i`), ``alpha`` (:math:`\alpha_t`) and ``sum_sq`` (:math:`G_t`, with its
    :math:`\epsilon`), ``None``
    before the group's first step.

    Example:
        >>> import torch
        >>> from paperzoo.optim import ADoG
        >>> A = torch.diag(torch.tensor([1.0, 10.0], dtype=torch.float64))
        >>> x = torch.nn.Parameter(torch.tensor([1.0, 1.0], dtype=torch.float64))
        >>> opt = ADoG([x])  # no learning rate to choose
        >>> for _ in range(500):
        ...     opt.zero_grad()
        ...     (0.5 * x @ A @ x).backward()
        ...     opt.step()
        >>> bool(x.detach().abs().max() < 1e-4)
        True
    """

    @accepts(**COMMON_HYPERPARAMETERS, reps_rel=Real(gt=0), alpha_const=Real(ge=0), eps=Real(gt=0))
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        reps_rel: float = 1e-6,
        alpha_const: float = 0.5,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        nonfinite: str = "raise",
    ):
        defaults = dict(lr=lr, reps_rel=reps_rel, alpha_const=alpha_const, eps=eps, weight_decay=weight_decay,
                        foreach=foreach, maximize=maximize, nonfinite=nonfinite)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_nonnegative("lr", group["lr"])
        group["reps_rel"] = check_positive("reps_rel", group["reps_rel"])
        group["alpha_const"] = check_nonnegative("alpha_const", group["alpha_const"])
        group["eps"] = check_positive("eps", group["eps"])
        group["weight_decay"] = check_nonnegative("weight_decay", group["weight_decay"])
        for key in _GROUP_STATE:
            value = group.setdefault(key, None)
            if value is not None:
                group[key] = check_number(key, value, low=0.0)

    def _next_rbar(self, rbar: float, distance: float) -> float:
        r"""The distance estimate after a step, :math:`\max(\bar r_t, \|w_{t+1} - x_0\|)` (a hook for variants)."""
        return max(rbar, distance)

    @staticmethod
    def _distance(tensors: list[torch.Tensor], origins: list[torch.Tensor]) -> float:
        return float(torch.stack([(t - o).norm() for t, o in zip(tensors, origins)]).norm())

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
            params, grads = [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                check_dense_grad("ADoG", p.grad)
                if torch.is_complex(p):
                    raise RuntimeError("ADoG does not support complex parameters")
                g = -p.grad if group["maximize"] else p.grad
                if group["weight_decay"] != 0:
                    g = g.add(p, alpha=group["weight_decay"])
                params.append(p)
                grads.append(g)
            if not params:
                continue
            # Everything up to the finiteness check of G_t is computed without touching the state, so that a
            # refused step leaves the group as it was. A tensor without state starts at x0 = w = its value now.
            fresh = {p for p in params if not self.state.get(p)}
            tracked = [p for p in group["params"] if self.state.get(p) or p in fresh]
            origins = [p.detach() if p in fresh else self.state[p]["x0"] for p in tracked]
            c_alpha = group["alpha_const"]
            scalars = {key: group[key] for key in _GROUP_STATE}
            if scalars["rbar"] is None:
                x0_norm = float(torch.stack([x0.norm() for x0 in origins]).norm())
                scalars["rbar"] = group["reps_rel"] * (1 + x0_norm)
                scalars["rbar_sum"] = scalars["rbar"]
                scalars["alpha"] = max(1.0, c_alpha * scalars["rbar_sum"] / scalars["rbar"])
                scalars["sum_sq"] = group["eps"]
            alpha = scalars["alpha"]
            sq = float(torch.stack([((alpha * g) ** 2).sum() for g in grads]).sum())
            scalars["sum_sq"] = scalars["sum_sq"] + sq
            if not math.isfinite(scalars["sum_sq"]):
                raise FloatingPointError(f"ADoG: the accumulated squared gradient norm is {scalars['sum_sq']}; a "
                                         "gradient contains NaN or inf")
            for p in params:
                state = self.state[p]
                if p in fresh:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["x0"] = p.detach().clone(memory_format=torch.preserve_format)
                    state["w"] = p.detach().clone(memory_format=torch.preserve_format)
                state["step"] += 1
            origins = [self.state[p]["x0"] for p in tracked]
            group.update(scalars)
            eta = group["lr"] * group["rbar"] / math.sqrt(group["sum_sq"])
            for p, g in zip(params, grads):
                step = g * eta
                self.state[p]["w"].add_(step * alpha, alpha=-1)
                p.add_(step, alpha=-1)
            distance = self._distance([self.state[p]["w"] for p in tracked], origins)
            group["rbar"] = self._next_rbar(group["rbar"], distance)
            group["rbar_sum"] = group["rbar_sum"] + group["rbar"]
            group["alpha"] = max(1.0, c_alpha * group["rbar_sum"] / group["rbar"])
            tau = 1.0 / group["alpha"]
            for p in params:
                p.mul_(1 - tau).add_(self.state[p]["w"] * tau)
        return loss
