"""Tests for paperzoo.diagnostics.outlier_eigenspaces: G-matrix, outlier counts, alignment, tracker."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diagnostics.outlier_eigenspaces import (count_outliers, g_matrix, outlier_alignment,
                                                      outlier_eigenspace, outlier_tracker)

F64 = torch.float64
CE = torch.nn.functional.cross_entropy


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # small eigendecompositions are many times slower with several threads on a shared machine
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()


def _spiked(p, n, spikes, seed, weighted=False):
    """Sample second moment of N(0, I/50) noise plus ``spikes`` orthonormal unit means (a k-class mixture)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, p, generator=g, dtype=F64) / math.sqrt(50)
    U = torch.linalg.qr(torch.randn(p, max(spikes, 1), generator=g, dtype=F64)).Q.T[:spikes]
    if spikes:
        X = X + U[torch.randint(0, spikes, (n,), generator=g)]
    w = torch.rand(n, generator=g, dtype=F64) ** 2 if weighted else torch.ones(n, dtype=F64)
    return (X * w[:, None]).T @ X / n, U


# -- G-matrix -----------------------------------------------------------------------------------------------------

def test_g_matrix_matches_explicit_per_sample_loop():
    model = _mlp()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(7, 3, generator=g, dtype=F64), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    res = g_matrix(model, CE, x, y)
    rows = []
    for i in range(7):
        grads = torch.autograd.grad(CE(model(x[i:i + 1]), y[i:i + 1]), list(model.parameters()))
        rows.append(torch.cat([t.reshape(-1) for t in grads]))
    J = torch.stack(rows)
    expected = sum(torch.outer(r, r) for r in rows) / 7
    assert res.n_samples == 7 and res.matrix.shape == (J.shape[1],) * 2
    torch.testing.assert_close(res.matrix, expected, rtol=1e-12, atol=1e-13)
    # its trace is the mean squared per-sample gradient norm
    assert float(res.matrix.trace()) == pytest.approx(float(J.square().sum(1).mean()), rel=1e-12)


def test_g_matrix_matches_backpack_batchgrad():
    backpack = pytest.importorskip("backpack")
    from backpack.extensions import BatchGrad

    model = _mlp(3)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(9, 3, generator=g, dtype=F64), torch.randint(0, 3, (9,), generator=g)
    ext_model, ext_loss = backpack.extend(_mlp(3)), backpack.extend(torch.nn.CrossEntropyLoss())
    loss = ext_loss(ext_model(x), y)
    with backpack.backpack(BatchGrad()):
        loss.backward()
    J = torch.cat([p.grad_batch.reshape(9, -1) for p in ext_model.parameters()], 1) * 9  # mean-loss scaling
    torch.testing.assert_close(g_matrix(model, CE, x, y).matrix, J.T @ J / 9, rtol=1e-10, atol=1e-12)


# -- outlier detection on planted spikes --------------------------------------------------------------------------

@pytest.mark.parametrize("spikes", [0, 2, 4, 6])
@pytest.mark.parametrize("weighted", [False, True])
def test_gap_rule_finds_exactly_the_planted_spikes(spikes, weighted):
    for seed in range(4):
        M, U = _spiked(120, 480, spikes, seed + 10 * spikes, weighted)
        res = outlier_eigenspace(M, max_outliers=8)
        assert res.outliers.count == spikes and res.outliers.converged
        if spikes:  # the detected space is the planted one, up to the finite-sample (BBP) angle
            overlap = float((res.eigenvectors @ U.T).square().sum() / spikes)
            assert overlap > 0.9


@pytest.mark.parametrize("spikes", [0, 3, 5])
def test_mp_rule_finds_exactly_the_planted_spikes(spikes):
    for seed in range(4):
        M, _ = _spiked(150, 600, spikes, 100 + seed + spikes)
        lam = torch.linalg.eigvalsh(M)
        res = count_outliers(lam, method="mp", aspect_ratio=150 / 600)
        assert res.count == spikes and res.converged
        # with the true noise variance the edge is the Marchenko-Pastur one exactly
        exact = count_outliers(lam, method="mp", aspect_ratio=0.25, noise_variance=1 / 50)
        assert exact.edge == pytest.approx(1 / 50 * 1.5 ** 2, rel=1e-12) and exact.count == spikes
    # the bulk-mean estimate of sigma^2 is close to the truth
    assert res.noise_variance == pytest.approx(1 / 50, rel=0.05)


