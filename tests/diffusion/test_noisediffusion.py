"""Tests for paperzoo.diffusion.noisediffusion: lerp, slerp, NoiseDiffusion's latent correction, the pipeline."""

import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.ddim_inversion import invert_ddim
from paperzoo.diffusion.mixture import mixture_on_circle
from paperzoo.diffusion.noisediffusion import (interpolate_images, lerp, noisediffusion_coefficients,
                                               noisediffusion_latent, slerp)
from paperzoo.diffusion.samplers import sample_ddim
from paperzoo.diffusion.schedules import get_sigmas_karras

D = torch.float64


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


# -- lerp and slerp ----------------------------------------------------------------------------------------------
def test_slerp_endpoints_and_orthogonal_closed_form():
    z0, z1 = _randn(5, 3, 4, seed=1), _randn(5, 3, 4, seed=2)
    torch.testing.assert_close(slerp(z0, z1, 0.0), z0)
    torch.testing.assert_close(slerp(z0, z1, 1.0), z1)
    # orthogonal unit rows: slerp is cos/sin of w * pi / 2
    a = torch.tensor([[1.0, 0.0, 0.0]], dtype=D)
    b = torch.tensor([[0.0, 2.0, 0.0]], dtype=D) / 2
    w = 0.3
    expected = math.cos(w * math.pi / 2) * a + math.sin(w * math.pi / 2) * b
    torch.testing.assert_close(slerp(a, b, w), expected)


@settings(max_examples=25, deadline=None)
@given(w=st.floats(0, 1), seed=st.integers(0, 10_000), scale=st.floats(0.1, 10.0))
def test_slerp_keeps_equal_norms(w, seed, scale):
    z0, z1 = _randn(4, 6, seed=seed), _randn(4, 6, seed=seed + 1)
    z0 = scale * z0 / z0.norm(dim=1, keepdim=True)
    z1 = scale * z1 / z1.norm(dim=1, keepdim=True)
    torch.testing.assert_close(slerp(z0, z1, w).norm(dim=1), torch.full((4,), scale, dtype=D))


def test_lerp_and_slerp_norms_of_independent_gaussians():
    d, s = 4096, 3.0
    z0, z1 = s * _randn(8, d, seed=3), s * _randn(8, d, seed=4)
    torch.testing.assert_close(lerp(z0, z1, 0.25), 0.75 * z0 + 0.25 * z1)
    # E||lerp||^2 = d s^2 ((1 - w)^2 + w^2): at w = 1/2 the norm drops by 1/sqrt(2); slerp keeps it
    ratio_lerp = (lerp(z0, z1, 0.5).norm(dim=1) / (s * math.sqrt(d))).mean()
    ratio_slerp = (slerp(z0, z1, 0.5).norm(dim=1) / (s * math.sqrt(d))).mean()
    assert abs(float(ratio_lerp) - 1 / math.sqrt(2)) < 0.02
    assert abs(float(ratio_slerp) - 1) < 0.02


def test_slerp_zero_row_falls_back_to_lerp():
    z0, z1 = torch.zeros(2, 3, dtype=D), _randn(2, 3, seed=5)
    out = slerp(z0, z1, 0.4)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, 0.4 * z1)


# -- NoiseDiffusion's correction ---------------------------------------------------------------------------------
def test_coefficients_match_official_code_values():
    # tmlr-group/NoiseDiffusion @ 31c3bd9, controlnet/cm.py: gamma = 0 and the factor 1.2; at frac = 0.5 the
    # official arithmetic (cot-based) gives alpha = beta = sqrt(1/2), mu = nu = 0.6.
    a, b, mu, nu = noisediffusion_coefficients(0.5)
    assert a == pytest.approx(math.sqrt(0.5)) and b == pytest.approx(math.sqrt(0.5))
    assert mu == pytest.approx(0.6) and nu == pytest.approx(0.6)
    for w, g in [(0.17, 0.0), (0.83, 0.3), (0.5, 0.6)]:
        a, b, mu, nu = noisediffusion_coefficients(w, gamma=g, mu_scale=1.2)
        cot = 1 / math.tan(math.radians(w * 90))  # the official code's l = alpha / beta route
        assert a == pytest.approx(math.sqrt((1 - g * g) * cot * cot / (cot * cot + 1)))
        assert b == pytest.approx(math.sqrt((1 - g * g) / (cot * cot + 1)))
        assert a * a + b * b + g * g == pytest.approx(1.0)
        assert mu + nu == pytest.approx(1.2)


