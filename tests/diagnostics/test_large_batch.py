"""Large-batch measurements against closed forms (linear/logistic regression), hand-computed EMAs, with-replacement
Monte Carlo and a quadratic with a known step count."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.large_batch import (NoiseScaleTracker, batch_gradient_norms, dataset_noise_scale,
                                              steps_to_target)

DT = torch.float64


def _linear(d, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(d, 1).to(DT)
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=DT))
        model.bias.copy_(torch.randn(1, generator=g, dtype=DT))
    return model


def _closed_form_grads(model, x, y, kind):
    """Per-sample gradients in closed form: residual r_i times [x_i, 1] (weight first, then bias)."""
    z = x @ model.weight.detach().reshape(-1) + model.bias.detach()
    r = 2.0 * (z - y.reshape(-1)) if kind == "mse" else torch.sigmoid(z) - y.reshape(-1)
    return torch.cat([r.unsqueeze(1) * x, r.unsqueeze(1)], dim=1)


def _regression(n, d, seed=1, kind="mse"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=DT)
    if kind == "mse":
        y = torch.randn(n, 1, generator=g, dtype=DT)
    else:
        y = (torch.rand(n, 1, generator=g) < 0.5).to(DT)
    return x, y


LOSSES = {"mse": F.mse_loss, "bce": F.binary_cross_entropy_with_logits}


# -- dataset_noise_scale ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["mse", "bce"])
def test_dataset_noise_scale_closed_form(kind):
    model = _linear(4)
    x, y = _regression(37, 4, kind=kind)
    g = _closed_form_grads(model, x, y, kind)
    mean = g.mean(0)
    sigma = (g - mean).T @ (g - mean) / g.shape[0]  # divisor N: the population is the training set
    res = dataset_noise_scale(model, LOSSES[kind], x, y)
    assert res.grad_norm_sq == pytest.approx(float(mean @ mean), rel=1e-12)
    assert res.trace == pytest.approx(float(torch.trace(sigma)), rel=1e-12)
    assert res.b_simple == pytest.approx(float(torch.trace(sigma) / (mean @ mean)), rel=1e-12)


def test_dataset_noise_scale_predicts_with_replacement_monte_carlo():
    """E|G_B|^2 = |G|^2 + tr(Sigma)/B for batches drawn uniformly with replacement, checked within 4 SE."""
    model = _linear(3)
    x, y = _regression(20, 3)
    exact = dataset_noise_scale(model, F.mse_loss, x, y)
    g = _closed_form_grads(model, x, y, "mse")
    gen = torch.Generator().manual_seed(5)
    for b in (1, 4, 16):
        idx = torch.randint(20, (20_000, b), generator=gen)
        gb = g[idx].mean(1)
        sq = (gb * gb).sum(1)
        se = float(sq.std() / math.sqrt(sq.shape[0]))
        assert abs(float(sq.mean()) - (exact.grad_norm_sq + exact.trace / b)) < 4 * se


def test_dataset_noise_scale_degenerate_cases():
    model = torch.nn.Linear(1, 1, bias=False).to(DT)
    with torch.no_grad():
        model.weight.fill_(0.0)
    x = torch.ones(3, 1, dtype=DT)
    same = dataset_noise_scale(model, F.mse_loss, x, 2 * x)  # identical rows: no noise
    assert same.trace == 0.0 and same.b_simple == 0.0
    y = torch.tensor([[1.0], [-1.0]], dtype=DT)  # gradients +2 and -2: G = 0
    zero = dataset_noise_scale(model, F.mse_loss, torch.ones(2, 1, dtype=DT), y)
    assert zero.grad_norm_sq == 0.0 and zero.b_simple == math.inf


# -- batch_gradient_norms ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["mse", "bce"])
def test_batch_gradient_norms_against_chunk_closed_form(kind):
    model = _linear(3)
    x, y = _regression(24, 3, kind=kind)
    g = _closed_form_grads(model, x, y, kind)
    res = batch_gradient_norms(model, LOSSES[kind], x, y, 6)
    chunks = g.reshape(4, 6, -1).mean(1)
    assert res.norm_sq_small == pytest.approx(float((chunks * chunks).sum(1).mean()), rel=1e-12)
    big = g.mean(0)
    assert res.norm_sq_big == pytest.approx(float(big @ big), rel=1e-12)
    assert (res.b_small, res.b_big) == (6, 24)


def test_batch_gradient_norms_expectation_matches_noise_model():
    """Averaged over with-replacement batches, both norms follow |G|^2 + tr(Sigma)/B (within 4 SE)."""
    model = _linear(2)
    x, y = _regression(16, 2)
    exact = dataset_noise_scale(model, F.mse_loss, x, y)
    gen = torch.Generator().manual_seed(3)
    small, big = [], []
    for _ in range(400):
        idx = torch.randint(16, (8,), generator=gen)
        res = batch_gradient_norms(model, F.mse_loss, x[idx], y[idx], 2)
        small.append(res.norm_sq_small)
        big.append(res.norm_sq_big)
    for vals, b in ((torch.tensor(small), 2), (torch.tensor(big), 8)):
        se = float(vals.std() / math.sqrt(len(vals)))
        assert abs(float(vals.mean()) - (exact.grad_norm_sq + exact.trace / b)) < 4 * se


def test_batch_gradient_norms_errors():
    model = _linear(2)
    x, y = _regression(10, 2)
    with pytest.raises(ValueError, match="b_small must divide the batch size 10 into at least 2 chunks, got 3"):
        batch_gradient_norms(model, F.mse_loss, x, y, 3)
    with pytest.raises(ValueError, match="b_small must divide the batch size 10 into at least 2 chunks, got 10"):
        batch_gradient_norms(model, F.mse_loss, x, y, 10)
    with pytest.raises(ValueError, match="targets must have 10 rows"):
        batch_gradient_norms(model, F.mse_loss, x, y[:5], 5)


# -- NoiseScaleTracker -----------------------------------------------------------------------------------------

def test_tracker_ema_matches_hand_computation():
    b_s, b_b, beta = 4, 32, 0.7
    meas = [(3.0, 1.2), (2.5, 1.1), (4.0, 0.9), (2.0, 1.5)]
    tracker = NoiseScaleTracker(b_s, b_b, beta=beta)
    m_g = m_s = 0.0
    for t, (small, big) in enumerate(meas, start=1):
        g2 = (b_b * big - b_s * small) / (b_b - b_s)
        s = (small - big) / (1 / b_s - 1 / b_b)
        m_g = beta * m_g + (1 - beta) * g2
        m_s = beta * m_s + (1 - beta) * s
        est = tracker.update(small, big)
        corr = 1 - beta ** t
        assert est.grad_norm_sq == pytest.approx(m_g / corr, rel=1e-12)
        assert est.trace == pytest.approx(m_s / corr, rel=1e-12)
        assert est.b_simple == pytest.approx(m_s / m_g, rel=1e-12)  # ratio of averages; correction cancels
    assert tracker.n_updates == 4
    assert repr(tracker) == "NoiseScaleTracker(b_small=4, b_big=32, beta=0.7, n_updates=4)"


def test_tracker_beta_zero_keeps_latest_and_tensor_measurements_are_averaged():
    tracker = NoiseScaleTracker(2, 8, beta=0.0)
    tracker.update(5.0, 2.0)
    est = tracker.update(3.0, 1.5)  # |G|^2 = (12 - 6) / 6 = 1, S = 1.5 / (3/8) = 4
    assert est.grad_norm_sq == pytest.approx(1.0) and est.trace == pytest.approx(4.0)
    est = tracker.update(torch.tensor([2.0, 4.0], dtype=DT), torch.tensor([1.0, 2.0], dtype=DT))
    assert est.grad_norm_sq == pytest.approx(1.0) and est.trace == pytest.approx(4.0)


def test_tracker_converges_to_exact_noise_scale():
    model = _linear(3)
    x, y = _regression(64, 3)
    exact = dataset_noise_scale(model, F.mse_loss, x, y)
    gen = torch.Generator().manual_seed(11)
    tracker = NoiseScaleTracker(2, 32, beta=0.995)
    for _ in range(600):
        idx = torch.randint(64, (32,), generator=gen)
        res = batch_gradient_norms(model, F.mse_loss, x[idx], y[idx], 2)
        tracker.update(res.norm_sq_small, res.norm_sq_big)
    assert tracker.b_simple == pytest.approx(exact.b_simple, rel=0.15)


@settings(max_examples=40, deadline=None)
@given(norm_sq=st.floats(1e-3, 1e3), trace=st.floats(0.0, 1e4), b_small=st.integers(1, 64),
       factor=st.integers(2, 64), beta=st.floats(0.0, 0.999))
def test_tracker_recovers_parts_from_exact_expectations(norm_sq, trace, b_small, factor, beta):
    """Fed E|G_B|^2 = |G|^2 + tr/B at both sizes, every read returns |G|^2, tr and their ratio."""
    b_big = b_small * factor
    tracker = NoiseScaleTracker(b_small, b_big, beta=beta)
    for _ in range(3):
        est = tracker.update(norm_sq + trace / b_small, norm_sq + trace / b_big)
    assert est.grad_norm_sq == pytest.approx(norm_sq, rel=1e-6, abs=1e-9 * (1 + trace))
    assert est.trace == pytest.approx(trace, rel=1e-6, abs=1e-9 * (1 + norm_sq) * b_big)
    assert est.b_simple == pytest.approx(trace / norm_sq, rel=1e-5, abs=1e-6 * b_big)


def test_tracker_errors():
    with pytest.raises(ValueError, match=r"b_big must be > b_small \(8\), got 8"):
        NoiseScaleTracker(8, 8)
    tracker = NoiseScaleTracker(2, 8, beta=0.5)
    with pytest.raises(ValueError, match=r"the tracker has no measurements yet: call update\(\) first"):
        tracker.b_simple
    with pytest.raises(ValueError, match="norm_sq_small must be a number or a non-empty 1-D tensor"):
        tracker.update(torch.ones(2, 2, dtype=DT), 1.0)
    with pytest.raises(ValueError, match="norm_sq_big must be finite and >= 0 entrywise"):
        tracker.update(1.0, torch.tensor([-1.0], dtype=DT))
    with pytest.raises(ValueError, match="norm_sq_small"):
        tracker.update(-1.0, 1.0)
    with pytest.raises((TypeError, ValueError), match="beta"):
        NoiseScaleTracker(2, 8, beta=1.0)
    assert tracker.n_updates == 0


# -- steps_to_target --------------------------------------------------------------------------------------------

def _quadratic():
    """L(w) = (w - 1)^2 on identical rows: every batch gives the full gradient, w_t - 1 = -(1 - 2 lr)^t."""
    model = torch.nn.Linear(1, 1, bias=False).to(DT)
    with torch.no_grad():
        model.weight.fill_(0.0)
    x = torch.ones(6, 1, dtype=DT)
    return model, x, x.clone()


def _closed_form_steps(lr, target):
    # loss (1 - 2 lr)^(2t) <= target  <=>  t >= log(target) / (2 log|1 - 2 lr|)
    return math.ceil(math.log(target) / (2 * math.log(abs(1 - 2 * lr))) - 1e-12)


def test_steps_to_target_quadratic_known_step_count():
    model, x, y = _quadratic()
    lrs = torch.tensor([0.02, 0.05, 0.1, 0.2], dtype=DT)
    target = 1e-4
    res = steps_to_target(model, F.mse_loss, x, y, batch_size=3, lrs=lrs, target=target, max_steps=1000)
    expected = min(_closed_form_steps(float(lr), target) for lr in lrs)
    assert res.reached and res.steps == expected == _closed_form_steps(0.2, target)
    assert res.examples == 3 * expected and res.lr == 0.2 and res.lr_index == 3
    assert float(res.params["weight"]) == pytest.approx(1 - (1 - 0.4) ** expected, rel=1e-12)
    w = 1 - (1 - 2 * lrs) ** expected
    torch.testing.assert_close(res.losses, (w - 1) ** 2, rtol=1e-12, atol=0)
    assert float(model.weight.detach()) == 0.0  # the model is not modified


def test_steps_to_target_single_lr_and_divergence_never_counts():
    model, x, y = _quadratic()
    for lr in (0.03, 0.3):
        res = steps_to_target(model, F.mse_loss, x, y, batch_size=2, lrs=torch.tensor([lr], dtype=DT),
                              target=1e-3, max_steps=500)
        assert res.steps == _closed_form_steps(lr, 1e-3)
    # lr 1.5: |1 - 2 lr| = 2, the loss grows; only the small lr reaches the target
    res = steps_to_target(model, F.mse_loss, x, y, batch_size=2, lrs=torch.tensor([0.05, 1.5], dtype=DT),
                          target=1e-2, max_steps=500)
    assert res.lr_index == 0 and res.steps == _closed_form_steps(0.05, 1e-2)


def test_steps_to_target_not_reached():
    model, x, y = _quadratic()
    res = steps_to_target(model, F.mse_loss, x, y, batch_size=2, lrs=torch.tensor([0.001, 0.002], dtype=DT),
                          target=1e-6, max_steps=7)
    assert not res.reached and res.steps == 7 and res.examples == 14 and res.lr_index == 1
    assert float(res.losses[1]) == pytest.approx((1 - 0.004) ** 14, rel=1e-12)


def test_steps_to_target_errors():
    model, x, y = _quadratic()
    lrs = torch.tensor([0.1], dtype=DT)
    with pytest.raises(ValueError, match="target must be below the initial training loss 1.0, got 1.0"):
        steps_to_target(model, F.mse_loss, x, y, batch_size=2, lrs=lrs, target=1.0, max_steps=5)
    with pytest.raises(ValueError, match="target must be finite"):
        steps_to_target(model, F.mse_loss, x, y, batch_size=2, lrs=lrs, target=math.nan, max_steps=5)
    with pytest.raises((TypeError, ValueError), match="batch_size"):
        steps_to_target(model, F.mse_loss, x, y, batch_size=0, lrs=lrs, target=0.1, max_steps=5)
    with pytest.raises((TypeError, ValueError), match="lrs"):
        steps_to_target(model, F.mse_loss, x, y, batch_size=2, lrs=-lrs, target=0.1, max_steps=5)
