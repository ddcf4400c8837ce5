"""Claim check for Neural Collapse in Deep Linear Networks: From Balanced to Imbalanced Data (Dang et al., 2023).

The paper's predictions for the deep linear unconstrained-features model trained with MSE and weight decay
(:mod:`paperzoo.diagnostics.deep_linear_collapse`): (1) with balanced classes (and an unregularised last-layer
bias) the global minimiser collapses every class to its mean at every layer and the centred class means form a
simplex ETF at every layer; (2) with imbalanced classes and no bias, the class means are orthogonal at every layer,
with lengths fixed in closed form by the class sizes, the depth and the weight-decay constants.

Setup, fixed before the first run of this check: full: depths M in {1, 3, 5}, width d = 16, K = 4 classes,
lambda_W = lambda_H = 5e-3; balanced n_k = 20 each (with bias), imbalanced n = (40, 20, 10, 10) (bias-free);
smoke: M = 2, d = 8, K = 3, balanced n_k = 7, imbalanced (12, 6, 3). Training: full-batch gradient descent with
heavy-ball momentum 0.9 (the official recipe), lr 0.5, entries initialised N(0, 0.2^2), float64, stop at gradient
norm 1e-8 (smoke 1e-6) or 4000 iterations (smoke 1000); 3 seeds (the initialisation). Measured on the trained
models, at the input of every layer (and, in (2), at the outputs and the rows of W_M...W_1):

(1) balanced: NC1 = tr(Sigma_W Sigma_B^+)/K <= 1e-4 and max |cos(mu_k - mu_G, mu_l - mu_G) + 1/(K-1)| <= 0.02 at
    every layer, every depth and seed;
(2) imbalanced: max |cos(mu_k, mu_l)| <= 0.02 (uncentred means), NC1 <= 1e-4, and every class-mean norm (every
    layer and the outputs) and product-row norm within 2% (relative) of the closed form of
    :func:`~paperzoo.diagnostics.deep_linear_collapse.imbalanced_mse_geometry`, every depth and seed.

Control: the same trained imbalanced models measured against the balanced prediction: the centred cosines within
0.02 of -1/(K-1) at every layer, and the norms within 2% of the closed form for equal class sizes n_k = N/K (the
same N, depth and lambdas). The paper predicts the imbalanced geometry is not the balanced one, so this must fail.
"""

from __future__ import annotations

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std
from paperzoo.diagnostics.deep_linear_collapse import (imbalanced_geometry_deviation, imbalanced_mse_geometry,
                                                       layerwise_collapse, train_deep_linear_ufm)

NC1_TOL = 1e-4
COS_TOL = 0.02
NORM_RTOL = 0.02
LAMBDAS = (5e-3, 5e-3)
CRITERION = (
    "Deep linear UFM, MSE, lambda_W = lambda_H = 5e-3, K = 4, d = 16, depths M in {1, 3, 5}, GD with momentum 0.9 "
    "to gradient norm 1e-8, 3 seeds: (1) balanced (n_k = 20, with bias): at every layer NC1 <= 1e-4 and every "
    "centred class-mean cosine within 0.02 of -1/(K-1); (2) imbalanced bias-free n = (40, 20, 10, 10): at every "
    "layer and the outputs every |cosine| of class means <= 0.02, NC1 <= 1e-4, and every class-mean norm and "
    "product-row norm within 2% (relative) of the closed-form optimum. Control: the imbalanced models against the "
    "balanced prediction (centred cosines -1/(K-1) within 0.02 and norms within 2% of the equal-size closed form) "
    "must fail."
)


def _labels(sizes) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))


