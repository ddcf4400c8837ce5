"""Zero terminal SNR: the rescaled schedule and sampling from sigma = inf against diffusers; rescaled guidance."""

from __future__ import annotations

import ast
import inspect

import pytest
import torch

from paperzoo.diffusion import (MLPDenoiser, alphas_cumprod_from_betas, append_zero, betas_linear,
                                betas_scaled_linear, denoiser_from_prediction, discrete_timesteps,
                                mixture_on_circle, rescale_zero_terminal_snr, sample_ddim, sample_ddpm,
                                sample_dpmpp_2m, sample_euler, sample_heun, sigmas_from_alphas_cumprod)
from paperzoo.diffusion.guidance import classifier_free_guidance
from paperzoo.diffusion.zero_terminal_snr import rescaled_guidance, zero_snr_sigmas

D = torch.float64
INF = float("inf")


def _gm():
    return mixture_on_circle(4, 3, radius=2.0, std=0.4, weights=torch.tensor([0.1, 0.2, 0.3, 0.4]))


@pytest.mark.parametrize("betas", [betas_linear(1000), betas_scaled_linear(1000), betas_linear(10, 0.01, 0.3)])
def test_rescale_matches_diffusers(betas):
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr as theirs

    mine = rescale_zero_terminal_snr(betas)
    torch.testing.assert_close(mine, theirs(betas.clone()), rtol=1e-12, atol=1e-12)
    abar, old = alphas_cumprod_from_betas(mine), alphas_cumprod_from_betas(betas)
    assert float(abar[-1]) == 0.0 and float(mine[-1]) == 1.0
    torch.testing.assert_close(abar[0], old[0], rtol=1e-12, atol=0)  # the first step keeps its signal
    # sqrt(abar) is an affine image of the old one
    s, s_old = abar.sqrt(), old.sqrt()
    slope = (s[0] - s[-1]) / (s_old[0] - s_old[-1])
    torch.testing.assert_close(s, s[-1] + slope * (s_old - s_old[-1]), rtol=0, atol=1e-12)


def _v_model(gm, ac):
    """diffusers' v-prediction model on VP states from the exact VE denoiser (v = -x0 at zero SNR)."""
    sig = sigmas_from_alphas_cumprod(ac)

    def model(x_vp, t):
        a = ac[t]
        if float(a) == 0:
            return -gm.mean().expand_as(x_vp)
        x_ve = x_vp / a.sqrt()
        x0 = gm.denoise(x_ve, sig[t])
        eps = (x_ve - x0) / sig[t]
        return a.sqrt() * eps - (1 - a).sqrt() * x0

    return model


@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_ddim_from_infinity_matches_diffusers_zero_snr_trailing(eta):
    from diffusers import DDIMScheduler

    gm = _gm()
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                          beta_end=0.012, clip_sample=False, timestep_spacing="trailing", rescale_betas_zero_snr=True,
                          prediction_type="v_prediction")
    sched.alphas_cumprod = sched.alphas_cumprod.to(D)
    sched.set_timesteps(8)
    ac = sched.alphas_cumprod
    assert int(sched.timesteps[0]) == 999 and float(ac[999]) == 0.0
    model = _v_model(gm, ac)
    noise = torch.randn(64, 3, generator=torch.Generator().manual_seed(2), dtype=D)
    x, g = noise.clone(), torch.Generator().manual_seed(5)
    for t in sched.timesteps:
        x = sched.step(model(x, t), t, x, eta=eta, generator=g).prev_sample
    sigmas = append_zero(sigmas_from_alphas_cumprod(ac)[sched.timesteps])
    assert sigmas[0] == INF
    torch.testing.assert_close(sigmas, zero_snr_sigmas(8), rtol=1e-5, atol=0)  # diffusers: float32 betas
    mine = sample_ddim(gm.denoise, noise, sigmas, eta=eta, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(mine, x, rtol=1e-10, atol=1e-10)


def test_ddpm_from_infinity_matches_diffusers():
    from diffusers import DDPMScheduler

    gm = _gm()
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                          beta_end=0.012, clip_sample=False, timestep_spacing="trailing", rescale_betas_zero_snr=True,
                          prediction_type="v_prediction", variance_type="fixed_small")
    sched.alphas_cumprod = sched.alphas_cumprod.to(D)
    sched.set_timesteps(10)
    ac = sched.alphas_cumprod
    model = _v_model(gm, ac)
    noise = torch.randn(32, 3, generator=torch.Generator().manual_seed(3), dtype=D)
    x, g = noise.clone(), torch.Generator().manual_seed(7)
    for t in sched.timesteps:
        x = sched.step(model(x, t), t, x, generator=g).prev_sample
    sigmas = append_zero(sigmas_from_alphas_cumprod(ac)[sched.timesteps])
    mine = sample_ddpm(gm.denoise, noise, sigmas, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(mine, x, rtol=1e-8, atol=1e-8)


def test_every_sampler_starts_from_infinity_with_a_ddim_step():
    gm = _gm()
    sigmas = zero_snr_sigmas(12)
    noise = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=D)
    first = gm.mean() + sigmas[1] * noise  # the limit of the DDIM step from inf
    for sampler in (sample_euler, sample_heun, sample_dpmpp_2m, sample_ddim):
        seen = []
        out = sampler(gm.denoise, noise, sigmas, callback=lambda d: seen.append(d))
        assert bool(torch.isfinite(out).all())
        assert seen[0]["sigma"] == INF and torch.equal(seen[0]["x"], noise)
        torch.testing.assert_close(seen[1]["x"], first, rtol=1e-14, atol=1e-14)
    # after the first step, the rest is the sampler on the finite levels
    torch.testing.assert_close(sample_heun(gm.denoise, noise, sigmas), sample_heun(gm.denoise, first, sigmas[1:]),
                               rtol=1e-14, atol=1e-14)


