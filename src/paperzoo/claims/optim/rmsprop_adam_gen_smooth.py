"""Claim check for the RMSProp/Adam analysis under generalized smoothness and affine noise (Zhang et al., 2024).

The theorem: with step size eta ~ 1/sqrt(T) and beta2 = 1 - 1/T, RMSProp and Adam reach an eps-stationary point
in O(eps^-4) iterations, i.e. the average gradient norm over T iterations decays like T^(-1/4) (up to
logarithms), under coordinate-wise (L0, L1)-smoothness and affine noise variance. Demonstration, fixed before
the first run: the 10-dimensional double well f(x) = sum_i (x_i^4/4 - x_i^2/2) (coordinate-wise generalized
smooth, not L-smooth), started at x_i = 3, with the unbiased gradient oracle grad f + xi, E xi_i^2 = 1 +
(d_i f)^2 (affine variance, sigma0 = sigma1 = 1). torch.optim.RMSprop (alpha = beta2) and torch.optim.Adam
(beta1 = 0.9) with lr = 1/sqrt(T), beta2 = 1 - 1/T, eps = 1e-8, for T in {100, 300, 1000, 3000} (smoke, 4 runs
each) / {100, ..., 30000} (full, 8 runs each); the measured quantity is the theorem's, (1/T) sum_t ||grad f(x_t)||_1
averaged over runs, and its log-log slope in T is fitted.

Issue 8 rework. The registered quantity cannot tell a converging method from one that stalls: the average over
all T iterations contains the transient from x_i = 3, which alone decays like 1/T, so a *constant* step that
never converges meets "slope <= -0.2, R^2 >= 0.9" too (at the smoke horizons torch Adam with lr 0.1, beta2 0.99
held fixed gives slope -0.64, R^2 0.97). The criterion keeps the registered part and adds the same average over
the second half of the run, (2/T) sum_{t >= T/2} ||grad f(x_t)||_1 (at most twice the theorem's average, so the
theorem bounds it by O(T^(-1/4)) too), whose transient has died out: its log-log slope must be <= -1/8, half the
predicted exponent, leaving room for the logarithmic factors. The discriminating control is that constant step,
the theorem's tuning at T = 100 (lr 0.1, beta2 0.99) held for every T, through the same criterion; it must fail.
"""

from __future__ import annotations

import statistics
import time

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control
from paperzoo.data.digits import single_thread
from paperzoo.data.smooth_problems import affine_variance_noise, double_well
from paperzoo.optim.rates import fit_loglog_slope

D = 10
X0 = 3.0
SIGMA0 = SIGMA1 = 1.0