@claim(
    "deep-linear-nc",
    statement=("In deep linear unconstrained-features models with MSE and weight decay, balanced classes collapse to "
               "a simplex ETF at every layer, while imbalanced classes (bias-free) give orthogonal class means "
               "whose lengths follow a closed form in the class sizes, the depth and the regularisation."),
    criterion=CRITERION,
    baseline="the closed-form global minimiser (orthogonal frame with size-dependent lengths; the ETF when balanced)",
    threads=1,
)
def deep_linear_collapse_geometry(ctx: ClaimContext) -> ClaimResult:
    depths = ctx.pick(smoke=[2], full=[1, 3, 5])
    width = ctx.pick(smoke=8, full=16)
    balanced = ctx.pick(smoke=[7, 7, 7], full=[20, 20, 20, 20])
    imbalanced = ctx.pick(smoke=[12, 6, 3], full=[40, 20, 10, 10])
    tol = ctx.pick(smoke=1e-6, full=1e-8)
    max_iter = ctx.pick(smoke=1000, full=4000)
    K = len(imbalanced)
    N = sum(imbalanced)
    equal = [N // K + (1 if k < N % K else 0) for k in range(K)]
    yb, yi = _labels(balanced), _labels(imbalanced)

    def train(y, depth, bias, seed):
        return train_deep_linear_ufm(y, depth=depth, width=width, lambdas=LAMBDAS, bias=bias, lr=0.5, momentum=0.9,
                                     init_std=0.2, max_iter=max_iter, tol=tol,
                                     generator=torch.Generator().manual_seed(seed))

    rows = {}
    ok_bal = ok_imb = True
    control_etf_ok = control_len_ok = True
    for depth in depths:
        geo = imbalanced_mse_geometry(imbalanced, depth, LAMBDAS)
        geo_equal = imbalanced_mse_geometry(equal, depth, LAMBDAS)
        r = {k: [] for k in ("bal_nc1", "bal_cos_err", "imb_cos", "imb_nc1", "imb_norm_err", "imb_loss_gap",
                             "bal_converged", "imb_converged", "ctl_etf_cos_err", "ctl_equal_norm_err")}
        for seed in ctx.seeds(3):
            fb = train(yb, depth, True, seed)
            lc = layerwise_collapse(fb.H, list(fb.weights), yb)
            r["bal_nc1"].append(float(lc.nc1.max()))
            r["bal_cos_err"].append(float(lc.max_etf_cosine_error.max()))
            r["bal_converged"].append(fb.converged)
            fi = train(yi, depth, False, seed + 1)
            dev = imbalanced_geometry_deviation(fi.H, list(fi.weights), yi, geo)
            r["imb_cos"].append(float(dev.max_abs_cosine.max()))
            r["imb_nc1"].append(float(dev.nc1.max()))
            r["imb_norm_err"].append(dev.max_relative_error)
            r["imb_loss_gap"].append(fi.loss - geo.objective)
            r["imb_converged"].append(fi.converged)
            # control: the same imbalanced model against the balanced prediction
            ctl = layerwise_collapse(fi.H, list(fi.weights), yi)
            r["ctl_etf_cos_err"].append(float(ctl.max_etf_cosine_error.max()))
            # the equal-size lengths, relabelled with the actual class sizes so that the same measurement applies
            balanced_lengths = geo_equal._replace(class_sizes=geo.class_sizes)
            r["ctl_equal_norm_err"].append(
                imbalanced_geometry_deviation(fi.H, list(fi.weights), yi, balanced_lengths).max_relative_error)
        ok_bal &= all(v <= NC1_TOL for v in r["bal_nc1"]) and all(v <= COS_TOL for v in r["bal_cos_err"])
        ok_imb &= (all(v <= COS_TOL for v in r["imb_cos"]) and all(v <= NC1_TOL for v in r["imb_nc1"])
                   and all(v <= NORM_RTOL for v in r["imb_norm_err"]))
        control_etf_ok &= all(v <= COS_TOL for v in r["ctl_etf_cos_err"])
        control_len_ok &= all(v <= NORM_RTOL for v in r["ctl_equal_norm_err"])
        r["predicted_feature_norms"] = geo.feature_norms.tolist()
        r["predicted_product_singular_values"] = geo.product_singular_values.tolist()
        r["closed_form_objective"] = geo.objective
        rows[str(depth)] = r

    passed = ok_bal and ok_imb
    control = Control(
        "the trained imbalanced models measured against the balanced prediction (simplex-ETF centred cosines "
        "and the closed-form lengths for equal class sizes)",
        control_etf_ok and control_len_ok,
        {"etf_cosine_error_per_depth": {d: r["ctl_etf_cos_err"] for d, r in rows.items()},
         "equal_size_norm_error_per_depth": {d: r["ctl_equal_norm_err"] for d, r in rows.items()},
         "etf_part_passed": control_etf_ok, "length_part_passed": control_len_ok})

    def worst(key):
        return max(v for r in rows.values() for v in r[key])

    deep = rows[str(depths[-1])]
    headline = (f"imbalanced n = {tuple(imbalanced)}, M = {depths[-1]}, 3 seeds: max relative norm error vs closed "
                f"form {fmt_mean_std(deep['imb_norm_err'])} (worst over M {worst('imb_norm_err'):.1e}, tol "
                f"{NORM_RTOL:.0%}), max |cos| {worst('imb_cos'):.1e}, loss - closed-form minimum "
                f"{worst('imb_loss_gap'):.1e}; balanced: worst NC1 {worst('bal_nc1'):.1e}, ETF cosine error "
                f"{worst('bal_cos_err'):.1e}; control (balanced prediction on imbalanced data): ETF cosine error "
                f"{fmt_mean_std(deep['ctl_etf_cos_err'])}, equal-size length error "
                f"{fmt_mean_std(deep['ctl_equal_norm_err'])} (tol {COS_TOL}, {NORM_RTOL:.0%})")

    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for d in depths:
            geo = imbalanced_mse_geometry(imbalanced, d, LAMBDAS)
            ax.plot(imbalanced, geo.feature_norms.numpy(), "o-", label=f"closed form ||h_k||, M = {d}")
        ax.set_xlabel("class size n_k")
        ax.set_ylabel("class-mean norm of H")
        ax.legend(fontsize=7)
        ctx.save_figure(fig, "lengths")

    metrics = {"depths": depths, "width": width, "balanced_sizes": balanced, "imbalanced_sizes": imbalanced,
               "lambdas": list(LAMBDAS), "per_depth": rows,
               "worst_imbalanced_norm_error": worst("imb_norm_err"), "worst_imbalanced_cosine": worst("imb_cos"),
               "worst_balanced_nc1": worst("bal_nc1"), "worst_balanced_etf_cosine_error": worst("bal_cos_err"),
               "all_converged": bool(all(all(r["bal_converged"]) and all(r["imb_converged"])
                                         for r in rows.values())),
               "balanced_passed": ok_bal, "imbalanced_passed": ok_imb,
               "mean_imbalanced_norm_error": float(np.mean([v for r in rows.values() for v in r["imb_norm_err"]]))}
    return ClaimResult.decide(passed, metrics=metrics,
                              baseline={"norm_rtol": NORM_RTOL, "cos_tol": COS_TOL, "nc1_tol": NC1_TOL},
                              headline=headline, control=control)
