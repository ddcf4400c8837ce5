"""Signal-leak initialization: the DCT basis against scipy, the fitted model's closed forms on exact mixtures, the
start state against the official recipe on diffusers' Stable Diffusion scheduler, and pinned error messages."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.mixture import GaussianMixture
from paperzoo.diffusion.signal_leak import (SignalLeak, fit_signal_leak, low_frequency_basis, sample_signal_leak,
                                            signal_leak_from_moments, signal_leak_moments, signal_leak_start)
from paperzoo.diffusion.zero_terminal_snr import zero_snr_sigmas

D = torch.float64
SHAPE = (2, 3, 4)  # C, H, W
DIM = 24


def _mixture() -> GaussianMixture:
    """Two 'images' of shape SHAPE, a dark and a bright one, with pixels correlated within each channel."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(DIM, DIM, generator=g, dtype=D)
    cov = 0.05 * a @ a.T / DIM + 0.1 * torch.eye(DIM, dtype=D)
    cov = cov + 0.3 * torch.block_diag(torch.ones(12, 12, dtype=D), torch.ones(12, 12, dtype=D))
    means = torch.stack([torch.full((DIM,), -0.8, dtype=D), torch.full((DIM,), 0.6, dtype=D)])
    return GaussianMixture(means, torch.stack([cov, 0.5 * cov]), torch.tensor([0.3, 0.7], dtype=D))


def test_basis_is_the_orthonormal_dct_in_frequency_order():
    import numpy as np
    from scipy.fft import dctn

    basis = low_frequency_basis(5, 4, 20)
    torch.testing.assert_close(basis @ basis.T, torch.eye(20, dtype=D), rtol=0, atol=1e-12)
    img = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=D)
    ref = torch.from_numpy(dctn(img.numpy(), norm="ortho"))
    u, v = np.meshgrid(np.arange(5), np.arange(4), indexing="ij")
    order = sorted(range(20), key=lambda i: (u.flat[i] ** 2 + v.flat[i] ** 2, i))
    torch.testing.assert_close(basis @ img.flatten(), ref.flatten()[order], rtol=0, atol=1e-12)
    assert [(int(u.flat[i]), int(v.flat[i])) for i in order[:4]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    torch.testing.assert_close(low_frequency_basis(5, 4, 1)[0], torch.full((20,), 20**-0.5, dtype=D))  # DC


def test_fit_converges_to_the_model_of_the_population():
    gm = _mixture()
    data = gm.sample(60_000, generator=torch.Generator().manual_seed(1)).reshape(-1, *SHAPE)
    fitted, exact = fit_signal_leak(data, 3), signal_leak_from_moments(gm.mean(), gm.covariance(), SHAPE, 3)
    assert fitted.shape == exact.shape == SHAPE and fitted.lf_cov.shape == (6, 6)
    for name in ("lf_mean", "hf_mean"):
        torch.testing.assert_close(getattr(fitted, name), getattr(exact, name), rtol=0, atol=0.02)
    for name in ("lf_cov", "hf_var"):
        torch.testing.assert_close(getattr(fitted, name), getattr(exact, name), rtol=0.03, atol=0.02)


def test_pixel_model_is_the_per_element_mean_and_variance():
    data = torch.randn(50, *SHAPE, generator=torch.Generator().manual_seed(2), dtype=D) * 2 + 1
    leak = fit_signal_leak(data, 0)
    assert leak.basis.shape == (0, 12) and leak.lf_cov.shape == (0, 0)
    torch.testing.assert_close(leak.hf_mean, data.mean(0))
    torch.testing.assert_close(leak.hf_var, data.var(0))


@pytest.mark.parametrize("n_components", [1, 3, 12])
def test_start_matches_the_true_marginal_in_the_models_subspace(n_components):
    # The leak model of the population, its remainder noise off (so that the low-frequency block is the data's):
    # the start x = leak + sigma * eps then has, in the modelled subspace, the first two moments of the true
    # marginal at sigma (for all components, n_components = H*W, those of the whole state).
    gm, sigma = _mixture(), 13.0
    leak = signal_leak_from_moments(gm.mean(), gm.covariance(), SHAPE, n_components)
    leak = leak._replace(hf_var=torch.zeros_like(leak.hf_var))
    lift = torch.block_diag(leak.basis, leak.basis)
    marginal = gm.marginal(1.0, sigma)
    mean, cov = signal_leak_moments(leak)
    state_cov = lift @ (cov + sigma**2 * torch.eye(DIM, dtype=D)) @ lift.T
    torch.testing.assert_close(lift @ mean, lift @ marginal.mean(), rtol=0, atol=1e-12)
    torch.testing.assert_close(state_cov, lift @ marginal.covariance() @ lift.T, rtol=1e-12, atol=1e-10)
    if n_components == 12:
        torch.testing.assert_close(cov, gm.covariance(), rtol=1e-12, atol=1e-12)
    # and the draws follow that law (at a level where a Monte Carlo covariance is informative)
    g, sigma = torch.Generator().manual_seed(4), 1.5
    x = signal_leak_start(leak, torch.randn(40_000, DIM, generator=g, dtype=D), sigma, generator=g)
    z = x @ lift.T
    torch.testing.assert_close(z.mean(0), lift @ gm.mean(), rtol=0, atol=0.05)
    torch.testing.assert_close(torch.cov(z.T).reshape(state_cov.shape),
                               lift @ gm.marginal(1.0, sigma).covariance() @ lift.T, rtol=0.04, atol=0.1)


def test_draws_follow_the_closed_form_moments_remainder_included():
    gm = _mixture()
    leak = signal_leak_from_moments(gm.mean(), gm.covariance(), SHAPE, 3)
    mean, cov = signal_leak_moments(leak)
    lift = torch.block_diag(leak.basis, leak.basis)
    # the remainder noise is drawn in every direction: it adds P diag(v) P^T to the low-frequency block
    torch.testing.assert_close(lift @ cov @ lift.T, leak.lf_cov + lift @ torch.diag(leak.hf_var.flatten()) @ lift.T,
                               rtol=1e-12, atol=1e-12)
    x = sample_signal_leak(leak, 40_000, generator=torch.Generator().manual_seed(5)).reshape(-1, DIM)
    torch.testing.assert_close(x.mean(0), mean, rtol=0, atol=0.02)
    torch.testing.assert_close(torch.cov(x.T), cov, rtol=0, atol=0.04)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 9), k=st.integers(0, 12))
