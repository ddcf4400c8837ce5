"""Claim check for Unraveling the Enigma of Double Descent: An In-depth Analysis through the Lens of Learned Feature
Space (Gu, Zheng, Aste, 2023).

The paper's claims, at the scale of its MNIST fully connected experiment: with label noise, test error against
width rises to a peak near the interpolation threshold and falls again (double descent); over the same range the
kNN (k = 5, cosine) true-label agreement P of the noisy training points in the hidden-layer feature space rises
after the peak (noisy points end up among their true class); with clean labels the peak largely disappears.

Setup, fixed before the claim's first run (one exploratory two-seed sweep chose the width grid and step count).
scikit-learn digits (standardised), 1000 training points (smoke: 300) and the digits test split (539 points);
20% of the training labels replaced by a uniformly drawn *different* class. One-hidden-layer ReLU MLPs of widths
2, 4, 8, 12, 16, 24, 32, 64, 128, 256, 512 (smoke: 2, 8, 32), full-batch Adam, lr 3e-3 (smoke 2e-2), 1000
(smoke 120) steps, no regularisation (:func:`paperzoo.diagnostics.double_descent.mlp_width_sweep`). 3 seeds.

Measured per seed on the test-error curve ``e(w)``: the largest rise with width ``R = max_{i<j} e_j - e_i`` and
its peak ``j``; the second descent ``D = e_peak - e_last``; and ``P_last - P_peak``.

Criterion: over the 3 seeds, mean R >= 0.03, mean D >= 0.03 and mean(P_last - P_peak) >= 0.05, each also above
two standard errors. Control: the same sweep with clean labels (the paper: no marked peak); its R and D through
the same thresholds must fail.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std
from paperzoo.data.digits import digits_split
from paperzoo.diagnostics.double_descent import mlp_width_sweep

NOISE = 0.2
MIN_RISE = 0.03
MIN_DESCENT = 0.03
MIN_P_GAIN = 0.05
CRITERION = (
    "Digits, 1000 training points with 20% of labels moved to a random other class, 1-hidden-layer ReLU MLP widths "
    "2..512 (11 widths), full-batch Adam lr 3e-3, 1000 steps, 3 seeds. Per seed: R = largest rise of test error "
    "with width (max_{i<j} e_j - e_i, peak j), D = e_peak - e_last, G = P_last - P_peak (kNN k=5 cosine agreement "
    "of noisy points with their true label in the hidden features). Pass: seed-mean R >= 0.03, D >= 0.03, "
    "G >= 0.05, each > 2 standard errors. Control: clean labels, same sweep; R and D through the same thresholds "
    "must fail."
)


def _sem_ok(values, floor):
    v = np.asarray(values, dtype=float)
    mean, se = float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("inf")
    return mean >= floor and mean > 2 * se


def _curve_stats(sweep):
    e, p = sweep.test_error, sweep.knn_agreement
    best, pair, low_i = -1.0, (0, 0), 0
    for j in range(1, len(e)):  # running minimum: R = max_j (e_j - min_{i<j} e_i)
        if e[j - 1] < e[low_i]:
            low_i = j - 1
        if e[j] - e[low_i] > best:
            best, pair = e[j] - e[low_i], (low_i, j)
    peak = pair[1]
    return {"rise": best, "peak_width": sweep.widths[peak], "descent": e[peak] - e[-1],
            "p_gain": p[-1] - p[peak], "p_peak": p[peak], "p_last": p[-1]}


def _run(seed, noise, n_train, widths, steps, lr):
    g = torch.Generator().manual_seed(seed)
    d = digits_split(0.3, generator=g)
    x, y = d.train_x[:n_train], d.train_y[:n_train]
    given = y.clone()
    flip = torch.rand(len(y), generator=g) < noise
    given[flip] = (y[flip] + torch.randint(1, 10, (int(flip.sum()),), generator=g)) % 10
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a sweep that never interpolates is not the paper's regime
        sweep = mlp_width_sweep(x, given, y, d.test_x, d.test_y, widths, steps=steps, lr=lr, generator=g)
    return sweep


@claim(
    "double-descent-features",
    statement=("With 20% label noise, test error of a width sweep peaks near interpolation and falls again, while "
               "the kNN true-label agreement of the noisy points in the learned features rises past the peak; "
               "with clean labels the peak disappears."),
    criterion=CRITERION,
    baseline="the same width sweep with clean labels",
    threads=1,
)
def noisy_labels_peak_and_knn_agreement(ctx: ClaimContext) -> ClaimResult:
    n_train = ctx.pick(smoke=300, full=1000)
    widths = ctx.pick(smoke=[2, 8, 32], full=[2, 4, 8, 12, 16, 24, 32, 64, 128, 256, 512])
    steps = ctx.pick(smoke=120, full=1000)
    lr = ctx.pick(smoke=2e-2, full=3e-3)
    seeds = ctx.seeds(3)
    try:
        noisy = [_run(s, NOISE, n_train, widths, steps, lr) for s in seeds]
        clean = [_run(s, 0.0, n_train, widths, steps, lr) for s in seeds]
    except RuntimeWarning as err:
        return ClaimResult("inconclusive", {"n_train": n_train, "widths": widths, "steps": steps}, {},
                           f"the sweep did not reach interpolation: {err}", "no interpolation", None)
    ns = [_curve_stats(s) for s in noisy]
    cs = [_curve_stats(s) for s in clean]
    rise, descent, gain = ([r[key] for r in ns] for key in ("rise", "descent", "p_gain"))
    passed = _sem_ok(rise, MIN_RISE) and _sem_ok(descent, MIN_DESCENT) and _sem_ok(gain, MIN_P_GAIN)
    c_rise, c_descent = [r["rise"] for r in cs], [r["descent"] for r in cs]
    control_passed = _sem_ok(c_rise, MIN_RISE) and _sem_ok(c_descent, MIN_DESCENT)

    def curves(sweeps, key):
        return np.mean([getattr(s, key) for s in sweeps], axis=0).tolist()

    control = Control("the same sweep with clean labels through the rise and second-descent thresholds",
                      control_passed, {"rise": c_rise, "descent": c_descent,
                                       "peak_width": [r["peak_width"] for r in cs],
                                       "test_error_mean": curves(clean, "test_error")})
    headline = (f"20% noise, 3 seeds: test-error rise {fmt_mean_std(rise)} to a peak at width "
                f"{[r['peak_width'] for r in ns]}, second descent {fmt_mean_std(descent)}, kNN agreement of noisy "
                f"points {fmt_mean_std([r['p_peak'] for r in ns])} at the peak -> "
                f"{fmt_mean_std([r['p_last'] for r in ns])} at width {widths[-1]}; clean labels: rise "
                f"{fmt_mean_std(c_rise)}")

    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(widths, curves(noisy, "test_error"), "o-", label="test error, 20% noise")
        ax.plot(widths, curves(clean, "test_error"), "s-", label="test error, clean")
        ax.plot(widths, curves(noisy, "train_error"), ":", label="train error, 20% noise")
        ax.plot(widths, curves(noisy, "knn_agreement"), "^-", label="kNN agreement P of noisy points")
        ax.set_xscale("log")
        ax.set_xlabel("hidden width")
        ax.legend(fontsize=7)
        ctx.save_figure(fig, "double_descent")

    metrics = {"n_train": n_train, "widths": widths, "steps": steps, "lr": lr, "rise": rise, "descent": descent,
               "p_gain": gain, "peak_width": [r["peak_width"] for r in ns],
               "test_error_mean": curves(noisy, "test_error"), "train_error_mean": curves(noisy, "train_error"),
               "knn_agreement_mean": curves(noisy, "knn_agreement")}
    baseline = {"rise": c_rise, "descent": c_descent, "test_error_mean": curves(clean, "test_error")}
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)
