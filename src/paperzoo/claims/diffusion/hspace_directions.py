"""Claim check for Discovering Interpretable Directions in the Semantic Latent Space of Diffusion Models
(Haas et al., 2023/2024).

The paper's supervised claim: in an unconditional diffusion model, the difference of the mean h-space codes (the
bottleneck activations at every sampling step) of generated samples with and without an attribute, as labelled by
an attribute classifier, is a direction that edits that attribute when added to the codes while sampling from the
same noise; and removing from it, by linear projection, the directions of attributes it is correlated with
disentangles the edit (the other attribute then changes less).

Setup, fixed before the first run: data, 4 isotropic Gaussian components (std 0.3) in 8-D with means
``(2 s_a, 1 s_b, 0, ..., 0)``, ``s_a, s_b`` in {-1, +1}; the attributes of a sample are ``a = x[0] > 0`` and
``b = x[1] > 0`` (the "classifier"). Model: ``BottleneckMLP(8, 64, prediction="eps")`` (a U-Net-like MLP:
encoder, two-layer bottleneck, decoder fed the bottleneck and an encoder skip), trained with DDPM's ``L_simple``
(linear betas, T = 1000, uniform timesteps), Adam lr 2e-3, batch 256, 3,000 steps (smoke 20); the h-space code is
the bottleneck's output. Sampling: deterministic DDIM, 20 "trailing"
timesteps (smoke 4). Per seed (a fresh model): 2,000 generated samples (smoke 100) give the codes and labels;
method: ``v_a = supervised_direction(h, a)`` (one offset per step); edit of a test sample: add ``-alpha v_a``
(attribute a present) or ``+alpha v_a`` (absent) at every step, from the sample's own noise. Metrics on 1,000
held-out noises (smoke 100): flip rate of a, change rate of b, and the edit score flip_a - change_b. Baseline: a
random direction with the same per-step norms as v_a (a fresh Gaussian draw per seed), applied the same way.
alpha tuned for each arm on the grid {0.5, 1, 2} (log-extended at a winning edge, at most twice, within [1/8, 8])
by the edit score on 500 validation noises (smoke 50), disjoint from the test noises.

Part 2 (disentanglement), same recipe on a second model per seed trained on the same components with correlated
attributes, weights 0.4 for (a, b) = (+, +) and (-, -), 0.1 for the mixed pair: method ``project_out(v_a, v_b)``
against ``v_a`` itself, each with its alpha tuned as above.

Criterion: (1) over 3 paired seeds, the edit score of v_a beats the random direction's by a mean paired gain
> 0.5 and > 2 SE, with mean flip rate of a >= 0.8 and mean change rate of b <= 0.1; and (2) on the correlated
model, the projected direction's change rate of b is below v_a's by a mean paired reduction > 0.05 and > 2 SE, with
its mean flip rate of a >= 0.8. Control: the method without its key ingredient, the labels: the mean difference of
the codes split by randomly permuted a-labels (tuned on the same grid), through criterion (1)'s gain against the same
random-direction runs; it must fail. Reported, not gated: |cos| between the top principal direction of the codes and
v_a (the paper's unsupervised claim that principal components are semantic).

Revision before the first full run: the model was first a plain ``MLPDenoiser`` (no skip connection) with the
middle hidden layer as the bottleneck. A diagnostic run (1,500 steps, one seed) showed the edit acting in reverse
there (flip rate of a 0 for +alpha, 1 for -alpha): without a skip the code must encode the noisy input, so it is
not the U-Net bottleneck the paper edits. The U-Net-like ``BottleneckMLP`` replaced it; criterion unchanged.
"""

from __future__ import annotations

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import fmt_mean_std, paired_comparison, paired_control, tune
from paperzoo.diffusion.hspace import (BottleneckMLP, hspace_shift, pca_directions, project_out, record_hspace,
                                       supervised_direction)
from paperzoo.diffusion.mixture import GaussianMixture
from paperzoo.diffusion.samplers import sample_ddim
from paperzoo.diffusion.schedules import (alphas_cumprod_from_betas, append_zero, betas_linear, discrete_timesteps,
                                          sigmas_from_alphas_cumprod)
from paperzoo.diffusion.training import _sample_training_sigmas, train_denoiser

