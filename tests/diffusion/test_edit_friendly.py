"""Tests for paperzoo.diffusion.edit_friendly: exact reconstruction, closed-form noise-map statistics, the official
code's VP formulas (inbarhub/DDPM_inversion @ 58fc881772d34f0c24be9e34725d213731aa009d,
ddm_inversion/inversion_utils.py: sample_xts_from_x0, inversion_forward_process, get_variance; re-derived here
from reading the code), and error messages."""

import pytest
import torch

from paperzoo.diffusion.edit_friendly import (ddim_inversion, edit_friendly_inversion, noise_map_step,
                                              sample_ddpm_noise_maps)
from paperzoo.diffusion.guidance import class_conditional
from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle
from paperzoo.diffusion.samplers import ancestral_step_sizes, sample_euler
from paperzoo.diffusion.schedules import (alphas_cumprod_from_betas, betas_scaled_linear, discrete_timesteps,
                                          get_sigmas_karras, sigmas_from_alphas_cumprod)
from paperzoo.diffusion.training import MLPDenoiser

D64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _sd_sigmas(n):
    """Stable Diffusion's DDIM scheduler in VE levels: leading timesteps (offset 1), final level alphas_cumprod[0]."""
    ac = alphas_cumprod_from_betas(betas_scaled_linear(1000))
    ts = discrete_timesteps(1000, n, "leading", 1)
    sig = sigmas_from_alphas_cumprod(ac)
    return ac, ts, torch.cat([sig[ts], sig[:1]])


def test_exact_reconstruction_mixture():
    gm = mixture_on_circle(6, 2, radius=2.0, std=0.3)
    sigmas = _sd_sigmas(25)[2]
    x0 = gm.sample(64, generator=_gen(0))
    inv = edit_friendly_inversion(gm.denoise, x0, sigmas, generator=_gen(1))
    assert inv.xs.shape == (26, 64, 2) and inv.zs.shape == (25, 64, 2)
    assert torch.equal(inv.xs[-1], x0)
    seen = []
    x = sample_ddpm_noise_maps(gm.denoise, inv.xs[0], sigmas, noise_maps=inv.zs, callback=lambda d: seen.append(d["x"]))
    torch.testing.assert_close(x, x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.stack(seen), inv.xs[:-1], rtol=0, atol=1e-12)
    # T_skip: editing from an intermediate state of the chain reconstructs too.
    x = sample_ddpm_noise_maps(gm.denoise, inv.xs[9], sigmas[9:], noise_maps=inv.zs[9:])
    torch.testing.assert_close(x, x0, rtol=0, atol=1e-12)


def test_exact_reconstruction_random_network():
    torch.manual_seed(0)
    net = MLPDenoiser(3, 32, 2, prediction="eps").double()
    model = net.denoiser()
    sigmas = get_sigmas_karras(15, 0.05, 20.0)[:-1]
    x0 = torch.randn(16, 3, generator=_gen(2), dtype=D64)
    inv = edit_friendly_inversion(model, x0, sigmas, generator=_gen(3), eta=0.7)
    with torch.no_grad():
        x = sample_ddpm_noise_maps(model, inv.xs[0], sigmas, noise_maps=inv.zs, eta=0.7)
    torch.testing.assert_close(x, x0, rtol=0, atol=1e-10)


def test_final_level_zero_last_step_deterministic():
    gm = mixture_on_circle(4, 2, radius=2.0, std=0.3)
    sigmas = get_sigmas_karras(10, 0.02, 10.0)
    x0 = gm.sample(32, generator=_gen(4))
    inv = edit_friendly_inversion(gm.denoise, x0, sigmas, generator=_gen(5))
    assert torch.equal(inv.zs[-1], torch.zeros_like(x0))
    x = sample_ddpm_noise_maps(gm.denoise, inv.xs[0], sigmas, noise_maps=inv.zs)
    torch.testing.assert_close(x, gm.denoise(inv.xs[-2], sigmas[-2]), rtol=0, atol=1e-12)


