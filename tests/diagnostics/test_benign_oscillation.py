"""Tests for paperzoo.diagnostics.benign_oscillation: data model, patch CNN, alignment, oscillation, SGD harness."""

from __future__ import annotations

import doctest
import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import paperzoo.diagnostics.benign_oscillation as bo
from paperzoo.diagnostics.benign_oscillation import (PatchCNN, feature_alignment, make_weak_strong_patch_data,
                                                     oscillation_index, train_to_loss)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: intra-op threads only add contention


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- data ----------------------------------------------------------------------------------------------------------


def test_data_structure_exact():
    a, b, sigma = 0.3, 2.0, 0.5
    data = make_weak_strong_patch_data(50, 7, 0.4, a, b, sigma, generator=_gen())
    x, y, s = data.inputs, data.targets, data.has_strong
    assert x.shape == (50, 3, 7) and y.shape == (50,) and s.dtype == torch.bool
    assert set(y.tolist()) <= {-1.0, 1.0}
    # weak patch: a y v with v = e_1, in every sample
    torch.testing.assert_close(x[:, 0], a * y[:, None] * data.weak[None, :], rtol=0, atol=0)
    # strong patch: b y u where s_i, zero elsewhere
    torch.testing.assert_close(x[:, 1], b * (y * s.double())[:, None] * data.strong[None, :], rtol=0, atol=0)
    # noise orthogonal to both feature directions
    assert float((x[:, 2] @ data.weak).abs().max()) == 0.0 and float((x[:, 2] @ data.strong).abs().max()) == 0.0
    assert float(data.weak @ data.strong) == 0.0 and float(data.weak.norm()) == 1.0


def test_data_statistics():
    n, rho, sigma = 20000, 0.2, 0.7
    data = make_weak_strong_patch_data(n, 6, rho, 0.1, 1.0, sigma, generator=_gen(1))
    frac = float(data.has_strong.double().mean())
    assert abs(frac - rho) < 4 * math.sqrt(rho * (1 - rho) / n)
    assert abs(float(data.targets.mean())) < 4 / math.sqrt(n)
    std = data.inputs[:, 2, 2:].std(dim=0)  # the noise coordinates outside span(v, u)
    assert float((std - sigma).abs().max()) < 4 * sigma / math.sqrt(2 * n)


def test_rho_zero_and_one_and_reproducible():
    none = make_weak_strong_patch_data(100, 5, 0.0, 0.1, 1.0, 0.1, generator=_gen())
    assert not bool(none.has_strong.any()) and float(none.inputs[:, 1].abs().max()) == 0.0
    every = make_weak_strong_patch_data(100, 5, 1.0, 0.1, 1.0, 0.1, generator=_gen())
    assert bool(every.has_strong.all())
    again = make_weak_strong_patch_data(100, 5, 0.0, 0.1, 1.0, 0.1, generator=_gen())
    assert torch.equal(none.inputs, again.inputs)
    f32 = make_weak_strong_patch_data(4, 5, 0.5, 0.1, 1.0, 0.1, generator=_gen(), dtype=torch.float32)
    assert f32.inputs.dtype == torch.float32 and f32.targets.dtype == torch.float32


# -- network ---------------------------------------------------------------------------------------------------------


def _loop_forward(W, x, q):
    out = []
    for i in range(x.shape[0]):
        total = 0.0
        for sgn, row in ((1.0, 0), (-1.0, 1)):
            for j in range(W.shape[1]):
                for p in range(x.shape[1]):
                    total += sgn * max(float(W[row, j] @ x[i, p]), 0.0) ** q
        out.append(total / W.shape[1])
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("q", [1.0, 2.0, 3.0])
def test_forward_matches_loop(q):
    net = PatchCNN(5, 4, power=q, init_std=1.0, generator=_gen(2))
    x = torch.randn(6, 3, 5, generator=_gen(3), dtype=torch.float64)
    torch.testing.assert_close(net(x).detach(), _loop_forward(net.weight.detach(), x, q), rtol=1e-12, atol=1e-12)


def test_gradient_closed_form():
    # d/dw_{s,j} of 0.5 mean (F - y)^2 = mean_i (F_i - y_i) (+-1/m) sum_p q relu(<w, x_ip>)^(q-1) x_ip
    q, m = 2.0, 3
    net = PatchCNN(4, m, power=q, init_std=1.0, generator=_gen(4))
    x = torch.randn(5, 3, 4, generator=_gen(5), dtype=torch.float64)
    y = torch.tensor([1.0, -1, 1, -1, 1], dtype=torch.float64)
    loss = 0.5 * ((net(x) - y) ** 2).mean()
    (g,) = torch.autograd.grad(loss, [net.weight])
    W = net.weight.detach()
    r = (net(x).detach() - y)  # (n,)
    pre = torch.einsum("smd,npd->nsmp", W, x).clamp_min(0)
    sign = torch.tensor([1.0, -1.0], dtype=torch.float64)
    expected = torch.einsum("n,s,nsmp,npd->smd", r, sign, q * pre ** (q - 1), x) / (m * x.shape[0])
    torch.testing.assert_close(g, expected, rtol=1e-12, atol=1e-12)


def test_forward_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"inputs must have shape \(n, P, 4\), got \(2, 3\)"):
        PatchCNN(4, 2)(torch.ones(2, 3, dtype=torch.float64))


# -- alignment and oscillation ---------------------------------------------------------------------------------------