def test_corrected_latent_matches_vp_formula():
    sigma, c = 2.5, 1.5
    s = math.sqrt(1 + sigma**2)
    z0, z1 = sigma * _randn(6, 5, seed=6), sigma * _randn(6, 5, seed=7)
    x0, x1 = _randn(6, 5, seed=8), _randn(6, 5, seed=9)
    a, b, mu, nu = noisediffusion_coefficients(0.3, gamma=0.2)
    eps = torch.randn(6, 5, generator=torch.Generator().manual_seed(11), dtype=D)
    l0, l1 = (z0 / s).clamp(-c, c), (z1 / s).clamp(-c, c)
    vp = (a * l0 + b * l1 + (mu - a) * x0 / s + (nu - b) * x1 / s + 0.2 * (sigma / s) * eps).clamp(-c, c)
    out = noisediffusion_latent(z0, z1, x0, x1, sigma, 0.3, gamma=0.2, clip=c,
                                generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(out, s * vp)


@pytest.mark.parametrize("w,gamma", [(0.5, 0.0), (0.3, 0.4), (0.9, 0.8)])
def test_corrected_latent_is_n0_sigma2_for_gaussian_latents(w, gamma):
    # x = 0, no clamp: z = alpha z0 + beta z1 + gamma sigma eps ~ N(0, sigma^2 I) since alpha^2 + beta^2 + gamma^2 = 1
    n, d, sigma = 4000, 16, 3.0
    z0, z1 = sigma * _randn(n, d, seed=12), sigma * _randn(n, d, seed=13)
    zero = torch.zeros(n, d, dtype=D)
    z = noisediffusion_latent(z0, z1, zero, zero, sigma, w, gamma=gamma, mu_scale=1.0, clip=None,
                              generator=torch.Generator().manual_seed(14))
    sq = z.square().sum(1) / sigma**2  # chi^2_d: mean d, variance 2d
    assert abs(float(sq.mean()) - d) < 4 * math.sqrt(2 * d / n)
    assert abs(float(sq.var()) - 2 * d) < 0.15 * 2 * d
    assert float(z.mean(0).abs().max()) < 4 * sigma / math.sqrt(n)


def test_clamp_second_moment_closed_form():
    # E[clip(Z, b)^2] for Z ~ N(0, s^2), t = b / s: s^2 (erf(t/sqrt2) - 2 t phi(t)) + b^2 erfc(t/sqrt2)
    n, sigma, c = 200_000, 2.0, 0.8
    z0 = sigma * _randn(n, 1, seed=15)
    zero = torch.zeros(n, 1, dtype=D)
    z = noisediffusion_latent(z0, zero, zero, zero, sigma, 0.0, mu_scale=1.0, clip=c)
    b = c * math.sqrt(1 + sigma**2)
    t = b / sigma
    phi = math.exp(-t * t / 2) / math.sqrt(2 * math.pi)
    expected = sigma**2 * (math.erf(t / math.sqrt(2)) - 2 * t * phi) + b * b * math.erfc(t / math.sqrt(2))
    assert float(z.abs().max()) <= b + 1e-12
    assert abs(float(z.square().mean()) - expected) < 0.01 * expected


def test_uncorrected_endpoint_is_the_latent():
    z0, z1, x0, x1 = (_randn(3, 4, seed=k) for k in range(20, 24))
    torch.testing.assert_close(noisediffusion_latent(z0, z1, x0, x1, 1.0, 0.0, mu_scale=1.0, clip=None), z0)
    torch.testing.assert_close(noisediffusion_latent(z0, z1, x0, x1, 1.0, 1.0, mu_scale=1.0, clip=None), z1,
                               atol=1e-12, rtol=0)


# -- the pipeline --------------------------------------------------------------------------------------------------
@functools.cache
def _setup():
    gm = mixture_on_circle(3, 4, radius=2.0, std=0.4)
    g = torch.Generator().manual_seed(30)
    sigmas = get_sigmas_karras(25, 0.002, 2.0).flip(0)[1:]
    return gm, gm.sample(8, generator=g), gm.sample(8, generator=g), sigmas


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_endpoints_reproduce_inputs(method):
    gm, x0, x1, sigmas = _setup()
    down = torch.cat([sigmas.flip(0), sigmas.new_zeros(1)])
    for w, x in [(0.0, x0), (1.0, x1)]:
        out = interpolate_images(gm.denoise, x0, x1, sigmas, w, method=method)
        direct = sample_ddim(gm.denoise, invert_ddim(gm.denoise, x, sigmas), down)
        torch.testing.assert_close(out, direct, atol=1e-10, rtol=0)
        assert float((out - x).square().mean()) < 1e-2  # Euler inversion + decode accuracy at 24 steps


def test_uncorrected_noisediffusion_endpoint_equals_lerp():
    gm, x0, x1, sigmas = _setup()
    a = interpolate_images(gm.denoise, x0, x1, sigmas, 0.0, mu_scale=1.0, clip=None)
    b = interpolate_images(gm.denoise, x0, x1, sigmas, 0.0, method="lerp")
    torch.testing.assert_close(a, b)


def test_midpoints_are_finite_for_every_method():
    gm, x0, x1, sigmas = _setup()
    for method in ("noisediffusion", "slerp", "lerp"):
        mid = interpolate_images(gm.denoise, x0, x1, sigmas, 0.5, method=method, gamma=0.1,
                                 generator=torch.Generator().manual_seed(0))
        assert mid.shape == x0.shape and torch.isfinite(mid).all()


# -- errors ------------------------------------------------------------------------------------------------------
def test_error_messages():
    z = _randn(3, 4)
    with pytest.raises(ValueError, match=r"z1 must have the shape of z0 \(3, 4\), got \(3, 5\)"):
        slerp(z, _randn(3, 5), 0.5)
    with pytest.raises(ValueError, match="weight must be <= 1"):
        lerp(z, z, 1.5)
    with pytest.raises(ValueError, match="gamma must be < 1"):
        noisediffusion_coefficients(0.5, gamma=1.0)
    with pytest.raises(ValueError, match=r"x1 must have the shape of z0"):
        noisediffusion_latent(z, z, z, _randn(2, 4), 1.0, 0.5)
    with pytest.raises(ValueError, match="clip must be > 0"):
        noisediffusion_latent(z, z, z, z, 1.0, 0.5, clip=0.0)
    gm, x0, x1, sigmas = _setup()
    with pytest.raises(ValueError, match="method must be one of"):
        interpolate_images(gm.denoise, x0, x1, sigmas, 0.5, method="cubic")
    with pytest.raises(ValueError, match="sigmas must be nondecreasing"):
        interpolate_images(gm.denoise, x0, x1, sigmas.flip(0), 0.5)
