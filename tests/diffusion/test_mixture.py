"""GaussianMixture: score = autograd of log_prob, denoiser = Tweedie and Monte Carlo, marginals, the posterior."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.data.gaussians import random_spd
from paperzoo.diffusion import GaussianMixture, mixture_on_circle

D = torch.float64


def _mixture(seed=0, K=3, d=2):
    g = torch.Generator().manual_seed(seed)
    means = 2 * torch.randn(K, d, generator=g, dtype=D)
    covs = torch.stack([random_spd(d, low=0.1, high=0.8, generator=g) for _ in range(K)])
    weights = torch.rand(K, generator=g, dtype=D) + 0.2
    return GaussianMixture(means, covs, weights)


def _gaussian_log_prob(x, mean, cov):
    return torch.distributions.MultivariateNormal(mean, cov).log_prob(x)


def test_log_prob_matches_torch_distributions_at_every_level():
    gm = _mixture()
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(1), dtype=D)
    for sigma in (0.0, 0.3, 5.0):
        covs = gm.covs + sigma**2 * torch.eye(2, dtype=D)
        ref = torch.logsumexp(torch.stack([gm.weights[k].log() + _gaussian_log_prob(x, gm.means[k], covs[k])
                                           for k in range(3)]), 0)
        torch.testing.assert_close(gm.log_prob(x, sigma), ref, rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), sigma=st.floats(0.0, 20.0), d=st.integers(1, 4))
def test_score_is_the_gradient_of_log_prob(seed, sigma, d):
    gm = _mixture(seed, K=3, d=d)
    x = (3 * torch.randn(5, d, generator=torch.Generator().manual_seed(seed + 1), dtype=D)).requires_grad_(True)
    grad, = torch.autograd.grad(gm.log_prob(x, sigma).sum(), x)
    torch.testing.assert_close(gm.score(x.detach(), sigma), grad, rtol=1e-9, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), sigma=st.floats(1e-3, 50.0))
def test_denoiser_is_tweedie(seed, sigma):
    gm = _mixture(seed)
    x = (2 + sigma) * torch.randn(6, 2, generator=torch.Generator().manual_seed(seed), dtype=D)
    torch.testing.assert_close(gm.denoise(x, sigma), x + sigma**2 * gm.score(x, sigma), rtol=1e-8, atol=1e-8)


def test_denoiser_matches_monte_carlo_posterior_mean():
    # E[x0 | x] by self-normalised importance sampling over prior draws, weight N(x; x0, sigma^2 I).
    gm, sigma = _mixture(3), 0.7
    g = torch.Generator().manual_seed(0)
    x0 = gm.sample(400_000, generator=g)
    x = torch.tensor([[0.3, -0.5], [1.5, 1.0]], dtype=D)
    logw = -0.5 * ((x[:, None, :] - x0[None]) ** 2).sum(-1) / sigma**2
    w = torch.softmax(logw, dim=1)
    mc = w @ x0
    ess = 1 / (w**2).sum(1)
    se = ((w[:, :, None] * (x0[None] - mc[:, None]) ** 2).sum(1) / ess[:, None]).sqrt()
    assert bool(((gm.denoise(x, sigma) - mc).abs() < 5 * se + 1e-3).all())


def test_per_sample_levels_and_shapes():
    gm = _mixture()
    x = torch.randn(4, 5, 2, dtype=D)
    sig = torch.rand(4, 5, dtype=D) * 3
    each = torch.stack([torch.stack([gm.denoise(x[i, j], float(sig[i, j])) for j in range(5)]) for i in range(4)])
    torch.testing.assert_close(gm.denoise(x, sig), each)
    assert gm.log_prob(x, sig).shape == (4, 5) and gm.responsibilities(x).shape == (4, 5, 3)
    with pytest.raises(ValueError, match=r"sigma must broadcast against x.shape\[:-1\]"):
        gm.score(x, torch.ones(3, dtype=D))


def test_marginal_is_the_law_of_the_scaled_noisy_state():
    gm = _mixture(2)
    alpha, sigma = 0.6, 0.8
    x0 = gm.sample(200_000, generator=torch.Generator().manual_seed(1))
    xt = alpha * x0 + sigma * torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=D)
    marginal = gm.marginal(alpha, sigma)
    torch.testing.assert_close(xt.mean(0), marginal.mean(), atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(xt.T), marginal.covariance(), atol=0.03, rtol=0)
    # The same marginal read through the VE form: p_t(x) = p_{sigma/alpha}(x/alpha) / alpha^d.
    x = torch.randn(5, 2, dtype=D)
    torch.testing.assert_close(marginal.log_prob(x), gm.log_prob(x / alpha, sigma / alpha) - 2 * math.log(alpha))


def test_sample_moments_and_mode_weights():
    gm = _mixture(4)
    x, k = gm.component_samples(100_000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.mean(0), gm.mean(), atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), gm.covariance(), atol=0.05, rtol=0)
    torch.testing.assert_close(torch.bincount(k, minlength=3).to(D) / 1e5, gm.weights, atol=0.01, rtol=0)
    well_separated = mixture_on_circle(4, 2, radius=5.0, std=0.2, weights=torch.tensor([0.1, 0.2, 0.3, 0.4]))
    torch.testing.assert_close(well_separated.mode_weights(well_separated.sample(50_000)), well_separated.weights,
                               atol=0.01, rtol=0)


def test_posterior_matches_bayes_rule_on_a_grid():
    gm = _mixture(5)
    A = torch.tensor([[1.0, -0.5]], dtype=D)
    y, s = torch.tensor([0.8], dtype=D), 0.4
    post = gm.posterior(A, y, s)
    # Bayes on a fine 2-D grid: p(x | y) ∝ p(x) N(y; A x, s^2).
    u = torch.linspace(-8, 8, 801, dtype=D)
    grid = torch.stack(torch.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    log_post = gm.log_prob(grid) - 0.5 * ((grid @ A.T - y) ** 2).sum(-1) / s**2
    w = torch.softmax(log_post, 0)
    torch.testing.assert_close(post.mean(), w @ grid, atol=1e-6, rtol=0)
    centred = grid - w @ grid
    torch.testing.assert_close(post.covariance(), (w[:, None] * centred).T @ centred, atol=1e-5, rtol=0)
    log_norm = torch.logsumexp(log_post, 0) + 2 * math.log(float(u[1] - u[0]))
    torch.testing.assert_close(post.log_prob(grid[:5]), log_post[:5] - log_norm, atol=1e-6, rtol=0)


def test_bad_input():
    with pytest.raises(ValueError, match="covs must be positive definite"):
        GaussianMixture(torch.zeros(2, 2, dtype=D), torch.zeros(2, 2, 2, dtype=D))
    with pytest.raises(ValueError, match="covs must be symmetric"):
        GaussianMixture(torch.zeros(1, 2, dtype=D), torch.tensor([[[1.0, 0.5], [0.0, 1.0]]], dtype=D))
    gm = _mixture()
    with pytest.raises(ValueError, match="x must have last dimension 2"):
        gm.log_prob(torch.zeros(3, 3, dtype=D))
    with pytest.raises(TypeError, match="x must have the mixture's dtype"):
        gm.denoise(torch.zeros(3, 2), 1.0)
    with pytest.raises(ValueError, match="sigma must be >= 0.0"):
        gm.score(torch.zeros(3, 2, dtype=D), -1.0)
    with pytest.raises(ValueError, match="A must have 2 columns"):
        gm.posterior(torch.ones(1, 3, dtype=D), torch.ones(1, dtype=D), 0.1)
