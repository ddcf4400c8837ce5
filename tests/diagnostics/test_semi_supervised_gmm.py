import math

import pytest
import torch

from paperzoo.diagnostics.semi_supervised_gmm import (_labeled_sum, _self_train, labeled_direction,
                                                      linear_rule_error, sample_shifted_unlabeled,
                                                      self_training_direction, shift_tv_bound)


def _problem(d=20, m=6, n=500, seed=0, shift=0.3):
    g = torch.Generator().manual_seed(seed)
    mu = torch.zeros(d, dtype=torch.float64)
    mu[0] = 2.0
    delta = torch.zeros(d, dtype=torch.float64)
    delta[1] = shift
    y = torch.arange(m) % 2
    X = (2 * y[:, None] - 1).double() * mu + torch.randn(m, d, generator=g, dtype=torch.float64)
    U = sample_shifted_unlabeled(mu, delta, n, generator=g)
    return mu, X, y, U


def test_exact_error_matches_monte_carlo():
    g = torch.Generator().manual_seed(1)
    d, N = 5, 400_000
    mu = torch.tensor([1.0, -0.5, 0.3, 0.0, 0.2], dtype=torch.float64)
    theta = torch.randn(d, generator=g, dtype=torch.float64)
    b, sigma = 0.4, 1.3
    y = 2 * torch.randint(0, 2, (N,), generator=g).double() - 1
    x = y[:, None] * mu + sigma * torch.randn(N, d, generator=g, dtype=torch.float64)
    mc = float((torch.sign(x @ theta + b) != y).double().mean())
    exact = linear_rule_error(theta, mu, bias=b, sigma=sigma)
    se = math.sqrt(exact * (1 - exact) / N)
    assert abs(mc - exact) < 4 * se


def test_bayes_error_closed_form():
    mu = torch.tensor([2.0, 0.0])
    assert linear_rule_error(mu, mu) == pytest.approx(0.5 * math.erfc(2 / math.sqrt(2)), rel=1e-6)


def test_n_zero_reduces_to_labeled_only():
    mu, X, y, _ = _problem()
    fit = self_training_direction(X, y, X[:0])
    erm = labeled_direction(X, y)
    torch.testing.assert_close(fit.theta, erm / erm.norm(), rtol=0, atol=1e-15)
    assert fit.n_iter == 0 and fit.converged
    assert linear_rule_error(fit.theta, mu) == pytest.approx(linear_rule_error(erm, mu), abs=1e-15)
    lam0 = self_training_direction(X, y, _problem()[3], lam=0.0)
    torch.testing.assert_close(lam0.theta, erm / erm.norm())


def test_labeled_direction_loop():
    _, X, y, _ = _problem(m=7)
    ref = sum((2 * int(y[i]) - 1) * X[i] for i in range(7)) / 7
    torch.testing.assert_close(labeled_direction(X, y), ref)


def test_objective_monotone_and_fixed_point():
    mu, X, y, U = _problem(n=300, shift=1.0)
    a = _labeled_sum(X, y)

    def F(t):
        return float(t @ a + (U @ t).abs().sum())

    values = [F(_self_train(a, U, 1.0, k)[0]) for k in range(1, 6)]
    assert all(v2 >= v1 - 1e-9 for v1, v2 in zip(values, values[1:]))
    fit = self_training_direction(X, y, U)
    step = a + (torch.sign(U @ fit.theta)[:, None] * U).sum(0)
    torch.testing.assert_close(fit.theta, step / step.norm())
    assert fit.objective == pytest.approx(F(fit.theta))


def test_batched_kernel_matches_single_calls():
    probs = [_problem(seed=s) for s in range(3)]
    X = torch.stack([p[1] for p in probs]); y = torch.stack([p[2] for p in probs]); U = torch.stack([p[3] for p in probs])
    theta, _, _, _ = _self_train(_labeled_sum(X, y), U, 1.0, 100)
    for i, p in enumerate(probs):
        torch.testing.assert_close(theta[i], self_training_direction(p[1], p[2], p[3]).theta)


def test_unlabeled_helps_under_small_shift():
    mu, X, y, U = _problem(d=50, m=5, n=2000)
    assert linear_rule_error(self_training_direction(X, y, U).theta, mu) < linear_rule_error(
        labeled_direction(X, y), mu) - 0.02


def test_sampler_moments_and_tv_bound():
    g = torch.Generator().manual_seed(3)
    mu, delta = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.5])
    U = sample_shifted_unlabeled(mu, delta, 200_000, sigma=0.5, generator=g)
    cov = U.T @ U / U.shape[0]
    expected = torch.outer(mu + delta, mu + delta) + 0.25 * torch.eye(2)
    torch.testing.assert_close(cov, expected, atol=1e-2, rtol=0)
    assert shift_tv_bound(delta, sigma=0.5) == pytest.approx(math.erf(0.5 / math.sqrt(2)))


def test_error_messages():
    mu, X, y, U = _problem()
    with pytest.raises(ValueError, match="lam must be >= 0.0, got -1.0"):
        self_training_direction(X, y, U, lam=-1.0)
    with pytest.raises(ValueError, match="theta must be a nonzero vector"):
        linear_rule_error(torch.zeros(20, dtype=torch.float64), mu)
    with pytest.raises(ValueError, match="zero labeled direction"):
        self_training_direction(torch.zeros(2, 3), torch.tensor([0, 1]), torch.ones(4, 3))
    with pytest.raises(ValueError, match="sigma must be > 0"):
        linear_rule_error(mu, mu, sigma=0.0)
    with pytest.raises((ValueError, TypeError), match="y_labeled"):
        labeled_direction(X, y + 2)
    with pytest.raises(ValueError, match="X_unlabeled"):
        self_training_direction(X, y, U[:, :3])


def test_warns_on_max_iter():
    mu, X, y, U = _problem(n=500, shift=-2.0)
    with pytest.warns(RuntimeWarning, match="increase max_iter"):
        self_training_direction(X, y, U, max_iter=1)
