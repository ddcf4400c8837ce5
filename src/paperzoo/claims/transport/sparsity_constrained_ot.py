"""Claim check for Sparsity-Constrained Optimal Transport (Liu, Puigcerver and Blondel, ICLR 2023).

Headline: OT with at most ``k`` nonzeros per column is solvable through its semi-dual with a first-order method
(L-BFGS), and interpolates between unregularised OT (``k = 1``) and quadratically regularised OT (``k`` large).

Setup (fixed before the first run): 3 seeds; ``n = m`` points uniform in ``[0, 1]^2`` (smoke ``n = 12``, full
``n = 30``), uniform marginals, squared Euclidean cost, ``reg = 0.5``, ``k`` in ``{1, 2, 4, 8, n}``, our
:func:`~paperzoo.transport.sparsity_constrained_ot` with ``formulation="semi_dual"``, ``tol = 1e-7``,
``max_iter = 2000``, float64. Anchors: ``ot.emd2`` (unregularised OT) and POT's quadratic OT
``ot.smooth.smooth_ot_dual(reg_type='l2')``; entropic OT (``sinkhorn_log`` at the same ``reg``) is reported
for its density.

Issue 8 rework: the measurement and the criterion are unchanged (a solver check, nothing is tuned or compared
across noisy runs; the earlier verdict was ``not_reproduced`` because part (b) fails for 2 <= k < the quadratic
plan's column cardinality, where the semi-dual is a strict relaxation of the nonconvex primal, POT's solver shows
the same violations). Added are a headline and a discriminating control for part (a), whose bound holds by
construction of the solver's top-k projection: POT's quadratic-OT plan at the same ``reg`` (no cardinality
constraint) through the cardinality part at the smallest constrained ``k = 2``. At ``reg = 0.5`` the quadratic plan
is itself sparse (4 to 5 nonzeros per column at ``n = 30``), so if it met ``k = 2`` too, part (a) would show the
regulariser's sparsity, not the constraint's; it must fail.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import ot
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control
from paperzoo.transport import sinkhorn_log, sparsity_constrained_ot

REG = 0.5
CRITERION = (
    "On every one of 3 seeds (n = m points uniform in [0,1]^2, squared Euclidean cost, reg = 0.5, semi-dual, "
    "k in {1, 2, 4, 8, n}): (a) every column of every plan has <= k nonzeros; (b) every plan has L1 marginal "
    "error <= 1e-3; (c) k = 1 gives the unregularised OT cost, |cost - ot.emd2| <= 1e-6 * ot.emd2; (d) k = n "
    "gives POT's quadratic OT plan, max |T - T_l2| <= 1e-4 / n; (e) the seed-mean normalised cost "
    "(cost_k - emd) / (cost_l2 - emd) is nondecreasing in k (slack 0.02). Control: POT's quadratic-OT plan "
    "(no cardinality constraint) through (a) at k = 2; it must fail."
)
CONTROL_K = 2


def _problem(seed: int, n: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g, dtype=torch.float64)
    y = torch.rand(n, 2, generator=g, dtype=torch.float64)
    M = torch.cdist(x, y) ** 2
    a = torch.full((n,), 1.0 / n, dtype=torch.float64)
    return a, a.clone(), M


@claim(
    "sparsity-constrained-ot",
    statement=("Sparsity-constrained OT (at most k nonzeros per column) is solved through its semi-dual with "
               "L-BFGS and interpolates between unregularised OT (k = 1) and quadratic OT (k large)."),
    criterion=CRITERION,
    baseline="ot.emd2 (unregularised OT) and ot.smooth.smooth_ot_dual(reg_type='l2') (quadratic OT), same problem",
    threads=1,
)
def interpolates_emd_and_quadratic_ot(ctx: ClaimContext) -> ClaimResult:
    n = ctx.pick(smoke=12, full=30)
    ks = [1, 2, 4, 8, n]
    rows = []
    for seed in ctx.seeds(3):
        a, b, M = _problem(seed, n)
        an, bn, Mn = a.numpy(), b.numpy(), M.numpy()
        emd = float(ot.emd2(an, bn, Mn))
        T_l2 = ot.smooth.smooth_ot_dual(an, bn, Mn, REG, reg_type="l2", stopThr=1e-12, numItermax=10_000)
        cost_l2 = float((T_l2 * Mn).sum())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ent = sinkhorn_log(a, b, M, REG, tol=1e-9)
        per_k = {}
        for k in ks:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = sparsity_constrained_ot(a, b, M, REG, k, formulation="semi_dual", tol=1e-7, max_iter=2000)
            per_k[k] = dict(cost=float(res.cost), max_nnz_col=int((res.plan > 0).sum(0).max()),
                            marginal_error=res.marginal_error, n_iter=res.n_iter, converged=res.converged,
                            seconds=time.perf_counter() - t0,
                            normalised=(float(res.cost) - emd) / (cost_l2 - emd),
                            max_abs_diff_l2=float(np.abs(res.plan.numpy() - T_l2).max()))
        rows.append(dict(seed=seed, emd=emd, cost_l2=cost_l2, nnz_col_l2=int((T_l2 > 1e-12).sum(0).max()),
                         nnz_col_entropic=int((ent.plan > 0).sum(0).max()), per_k=per_k))

    a_ok = all(r["per_k"][k]["max_nnz_col"] <= k for r in rows for k in ks)
    b_ok = all(r["per_k"][k]["marginal_error"] <= 1e-3 for r in rows for k in ks)
    c_ok = all(abs(r["per_k"][1]["cost"] - r["emd"]) <= 1e-6 * r["emd"] for r in rows)
    d_ok = all(r["per_k"][n]["max_abs_diff_l2"] <= 1e-4 / n for r in rows)
    norm_mean = [float(np.mean([r["per_k"][k]["normalised"] for r in rows])) for k in ks]
    e_ok = all(norm_mean[i + 1] >= norm_mean[i] - 0.02 for i in range(len(ks) - 1))
    passed = a_ok and b_ok and c_ok and d_ok and e_ok
    control = Control(f"POT's quadratic-OT plan (same reg, no cardinality constraint) through (a) at k = {CONTROL_K}",
                      all(r["nnz_col_l2"] <= CONTROL_K for r in rows),
                      {"l2_max_nnz_col": [r["nnz_col_l2"] for r in rows]})
    constrained = [k for k in ks if 1 < k < n]
    worst_marg = {k: max(r["per_k"][k]["marginal_error"] for r in rows) for k in ks}
    headline = (f"n = {n}, 3 seeds: max column nonzeros "
                + "/".join(str(max(r["per_k"][k]["max_nnz_col"] for r in rows)) for k in ks)
                + f" at k = {'/'.join(map(str, ks))} (quadratic OT: {max(r['nnz_col_l2'] for r in rows)}); "
                f"k = 1 vs ot.emd2 rel. gap {max(abs(r['per_k'][1]['cost'] - r['emd']) / r['emd'] for r in rows):.1e}; "
                f"k = n vs POT l2 plan max diff {max(r['per_k'][n]['max_abs_diff_l2'] for r in rows):.1e} "
                f"(tol {1e-4 / n:.1e}); max marginal error at k = {'/'.join(map(str, constrained))}: "
                + "/".join(f"{worst_marg[k]:.1e}" for k in constrained) + " (tol 1e-3); normalised cost "
                + "/".join(f"{v:.3f}" for v in norm_mean))

    def stat(key):
        vals = np.array([[r["per_k"][k][key] for k in ks] for r in rows], dtype=float)
        return {"mean": vals.mean(0).tolist(), "std": vals.std(0).tolist(), "max": vals.max(0).tolist()}

    metrics = {
        "n": n, "reg": REG, "k": ks,
        "checks": {"a_cardinality": a_ok, "b_marginals": b_ok, "c_k1_is_emd": c_ok, "d_kn_is_l2": d_ok,
                   "e_monotone_interpolation": e_ok},
        "cost": stat("cost"), "normalised_cost_mean": norm_mean, "max_nnz_col": stat("max_nnz_col"),
        "marginal_error": stat("marginal_error"), "lbfgs_iterations": stat("n_iter"),
        "seconds": stat("seconds"), "max_abs_diff_to_l2_plan": stat("max_abs_diff_l2"),
        "k1_relative_gap_to_emd": [abs(r["per_k"][1]["cost"] - r["emd"]) / r["emd"] for r in rows],
    }
    baseline = {
        "emd_cost": [r["emd"] for r in rows], "l2_cost": [r["cost_l2"] for r in rows],
        "l2_max_nnz_col": [r["nnz_col_l2"] for r in rows],
        "entropic_max_nnz_col": [r["nnz_col_entropic"] for r in rows],
    }
    if ctx.figure_dir is not None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        ax.plot(ks, norm_mean, "o-", label="sparsity-constrained (semi-dual)")
        ax.axhline(0, color="k", ls=":", label="unregularised OT")
        ax.axhline(1, color="r", ls="--", label="quadratic OT")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k (max nonzeros per column)")
        ax.set_ylabel("(cost - emd) / (cost_l2 - emd)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        ctx.save_figure(fig, "interpolation")
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)
