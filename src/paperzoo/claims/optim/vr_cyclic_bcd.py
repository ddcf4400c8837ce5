"""Claim check for Cyclic Block Coordinate Descent With Variance Reduction for Composite Nonconvex Optimization.

Setup, fixed before the first run: L1-regularised logistic regression with the nonconvex penalty
:math:`\\alpha\\sum_k x_k^2/(1 + x_k^2)` (alpha = 0.1) as the smooth part, lambda = 1e-3 on the L1 part; n = 400
(smoke) / 2,000 (full) examples, d = 40 Gaussian features, labels from a random logistic model; m = 4 blocks.
Methods (:func:`paperzoo.optim.solve_cyclic_bcd`): VR-CD (batch and refresh period defaults,
b = ceil(sqrt n), p = ceil(n/b)), deterministic cyclic C-PGD, randomized BCD, and non-VR stochastic cyclic BCD
(same batch). Step grid {0.25, 0.5, 1, 2} / L with L = ||A||^2/(4n) + 2 alpha, shared by all methods; each method
is scored at its best step (fewest data passes to the target). Target: proximal gradient mapping norm
<= 1e-4 (smoke) / 1e-6 (full) times its value at x0 = 0. Budget 30 (smoke) / 100 (full) data passes. 3 seeds.

Issue 8 rework (measurement unchanged). The step was picked per method *and per seed* on the run it then
scored. Now one step per method is selected by :func:`paperzoo.core.evidence.tune` on 2 *tuning* instances
(mean data passes to the target, a miss counting as the budget), the grid extended past a winning edge within
[1/64, 16]/L, and the criterion is read on 3 fresh *test* instances (their own data and sampling). "Fewer passes"
is now a paired comparison over the test instances of log10 passes (margin 0) beyond two standard errors (it was
a comparison of seed means). The discriminating control is VR-CD without its key ingredient, the variance
reduction: non-VR stochastic cyclic BCD through the same criterion; it must fail.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison, tune
from paperzoo.optim.cyclic_bcd import solve_cyclic_bcd
from paperzoo.optim.subgradient import soft_threshold

D, M, ALPHA, LAM = 40, 4, 0.1, 1e-3
STEPS = (0.25, 0.5, 1.0, 2.0)
METHODS = ("vr_cyclic", "cyclic", "randomized", "cyclic_sgd")
STEP_BOUNDS = (1 / 64, 16.0)
NUM_TUNE, NUM_TEST = 2, 3


def _problem(seed, n):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, D, generator=g, dtype=torch.float64)
    w = torch.randn(D, generator=g, dtype=torch.float64) / D**0.5 * 3
    y = (torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(A @ w)).to(torch.float64)

    def grad_fn(x, idx, blk):
        Ai, yi = (A, y) if idx is None else (A[idx], y[idx])
        r = torch.sigmoid(Ai @ x) - yi
        xb = x[blk]
        return Ai[:, blk].T @ r / Ai.shape[0] + ALPHA * 2 * xb / (1 + xb * xb) ** 2

    L = float(torch.linalg.matrix_norm(A, ord=2)) ** 2 / (4 * n) + 2 * ALPHA
    return grad_fn, L, g


def _prox(v, step):
    return soft_threshold(v, step * LAM)


def passes_to_target(method, c, instance, n, budget, target):
    """Data passes until the gradient-mapping norm is <= target times its start (inf when missed or diverged)."""
    grad_fn, L, seed = instance
    b = math.ceil(math.sqrt(n))
    # epochs needed to spend the pass budget: VR-CD epochs are cheap between refreshes
    per_epoch = {"vr_cyclic": 2 * b / n + 1 / math.ceil(n / b), "cyclic_sgd": b / n}.get(method, 1.0)
    epochs = max(1, int(budget / per_epoch))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = solve_cyclic_bcd(grad_fn, _prox, torch.zeros(D, dtype=torch.float64), M, n=n, lr=c / L,
                                   method=method, generator=torch.Generator().manual_seed(seed + 1),
                                   max_iter=epochs, tol=0.0)
        except FloatingPointError:
            return math.inf
    rel = res.grad_mapping / res.grad_mapping[0]
    hit = torch.nonzero((rel <= target) & (res.data_passes <= budget))
    return float(res.data_passes[int(hit[0])]) if hit.numel() else math.inf


@claim(
    "vr-cyclic-bcd",
    statement="Cyclic proximal block coordinate descent with recursive variance reduction (VR-CD) reaches a given "
              "stationarity of a composite nonconvex finite sum with fewer data passes than its deterministic, "
              "randomized and non-variance-reduced counterparts.",
    criterion="L1 + nonconvex-regularised logistic regression, n=400 (smoke) / 2000 (full), d=40, 4 blocks, budget "
              "30 / 100 data passes, target: prox-gradient-mapping norm <= 1e-4 (smoke) / 1e-6 (full) of its initial "
              "value. One step per method tuned on 2 tuning instances by mean passes to the target (a miss counts "
              "as the budget), grid {0.25,0.5,1,2}/L extended past a winning edge within [1/64, 16]/L; criterion on "
              "3 fresh test instances. Passes if VR-CD reaches the target on every test instance and needs fewer "
              "passes than each of deterministic cyclic C-PGD, randomized BCD and non-VR stochastic cyclic BCD, "
              "paired on log10 passes (a miss counts as the budget) beyond 2 SE (margin 0). Control: non-VR "
              "stochastic cyclic BCD through the same criterion against C-PGD and randomized BCD; it must fail.",
    baseline="Deterministic cyclic proximal BCD (C-PGD), randomized proximal BCD, stochastic cyclic BCD without "
             "variance reduction; same grid size and pass budget",
    threads=1,  # many tiny tensor ops per step: thread hand-offs cost more than the arithmetic on a loaded machine
)
def passes_to_stationarity(ctx: ClaimContext) -> ClaimResult:
    n = ctx.pick(smoke=400, full=2000)
    budget = ctx.pick(smoke=30, full=100)
    target = ctx.pick(smoke=1e-4, full=1e-6)
    start = time.perf_counter()
    seeds = [s % (2**31) for s in ctx.seeds(NUM_TUNE + NUM_TEST)]
    instances = [_problem(s, n)[:2] + (s,) for s in seeds]
    tuning, testing = instances[:NUM_TUNE], instances[NUM_TUNE:]

    def evaluator(method):
        return lambda c: statistics.fmean(min(passes_to_target(method, c, inst, n, budget, target), budget)
                                          for inst in tuning)

    sel = tune({m: evaluator(m) for m in METHODS}, STEPS, bounds=STEP_BOUNDS)
    test = {m: [passes_to_target(m, sel[m].best, inst, n, budget, target) for inst in testing] for m in METHODS}
    seconds = time.perf_counter() - start

    def log_passes(m):
        return [math.log10(min(p, budget)) for p in test[m]]

    def criterion(method, baselines):
        reached = all(math.isfinite(p) for p in test[method])
        cmps = {b: paired_comparison(log_passes(method), log_passes(b)) for b in baselines}
        return reached and all(c.wins for c in cmps.values()), reached, cmps

    passed, vr_ok, cmps = criterion("vr_cyclic", METHODS[1:])
    c_passed, c_reached, c_cmps = criterion("cyclic_sgd", ("cyclic", "randomized"))
    control = Control("non-VR stochastic cyclic BCD (VR-CD without variance reduction) through the same criterion "
                      "against C-PGD and randomized BCD", c_passed,
                      dict(reached_all=c_reached, paired_log10_passes={b: c.as_metrics() for b, c in c_cmps.items()}))

    def shown(m):
        return [p if math.isfinite(p) else "missed" for p in test[m]]

    def fmt(m):
        return fmt_mean_std([min(p, budget) for p in test[m]])

    worst = min(cmps.items(), key=lambda kv: kv[1].diff_mean)
    edge = [m for m in METHODS if sel[m].at_edge]
    headline = (f"data passes to {target:g} stationarity (a miss = {budget}): {fmt('vr_cyclic')} (VR-CD) vs "
                f"{fmt('cyclic')} (C-PGD), {fmt('randomized')} (randomized), {fmt('cyclic_sgd')} (SGD-cyclic); "
                f"{NUM_TEST} test instances, smallest paired log10 gain {worst[1].diff_mean:.3f} ± "
                f"{worst[1].diff_se:.3f} SE vs {worst[0]} (margin 0); steps x 1/L "
                + ", ".join(f"{m} {sel[m].best:g}" for m in METHODS)
                + (f"; at a bound: {', '.join(edge)}" if edge else ""))
    return ClaimResult.decide(
        passed,
        metrics={"passes": statistics.fmean(min(p, budget) for p in test["vr_cyclic"]), "reached_all": vr_ok,
                 "per_test_instance": {m: shown(m) for m in METHODS},
                 "paired_log10_passes": {b: c.as_metrics() for b, c in cmps.items()},
                 "selection": {m: sel[m].as_metrics() for m in METHODS},
                 "n": n, "budget_passes": budget, "target": target, "seconds": seconds},
        baseline={"passes": statistics.fmean(min(p, budget) for p in test["cyclic"]),
                  "randomized_passes": statistics.fmean(min(p, budget) for p in test["randomized"]),
                  "cyclic_sgd_passes": statistics.fmean(min(p, budget) for p in test["cyclic_sgd"])},
        headline=headline, control=control,
    )
