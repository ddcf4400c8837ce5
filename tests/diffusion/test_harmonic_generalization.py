"""Memorization/generalization measurements: the empirical optimal denoiser's closed form and its memorizing
samples, the exact mixture denoiser's Jacobian (symmetric, trace = divergence, closed form), the metrics on
constructed cases, and pinned errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.harmonic_generalization import (EmpiricalDenoiser, cross_network_distance,
                                                        denoiser_jacobian, jacobian_spectrum,
                                                        memorization_ratio, nearest_neighbor_distances)
from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle
from paperzoo.diffusion.samplers import sample_heun
from paperzoo.diffusion.schedules import get_sigmas_karras

D = torch.float64


def _train(n=6, d=4, seed=0):
    return 3.0 * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=D)


def test_empirical_denoiser_is_the_zero_covariance_mixture_posterior_mean():
    # A mixture of tiny isotropic Gaussians at the training points tends to the empirical distribution.
    train = _train()
    gm = GaussianMixture(train, 1e-12 * torch.eye(4, dtype=D).expand(6, 4, 4).clone())
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1), dtype=D) * 3
    for sigma in (0.3, 1.0, 5.0):
        torch.testing.assert_close(EmpiricalDenoiser(train)(x, sigma), gm.denoise(x, sigma), atol=1e-9, rtol=0)


def test_empirical_denoiser_closed_form_and_limits():
    train = torch.tensor([[-1.0], [1.0]], dtype=D)
    x = torch.linspace(-2, 2, 7, dtype=D)[:, None]
    sig = torch.full((7,), 0.8, dtype=D)
    torch.testing.assert_close(EmpiricalDenoiser(train)(x, sig), torch.tanh(x / 0.64))   # E[x0|x] of +-1
    train = _train()
    Dn = EmpiricalDenoiser(train)
    torch.testing.assert_close(Dn(train + 1e-3, 0.0), train)                    # sigma = 0: nearest point
    torch.testing.assert_close(Dn(train, torch.full((6,), torch.inf, dtype=D)), train.mean(0).expand(6, 4))


def test_empirical_denoiser_samples_are_training_points():
    train = _train(8, 4)
    sigmas = get_sigmas_karras(20, 0.01, 30.0, dtype=D)
    noise = torch.randn(32, 4, generator=torch.Generator().manual_seed(2), dtype=D)
    x = sample_heun(EmpiricalDenoiser(train), sigmas[0] * noise, sigmas)
    assert float(memorization_ratio(x, train).max()) < 1e-3
    assert len(set(torch.cdist(x, train).argmin(1).tolist())) > 3                # several points, not one


def test_jacobian_of_exact_gaussian_is_the_shrinkage_matrix():
    A = torch.randn(3, 3, generator=torch.Generator().manual_seed(3), dtype=D)
    cov = A @ A.T + 0.1 * torch.eye(3, dtype=D)
    gm = GaussianMixture(torch.zeros(1, 3, dtype=D), cov[None])
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(4), dtype=D)
    sigma = 0.7
    expected = cov @ torch.linalg.inv(cov + sigma**2 * torch.eye(3, dtype=D))       # Sigma (Sigma + s^2 I)^-1
    spec = jacobian_spectrum(gm._denoise, x, sigma)
    torch.testing.assert_close(spec.jacobian, expected.expand(4, 3, 3))
    lam = torch.linalg.eigvalsh(cov).flip(0)
    torch.testing.assert_close(spec.eigenvalues, (lam / (lam + sigma**2)).expand(4, 3))
    torch.testing.assert_close(spec.effective_dim, (lam / (lam + sigma**2)).sum().expand(4))


def test_mixture_jacobian_is_symmetric_and_its_trace_is_the_divergence():
    gm = mixture_on_circle(4, 3, radius=2.0, std=0.5)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(5), dtype=D) * 2
    sigma = torch.linspace(0.3, 1.5, 6, dtype=D)
    spec = jacobian_spectrum(gm._denoise, x, sigma)
    torch.testing.assert_close(spec.jacobian, spec.jacobian.transpose(-1, -2))
    assert float(spec.asymmetry.max()) < 1e-12
    assert float(spec.eigenvalues.min()) >= -1e-12                           # Cov[x0|x] / sigma^2 is PSD
    h = 1e-5
    div = sum((gm.denoise(x + h * e, sigma) - gm.denoise(x - h * e, sigma))[:, j] / (2 * h)
              for j, e in enumerate(torch.eye(3, dtype=D)))
    torch.testing.assert_close(spec.effective_dim, div, atol=1e-7, rtol=0)
    torch.testing.assert_close(spec.eigenvalues.sum(-1), spec.effective_dim)
    # the eigenvectors diagonalise the Jacobian
    torch.testing.assert_close(spec.eigenvectors.transpose(-1, -2) @ spec.jacobian @ spec.eigenvectors,
                               torch.diag_embed(spec.eigenvalues), atol=1e-12, rtol=0)


def test_jacobian_of_a_network_matches_autograd_and_reports_asymmetry():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(D)
    model = lambda x, s: net(x) / (1 + s[:, None])  # noqa: E731
    x = torch.randn(4, 3, dtype=D)
    jac = denoiser_jacobian(model, x, 0.5)
    for n in range(4):
        ref = torch.autograd.functional.jacobian(lambda y: model(y[None], torch.tensor([0.5], dtype=D))[0], x[n])
        torch.testing.assert_close(jac[n], ref)
    assert float(jacobian_spectrum(model, x, 0.5).asymmetry.detach().min()) > 1e-3


def test_memorization_ratio_on_constructed_cases():
    train = _train(20, 5)
    assert float(memorization_ratio(train, train).max()) == 0.0
    fresh = _train(200, 5, seed=9)                       # same law, independent: about as novel as held-out data
    ratio = memorization_ratio(fresh, train, fresh)
    assert float(ratio.median()) == pytest.approx(1.0)
    nn_loo = nearest_neighbor_distances(train, train, exclude_self=True)
    torch.testing.assert_close(memorization_ratio(train[:3] + 0.0, train[3:]),
                               torch.cdist(train[:3], train[3:]).min(1).values
                               / nearest_neighbor_distances(train[3:], train[3:], exclude_self=True).median())
    assert float(nn_loo.min()) > 0


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 0.3))
def test_cross_network_distance_constructed_cases(seed, eps):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(400, 6, generator=g, dtype=D)
    b = a + eps * torch.randn(400, 6, generator=g, dtype=D)
    dist = float(cross_network_distance(a, b))
    assert 0.0 <= dist <= eps * 1.5 + 1e-12                       # near-identical samples: near 0
    c = torch.randn(400, 6, generator=g, dtype=D)                  # unrelated samples: about 1
    assert float(cross_network_distance(a, c)) == pytest.approx(1.0, abs=0.12)


def test_errors():
    train = _train()
    with pytest.raises(ValueError, match=r"x must have last dimension 4 \(the training set's\), got shape \(2, 3\)"):
        EmpiricalDenoiser(train)(torch.zeros(2, 3, dtype=D), 0.5)
    with pytest.raises(ValueError, match=r"sigma must be a number or have shape \(2,\)"):
        EmpiricalDenoiser(train)(torch.zeros(2, 4, dtype=D), torch.ones(3, dtype=D))
    with pytest.raises(TypeError, match="x must have the training set's dtype"):
        EmpiricalDenoiser(train)(torch.zeros(2, 4), 0.5)
    with pytest.raises(ValueError, match="train must hold at least 2 points when no reference is given, got 1"):
        memorization_ratio(train, train[:1])
    with pytest.raises(ValueError, match="a must hold at least 2 samples"):
        cross_network_distance(train[:1], train[:1])
    with pytest.raises(ValueError, match="a and b must not be one and the same point repeated"):
        cross_network_distance(train[:1].expand(6, 4).clone(), train[:1].expand(6, 4).clone())
    with pytest.raises(ValueError, match="exclude_self=True needs x to be reference"):
        nearest_neighbor_distances(train[:2], train, exclude_self=True)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        denoiser_jacobian(EmpiricalDenoiser(train), train, 0.0)
    with pytest.raises(ValueError, match=r"sigma must have N = 6 \(from x\) in its shape"):
        denoiser_jacobian(EmpiricalDenoiser(train), train, torch.ones(2, dtype=D))
