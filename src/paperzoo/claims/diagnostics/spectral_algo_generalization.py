"""Claim check for Generalization error of spectral algorithms (Velikanov, Panov, Yarotsky, 2024).

The paper's prediction: the test risk of a spectral algorithm is a functional L[h] of its profile; for power laws
(spectrum l^-nu, target v_l^2 ~ l^-(kappa+1), noisy labels) optimally tuned KRR saturates when kappa > 2 nu (rate
2nu/(2nu+1)) while optimally stopped gradient flow keeps the rate kappa/(kappa+1); below the threshold both share it.

Setup, fixed before the first claim run: Gaussian features, nu = 1.5, p = 2000 (smoke 400), noise 0.01; smooth
target kappa = 6 (> 2 nu = 3, saturation regime); n in {100, 200, 400, 800} (smoke {50, 100, 200}); 3 seeds x 10
(smoke 3) training sets per n; KRR on 24 log-spaced ridges in [1e-7, 1], gradient flow on 24 log-spaced times in
[1, 1e7]; the tuned risk of a seed is the smallest trial-mean risk on the grid (exact population risks,
:func:`paperzoo.diagnostics.spectral_algorithms.empirical_spectral_risk`); the prediction is the grid minimum of
:func:`~paperzoo.diagnostics.spectral_algorithms.profile_loss` (Wishart model). Slopes: least squares of log excess
risk (risk - noise) on log n, per seed; CI = mean +- 2 SE over seeds.

Criterion: (A) every measured tuned risk within 10% (relative) of the predicted one; (B) for KRR and GF the seed-mean
measured slope within 0.1 of the slope of the predicted curve on the same n; (C) GF steeper than KRR: paired
difference of slopes > 0.1 beyond 2 paired SE. Control: rough target kappa = 1.5 (< 2 nu; the paper predicts equal
exponents), same measurement; the whole criterion applied to it must fail (part C). The asymptotic exponents
(power_law_rates) are reported beside; at these n the local slopes are not yet asymptotic (a design evaluation of
the closed form, made before this criterion, gave GF 1.00 and KRR 0.78 against 0.857 and 0.75), so they are not
tested.
"""

from __future__ import annotations

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison
from paperzoo.diagnostics.spectral_algorithms import (empirical_spectral_risk, gradient_flow_profile, krr_profile,
                                                      power_law_rates, profile_loss)

NU, NOISE = 1.5, 0.01
KAPPA_SMOOTH, KAPPA_ROUGH = 6.0, 1.5
RISK_RTOL, SLOPE_TOL, GAP_MARGIN = 0.10, 0.10, 0.10
CRITERION = (
    "Gaussian features, lambda_l = l^-1.5 (p = 2000), v_l^2 = l^-7 (kappa = 6 > 2 nu), noise 0.01, n in {100, 200, "
    "400, 800}, 3 seeds x 10 draws, KRR (24 ridges) and gradient flow (24 times) tuned on the grid: (A) every "
    "measured tuned risk within 10% of the Wishart-model L[h] grid minimum; (B) seed-mean log-log slope of the "
    "excess risk within 0.1 of the predicted curve's slope, for KRR and GF; (C) GF slope - KRR slope > 0.1 beyond "
    "2 paired SE. Control: kappa = 1.5 (< 2 nu, equal exponents predicted), same measurement; it must fail."
)


def _task(p, kappa):
    i = torch.arange(1, p + 1, dtype=torch.float64)
    return i ** -NU, i ** (-(kappa + 1) / 2)


def _slope(ns, risks):
    return float(-np.polyfit(np.log(ns), np.log(np.asarray(risks) - NOISE), 1)[0])


