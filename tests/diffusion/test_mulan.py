"""Tests for paperzoo.diffusion.mulan (MuLAN: learned multivariate, input-conditioned noise schedules)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.mulan import (GaussianContextEncoder, MuLANEpsNetwork, PolynomialNoiseSchedule,
                                      gaussian_context_kl, mulan_eps_model, mulan_nelbo, train_mulan)
from paperzoo.diffusion.vdm import diagonal_gaussian_eps_model, gaussian_vdm_terms, schedule_with_derivative, vdm_nelbo

F64 = torch.float64


def _scrambled_schedule(dim, context_dim, seed, shared=False, scale=3.0):
    """A schedule with large random coefficients (far from its initialisation, a zero a-head included)."""
    torch.manual_seed(seed)
    sched = PolynomialNoiseSchedule(dim, context_dim, n_features=16, shared=shared).double()
    with torch.no_grad():
        for p in sched.parameters():
            p.copy_(scale * torch.randn_like(p))
    return sched


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), context_dim=st.sampled_from([0, 3]))
def test_gamma_monotone_in_t_for_every_dimension_and_context_and_pinned_endpoints(seed, context_dim):
    dim, n_ctx = 5, 7
    sched = _scrambled_schedule(dim, context_dim, seed)
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n_ctx, context_dim, generator=g, dtype=F64) * 3 if context_dim else None
    t = torch.linspace(0, 1, 201, dtype=F64)
    with torch.no_grad():  # every (time, context) pair in one batch -> (T, n_ctx, D)
        gam = sched(t.repeat_interleave(n_ctx), None if c is None else c.repeat(201, 1)).reshape(201, n_ctx, dim)
    assert gam.shape == (201, n_ctx, dim)
    assert bool((gam.diff(dim=0) >= -1e-9).all())
    torch.testing.assert_close(gam[0], torch.full((n_ctx, dim), -13.3, dtype=F64), rtol=0, atol=1e-9)
    torch.testing.assert_close(gam[-1], torch.full((n_ctx, dim), 5.0, dtype=F64), rtol=0, atol=1e-9)
    # the schedule really varies across dimensions (and contexts) in its interior
    assert float(gam[100].std()) > 1e-3


def test_polynomial_is_the_integral_of_the_squared_quadratic_and_derivative_matches_jvp():
    sched = _scrambled_schedule(3, 2, 0)
    c = torch.randn(4, 2, dtype=F64)
    a, b, k = sched.coefficients(c, 4)
    assert bool((k >= 1e-3).all())
    # the closed-form derivative is (gmax - gmin) (a t^2 + b t + k)^2 / P(1); integrate it numerically
    s = torch.linspace(0, 1, 20001, dtype=F64)
    ss, cc = s.repeat_interleave(4), c.repeat(len(s), 1)
    with torch.no_grad():
        dg = sched.derivative(ss, cc).reshape(len(s), 4, 3)
        integral = torch.trapezoid(dg, s, dim=0)
    torch.testing.assert_close(integral, torch.full((4, 3), 18.3, dtype=F64), rtol=1e-6, atol=0)
    t = torch.rand(4, dtype=F64)
    gamma, dgamma = schedule_with_derivative(lambda tt: sched(tt, c), t)
    torch.testing.assert_close(dgamma, sched.derivative(t, c))
    with torch.no_grad():
        mid = sched(ss, cc).reshape(len(s), 4, 3)[::100]
    cumulative = torch.cat([torch.zeros(1, 4, 3, dtype=F64), torch.cumulative_trapezoid(dg, s, dim=0)])
    torch.testing.assert_close(mid, -13.3 + cumulative[::100], rtol=0, atol=1e-6)


def test_context_free_shared_schedule_gives_exactly_vdm_nelbo():
    torch.manual_seed(0)
    sched = _scrambled_schedule(3, 0, 1, shared=True, scale=1.0)
    net = MuLANEpsNetwork(3, hidden=16).double()
    with torch.no_grad():
        net.net[-1].weight.normal_()
    x = torch.randn(32, 3, dtype=F64)
    t, noise = torch.rand(32, dtype=F64), torch.randn(32, 3, dtype=F64)
    m = mulan_nelbo(mulan_eps_model(net), sched, x, t=t, noise=noise)
    scalar = vdm_nelbo(lambda z, tt, g: net(z, g), lambda tt: sched(tt)[:, 0], x, t=t, noise=noise)
    assert bool((m.kl_context == 0).all())
    for a, b in ((m.total, scalar.total), (m.prior, scalar.prior), (m.reconstruction, scalar.reconstruction),
                 (m.diffusion, scalar.diffusion)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_context_bound_is_vdm_of_the_conditioned_schedule_plus_kl():
    torch.manual_seed(0)
    enc = GaussianContextEncoder(3, latent_size=2, hidden=8).double()
    sched = _scrambled_schedule(3, 2, 2, scale=1.0)
    net = MuLANEpsNetwork(3, context_dim=2, hidden=8).double()
    x = torch.randn(16, 3, dtype=F64)
    t, noise, xi = torch.rand(16, dtype=F64), torch.randn(16, 3, dtype=F64), torch.randn(16, 2, dtype=F64)
    m = mulan_nelbo(mulan_eps_model(net), sched, x, context_encoder=enc, t=t, noise=noise, context_noise=xi)
    mu, var = enc(x)
    c = mu + var.sqrt() * xi
    v = vdm_nelbo(lambda z, tt, g: net(z, g, c), lambda tt: sched(tt, c), x, t=t, noise=noise)
    torch.testing.assert_close(m.kl_context, gaussian_context_kl(mu, var))
    torch.testing.assert_close(m.total, v.total + m.kl_context)


def test_kl_matches_torch_distributions_closed_form():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(5, 4, generator=g, dtype=F64)
    var = torch.rand(5, 4, generator=g, dtype=F64) * 3 + 0.01
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, var.sqrt()),
                                            torch.distributions.Normal(torch.zeros_like(mu), 1.0)).sum(-1)
    torch.testing.assert_close(gaussian_context_kl(mu, var), ref)
    assert float(gaussian_context_kl(torch.zeros(1, 3, dtype=F64), torch.ones(1, 3, dtype=F64))) == 0.0


def test_per_dimension_schedule_keeps_the_exact_bound_on_independent_gaussian_data():
    """Independent dims + the exact eps-model: each dim's diffusion term depends only on its endpoints, so any
    context-free per-dimension polynomial schedule gives gaussian_vdm_terms' value in expectation."""
    mean = torch.tensor([0.3, -1.0, 0.0], dtype=F64)
    var = torch.tensor([0.01, 1.0, 0.25], dtype=F64)
    sched = _scrambled_schedule(3, 0, 3, scale=1.0)
    g = torch.Generator().manual_seed(0)
    n = 40_000
    x = mean + var.sqrt() * torch.randn(n, 3, generator=g, dtype=F64)
    eps = diagonal_gaussian_eps_model(mean, var)
    with torch.no_grad():
        terms = mulan_nelbo(lambda z, t, gm, c: eps(z, t, gm), sched, x, generator=g)
    exact = gaussian_vdm_terms(mean, var, -13.3, 5.0)
    se = float(terms.diffusion.std()) / math.sqrt(n)
    assert abs(float(terms.diffusion.mean()) - float(exact.diffusion)) < 4 * se
    torch.testing.assert_close(terms.prior.mean(), exact.prior, rtol=0, atol=5 * float(terms.prior.std()) / n ** 0.5)


