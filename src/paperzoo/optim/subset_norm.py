r"""Subset-Norm adaptive step sizes and Subspace-Momentum (AdamW-SN, AdaGrad-SN, SNSM).

References: Subset-Norm and Subspace-Momentum: Faster Memory-Efficient Adaptive Optimization with Convergence
Guarantees (Nguyen, Nguyen), 2024 (ICML 2025 as "Lean and Mean Adaptive Optimization via Subset-Norm and
Subspace-Momentum with Convergence Guarantees"). Official code: github.com/timmytonga/sn-sm.

The update rules follow the official code at commit a4c1a4a5 (``GenericOptim.py``, ``subset_norm.py``,
``subspace_momentum.py``, ``projectors/svd_projector.py``) with ``subset_size="heuristics"`` and
``proj_type="svd"``; the paper's text beyond its abstract could not be read here. The tests compare step-level
trajectories with numbers produced by that code (``tests/optim/fixtures/snsm_official.json``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from paperzoo.core.checks import check_int, check_nonnegative, check_number, check_positive, check_probability
from paperzoo.core.accepts import Flag, Instance, Int, Pair, Real, Tensor, accepts
from paperzoo.optim._common import COMMON_HYPERPARAMETERS, CheckedOptimizer, check_dense_grad

__all__ = ["AdamWSN", "SNSM", "subset_norm_sq", "optimizer_state_bytes"]


@accepts(opt=Instance(torch.optim.Optimizer, what="torch.optim.Optimizer"),
         example=lambda ctx: {"opt": torch.optim.Adam([torch.zeros(3, dtype=ctx.dtype, requires_grad=True)])})
def optimizer_state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes held by the tensors in ``opt.state`` (the optimizer-state memory the paper reports)."""
    total = 0
    for state in opt.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                total += value.nbytes
    return total


def _subset_norm_sq(grad: torch.Tensor) -> torch.Tensor:
    """Unchecked :func:`subset_norm_sq` (the optimizers' step)."""
    return grad.square().sum(dim=1 if grad.shape[0] >= grad.shape[1] else 0, keepdim=True)


@accepts(grad=Tensor("m", "n", degenerate=("zeros",)))
def subset_norm_sq(grad: torch.Tensor) -> torch.Tensor:
    r"""Squared subset norms :math:`\|g_{S_i}\|^2` of a gradient matrix ``(m, n)`` (the paper's heuristic partition).

    The subsets are the lines along the *smaller* dimension: the rows when ``m >= n`` (result ``(m, 1)``), the
    columns when ``m < n`` (result ``(1, n)``). So there are ``max(m, n)`` subsets of ``min(m, n)`` coordinates
    each, as in the official code's ``subset_size="heuristics"``.

    Example:
        >>> import torch
        >>> subset_norm_sq(torch.ones(3, 2)).flatten().tolist(), subset_norm_sq(torch.ones(2, 3)).shape
        ([2.0, 2.0, 2.0], torch.Size([1, 3]))
    """
    return _subset_norm_sq(grad)


# betas[1] = 1 is allowed (AdaGrad-SN); betas[0] < 1 is checked with the group.
_SN_HYPERPARAMETERS = dict(COMMON_HYPERPARAMETERS, betas=Pair(Real(ge=0, le=1), meaning="(beta1, beta2)"),
                           eps=Real(gt=0), correct_bias=Flag(optional=True))


