"""SCAD/MCP penalties and prox maps against closed forms, AG vs sklearn's lasso, proximal-gradient agreement."""

from __future__ import annotations

import warnings

import pytest
import torch

from paperzoo.optim.nonconvex_penalties import (mcp_penalty, ncvx_objective, prox_mcp, prox_scad, scad_penalty,
                                                solve_ncvx_ag, solve_ncvx_proximal_gradient)
from paperzoo.core.convergence import ConvergenceWarning

D = torch.float64


def _brute_prox(pen, z, step):
    """Grid minimiser of 0.5 (u - z)^2 + step * pen(u), per entry."""
    u = torch.linspace(-8, 8, 160001, dtype=D)
    vals = 0.5 * (u[None, :] - z[:, None]) ** 2 + step * pen(u)[None, :]
    return u[vals.argmin(1)]


@pytest.mark.parametrize("step", [0.5, 1.0, 2.0])
def test_prox_scad_matches_brute_force(step):
    z = torch.linspace(-6, 6, 61, dtype=D)
    expected = _brute_prox(lambda u: scad_penalty(u, 1.0, 3.7), z, step)
    assert torch.allclose(prox_scad(z, 1.0, 3.7, step), expected, atol=2e-4)


@pytest.mark.parametrize("step", [0.5, 1.0, 2.0])
def test_prox_mcp_matches_brute_force(step):
    z = torch.linspace(-6, 6, 61, dtype=D)
    expected = _brute_prox(lambda u: mcp_penalty(u, 1.0, 3.0), z, step)
    assert torch.allclose(prox_mcp(z, 1.0, 3.0, step), expected, atol=2e-4)


def test_penalty_closed_forms():
    t = torch.tensor([0.0, 0.5, 2.0, 10.0], dtype=D)
    assert torch.allclose(scad_penalty(t, 1.0, 3.7), torch.tensor([0.0, 0.5, (2 * 3.7 * 2 - 4 - 1) / 5.4, 2.35], dtype=D))
    assert torch.allclose(mcp_penalty(t, 1.0, 3.0), torch.tensor([0.0, 0.5 - 0.25 / 6, 2 - 4 / 6, 1.5], dtype=D))


def _data(seed=0, n=60, p=30):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, p, generator=g, dtype=D)
    beta = torch.zeros(p, dtype=D)
    beta[:3] = torch.tensor([2.0, -1.5, 1.0], dtype=D)
    return X, X @ beta + 0.1 * torch.randn(n, generator=g, dtype=D)


def test_lasso_case_matches_sklearn():
    from sklearn.linear_model import Lasso

    X, y = _data()
    ref = Lasso(alpha=0.1, fit_intercept=False, tol=1e-12, max_iter=100000).fit(X.numpy(), y.numpy()).coef_
    res = solve_ncvx_ag(X, y, penalty="l1", lam=0.1, max_iter=20000, tol=1e-15)
    assert torch.allclose(res.x, torch.as_tensor(ref), atol=1e-6)


@pytest.mark.parametrize("penalty", ["scad", "mcp"])
def test_ag_and_proximal_gradient_reach_a_common_stationary_point(penalty):
    X, y = _data(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ag = solve_ncvx_ag(X, y, penalty=penalty, lam=0.2, max_iter=3000, tol=1e-14)
        pg = solve_ncvx_proximal_gradient(X, y, penalty=penalty, lam=0.2, max_iter=3000, tol=1e-14)
        exact = solve_ncvx_proximal_gradient(X, y, penalty=penalty, lam=0.2, split=False, max_iter=3000, tol=1e-14)
    assert torch.allclose(ag.x, pg.x, atol=1e-5) and torch.allclose(pg.x, exact.x, atol=1e-5)
    assert torch.isclose(ag.objective[-1], ncvx_objective(X, y, ag.x, penalty=penalty, lam=0.2))
    assert set((ag.x != 0).nonzero().flatten().tolist()) == {0, 1, 2}


def test_logistic_loss_float32_runs():
    X, y = _data(2)
    yb = (y > 0).float()
    res = solve_ncvx_ag(X.float(), yb, penalty="mcp", lam=0.05, loss="logistic", max_iter=500, tol=0.0)
    assert res.x.dtype == torch.float32 and bool(torch.isfinite(res.objective).all())


def test_warns_when_not_converged():
    X, y = _data()
    with pytest.warns(ConvergenceWarning, match="increase max_iter"):
        solve_ncvx_ag(X, y, lam=0.1, max_iter=2, tol=1e-12)


def test_bad_inputs():
    X, y = _data()
    with pytest.raises(ValueError, match="penalty must be one of"):
        solve_ncvx_ag(X, y, penalty="lasso", lam=0.1)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        solve_ncvx_ag(X, y, lam=-1.0)
    with pytest.raises(ValueError, match=r"shape \(SCAD's a\) must be > 1.0, got 1.0"):
        solve_ncvx_ag(X, y, penalty="scad", lam=0.1, shape=1.0)
    with pytest.raises(ValueError, match=r"y must have n = 60 \(from X\)"):
        solve_ncvx_ag(X, y[:5], lam=0.1)
    with pytest.raises(ValueError, match="labels in"):
        solve_ncvx_ag(X, y, lam=0.1, loss="logistic")
    with pytest.raises(ValueError, match="step must be < a - 1"):
        prox_scad(torch.zeros(2), 1.0, 3.7, step=3.0)
    with pytest.raises(ValueError, match="step must be < gamma"):
        prox_mcp(torch.zeros(2), 1.0, 3.0, step=3.0)
