"""Claim check for AutoDiffusion: Training-Free Optimization of Time Steps and Architectures (Li et al., ICCV 2023).

The paper's headline: at very few steps (4 on ImageNet-64), time steps found by a training-free evolutionary search
on a sample-quality score give far better samples than the standard uniform DDIM steps of the same model and
sampler. The architecture (layer-skipping) half of the paper is out of scope here: the model is an exact denoiser.

Setup, fixed before the first run: the 2-D float64 mixture of 8 Gaussians (std 0.25) on a circle of radius 4
(:func:`~paperzoo.diffusion.mixture.mixture_on_circle`) and its exact denoiser; deterministic DDIM
(:func:`~paperzoo.diffusion.samplers.sample_ddim`, eta = 0, one evaluation per level) at K = 4 and 6 levels (NFE).
Search space: the VE levels of DDPM's linear beta schedule, T = 1000 (sigma from 0.010 to 157). Per seed, a
validation set (500 unit-noise draws, 500 exact reference draws, 32 fixed SW directions; smoke 200 and 16) scores
every candidate, and a disjoint test set (fresh noise and reference draws, 20000 each, 256 fresh directions; smoke
1000 and 64) scores the chosen schedules; the metric is SW_2 (square root of the sliced W2^2). Method:
:func:`~paperzoo.diffusion.autodiffusion.search_timesteps` at the official constants (P = 50, top-k 10, 25
mutations, 15 crossovers, 10 iterations, p = 0.1, uniform initialisation; smoke P = 8, k = 2, 4 mutations, 2 crossovers,
3 iterations). Baselines, each tuned on the same validation fitness with a grid of G x G (sigma_min, sigma_max)
pairs, log-spaced over sigma_min in [0.010, 1] and sigma_max in [1, 157], G = floor(sqrt(evaluations the search
made)) (so each baseline gets at most the search's evaluation budget): "uniform" (levels evenly spaced in the
training step t between t(sigma_max) and t(sigma_min), the DDIM rule with a tuned range), "karras" (rho = 7) and
"log-linear" (evenly spaced in log sigma). Also reported, not judged: DDIM's untuned uniform "leading" steps (the
paper's baseline literally) and the at-edge flags of the baseline grids.

Criterion. For each K in {4, 6} and each tuned baseline family, over 3 paired seeds, the searched schedule's test
SW_2 beats the baseline's: the mean paired improvement in log SW_2 (log baseline - log searched) exceeds log 1.1
(10%) and 2 SE. All 6 comparisons must hold. Control: random search with the same number of distinct evaluations
as the evolutionary search made on that seed (uniformly random K-subsets of the 1000 steps, the best on
validation), through the same 6 comparisons; it passes when all 6 pass, and it must fail (else the win is the
search space's, not the search's).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison
from paperzoo.diffusion.autodiffusion import _random, _to_sigmas, schedule_fitness, search_timesteps
from paperzoo.diffusion.mixture import mixture_on_circle
from paperzoo.diffusion.samplers import sample_ddim
from paperzoo.diffusion.schedules import (alphas_cumprod_from_betas, append_zero, betas_linear, discrete_timesteps,
                                          get_sigmas_exponential, get_sigmas_karras, sigmas_from_alphas_cumprod)

D = torch.float64
NFES = (4, 6)
MARGIN = math.log(1.1)
FAMILIES = ("uniform", "karras", "log-linear")
SIGMA_LO, SIGMA_MID, SIGMA_HI = 0.010, 1.0, 157.0
CRITERION = (
    "8 Gaussians (std 0.25, radius 4), exact denoiser, DDIM eta 0 at K = 4 and 6 levels; search space the VE levels "
    "of DDPM linear betas, T = 1000; validation (500 noise/reference draws, 32 SW directions) for all selection, "
    "disjoint test (20000, 256) for the verdict; metric SW_2. Evolutionary search at the official constants (P 50, "
    "top-k 10, 25 mutations, 15 crossovers, 10 iterations, p 0.1) vs uniform-in-t, Karras (rho 7) and log-linear "
    "schedules, each with (sigma_min, sigma_max) tuned on a G x G log grid over [0.01, 1] x [1, 157], G = "
    "floor(sqrt(search evaluations)). For every K and every family: mean paired improvement in log test SW_2 over 3 "
    "seeds > log 1.1 and > 2 SE; all 6 must hold. Control: random search with the same evaluation count through "
    "the same 6 comparisons must not pass all 6."
)


def _levels() -> torch.Tensor:
    return sigmas_from_alphas_cumprod(alphas_cumprod_from_betas(betas_linear(1000).to(D)))


def _uniform_in_t(levels: torch.Tensor, K: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """K levels evenly spaced in the (continuous) training step between t(sigma_max) and t(sigma_min)."""
    log_levels = levels.log().numpy()
    steps = np.arange(levels.shape[0], dtype=np.float64)
    t_hi, t_lo = np.interp(math.log(sigma_max), log_levels, steps), np.interp(math.log(sigma_min), log_levels, steps)
    t = np.linspace(t_hi, t_lo, K)
    return append_zero(torch.from_numpy(np.exp(np.interp(t, steps, log_levels))))


def _family(name: str, levels, K, sigma_min, sigma_max) -> torch.Tensor:
    if name == "uniform":
        return _uniform_in_t(levels, K, sigma_min, sigma_max)
    if name == "karras":
        return get_sigmas_karras(K, sigma_min, sigma_max, rho=7.0)
    return get_sigmas_exponential(K, sigma_min, sigma_max)


def _tune(name, levels, K, G, fitness) -> dict:
    mins = np.geomspace(SIGMA_LO, SIGMA_MID, G)
    maxs = np.geomspace(SIGMA_MID, SIGMA_HI, G)
    best = None
    for i, lo in enumerate(mins):
        for j, hi in enumerate(maxs):
            sigmas = _family(name, levels, K, float(lo), float(hi))
            score = fitness(sigmas)
            if best is None or score < best[0]:
                best = (score, i, j, sigmas)
    score, i, j, sigmas = best
    return {"sigmas": sigmas, "val": score, "sigma_min": float(mins[i]), "sigma_max": float(maxs[j]),
            "at_edge": bool(i in (0, G - 1) or j in (0, G - 1))}


def _random_search(levels, K, budget, fitness, generator) -> torch.Tensor:
    seen, best = set(), None
    for _ in range(20 * budget):
        if len(seen) >= budget:
            break
        cand = _random(K, levels.shape[0], generator)
        if cand in seen:
            continue
        seen.add(cand)
        score = fitness(_to_sigmas(levels, cand))
        if best is None or score < best[0]:
            best = (score, cand)
    return _to_sigmas(levels, best[1])


@claim(
    "autodiffusion",
    statement=("At few steps (4 and 6 NFE, DDIM), sampling steps found by AutoDiffusion's training-free evolutionary "
               "search on a sample-quality score beat the standard uniform, Karras and log-linear schedules, each "
               "with its range tuned at the same evaluation budget, on held-out samples."),
    criterion=CRITERION,
    baseline="uniform-in-t (DDIM), Karras (rho 7) and log-linear schedules with (sigma_min, sigma_max) tuned on the "
             "same validation fitness with at most the search's evaluation count",
    threads=1,
)
def searched_steps_beat_tuned_schedules(ctx: ClaimContext) -> ClaimResult:
    n_val, n_test = ctx.pick(smoke=200, full=500), ctx.pick(smoke=1000, full=20000)
    proj_val, proj_test = ctx.pick(smoke=16, full=32), ctx.pick(smoke=64, full=256)
    ea = ctx.pick(smoke=dict(population=8, top_k=2, mutations=4, crossovers=2, iterations=3),
                  full=dict(population=50, top_k=10, mutations=25, crossovers=15, iterations=10))
    gm = mixture_on_circle(8, 2, radius=4.0, std=0.25)
    levels = _levels()
    runs = {K: [] for K in NFES}
    for seed in ctx.seeds(3):
        g = torch.Generator().manual_seed(seed)
        val = schedule_fitness(gm._denoise, torch.randn(n_val, 2, generator=g, dtype=D),
                               gm.sample(n_val, generator=g), sampler=sample_ddim, n_projections=proj_val, generator=g)
        test = schedule_fitness(gm._denoise, torch.randn(n_test, 2, generator=g, dtype=D),
                                gm.sample(n_test, generator=g), sampler=sample_ddim, n_projections=proj_test,
                                generator=g)
        for K in NFES:
            res = search_timesteps(val, levels, K, generator=torch.Generator().manual_seed(1000 + seed), **ea)
            G = int(math.isqrt(res.evaluations))
            row = {"searched": test(res.sigmas), "searched_val": res.score, "searched_sigmas": res.sigmas.tolist(),
                   "evaluations": res.evaluations, "grid": G}
            for name in FAMILIES:
                tuned = _tune(name, levels, K, G, val)
                row[name] = test(tuned["sigmas"])
                row[name + "_tuned"] = {k: v for k, v in tuned.items() if k != "sigmas"}
            ddim_steps = tuple(sorted(discrete_timesteps(1000, K, "leading").tolist()))
            row["ddim_leading_untuned"] = test(_to_sigmas(levels, ddim_steps))
            rnd = _random_search(levels, K, res.evaluations, val, torch.Generator().manual_seed(2000 + seed))
            row["random_search"] = test(rnd)
            runs[K].append(row)

    def col(K, key):
        return [r[key] for r in runs[K]]

    def log_col(K, key):
        return [math.log(max(v, 1e-12)) for v in col(K, key)]

    def compare(key):
        return {f"K{K}_{name}": paired_comparison(log_col(K, key), log_col(K, name), margin=MARGIN)
                for K in NFES for name in FAMILIES}

    main, ctrl = compare("searched"), compare("random_search")
    passed = all(c.wins for c in main.values())
    control = Control("random search (uniform K-subsets, best on validation) with the search's evaluation count, "
                      "through the same 6 comparisons", all(c.wins for c in ctrl.values()),
                      {key: c.as_metrics() for key, c in ctrl.items()})
    parts = []
    for K in NFES:
        best_base = min(FAMILIES, key=lambda n: float(np.mean(col(K, n))))
        parts.append(f"K = {K}: SW_2 {fmt_mean_std(col(K, 'searched'))} (searched) vs "
                     f"{fmt_mean_std(col(K, best_base))} (tuned {best_base}, best baseline), "
                     f"{fmt_mean_std(col(K, 'random_search'))} (random search), "
                     f"{fmt_mean_std(col(K, 'ddim_leading_untuned'))} (untuned DDIM)")
    worst = min(main.values(), key=lambda c: c.diff_mean)
    headline = "; ".join(parts) + f"; 3 seeds, smallest paired log gain {worst.diff_mean:.3f} ± {worst.diff_se:.3f} SE"
    metrics = {"comparisons": {key: c.as_metrics() for key, c in main.items()},
               "runs": {str(K): runs[K] for K in NFES}}
    baseline = {f"K{K}_{name}": col(K, name) for K in NFES for name in FAMILIES}
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)
