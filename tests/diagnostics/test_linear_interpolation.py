"""Interpolating linear predictors: min-norm against numpy's pinv, trained deep linear nets interpolating and
obeying the null-space decomposition, depth-1 zero-init GD reaching the min-norm interpolant, the excess-risk
closed form against Monte Carlo, the conditional-variance estimator against explicit loops, and errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.linear_interpolation import (conditional_variance, linear_excess_risk,
                                                       min_norm_conditional_variance, min_norm_interpolant,
                                                       train_deep_linear_regression)

DT = torch.float64


def _problem(n=6, d=30, r=None, seed=0, dtype=DT):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.randn(*(() if r is None else (r,)), n, generator=g, dtype=dtype)
    return X, y


def _spd(d, seed=1):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=DT)
    return A @ A.T / d + 0.1 * torch.eye(d, dtype=DT)


# -- min-norm interpolant -------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, d, r", [(5, 20, None), (8, 8, 3), (12, 7, 4)])
def test_min_norm_matches_numpy_pinv(n, d, r):
    X, y = _problem(n, d, r)
    theta = min_norm_interpolant(X, y)
    ref = (np.linalg.pinv(X.numpy()) @ y.numpy().T).T
    np.testing.assert_allclose(theta.numpy(), ref, rtol=0, atol=1e-10)


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 6), extra=st.integers(1, 10), seed=st.integers(0, 10_000))
def test_min_norm_interpolates_and_lies_in_the_row_space(n, extra, seed):
    X, y = _problem(n, n + extra, seed=seed)
    theta = min_norm_interpolant(X, y)
    torch.testing.assert_close(X @ theta, y, rtol=0, atol=1e-9)
    P_perp = torch.eye(X.shape[1], dtype=DT) - torch.linalg.pinv(X) @ X
    assert float((P_perp @ theta).abs().max()) < 1e-9  # no null-space component: the smallest interpolant


# -- deep linear networks -------------------------------------------------------------------------------------

def _lr(X, depth):
    return 1 / (2 * depth * float(torch.linalg.eigvalsh(X @ X.T / X.shape[0]).max()))


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_trained_deep_net_interpolates_and_theta_is_the_layer_product(depth):
    X, y = _problem(6, 30, r=3)
    fit = train_deep_linear_regression(X, y, depth=depth, width=12, init_scale=0.05, last_layer_scale=0.3,
                                       lr=_lr(X, depth), tol=1e-20, max_iter=50_000,
                                       generator=torch.Generator().manual_seed(3))
    assert fit.converged and fit.loss <= 1e-20
    torch.testing.assert_close(fit.theta @ X.T, y, rtol=0, atol=1e-8)
    prod = fit.weights[-1]
    for W in reversed(fit.weights[:-1]):
        prod = prod @ W
    torch.testing.assert_close(fit.theta, prod[:, 0, :], rtol=1e-12, atol=1e-12)
    assert [tuple(W.shape) for W in fit.weights] == ([(3, 12, 30)] + [(3, 12, 12)] * (depth - 2) + [(3, 1, 12)])


def test_depth_one_zero_init_gd_converges_to_the_min_norm_interpolant():
    X, y = _problem(6, 30)
    fit = train_deep_linear_regression(X, y, depth=1, width=1, init_scale=0.0, lr=_lr(X, 1), tol=1e-26,
                                       max_iter=50_000)
    assert fit.converged
    torch.testing.assert_close(fit.theta, min_norm_interpolant(X, y), rtol=0, atol=1e-10)


@pytest.mark.parametrize("depth", [2, 3])
def test_interpolating_net_is_min_norm_plus_the_initial_null_space_term(depth):
    """The paper's decomposition: theta = X^+ y + P_perp W_1(0)^T (W_L ... W_2)^T at the end of training."""
    X, y = _problem(5, 25)
    fit = train_deep_linear_regression(X, y, depth=depth, width=10, init_scale=0.3, last_layer_scale=0.3,
                                       lr=_lr(X, depth), tol=1e-24, max_iter=50_000,
                                       generator=torch.Generator().manual_seed(7))
    assert fit.converged
    rest = fit.weights[-1]
    for W in reversed(fit.weights[1:-1]):
        rest = rest @ W  # (1, m): W_L ... W_2
    P_perp = torch.eye(25, dtype=DT) - torch.linalg.pinv(X) @ X
    predicted = min_norm_interpolant(X, y) + P_perp @ (fit.initial_first_layer.T @ rest[0])
    torch.testing.assert_close(fit.theta, predicted, rtol=0, atol=1e-9)
    assert float((P_perp @ fit.initial_first_layer.T @ rest[0]).norm()) > 0.1  # the term is really there


