"""STEP: nm_mask, the two phases, AutoSwitch, the SR-STE baseline, state round trip, errors."""

from __future__ import annotations

import io

import pytest
import torch

from paperzoo.optim import STEPAdam, nm_mask, srste_adam

F64 = torch.float64


def test_nm_mask_keeps_exactly_n_largest_per_group():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 16, generator=g)
    for N, M in [(2, 4), (1, 4), (4, 8), (0, 4), (4, 4)]:
        mask = nm_mask(w, N, M)
        groups, mg = w.abs().reshape(-1, M), mask.reshape(-1, M)
        assert torch.equal(mg.sum(1), torch.full((groups.shape[0],), float(N)))
        if 0 < N < M:
            kept_min = torch.where(mg.bool(), groups, torch.inf).min(1).values
            dropped_max = torch.where(mg.bool(), -torch.inf, groups).max(1).values
            assert bool((kept_min >= dropped_max).all())
    assert torch.equal(nm_mask(torch.zeros(1, 4), 2, 4), torch.tensor([[1.0, 1.0, 0.0, 0.0]]))


def test_nm_mask_matches_torch_ao_semi_structured_2_4_pattern():
    # torch.ao's 2:4 sparsifier keeps the two largest magnitudes of each block of 4 along rows as well.
    w = torch.tensor([[0.1, -3.0, 2.0, 0.5, 4.0, 0.0, -1.0, 0.2]])
    assert torch.equal(nm_mask(w, 2, 4), torch.tensor([[0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]]))


def test_precondition_phase_is_adam_then_variance_freezes_and_masks_apply():
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(3, 8, generator=g, dtype=F64) for _ in range(6)]
    w = torch.randn(3, 8, generator=g, dtype=F64)
    a, ref = w.clone().requires_grad_(True), w.clone().requires_grad_(True)
    opt = STEPAdam([a], lr=0.01, autoswitch=False, max_switch_step=4, srste_decay=0.0)
    adam = torch.optim.Adam([ref], lr=0.01)
    for k in range(4):
        a.grad, ref.grad = grads[k].clone(), grads[k].clone()
        opt.step()
        adam.step()
    torch.testing.assert_close(opt.state[a]["dense"], ref.detach())
    assert opt.switched_at == 4
    assert torch.equal(a.detach(), nm_mask(ref.detach(), 2, 4) * ref.detach())
    frozen = adam.state[ref]["exp_avg_sq"] / (1 - 0.999**4)
    torch.testing.assert_close(opt.state[a]["exp_avg_sq"], frozen)
    # Mask phase: v stays frozen, m keeps moving, the dense copy takes the straight-through gradient.
    dense = opt.state[a]["dense"].clone()
    m = opt.state[a]["exp_avg"].clone()
    a.grad = grads[4].clone()
    opt.step()
    torch.testing.assert_close(opt.state[a]["exp_avg_sq"], frozen)
    m = 0.9 * m + 0.1 * grads[4]
    expected = dense - 0.01 * (m / (1 - 0.9**5)) / (frozen.sqrt() + 1e-8)
    torch.testing.assert_close(opt.state[a]["dense"], expected)
    assert torch.equal(a.detach(), nm_mask(expected, 2, 4) * expected)


def test_srste_decay_pulls_pruned_weights_and_baseline_updates_variance():
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=F64, requires_grad=True)
    opt = srste_adam([w], lr=0.1, srste_decay=1.0)
    assert opt.switched_at == 0 and torch.equal(w.detach(), torch.tensor([[0.0, 0.0, 3.0, 4.0]], dtype=F64))
    w.grad = torch.zeros(1, 4, dtype=F64)
    opt.step()
    # g~ = lambda_W (1 - mask) w = [1, 2, 0, 0]: Adam's first step moves those two coordinates by lr.
    torch.testing.assert_close(opt.state[w]["dense"], torch.tensor([[0.9, 1.9, 3.0, 4.0]], dtype=F64))
    assert opt.state[w]["exp_avg_sq"][0, 0] > 0


def test_autoswitch_fires_when_the_variance_settles():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 8))
    opt = STEPAdam([w], lr=1e-3, betas=(0.9, 0.99), min_switch_step=10, max_switch_step=5000, switch_window=10,
                   switch_tol=0.02)
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        opt.zero_grad()
        w.grad = torch.randn(4, 8, generator=g)  # stationary gradient noise: the variance estimate settles
        opt.step()
        if opt.masking:
            break
    assert opt.switched_at is not None and 10 <= opt.switched_at < 400


def test_state_dict_round_trip_continues_bit_identically():
    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4)).double()
        return model, STEPAdam(model.parameters(), lr=0.01, autoswitch=False, max_switch_step=5)

    x = torch.randn(16, 8, dtype=F64, generator=torch.Generator().manual_seed(1))
    y = torch.randn(16, 4, dtype=F64, generator=torch.Generator().manual_seed(2))

    def train(model, opt, n):
        for _ in range(n):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()

    model, opt = make()
    train(model, opt, 3)
    ref, ref_opt = make()
    train(ref, ref_opt, 10)
    buf = io.BytesIO()
    torch.save({"m": model.state_dict(), "o": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    new, new_opt = make()
    new.load_state_dict(saved["m"])
    new_opt.load_state_dict(saved["o"])
    train(new, new_opt, 7)
    assert new_opt.switched_at == 5
    for a, b in zip(new.parameters(), ref.parameters()):
        assert torch.equal(a, b)
    assert int((new[0].weight == 0).sum()) == 32  # 2:4 on an 8x8 weight


def test_errors():
    w = torch.nn.Parameter(torch.ones(2, 4))
    with pytest.raises(ValueError, match="N must be <= M=4, got 5"):
        nm_mask(w, 5, 4)
    with pytest.raises(ValueError, match=r"divisible by M=4, got shape \(2, 3\)"):
        nm_mask(torch.ones(2, 3), 2, 4)
    with pytest.raises(ValueError, match="lr must be >= 0.0, got -1.0"):
        STEPAdam([w], lr=-1.0)
    with pytest.raises(ValueError, match="max_switch_step must be >= 1 when freeze_variance=True"):
        STEPAdam([w], max_switch_step=0)
    with pytest.raises(ValueError, match="min_switch_step must be >= 0, got -1"):
        STEPAdam([w], min_switch_step=-1)
    with pytest.raises(ValueError, match=r"sparse parameters must have >= 2 dims"):
        STEPAdam([{"params": [torch.nn.Parameter(torch.ones(4))], "sparse": True}])
