"""Claim check for NoiseDiffusion: Correcting Noise for Image Interpolation with Diffusion Models beyond Spherical
Linear Interpolation (Zheng et al., ICLR 2024).

The paper's headline: interpolating two real images through their DDIM inversions with spherical linear
interpolation gives poor (off-distribution) results, because the inverted noise is not the Gaussian noise the model
expects; NoiseDiffusion's correction (mixing at an intermediate level with trigonometric weights, clamping extreme
values and injecting the raw images) gives interpolations that stay on the data distribution.

Mixture-scale analog, setup fixed before the claim's first run. Data: a 4-component Gaussian mixture in d = 32
(float64), means on a circle of radius 4 in the first two coordinates, diagonal covariances with variance 0.25 on
the first 8 coordinates ("texture") and 1e-3 on the other 24 ("smooth regions", where DDIM inversion's first steps
give under-dispersed, invalid noise: the paper's mechanism). The model is the mixture's exact denoiser. Schedule as
the official ControlNet/SD code: scaled-linear betas (1000 steps), DDIM with 200 steps ("leading" spacing), images
inverted to step 140 of 200 and the mix decoded back with deterministic DDIM (smoke: 30 steps, level 21). Pairs:
x0 from a uniformly drawn component, x1 from a different one, 512 pairs per seed (smoke 64); weight 0.5.

Method: :func:`~paperzoo.diffusion.noisediffusion.interpolate_images` with ``method="noisediffusion"`` at the
official defaults (gamma 0, mu_scale 1.2, clip 2). Baselines at the same level and steps: slerp and lerp of the
same latents. Metric: the mean exact log-likelihood log p_0 of the midpoints under the mixture, per seed. Reported,
not gated: the fraction of midpoints within the 0.99 chi-square ball (squared Mahalanobis distance) of their most
probable component, and the weight-0 slerp reconstruction error.

Criterion: NoiseDiffusion's mean midpoint log-likelihood exceeds slerp's and lerp's, each by a paired gain > 1 nat
and > 2 SE over 3 seeds. Control: NoiseDiffusion without its correction (gamma 0, mu_scale 1, no clamp: the bare
cos/sin mix of the latents plus the image terms that vanish with mu_scale = 1 only at the endpoints) through the same
criterion against slerp must fail.

Caveat written in advance: a log-likelihood rewards points that are pulled towards component means, so a method that
over-shrinks can score well without producing typical samples; the chi-square fraction is reported for that reason.
"""

from __future__ import annotations

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison
from paperzoo.diffusion.ddim_inversion import ddim_inversion_sigmas
from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle
from paperzoo.diffusion.noisediffusion import interpolate_images
from paperzoo.diffusion.schedules import alphas_cumprod_from_betas, betas_scaled_linear

DIM, K, TEXTURE = 32, 4, 8
LEVEL_FRACTION = 0.7  # step 140 of 200, the official scripts' cur_step
MARGIN = 1.0
CRITERION = (
    "4-component Gaussian mixture in d = 32 (means on a radius-4 circle, variance 0.25 on 8 coordinates and 1e-3 on "
    "24), exact denoiser; scaled-linear betas, 200 DDIM steps, inversion to step 140, deterministic DDIM decode; "
    "512 pairs from different components per seed, weight 0.5, 3 seeds: NoiseDiffusion (gamma 0, mu_scale 1.2, "
    "clip 2) has a mean exact midpoint log-likelihood above slerp's and above lerp's (same latents, level and steps), "
    "each by a paired gain > 1 nat and > 2 SE. Control: NoiseDiffusion without its correction (gamma 0, mu_scale 1, "
    "no clamp) against slerp through the same criterion must fail."
)


def _mixture() -> GaussianMixture:
    base = mixture_on_circle(K, DIM, radius=4.0, std=1.0)
    var = torch.full((DIM,), 1e-3, dtype=torch.float64)
    var[:TEXTURE] = 0.25
    return GaussianMixture(base.means, torch.diag(var).expand(K, DIM, DIM).clone())


def _pairs(gm: GaussianMixture, n: int, g: torch.Generator):
    k0 = torch.randint(K, (n,), generator=g)
    k1 = (k0 + 1 + torch.randint(K - 1, (n,), generator=g)) % K
    std = gm.eigenvalues[0].sqrt()  # one diagonal covariance shared by all components (eigh sorts the same way)
    draw = lambda k: gm.means[k] + torch.einsum(  # noqa: E731
        "ij,nj->ni", gm.eigenvectors[0], std * torch.randn(n, DIM, generator=g, dtype=torch.float64))
    return draw(k0), draw(k1)