class _SubsetNormBase(CheckedOptimizer):
    r"""The step shared by :class:`AdamWSN` and :class:`SNSM`, which differ in one hook: the numerator of a matrix.

    One step on a parameter with step count ``t`` (official ``GenericOptim.step``): numerator :math:`N_t`
    (:meth:`_matrix_numerator` for matrices, :meth:`_momentum` otherwise), denominator
    :math:`D_t = \sqrt{v_t} + \epsilon` (none when ``beta2 = 0``), step size
    :math:`\alpha_t = \alpha\sqrt{1-\beta_2^t}/(1-\beta_1^t)` (:math:`\alpha` without bias correction),
    :math:`\theta \leftarrow \theta - \alpha_t N_t / D_t`, then decoupled decay
    :math:`\theta \leftarrow \theta - \alpha\lambda\theta` on the updated parameter.
    """

    def _check_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_nonnegative("lr", group["lr"])
        group["betas"] = _check_betas(group["betas"])
        group["eps"] = check_positive("eps", group["eps"])
        group["weight_decay"] = check_nonnegative("weight_decay", group["weight_decay"])
        if group["correct_bias"] is True and group["betas"][1] == 1.0:
            # 1 - beta2^t = 0: the official code would take steps of size zero.
            raise ValueError("correct_bias must be False or None when betas[1] == 1.0 (AdaGrad accumulation), "
                             "got True")
        self._check_extra(group)

    def _check_extra(self, group: dict[str, Any]) -> None:
        pass

    def _matrix_numerator(self, group: dict[str, Any], state: dict[str, Any], g: torch.Tensor, t: int):
        """The numerator for a matrix parameter at step ``t`` (default: full EMA momentum)."""
        return self._momentum(group, state, g)

    @staticmethod
    def _momentum(group: dict[str, Any], state: dict[str, Any], g: torch.Tensor) -> torch.Tensor:
        r"""Full EMA momentum :math:`m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t` (``g_t`` itself when beta1 = 0)."""
        beta1 = group["betas"][0]
        if beta1 == 0:
            return g
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(g, memory_format=torch.preserve_format)
        return state["exp_avg"].mul_(beta1).add_(g, alpha=1 - beta1)

    @staticmethod
    def _denominator(group: dict[str, Any], state: dict[str, Any], g: torch.Tensor) -> torch.Tensor | None:
        beta2 = group["betas"][1]
        if beta2 == 0:
            return None  # no adaptive step size (the official code's SGD preset)
        update = _subset_norm_sq(g) if g.dim() == 2 else g.square()
        if "exp_avg_sq" not in state:
            state["exp_avg_sq"] = torch.zeros_like(update)
        v = state["exp_avg_sq"]
        if beta2 < 1:
            v.mul_(beta2).add_(update, alpha=1 - beta2)
        else:
            v.add_(update)  # beta2 = 1: AdaGrad's running sum
        return v.sqrt().add_(group["eps"])

    @torch.no_grad()
    def step(self, closure=None):
        """One step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._skip_for_nonfinite():
            return loss
        name = type(self).__name__
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            correct = group["correct_bias"] if group["correct_bias"] is not None else 0 < beta2 < 1
            for p in group["params"]:
                if p.grad is None:
                    continue
                check_dense_grad(name, p.grad)
                if torch.is_complex(p):
                    raise RuntimeError(f"{name} does not support complex parameters")
                g = -p.grad if group["maximize"] else p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["step"] += 1
                t = int(state["step"].item())
                num = self._matrix_numerator(group, state, g, t) if p.dim() == 2 else self._momentum(
                    group, state, g)
                denom = self._denominator(group, state, g)
                step_size = group["lr"]
                if correct:
                    step_size = step_size * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
                if denom is None:
                    p.add_(num, alpha=-step_size)
                else:
                    p.addcdiv_(num, denom, value=-step_size)
                if group["weight_decay"] > 0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return loss


def _check_betas(value) -> tuple[float, float]:
    """``beta1`` in ``[0, 1)``, ``beta2`` in ``[0, 1]`` (``beta2 = 1``: AdaGrad-style accumulation)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"betas must be a pair (beta1, beta2), got {type(value).__name__}")
    value = tuple(value)
    if len(value) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {len(value)} values")
    return check_probability("betas[0]", value[0]), check_number("betas[1]", value[1], low=0.0, high=1.0)


_SN_MATH = r"""
    For a matrix parameter ``(m, n)`` the coordinates are partitioned into subsets :math:`S_i`, the lines along
    the smaller dimension (rows when ``m >= n``, columns otherwise; :func:`subset_norm_sq`), and the coordinates
    of :math:`S_i` share one second-moment scalar. With :math:`N_t` the numerator (momentum),

    .. math::
        v_{t,i} &= \beta_2 v_{t-1,i} + (1 - \beta_2)\|g_{t,S_i}\|^2 \quad (\beta_2 < 1), \qquad
        v_{t,i} = v_{t-1,i} + \|g_{t,S_i}\|^2 \quad (\beta_2 = 1,\ \text{AdaGrad-SN}) \\
        \theta_{t,S_i} &\leftarrow \theta_{t-1,S_i} - \alpha_t \frac{N_{t,S_i}}{\sqrt{v_{t,i}} + \epsilon},
        \qquad \alpha_t = \alpha\,\frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}
        \ \text{(bias correction; } \alpha_t = \alpha \text{ without)} \\
        \theta_t &\leftarrow (1 - \alpha\lambda)\,\theta_t \quad \text{(decoupled decay, after the step)}

    so the second-moment state holds ``max(m, n)`` numbers instead of ``m n``. The bias correction multiplies the
    whole step and :math:`\epsilon` is added to the uncorrected :math:`\sqrt{v_t}` (Hugging Face AdamW style, as
    in the official code). Other tensors (biases, norms) use the same rule with coordinate-wise :math:`v`
    (AdamW). ``betas[1] = 1`` is AdaGrad-SN, the algorithm the paper analyses, and ``betas[1] = 0`` drops the
    adaptive denominator (SGD with momentum). ``correct_bias=None`` (default) corrects bias when
    ``0 < betas[1] < 1`` only, as the official ``adamw``, ``adagrad`` and ``sgd`` presets do (its ``rmsprop``
    preset, ``betas = (0, 0.999)``, turns correction off: pass ``correct_bias=False``); ``correct_bias=True``
    with ``betas[1] = 1`` is rejected (its step size would be 0). Because
    :math:`\|g_{S_i}\|^2` sums ``min(m, n)`` squares, the normalised step is ~``sqrt(min(m, n))`` times smaller
    than Adam's at equal ``lr``; the official code's README suggests a ~10x larger ``lr`` than Adam's.
"""


