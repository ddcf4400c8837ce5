"""Claim check for A Precise Characterization of SGD Stability Using Loss Surface Geometry (Dexter et al., 2024).

The paper's prediction: linearised SGD at a minimum is stable iff a condition on the step size, the batch size, the
sharpness and the coherence of the per-sample Hessians holds; at equal sharpness, less coherent per-sample Hessians
make SGD diverge at smaller step sizes, which the GD rule eta < 2 / lambda_max cannot see.

Setup, fixed before the first run: n = 64 rank-one per-sample Hessians H_i = x_i x_i^T in d = 20 (the MSE Hessian of
a linear model), x_i = sqrt(m) sqrt(d) e_1 + sqrt(1 - m) xi_i with xi_i ~ N(0, I_d), each set rescaled so that the
mean Hessian has lambda_max(H) = 1 (GD threshold eta = 2). Two sets: high coherence m = 0.9 and low coherence
m = 0 (coherence sigma = lambda_1(S) / max_i lambda_1(H_i) of paperzoo.diagnostics.sgd_stability.hessian_coherence
reported). Batches without replacement, B in {1, 4, 16} (smoke {1, 16}); 12 step sizes log-spaced in [0.05, 2.4]
(smoke 6). For each grid point the prediction is the exact second-moment radius rho (stable iff rho < 1); the
measurement is a Monte Carlo of linearised SGD (128 runs, 200 steps; smoke 32 runs, 60 steps), called divergent when
the fitted growth rate of the log mean squared norm over the second half of the steps is > 0. 3 seeds (ctx.seeds(3):
the Hessian draws, starts and batches).

Criterion: pass iff for every seed (A) the radius prediction agrees with the simulated divergence on >= 95% of the
grid points (both sets, all B), and (B) at B = 1 the simulated threshold (geometric midpoint of the last stable and
first divergent grid step size; the sweep must cross, i.e. contain both) of the low-coherence set is below that of
the high-coherence set. Reported: each set's simulated threshold against the exact threshold eta* (bisection of
rho = 1), and the coherences.

Control: the GD rule eta < 2 / lambda_max(H) as the predictor of the same simulated divergence on the low-coherence
set (where the paper predicts SGD departs from GD), through criterion (A): it must fail (agreement < 95%).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std
from paperzoo.diagnostics.sgd_stability import _simulate, _slope, hessian_coherence, sgd_stability_radius

N, D = 64, 20
MIX = {"high": 0.9, "low": 0.0}
AGREE = 0.95
CRITERION = (
    "n = 64 rank-one PSD per-sample Hessians in d = 20, mean sharpness 1, high coherence (mix 0.9) and low coherence "
    "(mix 0); sampling without replacement, B in {1, 4, 16}, 12 log-spaced eta in [0.05, 2.4]; 3 seeds. Pass iff for "
    "every seed (A) the exact radius prediction (stable iff rho < 1) agrees with simulated mean-square divergence "
    "(growth rate of log mean ||e||^2 > 0, 128 runs x 200 steps) on >= 95% of grid points, and (B) at B = 1 the "
    "simulated threshold (sweep crossing) of the low-coherence set is below the high-coherence one. Control: the GD "
    "rule eta < 2/lambda_max as predictor on the low-coherence set through (A); it must fail."
)


def _hessians(mix: float, g: torch.Generator) -> torch.Tensor:
    e1 = torch.zeros(D, dtype=torch.float64)
    e1[0] = 1.0
    x = math.sqrt(mix * D) * e1 + math.sqrt(1.0 - mix) * torch.randn(N, D, generator=g, dtype=torch.float64)
    Hs = x[:, :, None] * x[:, None, :]
    return Hs / torch.linalg.eigvalsh(Hs.mean(0))[-1]


def _threshold_exact(Hs: torch.Tensor, B: int, iters: int) -> float:
    lo, hi = 1e-3, 2.0
    for _ in range(iters):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if sgd_stability_radius(Hs, mid, B).radius < 1.0 else (lo, mid)
    return math.sqrt(lo * hi)


def _sweep_threshold(lrs: np.ndarray, diverged: np.ndarray) -> float:
    """Midpoint between the last stable and first divergent step size; NaN when the sweep does not cross."""
    if diverged.all() or not diverged.any():
        return float("nan")
    first = int(np.argmax(diverged))
    if first == 0:
        return float("nan")
    return float(math.sqrt(lrs[first - 1] * lrs[first]))


@claim(
    "sgd-linear-stability",
    statement=("Linearised SGD is mean-square stable iff the second-moment map has spectral radius < 1; at equal "
               "sharpness, less coherent per-sample Hessians make SGD diverge at smaller step sizes than coherent ones, "
               "which the GD rule eta < 2/lambda_max misses."),
    criterion=CRITERION,
    baseline="the GD stability rule eta < 2/lambda_max(H) used as the predictor of SGD's stability",
    threads=1,
)
def radius_predicts_divergence_and_coherence_matters(ctx: ClaimContext) -> ClaimResult:
    batches = ctx.pick(smoke=[1, 16], full=[1, 4, 16])
    lrs = np.geomspace(0.05, 2.4, ctx.pick(smoke=6, full=12))
    runs = ctx.pick(smoke=32, full=128)
    steps = ctx.pick(smoke=60, full=200)
    bisect = ctx.pick(smoke=10, full=30)  # bisection steps on log eta in [1e-3, 2] for the exact B = 1 threshold
    lr_t = torch.tensor(lrs, dtype=torch.float64)
    per_seed = []
    for seed in ctx.seeds(3):
        g = torch.Generator().manual_seed(seed)
        rec = {"sets": {}}
        agree, total, gd_agree, gd_total = 0, 0, 0, 0
        for name, mix in MIX.items():
            Hs = _hessians(mix, g)
            coh = hessian_coherence(Hs)
            srec = {"coherence": coh.coherence, "max_sample_sharpness": coh.max_sample_sharpness, "per_B": {}}
            for B in batches:
                rho = np.array([sgd_stability_radius(Hs, float(lr), B, generator=g).radius for lr in lrs])
                logn = _simulate(Hs, lr_t, B, steps, runs, False, g)
                lm = torch.logsumexp(logn, dim=-1) - math.log(runs)  # (steps + 1, L)
                rates = np.array([_slope(lm[:, j]) for j in range(len(lrs))])
                sim_div = rates > 0
                pred_div = rho >= 1.0
                gd_div = lrs * coh.sharpness >= 2.0
                agree += int((sim_div == pred_div).sum())
                total += len(lrs)
                if name == "low":
                    gd_agree += int((sim_div == gd_div).sum())
                    gd_total += len(lrs)
                srec["per_B"][str(B)] = {
                    "radius": rho.tolist(), "sim_rate": rates.tolist(), "log_radius": np.log(rho).tolist(),
                    "sim_threshold": _sweep_threshold(lrs, sim_div),
                    "exact_threshold": _threshold_exact(Hs, B, bisect) if B == 1 else float("nan"),
                    "agreement": float((sim_div == pred_div).mean())}
            rec["sets"][name] = srec
        rec["agreement"] = agree / total
        rec["gd_agreement_low"] = gd_agree / gd_total
        lo1 = rec["sets"]["low"]["per_B"]["1"]["sim_threshold"]
        hi1 = rec["sets"]["high"]["per_B"]["1"]["sim_threshold"]
        rec["threshold_B1"] = {"low": lo1, "high": hi1}
        rec["low_below_high"] = bool(math.isfinite(lo1) and math.isfinite(hi1) and lo1 < hi1)
        per_seed.append(rec)

    agreement = [r["agreement"] for r in per_seed]
    ok_a = all(a >= AGREE for a in agreement)
    ok_b = all(r["low_below_high"] for r in per_seed)
    gd_agree = [r["gd_agreement_low"] for r in per_seed]
    control = Control("GD rule eta < 2/lambda_max as predictor of simulated divergence, low-coherence set, through (A)",
                      all(a >= AGREE for a in gd_agree), {"agreement": gd_agree, "threshold": AGREE})

    def th(name, key):
        return [r["sets"][name]["per_B"]["1"][key] for r in per_seed]

    coh = {name: [r["sets"][name]["coherence"] for r in per_seed] for name in MIX}
    headline = (f"radius vs simulated divergence agreement {fmt_mean_std(agreement)} (>= {AGREE:.0%} needed; GD rule on "
                f"the low-coherence set {fmt_mean_std(gd_agree)}); B = 1 threshold eta: low coherence (sigma "
                f"{fmt_mean_std(coh['low'])}) simulated {fmt_mean_std(th('low', 'sim_threshold'))} vs exact "
                f"{fmt_mean_std(th('low', 'exact_threshold'))}; high coherence (sigma {fmt_mean_std(coh['high'])}) "
                f"simulated {fmt_mean_std(th('high', 'sim_threshold'))} vs exact "
                f"{fmt_mean_std(th('high', 'exact_threshold'))}; GD rule 2.0")

    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        r0 = per_seed[0]
        for i, name in enumerate(MIX):
            for j, B in enumerate(batches):
                pb = r0["sets"][name]["per_B"][str(B)]
                ax.plot(lrs, pb["log_radius"], c=f"C{i}", ls=["-", "--", ":"][j], label=f"{name}, B={B}: log rho")
                ax.plot(lrs, pb["sim_rate"], "o", c=f"C{i}", ms=3)
        ax.axhline(0, c="k", lw=0.8)
        ax.axvline(2.0, c="gray", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("eta (lambda_max(H) = 1)")
        ax.set_ylabel("log rho (lines), simulated rate (dots)")
        ax.legend(fontsize=6)
        ctx.save_figure(fig, "radius_vs_simulation")

    return ClaimResult.decide(
        ok_a and ok_b,
        metrics={"per_seed": per_seed, "agreement": agreement, "criterion_A": ok_a, "criterion_B": ok_b,
                 "lrs": lrs.tolist(), "batches": batches, "coherence": coh},
        baseline={"gd_agreement_low": gd_agree, "gd_threshold": 2.0, "agreement_threshold": AGREE},
        headline=headline, control=control,
    )
