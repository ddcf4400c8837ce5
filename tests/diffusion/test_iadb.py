"""IADB: the exact deblending target on Gaussians, the path against torchcfm, the sampler against the paper's loop,
Euler/k-diffusion, convergence to the exact map, the loss hookup and pinned error messages."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from paperzoo.diffusion.iadb import (DeblendingNetwork, alpha_blend, alpha_from_sigma, deblending_from_denoiser,
                                     get_sigmas_iadb, iadb_loss, iadb_step, iadb_training_sigmas, sample_iadb,
                                     sigma_from_alpha)
from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle
from paperzoo.diffusion.parametrization import network_input_scale, prediction_target
from paperzoo.diffusion.samplers import SamplerContext, euler_step, sample_euler
from paperzoo.diffusion.training import MLPDenoiser
from paperzoo.transport import sliced_wasserstein

from .references import k_diffusion_sampling

D = torch.float64


def _gaussian(m, s):
    m = torch.tensor(m, dtype=D)
    return GaussianMixture(m[None], (s**2 * torch.eye(m.shape[0], dtype=D))[None])


class _Exact(nn.Module):
    """A paper-convention 'network' returning the exact E[x1 - x0 | x_alpha] of a mixture."""

    def __init__(self, gm):
        super().__init__()
        self.gm = gm

    def forward(self, x_alpha, alpha):
        return deblending_from_denoiser(self.gm.denoise, x_alpha, alpha)


def test_exact_deblending_target_of_a_gaussian_in_closed_form():
    # x1 ~ N(m, s^2 I), x0 ~ N(0, I): x_a is Gaussian with mean a m and variance v = a^2 s^2 + (1 - a)^2, so
    # E[x1 | x_a] = m + a s^2 (x_a - a m)/v and E[x0 | x_a] = (1 - a)(x_a - a m)/v.
    m, s = [1.5, -0.5], 0.3
    gm = _gaussian(m, s)
    g = torch.Generator().manual_seed(0)
    x, alpha = torch.randn(64, 2, generator=g, dtype=D), 0.02 + 0.96 * torch.rand(64, generator=g, dtype=D)
    a, mm = alpha[:, None], torch.tensor(m, dtype=D)
    v = a**2 * s**2 + (1 - a) ** 2
    expected = (mm + a * s**2 * (x - a * mm) / v) - (1 - a) * (x - a * mm) / v
    torch.testing.assert_close(deblending_from_denoiser(gm.denoise, x, alpha), expected, rtol=1e-12, atol=1e-12)
    # a scalar alpha broadcasts the same way
    torch.testing.assert_close(deblending_from_denoiser(gm.denoise, x, 0.3),
                               deblending_from_denoiser(gm.denoise, x, torch.full((64,), 0.3, dtype=D)))


def test_exact_target_is_the_regression_minimiser_on_a_mixture():
    # The exact conditional mean beats any perturbation of it in the IADB loss (Monte Carlo, common draws).
    gm = mixture_on_circle(4, 2, radius=1.0, std=0.2, dtype=D)
    g = torch.Generator().manual_seed(1)
    x1, x0 = gm.sample(4000, generator=g), torch.randn(4000, 2, generator=g, dtype=D)
    alpha = torch.full((4000,), 0.4, dtype=D)
    exact = DeblendingNetwork(_Exact(gm))
    base = float(iadb_loss(exact, x1, alpha, noise=x0))
    for shift in (0.05, -0.05):
        shifted = DeblendingNetwork(_Shifted(_Exact(gm), shift))
        assert float(iadb_loss(shifted, x1, alpha, noise=x0)) > base


class _Shifted(nn.Module):
    def __init__(self, inner, shift):
        super().__init__()
        self.inner, self.shift = inner, shift

    def forward(self, x, a):
        return self.inner(x, a) + self.shift


def test_loss_is_the_papers_deblending_regression():
    net = MLPDenoiser(2, 16, 2, prediction="flow").double()
    g = torch.Generator().manual_seed(2)
    x1, x0 = torch.randn(32, 2, generator=g, dtype=D), torch.randn(32, 2, generator=g, dtype=D)
    alpha = 0.05 + 0.9 * torch.rand(32, generator=g, dtype=D)
    # the flow network's output is -(x1 - x0) at the input x_alpha, conditioned on sigma = (1 - a)/a
    d = -net(alpha_blend(x0, x1, alpha), sigma_from_alpha(alpha))
    expected = (d - (x1 - x0)).square().mean()
    torch.testing.assert_close(iadb_loss(net, x1, alpha, noise=x0), expected, rtol=1e-12, atol=1e-12)


def test_path_and_target_are_torchcfms_conditional_flow_matcher():
    from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

    g = torch.Generator().manual_seed(3)
    x0, x1 = torch.randn(32, 2, generator=g, dtype=D), torch.randn(32, 2, generator=g, dtype=D)
    alpha = 0.01 + 0.98 * torch.rand(32, generator=g, dtype=D)
    # torchcfm's time is IADB's alpha: source x0 at t = 0, target x1 at t = 1, u_t = x1 - x0
    _, xt, ut = ConditionalFlowMatcher(sigma=0.0).sample_location_and_conditional_flow(x0, x1, t=alpha)
    torch.testing.assert_close(alpha_blend(x0, x1, alpha), xt, rtol=1e-12, atol=1e-12)
    sigma = sigma_from_alpha(alpha)
    # the substrate's flow input and target are the blend and -(x1 - x0)
    torch.testing.assert_close(network_input_scale(sigma[:, None], "flow") * (x1 + sigma[:, None] * x0), xt,
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(prediction_target(x1, x0, sigma, "flow"), -ut, rtol=1e-12, atol=1e-12)


def _paper_loop(gm, x0, alphas):
    """The paper's deterministic iteration in blend coordinates, on an exact deblender."""
    x = x0
    for a, a_next in zip(alphas[:-1], alphas[1:]):
        x = x + (a_next - a) * deblending_from_denoiser(gm.denoise, x, float(a))
    return x


