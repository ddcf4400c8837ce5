"""Log-domain Sinkhorn for entropic optimal transport, and the helpers every OT solver here shares.

References: Sinkhorn Distances: Lightspeed Computation of Optimal Transport, 2013 (Cuturi); the log-domain
(stabilised) form follows Computational Optimal Transport, 2019 (Peyre and Cuturi), Remark 4.23.

Shared pieces (used by :func:`paperzoo.transport.sinkhorn_newton_sparse` too):

* :func:`check_ot_inputs` validates ``(a, b, M, reg)`` with messages that name the argument;
* :func:`marginal_error` and :func:`plan_from_potentials` are the two invariants of every solver;
* the private ``_prepare`` / ``_sinkhorn_sweeps`` / ``_finish`` run the problem restricted to the support of
  ``a`` and ``b`` (zero-mass bins never enter a logarithm) and build the :class:`OTResult`.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Int, Real, Tensor, accepts
from paperzoo.transport.result import ConvergenceWarning, OTResult

__all__ = ["sinkhorn_log", "check_ot_inputs", "marginal_error", "plan_from_potentials"]


@accepts(a=Tensor("n", positive_mass=True, degenerate=("zero_mass",)),
         b=Tensor("m", positive_mass=True, degenerate=("zero_mass",)), M=Tensor("n", "m"), reg=Real(gt=0),
         mass_rtol=Real(ge=0))
def check_ot_inputs(a, b, M, reg, *, mass_rtol: float = 1e-6) -> float:
    """Validate the arguments of an OT solver ``(a, b, M, reg)``; return ``reg`` as a float.

    Args:
        a: (n,) source marginal, nonnegative, floating.
        b: (m,) target marginal, nonnegative, same dtype and device as ``a``, same total mass.
        M: (n, m) finite cost matrix, same dtype and device as ``a``.
        reg: entropic regularisation, > 0.
        mass_rtol: relative tolerance on ``|sum(a) - sum(b)|``.

    Raises:
        TypeError: a non-tensor, a non-floating tensor, mismatched dtypes, a non-number ``reg``.
        ValueError: wrong dimensions or shapes, negative or non-finite entries, zero or unequal masses,
            mismatched devices, ``reg <= 0``.
    """
    _check_equal_mass(a, b, mass_rtol)  # the declaration has checked everything else
    return float(reg)


def _check_equal_mass(a: torch.Tensor, b: torch.Tensor, mass_rtol: float) -> None:
    """``|sum(a) - sum(b)| <= mass_rtol * max(sum(a), sum(b))``: the relation between validated marginals that
    the declarations cannot state."""
    mass_a, mass_b = float(a.detach().sum()), float(b.detach().sum())
    if abs(mass_a - mass_b) > mass_rtol * max(mass_a, mass_b):
        raise ValueError(
            f"b must have the same total mass as a (relative tolerance mass_rtol={mass_rtol:g}), "
            f"got sum(a)={mass_a!r}, sum(b)={mass_b!r}"
        )


def _marginal_error(plan: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    return float((plan.sum(1) - a).abs().sum() + (plan.sum(0) - b).abs().sum())


@accepts(plan=Tensor("n", "m", nonnegative=True, degenerate=("zeros",)),
         a=Tensor("n", nonnegative=True, degenerate=("zero_mass",)),
         b=Tensor("m", nonnegative=True, degenerate=("zero_mass",)))
def marginal_error(plan: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    """``||plan 1 - a||_1 + ||plan^T 1 - b||_1``: the stopping quantity of every solver here.

    Args:
        plan: (n, m) nonnegative transport plan.
        a: (n,) nonnegative source marginal.
        b: (m,) nonnegative target marginal.

    Example:
        >>> import torch
        >>> a = b = torch.full((2,), 0.5, dtype=torch.float64)
        >>> marginal_error(torch.diag(a), a, b)
        0.0
    """
    return _marginal_error(plan, a, b)  # the solvers call _marginal_error in their loops: no re-validation


@accepts(f=Tensor("n", finite=False), g=Tensor("m", finite=False), M=Tensor("n", "m"), reg=Real(gt=0))
def plan_from_potentials(f: torch.Tensor, g: torch.Tensor, M: torch.Tensor, reg: float) -> torch.Tensor:
    """The plan ``exp((f_i + g_j - M_ij) / reg)`` of dual potentials ``f`` (n,), ``g`` (m,) and cost ``M`` (n, m).

    Args:
        f: (n,) source potential, finite or ``-inf`` (a zero-mass bin: its row of the plan is exactly zero).
        g: (m,) target potential, finite or ``-inf``.
        M: (n, m) finite cost matrix.
        reg: the entropic regularisation ``> 0`` the potentials were computed with.

    Raises:
        ValueError: NaN or ``+inf`` potentials, or potentials whose plan overflows the dtype (they do not come
            from a solve with this ``M`` and ``reg``).

    Example:
        >>> import torch
        >>> f = torch.tensor([0.0, -float("inf")], dtype=torch.float64)
        >>> plan_from_potentials(f, torch.zeros(2, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64), 1.0)
        tensor([[1., 1.],
                [0., 0.]], dtype=torch.float64)
    """
    for name, x in (("f", f), ("g", g)):
        bad = torch.isnan(x) | (x == math.inf)
        if bool(bad.any()):
            raise ValueError(f"{name} must have finite or -inf entries, got {float(x[bad][0])!r} at index "
                             f"{int(bad.nonzero()[0, 0])}")
    plan = torch.exp((f[:, None] + g[None, :] - M) / reg)
    if not bool(torch.isfinite(plan).all()):
        top = float(((f[:, None] + g[None, :] - M) / reg).max())
        raise ValueError(f"f, g and M give a plan that overflows {plan.dtype}: (f_i + g_j - M_ij) / reg reaches "
                         f"{top:.4g}; the potentials do not come from a solve with this M and reg={reg!r}")
    return plan


def _log_floor(dtype: torch.dtype) -> float:
    """Floor applied to exponents before ``exp`` in inner loops: ``log(tiny) / 2`` (-354 in float64, -43.7 in
    float32). Exponents near ``log(tiny)`` send CPU ``exp`` down a denormal slow path (up to 10x slower at
    reg=0.005); flooring changes a sum whose largest term is 1 by at most ``len * sqrt(tiny)``, far below
    rounding."""
    return 0.5 * math.log(torch.finfo(dtype).tiny)


def _lse(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``logsumexp`` along ``dim`` with the exponent floor of :func:`_log_floor`."""
    mx = x.amax(dim, keepdim=True)
    return (x - mx).clamp_(min=_log_floor(x.dtype)).exp_().sum(dim).log_() + mx.squeeze(dim)


