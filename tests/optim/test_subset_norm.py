"""AdamWSN and SNSM: official-code trajectories, closed forms, refresh and reset timing, state memory, errors.

The torch.optim contract rows (state_dict round trips, closures, schedulers, dtypes) run in the shared table
tests/optim/test_optimizer_table.py; the round trip across a projector refresh runs here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from paperzoo.optim import SNSM, AdamWSN, optimizer_state_bytes, subset_norm_sq
from tests.optim.checkpoint import reload_checkpoint

F64 = torch.float64
FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "snsm_official.json").read_text())


def _steps(opt, params, grads_seq):
    for grads in grads_seq:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()


def _grads(shapes, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g, dtype=F64) for s in shapes] for _ in range(n)]


# -- official-code trajectories ------------------------------------------------------------------------------------


def _problem(dtype):
    """The fixture's problem: closed-form data and initial weights (no RNG), a two-hidden-layer tanh regression."""
    i = torch.arange(16, dtype=F64)[:, None]
    j = torch.arange(5, dtype=F64)[None, :]
    x = torch.sin(0.37 * (i + 1) * (j + 1) + 0.1 * j)
    y = torch.cos(0.5 * i - 0.3 * torch.arange(3, dtype=F64)[None, :])

    def grid(m, n, f):
        return f(torch.arange(m, dtype=F64)[:, None], torch.arange(n, dtype=F64)[None, :])

    params = {
        "W1": grid(6, 5, lambda a, b: 0.3 * torch.sin(1.1 * a + 0.7 * b + 0.2)),
        "b1": 0.1 * torch.cos(torch.arange(6, dtype=F64)),
        "W2": grid(6, 6, lambda a, b: 0.3 * torch.cos(0.9 * a - 1.3 * b + 0.4)),
        "W3": grid(3, 6, lambda a, b: 0.3 * torch.sin(0.5 * a + 1.7 * b - 0.3)),
    }
    params = {n: p.to(dtype).requires_grad_(True) for n, p in params.items()}
    x, y = x.to(dtype), y.to(dtype)

    def closure():
        opt.zero_grad()
        h1 = torch.tanh(x @ params["W1"].T + params["b1"])
        h2 = torch.tanh(h1 @ params["W2"].T)
        loss = ((h2 @ params["W3"].T - y) ** 2).mean()
        loss.backward()
        return loss

    opt = None

    def bind(optimizer):
        nonlocal opt
        opt = optimizer
        return closure

    return params, bind


# (config, dtype, rtol, atol). SN: bit-level agreement. SNSM in float32: the same float32 SVD as the official
# code. SNSM in float64: the official projector SVD runs in float32 (GaLore's projector code), ours in float64, so
# the trajectories agree to the float32 rounding of the projector only.
CASES = [
    ("adamw_sn", F64, 1e-12, 1e-14), ("adagrad_sn", F64, 1e-12, 1e-14), ("adagrad_sn_momentum", F64, 1e-12, 1e-14),
    ("adamw_snsm", torch.float32, 1e-6, 1e-7), ("adagrad_snsm", torch.float32, 1e-6, 1e-7),
    ("adamw_snsm", F64, 0.0, 5e-6), ("adagrad_snsm", F64, 0.0, 5e-6),
]


