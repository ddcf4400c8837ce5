"""Tests for paperzoo.diagnostics.dropout_noise: closed forms, an explicit per-mask loop, scikit-learn PCA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.core.evidence import fit_line
from paperzoo.diagnostics.dropout_noise import (dropout_gradient_noise, hessian_covariance_alignment,
                                                variance_flatness)
from paperzoo.diagnostics.tiny_subspace import subspace_overlap

F64 = torch.float64
mse = torch.nn.functional.mse_loss


def _net(seed=0, drop=0.3, hidden=3):
    g = torch.Generator().manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.Tanh(), torch.nn.Dropout(drop),
                            torch.nn.Linear(hidden, 1)).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64))
    x = torch.randn(6, 2, generator=g, dtype=F64)
    y = torch.randn(6, 1, generator=g, dtype=F64)
    return m, x, y


def _expected_dropout_loss(m, x, y, q):
    """E_eta of the MSE with dropout (rate q) on the last hidden layer, in closed form:
    (a.h + c - y)^2 + q/(1-q) sum_j a_j^2 h_j^2, averaged over samples."""
    W, b, a, c = [p for p in m.parameters()]
    h = torch.tanh(x @ W.T + b)
    mean_out = h @ a.T + c
    return ((mean_out - y) ** 2).mean() + q / (1 - q) * ((h ** 2) @ (a ** 2).T).mean()


def test_mean_gradient_matches_expected_dropout_loss():
    m, x, y = _net()
    noise = dropout_gradient_noise(m.train(), mse, x, y, num_masks=6000, generator=torch.Generator().manual_seed(1))
    exact = torch.cat([g.reshape(-1) for g in torch.autograd.grad(_expected_dropout_loss(m, x, y, 0.3),
                                                                  list(m.parameters()))])
    se = noise.covariance.diagonal().sqrt() / math.sqrt(noise.num_masks)
    assert torch.all((noise.mean - exact).abs() <= 5 * se + 1e-12)


def test_covariance_matches_explicit_per_mask_loop():
    m, x, y = _net(seed=2)
    noise = dropout_gradient_noise(m.train(), mse, x, y, num_masks=3000, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(4)
    rows = []
    for _ in range(3000):  # the independent route: the model's own dropout, one autograd pass per mask
        grads = torch.autograd.grad(mse(m(x), y), list(m.parameters()))
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    G = torch.stack(rows)
    C = torch.cov(G.T)
    assert noise.gradients.shape == (3000, 13)
    assert torch.allclose(noise.covariance, torch.cov(noise.gradients.T), atol=1e-12)
    assert float(torch.linalg.matrix_norm(noise.covariance - C) / torch.linalg.matrix_norm(C)) < 0.1


def test_noise_is_reproducible_and_leaves_global_rng():
    m, x, y = _net()
    state = torch.get_rng_state()
    a = dropout_gradient_noise(m.train(), mse, x, y, num_masks=8, generator=torch.Generator().manual_seed(5))
    b = dropout_gradient_noise(m.train(), mse, x, y, num_masks=8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.gradients, b.gradients)
    assert torch.equal(state, torch.get_rng_state())


def test_noise_vanishes_without_dropout_rate():
    m, x, y = _net(drop=0.3)
    m.eval()
    with pytest.raises(ValueError, match="model must contain a torch.nn.Dropout with p > 0 in training mode"):
        dropout_gradient_noise(m, mse, x, y, num_masks=4)
    plain = torch.nn.Sequential(torch.nn.Linear(2, 1)).double()
    with pytest.raises(ValueError, match=r"got 0 dropout layer\(s\)"):
        dropout_gradient_noise(plain, mse, x, y, num_masks=4)
    with pytest.raises(ValueError, match="num_masks"):
        dropout_gradient_noise(m.train(), mse, x, y, num_masks=1)


def test_alignment_closed_forms_and_overlap():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(7, 7, generator=g, dtype=F64)
    H = A @ A.T
    B = torch.randn(7, 7, generator=g, dtype=F64)
    C = B @ B.T
    r = hessian_covariance_alignment(H, C, k=3)
    Hn, Cn = H.numpy(), C.numpy()
    assert r.alignment == pytest.approx(np.trace(Hn @ Cn) / (np.linalg.norm(Hn) * np.linalg.norm(Cn)), rel=1e-12)
    assert r.isotropic_alignment == pytest.approx(np.trace(Hn) / (np.linalg.norm(Hn) * math.sqrt(7)), rel=1e-12)
    U = torch.linalg.eigh(H).eigenvectors[:, -3:].T.contiguous()
    V = torch.linalg.eigh(C).eigenvectors[:, -3:].T.contiguous()
    assert r.top_overlap == pytest.approx(float(subspace_overlap(U, V)), abs=1e-12)
    assert r.random_overlap == pytest.approx(3 / 7)
    iso = hessian_covariance_alignment(H, torch.eye(7, dtype=F64), k=2)
    assert iso.alignment == pytest.approx(iso.isotropic_alignment, rel=1e-12)
    same = hessian_covariance_alignment(H, 5.0 * H, k=2)
    assert same.alignment == pytest.approx(1.0, abs=1e-12) and same.top_overlap == pytest.approx(1.0, abs=1e-10)


def test_rotation_null_matches_haar_monte_carlo():
    from scipy.stats import ortho_group

    g = torch.Generator().manual_seed(1)
    A = torch.randn(5, 5, generator=g, dtype=F64)
    B = torch.randn(5, 5, generator=g, dtype=F64)
    H, C = A @ A.T, B @ B.T
    r = hessian_covariance_alignment(H, C, k=2)
    Q = torch.from_numpy(ortho_group.rvs(5, size=4000, random_state=0))
    vals = torch.einsum("ij,bji->b", H, Q @ C @ Q.mT) / (torch.linalg.matrix_norm(H) * torch.linalg.matrix_norm(C))
    assert r.rotation_null == pytest.approx(float(vals.mean()), abs=4 * float(vals.std()) / math.sqrt(4000))


def test_alignment_errors():
    H = torch.eye(3, dtype=F64)
    with pytest.raises(ValueError, match=r"k must be <= n = 3 \(the matrix size\), got 4"):
        hessian_covariance_alignment(H, H, k=4)
    with pytest.raises(ValueError, match="covariance must not be the zero matrix"):
        hessian_covariance_alignment(H, torch.zeros(3, 3, dtype=F64), k=1)
    with pytest.raises(ValueError, match="hessian must not be the zero matrix"):
        hessian_covariance_alignment(torch.zeros(3, 3, dtype=F64), H, k=1)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 100.0))
def test_alignment_symmetric_bounded_scale_free(seed, scale):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(5, 5, generator=g, dtype=F64)
    B = torch.randn(5, 5, generator=g, dtype=F64)
    H, C = A + A.T, B @ B.T
    r = hessian_covariance_alignment(H, C, k=2)
    assert -1 - 1e-12 <= r.alignment <= 1 + 1e-12
    assert r.alignment == pytest.approx(hessian_covariance_alignment(C, H, k=2).alignment, rel=1e-9, abs=1e-12)
    assert r.alignment == pytest.approx(hessian_covariance_alignment(H, scale * C, k=2).alignment, rel=1e-9,
                                        abs=1e-12)


def _quadratic_problem():
    model = torch.nn.Linear(2, 1, bias=False).double()
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=F64)
    y = torch.tensor([[1.0], [1.0], [0.0]], dtype=F64)
    g = torch.Generator().manual_seed(0)
    walk = torch.randn(60, 2, generator=g, dtype=F64) * torch.tensor([0.3, 0.05], dtype=F64) + 0.2
    return model, x, y, walk


def test_flatness_matches_quadratic_closed_form_and_sklearn_pca():
    from sklearn.decomposition import PCA

    model, x, y, walk = _quadratic_problem()
    r = variance_flatness(model, mse, x, y, walk, 2, num_points=20001)
    center = walk.mean(0)
    X, Y = x.numpy(), y.numpy()[:, 0]

    def loss(t):
        return float(np.mean((X @ t - Y) ** 2))

    L0 = loss(center.numpy())
    assert r.center_loss == pytest.approx(L0, rel=1e-12)
    for i in range(2):
        v = r.components[i].numpy()
        # L(c + s v) = L0 + g s + h s^2 exactly (MSE of a linear model); width of {L <= 2 L0}
        gl = float(np.mean(2 * (X @ center.numpy() - Y) * (X @ v)))
        h = float(np.mean((X @ v) ** 2))
        assert r.flatness[i].item() == pytest.approx(math.sqrt(gl * gl + 4 * h * L0) / h, rel=1e-5)
    pca = PCA(2).fit(walk.numpy())
    assert np.allclose(r.variance.numpy(), pca.explained_variance_, rtol=1e-10)
    fit = fit_line(r.variance.log(), r.flatness.log())
    assert r.slope == pytest.approx(fit.slope, rel=1e-12)
    assert r.converged


def test_flatness_not_crossed_warns_nan():
    model, x, y, walk = _quadratic_problem()
    with pytest.warns(RuntimeWarning, match="increase max_radius"):
        r = variance_flatness(model, mse, x, y, walk, 2, max_radius=1e-3)
    assert torch.isnan(r.flatness).all() and not r.converged and math.isnan(r.slope)


def test_flatness_errors():
    model, x, y, walk = _quadratic_problem()
    with pytest.raises(ValueError, match=r"positions must have n = 2 columns"):
        variance_flatness(model, mse, x, y, torch.zeros(5, 3, dtype=F64), 1)
    with pytest.raises(ValueError, match=r"k must be <= min\(T - 1, n\) = 2"):
        variance_flatness(model, mse, x, y, walk, 3)
    with pytest.raises(ValueError, match="factor"):
        variance_flatness(model, mse, x, y, walk, 1, factor=1.0)
    exact = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        exact.weight.fill_(1.0)
    xs = torch.ones(3, 1, dtype=F64)
    pos = torch.tensor([[0.9], [1.1]], dtype=F64)
    with pytest.raises(ValueError, match="the loss at the trajectory mean must be finite and > 0"):
        variance_flatness(exact, mse, xs, xs, pos, 1)
