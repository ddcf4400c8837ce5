"""Improved DDPM: the Gaussian KL and variance range in closed form, the official code's numbers, diffusers'
learned-range DDPM step, the bound's exact identity on Gaussian data, the stop-gradient, pinned errors."""

from __future__ import annotations

import math

import pytest
import torch

from paperzoo.diffusion.improved_ddpm import (LearnedVarianceMLP, ddpm_variance_range, ddpm_variance_step,
                                              gaussian_kl, hybrid_loss, interpolated_log_variance,
                                              sample_ddpm_variance, vlb_bound, vlb_term)
from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle
from paperzoo.diffusion.samplers import SamplerContext, sample_ddpm
from paperzoo.diffusion.schedules import (alphas_cumprod_from_betas, append_zero, betas_cosine, discrete_timesteps,
                                          sigmas_from_alphas_cumprod)

D = torch.float64


def test_gaussian_kl_equals_torch_distributions():
    g = torch.Generator().manual_seed(0)
    m1, m2, l1, l2 = (torch.randn(50, generator=g, dtype=D) for _ in range(4))
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(m1, (0.5 * l1).exp()),
                                                 torch.distributions.Normal(m2, (0.5 * l2).exp()))
    torch.testing.assert_close(gaussian_kl(m1, l1, m2, l2), expected)


def test_variance_range_is_the_vp_beta_and_beta_tilde_in_ve_units():
    betas = betas_cosine(50)
    abar = alphas_cumprod_from_betas(betas)
    sig = sigmas_from_alphas_cumprod(abar)
    beta_tilde_vp = betas[1:] * (1 - abar[:-1]) / (1 - abar[1:])
    bt, b = ddpm_variance_range(sig[1:], sig[:-1])
    torch.testing.assert_close(bt * abar[:-1], beta_tilde_vp)
    torch.testing.assert_close(b * abar[:-1], betas[1:])
    # respaced: the variances of the jump t -> s are those of the respaced betas 1 - abar_t / abar_s
    bt, b = ddpm_variance_range(sig[40], sig[10])
    beta = 1 - abar[40] / abar[10]
    torch.testing.assert_close(b * abar[10], beta)
    torch.testing.assert_close(bt * abar[10], beta * (1 - abar[10]) / (1 - abar[40]))


# openai/improved-diffusion @ 1bc7bbbdc414d83d4abf2ad8cc1446dc36c4e4d5, improved_diffusion/gaussian_diffusion.py
# (GaussianDiffusion with get_named_beta_schedule("cosine", 20), EPSILON mean, LEARNED_RANGE variance): for the VP
# states below, timesteps t and model output (eps, raw v), _vb_terms_bpd(clip_denoised=False)["output"] (bits;
# all t > 0, so KL terms) and p_mean_variance's log_variance and mean (official float32 extraction).
# respace.py: space_timesteps(1000, "10") and space_timesteps(100, "7").
OFFICIAL = {
    "x0": [[0.3, -0.5], [1.0, 0.2], [-0.7, 0.9]],
    "xt": [[0.1, -0.2], [0.5, 0.8], [-1.2, 0.4]],
    "out": [[0.2, -0.1, 0.5, -0.3], [0.4, 0.3, -0.8, 0.1], [-0.6, 0.2, 0.0, 0.9]],
    "t": [3, 10, 19],
    "kl_bits": [0.3651181875920018, 0.08769406198234857, 143.46273964570398],
    "log_variance": [[-3.2422280311584473, -3.45665864944458], [-1.9797975063323974, -1.9156627774238586],
                     [-0.004036509897559881, -0.0013041012454777959]],
    "mean": [[0.07358510518457138, -0.19026026684859174], [0.45504674646440063, 0.8041714187279021],
             [-18.992580456941504, 6.330860152313835]],
    "space_1000_10": [0, 111, 222, 333, 444, 555, 666, 777, 888, 999],
    "space_100_7": [0, 16, 33, 50, 66, 82, 99],
}


def _official_case():
    abar = alphas_cumprod_from_betas(betas_cosine(20))
    sig = sigmas_from_alphas_cumprod(abar)
    t = torch.tensor(OFFICIAL["t"])
    out = torch.tensor(OFFICIAL["out"], dtype=D)
    xt = torch.tensor(OFFICIAL["xt"], dtype=D)
    x = xt / abar[t].sqrt()[:, None]                       # the VE state
    s, sn = sig[t], sig[t - 1]
    denoised = x - s[:, None] * out[:, :2]
    return abar, t, x, s, sn, denoised, (out[:, 2:] + 1) / 2