def test_a_large_first_level_approaches_infinity():
    gm = _gm()
    noise = torch.randn(16, 3, generator=torch.Generator().manual_seed(1), dtype=D)
    tail = torch.tensor([5.0, 1.0, 0.2, 0.0], dtype=D)
    at_inf = sample_euler(gm.denoise, noise, torch.cat([torch.tensor([INF], dtype=D), tail]))
    big = sample_euler(gm.denoise, 1e6 * noise, torch.cat([torch.tensor([1e6], dtype=D), tail]))
    torch.testing.assert_close(at_inf, big, rtol=0, atol=1e-4)


def test_networks_denoise_at_an_infinite_level():
    torch.manual_seed(0)
    x = torch.randn(5, 3, dtype=D)
    sigma = torch.tensor([INF, 1.0, INF, 0.5, 2.0], dtype=D)
    for prediction, space in (("v", "vp"), ("flow", "flow"), ("x0", "vp")):
        net = MLPDenoiser(3, 16, 1, prediction=prediction).double()
        model = denoiser_from_prediction(net, prediction, space=space)
        out = model(x, sigma)
        finite = model(x[[1, 3, 4]], sigma[[1, 3, 4]])
        torch.testing.assert_close(out[[1, 3, 4]], finite, rtol=1e-14, atol=1e-14)
        raw = net(x[[0, 2]], sigma[[0, 2]])  # the normalized state goes in as is
        expect = {"v": -raw, "flow": x[[0, 2]] - raw, "x0": raw}[prediction]
        torch.testing.assert_close(out[[0, 2]], expect, rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match="eps-prediction network cannot denoise at an infinite level"):
        denoiser_from_prediction(lambda x, s: x, "eps")(x, sigma)
    with pytest.raises(ValueError, match="network on VE inputs cannot take an infinite level"):
        denoiser_from_prediction(lambda x, s: x, "x0")(x, sigma)


def test_exact_denoiser_at_infinity_is_the_mean():
    gm = _gm()
    x = torch.randn(4, 3, dtype=D)
    out = gm.denoise(x, torch.tensor([INF, 1.0, INF, 0.3], dtype=D))
    torch.testing.assert_close(out[[0, 2]], gm.mean().expand(2, 3), rtol=0, atol=1e-15)
    torch.testing.assert_close(out[[1, 3]], gm.denoise(x[[1, 3]], torch.tensor([1.0, 0.3], dtype=D)))
    with pytest.raises(ValueError, match="sigma must not contain NaN"):
        gm.denoise(x, torch.tensor([1.0, float("nan"), 1.0, 1.0], dtype=D))


def _diffusers_rescale_noise_cfg():
    """diffusers' ``rescale_noise_cfg``, taken from its source (its module imports transformers)."""
    import importlib.util

    spec = importlib.util.find_spec("diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion")
    source = open(spec.origin).read()
    fn = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "rescale_noise_cfg")
    namespace = {"torch": torch}
    exec(compile(ast.Module([fn], []), spec.origin, "exec"), namespace)
    return namespace["rescale_noise_cfg"]


