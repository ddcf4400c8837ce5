"""Tests for paperzoo.transport.sparsity_constrained (Sparsity-Constrained Optimal Transport, 2023)."""

import warnings

import numpy as np
import ot
import pytest
import torch

from paperzoo.transport import ConvergenceWarning, projection_sparse_simplex, sparsity_constrained_ot


def _problem(n=10, m=10, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g, dtype=dtype)
    y = torch.rand(m, 2, generator=g, dtype=dtype)
    M = torch.cdist(x, y) ** 2
    return torch.full((n,), 1.0 / n, dtype=dtype), torch.full((m,), 1.0 / m, dtype=dtype), M


def test_projection_sparse_simplex_matches_pot_and_closed_form():
    g = torch.Generator().manual_seed(1)
    V = torch.randn(7, 5, generator=g, dtype=torch.float64)
    for k in (1, 2, 3, 7):
        T, tau = projection_sparse_simplex(V, k)
        ref = ot.utils.projection_sparse_simplex(V.numpy(), k, axis=0)
        np.testing.assert_allclose(T.numpy(), ref, atol=1e-12)
        assert torch.allclose(T.sum(0), torch.ones(5, dtype=torch.float64))
        assert int((T > 0).sum(0).max()) <= k
    # k = 1 puts all mass on the argmax
    T, _ = projection_sparse_simplex(V, 1)
    assert torch.equal(T.argmax(0), V.argmax(0))
    T, _ = projection_sparse_simplex(torch.tensor([[0.5], [0.3], [0.2]], dtype=torch.float64), 2)
    torch.testing.assert_close(T.squeeze(1), torch.tensor([0.6, 0.4, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("formulation", ["dual", "semi_dual"])
def test_large_k_is_quadratic_ot_of_pot(formulation):
    a, b, M = _problem()
    reg = 0.2
    ref = ot.smooth.smooth_ot_dual(a.numpy(), b.numpy(), M.numpy(), reg, reg_type="l2", stopThr=1e-12,
                                   numItermax=10_000)
    res = sparsity_constrained_ot(a, b, M, reg, k=10, formulation=formulation, tol=1e-7)
    assert res.converged
    np.testing.assert_allclose(res.plan.numpy(), ref, atol=2e-6)
    # potentials convention: plan = top_k([f + g - M]_+) / reg
    X = (res.f[:, None] + res.g[None, :] - M).clamp(min=0) / reg
    torch.testing.assert_close(res.plan, X, atol=1e-10, rtol=0)
    # reg_cost = <T, M> + reg/2 ||T||^2 at the optimum, gradient d/dM = plan
    primal = float(res.cost + 0.5 * reg * (res.plan ** 2).sum())
    assert float(res.reg_cost) == pytest.approx(primal, rel=1e-6)


def test_step_by_step_dual_objective_matches_pot_sparsity_constrained():
    a, b, M = _problem(6, 5, seed=3)
    g = torch.Generator().manual_seed(2)
    alpha, beta = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    from paperzoo.transport.sparsity_constrained import _dual_plan, _dual_value
    for k in (1, 2, 5):
        regul = ot.smooth.SparsityConstrained(max_nz=k, gamma=0.3)
        obj, ga, gb = ot.smooth.dual_obj_grad(alpha.numpy(), beta.numpy(), a.numpy(), b.numpy(), M.numpy(), regul)
        T = _dual_plan(alpha, beta, M, 0.3, k)
        assert float(_dual_value(a, b, M, alpha, beta, 0.3, k)) == pytest.approx(obj, rel=1e-12)
        np.testing.assert_allclose((a - T.sum(1)).numpy(), ga, atol=1e-12)
        np.testing.assert_allclose((b - T.sum(0)).numpy(), gb, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_column_cardinality_at_most_k(k):
    a, b, M = _problem(12, 12 if k == 1 else 6, seed=k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for form in ("dual", "semi_dual"):
            res = sparsity_constrained_ot(a, b, M, 0.5, k=k, formulation=form, max_iter=200)
            assert int((res.plan > 0).sum(0).max()) <= k
            assert bool((res.plan >= 0).all())


def test_semi_dual_k1_recovers_emd_and_small_reg_approaches_emd():
    a, b, M = _problem(10, 10, seed=4)
    emd = ot.emd2(a.numpy(), b.numpy(), M.numpy())
    res = sparsity_constrained_ot(a, b, M, 0.3, k=1, formulation="semi_dual", tol=1e-9)
    assert float(res.cost) == pytest.approx(emd, rel=1e-9)
    res = sparsity_constrained_ot(a, b, M, 1e-3, k=10, tol=1e-6, max_iter=3000)
    assert float(res.cost) == pytest.approx(emd, rel=1e-2)
    assert float(res.cost) >= emd - 1e-9


def test_float32_zero_mass_bins_and_gradients():
    a, b, M = _problem(8, 4, seed=5, dtype=torch.float32)
    a = a.clone()
    a[0] = 0.0
    a = a / a.sum()
    M = M.clone().requires_grad_(True)
    res = sparsity_constrained_ot(a, b, M, 0.5, k=8, tol=1e-5)
    assert res.marginal_error <= 1e-5
    assert res.plan.dtype == torch.float32 and res.converged
    assert float(res.plan[0].abs().sum()) == 0.0 and res.f[0] == -float("inf")
    res.reg_cost.backward()
    torch.testing.assert_close(M.grad, res.plan.detach(), atol=1e-6, rtol=0)


def test_nonconvergence_warns():
    a, b, M = _problem(15, 15, seed=6)
    with pytest.warns(ConvergenceWarning, match="increase max_iter"):
        res = sparsity_constrained_ot(a, b, M, 0.01, k=15, max_iter=2, check_every=1, tol=0.0)
    assert not res.converged and res.n_iter == 2


def test_bad_inputs():
    a, b, M = _problem(6, 3)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        sparsity_constrained_ot(a, b, M, 0.1, 0)
    with pytest.raises(ValueError, match=r"k must be >= ceil\(n_sources / n_targets\) = 2"):
        sparsity_constrained_ot(a, b, M, 0.1, 1)
    with pytest.raises(TypeError, match="k must be an integer, got float"):
        sparsity_constrained_ot(a, b, M, 0.1, 2.0)
    with pytest.raises(ValueError, match="reg must be > 0.0, got -1.0"):
        sparsity_constrained_ot(a, b, M, -1.0, 2)
    with pytest.raises(ValueError, match="formulation must be one of"):
        sparsity_constrained_ot(a, b, M, 0.1, 2, formulation="primal")
    with pytest.raises(ValueError, match="max_iter must be >= 1, got 0"):
        sparsity_constrained_ot(a, b, M, 0.1, 2, max_iter=0)
    with pytest.raises(ValueError, match=r"M must have m = 3 \(from b\) in its shape \(n, m\), got shape \(6, 2\)"):
        sparsity_constrained_ot(a, b, M[:, :2], 0.1, 2)
    with pytest.raises(ValueError, match="b must have the same total mass"):
        sparsity_constrained_ot(a, 2 * b, M, 0.1, 2)