def test_fit_is_the_moment_model_of_the_sample(seed, n, k):
    # Property: fitting on samples is the population map applied to their mean and (unbiased) covariance.
    data = torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=D)
    flat = data.reshape(n, DIM)
    a, b = fit_signal_leak(data, k), signal_leak_from_moments(flat.mean(0), torch.cov(flat.T), SHAPE, k)
    for name in ("basis", "lf_mean", "lf_cov", "hf_mean", "hf_var"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-9)


def test_start_is_the_official_vp_latent_on_stable_diffusions_scheduler():
    # The official recipe: VP latent sqrt(abar) * leak + sqrt(1 - abar) * eps at the first sampling timestep of
    # a diffusers scheduler; ours is the VE state leak + sigma * eps at sigmas[0].
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                          timestep_spacing="leading", clip_sample=False, set_alpha_to_one=False)
    sched.set_timesteps(50)
    abar = sched.alphas_cumprod[sched.timesteps[0]].double()
    sigma = float(zero_snr_sigmas(50, zero_snr=False, spacing="leading", steps_offset=1)[0])
    assert int(sched.timesteps[0]) == 981 and math.isclose(sigma, float(((1 - abar) / abar).sqrt()), rel_tol=1e-5)
    leak = fit_signal_leak(torch.randn(20, *SHAPE, generator=torch.Generator().manual_seed(6), dtype=D), 3)
    eps = torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(7), dtype=D)
    ours = signal_leak_start(leak, eps, sigma, generator=torch.Generator().manual_seed(8))
    ell = sample_signal_leak(leak, 8, generator=torch.Generator().manual_seed(8))
    vp = abar.sqrt() * ell + (1 - abar).sqrt() * eps
    torch.testing.assert_close(ours / math.sqrt(1 + sigma**2), vp, rtol=1e-5, atol=1e-6)


