"""AdaSketch-Newton: closed-form KKT points, scipy SLSQP cross-check, sketch solvers, merit descent, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paperzoo.core.convergence import ConvergenceWarning
from paperzoo.data.regression import equality_constrained_least_squares
from paperzoo.optim.sketched_eal import sketch_solve_kkt, solve_sketched_eal

D = torch.float64


def _circle():
    # min x1 + x2 s.t. x1^2 + x2^2 = 2: KKT point x = (-1, -1), lam = 1/2
    return (lambda x: x.sum()), (lambda x: (x.square().sum() - 2.0).reshape(1))


@pytest.mark.parametrize("sketch", ["gaussian", "uniform_row", "exact"])
def test_least_squares_reaches_exact_kkt_point(sketch):
    prob = equality_constrained_least_squares(30, 8, 3, generator=torch.Generator().manual_seed(0))
    res = solve_sketched_eal(lambda x: 0.5 * (prob.A @ x - prob.b).square().sum(), lambda x: prob.C @ x - prob.e,
                             torch.zeros(8, dtype=D), torch.zeros(3, dtype=D), sketch=sketch, tol=1e-9,
                             generator=torch.Generator().manual_seed(1))
    assert res.converged and res.kkt_residual[-1] <= 1e-9
    assert torch.allclose(res.x, prob.x_star, atol=1e-7) and torch.allclose(res.lam, prob.lam_star, atol=1e-7)
    # a quadratic program: the (accurate) Newton step with unit step size lands on the KKT point
    assert res.n_iter == 1 and res.step_size.tolist() == [1.0]
    assert (res.sketch_iters > 0).all() if sketch != "exact" else (res.sketch_iters == 0).all()


@pytest.mark.parametrize("sketch", ["gaussian", "uniform_row"])
def test_nonlinear_constraint_closed_form_and_float32(sketch):
    f, c = _circle()
    for dtype, atol in ((D, 1e-8), (torch.float32, 1e-3)):
        res = solve_sketched_eal(f, c, torch.tensor([-1.5, -0.5], dtype=dtype), torch.ones(1, dtype=dtype),
                                 sketch=sketch, tol=1e-8 if dtype == D else 1e-4,
                                 generator=torch.Generator().manual_seed(0))
        assert res.converged and res.x.dtype == dtype
        assert torch.allclose(res.x, torch.full((2,), -1.0, dtype=dtype), atol=atol)
        assert abs(res.lam.item() - 0.5) < atol
    assert res.kkt_residual.shape == (res.n_iter + 1,) and res.sketch_iters.shape == (res.n_iter,)


def test_matches_scipy_slsqp_on_nonconvex_objective():
    from scipy.optimize import minimize

    # nonconvex quartic objective, one nonlinear and one linear constraint; start near a KKT point
    f = lambda x: (x[0] - 1) ** 4 + x[1] ** 2 - x[0] * x[2] + x[2] ** 2  # noqa: E731
    c = lambda x: torch.stack([x[0] ** 2 + x[1] ** 2 + x[2] ** 2 - 1.0, x[0] + x[1] + x[2] - 0.5])  # noqa: E731
    x0 = np.array([0.8, -0.5, 0.3])
    ref = minimize(lambda v: float(f(torch.as_tensor(v))), x0, method="SLSQP", tol=1e-14,
                   constraints=[{"type": "eq", "fun": lambda v: c(torch.as_tensor(v)).numpy()}])
    res = solve_sketched_eal(f, c, torch.tensor(x0), torch.zeros(2, dtype=D), sketch="gaussian", tol=1e-9,
                             generator=torch.Generator().manual_seed(3))
    assert res.converged
    assert np.allclose(res.x.numpy(), ref.x, atol=1e-6)


def test_penalty_updates_and_line_search_from_far_start():
    f, c = _circle()
    res = solve_sketched_eal(f, c, torch.tensor([3.0, 0.5], dtype=D), torch.zeros(1, dtype=D), sketch="exact",
                             tol=1e-10)
    assert res.converged and torch.allclose(res.x, torch.full((2,), -1.0, dtype=D), atol=1e-8)
    assert (res.mu[1:] >= res.mu[:-1]).all() and (res.nu[1:] <= res.nu[:-1]).all()  # monotone penalties
    assert res.step_size[-1] == 1.0  # unit steps locally


@pytest.mark.parametrize("sketch", ["gaussian", "uniform_row"])
def test_sketch_solver_reaches_threshold(sketch):
    g = torch.Generator().manual_seed(0)
    K = torch.randn(6, 6, generator=g, dtype=D) + 4 * torch.eye(6, dtype=D)
    b = torch.randn(6, generator=g, dtype=D)
    z0 = torch.zeros(6, dtype=D)
    z, t = sketch_solve_kkt(K, b, z0, 1e-10, sketch=sketch, max_iter=200_000, generator=g)
    assert (K @ z - b).norm() <= 1e-10 and t > 0 and torch.equal(z0, torch.zeros(6, dtype=D))
    assert torch.allclose(z, torch.linalg.solve(K, b), atol=1e-8)
    z1, t1 = sketch_solve_kkt(K, b, z, 1e-10, sketch=sketch, max_iter=10, generator=g)
    assert t1 == 0 and torch.equal(z1, z)  # warm start already accurate


def test_not_converged_warns_and_reproducible():
    f, c = _circle()
    with pytest.warns(ConvergenceWarning, match="solve_sketched_eal did not converge in 1 iterations"):
        solve_sketched_eal(f, c, torch.tensor([3.0, 0.5], dtype=D), torch.zeros(1, dtype=D), max_iter=1)
    runs = [solve_sketched_eal(f, c, torch.tensor([-1.5, -0.5], dtype=D), torch.ones(1, dtype=D),
                               generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(runs[0].x, runs[1].x) and torch.equal(runs[0].sketch_iters, runs[1].sketch_iters)


def test_errors():
    f, c = _circle()
    x0, l0 = torch.zeros(2, dtype=D), torch.zeros(1, dtype=D)
    with pytest.raises(ValueError, match="sketch must be one of"):
        solve_sketched_eal(f, c, x0, l0, sketch="count")
    with pytest.raises(ValueError, match="mu0 must be > 0.0, got -1.0"):
        solve_sketched_eal(f, c, x0, l0, mu0=-1.0)
    with pytest.raises(ValueError, match="beta must be < 0.5, got 0.5"):
        solve_sketched_eal(f, c, x0, l0, beta=0.5)
    with pytest.raises(ValueError, match="rho must be > 1.0, got 1.0"):
        solve_sketched_eal(f, c, x0, l0, rho=1.0)
    with pytest.raises(ValueError, match="max_iter must be >= 1, got 0"):
        solve_sketched_eal(f, c, x0, l0, max_iter=0)
    with pytest.raises(TypeError, match=r"lam0 must have the dtype of x0 \(torch.float64\), got torch.float32"):
        solve_sketched_eal(f, c, x0, l0.float())
    with pytest.raises(ValueError, match=r"c must return a tensor of shape \(2,\)"):
        solve_sketched_eal(f, c, x0, torch.zeros(2, dtype=D))
    with pytest.raises(ValueError, match="x0 must be finite"):
        solve_sketched_eal(f, c, torch.tensor([float("nan"), 0.0], dtype=D), l0)
    with pytest.raises(ValueError, match="rank deficient"):  # gradient of x^T x - 2 vanishes at the origin
        solve_sketched_eal(f, c, x0, l0)
    with pytest.raises(ValueError, match="threshold must be >= 0.0, got -1.0"):
        sketch_solve_kkt(torch.eye(2, dtype=D), torch.ones(2, dtype=D), x0, -1.0, sketch="gaussian", max_iter=1)
    with pytest.raises(ValueError, match="sketch must be one of"):
        sketch_solve_kkt(torch.eye(2, dtype=D), torch.ones(2, dtype=D), x0, 0.0, sketch="exact", max_iter=1)


@pytest.mark.parametrize("name", ["HS6", "HS7", "HS40", "HS77", "HS78", "HS79"])
def test_hock_schittkowski_problems_reach_their_published_optima(name):
    """The claim's problem definitions: exact SQP from the standard start lands on the published optimum."""
    from paperzoo.claims.optim.sketched_eal_sqp import hock_schittkowski

    f, c, x0, m, f_star = hock_schittkowski(name)
    res = solve_sketched_eal(f, c, x0, torch.zeros(m, dtype=D), sketch="exact", tol=1e-8)
    assert res.converged and abs(float(f(res.x)) - f_star) < 1e-7
    assert float(c(res.x).abs().max()) < 1e-8
    with pytest.raises(ValueError, match=r"^name must be one of \['HS40', "):
        hock_schittkowski("HS1")


