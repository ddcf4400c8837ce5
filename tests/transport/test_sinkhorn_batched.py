"""Batched sinkhorn_log (a (B, n), b (B, m), M (B, n, m)) against a loop of unbatched solves."""

import pytest
import torch

from paperzoo.transport import ConvergenceWarning, entropic_ot, pairwise_cost, sinkhorn_divergence, sinkhorn_log

F64 = torch.float64


def _problems(B=3, n=6, m=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(B, n, dtype=F64, generator=g) + 0.1
    b = torch.rand(B, m, dtype=F64, generator=g) + 0.1
    a[1, 2] = 0.0  # a zero-mass bin in one problem only
    b[2, 0] = 0.0
    a, b = a / a.sum(1, keepdim=True), b / b.sum(1, keepdim=True)
    M = torch.rand(B, n, m, dtype=F64, generator=g)
    return a, b, M


def test_batch_equals_loop_including_zero_mass_bins():
    a, b, M = _problems()
    res = sinkhorn_log(a, b, M, 0.1, tol=1e-12)
    assert res.plan.shape == (3, 6, 5) and res.cost.shape == (3,) and res.reg_cost.shape == (3,)
    assert res.converged and res.marginal_error <= 1e-12
    for i in range(3):
        one = sinkhorn_log(a[i], b[i], M[i], 0.1, tol=1e-12)
        torch.testing.assert_close(res.plan[i], one.plan, atol=1e-12, rtol=0)
        torch.testing.assert_close(res.cost[i], one.cost)
        torch.testing.assert_close(res.reg_cost[i], one.reg_cost)
        # potentials are unique up to a shift on the support; zero-mass bins are -inf in both
        assert torch.equal(torch.isinf(res.f[i]), torch.isinf(one.f))
        fin = torch.isfinite(one.f)
        shift = (res.f[i][fin] - one.f[fin]).mean()
        torch.testing.assert_close(res.f[i][fin] - shift, one.f[fin], atol=1e-9, rtol=0)
    assert res.plan[1, 2].abs().sum() == 0 and res.plan[2, :, 0].abs().sum() == 0


def test_shared_arguments_broadcast():
    a, b, M = _problems()
    a_shared = torch.full((6,), 1 / 6, dtype=F64)
    b_shared = torch.full((5,), 1 / 5, dtype=F64)
    res = sinkhorn_log(a_shared, b_shared, M, 0.2, tol=1e-12)  # only M is batched
    for i in range(3):
        torch.testing.assert_close(res.plan[i], sinkhorn_log(a_shared, b_shared, M[i], 0.2, tol=1e-12).plan)
    res = sinkhorn_log(a, b, M[0], 0.2, tol=1e-12)  # only the marginals are batched
    torch.testing.assert_close(res.plan[2], sinkhorn_log(a[2], b[2], M[0], 0.2, tol=1e-12).plan)


def test_batched_gradcheck_and_zero_mass_gradients():
    M = torch.rand(2, 4, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    M.requires_grad_()
    g = torch.Generator().manual_seed(1)
    la = torch.randn(2, 4, dtype=F64, generator=g, requires_grad=True)
    lb = torch.randn(2, 3, dtype=F64, generator=g, requires_grad=True)

    def value(M, la, lb):
        return sinkhorn_log(la.softmax(-1), lb.softmax(-1), M, 0.5, tol=1e-12, check_every=1).reg_cost

    assert torch.autograd.gradcheck(value, (M, la, lb))
    a, b, M2 = _problems()
    a.requires_grad_()
    M2.requires_grad_()
    sinkhorn_log(a, b, M2, 0.1, tol=1e-11).reg_cost.sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(M2.grad).all()
    assert a.grad[1, 2] == 0 and (M2.grad[1, 2] == 0).all()


def test_batched_point_clouds_and_divergence_match_loop():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 7, 2, dtype=F64, generator=g)
    y = torch.randn(3, 6, 2, dtype=F64, generator=g)
    assert pairwise_cost(x, y).shape == (3, 7, 6)
    batched = entropic_ot(x, y, 0.5, tol=1e-11).reg_cost
    div = sinkhorn_divergence(x, y, 0.5, tol=1e-11)
    for i in range(3):
        torch.testing.assert_close(batched[i], entropic_ot(x[i], y[i], 0.5, tol=1e-11).reg_cost)
        torch.testing.assert_close(div[i], sinkhorn_divergence(x[i], y[i], 0.5, tol=1e-11))


def test_batched_bad_inputs_and_warning():
    a, b, M = _problems()
    with pytest.raises(ValueError, match="a, b and M must share the batch size"):
        sinkhorn_log(a[:2], b, M, 0.1)
    bad_b = b.clone()
    bad_b[1] *= 2
    with pytest.raises(ValueError, match="same total mass as a in every problem.*in problem 1"):
        sinkhorn_log(a, bad_b, M, 0.1)
    with pytest.raises(ValueError, match=r"M must have n = 6 \(from a\) in its shape \(\.\.\., n, m\)"):
        sinkhorn_log(a, b, M[:, :4], 0.1)
    with pytest.raises(ValueError, match="reg must be > 0"):
        sinkhorn_log(a, b, M, -1.0)
    with pytest.warns(ConvergenceWarning, match="worst problem of the batch"):
        res = sinkhorn_log(a, b, M, 0.001, max_iter=3)
    assert not res.converged and res.n_iter == 3


def test_large_batches_are_solved_in_blocks_with_the_same_result():
    """B n m above the block size (2**16 entries) splits the batch; each problem still matches its solo solve."""
    g = torch.Generator().manual_seed(4)
    x, y = torch.rand(5, 128, 2, dtype=F64, generator=g), torch.rand(5, 128, 2, dtype=F64, generator=g)
    res = entropic_ot(x, y, 0.05, tol=1e-10)
    assert res.converged and res.error_history.numel() == res.history_iter.numel()
    assert bool((res.history_iter[1:] > res.history_iter[:-1]).all())
    for i in (0, 4):
        torch.testing.assert_close(res.plan[i], entropic_ot(x[i], y[i], 0.05, tol=1e-10).plan, atol=1e-12, rtol=0)