def _near_fraction(gm: GaussianMixture, x: torch.Tensor, threshold: float) -> float:
    k = gm.responsibilities(x).argmax(-1)
    z = torch.einsum("nij,ni->nj", gm.eigenvectors[k], x - gm.means[k])
    m2 = (z.square() / gm.eigenvalues[k]).sum(-1)
    return float((m2 <= threshold).double().mean())


@claim(
    "noisediffusion",
    statement=("Interpolating real images through their DDIM inversions with NoiseDiffusion's noise correction keeps "
               "the interpolations on the data distribution better than spherical or linear interpolation."),
    criterion=CRITERION,
    baseline="slerp and lerp of the same DDIM-inverted latents, same level and steps",
    threads=1,
)
def midpoints_on_distribution(ctx: ClaimContext) -> ClaimResult:
    from scipy.stats import chi2

    n_steps = ctx.pick(smoke=30, full=200)
    n_pairs = ctx.pick(smoke=64, full=512)
    gm = _mixture()
    inv = ddim_inversion_sigmas(alphas_cumprod_from_betas(betas_scaled_linear(1000)).double(), n_steps)
    sigmas = inv[: round(LEVEL_FRACTION * n_steps) + 1]
    threshold = float(chi2.ppf(0.99, DIM))
    arms = {"noisediffusion": dict(method="noisediffusion"), "slerp": dict(method="slerp"),
            "lerp": dict(method="lerp"), "ablated": dict(method="noisediffusion", mu_scale=1.0, clip=None)}
    loglik = {k: [] for k in arms}
    near = {k: [] for k in arms}
    recon = []
    for seed in ctx.seeds(3):
        g = torch.Generator().manual_seed(seed)
        x0, x1 = _pairs(gm, n_pairs, g)
        for name, kw in arms.items():
            mid = interpolate_images(gm.denoise, x0, x1, sigmas, 0.5, **kw)
            loglik[name].append(float(gm.log_prob(mid).mean()))
            near[name].append(_near_fraction(gm, mid, threshold))
        back = interpolate_images(gm.denoise, x0, x1, sigmas, 0.0, method="slerp")
        recon.append(float((back - x0).square().mean()))

    vs_slerp = paired_comparison(loglik["noisediffusion"], loglik["slerp"], margin=MARGIN, lower_is_better=False)
    vs_lerp = paired_comparison(loglik["noisediffusion"], loglik["lerp"], margin=MARGIN, lower_is_better=False)
    ctrl = paired_comparison(loglik["ablated"], loglik["slerp"], margin=MARGIN, lower_is_better=False)
    control = Control("NoiseDiffusion without its correction (mu_scale 1, no clamp) against slerp", bool(ctrl.wins),
                      {"loglik": loglik["ablated"], "near_fraction": near["ablated"], "vs_slerp": ctrl.as_metrics()})
    headline = (f"midpoint log p {fmt_mean_std(loglik['noisediffusion'])} (NoiseDiffusion) vs "
                f"{fmt_mean_std(loglik['slerp'])} (slerp), {fmt_mean_std(loglik['lerp'])} (lerp); gain over slerp "
                f"{vs_slerp.diff_mean:.3g} ± {vs_slerp.diff_se:.2g} SE (margin {MARGIN}); near-component fraction "
                f"{fmt_mean_std(near['noisediffusion'])} vs {fmt_mean_std(near['slerp'])} vs "
                f"{fmt_mean_std(near['lerp'])}; {n_steps} DDIM steps, level {sigmas.shape[0] - 1}; control "
                f"(uncorrected) {fmt_mean_std(loglik['ablated'])}")
    return ClaimResult.decide(
        bool(vs_slerp.wins and vs_lerp.wins),
        metrics={"loglik": loglik, "near_fraction": near, "gain_vs_slerp": vs_slerp.as_metrics(),
                 "gain_vs_lerp": vs_lerp.as_metrics(), "slerp_weight0_reconstruction_mse": recon,
                 "n_steps": n_steps, "level_index": sigmas.shape[0] - 1, "n_pairs": n_pairs},
        baseline={"slerp": loglik["slerp"], "lerp": loglik["lerp"]},
        headline=headline, control=control,
    )
