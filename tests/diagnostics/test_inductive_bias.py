"""Tests for paperzoo.diagnostics.inductive_bias: Imhof CDF against closed forms and an independent convolution,
the Gaussian linear loss law against direct moments and sampling, the posterior against its kernel (dual) form,
the scaled ncx2 fit against known parameters, and the inductive-bias estimator against exact tails."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from paperzoo.diagnostics.inductive_bias import (
    bayesian_linear_posterior,
    fit_scaled_ncx2,
    gaussian_linear_hypothesis_losses,
    gaussian_linear_loss_distribution,
    generalized_chi2_cdf,
    estimate_inductive_bias,
    inductive_bias_bits,
    sample_hypothesis_losses,
)

F64 = torch.float64


def _t(*v):
    return torch.tensor(v, dtype=F64)


@pytest.mark.parametrize("x", [0.02, 3.0, 30.0])
def test_imhof_matches_scaled_ncx2_closed_form(x):
    # 1.5 * ncx2(4, 4 * 0.7) + 0.3, including a deep lower tail (x = 0.02 -> P ~ 1e-7)
    r = generalized_chi2_cdf(torch.full((4,), 1.5, dtype=F64), torch.full((4,), 0.7, dtype=F64), 0.3, x + 0.3)
    exact = stats.ncx2.cdf(x / 1.5, 4, 2.8)
    assert r.converged
    assert r.cdf == pytest.approx(exact, rel=1e-7, abs=1e-14)
    assert r.bits == pytest.approx(-math.log2(exact), rel=1e-7)


@pytest.mark.parametrize("x", [0.01, 2.0])
def test_imhof_matches_convolution_for_unequal_weights(x):
    # a chi2_1 + b chi2_1 (central, unequal weights): P = int_0^{x/a} f_1(u) F_1((x - a u) / b) du
    a, b = 2.0, 0.25
    conv, _ = integrate.quad(lambda u: stats.chi2.pdf(u, 1) * stats.chi2.cdf((x - a * u) / b, 1), 0, x / a,
                             epsabs=1e-15, limit=200)
    r = generalized_chi2_cdf(_t(a, b), _t(0.0, 0.0), 0.0, x)
    assert r.cdf == pytest.approx(conv, rel=1e-7)


def test_imhof_matches_monte_carlo_with_noncentrality():
    g = torch.Generator().manual_seed(0)
    w, nc = _t(3.0, 1.0, 0.2, 0.05), _t(0.5, 2.0, 0.0, 4.0)
    z = torch.randn(100_000, 4, generator=g, dtype=F64)
    q = ((z + nc.sqrt()) ** 2 * w).sum(1)
    for x in (2.0, 8.0):
        p = float((q <= x).double().mean())
        se = math.sqrt(p * (1 - p) / q.numel())
        assert abs(generalized_chi2_cdf(w, nc, 0.0, x).cdf - p) < 4 * se


def test_imhof_edge_cases():
    assert generalized_chi2_cdf(_t(1.0), _t(0.0), 2.0, 1.5).cdf == 0.0  # below the offset
    r = generalized_chi2_cdf(_t(0.0, 0.0), _t(1.0, 1.0), 0.5, 1.0)       # all weights zero: a point mass
    assert (r.cdf, r.bits) == (1.0, 0.0)


@settings(max_examples=8, deadline=None)
@given(k=st.integers(1, 6), s=st.floats(0.1, 5.0), lam=st.floats(0.0, 3.0), q=st.floats(0.01, 0.99))
def test_property_imhof_equals_scaled_ncx2(k, s, lam, q):
    x = s * stats.ncx2.ppf(q, k, k * lam) if lam > 0 else s * stats.chi2.ppf(q, k)
    r = generalized_chi2_cdf(torch.full((k,), s, dtype=F64), torch.full((k,), lam, dtype=F64), 0.0, float(x))
    assert r.cdf == pytest.approx(q, rel=1e-6)


def _linear_problem(m=30, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(m, d, generator=g, dtype=F64)
    y = torch.randn(m, generator=g, dtype=F64)
    mu = torch.randn(d, generator=g, dtype=F64)
    a = torch.randn(d, d, generator=g, dtype=F64)
    return X, y, mu, a @ a.T / d, g


def test_linear_loss_law_moments_match_direct_formulas():
    X, y, mu, cov, _ = _linear_problem()
    law = gaussian_linear_loss_distribution(X, y, mu, cov)
    m = X.shape[0]
    r = X @ mu - y
    mean_direct = (r @ r + torch.trace(X @ cov @ X.T)) / m
    M = X @ cov @ X.T / m  # loss = ||a + B z||^2, B B^T = M, a = r / sqrt(m)
    var_direct = 2 * torch.trace(M @ M) + 4 * (r @ M @ r) / m
    mean_law = law.offset + (law.weights * (1 + law.noncentrality)).sum()
    var_law = 2 * (law.weights ** 2 * (1 + 2 * law.noncentrality)).sum()
    torch.testing.assert_close(mean_law, mean_direct, rtol=1e-12, atol=0)
    torch.testing.assert_close(var_law, var_direct, rtol=1e-11, atol=0)
    # full-rank cov: the offset is the least-squares residual on the test set (the best loss in the class)
    w_ls = torch.linalg.lstsq(X, y).solution
    assert law.offset == pytest.approx(float((X @ w_ls - y).pow(2).mean()), rel=1e-10)


def test_linear_loss_law_matches_sampled_losses_rank_deficient():
    X, y, mu, _, g = _linear_problem(seed=1)
    v = torch.randn(5, 2, generator=g, dtype=F64)
    cov = v @ v.T  # rank 2: an offset above the least-squares residual
    law = gaussian_linear_loss_distribution(X, y, mu, cov)
    assert law.weights.numel() == 2
    L = gaussian_linear_hypothesis_losses(X, y, mu, cov, 60_000, g)
    assert float(L.min()) >= law.offset - 1e-12
    for x in (float(L.quantile(0.05)), float(L.median())):
        p = float((L <= x).double().mean())
        assert abs(generalized_chi2_cdf(law.weights, law.noncentrality, law.offset, x).cdf - p) < 4 * math.sqrt(
            p * (1 - p) / L.numel())


def test_posterior_matches_kernel_form():
    g = torch.Generator().manual_seed(2)
    X, y = torch.randn(4, 7, generator=g, dtype=F64), torch.randn(4, generator=g, dtype=F64)
    tau2, s2 = 0.5, 0.2
    post = bayesian_linear_posterior(X, y, tau2, s2)
    K = tau2 * X @ X.T + s2 * torch.eye(4, dtype=F64)  # GP (dual) form of the same posterior
    mean = tau2 * X.T @ torch.linalg.solve(K, y)
    cov = tau2 * torch.eye(7, dtype=F64) - tau2 ** 2 * X.T @ torch.linalg.solve(K, X)
    torch.testing.assert_close(post.mean, mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(post.cov, cov, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["mle", "moments"])
def test_fit_recovers_scaled_ncx2(method):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(3000, 5, generator=g, dtype=F64) + 0.8  # ncx2(5, 3.2)
    fit = fit_scaled_ncx2(0.7 * z.pow(2).sum(1) + 0.1, floor=0.1, method=method)
    assert fit.converged and fit.method == method and fit.floor == 0.1
    # (s, k, lambda) trade off along a ridge, so check the fitted law: its mean, its CDF and a lower-tail point
    assert fit.scale * (fit.df + fit.nc) == pytest.approx(0.7 * 8.2, rel=0.03)
    grid = 0.7 * stats.ncx2.ppf([0.01, 0.1, 0.5, 0.9, 0.99], 5, 3.2)
    fitted = stats.ncx2.cdf(grid / fit.scale, fit.df, fit.nc)
    assert max(abs(fitted - [0.01, 0.1, 0.5, 0.9, 0.99])) < 0.02
    x = 0.7 * stats.ncx2.ppf(1e-3, 5, 3.2)  # the sample's own lower tail (3 of 3000 below)
    assert abs(stats.ncx2.logcdf(x / fit.scale, fit.df, fit.nc) - math.log(1e-3)) / math.log(2) < 0.5


def test_mle_likelihood_not_below_moments():
    torch.manual_seed(4)
    L = torch.distributions.Gamma(torch.tensor(2.0, dtype=F64), torch.tensor(1.0, dtype=F64)).sample((800,))
    assert fit_scaled_ncx2(L).log_likelihood >= fit_scaled_ncx2(L, method="moments").log_likelihood - 1e-9


def test_fitted_tail_beats_naive_monte_carlo_on_deep_tail():
    g = torch.Generator().manual_seed(5)
    L = 2.0 * (torch.randn(3000, 8, generator=g, dtype=F64) + 0.5).pow(2).sum(1)  # 2 * ncx2(8, 2)
    eps = 1.0
    exact = -stats.ncx2.logcdf(eps / 2.0, 8, 2.0) / math.log(2)  # ~ 20 bits, far below 1/3000
    fitted = inductive_bias_bits(L, eps)
    naive = inductive_bias_bits(L, eps, tail_model="empirical")
    assert naive.n_below == 0 and naive.bits == math.inf and naive.fit is None
    assert fitted.empirical_bits == math.inf and math.isfinite(fitted.bits)
    assert abs(fitted.bits - exact) < 1.0
    assert fitted.probability == pytest.approx(2.0 ** -fitted.bits)


def test_empirical_bits_is_log_fraction():
    L = torch.arange(1, 101, dtype=F64)
    est = inductive_bias_bits(L, 25.0, tail_model="empirical")
    assert (est.n_below, est.n_samples) == (25, 100)
    assert est.bits == pytest.approx(2.0)


def test_generic_pipeline_matches_linear_sampler():
    X, y, mu, cov, _ = _linear_problem(seed=6)
    from paperzoo.diagnostics.inductive_bias import _cov_factor

    F = _cov_factor(cov)
    sampler = lambda n, g: mu + torch.randn(n, 5, generator=g, dtype=F64) @ F.T  # noqa: E731
    loss = lambda w: (w @ X.T - y).pow(2).mean(1)  # noqa: E731
    a = sample_hypothesis_losses(sampler, loss, 50, torch.Generator().manual_seed(9))
    b = gaussian_linear_hypothesis_losses(X, y, mu, cov, 50, torch.Generator().manual_seed(9))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    est = estimate_inductive_bias(sampler, loss, float(a.median()), 400, torch.Generator().manual_seed(1),
                         tail_model="empirical")
    assert est.n_samples == 400 and 0.5 < est.bits < 1.6


def test_error_messages():
    L = torch.arange(1, 11, dtype=F64)
    with pytest.raises(ValueError, match=r"losses must all exceed floor = 2.0, got minimum 1.0"):
        fit_scaled_ncx2(L, floor=2.0)
    with pytest.raises(ValueError, match="losses must not all be equal"):
        fit_scaled_ncx2(torch.ones(10, dtype=F64))
    with pytest.raises(ValueError, match="eps"):
        inductive_bias_bits(L, 0.0)
    with pytest.raises(ValueError, match="tail_model"):
        inductive_bias_bits(L, 1.0, tail_model="gauss")
    with pytest.raises(ValueError, match=r"test_loss_fn must return a tensor of shape \(5,\)"):
        sample_hypothesis_losses(lambda n, g: torch.zeros(n, 2), lambda w: w, 5)
    X, y, mu, _, _ = _linear_problem()
    with pytest.raises(ValueError, match="cov must be positive semi-definite"):
        gaussian_linear_loss_distribution(X, y, mu, -torch.eye(5, dtype=F64))


def test_nonconvergence_warns():
    g = torch.Generator().manual_seed(7)
    L = torch.randn(500, 3, generator=g, dtype=F64).pow(2).sum(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fit_scaled_ncx2(L, max_iter=2)
    assert not fit.converged
    assert any("did not converge in max_iter=2" in str(c.message) for c in caught)
