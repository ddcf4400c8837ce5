"""trajectory_pca / random_walk_pca_prediction / lissajous_correlation: scikit-learn, closed forms, Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.trajectory_pca import lissajous_correlation, random_walk_pca_prediction, trajectory_pca


def _walk(T, D, seed, dtype=torch.float64):
    return torch.randn(T, D, generator=torch.Generator().manual_seed(seed), dtype=dtype).cumsum(0)


def _aligned(a, b):
    """Flip the signs of the rows of ``a`` to match ``b`` (a PC's sign is arbitrary)."""
    s = np.sign((a * b).sum(1, keepdims=True))
    return a * s


@pytest.mark.parametrize("shape", [(30, 200), (200, 12)])  # Gram route (D > T) and covariance route
def test_matches_sklearn_pca(shape):
    from sklearn.decomposition import PCA

    X = _walk(*shape, seed=1) + 0.3 * torch.randn(*shape, generator=torch.Generator().manual_seed(2),
                                                  dtype=torch.float64)
    k = 6
    ours = trajectory_pca(X, k)
    ref = PCA(n_components=k, svd_solver="full").fit(X.numpy())
    assert ours.gram == (shape[1] > shape[0])
    np.testing.assert_allclose(ours.explained_variance_ratio.numpy(), ref.explained_variance_ratio_, rtol=1e-10)
    np.testing.assert_allclose(ours.explained_variance.numpy(), ref.explained_variance_, rtol=1e-10)
    comps = _aligned(ours.components.numpy(), ref.components_)
    np.testing.assert_allclose(comps, ref.components_, atol=1e-10)
    proj = ref.transform(X.numpy()) * np.sign((comps * ours.components.numpy()).sum(1))
    np.testing.assert_allclose(ours.projections.numpy(), proj, atol=1e-9 * np.abs(proj).max())
    assert math.isclose(float(ours.total_variance), float(X.var(0).sum()), rel_tol=1e-12)
    # sign convention: the largest-magnitude entry of each component is positive
    c = ours.components
    assert bool((c.gather(1, c.abs().argmax(1, keepdim=True)) > 0).all())


def test_gram_and_covariance_routes_agree():
    X = _walk(40, 41, seed=3)
    a, b = trajectory_pca(X, 5), trajectory_pca(X[:, :39].contiguous(), 5)
    assert a.gram and not b.gram
    Xs = X[:, :39]
    c = trajectory_pca(torch.cat([Xs, torch.zeros(40, 2, dtype=Xs.dtype)], 1), 5)  # zero coordinates change nothing
    assert c.gram
    torch.testing.assert_close(c.explained_variance_ratio, b.explained_variance_ratio, rtol=1e-10, atol=0)
    torch.testing.assert_close(c.components[:, :39], b.components, rtol=0, atol=1e-10)


def test_prediction_closed_form_and_limit():
    for T in (2, 3, 17, 400):
        pred = random_walk_pca_prediction(T, T - 1)
        torch.testing.assert_close(pred.explained_variance_ratio, pred.closed_form, rtol=1e-10, atol=1e-14)
        assert math.isclose(float(pred.closed_form.sum()), 1.0, rel_tol=1e-12)
    T, k = 600, 10
    big = random_walk_pca_prediction(T, k)
    rel = (big.explained_variance_ratio / big.limit - 1).abs()
    assert float(rel.max()) < (k / T) ** 2 + 1 / T ** 2  # the finite-T correction is (pi^2/12) (k/T)^2 + O(1/T^2)
    assert math.isclose(float(big.limit[0]), 6 / math.pi ** 2, rel_tol=1e-15)
    # the predicted modes are the eigenvectors of the centred min(t, s) matrix
    T = 12
    t = torch.arange(1, T + 1, dtype=torch.float64)
    C = torch.eye(T, dtype=torch.float64) - 1 / T
    K = C @ torch.minimum(t[:, None], t[None, :]) @ C
    pred = random_walk_pca_prediction(T, 4)
    lam = pred.closed_form * (T * T - 1) / 6
    torch.testing.assert_close(K @ pred.modes, pred.modes * lam, rtol=0, atol=1e-10)


def test_prediction_matches_monte_carlo_random_walks():
    # 150 independent 16-step walks in D = 1000 (Gaussian and Rademacher steps): mean measured ratio within 4 SE.
    T, D, R, k = 16, 1000, 150, 5
    pred = random_walk_pca_prediction(T, k).explained_variance_ratio
    g = torch.Generator().manual_seed(0)
    for steps in (torch.randn(R, T, D, generator=g, dtype=torch.float64),
                  torch.randint(0, 2, (R, T, D), generator=g).to(torch.float64) * 2 - 1):
        X = steps.cumsum(1)
        ratios = torch.stack([trajectory_pca(X[r], k).explained_variance_ratio for r in range(R)])
        mean, se = ratios.mean(0), ratios.std(0) / math.sqrt(R)
        assert bool(((mean - pred).abs() < 4 * se).all()), (mean, pred, se)


def test_lissajous_correlation_of_a_walk_and_of_noise():
    pca = trajectory_pca(_walk(100, 4000, seed=4), 4)
    corr = lissajous_correlation(pca.projections)
    assert corr.shape == (4,) and bool((corr > 0.97).all())
    noise = torch.randn(100, 4000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert bool((lissajous_correlation(trajectory_pca(noise, 4).projections) < 0.5).all())
    # exact: a sign flip and an offset change nothing; a constant column gives 0
    modes = random_walk_pca_prediction(30, 3).modes
    torch.testing.assert_close(lissajous_correlation(-3 * modes + 2), torch.ones(3, dtype=torch.float64))
    flat = torch.cat([modes[:, :1], torch.ones(30, 1, dtype=torch.float64)], 1)
    assert lissajous_correlation(flat).tolist()[1] == 0.0


def test_float32_and_rank_deficient():
    X = _walk(50, 300, seed=6, dtype=torch.float32)
    r = trajectory_pca(X, 3)
    assert r.components.dtype == torch.float32 and math.isclose(float(r.explained_variance_ratio[0]), 0.6, abs_tol=0.1)
    line = torch.arange(10, dtype=torch.float64)[:, None] * torch.ones(1, 20, dtype=torch.float64)
    r = trajectory_pca(line, 3)  # a straight line: one component, the rest zero (finite, not NaN)
    assert math.isclose(float(r.explained_variance_ratio[0]), 1.0, rel_tol=1e-12)
    assert bool(torch.isfinite(r.components).all()) and float(r.explained_variance_ratio[1:].abs().max()) < 1e-12


@settings(max_examples=25, deadline=None)
@given(T=st.integers(2, 12), D=st.integers(1, 12), seed=st.integers(0, 1000))
def test_property_ratios_sum_and_orthonormal(T, D, seed):
    X = torch.randn(T, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    k = min(T - 1, D)
    r = trajectory_pca(X, k)
    assert math.isclose(float(r.explained_variance_ratio.sum()), 1.0, rel_tol=1e-9)
    assert bool((r.explained_variance_ratio[:-1] >= r.explained_variance_ratio[1:] - 1e-12).all())
    torch.testing.assert_close(r.components @ r.components.T, torch.eye(k, dtype=torch.float64), rtol=0, atol=1e-8)


def test_bad_input_messages():
    X = _walk(10, 20, seed=0)
    with pytest.raises(ValueError, match=r"k must be <= min\(T - 1, D\) = 9 for positions of shape \(10, 20\), got 10"):
        trajectory_pca(X, 10)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        trajectory_pca(X, 0)
    with pytest.raises(ValueError, match=r"positions must have T >= 2 time steps, got shape \(1, 20\)"):
        trajectory_pca(X[:1], 1)
    with pytest.raises(ValueError, match="positions must have 2 dimension"):
        trajectory_pca(X[0], 1)
    with pytest.raises(ValueError, match="positions must be finite"):
        trajectory_pca(torch.full((3, 2), float("nan")), 1)
    with pytest.raises(TypeError, match="positions must have a floating dtype"):
        trajectory_pca(torch.ones(3, 2, dtype=torch.int64), 1)
    with pytest.raises(ValueError, match="positions must not be constant over time"):
        trajectory_pca(torch.ones(4, 3, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match=r"k must be <= T - 1 = 4 \(a centred T-point trajectory"):
        random_walk_pca_prediction(5, 5)
    with pytest.raises(ValueError, match="T must be >= 2, got 1"):
        random_walk_pca_prediction(1, 1)
    with pytest.raises(ValueError, match=r"projections must have k <= T - 1 = 2 columns, got shape \(3, 3\)"):
        lissajous_correlation(torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"projections must have T >= 2 time steps"):
        lissajous_correlation(torch.ones(1, 1))
