"""Tests for the Monge gap regulariser and the map-fitting recipe built on it."""

import math

import numpy as np
import ot
import pytest
import torch

from paperzoo.data.gaussians import gaussian_ot_map, random_spd
from paperzoo.transport import fit_monge_gap_map, monge_gap

D64 = torch.float64


def _sample(n=64, d=2, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=D64)


def _rotation(theta):
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s], [s, c]], dtype=D64)


def test_matches_pot_entropic_and_exact_values():
    x = _sample(40)
    Tx = x @ _rotation(1.0).T + 0.3
    reg = 0.5
    M = ((x[:, None] - Tx[None]) ** 2).sum(-1).numpy()
    a = np.full(40, 1 / 40)
    P = ot.sinkhorn(a, a, M, reg, method="sinkhorn_log", numItermax=10_000, stopThr=1e-12)
    entropic = (P * M).sum() + reg * (P * (np.log(P) - 1)).sum()  # <P, M> - reg H(P)
    expected = np.trace(M) / 40 - entropic
    assert float(monge_gap(x, Tx, reg=reg, tol=1e-10)) == pytest.approx(expected, rel=1e-6)
    # small eps: the gap minus its entropic floor eps (1 + log n) approaches the exact gap (ot.emd2)
    reg = 1e-3
    exact = np.trace(M) / 40 - ot.emd2(a, a, M)
    floor = reg * (1 + math.log(40))
    assert float(monge_gap(x, Tx, reg=reg, tol=1e-8)) - floor == pytest.approx(exact, abs=5e-3)


def test_optimal_maps_have_gap_at_the_entropic_floor():
    x = _sample(32, d=3, seed=1)
    g = torch.Generator().manual_seed(2)
    m1, S1 = torch.zeros(3, dtype=D64), random_spd(3, low=0.5, high=2.0, generator=g)
    m2, S2 = torch.randn(3, generator=g, dtype=D64), random_spd(3, low=0.5, high=2.0, generator=g)
    A, b = gaussian_ot_map(m1, S1, m2, S2)  # SPD linear part: optimal between any measure and its image
    reg = 1e-2
    # for an optimal map, eps (1 + log n) <= gap <= eps (1 + 2 log n): the entropy of a plan is at most 1 + 2 log n
    floor, ceil = reg * (1 + math.log(32)), reg * (1 + 2 * math.log(32))
    for Tx in (x @ A.T + b, x + 2.0):  # a pure translation is optimal too
        gap = float(monge_gap(x, Tx, reg=reg, tol=1e-6))
        assert floor - 1e-6 <= gap <= ceil + 1e-6


def test_gap_grows_with_rotation_angle_and_is_nonnegative():
    x = _sample(32, seed=3)
    reg = 0.1
    floor = reg * (1 + math.log(32))
    gaps = [float(monge_gap(x, x @ _rotation(t).T, reg=reg, tol=1e-5)) for t in (0.0, 0.3, 0.8, 1.5)]
    assert all(g >= floor - 1e-9 for g in gaps)
    assert gaps == sorted(gaps) and gaps[-1] > 1.0
    # nonnegative on random non-optimal maps, with the default relative eps
    for seed in range(3):
        W = torch.randn(2, 2, generator=torch.Generator().manual_seed(seed), dtype=D64)
        assert float(monge_gap(x, torch.tanh(x @ W) * 3, tol=1e-5)) >= 0.0


def test_gradient_reaches_the_map_and_float32_works():
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 2)
    x = _sample(32, seed=4).float()
    gap = monge_gap(x, net(x))
    gap.backward()
    assert gap.dtype == torch.float32 and torch.isfinite(net.weight.grad).all() and net.weight.grad.abs().sum() > 0


def test_fit_runs_and_records_histories():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 2, generator=g), 2 * torch.randn(128, 2, generator=g) + 1
    fit = fit_monge_gap_map(x, y, lam=1.0, n_iter=3, batch_size=32, generator=g)
    assert fit.loss_history.shape == (3,) and torch.isfinite(fit.gap_history).all()
    plain = fit_monge_gap_map(x, y, lam=0.0, n_iter=2, batch_size=32, generator=g)
    assert plain.gap_history is None  # lam = 0: the gap is not computed
    torch.testing.assert_close(plain.loss_history, plain.fit_history)


def test_bad_inputs():
    x = _sample(8)
    with pytest.raises(ValueError, match=r"Tx must have n = 8 \(from x\) in its shape \(n, e\), got shape \(7, 2\)"):
        monge_gap(x, x[:7])
    with pytest.raises(TypeError, match=r"Tx must have the dtype of x \(torch.float64\), got torch.float32"):
        monge_gap(x, x.float())
    with pytest.raises(ValueError, match=r"reg must be > 0.0, got -1.0"):
        monge_gap(x, x + 1, reg=-1.0)
    with pytest.raises(ValueError, match=r"reg_scale must be > 0.0, got 0.0"):
        monge_gap(x, x, reg_scale=0.0)
    with pytest.raises(ValueError, match=r"lam must be >= 0.0, got -1.0"):
        fit_monge_gap_map(x, x, lam=-1.0)
    with pytest.raises(ValueError, match=r"y must have d = 2 \(from x\) in its shape \(m, d\), got shape \(8, 3\)"):
        fit_monge_gap_map(x, _sample(8, d=3))
