"""Claim check for SGD with Large Step Sizes Learns Sparse Features (Andriushchenko et al., ICML 2023).

The paper's finding, in its diagonal-linear-network experiment: on sparse regression with ``n < d``, SGD (batch 1)
run at the largest step size that does not diverge (the training loss stabilises instead of decreasing), then
decayed, ends at a much sparser predictor with a much lower test error than small-step SGD from the same
initialisation; with full-batch GD the same large-step schedule gives no such benefit (the benefit comes from the
SGD noise, not from the step size alone).

Setup, fixed before the first run (as in the official notebook ``diag_nets_2d_loss_surface.ipynb``): n = 20,
d = 30, a 3-sparse w* with |N(0, 1)| entries normalised to unit l2 norm, X ~ N(0, I), noiseless y = X w*; the
network beta = u * v from u0 = 0.1, v0 = 0 (paperzoo.diagnostics.diagonal_networks.train_diagonal_network),
float64. Test error = the population risk 0.5 ||beta - w*||^2 (exact for isotropic Gaussian inputs). 3 seeds
(ctx.seeds(3): data, w*, batches).

Protocol per seed and per optimiser (SGD: batch 1, R = 4 replicate runs (smoke 2); GD: batch n, R = 1, it is
deterministic): a sweep of 18 step sizes eta = 0.02 * sqrt(2)^j, j = 0..17; each run uses eta for T1 steps then
eta / 10 for T2 steps (full T1 = 20000, T2 = 10000; smoke 4000, 2000). A run diverges when ||u||_inf or ||v||_inf
leaves 1e4 (or turns non-finite). The sweep must cross divergence (its smallest eta stable in all replicates, its
largest diverging in some), else the verdict is inconclusive. The large step eta_L is the largest grid eta stable
in all R replicates. Method: the large-step-then-decay runs at eta_L. Baseline: the small constant step eta_L / 10
for T1 + T2 steps (the decayed step used throughout: the same number of steps, no large-step phase), same
replicates and batches. Per seed: mean over replicates of log10(max(test risk, 1e-12)) and of the relative l1 gap
| ||beta||_1 - ||w*||_1 | / ||w*||_1.

Criterion: pass iff (A) the paired gain of the method over the baseline in log10 test risk over the 3 seeds exceeds
log10(5) (a factor 5) and two standard errors (paperzoo.core.evidence.paired_comparison), and (B) on every seed the
method's relative l1 gap is <= 0.10. Reported: the number of coordinates above 1e-2, the min-l1 interpolant
(scipy linprog) and its distance to w*, the train loss of the large-step phase (loss stabilisation).

Control: the same sweep, selection and schedule with full-batch GD (no SGD noise), through the same criterion
(A) and (B); the paper says the large-step benefit disappears, so it must fail.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison
from paperzoo.diagnostics.diagonal_networks import _train, min_l1_interpolant

N, D, K = 20, 30, 3
ALPHA = 0.1
GRID = [0.02 * math.sqrt(2) ** j for j in range(18)]
DECAY = 10.0
FACTOR = 5.0
L1_TOL = 0.10
MAX_NORM = 1e4
ACTIVE = 1e-2
CRITERION = (
    "n = 20, d = 30, 3-sparse unit-norm w* >= 0, X ~ N(0, I), noiseless; beta = u*v from u0 = 0.1, v0 = 0; 3 seeds. "
    "Sweep eta = 0.02 sqrt(2)^j, j = 0..17 (must cross divergence), each run eta for T1 = 20000 steps then eta/10 "
    "for T2 = 10000; eta_L = largest grid eta stable in all replicates (SGD batch 1: 4 replicates). Method: that "
    "schedule at eta_L; baseline: constant eta_L/10 for T1 + T2. Pass iff (A) the paired gain in log10 population "
    "risk 0.5||beta - w*||^2 over the seeds exceeds log10(5) and 2 SE, and (B) on every seed the method's "
    "| ||beta||_1 - ||w*||_1 | / ||w*||_1 <= 0.10. Control: the same protocol with full-batch GD; it must fail."
)


def _problem(seed: int):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, D, generator=g, dtype=torch.float64)
    w = torch.zeros(D, dtype=torch.float64)
    w[:K] = torch.randn(K, generator=g, dtype=torch.float64).abs()
    w /= w.norm()
    return X, X @ w, w, g


def _protocol(X, y, w, g, batch_size: int, reps: int, t1: int, t2: int) -> dict:
    """Sweep + selection + method and baseline runs of one optimiser on one seed (all runs in one vectorised call)."""
    grid = torch.tensor(GRID, dtype=torch.float64)
    G = len(GRID)
    lr_run = grid.repeat_interleave(reps)  # run order: grid-major, replicate-minor
    steps = t1 + t2
    # first G*reps runs: the large-then-decay sweep; the last G*reps: constant eta/DECAY (baseline for every eta)
    decayed = torch.cat([lr_run / DECAY, lr_run / DECAY])
    first = torch.cat([lr_run, lr_run / DECAY])
    lrs = torch.stack([first] * t1 + [decayed] * t2)
    res = _train(X, y, ALPHA, lrs, batch_size, g, ACTIVE, MAX_NORM, max(1, t1 // 10))
    div = res.diverged.reshape(2, G, reps)
    stable = ~div[0].any(-1)
    crosses = bool(stable[0]) and not bool(stable[-1])
    j = int(stable.nonzero().max()) if stable.any() else 0
    risk = 0.5 * ((res.beta - w) ** 2).sum(-1).reshape(2, G, reps)[:, j]
    l1 = res.beta.abs().sum(-1).reshape(2, G, reps)[:, j]
    active = (res.beta.abs() > ACTIVE).sum(-1).reshape(2, G, reps)[:, j].double()
    loss = res.train_loss.reshape(-1, 2, G, reps)[:, :, j]  # (m, 2, reps)
    steps_rec = res.record_steps
    phase1 = (steps_rec > t1 // 2) & (steps_rec <= t1)
    w1 = float(w.abs().sum())
    logr = torch.log10(risk.clamp_min(1e-12))
    diverged_sel = div[:, j].any(-1)
    return {
        "crosses": crosses, "eta_L": GRID[j], "first_divergent_eta": GRID[j + 1] if j + 1 < G else None,
        "stable_grid": [bool(s) for s in stable],
        "method_log10_risk": float(logr[0].mean()), "baseline_log10_risk": float(logr[1].mean()),
        "method_risk": [float(r) for r in risk[0]], "baseline_risk": [float(r) for r in risk[1]],
        "method_l1_gap": float(((l1[0] - w1).abs() / w1).mean()),
        "baseline_l1_gap": float(((l1[1] - w1).abs() / w1).mean()),
        "method_active": float(active[0].mean()), "baseline_active": float(active[1].mean()),
        "method_final_train_loss": float(loss[-1, 0].mean()), "baseline_final_train_loss": float(loss[-1, 1].mean()),
        "method_phase1_loss": float(loss[phase1, 0].mean()), "baseline_phase1_loss": float(loss[phase1, 1].mean()),
        "selected_diverged": [bool(x) for x in diverged_sel], "steps": steps,
    }


def _criterion(rows: list[dict]):
    cmp = paired_comparison([r["method_log10_risk"] for r in rows], [r["baseline_log10_risk"] for r in rows],
                            margin=math.log10(FACTOR))
    l1_ok = all(r["method_l1_gap"] <= L1_TOL for r in rows)
    return cmp.wins and l1_ok, cmp, l1_ok


@claim(
    "large-step-sparse-features",
    statement=("On sparse regression with a diagonal linear network, SGD (batch 1) at the largest non-divergent step "
               "followed by a step decay reaches a sparser predictor (l1 norm near ||w*||_1) and a lower test error "
               "than small-step SGD; with full-batch GD the large-step benefit disappears."),
    criterion=CRITERION,
    baseline="SGD (batch 1) at the small constant step eta_L / 10 for the same number of steps",
    threads=1,
)
def large_step_sgd_learns_sparse_predictor(ctx: ClaimContext) -> ClaimResult:
    t1, t2 = ctx.pick(smoke=(4000, 2000), full=(20000, 10000))
    reps = ctx.pick(smoke=2, full=4)
    sgd, gd, ref = [], [], []
    for seed in ctx.seeds(3):
        X, y, w, g = _problem(seed)
        sgd.append(_protocol(X, y, w, g, 1, reps, t1, t2))
        gd.append(_protocol(X, y, w, g, N, 1, t1, t2))
        sol = min_l1_interpolant(X, y)
        ref.append({"l1_gap": abs(sol.l1_norm - float(w.abs().sum())) / float(w.abs().sum()),
                    "risk": float(0.5 * ((sol.beta - w) ** 2).sum()), "converged": sol.converged})
    passed, cmp, l1_ok = _criterion(sgd)
    control_passed, control_cmp, control_l1_ok = _criterion(gd)
    control = Control("the same sweep, selection and large-step-then-decay schedule with full-batch GD (no SGD "
                      "noise), through the same criterion", control_passed,
                      {"vs_baseline": control_cmp.as_metrics(), "l1_within_tol": control_l1_ok,
                       "eta_L": [r["eta_L"] for r in gd],
                       "method_risk": [r["method_risk"][0] for r in gd],
                       "baseline_risk": [r["baseline_risk"][0] for r in gd],
                       "method_l1_gap": [r["method_l1_gap"] for r in gd],
                       "baseline_l1_gap": [r["baseline_l1_gap"] for r in gd]})
    crosses = all(r["crosses"] for r in sgd + gd)

    def risks(rows, key):
        return [10 ** r[key] for r in rows]

    headline = (f"test risk (geo-mean over replicates) {fmt_mean_std(risks(sgd, 'method_log10_risk'))} large-step SGD "
                f"(eta_L {fmt_mean_std([r['eta_L'] for r in sgd])}) vs "
                f"{fmt_mean_std(risks(sgd, 'baseline_log10_risk'))} small-step SGD, 3 seeds, paired log10 gain "
                f"{cmp.diff_mean:.2f} ± {cmp.diff_se:.2f} SE (need > {math.log10(FACTOR):.2f}); l1 gap "
                f"{fmt_mean_std([r['method_l1_gap'] for r in sgd])} vs "
                f"{fmt_mean_std([r['baseline_l1_gap'] for r in sgd])}; GD control: "
                f"{fmt_mean_std(risks(gd, 'method_log10_risk'))} vs {fmt_mean_std(risks(gd, 'baseline_log10_risk'))}"
                f", gain {control_cmp.diff_mean:.2f}")
    metrics = {"sgd": sgd, "gd": gd, "min_l1_interpolant": ref, "vs_baseline": cmp.as_metrics(),
               "l1_within_tol": l1_ok, "sweep_crosses_divergence": crosses, "grid": GRID}
    baseline = {"baseline_log10_risk": [r["baseline_log10_risk"] for r in sgd],
                "baseline_l1_gap": [r["baseline_l1_gap"] for r in sgd], "factor": FACTOR, "l1_tol": L1_TOL}
    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        x = np.arange(3)
        for off, (rows, name) in enumerate(((sgd, "SGD"), (gd, "GD"))):
            ax.bar(x + 0.4 * off - 0.3, [r["method_log10_risk"] for r in rows], 0.2, label=f"{name} large+decay")
            ax.bar(x + 0.4 * off - 0.1, [r["baseline_log10_risk"] for r in rows], 0.2, label=f"{name} small")
        ax.set_xlabel("seed")
        ax.set_ylabel("log10 test risk")
        ax.legend(fontsize=7)
        ctx.save_figure(fig, "risk")
    if not crosses:
        return ClaimResult("inconclusive", metrics, baseline,
                           "a step-size sweep did not cross divergence (smallest step unstable or largest stable)",
                           headline, control)
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)
