"""Tests for paperzoo.diagnostics.information_plane: binning against sklearn.metrics.mutual_info_score and an explicit
per-sample binning loop, the KDE bound against an explicit double loop and its closed-form limits, the full-batch
updates against torch.optim, nested binnings as a hypothesis property, pinned errors."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from paperzoo.diagnostics.information_plane import (
    _adam_stepper,
    _gd_stepper,
    _icosahedron,
    binned_information,
    compression,
    information_plane,
    kde_information,
    tishby_dataset,
)

D = torch.float64


def _layers(seed, n=200):
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(0, 2, (n, 6), generator=g).to(D)
    t1 = torch.tanh(X @ torch.randn(6, 3, generator=g, dtype=D))
    t2 = torch.tanh(t1 @ torch.randn(3, 2, generator=g, dtype=D))
    y = (X[:, 0] + X[:, 1] > 0).to(torch.int64)
    return X, [t1, t2], y


def _loop_bins(a: np.ndarray, n_bins, low, high):
    width = (high - low) / n_bins
    out = []
    for row in a:  # the explicit per-sample route
        out.append(tuple(min(max(int(math.floor((v - low) / width)), 0), n_bins - 1) for v in row))
    return out


def test_binning_matches_sklearn_mutual_info_score():
    from sklearn.metrics import mutual_info_score

    X, acts, y = _layers(0)
    out = binned_information(acts, y, X, n_bins=7)
    x_labels = [tuple(r) for r in X.tolist()]
    x_codes = {v: i for i, v in enumerate(sorted(set(x_labels)))}
    for k, a in enumerate(acts):
        pats = _loop_bins(a.numpy(), 7, float(a.min()), float(a.max()))
        codes = {v: i for i, v in enumerate(sorted(set(pats)))}
        t = [codes[p] for p in pats]
        ity = mutual_info_score(t, y.tolist()) / math.log(2)
        ixt = mutual_info_score(t, [x_codes[v] for v in x_labels]) / math.log(2)
        assert float(out.i_ty[k]) == pytest.approx(ity, abs=1e-10)
        assert float(out.i_xt[k]) == pytest.approx(ixt, abs=1e-10)
    p = y.to(D).mean()
    assert out.h_y == pytest.approx(float(-(p * p.log2() + (1 - p) * (1 - p).log2())), abs=1e-12)


def test_binning_distinct_inputs_and_fixed_range():
    X, y = tishby_dataset(D)
    out = binned_information([X, X[:, :4], X[:, :1] * 0], y, n_bins=2)
    assert out.i_xt.tolist() == pytest.approx([12.0, 4.0, 0.0], abs=1e-12)
    assert float(out.i_ty[0]) == pytest.approx(1.0, abs=1e-12)  # y is a function of X
    assert float(out.i_ty[2]) == pytest.approx(0.0, abs=1e-12)
    # inputs=None is the same as distinct rows; a fixed range wider than the data puts everything in one bin
    assert torch.equal(binned_information([X[:, :4]], y, X, n_bins=2).i_xt, out.i_xt[1:2])
    wide = binned_information([X[:, :4]], y, n_bins=2, low=torch.tensor([-10.0], dtype=D),
                              high=torch.tensor([10.0], dtype=D))
    assert float(wide.i_xt[0]) == pytest.approx(0.0, abs=1e-12)


def test_binning_with_repeated_inputs_subtracts_conditional_entropy():
    # 4 distinct inputs each repeated 3 times; T carries noise not in X: I(X;T) = H(X) - 0 at most 2 bits
    X = torch.arange(4, dtype=D).repeat_interleave(3)[:, None]
    T = X + torch.tensor([0.0, 0.1, 0.2] * 4, dtype=D)[:, None]
    y = (X[:, 0] > 1).to(torch.int64)
    out = binned_information([T], y, X, n_bins=40)
    assert float(out.i_xt[0]) == pytest.approx(2.0, abs=1e-12)
    assert float(out.i_ty[0]) == pytest.approx(1.0, abs=1e-12)


def _kde_loop(a: np.ndarray, y: np.ndarray, var: float):
    def lmk(h):
        rows = []
        for i in range(len(h)):  # explicit double loop
            s = [math.exp(-float(((h[i] - h[j]) ** 2).sum()) / (2 * var)) for j in range(len(h))]
            rows.append(math.log(sum(s) / len(h)))
        return np.array(rows)

    h_t = -lmk(a).mean()
    h_c = sum((y == c).mean() * -lmk(a[y == c]).mean() for c in np.unique(y))
    return h_t / math.log(2), (h_t - h_c) / math.log(2)


def test_kde_matches_explicit_double_loop():
    X, acts, y = _layers(1, n=40)
    out = kde_information(acts, y, noise_var=0.05)
    for k, a in enumerate(acts):
        ixt, ity = _kde_loop(a.numpy(), y.numpy(), 0.05)
        assert float(out.i_xt[k]) == pytest.approx(ixt, abs=1e-10)
        assert float(out.i_ty[k]) == pytest.approx(ity, abs=1e-10)


def test_kde_limits():
    centers = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [50.0, 50.0]], dtype=D)
    T = centers.repeat_interleave(5, dim=0)
    y = torch.tensor([0, 0, 1, 1]).repeat_interleave(5)
    sep = kde_information([T], y, noise_var=1.0)
    assert float(sep.i_xt[0]) == pytest.approx(2.0, abs=1e-9)  # log2 of 4 separated clusters
    assert float(sep.i_ty[0]) == pytest.approx(1.0, abs=1e-9)
    blur = kde_information([T], y, noise_var=1e8)
    assert float(blur.i_xt[0]) == pytest.approx(0.0, abs=1e-4)
    assert float(blur.i_ty[0]) == pytest.approx(0.0, abs=1e-4)
    assert blur.estimator == "kde"


def test_tishby_dataset():
    X, y = tishby_dataset()
    assert X.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.unique(X, dim=0).shape[0] == 4096
    assert int(y.sum()) == 2048
    u = _icosahedron(D)
    c = (u @ u.T).flatten()
    vals = torch.unique(torch.round(c * 1e9) / 1e9)
    s5 = 1 / math.sqrt(5)
    assert vals.tolist() == pytest.approx([-1.0, -s5, s5, 1.0], abs=1e-8)  # the icosahedron's angles
    X2, y2 = tishby_dataset(D)
    assert torch.equal(y, y2) and torch.equal(X.to(D), X2)


def test_full_batch_updates_match_torch_optim():
    torch.manual_seed(0)
    X, acts, y = _layers(2, n=64)
    for mine, ref in ((_adam_stepper, lambda p: torch.optim.Adam(p, lr=0.01)),
                      (_gd_stepper, lambda p: torch.optim.SGD(p, lr=0.01))):
        a = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 2)).to(D)
        b = copy.deepcopy(a)
        pa = list(a.parameters())
        step = mine(pa, 0.01)
        opt = ref(b.parameters())
        for _ in range(7):
            step(torch.autograd.grad(nn.functional.cross_entropy(a(X), y), pa))
            opt.zero_grad()
            nn.functional.cross_entropy(b(X), y).backward()
            opt.step()
        for p, q in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


def test_information_plane_trace():
    torch.manual_seed(1)
    X, y = tishby_dataset(D)
    X, y = X[::32], y[::32]
    net = nn.Sequential(nn.Linear(12, 5), nn.Tanh(), nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 2)).to(D)
    start = copy.deepcopy(net)
    out = information_plane(net, nn.functional.cross_entropy, X, y, [net[1], net[3]], epochs=30, lr=0.01,
                            n_records=4, n_bins=10)
    b, k = out["binning"], out["kde"]
    assert b.epochs.tolist() == [0, 1, 5, 30] and torch.equal(b.epochs, k.epochs)
    assert b.i_xt.shape == (4, 2) and b.converged
    assert bool((b.i_xt <= math.log2(128) + 1e-9).all()) and bool((b.i_ty <= b.h_y + 1e-9).all())
    assert float(b.loss[-1]) < float(b.loss[0])
    # the epoch-0 record is the untrained network measured directly (the KDE has no range to fix)
    h1 = start[1](start[0](X))
    ref = kde_information([h1, start[3](start[2](h1))], y, noise_var=0.1)
    torch.testing.assert_close(k.i_xt[0], ref.i_xt, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(k.i_ty[0], ref.i_ty, rtol=1e-10, atol=1e-10)
    # a KDE subsample: the epoch-0 record is the bound on the drawn rows
    g = torch.Generator().manual_seed(5)
    rows = torch.randperm(128, generator=torch.Generator().manual_seed(5))[:40]
    fresh = copy.deepcopy(start)
    sub = information_plane(fresh, nn.functional.cross_entropy, X, y, [fresh[1]], epochs=1,
                            n_records=2, estimators=["kde"], kde_samples=40, generator=g)["kde"]
    ref1 = kde_information([h1[rows]], y[rows], noise_var=0.1)
    torch.testing.assert_close(sub.i_xt[0], ref1.i_xt, rtol=1e-10, atol=1e-10)
    again = copy.deepcopy(start)
    only = information_plane(again, nn.functional.cross_entropy, X, y, [again[1]], epochs=2, n_records=2,
                             estimators=["binning"])
    assert set(only) == {"binning"}


def test_compression_closed_form():
    e = torch.tensor([0, 1, 10, 100])
    i = torch.tensor([[1.0, 5.0], [4.0, 4.0], [3.0, 6.0], [2.5, 6.0]], dtype=D)
    c = compression(e, i)
    assert c.drop.tolist() == [1.5, 0.0]
    assert c.peak_epoch.tolist() == [1, 10]
    assert c.peak_fraction.tolist() == pytest.approx([0.01, 0.1])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 20), k=st.integers(1, 6))
def test_nested_bins_property(seed, k):
    # with the same range, 2k bins refine k bins, so the plug-in I(X;T) and I(T;Y) cannot fall
    X, acts, y = _layers(seed, n=60)
    coarse = binned_information(acts, y, X, n_bins=k)
    fine = binned_information(acts, y, X, n_bins=2 * k)
    assert bool((fine.i_xt >= coarse.i_xt - 1e-12).all()) and bool((fine.i_ty >= coarse.i_ty - 1e-12).all())
    assert bool((coarse.i_ty <= coarse.h_y + 1e-12).all())


def test_errors():
    X, acts, y = _layers(3, n=20)
    with pytest.raises(ValueError, match=r"activations\[1\] must have shape \(n, d_T\) with n = 20 \(labels\), got "
                                         r"\(19, 2\)"):
        binned_information([acts[0], acts[1][1:]], y)
    with pytest.raises(ValueError, match=r"low and high must be given together"):
        binned_information(acts, y, low=torch.zeros(2, dtype=D))
    with pytest.raises(ValueError, match=r"high must be >= low in every layer"):
        binned_information(acts, y, low=torch.ones(2, dtype=D), high=torch.zeros(2, dtype=D))
    with pytest.raises(ValueError, match=r"n_bins must be >= 1, got 0"):
        binned_information(acts, y, n_bins=0)
    with pytest.raises(ValueError, match=r"noise_var must be > 0"):
        kde_information(acts, y, noise_var=0.0)
    net = nn.Sequential(nn.Linear(6, 3), nn.Tanh(), nn.Linear(3, 2)).to(D)
    loss = nn.functional.cross_entropy
    with pytest.raises(ValueError, match=r"layers\[0\] must be a submodule of model"):
        information_plane(net, loss, X, y, [nn.Tanh()], epochs=1, n_records=2)
    with pytest.raises(ValueError, match=r"estimators must contain only 'binning' or 'kde', got 'mine'"):
        information_plane(net, loss, X, y, [net[1]], epochs=1, n_records=2, estimators=["mine"])
    with pytest.raises(ValueError, match=r"optimizer must be one of"):
        information_plane(net, loss, X, y, [net[1]], epochs=1, optimizer="sgd")
    with pytest.raises(ValueError, match=r"epochs must be strictly increasing"):
        compression(torch.tensor([0, 0]), torch.zeros(2, 1))
