"""Claim check for Lion-K (Chen, Liu, Liang, Liu, 2023): decoupled weight decay makes Lion solve a constrained problem.

The paper's Lyapunov analysis: Lion-K with decoupled weight decay :math:`\\lambda` minimises
:math:`f(x) + \\tfrac1\\lambda \\mathcal K^*(\\lambda x)`. For Lion (:math:`\\mathcal K = \\|\\cdot\\|_1`) the conjugate
is the indicator of the unit :math:`\\ell_\\infty` ball, so Lion solves :math:`\\min f` s.t.
:math:`\\|x\\|_\\infty \\le 1/\\lambda`; for :math:`\\mathcal K = \\|\\cdot\\|_2` it is the Euclidean ball
:math:`\\|x\\|_2 \\le 1/\\lambda`. The iterate first enters the feasible set (phase 1), then minimises :math:`f`
inside it (phase 2).

What changed from the first version (review of issue 8): the old criterion (1), the per-step contraction
:math:`e_{t+1} \\le (1 - \\epsilon_t\\lambda) e_t` of the box excess, holds for every sign vector by the triangle
inequality, so it could not fail; it is now only reported. The objective was least squares; it is now a
nonlinear one (logistic regression), and the decisive check is convergence to the *constrained* optimum, which
Lion without weight decay (the control) must miss because the unconstrained optimum lies outside the set. The
smoke budget used to end with the iterate still hovering on the box face (``not_reproduced``); the larger smoke
learning rate below lets it settle.

Setup, fixed before the first run: logistic regression :math:`f(x) = \\frac1n\\sum_i \\log(1 + e^{-y_i a_i^\\top
x})`, :math:`n = 200`, :math:`d = 10`, :math:`a_i \\sim \\mathcal N(0, I)`, labels from a teacher
:math:`w \\sim U[-4, 4]^d` through :math:`\\mathrm{sign}(a_i^\\top w + 0.5\\,\\xi_i)` with 10% flipped (not separable,
so the unconstrained optimum is finite; its :math:`\\ell_\\infty` norm is about 0.9 or more), :math:`\\lambda = 2`
(radius 0.5: the unconstrained optimum lies outside both sets). Start :math:`x_0 = 1.5\\,\\mathrm{sign}(\\cdot)`,
outside the sets. Betas (0.9, 0.99), learning rate :math:`\\epsilon` cosine-decayed to 0 over :math:`T` steps,
full-batch gradients, float64. The reference constrained optima are computed to machine precision (projected
Newton for the box, the multiplier of the ball by bisection; :func:`constrained_optimum`), their projected-gradient
residual reported.
"""

from __future__ import annotations

import math
import time

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, paired_comparison
from paperzoo.data.digits import single_thread
from paperzoo.optim import Lion, LionK

N, D, LAMBDA = 200, 10, 2.0
RADIUS = 1.0 / LAMBDA
REL_TOL, FEAS_TOL = 1e-3, 1e-9


def logistic_problem(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A: (N, D), y: (N,))`` of the claim's logistic regression (labels in {-1, 1})."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(N, D, generator=g, dtype=torch.float64)
    w = (torch.rand(D, generator=g, dtype=torch.float64) * 2 - 1) * 4
    y = torch.sign(A @ w + 0.5 * torch.randn(N, generator=g, dtype=torch.float64))
    flip = torch.rand(N, generator=g) < 0.1
    y[flip] = -y[flip]
    return A, y


def _value(x, A, y):
    return torch.nn.functional.softplus(-(A @ x) * y).mean()


def _grad(x, A, y):
    return A.T @ (-torch.sigmoid(-(A @ x) * y) * y) / A.shape[0]


