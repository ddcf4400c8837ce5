"""Cold diffusion: degradation properties, Section 3's exactness argument, the DDIM limit, errors."""

from __future__ import annotations

import pytest
import torch

from paperzoo.diffusion.cold_diffusion import (Degradation, GaussianBlur, GaussianNoise, Interpolation, Masking,
                                               RestorationMLP, blur_schedule, cold_levels, cold_loss,
                                               gaussian_fade_masks, sample_cold, train_restoration)
from paperzoo.diffusion.mixture import mixture_on_circle
from paperzoo.diffusion.samplers import sample_ddim
from paperzoo.diffusion.schedules import alphas_cumprod_from_betas, append_zero, betas_linear

T = 10


def _data(n=6, d=64, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _degradations(n=6):
    z = _data(n, seed=9)
    return {"blur": GaussianBlur(blur_schedule(T, 0.2)),
            "blur_to_mean": GaussianBlur(blur_schedule(T, 0.2), to_mean=True),
            "mask": Masking(gaussian_fade_masks(T, (8, 8), 0.5)),
            "interpolation": Interpolation(torch.linspace(0.95, 0.05, T, dtype=torch.float64), z)}


class Additive(Degradation):
    """The first-order model of the paper's Section 3: :math:`D(x, t) = x + \\gamma_t e`."""

    def __init__(self, e, gammas):
        self.levels, self.dim, self.e = gammas.shape[0] - 1, e.shape[-1], e
        self.gammas = gammas

    def _apply(self, x0, t):
        g = self.gammas[t]
        return x0 + (g[:, None] if g.dim() == 1 else g) * self.e


@pytest.mark.parametrize("name", list(_degradations()))
def test_level_zero_is_identity_and_levels_degrade_monotonically(name):
    D, x = _degradations()[name], _data()
    assert torch.equal(D(x, 0), x)
    if name == "interpolation":
        dist = [float((D(x, t) - D.target).norm()) for t in range(T + 1)]
    elif name == "mask":
        dist = [float(D(x, t).norm()) for t in range(T + 1)]
    else:
        dist = [float((D(x, t) - x.mean(1, keepdim=True)).norm()) for t in range(T + 1)]
    assert all(b <= a + 1e-12 for a, b in zip(dist, dist[1:])), dist
    assert dist[-1] < 0.5 * dist[0]
    # per-sample levels agree with one level for all
    t = torch.arange(6) % (T + 1)
    assert torch.allclose(D(x, t), torch.stack([D(x, int(t[i]))[i] for i in range(6)]))


def test_blur_operators_are_doubly_stochastic_contractions_and_to_mean_ends_at_the_mean():
    D, x = _degradations()["blur_to_mean"], _data()
    eig = torch.stack([torch.linalg.eigvalsh(A) for A in D.operators])  # ascending
    assert bool((eig > -1e-12).all()) and bool((eig < 1 + 1e-12).all())
    assert bool((eig[1:] <= eig[:-1] + 1e-12).all())                    # every mode decays with t
    assert torch.allclose(D.operators.sum(-1), torch.ones(T + 1, 64, dtype=torch.float64))
    assert torch.allclose(D(x, 5).mean(1), x.mean(1))                  # blurs keep the image mean
    assert torch.allclose(D(x, T), x.mean(1, keepdim=True).expand(-1, 64))


@pytest.mark.parametrize("name", list(_degradations()))
@pytest.mark.parametrize("algorithm", ["tacos", "naive"])
def test_perfect_restorer_recovers_x0_with_both_algorithms(name, algorithm):
    D, x0 = _degradations()[name], _data()
    out = sample_cold(lambda x, t: x0, D(x0, T), cold_levels(T), degradation=D, algorithm=algorithm)
    assert torch.allclose(out, x0, atol=1e-10)


def test_tacos_is_exact_for_additive_degradation_with_any_restorer_and_naive_is_not():
    g = torch.Generator().manual_seed(3)
    for _ in range(5):  # random directions, schedules and wrong restorers
        e = torch.randn(64, generator=g, dtype=torch.float64)
        gammas = torch.cat([torch.zeros(1, dtype=torch.float64),
                            torch.rand(T, generator=g, dtype=torch.float64).cumsum(0)])
        D, x0 = Additive(e, gammas), _data(seed=int(torch.randint(100, (1,), generator=g)))
        W = torch.randn(64, 64, generator=g, dtype=torch.float64) / 8
        wrong = lambda x, t, W=W: torch.tanh(x @ W)  # noqa: E731
        for restorer in (wrong, lambda x, t: x):
            tacos = sample_cold(restorer, D(x0, T), cold_levels(T), degradation=D)
            naive = sample_cold(restorer, D(x0, T), cold_levels(T), degradation=D, algorithm="naive")
            assert torch.allclose(tacos, x0, atol=1e-10)
            assert float((naive - x0).abs().max()) > 0.1
    # skipping levels is exact too
    tacos = sample_cold(wrong, D(x0, T), cold_levels(T, 3), degradation=D)
    assert torch.allclose(tacos, x0, atol=1e-10)


@pytest.mark.parametrize("algorithm", ["tacos", "naive"])
def test_gaussian_noise_with_the_exact_denoiser_is_ddim(algorithm):
    gm = mixture_on_circle(4, 2, radius=2.0, std=0.3)
    abar = alphas_cumprod_from_betas(betas_linear(20, 1e-3, 0.2))
    sig = ((1 - abar) / abar).sqrt()
    D = GaussianNoise(abar)
    full = torch.cat([abar.new_ones(1), abar])

    def restorer(x, t):  # the exact x0-predictor in VP states at level t
        a = full[t.round().long()][:, None]
        return gm.denoise(x / a.sqrt(), ((1 - a) / a).sqrt()[:, 0])

    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cold = sample_cold(restorer, x_T, cold_levels(20), degradation=D, algorithm=algorithm)
    ddim = sample_ddim(gm.denoise, x_T / abar[-1].sqrt(), append_zero(sig.flip(0)))
    assert torch.allclose(cold, ddim, atol=1e-10)
    # and noising with a given noise is the VP marginal
    eps = _data(3, 2)
    assert torch.allclose(D(eps, 20, noise=eps), (abar[-1].sqrt() + (1 - abar[-1]).sqrt()) * eps)


def test_loss_closed_form_and_training_lowers_it():
    D = _degradations()["blur"]
    x0 = _data(4).repeat(8, 1)  # four prototypes: a restorer can learn them
    t = torch.arange(32) % T + 1
    net = RestorationMLP(64, T, 32, 1, residual=True).double()
    torch.nn.init.zeros_(net.net[-1].weight)
    torch.nn.init.zeros_(net.net[-1].bias)  # residual net = identity at init
    expected = (D(x0, t) - x0).abs().mean()
    assert torch.allclose(cold_loss(net, x0, t, D), expected)
    assert torch.allclose(cold_loss(net, x0, t, D, p=2), (D(x0, t) - x0).square().mean())
    g = torch.Generator().manual_seed(0)
    hist = train_restoration(net, lambda n, g: x0[torch.randint(32, (n,), generator=g)], D, steps=40,
                             batch_size=32, lr=3e-3, generator=g)
    assert float(hist[-10:].mean()) < 0.8 * float(hist[:5].mean())


def test_error_messages():
    D, x = _degradations()["blur"], _data()
    with pytest.raises(ValueError, match=r"t must lie in \[0, 10\]"):
        D(x, 11)
    with pytest.raises(ValueError, match="t must hold integer levels"):
        D(x, 1.5)
    with pytest.raises(ValueError, match=r"x0 must have d = 64"):
        D(_data(d=63), 1)
    with pytest.raises(ValueError, match=r"t must be a number, a 0-dim tensor or have shape \(6,\)"):
        D(x, torch.arange(3))
    with pytest.raises(ValueError, match="stds must be > 0"):
        GaussianBlur(torch.tensor([0.1, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"masks must have entries in \[0, 1\]"):
        Masking(torch.full((2, 4), 1.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="alphas_cumprod must be nonincreasing"):
        Interpolation(torch.tensor([0.5, 0.9], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="alphas_cumprod must be < 1"):
        GaussianNoise(torch.tensor([1.0, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="GaussianNoise needs its noise"):
        GaussianNoise(torch.tensor([0.5, 0.2], dtype=torch.float64))._apply(x, torch.tensor(1))
    with pytest.raises(ValueError, match="algorithm must be one of"):
        sample_cold(lambda x, t: x, x, cold_levels(T), degradation=D, algorithm="ddim")
    with pytest.raises(ValueError, match="levels must start at or below the degradation's last level 10"):
        sample_cold(lambda x, t: x, x, cold_levels(12), degradation=D)
    with pytest.raises(ValueError, match="levels must hold integer levels"):
        sample_cold(lambda x, t: x, x, torch.tensor([2.5, 1.0, 0.0], dtype=torch.float64), degradation=D)
    with pytest.raises(TypeError, match="degradation must be a cold-diffusion Degradation"):
        sample_cold(lambda x, t: x, x, cold_levels(T), degradation=lambda x, t: x)
    with pytest.raises(ValueError, match=r"t must be >= 1"):
        cold_loss(RestorationMLP(64, T).double(), x, torch.zeros(6, dtype=torch.long), D)
