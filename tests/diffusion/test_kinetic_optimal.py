"""Tests for paperzoo.diffusion.kinetic_optimal: closed forms of the kinetic energy of Gaussian paths."""

import math

import pytest
import torch

from paperzoo.diffusion.kinetic_optimal import (GaussianPath, cond_ot_path, cosine_path, data_separation_function,
                                                gaussian_eps_mmse, gaussian_path_kinetic_energy,
                                                kinetic_energy_from_separation, kinetic_optimal_path,
                                                path_to_ve_sigmas, piecewise_linear_path, tabulate_eps_mmse)
from paperzoo.diffusion.mixture import GaussianMixture
from paperzoo.diffusion.samplers import sample_euler

F64 = torch.float64


def _gaussian(mu, lam):
    mu, lam = torch.tensor(mu, dtype=F64), torch.tensor(lam, dtype=F64)
    return GaussianMixture(mu[None], torch.diag(lam)[None]), mu, lam


def _point(x):
    x = torch.tensor(x, dtype=F64)
    return GaussianMixture(x[None], 1e-10 * torch.eye(x.shape[0], dtype=F64)[None])


def _direct_gaussian_energy(path, mu, lam, n=200_001):
    """Per eigen-direction the marginal is N(alpha mu_i, sigma^2 + alpha^2 lam_i), moved by a linear field."""
    t = torch.linspace(0, 1, n, dtype=F64)[1:-1]
    a, s, da, ds = path.rates(t)
    v = s**2 + a**2 * lam[:, None]
    return float((((s * ds + a * da * lam[:, None]) ** 2 / v).sum(0) + da**2 * mu.square().sum()).mean())


@pytest.mark.parametrize("path,factor", [(cond_ot_path(), 1.0), (cosine_path(), math.pi**2 / 8)])
def test_single_point_energy_closed_form(path, factor):
    """A point mass: KE = (d + ||x1||^2) for Cond-OT (= E||x1 - x0||^2) and pi^2/8 times that for the cosine path."""
    x1 = [3.0, -1.0, 0.5]
    expected = factor * (3 + sum(v * v for v in x1))
    ke = gaussian_path_kinetic_energy(path, _point(x1), n=20_000, generator=torch.Generator().manual_seed(0))
    assert abs(ke.energy - expected) < 4 * ke.stderr + 1e-3
    sep = kinetic_energy_from_separation(path, lambda tau: torch.zeros_like(tau), 3, sum(v * v for v in x1))
    assert sep == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("path", [cond_ot_path(), cosine_path()])
def test_gaussian_data_separation_form_matches_direct_form(path):
    gm, mu, lam = _gaussian([1.0, -0.5], [0.3, 2.0])
    m = float(lam.sum() + mu.square().sum())
    direct = _direct_gaussian_energy(path, mu, lam)
    assert kinetic_energy_from_separation(path, gaussian_eps_mmse(lam), 2, m) == pytest.approx(direct, rel=1e-5)
    ke = gaussian_path_kinetic_energy(path, gm, n=40_000, generator=torch.Generator().manual_seed(1))
    assert abs(ke.energy - direct) < 4 * ke.stderr


def test_tabulated_mmse_matches_gaussian_closed_form():
    gm, mu, lam = _gaussian([0.0, 1.0], [0.5, 1.5])
    tab = tabulate_eps_mmse(gm, n=20_000, n_levels=24, generator=torch.Generator().manual_seed(2))
    exact = gaussian_eps_mmse(lam)(tab.levels)
    assert torch.allclose(tab.values, exact, atol=0.03 * 2)


def test_data_separation_function_limits():
    gm, mu, lam = _gaussian([1.0, 0.0], [1.0, 1.0])
    m = float(lam.sum() + mu.square().sum())
    s = torch.tensor([0.0, 1.0, 100.0], dtype=F64)
    got = data_separation_function(gm, s, n=20_000, generator=torch.Generator().manual_seed(3))
    exact = 1 - torch.tensor([2.0, 2 * 1 / (1 + 1), 2 / (1 + 1e4)], dtype=F64) / m  # 1 - mmse/m
    assert torch.allclose(got, exact, atol=0.03)
    far = GaussianMixture(torch.tensor([[50.0, 0.0], [-50.0, 0.0]], dtype=F64), 1e-6 * torch.eye(2, dtype=F64).expand(2, 2, 2).clone())
    assert float(data_separation_function(far, torch.tensor([1.0], dtype=F64), n=256)[0]) == pytest.approx(1.0, abs=1e-6)


