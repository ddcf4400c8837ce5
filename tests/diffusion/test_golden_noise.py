"""Golden noise: the re-denoise transform in closed form on Gaussians, identity for equal guidance (to second order in
the step), the first-order shift, diffusers' DDIM step and DDIM inverse step, the NPNet and its training, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.golden_noise import NoisePromptNet, golden_noise, re_denoise, select_pairs, train_npnet
from paperzoo.diffusion.guidance import class_conditional, classifier_free_guidance
from paperzoo.diffusion.mixture import GaussianMixture
from paperzoo.diffusion.schedules import alphas_cumprod_from_betas, betas_scaled_linear, sigmas_from_alphas_cumprod

D = torch.float64


def _two_gaussians(s=1.0):
    gm = GaussianMixture(torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=D), (s ** 2 * torch.eye(2, dtype=D)).repeat(2, 1, 1))
    return gm, class_conditional(gm, [0, 1])


def _gaussian_denoiser(mu, s2):
    def model(x, sigma):
        a = s2 / (s2 + sigma.view(-1, 1) ** 2)
        return mu + a * (x - mu)
    return model


def test_single_gaussian_closed_form():
    # D(x, s) = mu + a(s)(x - mu), a = s2/(s2 + s^2): both Euler steps are affine, x' - mu = k (x - mu) with
    # k = (1 - h(1 - a0)/s0)(1 + h(1 - a1)/s1), h = s0 - s1
    mu, s2 = torch.tensor([0.5, -2.0], dtype=D), 0.7
    model = _gaussian_denoiser(mu, s2)
    sig = torch.tensor([13.0, 11.6], dtype=D)
    x = sig[0] * torch.randn(7, 2, generator=torch.Generator().manual_seed(0), dtype=D)
    h = sig[0] - sig[1]
    a0, a1 = s2 / (s2 + sig[0] ** 2), s2 / (s2 + sig[1] ** 2)
    k = (1 - h * (1 - a0) / sig[0]) * (1 + h * (1 - a1) / sig[1])
    torch.testing.assert_close(re_denoise(model, model, x, sig), mu + k * (x - mu), rtol=1e-12, atol=1e-12)


@settings(max_examples=10, deadline=None)
@given(s0=st.floats(1.0, 50.0), ratio=st.floats(0.5, 0.99), w=st.floats(0.0, 8.0))
def test_equal_guidance_is_identity_to_second_order(s0, ratio, w):
    # equal scales down and up: only discretisation error, O(h^2); halving h must cut it by about 4
    gm, (c0, _) = _two_gaussians()
    x = s0 * torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=D)

    def err(r):
        sig = torch.tensor([s0, s0 * r], dtype=D)
        return float((golden_noise(c0.denoise, gm.denoise, x, sig, denoise_scale=w, inversion_scale=w) - x)
                     .abs().max())

    e1, e2 = err(ratio), err(1 - (1 - ratio) / 2)
    assert e1 <= 10 * (1 - ratio) ** 2 * float(x.abs().max()) + 1e-12
    assert e2 <= 0.3 * e1 + 1e-12


def test_different_guidance_shift_is_first_order_in_the_step():
    # x' - x ~ h (w_l - w_w)(D_c - D_u)(x, s0)/s0 to relative O(h)
    gm, (c0, _) = _two_gaussians()
    s0 = 13.0
    x = s0 * torch.randn(200, 2, generator=torch.Generator().manual_seed(2), dtype=D)
    rel = []
    for h in (0.4, 0.2):
        sig = torch.tensor([s0, s0 - h], dtype=D)
        shift = golden_noise(c0.denoise, gm.denoise, x, sig) - x
        s = torch.full((200,), s0, dtype=D)
        pred = h * (5.5 - 1.0) * (c0.denoise(x, s) - gm.denoise(x, s)) / s0
        rel.append(float((shift - pred).norm() / pred.norm()))
    assert rel[0] < 0.1 and rel[1] < 0.6 * rel[0]


def test_matches_diffusers_ddim_step_and_inverse_step():
    diffusers = pytest.importorskip("diffusers")
    betas = betas_scaled_linear().double()
    ac = alphas_cumprod_from_betas(betas)
    sig_all = sigmas_from_alphas_cumprod(ac)
    kw = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
              clip_sample=False, steps_offset=1)
    down = diffusers.DDIMScheduler(**kw, set_alpha_to_one=False)
    up = diffusers.DDIMInverseScheduler(**kw)
    for sch in (down, up):
        sch.alphas_cumprod = ac.clone()
        sch.set_timesteps(50)
    t0, t1 = int(down.timesteps[0]), int(down.timesteps[1])
    assert (t0, t1) == (981, 961)
    gm, (c0, _) = _two_gaussians()
    cond, uncond = c0.denoise, gm.denoise
    sig = torch.stack([sig_all[t0], sig_all[t1]])
    eps0 = torch.randn(9, 2, generator=torch.Generator().manual_seed(3), dtype=D)
    x_vp = eps0.clone()

    def eps_of(model, x_vp, s):
        x_ve = x_vp * (1 + s ** 2).sqrt()
        return (x_ve - model(x_ve, s * torch.ones(x_ve.shape[0], dtype=D))) / s

    x1 = down.step(eps_of(classifier_free_guidance(cond, uncond, 5.5), x_vp, sig[0]), t0, x_vp, eta=0.0).prev_sample
    x2 = up.step(eps_of(classifier_free_guidance(cond, uncond, 1.0), x1, sig[1]), t0, x1).prev_sample
    ours = golden_noise(cond, uncond, x_vp * (1 + sig[0] ** 2).sqrt(), sig) / (1 + sig[0] ** 2).sqrt()
    torch.testing.assert_close(ours, x2, rtol=1e-10, atol=1e-10)


def test_npnet_starts_at_identity_and_learns_an_affine_map():
    g = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    net = NoisePromptNet(2, 2, hidden=32).double()
    eps = torch.randn(512, 2, generator=g, dtype=D)
    labels = torch.arange(512) % 2
    torch.testing.assert_close(net(eps, labels), eps)
    shift = torch.tensor([[0.1, 0.0], [-0.1, 0.0]], dtype=D)
    golden = 1.02 * eps + shift[labels]
    hist = train_npnet(net, eps, golden, labels, steps=120, lr=1e-2, generator=g)
    assert hist.shape == (120,) and float(hist[-20:].mean()) < 0.1 * float(hist[:5].mean())
    with torch.no_grad():
        fit = float((net(eps, labels) - golden).square().sum(-1).mean())
    assert fit < 2e-3


def test_select_pairs():
    keep = select_pairs(torch.tensor([0.1, 0.5, 0.5]), torch.tensor([0.2, 0.5, 0.55]), margin=0.01)
    assert keep.tolist() == [True, False, True]


def test_errors_are_pinned():
    gm, (c0, _) = _two_gaussians()
    x = torch.zeros(3, 2, dtype=D)
    with pytest.raises(ValueError, match=r"sigmas must have shape \(2,\), got \(3,\)"):
        re_denoise(gm.denoise, gm.denoise, x, torch.tensor([3.0, 2.0, 1.0], dtype=D))
    with pytest.raises(ValueError, match="sigmas must be decreasing"):
        golden_noise(c0.denoise, gm.denoise, x, torch.tensor([2.0, 3.0], dtype=D))
    with pytest.raises(ValueError, match="sigmas must be finite and > 0"):
        golden_noise(c0.denoise, gm.denoise, x, torch.tensor([2.0, 0.0], dtype=D))
    with pytest.raises(ValueError, match=r"x must not be empty, got shape \(0, 2\)"):
        re_denoise(gm.denoise, gm.denoise, torch.zeros(0, 2, dtype=D), torch.tensor([2.0, 1.0], dtype=D))
    net = NoisePromptNet(2, 2).double()
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        net(torch.zeros(2, 2, dtype=D), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="eps must have shape"):
        net(torch.zeros(2, 3, dtype=D), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        train_npnet(net, torch.zeros(2, 2, dtype=D), torch.zeros(2, 2, dtype=D), torch.tensor([0, 3]), steps=1)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        train_npnet(net, torch.zeros(2, 2, dtype=D), torch.zeros(2, 2, dtype=D), torch.tensor([0, 1]), steps=-1)
    with pytest.raises(TypeError, match=r"noise must have the dtype of network.embedding.weight \(torch.float32\)"):
        train_npnet(NoisePromptNet(2, 2), torch.zeros(2, 2, dtype=D), torch.zeros(2, 2, dtype=D),
                    torch.tensor([0, 1]), steps=1)
