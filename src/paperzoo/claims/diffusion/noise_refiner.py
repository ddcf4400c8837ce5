"""Claim check for A Noise is Worth Diffusion Guidance (Ahn et al., 2024; NoiseRefine).

The paper's headline: a small network that refines the initial Gaussian noise once lets *unguided* sampling
reproduce the quality of classifier-free-guided sampling, at half its denoiser evaluations (one per step, not two).

Scaled-down analog, setup fixed before the first run: a 2-D float64 mixture, ``mixture_on_circle(4, 2, radius=2,
std=0.6)``, classes [0, 1, 0, 1] (overlapping), target class 0; exact denoisers of p(x | 0) and p(x)
(:func:`~paperzoo.diffusion.guidance.class_conditional`), CFG scale w = 3. Sampler: Euler (deterministic DDIM) on
Karras levels, 50 steps, sigma in [0.002, 80]: CFG spends 100 evaluations per sample, unguided sampling 50.
Per seed: N_train unit noises (4096, smoke 512) and their guidance-free targets
(:func:`~paperzoo.diffusion.noise_refine.noise_refining_targets`: CFG sample, DDIM-inverted with the conditional
denoiser alone); a :class:`~paperzoo.diffusion.noise_refine.NoiseRefiner` (hidden 64, depth 2, zero-init residual)
trained by the regression loss, Adam lr 1e-3, batch 256, 2000 steps (smoke 150). Held-out: N_test fresh noises
(2000, smoke 300), their CFG samples are the reference. Metrics: SW (sliced W2^2, 64 fixed directions) to the CFG
samples; class accuracy, the fraction of samples the exact Bayes classifier of the clean mixture assigns to class 0.

Method: unguided (conditional) sampling from the refined noise, 50 evaluations. Baseline: unguided sampling from
the plain noise, the same 50 evaluations (no hyperparameter to tune on either side; the refiner's settings are
fixed above). 3 paired seeds.

Criterion: (A) mean paired log(SW_baseline / SW_method) > log 2 and > 2 SE; and (B) mean paired class-accuracy
gain (method - baseline) > 0.01 and > 2 SE. Control: the same refiner trained on scale-1 targets (the Euler round
trip of the noise itself, i.e. about the identity), in place of the method through (A) and (B); it must fail.
Reported, not gated: CFG's own accuracy; the per-sample distance of method / baseline samples to the CFG sample
from the same noise; the targets' own reconstruction (unguided sampling from the exact targets).
"""

from __future__ import annotations

import math

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison
from paperzoo.diffusion.guidance import class_conditional, classifier_free_guidance
from paperzoo.diffusion.mixture import mixture_on_circle
from paperzoo.diffusion.noise_refine import NoiseRefiner, noise_refining_targets, sample_refined, train_noise_refiner
from paperzoo.diffusion.samplers import sample_euler
from paperzoo.diffusion.schedules import get_sigmas_karras
from paperzoo.transport import sliced_wasserstein

D = torch.float64
W = 3.0
STEPS = 50
SW_MARGIN = math.log(2.0)
ACC_MARGIN = 0.01
CRITERION = (
    "2-D mixture_on_circle(4, radius 2, std 0.6), classes [0,1,0,1], target class 0, exact denoisers, CFG w = 3, "
    "Euler on 50 Karras levels in [0.002, 80]; refiner (hidden 64, depth 2, residual) regressed on 4096 "
    "(noise, DDIM-inverted CFG sample) pairs, 2000 Adam steps; held-out noise, reference = CFG samples from it; "
    "method = unguided sampling from refined noise (50 NFE, CFG 100), baseline = unguided from plain noise (50 "
    "NFE); 3 paired seeds: (A) mean paired log(SW_base/SW_method) > log 2 and > 2 SE (SW = sliced W2^2 to the CFG "
    "samples, 64 directions) and (B) mean paired Bayes class-accuracy gain > 0.01 and > 2 SE. Control: the refiner "
    "trained on scale-1 targets (about the identity) in place of the method must fail (A) or (B)."
)


def _accuracy(gm, x: torch.Tensor) -> float:
    r = gm.responsibilities(x)
    return float((r[:, [0, 2]].sum(-1) > 0.5).double().mean())


