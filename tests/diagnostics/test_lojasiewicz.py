"""Uniform-LGI: fit against numpy polyfit and exact power laws, bounds against closed forms and an ODE solver,
GD records against a hand-written linear-regression loop, the Rademacher bound against Monte Carlo, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.lojasiewicz import (
    fit_uniform_lgi, lgi_constant, lgi_convergence_bound, lgi_linear_generalization_bound, lgi_trajectory,
    linear_ball_rademacher, rademacher_generalization_bound, trajectory_length_bound,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: intra-op threads only add contention


def _half_mse(out, y):
    return 0.5 * (out - y).square().mean()


def _linear_data(n=8, d=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    return x, y


def _zero_linear(d):
    m = torch.nn.Linear(d, 1, bias=False).double()
    torch.nn.init.zeros_(m.weight)
    return m


# -- fit -------------------------------------------------------------------------------------------------------------

def test_fit_matches_numpy_polyfit_and_lowered_intercept():
    rng = np.random.default_rng(0)
    losses = np.sort(rng.uniform(1e-6, 1.0, 40))[::-1].copy()
    norms = 0.8 * losses**0.6 * np.exp(rng.normal(0, 0.1, 40))
    fit = fit_uniform_lgi(torch.tensor(losses), torch.tensor(norms), 0.0)
    slope, icpt = np.polyfit(np.log(losses), np.log(norms), 1)
    low = icpt + (np.log(norms) - np.polyval([slope, icpt], np.log(losses))).min()
    assert fit.theta == pytest.approx(slope, abs=1e-12)
    assert fit.c == pytest.approx(math.exp(low), rel=1e-12)
    assert fit.n_points == 40 and fit.theta_ci_low < fit.theta < fit.theta_ci_high
    assert np.all(norms >= fit.c * losses**fit.theta * (1 - 1e-12))  # the inequality holds at every point


@settings(max_examples=25, deadline=None)
@given(theta=st.floats(0.5, 0.95), c=st.floats(0.01, 100.0), shift=st.floats(-3.0, 3.0))
def test_fit_recovers_exact_power_law(theta, c, shift):
    gaps = torch.logspace(-8, 0, 30, dtype=torch.float64)
    fit = fit_uniform_lgi(gaps + shift, c * gaps**theta, shift)
    assert fit.theta == pytest.approx(theta, abs=1e-8) and fit.c == pytest.approx(c, rel=1e-6)
    assert fit.r2 == pytest.approx(1.0, abs=1e-10)


def test_fit_drops_the_minimum_point():
    losses = torch.tensor([1.0, 0.25, 0.0625, 0.0], dtype=torch.float64)
    fit = fit_uniform_lgi(losses, torch.tensor([2.0, 1.0, 0.5, 0.0], dtype=torch.float64), 0.0)
    assert fit.n_points == 3 and fit.theta == pytest.approx(0.5) and fit.c == pytest.approx(2.0)


def test_lgi_constant_matches_a_python_loop():
    g = torch.Generator().manual_seed(1)
    losses = torch.rand(30, generator=g, dtype=torch.float64) + 0.1
    norms = torch.rand(30, generator=g, dtype=torch.float64)
    expect = min(float(norms[i]) / (float(losses[i]) - 0.05) ** 0.7 for i in range(30))
    assert lgi_constant(losses, norms, 0.05, 0.7) == pytest.approx(expect, rel=1e-12)


# -- bounds: closed forms ------------------------------------------------------------------------------------------

def test_length_bound_is_tight_for_half_square():
    # L = w^2 / 2: ||grad|| = sqrt(2 L), c = sqrt 2, theta = 1/2; gradient flow from w0 travels exactly |w0|
    for w0 in (0.3, 1.0, 7.0):
        assert trajectory_length_bound(w0**2 / 2, math.sqrt(2.0), 0.5) == pytest.approx(w0, rel=1e-14)


def test_convergence_bound_solves_the_lgi_ode():
    from scipy.integrate import solve_ivp

    t = torch.linspace(0.0, 5.0, 11, dtype=torch.float64)
    for theta in (0.5, 0.75, 0.9, 0.3):
        c, d0 = 1.3, 2.0
        sol = solve_ivp(lambda _, y: -c * c * np.maximum(y, 0.0) ** (2 * theta), (0, 5), [d0],
                        t_eval=t.numpy(), rtol=1e-11, atol=1e-14)
        got = lgi_convergence_bound(d0, c, theta, t).numpy()
        assert np.allclose(got, sol.y[0], rtol=1e-6, atol=1e-9), theta


def test_half_square_gradient_flow_meets_the_convergence_bound_with_equality():
    t = torch.linspace(0, 3, 7, dtype=torch.float64)
    w0 = 2.0  # L(w_t) = w0^2 e^{-2t} / 2 exactly
    assert torch.allclose(lgi_convergence_bound(w0**2 / 2, math.sqrt(2.0), 0.5, t), 0.5 * w0**2 * torch.exp(-2 * t))


# -- trajectories -------------------------------------------------------------------------------------------------

def test_trajectory_matches_hand_written_linear_regression_loop():
    x, y = _linear_data()
    model = _zero_linear(20)
    tr = lgi_trajectory(model, _half_mse, x, y, lr=0.05, steps=30, record_every=10)
    assert float(model.weight.detach().abs().sum()) == 0.0  # the model is not modified
    w, path, losses, norms, dists = torch.zeros(20, dtype=torch.float64), 0.0, [], [], []
    for k in range(31):
        r = x @ w - y[:, 0]
        grad = x.T @ r / 8
        if k % 10 == 0:
            losses.append(0.5 * float(r @ r) / 8)
            norms.append(float(grad.norm()))
            dists.append(float(w.norm()))
            assert float(tr.path_length[k // 10]) == pytest.approx(path, rel=1e-12, abs=1e-15)
        if k == 30:
            w30 = w.clone()
        w = w - 0.05 * grad
        path += 0.05 * float(grad.norm())
    assert tr.steps.tolist() == [0, 10, 20, 30] and tr.n_iter == 30 and not tr.diverged
    assert np.allclose(tr.losses.numpy(), losses, rtol=1e-12)
    assert np.allclose(tr.grad_norms.numpy(), norms, rtol=1e-12)
    assert np.allclose(tr.distance.numpy(), dists, rtol=1e-12)
    assert torch.allclose(tr.params, w30, rtol=1e-12, atol=1e-15)  # the parameters after the last step, w_30


def test_grad_norms_match_autograd_on_a_network():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)).double()
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 1, dtype=torch.float64)
    tr = lgi_trajectory(net, torch.nn.functional.mse_loss, x, y, lr=0.1, steps=0)
    grads = torch.autograd.grad(torch.nn.functional.mse_loss(net(x), y), list(net.parameters()))
    assert float(tr.grad_norms[0]) == pytest.approx(float(torch.cat([g.reshape(-1) for g in grads]).norm()), rel=1e-12)


def test_linear_regression_theta_half_and_bounds_hold():
    # over-parameterized least squares: theta = 1/2, c >= sqrt(2 lambda_min(X X^T) / n); the GD path lies between
    # the min-norm distance sqrt(y^T (X X^T)^{-1} y) and the LGI length bound
    x, y = _linear_data(n=8, d=40, seed=3)
    K = x @ x.T
    lam = torch.linalg.eigvalsh(K)
    lr = 0.5 / float(lam[-1] / 8)
    tr = lgi_trajectory(_zero_linear(40), _half_mse, x, y, lr=lr, steps=600)
    keep = tr.losses > 1e-14 * tr.losses[0]
    fit = fit_uniform_lgi(tr.losses[keep], tr.grad_norms[keep], 0.0)
    assert abs(fit.theta - 0.5) < 0.03
    assert lgi_constant(tr.losses[keep], tr.grad_norms[keep], 0.0, 0.5) >= math.sqrt(2 * float(lam[0]) / 8) * (1 - 1e-9)
    R = trajectory_length_bound(float(tr.losses[0]), fit.c, fit.theta)
    min_norm = float((y[:, 0] @ torch.linalg.solve(K, y[:, 0])).sqrt())
    assert min_norm * (1 - 1e-6) <= float(tr.path_length[-1]) <= R
    assert float(tr.distance[-1]) == pytest.approx(min_norm, rel=1e-6)


def test_quartic_loss_gives_theta_above_half():
    x, y = _linear_data(n=8, d=40, seed=3)
    tr = lgi_trajectory(_zero_linear(40), lambda o, t: 0.25 * (o - t).pow(4).mean(), x, y, lr=0.002, steps=400)
    fit = fit_uniform_lgi(tr.losses, tr.grad_norms, 0.0)
    assert 0.65 < fit.theta < 0.95


def test_divergence_is_flagged_with_a_warning():
    x, y = _linear_data()
    with pytest.warns(RuntimeWarning, match="non-finite at step"):
        tr = lgi_trajectory(_zero_linear(20), _half_mse, x, y, lr=1e6, steps=400)
    assert tr.diverged and tr.n_iter < 400 and torch.isfinite(tr.losses).all()


# -- Rademacher / generalization ----------------------------------------------------------------------------------

def test_ball_rademacher_bounds_the_monte_carlo_value():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(30, 5, generator=g, dtype=torch.float64)
    sigma = torch.randint(0, 2, (20000, 30), generator=g).double() * 2 - 1
    mc = float((sigma @ x).norm(dim=1).mean()) * 1.5 / 30  # sup over the ball of radius 1.5: R ||sum s_i x_i|| / n
    bound = linear_ball_rademacher(x, 1.5)
    assert mc <= bound and mc >= 0.9 * bound  # Jensen's gap is small for d << n


def test_generalization_bounds_compose():
    x = torch.eye(4, dtype=torch.float64)
    b = lgi_linear_generalization_bound(x, 0.5, 1.0, 0.5, 1.0, delta=0.1)
    assert b.radius == pytest.approx(math.sqrt(2.0)) and b.rademacher == pytest.approx(math.sqrt(2.0) / 2)
    assert b.lipschitz == pytest.approx(math.sqrt(2.0) + 1.0) and b.loss_range == pytest.approx(b.lipschitz**2 / 2)
    expect = 2 * b.lipschitz * b.rademacher + 3 * b.loss_range * math.sqrt(math.log(20.0) / 8)
    assert b.bound == pytest.approx(expect, rel=1e-14)
    assert rademacher_generalization_bound(0.0, 1.0, 0.0, 10, 0.5) == 0.0


# -- bad input ----------------------------------------------------------------------------------------------------

def test_errors_are_pinned():
    l, gn = torch.tensor([1.0, 0.5]), torch.tensor([1.0, 0.7])
    with pytest.raises(ValueError, match=r"min_loss must be <= min\(losses\) = 0.5, got 0.6"):
        fit_uniform_lgi(l, gn, 0.6)
    with pytest.raises(ValueError, match="grad_norms"):
        fit_uniform_lgi(l, torch.tensor([1.0, 0.7, 0.1]), 0.0)
    with pytest.raises(ValueError, match="at least two distinct values above min_loss"):
        fit_uniform_lgi(torch.tensor([1.0, 1.0]), gn, 0.0)
    with pytest.raises(ValueError, match="grad_norms must be >= 0|grad_norms must have nonnegative"):
        fit_uniform_lgi(l, torch.tensor([1.0, -0.7]), 0.0)
    with pytest.raises(ValueError, match="theta must be < 1"):
        trajectory_length_bound(1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="c must be > 0"):
        lgi_convergence_bound(1.0, 0.0, 0.5, torch.ones(2))
    with pytest.raises(ValueError, match="lr must be > 0"):
        lgi_trajectory(_zero_linear(3), _half_mse, torch.ones(2, 3, dtype=torch.float64),
                       torch.ones(2, 1, dtype=torch.float64), lr=0.0, steps=1)
    with pytest.raises(ValueError, match="targets must have 2 rows"):
        lgi_trajectory(_zero_linear(3), _half_mse, torch.ones(2, 3, dtype=torch.float64),
                       torch.ones(3, 1, dtype=torch.float64), lr=0.1, steps=1)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_grad_norm_matches_backpack_batch_grad():
    from backpack import backpack, extend
    from backpack.extensions import BatchGrad

    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    x, y = torch.randn(7, 3, dtype=torch.float64), torch.randn(7, 1, dtype=torch.float64)
    tr = lgi_trajectory(net, torch.nn.functional.mse_loss, x, y, lr=0.1, steps=0)
    ext, lossf = extend(net), extend(torch.nn.MSELoss())
    with backpack(BatchGrad()):
        lossf(ext(x), y).backward()
    full = torch.cat([p.grad_batch.sum(0).reshape(-1) for p in ext.parameters()])  # mean-loss per-sample terms
    assert float(tr.grad_norms[0]) == pytest.approx(float(full.norm()), rel=1e-10)
