"""PCNGD: closed forms, a by-hand reference, its own optimizer-contract table, bad input.

PCNGD is not in tests/optim/test_optimizer_table.py: its step needs a closure returning per-class losses (C
backward passes), so it cannot read p.grad like the table's optimizers; the contract rows that apply are here.
"""

from __future__ import annotations


import pytest
import torch

from paperzoo.data.imbalanced import imbalanced_gaussians
from paperzoo.optim import PCNGD, class_mean_losses, per_class_normalized_grad
from tests.optim.checkpoint import reload_checkpoint


def test_class_mean_losses_closed_form_and_grad():
    losses = torch.tensor([1.0, 3.0, 5.0], requires_grad=True)
    out = class_mean_losses(losses, torch.tensor([0, 0, 2]), 3)
    assert out.tolist() == [2.0, 0.0, 5.0]
    out.sum().backward()
    assert losses.grad.tolist() == [0.5, 0.5, 1.0]


def test_direction_is_sum_of_unit_gradients():
    w = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    v = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
    losses = torch.stack([10 * (w[0] ** 2 + v[0] ** 2), w[1] ** 2, 0 * w.sum()])  # third class: zero gradient
    direction, norms = per_class_normalized_grad(losses, [w, v])
    g1 = torch.tensor([20.0, 0.0, 60.0], dtype=torch.float64)
    g2 = torch.tensor([0.0, 4.0, 0.0], dtype=torch.float64)
    expected = g1 / g1.norm() + g2 / g2.norm()
    assert torch.allclose(torch.cat(direction), expected)
    assert torch.allclose(norms, torch.stack([g1.norm(), g2.norm(), torch.tensor(0.0, dtype=torch.float64)]))


def _data(dtype=torch.float64):
    X, y = imbalanced_gaussians((60, 6), 5, separation=3.0, generator=torch.Generator().manual_seed(0), dtype=dtype)
    return X, y


def _model(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).to(dtype)


def _closure(model, X, y):
    return lambda: class_mean_losses(torch.nn.functional.cross_entropy(model(X), y, reduction="none"), y, 2)


def test_step_matches_reference_by_hand():
    X, y = _data()
    model, ref = _model(torch.float64), _model(torch.float64)
    opt = PCNGD(model.parameters(), lr=0.05)
    for _ in range(5):
        opt.step(_closure(model, X, y))
        # reference: one model copy per class, full gradients, global norms
        grads = []
        for c in range(2):
            ref.zero_grad()
            torch.nn.functional.cross_entropy(ref(X[y == c]), y[y == c]).backward()
            g = torch.cat([p.grad.reshape(-1) for p in ref.parameters()])
            grads.append(g / g.norm())
        step = -0.05 * (grads[0] + grads[1])
        with torch.no_grad():
            offset = 0
            for p in ref.parameters():
                p.add_(step[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
    for a, b in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decreases_every_class_loss_and_keeps_dtype(dtype):
    X, y = _data(dtype)
    model = _model(dtype)
    opt = PCNGD(model.parameters(), lr=0.02)
    closure = _closure(model, X, y)
    first = closure().detach()
    for _ in range(100):
        losses = opt.step(closure)
    assert losses.dtype == dtype and all(p.dtype == dtype for p in model.parameters())
    assert bool((closure() < 0.5 * first).all())


def test_state_dict_round_trip_continues_bit_identically():
    X, y = _data()

    def fresh():
        model = _model(torch.float64)
        opt = PCNGD(model.parameters(), lr=0.1)
        return model, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)

    def train(model, opt, sched, n):
        for _ in range(n):
            opt.step(_closure(model, X, y))
            sched.step()

    model, opt, sched = fresh()
    train(model, opt, sched, 6)
    ref = fresh()
    train(*ref, 10)
    new = reload_checkpoint(model, opt, sched, fresh)
    train(*new, 4)
    for a, b in zip(new[0].parameters(), ref[0].parameters()):
        assert torch.equal(a, b)


def test_per_group_lr_maximize_and_lazy_contract():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = PCNGD([{"params": [a], "lr": 0.0}, {"params": [b]}], lr=0.1)
    assert len(opt.state) == 0
    losses = opt.step(lambda: torch.stack([(a ** 2).sum() + (b ** 2).sum(), (b ** 2).sum()]))
    assert losses.tolist() == [4.0, 2.0]
    assert torch.equal(a.detach(), torch.ones(2)) and not torch.equal(b.detach(), torch.ones(2))
    c = torch.nn.Parameter(torch.zeros(1))
    PCNGD([c], lr=0.5, maximize=True).step(lambda: torch.stack([c.sum() * 3]))
    assert c.item() == 0.5


def test_bad_input_messages():
    w = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="lr must be >= 0.0, got -1.0"):
        PCNGD([w], lr=-1.0)
    with pytest.raises(ValueError, match="eps must be >= 0.0, got -1.0"):
        PCNGD([w], eps=-1.0)
    with pytest.raises(ValueError, match="needs a closure"):
        PCNGD([w]).step()
    with pytest.raises(ValueError, match="closure must return the per-class losses as a 1-D tensor"):
        PCNGD([w]).step(lambda: (w ** 2).sum())
    with pytest.raises(ValueError, match=r"targets must lie in \[0, num_classes\) = \[0, 2\)"):
        class_mean_losses(torch.ones(3), torch.tensor([0, 1, 2]), 2)
    with pytest.raises(ValueError, match="per_class_losses must be finite"):
        per_class_normalized_grad(torch.tensor([float("nan")]), [w])


def test_nonfinite_class_gradient_of_a_finite_loss_raises_or_skips():
    # sqrt(|w0|) at w0 = 0: a finite class loss whose gradient is NaN, which the direction would leave out.
    from paperzoo.optim import NonFiniteGradientError
    for policy in ("raise", "skip"):
        w = torch.nn.Parameter(torch.tensor([0.0, 1.0]))
        opt = PCNGD([w], lr=0.1, nonfinite=policy)
        closure = lambda: torch.stack([w[0].abs().sqrt(), (w[1] - 2.0) ** 2])
        if policy == "raise":
            with pytest.raises(NonFiniteGradientError, match="NaN or inf"):
                opt.step(closure)
        else:
            opt.step(closure)
            assert opt.skipped_steps == 1
        assert torch.equal(w.detach(), torch.tensor([0.0, 1.0]))
