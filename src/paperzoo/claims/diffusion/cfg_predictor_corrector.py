"""Claim check for Classifier-Free Guidance is a Predictor-Corrector (Bradley & Nakkiran, 2024).

The paper's predictions, demonstrated with exact denoisers: (A) CFG with DDIM and with DDPM give different laws,
and neither is the tilted ("gamma-powered") law p(x|c)^w p(x)^(1-w); (B) in the SDE limit CFG-DDPM with weight w is
PCG: a DDIM step on the conditional model plus one Langevin step (step (sigma^2 - sigma'^2)/2) on the tilted law
of the *noised* distributions with gamma = 2w - 1.

Setup, fixed before the first run (the geometry from the closed forms alone, no sampler run): float64, 1-D, Karras
levels sigma in [0.002, 80] (rho 7), starts sigma_max * N(0, 1), 3 seeds, W1 distances (exact CDFs on a grid of
6001 points on [-8, 8]; between two sample sets, the mean gap of the sorted samples).
(A) p(x|c) = N(1, 0.5^2), p(x) = N(0, 1), w = 3, 256 steps (smoke 64), n = 4000 samples (smoke 500): closed forms
:func:`~paperzoo.diffusion.predictor_corrector_guidance.cfg_gaussian_output` (DDIM: N(1.495, 0.0156), DDPM:
N(1.312, 0.0666)) and :func:`~paperzoo.diffusion.predictor_corrector_guidance.tilted_gaussian` (N(1.2, 0.1)).
(B) p(x) = 1/2 N(-1, 0.5^2) + 1/2 N(1, 0.5^2), class c the component at +1 (exact
:func:`~paperzoo.diffusion.guidance.class_conditional`), w = 3, 512 steps (smoke 64), n = 4000 (smoke 500): CFG-DDPM
(the ancestral sampler), a second CFG-DDPM run with independent noise (the seed-noise floor), PCG with gamma = 5,
one corrector step, step scale 1 (the paper's SDE-limit setting), and the tilted law at gamma = w = 3 normalised on
the grid. Baseline: the tilted law (the "misconception") and, for (A), the other sampler's law.
Controls: (C1) PCG with the naive gamma = w = 3 in place of 2w - 1 through (B); (C2) w = 1, where all laws coincide
with p(x|c), through (A). Either passing makes the verdict inconclusive.
"""

from __future__ import annotations

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison
from paperzoo.diffusion.guidance import class_conditional, classifier_free_guidance
from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle
from paperzoo.diffusion.predictor_corrector_guidance import (cfg_gaussian_output, pcg_gamma, sample_pcg,
                                                              tilted_gaussian, tilted_log_density)
from paperzoo.diffusion.samplers import sample_ddpm, sample_euler
from paperzoo.diffusion.schedules import get_sigmas_karras

D = torch.float64
W = 3.0
MARGIN = 0.05
TOL = 0.02
GRID = torch.linspace(-8.0, 8.0, 6001, dtype=D)
CRITERION = (
    "Exact 1-D denoisers, 3 paired seeds, W1 distances. (A) p(x|c) = N(1, 0.25), p(x) = N(0, 1), w = 3, 256 Karras "
    "steps in [0.002, 80], 4000 samples: for CFG-DDIM and CFG-DDPM each, W1 of its samples to its own closed-form "
    "law is lower than to the tilted law N(1.2, 0.1) and lower than to the other sampler's closed-form law, each by "
    "a mean paired margin > 0.05 and > 2 SE. (B) p(x) = 1/2 N(-1, 0.25) + 1/2 N(1, 0.25), c = the +1 component, "
    "w = 3, 512 steps, 4000 samples: W1(CFG-DDPM, PCG with gamma = 2w - 1 = 5, one Langevin step of size "
    "(sigma^2 - sigma'^2)/2) minus W1(CFG-DDPM, CFG-DDPM with independent noise) has mean over seeds < 0.02; and "
    "W1 to the grid-normalised tilted law p(x|c)^3 p(x)^-2 exceeds W1(CFG-DDPM, PCG) by a mean paired margin > 0.05 "
    "and > 2 SE, for the CFG-DDPM samples and for the PCG samples. Controls that must fail: PCG with the naive "
    "gamma = w = 3 through (B); w = 1 through (A)."
)


def _w1_cdf(x: torch.Tensor, cdf: torch.Tensor) -> float:
    """W1 between the sample ``x`` (n, 1) and a law given by its CDF on ``GRID``."""
    emp = torch.searchsorted(x[:, 0].sort().values.contiguous(), GRID, right=True).to(D) / x.shape[0]
    return float(torch.trapezoid((emp - cdf).abs(), GRID))


