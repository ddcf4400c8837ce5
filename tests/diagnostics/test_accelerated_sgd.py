"""Tests for paperzoo.diagnostics.accelerated_sgd: ASGD / SGD streams and the exact per-direction risk recursion."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.accelerated_sgd import (ASGDParams, asgd_linear_regression, asgd_risk_decomposition,
                                                 excess_risk_per_direction, sgd_linear_regression,
                                                 sgd_risk_decomposition)

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    # The streams are loops of small tensor ops: intra-op threads only contend (10-30x slower on a loaded box).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _data(runs, n, d, seed=0, noise=0.3, lam=None):
    g = torch.Generator().manual_seed(seed)
    lam = torch.arange(1, d + 1, dtype=F64) ** -1.0 if lam is None else lam
    X = torch.randn(runs, n, d, generator=g, dtype=F64) * lam.sqrt()
    w_star = torch.linspace(-1, 1, d, dtype=F64)
    y = X @ w_star + noise * torch.randn(runs, n, generator=g, dtype=F64)
    return X, y, w_star, lam


def _loop_asgd(X, y, p, w0):
    """Explicit per-run, per-sample loop (the independent route for the vectorised stream)."""
    out = []
    for r in range(X.shape[0]):
        w = w0[r].clone()
        v = w.clone()
        for t in range(X.shape[1]):
            x = X[r, t]
            u = p.alpha * w + (1 - p.alpha) * v
            grad = x * (float(x @ u) - float(y[r, t]))
            w, v = u - p.delta * grad, p.beta * u + (1 - p.beta) * v - p.gamma * grad
        out.append(w)
    return torch.stack(out)


def test_stream_matches_per_sample_loop():
    X, y, _, _ = _data(3, 25, 4)
    p = ASGDParams(0.7, 0.2, 0.6, 0.15)
    w0 = torch.randn(3, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    r = asgd_linear_regression(X, y, p, w0=w0)
    torch.testing.assert_close(r.w, _loop_asgd(X, y, p, w0), rtol=1e-12, atol=1e-12)
    assert r.n_steps == 25


@pytest.mark.parametrize("p", [ASGDParams(1.0, 0.3, 2.0, 0.1), ASGDParams(0.6, 1.0, 0.1, 0.1)],
                         ids=["alpha=1", "beta=1,gamma=delta"])
def test_acceleration_off_equals_sgd_step_for_step(p):
    X, y, _, _ = _data(4, 30, 5)
    w_sgd = torch.zeros(4, 5, dtype=F64)
    w_asgd, v_asgd = w_sgd.clone(), w_sgd.clone()
    for t in range(30):  # one sample at a time, continuing the streams
        w_sgd = sgd_linear_regression(X[:, t:t + 1], y[:, t:t + 1], 0.1, w0=w_sgd).w
        r = asgd_linear_regression(X[:, t:t + 1], y[:, t:t + 1], p, w0=w_asgd, v0=v_asgd)
        w_asgd, v_asgd = r.w_last, r.v_last
        torch.testing.assert_close(w_asgd, w_sgd, rtol=1e-13, atol=1e-13)


def test_chunked_stream_equals_one_pass_and_tail_average():
    X, y, _, _ = _data(2, 40, 3)
    p = ASGDParams(0.8, 0.1, 0.4, 0.1)
    full = asgd_linear_regression(X, y, p, tail_start=30)
    a = asgd_linear_regression(X[:, :17], y[:, :17], p)
    b = asgd_linear_regression(X[:, 17:], y[:, 17:], p, w0=a.w_last, v0=a.v_last)
    torch.testing.assert_close(b.w_last, full.w_last, rtol=1e-12, atol=1e-12)
    iterates = [asgd_linear_regression(X[:, :t], y[:, :t], p).w_last for t in range(31, 41)]
    torch.testing.assert_close(full.w, torch.stack(iterates).mean(0), rtol=1e-12, atol=1e-12)
    s = sgd_linear_regression(X, y, 0.1, tail_start=39)
    torch.testing.assert_close(s.w, s.w_last)


def _dense_risk(lam, e0, s2, n, p, tail_start=None):
    """Full (2d x 2d) second-moment recursion with Kronecker algebra and Isserlis' formula (independent route)."""
    d = lam.numel()
    H = torch.diag(lam)
    I = torch.eye(d, dtype=F64)
    a = torch.tensor([[p.alpha], [1 - p.alpha]], dtype=F64)
    c = torch.tensor([[p.delta], [p.gamma]], dtype=F64)
    P = torch.tensor([[p.alpha, 1 - p.alpha], [p.beta * p.alpha, p.beta * (1 - p.alpha) + 1 - p.beta]], dtype=F64)
    PI, A = torch.kron(P, I), torch.kron(a.T, I)
    T = PI - torch.kron(c @ a.T, H)
    z0 = torch.cat([e0, e0])
    S = torch.outer(z0, z0)
    C = acc = None
    for t in range(1, n + 1):
        U = A @ S @ A.T
        quad = 2 * H @ U @ H + torch.trace(H @ U) * H
        S = (PI @ S @ PI.T - PI @ S @ torch.kron(a @ c.T, H) - torch.kron(c @ a.T, H) @ S @ PI.T
             + torch.kron(c @ c.T, quad + s2 * H))
        if tail_start is not None and t > tail_start:
            C = S.clone() if C is None else T @ C + S
            acc = (C + C.T - S) if acc is None else acc + C + C.T - S
    M = S if tail_start is None else acc / (n - tail_start) ** 2
    return 0.5 * lam * torch.diagonal(M)[:d]


