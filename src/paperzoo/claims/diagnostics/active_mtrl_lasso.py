"""Claim check for Improved Active Multi-Task Representation Learning via Lasso (Wang, Chen, Jamieson, Du, 2023).

The paper's prediction: at an equal total source budget, allocating source samples in proportion to the L1
relevance :math:`|\\nu^1_m|` (estimated by a Lasso from a uniform pilot) learns a representation that serves the
target better than Chen et al.'s L2 rule (:math:`n_m \\propto (\\nu^2_m)^2`), which in turn beats uniform sampling;
the error scales as :math:`\\sum_m \\nu_m^2 / n_m`, minimised at :math:`\\|\\nu^1\\|_1^2 / N`
(:func:`paperzoo.diagnostics.active_mtrl.predicted_representation_error` gives the first-order constant).

Setup, fixed before the first run. Linear MTRL, :math:`x \\sim \\mathcal N(0, I_d)`, :math:`\\sigma = 1`, ``d = 50,
k = 5, M = 100`` (smoke ``d = 20, k = 3, M = 30``), :math:`B^*` a random orthonormal ``d x k``. Heads: unit-norm
random directions; ``s = k`` "strong" tasks of norm 1 and ``M - s`` weak tasks of norm 0.3; the target head
:math:`w^*_0 = \\sum_{j < s} 2^{-j} w^*_j`. Budget ``N = 10000`` (smoke 2400) including a uniform pilot of 20 per
task; target data ``n0 = 200``; Lasso at :math:`\\lambda = 0.05\\,\\lambda_{max}`. Before any run the first-order
prediction (oracle allocations) gave uniform / nu1 = 9.9 and nu2 / nu1 = 2.4 (smoke 6.5 and 1.4). Metric: the
learned subspace's error on the target :math:`\\|(I - P_{\\hat B}) B^* w^*_0\\|^2` (the target excess risk with
unlimited target data), averaged over ``R = 4`` runs per seed (smoke 2); the three strategies share each run's
model and pilot.

Criterion: (1) nu1-Lasso below nu2, paired over 3 seeds beyond 2 SE; (2) nu2 below uniform, paired beyond 2 SE;
(3) uniform / nu1-Lasso >= 2 on every seed, and the measured mean ratio within a factor 2 of the first-order
prediction evaluated at the runs' realised counts.

Control (where the paper predicts no gain from relevance sampling), measured the same way: replicated orthonormal
heads (``M / k`` copies of each basis vector) and a flat target :math:`w^*_0 = \\mathbf 1`, so that
:math:`\\|\\nu^1\\|_1^2 = M\\|\\nu^2\\|_2^2` and uniform sampling is already optimal. Through criterion (3)'s first
part (uniform / nu1-Lasso >= 2 on every seed) it must fail.
"""

from __future__ import annotations

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison
from paperzoo.diagnostics.active_mtrl import (active_mtrl, linear_mtrl_sampler, predicted_representation_error,
                                              relevance_vectors, source_allocation, subspace_target_error)

STRATEGIES = ("uniform", "nu2", "nu1_lasso")
WEAK_NORM, PILOT, N_TARGET, LAM_RATIO, NOISE = 0.3, 20, 200, 0.05, 1.0
RATIO_MIN, PRED_FACTOR = 2.0, 2.0
CRITERION = (
    "linear MTRL d=50, k=5, M=100, sigma=1, 5 strong heads (norm 1) + 95 weak (norm 0.3), target = sum_j 2^-j "
    "w_j over the strong ones, N=10000 incl. uniform pilot 20/task, n0=200, Lasso lambda = 0.05 lambda_max; metric "
    "||(I - P_Bhat) B* w0||^2 averaged over 4 runs per seed, 3 seeds: (1) nu1-Lasso < nu2 paired beyond 2 SE; "
    "(2) nu2 < uniform paired beyond 2 SE; (3) uniform/nu1-Lasso >= 2 on every seed and mean measured ratio within "
    "a factor 2 of the first-order prediction at the realised counts. Control: replicated orthonormal heads, flat "
    "target (uniform already optimal); uniform/nu1-Lasso >= 2 on every seed must fail."
)


