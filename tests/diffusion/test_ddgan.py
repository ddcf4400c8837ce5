"""Tests for DDGAN (paperzoo.diffusion.ddgan): posterior step, schedule, R1, sampler reduction, errors."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.ddgan import (DDGANDiscriminator, DDGANGenerator, ddgan_optimizers, ddgan_sigmas,
                                      ddgan_train_step, forward_pairs, posterior_sample, r1_penalty, sample_ddgan)
from paperzoo.diffusion.mixture import mixture_on_circle
from paperzoo.diffusion.samplers import SamplerContext, ancestral_step, sample_ddpm
from paperzoo.diffusion.schedules import sigmas_from_alphas_cumprod
from paperzoo.transport import sliced_wasserstein


def _official_vp_sigmas(T, beta_min=0.1, beta_max=20.0, eps=1e-3):
    """The official code's discrete chain (betas from the VP SDE at t_j, cumulative from t_1) in VE levels."""
    t = eps + (1 - eps) * torch.arange(T + 1, dtype=torch.float64) / T
    abar = torch.exp(-0.5 * (beta_max - beta_min) * t**2 - beta_min * t)
    betas = 1 - abar[1:] / abar[:-1]
    return sigmas_from_alphas_cumprod(torch.cumprod(1 - betas, 0)).flip(0)


@pytest.mark.parametrize("T", [1, 2, 4, 8])
def test_sigmas_match_the_official_discrete_chain(T):
    s = ddgan_sigmas(T)
    assert s.shape == (T + 1,) and float(s[-1]) == 0
    torch.testing.assert_close(s[:-1], _official_vp_sigmas(T), rtol=1e-10, atol=0)


@given(st.floats(0.05, 50.0), st.floats(0.0, 0.999), st.integers(0, 2**31 - 1))
@settings(max_examples=25, deadline=None)
def test_posterior_sample_is_ddpm_ancestral_step(sigma, frac, seed):
    g = torch.Generator().manual_seed(seed)
    x, x0, noise = (torch.randn(5, 2, generator=g, dtype=torch.float64) for _ in range(3))
    sig, nxt = torch.tensor(sigma, dtype=torch.float64), torch.tensor(sigma * frac, dtype=torch.float64)
    ctx = SamplerContext(lambda a, b: a, torch.stack([sig, nxt]), 0, None)
    ctx.noise = lambda _x: noise
    want = ancestral_step(1.0)(x, sig, nxt, x0, ctx)
    got = posterior_sample(x, sig.expand(5), nxt.expand(5), x0, noise)
    torch.testing.assert_close(got, want)


