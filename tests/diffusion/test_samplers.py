"""Samplers against k-diffusion and diffusers on the same exact denoiser, schedule and noise; accuracy on mixtures."""

from __future__ import annotations

import pytest
import torch

from paperzoo.diffusion import (ancestral_step_sizes, append_zero, discrete_timesteps, get_sigmas_karras,
                                mixture_on_circle, sample_ddim, sample_ddpm, sample_dpmpp_2m, sample_euler,
                                sample_euler_ancestral, sample_heun, sigmas_from_alphas_cumprod)
from paperzoo.transport import sliced_wasserstein
from tests.diffusion.references import k_diffusion_sampling, seeded_noise_sampler

D = torch.float64


def _problem(n=64, steps=12, seed=0):
    gm = mixture_on_circle(5, 2, radius=3.0, std=0.3, weights=torch.tensor([0.1, 0.15, 0.2, 0.25, 0.3]))
    sigmas = get_sigmas_karras(steps, 0.02, 30.0)
    x = sigmas[0] * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=D)
    return gm, sigmas, x


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m"])
def test_deterministic_samplers_match_k_diffusion(name):
    K = k_diffusion_sampling()
    gm, sigmas, x = _problem()
    ours = {"euler": sample_euler, "heun": sample_heun, "dpmpp_2m": sample_dpmpp_2m}[name]
    theirs = getattr(K, f"sample_{name}")
    torch.testing.assert_close(ours(gm.denoise, x, sigmas), theirs(gm.denoise, x, sigmas, disable=True),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["euler", "heun"])
