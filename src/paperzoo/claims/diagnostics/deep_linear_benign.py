"""Claim check for Deep Linear Networks can Benignly Overfit when Shallow Ones Do (Chatterji, Long, 2023).

The paper's prediction: a deep linear network trained by gradient flow from a random initialisation with a small
first layer, until it interpolates noisy data, has the excess risk of the minimum-l2-norm interpolant up to a bias
term that scales with the first-layer initialisation scale ``alpha``, and the noise enters its risk as it enters
the min-norm interpolant's (the same conditional variance). So in a benign-overfitting regime (few samples, a
spiked covariance with a wide low-variance tail) deep linear networks overfit benignly as the min-norm
interpolant does; a large ``alpha`` adds a bias term.

Setup, fixed before the first run. Covariance ``Sigma = diag(1 x k, eps x (d - k))`` (a spiked, benign design:
tail of effective rank ``d - k >> n``), ``n = 40, d = 1000, k = 5, eps = 0.02`` (smoke: ``n = 20, d = 200,
k = 3, eps = 0.05``); ``theta*`` a uniformly random unit vector in the spike coordinates; label noise
``N(0, 1)``. For each of 3 seeds: one design ``X`` and ``theta*``, and ``r = 24`` (smoke: 6) independent noise
vectors; for each depth ``L`` in {2, 3} the network of width ``m = 64`` (smoke: 16) with first layer
``N(0, alpha^2)``, identity middle layers and last layer ``N(0, 1/m)`` (the paper's initialisation; one draw per
(seed, depth), shared by the ``r`` noise redraws) is trained by full-batch gradient descent with step
``lr = 1 / (2 L lambda_max(X X^T / n))`` on ``(1/2n)||X theta - y||^2`` until the training loss is at most
``1e-12`` (at most 20,000 steps; smoke 5,000), ``alpha = 1e-3``. The min-norm interpolant is fitted to the same
``r`` response vectors. Measured: the excess risks ``(theta - theta*)^T Sigma (theta - theta*)`` (closed form)
averaged over the redraws, and the conditional variances over the redraws
(:func:`paperzoo.diagnostics.linear_interpolation.conditional_variance`, jackknife standard error), against the
closed form ``sigma^2 tr(X^+T Sigma X^+)`` of the min-norm interpolant.

Criterion (tolerances fixed in advance): for every (depth, seed): (i) every network reached the loss tolerance;
(ii) the mean excess risk of the networks is within 5% (relative) of the min-norm interpolant's on the same
draws; (iii) the networks' Monte Carlo conditional variance is within 3 jackknife standard errors of the
closed-form min-norm conditional variance, and within 5% of the min-norm interpolant's Monte Carlo conditional
variance on the same draws. Why 5%: with ``alpha = 1e-3`` the predicted extra bias is of order
``alpha^2 m ||W_L||^2 tr(Sigma) ~ 1e-5`` and the cross term of order ``alpha``, far inside 5%; the paired
comparison on the same draws removes the sampling noise of the risk itself; 5% leaves room for the
non-interpolation left at the loss tolerance, and is still far tighter than the effect the control must show.

Control (the regime the theory says breaks the match), measured the same way: the same designs, noise draws and
initial draws with ``alpha = 0.1``, where the predicted extra bias ``~ alpha^2 ||W_L||^2 tr(P_perp Sigma)`` is of
the order of the min-norm interpolant's whole excess risk. It must fail the criterion.
"""

from __future__ import annotations

import math

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std
from paperzoo.diagnostics.linear_interpolation import (conditional_variance, linear_excess_risk,
                                                       min_norm_conditional_variance, min_norm_interpolant,
                                                       train_deep_linear_regression)

