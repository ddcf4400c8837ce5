"""Improved consistency training: the exact boundary condition, Pseudo-Huber limits, the discretized lognormal
against its closed form and Monte Carlo, both curricula against the papers' formulas (official CM code numbers),
the stop-gradient teacher, the multistep sampler, and pinned errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.consistency import (ConsistencyModel, _ct_loss, consistency_scalings, consistency_training_loss,
                                            ct_discretization_steps, ct_ema_decay, ict_discretization_steps,
                                            karras_levels, lognormal_level_probs, pseudo_huber, pseudo_huber_c,
                                            sample_consistency, sample_level_indices, train_consistency)
from paperzoo.diffusion.schedules import get_sigmas_karras
from paperzoo.diffusion.training import MLPDenoiser

D = torch.float64


def _model(dtype=D, seed=0):
    torch.manual_seed(seed)
    return ConsistencyModel(MLPDenoiser(2, 16, 2, prediction="x0", space="ve")).to(dtype)


# -- parametrization ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_boundary_condition_is_exact(dtype):
    model = _model(dtype)
    x = 3 * torch.randn(64, 2, dtype=dtype)
    assert torch.equal(model(x, 0.002), x)
    assert torch.equal(model(x, torch.full((64,), 0.002, dtype=dtype)), x)
    assert not torch.allclose(model(x, 1.0), x)


def test_scalings_closed_form():
    s = torch.tensor([0.002, 0.5, 80.0, 1e6], dtype=D)
    c_skip, c_out, c_in = consistency_scalings(s)
    assert c_skip[0] == 1 and c_out[0] == 0
    torch.testing.assert_close(c_skip[1], torch.tensor(0.25 / (0.498**2 + 0.25), dtype=D))
    torch.testing.assert_close(c_out[1], torch.tensor(0.498 * 0.5 / math.sqrt(0.5), dtype=D))
    torch.testing.assert_close(c_in, (s.square() + 0.25).rsqrt())
    assert float(c_skip[-1]) < 1e-12 and abs(float(c_out[-1]) - 0.5) < 1e-6   # sigma -> inf: f -> sigma_d F


# -- Pseudo-Huber --------------------------------------------------------------------------------------------------------
def test_pseudo_huber_limits_and_default_c():
    assert pseudo_huber_c(3072) == pytest.approx(0.00054 * math.sqrt(3072))   # 0.03 on CIFAR-10
    y = torch.zeros(2, 4, dtype=D)
    small = torch.full((2, 4), 1e-6, dtype=D)
    r2 = small.square().sum(-1)
    torch.testing.assert_close(pseudo_huber(small, y, c=1.0), r2 / 2, rtol=1e-6, atol=0)        # ||x-y||^2 / (2c)
    large = torch.full((2, 4), 1e3, dtype=D)
    r = large.norm(dim=-1)   # r - c + c^2 / (2 r), error O(c^4 / r^3)
    torch.testing.assert_close(pseudo_huber(large, y, c=0.1), r - 0.1 + 0.01 / (2 * r), rtol=1e-12, atol=0)
    x = torch.tensor([[3.0, 4.0]], dtype=D)
    torch.testing.assert_close(pseudo_huber(x, y[:1, :2], c=1.0), torch.tensor([math.sqrt(26) - 1], dtype=D))
    c = pseudo_huber_c(2)
    torch.testing.assert_close(pseudo_huber(x, y[:1, :2]), torch.tensor([math.sqrt(25 + c * c) - c], dtype=D))


@settings(max_examples=30, deadline=None)
@given(st.floats(0, 10), st.floats(0, 10), st.floats(1e-4, 5))
def test_pseudo_huber_between_norm_minus_c_and_norm(a, b, c):
    x, y = torch.tensor([[a, b]], dtype=D), torch.zeros(1, 2, dtype=D)
    r = math.hypot(a, b)
    d = float(pseudo_huber(x, y, c=c))
    assert max(r - c, 0.0) - 1e-12 <= d <= r + 1e-12


# -- levels and curricula ------------------------------------------------------------------------------------------------
def test_karras_levels_match_schedule_reversed():
    s = karras_levels(11)
    torch.testing.assert_close(s, get_sigmas_karras(11, 0.002, 80.0, 7.0)[:-1].flip(0))
    assert float(s[0]) == 0.002 and float(s[-1]) == 80.0


def test_lognormal_level_probs_closed_form_and_monte_carlo():
    s = karras_levels(21)
    p = lognormal_level_probs(s)
    normal = torch.distributions.Normal(torch.tensor(-1.1, dtype=D), torch.tensor(2.0, dtype=D))
    mass = normal.cdf(s[1:].log()) - normal.cdf(s[:-1].log())
    torch.testing.assert_close(p, mass / mass.sum())
    assert p.shape == (20,) and abs(float(p.sum()) - 1) < 1e-12
    # the continuous lognormal, truncated to [sigma_min, sigma_max] and binned by the levels, is the same law
    g = torch.Generator().manual_seed(0)
    draws = (-1.1 + 2.0 * torch.randn(400_000, generator=g, dtype=D)).exp()
    draws = draws[(draws >= s[0]) & (draws < s[-1])]
    freq = torch.bincount(torch.searchsorted(s, draws, right=True) - 1, minlength=20).double() / draws.numel()
    assert float((freq - p).abs().max()) < 4e-3
    idx = sample_level_indices(200_000, s, generator=torch.Generator().manual_seed(1))
    freq = torch.bincount(idx, minlength=20).double() / idx.numel()
    assert float((freq - p).abs().max()) < 4e-3
    uniform = sample_level_indices(20_000, s, "uniform", generator=g)
    assert int(uniform.min()) == 0 and int(uniform.max()) == 19


def test_ict_curriculum_formula_numbers():
    # K = 400,000 (iCT on CIFAR-10), s0 = 10, s1 = 1280: K' = floor(400000 / 8) = 50,000
    K = 400_000
    got = [ict_discretization_steps(k, K) for k in (0, 49_999, 50_000, 100_000, 150_000, 349_999, 350_000, 399_999)]
    assert got == [11, 11, 21, 41, 81, 641, 1281, 1281]
    assert ict_discretization_steps(10, 3) == 1281      # K' clamped at 1: the cap s1 + 1


def test_ct_curriculum_and_ema_match_official_code():
    # cm/script_util.py create_ema_and_scales_fn, "adaptive"/"progressive" mode (openai/consistency_models @ 3d86141),
    # start_scales 2, end_scales 150, start_ema 0.9, total_steps 800,000 (CT on CIFAR-10)
    K = 800_000
    assert [ct_discretization_steps(k, K) for k in (0, 400_000, 800_000)] == [2, 107, 151]
    assert ct_ema_decay(2) == pytest.approx(0.81)
    assert ct_ema_decay(151) == pytest.approx(math.exp(2 * math.log(0.9) / 150))


# -- loss ---------------------------------------------------------------------------------------------------------------------
def test_loss_pieces_against_hand_computation():
    model = _model()
    x0 = torch.randn(5, 2, dtype=D)
    noise = torch.randn(5, 2, dtype=D)
    s = torch.tensor([0.5, 0.7], dtype=D)   # one pair: every sample uses (0.5, 0.7)
    hi, lo = model(x0 + 0.7 * noise, 0.7), model(x0 + 0.5 * noise, 0.5)
    l2 = consistency_training_loss(model, x0, s, metric="l2", levels="uniform", weighting="uniform", noise=noise)
    torch.testing.assert_close(l2, (hi - lo).square().mean())
    ph = consistency_training_loss(model, x0, s, weighting="ict", noise=noise, c=0.01)
    torch.testing.assert_close(ph, (((hi - lo).square().sum(-1) + 1e-4).sqrt() - 0.01).mean() / 0.2)
    idx = torch.zeros(5, dtype=torch.long)
    custom = _ct_loss(model, None, x0, s, idx, noise, lambda a, b, c: (a - b).abs().sum(-1) * c, "uniform", 3.0)
    torch.testing.assert_close(custom, 3.0 * (hi - lo).abs().sum(-1).mean())


def test_student_teacher_is_stop_gradient():
    model = _model()
    x0, noise = torch.randn(16, 2, dtype=D), torch.randn(16, 2, dtype=D)
    s = karras_levels(11)
    frozen = copy.deepcopy(model).requires_grad_(False)
    grads = []
    for teacher in (None, frozen):
        model.zero_grad()
        consistency_training_loss(model, x0, s, teacher=teacher, noise=noise,
                                  generator=torch.Generator().manual_seed(3)).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_train_consistency_both_recipes():
    data = lambda n, g: torch.randn(n, 2, generator=g, dtype=D)   # noqa: E731
    for kw in ({}, dict(curriculum="ct", teacher="ema", metric="l2", levels="uniform", weighting="uniform")):
        model = _model()
        seen = []
        hist = train_consistency(model, data, steps=4, batch_size=32, lr=1e-3,
                                 generator=torch.Generator().manual_seed(0),
                                 callback=lambda k, m, loss: seen.append(k), **kw)
        assert hist.shape == (4,) and bool(torch.isfinite(hist).all()) and seen == [1, 2, 3, 4]


# -- sampling -----------------------------------------------------------------------------------------------------------------
def test_multistep_sampling_matches_algorithm():
    model = _model()
    z = torch.randn(8, 2, dtype=D)
    one = sample_consistency(model, 80 * z, torch.tensor([80.0, 0.0], dtype=D))
    torch.testing.assert_close(one, model(80 * z, 80.0))
    two = sample_consistency(model, 80 * z, torch.tensor([80.0, 0.8, 0.0], dtype=D),
                             generator=torch.Generator().manual_seed(5))
    zp = torch.randn(8, 2, generator=torch.Generator().manual_seed(5), dtype=D)
    with torch.no_grad():
        expected = model(model(80 * z, 80.0) + math.sqrt(0.8**2 - 0.002**2) * zp, 0.8)
    torch.testing.assert_close(two, expected)


# -- errors -------------------------------------------------------------------------------------------------------------------
def test_errors():
    model = _model()
    x = torch.randn(3, 2, dtype=D)
    with pytest.raises(ValueError, match=r"sigma must be >= sigma_min \(0.002\)"):
        model(x, 0.001)
    with pytest.raises(ValueError, match=r"sigma must be a number or have shape \(3,\)"):
        model(x, torch.ones(2, dtype=D))
    with pytest.raises(TypeError, match="model must be a ConsistencyModel, got MLPDenoiser"):
        consistency_training_loss(model.network, x, karras_levels(5))
    with pytest.raises(ValueError, match="sigmas must be strictly increasing"):
        consistency_training_loss(model, x, karras_levels(5).flip(0))
    with pytest.raises(ValueError, match=r"sigmas must be >= model.sigma_min"):
        consistency_training_loss(model, x, torch.tensor([0.001, 1.0], dtype=D))
    with pytest.raises(ValueError, match="metric must be one of"):
        consistency_training_loss(model, x, karras_levels(5), metric="lpips")
    with pytest.raises(ValueError, match=r"s1 must be >= s0 \(10\), got 5"):
        ict_discretization_steps(0, 10, s1=5)
    with pytest.raises(ValueError, match=r"sigma_min must be < sigma_max \(1.0\), got 2.0"):
        karras_levels(5, 2.0, 1.0)
    with pytest.raises(ValueError, match="sigmas must be > 0 and strictly increasing"):
        lognormal_level_probs(torch.tensor([1.0, 0.5], dtype=D))
    with pytest.raises(ValueError, match=r"sigmas must be >= sigma_min \(0.002\) except the last entry"):
        sample_consistency(model, x, torch.tensor([80.0, 0.001, 0.0], dtype=D))
    with pytest.raises(ValueError, match="sigmas must end in 0"):
        sample_consistency(model, x, torch.tensor([80.0, 1.0], dtype=D))
    with pytest.raises(ValueError, match=r"sigma_max must be > model.sigma_min"):
        train_consistency(model, lambda n, g: x, steps=1, sigma_max=0.001)
    with pytest.raises(ValueError, match="mu0 must be"):
        ct_ema_decay(5, mu0=1.0)
