"""ADOPT: against the authors' torch-adopt package, against the paper's equations, and on bad input."""

from __future__ import annotations

import warnings

import pytest
import torch

from paperzoo.optim import ADOPT, adopt_clip

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    reference = pytest.importorskip("adopt")


def _problem(dtype, complex_=False):
    """Three parameter tensors of different shapes, each with its own random least-squares loss."""
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (7,), (2, 2, 2)]
    params = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    mats = [torch.randn(p.numel(), p.numel(), generator=g, dtype=dtype) for p in params]
    if complex_:
        params = [torch.complex(p, torch.randn(p.shape, generator=g, dtype=dtype)) for p in params]
        mats = [m.to(params[0].dtype) for m in mats]

    def loss(ps):
        return sum((((a @ p.reshape(-1)) - 1).abs() ** 2).sum() for a, p in zip(mats, ps))

    return params, loss


def _trajectory(cls, kwargs, *, steps=100, dtype=torch.float32, complex_=False):
    params, loss = _problem(dtype, complex_)
    params = [p.clone().requires_grad_(True) for p in params]
    opt = cls(params, **kwargs)
    for _ in range(steps):
        opt.zero_grad()
        loss(params).backward()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch-adopt's deprecation warnings
            opt.step()
    return [p.detach() for p in params]


VARIANTS = {
    "default": {},
    "l2-decay": dict(weight_decay=0.1),
    "decoupled-decay": dict(weight_decay=0.1, decouple=True),
    "unclipped": dict(clip_lambda=None),
    "unclipped-decoupled": dict(clip_lambda=None, weight_decay=0.1, decouple=True),
    "maximize-betas": dict(maximize=True, betas=(0.5, 0.9)),
}


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torch_adopt(variant, foreach, dtype):
    kwargs = dict(lr=1e-2, foreach=foreach, **VARIANTS[variant])
    ours = _trajectory(ADOPT, kwargs, dtype=dtype)
    theirs = _trajectory(reference.ADOPT, kwargs, dtype=dtype)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def test_matches_torch_adopt_on_complex_parameters():
    ours = _trajectory(ADOPT, dict(lr=1e-2), steps=30, complex_=True)
    theirs = _trajectory(reference.ADOPT, dict(lr=1e-2), steps=30, complex_=True)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def test_matches_the_papers_update_written_out():
    """Algorithm 2 on a scalar with hand-rolled arithmetic, float64, including the step-0 initialisation."""
    lr, b1, b2, eps = 0.1, 0.9, 0.99, 1e-6
    grads = [2.0, -0.5, 3.0, 0.1, 40.0, -1.0]
    theta = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = ADOPT([theta], lr=lr, betas=(b1, b2), eps=eps)
    th, m, v = 0.0, 0.0, grads[0] ** 2
    for t, g in enumerate(grads):
        theta.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        if t > 0:
            c = t**0.25
            m = b1 * m + (1 - b1) * min(max(g / max(v**0.5, eps), -c), c)
            th = th - lr * m
            v = b2 * v + (1 - b2) * g * g
        assert theta.item() == pytest.approx(th, rel=1e-12, abs=1e-15)
    assert opt.state[theta]["exp_avg_sq"].item() == pytest.approx(v, rel=1e-12)


def test_first_step_only_initialises_second_moment():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = ADOPT([w], lr=1.0, weight_decay=0.5, decouple=True)
    w.grad = torch.tensor([3.0, 0.5])
    opt.step()
    assert torch.equal(w.detach(), torch.tensor([1.0, -2.0]))
    assert torch.equal(opt.state[w]["exp_avg_sq"], torch.tensor([9.0, 0.25]))
    assert torch.equal(opt.state[w]["exp_avg"], torch.zeros(2))
    assert opt.state[w]["step"].item() == 1


