"""PTQ4DM: fake quantization closed forms, calibration ranges, NDTC step statistics, calibration builders."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.mixture import mixture_on_circle
from paperzoo.diffusion.ptq4dm import (QuantLinear, fake_quantize, fit_range, gaussian_calibration_set,
                                       ndtc_steps, quantize_network, sampler_calibration_set, single_steps,
                                       uniform_steps)
from paperzoo.diffusion.samplers import sample_ddim
from paperzoo.diffusion.schedules import get_sigmas_karras
from paperzoo.diffusion.training import MLPDenoiser


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 12), st.floats(-5, -0.01), st.floats(0.01, 5), st.integers(0, 10_000))
def test_round_trip_error_is_at_most_half_a_step(n_bits, low, high, seed):
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor(low, dtype=torch.float64), torch.tensor(high, dtype=torch.float64)
    delta = (high - low) / (2 ** n_bits - 1)
    z = round(-low / delta)
    rep_lo, rep_hi = -z * delta, (2 ** n_bits - 1 - z) * delta  # the representable range
    x = rep_lo + (rep_hi - rep_lo) * torch.rand(500, generator=g, dtype=torch.float64)
    q = fake_quantize(x, lo, hi, n_bits)
    assert float((q - x).abs().max()) <= delta / 2 * (1 + 1e-9)
    # the outputs lie on the grid k * delta and 0 is exact
    k = q / delta
    assert torch.allclose(k, k.round(), atol=1e-6)
    assert float(fake_quantize(torch.zeros(1, dtype=torch.float64), lo, hi, n_bits)) == 0.0


def test_values_outside_the_range_are_clipped_to_its_ends():
    q = fake_quantize(torch.tensor([-10.0, 10.0]), torch.tensor(-1.0), torch.tensor(1.0), 2)
    # 2 bits over [-1, 1]: delta 2/3, zero point round(1.5) = 2, grid {-4/3, -2/3, 0, 2/3}
    assert torch.allclose(q, torch.tensor([-4 / 3, 2 / 3]))


def test_per_channel_ranges_broadcast():
    x = torch.tensor([[0.0, 0.0], [1.0, 100.0]], dtype=torch.float64)
    low, high = fit_range(x, 4, "minmax", dim=1)
    assert low.shape == (1, 2) and high.tolist() == [[1.0, 100.0]]
    q = fake_quantize(x, low, high, 4)
    assert torch.equal(q, x)  # the extremes and 0 are grid points


def test_minmax_range_is_the_extremes_widened_to_zero():
    x = torch.tensor([[0.5, -2.0, 3.0], [1.0, 4.0, 2.0]])
    low, high = fit_range(x, 8, "minmax")
    assert float(low) == -2.0 and float(high) == 4.0
    low, high = fit_range(x, 8, "minmax", dim=0)
    assert low.flatten().tolist() == [-2.0, 0.0] and high.flatten().tolist() == [3.0, 4.0]
    low, _ = fit_range(torch.tensor([1.0, 2.0]), 8, "minmax")
    assert float(low) == 0.0


def test_mse_range_clips_an_outlier_and_lowers_the_error():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(2000, generator=g, dtype=torch.float64), torch.tensor([40.0], dtype=torch.float64)])
    mm = fit_range(x, 4, "minmax")
    ms = fit_range(x, 4, "mse")
    assert float(ms[1]) < float(mm[1])
    err = [float((fake_quantize(x, *r, 4) - x).square().mean()) for r in (mm, ms)]
    assert err[1] < err[0]
    for f in (0.9, 0.5, 0.2, 0.05):  # the fit is the minimum over the grid of shrink factors of the min-max range
        assert err[1] <= float((fake_quantize(x, mm[0] * f, mm[1] * f, 4) - x).square().mean())


def test_32_bits_recover_the_float_network():
    torch.manual_seed(0)
    net = MLPDenoiser(2, 16, 2).double()
    x = torch.randn(32, 2, dtype=torch.float64) * 3
    s = torch.rand(32, dtype=torch.float64) * 3 + 0.05
    for method in ("minmax", "mse"):
        q = quantize_network(net, x, s, n_bits_weights=32, n_bits_activations=32, method=method)
        assert torch.allclose(q.denoiser()(x, s), net.denoiser()(x, s), atol=1e-7, rtol=0)
    assert isinstance(net.net[0], torch.nn.Linear)  # the original is untouched
    assert all(isinstance(m, QuantLinear) for m in q.net if not isinstance(m, torch.nn.SiLU))


def test_fewer_bits_give_larger_errors():
    torch.manual_seed(1)
    net = MLPDenoiser(2, 32, 2).double()
    x = torch.randn(64, 2, dtype=torch.float64)
    s = torch.rand(64, dtype=torch.float64) + 0.5
    ref = net(x, s).detach()
    err = [float((quantize_network(net, x, s, n_bits_weights=b, n_bits_activations=b)(x, s).detach() - ref).abs().max())
           for b in (4, 6, 8)]
    assert err[0] > err[1] > err[2] > 0


def test_calibration_ranges_are_those_of_the_recorded_inputs():
    torch.manual_seed(2)
    net = MLPDenoiser(2, 8, 1).double()
    x = torch.randn(16, 2, dtype=torch.float64)
    s = torch.full((16,), 0.5, dtype=torch.float64)
    q = quantize_network(net, x, s, method="minmax")
    first = q.net[0]
    with torch.no_grad():  # first layer input: [c_in x, sin, cos] of the features
        inp = torch.cat([x / math.sqrt(1 + 0.25), *[f(torch.log(s)[:, None] / 4 * net.frequencies.double())
                                                     for f in (torch.sin, torch.cos)]], -1)
    assert float(first.act_range[0]) == pytest.approx(float(inp.min().clamp(max=0)), abs=1e-12)
    assert float(first.act_range[1]) == pytest.approx(float(inp.max().clamp(min=0)), abs=1e-12)


def test_ndtc_step_statistics():
    k = ndtc_steps(200_000, 1000, generator=torch.Generator().manual_seed(0))
    assert k.dtype == torch.long and int(k.min()) == 0 and int(k.max()) == 999
    # P(k = 0) = P(xi < 1/K) (trunc toward zero, clamp) ~ Phi((0.001 - 0.4)/0.4); P(k = K-1) = P(xi >= 0.999)
    phi = lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2)))  # noqa: E731
    assert float((k == 0).double().mean()) == pytest.approx(phi((0.001 - 0.4) / 0.4), abs=0.004)
    assert float((k == 999).double().mean()) == pytest.approx(1 - phi((0.999 - 0.4) / 0.4), abs=0.003)
    inside = k[(k > 100) & (k < 700)].double()  # untruncated part: the normal's mean 400 restricted there
    assert float(inside.mean()) == pytest.approx(400, abs=5)
    narrow = ndtc_steps(50_000, 100, mean=0.5, std=0.05, generator=torch.Generator().manual_seed(1)).double()
    assert float(narrow.mean()) == pytest.approx(49.5, abs=0.1)   # floor of N(50, 5^2): mean ~ 49.5
    assert float(narrow.std()) == pytest.approx(math.sqrt(25 + 1 / 12), abs=0.1)


def test_uniform_and_single_steps():
    assert uniform_steps(5, 9).tolist() == [0, 2, 4, 6, 8]
    assert single_steps(3, 4, 10).tolist() == [4, 4, 4]


def test_sampler_calibration_set_takes_the_states_of_the_full_chain():
    gm = mixture_on_circle(4, 2, radius=1.0, std=0.2, dtype=torch.float64)
    sigmas = get_sigmas_karras(8, 0.02, 20.0, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x = 20.0 * torch.randn(6, 2, generator=g, dtype=torch.float64)
    steps = torch.tensor([0, 1, 3, 5, 7, 7])
    cal, s = sampler_calibration_set(gm.denoise, x, sigmas, steps)
    assert torch.equal(s, sigmas[steps])
    assert torch.equal(cal[0], x[0])
    for i, k in enumerate(steps.tolist()):  # the DDIM state after k steps of the same chain
        expected = x[i:i + 1] if k == 0 else sample_ddim(gm.denoise, x[i:i + 1], sigmas[:k + 1])
        assert torch.allclose(cal[i], expected[0], atol=1e-12), i


def test_gaussian_calibration_set_has_unit_vp_scale():
    s = torch.full((20_000,), 3.0, dtype=torch.float64)
    x, s_out = gaussian_calibration_set(s, 2, generator=torch.Generator().manual_seed(0))
    assert s_out is s and x.shape == (20_000, 2)
    assert float(x.std() / math.sqrt(10.0)) == pytest.approx(1.0, abs=0.02)


def test_error_messages():
    with pytest.raises(ValueError, match="n_bits must be <= 32"):
        fake_quantize(torch.zeros(2), torch.tensor(-1.0), torch.tensor(1.0), 33)
    with pytest.raises(ValueError, match="low must be <= high"):
        fake_quantize(torch.zeros(2), torch.tensor(1.0), torch.tensor(-1.0), 8)
    with pytest.raises(ValueError, match="low and high must broadcast"):
        fake_quantize(torch.zeros(2), torch.zeros(3), torch.ones(3), 8)
    with pytest.raises(ValueError, match="method must be one of"):
        fit_range(torch.zeros(3), 8, "percentile")
    with pytest.raises(ValueError, match=r"dim must be in \[-1, 0\]"):
        fit_range(torch.zeros(3), 8, dim=1)
    with pytest.raises(ValueError, match=r"step must be < num_steps \(10\)"):
        single_steps(2, 10, 10)
    with pytest.raises(ValueError, match="std must be >= 0"):
        ndtc_steps(2, 10, std=-1.0)
    sig = get_sigmas_karras(4, 0.1, 5.0, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"steps must be < the number of sampling steps \(4\)"):
        sampler_calibration_set(lambda x, s: x, torch.zeros(2, 2, dtype=torch.float64), sig, torch.tensor([0, 4]))
    with pytest.raises(TypeError, match="network must have a denoiser"):
        quantize_network(torch.nn.Linear(2, 2), torch.zeros(2, 2), torch.ones(2))
    with pytest.raises(TypeError, match="linear must be a torch.nn.Linear"):
        QuantLinear(torch.nn.ReLU())