def _exp(x: torch.Tensor) -> torch.Tensor:
    """``exp`` with the exponent floor of :func:`_log_floor` (entries below it become ``sqrt(tiny)``)."""
    return x.clamp(min=_log_floor(x.dtype)).exp_()


class _Problem(NamedTuple):
    """An OT problem restricted to the support of ``a`` and ``b``."""

    a: torch.Tensor  # (n_s,) positive entries of a
    b: torch.Tensor  # (m_s,)
    log_a: torch.Tensor
    log_b: torch.Tensor
    K: torch.Tensor  # (n_s, m_s) log-kernel -M / reg on the support
    reg: float
    rows: torch.Tensor | None  # support indices into the full problem, None when the support is everything
    cols: torch.Tensor | None
    a_full: torch.Tensor
    b_full: torch.Tensor
    M_full: torch.Tensor


def _prepare(a, b, M, reg) -> _Problem:
    rows = cols = None
    a_s, b_s, M_s = a, b, M
    if bool((a == 0).any()):
        rows = torch.nonzero(a > 0).squeeze(1)
        a_s, M_s = a[rows], M_s[rows]
    if bool((b == 0).any()):
        cols = torch.nonzero(b > 0).squeeze(1)
        b_s, M_s = b[cols], M_s[:, cols]
    return _Problem(a_s, b_s, a_s.log(), b_s.log(), -M_s / reg, reg, rows, cols, a, b, M)


def _raise_nonfinite(solver: str, it: int) -> None:
    raise FloatingPointError(
        f"{solver} produced NaN/inf in the marginal error at iteration {it}; the cost or reg is out of the range "
        f"the dtype can represent: use float64, rescale M, or increase reg"
    )


def _sinkhorn_sweeps(prob: _Problem, f, g, *, max_iter: int, tol: float, check_every: int, history: list,
                     it0: int = 0, solver: str = "sinkhorn_log"):
    """Up to ``max_iter`` log-domain Sinkhorn sweeps from ``(f, g)``; stop once the marginal error is <= tol.

    The error of the current pair comes almost for free: the row log-sums needed by the next ``f`` update give
    ``log(P 1)``, and the column log-sums of the last ``g`` update give ``log(P^T 1)``.
    Returns ``(f, g, sweeps_done, converged)``.
    """
    reg, K = prob.reg, prob.K
    col_err = None  # column error of the current pair, known after the first g update
    for it in range(max_iter + 1):
        s = _lse(K + (g / reg)[None, :], dim=1)  # log(P 1)_i - f_i / reg
        if col_err is not None and (it % check_every == 0 or it == max_iter):
            err = float((torch.exp(f / reg + s) - prob.a).abs().sum() + col_err)
            if not math.isfinite(err):
                _raise_nonfinite(solver, it0 + it)
            history.append((it0 + it, err))
            if err <= tol:
                return f, g, it, True
        if it == max_iter:
            return f, g, it, False
        f = reg * (prob.log_a - s)
        t = _lse(K + (f / reg)[:, None], dim=0)
        g = reg * (prob.log_b - t)
        col_err = (torch.exp(g / reg + t) - prob.b).abs().sum()
    raise AssertionError("unreachable")