def test_clip_lambda_receives_the_papers_t_and_bounds_the_update():
    seen = []

    def clip(t):
        seen.append(t)
        return 0.5

    w = torch.nn.Parameter(torch.zeros(3))
    opt = ADOPT([w], lr=1.0, betas=(0.0, 0.5), clip_lambda=clip)
    for g in ([1.0, 1.0, 1.0], [100.0, -100.0, 0.1], [1.0, 1.0, 1.0]):
        before = w.detach().clone()
        w.grad = torch.tensor(g)
        opt.step()
        # beta1 = 0: the step is exactly lr times the clipped normalised gradient.
        assert (w.detach() - before).abs().max() <= 0.5
    assert seen == [1, 2]
    assert adopt_clip(16) == 2.0


def test_foreach_handles_parameters_at_different_step_counts():
    """A parameter that starts receiving gradients late is at its own step 0 (initialisation only)."""
    results = []
    for foreach in (False, True):
        early, late = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4))
        opt = ADOPT([early, late], lr=0.1, foreach=foreach)
        for i in range(6):
            early.grad = torch.full((4,), 1.0 + i)
            late.grad = torch.full((4,), 2.0 - i) if i >= 3 else None
            opt.step()
        results.append((early.detach(), late.detach(), opt.state[late]["step"].item()))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert results[0][2] == 3.0


def test_per_group_clip_lambda():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = ADOPT([{"params": [a]}, {"params": [b], "clip_lambda": None}], lr=1.0, betas=(0.0, 0.5))
    for g in (1e-3, 10.0):
        a.grad, b.grad = torch.tensor([g]), torch.tensor([g])
        opt.step()
    assert a.item() == pytest.approx(-1.0)  # clipped at c_1 = 1
    assert b.item() == pytest.approx(-1e4)  # 10 / sqrt(1e-6)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(lr=-1.0), ValueError, r"^lr must be >= 0.0, got -1.0$"),
        (dict(lr=float("nan")), ValueError, r"^lr must be finite, got nan$"),
        (dict(betas=(1.0, 0.9)), ValueError, r"^betas\[0\] must be < 1.0, got 1.0$"),
        (dict(betas=(0.9, -0.1)), ValueError, r"^betas\[1\] must be >= 0.0, got -0.1$"),
        (dict(betas=(0.9,)), ValueError, r"^betas must be a pair \(beta1, beta2\), got 1 values$"),
        (dict(betas=0.9), TypeError, r"^betas must be a pair \(beta1, beta2\), got float$"),
        (dict(eps=0.0), ValueError, r"^eps must be > 0.0, got 0.0$"),
        (dict(weight_decay=-0.1), ValueError, r"^weight_decay must be >= 0.0, got -0.1$"),
        (dict(clip_lambda=3.0), TypeError, r"^clip_lambda must be callable, 'adopt' or None, got 3\.0$"),
        (dict(decouple=1), TypeError, r"^decouple must be a bool, got int$"),
        (dict(maximize="no"), TypeError, r"^maximize must be a bool, got str$"),
        (dict(foreach=1), TypeError, r"^foreach must be a bool, got int$"),
    ],
)
def test_rejects_bad_hyperparameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        ADOPT([torch.nn.Parameter(torch.zeros(1))], **kwargs)


def test_validates_per_group_overrides():
    p = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match=r"^lr must be >= 0.0, got -1.0$"):
        ADOPT([{"params": [p], "lr": -1.0}])
    opt = ADOPT([p])
    with pytest.raises(ValueError, match=r"^betas\[1\] must be < 1.0, got 1.0$"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "betas": (0.9, 1.0)})


def test_rejects_bad_clip_value_and_sparse_gradients():
    w = torch.nn.Parameter(torch.zeros(2))
    opt = ADOPT([w], clip_lambda=lambda t: -1.0)
    for _ in range(2):
        w.grad = torch.ones(2)
        if opt.state and opt.state[w]["step"].item() >= 1:
            with pytest.raises(ValueError, match=r"^clip_lambda\(1\) must be >= 0.0, got -1.0$"):
                opt.step()
        else:
            opt.step()
    emb = torch.nn.Embedding(3, 2, sparse=True)
    opt = ADOPT(emb.parameters())
    emb(torch.tensor([0])).sum().backward()
    with pytest.raises(TypeError, match="ADOPT does not support sparse gradients"):
        opt.step()


def test_docstring_example_runs():
    import doctest

    import paperzoo.optim.adopt as module

    assert doctest.testmod(module).failed == 0