def test_feature_alignment_closed_form():
    net = PatchCNN(3, 2, init_std=0.0)
    with torch.no_grad():
        net.weight[0] = torch.tensor([[1.0, 5.0, 0.0], [3.0, 0.0, 0.0]])
        net.weight[1] = torch.tensor([[-2.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
    fa = feature_alignment(net, torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64))  # normalised inside
    assert (fa.positive, fa.negative, fa.total) == (3.0, 2.0, 5.0)


def test_feature_alignment_errors():
    with pytest.raises(ValueError, match="direction must be nonzero, got the zero vector"):
        feature_alignment(PatchCNN(3, 2), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"direction must have length 3 \(the model's d\), got 4"):
        feature_alignment(PatchCNN(3, 2), torch.ones(4, dtype=torch.float64))
    with pytest.raises(TypeError, match="model must be a PatchCNN, got Linear"):
        feature_alignment(torch.nn.Linear(2, 2).double(), torch.ones(3, dtype=torch.float64))


def test_oscillation_index_values():
    assert oscillation_index(torch.tensor([4.0, 3.0, 2.0, 1.0])) == 0.0
    assert oscillation_index(torch.tensor([1.0, 2.0, 3.0])) == 1.0
    assert oscillation_index(torch.tensor([1.0, 2.0, 1.0, 2.0, 1.0])) == 0.5
    with pytest.raises(ValueError, match="losses must have at least 2 entries, got 1"):
        oscillation_index(torch.tensor([1.0]))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=40, unique=True))
def test_oscillation_index_reversal(values):
    x = torch.tensor(values, dtype=torch.float64)
    up, down = oscillation_index(x), oscillation_index(x.flip(0))
    assert 0.0 <= up <= 1.0 and math.isclose(up + down, 1.0)


# -- training harness ------------------------------------------------------------------------------------------------


def test_one_step_matches_manual_sgd():
    data = make_weak_strong_patch_data(10, 5, 0.5, 0.3, 1.0, 0.2, generator=_gen(6))
    net = PatchCNN(5, 3, init_std=0.3, generator=_gen(7))
    W0 = net.weight.detach().clone()
    run = train_to_loss(net, data.inputs, data.targets, 0.1, batch_size=4, max_steps=1, target=0.0,
                        generator=_gen(8))
    idx = torch.randint(0, 10, (4,), generator=_gen(8))
    ref = PatchCNN(5, 3, init_std=0.0)
    with torch.no_grad():
        ref.weight.copy_(W0)
    loss = 0.5 * ((ref(data.inputs[idx]) - data.targets[idx]) ** 2).mean()
    (g,) = torch.autograd.grad(loss, [ref.weight])
    torch.testing.assert_close(net.weight.detach(), W0 - 0.1 * g, rtol=1e-13, atol=1e-13)
    assert run.steps == 1 and run.losses.shape == (2,) and not run.diverged
    with torch.no_grad():
        assert math.isclose(run.final_loss, float(0.5 * ((net(data.inputs) - data.targets) ** 2).mean()))


def test_stops_at_target_and_records():
    data = make_weak_strong_patch_data(32, 8, 0.5, 0.5, 1.0, 0.1, generator=_gen(9))
    net = PatchCNN(8, 4, init_std=0.1, generator=_gen(10))
    run = train_to_loss(net, data.inputs, data.targets, 0.5, batch_size=8, max_steps=3000, target=0.1,
                        eval_every=5, generator=_gen(11))
    assert run.reached and run.final_loss <= 0.1 and run.steps % 5 == 0
    assert run.losses.shape == (run.steps // 5 + 1,) and bool((run.losses[:-1] > 0.1).all())
    short = train_to_loss(PatchCNN(8, 4, init_std=0.1, generator=_gen(10)), data.inputs, data.targets, 0.5,
                          batch_size=8, max_steps=7, target=0.0, eval_every=5, generator=_gen(11))
    assert short.steps == 7 and not short.reached and short.losses.shape == (3,)  # at 0, 5 and the last step
    done = train_to_loss(PatchCNN(8, 4, generator=_gen(10)), data.inputs, data.targets, 0.5, batch_size=8,
                         max_steps=7, target=10.0, generator=_gen(11))
    assert done.steps == 0 and done.reached


def test_divergence_warns_and_flags():
    data = make_weak_strong_patch_data(16, 5, 0.5, 1.0, 3.0, 1.0, generator=_gen(12))
    net = PatchCNN(5, 2, power=3.0, init_std=1.0, generator=_gen(13))
    with pytest.warns(RuntimeWarning, match="became non-finite at step"):
        run = train_to_loss(net, data.inputs, data.targets, 1e6, batch_size=4, max_steps=50, target=0.0,
                            generator=_gen(14))
    assert run.diverged and not run.reached and not math.isfinite(run.final_loss)


def test_argument_errors_pinned():
    data = make_weak_strong_patch_data(4, 5, 0.5, 0.1, 1.0, 0.1)
    with pytest.raises(ValueError, match=r"rho must be <= 1\.0, got 1\.5"):
        make_weak_strong_patch_data(4, 5, 1.5, 0.1, 1.0, 0.1)
    with pytest.raises(ValueError, match="d must be >= 3, got 2"):
        make_weak_strong_patch_data(4, 2, 0.5, 0.1, 1.0, 0.1)
    with pytest.raises(ValueError, match=r"power must be >= 1\.0, got 0\.5"):
        PatchCNN(3, 2, power=0.5)
    with pytest.raises(ValueError, match=r"lr must be > 0\.0, got -1\.0"):
        train_to_loss(PatchCNN(5, 2), data.inputs, data.targets, -1.0, batch_size=2, max_steps=3, target=0.0)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        train_to_loss(PatchCNN(5, 2), data.inputs, data.targets, 0.1, batch_size=0, max_steps=3, target=0.0)


def test_doctests():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = doctest.testmod(bo, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 5
