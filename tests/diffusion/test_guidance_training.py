"""Guidance wrappers on exact class-conditional mixtures; the training loss and a short training run."""

from __future__ import annotations

import pytest
import torch

from paperzoo.diffusion import (MLPDenoiser, class_conditional, classifier_free_guidance, denoising_loss,
                                get_sigmas_karras, lognormal_sigmas, mixture_on_circle, prediction_target,
                                sample_heun, train_denoiser)

D = torch.float64


def test_guided_score_is_the_weighted_score_combination():
    gm = mixture_on_circle(4, 2, radius=3.0, std=0.4)
    c0, c1 = class_conditional(gm, [0, 0, 1, 1])
    x = torch.randn(10, 2, dtype=D) * 2
    sigma = torch.full((10,), 0.7, dtype=D)
    for w in (0.0, 1.0, 3.0):
        guided = classifier_free_guidance(c1.denoise, gm.denoise, w)(x, sigma)
        score = (1 - w) * gm.score(x, sigma) + w * c1.score(x, sigma)
        torch.testing.assert_close(guided, x + 0.49 * score, rtol=1e-10, atol=1e-10)
    # a level-dependent scale: guidance only above sigma = 1
    sched = classifier_free_guidance(c1.denoise, gm.denoise, lambda s: torch.where(s > 1, 4.0, 1.0))
    torch.testing.assert_close(sched(x, sigma), c1.denoise(x, sigma))
    assert c0.n_components == 2 and torch.allclose(c0.weights, torch.full((2,), 0.5, dtype=D))


def test_loss_is_zero_for_the_exact_network():
    gm = mixture_on_circle(3, 2, radius=2.0, std=0.5)
    g = torch.Generator().manual_seed(0)
    x0, sigma = gm.sample(64, generator=g), lognormal_sigmas(64, generator=g)
    noise = torch.randn(64, 2, generator=g, dtype=D)

    class Exact(torch.nn.Module):  # predicts the exact eps of the noisy point it sees
        prediction, space = "eps", "ve"

        def forward(self, x, s):
            return (x - gm.denoise(x, s)) / s[:, None]

    exact_loss = denoising_loss(Exact(), x0, sigma, noise=noise)
    oracle = ((Exact()(x0 + sigma[:, None] * noise, sigma) - noise) ** 2).mean()
    torch.testing.assert_close(exact_loss, oracle)
    # the target the loss regresses on is the prediction target
    assert torch.equal(prediction_target(x0, noise, sigma, "eps"), noise)


def test_a_short_training_run_learns_the_mixture():
    torch.manual_seed(0)
    gm = mixture_on_circle(4, 2, radius=2.0, std=0.3, dtype=torch.float32)
    net = MLPDenoiser(2, 64, 2)
    g = torch.Generator().manual_seed(0)
    hist = train_denoiser(net, lambda n, g: gm.sample(n, generator=g),
                          lambda n, g: lognormal_sigmas(n, -0.5, 1.2, generator=g, dtype=torch.float32),
                          steps=400, batch_size=256, lr=3e-3, generator=g)
    # eps-MSE stays near its irreducible part at large sigma, so the samples, not the loss, show the learning
    assert hist.shape == (400,) and bool(torch.isfinite(hist).all())
    sigmas = get_sigmas_karras(20, 0.02, 20.0, dtype=torch.float32)
    with torch.no_grad():
        x = sample_heun(net.denoiser(), sigmas[0] * torch.randn(2000, 2, generator=g), sigmas)
    assert float((x.norm(dim=1) - 2.0).abs().median()) < 0.35


def test_train_denoiser_callback_sees_every_step():
    gm = mixture_on_circle(4, 2, dtype=D)
    net = MLPDenoiser(2, 8, 1).double()
    seen = []
    hist = train_denoiser(net, lambda n, g: gm.sample(n, generator=g), lambda n, g: torch.ones(n, dtype=D),
                          steps=5, batch_size=8, generator=torch.Generator().manual_seed(0),
                          callback=lambda step, network, loss: seen.append((step, network is net, loss)))
    assert [s for s, _, _ in seen] == [1, 2, 3, 4, 5] and all(same for _, same, _ in seen)
    assert [loss for _, _, loss in seen] == hist.tolist()


def test_train_denoiser_penalty_is_added_and_frozen_parameters_stay():
    gm = mixture_on_circle(4, 2, dtype=D)
    data, levels = (lambda n, g: gm.sample(n, generator=g)), (lambda n, g: torch.ones(n, dtype=D))
    nets = [MLPDenoiser(2, 8, 1).double() for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    plain = train_denoiser(nets[0], data, levels, steps=1, batch_size=8, generator=torch.Generator().manual_seed(0))
    penalized = train_denoiser(nets[1], data, levels, steps=1, batch_size=8, generator=torch.Generator().manual_seed(0),
                               penalty=lambda network: torch.tensor(2.5, dtype=D))
    assert float(penalized[0]) == pytest.approx(float(plain[0]) + 2.5, abs=1e-12)
    net = MLPDenoiser(2, 8, 1).double()
    first = next(net.parameters())
    first.requires_grad_(False)
    before = first.detach().clone()
    train_denoiser(net, data, levels, steps=3, batch_size=8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first, before)


def test_bad_input():
    gm = mixture_on_circle(4, 2)
    with pytest.raises(ValueError, match="classes must have one label per component"):
        class_conditional(gm, [0, 1])
    with pytest.raises(ValueError, match="class 1 has none"):
        class_conditional(gm, [0, 0, 2, 2])
    net = MLPDenoiser(2, 8, 1).double()
    with pytest.raises(ValueError, match="sigma must be > 0 entrywise"):
        denoising_loss(net, torch.zeros(3, 2, dtype=D), torch.tensor([1.0, 0.0, 1.0], dtype=D))
    with pytest.raises(ValueError, match="weighting must return a tensor of shape"):
        denoising_loss(net, torch.zeros(3, 2, dtype=D), torch.ones(3, dtype=D), weighting=lambda s: s.sum())
    guided = classifier_free_guidance(gm.denoise, gm.denoise, lambda s: torch.ones(2, dtype=D))
    with pytest.raises(ValueError, match=r"scale must return a number or shape \(3,\)"):
        guided(torch.zeros(3, 2, dtype=D), torch.ones(3, dtype=D))