def test_vlb_terms_and_variances_match_the_official_code():
    abar, t, x, s, sn, denoised, v = _official_case()
    x0 = torch.tensor(OFFICIAL["x0"], dtype=D)
    kl = vlb_term(x0, x, denoised, v, s, sn, min_variance=1.0)
    torch.testing.assert_close(kl, torch.tensor(OFFICIAL["kl_bits"], dtype=D) * math.log(2), rtol=1e-5, atol=1e-6)
    log_var_vp = interpolated_log_variance(v, s[:, None], sn[:, None]) + abar[t - 1].log()[:, None]
    torch.testing.assert_close(log_var_vp, torch.tensor(OFFICIAL["log_variance"], dtype=D), rtol=1e-5, atol=1e-6)
    ctx = SamplerContext(lambda a, b: a, s, 0, None)
    for i in range(3):  # the step's mean: sigma_next = 0 would skip the noise, so read the mean with v = 0 noise off
        step = ddpm_variance_step(lambda a, b, i=i: v[i:i + 1])
        mean = step(x[i:i + 1], s[i], sn[i], denoised[i:i + 1], _NoNoise(ctx))
        torch.testing.assert_close(mean[0] * abar[t[i] - 1].sqrt(), torch.tensor(OFFICIAL["mean"][i], dtype=D),
                                   rtol=1e-5, atol=1e-5)


class _NoNoise:
    def __init__(self, ctx):
        self.ctx = ctx

    def noise(self, x):
        return torch.zeros_like(x)


def test_respacing_is_the_official_space_timesteps():
    assert discrete_timesteps(1000, 10, "linspace").flip(0).tolist() == OFFICIAL["space_1000_10"]
    assert discrete_timesteps(100, 7, "linspace").flip(0).tolist() == OFFICIAL["space_100_7"]


def test_learned_range_step_equals_diffusers():
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                    variance_type="learned_range", clip_sample=False)
    sched.set_timesteps(20)
    abar = sched.alphas_cumprod.double()
    sig = sigmas_from_alphas_cumprod(abar)
    g = torch.Generator().manual_seed(1)
    x_vp = torch.randn(6, 3, generator=g, dtype=D)
    for t in sched.timesteps.tolist()[:-1]:
        prev = sched.previous_timestep(t)
        out = torch.randn(6, 6, generator=g, dtype=D)
        ref = sched.step(out.float(), t, x_vp.float(), generator=torch.Generator().manual_seed(t)).prev_sample
        x = x_vp / abar[t].sqrt()
        denoised = x - sig[t] * out[:, :3]
        step = ddpm_variance_step(lambda a, b: ((out[:, 3:] + 1) / 2).float())
        ctx = SamplerContext(lambda a, b: a, sig, 0, torch.Generator().manual_seed(t))
        ours = step(x.float(), sig[t].float(), sig[prev].float(), denoised.float(), ctx) * abar[prev].sqrt().float()
        torch.testing.assert_close(ours, ref, rtol=2e-4, atol=2e-4)
        x_vp = ref.double()