def test_train_mulan_trains_schedule_encoder_and_network():
    torch.manual_seed(0)
    net = MuLANEpsNetwork(2, context_dim=2, hidden=8)
    sched = PolynomialNoiseSchedule(2, context_dim=2, n_features=8)
    enc = GaussianContextEncoder(2, latent_size=2, hidden=8)
    model = torch.nn.ModuleList([net, sched, enc])
    before = [p.detach().clone() for p in model.parameters()]
    hist = train_mulan(model, mulan_eps_model(net), sched, lambda n, g: torch.randn(n, 2, generator=g) * 0.3,
                       context_encoder=enc, steps=3, batch_size=16, lr=1e-2, generator=torch.Generator().manual_seed(0))
    assert hist.shape == (3,) and bool(torch.isfinite(hist).all())
    changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
    assert all(changed[:2]) and any(changed[len(list(net.parameters())):])


def test_error_messages():
    ctx_sched = PolynomialNoiseSchedule(2, context_dim=3)
    free = PolynomialNoiseSchedule(2)
    t = torch.rand(4)
    with pytest.raises(ValueError, match="needs a context c of width 3"):
        ctx_sched(t)
    with pytest.raises(ValueError, match=r"context-free \(context_dim=0\); pass c=None"):
        free(t, torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"c must have shape \(4, 3\), got \(4, 2\)"):
        ctx_sched(t, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="gamma_max must be > gamma_min"):
        PolynomialNoiseSchedule(2, gamma_min=1.0, gamma_max=1.0)
    with pytest.raises(ValueError, match="var must be > 0"):
        gaussian_context_kl(torch.zeros(2, 2), torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    net = MuLANEpsNetwork(2, per_dim_gamma=False)
    with pytest.raises(ValueError, match="takes a scalar schedule"):
        net(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="needs a context c of width 2"):
        MuLANEpsNetwork(2, context_dim=2)(torch.zeros(4, 2), torch.zeros(4))
    eps = mulan_eps_model(MuLANEpsNetwork(2))
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        mulan_nelbo(eps, free, x, t=torch.full((4,), 1.5))
    with pytest.raises(ValueError, match="context_noise given without a context_encoder"):
        mulan_nelbo(eps, free, x, context_noise=torch.zeros(4, 3))
    enc = GaussianContextEncoder(2, latent_size=3, hidden=4)
    with pytest.raises(ValueError, match=r"context_noise must have the shape of c, \(4, 3\)"):
        mulan_nelbo(lambda z, tt, g, c: torch.zeros_like(z), ctx_sched, x, context_encoder=enc,
                    context_noise=torch.zeros(4, 2))
    with pytest.raises(TypeError, match="schedule must be callable"):
        mulan_nelbo(eps, 3, x)
