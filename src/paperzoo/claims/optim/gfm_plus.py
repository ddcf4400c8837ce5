"""Claim check for "Faster Gradient-Free Algorithms for Nonsmooth Nonconvex Stochastic Optimization" (Chen, Xu,
Luo, 2023).

Problem: the nonconvex penalised SVM of :func:`paperzoo.data.online_convex.penalized_svm_problem` (digits, even
vs odd, ``d = 65``, hinge loss plus :math:`0.05\\sum_j x_j^2/(1 + x_j^2)`), one sample per oracle call, from
:math:`x_0 = 0`, smoothing radius :math:`\\delta = 0.1`. GFM uses mini-batches of 16; GFM+ uses :math:`b' = 256`
and :math:`b = m = 16 = \\sqrt{b'}` (the paper's scaling). Stationarity is measured at the last iterate as
:math:`\\|\\nabla f_\\delta(x)\\|`, the norm of an element of the :math:`\\delta`-Goldstein subdifferential,
estimated from the exact subgradients at 2,000 (smoke: 500) points drawn uniformly from the :math:`\\delta`-ball
(the same points for every run; standard error well below the differences measured).

Setup, fixed before the first run: every method gets the same function-evaluation budget, 1e4 (smoke) / 2e5
(full), and 6 seeds (directions and samples), 3 for selection and 3 for the verdict. The measure is a property of
the optimiser's output, with no held-out split to read: each method's learning rate is chosen by
:func:`paperzoo.claims.optim._tuning.tune_over_seeds` on the mean measure over the selection seeds, from the same
grid {1e-4, 3e-4, 1e-3, 3e-3} (smoke: {3e-4, 1e-3}), extended past a winning edge (at most 3 extensions, 1 in
smoke; bounds 1e-6..1), and rerun on the fresh verdict seeds, where GFM+'s paired mean gain in the log measure
over GFM must exceed margin log(1/0.9) (at least 10% smaller) and 2 SE. Control (the key ingredient removed):
GFM+ with period m = 1, i.e. a fresh big batch of b' = 256 at every iteration and the recursive correction never
used (GFM at batch 256), tuned the same way and put through the same criterion; if it passes too, the gain is
from the larger batch, not from variance reduction.

Changed from the first version (not_reproduced): that version chose each learning rate by the same measure on
the same seeds that decided the verdict and compared means without a noise estimate or control. Now: disjoint
selection and verdict seeds, an extending grid, a paired log margin beyond 2 SE, and the m = 1 control. The full
budget went from 5e5 to 2e5 evaluations so that selection, verdict and control runs fit about 60 s on one core.
"""

from __future__ import annotations

import math
import time

import torch

from paperzoo.claims.optim._tuning import edge_note, seed_of, selection_metrics, tune_over_seeds, values
from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import fmt_mean_std, paired_comparison, paired_control
from paperzoo.data.online_convex import penalized_svm_problem
from paperzoo.optim.gradient_free import solve_gfm, solve_gfm_plus, uniform_sphere

DELTA = 0.1
GRID = (1e-4, 3e-4, 1e-3, 3e-3)
MARGIN = math.log(1 / 0.9)
CONTROL = "GFM+ m=1"


def smoothed_grad_norm(prob, x: torch.Tensor, n: int = 2000, seed: int = 12345) -> float:
    """:math:`\\|\\nabla f_\\delta(x)\\|` from exact subgradients at ``n`` uniform points of the delta-ball."""
    g = torch.Generator().manual_seed(seed)
    d = x.numel()
    u = uniform_sphere(n, d, generator=g) * torch.rand(n, 1, generator=g, dtype=torch.float64) ** (1 / d)
    return float(prob.grad(x + DELTA * u).mean(0).norm())


def _run(prob, name: str, lr: float, seed: int, budget: int, points: int) -> dict:
    x0 = torch.zeros(prob.A.shape[1], dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed_of(seed))
    if name == "GFM":
        res = solve_gfm(prob.component, x0, sample=prob.sample, delta=DELTA, lr=lr, batch_size=16, max_iter=10**9,
                        max_evals=budget, generator=gen)
    else:
        res = solve_gfm_plus(prob.component, x0, sample=prob.sample, delta=DELTA, lr=lr, big_batch=256,
                             batch_size=16, period=16 if name == "GFM+" else 1, max_iter=10**9, max_evals=budget,
                             generator=gen)
    norm = smoothed_grad_norm(prob, res.x, points) if bool(torch.isfinite(res.x).all()) else math.inf
    if not math.isfinite(norm):
        return dict(norm=math.inf, log_norm=math.inf, objective=math.inf)
    return dict(norm=norm, log_norm=math.log(norm), objective=float(prob.value(res.x)))