def test_sampler_is_the_papers_iteration_and_euler_and_k_diffusion():
    gm = mixture_on_circle(3, 2, radius=1.0, std=0.2, dtype=D)
    sigmas = get_sigmas_iadb(12)
    alphas = alpha_from_sigma(sigmas)
    eps = torch.randn(50, 2, generator=torch.Generator().manual_seed(4), dtype=D)
    ours = sample_iadb(gm.denoise, sigmas[0] * eps, sigmas)
    # the paper's loop starts from the blend at alpha_min, (1 - alpha_min) eps = alpha_min * sigma_0 * eps
    torch.testing.assert_close(ours, _paper_loop(gm, alphas[0] * sigmas[0] * eps, alphas), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours, sample_euler(gm.denoise, sigmas[0] * eps, sigmas), rtol=1e-10, atol=1e-10)
    K = k_diffusion_sampling()
    torch.testing.assert_close(ours, K.sample_euler(gm.denoise, sigmas[0] * eps, sigmas, disable=True),
                               rtol=1e-10, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(a=st.floats(0.01, 0.98), frac=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
def test_one_iadb_step_is_one_euler_step(a, frac, seed):
    a_next = a + frac * (1 - a)
    sigma, sigma_next = torch.tensor((1 - a) / a, dtype=D), torch.tensor((1 - a_next) / a_next, dtype=D)
    g = torch.Generator().manual_seed(seed)
    x, denoised = torch.randn(8, 2, generator=g, dtype=D) * (1 + sigma), torch.randn(8, 2, generator=g, dtype=D)
    ctx = SamplerContext(lambda x, s: x, sigma.reshape(1), 0, None)
    torch.testing.assert_close(iadb_step(x, sigma, sigma_next, denoised, ctx),
                               euler_step(x, sigma, sigma_next, denoised, ctx), rtol=1e-9, atol=1e-9)


def test_exact_sampler_converges_to_the_exact_map_as_steps_grow():
    # N(0, I) -> N(m, s^2 I): the deterministic map is x0 -> m + s x0 (monotone along every axis).
    m, s = [1.0, -2.0], 0.5
    gm = _gaussian(m, s)
    eps = torch.randn(200, 2, generator=torch.Generator().manual_seed(5), dtype=D)
    target = torch.tensor(m, dtype=D) + s * eps
    errors = []
    for n in (4, 16, 64, 128):
        sigmas = get_sigmas_iadb(n, alpha_min=1e-6)
        errors.append(float((sample_iadb(gm.denoise, sigmas[0] * eps, sigmas) - target).abs().max()))
    assert all(e1 > e2 for e1, e2 in zip(errors, errors[1:])), errors
    # first order: n * error settles to a constant (about 2 here)
    scaled = [e * n for e, n in zip(errors, (4, 16, 64, 128))]
    assert errors[-1] < 0.02 and max(scaled[1:]) / min(scaled[1:]) < 1.1, errors


def test_exact_sampler_converges_to_the_mixture():
    gm = mixture_on_circle(6, 2, radius=1.0, std=0.1, dtype=D)
    ref = gm.sample(1000, generator=torch.Generator().manual_seed(6))
    proj = torch.randn(32, 2, generator=torch.Generator().manual_seed(7), dtype=D)
    proj = proj / proj.norm(dim=1, keepdim=True)
    eps = torch.randn(1000, 2, generator=torch.Generator().manual_seed(8), dtype=D)
    sw = {}
    for n in (2, 32):
        sigmas = get_sigmas_iadb(n)
        sw[n] = float(sliced_wasserstein(sample_iadb(gm.denoise, sigmas[0] * eps, sigmas), ref, projections=proj))
    # at 32 steps the samples are as close to the mixture as a second set of exact draws is (Monte Carlo floor)
    floor = float(sliced_wasserstein(gm.sample(1000, generator=torch.Generator().manual_seed(12)), ref,
                                     projections=proj))
    assert sw[32] < 0.1 * sw[2] and sw[32] < 2 * floor, (sw, floor)


def test_deblending_network_is_a_ve_denoiser():
    gm = mixture_on_circle(4, 2, radius=1.0, std=0.2, dtype=D)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(9), dtype=D) * 3
    sigma = torch.rand(16, generator=torch.Generator().manual_seed(10), dtype=D) * 4 + 0.05
    torch.testing.assert_close(DeblendingNetwork(_Exact(gm)).denoiser()(x, sigma), gm.denoise(x, sigma),
                               rtol=1e-10, atol=1e-10)


def test_schedule_and_training_levels():
    sigmas = get_sigmas_iadb(4)
    torch.testing.assert_close(alpha_from_sigma(sigmas), torch.tensor([1e-3, 0.25, 0.5, 0.75, 1.0], dtype=D))
    assert sigmas.shape == (5,) and float(sigmas[-1]) == 0.0
    s = iadb_training_sigmas(20000, generator=torch.Generator().manual_seed(11))
    a = alpha_from_sigma(s)
    assert float(a.min()) >= 1e-3 and float(a.max()) <= 1 - 1e-3
    assert abs(float(a.mean()) - 0.5) < 0.01 and abs(float((a < 0.25).double().mean()) - 0.25) < 0.01
    assert iadb_training_sigmas(3, dtype=torch.float32).dtype == torch.float32


def test_error_messages():
    with pytest.raises(ValueError, match=r"alpha must be > 0 \(alpha = 0 is an infinite VE level\)"):
        sigma_from_alpha(0.0)
    with pytest.raises(ValueError, match="alpha must be < 1, got a maximum of 1.0"):
        deblending_from_denoiser(lambda x, s: x, torch.zeros(2, 2, dtype=D), torch.ones(2, dtype=D))
    with pytest.raises(ValueError, match="network must predict 'flow'"):
        iadb_loss(MLPDenoiser(2, 4, 1, prediction="eps").double(), torch.zeros(2, 2, dtype=D),
                  torch.full((2,), 0.5, dtype=D))
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        get_sigmas_iadb(0)
    with pytest.raises(ValueError, match="alpha must be <= 1"):
        alpha_blend(torch.zeros(2, 2, dtype=D), torch.ones(2, 2, dtype=D), torch.tensor([0.5, 1.5], dtype=D))
    with pytest.raises(ValueError, match=r"alpha must be a number or have shape \(2,\), got shape \(3,\)"):
        alpha_blend(torch.zeros(2, 2, dtype=D), torch.ones(2, 2, dtype=D), torch.full((3,), 0.5, dtype=D))
