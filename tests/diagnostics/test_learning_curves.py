"""Tests for paperzoo.diagnostics.learning_curves: naive Bayes against scikit-learn, samples-to-reach on synthetic
curves, exact errors against closed forms and Monte Carlo, the harness, pinned error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.learning_curves import (LearningCurve, bayes_error, gaussian_nb_fit, gaussian_nb_fit_predict,
                                                  gaussian_nb_log_proba, gaussian_nb_predict, learning_curve,
                                                  naive_bayes_asymptotic_error, samples_to_reach)


def _data(m=60, n=7, K=4, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(m) % K
    X = torch.randn(m, n, generator=g, dtype=torch.float64) * (1 + torch.arange(n)) + scale * y[:, None]
    return X, y


# -- naive Bayes vs sklearn ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("var_smoothing", [1e-9, 1e-2])
def test_per_class_nb_matches_sklearn(var_smoothing):
    from sklearn.naive_bayes import GaussianNB

    X, y = _data()
    Xt, _ = _data(m=40, seed=1)
    ref = GaussianNB(var_smoothing=var_smoothing).fit(X.numpy(), y.numpy())
    p = gaussian_nb_fit(X, y, var_smoothing=var_smoothing, shared_variance=False)
    np.testing.assert_allclose(p.means.numpy(), ref.theta_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(p.variances.numpy(), ref.var_, rtol=1e-10, atol=0)
    np.testing.assert_allclose(p.epsilon, ref.epsilon_, rtol=1e-12)
    np.testing.assert_allclose(gaussian_nb_log_proba(p, Xt).numpy(), ref.predict_log_proba(Xt.numpy()),
                               rtol=0, atol=1e-8)
    assert gaussian_nb_predict(p, Xt).tolist() == ref.predict(Xt.numpy()).tolist()


def test_shared_nb_is_sklearn_with_pooled_variances():
    """The shared-variance model is GaussianNB whose per-class variances are replaced by the pooled ones."""
    from sklearn.naive_bayes import GaussianNB

    X, y = _data(m=57)  # unbalanced classes: pooling is prior-weighted
    Xt, _ = _data(m=40, seed=2)
    ref = GaussianNB(var_smoothing=1e-9).fit(X.numpy(), y.numpy())
    pooled = (ref.class_count_[:, None] * (ref.var_ - ref.epsilon_)).sum(0) / ref.class_count_.sum() + ref.epsilon_
    ref.var_ = np.broadcast_to(pooled, ref.var_.shape).copy()
    p = gaussian_nb_fit(X, y)
    np.testing.assert_allclose(p.variances.numpy(), ref.var_, rtol=1e-10)
    np.testing.assert_allclose(gaussian_nb_log_proba(p, Xt).numpy(), ref.predict_log_proba(Xt.numpy()),
                               rtol=0, atol=1e-8)
    assert gaussian_nb_fit_predict(X, y, Xt).tolist() == ref.predict(Xt.numpy()).tolist()


def test_shared_nb_is_a_linear_rule_float32():
    X, y = _data()
    p = gaussian_nb_fit(X.float(), y)
    lp = gaussian_nb_log_proba(p, X.float())
    assert lp.dtype == torch.float32 and torch.allclose(lp.exp().sum(1), torch.ones(len(X)), atol=1e-5)
    # differences of joint log-likelihoods are affine in x with a shared variance: second differences vanish
    x0, x1 = X[:1].float(), X[1:2].float()
    mids = torch.cat([x0, 0.5 * (x0 + x1), x1])
    d = gaussian_nb_log_proba(p, mids)
    d = d - d[:, :1]
    assert torch.allclose(d[1], 0.5 * (d[0] + d[2]), atol=1e-3)


# -- samples_to_reach -----------------------------------------------------------------------------------------------


def _curve(sizes, errors):
    sizes = torch.as_tensor(sizes)
    errors = torch.as_tensor(errors, dtype=torch.float64).reshape(-1, len(sizes))
    return LearningCurve(sizes, errors, tuple(range(len(errors))), errors.mean(0), errors.mean(0) * 0)


def test_samples_to_reach_power_law_exact():
    """e(m) = a + c/m on a log grid: linear interpolation in log m of a convex curve; on a dense grid it converges
    to the exact crossing m* = c / tol."""
    sizes = torch.unique(torch.logspace(1, 4, 3000).round().long())
    err = 0.1 + 5.0 / sizes.double()
    r = samples_to_reach(_curve(sizes, err), 0.1, 0.01)
    assert abs(float(r.per_seed[0]) - 500.0) < 0.5 and bool(r.reached[0])
    assert abs(r.mean_curve - 500.0) < 0.5 and r.level == pytest.approx(0.11)


def test_samples_to_reach_interpolation_first_point_and_never():
    c = _curve([10, 100, 1000], [[0.40, 0.20, 0.12], [0.05, 0.04, 0.03], [0.5, 0.4, 0.3]])
    r = samples_to_reach(c, 0.10, 0.05)
    assert float(r.per_seed[0]) == pytest.approx(10 ** 2.625)
    assert float(r.per_seed[1]) == pytest.approx(10.0)  # already within tolerance at the first size
    assert math.isinf(float(r.per_seed[2])) and r.reached.tolist() == [True, True, False]


def test_samples_to_reach_first_crossing_and_nan_safe():
    # dips below then rises again: the first crossing counts
    r = samples_to_reach(_curve([1, 10, 100, 1000], [0.5, 0.1, 0.3, 0.05]), 0.0, 0.2)
    assert float(r.per_seed[0]) == pytest.approx(10 ** (0.3 / 0.4))
    # a NaN between: the bracket is the last finite point before the crossing
    r = samples_to_reach(_curve([1, 10, 100, 1000], [0.5, math.nan, 0.1, math.nan]), 0.0, 0.3)
    assert float(r.per_seed[0]) == pytest.approx(10 ** (2 * 0.2 / 0.4))
    r = samples_to_reach(_curve([1, 10], [math.nan, math.nan]), 0.0, 0.3)
    assert math.isinf(float(r.per_seed[0])) and math.isinf(r.mean_curve)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=8), st.floats(0.0, 0.5), st.floats(0.01, 0.5))
def test_samples_to_reach_brackets(errs, asym, tol):
    sizes = torch.tensor([2 ** i for i in range(1, len(errs) + 1)])
    r = samples_to_reach(_curve(sizes, errs), asym, tol)
    level = asym + tol
    hits = [i for i, e in enumerate(errs) if e <= level]
    if not hits:
        assert math.isinf(float(r.per_seed[0]))
    else:
        i = hits[0]
        lo = int(sizes[i - 1]) if i > 0 else int(sizes[0])
        assert lo - 1e-9 <= float(r.per_seed[0]) <= int(sizes[i]) + 1e-9


# -- exact errors ---------------------------------------------------------------------------------------------------


def test_bayes_error_two_classes_closed_form():
    from scipy.stats import norm

    n = 6
    var = torch.linspace(0.5, 3.0, n, dtype=torch.float64)
    mu = torch.stack([torch.zeros(n, dtype=torch.float64), torch.linspace(-1, 1.5, n, dtype=torch.float64)])
    delta = float(((mu[1] - mu[0]) ** 2 / var).sum().sqrt())
    assert bayes_error(mu, torch.diag(var)) == pytest.approx(norm.cdf(-delta / 2), rel=1e-12)
    # unequal priors: threshold moves by log(p0/p1)/delta
    p = torch.tensor([0.7, 0.3], dtype=torch.float64)
    k = math.log(0.7 / 0.3) / delta
    want = 0.7 * norm.cdf(-delta / 2 - k) + 0.3 * norm.cdf(-delta / 2 + k)
    assert bayes_error(mu, torch.diag(var), p) == pytest.approx(want, rel=1e-12)
    assert naive_bayes_asymptotic_error(mu, torch.diag(var), p) == pytest.approx(want, rel=1e-12)  # same rule


def test_exact_errors_match_monte_carlo_five_classes_correlated():
    g = torch.Generator().manual_seed(0)
    n, K, N = 5, 5, 400_000
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    cov = 0.3 * A @ A.T + torch.eye(n, dtype=torch.float64)
    v = torch.randn(n, generator=g, dtype=torch.float64)
    means = torch.tensor([0.0, 1.0, 1.5, 3.0, 4.0], dtype=torch.float64)[:, None] * v[None, :]
    priors = torch.tensor([0.1, 0.3, 0.2, 0.25, 0.15], dtype=torch.float64)
    y = torch.multinomial(priors, N, replacement=True, generator=g)
    X = means[y] + torch.randn(N, n, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    P = torch.linalg.inv(cov)
    for precision, exact in ((P, bayes_error(means, cov, priors)),
                             (torch.diag(1 / torch.diagonal(cov)), naive_bayes_asymptotic_error(means, cov, priors))):
        d = X[:, None, :] - means[None]
        score = priors.log() - 0.5 * torch.einsum("mki,ij,mkj->mk", d, precision, d)
        mc = float((score.argmax(1) != y).double().mean())
        assert abs(mc - exact) < 4 * math.sqrt(exact * (1 - exact) / N)
    assert naive_bayes_asymptotic_error(means, cov, priors) > bayes_error(means, cov, priors)


# -- harness ---------------------------------------------------------------------------------------------------------


def _sample(size, g):
    y = torch.arange(size) % 3
    return torch.randn(size, 4, generator=g, dtype=torch.float64) + 2.0 * y[:, None], y


def test_learning_curve_nested_prefixes_and_reproducible():
    seen = []

    def fit_predict(X, y, Xt):
        seen.append(X.clone())
        return gaussian_nb_fit_predict(X, y, Xt)

    c = learning_curve(fit_predict, _sample, [30, 6, 12, 12], [3, 4], test_size=500)
    assert c.sizes.tolist() == [6, 12, 30] and c.errors.shape == (2, 3) and c.seeds == (3, 4)
    assert torch.equal(seen[0], seen[2][:6]) and torch.equal(seen[1], seen[2][:12])  # nested
    again = learning_curve(gaussian_nb_fit_predict, _sample, [6, 12, 30], [3, 4], test_size=500)
    assert torch.equal(c.errors, again.errors)
    assert torch.allclose(c.mean, c.errors.mean(0)) and torch.allclose(c.std, c.errors.std(0))
    fresh = learning_curve(gaussian_nb_fit_predict, _sample, [6, 12, 30], [3, 4], test_size=500, nested=False)
    assert fresh.errors.shape == (2, 3)
    stop = learning_curve(gaussian_nb_fit_predict, _sample, [6, 12, 30], [3], test_size=500, stop_below=1.0)
    assert math.isfinite(float(stop.errors[0, 0])) and bool(stop.errors[0, 1:].isnan().all())


# -- error messages -------------------------------------------------------------------------------------------------


def test_error_messages():
    X, y = _data()
    with pytest.raises(ValueError, match=r"y must contain every class 0\.\.4, got no samples of class\(es\) \[4\]"):
        gaussian_nb_fit(X, y, num_classes=5)
    with pytest.raises(ValueError, match=r"y must have labels in 0\.\.2 \(num_classes=3\), got 3"):
        gaussian_nb_fit(X, y, num_classes=3)
    with pytest.raises(ValueError, match="var_smoothing must be >= 0"):
        gaussian_nb_fit(X, y, var_smoothing=-1.0)
    with pytest.raises(ValueError, match="var_smoothing must be > 0 here"):
        gaussian_nb_fit(torch.zeros(4, 2, dtype=torch.float64), torch.tensor([0, 1, 0, 1]), var_smoothing=0.0)
    p = gaussian_nb_fit(X, y)
    with pytest.raises(ValueError, match=r"X must have 7 features \(those of params.means\), got 3"):
        gaussian_nb_log_proba(p, X[:, :3])
    with pytest.raises(TypeError, match=r"X must have the dtype of params.means \(torch.float64\), got torch.float32"):
        gaussian_nb_predict(p, X.float())
    with pytest.raises(ValueError, match="must be collinear"):
        bayes_error(torch.eye(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="means must not all coincide"):
        bayes_error(torch.zeros(2, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="covariance"):
        bayes_error(torch.ones(2, 3, dtype=torch.float64) * torch.tensor([[0.0], [1.0]], dtype=torch.float64),
                    torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="covariance must be symmetric positive definite"):
        naive_bayes_asymptotic_error(torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64),
                                     -torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="tol must be > 0"):
        samples_to_reach(_curve([1, 2], [0.5, 0.1]), 0.0, 0.0)
    with pytest.raises(ValueError, match="curve.sizes must be positive and strictly increasing"):
        samples_to_reach(_curve([2, 1], [0.5, 0.1]), 0.0, 0.1)
    with pytest.raises(TypeError, match="curve must be a LearningCurve"):
        samples_to_reach([0.5, 0.1], 0.0, 0.1)
    with pytest.raises(TypeError, match="fit_predict must be callable"):
        learning_curve(3, _sample, [4], [0])
    msg = r"fit_predict must return one label per test sample, shape \(10,\), got \(9,\)"
    with pytest.raises(ValueError, match=msg):
        learning_curve(lambda X, y, Xt: torch.zeros(9), _sample, [4], [0], test_size=10)
    with pytest.raises(TypeError, match="fit_predict must return a torch.Tensor or numpy array of labels, got list"):
        learning_curve(lambda X, y, Xt: [0] * 10, _sample, [4], [0], test_size=10)
