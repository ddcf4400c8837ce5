"""DDO: the loss against a hand computation, its minimizer on exact-likelihood families, the first-order identity
at theta = ref, the diffusion surrogate against the substrate's denoising loss, a self-play round, pinned errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.ddo import ddo_log_ratio, ddo_loss, ddo_round
from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle
from paperzoo.diffusion.training import MLPDenoiser, _denoising_loss

D = torch.float64


def _sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_loss_matches_hand_computation():
    real, fake = [0.3, -1.2], [0.5, 2.0, -0.7]
    alpha, beta = 2.0, 0.5
    want = (-sum(math.log(_sig(beta * r)) for r in real) / 2
            - alpha * sum(math.log(1 - _sig(beta * r)) for r in fake) / 3)
    got = ddo_loss(torch.tensor(real, dtype=D), torch.tensor(fake, dtype=D), alpha, beta)
    assert float(got) == pytest.approx(want, rel=1e-14)
    assert got.dtype == D and got.ndim == 0


def test_loss_is_stable_for_huge_ratios():
    r = torch.tensor([1e4, -1e4], dtype=torch.float32)
    value = ddo_loss(r, r)
    assert torch.isfinite(value) and float(value) == pytest.approx(1e4 / 2 * 2, rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-20, 20), min_size=1, max_size=6), st.lists(st.floats(-20, 20), min_size=1, max_size=6),
       st.floats(0.05, 5.0))
def test_loss_swap_symmetry(real, fake, beta):
    """With alpha = 1, data and fakes swap roles under r -> -r: L(a, b) = L(-b, -a) >= 0."""
    a, b = torch.tensor(real, dtype=D), torch.tensor(fake, dtype=D)
    left, right = ddo_loss(a, b, 1.0, beta), ddo_loss(-b, -a, 1.0, beta)
    assert float(left) == pytest.approx(float(right), rel=1e-12, abs=1e-12)
    assert float(left) >= 0


def _quadrature(gm_data, ref_weights):
    """Per-component log densities of the data's components, the reference's log density and the data density on
    a fine 1-D grid (for the exact loss over learnable weights)."""
    x = torch.linspace(-12, 12, 4001, dtype=D)[:, None]
    log_comp = torch.stack([GaussianMixture(gm_data.means[k:k + 1], gm_data.covs[k:k + 1]).log_prob(x)
                            for k in range(gm_data.n_components)], -1)
    return log_comp, torch.logsumexp(log_comp + ref_weights.log(), -1), gm_data.log_prob(x).exp(), 24 / 4000


def _grid_mixture_loss(logits, quad, alpha=1.0, beta=1.0):
    log_comp, log_ref, p_data, dx = quad
    r = torch.logsumexp(log_comp + torch.log_softmax(logits, 0), -1) - log_ref
    return (-(p_data * F.logsigmoid(beta * r)).sum() * dx
            - alpha * (log_ref.exp() * F.logsigmoid(-beta * r)).sum() * dx)


def test_minimizer_is_the_data_law_on_a_mixture_family():
    """Learnable weights of the data's own (overlapping) components, a wrong reference: the minimizer of the exact
    loss at alpha = beta = 1 is the data's weights, and the data law beats the reference and a perturbation."""
    w_data = torch.tensor([0.6, 0.1, 0.3], dtype=D)
    gm = GaussianMixture(torch.tensor([[-1.5], [0.0], [1.8]], dtype=D), torch.full((3, 1, 1), 0.5, dtype=D), w_data)
    ref = torch.tensor([0.2, 0.5, 0.3], dtype=D)
    quad = _quadrature(gm, ref)
    logits = torch.zeros(3, dtype=D, requires_grad=True)
    opt = torch.optim.LBFGS([logits], max_iter=200, tolerance_grad=1e-13, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = _grid_mixture_loss(logits, quad)
        value.backward()
        return value

    opt.step(closure)
    assert torch.softmax(logits.detach(), 0) == pytest.approx(w_data, abs=1e-6)
    at_data = float(_grid_mixture_loss(w_data.log(), quad))
    assert at_data < float(_grid_mixture_loss(ref.log(), quad))
    assert at_data < float(_grid_mixture_loss((w_data + torch.tensor([0.05, 0.0, -0.05], dtype=D)).log(), quad))
    # the optimal discriminator's value: 2 log 2 - 2 JS(p_data, p_ref)
    assert at_data < 2 * math.log(2)


@pytest.mark.parametrize("alpha,beta", [(1.0, 2.0), (2.0, 1.0)])
def test_minimizer_moves_off_the_data_law_at_other_constants(alpha, beta):
    """A 3-point law: only alpha = beta = 1 recovers p_data (the module docstring's statement)."""
    p_data, p_ref = torch.tensor([0.5, 0.3, 0.2], dtype=D), torch.tensor([0.2, 0.3, 0.5], dtype=D)
    z = torch.zeros(3, dtype=D, requires_grad=True)
    opt = torch.optim.LBFGS([z], max_iter=300, tolerance_grad=1e-13, tolerance_change=1e-15)

    def closure():
        opt.zero_grad()
        r = torch.log_softmax(z, 0) - p_ref.log()
        value = -(p_data * F.logsigmoid(beta * r)).sum() - alpha * (p_ref * F.logsigmoid(-beta * r)).sum()
        value.backward()
        return value

    opt.step(closure)
    p = torch.softmax(z.detach(), 0)
    assert float((p - p_data).abs().max()) > 0.05
    if beta > 1:   # pulled toward the reference
        assert float(p[0]) < float(p_data[0])
    else:          # pushed past the data, away from the reference
        assert float(p[0]) > float(p_data[0])


def test_gradient_at_the_reference_is_half_the_likelihood_gradient():
    """At theta = ref the fake term's gradient is beta alpha / 2 E_ref[score] = 0 exactly in expectation; with the
    fakes' expectation taken exactly (weights of a discrete law), grad L = -(beta / 2) grad E_data log p_theta."""
    p_data = torch.tensor([0.4, 0.35, 0.25], dtype=D)
    z = torch.tensor([0.3, -0.2, 0.1], dtype=D, requires_grad=True)
    ref_log = torch.log_softmax(z.detach(), 0)
    beta, alpha = 0.7, 3.0
    r = torch.log_softmax(z, 0) - ref_log
    value = (-(p_data * F.logsigmoid(beta * r)).sum()
             - alpha * (ref_log.exp() * F.logsigmoid(-beta * r)).sum())
    (g,) = torch.autograd.grad(value, z)
    (g_mle,) = torch.autograd.grad(-(p_data * torch.log_softmax(z, 0)).sum(), z)
    assert g == pytest.approx(beta / 2 * g_mle, abs=1e-14)


def test_surrogate_is_the_weighted_difference_of_denoising_losses():
    """r_hat = -w (loss_theta - loss_ref) exactly, each loss the substrate's x0-prediction VE loss of one point at
    the shared (sigma, eps)."""
    torch.manual_seed(0)
    net = MLPDenoiser(2, 16, 1, prediction="x0", space="ve").double()
    ref_net = copy.deepcopy(net)
    with torch.no_grad():
        for p in ref_net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(5, 2, generator=g, dtype=D)
    sigma = torch.rand(5, generator=g, dtype=D) + 0.2
    noise = torch.randn(5, 2, generator=g, dtype=D)
    weighting = lambda s: 1.0 + s          # noqa: E731
    r = ddo_log_ratio(net.denoiser(), ref_net.denoiser(), x0, sigma, noise=noise, weighting=weighting)
    for i in range(5):
        sl = slice(i, i + 1)
        lt = _denoising_loss(net, x0[sl], sigma[sl], weighting=weighting, noise=noise[sl])
        lr = _denoising_loss(ref_net, x0[sl], sigma[sl], weighting=weighting, noise=noise[sl])
        assert float(r[i].detach()) == pytest.approx(-float((lt - lr).detach()), rel=1e-12)
    # default weighting 1 / sigma^2: the eps-prediction errors
    r0 = ddo_log_ratio(net.denoiser(), ref_net.denoiser(), x0, sigma, noise=noise)
    x = x0 + sigma[:, None] * noise
    eps = lambda den: (x - den(x, sigma)) / sigma[:, None]     # noqa: E731
    want = -((eps(net.denoiser()) - noise).square().mean(-1) - (eps(ref_net.denoiser()) - noise).square().mean(-1))
    assert r0.detach() == pytest.approx(want.detach(), rel=1e-10)


def test_surrogate_gradient_flows_only_through_the_model():
    gm = mixture_on_circle(3, 2, radius=2.0, std=0.4)
    scale = torch.tensor(1.0, dtype=D, requires_grad=True)
    ref_scale = torch.tensor(0.9, dtype=D, requires_grad=True)
    x0 = gm.sample(8, generator=torch.Generator().manual_seed(0))
    sigma = torch.full((8,), 0.5, dtype=D)
    r = ddo_log_ratio(lambda x, s: scale * gm.denoise(x, s), lambda x, s: ref_scale * gm.denoise(x, s), x0, sigma,
                      generator=torch.Generator().manual_seed(1))
    r.sum().backward()
    assert scale.grad is not None and ref_scale.grad is None
    same = ddo_log_ratio(gm.denoise, gm.denoise, x0, sigma, generator=torch.Generator().manual_seed(1))
    assert torch.equal(same, torch.zeros_like(same))


def test_round_trains_in_place_and_matches_hand_loop():
    torch.manual_seed(0)
    net = MLPDenoiser(2, 16, 1).double()
    frozen = copy.deepcopy(net).requires_grad_(False)
    gm = mixture_on_circle(4, 2, radius=2.0, std=0.3)
    fake = gm.sample(64, generator=torch.Generator().manual_seed(2)) * 1.3
    data = lambda n, g: gm.sample(n, generator=g)                                     # noqa: E731
    sigmas = lambda n, g: torch.rand(n, generator=g, dtype=D) * 2 + 0.05              # noqa: E731
    calls = []
    before = [p.detach().clone() for p in net.parameters()]
    hist = ddo_round(net, frozen.denoiser(), data, fake, sigmas, steps=3, batch_size=16, lr=1e-3,
                     generator=torch.Generator().manual_seed(3), callback=lambda s, n, l: calls.append(s))
    assert hist.shape == (3,) and calls == [1, 2, 3] and bool(torch.isfinite(hist).all())
    # theta = ref at the first step: both log-ratios are exactly 0, the loss is 2 log 2
    assert float(hist[0]) == pytest.approx(2 * math.log(2), abs=1e-12)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, net.parameters()))


def test_errors_are_pinned():
    z = torch.zeros(3, dtype=D)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        ddo_loss(z, z, alpha=0.0)
    with pytest.raises(ValueError, match="beta must be > 0"):
        ddo_loss(z, z, beta=-1.0)
    with pytest.raises(TypeError, match="log_ratio_real must be a torch.Tensor"):
        ddo_loss([0.0], z)
    gm = mixture_on_circle(3, 2, radius=2.0, std=0.4)
    x0 = gm.sample(4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="sigma must be > 0 entrywise"):
        ddo_log_ratio(gm.denoise, gm.denoise, x0, torch.tensor([0.5, 0.0, 0.5, 0.5], dtype=D))
    with pytest.raises(ValueError, match="weighting must return a tensor of shape"):
        ddo_log_ratio(gm.denoise, gm.denoise, x0, torch.full((4,), 0.5, dtype=D), weighting=lambda s: 1.0)
    net = MLPDenoiser(2, 8, 1).double()
    with pytest.raises(ValueError, match="steps must be >= 0"):
        ddo_round(net, net.denoiser(), lambda n, g: x0, x0, lambda n, g: torch.ones(n, dtype=D), steps=-1)
