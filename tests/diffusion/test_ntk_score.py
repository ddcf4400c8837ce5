"""Tests of the NTK / kernel-regression view of denoising score matching (paperzoo.diffusion.ntk_score)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from paperzoo.diffusion.mixture import GaussianMixture
from paperzoo.diffusion.ntk_score import (TwoLayerReLU, dsm_regression_data, early_stopping_time, empirical_ntk,
                                          ntk_predictions, train_gd)

D64 = torch.float64


def _gm() -> GaussianMixture:
    return GaussianMixture(torch.tensor([[-2.0], [2.0]], dtype=D64), torch.full((2, 1, 1), 0.25, dtype=D64))


def _explicit_jacobian(model: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """(n k, P) by autograd row by row: the reference for the vmap/jacrev kernel."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = model(z).reshape(-1)
    rows = []
    for i in range(out.shape[0]):
        grads = torch.autograd.grad(out[i], params, retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


@pytest.mark.parametrize("make", [
    lambda g: TwoLayerReLU(3, 2, 6, train_outer=True, generator=g),
    lambda g: TwoLayerReLU(3, 2, 5, symmetric=False, generator=g),
    lambda g: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(D64),
])
def test_ntk_matches_explicit_jacobian_product(make):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = make(g)
    z1, z2 = torch.randn(5, 3, generator=g, dtype=D64), torch.randn(4, 3, generator=g, dtype=D64)
    J1, J2 = _explicit_jacobian(model, z1), _explicit_jacobian(model, z2)
    K = empirical_ntk(model, z1, z2)
    assert K.shape == (5, 4, 2, 2)
    ref = (J1 @ J2.T).reshape(5, 2, 4, 2).permute(0, 2, 1, 3)
    torch.testing.assert_close(K, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(empirical_ntk(model, z1), (J1 @ J1.T).reshape(5, 2, 5, 2).permute(0, 2, 1, 3))


def test_ntk_chunks_agree():
    g = torch.Generator().manual_seed(1)
    net = TwoLayerReLU(2, 1, 8, generator=g)
    z = torch.randn(150, 2, generator=g, dtype=D64)   # more rows than one chunk
    J = _explicit_jacobian(net, z)
    torch.testing.assert_close(empirical_ntk(net, z)[:, :, 0, 0], J @ J.T)


def test_frozen_outer_layer_is_excluded():
    g = torch.Generator().manual_seed(2)
    net = TwoLayerReLU(2, 1, 4, generator=g)          # outer fixed: P = 4 * 2 + 4
    z = torch.randn(3, 2, generator=g, dtype=D64)
    J = _explicit_jacobian(net, z)
    assert J.shape[1] == 12
    torch.testing.assert_close(empirical_ntk(net, z)[:, :, 0, 0], J @ J.T)


def _linear_gd(J, y, f0, lr, steps):
    """GD on the linearized model f = f0 + J (theta - theta0): in function space f <- f - lr/n K (f - y)."""
    n = y.shape[0]
    K = J @ J.T
    f = f0.clone()
    out = []
    for _ in range(steps):
        f = f - lr / n * K @ (f - y)
        out.append(f.clone())
    return torch.stack(out)


def test_closed_form_discrete_gd_is_exact_and_flow_is_small_lr_limit():
    g = torch.Generator().manual_seed(3)
    net = TwoLayerReLU(2, 1, 16, symmetric=False, generator=g)
    z = torch.randn(6, 2, generator=g, dtype=D64)
    y = torch.randn(6, 1, generator=g, dtype=D64)
    with torch.no_grad():
        f0 = net(z)
    J = _explicit_jacobian(net, z)
    K = empirical_ntk(net, z)
    ref = _linear_gd(J, y[:, 0], f0[:, 0], 0.3, 40)
    steps = torch.arange(1, 41, dtype=D64)
    P = ntk_predictions(K, y, times=steps, f0=f0, lr=0.3)
    torch.testing.assert_close(P.train[:, :, 0], ref, rtol=1e-10, atol=1e-10)
    # small-lr GD approaches the gradient flow at t = lr * steps
    small = _linear_gd(J, y[:, 0], f0[:, 0], 1e-3, 2000)[-1]
    flow = ntk_predictions(K, y, times=torch.tensor([2.0], dtype=D64), f0=f0).train[-1, :, 0]
    assert float((small - flow).norm() / (flow - f0[:, 0]).norm()) < 2e-3


def test_closed_form_test_predictions_match_linearized_model():
    g = torch.Generator().manual_seed(4)
    net = TwoLayerReLU(2, 2, 10, generator=g)
    z, zs = torch.randn(5, 2, generator=g, dtype=D64), torch.randn(3, 2, generator=g, dtype=D64)
    y = torch.randn(5, 2, generator=g, dtype=D64)
    J, Js = _explicit_jacobian(net, z), _explicit_jacobian(net, zs)
    # parameter-space GD on the linear model, predictions at new inputs
    theta = torch.zeros(J.shape[1], dtype=D64)
    lr, n = 0.2, 5
    for _ in range(25):
        theta = theta - lr * J.T @ ((J @ theta) - y.reshape(-1)) / n
    P = ntk_predictions(empirical_ntk(net, z), y, empirical_ntk(net, zs, z), times=torch.tensor([25.0], dtype=D64),
                        lr=lr)
    torch.testing.assert_close(P.test[0].reshape(-1), Js @ theta, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(P.train[0].reshape(-1), J @ theta, rtol=1e-9, atol=1e-10)


def test_flow_converges_to_interpolation_and_kernel_interpolant():
    K = torch.tensor([[2.0, 0.5, 0.1], [0.5, 1.5, 0.3], [0.1, 0.3, 1.0]], dtype=D64)
    Ks = torch.tensor([[0.4, 0.2, 0.9]], dtype=D64)
    y = torch.tensor([[1.0], [-2.0], [0.5]], dtype=D64)
    P = ntk_predictions(K[:, :, None, None], y, Ks[:, :, None, None], times=torch.tensor([0.0, 1e5], dtype=D64))
    torch.testing.assert_close(P.train[0], torch.zeros_like(y))
    torch.testing.assert_close(P.train[-1], y)
    torch.testing.assert_close(P.test[-1], Ks @ torch.linalg.solve(K, y))


def test_singular_kernel_uses_exact_zero_eigenvalue_limit():
    v = torch.tensor([1.0, 2.0], dtype=D64)
    K = torch.outer(v, v)[:, :, None, None]          # rank one
    y = torch.tensor([[1.0], [0.0]], dtype=D64)
    P = ntk_predictions(K, y, K, times=torch.tensor([1e8], dtype=D64))
    assert torch.isfinite(P.test).all()
    # the flow converges to the projection of y onto the kernel's range
    torch.testing.assert_close(P.train[-1, :, 0], v * (v @ y[:, 0]) / (v @ v))


def test_wide_network_one_gd_step_is_near_linear_model():
    g = torch.Generator().manual_seed(5)
    z = torch.cat([torch.randn(8, 1, generator=g, dtype=D64), torch.full((8, 1), 0.5, dtype=D64)], 1)
    y = torch.randn(8, 1, generator=g, dtype=D64)
    gaps = {}
    for m in (16, 8192):
        net = TwoLayerReLU(2, 1, m, generator=torch.Generator().manual_seed(6))
        lin = ntk_predictions(empirical_ntk(net, z), y, times=torch.tensor([1.0], dtype=D64), lr=1.0).train[0]
        train_gd(net, z, y, 1, 1.0)
        with torch.no_grad():
            gaps[m] = float((net(z) - lin).norm() / lin.norm())
    assert gaps[8192] < 2e-3
    assert gaps[16] > 5 * gaps[8192]


def test_train_gd_callback_and_losses():
    g = torch.Generator().manual_seed(7)
    net = TwoLayerReLU(2, 1, 32, generator=g)
    z, y = torch.randn(6, 2, generator=g, dtype=D64), torch.randn(6, 1, generator=g, dtype=D64)
    seen = []
    losses = train_gd(net, z, y, 5, 0.1, callback=lambda s, model, loss: seen.append((s, loss)))
    assert [s for s, _ in seen] == [1, 2, 3, 4, 5]
    assert math.isclose(float(losses[0]), 0.5 * float(y.pow(2).sum(-1).mean()), rel_tol=1e-9)  # f0 = 0
    assert bool((losses[1:] <= losses[:-1]).all())
    with pytest.raises(FloatingPointError, match="lower lr"):
        train_gd(nn.Linear(2, 1).to(D64), z, y, 500, 1e3)


def test_dsm_data_construction_and_score_identity():
    gm, sigma = _gm(), 0.5
    g = torch.Generator().manual_seed(8)
    data = dsm_regression_data(gm.sample, 200_000, sigma, generator=g)
    torch.testing.assert_close(data.inputs[:, :1], data.x0 + sigma * data.noise)
    torch.testing.assert_close(data.inputs[:, 1], torch.full((200_000,), sigma, dtype=D64))
    torch.testing.assert_close(data.labels, -data.noise / sigma)
    # E[y | x] is the score, so E||y - s(x)||^2 = E||y||^2 - E||s(x)||^2 (the DSM-ESM identity)
    s = gm.score(data.inputs[:, :1], sigma)
    lhs = float((data.labels - s).pow(2).mean())
    rhs = 1.0 / sigma**2 - float(s.pow(2).mean())
    assert abs(lhs - rhs) < 0.02 * rhs
    per = dsm_regression_data(gm.sample, 3, torch.tensor([0.1, 1.0, 2.0], dtype=D64), generator=g)
    torch.testing.assert_close(per.inputs[:, 1], per.sigma)


def test_early_stopping_time_closed_form():
    n, noise = 64, 0.05
    K = torch.eye(n, dtype=D64)[:, :, None, None]    # mu_j = 1/n: t R(t^-1/2) = t / sqrt(n) for t <= n
    t_hat = early_stopping_time(K, noise)
    assert math.isclose(t_hat, math.sqrt(n) / (2 * math.e * noise), rel_tol=1e-9)
    assert early_stopping_time(K, 2 * noise) < t_hat  # noisier labels stop earlier
    assert early_stopping_time(torch.zeros(3, 3, 1, 1, dtype=D64), 1.0) == math.inf


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 6), st.integers(1, 2), st.integers(0, 10_000))
def test_flow_residual_shrinks_and_test_at_train_points_agrees(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n * k, n * k, generator=g, dtype=D64)
    K = (A @ A.T).reshape(n, k, n, k).permute(0, 2, 1, 3)
    y = torch.randn(n, k, generator=g, dtype=D64)
    times = torch.tensor([0.0, 0.1, 1.0, 10.0], dtype=D64)
    P = ntk_predictions(K, y, K, times=times)
    res = (P.train - y).flatten(1).norm(dim=1)
    assert bool((res[1:] <= res[:-1] + 1e-9).all())
    torch.testing.assert_close(P.test, P.train, rtol=1e-6, atol=1e-6)


# -- error messages ----------------------------------------------------------------------------------------------


def test_error_messages():
    g = torch.Generator().manual_seed(9)
    with pytest.raises(ValueError, match="width must be even with symmetric=True, got 5"):
        TwoLayerReLU(2, 1, 5)
    with pytest.raises(ValueError, match="width must be >= 1"):
        TwoLayerReLU(2, 1, 0)
    net = TwoLayerReLU(2, 1, 4, generator=g)
    z = torch.randn(3, 2, dtype=D64)
    with pytest.raises(ValueError, match="z2"):
        empirical_ntk(net, z, torch.randn(3, 5, dtype=D64))
    frozen = copy.deepcopy(net).requires_grad_(False)
    with pytest.raises(ValueError, match="model must have at least one parameter with requires_grad=True"):
        empirical_ntk(frozen, z)
    K, y = torch.eye(3, dtype=D64)[:, :, None, None], torch.zeros(3, 1, dtype=D64)
    t = torch.tensor([1.0], dtype=D64)
    with pytest.raises(ValueError, match="lr must be > 0"):
        ntk_predictions(K, y, times=t, lr=-1.0)
    with pytest.raises(ValueError, match="times"):
        ntk_predictions(K, y, times=-t)
    with pytest.raises(ValueError, match="labels"):
        ntk_predictions(K, torch.zeros(4, 1, dtype=D64), times=t)
    with pytest.raises(ValueError, match="f0_test needs K_test"):
        ntk_predictions(K, y, times=t, f0_test=torch.zeros(2, 1, dtype=D64))
    with pytest.raises(ValueError, match=r"sample_x0 must return a floating tensor of shape \(n, d\) = \(4, d\)"):
        dsm_regression_data(lambda n, generator=None: torch.zeros(n + 1, 1), 4, 0.5)
    with pytest.raises(ValueError, match="sigma must be > 0 everywhere"):
        dsm_regression_data(_gm().sample, 2, torch.tensor([0.0, 1.0], dtype=D64))
    with pytest.raises(ValueError, match="sigma"):
        dsm_regression_data(_gm().sample, 2, -0.5)
    with pytest.raises(ValueError, match="noise_std must be > 0"):
        early_stopping_time(K, 0.0)
    with pytest.raises(TypeError, match="dtype"):
        train_gd(net, z.float(), y.float(), 1, 0.1)