def test_posterior_is_the_gaussian_posterior_closed_form():
    # q(x_next | x, x0) for x = x0 + sigma e, x_next = x0 + sigma_next e': mean x0 + r^2 (x - x0), var
    # sigma_next^2 (1 - r^2), r = sigma_next / sigma; the last step (sigma_next = 0) returns x0.
    x, x0 = torch.tensor([[2.0, -1.0]], dtype=torch.float64), torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    s, sn = torch.tensor([2.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    mean = posterior_sample(x, s, sn, x0, torch.zeros_like(x))
    torch.testing.assert_close(mean, x0 + 0.25 * (x - x0))
    one = posterior_sample(x, s, sn, x0, torch.ones_like(x)) - mean
    torch.testing.assert_close(one, torch.full_like(x, math.sqrt(1.0 * (1 - 0.25))))
    torch.testing.assert_close(posterior_sample(x, s, torch.zeros(1, dtype=torch.float64), x0, torch.ones_like(x)),
                               x0)


def test_forward_pairs_have_the_chain_marginals():
    g = torch.Generator().manual_seed(0)
    x0 = torch.zeros(20000, 1, dtype=torch.float64)
    x_prev, x = forward_pairs(x0, torch.full((20000,), 3.0, dtype=torch.float64),
                              torch.full((20000,), 1.0, dtype=torch.float64), generator=g)
    assert abs(float(x_prev.var()) - 1.0) < 0.05 and abs(float(x.var()) - 9.0) < 0.3
    assert abs(float(((x - x_prev) * x_prev).mean())) < 0.05  # independent increment


def test_r1_penalty_matches_autograd_closed_form():
    w = torch.tensor([1.5, -2.0], dtype=torch.float64)
    x = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    logits = x @ w + 0.5 * x.square().sum(-1)  # grad = w + x
    pen = r1_penalty(logits, x, gamma=0.2)
    want = 0.1 * (w + x.detach()).square().sum(-1).mean()
    torch.testing.assert_close(pen, want)
    (dw,) = torch.autograd.grad(pen, x)  # has a graph: trains D
    torch.testing.assert_close(dw, 0.2 * (w + x.detach()) / 7)


def test_sampler_reduces_to_ddpm_with_exact_x0_predictor():
    gm = mixture_on_circle(4, 2, radius=2.0, std=0.2)
    sigmas = ddgan_sigmas(50)
    n = 1000
    noise = torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = lambda x, s, z: gm.denoise(x, s)  # noqa: E731 (ignores z)
    a = sample_ddgan(exact, sigmas[0] * noise, sigmas, latent_dim=3, generator=torch.Generator().manual_seed(1))
    b = sample_ddpm(gm.denoise, sigmas[0] * noise, sigmas, generator=torch.Generator().manual_seed(2))
    ref = gm.sample(n, generator=torch.Generator().manual_seed(3))
    proj = torch.nn.functional.normalize(torch.randn(32, 2, dtype=torch.float64,
                                                     generator=torch.Generator().manual_seed(4)), dim=1)
    sw_a, sw_b = (float(sliced_wasserstein(v, ref, projections=proj)) for v in (a, b))
    few = ddgan_sigmas(2)
    sw_few = float(sliced_wasserstein(sample_ddpm(gm.denoise, few[0] * noise, few), ref, projections=proj))
    assert sw_a < 0.05 and sw_b < 0.05 and sw_few > 5 * max(sw_a, sw_b)  # few Gaussian steps fail
    # and a single step with the same noise is the DDPM step exactly (draws aside)
    x = sigmas[0] * noise[:5]
    torch.testing.assert_close(
        sample_ddgan(exact, x, sigmas[-2:], latent_dim=1), sample_ddpm(gm.denoise, x, sigmas[-2:]))


def test_train_step_updates_both_networks_and_runs_in_float64():
    torch.manual_seed(0)
    G, D = DDGANGenerator(2, 4, 16, 1).double(), DDGANDiscriminator(2, 16, 1).double()
    opt_g, opt_d = ddgan_optimizers(G, D)
    g0, d0 = [p.clone() for p in G.parameters()], [p.clone() for p in D.parameters()]
    losses = ddgan_train_step(G, D, opt_g, opt_d, torch.randn(32, 2, dtype=torch.float64), ddgan_sigmas(2),
                              generator=torch.Generator().manual_seed(0))
    assert all(math.isfinite(v) for v in losses) and losses.r1 >= 0
    assert any(not torch.equal(a, b) for a, b in zip(g0, G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, D.parameters()))
    assert all(p.requires_grad for p in D.parameters())


def test_errors():
    with pytest.raises(ValueError, match="beta_min must be <= beta_max"):
        ddgan_sigmas(4, beta_min=30.0)
    with pytest.raises(ValueError, match="T must be >= 1"):
        ddgan_sigmas(0)
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="sigma_next must be <= sigma"):
        posterior_sample(x, torch.ones(3), torch.full((3,), 2.0), x, x)
    with pytest.raises(ValueError, match="x_real must require grad"):
        r1_penalty(torch.zeros(3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="latent_dim must be given"):
        sample_ddgan(lambda a, s, z: a, torch.zeros(3, 2), ddgan_sigmas(2, dtype=torch.float32))
    G, D = DDGANGenerator(2, 4, 8, 1), DDGANDiscriminator(2, 8, 1)
    opt_g, opt_d = ddgan_optimizers(G, D)
    with pytest.raises(ValueError, match="sigmas must be decreasing"):
        ddgan_train_step(G, D, opt_g, opt_d, torch.randn(4, 2), torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(TypeError, match="opt_g must be a torch optimizer"):
        ddgan_train_step(G, D, "adam", opt_d, torch.randn(4, 2), ddgan_sigmas(2, dtype=torch.float32))
