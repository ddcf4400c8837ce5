"""Tests for paperzoo.diagnostics.diagonal_networks: vectorised runs against an explicit loop, autograd, linprog."""

import itertools
import math

import numpy as np
import pytest
import torch

from paperzoo.diagnostics.diagonal_networks import min_l1_interpolant, step_decay_schedule, train_diagonal_network


def _data(n, d, seed=0, sparse=None):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    if sparse is None:
        y = torch.randn(n, generator=g, dtype=torch.float64)
    else:
        w = torch.zeros(d, dtype=torch.float64)
        w[:sparse] = 1.0
        y = X @ w
    return X, y


def test_vectorised_runs_match_explicit_per_run_loop():
    X, y = _data(6, 5)
    lrs = torch.tensor([0.01, 0.05, 0.1], dtype=torch.float64)
    sched = lambda k: lrs * (1.0 if k < 20 else 0.5)  # noqa: E731
    steps, B, alpha = 40, 2, 0.3
    runs = train_diagonal_network(X, y, alpha, sched, B, steps, torch.Generator().manual_seed(7), n_runs=3,
                                  record_every=10)
    # explicit loop: replay the same index draws, one run and one sample at a time
    g = torch.Generator().manual_seed(7)
    u = [torch.full((5,), alpha, dtype=torch.float64) for _ in range(3)]
    v = [torch.zeros(5, dtype=torch.float64) for _ in range(3)]
    traj = []
    for k in range(steps):
        idx = torch.randint(0, 6, (3, B), generator=g)
        for r in range(3):
            grad = torch.zeros(5, dtype=torch.float64)
            for i in idx[r].tolist():
                grad += (float(X[i] @ (u[r] * v[r])) - float(y[i])) * X[i] / B
            eta = float(sched(k)[r])
            u[r], v[r] = u[r] - eta * grad * v[r], v[r] - eta * grad * u[r]
        if (k + 1) % 10 == 0:
            traj.append(torch.stack([a * b for a, b in zip(u, v)]))
    torch.testing.assert_close(runs.betas[1:], torch.stack(traj), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(runs.u, torch.stack(u), rtol=1e-12, atol=1e-13)
    beta = runs.betas[-1]
    torch.testing.assert_close(runs.train_loss[-1], 0.5 * ((beta @ X.T - y) ** 2).mean(-1))
    torch.testing.assert_close(runs.l1_norm[-1], beta.abs().sum(-1))
    assert runs.record_steps.tolist() == [0, 10, 20, 30, 40] and runs.n_iter == 40


def test_full_batch_step_is_gradient_descent_on_the_loss_by_autograd():
    X, y = _data(7, 4, seed=1)
    runs = train_diagonal_network(X, y, 0.5, lambda k: 0.1, 7, 3, None, record_every=1)
    u = torch.full((4,), 0.5, dtype=torch.float64, requires_grad=True)
    v = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    for k in range(3):
        loss = 0.5 * ((X @ (u * v) - y) ** 2).mean()
        gu, gv = torch.autograd.grad(loss, (u, v))
        with torch.no_grad():
            u, v = (u - 0.1 * gu).requires_grad_(), (v - 0.1 * gv).requires_grad_()
        torch.testing.assert_close(runs.betas[k + 1, 0], (u * v).detach(), rtol=1e-12, atol=1e-14)
        if k == 0:
            torch.testing.assert_close(runs.train_loss[0, 0], loss.detach())


def test_gd_from_tiny_init_approaches_the_linprog_min_l1_interpolant():
    X, y = _data(6, 12, seed=3)  # dense targets: the min-l1 and min-l2 interpolants differ
    ref = min_l1_interpolant(X, y)
    l2 = torch.linalg.pinv(X) @ y
    runs = train_diagonal_network(X, y, 1e-4, lambda k: 0.3, 6, 5000, record_every=5000)
    beta = runs.beta[0]
    assert float(runs.train_loss[-1, 0]) < 1e-12 and not bool(runs.diverged[0])
    # l1 norm within 0.3% of the LP optimum; beta much closer to the min-l1 than the min-l2 interpolant is
    assert abs(float(runs.l1_norm[-1, 0]) / ref.l1_norm - 1.0) < 3e-3
    assert float((beta - ref.beta).norm()) < 0.25 * float((l2 - ref.beta).norm())
    # a large init is far from the alpha -> 0 limit (close to the min-l2 one)
    big = train_diagonal_network(X, y, 1.0, lambda k: 0.3, 6, 5000, record_every=5000)
    assert float(big.l1_norm[-1, 0]) / ref.l1_norm - 1.0 > 0.1


def test_min_l1_interpolant_matches_vertex_enumeration():
    X, y = _data(3, 6, seed=4)
    sol = min_l1_interpolant(X, y)
    best = math.inf
    A, b = X.numpy(), y.numpy()
    for S in itertools.combinations(range(6), 3):  # an LP optimum sits at a basic solution: n coordinates
        sub = A[:, S]
        if abs(np.linalg.det(sub)) < 1e-12:
            continue
        best = min(best, float(np.abs(np.linalg.solve(sub, b)).sum()))
    assert sol.converged and sol.residual < 1e-9
    assert sol.l1_norm == pytest.approx(best, rel=1e-9)
    assert int((sol.beta.abs() > 1e-10).sum()) <= 3


def test_min_l1_interpolant_warns_when_infeasible():
    X = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="linprog did not succeed"):
        sol = min_l1_interpolant(X, torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert not sol.converged and math.isinf(sol.residual)


def test_divergent_runs_are_frozen_and_marked():
    X, y = _data(5, 8, sparse=2)
    runs = train_diagonal_network(X, y, 1.0, lambda k: torch.tensor([0.01, 50.0], dtype=torch.float64), 1, 200,
                                  torch.Generator().manual_seed(0), n_runs=2, record_every=50)
    assert runs.diverged.tolist() == [False, True]
    assert 0 < int(runs.diverged_at[1]) <= 200 and int(runs.diverged_at[0]) == -1
    assert torch.isfinite(runs.beta).all() and torch.isfinite(runs.betas).all()
    assert math.isinf(float(runs.train_loss[-1, 1])) and math.isfinite(float(runs.train_loss[-1, 0]))


def test_sparsity_measures_and_step_decay():
    X, y = _data(10, 20, seed=2, sparse=2)
    runs = train_diagonal_network(X, y, 0.1, lambda k: 0.2, 10, 10, threshold=0.5, record_every=5)
    torch.testing.assert_close(runs.n_active, (runs.betas.abs() > 0.5).sum(-1))
    assert runs.n_active[0].tolist() == [0] and runs.l1_norm[0].tolist() == [0.0]
    s = step_decay_schedule(0.3, 5, 3.0)
    assert [s(k) for k in (0, 4, 5, 100)] == pytest.approx([0.3, 0.3, 0.1, 0.1], rel=1e-15)
    runs = train_diagonal_network(X, y, 0.1, s, 1, 8, torch.Generator().manual_seed(0), n_runs=2)
    torch.testing.assert_close(runs.lrs[:, 0], torch.tensor([0.3] * 5 + [0.1] * 3, dtype=torch.float64))


def test_error_messages():
    X, y = _data(4, 3)
    with pytest.raises(ValueError, match=r"batch_size must be <= n \(4\), got 5"):
        train_diagonal_network(X, y, 0.1, lambda k: 0.1, 5, 3)
    with pytest.raises(ValueError, match=r"lr_schedule\(2\) must be finite and >= 0, got \[-1.0\]"):
        train_diagonal_network(X, y, 0.1, lambda k: 0.1 if k < 2 else -1.0, 1, 3)
    with pytest.raises(ValueError, match=r"lr_schedule\(0\) must be a number or a tensor of shape \(2,\), got "
                                         r"shape \(3,\)"):
        train_diagonal_network(X, y, 0.1, lambda k: torch.ones(3, dtype=torch.float64), 1, 3, n_runs=2)
    with pytest.raises(ValueError, match="init_scale must be > 0"):
        train_diagonal_network(X, y, 0.0, lambda k: 0.1, 1, 3)
    with pytest.raises(TypeError, match="lr_schedule must be callable"):
        train_diagonal_network(X, y, 0.1, 0.1, 1, 3)
    with pytest.raises(ValueError, match="y"):
        train_diagonal_network(X, y[:3], 0.1, lambda k: 0.1, 1, 3)