@pytest.mark.parametrize("tail_start", [None, 6])
def test_diagonal_recursion_matches_dense_isserlis_route(tail_start):
    lam = torch.tensor([1.0, 0.3, 0.05, 0.01], dtype=F64)
    e0 = torch.tensor([0.5, -1.0, 2.0, 1.5], dtype=F64)
    p = ASGDParams(0.85, 0.15, 0.5, 0.2)
    r = asgd_risk_decomposition(lam, e0, 0.2, 15, p, tail_start=tail_start)
    torch.testing.assert_close(r.bias, _dense_risk(lam, e0, 0.0, 15, p, tail_start), rtol=1e-11, atol=1e-14)
    torch.testing.assert_close(r.variance, _dense_risk(lam, 0 * e0, 0.2, 15, p, tail_start), rtol=1e-11, atol=1e-14)
    torch.testing.assert_close(torch.tensor(r.risk, dtype=F64), (r.bias + r.variance).sum())


def test_sgd_one_step_closed_form():
    # 0.5 * lam * E(1 - eta x^2)^2 e0^2 with x ~ N(0, lam): E x^4 = 3 lam^2.
    lam, eta = 0.7, 0.3
    r = sgd_risk_decomposition(torch.tensor([lam], dtype=F64), torch.ones(1, dtype=F64), 0.0, 1, eta)
    assert float(r.bias[0]) == pytest.approx(0.5 * lam * (1 - 2 * eta * lam + 3 * eta ** 2 * lam ** 2), rel=1e-14)
    r = sgd_risk_decomposition(torch.tensor([lam], dtype=F64), torch.zeros(1, dtype=F64), 0.4, 1, eta)
    assert float(r.variance[0]) == pytest.approx(0.5 * lam * eta ** 2 * 0.4 * lam, rel=1e-14)


@pytest.mark.parametrize("tail_start", [None, 10])
def test_monte_carlo_moments_match_exact_recursion(tail_start):
    runs, n = 20000, 20
    lam = torch.tensor([1.0, 0.1, 0.02], dtype=F64)
    e0 = torch.tensor([1.0, -2.0, 3.0], dtype=F64)
    p = ASGDParams(0.9, 0.1, 0.6, 0.25)
    g = torch.Generator().manual_seed(3)
    X = torch.randn(runs, n, 3, generator=g, dtype=F64) * lam.sqrt()
    eps = 0.5 * torch.randn(runs, n, generator=g, dtype=F64)
    w0 = e0.expand(runs, 3)  # w* = 0
    # Expected iterates: E[z_n] = T^n z_0 per direction (the mean of the recursion).
    r_bias = asgd_linear_regression(X, torch.zeros(runs, n, dtype=F64), p, w0=w0, tail_start=tail_start)
    z = torch.stack([e0, e0])
    pre = torch.stack([torch.zeros(3, dtype=F64), torch.zeros(3, dtype=F64)])
    for t in range(1, n + 1):
        u = p.alpha * z[0] + (1 - p.alpha) * z[1]
        z = torch.stack([u - p.delta * lam * u, p.beta * u + (1 - p.beta) * z[1] - p.gamma * lam * u])
        if tail_start is not None and t > tail_start:
            pre = pre + z
    mean = z[0] if tail_start is None else pre[0] / (n - tail_start)
    se = r_bias.w.std(0) / math.sqrt(runs)
    assert bool(((r_bias.w.mean(0) - mean).abs() < 4 * se + 1e-12).all())
    # Second moments: bias, variance and the full run (bias + variance exactly, no cross term in expectation).
    exact = asgd_risk_decomposition(lam, e0, 0.25, n, p, tail_start=tail_start)
    r_full = asgd_linear_regression(X, eps, p, w0=w0, tail_start=tail_start)
    for emp_w, target in ((r_bias.w, exact.bias), (r_full.w, exact.bias + exact.variance)):
        per = excess_risk_per_direction(emp_w, torch.zeros(3, dtype=F64), lam)
        assert bool(((per.mean(0) - target).abs() < 4 * per.std(0) / math.sqrt(runs)).all())


