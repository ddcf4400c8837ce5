"""Multisample flow matching: the batch OT coupling and the path against torchcfm, marginals, the loss hookup."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from paperzoo.diffusion.multisample_flow_matching import batch_ot_coupling, flow_path, multisample_fm_batch
from paperzoo.diffusion.training import MLPDenoiser, denoising_loss

D = torch.float64


def test_path_and_target_match_torchcfm_with_time_reversed():
    from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

    g = torch.Generator().manual_seed(0)
    x0, noise, t = torch.randn(32, 2, generator=g, dtype=D), torch.randn(32, 2, generator=g, dtype=D), torch.rand(32, generator=g, dtype=D)
    # torchcfm runs from its source x0 (our noise) at t = 0 to data x1 at t = 1: our time is 1 - its time.
    _, xt, ut = ConditionalFlowMatcher(sigma=0.0).sample_location_and_conditional_flow(noise, x0, t=1 - t)
    ours_x, ours_u = flow_path(x0, noise, t)
    torch.testing.assert_close(ours_x, xt, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours_u, -ut, rtol=1e-12, atol=1e-12)


def test_batch_ot_coupling_is_torchcfms_exact_plan_and_optimal():
    from torchcfm.optimal_transport import OTPlanSampler

    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(40, 2, generator=g, dtype=D), torch.randn(40, 2, generator=g, dtype=D)
    perm = batch_ot_coupling(x0, noise)
    plan = OTPlanSampler(method="exact").get_map(x0, noise)
    ours = np.zeros((40, 40))
    ours[np.arange(40), perm.numpy()] = 1 / 40
    np.testing.assert_allclose(ours, plan, atol=1e-12)
    # brute force on a small batch: no permutation has a lower cost
    a, b = x0[:6], noise[:6]
    best = min(float(((a - b[list(p)]) ** 2).sum()) for p in itertools.permutations(range(6)))
    assert float(((a - b[batch_ot_coupling(a, b)]) ** 2).sum()) == pytest.approx(best, rel=1e-12)


def test_coupled_noise_keeps_its_marginal():
    # A permutation of the drawn noise: the batch's noise is the same multiset, so E[eps] = 0 and Cov = I hold.
    x0 = torch.randn(256, 2, generator=torch.Generator().manual_seed(2), dtype=D) + 3.0
    ind, _ = multisample_fm_batch(x0, "independent", generator=torch.Generator().manual_seed(3))
    ot, sigma = multisample_fm_batch(x0, "ot", generator=torch.Generator().manual_seed(3))
    assert torch.equal(ind.sort(0).values, ot.sort(0).values)
    assert bool((sigma > 0).all()) and bool(torch.isfinite(sigma).all())
    # the OT pairs are closer than the independent ones
    assert float(((x0 - ot) ** 2).sum()) < float(((x0 - ind) ** 2).sum())


def test_loss_target_is_the_path_velocity():
    net = MLPDenoiser(2, 8, 1, prediction="flow").double()
    x0 = torch.randn(16, 2, dtype=D)
    noise, sigma = multisample_fm_batch(x0, "ot", generator=torch.Generator().manual_seed(4))
    t = sigma / (1 + sigma)
    xt, u = flow_path(x0, noise, t)
    expected = ((net(xt, sigma) - u) ** 2).mean()
    torch.testing.assert_close(denoising_loss(net, x0, sigma, noise=noise), expected)


def test_bad_input():
    with pytest.raises(ValueError, match="t must be in"):
        flow_path(torch.zeros(2, 1, dtype=D), torch.zeros(2, 1, dtype=D), torch.tensor([0.5, 1.5], dtype=D))
    with pytest.raises(ValueError, match="coupling must be one of"):
        multisample_fm_batch(torch.zeros(4, 2, dtype=D), "sinkhorn")
    with pytest.raises(ValueError, match="noise"):
        batch_ot_coupling(torch.zeros(4, 2, dtype=D), torch.zeros(3, 2, dtype=D))
