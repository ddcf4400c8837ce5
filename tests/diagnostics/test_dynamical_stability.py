"""Dynamical-stability diagnostics against dense Kronecker forms, explicit batch enumeration, simulated linear SGD
and dense Hessians."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.dynamical_stability import (batch_noise_factor, hessian_frobenius, hessian_trace,
                                                      output_jacobian, sgd_stability, trace_stability_ratio)

D = torch.float64


def _jac(N, n, seed=0):
    return torch.randn(N, n, generator=torch.Generator().manual_seed(seed), dtype=D)


def _dense_second_moment(J, s, lr, B):
    """E[A (x) A] with A = I - lr H_B, every batch of size B (without replacement) enumerated by a Python loop."""
    N, n = J.shape
    Hs = [s * torch.outer(J[i], J[i]) for i in range(N)]
    batches = list(itertools.combinations(range(N), B))
    T = torch.zeros(n * n, n * n, dtype=D)
    for b in batches:
        A = torch.eye(n, dtype=D) - lr * sum(Hs[i] for i in b) / B
        T += torch.kron(A, A)
    return T / len(batches)


@pytest.mark.parametrize("B", [1, 2, 5])
def test_radius_matches_enumerated_batches(B):
    J = _jac(5, 3)                                  # full column rank: the row space is all of R^3
    lr = 0.7 / float((J.T @ J / 5).diagonal().sum())
    dense = _dense_second_moment(J, 2.0, lr, B)
    expected = float(torch.linalg.eigvals(dense).abs().max())
    res = sgd_stability(J, lr, B, curvature=2.0, tol=1e-12, generator=torch.Generator().manual_seed(0))
    assert res.converged
    assert res.radius == pytest.approx(expected, rel=1e-9)
    H = 2.0 * J.T @ J / 5
    assert res.trace == pytest.approx(float(H.trace()), rel=1e-12)
    assert res.frobenius == pytest.approx(float(torch.linalg.matrix_norm(H)), rel=1e-12)
    assert res.top_eigenvalue == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-12)
    assert res.kappa == pytest.approx((5 - B) / (B * 4))


def test_gradient_descent_closed_form_and_null_space():
    J = _jac(4, 9, seed=1)                          # over-parameterised: a 5-dimensional null space is ignored
    lr = 0.9
    lam = torch.linalg.eigvalsh(J.T @ J / 4)[-4:]
    res = sgd_stability(J, lr, 4, tol=1e-12)
    assert res.kappa == 0.0
    assert res.radius == pytest.approx(float((1 - lr * lam).square().max()), rel=1e-9)
    assert res.sharpness_ratio == pytest.approx(lr * float(lam[-1]) / 2)


def test_orthogonal_equal_norm_threshold_is_two_over_trace():
    # j_i = c e_i: B = 1 SGD is stable exactly when lr tr(H)/2 < 1 (the paper's bound is tight here)
    c = 1.7
    J = c * torch.eye(6, dtype=D)
    tr = c * c
    for ratio, stable in [(0.95, True), (1.05, False)]:
        res = sgd_stability(J, 2 * ratio / tr, 1, tol=1e-12)
        assert res.trace_ratio == pytest.approx(ratio)
        assert res.stable is stable
        assert res.radius == pytest.approx(1 - 4 * ratio / 6 + 4 * ratio ** 2 / 6, rel=1e-9)
    # gradient descent at the same steps is stable far beyond (lambda_max = tr/6)
    assert sgd_stability(J, 2 * 5.0 / tr, 6).stable


@settings(max_examples=10, deadline=None)
@given(st.integers(3, 8), st.integers(2, 6), st.integers(0, 10_000), st.floats(1.02, 2.0))
def test_equal_norms_trace_bound_is_necessary(N, n, seed, ratio):
    # with equal per-sample norms, E||delta||^2 cannot decrease once lr tr(H)/2 > 1, so rho >= 1
    J = _jac(N, n, seed)
    J = J / J.norm(dim=1, keepdim=True)
    tr = float(J.square().sum(1).mean())
    res = sgd_stability(J, 2 * ratio / tr, 1, tol=1e-10)
    assert res.radius >= 1 - 1e-9 and not res.stable


def _simulate(J, lr, B, steps, chains, seed):
    """Linear SGD delta <- delta - lr H_B delta (half-MSE at interpolation), `chains` independent runs, batches
    drawn without replacement; returns the mean squared norm after `steps`."""
    N, n = J.shape
    g = torch.Generator().manual_seed(seed)
    delta = torch.randn(chains, n, generator=g, dtype=D)
    for _ in range(steps):
        idx = torch.rand(chains, N, generator=g).argsort(dim=1)[:, :B]       # (chains, B)
        Jb = J[idx]                                                          # (chains, B, n)
        delta = delta - lr / B * torch.einsum("cbn,cb->cn", Jb, torch.einsum("cbn,cn->cb", Jb, delta))
    return float(delta.square().sum(1).mean())


def test_stability_predicts_simulated_linear_sgd():
    J = _jac(8, 4, seed=3)
    # the critical step lr* (rho = 1), by bisection on the exact radius
    lo, hi = 0.01, 10.0
    for _ in range(20):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if sgd_stability(J, mid, 2, tol=1e-9).stable else (lo, mid)
    lr_star = lo
    assert hi / lo < 1 + 1e-4
    steps = 40
    sim_below = _simulate(J, 0.8 * lr_star, 2, steps, 1000, 0)
    sim_above = _simulate(J, 1.25 * lr_star, 2, steps, 1000, 1)
    assert sim_below < 1e-3 * 4 and sim_above > 1e3 * 4             # started at E||delta_0||^2 = 4
    # over a short horizon (before the heavy tail of the product dominates) the simulated mean squared norm is
    # the exact second moment tr(T^t(I)), T from the batch enumeration, within Monte Carlo error
    dense = _dense_second_moment(J, 1.0, 1.25 * lr_star, 2)
    M = torch.eye(4, dtype=D).reshape(-1)
    for _ in range(3):
        M = dense @ M
    exact = float(M.reshape(4, 4).trace())
    assert _simulate(J, 1.25 * lr_star, 2, 3, 20_000, 2) == pytest.approx(exact, rel=0.08)


def _mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(10, 3, generator=g, dtype=D)
    y = torch.randn(10, 1, generator=g, dtype=D)
    return model, x, y


def _half_mse(o, t):
    return 0.5 * (o - t).square().mean()


def _dense_hessian(model, x, y):
    names = [n for n, _ in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def f(theta):
        ps = {n: c.view(s) for n, c, s in zip(names, torch.split(theta, sizes), shapes)}
        return _half_mse(torch.func.functional_call(model, ps, (x,)), y)

    return torch.autograd.functional.hessian(f, flat)


def test_trace_and_frobenius_against_dense_hessian():
    model, x, y = _mlp()
    H = _dense_hessian(model, x, y)
    tr = hessian_trace(model, _half_mse, x, y, 200, batch_size=200, generator=torch.Generator().manual_seed(0))
    assert abs(tr.trace - float(H.trace())) < 3 * tr.std_error
    fr = hessian_frobenius(model, _half_mse, x, y, 200, batch_size=200, generator=torch.Generator().manual_seed(1))
    fro_sq = float(H.square().sum())
    assert abs(fr.frobenius_sq - fro_sq) < 3 * fr.std_error_sq
    assert fr.frobenius == pytest.approx(fr.frobenius_sq ** 0.5)
    # the SE is not vacuous: within 10% in both
    assert tr.std_error < 0.1 * abs(float(H.trace())) and fr.std_error_sq < 0.1 * fro_sq


def test_output_jacobian_matches_loop_and_gauss_newton():
    model, x, y = _mlp()
    J = output_jacobian(model, x)
    rows = []
    for i in range(x.shape[0]):
        gs = torch.autograd.grad(model(x[i:i + 1]).sum(), list(model.parameters()))
        rows.append(torch.cat([g.reshape(-1) for g in gs]))
    torch.testing.assert_close(J, torch.stack(rows), rtol=1e-12, atol=1e-12)
    # at an exact interpolation point (targets = outputs) the half-MSE Hessian is J^T J / N
    with torch.no_grad():
        y_fit = model(x)
    torch.testing.assert_close(_dense_hessian(model, x, y_fit), J.T @ J / x.shape[0], rtol=1e-10, atol=1e-10)


def test_ratios_and_noise_factor():
    assert trace_stability_ratio(4.0, 0.5) == 1.0
    assert batch_noise_factor(7, 1) == 1.0 and batch_noise_factor(7, 7) == 0.0
    assert batch_noise_factor(7, 3, replacement=True) == pytest.approx(1 / 3)
    assert batch_noise_factor(1, 1) == 0.0


def test_errors_pinned():
    J = _jac(4, 3)
    with pytest.raises(ValueError, match=r"batch_size must be <= the number of points \(jacobian rows, 4\) without replacement, got 5"):
        sgd_stability(J, 0.1, 5)
    with pytest.raises(ValueError, match="jacobian must not be all zeros"):
        sgd_stability(torch.zeros(4, 3, dtype=D), 0.1, 1)
    with pytest.raises(ValueError, match=r"lr must be > 0.0, got -1.0"):
        sgd_stability(J, -1.0, 1)
    with pytest.raises(ValueError, match="num_samples must be >= 2, got 1"):
        model, x, y = _mlp()
        hessian_trace(model, _half_mse, x, y, 1)
    vec_model = torch.nn.Linear(3, 2).double()
    with pytest.raises(ValueError, match=r"model must map one row of inputs to a single \(scalar\) output, got 2 outputs"):
        output_jacobian(vec_model, torch.randn(5, 3, dtype=D))