def _w1_samples(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a[:, 0].sort().values - b[:, 0].sort().values).abs().mean())


def _gauss_cdf(mean, var) -> torch.Tensor:
    return torch.special.ndtr((GRID - float(mean)) / float(var) ** 0.5)


def _part_a(w: float, n: int, steps: int, seeds: list[int]) -> dict:
    t = lambda v: torch.tensor([v], dtype=D)  # noqa: E731
    cond, uncond = GaussianMixture(t([1.0]), t([[0.25]])), GaussianMixture(t([0.0]), t([[1.0]]))
    laws = {s: cfg_gaussian_output(t(1.0), t(0.25), t(0.0), t(1.0), w, sampler=s, sigma_max=80.0)
            for s in ("ddim", "ddpm")}
    tilt_m, tilt_c = tilted_gaussian(t(1.0), t(0.25)[None], t(0.0), t(1.0)[None], w)
    cdfs = {"ddim": _gauss_cdf(*laws["ddim"]), "ddpm": _gauss_cdf(*laws["ddpm"]), "tilted": _gauss_cdf(tilt_m, tilt_c)}
    sigmas = get_sigmas_karras(steps, 0.002, 80.0)
    model = classifier_free_guidance(cond.denoise, uncond.denoise, w)
    dist = {s: {k: [] for k in cdfs} for s in ("ddim", "ddpm")}
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        x = sigmas[0] * torch.randn(n, 1, generator=g, dtype=D)
        out = {"ddim": sample_euler(model, x, sigmas), "ddpm": sample_ddpm(model, x, sigmas, generator=g)}
        for s in out:
            for k, cdf in cdfs.items():
                dist[s][k].append(_w1_cdf(out[s], cdf))
    comparisons = {}
    for s, other in (("ddim", "ddpm"), ("ddpm", "ddim")):
        for alt in ("tilted", other):
            comparisons[f"{s}_own_vs_{alt}"] = paired_comparison(dist[s][s], dist[s][alt], margin=MARGIN)
    passed = all(c.wins for c in comparisons.values())
    return {"passed": passed, "dist": dist, "comparisons": comparisons,
            "laws": {s: [float(laws[s][0]), float(laws[s][1])] for s in laws} | {
                "tilted": [float(tilt_m), float(tilt_c)]}}


def _part_b(gamma: float, n: int, steps: int, seeds: list[int], ddpm_runs: dict | None = None) -> dict:
    gm = mixture_on_circle(2, 1, radius=1.0, std=0.5)
    _, cond = class_conditional(gm, [0, 1])
    density = tilted_log_density(cond, gm, W, GRID[:, None])
    density = (density - density.max()).exp()
    cdf = torch.cat([density.new_zeros(1), torch.cumulative_trapezoid(density, GRID)])
    cdf = cdf / cdf[-1]
    sigmas = get_sigmas_karras(steps, 0.002, 80.0)
    guided = classifier_free_guidance(cond.denoise, gm.denoise, W)
    corrector = classifier_free_guidance(cond.denoise, gm.denoise, gamma)
    rows = {k: [] for k in ("ddpm_pcg", "ddpm_ddpm", "gap", "ddpm_tilted", "pcg_tilted")}
    runs = {} if ddpm_runs is None else ddpm_runs
    for seed in seeds:
        if seed not in runs:
            g = torch.Generator().manual_seed(seed)
            a = sample_ddpm(guided, sigmas[0] * torch.randn(n, 1, generator=g, dtype=D), sigmas, generator=g)
            g = torch.Generator().manual_seed(seed + 10_000)
            b = sample_ddpm(guided, sigmas[0] * torch.randn(n, 1, generator=g, dtype=D), sigmas, generator=g)
            runs[seed] = (a, b)
        a, b = runs[seed]
        g = torch.Generator().manual_seed(seed + 20_000)
        p = sample_pcg(cond.denoise, sigmas[0] * torch.randn(n, 1, generator=g, dtype=D), sigmas,
                       corrector=corrector, generator=g)
        rows["ddpm_pcg"].append(_w1_samples(a, p))
        rows["ddpm_ddpm"].append(_w1_samples(a, b))
        rows["gap"].append(rows["ddpm_pcg"][-1] - rows["ddpm_ddpm"][-1])
        rows["ddpm_tilted"].append(_w1_cdf(a, cdf))
        rows["pcg_tilted"].append(_w1_cdf(p, cdf))
    gap = sum(rows["gap"]) / len(rows["gap"])
    far_ddpm = paired_comparison(rows["ddpm_pcg"], rows["ddpm_tilted"], margin=MARGIN)
    far_pcg = paired_comparison(rows["ddpm_pcg"], rows["pcg_tilted"], margin=MARGIN)
    return {"passed": gap < TOL and far_ddpm.wins and far_pcg.wins, "gap_mean": gap, "rows": rows,
            "far_ddpm": far_ddpm, "far_pcg": far_pcg, "runs": runs}