@pytest.mark.parametrize("space", ["v", "eps", "x0"])
def test_rescaled_guidance_matches_diffusers_rescale_noise_cfg(space):
    from paperzoo.diffusion.zero_terminal_snr import _from_prediction, _to_prediction

    theirs = _diffusers_rescale_noise_cfg()
    assert "guidance_rescale" in inspect.signature(theirs).parameters
    cond_gm, uncond_gm = mixture_on_circle(2, 6, radius=2.0, std=0.3), _gm_6()
    x = 3 * torch.randn(8, 6, generator=torch.Generator().manual_seed(0), dtype=D)
    sigma = torch.linspace(0.3, 4.0, 8, dtype=D)
    s = sigma[:, None]
    pos = _to_prediction(cond_gm.denoise(x, sigma), x, s, space)
    neg = _to_prediction(uncond_gm.denoise(x, sigma), x, s, space)
    expect = _from_prediction(theirs(neg + 5.0 * (pos - neg), pos, guidance_rescale=0.7), x, s, space)
    mine = rescaled_guidance(cond_gm.denoise, uncond_gm.denoise, 5.0, 0.7, space=space)(x, sigma)
    torch.testing.assert_close(mine, expect, rtol=1e-12, atol=1e-12)
    # phi = 0 is plain classifier-free guidance
    plain = classifier_free_guidance(cond_gm.denoise, uncond_gm.denoise, 5.0)(x, sigma)
    torch.testing.assert_close(rescaled_guidance(cond_gm.denoise, uncond_gm.denoise, 5.0, 0.0, space=space)(x, sigma),
                               plain, rtol=1e-12, atol=1e-12)


def _gm_6():
    return mixture_on_circle(4, 6, radius=2.0, std=0.3)


def test_rescaled_guidance_at_phi_one_restores_the_conditional_std_and_takes_infinity():
    from paperzoo.diffusion.zero_terminal_snr import _to_prediction

    cond_gm, uncond_gm = mixture_on_circle(2, 6, radius=2.0, std=0.3), _gm_6()
    x = torch.randn(6, 6, generator=torch.Generator().manual_seed(1), dtype=D)
    sigma = torch.tensor([INF, 2.0, 1.0, INF, 0.5, 3.0], dtype=D)
    out = rescaled_guidance(cond_gm.denoise, uncond_gm.denoise, 4.0, 1.0)(x, sigma)
    assert bool(torch.isfinite(out).all())
    s = sigma[:, None]
    v_out = _to_prediction(out, x, s, "v")
    v_pos = _to_prediction(cond_gm.denoise(x, sigma), x, s, "v")
    torch.testing.assert_close(v_out.std(1), v_pos.std(1), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="space='eps' cannot rescale at an infinite level"):
        rescaled_guidance(cond_gm.denoise, uncond_gm.denoise, 4.0, space="eps")(x, sigma)


def test_bad_input():
    gm = _gm()
    x = torch.randn(4, 3, dtype=D)
    with pytest.raises(ValueError, match="sigmas may be infinite only in its first entry"):
        sample_euler(gm.denoise, x, torch.tensor([3.0, INF, 0.0], dtype=D))
    with pytest.raises(ValueError, match="sigmas must not contain NaN"):
        sample_euler(gm.denoise, x, torch.tensor([float("nan"), 1.0, 0.0], dtype=D))
    with pytest.raises(ValueError, match="betas must make the signal decay"):
        rescale_zero_terminal_snr(torch.tensor([0.1, 0.0, 0.0], dtype=D))
    with pytest.raises(ValueError, match="betas must hold at least 2 steps"):
        rescale_zero_terminal_snr(torch.tensor([0.1], dtype=D))
    with pytest.raises(ValueError, match="betas must have num_train_timesteps = 100 entries"):
        zero_snr_sigmas(10, 100, betas=betas_linear(50))
    with pytest.raises(ValueError, match="x must have at least 2 entries per sample"):
        rescaled_guidance(gm.denoise, gm.denoise, 2.0)(torch.zeros(3, 1, dtype=D), torch.ones(3, dtype=D))
    assert torch.equal(discrete_timesteps(1000, 4, "trailing"), torch.tensor([999, 749, 499, 249]))
