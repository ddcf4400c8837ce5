"""Tests for paperzoo.diagnostics.quotient_frechet: brute-force registration, closed forms, Monte Carlo."""

import math
import warnings

import pytest
import torch
from hypothesis import given, settings, strategies as st

from paperzoo.diagnostics.quotient_frechet import (
    apply_group_action, consistency_bias, fixed_point_bias_constant, oracle_template_mean, quotient_distance,
    quotient_frechet_mean, register_to_template,
)

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _rot(theta, y):
    c, s = math.cos(theta), math.sin(theta)
    return y @ torch.tensor([[c, s], [-s, c]], dtype=y.dtype)


def test_cyclic_registration_matches_brute_force_over_all_shifts():
    g = _gen(0)
    m, Y = torch.randn(11, generator=g, dtype=F64), torch.randn(40, 11, generator=g, dtype=F64)
    shifts = register_to_template(m, Y)
    for i in range(Y.shape[0]):
        scores = torch.stack([m @ torch.roll(Y[i], k) for k in range(11)])
        assert int(shifts[i]) == int(scores.argmax())
    torch.testing.assert_close(apply_group_action(Y, shifts), torch.stack([torch.roll(Y[i], int(shifts[i]))
                                                                     for i in range(40)]), rtol=0, atol=0)


def test_so2_registration_beats_a_fine_angle_grid_and_matches_explicit_rotation():
    g = _gen(1)
    m, Y = torch.randn(5, 2, generator=g, dtype=F64), torch.randn(7, 5, 2, generator=g, dtype=F64)
    theta = register_to_template(m, Y, "SO2")
    aligned = apply_group_action(Y, theta, "SO2")
    grid = torch.linspace(0, 2 * math.pi, 20001, dtype=F64)
    for i in range(7):
        torch.testing.assert_close(aligned[i], _rot(float(theta[i]), Y[i]), rtol=1e-12, atol=1e-12)
        best = min(float((m - _rot(float(t), Y[i])).norm()) for t in grid[::50])
        assert float((m - aligned[i]).norm()) <= best + 1e-12


def test_quotient_distance_is_invariant_and_symmetric():
    g = _gen(2)
    a, b = torch.randn(9, generator=g, dtype=F64), torch.randn(9, generator=g, dtype=F64)
    d = quotient_distance(a, b)
    torch.testing.assert_close(quotient_distance(a, torch.roll(b, 4)), d, rtol=1e-12, atol=0)
    torch.testing.assert_close(quotient_distance(b, a), d, rtol=1e-12, atol=0)
    assert float(d) <= float((a - b).norm())
    p, q = torch.randn(4, 2, generator=g, dtype=F64), torch.randn(4, 2, generator=g, dtype=F64)
    torch.testing.assert_close(quotient_distance(p, _rot(0.7, q), "SO2"), quotient_distance(p, q, "SO2"),
                               rtol=1e-10, atol=1e-12)


@given(seed=st.integers(0, 10_000), n=st.integers(2, 30), d=st.integers(2, 12))
@settings(max_examples=15, deadline=None)
def test_maxmax_never_raises_the_quotient_variance(seed, n, d):
    Y = torch.randn(n, d, generator=_gen(seed), dtype=F64)
    r = quotient_frechet_mean(Y, n_iter=500)
    start = ((Y[0][None] - apply_group_action(Y, register_to_template(Y[0], Y))) ** 2).sum(dim=1).mean()
    assert float(r.variance) <= float(start) + 1e-12
    # the fixed point is the mean of the observations registered onto it (an empirical Karcher mean)
    torch.testing.assert_close(r.template, apply_group_action(Y, register_to_template(r.template, Y)).mean(dim=0), rtol=1e-7,
                               atol=1e-9)


def test_noise_free_data_recover_the_template_orbit_and_oracle_is_exact():
    t0 = torch.tensor([3.0, 1.0, 0.0, 0.0, 2.0, 0.0], dtype=F64)
    g = torch.tensor([0, 1, 5, 2, 3])
    Y = apply_group_action(t0.expand(5, 6).clone(), g)
    torch.testing.assert_close(oracle_template_mean(Y, g), t0, rtol=0, atol=0)
    assert float(quotient_distance(quotient_frechet_mean(Y).template, t0)) < 1e-12
    assert float(consistency_bias(t0, 0.0, 50, generator=_gen(0)).quotient_bias) < 1e-12


