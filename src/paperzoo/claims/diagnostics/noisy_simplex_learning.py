"""Claim check for Sample Complexity Bounds for Learning High-dimensional Simplices in Noisy Regimes (Saberi et al.,
2023).

The paper's prediction: learning a simplex in R^K to accuracy eps from Gaussian-noisy uniform samples needs
n >= (K^2/eps^2) e^{Omega(K/SNR^2)}: noise costs a sample-size factor exponential in K/SNR^2, which is O(1) (the
noiseless order) once SNR >= Omega(sqrt K), and large when SNR is well below sqrt K. The paper's estimator is an
existence proof (sample compression over candidate simplices), not computable; its recovery runs through the
Fourier domain, where noise damps the characteristic function by e^{-sigma^2 ||omega||^2/2}. The check measures the
noise's sample-size cost for a computable estimator built on that identity
(:func:`paperzoo.diagnostics.simplex_learning.fit_simplex_fourier`, a Fourier minimum-distance fit), so it tests
the prediction's form (where the cost is O(1) and where it is not, as a function of K/SNR^2), not the paper's
constants or its estimator.

Setup, fixed before the first run (only timing and convergence of the fitting routine were looked at beforehand,
never an error or a penalty). K in {2, 3} (full: {2, 3, 4}); per seed a regular simplex of circumradius r = 1,
Haar-rotated; SNR := r / sigma. Regimes: noiseless (sigma = 0, the baseline), SNR = 2 sqrt K (K/SNR^2 = 1/4, the
paper's "same order" regime), SNR = sqrt K (reported only, full budget), SNR = sqrt K / 2 (K/SNR^2 = 4, the
control). n = 400 samples (full: 4000), T = 2 independent datasets per seed (full: 10), m = 24 frequencies
(full: 48) omega ~ N(0, I_K / r^2) (so ||omega||^2 ~ K / r^2, the scale that resolves the simplex), drawn per
seed and shared by its regimes. Every regime sees the same uniform points, the same unit noise draw (scaled by
sigma) and the same start (true vertices + 0.15 r N(0, 1) per coordinate): paired. Levenberg-Marquardt, at most
1000 iterations. Error: RMS vertex distance under the best matching
(:func:`paperzoo.diagnostics.simplex_learning.vertex_matching_error`). Per (K, seed, regime) the noise penalty
P = mean over datasets of err^2 / the same at sigma = 0: the factor by which noise multiplies the squared error at
fixed n, i.e. (for an estimator with error^2 ~ 1/n) the factor on the samples needed for a given accuracy.

Criterion: pass iff P <= 3 for every K and seed at SNR = 2 sqrt K (noise costs at most a factor 3 in samples: the
same order as noiseless; the theory's factor there is e^{c/4}). Control: the same criterion at SNR = sqrt K / 2
(the theory's factor e^{4c}); it must fail (some P > 3). More than 10% of the fits not converged: inconclusive.
Reported, not judged: the line fit of log P on K/SNR^2 over all K and noisy regimes (the exponent form predicts a
positive slope with an intercept near 0).

Disclosed: the first smoke run (seed 0) used at most 200 iterations and stopped only on a small step; 6 of its 36
fits, all in the control regime (a nearly flat valley at SNR = sqrt K / 2), hit the cap and the verdict was
inconclusive. Its smoke penalties at SNR = 2 sqrt K were 5.3 (K = 2) and 21.6 (K = 3). The solver then got a
relative-decrease stop and a 1000-iteration cap; the criterion, threshold, regimes and sizes were not changed.
A second helper then only made the fit faster (a tail-bounded number of Taylor terms, no recomputation of the
unused characteristic function in the Jacobian step): every smoke squared error came out the same to the printed
16 digits, and the verdict (not reproduced at SNR = 2 sqrt K: penalties about 5 at K = 2 and about 20 at K = 3;
control fails as planned) is the one the first smoke run already showed. Timing of one K = 4 full-size seed (1.3 s
of CPU, every fit converged) was looked at, not its errors. The full budget has not been run.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fit_line, fmt_mean_std, mean_std
from paperzoo.core.registry import derive_seed
from paperzoo.diagnostics.simplex_learning import fit_simplex_fourier, regular_simplex, vertex_matching_error

RADIUS = 1.0
START_SCALE = 0.15
MAX_PENALTY = 3.0
MAX_UNCONVERGED = 0.10
# Regimes as multiples c of sqrt K in SNR = c sqrt K (None: noiseless).
HIGH, MID, LOW = 2.0, 1.0, 0.5
CRITERION = (
    "Regular simplex in R^K (circumradius 1, random rotation), K in {2, 3, 4}, SNR = r/sigma; Fourier minimum-"
    "distance fit (Levenberg-Marquardt, 48 frequencies omega ~ N(0, I/r^2)) from n = 4000 samples, 10 datasets x 3 "
    "seeds, paired across regimes (same points, unit noise and start). Noise penalty P = mean err^2 (RMS matched "
    "vertex distance) at sigma over the same at sigma = 0. Pass iff P <= 3 for every K and seed at SNR = 2 sqrt K. "
    "Control: the same criterion at SNR = sqrt K / 2 must fail. More than 10% of fits unconverged: inconclusive."
)


def _run_seed(K: int, seed: int, regimes: list[float | None], n: int, trials: int, m: int) -> dict:
    g = torch.Generator().manual_seed(derive_seed(seed, f"simplex-K{K}"))
    V = regular_simplex(K, radius=RADIUS, generator=g)
    omega = torch.randn(m, K, generator=g, dtype=torch.float64) / RADIUS
    # The law of sample_noisy_simplex, drawn here so that every regime shares the points and the unit noise.
    e = -torch.log1p(-torch.rand(trials, n, K + 1, generator=g, dtype=torch.float64))
    clean = (e / e.sum(-1, keepdim=True)) @ V
    unit_noise = torch.randn(trials, n, K, generator=g, dtype=torch.float64)
    start = V + START_SCALE * RADIUS * torch.randn(trials, K + 1, K, generator=g, dtype=torch.float64)
    sigmas = [0.0 if c is None else RADIUS / (c * math.sqrt(K)) for c in regimes]
    R = len(regimes)
    Y = torch.cat([clean + s * unit_noise for s in sigmas])  # (R * trials, n, K), regime-major
    sig = torch.tensor(sigmas, dtype=torch.float64).repeat_interleave(trials)
    fit = fit_simplex_fourier(Y, omega, sig, start.repeat(R, 1, 1), max_iter=1000)
    err2 = vertex_matching_error(fit.vertices, V).pow(2).view(R, trials).mean(1)
    return {"sigmas": sigmas, "mse": err2.tolist(), "unconverged": int((~fit.converged).sum()), "fits": R * trials}


@claim(
    "noisy-simplex-learning",
    statement=("Gaussian noise multiplies the samples needed to learn a simplex in R^K by a factor exponential in "
               "K/SNR^2: at SNR = 2 sqrt K the cost is of the noiseless order (factor <= 3), at SNR = sqrt K / 2 it "
               "is not."),
    criterion=CRITERION,
    baseline="the same estimator on the same samples without noise (sigma = 0)",
    threads=1,
)
def noise_cost_threshold(ctx: ClaimContext) -> ClaimResult:
    Ks = ctx.pick(smoke=[2, 3], full=[2, 3, 4])
    n = ctx.pick(smoke=400, full=4000)
    trials = ctx.pick(smoke=2, full=10)
    m = ctx.pick(smoke=24, full=48)
    regimes = ctx.pick(smoke=[None, HIGH, LOW], full=[None, HIGH, MID, LOW])
    seeds = ctx.seeds(3)

    penalty: dict[int, dict[float, list[float]]] = {}
    clean_rmse: dict[int, list[float]] = {}
    unconverged = fits = 0
    for K in Ks:
        penalty[K] = {c: [] for c in regimes if c is not None}
        clean_rmse[K] = []
        for seed in seeds:
            out = _run_seed(K, seed, regimes, n, trials, m)
            unconverged += out["unconverged"]
            fits += out["fits"]
            base = out["mse"][0]
            clean_rmse[K].append(math.sqrt(base))
            for c, mse in zip(regimes[1:], out["mse"][1:]):
                penalty[K][c].append(mse / base)

    passed = all(p <= MAX_PENALTY for K in Ks for p in penalty[K][HIGH])
    control_passed = all(p <= MAX_PENALTY for K in Ks for p in penalty[K][LOW])
    xs, ys = [], []
    for K in Ks:
        for c, vals in penalty[K].items():
            xs.append(1.0 / c**2)  # K / SNR^2 with SNR = c sqrt K
            ys.append(math.log(float(np.mean(vals))))
    line = fit_line(torch.tensor(xs, dtype=torch.float64), torch.tensor(ys, dtype=torch.float64))

    def spread(vals):
        m, s = mean_std(vals)  # the headline's mean and std (fmt_mean_std)
        return {"mean": float(m), "std": float(s), "values": [float(v) for v in vals]}

    metrics = {
        "Ks": Ks, "n": n, "trials": trials, "n_frequencies": m,
        "penalty_snr_2sqrtK": {str(K): spread(penalty[K][HIGH]) for K in Ks},
        "noiseless_rmse": {str(K): spread(clean_rmse[K]) for K in Ks},
        "log_penalty_vs_K_over_snr2": {"slope": line.slope, "ci": [line.ci_low, line.ci_high],
                                       "intercept": line.intercept, "r2": line.r2},
        "unconverged_fits": unconverged, "fits": fits,
    }
    if MID in regimes:
        metrics["penalty_snr_sqrtK"] = {str(K): spread(penalty[K][MID]) for K in Ks}
    control = Control("SNR = sqrt K / 2 (K/SNR^2 = 4, where the theory's factor is large) through the same "
                      "criterion", control_passed,
                      {"penalty_snr_sqrtK_over_2": {str(K): spread(penalty[K][LOW]) for K in Ks}})
    headline = ("noise penalty on err^2 (fixed n = " + str(n) + ", 3 seeds): " + "; ".join(
        f"K = {K}: SNR = 2 sqrt K {fmt_mean_std(penalty[K][HIGH])}, SNR = sqrt K / 2 {fmt_mean_std(penalty[K][LOW])}"
        for K in Ks) + f" (threshold {MAX_PENALTY:g}); log P vs K/SNR^2 slope {line.slope:.2f}")

    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for K in Ks:
            cs = sorted(penalty[K], reverse=True)
            ax.errorbar([1 / c**2 for c in cs], [np.mean(penalty[K][c]) for c in cs],
                        yerr=[np.std(penalty[K][c]) for c in cs], fmt="o-", label=f"K = {K}")
        ax.axhline(MAX_PENALTY, ls=":", c="gray", label="criterion")
        ax.set_yscale("log")
        ax.set_xlabel("K / SNR^2")
        ax.set_ylabel("noise penalty on squared vertex error")
        ax.legend(fontsize=7)
        ctx.save_figure(fig, "penalty")

    baseline = {"noiseless_rmse": {str(K): float(np.mean(clean_rmse[K])) for K in Ks},
                "max_penalty": MAX_PENALTY}
    if unconverged > MAX_UNCONVERGED * fits:
        return ClaimResult("inconclusive", metrics, baseline, f"{unconverged} of {fits} fits did not converge",
                           headline, control)
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)