def test_paper_pattern_per_direction():
    """Small-eigenvalue bias faster, large-eigenvalue bias slower, variance larger everywhere (gamma > delta)."""
    d, n = 256, 128
    lam = torch.arange(1, d + 1, dtype=F64) ** -2.0
    delta = 0.5 / (float(lam.sum()) + 2)
    p = ASGDParams(1 / 1.01, 0.01, 16 * delta, delta)
    ra = asgd_risk_decomposition(lam, torch.ones(d, dtype=F64), 1.0, n, p)
    rs = sgd_risk_decomposition(lam, torch.ones(d, dtype=F64), 1.0, n, delta)
    assert bool((ra.bias[:2] > rs.bias[:2]).all()) and bool((ra.bias[8:64] < rs.bias[8:64]).all())
    assert bool((ra.variance > rs.variance).all())


def test_unstable_steps_warn():
    lam = torch.arange(1, 33, dtype=F64) ** -1.0
    with pytest.warns(RuntimeWarning, match="second moments diverged"):
        r = asgd_risk_decomposition(lam, torch.ones(32, dtype=F64), 0.1, 400, ASGDParams(0.5, 0.5, 5.0, 1.0))
    assert not r.stable


@settings(max_examples=20, deadline=None)
@given(beta=st.floats(0.0, 1.0), gamma=st.floats(0.0, 2.0), delta=st.floats(0.01, 0.3))
def test_alpha_one_decomposition_is_sgd(beta, gamma, delta):
    lam = torch.tensor([1.0, 0.2, 0.01], dtype=F64)
    e0 = torch.tensor([1.0, -1.0, 2.0], dtype=F64)
    ra = asgd_risk_decomposition(lam, e0, 0.1, 12, ASGDParams(1.0, beta, gamma, delta))
    rs = sgd_risk_decomposition(lam, e0, 0.1, 12, delta)
    torch.testing.assert_close(ra.bias, rs.bias, rtol=1e-12, atol=0)
    torch.testing.assert_close(ra.variance, rs.variance, rtol=1e-12, atol=0)


def test_error_messages():
    X, y, _, lam = _data(2, 5, 3)
    ok = ASGDParams(0.9, 0.1, 0.5, 0.1)
    with pytest.raises(ValueError, match=r"^params.alpha must be in \(0.0, 1.0\], got 0.0$"):
        asgd_linear_regression(X, y, ASGDParams(0.0, 0.1, 0.5, 0.1))
    with pytest.raises(ValueError, match=r"^params.beta must be in \[0.0, 1.0\], got 1.5$"):
        asgd_linear_regression(X, y, ASGDParams(0.9, 1.5, 0.5, 0.1))
    with pytest.raises(ValueError, match=r"^params.gamma must be >= 0.0, got -1.0$"):
        asgd_risk_decomposition(lam, torch.ones(3, dtype=F64), 0.1, 4, ASGDParams(0.9, 0.1, -1.0, 0.1))
    with pytest.raises(ValueError, match=r"^params.delta must be > 0.0, got 0.0$"):
        asgd_linear_regression(X, y, ASGDParams(0.9, 0.1, 0.5, 0.0))
    with pytest.raises(TypeError, match=r"^params.beta must be a finite real number, got nan$"):
        asgd_linear_regression(X, y, ASGDParams(0.9, float("nan"), 0.5, 0.1))
    with pytest.raises(TypeError, match=r"^params must be a ASGDParams, got tuple$"):
        asgd_linear_regression(X, y, (0.9, 0.1, 0.5, 0.1))
    with pytest.raises(ValueError, match=r"^tail_start must be < the number of samples \(5\), got 5$"):
        sgd_linear_regression(X, y, 0.1, tail_start=5)
    with pytest.raises(ValueError, match=r"^tail_start must be < the number of samples \(4\), got 7$"):
        asgd_risk_decomposition(lam, torch.ones(3, dtype=F64), 0.1, 4, ok, tail_start=7)
    with pytest.raises(ValueError, match="y"):
        asgd_linear_regression(X, y[:, :4], ok)
    with pytest.raises(ValueError, match="lr must be > 0"):
        sgd_linear_regression(X, y, 0.0)