SMALL_ALPHA = 1e-3
LARGE_ALPHA = 0.1
DEPTHS = (2, 3)
RISK_TOL = 0.05
VAR_TOL = 0.05
VAR_Z = 3.0
LOSS_TOL = 1e-12
NOISE_VAR = 1.0
CRITERION = (
    "n = 40, d = 1000, Sigma = diag(1 x 5, 0.02 x 995), theta* a random unit vector in the spike, N(0, 1) label "
    "noise, 3 seeds x 24 noise redraws on a fixed design; depth-2 and depth-3 linear nets (width 64, first layer "
    "N(0, alpha^2) with alpha = 1e-3, identity middle layers, last layer N(0, 1/64), one init per seed and depth) "
    "trained by GD to training loss <= 1e-12: for every (depth, seed) every net converged, the mean excess risk "
    "is within 5% of the min-norm interpolant's on the same draws, and the nets' Monte Carlo conditional variance "
    "is within 3 jackknife standard errors of the closed-form min-norm conditional variance and within 5% of the "
    "min-norm interpolant's on the same draws. Control: alpha = 0.1 (predicted extra bias term), same measurement "
    "and criterion; it must fail."
)


def _spiked_cov(d: int, k: int, eps: float) -> torch.Tensor:
    return torch.cat([torch.ones(k, dtype=torch.float64), torch.full((d - k,), eps, dtype=torch.float64)])


