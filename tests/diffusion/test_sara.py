"""SaRA: the magnitude selection, the sparse update (only masked entries move; a full mask is plain fine-tuning),
the nuclear-norm penalty, progressive reselection, the official code's constants, and pinned errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.sara import (SARA_LAMBDA_RANK, SARA_MIN_DIM, SARA_THRESHOLD, SparseUpdate, finetune_sara,
                                     nuclear_norm, sara_lr, sara_masks, sara_rank_penalty, sara_threshold)
from paperzoo.diffusion.training import MLPDenoiser, train_denoiser

D = torch.float64


def _net(seed=0, hidden=16, depth=2):
    torch.manual_seed(seed)
    return MLPDenoiser(2, hidden, depth).to(D)


def _data(n, g):
    return torch.randn(n, 2, generator=g, dtype=D) + 1.0


def _sigmas(n, g):
    return torch.rand(n, generator=g, dtype=D) + 0.1


def test_official_constants():
    # sjtuplayer/SaRA @ 5cb8c673a1f399ed57ccdf5619f7bc738cee7684: finetune.sh (threshold, lambda_rank),
    # optim/adamw.py (the min(shape) > 64 rule, lr = 1e-3 exp(-350 threshold) when none is given)
    assert (SARA_THRESHOLD, SARA_LAMBDA_RANK, SARA_MIN_DIM) == (2e-3, 5e-4, 64)
    assert sara_lr() == pytest.approx(1e-3 * math.exp(-0.7), rel=1e-15)


def test_masks_are_the_small_magnitudes():
    net = _net()
    masks = sara_masks(net, 0.05)
    for name, p in net.named_parameters():
        assert torch.equal(masks[name], p.abs() < 0.05)


@settings(max_examples=20, deadline=None)
@given(st.floats(0.01, 1.0))
def test_threshold_selects_the_fraction(fraction):
    net = _net(1, 8, 1)
    n = sum(p.numel() for p in net.parameters())
    tau = sara_threshold(net, fraction)
    assert sum(int(m.sum()) for m in sara_masks(net, tau).values()) == max(1, round(fraction * n))


def test_wrapper_starts_at_the_base_and_trains_only_the_mask():
    net = _net()
    w0 = copy.deepcopy(net.state_dict())
    update = SparseUpdate(net, sara_threshold(net, 0.2))
    assert all(not p.requires_grad for p in net.parameters())
    assert [p for p in update.parameters() if p.requires_grad] == list(update.deltas)
    x, s = torch.randn(5, 2, dtype=D), torch.rand(5, dtype=D) + 0.1
    assert torch.equal(update(x, s), net(x, s))
    masks = update.masks
    finetune_sara(update, _data, _sigmas, steps=5, batch_size=16, lr=1e-2, lambda_rank=0.0,
                  generator=torch.Generator().manual_seed(0))
    merged = copy.deepcopy(update).merge().state_dict()
    moved = 0
    for name, p in merged.items():
        if name == "frequencies":
            continue
        m = masks.get(name, torch.zeros_like(p, dtype=torch.bool))
        assert torch.equal(p[~m], w0[name][~m])
        moved += int((p[m] != w0[name][m]).sum())
    assert moved == update.n_trainable  # every selected entry moved


def test_full_mask_is_plain_finetuning():
    # Adam is elementwise, so training the deltas of an all-True mask is training the weights themselves
    dense, base = _net(2), _net(2)
    update = SparseUpdate(base, masks={n: torch.ones_like(p, dtype=torch.bool) for n, p in base.named_parameters()})
    h1 = train_denoiser(dense, _data, _sigmas, steps=6, batch_size=8, lr=1e-2,
                        generator=torch.Generator().manual_seed(3))
    h2 = finetune_sara(update, _data, _sigmas, steps=6, batch_size=8, lr=1e-2, lambda_rank=0.0,
                       generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(h2, h1, rtol=1e-10, atol=1e-12)
    for (n, p), q in zip(dense.named_parameters(), update.merge().parameters()):
        torch.testing.assert_close(q, p, rtol=1e-9, atol=1e-12)


def test_delta_gradient_is_the_weight_gradient_on_the_mask():
    net = _net(4)
    update = SparseUpdate(copy.deepcopy(net), sara_threshold(net, 0.3))
    x, s = torch.randn(7, 2, dtype=D), torch.rand(7, dtype=D) + 0.1
    update(x, s).square().sum().backward()
    net(x, s).square().sum().backward()
    grads = dict(net.named_parameters())
    for (name, m), d in zip(update.masks.items(), update.deltas):
        torch.testing.assert_close(d.grad, grads[name].grad[m], rtol=1e-12, atol=1e-14)


def test_nuclear_norm():
    a = torch.randn(5, 3, dtype=D, requires_grad=True)
    value = nuclear_norm(a)
    torch.testing.assert_close(value, torch.linalg.matrix_norm(a, ord="nuc"))
    value.backward()
    u, _, vh = torch.linalg.svd(a.detach(), full_matrices=False)
    torch.testing.assert_close(a.grad, u @ vh)  # d||A||_* / dA = U V^T for full rank


def test_rank_penalty_on_the_masked_weights():
    net = _net(5, 16, 2)
    update = SparseUpdate(net, 0.1)
    with torch.no_grad():
        for d in update.deltas:
            d.normal_(0, 0.01)
    params = dict(net.named_parameters())
    masks = update.masks
    eff = {n: params[n] + torch.zeros_like(params[n]).masked_scatter(masks[n], d)
           for n, d in zip(masks, update.deltas)}
    expected = [torch.linalg.matrix_norm(eff[n] * masks[n], ord="nuc") for n in masks if eff[n].dim() == 2
                and min(eff[n].shape) > 2]
    total = sara_rank_penalty(update, min_dim=2, choose="all")
    torch.testing.assert_close(total, sum(expected))
    one = sara_rank_penalty(update, min_dim=2, generator=torch.Generator().manual_seed(0))
    assert any(torch.isclose(one, e) for e in expected)
    assert float(sara_rank_penalty(update)) == 0.0  # no matrix of min(shape) > 64 here
    # only the deltas carry the penalty's gradient
    total.backward()
    eligible = [eff[n].dim() == 2 and min(eff[n].shape) > 2 for n in masks]
    assert [d.grad is not None for d in update.deltas] == eligible
    assert all(p.grad is None for p in net.parameters())


def test_reselect_merges_and_remasks():
    net = _net(6)
    update = SparseUpdate(net, 0.05)
    with torch.no_grad():
        for d in update.deltas:
            d.add_(0.04)  # pushes some selected entries past the threshold
    x, s = torch.randn(4, 2, dtype=D), torch.rand(4, dtype=D) + 0.1
    before = update(x, s).detach()
    update.reselect()
    torch.testing.assert_close(update(x, s), before)
    assert all(float(d.detach().abs().max()) == 0.0 for d in update.deltas)
    for name, p in net.named_parameters():
        expected = p.abs() < 0.05
        assert torch.equal(update.masks.get(name, torch.zeros_like(expected)), expected)
    update.reselect(0.2)
    assert update.threshold == 0.2
    assert update.n_trainable == sum(int((p.abs() < 0.2).sum()) for p in net.parameters())


def test_progressive_finetuning_counts_steps_over_both_phases():
    net = _net(7)
    update = SparseUpdate(net, sara_threshold(net, 0.1))
    seen = []
    hist = finetune_sara(update, _data, _sigmas, steps=6, batch_size=8, lr=1e-2, progressive_step=2, min_dim=1,
                         generator=torch.Generator().manual_seed(0), callback=lambda k, m, l: seen.append((k, m)))
    assert hist.shape == (6,) and bool(torch.isfinite(hist).all())
    assert [k for k, _ in seen] == [1, 2, 3, 4, 5, 6] and all(m is update for _, m in seen)
    assert update.denoiser()(torch.zeros(3, 2, dtype=D), torch.ones(3, dtype=D)).shape == (3, 2)


def test_errors():
    net = _net()
    with pytest.raises(ValueError, match="threshold"):
        sara_masks(net, 0.0)
    with pytest.raises(ValueError, match="fraction"):
        sara_threshold(net, 1.5)
    with pytest.raises(ValueError, match="matrix"):
        nuclear_norm(torch.randn(3, dtype=D))
    with pytest.raises(ValueError, match="masks"):
        SparseUpdate(_net(), masks={"nope": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"masks\['net.0.bias'\] must be a bool tensor of shape \(16,\)"):
        SparseUpdate(_net(), masks={"net.0.bias": torch.ones(3, dtype=torch.bool)})
    update = SparseUpdate(_net(), 0.1)
    with pytest.raises(ValueError, match=r"progressive_step must be <= steps \(3\), got 4"):
        finetune_sara(update, _data, _sigmas, steps=3, progressive_step=4)
    with pytest.raises(ValueError, match=r"threshold must be > 0.0, got -1.0"):
        update.reselect(-1.0)
    with pytest.raises(TypeError, match="update"):
        sara_rank_penalty(net)
    with pytest.raises(ValueError, match="choose"):
        sara_rank_penalty(update, choose="some")