def test_fixed_small_is_sample_ddpm():
    gm = mixture_on_circle(3, 2, radius=2.0, std=0.3, dtype=D)
    sig = sigmas_from_alphas_cumprod(alphas_cumprod_from_betas(betas_cosine(100)))
    sigmas = append_zero(sig[discrete_timesteps(100, 12, "linspace")])
    x = sigmas[0] * torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=D)
    a = sample_ddpm_variance(gm.denoise, x, sigmas, variance="small", generator=torch.Generator().manual_seed(3))
    b = sample_ddpm(gm.denoise, x, sigmas, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


def test_bound_on_gaussian_data_with_the_exact_reverse_is_entropy_plus_prior_kl():
    # One Gaussian: q(x_{t-1} | x_t) is Gaussian with mean E[mu_tilde | x_t] (the exact denoiser's posterior mean)
    # and variance beta_tilde + (1 - r)^2 Var[x0 | x_t]; with it the bound is H(x0) + KL(q(x_T) || N(0, I)).
    lam, m = 0.09, 0.4
    gm = GaussianMixture(torch.tensor([[m, -m]], dtype=D), lam * torch.eye(2, dtype=D)[None])
    sig = sigmas_from_alphas_cumprod(alphas_cumprod_from_betas(betas_cosine(40)))
    nexts = torch.cat([sig.new_zeros(1), sig[:-1]])
    min_var = float(ddpm_variance_range(sig[1], sig[0])[0] / (1 + sig[0] ** 2))

    def exact_v(x, s):
        k = int(torch.searchsorted(sig, s[0] * (1 - 1e-9)))
        sn, post = nexts[k], lam * s[0] ** 2 / (lam + s[0] ** 2)
        r = (sn / s[0]) ** 2
        bt, b = ddpm_variance_range(s[0], sn)
        log_small = bt.log() if sn > 0 else torch.tensor(math.log(min_var), dtype=D)
        log_target = (bt + (1 - r) ** 2 * post).log()
        return ((log_target - log_small) / (b.log() - log_small)).expand_as(x)

    x0 = gm.sample(4000, generator=torch.Generator().manual_seed(0))
    res = vlb_bound(gm.denoise, x0, sig, variance=exact_v, generator=torch.Generator().manual_seed(1))
    abar_T = 1 / (1 + sig[-1] ** 2)
    prior = 0.5 * (abar_T * (lam + m**2) + (1 - abar_T) - 1 - (abar_T * lam + 1 - abar_T).log())  # per dim
    expected = 0.5 * math.log(2 * math.pi * math.e * lam) + float(prior)
    assert abs(float(res.total.mean()) - expected) < 0.02
    small = vlb_bound(gm.denoise, x0, sig, variance="small", generator=torch.Generator().manual_seed(1))
    assert float(small.total.mean()) > float(res.total.mean()) + 0.05  # the fixed variance's bound is looser


def test_hybrid_loss_stops_the_gradient_of_the_mean():
    torch.manual_seed(0)
    net = LearnedVarianceMLP(2, 16, 2).double()
    sig = sigmas_from_alphas_cumprod(alphas_cumprod_from_betas(betas_cosine(30)))
    g = torch.Generator().manual_seed(0)
    x0, t, noise = torch.randn(32, 2, generator=g, dtype=D), torch.randint(0, 30, (32,), generator=g), \
        torch.randn(32, 2, generator=g, dtype=D)
    grads = []
    for lam in (0.0, 1e-3):
        net.zero_grad()
        hybrid_loss(net, x0, t, sig, lambda_vlb=lam, noise=noise).backward()
        grads.append(net.net[-1].weight.grad.clone())
    torch.testing.assert_close(grads[0][:2], grads[1][:2])       # eps head: L_simple only
    assert float(grads[0][2:].abs().max()) == 0 and float(grads[1][2:].abs().max()) > 0  # v head: L_vlb only


def test_learned_sampling_makes_one_network_pass_per_step():
    torch.manual_seed(0)
    net = LearnedVarianceMLP(2, 8, 1).double()
    calls = []
    net.register_forward_hook(lambda *a: calls.append(1))
    sigmas = torch.tensor([5.0, 1.0, 0.3, 0.0], dtype=D)
    x = sample_ddpm_variance(net.denoiser(), 5 * torch.randn(4, 2, dtype=D), sigmas, variance=net.variance(),
                             generator=torch.Generator().manual_seed(0))
    assert len(calls) == 3 and bool(torch.isfinite(x).all())


def test_errors_are_pinned():
    with pytest.raises(ValueError, match="sigma_next must be <= sigma"):
        ddpm_variance_range(torch.tensor(1.0, dtype=D), torch.tensor(2.0, dtype=D))
    with pytest.raises(ValueError, match="variance must be one of"):
        sample_ddpm_variance(lambda x, s: x, torch.ones(2, 2), torch.tensor([1.0, 0.0]), variance="medium")
    with pytest.raises(ValueError, match="variance must return interpolation weights"):
        sample_ddpm_variance(lambda x, s: x, torch.ones(2, 2), torch.tensor([1.0, 0.5, 0.0]),
                             variance=lambda x, s: torch.zeros(3))
    with pytest.raises(ValueError, match="sigmas must be strictly increasing"):
        vlb_bound(lambda x, s: x, torch.ones(2, 2), torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="t must index sigmas"):
        hybrid_loss(LearnedVarianceMLP(2, 4, 1), torch.ones(2, 2), torch.tensor([0, 5]), torch.tensor([0.1, 1.0]))
