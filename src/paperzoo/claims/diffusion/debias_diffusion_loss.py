"""Claim check for Debias the Training of Diffusion Models (Yu et al., 2023).

The paper's claim: the constant-weight noise-prediction loss of DDPM is a biased surrogate for the clean-data
(:math:`x_0`) estimation the sampler relies on; weighting the per-timestep noise loss by
:math:`1/\\sqrt{\\mathrm{SNR}_t}` removes that bias and, with nothing else changed, gives better samples (lower
FID on FFHQ, CelebA-HQ, AFHQ-dog, MetFaces) at equal training, more so with few sampling steps.

Setup, fixed before the first run: target ``mixture_on_circle(8, 2, radius=1, std=0.15)`` (float32); network
``MLPDenoiser(2, 128, 3, prediction="eps")``; DDPM's linear schedule ``betas_linear(1000)`` with training timesteps
uniform over the 1,000 steps (the draws of ``sample_training_sigmas``); Adam, batch 256, 3,000 steps (smoke 30).
Method: ``debiased_weighting("eps")`` (weight :math:`1/\\sqrt{\\mathrm{SNR}_t} = \\sigma_t`, the official code's
choice, no clipping); baseline: uniform weights (DDPM's ``L_simple``). Sample quality of a network: the sliced
W2^2 (64 fixed directions) between 4,000 samples (smoke 200) of deterministic DDIM (eta = 0, 50 "trailing"
discrete timesteps from t = 999; smoke 10) and 4,000 fixed exact draws of the mixture. Score of a run: the mean
of log SW2^2 at the checkpoints 0.8, 0.9 and 1.0 of the steps (end-of-training quality; the three late
checkpoints average out the last Adam steps' fluctuation). Learning rate tuned for each weighting on the same
grid {1e-3, 3e-3} (extended past a winning edge, at most twice, bounds [1e-4, 3e-2]) by the score on a separate
tuning seed with validation draws; then 3 paired seeds (same initialisation, batches, timesteps and noise, same
sampling noise and reference draws for every arm). Reported, not gated: Min-SNR-5 (``min_snr_weighting(5.0)``,
tuned on the same grid) through the same score; the final SW2^2 with 10-step DDIM (the paper's few-step regime);
the exact denoising error E_t E_x ||D_theta(x, sigma_t) - D(x, sigma_t)||^2 at the end (t uniform, exact mixture
denoiser), split into SNR < 1 (where the debiased weight exceeds 1) and the rest.

Criterion: the paired gain score_uniform - score_debiased exceeds log 1.1 and two standard errors. Control: the
method without its key ingredient, the SNR dependence: the same 1,000 debiased step weights randomly permuted
over the timesteps (one permutation per seed), at the debiased lr, through the same criterion against the same
baseline runs; it must fail.
"""

from __future__ import annotations

import math

import torch

from paperzoo.claims.diffusion._convergence import checkpointed_run, mean_log
from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import fmt_mean_std, paired_comparison, paired_control, tune
from paperzoo.diffusion.debiased_loss import debiased_weight, debiased_weighting
from paperzoo.diffusion.min_snr import min_snr_weighting
from paperzoo.diffusion.mixture import mixture_on_circle
from paperzoo.diffusion.samplers import sample_ddim
from paperzoo.diffusion.schedules import (alphas_cumprod_from_betas, append_zero, betas_linear, discrete_timesteps,
                                          sigmas_from_alphas_cumprod)
from paperzoo.diffusion.training import _sample_training_sigmas
from paperzoo.transport import sliced_wasserstein

T = 1000
MARGIN = math.log(1.1)
CHECKPOINTS = (0.8, 0.9, 1.0)
CRITERION = (
    "8-Gaussian circle (radius 1, std 0.15), MLP 3x128 eps-prediction, DDPM linear betas with uniform discrete "
    "timesteps (T = 1000), 3,000 Adam steps, batch 256, lr tuned per weighting on {1e-3, 3e-3} (extended at a "
    "winning edge, at most twice) on a separate tuning seed; score = mean over the checkpoints {0.8, 0.9, 1} of "
    "the steps of log sliced W2^2 of 50-step DDIM samples vs exact draws; 3 paired seeds: the debiased "
    "1/sqrt(SNR) weighting's score is below uniform L_simple's by a mean paired gain > log 1.1 and > 2 SE. "
    "Control: the debiased step weights randomly permuted over timesteps (at the debiased lr) through the same "
    "criterion must fail."
)


