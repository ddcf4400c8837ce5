"""Tests for paperzoo.diagnostics.sgd_stability: the exact second-moment map of linearised SGD and its radius."""

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from paperzoo.diagnostics.sgd_stability import (batch_noise_factor, hessian_coherence, sgd_second_moment_operator,
                                                sgd_stability_condition, sgd_stability_radius,
                                                simulate_linearized_sgd)


def _psd(n, d, rank, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, d, rank, generator=g, dtype=torch.float64)
    return scale * A @ A.transpose(-1, -2) / d


def _explicit_map(Hs, lr, B, replacement, M):
    """E[(I - lr H_B) M (I - lr H_B)] by enumerating every batch (Python loop: the independent route)."""
    n, d = Hs.shape[0], Hs.shape[-1]
    batches = (itertools.product(range(n), repeat=B) if replacement else itertools.combinations(range(n), B))
    out, count = torch.zeros(d, d, dtype=Hs.dtype), 0
    for b in batches:
        P = torch.eye(d, dtype=Hs.dtype) - lr * Hs[list(b)].mean(0)
        out += P @ M @ P
        count += 1
    return out / count


@pytest.mark.parametrize("replacement", [False, True])
@pytest.mark.parametrize("B", [1, 2, 3])
def test_operator_matches_enumeration_over_batches(replacement, B):
    Hs = _psd(5, 4, 2, 0)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(4, 4, generator=g, dtype=torch.float64)
    M = X @ X.T
    T = sgd_second_moment_operator(Hs, 0.7, B, replacement=replacement)
    torch.testing.assert_close(T(M), _explicit_map(Hs, 0.7, B, replacement, M), rtol=1e-12, atol=1e-12)
    # batched application and the dense matrix agree with the matrix-free map
    torch.testing.assert_close(T(torch.stack([M, 2 * M]))[1], 2 * T(M), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close((T.dense() @ M.reshape(-1)).reshape(4, 4), T(M), rtol=1e-12, atol=1e-12)
    assert torch.allclose(T.dense(), T.dense().T, atol=1e-12)


@pytest.mark.parametrize("replacement", [False, True])
def test_lanczos_radius_matches_dense_eigh(replacement):
    Hs = _psd(12, 6, 1, 2, scale=3.0)
    for lr, B in [(0.3, 1), (0.8, 3), (1.5, 6)]:
        a = sgd_stability_radius(Hs, lr, B, replacement=replacement, generator=torch.Generator().manual_seed(0))
        b = sgd_stability_radius(Hs, lr, B, replacement=replacement, dense=True)
        assert a.converged and abs(a.radius - b.radius) <= 1e-9 * b.radius
        assert a.residual <= 1e-7 * a.radius
        # Krein-Rutman: the top eigenvector is a PSD second moment
        assert float(torch.linalg.eigvalsh(a.eigenvector)[0]) >= -1e-6


def test_full_batch_without_replacement_is_gd():
    Hs = _psd(8, 5, 2, 3)
    lam = torch.linalg.eigvalsh(Hs.mean(0))
    for lr in [0.3, 1.0, 1.9 / float(lam[-1])]:
        r = sgd_stability_radius(Hs, lr, 8, dense=True)
        assert r.radius == pytest.approx(float(((1 - lr * lam) ** 2).max()), rel=1e-10)
    edge = 2.0 / float(lam[-1])
    assert sgd_stability_radius(Hs, 0.999 * edge, 8).stable
    assert not sgd_stability_radius(Hs, 1.001 * edge, 8).stable
    assert batch_noise_factor(8, 8) == 0.0


@pytest.mark.parametrize("replacement", [False, True])
def test_commuting_hessians_closed_form(replacement):
    # Diagonal H_i: each entry M_ab scales by E[(1 - lr h_a)(1 - lr h_b)], maximal on the diagonal.
    g = torch.Generator().manual_seed(4)
    h = torch.rand(10, 7, generator=g, dtype=torch.float64) * 2
    Hs = torch.diag_embed(h)
    for lr, B in [(0.5, 1), (1.2, 2), (0.9, 5)]:
        c = batch_noise_factor(10, B, replacement)
        closed = float(((1 - lr * h.mean(0)) ** 2 + lr ** 2 * c * h.var(0, unbiased=False)).max())
        r = sgd_stability_radius(Hs, lr, B, replacement=replacement)
        assert r.radius == pytest.approx(closed, rel=1e-9)


def test_simulated_mean_square_growth_matches_radius():
    # Low per-sample spread (H_i = H0 + a small PSD term): the Monte Carlo mean is not dominated by rare runs.
    H0 = torch.diag(torch.linspace(0.2, 1.0, 5, dtype=torch.float64))
    Hs = H0 + 0.3 * _psd(16, 5, 1, 5)
    Hs = Hs / torch.linalg.eigvalsh(Hs.mean(0))[-1]
    for lr, B in [(0.8, 4), (2.1, 2)]:
        rho = sgd_stability_radius(Hs, lr, B).radius
        sim = simulate_linearized_sgd(Hs, lr, B, 120, n_runs=256, generator=torch.Generator().manual_seed(0))
        assert sim.growth_rate == pytest.approx(math.log(rho), abs=0.02)
        assert sim.typical_rate <= sim.growth_rate + 1e-9  # Jensen: the typical run grows no faster


def test_simulated_second_moment_is_unbiased_at_short_horizons():
    # From uniform unit starts E[e_0 e_0^T] = I/d, so E||e_k||^2 = tr(T^k(I/d)) exactly, on a heavy-tailed set too.
    Hs = _psd(16, 5, 5, 5)
    Hs = Hs / torch.linalg.eigvalsh(Hs.mean(0))[-1]
    for lr, B, rep in [(0.8, 4, False), (0.5, 1, True)]:
        T = sgd_second_moment_operator(Hs, lr, B, replacement=rep)
        M = torch.eye(5, dtype=torch.float64) / 5
        exact = []
        for _ in range(6):
            M = T(M)
            exact.append(float(torch.trace(M)))
        sim = simulate_linearized_sgd(Hs, lr, B, 6, n_runs=20000, replacement=rep,
                                      generator=torch.Generator().manual_seed(1))
        est = sim.log_mean_sq_norm[1:].exp()
        np.testing.assert_allclose(est.numpy(), exact, rtol=0.1)


def test_coherence_against_explicit_square_roots_and_extremes():
    Hs = _psd(6, 4, 2, 6)
    roots = [torch.from_numpy(np.real(scipy.linalg.sqrtm(H.numpy()))) for H in Hs]
    S = torch.tensor([[float(torch.linalg.matrix_norm(a @ b)) for b in roots] for a in roots], dtype=torch.float64)
    c = hessian_coherence(Hs)
    torch.testing.assert_close(c.S, S, rtol=1e-6, atol=1e-8)
    assert c.coherence == pytest.approx(float(torch.linalg.eigvalsh(S)[-1]) /
                                        float(torch.linalg.eigvalsh(Hs)[:, -1].max()), rel=1e-6)
    # identical matrices: n ||H||_F / ||H||_2; mutually orthogonal rank-one: 1; invariant under a common rotation
    H = Hs[0]
    same = hessian_coherence(H.expand(5, 4, 4).clone()).coherence
    assert same == pytest.approx(5 * float(torch.linalg.matrix_norm(H)) / float(torch.linalg.eigvalsh(H)[-1]))
    e = torch.eye(4, dtype=torch.float64)
    assert hessian_coherence(torch.stack([3.0 * torch.outer(v, v) for v in e])).coherence == pytest.approx(1.0)
    Q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    assert hessian_coherence(Q @ Hs @ Q.T).coherence == pytest.approx(c.coherence, rel=1e-9)


def test_condition_bounds_the_exact_radius():
    for seed in range(5):
        Hs = _psd(10, 4, 1, 10 + seed)
        for lr, B, rep in [(0.2, 1, False), (0.7, 3, True), (1.1, 5, False)]:
            cond = sgd_stability_condition(Hs, lr, B, replacement=rep)
            rho = sgd_stability_radius(Hs, lr, B, replacement=rep, dense=True).radius
            assert cond.radius_lower_bound <= rho * (1 + 1e-9)
            if cond.certified_unstable:
                assert rho >= 1 - 1e-9
            if not cond.gd_stable:
                assert rho >= 1 - 1e-9
        # at lr_bound the bound is exactly 1
        cond = sgd_stability_condition(Hs, 0.1, 1)
        assert sgd_stability_condition(Hs, cond.lr_bound, 1).radius_lower_bound == pytest.approx(1.0)


def test_error_messages():
    Hs = _psd(4, 3, 1, 0)
    with pytest.raises(ValueError, match=r"batch_size must be <= n \(4\) when sampling without replacement, got 5"):
        sgd_stability_radius(Hs, 0.1, 5)
    sgd_stability_radius(Hs, 0.1, 5, replacement=True)  # fine with replacement
    with pytest.raises(ValueError, match="lr must be >= 0"):
        sgd_second_moment_operator(Hs, -0.1, 1)
    with pytest.raises(ValueError, match="per_sample_hessians must be symmetric"):
        hessian_coherence(Hs + torch.triu(torch.ones(3, 3, dtype=torch.float64), 1))
    with pytest.raises(ValueError, match="per_sample_hessians must have 3 dimension"):
        sgd_stability_condition(Hs[0], 0.1, 1)
    with pytest.raises(ValueError, match=r"M must have shape \(\.\.\., 3, 3\), got \(2, 2\)"):
        sgd_second_moment_operator(Hs, 0.1, 1)(torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="positive top eigenvalue"):
        hessian_coherence(torch.zeros(3, 2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="steps must be >= 2"):
        simulate_linearized_sgd(Hs, 0.1, 1, 1)
