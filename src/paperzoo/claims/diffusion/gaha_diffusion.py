"""Claim check for "Generalization in diffusion models arises from geometry-adaptive harmonic representations"
(Kadkhodaie, Guth, Simoncelli, Mallat, ICLR 2024).

The paper's claim: a denoiser trained on few images memorizes them (its samples are copies of training images, and
two networks trained on disjoint sets generate different images), while trained on enough images it generalizes:
two networks trained on non-overlapping sets then generate nearly the same image from the same initial noise.

Setup, fixed before the first run: scikit-learn's 8x8 digits (1,797 images, 64 pixels scaled to [-1, 1]); per
seed a random split into 197 held-out images and two disjoint pools A, B of 800. Training sets: the first
``N_small = 8`` images of each pool, and the whole pools (``N_large = 800``). Network ``MLPDenoiser(64, 128, 3,
prediction="eps")`` with its own initialisation per set; Adam lr 1e-3, batch 128, 3,000 steps (smoke 20), training
levels log-uniform on [0.01, 20]. Sampling: Heun on the probability-flow ODE, Karras levels (18 steps, 20 -> 0.01),
256 samples (smoke 32), the same initial noise for the A and B models. Measurements (module
:mod:`paperzoo.diffusion.harmonic_generalization`): the cross-network distance of the A and B samples (0: the same
image from each noise, 1: unrelated) and the memorization ratio of each model's samples to its own training set
(median over samples, the unit being held-out images' nearest-training-image distance; 0: copies), averaged over
A and B. 3 seeds, paired (the same split and noise across N).

Criterion: the cross-network distance at N_small exceeds that at N_large by a mean paired difference > 0.25 and
> 2 SE (the transition), and the memorization ratio at N_large exceeds that at N_small by > 0.25 and > 2 SE (small
sets are memorized). Baseline: the N_small regime (same network, steps, learning rate, sampler). Control: the
empirical optimal denoisers of the same four training sets (the exact memorizing solution at every N) through the
same criterion; it must fail.
"""

from __future__ import annotations

import math

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison
from paperzoo.data.digits import _raw_digits
from paperzoo.diffusion.harmonic_generalization import (EmpiricalDenoiser, cross_network_distance,
                                                        jacobian_spectrum, memorization_ratio)
from paperzoo.diffusion.samplers import sample_heun
from paperzoo.diffusion.schedules import get_sigmas_karras
from paperzoo.diffusion.training import MLPDenoiser, train_denoiser

N_SMALL, N_LARGE, N_HELD_OUT = 8, 800, 197
SIGMA_MIN, SIGMA_MAX = 0.01, 20.0
MARGIN = 0.25
CRITERION = (
    "8x8 digits in [-1, 1], two disjoint training sets per seed (N = 8 and N = 800 each), MLP 3x128 eps-denoiser "
    "per set (own init), Adam lr 1e-3, batch 128, 3,000 steps, levels log-uniform on [0.01, 20], 18-step Heun "
    "from the same noise, 3 paired seeds: the cross-network distance (paired/unpaired sample distance) at N = 8 "
    "exceeds that at N = 800 by > 0.25 and > 2 SE, and the median memorization ratio (nearest-training-image "
    "distance over held-out images') at N = 800 exceeds that at N = 8 by > 0.25 and > 2 SE. Control: the "
    "empirical optimal denoisers of the same sets through the same criterion must fail."
)


def _digits() -> torch.Tensor:
    x, _ = _raw_digits()
    return torch.tensor(x, dtype=torch.float32) / 8.0 - 1.0


def _train(train: torch.Tensor, steps: int, seed: int) -> MLPDenoiser:
    torch.manual_seed(seed)
    net = MLPDenoiser(64, 128, 3, prediction="eps")
    log_lo, log_hi = math.log(SIGMA_MIN), math.log(SIGMA_MAX)

    def data(n, g):
        return train[torch.randint(0, train.shape[0], (n,), generator=g)]

    def levels(n, g):
        return (log_lo + (log_hi - log_lo) * torch.rand(n, generator=g)).exp()

    train_denoiser(net, data, levels, steps=steps, batch_size=128, lr=1e-3,
                   generator=torch.Generator().manual_seed(seed + 1))
    return net