def test_sketch_solver_moves_nowhere_on_a_sketch_k_annihilates():
    # a zero row (uniform_row) and K = 0 (gaussian) used to give (r_i / tiny) * 0 = inf * 0 = NaN
    K = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 3.0]], dtype=D)
    b = torch.tensor([1.0, 5.0, 1.0], dtype=D)
    z, t = sketch_solve_kkt(K, b, torch.zeros(3, dtype=D), 1e-8, sketch="uniform_row", max_iter=200,
                            generator=torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(z).all()) and t == 200  # inconsistent system: runs out of iterations
    z, t = sketch_solve_kkt(torch.zeros(3, 3), torch.full((3,), 5.0), torch.ones(3), 1e-8, sketch="gaussian",
                            max_iter=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(z, torch.ones(3)) and t == 5


def test_declared_errors():
    f, c = _circle()
    x0, l0 = torch.tensor([-1.5, -0.5], dtype=D), torch.ones(1, dtype=D)
    with pytest.raises(ValueError, match=r"lam0 must have at most as many entries as x0 \(m <= d = 2"):
        solve_sketched_eal(f, c, x0, torch.zeros(3, dtype=D))
    with pytest.raises(ValueError, match="lam0 must not be empty"):
        solve_sketched_eal(f, c, x0, torch.zeros(0, dtype=D))
    with pytest.raises(TypeError, match="f must be callable, got NoneType"):
        solve_sketched_eal(None, c, x0, l0)
    with pytest.raises(ValueError, match="f must be finite at x0, got nan"):
        solve_sketched_eal(lambda x: x.log().sum(), c, x0, l0)
    with pytest.raises(ValueError, match="c must be finite at x0"):
        solve_sketched_eal(f, lambda x: (x.square().sum() / 0.0 - x.square().sum() / 0.0).reshape(1), x0, l0)
    with pytest.raises(ValueError, match=r"f must return a scalar tensor, got shape \(2,\)"):
        solve_sketched_eal(lambda x: x, c, x0, l0)
    with pytest.raises(ValueError, match="theta must be <= 1.0, got 1.5"):
        solve_sketched_eal(f, c, x0, l0, theta=1.5)
    K = torch.eye(2, dtype=D)
    with pytest.raises(ValueError, match=r"b must have N = 2 \(from K\)"):
        sketch_solve_kkt(K, torch.ones(3, dtype=D), x0, 0.0, sketch="gaussian", max_iter=1)
    with pytest.raises(TypeError, match="z must have the dtype of K"):
        sketch_solve_kkt(K, torch.ones(2, dtype=D), x0.float(), 0.0, sketch="gaussian", max_iter=1)
    with pytest.raises(ValueError, match="max_iter must be >= 0, got -1"):
        sketch_solve_kkt(K, torch.ones(2, dtype=D), x0, 0.0, sketch="gaussian", max_iter=-1)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 6), seed=st.integers(0, 10_000), zero_rows=st.integers(0, 2),
       sketch=st.sampled_from(["gaussian", "uniform_row"]), max_iter=st.integers(0, 300))