class AdamWSN(_SubsetNormBase):
    __doc__ = r"""AdamW with Subset-Norm step sizes (AdamW-SN; AdaGrad-SN with ``betas[1] = 1``).

    References: Subset-Norm and Subspace-Momentum: Faster Memory-Efficient Adaptive Optimization with Convergence
    Guarantees (Nguyen, Nguyen), 2024. Official code: github.com/timmytonga/sn-sm (``GenericOptim`` with
    ``momentum_type="ema"``, ``second_moment_type="sn"``, ``subset_size="heuristics"``).
    """ + _SN_MATH + r"""
    The numerator is Adam's EMA momentum :math:`N_t = m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t` (:math:`g_t`
    itself when :math:`\beta_1 = 0`, with no momentum state: RMSProp-SN / AdaGrad-SN).

    Symbols: :math:`\alpha` = ``lr``, :math:`\beta_1, \beta_2` = ``betas``, :math:`\epsilon` = ``eps``,
    :math:`\lambda` = ``weight_decay``; :math:`g_t` is negated when ``maximize``. ``foreach`` is accepted for
    interface compatibility and has no effect. ``nonfinite``: what a step does with a NaN or inf gradient:
    ``"raise"`` (default), ``"skip"`` or ``"ignore"`` (see :class:`~paperzoo.optim.CheckedOptimizer`).

    State per matrix parameter ``(m, n)``: ``step``, ``exp_avg`` ``(m, n)`` (unless ``beta1 = 0``),
    ``exp_avg_sq`` ``(m, 1)`` if ``m >= n`` else ``(1, n)``; per other tensor: ``step``, ``exp_avg``,
    ``exp_avg_sq`` (the parameter's shape).

    Example:
        >>> import torch
        >>> from paperzoo.optim import AdamWSN
        >>> w = torch.nn.Parameter(torch.ones(16, 4))
        >>> opt = AdamWSN([w], lr=0.1)
        >>> for _ in range(200):
        ...     opt.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     opt.step()
        >>> tuple(opt.state[w]["exp_avg_sq"].shape), bool(w.abs().max() < 0.05)
        ((16, 1), True)
        >>> adagrad_sn = AdamWSN([w], lr=0.5, betas=(0.0, 1.0))   # AdaGrad-SN: running sum, no bias correction
    """

    @accepts(**_SN_HYPERPARAMETERS)
    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0, *,
                 correct_bias: bool | None = None, foreach: bool | None = None, maximize: bool = False,
                 nonfinite: str = "raise"):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, correct_bias=correct_bias,
                        foreach=foreach, maximize=maximize, nonfinite=nonfinite)
        super().__init__(params, defaults)


