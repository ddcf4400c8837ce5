"""Claim check for One-step Diffusion Models with f-Divergence Distribution Matching (Xu, Nie, Vahdat, 2025).

The paper's claim: one-step distillation with a less mode-seeking f-divergence (Jensen-Shannon, forward KL) covers
the teacher's modes better than the reverse KL of DMD / variational score distillation, whose weighting h = 1 does
not favour regions the student under-covers.

Setup, fixed before the first claim run: teacher ``mixture_on_circle(8, 2, radius=4, std=0.3)`` with weights
alternating 1 and 0.05 (four major, four minor modes), float32, exact scores and log densities. Student:
``OneStepGenerator(2, 64, 2)``, the same initialisation and the same random stream per seed for every divergence;
:func:`~paperzoo.diffusion.f_distill.distill_one_step` with batch 256, kernel width 0.1 for the student density,
levels log-uniform on [0.02, 5], batch-normalised h, 1,000 steps (smoke 8). Method: JS; baseline: reverse KL
(DMD). The Adam learning rate of each is tuned on the same grid {3e-4, 1e-3, 3e-3} (extended past a winning edge,
bounds 1e-4 and 1e-2, at most 1 extension) on the first seed by validation sliced W2^2 (4,000 generator samples
vs 4,000 teacher draws, 64 fixed directions). Held-out metrics on 3 seeds (fresh 8,000 generator samples, 8,000
teacher draws): the mode-weight error ``0.5 sum_k |w_hat_k - w_k|`` (``GaussianMixture.mode_weights``) and sliced
W2^2.

Note (honest record): a prototype of the method (1,000 steps, lr 1e-3, 2 seeds) was run on this teacher before the
claim was written, while developing the module; it showed reverse KL covering all eight modes too. The setup was
not changed after it. Forward KL is not compared (with the kernel-density ratio its weights are degenerate, the
paper's variance trade-off); it is exercised in the tests only.
"""

from __future__ import annotations

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison, tune
from paperzoo.diffusion.f_distill import OneStepGenerator, distill_one_step
from paperzoo.diffusion.mixture import mixture_on_circle
from paperzoo.transport import sliced_wasserstein

LR_GRID = [3e-4, 1e-3, 3e-3]
TV_MARGIN = 0.02
CRITERION = (
    "Imbalanced 8-mode circle (radius 4, std 0.3, weights alternating 1 and 0.05), one-step MLP generator 2x64x2, "
    "f-distill with exact teacher scores and a kernel-density student (width 0.1), levels log-uniform [0.02, 5], "
    "batch 256, 1,000 steps, lr tuned per divergence on {3e-4, 1e-3, 3e-3} (extended once at a winning edge) by "
    "validation sliced W2^2; 3 paired seeds: JS's held-out mode-weight error 0.5 sum|w_hat - w| is lower than "
    "reverse KL's by > 0.02 and > 2 SE, and its sliced W2^2 is lower by > 2 SE. Control: the balanced mixture "
    "(equal weights), own tuning, same criterion; it must fail."
)


def _teacher(balanced: bool):
    w = None if balanced else torch.tensor([1.0, 0.05] * 4)
    return mixture_on_circle(8, 2, radius=4.0, std=0.3, weights=w, dtype=torch.float32)


def _run(gm, divergence: str, lr: float, steps: int, seed: int) -> OneStepGenerator:
    torch.manual_seed(seed)
    net = OneStepGenerator(2, 64, 2)
    return distill_one_step(gm, net, divergence, steps=steps, lr=lr, batch_size=256, sigma_min=0.02, sigma_max=5.0,
                            bandwidth=0.1, generator=torch.Generator().manual_seed(seed))


def _metrics(gm, net, n: int, seed: int, proj: torch.Tensor) -> dict:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x = net(torch.randn(n, 2, generator=g))
    if not bool(torch.isfinite(x).all()):
        return {"tv": float("inf"), "sw2": float("inf"), "mode_weights": []}
    ref = gm.sample(n, generator=g)
    mw = gm.mode_weights(x)
    return {"tv": float(0.5 * (mw - gm.weights).abs().sum()), "sw2": float(sliced_wasserstein(x, ref, projections=proj)),
            "mode_weights": [round(float(v), 4) for v in mw]}


@claim(
    "f-distill",
    statement=("One-step distillation by Jensen-Shannon f-divergence distribution matching recovers the mode weights "
               "of an imbalanced mixture better than reverse-KL distribution matching (DMD), which under-weights or "
               "drops low-weight modes."),
    criterion=CRITERION,
    baseline="reverse-KL distribution matching (DMD / VSD, h = 1) with the same generator, steps and lr grid",
    threads=1,
)
def js_covers_minor_modes(ctx: ClaimContext) -> ClaimResult:
    steps = ctx.pick(smoke=8, full=1_000)
    n_val = ctx.pick(smoke=500, full=4_000)
    n_test = ctx.pick(smoke=500, full=8_000)
    seeds = ctx.seeds(3)
    proj = torch.nn.functional.normalize(torch.randn(64, 2, generator=torch.Generator().manual_seed(7)), dim=1)

    def regime(balanced: bool, offset: int) -> dict:
        gm = _teacher(balanced)
        sel = tune({div: (lambda lr, div=div: _metrics(gm, _run(gm, div, lr, steps, seeds[0]), n_val,
                                                       seeds[0] + offset + 1, proj)["sw2"])
                    for div in ("js", "reverse_kl")}, LR_GRID, bounds=(1e-4, 1e-2), max_extensions=1)
        res = {div: [_metrics(gm, _run(gm, div, sel[div].best, steps, s), n_test, s + offset + 2, proj)
                     for s in seeds] for div in ("js", "reverse_kl")}
        tv = paired_comparison([r["tv"] for r in res["js"]], [r["tv"] for r in res["reverse_kl"]], margin=TV_MARGIN)
        sw = paired_comparison([r["sw2"] for r in res["js"]], [r["sw2"] for r in res["reverse_kl"]])
        return {"passed": tv.wins and sw.wins, "tv": tv, "sw": sw, "res": res, "sel": sel}

    main = regime(False, 0)
    ctrl = regime(True, 50_000)

    def summary(r) -> dict:
        return {"mode_weight_error": r["tv"].as_metrics(), "sliced_w2": r["sw"].as_metrics(),
                "mode_weights": {d: [m["mode_weights"] for m in v] for d, v in r["res"].items()},
                "lr": {d: s.as_metrics() for d, s in r["sel"].items()}}

    control = Control("the balanced 8-mode mixture (equal weights, own tuning) through the same criterion, where "
                      "reverse KL is expected to cover every mode too", ctrl["passed"], summary(ctrl))
    headline = (main["tv"].headline("mode-weight error", "JS", "reverse KL") + "; "
                + main["sw"].headline("sliced W2^2", "JS", "reverse KL")
                + f"; control (balanced): mode-weight error {fmt_mean_std(ctrl['tv'].method)} vs "
                  f"{fmt_mean_std(ctrl['tv'].baseline)}")
    return ClaimResult.decide(
        main["passed"],
        metrics={"steps": steps, "js_mode_weight_error": list(main["tv"].method),
                 "js_sliced_w2": list(main["sw"].method), "imbalanced": summary(main)},
        baseline={"reverse_kl_mode_weight_error": list(main["tv"].baseline),
                  "reverse_kl_sliced_w2": list(main["sw"].baseline)},
        headline=headline, control=control,
    )
