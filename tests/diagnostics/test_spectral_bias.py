"""Tests for paperzoo.diagnostics.spectral_bias: closed forms, an explicit DFT sum, hand-built ReLU nets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from paperzoo.diagnostics.spectral_bias import (FourierFeatures, SpectralBiasTracker, coordinate_mlp,
                                                count_activation_regions_1d, fourier_features, frequency_residuals)


def _zero_model(dtype=torch.float64):
    m = nn.Linear(1, 1).to(dtype)
    nn.init.zeros_(m.weight)
    nn.init.zeros_(m.bias)
    return m


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_frequency_residuals_recovers_sum_of_sines(dtype):
    amps = {1: 1.0, 5: 0.2, 20: 0.05}
    phases = {1: 0.3, 5: -1.1, 20: 2.0}

    def f(x):
        return sum(a * torch.sin(2 * math.pi * k * x + phases[k]) for k, a in amps.items()) + 0.7

    xs = torch.arange(128, dtype=dtype) / 128
    out = frequency_residuals(_zero_model(dtype), xs, f, [0, 1, 5, 20, 7])
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    expected = torch.tensor([0.7, 1.0, 0.2, 0.05, 0.0], dtype=dtype)
    torch.testing.assert_close(out.residual, expected, atol=tol, rtol=0)
    torch.testing.assert_close(out.target, expected, atol=tol, rtol=0)
    assert torch.isnan(out.relative[-1]) and torch.allclose(out.relative[:4], torch.ones(4, dtype=dtype))


def test_frequency_residuals_against_explicit_dft_and_model():
    torch.manual_seed(0)
    net = coordinate_mlp(1, 16, 2).double()
    xs = 0.1 + torch.arange(50, dtype=torch.float64) * 0.04      # period T = 2: frequencies in halves
    f = lambda x: torch.cos(3 * math.pi * x) + x ** 2  # noqa: E731
    freqs = [0, 1, 3]                                            # bins 0, 2, 6
    out = frequency_residuals(net, xs, f, freqs)
    with torch.no_grad():
        r = (f(xs) - net(xs[:, None])[:, 0]).numpy()
    n, j = len(r), np.arange(len(r))
    want = [abs((r * np.exp(-2j * np.pi * m * j / n)).sum()) / n * (1 if m == 0 else 2) for m in (0, 2, 6)]
    np.testing.assert_allclose(out.residual.numpy(), want, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(float(out.mse), (r ** 2).mean(), rtol=1e-12)


def test_region_count_equals_breakpoints_plus_one():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(1, 7), nn.ReLU(), nn.Linear(7, 1)).double()
    w = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 1.0, 0.0], dtype=torch.float64)
    bp = torch.tensor([0.13, 0.41, 0.77, 0.55, 1.3, 0.41, 0.0], dtype=torch.float64)   # 1.3 outside, 0.41 twice
    with torch.no_grad():
        net[0].weight.copy_(w[:, None])
        net[0].bias.copy_(-w * bp)
        net[0].bias[-1] = 1.0                                                           # w = 0: never switches
    xs = torch.linspace(0, 1, 10_001, dtype=torch.float64)
    inside = sorted({float(b) for b, wi in zip(bp, w) if wi != 0 and 0 < b < 1})
    out = count_activation_regions_1d(net, xs)
    assert out.n_regions == len(inside) + 1 == out.n_patterns
    assert out.n_units == 7
    np.testing.assert_allclose(out.boundaries.numpy(), inside, atol=1e-4)


def test_region_count_deep_net_matches_pattern_loop_and_pe_has_more():
    torch.manual_seed(0)
    plain, pe = coordinate_mlp(1, 32, 3).double(), coordinate_mlp(1, 32, 3, L=6).double()
    xs = torch.linspace(0, 1, 1001, dtype=torch.float64)
    for net in (plain, pe):
        # independent route: explicit layer-by-layer pass, one point at a time
        pats = []
        for x in xs:
            h, bits = x.reshape(1, 1), []
            for layer in net:
                if isinstance(layer, nn.ReLU):
                    bits.append(h[0] > 0)
                h = layer(h)
            pats.append(torch.cat(bits))
        changes = sum(bool((a != b).any()) for a, b in zip(pats[1:], pats[:-1]))
        assert count_activation_regions_1d(net, xs).n_regions == changes + 1
    assert count_activation_regions_1d(pe, xs).n_regions > count_activation_regions_1d(plain, xs).n_regions


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fourier_features_closed_form(dtype):
    x = torch.rand(6, 2, dtype=dtype)
    L = 4
    out = fourier_features(x, L)
    cols = []
    for c in range(2):
        cols.append(x[:, c])
        for l in range(L):
            cols += [torch.sin(2 ** l * math.pi * x[:, c]), torch.cos(2 ** l * math.pi * x[:, c])]
    torch.testing.assert_close(out, torch.stack(cols, 1), atol=1e-6 if dtype == torch.float32 else 1e-14, rtol=0)
    assert fourier_features(x, L, include_input=False).shape == (6, 16)
    layer = FourierFeatures(L)
    torch.testing.assert_close(layer(x), out, atol=1e-6, rtol=0)
    assert layer.out_features(2) == 18


def test_tracker_records_and_first_below():
    torch.manual_seed(0)
    net = coordinate_mlp(1, 32, 2)
    xs = torch.arange(64) / 64
    f = lambda x: torch.sin(2 * math.pi * x)  # noqa: E731
    tr = SpectralBiasTracker(net, xs, f, [1, 3], every=10, region_xs=torch.linspace(0, 1, 200))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(1, 201):
        opt.zero_grad()
        ((net(xs[:, None])[:, 0] - f(xs)) ** 2).mean().backward()
        opt.step()
        tr(step)
    res = tr.result()
    assert res.steps.tolist() == list(range(10, 201, 10)) and res.residual.shape == (20, 2)
    assert res.regions.shape == (20,) and bool((res.regions >= 1).all())
    last = frequency_residuals(net, xs, f, [1, 3])
    torch.testing.assert_close(res.residual[-1], last.residual)
    assert res.relative[-1, 0] < res.relative[0, 0]
    fb = res.first_below(float(res.relative[-1, 0]) + 1e-6)
    assert 10 <= int(fb[0]) <= 200 and int(fb[1]) == -1                    # k = 3 not in the target: NaN


def test_error_messages():
    m = _zero_model(torch.float32)
    with pytest.raises(ValueError, match="xs must be a uniform ascending grid"):
        frequency_residuals(m, torch.tensor([0.0, 0.1, 0.3, 0.4, 0.5]), torch.sin, [1])
    with pytest.raises(ValueError, match=r"freqs must be >= 0 multiples of 1/T"):
        frequency_residuals(m, torch.arange(16) * 0.05, torch.sin, [1])   # T = 0.8: 0.8 cycles
    with pytest.raises(ValueError, match="below the Nyquist"):
        frequency_residuals(m, torch.arange(16) / 16, torch.sin, [8])
    with pytest.raises(ValueError, match="target_fn must return one value per grid point"):
        frequency_residuals(m, torch.arange(16) / 16, lambda x: x[:3], [1])
    with pytest.raises(TypeError, match="target_fn must be callable"):
        frequency_residuals(m, torch.arange(16) / 16, 3, [1])
    with pytest.raises(ValueError, match="model must contain at least one torch.nn.ReLU"):
        count_activation_regions_1d(m, torch.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="xs must be strictly ascending"):
        count_activation_regions_1d(coordinate_mlp(1, 4, 1), torch.tensor([0.0, 0.5, 0.2]))
    with pytest.raises(ValueError, match="L must be >= 1 when include_input is False"):
        fourier_features(torch.zeros(2, 1), 0, include_input=False)
    with pytest.raises(ValueError, match="L must be >= 0"):
        fourier_features(torch.zeros(2, 1), -1)
    with pytest.raises(ValueError, match="every must be >= 1"):
        SpectralBiasTracker(coordinate_mlp(1, 4, 1), torch.arange(16) / 16, torch.sin, [1], every=0)
