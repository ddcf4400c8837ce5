"""Claim check for SGD Implicitly Regularizes Generalization Error (Roberts, 2018).

The paper's predictions, as measured here: (1) one GD step grows the generalization gap, on average over training
sets, by eta tr(Sigma) / N (Sigma: covariance of per-sample gradients); (2) one epoch of SGD differs from the same
number of GD steps, to second order in eta, by a descent step on that gradient covariance: E[theta_SGD] - theta_GD
= -(eta^2 m (m - 1) / 4N) grad tr(Sigma_hat) (m = N / B updates; derivation in
paperzoo.diagnostics.sgd_generalization_gap), so SGD ends with a smaller tr(Sigma_hat), the rate at which GD grows
the gap, and the effect depends on the model only through the per-sample gradient statistics.

Setup, fixed before the first run (float64). (A, B) Logistic regression (nn.Linear(5, 1), binary cross-entropy
with logits), N = 64 training points x ~ N(0, I_5), labels ~ Bernoulli(sigmoid(x . w*)) with |w*| = 2, start
theta_0 ~ N(0, 0.5^2) per coordinate; lr = 0.05; B in {8, 16} (m = 8, 4); R = 1000 random orderings (smoke 200)
against the deterministic m GD steps. Measured: D_r = theta_SGD,r - theta_GD, its mean D and the standard error
SE = sqrt(tr Cov(D_r) / R); dT = mean_r tr Sigma_hat(theta_SGD,r) - tr Sigma_hat(theta_GD) with its standard
error. Predicted: delta = sgd_epoch_shift(...).shift and grad tr Sigma_hat . delta. (C) Linear regression
(nn.Linear(5, 1, bias=False), loss 0.5 * MSE), x ~ N(0, I_5), y = x . w* + 0.5 eps, start with |theta_0 - w*| = 1,
N = 64, one GD step of lr = 0.005 on each of S = 4000 (smoke 800) independent training sets; measured gap change
with the exact population loss L(theta) = (|theta - w*|^2 + 0.25) / 2; predicted eta tr(Sigma) / N with the closed
form tr(Sigma) = 6 |theta_0 - w*|^2 + 5 * 0.25. 3 seeds.

Tolerance (fixed in advance): 25% relative on (A, B) plus 3 standard errors: the neglected O(eta^3) terms are of
relative size ~ m eta lambda_max(H) ~ 0.1 at lr = 0.05, m = 8; 5% relative plus 3 SE on (C), whose neglected
O(eta^2) term is ~ eta N |grad|^2 / tr(Sigma) ~ 5% at most and averages near zero.

Criterion: pass iff for every seed and both B (A) |D| > 3 SE and |D - delta| <= 0.25 |delta| + 3 SE; (B) dT < -2 SE
and |dT - grad tr . delta| <= 0.25 |grad tr . delta| + 3 SE; and for every seed (C) the mean measured gap change
exceeds 3 SE and is within 5% + 3 SE of eta tr(Sigma) / N.

Control (where the theory predicts no SGD-GD difference): per-sample losses 0.5 |theta - z_i|^2 (z_i ~ N(1, I_5),
identical per-sample Hessians, so tr Sigma_hat does not depend on theta and delta = 0), the same N, B, lr, R and
seeds, through criterion (A): it must fail.
"""

from __future__ import annotations

import math

import torch
from torch.func import grad, vmap

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std
from paperzoo.diagnostics._functional import flat_loss
from paperzoo.diagnostics.sgd_generalization_gap import (_noise_trace_fn, _simulate, expected_gd_step_gap_change,
                                                         sgd_epoch_shift)

D, N, LR, BATCHES = 5, 64, 0.05, (8, 16)
W_NORM, INIT_STD = 2.0, 0.5
LIN_LR, LIN_NOISE = 0.005, 0.5
TOL_AB, TOL_C = 0.25, 0.05
CRITERION = (
    "Logistic regression d = 5, N = 64, lr = 0.05, B in {8, 16}, 1000 random orderings vs m = N/B GD steps; linear "
    "regression d = 5, N = 64, 4000 training sets, one GD step lr = 0.005; 3 seeds. Pass iff for every seed and B "
    "(A) the mean SGD-GD displacement D has |D| > 3 SE and |D - delta| <= 0.25 |delta| + 3 SE, delta = -(eta^2 m(m-1) "
    "/ 4N) grad tr Sigma_hat; (B) mean tr Sigma_hat(theta_SGD) - tr Sigma_hat(theta_GD) < -2 SE and within 25% + 3 "
    "SE of grad tr Sigma_hat . delta; and (C) the dataset-mean one-step GD gap change > 3 SE and within 5% + 3 SE of "
    "eta tr(Sigma)/N. Control: per-sample losses 0.5|theta - z_i|^2 (theta-independent Sigma, delta = 0), same N, "
    "B, lr, runs, through (A); it must fail."
)

