"""NoiseRefine: targets, refiner, losses, training and refined sampling."""

import pytest
import torch

from paperzoo.diffusion.guidance import class_conditional
from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle
from paperzoo.diffusion.noise_refine import (NoiseRefiner, multistep_score_distillation_loss, noise_refining_targets,
                                             refiner_regression_loss, sample_refined, train_noise_refiner)
from paperzoo.diffusion.samplers import sample_euler
from paperzoo.diffusion.schedules import get_sigmas_karras

D = torch.float64


def _gaussian():
    return GaussianMixture(torch.tensor([[1.0, -0.5]], dtype=D), torch.diag(torch.tensor([0.5, 2.0], dtype=D))[None])


def _noise(n=200, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=D)


def test_scale_one_targets_are_the_noise_up_to_inversion_error():
    # On one Gaussian the exact flow is affine, x_s = mu + sqrt((lam + s^2)/(lam + s0^2)) (x_s0 - mu): the exact
    # round trip is the identity, so the Euler round trip's error must shrink (first order) with the steps.
    gm = _gaussian()
    eps = _noise()
    errs = []
    for n in (25, 100, 400):
        sigmas = get_sigmas_karras(n, 0.002, 80.0, dtype=D)
        errs.append(float((noise_refining_targets(gm.denoise, gm.denoise, 1.0, eps, sigmas) - eps).abs().max()))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.05
    assert errs[1] / errs[2] > 2.5  # about 4 for a first-order scheme


def test_guided_targets_reproduce_the_cfg_samples_unguided():
    gm = mixture_on_circle(4, 2, radius=2.0, std=0.6, dtype=D)
    c0, _ = class_conditional(gm, [0, 1, 0, 1])
    sigmas = get_sigmas_karras(50, 0.002, 80.0, dtype=D)
    eps = _noise(300)
    from paperzoo.diffusion.guidance import classifier_free_guidance
    ref = sample_euler(classifier_free_guidance(c0.denoise, gm.denoise, 3.0), eps * sigmas[0], sigmas)
    target = noise_refining_targets(c0.denoise, gm.denoise, 3.0, eps, sigmas)
    back = sample_euler(c0.denoise, target * sigmas[0], sigmas)
    plain = sample_euler(c0.denoise, eps * sigmas[0], sigmas)
    assert float((back - ref).norm(dim=-1).mean()) < 0.25 * float((plain - ref).norm(dim=-1).mean())


def test_fresh_refiner_is_identity_and_training_fits_an_affine_target():
    r = NoiseRefiner(2, 32, 2).to(D)
    eps = _noise(512)
    assert torch.equal(r(eps), eps)
    target = 0.5 * eps + torch.tensor([0.3, -0.2], dtype=D)
    before = float(refiner_regression_loss(r, eps, target).detach())
    torch.manual_seed(0)
    train_noise_refiner(r, eps, target, steps=300, batch_size=128, lr=3e-3, generator=torch.Generator().manual_seed(1))
    assert float(refiner_regression_loss(r, eps, target)) < 0.05 * before


def test_sample_refined_with_identity_is_plain_sampling():
    gm = _gaussian()
    sigmas = get_sigmas_karras(10, 0.01, 10.0, dtype=D)
    eps = _noise(50)
    out = sample_refined(gm.denoise, NoiseRefiner(2, 8, 1).to(D), eps, sigmas)
    torch.testing.assert_close(out, sample_euler(gm.denoise, eps * sigmas[0], sigmas))


def test_msd_loss_vanishes_without_guidance_and_has_gradients():
    gm = mixture_on_circle(4, 2, radius=2.0, std=0.6, dtype=D)
    c0, _ = class_conditional(gm, [0, 1, 0, 1])
    sigmas = get_sigmas_karras(10, 0.01, 10.0, dtype=D)
    r = NoiseRefiner(2, 8, 1).to(D)
    eps = _noise(64)
    assert float(multistep_score_distillation_loss(r, c0.denoise, gm.denoise, 1.0, eps, sigmas, 3)) == 0.0
    loss = multistep_score_distillation_loss(r, c0.denoise, gm.denoise, 3.0, eps, sigmas, 3)
    loss.backward()
    assert float(loss) > 0 and r.net[-1].weight.grad.abs().sum() > 0


def test_errors():
    gm = _gaussian()
    eps = _noise(5)
    good = get_sigmas_karras(5, 0.01, 10.0, dtype=D)
    with pytest.raises(ValueError, match="sigmas must be a strictly decreasing finite generation schedule ending in 0"):
        noise_refining_targets(gm.denoise, gm.denoise, 1.0, eps, good[:-1])
    with pytest.raises(ValueError, match="sigmas must be nonincreasing"):
        noise_refining_targets(gm.denoise, gm.denoise, 1.0, eps, torch.tensor([1.0, 2.0, 0.5, 0.0], dtype=D))
    with pytest.raises(ValueError, match="k must be <= the number of sampling steps \\(5\\), got 6"):
        multistep_score_distillation_loss(NoiseRefiner(2, 4, 1).to(D), gm.denoise, gm.denoise, 2.0, eps, good, 6)
    with pytest.raises(ValueError, match="refiner must take noises of dimension 2"):
        refiner_regression_loss(NoiseRefiner(3, 4, 1).to(D), eps, eps)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        train_noise_refiner(NoiseRefiner(2, 4, 1).to(D), eps, eps, steps=0)
    with pytest.raises(TypeError, match="refiner must be a torch.nn.Module"):
        sample_refined(gm.denoise, lambda e: e, eps, good)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        NoiseRefiner(0)