@pytest.mark.parametrize("name,dtype,rtol,atol", CASES, ids=[f"{c[0]}-{str(c[1])[6:]}" for c in CASES])
def test_matches_official_code_trajectories(name, dtype, rtol, atol):
    cfg = FIXTURE["configs"][name]
    hp = cfg["hyperparameters"]
    params, bind = _problem(dtype)
    kw = dict(lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"], weight_decay=hp["weight_decay"])
    if cfg["subspace"] is None:
        opt = AdamWSN(list(params.values()), **kw)
    else:
        opt = SNSM(list(params.values()), rank=cfg["subspace"]["rank"], update_proj_gap=cfg["subspace"]["gap"], **kw)
    assert opt.param_groups[0]["correct_bias"] is None  # the default resolves to the official preset's value
    closure = bind(opt)
    losses = [float(opt.step(closure).detach()) for _ in range(FIXTURE["steps"])]
    ref = cfg[str(dtype)[6:]]
    torch.testing.assert_close(torch.tensor(losses, dtype=F64), torch.tensor(ref["losses"], dtype=F64),
                               rtol=rtol, atol=atol)
    for n, p in params.items():
        torch.testing.assert_close(p.detach().double().reshape(-1), torch.tensor(ref["params"][n], dtype=F64),
                                   rtol=rtol, atol=atol)
        for key in ("exp_avg", "exp_avg_sq"):
            shape = cfg["state_shapes"][n].get(key)
            assert (tuple(opt.state[p][key].shape) if key in opt.state[p] else None) == (
                tuple(shape) if shape is not None else None), (n, key)


def test_fixture_covers_refreshes_and_adagrad():
    steps = FIXTURE["steps"]
    for name in ("adamw_snsm", "adagrad_snsm"):
        gap = FIXTURE["configs"][name]["subspace"]["gap"]
        assert steps > 2 * gap  # at least two refreshes after the first projector, each followed by a reset
    assert FIXTURE["configs"]["adagrad_sn"]["hyperparameters"]["betas"] == [0.0, 1.0]
    assert FIXTURE["source"].startswith("github.com/timmytonga/sn-sm @ a4c1a4a5")


# -- closed forms --------------------------------------------------------------------------------------------------


def test_subset_norm_sq_uses_lines_along_the_smaller_dimension():
    g = torch.arange(12.0).reshape(4, 3)  # m >= n: one subset per row, max(m, n) = 4 subsets of 3
    torch.testing.assert_close(subset_norm_sq(g), (g**2).sum(1, keepdim=True))
    torch.testing.assert_close(subset_norm_sq(g.T), (g.T**2).sum(0, keepdim=True))  # (3, 4): per column
    assert subset_norm_sq(g).shape == (4, 1) and subset_norm_sq(g.T).shape == (1, 4)
    assert subset_norm_sq(torch.ones(3, 3)).shape == (3, 1)  # square: rows, as in the official code


def test_adamwsn_closed_form_two_steps():
    w = torch.zeros(3, 2, dtype=F64, requires_grad=True)  # m >= n: row subsets
    lr, b1, b2, eps, wd = 0.1, 0.5, 0.75, 1e-6, 0.2
    opt = AdamWSN([w], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    g1 = torch.tensor([[1.0, 2.0], [0.0, 3.0], [4.0, 0.0]], dtype=F64)
    g2 = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=F64)
    _steps(opt, [w], [[g1], [g2]])
    x = torch.zeros(3, 2, dtype=F64)
    m = torch.zeros(3, 2, dtype=F64)
    v = torch.zeros(3, 1, dtype=F64)
    for t, g in ((1, g1), (2, g2)):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * (g**2).sum(1, keepdim=True)
        x = x - lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (v.sqrt() + eps)
        x = x - lr * wd * x  # decoupled decay on the updated parameter
    torch.testing.assert_close(w.detach(), x, rtol=1e-14, atol=1e-15)
    assert opt.state[w]["exp_avg_sq"].shape == (3, 1)


def test_adagrad_sn_is_the_running_sum_without_bias_correction():
    w = torch.zeros(2, 4, dtype=F64, requires_grad=True)  # m < n: column subsets
    seq = _grads([(2, 4)], 4, seed=3)
    _steps(AdamWSN([w], lr=0.3, betas=(0.0, 1.0), eps=1e-6), [w], seq)
    x, b2 = torch.zeros(2, 4, dtype=F64), torch.zeros(1, 4, dtype=F64)
    for (g,) in seq:
        b2 = b2 + (g**2).sum(0, keepdim=True)
        x = x - 0.3 * g / (b2.sqrt() + 1e-6)
    torch.testing.assert_close(w.detach(), x, rtol=1e-14, atol=1e-15)


def test_beta2_zero_takes_sgd_momentum_steps():
    seq = _grads([(3, 3)], 3)
    for correct_bias, scale in ((None, lambda t: 1.0), (True, lambda t: 1 / (1 - 0.5**t))):
        w = torch.zeros(3, 3, dtype=F64, requires_grad=True)
        opt = AdamWSN([w], lr=0.1, betas=(0.5, 0.0), correct_bias=correct_bias)
        _steps(opt, [w], seq)
        x, m = torch.zeros(3, 3, dtype=F64), torch.zeros(3, 3, dtype=F64)
        for t, (g,) in enumerate(seq, 1):
            m = 0.5 * m + 0.5 * g
            x = x - 0.1 * scale(t) * m  # the official `sgd` preset: no bias correction
        torch.testing.assert_close(w.detach(), x)
        assert "exp_avg_sq" not in opt.state[w]


def test_vectors_with_tiny_eps_and_no_decay_reduce_to_torch_adam():
    # eps enters as eps / sqrt(1 - beta2^t) relative to torch's placement, so compare at a negligible eps.
    shapes = [(5,), (1, 1)]
    seq = _grads(shapes, 6)
    for cls in (AdamWSN, SNSM):
        mine = [torch.ones(s, dtype=F64, requires_grad=True) for s in shapes]
        ref = [torch.ones(s, dtype=F64, requires_grad=True) for s in shapes]
        _steps(cls(mine, lr=0.01, eps=1e-300), mine, seq)
        _steps(torch.optim.Adam(ref, lr=0.01, eps=1e-300), ref, seq)
        for a, b in zip(mine, ref):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_snsm_without_momentum_is_adamwsn_and_full_rank_without_refresh_too():
    shapes = [(6, 10), (12, 4), (5, 5)]
    seq = _grads(shapes, 5, seed=1)
    for kw in (dict(betas=(0.0, 0.999), rank=2, update_proj_gap=2), dict(rank=12, update_proj_gap=100)):
        a = [torch.zeros(s, dtype=F64, requires_grad=True) for s in shapes]
        b = [torch.zeros(s, dtype=F64, requires_grad=True) for s in shapes]
        snsm = SNSM(a, lr=0.1, **kw)
        _steps(snsm, a, seq)
        _steps(AdamWSN(b, lr=0.1, betas=kw.get("betas", (0.9, 0.999))), b, seq)
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)
        if "betas" in kw:
            assert all("projector" not in snsm.state[p] and "exp_avg" not in snsm.state[p] for p in a)


