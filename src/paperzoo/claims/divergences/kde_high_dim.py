"""Claim check for Kernel Density Estimators in Large Dimensions (Biroli, Mézard, 2024).

The paper's prediction: with ``n = exp(alpha d)`` Gaussian data points, the Gaussian KDE at a typical point
leaves the classical CLT regime below ``h_CLT(alpha)`` and becomes dominated by a few data points (extreme-value
statistics) below ``h_G(alpha)``; the bandwidth that minimises the KL divergence lies below ``h_CLT``.

Setup, fixed before the first run: ``rho = N(0, I_d)``, ``alpha = 0.25``, ``n = round(exp(alpha d))`` for
``d`` in {16, 24, 32, 40} (smoke: {16, 24}), 3 seeds, 200 query points drawn from ``rho`` (smoke: 64), float64,
41 bandwidths log-spaced over ``[0.5 h_G, 2.5 h_CLT]``. For each (d, seed) the measured transition of order ``k``
is where the median over query points of the moment ratio ``R_k`` (:func:`paperzoo.divergences.kde_regime`)
crosses 1/2 (log-linear interpolation in ``log h``); the KL-optimal bandwidth is the grid maximiser of the mean
held-out log-density at the query points. Note that ``R_2(h) = R_1(h / sqrt 2)`` exactly for the Gaussian kernel,
so the two crossings carry the same finite-size information; the check of ``h_CLT`` is therefore a check of the
``sqrt 2`` relation together with the ``h_G`` equation.

Issue 8 rework: the measurement and the criterion are unchanged (a theory check, nothing is tuned); added are a
headline and a discriminating control. The control is a data regime that the theory predicts does not transition
at the tested bandwidths: data sets of ``n = round(exp(d / 8))`` points (``alpha = 1/8``, same dimensions, seeds,
query counts and bandwidth grid, its own draws), whose predicted thresholds ``h_G(1/8) = 1.26``,
``h_CLT(1/8) = 1.78`` lie 33% above the ``alpha = 1/4`` ones. Put through the same criterion with the
``alpha = 1/4`` predictions, it must fail: a pass would mean the +-20% tolerance cannot tell the predicted
``alpha`` dependence of the thresholds from no dependence. Reminder (from the catalog scope): the threshold
formulas are our own large-deviation derivation, not read from the paper.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std
from paperzoo.divergences.kde import kde_regime, kde_thresholds

ALPHA = 0.25
CONTROL_ALPHA = 0.125
TOL = 0.20
CRITERION = (
    "alpha = log(n)/d = 0.25, Gaussian data, 3 seeds, d in {16, 24, 32, 40}: for every (d, seed) the bandwidth "
    "where the median moment ratio R_1 crosses 1/2 is within +-20% of the predicted h_G(alpha), and where R_2 "
    "crosses 1/2 is within +-20% of the predicted h_CLT(alpha); and at the largest d the held-out-likelihood "
    "(KL) optimal bandwidth, averaged over seeds, is below h_CLT(alpha). Control: data with n = exp(d/8) "
    "(alpha = 1/8, predicted thresholds 33% higher) through the same criterion with the alpha = 1/4 predictions; "
    "it must fail."
)


def _crossing(hs: np.ndarray, r: np.ndarray, level: float = 0.5) -> float:
    """First ``h`` (ascending) where ``r`` rises through ``level``; NaN if it never does on the grid."""
    above = np.nonzero(r >= level)[0]
    if len(above) == 0 or above[0] == 0:
        return float("nan")
    i = above[0]
    t = (level - r[i - 1]) / (r[i] - r[i - 1])
    return float(math.exp(math.log(hs[i - 1]) + t * (math.log(hs[i]) - math.log(hs[i - 1]))))


@claim(
    "kde-high-dim",
    statement=("With n = exp(alpha d) Gaussian data points, the Gaussian KDE leaves the CLT regime below h_CLT(alpha) "
               "and becomes dominated by a few nearest points below h_G(alpha); the KL-optimal bandwidth lies "
               "below h_CLT."),
    criterion=CRITERION,
    baseline="the predicted thresholds h_CLT(alpha), h_G(alpha) of the large-deviation (random-energy) analysis",
    threads=1,
)
def regime_transitions_match_prediction(ctx: ClaimContext) -> ClaimResult:
    dims = ctx.pick(smoke=[16, 24], full=[16, 24, 32, 40])
    n_query = ctx.pick(smoke=64, full=200)
    h_clt, h_g = kde_thresholds(ALPHA)
    hs = torch.logspace(math.log10(0.5 * h_g), math.log10(2.5 * h_clt), 41, dtype=torch.float64)
    hs_np = hs.numpy()

    def measure(alpha: float, offset: int) -> dict:
        rows = {}
        for d in dims:
            n = int(round(math.exp(alpha * d)))
            cross_g, cross_clt, h_opt, share_g, share_clt = [], [], [], [], []
            for seed in ctx.seeds(3):
                g = torch.Generator().manual_seed(seed + d + offset)
                data = torch.randn(n, d, generator=g, dtype=torch.float64)
                x = torch.randn(n_query, d, generator=g, dtype=torch.float64)
                reg = kde_regime(x, data, hs)
                r1 = reg.log_ratio_first.exp().median(-1).values.numpy()
                r2 = reg.log_ratio_second.exp().median(-1).values.numpy()
                cross_g.append(_crossing(hs_np, r1))
                cross_clt.append(_crossing(hs_np, r2))
                h_opt.append(float(hs_np[int(reg.log_density.mean(-1).argmax())]))
                share = reg.max_share.mean(-1).numpy()
                share_g.append(float(np.interp(math.log(h_g), np.log(hs_np), share)))
                share_clt.append(float(np.interp(math.log(h_clt), np.log(hs_np), share)))
            rows[d] = {"n": n, "h_G_measured": cross_g, "h_CLT_measured": cross_clt, "h_KL_opt": h_opt,
                       "max_share_at_h_G": share_g, "max_share_at_h_CLT": share_clt}
        return rows

    def ok(v, target):
        return all(math.isfinite(t) and abs(t / target - 1.0) <= TOL for t in v)

    def criterion(rows) -> tuple[bool, bool, float]:
        crossings = all(ok(r["h_G_measured"], h_g) and ok(r["h_CLT_measured"], h_clt) for r in rows.values())
        kl_opt = float(np.mean(rows[dims[-1]]["h_KL_opt"]))
        return crossings and kl_opt < h_clt, crossings, kl_opt

    rows = measure(ALPHA, 0)
    passed, crossings_ok, kl_opt_largest = criterion(rows)
    control_rows = measure(CONTROL_ALPHA, 10_000)  # its own draws
    control_passed, _, control_kl_opt = criterion(control_rows)
    control_h_clt, control_h_g = kde_thresholds(CONTROL_ALPHA)
    control = Control(f"data with n = exp(d/8) (alpha = {CONTROL_ALPHA:g}, predicted h_G {control_h_g:.3f}, h_CLT "
                      f"{control_h_clt:.3f}) through the criterion with the alpha = {ALPHA:g} predictions",
                      control_passed,
                      {"h_G_measured_largest_d": control_rows[dims[-1]]["h_G_measured"],
                       "h_CLT_measured_largest_d": control_rows[dims[-1]]["h_CLT_measured"],
                       "h_G_measured_per_dim": {str(d): float(np.mean(r["h_G_measured"]))
                                                for d, r in control_rows.items()},
                       "h_KL_opt_largest_d": control_kl_opt,
                       "h_G_predicted": control_h_g, "h_CLT_predicted": control_h_clt})
    big = rows[dims[-1]]
    worst = max(abs(t / target - 1.0) for r in rows.values()
                for key, target in (("h_G_measured", h_g), ("h_CLT_measured", h_clt)) for t in r[key])
    headline = (f"d = {dims[-1]}, 3 seeds: measured h_G {fmt_mean_std(big['h_G_measured'])} vs predicted {h_g:.3f}, "
                f"h_CLT {fmt_mean_std(big['h_CLT_measured'])} vs {h_clt:.3f}; worst relative miss over all d "
                f"{worst:.1%} (tol {TOL:.0%}); KL-optimal h {kl_opt_largest:.3f} (< h_CLT); control alpha = 1/8: "
                f"h_G {fmt_mean_std(control_rows[dims[-1]]['h_G_measured'])} vs the alpha = 1/4 prediction "
                f"{h_g:.3f}")

    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(dims, [np.mean(rows[d]["h_G_measured"]) for d in dims], "o-", label="measured h_G (R_1 = 1/2)")
        ax.plot(dims, [np.mean(rows[d]["h_CLT_measured"]) for d in dims], "s-", label="measured h_CLT (R_2 = 1/2)")
        ax.plot(dims, [np.mean(rows[d]["h_KL_opt"]) for d in dims], "^-", label="KL-optimal h")
        ax.axhline(h_g, ls="--", c="C0")
        ax.axhline(h_clt, ls="--", c="C1")
        ax.set_xlabel("d (n = exp(0.25 d))")
        ax.set_ylabel("bandwidth h")
        ax.legend(fontsize=7)
        ctx.save_figure(fig, "thresholds")

    def spread(v):
        return {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": [float(t) for t in v]}

    per_dim = {str(d): {"n": r["n"], **{k: spread(v) for k, v in r.items() if k != "n"}} for d, r in rows.items()}
    return ClaimResult.decide(
        passed,
        metrics={"alpha": ALPHA, "dims": dims, "per_dim": per_dim,
                 "h_G_measured_largest_d": spread(rows[dims[-1]]["h_G_measured"]),
                 "h_CLT_measured_largest_d": spread(rows[dims[-1]]["h_CLT_measured"]),
                 "h_KL_opt_largest_d": kl_opt_largest, "crossings_within_tolerance": crossings_ok},
        baseline={"h_G_predicted": h_g, "h_CLT_predicted": h_clt, "tolerance": TOL},
        headline=headline, control=control,
    )
