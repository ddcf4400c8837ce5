"""Claim check for Benign Oscillation of Stochastic Gradient Descent with Large Learning Rates (Lu et al., 2023).

The paper's prediction: on feature-noise data with a weak feature in every sample and a strong feature in a fraction
of them, a two-layer CNN trained by oscillating large-learning-rate SGD learns the weak feature, so it classifies
weak-feature-only test data correctly; trained by smoothly converging small-learning-rate SGD it learns the strong
feature (and the noise) and makes little progress on the weak one, so it fails on that test data.

Setup, fixed before the first run of this claim (only the abstract could be read; the constants are ours):
paperzoo.diagnostics.benign_oscillation. Data make_weak_strong_patch_data with n = 200 (smoke 64), d = 100 (smoke
40), rho = 0.2, weak norm a = 0.15, strong norm b = 1.0, noise std 0.15; test set 2000 samples with rho = 0 (weak
feature and noise only). Network PatchCNN, width m = 10 per sign, activation ReLU^2, init std 0.05, float64. SGD
batch 16 with replacement, half squared loss, trained until the full training loss first reaches 0.05 (checked
every 5 steps; at most 20000 steps; smoke 150, which
leaves the smoke verdict inconclusive). Method: lr 2.0; baseline: lr 0.2; same data, initialisation and
batch generator per seed. 3 seeds (ctx.seeds(3)). Both runs must reach the target, else inconclusive.

Criterion: pass iff (A) the paired gain in weak-only test accuracy (large minus small lr) over the 3 seeds exceeds
0.10 and two standard errors (paperzoo.core.evidence.paired_comparison), (B) on every seed the weak-feature
alignment Gamma_+ + Gamma_- (feature_alignment along v) of the large-lr run is >= 1.5x that of the small-lr run,
and (C) on every seed the large-lr run oscillates: its oscillation_index (fraction of recorded full training
losses that increase) is >= 0.05 and above the small-lr run's.

Control: the same protocol with rho = 0 (no strong feature to mask the weak one; the paper's mechanism has nothing
to act on), through criterion (A); it must fail.

Exploratory runs before this criterion was written: a few single-seed runs of the same model (activations ReLU and
ReLU^2, noise 0.1-0.3, a in 0.1-0.3, b in 1-2, lr 0.05-4) to find a regime where both learning rates fit the data
without diverging; they showed only a small weak-alignment gain and chance-level weak-only accuracy in the ReLU^2
settings, so this check may well fail. Recorded in the helper notes.
"""

from __future__ import annotations

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import paired_comparison, paired_control, fmt_mean_std
from paperzoo.core.registry import derive_seed
from paperzoo.diagnostics.benign_oscillation import (PatchCNN, feature_alignment, make_weak_strong_patch_data,
                                                     oscillation_index, train_to_loss)

RHO, WEAK, STRONG, NOISE = 0.2, 0.15, 1.0, 0.15
WIDTH, POWER, INIT = 10, 2.0, 0.05
BATCH, TARGET, EVERY = 16, 0.05, 5
LR_LARGE, LR_SMALL = 2.0, 0.2
MARGIN, ALIGN_RATIO, OSC_MIN = 0.10, 1.5, 0.05
N_TEST = 2000
CRITERION = (
    "Feature-noise patch data (n = 200, d = 100, rho = 0.2, weak norm 0.15, strong norm 1, noise 0.15), width-10 "
    "ReLU^2 patch CNN, SGD batch 16 on the half squared loss to full training loss 0.05; lr 2.0 vs lr 0.2, 3 seeds. "
    "Pass iff (A) the paired gain in weak-feature-only test accuracy exceeds 0.10 and 2 SE, (B) on every seed the "
    "weak-feature alignment of the large-lr net is >= 1.5x the small-lr one, (C) on every seed the large-lr loss "
    "oscillates (oscillation index >= 0.05 and above the small-lr one). Both runs must reach the target loss, else "
    "inconclusive. Control: rho = 0 through (A); it must fail."
)


