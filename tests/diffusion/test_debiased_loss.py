"""Debiased (1/sqrt(SNR)) loss weighting: the official code's weights on its schedule, the closed form that makes
the eps, x0 and v losses one sqrt(SNR)-weighted x0 loss, limits and clipping, pinned errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.debiased_loss import debiased_weight, debiased_weighting
from paperzoo.diffusion.min_snr import min_snr_weight
from paperzoo.diffusion.mixture import mixture_on_circle
from paperzoo.diffusion.schedules import (alphas_cumprod_from_betas, betas_cosine, betas_linear,
                                          sigmas_from_alphas_cumprod)
from paperzoo.diffusion.training import denoising_loss

D = torch.float64


def _official_eps_weights(T: int = 1000) -> np.ndarray:
    """The official code's weights, re-derived in numpy from the formulas it uses (yuhuUSTC/Debias @
    5ac612fc87e9962d3f9ecfccc2c69ee47480e2b3, guided_diffusion/gaussian_diffusion.py): the "linear" betas
    linspace(1e-4 * 1000/T, 0.02 * 1000/T, T), snr = 1 / (1 - alphas_cumprod) - 1 in float64, and the weight of
    the per-sample noise MSE 1 / sqrt(snr)."""
    scale = 1000 / T
    betas = np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64)
    snr = 1.0 / (1 - np.cumprod(1 - betas)) - 1
    return 1 / np.sqrt(snr)


@pytest.mark.parametrize("T", [1000, 250])
def test_eps_weights_equal_official_code_formula(T):
    sigma = sigmas_from_alphas_cumprod(alphas_cumprod_from_betas(betas_linear(T, 1e-4 * 1000 / T, 0.02 * 1000 / T)))
    expected = torch.from_numpy(_official_eps_weights(T))
    torch.testing.assert_close(debiased_weight(sigma), expected, rtol=1e-9, atol=0)
    torch.testing.assert_close(debiased_weighting()(sigma), expected, rtol=1e-9, atol=0)


def test_paper_schedule_range():
    # DDPM's linear schedule: the first step's weight is sqrt(1e-4 / 0.9999); the last one's about 157
    sigma = sigmas_from_alphas_cumprod(alphas_cumprod_from_betas(betas_linear()))
    w = debiased_weight(sigma)
    assert float(w[0]) == pytest.approx((1e-4 / (1 - 1e-4)) ** 0.5, rel=1e-12)
    assert 150 < float(w[-1]) < 165 and bool((w.diff() > 0).all())


def test_closed_forms_limits_and_clipping():
    inf = float("inf")
    sigma = torch.tensor([0.0, 0.1, 0.5, 1.0, 2.0, inf], dtype=D)   # SNR inf, 100, 4, 1, 1/4, 0
    torch.testing.assert_close(debiased_weight(sigma[:-1]), sigma[:-1])
    torch.testing.assert_close(debiased_weight(sigma[1:], "x0"), torch.tensor([10, 2, 1, 0.5, 0], dtype=D))
    torch.testing.assert_close(debiased_weight(sigma, "v"),
                               torch.tensor([0, 0.1 / 1.01, 0.4, 0.5, 0.4, 0], dtype=D))
    torch.testing.assert_close(debiased_weight(sigma, max_weight=1.0), torch.tensor([0, 0.1, 0.5, 1, 1, 1], dtype=D))
    torch.testing.assert_close(debiased_weight(sigma, "x0", max_weight=4.0),
                               torch.tensor([4, 4, 2, 1, 0.5, 0], dtype=D))
    assert debiased_weight(torch.zeros(0, dtype=D)).shape == (0,)
    assert debiased_weight(torch.tensor(0.3, dtype=torch.float32)).dtype == torch.float32
    assert debiased_weight(torch.ones(2, 3, dtype=D), "v").shape == (2, 3)
    hook = debiased_weighting("x0", 3.0)
    assert (hook.prediction, hook.max_weight) == ("x0", 3.0)


def test_against_min_snr_and_cosine_schedule():
    # On the x0 error the uniform eps loss weighs SNR; Min-SNR-5 caps that at 5, the debiased loss takes its root.
    # So sqrt(SNR) is above min(SNR, 5) for SNR > 25 (Min-SNR damps near-clean levels more) and for SNR < 1, and
    # below it in between; on the eps loss Min-SNR's weight stays 1 for SNR <= 5 while the debiased one is sigma.
    sigma = sigmas_from_alphas_cumprod(alphas_cumprod_from_betas(betas_cosine()))
    snr = sigma**-2
    deb, ms = debiased_weight(sigma, "x0"), min_snr_weight(sigma, 5.0, "x0")
    above = (snr > 25) | (snr < 1)
    middle = (snr > 1) & (snr < 25)
    assert bool(above.any()) and bool(middle.any())
    assert bool((deb[above] > ms[above]).all()) and bool((deb[middle] < ms[middle]).all())
    torch.testing.assert_close(debiased_weight(sigma), snr.rsqrt(), rtol=1e-12, atol=0)


class _FromDenoiser(torch.nn.Module):
    """A network whose output is ``prediction`` as implied by a given VE denoiser, in input convention ``space``."""

    def __init__(self, denoise, prediction, space):
        super().__init__()
        self.denoise, self.prediction, self.space = denoise, prediction, space

    def forward(self, x_in, s):
        col = s[:, None]
        scale = (1 + col.square()).rsqrt() if self.space == "vp" else torch.ones_like(col)
        x = x_in / scale
        x0 = self.denoise(x, s)
        eps = (x - x0) / col
        if self.prediction == "eps":
            return eps
        if self.prediction == "x0":
            return x0
        return scale * (eps - col * x0)   # v = alpha_t eps - sigma_t x0, alpha_t = scale, sigma_t = sigma scale


@pytest.mark.parametrize("max_weight", [None, 2.0])
def test_weighted_losses_are_one_sqrt_snr_x0_loss(max_weight):
    # the debiased eps, x0 and v losses of one denoiser are all the sqrt(SNR)-weighted x0 loss (Section 3's
    # x0 error -sigma (eps_hat - eps)); with clipping the three differ, so only the unclipped case is an identity
    gm = mixture_on_circle(4, 2, radius=1.5, std=0.3)
    g = torch.Generator().manual_seed(0)
    n = 64
    x0 = gm.sample(n, generator=g)
    sigma = torch.logspace(-2, 2, n, dtype=D)
    noise = torch.randn(n, 2, generator=g, dtype=D)

    def denoise(x, s):  # imperfect, so the loss is not zero
        return gm.denoise(x, s) + 0.1 * torch.tanh(x)

    x = x0 + sigma[:, None] * noise
    err = (denoise(x, sigma) - x0).square().mean(-1)
    losses = {}
    for prediction, space in (("eps", "ve"), ("eps", "vp"), ("x0", "ve"), ("v", "vp")):
        net = _FromDenoiser(denoise, prediction, space)
        losses[prediction, space] = denoising_loss(net, x0, sigma, weighting=debiased_weighting(prediction, max_weight),
                                                   noise=noise)
    if max_weight is None:
        for value in losses.values():
            torch.testing.assert_close(value, (err / sigma).mean(), rtol=1e-10, atol=1e-12)
    else:  # the clipped eps loss: min(sigma, m) / sigma^2 on the x0 error
        expected = (sigma.clamp(max=max_weight) / sigma.square() * err).mean()
        torch.testing.assert_close(losses["eps", "vp"], expected, rtol=1e-10, atol=1e-12)
        assert abs(float(losses["x0", "ve"] - losses["eps", "vp"])) > 1e-3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=20))
def test_property_one_x0_weight_in_three_targets(sigmas):
    sigma = torch.tensor(sigmas, dtype=D)
    snr = sigma**-2
    w_eps, w_x0, w_v = (debiased_weight(sigma, p) for p in ("eps", "x0", "v"))
    torch.testing.assert_close(w_eps * snr, w_x0, rtol=1e-12, atol=0)
    torch.testing.assert_close(w_v * (snr + 1), w_x0, rtol=1e-12, atol=0)
    torch.testing.assert_close(w_eps * w_x0, torch.ones_like(sigma), rtol=1e-12, atol=0)
    assert bool((w_v <= 0.5 + 1e-15).all())
    order = sigma.argsort()
    assert bool((w_eps[order].diff() >= 0).all()) and bool((w_x0[order].diff() <= 0).all())


def test_bad_input():
    s = torch.ones(3, dtype=D)
    with pytest.raises(ValueError, match="sigma must not contain NaN"):
        debiased_weight(torch.tensor([1.0, float("nan")], dtype=D))
    with pytest.raises(ValueError, match="sigma must be >= 0 entrywise"):
        debiased_weight(torch.tensor([1.0, -1.0], dtype=D))
    with pytest.raises(ValueError, match=r"sigma = inf \(zero SNR\) has an infinite 'eps' weight; pass max_weight"):
        debiased_weight(torch.tensor([1.0, float("inf")], dtype=D))
    with pytest.raises(ValueError, match=r"sigma = 0 \(infinite SNR\) has an infinite 'x0' weight; pass max_weight"):
        debiased_weight(torch.tensor([0.0, 1.0], dtype=D), "x0")
    with pytest.raises(ValueError, match=r"prediction must be one of \['eps', 'x0', 'v'\], got 'flow'"):
        debiased_weight(s, "flow")
    with pytest.raises(ValueError, match=r"max_weight must be > 0.0, got -1.0"):
        debiased_weight(s, max_weight=-1.0)
    with pytest.raises(TypeError, match="sigma must be a torch.Tensor"):
        debiased_weight([1.0, 2.0])
    with pytest.raises(ValueError, match=r"prediction must be one of \['eps', 'x0', 'v'\], got 'epsilon'"):
        debiased_weighting("epsilon")
    with pytest.raises(ValueError, match="max_weight must be > 0.0"):
        debiased_weighting("eps", 0.0)
