"""Claim check for Learning Rates as a Function of Batch Size: A Random Matrix Theory Approach to Neural Network
Training (Granziol, Zohren, Roberts, 2022).

The paper's prediction: the mini-batch Hessian is the empirical Hessian plus a random fluctuation of variance ~1/B,
so its largest eigenvalue grows as the batch size B shrinks, lambda_max(B) ~ lambda_inf + c/B (saturating at large
B); hence the largest stable SGD step size grows linearly in B at small B, and Adam's as sqrt(B).

Setup, fixed before the first run: scikit-learn digits (paperzoo.data.digits_split, 30% test held out, float64,
N ~ 1258 training rows), an MLP 64 -> 16 (tanh) -> 10 with PyTorch's default initialisation scale drawn from the seed,
loss 0.5 * ||f(x) - onehot(y)||^2 averaged over the batch. Everything is measured at the initialisation.
(A) Spectrum: lambda_max of num_batches = 8 random mini-batch Hessians (without replacement) at
B in {2, 4, 8, 16, 32, 64, 128, 256, 512, 1024} (smoke {2, 8, 32, 128}, 3 batches, 20 Lanczos steps) via
batch_hessian_spectrum, fitted to
lambda_inf + c/B (fit_batch_sharpness, 95% CI). (B) Thresholds: divergence_threshold_lr over the log grid
10^-3 .. 10^2 (11 points; smoke 6) then log-bisection to rtol 0.05 (smoke 0.5); a run is T = 100 steps (smoke 10) of
SGD (no momentum) or Adam (default betas, eps) at batch size B from the initialisation, batches from a seeded
generator, and it diverged iff a loss is non-finite or the final full-training-set loss exceeds the initial one.
Small-B regime: B in {1, 2, 4, 8} (smoke {1, 4}). 3 seeds (ctx.seeds(3): split, init, batches).

Criterion: pass iff (A) for every seed the fitted c has its 95% CI above 0 and mean lambda_max at the smallest B
exceeds that at the largest B by more than two combined standard errors; (B1) the log-log slope of the SGD threshold
against B, pooled over seeds and the small-B regime, is within 0.25 of 1; (B2) the Adam slope is within 0.25 of 0.5.
Reported: per-seed slopes and the slope CI, lambda_inf against the full-batch lambda_max, c.

Control: the full-batch regime B in {N/4, N/2, N} (smoke {N/2, N}), where the paper predicts saturation (slope ~ 0):
the SGD thresholds measured the same way through test (B1); it must fail.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std
from paperzoo.data.digits import digits_split
from paperzoo.diagnostics.batch_hessian import (batch_hessian_spectrum, divergence_threshold_lr, fit_batch_sharpness,
                                                loglog_slope)
from paperzoo.diagnostics.hessian import hessian_operator, top_eigenpairs

HIDDEN = 16
SLOPE_TOL = 0.25
TARGET = {"sgd": 1.0, "adam": 0.5}
CRITERION = (
    "Digits, MLP 64-16(tanh)-10, squared loss on one-hot targets, at the initialisation; 3 seeds. (A) For every seed "
    "the fit lambda_max(B) = lambda_inf + c/B over B in {2,...,1024} (8 mini-batch Hessians per B, Lanczos) has the "
    "95% CI of c above 0, and mean lambda_max at the smallest B exceeds that at the largest by > 2 combined SE. "
    "(B) Divergence-threshold step size (log sweep 1e-3..1e2 + log bisection, 100 steps, diverged = non-finite or "
    "final full-data loss above the initial) over the small-B regime B in {1, 2, 4, 8}: the pooled log-log slope in "
    "B is within 0.25 of 1 for SGD and within 0.25 of 0.5 for Adam. Control: the full-batch regime B in "
    "{N/4, N/2, N} through the SGD slope-1 test; it must fail."
)


def _loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (out - torch.nn.functional.one_hot(y, 10).to(out.dtype)).square().sum(1).mean()


def _init_model(seed: int) -> torch.nn.Module:
    """PyTorch's default scale, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases, from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, 10)).double()
    with torch.no_grad():
        for layer in (model[0], model[2]):
            bound = layer.in_features ** -0.5
            layer.weight.uniform_(-bound, bound, generator=g)
            layer.bias.uniform_(-bound, bound, generator=g)
    return model


