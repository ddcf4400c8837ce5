"""Differentiable entropic OT: envelope-theorem gradients (gradcheck in float64), POT agreement, point clouds."""

import warnings

import ot
import pytest
import torch

from paperzoo.transport import (entropic_ot, pairwise_cost, sinkhorn_divergence, sinkhorn_log,
                                sinkhorn_newton_sparse)

F64 = torch.float64


def _clouds(n=6, m=7, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, dtype=F64, generator=g)
    y = torch.randn(m, d, dtype=F64, generator=g) + 0.5
    return x, y, g


def test_gradcheck_cost_matrix_and_marginals():
    x, y, g = _clouds()
    M = pairwise_cost(x, y).requires_grad_()
    la = torch.randn(6, dtype=F64, generator=g, requires_grad=True)
    lb = torch.randn(7, dtype=F64, generator=g, requires_grad=True)

    def value(M, la, lb):  # softmax keeps sum(a) = sum(b) = 1 under gradcheck's perturbations
        return sinkhorn_log(la.softmax(0), lb.softmax(0), M, 0.5, tol=1e-12, check_every=1).reg_cost

    assert torch.autograd.gradcheck(value, (M, la, lb))


def test_gradcheck_positions_and_weights():
    x, y, g = _clouds()
    x.requires_grad_()
    y.requires_grad_()
    la = torch.randn(6, dtype=F64, generator=g, requires_grad=True)

    def value(x, y, la):
        return entropic_ot(x, y, 0.5, a=la.softmax(0), tol=1e-12, check_every=1).reg_cost

    assert torch.autograd.gradcheck(value, (x, y, la))


def test_newton_sparse_gradient_equals_sinkhorn_gradient():
    x, y, _ = _clouds(20, 30)
    a, b = torch.full((20,), 1 / 20, dtype=F64), torch.full((30,), 1 / 30, dtype=F64)
    grads = []
    for solver in (sinkhorn_log, sinkhorn_newton_sparse):
        M = pairwise_cost(x, y).requires_grad_()
        solver(a, b, M, 0.05, tol=1e-11).reg_cost.backward()
        grads.append(M.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-10, rtol=1e-8)


def test_gradcheck_sinkhorn_divergence():
    x, y, _ = _clouds(5, 4)
    x.requires_grad_()
    y.requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: sinkhorn_divergence(x, y, 1.0, tol=1e-12, check_every=1), (x, y))


def test_value_and_gradients_match_pot_envelope_mode():
    """POT's ``ot.solve(..., reg_type='entropy', grad='envelope')`` solves the same problem with
    ``H(P) = -sum P log P`` (no ``-1``): values differ by ``reg * sum(a)``, gradients agree."""
    x, y, _ = _clouds(30, 40, 3)
    M = pairwise_cost(x, y)
    a, b = torch.full((30,), 1 / 30, dtype=F64), torch.full((40,), 1 / 40, dtype=F64)
    M1, a1 = M.clone().requires_grad_(), a.clone().requires_grad_()
    ours = sinkhorn_log(a1, b, M1, 0.1, tol=1e-12).reg_cost
    ours.backward()
    M2, a2 = M.clone().requires_grad_(), a.clone().requires_grad_()
    pot = ot.solve(M2, a2, b, reg=0.1, reg_type="entropy", grad="envelope", max_iter=100_000, tol=1e-13).value
    pot.backward()
    torch.testing.assert_close(ours + 0.1, pot, atol=1e-10, rtol=0)
    torch.testing.assert_close(M1.grad, M2.grad, atol=1e-10, rtol=1e-7)
    # potentials are defined up to a shift; mass-preserving directions see the same derivative
    torch.testing.assert_close(a1.grad - a1.grad.mean(), a2.grad - a2.grad.mean(), atol=1e-8, rtol=1e-7)


def test_reg_cost_is_the_primal_entropic_objective():
    x, y, _ = _clouds(20, 25)
    reg = 0.2
    res = entropic_ot(x, y, reg, tol=1e-12)
    P, M = res.plan, pairwise_cost(x, y)
    primal = (P * M).sum() + reg * (P * (P.log() - 1)).sum()
    torch.testing.assert_close(res.reg_cost, primal, atol=1e-10, rtol=0)
    torch.testing.assert_close(res.cost, (P * M).sum())
    assert not res.reg_cost.requires_grad and not res.plan.requires_grad


