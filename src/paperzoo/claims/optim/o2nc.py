"""Claim check for "Optimal Stochastic Non-smooth Non-convex Optimization through Online-to-Non-convex
Conversion" (Cutkosky, Mehta, Orabona, 2023).

The paper's guarantee is about :math:`(\\delta, \\epsilon)`-Goldstein stationarity of the window averages of the
conversion, found with :math:`O(\\delta^{-1}\\epsilon^{-3})` stochastic gradients. Scaled-down analog: the
nonconvex penalised SVM of :func:`paperzoo.data.online_convex.penalized_svm_problem` (digits, ``d = 65``,
nonsmooth hinge), stochastic subgradients on mini-batches of 16, from :math:`x_0 = 0`, :math:`\\delta = 0.1`.
O2NC uses the analysis' scaling :math:`D = \\delta / T` with window :math:`T = 50` and outputs the last completed
window's average; SGD outputs its last iterate. Stationarity: the norm of the minimum-norm convex combination of
exact subgradients at the output and at 99 (smoke: 19) points drawn uniformly from its :math:`\\delta`-ball
(:func:`paperzoo.optim.goldstein_stationarity`), the same sample points for every run.

Setup, fixed before the first run: every method gets the same number of gradient queries, 200 (smoke) / 3,000
(full), and 6 seeds (batches and O2NC's segment draws), 3 for selection and 3 for the verdict. The measure is a
property of the optimiser's output with no held-out split to read: each method's learning rate (for O2NC its
online learner's) is chosen by :func:`paperzoo.claims.optim._tuning.tune_over_seeds` on the mean Goldstein
epsilon over the selection seeds, from the same grid {1e-3, 3e-3, 1e-2, 3e-2, 1e-1} (smoke: {1e-2, 3e-2}),
extended past a winning edge (at most 2 extensions, 1 in smoke; bounds 1e-5..10), and rerun on the fresh verdict
seeds, where O2NC's paired mean gain in log epsilon over SGD must exceed margin log(1/0.9) (at least 10% smaller)
and 2 SE. Control (the baseline with the method's output rule): SGD whose output is the average of its last
T = 50 iterates, tuned on that output the same way and put through the same criterion; if it passes too, the
gain is from averaging the iterates, not from the online-to-nonconvex conversion.

Changed from the first version (not_reproduced): that version chose each learning rate by the same measure on
the same seeds that decided the verdict and compared means (<=) without a noise estimate or control. Now:
disjoint selection and verdict seeds, an extending grid, a paired log margin beyond 2 SE, and the averaged-SGD
control. The full budget went from 5,000 to 3,000 queries so that selection and verdict runs fit about 60 s on
one core (each O2NC step draws its segment point from a freshly seeded generator, which dominates its cost).
"""

from __future__ import annotations

import math
import time

import torch

from paperzoo.claims.optim._tuning import edge_note, seed_of, selection_metrics, tune_over_seeds, values
from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import fmt_mean_std, paired_comparison, paired_control
from paperzoo.data.online_convex import penalized_svm_problem
from paperzoo.optim.o2nc import O2NC, goldstein_stationarity

DELTA = 0.1
WINDOW = 50
GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
BATCH = 16
MARGIN = math.log(1 / 0.9)
CONTROL = "SGD window average"


def _outputs(prob, method: str, lr: float, seed: int, steps: int) -> dict[str, torch.Tensor]:
    """O2NC's last window average, or SGD's last iterate and the average of its last ``WINDOW`` iterates."""
    seed = seed_of(seed)
    x = torch.zeros(prob.A.shape[1], dtype=torch.float64, requires_grad=True)
    if method == "O2NC":
        opt = O2NC([x], lr=lr, D=DELTA / WINDOW, window=WINDOW, seed=seed)
    else:
        opt = torch.optim.SGD([x], lr=lr)
    batches = torch.Generator().manual_seed(seed)
    tail = torch.zeros_like(x, requires_grad=False)
    for t in range(steps):
        x.grad = prob.component_grad(x.detach(), prob.sample(BATCH, batches))
        opt.step()
        if t >= steps - WINDOW:
            tail += x.detach()
    if method == "O2NC":
        return {"O2NC": opt.window_average()[0]}
    return {"SGD": x.detach().clone(), CONTROL: tail / WINDOW}


