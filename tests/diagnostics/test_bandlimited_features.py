"""Tests for paperzoo.diagnostics.bandlimited_features (random nets with bounded hidden-parameter domains)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.bandlimited_features import (
    fit_readout,
    random_feature_map,
    random_net_error,
    sample_hidden_parameters,
)

D = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_uniform_parameters_stay_in_the_box_and_have_uniform_moments():
    p = sample_hidden_parameters(200_000, 2, 5.0, bias_bound=7.0, generator=_gen())
    assert p.weights.shape == (200_000, 2) and p.biases.shape == (200_000,)
    assert float(p.weights.abs().max()) <= 5.0 and float(p.biases.abs().max()) <= 7.0
    # U[-B, B] has variance B^2 / 3; sampling error ~ B^2 / sqrt(n) ~ 0.06
    assert p.weights.var(0).sub(25 / 3).abs().max() < 0.1
    assert abs(float(p.biases.var()) - 49 / 3) < 0.2


def test_gaussian_parameters_are_unbounded_with_scale_bound():
    p = sample_hidden_parameters(200_000, 1, 2.0, dist="gaussian", generator=_gen(1))
    assert abs(float(p.weights.std()) - 2.0) < 0.02
    assert float(p.weights.abs().max()) > 3 * 2.0       # support beyond the box, unlike "uniform"
    assert float(p.biases.abs().max()) <= 2.0           # default bias_bound = bound


def test_sampler_is_reproducible_and_respects_dtype():
    a = sample_hidden_parameters(5, 3, 1.0, generator=_gen(3), dtype=torch.float32)
    b = sample_hidden_parameters(5, 3, 1.0, generator=_gen(3), dtype=torch.float32)
    assert a.weights.dtype == torch.float32 and torch.equal(a.weights, b.weights) and torch.equal(a.biases, b.biases)


def test_feature_map_matches_an_explicit_loop():
    g = _gen(4)
    x, a = torch.randn(6, 3, generator=g, dtype=D), torch.randn(5, 3, generator=g, dtype=D)
    b = torch.randn(5, generator=g, dtype=D)
    for act, fn in (("tanh", math.tanh), ("sigmoid", lambda t: 1 / (1 + math.exp(-t))), ("relu", lambda t: max(t, 0.0)),
                    ("cos", math.cos)):
        phi = random_feature_map(x, a, b, activation=act)
        ref = torch.tensor([[fn(sum(float(a[j, c]) * float(x[i, c]) for c in range(3)) - float(b[j])) / math.sqrt(5)
                             for j in range(5)] for i in range(6)], dtype=D)
        torch.testing.assert_close(phi, ref, rtol=1e-12, atol=1e-14)


def test_cos_gaussian_features_equal_sklearn_rbf_sampler():
    from sklearn.kernel_approximation import RBFSampler

    X = torch.randn(7, 2, generator=_gen(5), dtype=D)
    rbf = RBFSampler(gamma=0.7, n_components=50, random_state=0).fit(X.numpy())
    W = torch.from_numpy(rbf.random_weights_).T.contiguous()          # (N, m)
    off = torch.from_numpy(rbf.random_offset_)
    ours = math.sqrt(2.0) * random_feature_map(X, W, -off, activation="cos")
    torch.testing.assert_close(ours, torch.from_numpy(rbf.transform(X.numpy())), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("n,N", [(40, 10), (10, 40)])
def test_readout_matches_sklearn_ridge(n, N):
    from sklearn.linear_model import Ridge

    g = _gen(6)
    F, y, rho = torch.randn(n, N, generator=g, dtype=D), torch.randn(n, generator=g, dtype=D), 1e-3
    fit = fit_readout(F, y, rho)
    ref = Ridge(alpha=n * rho, fit_intercept=False, solver="svd", tol=1e-14).fit(F.numpy(), y.numpy()).coef_
    torch.testing.assert_close(fit.coef, torch.from_numpy(ref), rtol=1e-9, atol=1e-11)
    assert fit.solver == ("primal" if N <= n else "dual") and fit.jitter == 0.0
    assert math.isclose(fit.train_mse, float(((F @ fit.coef - y) ** 2).mean()), rel_tol=1e-12)
    assert math.isclose(fit.coef_norm, float(fit.coef.norm()), rel_tol=1e-12)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 12), N=st.integers(1, 12), seed=st.integers(0, 10_000),
       log_rho=st.floats(-6, 1))
def test_readout_is_the_ridge_stationary_point(n, N, seed, log_rho):
    g = _gen(seed)
    F, y, rho = torch.randn(n, N, generator=g, dtype=D), torch.randn(n, generator=g, dtype=D), 10.0 ** log_rho
    c = fit_readout(F, y, rho).coef
    grad = F.T @ (F @ c - y) / n + rho * c       # gradient of (1/2n)||Fc - y||^2 + (rho/2)||c||^2
    assert float(grad.abs().max()) <= 1e-9 * (1 + float((F.T @ y).abs().max()) / n)


def test_random_net_fits_an_in_band_target_and_not_an_out_of_band_one():
    x = ((2 * torch.rand(400, generator=_gen(7), dtype=D) - 1) * math.pi)[:, None]
    xs = torch.linspace(-math.pi, math.pi, 301, dtype=D)[:, None]

    def err(k, B):
        return random_net_error(x, torch.sin(k * x[:, 0]), xs, torch.sin(k * xs[:, 0]), 800, B, bias_bound=B * math.pi,
                                ridge=1e-8, generator=_gen(8)).relative_error

    assert err(3.0, 5.0) < 1e-4
    assert err(20.0, 5.0) > 0.1          # slopes |a| <= 5 cannot express sin(20 x) at this readout budget
    assert err(20.0, 25.0) < 1e-2        # the widened domain can


def test_random_net_error_reports_consistent_fields():
    x = torch.linspace(-1, 1, 50, dtype=D)[:, None]
    y = torch.cos(2 * x[:, 0])
    fit = random_net_error(x, y, x, y, 30, 2.0, generator=_gen(9), ridge=1e-6)
    assert fit.n_hidden == 30 and fit.solver == "primal"
    assert math.isclose(fit.relative_error, fit.test_mse / float(y.var(unbiased=False)), rel_tol=1e-12)
    assert math.isclose(fit.test_mse, fit.train_mse, rel_tol=1e-12)   # same points


def test_errors_are_pinned():
    x = torch.zeros(3, 1, dtype=D)
    with pytest.raises(ValueError, match=r"ridge must be > 0.0, got 0.0"):
        fit_readout(torch.eye(3, dtype=D), torch.ones(3, dtype=D), 0.0)
    with pytest.raises(ValueError, match=r"dist must be one of \['uniform', 'gaussian'\], got 'cauchy'"):
        sample_hidden_parameters(3, 1, 1.0, dist="cauchy")
    with pytest.raises(ValueError, match=r"bound must be > 0.0, got -1.0"):
        sample_hidden_parameters(3, 1, -1.0)
    with pytest.raises(ValueError, match=r"weights must have m = 1 \(from x\)"):
        random_feature_map(x, torch.ones(4, 2, dtype=D), torch.zeros(4, dtype=D))
    with pytest.raises(ValueError, match=r"activation must be one of \['tanh', 'sigmoid', 'relu', 'cos'\], got 'gelu'"):
        random_feature_map(x, torch.ones(4, 1, dtype=D), torch.zeros(4, dtype=D), activation="gelu")
    with pytest.raises(ValueError, match=r"y_test must not be constant"):
        random_net_error(x, torch.ones(3, dtype=D), x, torch.ones(3, dtype=D), 4, 1.0)
    with pytest.raises(TypeError, match=r"dtype must be a floating dtype"):
        sample_hidden_parameters(3, 1, 1.0, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"fit_readout: the Gram matrix overflows"):
        fit_readout(torch.full((3, 2), 1e300, dtype=D), torch.ones(3, dtype=D), 1.0)
