"""Gamma schedules and input scaling (Chen, 2023): closed forms of Algorithm 1, input scaling as a log-SNR shift,
denoiser and sampler equivalence on the exact mixture, the wrapped network's input, and pinned errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.mixture import mixture_on_circle
from paperzoo.diffusion.noise_scheduling import (GammaSchedule, ScaledInputNetwork, gamma_cosine, gamma_linear,
                                                 gamma_sigmoid, noisy_input)
from paperzoo.diffusion.samplers import sample_ddpm, sample_euler

D = torch.float64
T = torch.linspace(0, 1, 11, dtype=D)


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_closed_forms():
    assert torch.allclose(gamma_cosine(T), torch.cos(T * math.pi / 2).square().clamp(1e-9, 1), atol=1e-15)
    assert torch.allclose(gamma_linear(T), (1 - T).clamp(1e-9, 1))
    # a scalar re-derivation of the rescaled cosine (start 0.2, tau 2) and sigmoid (start 0, end 3, tau 0.5)
    for t in (0.0, 0.3, 0.7, 1.0):
        v = [math.cos(u * math.pi / 2) ** 4 for u in (0.2, 1.0, 0.2 + t * 0.8)]
        expect = max((v[1] - v[2]) / (v[1] - v[0]), 1e-9)
        assert float(gamma_cosine(torch.tensor(t, dtype=D), 0.2, 1.0, 2.0)) == pytest.approx(expect, rel=1e-12)
        w = [_sigmoid(u / 0.5) for u in (0.0, 3.0, 3 * t)]
        expect = max((w[1] - w[2]) / (w[1] - w[0]), 1e-9)
        assert float(gamma_sigmoid(torch.tensor(t, dtype=D), 0.0, 3.0, 0.5)) == pytest.approx(expect, rel=1e-12)
    for fn in (gamma_cosine, gamma_sigmoid, gamma_linear):
        g = fn(T)
        assert float(g[0]) == 1.0 and float(g[-1]) == 1e-9
        assert bool((g[1:] <= g[:-1]).all())


@settings(max_examples=40, deadline=None)
@given(b=st.floats(0.05, 8.0), t=st.floats(0.01, 0.99), kind=st.sampled_from(["cosine", "sigmoid", "linear"]))
def test_input_scale_is_a_logsnr_shift(b, t, kind):
    tt = torch.tensor([t], dtype=D)
    plain, scaled = GammaSchedule(kind), GammaSchedule(kind, input_scale=b)
    assert torch.allclose(scaled.logsnr(tt), plain.logsnr(tt) + 2 * math.log(b), rtol=1e-12, atol=1e-12)
    assert torch.allclose(scaled.sigma(tt), plain.sigma(tt) / b, rtol=1e-12)
    # VE level <-> log-SNR: lambda = -2 log sigma
    assert torch.allclose(scaled.logsnr(tt), -2 * scaled.sigma(tt).log(), rtol=1e-10, atol=1e-10)


def test_sampling_and_training_levels():
    s = GammaSchedule("sigmoid", input_scale=0.5)
    sig = s.sampling_sigmas(8)
    assert sig.shape == (9,) and float(sig[-1]) == 0.0 and bool((sig[1:] < sig[:-1]).all())
    assert float(sig[0]) == pytest.approx(math.sqrt((1 - 1e-9) / 1e-9) / 0.5)
    t = 1 - torch.arange(9, dtype=D) / 8
    assert torch.allclose(sig, s.sigma(t))
    draws = s.sample_sigmas(20000, torch.Generator().manual_seed(0))
    # t ~ U[0, 1): the median level is sigma(1/2)
    assert float(draws.median()) == pytest.approx(float(s.sigma(torch.tensor(0.5, dtype=D))), rel=0.05)
    assert GammaSchedule(dtype=torch.float32)(4, None).dtype == torch.float32


def test_scaled_data_denoiser_equivalence():
    gm = mixture_on_circle(4, 3, radius=1.0, std=0.2)
    b = 0.4
    gmb = gm.marginal(b, 0.0)                      # the law of b x0
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(1), dtype=D) * 2
    sigma = torch.rand(50, generator=torch.Generator().manual_seed(2), dtype=D) * 3 + 0.05
    assert torch.allclose(gmb.denoise(b * x, b * sigma), b * gm.denoise(x, sigma), atol=1e-12)


def test_scaled_sampling_equals_shifted_schedule():
    """Sampling b x0 on gamma's levels and dividing by b is sampling x0 on the levels / b (Euler and DDPM)."""
    gm = mixture_on_circle(4, 2, radius=1.0, std=0.2)
    b = 0.3
    plain = GammaSchedule("cosine").sampling_sigmas(10)
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=D)
    shifted = GammaSchedule("cosine", input_scale=b).sampling_sigmas(10)
    for sampler in (sample_euler, sample_ddpm):
        on_scaled = sampler(gm.marginal(b, 0.0).denoise, plain[0] * z, plain,
                            generator=torch.Generator().manual_seed(3)) / b
        direct = sampler(gm.denoise, shifted[0] * z, shifted, generator=torch.Generator().manual_seed(3))
        assert torch.allclose(on_scaled, direct, atol=1e-8)


