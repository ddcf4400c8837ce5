"""Entropic OT between point clouds: loss, plan and potentials from one call, with gradients for positions and
weights.

References: Sinkhorn Distances: Lightspeed Computation of Optimal Transport, 2013 (the entropic problem);
Interpolating between Optimal Transport and MMD using Sinkhorn Divergences, 2019 (the debiased divergence).

The cost matrix ``M_ij = ||x_i - y_j||^p`` is built with autograd, the OT problem is solved by
:func:`~paperzoo.transport.sinkhorn_log` without autograd, and the entropic value ``reg_cost`` is re-evaluated
on the dual potentials (envelope theorem), so ``reg_cost.backward()`` reaches ``x``, ``y``, ``a`` and ``b``
with exact gradients at convergence, in ``O(n m)`` memory whatever the number of iterations.

Entropy convention: ``reg_cost = min_P <P, M> - reg H(P)`` with ``H(P) = -sum P (log P - 1)`` (POT's). The
other common convention, ``<P, M> + reg KL(P | a b^T)`` (geomloss, ott-jax), differs by
``reg * (sum(a) - <a, log a> - <b, log b>)``, a term without ``x``, ``y`` dependence that cancels in the
Sinkhorn divergence.
"""

from __future__ import annotations

import math
import warnings

import torch

from paperzoo.core.accepts import Int, Real, Tensor, accepts
from paperzoo.core.checks import check_int, check_nonnegative, check_number, check_positive, check_tensor
from paperzoo.transport.result import ConvergenceWarning, OTResult
from paperzoo.transport.sinkhorn import _dual_value, _lse, _masked_log, _raise_nonfinite, sinkhorn_log

__all__ = ["pairwise_cost", "entropic_ot", "sinkhorn_divergence"]

_DIFFERENCE_FORM_LIMIT = 2**24  # n * m * d entries: below it, the exact difference form (no cancellation)


def _check_clouds(x, y) -> None:
    check_tensor("x", x, ndim=(2, 3))
    check_tensor("y", y, ndim=(2, 3))
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"y must have the feature dimension of x ({x.shape[-1]}), got {y.shape[-1]}")
    if x.dim() == y.dim() == 3 and x.shape[0] != y.shape[0]:
        raise ValueError(f"y must have the batch size of x ({x.shape[0]}), got {y.shape[0]}")
    if y.dtype != x.dtype:
        raise TypeError(f"y must have the dtype of x ({x.dtype}), got {y.dtype}")
    if y.device != x.device:
        raise ValueError(f"y must be on the device of x ({x.device}), got {y.device}")


_X = Tensor(..., "n", "d", max_batch_dims=1, degenerate=("coincident",))
_Y = Tensor(..., "m", "d", max_batch_dims=1, degenerate=("coincident",))


def _example_weights(ctx, symbol: str) -> torch.Tensor:
    """(2, size) marginals summing to 1, matching the batch of the generic point-cloud examples."""
    w = torch.rand(2, ctx.size(symbol), generator=ctx.generator, dtype=ctx.dtype) + 0.1
    return w / w.sum(-1, keepdim=True)


_CLOUD_OT = dict(x=_X, y=_Y, reg=Real(gt=0),
                 a=Tensor(..., "n", max_batch_dims=1, positive_mass=True, degenerate=("zero_mass",), optional=True),
                 b=Tensor(..., "m", max_batch_dims=1, positive_mass=True, degenerate=("zero_mass",), optional=True),
                 p=Real(ge=1), max_iter=Int(ge=1), tol=Real(ge=0), check_every=Int(ge=1),
                 example=lambda ctx: {"a": _example_weights(ctx, "n"), "b": _example_weights(ctx, "m"),
                                      "max_iter": 300})


