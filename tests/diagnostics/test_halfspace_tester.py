"""Tests of paperzoo.diagnostics.halfspace_tester (the halfspace tester-learner).

The module is imported under an alias: a name starting with ``test`` in this namespace would be collected by pytest.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics import halfspace_tester as ht


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: intra-op threads only add contention


def _massart(n, d, seed, eta_max=0.2):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    eta = eta_max / 2 * (1 + torch.tanh(X[:, 1]))
    y = torch.where(X[:, 0] >= 0, 1.0, -1.0).to(torch.float64)
    y = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < eta, -y, y)
    return X, y, eta


def _e(d, i=0):
    w = torch.zeros(d, dtype=torch.float64)
    w[i] = 1.0
    return w


def test_surrogate_gradient_matches_autograd():
    X, y, _ = _massart(200, 5, 0)
    w = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    loss, grad = ht._surrogate(X, y, w, 0.2, 0.05)
    wr = w.clone().requires_grad_(True)
    t = -y * (X @ wr)
    ref = (0.2 * t + 0.6 * 0.05 * torch.log1p(torch.exp(t / 0.05))).mean()
    (gref,) = torch.autograd.grad(ref, wr)
    assert float(loss) == pytest.approx(float(ref.detach()), rel=1e-12)
    torch.testing.assert_close(grad, gref, rtol=1e-10, atol=1e-12)


def test_surrogate_tends_to_leaky_relu():
    X, y, _ = _massart(300, 4, 2)
    w = _e(4, 1)
    t = -y * (X @ w)
    leaky = torch.where(t >= 0, 0.8 * t, 0.2 * t).mean()
    loss, _ = ht._surrogate(X, y, w, 0.2, 1e-4)
    assert float(loss) == pytest.approx(float(leaky), abs=1e-4)


def test_learner_stationary_and_close_to_truth():
    X, y, _ = _massart(20000, 6, 3)
    fit = ht.leaky_relu_halfspace(X, y)
    assert fit.converged and fit.grad_norm <= 1e-4
    assert float(fit.w.norm()) == pytest.approx(1.0, abs=1e-12)
    assert float(fit.w[0]) > 0.995
    # independent check of stationarity: tangential gradient by autograd at the returned w
    wr = fit.w.clone().requires_grad_(True)
    t = -y * (X @ wr)
    (g,) = torch.autograd.grad((0.2 * t + 0.6 * 0.05 * torch.nn.functional.softplus(t / 0.05)).mean(), wr)
    gt = g - (g @ fit.w) * fit.w
    assert float(gt.norm()) <= 1e-4


def test_learner_warns_when_not_converged():
    X, y, _ = _massart(2000, 4, 4)
    with pytest.warns(RuntimeWarning, match="did not converge in 1 steps"):
        ht.leaky_relu_halfspace(X, y, steps=1, tol=1e-12)


def test_statistics_against_numpy_loop():
    X, y, _ = _massart(3000, 5, 5)
    w = torch.tensor([0.8, 0.6, 0.0, 0.0, 0.0], dtype=torch.float64)
    res = ht.halfspace_band_tests(X, y, w, width=0.2, n_widths=2, slack=4.0)
    Xn, yn, wn = X.numpy(), y.numpy(), w.numpy()
    n, d = Xn.shape
    assert res.mean == pytest.approx(np.linalg.norm(Xn.mean(0)), rel=1e-12)
    assert res.covariance == pytest.approx(np.abs(np.linalg.eigvalsh(Xn.T @ Xn / n - np.eye(d))).max(), rel=1e-10)
    assert res.fourth_moment == pytest.approx(np.mean((Xn @ wn) ** 4) - 3, rel=1e-10)
    P = np.eye(d) - np.outer(wn, wn)
    for j, band in enumerate(res.bands):
        sig = 0.2 * 2 ** j
        idx = [i for i in range(n) if abs(Xn[i] @ wn) <= sig]  # explicit loop over samples
        Z = np.stack([P @ Xn[i] for i in idx])
        assert band.width == sig and band.count == len(idx)
        assert band.mass_expected == pytest.approx(2 * 0.5 * (1 + math.erf(sig / math.sqrt(2))) - 1, rel=1e-12)
        assert band.isotropy == pytest.approx(np.abs(np.linalg.eigvalsh(Z.T @ Z / len(idx) - P)).max(), rel=1e-9)
        assert band.correlation == pytest.approx(np.linalg.norm(sum(yn[i] * Z[k] for k, i in enumerate(idx))
                                                                / len(idx)), rel=1e-10)
        assert band.correlation_threshold == pytest.approx(4 * math.sqrt((d - 1) / len(idx)), rel=1e-12)


def test_massart_error_closed_form():
    # Gaussian marginal: P(disagree) = angle / pi, constant eta: err = eta + (1 - 2 eta) angle / pi
    g = torch.Generator().manual_seed(6)
    X = torch.randn(400000, 3, generator=g, dtype=torch.float64)
    th = 0.3
    w = torch.tensor([math.cos(th), math.sin(th), 0.0], dtype=torch.float64)
    err = ht.massart_halfspace_error(w, _e(3), X, torch.full((400000,), 0.15, dtype=torch.float64))
    assert err == pytest.approx(0.15 + 0.7 * th / math.pi, abs=3e-3)


def test_accepts_gaussian_massart_near_optimal():
    X, y, _ = _massart(20000, 10, 7)
    res = ht.halfspace_tester_learner(X, y)
    assert res.accept, res.tests.failed
    Xt, _, et = _massart(100000, 10, 8)
    assert ht.massart_halfspace_error(res.w, _e(10), Xt, et) - float(et.mean()) < 0.01


def test_rejects_misaligned_candidate_by_band_correlation_only():
    X, y, _ = _massart(20000, 10, 9)
    th = 0.3
    w = math.cos(th) * _e(10, 0) + math.sin(th) * _e(10, 2)
    res = ht.halfspace_band_tests(X, y, w)
    assert not res.passed
    assert all(f.startswith("band_correlation") for f in res.failed), res.failed
    assert ht.halfspace_band_tests(X, y, _e(10)).passed


def test_moments_only_ignores_bands():
    X, y, _ = _massart(20000, 10, 10)
    w = math.cos(0.5) * _e(10, 0) + math.sin(0.5) * _e(10, 2)
    res = ht.halfspace_band_tests(X, y, w, checks="moments")
    assert res.passed and res.bands == ()


def test_rejects_heavy_tailed_marginal():
    g = torch.Generator().manual_seed(11)
    Z = torch.randn(20000, 10, 6, generator=g, dtype=torch.float64)  # Student t with 5 degrees of freedom
    X = Z[..., 0] / torch.sqrt((Z[..., 1:] ** 2).mean(-1)) / math.sqrt(5 / 3)  # unit variance
    y = torch.where(X[:, 0] >= 0, 1.0, -1.0).to(torch.float64)
    res = ht.halfspace_tester_learner(X, y)
    assert not res.accept and "fourth_moment" in res.tests.failed


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), scale=st.floats(0.1, 10.0))
def test_tests_invariant_to_scaling_w(seed, scale):
    X, y, _ = _massart(500, 4, seed % 1000)
    w = torch.randn(4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    a = ht.halfspace_band_tests(X, y, w)
    b = ht.halfspace_band_tests(X, y, scale * w)
    assert a.failed == b.failed
    assert a.fourth_moment == pytest.approx(b.fourth_moment, rel=1e-9, abs=1e-12)


def test_errors_pinned():
    X, y, _ = _massart(50, 3, 12)
    with pytest.raises(ValueError, match="y must contain only -1 and \\+1 labels"):
        ht.halfspace_tester_learner(X, 0.5 * y)
    with pytest.raises(ValueError, match="w must be a nonzero vector"):
        ht.halfspace_band_tests(X, y, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="lam"):
        ht.leaky_relu_halfspace(X, y, lam=0.5)
    with pytest.raises(ValueError, match="checks"):
        ht.halfspace_tester_learner(X, y, checks="labels")
    with pytest.raises(ValueError, match="eta must be <= 1"):
        ht.massart_halfspace_error(_e(3), _e(3), X, torch.full((50,), 2.0, dtype=torch.float64))


def test_tiny_band_fails_instead_of_nan():
    X, y, _ = _massart(40, 3, 13)
    res = ht.halfspace_band_tests(X, y, _e(3), width=1e-6, n_widths=1)
    assert not res.passed and res.bands[0].count <= 3
    assert "band_isotropy[1e-06]" in res.failed


def test_doctests():
    import doctest

    assert doctest.testmod(ht, optionflags=doctest.ELLIPSIS).failed == 0
