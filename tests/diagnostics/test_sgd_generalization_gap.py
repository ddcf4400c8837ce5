"""Tests for paperzoo.diagnostics.sgd_generalization_gap (Roberts 2018: SGD vs GD and the generalization gap)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.gradient_noise import gradient_statistics
from paperzoo.diagnostics.sgd_generalization_gap import (expected_gd_step_gap_change, gd_step_gap_change,
                                                         gradient_noise_trace, sgd_epoch_shift, simulate_epochs)

F64 = torch.float64
bce = torch.nn.functional.binary_cross_entropy_with_logits


def half_mse(out, y):
    return 0.5 * ((out - y) ** 2).sum() / out.shape[0]


def logistic(n=12, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(d, 1).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=F64))
    x = torch.randn(n, d, generator=g, dtype=F64)
    y = (torch.rand(n, 1, generator=g, dtype=F64) < 0.5).to(F64)
    return model, x, y


def flat_params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def set_flat(model, theta):
    with torch.no_grad():
        i = 0
        for p in model.parameters():
            p.copy_(theta[i:i + p.numel()].reshape(p.shape))
            i += p.numel()


def loop_trace(model, loss_fn, x, y):
    """tr Sigma_hat and its gradient by an explicit per-sample loop with double backward (independent route)."""
    params = list(model.parameters())
    gs = []
    for i in range(x.shape[0]):
        li = loss_fn(model(x[i:i + 1]), y[i:i + 1])
        gs.append(torch.cat([t.reshape(-1) for t in torch.autograd.grad(li, params, create_graph=True)]))
    G = torch.stack(gs)
    tr = ((G - G.mean(0)) ** 2).sum() / (G.shape[0] - 1)
    dtr = torch.cat([t.reshape(-1) for t in torch.autograd.grad(tr, params)])
    return float(tr.detach()), dtr


def test_noise_trace_matches_per_sample_loop_and_gradient_statistics():
    model, x, y = logistic()
    tr, dtr = gradient_noise_trace(model, bce, x, y)
    tr_loop, dtr_loop = loop_trace(model, bce, x, y)
    assert tr == pytest.approx(tr_loop, rel=1e-12)
    torch.testing.assert_close(dtr, dtr_loop, rtol=1e-11, atol=1e-13)
    assert tr == pytest.approx(float(gradient_statistics(model, bce, x, y).trace), rel=1e-12)


def test_noise_trace_matches_backpack_batchgrad():
    from backpack import backpack, extend
    from backpack.extensions import BatchGrad

    model, x, y = logistic(n=10, d=4, seed=3)
    tr, _ = gradient_noise_trace(model, bce, x, y)
    emodel = extend(torch.nn.Linear(4, 1).double())
    with torch.no_grad():
        emodel.weight.copy_(model.weight)
        emodel.bias.copy_(model.bias)
    lossf = extend(torch.nn.BCEWithLogitsLoss())
    loss = lossf(emodel(x), y)
    with backpack(BatchGrad()):
        loss.backward()
    # BatchGrad holds the per-sample gradients of the mean loss, i.e. g_i / N
    G = torch.cat([emodel.weight.grad_batch.reshape(10, -1), emodel.bias.grad_batch.reshape(10, -1)], 1) * 10
    assert tr == pytest.approx(float(((G - G.mean(0)) ** 2).sum() / 9), rel=1e-12)


def test_shift_closed_form_linear_regression():
    g = torch.Generator().manual_seed(1)
    n, d, B, lr = 12, 3, 3, 0.07
    x = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.randn(n, 1, generator=g, dtype=F64)
    model = torch.nn.Linear(d, 1, bias=False).double()
    res = sgd_epoch_shift(model, half_mse, x, y, batch_size=B, lr=lr)
    w = model.weight.detach().reshape(-1)
    r = x @ w - y[:, 0]
    gi = x * r[:, None]                       # g_i = x_i r_i
    Hi = x[:, :, None] * x[:, None, :]        # H_i = x_i x_i^T
    # E over distinct pairs (i != j) of H_i g_j minus the GD cross term Hbar gbar, times eta^2 C(m, 2)
    pair = (torch.einsum("ipq,jq->p", Hi, gi) - torch.einsum("ipq,iq->p", Hi, gi)) / (n * (n - 1))
    m = n // B
    expected = lr ** 2 * m * (m - 1) / 2 * (pair - Hi.mean(0) @ gi.mean(0))
    torch.testing.assert_close(res.shift, expected, rtol=1e-12, atol=1e-15)
    assert res.n_steps == 4
    assert res.coefficient == pytest.approx(lr ** 2 * 4 * 3 / (4 * n))


def _epoch_by_hand(model, loss_fn, x, y, order, B, lr):
    theta = flat_params(model).clone()
    probe = torch.nn.Linear(x.shape[1], 1).double()
    for t in range(len(order) // B):
        idx = list(order[t * B:(t + 1) * B])
        set_flat(probe, theta)
        loss = loss_fn(probe(x[idx]), y[idx])
        gr = torch.cat([q.reshape(-1) for q in torch.autograd.grad(loss, list(probe.parameters()))])
        theta = theta - lr * gr
    return theta


def test_shift_is_exact_permutation_average_to_second_order():
    model, x, y = logistic(n=4, d=2, seed=5)
    B = 2
    for lr, tol in ((1e-2, 2e-2), (2e-3, 4e-3)):   # the error is O(eta^3): relative O(eta)
        outs = torch.stack([_epoch_by_hand(model, bce, x, y, p, B, lr) for p in itertools.permutations(range(4))])
        # two full-batch steps (m = 2 updates), by hand
        theta = flat_params(model).clone()
        probe = torch.nn.Linear(2, 1).double()
        for _ in range(2):
            set_flat(probe, theta)
            gr = torch.autograd.grad(bce(probe(x), y), list(probe.parameters()))
            theta = theta - lr * torch.cat([q.reshape(-1) for q in gr])
        pred = sgd_epoch_shift(model, bce, x, y, batch_size=B, lr=lr).shift
        meas = outs.mean(0) - theta
        assert float((meas - pred).norm()) <= tol * float(pred.norm())


def test_simulate_rows_are_epochs_of_some_ordering():
    model, x, y = logistic(n=4, d=2, seed=2)
    sim = simulate_epochs(model, bce, x, y, batch_size=2, lr=0.3, n_runs=16, generator=torch.Generator().manual_seed(0))
    outs = torch.stack([_epoch_by_hand(model, bce, x, y, p, 2, 0.3) for p in itertools.permutations(range(4))])
    dist = torch.cdist(sim.sgd, outs).min(1).values
    assert float(dist.max()) < 1e-12
    assert sim.finite and sim.n_steps == 2
    torch.testing.assert_close(sim.start, flat_params(model))


def test_simulate_full_batch_is_gd_and_model_untouched():
    model, x, y = logistic(n=6, d=2, seed=4)
    before = flat_params(model).clone()
    sim = simulate_epochs(model, bce, x, y, batch_size=6, lr=0.2, n_runs=3)
    torch.testing.assert_close(sim.sgd, sim.gd.expand(3, -1), rtol=0, atol=1e-14)
    torch.testing.assert_close(flat_params(model), before, rtol=0, atol=0)
    assert float(sgd_epoch_shift(model, bce, x, y, batch_size=6, lr=0.2).shift.abs().max()) == 0.0


def test_identical_hessians_give_zero_shift():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(3, 3).double()
    with torch.no_grad():
        model.weight.zero_()
    model.weight.requires_grad_(False)
    z = torch.randn(8, 3, generator=g, dtype=F64)
    res = sgd_epoch_shift(model, half_mse, torch.zeros(8, 3, dtype=F64), z, batch_size=2, lr=0.1)
    assert float(res.shift.abs().max()) < 1e-15
    assert res.n_steps == 4


def test_gd_step_gap_change_matches_exact_small_step():
    g = torch.Generator().manual_seed(7)
    model, x, y = logistic(n=10, d=3, seed=7)
    xt = torch.randn(200, 3, generator=g, dtype=F64)
    yt = (torch.rand(200, 1, generator=g, dtype=F64) < 0.5).to(F64)
    params = list(model.parameters())
    gtr = torch.cat([q.reshape(-1) for q in torch.autograd.grad(bce(model(x), y), params)])
    gte = torch.cat([q.reshape(-1) for q in torch.autograd.grad(bce(model(xt), yt), params)])
    lr = 1e-5
    with torch.no_grad():
        gap0 = float(bce(model(xt), yt) - bce(model(x), y))
        set_flat(model, flat_params(model) - lr * gtr)
        gap1 = float(bce(model(xt), yt) - bce(model(x), y))
    pred = gd_step_gap_change(gtr, gte, lr)
    assert gap1 - gap0 == pytest.approx(pred, rel=1e-4)


def test_expected_gap_change_over_training_sets_finite_population():
    # population: M per-sample gradients at fixed theta; training sets are N draws with replacement
    g = torch.Generator().manual_seed(11)
    M, P, N, S, lr = 50, 4, 8, 200_000, 0.1
    pop = torch.randn(M, P, generator=g, dtype=F64) + torch.tensor([1.0, -0.5, 0.0, 2.0], dtype=F64)
    mu = pop.mean(0)
    trace = float(((pop - mu) ** 2).sum() / M)
    idx = torch.randint(M, (S, N), generator=g)
    gbar = pop[idx].mean(1)
    change = lr * ((gbar * gbar).sum(1) - gbar @ mu)
    se = float(change.std()) / math.sqrt(S)
    assert abs(float(change.mean()) - expected_gd_step_gap_change(trace, N, lr)) < 4 * se
    assert gd_step_gap_change(gbar[0], mu, lr) == pytest.approx(float(change[0]), rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-10, 10), min_size=3, max_size=3), st.floats(0, 2))
def test_gap_change_vanishes_when_train_equals_test(v, lr):
    gv = torch.tensor(v, dtype=F64)
    assert abs(gd_step_gap_change(gv, gv, lr)) <= 1e-12 * (1 + float(gv @ gv))


def test_errors():
    model, x, y = logistic(n=12)
    with pytest.raises(ValueError, match=r"batch_size must divide the number of samples 12 \(an epoch of disjoint "
                                         r"batches\), got 5"):
        sgd_epoch_shift(model, bce, x, y, batch_size=5, lr=0.1)
    with pytest.raises(ValueError, match=r"targets must have 12 rows \(one per row of inputs\), got shape \(11, 1\)"):
        simulate_epochs(model, bce, x, y[:11], batch_size=4, lr=0.1, n_runs=2)
    with pytest.raises(ValueError, match=r"lr must be >= 0.0, got -1.0"):
        sgd_epoch_shift(model, bce, x, y, batch_size=4, lr=-1.0)
    with pytest.raises(ValueError, match="inputs must have at least 2 rows"):
        gradient_noise_trace(model, bce, x[:1], y[:1])
    frozen = torch.nn.Linear(3, 1).double().requires_grad_(False)
    with pytest.raises(ValueError, match="model must have parameters that require grad, got none"):
        sgd_epoch_shift(frozen, bce, x, y, batch_size=4, lr=0.1)
    with pytest.raises(TypeError, match=r"inputs must have the dtype of model.weight \(torch.float64\), got torch.float32"):
        gradient_noise_trace(model, bce, x.float(), y)


def test_divergence_warns():
    model, x, y = logistic(n=8, seed=1)
    with torch.no_grad():
        model.weight.mul_(0)
    with pytest.warns(RuntimeWarning, match="non-finite parameters"):
        sim = simulate_epochs(model, half_mse, x * 1e100, y, batch_size=2, lr=1.0, n_runs=2)
    assert not sim.finite