def test_snsm_refresh_at_multiples_of_the_gap_and_reset_after_the_refresh_step():
    # (2, 5): left projector P (2, 1). gap = 2: P from g1 at t = 1, refreshed from g2 at t = 2 (2 % 2 == 0);
    # the t = 2 step uses M_1 carried over, then M is zeroed, so M_3 = (1 - beta1) P_2^T g3; no refresh at t = 3.
    g1 = torch.tensor([[3.0, 0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0, 0.0]], dtype=F64)
    g2 = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0], [0.0, 2.0, 0.0, 1.0, 0.0]], dtype=F64)
    g3 = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 0.0, 0.0, 1.0]], dtype=F64)
    w = torch.zeros(2, 5, dtype=F64, requires_grad=True)
    b1, lr, eps = 0.5, 1.0, 1e-6
    opt = SNSM([w], lr=lr, betas=(b1, 1.0), eps=eps, rank=1, update_proj_gap=2)
    x, v = torch.zeros(2, 5, dtype=F64), torch.zeros(1, 5, dtype=F64)

    def top_left(g):
        return torch.linalg.svd(g, full_matrices=False)[0][:, :1]

    M = torch.zeros(1, 5, dtype=F64)
    for t, g in ((1, g1), (2, g2), (3, g3)):
        P = top_left(g) if t in (1, 2) else P
        M = b1 * M + (1 - b1) * (P.T @ g)
        N = P @ M + (g - P @ (P.T @ g))
        v = v + (g**2).sum(0, keepdim=True)
        x = x - lr * N / (v.sqrt() + eps)
        _steps(opt, [w], [[g]])
        torch.testing.assert_close(w.detach(), x, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(opt.state[w]["projector"], P)
        if t == 2:
            M = torch.zeros_like(M)
            assert torch.equal(opt.state[w]["exp_avg"], torch.zeros(1, 5, dtype=F64))
    torch.testing.assert_close(opt.state[w]["exp_avg"], (1 - b1) * (P.T @ g3))


def test_snsm_state_round_trips_across_a_refresh():
    def fresh():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Tanh(), torch.nn.Linear(9, 4)).double()
        opt = SNSM(model.parameters(), lr=0.05, rank=2, update_proj_gap=3, weight_decay=0.01)
        return model, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)

    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(20, 6, generator=gen, dtype=F64), torch.randn(20, 4, generator=gen, dtype=F64)

    def train(model, opt, sched, n):
        for _ in range(n):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()
            sched.step()

    model, opt, sched = fresh()
    train(model, opt, sched, 5)  # t = 5: the next step (t = 6) refreshes and resets
    ref = fresh()
    train(*ref, 10)
    new = reload_checkpoint(model, opt, sched, fresh)
    train(*new, 5)
    for a, b in zip(new[0].parameters(), ref[0].parameters()):
        assert torch.equal(a, b)


