"""A-DoG: the authors' code's numbers step by step, closed forms (DoG at alpha_const = 0, the first steps by hand,
the weights' growth), the torch.optim contract, errors.

ADoG is not in tests/optim/test_optimizer_table.py: its parameters keep moving towards the auxiliary sequence w
when lr = 0 (x <- (1 - 1/alpha) x + w / alpha), which the table's scheduler row forbids; its contract rows run here.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch

from paperzoo.data.digits import single_thread
from paperzoo.optim import ADoG, NonFiniteGradientError

F64 = torch.float64
# Numbers produced by the authors' code (github.com/ittaikr/open_lm_fork @ cc51851a, accele_dog.py, AcceleDoG),
# run outside the project; the fixture's "how" says exactly how.
OFFICIAL = json.loads((Path(__file__).parent / "fixtures" / "adog_official.json").read_text())


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def _official_problem():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=F64))
    X = torch.randn(64, 8, generator=g, dtype=F64) @ (Q * torch.logspace(0, 1.5, 8, dtype=F64)) @ Q.T
    Y = torch.randn(64, 2, generator=g, dtype=F64)
    W0 = 0.1 * torch.randn(2, 8, generator=g, dtype=F64)
    b0 = 0.1 * torch.randn(2, generator=g, dtype=F64)
    return X, Y, W0, b0, torch.randint(64, (300, 8), generator=g)


@pytest.mark.parametrize("name", sorted(OFFICIAL["runs"]))
def test_matches_the_official_code_step_by_step(name):
    """Every loss, the parameters after steps 1, 2, 3, 10, ..., 300 and the final rbar and alpha equal the
    authors' AcceleDoG's to round-off (defaults from x = 0; and weight decay, alpha_const 1, reps_rel 1e-4, lr 0.5
    from a random start)."""
    run = OFFICIAL["runs"][name]
    X, Y, W0, b0, batches = _official_problem()
    if run["init"] == "zero":
        W, b = torch.zeros(2, 8, dtype=F64), torch.zeros(2, dtype=F64)
    else:
        W, b = W0.clone(), b0.clone()
    W.requires_grad_(True)
    b.requires_grad_(True)
    opt = ADoG([W, b], **run["config"])
    for t, ref_loss in enumerate(run["loss"]):
        idx = batches[t]

        def closure():
            opt.zero_grad()
            loss = ((X[idx] @ W.T + b - Y[idx]) ** 2).mean()
            loss.backward()
            return loss

        loss = opt.step(closure)
        assert float(loss.detach()) == pytest.approx(ref_loss, rel=1e-12, abs=1e-14)
        if str(t + 1) in run["params"]:
            for p, ref in zip((W, b), run["params"][str(t + 1)]):
                torch.testing.assert_close(p.detach().reshape(-1), torch.tensor(ref, dtype=F64), atol=1e-14, rtol=0)
    group = opt.param_groups[0]
    assert group["rbar"] == pytest.approx(run["final"]["rbar"], rel=1e-12)
    assert group["alpha"] == pytest.approx(run["final"]["alpha"], rel=1e-12)


def _quadratic(dtype=F64, n=6, kappa=1e2, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    A = (Q * torch.logspace(0, math.log10(kappa), n, dtype=F64)) @ Q.T
    b = torch.randn(n, generator=g, dtype=F64)
    return A.to(dtype), b.to(dtype), torch.linalg.solve(A, b).to(dtype)


def _run(opt, x, f, steps):
    for _ in range(steps):
        opt.zero_grad()
        f(x).backward()
        opt.step()


def test_alpha_const_zero_is_dog():
    """alpha_t = 1 makes x = w: DoG, x_{t+1} = x_t - r_t g_t / sqrt(eps + sum ||g_i||^2), r_t = max(r_eps (1 +
    ||x_0||), max_{i <= t} ||x_i - x_0||)."""
    A, b, _ = _quadratic()
    f = lambda x: 0.5 * x @ A @ x - b @ x  # noqa: E731
    x0 = torch.full((6,), 0.3, dtype=F64)
    x = x0.clone().requires_grad_(True)
    reps, eps = 1e-3, 1e-8
    opt = ADoG([x], reps_rel=reps, alpha_const=0.0, eps=eps)
    ref, rbar, G = x0.clone(), reps * (1 + float(x0.norm())), eps
    for _ in range(50):
        opt.zero_grad()
        f(x).backward()
        opt.step()
        g = A @ ref - b
        G += float(g @ g)
        ref = ref - rbar / math.sqrt(G) * g
        rbar = max(rbar, float((ref - x0).norm()))
        torch.testing.assert_close(x.detach(), ref, atol=1e-14, rtol=1e-12)
        torch.testing.assert_close(opt.state[x]["w"], ref, atol=1e-14, rtol=1e-12)
    assert opt.param_groups[0]["alpha"] == 1.0


def test_first_two_steps_by_hand():
    """The default configuration's first two steps on two tensors, written out from the update rule."""
    g = torch.Generator().manual_seed(3)
    u0, v0 = torch.randn(3, 2, generator=g, dtype=F64), torch.randn(2, generator=g, dtype=F64)
    T = torch.randn(3, 2, generator=g, dtype=F64)
    u, v = u0.clone().requires_grad_(True), v0.clone().requires_grad_(True)
    opt = ADoG([u, v], reps_rel=1e-2, weight_decay=0.1)

    def grads(a, c):
        return a - T + 0.1 * a, c + 0.1 * c  # of 0.5 ||a - T||^2 + 0.5 ||c||^2, plus the L2 term

    rbar = 1e-2 * (1 + math.hypot(float(u0.norm()), float(v0.norm())))
    rsum, alpha, G = rbar, 1.0, 1e-8
    x, w = [u0.clone(), v0.clone()], [u0.clone(), v0.clone()]
    for _ in range(2):
        opt.zero_grad()
        (0.5 * ((u - T) ** 2).sum() + 0.5 * (v ** 2).sum()).backward()
        opt.step()
        gs = grads(*x)
        G += sum(float(((alpha * gi) ** 2).sum()) for gi in gs)
        eta = rbar / math.sqrt(G)
        w = [wi - alpha * eta * gi for wi, gi in zip(w, gs)]
        y = [xi - eta * gi for xi, gi in zip(x, gs)]
        rbar = max(rbar, math.hypot(float((w[0] - u0).norm()), float((w[1] - v0).norm())))
        rsum += rbar
        alpha = max(1.0, 0.5 * rsum / rbar)
        x = [(1 - 1 / alpha) * yi + wi / alpha for yi, wi in zip(y, w)]
        for p, ref in zip((u, v), x):
            torch.testing.assert_close(p.detach(), ref, atol=1e-15, rtol=1e-13)
        assert opt.param_groups[0]["alpha"] == pytest.approx(alpha, rel=1e-14)


