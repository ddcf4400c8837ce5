"""Tests for paperzoo.diagnostics.comp_sum: comp-sum losses and their H-consistency bound functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.comp_sum import (comp_sum_conditional_min, comp_sum_conditional_risk, comp_sum_gamma,
                                           comp_sum_loss, comp_sum_transform, mixture_excess_losses,
                                           class_posterior)

D = torch.float64
TAUS = [0.0, 0.3, 0.5, 1.0, 1.25, 1.5, 1.9, 2.0]


def _data(n=64, k=5, scale=3.0, seed=0, dtype=D):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, k, generator=g, dtype=dtype), torch.randint(0, k, (n,), generator=g)


def test_tau_one_is_cross_entropy():
    for scale in (0.1, 3.0, 50.0):
        h, y = _data(scale=scale)
        got = comp_sum_loss(h, y, 1.0, reduction="none")
        torch.testing.assert_close(got, F.cross_entropy(h, y, reduction="none"), rtol=0, atol=1e-10)
        torch.testing.assert_close(comp_sum_loss(h, y, 1.0), F.cross_entropy(h, y), rtol=0, atol=1e-10)


def test_tau_two_is_mae():
    h, y = _data()
    s = torch.softmax(h, -1)
    got = comp_sum_loss(h, y, 2.0, reduction="none")
    torch.testing.assert_close(got, 1 - s[torch.arange(len(y)), y], rtol=0, atol=1e-15)
    # the paper's MAE form: half the L1 distance between the one-hot label and the softmax
    torch.testing.assert_close(got, 0.5 * (F.one_hot(y, 5).to(D) - s).abs().sum(-1), rtol=0, atol=1e-15)


def test_tau_zero_is_sum_exponential():
    h, y = _data(scale=2.0)
    diff = h - h[torch.arange(len(y)), y][:, None]
    explicit = torch.exp(diff).sum(-1) - 1.0  # drop the y' = y term, exp(0)
    torch.testing.assert_close(comp_sum_loss(h, y, 0.0, reduction="none"), explicit, rtol=1e-13, atol=0)


def test_generalized_cross_entropy_and_phi_formula():
    h, y = _data()
    s_y = torch.softmax(h, -1)[torch.arange(len(y)), y]
    for tau in (1.2, 1.5, 1.8):
        q = tau - 1
        torch.testing.assert_close(comp_sum_loss(h, y, tau, reduction="none"), (1 - s_y ** q) / q, rtol=1e-12,
                                   atol=1e-14)
    # the Phi^tau form with a per-sample Python loop, for tau > 2 as well
    for tau in (0.4, 2.5):
        ref = []
        for i in range(len(y)):
            u = sum(math.exp(float(h[i, j] - h[i, y[i]])) for j in range(5) if j != int(y[i]))
            ref.append(((1 + u) ** (1 - tau) - 1) / (1 - tau))
        torch.testing.assert_close(comp_sum_loss(h, y, tau, reduction="none"), torch.tensor(ref, dtype=D),
                                   rtol=1e-12, atol=0)


def test_reductions_and_float32():
    h, y = _data()
    per = comp_sum_loss(h, y, 0.5, reduction="none")
    assert per.shape == (64,)
    torch.testing.assert_close(comp_sum_loss(h, y, 0.5, reduction="sum"), per.sum())
    h32 = h.float()
    out = comp_sum_loss(h32, y, 1.5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), comp_sum_loss(h, y, 1.5), rtol=1e-5, atol=1e-6)


def test_continuity_in_tau():
    h, y = _data(scale=2.0)
    for tau in (1.0, 2.0, 0.5):
        base = comp_sum_loss(h, y, tau, reduction="none")
        for eps in (1e-6, -1e-6):
            if tau + eps > 2.0 and tau == 2.0:
                continue
            torch.testing.assert_close(comp_sum_loss(h, y, tau + eps, reduction="none"), base, rtol=1e-4, atol=1e-5)
    t = torch.linspace(0, 1, 21, dtype=D)
    for tau in (1.0, 2.0):
        base = comp_sum_transform(tau, t, 3)
        for eps in (1e-6, -1e-6):
            if tau + eps > 2:
                continue
            torch.testing.assert_close(comp_sum_transform(tau + eps, t, 3), base, rtol=0, atol=1e-5)
    torch.testing.assert_close(comp_sum_transform(0.0, t, 3), comp_sum_transform(1e-9, t, 3), rtol=0, atol=1e-8)


def test_gradients_finite():
    for tau in TAUS:
        h, y = _data(scale=30.0)
        h.requires_grad_(True)
        (g,) = torch.autograd.grad(comp_sum_loss(h, y, tau), h)
        assert torch.isfinite(g).all(), tau
    for tau in (1.0, 1.5, 2.0):  # bounded-growth members stay finite at extreme scores
        h, y = _data(scale=1e4)
        h.requires_grad_(True)
        (g,) = torch.autograd.grad(comp_sum_loss(h, y, tau), h)
        assert torch.isfinite(g).all(), tau
    # the cross-entropy gradient: softmax - onehot
    h, y = _data()
    h.requires_grad_(True)
    (g,) = torch.autograd.grad(comp_sum_loss(h, y, 1.0, reduction="sum"), h)
    torch.testing.assert_close(g, torch.softmax(h, -1).detach() - F.one_hot(y, 5).to(D), rtol=0, atol=1e-12)


def test_conditional_min_closed_form_is_the_infimum():
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(2 * torch.randn(50, 4, generator=g, dtype=D), -1)
    for tau in TAUS[:-1]:
        best = comp_sum_conditional_min(p, tau)
        at_minimiser = comp_sum_conditional_risk(torch.log(p) / (2 - tau), p, tau)
        torch.testing.assert_close(at_minimiser, best, rtol=1e-12, atol=1e-13)
        for _ in range(5):  # perturbed scores are never better
            h = torch.log(p) / (2 - tau) + 0.3 * torch.randn(50, 4, generator=g, dtype=D)
            assert (comp_sum_conditional_risk(h, p, tau) >= best - 1e-13).all()
    # tau = 2: the infimum 1 - max p is approached by a growing top score
    top = F.one_hot(p.argmax(-1), 4).to(D)
    torch.testing.assert_close(comp_sum_conditional_risk(60 * top, p, 2.0), comp_sum_conditional_min(p, 2.0),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(comp_sum_conditional_min(p, 1.0), -(p * p.log()).sum(-1))


def test_transform_is_the_two_class_regret_at_equal_scores():
    # independent route: the conditional regret of equal scores at p = ((1+t)/2, (1-t)/2), computed from losses
    t = torch.linspace(0, 1, 41, dtype=D)
    p = torch.stack([(1 + t) / 2, (1 - t) / 2], -1)
    for tau in TAUS:
        regret = comp_sum_conditional_risk(torch.zeros_like(p), p, tau) - comp_sum_conditional_min(p, tau)
        torch.testing.assert_close(comp_sum_transform(tau, t, 2), regret, rtol=0, atol=1e-13)
    # named values
    assert comp_sum_transform(1.0, 1.0, 2) == pytest.approx(math.log(2), abs=1e-15)
    assert comp_sum_transform(2.0, 0.6, 3) == pytest.approx(0.2, abs=1e-15)
    assert comp_sum_transform(0.0, 1.0, 7) == pytest.approx(1.0, abs=1e-14)


def test_gamma_inverts_transform_and_small_t_rates():
    t = torch.linspace(0, 1, 33, dtype=D)
    for tau in TAUS:
        for n in (2, 5):
            torch.testing.assert_close(comp_sum_gamma(tau, comp_sum_transform(tau, t, n), n), t, rtol=0,
                                       atol=1e-12)
            assert float(comp_sum_gamma(tau, 10.0, n)) == 1.0
    # near 0 (second-order expansion of the power mean): Gamma_tau(s) ~ sqrt(2^tau (2 - tau) s) for tau < 1,
    # sqrt(2 s) at tau = 1, sqrt(2 (2 - tau) n^(tau - 1) s) for tau in (1, 2); Gamma_2(s) = n s exactly
    s = 1e-6
    assert float(comp_sum_gamma(1.0, s, 3)) == pytest.approx(math.sqrt(2 * s), rel=1e-3)
    assert float(comp_sum_gamma(2.0, s, 3)) == pytest.approx(3 * s, rel=1e-12)
    assert float(comp_sum_gamma(1.5, s, 4)) == pytest.approx(math.sqrt(2 * 0.5 * 4 ** 0.5 * s), rel=1e-3)
    assert float(comp_sum_gamma(0.5, s, 4)) == pytest.approx(math.sqrt(2 ** 0.5 * 1.5 * s), rel=1e-3)
    assert float(comp_sum_gamma(1.0, 0.2, 2, scale=0.1)) == pytest.approx(0.1 * float(comp_sum_gamma(1.0, 0.2, 2)))


@pytest.mark.parametrize("n", [2, 3, 5])
def test_pointwise_bound_holds_near_ties(n):
    # regret_tau(h, x) >= T_tau(regret_01(h, x)) on near-tie scores with the wrong top class (the hard cases)
    g = torch.Generator().manual_seed(n)
    N = 5000
    p = torch.softmax(2 * torch.randn(N, n, generator=g, dtype=D), -1)
    swap = torch.argsort(p, -1, descending=True)
    wrong = torch.log(p) * torch.rand(N, 1, generator=g, dtype=D)  # shrunk towards equal scores
    wrong = wrong.scatter(-1, swap[:, 1:2], wrong.gather(-1, swap[:, :1]) + 1e-3 * torch.rand(N, 1, generator=g,
                                                                                                dtype=D))
    for h in (wrong, 0.01 * torch.randn(N, n, generator=g, dtype=D), 3 * torch.randn(N, n, generator=g, dtype=D)):
        r01 = p.max(-1).values - p.gather(-1, h.argmax(-1, keepdim=True)).squeeze(-1)
        for tau in TAUS:
            regret = comp_sum_conditional_risk(h, p, tau) - comp_sum_conditional_min(p, tau)
            assert (regret - comp_sum_transform(tau, r01, n) >= -1e-12).all(), tau


def test_mixture_posterior_and_excess():
    from scipy.stats import multivariate_normal, norm

    g = torch.Generator().manual_seed(3)
    means = torch.randn(3, 2, generator=g, dtype=D)
    priors = torch.tensor([0.2, 0.3, 0.5], dtype=D)
    x = torch.randn(50, 2, generator=g, dtype=D)
    probs, logits = class_posterior(x, means, priors, sigma=0.7)
    dens = np.stack([priors[k].item() * multivariate_normal(means[k].numpy(), 0.49 * np.eye(2)).pdf(x.numpy())
                     for k in range(3)], -1)
    np.testing.assert_allclose(probs.numpy(), dens / dens.sum(-1, keepdims=True), rtol=1e-10)
    # two symmetric classes: Bayes error Phi(-|mu|), zero excess at the Bayes scores, exact 0-1 at a linear rule
    mu = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=D)
    y = torch.randint(0, 2, (100000,), generator=g)
    xs = mu[y] + torch.randn(100000, 2, generator=g, dtype=D)
    ones = torch.ones(2, dtype=D)
    for tau in (0.0, 1.0, 2.0):
        # the comp-sum minimiser is the Bayes log-posterior scaled by 1 / (2 - tau) (tau = 2: a large scale)
        scale = 40.0 if tau == 2.0 else 1.0 / (2.0 - tau)
        out = mixture_excess_losses(scale * mu, torch.zeros(2, dtype=D), xs, mu, ones, tau)
        assert out.excess_zero_one == 0.0 and abs(out.excess_surrogate) < (1e-3 if tau == 2.0 else 1e-12)
        assert out.bayes_zero_one == pytest.approx(norm.cdf(-1.0), abs=4e-3)
    rule = torch.tensor([[0.0, -1.0], [0.0, 1.0]], dtype=D)  # boundary along the wrong axis: error 1/2
    out = mixture_excess_losses(rule, torch.zeros(2, dtype=D), xs, mu, ones, 1.0)
    assert out.zero_one == pytest.approx(0.5, abs=4e-3)
    assert out.excess_zero_one == pytest.approx(0.5 - norm.cdf(-1.0), abs=4e-3)


@settings(max_examples=40, deadline=None)
@given(tau=st.floats(0, 2), t=st.floats(0, 1), n=st.integers(2, 10))
def test_property_gamma_transform_round_trip(tau, t, n):
    value = comp_sum_transform(tau, t, n)
    assert float(value) >= 0
    assert float(comp_sum_gamma(tau, value, n)) == pytest.approx(t, abs=1e-9)


def test_errors_pinned():
    h, y = _data()
    with pytest.raises(ValueError, match=r"y must have entries < 5 \(the number of classes in logits\), got a max"):
        comp_sum_loss(h, torch.full((64,), 5), 1.0)
    with pytest.raises(ValueError, match=r"tau must be >= 0"):
        comp_sum_loss(h, y, -0.5)
    with pytest.raises(ValueError, match=r"reduction must be one of"):
        comp_sum_loss(h, y, 1.0, reduction="avg")
    with pytest.raises(ValueError, match=r"tau must be <= 2"):
        comp_sum_gamma(2.5, 0.1, 3)
    with pytest.raises(ValueError, match=r"t must be >= 0, got a minimum of -0.1"):
        comp_sum_gamma(1.0, -0.1, 3)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\], got a range of"):
        comp_sum_transform(1.0, 1.5, 3)
    with pytest.raises(ValueError, match=r"n_classes must be >= 2"):
        comp_sum_transform(1.0, 0.5, 1)
    with pytest.raises(ValueError, match=r"probs must have rows summing to 1, got a maximum deviation of"):
        comp_sum_conditional_min(torch.full((2, 3), 0.5, dtype=D), 1.0)
