"""Tests for paperzoo.diagnostics.batch_hessian: closed forms (linear regression), a dense Hessian, Monte Carlo
monotonicity, the 2/lambda_max threshold of a quadratic, the fits, and pinned error messages."""

from __future__ import annotations

import math

import pytest
import torch

from paperzoo.diagnostics.batch_hessian import (batch_hessian_spectrum, divergence_threshold_lr, fit_batch_sharpness,
                                                loglog_slope)

F64 = torch.float64


def _mse(out, y):
    return 0.5 * ((out - y) ** 2).sum(-1).mean()


def _linear_problem(N=30, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, d, generator=g, dtype=F64) * torch.linspace(0.5, 2.0, d, dtype=F64)
    y = torch.randn(N, 1, generator=g, dtype=F64)
    model = torch.nn.Linear(d, 1, bias=False).double()
    return model, x, y


def test_linear_regression_batch_hessian_is_gram_matrix():
    model, x, y = _linear_problem()
    res = batch_hessian_spectrum(model, _mse, x, y, [3, 8, 30], 4, k=3, tol=1e-10,
                                 generator=torch.Generator().manual_seed(1))
    assert res.eigenvalues.shape == (3, 4, 3) and res.converged
    for i, B in enumerate([3, 8, 30]):
        assert res.indices[i].shape == (4, B)
        for j in range(4):
            xb = x[res.indices[i][j]]
            assert len(set(res.indices[i][j].tolist())) == B  # without replacement
            want = torch.linalg.eigvalsh(xb.T @ xb / B).flip(0)[:3]
            torch.testing.assert_close(res.eigenvalues[i, j], want, rtol=1e-8, atol=1e-9)
    # B = N is the empirical Hessian whatever the draw
    full = torch.linalg.eigvalsh(x.T @ x / 30)[-1]
    torch.testing.assert_close(res.eigenvalues[2, :, 0], full.expand(4), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(res.mean_top, res.eigenvalues[:, :, 0].mean(1))


def test_mlp_batch_hessian_matches_dense_hessian():
    g = torch.Generator().manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    x = torch.randn(20, 3, generator=g, dtype=F64)
    y = torch.randint(0, 2, (20,), generator=g)
    loss = torch.nn.functional.cross_entropy
    res = batch_hessian_spectrum(model, loss, x, y, [5], 3, k=2, tol=1e-10, generator=g)
    params = dict(model.named_parameters())
    names = list(params)
    for j in range(3):
        idx = res.indices[0][j]

        def flat_loss(theta):
            chunks, off = {}, 0
            for name in names:
                p = params[name]
                chunks[name] = theta[off:off + p.numel()].view_as(p)
                off += p.numel()
            return loss(torch.func.functional_call(model, chunks, (x[idx],)), y[idx])

        theta = torch.cat([p.detach().reshape(-1) for p in params.values()])
        H = torch.autograd.functional.hessian(flat_loss, theta)
        want = torch.linalg.eigvalsh(H).flip(0)[:2]
        torch.testing.assert_close(res.eigenvalues[0, j], want, rtol=1e-7, atol=1e-9)


def test_top_eigenvalue_nonincreasing_in_batch_size_in_expectation():
    model, x, y = _linear_problem(N=40, d=4, seed=5)
    sizes = [2, 4, 8, 16, 40]
    res = batch_hessian_spectrum(model, _mse, x, y, sizes, 60, tol=1e-10, generator=torch.Generator().manual_seed(2))
    m, se = res.mean_top, res.se_top
    for i in range(len(sizes) - 1):
        assert float(m[i + 1]) <= float(m[i]) + 2 * math.hypot(float(se[i]), float(se[i + 1]))
    assert float(m[0] - m[-1]) > 3 * float(se[0])  # strictly larger at small B, beyond noise
    assert float(se[-1]) < 1e-9  # B = N: no randomness


def test_threshold_of_quadratic_is_two_over_lambda_max():
    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=F64)).Q
    lam = torch.tensor([4.0, 2.5, 1.0, 0.3, 0.1], dtype=F64)
    A = Q @ torch.diag(lam) @ Q.T
    w0 = torch.ones(5, dtype=F64)

    def diverged(lr):
        w = w0.clone()
        for _ in range(400):
            w = w - lr * (A @ w)
        return bool(torch.linalg.vector_norm(w) > torch.linalg.vector_norm(w0))

    res = divergence_threshold_lr(diverged, list(torch.logspace(-2, 1, 7).tolist()), rtol=1e-4)
    # A finite run (400 steps) needs a little growth to show: its threshold sits just above 2 / lambda_max.
    assert res.converged and res.upper > 0.5
    assert abs(res.lr / 0.5 - 1) < 1e-3


