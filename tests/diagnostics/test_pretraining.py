"""Pretraining-then-ERM harness: EM against scikit-learn, risks against closed forms and Monte Carlo, ERM by brute force."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.pretraining import (
    GaussianMixtureFit,
    PretrainThenERM,
    erm_label_map,
    gaussian_mixture_em,
    linear_rule_risk,
    mixture_posterior,
    pretrain_then_erm,
    supervised_plugin_rule,
    two_component_bayes_error,
)


def _mixture(m, d, K, seed=0, scale=3.0, spreads=None, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    means = scale * torch.randn(K, d, generator=g, dtype=dtype)
    z = torch.randint(0, K, (m,), generator=g)
    s = torch.ones(K, dtype=dtype) if spreads is None else torch.tensor(spreads, dtype=dtype)
    X = means[z] + s[z, None] * torch.randn(m, d, generator=g, dtype=dtype)
    return X, z, means


# -- EM against scikit-learn ------------------------------------------------------------------------------------

@pytest.mark.parametrize("K, d, iters", [(2, 3, 1), (3, 4, 5), (4, 2, 30)])
def test_em_matches_sklearn_spherical_same_init(K, d, iters):
    from sklearn.mixture import GaussianMixture

    X, _, means = _mixture(400, d, K, seed=K, scale=1.5, spreads=[0.5 + 0.4 * k for k in range(K)])
    g = torch.Generator().manual_seed(7)
    means0 = means + 0.7 * torch.randn(K, d, generator=g, dtype=torch.float64)
    w0 = torch.rand(K, generator=g, dtype=torch.float64) + 0.5
    w0 = w0 / w0.sum()
    v0 = torch.rand(K, generator=g, dtype=torch.float64) + 0.5
    ref = GaussianMixture(K, covariance_type="spherical", max_iter=iters, tol=0.0, reg_covar=1e-6,
                          means_init=means0.numpy(), weights_init=w0.numpy(), precisions_init=(1 / v0).numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit(X.numpy())
        fit = gaussian_mixture_em(X, means0, weights_init=w0, variances_init=v0, max_iter=iters, tol=0.0)
    assert fit.n_iter == iters == ref.n_iter_
    np.testing.assert_allclose(fit.means.numpy(), ref.means_, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fit.weights.numpy(), ref.weights_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fit.variances.numpy(), ref.covariances_, rtol=1e-10, atol=1e-12)
    assert fit.log_likelihood == pytest.approx(ref.lower_bound_, rel=1e-10)
    # the posterior of the fit is sklearn's predict_proba
    np.testing.assert_allclose(mixture_posterior(X, fit.weights, fit.means, fit.variances).numpy(),
                               ref.predict_proba(X.numpy()), atol=1e-9)


def test_em_converges_like_sklearn_with_tolerance():
    from sklearn.mixture import GaussianMixture

    X, _, means = _mixture(600, 5, 3, seed=11, scale=2.0)
    means0 = means + 0.5
    ref = GaussianMixture(3, covariance_type="spherical", tol=1e-4, max_iter=500, means_init=means0.numpy(),
                          weights_init=np.full(3, 1 / 3), precisions_init=np.ones(3)).fit(X.numpy())
    fit = gaussian_mixture_em(X, means0, variances_init=torch.ones(3, dtype=torch.float64), max_iter=500, tol=1e-4)
    assert fit.converged and fit.n_iter == ref.n_iter_
    np.testing.assert_allclose(fit.means.numpy(), ref.means_, atol=1e-9)


def test_em_fixed_variance_is_a_fixed_point_and_ascends():
    X, _, means = _mixture(500, 4, 2, seed=3, scale=1.5)
    lls = []
    for it in range(1, 8):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = gaussian_mixture_em(X, means + 1.0, variance=1.0, max_iter=it, tol=0.0)
        assert torch.equal(fit.variances, torch.ones(2, dtype=torch.float64))
        lls.append(fit.log_likelihood)
    assert all(b >= a - 1e-12 for a, b in zip(lls, lls[1:]))  # EM never decreases the likelihood
    # the M-step at convergence reproduces the fitted means (explicit loop over components)
    fit = gaussian_mixture_em(X, means + 1.0, variance=1.0, max_iter=2000, tol=1e-14)
    r = mixture_posterior(X, fit.weights, fit.means, fit.variances)
    for k in range(2):
        manual = (r[:, k:k + 1] * X).sum(0) / r[:, k].sum()
        torch.testing.assert_close(manual, fit.means[k], rtol=1e-7, atol=1e-7)


def test_em_warns_on_non_convergence_and_float32():
    X, _, means = _mixture(200, 3, 2, seed=1, scale=0.5)
    with pytest.warns(RuntimeWarning, match=r"EM did not converge in 1 iterations .* increase max_iter or tol"):
        gaussian_mixture_em(X, means, max_iter=1, tol=0.0)
    fit = gaussian_mixture_em(X.float(), means.float(), variance=1.0, tol=1e-4)
    assert fit.means.dtype == torch.float32 and torch.isfinite(fit.means).all()


# -- closed forms -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm, sigma", [(0.3, 1.0), (1.5, 1.0), (2.0, 0.5), (4.0, 3.0)])
def test_bayes_error_symmetric_closed_form(norm, sigma):
    from scipy.stats import norm as normal

    mu = torch.zeros(6, dtype=torch.float64)
    mu[2], mu[4] = norm * 0.6, norm * 0.8
    got = two_component_bayes_error(torch.stack([-mu, mu]), sigma=sigma)
    assert got == pytest.approx(normal.cdf(-norm / sigma), rel=1e-12)


def test_linear_rule_risk_against_monte_carlo():
    g = torch.Generator().manual_seed(5)
    d = 4
    means = torch.randn(2, d, generator=g, dtype=torch.float64)
    W, c = torch.randn(2, d, generator=g, dtype=torch.float64), torch.randn(2, generator=g, dtype=torch.float64)
    w = torch.tensor([0.3, 0.7], dtype=torch.float64)
    N = 400_000
    z = (torch.rand(N, generator=g, dtype=torch.float64) < w[1]).long()
    X = means[z] + 1.7 * torch.randn(N, d, generator=g, dtype=torch.float64)
    labels = torch.tensor([1, 0])
    mc = float(((X @ W.T + c).argmax(1) != labels[z]).double().mean())
    exact = linear_rule_risk(W, c, means, labels, sigma=1.7, weights=w)
    assert exact == pytest.approx(mc, abs=4 * math.sqrt(mc * (1 - mc) / N))
    # unequal weights: the Bayes rule beats every other rule we try, and equals the MC error of the true posterior
    bayes = two_component_bayes_error(means, sigma=1.7, weights=w)
    post = mixture_posterior(X, w, means, torch.full((2,), 1.7 ** 2, dtype=torch.float64)).argmax(1)
    mc_bayes = float((post != z).double().mean())
    assert bayes == pytest.approx(mc_bayes, abs=4 * math.sqrt(mc_bayes * (1 - mc_bayes) / N))
    assert bayes <= linear_rule_risk(W, c, means, torch.tensor([0, 1]), sigma=1.7, weights=w)
    # a rule with W_1 = W_0 predicts one class: its risk is the weight of the other component
    assert linear_rule_risk(torch.zeros(2, d, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64),
                            means, torch.tensor([0, 1]), weights=w) == pytest.approx(0.3)


# -- ERM and the harness ----------------------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(st.integers(2, 4), st.integers(1, 12), st.integers(0, 10_000), st.sampled_from(["permutation", "map"]))
def test_erm_label_map_is_exact_brute_force(K, n, seed, downstream):
    g = torch.Generator().manual_seed(seed)
    L = K if downstream == "permutation" else 2
    z_hat, y = torch.randint(0, K, (n,), generator=g), torch.randint(0, L, (n,), generator=g)
    psi, err = erm_label_map(z_hat, y, K, L, downstream=downstream)
    maps = itertools.permutations(range(K)) if downstream == "permutation" else itertools.product(range(L), repeat=K)
    best = min(float((torch.tensor(p)[z_hat] != y).double().mean()) for p in maps)
    assert err == pytest.approx(best) and float((psi[z_hat] != y).double().mean()) == pytest.approx(err)
    if downstream == "permutation":
        assert sorted(psi.tolist()) == list(range(K))


def test_pretrain_then_erm_shapes_and_recovery():
    d, K = 6, 3
    X, z, means = _mixture(3000, d, K, seed=2, scale=4.0)
    perm = torch.tensor([2, 0, 1])
    out = pretrain_then_erm(X[:2950], X[2950:], perm[z[2950:]], K, variance=1.0, init="random",
                            generator=torch.Generator().manual_seed(0))
    assert isinstance(out, PretrainThenERM) and isinstance(out.fit, GaussianMixtureFit)
    assert out.fit.means.shape == (K, d) and out.fit.weights.shape == (K,) and out.fit.variances.shape == (K,)
    assert out.label_map.shape == (K,) and out.label_map.dtype == torch.int64
    assert out.weight.shape == (K, d) and out.bias.shape == (K,)
    # the linear rule predicts exactly psi(z_hat)
    z_hat = mixture_posterior(X, out.fit.weights, out.fit.means, out.fit.variances).argmax(1)
    assert torch.equal((X @ out.weight.T + out.bias).argmax(1), out.label_map[z_hat])
    assert out.labeled_error <= 0.04
    # downstream="map" with many-to-one labels: no linear rule, learned variances
    out2 = pretrain_then_erm(X[:2950], X[2950:], (z[2950:] > 0).long(), K, num_labels=2, downstream="map",
                             init="random", generator=torch.Generator().manual_seed(0))
    assert out2.weight is None and out2.bias is None and out2.label_map.shape == (K,)
    assert out2.fit.variances.shape == (K,) and not torch.allclose(out2.fit.variances, out2.fit.variances[0])


def test_two_component_pipeline_and_supervised_baseline():
    g = torch.Generator().manual_seed(4)
    d, m, n = 30, 4000, 12
    mu = torch.zeros(d, dtype=torch.float64)
    mu[0] = 2.0
    means = torch.stack([-mu, mu])
    z = torch.randint(0, 2, (m + n,), generator=g)
    z[m:] = torch.arange(n) % 2
    X = means[z] + torch.randn(m + n, d, generator=g, dtype=torch.float64)
    out = pretrain_then_erm(X[:m], X[m:], 1 - z[m:], 2, variance=1.0)
    labels = torch.tensor([1, 0])
    bayes = two_component_bayes_error(means)
    assert 0 <= linear_rule_risk(out.weight, out.bias, means, labels) - bayes < 0.01
    W, c = supervised_plugin_rule(X[m:], 1 - z[m:], 2)
    assert W.shape == (2, d) and c.shape == (2,)
    explicit = torch.stack([X[m:][(1 - z[m:]) == k].mean(0) for k in range(2)])
    torch.testing.assert_close(W, explicit)
    assert linear_rule_risk(W, c, means, labels) > bayes


# -- errors -----------------------------------------------------------------------------------------------------

def test_error_messages():
    X, z, means = _mixture(50, 3, 2, seed=0)
    with pytest.raises(ValueError, match=r"means_init must have d = 3 \(from X\) in its shape \(K, d\), got shape "
                                         r"\(2, 4\)"):
        gaussian_mixture_em(X, torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"variance must be > 0.0, got -1.0"):
        gaussian_mixture_em(X, means, variance=-1.0)
    with pytest.raises(ValueError, match=r"variances_init must be > 0 entrywise, got a minimum of -1.0"):
        gaussian_mixture_em(X, means, variances_init=torch.tensor([1.0, -1.0], dtype=torch.float64))
    with pytest.raises(TypeError, match=r"means_init must have the dtype of X \(torch.float64\), got torch.float32"):
        gaussian_mixture_em(X, means.float())
    with pytest.raises(ValueError, match=r"num_labels must equal num_components for downstream='permutation', got "
                                         r"3 and 2"):
        erm_label_map(z, z, 2, 3)
    with pytest.raises(ValueError, match=r"z_hat must have entries < num_components = 2, got 2"):
        erm_label_map(z + 1, z, 2, 2, downstream="map")
    with pytest.raises(ValueError, match=r"y must have entries < num_labels = 2, got 3"):
        erm_label_map(z, z + 2, 2, 2, downstream="map")
    with pytest.raises(ValueError, match=r"downstream must be one of \['permutation', 'map'\], got 'perm'"):
        erm_label_map(z, z, 2, 2, downstream="perm")
    with pytest.raises(ValueError, match=r"X_unlabeled must have at least num_components = 3 rows, got 2"):
        pretrain_then_erm(X[:2], X, z, 3, init="random")
    with pytest.raises(ValueError, match=r"init='spectral' needs num_components = 2, got 3; use init='random'"):
        pretrain_then_erm(X, X, z, 3)
    with pytest.raises(ValueError, match=r"y_labeled must have n = 50 \(from X_labeled\)"):
        pretrain_then_erm(X, X, z[:10], 2)
    with pytest.raises(ValueError, match=r"y must contain every label in \[0, 3\), missing \[2\]"):
        supervised_plugin_rule(X, z, 3)
    with pytest.raises(ValueError, match=r"labels must have entries <= 1, got a maximum of 2"):
        linear_rule_risk(torch.zeros(2, 3), torch.zeros(2), torch.zeros(2, 3), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"means must have shape \(2, d\), got \(3, 4\)"):
        two_component_bayes_error(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"variances must be > 0 entrywise, got a minimum of 0.0"):
        mixture_posterior(X, torch.ones(2, dtype=torch.float64), means, torch.zeros(2, dtype=torch.float64))
