"""Vicinity UFM: limits in beta, stationarity at the result, the first-order prediction against the solver, errors."""

from __future__ import annotations

import pytest
import torch

from paperzoo.diagnostics.neural_collapse import neural_collapse_metrics
from paperzoo.diagnostics.vicinity_ufm import (solve_vicinity_ufm, vicinity_nc1_prediction,
                                               vicinity_ufm_objective)

DT = torch.float64
torch.set_num_threads(1)


def _problem(sigma=0.3, K=3, d=6, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(K * n) % K
    H0 = torch.randn(K, d, generator=g, dtype=DT)[y] + sigma * torch.randn(K * n, d, generator=g, dtype=DT)
    return H0, y


def test_large_beta_returns_input():
    H0, y = _problem()
    res = solve_vicinity_ufm(H0, y, 1e8, 1e-2, lam_H=1e-2)
    assert torch.allclose(res.H, H0, atol=1e-6)


def test_zero_beta_collapses_like_plain_ufm():
    H0, y = _problem()
    res = solve_vicinity_ufm(H0, y, 0.0, 1e-2, lam_H=1e-2)
    assert res.converged
    assert neural_collapse_metrics(res.H, y).nc1 < 1e-20


def test_stationarity_against_autograd():
    H0, y = _problem()
    res = solve_vicinity_ufm(H0, y, 0.3, 1e-2, lam_H=2e-2)
    W, H = res.W.clone().requires_grad_(), res.H.clone().requires_grad_()
    gW, gH = torch.autograd.grad(vicinity_ufm_objective(W, H, H0, y, 0.3, 1e-2, lam_H=2e-2), (W, H))
    assert float(torch.sqrt(gW.square().sum() + gH.square().sum())) < 1e-9
    assert res.min_curvature > 0
    assert res.objective == pytest.approx(float(vicinity_ufm_objective(res.W, res.H, H0, y, 0.3, 1e-2, lam_H=2e-2)))


def test_local_minimum_against_perturbations():
    H0, y = _problem()
    res = solve_vicinity_ufm(H0, y, 0.1, 1e-2, lam_H=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        dW = 1e-3 * torch.randn(res.W.shape, generator=g, dtype=DT)
        dH = 1e-3 * torch.randn(res.H.shape, generator=g, dtype=DT)
        assert float(vicinity_ufm_objective(res.W + dW, res.H + dH, H0, y, 0.1, 1e-2, lam_H=1e-2)) > res.objective


@pytest.mark.parametrize("beta", [1e-5, 1e-2, 0.3, 3.0])
def test_prediction_matches_solver_near_collapse(beta):
    H0, y = _problem(sigma=0.01)
    exact = neural_collapse_metrics(solve_vicinity_ufm(H0, y, beta, 1e-2, lam_H=1e-2).H, y).nc1
    pred = vicinity_nc1_prediction(H0, y, beta, 1e-2, lam_H=1e-2)
    assert exact == pytest.approx(pred.nc1, rel=1e-2)
    assert pred.nc1 < pred.nc1_input
    assert bool((pred.shrinkage < 1).all())


def test_prediction_exact_for_collapsed_input():
    H0, y = _problem(sigma=0.0)
    res = solve_vicinity_ufm(H0, y, 0.2, 1e-2, lam_H=1e-2)
    pred = vicinity_nc1_prediction(H0, y, 0.2, 1e-2, lam_H=1e-2)
    assert torch.allclose(res.H, pred.H, atol=1e-8)


def test_float32_runs():
    H0, y = _problem()
    res = solve_vicinity_ufm(H0.float(), y, 0.5, 1e-2, lam_H=1e-2)
    assert res.converged and res.H.dtype == torch.float32


def test_errors():
    H0, y = _problem()
    with pytest.raises(ValueError, match=r"beta \+ lam_H must be > 0 .* got beta = 0 and lam_H = 0"):
        solve_vicinity_ufm(H0, y, 0.0, 1e-2)
    with pytest.raises(ValueError, match="lam_W must be > 0"):
        solve_vicinity_ufm(H0, y, 0.1, 0.0)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        solve_vicinity_ufm(H0, y, -1.0, 1e-2)
    with pytest.raises(ValueError, match=r"y must have entries in \[0, 1\]"):
        solve_vicinity_ufm(H0, y, 0.1, 1e-2, num_classes=2)
    with pytest.raises(ValueError, match=r"got no samples of class\(es\) \[3\]"):
        vicinity_nc1_prediction(H0, y, 0.1, 1e-2, num_classes=4)
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        solve_vicinity_ufm(H0, y, 1e-4, 1e-2, lam_H=1e-2, max_iter=1)
