"""β-normalized GD and normalized SPIDER: closed forms, the SPIDER recursion, the optimizer contract, bad input."""

from __future__ import annotations

import copy

import pytest
import torch

import tests.optim.test_optimizer_table as table
from paperzoo.claims.optim.normalized_gd_gen_smooth import iterations_to_stationarity
from paperzoo.data.smooth_problems import double_well
from paperzoo.optim import BetaNormalizedGD, NonFiniteGradientError, NormalizedSPIDER


def test_step_is_gradient_over_norm_to_the_beta():
    a = torch.tensor([3.0, 0.0], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([4.0], dtype=torch.float64, requires_grad=True)
    opt = BetaNormalizedGD([a, c], lr=0.5, beta=0.5)
    a.grad, c.grad = a.detach().clone(), c.detach().clone()
    opt.step()
    # ||g|| = 5 over the group: x <- x - 0.5 * g / sqrt(5).
    scale = 1 - 0.5 / 5**0.5
    torch.testing.assert_close(a.detach(), torch.tensor([3.0 * scale, 0.0], dtype=torch.float64))
    torch.testing.assert_close(c.detach(), torch.tensor([4.0 * scale], dtype=torch.float64))


def test_beta_zero_is_sgd_and_zero_gradient_does_not_move():
    # Seeded, inside the basin where GD on w^4 at lr 0.1 converges (a diverging run compares values near 1e35).
    w1 = (0.5 * torch.randn(3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    w2 = w1.detach().clone().requires_grad_(True)
    ours, ref = BetaNormalizedGD([w1], lr=0.1, beta=0.0), torch.optim.SGD([w2], lr=0.1)
    for _ in range(5):
        for w, opt in ((w1, ours), (w2, ref)):
            opt.zero_grad()
            (w ** 4).sum().backward()
            opt.step()
    torch.testing.assert_close(w1, w2, rtol=0, atol=1e-15)
    z = torch.ones(2, requires_grad=True)
    z.grad = torch.zeros(2)
    BetaNormalizedGD([z], lr=1.0, beta=1.0).step()
    assert torch.equal(z.detach(), torch.ones(2))


def test_claim_rowwise_update_is_the_class_update():
    f = double_well(10)
    hits = iterations_to_stationarity(2 / 3, 5.0, 300)
    gammas = [10 ** (k / 2) for k in range(-10, 1)]
    x = torch.nn.Parameter(torch.full((10,), 5.0, dtype=torch.float64))
    opt = BetaNormalizedGD([x], lr=gammas[8], beta=2 / 3)
    first = None
    for t in range(301):
        g = f.grad(x.detach())
        if first is None and g.norm() <= 1e-1:
            first = t
        x.grad = g
        opt.step()
    assert hits[8, 0].item() == first


def _quadratic_closure(opt, x, shift):
    def closure():
        opt.zero_grad()
        loss = ((x - shift) ** 2).sum(-1).mean() / 2
        loss.backward()
        return loss
    return closure


def test_spider_with_exact_gradients_is_beta_gd_and_recursion_by_hand():
    # With the full gradient every time, v_t telescopes to grad f(x_t): SPIDER = beta-GD.
    x1 = torch.nn.Parameter(torch.tensor([2.0, -1.0], dtype=torch.float64))
    x2 = torch.nn.Parameter(x1.detach().clone())
    shift = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    spider = NormalizedSPIDER([x1], lr=0.1, beta=0.5, period=3)
    gd = BetaNormalizedGD([x2], lr=0.1, beta=0.5)
    for _ in range(7):
        spider.step(_quadratic_closure(spider, x1, shift))
        gd.step(_quadratic_closure(gd, x2, shift))
    torch.testing.assert_close(x1.detach(), x2.detach(), rtol=0, atol=1e-14)

    # Two steps with different batches, by hand: v_1 = v_0 + g_S1(x_1) - g_S1(x_0).
    x = torch.nn.Parameter(torch.tensor([1.0, 1.0], dtype=torch.float64))
    opt = NormalizedSPIDER([x], lr=0.2, beta=1.0, period=5)
    s0 = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    s1 = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    assert opt.refresh_due
    opt.step(_quadratic_closure(opt, x, s0))
    v0 = torch.tensor([0.0, 1.0], dtype=torch.float64)  # mean of x - s over s0 at x_0 = (1, 1)
    x1_ref = torch.tensor([1.0, 1.0], dtype=torch.float64) - 0.2 * v0 / v0.norm()
    torch.testing.assert_close(x.detach(), x1_ref)
    assert not opt.refresh_due
    opt.step(_quadratic_closure(opt, x, s1))
    # For a quadratic the batch gradient difference is x_1 - x_0 whatever the batch.
    v1 = v0 + (x1_ref - torch.tensor([1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(opt.state[x]["estimate"], v1)
    torch.testing.assert_close(x.detach(), x1_ref - 0.2 * v1 / v1.norm())


def test_spider_state_dict_round_trip():
    def run(opt, x, steps, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            shift = torch.randn(8, 3, generator=g, dtype=torch.float64)
            opt.step(_quadratic_closure(opt, x, shift))

    x = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = NormalizedSPIDER([x], lr=0.05, beta=1.0, period=4)
    run(opt, x, 6, 0)
    saved_x, saved = x.detach().clone(), copy.deepcopy(opt.state_dict())
    run(opt, x, 5, 1)
    y = torch.nn.Parameter(saved_x)
    opt2 = NormalizedSPIDER([y], lr=0.05, beta=1.0, period=4)
    opt2.load_state_dict(saved)
    run(opt2, y, 5, 1)
    assert torch.equal(x.detach(), y.detach())


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_spider_checks_the_gradient_at_the_previous_point_before_changing_anything(policy):
    # A correction step calls the closure twice; only the second call (at x_{t-1}) gives a NaN gradient.
    x = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = NormalizedSPIDER([x], lr=0.1, period=5, nonfinite=policy)
    shift = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    opt.step(_quadratic_closure(opt, x, shift))
    assert not opt.refresh_due
    calls = []

    def closure():
        opt.zero_grad()
        loss = ((x - shift) ** 2).sum() / 2 + (x[0] * float("nan") if calls else 0.0)
        calls.append(x.detach().clone())
        loss.backward()
        return loss

    before_x, before_state = x.detach().clone(), copy.deepcopy(opt.state_dict())
    if policy == "raise":
        with pytest.raises(NonFiniteGradientError, match="NaN or inf"):
            opt.step(closure)
    else:
        opt.step(closure)
        assert opt.skipped_steps == 1
    assert len(calls) == 2 and torch.equal(calls[1], before_state["state"][0]["previous"])
    assert torch.equal(x.detach(), before_x)  # moved back from x_{t-1}
    after = opt.state_dict()["state"][0]
    assert all(torch.equal(after[k], v) for k, v in before_state["state"][0].items())
    opt.step(_quadratic_closure(opt, x, shift))
    assert bool(torch.isfinite(x).all()) and opt.state[x]["step"].item() == 2


def test_spider_restores_the_parameters_when_the_second_closure_call_raises():
    x = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = NormalizedSPIDER([x], lr=0.1, period=5)
    shift = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    opt.step(_quadratic_closure(opt, x, shift))
    before = x.detach().clone()
    calls = []

    def closure():
        if calls:
            raise KeyError("data loader failed")
        calls.append(1)
        return _quadratic_closure(opt, x, shift)()

    with pytest.raises(KeyError):
        opt.step(closure)
    assert torch.equal(x.detach(), before)


def test_spider_requires_closure():
    with pytest.raises(RuntimeError, match="requires a closure"):
        NormalizedSPIDER([torch.zeros(1, requires_grad=True)]).step()


FACTORY = [lambda params, **kw: BetaNormalizedGD(params, lr=0.05, beta=0.5, **kw)]


@pytest.mark.parametrize("dtype", table.DTYPES)
@pytest.mark.parametrize("factory", FACTORY, ids=["BetaNormalizedGD"])
def test_contract_state_dict_and_foreach(factory, dtype):
    table.test_state_dict_round_trip_continues_bit_identically(factory, dtype)
    table.test_foreach_matches_single_tensor(factory, dtype)


@pytest.mark.parametrize("factory", FACTORY, ids=["BetaNormalizedGD"])
def test_contract_schedulers_groups_lazy_state(factory):
    table.test_scheduler_and_per_group_hyperparameters_take_effect(factory)
    table.test_lazy_state_closure_and_zero_grad(factory)


@pytest.mark.parametrize(
    "cls, kwargs, error, match",
    [
        (BetaNormalizedGD, dict(lr=-0.1), ValueError, r"^lr must be >= 0.0, got -0.1$"),
        (BetaNormalizedGD, dict(beta=1.5), ValueError, r"^beta must be <= 1.0, got 1.5$"),
        (NormalizedSPIDER, dict(period=0), ValueError, r"^period must be >= 1, got 0$"),
        (NormalizedSPIDER, dict(period=2.0), TypeError, r"^period must be an integer, got float$"),
        (BetaNormalizedGD, dict(maximize=1), TypeError, r"^maximize must be a bool, got int$"),
    ],
)
def test_rejects_bad_hyperparameters(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls([torch.zeros(1, requires_grad=True)], **kwargs)
