r"""STEP: N:M structured-sparsity masks learned from scratch with Adam, after a variance-precondition phase.

References: STEP: Learning N:M Structured Sparsity Masks from Scratch with Precondition (Lu, Agrawal, Subramanian,
Rybakov, De Sa, Yazdanbakhsh), 2023.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from paperzoo.core.checks import check_int, check_nonnegative, check_number, check_tensor
from paperzoo.core.accepts import Flag, Int, Real, Tensor, accepts
from paperzoo.optim._common import (ADAM_HYPERPARAMETERS, CheckedOptimizer, check_adam_group, check_dense_grad,
                                     check_flag)

__all__ = ["nm_mask", "STEPAdam", "srste_adam"]


def _nm_mask(w: torch.Tensor, N: int, M: int) -> torch.Tensor:
    """Unchecked :func:`nm_mask` (the optimizer's step)."""
    groups = w.detach().abs().reshape(-1, M)
    # A stable sort keeps the choice deterministic when magnitudes tie (e.g. all-zero groups).
    order = torch.sort(groups, dim=1, descending=True, stable=True).indices[:, :N]
    mask = torch.zeros_like(groups).scatter_(1, order, 1.0)
    return mask.reshape(w.shape).to(w.dtype)


@accepts(w=Tensor(..., "k", finite=False, degenerate=("zeros", "constant")), N=Int(ge=0), M=Int(ge=1),
         example=lambda ctx: {"w": torch.randn(3, 8, generator=ctx.generator, dtype=ctx.dtype), "N": 2, "M": 4})
def nm_mask(w: torch.Tensor, N: int, M: int) -> torch.Tensor:
    r"""N:M mask of ``w``: in every group of ``M`` consecutive entries along the last axis, keep the ``N`` of
    largest magnitude (ties broken by position, lower index first).

    ``w`` has any shape ``(..., k)`` with ``k`` divisible by ``M``; returns a mask of ``w``'s shape and dtype
    with exactly ``N`` ones per group.

    Example:
        >>> import torch
        >>> nm_mask(torch.tensor([[0.1, -3.0, 2.0, 0.5]]), 2, 4)
        tensor([[0., 1., 1., 0.]])
    """
    if N > M:
        raise ValueError(f"N must be <= M={M}, got {N}")
    if w.shape[-1] % M != 0:
        raise ValueError(f"w's last dimension must be divisible by M={M}, got shape {tuple(w.shape)}")
    return _nm_mask(w, N, M)


class STEPAdam(CheckedOptimizer):
    r"""STEP: Adam whose second moment is frozen before N:M masks are learned with SR-STE.

    References: STEP: Learning N:M Structured Sparsity Masks from Scratch with Precondition (Lu et al.), 2023.

    The optimizer owns a dense copy :math:`w` of every parameter in a group with ``sparse=True`` (matrices and
    higher, last axis divisible by ``M``); the parameter tensor itself holds what the forward pass uses.

    *Precondition phase* (steps :math:`t \le T_0`): dense Adam, parameters = :math:`w`,

    .. math::
        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \quad
        w_t = w_{t-1} - \alpha\, \hat m_t / (\sqrt{\hat v_t} + \epsilon).

    *Mask-learning phase* (:math:`t > T_0`): :math:`\hat v` is frozen at :math:`\hat v_{T_0}` and the masks are
    learned with SR-STE: the forward pass sees :math:`\tilde w = \mathcal M(w) \odot w` with
    :math:`\mathcal M` = :func:`nm_mask`, the gradient :math:`g_t` taken at :math:`\tilde w` is passed straight
    through to :math:`w` together with the sparse-refined decay of the pruned weights,

    .. math::
        \tilde g_t = g_t + \lambda_W (1 - \mathcal M(w_{t-1})) \odot w_{t-1}, \quad
        m_t = \beta_1 m_{t-1} + (1 - \beta_1)\tilde g_t, \quad
        w_t = w_{t-1} - \alpha\, \hat m_t / (\sqrt{\hat v_{T_0}} + \epsilon),

    and the parameter is set to :math:`\mathcal M(w_t)\odot w_t`. Groups with ``sparse=False`` (biases) run plain
    Adam throughout (their variance is frozen too, as STEP freezes the whole optimizer state's :math:`v`).

    *AutoSwitch* (``autoswitch=True``) picks :math:`T_0`: at each step it samples the relative change of the
    bias-corrected variance, :math:`z_t = \|\hat v_t - \hat v_{t-1}\|_1 / \|\hat v_{t-1}\|_1` over all
    parameters, and switches at the first :math:`t \ge` ``min_switch_step`` at which the mean of the last
    ``switch_window`` samples is at most ``switch_tol`` (the samples have concentrated: :math:`\hat v` has
    stopped moving), and at ``max_switch_step`` at the latest. With ``autoswitch=False`` the switch happens after
    ``max_switch_step`` steps. **Deviation:** the paper's concentration test is a statistical bound on these
    samples; this is a simpler thresholded window mean with the same inputs, and the thresholds are ours.

    Symbols: :math:`\alpha` = ``lr``, :math:`(\beta_1, \beta_2)` = ``betas``, :math:`\epsilon` = ``eps``,
    :math:`\lambda_W` = ``srste_decay`` (SR-STE's default 2e-4), ``N``/``M`` the sparsity pattern.
    ``weight_decay`` is decoupled (AdamW-style) on :math:`w`. :func:`srste_adam` builds the paper's baseline,
    SR-STE with an always-updated Adam variance from step one.

    Args:
        params: parameters or groups; a group's ``sparse`` (default: ``True`` for tensors with >= 2 dims whose last
            dimension is divisible by ``M``) selects masking.
        lr, betas, eps, weight_decay: as in AdamW.
        N, M: keep ``N`` of every ``M`` (``0 <= N <= M``).
        srste_decay: :math:`\lambda_W \ge 0`.
        autoswitch: pick :math:`T_0` from the variance samples.
        min_switch_step, max_switch_step: bounds on :math:`T_0` (``max_switch_step=0`` masks from the start;
            ``max_switch_step`` wins when it is the smaller).
        switch_window: number of samples in the window (``>= 1``).
        switch_tol: threshold on the window mean of :math:`z_t`.
        freeze_variance: ``False`` keeps updating :math:`v` in the mask phase (the SR-STE + Adam baseline).
        maximize: ascend instead of descend. ``foreach`` is accepted and has no effect.
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`); a skipped step does not count towards AutoSwitch.

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` (parameter's shape), ``dense`` (:math:`w`, for
    masked parameters); the optimizer's ``state_dict`` also carries ``switched_at`` and the AutoSwitch window.

    Example:
        >>> import torch
        >>> from paperzoo.optim import STEPAdam
        >>> w = torch.nn.Parameter(torch.randn(4, 8))
        >>> opt = STEPAdam([w], lr=0.01, autoswitch=False, max_switch_step=5)
        >>> for _ in range(10):
        ...     opt.zero_grad()
        ...     ((w - 1) ** 2).sum().backward()
        ...     opt.step()
        >>> opt.switched_at, int((w != 0).sum())
        (5, 16)
    """

    @accepts(**ADAM_HYPERPARAMETERS, N=Int(ge=0), M=Int(ge=1), srste_decay=Real(ge=0), autoswitch=Flag(),
             min_switch_step=Int(ge=0), max_switch_step=Int(ge=0), switch_window=Int(ge=1), switch_tol=Real(ge=0),
             freeze_variance=Flag())
    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 N: int = 2, M: int = 4, srste_decay: float = 2e-4, autoswitch: bool = True,
                 min_switch_step: int = 100, max_switch_step: int = 10_000, switch_window: int = 20,
                 switch_tol: float = 5e-3, freeze_variance: bool = True, *, foreach: bool | None = None,
                 maximize: bool = False, nonfinite: str = "raise"):
        self.M = check_int("M", M, low=1)
        self.N = check_int("N", N, low=0)
        if self.N > self.M:
            raise ValueError(f"N must be <= {self.M}, got {self.N} (N of every M = {self.M} entries are kept)")
        self.autoswitch = check_flag("autoswitch", autoswitch)
        self.freeze_variance = check_flag("freeze_variance", freeze_variance)
        self.max_switch_step = check_int("max_switch_step", max_switch_step, low=0)
        self.min_switch_step = check_int("min_switch_step", min_switch_step, low=0)
        self.switch_window = check_int("switch_window", switch_window, low=1)
        self.switch_tol = check_number("switch_tol", switch_tol, low=0.0)
        if self.freeze_variance and self.max_switch_step == 0:
            raise ValueError("max_switch_step must be >= 1 when freeze_variance=True (a variance must be "
                             "estimated before it is frozen), got 0")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, srste_decay=srste_decay,
                        sparse=None, foreach=foreach, maximize=maximize, nonfinite=nonfinite)
        self.switched_at: int | None = 0 if self.max_switch_step == 0 else None
        self._window: list[float] = []
        self._t = 0
        super().__init__(params, defaults)
        if self.switched_at == 0:
            self._apply_masks()

    def _check_group(self, group: dict[str, Any]) -> None:
        check_adam_group(group)
        group["srste_decay"] = check_nonnegative("srste_decay", group["srste_decay"])
        if group["sparse"] is None:
            group["sparse"] = [p.dim() >= 2 and p.shape[-1] % self.M == 0 for p in group["params"]]
        elif isinstance(group["sparse"], bool):
            if group["sparse"]:
                for p in group["params"]:
                    if p.dim() < 2 or p.shape[-1] % self.M != 0:
                        raise ValueError(f"sparse parameters must have >= 2 dims and a last dimension divisible by "
                                         f"M={self.M}, got shape {tuple(p.shape)}")
            group["sparse"] = [group["sparse"]] * len(group["params"])

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out["autoswitch"] = dict(switched_at=self.switched_at, window=list(self._window), t=self._t)
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("autoswitch", None)
        super().load_state_dict(state_dict)
        if extra is not None:
            self.switched_at, self._window, self._t = extra["switched_at"], list(extra["window"]), extra["t"]

    @property
    def masking(self) -> bool:
        """Whether the mask-learning phase has started."""
        return self.switched_at is not None

    @torch.no_grad()
    def _apply_masks(self) -> None:
        for group in self.param_groups:
            for p, sparse in zip(group["params"], group["sparse"]):
                if sparse:
                    state = self.state[p]
                    if "dense" not in state:
                        state["dense"] = p.detach().clone()
                    p.copy_(_nm_mask(state["dense"], self.N, self.M) * state["dense"])

    @torch.no_grad()
    def step(self, closure=None):
        """One step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._skip_for_nonfinite():
            return loss
        self._t += 1
        masking = self.masking
        change, base = 0.0, 0.0
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p, sparse in zip(group["params"], group["sparse"]):
                if p.grad is None:
                    continue
                check_dense_grad("STEPAdam", p.grad)
                g = -p.grad if group["maximize"] else p.grad
                state = self.state[p]
                if "step" not in state:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = int(state["step"].item())
                w = state["dense"] if (sparse and "dense" in state) else p
                if masking and sparse:
                    g = g + group["srste_decay"] * (1 - _nm_mask(w, self.N, self.M)) * w
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(g, 1 - beta1)
                if masking and self.freeze_variance:
                    # v was replaced by its bias-corrected value at the switch: no further correction.
                    v_hat = v
                else:
                    previous = v / (1 - beta2 ** (t - 1)) if t > 1 else None
                    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    v_hat = v / (1 - beta2**t)
                    if previous is not None:
                        change += float((v_hat - previous).abs().sum())
                        base += float(previous.abs().sum())
                if group["weight_decay"] != 0:
                    w.mul_(1 - group["lr"] * group["weight_decay"])
                w.addcdiv_(m / (1 - beta1**t), v_hat.sqrt().add_(group["eps"]), value=-group["lr"])
                if masking and sparse:
                    p.copy_(_nm_mask(w, self.N, self.M) * w)
        if not masking:
            if base > 0:
                self._window = (self._window + [change / base])[-self.switch_window:]
            ready = (self.autoswitch and self._t >= self.min_switch_step
                     and len(self._window) == self.switch_window
                     and sum(self._window) / len(self._window) <= self.switch_tol)
            if ready or self._t >= self.max_switch_step:
                self._switch()
        return loss

    @torch.no_grad()
    def _switch(self) -> None:
        self.switched_at = self._t
        for group in self.param_groups:
            beta2 = group["betas"][1]
            for p in group["params"]:
                state = self.state[p]
                if self.freeze_variance and "exp_avg_sq" in state:
                    state["exp_avg_sq"].div_(1 - beta2 ** int(state["step"].item()))
        self._apply_masks()


def _example_srste(ctx) -> dict:
    return {"params": [torch.randn(2, 4, generator=ctx.generator, dtype=ctx.dtype, requires_grad=True)]}


@accepts(**ADAM_HYPERPARAMETERS, N=Int(ge=0), M=Int(ge=1), srste_decay=Real(ge=0), example=_example_srste,
         output="any")  # returns an optimizer
def srste_adam(params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
               weight_decay: float = 0.0, N: int = 2, M: int = 4, srste_decay: float = 2e-4, *,
               foreach: bool | None = None, maximize: bool = False, nonfinite: str = "raise") -> STEPAdam:
    """The baseline STEP improves on: SR-STE with Adam, masks from the first step and the variance always updated
    (:class:`STEPAdam` with ``max_switch_step=0, freeze_variance=False``)."""
    return STEPAdam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, N=N, M=M,
                    srste_decay=srste_decay, autoswitch=False, min_switch_step=0, max_switch_step=0,
                    freeze_variance=False, foreach=foreach, maximize=maximize, nonfinite=nonfinite)
