"""AdaGradNorm: the update written out, adaptivity to the stepsize scale, the torch.optim contract, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from paperzoo.optim import AdaGradNorm, NonFiniteGradientError
from tests.optim import test_optimizer_table as table


def test_matches_the_update_written_out():
    """Two parameters share one normaliser per group; a second group keeps its own."""
    lr, b0 = 0.5, 0.1
    a = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([[3.0]], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([4.0], dtype=torch.float64, requires_grad=True)
    opt = AdaGradNorm([{"params": [a, b]}, {"params": [c], "lr": 1.0}], lr=lr, b0=b0)
    ref_ab, ref_c = [1.0, 2.0, 3.0], 4.0
    sum_ab = sum_c = 0.0
    for k in range(5):
        ga = torch.tensor([k + 1.0, -1.0], dtype=torch.float64)
        gb = torch.tensor([[0.5 * k]], dtype=torch.float64)
        gc = torch.tensor([2.0 - k], dtype=torch.float64)
        a.grad, b.grad, c.grad = ga, gb, gc
        opt.step()
        g_ab = ga.tolist() + gb.flatten().tolist()
        sum_ab += sum(v * v for v in g_ab)
        sum_c += gc.item() ** 2
        ref_ab = [x - lr / math.sqrt(b0**2 + sum_ab) * g for x, g in zip(ref_ab, g_ab)]
        ref_c = ref_c - 1.0 / math.sqrt(b0**2 + sum_c) * gc.item()
        assert a.tolist() + b.flatten().tolist() == pytest.approx(ref_ab, rel=1e-14)
        assert c.item() == pytest.approx(ref_c, rel=1e-14)
    assert opt.param_groups[0]["sum_sq_grad_norm"] == pytest.approx(sum_ab, rel=1e-14)


@pytest.mark.parametrize("lr", [1.0, 10.0, 100.0, 1000.0])
def test_converges_for_every_stepsize_scale_where_sgd_diverges(lr):
    """f = (L/2)||x||^2 with L = 10: SGD diverges for lr > 2/L = 0.2; AdaGrad-Norm converges for every lr."""
    x0 = torch.tensor([3.0, -4.0], dtype=torch.float64)
    x = x0.clone().requires_grad_(True)
    opt = AdaGradNorm([x], lr=lr)
    for _ in range(300):
        opt.zero_grad()
        (5.0 * (x**2).sum()).backward()
        opt.step()
    assert x.detach().norm() < 1e-6
    if lr > 0.2:
        y = x0.clone().requires_grad_(True)
        sgd = torch.optim.SGD([y], lr=lr)
        for _ in range(20):
            sgd.zero_grad()
            (5.0 * (y**2).sum()).backward()
            sgd.step()
        assert y.detach().norm() > 10 * x0.norm()


def test_first_step_is_never_longer_than_lr():
    x = torch.zeros(3, requires_grad=True)
    opt = AdaGradNorm([x], lr=0.3)
    x.grad = torch.tensor([1e8, -1e8, 1e8])
    opt.step()
    assert x.detach().norm().item() == pytest.approx(0.3, rel=1e-6)


def test_nan_gradient_raises_before_anything_changes():
    x = torch.zeros(2, requires_grad=True)
    opt = AdaGradNorm([x])
    x.grad = torch.tensor([float("nan"), 0.0])
    with pytest.raises(NonFiniteGradientError, match="NaN or inf"):
        opt.step()
    # Under "ignore" the accumulator guard still refuses the step, with the accumulator and step count untouched.
    opt = AdaGradNorm([x], nonfinite="ignore")
    with pytest.raises(FloatingPointError, match="accumulated squared gradient norm is nan"):
        opt.step()
    assert opt.param_groups[0]["sum_sq_grad_norm"] == 0.0 and x not in opt.state
    assert torch.equal(x.detach(), torch.zeros(2))


# The registry table's contract rows (its convergence rows need more steps than the table gives a GD-like method;
# see the comment in test_optimizer_table.py).
FACTORY = [lambda params, **kw: AdaGradNorm(params, lr=1.0, **kw)]


@pytest.mark.parametrize("dtype", table.DTYPES)
@pytest.mark.parametrize("factory", FACTORY, ids=["AdaGradNorm"])
def test_state_dict_round_trip_continues_bit_identically(factory, dtype):
    table.test_state_dict_round_trip_continues_bit_identically(factory, dtype)


@pytest.mark.parametrize("dtype", table.DTYPES)
@pytest.mark.parametrize("factory", FACTORY, ids=["AdaGradNorm"])
def test_foreach_matches_single_tensor(factory, dtype):
    table.test_foreach_matches_single_tensor(factory, dtype)


@pytest.mark.parametrize("factory", FACTORY, ids=["AdaGradNorm"])
def test_scheduler_and_per_group_hyperparameters_take_effect(factory):
    table.test_scheduler_and_per_group_hyperparameters_take_effect(factory)


@pytest.mark.parametrize("factory", FACTORY, ids=["AdaGradNorm"])
def test_lazy_state_closure_and_zero_grad(factory):
    table.test_lazy_state_closure_and_zero_grad(factory)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(lr=-1.0), ValueError, "lr must be >= 0.0, got -1.0"),
        (dict(b0=0.0), ValueError, "b0 must be > 0.0, got 0.0"),
        (dict(weight_decay=-1.0), ValueError, "weight_decay must be >= 0.0, got -1.0"),
        (dict(maximize="no"), TypeError, "maximize must be a bool, got str"),
    ],
)
def test_rejects_bad_hyperparameters(kwargs, error, message):
    with pytest.raises(error, match=message):
        AdaGradNorm([torch.zeros(2, requires_grad=True)], **kwargs)