def test_bias_constant_closed_forms():
    assert fixed_point_bias_constant("SO2", 4) == pytest.approx(math.sqrt(math.pi / 2), abs=1e-15)
    assert fixed_point_bias_constant("cyclic_shift", 2) == pytest.approx(math.sqrt(2 / math.pi), abs=1e-9)
    # E max of 3 normals = 3 / (2 sqrt(pi))
    assert fixed_point_bias_constant("cyclic_shift", 3) == pytest.approx(math.sqrt(1.5) * 1.5 / math.sqrt(math.pi),
                                                                          abs=1e-9)
    from scipy import integrate, stats

    d = 16
    emax = integrate.quad(lambda z: z * d * stats.norm.cdf(z) ** (d - 1) * stats.norm.pdf(z), -12, 12)[0]
    assert fixed_point_bias_constant("cyclic_shift", d) == pytest.approx(math.sqrt(d / (d - 1)) * emax, abs=1e-8)


def test_simplex_direction_attains_the_cyclic_constant_by_monte_carlo():
    d, N = 8, 200_000
    v = torch.zeros(d, dtype=F64)
    v[0] = 1.0
    v = v - 1.0 / d
    v = v / v.norm()
    eps = torch.randn(N, d, generator=_gen(3), dtype=F64)
    vals = torch.stack([torch.roll(eps, k, dims=1) @ v for k in range(d)], dim=1).max(dim=1).values
    se = float(vals.std()) / math.sqrt(N)
    assert abs(float(vals.mean()) - fixed_point_bias_constant("cyclic_shift", d)) < 4 * se


@pytest.mark.parametrize("group,shape", [("cyclic_shift", (8,)), ("SO2", (3, 2))])
def test_fixed_point_estimate_has_norm_sigma_K_and_oracle_is_consistent(group, shape):
    t0 = torch.zeros(shape, dtype=F64)
    K = fixed_point_bias_constant(group, 8)
    # finite-n Karcher means overshoot K slightly (about +2% at n = 6000 for these sizes), hence the 4% band
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # SO(2) at t0 = 0 converges slowly (flat direction)
        r = consistency_bias(t0, 2.0, 6000, group, generator=_gen(4), n_iter=150)
    assert float(r.template.norm()) / (2.0 * K) == pytest.approx(1.0, abs=0.04)
    assert float(r.oracle_bias) < 0.05 * float(r.quotient_bias)


def test_float32_runs_and_matches_float64_registration():
    g = _gen(5)
    Y = torch.randn(30, 10, generator=g, dtype=F64)
    m = torch.randn(10, generator=g, dtype=F64)
    assert torch.equal(register_to_template(m.float(), Y.float()), register_to_template(m, Y))
    assert quotient_frechet_mean(Y.float()).template.dtype == torch.float32


def test_non_convergence_warns():
    Y = torch.randn(200, 16, generator=_gen(6), dtype=F64)
    with pytest.warns(RuntimeWarning, match="did not converge in 1 iterations"):
        r = quotient_frechet_mean(Y, n_iter=1)
    assert not r.converged and r.n_iter == 1


def test_error_messages():
    Y = torch.randn(4, 5, dtype=F64)
    with pytest.raises(ValueError, match=r"Y must have shape \(n, k, 2\) for group 'SO2', got \(4, 5\)"):
        quotient_frechet_mean(Y, "SO2")
    with pytest.raises(ValueError, match="group must be one of"):
        quotient_frechet_mean(Y, "affine")
    with pytest.raises(ValueError, match=r"init must have the shape of one observation \(5,\), got \(4,\)"):
        quotient_frechet_mean(Y, init=torch.zeros(4, dtype=F64))
    with pytest.raises(ValueError, match=r"b must have the shape of a \(5,\), got \(6,\)"):
        quotient_distance(torch.zeros(5, dtype=F64), torch.zeros(6, dtype=F64))
    with pytest.raises(TypeError, match="transforms must be an integer tensor of shifts"):
        apply_group_action(Y, torch.zeros(4, dtype=F64))
    with pytest.raises(ValueError, match=r"transforms must have shape \(4,\), got \(3,\)"):
        apply_group_action(Y, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        consistency_bias(torch.zeros(5, dtype=F64), -1.0, 10)
