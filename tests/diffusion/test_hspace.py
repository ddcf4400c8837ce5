"""Tests for h-space editing and direction discovery (paperzoo.diffusion.hspace)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.hspace import (BottleneckMLP, hspace_jacobian_directions, hspace_shift, jacobian_directions,
                                       pca_directions, project_out, record_hspace, supervised_direction,
                                       trajectory_jacobian_directions)
from paperzoo.diffusion.samplers import sample_ddim, sample_heun
from paperzoo.diffusion.schedules import get_sigmas_karras
from paperzoo.diffusion.training import MLPDenoiser

D64 = torch.float64


def _net(seed=0, dim=3, hidden=12):
    torch.manual_seed(seed)
    return MLPDenoiser(dim, hidden, 3).double()


def _align(a, b):
    """Rows of ``a`` with signs matching ``b``'s rows."""
    return a * torch.sign((a * b).sum(-1, keepdim=True))


# -- PCA ------------------------------------------------------------------------------------------------------------
def test_pca_matches_svd_and_covariance():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(40, 3, 5, generator=g, dtype=D64) * torch.linspace(0.2, 3.0, 15, dtype=D64).reshape(3, 5)
    r = pca_directions(h, 4)
    X = h.reshape(40, -1)
    _, s, vh = torch.linalg.svd(X - X.mean(0), full_matrices=False)
    dirs = r.directions.reshape(4, -1)
    torch.testing.assert_close(_align(dirs, vh[:4]), vh[:4], atol=1e-10, rtol=0)
    evals = torch.linalg.eigvalsh(torch.cov(X.T)).flip(0)[:4]
    torch.testing.assert_close(r.stds**2, evals, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(r.mean, h.mean(0))
    assert r.directions.shape == (4, 3, 5)
    # sign convention: the largest-magnitude entry of each direction is positive
    assert bool((dirs.gather(1, dirs.abs().argmax(1, keepdim=True)) > 0).all())


def test_pca_errors():
    h = torch.randn(5, 3, dtype=D64)
    with pytest.raises(ValueError, match="k must be <= min"):
        pca_directions(h, 4)
    with pytest.raises(ValueError, match="h must hold at least 2 codes"):
        pca_directions(h[:1], 1)


# -- Jacobian directions ---------------------------------------------------------------------------------------------
def test_jacobian_directions_match_explicit_svd():
    g = torch.Generator().manual_seed(2)
    W1, W2 = torch.randn(9, 6, generator=g, dtype=D64), torch.randn(7, 9, generator=g, dtype=D64)

    def f(h):
        return W2 @ torch.tanh(W1 @ h.reshape(-1)) + 0.1 * h.reshape(-1)[:1]

    h = torch.randn(2, 3, generator=g, dtype=D64)
    r = jacobian_directions(f, h, 3, iters=300, tol=1e-12, generator=g)
    J = torch.autograd.functional.jacobian(f, h).reshape(7, 6)
    U, S, Vh = torch.linalg.svd(J)
    torch.testing.assert_close(r.singular_values, S[:3], atol=1e-8, rtol=1e-8)
    dirs = r.directions.reshape(3, 6)
    torch.testing.assert_close(_align(dirs, Vh[:3]), Vh[:3], atol=1e-6, rtol=0)
    torch.testing.assert_close(dirs @ J.T, r.singular_values[:, None] * r.outputs, atol=1e-10, rtol=0)
    assert r.directions.shape == (3, 2, 3) and r.outputs.shape == (3, 7)


def test_hspace_jacobian_directions_of_a_denoiser():
    net = _net()
    model, module = net.denoiser(), net.net[3]
    x = torch.randn(1, 3, generator=torch.Generator().manual_seed(3), dtype=D64)
    sigma = torch.full((1,), 0.7, dtype=D64)
    r = hspace_jacobian_directions(model, module, x, 0.7, 2, iters=300, tol=1e-12)

    # explicit: the part of the network after the bottleneck, through denoiser_from_prediction by a hook
    def head(h):
        handle = module.register_forward_hook(lambda m, i, o: h[None])
        try:
            return model(x, sigma)[0]
        finally:
            handle.remove()

    h0 = net.net[:4](torch.cat([x * (1 + 0.49) ** -0.5, *(lambda c: (c.sin(), c.cos()))(
        (sigma.log() / 4)[:, None] * net.frequencies.double())], -1))[0]
    J = torch.autograd.functional.jacobian(head, h0)
    _, S, Vh = torch.linalg.svd(J)
    torch.testing.assert_close(r.singular_values, S[:2], atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(_align(r.directions, Vh[:2]), Vh[:2], atol=1e-6, rtol=0)


def test_trajectory_jacobian_directions_first_step_and_shapes():
    net = _net()
    model, module = net.denoiser(), net.net[3]
    sigmas = get_sigmas_karras(3, 0.1, 5.0, dtype=D64)
    x = 5.0 * torch.randn(1, 3, generator=torch.Generator().manual_seed(4), dtype=D64)
    r = trajectory_jacobian_directions(model, module, x, sigmas, 1, iters=60, tol=1e-8)
    assert r.directions.shape == (1, 3, 12) and r.singular_values.shape == (1, 3) and r.outputs.shape == (1, 3, 3)
    first = hspace_jacobian_directions(model, module, x, float(sigmas[0]), 1, iters=60, tol=1e-8)
    torch.testing.assert_close(r.singular_values[:, 0], first.singular_values, atol=1e-7, rtol=1e-7)


def test_jacobian_errors():
    with pytest.raises(ValueError, match="k must be <= min"):
        jacobian_directions(lambda h: h[:2] * 2, torch.ones(4, dtype=D64), 3)
    net = _net()
    with pytest.raises(ValueError, match="x must hold one sample"):
        hspace_jacobian_directions(net.denoiser(), net.net[3], torch.zeros(2, 3, dtype=D64), 1.0, 1)


# -- the hook wrapper ------------------------------------------------------------------------------------------------
def test_shift_with_zero_scale_is_the_base_denoiser_exactly():
    net = _net()
    model, module = net.denoiser(), net.net[3]
    sigmas = get_sigmas_karras(6, 0.05, 8.0, dtype=D64)
    x = 8.0 * torch.randn(16, 3, generator=torch.Generator().manual_seed(5), dtype=D64)
    delta = torch.randn(6, 12, dtype=D64)
    assert torch.equal(sample_ddim(hspace_shift(model, module, delta, sigmas, scale=0.0), x, sigmas),
                       sample_ddim(model, x, sigmas))
    # Heun evaluates at sigmas[i + 1] too: still among the levels
    assert torch.equal(sample_heun(hspace_shift(model, module, delta, sigmas, scale=0.0), x, sigmas),
                       sample_heun(model, x, sigmas))
    assert not torch.equal(sample_ddim(hspace_shift(model, module, delta, sigmas), x, sigmas),
                           sample_ddim(model, x, sigmas))


def test_shift_adds_the_offset_of_each_level():
    net = _net()
    sigmas = torch.tensor([3.0, 1.0, 0.3, 0.0], dtype=D64)
    delta = torch.randn(3, 12, generator=torch.Generator().manual_seed(6), dtype=D64)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(7), dtype=D64)
    sigma = torch.tensor([3.0, 0.3, 1.0, 0.3], dtype=D64)
    got = hspace_shift(net, net.net[3], delta, sigmas, scale=-1.5)(x, sigma)  # the raw network as the model
    c = (sigma.log() / 4)[:, None] * net.frequencies.double()
    inp = torch.cat([x, c.sin(), c.cos()], -1)
    want = net.net[4:](net.net[:4](inp) - 1.5 * delta[torch.tensor([0, 2, 1, 2])])
    torch.testing.assert_close(got, want, atol=1e-14, rtol=0)


def test_record_hspace_and_shifted_record():
    net = _net()
    model, module = net.denoiser(), net.net[3]
    sigmas = get_sigmas_karras(5, 0.05, 8.0, dtype=D64)
    x = 8.0 * torch.randn(10, 3, generator=torch.Generator().manual_seed(8), dtype=D64)
    rec = record_hspace(model, module, x, sigmas)
    assert rec.h.shape == (10, 5, 12)
    assert torch.equal(rec.samples, sample_ddim(model, x, sigmas))
    delta = torch.randn(5, 12, dtype=D64)
    edited = record_hspace(hspace_shift(model, module, delta, sigmas, scale=2.0), module, x, sigmas)
    # the first evaluation sees the same state: its code moved by exactly 2 delta[0]
    torch.testing.assert_close(edited.h[:, 0] - rec.h[:, 0], (2.0 * delta[0]).expand(10, 12), atol=1e-12, rtol=0)


def test_shift_errors():
    net = _net()
    model, module = net.denoiser(), net.net[3]
    sigmas = torch.tensor([3.0, 1.0, 0.0], dtype=D64)
    edited = hspace_shift(model, module, torch.zeros(2, 12, dtype=D64), sigmas)
    with pytest.raises(ValueError, match="sigma must be one of the levels of sigmas"):
        edited(torch.zeros(2, 3, dtype=D64), torch.full((2,), 2.0, dtype=D64))
    with pytest.raises(ValueError, match="delta must have at most len"):
        hspace_shift(model, module, torch.zeros(4, 12, dtype=D64), sigmas)
    bad = hspace_shift(model, module, torch.zeros(2, 5, dtype=D64), sigmas)
    with pytest.raises(ValueError, match=r"delta must have shape \(S, \*h_shape\)"):
        bad(torch.zeros(2, 3, dtype=D64), torch.full((2,), 1.0, dtype=D64))
    with pytest.raises(ValueError, match="module must run"):
        record_hspace(model, torch.nn.Linear(2, 2).double(), torch.zeros(2, 3, dtype=D64), sigmas)


# -- supervised directions and projection ------------------------------------------------------------------------
def test_supervised_direction_is_the_mean_difference():
    h = torch.arange(24, dtype=D64).reshape(4, 3, 2)
    labels = torch.tensor([True, False, True, False])
    torch.testing.assert_close(supervised_direction(h, labels), (h[0] + h[2] - h[1] - h[3]) / 2)
    with pytest.raises(ValueError, match="labels must contain both classes"):
        supervised_direction(h, torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="labels must have one entry per code"):
        supervised_direction(h, torch.ones(3, dtype=torch.bool))


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 4), seed=st.integers(0, 10_000), dependent=st.booleans())
def test_project_out_is_an_orthogonal_projection(m, seed, dependent):
    g = torch.Generator().manual_seed(seed)
    others = torch.randn(m, 2, 3, generator=g, dtype=D64)
    if dependent:
        others = torch.cat([others, others[:1] * 2.0])
    v = torch.randn(2, 3, generator=g, dtype=D64)
    p = project_out(v, others)
    assert p.shape == v.shape
    torch.testing.assert_close(others.reshape(others.shape[0], -1) @ p.reshape(-1),
                               torch.zeros(others.shape[0], dtype=D64), atol=1e-10, rtol=0)
    torch.testing.assert_close(project_out(p, others), p, atol=1e-10, rtol=0)
    # what was removed lies in the span of others
    assert float(torch.linalg.lstsq(others.reshape(others.shape[0], -1).T, (v - p).reshape(-1, 1)).residuals.sum()
                 if others.shape[0] < 6 else 0.0) < 1e-10