T, DIM, HIDDEN = 1000, 8, 64
MARGIN, MARGIN_DISENTANGLE = 0.5, 0.05
GRID = [0.5, 1.0, 2.0]
CRITERION = (
    "4 Gaussians in 8-D (std 0.3, means (2 s_a, 1 s_b, 0...)), attributes a = x0 > 0, b = x1 > 0; U-Net-like "
    "BottleneckMLP(8, 64) eps model (DDPM L_simple, 3,000 Adam steps), h = bottleneck output, 20-step DDIM; "
    "supervised direction v_a = mean code (a) - mean code (not a) from 2,000 generated samples, added at every "
    "step with sign towards the other class; alpha tuned per arm on {0.5, 1, 2} (extended at a winning edge) by "
    "flip_a - change_b on 500 validation noises; 1,000 test noises; 3 paired seeds: (1) score flip_a - change_b "
    "of v_a beats a random direction of the same per-step norms by > 0.5 and > 2 SE, with mean flip_a >= 0.8 "
    "and mean change_b <= 0.1; (2) on a model of correlated attributes (weights 0.4/0.4/0.1/0.1), "
    "project_out(v_a, v_b) lowers change_b vs v_a by > 0.05 and > 2 SE with mean flip_a >= 0.8. Control: the "
    "direction from permuted a-labels through (1)'s gain must fail."
)


def _mixture(correlated: bool) -> GaussianMixture:
    signs = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    means = torch.zeros(4, DIM)
    means[:, 0], means[:, 1] = 2.0 * signs[:, 0], 1.0 * signs[:, 1]
    weights = torch.tensor([0.4, 0.4, 0.1, 0.1]) if correlated else None
    return GaussianMixture(means, 0.09 * torch.eye(DIM).expand(4, DIM, DIM).clone(), weights)


def _attributes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[:, 0] > 0, x[:, 1] > 0


class _Setup:
    """One seed's trained model, its DDIM schedule, labelled codes and noises."""

    def __init__(self, gm, steps, ddim_steps, n_label, n_val, n_test, seed):
        ac = alphas_cumprod_from_betas(betas_linear(T)).float()
        sig = sigmas_from_alphas_cumprod(ac)
        self.sigmas = append_zero(sig[discrete_timesteps(T, ddim_steps, "trailing")])
        torch.manual_seed(seed)
        self.net = BottleneckMLP(DIM, HIDDEN, prediction="eps")
        g = torch.Generator().manual_seed(seed)
        train_denoiser(self.net, lambda n, gen: gm.sample(n, generator=gen).float(),
                       lambda n, gen: _sample_training_sigmas(n, sig, gen)[1], steps=steps, lr=2e-3, generator=g)
        self.model, self.module = self.net.denoiser(), self.net.bottleneck
        s0 = float(self.sigmas[0])
        self.noise = {name: s0 * torch.randn(n, DIM, generator=g)
                      for name, n in (("label", n_label), ("val", n_val), ("test", n_test))}
        with torch.no_grad():
            rec = record_hspace(self.model, self.module, self.noise["label"], self.sigmas)
            self.h = rec.h
            self.a, self.b = _attributes(rec.samples)
            self.base = {k: _attributes(sample_ddim(self.model, self.noise[k], self.sigmas)) for k in ("val", "test")}
        self.g = g

    def direction(self, labels: torch.Tensor) -> torch.Tensor:
        return supervised_direction(self.h, labels)

    def evaluate(self, v: torch.Tensor, alpha: float, split: str) -> dict:
        """Edit every sample of ``split`` towards the other a-class; rates of changed a and b."""
        x = self.noise[split]
        a0, b0 = self.base[split]
        out = torch.empty_like(x)
        with torch.no_grad():
            for mask, sign in ((a0, -1.0), (~a0, 1.0)):
                if bool(mask.any()):
                    out[mask] = sample_ddim(hspace_shift(self.model, self.module, v, self.sigmas, scale=sign * alpha),
                                            x[mask], self.sigmas)
        a1, b1 = _attributes(out)
        flip, change = float((a1 != a0).float().mean()), float((b1 != b0).float().mean())
        return {"flip_a": flip, "change_b": change, "score": flip - change}


def _tuned(setup: _Setup, arms: dict) -> dict:
    """alpha tuned per arm on the validation noises; the arms' test metrics at their alpha."""
    sel = tune({name: (lambda v: lambda alpha: setup.evaluate(v, alpha, "val")["score"])(v)
                for name, v in arms.items()}, GRID, minimize=False, bounds=(0.125, 8.0), max_extensions=2)
    return {name: {**setup.evaluate(v, sel[name].best, "test"), "alpha": sel[name].best}
            for name, v in arms.items()}


