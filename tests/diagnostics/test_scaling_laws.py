"""Tests for paperzoo.diagnostics.scaling_laws: closed-form GD against iterations, limits, fits, errors."""

import math

import pytest
import torch

from paperzoo.diagnostics.scaling_laws import (compute_optimal_frontier, fit_power_law, infinite_width_loss,
                                               power_law_task, predicted_exponents, random_feature_gd_loss)

D = torch.float64


def _explicit_gd(lam, w_star, A, X, lr, steps):
    """Plain GD iterations on the (empirical or population) squared loss, losses recorded at every step."""
    N = A.shape[0]
    w = torch.zeros(N, dtype=D)
    out = []
    for n in range(steps + 1):
        v = A.T @ w / math.sqrt(N) - w_star
        out.append(float((v * v * lam).sum()))
        if X is None:
            grad = (A * lam) @ v / math.sqrt(N)
        else:
            phi = X @ A.T / math.sqrt(N)
            grad = phi.T @ (phi @ w - X @ w_star) / X.shape[0]
        w = w - lr * grad
    return torch.tensor(out, dtype=D)


@pytest.mark.parametrize("finite_p", [False, True])
def test_closed_form_gd_matches_iterations(finite_p):
    g = torch.Generator().manual_seed(0)
    lam, w = power_law_task(12, 2.0, 1.5)
    A = torch.randn(7, 12, generator=g, dtype=D)
    X = torch.randn(9, 12, generator=g, dtype=D) * lam.sqrt() if finite_p else None
    lr, steps = 0.3, 40
    ref = _explicit_gd(lam, w, A, X, lr, steps)
    times = torch.arange(steps + 1, dtype=D) * lr
    out = random_feature_gd_loss(lam, w, A, times, samples=X, lr=lr)
    torch.testing.assert_close(out.test_loss, ref, rtol=1e-10, atol=1e-13)


def test_gradient_flow_is_small_step_gd_limit_and_train_loss():
    g = torch.Generator().manual_seed(1)
    lam, w = power_law_task(10, 2.0, 1.5)
    A = torch.randn(6, 10, generator=g, dtype=D)
    X = torch.randn(8, 10, generator=g, dtype=D) * lam.sqrt()
    t = torch.tensor([0.0, 2.0, 5.0], dtype=D)
    flow = random_feature_gd_loss(lam, w, A, t, samples=X)
    gd = random_feature_gd_loss(lam, w, A, t, samples=X, lr=1e-4)
    torch.testing.assert_close(gd.test_loss, flow.test_loss, rtol=1e-3, atol=0)
    # training error at t = 0 is the mean squared target
    assert float(flow.train_loss[0]) == pytest.approx(float(((X @ w) ** 2).mean()), rel=1e-12)


def test_infinite_width_limit_exact():
    # A with A^T A / N = I exactly (orthonormal columns scaled by sqrt N): the population dynamics are those of the
    # infinite-width model, so the loss equals sum_k lam_k w_k^2 exp(-2 lam_k t) to rounding.
    g = torch.Generator().manual_seed(2)
    M, N = 15, 40
    lam, w = power_law_task(M, 2.5, 1.2)
    Q, _ = torch.linalg.qr(torch.randn(N, M, generator=g, dtype=D))
    A = math.sqrt(N) * Q
    t = torch.tensor([0.0, 0.5, 3.0, 30.0, float("inf")], dtype=D)
    out = random_feature_gd_loss(lam, w, A, t)
    torch.testing.assert_close(out.test_loss, infinite_width_loss(lam, w, t), rtol=1e-10, atol=1e-14)
    lr = 0.5
    tg = torch.arange(6, dtype=D) * lr
    torch.testing.assert_close(random_feature_gd_loss(lam, w, A, tg, lr=lr).test_loss,
                               infinite_width_loss(lam, w, tg, lr=lr), rtol=1e-10, atol=1e-14)


def test_converged_limit_is_least_squares():
    g = torch.Generator().manual_seed(3)
    lam, w = power_law_task(20, 2.0, 1.5)
    A = torch.randn(6, 20, generator=g, dtype=D)
    X = torch.randn(30, 20, generator=g, dtype=D) * lam.sqrt()
    phi = X @ A.T / math.sqrt(6)
    w_ls = torch.linalg.lstsq(phi, (X @ w)[:, None]).solution[:, 0]
    v = A.T @ w_ls / math.sqrt(6) - w
    out = random_feature_gd_loss(lam, w, A, torch.tensor([float("inf")], dtype=D), samples=X)
    assert float(out.test_loss[0]) == pytest.approx(float((v * v * lam).sum()), rel=1e-9)


