"""Predictor-corrector guidance and the closed forms of CFG on Gaussians (Bradley & Nakkiran, 2024)."""

from __future__ import annotations

import math

import pytest
import torch

from paperzoo.diffusion.guidance import class_conditional, classifier_free_guidance
from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle
from paperzoo.diffusion.predictor_corrector_guidance import (cfg_gaussian_output, pcg_corrector, pcg_gamma, pcg_step,
                                                              sample_pcg, tilted_gaussian, tilted_log_density)
from paperzoo.diffusion.samplers import sample_ddim, sample_ddpm, sample_heun
from paperzoo.diffusion.schedules import get_sigmas_karras

D = torch.float64


def _t(*v):
    return torch.tensor(v, dtype=D)


def _gaussians(mc=1.0, vc=0.25, mu=0.0, vu=1.0):
    return GaussianMixture(_t([mc]), _t([[vc]])), GaussianMixture(_t([mu]), _t([[vu]]))


def test_tilted_gaussian_closed_form_and_grid():
    mean, cov = tilted_gaussian(_t(1.0), _t([0.25]), _t(0.0), _t([1.0]), 3.0)
    # precision 3/0.25 - 2/1 = 10, mean (3 * 1/0.25) / 10 = 1.2
    torch.testing.assert_close(mean, _t(1.2))
    torch.testing.assert_close(cov, _t([0.1]))
    cond, uncond = _gaussians()
    grid = torch.linspace(-4, 6, 4001, dtype=D)
    dens = tilted_log_density(cond, uncond, 3.0, grid[:, None]).exp()
    dens = dens / torch.trapezoid(dens, grid)
    m = torch.trapezoid(grid * dens, grid)
    v = torch.trapezoid((grid - m) ** 2 * dens, grid)
    assert abs(float(m) - 1.2) < 1e-6 and abs(float(v) - 0.1) < 1e-6
    # full covariance: gamma = 1 is the conditional, gamma = 0 the unconditional
    cc, cu = _t([1.0, 0.3], [0.3, 0.5]), _t([2.0, 0.0], [0.0, 1.0])
    torch.testing.assert_close(tilted_gaussian(_t(1.0, 2.0), cc, _t(0.0, 0.0), cu, 1.0)[1], cc)
    torch.testing.assert_close(tilted_gaussian(_t(1.0, 2.0), cc, _t(0.0, 0.0), cu, 0.0)[0], _t(0.0, 0.0))


def test_cfg_gaussian_output_limits():
    args = (_t(0.0), _t(0.25), _t(0.0), _t(1.0))
    # w = 1: both samplers give the conditional law (DDIM up to the finite start's shrink)
    for sampler in ("ddim", "ddpm"):
        m, v = cfg_gaussian_output(_t(1.0), _t(0.25), _t(0.0), _t(1.0), 1.0, sampler=sampler, sigma_max=1e3)
        assert abs(float(m) - 1.0) < 1e-3 and abs(float(v) - 0.25) < 1e-3
    # DDIM as sigma_max grows: std s_c^w s_u^(1-w) (geometric), not the tilted harmonic precision
    _, v = cfg_gaussian_output(*args, 3.0, sampler="ddim", sigma_max=1e4)
    assert abs(float(v) - (0.5**3) ** 2) < 1e-6
    # DDPM, w = 3, equal means: v(0) = Phi(0)^4 [v(U)/Phi(U)^4 + int_0^U Phi^-4] with Phi^4 = (a+u)^6 (b+u)^-4
    _, v = cfg_gaussian_output(*args, 3.0, sampler="ddpm", sigma_max=80.0)
    from scipy.integrate import quad
    phi4 = lambda u: (0.25 + u) ** 6 / (1 + u) ** 4  # noqa: E731
    expect = phi4(0) * (6400 / phi4(6400) + quad(lambda u: 1 / phi4(u), 0, 6400, limit=200)[0])
    assert abs(float(v) - expect) < 1e-10
    assert abs(float(v) - 0.0666) < 1e-3  # != tilted 0.1, != DDIM 0.0156


def test_cfg_ddim_closed_form_matches_the_sampler():
    cond, uncond = _gaussians()
    sigmas = get_sigmas_karras(200, 0.002, 20.0)
    x = 20.0 * torch.linspace(-2, 2, 101, dtype=D)[:, None]    # the ODE is an affine map: check it on a line
    out = sample_heun(classifier_free_guidance(cond.denoise, uncond.denoise, 3.0), x, sigmas)
    slope = (out[-1] - out[0]) / (x[-1] - x[0])
    intercept = out[50]
    m, v = cfg_gaussian_output(_t(1.0), _t(0.25), _t(0.0), _t(1.0), 3.0, sampler="ddim", sigma_max=20.0,
                               start_mean=0.0, start_var=400.0)
    assert abs(float(slope) * 20.0 - math.sqrt(float(v))) < 1e-3 * math.sqrt(float(v))
    assert abs(float(intercept) - float(m)) < 1e-3


