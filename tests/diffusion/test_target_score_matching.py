"""Target Score Matching: the identities on exact mixtures, the variance closed forms, losses and conversions.

No reference package implements TSM; the references are closed forms (single Gaussians, where every posterior is
Gaussian) and the exact mixture scores, with Monte Carlo over the exact posterior of x0 given x.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle
from paperzoo.diffusion.target_score_matching import (denoiser_from_score, denoising_score_matching_loss,
                                                      dsm_target, mixed_score_target, score_from_denoiser,
                                                      target_score_estimate, target_score_matching_loss, tsm_target)

D = torch.float64


def _posterior_draws(gm: GaussianMixture, x: torch.Tensor, sigma: float, m: int, seed: int) -> torch.Tensor:
    """``m`` exact draws of x0 | x0 + sigma eps = x for each row of ``x``: ``(m, N, d)``."""
    g = torch.Generator().manual_seed(seed)
    eye = torch.eye(gm.dim, dtype=D)
    return torch.stack([gm.posterior(eye, xi, sigma).sample(m, generator=g) for xi in x], dim=1)


@pytest.mark.parametrize("sigma", [0.05, 0.5, 2.0])
def test_both_targets_are_unbiased_for_the_exact_noisy_score(sigma):
    gm = mixture_on_circle(4, 2, radius=2.0, std=0.5)
    x = gm.sample(4, sigma=sigma, generator=torch.Generator().manual_seed(1))
    x0 = _posterior_draws(gm, x, sigma, 20_000, seed=2)
    grad = gm.score(x0, 0.0)
    exact = gm.score(x, sigma)
    xb = x.expand_as(x0)
    for kappa in (1.0, 0.0, 0.3):
        targets = mixed_score_target(xb.reshape(-1, 2), x0.reshape(-1, 2), grad.reshape(-1, 2), sigma,
                                     kappa=kappa).view_as(x0)
        estimate = target_score_estimate(x, x0, grad, sigma, kappa=kappa)
        torch.testing.assert_close(estimate, targets.mean(0))
        se = targets.std(0) / math.sqrt(x0.shape[0])
        assert bool(((estimate - exact).abs() <= 5 * se + 1e-12).all()), (kappa, estimate, exact, se)


def test_tsm_variance_is_lower_at_small_sigma_and_higher_at_large_sigma():
    gm = mixture_on_circle(4, 2, radius=2.0, std=0.5)
    x = gm.sample(3, generator=torch.Generator().manual_seed(3))
    for sigma, tsm_lower in ((0.02, True), (0.2, True), (5.0, False)):
        xs = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=D)
        x0 = _posterior_draws(gm, xs, sigma, 4000, seed=5)
        v_tsm = tsm_target(gm.score(x0.reshape(-1, 2), 0.0)).view_as(x0).var(0).sum(-1)
        v_dsm = dsm_target(xs.expand_as(x0).reshape(-1, 2), x0.reshape(-1, 2), sigma).view_as(x0).var(0).sum(-1)
        assert bool((v_tsm < v_dsm).all()) == tsm_lower and bool((v_tsm > v_dsm).all()) != tsm_lower


@pytest.mark.parametrize("sigma", [0.1, 0.7, 3.0])
def test_single_gaussian_variance_ratio_is_sigma4_over_s4(sigma):
    # p0 = N(mu, s^2 I): x0 | x is N(m, v I), v = s^2 sigma^2 / (s^2 + sigma^2);
    # Var TSM = d v / s^4, Var DSM = d v / sigma^4.
    s, mu = 0.6, torch.tensor([1.0, -2.0], dtype=D)
    gm = GaussianMixture(mu[None], torch.eye(2, dtype=D)[None] * s**2)
    g = torch.Generator().manual_seed(6)
    n = 200_000
    x0 = gm.sample(n, generator=g)
    x = x0 + sigma * torch.randn(n, 2, generator=g, dtype=D)
    exact = gm.score(x, sigma)
    v = s**2 * sigma**2 / (s**2 + sigma**2)
    # E||T - score(x)||^2 = E Var(T | x): the irreducible part of each loss
    v_tsm = float((tsm_target(gm.score(x0, 0.0)) - exact).square().sum(-1).mean())
    v_dsm = float((dsm_target(x, x0, sigma) - exact).square().sum(-1).mean())
    assert v_tsm == pytest.approx(2 * v / s**4, rel=0.02)
    assert v_dsm == pytest.approx(2 * v / sigma**4, rel=0.02)
    # the losses at the exact score are those irreducible parts (per dimension)
    sig = torch.full((n,), sigma, dtype=D)
    noise = (x - x0) / sigma
    exact_model = lambda y, lv: gm.score(y, lv)  # noqa: E731
    tsm = target_score_matching_loss(exact_model, x0, gm.score(x0, 0.0), sig, noise=noise)
    dsm = denoising_score_matching_loss(exact_model, x0, sig, noise=noise)
    assert float(tsm) == pytest.approx(v_tsm / 2, rel=1e-9) and float(dsm) == pytest.approx(v_dsm / 2, rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(mu=st.floats(-3, 3), s=st.floats(0.2, 3), sigma=st.floats(0.01, 10), alpha=st.floats(0.05, 1.0),
       x=st.floats(-5, 5))
def test_targets_at_the_posterior_mean_are_the_exact_score_for_a_gaussian(mu, s, sigma, alpha, x):
    # Both targets are affine in x0, so E[T | x] = T(E[x0 | x]); for p0 = N(mu, s^2) and x = alpha x0 + sigma eps,
    # with v = alpha^2 s^2 + sigma^2: E[x0 | x] = mu + alpha s^2 (x - alpha mu) / v and the score is
    # -(x - alpha mu) / v: the Target and the Denoising Score Identities, with the scale alpha.
    var = alpha**2 * s**2 + sigma**2
    xt = torch.tensor([[x]], dtype=D)
    m = mu + alpha * s**2 * (xt - alpha * mu) / var
    exact = -(xt - alpha * mu) / var
    grad = -(m - mu) / s**2
    torch.testing.assert_close(tsm_target(grad, alpha=alpha), exact, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(dsm_target(xt, m, sigma, alpha=alpha), exact, rtol=1e-7, atol=1e-7)
    k = torch.tensor([0.4], dtype=D)
    torch.testing.assert_close(mixed_score_target(xt, m, grad, sigma, alpha=alpha, kappa=k), exact, rtol=1e-7,
                               atol=1e-7)


def test_loss_formula_with_scale_kappa_and_weighting():
    g = torch.Generator().manual_seed(7)
    x0, noise = torch.randn(8, 3, generator=g, dtype=D), torch.randn(8, 3, generator=g, dtype=D)
    grad = torch.randn(8, 3, generator=g, dtype=D)
    sigma, alpha = torch.rand(8, generator=g, dtype=D) + 0.1, torch.rand(8, generator=g, dtype=D) + 0.5
    kappa = torch.rand(8, generator=g, dtype=D)
    model = lambda y, lv: torch.tanh(y) * lv[:, None]  # noqa: E731
    x = alpha[:, None] * x0 + sigma[:, None] * noise
    target = kappa[:, None] * grad / alpha[:, None] - (1 - kappa[:, None]) * noise / sigma[:, None]
    w = lambda lv: lv.square()  # noqa: E731
    expected = (w(sigma) * (model(x, sigma) - target).square().mean(-1)).mean()
    got = target_score_matching_loss(model, x0, grad, sigma, alpha=alpha, kappa=kappa, weighting=w, noise=noise)
    torch.testing.assert_close(got, expected)
    dsm = denoising_score_matching_loss(model, x0, sigma, alpha=alpha, noise=noise)
    torch.testing.assert_close(dsm, target_score_matching_loss(model, x0, grad, sigma, alpha=alpha, kappa=0.0,
                                                               noise=noise))
    # DSM on s = -F / sigma is the eps-prediction loss weighted by 1 / sigma^2
    torch.testing.assert_close(denoising_score_matching_loss(lambda y, lv: -torch.tanh(y) / lv[:, None], x0, sigma,
                                                             noise=noise),
                               ((torch.tanh(x0 + sigma[:, None] * noise) - noise).square().mean(-1)
                                / sigma.square()).mean())


def test_loss_has_gradients_and_draws_noise_from_the_generator():
    w = torch.zeros(2, dtype=D, requires_grad=True)
    model = lambda y, lv: y * w  # noqa: E731
    x0 = torch.randn(16, 2, dtype=D, generator=torch.Generator().manual_seed(8))
    sigma = torch.full((16,), 0.3, dtype=D)
    a = target_score_matching_loss(model, x0, -x0, sigma, generator=torch.Generator().manual_seed(9))
    b = target_score_matching_loss(model, x0, -x0, sigma, generator=torch.Generator().manual_seed(9))
    a.backward()
    assert a.item() == b.item() and w.grad is not None and bool(torch.isfinite(w.grad).all())


def test_importance_sampled_estimator_tsm_is_more_accurate_at_low_noise():
    # Proposals x0 = x + sigma z reweighted by p0 (the paper's estimators from a sampler of x0 | x): both consistent,
    # TSM far closer at sigma = 0.05.
    gm = mixture_on_circle(4, 2, radius=2.0, std=0.5)
    g = torch.Generator().manual_seed(10)
    sigma, m = 0.05, 256
    x = gm.sample(64, sigma=sigma, generator=g)
    x0 = x + sigma * torch.randn(m, *x.shape, generator=g, dtype=D)
    logw = gm.log_prob(x0)
    exact = gm.score(x, sigma)
    err = {k: float((target_score_estimate(x, x0, gm.score(x0, 0.0), sigma, kappa=k, log_weights=logw)
                     - exact).square().sum(-1).mean()) for k in (1.0, 0.0)}
    assert err[1.0] < 1e-3 * err[0.0] and err[0.0] < 1.0 / sigma**2 / m * 10


def test_tweedie_conversions_match_the_mixture():
    gm = mixture_on_circle(4, 2, radius=2.0, std=0.5)
    x = torch.randn(6, 2, dtype=D, generator=torch.Generator().manual_seed(11)) * 2
    sigma = torch.linspace(0.1, 3.0, 6, dtype=D)
    torch.testing.assert_close(score_from_denoiser(gm.denoise)(x, sigma), gm.score(x, sigma))
    torch.testing.assert_close(denoiser_from_score(gm.score)(x, sigma), gm.denoise(x, sigma))
    torch.testing.assert_close(score_from_denoiser(gm.denoise)(x, 0.5), gm.score(x, 0.5))


def test_bad_inputs_name_the_argument():
    x0 = torch.randn(4, 2, dtype=D)
    sigma = torch.full((4,), 0.5, dtype=D)
    model = lambda y, lv: -y  # noqa: E731
    with pytest.raises(ValueError, match=r"sigma must be > 0 entrywise, got a minimum of 0.0"):
        target_score_matching_loss(model, x0, -x0, torch.tensor([0.5, 0.0, 1.0, 1.0], dtype=D))
    with pytest.raises(ValueError, match=r"kappa must be <= 1.0, got 1.5"):
        target_score_matching_loss(model, x0, -x0, sigma, kappa=1.5)
    with pytest.raises(ValueError, match=r"kappa must be <= 1 entrywise, got a maximum of 2.0"):
        mixed_score_target(x0, x0, -x0, 0.5, kappa=torch.tensor([0.0, 2.0, 0.5, 0.5], dtype=D))
    with pytest.raises(ValueError, match=r"alpha must be > 0 entrywise"):
        tsm_target(x0, alpha=torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=D))
    with pytest.raises(ValueError, match=r"sigma must be > 0.0, got 0.0"):
        dsm_target(x0, x0, 0.0)
    with pytest.raises(ValueError, match=r"grad_log_p0 must have N = 4 \(from x0\)"):
        target_score_matching_loss(model, x0, torch.zeros(3, 2, dtype=D), sigma)
    with pytest.raises(ValueError, match=r"score_model must return a tensor of the states' shape \(4, 2\), got \(4,\)"):
        target_score_matching_loss(lambda y, lv: y.sum(-1), x0, -x0, sigma)
    with pytest.raises(ValueError, match=r"weighting must return a tensor of shape \(4,\)"):
        denoising_score_matching_loss(model, x0, sigma, weighting=lambda lv: 1.0)
    with pytest.raises(TypeError, match=r"score_model must be callable"):
        denoising_score_matching_loss(3, x0, sigma)
    with pytest.raises(ValueError, match=r"log_weights must have N = 2 \(from x\)"):
        target_score_estimate(x0[:2], x0[None, :2], x0[None, :2], 0.5, log_weights=torch.zeros(1, 3, dtype=D))
