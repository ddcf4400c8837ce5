"""Claim check for Improved Techniques for Training Consistency Models (Song & Dhariwal, ICLR 2024).

The paper's claim: consistency training improved by (i) the student as its own teacher (no EMA teacher), (ii) the
Pseudo-Huber metric, (iii) lognormal sampling of the discretized levels, (iv) the exponential discretization
curriculum and the 1/(sigma_{i+1} - sigma_i) weighting gives much better one- and two-step samples than the
original consistency training (CT) of the CM paper at the same network and training length.

Setup, fixed before the first run: target ``mixture_on_circle(8, 2, radius=0.7, std=0.1)`` (float32; per-coordinate
std about 0.5 = sigma_data); network ``ConsistencyModel(MLPDenoiser(2, 128, 3, prediction="x0", space="ve"))``
(sigma_min 0.002, sigma_max 80, rho 7, sigma_data 0.5: the paper's constants); Adam, batch 256, 1,200 steps (smoke
8). Method: iCT (``train_consistency`` defaults: student teacher, Pseudo-Huber with c = 0.00054 sqrt 2, lognormal
levels P_mean -1.1, P_std 2, curriculum s0 = 10, s1 = 1280, weighting 1/(sigma_{i+1} - sigma_i)). Baseline: the
original CT (squared L2, EMA teacher with CT's adaptive decay mu0 = 0.9, s0 = 2, uniform levels, CT's square-root
curriculum s0 = 2, s1 = 150, weight 1). Metric: sliced W2^2 (64 fixed directions) between 4,000 samples (smoke 128)
and 4,000 exact draws, for one-step generation (sigmas [80, 0]) and two-step generation (sigmas [80, 0.821, 0]);
no EMA of the student is used for evaluation in either arm. Learning rate tuned per arm on the same grid
{1e-3, 3e-3} (extended at a winning edge at most once, bounds [1e-4, 1e-2]) by the mean of the one- and two-step
log SW2^2 on a separate tuning seed with its own validation draws; then 3 paired seeds (same initialization, data
batches, noise, sampling noise and reference draws in both arms).

Criterion: for both one-step and two-step samples, the paired gain log SW2^2(CT) - log SW2^2(iCT) exceeds
log 1.25 and two standard errors. Control: the baseline against itself, CT at CT's tuned learning rate with another
initialization and batch seed, through the same criterion against the same CT runs; it must fail (a pass would
mean seed noise alone clears the margin).
"""

from __future__ import annotations

import math

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison, tune
from paperzoo.diffusion.consistency import ConsistencyModel, sample_consistency, train_consistency
from paperzoo.diffusion.mixture import mixture_on_circle
from paperzoo.diffusion.training import MLPDenoiser
from paperzoo.transport import sliced_wasserstein

MARGIN = math.log(1.25)
TWO_STEP_TAU = 0.821
CT = dict(curriculum="ct", teacher="ema", metric="l2", levels="uniform", weighting="uniform")
ARMS = {"ict": {}, "ct": CT}
CRITERION = (
    "8-Gaussian circle (radius 0.7, std 0.1), ConsistencyModel around an MLP 3x128, 1,200 Adam steps, batch 256, "
    "lr tuned per arm on {1e-3, 3e-3} (extended at a winning edge at most once) on a separate tuning seed; "
    "sliced W2^2 of one-step (sigma 80) and two-step (80, 0.821) samples vs exact draws; 3 paired seeds: for both "
    "step counts iCT (student teacher, Pseudo-Huber, lognormal levels, exponential curriculum, 1/dsigma weights) "
    "beats the original CT (EMA teacher, squared L2, uniform levels, square-root curriculum) by a mean paired "
    "log-SW2^2 gain > log 1.25 and > 2 SE. Control: CT with another initialization and batch seed against the same "
    "CT runs through the same criterion must fail."
)


def _run(gm, arm: dict, lr: float, steps: int, seed: int, evaluate) -> dict:
    torch.manual_seed(seed)
    model = ConsistencyModel(MLPDenoiser(2, 128, 3, prediction="x0", space="ve"))
    train_consistency(model, lambda n, g: gm.sample(n, generator=g), steps=steps, batch_size=256, lr=lr,
                      generator=torch.Generator().manual_seed(seed), **arm)
    return evaluate(model)


def _evaluator(gm, n: int, seed: int, proj: torch.Tensor):
    g = torch.Generator().manual_seed(seed)
    ref = gm.sample(n, generator=g)
    start = 80.0 * torch.randn(n, 2, generator=g)
    schedules = {"one_step": torch.tensor([80.0, 0.0]), "two_step": torch.tensor([80.0, TWO_STEP_TAU, 0.0])}

    def evaluate(model):
        out = {}
        with torch.no_grad():
            for name, sigmas in schedules.items():
                x = sample_consistency(model, start, sigmas, generator=torch.Generator().manual_seed(seed + 1))
                out[name] = float(sliced_wasserstein(x, ref, projections=proj))
        return out

    return evaluate