def test_project_out_shape_error():
    with pytest.raises(ValueError, match=r"others must have shape \(m, \*direction.shape\) = \(m, 2, 3\)"):
        project_out(torch.zeros(2, 3, dtype=D64), torch.zeros(2, 6, dtype=D64))


def test_bottleneck_mlp_edit_reaches_the_decoder_only_through_h():
    torch.manual_seed(0)
    net = BottleneckMLP(3, 10).double()
    sigmas = get_sigmas_karras(4, 0.1, 5.0, dtype=D64)
    x = 5.0 * torch.randn(6, 3, generator=torch.Generator().manual_seed(9), dtype=D64)
    model = net.denoiser()
    assert torch.equal(sample_ddim(hspace_shift(model, net.bottleneck, torch.ones(4, 10, dtype=D64), sigmas,
                                                scale=0.0), x, sigmas), sample_ddim(model, x, sigmas))
    rec = record_hspace(model, net.bottleneck, x, sigmas)
    assert rec.h.shape == (6, 4, 10)
    # the network output as a function of h is the decoder on [h, e]
    s = torch.full((6,), 0.5, dtype=D64)
    c = (s.log() / 4)[:, None] * net.frequencies.double()
    e = net.encoder(torch.cat([x, c.sin(), c.cos()], -1))
    delta = torch.randn(4, 10, dtype=D64)
    got = hspace_shift(net, net.bottleneck, delta, torch.tensor([5.0, 2.0, 1.0, 0.5, 0.0], dtype=D64))(x, s)
    torch.testing.assert_close(got, net.decoder(torch.cat([net.bottleneck(e) + delta[3], e], -1)), atol=1e-14, rtol=0)
    with pytest.raises(ValueError, match="prediction must be one of"):
        BottleneckMLP(3, prediction="score")
