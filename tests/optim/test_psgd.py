"""PSGD: official-code trajectories, the normaliser in closed form, contract rows with closures (exact and
finite-difference curvature), fitting, state, errors.

PSGD is not in tests/optim/test_optimizer_table.py: its curvature modes need a closure (the shared table steps
without one), and the closure-free gradient-whitening mode fits P ~ (E gg^T)^{-1/2}, which is undefined on the
table's noise-free problems (P grows without bound as the gradient vanishes). Its rows run here instead.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch

from paperzoo.data.digits import single_thread
from paperzoo.optim import PSGD
from paperzoo.optim.psgd import norm_lower_bound_spd

F64 = torch.float64
# Numbers produced by the authors' code (github.com/lixilinx/psgd_torch @ a8616f1d, psgd.py, dQ="EQ"), run outside
# the project; the fixture's "how" says exactly how.
OFFICIAL = json.loads((Path(__file__).parent / "fixtures" / "psgd_official.json").read_text())


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def _quadratic(dtype, n=8, kappa=1e2):
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    A = (Q * torch.logspace(0, math.log10(kappa), n, dtype=F64)) @ Q.T
    b = torch.randn(n, generator=g, dtype=F64)
    return A.to(dtype), b.to(dtype), torch.linalg.solve(A, b).to(dtype)


def _run(opt, x, f, steps, create_graph):
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = f(x)
            loss.backward(create_graph=create_graph)
            return loss
        opt.step(closure)


def _official_problem(run):
    if run["cls"] == "DenseNewton":
        x = torch.tensor(run["init"][0], dtype=F64, requires_grad=True)
        return [x], lambda: ((1 - x[:-1]) ** 2).sum() + 10 * ((x[1:] - x[:-1] ** 2) ** 2).sum()
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(16, 5, generator=g, dtype=F64), torch.randn(16, 3, generator=g, dtype=F64)
    params = [torch.tensor(v, dtype=F64).reshape(shape).requires_grad_(True)
              for v, shape in zip(run["init"], [(5, 5), (5,), (3, 5)])]
    W1, b1, W2 = params
    return params, lambda: ((torch.tanh(X @ W1.T + b1) @ W2.T - Y) ** 2).mean()


# The official argument names and ours.
_NAMES = dict(lr_params="lr", lr_preconditioner="precond_lr", betaL="lipschitz_beta", momentum="momentum",
              grad_clip_max_norm="grad_clip_max_norm", preconditioner_max_skew="max_skew")


@pytest.mark.parametrize("name", sorted(OFFICIAL["runs"]))
def test_matches_the_official_code_step_by_step(name):
    """Every loss, the parameters after steps 1, 2, 3, 10, ... and the final Q factors equal the authors' code's
    (Newton-type Kron with exact and finite-difference Hessian-vector products, momentum and clipping; Kron
    gradient whitening; dense), to round-off: the finite-difference pairs divide a gradient difference by
    sqrt(eps), which amplifies round-off to ~1e-10."""
    run = OFFICIAL["runs"][name]
    hessian = ("gradient" if run["cls"] == "KronWhiten" else
               "finite_diff" if run["config"].get("exact_hessian_vector_product") is False else "exact")
    params, f = _official_problem(run)
    kw = {_NAMES[k]: v for k, v in run["config"].items() if k in _NAMES}
    opt = PSGD(params, precond_type="dense" if run["cls"] == "DenseNewton" else "kron", hessian=hessian,
               seed=run["seed"], max_size_triangular=10**6, **kw)
    atol = 1e-8 if hessian == "finite_diff" else 1e-13

    def closure():
        opt.zero_grad()
        loss = f()
        loss.backward(create_graph=hessian == "exact")
        return loss

    for t, ref_loss in enumerate(run["loss"], start=1):
        loss = opt.step(closure)
        assert float(loss) == pytest.approx(ref_loss, rel=10 * atol, abs=10 * atol)
        if str(t) in run["params"]:
            for p, ref in zip(params, run["params"][str(t)]):
                torch.testing.assert_close(p.detach().reshape(-1), torch.tensor(ref, dtype=F64), atol=atol, rtol=0)
    if run["cls"] == "DenseNewton":
        torch.testing.assert_close(opt.state[params[0]]["Q"].reshape(-1), torch.tensor(run["Q"][0], dtype=F64),
                                   atol=100 * atol, rtol=0)
    else:
        for p, ref_factors in zip(params, run["Q"]):
            for q, ref in zip(opt.state[p]["Q"], ref_factors):
                torch.testing.assert_close(q.reshape(-1), torch.tensor(ref, dtype=F64), atol=100 * atol, rtol=0)
    for p in params:
        p.grad = None


def test_normaliser_is_the_running_lipschitz_estimate_in_closed_form():
    """Two dense steps by hand: L_1 = l_1, L_2 = max(beta L_1 + (1 - beta) l_2, l_2) with l = |a|^2 + |b|^2, and
    Q <- Q - (mu_2 / L) triu(aa^T - bb^T) Q; the normaliser of the paper-era code, ||aa^T + bb^T||_2 per step, gives
    a different Q."""
    A, b, _ = _quadratic(F64, n=4, kappa=30.0)
    x = torch.zeros(4, dtype=F64, requires_grad=True)
    mu1, mu2, beta, damping = 0.3, 0.4, 0.8, 1e-3
    opt = PSGD([x], lr=mu1, precond_type="dense", precond_lr=mu2, lipschitz_beta=beta, damping=damping, seed=7)
    gen = torch.Generator().manual_seed(7)
    xs, Q, L, Q_old = torch.zeros(4, dtype=F64), None, 0.0, None
    for _ in range(2):
        def closure():
            opt.zero_grad()
            loss = 0.5 * x @ A @ x - b @ x
            loss.backward(create_graph=True)
            return loss
        opt.step(closure)
        v = torch.randn(4, generator=gen, dtype=F64)
        h = A @ v
        z = torch.randn(4, generator=gen, dtype=F64)
        if Q is None:
            s = float((v**2).mean()) ** 0.25 * (float((h**4).mean()) + damping**4) ** (-1 / 8)
            Q, Q_old = s * torch.eye(4, dtype=F64), s * torch.eye(4, dtype=F64)
        h = h + (damping + torch.finfo(F64).eps * h.abs()) * z
        for M, old in ((Q, False), (Q_old, True)):
            a, bb = M @ h, torch.linalg.solve(M.T, v)
            G = torch.outer(a, a) - torch.outer(bb, bb)
            if old:
                step = mu2 / torch.linalg.matrix_norm(torch.outer(a, a) + torch.outer(bb, bb), 2)
            else:
                ell = float(a @ a + bb @ bb)
                L = max(beta * L + (1 - beta) * ell, ell)
                step = mu2 / L
            M -= step * G.triu() @ M
        xs = xs - mu1 * Q.T @ Q @ (A @ xs - b)
        torch.testing.assert_close(opt.state[x]["L"], torch.tensor([L], dtype=F64), atol=0, rtol=1e-13)
        torch.testing.assert_close(opt.state[x]["Q"], Q, atol=1e-14, rtol=0)
        torch.testing.assert_close(x.detach(), xs, atol=1e-14, rtol=0)
    assert (Q - Q_old).abs().max() > 1e-3
    x.grad = None


def test_norm_lower_bound_spd():
    g = torch.Generator().manual_seed(0)
    for n, r in ((6, 3), (40, 40), (50, 1)):
        X = torch.randn(n, r, generator=g, dtype=F64)
        A = X @ X.T
        exact = torch.linalg.matrix_norm(A, 2)
        bound = norm_lower_bound_spd(A, generator=g)
        assert bound <= exact * (1 + 1e-12) and bound >= 0.9 * exact
        if r == 1:
            torch.testing.assert_close(bound, exact, atol=0, rtol=1e-12)
    assert norm_lower_bound_spd(torch.zeros(3, 3, dtype=F64), generator=g) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("precond_type,hessian", [("dense", "exact"), ("dense", "finite_diff"), ("kron", "exact")])
def test_converges_on_ill_conditioned_quadratic(dtype, precond_type, hessian):
    A, b, x_star = _quadratic(dtype)
    x = torch.zeros_like(x_star, requires_grad=True)
    opt = PSGD([x], lr=0.5, precond_type=precond_type, hessian=hessian)
    f = lambda x: 0.5 * x @ A @ x - b @ x  # noqa: E731
    steps = 600
    _run(opt, x, f, steps, hessian == "exact")
    tol = 1e-3 if precond_type == "kron" else 1e-4
    assert (x.detach() - x_star).norm() / x_star.norm() < tol
    assert x.dtype == dtype and opt.state[x]["Q"].dtype == dtype if precond_type == "dense" else True


def test_dense_preconditioner_fits_the_inverse_hessian_and_converges_on_rosenbrock():
    A, b, _ = _quadratic(F64)
    x = torch.zeros(8, dtype=F64, requires_grad=True)
    opt = PSGD([x], lr=0.5, precond_type="dense", hessian="exact", precond_lr=1.0)
    _run(opt, x, lambda x: 0.5 * x @ A @ x - b @ x, 3000, True)
    Q = opt.state[x]["Q"]
    torch.testing.assert_close(Q.T @ Q @ A, torch.eye(8, dtype=F64), atol=1e-4, rtol=0)
    assert torch.equal(Q, Q.triu())
    y = torch.tensor([-1.5, 2.0], dtype=F64, requires_grad=True)
    opt = PSGD([y], lr=0.5, precond_type="dense", hessian="exact")
    _run(opt, y, lambda y: (1 - y[0]) ** 2 + 100 * (y[1] - y[0] ** 2) ** 2, 3000, True)
    assert (y.detach() - 1).norm() < 1e-4


def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()


def _train_mlp(model, opt, steps, create_graph):
    g = torch.Generator().manual_seed(1)
    X, Y = torch.randn(16, 4, generator=g, dtype=F64), torch.randn(16, 3, generator=g, dtype=F64)
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = ((model(X) - Y) ** 2).mean()
            loss.backward(create_graph=create_graph)
            return loss
        opt.step(closure)


@pytest.mark.parametrize("hessian", ["exact", "gradient"])
def test_state_dict_round_trip_continues_bit_identically(hessian):
    kw = dict(lr=0.05, hessian=hessian, momentum=0.5, weight_decay=1e-2, precond_update_prob=0.5, seed=3)
    cg = hessian == "exact"
    model, ref = _mlp(), _mlp()
    opt, ref_opt = PSGD(model.parameters(), **kw), PSGD(ref.parameters(), **kw)
    _train_mlp(model, opt, 6, cg)
    _train_mlp(ref, ref_opt, 10, cg)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    new = _mlp(seed=5)
    new.load_state_dict(saved["model"])
    new_opt = PSGD(new.parameters(), **{**kw, "seed": 99})
    new_opt.load_state_dict(saved["opt"])
    _train_mlp(new, new_opt, 4, cg)
    for a, b in zip(new.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def test_torch_optim_conventions():
    used, unused = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = PSGD([used, unused], hessian="gradient")
    assert len(opt.state) == 0
    def closure():
        opt.zero_grad()
        loss = (used ** 2).sum()
        loss.backward()
        return loss
    assert opt.step(closure).item() == 2.0
    assert used in opt.state and unused not in opt.state
    frozen, moving = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = PSGD([{"params": [frozen], "lr": 0.0}, {"params": [moving]}], lr=0.1, hessian="gradient")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 if i < 2 else 0.0)
    history = []
    for _ in range(4):
        opt.zero_grad()
        ((frozen ** 2).sum() + (moving ** 2).sum()).backward()
        opt.step()
        sched.step()
        history.append(moving.detach().clone())
    assert torch.equal(frozen.detach(), torch.ones(3))
    assert not torch.equal(history[1], torch.ones(3)) and torch.equal(history[2], history[3])


def test_maximize_ascends():
    x = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=F64))
    opt = PSGD([x], lr=0.5, precond_type="dense", hessian="exact", maximize=True)
    _run(opt, x, lambda x: -(x ** 2).sum(), 100, True)
    assert x.detach().abs().max() < 1e-6


def test_errors():
    x = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="lr must be >= 0.0, got -1.0"):
        PSGD([x], lr=-1.0)
    with pytest.raises(ValueError, match="precond_type must be one of"):
        PSGD([x], precond_type="lra")
    with pytest.raises(ValueError, match="hessian must be one of"):
        PSGD([x], hessian="bfgs")
    with pytest.raises(ValueError, match="precond_lr must be <= 1.0, got 1.5"):
        PSGD([x], precond_lr=1.5)
    with pytest.raises(ValueError, match="precond_update_prob must be > 0.0, got 0.0"):
        PSGD([x], precond_update_prob=0.0)
    with pytest.raises(ValueError, match="momentum must be < 1.0, got 1.0"):
        PSGD([x], momentum=1.0)
    with pytest.raises(ValueError, match="lipschitz_beta must be < 1.0, got 1.0"):
        PSGD([x], lipschitz_beta=1.0)
    with pytest.raises(ValueError, match="damping must be >= 0.0, got -1e-09"):
        PSGD([x], damping=-1e-9)
    with pytest.raises(ValueError, match="max_skew must be > 0.0, got 0.0"):
        PSGD([x], max_skew=0.0)
    opt = PSGD([x], hessian="exact")
    (x ** 2).sum().backward()
    with pytest.raises(ValueError, match="needs a closure"):
        opt.step()
    def plain_closure():
        opt.zero_grad()
        loss = (x ** 2).sum()
        loss.backward()
        return loss
    with pytest.raises(ValueError, match="called backward\\(\\) without create_graph=True"):
        opt.step(plain_closure)


@pytest.mark.parametrize("damping", [1e-9, 0.0])
@pytest.mark.parametrize("precond_type", ["kron", "dense", "diag"])
def test_exact_hessian_of_a_linear_loss_is_zero_not_a_closure_error(precond_type, damping):
    # backward(create_graph=True) of a loss linear in a parameter gives a gradient without a graph: Hv = 0 there.
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64))
    b = torch.nn.Parameter(torch.tensor([0.3], dtype=torch.float64))
    c = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    opt = PSGD([w, b], lr=1e-3, precond_type=precond_type, hessian="exact", damping=damping)

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum() + 3.0 * b.sum()  # quadratic in w, linear in b
        loss.backward(create_graph=True)
        return loss

    start = b.detach().clone()
    for _ in range(3):
        opt.step(closure)
    assert all(bool(torch.isfinite(t).all()) for t in (w, b, *opt.state[b]["Q"]) if isinstance(t, torch.Tensor))
    assert float(b) < float(start)  # descends along the constant gradient
    # Every parameter linear: still Hv = 0, no error.
    x = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    lin = PSGD([x], lr=1e-3, precond_type=precond_type, hessian="exact", damping=damping)

    def linear():
        lin.zero_grad()
        loss = (c * x).sum()
        loss.backward(create_graph=True)
        return loss

    lin.step(linear)
    assert bool(torch.isfinite(x).all()) and not torch.equal(x.detach(), torch.ones(3, dtype=torch.float64))


def test_exact_hessian_names_what_the_closure_got_wrong():
    x = torch.nn.Parameter(torch.ones(3))
    opt = PSGD([x], hessian="exact")

    def no_create_graph():  # linear too: the gradient has no graph either way
        opt.zero_grad()
        loss = x.sum()
        loss.backward()
        return loss

    with pytest.raises(ValueError, match="called backward\\(\\) without create_graph=True"):
        opt.step(no_create_graph)
    x.grad = torch.ones(3)
    with pytest.raises(ValueError, match="did not back-propagate to the parameters"):
        opt.step(lambda: x.sum().detach())
    assert len(opt.state) == 0 and torch.equal(x.detach(), torch.ones(3))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("precond_type", ["kron", "dense", "diag"])
def test_half_precision_parameters(precond_type, dtype):
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2, generator=g).to(dtype)),
              torch.nn.Parameter(torch.randn(4, generator=g).to(dtype))]
    opt = PSGD(params, lr=0.1, precond_type=precond_type, hessian="exact")

    def closure():
        opt.zero_grad()
        loss = sum(((p.float() - 0.5) ** 2).sum() for p in params)
        loss.backward(create_graph=True)
        return loss

    first = float(closure())
    for _ in range(20):
        opt.step(closure)
    assert all(p.dtype == dtype and bool(torch.isfinite(p).all()) for p in params)
    assert all(q.dtype == dtype for p in params for q in
               (opt.state[p]["Q"] if precond_type == "kron" else [opt.state[p]["Q"]]))
    assert float(closure()) < 0.5 * first
