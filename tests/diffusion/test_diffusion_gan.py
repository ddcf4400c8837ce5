"""Tests for paperzoo.diffusion.diffusion_gan (instance noise, timesteps, adaptive T, plain-GAN limit)."""

import math

import pytest
import torch

from paperzoo.diffusion.diffusion_gan import (AdaptiveT, TimeConditionedMLP, diffuse, diffusion_gan_alphas_cumprod,
                                              instance_noise_levels, sample_diffusion_timesteps, train_diffusion_gan)
from paperzoo.diffusion.mixture import mixture_on_circle
from paperzoo.diffusion.parametrization import ve_sigma
from paperzoo.transport import sliced_wasserstein


def test_alphas_cumprod_is_respaced_linear_chain():
    abar = diffusion_gan_alphas_cumprod(4, 0.1, 0.4)
    betas = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    assert abar[0] == 1
    torch.testing.assert_close(abar[1:], torch.cumprod(1 - betas, 0))
    assert diffusion_gan_alphas_cumprod(0).tolist() == [1.0]


def test_instance_noise_marginal_matches_mixture_marginal():
    gm = mixture_on_circle(4, 2, radius=1.5, std=0.2)
    abar = diffusion_gan_alphas_cumprod(200)
    alpha, sigma_t, sigma_ve = instance_noise_levels(abar, 0.5)
    t = 150
    torch.testing.assert_close(sigma_ve, ve_sigma(alpha, sigma_t))
    exact = gm.marginal(float(alpha[t]), float(sigma_t[t]))
    g = torch.Generator().manual_seed(0)
    x = gm.sample(20000, generator=g)
    y = diffuse(x, torch.full((20000,), t), abar, 0.5, generator=g)
    # the empirical moments of the diffused samples against the closed-form mixture
    torch.testing.assert_close(y.mean(0), exact.mean(), atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(y.T), exact.covariance(), atol=0.03, rtol=0)
    assert float(sliced_wasserstein(y, exact.sample(20000, generator=g), n_projections=32)) < 2e-3
    # and the VE view: y / alpha is x + sigma_ve eps
    ve = gm.marginal(1.0, float(sigma_ve[t]))
    torch.testing.assert_close(exact.covariance() / alpha[t] ** 2, ve.covariance())


def test_t_zero_leaves_samples_unchanged():
    x = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(diffuse(x, torch.zeros(5, dtype=torch.long), diffusion_gan_alphas_cumprod(10)), x)


def test_timestep_distributions():
    g = torch.Generator().manual_seed(1)
    t = sample_diffusion_timesteps(40000, 10, "priority", generator=g)
    assert 0.48 < float((t == 0).double().mean()) < 0.52
    assert not bool((t == 1).any())  # priority weight t - 1 vanishes at t = 1
    counts = torch.bincount(t[t > 0], minlength=11)[1:].double()
    expected = torch.arange(10, dtype=torch.float64) / 45
    torch.testing.assert_close(counts / counts.sum(), expected, atol=0.01, rtol=0)
    u = sample_diffusion_timesteps(40000, 10, "uniform", clean_fraction=0.0, generator=g)
    assert int(u.min()) == 1 and int(u.max()) == 10
    assert sample_diffusion_timesteps(7, 0).tolist() == [0] * 7


def test_adaptive_t_rule_on_constructed_r_d():
    s = AdaptiveT(10, 1000, d_target=0.6, rate=0.25)
    assert s.T == 10
    assert [s.update(r) for r in (0.9, 0.7, 0.61)] == [258, 505, 752]   # r_d above target: T grows
    assert s.update(1.0) == 1000 and s.update(1.0) == 1000              # clipped at t_max (p = 1)
    assert s.update(0.6) == 1000                                        # sign(0) = 0: unchanged
    assert [s.update(-0.5) for _ in range(5)] == [752, 505, 258, 10, 10]  # clipped at t_min
    fixed = AdaptiveT(0, 0, rate=0.5)
    assert fixed.update(1.0) == 0


def _nets(seed):
    torch.manual_seed(seed)
    G = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.SiLU(), torch.nn.Linear(16, 2))
    return G, TimeConditionedMLP(2, 1, 16, 1)


def test_t_zero_recovers_plain_gan():
    gm = mixture_on_circle(4, 2, dtype=torch.float32)
    data = lambda n, g: gm.sample(n, generator=g)  # noqa: E731
    out = []
    for schedule in (None, AdaptiveT(0, 0, rate=0.5)):
        G, D = _nets(3)
        h = train_diffusion_gan(G, D, data, steps=12, batch_size=32, schedule=schedule,
                                generator=torch.Generator().manual_seed(0))
        assert h == [0] * 12
        out.append(torch.cat([p.detach().flatten() for p in (*G.parameters(), *D.parameters())]))
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=0)


def test_training_adapts_t_and_stays_finite():
    gm = mixture_on_circle(4, 2, dtype=torch.float32)
    G, D = _nets(0)
    s = AdaptiveT(10, 100, d_target=-1.0, rate=0.1)  # r_d >= -1 always: T must climb
    seen = []
    h = train_diffusion_gan(G, D, lambda n, g: gm.sample(n, generator=g), steps=16, batch_size=32, schedule=s,
                            callback=lambda step, g_, d_, T: seen.append(step))
    assert seen == list(range(1, 17))
    assert h[0] == 10 and h[-1] > 10 and h == sorted(h)
    assert all(math.isfinite(float(p.detach().sum())) for p in G.parameters())


def test_error_messages():
    with pytest.raises(ValueError, match="t_max must be >= t_min"):
        AdaptiveT(10, 5)
    with pytest.raises(ValueError, match="d_target"):
        AdaptiveT(d_target=1.5)
    with pytest.raises(ValueError, match="r_d"):
        AdaptiveT().update(2.0)
    with pytest.raises(ValueError, match="T must be >= 2 for dist='priority'"):
        sample_diffusion_timesteps(3, 1)
    with pytest.raises(ValueError, match="dist"):
        sample_diffusion_timesteps(3, 5, "linear")
    with pytest.raises(ValueError, match="t must be <= T = 3"):
        diffuse(torch.zeros(2, 1, dtype=torch.float64), torch.tensor([0, 4]), diffusion_gan_alphas_cumprod(3))
    with pytest.raises(ValueError, match="noise_std"):
        instance_noise_levels(diffusion_gan_alphas_cumprod(3), -1.0)
    with pytest.raises(TypeError, match="schedule"):
        train_diffusion_gan(*_nets(0), lambda n, g: torch.zeros(n, 2), steps=1, schedule=5)
