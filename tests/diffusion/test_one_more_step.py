"""Tests for One More Step (paper 156): the oracle step equals DDIM from inf, training recovers the mean."""

import math

import pytest
import torch

from paperzoo.diffusion.mixture import mixture_on_circle
from paperzoo.diffusion.one_more_step import (one_more_step, one_more_step_denoiser, oms_loss, sample_one_more_step,
                                              train_one_more_step)
from paperzoo.diffusion.samplers import sample_ddim
from paperzoo.diffusion.training import MLPDenoiser
from paperzoo.diffusion.zero_terminal_snr import zero_snr_sigmas

GM = mixture_on_circle(4, 2, radius=1.0, std=0.1)
FLAWED = zero_snr_sigmas(10, zero_snr=False, spacing="leading", steps_offset=1)


def test_oracle_oms_then_ddim_equals_ddim_from_inf_on_extended_schedule():
    eps = torch.randn(128, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    extended = torch.cat([torch.tensor([math.inf], dtype=torch.float64), FLAWED])
    reference = sample_ddim(GM.denoise, eps, extended)
    two_stage = sample_ddim(GM.denoise, one_more_step(GM.denoise, eps, float(FLAWED[0])), FLAWED)
    assert torch.equal(sample_one_more_step(GM.denoise, GM.denoise, eps, FLAWED), reference)
    torch.testing.assert_close(two_stage, reference, rtol=0, atol=1e-12)


def test_step_closed_form_is_mean_plus_sigma_T_noise():
    eps = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(one_more_step(GM.denoise, eps, 13.0), GM.mean() + 13.0 * eps)


def test_training_recovers_data_mean_at_inf():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    target = torch.tensor([0.7, -0.4], dtype=torch.float64)
    net = MLPDenoiser(2, 32, 2, prediction="v").double()
    train_one_more_step(net, lambda n, gen: target + 0.5 * torch.randn(n, 2, generator=gen, dtype=torch.float64),
                        steps=300, batch_size=256, lr=3e-3, generator=g)
    eps = torch.randn(512, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        x0 = net.denoiser()(eps, torch.full((512,), math.inf, dtype=torch.float64))
    assert (x0.mean(0) - target).abs().max() < 0.05


def test_errors():
    eps = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="sigmas\\[0\\] must be the original schedule's finite first level"):
        sample_one_more_step(GM.denoise, GM.denoise, eps, torch.tensor([math.inf, 1.0, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="oms must return a tensor of the shape of x"):
        one_more_step(lambda x, s: x[:, :1], eps, 3.0)
    with pytest.raises(ValueError, match="not mixed"):
        one_more_step_denoiser(GM.denoise, GM.denoise)(eps, torch.tensor([math.inf, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="network must predict v"):
        oms_loss(MLPDenoiser(2, 8, 1, prediction="eps").double(), eps)
    with pytest.raises(ValueError, match="noise must have d = 2 \\(from x0\\)"):
        oms_loss(MLPDenoiser(2, 8, 1, prediction="v").double(), eps, noise=torch.zeros(4, 3, dtype=torch.float64))