_bce = torch.nn.functional.binary_cross_entropy_with_logits


def _half_mse(out, y):
    return 0.5 * torch.nn.functional.mse_loss(out, y, reduction="sum") / out.shape[0]


def _logistic_data(n: int, w_star: torch.Tensor, g: torch.Generator):
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    p = torch.sigmoid(x @ w_star)
    y = (torch.rand(n, generator=g, dtype=torch.float64) < p).to(torch.float64)
    return x, y[:, None]


def _epoch_comparison(model, loss_fn, x, y, B, runs, g, x_test=None, y_test=None):
    pred = sgd_epoch_shift(model, loss_fn, x, y, batch_size=B, lr=LR)
    theta0, batch_loss, sample_loss = flat_loss(model, loss_fn)
    sgd, gd, _ = _simulate(batch_loss, theta0, x, y, B, LR, runs, g)
    Dr = sgd - gd
    Dm = Dr.mean(0)
    se = math.sqrt(float(Dr.var(0).sum()) / runs)
    delta = pred.shift
    rec = {"D": Dm.tolist(), "delta": delta.tolist(), "D_norm": float(Dm.norm()), "delta_norm": float(delta.norm()),
           "se": se, "err": float((Dm - delta).norm()),
           "ratio": float(Dm @ delta / (delta @ delta)) if float(delta.norm()) > 0 else float("nan")}
    rec["significant"] = rec["D_norm"] > 3 * se
    rec["A"] = rec["significant"] and rec["err"] <= TOL_AB * rec["delta_norm"] + 3 * se
    if x_test is None:
        return rec
    trace = _noise_trace_fn(sample_loss)
    tr_sgd = vmap(trace, in_dims=(0, None, None))(sgd, x, y)
    tr_gd = float(trace(gd, x, y))
    dT = tr_sgd - tr_gd
    dT_mean, dT_se = float(dT.mean()), float(dT.std()) / math.sqrt(runs)
    dT_pred = float(pred.noise_trace_grad @ delta)
    rec.update(dT=dT_mean, dT_se=dT_se, dT_pred=dT_pred, trace_start=pred.noise_trace)
    rec["B"] = dT_mean < -2 * dT_se and abs(dT_mean - dT_pred) <= TOL_AB * abs(dT_pred) + 3 * dT_se

    def gap(theta):
        return batch_loss(theta, x_test, y_test) - batch_loss(theta, x, y)

    # the logistic model's flat parameters are (weight (D,), bias): one matmul for all runs instead of vmap
    def gaps_all(th):
        def mean_loss(xx, yy):
            logits = xx @ th[:, :D].T + th[:, D]
            return _bce(logits, yy.expand_as(logits), reduction="none").mean(0)
        return mean_loss(x_test, y_test) - mean_loss(x, y)

    dG = gaps_all(sgd) - gaps_all(gd[None])[0]
    rec.update(gap_diff=float(dG.mean()), gap_diff_se=float(dG.std()) / math.sqrt(runs),
               gap_diff_pred=float(grad(gap)(theta0) @ delta), gap_gd=float(gap(gd)))
    return rec