@claim(
    "cfg-predictor-corrector",
    statement=("CFG with DDIM and with DDPM sample different laws, neither the tilted p(x|c)^w p(x)^(1-w); in the SDE "
               "limit CFG-DDPM equals predictor-corrector guidance: a conditional DDIM step plus a Langevin step on "
               "the noised tilted law with gamma = 2w - 1."),
    criterion=CRITERION,
    baseline="the tilted law p(x|c)^w p(x)^(1-w) (closed form or grid-normalised) and the other sampler's exact law",
    threads=1,
)
def cfg_is_predictor_corrector(ctx: ClaimContext) -> ClaimResult:
    seeds = ctx.seeds(3)
    n = ctx.pick(smoke=500, full=4000)
    steps_a = ctx.pick(smoke=64, full=256)
    steps_b = ctx.pick(smoke=64, full=512)
    a = _part_a(W, n, steps_a, seeds)
    b = _part_b(pcg_gamma(W), n, steps_b, seeds)
    naive = _part_b(W, n, steps_b, seeds, ddpm_runs=b["runs"])  # same CFG-DDPM runs, gamma = w
    a1 = _part_a(1.0, n, steps_a, seeds)
    control = Control("PCG with the naive gamma = w = 3 through (B), or w = 1 through (A); either passing fails",
                      naive["passed"] or a1["passed"],
                      {"naive_gamma_gap_mean": naive["gap_mean"], "naive_gamma_ddpm_pcg": naive["rows"]["ddpm_pcg"],
                       "naive_gamma_passed": naive["passed"], "w1_passed": a1["passed"],
                       "w1_dist": a1["dist"], "w1_gains": {k: c.as_metrics() for k, c in a1["comparisons"].items()}})
    da, rb = a["dist"], b["rows"]
    headline = (f"Gaussian w = 3: W1 of CFG-DDIM samples to their closed form {fmt_mean_std(da['ddim']['ddim'])} vs "
                f"to the tilted law {fmt_mean_std(da['ddim']['tilted'])}; CFG-DDPM {fmt_mean_std(da['ddpm']['ddpm'])}"
                f" vs {fmt_mean_std(da['ddpm']['tilted'])}; mixture: W1(CFG-DDPM, PCG gamma = 5) "
                f"{fmt_mean_std(rb['ddpm_pcg'])} vs seed floor {fmt_mean_std(rb['ddpm_ddpm'])}, vs tilted "
                f"{fmt_mean_std(rb['ddpm_tilted'])}; naive gamma = 3 PCG {fmt_mean_std(naive['rows']['ddpm_pcg'])}, "
                f"3 seeds")
    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        a0, _ = b["runs"][seeds[0]]
        ax.hist(a0[:, 0].numpy(), bins=80, density=True, histtype="step", label="CFG-DDPM w=3")
        gm = mixture_on_circle(2, 1, radius=1.0, std=0.5)
        _, cond = class_conditional(gm, [0, 1])
        dens = tilted_log_density(cond, gm, W, GRID[:, None]).exp()
        ax.plot(GRID.numpy(), (dens / torch.trapezoid(dens, GRID)).numpy(), label="tilted gamma=3")
        ax.set_xlim(-1, 4)
        ax.legend(fontsize=7)
        ctx.save_figure(fig, "mixture")
    metrics = {"part_a": {"passed": a["passed"], "dist": da, "laws": a["laws"],
                          "comparisons": {k: c.as_metrics() for k, c in a["comparisons"].items()}},
               "part_b": {"passed": b["passed"], "gap_mean": b["gap_mean"], "tol": TOL, "rows": rb,
                          "far_ddpm": b["far_ddpm"].as_metrics(), "far_pcg": b["far_pcg"].as_metrics()}}
    baseline = {"tilted_gaussian": a["laws"]["tilted"], "tilted_gamma": W}
    return ClaimResult.decide(a["passed"] and b["passed"], metrics=metrics, baseline=baseline, headline=headline,
                              control=control)