def test_gap_rule_on_hand_made_spectrum():
    bulk = 1 - torch.linspace(0, 1, 30, dtype=F64) ** 1.5
    lam = torch.cat([torch.tensor([9.0, 7.0, 5.0], dtype=F64), bulk])
    res = count_outliers(lam[torch.randperm(len(lam), generator=torch.Generator().manual_seed(0))], max_outliers=6)
    assert res.count == 3 and res.edge == pytest.approx(1.0) and res.method == "gap"
    assert count_outliers(torch.ones(20, dtype=F64), max_outliers=4).count == 0  # a flat spectrum: no outliers


# -- alignment ----------------------------------------------------------------------------------------------------

def test_alignment_in_span_is_one_and_orthogonal_is_zero():
    g = torch.Generator().manual_seed(0)
    V = torch.linalg.qr(torch.randn(50, 4, generator=g, dtype=F64)).Q.T.contiguous()
    theta = torch.randn(3, 4, generator=g, dtype=F64) @ V
    torch.testing.assert_close(outlier_alignment(theta, V), torch.ones(3, dtype=F64), rtol=0, atol=1e-14)
    perp = torch.randn(50, generator=g, dtype=F64)
    perp = perp - V.T @ (V @ perp)
    assert float(outlier_alignment(perp, V)) < 1e-13
    assert float(outlier_alignment(perp, V[:0])) == 0.0   # no outliers: an empty space


def test_alignment_of_random_vectors_is_about_k_over_d():
    d, k, m = 200, 5, 4000
    g = torch.Generator().manual_seed(1)
    V = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=F64)).Q.T.contiguous()
    a2 = outlier_alignment(torch.randn(m, d, generator=g, dtype=F64), V).square()
    # a^2 ~ Beta(k/2, (d-k)/2): mean k/d, variance 2k(d-k)/(d^2(d+2))
    se = math.sqrt(2 * k * (d - k) / (d ** 2 * (d + 2)) / m)
    assert abs(float(a2.mean()) - k / d) < 3 * se
    assert float(a2.std()) == pytest.approx(math.sqrt(2 * k * (d - k) / (d ** 2 * (d + 2))), rel=0.1)


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(1e-3, 1e3), seed=st.integers(0, 10_000))
def test_alignment_is_scale_invariant_and_in_unit_interval(scale, seed):
    g = torch.Generator().manual_seed(seed)
    V = torch.linalg.qr(torch.randn(12, 3, generator=g, dtype=F64)).Q.T.contiguous()
    theta = torch.randn(12, generator=g, dtype=F64)
    a = float(outlier_alignment(theta, V))
    assert 0.0 <= a <= 1.0
    assert float(outlier_alignment(scale * theta, V)) == pytest.approx(a, rel=1e-12)


# -- tracker ------------------------------------------------------------------------------------------------------

def test_tracker_matches_dense_hessian_g_matrix_and_alignment():
    torch.manual_seed(0)
    d, k = 15, 3
    model = torch.nn.Linear(d, k, bias=False).double()
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(60, d, generator=g, dtype=F64), torch.randint(0, k, (60,), generator=g)
    blocks = [(c * d, (c + 1) * d) for c in range(k)]
    tracker = outlier_tracker(model, CE, (x, y), 2, 1, blocks=blocks, max_outliers=2,
                              generator=torch.Generator().manual_seed(0))
    tracker(0)
    tr = tracker.result()
    W = model.weight.detach().clone()
    H = torch.func.hessian(lambda w: CE(x @ w.reshape(k, d).T, y))(W.reshape(-1))
    G = g_matrix(model, CE, x, y).matrix
    for c, (a, b) in enumerate(blocks):
        lam_h, U_h = torch.linalg.eigh(H[a:b, a:b])
        torch.testing.assert_close(tr.hessian_eigenvalues[c][0], lam_h.flip(0), rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(tr.g_eigenvalues[c][0], torch.linalg.eigvalsh(G[a:b, a:b]).flip(0),
                                   rtol=1e-10, atol=1e-13)
        top = U_h.flip(1)[:, :2].T.contiguous()
        assert float(tr.hessian_alignment[0, c]) == pytest.approx(float(outlier_alignment(W[c], top)), rel=1e-9)
    num = sum(float(tr.hessian_alignment[0, c]) ** 2 * float(W[c].square().sum()) for c in range(k))
    assert float(tr.hessian_total_alignment[0]) == pytest.approx(math.sqrt(num / float(W.square().sum())), rel=1e-9)
    assert tr.steps.tolist() == [0] and tr.theta.shape == (1, d * k)


def test_sgd_on_a_mixture_aligns_with_the_outlier_space():
    """A small version of the claim: k = 3 classes, d = 40, 10 d online SGD steps."""
    d, k = 40, 3
    g = torch.Generator().manual_seed(0)
    mu = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=F64)).Q.T

    def draw(n):
        y = torch.randint(0, k, (n,), generator=g)
        return mu[y] + torch.randn(n, d, generator=g, dtype=F64) / math.sqrt(50), y

    model = torch.nn.Linear(d, k, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(k, d, generator=g, dtype=F64) / math.sqrt(d))
    tracker = outlier_tracker(model, CE, draw(160), k, 10 * d, blocks=[(c * d, (c + 1) * d) for c in range(k)],
                              max_outliers=2 * k)
    xs, ys = draw(10 * d)
    tracker(0)
    for t in range(10 * d):
        with torch.no_grad():
            p = torch.softmax(model.weight @ xs[t], 0)
            model.weight -= (torch.outer(p - torch.eye(k, dtype=F64)[ys[t]], xs[t]) + 0.5 * model.weight) / d
        tracker(t + 1)
    tr = tracker.result()
    assert tr.hessian_count[-1].tolist() == [k] * k and tr.g_count[-1].tolist() == [k] * k
    assert float(tr.g_alignment[-1].min()) > 0.9 > float(tr.g_alignment[0].max())
    assert float(tr.random_alignment[-1].max()) < 0.7


