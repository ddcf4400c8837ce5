"""Tests for paperzoo.diagnostics.input_sensitivity: closed forms, finite differences, a per-sample loop, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.input_sensitivity import (loss_input_derivatives, permutation_importance,
                                                    sensitivity_scores)

DT = torch.float64


def _sq(out, t):
    return ((out - t) ** 2).mean()


def _linear(w, b=0.0):
    model = torch.nn.Linear(len(w), 1).to(DT)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([w], dtype=DT))
        model.bias.fill_(b)
    return model


class Cubic(torch.nn.Module):
    """f(x) = sum_j c_j x_j^3 + q_j x_j^2: a closed-form third derivative of the squared loss."""

    def __init__(self, c, q):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(c, dtype=DT))
        self.q = torch.nn.Parameter(torch.tensor(q, dtype=DT))

    def forward(self, x):
        return (self.c * x ** 3 + self.q * x ** 2).sum(-1, keepdim=True)


def _mlp(seed=0, d=3):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1)).to(DT)


@pytest.mark.parametrize("mode", ["forward", "reverse", "auto"])
def test_linear_squared_loss_closed_form(mode):
    g = torch.Generator().manual_seed(0)
    w = [0.5, -2.0, 1.5]
    model = _linear(w, 0.3)
    x, y = torch.randn(9, 3, generator=g, dtype=DT), torch.randn(9, 1, generator=g, dtype=DT)
    r = loss_input_derivatives(model, _sq, x, y, mode=mode)
    wt = torch.tensor(w, dtype=DT)
    res = x @ wt + 0.3 - y[:, 0]
    torch.testing.assert_close(r.first, 2 * res[:, None] * wt, atol=1e-10, rtol=0)
    torch.testing.assert_close(r.second, (2 * wt ** 2).expand(9, 3), atol=1e-10, rtol=0)
    torch.testing.assert_close(r.third, torch.zeros(9, 3, dtype=DT), atol=1e-10, rtol=0)
    torch.testing.assert_close(r.loss, res ** 2, atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_cubic_third_derivative_closed_form(mode):
    g = torch.Generator().manual_seed(1)
    c, q = [0.7, -1.2], [0.4, 0.9]
    model = Cubic(c, q)
    x, y = torch.randn(7, 2, generator=g, dtype=DT), torch.randn(7, 1, generator=g, dtype=DT)
    r = loss_input_derivatives(model, _sq, x, y, mode=mode)
    ct, qt = torch.tensor(c, dtype=DT), torch.tensor(q, dtype=DT)
    res = (ct * x ** 3 + qt * x ** 2).sum(-1, keepdim=True) - y
    f1, f2, f3 = 3 * ct * x ** 2 + 2 * qt * x, 6 * ct * x + 2 * qt, 6 * ct
    torch.testing.assert_close(r.first, 2 * res * f1, atol=1e-10, rtol=0)
    torch.testing.assert_close(r.second, 2 * f1 ** 2 + 2 * res * f2, atol=1e-10, rtol=0)
    torch.testing.assert_close(r.third, 6 * f1 * f2 + 2 * res * f3, atol=1e-10, rtol=0)


def test_auto_falls_back_to_reverse_for_mse_loss():
    model, g = _mlp(), torch.Generator().manual_seed(2)
    x, y = torch.randn(5, 3, generator=g, dtype=DT), torch.randn(5, 1, generator=g, dtype=DT)
    auto = loss_input_derivatives(model, F.mse_loss, x, y)
    fwd = loss_input_derivatives(model, _sq, x, y, mode="forward")
    assert auto.mode == "reverse" and fwd.mode == "forward"
    for a, b in zip(auto[:3], fwd[:3]):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_against_finite_differences_and_sample_loop():
    """Central differences of the per-sample loss (an explicit loop over samples and features)."""
    model, g = _mlp(3), torch.Generator().manual_seed(3)
    x, y = torch.randn(4, 3, generator=g, dtype=DT), torch.randn(4, 1, generator=g, dtype=DT)
    r = loss_input_derivatives(model, _sq, x, y)
    h = 1e-3
    with torch.no_grad():
        for i in range(4):
            for j in range(3):
                def ell(s):
                    z = x[i:i + 1].clone()
                    z[0, j] += s
                    return float(_sq(model(z), y[i:i + 1]))
                l0, lp, lm, l2p, l2m = ell(0), ell(h), ell(-h), ell(2 * h), ell(-2 * h)
                assert abs(float(r.loss[i]) - l0) < 1e-13
                assert abs(float(r.first[i, j]) - (lp - lm) / (2 * h)) < 1e-6
                assert abs(float(r.second[i, j]) - (lp - 2 * l0 + lm) / h ** 2) < 1e-5
                assert abs(float(r.third[i, j]) - (l2p - 2 * lp + 2 * lm - l2m) / (2 * h ** 3)) < 1e-4


def test_against_dense_hessian_and_batch_mean():
    """Diagonal of torch.func.hessian of one sample's loss; and N * d(batch mean)/dx = per-sample derivative."""
    model, g = _mlp(4), torch.Generator().manual_seed(4)
    x, y = torch.randn(5, 3, generator=g, dtype=DT), torch.randn(5, 1, generator=g, dtype=DT)
    r = loss_input_derivatives(model, _sq, x, y, orders=(2,))
    assert r.first is None and r.third is None
    for i in range(5):
        hess = torch.func.hessian(lambda z: _sq(model(z[None]), y[i:i + 1]))(x[i])
        torch.testing.assert_close(r.second[i], torch.diagonal(hess), atol=1e-12, rtol=0)
    xb = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_sq(model(xb), y), xb)
    r1 = loss_input_derivatives(model, _sq, x, y, orders=(1,))
    torch.testing.assert_close(r1.first, 5 * grad, atol=1e-12, rtol=0)