def test_state_memory_is_reduced():
    shapes = [(256, 64), (10, 256), (256,)]
    sizes = {}
    for name, make in [("adamw", lambda ps: torch.optim.AdamW(ps)), ("sn", lambda ps: AdamWSN(ps)),
                       ("snsm", lambda ps: SNSM(ps, rank=8))]:
        ps = [torch.zeros(s, requires_grad=True) for s in shapes]
        opt = make(ps)
        _steps(opt, ps, [[torch.randn(s) for s in shapes]])
        sizes[name] = optimizer_state_bytes(opt) - 4 * len(shapes)  # minus the step counters
    d = 256 * 64 + 10 * 256 + 256
    assert sizes["adamw"] == 4 * 2 * d
    assert sizes["sn"] == 4 * (d + 256 + 256 + 256)  # (256, 1) rows, (1, 256) columns, the vector's own
    # (256, 64): Q (8, 64), M (256, 8), v (256, 1); (10, 256): P (10, 8), M (8, 256), v (1, 256); vector: 2 x 256.
    assert sizes["snsm"] == 4 * (8 * 64 + 256 * 8 + 256 + 10 * 8 + 8 * 256 + 256 + 2 * 256)
    assert sizes["snsm"] < 0.25 * sizes["adamw"]


def test_errors():
    w = torch.nn.Parameter(torch.ones(2, 2))
    with pytest.raises(ValueError, match="lr must be >= 0.0, got -1.0"):
        AdamWSN([w], lr=-1.0)
    with pytest.raises(ValueError, match=r"betas\[1\] must be <= 1.0, got 1.5"):
        AdamWSN([w], betas=(0.9, 1.5))
    with pytest.raises(ValueError, match=r"betas\[0\] must be < 1.0, got 1.0"):
        SNSM([w], betas=(1.0, 0.999))
    with pytest.raises(ValueError, match=r"correct_bias must be False or None when betas\[1\] == 1.0"):
        AdamWSN([w], betas=(0.9, 1.0), correct_bias=True)
    with pytest.raises(TypeError, match="correct_bias must be a bool, got int"):
        AdamWSN([w], correct_bias=1)
    with pytest.raises(ValueError, match="eps must be > 0.0, got 0.0"):
        SNSM([w], eps=0.0)
    with pytest.raises(ValueError, match="rank must be >= 1, got 0"):
        SNSM([w], rank=0)
    with pytest.raises(ValueError, match="update_proj_gap must be >= 1, got 0"):
        SNSM([w], update_proj_gap=0)
    AdamWSN([w], betas=(0.9, 1.0))  # AdaGrad-SN is allowed
    AdamWSN([w], betas=(0.9, 1.0), correct_bias=False)
