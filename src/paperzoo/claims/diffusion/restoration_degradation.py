"""Claim check for Restoration-Degradation Beyond Linear Diffusions: A Non-Asymptotic Analysis For DDIM-Type Samplers
(Chen, Daras, Dimakis, ICML 2023).

The paper's prediction, as tested here: the deterministic DDIM-type sampler (one restoration step plus one
degradation step per level, :mod:`paperzoo.diffusion.restoration_degradation`) converges to the data law with an
error controlled by a discretization term that is first order in the step size plus a term linear in the score
error (a deterministic sampler propagates a score error without the square-root loss of the stochastic,
Girsanov-type analyses). Theory claim: no baseline method is tuned; the "baseline" is the predicted exponents.

Setup, fixed before the first run: for each of 3 seeds, data :math:`N(\\mu, \\Sigma)` in d = 4 with
:math:`\\mu \\sim N(0, I)` and :math:`\\Sigma` a random SPD matrix with eigenvalues uniform in [0.1, 1]
(:func:`~paperzoo.data.gaussians.random_spd`), and a uniformly random unit direction :math:`u` for the injected
score error; Karras levels (:math:`\\rho = 7`, :math:`\\sigma \\in [0.002, 20]`, then 0) with ``n`` steps; the
start is the exact marginal :math:`N(\\mu, \\Sigma + 20^2 I)`, so the measured error is discretization plus score
error only. The sampler is :func:`~paperzoo.diffusion.restoration_degradation.sample_rd` (equal to DDIM,
``eta = 0``) on the exact denoiser, optionally with a constant score error of size :math:`\\epsilon` along
:math:`u` (VP/OU convention, :func:`~paperzoo.diffusion.restoration_degradation.biased_denoiser`). The metric is the
exact :math:`W_2` between the sampler's output law (Gaussian, closed form: the sampler is affine) and the data law.

Criterion. (1) Step size: the least-squares slope of :math:`\\log W_2` against :math:`\\log n` over
n in {16, 32, 64, 128, 256} (smoke {16, 32, 64}), :math:`\\epsilon = 0`, lies in [-1.2, -0.8] for every seed, and
the mean slope +- 2 SE lies inside that window. (2) Score error: at n = 256 (smoke 64), the slope of
:math:`\\log W_2` against :math:`\\log\\epsilon` over :math:`\\epsilon` in {0.05, 0.1, 0.2, 0.4} lies in
[0.8, 1.2] for every seed, with the mean +- 2 SE inside. Both must hold. Control: Heun's second-order ODE solver
(:func:`~paperzoo.diffusion.samplers.sample_heun`, same levels, seeds and exact denoiser) through part (1); a
pass would mean the window cannot tell the first-order rate from a higher one, so it must fail. The slopes of DDIM
are also reported against the windows of the wrong exponents 1/2 and 2 (both must reject them; implied by (1)).
"""

from __future__ import annotations

import math

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, mean_std
from paperzoo.data.gaussians import random_spd
from paperzoo.diffusion.restoration_degradation import ddim_gaussian_error
from paperzoo.diffusion.samplers import sample_heun
from paperzoo.diffusion.schedules import get_sigmas_karras

D = torch.float64
DIM = 4
SIGMA_MIN, SIGMA_MAX = 0.002, 20.0
EPS_GRID = [0.05, 0.1, 0.2, 0.4]
STEP_WINDOW = (-1.2, -0.8)
EPS_WINDOW = (0.8, 1.2)
CRITERION = (
    "d = 4 Gaussian data (random mean, SPD covariance with eigenvalues in [0.1, 1]), 3 seeds, Karras levels "
    "sigma in [0.002, 20] (rho 7), exact-marginal start, exact W2 of the RD/DDIM (eta 0) output law. (1) slope of "
    "log W2 vs log n over n in {16..256} (smoke {16, 32, 64}) at eps = 0 in [-1.2, -0.8] for every seed and mean "
    "+- 2 SE inside; (2) slope of log W2 vs log eps over eps in {0.05, 0.1, 0.2, 0.4} (score error along a random "
    "unit direction, VP convention) at n = 256 (smoke 64) in [0.8, 1.2] for every seed and mean +- 2 SE inside. "
    "Both must hold. Control: Heun (second order) through part (1) must fail."
)


