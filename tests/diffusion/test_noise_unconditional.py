"""Noise-unconditional denoising (Sun et al., 2025): exact blind targets on the Gaussian mixture."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle
from paperzoo.diffusion.noise_unconditional import (NoiseUnconditional, accumulated_error_bound,
                                                    conditional_target, effective_target_error, level_posterior,
                                                    optimal_unconditional_denoiser, unconditional_target)
from paperzoo.diffusion.parametrization import network_input_scale
from paperzoo.diffusion.training import MLPDenoiser

F64 = torch.float64


def _gm(d=3):
    return mixture_on_circle(3, d, radius=2.0, std=0.4)


def test_point_mass_prior_gives_the_conditional_target():
    gm = _gm()
    levels = torch.tensor([0.3, 0.8, 2.0], dtype=F64)
    prior = torch.tensor([0.0, 1.0, 0.0], dtype=F64)
    z = torch.randn(7, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    for prediction in ("x0", "eps", "v", "flow"):
        blind = unconditional_target(gm, z, levels, prior, prediction=prediction)
        cond = conditional_target(gm, z, 0.8, prediction=prediction)
        torch.testing.assert_close(blind, cond, rtol=1e-12, atol=1e-12)
    # and the denoiser: D*(x) = D(x, 0.8) for any level the sampler passes
    model = optimal_unconditional_denoiser(gm, levels, prior)
    torch.testing.assert_close(model(z, torch.full((7,), 5.0, dtype=F64)), gm.denoise(z, 0.8))


def test_single_gaussian_posterior_is_the_closed_form():
    # N(0, s^2 I): p(x | sigma) = N(0, (s^2 + sigma^2) I), so the posterior over levels is explicit.
    d, s = 4, 0.5
    gm = GaussianMixture(torch.zeros(1, d, dtype=F64), s**2 * torch.eye(d, dtype=F64)[None])
    levels = torch.tensor([0.2, 1.0, 3.0], dtype=F64)
    prior = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    x = torch.randn(5, d, generator=torch.Generator().manual_seed(1), dtype=F64)
    var = s**2 + levels**2
    log_post = prior.log() - 0.5 * (x.square().sum(-1, keepdim=True) / var + d * var.log())
    torch.testing.assert_close(level_posterior(gm, x, levels, prior), torch.softmax(log_post, -1))
    # the blind x0 target: the posterior-weighted shrinkage s^2 / (s^2 + sigma^2) x
    shrink = (torch.softmax(log_post, -1) * s**2 / var).sum(-1, keepdim=True)
    torch.testing.assert_close(unconditional_target(gm, x, levels, prior), shrink * x)


def test_vp_space_posterior_uses_the_change_of_variables():
    gm = _gm()
    levels = torch.tensor([0.5, 1.5], dtype=F64)
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    c = network_input_scale(levels, "vp")
    lik = torch.stack([gm.log_prob(z / c[j], levels[j]) - 3 * c[j].log() for j in range(2)], -1)
    torch.testing.assert_close(level_posterior(gm, z, levels, space="vp"), torch.softmax(lik, -1))


def test_posterior_concentrates_with_dimension():
    levels = torch.logspace(-1, 1, 21, dtype=F64)
    stds = []
    for d in (2, 48):
        gm = mixture_on_circle(4, d, radius=3.0, std=0.3)
        stds.append(effective_target_error(gm, 2.0, levels, n=64, generator=torch.Generator().manual_seed(0))
                    .log_sigma_std)
    # relative precision ~ sqrt(2 / d) of the level from ||x||^2: far tighter in 64 dimensions
    assert stds[1] < 0.12 < 0.5 < stds[0]


def test_jensen_bound_and_error_vanish_for_a_point_mass():
    gm = _gm()
    levels = torch.tensor([0.3, 1.0, 3.0], dtype=F64)
    res = effective_target_error(gm, 1.0, levels, prediction="eps", n=200,
                                 generator=torch.Generator().manual_seed(0))
    assert 0 < res.error <= res.bound
    exact = effective_target_error(gm, 1.0, levels, torch.tensor([0.0, 1.0, 0.0], dtype=F64), prediction="eps",
                                   n=50, generator=torch.Generator().manual_seed(0))
    assert exact.error < 1e-20 and exact.bound < 1e-20 and exact.log_sigma_std < 1e-6


def test_accumulated_error_bound_closed_form():
    n = 5
    kappa, eta = torch.full((n,), 1.1, dtype=F64), torch.full((n,), -0.2, dtype=F64)
    delta, lip = torch.full((n,), 0.3, dtype=F64), torch.full((n,), 0.5, dtype=F64)
    a, b = 1.1 + 0.2 * 0.5, 0.2 * 0.3
    expected = torch.tensor([b * (a**k - 1) / (a - 1) for k in range(1, n + 1)], dtype=F64)
    torch.testing.assert_close(accumulated_error_bound(kappa, eta, delta, lip), expected)


def test_wrapper_ignores_the_level_and_keeps_the_parametrization():
    torch.manual_seed(0)
    net = MLPDenoiser(3, 16, 2, prediction="flow").to(F64)
    blind = NoiseUnconditional(net)
    assert (blind.prediction, blind.space) == ("flow", "flow")
    x = torch.randn(6, 3, dtype=F64)
    out_a = blind(x, torch.full((6,), 0.1, dtype=F64))
    out_b = blind(x, torch.full((6,), 9.0, dtype=F64))
    torch.testing.assert_close(out_a, out_b)
    torch.testing.assert_close(out_a, net(x, torch.ones(6, dtype=F64)))
    assert sum(p.numel() for p in blind.parameters()) == sum(p.numel() for p in net.parameters())
    # the sampler-side conversion still uses its level
    den = blind.denoiser()
    s = torch.full((6,), 2.0, dtype=F64)
    torch.testing.assert_close(den(x, s), x / 3.0 - (2.0 / 3.0) * blind(x / 3.0))  # c_in = 1/(1+sigma)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["x0", "eps", "v", "flow"]))
def test_blind_target_is_a_convex_combination_of_conditional_targets(seed, prediction):
    gm = _gm()
    g = torch.Generator().manual_seed(seed)
    levels = torch.rand(4, generator=g, dtype=F64) * 3 + 0.05
    z = torch.randn(3, 3, generator=g, dtype=F64)
    blind = unconditional_target(gm, z, levels, prediction=prediction)
    conds = torch.stack([conditional_target(gm, z, float(s), prediction=prediction) for s in levels])
    assert bool((blind <= conds.max(0).values + 1e-9).all() and (blind >= conds.min(0).values - 1e-9).all())


def test_error_messages():
    gm = _gm()
    z = torch.zeros(2, 3, dtype=F64)
    with pytest.raises(ValueError, match="z must have last dimension 3"):
        level_posterior(gm, torch.zeros(2, 4, dtype=F64), torch.ones(2, dtype=F64))
    with pytest.raises(ValueError, match="levels must be > 0 entrywise"):
        level_posterior(gm, z, torch.tensor([0.0, 1.0], dtype=F64))
    with pytest.raises(ValueError, match="prior must have"):
        unconditional_target(gm, z, torch.ones(2, dtype=F64), torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="space must be 'flow'"):
        unconditional_target(gm, z, torch.ones(2, dtype=F64), prediction="flow", space="ve")
    with pytest.raises(TypeError, match="gm must be a GaussianMixture"):
        level_posterior("gm", z, torch.ones(2, dtype=F64))
    with pytest.raises(ValueError, match="sigma must be > 0"):
        conditional_target(gm, z, 0.0)
    with pytest.raises(TypeError, match="network must be a torch.nn.Module"):
        NoiseUnconditional(lambda x, s: x)
    with pytest.raises(ValueError, match="prediction attribute"):
        NoiseUnconditional(torch.nn.Linear(3, 3)).denoiser()
    assert math.isfinite(effective_target_error(gm, 0.5, torch.ones(2, dtype=F64), n=4).bound)


def test_fast_kernel_matches_the_posterior_weighted_conditional_targets():
    gm = GaussianMixture(torch.randn(3, 4, generator=torch.Generator().manual_seed(5), dtype=F64),
                         torch.stack([torch.eye(4, dtype=F64) * v + 0.1 for v in (0.3, 0.6, 1.0)]),
                         torch.tensor([0.2, 0.3, 0.5], dtype=F64))
    levels = torch.tensor([0.2, 0.7, 1.5, 4.0], dtype=F64)
    prior = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64)
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(6), dtype=F64)
    for prediction, space in (("x0", "ve"), ("eps", "vp"), ("v", "vp"), ("flow", "flow")):
        post = level_posterior(gm, z, levels, prior, space=space)
        conds = torch.stack([conditional_target(gm, z, float(s), prediction=prediction, space=space)
                             for s in levels], dim=-2)
        torch.testing.assert_close(unconditional_target(gm, z, levels, prior, prediction=prediction, space=space),
                                   (post[..., None] * conds).sum(-2))
