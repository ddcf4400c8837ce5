"""Tests of the log-variance / reverse-KL path-space losses of the PIS (Schrödinger-Föllmer) sampler.

References are closed forms: the zero control (reference process, ``X_T ~ N(0, sigma^2 T I)``) gives both losses
exactly for a Gaussian target; the Föllmer control of a Gaussian target makes the log RND pathwise constant
(``-log Z``) as the step size goes to zero.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.log_variance_sampler import (HORIZON, SIGMA, ControlMLP, gaussian_optimal_control,
                                                     log_normalizer_estimates, log_variance_loss, path_log_rnd,
                                                     reverse_kl_loss, sample_pis, train_pis_sampler)

D = 2
M = torch.tensor([1.0, -0.5], dtype=torch.float64)
S = 0.5
LOG_C = 0.7
TAU = SIGMA**2 * HORIZON


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: intra-op threads only add contention


def log_rho(x):
    """``c N(m, s^2 I)``, so ``log Z = LOG_C``."""
    return LOG_C - 0.5 * (x - M.to(x)).square().sum(-1) / S**2 - 0.5 * D * math.log(2 * math.pi * S**2)


def zero(x, t):
    return torch.zeros_like(x)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_pis_defaults_match_official_config():
    # sde_sampler conf/sde/bm_pis.yaml: diff_coeff sqrt(0.2), terminal_t 5 (so the reference ends at N(0, I)).
    assert SIGMA == pytest.approx(math.sqrt(0.2)) and HORIZON == 5.0 and TAU == pytest.approx(1.0)


def test_zero_control_losses_match_closed_forms():
    x0 = torch.zeros(40_000, D, dtype=torch.float64)
    kl = float(reverse_kl_loss(zero, log_rho, x0, n_steps=5, generator=gen(1)))
    mm = float(M @ M)
    kl_exact = D / 2 * (TAU / S**2 - 1 - math.log(TAU / S**2)) + mm / (2 * S**2) - LOG_C
    assert kl == pytest.approx(kl_exact, abs=0.12)        # 4 SE (std of R is sqrt(29))
    b = 1 / (2 * S**2) - 1 / (2 * TAU)
    lv_exact = 2 * D * b**2 * TAU**2 + TAU * mm / S**4
    lv = float(log_variance_loss(zero, log_rho, x0, n_steps=5, generator=gen(1)))
    assert lv == pytest.approx(lv_exact, rel=0.06)
    x = sample_pis(zero, x0, n_steps=5, generator=gen(2))
    assert x.var(0).tolist() == pytest.approx([TAU, TAU], rel=0.03)


def test_follmer_control_makes_log_rnd_constant():
    x0 = torch.zeros(2_000, D, dtype=torch.float64)
    u = gaussian_optimal_control(M, S)
    stds = []
    for n in (25, 200):
        _, r = path_log_rnd(u, log_rho, x0, n_steps=n, generator=gen(3))
        stds.append(float(r.std()))
    assert stds[1] < 0.5 * stds[0]          # Euler error: the spread shrinks like sqrt(dt)
    assert float(r.mean()) == pytest.approx(-LOG_C, abs=0.03)
    assert float(log_variance_loss(u, log_rho, x0, n_steps=200, generator=gen(4))) < 0.02   # var ~ 2.2 dt/T
    lower, is_est = log_normalizer_estimates(u, log_rho, x0, n_steps=200, generator=gen(5))
    assert lower <= is_est + 1e-12 and is_est == pytest.approx(LOG_C, abs=0.03)
    x = sample_pis(u, x0, n_steps=200, generator=gen(6))
    assert x.mean(0).tolist() == pytest.approx(M.tolist(), abs=0.04)
    assert x.std(0).tolist() == pytest.approx([S, S], abs=0.03)


@pytest.mark.parametrize("loss", [reverse_kl_loss, log_variance_loss])
def test_gradients_point_to_the_optimal_control(loss):
    u_star = gaussian_optimal_control(M, S)
    x0 = torch.zeros(2_000, D, dtype=torch.float64)
    grads = []
    for alpha0 in (0.5, 1.5):
        alpha = torch.tensor(alpha0, dtype=torch.float64, requires_grad=True)
        value = loss(lambda x, t: alpha * u_star(x, t), log_rho, x0, n_steps=50, generator=gen(7))
        value.backward()
        grads.append(float(alpha.grad))
    assert grads[0] < 0 < grads[1]


def test_log_variance_loss_has_no_gradient_through_the_sde():
    # With a detached behaviour the states carry no graph: a control that only reads x gets zero gradient from
    # the terminal term alone.
    w = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    x0 = torch.zeros(64, D, dtype=torch.float64)
    value = log_variance_loss(lambda x, t: w * x, lambda x: -x.square().sum(-1), x0, n_steps=3, generator=gen(0))
    grad_lv = torch.autograd.grad(value, w)[0]
    x_t, r = path_log_rnd(lambda x, t: w * x, lambda x: -x.square().sum(-1), x0, n_steps=3, detach=True,
                          generator=gen(0))
    assert not x_t.requires_grad and r.requires_grad
    assert torch.isfinite(grad_lv)


@settings(max_examples=15, deadline=None)
@given(st.floats(-20.0, 20.0), st.integers(0, 2**16))
def test_log_z_shift(c, seed):
    x0 = torch.zeros(32, D, dtype=torch.float64)
    u = gaussian_optimal_control(M, 0.8)
    shifted = lambda x: log_rho(x) + c
    lv = log_variance_loss(u, log_rho, x0, n_steps=4, generator=gen(seed))
    lv_c = log_variance_loss(u, shifted, x0, n_steps=4, generator=gen(seed))
    assert float(lv_c) == pytest.approx(float(lv), rel=1e-9, abs=1e-9)
    kl = reverse_kl_loss(u, log_rho, x0, n_steps=4, generator=gen(seed))
    kl_c = reverse_kl_loss(u, shifted, x0, n_steps=4, generator=gen(seed))
    assert float(kl - kl_c) == pytest.approx(c, abs=1e-9)


def test_control_mlp_and_training():
    net = ControlMLP(D, hidden=16)
    x = torch.randn(5, D)
    assert torch.equal(net(x, 0.3), torch.zeros(5, D))          # zero init: starts at the reference process
    assert net(x, torch.rand(5)).shape == (5, D)
    target = lambda x: -0.5 * (x - 1.0).square().sum(-1) / 0.25
    for loss in ("lv", "kl"):
        hist = train_pis_sampler(ControlMLP(D, 16), target, D, loss=loss, steps=3, batch_size=16, n_steps=5,
                                 generator=gen(0))
        assert hist.shape == (3,) and torch.isfinite(hist).all()
    net64 = ControlMLP(D, 16).double()
    hist = train_pis_sampler(net64, target, D, steps=25, batch_size=32, n_steps=8, lr=1e-2, generator=gen(1))
    assert hist[-10:].mean() < 0.5 * hist[:5].mean()


def test_errors():
    x0 = torch.zeros(8, D, dtype=torch.float64)
    with pytest.raises(ValueError, match="n_steps must be >= 1, got 0"):
        path_log_rnd(zero, log_rho, x0, n_steps=0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        reverse_kl_loss(zero, log_rho, x0, sigma=0.0)
    with pytest.raises(ValueError, match="horizon must be > 0"):
        sample_pis(zero, x0, horizon=-1.0)
    with pytest.raises(ValueError, match=r"control must return shape \(8, 2\)"):
        path_log_rnd(lambda x, t: x[:, :1], log_rho, x0)
    with pytest.raises(ValueError, match=r"log_density must return shape \(8,\)"):
        path_log_rnd(zero, lambda x: x, x0)
    with pytest.raises(TypeError, match="log_density"):
        reverse_kl_loss(zero, 3.0, x0)
    with pytest.raises(ValueError, match="x0 must hold at least 2 paths"):
        log_variance_loss(zero, log_rho, x0[:1])
    with pytest.raises(ValueError, match="exploration_std must be 0 for loss='kl'"):
        train_pis_sampler(ControlMLP(D, 4), log_rho, D, loss="kl", steps=1, exploration_std=0.1)
    with pytest.raises(ValueError, match="dim must be the control's state dimension"):
        train_pis_sampler(ControlMLP(D, 4), log_rho, 3, steps=1)
    with pytest.raises(ValueError, match="exploration_std must be >= 0"):
        log_variance_loss(zero, log_rho, x0, exploration_std=-1.0)
    with pytest.raises(ValueError, match="std must be < sigma"):
        gaussian_optimal_control(M, 1.5)