class SNSM(_SubsetNormBase):
    __doc__ = r"""SNSM: Subset-Norm step sizes with Subspace-Momentum (momentum only in a rank-``r`` subspace).

    References: Subset-Norm and Subspace-Momentum: Faster Memory-Efficient Adaptive Optimization with Convergence
    Guarantees (Nguyen, Nguyen), 2024. Official code: github.com/timmytonga/sn-sm (``GenericOptim`` with
    ``momentum_type="sm"``, ``second_moment_type="sn"``, ``subset_size="heuristics"``, ``proj_type="svd"``).

    For a gradient matrix :math:`G_t \in \mathbb R^{m\times n}` the momentum lives in a rank-:math:`r` subspace
    of the smaller side: with :math:`m < n` a left projector :math:`P \in \mathbb R^{m\times r}` (top-:math:`r`
    left singular vectors of :math:`G_t`), :math:`\mathcal P(G) = P^\top G` ``(r, n)`` and
    :math:`\mathcal B(X) = P X`; with :math:`m \ge n` a right projector :math:`Q \in \mathbb R^{r\times n}`
    (top-:math:`r` right singular vectors), :math:`\mathcal P(G) = G Q^\top` ``(m, r)``,
    :math:`\mathcal B(X) = X Q`. The projector is computed at the first step and refreshed at every step
    :math:`t` with :math:`t \bmod k = 0` (:math:`k` = ``update_proj_gap``); then

    .. math::
        M_t &= \beta_1 M_{t-1} + (1 - \beta_1)\,\mathcal P(G_t) \\
        N_t &= \mathcal B(M_t) + \bigl(G_t - \mathcal B(\mathcal P(G_t))\bigr)

    i.e. momentum in the subspace and plain SGD in its orthogonal complement; :math:`N_t` then takes the
    subset-norm step of :class:`AdamWSN` below (the bias correction scales both parts). At a refresh step
    :math:`t > 1` the step still uses :math:`M_{t-1}` carried over (its coordinates were in the old basis), and
    :math:`M` is then zeroed, so step :math:`t + 1` starts from zero momentum: this is what the official code
    does (its reset replaces the state tensor after the old one was updated in place and used).
    """ + _SN_MATH + r"""
    The state per matrix is the projector (``m r`` or ``r n``), :math:`M` (``r n`` or ``m r``) and :math:`v`
    (``max(m, n)``), against AdamW's ``2 m n``; a matrix with ``min(m, n) <= rank`` keeps a square projector of
    size ``min(m, n)`` (as in the official code). With ``beta1 = 0`` there is no momentum and no projector: SNSM
    is then :class:`AdamWSN`. Non-matrix tensors use AdamW's coordinate-wise moments.

    Symbols (and ``nonfinite``) as in :class:`AdamWSN`; ``rank`` = :math:`r`, ``update_proj_gap`` = :math:`k`. The SVD runs in the
    parameter's dtype (float32 for half precisions).

    Example:
        >>> import torch
        >>> from paperzoo.optim import SNSM
        >>> w = torch.nn.Parameter(torch.ones(8, 16))
        >>> opt = SNSM([w], lr=0.1, rank=2)
        >>> for _ in range(200):
        ...     opt.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     opt.step()
        >>> tuple(opt.state[w]["exp_avg"].shape), tuple(opt.state[w]["projector"].shape)
        ((2, 16), (8, 2))
        >>> bool(w.abs().max() < 0.05)
        True
    """

    @accepts(**_SN_HYPERPARAMETERS, rank=Int(ge=1), update_proj_gap=Int(ge=1))
    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0,
                 rank: int = 32, update_proj_gap: int = 200, *, correct_bias: bool | None = None,
                 foreach: bool | None = None, maximize: bool = False, nonfinite: str = "raise"):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, rank=rank,
                        update_proj_gap=update_proj_gap, correct_bias=correct_bias, foreach=foreach,
                        maximize=maximize, nonfinite=nonfinite)
        super().__init__(params, defaults)

    def _check_extra(self, group):
        check_int("rank", group["rank"], low=1)
        check_int("update_proj_gap", group["update_proj_gap"], low=1)

    def _matrix_numerator(self, group, state, g, t):
        beta1, r, gap = group["betas"][0], group["rank"], group["update_proj_gap"]
        if beta1 == 0:
            return g
        right = g.shape[0] >= g.shape[1]
        if "projector" not in state or t % gap == 0:
            state["projector"] = _top_singular_vectors(g, r, right)
        P = state["projector"]
        low = g @ P.mT if right else P.mT @ g  # (m, r) or (r, n)

        def back(x):
            return x @ P if right else P @ x

        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(low)
        M = state["exp_avg"].mul_(beta1).add_(low, alpha=1 - beta1)
        num = back(M) + (g - back(low))
        if t > 1 and t % gap == 0:
            M.zero_()
        return num


def _top_singular_vectors(g: torch.Tensor, r: int, right: bool) -> torch.Tensor:
    """``Vh[:r]`` ``(r, n)`` if ``right`` else ``U[:, :r]`` ``(m, r)`` of the SVD of ``g``."""
    work = g if g.dtype in (torch.float32, torch.float64) else g.float()
    U, _, Vh = torch.linalg.svd(work, full_matrices=False)
    P = Vh[:r] if right else U[:, :r]
    # A compact copy (not a view that keeps all of U or Vh alive), column-major like LAPACK's output: the
    # products with it then round exactly as the official code's products with the SVD's own views do.
    return P.mT.clone(memory_format=torch.contiguous_format).mT.to(g.dtype)
