"""Tests for paperzoo.diagnostics.sgd_noise_regimes: exact event-driven SGD and GD on the hinge perceptron."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.sgd_noise_regimes import (crossover_temperature, sample_boundary_density_data,
                                                    train_hinge_perceptron_gd, train_hinge_perceptron_sgd)


def _data(P, d, seed, chi=1.0):
    return sample_boundary_density_data(P, d, chi, generator=torch.Generator().manual_seed(seed))


def _plain_sgd(x, y, lr, runs, seed, margin=1.0, max_steps=200_000):
    """Plain batch-1 SGD with replacement, every step simulated (vectorised over runs): the independent route."""
    g = torch.Generator().manual_seed(seed)
    P, d = x.shape
    z = y[:, None] * x / math.sqrt(d)
    w = torch.zeros(runs, d, dtype=x.dtype)
    last = torch.zeros(runs, dtype=x.dtype)
    for t in range(1, max_steps + 1):
        j = torch.randint(0, P, (runs,), generator=g)
        unfit = (w * z[j]).sum(1) < margin
        w += lr * unfit.to(x.dtype)[:, None] * z[j]
        last = torch.where(unfit, torch.full_like(last, t), last)
        if t % 50 == 0 and bool(((w @ z.T) >= margin).all()):
            break
    return w, last


def _plain_gd(x, y, lr, margin=1.0):
    """Full-batch GD with an explicit Python loop over the points (the independent route)."""
    P, d = x.shape
    w = np.zeros(d)
    X, Y = x.numpy(), y.numpy()
    steps = 0
    while True:
        g = np.zeros(d)
        any_unfit = False
        for i in range(P):
            if Y[i] * X[i] @ w / math.sqrt(d) < margin:
                g += Y[i] * X[i] / math.sqrt(d)
                any_unfit = True
        if not any_unfit:
            return w, steps
        w = w + lr / P * g
        steps += 1


def test_sampler_moments_and_labels():
    x, y = _data(200_000, 3, 0, chi=2.0)
    assert bool((torch.sign(x[:, 0]) == y).all())
    # E[x_1^2] = chi + 1 for density ~ |x|^chi exp(-x^2/2); other coordinates standard normal.
    assert float((x[:, 0] ** 2).mean()) == pytest.approx(3.0, rel=0.01)
    assert float((x[:, 1] ** 2).mean()) == pytest.approx(1.0, rel=0.01)
    # |x_1|^2 / 2 ~ Gamma((chi+1)/2): KS test against scipy.
    assert scipy.stats.kstest((x[:20000, 0] ** 2 / 2).numpy(), scipy.stats.gamma(1.5).cdf).pvalue > 1e-3


def test_gd_matches_explicit_loop():
    x, y = _data(12, 3, 1)
    r = train_hinge_perceptron_gd(x, y, torch.tensor([0.7, 5.0], dtype=x.dtype))
    for k, lr in enumerate([0.7, 5.0]):
        w, steps = _plain_gd(x, y, lr)
        np.testing.assert_allclose(r.weights[k].numpy(), w, rtol=1e-12, atol=1e-12)
        assert r.steps[k].item() == steps
    assert bool(r.converged.all())


def test_single_point_closed_form():
    # P = 1: every step adds lr * z, so the run stops after ceil(margin / (lr |z|^2)) steps.
    x = torch.tensor([[0.5, 2.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([1.0], dtype=torch.float64)
    zz = float((x**2).sum() / 3)
    lrs = torch.tensor([0.05, 0.3], dtype=torch.float64)
    expect = [math.ceil(1.0 / (lr * zz)) for lr in lrs.tolist()]
    for r in (train_hinge_perceptron_sgd(x, y, lrs, generator=torch.Generator().manual_seed(0)),
              train_hinge_perceptron_gd(x, y, lrs)):
        assert r.steps.tolist() == expect
        np.testing.assert_allclose(r.weights, (lrs * torch.tensor(expect))[:, None] * x / math.sqrt(3), rtol=1e-12)


def test_event_driven_sgd_has_plain_sgd_law():
    x, y = _data(6, 2, 3)
    lr, runs = 0.4, 3000
    w_plain, steps_plain = _plain_sgd(x, y, lr, runs, 0)
    ev = train_hinge_perceptron_sgd(x, y, torch.full((runs,), lr, dtype=x.dtype),
                                    generator=torch.Generator().manual_seed(1))
    assert bool(ev.converged.all())
    for a, b in [(w_plain.norm(dim=1), ev.weights.norm(dim=1)), (steps_plain, ev.steps)]:
        a, b = a.numpy(), b.numpy()
        se = math.sqrt(a.var() / runs + b.var() / runs)
        assert abs(a.mean() - b.mean()) < 4 * se
        assert scipy.stats.ks_2samp(a, b).pvalue > 1e-3


def test_sgd_fits_all_points_and_last_update_was_needed():
    x, y = _data(40, 4, 5)
    lrs = torch.tensor([0.05, 0.5, 3.0], dtype=x.dtype)
    r = train_hinge_perceptron_sgd(x, y, lrs, generator=torch.Generator().manual_seed(0))
    z = y[:, None] * x / 2.0
    assert bool(((r.weights @ z.T) >= 1.0 - 1e-12).all())
    assert bool((r.steps >= r.updates).all()) and bool((r.train_time == lrs * r.steps).all())


def test_zero_lr_run_warns_and_stays_at_zero():
    x, y = _data(5, 2, 0)
    with pytest.warns(RuntimeWarning, match="did not fit all points"):
        r = train_hinge_perceptron_sgd(x, y, torch.tensor([0.0, 1.0], dtype=x.dtype))
    assert r.converged.tolist() == [False, True] and r.weights[0].abs().sum().item() == 0.0


def test_crossover_temperature_interpolates_in_log_t():
    T = torch.tensor([0.1, 1.0, 10.0, 100.0], dtype=torch.float64)
    assert crossover_temperature(T, torch.tensor([1.0, 1.05, 1.15, 2.0], dtype=T.dtype), 1.0) == pytest.approx(10**0.5, rel=1e-12)
    # departure downwards counts too; relative to the reference
    assert crossover_temperature(T, torch.tensor([2.0, 2.0, 1.6, 1.0], dtype=T.dtype), 2.0, rel=0.2) == pytest.approx(10.0)
    assert math.isnan(crossover_temperature(T, torch.tensor([1.0, 1.0, 1.05, 1.09], dtype=T.dtype), 1.0))
    assert math.isnan(crossover_temperature(T, torch.tensor([1.5, 1.6, 1.7, 1.8], dtype=T.dtype), 1.0))


@settings(max_examples=30, deadline=None)
@given(st.floats(-3, 2), st.floats(0.2, 3.0))
def test_crossover_temperature_recovers_a_planted_crossing(log_tc, slope):
    T = torch.logspace(-4, 3, 29, dtype=torch.float64)
    obs = 1.0 + 0.1 * torch.exp(slope * (T.log() - math.log(10**log_tc)))  # dev = 0.1 exactly at T = 10**log_tc
    tc = crossover_temperature(T, obs, 1.0, rel=0.1)
    # log-linear interpolation of an exponential-in-log-T deviation: within one grid cell of the truth
    assert abs(math.log10(tc) - log_tc) < 0.25


def test_errors_are_pinned():
    x, y = _data(4, 2, 0)
    with pytest.raises(ValueError, match="targets must hold only -1 and \\+1"):
        train_hinge_perceptron_sgd(x, y * 2, torch.tensor([1.0], dtype=x.dtype))
    with pytest.raises(ValueError, match="targets must hold only -1 and \\+1"):
        train_hinge_perceptron_gd(x, torch.zeros(4, dtype=x.dtype), torch.tensor([1.0], dtype=x.dtype))
    with pytest.raises(ValueError, match="margin"):
        train_hinge_perceptron_gd(x, y, torch.tensor([1.0], dtype=x.dtype), margin=0.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        crossover_temperature(torch.tensor([1.0, 0.5]), torch.tensor([1.0, 2.0]), 1.0)
    with pytest.raises(ValueError, match="temperatures must be > 0"):
        crossover_temperature(torch.tensor([0.0, 0.5]), torch.tensor([1.0, 2.0]), 1.0)
    with pytest.raises(ValueError, match="reference must be finite and nonzero"):
        crossover_temperature(torch.tensor([0.1, 0.5]), torch.tensor([1.0, 2.0]), 0.0)
