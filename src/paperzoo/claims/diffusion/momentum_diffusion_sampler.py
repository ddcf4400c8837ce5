"""Claim check for Diffusion Sampling with Momentum for Mitigating Divergence Artifacts (Wizadwongsa et al., 2024).

The paper's claim: with few steps and a large classifier-free guidance scale, high-order multistep solvers (PLMS4,
DPM-Solver++(2M)) leave their stability region and some trajectories blow up (divergence artifacts); heavy-ball
momentum on the solver's update direction (beta = 0.8, the paper's default) enlarges the stability region and
removes most of them at the same number of model evaluations.

Setup, fixed before the first run: a 2-D float64 mixture of 8 Gaussians (std 0.2) on a circle of radius 4
(:func:`~paperzoo.diffusion.mixture.mixture_on_circle`), classes alternating (0, 1, 0, 1, ...), target class 0;
exact denoisers of p(x | c) and p(x) (:func:`~paperzoo.diffusion.guidance.class_conditional`) combined by
classifier-free guidance :math:`D_u + w (D_c - D_u)`. Levels: the VE levels of DDPM's linear beta schedule
(T = 1000) at ``n`` uniformly spaced "trailing" timesteps, then 0 (the paper's DiT setting: uniform timesteps of
the linear schedule, sigma_max 157). Every sampler of one seed starts from the same noise sigma_max z. Reference:
the exact guided ODE solved with DPM-Solver++(2M) at 250 steps from the same noise. A sample is *diverged* when
its endpoint lies more than 1.0 (5 component stds, a third of the distance between neighbouring modes) from the
reference endpoint. Metric: the fraction of diverged samples (4,000 samples per seed, smoke 200). The geometry,
the guidance scales and the step counts were chosen after one exploratory run on a separate seed (999) of PLMS4,
PLMS4 + HB 0.8, GHVB 3.8, DPM-Solver++(2M) +/- HB 0.8 and Euler at w in {1, 4, 8} and 10/15/25 steps; the
criterion below was written before this claim's first run. beta = 0.8 is the paper's default, not tuned here
(neither solver is tuned: same evaluations, one per step, same levels).

Criterion. (1) PLMS: at w = 4 and 15 steps, PLMS4 with HB (beta 0.8) has a lower diverged fraction than PLMS4 by a
mean paired difference > 0.05 and > 2 SE over 3 seeds. (2) DPM-Solver++: at w = 8 and 10 steps, DPM-Solver++(2M)
with HB (beta 0.8) beats DPM-Solver++(2M) the same way. Both parts must hold. Control: the same two comparisons at
w = 1 (the conditional model, no guidance) with 25 steps, where the base solvers do not diverge and momentum has
nothing to remove: the control passes when both of its parts pass, and it must fail.
"""

from __future__ import annotations

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison
from paperzoo.diffusion.guidance import class_conditional, classifier_free_guidance
from paperzoo.diffusion.mixture import mixture_on_circle
from paperzoo.diffusion.momentum_sampler import sample_ghvb, sample_hb, sample_plms, sample_plms_hb
from paperzoo.diffusion.samplers import sample_dpmpp_2m
from paperzoo.diffusion.schedules import (alphas_cumprod_from_betas, append_zero, betas_linear, discrete_timesteps,
                                          sigmas_from_alphas_cumprod)

D = torch.float64
BETA = 0.8
THRESHOLD = 1.0
MARGIN = 0.05
REF_STEPS = 250
PARTS = {"plms": (4.0, 15), "dpmpp": (8.0, 10)}  # part -> (guidance scale, steps)
CONTROL = (1.0, 25)
CRITERION = (
    "8 Gaussians (std 0.2, radius 4), alternating classes, target class 0, exact CFG denoisers; VE levels of DDPM "
    "linear schedule at n trailing timesteps; diverged = endpoint > 1.0 from a 250-step DPM-Solver++(2M) reference "
    "from the same noise; 3 paired seeds. (1) w = 4, 15 steps: PLMS4 + HB 0.8 diverged fraction below PLMS4's by "
    "mean paired difference > 0.05 and > 2 SE. (2) w = 8, 10 steps: DPM-Solver++(2M) + HB 0.8 below "
    "DPM-Solver++(2M) the same way. Both must hold. Control: both comparisons at w = 1, 25 steps (no divergence) "
    "must not both pass."
)


def _levels(n: int) -> torch.Tensor:
    sigmas = sigmas_from_alphas_cumprod(alphas_cumprod_from_betas(betas_linear(1000).to(D)))
    return append_zero(sigmas[discrete_timesteps(1000, n, "trailing")])


