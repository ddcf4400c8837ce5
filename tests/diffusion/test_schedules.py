"""Schedules against k-diffusion and diffusers; conversions between schedule forms."""

from __future__ import annotations

import pytest
import torch

from paperzoo.diffusion import (alphas_cumprod_from_betas, betas_cosine, betas_from_alphas_cumprod, betas_linear,
                                betas_scaled_linear, get_sigmas_exponential, get_sigmas_karras,
                                sigmas_from_alphas_cumprod, snr_from_sigmas)
from tests.diffusion.references import k_diffusion_sampling

D = torch.float64


def test_continuous_schedules_match_k_diffusion():
    K = k_diffusion_sampling()
    torch.testing.assert_close(get_sigmas_karras(17, 0.002, 80.0, rho=7.0),
                               K.get_sigmas_karras(17, 0.002, 80.0, rho=7.0).to(D), rtol=1e-6, atol=0)
    torch.testing.assert_close(get_sigmas_exponential(9, 0.03, 14.6),
                               K.get_sigmas_exponential(9, 0.03, 14.6).to(D), rtol=1e-6, atol=0)
    s = get_sigmas_karras(5, 0.1, 10.0)
    assert s[0] == pytest.approx(10.0) and s[-2] == pytest.approx(0.1) and s[-1] == 0 and s.dtype == D


@pytest.mark.parametrize("name,ours", [("linear", betas_linear), ("scaled_linear", lambda: betas_scaled_linear()),
                                       ("squaredcos_cap_v2", betas_cosine)])
def test_betas_match_diffusers(name, ours):
    from diffusers import DDPMScheduler

    kw = dict(beta_start=0.00085, beta_end=0.012) if name == "scaled_linear" else {}
    theirs = DDPMScheduler(num_train_timesteps=1000, beta_schedule=name, **kw).betas.to(D)
    torch.testing.assert_close(ours(), theirs, rtol=2e-6, atol=1e-9)  # diffusers builds them in float32


def test_schedule_conversions_round_trip():
    betas = betas_linear()
    ac = alphas_cumprod_from_betas(betas)
    torch.testing.assert_close(betas_from_alphas_cumprod(ac), betas, rtol=1e-9, atol=1e-12)
    sig = sigmas_from_alphas_cumprod(ac)
    torch.testing.assert_close(1 / (1 + sig**2), ac, rtol=1e-12, atol=0)
    torch.testing.assert_close(snr_from_sigmas(sig), ac / (1 - ac), rtol=1e-10, atol=0)
    assert bool((sig[1:] > sig[:-1]).all())


def test_bad_input():
    with pytest.raises(ValueError, match="sigma_min must be <= sigma_max"):
        get_sigmas_karras(5, 2.0, 1.0)
    with pytest.raises(ValueError, match="beta_end must be < 1.0"):
        betas_linear(10, 0.1, 1.5)
    with pytest.raises(ValueError, match="betas must be <= 1"):
        alphas_cumprod_from_betas(torch.tensor([0.5, 1.5], dtype=D))
    with pytest.raises(ValueError, match="alphas_cumprod must be nonincreasing"):
        betas_from_alphas_cumprod(torch.tensor([0.5, 0.9], dtype=D))
