"""Claim check for Distributionally Robust Optimization with Bias and Variance Reduction (Prospect, 2024).

Setup, fixed before the first run: least squares with Gaussian features, n = 64 (smoke) / 128 (full), d = 10,
targets y = X w* + N(0, 1) noise; superquantile (CVaR) spectrum at alpha = 0.5, chi-square shift cost nu = 1,
ridge mu = 0.1. Budget: 20 (smoke) / 60 (full) passes over the data. Learning-rate grid
{3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1} for every method; each method is scored at its best grid value (lowest final
suboptimality, per seed). Methods: Prospect (:func:`paperzoo.optim.solve_prospect`, n steps per pass);
minibatch SGD on the plug-in objective (batch 16, batch CVaR weights via
:func:`paperzoo.optim.spectral_risk_weights` with the batch spectrum, n/16 steps per pass); full-batch gradient
descent on F (one step per pass, reported). F* from scipy L-BFGS-B (gtol 1e-14), lowered to any smaller value seen.
Relative suboptimality (F(w) - F*) / (F(w0) - F*). 3 seeds.

Issue 8 rework. The earlier version picked each method's learning rate per seed on the very run it then
scored. Now one learning rate per method ("tuned by a single learning rate") is selected by
:func:`paperzoo.core.evidence.tune` on 2 *tuning* instances (median relative suboptimality; the grid extended past
a winning edge within [1e-6, 1]), and the criterion is read on 3 fresh *test* instances (their own data and
sampling). The "SGD >= 100x Prospect" half is now a paired comparison over the test instances of log10 relative
suboptimality with margin 2 (a hundredfold) beyond two standard errors (it was a ratio of seed means). Each
(instance, method, lr) run draws its samples from a generator seeded by the instance alone, so methods and
learning rates are paired. The discriminating control is minibatch SGD (no bias or variance reduction) through
the linear-convergence half of the criterion; it must fail.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings

import numpy as np
import torch
from scipy.optimize import minimize

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison, tune
from paperzoo.optim.prospect import (cvar_spectrum, prospect_objective, solve_prospect, spectral_risk_weights,
                                     squared_loss_oracle)

LRS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
NU, MU, ALPHA, D, BATCH = 1.0, 0.1, 0.5, 10, 16
LR_BOUNDS = (1e-6, 1.0)
NUM_TUNE, NUM_TEST = 2, 3
MARGIN = 2.0  # log10 units: a hundredfold
FLOOR = 1e-17  # relative suboptimality below float64 resolution, for the log
METHODS = ("prospect", "sgd", "gd")


def _sgd(oracle, n, spectrum_b, lr, passes, g):
    w = torch.zeros(D, dtype=torch.float64)
    for _ in range(passes * (n // BATCH)):
        idx = torch.randint(n, (BATCH,), generator=g)
        losses, grads = oracle(w, idx)
        q = spectral_risk_weights(losses, spectrum_b, NU)
        w = w - lr * (q @ grads + MU * w)
        if not bool(torch.isfinite(w).all()):
            return None
    return w


def _gd(oracle, spectrum, lr, passes):
    w = torch.zeros(D, dtype=torch.float64)
    for _ in range(passes):
        _, grad = prospect_objective(oracle, w, spectrum, NU, MU)
        w = w - lr * grad
        if not bool(torch.isfinite(w).all()):
            return None
    return w


def _instance(seed: int, n: int, spectrum):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, D, generator=g, dtype=torch.float64)
    y = X @ torch.randn(D, generator=g, dtype=torch.float64) + torch.randn(n, generator=g, dtype=torch.float64)
    oracle = squared_loss_oracle(X, y)

    def fun(w_np):
        val, grad = prospect_objective(oracle, torch.as_tensor(w_np), spectrum, NU, MU)
        return float(val), grad.numpy()

    opt = minimize(fun, np.zeros(D), jac=True, method="L-BFGS-B", options={"gtol": 1e-14, "ftol": 1e-16,
                                                                          "maxiter": 10000})
    f0 = float(prospect_objective(oracle, torch.zeros(D, dtype=torch.float64), spectrum, NU, MU)[0])
    return dict(seed=seed, oracle=oracle, f_star=float(opt.fun), f0=f0)


def _final(method, lr, inst, spectrum, spectrum_b, n, passes):
    """F(w) after the pass budget (inf when the run diverged) and, for Prospect, the objective per pass."""
    oracle, g = inst["oracle"], torch.Generator().manual_seed(inst["seed"] + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "prospect":
            try:
                res = solve_prospect(oracle, torch.zeros(D, dtype=torch.float64), spectrum, lr=lr, nu=NU, mu=MU,
                                     generator=g, max_epochs=passes, tol=0.0)
            except FloatingPointError:
                return float("inf"), None
            return float(res.objective[-1]), res.objective
    w = _sgd(oracle, n, spectrum_b, lr, passes, g) if method == "sgd" else _gd(oracle, spectrum, lr, passes)
    return (float("inf") if w is None else float(prospect_objective(oracle, w, spectrum, NU, MU)[0])), None


def _rel(value, inst):
    return max((value - inst["f_star"]) / (inst["f0"] - inst["f_star"]), 0.0)


@claim(
    "prospect",
    statement="Prospect, tuned by a single learning rate, converges linearly on a smooth, strongly convex "
              "spectral-risk (CVaR) objective with a shift cost, while minibatch SGD on the plug-in objective "
              "stalls at a biased floor with the same number of passes.",
    criterion="Least squares, n=64 (smoke) / 128 (full), d=10, CVaR 0.5, nu=1, mu=0.1, 20 / 60 passes; one lr per "
              "method tuned on 2 tuning instances by median relative suboptimality (F - F*)/(F(w0) - F*), grid "
              "{3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1} extended past a winning edge within [1e-6, 1]; criterion on 3 "
              "fresh test instances. Passes if Prospect's relative suboptimality is <= 1e-6 (smoke) / 1e-10 (full) "
              "on every test instance, and minibatch SGD's (batch 16) exceeds Prospect's on log10 scale by a "
              "paired margin of 2 (a hundredfold) beyond 2 SE. Control: minibatch SGD through the first half "
              "(<= the target on every test instance); it must fail.",
    baseline="Minibatch SGD with plug-in batch CVaR weights (same grid size and passes); full-batch gradient "
             "descent on F reported",
    threads=1,  # many tiny tensor ops per step: thread hand-offs cost more than the arithmetic on a loaded machine
)
def linear_convergence_cvar(ctx: ClaimContext) -> ClaimResult:
    n = ctx.pick(smoke=64, full=128)
    passes = ctx.pick(smoke=20, full=60)
    target = ctx.pick(smoke=1e-6, full=1e-10)
    spectrum, spectrum_b = cvar_spectrum(n, ALPHA), cvar_spectrum(BATCH, ALPHA)
    start = time.perf_counter()
    seeds = [s % (2**31) for s in ctx.seeds(NUM_TUNE + NUM_TEST)]
    instances = [_instance(s, n, spectrum) for s in seeds]
    tuning, testing = instances[:NUM_TUNE], instances[NUM_TUNE:]

    def evaluator(method):
        def evaluate(lr):
            vals = [_final(method, lr, inst, spectrum, spectrum_b, n, passes)[0] for inst in tuning]
            for inst, v in zip(tuning, vals):
                inst["f_star"] = min(inst["f_star"], v)  # F* is lowered to any smaller value seen
            return statistics.median(_rel(v, inst) if math.isfinite(v) else math.inf for v, inst in zip(vals, tuning))
        return evaluate

    sel = tune({m: evaluator(m) for m in METHODS}, LRS, bounds=LR_BOUNDS)
    finals = {m: [_final(m, sel[m].best, inst, spectrum, spectrum_b, n, passes) for inst in testing]
              for m in METHODS}
    for j, inst in enumerate(testing):
        inst["f_star"] = min([inst["f_star"]] + [finals[m][j][0] for m in METHODS])
    rel = {m: [_rel(v, inst) if math.isfinite(v) else math.inf for (v, _), inst in zip(finals[m], testing)]
           for m in METHODS}
    rates = []
    for (_, curve), inst in zip(finals["prospect"], testing):
        if curve is None:
            continue
        r = ((curve - inst["f_star"]) / (inst["f0"] - inst["f_star"])).clamp_min(1e-300)
        floor = torch.nonzero(r < 1e-13)  # slope of log10 suboptimality per pass, before the float64 floor
        end = int(floor[0]) if floor.numel() else r.shape[0] - 1
        rates.append(float((r[end].log10() - r[0].log10()) / max(end, 1)))
    seconds = time.perf_counter() - start

    def log_rel(m):
        return [math.log10(max(v, FLOOR)) if math.isfinite(v) else math.inf for v in rel[m]]

    prospect_ok = all(r <= target for r in rel["prospect"])
    fewer = paired_comparison(log_rel("prospect"), log_rel("sgd"), margin=MARGIN)
    control = Control("minibatch SGD (no bias or variance reduction) through the linear-convergence half "
                      f"(<= {target:g} on every test instance)", all(r <= target for r in rel["sgd"]),
                      dict(rel_subopt=rel["sgd"]))
    edge = [m for m in METHODS if sel[m].at_edge]
    headline = (f"test relative suboptimality after {passes} passes: {fmt_mean_std(rel['prospect'])} (Prospect, lr "
                f"{sel['prospect'].best:.3g}) vs {fmt_mean_std(rel['sgd'])} (minibatch SGD, lr {sel['sgd'].best:.3g}),"
                f" {fmt_mean_std(rel['gd'])} (GD); {NUM_TEST} test instances, paired log10 gain {fewer.diff_mean:.2f} "
                f"± {fewer.diff_se:.2f} SE (margin {MARGIN:g}); target {target:g}"
                + (f"; lr at a bound: {', '.join(edge)}" if edge else ""))
    return ClaimResult.decide(
        prospect_ok and fewer.wins,
        metrics={"rel_subopt": statistics.fmean(rel["prospect"]), "rel_subopt_max": max(rel["prospect"]),
                 "rel_subopt_per_instance": rel["prospect"],
                 "log10_rate_per_pass": statistics.fmean(rates) if rates else None,
                 "paired_log10_vs_sgd": fewer.as_metrics(),
                 "selection": {m: sel[m].as_metrics() for m in METHODS}, "n": n, "passes": passes,
                 "target": target, "seconds": seconds},
        baseline={"rel_subopt": rel["sgd"], "gd_rel_subopt": rel["gd"]},
        headline=headline, control=control,
    )
