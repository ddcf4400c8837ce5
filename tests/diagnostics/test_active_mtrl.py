import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.active_mtrl import (active_mtrl, fit_linear_representation, lasso_relevance,
                                              linear_mtrl_sampler, predicted_representation_error,
                                              relevance_vectors, source_allocation, subspace_target_error)

F64 = torch.float64


def _heads(k, m, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, m, generator=g, dtype=F64), g


def test_relevance_vectors_against_subset_enumeration():
    W, g = _heads(2, 6, 0)
    w0 = torch.randn(2, generator=g, dtype=F64)
    r = relevance_vectors(W, w0)
    # basis pursuit optimum sits on a vertex: some k-subset of heads solves exactly
    best = min(float(torch.linalg.solve(W[:, list(s)], w0).abs().sum()) for s in itertools.combinations(range(6), 2))
    assert r.nu1_l1 == pytest.approx(best, rel=1e-9)
    torch.testing.assert_close(W @ r.nu1, w0, atol=1e-10, rtol=0)
    # nu2 is the minimum-norm solution (numpy lstsq route)
    import numpy as np
    ref = np.linalg.lstsq(W.numpy(), w0.numpy(), rcond=None)[0]
    torch.testing.assert_close(r.nu2, torch.as_tensor(ref), atol=1e-12, rtol=0)
    assert r.nu1_l1 <= r.nu2_l1 + 1e-12 and r.residual < 1e-12


def test_lasso_matches_sklearn():
    from sklearn.linear_model import Lasso

    W, g = _heads(5, 20, 1)
    w0 = W[:, :3] @ torch.tensor([1.0, -0.5, 0.25], dtype=F64)
    for lam in (1e-3, 1e-2, 0.1):
        ours = lasso_relevance(W, w0, lam, tol=1e-13, max_iter=200000)
        sk = Lasso(alpha=lam, fit_intercept=False, tol=1e-14, max_iter=1000000).fit(W.numpy(), w0.numpy())
        obj = lambda v: 0.5 / 5 * float(((w0 - W @ v) ** 2).sum()) + lam * float(v.abs().sum())  # noqa: E731
        assert obj(ours.nu) <= obj(torch.as_tensor(sk.coef_)) + 1e-10
        torch.testing.assert_close(ours.nu, torch.as_tensor(sk.coef_), atol=2e-5, rtol=0)
        assert ours.converged


def test_lasso_tends_to_basis_pursuit():
    W, g = _heads(3, 12, 2)
    w0 = torch.randn(3, generator=g, dtype=F64)
    r = lasso_relevance(W, w0, 1e-5, tol=1e-13, max_iter=400000)
    assert float(r.nu.abs().sum()) == pytest.approx(relevance_vectors(W, w0).nu1_l1, rel=1e-3)


def test_source_allocation_rules_and_errors():
    nu = torch.tensor([2.0, -1.0, 1.0, 0.0], dtype=F64)
    assert source_allocation(40, "nu1", nu).tolist() == [20, 10, 10, 0]
    assert source_allocation(60, "nu2", nu).tolist() == [40, 10, 10, 0]
    assert source_allocation(10, "uniform", n_tasks=4, floor=3).tolist() == [6, 6, 5, 5]
    assert int(source_allocation(1001, "nu1", nu, floor=2).sum()) == 1001 + 8
    with pytest.raises(ValueError, match="nu or n_tasks"):
        source_allocation(10, "uniform")
    with pytest.raises(ValueError, match="nu is required for strategy 'nu1'"):
        source_allocation(10, "nu1", n_tasks=3)
    with pytest.raises(ValueError, match="strategy"):
        source_allocation(10, "nu3", nu)
    with pytest.raises(ValueError, match="budget"):
        source_allocation(-1, "nu1", nu)


def test_prediction_closed_forms():
    W, g = _heads(3, 10, 3)
    w0 = W[:, :3] @ torch.tensor([1.0, 0.5, -0.25], dtype=F64)
    rv = relevance_vectors(W, w0)
    n_total, d, s2 = 1000.0, 13, 0.7
    opt = n_total * rv.nu1.abs() / rv.nu1_l1 + 1e-9  # n proportional to |nu1| (support of size k)
    p_opt = predicted_representation_error(W, w0, opt, s2, d)
    assert p_opt == pytest.approx(s2 * (d - 3) * rv.nu1_l1 ** 2 / n_total, rel=1e-6)
    uni = torch.full((10,), n_total / 10, dtype=F64)
    assert predicted_representation_error(W, w0, uni, s2, d) == pytest.approx(
        s2 * (d - 3) * 10 * rv.nu2_l2 ** 2 / n_total, rel=1e-10)
    # the variational form: min over nu with W nu = w0 of sum nu^2 / n (weighted min-norm solution)
    n = torch.rand(10, generator=g, dtype=F64) * 100 + 1
    nu_w = n * (W.T @ torch.linalg.solve((W * n) @ W.T, w0))
    assert predicted_representation_error(W, w0, n, 1.0, 4) == pytest.approx(float((nu_w ** 2 / n).sum()), rel=1e-10)
    with pytest.raises(ValueError, match="d must be >= k = 3, got 2"):
        predicted_representation_error(W, w0, n, 1.0, 2)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10 ** 6))