@claim(
    "gfm-plus",
    statement="At an equal budget of function evaluations, GFM+ (recursive variance-reduced two-point "
              "estimates) reaches a smaller delta-Goldstein stationarity measure than GFM on a nonsmooth "
              "nonconvex stochastic problem.",
    criterion="Penalised-SVM digits problem (d = 65, delta = 0.1, x0 = 0), equal evaluation budget (smoke 1e4, full "
              "2e5), 6 seeds (3 selection, 3 verdict). Each method's lr is tuned on the mean ||grad f_delta(x_T)|| "
              "(last iterate) over the selection seeds from the same grid {1e-4, 3e-4, 1e-3, 3e-3} (2 points in "
              "smoke), extended past a winning edge, and rerun on the verdict seeds. Passes if GFM+'s (b'=256, "
              "b=m=16) paired mean gain in log ||grad f_delta(x_T)|| over GFM (batch 16) on the verdict seeds "
              "exceeds margin log(1/0.9) and 2 SE. Control, which must fail the same criterion: GFM+ with m = 1 "
              "(a fresh big batch every iteration, no recursive correction), tuned the same way.",
    baseline="GFM (Lin, Zheng and Jordan, 2022): SGD on f_delta with mini-batched two-point estimates, same budget, "
             "seeds and grid size",
    timeout={"smoke": 120.0, "full": 900.0},
    threads=1,
)
def equal_budget_stationarity(ctx: ClaimContext) -> ClaimResult:
    start = time.perf_counter()
    budget = ctx.pick(smoke=10_000, full=200_000)
    seeds = ctx.seeds(6)
    grid = ctx.pick(smoke=GRID[1:3], full=GRID)
    prob = penalized_svm_problem()
    points = ctx.pick(smoke=500, full=2000)
    sel = tune_over_seeds(lambda name, lr, seed: _run(prob, name, lr, seed, budget, points),
                          {n: grid for n in ("GFM+", "GFM", CONTROL)}, seeds[:3], score="norm",
                          verdict_seeds=seeds[3:], bounds=(1e-6, 1.0), max_extensions=ctx.pick(smoke=1, full=3))
    logs = {n: values(s, "log_norm") for n, s in sel.items()}
    norm = {n: values(s, "norm") for n, s in sel.items()}
    cmp = paired_comparison(logs["GFM+"], logs["GFM"], margin=MARGIN)
    control, ctrl = paired_control("GFM+ with period m = 1 (a fresh batch of 256 every iteration: GFM at batch 256, "
                                   "no recursive variance reduction), tuned on a grid of the same size, through the "
                                   "same criterion against GFM",
                                   logs[CONTROL], logs["GFM"], margin=MARGIN, smoothed_grad_norm=norm[CONTROL])
    headline = (f"||grad f_delta(x_T)|| {fmt_mean_std(norm['GFM+'])} (GFM+) vs {fmt_mean_std(norm['GFM'])} (GFM), "
                f"3 verdict seeds, log gain {cmp.diff_mean:.3g} ± {cmp.diff_se:.2g} SE (margin {MARGIN:.3g}); "
                f"control m=1 {fmt_mean_std(norm[CONTROL])}, log gain {ctrl.diff_mean:.3g} ± {ctrl.diff_se:.2g} SE"
                + edge_note(sel))
    metrics = dict(budget_evals=budget, delta=DELTA, margin=MARGIN, gfm_plus_vs_gfm=cmp.as_metrics(),
                   smoothed_grad_norm=norm, objective={n: values(s, "objective") for n, s in sel.items()},
                   start_smoothed_grad_norm=smoothed_grad_norm(prob, torch.zeros(prob.A.shape[1], dtype=torch.float64)),
                   **selection_metrics(sel), seconds=round(time.perf_counter() - start, 2))
    return ClaimResult.decide(cmp.wins, metrics=metrics, baseline=dict(GFM=norm["GFM"]), headline=headline,
                              control=control)
