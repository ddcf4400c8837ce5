"""Deep linear UFM: closed-form geometry against scalar minimisation and known cases, the loss at the closed-form
point, stationarity there, trained models reaching it, the training loop against torch.optim, and errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from paperzoo.diagnostics.deep_linear_collapse import (deep_linear_ufm_loss, imbalanced_geometry_deviation,
                                                       imbalanced_mse_geometry, layer_features, layerwise_collapse,
                                                       train_deep_linear_ufm)
from paperzoo.diagnostics.neural_collapse import neural_collapse_metrics

DT = torch.float64


def _labels(sizes):
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))


def _g(t, n, N, M, lw, lh):
    return n * lh / (2 * (t ** M + N * lh)) + M * lw * t / 2


def _closed_form_point(geo, sizes, depth, width, seed=0):
    """Parameters realising the closed form: aligned layers with singular values s_k, random orthonormal frames."""
    g = torch.Generator().manual_seed(seed)
    K = len(sizes)
    frames = [torch.linalg.qr(torch.randn(width, width, generator=g, dtype=DT))[0][:, :K] for _ in range(depth)]
    frames.append(torch.eye(K, dtype=DT))  # the targets are one-hot: the output frame is the identity
    s = geo.layer_singular_values
    weights = [frames[m + 1] @ torch.diag(s) @ frames[m].T for m in range(depth)]
    y = _labels(sizes)
    H = (frames[0] * geo.feature_norms)[:, y].T.contiguous()  # rows h_{y_i} = ||h_k|| u_k
    return H, weights, y


# -- closed form ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes, M, lam", [([40, 20, 10, 10], 3, (5e-3, 5e-3)), ([9, 4, 2], 2, (1e-2, 3e-2)),
                                           ([30, 5], 5, (2e-3, 1e-3)), ([7, 3, 3, 1], 1, (1e-2, 1e-2))])
def test_geometry_minimises_the_scalar_problem(sizes, M, lam):
    geo = imbalanced_mse_geometry(sizes, M, lam)
    N = sum(sizes)
    for k, n in enumerate(sizes):
        t_k = float(geo.layer_singular_values[k]) ** 2
        res = minimize_scalar(lambda t: _g(t, n, N, M, *lam), bounds=(0, 50), method="bounded",
                              options={"xatol": 1e-12})
        best = min(res.fun, _g(0.0, n, N, M, *lam))
        assert _g(t_k, n, N, M, *lam) <= best + 1e-12
        grid = np.linspace(0, 20, 200001)
        assert _g(t_k, n, N, M, *lam) <= _g(grid, n, N, M, *lam).min() + 1e-12
    assert geo.objective == pytest.approx(sum(_g(float(s) ** 2, n, N, M, *lam)
                                              for s, n in zip(geo.layer_singular_values, sizes)), rel=1e-12)


def test_balanced_sizes_give_equal_norms():
    for M in (1, 2, 4):
        geo = imbalanced_mse_geometry([6, 6, 6, 6], M, (1e-2, 1e-2))
        for field in (geo.layer_singular_values, geo.feature_norms, *geo.layer_norms):
            assert torch.allclose(field, field[0].expand_as(field), rtol=1e-13, atol=0)


def test_depth_one_is_the_known_ufm_solution():
    sizes, (lw, lh) = [16, 8, 4, 2], (1e-2, 2e-2)
    N = sum(sizes)
    geo = imbalanced_mse_geometry(sizes, 1, (lw, lh))
    n = torch.tensor(sizes, dtype=DT)
    sigma2 = torch.clamp(torch.sqrt(n * lh / lw) - N * lh, min=0)  # sigma_k^2 = (sqrt(n_k lh / lw) - N lh)_+
    assert torch.allclose(geo.product_singular_values ** 2, sigma2, rtol=1e-12, atol=1e-14)
    assert torch.allclose(geo.feature_norms, sigma2.sqrt() / (sigma2 + N * lh), rtol=1e-12)
    assert geo.collapsed.tolist() == (sigma2 == 0).tolist()


def test_minority_collapse_when_a_class_is_too_small():
    geo = imbalanced_mse_geometry([100, 100, 1], 3, (5e-3, 5e-3))
    assert geo.collapsed.tolist() == [False, False, True]
    assert float(geo.feature_norms[2]) == 0.0 and float(geo.product_singular_values[2]) == 0.0


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=2, max_size=5), st.integers(1, 5),
       st.floats(1e-4, 5e-2), st.floats(1e-4, 5e-2))
def test_geometry_properties(sizes, M, lw, lh):
    geo = imbalanced_mse_geometry(sizes, M, (lw, lh))
    order = np.argsort(sizes, kind="stable")
    sigma = geo.product_singular_values.numpy()[order]
    assert np.all(np.diff(sigma) >= -1e-12)  # bigger classes, longer classifier rows
    N = sum(sizes)
    t = geo.layer_singular_values.numpy() ** 2
    alive = ~geo.collapsed.numpy()
    n = np.array(sizes, dtype=float)
    # stationarity of the non-collapsed classes: n lh t^{M-1} = lw (t^M + N lh)^2
    lhs, rhs = n * lh * t ** (M - 1), lw * (t ** M + N * lh) ** 2
    assert np.allclose(lhs[alive], rhs[alive], rtol=1e-8)


# -- the loss at the closed-form point ------------------------------------------------------------------------

@pytest.mark.parametrize("sizes, M", [([40, 20, 10, 10], 3), ([9, 4, 2], 1), ([5, 3, 2], 4)])
def test_loss_at_closed_form_point_equals_formula_and_is_stationary(sizes, M):
    lam = (5e-3, 5e-3)
    geo = imbalanced_mse_geometry(sizes, M, lam)
    H, weights, y = _closed_form_point(geo, sizes, M, width=8)
    params = [H.requires_grad_(), *[W.requires_grad_() for W in weights]]
    value = deep_linear_ufm_loss(params[0], params[1:], y, lam)
    assert float(value.detach()) == pytest.approx(geo.objective, rel=1e-12)
    grads = torch.autograd.grad(value, params)
    assert max(float(g.abs().max()) for g in grads) < 1e-12
    dev = imbalanced_geometry_deviation(H.detach(), [W.detach() for W in weights], y, geo)
    assert dev.max_relative_error < 1e-12 and float(dev.max_abs_cosine.max()) < 1e-12
    assert float(dev.nc1.max()) < 1e-20


def test_loss_matches_an_explicit_network():
    g = torch.Generator().manual_seed(1)
    H = torch.randn(10, 5, generator=g, dtype=DT)
    y = torch.arange(10) % 3
    layers = [torch.nn.Linear(5, 5, bias=False), torch.nn.Linear(5, 3)]
    net = torch.nn.Sequential(*layers).to(DT)
    out = net(H)
    lw, lh = 0.03, 0.07
    reg = lw / 2 * sum((lin.weight ** 2).sum() for lin in layers) + lh / 2 * (H ** 2).sum()
    mse = ((out - torch.nn.functional.one_hot(y, 3).to(DT)) ** 2).sum() / (2 * 10) + reg
    ce = torch.nn.functional.cross_entropy(out, y) + reg
    weights, bias = [lin.weight.detach() for lin in layers], layers[1].bias.detach()
    assert float(deep_linear_ufm_loss(H, weights, y, (lw, lh), bias=bias)) == pytest.approx(float(mse.detach()),
                                                                                             rel=1e-13)
    assert float(deep_linear_ufm_loss(H, weights, y, (lw, lh), bias=bias, loss="ce")) == pytest.approx(
        float(ce.detach()), rel=1e-13)
    feats = layer_features(H, weights)
    assert torch.allclose(feats[-1], (out - layers[1].bias).detach(), atol=1e-13)


# -- training -------------------------------------------------------------------------------------------------

def test_training_reaches_the_closed_form():
    sizes, M, lam = [12, 6, 3], 3, (5e-3, 5e-3)
    y = _labels(sizes)
    geo = imbalanced_mse_geometry(sizes, M, lam)
    fit = train_deep_linear_ufm(y, depth=M, width=8, lambdas=lam, lr=0.5, init_std=0.2, max_iter=3000, tol=1e-9,
                                generator=torch.Generator().manual_seed(0))
    assert fit.converged and fit.bias is None
    assert fit.loss == pytest.approx(geo.objective, rel=1e-9)
    dev = imbalanced_geometry_deviation(fit.H, list(fit.weights), y, geo)
    assert dev.max_relative_error < 1e-6 and float(dev.max_abs_cosine.max()) < 1e-6
    # NC1 agrees with the substrate's measure at every layer
    feats = layer_features(fit.H, list(fit.weights))
    for m in range(M):
        assert float(dev.nc1[m]) == pytest.approx(neural_collapse_metrics(feats[m], y).nc1, rel=1e-6, abs=1e-25)


def test_balanced_training_gives_an_etf_at_every_layer():
    y = torch.arange(18) % 3
    fit = train_deep_linear_ufm(y, depth=2, width=6, lambdas=(5e-3, 5e-3), bias=True, lr=0.5, init_std=0.2,
                                max_iter=3000, tol=1e-8, generator=torch.Generator().manual_seed(2))
    lc = layerwise_collapse(fit.H, list(fit.weights), y)
    assert float(lc.nc1.max()) < 1e-10 and float(lc.max_etf_cosine_error.max()) < 1e-6
    assert float(lc.norm_cv.max()) < 1e-6
    # the imbalanced measure of an unbalanced model is far from the ETF
    yi = _labels([12, 4, 2])
    fi = train_deep_linear_ufm(yi, depth=2, width=6, lambdas=(5e-3, 5e-3), lr=0.5, init_std=0.2, max_iter=3000,
                               tol=1e-8, generator=torch.Generator().manual_seed(2))
    assert float(layerwise_collapse(fi.H, list(fi.weights), yi).max_etf_cosine_error.max()) > 0.1


@pytest.mark.parametrize("optimizer", ["gd", "adam"])
def test_training_loop_matches_torch_optim(optimizer):
    y, M, width, steps, lr, lam = torch.arange(9) % 3, 2, 4, 7, 0.05, (1e-2, 2e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fit = train_deep_linear_ufm(y, depth=M, width=width, lambdas=lam, optimizer=optimizer, lr=lr, momentum=0.8,
                                    max_iter=steps, tol=0.0, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    shapes = [(9, width), (width, width), (3, width)]
    params = [(0.1 * torch.randn(*s, generator=g, dtype=DT)).requires_grad_() for s in shapes]
    opt = (torch.optim.SGD(params, lr=lr, momentum=0.8) if optimizer == "gd"
           else torch.optim.Adam(params, lr=lr, betas=(0.8, 0.999), eps=1e-8))
    for _ in range(steps):
        opt.zero_grad()
        deep_linear_ufm_loss(params[0], params[1:], y, lam).backward()
        opt.step()
    assert fit.n_iter == steps
    for a, b in zip([fit.H, *fit.weights], params):
        assert torch.allclose(a, b.detach(), rtol=1e-12, atol=1e-14)


def test_non_convergence_and_divergence_warn():
    y = torch.arange(6) % 2
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        fit = train_deep_linear_ufm(y, depth=2, width=3, lambdas=(1e-2, 1e-2), max_iter=3,
                                    generator=torch.Generator().manual_seed(0))
    assert not fit.converged and fit.n_iter == 3
    with pytest.warns(RuntimeWarning, match="non-finite"):
        fit = train_deep_linear_ufm(y, depth=3, width=3, lambdas=(1e-2, 1e-2), lr=1e6, init_std=1.0, max_iter=50,
                                    generator=torch.Generator().manual_seed(0))
    assert math.isfinite(fit.loss) and all(bool(torch.isfinite(W).all()) for W in fit.weights)


# -- errors ---------------------------------------------------------------------------------------------------

def test_errors():
    y = torch.tensor([0, 1, 2, 0])
    H = torch.randn(4, 3, dtype=DT)
    W = [torch.randn(3, 3, dtype=DT), torch.randn(3, 3, dtype=DT)]
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 2\], got values in \[0, 3\]"):
        deep_linear_ufm_loss(H, W, torch.tensor([0, 1, 3, 0]), (0.1, 0.1))
    with pytest.raises(ValueError, match=r"weights\[1\] must have 3 columns \(the width of its input\), got 2"):
        deep_linear_ufm_loss(H, [W[0], torch.randn(3, 2, dtype=DT)], y, (0.1, 0.1))
    with pytest.raises(ValueError, match="bias must have 3 entries"):
        deep_linear_ufm_loss(H, W, y, (0.1, 0.1), bias=torch.zeros(2, dtype=DT))
    with pytest.raises(ValueError, match="lambdas\\[0\\] must be >= 0"):
        deep_linear_ufm_loss(H, W, y, (-1.0, 0.1))
    with pytest.raises(ValueError, match=r"y must contain every class in \[0, 3\], got counts \[2, 1, 1, 0\]"):
        train_deep_linear_ufm(y, num_classes=4, depth=1, width=2, lambdas=(0.1, 0.1))
    with pytest.raises(ValueError, match="num_classes must exceed the largest label 2, got 2"):
        train_deep_linear_ufm(y, num_classes=2, depth=1, width=2, lambdas=(0.1, 0.1))
    with pytest.raises(ValueError, match="y must hold labels >= 0, got -1"):
        train_deep_linear_ufm(torch.tensor([0, -1]), depth=1, width=2, lambdas=(0.1, 0.1))
    with pytest.raises(ValueError, match="lambdas\\[1\\] must be > 0"):
        imbalanced_mse_geometry([3, 2], 2, (0.1, 0.0))
    with pytest.raises(ValueError, match="class_sizes must have at least 2 entries"):
        imbalanced_mse_geometry([3], 2, (0.1, 0.1))
    with pytest.raises(ValueError, match="class_sizes\\[1\\] must be >= 1"):
        imbalanced_mse_geometry([3, 0], 2, (0.1, 0.1))
    geo = imbalanced_mse_geometry([2, 1, 1], 2, (0.1, 0.1))
    with pytest.raises(ValueError, match=r"y must have the class sizes the geometry was built for, \[2, 1, 1\], "
                                         r"got \[1, 2, 1\]"):
        imbalanced_geometry_deviation(H, W, torch.tensor([0, 1, 2, 1]), geo)
    with pytest.raises(ValueError, match="geometry must be built for depth 1 and 3 classes"):
        imbalanced_geometry_deviation(H, W[:1], y, geo)
    with pytest.raises(TypeError, match="geometry must be a ImbalancedGeometry, got tuple"):
        imbalanced_geometry_deviation(H, W, y, tuple(geo))
    with pytest.raises(ValueError, match="centred class mean of zero norm"):
        layerwise_collapse(torch.ones(4, 3, dtype=DT), W, y)
