"""Claim check for Generative Sliced MMD Flows with Riesz Kernels (Hertrich et al., ICLR 2024).

The paper's computational headline: for the Riesz kernel with ``r = 1`` the MMD (energy distance) equals its
sliced version up to the constant ``c_d``, so it can be estimated from ``P`` random 1-D projections, each solved
by sorting in ``O(N log N)`` instead of the ``O(N^2)`` pairwise sum.

Setup, fixed before the first run (3 seeds):

* accuracy: ``x ~ N(0, I_10)``, ``y ~ N(e_1, I_10)``, ``N = M = 1000``, float64; the sorting-based
  :func:`~paperzoo.divergences.sliced_riesz_mmd` over ``P = 20000`` directions (smoke: 2000), drawn as 20 batches
  of ``P / 20``, against the exact :func:`~paperzoo.divergences.energy_distance` on the same samples (so only the
  slicing error is measured). The estimate is the mean of the 20 batch estimates and its Monte-Carlo standard
  error the batch-means SE (standard deviation of the 20 batch estimates over sqrt 20).
* scaling: same distributions in float32, ``P = 64`` directions, one thread; best of 3 timings per size. The
  sliced estimator runs at N = M in {1e3, 3e3, 1e4, 3e4, 1e5} (smoke: {1e3, 3e3, 1e4}), the exact one at
  N = M in {1e3, 2e3, 4e3, 8e3} (smoke: {5e2, 1e3, 2e3}; larger sizes need ``3 N^2`` distances in memory).
  The runtime exponent is the least-squares slope of log time against log N.

Issue 8 rework (the earlier verdict was ``reproduced``, with P = 2000 directions):

* The accuracy part sat on a knife edge. At ``P = 2000`` the Monte-Carlo standard error of the sliced estimate is
  about 2.7% of the value (the per-direction values ``c_d MMD^2_1D`` have a coefficient of variation of about 1.2
  in ``d = 10``), so the 5% tolerance was 1.85 SE away: seed 0's relative errors were 4.6%, 4.6% and 2.3%, and a
  run seed had roughly a one-in-five chance of failing with a correct estimator. ``P`` is now 20000 (SE about
  1%, the tolerance 5 SE away), and the criterion adds the test the paper's equality actually makes, unbiasedness:
  ``|sliced - exact| <= 3.5`` batch-means SE on every seed (two-sided t with 19 degrees of freedom: a correct
  estimator fails one seed with probability about 0.2%). The 5% tolerance is kept.
* The exact estimator's ">= 1.6" exponent was part of the criterion; it is now the discriminating control: the
  exact O(N^2) estimator through the sliced estimator's runtime part (exponent <= 1.3), which must fail. If it
  passed, the timings would be dominated by overhead and the ``<= 1.3`` part could not tell ``N log N`` from
  ``N^2``.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std
from paperzoo.divergences import energy_distance, riesz_slicing_constant, sliced_riesz_mmd

DIM = 10
N_BATCHES = 20
P_TIMING = 64
Z_MAX = 3.5
CRITERION = (
    "On each of 3 seeds (d = 10, N = M = 1000), the sorting-based sliced estimate over P = 20000 directions (20 "
    "batches; smoke 2000) is within 5% relative error of the exact energy distance and within 3.5 batch-means "
    "standard errors of it (unbiasedness); and the runtime exponent of the sorting-based sliced estimator "
    "(log-log slope of time over N, mean over 3 seeds) is <= 1.3. Control: the exact O(N^2) estimator through the "
    "runtime part (exponent <= 1.3); it must fail."
)
BASELINE = "paperzoo.divergences.energy_distance: exact pairwise-distance MMD (torch.cdist), same data and threads"


def _sample(n: int, seed: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, DIM, generator=g, dtype=torch.float64)
    y = torch.randn(n, DIM, generator=g, dtype=torch.float64)
    y[:, 0] += 1.0
    return x.to(dtype), y.to(dtype)


def _best_time(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _slope(ns, ts) -> float:
    return float(np.polyfit(np.log(ns), np.log(ts), 1)[0])


@claim(
    "sliced-riesz-mmd",
    statement=("The Riesz (r = 1) MMD equals c_d times its sliced version, so a sorting-based estimator over P "
               "random 1-D projections matches the exact energy distance at O(N log N) cost instead of O(N^2)."),
    criterion=CRITERION,
    baseline=BASELINE,
)
def sorting_sliced_matches_exact_in_n_log_n(ctx: ClaimContext) -> ClaimResult:
    sliced_ns = ctx.pick(smoke=[1_000, 3_000, 10_000], full=[1_000, 3_000, 10_000, 30_000, 100_000])
    exact_ns = ctx.pick(smoke=[500, 1_000, 2_000], full=[1_000, 2_000, 4_000, 8_000])
    seeds = ctx.seeds(3)

    n_projections = ctx.pick(smoke=2_000, full=20_000)
    rel_errors, z_scores, rel_se, exact_values, sliced_values = [], [], [], [], []
    for seed in seeds:
        x, y = _sample(1000, seed, torch.float64)
        exact = energy_distance(x, y).item()
        g = torch.Generator().manual_seed(seed + 1)
        batches = np.array([sliced_riesz_mmd(x, y, n_projections=n_projections // N_BATCHES, generator=g).item()
                            for _ in range(N_BATCHES)])
        est, se = float(batches.mean()), float(batches.std(ddof=1) / np.sqrt(N_BATCHES))
        exact_values.append(exact)
        sliced_values.append(est)
        rel_errors.append(abs(est - exact) / exact)
        z_scores.append((est - exact) / se)
        rel_se.append(se / exact)

    # One thread: on a shared machine thread-pool contention would time the machine, not the algorithms.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sliced_slopes, exact_slopes, sliced_times, exact_times = [], [], [], []
        for seed in seeds:
            ts = []
            for n in sliced_ns:
                x, y = _sample(n, seed, torch.float32)
                g = torch.Generator().manual_seed(seed)
                ts.append(_best_time(lambda: sliced_riesz_mmd(x, y, n_projections=P_TIMING, generator=g)))
            te = []
            for n in exact_ns:
                x, y = _sample(n, seed, torch.float32)
                te.append(_best_time(lambda: energy_distance(x, y)))
            sliced_times.append(ts)
            exact_times.append(te)
            sliced_slopes.append(_slope(sliced_ns, ts))
            exact_slopes.append(_slope(exact_ns, te))
    finally:
        torch.set_num_threads(threads)

    mean_sliced, mean_exact = float(np.mean(sliced_slopes)), float(np.mean(exact_slopes))
    accurate = max(rel_errors) < 0.05 and max(abs(z) for z in z_scores) <= Z_MAX
    passed = accurate and mean_sliced <= 1.3
    control = Control("the exact O(N^2) energy distance through the runtime part (exponent <= 1.3)",
                      mean_exact <= 1.3, {"runtime_exponent": exact_slopes})
    headline = (f"runtime exponent {fmt_mean_std(sliced_slopes)} (sorting sliced, P = {P_TIMING}) vs "
                f"{fmt_mean_std(exact_slopes)} (exact pairwise), 3 seeds; accuracy at P = {n_projections}: relative "
                f"error {fmt_mean_std(rel_errors)} (max {max(rel_errors):.2%}, tol 5%), |z| max "
                f"{max(abs(z) for z in z_scores):.2f} (tol {Z_MAX:g} SE)")

    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.loglog(sliced_ns, np.mean(sliced_times, 0), "o-", label=f"sorting sliced (P={P_TIMING})")
        ax.loglog(exact_ns, np.mean(exact_times, 0), "s-", label="exact pairwise")
        ax.set_xlabel("N = M")
        ax.set_ylabel("seconds (1 thread)")
        ax.legend()
        ctx.save_figure(fig, "scaling")

    def spread(v):
        return {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": [float(t) for t in v]}

    return ClaimResult.decide(
        passed,
        metrics={
            "dim": DIM,
            "n_projections_accuracy": n_projections,
            "accuracy_batches": N_BATCHES,
            "z_score": z_scores,
            "relative_standard_error": spread(rel_se),
            "n_projections_timing": P_TIMING,
            "relative_error": spread(rel_errors),
            "max_relative_error": float(max(rel_errors)),
            "sliced_value": spread(sliced_values),
            "slicing_constant": riesz_slicing_constant(DIM),
            "runtime_exponent": spread(sliced_slopes),
            "sizes": sliced_ns,
            "seconds": [float(t) for t in np.mean(sliced_times, 0)],
        },
        baseline={
            "exact_value": spread(exact_values),
            "runtime_exponent": spread(exact_slopes),
            "sizes": exact_ns,
            "seconds": [float(t) for t in np.mean(exact_times, 0)],
            "memory_bytes_at_largest_sliced_n": 3 * sliced_ns[-1] ** 2 * 4,
        },
        headline=headline, control=control,
    )