def test_batched_training_equals_separate_runs_from_the_same_init():
    X, y = _problem(5, 20, r=3)
    kw = dict(depth=3, width=8, init_scale=0.1, last_layer_scale=0.4, lr=_lr(X, 3), max_iter=200, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # tol=0: a fixed number of steps
        batch = train_deep_linear_regression(X, y, generator=torch.Generator().manual_seed(1), **kw)
        for i in range(3):
            one = train_deep_linear_regression(X, y[i], generator=torch.Generator().manual_seed(1), **kw)
            torch.testing.assert_close(batch.theta[i], one.theta, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(one.initial_first_layer, batch.initial_first_layer)


def test_float32_and_initialisation_layout():
    X, y = _problem(4, 16, dtype=torch.float32)
    fit = train_deep_linear_regression(X, y, depth=3, width=6, init_scale=0.2, last_layer_scale=0.5,
                                       lr=_lr(X, 3), tol=1e-8, max_iter=20_000,
                                       generator=torch.Generator().manual_seed(0))
    assert fit.theta.dtype == torch.float32 and fit.converged
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(fit.initial_first_layer, 0.2 * torch.randn(6, 16, generator=g))


def test_nonconvergence_and_divergence_warn():
    X, y = _problem(5, 20)
    with pytest.warns(RuntimeWarning, match=r"did not reach tol=1e-12 in max_iter=3 .*raise max_iter or lr"):
        fit = train_deep_linear_regression(X, y, depth=2, width=4, init_scale=0.1, lr=0.01, max_iter=3)
    assert not fit.converged and fit.n_iter == 3
    with pytest.warns(RuntimeWarning, match=r"the loss became non-finite at step \d+; lower lr \(now 1000"):
        fit = train_deep_linear_regression(X, y, depth=3, width=4, init_scale=1.0, lr=1000.0, max_iter=200)
    assert not fit.converged and all(bool(torch.isfinite(W).all()) for W in fit.weights)


# -- excess risk and conditional variance ---------------------------------------------------------------------

def test_excess_risk_closed_form_against_monte_carlo():
    d = 6
    cov = _spd(d)
    g = torch.Generator().manual_seed(5)
    theta, theta_star = torch.randn(2, d, generator=g, dtype=DT), torch.randn(d, generator=g, dtype=DT)
    x = torch.randn(400_000, d, generator=g, dtype=DT) @ torch.linalg.cholesky(cov).T
    sq = ((x @ (theta - theta_star).T) ** 2)  # (samples, 2)
    mc, se = sq.mean(0), sq.std(0) / sq.shape[0] ** 0.5
    exact = linear_excess_risk(theta, theta_star, cov)
    assert exact.shape == (2,)
    assert bool(((exact - mc).abs() < 4 * se).all()), (exact, mc, se)


def test_conditional_variance_against_explicit_loops():
    g = torch.Generator().manual_seed(2)
    thetas, cov = torch.randn(7, 5, generator=g, dtype=DT), _spd(5)
    cv = conditional_variance(thetas, cov)
    C = np.cov(thetas.numpy(), rowvar=False)
    assert cv.value == pytest.approx(float(np.trace(cov.numpy() @ C)), rel=1e-12)
    loo = [float(np.trace(cov.numpy() @ np.cov(np.delete(thetas.numpy(), i, 0), rowvar=False))) for i in range(7)]
    se = np.sqrt(6 / 7 * np.sum((np.array(loo) - np.mean(loo)) ** 2))
    assert cv.std_error == pytest.approx(se, rel=1e-10) and cv.n_draws == 7


def test_min_norm_conditional_variance_closed_form_against_redraws():
    X, _ = _problem(8, 40)
    cov = _spd(40)
    noise = 0.7 * torch.randn(4000, 8, generator=torch.Generator().manual_seed(9), dtype=DT)
    cv = conditional_variance(min_norm_interpolant(X, X @ torch.ones(40, dtype=DT) + noise), cov)
    exact = min_norm_conditional_variance(X, cov, 0.49)
    P = np.linalg.pinv(X.numpy())
    assert exact == pytest.approx(0.49 * float(np.trace(P.T @ cov.numpy() @ P)), rel=1e-12)
    assert abs(cv.value - exact) < 4 * cv.std_error


# -- errors ---------------------------------------------------------------------------------------------------

def test_error_messages():
    X, y = _problem(3, 5)
    base = dict(depth=2, width=2, init_scale=0.1, lr=0.1)
    with pytest.raises(ValueError, match=r"^depth must be >= 1, got 0$"):
        train_deep_linear_regression(X, y, **{**base, "depth": 0})
    with pytest.raises(ValueError, match=r"^init_scale must be >= 0.0, got -1.0$"):
        train_deep_linear_regression(X, y, **{**base, "init_scale": -1.0})
    with pytest.raises(ValueError, match=r"^lr must be > 0.0, got 0.0$"):
        train_deep_linear_regression(X, y, **{**base, "lr": 0.0})
    with pytest.raises(ValueError,
                       match=r"^y must have n = 3 \(from X\) in its shape \(\.\.\., n\), got shape \(4,\)$"):
        train_deep_linear_regression(X, torch.randn(4, dtype=DT), **base)
    with pytest.raises(ValueError, match=r"^y must have 1 or 2 dimension\(s\)"):
        min_norm_interpolant(X, torch.randn(2, 2, 3, dtype=DT))
    with pytest.raises(TypeError, match=r"^y must have the dtype of X \(torch.float64\), got torch.float32$"):
        min_norm_interpolant(X, y.float())
    with pytest.raises(ValueError, match=r"^thetas must hold at least 3 fits \(rows\), got 2$"):
        conditional_variance(torch.randn(2, 5, dtype=DT), torch.eye(5, dtype=DT))
    with pytest.raises(ValueError, match=r"^cov must be symmetric"):
        linear_excess_risk(torch.zeros(2, dtype=DT), torch.zeros(2, dtype=DT), torch.tensor([[1.0, 2.0], [0.0, 1.0]],
                                                                                            dtype=DT))
    with pytest.raises(ValueError, match=r"^noise_var must be >= 0.0, got -1.0$"):
        min_norm_conditional_variance(X, torch.eye(5, dtype=DT), -1.0)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_closed_form_gradients_match_autograd(depth):
    from paperzoo.diagnostics.linear_interpolation import _end_to_end, _loss_and_grads

    g = torch.Generator().manual_seed(4)
    X, Y = torch.randn(5, 9, generator=g, dtype=DT), torch.randn(2, 5, generator=g, dtype=DT)
    shapes = [(2, 1, 9)] if depth == 1 else [(2, 6, 9)] + [(2, 6, 6)] * (depth - 2) + [(2, 1, 6)]
    layers = [torch.randn(*s, generator=g, dtype=DT, requires_grad=True) for s in shapes]
    losses, grads = _loss_and_grads([W.detach() for W in layers], X, Y)
    ref = ((_end_to_end(layers) @ X.T - Y).square().sum(-1) / 10)
    ref_grads = torch.autograd.grad(ref.sum(), layers)
    torch.testing.assert_close(losses, ref.detach(), rtol=1e-12, atol=1e-12)
    for (a, c), b in zip(grads, ref_grads):
        torch.testing.assert_close(c if a is None else a @ c, b, rtol=1e-12, atol=1e-12)
