"""Tests for paperzoo.diagnostics.layer_alignment: per-sample loops, the exact factorisation, BackPACK, properties."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from paperzoo.diagnostics.layer_alignment import (
    kernel_alignment,
    layerwise_tangent_alignment,
    mlp_signal_propagation,
)

D = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: intra-op threads only add contention


def _mlp(seed, dims=(4, 6, 5, 3), act=nn.Tanh, bias=True):
    torch.manual_seed(seed)
    mods = []
    for i in range(len(dims) - 1):
        mods.append(nn.Linear(dims[i], dims[i + 1], bias=bias))
        if i < len(dims) - 2:
            mods.append(act())
    return nn.Sequential(*mods).to(D)


def _loop_alignment(model, x, y, centered):
    """Explicit per-sample, per-output Python loop over autograd gradients: the independent route."""
    layers = {}
    for name, p in model.named_parameters():
        layers.setdefault(name.rpartition(".")[0], []).append(p)
    n = x.shape[0]
    out_dim = model(x[:1]).numel()
    Y = y.reshape(n, -1)
    T = Y @ Y.T
    H = torch.eye(n, dtype=D) - 1.0 / n
    res = []
    for params in layers.values():
        J = torch.zeros(n, out_dim, sum(p.numel() for p in params), dtype=D)
        for i in range(n):
            out = model(x[i:i + 1]).reshape(-1)
            for c in range(out_dim):
                g = torch.autograd.grad(out[c], params, retain_graph=True)
                J[i, c] = torch.cat([t.reshape(-1) for t in g])
        K = torch.einsum("ikp,jkp->ij", J, J)
        Kc, Tc = (H @ K @ H, H @ T @ H) if centered else (K, T)
        res.append(float((Kc * Tc).sum() / (Kc.norm() * Tc.norm())))
    return torch.tensor(res, dtype=D)


@pytest.mark.parametrize("centered", [False, True])
def test_generic_matches_per_sample_loop(centered):
    model = _mlp(0)
    x = torch.randn(7, 4, dtype=D)
    y = torch.randn(7, 3, dtype=D)
    res = layerwise_tangent_alignment(model, x, y, centered=centered)
    assert res.layer_names == ("0", "2", "4")
    assert res.n_params == (30, 35, 18)
    torch.testing.assert_close(res.alignment, _loop_alignment(model, x, y, centered), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("act", [nn.Tanh, nn.ReLU, nn.Identity])
def test_factorised_kernel_matches_jacobians(centered, bias, act):
    model = _mlp(1, dims=(5, 7, 6, 6, 2), act=act, bias=bias)
    x = torch.randn(9, 5, dtype=D)
    y = torch.sign(torch.randn(9, 2, dtype=D))
    gen = layerwise_tangent_alignment(model, x, y, centered=centered)
    sp = mlp_signal_propagation(model, x, y, centered=centered)
    torch.testing.assert_close(sp.tangent_alignment, gen.alignment, rtol=1e-12, atol=1e-12)


def test_norms_and_factor_alignments_against_loop():
    model = _mlp(2, dims=(3, 4, 4, 2), act=nn.ReLU)
    x = torch.randn(5, 3, dtype=D)
    y = torch.randn(5, 2, dtype=D)
    sp = mlp_signal_propagation(model, x, y)
    lins = [m for m in model if isinstance(m, nn.Linear)]
    T = y @ y.T
    for li, lin in enumerate(lins):
        hs, gs = [], []
        for i in range(5):
            h, z_store = x[i:i + 1], {}
            for m in model:
                if m is lin:
                    hs.append(h.reshape(-1).detach())
                    h = m(h)
                    z_store["z"] = h
                else:
                    h = m(h)
            grads = [torch.autograd.grad(h.reshape(-1)[c], z_store["z"], retain_graph=True)[0].reshape(-1)
                     for c in range(2)]
            gs.append(torch.stack(grads))
        Hm, Gm = torch.stack(hs), torch.stack(gs)  # (N, d), (N, k, w)
        F = Hm @ Hm.T
        G = torch.einsum("ikw,jkw->ij", Gm, Gm)
        assert sp.forward_norms[li].item() == pytest.approx(float((Hm**2).sum() / Hm.numel()), rel=1e-12)
        assert sp.backward_norms[li].item() == pytest.approx(float((Gm**2).sum() / 5), rel=1e-12)
        assert sp.forward_alignment[li].item() == pytest.approx(float((F * T).sum() / (F.norm() * T.norm())),
                                                                 rel=1e-12)
        assert sp.backward_alignment[li].item() == pytest.approx(float((G * T).sum() / (G.norm() * T.norm())),
                                                                  rel=1e-12)


def test_against_backpack_batchgrad():
    from backpack import backpack, extend
    from backpack.extensions import BatchGrad

    model = _mlp(3, dims=(4, 6, 6, 1), act=nn.Tanh)
    x = torch.randn(8, 4, dtype=D)
    y = torch.sign(torch.randn(8, dtype=D))
    ext = extend(copy.deepcopy(model))
    with backpack(BatchGrad()):
        ext(x.requires_grad_(True)).sum().backward()  # sample i's term is f(x_i): grad_batch[i] = d f(x_i) / d theta
    Ks = []
    for lin in (m for m in ext if isinstance(m, nn.Linear)):
        J = torch.cat([lin.weight.grad_batch.reshape(8, -1), lin.bias.grad_batch.reshape(8, -1)], 1)
        Ks.append(J @ J.T)
    T = torch.outer(y, y)
    ref = torch.tensor([float((K * T).sum() / (K.norm() * T.norm())) for K in Ks], dtype=D)
    res = layerwise_tangent_alignment(model, x, y)
    torch.testing.assert_close(res.alignment, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(res.kernel_norms, torch.stack([K.norm() for K in Ks]), rtol=1e-12, atol=1e-12)


def test_kernel_alignment_closed_forms():
    y = torch.tensor([1.0, -1.0, 1.0, 1.0], dtype=D)
    assert kernel_alignment(torch.outer(y, y), y) == pytest.approx(1.0, abs=1e-15)
    assert kernel_alignment(-torch.outer(y, y), y) == pytest.approx(-1.0, abs=1e-15)
    # identity: <I, yy^T> = n, ||I|| = sqrt(n), ||yy^T|| = n -> 1/sqrt(n)
    assert kernel_alignment(torch.eye(4, dtype=D), y) == pytest.approx(0.5, abs=1e-15)
    # all-ones kernel is orthogonal to the centred label kernel; zero kernel gives 0
    assert kernel_alignment(torch.ones(4, 4, dtype=D), y, centered=True) == pytest.approx(0.0, abs=1e-15)
    assert kernel_alignment(torch.zeros(4, 4, dtype=D), y) == 0.0


def test_layers_subset_and_order():
    model = _mlp(4)
    x, y = torch.randn(6, 4, dtype=D), torch.randn(6, dtype=D)
    full = layerwise_tangent_alignment(model, x, y)
    part = layerwise_tangent_alignment(model, x, y, layers=["4", "0"])
    assert part.layer_names == ("4", "0")
    torch.testing.assert_close(part.alignment, full.alignment[[2, 0]], rtol=1e-13, atol=1e-13)


def test_errors():
    model = _mlp(5)
    x = torch.randn(6, 4, dtype=D)
    with pytest.raises(ValueError, match=r"targets must have 6 rows \(one per row of inputs\), got shape \(5,\)"):
        layerwise_tangent_alignment(model, x, torch.randn(5, dtype=D))
    with pytest.raises(ValueError, match=r"targets must give a nonzero label kernel Y Y\^T \(targets are all zero\)"):
        layerwise_tangent_alignment(model, x, torch.zeros(6, dtype=D))
    with pytest.raises(ValueError, match=r"targets must give a nonzero label kernel Y Y\^T after centring"):
        mlp_signal_propagation(model, x, torch.ones(6, dtype=D), centered=True)
    with pytest.raises(ValueError, match=r"layers must be distinct module paths among \['0', '2', '4'\], got \['9'\]"):
        layerwise_tangent_alignment(model, x, torch.randn(6, dtype=D), layers=["9"])
    with pytest.raises(TypeError, match=r"model must be a non-empty nn.Sequential of nn.Linear and elementwise "
                                        r"activations, got Linear"):
        mlp_signal_propagation(nn.Linear(4, 1).to(D), x, torch.randn(6, dtype=D))
    with pytest.raises(ValueError, match=r"model must end with an nn.Linear \(the output layer\), got Tanh"):
        mlp_signal_propagation(nn.Sequential(nn.Linear(4, 2), nn.Tanh()).to(D), x, torch.randn(6, dtype=D))
    with pytest.raises(ValueError, match=r"model must have parameters only in its nn.Linear layers, got LayerNorm"):
        mlp_signal_propagation(nn.Sequential(nn.Linear(4, 2), nn.LayerNorm(2), nn.Linear(2, 1)).to(D), x,
                               torch.randn(6, dtype=D))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 10.0), centered=st.booleans())
def test_property_invariances(seed, scale, centered):
    """A_l is in [-1, 1], invariant to rescaling the labels, and to rescaling the output layer (which multiplies every
    hidden layer's kernel by scale^2)."""
    model = _mlp(seed, dims=(3, 5, 4, 1), act=nn.Tanh)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 3, generator=g, dtype=D)
    y = torch.randn(6, generator=g, dtype=D)
    a = mlp_signal_propagation(model, x, y, centered=centered).tangent_alignment
    assert bool((a.abs() <= 1 + 1e-12).all())
    b = mlp_signal_propagation(model, x, scale * y, centered=centered).tangent_alignment
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        model[-1].weight.mul_(scale)
    c = mlp_signal_propagation(model, x, y, centered=centered).tangent_alignment
    torch.testing.assert_close(a[:-1], c[:-1], rtol=1e-10, atol=1e-12)
