"""Gradient-noise diagnostics against an explicit per-sample loop, BackPACK 1.7.1, dense matrices and closed forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.gradient_noise import (critical_batch_size, fit_steps_examples, gradient_statistics,
                                                 hessian_weighted_noise_scale, per_sample_gradients,
                                                 simple_noise_scale, steps_examples_tradeoff, two_batch_noise_scale)

DT = torch.float64


def _mlp(d_in=3, hidden=5, d_out=2, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.Tanh(),
                               torch.nn.Linear(hidden, d_out)).to(DT)


def _data(n, d_in=3, d_out=2, seed=1, classes=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=DT)
    y = torch.randint(0, d_out, (n,), generator=g) if classes else torch.randn(n, d_out, generator=g, dtype=DT)
    return x, y


def _loop_gradients(model, loss_fn, x, y):
    rows = []
    params = [p for p in model.parameters() if p.requires_grad]
    for i in range(x.shape[0]):
        gs = torch.autograd.grad(loss_fn(model(x[i:i + 1]), y[i:i + 1]), params)
        rows.append(torch.cat([g.reshape(-1) for g in gs]))
    return torch.stack(rows)


def _backpack_run(model, loss_module, x, y, *extensions):
    from backpack import backpack, extend
    model, lossf = extend(model), extend(loss_module)
    model.zero_grad()
    loss = lossf(model(x), y)
    with backpack(*extensions):
        loss.backward()
    return list(model.parameters())


@pytest.mark.parametrize("classes", [False, True])
def test_per_sample_gradients_match_python_loop_and_chunks(classes):
    model = _mlp(d_out=3)
    x, y = _data(9, d_out=3, classes=classes)
    loss_fn = F.cross_entropy if classes else F.mse_loss
    res = per_sample_gradients(model, loss_fn, x, y)
    assert res.grads.shape == (9, sum(p.numel() for p in model.parameters()))
    torch.testing.assert_close(res.grads, _loop_gradients(model, loss_fn, x, y), rtol=0, atol=1e-10)
    torch.testing.assert_close(per_sample_gradients(model, loss_fn, x, y, chunk_size=4).grads, res.grads,
                               rtol=0, atol=1e-12)
    # The mean row is the gradient of the batch-mean loss.
    full = torch.autograd.grad(loss_fn(model(x), y), list(model.parameters()))
    torch.testing.assert_close(res.grads.mean(0), torch.cat([g.reshape(-1) for g in full]), rtol=0, atol=1e-12)
    parts = res.unflatten()
    assert list(parts) == [n for n, _ in model.named_parameters()]
    for name, p in model.named_parameters():
        assert parts[name].shape == (9, *p.shape)


def test_frozen_parameters_are_left_out():
    model = _mlp()
    model[0].weight.requires_grad_(False)
    x, y = _data(5)
    res = per_sample_gradients(model, F.mse_loss, x, y)
    assert res.names == ("0.bias", "2.weight", "2.bias")
    torch.testing.assert_close(res.grads, _loop_gradients(model, F.mse_loss, x, y), rtol=0, atol=1e-10)


@pytest.mark.parametrize("classes", [False, True])
def test_per_sample_gradients_match_backpack_batchgrad(classes):
    from backpack.extensions import BatchGrad
    model = _mlp(d_out=3)
    x, y = _data(8, d_out=3, classes=classes)
    loss_fn, loss_module = ((F.cross_entropy, torch.nn.CrossEntropyLoss(reduction="mean")) if classes
                            else (F.mse_loss, torch.nn.MSELoss(reduction="mean")))
    ours = per_sample_gradients(model, loss_fn, x, y).grads
    params = _backpack_run(model, loss_module, x, y, BatchGrad())
    # BackPACK's grad_batch is the gradient of each sample's term of the mean, i.e. g_i / N.
    theirs = torch.cat([p.grad_batch.reshape(8, -1) for p in params], dim=1) * 8
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)


def test_trace_and_snr_match_backpack_variance_and_sum_grad_squared():
    from backpack.extensions import SumGradSquared, Variance
    model = _mlp()
    n = 10
    x, y = _data(n)
    stats = gradient_statistics(model, F.mse_loss, x, y)
    params = _backpack_run(model, torch.nn.MSELoss(reduction="mean"), x, y, Variance(), SumGradSquared())
    grad = torch.cat([p.grad.reshape(-1) for p in params])
    # BackPACK's variance is the population variance of g_i / N; ours divides by N - 1.
    bp_var = torch.cat([p.variance.reshape(-1) for p in params]) * n * n * n / (n - 1)
    sum_sq = torch.cat([p.sum_grad_squared.reshape(-1) for p in params]) * n * n   # sum_i g_i^2
    from_sgs = (sum_sq - n * grad ** 2) / (n - 1)
    torch.testing.assert_close(stats.mean, grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(stats.variance, bp_var, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(stats.variance, from_sgs, rtol=1e-10, atol=1e-12)
    assert stats.trace == pytest.approx(float(bp_var.sum()), rel=1e-10)
    torch.testing.assert_close(stats.snr, grad ** 2 / bp_var, rtol=1e-10, atol=0)
    assert stats.snr_aggregate == pytest.approx(float(grad @ grad / bp_var.sum()), rel=1e-10)
    assert stats.b_simple == pytest.approx(stats.trace / (float(grad @ grad) - stats.trace / n), rel=1e-12)


@pytest.mark.parametrize("n", [6, 40])   # N < P (Gram matrix) and N > P (covariance)
def test_top_eigenvalues_against_dense_covariance(n):
    model = _mlp(d_in=2, hidden=3, d_out=1)   # P = 13
    x, y = _data(n, d_in=2, d_out=1)
    stats = gradient_statistics(model, F.mse_loss, x, y, top_k=4)
    g = _loop_gradients(model, F.mse_loss, x, y)
    dense = torch.linalg.eigvalsh(torch.cov(g.T)).flip(0)
    torch.testing.assert_close(stats.top_eigenvalues, dense[:4], rtol=1e-9, atol=1e-12)
    assert stats.trace == pytest.approx(float(torch.trace(torch.cov(g.T))), rel=1e-10)
    assert gradient_statistics(model, F.mse_loss, x, y, top_k=100).top_eigenvalues.shape == (min(n, 13),)
    assert gradient_statistics(model, F.mse_loss, x, y).top_eigenvalues.shape == (0,)


def test_zero_noise_conventions():
    # Identical samples: no noise, so B_simple = 0 and the SNR is infinite where the mean is not zero.
    model = _mlp()
    x, y = _data(1)
    stats = gradient_statistics(model, F.mse_loss, x.expand(4, -1), y.expand(4, -1))
    assert stats.trace == 0.0 and stats.b_simple == 0.0 and stats.snr_aggregate == math.inf
    assert bool(torch.isinf(stats.snr[stats.mean != 0]).all()) and bool((stats.snr[stats.mean == 0] == 0).all())


# -- the noise scale on linear regression, where G and Sigma are known --------------------------------------------
# x ~ N(0, I_d), y = x^T w* + eps, eps ~ N(0, s^2), per-example loss (x^T w - y)^2 / 2 at w = w* + delta:
# g = x x^T delta - eps x, so G = delta and Sigma = (|delta|^2 + s^2) I + delta delta^T (Gaussian fourth moments).
D, S_NOISE = 5, 0.5


def _regression_truth(delta):
    nd = float(delta @ delta)
    return nd, D * (nd + S_NOISE ** 2) + nd


def _batch_grads(delta, w_star, batch, reps, gen):
    x = torch.randn(reps, batch, D, generator=gen, dtype=DT)
    y = x @ w_star + S_NOISE * torch.randn(reps, batch, generator=gen, dtype=DT)
    w = w_star + delta
    return torch.einsum("rbd,rb->rd", x, x @ w - y) / batch


def test_two_batch_estimator_is_unbiased_on_linear_regression():
    gen = torch.Generator().manual_seed(0)
    w_star = torch.randn(D, generator=gen, dtype=DT)
    delta = torch.tensor([0.6, -0.3, 0.2, 0.0, 0.4], dtype=DT)
    norm_sq, trace = _regression_truth(delta)
    reps, b_small, b_big = 4000, 4, 32
    small = (_batch_grads(delta, w_star, b_small, reps, gen) ** 2).sum(1)
    big = (_batch_grads(delta, w_star, b_big, reps, gen) ** 2).sum(1)
    # Per-replicate estimates (each unbiased); their Monte Carlo means must sit within 4 standard errors.
    g_est = (b_big * big - b_small * small) / (b_big - b_small)
    s_est = (small - big) / (1 / b_small - 1 / b_big)
    for est, truth in ((g_est, norm_sq), (s_est, trace)):
        se = float(est.std() / math.sqrt(reps))
        assert abs(float(est.mean()) - truth) < 4 * se
    res = two_batch_noise_scale(small, big, b_small, b_big)
    assert res.grad_norm_sq == pytest.approx(float(g_est.mean()), rel=1e-12)
    assert res.trace == pytest.approx(float(s_est.mean()), rel=1e-12)
    assert res.b_simple == pytest.approx(trace / norm_sq, rel=0.1)
    # Control: the plain small-batch norm is biased upwards by tr(Sigma)/B, far beyond its standard error.
    assert float(small.mean()) - norm_sq > 10 * float(small.std() / math.sqrt(reps))


def test_gradient_statistics_recovers_the_regression_noise_scale():
    gen = torch.Generator().manual_seed(3)
    w_star = torch.randn(D, generator=gen, dtype=DT)
    delta = torch.tensor([0.6, -0.3, 0.2, 0.0, 0.4], dtype=DT)
    norm_sq, trace = _regression_truth(delta)
    n = 20000
    x = torch.randn(n, D, generator=gen, dtype=DT)
    y = (x @ w_star + S_NOISE * torch.randn(n, generator=gen, dtype=DT)).unsqueeze(1)
    model = torch.nn.Linear(D, 1, bias=False).to(DT)
    with torch.no_grad():
        model.weight.copy_((w_star + delta).unsqueeze(0))
    stats = gradient_statistics(model, lambda out, t: 0.5 * F.mse_loss(out, t), x, y)
    assert stats.grad_norm_sq == pytest.approx(norm_sq, rel=0.05)
    assert stats.trace == pytest.approx(trace, rel=0.05)
    assert stats.b_simple == pytest.approx(simple_noise_scale(trace, norm_sq), rel=0.1)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.01, 100.0), st.floats(0.0, 100.0), st.integers(1, 50), st.integers(1, 50))
def test_two_batch_estimator_inverts_the_expected_norms(norm_sq, trace, b_small, extra):
    b_big = b_small + extra
    res = two_batch_noise_scale(norm_sq + trace / b_small, norm_sq + trace / b_big, b_small, b_big)
    assert res.grad_norm_sq == pytest.approx(norm_sq, rel=1e-9, abs=1e-9)
    assert res.trace == pytest.approx(trace, rel=1e-9, abs=1e-7)


def test_tradeoff_helpers():
    ratio_s, ratio_e = steps_examples_tradeoff(torch.tensor([1.0, 8.0, 64.0, 512.0], dtype=DT), 64.0)
    torch.testing.assert_close((ratio_s - 1) * (ratio_e - 1), torch.ones(4, dtype=DT), rtol=1e-14, atol=0)
    assert steps_examples_tradeoff(64.0, 64.0) == (2.0, 2.0)
    assert critical_batch_size(100.0, 6400.0) == 64.0
    # Exact runs from S = S_min (1 + B_crit / B), E = B S recover S_min, E_min and B_crit.
    b = torch.tensor([2.0, 8.0, 32.0, 128.0, 512.0], dtype=DT)
    steps = 50.0 * (1 + 40.0 / b)
    fit = fit_steps_examples(steps, b * steps)
    assert fit.steps_min == pytest.approx(50.0, rel=1e-10) and fit.examples_min == pytest.approx(2000.0, rel=1e-10)
    assert fit.b_crit == pytest.approx(40.0, rel=1e-10) and fit.rms_residual < 1e-12


def _flat_hessian(model, loss_fn, x, y):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(flat):
        params = {n: c.reshape(s) for n, s, c in zip(names, shapes, torch.split(flat, sizes))}
        return loss_fn(torch.func.functional_call(model, params, (x,)), y)

    return torch.func.hessian(loss)(flat0)


def test_hessian_weighted_noise_scale_against_dense_matrices():
    model = _mlp(d_in=2, hidden=3, d_out=2)
    x, y = _data(7, d_in=2, d_out=2)
    res = hessian_weighted_noise_scale(model, F.mse_loss, x, y)
    H = _flat_hessian(model, F.mse_loss, x, y)
    g = _loop_gradients(model, F.mse_loss, x, y)
    sigma, mean = torch.cov(g.T), g.mean(0)
    tr_hs = float(torch.trace(H @ sigma))
    ghg = float(mean @ H @ mean) - tr_hs / 7
    assert res.trace_h_sigma == pytest.approx(tr_hs, rel=1e-9)
    assert res.g_h_g == pytest.approx(ghg, rel=1e-9)
    assert res.b_noise == pytest.approx(tr_hs / ghg, rel=1e-9)
    assert res.n_hvp == 7   # N - 1 = 6 directions of Sigma, one for the mean
    assert hessian_weighted_noise_scale(model, F.mse_loss, x, y, rank=2).n_hvp == 3


def test_hessian_weighted_equals_simple_for_isotropic_curvature():
    # A linear least-squares model with whitened inputs has H proportional to I: B_noise = B_simple.
    model = torch.nn.Linear(3, 1, bias=False).to(DT)
    q, _ = torch.linalg.qr(torch.randn(12, 3, generator=torch.Generator().manual_seed(0), dtype=DT))
    x = q * math.sqrt(12)
    y = torch.randn(12, 1, generator=torch.Generator().manual_seed(1), dtype=DT)
    res = hessian_weighted_noise_scale(model, F.mse_loss, x, y)
    assert res.b_noise == pytest.approx(res.b_simple, rel=1e-9)


def test_error_messages():
    model = _mlp()
    x, y = _data(4)
    with pytest.raises(ValueError, match=r"targets must have 4 rows \(one per row of inputs\), got shape \(3, 2\)"):
        per_sample_gradients(model, F.mse_loss, x, y[:3])
    with pytest.raises(ValueError, match=r"inputs must have at least 2 rows \(a covariance needs two samples\), "
                                         r"got 1"):
        gradient_statistics(model, F.mse_loss, x[:1], y[:1])
    with pytest.raises(ValueError, match=r"loss_fn must return a scalar tensor \(the mean loss of the batch\), "
                                         r"got shape \(1, 2\)"):
        per_sample_gradients(model, lambda o, t: (o - t) ** 2, x, y)
    with pytest.raises(TypeError, match=r"inputs must have the dtype of the model's parameters \(torch.float64\), "
                                        r"got torch.float32"):
        per_sample_gradients(model, F.mse_loss, x.float(), y)
    frozen = _mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="model must have parameters that require grad, got none"):
        per_sample_gradients(frozen, F.mse_loss, x, y)
    with pytest.raises(ValueError, match=r"chunk_size must be >= 1"):
        per_sample_gradients(model, F.mse_loss, x, y, chunk_size=0)
    with pytest.raises(ValueError, match=r"b_big must be > b_small \(8\), got 8"):
        two_batch_noise_scale(1.0, 0.5, 8, 8)
    with pytest.raises(ValueError, match=r"norm_sq_small must be >= 0"):
        two_batch_noise_scale(-1.0, 0.5, 2, 8)
    with pytest.raises(ValueError, match=r"steps must have at least 2 runs \(two unknowns\), got 1"):
        fit_steps_examples(torch.tensor([10.0], dtype=DT), torch.tensor([20.0], dtype=DT))
    with pytest.raises(ValueError, match=r"steps and examples must trace a tradeoff curve"):
        fit_steps_examples(torch.tensor([10.0, 20.0], dtype=DT), torch.tensor([10.0, 40.0], dtype=DT))
    with pytest.raises(ValueError, match=r"steps and examples must come from at least 2 different batch sizes"):
        fit_steps_examples(torch.tensor([10.0, 20.0], dtype=DT), torch.tensor([10.0, 20.0], dtype=DT))
    with pytest.raises(ValueError, match=r"batch_size must be > 0 entrywise, got a minimum of 0.0"):
        steps_examples_tradeoff(torch.tensor([0.0, 2.0], dtype=DT), 4.0)
    res = per_sample_gradients(model, F.mse_loss, x, y)
    with pytest.raises(ValueError, match=r"flat must have 32 columns \(the parameter count\), got shape \(4, 3\)"):
        res.unflatten(torch.zeros(4, 3, dtype=DT))