def _measure(kappa, ns, p, seeds, trials, offset):
    lam, v = _task(p, kappa)
    grids = {"krr": [krr_profile(float(x)) for x in np.logspace(-7, 0, 24)],
             "gf": [gradient_flow_profile(float(x)) for x in np.logspace(0, 7, 24)]}
    pred = {k: [min(profile_loss(lam, v, NOISE, n, pr).risk for pr in g) for n in ns] for k, g in grids.items()}
    meas = {k: [[] for _ in seeds] for k in grids}
    edge = False
    for s, seed in enumerate(seeds):
        for n in ns:
            profiles = grids["krr"] + grids["gf"]
            g = torch.Generator().manual_seed(seed + 7919 * n + offset)
            mean = empirical_spectral_risk(lam, v, NOISE, n, profiles, trials=trials, generator=g).mean
            for j, k in enumerate(("krr", "gf")):
                block = mean[24 * j:24 * (j + 1)]
                i = int(block.argmin())
                edge |= i in (0, 23)
                meas[k][s].append(float(block[i]))
    slopes = {k: [_slope(ns, m) for m in meas[k]] for k in meas}
    pred_slopes = {k: _slope(ns, pred[k]) for k in pred}
    miss = max(abs(m / pred[k][i] - 1) for k in meas for row in meas[k] for i, m in enumerate(row))
    slope_ok = all(abs(np.mean(slopes[k]) - pred_slopes[k]) <= SLOPE_TOL for k in slopes)
    gap = paired_comparison(slopes["gf"], slopes["krr"], margin=GAP_MARGIN, lower_is_better=False)
    passed = miss <= RISK_RTOL and slope_ok and gap.wins
    return dict(predicted=pred, measured=meas, slopes=slopes, predicted_slopes=pred_slopes, worst_miss=miss,
                slope_ok=slope_ok, gap=gap, passed=passed, edge=edge, rates=power_law_rates(NU, kappa)._asdict())


@claim(
    "spectral-algo-generalization",
    statement=("The test risk of a spectral algorithm is predicted by a functional of its profile; for a smooth "
               "power-law target optimally tuned KRR saturates while optimally stopped gradient flow decays faster, "
               "and for a rough target both decay at the same rate."),
    criterion=CRITERION,
    baseline="optimally tuned KRR (the saturating algorithm) and the Wishart-model prediction L[h]",
    threads=1,
)
def gradient_flow_beats_saturated_krr(ctx: ClaimContext) -> ClaimResult:
    ns = ctx.pick(smoke=[50, 100, 200], full=[100, 200, 400, 800])
    p = ctx.pick(smoke=400, full=2000)
    trials = ctx.pick(smoke=3, full=10)
    seeds = ctx.seeds(3)
    main = _measure(KAPPA_SMOOTH, ns, p, seeds, trials, 0)
    ctl = _measure(KAPPA_ROUGH, ns, p, seeds, trials, 1_000_003)
    control = Control("rough target kappa = 1.5 < 2 nu (equal exponents predicted), same measurement and criterion",
                      ctl["passed"], {"slopes": ctl["slopes"], "predicted_slopes": ctl["predicted_slopes"],
                                      "slope_gap": ctl["gap"].as_metrics(), "worst_relative_miss": ctl["worst_miss"]})
    headline = (f"kappa = 6 > 2 nu = 3, n = {ns[0]}..{ns[-1]}, 3 seeds: slope GF {fmt_mean_std(main['slopes']['gf'])}"
                f" vs KRR {fmt_mean_std(main['slopes']['krr'])} (L[h]: {main['predicted_slopes']['gf']:.3f} vs "
                f"{main['predicted_slopes']['krr']:.3f}; asymptotic {main['rates']['gradient_flow']:.3f} vs "
                f"{main['rates']['krr']:.3f}); worst risk miss vs L[h] {main['worst_miss']:.1%}; control kappa = 1.5:"
                f" GF {fmt_mean_std(ctl['slopes']['gf'])} vs KRR {fmt_mean_std(ctl['slopes']['krr'])}")

    def clean(r):
        return {k: (val.as_metrics() if k == "gap" else val) for k, val in r.items()}

    metrics = {"ns": ns, "p": p, "trials": trials, "saturated": clean(main), "control": clean(ctl)}
    baseline = {"risk_rtol": RISK_RTOL, "slope_tol": SLOPE_TOL, "gap_margin": GAP_MARGIN}
    if main["edge"] or ctl["edge"]:
        return ClaimResult("inconclusive", metrics, baseline, "a tuned value sat on the edge of its grid", headline,
                           control)
    return ClaimResult.decide(main["passed"], metrics=metrics, baseline=baseline, headline=headline, control=control)