class _Bench:
    def __init__(self, n_samples: int, seed: int):
        gm = mixture_on_circle(8, 2, radius=4.0, std=0.2)
        self.cond, self.uncond = class_conditional(gm, [0, 1] * 4)[0], gm
        self.z = torch.randn(n_samples, 2, generator=torch.Generator().manual_seed(seed), dtype=D)

    def run(self, w: float, steps: int) -> dict:
        model = classifier_free_guidance(self.cond.denoise, self.uncond.denoise, w)
        ref_levels, levels = _levels(REF_STEPS), _levels(steps)
        x = levels[0] * self.z
        ref = sample_dpmpp_2m(model, x, ref_levels)
        runs = {"plms4": sample_plms(model, x, levels, order=4),
                "plms4_hb": sample_plms_hb(model, x, levels, order=4, beta=BETA),
                "ghvb3.8": sample_ghvb(model, x, levels, order=4, beta=BETA),
                "euler": sample_plms(model, x, levels, order=1),
                "dpmpp": sample_dpmpp_2m(model, x, levels),
                "dpmpp_hb": sample_hb(model, x, levels, beta=BETA)}
        out = {}
        for name, y in runs.items():
            err = torch.nan_to_num((y - ref).norm(dim=1), nan=float("inf"))
            out[name] = {"diverged": float((err > THRESHOLD).to(D).mean()), "median_error": float(err.median())}
        return out


@claim(
    "momentum-diffusion-sampler",
    statement=("At few steps and a large classifier-free guidance scale, heavy-ball momentum (beta 0.8) on PLMS4 "
               "and on DPM-Solver++(2M) removes most diverged trajectories of the plain solvers at the same "
               "number of model evaluations."),
    criterion=CRITERION,
    baseline="the same solver without momentum (PLMS4; DPM-Solver++(2M)), same levels and evaluations",
    threads=1,
)
def momentum_removes_divergence(ctx: ClaimContext) -> ClaimResult:
    n = ctx.pick(smoke=200, full=4000)
    seeds = ctx.seeds(3)
    settings = {**PARTS, "control": CONTROL}
    results = {key: [] for key in settings}
    for seed in seeds:
        bench = _Bench(n, seed)
        cache = {}
        for key, (w, steps) in settings.items():
            if (w, steps) not in cache:
                cache[w, steps] = bench.run(w, steps)
            results[key].append(cache[w, steps])

    def col(key, name, field="diverged"):
        return [r[name][field] for r in results[key]]

    def compare(key):
        return {"plms": paired_comparison(col(key, "plms4_hb"), col(key, "plms4"), margin=MARGIN),
                "dpmpp": paired_comparison(col(key, "dpmpp_hb"), col(key, "dpmpp"), margin=MARGIN)}

    plms = compare("plms")["plms"]
    dpmpp = compare("dpmpp")["dpmpp"]
    passed = plms.wins and dpmpp.wins
    ctrl = compare("control")
    control = Control("the same two comparisons at w = 1 (no guidance), 25 steps, where nothing diverges",
                      ctrl["plms"].wins and ctrl["dpmpp"].wins,
                      {"plms": ctrl["plms"].as_metrics(), "dpmpp": ctrl["dpmpp"].as_metrics(),
                       "all_runs": results["control"]})
    headline = (f"diverged fraction at w = 4, 15 steps: {fmt_mean_std(col('plms', 'plms4_hb'))} (PLMS4 + HB 0.8) vs "
                f"{fmt_mean_std(col('plms', 'plms4'))} (PLMS4); at w = 8, 10 steps: "
                f"{fmt_mean_std(col('dpmpp', 'dpmpp_hb'))} (DPM-Solver++(2M) + HB 0.8) vs "
                f"{fmt_mean_std(col('dpmpp', 'dpmpp'))} (DPM-Solver++(2M)), 3 seeds; control w = 1, 25 steps: "
                f"{fmt_mean_std(col('control', 'plms4_hb'))} vs {fmt_mean_std(col('control', 'plms4'))}")
    metrics = {"plms": plms.as_metrics(), "dpmpp": dpmpp.as_metrics(),
               "runs": {key: results[key] for key in PARTS},
               "ghvb3.8_diverged_w4_15": col("plms", "ghvb3.8"), "euler_diverged_w4_15": col("plms", "euler")}
    baseline = {"plms4_diverged": col("plms", "plms4"), "dpmpp_diverged": col("dpmpp", "dpmpp")}
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)