def test_optimal_path_for_a_point_is_cond_ot():
    res = kinetic_optimal_path(lambda tau: torch.zeros_like(tau), 4, 9.0, n_knots=9)
    assert res.energy == pytest.approx(13.0, rel=1e-8)
    assert torch.allclose(res.alphas, torch.linspace(0, 1, 9, dtype=F64), atol=1e-5)


def test_optimal_path_for_gaussian_data_beats_cond_ot_and_is_consistent():
    gm, mu, lam = _gaussian([0.5, 0.0], [0.05, 0.2])
    m = float(lam.sum() + mu.square().sum())
    g = gaussian_eps_mmse(lam)
    res = kinetic_optimal_path(g, 2, m, n_knots=9, max_iter=100)
    assert res.energy < 0.9 * res.cond_ot_energy
    # the optimiser's objective is the separation form of its own path, and the Monte Carlo energy agrees
    assert kinetic_energy_from_separation(res.path, g, 2, m, panels=8 * 16) == pytest.approx(res.energy, rel=1e-3)
    assert res.energy == pytest.approx(_direct_gaussian_energy(res.path, mu, lam), rel=1e-3)


def test_piecewise_linear_path_and_rates():
    p = piecewise_linear_path(torch.tensor([0.0, 0.6, 1.0], dtype=F64), torch.tensor([1.0, 0.3, 0.0], dtype=F64))
    a, s, da, ds = p.rates(torch.tensor([0.25, 0.75], dtype=F64))
    assert torch.allclose(a, torch.tensor([0.3, 0.8], dtype=F64)) and torch.allclose(da, torch.tensor([1.2, 0.8], dtype=F64))
    assert torch.allclose(ds, torch.tensor([-1.4, -0.6], dtype=F64))


def test_ve_sigmas_and_sampling_from_infinity():
    sig = path_to_ve_sigmas(cond_ot_path(), 4)
    assert math.isinf(float(sig[0])) and torch.allclose(sig[1:], torch.tensor([3.0, 1.0, 1 / 3, 0.0], dtype=F64))
    x1 = [2.0, -1.0]
    out = sample_euler(_point(x1).denoise, torch.randn(5, 2, dtype=F64), path_to_ve_sigmas(cosine_path(), 3))
    assert torch.allclose(out, torch.tensor(x1, dtype=F64).expand(5, 2), atol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="alpha must equal 0 at t = 0 and 1 at t = 1"):
        GaussianPath(lambda t: 0.5 + 0 * t, lambda t: 1 - t)
    with pytest.raises(ValueError, match="sigma must equal 1 at t = 0"):
        GaussianPath(lambda t: t, lambda t: 2 - 2 * t)
    with pytest.raises(TypeError, match="alpha must be callable"):
        GaussianPath(1.0, lambda t: 1 - t)
    with pytest.raises(TypeError, match="data must be a GaussianMixture"):
        gaussian_path_kinetic_energy(cond_ot_path(), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="alphas must hold at least 2 knots"):
        piecewise_linear_path(torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64))
    with pytest.raises(ValueError, match="level_min must be < level_max"):
        tabulate_eps_mmse(_point([1.0]), level_min=10.0, level_max=1.0)
    bump = piecewise_linear_path(torch.tensor([0.0, 0.5, 0.4, 1.0], dtype=F64), torch.tensor([1.0, 0.2, 0.6, 0.0], dtype=F64))
    with pytest.raises(ValueError, match="path must have a decreasing level"):
        path_to_ve_sigmas(bump, 3)
    with pytest.raises(ValueError, match="n must be >= 2"):
        gaussian_path_kinetic_energy(cond_ot_path(), _point([1.0]), n=1)
