"""Tests for paperzoo.diagnostics.attention_svm: Att-SVM solvers against scipy SLSQP on the primal, KKT conditions,
closed forms, and the closed-form attention gradient against autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from paperzoo.diagnostics.attention_svm import (_constraint_matrices, _forward_grad, att_svm, attention_gd,
                                                direction_cosine, optimal_tokens, random_attention_problem,
                                                stable_rank)


def _problem(seed, n=4, T=4, d=6):
    return random_attention_problem(n, T, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", [0, 1])
def test_fro_svm_matches_slsqp_primal(seed):
    p = _problem(seed)
    opt = optimal_tokens(p["X"], p["Y"], p["v"])
    sol = att_svm(p["X"], p["z"], opt, "fro")
    A = _constraint_matrices(p["X"], p["z"], opt)
    res = minimize(lambda w: (0.5 * w @ w, w), np.zeros(A.shape[1]) + 0.1, jac=True, method="SLSQP",
                   constraints=[{"type": "ineq", "fun": lambda w: A @ w - 1, "jac": lambda w: A}],
                   options={"ftol": 1e-14, "maxiter": 1000})
    assert sol.converged
    np.testing.assert_allclose(sol.W.numpy().ravel(), res.x, atol=1e-6)
    assert sol.min_margin == pytest.approx(1.0, abs=1e-8)


def test_nuc_svm_duality_gap_and_norm_order():
    p = _problem(2)
    opt = optimal_tokens(p["X"], p["Y"], p["v"])
    fro, nuc = att_svm(p["X"], p["z"], opt, "fro"), att_svm(p["X"], p["z"], opt, "nuc")
    assert nuc.converged and nuc.duality_gap <= 1e-5 * nuc.norm_value
    # the nuclear solution has the smaller nuclear norm, the Frobenius one the smaller Frobenius norm
    assert float(torch.linalg.matrix_norm(nuc.W, "nuc")) <= float(torch.linalg.matrix_norm(fro.W, "nuc")) + 1e-6
    assert float(torch.linalg.norm(fro.W)) <= float(torch.linalg.norm(nuc.W)) + 1e-9
    assert nuc.min_margin >= 1 - 1e-6


def test_one_constraint_closed_form():
    # single constraint <a b^T, W> >= 1: W = a b^T / (|a|^2 |b|^2) for both norms (rank one).
    X = torch.tensor([[[1.0, 2.0, 0.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    z = torch.tensor([[0.0, 1.0, 1.0]], dtype=torch.float64)
    a = X[0, 0] - X[0, 1]
    expect = torch.outer(a, z[0]) / (a @ a * (z[0] @ z[0]))
    for norm in ("fro", "nuc"):
        sol = att_svm(X, z, torch.tensor([0]), norm)
        torch.testing.assert_close(sol.W, expect, atol=1e-6, rtol=0)


def test_forward_grad_matches_autograd():
    p = _problem(3)
    W = torch.randn(6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    a = torch.einsum("ntd,de,ne->nt", p["X"], W, p["z"])
    f = (torch.softmax(a, 1) * (p["X"] @ p["v"])).sum(1)
    loss = torch.log1p(torch.exp(-p["Y"] * f)).mean()
    (g,) = torch.autograd.grad(loss, W)
    l2, G, _ = _forward_grad(p["X"], p["Y"], p["v"], p["z"], W.detach())
    assert float(l2) == pytest.approx(float(loss.detach()), abs=1e-14)
    torch.testing.assert_close(G, g, atol=1e-13, rtol=1e-10)


def test_gd_converges_to_fro_svm_and_kq_path_runs(one_thread):
    p = random_attention_problem(6, 5, 8, generator=torch.Generator().manual_seed(0))
    run = attention_gd(p["X"], p["Y"], p["v"], p["z"], 1500, lr=0.1, log_every=500)
    sel = run.attention.argmax(1)
    fro = att_svm(p["X"], p["z"], sel, "fro")
    cos = [direction_cosine(W, fro.W) for W in run.W_path[1:]]
    assert cos[-1] > 0.99 and cos[-1] > cos[0]
    kq = attention_gd(p["X"], p["Y"], p["v"], p["z"], 200, param="KQ", log_every=100)
    assert kq.converged and torch.allclose(kq.W, kq.W_path[-1])


def test_small_helpers():
    assert stable_rank(torch.zeros(2, 2)) == 0.0
    assert direction_cosine(torch.eye(2), -torch.eye(2)) == pytest.approx(-1.0)


def test_errors_pinned():
    p = _problem(0)
    with pytest.raises(ValueError, match="Y must contain only -1 and \\+1"):
        optimal_tokens(p["X"], p["Y"] * 2, p["v"])
    with pytest.raises(ValueError, match="opt must contain indices in \\[0, 4\\)"):
        att_svm(p["X"], p["z"], torch.tensor([0, 1, 2, 9]))
    with pytest.raises(ValueError, match="norm"):
        att_svm(p["X"], p["z"], torch.zeros(4, dtype=torch.int64), "l1")
    with pytest.raises(ValueError, match="init_scale must be > 0 for param='KQ'"):
        attention_gd(p["X"], p["Y"], p["v"], p["z"], 3, param="KQ", init_scale=0.0)


def test_infeasible_warns():
    X = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]], dtype=torch.float64)
    with pytest.warns(RuntimeWarning):
        sol = att_svm(X, torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([0]))
    assert not sol.converged