@accepts(x=_X, y=_Y, p=Real(ge=1))
def pairwise_cost(x: torch.Tensor, y: torch.Tensor, p: float = 2) -> torch.Tensor:
    """The ground-cost matrix ``M_ij = ||x_i - y_j||_2^p`` (``p = 2``: squared Euclidean, no factor 1/2).

    Args:
        x: (n, d) or (B, n, d) source points.
        y: (m, d) or (B, m, d) target points, same dtype and device.
        p: exponent, ``p >= 1``.

    Returns:
        (n, m) tensor ((B, n, m) when batched), differentiable in ``x`` and ``y``. For ``p = 2`` the difference form
        ``sum_k (x_ik - y_jk)^2`` is used while ``n m d`` is small (no cancellation, exact zero on the
        diagonal of ``pairwise_cost(x, x)``), the Gram form ``|x|^2 + |y|^2 - 2 x y^T`` clamped at 0 above.
    """
    _check_clouds(x, y)
    p = check_number("p", p, low=1.0)
    if p == 2:
        if x[..., 0].numel() * y.shape[-2] * x.shape[-1] <= _DIFFERENCE_FORM_LIMIT:
            return (x[..., :, None, :] - y[..., None, :, :]).square().sum(-1)
        gram = x @ y.transpose(-1, -2)
        return (x.square().sum(-1)[..., :, None] + y.square().sum(-1)[..., None, :] - 2 * gram).clamp_min(0)
    return torch.cdist(x, y).pow(p)


def _uniform_or(name: str, w, n: int, like: torch.Tensor) -> torch.Tensor:
    if w is None:
        return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)
    check_tensor(name, w, ndim=(1, 2), nonnegative=True)
    if w.shape[-1] != n:
        raise ValueError(f"{name} must have one weight per point ({n}), got shape {tuple(w.shape)}")
    return w


@accepts(**_CLOUD_OT, infinite_ok=("f", "g"))
def entropic_ot(x: torch.Tensor, y: torch.Tensor, reg: float, *, a: torch.Tensor | None = None,
                b: torch.Tensor | None = None, p: float = 2, max_iter: int = 100_000, tol: float = 1e-9,
                check_every: int = 10) -> OTResult:
    r"""Entropic OT between weighted point clouds: :func:`~paperzoo.transport.sinkhorn_log` on
    ``M = pairwise_cost(x, y, p)``.

    .. math::
        \mathrm{OT}_\varepsilon(a, x; b, y) = \min_{P 1 = a,\ P^\top 1 = b}
        \sum_{ij} P_{ij} \|x_i - y_j\|^p - \varepsilon H(P), \qquad \varepsilon = \mathrm{reg}.

    Gradients (from ``res.reg_cost``): ``d/dx_i = sum_j P_ij d||x_i - y_j||^p / dx_i``, ``d/da = f``,
    ``d/db = g`` (envelope theorem; see :class:`~paperzoo.transport.OTResult`).

    Batched: ``x`` (B, n, d) and/or ``y`` (B, m, d), with weights (B, n) / (B, m) or shared, solve ``B``
    problems at once (batched fields as :func:`~paperzoo.transport.sinkhorn_batched.sinkhorn_log_batched`).

    Args:
        x: (n, d) source points. y: (m, d) target points.
        reg: entropic regularisation ``> 0``, in units of the cost.
        a: (n,) source weights (default uniform ``1/n``). b: (m,) target weights (default uniform ``1/m``);
            ``sum(a) == sum(b)``.
        p: cost exponent (``p = 2``: squared Euclidean).
        max_iter, tol, check_every: as :func:`~paperzoo.transport.sinkhorn_log`.

    Example:
        >>> import torch
        >>> from paperzoo.transport import entropic_ot
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(20, 2, dtype=torch.float64, generator=g, requires_grad=True)
        >>> y = torch.randn(30, 2, dtype=torch.float64, generator=g) + 1
        >>> res = entropic_ot(x, y, reg=0.1)
        >>> res.reg_cost.backward()
        >>> x.grad.shape
        torch.Size([20, 2])
    """
    M = pairwise_cost(x, y, p)
    a = _uniform_or("a", a, x.shape[-2], x)
    b = _uniform_or("b", b, y.shape[-2], x)
    return sinkhorn_log(a, b, M, reg, max_iter=max_iter, tol=tol, check_every=check_every)