def _finish(prob: _Problem, f, g, *, tol: float, n_sinkhorn: int, n_newton: int, n_cg: int, history: list,
            solver: str, knob: str, plan_s: torch.Tensor | None = None) -> OTResult:
    """Plan, embedding of zero-mass bins, cost, diagnostics and the non-convergence warning."""
    reg = prob.reg
    if plan_s is None:
        plan_s = torch.exp(prob.K + (f / reg)[:, None] + (g / reg)[None, :])
    err = _marginal_error(plan_s, prob.a, prob.b)
    n_iter = n_sinkhorn + n_newton
    if not math.isfinite(err) or not bool(torch.isfinite(plan_s).all()):
        _raise_nonfinite(solver, n_iter)
    if not history or history[-1][0] != n_iter:
        history.append((n_iter, err))
    plan, f_full, g_full = plan_s, f, g
    if prob.rows is not None or prob.cols is not None:
        n, m = prob.M_full.shape
        rows = prob.rows if prob.rows is not None else torch.arange(n, device=f.device)
        cols = prob.cols if prob.cols is not None else torch.arange(m, device=f.device)
        plan = plan_s.new_zeros((n, m))
        plan[rows[:, None], cols[None, :]] = plan_s
        f_full = f.new_full((n,), -math.inf).index_copy(0, rows, f)
        g_full = g.new_full((m,), -math.inf).index_copy(0, cols, g)
    converged = err <= tol
    if not converged:
        warnings.warn(
            f"{solver} did not converge: marginal error {err:.3e} > tol={tol:.1e} after {n_iter} iterations; "
            f"increase {knob} (or reg, or tol)",
            ConvergenceWarning,
            stacklevel=5,  # _finish <- solve <- _solve_detached <- public solver <- caller
        )
    return OTResult(
        plan=plan,
        f=f_full,
        g=g_full,
        cost=(plan * prob.M_full).sum(),
        n_iter=n_iter,
        marginal_error=err,
        converged=converged,
        n_sinkhorn=n_sinkhorn,
        n_newton=n_newton,
        n_cg=n_cg,
        error_history=torch.tensor([e for _, e in history], dtype=torch.float64),
        history_iter=torch.tensor([i for i, _ in history], dtype=torch.int64),
        reg_cost=(prob.a * f).sum() + (prob.b * g).sum() - reg * plan_s.sum(),
    )


def _masked_log(w: torch.Tensor) -> torch.Tensor:
    return torch.where(w > 0, w.log(), torch.full_like(w, -math.inf))


def _dual_value(a, b, M, f, g, reg) -> torch.Tensor:
    """``<a, f> + <b, g> - reg sum_ij exp((f_i + g_j - M_ij) / reg)`` per problem; zero-mass bins contribute 0
    (``f`` is zeroed there before the product so that no ``0 * inf`` reaches the forward or backward pass)."""
    f0 = torch.where(torch.isfinite(f), f, torch.zeros_like(f))
    g0 = torch.where(torch.isfinite(g), g, torch.zeros_like(g))
    plan = torch.exp((f[..., :, None] + g[..., None, :] - M) / reg)
    return (a * f0).sum(-1) + (b * g0).sum(-1) - reg * plan.sum((-2, -1))


def _solve_detached(inputs, reg: float, solve) -> OTResult:
    """Run ``solve(a, b, M)`` without autograd, then attach the envelope-theorem graph to ``reg_cost``.

    The dual objective ``D(f, g; a, b, M) = <a, f> + <b, g> - reg sum_ij exp((f_i + g_j - M_ij) / reg)`` is
    maximised by the solver, so at the optimum ``dOT/dtheta = dD/dtheta`` at fixed ``(f, g)`` (Danskin /
    envelope theorem): re-evaluating ``D`` with detached potentials and the caller's ``a``, ``b``, ``M`` gives
    the exact gradients without differentiating through the iterations.
    """
    a, b, M = inputs
    with torch.no_grad():
        res = solve(a.detach(), b.detach(), M.detach())
    if not (a.requires_grad or b.requires_grad or M.requires_grad) or not torch.is_grad_enabled():
        return res
    return res._replace(reg_cost=_dual_value(a, b, M, res.f, res.g, reg))


