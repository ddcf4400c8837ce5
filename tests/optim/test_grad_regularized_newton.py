"""Gradient-regularized Newton: quadratic closed form, logistic optimum vs scikit-learn, approximations, errors."""

from __future__ import annotations

import pytest
import torch

from paperzoo.optim.grad_regularized_newton import (empirical_fisher, gauss_newton_hessian,
                                                    solve_grad_regularized_newton)
from paperzoo.core.convergence import ConvergenceWarning

D = torch.float64


def test_quadratic_solution_and_one_step_rule():
    A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=D)
    b = torch.tensor([1.0, 2.0], dtype=D)
    res = solve_grad_regularized_newton(lambda x: 0.5 * x @ A @ x - b @ x, torch.zeros(2, dtype=D), tol=1e-12)
    assert res.converged and torch.allclose(res.x, torch.linalg.solve(A, b), atol=1e-10)
    # first step: x1 = -(A + lam I)^{-1} g0 with lam = ||g0|| / gamma0 (no rejection on a quadratic at gamma0 = 1)
    one = solve_grad_regularized_newton(lambda x: 0.5 * x @ A @ x - b @ x, torch.zeros(2, dtype=D),
                                        adaptive=False, max_iter=1, tol=0.0)
    lam = float(b.norm())
    assert torch.allclose(one.x, torch.linalg.solve(A + lam * torch.eye(2, dtype=D), b))
    assert torch.all(one.objective[1:] <= one.objective[:-1])


def test_logistic_matches_sklearn_and_approximations_converge():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(0)
    X = torch.randn(120, 4, generator=g, dtype=D)
    y = (torch.rand(120, generator=g, dtype=D) < torch.sigmoid(X @ torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=D))).to(D)
    mu = 0.01

    def losses(w):
        u = X @ w
        return torch.nn.functional.softplus(u) - y * u + 0.5 * mu * w.square().sum()

    f = lambda w: losses(w).mean()  # noqa: E731
    ref = LogisticRegression(C=1 / (mu * 120), fit_intercept=False, tol=1e-12, max_iter=10000).fit(X, y).coef_[0]
    x0 = torch.full((4,), 10.0, dtype=D)
    # the empirical Fisher is a poor curvature model at the optimum: linear but slow, so a looser tolerance
    for hess, tol, atol in (("exact", 1e-10, 1e-8), (lambda x: X.T @ X / (4 * 120) + mu * torch.eye(4, dtype=D), 1e-10,
                                                      1e-8), (empirical_fisher(losses), 1e-6, 1e-4)):
        res = solve_grad_regularized_newton(f, x0, hessian=hess, max_iter=200, tol=tol)
        assert res.converged and torch.allclose(res.x, torch.as_tensor(ref), atol=atol)
        assert torch.all(res.objective[1:] <= res.objective[:-1] + 1e-12)


def test_gauss_newton_on_nonlinear_least_squares():
    t = torch.linspace(0, 1, 20, dtype=D)
    obs = 2.0 * torch.exp(-1.5 * t)
    resid = lambda x: x[0] * torch.exp(-x[1] * t) - obs  # noqa: E731
    res = solve_grad_regularized_newton(lambda x: 0.5 * resid(x).square().sum(), torch.tensor([1.0, 0.5], dtype=D),
                                        hessian=gauss_newton_hessian(resid), tol=1e-10)
    assert res.converged and torch.allclose(res.x, torch.tensor([2.0, 1.5], dtype=D), atol=1e-8)


def test_float32():
    res = solve_grad_regularized_newton(lambda x: (x - 1).pow(4).sum() + x.square().sum(), torch.zeros(3),
                                        tol=1e-4)
    assert res.converged and res.x.dtype == torch.float32


def test_warning_and_errors():
    f = lambda x: (x**4).sum()  # noqa: E731
    with pytest.warns(ConvergenceWarning, match="increase max_iter"):
        solve_grad_regularized_newton(f, torch.ones(2, dtype=D), max_iter=1, tol=1e-12)
    with pytest.raises(ValueError, match="gamma0 must be > 0"):
        solve_grad_regularized_newton(f, torch.ones(2), gamma0=0.0)
    with pytest.raises(ValueError, match="hessian must be 'exact' or a callable"):
        solve_grad_regularized_newton(f, torch.ones(2), hessian="fisher")
    with pytest.raises(ValueError, match="x0 must have 1 dimension"):
        solve_grad_regularized_newton(f, torch.ones(2, 2))
    with pytest.raises(FloatingPointError, match="stayed indefinite"):
        solve_grad_regularized_newton(lambda x: -torch.log(x).sum() * 0 + x.sum(), torch.ones(1, dtype=D),
                                      hessian=lambda x: torch.zeros(1, 1, dtype=D) * float("nan"), max_iter=2)


def test_float32_stall_says_to_widen_the_dtype_and_points_at_the_caller():
    # A float32 quadratic whose gradient norm stops near 3e-8, above tol = 1e-12.
    G = torch.randn(3, 3, generator=torch.Generator().manual_seed(1))
    A = G @ G.T / 3 + torch.eye(3)
    with pytest.warns(ConvergenceWarning, match="use float64 or a larger tol") as record:
        res = solve_grad_regularized_newton(lambda x: 0.5 * x @ A @ x - x.sum(), torch.zeros(3), tol=1e-12)
    assert not res.converged and res.n_iter < 200
    assert record[0].filename == __file__
    with pytest.warns(ConvergenceWarning, match="did not converge in 2 iterations") as record:
        solve_grad_regularized_newton(lambda x: 0.5 * x @ A.double() @ x - x.sum(), torch.zeros(3, dtype=D), tol=1e-30,
                                      max_iter=2)
    assert record[0].filename == __file__