def test_solve_is_not_unrolled():
    """Only the final re-evaluation is on the graph: the plan, potentials and linear cost come back detached."""
    x, y, _ = _clouds()
    x.requires_grad_()
    res = entropic_ot(x, y, 0.1)
    assert res.reg_cost.requires_grad
    assert not (res.plan.requires_grad or res.f.requires_grad or res.g.requires_grad or res.cost.requires_grad)
    res.reg_cost.backward()
    M = pairwise_cost(x.detach(), y)
    expected = 2 * (res.plan.sum(1, keepdim=True) * x.detach() - res.plan @ y)  # sum_j P_ij d|x_i - y_j|^2/dx_i
    torch.testing.assert_close(x.grad, expected)
    assert M.shape == res.plan.shape


def test_zero_mass_bins_get_zero_gradient():
    x, y, _ = _clouds()
    a = torch.tensor([0.0, 0.2, 0.2, 0.2, 0.2, 0.2], dtype=F64, requires_grad=True)
    M = pairwise_cost(x, y).requires_grad_()
    res = sinkhorn_log(a, torch.full((7,), 1 / 7, dtype=F64), M, 0.3, tol=1e-12)
    res.reg_cost.backward()
    assert a.grad[0] == 0 and torch.isfinite(a.grad).all()
    assert (M.grad[0] == 0).all() and torch.isfinite(M.grad).all()


def test_pairwise_cost_matches_pot_and_both_forms_agree():
    x, y, _ = _clouds(50, 60, 4)
    torch.testing.assert_close(pairwise_cost(x, y), ot.dist(x, y, metric="sqeuclidean"))
    torch.testing.assert_close(pairwise_cost(x, y, p=1), ot.dist(x, y, metric="euclidean"))
    torch.testing.assert_close(pairwise_cost(x, y, p=3), torch.cdist(x, y) ** 3)
    assert (pairwise_cost(x, x).diagonal() == 0).all()
    big_x, big_y = torch.randn(2100, 8, dtype=F64), torch.randn(1000, 8, dtype=F64)  # n m d > 2**24: Gram form
    torch.testing.assert_close(pairwise_cost(big_x, big_y), (big_x[:, None] - big_y[None]).square().sum(-1))


def test_sinkhorn_divergence_properties_and_small_reg_limit():
    """S(x, x) = 0 also checks the averaged symmetric iteration against sinkhorn_log's self-transport value."""
    x, y, _ = _clouds(15, 15)
    assert abs(float(sinkhorn_divergence(x, x, 0.5, tol=1e-12))) < 1e-10
    s_xy, s_yx = sinkhorn_divergence(x, y, 0.5), sinkhorn_divergence(y, x, 0.5)
    torch.testing.assert_close(s_xy, s_yx)
    assert float(s_xy) > 0
    g = torch.Generator().manual_seed(1)
    u, v = torch.rand(15, 2, dtype=F64, generator=g), torch.rand(15, 2, dtype=F64, generator=g)
    w = torch.full((15,), 1 / 15, dtype=F64)
    exact = float(ot.emd2(w, w, pairwise_cost(u, v)))
    small = float(sinkhorn_divergence(u, v, 0.01, tol=1e-8))  # relative gap 1.5e-2 measured; -> 0 as reg -> 0
    assert abs(small - exact) < 0.03 * exact


def test_entropic_ot_bad_inputs():
    x, y, _ = _clouds()
    with pytest.raises(ValueError, match=r"x must have 2 or 3 dimension\(s\)"):
        entropic_ot(x[0], y, 0.1)
    with pytest.raises(ValueError, match=r"y must have d = 2 \(from x\) in its shape \(\.\.\., m, d\), got shape \(7, 1\)"):
        entropic_ot(x, y[:, :1], 0.1)
    with pytest.raises(TypeError, match="y must have the dtype of x"):
        entropic_ot(x, y.float(), 0.1)
    with pytest.raises(ValueError, match=r"a must have n = 6 \(from x\) in its shape \(\.\.\., n\), got shape \(3,\)"):
        entropic_ot(x, y, 0.1, a=torch.full((3,), 1 / 3, dtype=F64))
    with pytest.raises(ValueError, match="p must be >= 1"):
        pairwise_cost(x, y, p=0.5)
    with pytest.raises(ValueError, match="reg must be > 0"):
        entropic_ot(x, y, 0.0)