def test_zero_variance_leak_is_the_mean_plus_noise():
    leak = fit_signal_leak(torch.randn(10, *SHAPE, generator=torch.Generator().manual_seed(9), dtype=D), 3)
    mean, _ = signal_leak_moments(leak)
    flat = leak._replace(lf_cov=torch.zeros_like(leak.lf_cov), hf_var=torch.zeros_like(leak.hf_var))
    eps = torch.randn(4, DIM, generator=torch.Generator().manual_seed(10), dtype=D)
    torch.testing.assert_close(signal_leak_start(flat, eps, 2.0), mean + 2.0 * eps, rtol=0, atol=1e-12)


def test_singular_fitted_covariance_still_samples():
    leak = fit_signal_leak(torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(11), dtype=D), 16)
    x = sample_signal_leak(leak, 1000, generator=torch.Generator().manual_seed(12))
    assert torch.isfinite(x).all() and x.shape == (1000, 1, 4, 4)


def test_float32():
    data = torch.randn(30, *SHAPE, generator=torch.Generator().manual_seed(13))
    leak = fit_signal_leak(data, 3)
    assert leak.basis.dtype == leak.lf_cov.dtype == torch.float32
    assert signal_leak_start(leak, torch.randn(5, *SHAPE), 5.0).dtype == torch.float32


def test_errors():
    data = torch.randn(10, *SHAPE, dtype=D)
    leak = fit_signal_leak(data, 3)
    with pytest.raises(ValueError, match=r"data must hold at least 2 samples to fit a variance, got 1"):
        fit_signal_leak(data[:1], 3)
    with pytest.raises(ValueError, match=r"n_components must be <= H \* W = 12, got 13"):
        fit_signal_leak(data, 13)
    with pytest.raises(ValueError, match=r"n_components must be <= height \* width = 6, got 7"):
        low_frequency_basis(2, 3, 7)
    with pytest.raises(ValueError, match=r"mean must have C\*H\*W = 24 entries for shape \(2, 3, 4\), got 5"):
        signal_leak_from_moments(torch.zeros(5, dtype=D), torch.eye(5, dtype=D), SHAPE, 3)
    with pytest.raises(ValueError, match=r"shape must be \(C, H, W\), got \(2, 3, 2, 2\)"):
        signal_leak_from_moments(torch.zeros(24, dtype=D), torch.eye(24, dtype=D), (2, 3, 2, 2), 3)
    with pytest.raises(ValueError, match=r"noise must have shape \(N, 2, 3, 4\) or \(N, 24\) for the leak model, "
                                         r"got \(5, 23\)"):
        signal_leak_start(leak, torch.zeros(5, 23, dtype=D), 1.0)
    with pytest.raises(TypeError, match=r"noise must have the dtype of the leak model \(torch.float64\), got "
                                        r"torch.float32"):
        signal_leak_start(leak, torch.zeros(5, 24), 1.0)
    with pytest.raises(ValueError, match=r"sigma must be finite"):
        signal_leak_start(leak, torch.zeros(5, 24, dtype=D), float("inf"))
    with pytest.raises(ValueError, match=r"sigma must be > 0"):
        signal_leak_start(leak, torch.zeros(5, 24, dtype=D), 0.0)
    with pytest.raises(ValueError, match=r"leak.lf_cov must have shape \(6, 6\) for leak.shape \(2, 3, 4\), got \(5, 5\)"):
        sample_signal_leak(leak._replace(lf_cov=torch.eye(5, dtype=D)), 3)
    with pytest.raises(ValueError, match=r"leak.hf_var must be >= 0"):
        sample_signal_leak(leak._replace(hf_var=-torch.ones(SHAPE, dtype=D)), 3)
    with pytest.raises(TypeError, match=r"leak must be a SignalLeak, got tuple"):
        sample_signal_leak(tuple(leak), 3)
    assert isinstance(leak, SignalLeak)