@claim(
    "deep-linear-benign",
    statement=("Randomly initialised deep linear networks trained to interpolate noisy data have the excess risk "
               "and the conditional variance of the minimum-l2-norm interpolant up to a bias term that vanishes "
               "with the first-layer initialisation scale: they overfit benignly when the min-norm interpolant "
               "does."),
    criterion=CRITERION,
    baseline="the minimum-l2-norm interpolant X^+ y on the same design and noise draws (closed-form variance)",
    threads=1,
)
def deep_linear_nets_match_min_norm(ctx: ClaimContext) -> ClaimResult:
    n, d, k, eps = ctx.pick(smoke=(20, 200, 3, 0.05), full=(40, 1000, 5, 0.02))
    r = ctx.pick(smoke=6, full=24)
    width = ctx.pick(smoke=16, full=64)
    max_iter = ctx.pick(smoke=5000, full=20000)
    var_diag = _spiked_cov(d, k, eps)
    cov = torch.diag(var_diag)

    per_seed = []
    for seed in ctx.seeds(3):
        g = torch.Generator().manual_seed(seed)
        X = torch.randn(n, d, generator=g, dtype=torch.float64) * var_diag.sqrt()
        theta_star = torch.zeros(d, dtype=torch.float64)
        u = torch.randn(k, generator=g, dtype=torch.float64)
        theta_star[:k] = u / u.norm()
        Y = X @ theta_star + math.sqrt(NOISE_VAR) * torch.randn(r, n, generator=g, dtype=torch.float64)
        theta_mn = min_norm_interpolant(X, Y)
        risk_mn = float(linear_excess_risk(theta_mn, theta_star, cov).mean())
        cv_mn = conditional_variance(theta_mn, cov)
        v_mn = min_norm_conditional_variance(X, cov, NOISE_VAR)
        lam_max = float(torch.linalg.eigvalsh(X @ X.T / n).max())
        init_seed = int(torch.randint(0, 2**31 - 1, (), generator=g))
        row = {"risk_mn": risk_mn, "cv_mn_mc": cv_mn.value, "cv_mn_closed": v_mn, "nets": {}}
        for depth in DEPTHS:
            for alpha in (SMALL_ALPHA, LARGE_ALPHA):
                fit = train_deep_linear_regression(
                    X, Y, depth=depth, width=width, init_scale=alpha, last_layer_scale=1 / math.sqrt(width),
                    lr=1 / (2 * depth * lam_max), max_iter=max_iter, tol=LOSS_TOL,
                    generator=torch.Generator().manual_seed(init_seed + depth))  # same draw for both alphas
                risk = float(linear_excess_risk(fit.theta, theta_star, cov).mean())
                cv = conditional_variance(fit.theta, cov)
                row["nets"][f"L{depth}_alpha{alpha:g}"] = {
                    "depth": depth, "alpha": alpha, "converged": fit.converged, "loss": fit.loss,
                    "n_iter": fit.n_iter, "risk": risk, "risk_ratio": risk / risk_mn, "cv": cv.value,
                    "cv_se": cv.std_error, "cv_z": (cv.value - v_mn) / cv.std_error,
                    "cv_ratio_paired": cv.value / cv_mn.value}
        per_seed.append(row)

    def passes(alpha: float) -> bool:
        ok = True
        for row in per_seed:
            for depth in DEPTHS:
                m = row["nets"][f"L{depth}_alpha{alpha:g}"]
                ok &= (m["converged"] and abs(m["risk_ratio"] - 1) <= RISK_TOL and abs(m["cv_z"]) <= VAR_Z
                       and abs(m["cv_ratio_paired"] - 1) <= VAR_TOL)
        return bool(ok)

    def collect(alpha: float, key: str, depth: int) -> list[float]:
        return [row["nets"][f"L{depth}_alpha{alpha:g}"][key] for row in per_seed]

    passed = passes(SMALL_ALPHA)
    control_passed = passes(LARGE_ALPHA)
    control = Control(f"first-layer initialisation scale alpha = {LARGE_ALPHA:g} (predicted extra bias term), "
                      f"same designs, noise and initial draws", control_passed,
                      {f"L{L}": {"risk_ratio": collect(LARGE_ALPHA, "risk_ratio", L),
                                 "cv_z": collect(LARGE_ALPHA, "cv_z", L),
                                 "cv_ratio_paired": collect(LARGE_ALPHA, "cv_ratio_paired", L),
                                 "converged": collect(LARGE_ALPHA, "converged", L)} for L in DEPTHS})

    def dist(alpha, L):
        rel = [abs(x - 1) for x in collect(alpha, "risk_ratio", L)]
        return (f"L={L}: risk/min-norm {fmt_mean_std(collect(alpha, 'risk_ratio', L))} "
                f"(max |dev| {max(rel):.2%}), var z {fmt_mean_std(collect(alpha, 'cv_z', L))}, "
                f"var/min-norm paired {fmt_mean_std(collect(alpha, 'cv_ratio_paired', L))}")

    headline = (f"alpha={SMALL_ALPHA:g}, 3 seeds: " + "; ".join(dist(SMALL_ALPHA, L) for L in DEPTHS)
                + f" (tol {RISK_TOL:.0%}, 3 SE, {VAR_TOL:.0%}); min-norm risk "
                + fmt_mean_std([row["risk_mn"] for row in per_seed])
                + f"; control alpha={LARGE_ALPHA:g}: "
                + "; ".join(f"L={L} risk/min-norm {fmt_mean_std(collect(LARGE_ALPHA, 'risk_ratio', L))}"
                            for L in DEPTHS))

    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for i, L in enumerate(DEPTHS):
            for j, alpha in enumerate((SMALL_ALPHA, LARGE_ALPHA)):
                ys = collect(alpha, "risk_ratio", L)
                ax.plot([i * 2 + j] * len(ys), ys, "o", c=f"C{j}", label=f"alpha={alpha:g}" if i == 0 else None)
        ax.axhspan(1 - RISK_TOL, 1 + RISK_TOL, color="0.85")
        ax.set_xticks([0.5, 2.5], [f"depth {L}" for L in DEPTHS])
        ax.set_ylabel("excess risk / min-norm interpolant's")
        ax.legend(fontsize=7)
        ctx.save_figure(fig, "risk_ratio")

    return ClaimResult.decide(
        passed,
        metrics={"n": n, "d": d, "k": k, "eps": eps, "noise_redraws": r, "width": width,
                 "per_seed": per_seed,
                 **{f"L{L}_risk_ratio": collect(SMALL_ALPHA, "risk_ratio", L) for L in DEPTHS},
                 **{f"L{L}_cv_z": collect(SMALL_ALPHA, "cv_z", L) for L in DEPTHS}},
        baseline={"risk_min_norm": [row["risk_mn"] for row in per_seed],
                  "cv_min_norm_closed": [row["cv_mn_closed"] for row in per_seed],
                  "risk_tol": RISK_TOL, "var_z": VAR_Z, "var_tol": VAR_TOL},
        headline=headline, control=control,
    )
