"""Claim check for Minority Guidance (Um, Lee & Ye, ICLR 2024).

The paper's claim: guiding a diffusion sampler with a classifier of quantized minority scores (Tweedie
reconstruction losses) toward the highest class makes it generate many more samples from the low-density regions
of the data than the standard sampler, while the samples stay on the data.

Setup, fixed before the first run: data ``mixture_on_circle(8, 2, radius=4, std=0.5)`` (float64) with weights
(1, 1, 1, 1, 1, 1, 0.05, 0.05) (components 6 and 7 rare, 1.6% of the mass together); the exact mixture denoiser
stands for the pretrained diffusion model. Per seed: 4,000 training draws (smoke 600), their L2 minority scores
at sigma = 1.0 with ``n_iter = 5`` (the official count), L = 10 quantile classes; a ``MinorityClassifier(2, 10,
64, 2, sigma_data=4)`` trained by ``train_minority_classifier`` (Adam 3e-3, batch 256, 1,500 steps, smoke 40),
levels log-uniform on [0.01, 40]. Sampling: DDPM ancestral (``sample_ddpm``), 40 Karras levels 0.01..40 (smoke
15), 3,000 samples (smoke 300) from the same noise for method and baseline. Method: minority guidance with the
paper's w = 3.5 toward class L - 1 (no tuning: the paper's default; the baseline has no knob). Baseline: the
unguided sampler. Metrics: the rare fraction, the sum of ``GaussianMixture.mode_weights`` over components 6 and 7;
on-data fraction, the share of samples whose exact log density under the weight-balanced mixture (the data's
support, regardless of mode weights) is above the 0.1% quantile of that density over exact draws.

Criterion: paired over 3 seeds, the guided rare fraction exceeds the unguided one by more than 0.05 (absolute) and
two standard errors, and the guided on-data fraction is >= 0.95 on every seed. Control: the same pipeline on the
balanced mixture (all weights equal), where the minority score carries no information about the component; the
fraction of components 6 and 7 must not pass the same criterion.
"""

from __future__ import annotations

import math

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison
from paperzoo.diffusion.minority_guidance import (MinorityClassifier, minority_guidance, minority_score,
                                                  minority_score_classes, train_minority_classifier)
from paperzoo.diffusion.mixture import mixture_on_circle
from paperzoo.diffusion.samplers import sample_ddpm
from paperzoo.diffusion.schedules import get_sigmas_karras

RARE = (6, 7)
SCORE_SIGMA = 1.0
N_CLASSES = 10
SCALE = 3.5
MARGIN = 0.05
ON_DATA_MIN = 0.95
SIGMA_MIN, SIGMA_MAX = 0.01, 40.0
CRITERION = (
    "8-Gaussian circle (radius 4, std 0.5) with components 6 and 7 at weight 0.05 vs 1 (1.6% of the mass), exact "
    "denoiser, L2 minority scores at sigma 1 (5 draws) in 10 quantile classes, MLP classifier on noised inputs, "
    "DDPM 40 Karras steps, 3,000 samples, w = 3.5 toward the top class, 3 paired seeds: the guided rare-mode "
    "fraction (mode_weights of components 6, 7) exceeds the unguided sampler's by > 0.05 absolute and > 2 SE, "
    "and >= 95% of guided samples are on the data (balanced-mixture log density above its 0.1% quantile) on every "
    "seed. Control: the balanced mixture through the same pipeline must fail the criterion."
)


def _weights(imbalanced: bool) -> torch.Tensor:
    w = torch.ones(8, dtype=torch.float64)
    if imbalanced:
        w[list(RARE)] = 0.05
    return w


