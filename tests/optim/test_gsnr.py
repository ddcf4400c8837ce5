"""GSNR measurement and the VRGD wrapper: closed forms, per-sample gradients with torch.func, contract, errors."""

from __future__ import annotations


import pytest
import torch

from paperzoo.optim import VRGD, gsnr_scale
from paperzoo.optim.gsnr import gsnr
from tests.optim.checkpoint import reload_checkpoint


def test_gsnr_closed_form_and_population_variance():
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(6, 4, 3, generator=g, dtype=torch.float64)
    mean = samples.mean(0)
    var = ((samples - mean) ** 2).mean(0)
    assert torch.allclose(gsnr(samples, eps=1e-30), mean**2 / var)
    # Identical samples: zero variance, GSNR = mean^2 / eps, finite.
    same = torch.ones(3, 2)
    assert torch.allclose(gsnr(same, eps=0.5), torch.full((2,), 2.0))


def test_gsnr_from_torch_func_per_sample_gradients_matches_loop():
    from torch.func import functional_call, grad, vmap

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    X, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, x, t):
        return ((functional_call(model, p, (x[None],)) - t[None]) ** 2).sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, X, y)
    looped = []
    for i in range(8):
        model.zero_grad()
        loss(dict(model.named_parameters()), X[i], y[i]).backward()
        looped.append(model.weight.grad.clone())
    assert torch.allclose(gsnr(per_sample["weight"]), gsnr(torch.stack(looped)))


def test_gsnr_scale_normalises_and_bounds():
    r = torch.tensor([0.0, 1.0, 2.0, 5.0])
    assert gsnr_scale(r, 0.5).tolist() == [0.5, 0.5, 1.0, 1.5]
    assert torch.equal(gsnr_scale(r, 0.0), torch.ones(4))
    assert torch.equal(gsnr_scale(torch.zeros(3), 0.1), torch.ones(3))
    wide = gsnr_scale(r, 1.0)
    assert torch.allclose(wide, (r / r.mean()).clamp(0.0, 2.0))


def _problem(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(32, 3, generator=g, dtype=dtype)
    y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=dtype) + 0.3 * torch.randn(32, generator=g, dtype=dtype)
    return X, y


def test_vrgd_sgd_step_is_gsnr_scaled_mean_gradient_step():
    X, y = _problem()
    w0 = torch.tensor([0.2, 0.1, -0.3], dtype=torch.float64)
    w = torch.nn.Parameter(w0.clone())
    opt = VRGD([w], torch.optim.SGD, gamma=0.3, lr=0.1)
    opt.step(lambda: ((X @ w - y) ** 2).reshape(4, 8).mean(1))
    per_micro = torch.stack([2 * X[i * 8:(i + 1) * 8].T @ (X[i * 8:(i + 1) * 8] @ w0 - y[i * 8:(i + 1) * 8]) / 8
                             for i in range(4)])
    mean = per_micro.mean(0)
    scale = gsnr_scale(gsnr(per_micro), 0.3)
    assert torch.allclose(w.detach(), w0 - 0.1 * scale * mean, atol=1e-14)
    assert torch.allclose(w.grad, mean, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gamma_zero_is_the_base_optimizer_on_the_mean_gradient(dtype):
    X, y = _problem(dtype)
    a, b = torch.nn.Parameter(torch.zeros(3, dtype=dtype)), torch.nn.Parameter(torch.zeros(3, dtype=dtype))
    ours = VRGD([a], torch.optim.Adam, gamma=0.0, lr=0.05)
    ref = torch.optim.Adam([b], lr=0.05)
    for _ in range(20):
        ours.step(lambda: ((X @ a - y) ** 2).reshape(4, 8).mean(1))
        ref.zero_grad()
        ((X @ b - y) ** 2).reshape(4, 8).mean(1).mean().backward()
        ref.step()
    assert a.dtype == dtype
    assert torch.allclose(a.detach(), b.detach(), atol=1e-6 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_converges_to_least_squares_solution(dtype):
    X, y = _problem(dtype)
    w = torch.nn.Parameter(torch.zeros(3, dtype=dtype))
    opt = VRGD([w], torch.optim.SGD, lr=0.1, momentum=0.5)
    for _ in range(300):
        opt.step(lambda: ((X @ w - y) ** 2).reshape(4, 8).mean(1))
    w_star = torch.linalg.lstsq(X, y[:, None]).solution[:, 0]
    assert torch.allclose(w.detach(), w_star, atol=1e-4 if dtype == torch.float32 else 1e-8)


def test_state_dict_round_trip_scheduler_and_per_group_gamma():
    X, y = _problem()

    def fresh():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
        opt = VRGD([{"params": model[0].parameters(), "gamma": 0.5}, {"params": model[2].parameters()}],
                   torch.optim.Adam, lr=0.01, weight_decay=1e-2)
        return model, opt, torch.optim.lr_scheduler.StepLR(opt, 3, 0.5)

    def run(model, opt, sched, n):
        for _ in range(n):
            opt.step(lambda: ((model(X)[:, 0] - y) ** 2).reshape(4, 8).mean(1))
            sched.step()

    ref = fresh()
    run(*ref, 10)
    model, opt, sched = fresh()
    run(model, opt, sched, 6)
    new = reload_checkpoint(model, opt, sched, fresh)
    assert new[1].param_groups[0]["gamma"] == 0.5 and new[1].param_groups[1]["gamma"] == 0.1
    assert new[1].base_optimizer.param_groups[0]["lr"] == 0.01 * 0.5**2
    run(*new, 4)
    for p, q in zip(new[0].parameters(), ref[0].parameters()):
        assert torch.equal(p, q)


def test_errors():
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="per_sample_grads must have shape \\(k, ...\\) with k >= 2, got \\(1, 2\\)"):
        gsnr(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="eps must be > 0.0, got 0.0"):
        gsnr(torch.zeros(2, 2), eps=0.0)
    with pytest.raises(ValueError, match="gamma must be <= 1.0, got 1.5"):
        gsnr_scale(torch.ones(2), 1.5)
    with pytest.raises(ValueError, match="r must be >= 0 entrywise"):
        gsnr_scale(-torch.ones(2))
    with pytest.raises(ValueError, match="gamma must be >= 0.0, got -0.1"):
        VRGD([p], torch.optim.SGD, gamma=-0.1, lr=0.1)
    with pytest.raises(TypeError):
        VRGD([p], torch.optim.SGD, lr=0.1, not_an_option=1)
    opt = VRGD([p], torch.optim.SGD, lr=0.1)
    with pytest.raises(TypeError, match="VRGD needs a closure"):
        opt.step()
    with pytest.raises(ValueError, match=r"closure\(\) must return a \(k,\) tensor of micro-batch losses with k >= 2, "
                                         r"got \(\)"):
        opt.step(lambda: (p ** 2).sum())