def _make_train_fn(x, y, seed: int, batch: int, steps: int, optimizer: str):
    template = _init_model(seed)
    n = x.shape[0]
    with torch.no_grad():
        initial = float(_loss(template(x), y))

    def train(lr: float) -> bool:
        model = _init_model(seed)
        opt = (torch.optim.SGD(model.parameters(), lr=lr) if optimizer == "sgd"
               else torch.optim.Adam(model.parameters(), lr=lr))
        g = torch.Generator().manual_seed(seed + 7)
        for _ in range(steps):
            idx = torch.randperm(n, generator=g)[:batch] if batch < n else torch.arange(n)
            opt.zero_grad()
            loss = _loss(model(x[idx]), y[idx])
            if not bool(torch.isfinite(loss)):
                return True
            loss.backward()
            opt.step()
        with torch.no_grad():
            final = float(_loss(model(x), y))
        return not math.isfinite(final) or final > initial

    return train


@claim(
    "batch-hessian-rmt",
    statement=("The largest mini-batch Hessian eigenvalue grows as the batch size shrinks (lambda_inf + c/B); the "
               "largest stable step size scales linearly in B for SGD and as sqrt(B) for Adam at small B, and "
               "saturates near the full batch."),
    criterion=CRITERION,
    baseline="the paper's scaling exponents (SGD 1, Adam 1/2) and the saturation (exponent 0) near the full batch",
    threads=1,
)
def batch_size_scaling_rules(ctx: ClaimContext) -> ClaimResult:
    spec_sizes = ctx.pick(smoke=[2, 8, 32, 128], full=[2, 4, 8, 16, 32, 64, 128, 256, 512, 1024])
    num_batches = ctx.pick(smoke=3, full=8)
    max_iter = ctx.pick(smoke=20, full=None)
    small = ctx.pick(smoke=[1, 4], full=[1, 2, 4, 8])
    steps = ctx.pick(smoke=10, full=100)
    lrs = list(np.logspace(-3, 2, ctx.pick(smoke=6, full=11)))
    rtol = ctx.pick(smoke=0.5, full=0.05)
    seeds = ctx.seeds(3)

    spectrum_ok, per_seed_fit, lam_full = [], [], []
    thresholds = {"sgd": {}, "adam": {}, "control": {}}
    control_sizes = None
    for s, seed in enumerate(seeds):
        seed = seed % (2 ** 31)
        data = digits_split(0.3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        x, y = data.train_x, data.train_y
        N = x.shape[0]
        model = _init_model(seed)
        g = torch.Generator().manual_seed(seed + 1)
        spec = batch_hessian_spectrum(model, _loss, x, y, spec_sizes, num_batches, 1, max_iter=max_iter,
                                      tol=1e-6, generator=g)
        fit = fit_batch_sharpness(spec.batch_sizes.double(), spec.mean_top, spec.se_top.clamp_min(1e-12))
        gap = float(spec.mean_top[0] - spec.mean_top[-1])
        gap_se = float((spec.se_top[0] ** 2 + spec.se_top[-1] ** 2).sqrt())
        spectrum_ok.append(fit.c_ci[0] > 0 and gap > 2 * gap_se)
        matvec, n = hessian_operator(model, _loss, x, y)
        lam_full.append(float(top_eigenpairs(matvec, n, 1, generator=g, max_iter=max_iter).eigenvalues[0]))
        per_seed_fit.append({"lambda_inf": fit.lambda_inf, "lambda_inf_ci": list(fit.lambda_inf_ci), "c": fit.c,
                             "c_ci": list(fit.c_ci), "chi2_dof": fit.chi2_dof,
                             "mean_lambda_max": spec.mean_top.tolist(), "se": spec.se_top.tolist(),
                             "converged": spec.converged})
        control_sizes = [round(N / 4), round(N / 2), N] if ctx.budget == "full" else [round(N / 2), N]
        for opt_name, sizes in (("sgd", small), ("adam", small), ("control", control_sizes)):
            optimizer = "sgd" if opt_name == "control" else opt_name
            row = []
            for B in sizes:
                res = divergence_threshold_lr(_make_train_fn(x, y, seed, B, steps, optimizer), lrs, rtol=rtol,
                                              max_bisect=40)
                row.append(res.lr)
            thresholds[opt_name][str(s)] = row

    def pooled(name, sizes_of):
        xs, ys = [], []
        for s in range(len(seeds)):
            for B, lr in zip(sizes_of, thresholds[name][str(s)]):
                if math.isfinite(lr):
                    xs.append(float(B))
                    ys.append(lr)
        if len(set(xs)) < 2:
            return None
        return loglog_slope(torch.tensor(xs, dtype=torch.float64), torch.tensor(ys, dtype=torch.float64))

    def per_seed(name, sizes_of):
        out = []
        for s in range(len(seeds)):
            row = thresholds[name][str(s)]
            if all(math.isfinite(v) for v in row):
                out.append(loglog_slope(torch.tensor([float(b) for b in sizes_of], dtype=torch.float64),
                                        torch.tensor(row, dtype=torch.float64)).slope)
            else:
                out.append(float("nan"))
        return out

    fits = {"sgd": pooled("sgd", small), "adam": pooled("adam", small), "control": pooled("control", control_sizes)}

    def within(fit, target):
        return fit is not None and abs(fit.slope - target) <= SLOPE_TOL

    a_ok = all(spectrum_ok)
    b1 = within(fits["sgd"], TARGET["sgd"])
    b2 = within(fits["adam"], TARGET["adam"])
    passed = a_ok and b1 and b2
    control_pass = within(fits["control"], TARGET["sgd"])

    def slope_info(fit):
        return None if fit is None else {"slope": fit.slope, "ci": list(fit.ci)}

    control = Control(f"SGD thresholds in the full-batch regime B in {control_sizes} (N = {control_sizes[-1]}) "
                      "through the slope-1 test", control_pass,
                      {"slope": slope_info(fits["control"]), "per_seed_slopes": per_seed("control", control_sizes),
                       "thresholds": thresholds["control"]})

    def fmt_slope(fit):
        return "nan" if fit is None else f"{fit.slope:.2f} [{fit.ci[0]:.2f}, {fit.ci[1]:.2f}]"

    cs = [f["c"] for f in per_seed_fit]
    headline = (f"lambda_max(B) = lambda_inf + c/B: c {fmt_mean_std(cs)} (CI > 0 in {sum(spectrum_ok)}/3 seeds), "
                f"lambda_max B={spec_sizes[0]} {fmt_mean_std([f['mean_lambda_max'][0] for f in per_seed_fit])} vs "
                f"B={spec_sizes[-1]} {fmt_mean_std([f['mean_lambda_max'][-1] for f in per_seed_fit])}; threshold "
                f"slope in B over {small}: SGD {fmt_slope(fits['sgd'])} (target 1 +- {SLOPE_TOL}), Adam "
                f"{fmt_slope(fits['adam'])} (target 0.5 +- {SLOPE_TOL}); control full-batch regime SGD "
                f"{fmt_slope(fits['control'])}")

    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for s, f in enumerate(per_seed_fit):
            axes[0].errorbar(spec_sizes, f["mean_lambda_max"], yerr=f["se"], fmt="o", ms=3, label=f"seed {s}")
            bb = np.array(spec_sizes, dtype=float)
            axes[0].plot(bb, f["lambda_inf"] + f["c"] / bb, "-", lw=0.8)
        axes[0].set_xscale("log")
        axes[0].set_xlabel("batch size B")
        axes[0].set_ylabel("lambda_max(H_B)")
        axes[0].legend(fontsize=7)
        colours = {"sgd": "C0", "adam": "C1", "control": "C2"}
        for name, sizes, mk in (("sgd", small, "o-"), ("adam", small, "s-"), ("control", control_sizes, "^-")):
            for s in range(len(seeds)):
                axes[1].plot(sizes, thresholds[name][str(s)], mk, ms=3, c=colours[name], label=name if s == 0 else None)
        axes[1].set_xscale("log")
        axes[1].set_yscale("log")
        axes[1].set_xlabel("batch size B")
        axes[1].set_ylabel("divergence threshold lr")
        axes[1].legend(fontsize=7)
        ctx.save_figure(fig, "scaling")

    return ClaimResult.decide(
        passed,
        metrics={"spectrum_ok_per_seed": spectrum_ok, "fits": per_seed_fit, "full_batch_lambda_max": lam_full,
                 "spectrum_batch_sizes": spec_sizes, "small_batch_sizes": small,
                 "sgd_slope": slope_info(fits["sgd"]), "adam_slope": slope_info(fits["adam"]),
                 "sgd_per_seed_slopes": per_seed("sgd", small), "adam_per_seed_slopes": per_seed("adam", small),
                 "sgd_thresholds": thresholds["sgd"], "adam_thresholds": thresholds["adam"]},
        baseline={"sgd_exponent": 1.0, "adam_exponent": 0.5, "tolerance": SLOPE_TOL, "control_exponent": 0.0},
        headline=headline, control=control,
    )
