"""Rate-checking helpers: runner closed forms, handbook bounds, bound checks, slope fits, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from paperzoo.optim.rates import (check_bound, fit_linear_rate, fit_loglog_slope, gd_convex_bound, gd_pl_bound,
                                  gd_strongly_convex_bound, heavy_ball_convex_bound, run_gradient_method,
                                  run_heavy_ball, sgd_strongly_convex_bound, soft_threshold, subgradient_bound)


def test_gradient_descent_on_a_diagonal_quadratic_is_the_closed_form():
    lam = torch.tensor([1.0, 4.0], dtype=torch.float64)
    x0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    traj = run_gradient_method(lambda x, t: lam * x, x0, 0.1, 20, record=[0, 5, 20])
    assert traj.steps.tolist() == [0, 5, 20] and traj.n_iter == 20 and not traj.diverged
    for k, t in enumerate([0, 5, 20]):
        torch.testing.assert_close(traj.last[k], (1 - 0.1 * lam) ** t * x0)
    # Uniform average of x_1..x_20: a geometric sum.
    r = 1 - 0.1 * lam
    torch.testing.assert_close(traj.average[-1], x0 * r * (1 - r**20) / (1 - r) / 20)


def test_proximal_step_and_batched_runs():
    traj = run_gradient_method(lambda x, t: torch.zeros_like(x), torch.tensor([[3.0], [-0.5]]), 1.0, 2,
                               prox=lambda y, g: soft_threshold(y, g))
    assert traj.last[-1].flatten().tolist() == [1.0, 0.0]


def test_divergence_warns_and_stops():
    with pytest.warns(RuntimeWarning, match="reduce step_size"):
        traj = run_gradient_method(lambda x, t: 1e300 * x, torch.ones(1, dtype=torch.float64), 1e10, 50)
    assert traj.diverged and traj.n_iter < 50 and torch.isnan(traj.last[-1]).all()


def test_bounds_closed_forms_and_gd_meets_them():
    t = torch.arange(1, 51, dtype=torch.float64)
    assert gd_convex_bound(torch.tensor([0.0]), 1.0, 1.0).item() == math.inf
    torch.testing.assert_close(gd_strongly_convex_bound(t, 4.0, 1.0, 2.0), 2.0 * 0.75**t)
    assert sgd_strongly_convex_bound(torch.tensor([1e6]), 0.1, 1.0, 1.0, 3.0).item() == pytest.approx(0.6)
    lam = torch.tensor([1.0, 4.0], dtype=torch.float64)
    x0 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    traj = run_gradient_method(lambda x, s: lam * x, x0, 1 / 4.0, 50)
    gap = 0.5 * (lam * traj.last[1:] ** 2).sum(-1)
    assert check_bound(gap, gd_convex_bound(t, 4.0, 2.0)).holds
    assert check_bound((traj.last**2).sum(-1), gd_strongly_convex_bound(torch.arange(51.0), 4.0, 1.0, 2.0)).holds


def test_heavy_ball_is_the_iterate_moving_average_form():
    """x_{t+1} = x_t - 2 eta/(t+3) g_t + t/(t+3) (x_t - x_{t-1}) equals z_{t+1} = z_t - eta g_t,
    x_{t+1} = (lambda_{t+1} x_t + z_{t+1}) / (1 + lambda_{t+1}) with lambda_t = t/2 (the handbook's IMA form)."""
    H = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    grad = lambda x, t: x @ H - torch.tensor([1.0, -1.0], dtype=torch.float64)  # noqa: E731
    x0 = torch.tensor([3.0, -2.0], dtype=torch.float64)
    traj = run_heavy_ball(grad, x0, 0.1, 30)
    x, z = x0.clone(), x0.clone()
    for t in range(30):
        z = z - 0.1 * grad(x, t)
        lam = (t + 1) / 2
        x = (lam * x + z) / (1 + lam)
        torch.testing.assert_close(traj.last[t + 1], x, rtol=1e-12, atol=1e-12)
    assert traj.n_iter == 30 and not traj.diverged
    torch.testing.assert_close(traj.average[-1], traj.last[1:].mean(0))


def test_new_bounds_closed_forms_and_that_the_methods_meet_them():
    t = torch.arange(0, 6, dtype=torch.float64)
    torch.testing.assert_close(gd_pl_bound(t, 4.0, 1.0, 2.0), 2.0 * 0.75**t)
    torch.testing.assert_close(heavy_ball_convex_bound(t, 0.5, 2.0, 3.0), 4.0 / (t + 1) + 3.0)
    torch.testing.assert_close(subgradient_bound(torch.tensor([1.0, 0.5, 0.5], dtype=torch.float64), 2.0, 1.0),
                               torch.tensor([2.5, 2.0, 1.75], dtype=torch.float64))
    # heavy ball on a convex quadratic with eta = 1/(4L): f(x_t) - f* <= ||x0 - x*||^2 / (eta (t+1))
    lam = torch.tensor([1.0, 0.1, 0.01], dtype=torch.float64)
    x0 = torch.ones(3, dtype=torch.float64)
    traj = run_heavy_ball(lambda x, s: lam * x, x0, 0.25, 200)
    gap = 0.5 * (lam * traj.last**2).sum(-1)
    steps = torch.arange(201, dtype=torch.float64)
    assert check_bound(gap[1:], heavy_ball_convex_bound(steps[1:], 0.25, 3.0)).holds
    # subgradient method on |x| with a constant step: best value <= (R^2 + G^2 gamma^2 t) / (2 gamma t)
    sub = run_gradient_method(lambda x, s: torch.sign(x), torch.tensor([1.0], dtype=torch.float64), 0.07, 100)
    best = torch.cummin(sub.last.abs().squeeze(-1), 0).values[:-1]  # best of x_0..x_{t-1}
    bound = subgradient_bound(torch.full((100,), 0.07, dtype=torch.float64), 1.0, 1.0)
    res = check_bound(best, bound)
    assert res.holds and res.max_ratio > 0.4  # nearly attained: the iterates hop around 0
    # PL without convexity: f(x) = x^2 + 3 sin^2 x is PL (Karimi et al. 2016); GD with 1/L, L = 8, holds the
    # bound with any mu below the PL constant; mu = 1/32 is theirs
    f = lambda x: x**2 + 3 * torch.sin(x) ** 2  # noqa: E731
    gd = run_gradient_method(lambda x, s: 2 * x + 3 * torch.sin(2 * x), torch.tensor([2.5], dtype=torch.float64),
                             1 / 8.0, 100)
    gaps = f(gd.last).squeeze(-1)
    assert check_bound(gaps[1:], gd_pl_bound(steps[1:101], 8.0, 1 / 32, float(gaps[0]))).holds


def test_check_bound_reports_ratio_and_violations():
    res = check_bound(torch.tensor([0.5, 2.0, float("nan")]), torch.tensor([1.0, 1.0, 1.0]))
    assert not res.holds and res.n_violations == 2 and res.max_ratio == math.inf
    assert check_bound(torch.tensor([1.05]), torch.tensor([1.0]), rtol=0.1).holds


def test_slope_fits():
    T = torch.logspace(2, 5, 7, dtype=torch.float64)
    fit = fit_loglog_slope(T, 2.0 * T**-0.5)
    assert fit.slope == pytest.approx(-0.5) and fit.r2 == pytest.approx(1.0)
    assert fit_linear_rate(torch.arange(20.0), 3 * 0.7 ** torch.arange(20.0)) == pytest.approx(0.7)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: run_gradient_method(lambda x, t: x, torch.ones(1), 0.0, 5), ValueError,
         r"^step_size must be > 0.0, got 0.0$"),
        (lambda: run_gradient_method(lambda x, t: x, torch.ones(1), 0.1, 0), ValueError,
         r"^num_steps must be >= 1, got 0$"),
        (lambda: run_gradient_method(lambda x, t: x, torch.ones(1), 0.1, 5, record=[6]), ValueError,
         r"^record must be <= 5, got 6$"),
        (lambda: run_gradient_method(lambda x, t: x, torch.tensor(1.0), 0.1, 5), ValueError,
         r"^x0 must have at least 1 dimension\(s\)"),
        (lambda: run_gradient_method(lambda x, t: x[:1], torch.ones(2), 0.1, 5), ValueError,
         r"^oracle must return a tensor of shape \(2,\)"),
        (lambda: gd_convex_bound(torch.ones(1), L=0.0, r0_sq=1.0), ValueError, r"^L must be > 0.0, got 0.0$"),
        (lambda: sgd_strongly_convex_bound(torch.ones(1), 2.0, 1.0, 1.0, 1.0), ValueError,
         r"^gamma \* mu must be <= 1, got 2.0$"),
        (lambda: check_bound(torch.ones(2), torch.ones(3)), ValueError, r"^measured must have the shape"),
        (lambda: run_heavy_ball(lambda x, t: x, torch.ones(1), 0.0, 5), ValueError, r"^eta must be > 0.0, got 0.0$"),
        (lambda: run_heavy_ball(lambda x, t: x, torch.ones(1), 0.1, 0), ValueError,
         r"^num_steps must be >= 1, got 0$"),
        (lambda: gd_pl_bound(torch.ones(1), L=1.0, mu=2.0, gap0=1.0), ValueError, r"^mu must be <= 1.0, got 2.0$"),
        (lambda: heavy_ball_convex_bound(torch.ones(1), eta=0.1, r0_sq=-1.0), ValueError,
         r"^r0_sq must be >= 0.0, got -1.0$"),
        (lambda: subgradient_bound(torch.tensor([0.1, 0.0]), 1.0, 1.0), ValueError, r"^step_sizes must be > 0"),
        (lambda: fit_loglog_slope(torch.tensor([1.0, 2.0]), -torch.ones(2)), ValueError, r"^x and y must be > 0"),
        (lambda: fit_loglog_slope(torch.ones(3), torch.rand(3) + 1), ValueError,
         r"^x must hold at least two distinct values"),
        (lambda: fit_linear_rate(torch.zeros(3), torch.rand(3) + 1), ValueError,
         r"^t must hold at least two distinct values"),
    ],
)
def test_rejects_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