def test_cfg_ddpm_closed_form_matches_the_sampler():
    cond, uncond = _gaussians()
    sigmas = get_sigmas_karras(600, 0.002, 20.0)  # ancestral sampling converges at first order in the step
    g = torch.Generator().manual_seed(0)
    x = 20.0 * torch.randn(8000, 1, generator=g, dtype=D)
    out = sample_ddpm(classifier_free_guidance(cond.denoise, uncond.denoise, 3.0), x, sigmas, generator=g)
    m, v = cfg_gaussian_output(_t(1.0), _t(0.25), _t(0.0), _t(1.0), 3.0, sampler="ddpm", sigma_max=20.0)
    se = math.sqrt(float(v) / 8000)
    assert abs(float(out.mean()) - float(m)) < 5 * se + 2e-3
    assert abs(float(out.var()) / float(v) - 1) < 0.07
    assert abs(float(out.var()) / 0.1 - 1) > 0.25  # not the tilted law


def test_pcg_without_corrector_is_ddim_and_counts_evaluations():
    gm = mixture_on_circle(3, 2, radius=2.0, std=0.3)
    c0, _ = class_conditional(gm, [0, 1, 1])
    sigmas = get_sigmas_karras(12, 0.01, 10.0)
    x = 10.0 * torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=D)
    calls = []

    def corrector(z, s):
        calls.append(1)
        return gm.denoise(z, s)

    out = sample_pcg(c0.denoise, x, sigmas, corrector=corrector, n_corrector=0)
    assert torch.equal(out, sample_ddim(c0.denoise, x, sigmas, eta=0.0)) and not calls
    sample_pcg(c0.denoise, x, sigmas, corrector=corrector, n_corrector=3, generator=torch.Generator())
    assert len(calls) == 3 * 11  # no corrector on the last step (to sigma = 0)


def test_pcg_equals_cfg_ddpm_in_the_sde_limit_on_a_gaussian():
    cond, uncond = _gaussians()
    sigmas = get_sigmas_karras(200, 0.002, 20.0)
    g = torch.Generator().manual_seed(2)
    x = 20.0 * torch.randn(8000, 1, generator=g, dtype=D)
    out = sample_pcg(cond.denoise, x, sigmas, corrector=pcg_corrector(cond.denoise, uncond.denoise, 3.0), generator=g)
    m, v = cfg_gaussian_output(_t(1.0), _t(0.25), _t(0.0), _t(1.0), 3.0, sampler="ddpm", sigma_max=20.0)
    assert abs(float(out.mean()) - float(m)) < 0.01
    assert abs(float(out.var()) / float(v) - 1) < 0.06
    assert pcg_gamma(3.0) == 5.0


def test_errors_are_pinned():
    cond, uncond = _gaussians()
    sigmas = get_sigmas_karras(4, 0.01, 1.0)
    x = torch.zeros(2, 1, dtype=D)
    with pytest.raises(ValueError, match="n_corrector must be >= 0"):
        sample_pcg(cond.denoise, x, sigmas, corrector=uncond.denoise, n_corrector=-1)
    with pytest.raises(ValueError, match="step_scale must be >= 0"):
        pcg_step(uncond.denoise, step_scale=-1.0)
    with pytest.raises(TypeError, match="corrector must be callable"):
        sample_pcg(cond.denoise, x, sigmas, corrector=3)
    with pytest.raises(ValueError, match="gamma must make gamma inv"):
        tilted_gaussian(_t(0.0), _t([1.0]), _t(0.0), _t([0.25]), 3.0)  # precision 3 - 8 < 0
    with pytest.raises(ValueError, match="sampler must be one of"):
        cfg_gaussian_output(_t(0.0), _t(1.0), _t(0.0), _t(1.0), 2.0, sampler="euler")
    with pytest.raises(ValueError, match="var_c and var_u must be > 0"):
        cfg_gaussian_output(_t(0.0), _t(0.0), _t(0.0), _t(1.0), 2.0)
    with pytest.raises(ValueError, match="cond must have the dimension of uncond"):
        tilted_log_density(mixture_on_circle(2, 2), cond, 2.0, torch.zeros(3, 1, dtype=D))
