r"""Sparsity-constrained optimal transport: quadratic OT with at most ``k`` nonzeros per column of the plan.

References: Sparsity-Constrained Optimal Transport, 2023 (Liu, Puigcerver and Blondel, ICLR 2023).

The primal problem (the paper's Section 3: a column-wise squared-2-norm regulariser :math:`\Omega` with the
cardinality constraint :math:`\|t_j\|_0 \le k`) is

.. math::
    \min_{T \in U(a, b)} \langle T, M\rangle + \sum_j \frac{\mathrm{reg}}{2}\|t_j\|_2^2
    \quad \text{s.t.}\quad \|t_j\|_0 \le k \ \ \forall j,

with :math:`t_j = T_{:, j}`. It is nonconvex; the paper solves its concave (semi-)dual instead:

* **dual** :math:`\max_{f, g} \langle f, a\rangle + \langle g, b\rangle
  - \sum_j \Omega_k^*(f + g_j 1 - m_j)` with
  :math:`\Omega_k^*(s) = \frac{1}{2\,\mathrm{reg}} \sum_{i \in \mathrm{top}_k(s)} [s_i]_+^2`; the plan is
  :math:`t_j = \nabla\Omega_k^*(f + g_j 1 - m_j)`: the top-``k`` entries of ``[f + g_j - M[:, j]]_+ / reg``.
* **semi-dual** :math:`\max_f \langle f, a\rangle - \sum_j \max_{t \in b_j\Delta^n, \|t\|_0 \le k}
  \langle f - m_j, t\rangle - \frac{\mathrm{reg}}{2}\|t\|^2`, whose maximiser is
  :math:`t_j = b_j\, \mathrm{proj}_{\Delta, k}((f - m_j) / (\mathrm{reg}\, b_j))`, the sparse projection onto the
  simplex (project the top-``k`` entries, zero the rest; Kyrillidis et al., 2013). Column marginals hold
  exactly; row marginals at convergence.

The dual gradients are the marginal residuals ``(a - T 1, b - T^T 1)``, so the L1 norm of the gradient is the
stopping quantity :func:`~paperzoo.transport.marginal_error`. Like the paper, both are maximised with L-BFGS
(``torch.optim.LBFGS`` with a strong-Wolfe line search, run in chunks of ``check_every`` iterations; once the
line search stalls at floating-point resolution of the objective, unit-step L-BFGS takes over, and the iterate
with the smallest marginal error is returned; the unit-step phase stops after 5 checks without improvement).

With ``k >= n`` the constraint is inactive and the problem is quadratically regularised OT (POT's
``ot.smooth.smooth_ot_dual(a, b, M, reg, reg_type='l2')``); for small ``k`` and small ``reg`` the plan approaches
an unregularised OT plan; ``k = 1`` with the semi-dual is exactly the unregularised semi-dual.

Conventions and deviations:

* ``reg`` multiplies :math:`\frac12\|T\|^2` as in POT (``gamma`` of ``ot.smooth``); the paper writes the
  regulariser with :math:`1/\gamma` in places: ``reg = 1 / gamma`` there.
* Potentials: ``plan[:, j] = top_k([f + g[j] - M[:, j]]_+) / reg`` for both formulations; for the semi-dual,
  ``g[j] = -reg * b[j] * tau[j]`` where ``tau[j]`` is the threshold of the sparse simplex projection.
  Zero-mass bins get ``-inf`` potentials and zero rows/columns. The OTResult fields ``n_sinkhorn``, ``n_newton``
  and ``n_cg`` are 0; ``n_iter`` counts L-BFGS iterations.
* The solve runs without autograd (the returned tensors carry no graph); because the dual is a relaxation of a
  nonconvex primal, the recovered plan may violate the marginals slightly where the dual has ties; the
  returned ``marginal_error`` says by how much.
* ``reg_cost`` is the regularised objective ``<T, M> + reg/2 ||T||^2``, evaluated as the dual value at the
  returned potentials (equal at the optimum of the convex case ``k >= n``; a lower bound of the nonconvex primal
  otherwise). It carries the envelope-theorem gradients ``d/dM = plan``, ``d/da = f``, ``d/db = g`` when
  ``a``, ``b`` or ``M`` require grad.
"""

from __future__ import annotations

import math
import warnings

import torch

from paperzoo.core.accepts import Choice, Int, Probe, Real, Spec, Tensor, accepts
from paperzoo.transport.result import ConvergenceWarning, OTResult
from paperzoo.transport.sinkhorn import _check_equal_mass, _marginal_error

