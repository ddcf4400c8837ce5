"""gd_trajectory: closed forms on quadratics, schedules, noise, divergence flags, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.data.quadratics import quadratic_with_sharp_wells
from paperzoo.diagnostics.trajectories import gd_trajectory


def _quad(x):
    return 0.5 * 3.0 * x.square().sum(-1)


def test_gd_on_quadratic_matches_closed_form():
    x0 = torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=torch.float64)
    traj = gd_trajectory(_quad, x0, 0.1, 10, record_every=5)
    assert torch.allclose(traj.x, x0 * 0.7**10)
    assert traj.steps.tolist() == [0, 5, 10] and traj.iterates.shape == (3, 2, 2)
    assert torch.allclose(traj.losses[-1], _quad(x0 * 0.7**10))
    assert not traj.diverged.any()


def test_schedule_and_noise():
    x0 = torch.ones(3, 1, dtype=torch.float64)
    traj = gd_trajectory(_quad, x0, lambda t: 0.1 if t < 2 else 0.0, 5)
    assert torch.allclose(traj.x, x0 * 0.7**2)
    a = gd_trajectory(_quad, x0, 0.1, 5, noise_std=1.0, generator=torch.Generator().manual_seed(0))
    b = gd_trajectory(_quad, x0, 0.1, 5, noise_std=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.x, b.x) and not torch.allclose(a.x, traj.x)


def test_divergence_is_flagged_per_run():
    x0 = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    traj = gd_trajectory(lambda x: x.pow(4).sum(-1), x0, 10.0, 20)
    assert traj.diverged.tolist() == [True, False]
    assert torch.isnan(traj.x[0]).all() and traj.x[1].item() == 0.0


def test_large_step_escapes_sharp_well_small_step_stays():
    f = quadratic_with_sharp_wells(torch.tensor([[1.0]], dtype=torch.float64))
    x0 = torch.tensor([[1.02]], dtype=torch.float64)
    assert abs(gd_trajectory(f, x0, 0.5, 200).x.item()) < 1e-6
    assert abs(gd_trajectory(f, x0, 0.005, 2000).x.item() - 1.0) < 0.01


def test_bad_input_messages():
    with pytest.raises(ValueError, match="x0 must have 2 dimension"):
        gd_trajectory(_quad, torch.ones(3), 0.1, 1)
    with pytest.raises(ValueError, match="lr must be >= 0.0, got -1.0"):
        gd_trajectory(_quad, torch.ones(3, 1), -1.0, 1)
    with pytest.raises(ValueError, match=r"lr\(1\) must be >= 0.0, got -0.1"):
        gd_trajectory(_quad, torch.ones(3, 1), lambda t: 0.1 if t == 0 else -0.1, 3)
    with pytest.raises(TypeError, match="lr must be a real number, got str"):
        gd_trajectory(_quad, torch.ones(3, 1), "0.1", 1)
    with pytest.raises(ValueError, match=r"f must return shape \(3,\)"):
        gd_trajectory(lambda x: x.sum(), torch.ones(3, 1), 0.1, 1)
    with pytest.raises(TypeError, match="f must be callable"):
        gd_trajectory(3, torch.ones(3, 1), 0.1, 1)
    with pytest.raises(TypeError, match="f must return a torch.Tensor, got float"):
        gd_trajectory(lambda x: 1.0, torch.ones(3, 1), 0.1, 1)
    with pytest.raises(TypeError, match="f must return a torch.Tensor, got float"):
        gd_trajectory(lambda x: 1.0, torch.ones(3, 1), 0.1, 0)
    with pytest.raises(ValueError, match="f must be differentiable in x"):
        gd_trajectory(lambda x: x.detach().sum(-1), torch.ones(3, 1), 0.1, 1)
    with pytest.raises(ValueError, match="x0 must be finite"):
        gd_trajectory(_quad, torch.tensor([[float("nan")]]), 0.1, 1)
    with pytest.raises(ValueError, match=r"x0 must not be empty \(n = 0\)"):
        gd_trajectory(_quad, torch.ones(0, 2), 0.1, 1)
    with pytest.raises(ValueError, match="record_every must be >= 1, got 0"):
        gd_trajectory(_quad, torch.ones(3, 1), 0.1, 1, record_every=0)
    with pytest.raises(ValueError, match="noise_std must be finite, got nan"):
        gd_trajectory(_quad, torch.ones(3, 1), 0.1, 1, noise_std=float("nan"))


def test_constant_in_x_and_zero_steps():
    w = torch.tensor(2.0, requires_grad=True)
    traj = gd_trajectory(lambda x: w * torch.ones(x.shape[0]), torch.ones(2, 1), 0.1, 3)
    assert torch.equal(traj.x, torch.ones(2, 1)) and not traj.diverged.any()
    traj = gd_trajectory(_quad, torch.ones(2, 1), 0.1, 0)
    assert traj.steps.tolist() == [0] and traj.losses.shape == (1, 2)


@settings(max_examples=25, deadline=None)
@given(lr=st.floats(1e-3, 0.6), steps=st.integers(0, 12), record_every=st.integers(1, 5),
       x0=st.lists(st.floats(-5, 5), min_size=1, max_size=4))
def test_quadratic_closed_form_property(lr, steps, record_every, x0):
    """On f = 3|x|^2/2, GD is x_t = (1 - 3 lr)^t x_0 exactly; records land on multiples of record_every and T."""
    start = torch.tensor(x0, dtype=torch.float64).unsqueeze(-1)
    traj = gd_trajectory(_quad, start, lr, steps, record_every=record_every)
    torch.testing.assert_close(traj.x, start * (1 - 3 * lr) ** steps, rtol=1e-10, atol=1e-12)
    expected = sorted({0, steps} | set(range(record_every, steps + 1, record_every)))
    assert traj.steps.tolist() == expected
    assert traj.iterates.shape == (len(expected), len(x0), 1) and traj.losses.shape == (len(expected), len(x0))
    assert bool(torch.isfinite(traj.losses).all()) and not traj.diverged.any()
