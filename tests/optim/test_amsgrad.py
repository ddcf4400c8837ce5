"""AMSGrad: bit-identical to torch.optim.Adam(amsgrad=True), the paper's form written out, and bad input."""

from __future__ import annotations

import pytest
import torch

from paperzoo.optim import AMSGrad


def _problem(dtype, complex_=False):
    g = torch.Generator().manual_seed(0)
    shapes = [(6, 4), (9,), (3, 1, 2)]
    params = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    mats = [torch.randn(p.numel(), p.numel(), generator=g, dtype=dtype) for p in params]
    if complex_:
        params = [torch.complex(p, torch.randn(p.shape, generator=g, dtype=dtype)) for p in params]
        mats = [m.to(params[0].dtype) for m in mats]

    def loss(ps):
        return sum((((a @ p.reshape(-1)) - 1).abs() ** 2).sum() for a, p in zip(mats, ps))

    return params, loss


def _trajectory(make, *, steps, dtype=torch.float32, complex_=False):
    params, loss = _problem(dtype, complex_)
    params = [p.clone().requires_grad_(True) for p in params]
    opt = make(params)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: (i + 1.0) ** -0.5)
    for _ in range(steps):
        opt.zero_grad()
        loss(params).backward()
        opt.step()
        sched.step()
    return [p.detach() for p in params], opt


VARIANTS = {
    "default": {},
    "l2-decay": dict(weight_decay=0.1),
    "decoupled-decay": dict(weight_decay=0.1, decoupled_weight_decay=True),
    "maximize-betas": dict(maximize=True, betas=(0.5, 0.9), eps=1e-6),
}


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_torch_adam_amsgrad(variant, foreach, dtype):
    kwargs = dict(lr=1e-2, foreach=foreach, **VARIANTS[variant])
    ours, opt = _trajectory(lambda ps: AMSGrad(ps, **kwargs), steps=120, dtype=dtype)
    theirs, ref = _trajectory(lambda ps: torch.optim.Adam(ps, amsgrad=True, **kwargs), steps=120, dtype=dtype)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    # Same state names and values as torch's, so users can inspect either the same way.
    for p, q in zip(opt.state, ref.state):
        for key in ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert torch.equal(opt.state[p][key], ref.state[q][key])


def test_equals_torch_adam_amsgrad_on_complex_parameters():
    ours, _ = _trajectory(lambda ps: AMSGrad(ps, lr=1e-2), steps=30, complex_=True)
    theirs, _ = _trajectory(lambda ps: torch.optim.Adam(ps, lr=1e-2, amsgrad=True), steps=30, complex_=True)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_paper_form_matches_algorithm_2_written_out():
    """bias_correction=False: x -= lr * m / (sqrt(max(v)) + eps), with hand-rolled float64 arithmetic."""
    lr, b1, b2, eps = 0.1, 0.9, 0.99, 1e-8
    grads = [2.0, -0.5, 3.0, 0.1, -4.0, 1.0]
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = AMSGrad([x], lr=lr, betas=(b1, b2), eps=eps, bias_correction=False)
    xs, m, v, v_hat = 0.0, 0.0, 0.0, 0.0
    for g in grads:
        x.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        v_hat = max(v_hat, v)
        xs = xs - lr * m / (v_hat**0.5 + eps)
        assert x.item() == pytest.approx(xs, rel=1e-12, abs=1e-15)


def test_second_moment_maximum_never_decreases():
    w = torch.nn.Parameter(torch.zeros(3))
    opt = AMSGrad([w], betas=(0.0, 0.5))
    previous = torch.zeros(3)
    for g in ([5.0, 1.0, 0.0], [0.0, 0.1, 2.0], [1.0, 3.0, 0.0]):
        w.grad = torch.tensor(g)
        opt.step()
        current = opt.state[w]["max_exp_avg_sq"].clone()
        assert bool((current >= previous).all())
        assert bool((current >= opt.state[w]["exp_avg_sq"]).all())
        previous = current


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(lr=-1.0), ValueError, r"^lr must be >= 0.0, got -1.0$"),
        (dict(betas=(0.9, 1.0)), ValueError, r"^betas\[1\] must be < 1.0, got 1.0$"),
        (dict(betas=(-0.5, 0.9)), ValueError, r"^betas\[0\] must be >= 0.0, got -0.5$"),
        (dict(betas=(0.9, 0.99, 0.999)), ValueError, r"^betas must be a pair \(beta1, beta2\), got 3 values$"),
        (dict(eps=-1e-8), ValueError, r"^eps must be > 0.0, got -1e-08$"),
        (dict(eps=0.0), ValueError, r"^eps must be > 0.0, got 0.0$"),
        (dict(weight_decay=float("inf")), ValueError, r"^weight_decay must be finite, got inf$"),
        (dict(bias_correction=None), TypeError, r"^bias_correction must be a bool, got NoneType$"),
        (dict(decoupled_weight_decay=0), TypeError, r"^decoupled_weight_decay must be a bool, got int$"),
        (dict(lr="0.1"), TypeError, r"^lr must be a real number, got str$"),
    ],
)
def test_rejects_bad_hyperparameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        AMSGrad([torch.nn.Parameter(torch.zeros(1))], **kwargs)


def test_validates_per_group_overrides_and_rejects_sparse_gradients():
    p = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match=r"^weight_decay must be >= 0.0, got -1.0$"):
        AMSGrad([{"params": [p], "weight_decay": -1.0}])
    emb = torch.nn.Embedding(3, 2, sparse=True)
    opt = AMSGrad(emb.parameters())
    emb(torch.tensor([0])).sum().backward()
    with pytest.raises(TypeError, match="AMSGrad does not support sparse gradients"):
        opt.step()


def test_docstring_example_runs():
    import doctest

    import paperzoo.optim.amsgrad as module

    assert doctest.testmod(module).failed == 0
