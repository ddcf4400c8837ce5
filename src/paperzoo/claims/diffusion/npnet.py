"""Claim check for Golden Noise for Diffusion Models: A Learning Framework (Zhou et al., 2024).

The paper's claim: starting the sampler from a "golden" noise, obtained from a random noise by re-denoise sampling
(one DDIM step with the sampling CFG scale 5.5, one DDIM inversion step with CFG 1.0), or predicted from the random
noise by a small trained noise prompt network (NPNet), gives samples better aligned with the condition than the
random noise itself, at the same sampler, steps and CFG scale (SDXL, 50 DDIM steps; HPSv2, PickScore, ...). At
mixture scale the condition is a class and the alignment its exact posterior.

Setup, fixed before the first run of this claim (set after one exploratory look at the transform's effect at
w in {1, 2, 5.5} on a separate seed, 123): a 2-D float64 mixture, class 0 = N((1, 0), I), class 1 = N((-1, 0), I),
priors 1/2, exact denoisers (:func:`~paperzoo.diffusion.guidance.class_conditional`); SDXL's scaled-linear betas,
DDIM (eta 0) on 50 "leading" timesteps with offset 1 (981, 961, ..., 1) then 0; CFG scale w = 5.5 for sampling and
for the golden noise's down step, 1.0 for its inversion step (the official code's defaults). Evaluation noises:
``n_eval`` = 8,000 per seed (smoke 600), half targeting each class, shared by every method (paired). Metric:
the off-target mass ``m = 1 - mean P(c_target | x_0)`` (exact posterior at sigma = 0) of the final samples,
compared as ``log m`` (lower is better). Also reported, not part of the criterion (the paper claims alignment,
not fidelity; with exact denoisers any w > 1 is already off p(x | c)): sliced W2^2 (64 fixed directions) of each
class's samples to as many exact draws of p(x | c), averaged over the two classes.

NPNet: :class:`~paperzoo.diffusion.golden_noise.NoisePromptNet` (hidden 64, depth 2, class embedding 8) trained with
:func:`~paperzoo.diffusion.golden_noise.train_npnet` (Adam lr 3e-3, batch 256, 400 steps; smoke 80) on pairs from
its own training noises (4,000 per seed; smoke 500; half per class) whose golden noise's sample has a higher
exact target posterior than the random noise's (:func:`~paperzoo.diffusion.golden_noise.select_pairs`, margin 0:
the paper's reward filter with the exact posterior as the reward).

Criterion: paired over 3 seeds, for the exact golden noise AND for the NPNet's predicted noise, the mean paired
``log(m_random / m_method) > log(1.01)`` (off-target mass at least 1% lower) and > 2 SE. Control: the transform with
the same scale (5.5) down and up, where it is the identity up to discretisation; through the exact-golden part of
the criterion it must fail.
"""

from __future__ import annotations

import math

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison
from paperzoo.diffusion.golden_noise import NoisePromptNet, _re_denoise, select_pairs, train_npnet
from paperzoo.diffusion.guidance import class_conditional, classifier_free_guidance
from paperzoo.diffusion.mixture import GaussianMixture
from paperzoo.diffusion.samplers import euler_step, run_sampler
from paperzoo.diffusion.schedules import (alphas_cumprod_from_betas, append_zero, betas_scaled_linear,
                                          discrete_timesteps, sigmas_from_alphas_cumprod)
from paperzoo.transport import sliced_wasserstein

D = torch.float64
W_SAMPLE, W_DOWN, W_UP = 5.5, 5.5, 1.0
STEPS = 50
MARGIN = math.log(1.01)
CRITERION = (
    "2-D mixture, class 0 = N((1,0), I), class 1 = N((-1,0), I), exact denoisers, SDXL scaled-linear betas, DDIM 50 "
    "leading steps (offset 1), CFG 5.5; golden noise = one DDIM step at CFG 5.5 then one DDIM inversion step at CFG "
    "1.0; NPNet (MLP 64x2, class embedding) trained on reward-filtered (exact posterior) pairs. Paired over 3 seeds, "
    "for the exact golden noise and for the NPNet's noise: mean log(m_random / m_method) > log(1.01) and > 2 SE, "
    "m = 1 - mean exact posterior of the target class of the samples. Control: the transform with CFG 5.5 both down "
    "and up through the exact-golden part; it must fail."
)


def _setup():
    gm = GaussianMixture(torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=D), torch.eye(2, dtype=D).repeat(2, 1, 1))
    classes = class_conditional(gm, [0, 1])
    ac = alphas_cumprod_from_betas(betas_scaled_linear()).to(D)
    t = discrete_timesteps(1000, STEPS, "leading")
    sigmas = append_zero(sigmas_from_alphas_cumprod(ac)[t])
    return gm, classes, sigmas


def _labels(n: int) -> torch.Tensor:
    return torch.arange(n) % 2