def average_grad_norm(method: str, T: int, runs: int, generator: torch.Generator, *,
                      constant: bool = False) -> tuple[float, float, float]:
    """Run means of (1/T) sum_t ||grad f(x_t)||_1, of min_t ||grad f(x_t)||_2 and of the second-half average.

    The theorem's tuning lr = 1/sqrt(T), beta2 = 1 - 1/T; ``constant=True`` holds its T = 100 values instead.
    """
    f = double_well(D)
    x = torch.nn.Parameter(torch.full((runs, D), X0, dtype=torch.float64))
    lr, beta2 = (0.1, 0.99) if constant else (1.0 / T**0.5, 1.0 - 1.0 / T)
    if method == "rmsprop":
        opt = torch.optim.RMSprop([x], lr=lr, alpha=beta2, eps=1e-8)
    else:
        opt = torch.optim.Adam([x], lr=lr, betas=(0.9, beta2), eps=1e-8)
    total = torch.zeros(runs, dtype=torch.float64)
    tail = torch.zeros(runs, dtype=torch.float64)
    best = torch.full((runs,), float("inf"), dtype=torch.float64)
    for t in range(T):
        with torch.no_grad():
            g = f.grad(x)
            norm1 = g.abs().sum(-1)
            total += norm1
            if t >= T // 2:
                tail += norm1
            best = torch.minimum(best, g.norm(dim=-1))
            x.grad = g + affine_variance_noise(g, SIGMA0, SIGMA1, generator=generator)
        opt.step()
    return float((total / T).mean()), float(best.mean()), float((tail / (T - T // 2)).mean())


@claim(
    "rmsprop-adam-gen-smooth",
    statement="With step size ~ 1/sqrt(T) and beta2 = 1 - 1/T, RMSProp and Adam find eps-stationary points in "
              "O(eps^-4) iterations on generalized-smooth nonconvex problems with affine noise variance: the "
              "average gradient norm decays like T^(-1/4).",
    criterion="Double well in 10-D from x_i = 3, affine-variance noise (sigma0 = sigma1 = 1), theorem tuning, "
              "T in {100, 300, 1000, 3000} (smoke, 4 runs) / {100, 300, ..., 30000} (full, 8 runs). Passes if for "
              "both RMSProp and Adam the fitted log-log slope of the run-averaged (1/T) sum_t ||grad f(x_t)||_1 "
              "against T is <= -0.2 (T^(-1/4) up to logarithms) with R^2 >= 0.9, AND the log-log slope of the "
              "second-half average (2/T) sum_{t >= T/2} ||grad f(x_t)||_1 is <= -1/8 (half the predicted "
              "exponent). Control: the T = 100 tuning (lr 0.1, beta2 0.99) held constant for every T, through the "
              "same criterion; it must fail.",
    baseline="the predicted slope -1/4; a constant step (the T = 100 tuning held fixed) as the control",
    timeout={"smoke": 120.0, "full": 900.0},
)
def quarter_rate(ctx: ClaimContext) -> ClaimResult:
    horizons = ctx.pick(smoke=(100, 300, 1000, 3000), full=(100, 300, 1000, 3000, 10_000, 30_000))
    runs = ctx.pick(smoke=4, full=8)
    start = time.perf_counter()
    Ts = torch.tensor(horizons, dtype=torch.float64)
    results = {}
    with single_thread():
        for constant in (False, True):
            for method in ("rmsprop", "adam"):
                rows = [average_grad_norm(method, T, runs, ctx.generator, constant=constant) for T in horizons]
                avg, mins, tail = ([r[k] for r in rows] for k in range(3))
                fit = fit_loglog_slope(Ts, torch.tensor(avg))
                fit_min = fit_loglog_slope(Ts, torch.tensor(mins))
                fit_tail = fit_loglog_slope(Ts, torch.tensor(tail))
                ok = fit.slope <= -0.2 and fit.r2 >= 0.9 and fit_tail.slope <= -0.125
                results[(constant, method)] = dict(slope=fit.slope, r2=fit.r2, avg_grad_l1=avg,
                                                   tail_slope=fit_tail.slope, tail_r2=fit_tail.r2,
                                                   tail_avg_grad_l1=tail, min_grad_l2=mins,
                                                   min_grad_slope=fit_min.slope, min_grad_r2=fit_min.r2, passes=ok)
    metrics = {m: results[(False, m)] for m in ("rmsprop", "adam")}
    passed = all(metrics[m]["passes"] for m in metrics)
    control_rows = {m: results[(True, m)] for m in ("rmsprop", "adam")}
    control = Control("constant step (the T = 100 tuning lr 0.1, beta2 0.99 held for every T) through the same "
                      "criterion", all(r["passes"] for r in control_rows.values()), control_rows)
    metrics.update(horizons=list(horizons), runs_per_horizon=runs, dimension=D,
                   mean_slope=statistics.fmean(metrics[m]["slope"] for m in ("rmsprop", "adam")),
                   seconds=round(time.perf_counter() - start, 2))
    headline = ("log-log slope in T of the average / second-half average ||grad||_1: "
                + ", ".join(f"{m} {metrics[m]['slope']:.3f} / {metrics[m]['tail_slope']:.3f}"
                            for m in ("rmsprop", "adam"))
                + " (theorem tuning; pass <= -0.2 with R^2 >= 0.9 / <= -0.125) vs constant step "
                + ", ".join(f"{m} {control_rows[m]['slope']:.3f} / {control_rows[m]['tail_slope']:.3f}"
                            for m in ("rmsprop", "adam"))
                + f"; {runs} runs per T, T up to {horizons[-1]:,}")
    return ClaimResult.decide(passed, metrics=metrics, baseline=dict(slope=-0.25), headline=headline,
                              control=control)