def _model(kind, d, k, m, g):
    B = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))[0]
    if kind == "main":
        U = torch.randn(k, m, generator=g, dtype=torch.float64)
        U = U / U.norm(dim=0)
        r = torch.full((m,), WEAK_NORM, dtype=torch.float64)
        r[:k] = 1.0
        W = U * r
        w0 = W[:, :k] @ (2.0 ** -torch.arange(k, dtype=torch.float64))
    else:  # replicated orthonormal heads, flat target
        W = torch.eye(k, dtype=torch.float64).repeat(1, m // k)
        w0 = torch.ones(k, dtype=torch.float64)
    return B, W, w0


def _oracle_ratios(W, w0, d, n_total, m):
    rv = relevance_vectors(W, w0)
    pred = {}
    for name, nu in (("uniform", None), ("nu1", rv.nu1), ("nu2", rv.nu2)):
        c = source_allocation(n_total - m * PILOT, name, nu, n_tasks=m, floor=PILOT)
        pred[name] = predicted_representation_error(W, w0, c.double(), NOISE ** 2, d)
    return rv, pred


def _seed_rows(kind, d, k, m, n_total, runs, seed):
    g = torch.Generator().manual_seed(seed)
    err = {s: [] for s in STRATEGIES}
    risk = {s: [] for s in STRATEGIES}
    pred = {s: [] for s in STRATEGIES}
    support = []
    for _ in range(runs):
        B, W, w0 = _model(kind, d, k, m, g)
        theta0 = B @ w0
        X0 = torch.randn(N_TARGET, d, generator=g, dtype=torch.float64)
        y0 = X0 @ theta0 + NOISE * torch.randn(N_TARGET, generator=g, dtype=torch.float64)
        run_seed = int(torch.randint(0, 2 ** 62, (), generator=g))
        for s in STRATEGIES:
            gs = torch.Generator().manual_seed(run_seed)  # same pilot draws for every strategy
            r = active_mtrl(linear_mtrl_sampler(B, W, NOISE, gs), m, X0, y0, k, n_total, s, pilot=PILOT,
                            lam_ratio=LAM_RATIO)
            err[s].append(subspace_target_error(r.B, theta0))
            risk[s].append(float(((r.B @ r.w0 - theta0) ** 2).sum()))
            pred[s].append(predicted_representation_error(W, w0, r.counts.double(), NOISE ** 2, d))
            if s == "nu1_lasso":
                support.append(int((r.nu != 0).sum()))
    return {s: float(np.mean(err[s])) for s in STRATEGIES}, {s: float(np.mean(risk[s])) for s in STRATEGIES}, \
        {s: float(np.mean(pred[s])) for s in STRATEGIES}, float(np.mean(support))


@claim(
    "active-mtrl-lasso",
    statement=("At an equal total source budget in linear multi-task representation learning, sampling sources in "
               "proportion to a Lasso estimate of the L1 relevance nu^1 gives a lower target error than the nu^2 "
               "rule of Chen et al. (2022), which beats uniform sampling, with the gain over uniform of the size "
               "the sum_m nu_m^2 / n_m term predicts; where relevance is flat (uniform already optimal) the gain "
               "vanishes."),
    criterion=CRITERION,
    baseline="uniform source sampling and the nu^2 allocation (Chen et al., 2022) on the same pilot data",
    threads=1,
)
def nu1_lasso_beats_nu2_and_uniform(ctx: ClaimContext) -> ClaimResult:
    d, k, m = ctx.pick(smoke=(20, 3, 30), full=(50, 5, 100))
    n_total = ctx.pick(smoke=2400, full=10000)
    runs = ctx.pick(smoke=2, full=4)
    seeds = ctx.seeds(3)
    rows = {"main": [], "control": []}
    for kind in rows:
        for seed in seeds:
            rows[kind].append(_seed_rows(kind, d, k, m, n_total, runs, seed + (0 if kind == "main" else 1)))

    def series(kind, s, j=0):
        return [r[j][s] for r in rows[kind]]

    c12 = paired_comparison(series("main", "nu1_lasso"), series("main", "nu2"))
    c2u = paired_comparison(series("main", "nu2"), series("main", "uniform"))
    ratio = [u / a for u, a in zip(series("main", "uniform"), series("main", "nu1_lasso"))]
    pred_ratio = [u / a for u, a in zip(series("main", "uniform", 2), series("main", "nu1_lasso", 2))]
    rel = float(np.mean(ratio)) / float(np.mean(pred_ratio))
    part3 = all(q >= RATIO_MIN for q in ratio) and 1.0 / PRED_FACTOR <= rel <= PRED_FACTOR
    passed = c12.wins and c2u.wins and part3

    c_ratio = [u / a for u, a in zip(series("control", "uniform"), series("control", "nu1_lasso"))]
    control = Control("replicated orthonormal heads, flat target (uniform optimal): uniform/nu1-Lasso >= "
                      f"{RATIO_MIN:g} on every seed", all(q >= RATIO_MIN for q in c_ratio),
                      {"ratio_uniform_over_nu1_per_seed": c_ratio,
                       "errors": {s: series("control", s) for s in STRATEGIES}})

    gm = torch.Generator().manual_seed(seeds[0])
    _, W, w0 = _model("main", d, k, m, gm)
    rv, oracle = _oracle_ratios(W, w0, d, n_total, m)
    headline = (f"d={d}, k={k}, M={m}, N={n_total}, 3 seeds x {runs} runs: target-subspace error uniform "
                f"{fmt_mean_std(series('main', 'uniform'))}, nu2 {fmt_mean_std(series('main', 'nu2'))}, nu1-Lasso "
                f"{fmt_mean_std(series('main', 'nu1_lasso'))}; uniform/nu1-Lasso {fmt_mean_std(ratio)} (first-order "
                f"prediction at realised counts {fmt_mean_std(pred_ratio)}); flat-relevance control "
                f"{fmt_mean_std(c_ratio)}")
    metrics = {"d": d, "k": k, "M": m, "N": n_total, "runs_per_seed": runs,
               "error": {s: series("main", s) for s in STRATEGIES},
               "target_risk_n0": {s: series("main", s, 1) for s in STRATEGIES},
               "predicted_first_order": {s: series("main", s, 2) for s in STRATEGIES},
               "lasso_support_mean": [r[3] for r in rows["main"]],
               "nu1_vs_nu2": c12.as_metrics(), "nu2_vs_uniform": c2u.as_metrics(),
               "ratio_uniform_over_nu1": ratio, "predicted_ratio": pred_ratio, "measured_over_predicted": rel}
    baseline = {"oracle_allocation_prediction_seed0": oracle, "nu1_l1": rv.nu1_l1, "nu2_l1": rv.nu2_l1,
                "ratio_min": RATIO_MIN, "pred_factor": PRED_FACTOR}
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)
