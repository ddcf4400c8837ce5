"""Tests for paperzoo.diagnostics.sparse_vi: closed forms (orthogonal design, Gaussian prior), an independent
per-coordinate loop on the raw design, exact enumeration of the mean-field risk, and pinned errors."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.sparse_vi import (SpikeSlabVI, elbo_width_selection, hat_relu_features,
                                            integrated_l2_risk, spike_slab_cavi, weierstrass_target)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: intra-op threads only add contention


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _orthogonal_design(n, p, scale, seed=0):
    q, _ = torch.linalg.qr(torch.randn(n, p, generator=_gen(seed), dtype=torch.float64))
    return q * torch.as_tensor(scale, dtype=torch.float64)


def _orthogonal_log_evidence(X, y, noise_var, slab_var, pi, alpha):
    """log of the integral of p(y|w)^alpha p(w) dw when X has orthogonal columns (the integral factorizes)."""
    g = (X ** 2).sum(0).numpy()
    b = (X.T @ y).numpy()
    n = X.shape[0]
    s2 = 1.0 / (alpha * g / noise_var + 1.0 / slab_var)
    mu = s2 * alpha * b / noise_var
    log_bf = 0.5 * np.log(s2 / slab_var) + 0.5 * mu ** 2 / s2
    base = alpha * (-0.5 * n * math.log(2 * math.pi * noise_var) - 0.5 * float(y @ y) / noise_var)
    mix = np.logaddexp(math.log1p(-pi), math.log(pi) + log_bf) if pi < 1 else log_bf
    incl = 1.0 / (1.0 + (1 - pi) / pi * np.exp(-log_bf)) if pi < 1 else np.ones_like(g)
    return base + float(mix.sum()), incl, mu, s2


def test_hat_features_match_closed_form_and_partition_unity():
    x = torch.rand(300, generator=_gen(), dtype=torch.float64)
    for width in (2, 3, 7, 32):
        h = hat_relu_features(x, width)
        delta = 1.0 / (width - 1)
        t = torch.arange(width, dtype=torch.float64) * delta
        expected = torch.clamp(1 - (x[:, None] - t[None]).abs() / delta, min=0)
        torch.testing.assert_close(h, expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(h.sum(1), torch.ones(300, dtype=torch.float64), rtol=0, atol=1e-12)


def test_weierstrass_target_is_the_dyadic_cosine_sum():
    x = torch.tensor([0.0, 0.3, 0.77], dtype=torch.float64)
    expected = sum(2.0 ** (-0.4 * j) * torch.cos(math.pi * 2.0 ** j * x) for j in range(5))
    torch.testing.assert_close(weierstrass_target(x, 0.4, n_terms=5), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("pi,alpha", [(0.5, 1.0), (0.1, 1.0), (0.3, 0.6), (1.0, 1.0)])
def test_orthogonal_design_is_exact(pi, alpha):
    # Orthogonal columns: the (tempered) posterior factorizes into per-coordinate spike-and-slab mixtures, so the
    # mean-field family contains it and the ELBO equals the log evidence.
    X = _orthogonal_design(40, 6, torch.tensor([1.0, 2.0, 3.0, 0.5, 4.0, 1.5]))
    w = torch.tensor([0.0, 2.0, 0.0, -3.0, 0.1, 1.0], dtype=torch.float64)
    y = X @ w + 0.7 * torch.randn(40, generator=_gen(1), dtype=torch.float64)
    fit = spike_slab_cavi(X, y, 0.49, slab_var=4.0, prior_inclusion=pi, alpha=alpha)
    log_ev, incl, mu, s2 = _orthogonal_log_evidence(X, y, 0.49, 4.0, pi, alpha)
    assert fit.converged and fit.n_iter <= 3
    assert fit.elbo == pytest.approx(log_ev, rel=1e-12, abs=1e-9)
    np.testing.assert_allclose(fit.inclusion.numpy(), incl, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(fit.mean.numpy(), mu, rtol=1e-10)
    np.testing.assert_allclose(fit.var.numpy(), s2, rtol=1e-12)


def test_gaussian_prior_mean_is_ridge_and_elbo_below_evidence():
    from scipy.stats import multivariate_normal
    from sklearn.linear_model import Ridge

    x = torch.rand(60, generator=_gen(2), dtype=torch.float64)
    X = hat_relu_features(x, 9)
    y = weierstrass_target(x, 0.5) + 0.5 * torch.randn(60, generator=_gen(3), dtype=torch.float64)
    fit = spike_slab_cavi(X, y, 0.25, slab_var=2.0, prior_inclusion=1.0, max_iter=5000, tol=1e-15)
    ridge = Ridge(alpha=0.25 / 2.0, fit_intercept=False, solver="cholesky").fit(X.numpy(), y.numpy())
    np.testing.assert_allclose(fit.mean.numpy(), ridge.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fit.var.numpy(), 1 / ((X ** 2).sum(0).numpy() / 0.25 + 0.5), rtol=1e-12)
    assert torch.all(fit.inclusion == 1)
    cov = 0.25 * np.eye(60) + 2.0 * X.numpy() @ X.numpy().T
    log_ev = multivariate_normal(np.zeros(60), cov).logpdf(y.numpy())
    assert fit.elbo < log_ev  # correlated hats: mean field loses something, never gains
    assert fit.elbo > log_ev - 20


def _loop_reference(X, y, noise_var, slab_var, pi, sweeps):
    """Plain per-coordinate CAVI on the raw design (no Gram matrix), Python floats."""
    n, p = X.shape
    X = X.tolist()
    y = y.tolist()
    col = [[X[i][j] for i in range(n)] for j in range(p)]
    gamma, mu = [pi] * p, [0.0] * p
    for _ in range(sweeps):
        for j in range(p):
            resid = [y[i] - sum(X[i][k] * gamma[k] * mu[k] for k in range(p) if k != j) for i in range(n)]
            xx = sum(v * v for v in col[j])
            s2 = 1.0 / (xx / noise_var + 1.0 / slab_var)
            mu[j] = s2 * sum(a * r for a, r in zip(col[j], resid)) / noise_var
            z = math.log(pi / (1 - pi)) + 0.5 * math.log(s2 / slab_var) + mu[j] ** 2 / (2 * s2)
            gamma[j] = 1 / (1 + math.exp(-z))
    return gamma, mu


def test_matches_per_coordinate_loop_on_correlated_design():
    x = torch.rand(25, generator=_gen(4), dtype=torch.float64)
    X = hat_relu_features(x, 6)
    y = torch.sin(6 * x) + 0.3 * torch.randn(25, generator=_gen(5), dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fit = spike_slab_cavi(X, y, 0.09, slab_var=3.0, prior_inclusion=0.4, max_iter=4, tol=0.0)
    gamma, mu = _loop_reference(X, y, 0.09, 3.0, 0.4, 4)
    np.testing.assert_allclose(fit.inclusion.numpy(), gamma, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(fit.mean.numpy(), mu, rtol=1e-10, atol=1e-12)


def test_elbo_never_decreases():
    x = torch.rand(120, generator=_gen(6), dtype=torch.float64)
    X = hat_relu_features(x, 24)
    y = weierstrass_target(x, 0.5) + torch.randn(120, generator=_gen(7), dtype=torch.float64)
    fit = spike_slab_cavi(X, y, 1.0, prior_inclusion=0.2, tol=1e-14, max_iter=500)
    assert fit.converged
    d = torch.diff(fit.elbo_trace)
    assert torch.all(d >= -1e-9 * fit.elbo_trace.abs()[1:])


def test_integrated_risk_matches_support_enumeration():
    X = hat_relu_features(torch.rand(30, generator=_gen(8), dtype=torch.float64), 3)
    y = torch.randn(30, generator=_gen(9), dtype=torch.float64)
    fit = spike_slab_cavi(X, y, 1.0, slab_var=1.0, prior_inclusion=0.5)
    Phi = hat_relu_features(torch.linspace(0, 1, 11, dtype=torch.float64), 3)
    f0 = torch.cos(torch.linspace(0, 1, 11, dtype=torch.float64))
    g, m, v = fit.inclusion.tolist(), fit.mean.tolist(), fit.var.tolist()
    total = 0.0
    for support in itertools.product((0, 1), repeat=3):
        prob = math.prod(g[j] if s else 1 - g[j] for j, s in enumerate(support))
        for i in range(11):
            pred = sum(Phi[i, j].item() * m[j] for j in range(3) if support[j])
            spread = sum(Phi[i, j].item() ** 2 * v[j] for j in range(3) if support[j])
            total += prob * ((pred - f0[i].item()) ** 2 + spread) / 11
    assert float(integrated_l2_risk(fit, Phi, f0)) == pytest.approx(total, rel=1e-12)


def test_width_selection_is_argmax_of_separate_fits():
    x = torch.rand(150, generator=_gen(10), dtype=torch.float64)
    y = weierstrass_target(x, 0.5) + torch.randn(150, generator=_gen(11), dtype=torch.float64)
    widths = [2, 4, 8, 16, 32]
    sel = elbo_width_selection(x, y, widths, 1.0)
    elbos = [spike_slab_cavi(hat_relu_features(x, k), y, 1.0).elbo for k in widths]
    assert sel.elbos.tolist() == pytest.approx(elbos, rel=1e-12)
    assert sel.width == widths[int(np.argmax(elbos))]
    assert sel.fit.mean.shape == (sel.width,)


def test_float32_follows_input_dtype():
    x = torch.rand(50, generator=_gen(12))
    fit = spike_slab_cavi(hat_relu_features(x, 5), torch.sin(3 * x), 0.1)
    assert fit.mean.dtype == torch.float32 and fit.inclusion.dtype == torch.float32
    assert torch.isfinite(fit.mean).all()


def test_nonconvergence_warns():
    X = hat_relu_features(torch.rand(40, generator=_gen(13), dtype=torch.float64), 10)
    with pytest.warns(RuntimeWarning, match="did not converge in 1 sweeps.*raise max_iter"):
        fit = spike_slab_cavi(X, torch.randn(40, generator=_gen(14), dtype=torch.float64), 1.0, max_iter=1)
    assert not fit.converged and fit.n_iter == 1


def test_errors_are_pinned():
    X = torch.eye(3, dtype=torch.float64)
    y = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^prior_inclusion must be > 0.0, got 0.0$"):
        spike_slab_cavi(X, y, 1.0, prior_inclusion=0.0)
    with pytest.raises(ValueError, match=r"^noise_var must be > 0.0, got -1.0$"):
        spike_slab_cavi(X, y, -1.0)
    with pytest.raises(ValueError, match=r"y must have n = 3 \(from features\)"):
        spike_slab_cavi(X, y[:2], 1.0)
    with pytest.raises(ValueError, match=r"^width must be >= 2, got 1$"):
        hat_relu_features(y, 1)
    with pytest.raises(ValueError, match=r"^widths\[0\] must be >= 2, got 1$"):
        elbo_width_selection(y, y, [1], 1.0)
    with pytest.raises(TypeError, match=r"^fit must be a SpikeSlabVI, got str$"):
        integrated_l2_risk("a", X, y)
    with pytest.raises(ValueError, match=r"^features must have 3 columns \(the fit's coordinates\), got 2$"):
        integrated_l2_risk(spike_slab_cavi(X, y, 1.0), X[:, :2], y)


@settings(max_examples=15, deadline=None)
@given(pi=st.floats(0.02, 0.98), slab=st.floats(0.1, 20.0), alpha=st.floats(0.2, 1.0), seed=st.integers(0, 1000))
def test_property_orthogonal_elbo_is_log_evidence(pi, slab, alpha, seed):
    X = _orthogonal_design(12, 4, torch.tensor([1.0, 2.0, 0.5, 3.0]), seed=seed)
    y = torch.randn(12, generator=_gen(seed + 1), dtype=torch.float64) * 2
    fit = spike_slab_cavi(X, y, 1.0, slab_var=slab, prior_inclusion=pi, alpha=alpha)
    log_ev, incl, _, _ = _orthogonal_log_evidence(X, y, 1.0, slab, pi, alpha)
    assert isinstance(fit, SpikeSlabVI)
    assert fit.elbo == pytest.approx(log_ev, rel=1e-10, abs=1e-9)
    np.testing.assert_allclose(fit.inclusion.numpy(), incl, rtol=1e-9, atol=1e-12)