def test_infinite_width_power_law_exponent_matches_prediction():
    lam, w = power_law_task(200000, 2.0, 2.0)
    t = torch.logspace(1, 3, 8, dtype=D)
    fit = fit_power_law(t, infinite_width_loss(lam, w, t))
    assert fit.exponent == pytest.approx(predicted_exponents(2.0, 2.0).time, abs=2e-3)


def test_fit_recovers_synthetic_power_law():
    g = torch.Generator().manual_seed(4)
    x = torch.logspace(0, 3, 20, dtype=D)
    y = 2.5 * x ** -0.7 * torch.exp(0.01 * torch.randn(20, generator=g, dtype=D))
    f = fit_power_law(x, y)
    assert f.ci_low < 0.7 < f.ci_high
    assert f.exponent == pytest.approx(0.7, abs=0.01) and f.prefactor == pytest.approx(2.5, rel=0.03)
    # against scipy's linregress
    from scipy import stats
    r = stats.linregress(torch.log(x).numpy(), torch.log(y).numpy())
    assert f.exponent == pytest.approx(-r.slope, rel=1e-12) and f.stderr == pytest.approx(r.stderr, rel=1e-9)
    exact = fit_power_law(x, 3 * x ** -1.25)
    assert exact.exponent == pytest.approx(1.25, abs=1e-12) and exact.r2 == pytest.approx(1.0)


def test_compute_frontier_recovers_known_optimum():
    # L = t^-0.5 + N^-1 with t = C/N: optimum N* = (2 C^0.5)^(2/3) ~ C^(1/3), t* ~ C^(2/3)
    widths = torch.logspace(0, 4, 81, dtype=D)
    C = torch.logspace(3, 6, 7, dtype=D)
    L = (C[None, :] / widths[:, None]) ** -0.5 + widths[:, None] ** -1.0
    f = compute_optimal_frontier(widths, C, L)
    assert not bool(f.at_edge.any())
    torch.testing.assert_close(f.n_star, (2 * C.sqrt()) ** (2 / 3), rtol=2e-3, atol=0)
    assert fit_power_law(C, f.t_star).exponent == pytest.approx(-2 / 3, abs=2e-3)


def test_predicted_exponents_values():
    e = predicted_exponents(2.0, 2.0)
    assert (e.time, e.width, e.data) == (0.5, 1.0, 1.0)
    assert e.t_star == pytest.approx(2 / 3) and e.n_star == pytest.approx(1 / 3)
    assert e.compute == pytest.approx(1 / 3)
    assert predicted_exponents(2.0, 1.0).t_star == 0.5


def test_error_messages():
    lam, w = power_law_task(4, 2.0, 1.5)
    A = torch.ones(3, 4, dtype=D)
    with pytest.raises(ValueError, match=r"a must be <= 1 \+ b"):
        predicted_exponents(3.0, 1.5)
    with pytest.raises(ValueError, match="a must be > 1.0"):
        predicted_exponents(1.0, 1.5)
    with pytest.raises(ValueError, match="times must be >= 0"):
        random_feature_gd_loss(lam, w, A, torch.tensor([-1.0], dtype=D))
    with pytest.raises(ValueError, match="times must be integer multiples of lr = 0.3"):
        random_feature_gd_loss(lam, w, A, torch.tensor([0.5], dtype=D), lr=0.3)
    with pytest.raises(ValueError, match="x must have at least 3 points"):
        fit_power_law(torch.tensor([1.0, 2.0], dtype=D), torch.tensor([1.0, 2.0], dtype=D))
    with pytest.raises(ValueError, match="y must be > 0"):
        fit_power_law(torch.tensor([1.0, 2.0, 3.0], dtype=D), torch.tensor([1.0, 0.0, 2.0], dtype=D))
    with pytest.raises(ValueError, match="widths must be positive and strictly increasing"):
        compute_optimal_frontier(torch.tensor([1.0, 1.0, 2.0], dtype=D), torch.tensor([1.0], dtype=D),
                                 torch.ones(3, 1, dtype=D))
    with pytest.raises(ValueError, match="projection"):
        random_feature_gd_loss(lam, w, torch.ones(3, 5, dtype=D), torch.tensor([1.0], dtype=D))
