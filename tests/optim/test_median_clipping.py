"""MedianTrackingSGD and the SPP medians: against Weiszfeld and torch.median, closed forms, contract, errors."""

from __future__ import annotations

import io
import math

import pytest
import torch

from paperzoo.optim import MedianTrackingSGD, geometric_median_spp, weiszfeld_geometric_median
from paperzoo.optim.clipping import clip_by_norm


def _cloud(n=201, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, d, generator=g, dtype=torch.float64)
    s[:20] += 40.0  # outliers: the median must not follow them, the mean does
    return s


def test_spp_geometric_median_matches_weiszfeld():
    s = _cloud()
    ref = weiszfeld_geometric_median(s)
    assert ref.converged
    # Weiszfeld's point is stationary: the unit vectors towards the samples cancel.
    diff = s - ref.median
    assert float((diff / diff.norm(dim=1, keepdim=True)).sum(0).norm()) < 1e-6 * len(s)
    res = geometric_median_spp(s, max_iter=60, tol=1e-3, generator=torch.Generator().manual_seed(0))
    scale = float((s - s.mean(0)).norm(dim=1).pow(2).mean().sqrt())
    assert float((res.median - ref.median).norm()) < 1e-2 * scale
    assert float((s.mean(0) - ref.median).norm()) > 10 * float((res.median - ref.median).norm())
    assert res.history[-1] <= res.history[0] + 1e-3


def test_spp_coordinate_median_matches_torch_median():
    s = _cloud(seed=1)
    with pytest.warns(RuntimeWarning, match="raise max_iter or step_size"):
        res = geometric_median_spp(s, mode="coordinate", max_iter=40, tol=0.0,
                                   generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(res.median, s.median(dim=0).values, rtol=0, atol=0.05)
    assert res.n_iter == 40 and not res.converged


def test_median_tracking_first_step_is_clipped_sgd_and_tracks_median():
    g = torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64)
    x = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = MedianTrackingSGD([x], lr=0.1, tau=1.0)
    x.grad = g.clone()
    opt.step()
    (clipped,), _ = clip_by_norm([g], 1.0)
    torch.testing.assert_close(x.detach(), -0.1 * clipped)
    # Coordinate mode: m moves by at most tau per coordinate towards g.
    y = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = MedianTrackingSGD([y], lr=1.0, tau=1.0, mode="coordinate")
    y.grad = torch.tensor([3.0, -0.5, 0.0], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(y.detach(), -torch.tensor([1.0, -0.5, 0.0], dtype=torch.float64))
    # Fed samples of a fixed law with lr = 0, m is SPP on them: it settles near their coordinate median.
    z = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = MedianTrackingSGD([z], lr=0.0, tau=0.01, mode="coordinate")
    gen = torch.Generator().manual_seed(0)
    for _ in range(3000):
        z.grad = 1.0 + torch.tan(math.pi * (torch.rand(2, generator=gen, dtype=torch.float64) - 0.5))  # Cauchy(1)
        opt.step()
    torch.testing.assert_close(opt.state[z]["median"], torch.ones(2, dtype=torch.float64), rtol=0, atol=0.15)


@pytest.mark.parametrize("mode", ["geometric", "coordinate"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_median_tracking_contract(mode, dtype):
    g = torch.Generator().manual_seed(0)
    M = torch.randn(6, 6, generator=g, dtype=torch.float64)
    A = (M @ M.T / 6 + torch.eye(6, dtype=torch.float64)).to(dtype)
    b = torch.randn(6, generator=g, dtype=torch.float64).to(dtype)
    x_star = torch.linalg.solve(A, b)

    def run(steps, foreach, x=None, opt=None):
        if x is None:
            x = torch.zeros(6, dtype=dtype, requires_grad=True)
            opt = MedianTrackingSGD([x], lr=0.05, tau=0.5, mode=mode, foreach=foreach, weight_decay=0.0)
        for _ in range(steps):
            def closure():
                opt.zero_grad()
                loss = 0.5 * x @ A @ x - b @ x
                loss.backward()
                return loss

            opt.step(closure)
        return x, opt

    x, opt = run(800, False)
    assert float((x.detach() - x_star).norm() / x_star.norm()) < 1e-3
    x2, _ = run(800, True)
    assert torch.equal(x.detach(), x2.detach())
    assert opt.state[x]["median"].dtype == dtype
    # state_dict round trip mid-run continues bit-identically
    xa, oa = run(10, False)
    buf = io.BytesIO()
    torch.save(oa.state_dict(), buf)
    buf.seek(0)
    xb = xa.detach().clone().requires_grad_(True)
    ob = MedianTrackingSGD([xb], lr=0.05, tau=0.5, mode=mode)
    ob.load_state_dict(torch.load(buf, weights_only=False))
    run(5, None, xa, oa)
    run(5, None, xb, ob)
    assert torch.equal(xa.detach(), xb.detach())


def test_median_tracking_groups_and_maximize():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = MedianTrackingSGD([{"params": [a], "lr": 0.0}, {"params": [b], "maximize": True}], lr=0.1, tau=10.0)
    a.grad, b.grad = torch.ones(2), torch.ones(2)
    opt.step()
    assert torch.equal(a.detach(), torch.ones(2))
    torch.testing.assert_close(b.detach(), torch.full((2,), 1.1))


def test_median_errors():
    w = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="tau must be > 0.0, got 0.0"):
        MedianTrackingSGD([w], tau=0.0)
    with pytest.raises(ValueError, match="lr must be >= 0.0, got -1.0"):
        MedianTrackingSGD([w], lr=-1.0)
    with pytest.raises(ValueError, match=r"mode must be one of \['geometric', 'coordinate'\], got 'mean'"):
        MedianTrackingSGD([w], mode="mean")
    with pytest.raises(ValueError, match="samples must have 2 dimension"):
        geometric_median_spp(torch.ones(3))
    with pytest.raises(ValueError, match="samples must be finite"):
        geometric_median_spp(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="step_size must be > 0.0, got -1.0"):
        geometric_median_spp(torch.ones(3, 2), step_size=-1.0)
    with pytest.raises(ValueError, match=r"init must have d = 2 \(from samples\) in its shape \(d,\), got shape \(3,\)"):
        geometric_median_spp(torch.ones(3, 2), init=torch.ones(3))