def test_noisy_input_and_wrapped_network():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 4, generator=g, dtype=D), torch.randn(6, 4, generator=g, dtype=D)
    gamma = torch.rand(6, generator=g, dtype=D) * 0.9 + 0.05
    b = 0.5
    raw = noisy_input(x0, eps, gamma, b, normalize=None)
    assert torch.allclose(raw, gamma[:, None].sqrt() * b * x0 + (1 - gamma[:, None]).sqrt() * eps)
    assert torch.allclose(noisy_input(x0, eps, gamma, b), raw / (b * b * gamma[:, None] + 1 - gamma[:, None]).sqrt())
    assert torch.allclose(noisy_input(x0, eps, gamma, b, normalize="sample").std(dim=-1), torch.ones(6, dtype=D))

    # An oracle eps network on the paper's (unit-normalized) input: the wrapper's denoiser is the exact one.
    gm = mixture_on_circle(3, 4, radius=1.0, std=0.3)
    gmb = gm.marginal(b, 0.0)
    seen = {}

    def oracle(x_in, sigma):                        # sigma: the VE level of the unscaled data
        s = sigma[:, None]
        gam = 1 / (1 + (b * s).square())
        x_t = x_in * (b * b * gam + 1 - gam).sqrt()
        y = x_t / gam.sqrt()                        # = b x0 + (b sigma) eps
        seen["x_in"] = x_in
        return (y - gmb.denoise(y, b * sigma)) / (b * s)

    class Oracle(torch.nn.Module):
        def forward(self, x_in, sigma):
            return oracle(x_in, sigma)

    net = ScaledInputNetwork(Oracle(), b)
    sigma = torch.rand(6, generator=g, dtype=D) * 2 + 0.1
    x = x0 + sigma[:, None] * eps
    assert torch.allclose(net.denoiser()(x, sigma), gm.denoise(x, sigma), atol=1e-10)
    # with unit normalization the input is x / sqrt(1 + sigma^2), whatever b (paperzoo's "vp" space)
    assert torch.allclose(seen["x_in"], x / (1 + sigma[:, None].square()).sqrt())
    gam = 1 / (1 + (b * sigma).square())
    assert torch.allclose(seen["x_in"], noisy_input(x0, eps, gam, b))


def test_errors():
    with pytest.raises(ValueError, match="t must be <= 1"):
        gamma_cosine(torch.tensor([1.5], dtype=D))
    with pytest.raises(ValueError, match="start must be < end"):
        gamma_sigmoid(T, 3.0, -3.0)
    with pytest.raises(ValueError, match="end must be <= 1"):
        gamma_cosine(T, 0.0, 1.5)
    with pytest.raises(ValueError, match="tau must be > 0"):
        gamma_sigmoid(T, tau=0.0)
    with pytest.raises(ValueError, match="input_scale must be > 0"):
        GammaSchedule("cosine", input_scale=0.0)
    with pytest.raises(ValueError, match="start, end and tau must be left unset"):
        GammaSchedule("linear", start=0.1)
    with pytest.raises(ValueError, match="gamma must be one of"):
        GammaSchedule("quadratic")
    with pytest.raises(ValueError, match="gamma must be <= 1"):
        noisy_input(torch.zeros(2, 3, dtype=D), torch.zeros(2, 3, dtype=D), torch.tensor([0.5, 1.5], dtype=D))
    with pytest.raises(ValueError, match="start and end must give distinct values"):
        gamma_sigmoid(T, 200.0, 300.0)