def _val_score(out: dict) -> float:
    return 0.5 * (math.log(out["one_step"]) + math.log(out["two_step"]))


@claim(
    "ict",
    statement=("Improved consistency training (student as teacher, Pseudo-Huber metric, lognormal levels, exponential "
               "curriculum, 1/dsigma weighting) gives better one- and two-step samples than the original consistency "
               "training at the same network and training length."),
    criterion=CRITERION,
    baseline="original CT of the CM paper (EMA teacher, squared L2, uniform levels, square-root curriculum), same "
             "network, steps and tuned learning-rate grid",
    threads=1,
)
def ict_beats_ct(ctx: ClaimContext) -> ClaimResult:
    gm = mixture_on_circle(8, 2, radius=0.7, std=0.1, dtype=torch.float32)
    steps = ctx.pick(smoke=8, full=1200)
    n_eval = ctx.pick(smoke=128, full=4000)
    seeds = ctx.seeds(4)
    tune_seed, seeds = seeds[0], seeds[1:]
    proj = torch.randn(64, 2, generator=torch.Generator().manual_seed(tune_seed + 7))
    proj = proj / proj.norm(dim=1, keepdim=True)

    val = _evaluator(gm, n_eval, tune_seed + 1, proj)

    def evaluator(name):
        return lambda lr: _run(gm, ARMS[name], lr, steps, tune_seed, val)

    sel = tune({name: evaluator(name) for name in ARMS}, [1e-3, 3e-3], score=_val_score, bounds=(1e-4, 1e-2),
               max_extensions=1)
    lr = {name: s.best for name, s in sel.items()}

    results = {"ict": [], "ct": [], "ct_other_seed": []}
    for seed in seeds:
        test = _evaluator(gm, n_eval, seed + 1, proj)
        results["ict"].append(_run(gm, ARMS["ict"], lr["ict"], steps, seed, test))
        results["ct"].append(_run(gm, CT, lr["ct"], steps, seed, test))
        results["ct_other_seed"].append(_run(gm, CT, lr["ct"], steps, seed + 1000, test))

    def logs(name, key):
        return [math.log(r[key]) for r in results[name]]

    def raw(name, key):
        return [r[key] for r in results[name]]

    cmp = {key: paired_comparison(logs("ict", key), logs("ct", key), margin=MARGIN)
           for key in ("one_step", "two_step")}
    ctrl = {key: paired_comparison(logs("ct_other_seed", key), logs("ct", key), margin=MARGIN)
            for key in ("one_step", "two_step")}
    control = Control("the original CT with another initialization and batch seed vs the same CT runs, through the "
                      "same criterion (both step counts)",
                      ctrl["one_step"].wins and ctrl["two_step"].wins,
                      {"one_step": ctrl["one_step"].as_metrics(), "two_step": ctrl["two_step"].as_metrics()})
    wins = cmp["one_step"].wins and cmp["two_step"].wins

    headline = (f"SW2^2 one-step {fmt_mean_std(raw('ict', 'one_step'))} (iCT) vs "
                f"{fmt_mean_std(raw('ct', 'one_step'))} (CT), log gain {cmp['one_step'].diff_mean:.2f} ± "
                f"{cmp['one_step'].diff_se:.2f} SE; two-step {fmt_mean_std(raw('ict', 'two_step'))} vs "
                f"{fmt_mean_std(raw('ct', 'two_step'))}, log gain {cmp['two_step'].diff_mean:.2f} ± "
                f"{cmp['two_step'].diff_se:.2f} (margin {MARGIN:.3f}); lr {lr['ict']:g} / {lr['ct']:g}; control "
                f"(CT, other seed) log gains {ctrl['one_step'].diff_mean:.2f} / {ctrl['two_step'].diff_mean:.2f}")

    return ClaimResult.decide(
        wins,
        metrics={"results": results, "lr": lr, "one_step_gain": cmp["one_step"].as_metrics(),
                 "two_step_gain": cmp["two_step"].as_metrics(),
                 "control_one_step": ctrl["one_step"].as_metrics(), "control_two_step": ctrl["two_step"].as_metrics(),
                 "tuning": {k: s.as_metrics() for k, s in sel.items()}, "steps": steps},
        baseline={"ct_one_step": raw("ct", "one_step"), "ct_two_step": raw("ct", "two_step")},
        headline=headline, control=control,
    )