def _levels() -> torch.Tensor:
    """The training steps' VE levels, float32, ``(T,)``."""
    return sigmas_from_alphas_cumprod(alphas_cumprod_from_betas(betas_linear(T)).float())


def _permuted_weighting(sig: torch.Tensor, seed: int):
    """The debiased per-step weights shuffled over the steps: same values, no SNR dependence."""
    perm = torch.randperm(T, generator=torch.Generator().manual_seed(seed))
    table = debiased_weight(sig)[perm]

    def weighting(sigma: torch.Tensor) -> torch.Tensor:
        return table[torch.searchsorted(sig, sigma)]

    return weighting


def _run(gm, weighting, lr: float, steps: int, seed: int, evaluate, final=None) -> dict:
    """Train from seed ``seed``; return the evaluations at the checkpoints and, if given, ``final`` at the end."""
    sig = _levels()
    # sample_training_sigmas' draws through its unchecked kernel: the schedule checks would cost a third of the run
    net, sw = checkpointed_run(gm, lambda n, g: _sample_training_sigmas(n, sig, g)[1], lr, steps, seed, evaluate,
                               CHECKPOINTS, weighting)
    out = {"sw": sw}
    if final is not None:
        out.update(final(net))
    return out


def _sw_evaluator(gm, n: int, ddim_steps: int, seed: int, proj: torch.Tensor):
    """Sliced W2^2 of DDIM samples (fixed start noise) against fixed exact draws."""
    sig = _levels()
    sigmas = append_zero(sig[discrete_timesteps(T, ddim_steps, "trailing")])
    g = torch.Generator().manual_seed(seed)
    ref = gm.sample(n, generator=g)
    start = sigmas[0] * torch.randn(n, 2, generator=g)

    def evaluate(net) -> float:
        with torch.no_grad():
            return float(sliced_wasserstein(sample_ddim(net.denoiser(), start, sigmas), ref, projections=proj))

    return evaluate


def _final_evaluator(gm, n: int, seed: int, proj: torch.Tensor):
    """At the end of training: 10-step DDIM SW2^2 and the exact denoising error, split at SNR = 1."""
    sig = _levels()
    few = _sw_evaluator(gm, n, 10, seed + 5, proj)
    g = torch.Generator().manual_seed(seed + 6)
    t_err = torch.randint(0, T, (n,), generator=g)
    x_err = gm.sample(n, generator=g) + sig[t_err][:, None] * torch.randn(n, 2, generator=g)
    exact = gm.denoise(x_err, sig[t_err])
    noisy = sig[t_err] > 1  # SNR < 1

    def evaluate(net) -> dict:
        with torch.no_grad():
            err = (net.denoiser()(x_err, sig[t_err]) - exact).square().sum(-1)
        return {"sw_ddim10": few(net), "error": float(err.mean()), "error_low_snr": float(err[noisy].mean()),
                "error_high_snr": float(err[~noisy].mean())}

    return evaluate


def _score(run: dict) -> float:
    return mean_log(run["sw"])