def _gd_gap_part(n_sets: int, g: torch.Generator):
    w_star = torch.randn(D, generator=g, dtype=torch.float64)
    v = torch.randn(D, generator=g, dtype=torch.float64)
    theta0 = w_star + v / v.norm()
    model = torch.nn.Linear(D, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(theta0[None])
    _, batch_loss, _ = flat_loss(model, _half_mse)
    x = torch.randn(n_sets, N, D, generator=g, dtype=torch.float64)
    y = (x @ w_star + LIN_NOISE * torch.randn(n_sets, N, generator=g, dtype=torch.float64))[..., None]
    gbar = vmap(grad(batch_loss), in_dims=(None, 0, 0))(theta0, x, y)
    theta1 = theta0 - LIN_LR * gbar

    def pop(theta):
        return 0.5 * (((theta - w_star) ** 2).sum(-1) + LIN_NOISE ** 2)

    train0 = vmap(batch_loss, in_dims=(None, 0, 0))(theta0, x, y)
    train1 = vmap(batch_loss)(theta1, x, y)
    change = (pop(theta1) - pop(theta0)) - (train1 - train0)
    trace_sigma = (D + 1) * float(((theta0 - w_star) ** 2).sum()) + D * LIN_NOISE ** 2
    pred = expected_gd_step_gap_change(trace_sigma, N, LIN_LR)
    mean, se = float(change.mean()), float(change.std()) / math.sqrt(n_sets)
    ok = mean > 3 * se and abs(mean - pred) <= TOL_C * pred + 3 * se
    return {"mean": mean, "se": se, "pred": pred, "ratio": mean / pred, "C": ok}


@claim(
    "sgd-implicit-gen-reg",
    statement=("Relative to the same number of GD updates, one SGD epoch takes, to second order in the step size, an "
               "extra descent step on the trace of the per-sample gradient covariance, the quantity that sets how "
               "fast a GD step grows the generalization gap (eta tr(Sigma)/N on average over training sets)."),
    criterion=CRITERION,
    baseline="full-batch GD with the same number of updates and step size",
    threads=1,
)
def sgd_descends_gradient_covariance(ctx: ClaimContext) -> ClaimResult:
    runs = ctx.pick(smoke=200, full=1000)
    n_sets = ctx.pick(smoke=800, full=4000)
    per_seed, control_seed = [], []
    for seed in ctx.seeds(3):
        g = torch.Generator().manual_seed(seed)
        w_star = torch.randn(D, generator=g, dtype=torch.float64)
        w_star = W_NORM * w_star / w_star.norm()
        x, y = _logistic_data(N, w_star, g)
        xt, yt = _logistic_data(4096, w_star, g)
        model = torch.nn.Linear(D, 1).double()
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(INIT_STD * torch.randn(p.shape, generator=g, dtype=torch.float64))
        rec = {"per_B": {str(B): _epoch_comparison(model, _bce, x, y, B, runs, g, xt, yt) for B in BATCHES}}
        rec["gd_gap"] = _gd_gap_part(n_sets, g)
        per_seed.append(rec)

        quad = torch.nn.Linear(D, D).double()
        with torch.no_grad():
            quad.weight.zero_()
            quad.bias.copy_(INIT_STD * torch.randn(D, generator=g, dtype=torch.float64))
        quad.weight.requires_grad_(False)
        z = 1.0 + torch.randn(N, D, generator=g, dtype=torch.float64)
        xq = torch.zeros(N, D, dtype=torch.float64)
        control_seed.append({str(B): _epoch_comparison(quad, _half_mse, xq, z, B, runs, g) for B in BATCHES})

    ok_a = all(r["per_B"][str(B)]["A"] for r in per_seed for B in BATCHES)
    ok_b = all(r["per_B"][str(B)]["B"] for r in per_seed for B in BATCHES)
    ok_c = all(r["gd_gap"]["C"] for r in per_seed)
    ctrl_pass = all(c[str(B)]["A"] for c in control_seed for B in BATCHES)
    control = Control("identical per-sample Hessians (0.5|theta - z_i|^2: delta = 0) through criterion (A)", ctrl_pass,
                      {"D_over_se": [c[str(B)]["D_norm"] / c[str(B)]["se"] for c in control_seed for B in BATCHES],
                       "per_seed": control_seed})

    def col(B, key):
        return [r["per_B"][str(B)][key] for r in per_seed]

    b0 = BATCHES[0]
    ctrl_z = control.metrics["D_over_se"]
    headline = (f"B={b0}: SGD-GD shift / predicted {fmt_mean_std(col(b0, 'ratio'))}, |D|/SE "
                f"{fmt_mean_std([r['per_B'][str(b0)]['D_norm'] / r['per_B'][str(b0)]['se'] for r in per_seed])}; "
                f"tr Sigma change measured {fmt_mean_std(col(b0, 'dT'))} vs predicted {fmt_mean_std(col(b0, 'dT_pred'))}"
                f"; B={BATCHES[1]} shift ratio {fmt_mean_std(col(BATCHES[1], 'ratio'))}; GD one-step gap change / "
                f"(eta trSigma/N) {fmt_mean_std([r['gd_gap']['ratio'] for r in per_seed])}; control |D|/SE "
                f"{fmt_mean_std(ctrl_z)} (predicted 0)")

    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        for j, B in enumerate(BATCHES):
            pred = [v for r in per_seed for v in r["per_B"][str(B)]["delta"]]
            meas = [v for r in per_seed for v in r["per_B"][str(B)]["D"]]
            ax.plot(pred, meas, "o", ms=4, c=f"C{j}", label=f"B={B}")
        lim = max(abs(v) for r in per_seed for B in BATCHES for v in r["per_B"][str(B)]["delta"]) * 1.2
        ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
        ax.set_xlabel("predicted E[theta_SGD] - theta_GD (per coordinate)")
        ax.set_ylabel("measured (mean over orderings)")
        ax.legend(fontsize=7)
        ctx.save_figure(fig, "shift_predicted_vs_measured")

    return ClaimResult.decide(
        ok_a and ok_b and ok_c,
        metrics={"per_seed": per_seed, "criterion_A": ok_a, "criterion_B": ok_b, "criterion_C": ok_c,
                 "lr": LR, "batches": list(BATCHES), "runs": runs, "n_sets": n_sets},
        baseline={"gd_gap_after_epoch": {str(B): col(B, "gap_gd") for B in BATCHES},
                  "gap_diff_sgd_minus_gd": {str(B): col(B, "gap_diff") for B in BATCHES},
                  "gap_diff_predicted": {str(B): col(B, "gap_diff_pred") for B in BATCHES}},
        headline=headline, control=control,
    )