def _random_like(v: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    z = torch.randn(v.shape, generator=g)
    return z / z.norm(dim=-1, keepdim=True) * v.norm(dim=-1, keepdim=True)


@claim(
    "hspace-directions",
    statement=("The difference of the mean h-space codes of generated samples with and without an attribute edits "
               "that attribute when added while sampling from the same noise, leaving another attribute mostly "
               "unchanged; projecting out a correlated attribute's direction disentangles the edit."),
    criterion=CRITERION,
    baseline="a random h-space direction with the same per-step norms, alpha tuned on the same grid",
    threads=1,
)
def supervised_direction_edits_attribute(ctx: ClaimContext) -> ClaimResult:
    steps = ctx.pick(smoke=20, full=3000)
    ddim_steps = ctx.pick(smoke=4, full=20)
    n_label, n_val, n_test = ctx.pick(smoke=(100, 50, 100), full=(2000, 500, 1000))
    seeds = ctx.seeds(3)
    runs, disent, pc_cos = [], [], []
    for seed in seeds:
        s = _Setup(_mixture(False), steps, ddim_steps, n_label, n_val, n_test, seed)
        v_a = s.direction(s.a)
        perm = s.a[torch.randperm(s.a.shape[0], generator=s.g)]
        arms = {"supervised": v_a, "random": _random_like(v_a, s.g), "permuted": s.direction(perm)}
        runs.append(_tuned(s, arms))
        pc = pca_directions(s.h, 1).directions[0]
        pc_cos.append(float((pc * v_a).sum().abs() / (pc.norm() * v_a.norm())))

        c = _Setup(_mixture(True), steps, ddim_steps, n_label, n_val, n_test, seed + 1)
        w_a, w_b = c.direction(c.a), c.direction(c.b)
        disent.append(_tuned(c, {"v_a": w_a, "projected": project_out(w_a, w_b[None])}))

    def col(rows, arm, key):
        return [r[arm][key] for r in rows]

    cmp = paired_comparison(col(runs, "supervised", "score"), col(runs, "random", "score"), margin=MARGIN,
                            lower_is_better=False)
    control, ctrl_cmp = paired_control(
        "the mean code difference for randomly permuted a-labels (no attribute information)",
        col(runs, "permuted", "score"), col(runs, "random", "score"), margin=MARGIN, lower_is_better=False)
    flip = sum(col(runs, "supervised", "flip_a")) / len(seeds)
    change = sum(col(runs, "supervised", "change_b")) / len(seeds)
    part1 = cmp.wins and flip >= 0.8 and change <= 0.1
    dis = paired_comparison(col(disent, "projected", "change_b"), col(disent, "v_a", "change_b"),
                            margin=MARGIN_DISENTANGLE, lower_is_better=True)
    dis_flip = sum(col(disent, "projected", "flip_a")) / len(seeds)
    part2 = dis.wins and dis_flip >= 0.8

    headline = (f"edit score flip_a - change_b {fmt_mean_std(col(runs, 'supervised', 'score'))} (supervised h-space "
                f"direction; flip_a {fmt_mean_std(col(runs, 'supervised', 'flip_a'))}, change_b "
                f"{fmt_mean_std(col(runs, 'supervised', 'change_b'))}) vs "
                f"{fmt_mean_std(col(runs, 'random', 'score'))} (random direction, same norms), gain "
                f"{cmp.diff_mean:.3f} ± {cmp.diff_se:.3f} SE; correlated attributes: change_b "
                f"{fmt_mean_std(col(disent, 'projected', 'change_b'))} (projected) vs "
                f"{fmt_mean_std(col(disent, 'v_a', 'change_b'))} (v_a), flip_a "
                f"{fmt_mean_std(col(disent, 'projected', 'flip_a'))}; control (permuted labels) gain "
                f"{ctrl_cmp.diff_mean:.3f}")
    return ClaimResult.decide(
        part1 and part2,
        metrics={"runs": runs, "disentangle": disent, "gain": cmp.as_metrics(), "disentangle_gain": dis.as_metrics(),
                 "mean_flip_a": flip, "mean_change_b": change, "projected_mean_flip_a": dis_flip,
                 "part1": part1, "part2": part2, "pc1_abs_cos_with_v_a": pc_cos, "steps": steps},
        baseline={"random": [r["random"] for r in runs]},
        headline=headline, control=control,
    )
