"""Tests for paperzoo.diagnostics.spectral_risk: closed forms, scipy roots, sklearn fits and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.spectral_risk import (cost_of_overfitting, effective_regularization, empirical_ridge_risk,
                                                optimal_ridge, ridge_risk)

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _power_law(p, alpha=1.5, beta=1.0):
    i = torch.arange(1, p + 1, dtype=F64)
    v = i ** -beta
    return i ** -alpha, v / v.norm()


# -- effective regularization -------------------------------------------------------------------------------------

def test_kappa_solves_its_equation_for_many_ridges_and_matches_scipy():
    from scipy.optimize import brentq

    lam, _ = _power_law(500)
    n = 60
    ridges = torch.cat([torch.zeros(1, dtype=F64), torch.logspace(-6, 3, 20, dtype=F64)])
    out = effective_regularization(lam, n, ridges)
    assert out.converged and out.kappa.shape == ridges.shape
    lam_np = lam.numpy()
    for d, k in zip(ridges.tolist(), out.kappa.tolist()):
        f = lambda t: np.sum(lam_np / (lam_np + t)) + d / t - n  # noqa: E731
        ref = brentq(f, 1e-14, 1e6, xtol=1e-300, rtol=1e-14)
        assert k == pytest.approx(ref, rel=1e-10)
    scalar = effective_regularization(lam, n, float(ridges[5]))
    assert scalar.kappa.dim() == 0 and float(scalar.kappa) == pytest.approx(float(out.kappa[5]), rel=1e-12)


@pytest.mark.parametrize("ridge", [0.0, 0.3, 7.0])
def test_kappa_isotropic_closed_form(ridge):
    d, n = 40, 15
    # n = d/(1 + k) + ridge/k  <=>  n k^2 + (n - d - ridge) k - ridge = 0
    b = n - d - ridge
    ref = (-b + math.sqrt(b * b + 4 * n * ridge)) / (2 * n)
    k = effective_regularization(torch.ones(d, dtype=F64), n, ridge).kappa
    assert float(k) == pytest.approx(ref, rel=1e-12)


def test_kappa_float32_and_overparametrized_n():
    lam, _ = _power_law(50)
    k32 = effective_regularization(lam.float(), 80, 0.5).kappa    # n > p is fine with a ridge
    k64 = effective_regularization(lam, 80, 0.5).kappa
    assert k32.dtype == torch.float32 and float(k32) == pytest.approx(float(k64), rel=1e-5)


def test_kappa_warns_without_convergence():
    lam, _ = _power_law(200)
    with pytest.warns(RuntimeWarning, match="did not converge in 1 iterations; raise max_iter"):
        out = effective_regularization(lam, 20, 0.0, max_iter=1)
    assert not out.converged


# -- risk: known limits ---------------------------------------------------------------------------------------------

def test_huge_ridge_predicts_zero():
    lam, v = _power_law(300)
    out = ridge_risk(lam, 0.7 * v, 0.2, 50, 1e12)
    assert float(out.risk) == pytest.approx(0.49 + 0.2, rel=1e-8)
    assert float(out.e0) == pytest.approx(1.0, abs=1e-9)


def test_isotropic_ridgeless_closed_forms():
    d, n = 50, 20
    lam = torch.ones(d, dtype=F64)
    v = torch.randn(d, generator=torch.Generator().manual_seed(0), dtype=F64)
    noise_free = ridge_risk(lam, v, 0.0, n, 0.0)
    assert float(noise_free.risk) == pytest.approx((1 - n / d) * float(v.square().sum()), rel=1e-12)
    assert float(noise_free.e0) == pytest.approx(d / (d - n), rel=1e-12)
    noisy = ridge_risk(lam, torch.zeros(d, dtype=F64), 0.3, n, 0.0)
    assert float(noisy.variance) == pytest.approx(0.3 * n / (d - n), rel=1e-12)
    assert float(noisy.risk) == pytest.approx(float(noisy.bias + noisy.variance) + 0.3, rel=1e-14)


def test_isotropic_optimal_ridge_is_bayes_ridge_and_matches_scipy():
    from scipy.optimize import minimize_scalar

    d, n, s2 = 30, 12, 0.4
    lam = torch.ones(d, dtype=F64)
    v = torch.full((d,), 0.3, dtype=F64)
    opt = optimal_ridge(lam, v, s2, n, tol=1e-9)
    assert opt.ridge == pytest.approx(d * s2 / float(v.square().sum()), rel=1e-5)
    lam2, v2 = _power_law(400)
    opt2 = optimal_ridge(lam2, v2, 0.2, 40, tol=1e-9)
    ref = minimize_scalar(lambda u: float(ridge_risk(lam2, v2, 0.2, 40, math.exp(u)).risk), bounds=(-12, 6),
                          method="bounded", options={"xatol": 1e-10})
    assert opt2.risk == pytest.approx(ref.fun, rel=1e-9) and not opt2.at_edge


def test_noise_free_optimum_can_be_ridgeless():
    lam = torch.cat([torch.ones(3, dtype=F64), torch.full((400,), 0.1, dtype=F64)])
    v = torch.zeros(403, dtype=F64)
    v[:3] = 1.0
    opt = optimal_ridge(lam, v, 0.0, 30)
    assert opt.ridge == 0.0 and opt.risk == pytest.approx(float(ridge_risk(lam, v, 0.0, 30, 0.0).risk))


# -- cost of overfitting ----------------------------------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(alpha=st.floats(1.1, 3.0), beta=st.floats(0.3, 2.0), noise=st.floats(0.0, 2.0), n=st.integers(2, 60))
def test_cost_between_one_and_e0(alpha, beta, noise, n):
    lam, v = _power_law(200, alpha, beta)
    c = cost_of_overfitting(lam, v, noise, n)
    assert 1.0 - 1e-9 <= c.cost <= c.e0_ridgeless * (1 + 1e-9)
    assert c.tuned_risk <= c.ridgeless_risk * (1 + 1e-12)


def test_power_law_cost_is_tempered_and_flat_tail_benign():
    lam, v = _power_law(4000, alpha=2.0)
    costs = [cost_of_overfitting(lam, v, 0.5, n).cost for n in (50, 100, 200)]
    assert all(c > 1.5 for c in costs) and costs == sorted(costs)
    e0 = cost_of_overfitting(lam, v, 0.5, 200).e0_ridgeless
    assert e0 == pytest.approx(2.0, rel=0.05)   # E_0 -> alpha for i^-alpha


# -- empirical route: sklearn and Monte Carlo ----------------------------------------------------------------------

def test_empirical_fit_matches_sklearn_ridge():
    from sklearn.linear_model import Ridge

    lam, v = _power_law(80)
    n, s2, ridges = 30, 0.25, [0.0, 0.05, 2.0]
    out = empirical_ridge_risk(lam, v, s2, n, torch.tensor(ridges, dtype=F64), trials=2,
                               generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    for t in range(2):
        z = torch.randn(n, 80, generator=g, dtype=F64)
        y = z @ v + math.sqrt(s2) * torch.randn(n, generator=g, dtype=F64)
        x = (z * lam.sqrt()).numpy()
        for j, d in enumerate(ridges):
            beta = (np.linalg.pinv(x) @ y.numpy() if d == 0 else
                    Ridge(alpha=d, fit_intercept=False, solver="cholesky").fit(x, y.numpy()).coef_)
            risk = float(np.sum((v.numpy() - lam.sqrt().numpy() * beta) ** 2) + s2)
            assert float(out.risks[t, j]) == pytest.approx(risk, rel=1e-8)


@pytest.mark.parametrize("n,noise,scale", [(200, 0.5, 1.0), (300, 0.0, 1.0), (200, 0.5, 0.0)])
def test_eigenframework_matches_monte_carlo(n, noise, scale):
    lam, v = _power_law(1200, alpha=1.5)
    ridges = torch.tensor([0.0, 0.01, 0.3, 5.0], dtype=F64)
    pred = ridge_risk(lam, scale * v, noise, n, ridges)
    mc = empirical_ridge_risk(lam, scale * v, noise, n, ridges, trials=20, generator=torch.Generator().manual_seed(n))
    # within 4 standard errors plus 1% for the eigenframework's finite-n error
    assert torch.all((mc.mean - pred.risk).abs() <= 4 * mc.stderr + 0.01 * pred.risk), (mc.mean, pred.risk, mc.stderr)


# -- errors -----------------------------------------------------------------------------------------------------------

def test_error_messages():
    lam, v = _power_law(10)
    with pytest.raises(ValueError, match=r"ridge = 0 needs n < the number of positive eigvals \(10\), got n = 10"):
        ridge_risk(lam, v, 0.1, 10, 0.0)
    with pytest.raises(ValueError, match=r"ridge = 0 needs n < the number of positive eigvals \(10\), got n = 12"):
        cost_of_overfitting(lam, v, 0.1, 12)
    with pytest.raises(ValueError, match="eigvals must be >= 0 entrywise"):
        effective_regularization(-lam, 3, 0.1)
    with pytest.raises(ValueError, match=r"target_coeffs must have p = 10 \(from eigvals\)"):
        ridge_risk(lam, v[:5], 0.1, 3, 0.1)
    with pytest.raises(ValueError, match=r"ridge_range must satisfy 0 < low < high, got \(2.0, 1.0\)"):
        optimal_ridge(lam, v, 0.1, 3, ridge_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="noise_var must be >= 0"):
        ridge_risk(lam, v, -1.0, 3, 0.1)
