"""Median-tracking SGD: clipped momentum as an online estimator of the median gradient, and SPP medians.

References: SGD with Clipping is Secretly Estimating the Median Gradient (Schaipp, Garrigos, Simsekli, Gower), 2024.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any, NamedTuple

import torch

from paperzoo.core.accepts import Choice, Flag, Generator, Int, Real, Tensor, Tensors, accepts
from paperzoo.core.checks import check_choice, check_int, check_nonnegative, check_positive, check_tensor
from paperzoo.optim._common import COMMON_HYPERPARAMETERS, CheckedOptimizer, _default_foreach, check_dense_grad

__all__ = ["MedianTrackingSGD", "MedianResult", "median_tracking_update", "geometric_median_spp", "weiszfeld_geometric_median",
           "MEDIAN_MODES"]

MEDIAN_MODES = ("geometric", "coordinate")


class MedianTrackingSGD(CheckedOptimizer):
    r"""Median-tracking SGD: step along a running *median* of the gradients instead of their mean (momentum).

    References: SGD with Clipping is Secretly Estimating the Median Gradient (Schaipp, Garrigos, Simsekli,
    Gower), 2024.

    One stochastic proximal point (SPP) step on :math:`\min_m \mathbb E\,\|m - g\|` (the median of the gradient
    distribution) with step :math:`\tau`, taken at every iteration with the newest gradient :math:`g_k`, is a
    clipped move of the estimate towards it; the parameters then move along the estimate:

    .. math::
        m_{k+1} &= m_k + \mathrm{clip}_\tau(g_k - m_k), \\
        x_{k+1} &= x_k - \gamma\, m_{k+1},

    with :math:`m_0 = 0`. ``mode="geometric"``: :math:`\mathrm{clip}_\tau(d) = \min(1, \tau/\|d\|_2)\, d`, the norm
    taken jointly over every parameter of the param group (the SPP step for the geometric median);
    ``mode="coordinate"``: :math:`\mathrm{clip}_\tau(d)_i = \max(-\tau, \min(\tau, d_i))` (the SPP step for the
    coordinate-wise median). The same SPP step on :math:`\mathbb E\,\|m - g\|^2` would give heavy-ball momentum,
    the running *mean*; the clipped step moves the estimate by at most :math:`\tau`, so a single huge outlier
    gradient cannot throw it far. Resetting :math:`m_k = 0` before every step recovers clipped SGD,
    :math:`x_{k+1} = x_k - \gamma\,\mathrm{clip}_\tau(g_k)`: the paper's reading of clipping as median estimation.

    Symbols: :math:`\gamma` = ``lr``, :math:`\tau` = ``tau``, :math:`g_k` = the gradient (negated when
    ``maximize``) plus ``weight_decay`` :math:`\cdot x_k` (L2).

    Args:
        params: parameters or parameter-group dicts.
        lr: step size :math:`\gamma \ge 0`.
        tau: SPP step / clipping radius :math:`\tau > 0` of the median estimate.
        mode: ``"geometric"`` or ``"coordinate"``.
        weight_decay: L2 coefficient, ``>= 0``.
        foreach: multi-tensor implementation (same numbers); ``None`` picks it when every parameter is on CUDA.
        maximize: ascend instead of descend.
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`).

    State per parameter: ``step`` (CPU scalar tensor) and ``median`` (:math:`m`, shape of the parameter).

    Example:
        >>> import torch
        >>> from paperzoo.optim import MedianTrackingSGD
        >>> w = torch.nn.Parameter(torch.tensor([2.0, -3.0]))
        >>> opt = MedianTrackingSGD([w], lr=0.1, tau=1.0)
        >>> for _ in range(300):
        ...     opt.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     opt.step()
        >>> bool(w.abs().max() < 0.1)
        True
    """

    @accepts(**COMMON_HYPERPARAMETERS, tau=Real(gt=0), mode=Choice(*MEDIAN_MODES))
    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float = 1e-2,
                 tau: float = 1.0, mode: str = "geometric", weight_decay: float = 0.0, *,
                 foreach: bool | None = None, maximize: bool = False, nonfinite: str = "raise"):
        super().__init__(params, dict(lr=lr, tau=tau, mode=mode, weight_decay=weight_decay, foreach=foreach,
                                      maximize=maximize, nonfinite=nonfinite))

    def _check_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_nonnegative("lr", group["lr"])
        group["tau"] = check_positive("tau", group["tau"])
        group["weight_decay"] = check_nonnegative("weight_decay", group["weight_decay"])

    @torch.no_grad()
    def step(self, closure=None):
        """One step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._skip_for_nonfinite():
            return loss
        for group in self.param_groups:
            params, grads, medians = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                check_dense_grad("MedianTrackingSGD", p.grad)
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["median"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                param, grad, m = p, p.grad, state["median"]
                if torch.is_complex(p):
                    param, grad, m = torch.view_as_real(p), torch.view_as_real(grad), torch.view_as_real(m)
                params.append(param)
                grads.append(grad)
                medians.append(m)
                state["step"] += 1
            if params:
                foreach = _default_foreach(params) if group["foreach"] is None else group["foreach"]
                _median_tracking_update(params, grads, medians, lr=group["lr"], tau=group["tau"], mode=group["mode"],
                                       weight_decay=group["weight_decay"], maximize=group["maximize"],
                                       foreach=foreach)
        return loss


def _example_update(ctx):
    def lists(draw):
        return [draw(shape, generator=ctx.generator, dtype=ctx.dtype) for shape in ((3, 2), (4,))]
    return dict(params=lists(torch.randn), grads=lists(torch.randn), medians=lists(torch.randn), lr=1e-2, tau=0.5,
                mode="geometric", weight_decay=0.1, maximize=False, foreach=False)


def _median_tracking_update(params: list[torch.Tensor], grads: list[torch.Tensor], medians: list[torch.Tensor], *,
                            lr: float, tau: float, mode: str, weight_decay: float, maximize: bool,
                            foreach: bool) -> None:
    # The unvalidated kernel of median_tracking_update, for the optimizer's per-step loop.
    if foreach:
        if maximize:
            grads = torch._foreach_neg(grads)
        if weight_decay != 0:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
        diffs = torch._foreach_sub(grads, medians)
    else:
        diffs = []
        for x, g, m in zip(params, grads, medians):
            if maximize:
                g = -g
            if weight_decay != 0:
                g = g.add(x, alpha=weight_decay)
            diffs.append(g - m)
    if mode == "geometric":
        # One norm for the whole group, computed identically on both paths so they agree bit for bit.
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(d) for d in diffs]))
        scale = torch.clamp(tau / norm.clamp_min(torch.finfo(norm.dtype).tiny), max=1.0)
        if foreach:
            torch._foreach_mul_(diffs, scale)
        else:
            for d in diffs:
                d.mul_(scale)
    elif foreach:
        torch._foreach_clamp_min_(diffs, -tau)
        torch._foreach_clamp_max_(diffs, tau)
    else:
        for d in diffs:
            d.clamp_(-tau, tau)
    if foreach:
        torch._foreach_add_(medians, diffs)
        torch._foreach_add_(params, medians, alpha=-lr)
    else:
        for x, m, d in zip(params, medians, diffs):
            m.add_(d)
            x.add_(m, alpha=-lr)


@accepts(params=Tensors(), grads=Tensors(like="params"), medians=Tensors(like="params"), lr=Real(ge=0),
         tau=Real(gt=0), mode=Choice(*MEDIAN_MODES), weight_decay=Real(ge=0), maximize=Flag(), foreach=Flag(),
         example=_example_update, mutates=("params", "medians"))
def median_tracking_update(params: list[torch.Tensor], grads: list[torch.Tensor], medians: list[torch.Tensor], *,
                           lr: float, tau: float, mode: str, weight_decay: float, maximize: bool,
                           foreach: bool) -> None:
    """One :class:`MedianTrackingSGD` step, in place, for one param group (the geometric norm spans the list)."""
    _median_tracking_update(params, grads, medians, lr=lr, tau=tau, mode=mode, weight_decay=weight_decay,
                            maximize=maximize, foreach=foreach)


class MedianResult(NamedTuple):
    """Result of :func:`geometric_median_spp` and :func:`weiszfeld_geometric_median`.

    Attributes:
        median: the estimate, shape ``(d,)``.
        n_iter: passes over the samples (SPP) or iterations (Weiszfeld).
        converged: whether the change per pass/iteration fell below ``tol``.
        history: objective :math:`\\frac1n\\sum_i \\|m - s_i\\|` (geometric) or its coordinate-wise analogue,
            after every pass/iteration.
    """

    median: torch.Tensor
    n_iter: int
    converged: bool
    history: list[float]


def _median_objective(samples: torch.Tensor, m: torch.Tensor, mode: str) -> float:
    diff = samples - m
    if mode == "geometric":
        return float(torch.linalg.vector_norm(diff, dim=1).mean())
    return float(diff.abs().sum(1).mean())


@accepts(samples=Tensor("n", "d", degenerate=("coincident",)), step_size=Real(gt=0), mode=Choice(*MEDIAN_MODES),
         max_iter=Int(ge=1), tol=Real(ge=0), generator=Generator(), init=Tensor("d", optional=True),
         example=lambda ctx: {"max_iter": 5})
def geometric_median_spp(samples: torch.Tensor, *, step_size: float = 1.0, mode: str = "geometric",
                         max_iter: int = 100, tol: float = 1e-3, generator: torch.Generator | None = None,
                         init: torch.Tensor | None = None) -> MedianResult:
    r"""Median of samples by the stochastic proximal point method (one sample per proximal step).

    References: SGD with Clipping is Secretly Estimating the Median Gradient (Schaipp, Garrigos, Simsekli,
    Gower), 2024.

    Minimises :math:`F(m) = \frac1n \sum_i \|m - s_i\|_2` (``mode="geometric"``, the geometric median) or
    :math:`\frac1n\sum_i \|m - s_i\|_1` (``mode="coordinate"``, the coordinate-wise median). The proximal operator
    of one term is a clipped move towards the sample,

    .. math::
        m_{k+1} = \operatorname{prox}_{\mu_k \|\cdot - s_{i_k}\|}(m_k) = m_k + \mathrm{clip}_{\mu_k}(s_{i_k} - m_k),

    with norm clipping (geometric) or coordinate clipping (coordinate-wise). The samples are visited in a fresh
    random order every pass, with steps :math:`\mu_k = \mu_0/\sqrt{k+1}` (:math:`\mu_0` = ``step_size``) and the
    returned estimate is the average of the iterates over the latest half of the passes (the SPP iterates
    themselves only reach an :math:`O(\mu_k)` neighbourhood).

    Args:
        samples: shape ``(n, d)``.
        step_size: :math:`\mu_0 > 0`, in the units of the samples.
        mode: ``"geometric"`` or ``"coordinate"``.
        max_iter: passes over the samples.
        tol: stop when a pass moves the averaged estimate by less than ``tol`` times the samples' scale
            (root mean square distance to their mean).
        generator: for the visiting order.
        init: starting point, shape ``(d,)`` (default: the coordinate-wise median).

    Returns:
        :class:`MedianResult`. Warns (``RuntimeWarning``) when ``max_iter`` passes end before ``tol`` is met:
        raise ``max_iter`` or ``step_size``.

    Example:
        >>> import torch
        >>> s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0]], dtype=torch.float64)
        >>> res = geometric_median_spp(s, max_iter=200, generator=torch.Generator().manual_seed(0))
        >>> ref = weiszfeld_geometric_median(s)
        >>> bool((res.median - ref.median).norm() < 0.05)
        True
    """
    samples = check_tensor("samples", samples, ndim=2)
    n, d = samples.shape
    if n == 0:
        raise ValueError("samples must contain at least one row, got shape (0, d)")
    step_size = check_positive("step_size", step_size)
    check_choice("mode", mode, MEDIAN_MODES)
    max_iter = check_int("max_iter", max_iter, low=1)
    tol = check_nonnegative("tol", tol)
    if init is None:
        m = samples.median(dim=0).values.clone()
    else:
        m = check_tensor("init", init, ndim=1).to(samples.dtype).clone()
        if m.shape[0] != d:
            raise ValueError(f"init must have shape ({d},) (samples has {d} columns), got {tuple(m.shape)}")
    scale = float(torch.linalg.vector_norm(samples - samples.mean(0), dim=1).pow(2).mean().sqrt()) or 1.0
    history, k, avg, converged, pass_sums = [], 0, None, False, []
    tiny = torch.finfo(samples.dtype).tiny
    passes = 0
    for passes in range(1, max_iter + 1):
        order = torch.randperm(n, generator=generator)
        total = torch.zeros_like(m)
        for i in order.tolist():
            mu = step_size / (k + 1) ** 0.5
            diff = samples[i] - m
            if mode == "geometric":
                m = m + diff * min(1.0, mu / max(float(torch.linalg.vector_norm(diff)), tiny))
            else:
                m = m + diff.clamp(-mu, mu)
            total += m
            k += 1
        pass_sums.append(total)
        # Tail (Polyak-Ruppert) average over the latest half of the passes: the constant-noise SPP iterates only
        # reach an O(mu_k) neighbourhood; their average converges.
        tail = pass_sums[len(pass_sums) // 2:]
        new_avg = torch.stack(tail).sum(0) / (n * len(tail))
        if not bool(torch.isfinite(new_avg).all()):
            raise FloatingPointError(f"geometric_median_spp produced a non-finite estimate at pass {passes}")
        history.append(_median_objective(samples, new_avg, mode))
        if avg is not None and float(torch.linalg.vector_norm(new_avg - avg)) <= tol * scale:
            avg, converged = new_avg, True
            break
        avg = new_avg
    if not converged:
        warnings.warn(f"geometric_median_spp did not reach tol={tol} in max_iter={max_iter} passes; raise max_iter "
                      "or step_size", RuntimeWarning, stacklevel=2)
    return MedianResult(avg, passes, converged, history)


@accepts(samples=Tensor("n", "d", degenerate=("coincident",)), max_iter=Int(ge=1), tol=Real(ge=0), eps=Real(gt=0),
         example=lambda ctx: {"max_iter": 50})
def weiszfeld_geometric_median(samples: torch.Tensor, *, max_iter: int = 1000, tol: float = 1e-10,
                               eps: float = 1e-12) -> MedianResult:
    r"""Geometric median by Weiszfeld's fixed-point iteration (the deterministic reference).

    References: Sur le point pour lequel la somme des distances de n points donnés est minimum (Weiszfeld), 1937.

    :math:`m \leftarrow \sum_i w_i s_i / \sum_i w_i` with :math:`w_i = 1/\max(\|m - s_i\|, \epsilon)`, the
    floor :math:`\epsilon` = ``eps`` keeping an iterate that lands on a sample finite (the smoothed variant).

    Args:
        samples: shape ``(n, d)``.
        max_iter: iterations.
        tol: stop when an iteration moves the estimate by less than ``tol`` times the samples' scale.
        eps: distance floor, ``> 0``.
    """
    samples = check_tensor("samples", samples, ndim=2)
    max_iter = check_int("max_iter", max_iter, low=1)
    tol = check_nonnegative("tol", tol)
    eps = check_positive("eps", eps)
    m = samples.mean(0)
    scale = float(torch.linalg.vector_norm(samples - m, dim=1).pow(2).mean().sqrt()) or 1.0
    history, converged, it = [], False, 0
    for it in range(1, max_iter + 1):
        w = 1.0 / torch.linalg.vector_norm(samples - m, dim=1).clamp_min(eps)
        new = (w[:, None] * samples).sum(0) / w.sum()
        history.append(_median_objective(samples, new, "geometric"))
        done = float(torch.linalg.vector_norm(new - m)) <= tol * scale
        m = new
        if done:
            converged = True
            break
    if not converged:
        warnings.warn(f"weiszfeld_geometric_median did not reach tol={tol} in max_iter={max_iter} iterations; "
                      "raise max_iter", RuntimeWarning, stacklevel=2)
    return MedianResult(m, it, converged, history)