@accepts(**_CLOUD_OT)
def sinkhorn_divergence(x: torch.Tensor, y: torch.Tensor, reg: float, *, a: torch.Tensor | None = None,
                        b: torch.Tensor | None = None, p: float = 2, max_iter: int = 100_000, tol: float = 1e-9,
                        check_every: int = 10) -> torch.Tensor:
    r"""Debiased Sinkhorn divergence
    ``S(x, y) = OT_eps(x, y) - OT_eps(x, x) / 2 - OT_eps(y, y) / 2`` of :func:`entropic_ot`'s ``reg_cost``.

    ``S >= 0``, ``S = 0`` for identical weighted clouds, and ``S`` tends to the OT cost as ``reg -> 0`` and to
    an MMD as ``reg -> inf`` (Feydy et al., 2019). Arguments as :func:`entropic_ot` (batched too); returns a
    0-dim tensor ((B,) when batched), differentiable in ``x``, ``y``, ``a`` and ``b``.
    """
    kw = dict(p=p, max_iter=max_iter, tol=tol, check_every=check_every)
    a = _uniform_or("a", a, x.shape[-2], x)
    b = _uniform_or("b", b, y.shape[-2], x)
    xy = entropic_ot(x, y, reg, a=a, b=b, **kw).reg_cost
    return xy - 0.5 * (_symmetric_reg_cost(x, a, reg, **kw) + _symmetric_reg_cost(y, b, reg, **kw))


def _symmetric_reg_cost(x: torch.Tensor, a: torch.Tensor, reg: float, *, p: float, max_iter: int, tol: float,
                        check_every: int) -> torch.Tensor:
    """``OT_eps(a, x; a, x)`` by the averaged symmetric Sinkhorn iteration ``f <- (f + T(f)) / 2``.

    The self-transport problem has a symmetric optimum ``f = g``; plain Sinkhorn oscillates around it and can
    need ~1e5 sweeps at small ``reg``, while the averaged fixed-point map converges in tens of iterations
    (Feydy et al., 2019, Sec. 3.1). The value ``2 <a, f> - reg sum_ij exp((f_i + f_j - M_ij) / reg)`` is
    re-evaluated with the detached potential, so gradients follow the envelope theorem as in
    :func:`~paperzoo.transport.sinkhorn_log`.
    """
    reg = check_positive("reg", reg)
    max_iter = check_int("max_iter", max_iter, low=1)
    tol = check_nonnegative("tol", tol)
    check_every = check_int("check_every", check_every, low=1)
    M = pairwise_cost(x, x, p)
    a = a.expand(M.shape[:-1])
    with torch.no_grad():
        K, log_a, a_d = -M.detach() / reg, _masked_log(a.detach()), a.detach()
        f = torch.zeros_like(a_d)
        err = math.inf
        for it in range(1, max_iter + 1):
            f = 0.5 * (f + reg * (log_a - _lse(K + (f / reg)[..., None, :], dim=-1)))
            if it % check_every == 0 or it == max_iter:
                row = torch.exp(K + (f / reg)[..., :, None] + (f / reg)[..., None, :]).sum(-1)
                err = 2 * float((row - a_d).abs().sum(-1).max())  # both marginals: equal by symmetry
                if not math.isfinite(err):
                    _raise_nonfinite("sinkhorn_divergence", it)
                if err <= tol:
                    break
    if err > tol:
        warnings.warn(f"sinkhorn_divergence (symmetric term) did not converge: marginal error {err:.3e} > "
                      f"tol={tol:.1e} after {max_iter} iterations; increase max_iter (or reg, or tol)",
                      ConvergenceWarning, stacklevel=3)
    return _dual_value(a, a, M, f, f, reg)
