"""PFGM++ (paperzoo.diffusion.pfgmpp): kernel draws against the closed-form radial law, the posterior mean against
the diffusion limit and the official code's field formula, and error messages."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from paperzoo.diffusion.mixture import GaussianMixture
from paperzoo.diffusion.pfgmpp import (EmpiricalPFGMPP, noise_injected_step, pfgmpp_noise, pfgmpp_perturb,
                                       pfgmpp_posterior_mean, pfgmpp_prior, pfgmpp_radius_cdf, radius_to_sigma,
                                       sigma_to_radius)
from paperzoo.diffusion.samplers import euler_step, run_sampler, sample_heun
from paperzoo.diffusion.schedules import get_sigmas_karras

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("method", ["beta", "t"])
@pytest.mark.parametrize("N,D", [(5, 3.0), (64, 8 / 3), (2, 128.0)])
def test_radius_matches_closed_form_ks(method, N, D):
    sigma = 0.7
    x = pfgmpp_perturb(torch.zeros(4000, N, dtype=F64), sigma, D, generator=_gen(1), method=method)
    radius = x.norm(dim=1)
    cdf = lambda r: pfgmpp_radius_cdf(torch.as_tensor(r, dtype=F64), sigma, N, D).numpy()
    assert stats.kstest(radius.numpy(), cdf).pvalue > 1e-3
    # R^2 / r^2 is beta-prime(N/2, D/2), r = sigma sqrt(D) (the official code's change of variables)
    ratio = (radius / sigma_to_radius(sigma, D)).square().numpy()
    assert stats.kstest(ratio, stats.betaprime(N / 2, D / 2).cdf).pvalue > 1e-3


def test_directions_uniform_and_second_moment():
    N, D = 4, 10.0
    eps = pfgmpp_noise(20000, (N,), D, generator=_gen(2), dtype=F64)
    # E||eps||^2 = D * E[B/(1-B)] = D * (N/2)/(D/2 - 1) = N D/(D - 2)
    assert float(eps.square().sum(1).mean()) == pytest.approx(N * D / (D - 2), rel=0.03)
    u = eps / eps.norm(dim=1, keepdim=True)
    assert float(u.mean(0).abs().max()) < 0.03
    assert torch.allclose(u.T @ u / len(u), torch.eye(N, dtype=F64) / N, atol=0.01)


def test_gaussian_limit_of_kernel():
    x = pfgmpp_noise(4000, (3,), math.inf, generator=_gen(3), dtype=F64)
    assert torch.equal(x, torch.randn(4000, 3, generator=_gen(3), dtype=F64))
    r_inf = pfgmpp_radius_cdf(torch.linspace(0, 4, 9, dtype=F64), 1.0, 3, math.inf)
    r_big = pfgmpp_radius_cdf(torch.linspace(0, 4, 9, dtype=F64), 1.0, 3, 1e7)
    assert torch.allclose(r_inf, torch.from_numpy(stats.chi(3).cdf(torch.linspace(0, 4, 9).numpy())), atol=1e-12)
    assert torch.allclose(r_big, r_inf, atol=1e-5)


def test_student_t_form_shares_gaussian_draw():
    z = pfgmpp_noise(50, (6,), math.inf, generator=_gen(4), dtype=F64)
    t = pfgmpp_noise(50, (6,), 1e9, generator=_gen(4), dtype=F64, method="t")
    assert torch.allclose(t, z, rtol=1e-3)


def test_prior_radius_is_official_latent_law():
    # generate.py: latents = unit direction * sqrt(B/(1-B)) * sigma_max * sqrt(D), B ~ Beta(N/2, D/2)
    N, D, smax = 12, 128.0, 80.0
    x = pfgmpp_prior(3000, (3, 2, 2), smax, D, generator=_gen(5), dtype=F64)
    assert x.shape == (3000, 3, 2, 2)
    b = (x.flatten(1).norm(dim=1) / (smax * math.sqrt(D))).square()
    b = (b / (1 + b)).numpy()           # back to the Beta draw
    assert stats.kstest(b, stats.beta(N / 2, D / 2).cdf).pvalue > 1e-3


def test_posterior_mean_large_D_is_gaussian_posterior():
    g = _gen(6)
    data = torch.randn(7, 3, generator=g, dtype=F64)
    x = 1.5 * torch.randn(20, 3, generator=g, dtype=F64)
    sigma = torch.rand(20, generator=g, dtype=F64) + 0.3
    gm = GaussianMixture(data, 1e-14 * torch.eye(3, dtype=F64).expand(7, 3, 3).clone())
    exact = gm.denoise(x, sigma)
    assert torch.allclose(pfgmpp_posterior_mean(x, sigma, data, math.inf), exact, atol=1e-9)
    assert torch.allclose(pfgmpp_posterior_mean(x, sigma, data, 1e9), exact, atol=1e-6)
    assert not torch.allclose(pfgmpp_posterior_mean(x, sigma, data, 2.0), exact, atol=1e-2)


def _official_field_target(x, r, data, N, D):
    """The official loss.py pfgmpp_target written out: augmented (x, r) against (y_i, 0), coefficients
    (min distance / distance)^(N+D) normalised with its 1e-7 guards, target = the weighted data (first N coords)."""
    xv = torch.cat([x, r[:, None]], 1)
    yv = torch.cat([data, torch.zeros(len(data), 1, dtype=F64)], 1)
    dist = (xv[:, None] - yv).square().sum(-1).sqrt()
    coeff = (dist.min(1, keepdim=True).values / (dist + 1e-7)) ** (N + D)
    coeff = coeff / (coeff.sum(1, keepdim=True) + 1e-7)
    return (coeff[:, :, None] * yv).sum(1)[:, :-1]


def test_posterior_mean_matches_official_target():
    N, D = 4, 128.0
    g = _gen(7)
    data = torch.randn(9, N, generator=g, dtype=F64)
    sigma = torch.tensor([0.2, 0.5, 1.0, 3.0], dtype=F64)
    x = pfgmpp_perturb(data[:4], sigma, D, generator=g)
    ours = pfgmpp_posterior_mean(x, sigma, data, D)
    official = _official_field_target(x, sigma_to_radius(sigma, D), data, N, D)
    assert torch.allclose(ours, official, atol=1e-6)
    assert radius_to_sigma(sigma_to_radius(0.3, D), D) == pytest.approx(0.3)


def test_posterior_mean_minimises_kernel_denoising_loss():
    # the posterior mean under the D-kernel is the least-squares denoiser of D-kernel perturbations
    g = _gen(8)
    data = torch.randn(5, 2, generator=g, dtype=F64)
    y = data[torch.randint(0, 5, (20000,), generator=g)]
    x = pfgmpp_perturb(y, 0.8, 2.0, generator=g)
    loss = {D: float((pfgmpp_posterior_mean(x, 0.8, data, D) - y).square().sum(1).mean())
            for D in (1.0, 2.0, 8.0, math.inf)}
    assert loss[2.0] < min(loss[1.0], loss[8.0], loss[math.inf])


def test_levels_zero_inf_and_weights():
    data = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]], dtype=F64)
    x = torch.tensor([[1.8, 0.1], [0.1, 0.1]], dtype=F64)
    out = pfgmpp_posterior_mean(x, torch.tensor([0.0, math.inf], dtype=F64), data, 4.0)
    assert torch.allclose(out[0], data[1]) and torch.allclose(out[1], data.mean(0))
    w = torch.tensor([1.0, 0.0, 1.0], dtype=F64)
    out = pfgmpp_posterior_mean(x, 0.5, data, 4.0, weights=w)
    assert torch.allclose(EmpiricalPFGMPP(data, 4.0, w)(x, 0.5), out)
    assert torch.allclose(out, pfgmpp_posterior_mean(x, 0.5, data[[0, 2]], 4.0))


def test_sampler_lands_on_data_and_injection():
    g = _gen(9)
    data = torch.randn(10, 3, generator=g, dtype=F64)
    sigmas = get_sigmas_karras(18, 0.002, 80.0, dtype=F64)
    model = EmpiricalPFGMPP(data, 3.0)
    x0 = pfgmpp_prior(64, (3,), 80.0, 3.0, generator=g, dtype=F64)
    out = sample_heun(model, x0, sigmas)
    assert float(torch.cdist(out, data).min(1).values.max()) < 1e-4
    plain = run_sampler(model, x0, sigmas, euler_step)
    assert torch.equal(run_sampler(model, x0, sigmas, noise_injected_step(euler_step, 0.0)), plain)
    noisy = run_sampler(model, x0, sigmas, noise_injected_step(euler_step, 0.3, generator=_gen(1)))
    assert not torch.allclose(noisy, plain)


@settings(max_examples=25, deadline=None)
@given(D=st.floats(0.1, 1e6), sigma=st.floats(1e-3, 1e3), seed=st.integers(0, 2**31))
def test_posterior_mean_in_hull(D, sigma, seed):
    g = _gen(seed)
    data = torch.randn(6, 3, generator=g, dtype=F64)
    x = 10 * torch.randn(5, 3, generator=g, dtype=F64)
    out = pfgmpp_posterior_mean(x, sigma, data, D)
    assert bool(torch.isfinite(out).all())
    assert bool((out >= data.min(0).values - 1e-9).all() and (out <= data.max(0).values + 1e-9).all())


def test_float32():
    data = torch.randn(6, 3, generator=_gen(10))
    x = pfgmpp_perturb(data, 0.5, 8.0, generator=_gen(11))
    assert x.dtype == torch.float32 and pfgmpp_posterior_mean(x, 0.5, data, 8.0).dtype == torch.float32


def test_error_messages():
    data = torch.zeros(4, 3, dtype=F64)
    with pytest.raises(ValueError, match=r"D must be > 0 \(or math.inf for diffusion\), got 0.0"):
        pfgmpp_noise(3, (2,), 0.0)
    with pytest.raises(ValueError, match="D must be > 0"):
        pfgmpp_posterior_mean(data, 1.0, data, math.nan)
    with pytest.raises(TypeError, match="D must be a real number > 0 or math.inf, got bool"):
        EmpiricalPFGMPP(data, True)
    with pytest.raises(ValueError, match=r"x must have the data's per-sample shape \(3,\), got \(4, 2\)"):
        pfgmpp_posterior_mean(torch.zeros(4, 2, dtype=F64), 1.0, data, 4.0)
    with pytest.raises(ValueError, match=r"x must have the data's per-sample shape"):
        EmpiricalPFGMPP(data, 4.0)(torch.zeros(4, 2, dtype=F64), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        pfgmpp_perturb(data, -1.0, 4.0)
    with pytest.raises(ValueError, match="method"):
        pfgmpp_noise(3, (2,), 4.0, method="gauss")
    with pytest.raises(ValueError, match="shape"):
        pfgmpp_noise(3, (0,), 4.0)
    with pytest.raises(ValueError, match="alpha"):
        noise_injected_step(euler_step, -0.1)