def _slope(xs, ys) -> float:
    lx = torch.log(torch.tensor(xs, dtype=D))
    ly = torch.log(torch.tensor(ys, dtype=D))
    lx = lx - lx.mean()
    return float((lx * (ly - ly.mean())).sum() / (lx * lx).sum())


def _inside(values, window) -> bool:
    lo, hi = window
    m, s = mean_std(values)
    se = s / math.sqrt(len(values))
    return all(lo <= v <= hi for v in values) and lo <= m - 2 * se and m + 2 * se <= hi


@claim(
    "restoration-degradation",
    statement=("The DDIM-type (restoration-degradation) sampler's error is first order in the step size plus a term "
               "linear in the score error."),
    criterion=CRITERION,
    baseline="the predicted exponents: W2 ~ n^-1 in the number of steps, W2 ~ eps^1 in the score error",
    threads=1,
)
def ddim_error_follows_predicted_rates(ctx: ClaimContext) -> ClaimResult:
    ns = ctx.pick(smoke=[16, 32, 64], full=[16, 32, 64, 128, 256])
    n_eps = ctx.pick(smoke=64, full=256)
    step_slopes, heun_slopes, eps_slopes, rows = [], [], [], []
    for seed in ctx.seeds(3):
        g = torch.Generator().manual_seed(seed)
        mean = torch.randn(DIM, generator=g, dtype=D)
        cov = random_spd(DIM, low=0.1, high=1.0, generator=g)
        u = torch.randn(DIM, generator=g, dtype=D)
        levels = {n: get_sigmas_karras(n, SIGMA_MIN, SIGMA_MAX) for n in sorted(set(ns) | {n_eps})}
        ddim = [ddim_gaussian_error(mean, cov, levels[n]) for n in ns]
        heun = [ddim_gaussian_error(mean, cov, levels[n], sampler=sample_heun) for n in ns]
        by_eps = [ddim_gaussian_error(mean, cov, levels[n_eps], eps=e, direction=u) for e in EPS_GRID]
        step_slopes.append(_slope(ns, ddim))
        heun_slopes.append(_slope(ns, heun))
        eps_slopes.append(_slope(EPS_GRID, by_eps))
        rows.append({"seed": seed, "w2_ddim_by_n": ddim, "w2_heun_by_n": heun, "w2_by_eps": by_eps})

    step_ok = _inside(step_slopes, STEP_WINDOW)
    eps_ok = _inside(eps_slopes, EPS_WINDOW)
    passed = step_ok and eps_ok
    control = Control("Heun's second-order ODE solver (same levels, seeds, exact denoiser) through part (1), the "
                      "first-order step-size window", _inside(heun_slopes, STEP_WINDOW),
                      {"heun_step_slopes": heun_slopes})
    wrong = {"exponent_0.5_window_accepts_ddim": _inside(step_slopes, (-0.6, -0.4)),
             "exponent_2_window_accepts_ddim": _inside(step_slopes, (-2.2, -1.8))}
    headline = (f"W2 vs steps slope {fmt_mean_std(step_slopes)} (predicted -1), vs score error slope "
                f"{fmt_mean_std(eps_slopes)} (predicted 1), 3 seeds; control Heun slope {fmt_mean_std(heun_slopes)} "
                f"rejected by the first-order window")

    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for i, r in enumerate(rows):
            ax.loglog(ns, r["w2_ddim_by_n"], "o-", c="C0", label="DDIM (RD)" if i == 0 else None)
            ax.loglog(ns, r["w2_heun_by_n"], "s--", c="C1", label="Heun (control)" if i == 0 else None)
        ax.set_xlabel("steps n")
        ax.set_ylabel("exact W2 to data")
        ax.legend(fontsize=7)
        ctx.save_figure(fig, "w2_vs_steps")

    return ClaimResult.decide(
        passed,
        metrics={"step_slopes": step_slopes, "eps_slopes": eps_slopes, "steps": ns, "n_for_eps": n_eps,
                 "eps_grid": EPS_GRID, "step_rate_ok": step_ok, "score_error_rate_ok": eps_ok,
                 "wrong_exponent_checks": wrong, "per_seed": rows},
        baseline={"step_slope_window": list(STEP_WINDOW), "eps_slope_window": list(EPS_WINDOW)},
        headline=headline, control=control,
    )
