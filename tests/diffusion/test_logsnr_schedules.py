"""Log-SNR training schedules (Laplace, Cauchy, cosine): scipy.stats' densities, the paper's closed-form lambda(t),
KS tests of the draws, the importance weights that turn one schedule's loss into another's, pinned errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.logsnr_schedules import (LogSNRSchedule, cauchy_schedule, cosine_logsnr_schedule,
                                                 importance_weight, importance_weighting, laplace_schedule)
from paperzoo.diffusion.training import MLPDenoiser, denoising_loss, train_denoiser

D = torch.float64
stats = pytest.importorskip("scipy.stats")


def _reference(family: str, loc: float, scale: float):
    """scipy.stats' law of lambda: hypsecant has density sech(x)/pi, so the cosine's sech(l/2)/(2 pi) is scale 2."""
    if family == "laplace":
        return stats.laplace(loc, scale)
    if family == "cauchy":
        return stats.cauchy(loc, scale)
    return stats.hypsecant(loc, 2 * scale)


CASES = [("laplace", 0.0, 0.5), ("laplace", 1.0, 2.0), ("cauchy", 0.0, 1.0), ("cauchy", -1.0, 0.3),
         ("cosine", 0.0, 1.0), ("cosine", 2.0, 0.5)]


@pytest.mark.parametrize("family,loc,scale", CASES)
def test_density_and_cdf_match_scipy_truncated(family, loc, scale):
    sched = LogSNRSchedule(family, loc, scale, logsnr_min=-8.0, logsnr_max=9.0)
    ref = _reference(family, loc, scale)
    mass = ref.cdf(9.0) - ref.cdf(-8.0)
    lam = torch.linspace(-10, 11, 211, dtype=D)
    inside = (lam >= -8) & (lam <= 9)
    want_p = torch.where(inside, torch.tensor(ref.pdf(lam.numpy())) / mass, torch.zeros_like(lam))
    want_c = ((torch.tensor(ref.cdf(lam.numpy())) - ref.cdf(-8.0)) / mass).clamp(0, 1)
    torch.testing.assert_close(sched.density(lam), want_p, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(sched.cdf(lam), want_c, rtol=1e-9, atol=1e-12)


def test_paper_closed_forms_of_lambda_t():
    t = torch.linspace(0.01, 0.99, 99, dtype=D)
    mu, b, gamma = 0.3, 0.5, 1.0
    laplace = mu - b * torch.sign(0.5 - t) * torch.log(1 - 2 * (t - 0.5).abs())
    cauchy = mu + gamma * torch.tan(0.5 * math.pi * (1 - 2 * t))
    cosine = -2 * torch.log(torch.tan(0.5 * math.pi * t))
    # the default truncation [-20, 20] keeps all but < 1e-4 of the mass: the maps agree to that order
    torch.testing.assert_close(laplace_schedule(mu, b).logsnr(t), laplace, rtol=0, atol=1e-12)
    big = dict(logsnr_min=-1e6, logsnr_max=1e6)
    # the Cauchy loses 2 / (pi * 1e9) of its mass to the truncation
    huge = dict(logsnr_min=-1e9, logsnr_max=1e9)
    torch.testing.assert_close(cauchy_schedule(mu, gamma, **huge).logsnr(t), cauchy, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(cosine_logsnr_schedule(**big).logsnr(t), cosine, rtol=1e-9, atol=1e-9)
    # the cosine's lambda(t) is log(abar / (1 - abar)) of improved DDPM's abar(t) = cos^2(pi t / 2)
    abar = torch.cos(0.5 * math.pi * t).square()
    torch.testing.assert_close(cosine, torch.log(abar / (1 - abar)))
    # shifted and scaled cosine: shift + (2 / s) * log cot(pi t / 2)
    torch.testing.assert_close(cosine_logsnr_schedule(1.5, 2.0, **big).logsnr(t), 1.5 + cosine / 2.0)
    ends = laplace_schedule(logsnr_min=-7.0, logsnr_max=6.0).logsnr(torch.tensor([0.0, 1.0], dtype=D))
    torch.testing.assert_close(ends, torch.tensor([6.0, -7.0], dtype=D), rtol=0, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(CASES), st.floats(0.001, 0.999))
def test_cdf_inverts_lambda_t(case, t):
    sched = LogSNRSchedule(*case, logsnr_min=-15.0, logsnr_max=15.0)
    lam = sched.logsnr(torch.tensor(t, dtype=D))
    assert abs(float(sched.cdf(lam)) - (1 - t)) < 1e-9


@pytest.mark.parametrize("family,loc,scale", CASES[::2])
def test_draws_pass_ks_against_closed_form(family, loc, scale):
    sched = LogSNRSchedule(family, loc, scale, logsnr_min=-12.0, logsnr_max=12.0)
    g = torch.Generator().manual_seed(3)
    lam = sched.sample_logsnr(20000, g)
    cdf = lambda v: sched.cdf(torch.as_tensor(v, dtype=D)).numpy()  # noqa: E731
    assert stats.kstest(lam.numpy(), cdf).pvalue > 1e-3
    # the VE levels carry the same law through lambda = -2 log sigma
    sig = sched.sample_sigmas(20000, torch.Generator().manual_seed(4))
    assert stats.kstest((-2 * sig.log()).numpy(), cdf).pvalue > 1e-3
    # and the test discriminates: a schedule of twice the scale is rejected
    other = LogSNRSchedule(family, loc, 2 * scale, logsnr_min=-12.0, logsnr_max=12.0)
    assert stats.kstest(lam.numpy(), lambda v: other.cdf(torch.as_tensor(v, dtype=D)).numpy()).pvalue < 1e-6


def test_importance_weights_turn_cosine_draws_into_laplace_expectations():
    lap, cos = laplace_schedule(0.0, 0.5), cosine_logsnr_schedule()
    # closed form: E_laplace[lambda^2] = 2 b^2, as an integral over the cosine's density with weight p / q
    lam = torch.linspace(-20, 20, 40001, dtype=D)
    sig = torch.exp(-0.5 * lam)
    integrand = cos.density(lam) * importance_weight(sig, lap, cos) * lam.square()
    assert abs(float(torch.trapezoid(integrand, lam)) - 2 * 0.5 ** 2) < 1e-6
    # Monte Carlo: the same with cosine draws, within 4 standard errors
    s = cos.sample_sigmas(50000, torch.Generator().manual_seed(0))
    v = importance_weight(s, lap, cos) * (-2 * s.log()).square()
    assert abs(float(v.mean()) - 0.5) < 4 * float(v.std()) / math.sqrt(v.numel())


def test_weighted_denoising_loss_equals_target_schedule_loss():
    """E over Laplace levels of the loss = E over cosine levels of the importance-weighted loss (same network)."""
    torch.manual_seed(0)
    net = MLPDenoiser(2, 16, 1, space="ve").to(D)  # unscaled inputs: a loss that varies strongly with sigma
    lap, cos = laplace_schedule(0.0, 0.5), cosine_logsnr_schedule()
    hook = importance_weighting(lap, cos)
    chunks, size = 16, 1000
    g = torch.Generator().manual_seed(1)
    means_p, means_q = [], []
    with torch.no_grad():
        for _ in range(chunks):
            x0 = torch.randn(size, 2, generator=g, dtype=D)
            means_p.append(float(denoising_loss(net, x0, lap.sample_sigmas(size, g), generator=g)))
            means_q.append(float(denoising_loss(net, x0, cos.sample_sigmas(size, g), weighting=hook, generator=g)))
        plain = float(denoising_loss(net, x0, cos.sample_sigmas(size, g), generator=g))
    p, q = torch.tensor(means_p, dtype=D), torch.tensor(means_q, dtype=D)
    se = math.sqrt(float(p.var() + q.var()) / chunks)
    assert abs(float(p.mean() - q.mean())) < 4 * se
    # not a vacuous tolerance: the unweighted cosine loss would fail the same test
    assert 4 * se < abs(float(p.mean()) - plain)


def test_schedule_is_a_train_denoiser_hook_in_float32():
    sched = laplace_schedule(dtype=torch.float32)
    s = sched(8, torch.Generator().manual_seed(0))
    assert s.dtype == torch.float32 and s.shape == (8,) and bool((s > 0).all())
    net = MLPDenoiser(2, 8, 1)
    hist = train_denoiser(net, lambda n, g: torch.randn(n, 2, generator=g), sched, steps=3, batch_size=16,
                          generator=torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(hist).all())


def test_cauchy_tails_stay_finite():
    s = cauchy_schedule().sample_sigmas(100000, torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(s).all()) and bool((s > 0).all())
    lam = -2 * s.log()
    assert float(lam.min()) >= -20 - 1e-9 and float(lam.max()) <= 20 + 1e-9


def test_errors():
    with pytest.raises(ValueError, match="family must be one of"):
        LogSNRSchedule("gauss")
    with pytest.raises(ValueError, match="scale must be > 0"):
        LogSNRSchedule("laplace", 0.0, 0.0)
    with pytest.raises(ValueError, match="b must be > 0"):
        laplace_schedule(b=-1.0)
    with pytest.raises(ValueError, match="gamma must be > 0"):
        cauchy_schedule(gamma=0.0)
    with pytest.raises(ValueError, match="logsnr_min must be < logsnr_max, got 3.0 and 1.0"):
        laplace_schedule(logsnr_min=3.0, logsnr_max=1.0)
    with pytest.raises(ValueError, match="must keep some of the density's mass"):
        laplace_schedule(0.0, 0.01, logsnr_min=50.0, logsnr_max=60.0)
    with pytest.raises(ValueError, match="t must be <= 1"):
        laplace_schedule().logsnr(torch.tensor([0.5, 1.5], dtype=D))
    with pytest.raises(ValueError, match="t must be"):
        laplace_schedule().logsnr(torch.tensor([-0.1], dtype=D))
    with pytest.raises(ValueError, match="proposal must cover the target's log-SNR range"):
        importance_weighting(laplace_schedule(), cosine_logsnr_schedule(logsnr_min=-5.0, logsnr_max=5.0))
    with pytest.raises(TypeError, match="target must be a"):
        importance_weight(torch.ones(3, dtype=D), "laplace", cosine_logsnr_schedule())
    with pytest.raises(ValueError, match="n must be >= 1"):
        laplace_schedule().sample_sigmas(0)
    with pytest.raises(TypeError, match="dtype must be a floating dtype"):
        laplace_schedule(dtype=torch.int64)