def test_nu1_allocation_is_optimal_property(seed):
    W, g = _heads(2, 7, seed)
    w0 = torch.randn(2, generator=g, dtype=F64)
    rv = relevance_vectors(W, w0)
    lower = rv.nu1_l1 ** 2 / 100.0
    n = torch.distributions.Dirichlet(torch.ones(7, dtype=F64)).sample() * 100.0 + 1e-9
    assert predicted_representation_error(W, w0, n, 1.0, 3) >= lower * (1 - 1e-8)


def _explicit(M, n, d, k, noise, seed):
    g = torch.Generator().manual_seed(seed)
    Bs = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=F64))[0]
    Ws = torch.randn(k, M, generator=g, dtype=F64)
    X = torch.randn(M, n, d, generator=g, dtype=F64)
    y = torch.einsum("mnd,dk,km->mn", X, Bs, Ws) + noise * torch.randn(M, n, generator=g, dtype=F64)
    return Bs, Ws, X, y


def test_representation_fit_is_stationary_for_explicit_loss():
    Bs, Ws, X, y = _explicit(5, 30, 7, 2, 0.3, 4)
    r = fit_linear_representation(X.transpose(1, 2) @ X, torch.einsum("mnd,mn->md", X, y), 2, tol=1e-15,
                                  max_iter=2000)
    B = r.B.clone().requires_grad_(True)
    W = r.W.clone().requires_grad_(True)
    loss = sum(((y[m] - X[m] @ B @ W[:, m]) ** 2).sum() for m in range(5))  # explicit per-task loop
    gB, gW = torch.autograd.grad(loss, (B, W))
    assert float(gB.abs().max()) < 1e-5 and float(gW.abs().max()) < 1e-6
    assert r.objective + float((y ** 2).sum()) == pytest.approx(loss.item(), rel=1e-9)
    torch.testing.assert_close(r.B.T @ r.B, torch.eye(2, dtype=F64), atol=1e-12, rtol=0)


def test_prediction_matches_monte_carlo():
    d, k, M, n = 12, 2, 6, 300
    g = torch.Generator().manual_seed(5)
    Bs = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=F64))[0]
    Ws = torch.randn(k, M, generator=g, dtype=F64)
    w0 = Ws[:, 0] + 0.5 * Ws[:, 1]
    counts = torch.tensor([n, n, n // 2, n // 2, n // 4, n // 4])
    sampler = linear_mtrl_sampler(Bs, Ws, 1.0, g)
    errs = []
    for _ in range(60):
        gram, xty = sampler(counts)
        errs.append(subspace_target_error(fit_linear_representation(gram, xty, k).B, Bs @ w0))
    pred = predicted_representation_error(Ws, w0, counts.double(), 1.0, d)
    se = torch.tensor(errs).std().item() / math.sqrt(len(errs))
    assert abs(sum(errs) / len(errs) - pred) < 0.15 * pred + 2 * se


def test_sampler_and_active_mtrl():
    g = torch.Generator().manual_seed(6)
    B = torch.linalg.qr(torch.randn(8, 2, generator=g, dtype=F64))[0]
    W = torch.randn(2, 5, generator=g, dtype=F64)
    s = linear_mtrl_sampler(B, W, 0.0, g)
    gram, xty = s(torch.tensor([20, 0, 20, 20, 20]))
    assert float(gram[1].abs().sum()) == 0.0
    # noiseless: X^T y = X^T X B w
    torch.testing.assert_close(xty[0], gram[0] @ B @ W[:, 0], atol=1e-10, rtol=0)
    X0 = torch.randn(40, 8, generator=g, dtype=F64)
    y0 = X0 @ (B @ W[:, 0])
    for strategy in ("uniform", "nu2", "nu1_lasso"):
        r = active_mtrl(linear_mtrl_sampler(B, W, 0.1, g), 5, X0, y0, 2, 400, strategy, pilot=10)
        assert int(r.counts.sum()) == 400 and bool((r.counts >= 10).all())
        assert subspace_target_error(r.B, B @ W[:, 0]) < 1e-2
    with pytest.raises(ValueError, match="budget must be >= pilot \\* n_tasks = 50, got 40"):
        active_mtrl(s, 5, X0, y0, 2, 40, pilot=10)
    with pytest.raises(ValueError, match="lam_ratio"):
        active_mtrl(s, 5, X0, y0, 2, 400, lam_ratio=1.5)


def test_relevance_vectors_float32_and_rank_deficient_heads_stay_feasible():
    # The fuzz table found a float32 W where the projected target left the numerical span and HiGHS reported
    # infeasible; the program now lives on W's numerical row space in float64.
    g = torch.Generator().manual_seed(3)
    for trial in range(200):
        k, m = 1 + trial % 6, 1 + (trial // 6) % 6
        W = torch.randn(k, m, generator=g)
        if m > 1 and trial % 2:
            W[:, -1] = W[:, 0]
        w0 = torch.randn(k, generator=g)
        r = relevance_vectors(W, w0)
        ref = torch.linalg.pinv(W.double()) @ w0.double()
        torch.testing.assert_close(r.nu2.double(), ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(W.double() @ r.nu1.double(), W.double() @ ref, atol=1e-4, rtol=1e-4)
        assert r.nu1_l1 <= r.nu2_l1 * (1 + 1e-5) + 1e-6
