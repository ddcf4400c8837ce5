import math

import pytest
import torch

from paperzoo.diagnostics.spectral_algorithms import (empirical_spectral_risk, gradient_descent_profile,
                                                      gradient_flow_profile, krr_profile, power_law_rates,
                                                      profile_loss)
from paperzoo.diagnostics.spectral_risk import ridge_risk


def _task(p=300):
    i = torch.arange(1, p + 1, dtype=torch.float64)
    v = i ** -2.0
    return i ** -1.5, v / v.norm()


@pytest.mark.parametrize("eta", [1e-4, 1e-2, 0.3])
def test_krr_profile_reduces_to_ridge_risk(eta):
    lam, v = _task()
    out = profile_loss(lam, v, 0.1, 80, krr_profile(eta))
    ref = ridge_risk(lam, v, 0.1, 80, 80 * eta)
    assert math.isclose(out.risk, float(ref.risk), rel_tol=1e-10)
    assert math.isclose(out.variance, float(ref.variance), rel_tol=1e-9)


def test_gradient_flow_at_infinite_time_is_ridgeless():
    lam, v = _task()
    out = profile_loss(lam, v, 0.1, 80, gradient_flow_profile(1e10))
    assert math.isclose(out.risk, float(ridge_risk(lam, v, 0.1, 80, 0.0).risk), rel_tol=1e-6)


def test_gradient_flow_contour_represents_the_profile():
    p = gradient_flow_profile(7.0)
    s = torch.logspace(-6, 3, 50, dtype=torch.float64)
    approx = 1 - (p.weights / (s.to(torch.complex128)[:, None] + p.nodes)).sum(-1).real
    assert (approx - p.h(s)).abs().max() < 1e-12


def test_wishart_gradient_flow_matches_monte_carlo():
    lam, v = _task(200)
    prof = gradient_flow_profile(30.0)
    pred = profile_loss(lam, v, 0.1, 60, prof).risk
    emp = empirical_spectral_risk(lam, v, 0.1, 60, [prof], trials=100, generator=torch.Generator().manual_seed(0))
    assert abs(float(emp.mean[0]) - pred) < 4 * float(emp.stderr[0]) + 0.01 * pred


def _draw(lam, v, noise_var, n, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, lam.numel(), generator=g, dtype=lam.dtype)
    return z * lam.sqrt(), z @ v + math.sqrt(noise_var) * torch.randn(n, generator=g, dtype=lam.dtype)


def _risk(lam, v, beta, noise_var):
    return float((v - lam.sqrt() * beta).square().sum()) + noise_var


def test_empirical_krr_matches_sklearn_ridge():
    from sklearn.linear_model import Ridge

    lam, v = _task(50)
    x, y = _draw(lam, v, 0.2, 30, 3)
    eta = 0.05
    beta = torch.from_numpy(Ridge(alpha=30 * eta, fit_intercept=False, solver="svd").fit(x.numpy(), y.numpy()).coef_)
    emp = empirical_spectral_risk(lam, v, 0.2, 30, [krr_profile(eta)], generator=torch.Generator().manual_seed(3))
    assert math.isclose(float(emp.mean[0]), _risk(lam, v, beta, 0.2), rel_tol=1e-9)


def test_empirical_gd_filter_matches_explicit_iterations():
    lam, v = _task(50)
    n, lr, steps = 30, 0.5, 40
    x, y = _draw(lam, v, 0.2, n, 4)
    beta = torch.zeros(50, dtype=torch.float64)
    for _ in range(steps):
        beta = beta + lr * x.T @ (y - x @ beta) / n
    emp = empirical_spectral_risk(lam, v, 0.2, n, [gradient_descent_profile(lr, steps)],
                                  generator=torch.Generator().manual_seed(4))
    assert math.isclose(float(emp.mean[0]), _risk(lam, v, beta, 0.2), rel_tol=1e-9)


def test_naive_model_closed_form():
    lam = torch.tensor([1.0, 0.5], dtype=torch.float64)
    v = torch.tensor([1.0, 1.0], dtype=torch.float64)
    out = profile_loss(lam, v, 0.5, 10, krr_profile(0.5), model="naive")
    h = lam / (lam + 0.5)
    assert math.isclose(out.risk, float(((1 - h) ** 2).sum() + 0.05 * (h ** 2).sum() + 0.5), rel_tol=1e-12)


def test_power_law_rates():
    r = power_law_rates(1.5, 6.0)
    assert (r.krr, r.gradient_flow, r.saturated) == (0.75, 6 / 7, True)
    r = power_law_rates(1.5, 1.5)
    assert r.krr == r.gradient_flow == 0.6 and not r.saturated


def test_errors_pinned():
    lam, v = _task(20)
    with pytest.raises(ValueError, match="profile 'gradient_descent' has no resolvent expansion for the wishart"):
        profile_loss(lam, v, 0.1, 5, gradient_descent_profile(0.1, 3))
    with pytest.raises(ValueError, match=r"ridge must be > 0\.0, got 0\.0"):
        krr_profile(0.0)
    with pytest.raises(ValueError, match="model must be one of"):
        profile_loss(lam, v, 0.1, 5, krr_profile(0.1), model="circle")
    with pytest.raises(TypeError, match="profiles must be a non-empty list of SpectralProfile"):
        empirical_spectral_risk(lam, v, 0.1, 5, [])
