"""SAM: cross-check against pytorch_optimizer.SAM, closed forms, errors; and the closure-wrapper contract table
shared by SAM, AMP and FiniteDifferenceGR (they need a closure, so they cannot join test_optimizer_table.py)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from paperzoo.optim import AMP, SAM, FiniteDifferenceGR
from tests.optim.checkpoint import reload_checkpoint

WRAPPERS = [
    ("SAM", lambda params, **kw: SAM(params, torch.optim.SGD, rho=0.01, lr=0.01, momentum=0.9, **kw)),
    ("ASAM", lambda params, **kw: SAM(params, torch.optim.SGD, rho=0.01, adaptive=True, lr=0.01, momentum=0.9,
                                      **kw)),
    ("AMP", lambda params, **kw: AMP(params, torch.optim.SGD, epsilon=0.01, lr=0.01, momentum=0.9, **kw)),
    ("FD-GR-forward", lambda params, **kw: FiniteDifferenceGR(params, torch.optim.SGD, gamma=0.01, eps=0.01,
                                                              lr=0.01, momentum=0.9, **kw)),
    ("FD-GR-backward", lambda params, **kw: FiniteDifferenceGR(params, torch.optim.SGD, gamma=0.01, eps=0.01,
                                                               mode="backward", lr=0.01, momentum=0.9, **kw)),
    ("SAM-Adam", lambda params, **kw: SAM(params, torch.optim.Adam, rho=0.01, lr=0.05, **kw)),
]
IDS = [n for n, _ in WRAPPERS]
FACTORIES = [f for _, f in WRAPPERS]


def _quadratic(dtype, n=6, kappa=10.0):
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    A = (Q * torch.logspace(0, math.log10(kappa), n, dtype=torch.float64)) @ Q.T
    b = torch.randn(n, generator=g, dtype=torch.float64)
    return A.to(dtype), b.to(dtype), torch.linalg.solve(A, b).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_wrapper_converges_on_quadratic(factory, dtype):
    A, b, x_star = _quadratic(dtype)
    x = torch.zeros_like(x_star, requires_grad=True)
    opt = factory([x])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 800)

    def closure():
        opt.zero_grad()
        loss = 0.5 * x @ A @ x - b @ x
        loss.backward()
        return loss

    for _ in range(800):
        opt.step(closure)
        sched.step()
    # SAM-type wrappers move the fixed point by O(rho); GR keeps the minimiser of a quadratic (g = 0 there).
    assert (x.detach() - x_star).norm() / x_star.norm() < 2e-2
    assert x.dtype == dtype


def _mlp(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(dtype)


def _train(model, opt, sched, steps, dtype):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 4, generator=g, dtype=dtype), torch.randn(16, 3, generator=g, dtype=dtype)
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            return loss

        opt.step(closure)
        sched.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_wrapper_state_dict_round_trip_is_bit_identical(factory, dtype):
    def fresh():
        model = _mlp(dtype)
        opt = factory(model.parameters(), weight_decay=1e-2)
        return model, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.7)

    model, opt, sched = fresh()
    _train(model, opt, sched, 6, dtype)
    ref_model, ref_opt, ref_sched = fresh()
    _train(ref_model, ref_opt, ref_sched, 10, dtype)
    new_model, new_opt, new_sched = reload_checkpoint(model, opt, sched, fresh)
    assert new_opt.param_groups is new_opt.base_optimizer.param_groups
    _train(new_model, new_opt, new_sched, 4, dtype)
    for a, b in zip(new_model.parameters(), ref_model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_wrapper_scheduler_groups_and_closure(factory):
    frozen, moving = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = factory([{"params": [frozen], "lr": 0.0}, {"params": [moving]}])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 if i < 3 else 0.0)
    history = []
    for _ in range(6):
        def closure():
            opt.zero_grad()
            loss = (frozen ** 2).sum() + (moving ** 2).sum()
            loss.backward()
            return loss

        loss = opt.step(closure)
        sched.step()
        history.append(moving.detach().clone())
    assert torch.equal(frozen.detach(), torch.ones(3))
    assert not torch.equal(history[2], torch.ones(3))
    assert torch.equal(history[3], history[-1])
    assert loss.item() == pytest.approx(3.0 + (history[-1] ** 2).sum().item(), rel=1e-6)
    with pytest.raises(TypeError, match="needs a closure"):
        opt.step()
    opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))]})
    assert len(opt.base_optimizer.param_groups) == 3
    assert opt.param_groups is opt.base_optimizer.param_groups


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_matches_pytorch_optimizer(adaptive):
    po = pytest.importorskip("pytorch_optimizer")
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randn(16, 3, generator=g, dtype=torch.float64)
    ours, ref = _mlp(torch.float64), _mlp(torch.float64)
    opt = SAM(ours.parameters(), torch.optim.SGD, rho=0.1, adaptive=adaptive, lr=0.1, momentum=0.9)
    ref_opt = po.SAM(ref.parameters(), torch.optim.SGD, rho=0.1, adaptive=adaptive, lr=0.1, momentum=0.9)
    for _ in range(5):
        def closure():
            opt.zero_grad()
            loss = ((ours(x) - y) ** 2).mean()
            loss.backward()
            return loss

        opt.step(closure)
        ref_opt.zero_grad()
        ((ref(x) - y) ** 2).mean().backward()
        ref_opt.first_step(zero_grad=True)
        ((ref(x) - y) ** 2).mean().backward()
        ref_opt.second_step(zero_grad=True)
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)


def test_sam_closed_form_on_quadratic():
    # f = 0.5 ||w||^2: g = w, ascent point w (1 + rho/||w||), SGD step w - lr w (1 + rho/||w||).
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    opt = SAM([w], torch.optim.SGD, rho=0.5, lr=0.1)

    def closure():
        opt.zero_grad()
        loss = 0.5 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    expected = torch.tensor([3.0, 4.0], dtype=torch.float64) * (1 - 0.1 * (1 + 0.5 / 5.0))
    torch.testing.assert_close(w.detach(), expected)


def test_sam_errors():
    w = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="rho must be >= 0.0, got -1.0"):
        SAM([w], torch.optim.SGD, rho=-1.0, lr=0.1)
    with pytest.raises(TypeError, match="adaptive must be a bool, got int"):
        SAM([w], torch.optim.SGD, adaptive=1, lr=0.1)
    with pytest.raises(ValueError, match="perturb_eps must be > 0.0, got 0.0"):
        SAM([w], torch.optim.SGD, perturb_eps=0.0, lr=0.1)
    with pytest.raises(TypeError, match="base_optimizer must be callable"):
        SAM([w], "sgd", lr=0.1)
    with pytest.raises(TypeError):  # an unknown option reaches the base optimizer and is rejected there
        SAM([w], torch.optim.SGD, lr=0.1, bogus=1)
    opt = SAM([w], torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match="state_dict must come from a wrapper"):
        opt.load_state_dict(torch.optim.SGD([w], lr=0.1).state_dict())