def _one(seed: int, rho: float, lr: float, n: int, d: int, max_steps: int) -> dict:
    g = torch.Generator().manual_seed(derive_seed(seed, "data", rho))
    train = make_weak_strong_patch_data(n, d, rho, WEAK, STRONG, NOISE, generator=g)
    test = make_weak_strong_patch_data(N_TEST, d, 0.0, WEAK, STRONG, NOISE, generator=g)
    net = PatchCNN(d, WIDTH, power=POWER, init_std=INIT,
                   generator=torch.Generator().manual_seed(derive_seed(seed, "init")))
    run = train_to_loss(net, train.inputs, train.targets, lr, batch_size=BATCH, max_steps=max_steps, target=TARGET,
                        eval_every=EVERY, generator=torch.Generator().manual_seed(derive_seed(seed, "batches")))
    with torch.no_grad():
        acc = float((torch.sign(net(test.inputs)) == test.targets).double().mean())
    return {"acc_weak_only": acc, "weak_alignment": feature_alignment(net, train.weak).total,
            "strong_alignment": feature_alignment(net, train.strong).total,
            "oscillation": oscillation_index(run.losses), "steps": run.steps, "reached": run.reached,
            "final_loss": run.final_loss, "diverged": run.diverged}


@claim(
    "benign-oscillation",
    statement=("Large-lr SGD, whose training loss oscillates, learns a weak feature masked by a strong one and so "
               "classifies weak-feature-only test data, while small-lr SGD trained to the same loss does not."),
    criterion=CRITERION,
    baseline="small-learning-rate SGD (lr 0.2) trained to the same training loss",
    threads=1,
)
def large_lr_learns_weak_feature(ctx: ClaimContext) -> ClaimResult:
    n, d = ctx.pick(smoke=64, full=200), ctx.pick(smoke=40, full=100)
    max_steps = ctx.pick(smoke=150, full=20000)
    seeds = ctx.seeds(3)
    runs = {(rho, lr): [_one(s, rho, lr, n, d, max_steps) for s in seeds]
            for rho in (RHO, 0.0) for lr in (LR_LARGE, LR_SMALL)}

    def col(rho, lr, key):
        return [r[key] for r in runs[(rho, lr)]]

    cmp = paired_comparison(col(RHO, LR_LARGE, "acc_weak_only"), col(RHO, LR_SMALL, "acc_weak_only"),
                            margin=MARGIN, lower_is_better=False)
    ratio = [a / max(b, 1e-12) for a, b in zip(col(RHO, LR_LARGE, "weak_alignment"),
                                                col(RHO, LR_SMALL, "weak_alignment"))]
    ok_b = all(r >= ALIGN_RATIO for r in ratio)
    osc_l, osc_s = col(RHO, LR_LARGE, "oscillation"), col(RHO, LR_SMALL, "oscillation")
    ok_c = all(ol >= OSC_MIN and ol > os_ for ol, os_ in zip(osc_l, osc_s))
    control, ccmp = paired_control("rho = 0 (no strong feature), same lrs, through (A)",
                                   col(0.0, LR_LARGE, "acc_weak_only"), col(0.0, LR_SMALL, "acc_weak_only"),
                                   margin=MARGIN, lower_is_better=False)
    metrics = {"per_run": {f"rho={rho},lr={lr}": v for (rho, lr), v in runs.items()},
               "accuracy": cmp.as_metrics(), "alignment_ratio": ratio, "criterion_A": cmp.wins,
               "criterion_B": ok_b, "criterion_C": ok_c, "oscillation_large": osc_l, "oscillation_small": osc_s,
               "n": n, "d": d, "max_steps": max_steps}
    headline = (f"{cmp.headline('weak-only test acc', f'lr {LR_LARGE}', f'lr {LR_SMALL}')}; weak alignment ratio "
                f"{fmt_mean_std(ratio)} (>= {ALIGN_RATIO} needed); oscillation index {fmt_mean_std(osc_l)} vs "
                f"{fmt_mean_std(osc_s)}; control rho = 0 gain {ccmp.diff_mean:.3f}")
    unreached = [k for k, v in runs.items() if not all(r["reached"] for r in v)]
    if unreached:
        return ClaimResult("inconclusive", metrics, {"lr": LR_SMALL}, headline=headline, control=control,
                           reason=f"some runs did not reach training loss {TARGET} within {max_steps} steps: "
                                  f"{[f'rho={r},lr={l}' for r, l in unreached]}")
    return ClaimResult.decide(cmp.wins and ok_b and ok_c, metrics=metrics, baseline={"lr": LR_SMALL},
                              headline=headline, control=control)
