"""Tests of SDS / SDI (paperzoo.diffusion.sdi) on exact Gaussian teachers."""

from __future__ import annotations

import pytest
import torch

from paperzoo.diffusion.mixture import GaussianMixture
from paperzoo.diffusion.samplers import sample_ddim
from paperzoo.diffusion.schedules import (alphas_cumprod_from_betas, append_zero, betas_scaled_linear,
                                          sigmas_from_alphas_cumprod)
from paperzoo.diffusion.sdi import (distillation_gradient, distillation_timesteps, score_distillation,
                                                   sdi_inversion_sigmas, sdi_noise)

D64 = torch.float64


def _gaussian():
    m = torch.tensor([0.5, -1.0], dtype=D64)
    c = torch.tensor([[1.0, 0.3], [0.3, 0.2]], dtype=D64)
    return GaussianMixture(m[None], c[None]), m, c


def _ac():
    return alphas_cumprod_from_betas(betas_scaled_linear()).to(D64)


def test_sds_gradient_is_the_closed_form_drift():
    gm, m, c = _gaussian()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 2, generator=g, dtype=D64)
    eps = torch.randn(7, 2, generator=g, dtype=D64)
    sigma = 0.8
    # D is affine for a Gaussian, so the antithetic pair gives E_eps[x - D(x + sigma eps)] exactly
    mean = 0.5 * (distillation_gradient(gm.denoise, x, sigma, eps) + distillation_gradient(gm.denoise, x, sigma, -eps))
    expected_denoised = m + (x - m) @ torch.linalg.solve(c + sigma**2 * torch.eye(2, dtype=D64), c).T
    torch.testing.assert_close(mean, x - expected_denoised)
    drift = (x - m) @ (sigma**2 * torch.linalg.inv(c + sigma**2 * torch.eye(2, dtype=D64))).T
    torch.testing.assert_close(mean, drift)


def test_sds_weighting_is_dreamfusions_noise_residual():
    gm, _, _ = _gaussian()
    g = torch.Generator().manual_seed(1)
    x, eps = torch.randn(5, 2, generator=g, dtype=D64), torch.randn(5, 2, generator=g, dtype=D64)
    sigma = torch.tensor(1.7, dtype=D64)
    a = 1 / (1 + sigma**2)
    x_vp = a.sqrt() * (x + sigma * eps)
    eps_hat = (x_vp - a.sqrt() * gm.denoise(x + sigma * eps, sigma.expand(5))) / (1 - a).sqrt()
    torch.testing.assert_close(distillation_gradient(gm.denoise, x, float(sigma), eps, weighting="sds"),
                               (1 - a) * (eps_hat - eps))


def test_sdi_with_the_exact_ddim_noise_is_a_ddim_trajectory():
    """The paper's equivalence: with the noise DDIM's state carried at the previous level and step 1, the
    distillation iterate is DDIM's x0 prediction at every update."""
    gm, m, c = _gaussian()
    ac = _ac()
    n = 12
    sig = sigmas_from_alphas_cumprod(ac)[distillation_timesteps(n, 1000)]
    y0 = sig[0] * torch.randn(6, 2, generator=torch.Generator().manual_seed(2), dtype=D64)
    ddim = []
    sample_ddim(gm.denoise, y0, append_zero(sig), callback=lambda d: ddim.append(d["denoised"]))
    x_init = torch.zeros(6, 2, dtype=D64)

    def ddim_noise(x, sigma, i):
        if i == 0:
            return (y0 - x) / sigma
        s = sig[i - 1]  # invert the denoiser at the previous level: y - m = (C + s^2) C^{-1} (x0hat - m)
        y = m + (x - m) @ ((c + s**2 * torch.eye(2, dtype=D64)) @ torch.linalg.inv(c)).T
        return (y - x) / s

    sdi = []
    score_distillation(gm.denoise, x_init, ac, n_updates=n, noise=ddim_noise, callback=lambda d: sdi.append(d["x"]))
    assert len(sdi) == len(ddim) == n
    for a, b in zip(sdi, ddim):
        torch.testing.assert_close(a, b)


def test_sdi_noise_one_step_is_the_euler_inversion():
    gm, _, _ = _gaussian()
    x = gm.sample(4, generator=torch.Generator().manual_seed(3))
    s = torch.tensor([0.1, 2.0], dtype=D64)
    up = x + (s[1] - s[0]) * (x - gm.denoise(x, s[0].expand(4))) / s[0]
    torch.testing.assert_close(sdi_noise(gm.denoise, x, s, eta=0.0), (up - x) / s[1])


def test_inversion_levels_and_timesteps():
    ac = _ac()
    sig = sigmas_from_alphas_cumprod(ac)
    torch.testing.assert_close(sdi_inversion_sigmas(ac, 500), sig[[1, 101, 201, 301, 401, 500]])
    torch.testing.assert_close(sdi_inversion_sigmas(ac, 500, delta=60), sig[[1, 101, 201, 301, 401, 560]])
    torch.testing.assert_close(sdi_inversion_sigmas(ac, 990, delta=50), sig[[1, 101, 201, 301, 401, 501, 601, 701,
                                                                            801, 901, 999]])
    t = distillation_timesteps(4, 1000)
    assert t.tolist()[1:] == [740, 500, 260] and t[0] in (979, 980)
    assert bool((t[1:] < t[:-1]).all())


def test_sds_with_small_steps_collapses_to_the_mode_and_sdi_keeps_more_spread_than_that():
    gm = GaussianMixture(torch.zeros(1, 2, dtype=D64), torch.eye(2, dtype=D64)[None])
    x = torch.randn(400, 2, generator=torch.Generator().manual_seed(4), dtype=D64)
    sds = score_distillation(gm.denoise, x, _ac(), n_updates=60, noise="random", lr=0.1,
                             generator=torch.Generator().manual_seed(5))
    assert float(sds.var(0).mean()) < 0.05 * float(x.var(0).mean())
    assert sds.shape == x.shape and not torch.equal(sds, x)


def test_errors():
    gm, _, _ = _gaussian()
    x = torch.zeros(3, 2, dtype=D64)
    ac = _ac()
    with pytest.raises(ValueError, match=r"noise must have the shape of x \(3, 2\), got \(3, 1\)"):
        distillation_gradient(gm.denoise, x, 1.0, torch.zeros(3, 1, dtype=D64))
    with pytest.raises(ValueError, match=r"noise must be one of \['inverted', 'random'\] or a callable, got 'ddim'"):
        score_distillation(gm.denoise, x, ac, n_updates=2, noise="ddim")
    with pytest.raises(ValueError, match=r"noise must return a tensor of the shape of x \(3, 2\), got \(3,\)"):
        score_distillation(gm.denoise, x, ac, n_updates=2, noise=lambda x, s, i: x[:, 0])
    with pytest.raises(ValueError, match=r"t must lie in \(1, 1000\)"):
        sdi_inversion_sigmas(ac, 1)
    with pytest.raises(ValueError, match=r"t_range must be \(low, high\) with low <= high"):
        distillation_timesteps(3, 1000, (0.9, 0.1))
    with pytest.raises(ValueError, match=r"sigmas must be nondecreasing"):
        sdi_noise(gm.denoise, x, torch.tensor([1.0, 0.5], dtype=D64))
    with pytest.raises(ValueError, match=r"model must return a tensor of the shape of x"):
        score_distillation(lambda y, s: y[:, :1], x, ac, n_updates=2, noise="random")