def test_multi_dimensional_features():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 1)).to(DT)
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(4, 2, 3, generator=g, dtype=DT), torch.randn(4, 1, generator=g, dtype=DT)
    r = loss_input_derivatives(model, _sq, x, y, orders=(2, 1))
    w = model[1].weight.detach().reshape(2, 3)
    assert r.first.shape == (4, 2, 3)
    torch.testing.assert_close(r.second, (2 * w ** 2).expand(4, 2, 3), atol=1e-10, rtol=0)


def test_sensitivity_scores_reductions():
    d = torch.tensor([[1.0, -2.0], [-3.0, 2.0]], dtype=DT)
    assert sensitivity_scores(d).tolist() == [-1.0, 0.0]
    assert sensitivity_scores(d, "mean_abs").tolist() == [2.0, 2.0]
    torch.testing.assert_close(sensitivity_scores(d, "rms"), torch.tensor([5.0 ** 0.5, 2.0], dtype=DT))


def test_permutation_importance_matches_loop():
    model, g = _linear([1.0, 0.0, -0.5]), torch.Generator().manual_seed(6)
    x = torch.randn(50, 3, generator=g, dtype=DT)
    y = x[:, :1] - 0.5 * x[:, 2:]
    r = permutation_importance(model, _sq, x, y, n_repeats=3, generator=torch.Generator().manual_seed(7))
    gg = torch.Generator().manual_seed(7)
    rises = []
    with torch.no_grad():
        for _ in range(3):
            perm = torch.randperm(50, generator=gg)
            row = []
            for j in range(3):
                z = x.clone()
                z[:, j] = x[perm, j]
                row.append(float(_sq(model(z), y)) - float(_sq(model(x), y)))
            rises.append(row)
    rises = torch.tensor(rises, dtype=DT)
    torch.testing.assert_close(r.importance, rises.mean(0), atol=1e-12, rtol=0)
    torch.testing.assert_close(r.std, rises.std(0), atol=1e-12, rtol=0)
    assert r.importance[1] == 0.0 and r.base_loss < 1e-20 and r.n_repeats == 3


@settings(max_examples=15, deadline=None)
@given(st.lists(st.floats(-3, 3, allow_nan=False), min_size=1, max_size=4), st.integers(0, 2 ** 16))
def test_property_linear_second_derivative_is_twice_weight_squared(w, seed):
    g = torch.Generator().manual_seed(seed)
    model = _linear(w)
    x, y = torch.randn(3, len(w), generator=g, dtype=DT), torch.randn(3, 1, generator=g, dtype=DT)
    r = loss_input_derivatives(model, _sq, x, y, orders=(2,))
    torch.testing.assert_close(r.second, (2 * torch.tensor(w, dtype=DT) ** 2).expand(3, len(w)), atol=1e-10,
                               rtol=0)


def test_errors_pinned():
    model = _mlp()
    x, y = torch.randn(4, 3, dtype=DT), torch.randn(4, 1, dtype=DT)
    with pytest.raises(ValueError, match=r"orders must be distinct, got \[1, 1\]"):
        loss_input_derivatives(model, _sq, x, y, orders=(1, 1))
    with pytest.raises(ValueError, match="orders"):
        loss_input_derivatives(model, _sq, x, y, orders=(4,))
    with pytest.raises(ValueError, match=r"targets must have 4 rows \(one per row of inputs\), got shape \(3, 1\)"):
        loss_input_derivatives(model, _sq, x, y[:3])
    with pytest.raises(ValueError, match="loss_fn must return a scalar tensor, got shape \\(4, 1\\)"):
        loss_input_derivatives(model, lambda o, t: (o - t) ** 2, x, y)
    with pytest.raises(TypeError, match="inputs must have the dtype"):
        loss_input_derivatives(model, _sq, x.float(), y.float())
    with pytest.raises(ValueError, match="mode"):
        loss_input_derivatives(model, _sq, x, y, mode="sideways")
    with pytest.raises(RuntimeError):  # forward mode asked for explicitly is not silently replaced
        loss_input_derivatives(model, F.mse_loss, x, y, mode="forward")
    with pytest.raises(ValueError, match="reduction"):
        sensitivity_scores(x, "median")
    with pytest.raises(ValueError, match=r"inputs must have at least 2 rows \(a permutation needs two samples\), "
                                         r"got 1"):
        permutation_importance(model, _sq, x[:1], y[:1])
    with pytest.raises(ValueError, match="n_repeats"):
        permutation_importance(model, _sq, x, y, n_repeats=0)
