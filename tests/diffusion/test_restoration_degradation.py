"""Restoration-degradation decomposition of DDIM: the composition is DDIM's step (exactly, every schedule), the
restoration is the Gaussian posterior mean of the earlier level, the closed-form Gaussian output law matches sampling
and the 1-D linear recursion, DDIM's error is first order in the step and linear in an injected score error, and
errors are pinned."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle
from paperzoo.diffusion.restoration_degradation import (affine_sampler_law, biased_denoiser, ddim_gaussian_error,
                                                        degradation, predicted_noise, rd_step, restoration,
                                                        restoration_level, sample_rd)
from paperzoo.diffusion.samplers import ancestral_step, euler_step, run_sampler, sample_ddim, sample_heun
from paperzoo.diffusion.schedules import (alphas_cumprod_from_betas, append_zero, betas_linear, discrete_timesteps,
                                          get_sigmas_karras, rescale_zero_terminal_snr, sigmas_from_alphas_cumprod)

D = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny tensor ops per sampler step; intra-op threads only add overhead on the shared machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _gaussian():
    return torch.tensor([1.0, -0.5], dtype=D), torch.tensor([[0.4, 0.1], [0.1, 0.9]], dtype=D)


@pytest.mark.parametrize("schedule", ["karras", "ddpm_trailing", "coarse", "zero_snr"])
def test_sample_rd_equals_ddim_eta0(schedule):
    gm = mixture_on_circle(5, 2, radius=3.0, std=0.3)
    if schedule == "karras":
        sigmas = get_sigmas_karras(25, 0.002, 80.0)
    elif schedule == "coarse":  # sigma_next < sigma / 2 on every step: the s = 0 branch
        sigmas = append_zero(torch.tensor([40.0, 10.0, 2.0, 0.3, 0.05], dtype=D))
    else:
        betas = betas_linear(1000).to(D)
        if schedule == "zero_snr":
            betas = rescale_zero_terminal_snr(betas)
        sigmas = append_zero(sigmas_from_alphas_cumprod(alphas_cumprod_from_betas(betas))[
            discrete_timesteps(1000, 10, "trailing")])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, generator=g, dtype=D) * (1.0 if math.isinf(float(sigmas[0])) else float(sigmas[0]))
    ours = sample_rd(gm.denoise, x, sigmas)
    ddim = sample_ddim(gm.denoise, x, sigmas, eta=0.0)
    torch.testing.assert_close(ours, ddim, rtol=0, atol=1e-11)
    torch.testing.assert_close(run_sampler(gm.denoise, x, sigmas, ancestral_step(0.0)), ours, rtol=0, atol=1e-11)


@settings(max_examples=60, deadline=None)
@given(sigma=st.floats(1e-3, 100.0), ratio=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_composition_is_the_ddim_step(sigma, ratio, seed):
    g = torch.Generator().manual_seed(seed)
    x, den = torch.randn(3, 4, generator=g, dtype=D) * sigma, torch.randn(3, 4, generator=g, dtype=D)
    s, sn = torch.tensor(sigma, dtype=D), torch.tensor(sigma * ratio, dtype=D)
    level = restoration_level(s, sn)
    assert 0 <= float(level) <= float(sn)
    composed = degradation(restoration(x, s, level, den), level, sn, predicted_noise(x, s, den))
    # The restored level is a rounded root, so sqrt(sn^2 - level^2) = sigma - sn carries an absolute error of about
    # 2 eps sigma / (1 - ratio): as ratio -> 1 the composition is ill-conditioned (times |noise| <~ 5).
    conditioning = 3e-15 * sigma / (1 - ratio) if ratio < 1 else 0.0
    torch.testing.assert_close(composed, euler_step(x, s, sn, den, None), rtol=1e-12,
                               atol=1e-12 * (1 + sigma) + conditioning)
    torch.testing.assert_close(rd_step(x, s, sn, den, None), composed, rtol=0, atol=0)


def test_restoration_level_roots_and_small_step_limit():
    assert restoration_level(1.0, 0.4) == 0.0  # sigma_next < sigma / 2
    assert restoration_level(2.0, 1.0) == 0.0  # boundary: s^2 = 0
    assert restoration_level(1.0, 0.8) == pytest.approx(math.sqrt(0.6))
    for h in (1e-2, 1e-3):  # s = sigma_next - h^2/(2 sigma) + O(h^3): just below the next level
        s = restoration_level(1.0, 1.0 - h)
        assert (1.0 - h) - s == pytest.approx(h**2 / 2, rel=5 * h)
    assert math.sqrt(0.8**2 - restoration_level(1.0, 0.8) ** 2) == pytest.approx(0.2)  # degradation std = h


def test_restoration_is_gaussian_posterior_mean_of_earlier_level():
    mean, cov = _gaussian()
    gm = GaussianMixture(mean[None], cov[None])
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(1), dtype=D) * 2
    sigma, s = 1.5, 0.7
    eye = torch.eye(2, dtype=D)
    # E[x_s | x_sigma = x] = mu + (cov + s^2 I)(cov + sigma^2 I)^{-1} (x - mu) for Gaussian data
    gain = (cov + s**2 * eye) @ torch.linalg.inv(cov + sigma**2 * eye)
    expected = mean + (x - mean) @ gain.T
    torch.testing.assert_close(restoration(x, sigma, s, gm.denoise(x, sigma)), expected, rtol=1e-12, atol=1e-12)
    # and it is one gradient-ascent step on log p_sigma with step sigma^2 - s^2
    torch.testing.assert_close(restoration(x, sigma, s, gm.denoise(x, sigma)),
                               x + (sigma**2 - s**2) * gm.score(x, sigma), rtol=1e-10, atol=1e-10)


def test_affine_law_matches_sampling_and_linear_recursion():
    mean, cov = _gaussian()
    gm = GaussianMixture(mean[None], cov[None])
    sigmas = get_sigmas_karras(6, 0.01, 10.0)
    start_cov = cov + 100.0 * torch.eye(2, dtype=D)
    m, c = affine_sampler_law(sample_ddim, gm.denoise, mean, start_cov, sigmas)
    g = torch.Generator().manual_seed(2)
    z = mean + torch.randn(20000, 2, generator=g, dtype=D) @ torch.linalg.cholesky(start_cov).T
    out = sample_ddim(gm.denoise, z, sigmas)
    torch.testing.assert_close(out.mean(0), m, rtol=0, atol=0.02)
    torch.testing.assert_close(torch.cov(out.T), c, rtol=0.05, atol=0.01)
    # 1-D: x - mu is multiplied by a_i = (v + sigma sigma_next)/(v + sigma^2) at each DDIM step
    v = 0.3
    a = torch.prod((v + sigmas[:-1] * sigmas[1:]) / (v + sigmas[:-1] ** 2))
    var_out = float(a**2 * (v + sigmas[0] ** 2))
    assert ddim_gaussian_error(torch.zeros(1, dtype=D), torch.full((1, 1), v, dtype=D), sigmas) == pytest.approx(
        abs(math.sqrt(var_out) - math.sqrt(v)), rel=1e-9)


def _slope(ns, errs):
    lx, ly = torch.log(torch.tensor(ns, dtype=D)), torch.log(torch.tensor(errs, dtype=D))
    lx = lx - lx.mean()
    return float((lx * (ly - ly.mean())).sum() / (lx * lx).sum())


def test_ddim_error_is_first_order_in_steps_heun_second():
    mean, cov = _gaussian()
    ns = [16, 32, 64, 128]
    ddim = [ddim_gaussian_error(mean, cov, get_sigmas_karras(n, 0.002, 20.0)) for n in ns]
    heun = [ddim_gaussian_error(mean, cov, get_sigmas_karras(n, 0.002, 20.0), sampler=sample_heun) for n in ns]
    assert _slope(ns, ddim) == pytest.approx(-1.0, abs=0.05)
    assert _slope(ns, heun) == pytest.approx(-2.0, abs=0.15)


def test_score_error_shift_is_linear_in_eps():
    mean, cov = _gaussian()
    gm = GaussianMixture(mean[None], cov[None])
    sigmas = get_sigmas_karras(32, 0.002, 20.0)
    u = torch.tensor([0.6, 0.8], dtype=D)
    start = cov + 400.0 * torch.eye(2, dtype=D)
    base = affine_sampler_law(sample_rd, gm.denoise, mean, start, sigmas)
    shifts = [affine_sampler_law(sample_rd, biased_denoiser(gm.denoise, u, e), mean, start, sigmas)[0] - base[0]
              for e in (0.1, 0.2, 0.4)]
    torch.testing.assert_close(shifts[1], 2 * shifts[0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(shifts[2], 4 * shifts[0], rtol=1e-9, atol=1e-12)
    # a constant score error leaves the covariance unchanged; at fine steps W2 ~ eps * |shift per unit eps|
    fine = get_sigmas_karras(256, 0.002, 20.0)
    e1, e2 = (ddim_gaussian_error(mean, cov, fine, eps=e, direction=u) for e in (0.2, 0.4))
    assert e2 / e1 == pytest.approx(2.0, rel=0.02)


def test_biased_denoiser_has_score_error_eps():
    gm = mixture_on_circle(3, 2, radius=2.0, std=0.3)
    f = biased_denoiser(gm.denoise, torch.tensor([3.0, 4.0], dtype=D), 0.5)
    x, sigma = torch.randn(5, 2, dtype=D), torch.full((5,), 2.0, dtype=D)
    # score error in the VP convention: sqrt(1 + sigma^2) * (D~ - D) / sigma^2
    err = (f(x, sigma) - gm.denoise(x, sigma)) * math.sqrt(5.0) / 4.0
    torch.testing.assert_close(err.norm(dim=1), torch.full((5,), 0.5, dtype=D))


def test_errors_are_pinned():
    x = torch.zeros(2, 3, dtype=D)
    with pytest.raises(ValueError, match=r"sigma_next must be <= sigma \(1.0\), got 2.0"):
        restoration_level(1.0, 2.0)
    with pytest.raises(ValueError, match=r"sigma must be > 0, got 0.0"):
        restoration_level(0.0, 0.0)
    with pytest.raises(ValueError, match=r"sigma_restored must be <= sigma \(1.0\), got 1.5"):
        restoration(x, 1.0, 1.5, x)
    with pytest.raises(ValueError, match=r"denoised must have the shape of x \(2, 3\), got \(2, 2\)"):
        restoration(x, 1.0, 0.5, torch.zeros(2, 2, dtype=D))
    with pytest.raises(ValueError, match=r"sigma_restored must be <= sigma_next \(0.5\), got 0.7"):
        degradation(x, 0.7, 0.5, x)
    with pytest.raises(ValueError, match=r"noise must have the shape of x_restored"):
        degradation(x, 0.1, 0.5, torch.zeros(3, dtype=D))
    with pytest.raises(ValueError, match="direction must be a nonzero vector"):
        biased_denoiser(lambda x, s: x, torch.zeros(2, dtype=D), 0.1)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        biased_denoiser(lambda x, s: x, torch.ones(2, dtype=D), -0.1)
    with pytest.raises(ValueError, match="sigmas must be nonincreasing"):
        sample_rd(lambda x, s: x, x, torch.tensor([0.1, 0.5, 1.0], dtype=D))
    mean, cov = _gaussian()
    with pytest.raises(ValueError, match="sigmas must be strictly decreasing and end in 0"):
        ddim_gaussian_error(mean, cov, torch.tensor([2.0, 1.0], dtype=D))