def test_churn_matches_k_diffusion(name):
    # k-diffusion draws its churn noise from the global generator once per step; ours from `generator`.
    K = k_diffusion_sampling()
    gm, sigmas, x = _problem()
    ours = {"euler": sample_euler, "heun": sample_heun}[name]
    torch.manual_seed(11)
    theirs = getattr(K, f"sample_{name}")(gm.denoise, x, sigmas, disable=True, s_churn=2.0, s_noise=1.003)
    mine = ours(gm.denoise, x, sigmas, s_churn=2.0, s_noise=1.003, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_euler_ancestral_matches_k_diffusion(eta):
    K = k_diffusion_sampling()
    gm, sigmas, x = _problem()
    theirs = K.sample_euler_ancestral(gm.denoise, x, sigmas, disable=True, eta=eta, s_noise=0.9,
                                      noise_sampler=seeded_noise_sampler(x, 5))
    mine = sample_euler_ancestral(gm.denoise, x, sigmas, eta=eta, s_noise=0.9, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    assert ancestral_step_sizes(2.0, 1.0, eta) == pytest.approx(tuple(float(v) for v in K.get_ancestral_step(
        torch.tensor(2.0, dtype=D), torch.tensor(1.0, dtype=D), eta)), rel=1e-14)


def test_callback_sees_k_diffusions_keys_and_counts():
    gm, sigmas, x = _problem(steps=6)
    seen = []
    sample_heun(gm.denoise, x, sigmas, callback=lambda d: seen.append((d["i"], sorted(d))))
    assert [i for i, _ in seen] == list(range(6))
    assert seen[0][1] == ["denoised", "i", "sigma", "sigma_hat", "x"]


def _diffusers_scheduler(cls, spacing, offset, zero_snr, **kw):
    sched = cls(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                clip_sample=False, timestep_spacing=spacing, steps_offset=offset, rescale_betas_zero_snr=zero_snr,
                **kw)
    sched.alphas_cumprod = sched.alphas_cumprod.to(D)  # the reference in float64, like ours
    return sched


def _run_diffusers(sched, gm, n_steps, x_vp, **step_kw):
    """diffusers' sampling loop on the exact mixture, its eps-model built from the VE denoiser."""
    sched.set_timesteps(n_steps)
    ac = sched.alphas_cumprod
    sig_all = sigmas_from_alphas_cumprod(ac)
    for t in sched.timesteps:
        s = sig_all[t]
        x_ve = x_vp / ac[t].sqrt()
        eps = (x_ve - gm.denoise(x_ve, s)) / s
        x_vp = sched.step(eps, t, x_vp, **step_kw).prev_sample
    return x_vp, append_zero(sig_all[sched.timesteps]), ac[sched.timesteps[0]]


# Not "linspace": there diffusers' DDIM steps each timestep t to t - T // n, which is not the next timestep of its
# own list, so its steps do not chain (the next step starts at a level the previous one did not land on).
@pytest.mark.parametrize("spacing,offset,zero_snr", [("leading", 0, False), ("leading", 1, False),
                                                     ("trailing", 0, False), ("leading", 1, True)])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_matches_diffusers_step_by_step(spacing, offset, zero_snr, eta):
    from diffusers import DDIMScheduler

    gm, _, _ = _problem()
    sched = _diffusers_scheduler(DDIMScheduler, spacing, offset, zero_snr)
    x_vp = torch.randn(32, 2, generator=torch.Generator().manual_seed(3), dtype=D)
    theirs, sigmas, ac0 = _run_diffusers(sched, gm, 10, x_vp, eta=eta, generator=torch.Generator().manual_seed(8))
    assert torch.equal(sched.timesteps, discrete_timesteps(1000, 10, spacing, offset))
    mine = sample_ddim(gm.denoise, x_vp / ac0.sqrt(), sigmas, eta=eta, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n_steps", [10, 1000])
def test_ddpm_matches_diffusers_step_by_step(n_steps):
    from diffusers import DDPMScheduler

    gm, _, _ = _problem()
    sched = _diffusers_scheduler(DDPMScheduler, "leading", 0, False, variance_type="fixed_small")
    x_vp = torch.randn(16, 2, generator=torch.Generator().manual_seed(4), dtype=D)
    theirs, sigmas, ac0 = _run_diffusers(sched, gm, n_steps, x_vp, generator=torch.Generator().manual_seed(9))
    mine = sample_ddpm(gm.denoise, x_vp / ac0.sqrt(), sigmas, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(mine, theirs, rtol=1e-8, atol=1e-8)


def test_discrete_timesteps_match_diffusers_for_every_spacing():
    from diffusers import DDIMScheduler

    for spacing in ("leading", "trailing", "linspace"):
        for offset in (0, 1):
            for n in (1, 7, 10, 50, 999, 1000):
                if (spacing != "leading" and offset) or (offset and n == 1000):
                    continue  # diffusers would index step 1000 of 1000
                sched = DDIMScheduler(timestep_spacing=spacing, steps_offset=offset)
                sched.set_timesteps(n)
                assert torch.equal(sched.timesteps, discrete_timesteps(1000, n, spacing, offset)), (spacing, n)


@pytest.mark.parametrize("name,sampler,steps,tol", [("heun", sample_heun, 16, 0.08),
                                                    ("dpmpp_2m", sample_dpmpp_2m, 16, 0.08),
                                                    ("euler", sample_euler, 64, 0.1)])
def test_samplers_reach_the_exact_target(name, sampler, steps, tol):
    gm, sigmas, x = _problem(n=4000, steps=steps)
    samples = sampler(gm.denoise, x, sigmas)
    ref = gm.sample(4000, generator=torch.Generator().manual_seed(1))
    sw = float(sliced_wasserstein(samples, ref, n_projections=64, generator=torch.Generator().manual_seed(0)))
    floor = float(sliced_wasserstein(gm.sample(4000, generator=torch.Generator().manual_seed(2)), ref,
                                     n_projections=64, generator=torch.Generator().manual_seed(0)))
    assert sw < floor + tol, (sw, floor)
    torch.testing.assert_close(gm.mode_weights(samples), gm.weights, atol=0.03, rtol=0)


def test_bad_input():
    gm, sigmas, x = _problem()
    with pytest.raises(ValueError, match="sigmas must be nonincreasing"):
        sample_euler(gm.denoise, x, torch.tensor([1.0, 2.0, 0.5, 0.0], dtype=D))
    with pytest.raises(ValueError, match=r"an increasing sigmas \(an inversion\) must be finite and start > 0"):
        sample_euler(gm.denoise, x, sigmas.flip(0))
    with pytest.raises(ValueError, match="sigmas must be > 0 except the last entry"):
        sample_euler(gm.denoise, x, torch.tensor([1.0, 0.0, 0.0], dtype=D))
    with pytest.raises(ValueError, match="model must return a denoised tensor of the shape of x"):
        sample_heun(lambda x, s: x[:, :1], x, sigmas)
    with pytest.raises(ValueError, match="eta must be <= 1.0"):
        sample_ddim(gm.denoise, x, sigmas, eta=2.0)
    with pytest.raises(TypeError, match="model must be callable"):
        sample_dpmpp_2m(None, x, sigmas)
