"""Clipped-SGD bias harness: closed-form fixed points, the worst-case law, bounds, the simulator, errors."""

from __future__ import annotations

import math

import pytest
import torch

from paperzoo.optim import (clipped_fixed_point, clipping_bias_bounds, simulate_clipped_sgd,
                            worst_case_two_point_noise)


def test_fixed_point_closed_form_and_no_clipping_limit():
    v, p = torch.tensor([-1.0, 9.0], dtype=torch.float64), torch.tensor([0.9, 0.1], dtype=torch.float64)
    res = clipped_fixed_point(v, p, 1.0)
    assert res.converged
    assert res.x == pytest.approx(8 / 9, abs=1e-10)  # 0.9 (x - 1) + 0.1 * 1 = 0
    # A level above every |x + v| never clips: the fixed point is the optimum of the zero-mean problem.
    assert clipped_fixed_point(v, p, 100.0).x == pytest.approx(0.0, abs=1e-10)
    assert clipped_fixed_point(v, p, 1.0, curvature=2.0).grad_norm == pytest.approx(8 / 9, abs=1e-9)


@pytest.mark.parametrize("c", [0.5, 1.0, 3.0, 20.0])
def test_worst_case_law_attains_sigma2_over_4c_within_bounds(c):
    sigma = 1.0
    v, p = worst_case_two_point_noise(sigma, c)
    assert float((p * v).sum()) == pytest.approx(0.0, abs=1e-12)
    assert float((p * v * v).sum()) == pytest.approx(sigma**2)
    worst, upper = clipping_bias_bounds(sigma, c)
    got = clipped_fixed_point(v, p, c).grad_norm
    assert got == pytest.approx(worst, rel=1e-8)
    assert worst <= upper <= sigma**2 / (2 * c) + 1e-12
    # Any other zero-mean two-point law of the same variance gives at most the worst case.
    for q in (0.01, 0.1, 0.5):
        a = sigma * math.sqrt(q)
        other = clipped_fixed_point(torch.tensor([-a, a / q]), torch.tensor([1 / (1 + q), q / (1 + q)]), c)
        assert other.grad_norm <= worst + 1e-9


def test_simulator_small_step_reaches_fixed_point_and_unclipped_is_unbiased():
    v, p = worst_case_two_point_noise(1.0, 1.0)
    g = torch.Generator().manual_seed(0)

    def noise(n):
        u = torch.rand(n, 4, generator=g, dtype=torch.float64)
        return torch.where(u < p[1], v[1], v[0])

    res = simulate_clipped_sgd(torch.zeros(4, dtype=torch.float64), lr=0.05, clip=1.0, num_steps=20_000,
                               noise=noise)
    assert float(res.x_avg.mean()) == pytest.approx(0.25, rel=0.1)
    plain = simulate_clipped_sgd(torch.zeros(4, dtype=torch.float64), lr=0.05, clip=None, num_steps=20_000,
                                 noise=noise)
    assert abs(float(plain.x_avg.mean())) < 0.03
    det = simulate_clipped_sgd(torch.ones(1, dtype=torch.float64), lr=0.5, clip=torch.tensor([0.1],
                               dtype=torch.float64), num_steps=200, noise=lambda n: torch.zeros(n, 1))
    assert float(det.x.abs()) < 1e-12


def test_clipping_bias_errors():
    v, p = torch.tensor([-1.0, 1.0]), torch.tensor([0.5, 0.5])
    with pytest.raises(ValueError, match="c must be > 0.0, got 0.0"):
        clipped_fixed_point(v, p, 0.0)
    with pytest.raises(ValueError, match="probs must sum to 1, got 0.89999"):
        clipped_fixed_point(v, torch.tensor([0.5, 0.4]), 1.0)
    with pytest.raises(ValueError, match=r"probs must have k = 2 \(from values\) in its shape \(k,\)"):
        clipped_fixed_point(v, torch.tensor([1.0]), 1.0)
    with pytest.raises(ValueError, match="c must be >= 0.5, got 0.1"):
        worst_case_two_point_noise(1.0, 0.1)
    with pytest.raises(ValueError, match="lr must be > 0.0, got 0.0"):
        simulate_clipped_sgd(torch.zeros(2), lr=0.0, clip=1.0, num_steps=10, noise=lambda n: torch.zeros(n, 2))
    with pytest.raises(ValueError, match=r"noise\(n\) must return shape"):
        simulate_clipped_sgd(torch.zeros(2), lr=0.1, clip=1.0, num_steps=10, noise=lambda n: torch.zeros(n, 3))
    with pytest.raises(FloatingPointError, match="lower lr"):
        simulate_clipped_sgd(torch.ones(1, dtype=torch.float64), lr=1e308, clip=None, num_steps=10,
                             noise=lambda n: torch.full((n, 1), 1e308, dtype=torch.float64))