def test_property_sketch_solver_is_finite_stops_at_threshold_and_keeps_the_start(n, seed, zero_rows, sketch,
                                                                                 max_iter):
    g = torch.Generator().manual_seed(seed)
    K = torch.randn(n, n, generator=g, dtype=D) + 3 * torch.eye(n, dtype=D)
    K[: min(zero_rows, n)] = 0.0
    b = K @ torch.randn(n, generator=g, dtype=D)  # consistent even with zero rows
    z0 = torch.randn(n, generator=g, dtype=D)
    start = z0.clone()
    z, t = sketch_solve_kkt(K, b, z0, 1e-6, sketch=sketch, max_iter=max_iter, generator=g)
    assert bool(torch.isfinite(z).all()) and 0 <= t <= max_iter and torch.equal(z0, start)
    assert t == max_iter or float((K @ z - b).norm()) <= 1e-6


@settings(max_examples=25, deadline=None)
@given(d=st.integers(2, 6), seed=st.integers(0, 10_000), data=st.data())
def test_property_exact_sqp_on_a_random_equality_qp_meets_the_kkt_conditions(d, seed, data):
    m = data.draw(st.integers(1, d))
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=D)
    Q = A @ A.T + torch.eye(d, dtype=D)
    q = torch.randn(d, generator=g, dtype=D)
    C = torch.randn(m, d, generator=g, dtype=D)
    e = torch.randn(m, generator=g, dtype=D)
    res = solve_sketched_eal(lambda x: 0.5 * x @ Q @ x + q @ x, lambda x: C @ x - e, torch.zeros(d, dtype=D),
                             torch.zeros(m, dtype=D), sketch="exact", tol=1e-8, max_iter=20)
    assert res.converged and bool(torch.isfinite(res.x).all())
    assert float((C @ res.x - e).abs().max()) < 1e-7
    assert float((Q @ res.x + q + C.T @ res.lam).abs().max()) < 1e-7