__all__ = ["sparsity_constrained_ot", "projection_sparse_simplex", "top_k_mask"]


def top_k_mask(S: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean (n, m) mask of the ``k`` largest entries of each column of ``S`` (n, m) (all when ``k >= n``)."""
    n = S.shape[0]
    if k >= n:
        return torch.ones_like(S, dtype=torch.bool)
    idx = S.topk(k, dim=0).indices
    return torch.zeros_like(S, dtype=torch.bool).scatter_(0, idx, True)


class _Radii(Spec):
    """A positive number, or a tensor of positive numbers with one entry per column of ``like`` (symbol ``m``)."""

    def __init__(self, like: str):
        self.like, self.optional = like, False
        self._number, self._tensor = Real(gt=0), Tensor("m")

    def check(self, name, value, binding):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            self._tensor.check(name, value, binding)
            if value.numel() and not bool((value > 0).all()):
                raise ValueError(f"{name} must be > 0 entrywise, got a minimum of {float(value.min())!r}")
        else:
            self._number.check(name, value, binding)

    def example(self, ctx):
        return 1.0

    def probes(self, name, value):
        out = self._number.probes(name, 1.0)

        def radii(fill=None):
            def mutate(kw):
                m = kw[self.like].shape[-1]
                z = torch.linspace(0.5, 2.0, m, dtype=kw[self.like].dtype)
                if fill is not None:
                    z[0] = fill
                return {**kw, name: z}
            return mutate

        out.append(Probe(name, "per-column radii", True, radii()))
        out += [Probe(name, f"per-column radii with a {v!r} entry", False, radii(v))
                for v in (0.0, -1.0, float("nan"), float("inf"))]
        out.append(Probe(name, "radii of the wrong length", False,
                         lambda kw: {**kw, name: torch.ones(kw[self.like].shape[-1] + 1, dtype=kw[self.like].dtype)}))
        return out


@accepts(V=Tensor("n", "m"), k=Int(ge=1), z=_Radii(like="V"))
def projection_sparse_simplex(V: torch.Tensor, k: int, z: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Column-wise Euclidean projection onto :math:`\{t \ge 0, \sum t = z, \|t\|_0 \le k\}`.

    References: Sparsity-Constrained Optimal Transport, 2023 (its sparse simplex projection; the
    top-``k``-then-project rule is from Kyrillidis et al., Sparse projections onto the simplex, 2013).

    Args:
        V: (n, m) columns to project.
        k: maximum nonzeros per column, ``k >= 1``.
        z: a number or an (m,) tensor (one radius per column), ``> 0``.

    Returns:
        ``(T, tau)``: the (n, m) projection and the (m,) thresholds, ``T = [V - tau]_+`` on the top-``k`` support.

    Example:
        >>> import torch
        >>> T, _ = projection_sparse_simplex(torch.tensor([[0.5], [0.3], [0.2]]), k=2)
        >>> T.squeeze(1)
        tensor([0.6000, 0.4000, 0.0000])
    """
    return _projection_sparse_simplex(V, k, z)


def _projection_sparse_simplex(V: torch.Tensor, k: int, z: torch.Tensor | float = 1.0):
    """:func:`projection_sparse_simplex` without validation (the semi-dual calls it at every L-BFGS step)."""
    n, m = V.shape
    kk = min(k, n)
    z = torch.as_tensor(z, dtype=V.dtype, device=V.device).expand(m)
    top, idx = V.topk(kk, dim=0)  # sorted, descending
    css = top.cumsum(0) - z[None, :]
    ranks = torch.arange(1, kk + 1, dtype=V.dtype, device=V.device)[:, None]
    # rho = number of entries that stay positive: the last rank where top_r > (cumsum_r - z) / r
    rho = ((top - css / ranks) > 0).sum(0).clamp(min=1)
    tau = css.gather(0, (rho - 1)[None, :]).squeeze(0) / rho.to(V.dtype)
    T = torch.zeros_like(V).scatter_(0, idx, (top - tau[None, :]).clamp(min=0))
    return T, tau


def _dual_plan(f, g, M, reg, k):
    X = f[:, None] + g[None, :] - M
    return torch.where(top_k_mask(X, k), X.clamp(min=0), torch.zeros_like(X)) / reg


def _semi_dual_plan(f, b, M, reg, k):
    X = f[:, None] - M
    P, tau = _projection_sparse_simplex(X / (reg * b[None, :]), k)
    return P * b[None, :], -reg * b * tau


@accepts(a=Tensor("n", positive_mass=True, degenerate=("zero_mass",)),
         b=Tensor("m", positive_mass=True, degenerate=("zero_mass",)), M=Tensor("n", "m"), reg=Real(gt=0),
         k=Int(ge=1), formulation=Choice("dual", "semi_dual"), max_iter=Int(ge=1), tol=Real(ge=0),
         check_every=Int(ge=1), history_size=Int(ge=1), mass_rtol=Real(ge=0),
         example=lambda ctx: {"k": 2, "max_iter": 50}, infinite_ok=("f", "g"))
def sparsity_constrained_ot(a, b, M, reg, k, *, formulation: str = "dual", max_iter: int = 1000,
                            tol: float = 1e-6, check_every: int = 10, history_size: int = 20,
                            mass_rtol: float = 1e-6) -> OTResult:
    r"""Sparsity-constrained OT: quadratic OT whose plan has at most ``k`` nonzeros per column (L-BFGS on the dual).

    References: Sparsity-Constrained Optimal Transport, 2023.

    Solves :math:`\min_{T \in U(a,b),\ \|T_{:,j}\|_0 \le k} \langle T, M\rangle + \frac{\mathrm{reg}}{2}\|T\|_F^2`
    through its dual or semi-dual (see the module docstring for the objectives and the plan recovery).

    Args:
        a: (n,) source marginal, nonnegative, floating dtype.
        b: (m,) target marginal (the paper's experts), nonnegative, same total mass as ``a``.
        M: (n, m) finite cost matrix.
        reg: quadratic regularisation ``reg > 0`` (POT's ``reg`` / ``gamma`` of ``ot.smooth``).
        k: maximum number of nonzeros per column of the plan, ``k >= 1`` (``k >= n``: plain quadratic OT).
        formulation: ``"dual"`` (over ``(f, g)``) or ``"semi_dual"`` (over ``f``; exact column marginals).
        max_iter: maximum number of L-BFGS iterations.
        tol: stop once ``||T 1 - a||_1 + ||T^T 1 - b||_1 <= tol`` (the L1 norm of the dual gradient).
        check_every: L-BFGS iterations between two checks of the stopping rule.
        history_size: L-BFGS memory.
        mass_rtol: relative tolerance on ``|sum(a) - sum(b)|``.

    Returns:
        :class:`~paperzoo.transport.OTResult` with the plan, potentials ``f`` (n,), ``g`` (m,), the linear cost
        ``<T, M>`` and the marginal-error history. Warns
        :class:`~paperzoo.transport.ConvergenceWarning` ("increase max_iter") when ``tol`` is not reached and
        raises ``FloatingPointError`` on NaN/inf.

    Example:
        >>> import torch
        >>> from paperzoo.transport import sparsity_constrained_ot
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.rand(8, 2, generator=g, dtype=torch.float64), torch.rand(4, 2, generator=g, dtype=torch.float64)
        >>> M = torch.cdist(x, y) ** 2
        >>> a, b = torch.full((8,), 1 / 8, dtype=torch.float64), torch.full((4,), 1 / 4, dtype=torch.float64)
        >>> res = sparsity_constrained_ot(a, b, M, reg=0.1, k=2)
        >>> bool((res.plan > 0).sum(0).max() <= 2), res.converged
        (True, True)
    """
    _check_equal_mass(a, b, mass_rtol)  # the declaration has checked every argument on its own
    reg = float(reg)
    n, m = M.shape
    rows = torch.nonzero(a > 0).squeeze(1)
    cols = torch.nonzero(b > 0).squeeze(1)
    # the solve runs on detached inputs; gradients reach a, b, M only through reg_cost (envelope theorem)
    a_s, b_s, M_s = a.detach()[rows], b.detach()[cols], M.detach()[rows][:, cols]
    if k * len(cols) < len(rows):
        raise ValueError(f"k must be >= ceil(n_sources / n_targets) = {math.ceil(len(rows) / len(cols))} for a "
                         f"feasible plan (k * m >= n over the supports), got {k}")
    dual = formulation == "dual"

    with torch.enable_grad():
        # Start from the unregularised-dual guess f = 0, g_j = min_i M_ij, which makes every column touch >= 1 row.
        f = torch.zeros_like(a_s)
        g = M_s.amin(0) if dual else torch.zeros(0, dtype=a.dtype, device=a.device)
        z = torch.cat([f, g]).detach().requires_grad_(True)
        ns = len(rows)

        def closure():
            z.grad = None
            ff, gg = z[:ns].detach(), z[ns:].detach()
            if dual:
                X = ff[:, None] + gg[None, :] - M_s
                mask = top_k_mask(X, k)
                Xp = torch.where(mask, X.clamp(min=0), torch.zeros_like(X))
                T = Xp / reg
                obj = ff @ a_s + gg @ b_s - (Xp * Xp).sum() / (2 * reg)
                grad = torch.cat([a_s - T.sum(1), b_s - T.sum(0)])
            else:
                T, _ = _semi_dual_plan(ff, b_s, M_s, reg, k)
                obj = ff @ a_s - ((ff[:, None] - M_s) * T).sum() + 0.5 * reg * (T * T).sum()
                grad = a_s - T.sum(1)
            z.grad = -grad  # maximise the concave (semi-)dual = minimise its negative
            return -obj

        def make_opt(line_search):
            return torch.optim.LBFGS([z], lr=1, max_iter=check_every, history_size=history_size,
                                     line_search_fn=line_search, tolerance_grad=0.0, tolerance_change=0.0)

        opt, switched = make_opt("strong_wolfe"), False
        history: list[tuple[int, float]] = []
        n_iter, converged, stale = 0, False, 0
        best = (math.inf, None)
        while True:
            T, ff, gg = _plan_of(z.detach(), ns, a_s, b_s, M_s, reg, k, dual)
            err = _marginal_error(T, a_s, b_s)
            if not math.isfinite(err) or not bool(torch.isfinite(T).all()):
                raise FloatingPointError(
                    f"sparsity_constrained_ot produced NaN/inf at iteration {n_iter}; rescale M, increase reg or "
                    f"use float64")
            history.append((n_iter, err))
            if err < best[0]:
                best, stale = (err, z.detach().clone()), 0
            elif switched:
                stale += 1
            if err <= tol:
                converged = True
                break
            if n_iter >= max_iter or stale >= 5:
                break
            before = opt.state[z].get("n_iter", 0)
            opt.param_groups[0]["max_iter"] = min(check_every, max_iter - n_iter)
            opt.step(closure)
            done = opt.state[z].get("n_iter", 0) - before
            n_iter += max(done, 1)
            if not switched and (done == 0 or opt.state[z].get("t", 1.0) == 0):
                # The strong-Wolfe search compares objective values, which stop changing in floating point
                # long before the gradient (the marginal residual) is small: go on with unit L-BFGS steps, which
                # need no decrease test; the best iterate seen is returned.
                opt, switched = make_opt(None), True
        T, ff, gg = _plan_of(best[1], ns, a_s, b_s, M_s, reg, k, dual)
        err = best[0]

    plan = M.new_zeros((n, m))
    plan[rows[:, None], cols[None, :]] = T
    f_full = a.new_full((n,), -math.inf).index_copy(0, rows, ff)
    g_full = a.new_full((m,), -math.inf).index_copy(0, cols, gg)
    if not converged:
        warnings.warn(
            f"sparsity_constrained_ot did not converge: marginal error {err:.3e} > tol={tol:.1e} after {n_iter} "
            f"iterations; increase max_iter (or reg, or tol)", ConvergenceWarning, stacklevel=2)
    return OTResult(
        plan=plan, f=f_full, g=g_full, cost=(plan * M.detach()).sum(), n_iter=n_iter, marginal_error=err,
        converged=converged, n_sinkhorn=0, n_newton=0, n_cg=0,
        error_history=torch.tensor([e for _, e in history], dtype=torch.float64),
        history_iter=torch.tensor([i for i, _ in history], dtype=torch.int64),
        reg_cost=_dual_value(a[rows], b[cols], M[rows][:, cols], ff.detach(), gg.detach(), reg, k),
    )


def _dual_value(a, b, M, f, g, reg, k):
    # Envelope theorem: with (f, g) optimal and the top-k support held fixed, d/dM = plan, d/da = f, d/db = g.
    X = f[:, None] + g[None, :] - M
    Xp = torch.where(top_k_mask(X.detach(), k), X.clamp(min=0), torch.zeros_like(X))
    return a @ f + b @ g - (Xp * Xp).sum() / (2 * reg)


def _plan_of(z, ns, a_s, b_s, M_s, reg, k, dual):
    f = z[:ns]
    if dual:
        g = z[ns:]
        return _dual_plan(f, g, M_s, reg, k), f, g
    T, g = _semi_dual_plan(f, b_s, M_s, reg, k)
    return T, f, g