def _per_class(fn, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for c in (0, 1):
        idx = labels == c
        out[idx] = fn(c, x[idx])
    return out


def _posterior(gm, classes, x, labels) -> torch.Tensor:
    lp = torch.stack([c.log_prob(x) for c in classes], -1) + math.log(0.5)
    return (lp - lp.logsumexp(-1, keepdim=True)).exp().gather(-1, labels[:, None])[:, 0]


@claim(
    "npnet",
    statement=("Sampling from golden noise (one guided DDIM step down and one DDIM inversion step up at a lower "
               "guidance scale, or its prediction by a trained noise prompt network) gives samples better aligned "
               "with the condition than plain random noise at the same sampler, steps and CFG scale."),
    criterion=CRITERION,
    baseline="the same DDIM sampler at the same CFG scale from the plain random noise (paired: same noise)",
    threads=1,
)
def golden_noise_improves_alignment(ctx: ClaimContext) -> ClaimResult:
    n_eval = ctx.pick(smoke=600, full=8000)
    n_train = ctx.pick(smoke=500, full=4000)
    train_steps = ctx.pick(smoke=80, full=400)
    gm, classes, sigmas = _setup()
    sig0 = sigmas[0]
    cfg = {c: classifier_free_guidance(classes[c].denoise, gm.denoise, W_SAMPLE) for c in (0, 1)}
    up = {c: classifier_free_guidance(classes[c].denoise, gm.denoise, W_UP) for c in (0, 1)}

    def sample(eps, labels):
        return _per_class(lambda c, e: run_sampler(cfg[c], sig0 * e, sigmas, euler_step), eps, labels)

    def golden(eps, labels, w_up):
        models = up if w_up == W_UP else cfg
        return _per_class(lambda c, e: _re_denoise(cfg[c], models[c], sig0 * e, sigmas[:2]) / sig0, eps, labels)

    def offmass(x, labels) -> float:
        return float(1 - _posterior(gm, classes, x, labels).mean())

    rows = {k: [] for k in ("random", "golden", "npnet", "control")}
    sw = {k: [] for k in ("random", "golden", "npnet", "control")}
    kept_fraction, shift_norm = [], []
    proj = torch.nn.functional.normalize(torch.randn(64, 2, generator=torch.Generator().manual_seed(7), dtype=D), dim=1)
    for seed in ctx.seeds(3):
        g = torch.Generator().manual_seed(1000 + seed)
        # NPNet: its own training noises, pairs filtered by the exact-posterior reward
        eps_tr = torch.randn(n_train, 2, generator=g, dtype=D)
        lab_tr = _labels(n_train)
        gold_tr = golden(eps_tr, lab_tr, W_UP)
        keep = select_pairs(_posterior(gm, classes, sample(eps_tr, lab_tr), lab_tr),
                            _posterior(gm, classes, sample(gold_tr, lab_tr), lab_tr))
        kept_fraction.append(float(keep.double().mean()))
        torch.manual_seed(2000 + seed)
        net = NoisePromptNet(2, 2, hidden=64, depth=2).to(D)
        train_npnet(net, eps_tr[keep], gold_tr[keep], lab_tr[keep], steps=train_steps, lr=3e-3, batch_size=256,
                    generator=g)
        # evaluation: shared noise for every method
        eps = torch.randn(n_eval, 2, generator=g, dtype=D)
        lab = _labels(n_eval)
        with torch.no_grad():
            starts = {"random": eps, "golden": golden(eps, lab, W_UP), "npnet": net(eps, lab),
                      "control": golden(eps, lab, W_DOWN)}
        shift_norm.append(float((starts["golden"] - eps).norm(dim=1).mean()))
        ref = torch.cat([classes[c].sample(n_eval // 2, generator=g) for c in (0, 1)])
        ref_lab = torch.cat([torch.full((n_eval // 2,), c) for c in (0, 1)])
        for k, e in starts.items():
            x = sample(e, lab)
            rows[k].append(math.log(offmass(x, lab)))
            sw[k].append(0.5 * sum(float(sliced_wasserstein(x[lab == c], ref[ref_lab == c], projections=proj))
                                   for c in (0, 1)))

    cmp_golden = paired_comparison(rows["golden"], rows["random"], margin=MARGIN)
    cmp_npnet = paired_comparison(rows["npnet"], rows["random"], margin=MARGIN)
    cmp_control = paired_comparison(rows["control"], rows["random"], margin=MARGIN)
    passed = cmp_golden.wins and cmp_npnet.wins
    control = Control("re-denoise with the same CFG scale 5.5 down and up (identity up to discretisation) through the "
                      "exact-golden part of the criterion", cmp_control.wins, cmp_control.as_metrics())

    def m(k):
        return [math.exp(v) for v in rows[k]]

    def gain(c):
        return f"{100 * (1 - math.exp(-c.diff_mean)):.2f}% +- {100 * c.diff_se:.2f}% SE"

    headline = (f"off-target mass at CFG 5.5, 3 seeds: random noise {fmt_mean_std(m('random'))}, golden "
                f"{fmt_mean_std(m('golden'))} (paired cut {gain(cmp_golden)}), NPNet {fmt_mean_std(m('npnet'))} "
                f"(cut {gain(cmp_npnet)}); control (5.5 down and up) cut {gain(cmp_control)}; sliced W2^2 to p(x|c): "
                f"random {fmt_mean_std(sw['random'])}, golden {fmt_mean_std(sw['golden'])}, NPNet "
                f"{fmt_mean_std(sw['npnet'])}")
    metrics = {"log_offmass": rows, "offmass": {k: m(k) for k in rows}, "sliced_w2_sq": sw,
               "golden_vs_random": cmp_golden.as_metrics(), "npnet_vs_random": cmp_npnet.as_metrics(),
               "npnet_kept_pair_fraction": kept_fraction, "golden_shift_norm_unit_noise": shift_norm,
               "n_eval": n_eval, "n_train": n_train, "train_steps": train_steps}
    return ClaimResult.decide(passed, metrics=metrics, baseline={"log_offmass": rows["random"]}, headline=headline,
                              control=control)