def _gaussian_moments(sigmas, s2, eta=1.0):
    """Closed-form per-coordinate Var z_i and Cov(z_i, z_{i+1}) for x0 ~ N(mu, s2 I) and its exact denoiser:
    up_i z_i = (1 - g_i) u + sigma_{i+1} e_{i+1} - g_i sigma_i e_i, g_i = r_i + (1 - r_i) lam_i."""
    n = len(sigmas) - 1
    g, up = [], []
    for i in range(n):
        down, u = ancestral_step_sizes(float(sigmas[i]), float(sigmas[i + 1]), eta)
        lam = s2 / (s2 + float(sigmas[i]) ** 2)
        r = down / float(sigmas[i])
        g.append(r + (1 - r) * lam)
        up.append(u)
    # the last state is x0 itself (no noise at the final level)
    nxt = [float(sigmas[i + 1]) ** 2 if i < n - 1 else 0.0 for i in range(n)]
    var = [((1 - g[i]) ** 2 * s2 + nxt[i] + g[i] ** 2 * float(sigmas[i]) ** 2) / up[i] ** 2 for i in range(n)]
    cov = [((1 - g[i]) * (1 - g[i + 1]) * s2 - float(sigmas[i + 1]) ** 2 * g[i + 1]) / (up[i] * up[i + 1])
           for i in range(n - 1)]
    return torch.tensor(var, dtype=D64), torch.tensor(cov, dtype=D64)


def test_noise_map_statistics_closed_form():
    s2, n_pts = 0.25, 40_000
    gm = GaussianMixture(torch.tensor([[0.5, -1.0]], dtype=D64), s2 * torch.eye(2, dtype=D64)[None])
    sigmas = get_sigmas_karras(8, 0.05, 8.0)[:-1]
    x0 = gm.sample(n_pts, generator=_gen(6))
    zs = edit_friendly_inversion(gm.denoise, x0, sigmas, generator=_gen(7)).zs
    var, cov = _gaussian_moments(sigmas, s2)
    z = zs.reshape(zs.shape[0], -1)
    se = (2.0 / z.shape[1]) ** 0.5
    torch.testing.assert_close(z.var(1), var, rtol=6 * se, atol=0)
    torch.testing.assert_close((z[:-1] * z[1:]).mean(1), cov, rtol=0, atol=6 * se * var.max().sqrt() ** 2)
    # the paper's point: not standard normal: variance above 1, consecutive maps correlated (negatively here)
    assert bool((var > 1.05).all()) and bool((cov < 0).any())
    corr = cov / (var[:-1] * var[1:]).sqrt()
    assert float(corr.abs().max()) > 0.2


def test_point_mass_closed_form():
    # D = x0 exactly: Var z_i = (sigma_{i+1}^2 + down_i^2) / up_i^2 for each map, deterministic given the noises
    sigmas = get_sigmas_karras(6, 0.1, 5.0)[:-1]
    x0 = torch.tensor([[0.3, -0.2]], dtype=D64)
    noise = torch.randn(5, 1, 2, generator=_gen(8), dtype=D64)
    zs = edit_friendly_inversion(lambda x, s: x0.expand_as(x), x0, sigmas, noise=noise).zs
    for i in range(5):
        down, up = ancestral_step_sizes(float(sigmas[i]), float(sigmas[i + 1]))
        nxt = noise[i + 1] * float(sigmas[i + 1]) if i < 4 else 0 * noise[i]
        torch.testing.assert_close(zs[i], (nxt - down * noise[i]) / up, rtol=1e-12, atol=1e-12)


