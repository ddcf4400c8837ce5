"""LASSO solvers: closed forms, sklearn cross-check, the NGDM oscillation band, batched penalties, bad input."""

from __future__ import annotations

import warnings

import pytest
import torch

from paperzoo.optim import lasso_objective, solve_lasso_ista, solve_lasso_subgradient
from paperzoo.optim.subgradient import soft_threshold


def _problem(seed=0, n=30, p=60):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, p, generator=g, dtype=torch.float64) / n**0.5
    x = torch.zeros(p, dtype=torch.float64)
    x[:4] = torch.tensor([1.0, -2.0, 1.5, 0.5], dtype=torch.float64)
    return A, A @ x + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)


def test_soft_threshold_closed_form():
    assert soft_threshold(torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0]), 1.0).tolist() == [-1.0, 0.0, 0.0, 0.0, 2.0]
    tau = torch.tensor([0.5, 2.0])
    assert soft_threshold(torch.tensor([[1.0, 1.0]]), tau).tolist() == [[0.5, 0.0]]


def test_orthonormal_design_closed_form():
    A = torch.eye(3, dtype=torch.float64)
    b = torch.tensor([3.0, -0.2, -1.0], dtype=torch.float64)
    for accelerated in (False, True):
        res = solve_lasso_ista(A, b, 0.5, accelerated=accelerated)
        assert res.converged and res.x.tolist() == [2.5, 0.0, -0.5]


@pytest.mark.parametrize("accelerated", [False, True])
def test_ista_matches_sklearn_lasso(accelerated):
    from sklearn.linear_model import Lasso

    A, b = _problem()
    reg = 0.05
    res = solve_lasso_ista(A, b, reg, accelerated=accelerated, max_iter=20_000, tol=1e-13)
    # sklearn minimises ||b - A x||^2 / (2 n) + alpha ||x||_1, i.e. ours divided by n with alpha = reg / n.
    ref = Lasso(alpha=reg / A.shape[0], fit_intercept=False, tol=1e-12, max_iter=100_000).fit(A.numpy(), b.numpy())
    assert torch.allclose(res.x, torch.from_numpy(ref.coef_), atol=1e-6)
    assert ((res.x == 0) == (torch.from_numpy(ref.coef_) == 0)).all()
    assert torch.isclose(res.objective[-1], lasso_objective(A, b, res.x, reg))
    assert bool((res.objective[1:] <= res.objective[:-1] + 1e-12).all()) or accelerated  # ISTA is monotone


def test_subgradient_never_exactly_sparse_and_oscillates_in_band():
    A, b = _problem()
    reg, lr = 0.2, 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = solve_lasso_subgradient(A, b, reg, lr=lr, max_iter=4_000, tol=0.0)
    ref = solve_lasso_ista(A, b, reg, max_iter=20_000, tol=1e-13)
    zero = ref.x == 0
    assert (res.x[zero] != 0).all()
    # A coordinate whose optimum is 0 hops across it: it stays in a band of order lr * reg around zero.
    assert res.x[zero].abs().max() < 3 * lr * reg
    assert res.objective[-1] > ref.objective[-1]
    # And the objective gets close to the optimum, within O(lr) of it.
    assert res.objective[-1] - ref.objective[-1] < 0.1


def test_batched_penalties_equal_separate_solves():
    A, b = _problem(1)
    regs = torch.tensor([0.01, 0.1, 0.5], dtype=torch.float64)
    batched = solve_lasso_subgradient(A, b, regs, lr=0.05, max_iter=300, tol=0.0)
    assert batched.x.shape == (60, 3) and batched.objective.shape == (301, 3)
    for j, reg in enumerate(regs.tolist()):
        single = solve_lasso_subgradient(A, b, reg, lr=0.05, max_iter=300, tol=0.0)
        assert torch.allclose(batched.x[:, j], single.x, atol=1e-12)
        assert torch.allclose(batched.l1_norm[:, j], single.l1_norm, atol=1e-10)


def test_non_convergence_warns_and_divergence_raises():
    A, b = _problem()
    with pytest.warns(RuntimeWarning, match="decrease lr or increase max_iter"):
        solve_lasso_subgradient(A, b, 0.1, lr=0.05, max_iter=5, tol=1e-10)
    with pytest.raises(FloatingPointError, match="decrease lr"):
        solve_lasso_subgradient(A, b * 1e10, 0.1, lr=1e3, max_iter=500, tol=0.0)


def test_bad_input_messages():
    A, b = _problem()
    with pytest.raises(ValueError, match="reg must be >= 0.0, got -1.0"):
        solve_lasso_ista(A, b, -1.0)
    with pytest.raises(ValueError, match="lr must be > 0.0, got 0.0"):
        solve_lasso_subgradient(A, b, 0.1, lr=0.0)
    with pytest.raises(ValueError, match=r"b must have n = 30 \(from A\) in its shape \(n,\), got shape \(29,\)"):
        solve_lasso_ista(A, b[:-1], 0.1)
    with pytest.raises(ValueError, match=r"x0 must have shape \(60,\)"):
        solve_lasso_ista(A, b, 0.1, x0=torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="max_iter must be >= 1, got 0"):
        solve_lasso_ista(A, b, 0.1, max_iter=0)
    with pytest.raises(ValueError, match="A must be finite"):
        solve_lasso_ista(A * float("nan"), b, 0.1)