@claim(
    "debias-diffusion-loss",
    statement=("Weighting the per-timestep noise-prediction loss by 1/sqrt(SNR) (the debiased loss) gives better "
               "diffusion samples than the constant-weight L_simple at equal training."),
    criterion=CRITERION,
    baseline="uniform eps-MSE (DDPM L_simple), same network, timesteps, steps, sampler and tuned learning-rate grid",
    threads=1,
)
def debiased_weighting_improves_samples(ctx: ClaimContext) -> ClaimResult:
    gm = mixture_on_circle(8, 2, radius=1.0, std=0.15, dtype=torch.float32)
    steps = ctx.pick(smoke=30, full=3000)
    n_eval = ctx.pick(smoke=200, full=4000)
    ddim_steps = ctx.pick(smoke=10, full=50)
    seeds = ctx.seeds(4)
    tune_seed, seeds = seeds[0], seeds[1:]
    proj = torch.randn(64, 2, generator=torch.Generator().manual_seed(tune_seed + 7))
    proj = proj / proj.norm(dim=1, keepdim=True)
    weightings = {"debiased": debiased_weighting("eps"), "uniform": None, "min_snr": min_snr_weighting(5.0, "eps")}

    # Tuning: its own training seed and validation draws, never the test seeds.
    val = _sw_evaluator(gm, n_eval, ddim_steps, tune_seed + 1, proj)

    def evaluator(name):
        return lambda lr: _score(_run(gm, weightings[name], lr, steps, tune_seed, val))

    sel = tune({name: evaluator(name) for name in weightings}, [1e-3, 3e-3], bounds=(1e-4, 3e-2),
               max_extensions=2)
    lr = {name: s.best for name, s in sel.items()}

    sig = _levels()
    runs = {"debiased": [], "uniform": [], "min_snr": [], "permuted": []}
    for seed in seeds:
        test = _sw_evaluator(gm, n_eval, ddim_steps, seed + 1, proj)
        final = _final_evaluator(gm, n_eval, seed, proj)
        arms = [(name, weightings[name], lr[name]) for name in weightings]
        arms.append(("permuted", _permuted_weighting(sig, seed + 2), lr["debiased"]))
        for name, weighting, rate in arms:
            runs[name].append(_run(gm, weighting, rate, steps, seed, test, final))

    def scores(name):
        return [_score(run) for run in runs[name]]

    def last(name, key="sw"):
        return [run["sw"][-1] if key == "sw" else run[key] for run in runs[name]]

    cmp = paired_comparison(scores("debiased"), scores("uniform"), margin=MARGIN)
    control, ctrl_cmp = paired_control(
        "the debiased step weights randomly permuted over the timesteps (no SNR dependence), at the debiased lr",
        scores("permuted"), scores("uniform"), margin=MARGIN)
    vs_min_snr = paired_comparison(scores("debiased"), scores("min_snr"), margin=MARGIN)

    headline = (f"late-training score (mean log SW2^2, 50-step DDIM) {fmt_mean_std(scores('debiased'))} (debiased) "
                f"vs {fmt_mean_std(scores('uniform'))} (uniform L_simple), paired gain {cmp.diff_mean:.3f} ± "
                f"{cmp.diff_se:.3f} SE (margin {MARGIN:.3f}); Min-SNR-5 {fmt_mean_std(scores('min_snr'))}; final "
                f"10-step SW2^2 {fmt_mean_std(last('debiased', 'sw_ddim10'))} vs "
                f"{fmt_mean_std(last('uniform', 'sw_ddim10'))}; lr {lr['debiased']:g} / {lr['uniform']:g} / "
                f"{lr['min_snr']:g}; control (permuted weights) gain {ctrl_cmp.diff_mean:.3f} ± "
                f"{ctrl_cmp.diff_se:.3f}")

    if ctx.figure_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        names = ("uniform", "debiased", "min_snr", "permuted")
        labels = ("uniform (L_simple)", "debiased 1/sqrt(SNR)", "Min-SNR-5", "permuted (control)")
        for i, (name, label) in enumerate(zip(names, labels)):
            ax.scatter([i] * len(seeds), scores(name), label=label)
        ax.set_xticks(range(len(names)), names, fontsize=7)
        ax.set_ylabel("mean log SW2^2, last 3 checkpoints")
        ax.legend(fontsize=7)
        ctx.save_figure(fig, "scores")

    return ClaimResult.decide(
        cmp.wins,
        metrics={"runs": runs, "scores": {name: scores(name) for name in runs}, "lr": lr,
                 "score_gain": cmp.as_metrics(), "gain_vs_min_snr": vs_min_snr.as_metrics(),
                 "tuning": {k: s.as_metrics() for k, s in sel.items()},
                 "final_sw_ddim10": {n: last(n, "sw_ddim10") for n in runs},
                 "final_error_low_snr": {n: last(n, "error_low_snr") for n in runs},
                 "final_error_high_snr": {n: last(n, "error_high_snr") for n in runs},
                 "final_error": {n: last(n, "error") for n in runs}, "steps": steps},
        baseline={"uniform_scores": scores("uniform"), "uniform_final_sw": last("uniform")},
        headline=headline, control=control,
    )
