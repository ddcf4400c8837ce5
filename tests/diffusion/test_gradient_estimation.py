"""Gradient-estimation sampler: gamma = 1 is DDIM, numbers of the official scheduler, the closed-form ODE of a
single Gaussian (error orders), the stochastic variant's formula, pinned errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.gradient_estimation import GAMMA, gradient_estimation_step, sample_gradient_estimation
from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle
from paperzoo.diffusion.samplers import run_sampler, sample_ddim, sample_euler
from paperzoo.diffusion.schedules import get_sigmas_exponential, get_sigmas_karras

D = torch.float64


def _three_gaussians() -> GaussianMixture:
    means = torch.tensor([[-1.0, 0.5], [0.8, -0.3], [0.2, 1.1]], dtype=D)
    covs = torch.stack([0.04 * torch.eye(2, dtype=D), torch.tensor([[0.09, 0.02], [0.02, 0.03]], dtype=D),
                        0.01 * torch.eye(2, dtype=D)])
    return GaussianMixture(means, covs, torch.tensor([0.5, 0.3, 0.2], dtype=D))


# Produced by running GEScheduler (gescheduler/scheduling_gradient_estimation.py) of
# github.com/ToyotaResearchInstitute/gradient-estimation-sampler @ 89397c6739b2f502cb08a9a622099208e06f7226
# under diffusers 0.42.1: GEScheduler(clip_sample=False, start=8.0, style="Linear", gamma=...) with the default
# linear betas (T = 1000; alphas_cumprod cast to float64 after construction), set_timesteps(n), the diffusers
# pipeline loop (scale_model_input, eps model, step) with the eps of the exact _three_gaussians() denoiser at
# sigma(t); x_start = randn(4, 2, Generator seed 0, float64) * init_noise_sigma. "sigmas" is timesteps_sigma
# (the levels of the timesteps, the last one timestep 0).
_X_START = [[12.4646219612339, -2.37345205691428], [-17.623526649691488, 4.597857804013851],
            [-8.77235246377822, -11.31278838846985], [3.2625429409315716, 6.778525512486687]]
OFFICIAL = {
    (2.0, 5): dict(
        timesteps=[641, 544, 433, 313, 201, 0],
        sigmas=[8.026625600558107, 4.411330708219518, 2.413651738776213, 1.3237364323635543, 0.7279166627697242,
                0.0100013298242134],
        x_end=[[1.0784713997848239, -0.37267625528548864], [-1.1689852690852405, 0.5298115567179473],
               [-1.1725206072288294, 0.4075736622047157], [-0.052218374786959815, 1.0038318260853485]]),
    (1.5, 8): dict(
        timesteps=[641, 575, 502, 423, 339, 257, 184, 126, 0],
        sigmas=[8.026625600558107, 5.297141562308629, 3.4810045791963082, 2.2931755706370507, 1.5065531675587056,
                0.994257605703813, 0.6560858671055247, 0.4335333721943479, 0.0100013298242134],
        x_end=[[1.0053798724996212, -0.2562961021891475], [-1.1937346589532343, 0.5533740011712526],
               [-1.0578363692573012, 0.33823036048368216], [0.1840293445944544, 1.1201586448778553]]),
}


@pytest.mark.parametrize("gamma,steps", list(OFFICIAL))
def test_matches_official_scheduler(gamma, steps):
    ref = OFFICIAL[(gamma, steps)]
    out = sample_gradient_estimation(_three_gaussians().denoise, torch.tensor(_X_START, dtype=D),
                                     torch.tensor(ref["sigmas"], dtype=D), gamma=gamma)
    torch.testing.assert_close(out, torch.tensor(ref["x_end"], dtype=D), rtol=0, atol=1e-12)


def test_official_log_linear_levels_are_get_sigmas_exponential():
    # The official "Linear" style: levels evenly spaced in log sigma between its two ends (before rounding to
    # the discrete timesteps, which moves them by < 1%).
    ref = OFFICIAL[(2.0, 5)]["sigmas"][:-1]
    grid = get_sigmas_exponential(5, ref[-1], ref[0])[:-1]
    torch.testing.assert_close(grid, torch.tensor(ref, dtype=D), rtol=1e-2, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gamma_one_is_ddim_exactly(dtype):
    gm = mixture_on_circle(5, 3, radius=2.0, std=0.3, dtype=dtype)
    x = 20.0 * torch.randn(64, 3, generator=torch.Generator().manual_seed(1), dtype=dtype)
    sigmas = get_sigmas_exponential(7, 0.02, 20.0, dtype=dtype)
    ge = sample_gradient_estimation(gm.denoise, x, sigmas, gamma=1.0)
    assert ge.dtype == dtype
    assert torch.equal(ge, sample_ddim(gm.denoise, x, sigmas))
    assert torch.equal(ge, sample_euler(gm.denoise, x, sigmas))


def test_gamma_changes_the_result_and_default_is_two():
    gm = mixture_on_circle(4, 2, radius=2.0, std=0.2)
    x = 10.0 * torch.randn(16, 2, generator=torch.Generator().manual_seed(2), dtype=D)
    sigmas = get_sigmas_exponential(6, 0.05, 10.0)
    assert GAMMA == 2.0
    default = sample_gradient_estimation(gm.denoise, x, sigmas)
    assert torch.equal(default, sample_gradient_estimation(gm.denoise, x, sigmas, gamma=2.0))
    assert not torch.allclose(default, sample_ddim(gm.denoise, x, sigmas))
    # The step factory through the shared loop is the same sampler.
    assert torch.equal(default, run_sampler(gm.denoise, x, sigmas, gradient_estimation_step(2.0)))


def test_step_by_hand_on_three_levels():
    gm = _three_gaussians()
    x = torch.tensor(_X_START, dtype=D)
    s0, s1, s2 = 6.0, 2.0, 0.5
    eps0 = (x - gm.denoise(x, s0)) / s0
    x1 = x + (s1 - s0) * eps0                       # first step: plain DDIM
    eps1 = (x1 - gm.denoise(x1, s1)) / s1
    x2 = x1 + (s2 - s1) * (2.5 * eps1 - 1.5 * eps0)  # previous raw eps, not the previous eps_bar
    out = sample_gradient_estimation(gm.denoise, x, torch.tensor([s0, s1, s2], dtype=D), gamma=2.5)
    torch.testing.assert_close(out, x2, rtol=0, atol=1e-13)


def _gaussian_case():
    m, s = torch.tensor([[0.7, -0.4]], dtype=D), 0.5
    gm = GaussianMixture(m, s**2 * torch.eye(2, dtype=D)[None])
    x = torch.tensor([[0.3, 2.0]], dtype=D)
    # The mixture's denoiser is the Gaussian posterior mean; the loop below uses that closed form (unchecked).
    torch.testing.assert_close(gm.denoise(x, 1.3), m + s**2 / (s**2 + 1.3**2) * (x - m))
    x0 = torch.tensor([[3.0, -5.0], [-2.0, 8.0]], dtype=D)
    smax, smin = 10.0, 0.1
    # The probability-flow ODE of N(m, s^2 I): x(sigma) - m scales as sqrt(s^2 + sigma^2).
    exact = m + (x0 - m) * math.sqrt(s**2 + smin**2) / math.sqrt(s**2 + smax**2)
    return (lambda y, sigma: m + s**2 / (s**2 + sigma[:, None] ** 2) * (y - m)), x0, smax, smin, exact


def _orders(gamma_of_ratio) -> list[float]:
    denoise, x0, smax, smin, exact = _gaussian_case()
    errors = []
    for n in (8, 16, 32, 64):
        sigmas = get_sigmas_exponential(n, smin, smax)[:-1]  # stop at sigma_min, where the ODE is known
        gamma = gamma_of_ratio(float(sigmas[1] / sigmas[0]))
        errors.append(float((sample_gradient_estimation(denoise, x0, sigmas, gamma=gamma) - exact).norm()))
    return [math.log2(a / b) for a, b in zip(errors, errors[1:])], errors


def test_error_orders_on_the_gaussian_ode():
    ddim_orders, ddim_errors = _orders(lambda r: 1.0)
    assert all(abs(p - 1.0) < 0.1 for p in ddim_orders)
    # On a log-linear grid of ratio r = sigma_{i+1}/sigma_i, gamma = 1 + r/2 makes the step two-step
    # Adams-Bashforth in sigma: second order.
    ab_orders, _ = _orders(lambda r: 1.0 + r / 2)
    assert all(1.8 < p < 2.1 for p in ab_orders)
    # The paper's gamma = 2 is consistent but first order (its correction is not tuned to the ODE), and at these
    # few steps its error is below DDIM's.
    ge_orders, ge_errors = _orders(lambda r: GAMMA)
    assert 0.8 < ge_orders[-1] < 1.1
    assert all(g < d for g, d in zip(ge_errors, ddim_errors))


def test_stochastic_variant_formula():
    gm = _three_gaussians()
    x = torch.tensor(_X_START, dtype=D)
    s = torch.tensor([6.0, 2.0, 0.5, 0.0], dtype=D)
    mu, gamma = 0.3, 2.0
    out = sample_gradient_estimation(gm.denoise, x, s, gamma=gamma, mu=mu,
                                     generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    prev, y = None, x
    for i in range(3):
        eps = (y - gm.denoise(y, float(s[i]))) / s[i]
        bar = eps if prev is None else gamma * eps + (1 - gamma) * prev
        prev = eps
        if i == 2:  # the step to sigma = 0 adds nothing
            y = y - s[i] * bar
            break
        deep = (s[i + 1] / s[i] ** mu) ** (1 / (1 - mu))
        assert torch.isclose(s[i] ** mu * deep ** (1 - mu), s[i + 1])
        y = y + (deep - s[i]) * bar + (s[i + 1] ** 2 - deep**2).sqrt() * torch.randn(y.shape, generator=g, dtype=D)
    torch.testing.assert_close(out, y, rtol=0, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(gamma=st.floats(-3.0, 5.0), hi=st.floats(0.5, 50.0), ratio=st.floats(0.0, 0.99))
def test_one_step_is_ddim_for_any_gamma(gamma, hi, ratio):
    # With no previous evaluation the combination is the current estimate: a single step is DDIM's.
    gm = mixture_on_circle(3, 2, radius=1.5, std=0.3)
    x = hi * torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=D)
    sigmas = torch.tensor([hi, hi * ratio], dtype=D)
    assert torch.equal(sample_gradient_estimation(gm.denoise, x, sigmas, gamma=gamma),
                       sample_ddim(gm.denoise, x, sigmas))


def test_callback_and_evaluations():
    gm = mixture_on_circle(3, 2, radius=1.5, std=0.3)
    seen = []
    sigmas = get_sigmas_karras(5, 0.05, 5.0)
    sample_gradient_estimation(gm.denoise, torch.zeros(4, 2, dtype=D), sigmas, callback=lambda d: seen.append(d["i"]))
    assert seen == [0, 1, 2, 3, 4]  # one model evaluation per step


def test_errors():
    gm = mixture_on_circle(3, 2, radius=1.5, std=0.3)
    x, sigmas = torch.zeros(4, 2, dtype=D), get_sigmas_exponential(3, 0.1, 2.0)
    with pytest.raises(ValueError, match=r"^gamma must be finite, got nan$"):
        sample_gradient_estimation(gm.denoise, x, sigmas, gamma=float("nan"))
    with pytest.raises(ValueError, match=r"^mu must be < 1\.0, got 1\.0$"):
        sample_gradient_estimation(gm.denoise, x, sigmas, mu=1.0)
    with pytest.raises(ValueError, match=r"^mu must be >= 0\.0, got -0\.5$"):
        gradient_estimation_step(2.0, mu=-0.5)
    with pytest.raises(ValueError, match="sigmas must be nonincreasing"):
        sample_gradient_estimation(gm.denoise, x, torch.tensor([1.0, 2.0, 0.5, 0.0], dtype=x.dtype))
    with pytest.raises(TypeError, match="gamma"):
        sample_gradient_estimation(gm.denoise, x, sigmas, gamma="2")
