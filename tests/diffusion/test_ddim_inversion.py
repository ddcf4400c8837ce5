"""DDIM inversion: the closed-form linear map on one Gaussian, convergence to the exact probability-flow map, the
VP form of the paper's update, reconstruction, the forward-diffusion variant, the measurements against scipy and
closed forms, and pinned errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.ddim_inversion import (assign_noises, ddim_inversion_sigmas, invert_ddim, ks_distance,
                                               moment_gaussian_kl, reconstruction_error, top_k_correlation)
from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle
from paperzoo.diffusion.samplers import sample_euler
from paperzoo.diffusion.schedules import alphas_cumprod_from_betas, betas_linear, get_sigmas_exponential

D = torch.float64


def _up(levels, sigma_min, sigma_max):
    """``levels`` increasing levels, geometric from ``sigma_min`` to ``sigma_max`` (``levels - 1`` steps)."""
    return get_sigmas_exponential(levels, sigma_min, sigma_max, dtype=D)[:-1].flip(0)


def _gaussian(eigenvalues, seed=0):
    """One Gaussian component with the given covariance eigenvalues in a random basis, and its (U, lam, mu)."""
    d = len(eigenvalues)
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=D))
    lam = torch.tensor(eigenvalues, dtype=D)
    mu = torch.randn(d, generator=g, dtype=D)
    return GaussianMixture(mu[None], (u * lam) @ u.T[None]), u, lam, mu


def _euler_multipliers(lam, sigmas):
    """Per eigen-direction, the product over steps of 1 + (s' - s) s / (lam + s^2): Euler's linear map."""
    out = torch.ones_like(lam)
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        out = out * (1 + (s_next - s) * s / (lam + s**2))
    return out


def test_single_gaussian_inversion_is_the_closed_form_linear_map():
    gm, u, lam, mu = _gaussian([2.0, 0.3, 1e-3])
    sigmas = _up(12, 0.01, 50.0)
    x = gm.sample(7, generator=torch.Generator().manual_seed(1))
    expected = mu + ((x - mu) @ u) * _euler_multipliers(lam, sigmas) @ u.T
    torch.testing.assert_close(invert_ddim(gm.denoise, x, sigmas), expected, rtol=1e-12, atol=1e-10)


@settings(max_examples=15, deadline=None)
@given(lam=st.floats(1e-4, 10.0), n=st.integers(1, 30), s0=st.floats(1e-3, 0.5))
def test_euler_multiplier_property(lam, n, s0):
    gm = GaussianMixture(torch.zeros(1, 1, dtype=D), torch.full((1, 1, 1), lam, dtype=D))
    sigmas = _up(n + 1, s0, 20.0)
    x = torch.tensor([[1.0], [-0.5]], dtype=D)
    torch.testing.assert_close(invert_ddim(gm.denoise, x, sigmas),
                               x * _euler_multipliers(torch.tensor([lam], dtype=D), sigmas), rtol=1e-10, atol=1e-12)


def test_converges_to_the_exact_probability_flow_map():
    gm, u, lam, mu = _gaussian([1.0, 0.05, 1e-3])
    x = gm.sample(20, generator=torch.Generator().manual_seed(2))
    s0, s1 = 0.01, 80.0
    exact = mu + ((x - mu) @ u) * ((lam + s1**2) / (lam + s0**2)).sqrt() @ u.T
    errors = []
    for n in (10, 100, 300):
        sigmas = _up(n + 1, s0, s1)
        errors.append(float(((invert_ddim(gm.denoise, x, sigmas) - exact).norm(dim=1) / exact.norm(dim=1)).max()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01 and errors[0] > 0.1       # coarse inversion is far off, fine inversion is exact
    assert errors[1] / errors[2] > 2.5                 # first order in the step (Euler): 3x the steps, 1/3 the error


def test_vp_form_of_the_papers_update():
    """The paper's VP update x' = sqrt(a') x0_hat + sqrt(1 - a') eps_hat(x, t), on DDIM's timesteps."""
    gm = mixture_on_circle(4, 3, radius=1.0, std=0.2)
    ac = alphas_cumprod_from_betas(betas_linear()).double()
    sigmas = ddim_inversion_sigmas(ac, 20)
    a = 1 / (1 + sigmas**2)
    x0 = gm.sample(16, generator=torch.Generator().manual_seed(3))
    x = x0 * a[0].sqrt()                      # the VP state of the image at the first timestep
    for i in range(len(sigmas) - 1):
        x_ve = x / a[i].sqrt()
        x0_hat = gm.denoise(x_ve, sigmas[i].expand(16))
        eps = (x - a[i].sqrt() * x0_hat) / (1 - a[i]).sqrt()
        x = a[i + 1].sqrt() * x0_hat + (1 - a[i + 1]).sqrt() * eps
    latent = invert_ddim(gm.denoise, x0, sigmas) / (1 + sigmas[-1] ** 2).sqrt()
    torch.testing.assert_close(latent, x, rtol=1e-10, atol=1e-10)


def test_ddim_inversion_sigmas_are_ddims_timesteps_reversed():
    ac = alphas_cumprod_from_betas(betas_linear()).double()
    sig = ((1 - ac) / ac).sqrt()
    torch.testing.assert_close(ddim_inversion_sigmas(ac, 50), sig[torch.arange(0, 1000, 20)])
    torch.testing.assert_close(ddim_inversion_sigmas(ac, 4, "trailing"), sig[torch.tensor([249, 499, 749, 999])])


def test_reconstruction_error_goes_to_zero_with_steps():
    gm = mixture_on_circle(4, 2, radius=2.0, std=0.3)
    x0 = gm.sample(64, generator=torch.Generator().manual_seed(4))
    errs = []
    for n in (5, 30, 200):
        sigmas = _up(n + 1, 0.02, 40.0)
        back = sample_euler(gm.denoise, invert_ddim(gm.denoise, x0, sigmas), sigmas.flip(0))
        errs.append(float(reconstruction_error(x0, back).mean()))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-3 * errs[0]


def test_forward_steps_replace_the_first_steps_by_forward_diffusion():
    gm = mixture_on_circle(3, 2, radius=2.0, std=0.3)
    sigmas = _up(9, 0.01, 30.0)
    x0 = gm.sample(10, generator=torch.Generator().manual_seed(5))
    z = torch.randn(10, 2, generator=torch.Generator().manual_seed(6), dtype=D)
    all_forward = invert_ddim(gm.denoise, x0, sigmas, forward_steps=8, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(all_forward, x0 + (sigmas[-1] ** 2 - sigmas[0] ** 2).sqrt() * z)
    three = invert_ddim(gm.denoise, x0, sigmas, forward_steps=3, generator=torch.Generator().manual_seed(6))
    start = x0 + (sigmas[3] ** 2 - sigmas[0] ** 2).sqrt() * z
    torch.testing.assert_close(three, invert_ddim(gm.denoise, start, sigmas[3:]))


def test_callback_sees_the_real_levels():
    gm = mixture_on_circle(3, 2)
    sigmas = _up(5, 0.1, 10.0)
    seen = []
    invert_ddim(gm.denoise, gm.sample(3), sigmas, callback=lambda info: seen.append((info["i"], float(info["sigma"]))))
    assert seen == [(i, float(s)) for i, s in enumerate(sigmas[:-1])]


# -- measurements --------------------------------------------------------------------------------------------------
def test_moment_gaussian_kl_closed_form_and_noise_floor():
    g = torch.Generator().manual_seed(7)
    n, d = 20_000, 4
    z = torch.randn(n, d, generator=g, dtype=D)
    assert abs(float(moment_gaussian_kl(z)) - d * (d + 3) / (4 * n)) < 3e-4
    scaled = 2.0 * z + 0.5                          # KL about 0.5 d (4 - 1 - log 4) + 0.5 d / 4
    cov, m = torch.cov(scaled.T), scaled.mean(0)
    expected = 0.5 * (cov.trace() + m.square().sum() - d - torch.logdet(cov))
    torch.testing.assert_close(moment_gaussian_kl(scaled), expected)
    assert abs(float(expected) - 0.5 * d * (4.0 - 1 - math.log(4.0)) - 0.5 * d * 0.25) < 0.1


def test_ks_distance_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    z = torch.randn(300, 5, generator=torch.Generator().manual_seed(8), dtype=D) * 1.3 + 0.2
    expected = sum(stats.kstest(z[:, j].numpy(), "norm").statistic for j in range(5)) / 5
    assert abs(float(ks_distance(z)) - expected) < 1e-12


def test_top_k_correlation():
    g = torch.Generator().manual_seed(9)
    z = torch.randn(500, 6, generator=g, dtype=D)
    assert float(top_k_correlation(z, k=3)) < 0.2
    z[:, 1] = -2 * z[:, 0]
    assert float(top_k_correlation(z, k=1)) == pytest.approx(1.0)
    z[:, 2] = 0.0        # a constant coordinate correlates 0
    assert math.isfinite(float(top_k_correlation(z, k=15)))
    expected = torch.corrcoef(z.T[[0, 1, 3, 4, 5]]).triu(1).abs().flatten().topk(2).values.mean()
    torch.testing.assert_close(top_k_correlation(z, k=2), expected)


def test_assign_noises_recovers_pairs():
    g = torch.Generator().manual_seed(10)
    noise = torch.randn(40, 16, generator=g, dtype=D)
    out = assign_noises(noise, noise + 0.1 * torch.randn(40, 16, generator=g, dtype=D))
    assert out.accuracy == 1.0 and torch.equal(out.index, torch.arange(40))
    perm = torch.randperm(40, generator=g)
    shuffled = assign_noises(noise, noise[perm])
    assert torch.equal(perm[shuffled.index], torch.arange(40)) and shuffled.cost == pytest.approx(0.0)


# -- errors --------------------------------------------------------------------------------------------------------
def test_errors_are_pinned():
    gm = mixture_on_circle(3, 2)
    x = gm.sample(4)
    up = torch.tensor([0.1, 1.0, 10.0], dtype=D)
    with pytest.raises(ValueError, match=r"sigmas must be nondecreasing \(an inversion goes from the data level up"):
        invert_ddim(gm.denoise, x, up.flip(0))
    with pytest.raises(ValueError, match=r"sigmas must be > 0 \(the inversion starts from the data taken at level"):
        invert_ddim(gm.denoise, x, torch.tensor([0.0, 1.0], dtype=D))
    with pytest.raises(ValueError, match="sigmas must hold at least two levels"):
        invert_ddim(gm.denoise, x, up[:1])
    with pytest.raises(ValueError, match=r"forward_steps must be <= the number of steps \(2\), got 3"):
        invert_ddim(gm.denoise, x, up, forward_steps=3)
    with pytest.raises(ValueError, match=r"forward_steps must be >= 0"):
        invert_ddim(gm.denoise, x, up, forward_steps=-1)
    with pytest.raises(ValueError, match=r"z must have more rows than columns \(n > d = 3\) for a nonsingular covariance, got 3"):
        moment_gaussian_kl(torch.randn(3, 3, dtype=D))
    with pytest.raises(ValueError, match="z must have a nonsingular sample covariance"):
        moment_gaussian_kl(torch.ones(5, 2, dtype=D))
    with pytest.raises(ValueError, match=r"k must be <= the number of coordinate pairs \(3\), got 4"):
        top_k_correlation(torch.randn(5, 3, dtype=D), k=4)
    with pytest.raises(ValueError, match=r"x_hat must have the shape of x \(4, 2\), got \(4, 3\)"):
        reconstruction_error(x, torch.zeros(4, 3, dtype=D))
    with pytest.raises(ValueError, match=r"samples must have the shape of noises"):
        assign_noises(x, torch.zeros(5, 2, dtype=D))
    with pytest.raises(ValueError, match="alphas_cumprod must be <= 1"):
        ddim_inversion_sigmas(torch.tensor([1.5, 0.5], dtype=D), 2)