def test_weights_grow_linearly_once_the_distance_estimate_settles():
    """alpha_{t+1} - alpha_t = alpha_const when rbar stays fixed; DoG (alpha_const = 0) is slower on a
    deterministic quadratic, the acceleration the weights buy."""
    A, b, x_star = _quadratic()
    f = lambda x: 0.5 * x @ A @ x - b @ x  # noqa: E731
    errors = {}
    for c in (0.5, 0.0):
        x = torch.zeros(6, dtype=F64, requires_grad=True)
        opt = ADoG([x], alpha_const=c)
        _run(opt, x, f, 300)
        group = opt.param_groups[0]
        before, rbar = group["alpha"], group["rbar"]
        _run(opt, x, f, 1)
        assert group["rbar"] == rbar  # settled by step 300 on this problem
        assert group["alpha"] - before == pytest.approx(c, rel=1e-9)
        errors[c] = float((x.detach() - x_star).norm() / x_star.norm())
    assert errors[0.5] < 0.1 * errors[0.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_converges_on_ill_conditioned_quadratic_and_keeps_dtype(dtype):
    A, b, x_star = _quadratic(dtype, n=10, kappa=1e3)
    x = torch.zeros_like(x_star, requires_grad=True)
    opt = ADoG([x])
    _run(opt, x, lambda x: 0.5 * x @ A @ x - b @ x, 2000)
    assert (x.detach() - x_star).norm() / x_star.norm() < 1e-3
    assert all(v.dtype == dtype for k, v in opt.state[x].items() if k != "step")


def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()


def _train_mlp(model, opt, steps):
    g = torch.Generator().manual_seed(1)
    X, Y = torch.randn(16, 4, generator=g, dtype=F64), torch.randn(16, 3, generator=g, dtype=F64)
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = ((model(X) - Y) ** 2).mean()
            loss.backward()
            return loss
        opt.step(closure)


def test_state_dict_round_trip_continues_bit_identically():
    kw = dict(weight_decay=1e-2, reps_rel=1e-4)
    model, ref = _mlp(), _mlp()
    opt, ref_opt = ADoG(model.parameters(), **kw), ADoG(ref.parameters(), **kw)
    _train_mlp(model, opt, 6)
    _train_mlp(ref, ref_opt, 10)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    new = _mlp(seed=5)
    new.load_state_dict(saved["model"])
    new_opt = ADoG(new.parameters(), **kw)
    new_opt.load_state_dict(saved["opt"])
    _train_mlp(new, new_opt, 4)
    for a, b in zip(new.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def test_torch_optim_conventions():
    used, unused = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = ADoG([used, unused])
    assert len(opt.state) == 0 and opt.param_groups[0]["rbar"] is None

    def closure():
        opt.zero_grad()
        loss = (used ** 2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 2.0
    assert used in opt.state and unused not in opt.state
    assert torch.equal(unused.detach(), torch.ones(2))
    # Per-group hyperparameters: a group at lr = 0 never moves (x = w = x_0); foreach has no effect.
    results = []
    for foreach in (False, True):
        frozen, moving = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
        opt = ADoG([{"params": [frozen], "lr": 0.0}, {"params": [moving]}], foreach=foreach)
        for _ in range(5):
            opt.zero_grad()
            ((frozen ** 2).sum() + ((moving - 2) ** 2).sum()).backward()
            opt.step()
        assert torch.equal(frozen.detach(), torch.ones(3)) and not torch.equal(moving.detach(), torch.ones(3))
        results.append(moving.detach().clone())
    assert torch.equal(*results)


def test_maximize_ascends():
    x = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=F64))
    opt = ADoG([x], maximize=True)
    _run(opt, x, lambda x: -((x - 3) ** 2).sum(), 500)
    assert (x.detach() - 3).abs().max() < 1e-4


def test_errors():
    x = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="lr must be >= 0.0, got -1.0"):
        ADoG([x], lr=-1.0)
    with pytest.raises(ValueError, match="reps_rel must be > 0.0, got 0.0"):
        ADoG([x], reps_rel=0.0)
    with pytest.raises(ValueError, match="alpha_const must be >= 0.0, got -0.5"):
        ADoG([x], alpha_const=-0.5)
    with pytest.raises(ValueError, match="eps must be > 0.0, got 0.0"):
        ADoG([x], eps=0.0)
    with pytest.raises(ValueError, match="weight_decay must be >= 0.0, got -1.0"):
        ADoG([x], weight_decay=-1.0)
    with pytest.raises(TypeError, match="maximize must be a bool, got int"):
        ADoG([x], maximize=1)
    opt = ADoG([x])
    x.grad = torch.tensor([float("nan"), 1.0])
    with pytest.raises(NonFiniteGradientError, match="NaN or inf"):
        opt.step()
    # Under "ignore" the accumulator guard still refuses the step, before the group or its state change.
    opt = ADoG([x], nonfinite="ignore")
    with pytest.raises(FloatingPointError, match="accumulated squared gradient norm is nan"):
        opt.step()
    assert opt.param_groups[0]["sum_sq"] is None and x not in opt.state
    e = torch.nn.Embedding(3, 2, sparse=True)
    opt = ADoG(e.parameters())
    e(torch.tensor([0])).sum().backward()
    with pytest.raises(TypeError, match="ADoG does not support sparse gradients"):
        opt.step()
