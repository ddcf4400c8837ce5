"""Tests for paperzoo.diagnostics.hierarchical_poly: numpy Hermite polynomials, Gaussian closed forms, an autograd
gradient step on the explicit three-layer network, scikit-learn ridge, and end-to-end feature recovery."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.hierarchical_poly import (ThreeLayerFit, _fit_stage2, _stage2_design, feature_correlation,
                                                    hermite_features, layerwise_three_layer, learned_feature,
                                                    quadratic_feature, three_layer_predict)

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _unit(m, d, g):
    v = torch.randn(m, d, generator=g, dtype=F64)
    return v / v.norm(dim=1, keepdim=True)


def _balanced_A(d, g):
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    return (Q * torch.tensor([1.0, -1.0], dtype=F64).repeat(d // 2)) @ Q.T


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_hermite_features_match_numpy_hermite_e(k):
    from numpy.polynomial.hermite_e import hermeval

    g = torch.Generator().manual_seed(k)
    x, V = torch.randn(7, 3, generator=g, dtype=F64), _unit(5, 3, g)
    coef = np.zeros(k + 1)
    coef[k] = 1.0
    expect = hermeval((x @ V.T).numpy(), coef) / math.sqrt(math.factorial(k))
    np.testing.assert_allclose(hermite_features(x, V, k).numpy(), expect, rtol=1e-12, atol=1e-12)


def test_hermite_feature_gram_is_squared_cosine_under_gaussian_inputs():
    # E_x[phi_j phi_l] = (v_j . v_l)^k / 1 for normalised He_k and unit v (Gaussian closed form), here k = 2.
    g = torch.Generator().manual_seed(0)
    V = _unit(4, 3, g)
    x = torch.randn(400_000, 3, generator=g, dtype=F64)
    phi = hermite_features(x, V, 2)
    gram = phi.T @ phi / x.shape[0]
    np.testing.assert_allclose(gram.numpy(), ((V @ V.T) ** 2).numpy(), atol=0.02)
    np.testing.assert_allclose(phi.mean(0).numpy(), np.zeros(4), atol=0.01)


def test_quadratic_feature_matches_einsum_and_has_unit_moments():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(5, 5, generator=g, dtype=F64)
    A = A + A.T
    x = torch.randn(200_000, 5, generator=g, dtype=F64)
    p = quadratic_feature(x, A)
    expect = (torch.einsum("ni,ij,nj->n", x, A, x) - torch.trace(A)) / torch.sqrt(2 * torch.trace(A @ A))
    torch.testing.assert_close(p, expect, rtol=1e-12, atol=1e-12)
    assert abs(float(p.mean())) < 0.01 and abs(float(p.var()) - 1.0) < 0.02


def test_stage1_direction_is_one_autograd_gradient_step_of_the_three_layer_network():
    # The explicit network f(x) = sum_i a_i relu(W_i . phi(x) + b_i) + c at W = 0, b_i = 1 > 0, c = mean(y) - sum a_i:
    # -grad_W of the half squared loss is a_i * w_hat for every row i (the one-step update up to eta).
    g = torch.Generator().manual_seed(2)
    n1, d, m2, m1 = 50, 4, 12, 6
    x1, y1 = torch.randn(n1, d, generator=g, dtype=F64), torch.randn(n1, generator=g, dtype=F64)
    x2, y2 = torch.randn(30, d, generator=g, dtype=F64), torch.randn(30, generator=g, dtype=F64)
    fit = layerwise_three_layer(x1, y1, x2, y2, width=m2, hidden=m1, degree=2, ridge=1e-3,
                                generator=torch.Generator().manual_seed(3))
    phi = hermite_features(x1, fit.V, 2)
    a = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, -1.0], dtype=F64)
    W = torch.zeros(m1, m2, dtype=F64, requires_grad=True)
    b = torch.ones(m1, dtype=F64)
    c = y1.mean() - a.sum()
    f = torch.relu(phi @ W.T + b) @ a + c
    (0.5 * ((f - y1) ** 2).mean()).backward()
    torch.testing.assert_close(-W.grad, a[:, None] * fit.w[None, :], rtol=1e-12, atol=1e-14)


def test_stage2_outer_layer_is_sklearn_ridge_with_intercept():
    from sklearn.linear_model import Ridge

    g = torch.Generator().manual_seed(4)
    x = torch.randn(300, 3, generator=g, dtype=F64)
    y = x[:, 0] ** 2 - x[:, 1] * x[:, 2]
    ridge = 3e-3
    fit = layerwise_three_layer(x[:150], y[:150], x[150:], y[150:], width=30, hidden=20, degree=2, ridge=ridge,
                                generator=torch.Generator().manual_seed(5))
    Phi = _stage2_design(learned_feature(fit, x[150:]), fit.signs, fit.biases)
    ref = Ridge(alpha=ridge * 150, fit_intercept=True, solver="cholesky").fit(Phi.numpy(), y[150:].numpy())
    np.testing.assert_allclose(fit.outer.numpy(), ref.coef_, rtol=1e-6, atol=1e-8)
    assert abs(fit.intercept - ref.intercept_) < 1e-7
    np.testing.assert_allclose(three_layer_predict(fit, x[150:]).numpy(), ref.predict(Phi.numpy()), atol=1e-8)
    assert abs(fit.train_mse - float(np.mean((ref.predict(Phi.numpy()) - y[150:].numpy()) ** 2))) < 1e-10


def test_learned_feature_is_standardised_on_stage2_inputs():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(400, 4, generator=g, dtype=F64)
    y = x.sum(1) ** 2
    fit = layerwise_three_layer(x[:200], y[:200], x[200:], y[200:], width=40, hidden=10, degree=2, ridge=1e-3,
                                generator=g)
    z = learned_feature(fit, x[200:])
    assert abs(float(z.mean())) < 1e-12 and abs(float(z.std(correction=0)) - 1.0) < 1e-12


def test_stage1_recovers_a_quadratic_feature_and_a_random_direction_does_not():
    g = torch.Generator().manual_seed(7)
    d = 6
    A = _balanced_A(d, g)
    x = torch.randn(24_000, d, generator=g, dtype=F64)
    p = quadratic_feature(x, A)
    # Odd g with E[g'(z)] != 0 and tr A = 0: by the sign symmetry the degree-2 projection of g(p) is c p exactly.
    y = p + p ** 3 / 5
    xt, pt = x[20_000:], p[20_000:]
    fit = layerwise_three_layer(x[:10_000], y[:10_000], x[10_000:20_000], y[10_000:20_000], width=400, hidden=128,
                                degree=2, ridge=1e-5, generator=g)
    # Not 1: finite n1 and the finite-width random-feature kernel (m2 = 19 D) distort c p slightly.
    assert feature_correlation(fit, xt, pt) > 0.93
    yt = pt + pt ** 3 / 5
    assert float(((three_layer_predict(fit, xt) - yt) ** 2).mean() / yt.var()) < 0.3
    w = torch.randn(400, generator=g, dtype=F64)
    rand = _fit_stage2(fit.V, 2, w, x[10_000:20_000], y[10_000:20_000], 128, 1e-5, 3.0, 1e-12, g)
    assert feature_correlation(rand, xt, pt) < 0.5


def test_float32_runs_and_stays_float32():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(100, 3, generator=g)
    fit = layerwise_three_layer(x[:50], x[:50, 0] ** 2, x[50:], x[50:, 0] ** 2, width=10, hidden=6, degree=2,
                                ridge=1e-2, generator=g)
    out = three_layer_predict(fit, x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_constant_targets_give_finite_fits():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(40, 3, generator=g, dtype=F64)
    fit = layerwise_three_layer(x[:20], torch.ones(20, dtype=F64), x[20:], torch.ones(20, dtype=F64), width=8,
                                hidden=4, degree=2, ridge=1e-2, generator=g)
    assert torch.isfinite(three_layer_predict(fit, x)).all()
    assert feature_correlation(fit, x, x[:, 0]) == 0.0


# -- errors -------------------------------------------------------------------------------------------------------

def _small_fit():
    g = torch.Generator().manual_seed(10)
    x = torch.randn(40, 3, generator=g, dtype=F64)
    return layerwise_three_layer(x[:20], x[:20, 0], x[20:], x[20:, 0], width=8, hidden=4, degree=2, ridge=1e-2,
                                 generator=g)


def test_error_messages_are_pinned():
    x = torch.randn(5, 3, dtype=F64)
    with pytest.raises(ValueError, match=r"V must have d = 3 \(from x\) in its shape \(m, d\), got shape \(2, 4\)"):
        hermite_features(x, torch.zeros(2, 4, dtype=F64), 2)
    with pytest.raises(ValueError, match="degree must be >= 1, got 0"):
        hermite_features(x, torch.zeros(2, 3, dtype=F64), 0)
    with pytest.raises(ValueError, match="width must be >= 1, got 0"):
        layerwise_three_layer(x, x[:, 0], x, x[:, 0], width=0, hidden=2, degree=2, ridge=1e-2)
    with pytest.raises(ValueError, match=r"ridge must be > 0.0, got 0.0"):
        layerwise_three_layer(x, x[:, 0], x, x[:, 0], width=3, hidden=2, degree=2, ridge=0.0)
    fit = _small_fit()
    with pytest.raises(ValueError, match=r"x must have 3 columns \(the fit's input dimension\), got 4"):
        three_layer_predict(fit, torch.zeros(2, 4, dtype=F64))
    with pytest.raises(TypeError, match=r"x must have the dtype of the fit \(torch.float64\), got torch.float32"):
        learned_feature(fit, torch.zeros(2, 3))
    with pytest.raises(TypeError, match="fit must be a"):
        three_layer_predict(fit._asdict(), x)
    assert isinstance(fit, ThreeLayerFit)


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(min_value=-50.0, max_value=50.0).filter(lambda s: abs(s) > 1e-3),
       shift=st.floats(min_value=-10.0, max_value=10.0))
def test_feature_correlation_is_invariant_to_affine_maps_of_p(scale, shift):
    fit = _small_fit()
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(11), dtype=F64)
    p = x[:, 0] ** 2 - x[:, 1]
    c = feature_correlation(fit, x, p)
    assert 0.0 <= c <= 1.0
    assert abs(feature_correlation(fit, x, scale * p + shift) - c) < 1e-9
