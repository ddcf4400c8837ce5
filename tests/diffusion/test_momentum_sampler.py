"""Momentum samplers (PLMS + HB, GHVB, DPM-Solver++(2M) + HB): the official code's mixing coefficients, exact
reduction to the base solvers at beta = 1, diffusers' PLMS step and k-diffusion's DPM-Solver++(2M), accuracy
orders on an exact Gaussian ODE solution, and pinned errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.guidance import class_conditional, classifier_free_guidance
from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle
from paperzoo.diffusion.momentum_sampler import (adams_bashforth_coefficients, dpmpp_2m_hb_step, ghvb_coefficients,
                                                 ghvb_step, plms_hb_step, plms_step, sample_ghvb, sample_hb,
                                                 sample_plms, sample_plms_hb)
from paperzoo.diffusion.samplers import SamplerContext, sample_dpmpp_2m, sample_euler
from paperzoo.diffusion.schedules import get_sigmas_karras
from tests.diffusion.references import k_diffusion_sampling

D = torch.float64

# The GHVB mixing weights of the official code (sWizad/momentum-diffusion @ 7d3241042f407f2a6f874901b1ff0bb3362291f8,
# stable_diffusion/diffusion/momentum_scheduler.py, AdamBmixer): weight j (newest first) of order q is
# (a_j + b_j * beta) / (denominator * beta). Written down as numbers (the paper's Eq. for GHVB), not code.
OFFICIAL = {
    1: (1, [(0, 1)]),
    2: (2, [(2, 1), (-2, 1)]),
    3: (12, [(18, 5), (-24, 8), (6, -1)]),
    4: (24, [(46, 9), (-78, 19), (42, -5), (-10, 1)]),
    5: (720, [(1650, 251), (-3420, 646), (2880, -264), (-1380, 106), (270, -19)]),
}


def _official(q: int, beta: float) -> list[float]:
    den, rows = OFFICIAL[q]
    return [(a + b * beta) / (den * beta) for a, b in rows]


@pytest.mark.parametrize("q", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("beta", [1.0, 0.9, 0.8, 0.5, 0.1])
def test_ghvb_coefficients_match_official_mixer(q, beta):
    assert ghvb_coefficients(q, beta) == pytest.approx(_official(q, beta), rel=1e-12, abs=1e-12)


def test_adams_bashforth_coefficients_closed_forms():
    assert adams_bashforth_coefficients(1) == [1.0]
    assert adams_bashforth_coefficients(2) == pytest.approx([1.5, -0.5])
    assert adams_bashforth_coefficients(3) == pytest.approx([23 / 12, -16 / 12, 5 / 12])
    assert adams_bashforth_coefficients(4) == pytest.approx([55 / 24, -59 / 24, 37 / 24, -9 / 24])
    assert adams_bashforth_coefficients(5) == pytest.approx([1901 / 720, -2774 / 720, 2616 / 720, -1274 / 720,
                                                             251 / 720])
    assert ghvb_coefficients(2, 0.8) == pytest.approx([2.8 / 1.6, -1.2 / 1.6])


@settings(max_examples=40, deadline=None)
@given(q=st.integers(1, 5), beta=st.floats(0.01, 1.0))
def test_ghvb_coefficients_are_consistent(q, beta):
    # Property: the weights sum to 1 (a constant velocity is integrated exactly) for every order and beta.
    assert sum(ghvb_coefficients(q, beta)) == pytest.approx(1.0, rel=1e-9)


def _problem():
    gm = mixture_on_circle(6, 2, radius=3.0, std=0.3)
    cond, _ = class_conditional(gm, [0, 1] * 3)
    model = classifier_free_guidance(cond.denoise, gm.denoise, 3.0)
    sigmas = get_sigmas_karras(12, 0.02, 20.0)
    x = sigmas[0] * torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=D)
    return model, x, sigmas


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_momentum_one_is_plms_exactly(order):
    model, x, sigmas = _problem()
    base = sample_plms(model, x, sigmas, order=order)
    assert torch.equal(sample_plms_hb(model, x, sigmas, order=order, beta=1.0), base)
    assert torch.allclose(sample_ghvb(model, x, sigmas, order=order, beta=1.0), base, rtol=0, atol=1e-12)


def test_plms_order_one_is_euler():
    model, x, sigmas = _problem()
    assert torch.allclose(sample_plms(model, x, sigmas, order=1), sample_euler(model, x, sigmas), atol=1e-13)


def test_hb_beta_one_is_dpmpp_2m_and_k_diffusion():
    model, x, sigmas = _problem()
    ours = sample_hb(model, x, sigmas, beta=1.0)
    assert torch.equal(ours, sample_dpmpp_2m(model, x, sigmas))
    k = k_diffusion_sampling()
    ref = k.sample_dpmpp_2m(model, x.clone(), sigmas, disable=True)
    assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-12)


def test_hb_momentum_changes_dpmpp_2m_from_the_third_step():
    # The first (first-order) step has no momentum; the first second-order step starts the velocity at the 2M
    # combination itself, so two steps agree with DPM-Solver++(2M) and the third differs.
    model, x, sigmas = _problem()
    for n, same in ((2, True), (3, False)):
        a = sample_hb(model, x, sigmas[: n + 1], beta=0.5)
        b = sample_dpmpp_2m(model, x, sigmas[: n + 1])
        assert bool(torch.allclose(a, b, atol=1e-13)) is same


def _drive(step, xs, sigmas, eps):
    """Call ``step`` on given states/levels with denoised values that make its derivative ``eps[i]``."""
    ctx = SamplerContext(lambda x, s: x, sigmas, 0, None)
    out = None
    for i, (x, e) in enumerate(zip(xs, eps)):
        ctx.i = i
        out = step(x, sigmas[i], sigmas[i + 1], x - sigmas[i] * e, ctx)
    return out


def test_plms_steady_step_matches_diffusers_pndm():
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.PNDMScheduler(num_train_timesteps=1000, skip_prk_steps=True)
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(1)
    t = int(sched.timesteps[6])
    ratio = 1000 // 10
    ac = sched.alphas_cumprod.to(D)
    levels = [t + 3 * ratio, t + 2 * ratio, t + ratio, t, t - ratio]
    sig = torch.tensor([float(((1 - ac[s]) / ac[s]).sqrt()) for s in levels], dtype=D)
    eps = [torch.randn(5, 3, generator=g, dtype=D) for _ in range(4)]
    sample = torch.randn(5, 3, generator=g, dtype=D)
    sched.ets = [e.float() for e in eps[:3]]
    sched.counter = 5
    ref = sched.step_plms(eps[3].float(), t, sample.float()).prev_sample.to(D)
    x_ve = sample / ac[t].sqrt()
    xs = [torch.zeros(5, 3, dtype=D)] * 3 + [x_ve]
    ours = _drive(plms_step(4), xs, sig, eps) * ac[t - ratio].sqrt()
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5)


def _gaussian_exact(x0, s0, s, mu, std):
    # Single Gaussian N(mu, std^2 I): the PF-ODE solution is x - mu = (x0 - mu) sqrt((std^2 + s^2)/(std^2 + s0^2)).
    return mu + (x0 - mu) * math.sqrt((std**2 + s**2) / (std**2 + s0**2))


@pytest.mark.parametrize("q", [1, 2, 3, 4, 5])
def test_plms_local_error_order_on_exact_gaussian(q):
    mu, std = torch.tensor([[1.0, -0.5]], dtype=D), 0.7
    gm = GaussianMixture(mu, torch.full((1, 2, 2), 0.0, dtype=D) + std**2 * torch.eye(2, dtype=D))
    x_start = torch.tensor([[2.0, 1.0]], dtype=D)
    errs = []
    for h in (0.04, 0.02):
        sig = torch.tensor([2.0 - k * h for k in range(q + 1)], dtype=D)
        xs = [_gaussian_exact(x_start, 2.0, float(s), mu, std) for s in sig[:q]]
        eps = [(x - gm.denoise(x, float(s))) / s for x, s in zip(xs, sig[:q])]
        out = _drive(plms_step(q), xs, sig, eps)
        errs.append(float((out - _gaussian_exact(x_start, 2.0, float(sig[q]), mu, std)).norm()))
    assert math.log2(errs[0] / errs[1]) == pytest.approx(q + 1, abs=0.35)


def _global_order(sampler, **kw):
    mu, std = torch.tensor([[1.0, -0.5]], dtype=D), 0.7
    gm = GaussianMixture(mu, std**2 * torch.eye(2, dtype=D)[None])
    x0 = torch.tensor([[2.0, 1.0]], dtype=D)
    errs = []
    for n in (40, 80):
        sig = torch.linspace(3.0, 0.5, n + 1, dtype=D)
        out = sampler(gm.denoise, x0, sig, **kw)
        errs.append(float((out - _gaussian_exact(x0, 3.0, 0.5, mu, std)).norm()))
    return math.log2(errs[0] / errs[1])


def test_global_orders_hb_first_ghvb_second():
    # The paper's trade-off: heavy ball on PLMS is first order for beta < 1; GHVB keeps a higher order (its
    # lower-order warm-up caps the measured global order at 2, as for PLMS itself).
    assert _global_order(sample_plms, order=1) == pytest.approx(1, abs=0.15)
    assert _global_order(sample_plms, order=2) == pytest.approx(2, abs=0.2)
    assert _global_order(sample_plms_hb, order=4, beta=0.8) == pytest.approx(1, abs=0.2)
    assert _global_order(sample_ghvb, order=2, beta=0.8) == pytest.approx(2, abs=0.25)


@pytest.mark.parametrize("call,message", [
    (lambda: plms_step(0), "order must be >= 1, got 0"),
    (lambda: plms_hb_step(6), "order must be <= 5, got 6"),
    (lambda: ghvb_step(4, 0.0), "beta must be > 0.0, got 0.0"),
    (lambda: dpmpp_2m_hb_step(1.5), "beta must be <= 1.0, got 1.5"),
    (lambda: ghvb_coefficients(2, -0.1), "beta must be > 0"),
    (lambda: sample_ghvb(lambda x, s: x, torch.zeros(2, 2, dtype=D), torch.tensor([1.0, 0.0], dtype=D),
                         order=7), "order must be <= 5, got 7"),
    (lambda: sample_hb(lambda x, s: x[:1], torch.ones(2, 2, dtype=D), torch.tensor([1.0, 0.0], dtype=D)),
     "model must return a denoised tensor of the shape of x"),
])
def test_errors_name_the_argument(call, message):
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(").replace(")", r"\)")):
        call()