def _measure(models: dict, sets: dict, held_out: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> dict:
    """Cross-network distance and memorization ratio of the A and B models at one N."""
    with torch.no_grad():
        samples = {k: sample_heun(models[k], sigmas[0] * noise, sigmas) for k in ("A", "B")}
    mem = [float(memorization_ratio(samples[k], sets[k], held_out).median()) for k in ("A", "B")]
    return {"cross": float(cross_network_distance(samples["A"], samples["B"])), "memorization": sum(mem) / 2,
            "memorization_A": mem[0], "memorization_B": mem[1]}


def _criterion(rows: dict) -> tuple[bool, object, object]:
    transition = paired_comparison([r["cross"] for r in rows["large"]], [r["cross"] for r in rows["small"]],
                                   margin=MARGIN)
    memorized = paired_comparison([r["memorization"] for r in rows["large"]],
                                  [r["memorization"] for r in rows["small"]], margin=MARGIN, lower_is_better=False)
    return transition.wins and memorized.wins, transition, memorized


@claim(
    "gaha-diffusion",
    statement=("Diffusion denoisers trained on small sets memorize them, while trained on large disjoint sets two "
               "networks generalize to nearly the same denoiser: their samples from the same noise nearly "
               "coincide."),
    criterion=CRITERION,
    baseline="the same networks, training and sampler on N_small = 8 images (the memorization regime)",
    threads=1,
)
def disjoint_sets_converge_to_one_denoiser(ctx: ClaimContext) -> ClaimResult:
    steps = ctx.pick(smoke=20, full=3000)
    n_samples = ctx.pick(smoke=32, full=256)
    images = _digits()
    sigmas = get_sigmas_karras(18, SIGMA_MIN, SIGMA_MAX, dtype=torch.float32)
    rows = {"network": {"small": [], "large": []}, "empirical": {"small": [], "large": []}}
    eff_dim = {"network_large": [], "empirical_large": []}
    for seed in ctx.seeds(3):
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(images.shape[0], generator=g)
        held_out = images[perm[:N_HELD_OUT]]
        pools = {"A": images[perm[N_HELD_OUT:N_HELD_OUT + N_LARGE]],
                 "B": images[perm[N_HELD_OUT + N_LARGE:N_HELD_OUT + 2 * N_LARGE]]}
        noise = torch.randn(n_samples, 64, generator=g)
        for size, n in (("small", N_SMALL), ("large", N_LARGE)):
            sets = {k: pools[k][:n] for k in pools}
            nets = {k: _train(sets[k], steps, seed + 17 * i + (0 if size == "small" else 1000))
                    for i, k in enumerate(sets)}
            models = {k: nets[k].denoiser() for k in nets}
            rows["network"][size].append(_measure(models, sets, held_out, noise, sigmas))
            exact = {k: EmpiricalDenoiser(sets[k]) for k in sets}
            rows["empirical"][size].append(_measure(exact, sets, held_out, noise, sigmas))
            if size == "large":  # the adaptive basis at noisy held-out images: its effective dimensionality
                points = held_out[:16] + 0.5 * torch.randn(16, 64, generator=g)
                eff_dim["network_large"].append(float(jacobian_spectrum(models["A"], points, 0.5)
                                                      .effective_dim.detach().mean()))
                eff_dim["empirical_large"].append(float(jacobian_spectrum(exact["A"], points, 0.5)
                                                        .effective_dim.mean()))

    passed, transition, memorized = _criterion(rows["network"])
    ctrl_passed, ctrl_transition, ctrl_memorized = _criterion(rows["empirical"])
    control = Control("the empirical optimal denoisers (exact memorization) of the same training sets",
                      ctrl_passed, {"transition": ctrl_transition.as_metrics(),
                                    "memorization": ctrl_memorized.as_metrics()})

    def col(kind, size, key):
        return [r[key] for r in rows[kind][size]]

    headline = (f"cross-network distance {fmt_mean_std(col('network', 'large', 'cross'))} (N={N_LARGE}) vs "
                f"{fmt_mean_std(col('network', 'small', 'cross'))} (N={N_SMALL}), paired drop "
                f"{transition.diff_mean:.3g} ± {transition.diff_se:.2g} SE (margin {MARGIN}); memorization ratio "
                f"{fmt_mean_std(col('network', 'large', 'memorization'))} vs "
                f"{fmt_mean_std(col('network', 'small', 'memorization'))}; control (empirical optimum) cross "
                f"{fmt_mean_std(col('empirical', 'large', 'cross'))} vs "
                f"{fmt_mean_std(col('empirical', 'small', 'cross'))}; tr J at sigma 0.5 "
                f"{fmt_mean_std(eff_dim['network_large'])} (net, N={N_LARGE})")
    return ClaimResult.decide(
        passed,
        metrics={"rows": rows, "transition": transition.as_metrics(), "memorization": memorized.as_metrics(),
                 "effective_dim": eff_dim, "steps": steps, "n_samples": n_samples},
        baseline={"small": rows["network"]["small"]},
        headline=headline, control=control,
    )
