"""SMB: the model step's closed forms, a step-by-step cross-check against an independent float64 transcription
of the authors' algorithm, and the torch.optim contract rows SMB can meet (it needs a closure, so it is not in
the registry table)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from paperzoo.optim import SMB, smb_model_step


def test_model_step_on_linear_function_is_eta_times_trial_length_along_minus_gradient():
    g = torch.tensor([3.0, -4.0], dtype=torch.float64)
    s = -0.2 * g
    d = smb_model_step(s, g, g.clone(), 0.5)
    torch.testing.assert_close(d, -0.5 * s.norm() * g / g.norm())


def test_model_step_is_never_longer_than_eta_times_the_trial_step():
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        g = torch.randn(7, generator=gen, dtype=torch.float64)
        s = -float(torch.rand(1, generator=gen)) * 3 * g
        g_trial = 5 * torch.rand(1, generator=gen, dtype=torch.float64) * torch.randn(7, generator=gen,
                                                                                         dtype=torch.float64)
        assert smb_model_step(s, g, g_trial, 0.9).norm() <= 0.9 * s.norm() * (1 + 1e-12)


def test_zero_gradient_tensor_gets_a_zero_step_not_nan():
    z = torch.zeros(3)
    assert torch.equal(smb_model_step(z, z, torch.ones(3), 0.99), torch.zeros(3))


def _reference_smb(x_list, f_and_grads, lr, c, eta, steps):
    """Float64 NumPy transcription of SMB (one group, same batch), written from the paper's formulas."""
    xs = [x.copy() for x in x_list]
    for _ in range(steps):
        f, gs = f_and_grads(xs)
        ss = [-lr * g for g in gs]
        trial = [x + s for x, s in zip(xs, ss)]
        f_t, gts = f_and_grads(trial)
        gn = math.sqrt(sum(float(g @ g) for g in gs))
        if gn >= 1e-8 and f_t > f - c * lr * gn ** 2:
            new = []
            for x, s, g, gt in zip(xs, ss, gs, gts):
                y = gt - g
                sig = 0.5 * (np.linalg.norm(s) * (np.linalg.norm(y) + np.linalg.norm(g) / eta) - y @ s)
                th = (y @ s + 2 * sig) ** 2 - (s @ s) * (y @ y)
                cg = -(s @ s) / (2 * sig)
                cs = cg / th * (-(y @ s + 2 * sig) * (y @ g) + (y @ y) * (s @ g))
                cy = cg / th * (-(y @ s + 2 * sig) * (s @ g) + (s @ s) * (y @ g))
                new.append(x + cs * s + cg * g + cy * y)
            xs = new
        else:
            xs = trial
    return xs


def _objective(tensors):
    """A nonconvex function of two tensors (log-cosh-like), NumPy and torch versions."""
    a, b = tensors
    return (np.log1p((a - 1) ** 2).sum() + np.log1p((b * a[:2].sum() - 2) ** 2).sum()
            if isinstance(a, np.ndarray) else
            torch.log1p((a - 1) ** 2).sum() + torch.log1p((b * a[:2].sum() - 2) ** 2).sum())


def _np_f_and_grads(xs):
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    loss = _objective(ts)
    loss.backward()
    return float(loss.detach()), [t.grad.numpy().copy() for t in ts]


@pytest.mark.parametrize("lr", [0.05, 3.0])
def test_matches_independent_reference_step_by_step(lr):
    x0 = [np.array([3.0, -2.0, 0.5]), np.array([0.7, -1.2])]
    params = [torch.nn.Parameter(torch.tensor(x)) for x in x0]
    opt = SMB(params, lr=lr)

    def closure():
        opt.zero_grad()
        loss = _objective(params)
        loss.backward()
        return loss

    for _ in range(15):
        # One step from the optimizer's own current point: a step-by-step check that round-off cannot amplify.
        ref = _reference_smb([p.detach().numpy().copy() for p in params], _np_f_and_grads, lr, 0.1, 0.99, 1)
        opt.step(closure)
        for p, r in zip(params, ref):
            np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-12, atol=1e-14)
    if lr == 3.0:
        assert opt.state["n_model_steps"] > 0


def test_accepted_trial_steps_are_plain_sgd():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = SMB([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = 0.5 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(w.detach(), torch.tensor([0.9, -1.8], dtype=torch.float64))
    assert opt.state["n_model_steps"] == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_converges_where_sgd_diverges_and_keeps_dtype(dtype):
    w = torch.nn.Parameter(torch.tensor([2.0, -3.0], dtype=dtype))
    opt = SMB([w], lr=2.5)  # SGD on w^2 diverges for lr > 1

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    for _ in range(60):
        opt.step(closure)
    assert w.dtype == dtype and float(w.detach().abs().max()) < 1e-3


def _mlp_run(opt_state=None, steps=8):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    opt = SMB(model.parameters(), lr=1.0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randn(16, 3, generator=g, dtype=torch.float64)

    def closure():
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    return model, opt, closure


def test_state_dict_round_trip_continues_bit_identically():
    model, opt, closure = _mlp_run()
    for _ in range(6):
        opt.step(closure)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    for _ in range(6):
        opt.step(closure)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    model2, opt2, closure2 = _mlp_run()
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    for _ in range(6):
        opt2.step(closure2)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    assert opt2.state["n_steps"] == opt.state["n_steps"] == 12


def test_zero_lr_group_stays_frozen_even_on_model_steps():
    frozen, moving = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = SMB([{"params": [frozen], "lr": 0.0}, {"params": [moving]}], lr=5.0)

    def closure():
        opt.zero_grad()
        loss = (frozen ** 2).sum() + (moving ** 2).sum()
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    assert torch.equal(frozen.detach(), torch.ones(3))
    assert opt.state["n_model_steps"] > 0 and not torch.equal(moving.detach(), torch.ones(3))


def test_step_returns_the_starting_loss_and_needs_a_closure():
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = SMB([w])
    with pytest.raises(ValueError, match="SMB needs a closure"):
        opt.step()

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 1.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=-1.0), "lr must be >= 0.0, got -1.0"),
    (dict(c=1.0), "c must be < 1.0, got 1.0"),
    (dict(eta=0.0), "eta must be > 0.0, got 0.0"),
    (dict(grad_tol=-1.0), "grad_tol must be >= 0.0, got -1.0"),
])
def test_invalid_hyperparameters_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SMB([torch.nn.Parameter(torch.ones(1))], **kwargs)


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_nonfinite_trial_gradient_puts_the_parameters_back(policy):
    from paperzoo.optim import NonFiniteGradientError
    w = torch.nn.Parameter(torch.tensor([2.0, -3.0]))
    opt = SMB([w], lr=0.3, nonfinite=policy)
    calls = []

    def closure():
        # Finite at x, a NaN gradient at the trial point x + s.
        calls.append(1)
        opt.zero_grad()
        loss = (w ** 2).sum() + (w[0] * float("nan") if len(calls) == 2 else 0.0)
        loss.backward()
        return loss

    if policy == "raise":
        with pytest.raises(NonFiniteGradientError, match="NaN or inf"):
            opt.step(closure)
    else:
        opt.step(closure)
        assert opt.skipped_steps == 1
    assert len(calls) == 2
    assert torch.equal(w.detach(), torch.tensor([2.0, -3.0]))
    assert torch.equal(w.grad, torch.tensor([4.0, -6.0]))
    assert opt.state["n_steps"] == 0 and opt.state["n_model_steps"] == 0