def _eps(prob, x: torch.Tensor, n_samples: int) -> dict:
    if not bool(torch.isfinite(x).all()):
        return dict(eps=math.inf, log_eps=math.inf, objective=math.inf)
    eps = goldstein_stationarity(prob.grad, x, DELTA, n_samples=n_samples,
                                 generator=torch.Generator().manual_seed(2024))
    return dict(eps=eps, log_eps=math.log(eps) if eps > 0 else -math.inf, objective=float(prob.value(x)))


@claim(
    "o2nc",
    statement="With the same stochastic-gradient budget, the online-to-nonconvex conversion (projected OGD "
              "learner, random point on each segment, window averaging) finds a point with a smaller "
              "(delta, epsilon)-Goldstein stationarity epsilon than SGD on a nonsmooth nonconvex problem.",
    criterion="Penalised-SVM digits problem (d = 65, batch 16, delta = 0.1, x0 = 0), the same number of gradient "
              "queries (smoke 200, full 3,000), 6 seeds (3 selection, 3 verdict). Each method's lr is tuned on "
              "the mean Goldstein epsilon (min-norm convex combination of 100 (smoke 20) exact subgradients in the "
              "delta-ball) of its output over the selection seeds from the same grid {1e-3, 3e-3, 1e-2, 3e-2, "
              "1e-1} (2 points in smoke), extended past a winning edge, and rerun on the verdict seeds. Passes "
              "if the paired mean gain in log epsilon of O2NC's last window average (T = 50, D = delta/T) over "
              "SGD's last iterate exceeds margin log(1/0.9) and 2 SE. Control, which must fail the same "
              "criterion: SGD whose output is the average of its last 50 iterates, tuned the same way.",
    baseline="torch.optim.SGD (no momentum), last iterate, same budget, seeds and grid size",
    timeout={"smoke": 120.0, "full": 900.0},
    threads=1,
)
def goldstein_vs_sgd(ctx: ClaimContext) -> ClaimResult:
    start = time.perf_counter()
    steps = ctx.pick(smoke=200, full=3_000)
    seeds = ctx.seeds(6)
    grid = ctx.pick(smoke=GRID[2:4], full=GRID)
    prob = penalized_svm_problem()
    n_samples = ctx.pick(smoke=20, full=100)
    cache: dict = {}

    def run(name, lr, seed):
        method = "O2NC" if name == "O2NC" else "SGD"  # SGD and its averaged output share one trajectory
        if (method, lr, seed) not in cache:
            cache[(method, lr, seed)] = _outputs(prob, method, lr, seed, steps)
        return _eps(prob, cache[(method, lr, seed)][name], n_samples)

    sel = tune_over_seeds(run, {n: grid for n in ("O2NC", "SGD", CONTROL)}, seeds[:3], score="eps",
                          verdict_seeds=seeds[3:], bounds=(1e-5, 10.0), max_extensions=ctx.pick(smoke=1, full=2))
    logs = {n: values(s, "log_eps") for n, s in sel.items()}
    eps = {n: values(s, "eps") for n, s in sel.items()}
    cmp = paired_comparison(logs["O2NC"], logs["SGD"], margin=MARGIN)
    control, ctrl = paired_control("SGD with O2NC's output rule (the average of its last 50 iterates), tuned on a "
                                   "grid of the same size, through the same criterion against SGD's last iterate",
                                   logs[CONTROL], logs["SGD"], margin=MARGIN, goldstein_eps=eps[CONTROL])
    headline = (f"Goldstein eps {fmt_mean_std(eps['O2NC'])} (O2NC window average) vs {fmt_mean_std(eps['SGD'])} "
                f"(SGD last iterate), 3 verdict seeds, log gain {cmp.diff_mean:.3g} ± {cmp.diff_se:.2g} SE (margin "
                f"{MARGIN:.3g}); control averaged SGD {fmt_mean_std(eps[CONTROL])}, log gain {ctrl.diff_mean:.3g} ± "
                f"{ctrl.diff_se:.2g} SE" + edge_note(sel))
    metrics = dict(gradient_queries=steps, delta=DELTA, window=WINDOW, margin=MARGIN, o2nc_vs_sgd=cmp.as_metrics(),
                   goldstein_eps=eps, objective={n: values(s, "objective") for n, s in sel.items()},
                   **selection_metrics(sel), seconds=round(time.perf_counter() - start, 2))
    return ClaimResult.decide(cmp.wins, metrics=metrics, baseline=dict(SGD=eps["SGD"]), headline=headline,
                              control=control)