@claim(
    "noise-refiner",
    statement=("Unguided sampling from noise refined once by a small learned network matches classifier-free-guided "
               "samples far better than unguided sampling from plain noise, at half the denoiser evaluations of "
               "guided sampling."),
    criterion=CRITERION,
    baseline="unguided (conditional) Euler sampling from the plain Gaussian noise, same 50 evaluations",
    threads=1,
)
def refined_noise_replaces_guidance(ctx: ClaimContext) -> ClaimResult:
    n_train = ctx.pick(smoke=512, full=4096)
    n_test = ctx.pick(smoke=300, full=2000)
    steps = ctx.pick(smoke=150, full=2000)
    gm = mixture_on_circle(4, 2, radius=2.0, std=0.6, dtype=D)
    c0, _ = class_conditional(gm, [0, 1, 0, 1])
    sigmas = get_sigmas_karras(STEPS, 0.002, 80.0, dtype=D)
    guided = classifier_free_guidance(c0.denoise, gm.denoise, W)

    def sw(a, b):
        return float(sliced_wasserstein(a, b, n_projections=64, generator=torch.Generator().manual_seed(12345)))

    keys = ("method", "baseline", "control", "cfg", "exact_targets")
    sw_v = {k: [] for k in keys}
    acc = {k: [] for k in keys}
    dist = {k: [] for k in ("method", "baseline", "control")}
    for seed in ctx.seeds(3):
        g = torch.Generator().manual_seed(seed)
        eps_train = torch.randn(n_train, 2, generator=g, dtype=D)
        eps_test = torch.randn(n_test, 2, generator=g, dtype=D)
        refiners = {}
        for name, scale in (("method", W), ("control", 1.0)):
            target = noise_refining_targets(c0.denoise, gm.denoise, scale, eps_train, sigmas)
            torch.manual_seed(seed)
            refiner = NoiseRefiner(2, 64, 2).to(D)
            train_noise_refiner(refiner, eps_train, target, steps=steps, batch_size=256, lr=1e-3,
                                generator=torch.Generator().manual_seed(seed + 100))
            refiners[name] = refiner
        ref = sample_euler(guided, eps_test * sigmas[0], sigmas)
        out = {"method": sample_refined(c0.denoise, refiners["method"], eps_test, sigmas),
               "control": sample_refined(c0.denoise, refiners["control"], eps_test, sigmas),
               "baseline": sample_euler(c0.denoise, eps_test * sigmas[0], sigmas),
               "cfg": ref,
               "exact_targets": sample_euler(c0.denoise, noise_refining_targets(
                   c0.denoise, gm.denoise, W, eps_test, sigmas) * sigmas[0], sigmas)}
        for k in keys:
            sw_v[k].append(sw(out[k], ref) if k != "cfg" else 0.0)
            acc[k].append(_accuracy(gm, out[k]))
        for k in dist:
            dist[k].append(float((out[k] - ref).norm(dim=-1).mean()))

    def log_ratio(a):
        return [math.log(b / m) for m, b in zip(a, sw_v["baseline"])]

    zeros = [0.0] * len(sw_v["baseline"])
    sw_cmp = paired_comparison(log_ratio(sw_v["method"]), zeros, margin=SW_MARGIN, lower_is_better=False)
    acc_cmp = paired_comparison(acc["method"], acc["baseline"], margin=ACC_MARGIN, lower_is_better=False)
    c_sw = paired_comparison(log_ratio(sw_v["control"]), zeros, margin=SW_MARGIN, lower_is_better=False)
    c_acc = paired_comparison(acc["control"], acc["baseline"], margin=ACC_MARGIN, lower_is_better=False)
    control = Control("the refiner trained on scale-1 targets (about the identity), in place of the method through "
                      "(A) and (B)", c_sw.wins and c_acc.wins,
                      {"sw_log_ratio": c_sw.as_metrics(), "accuracy": c_acc.as_metrics()})
    headline = (f"SW to CFG samples: refined-noise unguided {fmt_mean_std(sw_v['method'])} vs plain-noise unguided "
                f"{fmt_mean_std(sw_v['baseline'])} (log ratio {sw_cmp.diff_mean:.3g} ± {sw_cmp.diff_se:.2g} SE), "
                f"identity-refiner control {fmt_mean_std(sw_v['control'])}; class accuracy "
                f"{fmt_mean_std(acc['method'])} vs {fmt_mean_std(acc['baseline'])} (CFG {fmt_mean_std(acc['cfg'])}); "
                f"{STEPS} vs CFG's {2 * STEPS} evaluations, 3 seeds")
    return ClaimResult.decide(
        sw_cmp.wins and acc_cmp.wins,
        metrics={"sw_log_ratio": sw_cmp.as_metrics(), "accuracy": acc_cmp.as_metrics(), "sw": sw_v,
                 "class_accuracy": acc, "distance_to_paired_cfg_sample": dist, "nfe_method": STEPS,
                 "nfe_cfg": 2 * STEPS, "n_train": n_train, "n_test": n_test, "train_steps": steps},
        baseline={"sw": sw_v["baseline"], "class_accuracy": acc["baseline"]},
        headline=headline, control=control,
    )