def project(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Euclidean projection onto the box ``||x||_inf <= 1/lambda`` (``kind="box"``) or ball (``"ball"``)."""
    if kind == "box":
        return x.clamp(-RADIUS, RADIUS)
    norm = float(x.norm())
    return x if norm <= RADIUS else x * (RADIUS / norm)


def _hessian(x, A, y):
    p = torch.sigmoid((A @ x) * y)
    return (A.T * (p * (1 - p))) @ A / A.shape[0]


def _newton(A, y, mu: float = 0.0, x=None, tol: float = 1e-14, max_iter: int = 100):
    """Minimiser of ``f + mu/2 ||x||^2`` by damped Newton (``mu = 0``: the unconstrained optimum, finite because
    the data are not separable)."""
    x = torch.zeros(A.shape[1], dtype=A.dtype) if x is None else x.clone()
    eye = torch.eye(A.shape[1], dtype=A.dtype)
    for _ in range(max_iter):
        g = _grad(x, A, y) + mu * x
        if float(g.norm()) <= tol:
            break
        x = x - torch.linalg.solve(_hessian(x, A, y) + mu * eye, g)
    return x


def kkt_residual(x, A, y, kind: str) -> float:
    """``||x - P(x - grad f(x))||``: zero exactly at the minimiser of ``f`` over the set."""
    return float((x - project(x - _grad(x, A, y), kind)).norm())


def constrained_optimum(A, y, kind: str, *, max_iter: int = 200):
    """The minimiser of ``f`` over the box or the ball, to machine precision; returns ``(x, kkt_residual)``.

    Box: projected Newton (Bertsekas, 1982): Newton steps on the coordinates not held at a face by the gradient,
    projected back, with Armijo backtracking. Ball: the multiplier ``mu`` with ``||x(mu)|| = 1/lambda``, where
    ``x(mu)`` minimises ``f + mu/2 ||x||^2``, found by bisection in ``log mu``.
    """
    if kind == "ball":
        lo, hi = 0.0, 1.0
        while float(_newton(A, y, hi).norm()) > RADIUS:
            hi *= 4.0
        x = None
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            x = _newton(A, y, mid, x)
            lo, hi = (mid, hi) if float(x.norm()) > RADIUS else (lo, mid)
            if hi - lo <= 1e-15 * hi:
                break
        x = project(x, "ball")
        return x, kkt_residual(x, A, y, kind)
    x = torch.zeros(A.shape[1], dtype=A.dtype)
    for _ in range(max_iter):
        g = _grad(x, A, y)
        if kkt_residual(x, A, y, kind) <= 1e-15:
            break
        held = ((x >= RADIUS) & (g < 0)) | ((x <= -RADIUS) & (g > 0))
        free = ~held
        step = torch.zeros_like(x)
        H = _hessian(x, A, y)
        step[free] = torch.linalg.solve(H[free][:, free], g[free])
        step[held] = g[held]
        alpha, f0 = 1.0, float(_value(x, A, y))
        while alpha > 1e-12:
            x_new = project(x - alpha * step, kind)
            if float(_value(x_new, A, y)) <= f0 + 1e-4 * float(g @ (x_new - x)):
                break
            alpha *= 0.5
        if bool((x_new == x).all()):
            break
        x = x_new
    return x, kkt_residual(x, A, y, kind)


def _excess(x, kind):
    size = float(x.abs().max()) if kind == "box" else float(x.norm())
    return max(size - RADIUS, 0.0)


def run_lion(make, A, y, x0, steps, kind="box"):
    """Full-batch run of ``make([x])`` with the lr cosine-decayed to 0; returns the final iterate and the first
    step at which it lies in the set (``None`` if never)."""
    x = x0.clone().requires_grad_(True)
    opt = make([x])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    entered = None
    for t in range(steps):
        with torch.no_grad():
            x.grad = _grad(x, A, y)
        opt.step()
        sched.step()
        if entered is None and _excess(x.detach(), kind) <= FEAS_TOL:
            entered = t + 1
    return x.detach(), entered


def _criterion(x, x_ref, kind):
    rel = float((x - x_ref).norm() / x_ref.norm())
    excess = _excess(x, kind)
    return rel, excess, bool(rel <= REL_TOL and excess <= FEAS_TOL)


@claim(
    "lion-constrained",
    statement="Lion with decoupled weight decay lambda converges to the minimiser of f over the box "
              "||x||_inf <= 1/lambda (and Lion-K with K = ||.||_2 to the minimiser over the ball ||x||_2 <= "
              "1/lambda), also for a nonlinear f whose unconstrained minimiser lies outside the set.",
    criterion="Logistic regression n = 200, d = 10 (10% label noise), lambda = 2 (radius 0.5; the unconstrained "
              "optimum lies outside), x0 = 1.5 sign(.) outside the set, betas (0.9, 0.99), lr 0.03 (smoke) / 0.01 "
              "(full) cosine-decayed to 0 over T = 1,000 (smoke) / 10,000 (full) full-batch steps, 3 (smoke) / 5 "
              "(full) problem seeds. Passes if for every seed and both K (sign: box; l2: ball) the final iterate "
              "is within relative distance 1e-3 of the constrained optimum (Newton-type reference, projected-"
              "gradient residual <= 1e-12) and violates the set by <= 1e-9. Control: Lion with lambda = 0 through "
              "the same criterion (against the box optimum) must fail. Headline: paired log10 relative distance, Lion "
              "(lambda = 2) vs Lion (lambda = 0), margin 1 (a factor 10).",
    baseline="Lion without weight decay (lambda = 0; the control) and torch.optim.AdamW with weight_decay 2 (reported)",
    threads=1,  # thousands of 200 x 10 mat-vecs: thread hand-offs cost more than the arithmetic
)
def converges_to_constrained_optimum(ctx: ClaimContext) -> ClaimResult:
    steps = ctx.pick(smoke=1_000, full=10_000)
    lr = ctx.pick(smoke=0.03, full=0.01)
    seeds = [s % 2**31 for s in ctx.seeds(ctx.pick(smoke=3, full=5))]
    start = time.perf_counter()
    rows = []
    with single_thread():
        for s in seeds:
            A, y = logistic_problem(s)
            x0 = 1.5 * torch.sign(torch.randn(D, generator=torch.Generator().manual_seed(s + 1), dtype=torch.float64))
            refs = {kind: constrained_optimum(A, y, kind) for kind in ("box", "ball")}
            runs = {
                "box": run_lion(lambda ps: Lion(ps, lr=lr, weight_decay=LAMBDA), A, y, x0, steps),
                "ball": run_lion(lambda ps: LionK(ps, lr=lr, weight_decay=LAMBDA, grad_K="l2"), A, y, x0, steps,
                                 "ball"),
                "no_decay": run_lion(lambda ps: Lion(ps, lr=lr, weight_decay=0.0), A, y, x0, steps),
                "adamw": run_lion(lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=LAMBDA), A, y, x0, steps),
            }
            row = {"seed": s, "ref_residual": max(r[1] for r in refs.values())}
            for name, (x, entered) in runs.items():
                kind = "ball" if name == "ball" else "box"
                rel, excess, ok = _criterion(x, refs[kind][0], kind)
                row[name] = dict(rel_distance=rel, excess=excess, passes=ok, entered_set_at=entered,
                                 objective_gap=float(_value(x, A, y) - _value(refs[kind][0], A, y)))
            row["unconstrained_optimum_inf_norm"] = float(_newton(A, y).abs().max())
            rows.append(row)
    seconds = time.perf_counter() - start

    reference_ok = all(r["ref_residual"] <= 1e-12 for r in rows)
    passed = reference_ok and all(r["box"]["passes"] and r["ball"]["passes"] for r in rows)
    control_passed = all(r["no_decay"]["passes"] for r in rows)
    log_rel = {k: [math.log10(max(r[k]["rel_distance"], 1e-16)) for r in rows] for k in ("box", "no_decay")}
    cmp = paired_comparison(log_rel["box"], log_rel["no_decay"], margin=1.0)
    control = Control("Lion with lambda = 0 (no decoupled weight decay) through the same criterion",
                      control_passed,
                      {"rel_distance": [r["no_decay"]["rel_distance"] for r in rows],
                       "excess": [r["no_decay"]["excess"] for r in rows]})
    metrics = dict(
        steps=steps, lr=lr, lam=LAMBDA, num_seeds=len(seeds), rel_tol=REL_TOL, feas_tol=FEAS_TOL,
        box_rel_distance=[r["box"]["rel_distance"] for r in rows], box_excess=[r["box"]["excess"] for r in rows],
        ball_rel_distance=[r["ball"]["rel_distance"] for r in rows], ball_excess=[r["ball"]["excess"] for r in rows],
        box_objective_gap=[r["box"]["objective_gap"] for r in rows],
        steps_to_enter_box=[r["box"]["entered_set_at"] for r in rows],
        unconstrained_optimum_inf_norm=[r["unconstrained_optimum_inf_norm"] for r in rows],
        reference_residual_max=max(r["ref_residual"] for r in rows), paired_log10_distance=cmp.as_metrics(),
        seconds=round(seconds, 2))
    baseline = dict(no_decay_rel_distance=control.metrics["rel_distance"], no_decay_excess=control.metrics["excess"],
                    adamw_rel_distance=[r["adamw"]["rel_distance"] for r in rows],
                    adamw_excess=[r["adamw"]["excess"] for r in rows])
    headline = (cmp.headline("log10 rel. distance to the box optimum", "Lion lambda=2", "Lion lambda=0")
                + f"; Lion-K l2 to the ball optimum: max {max(metrics['ball_rel_distance']):.1e}")
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)