# -- errors -------------------------------------------------------------------------------------------------------

def test_error_messages():
    lam = torch.linspace(1, 0, 12, dtype=F64)
    with pytest.raises(ValueError, match=r"eigenvalues must have at least max_outliers \+ fit_points \+ 1 = 16 "
                                         r"entries for the gap rule, got 12"):
        count_outliers(lam, max_outliers=5)
    with pytest.raises(ValueError, match=r"aspect_ratio must be given for method='mp'"):
        count_outliers(lam, method="mp")
    with pytest.raises(ValueError, match=r"aspect_ratio and noise_variance must be None for method='gap'"):
        count_outliers(lam, aspect_ratio=0.5)
    with pytest.raises(ValueError, match=r"method must be one of"):
        count_outliers(lam, method="bbp")
    E = torch.eye(4, dtype=F64)
    with pytest.raises(ValueError, match=r"theta must be nonzero \(the alignment is a fraction of its norm\)"):
        outlier_alignment(torch.zeros(4, dtype=F64), E[:2])
    with pytest.raises(ValueError, match=r"eigenvectors must have orthonormal rows \(V V\^T = I\), got a deviation "
                                         r"of 3"):
        outlier_alignment(torch.ones(4, dtype=F64), 2 * E[:2])
    with pytest.raises(ValueError, match=r"matrix must be symmetric"):
        outlier_eigenspace(torch.triu(torch.ones(20, 20, dtype=F64)))
    model = torch.nn.Linear(12, 2, bias=False).double()
    data = (torch.randn(30, 12, dtype=F64), torch.randint(0, 2, (30,)))
    with pytest.raises(ValueError, match=r"blocks\[0\] must be a pair \(start, stop\) of ints with 0 <= start < "
                                         r"stop <= 24 \(the parameter count\), got \(0, 30\)"):
        outlier_tracker(model, CE, data, 1, blocks=[(0, 30)])
    with pytest.raises(ValueError, match=r"rank must be <= the size of every block, got 13 > 12 \(blocks\[1\]\)"):
        outlier_tracker(model, CE, data, 13, blocks=[(0, 24), (12, 24)], method="mp")
    with pytest.raises(ValueError, match=r"blocks\[0\] must hold max_outliers \+ 11 entries at least for the gap "
                                         r"rule"):
        outlier_tracker(model, CE, data, 1, blocks=[(0, 10)])
    tracker = outlier_tracker(model, CE, data, 1, max_outliers=2)
    with pytest.raises(ValueError, match=r"tracker has recorded no checkpoint yet"):
        tracker.result()
    tracker.record(3)
    with pytest.raises(ValueError, match=r"step must increase from one checkpoint to the next \(last 3\), got 3"):
        tracker.record(3)
    with pytest.raises(ValueError, match=r"step must be an int >= 0, got -1"):
        tracker(-1)
    with pytest.raises(TypeError, match=r"inputs must have the dtype of the model's parameters"):
        g_matrix(model, CE, data[0].float(), data[1])