def test_matches_official_vp_formulas():
    """The official forward process in VP states: x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps_t, then
    pred_x0 = (x_t - sqrt(1 - ab_t) e) / sqrt(ab_t), var = (1 - ab_prev)/(1 - ab_t) (1 - ab_t/ab_prev),
    mu = sqrt(ab_prev) pred_x0 + sqrt(1 - ab_prev - eta var) e, z = (x_prev - mu)/(eta sqrt(var)); ab_prev of the
    last step is alphas_cumprod[0] (set_alpha_to_one=False); the official code then zeroes that last map and takes
    x0 itself as the VP state at that level (ours: x0 as the VE state)."""
    gm = mixture_on_circle(4, 2, radius=1.5, std=0.3)
    source, _ = class_conditional(gm, [0, 1, 0, 1])
    n = 10
    ac, ts, sigmas = _sd_sigmas(n)
    x0 = source.sample(8, generator=_gen(9))
    noise = torch.randn(n, 8, 2, generator=_gen(10), dtype=D64)
    zs = edit_friendly_inversion(source.denoise, x0, sigmas, noise=noise).zs
    abs_ = torch.cat([ac[ts], ac[:1]])
    x_vp = [abs_[i].sqrt() * x0 + (1 - abs_[i]).sqrt() * noise[i] for i in range(n)] + [x0]
    for i in range(n):
        ab, ab_prev = abs_[i], abs_[i + 1]
        x_ve = x_vp[i] / ab.sqrt()
        sig = ((1 - ab) / ab).sqrt()
        e = (x_ve - source.denoise(x_ve, sig)) / sig
        pred = (x_vp[i] - (1 - ab).sqrt() * e) / ab.sqrt()
        var = (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
        mu = ab_prev.sqrt() * pred + (1 - ab_prev - var).sqrt() * e
        official = (x_vp[i + 1] - mu) / var.sqrt()
        if i == n - 1:  # the official last state is x0 as a VP state at ab_prev, ours x0 in VE (sqrt(ab_prev) x0)
            official = official - (1 - ab_prev.sqrt()) * x0 / var.sqrt()
        torch.testing.assert_close(zs[i], official, rtol=1e-9, atol=1e-9)


def test_noise_map_step_uses_supplied_noise():
    gm = mixture_on_circle(3, 2, radius=2.0, std=0.3)
    sigmas = get_sigmas_karras(4, 0.1, 5.0)
    x = 5.0 * torch.randn(6, 2, generator=_gen(11), dtype=D64)
    zeros = torch.zeros(4, 6, 2, dtype=D64)
    # zero maps: the deterministic part only, the ancestral step with no noise
    from paperzoo.diffusion.samplers import run_sampler
    out = run_sampler(gm.denoise, x, sigmas, noise_map_step(zeros))
    assert torch.isfinite(out).all()


def test_ddim_inversion_round_trip():
    gm = mixture_on_circle(4, 2, radius=2.0, std=0.4)
    x0 = gm.sample(32, generator=_gen(12))
    errs = []
    for n in (10, 80):
        sigmas = _sd_sigmas(n)[2]
        errs.append(float((sample_euler(gm.denoise, ddim_inversion(gm.denoise, x0, sigmas), sigmas) - x0).norm(dim=1)
                          .mean()))
    assert errs[1] < errs[0] / 3 and errs[1] < 0.05


def test_errors():
    gm = mixture_on_circle(3, 2, radius=2.0, std=0.3)
    sigmas = get_sigmas_karras(4, 0.1, 5.0)
    x0 = gm.sample(5, generator=_gen(13))
    with pytest.raises(ValueError, match=r"noise must have shape \(4, 5, 2\)"):
        edit_friendly_inversion(gm.denoise, x0, sigmas, noise=torch.zeros(3, 5, 2, dtype=D64))
    with pytest.raises(ValueError, match="eta must be > 0"):
        edit_friendly_inversion(gm.denoise, x0, sigmas, eta=0.0)
    with pytest.raises(ValueError, match=r"noise_maps must have shape \(4, 5, 2\)"):
        sample_ddpm_noise_maps(gm.denoise, x0, sigmas, noise_maps=torch.zeros(4, 4, 2, dtype=D64))
    with pytest.raises(ValueError, match="sigmas must be nonincreasing"):
        ddim_inversion(gm.denoise, x0, sigmas.flip(0))
