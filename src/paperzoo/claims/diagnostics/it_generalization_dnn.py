"""Claim check for Information-Theoretic Generalization Bounds for Deep Neural Networks (He, Goldfeld, 2024).

The paper's prediction: the KL-based layerwise generalization bound shrinks as the layer index grows
(data processing through the noisy layers), while the Wasserstein-based bound has a minimising layer, the
"generalization funnel"; both are upper bounds on the generalization gap.

Setup, fixed before the first run: binary Gaussian classification, ``d = 10``, ``mu = 1.5 / sqrt(d) * 1``,
``Sigma = I``, ``n = 50`` training samples, ramp loss with margin 1 read out at the last layer by the
mean-direction learner (:mod:`paperzoo.diagnostics.it_bounds`). Per seed one stack of six ``10 x 10`` layers with
i.i.d. ``N(0, 1/d)`` entries and injected Gaussian noise of std ``0.5``; the depth-``L`` network (``L = 1..6``) is
its first ``L`` layers. Per (seed, L): the closed-form KL bounds :math:`\\sqrt{D_k/2}` and the Wasserstein bounds
:math:`\\mathbb E[L_k W_2]` (400 exact draws of the learner's output; smoke 64) at every layer ``k = 0..L``, and the
Monte Carlo generalization gap (200 training sets; smoke 40) with its standard error. 3 seeds.

Criterion, per seed: (i) on the depth-6 network the KL divergence :math:`D_k` is nonincreasing in ``k`` and
:math:`D_6 \\le 0.99\\, D_0` (strict shrinkage); (ii) for every depth and every layer, both bounds are at least the
measured gap up to noise: ``bound - gap >= -2 sqrt(se_gap^2 + se_bound^2)``; (iii) on the depth-6 network the
Wasserstein bound's minimising layer, located by the sweep over ``k = 0..6``, is interior (``1 <= k* <= 5``).
Control: the same networks, data and draws with noise std 0 (a noiseless, almost surely injective linear network);
the paper predicts no data-processing shrinkage there (:math:`D_k` constant), so the control must fail the same
criterion.

Note recorded before the claim was written: a one-seed sanity run of the module (while writing it) gave
``k* = L`` for this random-Gaussian architecture; the criterion above is the brief's, unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std
from paperzoo.diagnostics.it_bounds import generalization_gap_monte_carlo, layerwise_it_bounds

D_IN = 10
N_TRAIN = 50
NOISE_STD = 0.5
MARGIN = 1.0
DEPTHS = (1, 2, 3, 4, 5, 6)
SHRINK = 0.99
CRITERION = (
    "Binary Gaussian classification (d = 10, n = 50, ramp loss), noisy linear networks of depth 1-6 (N(0, 1/d) "
    "layers, noise std 0.5), 3 seeds. Per seed: (i) depth 6: the layer KL D_k is nonincreasing in k and "
    "D_6 <= 0.99 D_0; (ii) every KL and W bound at every layer and depth is >= the Monte Carlo gap up to "
    "2 combined standard errors; (iii) depth 6: the W bound's argmin over layers 0..6 is interior (1..5). "
    "Control: noise std 0 through the same criterion; it must fail."
)


def _measure(ctx: ClaimContext, noise_std: float) -> list[dict]:
    n_repeats = ctx.pick(smoke=40, full=200)
    n_draws = ctx.pick(smoke=64, full=400)
    mu = torch.full((D_IN,), 1.5 / math.sqrt(D_IN), dtype=torch.float64)
    Sigma = torch.eye(D_IN, dtype=torch.float64)
    rows = []
    for seed in ctx.seeds(3):
        g = torch.Generator().manual_seed(seed)  # the same draws for the method and the control
        stack = [torch.randn(D_IN, D_IN, generator=g, dtype=torch.float64) / math.sqrt(D_IN) for _ in DEPTHS]
        per_depth = {}
        for L in DEPTHS:
            b = layerwise_it_bounds(stack[:L], mu, Sigma, N_TRAIN, noise_std=noise_std, margin=MARGIN,
                                    n_draws=n_draws, generator=g)
            e = generalization_gap_monte_carlo(stack[:L], mu, Sigma, N_TRAIN, noise_std=noise_std, margin=MARGIN,
                                               n_repeats=n_repeats, generator=g)
            noise = torch.sqrt(e.se ** 2 + b.w_bound_se ** 2)
            slack_kl = float(((b.kl_bound - e.gap) / e.se.clamp_min(1e-300)).min())
            ok_kl = bool((b.kl_bound - e.gap >= -2 * e.se).all())
            ok_w = bool((b.w_bound - e.gap >= -2 * noise).all())
            per_depth[L] = {"kl": b.kl.tolist(), "kl_bound": b.kl_bound.tolist(), "w_bound": b.w_bound.tolist(),
                            "w_bound_se": b.w_bound_se.tolist(), "funnel_layer": b.funnel_layer,
                            "gap": float(e.gap), "gap_se": float(e.se), "bounds_hold": ok_kl and ok_w,
                            "min_kl_slack_in_se": slack_kl}
        deep = per_depth[DEPTHS[-1]]
        kl = np.array(deep["kl"])
        monotone = bool(np.all(kl[1:] <= kl[:-1] * (1 + 1e-9) + 1e-12))
        shrinks = bool(kl[-1] <= SHRINK * kl[0])
        interior = 1 <= deep["funnel_layer"] <= DEPTHS[-1] - 1
        bounds_hold = all(r["bounds_hold"] for r in per_depth.values())
        rows.append({"seed": seed, "kl_monotone": monotone, "kl_shrinks": shrinks, "bounds_hold": bounds_hold,
                     "funnel_interior": interior, "funnel_layer": deep["funnel_layer"],
                     "kl_ratio_last_first": float(kl[-1] / kl[0]),
                     "passed": monotone and shrinks and bounds_hold and interior,
                     "per_depth": {str(L): r for L, r in per_depth.items()}})
    return rows


@claim(
    "it-generalization-dnn",
    statement=("For a noisy linear network on binary Gaussian classification, the layerwise KL generalization bound "
               "shrinks with depth, the Wasserstein bound is minimised at an interior 'funnel' layer, and both bound "
               "the generalization gap."),
    criterion=CRITERION,
    baseline="the Monte Carlo generalization gap; the input-layer (k = 0, Xu-Raginsky-type) bound",
    threads=1,
)
def kl_shrinks_w_funnel(ctx: ClaimContext) -> ClaimResult:
    rows = _measure(ctx, NOISE_STD)
    control_rows = _measure(ctx, 0.0)
    passed = all(r["passed"] for r in rows)
    control_passed = all(r["passed"] for r in control_rows)
    control = Control("noise std 0 (noiseless linear network, no data-processing shrinkage predicted)",
                      control_passed,
                      {"kl_ratio_last_first": [r["kl_ratio_last_first"] for r in control_rows],
                       "kl_shrinks": [r["kl_shrinks"] for r in control_rows],
                       "funnel_layer": [r["funnel_layer"] for r in control_rows],
                       "bounds_hold": [r["bounds_hold"] for r in control_rows]})
    deep = str(DEPTHS[-1])
    kl0 = [r["per_depth"][deep]["kl_bound"][0] for r in rows]
    kl6 = [r["per_depth"][deep]["kl_bound"][-1] for r in rows]
    w0 = [r["per_depth"][deep]["w_bound"][0] for r in rows]
    wmin = [min(r["per_depth"][deep]["w_bound"]) for r in rows]
    gaps = [r["per_depth"][deep]["gap"] for r in rows]
    headline = (f"depth 6, 3 seeds: KL bound {fmt_mean_std(kl0)} (layer 0) -> {fmt_mean_std(kl6)} (layer 6); "
                f"W bound {fmt_mean_std(w0)} (layer 0), min {fmt_mean_std(wmin)} at layers "
                f"{[r['funnel_layer'] for r in rows]}; gap {fmt_mean_std(gaps)}; bounds hold "
                f"{[r['bounds_hold'] for r in rows]}; control (noise 0): KL ratio layer 6/0 "
                f"{fmt_mean_std([r['kl_ratio_last_first'] for r in control_rows])}")
    failed = [k for k in ("kl_monotone", "kl_shrinks", "bounds_hold", "funnel_interior")
              if not all(r[k] for r in rows)]
    reason = f"failed parts: {', '.join(failed)}" if failed else ""
    return ClaimResult.decide(
        passed,
        metrics={"per_seed": rows, "parts": {k: [r[k] for r in rows] for k in
                                             ("kl_monotone", "kl_shrinks", "bounds_hold", "funnel_interior")}},
        baseline={"gap_depth6": gaps, "kl_bound_input_layer": kl0, "w_bound_input_layer": w0},
        reason=reason, headline=headline, control=control,
    )