@accepts(a=Tensor(..., "n", max_batch_dims=1, positive_mass=True, degenerate=("zero_mass",)),
         b=Tensor(..., "m", max_batch_dims=1, positive_mass=True, degenerate=("zero_mass",)),
         M=Tensor(..., "n", "m", max_batch_dims=1), reg=Real(gt=0),
         max_iter=Int(ge=1), tol=Real(ge=0), check_every=Int(ge=1), mass_rtol=Real(ge=0),
         example=lambda ctx: {"max_iter": 300}, infinite_ok=("f", "g"))
def sinkhorn_log(a, b, M, reg, *, max_iter: int = 100_000, tol: float = 1e-9, check_every: int = 10,
                 mass_rtol: float = 1e-6) -> OTResult:
    r"""Log-domain Sinkhorn: entropic OT by alternating exact maximisation of the dual.

    References: Sinkhorn Distances: Lightspeed Computation of Optimal Transport, 2013.

    Solves, with the objective and entropy of POT's ``ot.sinkhorn(a, b, M, reg, method='sinkhorn_log')``
    (so the plans agree),

    .. math::
        \min_{P \ge 0,\ P 1 = a,\ P^\top 1 = b} \langle P, M\rangle - \mathrm{reg}\, H(P),
        \qquad H(P) = -\sum_{ij} P_{ij} (\log P_{ij} - 1),

    whose solution is ``P_ij = exp((f_i + g_j - M_ij) / reg)``. One sweep is the two exact block updates of the
    concave dual ``<a, f> + <b, g> - reg sum_ij exp((f_i + g_j - M_ij) / reg)``, computed with log-sum-exp::

        f_i = reg * (log a_i - logsumexp_j((g_j - M_ij) / reg))
        g_j = reg * (log b_j - logsumexp_i((f_i - M_ij) / reg))

    Zero-mass bins are removed before any logarithm and get ``-inf`` potentials and zero rows/columns.

    Batched: ``a`` (B, n), ``b`` (B, m) and/or ``M`` (B, n, m) solve ``B`` problems in lock-step (unbatched
    arguments are shared); see :func:`~paperzoo.transport.sinkhorn_batched.sinkhorn_log_batched` for the batched
    fields of the result.

    Args:
        a: (n,) source marginal, nonnegative, floating dtype.
        b: (m,) target marginal, nonnegative, same total mass as ``a`` (relative tolerance ``mass_rtol``).
        M: (n, m) finite cost matrix.
        reg: entropic regularisation ``reg > 0`` (POT's ``reg``; the paper's ``1 / eta``).
        max_iter: maximum number of sweeps.
        tol: stop once ``||P 1 - a||_1 + ||P^T 1 - b||_1 <= tol``.
        check_every: evaluate the stopping rule every ``check_every`` sweeps (each check syncs with the device).
        mass_rtol: relative tolerance on ``|sum(a) - sum(b)|``.

    Gradients: ``res.reg_cost`` (the entropic objective) is differentiable in ``a``, ``b`` and ``M`` by the
    envelope theorem; ``plan``, ``f``, ``g`` and ``cost`` are returned detached.

    Returns:
        :class:`~paperzoo.transport.OTResult` with ``n_newton = n_cg = 0``. Warns
        :class:`~paperzoo.transport.ConvergenceWarning` ("increase max_iter") when ``tol`` is not reached;
        raises ``FloatingPointError`` on NaN/inf.

    Example:
        >>> import torch
        >>> from paperzoo.transport import sinkhorn_log
        >>> x = torch.linspace(0, 1, 5, dtype=torch.float64)
        >>> M = (x[:, None] - x[None, :]) ** 2
        >>> a = b = torch.full((5,), 0.2, dtype=torch.float64)
        >>> res = sinkhorn_log(a, b, M, reg=0.01)
        >>> res.converged, res.plan.shape
        (True, torch.Size([5, 5]))
    """
    from paperzoo.transport.sinkhorn_batched import is_batched, sinkhorn_log_batched  # it builds on this module

    if is_batched(a, b, M):
        return sinkhorn_log_batched(a, b, M, reg, max_iter=max_iter, tol=tol, check_every=check_every,
                                    mass_rtol=mass_rtol)
    _check_equal_mass(a, b, mass_rtol)
    reg = float(reg)

    def solve(a, b, M):
        prob = _prepare(a, b, M, reg)
        history: list = []
        f = torch.zeros_like(prob.a)
        g = torch.zeros_like(prob.b)
        f, g, sweeps, _ = _sinkhorn_sweeps(prob, f, g, max_iter=max_iter, tol=tol, check_every=check_every,
                                           history=history)
        return _finish(prob, f, g, tol=tol, n_sinkhorn=sweeps, n_newton=0, n_cg=0, history=history,
                       solver="sinkhorn_log", knob="max_iter")

    return _solve_detached((a, b, M), reg, solve)
