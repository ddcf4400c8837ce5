"""Tests for paperzoo.diagnostics.it_bounds: closed forms against torch.distributions, paperzoo.data.gaussians,
scipy quadrature and an explicit per-repetition loop; data processing as a hypothesis property; pinned errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.data.gaussians import gaussian_w2
from paperzoo.diagnostics.it_bounds import (
    generalization_gap_monte_carlo,
    layerwise_it_bounds,
    linear_gaussian_pushforwards,
    ramp_loss_expectation,
)

D = torch.float64


def _net(seed, d=5, depth=3, widths=None):
    g = torch.Generator().manual_seed(seed)
    widths = widths or [d] * depth
    dims = [d] + widths
    W = [torch.randn(dims[k + 1], dims[k], generator=g, dtype=D) / math.sqrt(dims[k]) for k in range(len(widths))]
    mu = torch.randn(d, generator=g, dtype=D)
    Q = torch.randn(d, d, generator=g, dtype=D)
    Sigma = Q @ Q.T / d + 0.5 * torch.eye(d, dtype=D)
    return W, mu, Sigma, g


def test_kl_matches_torch_distributions():
    W, mu, Sigma, g = _net(0, widths=[4, 6, 3])
    n = 7
    b = layerwise_it_bounds(W, mu, Sigma, n, noise_std=0.3, generator=g)
    p = linear_gaussian_pushforwards(W, mu, Sigma, n, noise_std=0.3)
    MVN = torch.distributions.MultivariateNormal
    for k in range(len(W) + 1):
        A, S, S1 = p.maps[k], p.test_covs[k], p.train_covs[k]
        m = A @ mu
        cov_part = torch.distributions.kl_divergence(MVN(m, S1), MVN(m, S))
        mean_part = 0.5 * torch.trace(torch.linalg.solve(S, A @ Sigma @ A.T)) / n  # E over m_hat of the Mahalanobis
        torch.testing.assert_close(b.kl[k], cov_part + mean_part, rtol=1e-10, atol=1e-12)
        # and the expectation over m_hat ~ N(mu, Sigma / n) by an explicit average of torch's KL
        draws = mu + torch.randn(4000, mu.shape[0], generator=g, dtype=D) @ torch.linalg.cholesky(Sigma).T / n ** 0.5
        mc = torch.distributions.kl_divergence(MVN(draws @ A.T, S1), MVN(m.expand(4000, -1), S))
        assert abs(float(mc.mean() - b.kl[k])) < 4 * float(mc.std()) / 4000 ** 0.5
    torch.testing.assert_close(b.kl_bound, (b.kl / 2).sqrt())


def test_w2_matches_gaussian_w2():
    W, mu, Sigma, g = _net(1, widths=[5, 4])
    n = 9
    p = linear_gaussian_pushforwards(W, mu, Sigma, n, noise_std=0.7)
    b = layerwise_it_bounds(W, mu, Sigma, n, noise_std=0.7, generator=g)
    m_hat = mu + 0.3 * torch.randn(mu.shape[0], generator=g, dtype=D)
    for k in range(len(W) + 1):
        A = p.maps[k]
        ref = gaussian_w2(A @ m_hat, p.train_covs[k], p.test_means[k], p.test_covs[k])
        ours = ((A @ (m_hat - mu)) ** 2).sum() + b.w2_cov[k]
        torch.testing.assert_close(ours, ref, rtol=1e-8, atol=1e-10)


def test_w_bound_matches_explicit_loop():
    W, mu, Sigma, _ = _net(2, widths=[5, 5, 5])
    n, gamma = 11, 0.7
    b = layerwise_it_bounds(W, mu, Sigma, n, noise_std=0.4, margin=gamma, n_draws=64,
                            generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    delta = torch.randn(64, mu.shape[0], generator=g, dtype=D) @ torch.linalg.cholesky(Sigma).T / n ** 0.5
    p = linear_gaussian_pushforwards(W, mu, Sigma, n, noise_std=0.4)
    for k in range(len(W) + 1):
        upper = torch.eye(5, dtype=D)
        for B in W[k:]:
            upper = B @ upper
        vals = []
        for r in range(64):  # explicit loop over draws of m_hat
            w = p.maps[-1] @ (mu + delta[r])
            u = w / w.norm()
            lip = float((upper.T @ u).norm()) / (2 * gamma)
            w2 = gaussian_w2(p.maps[k] @ (mu + delta[r]), p.train_covs[k], p.test_means[k], p.test_covs[k])
            vals.append(lip * float(w2.clamp_min(0).sqrt()))
        assert abs(sum(vals) / 64 - float(b.w_bound[k])) < 1e-7
    assert b.funnel_layer == int(b.w_bound.argmin())


def test_noiseless_kl_is_constant_rank_formula():
    W, mu, Sigma, g = _net(3, widths=[5, 5, 2, 2])
    n = 13
    b = layerwise_it_bounds(W, mu, Sigma, n, noise_std=0.0, generator=g)
    ranks = torch.tensor([5, 5, 5, 2, 2], dtype=D)
    torch.testing.assert_close(b.kl, -0.5 * ranks * math.log(1 - 1 / n), rtol=1e-8, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), d_out=st.integers(1, 6), s=st.floats(0.0, 2.0), n=st.integers(2, 40))
def test_kl_nonincreasing_through_a_noisy_linear_layer(seed, d_out, s, n):
    W, mu, Sigma, g = _net(seed, d=4, widths=[d_out])
    W = [W[0] * (1 + 3 * torch.rand((), generator=g, dtype=D))]
    b = layerwise_it_bounds(W, mu, Sigma, n, noise_std=s, n_draws=2, generator=g)
    assert float(b.kl[1]) <= float(b.kl[0]) * (1 + 1e-9) + 1e-12
    if s > 0.05:
        assert float(b.kl[1]) < float(b.kl[0])


def test_ramp_expectation_matches_quadrature():
    scipy_integrate = pytest.importorskip("scipy.integrate")
    from scipy.stats import norm

    a = torch.tensor([-1.5, -0.2, 0.0, 0.4, 2.5], dtype=D)
    b = torch.tensor([0.3, 1.0, 2.0, 0.01, 0.8], dtype=D)
    gamma = 0.6
    ours = ramp_loss_expectation(a, b, gamma)
    for i in range(5):
        f = lambda m: min(max((gamma - m) / (2 * gamma), 0.0), 1.0) * norm.pdf(m, float(a[i]), float(b[i]))
        lo, hi = float(a[i]) - 12 * float(b[i]), float(a[i]) + 12 * float(b[i])
        ref = scipy_integrate.quad(f, lo, hi, points=[-gamma, gamma], limit=200)[0]
        assert abs(float(ours[i]) - ref) < 1e-8
    point = ramp_loss_expectation(a, torch.zeros_like(a), gamma)
    torch.testing.assert_close(point, ((gamma - a) / (2 * gamma)).clamp(0, 1))


def test_gap_estimator_matches_per_repetition_loop_and_is_bounded():
    W, mu, Sigma, _ = _net(4, widths=[5, 5])
    n, s, gamma = 10, 0.5, 1.0
    est = generalization_gap_monte_carlo(W, mu, Sigma, n, noise_std=s, margin=gamma, n_repeats=30,
                                         generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    Z = mu + torch.randn(30, n, 5, generator=g, dtype=D) @ torch.linalg.cholesky(Sigma).T
    p = linear_gaussian_pushforwards(W, mu, Sigma, n, noise_std=s)
    A, S, C = p.maps[-1], p.test_covs[-1], p.noise_covs[-1]
    gaps = []
    for r in range(30):
        w = A @ Z[r].mean(0)
        u = w / w.norm()
        train = sum(float(ramp_loss_expectation(u @ A @ Z[r, i], (u @ C @ u).sqrt(), gamma)) for i in range(n)) / n
        test = float(ramp_loss_expectation(u @ A @ mu, (u @ S @ u).sqrt(), gamma))
        gaps.append(test - train)
    torch.testing.assert_close(est.gaps, torch.tensor(gaps, dtype=D), rtol=1e-10, atol=1e-12)
    # the training risk with the noise averaged in closed form agrees with sampling the noise
    big = generalization_gap_monte_carlo(W, mu, Sigma, n, noise_std=s, margin=gamma, n_repeats=400,
                                         generator=torch.Generator().manual_seed(1))
    b = layerwise_it_bounds(W, mu, Sigma, n, noise_std=s, margin=gamma, n_draws=400,
                            generator=torch.Generator().manual_seed(2))
    assert float(big.gap) > 0
    assert bool((b.kl_bound >= big.gap - 2 * big.se).all()) and bool((b.w_bound >= big.gap - 2 * big.se).all())


def test_float32_runs():
    W, mu, Sigma, g = _net(5)
    b = layerwise_it_bounds([w.float() for w in W], mu.float(), Sigma.float(), 20, generator=g)
    assert b.kl.dtype == torch.float32 and bool(torch.isfinite(b.w_bound).all())


def test_errors_pinned():
    W, mu, Sigma, _ = _net(6, widths=[4, 3])
    with pytest.raises(ValueError, match=r"weights\[1\] must have 4 columns \(the width of the layer below\), "
                                         r"got shape \(3, 5\)"):
        layerwise_it_bounds([W[0], torch.randn(3, 5, dtype=D)], mu, Sigma, 10)
    with pytest.raises(ValueError, match=r"Sigma must be positive definite, got smallest eigenvalue"):
        linear_gaussian_pushforwards(W, mu, torch.zeros(5, 5, dtype=D), 10)
    with pytest.raises(ValueError, match=r"n must be >= 2, got 1"):
        layerwise_it_bounds(W, mu, Sigma, 1)
    with pytest.raises(ValueError, match=r"noise_std must be >= 0.0, got -0.1"):
        generalization_gap_monte_carlo(W, mu, Sigma, 10, noise_std=-0.1)
    with pytest.raises(ValueError, match=r"margin must be > 0.0, got 0.0"):
        layerwise_it_bounds(W, mu, Sigma, 10, margin=0.0)
    with pytest.raises(ValueError, match=r"weights\[0\] must be a matrix \(d_out, d_in\), got shape \(5,\)"):
        layerwise_it_bounds([torch.randn(5, dtype=D)], mu, Sigma, 10)