def test_threshold_exact_step_function_and_no_crossing_warns():
    res = divergence_threshold_lr(lambda lr: lr > 0.37, [0.01, 0.1, 1.0], rtol=1e-8, max_bisect=100)
    assert abs(res.lr - 0.37) < 1e-6 and res.converged
    with pytest.warns(RuntimeWarning, match="extend lrs upwards"):
        res = divergence_threshold_lr(lambda lr: False, [0.01, 0.1])
    assert math.isnan(res.lr) and res.lower == 0.1 and not res.converged
    with pytest.warns(RuntimeWarning, match="extend lrs downwards"):
        res = divergence_threshold_lr(lambda lr: True, [0.01, 0.1])
    assert math.isnan(res.lr) and res.upper == 0.01
    with pytest.warns(RuntimeWarning, match="raise max_bisect"):
        res = divergence_threshold_lr(lambda lr: lr > 0.37, [0.01, 1.0], rtol=1e-9, max_bisect=3)
    assert not res.converged and res.lower < 0.37 < res.upper


def test_fit_batch_sharpness_recovers_form_and_covers():
    g = torch.Generator().manual_seed(0)
    B = torch.tensor([1.0, 2, 4, 8, 16, 32, 64], dtype=F64)
    se = 0.05 * torch.ones(7, dtype=F64)
    cover_c = 0
    for _ in range(200):
        v = 3.0 + 10.0 / B + se * torch.randn(7, generator=g, dtype=F64)
        fit = fit_batch_sharpness(B, v, se)
        cover_c += fit.c_ci[0] <= 10.0 <= fit.c_ci[1]
    assert 0.88 <= cover_c / 200 <= 1.0
    exact = fit_batch_sharpness(B, 3.0 + 10.0 / B)
    assert abs(exact.lambda_inf - 3.0) < 1e-10 and abs(exact.c - 10.0) < 1e-10


def test_loglog_slope():
    x = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=F64)
    s = loglog_slope(x, 0.3 * x ** 0.5)
    assert abs(s.slope - 0.5) < 1e-12 and abs(math.exp(s.intercept) - 0.3) < 1e-12
    two = loglog_slope(x[:2], x[:2])
    assert math.isnan(two.ci[0])


def test_error_messages():
    model, x, y = _linear_problem(N=10, d=3)
    with pytest.raises(ValueError, match=r"batch_sizes\[1\] must be <= N = 10 \(the number of rows\) without "
                                         r"replacement, got 11"):
        batch_hessian_spectrum(model, _mse, x, y, [2, 11], 2)
    res = batch_hessian_spectrum(model, _mse, x, y, [11], 2, replace=True, generator=torch.Generator().manual_seed(0))
    assert res.indices[0].shape == (2, 11)
    with pytest.raises(ValueError, match=r"k must be <= n = 3 \(the trainable parameter count\), got 4"):
        batch_hessian_spectrum(model, _mse, x, y, [2], 2, k=4)
    with pytest.raises(ValueError, match="num_batches must be >= 2"):
        batch_hessian_spectrum(model, _mse, x, y, [2], 1)
    with pytest.raises(ValueError, match=r"targets must have 10 rows"):
        batch_hessian_spectrum(model, _mse, x, y[:5], [2], 2)
    B = torch.tensor([1.0, 2.0, 2.0], dtype=F64)
    with pytest.raises(ValueError, match="batch_sizes must have at least 3 distinct values"):
        fit_batch_sharpness(B, B)
    B = torch.tensor([1.0, 2.0, 4.0], dtype=F64)
    with pytest.raises(ValueError, match=r"se must be > 0"):
        fit_batch_sharpness(B, B, torch.tensor([1.0, 0.0, 1.0], dtype=F64))
    with pytest.raises(ValueError, match=r"lrs must be strictly increasing, got \[0.1, 0.01\]"):
        divergence_threshold_lr(lambda lr: False, [0.1, 0.01])
    with pytest.raises(ValueError, match=r"lrs must have at least 2 entries \(a bracket\), got 1"):
        divergence_threshold_lr(lambda lr: False, [0.1])
    with pytest.raises(ValueError, match=r"lrs must be positive and finite"):
        divergence_threshold_lr(lambda lr: False, [0.0, 0.1])
    with pytest.raises(TypeError, match=r"train_fn must return a bool \(True: diverged\), got str"):
        divergence_threshold_lr(lambda lr: "no", [0.01, 0.1])
    with pytest.raises(ValueError, match=r"x and y must be > 0"):
        loglog_slope(torch.tensor([1.0, 2.0]), torch.tensor([1.0, -1.0]))