def _run(imbalanced: bool, seed: int, n_train: int, steps: int, n_levels: int, n_samples: int, support, threshold):
    gm = mixture_on_circle(8, 2, radius=4.0, std=0.5, weights=_weights(imbalanced))
    g = torch.Generator().manual_seed(seed)
    x0 = gm.sample(n_train, generator=g)
    labels, _ = minority_score_classes(minority_score(gm.denoise, x0, SCORE_SIGMA, n_iter=5, generator=g), N_CLASSES)
    torch.manual_seed(seed)
    net = MinorityClassifier(2, N_CLASSES, 64, 2, sigma_data=4.0).to(torch.float64)
    lo, hi = math.log(SIGMA_MIN), math.log(SIGMA_MAX)

    def levels(n, gen):
        return (lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)).exp()

    train_minority_classifier(net, x0, labels, levels, steps=steps, batch_size=256, lr=3e-3, generator=g)
    net.requires_grad_(False)
    sigmas = get_sigmas_karras(n_levels, SIGMA_MIN, SIGMA_MAX, dtype=torch.float64)
    noise = torch.randn(n_samples, 2, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    out = {}
    for name, model in (("unguided", gm.denoise), ("guided", minority_guidance(gm.denoise, net, N_CLASSES - 1, SCALE))):
        x = sample_ddpm(model, SIGMA_MAX * noise, sigmas, generator=torch.Generator().manual_seed(seed + 2))
        out[name] = {"rare_fraction": float(gm.mode_weights(x)[list(RARE)].sum()),
                     "on_data": float((support.log_prob(x) > threshold).double().mean())}
    return out


def _passes(rows):
    cmp = paired_comparison([r["guided"]["rare_fraction"] for r in rows],
                            [r["unguided"]["rare_fraction"] for r in rows], margin=MARGIN, lower_is_better=False)
    on_data = all(r["guided"]["on_data"] >= ON_DATA_MIN for r in rows)
    return cmp, on_data, bool(cmp.wins and on_data)


@claim(
    "minority-guidance",
    statement=("Classifier guidance toward the highest class of quantized Tweedie-reconstruction minority scores "
               "makes a diffusion sampler generate many more samples from the rare, low-density modes of the data "
               "than the standard sampler, while the samples stay on the data."),
    criterion=CRITERION,
    baseline="the unguided DDPM ancestral sampler with the same denoiser, levels and noise",
    threads=1,
)
def minority_guidance_raises_rare_modes(ctx: ClaimContext) -> ClaimResult:
    n_train = ctx.pick(smoke=600, full=4000)
    steps = ctx.pick(smoke=40, full=1500)
    n_levels = ctx.pick(smoke=15, full=40)
    n_samples = ctx.pick(smoke=300, full=3000)
    seeds = ctx.seeds(3)
    support = mixture_on_circle(8, 2, radius=4.0, std=0.5)  # balanced: the data's support, whatever the weights
    threshold = float(torch.quantile(support.log_prob(support.sample(20_000, generator=torch.Generator()
                                                                     .manual_seed(seeds[0] + 99))), 0.001))
    rows = {"imbalanced": [], "balanced": []}
    for seed in seeds:
        for case in rows:
            rows[case].append(_run(case == "imbalanced", seed, n_train, steps, n_levels, n_samples, support,
                                   threshold))
    cmp, on_data, passed = _passes(rows["imbalanced"])
    ctrl_cmp, ctrl_on_data, ctrl_passed = _passes(rows["balanced"])
    control = Control("the balanced mixture (no rare modes: the minority score carries no component information) "
                      "through the same criterion", ctrl_passed,
                      {"rare_fraction_gain": ctrl_cmp.as_metrics(), "on_data_all_seeds": ctrl_on_data})

    def col(case, name, key):
        return [r[name][key] for r in rows[case]]

    headline = (f"rare-mode fraction {fmt_mean_std(col('imbalanced', 'guided', 'rare_fraction'))} (minority guidance, "
                f"w {SCALE}) vs {fmt_mean_std(col('imbalanced', 'unguided', 'rare_fraction'))} (unguided DDPM), paired "
                f"gain {cmp.diff_mean:.3f} ± {cmp.diff_se:.3f} SE (margin {MARGIN}); on-data "
                f"{fmt_mean_std(col('imbalanced', 'guided', 'on_data'))} vs "
                f"{fmt_mean_std(col('imbalanced', 'unguided', 'on_data'))}; control (balanced mixture) gain "
                f"{ctrl_cmp.diff_mean:.3f} ± {ctrl_cmp.diff_se:.3f}")
    return ClaimResult.decide(
        passed,
        metrics={"rows": rows, "rare_fraction_gain": cmp.as_metrics(), "on_data_all_seeds": on_data,
                 "threshold": threshold, "steps": steps, "n_samples": n_samples},
        baseline={"unguided": [r["unguided"] for r in rows["imbalanced"]]},
        headline=headline, control=control,
    )
