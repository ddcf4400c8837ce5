"""Claim check for There and Back Again: On the relation between noises, images, and their inversions in diffusion
models (Staniszewski, Kuciński, Deja, 2024).

The paper's finding: DDIM-inverted latents of images are not Gaussian noise like the noises that generate images:
they are less diverse (near-constant in smooth, "plain" image areas) and structured, and the cause lies in the
first inversion steps, whose noise predictions on a clean image are inaccurate; replacing those first steps by the
forward diffusion decorrelates the latents. Scaled-down analog that keeps the mechanism, with the exact denoiser
(no training, so nothing but the inversion itself can cause a deviation): the data are a digit-like Gaussian
mixture fitted to scikit-learn's 8x8 digits (pixels mapped to [-1, 1]; one component per class, its sample mean,
sample covariance plus 1e-3 I, class-frequency weights). Its border pixels are (nearly) constant: the plain areas.

Setup, fixed before the first run: DDPM's linear betas (T = 1000), float64. DDIM inversion
(:func:`paperzoo.diffusion.ddim_inversion.invert_ddim`) on DDIM's 100 "leading" timesteps 0, 10, ..., 990
(99 Euler steps of the probability-flow ODE with the exact mixture denoiser), starting from exact draws of the
mixture taken at the level of timestep 0; VP latents ``x / sqrt(1 + sigma_990^2)``. Per seed: N = 1,000 draws
(smoke 200) and N fresh N(0, I_64) noises (the noises DDIM generates images from). Statistic: the moment
Gaussian KL, KL(N(m, C) || N(0, I)) of the sample mean and covariance of the N latents (resp. noises): it sees a
lost per-pixel diversity (variance) and correlations alike. 3 paired seeds.

Criterion: (A) the latents' statistic exceeds the noises' by a mean paired gap > 0.1 nats and > 2 SE; and
(B) the paper's fix, the first 10 of the 99 steps replaced by the forward diffusion (``forward_steps=10``), lowers
the latents' statistic by a mean paired gain > 0.1 nats and > 2 SE (the deviation comes from the first steps).
Control: the exact probability-flow map, approximated by 300 geometric Euler levels between the same end levels
(first-order error under 1%) applied to draws of the data *at* the start level (data plus its noise), which the
theory says pushes the data onto the Gaussian: through (A) against the same noises, it must fail.
Reported, not gated: the statistic after 10, 30, 100 and 300 DDIM steps (does it shrink with more steps?), the
paper's top-20 absolute pixel correlation and the mean per-pixel Kolmogorov-Smirnov distance for noises, latents,
fixed latents and the control; the latents' per-pixel standard deviation on plain pixels (data variance < 0.01)
and on the others; the reconstruction error of the inversion (latent back through DDIM); the noise-to-generation
assignment (linear_sum_assignment) accuracy between noises and their DDIM generations, and between noises and the
inversions of those generations.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import fmt_mean_std, paired_comparison, paired_control
from paperzoo.diffusion.ddim_inversion import (assign_noises, ddim_inversion_sigmas, invert_ddim, ks_distance,
                                               moment_gaussian_kl, reconstruction_error, top_k_correlation)
from paperzoo.diffusion.mixture import GaussianMixture
from paperzoo.diffusion.samplers import sample_euler
from paperzoo.diffusion.schedules import alphas_cumprod_from_betas, betas_linear, get_sigmas_exponential

STEPS = 100              # DDIM timesteps (99 inversion steps)
FORWARD = 10             # the paper's fix: first steps replaced by forward diffusion
MARGIN = 0.1             # nats
FLOOR = 1e-3             # covariance floor of the fitted digit components
CONTROL_LEVELS = 300
SWEEP = (10, 30, 100, 300)
CRITERION = (
    "Digit-like 10-component Gaussian mixture fitted to sklearn 8x8 digits in [-1, 1] (covariances + 1e-3 I), exact "
    "denoiser, DDPM linear betas, DDIM inversion on 100 'leading' timesteps (99 Euler steps), N = 1000 draws and N "
    "N(0, I_64) noises per seed, statistic = moment Gaussian KL of the VP latents vs N(0, I); 3 paired seeds: "
    "(A) latents exceed noises by a mean paired gap > 0.1 nats and > 2 SE, and (B) replacing the first 10 steps by "
    "the forward diffusion lowers the latents' statistic by > 0.1 nats and > 2 SE. Control: the exact "
    "probability-flow map (300 geometric Euler levels) of draws of the data at the start level, through (A) "
    "against the same noises, must fail."
)


@functools.lru_cache(maxsize=1)
def _digit_mixture() -> GaussianMixture:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = x / 8.0 - 1.0
    means, covs, weights = [], [], []
    for k in range(10):
        xk = x[y == k]
        means.append(xk.mean(0))
        covs.append(np.cov(xk.T) + FLOOR * np.eye(64))
        weights.append(len(xk) / len(x))
    t = functools.partial(torch.tensor, dtype=torch.float64)
    return GaussianMixture(t(np.array(means)), t(np.array(covs)), t(weights))


def _vp(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return x / (1 + sigma**2).sqrt()


@claim(
    "ddim-inversion-study",
    statement=("DDIM-inverted latents of images deviate from Gaussian noise (less diverse in plain areas, "
               "structured) measurably more than the noises that generate images, and the deviation comes from the "
               "first inversion steps: replacing them by the forward diffusion removes most of it."),
    criterion=CRITERION,
    baseline="N(0, I) noises of the same number (the noises DDIM generates images from), same statistic",
    threads=1,
)
def inverted_latents_are_not_gaussian(ctx: ClaimContext) -> ClaimResult:
    n = ctx.pick(smoke=200, full=1000)
    control_levels = ctx.pick(smoke=100, full=CONTROL_LEVELS)
    sweep = ctx.pick(smoke=(10, 100), full=SWEEP)
    gm = _digit_mixture()
    ac = alphas_cumprod_from_betas(betas_linear()).double()
    sigmas = ddim_inversion_sigmas(ac, STEPS)
    s0, s_top = sigmas[0], sigmas[-1]
    fine = get_sigmas_exponential(control_levels, float(s0), float(s_top), dtype=torch.float64)[:-1].flip(0)
    plain = torch.diagonal(gm.covariance()) < 0.01

    keys = ("noise", "latent", "fixed", "control")
    stats = {k: {"kl": [], "top20_corr": [], "ks": []} for k in keys}
    sweep_kl = {str(s): [] for s in sweep}
    std_plain, std_other, recon, assign_gen, assign_inv = [], [], [], [], []
    for seed in ctx.seeds(3):
        g = torch.Generator().manual_seed(seed)
        x0 = gm.sample(n, generator=g)
        noise = torch.randn(n, 64, generator=g, dtype=torch.float64)
        ve = invert_ddim(gm.denoise, x0, sigmas)
        lat = {"noise": noise, "latent": _vp(ve, s_top),
               "fixed": _vp(invert_ddim(gm.denoise, x0, sigmas, forward_steps=FORWARD, generator=g), s_top),
               "control": _vp(invert_ddim(gm.denoise, x0 + s0 * torch.randn(n, 64, generator=g, dtype=torch.float64),
                                          fine), s_top)}
        for k in keys:
            stats[k]["kl"].append(float(moment_gaussian_kl(lat[k])))
            stats[k]["top20_corr"].append(float(top_k_correlation(lat[k], 20)))
            stats[k]["ks"].append(float(ks_distance(lat[k])))
        for s in sweep:
            swept = ve if s == STEPS else invert_ddim(gm.denoise, x0, ddim_inversion_sigmas(ac, s))
            sweep_kl[str(s)].append(float(moment_gaussian_kl(_vp(swept, ddim_inversion_sigmas(ac, s)[-1]))))
        std = lat["latent"].std(0)
        std_plain.append(float(std[plain].mean()))
        std_other.append(float(std[~plain].mean()))
        down = sigmas.flip(0)
        recon.append(float(reconstruction_error(x0, sample_euler(gm.denoise, ve, down)).mean()))
        generated = sample_euler(gm.denoise, noise * (1 + s_top**2).sqrt(), down)
        assign_gen.append(assign_noises(noise, generated).accuracy)
        assign_inv.append(assign_noises(noise, _vp(invert_ddim(gm.denoise, generated, sigmas), s_top)).accuracy)

    kl = {k: stats[k]["kl"] for k in keys}
    gap = paired_comparison(kl["latent"], kl["noise"], margin=MARGIN, lower_is_better=False)
    fix = paired_comparison(kl["fixed"], kl["latent"], margin=MARGIN)
    control, ctrl_cmp = paired_control(
        f"the exact probability-flow map ({control_levels} geometric Euler levels) of draws of the data at the start "
        "level, through (A) against the same noises", kl["control"], kl["noise"], margin=MARGIN,
        lower_is_better=False)
    headline = (f"moment Gaussian KL: DDIM-inverted latents {fmt_mean_std(kl['latent'])} vs noises "
                f"{fmt_mean_std(kl['noise'])} nats, paired gap {gap.diff_mean:.3g} ± {gap.diff_se:.2g} SE; first "
                f"{FORWARD} steps forward-diffused {fmt_mean_std(kl['fixed'])} (gain {fix.diff_mean:.3g} ± "
                f"{fix.diff_se:.2g}); exact-flow control {fmt_mean_std(kl['control'])} (gap {ctrl_cmp.diff_mean:.3g}"
                f"); latent std on plain pixels {fmt_mean_std(std_plain)} vs {fmt_mean_std(std_other)} elsewhere; "
                f"3 seeds, margin {MARGIN}")

    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(list(sweep), [np.mean(sweep_kl[str(s)]) for s in sweep], "o-", label="DDIM inversion")
        ax.axhline(np.mean(kl["noise"]), ls="--", c="k", label="N(0, I) noises")
        ax.axhline(np.mean(kl["control"]), ls=":", c="C2", label="exact flow map (control)")
        ax.set_xscale("log")
        ax.set_xlabel("DDIM timesteps")
        ax.set_ylabel("moment Gaussian KL of latents (nats)")
        ax.legend(fontsize=7)
        ctx.save_figure(fig, "gaussianity_vs_steps")

    return ClaimResult.decide(
        gap.wins and fix.wins,
        metrics={"latent_vs_noise": gap.as_metrics(), "fix_vs_latent": fix.as_metrics(), "stats": stats,
                 "kl_vs_steps": sweep_kl, "latent_std_plain_pixels": std_plain, "latent_std_other_pixels": std_other,
                 "plain_pixels": int(plain.sum()), "reconstruction_mse": recon,
                 "assignment_accuracy_noise_to_generation": assign_gen,
                 "assignment_accuracy_noise_to_inverted_generation": assign_inv, "n": n, "steps": STEPS,
                 "forward_steps": FORWARD},
        baseline={"noise_kl": kl["noise"]},
        headline=headline, control=control,
    )
