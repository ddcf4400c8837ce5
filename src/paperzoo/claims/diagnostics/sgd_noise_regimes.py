"""Claim check for Dissecting the Effects of SGD Noise in Distinct Regimes of Deep Learning (Sclocchi et al., 2023).

The paper's prediction checked here: the characteristic temperature T_c = lr / batch at which SGD noise starts to
change the trained model is a power law of the training-set size P, decreasing with P (T_c ~ P^(-a), a > 0), and the
paper confirms the mechanism in a hinge-loss perceptron. (The catalog hint's "positive slope" contradicts the paper's
T_c ~ P^(-a); the paper is followed.)

Setup, fixed before the first run: perceptron f(x) = w.x / sqrt(d), w_0 = 0, d = 8, hinge loss with margin 1; data
x_1 with density ~ |x_1|^chi exp(-x_1^2/2), chi = 1, the other coordinates N(0, 1), y = sign(x_1)
(paperzoo.diagnostics.sgd_noise_regimes). SGD with batch 1 (with replacement), so T = lr, on a log grid of T in
[1e-2, 10] (13 points; smoke 7), trained exactly (event-driven) to zero training loss. Baseline (T -> 0): full-batch
GD with lr = P * 1e-2. Observable: O(T) = geometric mean over data draws (4 per P; smoke 1) of
||w_SGD(T)|| / ||w_GD|| (the size of the trained weights, the "signal" the paper says noise forces to grow).
T_c(P) = first T where |O(T) - 1| >= 0.1, log-interpolated (paperzoo.diagnostics.crossover_temperature).
P in {16, 32, 64, 128, 256} (smoke {16, 32, 64}). 3 seeds (ctx.seeds(3): data draws and SGD draws).

Criterion: pass iff for every seed the sweep crosses at every P (T_c finite) and the least-squares slope of
log T_c on log P (paperzoo.core.evidence.fit_line) has its 95% interval entirely below 0.
Reported: per-seed slopes with intervals, the pooled slope over all seeds, T_c per P, test errors at T_min/T_max.

Control: the same sweep without minibatch noise: full-batch GD with lr = P * T on the same T grid (the same
per-epoch step as SGD at temperature T), the same observable and the same criterion; it must fail.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fit_line, fmt_mean_std
from paperzoo.diagnostics.sgd_noise_regimes import (_gd, _sgd, crossover_temperature,
                                                     sample_boundary_density_data)

D, CHI, MARGIN, REL = 8, 1.0, 1.0, 0.1
T_MIN, T_MAX = 1e-2, 10.0
N_TEST = 4000
CRITERION = (
    "Hinge perceptron f = w.x/sqrt(8), w0 = 0, margin 1, data density ~|x_1|^1 near the boundary; SGD batch 1 (T = "
    "lr) on 13 log-spaced T in [1e-2, 10] to zero training loss; baseline full-batch GD with lr = P*1e-2. O(T) = "
    "geometric mean over 4 data draws of ||w_SGD(T)||/||w_GD||; T_c = first T with |O - 1| >= 0.1 (log-interpolated); "
    "P in {16, 32, 64, 128, 256}; 3 seeds. Pass iff for every seed T_c is found at every P and the slope of log T_c "
    "on log P has its 95% t-interval entirely below 0. Control: full-batch GD with lr = P*T on the same grid, same "
    "observable and criterion; it must fail."
)


def _test_error(w: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
    return ((xt @ w.T) * yt[:, None] <= 0).to(xt.dtype).mean(0)


def _slope_record(Ps, tcs):
    tcs = np.asarray(tcs, dtype=float)
    if not np.isfinite(tcs).all():
        return {"slope": float("nan"), "ci": [float("nan"), float("nan")], "all_crossed": False}
    f = fit_line(torch.log(torch.tensor(Ps, dtype=torch.float64)), torch.log(torch.tensor(tcs)))
    return {"slope": f.slope, "ci": [f.ci_low, f.ci_high], "all_crossed": True}


def _passes(rec) -> bool:
    return bool(rec["all_crossed"] and rec["ci"][1] < 0)


@claim(
    "sgd-noise-regimes",
    statement=("The temperature T_c = lr/batch at which SGD noise starts to change the trained hinge-loss perceptron "
               "(its weight size relative to full-batch GD) falls as a power law of the training-set size P; "
               "without minibatch noise the same sweep shows no such crossover."),
    criterion=CRITERION,
    baseline="full-batch gradient descent (T -> 0), and full-batch GD at the same per-epoch steps as the control",
    threads=1,
)
def crossover_temperature_power_law(ctx: ClaimContext) -> ClaimResult:
    Ps = ctx.pick(smoke=[16, 32, 64], full=[16, 32, 64, 128, 256])
    n_t = ctx.pick(smoke=7, full=13)
    draws = ctx.pick(smoke=1, full=4)
    Ts = torch.logspace(math.log10(T_MIN), math.log10(T_MAX), n_t, dtype=torch.float64)
    per_seed = []
    for seed in ctx.seeds(3):
        g = torch.Generator().manual_seed(seed)
        xt, yt = sample_boundary_density_data(N_TEST, D, CHI, generator=g)
        rec = {"per_P": {}}
        tc_sgd, tc_gd = [], []
        for P in Ps:
            log_sgd, log_gd, err_sgd, err_ref, t_star = [], [], [], [], []
            for _ in range(draws):
                x, y = sample_boundary_density_data(P, D, CHI, generator=g)
                ref = _gd(x, y, torch.tensor([P * T_MIN], dtype=torch.float64), MARGIN, 2_000_000)
                sgd = _sgd(x, y, Ts, MARGIN, 2_000_000, g)
                ctrl = _gd(x, y, P * Ts, MARGIN, 2_000_000)
                nref = ref.weights.norm()
                log_sgd.append((sgd.weights.norm(dim=1) / nref).log())
                log_gd.append((ctrl.weights.norm(dim=1) / nref).log())
                err_sgd.append(_test_error(sgd.weights, xt, yt))
                err_ref.append(float(_test_error(ref.weights, xt, yt)[0]))
                t_star.append(sgd.train_time)
            o_sgd = torch.stack(log_sgd).mean(0).exp()
            o_gd = torch.stack(log_gd).mean(0).exp()
            tc_s = crossover_temperature(Ts, o_sgd, 1.0, rel=REL)
            tc_g = crossover_temperature(Ts, o_gd, 1.0, rel=REL)
            tc_sgd.append(tc_s)
            tc_gd.append(tc_g)
            e = torch.stack(err_sgd).mean(0)
            rec["per_P"][str(P)] = {
                "ratio_sgd": o_sgd.tolist(), "ratio_gd_control": o_gd.tolist(), "T_c": tc_s, "T_c_control": tc_g,
                "test_err_gd": float(np.mean(err_ref)), "test_err_sgd": e.tolist(),
                "train_time_sgd": torch.stack(t_star).mean(0).tolist()}
        rec["T_c"] = tc_sgd
        rec["T_c_control"] = tc_gd
        rec["fit"] = _slope_record(Ps, tc_sgd)
        rec["fit_control"] = _slope_record(Ps, tc_gd)
        per_seed.append(rec)

    ok = all(_passes(r["fit"]) for r in per_seed)
    ctrl_ok = all(_passes(r["fit_control"]) for r in per_seed)
    pooled_u = [math.log(P) for r in per_seed for P, t in zip(Ps, r["T_c"]) if math.isfinite(t)]
    pooled_v = [math.log(t) for r in per_seed for t in r["T_c"] if math.isfinite(t)]
    pooled = None
    if len(set(pooled_u)) >= 2 and len(pooled_u) >= 3:
        f = fit_line(torch.tensor(pooled_u), torch.tensor(pooled_v))
        pooled = {"slope": f.slope, "ci": [f.ci_low, f.ci_high], "n": len(pooled_u)}
    slopes = [r["fit"]["slope"] for r in per_seed]
    crossed_ctrl = [sum(math.isfinite(t) for t in r["T_c_control"]) for r in per_seed]
    control = Control("full-batch GD with lr = P*T on the same grid (no minibatch noise), same criterion", ctrl_ok,
                      {"fit": [r["fit_control"] for r in per_seed], "n_P_crossed": crossed_ctrl})
    tc_mean = {str(P): float(np.exp(np.nanmean([math.log(r["T_c"][i]) if math.isfinite(r["T_c"][i]) else np.nan
                                                for r in per_seed]))) for i, P in enumerate(Ps)}
    pooled_txt = (f"pooled {pooled['slope']:.2f} [{pooled['ci'][0]:.2f}, {pooled['ci'][1]:.2f}]" if pooled
                  else "pooled n/a")
    headline = (f"slope of log T_c on log P: per seed {fmt_mean_std(slopes)}, {pooled_txt} (< 0 needed, 95% CI); "
                f"T_c by P {', '.join(f'{k}: {v:.3g}' for k, v in tc_mean.items())}; control full-batch GD crossed "
                f"at {crossed_ctrl} of {len(Ps)} P per seed")

    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        r0 = per_seed[0]
        for i, P in enumerate(Ps):
            pp = r0["per_P"][str(P)]
            ax.plot(Ts.numpy(), pp["ratio_sgd"], c=f"C{i}", label=f"SGD, P={P}")
            ax.plot(Ts.numpy(), pp["ratio_gd_control"], c=f"C{i}", ls=":")
        ax.axhline(1 + REL, c="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("T = lr / batch")
        ax.set_ylabel("||w(T)|| / ||w_GD||  (dotted: GD control)")
        ax.legend(fontsize=6)
        ctx.save_figure(fig, "weight_ratio_vs_temperature")

    return ClaimResult.decide(
        ok,
        metrics={"per_seed": per_seed, "Ps": Ps, "temperatures": Ts.tolist(), "slopes": slopes, "pooled": pooled,
                 "T_c_geomean": tc_mean},
        baseline={"reference": "full-batch GD, lr = P * 1e-2", "control_passes": ctrl_ok},
        headline=headline, control=control,
    )
