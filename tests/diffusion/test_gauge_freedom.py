"""Tests of the gauge-freedom module: closed forms on exact low-rank Gaussian mixtures, the gauge condition, errors."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.gauge_freedom import (denoiser_jacobian, dimension_from_spectrum, gauge_residual,
                                              gauge_rotation, intrinsic_dimension, mle_intrinsic_dimension,
                                              nonconservativity)
from paperzoo.diffusion.mixture import GaussianMixture
from paperzoo.diffusion.samplers import sample_heun
from paperzoo.diffusion.schedules import get_sigmas_karras

D = 5


def low_rank_mixture(ranks, seed=0, normal_var=1e-6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    means, covs = [], []
    for i, k in enumerate(ranks):
        q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=dtype))
        lam = torch.full((D,), normal_var, dtype=dtype)
        lam[:k] = 1.0
        covs.append(q @ torch.diag(lam) @ q.T)
        m = torch.zeros(D, dtype=dtype)
        m[0] = 10.0 * i
        means.append(m)
    covs = torch.stack(covs)
    return GaussianMixture(torch.stack(means), 0.5 * (covs + covs.transpose(-1, -2)))


def antisym(seed=0, dtype=torch.float64):
    m = torch.randn(D, D, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    a = m - m.T
    return a / torch.linalg.matrix_norm(a, ord=2)


@pytest.mark.parametrize("rule", ["threshold", "gap"])
def test_recovers_rank_of_each_component(rule):
    ranks = (1, 2, 4, 5)
    gm = low_rank_mixture(ranks)
    x, comp = gm.component_samples(40, generator=torch.Generator().manual_seed(1))
    est = intrinsic_dimension(gm.denoise, x, 0.03, rule=rule)
    assert est.dimension.tolist() == [ranks[c] for c in comp.tolist()]
    assert est.jacobian.shape == (40, D, D) and est.singular_values.shape == (40, D)


def test_jacobian_closed_form_single_gaussian():
    gm = low_rank_mixture((2,), normal_var=0.01)
    x = gm.sample(3, generator=torch.Generator().manual_seed(0))
    sigma = 0.3
    expected = gm.covs[0] @ torch.linalg.inv(gm.covs[0] + sigma**2 * torch.eye(D, dtype=torch.float64))
    jac = denoiser_jacobian(gm.denoise, x, sigma)
    torch.testing.assert_close(jac, expected.expand(3, D, D), atol=1e-10, rtol=0)
    # per-point levels give the same thing
    torch.testing.assert_close(denoiser_jacobian(gm.denoise, x, torch.full((3,), sigma, dtype=torch.float64)), jac)


def test_exact_score_is_conservative_and_gauge_is_not():
    gm = low_rank_mixture((1, 3))
    x = gm.sample(20, generator=torch.Generator().manual_seed(2))
    assert float(nonconservativity(gm.denoise, x, 0.1).max()) < 1e-10
    assert float(nonconservativity(gauge_rotation(gm.denoise, antisym()), x, 0.1).min()) > 0.05


def test_gauge_breaks_dimension_estimate():
    gm = low_rank_mixture((1,))
    x = gm.sample(10, generator=torch.Generator().manual_seed(3))
    assert intrinsic_dimension(gm.denoise, x, 0.03).dimension.tolist() == [1] * 10
    wrong = intrinsic_dimension(gauge_rotation(gm.denoise, antisym()), x, 0.03).dimension
    assert bool((wrong != 1).all())


def test_gauge_residual_zero_for_rotation_nonzero_for_symmetric():
    gm = low_rank_mixture((2, 4), normal_var=0.05)
    x = gm.sample(16, generator=torch.Generator().manual_seed(4), sigma=0.5)
    res = gauge_residual(gm.denoise, gauge_rotation(gm.denoise, antisym()), x, 0.5)
    assert float(res.abs().max()) < 1e-8
    b = antisym(1) @ antisym(2).T
    b = b + b.T

    def sym(x_, s):
        d = gm.denoise(x_, s)
        return d + (d - x_) @ b.T

    assert float(gauge_residual(gm.denoise, sym, x, 0.5).abs().mean()) > 1e-2


def test_gauge_term_keeps_probability_flow_samples():
    """PF-ODE from the exact marginal of an isotropic (rotation-invariant) Gaussian: the rotated field gives the same
    law (mean and covariance), a symmetric perturbation of equal norm does not."""
    mean = torch.tensor([1.0, -1.0, 0.5, 0.0, 2.0], dtype=torch.float64)
    gm = GaussianMixture(mean[None], 0.49 * torch.eye(D, dtype=torch.float64)[None])
    g = torch.Generator().manual_seed(5)
    start = gm.sample(1500, sigma=5.0, generator=g)
    sigmas = get_sigmas_karras(24, 0.01, 5.0, dtype=torch.float64)
    a = antisym(3)
    exact = sample_heun(gm.denoise, start, sigmas)
    rotated = sample_heun(gauge_rotation(gm.denoise, a), start, sigmas)
    assert not torch.allclose(exact, rotated, atol=1e-2)      # the trajectories differ ...
    for out in (exact, rotated):                               # ... the law does not
        torch.testing.assert_close(out.mean(0), mean, atol=0.08, rtol=0)
        torch.testing.assert_close(torch.cov(out.T), 0.49 * torch.eye(D, dtype=torch.float64), atol=0.08, rtol=0)
    b = 0.5 * a.norm() / math.sqrt(D) * torch.eye(D, dtype=torch.float64)

    def sym(x_, s):
        d = gm.denoise(x_, s)
        return d + (d - x_) @ b.T

    bad = sample_heun(sym, start, sigmas)
    assert float((torch.cov(bad.T).diagonal() - 0.49).abs().mean()) > 0.1


def test_dimension_from_spectrum_rules():
    sv = torch.tensor([[0.99, 0.97, 0.05, 0.01], [1.0, 1.0, 1.0, 1.0], [0.02, 0.01, 0.0, 0.0]],
                      dtype=torch.float64)
    assert dimension_from_spectrum(sv).tolist() == [2, 4, 0]
    assert dimension_from_spectrum(sv, "gap").tolist() == [2, 4, 0]


@settings(max_examples=15, deadline=None)
@given(k=st.integers(0, D), scale=st.floats(0.5, 4.0))
def test_gap_and_threshold_agree_on_clean_spectra(k, scale):
    sv = torch.cat([torch.full((k,), 1.0 - 0.01 * scale), torch.full((D - k,), 0.01 * scale)])
    assert int(dimension_from_spectrum(sv)) == k == int(dimension_from_spectrum(sv, "gap"))


def test_mle_on_flat_subspace():
    g = torch.Generator().manual_seed(6)
    pts = torch.zeros(3000, D, dtype=torch.float64)
    pts[:, :3] = torch.rand(3000, 3, generator=g, dtype=torch.float64)
    q = pts[:50] + 0.0
    est = mle_intrinsic_dimension(pts, q, n_neighbors=20)
    assert abs(float(est.mean()) - 3.0) < 0.3


def test_errors():
    gm = low_rank_mixture((2,))
    x = gm.sample(4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="sigma must be > 0"):
        intrinsic_dimension(gm.denoise, x, 0.0)
    with pytest.raises(ValueError, match="sigma must be > 0 entrywise"):
        denoiser_jacobian(gm.denoise, x, torch.tensor([0.1, 0.0, 0.1, 0.1], dtype=torch.float64))
    with pytest.raises(ValueError, match="rule must be one of"):
        intrinsic_dimension(gm.denoise, x, 0.1, rule="knee")
    with pytest.raises(ValueError, match="threshold must be < 1"):
        intrinsic_dimension(gm.denoise, x, 0.1, threshold=1.0)
    with pytest.raises(ValueError, match="model must return a tensor of the shape of x"):
        intrinsic_dimension(lambda z, s: z[:, :2], x, 0.1)
    with pytest.raises(ValueError, match="generator must be antisymmetric"):
        gauge_rotation(gm.denoise, torch.eye(D, dtype=torch.float64))
    with pytest.raises(ValueError, match="x must have last dimension 3"):
        gauge_rotation(gm.denoise, torch.zeros(3, 3, dtype=torch.float64))(x, torch.full((4,), 0.1,
                                                                                          dtype=torch.float64))
    with pytest.raises(ValueError, match="n_neighbors must be < the number of points"):
        mle_intrinsic_dimension(x, x, n_neighbors=4)
    with pytest.raises(TypeError, match="model must be callable"):
        nonconservativity(3, x, 0.1)
